"""Synthesizer: softmax(logits) V, and the three ways its modules synthesise the logits (dense:
from each token alone; random: independent of the input; factorized: rank <= k)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnkit import dense_attention, merge_heads, split_heads
from attnkit.synthesizer import (DenseSynthesizer, FactorizedRandomSynthesizer, RandomSynthesizer,
                                 synthesizer)
from strategies import seeds

B, N, C, H = 2, 24, 16, 4
MODULES = [DenseSynthesizer, RandomSynthesizer, FactorizedRandomSynthesizer]


def randn(*shape, dtype=torch.float64):
    return torch.randn(*shape, dtype=dtype)


@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 3), h=st.integers(1, 3), n=st.integers(1, 9), m=st.integers(1, 9),
       dv=st.integers(1, 5), per_batch=st.booleans(), seed=seeds)
def test_synthesizer_is_softmax_of_logits_times_v(b, h, n, m, dv, per_batch, seed):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(b, h, m, dv, generator=g, dtype=torch.float64)
    logits = torch.randn(*((b,) if per_batch else ()), h, n, m, generator=g, dtype=torch.float64) * 3
    out = synthesizer(v, logits=logits)
    assert out.shape == (b, h, n, dv)
    e = torch.exp(logits - logits.amax(-1, keepdim=True))
    expected = (e / e.sum(-1, keepdim=True)) @ v
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-10)
    # the same as dense attention whose scores are all zero plus the logits as an additive bias
    q, k = torch.zeros(b, h, n, 1, dtype=torch.float64), torch.zeros(b, h, m, 1, dtype=torch.float64)
    torch.testing.assert_close(out, dense_attention(q, k, v, mask=logits),
                               atol=1e-12, rtol=1e-10)


def test_synthesizer_rejects_mismatched_logits():
    with pytest.raises(ValueError, match="M = 5 columns"):
        synthesizer(randn(1, 2, 5, 3), logits=randn(2, 4, 6))


@pytest.mark.parametrize("cls", MODULES)
@pytest.mark.parametrize("causal", [False, True])
def test_weights_are_rows_that_sum_to_one(cls, causal):
    module = cls(C, 32, heads=H, causal=causal).double()
    x = randn(B, N, C)
    w = module.weights(x)
    assert w.shape[-3:] == (H, N, N) and (w >= 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1], dtype=w.dtype), atol=1e-12, rtol=0)
    if causal:
        assert (w.triu(1) == 0).all()


@pytest.mark.parametrize("cls", MODULES)
def test_forward_is_the_synthesised_mix_of_projected_values(cls):
    module = cls(C, 32, heads=H).double()
    x = randn(B, N, C)
    w = module.weights(x)  # (H, N, N) or (B, H, N, N)
    v = split_heads(module.to_v(x), H)  # (B, H, N, D)
    expected = module.to_out(merge_heads(w @ v))
    torch.testing.assert_close(module(x), expected, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("cls", MODULES)
@pytest.mark.parametrize("t", [0, 10, N - 2])
def test_causal_synthesizer_ignores_the_future(cls, t):
    module = cls(C, 32, heads=H, causal=True).double()
    x = randn(B, N, C)
    x2 = x.clone()
    x2[:, t + 1:] = randn(B, N - t - 1, C)
    torch.testing.assert_close(module(x2)[:, :t + 1], module(x)[:, :t + 1], atol=1e-12, rtol=0)
    module.causal = False
    assert not torch.allclose(module(x2)[:, :t + 1], module(x)[:, :t + 1])


@pytest.mark.parametrize("cls", [RandomSynthesizer, FactorizedRandomSynthesizer])
def test_random_weights_do_not_depend_on_the_input(cls):
    module = cls(C, 32, heads=H).double()
    w = module.weights(randn(B, N, C))
    assert w.shape == (H, N, N)
    torch.testing.assert_close(module.weights(randn(3, N, C)), w, atol=0, rtol=0)
    # the first N rows and columns of the (L, L) logits serve N tokens
    torch.testing.assert_close(module.weights(randn(1, 5, C)),
                               torch.softmax(module.logits(randn(1, 32, C))[:, :5, :5], -1))


@pytest.mark.parametrize("cls", [RandomSynthesizer, FactorizedRandomSynthesizer])
def test_random_logits_learned_or_fixed(cls):
    learned, fixed = cls(C, 32, heads=H), cls(C, 32, heads=H, learned=False)
    names = {n for n, _ in learned.named_parameters()}
    fixed_names = {n for n, _ in fixed.named_parameters()}
    assert {n for n, _ in fixed.named_buffers()} == names - fixed_names
    assert fixed_names == {"to_v.weight", "to_v.bias", "to_out.weight", "to_out.bias"}
    before = fixed.logits(torch.randn(1, N, C)).clone()
    fixed(torch.randn(2, N, C)).square().sum().backward()
    torch.optim.SGD(fixed.parameters(), lr=0.1).step()
    assert torch.equal(fixed.logits(torch.randn(1, N, C)), before)


@pytest.mark.parametrize("k", [1, 3, 8])
def test_factorized_logits_have_rank_at_most_k(k):
    module = FactorizedRandomSynthesizer(C, 32, heads=H, k=k).double()
    logits = module.logits(randn(1, N, C))
    assert logits.shape == (H, N, N)
    ranks = torch.linalg.matrix_rank(logits)
    assert (ranks == k).all(), ranks  # exactly k for random factors with k < N
    dense_ranks = torch.linalg.matrix_rank(RandomSynthesizer(C, 32, heads=H).double().logits(randn(1, N, C)))
    assert (dense_ranks == N).all()
    n_params = sum(p.numel() for n, p in module.named_parameters() if n in ("A", "B"))
    assert n_params == 2 * H * 32 * k


def test_dense_synthesizer_rows_depend_on_their_own_token_only():
    module = DenseSynthesizer(C, 32, heads=H, hidden=20).double()
    x = randn(B, N, C)
    logits = module.logits(x)
    assert logits.shape == (B, H, N, N)
    for i in (0, 7, N - 1):
        others = [j for j in range(N) if j != i]
        x2 = x.clone()
        x2[:, others] = randn(B, N - 1, C)
        torch.testing.assert_close(module.logits(x2)[:, :, i], logits[:, :, i], atol=0, rtol=0)
        torch.testing.assert_close(module.weights(x2)[:, :, i], module.weights(x)[:, :, i],
                                   atol=0, rtol=0)
        x3 = x.clone()
        x3[:, i] = randn(B, C)
        assert not torch.allclose(module.logits(x3)[:, :, i], logits[:, :, i])


@pytest.mark.parametrize("cls", MODULES)
def test_modules_refuse_what_they_were_not_built_for(cls):
    module = cls(C, 32, heads=H)
    with pytest.raises(ValueError, match="at most seq_len=32"):
        module(torch.randn(1, 33, C))
    with pytest.raises(ValueError, match="width 16"):
        module(torch.randn(1, 8, 12))
    with pytest.raises(ValueError, match="divisible by heads"):
        cls(10, 32, heads=4)
