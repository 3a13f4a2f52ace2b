"""One small Transformer for the whole course, with the token mixer chosen by name.

Every model the chapters train is this network; only the token mixer and the head change::

    h_0 = E[tokens] + P[positions]                                            (B, N, C)
    h_l = h_l' + FFN(LN(h_l')),   h_l' = h_{l-1} + mixer_l(LN(h_{l-1}))        l = 1..L
    out = LN(h_L) W_out                                                       (B, N, out)

``mixer`` is either

* a **name** from :func:`mixer_names`: an attention variant of :data:`attnkit.VARIANTS`
  (wrapped in :class:`attnkit.MultiHeadAttention`, so it has q, k, v and output projections,
  called with the variant's ``example_kwargs`` updated by ``mixer_kwargs``), or a token-mixing
  module of :data:`attnkit.MIXERS` built for width C and length N. FNet, gMLP and MLP-Mixer are
  whole blocks in their papers (residuals, norms and a feed-forward of their own), so they
  replace the pre-norm block above rather than sit inside it; or
* a **factory** ``(layer_index, d_model) -> nn.Module`` mapping ``(B, N, C) -> (B, N, C)``: the
  chapter 8 reader (:class:`attnkit.qa.QAEncoder`) plugs its bell-curve attention in this way.

``causal=True`` makes it a decoder: dense attention gets a causal mask, a variant with a
``causal`` keyword (local, linear, Performer, ...) gets ``causal=True``, and a mixer with no
causal form is refused with the list of those that have one (:func:`causal_names`). Positions are learned (BERT's
absolute embeddings) for every length up to ``max_len``. The heads the course uses:
``out = vocab`` (a language model, or a token classifier), ``out = 2`` (start and end logits of
an extractive reader).

    model = Transformer("local", vocab=32, max_len=512, window=16, seed=0)      # an encoder
    model = Transformer("performer", vocab=60, max_len=64, causal=True, m=64)  # a decoder
    logits = model(tokens)                                                      # (B, N, out)

Parameters are initialised from ``torch.manual_seed(seed)`` (when a seed is given) without
touching the global random state, layer by layer in the order the modules are listed.

Cost: O(L·N·C²) for the projections and feed-forward layers, plus L times the mixer's own cost.
"""
from __future__ import annotations

import inspect
from typing import Callable

import torch
from torch import Tensor, nn

from .dense import dense_attention
from .modules import MultiHeadAttention

__all__ = ["mixer_names", "is_block", "causal_names", "AttentionMixer", "make_layer", "Block",
           "Transformer"]

LayerFactory = Callable[[int, int], nn.Module]
"""``factory(layer_index, d_model) -> module``: a module mapping ``(B, N, C)`` to ``(B, N, C)``."""


def mixer_names() -> list[str]:
    """Every name :class:`Transformer` accepts: the attention variants, then the mixer modules."""
    from . import registry
    return [*registry.VARIANTS, *getattr(registry, "MIXERS", {})]


def is_block(name: str) -> bool:
    """Whether the registered mixer ``name`` is a whole block (its own residual and norms, FNet and
    MLP-Mixer a feed-forward layer too) rather than a drop-in for an attention layer
    (:attr:`attnkit.registry.Mixer.block`); attention variants are layers."""
    from .registry import MIXERS
    return name in MIXERS and MIXERS[name].block


def causal_names() -> list[str]:
    """The names a decoder can use: dense, and the variants and mixers that take ``causal``.

    Content-based variants (LSH, routing, Sinkhorn) are left out although they take ``causal``:
    they mask future keys, but *which* past keys a query sees depends on buckets, clusters or a
    sorting computed from the whole sequence, so a future token still changes a past output.
    """
    from . import registry
    return (["dense"] + [n for n, v in registry.VARIANTS.items()
                         if n != "dense" and v.family != "content-based"
                         and "causal" in inspect.signature(v.fn).parameters]
            + [n for n, m in getattr(registry, "MIXERS", {}).items()
               if "causal" in inspect.signature(m.cls).parameters])


def _causal_dense(q: Tensor, k: Tensor, v: Tensor, **kwargs) -> Tensor:
    """Dense attention with query i seeing keys j <= i (a decoder's mask)."""
    n, m = q.shape[-2], k.shape[-2]
    mask = torch.ones(n, m, dtype=torch.bool, device=q.device).tril(m - n)  # (N, M) True = allowed
    return dense_attention(q, k, v, mask=mask, **kwargs)


