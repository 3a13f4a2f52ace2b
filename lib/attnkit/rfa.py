"""Random Feature Attention (RFA): random Fourier features of normalised q and k, then linear attention.

With x̂ = x / |x| and W ``(m, D)`` with rows w ~ N(0, σ⁻² I), the random Fourier features

    φ(x) = sqrt(1/m) [sin(W x̂), cos(W x̂)]                              (2m features)
    φ(x)·φ(y) = (1/m) Σ_r cos(w_r·(x̂ - ŷ))
    E[φ(x)·φ(y)] = exp(-|x̂ - ŷ|² / 2σ²) = exp((x̂·ŷ - 1) / σ²)

estimate a Gaussian kernel (Rahimi & Recht). On unit vectors it is exp(x̂·ŷ / σ²) up to a constant
that cancels in the ratio, so as m -> ∞

    out_i = Σ_j φ(q_i)·φ(k_j) v_j / Σ_j φ(q_i)·φ(k_j)  ->  Σ_j softmax_j(q̂_i·k̂_j / σ²) v_j
                                                             (:func:`rfa_limit`)

which is linear attention (:func:`attnkit.kernel.kernel_attention`): never N×N. Causal: prefix
sums S_t = Σ_{j<=t} φ(k_j) v_jᵀ, z_t = Σ_{j<=t} φ(k_j), out_t = φ(q_t)ᵀ S_t / φ(q_t)ᵀ z_t.

Gated (the paper's RFA-Gate, causal only), with a learned g_t ∈ (0, 1) per head and token:

    S_t = g_t S_{t-1} + (1 - g_t) φ(k_t) v_tᵀ,    z_t = g_t z_{t-1} + (1 - g_t) φ(k_t)
    i.e. token j enters out_i (j <= i) with weight  (1 - g_j) Π_{t=j+1..i} g_t  = (1 - g_j) exp(G_i - G_j)

with G_t = Σ_{s<=t} log g_s: a recency bias. Computed chunk by chunk (c tokens): inside a chunk the
decays form a c×c lower-triangular matrix exp(G_i - G_j) (every exponent <= 0), the state (S, z)
carries the earlier chunks, scaled for query i by the product of the gates since the chunk start.

The normaliser φ(q_i)ᵀ z_i is an estimate of a positive sum, but the estimate is not positive:
sin/cos features can make it near 0 or negative, and the ratio then blows up (the instability of
trigonometric random features that Performer's positive features were designed to avoid). It is safe where the estimated kernel sum is large against its
spread: many keys, large m, or a large σ (cos(w·Δ) near 1). With few keys (the first tokens of a
causal call) and small m, expect noisy or huge outputs.

Cost: time O(N·m·Dv) (gated: O(N·(c + m)·Dv)), memory O(N·m + c² + m·Dv); never N×N.

Paper: Peng et al. 2021, Random Feature Attention (arXiv:2103.02143); Rahimi & Recht 2007,
Random Features for Large-Scale Kernel Machines.
"""
from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

from .dense import dense_attention
from .graded import reference
from .kernel import kernel_attention, kernel_attention_reference

__all__ = ["rfa_weights", "rfa_features", "rfa", "rfa_reference", "rfa_limit", "gated_scan",
           "RFAGate", "RandomFeatureAttention"]


# ---------------------------------------------------------------- random Fourier features

def rfa_weights(m: int, D: int, sigma: float = 1.0, seed: int = 0, *, dtype=torch.float32,
                device=None) -> Tensor:
    """W ``(m, D)``, entries N(0, σ⁻²): drawn in float64 on the CPU from ``seed``, then cast."""
    if m < 1 or sigma <= 0:
        raise ValueError(f"rfa: need m >= 1 random features and sigma > 0, got m={m}, sigma={sigma}")
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(m, D, generator=g, dtype=torch.float64) / sigma).to(dtype=dtype, device=device)


