"""Structured sparse kernels: attention over slabs, residue classes and blocks, never N×N.

The fixed patterns of :mod:`attnkit.fixed` split into pieces that each have a dense *shape*
once the sequence is reshaped, so each piece is an ordinary batched matmul:

    window     |i - j| <= w              chunks of c queries against key slabs of c + 2w
    residue    j ≡ i (mod s), j <= i - s  view positions as (N/s, s): a causal attention of
                                          length N/s inside each of the s residue classes
    block      j // s == i // s, j <= i   view positions as (N/s, s): causal inside each block
    summary    j % s >= s - summary,      gather the N/s·summary summary keys once; every
               j // s < i // s            query attends to those of earlier blocks

A pattern that is a union of disjoint pieces is their softmaxes merged by log-sum-exp:

    out_i = sum_p exp(lse_p,i - lse_i) · out_p,i,    lse_i = log sum_p exp(lse_p,i)

(the same identity FlashAttention uses to merge key blocks). Each piece returns ``(out, lse)``
with ``out (B, H, N, Dv)`` and ``lse (B, H, N)``; a row that sees nothing in a piece has
``lse = -inf`` and contributes nothing.

Cost (per head): window O(N·w·D); residue O(N·(N/s)·D); block O(N·s·D); summary
O(N·(N/s)·summary·D). Sparse Transformer strided = window(s - 1) + residue, fixed = block +
summary: O(N·(s + N/s)·D) in both, O(N·√N·D) at s = √N.

Sources: Child et al. (2019), Sparse Transformers (arXiv:1904.10509); Beltagy et al. (2020),
Longformer (arXiv:2004.05150); Dao et al. (2022), FlashAttention (log-sum-exp merging).
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .dense import dense_attention
from .graded import reference
from .masks import MaskMod, window_mask

__all__ = ["attend", "merge", "window_attention", "biased_window", "with_globals", "dilated_attention",
           "residue_attention", "block_attention", "summary_attention"]

Part = tuple[Tensor, Tensor]  # (out (B, H, N, Dv), lse (B, H, N))


def attend(q: Tensor, k: Tensor, v: Tensor, keep: Tensor) -> Part:
    """Masked softmax attention that also returns the log-sum-exp of each row (q pre-scaled).

        lse_i = log sum_{j: keep_ij} exp(q_i·k_j),   out_i = sum_j exp(q_i·k_j - lse_i) v_j

    Shapes: q ``(..., n, D)``, k ``(..., m, D)``, v ``(..., m, Dv)``, keep broadcastable to
    ``(..., n, m)``. Rows with nothing visible give ``out = 0`` and ``lse = -inf``, with finite
    gradients (no NaN leaks into the backward pass of the other rows).
    """
    if k.shape[-2] == 0:  # no keys at all: every row sees nothing
        out = q.new_zeros(*torch.broadcast_shapes(q.shape[:-1], v.shape[:-2] + (1,)), v.shape[-1])
        return out, out.new_full(out.shape[:-1], -math.inf)
    scores = (q @ k.transpose(-2, -1)).masked_fill_(~keep, -math.inf)  # (..., n, m)
    return _softmax_rows(scores, v)


def _softmax_rows(scores: Tensor, v: Tensor) -> Part:
    """``(softmax(scores) @ v, logsumexp(scores))`` over the last axis; ``scores`` is consumed.

        m_i = max_j s_ij,   e_ij = exp(s_ij - m_i),   z_i = sum_j e_ij
        out_i = (sum_j e_ij v_j) / z_i,   lse_i = m_i + log z_i

    The shift and the exponential run in place on ``scores`` (one score-sized buffer for the
    call), and the division by z_i happens on the ``(.., Dv)`` output, not on the weights:
    measured on the course machine (local attention at N=8192, w=128) 1.5× faster than
    ``torch.softmax(scores) @ v``, with half the memory. A row with no finite score gets
    ``out = 0``, ``lse = -inf``. Autograd: the shift is a detached constant (softmax does not
    depend on it) and ``exp_`` saves only its own result, which nothing overwrites after.
    Shapes: scores ``(..., n, m)``, v ``(..., m, Dv)`` -> ``(..., n, Dv)``, ``(..., n)``.
    """
    row_max = scores.detach().amax(dim=-1, keepdim=True)  # (..., n, 1)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    e = scores.sub_(row_max).exp_()  # in place: (..., n, m); masked entries exp(-inf) = 0
    z = e.sum(dim=-1, keepdim=True)  # (..., n, 1)
    seen = z > 0
    out = (e @ v) / torch.where(seen, z, torch.ones_like(z))  # (..., n, Dv)
    lse = torch.where(seen, row_max + torch.log(z.clamp_min(1e-30)), -math.inf)
    return out, lse.squeeze(-1)


def merge(*parts: Part) -> Tensor:
    """Combine attention over disjoint key sets: out = sum_p exp(lse_p - lse) out_p."""
    lses = torch.stack([lse for _, lse in parts])  # (P, B, H, N)
    top = lses.amax(dim=0)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top)).detach()
    weights = torch.exp(lses - top)  # (P, B, H, N); 0 for parts that see nothing
    total = weights.sum(dim=0)
    total = torch.where(total > 0, total, torch.ones_like(total))
    out = sum(w.unsqueeze(-1) * o for w, (o, _) in zip(weights, parts))
    return out / total.unsqueeze(-1)


def _pad_to(x: Tensor, length: int) -> Tensor:
    """Zero-pad the position axis (-2) of ``(B, H, N, D)`` up to ``length``."""
    return F.pad(x, (0, 0, 0, length - x.shape[-2]))


class _Slabs(NamedTuple):
    """Chunks of c queries and their key slabs (the layout of both window kernels)."""
    qc: Tensor  # (B, H, nc, c, D) scaled queries, zero-padded to nc·c
    ks: Tensor  # (B, H, nc, D, L) keys of each slab (slab n starts at key n·c - w)
    vs: Tensor  # (B, H, nc, L, Dv)
    i: Tensor  # (nc, c, 1) query positions
    j: Tensor  # (nc, 1, L) key positions (< 0 or >= N: padding)
    w: int  # the reach, at most N - 1
    after: int  # keys after the chunk: w, or 0 when causal


def _slabs(q: Tensor, k: Tensor, v: Tensor, reach: int, causal: bool, scale: float) -> _Slabs:
    """Cut ``(B, H, N, D)`` into chunks of c queries, each against a slab of L = c + w + after keys.

    c = w, raised towards 64 (at most 2w) for small windows: tiny chunks cost more in
    per-matmul overhead than they save (measured on the course machine). So L <= 4w.
    """
    B, H, N, D = q.shape
    if k.shape[-2] != N:
        raise ValueError(f"window attention needs as many keys as queries: N={N}, M={k.shape[-2]}")
    w = max(min(reach, N - 1), 0)  # a window wider than the sequence sees everything
    c = max(min(max(w, 64), 2 * w, N), 1)
    after = 0 if causal else w  # a causal window needs no keys after its chunk
    nc, L = math.ceil(N / c), c + w + after
    qc = _pad_to(q * scale, nc * c).view(B, H, nc, c, D)  # (B, H, nc, c, D)
    pad = (0, 0, w, nc * c - N + after)  # w keys before, enough after: length (nc - 1)·c + L
    ks = F.pad(k, pad).unfold(2, L, c)  # (B, H, nc, D, L): slab n starts at key n·c - w
    vs = F.pad(v, pad).unfold(2, L, c).transpose(-2, -1)  # (B, H, nc, L, Dv)
    i = torch.arange(nc * c, device=q.device).view(nc, c, 1)  # query positions (nc, c, 1)
    j = (torch.arange(nc, device=q.device) * c - w).view(nc, 1, 1) \
        + torch.arange(L, device=q.device).view(1, 1, L)  # key positions (nc, 1, L)
    return _Slabs(qc, ks, vs, i, j, w, after)


def _softmax_slabs(scores: Tensor, vs: Tensor, N: int, need_lse: bool = True) -> Part:
    """:func:`_softmax_rows` on every slab, cropped back to N queries; ``scores`` is consumed.

    Shapes: scores ``(B, H, nc, c, L)``, vs ``(B, H, nc, L, Dv)`` -> ``(B, H, N, Dv)``, ``(B, H, N)``
    (an empty tensor when not ``need_lse``). Every row holds a finite score (real rows see
    j = i, filler rows their whole slab).
    """
    B, H, nc, c, _ = scores.shape
    out, lse = _softmax_rows(scores, vs)  # (B, H, nc, c, Dv), (B, H, nc, c)
    out = out.reshape(B, H, nc * c, vs.shape[-1])[:, :, :N]  # (B, H, N, Dv)
    if not need_lse:
        return out, out.new_empty(0)
    return out, lse.reshape(B, H, nc * c)[:, :, :N]  # (B, H, N)


@functools.lru_cache(maxsize=64)
def _window_bias(N: int, c: int, w: int, after: int, window: int, dilation: int, causal: bool,
                 dtype: torch.dtype, device: torch.device) -> tuple[Tensor, int, int, tuple[Tensor, ...]]:
    """The additive mask (0 or -inf) of a window on slabs: one ``(c, L)`` band and a few edge chunks.

    Query a of chunk n is i = n·c + a and slab key l is j = n·c - w + l, so i - j = a + w - l does
    not depend on n: every chunk whose slab lies inside [0, N) and whose queries are real shares
    one band. Those chunks are a run [lo, hi); the chunks before and after it (the slab sticks
    out of the sequence, or queries are padding) get their own ``(c, L)`` bias. Padding queries
    (i >= N, cropped later) see their whole slab, so no row is empty and no NaN reaches the
    backward pass. Built once per (N, c, w, pattern, dtype, device): at most a few (c, L) tensors.
    Returns ``(band, lo, hi, edges)`` with ``edges[t]`` the bias of chunk t < lo or hi + (t - lo).
    """
    nc, L = math.ceil(N / c), c + w + after
    in_window = window_mask(window, dilation=dilation, causal=causal, device=device)
    a = torch.arange(c, device=device).view(c, 1)  # (c, 1)
    l = torch.arange(L, device=device).view(1, L)  # (1, L)

    def bias(keep: Tensor) -> Tensor:
        return torch.zeros(keep.shape, dtype=dtype, device=device).masked_fill_(~keep, -math.inf)

    inside = [n * c - w >= 0 and n * c - w + L <= N and n * c + c <= N for n in range(nc)]
    lo = inside.index(True) if any(inside) else nc
    hi = lo + sum(inside)  # inside chunks are one run: the edges are a prefix and a suffix
    edges = []
    for n in [*range(lo), *range(hi, nc)]:
        i, j = a + n * c, l + n * c - w  # (c, 1), (1, L)
        keep = in_window(0, 0, i, j) & (j >= 0) & (j < N) | (i >= N)  # (c, L)
        edges.append(bias(keep))
    return bias(in_window(0, 0, a + w, l)), lo, hi, tuple(edges)


def _add_window_bias(scores: Tensor, bias: tuple[Tensor, int, int, tuple[Tensor, ...]]) -> Tensor:
    """``scores (.., nc, c, L) += `` the band on chunks [lo, hi) and each edge chunk's own bias."""
    band, lo, hi, edges = bias
    scores[..., lo:hi, :, :].add_(band)
    for t, edge in enumerate(edges):
        scores[..., t if t < lo else hi + t - lo, :, :].add_(edge)
    return scores