class AttentionMixer(nn.Module):
    """A registered attention variant as a token mixer: ``x (B, N, C) -> (B, N, C)``.

    Multi-head attention with q, k, v and output projections; the heads attend with
    ``VARIANTS[name]`` called with its ``example_kwargs`` updated by ``attn_kwargs``.
    """

    def __init__(self, name: str, d_model: int, n_heads: int, *, causal: bool = False, **attn_kwargs):
        super().__init__()
        from .registry import VARIANTS
        variant = VARIANTS[name]
        fn, kwargs = variant.fn, {**variant.example_kwargs, **attn_kwargs}
        if causal:
            if name == "dense":
                fn = _causal_dense
            elif name in causal_names():
                kwargs["causal"] = True
            else:
                raise ValueError(f"attention variant {name!r} has no causal form (a future token would "
                                 f"change past outputs); a decoder can use {causal_names()}")
        self.name = name
        self.attn = MultiHeadAttention(d_model, n_heads, fn, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        return self.attn(x)  # (B, N, C)


def make_layer(name: str, *, d_model: int, length: int, n_heads: int = 2, causal: bool = False,
               **kwargs) -> nn.Module:
    """The token mixer called ``name``, mapping ``(B, N, C)`` to ``(B, N, C)``.

    * An attention variant: :class:`AttentionMixer` with H = ``n_heads``; ``kwargs`` update the
      variant's ``example_kwargs`` and go to the attention function.
    * A registered mixer module: ``cls(dim=C, seq_len=N, heads=H (if it takes heads), causal (if it
      takes it), **kwargs)``; everything else keeps the module's own defaults (the papers'
      sizes), not the registry's ``example_kwargs``, which are sized for tests at C = 16.
    """
    from . import registry
    if name in registry.VARIANTS:
        return AttentionMixer(name, d_model, n_heads, causal=causal, **kwargs)
    mixers = getattr(registry, "MIXERS", {})
    if name in mixers:
        cls = mixers[name].cls
        params = inspect.signature(cls).parameters
        sizes = {"dim": d_model, "seq_len": length}
        if "heads" in params:
            sizes["heads"] = n_heads
        if causal:
            if "causal" not in params:
                raise ValueError(f"mixer {name!r} has no causal form; a decoder can use {causal_names()}")
            sizes["causal"] = True
        return cls(**{**sizes, **kwargs})
    raise ValueError(f"unknown token mixer {name!r}: expected one of {mixer_names()}")


class Block(nn.Module):
    """Pre-norm block: x + mixer(LN(x)), then x + FFN(LN(x)).

    Built in this order (it fixes which random numbers each parameter gets): the two norms, the
    mixer (from ``make_mixer``), the feed-forward layer.
    """

    def __init__(self, d_model: int, d_ff: int, make_mixer: Callable[[], nn.Module]):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.mixer = make_mixer()
        self.ff = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.mixer(self.ln1(x))  # (B, N, C)
        return x + self.ff(self.ln2(x))  # (B, N, C)


class Transformer(nn.Module):
    """Token embedding + learned positions, L blocks with the chosen token mixer, LN and a linear head.

    Args:
        mixer: a name from :func:`mixer_names`, or a factory ``(layer_index, d_model) -> module``.
        vocab: number of token ids.
        max_len: the longest sequence (learned positions; length-bound mixers are built for it).
        out: width of the head (default ``vocab``).
        d_model, n_layers, n_heads, d_ff: sizes C, L, H (named attention only) and the FFN width (4·C).
        causal: a decoder (see the module docstring).
        seed: initialise from ``torch.manual_seed(seed)``; without a seed, from the global random
            state. Either way the global random state is left as it was.
        **mixer_kwargs: passed to :func:`make_layer` for every layer (named mixers only).

    ``forward(tokens (B, N)) -> (B, N, out)``; :meth:`features` stops before the head.
    """

    def __init__(self, mixer: str | LayerFactory, *, vocab: int, max_len: int, out: int | None = None,
                 d_model: int = 32, n_layers: int = 2, n_heads: int = 2, d_ff: int | None = None,
                 causal: bool = False, seed: int | None = None, **mixer_kwargs):
        super().__init__()
        if isinstance(mixer, str):
            name = mixer
            if name not in mixer_names():
                raise ValueError(f"unknown token mixer {name!r}: expected one of {mixer_names()}")

            def factory(i: int, c: int) -> nn.Module:
                return make_layer(name, d_model=c, length=max_len, n_heads=n_heads, causal=causal,
                                  **mixer_kwargs)
            whole_blocks = is_block(name)
        else:
            if mixer_kwargs:
                raise ValueError(f"mixer keywords {sorted(mixer_kwargs)} only go with a named mixer")
            name, factory, whole_blocks = getattr(mixer, "__name__", "custom"), mixer, False
        self.mixer_name, self.vocab, self.max_len, self.causal = name, vocab, max_len, causal
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            self.tok = nn.Embedding(vocab, d_model)
            self.pos = nn.Embedding(max_len, d_model)  # (N_max, C), N(0, 1) like the token embeddings
            if whole_blocks:  # FNet, gMLP, MLP-Mixer: the paper's block, as it is
                self.blocks = nn.ModuleList(factory(i, d_model) for i in range(n_layers))
            else:  # attention, a Synthesizer or a custom layer: inside a pre-norm block
                self.blocks = nn.ModuleList(Block(d_model, d_ff or 4 * d_model, lambda i=i: factory(i, d_model))
                                            for i in range(n_layers))
            self.ln = nn.LayerNorm(d_model)
            self.head = nn.Linear(d_model, out or vocab)

    def features(self, tokens: Tensor) -> Tensor:
        """Hidden states ``(B, N, C)`` after the last block and the final norm."""
        if tokens.dim() != 2 or tokens.shape[1] > self.max_len:
            raise ValueError(f"expected tokens (B, N) with N <= {self.max_len}, got {tuple(tokens.shape)}")
        x = self.tok(tokens) + self.pos.weight[: tokens.shape[1]]  # (B, N, C)
        for block in self.blocks:
            x = block(x)  # (B, N, C)
        return self.ln(x)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.head(self.features(tokens))  # (B, N, out)
