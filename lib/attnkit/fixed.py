"""Fixed sparse patterns: each query sees a fixed, data-independent subset of the keys.

With d = i - j (query i, key j), w a window, s a stride, g global tokens:

    local        |d| <= w                                        (causal: and d >= 0)
    dilated      |d| <= w·dilation  and  d % dilation == 0         (causal: and d >= 0)
    strided      j <= i  and  (d < s  or  d % s == 0)             Sparse Transformer, strided
    fixed        j <= i  and  (j // s == i // s  or  j % s >= s - summary)   Sparse Transformer
    longformer   dilated window, or i in g, or j in g
    bigbird      block-level: |qb - kb| <= window_blocks, or kb / qb global, or r random blocks

Every pattern is a ``*_mask`` factory returning a ``mask_mod`` (FlexAttention convention), a
fast function ``fn(q, k, v, *, ...)`` on ``(B, H, N, D)`` tensors, and a ``*_reference`` that is
``dense_attention`` with the materialised mask. The fast paths never build an N×N tensor:
``local`` and Longformer's window run on key slabs (:mod:`attnkit.banded`), ``strided`` and
``fixed`` split into pieces that are dense after a reshape (a window and one causal attention
per residue class; blocks and summary columns) merged by log-sum-exp, ``dilated`` is a plain
window inside each residue class, and ``bigbird`` uses the generic
:func:`attnkit.blocksparse.blocksparse_attention`.

Sources: Child et al. (2019), Sparse Transformers (arXiv:1904.10509); Beltagy et al. (2020),
Longformer (arXiv:2004.05150); Zaheer et al. (2020), BigBird (arXiv:2007.14062).
"""
from __future__ import annotations

import math
import os
from functools import partial

import torch
from torch import Tensor

from .banded import (attend, block_attention, dilated_attention, merge, residue_attention, summary_attention,
                     window_attention)
from .blocksparse import blocksparse_attention
from . import flex
from .dense import default_scale, dense_attention
from .graded import reference
from .masks import MaskMod, global_mask, layout_mask, materialize, or_masks, window_mask

__all__ = [
    "local_mask", "dilated_mask", "strided_mask", "fixed_mask", "longformer_mask", "bigbird_mask",
    "local", "dilated", "strided", "fixed", "longformer", "bigbird",
    "local_reference", "dilated_reference", "strided_reference", "fixed_reference",
    "longformer_reference", "bigbird_reference",
]


# ---------------------------------------------------------------- mask functions (patterns)
# Factories of mask functions; hyperparameters are captured as 0-d tensors on ``device`` (the
# GPU path passes the tensors' device) so FlexAttention compiles each pattern once.

@reference(graded_in=("a2", "a6"))
def local_mask(window: int, causal: bool = False, *, device=None) -> MaskMod:
    """Sliding window: |i - j| <= w (and j <= i when ``causal``)."""
    return window_mask(window, causal=causal, device=device)


@reference(graded_in=("a2", "a6"))
def dilated_mask(window: int, dilation: int, causal: bool = False, *, device=None) -> MaskMod:
    """Dilated window: |i - j| <= w·dilation and (i - j) % dilation == 0."""
    return window_mask(window, dilation=dilation, causal=causal, device=device)


@reference(graded_in=("a2", "a6"))
def strided_mask(stride: int, *, device=None) -> MaskMod:
    """Sparse Transformer strided: j <= i and (i - j < s or (i - j) % s == 0)."""
    s = torch.tensor(stride, device=device)

    def mask_mod(b, h, q_idx, kv_idx):
        d = q_idx - kv_idx
        return (d >= 0) & ((d < s) | (d % s == 0))
    return mask_mod


