"""Routing attention: cluster queries and keys with spherical k-means, attend within a cluster.

With unit vectors x̂ = x / |x| and C centroids μ_1..μ_C (unit vectors, per head), each query and
key goes to its nearest centroid by dot product:

    c(x) = argmax_m  x̂ · μ_m

and query i attends to key j iff c(q_i) == c(k_j) (and j <= i when causal): ``dense_attention``
under that mask. The centroids are given, or found by spherical k-means over the normalised
queries and keys of every batch row together (per head):

    init  μ = C distinct points, chosen with ``seed``
    step  assign every point to c(x);  μ_m = normalise(Σ_{x in m} x̂)  (an empty cluster keeps μ_m)

Exact path (``balanced=False``): sort queries and keys by cluster and pad every cluster to the
largest cluster's size cap, then attend inside each ``(cap, cap)`` block. Exact for any
clustering, but its cost follows the largest cluster: memory O(C·cap²) per head, which is N²
when one cluster takes everything.

Balanced path (``balanced=True``, the paper's efficient form): each centroid takes its top-w
queries and its top-w keys by score x̂ · μ_m (w = ⌈N / C⌉ for queries, ⌈M / C⌉ for keys), attends
within those (causal by original position), and a query picked by several centroids gets the
mean of their outputs (a zero row from a centroid where it sees no key counts too); a query no
centroid picked gets a zero row. Memory O(C·w²) = O(N²/C), whatever the clustering.

Cost: k-means O(iters·(N + M)·C·D); exact path time O(C·cap²·D), balanced O(N·w·D) with
w = N/C, i.e. O(N^1.5·D) at C = √N.

Source: Roy, Saffar, Vaswani & Grangier (2021), Efficient Content-Based Sparse Attention with
Routing Transformers (arXiv:2003.05997), sections 3-4.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .dense import default_scale, dense_attention
from .graded import reference
from .masks import causal as causal_mod

__all__ = ["spherical_kmeans", "route", "routing", "routing_reference"]


@reference(graded_in=("a4",))
def spherical_kmeans(x: Tensor, clusters: int, *, iters: int = 10, seed: int = 0) -> Tensor:
    """Centroids ``(H, C, D)`` (unit rows) of the normalised rows of ``x (B, H, N, D)``, per head.

    The B·N points of a head are pooled; the initial centroids are the points at C distinct
    indices drawn with ``torch.Generator().manual_seed(seed)`` (the same indices in every head).
    Cost: O(iters·B·N·C·D).
    """
    if clusters < 1:
        raise ValueError(f"routing: clusters must be >= 1, got {clusters}")
    if iters < 0:
        raise ValueError(f"routing: iters must be >= 0, got {iters}")
    B, H, N, D = x.shape
    if clusters > B * N:
        raise ValueError(f"routing: k-means needs at least as many points as clusters: "
                         f"{B}·{N} = {B * N} points per head, clusters={clusters}")
    points = F.normalize(x, dim=-1).transpose(0, 1).reshape(H, B * N, D)  # (H, P, D), P = B·N
    g = torch.Generator().manual_seed(seed)
    first = torch.randperm(B * N, generator=g)[:clusters].to(x.device)  # (C,) distinct points
    mu = points[:, first]  # (H, C, D)
    heads = torch.arange(H, device=x.device).view(H, 1) * clusters  # (H, 1) first centroid row of each head
    for _ in range(iters):
        nearest = (points @ mu.transpose(-2, -1)).argmax(dim=-1)  # (H, P, D) @ (H, D, C) -> (H, P)
        row = (nearest + heads).flatten()  # (H·P,) row of each point's centroid in (H·C, D)
        sums = points.new_zeros(H * clusters, D).index_add_(0, row, points.reshape(-1, D))  # Σ members
        size = torch.bincount(row, minlength=H * clusters).view(H, clusters, 1)  # (H, C, 1) members
        mu = torch.where(size > 0, F.normalize(sums.view(H, clusters, D), dim=-1), mu)  # empty: keep μ
    return mu


@reference(graded_in=("a4",))
def route(x: Tensor, centroids: Tensor) -> Tensor:
    """Nearest centroid of every row: argmax_m x̂ · μ_m, ``(B, H, N, D), (H, C, D) -> (B, H, N)`` long."""
    return (F.normalize(x, dim=-1) @ centroids.transpose(-2, -1)).argmax(dim=-1)  # (B, H, N, C) -> (B, H, N)


def _centroids(q: Tensor, k: Tensor, clusters: int, centroids: Tensor | None, iters: int,
               seed: int) -> Tensor:
    H, D = q.shape[1], q.shape[-1]
    if centroids is None:
        both = torch.cat([F.normalize(q, dim=-1), F.normalize(k, dim=-1)], dim=2)  # (B, H, N + M, D)
        return spherical_kmeans(both, clusters, iters=iters, seed=seed)
    if centroids.shape != (H, clusters, D):
        raise ValueError(f"routing: centroids must be (H, clusters, D) = ({H}, {clusters}, {D}), "
                         f"got {tuple(centroids.shape)}")
    return centroids.to(q.dtype)


def _top_members(x: Tensor, centroids: Tensor, w: int) -> Tensor:
    """Each centroid's w highest-scoring rows of ``x (B, H, L, D)``: ``(B, H, C, w)`` positions.

    The same ``topk`` call on the same scores in :func:`routing` and :func:`routing_reference`,
    so both pick the same rows even among ties.
    """
    scores = centroids @ F.normalize(x, dim=-1).transpose(-2, -1)  # (H, C, D) @ (B, H, D, L) -> (B, H, C, L)
    return scores.topk(w, dim=-1, sorted=False).indices  # (B, H, C, w)


def _check(q, k, v, clusters):
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"routing: expected (B, H, N, D) tensors, got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if clusters < 1:
        raise ValueError(f"routing: clusters must be >= 1, got {clusters}")


def _gather(x: Tensor, idx: Tensor) -> Tensor:
    """Rows ``idx (B, H, *S)`` of ``x (B, H, L, E)``: ``(B, H, *S, E)`` (one ``index_select``)."""
    B, H, L, E = x.shape
    return x.reshape(B * H * L, E).index_select(0, _flat(idx, L)).view(*idx.shape, E)


def _attend(q: Tensor, k: Tensor, v: Tensor, keep: Tensor) -> Tensor:
    """Softmax attention of pre-scaled ``q (.., n, D)`` over ``k (.., m, D)`` where ``keep``; empty rows 0."""
    scores = (q @ k.transpose(-2, -1)).masked_fill_(~keep, -math.inf)  # (.., n, m)
    top = scores.amax(dim=-1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top)).detach()
    e = torch.exp(scores - top)  # (.., n, m), 0 where masked
    denom = e.sum(dim=-1, keepdim=True)
    return (e @ v) / torch.where(denom > 0, denom, torch.ones_like(denom))  # (.., n, Dv)


def _packed(q, k, v, cq, ck, clusters, causal, scale):
    """Exact routing: every cluster padded to cap rows, ``(B, H, C, cap, cap)`` scores."""
    B, H, N, _ = q.shape
    M = k.shape[-2]
    C = clusters

    def layout(c: Tensor, L: int) -> tuple[Tensor, Tensor]:
        """Slot of each row in its cluster (by position) and each cluster's size."""
        size = torch.zeros(B, H, C, dtype=torch.long, device=q.device).scatter_add_(
            2, c, torch.ones_like(c))  # (B, H, C)
        order = torch.sort(c, dim=-1, stable=True).indices  # (B, H, L): by (cluster, position)
        start = size.cumsum(-1) - size  # (B, H, C) first sorted row of each cluster
        rank = torch.empty_like(order).scatter_(-1, order, torch.arange(L, device=q.device).expand(B, H, L))
        return rank - start.gather(-1, c), size  # (B, H, L) slot within the cluster, (B, H, C)

    slot_q, size_q = layout(cq, N)
    slot_k, size_k = layout(ck, M)
    cap = int(max(size_q.max(), size_k.max()))
    dest_q, dest_k = cq * cap + slot_q, ck * cap + slot_k  # (B, H, N), (B, H, M) packed rows

    def sources(dest: Tensor, L: int) -> Tensor:
        """The original row in each packed slot, ``(B, H, C·cap)`` (L: an empty slot)."""
        rows = torch.arange(L, device=q.device).expand(B, H, L)
        return torch.full((B, H, C * cap), L, dtype=torch.long, device=q.device).scatter_(-1, dest, rows)

    src_q, src_k = sources(dest_q, N), sources(dest_k, M)  # (B, H, C·cap)
    qp = _gather(q * scale, src_q.clamp(max=N - 1)).view(B, H, C, cap, -1)  # (B, H, C, cap, D)
    kp = _gather(k, src_k.clamp(max=M - 1)).view(B, H, C, cap, -1)  # (B, H, C, cap, D)
    vp = _gather(v, src_k.clamp(max=M - 1)).view(B, H, C, cap, -1)  # (B, H, C, cap, Dv)
    i, j = src_q.view(B, H, C, cap, 1), src_k.view(B, H, C, 1, cap)
    keep = (j < M) & (i < N)  # (B, H, C, cap, cap): real keys (rows for empty slots are dropped)
    if causal:
        keep &= causal_mod(0, 0, i, j)
    out = _attend(qp, kp, vp, keep)  # (B, H, C, cap, Dv)
    return _gather(out.flatten(2, 3), dest_q)  # (B, H, N, Dv)


