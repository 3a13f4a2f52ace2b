"""Multi-head attention equals ``torch.nn.MultiheadAttention`` with the same weights, and passes
its keyword arguments through to the pluggable attention function."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnkit import MultiHeadAttention, causal_mask, dense_attention, merge_heads, split_heads
from strategies import seeds


@settings(max_examples=20, deadline=None)
@given(B=st.integers(1, 3), N=st.integers(1, 10), H=st.integers(1, 4), D=st.integers(1, 5), seed=seeds)
def test_split_merge_round_trip(B, N, H, D, seed):
    x = torch.randn(B, N, H * D, generator=torch.Generator().manual_seed(seed))
    heads = split_heads(x, H)
    assert heads.shape == (B, H, N, D)
    # Head h holds channels h·D .. (h+1)·D - 1 of every token.
    for h in range(H):
        assert torch.equal(heads[:, h], x[..., h * D:(h + 1) * D])
    assert torch.equal(merge_heads(heads), x)


def test_split_heads_rejects_indivisible_width():
    with pytest.raises(ValueError, match="not divisible"):
        split_heads(torch.randn(2, 3, 10), 4)


def _pair(d_model=16, n_heads=4, bias=True, seed=0):
    """Our module and torch's, holding the same float64 weights."""
    torch.manual_seed(seed)
    ours = MultiHeadAttention(d_model, n_heads, bias=bias).double()
    theirs = torch.nn.MultiheadAttention(d_model, n_heads, bias=bias, batch_first=True,
                                         dtype=torch.float64)
    with torch.no_grad():
        theirs.in_proj_weight.copy_(torch.cat([ours.w_q.weight, ours.w_k.weight, ours.w_v.weight]))
        theirs.out_proj.weight.copy_(ours.w_o.weight)
        if bias:
            theirs.in_proj_bias.copy_(torch.cat([ours.w_q.bias, ours.w_k.bias, ours.w_v.bias]))
            theirs.out_proj.bias.copy_(ours.w_o.bias)
    return ours, theirs


@pytest.mark.parametrize("bias", [True, False])
def test_self_attention_equals_torch(bias):
    ours, theirs = _pair(bias=bias, seed=int(torch.randint(0, 2**31 - 1, ())))
    x = torch.randn(3, 11, 16, dtype=torch.float64)
    got = ours(x)
    assert got.shape == x.shape
    expected, _ = theirs(x, x, x, need_weights=False)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-10)


def test_cross_attention_equals_torch():
    ours, theirs = _pair(d_model=24, n_heads=3, seed=int(torch.randint(0, 2**31 - 1, ())))
    x = torch.randn(2, 7, 24, dtype=torch.float64)
    ctx = torch.randn(2, 13, 24, dtype=torch.float64)
    got = ours(x, ctx)
    assert got.shape == (2, 7, 24)
    expected, _ = theirs(x, ctx, ctx, need_weights=False)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-10)
    assert not torch.allclose(got, ours(x)), "the context should matter"


def test_causal_mask_equals_torch_attn_mask():
    ours, theirs = _pair(seed=int(torch.randint(0, 2**31 - 1, ())))
    N = 9
    x = torch.randn(2, N, 16, dtype=torch.float64)
    allowed = causal_mask(N)  # True = may attend (the kit's convention)
    got = ours(x, mask=allowed)
    # torch.nn.MultiheadAttention's boolean attn_mask is True where attention is NOT allowed.
    expected, _ = theirs(x, x, x, attn_mask=~allowed, need_weights=False)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-10)
    assert not torch.allclose(got, ours(x)), "the mask should matter"
    # Causal: the first token's output does not depend on later tokens.
    x2 = x.clone()
    x2[:, 1:] = torch.randn_like(x2[:, 1:])
    torch.testing.assert_close(ours(x2, mask=allowed)[:, 0], got[:, 0], atol=1e-12, rtol=0)


def test_custom_attn_fn_gets_fixed_and_per_call_kwargs():
    calls = []

    def spy(q, k, v, **kwargs):
        calls.append((q.shape, k.shape, v.shape, kwargs))
        return dense_attention(q, k, v, mask=kwargs.get("mask"))

    mha = MultiHeadAttention(12, 3, attn_fn=spy, window=5, scale_hint="x")
    x, ctx = torch.randn(2, 4, 12), torch.randn(2, 6, 12)
    out = mha(x, ctx)
    assert out.shape == (2, 4, 12)
    assert calls[-1] == ((2, 3, 4, 4), (2, 3, 6, 4), (2, 3, 6, 4), {"window": 5, "scale_hint": "x"})
    mask = torch.ones(4, 6, dtype=torch.bool)
    mha(x, ctx, mask=mask, window=2)  # per-call keywords join (and override) the fixed ones
    kw = calls[-1][3]
    assert kw["window"] == 2 and kw["scale_hint"] == "x" and kw["mask"] is mask
    assert mha.attn_kwargs == {"window": 5, "scale_hint": "x"}, "a call must not change the fixed kwargs"
    assert len(calls) == 2


def test_d_model_must_divide_by_n_heads():
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, 4)


def test_gradients_reach_every_projection():
    mha = MultiHeadAttention(8, 2).double()
    mha(torch.randn(2, 5, 8, dtype=torch.float64)).square().sum().backward()
    for name, p in mha.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