@reference(graded_in=("a2",))
def window_attention(q: Tensor, k: Tensor, v: Tensor, *, window: int, dilation: int = 1,
                     causal: bool = False, scale: float, valid: Tensor | None = None,
                     need_lse: bool = True) -> Part:
    """The window of :func:`attnkit.masks.window_mask` (|i - j| <= reach = w·dilation, (i - j) %
    dilation == 0), by chunks of c queries against key slabs.

    Chunk n holds queries [n·c, n·c + c) and its key slab [n·c - reach, n·c + c + reach), of
    length L = c + 2·reach (causal: [n·c - reach, n·c + c), L = c + reach). The visible part
    of a slab is the same band for every chunk inside the sequence, so the mask is one additive
    ``(c, L)`` bias plus a few edge chunks (:func:`_window_bias`), built once and added in place;
    the scale is folded into q. Chunk sizes: see :func:`_slabs`.

    ``valid`` (boolean, broadcastable to ``(B, H, N)``) marks positions that are real: keys
    outside it are masked for the real queries (used by :func:`dilated_attention`, whose
    residue sequences end in padding). ``need_lse=False``: the caller keeps only the output
    (``lse`` is then an empty tensor).

    Cost: time O(N·(c + 2w)·D) <= O(4·N·w·D), memory O(N·(c + 2w)) = O(N·w): one score buffer.
    """
    N = q.shape[-2]
    s = _slabs(q, k, v, window * dilation, causal, scale)
    nc, c = s.qc.shape[2:4]
    scores = s.qc @ s.ks  # (B, H, nc, c, D) @ (B, H, nc, D, L) -> (B, H, nc, c, L)
    _add_window_bias(scores, _window_bias(N, c, s.w, s.after, window, dilation, causal, scores.dtype,
                                          scores.device))
    if valid is not None:
        L = s.ks.shape[-1]
        valid_q = F.pad(valid, (0, nc * c - N)).unflatten(-1, (nc, c)).unsqueeze(-1)  # (.., nc, c, 1)
        valid_k = F.pad(valid, (s.w, nc * c - N + s.after)).unfold(-1, L, c).unsqueeze(-2)  # (.., nc, 1, L)
        scores.masked_fill_(valid_q & ~valid_k, -math.inf)  # (.., nc, c, L)
    return _softmax_slabs(scores, s.vs, N, need_lse)


