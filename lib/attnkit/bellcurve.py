"""The learnable attention window of Wu's 2022 progress reports: a bell curve over |i - j| with a learned sigma.

Longformer's sliding window, weighted by a Gaussian bell curve over the distance between query
i and key j, with a standard deviation sigma that is learned (predicted per token):

    max-1 curve       U_ij = exp(-½ ((j - i) / σ)²)                         (peak 1)
    normalised PDF    U_ij = exp(-½ ((j - i) / σ)²) / (σ·sqrt(2π))           (peak < 1 for σ > 0.4)

As a *log-space bias* (the principled form, a FlexAttention ``score_mod``) the curve adds
log U_ij to the score of every window key:

    s_ij = q_i·k_j·scale - ½ ((i - j) / σ_i)²  [- log(σ_i·sqrt(2π)) when normalised],  |i - j| <= w
    s_ij = q_i·k_j·scale                      when i or j is one of the g global tokens (no bias)
    s_ij = -inf                               otherwise;            out_i = softmax_j(s_ij) v_j

The reports' *multiplicative form* multiplies the softmax weights by U and renormalises:
p_ij U_ij / Σ_k p_ik U_ik = exp(s_ij + log U_ij) / Σ_k exp(s_ik + log U_ik): the same thing.
σ depends on the query only, so the PDF's peak -log(σ_i·sqrt(2π)) is one constant per row: it
cancels in the softmax *unless* some keys of the row get no bias. Global keys get none, so the
normalised form divides every window weight by σ·sqrt(2π) against the global keys: at σ = 50000
the window keys are swamped (the reports' "weights of sliding window tokens are nearly ZERO").
Without global tokens the two forms give the same output.

Next to it: :mod:`attnkit.varwindow` slices a finite window w off the curve
(``window_from_sigma``) and attends with a per-query width (the reports' stage 2), and
:mod:`attnkit.span` is the published anchor for learned spans (adaptive span, a soft ramp).

Cost: banded on the CPU (:func:`attnkit.banded.biased_window`: chunks of queries against key
slabs), time
O(N·(w + g)·D), memory O(N·(w + g)); FlexAttention on CUDA (block mask from the window, the
bias as a ``score_mod`` with σ captured as a tensor: a new σ does not recompile).

Sources: Y.-H. Wu, progress reports 2022-05-11 and 2022-05-25; Yang et al.
(2018), Modeling Localness for Self-Attention Networks (EMNLP; σ from U_d and W_p); Beltagy et
al. (2020), Longformer (arXiv:2004.05150); Sukhbaatar et al. (2019), Adaptive Attention Span in
Transformers (arXiv:1905.07799).
"""
from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import flex
from .banded import biased_window, with_globals
from .dense import default_scale, dense_attention
from .graded import reference
from .fixed import longformer_mask
from .masks import full, global_mask, materialize_scores, window_mask

__all__ = ["SQRT_2PI", "bell_log_curve", "bell_score_mod", "bell_bias", "bellcurve", "bellcurve_reference",
           "bell_weights_attention", "SigmaPredictor"]

SQRT_2PI = math.sqrt(2 * math.pi)



# ---------------------------------------------------------------- sigma and the curve

def _sigma_grid(sigma, B: int, H: int, N: int, *, device=None) -> Tensor:
    """σ as a tensor broadcastable to ``(B, H, N)``: 0-d, ``(1, H, 1)``, ``(B, 1, N)`` or ``(B, H, N)``.

    Accepts a float, a 0-d tensor, per head ``(H,)``, per query token ``(B, N)`` or ``(B, H, N)``
    (in the 3-d form any axis may be 1 and broadcasts: ``(B, 1, N)`` is one σ per token for all heads).
    A float becomes a float64 tensor (cast to the scores' dtype where it is used).
    """
    if not isinstance(sigma, Tensor):
        sigma = torch.tensor(float(sigma), dtype=torch.float64, device=device)
    shapes = {0: (), 1: (H,), 2: (B, N), 3: (B, H, N)}
    ok = sigma.dim() in shapes and (tuple(sigma.shape) == shapes[sigma.dim()] or sigma.dim() == 3 and all(
        s in (1, full) for s, full in zip(sigma.shape, (B, H, N))))
    if not ok:
        raise ValueError(f"sigma must be a float, a 0-d tensor, per head (H,) = ({H},), per token "
                         f"(B, N) = ({B}, {N}) or (B, H, N) = ({B}, {H}, {N}) (any of them may be 1); "
                         f"got {tuple(sigma.shape)}")
    if not sigma.is_cuda and not torch.jit.is_tracing() and bool((sigma <= 0).any()):
        raise ValueError(f"sigma must be > 0, got min {sigma.min().item():.3g}")
    if sigma.dim() == 1:
        return sigma.view(1, H, 1)
    return sigma.unsqueeze(1) if sigma.dim() == 2 else sigma


