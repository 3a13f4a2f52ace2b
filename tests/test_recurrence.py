"""Transformer-XL recurrence: the segment-by-segment path equals dense attention with the
materialised xl_mask and relative bias, the score_mod follows FlexAttention's convention (checked
against flex_attention itself), memory is detached, and no N×N tensor is ever allocated."""
from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnkit import VARIANTS, dense_attention, largest_intermediate, materialize
from attnkit.masks import materialize_scores
from attnkit.modules import split_heads
from attnkit.recurrence import (SegmentRecurrence, relative_bias_matrix, relative_bias_mod,
                                transformer_xl, transformer_xl_reference, xl_attention, xl_mask)
from strategies import fresh_qkv, make_qkv, seeds, shapes


def fresh_bias(H=3, R=6, dtype=torch.float64):
    return torch.randn(H, R, dtype=dtype)


def brute_mask(N, segment, memory):
    return torch.tensor([[j <= i and j >= (i // segment) * segment - memory for j in range(N)]
                         for i in range(N)])


def brute_bias(bias, N, M, offset):
    R = bias.shape[1]
    return torch.stack([torch.tensor([[bias[h, min(max(i + offset - j, 0), R - 1)].item()
                                       for j in range(M)] for i in range(N)], dtype=bias.dtype)
                        for h in range(bias.shape[0])])  # (H, N, M)


# (N, segment, memory): N not a multiple of segment, memory > segment (spanning several
# segments), memory = 0 (no recurrence), segment longer than N, segment of 1.
COMBOS = [(37, 8, None), (37, 8, 0), (37, 5, 13), (64, 16, 16), (10, 16, None), (23, 1, 3),
          (30, 7, 100), (1, 1, 0), (40, 6, 6)]


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("N, segment, memory", COMBOS)
def test_transformer_xl_equals_reference(N, segment, memory, with_bias):
    q, k, v = fresh_qkv(N=N, Dv=4)
    bias = fresh_bias() if with_bias else None
    out = transformer_xl(q, k, v, segment=segment, memory=memory, bias=bias)
    assert out.shape == (2, 3, N, 4) and out.dtype == torch.float64
    expected = transformer_xl_reference(q, k, v, segment=segment, memory=memory, bias=bias)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-10)


@settings(max_examples=40, deadline=None)
@given(shape=shapes(max_n=30, square=True), seed=seeds, segment=st.integers(1, 12),
       memory=st.integers(0, 20), R=st.one_of(st.none(), st.integers(1, 40)),
       scale=st.one_of(st.none(), st.floats(0.05, 2.0)))
def test_transformer_xl_equals_reference_random(shape, seed, segment, memory, R, scale):
    q, k, v = make_qkv(shape, seed)
    g = torch.Generator().manual_seed(seed + 7)
    bias = None if R is None else torch.randn(shape.H, R, generator=g, dtype=torch.float64)
    kw = dict(segment=segment, memory=memory, bias=bias, scale=scale)
    torch.testing.assert_close(transformer_xl(q, k, v, **kw), transformer_xl_reference(q, k, v, **kw),
                               atol=1e-12, rtol=1e-10)


def test_xl_mask_matches_its_formula():
    for N, segment, memory in [(20, 4, None), (20, 4, 0), (20, 3, 7), (9, 12, 2)]:
        expected = brute_mask(N, segment, segment if memory is None else memory)
        assert torch.equal(materialize(xl_mask(segment, memory), N), expected)


@pytest.mark.parametrize("Mlen", [0, 3, 11])
@pytest.mark.parametrize("with_bias", [False, True])
def test_xl_attention_equals_dense_over_the_concatenation(Mlen, with_bias):
    B, H, N, D, Dv = 2, 3, 7, 5, 4
    q, k, v = fresh_qkv(B, H, N, D, Dv=Dv)
    mem_k, _, mem_v = fresh_qkv(B, H, Mlen, D, Dv=Dv)
    bias = fresh_bias(H, R=5) if with_bias else None
    out = xl_attention(q, k, v, mem_k=mem_k, mem_v=mem_v, bias=bias, scale=0.4)
    L = Mlen + N
    keep = torch.tensor([[j <= i + Mlen for j in range(L)] for i in range(N)])  # (N, L)
    add = torch.zeros(H, N, L, dtype=q.dtype) if bias is None else brute_bias(bias, N, L, Mlen)
    expected = dense_attention(q, torch.cat([mem_k, k], 2), torch.cat([mem_v, v], 2),
                               mask=add.masked_fill(~keep, float("-inf")), scale=0.4)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-10)
    if Mlen == 0:  # an empty memory is the same as none: plain causal attention in the segment
        torch.testing.assert_close(xl_attention(q, k, v, bias=bias, scale=0.4), expected,
                                   atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("N, M, offset", [(6, 6, 0), (5, 9, 4), (8, 3, 0), (7, 12, 5)])
def test_relative_bias_mod_on_index_grids_equals_the_matrix(N, M, offset):
    H, R = 3, 4  # R < the largest distance, so the clamp at R - 1 matters
    bias = fresh_bias(H, R)
    matrix = relative_bias_matrix(bias, N, M, offset)
    assert matrix.shape == (H, N, M)
    torch.testing.assert_close(matrix, brute_bias(bias, N, M, offset), atol=0, rtol=0)
    scores = torch.randn(2, H, N, M, dtype=torch.float64)
    for off in (offset, torch.tensor(offset)):  # a (B, H, N, M) grid of 4-d index tensors
        got = materialize_scores(relative_bias_mod(bias, off), scores)
        torch.testing.assert_close(got, scores + matrix, atol=0, rtol=0)
    h = torch.arange(H).view(H, 1, 1)  # another broadcast layout: (H, 1, 1), (N, 1), (M,)
    got = relative_bias_mod(bias, offset)(torch.zeros((), dtype=bias.dtype), torch.tensor(0), h,
                                          torch.arange(N).view(N, 1), torch.arange(M))
    torch.testing.assert_close(got, matrix, atol=0, rtol=0)


def test_flex_attention_with_our_score_mod_and_mask_equals_the_reference():
    """The FlexAttention convention really holds: flex_attention (eager, CPU) agrees."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    B, H, N, D, segment, memory = 2, 3, 32, 8, 8, 5
    q, k, v = fresh_qkv(B, H, N, D, dtype=torch.float32)
    bias = fresh_bias(H, R=6, dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "flex_attention called without torch.compile()"
        block_mask = create_block_mask(xl_mask(segment, memory), B=None, H=None, Q_LEN=N, KV_LEN=N,
                                       device="cpu")
        out = flex_attention(q, k, v, score_mod=relative_bias_mod(bias), block_mask=block_mask)
    expected = transformer_xl_reference(q, k, v, segment=segment, memory=memory, bias=bias)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(transformer_xl(q, k, v, segment=segment, memory=memory, bias=bias),
                               expected, atol=1e-5, rtol=1e-4)


def test_largest_intermediate_is_segment_by_segment_plus_memory():
    B, H, N, D, segment = 1, 2, 512, 8, 64
    q, k, v = fresh_qkv(B, H, N, D, dtype=torch.float32)
    bias = fresh_bias(H, R=32, dtype=torch.float32)
    for memory in (64, 160):
        biggest = largest_intermediate(transformer_xl, q, k, v, segment=segment, memory=memory,
                                       bias=bias)
        assert biggest.numel <= 2 * B * H * segment * (segment + memory), biggest
    reference = largest_intermediate(transformer_xl_reference, q, k, v, segment=segment, bias=bias)
    assert reference.numel >= B * H * N * N  # the check above would catch an N×N tensor


def test_causal_perturbing_the_future_changes_only_the_future():
    q, k, v = fresh_qkv(N=40)
    bias, kw = fresh_bias(), dict(segment=6, memory=9)
    out = transformer_xl(q, k, v, bias=bias, **kw)
    t = 22
    q2, k2, v2 = (x.clone() for x in (q, k, v))
    for x in (q2, k2, v2):
        x[:, :, t + 1:] = torch.randn_like(x[:, :, t + 1:]) * 10
    out2 = transformer_xl(q2, k2, v2, bias=bias, **kw)
    torch.testing.assert_close(out2[:, :, :t + 1], out[:, :, :t + 1], atol=1e-12, rtol=0)
    assert not torch.allclose(out2[:, :, t + 1:], out[:, :, t + 1:])


def test_xl_attention_detaches_the_memory():
    q, k, v = fresh_qkv(N=6)
    mem_k, _, mem_v = (x.requires_grad_() for x in fresh_qkv(N=4))
    k.requires_grad_()
    out = xl_attention(q, k, v, mem_k=mem_k, mem_v=mem_v, bias=fresh_bias())
    grad_mk, grad_mv, grad_k = torch.autograd.grad(out.sum() + (out ** 2).sum(), (mem_k, mem_v, k),
                                                   allow_unused=True, materialize_grads=True)
    assert torch.count_nonzero(grad_mk) == 0 and torch.count_nonzero(grad_mv) == 0
    assert grad_k.abs().sum() > 0, "the current segment's keys still get gradients"
    other = xl_attention(q, k, v, mem_k=mem_k * 2, mem_v=mem_v, bias=None)
    assert not torch.allclose(other, xl_attention(q, k, v, mem_k=mem_k, mem_v=mem_v, bias=None)), \
        "the memory is used in the forward pass"


def test_gradients_for_queries_and_bias_match_the_reference():
    """Only keys/values reach later segments through the (detached) memory; q and bias do not."""
    q, k, v = fresh_qkv(N=21)
    bias = fresh_bias().requires_grad_()
    q.requires_grad_()
    kw = dict(segment=5, memory=7, bias=bias)
    got = torch.autograd.grad((transformer_xl(q, k, v, **kw) ** 2).sum(), (q, bias))
    expected = torch.autograd.grad((transformer_xl_reference(q, k, v, **kw) ** 2).sum(), (q, bias))
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


def _random_layer(d_model, n_heads, **kw):
    layer = SegmentRecurrence(d_model, n_heads, **kw).double()
    with torch.no_grad():
        layer.bias.normal_()  # zeros at init would hide a wrongly indexed bias
    return layer


@pytest.mark.parametrize("N, segment, memory", [(24, 6, None), (23, 6, 6), (25, 4, 10), (20, 5, 0)])
def test_segment_recurrence_steps_equal_one_transformer_xl_call(N, segment, memory):
    B, C, H = 2, 12, 3
    layer = _random_layer(C, H, max_distance=8, memory=memory)
    x = torch.randn(B, N, C, dtype=torch.float64)
    mem, outs = None, []
    for start in range(0, N, segment):
        out, mem = layer(x[:, start:start + segment], mem)
        kept = min(segment if memory is None else memory, start + x[:, start:start + segment].shape[1])
        assert mem[0].shape == (B, H, kept, C // H) and not mem[0].requires_grad
        outs.append(out)
    q, k, v = (split_heads(w(x), H) for w in (layer.w_q, layer.w_k, layer.w_v))  # (B, H, N, D)
    att = transformer_xl(q, k, v, segment=segment, memory=memory, bias=layer.bias)  # (B, H, N, D)
    expected = layer.w_o(att.transpose(1, 2).reshape(B, N, C))  # (B, N, C)
    torch.testing.assert_close(torch.cat(outs, 1), expected, atol=1e-12, rtol=1e-10)


def test_segment_recurrence_gradient_stops_at_the_memory():
    B, S, C, H = 2, 5, 8, 2
    layer = _random_layer(C, H, max_distance=6)
    x1 = torch.randn(B, S, C, dtype=torch.float64, requires_grad=True)
    x2 = torch.randn(B, S, C, dtype=torch.float64, requires_grad=True)
    _, mem = layer(x1)
    out2, _ = layer(x2, mem)
    params = [layer.w_q.weight, layer.w_k.weight, layer.w_v.weight, layer.w_o.weight, layer.bias]
    grads = torch.autograd.grad((out2 ** 2).sum(), [x1, x2] + params, allow_unused=True,
                                materialize_grads=True)
    assert torch.count_nonzero(grads[0]) == 0, "no gradient into the first segment (memory detached)"
    for name, grad in zip(["x2", "w_q", "w_k", "w_v", "w_o", "bias"], grads[1:]):
        assert grad.abs().sum() > 0, f"{name} should get a gradient"
    assert not torch.allclose(out2, layer(x2)[0]), "the memory changes the second segment's output"


def test_registry_entry():
    variant = VARIANTS["transformer_xl"]
    assert variant.fn is transformer_xl and variant.reference is transformer_xl_reference
    assert variant.family == "memory / recurrence" and "1901.02860" in variant.paper
    q, k, v = fresh_qkv(N=64)
    torch.testing.assert_close(variant(q, k, v, **variant.example_kwargs),
                               variant.reference(q, k, v, **variant.example_kwargs),
                               atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("call", [
    lambda q, k, v: transformer_xl(q, k, v, segment=0),
    lambda q, k, v: transformer_xl(q, k, v, segment=4, memory=-1),
    lambda q, k, v: transformer_xl_reference(q, k, v, segment=0),
    lambda q, k, v: xl_mask(4, -2),
    lambda q, k, v: transformer_xl(q, k, v, segment=4, bias=torch.zeros(5, 3)),  # H = 3, not 5
    lambda q, k, v: xl_attention(q, k, v, mem_k=k),  # mem_v missing
    lambda q, k, v: SegmentRecurrence(8, 2, memory=-1),
])
def test_bad_arguments_raise_value_error(call):
    with pytest.raises(ValueError):
        call(*fresh_qkv(N=10))