@reference(graded_in=("a2", "a6"))
def fixed_mask(stride: int, summary: int = 1, *, device=None) -> MaskMod:
    """Sparse Transformer fixed: j <= i and (j // s == i // s or j % s >= s - summary)."""
    s, first_summary = torch.tensor(stride, device=device), torch.tensor(stride - summary, device=device)

    def mask_mod(b, h, q_idx, kv_idx):
        same_block = kv_idx // s == q_idx // s
        summary_col = kv_idx % s >= first_summary
        return (kv_idx <= q_idx) & (same_block | summary_col)
    return mask_mod


def _global_index(global_tokens: Tensor | int, N: int, device=None) -> Tensor:
    """The global token positions as a sorted, unique long tensor inside [0, N)."""
    if isinstance(global_tokens, int):
        return torch.arange(min(max(global_tokens, 0), N), device=device)
    g = torch.as_tensor(global_tokens, device=device).long().flatten().unique()
    if g.numel() and (g.min() < 0 or g.max() >= N):
        raise ValueError(f"global_tokens must lie in [0, {N}), got {g.tolist()}")
    return g


@reference(graded_in=("a2", "a6"))
def longformer_mask(window: int, global_tokens: Tensor | int, dilation: int = 1, *,
                    device=None) -> MaskMod:
    """Longformer: dilated window, or i global (sees all), or j global (seen by all)."""
    return or_masks(window_mask(window, dilation=dilation, device=device),
                    global_mask(global_tokens, device=device))


@reference(graded_in=("a2", "a6"))
def bigbird_layout(num_blocks: int, window_blocks: int, global_blocks: int, random_blocks: int,
                   seed: int) -> Tensor:
    """BigBird's block layout ``(nb, nb)``: window, global rows and columns, r random per row."""
    qb = torch.arange(num_blocks).view(-1, 1)  # (nb, 1)
    kb = torch.arange(num_blocks).view(1, -1)  # (1, nb)
    layout = ((qb - kb).abs() <= window_blocks) | (qb < global_blocks) | (kb < global_blocks)
    r = min(max(random_blocks, 0), num_blocks)
    if r:
        g = torch.Generator().manual_seed(seed)
        picks = torch.rand(num_blocks, num_blocks, generator=g).argsort(-1)[:, :r]  # (nb, r)
        layout[torch.arange(num_blocks).view(-1, 1), picks] = True
    return layout


@reference(graded_in=("a2", "a6"))
def bigbird_mask(N: int, block: int, window_blocks: int = 1, global_blocks: int = 1,
                 random_blocks: int = 1, seed: int = 0, *, device=None) -> MaskMod:
    """BigBird: key j visible to query i when layout[i // block, j // block] (see bigbird_layout)."""
    layout = bigbird_layout(math.ceil(N / block), window_blocks, global_blocks, random_blocks, seed)
    return layout_mask(layout.to(device), block)


def _local_path() -> str:
    """Which GPU kernel :func:`local` uses: ``"flex"`` (FlexAttention, the default) or ``"triton"``
    (:mod:`attnkit.triton_window`, forward only), from ``ATTNKIT_LOCAL_PATH``. The Triton kernel
    becomes the default only where ``make gpu-check`` measures it faster than FlexAttention."""
    path = os.environ.get("ATTNKIT_LOCAL_PATH", "flex")
    if path not in ("flex", "triton"):
        raise ValueError(f"ATTNKIT_LOCAL_PATH must be 'flex' or 'triton', got {path!r}")
    return path


def _check(name: str, **values: int) -> None:
    """Hyperparameters must be integers >= 1 (stride, dilation, block) or >= 0 (the rest)."""
    for key, value in values.items():
        low = 1 if key in ("stride", "dilation", "block") else 0
        if value < low:
            raise ValueError(f"{name}: {key} must be >= {low}, got {value}")


# ---------------------------------------------------------------- attention functions