def _balanced(q, k, v, centroids, causal, scale):
    """Balanced routing: top-w queries and keys per centroid, ``(B, H, C, w, w)`` scores."""
    B, H, N, _ = q.shape
    M, Dv = k.shape[-2], v.shape[-1]
    C = centroids.shape[1]
    iq = _top_members(q, centroids, math.ceil(N / C))  # (B, H, C, wq)
    jk = _top_members(k, centroids, math.ceil(M / C))  # (B, H, C, wk)
    keep = causal_mod(0, 0, iq.unsqueeze(-1), jk.unsqueeze(-2)) if causal else \
        torch.ones((), dtype=torch.bool, device=q.device)  # (B, H, C, wq, wk)
    out = _attend(_gather(q * scale, iq), _gather(k, jk), _gather(v, jk), keep)  # (B, H, C, wq, Dv)
    total = q.new_zeros(B * H * N, Dv).index_add_(0, _flat(iq, N), out.reshape(-1, Dv))  # Σ over centroids
    picks = q.new_zeros(B * H * N).index_add_(0, _flat(iq, N), q.new_ones(iq.numel()))  # times picked
    return (total / picks.clamp_min(1).unsqueeze(-1)).view(B, H, N, Dv)


def _flat(idx: Tensor, L: int) -> Tensor:
    """Positions ``idx (B, H, ...)`` as rows of a ``(B·H·L, ..)`` tensor."""
    B, H = idx.shape[:2]
    return (idx + torch.arange(B * H, device=idx.device).view(B, H, *[1] * (idx.dim() - 2)) * L).flatten()


