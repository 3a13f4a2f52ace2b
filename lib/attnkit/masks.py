"""Attention patterns as mask functions, in FlexAttention's convention.

A *mask function* ``mask_mod(b, h, q_idx, kv_idx) -> bool`` says whether query ``q_idx`` of
batch ``b``, head ``h`` may attend to key ``kv_idx``. The same function drives the dense
reference (materialise it as an ``(N, M)`` boolean matrix), FlexAttention on the GPU
(``torch.nn.attention.flex_attention.create_block_mask``), the efficient CPU paths, and the
pattern plots. Mask functions must be written with tensor operations (``&``, ``|``, ``<=``,
arithmetic), not Python ``and``/``if``, so that they work on whole index grids at once.

A *score function* ``score_mod(score, b, h, q_idx, kv_idx) -> score`` adds a bias instead.

The patterns that several variants share are written here once, as factories whose
hyperparameters are captured as 0-d tensors (FlexAttention compiles a mask function once and
treats captured tensors as inputs, so a new window is new data, not a recompile):

    window_mask(w, dilation=δ, causal)   |i - j| <= w·δ, (i - j) % δ == 0 (and j <= i)
    global_mask(g)                       i or j is a global token (the first g, or listed ones)
    layout_mask(layout, block)           layout[i // block, j // block] (block-sparse tables)

Longformer is ``or_masks(window_mask(w), global_mask(g))``; the learned windows of chapter 8
add a bias on top of the same two.
"""
from __future__ import annotations

import operator
from typing import Callable

import torch
from torch import Tensor

from .graded import reference

MaskMod = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
ScoreMod = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]

__all__ = [
    "MaskMod", "ScoreMod", "full", "causal", "and_masks", "or_masks", "not_mask",
    "materialize", "materialize_scores", "causal_mask", "density", "window_mask", "global_mask",
    "layout_mask", "EMPTY", "PARTIAL", "FULL", "tile_grid",
]


