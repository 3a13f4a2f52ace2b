"""Attention patterns as mask functions, in FlexAttention's convention.

A *mask function* ``mask_mod(b, h, q_idx, kv_idx) -> bool`` says whether query ``q_idx`` of
batch ``b``, head ``h`` may attend to key ``kv_idx``. The same function drives the dense
reference (materialise it as an ``(N, M)`` boolean matrix), FlexAttention on the GPU
(``torch.nn.attention.flex_attention.create_block_mask``), the efficient CPU paths, and the
pattern plots. Mask functions must be written with tensor operations (``&``, ``|``, ``<=``,
arithmetic), not Python ``and``/``if``, so that they work on whole index grids at once.

A *score function* ``score_mod(score, b, h, q_idx, kv_idx) -> score`` adds a bias instead.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .guard import reference

MaskMod = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
ScoreMod = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]

__all__ = [
    "MaskMod", "ScoreMod", "full", "causal", "and_masks", "or_masks", "not_mask",
    "materialize", "materialize_scores", "causal_mask", "density",
]


def full(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
    """Every query sees every key (dense attention)."""
    return (q_idx >= 0) & (kv_idx >= 0)


def causal(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
    """Query i sees keys j <= i (autoregressive decoding)."""
    return kv_idx <= q_idx


def and_masks(*mods: MaskMod) -> MaskMod:
    """Intersection of patterns: visible only where every ``mod`` allows it."""
    if not mods:
        raise ValueError("and_masks needs at least one mask function")

    def mask_mod(b, h, q_idx, kv_idx):
        out = mods[0](b, h, q_idx, kv_idx)
        for mod in mods[1:]:
            out = out & mod(b, h, q_idx, kv_idx)
        return out

    mask_mod.__name__ = "and_" + "_".join(getattr(m, "__name__", "mask") for m in mods)
    return mask_mod


def or_masks(*mods: MaskMod) -> MaskMod:
    """Union of patterns: visible where any ``mod`` allows it."""
    if not mods:
        raise ValueError("or_masks needs at least one mask function")

    def mask_mod(b, h, q_idx, kv_idx):
        out = mods[0](b, h, q_idx, kv_idx)
        for mod in mods[1:]:
            out = out | mod(b, h, q_idx, kv_idx)
        return out

    mask_mod.__name__ = "or_" + "_".join(getattr(m, "__name__", "mask") for m in mods)
    return mask_mod


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


@reference  # refuses student callers while grading (attnkit.guard)
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


@reference  # refuses student callers while grading (attnkit.guard)
def causal_mask(N: int, M: int | None = None, *, device=None) -> Tensor:
    """``(N, M)`` boolean lower-triangular mask: True where key j <= query i."""
    return materialize(causal, N, M, device=device)


def density(mask: Tensor) -> float:
    """Fraction of (query, key) pairs that are visible: the work a sparse path can hope to do."""
    return mask.float().mean().item()