@reference(graded_in=("a5", "a6"))
def bell_log_curve(d: Tensor, sigma: Tensor, normalised: bool = False) -> Tensor:
    """log U for offsets d = i - j: -½ (d/σ)², minus log(σ·sqrt(2π)) when ``normalised``."""
    out = -0.5 * (d / sigma) ** 2
    return out - torch.log(sigma * SQRT_2PI) if normalised else out


@reference(graded_in=("a5", "a6"))
def bell_score_mod(sigma, *, normalised: bool = False, window: int | None = None,
                   global_tokens: int = 0, B: int = 1, H: int = 1, N: int = 1, device=None):
    """The bell-curve window as a FlexAttention ``score_mod(score, b, h, q_idx, kv_idx)``.

    Window keys (|i - j| <= w, neither token global) get ``bell_log_curve(i - j, σ_i)``; keys
    beyond w get -inf; the first g tokens (rows and columns) get nothing. σ: see
    :func:`bellcurve` (B, H, N are needed only to check a tensor σ's shape). Window, g and σ
    are captured as tensors, so a new value is new data for a compiled kernel, not new code.
    Works on scalar indices (Flex) and on broadcast index grids (``masks.materialize_scores``).
    """
    if isinstance(sigma, Tensor) and sigma.dim() > 0:  # the shape says which form it is
        device = sigma.device
        B, H, N = {1: (B, sigma.shape[0], N), 2: (sigma.shape[0], H, sigma.shape[-1])}.get(
            sigma.dim(), tuple(sigma.shape))
    sig = _sigma_grid(sigma, B, H, N, device=device)
    per_b, per_h, per_n = (sig.dim() == 3 and sig.shape[0] > 1, sig.dim() == 3 and sig.shape[1] > 1,
                           sig.dim() == 3 and sig.shape[2] > 1)
    inside = full if window is None else window_mask(int(window), device=sig.device)
    is_global = global_mask(int(global_tokens), device=sig.device)

    def score_mod(score, b, h, q_idx, kv_idx):
        s = sig if sig.dim() == 0 else sig[b if per_b else 0, h if per_h else 0, q_idx if per_n else 0]
        s = s.to(score.dtype)
        d = (q_idx - kv_idx).to(score.dtype)
        biased = torch.where(inside(b, h, q_idx, kv_idx), score + bell_log_curve(d, s, normalised), -math.inf)
        return torch.where(is_global(b, h, q_idx, kv_idx), score, biased)
    return score_mod


@reference(graded_in=("a5", "a6"))
def bell_bias(N: int, sigma, *, normalised: bool = False, window: int | None = None,
              global_tokens: int = 0, B: int = 1, H: int = 1, dtype=torch.float64,
              device=None) -> Tensor:
    """The additive bias matrix ``(B, H, N, N)`` of the bell-curve window (-inf = masked).

    Memory O(N²): for references and plots.
    """
    mod = bell_score_mod(sigma, normalised=normalised, window=window, global_tokens=global_tokens,
                         B=B, H=H, N=N, device=device)
    return materialize_scores(mod, torch.zeros(B, H, N, N, dtype=dtype, device=device))


# ---------------------------------------------------------------- helpers

def _lay_sigma(s: Tensor, lay) -> Tensor:
    """σ from :func:`_sigma_grid` laid out against the slabs: 0-d, (1, H, 1, 1, 1) or (.., nc, c, 1)."""
    if s.dim() == 0:
        return s
    return s.view(*s.shape, 1, 1) if s.shape[-1] == 1 else lay(s)


