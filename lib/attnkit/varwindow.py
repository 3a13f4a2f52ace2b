"""Slicing a window off a learned bell curve, and attending with a different width per query.

The bell curve of :mod:`attnkit.bellcurve` has infinite support; a fast kernel needs a finite
window w. :func:`window_from_sigma` picks one from σ (the reports' "window from sigma"), by the
Gaussian mass left outside ±w,

    P(|X| > w) = erfc(w / (σ·sqrt(2)))  <  tol        X ~ N(0, σ²)

or by the rule that fits the pairs the reports give (:data:`SEED_WINDOWS`). With σ predicted per
token, each query gets its own width w_i: :func:`variable_window_attention` attends to keys
|i - j| <= w_i (the reports' stage 2), banded on the CPU at O(N·max w) memory and FlexAttention
on CUDA, with :func:`variable_window_reference` as its dense check.

Sources: Y.-H. Wu, progress reports 2022-05-11 and 2022-05-25.
"""
from __future__ import annotations

import math
from functools import partial

import torch
from torch import Tensor

from . import flex
from .banded import biased_window, with_globals
from .bellcurve import _check_qkv, _lay_sigma, _sigma_grid, bell_bias, bell_log_curve, bell_score_mod
from .dense import default_scale, dense_attention
from .graded import reference
from .masks import MaskMod, global_mask, materialize, or_masks

__all__ = ["SEED_WINDOWS", "tail_mass", "window_from_sigma", "variable_window_mask", "variable_window_attention",
           "variable_window_reference"]

#: The reports' reported (σ, w) pairs (the first report's fixed-σ table, the second's training curves).
#: They all fit w = min(ceil(14·sqrt(σ)), 128) (``window_from_sigma(..., rule="seeds")``), and so
#: does the second report's LR×10 run (σ = 15 -> "111 tokens (w = 55)").
SEED_WINDOWS: tuple[tuple[float, int], ...] = (
    (1.0, 14), (9.5, 44), (64.0, 112), (1000.0, 128), (50000.0, 128))


# ---------------------------------------------------------------- window from sigma

@reference(graded_in=("a5",))
def tail_mass(w, sigma):
    """Mass of N(0, σ²) beyond ±w: P(|X| > w) = erfc(w / (σ·sqrt(2))) (continuous tails)."""
    w, sigma = torch.as_tensor(w, dtype=torch.float64), torch.as_tensor(sigma, dtype=torch.float64)
    return torch.special.erfc(w / (sigma * math.sqrt(2)))


@reference(graded_in=("a5",))
def window_from_sigma(sigma, *, tol: float = 1e-3, max_window: int = 128, rule: str = "mass"):
    """The window w to slice for a bell curve of width σ, capped at ``max_window``.

    ``rule="mass"``: the smallest integer w with :func:`tail_mass` (both tails of the continuous
    Gaussian, erfc) below ``tol``: w = floor(σ·sqrt(2)·erfc⁻¹(tol)) + 1, so w grows like σ
    (w ≈ 3.3σ at tol = 1e-3). Against :data:`SEED_WINDOWS` at the default tol: σ = 1 -> 4
    (reports 14), 9.5 -> 32 (44), 64 -> 128 (112), 1000 -> 128 (128). The erfc tails are within
    ``2·φ(w/σ)/σ`` of the discrete sum over integer offsets; for σ >= 1 w moves by at most 1.

    ``rule="seeds"``: w = min(ceil(14·sqrt(σ)), max_window), which reproduces every pair the
    reports give (and the second report's σ ≈ 15 -> w = 55). It grows like sqrt(σ), not σ: at σ = 64 it cuts
    the curve at 1.75σ and drops 8% of its mass. The slides do not give the rule; this is a fit.

    σ: a float (returns an int) or a tensor (returns a long tensor of the same shape).
    """
    if not 1e-12 <= tol < 1:
        raise ValueError(f"tol must lie in [1e-12, 1), got {tol}")
    if rule not in ("mass", "seeds"):
        raise ValueError(f"rule must be 'mass' or 'seeds', got {rule!r}")
    s = torch.as_tensor(sigma, dtype=torch.float64).detach()
    if bool((s <= 0).any()):
        raise ValueError("sigma must be > 0")
    if rule == "mass":
        z = torch.special.erfinv(torch.tensor(1 - tol, dtype=torch.float64)) * math.sqrt(2)
        w = torch.floor(s * z) + 1
    else:
        w = torch.ceil(14 * torch.sqrt(s))
    w = w.clamp(max=max_window).long()
    return int(w) if not isinstance(sigma, Tensor) else w.to(sigma.device)


