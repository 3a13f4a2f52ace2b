"""Small synthetic sequence tasks, and the loop that trains :class:`attnkit.models.Transformer` on them.

Two tasks, each a pair of LongTensors ``(inputs (n, N), targets (n, N))`` drawn from a seed, with
``targets == IGNORE`` wherever there is nothing to predict:

* :func:`offset_copy` is *positional*: the answer at position i is the input token at i - offset,
  whatever the tokens are. A mixer that can learn one fixed N×N pattern solves it::

      inputs   7 2 5 5 0 3 1 ...          offset = 2
      targets  . . 7 2 5 5 0 ...

* :func:`associative_recall` is *content-based*: p key-value pairs, then one of the keys again;
  the answer, at the last position, is that key's value. Where the answer sits depends on the
  tokens, so a mixing pattern fixed in advance cannot point at it::

      inputs   k3 v1  k0 v5  k6 v1  k2 v7  k6        (keys 0..K-1, values K..K+V-1)
      targets   .  .   .  .   .  .   .  .  v1

  With ``fused=True`` each pair is one token, ``(k3 v1) (k0 v5) (k6 v1) (k2 v7) k6``, so a single
  content lookup answers it (the two-token form needs two hops).

The model is :class:`attnkit.models.Transformer`, in which the token mixer (an attention variant
or a mixer module, chosen by name) is the only thing that changes; :func:`train` fits it with
AdamW on fresh batches (through :func:`attnkit.training.fit`) and returns the held-out accuracy
and the time per step::

    x, y = offset_copy(4096, length=16, vocab=16, offset=3, seed=0)     # (4096, 16) each
    model = Transformer("dense", vocab=16, max_len=16, seed=0)
    task = functools.partial(offset_copy, length=16, vocab=16, offset=3)  # task(n, seed=s)
    result = train(model, task, steps=200, seed=0)
    result.accuracy, result.step_seconds
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .training import fit

__all__ = ["IGNORE", "offset_copy", "associative_recall", "recall_vocab", "TrainResult", "accuracy",
           "lm_loss", "train"]

IGNORE = -100
"""Target value at positions with nothing to predict (``F.cross_entropy``'s ``ignore_index``)."""

Sampler = Callable[..., tuple[Tensor, Tensor]]
"""``sampler(n, seed=s) -> (inputs, targets)``: how :func:`train` draws its batches."""


# ---------------------------------------------------------------- tasks

def offset_copy(n: int, *, length: int = 32, vocab: int = 16, offset: int = 4,
                seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` sequences of ``length`` uniform tokens in [0, vocab); target at i is the token at i - offset.

    Returns ``(inputs, targets)``, both ``(n, length)`` long; the first ``offset`` targets are
    :data:`IGNORE`. Chance accuracy is 1 / vocab.
    """
    if not 1 <= offset < length:
        raise ValueError(f"offset_copy: need 1 <= offset < length, got offset={offset}, length={length}")
    if n < 1 or vocab < 2:
        raise ValueError(f"offset_copy: need n >= 1 and vocab >= 2, got n={n}, vocab={vocab}")
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randint(0, vocab, (n, length), generator=g)  # (n, N)
    targets = torch.full_like(inputs, IGNORE)  # (n, N)
    targets[:, offset:] = inputs[:, :-offset]  # y_i = x_{i - offset}
    return inputs, targets


def recall_vocab(keys: int = 8, values: int = 8, *, fused: bool = False) -> int:
    """Number of token ids :func:`associative_recall` uses.

    Keys 0..K-1, values K..K+V-1, and with ``fused`` the K·V pair tokens K+V+k·V+v after them.
    """
    return keys + values + (keys * values if fused else 0)


def associative_recall(n: int, *, pairs: int = 4, keys: int = 8, values: int = 8, fused: bool = False,
                       seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` sequences of p key-value pairs and a query key; the target at the last position is its value.

    The p keys of a sequence are distinct, drawn from ``keys`` ids (0..K-1); values are drawn
    with replacement from ``values`` ids (K..K+V-1); the query is one of the p keys, uniformly.

    * ``fused=False``: ``k_1 v_1 k_2 v_2 ... k_p v_p k_q``, length 2p + 1. Answering needs two
      hops (find the key, then read the token after it): the "induction head" of a two-layer
      Transformer, which a small model takes long to find.
    * ``fused=True``: each pair is one token ``K + V + k·V + v``, so the sequence is
      ``(k_1 v_1) ... (k_p v_p) k_q``, length p + 1, and one content lookup answers it.

    Returns ``(inputs, targets)`` long, ``(n, length)`` each; every target but the last is
    :data:`IGNORE` and the last is the value's id. Chance is 1 / V; picking one of the p values in
    the sequence without knowing which gives about 1 / p.
    """
    if not 1 <= pairs <= keys:
        raise ValueError(f"associative_recall: need 1 <= pairs <= keys (distinct keys), got pairs={pairs}, "
                         f"keys={keys}")
    if n < 1 or values < 2:
        raise ValueError(f"associative_recall: need n >= 1 and values >= 2, got n={n}, values={values}")
    g = torch.Generator().manual_seed(seed)
    k = torch.rand(n, keys, generator=g).argsort(-1)[:, :pairs]  # (n, p) distinct keys in [0, K)
    v = torch.randint(0, values, (n, pairs), generator=g)  # (n, p) values in [0, V)
    which = torch.randint(0, pairs, (n,), generator=g)  # (n,) index of the queried pair
    rows = torch.arange(n)
    if fused:
        context = keys + values + k * values + v  # (n, p) one token per pair
    else:
        context = torch.stack([k, keys + v], dim=-1).reshape(n, 2 * pairs)  # (n, 2p) k v k v ...
    inputs = torch.cat([context, k[rows, which].unsqueeze(1)], dim=1)  # (n, length)
    targets = torch.full_like(inputs, IGNORE)
    targets[:, -1] = keys + v[rows, which]
    return inputs, targets


# ---------------------------------------------------------------- training

@dataclass
class TrainResult:
    """What :func:`train` measured.

    Attributes:
        accuracy: share of the held-out targets (those not :data:`IGNORE`) predicted exactly.
        step_seconds: median wall time of one training step (forward, backward, update).
        loss: training loss at every step.
        eval_steps, accuracies: held-out accuracy at those steps (the curve).
        seconds: wall time of the whole run.
    """

    accuracy: float = 0.0
    step_seconds: float = 0.0
    loss: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    accuracies: list[float] = field(default_factory=list)
    seconds: float = 0.0


@torch.no_grad()
def accuracy(model: nn.Module, inputs: Tensor, targets: Tensor, *, batch_size: int = 1024) -> float:
    """Share of the positions with a target (not :data:`IGNORE`) where the argmax logit is right."""
    was_training = model.training
    model.eval()
    right = total = 0
    for lo in range(0, len(inputs), batch_size):
        x, y = inputs[lo:lo + batch_size], targets[lo:lo + batch_size]
        keep = y != IGNORE
        right += int((model(x).argmax(-1) == y)[keep].sum())
        total += int(keep.sum())
    model.train(was_training)
    return right / max(total, 1)


def lm_loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    """Cross-entropy of ``model(inputs) (B, N, vocab)`` against ``targets (B, N)``, skipping :data:`IGNORE`."""
    inputs, targets = batch
    logits = model(inputs)  # (B, N, vocab)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE)


def train(model: nn.Module, sampler: Sampler, *, steps: int = 300, batch_size: int = 64, lr: float = 3e-3,
          weight_decay: float = 0.01, warmup: float = 0.1, n_test: int = 1024, seed: int = 0,
          eval_every: int | None = None, threads: int | None = 1, progress: bool = False) -> TrainResult:
    """Fit ``model`` with AdamW on fresh batches ``sampler(batch_size, seed')``; held-out accuracy at the end.

    ``sampler(n, seed) -> (inputs, targets)``, e.g. ``functools.partial(offset_copy, length=16)``
    called as ``sampler(n, seed=s)``. Every step draws a new batch with its own seed (derived
    from ``seed`` and the step), so the model never sees a batch twice; the held-out set is
    ``sampler(n_test, seed')`` with a seed no training batch uses. The schedule, clipping and
    timing are :func:`attnkit.training.fit`'s. With the model built from a seed too, a run is
    repeatable on one machine and thread count. ``threads``: torch threads while training (1
    suits a tiny model on a small shared CPU; None leaves it).
    """
    if steps < 1 or lr <= 0 or batch_size < 1:
        raise ValueError(f"need steps >= 1, lr > 0, batch_size >= 1; got steps={steps}, lr={lr}, "
                         f"batch_size={batch_size}")
    test_x, test_y = sampler(n_test, seed=10_000_019 * (seed + 1))
    fitted = fit(model, lambda step: sampler(batch_size, seed=seed * 1_000_003 + step), lm_loss,
                 steps=steps, lr=lr, weight_decay=weight_decay, warmup=warmup,
                 eval_fn=lambda m: {"accuracy": accuracy(m, test_x, test_y)}, eval_every=eval_every,
                 threads=threads, progress=progress)
    accuracies = [e["accuracy"] for e in fitted.evals]
    return TrainResult(accuracy=accuracies[-1], step_seconds=fitted.step_seconds, loss=fitted.loss,
                       eval_steps=fitted.eval_steps, accuracies=accuracies, seconds=fitted.seconds)
