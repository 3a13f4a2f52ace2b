"""LSH attention (Reformer): the hash is the argmax definition, the exact mode is dense attention
under a mask built by hand, the sort-and-chunk path equals its dense reference (and, for one
round, a by-hand sort-and-chunk mask), chunk >= N is the exact mode, memory is O(N·chunk), and
the collision probability of one hyperplane is 1 - θ/π."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnkit import VARIANTS, dense_attention, largest_intermediate
from attnkit.lsh import (collision_probability, hash_vectors, lsh, lsh_mask, lsh_reference,
                         measured_collision, random_rotations)
from strategies import fresh_qkv, make_qkv, seeds, shapes

bucket_counts = st.sampled_from([2, 4, 6, 8])


def hash_by_hand(x: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """h_r(x) = argmax([x̂ R_r, -x̂ R_r]), one row and one round at a time."""
    rows = x.reshape(-1, x.shape[-1])
    out = torch.empty(R.shape[0], rows.shape[0], dtype=torch.long)
    for r in range(R.shape[0]):
        for n, row in enumerate(rows):
            p = (row / row.norm()) @ R[r]  # (b/2,)
            out[r, n] = int(torch.cat([p, -p]).argmax())
    return out.view(R.shape[0], *x.shape[:-1])


def mask_by_hand(hq, hk, *, causal=False, shared_qk=False):
    """(B, H, N, M): same bucket in some round, j <= i if causal; shared-QK self rule."""
    R, B, H, N = hq.shape
    M = hk.shape[-1]
    mask = torch.zeros(B, H, N, M, dtype=torch.bool)
    for b in range(B):
        for h in range(H):
            for i in range(N):
                for j in range(M):
                    mask[b, h, i, j] = any(hq[r, b, h, i] == hk[r, b, h, j] for r in range(R)) \
                        and (j <= i or not causal)
                if shared_qk:
                    others = [j for j in range(M) if j != i and mask[b, h, i, j]]
                    mask[b, h, i, i] = bool(mask[b, h, i, i]) and not others
    return mask


def chunk_mask_by_hand(hq, hk, c, *, causal=False, shared_qk=False):
    """One round: sort by (bucket, position), chunks of c, own + previous chunk, same bucket."""
    _, B, H, N = hq.shape
    mask = torch.zeros(B, H, N, N, dtype=torch.bool)
    for b in range(B):
        for h in range(H):
            q_order = sorted(range(N), key=lambda i: (int(hq[0, b, h, i]), i))
            k_order = sorted(range(N), key=lambda j: (int(hk[0, b, h, j]), j))
            q_chunk = {i: s // c for s, i in enumerate(q_order)}
            k_chunk = {j: s // c for s, j in enumerate(k_order)}
            for i in range(N):
                for j in range(N):
                    mask[b, h, i, j] = (hq[0, b, h, i] == hk[0, b, h, j]
                                        and k_chunk[j] in (q_chunk[i], q_chunk[i] - 1)
                                        and (j <= i or not causal))
                if shared_qk:
                    others = [j for j in range(N) if j != i and mask[b, h, i, j]]
                    mask[b, h, i, i] = bool(mask[b, h, i, i]) and not others
    return mask


@settings(max_examples=25, deadline=None)
@given(shape=shapes(max_n=10), seed=seeds, buckets=bucket_counts, rounds=st.integers(1, 3))
def test_hash_is_the_argmax_definition(shape, seed, buckets, rounds):
    q, _, _ = make_qkv(shape, seed)
    R = random_rotations(shape.D, buckets, rounds, seed=seed % 1000, dtype=torch.float64)
    assert R.shape == (rounds, shape.D, buckets // 2)
    h = hash_vectors(q, R)
    assert h.shape == (rounds, shape.B, shape.H, shape.N) and h.dtype == torch.long
    assert torch.equal(h, hash_by_hand(q, R))
    assert torch.equal(hash_vectors(3.7 * q, R), h)  # only the direction matters


def test_random_rotations_are_reproducible_gaussians():
    R = random_rotations(64, 16, 4, seed=3, dtype=torch.float64)
    assert torch.equal(R, random_rotations(64, 16, 4, seed=3, dtype=torch.float64))
    assert not torch.equal(R, random_rotations(64, 16, 4, seed=4, dtype=torch.float64))
    assert abs(R.mean().item()) < 0.05 and abs(R.var().item() - 1) < 0.05
    assert random_rotations(8, 4).dtype == torch.float32  # float64 draw, then cast
    torch.testing.assert_close(random_rotations(8, 4, seed=1),
                               random_rotations(8, 4, seed=1, dtype=torch.float64).float())


@settings(max_examples=20, deadline=None)
@given(shape=shapes(max_b=2, max_h=2, max_n=9), seed=seeds, buckets=bucket_counts,
       rounds=st.integers(1, 3), causal=st.booleans())
def test_exact_mode_is_dense_attention_under_the_bucket_mask(shape, seed, buckets, rounds, causal):
    q, k, v = make_qkv(shape, seed)
    R = random_rotations(shape.D, buckets, rounds, seed=seed, dtype=torch.float64)
    mask = mask_by_hand(hash_by_hand(q, R), hash_by_hand(k, R), causal=causal)
    assert torch.equal(lsh_mask(q, k, buckets=buckets, rotations=R, causal=causal), mask)
    expected = dense_attention(q, k, v, mask=mask)
    for fn in (lsh, lsh_reference):
        torch.testing.assert_close(fn(q, k, v, buckets=buckets, rotations=R, causal=causal), expected,
                                   atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("rounds", [1, 3])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("chunk", [41, 1000])
def test_one_chunk_is_the_exact_mode(rounds, causal, chunk):
    """chunk >= N: every round sees its whole bucket, duplicates counted once: the exact mode."""
    q, k, v = fresh_qkv(N=41, D=6)
    kw = dict(buckets=4, rounds=rounds, seed=5, causal=causal)
    exact = lsh(q, k, v, **kw)
    torch.testing.assert_close(lsh(q, k, v, chunk=chunk, **kw), exact, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(lsh_reference(q, k, v, chunk=chunk, **kw), exact, atol=1e-12, rtol=1e-10)
    q1, k1, v1 = fresh_qkv(N=20, M=33, D=6)  # one chunk also serves N != M
    torch.testing.assert_close(lsh(q1, k1, v1, chunk=33, **kw), lsh(q1, k1, v1, **kw), atol=1e-12, rtol=1e-10)
    kw["rounds"] = 1  # shared-QK: the same with one round (the self rule is per round)
    torch.testing.assert_close(lsh(q, k, v, chunk=chunk, shared_qk=True, **kw),
                               lsh(q, k, v, shared_qk=True, **kw), atol=1e-12, rtol=1e-10)


@settings(max_examples=30, deadline=None)
@given(seed=seeds, N=st.integers(1, 40), chunk=st.integers(1, 12), buckets=bucket_counts,
       rounds=st.integers(1, 3), causal=st.booleans(), shared_qk=st.booleans())
def test_chunked_path_equals_its_dense_reference(seed, N, chunk, buckets, rounds, causal, shared_qk):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, 2, N, 5, generator=g, dtype=torch.float64) for _ in range(3))
    kw = dict(buckets=buckets, rounds=rounds, seed=seed % 97, chunk=chunk, causal=causal, shared_qk=shared_qk)
    out = lsh(q, k, v, **kw)
    assert out.shape == (2, 2, N, 5) and torch.isfinite(out).all()
    torch.testing.assert_close(out, lsh_reference(q, k, v, **kw), atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("N, chunk", [(23, 4), (30, 5), (17, 16)])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shared_qk", [False, True])
def test_one_round_chunked_is_dense_attention_under_a_hand_built_chunk_mask(N, chunk, causal, shared_qk):
    q, k, v = fresh_qkv(B=2, H=2, N=N, D=4)
    R = random_rotations(4, 4, 1, seed=2, dtype=torch.float64)
    keys = torch.nn.functional.normalize(q, dim=-1) if shared_qk else k
    mask = chunk_mask_by_hand(hash_by_hand(q, R), hash_by_hand(keys, R), chunk, causal=causal,
                              shared_qk=shared_qk)
    out = lsh(q, k, v, buckets=4, rotations=R, chunk=chunk, causal=causal, shared_qk=shared_qk)
    torch.testing.assert_close(out, dense_attention(q, keys, v, mask=mask), atol=1e-12, rtol=1e-10)


def _sign_rotation(D: int) -> torch.Tensor:
    """Two buckets split by the sign of the first coordinate: bucket 0 iff x₀ >= 0."""
    R = torch.zeros(1, D, 1, dtype=torch.float64)
    R[0, 0, 0] = 1.0
    return R


@pytest.mark.parametrize("chunk", [None, 4, 64])
def test_a_query_with_no_key_in_its_bucket_gets_a_zero_row(chunk):
    q, k, v = fresh_qkv(B=1, H=2, N=24, D=4)
    k[..., 0] = k[..., 0].abs() + 0.1  # every key in bucket 0
    q[..., 0] = q[..., 0].abs() + 0.1
    lonely = [3, 10, 17]
    q[..., lonely, 0] *= -1  # these queries fall in bucket 1
    q[:, :, 5] = 0.0  # a zero query: bucket 0, scores 0, no NaN
    q.requires_grad_(True)
    out = lsh(q, k, v, buckets=2, rotations=_sign_rotation(4), chunk=chunk)
    assert torch.equal(out[:, :, lonely], torch.zeros_like(out[:, :, lonely]))
    assert torch.isfinite(out).all() and out[:, :, [0, 1, 2]].abs().sum() > 0
    out.sum().backward()
    assert torch.isfinite(q.grad).all()


@pytest.mark.parametrize("chunk", [None, 4])
def test_shared_qk_attends_to_itself_only_when_alone(chunk):
    """Keys are q̂; a token sees itself only when no other token shares its bucket."""
    q, _, v = fresh_qkv(B=1, H=1, N=12, D=3)
    q[..., 0] = q[..., 0].abs() + 0.1
    q[..., 7, 0] = -1.0  # alone in bucket 1
    R = _sign_rotation(3)
    mask = lsh_mask(q, None, buckets=2, rotations=R, shared_qk=True)
    assert mask[0, 0, 7].tolist() == [j == 7 for j in range(12)]
    diag = torch.diagonal(mask[0, 0])
    assert not diag[[i for i in range(12) if i != 7]].any()
    out = lsh(q, None, v, buckets=2, rotations=R, chunk=chunk, shared_qk=True)
    torch.testing.assert_close(out[0, 0, 7], v[0, 0, 7])
    if chunk is not None:
        h = hash_by_hand(q, R)
        mask = chunk_mask_by_hand(h, h, chunk, shared_qk=True)
        assert not torch.diagonal(mask[0, 0])[[i for i in range(12) if i != 7]].any()
    torch.testing.assert_close(out, dense_attention(q, torch.nn.functional.normalize(q, dim=-1), v, mask=mask),
                               atol=1e-12, rtol=1e-10)


def test_exact_causal_mode_ignores_the_future():
    q, k, v = fresh_qkv(N=30)
    kw = dict(buckets=4, rounds=2, seed=1, causal=True)
    out = lsh(q, k, v, **kw)
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    k2[:, :, 20:] = torch.randn_like(k2[:, :, 20:])
    v2[:, :, 20:] = torch.randn_like(v2[:, :, 20:])
    q2[:, :, 20:] = torch.randn_like(q2[:, :, 20:])
    torch.testing.assert_close(lsh(q2, k2, v2, **kw)[:, :, :20], out[:, :, :20], atol=1e-12, rtol=0)


def test_chunked_memory_is_N_times_chunk_not_N_squared():
    B, H, N, D, chunk, rounds = 1, 2, 2048, 16, 32, 2
    q, k, v = fresh_qkv(B=B, H=H, N=N, D=D, dtype=torch.float32)
    big = largest_intermediate(lsh, q, k, v, buckets=16, rounds=rounds, chunk=chunk)
    assert big.numel <= B * H * rounds * N * 2 * chunk, big
    assert big.numel * 8 <= B * H * N * N, big


@pytest.mark.parametrize("theta", [0.2, 1.0, 2.0, 3.0])
def test_one_hyperplane_collides_with_probability_one_minus_theta_over_pi(theta):
    """A statistical check: 4000 trials, 4.5 standard deviations (false failure ~ 7e-6)."""
    p = collision_probability(theta, buckets=2)
    assert p == pytest.approx(1 - theta / math.pi)
    trials = 4000
    measured = measured_collision(theta, D=16, buckets=2, trials=trials, seed=int(theta * 100))
    assert abs(measured - p) <= 4.5 * math.sqrt(p * (1 - p) / trials) + 1e-9, (measured, p)
    # the same through hash_vectors on random pairs at angle θ in random directions
    g = torch.Generator().manual_seed(11)
    x = torch.nn.functional.normalize(torch.randn(trials, 16, generator=g, dtype=torch.float64), dim=-1)
    u = torch.randn(trials, 16, generator=g, dtype=torch.float64)
    u = torch.nn.functional.normalize(u - (u * x).sum(-1, keepdim=True) * x, dim=-1)  # ⟂ x
    y = math.cos(theta) * x + math.sin(theta) * u
    R = random_rotations(16, 2, 1, seed=12, dtype=torch.float64)
    rate = (hash_vectors(x, R) == hash_vectors(y, R)).double().mean().item()  # one R, many pairs
    assert abs(rate - p) <= 4.5 * math.sqrt(p * (1 - p) / trials) + 1e-9, (rate, p)


def test_more_buckets_collide_less_and_fall_with_the_angle():
    rates = [collision_probability(t, buckets=8, D=16, trials=3000, seed=1) for t in (0.1, 0.8, 1.6, 2.8)]
    assert rates == sorted(rates, reverse=True) and rates[0] > 0.8 and rates[-1] < 0.05, rates
    assert collision_probability(1.0, buckets=8, D=16, trials=3000) < collision_probability(1.0, buckets=2)


def test_registry_entry():
    variant = VARIANTS["lsh"]
    assert variant.family == "content-based" and variant.reference is lsh_reference
    assert variant.example_kwargs == {"buckets": 4, "rounds": 2, "chunk": 16, "seed": 0}


@pytest.mark.parametrize("call, message", [
    (lambda q, k, v: lsh(q, k, v, buckets=3), "even"),
    (lambda q, k, v: lsh(q, k, v, buckets=0, chunk=4), "even"),
    (lambda q, k, v: lsh(q, k[:, :, :7], v[:, :, :7], buckets=4, chunk=4), "as many keys as queries"),
    (lambda q, k, v: lsh(q, k, v, buckets=4, chunk=0), "chunk must be >= 1"),
    (lambda q, k, v: lsh(q, k, v, buckets=4, rounds=0), "rounds"),
    (lambda q, k, v: lsh(q, k, v, buckets=4, rotations=torch.zeros(1, 5, 1, dtype=q.dtype)), "rotations"),
    (lambda q, k, v: lsh(q, k, v[:, :, :5], buckets=4), "one row per key"),
    (lambda q, k, v: random_rotations(8, 5), "even"),
])
def test_bad_arguments_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call(*fresh_qkv(N=10, D=5))