def _check_qkv(q: Tensor, k: Tensor, v: Tensor, name: str) -> None:
    if q.dim() != 4 or k.shape[:-1] != q.shape[:-1] or v.shape[:-1] != q.shape[:-1]:
        raise ValueError(f"{name}: expected q, k (B, H, N, D) and v (B, H, N, Dv) with the same "
                         f"B, H, N; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")


# ---------------------------------------------------------------- the bell-curve window

@reference(graded_in=("a5",))
def bellcurve(q: Tensor, k: Tensor, v: Tensor, *, sigma, normalised: bool = False,
              window: int | None = None, global_tokens: int = 0,
              scale: float | None = None) -> Tensor:
    """Sliding window weighted by a bell curve of learned width σ, plus g global tokens.

        s_ij = q_i·k_j·scale - ½ ((i - j)/σ_i)² [- log(σ_i·sqrt(2π)) if normalised], |i - j| <= w
        s_ij = q_i·k_j·scale  if i < g or j < g;    -inf otherwise;    out = softmax(s) v

    Args:
        q, k, v: ``(B, H, N, D)``, ``(B, H, N, D)``, ``(B, H, N, Dv)``.
        sigma: a float, a 0-d tensor, per head ``(H,)``, or per query token ``(B, N)`` /
            ``(B, H, N)``; > 0. Gradients flow into a tensor σ.
        normalised: use the normalised PDF (peak 1/(σ·sqrt(2π))) instead of the max-1 curve.
        window: the cap w (keys beyond are masked); None = no cap (dense cost).
        global_tokens: the first g tokens attend to all and are attended by all, with no bias.

    Returns ``(B, H, N, Dv)``.
    Cost: time O(N·(w + g)·D), memory O(N·(w + g)) (banded on CPU, FlexAttention on CUDA).
    Paper: Wu 2022 (progress reports), on Longformer (Beltagy et al. 2020).
    """
    _check_qkv(q, k, v, "bellcurve")
    if window is not None and window < 0 or global_tokens < 0:
        raise ValueError(f"bellcurve: window and global_tokens must be >= 0, got {window}, {global_tokens}")
    B, H, N, _ = q.shape
    sc = default_scale(q, scale)
    g = min(global_tokens, N)
    w = N if window is None else min(window, N)

    def cpu() -> Tensor:
        if window is None or window >= N - 1:
            return bellcurve_reference(q, k, v, sigma=sigma, normalised=normalised, window=window,
                                       global_tokens=global_tokens, scale=scale)
        sig = _sigma_grid(sigma, B, H, N, device=q.device)

        def bias(d: Tensor, lay) -> Tensor:  # (nc, c, L) -> (B|1, H|1, nc, c, L)
            return bell_log_curve(d, _lay_sigma(sig.to(q.dtype), lay), normalised)

        part = biased_window(q, k, v, reach=window, scale=sc, skip=g, bias=bias)
        return with_globals(q, k, v, part, g, sc)
    return flex.dispatch(q, k, v, cpu, key=("bellcurve", w, g), scale=sc,
                         mask_mod=partial(longformer_mask, w, g),  # the keys the curve may weight
                         score_mod=partial(bell_score_mod, sigma, normalised=normalised, window=window,
                                           global_tokens=g, B=B, H=H, N=N))


@reference(graded_in=("a5",))
def bellcurve_reference(q: Tensor, k: Tensor, v: Tensor, *, sigma, normalised: bool = False,
                        window: int | None = None, global_tokens: int = 0,
                        scale: float | None = None) -> Tensor:
    """Dense attention plus the materialised :func:`bell_bias` (slow, obviously correct)."""
    B, H, N, _ = q.shape
    bias = bell_bias(N, sigma, normalised=normalised, window=window, global_tokens=global_tokens,
                     B=B, H=H, dtype=q.dtype, device=q.device)  # (B|1, H|1, N, N)
    return dense_attention(q, k, v, mask=bias, scale=scale)