def biased_window(q: Tensor, k: Tensor, v: Tensor, *, reach: int, scale: float, skip: int = 0,
                  causal: bool = False, row_mask: MaskMod | None = None, bias=None) -> Part:
    """Window keys j >= ``skip`` with |i - j| <= reach (and ``row_mask``), plus a log-bias.

    The learned windows (:mod:`attnkit.bellcurve`, :mod:`attnkit.varwindow`, :mod:`attnkit.span`)
    run on this. Chunks of c queries against key slabs of L = c + 2w keys, as
    :func:`window_attention`. ``row_mask`` (a mask function that may depend on b, h and the
    query, such as per-query widths) is evaluated on the slabs' ``(B, H, nc, c, L)`` grid.
    ``bias(d, lay)`` returns the log-space bias for offsets d = i - j ``(nc, c, L)``, where
    ``lay(t)`` turns a per-query ``(.., N)`` tensor into ``(.., nc, c, 1)``. Rows i < skip
    (global queries, handled apart) are filler: they see their whole slab and must be discarded
    by the caller. Returns ``(out (B, H, N, Dv), lse (B, H, N))``.
    Cost: time O(N·(c + 2w)·D), memory O(N·(c + 2w)) = O(N·w).
    """
    B, H, N, _ = q.shape
    s = _slabs(q, k, v, reach, causal, scale)
    nc, c = s.qc.shape[2:4]
    i, j = s.i, s.j
    keep = window_mask(s.w, causal=causal, device=q.device)(0, 0, i, j) & (j >= skip) & (j < N)
    if row_mask is not None:
        b = torch.arange(B, device=q.device).view(B, 1, 1, 1, 1)
        h = torch.arange(H, device=q.device).view(1, H, 1, 1, 1)
        keep = keep & row_mask(b, h, i.clamp(max=N - 1), j)  # (B, H, nc, c, L)
    keep = keep | (i >= N) | (i < skip)  # filler rows see their whole slab: no NaN anywhere

    def lay(t: Tensor, fill: float = 1.0) -> Tensor:  # (.., N) -> (.., nc, c, 1)
        return F.pad(t, (0, nc * c - N), value=fill).unflatten(-1, (nc, c)).unsqueeze(-1)

    scores = s.qc @ s.ks  # (B, H, nc, c, D) @ (B, H, nc, D, L) -> (B, H, nc, c, L)
    if bias is not None:
        scores = scores + bias((i - j).to(q.dtype), lay)  # may broadcast to a larger shape
    return _softmax_slabs(scores.masked_fill_(~keep, -math.inf), s.vs, N)


