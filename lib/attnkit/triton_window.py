"""Attention written in Triton: a row softmax, FlashAttention's forward pass, and the sliding
window that visits only the tiles of its band.

One kernel, :func:`_flash_forward`, does all three attention shapes. A program owns one block of
``BLOCK_M`` queries of one (batch, head) and walks over blocks of ``BLOCK_N`` keys, keeping the
*online softmax* state of each query row (Milakov & Gimelshein 2018; Dao et al. 2022):

    s   = q Kᵀ · scale                          (BLOCK_M, BLOCK_N) scores of this tile
    m'  = max(m, rowmax(s))                     running maximum
    α   = exp(m - m')                           rescales what was summed under the old maximum
    p   = exp(s - m')
    l'  = α·l + rowsum(p)                       running denominator
    acc = α·acc + p V                           running numerator          (BLOCK_M, Dv)

and writes ``out = acc / l`` and ``lse = m + log l`` at the end: no N×M tensor ever exists. Which
key tiles a query block visits is the whole difference between the variants:

    dense            all tiles 0 .. M
    causal           tiles up to the diagonal:           keys [0, m0 + BLOCK_M)
    window w         tiles meeting the band:             keys [m0 - w, m0 + BLOCK_M + w)
                     (causal window: [m0 - w, m0 + BLOCK_M))

so a window costs O(N·(BLOCK_M + 2w)·D) instead of O(N²·D). A tile that lies wholly inside the
allowed region is *full* and skips the mask; the others are *partial* (see
:func:`attnkit.masks.tile_grid`). Each program counts the tiles it visited into ``tiles``: a
deterministic check of the work, the same on a laptop and on a GPU (:func:`tile_counts` is
the fewest possible).

Without a GPU, :func:`attnkit.notebook.triton_device` (called on import) sets
``TRITON_INTERPRET=1`` and the same kernels run on CPU tensors under Triton's interpreter: exact
and slow, for tests and for students at small sizes.

Sources: Dao et al. (2022), FlashAttention (arXiv:2205.14135); Tillet et al. (2019), Triton;
the Triton tutorial "Fused Attention" for the pointer layout.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .dense import default_scale
from .graded import reference
from .notebook import triton_device

DEVICE = triton_device()  # before the kernels are decorated: "cpu" means the interpreter

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

__all__ = ["DEVICE", "interpreting", "softmax", "FlashResult", "flash_attention", "window_attention",
           "tile_counts", "GPU_BLOCKS", "INTERPRETER_BLOCKS"]

GPU_BLOCKS = (128, 64)
"""(BLOCK_M, BLOCK_N) on a GPU when the caller names none: the Triton tutorial's choice for D=64."""
INTERPRETER_BLOCKS = (16, 16)
"""(BLOCK_M, BLOCK_N) under the interpreter: small tiles keep the CPU run short."""


def interpreting() -> bool:
    """The kernels run under Triton's interpreter (no GPU, or ``TRITON_INTERPRET=1``)."""
    return DEVICE == "cpu"


# ---------------------------------------------------------------- row softmax

@triton.jit
def _softmax_kernel(x_ptr, out_ptr, n_cols, x_row_stride, out_row_stride, BLOCK: tl.constexpr):
    """One program per row: load it whole (padding reads -inf), subtract its max, exponentiate, divide."""
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    inside = cols < n_cols
    x = tl.load(x_ptr + row * x_row_stride + cols, mask=inside, other=float("-inf")).to(tl.float32)
    e = tl.exp(x - tl.max(x, axis=0))  # the max keeps exp() <= 1: no overflow
    out = e / tl.sum(e, axis=0)
    tl.store(out_ptr + row * out_row_stride + cols, out.to(out_ptr.dtype.element_ty), mask=inside)


@reference(graded_in=("a6",))
def softmax(x: Tensor) -> Tensor:
    """Softmax over the last dimension of ``x`` (any leading shape) with one Triton program per row.

    A row must fit in one block (``BLOCK = next_power_of_2(n_cols)``), the usual limit of a fused
    softmax; rows of a few thousand entries are fine on a GPU.
    """
    if x.shape[-1] == 0 or x.numel() == 0:
        return torch.empty_like(x)
    rows = x.reshape(-1, x.shape[-1]).contiguous()  # (R, C)
    out = torch.empty_like(rows)
    _softmax_kernel[(rows.shape[0],)](rows, out, rows.shape[1], rows.stride(0), out.stride(0),
                                      BLOCK=triton.next_power_of_2(rows.shape[1]))
    return out.view_as(x)


# ---------------------------------------------------------------- FlashAttention forward