@reference(graded_in=("a2", "a6"))
def local(q: Tensor, k: Tensor, v: Tensor, *, window: int, causal: bool = False,
          scale: float | None = None) -> Tensor:
    """Sliding-window attention: query i sees keys |i - j| <= w (and j <= i if ``causal``).

    Shapes: q ``(B, H, N, D)``, k ``(B, H, N, D)``, v ``(B, H, N, Dv)`` -> ``(B, H, N, Dv)``.

    Cost: time O(N·w·D), memory O(N·w) (banded: chunks of c queries, w <= c <= 2w, against
    slabs of c + 2w keys; see :func:`attnkit.banded.window_attention`).
    Paper: Child et al. 2019 (local attention); Beltagy et al. 2020 (sliding window).
    """
    _check("local", window=window)
    if q.is_cuda and _local_path() == "triton" and not any(x.requires_grad for x in (q, k, v)):
        from .triton_window import window_attention as triton_window  # forward only

        return triton_window(q, k, v, window=window, causal=causal, scale=scale)
    return flex.dispatch(
        q, k, v, lambda: window_attention(q, k, v, window=window, causal=causal,
                                          scale=default_scale(q, scale), need_lse=False)[0],
        key=("local", window, causal), mask_mod=partial(local_mask, window, causal), scale=scale)


@reference(graded_in=("a2",))
def dilated(q: Tensor, k: Tensor, v: Tensor, *, window: int, dilation: int, causal: bool = False,
            scale: float | None = None) -> Tensor:
    """Dilated window: |i - j| <= w·dilation and (i - j) % dilation == 0.

    A plain window of w steps inside each residue class mod dilation
    (:func:`attnkit.banded.dilated_attention`).
    Shapes: ``(B, H, N, D)`` in, ``(B, H, N, Dv)`` out.
    Cost: time O(N·w·D), memory O(N·w), whatever the dilation.
    Paper: Beltagy et al. 2020 (dilated sliding window).
    """
    _check("dilated", window=window, dilation=dilation)
    return flex.dispatch(
        q, k, v, lambda: dilated_attention(q, k, v, window=window, dilation=dilation, causal=causal,
                                           scale=default_scale(q, scale), need_lse=False)[0],
        key=("dilated", window, dilation, causal), scale=scale,
        mask_mod=partial(dilated_mask, window, dilation, causal))


@reference(graded_in=("a2",))
def strided(q: Tensor, k: Tensor, v: Tensor, *, stride: int, scale: float | None = None) -> Tensor:
    """Sparse Transformer strided (causal): j <= i and (i - j < s or (i - j) % s == 0).

    Two disjoint pieces merged by log-sum-exp: the causal window 0 <= i - j < s, and the
    residue class j ≡ i (mod s), j <= i - s (causal attention of length N/s per class).
    Shapes: ``(B, H, N, D)`` in, ``(B, H, N, Dv)`` out.
    Cost: time O(N·(s + N/s)·D), memory O(N·(s + N/s)): O(N·√N) at s = √N.
    Paper: Child et al. 2019, "Generating Long Sequences with Sparse Transformers".
    """
    _check("strided", stride=stride)

    def cpu() -> Tensor:
        sc = default_scale(q, scale)
        return merge(window_attention(q, k, v, window=stride - 1, causal=True, scale=sc),
                     residue_attention(q, k, v, stride=stride, scale=sc))
    return flex.dispatch(q, k, v, cpu, key=("strided", stride), scale=scale,
                         mask_mod=partial(strided_mask, stride))


@reference(graded_in=("a2",))
def fixed(q: Tensor, k: Tensor, v: Tensor, *, stride: int, summary: int = 1,
          scale: float | None = None) -> Tensor:
    """Sparse Transformer fixed (causal): j <= i and (same stride block or a summary column).

    Two disjoint pieces merged by log-sum-exp: causal attention inside each block of s, and
    the summary columns (j % s >= s - summary) of the earlier blocks.
    Shapes: ``(B, H, N, D)`` in, ``(B, H, N, Dv)`` out.
    Cost: time O(N·(s + summary·N/s)·D), memory O(N·(s + summary·N/s)).
    Paper: Child et al. 2019, "Generating Long Sequences with Sparse Transformers".
    """
    _check("fixed", stride=stride, summary=summary)

    def cpu() -> Tensor:
        sc = default_scale(q, scale)
        return merge(block_attention(q, k, v, block=stride, scale=sc),
                     summary_attention(q, k, v, stride=stride, summary=summary, scale=sc))
    return flex.dispatch(q, k, v, cpu, key=("fixed", stride, summary), scale=scale,
                         mask_mod=partial(fixed_mask, stride, summary))


