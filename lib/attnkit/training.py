"""One training loop for every small model in the kit: AdamW, linear warm-up then cosine decay,
gradients clipped to norm 1, wall time per step.

The schedule multiplies each parameter group's base learning rate by::

    factor(t) = (t + 1) / W                                   t < W   (linear warm-up, W = warmup · T)
    factor(t) = ½ (1 + cos(π (t - W) / (T - W)))              t >= W  (cosine decay to 0)

The loop knows nothing about the task: ``batch_fn(step)`` gives the batch of a step (a fresh
one from a seed, or one drawn from a fixed set), ``loss_fn(model, batch)`` the scalar loss, and
``eval_fn(model)`` the held-out scores, a dict, every ``eval_every`` steps and at the end::

    result = fit(model, lambda step: sampler(64, seed=step), lm_loss, steps=300, lr=3e-3,
                 eval_fn=lambda m: {"accuracy": accuracy(m, x_test, y_test)})
    result.final["accuracy"], result.step_seconds, result.loss

:func:`attnkit.tasks.train`, :func:`attnkit.qa.train`, :mod:`attnkit.biography` and
:mod:`attnkit.capstone` all train through :func:`fit`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .notebook import threads as torch_threads

__all__ = ["warmup_cosine", "FitResult", "fit"]


def warmup_cosine(step: int, steps: int, warmup: float = 0.1) -> float:
    """Learning-rate factor at ``step`` of ``steps``: linear warm-up over ``warmup · steps``, then
    cosine decay to 0 (the formula in the module docstring). Always in (0, 1]."""
    if steps < 1 or not 0 <= warmup < 1:
        raise ValueError(f"warmup_cosine: need steps >= 1 and 0 <= warmup < 1, got steps={steps}, "
                         f"warmup={warmup}")
    n_warm = max(1, int(warmup * steps))
    if step < n_warm:
        return (step + 1) / n_warm
    return 0.5 * (1 + math.cos(math.pi * (step - n_warm) / max(1, steps - n_warm)))


@dataclass
class FitResult:
    """What :func:`fit` measured.

    Attributes:
        loss: training loss at every step.
        eval_steps: the steps after which ``eval_fn`` ran; ``evals`` holds its dicts.
        step_seconds: median wall time of one step (forward, backward, update).
        seconds: wall time of the whole run, evaluations included.
    """

    loss: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)
    step_seconds: float = 0.0
    seconds: float = 0.0

    @property
    def final(self) -> dict[str, float]:
        """The last evaluation (empty without ``eval_fn``)."""
        return self.evals[-1] if self.evals else {}


def fit(model: nn.Module, batch_fn: Callable[[int], Any], loss_fn: Callable[[nn.Module, Any], Tensor], *,
        steps: int, lr: float = 3e-3, weight_decay: float = 0.01, warmup: float = 0.1,
        param_groups: list[dict] | None = None, eval_fn: Callable[[nn.Module], dict] | None = None,
        eval_every: int | None = None, after_step: Callable[[int, nn.Module], None] | None = None,
        threads: int | None = 1, progress: bool = False) -> FitResult:
    """Train ``model`` for ``steps`` steps of AdamW on ``loss_fn(model, batch_fn(step))``.

    Args:
        param_groups: AdamW groups (``params``, and optionally ``lr`` and ``weight_decay``);
            default one group of all parameters. A group's ``lr`` is its base rate; every
            group follows :func:`warmup_cosine`.
        eval_fn, eval_every: held-out scores (a dict) after every ``eval_every`` steps and
            after the last step; the model is in training mode again afterwards.
        after_step: called as ``after_step(step, model)`` after each update (logging).
        threads: torch threads while training (1 suits a tiny model on a small shared CPU;
            None leaves the setting alone).
        progress: a tqdm bar over the steps.
    """
    if steps < 1 or lr <= 0:
        raise ValueError(f"fit: need steps >= 1 and lr > 0, got steps={steps}, lr={lr}")
    groups = param_groups or [{"params": list(model.parameters())}]
    groups = [{"lr": lr, "weight_decay": weight_decay, **g} for g in groups]
    for g in groups:
        g["base_lr"] = g["lr"]
    opt = torch.optim.AdamW(groups)
    result = FitResult()
    step_times = []
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=steps, leave=False)
    t0 = time.perf_counter()
    model.train()
    with torch_threads(threads):
        for step in range(steps):
            batch = batch_fn(step)
            t_step = time.perf_counter()
            factor = warmup_cosine(step, steps, warmup)
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * factor
            loss = loss_fn(model, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step_times.append(time.perf_counter() - t_step)
            result.loss.append(loss.item())
            if after_step is not None:
                after_step(step, model)
            if eval_fn is not None and ((eval_every and (step + 1) % eval_every == 0) or step + 1 == steps):
                was_training = model.training
                model.eval()
                with torch.no_grad():
                    scores = eval_fn(model)
                model.train(was_training)
                result.eval_steps.append(step + 1)
                result.evals.append(dict(scores))
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    result.seconds = time.perf_counter() - t0
    result.step_seconds = float(torch.tensor(step_times).median())
    return result