@triton.jit
def _flash_forward(Q, K, V, O, LSE, TILES,
                   sq_b, sq_h, sq_n, sq_d, sk_b, sk_h, sk_n, sk_d, sv_b, sv_h, sv_n, sv_d,
                   so_b, so_h, so_n, so_d,
                   H, N, M, D, DV, NQ, scale, window,
                   CAUSAL: tl.constexpr, WINDOW: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                   BLOCK_DV: tl.constexpr):
    pid_m = tl.program_id(0)  # which block of queries
    pid_bh = tl.program_id(1)  # which (batch, head)
    b = pid_bh // H
    h = pid_bh % H
    m0 = pid_m * BLOCK_M
    rows = m0 + tl.arange(0, BLOCK_M)  # (BLOCK_M,) query positions
    dims = tl.arange(0, BLOCK_D)
    vdims = tl.arange(0, BLOCK_DV)

    q = tl.load(Q + b * sq_b + h * sq_h + rows[:, None] * sq_n + dims[None, :] * sq_d,
                mask=(rows[:, None] < N) & (dims[None, :] < D), other=0.0)  # (BLOCK_M, BLOCK_D)

    # The keys this query block can see: [lo, hi), lo rounded down to a tile boundary.
    lo = m0 * 0
    hi = m0 * 0 + M
    if WINDOW:
        lo = tl.maximum(m0 - window, 0)
        hi = tl.minimum(m0 + BLOCK_M + window, M)
    if CAUSAL:
        hi = tl.minimum(hi, m0 + BLOCK_M)
    lo = (lo // BLOCK_N) * BLOCK_N

    m_i = tl.zeros([BLOCK_M], dtype=tl.float32) - 1.0e30  # running max (finite: no inf - inf)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)  # running sum of exp(s - m_i)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], dtype=tl.float32)  # running sum of exp(s - m_i) v
    visited = tl.sum(tl.zeros([BLOCK_M], dtype=tl.int32), axis=0)  # tiles seen (a 0-d counter)

    for start in range(lo, hi, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)  # (BLOCK_N,) key positions
        k = tl.load(K + b * sk_b + h * sk_h + cols[None, :] * sk_n + dims[:, None] * sk_d,
                    mask=(cols[None, :] < M) & (dims[:, None] < D), other=0.0)  # (BLOCK_D, BLOCK_N) = Kᵀ
        s = tl.dot(q, k) * scale  # (BLOCK_M, BLOCK_N)

        # A full tile needs no mask: every (row, col) in it is allowed and in range.
        partial = start + BLOCK_N > M
        if CAUSAL:
            partial = partial | (start + BLOCK_N - 1 > m0)
        if WINDOW:
            partial = partial | (start < m0 + BLOCK_M - 1 - window) | (start + BLOCK_N - 1 > m0 + window)
        if partial:
            keep = cols[None, :] < M
            if CAUSAL:
                keep = keep & (cols[None, :] <= rows[:, None])
            if WINDOW:
                keep = keep & (tl.abs(rows[:, None] - cols[None, :]) <= window)
            s = tl.where(keep, s, float("-inf"))

        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp(m_i - m_new)  # (BLOCK_M,) rescale the old state to the new max
        p = tl.exp(s - m_new[:, None])  # (BLOCK_M, BLOCK_N); masked entries give 0
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(V + b * sv_b + h * sv_h + cols[:, None] * sv_n + vdims[None, :] * sv_d,
                    mask=(cols[:, None] < M) & (vdims[None, :] < DV), other=0.0)  # (BLOCK_N, BLOCK_DV)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
        visited += 1

    l_i = tl.where(l_i > 0, l_i, 1.0)  # rows past N (padding) saw no key: keep 0/0 out of them
    out = acc / l_i[:, None]
    tl.store(O + b * so_b + h * so_h + rows[:, None] * so_n + vdims[None, :] * so_d,
             out.to(O.dtype.element_ty), mask=(rows[:, None] < N) & (vdims[None, :] < DV))
    tl.store(LSE + pid_bh * N + rows, m_i + tl.log(l_i), mask=rows < N)
    tl.store(TILES + pid_bh * NQ + pid_m, visited)


class FlashResult(NamedTuple):
    """What :func:`flash_attention` returns."""

    out: Tensor  # (B, H, N, Dv) in q's dtype
    lse: Tensor  # (B, H, N) float32, natural-log log-sum-exp of each query's scaled scores
    tiles: Tensor  # (B, H, ceil(N / block_m)) int32, key tiles each query block visited


def _blocks(block_m: int | None, block_n: int | None) -> tuple[int, int]:
    default_m, default_n = INTERPRETER_BLOCKS if interpreting() else GPU_BLOCKS
    block_m, block_n = block_m or default_m, block_n or default_n
    for name, size in (("block_m", block_m), ("block_n", block_n)):
        if size < 16 or size & (size - 1):
            raise ValueError(f"{name} must be a power of two >= 16 (tl.dot's smallest tile), got {size}")
    return block_m, block_n


def _check_inputs(q: Tensor, k: Tensor, v: Tensor, window: int | None, causal: bool) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"q, k, v must be (B, H, N, D); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[:2] != k.shape[:2] or k.shape[:3] != v.shape[:3] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"shapes do not match: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if (window is not None or causal) and q.shape[-2] != k.shape[-2]:
        raise ValueError(f"a window or causal mask needs as many keys as queries, got N={q.shape[-2]}, "
                         f"M={k.shape[-2]}")
    if window is not None and window < 0:
        raise ValueError(f"window must be >= 0, got {window}")
    where = {x.device.type for x in (q, k, v)}
    wanted = "cpu" if interpreting() else "cuda"
    if where != {wanted}:
        raise ValueError(f"the Triton kernels run on {wanted} tensors here "
                         f"({'interpreter, no GPU' if interpreting() else 'GPU'}), got {sorted(where)}")


@reference(graded_in=("a6",))
def flash_attention(q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, window: int | None = None,
                    scale: float | None = None, block_m: int | None = None,
                    block_n: int | None = None) -> FlashResult:
    """FlashAttention's forward pass: dense, causal, or a window ``|i - j| <= window``.

    Shapes: q ``(B, H, N, D)``, k ``(B, H, M, D)``, v ``(B, H, M, Dv)`` -> :class:`FlashResult`.
    Cost: O(T·BLOCK_M·BLOCK_N·D) for the T tiles visited (``tiles.sum()``); memory O(N·Dv).
    """
    _check_inputs(q, k, v, window, causal)
    block_m, block_n = _blocks(block_m, block_n)
    B, H, N, D = q.shape
    M, Dv = k.shape[-2], v.shape[-1]
    nq = triton.cdiv(N, block_m)
    out = torch.empty(B, H, N, Dv, dtype=q.dtype, device=q.device)
    lse = torch.empty(B, H, N, dtype=torch.float32, device=q.device)
    tiles = torch.zeros(B, H, nq, dtype=torch.int32, device=q.device)
    if N == 0 or B * H == 0:
        return FlashResult(out, lse, tiles)
    if M == 0:
        raise ValueError("attention needs at least one key")
    _flash_forward[(nq, B * H)](
        q, k, v, out, lse, tiles, *q.stride(), *k.stride(), *v.stride(), *out.stride(),
        H, N, M, D, Dv, nq, default_scale(q, scale), 0 if window is None else window,
        CAUSAL=causal, WINDOW=window is not None, BLOCK_M=block_m, BLOCK_N=block_n,
        BLOCK_D=max(16, triton.next_power_of_2(D)), BLOCK_DV=max(16, triton.next_power_of_2(Dv)))
    return FlashResult(out, lse, tiles)


@reference(graded_in=("a6",))
def window_attention(q: Tensor, k: Tensor, v: Tensor, *, window: int, causal: bool = False,
                     scale: float | None = None) -> Tensor:
    """Sliding-window attention ``|i - j| <= window`` (and ``j <= i`` if ``causal``), Triton forward.

    The same function as :func:`attnkit.fixed.local`; forward only (no autograd).
    """
    return flash_attention(q, k, v, causal=causal, window=window, scale=scale).out


def tile_counts(N: int, M: int | None = None, *, block_m: int, block_n: int, window: int | None = None,
                causal: bool = False) -> Tensor:
    """The fewest key tiles each query block must visit: ``(ceil(N / block_m),)`` long.

    Query block a covers rows [m0, m1) with m0 = a·block_m, m1 = min(m0 + block_m, N); it needs
    keys [lo, hi) with

        dense   lo = 0,                 hi = M
        causal  lo = 0,                 hi = m1
        window  lo = max(m0 - w, 0),    hi = min(m1 + w, M)     (causal window: hi = m1)

    and every tile between floor(lo / block_n) and ceil(hi / block_n) meets that range, and
    holds at least one allowed pair (each key j in [lo, hi) has a row within w of it).
    """
    M = N if M is None else M
    m0 = torch.arange(0, N, block_m)  # (nq,) first row of each block
    m1 = (m0 + block_m).clamp(max=N)
    lo = torch.zeros_like(m0)
    hi = torch.full_like(m0, M)
    if window is not None:
        lo = (m0 - window).clamp(min=0)
        hi = (m1 + window).clamp(max=M)
    if causal:
        hi = torch.minimum(hi, m1)
    return -(-hi // block_n) - lo // block_n
