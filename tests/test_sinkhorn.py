"""Sparse Sinkhorn attention: the normalisation converges to a doubly stochastic matrix (and to a
permutation as the temperature falls), the block path equals its dense form, a hard permutation
gives dense attention under the block mask (built here by a loop), SortCut, causality, padding,
and memory O(N·block)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnkit import VARIANTS, dense_attention, largest_intermediate
from attnkit.sinkhorn import block_logits, sinkhorn, sinkhorn_normalise, sinkhorn_reference
from strategies import Shape, fresh_qkv, make_qkv, seeds

CASES = [
    {"block": 8},
    {"block": 5, "causal": True},
    {"block": 7, "iters": 3, "temperature": 0.3},
    {"block": 6, "scale": 0.3, "iters": 0},
    {"block": 64},  # one block (N <= 64): the sorted block is empty
    {"block": 1},
    {"block": 8, "sortcut": 1},
    {"block": 4, "sortcut": 3, "temperature": 2.0},
]


# every case at N = 1, 37, 64, except a sortcut longer than the number of blocks (an error, tested below)
@pytest.mark.parametrize("kwargs, N", [(kw, N) for kw in CASES for N in (1, 37, 64)
                                       if kw.get("sortcut", 0) <= -(-N // kw["block"])])
def test_block_path_equals_its_dense_form(kwargs, N):
    q, k, v = fresh_qkv(N=N, Dv=3)
    out = sinkhorn(q, k, v, **kwargs)
    assert out.shape == (2, 3, N, 3) and out.dtype == torch.float64 and torch.isfinite(out).all()
    torch.testing.assert_close(out, sinkhorn_reference(q, k, v, **kwargs), atol=1e-10, rtol=1e-8)


def test_given_logits_and_gradients_match_the_dense_form():
    q, k, v = (x.requires_grad_() for x in fresh_qkv(N=19, D=4))
    logits = torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    for kw in ({"block": 4, "logits": logits}, {"block": 4, "causal": True}, {"block": 4, "sortcut": 2}):
        got = torch.autograd.grad(sinkhorn(q, k, v, **kw).sum(), (q, k, v))
        exp = torch.autograd.grad(sinkhorn_reference(q, k, v, **kw).sum(), (q, k, v))
        for a, b in zip(got, exp):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)
    shared = torch.randn(5, 5, dtype=torch.float64)  # (nb, nb): one matrix for every head
    for kw in ({}, {"causal": True}, {"sortcut": 3}):
        torch.testing.assert_close(sinkhorn(q, k, v, block=4, logits=shared, **kw),
                                   sinkhorn_reference(q, k, v, block=4, logits=shared, **kw))
    g1 = torch.autograd.grad(sinkhorn(q, k, v, block=4, logits=logits).sum(), logits)[0]
    g2 = torch.autograd.grad(sinkhorn_reference(q, k, v, block=4, logits=logits).sum(), logits)[0]
    torch.testing.assert_close(g1, g2, atol=1e-10, rtol=1e-8)


# ---------------------------------------------------------------- Sinkhorn normalisation

def test_columns_sum_to_one_and_rows_converge_with_iters():
    logits = torch.randn(4, 7, 7, dtype=torch.float64) * 2
    row_err = []
    for iters in (1, 3, 10, 30, 100):
        P = sinkhorn_normalise(logits, iters=iters, temperature=1.0)
        assert (P >= 0).all()
        torch.testing.assert_close(P.sum(-2), torch.ones(4, 7, dtype=torch.float64), atol=1e-12, rtol=0)
        row_err.append((P.sum(-1) - 1).abs().max().item())
    assert all(b < a for a, b in zip(row_err, row_err[1:])), row_err
    assert row_err[-1] < 1e-8 < row_err[0], row_err


def test_low_temperature_tends_to_the_permutation_of_a_clear_logits_matrix():
    n = 6
    perm = torch.tensor([3, 0, 5, 1, 2, 4])
    hard = torch.zeros(n, n, dtype=torch.float64)
    hard[torch.arange(n), perm] = 1
    logits = 2 * hard + 0.3 * torch.randn(n, n, dtype=torch.float64)  # the permutation clearly wins
    dist = [(sinkhorn_normalise(logits, iters=50, temperature=t) - hard).abs().max().item()
            for t in (2.0, 0.5, 0.2, 0.05)]
    assert all(b < a for a, b in zip(dist, dist[1:])), dist
    assert dist[-1] < 1e-6, dist
    assert sinkhorn_normalise(logits, iters=50, temperature=0.05).argmax(-1).equal(perm)


def test_minus_infinity_logits_give_an_exact_permutation():
    perm = torch.tensor([1, 2, 0, 3])
    logits = torch.full((4, 4), float("-inf"), dtype=torch.float64)
    logits[torch.arange(4), perm] = 0.0
    P = sinkhorn_normalise(logits)
    expected = torch.zeros(4, 4, dtype=torch.float64)
    expected[torch.arange(4), perm] = 1
    assert torch.equal(P, expected)


def test_block_logits_are_products_of_block_means():
    q, k, _ = fresh_qkv(B=1, H=2, N=13, D=4)
    got = block_logits(q, k, 5, scale=0.7)  # blocks [0, 5), [5, 10), [10, 13): the last has 3
    assert got.shape == (1, 2, 3, 3)
    bounds = [(0, 5), (5, 10), (10, 13)]
    for i, (a, b) in enumerate(bounds):
        for m, (c, d) in enumerate(bounds):
            want = (q[..., a:b, :].mean(-2) * k[..., c:d, :].mean(-2)).sum(-1) * 0.7
            torch.testing.assert_close(got[..., i, m], want)


# ---------------------------------------------------------------- hard permutations

def _perm_logits(perm, B=2, H=3, *, finite=False):
    nb = len(perm)
    hard = torch.zeros(nb, nb, dtype=torch.bool)
    hard[torch.arange(nb), torch.tensor(perm)] = True
    if finite:  # large finite logits at the permutation: P is hard to ~e^-400
        return (20.0 * hard.to(torch.float64)).expand(B, H, nb, nb)
    return torch.zeros(nb, nb, dtype=torch.float64).masked_fill(~hard, float("-inf")).expand(B, H, nb, nb)


def _block_mask(N, block, perm, causal, *, sortcut=None):
    """Query i may attend key j: its own block (j <= i if causal) or the block π(⌊i/b⌋) when that
    is another (and, causal, an earlier) block; with SortCut the blocks π(0..k-1) for every i."""
    mask = torch.zeros(N, N, dtype=torch.bool)
    for i in range(N):
        for j in range(N):
            bi, bj = i // block, j // block
            if sortcut is not None:
                mask[i, j] = bj in perm[:sortcut]
                continue
            own = bj == bi and (j <= i or not causal)
            other = bj == perm[bi] and perm[bi] != bi and (perm[bi] < bi or not causal)
            mask[i, j] = own or other
    return mask


PERMS = {"derangement": [2, 0, 1, 4, 3], "fixed points": [0, 3, 2, 1, 4], "identity": [0, 1, 2, 3, 4],
         "reverse": [4, 3, 2, 1, 0]}


@pytest.mark.parametrize("N", [40, 37])  # 37: the last of 5 blocks is padded
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("perm", list(PERMS), ids=list(PERMS))
def test_a_hard_permutation_gives_dense_attention_under_the_block_mask(perm, causal, N):
    perm = PERMS[perm]
    q, k, v = fresh_qkv(N=N, Dv=4)
    expected = dense_attention(q, k, v, mask=_block_mask(N, 8, perm, causal))
    for finite in (False, True):
        logits = _perm_logits(perm, finite=finite)
        out = sinkhorn(q, k, v, block=8, logits=logits, temperature=0.05, causal=causal)
        torch.testing.assert_close(out, expected, atol=1e-10, rtol=1e-8)
        torch.testing.assert_close(sinkhorn_reference(q, k, v, block=8, logits=logits, temperature=0.05,
                                                      causal=causal), expected, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("N", [40, 37])
@pytest.mark.parametrize("sortcut", [1, 2, 5])
def test_sortcut_with_a_hard_permutation_attends_the_first_sorted_blocks(sortcut, N):
    perm = PERMS["derangement"]
    q, k, v = fresh_qkv(N=N, Dv=4)
    out = sinkhorn(q, k, v, block=8, logits=_perm_logits(perm), sortcut=sortcut)
    expected = dense_attention(q, k, v, mask=_block_mask(N, 8, perm, False, sortcut=sortcut))
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=1e-8)


def test_sortcut_is_the_first_rows_of_p_times_the_key_blocks_when_rows_sum_to_one():
    q, k, v = fresh_qkv(B=1, H=2, N=32, D=4)
    logits = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    P = sinkhorn_normalise(logits, iters=200, temperature=1.0)  # rows and columns sum to 1
    ks = (P[..., :2, :] @ k.reshape(1, 2, 4, 32)).reshape(1, 2, 16, 4)  # (P @ K_blocks)[:2]
    vs = (P[..., :2, :] @ v.reshape(1, 2, 4, 32)).reshape(1, 2, 16, 4)
    out = sinkhorn(q, k, v, block=8, logits=logits, iters=200, temperature=1.0, sortcut=2)
    torch.testing.assert_close(out, dense_attention(q, ks, vs), atol=1e-10, rtol=1e-8)


# ---------------------------------------------------------------- causality, padding, memory

def test_causal_with_given_logits_ignores_the_future():
    q, k, v = fresh_qkv(N=40)
    logits = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    out = sinkhorn(q, k, v, block=8, logits=logits, causal=True)
    t = 21  # inside block 2
    q2, k2, v2 = (x.clone() for x in (q, k, v))
    for x in (q2, k2, v2):
        x[:, :, t + 1:] = torch.randn_like(x[:, :, t + 1:]) * 3
    out2 = sinkhorn(q2, k2, v2, block=8, logits=logits, causal=True)
    torch.testing.assert_close(out2[:, :, :t + 1], out[:, :, :t + 1], atol=1e-12, rtol=0)
    assert not torch.allclose(out2[:, :, t + 1:], out[:, :, t + 1:]), "the future should change"


def test_padded_keys_are_never_attended():
    """N = 37 with block 8: the padded keys of the last block would be zeros with score 0; a value
    trick shows they get no weight: with v = 1 every output row is exactly 1."""
    q, k, _ = fresh_qkv(N=37)
    ones = torch.ones(2, 3, 37, 2, dtype=torch.float64)
    for kw in ({}, {"causal": True}, {"sortcut": 2}, {"logits": _perm_logits([4, 3, 2, 1, 0])}):
        torch.testing.assert_close(sinkhorn(q, k, ones, block=8, **kw), ones, atol=1e-12, rtol=0)


def test_largest_intermediate_is_linear_in_N_times_block():
    B, H, N, D, block = 1, 2, 1024, 16, 16
    q, k, v = fresh_qkv(B=B, H=H, N=N, D=D, dtype=torch.float32)
    for kw in ({}, {"causal": True}):
        biggest = largest_intermediate(sinkhorn, q, k, v, block=block, **kw)
        assert biggest.numel <= 2 * B * H * N * block, (kw, biggest)  # the (nb, b, 2b) scores
    sortcut = largest_intermediate(sinkhorn, q, k, v, block=block, sortcut=2)
    assert sortcut.numel <= B * H * N * 2 * block, sortcut  # dense: B·H·N² = 32x more


def test_bad_arguments_raise():
    q, k, v = fresh_qkv(N=16)
    calls = [
        lambda: sinkhorn(q, k[:, :, :8], v[:, :, :8], block=4),  # M != N
        lambda: sinkhorn(q, k, v, block=0),
        lambda: sinkhorn(q, k, v, block=4, sortcut=2, causal=True),
        lambda: sinkhorn(q, k, v, block=4, sortcut=5),  # only 4 blocks
        lambda: sinkhorn(q, k, v, block=4, logits=torch.zeros(3, 3)),
        lambda: sinkhorn(q[0], k[0], v[0], block=4),  # (H, N, D): no batch
        lambda: sinkhorn_normalise(torch.zeros(3, 3), temperature=0.0),
    ]
    for call in calls:
        with pytest.raises(ValueError):
            call()
    with pytest.raises(ValueError, match="nb = ⌈N/block⌉ = 4"):
        sinkhorn(q, k, v, block=4, logits=torch.zeros(5, 5))


def test_registry_entry():
    variant = VARIANTS["sinkhorn"]
    assert variant.family == "content-based" and variant.reference is sinkhorn_reference
    assert variant.example_kwargs == {"block": 8}


@settings(max_examples=30, deadline=None)
@given(seed=seeds, N=st.integers(1, 40), block=st.integers(1, 9), causal=st.booleans(),
       iters=st.integers(0, 10), temperature=st.floats(0.2, 2.0), data=st.data())
def test_random_settings_and_random_hard_permutations(seed, N, block, causal, iters, temperature, data):
    """Any N, block, causal flag and Sinkhorn settings: the block path equals its dense form; and a
    random hard permutation (as -inf logits) gives dense attention under the loop-built block mask."""
    nb = -(-N // block)
    q, k, v = make_qkv(Shape(1, 2, N, N, 3, 2), seed)
    kw = dict(block=block, causal=causal, iters=iters, temperature=temperature)
    torch.testing.assert_close(sinkhorn(q, k, v, **kw), sinkhorn_reference(q, k, v, **kw), atol=1e-10, rtol=1e-8)
    perm = data.draw(st.permutations(range(nb)))
    out = sinkhorn(q, k, v, block=block, causal=causal, logits=_perm_logits(perm, B=1, H=2))
    expected = dense_attention(q, k, v, mask=_block_mask(N, block, perm, causal))
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=1e-8)
