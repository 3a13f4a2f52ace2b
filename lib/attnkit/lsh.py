"""Reformer's LSH attention: hash queries and keys by angle, attend only within a bucket.

Angular locality-sensitive hashing. With x̂ = x / |x| and a random ``(D, b/2)`` matrix R_r
(entries N(0, 1), one per round r = 1..R):

    h_r(x) = argmax( [x̂ R_r, -x̂ R_r] )          one of b buckets

Nearby directions tend to share a bucket. For b = 2 it is one random hyperplane, and two vectors
at angle θ collide with probability exactly 1 - θ/π; more buckets sharpen the curve.

Exact bucketed attention (``chunk=None``): query i sees key j iff h_r(q_i) == h_r(k_j) in at least
one round (and j <= i when causal): ``dense_attention`` under that mask (:func:`lsh_mask`).

The Reformer path (``chunk=c``, needs N = M). In each round, sort queries and keys by
(bucket, position), cut both into chunks of c, and let query chunk n attend key chunks n and
n - 1 (no wrap-around), same bucket only (causal by original position). Each round gives an
output o_r,i and a log-normaliser lse_r,i; rounds are merged by log-sum-exp:

    out_i = Σ_r exp(lse_r,i - lse_i) o_r,i,     lse_i = log Σ_r exp(lse_r,i)

where a pair that shares a bucket in n_ij rounds has its score lowered by log n_ij, so it is
counted once in total. With c >= N every round sees its whole bucket, and the result is the
exact mode for any number of rounds.

Shared-QK (``shared_qk=True``): the keys are the normalised queries (``k`` is ignored). A token
then always shares its own bucket, and its own score |q|·|q̂| dominates; it may attend to itself
only when it has no other candidate (in the exact mode: no other key; chunked: in that round).

A query with no candidate gets a zero row, as ``dense_attention`` gives a fully masked row.

Cost: chunked, time O(R·N·c·D + R·N·log N), memory O(R·N·c); exact mode O(N·M) (the mask).

Sources: Kitaev, Kaiser & Levskaya (2020), Reformer: The Efficient Transformer
(arXiv:2001.04451), sections 2-3; Andoni et al. (2015), Practical and Optimal LSH for Angular
Distance (arXiv:1509.02897).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .banded import merge
from .dense import default_scale, dense_attention
from .graded import reference
from .masks import causal as causal_mod

__all__ = ["random_rotations", "hash_vectors", "collision_probability", "measured_collision",
           "lsh_mask", "lsh", "lsh_reference"]


def _check_buckets(buckets: int) -> None:
    if not isinstance(buckets, int) or buckets < 2 or buckets % 2:
        raise ValueError(f"lsh: buckets must be an even integer >= 2 (the hash is an argmax over "
                         f"[xR, -xR]), got {buckets!r}")


def random_rotations(D: int, buckets: int, rounds: int = 1, seed: int = 0, *,
                     dtype=torch.float32, device=None) -> Tensor:
    """``(rounds, D, buckets // 2)`` N(0, 1) matrices R_r, one per hashing round.

    Drawn in float64 on the CPU from ``torch.Generator().manual_seed(seed)``, then cast.
    """
    _check_buckets(buckets)
    if rounds < 1:
        raise ValueError(f"lsh: rounds must be >= 1, got {rounds}")
    g = torch.Generator().manual_seed(seed)
    R = torch.randn(rounds, D, buckets // 2, generator=g, dtype=torch.float64)  # (R, D, b/2)
    return R.to(dtype=dtype, device=device)


@reference(graded_in=("a4",))
def hash_vectors(x: Tensor, rotations: Tensor) -> Tensor:
    """Bucket of every row: h_r(x) = argmax([x̂ R_r, -x̂ R_r]), ``(..., D) -> (R, ...)`` long.

    ``rotations`` is ``(R, D, b/2)``. A zero row (no direction) lands in bucket 0.
    """
    if rotations.dim() != 3 or rotations.shape[1] != x.shape[-1]:
        raise ValueError(f"lsh: rotations must be (rounds, D, buckets // 2) with D = {x.shape[-1]}, "
                         f"got {tuple(rotations.shape)}")
    x_hat = F.normalize(x, dim=-1)  # (..., D), x / |x| (a zero row stays zero)
    p = x_hat.reshape(1, -1, x.shape[-1]) @ rotations.to(x.dtype)  # (1, P, D) @ (R, D, b/2) -> (R, P, b/2)
    buckets = torch.cat([p, -p], dim=-1).argmax(dim=-1)  # (R, P)
    return buckets.view(rotations.shape[0], *x.shape[:-1])  # (R, ...)


def measured_collision(theta: float, D: int, buckets: int, trials: int = 10_000,
                       seed: int = 0) -> float:
    """Fraction of ``trials`` fresh rotations under which two unit vectors at angle θ collide.

    The rotations are Gaussian, so their law is the same in every direction: one fixed pair
    x = e₁, y = cos θ e₁ + sin θ e₂ serves every trial (D >= 2).
    """
    if D < 2:
        raise ValueError(f"measured_collision needs D >= 2 to place two vectors at an angle, got {D}")
    pair = torch.zeros(2, D, dtype=torch.float64)  # (2, D)
    pair[0, 0] = 1.0
    pair[1, 0], pair[1, 1] = math.cos(theta), math.sin(theta)
    hits, done, batch = 0, 0, max(1, 2**22 // (D * max(buckets // 2, 1)))
    for start in range(0, trials, batch):
        n = min(batch, trials - start)
        R = random_rotations(D, buckets, n, seed + start, dtype=torch.float64)  # (n, D, b/2)
        h = hash_vectors(pair, R)  # (n, 2)
        hits += int((h[:, 0] == h[:, 1]).sum())
        done += n
    return hits / done


def collision_probability(theta, buckets: int = 2, *, D: int = 64, trials: int = 10_000,
                          seed: int = 0):
    """P[h(x) == h(y)] for unit x, y at angle θ: exactly 1 - θ/π for 2 buckets (one hyperplane),
    else the Monte Carlo :func:`measured_collision` (θ a number then) in D dimensions."""
    _check_buckets(buckets)
    if buckets == 2:
        return 1 - theta / math.pi
    return measured_collision(float(theta), D, buckets, trials, seed)


def _hashes(q: Tensor, k: Tensor, buckets: int, rounds: int, seed: int, rotations: Tensor | None,
            shared_qk: bool) -> tuple[Tensor, Tensor, Tensor]:
    """The keys actually used (k̂ = q̂ when shared) and the buckets ``(R, B, H, N)``, ``(R, B, H, M)``."""
    _check_buckets(buckets)
    if rotations is None:
        rotations = random_rotations(q.shape[-1], buckets, rounds, seed, dtype=q.dtype, device=q.device)
    elif rotations.dim() != 3 or rotations.shape[-1] * 2 != buckets:
        raise ValueError(f"lsh: rotations must be (rounds, D, buckets // 2) = (R, {q.shape[-1]}, "
                         f"{buckets // 2}), got {tuple(rotations.shape)}")
    if shared_qk:
        k = F.normalize(q, dim=-1)  # (B, H, N, D): Reformer's shared-QK keys
    hq = hash_vectors(q, rotations)  # (R, B, H, N)
    hk = hq if shared_qk else hash_vectors(k, rotations)  # (R, B, H, M): q̂ and k̂ hash alike
    return k, hq, hk


def _self_rule(keep: Tensor, is_self: Tensor) -> Tensor:
    """Shared-QK: keep j = i only in rows where no other key is kept."""
    other = keep & ~is_self
    return other | (keep & is_self & ~other.any(dim=-1, keepdim=True))


@reference(graded_in=("a4",))
def lsh_mask(q: Tensor, k: Tensor | None, *, buckets: int, rounds: int = 1, seed: int = 0,
             rotations: Tensor | None = None, causal: bool = False, shared_qk: bool = False) -> Tensor:
    """``(B, H, N, M)`` bool: h_r(q_i) == h_r(k_j) for some round r (and j <= i if causal).

    Shared-QK: keys are q̂ and j = i is kept only in a row with no other key. Memory O(N·M).
    """
    k, hq, hk = _hashes(q, q if k is None else k, buckets, rounds, seed, rotations, shared_qk)
    N, M = hq.shape[-1], hk.shape[-1]
    i = torch.arange(N, device=q.device).view(N, 1)  # (N, 1) query positions
    j = torch.arange(M, device=q.device).view(1, M)  # (1, M) key positions
    keep = (hq.unsqueeze(-1) == hk.unsqueeze(-2)).any(dim=0)  # (R, B, H, N, M) -> (B, H, N, M)
    if causal:
        keep = keep & causal_mod(0, 0, i, j)
    return _self_rule(keep, i == j) if shared_qk else keep


def _exact(q, k, v, *, buckets, rounds, seed, rotations, causal, shared_qk, scale):
    """Exact bucketed attention: ``dense_attention`` under :func:`lsh_mask`."""
    mask = lsh_mask(q, k, buckets=buckets, rounds=rounds, seed=seed, rotations=rotations,
                    causal=causal, shared_qk=shared_qk)  # (B, H, N, M)
    k = F.normalize(q, dim=-1) if shared_qk else k
    return dense_attention(q, k, v, mask=mask, scale=default_scale(q, scale))


def _check_qkv(q, k, v, shared_qk):
    if q.dim() != 4:
        raise ValueError(f"lsh: expected q of shape (B, H, N, D), got {tuple(q.shape)}")
    M = q.shape[-2] if shared_qk else k.shape[-2]
    if v.shape[-2] != M:
        raise ValueError(f"lsh: v must have one row per key (M = {M}), got {tuple(v.shape)}")


def _chunk_size(chunk: int, N: int, M: int) -> int:
    if chunk < 1:
        raise ValueError(f"lsh: chunk must be >= 1, got {chunk}")
    if chunk < max(N, M) and N != M:
        raise ValueError(f"lsh: chunk={chunk} is shorter than the sequence, which then needs as many keys "
                         f"as queries (sorted queries and keys are cut into matching chunks); got "
                         f"N={N}, M={M}")
    return min(chunk, max(N, M))


def _rows(x: Tensor, idx: Tensor) -> Tensor:
    """Rows ``idx (B, H, R, *S)`` of ``x (B, H, L, E)`` (an index >= L reads row L - 1): ``(B, H, R, *S, E)``.

    One ``index_select`` of whole rows, a memory copy each (faster than ``gather``). The rows
    read for padding are real rows; the bucket labels (-1, -2) mask them out.
    """
    B, H, L, E = x.shape
    base = torch.arange(B * H, device=x.device).view(B, H, *[1] * (idx.dim() - 2)) * L  # first row of each head
    flat = idx.clamp(max=L - 1) + base  # (B, H, R, *S) rows of x.reshape(B·H·L, E)
    return x.reshape(B * H * L, E).index_select(0, flat.reshape(-1)).view(*idx.shape, E)


def _labels(t: Tensor, idx: Tensor, fill: int) -> Tensor:
    """``t (B, H, R, L)`` at ``idx (B, H, R, *S)`` (index L reads ``fill``): ``(B, H, R, *S)``."""
    padded = F.pad(t, (0, 1), value=fill)  # (B, H, R, L + 1)
    return padded.gather(3, idx.flatten(3)).view(idx.shape)


def _chunked(q: Tensor, k: Tensor, v: Tensor, hq: Tensor, hk: Tensor, c: int, causal: bool,
             shared_qk: bool, scale: float) -> Tensor:
    """The sort-and-chunk path for buckets ``hq (R, B, H, N)``, ``hk (R, B, H, M)``.

    Index tensors hold original positions; N (queries) or M (keys) marks padding.
    """
    R, B, H, N = hq.shape
    M, Dv = hk.shape[-1], v.shape[-1]
    nc = math.ceil(max(N, M) / c)
    hq, hk = hq.permute(1, 2, 0, 3), hk.permute(1, 2, 0, 3)  # (B, H, R, N), (B, H, R, M)
    # sort each round by (bucket, position): a stable sort of the buckets
    order_q = torch.sort(hq, dim=-1, stable=True).indices  # (B, H, R, N)
    order_k = order_q if shared_qk else torch.sort(hk, dim=-1, stable=True).indices  # (B, H, R, M)
    iq = F.pad(order_q, (0, nc * c - N), value=N).view(B, H, R, nc, c)  # query chunks
    jk = F.pad(order_k, (c, nc * c - M), value=M).unfold(3, 2 * c, c)  # (B, H, R, nc, 2c): previous + own

    qs = _rows(q * scale, iq)  # (B, H, R, nc, c, D)
    ks, vs = _rows(k, jk), _rows(v, jk)  # (B, H, R, nc, 2c, D), (B, H, R, nc, 2c, Dv)
    bq = _labels(hq, iq, -1).unsqueeze(-1)  # (B, H, R, nc, c, 1) this round's buckets
    bk = _labels(hk, jk, -2).unsqueeze(-2)  # (B, H, R, nc, 1, 2c); padding -1 / -2 never matches
    keep = bq == bk  # (B, H, R, nc, c, 2c)
    if causal:
        keep &= causal_mod(0, 0, iq.unsqueeze(-1), jk.unsqueeze(-2))
    if shared_qk:
        keep = _self_rule(keep, iq.unsqueeze(-1) == jk.unsqueeze(-2))
    scores = qs @ ks.transpose(-2, -1)  # (.., nc, c, D) @ (.., nc, D, 2c) -> (B, H, R, nc, c, 2c)
    scores.masked_fill_(~keep, -math.inf)
    top = scores.amax(dim=-1, keepdim=True)  # (B, H, R, nc, c, 1)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top)).detach()
    e = scores.sub_(top).exp_()  # in place (one score-sized buffer); masked pairs: exp(-inf) = 0
    if R > 1:  # a pair sharing a bucket in n rounds is seen n times: weight it exp(s - log n)
        shared = torch.ones(keep.shape, dtype=torch.uint8, device=q.device)  # this round
        for s in range(1, R):  # round r + s (mod R) beside round r
            a = _labels(hq.roll(-s, dims=2), iq, -1).unsqueeze(-1)  # (B, H, R, nc, c, 1)
            b = _labels(hk.roll(-s, dims=2), jk, -2).unsqueeze(-2)  # (B, H, R, nc, 1, 2c)
            shared += a == b
        e = e / shared
    denom = e.sum(dim=-1, keepdim=True)  # (B, H, R, nc, c, 1)
    seen = denom > 0
    out = (e @ vs) / torch.where(seen, denom, torch.ones_like(denom))  # (B, H, R, nc, c, Dv)

    # back to the original order: query i is row rank[i] of its round's sorted rows
    rank = torch.empty(order_q.shape, dtype=torch.long, device=q.device)  # (B, H, R, N)
    rank.scatter_(3, order_q, torch.arange(N, device=q.device).expand_as(order_q))
    out = _rows(out.view(B, H * R, nc * c, Dv), rank.view(B, H * R, N)).view(B, H, R, N, Dv)
    if R == 1:
        return out[:, :, 0]  # (B, H, N, Dv)
    lse = torch.where(seen, top + denom.clamp_min(1e-300).log(), -math.inf)  # (B, H, R, nc, c, 1)
    lse = lse.view(B, H, R, nc * c).gather(3, rank)  # (B, H, R, N)
    return merge(*((out[:, :, r], lse[:, :, r]) for r in range(R)))  # (B, H, N, Dv)


@reference(graded_in=("a4",))
def lsh(q: Tensor, k: Tensor, v: Tensor, *, buckets: int, rounds: int = 1, seed: int = 0,
        rotations: Tensor | None = None, chunk: int | None = None, causal: bool = False,
        shared_qk: bool = False, scale: float | None = None) -> Tensor:
    """LSH attention: exact bucketed attention (``chunk=None``) or the Reformer sort-and-chunk path.

    ``rotations (R, D, b/2)`` default to :func:`random_rotations` ``(D, buckets, rounds, seed)``;
    when given they fix the rounds. ``chunk=c`` < N needs N = M. ``scale`` default 1/sqrt(D).
    Shapes: ``(B, H, N, D)``, ``(B, H, M, D)``, ``(B, H, M, Dv)`` -> ``(B, H, N, Dv)``.
    Cost: chunked, time O(R·N·c·D + R·N·log N), memory O(R·N·c); exact mode O(N·M).
    Paper: Kitaev et al. 2020, Reformer: The Efficient Transformer (arXiv:2001.04451).
    """
    _check_qkv(q, k, v, shared_qk)
    scale = default_scale(q, scale)
    if chunk is None:
        return _exact(q, k, v, buckets=buckets, rounds=rounds, seed=seed, rotations=rotations,
                      causal=causal, shared_qk=shared_qk, scale=scale)
    k, hq, hk = _hashes(q, k, buckets, rounds, seed, rotations, shared_qk)
    c = _chunk_size(chunk, hq.shape[-1], hk.shape[-1])
    return _chunked(q, k, v, hq, hk, c, causal, shared_qk, scale)


@reference(graded_in=("a4",))
def lsh_reference(q, k, v, *, buckets, rounds=1, seed=0, rotations=None, chunk=None, causal=False,
                  shared_qk=False, scale=None):
    """Dense form of :func:`lsh`: one N×M block of scores per round, side by side, one softmax.

    Round r keeps pair (i, j) when the buckets agree, key j's chunk (its rank in the round's
    (bucket, position) order, // c) is query i's chunk or the one before, j <= i if causal, and
    the shared-QK self rule holds; its score is lowered by log(rounds in which i, j share a
    bucket). Softmax over all R·M columns = the log-sum-exp merge of the rounds. Memory O(R·N·M).
    """
    _check_qkv(q, k, v, shared_qk)
    if chunk is None:
        return _exact(q, k, v, buckets=buckets, rounds=rounds, seed=seed, rotations=rotations,
                      causal=causal, shared_qk=shared_qk, scale=scale)
    k, hq, hk = _hashes(q, k, buckets, rounds, seed, rotations, shared_qk)
    N, M = hq.shape[-1], hk.shape[-1]
    c = _chunk_size(chunk, N, M)
    i = torch.arange(N, device=q.device)  # query positions
    j = torch.arange(M, device=q.device)  # key positions

    def rank(h: Tensor, pos: Tensor) -> Tensor:  # place in the (bucket, position) order: (B, H, L)
        before = (h.unsqueeze(-2) < h.unsqueeze(-1)) | \
                 ((h.unsqueeze(-2) == h.unsqueeze(-1)) & (pos.view(1, -1) < pos.view(-1, 1)))
        return before.sum(-1)  # (B, H, L, L) -> (B, H, L): how many rows come before each row

    same = hq.unsqueeze(-1) == hk.unsqueeze(-2)  # (R, B, H, N, M)
    shared = same.sum(0).to(q.dtype)  # (B, H, N, M) rounds in which i and j share a bucket
    biases = []
    for r in range(hq.shape[0]):
        gap = (rank(hq[r], i) // c).unsqueeze(-1) - (rank(hk[r], j) // c).unsqueeze(-2)  # (B, H, N, M)
        keep = same[r] & ((gap == 0) | (gap == 1))
        if causal:
            keep = keep & causal_mod(0, 0, i.view(-1, 1), j.view(1, -1))
        if shared_qk:
            keep = _self_rule(keep, i.view(-1, 1) == j.view(1, -1))
        biases.append(torch.where(keep, -shared.clamp_min(1).log(), -math.inf))  # (B, H, N, M)
    bias = torch.cat(biases, dim=-1)  # (B, H, N, R·M)
    k_all = torch.cat([k] * len(biases), dim=-2)  # (B, H, R·M, D)
    v_all = torch.cat([v] * len(biases), dim=-2)  # (B, H, R·M, Dv)
    return dense_attention(q, k_all, v_all, mask=bias, scale=default_scale(q, scale))


# ---------------------------------------------------------------- registry entry

def _register() -> None:
    from .registry import register

    register("lsh", lsh, family="content-based", reference=lsh_reference,
             cost="O(R·N·c·D + R·N·log N) time, O(R·N·c) memory (c = chunk, R = rounds)",
             paper="Kitaev et al. 2020, Reformer: The Efficient Transformer (arXiv:2001.04451)",
             example_kwargs={"buckets": 4, "rounds": 2, "chunk": 16, "seed": 0})


_register()