@reference(graded_in=("a4",))
def routing(q: Tensor, k: Tensor, v: Tensor, *, clusters: int, centroids: Tensor | None = None,
            iters: int = 10, seed: int = 0, causal: bool = False, balanced: bool = False,
            scale: float | None = None) -> Tensor:
    """Routing attention: query i attends key j iff they share a centroid (or, balanced, a
    centroid's top-w lists).

    ``centroids (H, C, D)`` default to :func:`spherical_kmeans` over the normalised q and k.
    Shapes: ``(B, H, N, D)``, ``(B, H, M, D)``, ``(B, H, M, Dv)`` -> ``(B, H, N, Dv)``.
    Cost: k-means O(iters·(N + M)·C·D); exact path memory O(C·cap²) with cap the largest cluster
    (N² at worst); balanced time O(N·(N/C)·D), memory O(N²/C).
    Paper: Roy et al. 2021, Efficient Content-Based Sparse Attention with Routing Transformers.
    """
    _check(q, k, v, clusters)
    mu = _centroids(q, k, clusters, centroids, iters, seed)  # (H, C, D)
    scale = default_scale(q, scale)
    if balanced:
        return _balanced(q, k, v, mu, causal, scale)
    return _packed(q, k, v, route(q, mu), route(k, mu), clusters, causal, scale)


@reference(graded_in=("a4",))
def routing_reference(q, k, v, *, clusters, centroids=None, iters=10, seed=0, causal=False,
                      balanced=False, scale=None):
    """Dense form of :func:`routing`: ``dense_attention`` under the same-cluster mask (balanced:
    one masked dense attention per centroid, averaged over the centroids that picked the query).
    Memory O(N·M) (balanced O(C·N·M))."""
    _check(q, k, v, clusters)
    mu = _centroids(q, k, clusters, centroids, iters, seed)  # (H, C, D)
    N, M = q.shape[-2], k.shape[-2]
    allowed = torch.ones(N, M, dtype=torch.bool, device=q.device)
    if causal:
        allowed = causal_mod(0, 0, torch.arange(N, device=q.device).view(-1, 1),
                             torch.arange(M, device=q.device).view(1, -1))  # (N, M)
    if not balanced:
        mask = route(q, mu).unsqueeze(-1) == route(k, mu).unsqueeze(-2)  # (B, H, N, M)
        return dense_attention(q, k, v, mask=mask & allowed, scale=scale)
    C = mu.shape[1]
    in_q = torch.zeros(*q.shape[:2], C, N, dtype=torch.bool, device=q.device).scatter_(
        -1, _top_members(q, mu, math.ceil(N / C)), True)  # (B, H, C, N): centroid picked query i
    in_k = torch.zeros(*k.shape[:2], C, M, dtype=torch.bool, device=q.device).scatter_(
        -1, _top_members(k, mu, math.ceil(M / C)), True)  # (B, H, C, M)
    mask = in_k.unsqueeze(-2) & allowed  # (B, H, C, N, M): the keys of each centroid
    per = dense_attention(q.unsqueeze(2), k.unsqueeze(2), v.unsqueeze(2), mask=mask, scale=scale)  # (B, H, C, N, Dv)
    picked = in_q.unsqueeze(-1).to(q.dtype)  # (B, H, C, N, 1)
    return (per * picked).sum(2) / picked.sum(2).clamp_min(1)  # mean over the centroids that picked i


# ---------------------------------------------------------------- registry entry

def _register() -> None:
    from .registry import register

    register("routing", routing, family="content-based", reference=routing_reference,
             cost="O(iters·N·C·D) k-means + O(C·cap²·D) time (balanced O(N²·D/C)), "
                  "O(C·cap²) memory (cap = largest cluster; balanced O(N²/C))",
             paper="Roy et al. 2021, Efficient Content-Based Sparse Attention with Routing "
                   "Transformers (arXiv:2003.05997)",
             example_kwargs={"clusters": 4, "iters": 3, "seed": 0})


_register()