@reference(graded_in=("a5",))
def bell_weights_attention(q: Tensor, k: Tensor, v: Tensor, *, sigma, normalised: bool = False,
                           window: int | None = None, global_tokens: int = 0,
                           renormalise: bool = True, scale: float | None = None) -> Tensor:
    """The reports' multiplicative form: softmax weights (window + global keys) times the curve.

        p_ij = softmax_j(q_i·k_j·scale) over visible keys;   a_ij = p_ij U_ij   (U = 1 for global)
        renormalise: a_ij / Σ_k a_ik  (== :func:`bellcurve`)   else: a_ij as it is

    The slides do not say whether they renormalised. Their symptom, "after the global attention
    tokens participate ... the weights of sliding window tokens are nearly ZERO", is what the
    renormalised form gives (without global tokens the PDF's constant would cancel); without
    renormalising the PDF shrinks every output row by σ·sqrt(2π), global tokens or not.
    Shapes as :func:`bellcurve`. Cost: dense, time O(N²·D), memory O(N²) (for the chapter).
    """
    B, H, N, _ = q.shape
    bias = bell_bias(N, sigma, normalised=normalised, window=window, global_tokens=global_tokens,
                     B=B, H=H, dtype=q.dtype, device=q.device)  # (B|1, H|1, N, N): log U, -inf
    _, p = dense_attention(q, k, v, mask=torch.isfinite(bias), scale=scale, return_weights=True)
    a = p * torch.exp(bias)  # (B, H, N, N): masked keys have p = 0 and exp(-inf) = 0
    if renormalise:
        a = a / a.sum(-1, keepdim=True)
    return a @ v  # (B, H, N, N) @ (B, H, N, Dv) -> (B, H, N, Dv)


# ---------------------------------------------------------------- sigma from the hidden state

class SigmaPredictor(nn.Module):
    """σ per query token from its hidden state, through W_p and U_d (Yang et al. 2018):

        z_i = U_d tanh(W_p x_i) + b_d,      σ_i = σ_min + softplus(z_i)      (> σ_min > 0)

    Yang et al. bound σ with a sigmoid times the length; the reports let σ grow from 1 to 58, so
    we use softplus: unbounded above, linear for large z (a step in z moves σ by at most that
    step, where exp would move it in proportion to σ and explode at a 100× learning rate), and
    the floor σ_min keeps 1/σ² finite. U_d starts at zero and b_d at softplus⁻¹(σ0 - σ_min),
    so every token starts at exactly σ0 (the reports start near 1).

    Shapes: x ``(B, N, C)`` -> σ ``(B, H, N)`` (one σ per head; ``heads=1`` gives ``(B, 1, N)``).
    """

    def __init__(self, dim: int, *, heads: int = 1, hidden: int | None = None,
                 sigma_init: float = 1.0, sigma_min: float = 0.1):
        super().__init__()
        if not sigma_init > sigma_min > 0:
            raise ValueError(f"need sigma_init > sigma_min > 0, got {sigma_init}, {sigma_min}")
        hidden = hidden or dim
        self.sigma_min = sigma_min
        self.W_p = nn.Linear(dim, hidden, bias=False)
        self.U_d = nn.Linear(hidden, heads)
        nn.init.zeros_(self.U_d.weight)
        x = sigma_init - sigma_min  # softplus⁻¹(x) = x + log(1 - exp(-x))
        nn.init.constant_(self.U_d.bias, x + math.log(-math.expm1(-x)))

    @reference(graded_in=("a5",))
    def forward(self, x: Tensor) -> Tensor:
        z = self.U_d(torch.tanh(self.W_p(x)))  # (B, N, C) -> (B, N, hidden) -> (B, N, H)
        return (self.sigma_min + F.softplus(z)).transpose(1, 2)  # (B, H, N)


# ---------------------------------------------------------------- registry entries

def _register_all() -> None:
    from .registry import register

    register("bellcurve", bellcurve, family="learned window", reference=bellcurve_reference,
             cost="O(N·(w + g)·D) time, O(N·(w + g)) memory",
             paper="Wu 2022, differentiable attention window; Yang et al. 2018, "
                   "Modeling Localness for Self-Attention Networks",
             example_kwargs={"sigma": 2.0, "window": 6, "global_tokens": 2})

_register_all()
