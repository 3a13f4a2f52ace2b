"""Dense scaled dot-product attention: the reference every other variant is checked against.

    Attention(Q, K, V) = softmax(Q Kᵀ / sqrt(D) + bias) V

Shapes follow ``torch.nn.functional.scaled_dot_product_attention``: ``q`` is ``(B, H, N, D)``,
``k`` is ``(B, H, M, D)``, ``v`` is ``(B, H, M, Dv)`` and the result is ``(B, H, N, Dv)``.
A boolean ``mask`` (broadcastable to ``(B, H, N, M)``) is True where query i may attend to key j;
a floating-point ``mask`` is added to the scores (a bias, as in SDPA).

Cost: time O(B·H·N·M·D), memory O(B·H·N·M) for the score matrix: the N² that every sparse
variant in this kit tries to avoid.

Source: Vaswani et al., "Attention Is All You Need" (2017), eq. 1.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .graded import reference

__all__ = ["default_scale", "softmax", "dense_attention"]


def default_scale(q: Tensor, scale: float | None = None) -> float:
    """The score scale: ``scale`` when given, else 1/sqrt(D) for q of shape ``(..., N, D)``."""
    return 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale


@reference(graded_in=("a1",))
def softmax(scores: Tensor, dim: int = -1) -> Tensor:
    """Numerically stable softmax; rows that are entirely ``-inf`` give zeros, not NaN.

        softmax(s)_j = exp(s_j - max_k s_k) / sum_l exp(s_l - max_k s_k)

    Subtracting the row maximum leaves the result unchanged (it cancels between numerator and
    denominator) but keeps every exponent <= 0, so ``exp`` never overflows.
    """
    row_max = scores.amax(dim=dim, keepdim=True)
    # A fully masked row has max = -inf; shift it by 0 instead so that exp(-inf) = 0, not NaN.
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    e = torch.exp(scores - row_max)
    denom = e.sum(dim=dim, keepdim=True)
    return e / torch.where(denom > 0, denom, torch.ones_like(denom))


@reference(graded_in=("a1",))
def dense_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    mask: Tensor | None = None,
    scale: float | None = None,
    return_weights: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Scaled dot-product attention computed the obvious way (materialises the N×M scores).

    Args:
        q: queries ``(B, H, N, D)``.
        k: keys ``(B, H, M, D)``.
        v: values ``(B, H, M, Dv)``.
        mask: boolean (True = attend) or additive float bias, broadcastable to ``(B, H, N, M)``.
        scale: multiplies the scores; default ``1 / sqrt(D)``.
        return_weights: also return the attention weights ``(B, H, N, M)``.

    Returns:
        ``(B, H, N, Dv)``, or ``(out, weights)`` when ``return_weights``. A query whose every
        key is masked gets a zero output row (as SDPA does).

    Cost: time O(N·M·D) per head, memory O(N·M) per head.
    """
    if q.dim() < 2 or k.dim() < 2 or v.dim() < 2:
        raise ValueError(f"q, k, v need at least 2 dims (..., N, D); got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must share the head dim D: q is {tuple(q.shape)}, k is {tuple(k.shape)}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v must have the same length M: k is {tuple(k.shape)}, v is {tuple(v.shape)}")
    scale = default_scale(q, scale)

    scores = (q @ k.transpose(-2, -1)) * scale  # (B, H, N, D) @ (B, H, D, M) -> (B, H, N, M)
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask
    weights = softmax(scores, dim=-1)  # (B, H, N, M), rows sum to 1 (or 0 when fully masked)
    out = weights @ v  # (B, H, N, M) @ (B, H, M, Dv) -> (B, H, N, Dv)
    return (out, weights) if return_weights else out
