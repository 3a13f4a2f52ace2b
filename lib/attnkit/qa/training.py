"""Training (a separate learning rate for σ), evaluation in SQuAD's F1 / EM, and σ by token type.
See :mod:`attnkit.qa`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data import ANSWER0, CUE0, FILLER0, GLOBAL_TOKENS, QAData, decode_spans, exact_match, span_f1
from ..notebook import threads as torch_threads
from ..training import fit
from .model import QAEncoder

# ---------------------------------------------------------------- training and evaluation

@dataclass
class History:
    """What :func:`train` logged.

    Attributes:
        loss: training loss at every step (mean of the start and end cross-entropies).
        eval_steps: the steps at which the held-out split was scored; ``f1``, ``em`` (percent) there.
        sigma_mean: per step, the mean σ over the passage tokens (query positions >= g) of the
            training batch, one list per layer; empty lists if the model has no learned σ.
        seconds: wall time of the whole run.
    """

    loss: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    f1: list[float] = field(default_factory=list)
    em: list[float] = field(default_factory=list)
    sigma_mean: list[list[float]] = field(default_factory=list)
    seconds: float = 0.0

    def final(self) -> dict[str, float]:
        """The last held-out scores, ``{"f1": .., "em": ..}``."""
        return {"f1": self.f1[-1], "em": self.em[-1]}


def _loss(model: nn.Module, batch: QAData) -> Tensor:
    start_logits, end_logits = model(batch.tokens)  # (B, N) each
    return 0.5 * (F.cross_entropy(start_logits, batch.start) + F.cross_entropy(end_logits, batch.end))


@torch.no_grad()
def evaluate(model: nn.Module, data: QAData, *, batch_size: int = 512, max_answer_len: int = 8,
             threads: int | None = 1) -> dict[str, float]:
    """F1 and exact match in percent (SQuAD's convention) of ``model`` on ``data``."""
    was_training = model.training
    model.eval()
    f1 = em = 0.0
    with torch_threads(threads):
        for lo in range(0, len(data), batch_size):
            b = data.batch(torch.arange(lo, min(lo + batch_size, len(data))))
            ps, pe = decode_spans(*model(b.tokens), max_answer_len)
            f1 += span_f1(ps, pe, b.start, b.end).sum().item()
            em += exact_match(ps, pe, b.start, b.end).sum().item()
    model.train(was_training)
    return {"f1": 100 * f1 / len(data), "em": 100 * em / len(data)}


def train(model: nn.Module, data: tuple[QAData, QAData], *, steps: int = 200, lr: float = 6e-3,
          sigma_lr_mult: float = 1.0, batch_size: int = 32, weight_decay: float = 0.01,
          warmup: float = 0.1, seed: int = 0, log_every: int = 50, threads: int | None = 1,
          progress: bool = False) -> History:
    """Train ``model`` on ``data = (train_set, held_out)`` with AdamW; returns a :class:`History`.

    The parameters from ``model.sigma_parameters()`` (if any) form their own group with learning
    rate ``lr · sigma_lr_mult`` and no weight decay (the reports' "higher LR for U_d and W_p").
    The schedule (linear warm-up, cosine decay to 0) and gradient clipping are
    :func:`attnkit.training.fit`'s. Batches are drawn with ``torch.Generator().manual_seed(seed)``; with the model
    built from a seed too, a run is bit-for-bit repeatable on one machine and thread count.
    ``threads``: torch threads during training (1 is fastest for this small model on a
    shared 2-core CPU; None leaves the setting alone). The held-out split is scored every
    ``log_every`` steps and at the end.
    """
    train_set, held_out = data
    if steps < 1 or lr <= 0 or sigma_lr_mult <= 0 or batch_size < 1:
        raise ValueError(f"need steps >= 1, lr > 0, sigma_lr_mult > 0, batch_size >= 1; got "
                         f"steps={steps}, lr={lr}, sigma_lr_mult={sigma_lr_mult}, batch_size={batch_size}")
    sigma_params = list(model.sigma_parameters()) if hasattr(model, "sigma_parameters") else []
    sigma_ids = {id(p) for p in sigma_params}
    groups = [{"params": [p for p in model.parameters() if id(p) not in sigma_ids]}]
    if sigma_params:
        groups.append({"params": sigma_params, "lr": lr * sigma_lr_mult, "weight_decay": 0.0})
    gen = torch.Generator().manual_seed(seed)
    hist = History()
    g = train_set.global_tokens

    def log_sigma(step: int, m: nn.Module) -> None:
        if sigma_params:
            hist.sigma_mean.append([s[..., g:].mean().item() for s in m.last_sigma()
                                    if s is not None and s.dim() >= 1])

    fitted = fit(model, lambda step: train_set.batch(torch.randint(0, len(train_set), (batch_size,), generator=gen)),
                 _loss, steps=steps, lr=lr, weight_decay=weight_decay, warmup=warmup, param_groups=groups,
                 eval_fn=lambda m: evaluate(m, held_out, threads=None), eval_every=log_every,
                 after_step=log_sigma, threads=threads, progress=progress)
    hist.loss, hist.eval_steps, hist.seconds = fitted.loss, fitted.eval_steps, fitted.seconds
    hist.f1 = [e["f1"] for e in fitted.evals]
    hist.em = [e["em"] for e in fitted.evals]
    return hist


@torch.no_grad()
def sigma_by_token_type(model: QAEncoder, tokens: Tensor) -> list[dict[str, float]]:
    """Per layer, the mean σ the model gives to cue tokens, answer words and filler in ``tokens``.

    ``tokens`` is ``(B, N)``; question tokens (the first g) are left out. Layers without a
    learned σ give an empty dict. This is how the chapter sees *which* tokens widen their window.
    """
    was_training = model.training
    model.eval()
    model(tokens)
    model.train(was_training)
    passage = torch.zeros_like(tokens, dtype=torch.bool)
    passage[:, GLOBAL_TOKENS:] = True
    kinds = {"cue": (tokens >= CUE0) & (tokens < ANSWER0), "answer word": (tokens >= ANSWER0) & (tokens < FILLER0),
             "filler": tokens >= FILLER0}
    out = []
    for sigma in model.last_sigma():
        if sigma is None or sigma.dim() != 2:
            out.append({})
            continue
        out.append({name: float(sigma[mask & passage].mean()) for name, mask in kinds.items()})
    return out