@reference(graded_in=("a2",))
def longformer(q: Tensor, k: Tensor, v: Tensor, *, window: int, global_tokens: Tensor | int,
               dilation: int = 1, scale: float | None = None) -> Tensor:
    """Longformer: a (dilated) sliding window plus g global tokens that see and are seen by all.

    Window rows and the global key columns are two partial softmaxes merged by log-sum-exp
    (global keys inside the window are counted once); global query rows are dense.
    Shapes: ``(B, H, N, D)`` in, ``(B, H, N, Dv)`` out.
    Cost: time O(N·(w·dilation + g)·D), memory O(N·(w·dilation + g)).
    Paper: Beltagy et al. 2020, "Longformer: The Long-Document Transformer".
    """
    _check("longformer", window=window, dilation=dilation)
    N = q.shape[-2]
    g = _global_index(global_tokens, N, device=q.device)

    def cpu() -> Tensor:
        sc = default_scale(q, scale)
        part = window_attention(q, k, v, window=window, dilation=dilation, scale=sc)
        if g.numel() == 0:
            return part[0]
        # Global keys outside each query's window: (B, H, N, D) @ (B, H, D, g) -> (B, H, N, g)
        in_window = window_mask(window, dilation=dilation, device=q.device)
        outside = ~in_window(0, 0, torch.arange(N, device=q.device).view(N, 1), g.view(1, -1))  # (N, g)
        out = merge(part, attend(q * sc, k[:, :, g], v[:, :, g], outside))
        rows = dense_attention(q[:, :, g], k, v, scale=sc)  # global queries see all: (B, H, g, Dv)
        return out.index_copy(2, g, rows)
    return flex.dispatch(q, k, v, cpu, key=("longformer", window, dilation, tuple(g.tolist())),
                         mask_mod=partial(longformer_mask, window, g, dilation), scale=scale)


@reference(graded_in=("a2",))
def bigbird(q: Tensor, k: Tensor, v: Tensor, *, block: int, window_blocks: int = 1,
            global_blocks: int = 1, random_blocks: int = 1, seed: int = 0,
            scale: float | None = None) -> Tensor:
    """BigBird: block-sparse window + global blocks + r random key blocks per query block.

    Query block qb sees key block kb when |qb - kb| <= window_blocks, qb or kb < global_blocks,
    or kb is one of the r blocks drawn for qb by ``torch.Generator().manual_seed(seed)``.
    Shapes: ``(B, H, N, D)`` in, ``(B, H, N, Dv)`` out.
    Cost: time O(N·(2·window_blocks + 1 + g + r)·block·D) for non-global rows, plus O(g·block·N·D).
    Paper: Zaheer et al. 2020, "Big Bird: Transformers for Longer Sequences".
    """
    _check("bigbird", block=block, window_blocks=window_blocks, global_blocks=global_blocks,
           random_blocks=random_blocks)
    N = max(q.shape[-2], k.shape[-2])
    pattern = (N, block, window_blocks, global_blocks, random_blocks, seed)

    def cpu() -> Tensor:
        layout = bigbird_layout(math.ceil(N / block), window_blocks, global_blocks, random_blocks, seed)
        return blocksparse_attention(q, k, v, mask_mod=None, block=block, scale=scale,
                                     layout=layout)  # the layout is the whole pattern
    # block = 128 (or a multiple) lines up with Flex's tiles: see attnkit.flex
    return flex.dispatch(q, k, v, cpu, key=("bigbird",) + pattern, scale=scale,
                         mask_mod=partial(bigbird_mask, *pattern))


# ---------------------------------------------------------------- dense references

