"""Attention-free token mixing: FNet, gMLP and MLP-Mixer.

A Transformer block mixes information *across tokens* (attention) and *within a token* (the
feed-forward layer). These blocks keep the second and replace the first by something without
query–key products. For x (N, C), N tokens of width C:

FNet (Fourier mixing, no parameters): the real part of the 2-D discrete Fourier transform over
the sequence and the hidden dimension,

    fourier_mixing(X) = Re(F_N X F_C),   (F_n)[a, b] = exp(-2πi·a·b / n) = C_n - i S_n
                      = C_N X C_C - S_N X S_C        C_n[a, b] = cos(2π·a·b/n), S_n = sin(...)

and a block  x = LN(x + fourier_mixing(x));  x = LN(x + FF(x))  (post-norm, as BERT and the paper).

gMLP (spatial gating unit): after a channel projection to width 2e, split the channels into
halves u, v (N, e); normalise v over channels; mix v along the sequence with a learned (N, N)
matrix W and per-position bias b; gate u with it:

    s(Z) = u ⊙ (W LN(v) + b),        W ≈ 0 and b = 1 at initialisation, so s(Z) ≈ u

A causal gMLP uses W's lower triangle only (token i mixes v_j for j <= i). The block is
x + s(gelu(LN(x) U)) V, with U (C, 2e), V (e, C).

MLP-Mixer: a token-mixing MLP along the sequence, shared by every channel, then a channel-mixing
MLP along the channels, shared by every token, each with a residual:

    U = X + (W2 gelu(W1 LN(X) + b1) + b2)       W1 (Ds, N), W2 (N, Ds): one column per channel
    Y = U + gelu(LN(U) W3 + b3) W4 + b4         W3 (C, Dc), W4 (Dc, C)

(in row form, as the code has it: U = X + (gelu(LN(X)ᵀ W1ᵀ + b1) W2ᵀ + b2)ᵀ.)

Modules built for ``seq_len`` = L serve any N <= L with the first N rows and columns of their
(L, ...) weights (FNet serves any N). Every block maps x (B, N, C) -> (B, N, C), residual included.

Cost (time; memory):
    FNet       O(N·C·log(N·C)) mixing + O(N·C·Dff) feed-forward;  O(N·C)
    gMLP       O(N²·e + N·C·e);  O(N² + N·e)
    MLP-Mixer  O(N·Ds·C + N·C·Dc);  O(N·C + Ds·C + N·Dc)

Papers: Lee-Thorp et al. 2022, FNet: Mixing Tokens with Fourier Transforms (arXiv:2105.03824);
Liu et al. 2021, Pay Attention to MLPs (arXiv:2105.08050); Tolstikhin et al. 2021, MLP-Mixer:
An all-MLP Architecture for Vision (arXiv:2105.01601).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .graded import reference

__all__ = ["fourier_mixing", "fourier_mixing_reference", "dft_matrices", "FNetBlock",
           "spatial_gating", "gMLPBlock", "token_mixing", "MixerBlock"]


def _check_tokens(x: Tensor, who: str) -> None:
    if x.dim() < 2:
        raise ValueError(f"{who}: x must be (..., N, C) with N tokens of width C, got {tuple(x.shape)}")


# ---------------------------------------------------------------- FNet

@reference(graded_in=("a4",))
def fourier_mixing(x: Tensor) -> Tensor:
    """FNet's mixing: Re(FFT2(x)) over the last two dims (tokens N, channels C); no parameters.

    Shapes: ``(..., N, C)`` -> ``(..., N, C)``, real.  Cost: time O(N·C·log(N·C)), memory O(N·C).
    """
    _check_tokens(x, "fourier_mixing")
    return torch.fft.fft2(x, dim=(-2, -1)).real  # (..., N, C) complex -> (..., N, C) real


def dft_matrices(n: int, *, dtype=torch.float64, device=None) -> tuple[Tensor, Tensor]:
    """``(C_n, S_n)``, each ``(n, n)``: cos and sin of 2π·a·b/n, so the DFT matrix is C_n - i S_n.

    The angle uses (a·b mod n), exact in integers, then float64: accurate for any n.
    """
    idx = torch.arange(n, dtype=torch.int64)  # (n,)
    angle = ((idx[:, None] * idx[None, :]) % n).to(torch.float64) * (2 * math.pi / n)  # (n, n)
    return angle.cos().to(dtype=dtype, device=device), angle.sin().to(dtype=dtype, device=device)


@reference(graded_in=("a4",))
def fourier_mixing_reference(x: Tensor) -> Tensor:
    """Dense form of :func:`fourier_mixing` with explicit DFT matrices: C_N X C_C - S_N X S_C.

    Cost: time O(N²·C + N·C²), memory O(N² + C²).
    """
    _check_tokens(x, "fourier_mixing_reference")
    N, C = x.shape[-2:]
    CN, SN = dft_matrices(N, dtype=x.dtype, device=x.device)  # (N, N), (N, N)
    CC, SC = dft_matrices(C, dtype=x.dtype, device=x.device)  # (C, C), (C, C)
    return CN @ x @ CC - SN @ x @ SC  # (N, N) @ (..., N, C) @ (C, C) -> (..., N, C)


def _feed_forward(dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class FNetBlock(nn.Module):
    """FNet encoder block: x = LN(x + Re(FFT2(x))); x = LN(x + FF(x)). The mixing has no parameters.

    Args:
        dim: width C of the tokens.
        seq_len: accepted for the registry's common constructor; FNet serves any N.
        hidden: width of the feed-forward layer (default 4·C).
    """

    def __init__(self, dim: int, seq_len: int | None = None, *, hidden: int | None = None):
        super().__init__()
        self.dim = dim
        self.norm_mix = nn.LayerNorm(dim)
        self.ff = _feed_forward(dim, hidden or 4 * dim)
        self.norm_ff = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        """``x (B, N, C)`` -> ``(B, N, C)``."""
        x = self.norm_mix(x + fourier_mixing(x))  # (B, N, C)
        return self.norm_ff(x + self.ff(x))  # (B, N, C)


# ---------------------------------------------------------------- gMLP

def spatial_gating(x: Tensor, weight: Tensor, bias: Tensor, *, causal: bool = False,
                   norm_weight: Tensor | None = None, norm_bias: Tensor | None = None,
                   eps: float = 1e-5) -> Tensor:
    """gMLP's spatial gating unit: u ⊙ (W LN(v) + b), with u, v the two halves of x's channels.

    Args:
        x: ``(..., N, 2e)``; u is the first e channels, v the last e.
        weight: W ``(N, N)``, mixes v along the sequence (only its lower triangle if ``causal``).
        bias: b ``(N,)``, one per position.
        norm_weight, norm_bias: the affine part of the layer norm over v's e channels (none: plain).

    Returns: ``(..., N, e)``.  Cost: time O(N²·e), memory O(N² + N·e).
    """
    _check_tokens(x, "spatial_gating")
    N, two_e = x.shape[-2:]
    if two_e % 2:
        raise ValueError(f"spatial_gating: x needs an even number of channels to split into u, v; "
                         f"got x {tuple(x.shape)}")
    if weight.shape != (N, N) or bias.shape != (N,):
        raise ValueError(f"spatial_gating: expected weight (N, N) and bias (N,) with N = {N} tokens, "
                         f"got weight {tuple(weight.shape)} and bias {tuple(bias.shape)}")
    u, v = x.chunk(2, dim=-1)  # (..., N, e), (..., N, e)
    v = F.layer_norm(v, v.shape[-1:], norm_weight, norm_bias, eps)  # (..., N, e), over channels
    if causal:
        weight = weight.tril()  # (N, N), W[i, j] = 0 for j > i
    v = weight @ v + bias[:, None]  # (N, N) @ (..., N, e) + (N, 1) -> (..., N, e)
    return u * v  # (..., N, e)


class gMLPBlock(nn.Module):  # noqa: N801  (the paper's name)
    """gMLP block: x + V s(gelu(LN(x) U)), s the spatial gating unit.

    Args:
        dim: width C of the tokens.
        seq_len: the longest sequence L served (W is (L, L)).
        hidden: width 2e of the gated projection (default 6·C, as in the paper); must be even.
        causal: token i only sees tokens j <= i.
        init_eps: W is drawn uniform in (-ε, ε) with ε = init_eps / L; b starts at 1.
    """

    def __init__(self, dim: int, seq_len: int, *, hidden: int | None = None, causal: bool = False,
                 init_eps: float = 1e-3):
        super().__init__()
        hidden = hidden or 6 * dim
        if hidden % 2:
            raise ValueError(f"gMLPBlock: hidden={hidden} must be even (it is split into u and v)")
        self.dim, self.seq_len, self.causal = dim, seq_len, causal
        self.norm = nn.LayerNorm(dim)
        self.proj_in = nn.Linear(dim, hidden)  # U
        self.gate_norm = nn.LayerNorm(hidden // 2)
        eps = init_eps / seq_len
        self.gate_weight = nn.Parameter(torch.empty(seq_len, seq_len).uniform_(-eps, eps))  # W (L, L)
        self.gate_bias = nn.Parameter(torch.ones(seq_len))  # b (L,)
        self.proj_out = nn.Linear(hidden // 2, dim)  # V

    def gate(self, z: Tensor) -> Tensor:
        """The spatial gating unit with this block's W, b (their first N rows and columns).

        ``z (B, N, 2e)`` -> ``(B, N, e)``.
        """
        N = z.shape[-2]
        if N > self.seq_len:
            raise ValueError(f"gMLPBlock was built for at most seq_len={self.seq_len} tokens, got N={N}")
        return spatial_gating(z, self.gate_weight[:N, :N], self.gate_bias[:N], causal=self.causal,
                              norm_weight=self.gate_norm.weight, norm_bias=self.gate_norm.bias,
                              eps=self.gate_norm.eps)

    def forward(self, x: Tensor) -> Tensor:
        """``x (B, N, C)`` -> ``(B, N, C)``."""
        z = F.gelu(self.proj_in(self.norm(x)))  # (B, N, 2e)
        return x + self.proj_out(self.gate(z))  # (B, N, e) -> (B, N, C)


# ---------------------------------------------------------------- MLP-Mixer

def token_mixing(x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, *,
                 norm_weight: Tensor | None = None, norm_bias: Tensor | None = None,
                 eps: float = 1e-5) -> Tensor:
    """MLP-Mixer's token-mixing MLP with its residual: x + (W2 gelu(W1 LN(x) + b1) + b2), per channel.

    Args:
        x: ``(..., N, C)``.
        w1, b1: ``(Ds, N)``, ``(Ds,)`` (``nn.Linear(N, Ds)``'s weight and bias).
        w2, b2: ``(N, Ds)``, ``(N,)`` (``nn.Linear(Ds, N)``'s).
        norm_weight, norm_bias: the affine part of the layer norm over the C channels.

    Returns: ``(..., N, C)``.  Cost: time O(N·Ds·C), memory O(N·C + Ds·C).
    """
    _check_tokens(x, "token_mixing")
    N = x.shape[-2]
    if w1.shape[-1] != N or w2.shape[0] != N:
        raise ValueError(f"token_mixing: expected w1 (Ds, N) and w2 (N, Ds) with N = {N} tokens, "
                         f"got w1 {tuple(w1.shape)} and w2 {tuple(w2.shape)}")
    y = F.layer_norm(x, x.shape[-1:], norm_weight, norm_bias, eps).transpose(-2, -1)  # (..., C, N)
    h = F.gelu(F.linear(y, w1, b1))  # (..., C, N) @ (N, Ds) -> (..., C, Ds)
    return x + F.linear(h, w2, b2).transpose(-2, -1)  # (..., C, Ds) @ (Ds, N) -> (..., C, N) -> (..., N, C)


class MixerBlock(nn.Module):
    """MLP-Mixer block: token mixing (along the sequence), then channel mixing, each with a residual.

    Args:
        dim: width C of the tokens.
        seq_len: the longest sequence L served (W1 is (Ds, L), W2 (L, Ds)).
        token_hidden: Ds (default C / 2, the paper's ratio).
        channel_hidden: Dc (default 4·C).
    """

    def __init__(self, dim: int, seq_len: int, *, token_hidden: int | None = None,
                 channel_hidden: int | None = None):
        super().__init__()
        self.dim, self.seq_len = dim, seq_len
        token_hidden = token_hidden or max(1, dim // 2)
        self.token_norm = nn.LayerNorm(dim)
        self.token_fc1 = nn.Linear(seq_len, token_hidden)  # W1 (Ds, L), b1 (Ds,)
        self.token_fc2 = nn.Linear(token_hidden, seq_len)  # W2 (L, Ds), b2 (L,)
        self.channel_norm = nn.LayerNorm(dim)
        self.channel_mlp = _feed_forward(dim, channel_hidden or 4 * dim)  # W3, W4

    def forward(self, x: Tensor) -> Tensor:
        """``x (B, N, C)`` -> ``(B, N, C)``."""
        N = x.shape[-2]
        if N > self.seq_len:
            raise ValueError(f"MixerBlock was built for at most seq_len={self.seq_len} tokens, got N={N}")
        u = token_mixing(x, self.token_fc1.weight[:, :N], self.token_fc1.bias,
                         self.token_fc2.weight[:N], self.token_fc2.bias[:N],
                         norm_weight=self.token_norm.weight, norm_bias=self.token_norm.bias,
                         eps=self.token_norm.eps)  # (B, N, C)
        return u + self.channel_mlp(self.channel_norm(u))  # (B, N, C)


# ---------------------------------------------------------------- registry entries

def _register() -> None:
    from .registry import register_mixer

    register_mixer("fnet", FNetBlock, family="attention-free",
                   cost="O(N·C·log(N·C)) time, O(N·C) memory for the mixing (no parameters)",
                   paper="Lee-Thorp et al. 2022, FNet: Mixing Tokens with Fourier Transforms "
                         "(arXiv:2105.03824)",
                   example_kwargs={"dim": 16, "seq_len": 32}, block=True)
    register_mixer("gmlp", gMLPBlock, family="attention-free",
                   cost="O(N²·e + N·C·e) time, O(N² + N·e) memory",
                   paper="Liu et al. 2021, Pay Attention to MLPs (arXiv:2105.08050)",
                   example_kwargs={"dim": 16, "seq_len": 32, "hidden": 32}, block=True)
    register_mixer("mixer", MixerBlock, family="attention-free",
                   cost="O(N·Ds·C + N·C·Dc) time, O(N·C + Ds·C + N·Dc) memory",
                   paper="Tolstikhin et al. 2021, MLP-Mixer: An all-MLP Architecture for Vision "
                         "(arXiv:2105.01601)",
                   example_kwargs={"dim": 16, "seq_len": 32, "token_hidden": 16}, block=True)


_register()