# ---------------------------------------------------------------- per-query variable windows

def _widths_grid(widths: Tensor, B: int, H: int, N: int) -> Tensor:
    """Widths ``(B, N)`` or ``(B, H, N)`` (integers >= 0) -> ``(B, 1|H, N)`` long."""
    if widths.dim() not in (2, 3) or widths.shape[0] != B or widths.shape[-1] != N \
            or (widths.dim() == 3 and widths.shape[1] != H):
        raise ValueError(f"widths must be (B, N) = ({B}, {N}) or (B, H, N) = ({B}, {H}, {N}), "
                         f"got {tuple(widths.shape)}")
    if widths.is_floating_point() or bool((widths < 0).any()):
        raise ValueError("widths must be integers >= 0")
    return (widths.unsqueeze(1) if widths.dim() == 2 else widths).long()


def variable_window_mask(widths: Tensor) -> MaskMod:
    """Per-query windows: key j visible to query i of batch b, head h when |i - j| <= widths[b, h, i].

    ``widths``: ``(B, H, N)`` integers (expand a shared axis before: the mask indexes it).
    """
    def mask_mod(b, h, q_idx, kv_idx):
        return (q_idx - kv_idx).abs() <= widths[b, h, q_idx]
    return mask_mod


@reference(graded_in=("a5",))
def variable_window_attention(q: Tensor, k: Tensor, v: Tensor, *, widths: Tensor, sigma=None,
                              normalised: bool = False, global_tokens: int = 0,
                              scale: float | None = None) -> Tensor:
    """Per-query windows: query i sees keys |i - j| <= widths_i (plus g global tokens).

    With ``sigma`` the window keys also get the bell-curve bias (the reports' stage 2: the width
    sliced from each token's learned σ by :func:`window_from_sigma`).
    CPU: the banded slab of the widest window, masked per row to each width (memory
    O(N·max w), not O(Σ_i w_i): padding to the widest row is the price of one batched matmul).
    CUDA: FlexAttention with a block mask built from the widths (rebuilt every call, so a
    tile the widths leave empty is skipped).
    Shapes: q, k ``(B, H, N, D)``, v ``(B, H, N, Dv)``, widths ``(B, N)`` or ``(B, H, N)`` ->
    ``(B, H, N, Dv)``. Cost: time O(N·(max w + g)·D), memory O(N·(max w + g)).
    """
    _check_qkv(q, k, v, "variable_window_attention")
    B, H, N, _ = q.shape
    wd = _widths_grid(widths, B, H, N).expand(B, H, N)
    sc, g = default_scale(q, scale), min(global_tokens, N)

    def cpu() -> Tensor:
        sig = None if sigma is None else _sigma_grid(sigma, B, H, N, device=q.device)

        def bias(d: Tensor, lay) -> Tensor:
            return bell_log_curve(d, _lay_sigma(sig.to(q.dtype), lay), normalised)

        part = biased_window(q, k, v, reach=int(wd.max()), scale=sc, skip=g,
                             row_mask=variable_window_mask(wd), bias=None if sig is None else bias)
        return with_globals(q, k, v, part, g, sc)

    def pattern(device) -> MaskMod:  # the widths change every call: no cached block mask
        return or_masks(variable_window_mask(wd.contiguous()), global_mask(g, device=device))

    score_mod = None if sigma is None else partial(bell_score_mod, sigma, normalised=normalised,
                                                   global_tokens=g, B=B, H=H, N=N)
    return flex.dispatch(q, k, v, cpu, key=None, mask_mod=pattern, score_mod=score_mod, scale=sc,
                         per_head=True)


@reference(graded_in=("a5",))
def variable_window_reference(q: Tensor, k: Tensor, v: Tensor, *, widths: Tensor, sigma=None,
                              normalised: bool = False, global_tokens: int = 0,
                              scale: float | None = None) -> Tensor:
    """Dense attention with the materialised per-query mask (and bias): O(N²) memory."""
    B, H, N, _ = q.shape
    wd = _widths_grid(widths, B, H, N).expand(B, H, N)
    keep = materialize(or_masks(variable_window_mask(wd), global_mask(global_tokens, device=q.device)),
                       N, B=B, H=H, device=q.device)  # (B, H, N, N)
    if sigma is None:
        return dense_attention(q, k, v, mask=keep, scale=scale)
    bias = bell_bias(N, sigma, normalised=normalised, global_tokens=global_tokens, B=B, H=H,
                     dtype=q.dtype, device=q.device)  # (B|1, H|1, N, N): no bias on global pairs
    return dense_attention(q, k, v, mask=bias.masked_fill(~keep, -math.inf), scale=scale)