def _dense_with(mask_mod: MaskMod, q: Tensor, k: Tensor, v: Tensor, scale) -> Tensor:
    B, H, N, M = q.shape[0], q.shape[1], q.shape[-2], k.shape[-2]
    mask = materialize(mask_mod, N, M, B=B, H=H, device=q.device)  # (B, H, N, M)
    return dense_attention(q, k, v, mask=mask, scale=scale)


@reference(graded_in=("a2", "a6"))
def local_reference(q, k, v, *, window, causal=False, scale=None):
    """Dense attention with the materialised :func:`local_mask` (slow, obviously correct)."""
    return _dense_with(local_mask(window, causal), q, k, v, scale)


@reference(graded_in=("a2",))
def dilated_reference(q, k, v, *, window, dilation, causal=False, scale=None):
    """Dense attention with the materialised :func:`dilated_mask`."""
    return _dense_with(dilated_mask(window, dilation, causal), q, k, v, scale)


@reference(graded_in=("a2",))
def strided_reference(q, k, v, *, stride, scale=None):
    """Dense attention with the materialised :func:`strided_mask`."""
    return _dense_with(strided_mask(stride), q, k, v, scale)


@reference(graded_in=("a2",))
def fixed_reference(q, k, v, *, stride, summary=1, scale=None):
    """Dense attention with the materialised :func:`fixed_mask`."""
    return _dense_with(fixed_mask(stride, summary), q, k, v, scale)


@reference(graded_in=("a2",))
def longformer_reference(q, k, v, *, window, global_tokens, dilation=1, scale=None):
    """Dense attention with the materialised :func:`longformer_mask`."""
    return _dense_with(longformer_mask(window, global_tokens, dilation), q, k, v, scale)


@reference(graded_in=("a2",))
def bigbird_reference(q, k, v, *, block, window_blocks=1, global_blocks=1, random_blocks=1,
                      seed=0, scale=None):
    """Dense attention with the materialised :func:`bigbird_mask`."""
    N = max(q.shape[-2], k.shape[-2])
    mask_mod = bigbird_mask(N, block, window_blocks, global_blocks, random_blocks, seed)
    return _dense_with(mask_mod, q, k, v, scale)


# ---------------------------------------------------------------- registry entries

def _register_all() -> None:
    from .registry import register

    sparse_t = "Child et al. 2019, Generating Long Sequences with Sparse Transformers (arXiv:1904.10509)"
    longf = "Beltagy et al. 2020, Longformer: The Long-Document Transformer (arXiv:2004.05150)"
    entries = [  # name, fn, reference, cost, paper, example_kwargs (valid at N = 64)
        ("local", local, local_reference, "O(N·w·D) time, O(N·w) memory", longf, {"window": 4}),
        ("dilated", dilated, dilated_reference, "O(N·w·D) time, O(N·w) memory",
         longf, {"window": 3, "dilation": 2}),
        ("strided", strided, strided_reference, "O(N·(s + N/s)·D) time and memory", sparse_t,
         {"stride": 8}),
        ("fixed", fixed, fixed_reference, "O(N·(s + summary·N/s)·D) time and memory", sparse_t,
         {"stride": 8, "summary": 2}),
        ("longformer", longformer, longformer_reference, "O(N·(w + g)·D) time, O(N·(w + g)) memory",
         longf, {"window": 4, "global_tokens": 2}),
        ("bigbird", bigbird, bigbird_reference, "O(N·(w + g + r)·block·D) time (block-sparse)",
         "Zaheer et al. 2020, Big Bird: Transformers for Longer Sequences (arXiv:2007.14062)",
         {"block": 8, "window_blocks": 1, "global_blocks": 1, "random_blocks": 1, "seed": 0}),
    ]
    for name, fn, dense_fn, cost, paper, kwargs in entries:
        register(name, fn, family="fixed pattern", cost=cost, paper=paper,
                 example_kwargs=kwargs, reference=dense_fn)


_register_all()