def with_globals(q: Tensor, k: Tensor, v: Tensor, part: Part, g: int, scale: float) -> Tensor:
    """Add the g global keys (seen by all, no bias) and the g dense global rows to a window part."""
    if g == 0:
        return part[0]
    keep = torch.ones(1, 1, dtype=torch.bool, device=q.device)
    out = merge(part, attend(q * scale, k[:, :, :g], v[:, :, :g], keep))  # (B, H, N, Dv)
    rows = dense_attention(q[:, :, :g], k, v, scale=scale)  # (B, H, g, Dv): global rows see all
    return torch.cat([rows, out[:, :, g:]], dim=2)


@reference(graded_in=("a2",))
def dilated_attention(q: Tensor, k: Tensor, v: Tensor, *, window: int, dilation: int,
                      causal: bool = False, scale: float, need_lse: bool = True) -> Part:
    """Dilated window |i - j| <= w·δ, (i - j) % δ == 0, as a plain window inside residue classes.

    Positions with the same residue r = i mod δ form a sequence r, r + δ, r + 2δ, ...; in it,
    the dilated window is an ordinary window of w steps. Viewing ``(B, H, N, D)`` as
    ``(B, H·δ, N/δ, D)`` turns the pattern into :func:`window_attention` on δ·H sequences.
    Cost: time O(N·w·D), memory O(N·w) (not O(N·w·δ)).
    """
    B, H, N, D = q.shape
    Dv, d = v.shape[-1], dilation
    n = math.ceil(N / d)

    def split(x: Tensor) -> Tensor:  # (B, H, N, E) -> (B, H·δ, n, E): sequence h·δ + r
        return _grid(x, d).transpose(2, 3).reshape(B, H * d, n, x.shape[-1])

    pos = torch.arange(n, device=q.device).view(1, n) * d + torch.arange(d, device=q.device).view(d, 1)
    valid = (pos < N).repeat(H, 1).view(1, H * d, n)  # (1, H·δ, n): real positions
    out, lse = window_attention(split(q), split(k), split(v), window=window, causal=causal,
                                scale=scale, valid=valid, need_lse=need_lse)
    out = out.view(B, H, d, n, Dv).transpose(2, 3).reshape(B, H, n * d, Dv)[:, :, :N]
    if not need_lse:
        return out, lse
    return out, lse.view(B, H, d, n).transpose(2, 3).reshape(B, H, n * d)[:, :, :N]


