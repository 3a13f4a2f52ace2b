"""Low-rank attention: shorten the keys and values along the length before attending.

Linformer projects the M keys and values to k rows with (k, M) matrices E and F:

    out = softmax( Q (E K)ᵀ / sqrt(D) ) (F V)          E K: (k, D),  F V: (k, Dv)

so the score matrix is N×k instead of N×M. Since Q (E K)ᵀ = (Q Kᵀ) Eᵀ, this is the N×M score
matrix projected to k columns, which is what the reference computes. E and F are random
Gaussian (entries N(0, 1/k), drawn from ``seed``) unless given; learned in the module form.
With k = M and E = F = I it is dense attention.

Compressed attention (memory-compressed attention) averages each run of ``stride`` keys and
values (the last run may be shorter): a Linformer whose E = F is the (⌈M/s⌉, M) pooling matrix.
In the module form a strided convolution, initialised to the average, learns the pooling.

Cost: time O(N·k·D + k·M·D), memory O(N·k) (compressed: k = ⌈M/s⌉).

Sources: Wang et al. (2020), Linformer: Self-Attention with Linear Complexity (arXiv:2006.04768);
Liu et al. (2018), Generating Wikipedia by Summarizing Long Sequences (arXiv:1801.10198),
section 4.2.2 (memory-compressed attention).
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .graded import reference
from .dense import default_scale, dense_attention, softmax

__all__ = ["random_projection", "clear_cache", "pooling_matrix", "linformer", "linformer_reference", "compressed",
           "compressed_reference", "LinformerProjection", "CompressedKV"]


def random_projection(proj_len: int, M: int, seed: int = 0, *, share_kv: bool = False,
                      dtype=torch.float32, device=None) -> tuple[Tensor, Tensor]:
    """Linformer's E, F: two ``(k, M)`` Gaussian matrices, entries N(0, 1/k) (F is E if ``share_kv``).

    Drawn in float64 on the CPU from ``torch.Generator().manual_seed(seed)``, then cast.
    """
    if proj_len < 1:
        raise ValueError(f"linformer: the projected length proj_len (k) must be >= 1, got {proj_len}")
    g = torch.Generator().manual_seed(seed)
    E = torch.randn(proj_len, M, generator=g, dtype=torch.float64) / math.sqrt(proj_len)  # (k, M)
    Fm = E if share_kv else torch.randn(proj_len, M, generator=g, dtype=torch.float64) / math.sqrt(proj_len)
    return E.to(dtype=dtype, device=device), Fm.to(dtype=dtype, device=device)


def pooling_matrix(M: int, stride: int, *, dtype=torch.float32, device=None) -> Tensor:
    """``(⌈M/s⌉, M)``: row r averages positions [r·s, min(r·s + s, M))."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    rows = torch.arange(M, device=device) // stride  # (M,) which run each position belongs to
    P = F.one_hot(rows, math.ceil(M / stride)).T.to(dtype)  # (⌈M/s⌉, M)
    return P / P.sum(-1, keepdim=True)


@functools.lru_cache(maxsize=4)
def _drawn_projections(proj_len: int, M: int, seed: int, share_kv: bool, dtype, device) -> tuple[Tensor, Tensor]:
    """:func:`random_projection`, drawn once per (k, M, seed, share_kv, dtype, device) and reused.

    A draw is 2·k·M float64 normals on the CPU: 38 ms at k=256, M=4096 on the course machine,
    where the whole Linformer call then took 62 ms with a draw every call and 19 ms without.
    On a GPU it would also be a copy of 2·k·M values every call. A model holds its E and F;
    so does this cache (at most 4 pairs; :func:`clear_cache` frees them). They are only read.
    """
    return random_projection(proj_len, M, seed, share_kv=share_kv, dtype=dtype, device=device)


def clear_cache() -> None:
    """Forget the cached random projections (at N=65536, k=256 a pair is 128 MiB in float32)."""
    _drawn_projections.cache_clear()


