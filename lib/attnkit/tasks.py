"""Small synthetic sequence tasks and a tiny model whose token mixer is chosen by name.

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

The model (:class:`TokenMixerModel`) is the smallest Transformer-shaped network in which the
token mixer is the only thing that changes::

    h_0 = E[tokens] + P[positions]
    h_l = h_l' + FFN(LN(h_l')),   h_l' = h_{l-1} + mixer(LN(h_{l-1}))       l = 1..L
    logits = LN(h_L) W_out                                                   (B, N, vocab)

``mixer`` is a name: an attention variant from :data:`attnkit.VARIANTS` (wrapped in
:class:`attnkit.MultiHeadAttention`, so it has q, k, v and output projections), or a token-mixing
module from :data:`attnkit.MIXERS`, built for width C and length N. The Synthesizers replace the
attention layer in the block above; FNet, gMLP and MLP-Mixer are whole blocks in their papers
(residuals and norms of their own, a feed-forward or channel MLP inside), so the model stacks L
of them in place of the blocks above. :func:`train` fits it with AdamW on fresh batches and returns the held-out accuracy and
the time per step.

    x, y = offset_copy(4096, length=16, vocab=16, offset=3, seed=0)     # (4096, 16) each
    model = TokenMixerModel("dense", vocab=16, length=16, seed=0)
    task = functools.partial(offset_copy, length=16, vocab=16, offset=3)  # task(n, seed=s)
    result = train(model, task, steps=200, seed=0)
    result.accuracy, result.step_seconds

Cost: O(L·N·C²) for the projections and feed-forward layers, plus the mixer's own cost.
"""
from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .modules import MultiHeadAttention
from .notebook import threads as torch_threads

__all__ = ["IGNORE", "offset_copy", "associative_recall", "recall_vocab", "mixer_names", "is_block",
           "make_mixer",
           "AttentionMixer", "TokenMixerModel", "TrainResult", "accuracy", "train"]

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


# ---------------------------------------------------------------- mixers

def mixer_names() -> list[str]:
    """Every name :class:`TokenMixerModel` accepts: the attention variants, then the mixer modules."""
    from . import registry
    return [*registry.VARIANTS, *getattr(registry, "MIXERS", {})]


class AttentionMixer(nn.Module):
    """A registered attention variant as a token mixer: ``x (B, N, C) -> (B, N, C)``.

    Multi-head attention with q, k, v and output projections; the heads attend with
    ``VARIANTS[name]`` called with its ``example_kwargs`` updated by ``attn_kwargs``.
    """

    def __init__(self, name: str, d_model: int, n_heads: int, **attn_kwargs):
        super().__init__()
        from .registry import VARIANTS
        variant = VARIANTS[name]
        self.name = name
        self.attn = MultiHeadAttention(d_model, n_heads, variant.fn, **{**variant.example_kwargs, **attn_kwargs})

    def forward(self, x: Tensor) -> Tensor:
        return self.attn(x)  # (B, N, C)


def is_block(name: str) -> bool:
    """Whether the registered mixer ``name`` is a whole block (its own residual and norms, FNet and
    MLP-Mixer a feed-forward layer too) rather than a drop-in for an attention layer
    (:attr:`attnkit.registry.Mixer.block`); attention variants are layers."""
    from .registry import MIXERS
    return name in MIXERS and MIXERS[name].block


def make_mixer(name: str, *, d_model: int, length: int, n_heads: int = 2, **kwargs) -> nn.Module:
    """The token mixer called ``name``, mapping ``(B, N, C)`` to ``(B, N, C)``.

    * An attention variant: :class:`AttentionMixer` with H = ``n_heads``; ``kwargs`` update the
      variant's ``example_kwargs`` and go to the attention function.
    * A registered mixer module: ``cls(dim=C, seq_len=N, heads=H (if it takes heads), **kwargs)``;
      everything else keeps the module's own defaults (the papers' sizes), not the registry's
      ``example_kwargs``, which are sized for tests at C = 16.
    """
    from . import registry
    if name in registry.VARIANTS:
        return AttentionMixer(name, d_model, n_heads, **kwargs)
    mixers = getattr(registry, "MIXERS", {})
    if name in mixers:
        cls = mixers[name].cls
        sizes = {"dim": d_model, "seq_len": length}
        if "heads" in inspect.signature(cls).parameters:
            sizes["heads"] = n_heads
        return cls(**{**sizes, **kwargs})
    raise ValueError(f"unknown token mixer {name!r}: expected one of {mixer_names()}")


# ---------------------------------------------------------------- the model

class _Block(nn.Module):
    """Pre-norm block: x + mixer(LN(x)), then x + FFN(LN(x))."""

    def __init__(self, d_model: int, d_ff: int, mixer: nn.Module):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.mixer = mixer
        self.ff = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.mixer(self.ln1(x))  # (B, N, C)
        return x + self.ff(self.ln2(x))  # (B, N, C)