def full(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
    """Every query sees every key (dense attention)."""
    return (q_idx >= 0) & (kv_idx >= 0)


def causal(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
    """Query i sees keys j <= i (autoregressive decoding)."""
    return kv_idx <= q_idx


def _combine(mods: tuple[MaskMod, ...], op: Callable[[Tensor, Tensor], Tensor], name: str) -> MaskMod:
    if not mods:
        raise ValueError(f"{name}_masks needs at least one mask function")

    def mask_mod(b, h, q_idx, kv_idx):
        out = mods[0](b, h, q_idx, kv_idx)
        for mod in mods[1:]:
            out = op(out, mod(b, h, q_idx, kv_idx))
        return out

    mask_mod.__name__ = f"{name}_" + "_".join(getattr(m, "__name__", "mask") for m in mods)
    return mask_mod


def and_masks(*mods: MaskMod) -> MaskMod:
    """Intersection of patterns: visible only where every ``mod`` allows it."""
    return _combine(mods, operator.and_, "and")


def or_masks(*mods: MaskMod) -> MaskMod:
    """Union of patterns: visible where any ``mod`` allows it."""
    return _combine(mods, operator.or_, "or")


def not_mask(mod: MaskMod) -> MaskMod:
    """Complement of a pattern."""
    def mask_mod(b, h, q_idx, kv_idx):
        return ~mod(b, h, q_idx, kv_idx)
    mask_mod.__name__ = "not_" + getattr(mod, "__name__", "mask")
    return mask_mod


def _grid(N: int, M: int, B: int | None, H: int | None, device) -> tuple[Tensor, ...]:
    """Broadcastable index tensors b, h, q_idx, kv_idx for a whole (B, H, N, M) grid."""
    q_idx = torch.arange(N, device=device).view(N, 1)  # (N, 1)
    kv_idx = torch.arange(M, device=device).view(1, M)  # (1, M)
    if B is None and H is None:
        zero = torch.zeros((), dtype=torch.long, device=device)
        return zero, zero, q_idx, kv_idx
    B, H = B or 1, H or 1
    b = torch.arange(B, device=device).view(B, 1, 1, 1)  # (B, 1, 1, 1)
    h = torch.arange(H, device=device).view(1, H, 1, 1)  # (1, H, 1, 1)
    return b, h, q_idx.view(1, 1, N, 1), kv_idx.view(1, 1, 1, M)


@reference(graded_in=("a1",))
def materialize(mask_mod: MaskMod, N: int, M: int | None = None, *, B: int | None = None,
                H: int | None = None, device=None) -> Tensor:
    """Evaluate ``mask_mod`` on every (query, key) pair.

    Returns an ``(N, M)`` boolean tensor (True = attend), or ``(B, H, N, M)`` when ``B`` or ``H``
    is given (for per-batch or per-head patterns). Memory O(N·M): for references and plots.
    """
    M = N if M is None else M
    b, h, q_idx, kv_idx = _grid(N, M, B, H, device)
    out = mask_mod(b, h, q_idx, kv_idx)
    shape = (N, M) if B is None and H is None else (B or 1, H or 1, N, M)
    return torch.as_tensor(out, device=device).to(torch.bool).expand(shape).contiguous()


def materialize_scores(score_mod: ScoreMod, scores: Tensor) -> Tensor:
    """Apply ``score_mod`` to a dense ``(B, H, N, M)`` score tensor (the reference for biases)."""
    B, H, N, M = scores.shape
    b, h, q_idx, kv_idx = _grid(N, M, B, H, scores.device)
    return score_mod(scores, b, h, q_idx, kv_idx)


@reference(graded_in=("a1",))
def causal_mask(N: int, M: int | None = None, *, device=None) -> Tensor:
    """``(N, M)`` boolean lower-triangular mask: True where key j <= query i."""
    return materialize(causal, N, M, device=device)


EMPTY, PARTIAL, FULL = 0, 1, 2
"""Tile kinds of :func:`tile_grid`: skipped, evaluated under the mask, evaluated without it."""


def tile_grid(mask: Tensor, block_m: int, block_n: int | None = None) -> Tensor:
    """Classify the ``block_m × block_n`` tiles of an ``(N, M)`` boolean mask: what a tiled kernel
    (FlashAttention, FlexAttention, the Triton window kernel) does with each.

        grid[a, b] = EMPTY    no True entry in tile (a, b): the kernel skips it
                     PARTIAL  some True entries: computed, then masked entry by entry
                     FULL     every in-range entry True: computed without a mask

    Returns a ``(ceil(N / block_m), ceil(M / block_n))`` long tensor. Ragged last tiles count only
    their in-range entries (the kernel masks the padding anyway).
    """
    if mask.dim() != 2:
        raise ValueError(f"tile_grid needs an (N, M) mask, got shape {tuple(mask.shape)}")
    block_n = block_m if block_n is None else block_n
    if block_m < 1 or block_n < 1:
        raise ValueError(f"tile sizes must be >= 1, got {block_m} x {block_n}")
    N, M = mask.shape
    nq, nk = -(-N // block_m), -(-M // block_n)
    padded = mask.new_zeros(nq * block_m, nk * block_n, dtype=torch.int64)
    padded[:N, :M] = mask.to(torch.int64)
    inside = torch.zeros_like(padded)
    inside[:N, :M] = 1
    tiles = lambda x: x.view(nq, block_m, nk, block_n).sum(dim=(1, 3))  # (nq, nk) sums per tile
    allowed, size = tiles(padded), tiles(inside)
    grid = torch.full_like(allowed, PARTIAL)
    grid[allowed == 0] = EMPTY
    grid[allowed == size] = FULL
    return grid


def density(mask: Tensor) -> float:
    """Fraction of (query, key) pairs that are visible: the work a sparse path can hope to do."""
    return mask.float().mean().item()


# ---------------------------------------------------------------- shared patterns (0-d tensors)

@reference(graded_in=("a2", "a6"))
def window_mask(window: int, *, dilation: int = 1, causal: bool = False, device=None) -> MaskMod:
    """Sliding (dilated) window: |i - j| <= w·δ and (i - j) % δ == 0 (and j <= i when ``causal``).

    One code path for every setting (``causal`` is a lower bound on i - j, not a branch), so
    FlexAttention compiles it once.
    """
    reach = torch.tensor(window * dilation, device=device)
    step = torch.tensor(dilation, device=device)
    lowest = torch.tensor(0 if causal else -(window * dilation), device=device)  # smallest i - j

    def mask_mod(b, h, q_idx, kv_idx):
        d = q_idx - kv_idx
        return (d.abs() <= reach) & (d % step == 0) & (d >= lowest)
    return mask_mod


@reference(graded_in=("a2", "a6"))
def global_mask(global_tokens: Tensor | int, *, device=None) -> MaskMod:
    """Global tokens: query i or key j is global (it sees every key and every query sees it).

    ``global_tokens``: an int g (the first g positions) or the global positions (a tensor or
    list); positions are looked up in a boolean table, so the test is one gather per index.
    """
    if isinstance(global_tokens, int):
        g = torch.tensor(global_tokens, device=device)

        def is_global(idx: Tensor) -> Tensor:
            return idx < g
    else:
        positions = torch.as_tensor(global_tokens, device=device).long().flatten()
        if positions.numel() and positions.min() < 0:
            raise ValueError(f"global token positions must be >= 0, got {positions.tolist()}")
        size = int(positions.max()) + 1 if positions.numel() else 1
        table = torch.zeros(size, dtype=torch.bool, device=device).index_fill_(0, positions, True)
        last = torch.tensor(size - 1, device=device)

        def is_global(idx: Tensor) -> Tensor:
            return table[torch.minimum(idx, last)] & (idx <= last)

    def mask_mod(b, h, q_idx, kv_idx):
        return is_global(q_idx) | is_global(kv_idx)
    return mask_mod


@reference(graded_in=("a2", "a6"))
def layout_mask(layout: Tensor, block: int) -> MaskMod:
    """Block pattern from a boolean ``(nb, nb)`` table: key j visible to query i when
    ``layout[i // block, j // block]`` (indices past the table use its last row/column)."""
    size = torch.tensor(block, device=layout.device)
    last_q = torch.tensor(layout.shape[0] - 1, device=layout.device)
    last_k = torch.tensor(layout.shape[1] - 1, device=layout.device)

    def mask_mod(b, h, q_idx, kv_idx):
        return layout[torch.minimum(q_idx // size, last_q), torch.minimum(kv_idx // size, last_k)]
    return mask_mod