def _attend_short(q: Tensor, k: Tensor, v: Tensor, scale: float | None) -> Tensor:
    """Softmax attention over the short (projected or pooled) keys: ``(B, H, N, D)``, ``(B, H, k, D)``.

    ``scaled_dot_product_attention``, a fused kernel on both devices (FlashAttention on CUDA, its
    CPU port on the CPU): the N×k scores are never written out whole. ``dense_attention`` on
    the CPU, with its six passes over the scores (scale, max, subtract, exp, sum, divide, each
    a new N×k tensor), took 2.2× the time at N=8192, k=256 on the course machine and held
    97 MiB against 9 (docs/benchmarks.md, "What the audit changed").
    """
    return F.scaled_dot_product_attention(q, k, v, scale=scale)  # (B, H, N, k) scores -> (B, H, N, Dv)


def _projections(k: Tensor, proj_len, seed, E, F_, share_kv):
    if E is None:
        if proj_len is None:
            raise ValueError("linformer: give proj_len (the projected length k) or explicit E (k, M)")
        return _drawn_projections(proj_len, k.shape[-2], seed, bool(share_kv), k.dtype, k.device)
    if F_ is None:
        if not share_kv:
            raise ValueError("linformer: E was given without F; give F too, or share_kv=True (F = E)")
        F_ = E
    for name, P in (("E", E), ("F", F_)):
        if P.shape[-1] != k.shape[-2]:
            raise ValueError(f"linformer: {name} must be (k, M) with M = {k.shape[-2]} keys, "
                             f"got {tuple(P.shape)}")
    return E.to(k.dtype), F_.to(k.dtype)


@reference(graded_in=("a3",))
def linformer(q: Tensor, k: Tensor, v: Tensor, *, proj_len: int | None = None, seed: int = 0,
              E: Tensor | None = None, F: Tensor | None = None, share_kv: bool = False,
              scale: float | None = None) -> Tensor:
    """Linformer: softmax(Q (E K)ᵀ · scale) (F V), keys and values projected to k = proj_len rows.

    (``proj_len`` is the paper's k; the name k is taken by the keys.) E, F ``(k, M)`` (or
    ``(H, k, M)``) default to :func:`random_projection` ``(proj_len, M, seed)``.
    Shapes: ``(B, H, N, D)``, ``(B, H, M, D)``, ``(B, H, M, Dv)`` -> ``(B, H, N, Dv)``.
    Cost: time O(k·M·(D + Dv) + N·k·(D + Dv)), memory O(N·k).
    Paper: Wang et al. 2020, Linformer: Self-Attention with Linear Complexity (arXiv:2006.04768).
    """
    E, F_ = _projections(k, proj_len, seed, E, F, share_kv)
    k_proj = E @ k  # (k, M) @ (B, H, M, D) -> (B, H, k, D)
    v_proj = F_ @ v  # (k, M) @ (B, H, M, Dv) -> (B, H, k, Dv)
    return _attend_short(q, k_proj, v_proj, scale)  # (B, H, N, k) scores -> (B, H, N, Dv)


@reference(graded_in=("a3",))
def linformer_reference(q, k, v, *, proj_len=None, seed=0, E=None, F=None, share_kv=False,
                        scale=None):
    """Dense form of :func:`linformer`: the N×M scores Q Kᵀ, projected to k columns by Eᵀ."""
    E, F_ = _projections(k, proj_len, seed, E, F, share_kv)
    scale = default_scale(q, scale)
    scores = (q @ k.transpose(-2, -1)) @ E.transpose(-2, -1)  # (B, H, N, M) @ (M, k) -> (B, H, N, k)
    return softmax(scores * scale) @ (F_ @ v)  # (B, H, N, k) @ (B, H, k, Dv) -> (B, H, N, Dv)


def _pool(x: Tensor, stride: int) -> Tensor:
    """Mean of each run of ``stride`` rows along dim -2 (the last run may be shorter)."""
    *lead, M, D = x.shape
    runs = math.ceil(M / stride)
    padded = F.pad(x, (0, 0, 0, runs * stride - M))  # (..., runs·s, D), zeros at the end
    sums = padded.view(*lead, runs, stride, D).sum(-2)  # (..., runs, s, D) -> (..., runs, D)
    counts = torch.full((runs, 1), float(stride), dtype=x.dtype, device=x.device)  # (runs, 1)
    counts[-1] = M - (runs - 1) * stride
    return sums / counts