@functools.lru_cache(maxsize=16)
def _drawn_weights(m: int, D: int, sigma: float, seed: int, dtype, device) -> Tensor:
    """:func:`rfa_weights`, drawn once per (m, D, σ, seed, dtype, device) and then only read."""
    return rfa_weights(m, D, sigma, seed, dtype=dtype, device=device)


@reference(graded_in=("a4",))
def rfa_features(x: Tensor, w: Tensor) -> Tensor:
    """φ(x) = sqrt(1/m) [sin(W x̂), cos(W x̂)], x̂ = x / |x|: ``(..., D), (m, D) -> (..., 2m)``.

    φ(x)·φ(x) = (1/m) Σ (sin² + cos²) = 1 for every x (a zero x has x̂ = 0, φ = sqrt(1/m) [0, 1]).
    W may carry leading dims that broadcast against x (one W per head: ``(H, m, D)``).
    """
    m = w.shape[-2]
    x_hat = x / x.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)  # (..., D)
    wx = x_hat @ w.transpose(-2, -1)  # (..., D) @ (D, m) -> (..., m)
    return torch.cat([wx.sin(), wx.cos()], dim=-1).mul_((1.0 / m) ** 0.5)  # (..., 2m), scaled in place


def _setup(q, k, v, m, sigma, seed, causal, gate):
    """Validate the call and return φ(q), φ(k): ``(B, H, N, 2m)``, ``(B, H, M, 2m)``."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4 or q.shape[-1] != k.shape[-1] \
            or k.shape[-2] != v.shape[-2]:
        raise ValueError(f"rfa: expected q (B, H, N, D), k (B, H, M, D), v (B, H, M, Dv), got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if (causal or gate is not None) and k.shape[-2] != q.shape[-2]:
        raise ValueError(f"rfa: causal attention needs as many keys as queries, got N={q.shape[-2]}, "
                         f"M={k.shape[-2]}")
    if gate is not None:
        if not causal:
            raise ValueError("rfa: the gate is a recurrence over past tokens: pass causal=True with gate")
        if tuple(gate.shape) != tuple(q.shape[:-1]):
            raise ValueError(f"rfa: gate must be (B, H, N) = {tuple(q.shape[:-1])}, got {tuple(gate.shape)}")
        if not bool(((gate > 0) & (gate <= 1)).all()):
            raise ValueError("rfa: gate values must lie in (0, 1] (e.g. a sigmoid, see RFAGate)")
    w = _drawn_weights(m, q.shape[-1], float(sigma), seed, q.dtype, q.device)  # (m, D)
    return rfa_features(q, w), rfa_features(k, w)


# ---------------------------------------------------------------- the gated recurrence

@reference(graded_in=("a4",))
def gated_scan(phi_q: Tensor, phi_k: Tensor, v: Tensor, gate: Tensor, *, chunk: int = 64) -> Tensor:
    """out_i = φ(q_i)ᵀ S_i / φ(q_i)ᵀ z_i with S_i = g_i S_{i-1} + (1 - g_i) φ(k_i) v_iᵀ (z likewise).

    Shapes: phi_q, phi_k ``(B, H, N, F)``, v ``(B, H, N, Dv)``, gate ``(B, H, N)`` -> ``(B, H, N, Dv)``.
    Chunked: the c×c decays exp(G_i - G_j) inside a chunk, the state (S, z) across chunks.
    Cost: time O(N·(c + F)·Dv), memory O(N·F + c² + F·Dv).
    """
    if chunk < 1:
        raise ValueError(f"rfa: chunk must be >= 1, got {chunk}")
    N = phi_q.shape[-2]
    log_g = gate.to(phi_q.dtype).log()  # (B, H, N), <= 0
    keep = (1 - gate.to(phi_q.dtype)).unsqueeze(-1)  # (B, H, N, 1): 1 - g_j, the share token j writes
    S = phi_q.new_zeros(*phi_q.shape[:-2], phi_q.shape[-1], v.shape[-1])  # (B, H, F, Dv)
    z = phi_q.new_zeros(*phi_q.shape[:-2], phi_q.shape[-1], 1)  # (B, H, F, 1)
    outs = []
    for s in range(0, N, chunk):
        fq, fk = phi_q[..., s:s + chunk, :], phi_k[..., s:s + chunk, :] * keep[..., s:s + chunk, :]
        vc, c = v[..., s:s + chunk, :], min(chunk, N - s)
        G = log_g[..., s:s + chunk].cumsum(-1)  # (B, H, c): log Π_{t=start..i} g_t
        past = torch.ones(c, c, dtype=torch.bool, device=G.device).tril()  # (c, c): j <= i
        diff = (G.unsqueeze(-1) - G.unsqueeze(-2)).masked_fill(~past, float("-inf"))  # G_i - G_j
        a = (fq @ fk.transpose(-2, -1)) * diff.exp()  # (B, H, c, c): decayed φ(q_i)·(1-g_j)φ(k_j)
        carry = G.exp().unsqueeze(-1)  # (B, H, c, 1): the decay of the state since the chunk start
        num = a @ vc + carry * (fq @ S)  # (B, H, c, Dv)
        den = a.sum(-1, keepdim=True) + carry * (fq @ z)  # (B, H, c, 1)
        outs.append(num / den)
        last = (G[..., -1:] - G).exp().unsqueeze(-1)  # (B, H, c, 1): exp(G_end - G_j)
        S = carry[..., -1:, :] * S + (fk * last).transpose(-2, -1) @ vc  # (B, H, F, Dv)
        z = carry[..., -1:, :] * z + (fk * last).sum(-2).unsqueeze(-1)  # (B, H, F, 1)
    return torch.cat(outs, dim=2) if outs else v.new_zeros(v.shape)  # (B, H, N, Dv)


# ---------------------------------------------------------------- RFA

@reference(graded_in=("a4",))
def rfa(q: Tensor, k: Tensor, v: Tensor, *, m: int, sigma: float = 1.0, seed: int = 0,
        causal: bool = False, gate: Tensor | None = None, chunk: int = 64) -> Tensor:
    """Random Feature Attention: linear attention with random Fourier features of q̂, k̂.

    W ``(m, D)`` ~ N(0, σ⁻²) from ``seed`` (a new seed redraws). ``gate`` ``(B, H, N)`` in (0, 1]
    (causal only) makes the prefix sums decay: the paper's gated RFA. As m grows the output
    tends to :func:`rfa_limit`. ``chunk`` is the block length of the causal scans.
    Shapes: ``(B, H, N, D)``, ``(B, H, M, D)``, ``(B, H, M, Dv)`` -> ``(B, H, N, Dv)``.
    Cost: time O((N + M)·m·(D + Dv)), memory O((N + M)·m + chunk² + m·Dv); never N×M.
    Paper: Peng et al. 2021, Random Feature Attention (arXiv:2103.02143).
    """
    phi_q, phi_k = _setup(q, k, v, m, sigma, seed, causal, gate)  # (B, H, N, 2m), (B, H, M, 2m)
    if gate is not None:
        return gated_scan(phi_q, phi_k, v, gate, chunk=chunk)
    return kernel_attention(phi_q, phi_k, v, causal=causal, chunk=chunk)


@reference(graded_in=("a4",))
def rfa_reference(q, k, v, *, m, sigma=1.0, seed=0, causal=False, gate=None, chunk=None):
    """Dense form of :func:`rfa` (same W): the N×M matrix A_ij = φ(q_i)·φ(k_j), times the weights
    (1 - g_j) Π_{t=j+1..i} g_t when gated (row i built from row i-1), then A V / A 1."""
    phi_q, phi_k = _setup(q, k, v, m, sigma, seed, causal, gate)
    if gate is None:
        return kernel_attention_reference(phi_q, phi_k, v, causal=causal)
    N = q.shape[-2]
    weights = q.new_zeros(*q.shape[:-1], N)  # (B, H, N, N)
    row = q.new_zeros(q.shape[:-1])  # (B, H, N): token j's weight in the current state
    for i in range(N):
        row = row * gate[..., i:i + 1]  # every earlier token decays by g_i
        row[..., i] = 1 - gate[..., i]  # token i enters with 1 - g_i
        weights[..., i, :] = row
    a = (phi_q @ phi_k.transpose(-2, -1)) * weights  # (B, H, N, N), zero above the diagonal
    return (a @ v) / a.sum(-1, keepdim=True)  # (B, H, N, Dv)


@reference(graded_in=("a4",))
def rfa_limit(q: Tensor, k: Tensor, v: Tensor, *, sigma: float = 1.0, causal: bool = False) -> Tensor:
    """The m -> ∞ limit of :func:`rfa` (no gate): softmax attention of q̂, k̂ at temperature σ².

        dense_attention(q̂, k̂, v, scale = 1/σ²)   (causal: j <= i)
    """
    q_hat = q / q.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(q.dtype).tiny)  # (B, H, N, D)
    k_hat = k / k.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(k.dtype).tiny)  # (B, H, M, D)
    mask = None
    if causal:
        mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
    return dense_attention(q_hat, k_hat, v, mask=mask, scale=1.0 / sigma**2)


# ---------------------------------------------------------------- learnable forms

class RFAGate(nn.Module):
    """The paper's learned gate: g_t = sigmoid(x_t · w_h + b_h) per head h, ``(B, N, dim) -> (B, H, N)``.

    Initialised with w = 0 and b = ``bias`` (g = sigmoid(2) ≈ 0.88: a memory of about 8 tokens),
    so training starts from a plain, slowly decaying recurrence.
    """

    def __init__(self, dim: int, heads: int, *, bias: float = 2.0):
        super().__init__()
        self.proj = nn.Linear(dim, heads)
        nn.init.zeros_(self.proj.weight)
        nn.init.constant_(self.proj.bias, bias)

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.proj(x)).transpose(-2, -1)  # (B, N, H) -> (B, H, N)


class RandomFeatureAttention(nn.Module):
    """RFA with a learned σ per head (W = W₀ / σ, W₀ ~ N(0, I) fixed) and an optional gate.

        attn = RandomFeatureAttention(D, heads=4, m=64, gated=True)
        out = attn(q, k, v, x=x)          # x (B, N, dim) feeds the gate; causal when gated
    """

    def __init__(self, dim_head: int, heads: int, *, m: int = 64, sigma: float = 1.0, seed: int = 0,
                 causal: bool = False, gated: bool = False, dim: int | None = None):
        super().__init__()
        if gated and not causal:
            raise ValueError("RandomFeatureAttention: the gate needs causal=True")
        self.causal = causal
        self.register_buffer("w0", rfa_weights(m, dim_head, 1.0, seed))  # (m, D)
        self.log_sigma = nn.Parameter(torch.full((heads, 1, 1), float(sigma)).log())  # (H, 1, 1)
        self.gate = RFAGate(dim if dim is not None else heads * dim_head, heads) if gated else None

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, x: Tensor | None = None) -> Tensor:
        w = self.w0 / self.log_sigma.exp()  # (H, m, D): one W per head
        phi_q = rfa_features(q, w.unsqueeze(0))  # (B, H, N, 2m)
        phi_k = rfa_features(k, w.unsqueeze(0))  # (B, H, M, 2m)
        if self.gate is None:
            return kernel_attention(phi_q, phi_k, v, causal=self.causal)
        if x is None:
            raise ValueError("RandomFeatureAttention(gated=True) needs x (B, N, dim) for the gate")
        return gated_scan(phi_q, phi_k, v, self.gate(x))


# ---------------------------------------------------------------- registry entry

def _register() -> None:
    from .registry import register

    register("rfa", rfa, family="kernel", reference=rfa_reference,
             cost="O(N·m·(D + Dv)) time, O(N·m + m·Dv) memory (causal: + chunk²)",
             paper="Peng et al. 2021, Random Feature Attention (arXiv:2103.02143)",
             example_kwargs={"m": 32, "seed": 0})


_register()
