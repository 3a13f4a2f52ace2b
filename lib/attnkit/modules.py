"""Multi-head attention with a pluggable attention function.

    MultiHead(X) = concat(head_1, ..., head_H) W_o,   head_h = attn(X W_q^h, X W_k^h, X W_v^h)

Any function with the kit's calling convention, ``fn(q, k, v, **kwargs) -> out`` on
``(B, H, N, D)`` tensors, can be plugged in: the dense reference, or any variant from
``attnkit.VARIANTS``. That is how the later chapters swap attention inside one model.

Cost: the four projections are O(N·C²); the attention itself is whatever ``attn_fn`` costs.
"""
from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

from .graded import reference
from .dense import dense_attention

__all__ = ["split_heads", "merge_heads", "MultiHeadAttention"]


def split_heads(x: Tensor, n_heads: int) -> Tensor:
    """``(B, N, C)`` -> ``(B, H, N, C // H)``."""
    B, N, C = x.shape  # batch, tokens, channels
    if C % n_heads:
        raise ValueError(f"model width C={C} is not divisible by n_heads={n_heads}")
    return x.view(B, N, n_heads, C // n_heads).transpose(1, 2)  # (B, H, N, D)


def merge_heads(x: Tensor) -> Tensor:
    """``(B, H, N, D)`` -> ``(B, N, H·D)``: the inverse of :func:`split_heads`."""
    B, H, N, D = x.shape
    return x.transpose(1, 2).reshape(B, N, H * D)  # (B, N, C)


class MultiHeadAttention(nn.Module):
    """Multi-head (self- or cross-) attention; ``attn_fn`` decides how each head attends.

    Args:
        d_model: width C of the tokens.
        n_heads: number of heads H; each head has width D = C / H.
        attn_fn: attention function ``fn(q, k, v, **kw)`` on ``(B, H, N, D)``; default dense.
        bias: whether the projections have biases.
        **attn_kwargs: fixed keyword arguments for ``attn_fn`` (e.g. ``window=16``).
    """

    def __init__(self, d_model: int, n_heads: int, attn_fn: Callable[..., Tensor] = dense_attention,
                 *, bias: bool = True, **attn_kwargs):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.d_model, self.n_heads = d_model, n_heads
        self.attn_fn, self.attn_kwargs = attn_fn, attn_kwargs
        self.w_q = nn.Linear(d_model, d_model, bias=bias)
        self.w_k = nn.Linear(d_model, d_model, bias=bias)
        self.w_v = nn.Linear(d_model, d_model, bias=bias)
        self.w_o = nn.Linear(d_model, d_model, bias=bias)

    @reference(graded_in=("a1",))
    def forward(self, x: Tensor, context: Tensor | None = None, **kwargs) -> Tensor:
        """``x`` is ``(B, N, C)``; ``context`` (default ``x``) is ``(B, M, C)``; returns ``(B, N, C)``.

        Extra keyword arguments (e.g. ``mask=``) go to ``attn_fn`` for this call.
        """
        context = x if context is None else context
        q = split_heads(self.w_q(x), self.n_heads)  # (B, H, N, D)
        k = split_heads(self.w_k(context), self.n_heads)  # (B, H, M, D)
        v = split_heads(self.w_v(context), self.n_heads)  # (B, H, M, D)
        out = self.attn_fn(q, k, v, **{**self.attn_kwargs, **kwargs})  # (B, H, N, D)
        return self.w_o(merge_heads(out))  # (B, N, C)
