"""Adaptive attention span (Sukhbaatar et al. 2019): each head learns how far back it looks.

The weights are multiplied by a soft ramp of the distance x = |i - j| and renormalised:

    m_z(x) = clamp((R + z - x) / R, 0, 1)          (1 up to z, falls to 0 over R tokens)
    a_ij   = m_z(x_ij) exp(s_ij) / Σ_k m_z(x_ik) exp(s_ik)

z is a learned span per head and R the ramp width; m_z is differentiable in z, so z is trained
with the model, under an L1 penalty that pulls it down (:class:`AdaptiveSpan`). As a log-space
bias, log m_z(x) is added to the scores of the keys within z + R: the banded kernel of
:func:`attnkit.banded.biased_window` with reach ceil(z + R), time O(N·(z + R)·D), memory
O(N·(z + R)). It is the published anchor for the learned bell-curve window of
:mod:`attnkit.bellcurve`: a learned width, with a ramp instead of a Gaussian.

Source: Sukhbaatar et al. (2019), Adaptive Attention Span in Transformers (arXiv:1905.07799).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .banded import biased_window
from .bellcurve import _check_qkv
from .dense import default_scale, dense_attention

__all__ = ["span_ramp", "adaptive_span", "adaptive_span_reference", "AdaptiveSpan"]


def span_ramp(x: Tensor, span: Tensor, ramp: float) -> Tensor:
    """Sukhbaatar et al.'s soft mask m_z(x) = clamp((R + z - x) / R, 0, 1) for distance x."""
    return ((ramp + span - x) / ramp).clamp(0, 1)


def _span_log(x: Tensor, span: Tensor, ramp: float) -> Tensor:
    """log m_z(x), -inf where m = 0, with finite gradients everywhere."""
    m = span_ramp(x, span, ramp)
    return torch.where(m > 0, torch.log(m.clamp_min(1e-30)), -math.inf)


def _span_tensor(span, H: int, q: Tensor) -> Tensor:
    z = torch.as_tensor(span, dtype=q.dtype, device=q.device)
    if z.dim() not in (0, 1) or (z.dim() == 1 and z.shape[0] != H):
        raise ValueError(f"span must be a float or per head (H,) = ({H},), got {tuple(z.shape)}")
    return z.clamp_min(0).view(1, H, 1, 1) if z.dim() == 1 else z.clamp_min(0)


def adaptive_span(q: Tensor, k: Tensor, v: Tensor, *, span, ramp: float = 32.0,
                  causal: bool = False, scale: float | None = None) -> Tensor:
    """Adaptive attention span: weights times a soft ramp of the distance x = |i - j|, renormalised.

        a_ij = m_z(x) exp(s_ij) / Σ_k m_z(x_ik) exp(s_ik),   m_z(x) = clamp((R + z - x)/R, 0, 1)

    z is a learned span per head (``span``: float or ``(H,)`` tensor, clamped at 0; gradients
    flow into it), R the ramp width. ``causal``: keys j <= i only (the paper's setting).
    Shapes: ``(B, H, N, D)`` in, ``(B, H, N, Dv)`` out.
    Cost: banded with reach ceil(max z + R): time O(N·(z + R)·D), memory O(N·(z + R)).
    Paper: Sukhbaatar et al. 2019, Adaptive Attention Span in Transformers (arXiv:1905.07799).
    """
    _check_qkv(q, k, v, "adaptive_span")
    H = q.shape[1]
    z = _span_tensor(span, H, q)
    reach = math.ceil(float(z.detach().max()) + ramp)

    def bias(d: Tensor, lay) -> Tensor:  # z (1, H, 1, 1) -> (1, H, 1, 1, 1) against (nc, c, L)
        return _span_log(d.abs(), z.unsqueeze(-1) if z.dim() else z, ramp)

    return biased_window(q, k, v, reach=reach, scale=default_scale(q, scale), causal=causal, bias=bias)[0]


def adaptive_span_reference(q: Tensor, k: Tensor, v: Tensor, *, span, ramp: float = 32.0,
                            causal: bool = False, scale: float | None = None) -> Tensor:
    """Dense form: softmax weights times the materialised ramp m_z(|i - j|), renormalised."""
    N, H = q.shape[-2], q.shape[1]
    i = torch.arange(N, device=q.device)
    d = (i.view(N, 1) - i.view(1, N)).to(q.dtype)  # (N, N)
    m = span_ramp(d.abs(), _span_tensor(span, H, q), ramp)  # (1|1, H|1, N, N)
    if causal:
        m = m * (d >= 0)
    _, p = dense_attention(q, k, v, scale=scale, return_weights=True)  # (B, H, N, N)
    a = p * m
    return (a / a.sum(-1, keepdim=True)) @ v


class AdaptiveSpan(nn.Module):
    """A learned span z per head, z = max_span · clamp(θ, 0, 1), and the paper's L1 span loss.

    ``forward(q, k, v)`` calls :func:`adaptive_span`; ``loss()`` = mean span (add it times a
    small coefficient to the training loss, as the paper does).
    """

    def __init__(self, heads: int, *, max_span: int, ramp: float = 32.0, init_span: float = 0.0,
                 causal: bool = False):
        super().__init__()
        self.max_span, self.ramp, self.causal = max_span, ramp, causal
        self.theta = nn.Parameter(torch.full((heads,), init_span / max_span))

    def span(self) -> Tensor:
        return self.max_span * self.theta.clamp(0, 1)  # (H,)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return adaptive_span(q, k, v, span=self.span(), ramp=self.ramp, causal=self.causal)

    def loss(self) -> Tensor:
        return self.span().mean()



def _register_all() -> None:
    from .registry import register

    register("adaptive_span", adaptive_span, family="learned window",
             reference=adaptive_span_reference, cost="O(N·(z + R)·D) time, O(N·(z + R)) memory",
             paper="Sukhbaatar et al. 2019, Adaptive Attention Span in Transformers "
                   "(arXiv:1905.07799)",
             example_kwargs={"span": 3.5, "ramp": 4.0})


_register_all()