class TokenMixerModel(nn.Module):
    """Embedding + learned positions, L pre-norm blocks with the named token mixer, a linear head.

    Args:
        mixer: a name from :func:`mixer_names` (``"dense"``, ``"synthesizer_random"``, ``"fnet"``...).
        vocab: number of token ids (inputs and outputs share them).
        length: the sequence length N (learned positions; the length-bound mixers are built for it).
        d_model, n_layers, n_heads, d_ff: sizes C, L, H (attention only) and the FFN width (4·C).
        seed: parameters are initialised from ``torch.manual_seed(seed)`` without touching the
            global random state.
        **mixer_kwargs: passed to :func:`make_mixer` for every layer.

    ``forward(tokens (B, N)) -> logits (B, N, vocab)``.
    """

    def __init__(self, mixer: str, *, vocab: int, length: int, d_model: int = 32, n_layers: int = 2,
                 n_heads: int = 2, d_ff: int | None = None, seed: int = 0, **mixer_kwargs):
        super().__init__()
        self.mixer_name, self.vocab, self.length = mixer, vocab, length
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.tok = nn.Embedding(vocab, d_model)
            self.pos = nn.Parameter(torch.randn(length, d_model))  # (N, C), the scale of the token embeddings
            layers = [make_mixer(mixer, d_model=d_model, length=length, n_heads=n_heads, **mixer_kwargs)
                      for _ in range(n_layers)]
            if is_block(mixer):  # FNet, gMLP, MLP-Mixer: the paper's block, as it is
                self.blocks = nn.ModuleList(layers)
            else:  # attention or a Synthesizer: inside a pre-norm block with a feed-forward layer
                self.blocks = nn.ModuleList(_Block(d_model, d_ff or 4 * d_model, layer) for layer in layers)
            self.ln = nn.LayerNorm(d_model)
            self.head = nn.Linear(d_model, vocab)

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.dim() != 2 or tokens.shape[1] != self.length:
            raise ValueError(f"expected tokens (B, N) with N = {self.length}, got {tuple(tokens.shape)}")
        x = self.tok(tokens) + self.pos  # (B, N, C)
        for block in self.blocks:
            x = block(x)  # (B, N, C)
        return self.head(self.ln(x))  # (B, N, vocab)


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


def train(model: nn.Module, sampler: Sampler, *, steps: int = 300, batch_size: int = 64, lr: float = 3e-3,
          weight_decay: float = 0.01, warmup: float = 0.1, n_test: int = 1024, seed: int = 0,
          eval_every: int | None = None, threads: int | None = 1, progress: bool = False) -> TrainResult:
    """Fit ``model`` with AdamW on fresh batches ``sampler(batch_size, seed')``; held-out accuracy at the end.

    ``sampler(n, seed) -> (inputs, targets)``, e.g. ``functools.partial(offset_copy, length=16)``
    called as ``sampler(n, seed=s)``. Every step draws a new batch with its own seed (derived
    from ``seed`` and the step), so the model never sees a batch twice; the held-out set is
    ``sampler(n_test, seed')`` with a seed no training batch uses. Schedule: linear warm-up over
    ``warmup · steps``, then cosine decay to 0; gradients clipped to norm 1. With the model
    built from a seed too, a run is repeatable on one machine and thread count. ``threads``:
    torch threads while training (1 suits a tiny model on a small shared CPU; None leaves it).
    """
    if steps < 1 or lr <= 0 or batch_size < 1:
        raise ValueError(f"need steps >= 1, lr > 0, batch_size >= 1; got steps={steps}, lr={lr}, "
                         f"batch_size={batch_size}")
    test_x, test_y = sampler(n_test, seed=10_000_019 * (seed + 1))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    n_warm = max(1, int(warmup * steps))

    def lr_at(step: int) -> float:
        if step < n_warm:
            return lr * (step + 1) / n_warm
        return lr * 0.5 * (1 + math.cos(math.pi * (step - n_warm) / max(1, steps - n_warm)))

    result = TrainResult()
    step_times = []
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=steps, leave=False)
    t0 = time.perf_counter()
    model.train()
    with torch_threads(threads):
        for step in range(steps):
            x, y = sampler(batch_size, seed=seed * 1_000_003 + step)
            t_step = time.perf_counter()
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            logits = model(x)  # (B, N, vocab)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=IGNORE)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step_times.append(time.perf_counter() - t_step)
            result.loss.append(loss.item())
            if (eval_every and (step + 1) % eval_every == 0) or step + 1 == steps:
                result.eval_steps.append(step + 1)
                result.accuracies.append(accuracy(model, test_x, test_y))
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    result.seconds = time.perf_counter() - t0
    result.accuracy = result.accuracies[-1]
    result.step_seconds = float(torch.tensor(step_times).median())
    return result