def _grid(x: Tensor, s: int) -> Tensor:
    """``(B, H, N, D)`` -> ``(B, H, n, s, D)`` with n = ceil(N / s): position p = row·s + col."""
    B, H, N, D = x.shape
    n = math.ceil(N / s)
    return _pad_to(x, n * s).view(B, H, n, s, D)


def residue_attention(q: Tensor, k: Tensor, v: Tensor, *, stride: int, scale: float) -> Part:
    """Query i sees keys j ≡ i (mod s) with j <= i - s: the strided "column" of Sparse Transformer.

    On the grid p = row·s + col the class of i is its column, so transposing to
    ``(B, H, s, n, D)`` makes each class a sequence of length n = N/s, and the piece is causal
    attention (strictly earlier rows) inside each class.
    Cost: time O(s·n²·D) = O(N·(N/s)·D), memory O(N·N/s).
    """
    N = q.shape[-2]
    qg, kg, vg = (_grid(x, stride).transpose(2, 3) for x in (q * scale, k, v))  # (B, H, s, n, D)
    n = qg.shape[-2]
    row = torch.arange(n, device=q.device)
    col = torch.arange(stride, device=q.device).view(stride, 1, 1)  # (s, 1, 1)
    keep = (row.view(n, 1) > row.view(1, n)) & (row.view(1, n) * stride + col < N)  # (s, n, n)
    out, lse = attend(qg, kg, vg, keep)  # (B, H, s, n, Dv), (B, H, s, n)
    B, H, Dv = q.shape[0], q.shape[1], v.shape[-1]
    out = out.transpose(2, 3).reshape(B, H, n * stride, Dv)[:, :, :N]
    return out, lse.transpose(2, 3).reshape(B, H, n * stride)[:, :, :N]


def block_attention(q: Tensor, k: Tensor, v: Tensor, *, block: int, scale: float) -> Part:
    """Query i sees keys j of its own block (j // s == i // s) with j <= i.

    Cost: time O(N·s·D), memory O(N·s).
    """
    N = q.shape[-2]
    qg, kg, vg = (_grid(x, block) for x in (q * scale, k, v))  # (B, H, n, s, D)
    n = qg.shape[2]
    col = torch.arange(block, device=q.device)
    pos = torch.arange(n, device=q.device).view(n, 1, 1) * block + col.view(1, 1, block)
    keep = (col.view(block, 1) >= col.view(1, block)) & (pos < N)  # (n, s, s)
    out, lse = attend(qg, kg, vg, keep)  # (B, H, n, s, Dv), (B, H, n, s)
    B, H, Dv = q.shape[0], q.shape[1], v.shape[-1]
    return out.reshape(B, H, n * block, Dv)[:, :, :N], lse.reshape(B, H, n * block)[:, :, :N]


def summary_attention(q: Tensor, k: Tensor, v: Tensor, *, stride: int, summary: int,
                      scale: float) -> Part:
    """Query i sees the summary keys (j % s >= s - summary) of every earlier block.

    The n·summary summary keys are gathered once: ``(B, H, n·summary, D)``.
    Cost: time O(N·(N/s)·summary·D), memory O(N·(N/s)·summary).
    """
    N = q.shape[-2]
    B, H = q.shape[:2]
    summary = min(summary, stride)
    ks = _grid(k, stride)[:, :, :, stride - summary:].reshape(B, H, -1, k.shape[-1])  # (B, H, n·t, D)
    vs = _grid(v, stride)[:, :, :, stride - summary:].reshape(B, H, -1, v.shape[-1])  # (B, H, n·t, Dv)
    n = ks.shape[-2] // summary if summary else 0
    key_block = torch.arange(n, device=q.device).repeat_interleave(summary)  # (n·t,)
    key_pos = key_block * stride + torch.arange(stride - summary, stride, device=q.device).repeat(n)
    query_block = torch.arange(N, device=q.device) // stride  # (N,)
    keep = (key_block.view(1, -1) < query_block.view(-1, 1)) & (key_pos < N).view(1, -1)  # (N, n·t)
    return attend(q * scale, ks, vs, keep)
