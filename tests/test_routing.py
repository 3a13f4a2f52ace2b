"""Routing attention: spherical k-means matches a by-hand loop (unit, seeded centroids), routing
equals dense attention under the same-cluster mask, given centroids are used as they are, the
balanced form matches a by-hand loop over centroids, causal ignores the future, and the packed
exact path stays within O(C·cap²) memory."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from attnkit import VARIANTS, dense_attention, largest_intermediate
from attnkit.routing import route, routing, routing_reference, spherical_kmeans
from strategies import fresh_qkv, make_qkv, seeds, shapes


def kmeans_by_hand(x: torch.Tensor, clusters: int, iters: int, seed: int) -> torch.Tensor:
    """Spherical k-means one head and one point at a time (the definition in the docstring)."""
    B, H, N, D = x.shape
    first = torch.randperm(B * N, generator=torch.Generator().manual_seed(seed))[:clusters]
    out = []
    for h in range(H):
        points = [x[b, h, n] / x[b, h, n].norm() for b in range(B) for n in range(N)]
        mu = [points[int(i)].clone() for i in first]
        for _ in range(iters):
            members = [[] for _ in range(clusters)]
            for p in points:
                members[max(range(clusters), key=lambda m: float(p @ mu[m]))].append(p)
            mu = [torch.stack(ms).sum(0) / torch.stack(ms).sum(0).norm() if ms else mu[m]
                  for m, ms in enumerate(members)]
        out.append(torch.stack(mu))
    return torch.stack(out)  # (H, C, D)


def unit_centroids(H: int, C: int, D: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(H, C, D, generator=g, dtype=torch.float64), dim=-1)


def test_kmeans_matches_a_by_hand_loop_and_is_seeded():
    x, _, _ = fresh_qkv(B=2, H=2, N=15, D=3)
    for clusters, iters, seed in [(3, 0, 1), (4, 1, 2), (5, 6, 3)]:
        mu = spherical_kmeans(x, clusters, iters=iters, seed=seed)
        assert mu.shape == (2, clusters, 3)
        torch.testing.assert_close(mu.norm(dim=-1), torch.ones(2, clusters, dtype=torch.float64))
        torch.testing.assert_close(mu, kmeans_by_hand(x, clusters, iters, seed), atol=1e-12, rtol=1e-10)
    assert torch.equal(spherical_kmeans(x, 4, iters=3, seed=7), spherical_kmeans(x, 4, iters=3, seed=7))
    assert not torch.equal(spherical_kmeans(x, 4, iters=3, seed=7), spherical_kmeans(x, 4, iters=3, seed=8))


def test_kmeans_never_lowers_its_objective_and_separates_clear_clusters():
    """Σ_x max_m x̂·μ_m does not fall from one iteration to the next (each step maximises it)."""
    x, _, _ = fresh_qkv(B=2, H=2, N=50, D=4)
    points = F.normalize(x, dim=-1).transpose(0, 1).reshape(2, 100, 4)  # (H, B·N, D)
    objective = [(points @ spherical_kmeans(x, 5, iters=t, seed=3).transpose(-2, -1)).amax(-1).sum().item()
                 for t in range(6)]
    assert all(b >= a - 1e-9 for a, b in zip(objective, objective[1:])), objective
    g = torch.Generator().manual_seed(0)
    centres = torch.eye(3, dtype=torch.float64)  # three orthogonal directions, 20 noisy points each
    x = (centres.repeat(20, 1) + 0.05 * torch.randn(60, 3, generator=g, dtype=torch.float64)).view(1, 1, 60, 3)
    first = torch.randperm(60, generator=torch.Generator().manual_seed(3))[:3]
    assert sorted((first % 3).tolist()) == [0, 1, 2]  # seed 3 starts from one point of each cluster
    mu = spherical_kmeans(x, 3, iters=10, seed=3)[0]  # (3, 3)
    assert (mu @ centres.T).max(dim=0).values.min() > 0.99  # every direction found


@settings(max_examples=15, deadline=None)
@given(shape=shapes(max_b=2, max_h=3, max_n=10), seed=seeds, clusters=st.integers(1, 5))
def test_route_is_the_nearest_centroid(shape, seed, clusters):
    q, _, _ = make_qkv(shape, seed)
    mu = unit_centroids(shape.H, clusters, shape.D, seed)
    c = route(q, mu)
    assert c.shape == (shape.B, shape.H, shape.N) and c.dtype == torch.long
    for b in range(shape.B):
        for h in range(shape.H):
            for n in range(shape.N):
                scores = [float(q[b, h, n] / q[b, h, n].norm() @ mu[h, m]) for m in range(clusters)]
                assert int(c[b, h, n]) == scores.index(max(scores))


@settings(max_examples=25, deadline=None)
@given(shape=shapes(max_b=2, max_h=2, max_n=24), seed=seeds, clusters=st.integers(1, 6),
       causal=st.booleans())
def test_given_centroids_give_dense_attention_under_the_same_cluster_mask(shape, seed, clusters, causal):
    q, k, v = make_qkv(shape, seed)
    mu = unit_centroids(shape.H, clusters, shape.D, seed)
    cq, ck = route(q, mu), route(k, mu)
    mask = torch.zeros(shape.B, shape.H, shape.N, shape.M, dtype=torch.bool)
    for i in range(shape.N):
        for j in range(shape.M):
            mask[:, :, i, j] = (cq[:, :, i] == ck[:, :, j]) & (j <= i or not causal)
    expected = dense_attention(q, k, v, mask=mask)
    out = routing(q, k, v, clusters=clusters, centroids=mu, causal=causal, seed=seed, iters=99)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(routing_reference(q, k, v, clusters=clusters, centroids=mu, causal=causal),
                               expected, atol=1e-12, rtol=1e-10)


@settings(max_examples=20, deadline=None)
@given(shape=shapes(max_b=2, max_h=2, max_n=30), seed=seeds, clusters=st.integers(1, 6),
       causal=st.booleans(), balanced=st.booleans())
def test_routing_equals_its_reference_with_kmeans(shape, seed, clusters, causal, balanced):
    q, k, v = make_qkv(shape, seed)
    clusters = min(clusters, shape.B * (shape.N + shape.M))
    kw = dict(clusters=clusters, iters=3, seed=seed % 1000, causal=causal, balanced=balanced)
    out = routing(q, k, v, **kw)
    assert out.shape == (shape.B, shape.H, shape.N, shape.Dv) and torch.isfinite(out).all()
    torch.testing.assert_close(out, routing_reference(q, k, v, **kw), atol=1e-12, rtol=1e-10)


def balanced_by_hand(q, k, v, mu, causal):
    """Each centroid: its top-w queries and keys; attend within; average over the centroids."""
    B, H, N, D = q.shape
    M, C = k.shape[-2], mu.shape[1]
    wq, wk = math.ceil(N / C), math.ceil(M / C)
    out = torch.zeros(B, H, N, v.shape[-1], dtype=q.dtype)
    for b in range(B):
        for h in range(H):
            total, picks = torch.zeros_like(out[b, h]), [0] * N
            for m in range(C):
                sq = [float(q[b, h, i] / q[b, h, i].norm() @ mu[h, m]) for i in range(N)]
                sk = [float(k[b, h, j] / k[b, h, j].norm() @ mu[h, m]) for j in range(M)]
                top_q = sorted(range(N), key=lambda i: -sq[i])[:wq]
                top_k = sorted(range(M), key=lambda j: -sk[j])[:wk]
                for i in top_q:
                    keys = [j for j in top_k if j <= i or not causal]
                    picks[i] += 1
                    if keys:
                        s = (k[b, h, keys] @ q[b, h, i]) / math.sqrt(D)
                        total[i] += torch.softmax(s, dim=0) @ v[b, h, keys]
            out[b, h] = total / torch.tensor(picks, dtype=q.dtype).clamp_min(1).unsqueeze(-1)
    return out


@pytest.mark.parametrize("N, M, C, causal", [(16, 16, 4, False), (16, 16, 4, True), (13, 13, 3, False),
                                              (13, 13, 3, True), (10, 17, 4, False), (9, 9, 9, True)])
def test_balanced_routing_matches_a_by_hand_loop(N, M, C, causal):
    q, k, v = fresh_qkv(B=2, H=2, N=N, M=M, D=4)
    mu = unit_centroids(2, C, 4, seed=N + C)
    out = routing(q, k, v, clusters=C, centroids=mu, balanced=True, causal=causal)
    torch.testing.assert_close(out, balanced_by_hand(q, k, v, mu, causal), atol=1e-12, rtol=1e-10)


def test_causal_routing_ignores_the_future():
    q, k, v = fresh_qkv(N=40)
    mu = unit_centroids(3, 4, 5, seed=1)
    out = routing(q, k, v, clusters=4, centroids=mu, causal=True)
    k2, v2, q2 = k.clone(), v.clone(), q.clone()
    for t in (k2, v2, q2):
        t[:, :, 25:] = torch.randn_like(t[:, :, 25:])
    torch.testing.assert_close(routing(q2, k2, v2, clusters=4, centroids=mu, causal=True)[:, :, :25],
                               out[:, :, :25], atol=1e-12, rtol=0)


def test_a_query_whose_cluster_has_no_key_gets_a_zero_row():
    q, k, v = fresh_qkv(B=1, H=1, N=10, D=2)
    mu = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]], dtype=torch.float64)  # (1, 2, 2): sign of x₀
    k[..., 0] = k[..., 0].abs() + 0.1  # every key in cluster 0
    q[..., 0] = q[..., 0].abs() + 0.1
    q[..., [2, 6], 0] *= -1  # these queries go to cluster 1, where there is no key
    for balanced in (False, True):
        out = routing(q, k, v, clusters=2, centroids=mu, balanced=balanced)
        assert torch.isfinite(out).all()
        if not balanced:
            assert torch.equal(out[0, 0, [2, 6]], torch.zeros(2, 2, dtype=torch.float64))


def test_exact_path_memory_follows_the_largest_cluster():
    B, H, N, D, C = 1, 2, 1024, 16, 16
    q, k, v = fresh_qkv(B=B, H=H, N=N, D=D, dtype=torch.float32)
    mu = unit_centroids(H, C, D, seed=0).float()
    cap = max(int(torch.bincount(c.flatten(), minlength=C).max())
              for x in (q, k) for c in route(x, mu).unbind(1))
    big = largest_intermediate(routing, q, k, v, clusters=C, centroids=mu)
    assert big.numel <= B * H * C * cap * cap and big.numel * 4 <= B * H * N * N, (big, cap)
    w = N // C
    big = largest_intermediate(routing, q, k, v, clusters=C, centroids=mu, balanced=True)
    assert big.numel <= max(B * H * C * w * w, B * H * C * N), big  # scores (C, w, w), centroid scores (C, N)


def test_registry_entry():
    variant = VARIANTS["routing"]
    assert variant.family == "content-based" and variant.reference is routing_reference
    assert variant.example_kwargs == {"clusters": 4, "iters": 3, "seed": 0}


@pytest.mark.parametrize("call, message", [
    (lambda q, k, v: routing(q, k, v, clusters=0), "clusters must be >= 1"),
    (lambda q, k, v: routing(q, k, v, clusters=-2, balanced=True), "clusters must be >= 1"),
    (lambda q, k, v: routing(q, k, v, clusters=3, centroids=torch.zeros(3, 4, 5, dtype=q.dtype)), "centroids"),
    (lambda q, k, v: routing(q, k, v, clusters=500), "at least as many points"),
    (lambda q, k, v: spherical_kmeans(q, 2, iters=-1), "iters"),
])
def test_bad_arguments_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call(*fresh_qkv(N=10, D=5))