def compressed(q: Tensor, k: Tensor, v: Tensor, *, stride: int, scale: float | None = None) -> Tensor:
    """Memory-compressed attention: attend to the means of each run of s keys and values.

    Shapes: ``(B, H, N, D)``, ``(B, H, M, D)``, ``(B, H, M, Dv)`` -> ``(B, H, N, Dv)``.
    Cost: time O(N·(M/s)·D + M·D), memory O(N·M/s).
    Paper: Liu et al. 2018, Generating Wikipedia by Summarizing Long Sequences, section 4.2.2.
    """
    if stride < 1:
        raise ValueError(f"compressed: stride must be >= 1, got {stride}")
    k_pool, v_pool = _pool(k, stride), _pool(v, stride)  # (B, H, ⌈M/s⌉, D), (B, H, ⌈M/s⌉, Dv)
    return _attend_short(q, k_pool, v_pool, scale)


def compressed_reference(q, k, v, *, stride, scale=None):
    """Dense form of :func:`compressed`: the Linformer reference with E = F = the pooling matrix."""
    P = pooling_matrix(k.shape[-2], stride, dtype=k.dtype, device=k.device)  # (⌈M/s⌉, M)
    return linformer_reference(q, k, v, E=P, F=P, scale=scale)


# ---------------------------------------------------------------- learnable forms

class LinformerProjection(nn.Module):
    """Linformer attention with learned E, F ``(k, max_len)`` (the first M columns serve M keys).

    Initialised as :func:`random_projection` ``(proj_len, max_len, seed)``; ``share_kv`` ties F to E.
    """

    def __init__(self, max_len: int, proj_len: int, *, share_kv: bool = False, seed: int = 0):
        super().__init__()
        E, F_ = random_projection(proj_len, max_len, seed, share_kv=share_kv)
        self.share_kv = share_kv
        self.E = nn.Parameter(E)  # (k, max_len)
        self.F = None if share_kv else nn.Parameter(F_)  # (k, max_len)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        M = k.shape[-2]
        if M > self.E.shape[-1]:
            raise ValueError(f"LinformerProjection was built for at most {self.E.shape[-1]} keys, got {M}")
        E = self.E[:, :M]
        F_ = E if self.F is None else self.F[:, :M]
        return linformer(q, k, v, E=E, F=F_)


class CompressedKV(nn.Module):
    """Compressed attention whose pooling is a learned strided Conv1d (kernel = stride = s).

    Initialised to the average of each run, so it equals :func:`compressed` when s divides M
    (a shorter last run is zero-padded to s).
    """

    def __init__(self, dim: int, stride: int, dim_v: int | None = None):
        super().__init__()
        self.stride = stride
        self.conv_k = nn.Conv1d(dim, dim, stride, stride=stride, bias=False)
        self.conv_v = nn.Conv1d(dim_v or dim, dim_v or dim, stride, stride=stride, bias=False)
        with torch.no_grad():
            for conv in (self.conv_k, self.conv_v):
                c = conv.in_channels  # weight (C, C, s): channel i averages its own run
                conv.weight.copy_(torch.eye(c).unsqueeze(-1).expand(c, c, stride) / stride)

    def _shorten(self, x: Tensor, conv: nn.Conv1d) -> Tensor:
        B, H, M, D = x.shape
        x = F.pad(x, (0, 0, 0, -M % self.stride))  # (B, H, ⌈M/s⌉·s, D)
        y = conv(x.flatten(0, 1).transpose(1, 2))  # (B·H, D, ⌈M/s⌉·s) -> (B·H, D, ⌈M/s⌉)
        return y.transpose(1, 2).reshape(B, H, -1, D)  # (B, H, ⌈M/s⌉, D)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return dense_attention(q, self._shorten(k, self.conv_k), self._shorten(v, self.conv_v))


# ---------------------------------------------------------------- registry entries

def _register() -> None:
    from .registry import register

    register("linformer", linformer, family="low rank", reference=linformer_reference,
             cost="O(N·k·D) time, O(N·k) memory",
             paper="Wang et al. 2020, Linformer: Self-Attention with Linear Complexity "
                   "(arXiv:2006.04768)",
             example_kwargs={"proj_len": 16, "seed": 0})
    register("compressed", compressed, family="low rank", reference=compressed_reference,
             cost="O(N·(M/s)·D) time, O(N·M/s) memory",
             paper="Liu et al. 2018, Generating Wikipedia by Summarizing Long Sequences "
                   "(arXiv:1801.10198)",
             example_kwargs={"stride": 4})


_register()
