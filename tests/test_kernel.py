"""Kernel attention: fast forms equal their dense forms, causal forms ignore the future, the RNN
form equals the chunked one, random features are unbiased (and the check has power), orthogonal
features beat iid ones, and the costs are linear in N."""
from __future__ import annotations

import math

import pytest
import torch

from attnkit import VARIANTS, count_flops, dense_attention, largest_intermediate
from attnkit.kernel import (RandomFeatures, _key_splits, _performer_setup, efficient,
                            efficient_reference, elu_features, favor_two_softmax, gaussian_features,
                            kernel_attention, linear, linear_recurrent, linear_reference,
                            orthogonal_gaussian, performer, performer_reference, positive_features,
                            softmax_biased, trig_features)
from strategies import fresh_qkv


CASES = [
    (linear, linear_reference, {}),
    (linear, linear_reference, {"causal": True}),
    (linear, linear_reference, {"causal": True, "chunk": 5}),
    (linear, linear_reference, {"causal": True, "chunk": 1}),
    (linear, linear_reference, {"causal": True, "chunk": 100}),
    (linear, linear_reference, {"feature_map": lambda x: torch.relu(x) + 0.1}),
    (efficient, efficient_reference, {}),
    (performer, performer_reference, {"m": 16, "seed": 3}),
    (performer, performer_reference, {"m": 24, "seed": 1, "orthogonal": False}),
    (performer, performer_reference, {"m": 12, "kind": "trig", "seed": 2}),
    (performer, performer_reference, {"m": 16, "causal": True, "chunk": 7}),
    (performer, performer_reference, {"m": 8, "kind": "trig", "causal": True, "chunk": 4}),
    (performer, performer_reference, {"m": 16, "scale": 0.2}),
]


