"""Block-sparse attention driven by any mask function: compute only the visible key blocks.

Split queries and keys into blocks of ``block`` positions. The *block layout* says which
(query block, key block) pairs hold at least one visible entry:

    layout[b, h, qb, kb] = any_{i in qb, j in kb} mask_mod(b, h, i, j)

Each query block then gathers its visible key blocks only, applies the element mask inside
them, and takes a stable softmax over the gathered keys:

    out_i = sum_{j in gathered(qb)} softmax_j(q_i·k_j / sqrt(D) masked) v_j

The result equals ``dense_attention(q, k, v, mask=materialize(mask_mod, N, M, B=B, H=H))``.
The layout is per batch and head, so patterns that depend on ``h`` (or ``b``) work.

Cost: with K visible key blocks per query block row, time O(N·K·block·D), largest
intermediate O(B·H·block·K·block) scores per row (plus the O(B·H·block·M) boolean grid on which
the mask function is evaluated for one row of the layout). Never an N×M tensor.

Source: the block-sparse kernels of Child et al. (2019), "Generating Long Sequences with Sparse
Transformers" (arXiv:1904.10509), and Zaheer et al. (2020), BigBird (arXiv:2007.14062).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .banded import attend
from .dense import default_scale, softmax
from .masks import MaskMod

__all__ = ["block_layout", "blocksparse_attention"]


def _evaluate(mask_mod: MaskMod, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor,
              N: int, M: int) -> Tensor:
    """``mask_mod`` on an index grid that may run past N or M (padding): those are False.

    Indices are clamped before the call, so table-based mask functions never index out of range.
    ``mask_mod=None``: every pair is visible (the block layout alone is the pattern).
    """
    if mask_mod is None:
        return (q_idx < N) & (kv_idx < M)
    keep = mask_mod(b, h, q_idx.clamp(max=N - 1), kv_idx.clamp(max=M - 1))
    keep = torch.as_tensor(keep, device=q_idx.device).to(torch.bool)
    return keep & (q_idx < N) & (kv_idx < M)


def block_layout(mask_mod: MaskMod, N: int, M: int | None = None, *, block: int, B: int = 1,
                 H: int = 1, device=None) -> Tensor:
    """Which key blocks each query block can see: boolean ``(B, H, ceil(N/block), ceil(M/block))``.

    Evaluated one query-block row at a time on a ``(block, M)`` index grid: memory O(block·M),
    never O(N·M).
    """
    M = N if M is None else M
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    nqb, nkb = math.ceil(N / block), math.ceil(M / block)
    b = torch.arange(B, device=device).view(B, 1, 1, 1)  # (B, 1, 1, 1)
    h = torch.arange(H, device=device).view(1, H, 1, 1)  # (1, H, 1, 1)
    kv_idx = torch.arange(nkb * block, device=device).view(1, 1, 1, nkb * block)  # (1, 1, 1, Mp)
    rows = []
    for r in range(nqb):
        q_idx = (r * block + torch.arange(block, device=device)).view(1, 1, block, 1)
        keep = _evaluate(mask_mod, b, h, q_idx, kv_idx, N, M)
        keep = keep.expand(B, H, block, nkb * block)  # (B, H, block, Mp)
        blocks = keep.reshape(B, H, block, nkb, block)  # (B, H, block, nkb, block)
        rows.append(blocks.any(dim=-1).any(dim=-2))  # (B, H, nkb)
    return torch.stack(rows, dim=2)  # (B, H, nqb, nkb)


def blocksparse_attention(q: Tensor, k: Tensor, v: Tensor, *, mask_mod: MaskMod | None, block: int = 32,
                          scale: float | None = None, layout: Tensor | None = None) -> Tensor:
    """Attention restricted to ``mask_mod``, computed on the visible key blocks only.

    Args:
        q: ``(B, H, N, D)``; k: ``(B, H, M, D)``; v: ``(B, H, M, Dv)``.
        mask_mod: ``mask_mod(b, h, q_idx, kv_idx) -> bool`` (True = attend), tensor ops only; or
            None when ``layout`` is the whole pattern (every visible block fully visible, as in
            BigBird): no per-element evaluation then.
        block: block size (N and M need not be multiples of it).
        scale: default ``1 / sqrt(D)``.
        layout: the block layout if the caller knows it (BigBird's table, a cached one), boolean
            and broadcastable to ``(B, H, ceil(N/block), ceil(M/block))``; by default it is
            computed with :func:`block_layout`, which evaluates ``mask_mod`` on all N·M pairs.

    Returns:
        ``(B, H, N, Dv)``; a query that sees no key gets a zero row (as the dense reference).

    Cost: time O(N·K·block·D) for K visible key blocks per query block; memory per query-block
    row O(B·H·block·K·block).
    """
    B, H, N, D = q.shape
    M, Dv = k.shape[-2], v.shape[-1]
    scale = default_scale(q, scale)
    if layout is None:
        if mask_mod is None:
            raise ValueError("blocksparse_attention: give a mask_mod, a layout, or both")
        layout = block_layout(mask_mod, N, M, block=block, B=B, H=H, device=q.device)
    nqb, nkb = math.ceil(N / block), math.ceil(M / block)
    qb = F.pad(q, (0, 0, 0, nqb * block - N)).view(B, H, nqb, block, D)  # (B, H, nqb, block, D)
    kb = F.pad(k, (0, 0, 0, nkb * block - M)).view(B, H, nkb, block, D)  # (B, H, nkb, block, D)
    vb = F.pad(v, (0, 0, 0, nkb * block - M)).view(B, H, nkb, block, Dv)  # (B, H, nkb, block, Dv)
    if layout.numel() == nqb * nkb:  # one layout for every batch and head (BigBird's table)
        out = _shared_layout(qb * scale, kb, vb, layout.to(q.device).view(nqb, nkb), mask_mod, N, M)
        return out.reshape(B, H, nqb * block, Dv)[:, :, :N]
    layout = layout.to(q.device).expand(B, H, nqb, nkb)
    b = torch.arange(B, device=q.device).view(B, 1, 1)  # (B, 1, 1)
    h = torch.arange(H, device=q.device).view(1, H, 1)  # (1, H, 1)
    offsets = torch.arange(block, device=q.device)
    outs = []
    for r in range(nqb):
        row = layout[:, :, r]  # (B, H, nkb)
        K = max(int(row.sum(-1).max()), 1)  # visible key blocks in this row (max over b, h)
        # Visible block indices first; rows with fewer than K pad with invisible blocks.
        idx = row.to(torch.int8).argsort(dim=-1, descending=True, stable=True)[..., :K]  # (B, H, K)
        valid = row.gather(-1, idx)  # (B, H, K)
        kg = kb[b, h, idx].reshape(B, H, K * block, D)  # (B, H, K, block, D) -> (B, H, K·block, D)
        vg = vb[b, h, idx].reshape(B, H, K * block, Dv)  # (B, H, K·block, Dv)
        kv_idx = (idx.unsqueeze(-1) * block + offsets).view(B, H, 1, K * block)  # (B, H, 1, K·block)
        q_idx = (r * block + offsets).view(1, 1, block, 1)  # (1, 1, block, 1)
        keep = _evaluate(mask_mod, b.unsqueeze(-1), h.unsqueeze(-1), q_idx, kv_idx, N, M)
        keep = keep & valid.repeat_interleave(block, dim=-1).view(B, H, 1, K * block)
        scores = (qb[:, :, r] @ kg.transpose(-2, -1)) * scale  # (B, H, block, K·block)
        weights = softmax(scores.masked_fill(~keep, float("-inf")), dim=-1)
        outs.append(weights @ vg)  # (B, H, block, K·block) @ (B, H, K·block, Dv) -> (B, H, block, Dv)
    out = torch.stack(outs, dim=2).reshape(B, H, nqb * block, Dv)  # (B, H, nqb·block, Dv)
    return out[:, :, :N]


ROW_BUDGET = 2**22  # score elements per batch of query-block rows (16 MiB in float32)


def _shared_layout(qb: Tensor, kb: Tensor, vb: Tensor, layout: Tensor, mask_mod: MaskMod | None,
                   N: int, M: int) -> Tensor:
    """Block-sparse attention when every (b, h) shares one ``(nqb, nkb)`` layout (q pre-scaled).

    Query-block rows that see the same number K of key blocks are stacked, so one gather and
    one batched matmul serve many rows (BigBird: the global row sees every block, all other
    rows 2·window + 1 + g + r): a Python loop over the few distinct K instead of over all nqb
    rows, in batches of at most :data:`ROW_BUDGET` score elements. Measured on the course
    machine at N=8192, block=64: 1.5× faster than one row at a time (``docs/benchmarks.md``).
    Shapes: qb ``(B, H, nqb, s, D)``, kb ``(B, H, nkb, s, D)``, vb ``(B, H, nkb, s, Dv)`` ->
    ``(B, H, nqb, s, Dv)``.
    """
    B, H, nqb, s, D = qb.shape
    Dv = vb.shape[-1]
    offsets = torch.arange(s, device=qb.device)
    b = torch.arange(B, device=qb.device).view(B, 1, 1, 1, 1)
    h = torch.arange(H, device=qb.device).view(1, H, 1, 1, 1)
    counts = layout.sum(-1)  # (nqb,) visible key blocks per row
    order = layout.to(torch.int8).argsort(dim=-1, descending=True, stable=True)  # visible blocks first
    out = qb.new_zeros(B, H, nqb, s, Dv)
    for K in counts.unique().tolist():
        rows_K = (counts == K).nonzero().squeeze(1)  # (R,) rows that see K blocks
        K = max(K, 1)  # a row that sees nothing gathers one invisible block (zero output)
        step = max(ROW_BUDGET // (B * H * s * K * s), 1)
        for rows in rows_K.split(step):
            R = rows.numel()
            idx = order[rows, :K]  # (R, K) key blocks of each row
            kg = kb.index_select(2, idx.flatten()).view(B, H, R, K * s, D)  # (B, H, R, K·s, D)
            vg = vb.index_select(2, idx.flatten()).view(B, H, R, K * s, Dv)  # (B, H, R, K·s, Dv)
            kv_idx = (idx.unsqueeze(-1) * s + offsets).view(R, 1, K * s)  # (R, 1, K·s)
            q_idx = (rows.view(R, 1, 1) * s + offsets.view(1, s, 1))  # (R, s, 1)
            keep = _evaluate(mask_mod, b, h, q_idx, kv_idx, N, M)  # (.., R, s, K·s)
            keep = keep & layout[rows.view(R, 1), idx].repeat_interleave(s, dim=-1).view(R, 1, K * s)
            part = attend(qb.index_select(2, rows), kg, vg, keep)[0]  # (B, H, R, s, Dv)
            out.index_copy_(2, rows, part)
    return out