@pytest.mark.parametrize("N", [1, 37, 64])
@pytest.mark.parametrize("fn, reference, kwargs", CASES)
def test_fast_form_equals_its_dense_form(fn, reference, kwargs, N):
    causal = kwargs.get("causal", False)
    q, k, v = fresh_qkv(N=N, M=None if causal else N + 5, Dv=3)
    out = fn(q, k, v, **kwargs)
    assert out.shape == (2, 3, N, 3) and out.dtype == torch.float64
    torch.testing.assert_close(out, reference(q, k, v, **kwargs), atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("fn, kwargs", [(linear, {"causal": True, "chunk": 8}),
                                        (performer, {"m": 16, "causal": True, "chunk": 8}),
                                        (performer, {"m": 16, "kind": "trig", "causal": True})])
def test_causal_forms_ignore_the_future(fn, kwargs):
    q, k, v = fresh_qkv(N=40)
    out = fn(q, k, v, **kwargs)
    t = 21
    q2, k2, v2 = (x.clone() for x in (q, k, v))
    for x in (q2, k2, v2):
        x[:, :, t + 1:] = torch.randn_like(x[:, :, t + 1:]) * 3
    out2 = fn(q2, k2, v2, **kwargs)
    torch.testing.assert_close(out2[:, :, :t + 1], out[:, :, :t + 1], atol=1e-12, rtol=0)
    assert not torch.allclose(out2[:, :, t + 1:], out[:, :, t + 1:]), "the future should change"


def test_recurrent_form_equals_the_parallel_causal_form_and_carries_state():
    q, k, v = fresh_qkv(N=30, Dv=4)
    parallel = linear(q, k, v, causal=True, chunk=7)
    torch.testing.assert_close(linear_recurrent(q, k, v), parallel, atol=1e-12, rtol=1e-10)
    first, state = linear_recurrent(q[:, :, :11], k[:, :, :11], v[:, :, :11], return_state=True)
    rest = linear_recurrent(q[:, :, 11:], k[:, :, 11:], v[:, :, 11:], state=state)
    torch.testing.assert_close(torch.cat([first, rest], dim=2), parallel, atol=1e-12, rtol=1e-10)
    assert state[0].shape == (2, 3, 5, 4) and state[1].shape == (2, 3, 5)


def test_gradients_of_chunked_causal_form_match_the_reference():
    q, k, v = (x.requires_grad_() for x in fresh_qkv(N=19, D=4))
    for fn, ref, kw in [(linear, linear_reference, {"causal": True, "chunk": 6}),
                        (performer, performer_reference, {"m": 8, "causal": True, "chunk": 5})]:
        got = torch.autograd.grad(fn(q, k, v, **kw).sum(), (q, k, v))
        exp = torch.autograd.grad(ref(q, k, v, **kw).sum(), (q, k, v))
        for a, b in zip(got, exp):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


def test_efficient_attention_normalises_q_rows_and_k_columns():
    q, k, v = fresh_qkv(N=9)
    ones = torch.ones_like(v)  # each query's weights over the keys sum to 1
    torch.testing.assert_close(efficient(q, k, ones), ones, atol=1e-12, rtol=0)


def _kernel_estimates(phi, q, k, seeds, m, orthogonal=False):
    """φ(q)·φ(k) for each seed: ``(len(seeds), ...)``."""
    D = q.shape[-1]
    rows = m if phi is not trig_features else m // 2
    out = []
    for s in seeds:
        w = gaussian_features(rows, D, orthogonal=orthogonal, seed=s, dtype=torch.float64)
        out.append(phi(q, w) @ phi(k, w).transpose(-2, -1))
    return torch.stack(out)


def _unbiased(estimates: torch.Tensor, true: torch.Tensor, z: float = 5.0) -> bool:
    """Is the mean over seeds within z standard errors (from the sample variance) of the truth?"""
    se = estimates.std(dim=0) / math.sqrt(estimates.shape[0])
    return bool(((estimates.mean(dim=0) - true).abs() <= z * se).all())


def _no_norm_term(x, w):
    """A wrong 'positive feature': exp(Wx) / sqrt(m), without the -|x|²/2 term."""
    return torch.exp(x @ w.T) / math.sqrt(w.shape[0])


@pytest.mark.parametrize("phi, orthogonal", [(positive_features, False), (positive_features, True),
                                             (trig_features, False)])
def test_random_feature_kernel_estimate_is_unbiased_and_the_check_has_power(phi, orthogonal):
    g = torch.Generator().manual_seed(11)
    D, m = 4, 8
    q = torch.randn(3, D, generator=g, dtype=torch.float64) * 0.4  # (3, D)
    k = torch.randn(3, D, generator=g, dtype=torch.float64) * 0.4  # (3, D)
    true = torch.exp(q @ k.T)  # (3, 3)
    seeds = range(1000)
    assert _unbiased(_kernel_estimates(phi, q, k, seeds, m, orthogonal), true)
    if phi is positive_features:  # the same check rejects an estimator missing -|x|²/2
        assert not _unbiased(_kernel_estimates(_no_norm_term, q, k, seeds, m, orthogonal), true)


def test_positive_features_are_positive_even_for_large_inputs():
    x = torch.randn(50, 16, dtype=torch.float64) * 4
    w = orthogonal_gaussian(64, 16, seed=0, dtype=torch.float64)
    assert (positive_features(x, w) > 0).all()
    q, k, v = fresh_qkv(N=30, D=16, dtype=torch.float32, scale=3.0)
    assert torch.isfinite(performer(q, k, v, m=64)).all()


def test_orthogonal_features_have_lower_mse_than_iid():
    """Relative MSE of exp(qᵀk), averaged over 300 seeds: orthogonal well below iid, which
    itself matches its exact value (exp(|q + k|²) - 1) / m."""
    g = torch.Generator().manual_seed(7)
    D = m = 16
    x = torch.randn(2, 8, D, generator=g, dtype=torch.float64)
    q, k = x / x.norm(dim=-1, keepdim=True) / math.sqrt(2)  # |q| = |k| = 0.71: (8, D) each
    true = torch.exp(q @ k.T)
    mse = {orth: (((_kernel_estimates(positive_features, q, k, range(300), m, orth) - true) / true)
                  ** 2).mean().item() for orth in (True, False)}
    exact_iid = ((torch.exp(((q[:, None] + k[None]) ** 2).sum(-1)) - 1) / m).mean().item()
    assert mse[True] < 0.8 * mse[False], mse
    assert mse[True] < 0.8 * exact_iid, (mse, exact_iid)


def test_orthogonal_blocks_are_orthogonal_with_gaussian_norms_and_reproducible():
    w = orthogonal_gaussian(40, 16, seed=5, dtype=torch.float64)
    assert w.shape == (40, 16) and torch.equal(w, orthogonal_gaussian(40, 16, seed=5, dtype=torch.float64))
    assert not torch.equal(w, orthogonal_gaussian(40, 16, seed=6, dtype=torch.float64))
    block = w[:16] / w[:16].norm(dim=-1, keepdim=True)
    torch.testing.assert_close(block @ block.T, torch.eye(16, dtype=torch.float64), atol=1e-12, rtol=0)
    norms = torch.cat([orthogonal_gaussian(64, 16, seed=s, dtype=torch.float64) for s in range(20)]).norm(dim=-1)
    assert abs((norms ** 2).mean().item() - 16) < 1.0  # chi(D) norms: E|w|² = D


def test_performer_approaches_dense_attention_as_m_grows_and_redraws():
    q, k, v = fresh_qkv(B=1, H=2, N=64, D=8, scale=0.5)
    exact = dense_attention(q, k, v)
    err = [sum((performer(q, k, v, m=m, seed=s) - exact).pow(2).mean().item() for s in range(8))
           for m in (8, 64, 512)]
    assert err[2] < err[1] / 2 and err[1] < err[0] / 2, err  # ~1/m: 8x per step, in theory
    layer = RandomFeatures(8, m=32)
    before = layer(q, k, v)
    torch.testing.assert_close(before, performer(q, k, v, m=32, seed=0))
    layer.redraw()
    torch.testing.assert_close(layer(q, k, v), performer(q, k, v, m=32, seed=1))
    assert not torch.allclose(before, layer(q, k, v))



def test_performer_reuses_its_draw_of_w_per_seed():
    """W is drawn once per (m, D, kind, seed, dtype, device): the same numbers as a fresh draw,
    a new seed still redraws, and a call does not change the cached W."""
    from attnkit.kernel import _drawn_features

    q, k, v = fresh_qkv(B=1, H=2, N=32, D=8)
    _drawn_features.cache_clear()
    out = performer(q, k, v, m=16, seed=3)
    w = gaussian_features(16, 8, seed=3, dtype=q.dtype)
    torch.testing.assert_close(out, performer(q, k, v, m=16, features=w), rtol=0, atol=0)
    cached = _drawn_features(16, 8, True, 3, q.dtype, q.device)
    assert torch.equal(cached, w) and _drawn_features.cache_info().hits >= 1
    performer(q, k, v, m=16, seed=3, causal=True)
    assert torch.equal(_drawn_features(16, 8, True, 3, q.dtype, q.device), w)
    assert not torch.equal(_drawn_features(16, 8, True, 4, q.dtype, q.device), w)
    assert not torch.allclose(performer(q, k, v, m=16, seed=4), out)

@pytest.mark.parametrize("splits", [1, 2, 4, 8])
@pytest.mark.parametrize("M, scale", [(64, 1.0), (64, 4.0), (40, 0.3)])  # 1, 2, 4, 8 all divide 40
def test_favor_as_two_softmax_attentions_equals_the_performer(splits, M, scale):
    """The GPU form of the positive Performer (key side: W's rows attend to the keys with a
    -|k|²/2 bias; query side: the queries attend to W's rows with a log z bias) equals the
    eager form for every key split, also where exp(w·k - |k|²/2) spans tens of e-folds."""
    q, k, v = fresh_qkv(B=2, H=3, N=24, M=M, D=8, Dv=6, scale=scale)
    qs, ks, w = _performer_setup(q, k, 32, "positive", True, 5, None, None)
    got = favor_two_softmax(qs, ks, v, w, softmax_biased, splits=splits)
    torch.testing.assert_close(got, performer(q, k, v, m=32, seed=5), atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(got, performer_reference(q, k, v, m=32, seed=5), atol=1e-10, rtol=1e-8)


def test_favor_two_softmax_checks_its_split_and_picks_enough_programs():
    q, k, v = fresh_qkv(N=30, D=4)
    with pytest.raises(ValueError, match="must divide"):
        favor_two_softmax(q, k, v, torch.randn(8, 4, dtype=q.dtype), splits=4)
    big = torch.empty(1, 16, 16384, 64)
    assert _key_splits(big, torch.empty(256, 64)) == 8  # 16 heads x 2 W tiles x 8 = 256 programs
    assert _key_splits(big[:, :, :1024], torch.empty(256, 64)) == 1  # short: no split
    odd = torch.empty(1, 2, 3 * 4096 + 2, 64)
    assert _key_splits(odd, torch.empty(256, 64)) == 2  # the split must divide M


def test_softmax_biased_returns_the_log_sum_exp():
    q, k, v = fresh_qkv(B=1, H=2, N=5, M=7, D=3)
    bias = torch.randn(1, 2, 7, dtype=q.dtype)
    out, lse = softmax_biased(q, k, v, bias)
    s = q @ k.transpose(-2, -1) + bias.unsqueeze(-2)
    torch.testing.assert_close(lse, s.exp().sum(-1).log())
    torch.testing.assert_close(out, dense_attention(q, k, v, mask=bias.unsqueeze(-2), scale=1.0))


def test_causal_linear_memory_is_linear_in_N():
    B, H, N, D, chunk = 1, 2, 2048, 16, 64
    q, k, v = fresh_qkv(B=B, H=H, N=N, D=D, dtype=torch.float32)
    biggest = largest_intermediate(linear, q, k, v, causal=True, chunk=chunk)
    assert biggest.numel <= 2 * (chunk * D * D + N * D) * B * H, biggest
    assert biggest.numel < B * H * N * N / 50
    assert largest_intermediate(linear, q, k, v).numel <= 2 * N * D * B * H


def test_linear_attention_flops_grow_linearly_in_N():
    def flops(N, **kw):
        return count_flops(linear, *fresh_qkv(B=1, H=2, N=N, D=16, dtype=torch.float32), **kw)
    for kw in ({}, {"causal": True}):
        small, big = flops(1024, **kw), flops(4096, **kw)
        assert 3.9 < big / small < 4.1, (kw, small, big)
    assert count_flops(performer, *fresh_qkv(B=1, H=2, N=4096, D=16, dtype=torch.float32), m=32) \
        < count_flops(dense_attention, *fresh_qkv(B=1, H=2, N=4096, D=16, dtype=torch.float32)) / 8


def test_elu_features_are_positive_and_registry_entries_exist():
    x = torch.randn(100) * 30
    assert (elu_features(x) > 0).all()
    torch.testing.assert_close(elu_features(x), torch.nn.functional.elu(x) + 1, atol=1e-6, rtol=1e-6)
    for name in ("linear", "efficient", "performer"):
        assert VARIANTS[name].family == "kernel" and VARIANTS[name].reference is not None


@pytest.mark.parametrize("call", [
    lambda q, k, v: performer(q, k, v, m=7, kind="trig"),
    lambda q, k, v: performer(q, k, v, kind="cosine"),
    lambda q, k, v: performer(q, k, v, m=0),
    lambda q, k, v: linear(q, k, v, feature_map="softmax"),
    lambda q, k, v: linear(q, k[:, :, :5], v[:, :, :5], causal=True),
    lambda q, k, v: kernel_attention(q, k, v, causal=True, chunk=0),
])
def test_bad_hyperparameters_raise(call):
    with pytest.raises(ValueError):
        call(*fresh_qkv(N=10))
