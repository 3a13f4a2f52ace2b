"""Fixed sparse patterns: every fast path equals dense attention with the materialised mask,
the mask functions match their formulas, causal ones ignore the future, ``local`` stays O(N·w)."""
from __future__ import annotations

import itertools

import pytest
import torch

from attnkit import VARIANTS, count_flops, dense_attention, largest_intermediate, materialize
from attnkit.blocksparse import block_layout, blocksparse_attention
from attnkit.fixed import (bigbird, bigbird_mask, dilated_mask, fixed_mask, local, local_mask,
                           longformer, longformer_mask, strided_mask)
from strategies import fresh_qkv

FIXED = ["local", "dilated", "strided", "fixed", "longformer", "bigbird"]
CAUSAL = [("local", {"window": 3, "causal": True}), ("dilated", {"window": 2, "dilation": 3, "causal": True}),
          ("strided", {"stride": 5}), ("fixed", {"stride": 6, "summary": 2})]


def dense_with(mask_mod, q, k, v):
    B, H, N, _ = q.shape
    return dense_attention(q, k, v, mask=materialize(mask_mod, N, B=B, H=H))


# (name, kwargs) combos: N not divisible by block or chunk, windows wider than N, edge values.
CASES = [
    ("local", {"window": w, "causal": c}) for w, c in itertools.product([0, 1, 5, 16, 100], [False, True])
] + [
    ("dilated", {"window": w, "dilation": d, "causal": c})
    for w, d, c in [(1, 2, False), (3, 3, True), (40, 2, False), (2, 1, False), (2, 5, False),
                    (1, 40, True), (0, 3, False)]
] + [
    ("strided", {"stride": s}) for s in [1, 2, 4, 7, 50]
] + [
    ("fixed", {"stride": s, "summary": c}) for s, c in [(1, 1), (4, 1), (7, 2), (6, 0), (5, 5), (50, 3)]
] + [
    ("longformer", {"window": w, "global_tokens": g, "dilation": d})
    for w, g, d in [(2, 2, 1), (3, torch.tensor([0, 10, 36]), 1), (2, torch.tensor([5, 6, 20]), 3),
                    (100, 1, 1), (0, 0, 1), (1, 40, 2)]
] + [
    ("bigbird", {"block": b, "window_blocks": w, "global_blocks": g, "random_blocks": r, "seed": s})
    for b, w, g, r, s in [(4, 1, 1, 1, 0), (7, 0, 2, 2, 3), (5, 2, 0, 1, 9), (64, 1, 1, 1, 1), (3, 1, 1, 0, 4)]
]


def _pattern_kwargs(name, kwargs):
    """The references take the pattern only, not the block size of the fast path (but BigBird's
    block is part of its pattern)."""
    return {key: val for key, val in kwargs.items() if key != "block" or name == "bigbird"}


@pytest.mark.parametrize("N", [1, 37, 64])
@pytest.mark.parametrize("name, kwargs", CASES, ids=lambda x: str(x) if isinstance(x, str) else None)
def test_equals_dense_with_materialised_mask(name, kwargs, N):
    q, k, v = fresh_qkv(N=N, Dv=3)
    if isinstance(kwargs.get("global_tokens"), torch.Tensor):  # keep the indices inside [0, N)
        kwargs = {**kwargs, "global_tokens": kwargs["global_tokens"][kwargs["global_tokens"] < N]}
    out = VARIANTS[name](q, k, v, **kwargs)
    assert out.shape == (2, 3, N, 3) and out.dtype == torch.float64
    expected = VARIANTS[name].reference(q, k, v, **_pattern_kwargs(name, kwargs))
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("name", FIXED)
def test_custom_scale_matches_reference(name):
    variant = VARIANTS[name]
    q, k, v = fresh_qkv(N=29)
    torch.testing.assert_close(variant(q, k, v, scale=0.3, **variant.example_kwargs),
                               variant.reference(q, k, v, scale=0.3, **variant.example_kwargs),
                               atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("name, kwargs", CAUSAL)
def test_causal_variants_ignore_the_future(name, kwargs):
    q, k, v = fresh_qkv(N=40)
    out = VARIANTS[name](q, k, v, **kwargs)
    t = 23
    q2, k2, v2 = (x.clone() for x in (q, k, v))
    for x in (q2, k2, v2):
        x[:, :, t + 1:] = torch.randn_like(x[:, :, t + 1:]) * 10
    out2 = VARIANTS[name](q2, k2, v2, **kwargs)
    torch.testing.assert_close(out2[:, :, :t + 1], out[:, :, :t + 1], atol=1e-12, rtol=0)
    assert not torch.allclose(out2[:, :, t + 1:], out[:, :, t + 1:]), "the future should change"


def test_per_head_pattern_in_the_block_sparse_path():
    """Head h sees a window of 2h + 1, and head 2 is also causal: the layout is per head."""
    def per_head(b, h, q_idx, kv_idx):
        d = q_idx - kv_idx
        return (d.abs() <= 2 * h + 1) & ((h != 2) | (d >= 0)) & ((b == 0) | (kv_idx != 3))
    q, k, v = fresh_qkv(B=2, H=4, N=45)
    layout = block_layout(per_head, 45, block=8, B=2, H=4)
    assert layout.shape == (2, 4, 6, 6) and not torch.equal(layout[0, 0], layout[0, 2])
    out = blocksparse_attention(q, k, v, mask_mod=per_head, block=8)
    torch.testing.assert_close(out, dense_with(per_head, q, k, v), atol=1e-12, rtol=1e-10)


def test_block_sparse_gives_zero_rows_where_nothing_is_visible():
    def some_rows_empty(b, h, q_idx, kv_idx):
        return (q_idx % 3 != 0) & (kv_idx <= q_idx)
    q, k, v = fresh_qkv(N=20)
    out = blocksparse_attention(q, k, v, mask_mod=some_rows_empty, block=6)
    assert (out[:, :, ::3] == 0).all()
    torch.testing.assert_close(out, dense_with(some_rows_empty, q, k, v), atol=1e-12, rtol=1e-10)


def test_shared_layout_batches_rows_by_their_block_count(monkeypatch):
    """One layout for every (b, h): rows are stacked by how many key blocks they see, in batches
    capped by ROW_BUDGET (set tiny here so every group splits). A per-head element mask on top
    of a shared layout, rows that see nothing, and ``mask_mod=None`` (the layout is the pattern)
    all equal the dense reference."""
    import attnkit.blocksparse as bs

    monkeypatch.setattr(bs, "ROW_BUDGET", 1)
    layout = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 0], [0, 1, 0, 1]], dtype=torch.bool)
    N, s = 29, 8  # the last block is partial

    def per_head_window(b, h, q_idx, kv_idx):
        return layout[q_idx // s, kv_idx // s] & ((q_idx - kv_idx).abs() <= 5 + h)
    q, k, v = fresh_qkv(B=2, H=3, N=N)
    out = blocksparse_attention(q, k, v, mask_mod=per_head_window, block=s, layout=layout)
    torch.testing.assert_close(out, dense_with(per_head_window, q, k, v), atol=1e-12, rtol=1e-10)
    assert (out[:, :, s:2 * s] == 0).all()  # query block 1 sees nothing

    def blocks_only(b, h, q_idx, kv_idx):
        return layout[q_idx // s, kv_idx // s]
    out = blocksparse_attention(q, k, v, mask_mod=None, block=s, layout=layout)
    torch.testing.assert_close(out, dense_with(blocks_only, q, k, v), atol=1e-12, rtol=1e-10)
    with pytest.raises(ValueError, match="mask_mod, a layout"):
        blocksparse_attention(q, k, v, mask_mod=None, block=s)


def test_bigbird_is_reproducible_from_seed_and_differs_across_seeds():
    q, k, v = fresh_qkv(N=128, D=4)
    kw = dict(block=8, window_blocks=1, global_blocks=1, random_blocks=2)
    a, a_again, b = (bigbird(q, k, v, seed=s, **kw) for s in (0, 0, 1))
    assert torch.equal(a, a_again)
    assert not torch.allclose(a, b)
    masks = [materialize(bigbird_mask(128, 8, 1, 1, 2, s), 128) for s in (0, 0, 1)]
    assert torch.equal(masks[0], masks[1]) and not torch.equal(masks[0], masks[2])


def brute(pattern, N):
    return torch.tensor([[bool(pattern(i, j)) for j in range(N)] for i in range(N)])


@pytest.mark.parametrize("N", [1, 13, 30])
def test_mask_functions_match_their_formulas(N):
    for w, causal in itertools.product([0, 2, 40], [False, True]):
        expected = brute(lambda i, j: abs(i - j) <= w and (not causal or j <= i), N)
        assert torch.equal(materialize(local_mask(w, causal), N), expected)
    for w, d, causal in itertools.product([1, 3], [1, 2, 4], [False, True]):
        expected = brute(lambda i, j: abs(i - j) <= w * d and (i - j) % d == 0
                         and (not causal or j <= i), N)
        assert torch.equal(materialize(dilated_mask(w, d, causal), N), expected)
    for s in [1, 3, 5]:
        expected = brute(lambda i, j: j <= i and (i - j < s or (i - j) % s == 0), N)
        assert torch.equal(materialize(strided_mask(s), N), expected)
        for c in [0, 1, 2]:
            expected = brute(lambda i, j: j <= i and (j // s == i // s or j % s >= s - c), N)
            assert torch.equal(materialize(fixed_mask(s, c), N), expected)
    for w, glob, d in [(1, 2, 1), (2, [0, 7], 2), (0, [], 1)]:
        gset = set(range(glob)) if isinstance(glob, int) else set(glob)
        expected = brute(lambda i, j: (abs(i - j) <= w * d and (i - j) % d == 0)
                         or i in gset or j in gset, N)
        glob_arg = glob if isinstance(glob, int) else torch.tensor(glob, dtype=torch.long)
        assert torch.equal(materialize(longformer_mask(w, glob_arg, d), N), expected)


def test_bigbird_mask_matches_its_block_formula():
    N, block, wb, gb, r = 30, 4, 1, 1, 2
    mask = materialize(bigbird_mask(N, block, wb, gb, r, seed=5), N)
    blocks = mask.view(1, 1, N, N)  # every (query block, key block) is all-in or all-out
    for i, j in itertools.product(range(N), repeat=2):
        qb, kb = i // block, j // block
        if abs(qb - kb) <= wb or qb < gb or kb < gb:
            assert blocks[0, 0, i, j]
        assert blocks[0, 0, i, j] == mask[qb * block, kb * block]
    extra = mask[::block, ::block] & ~materialize(bigbird_mask(N, block, wb, gb, 0, 5), N)[::block, ::block]
    assert (extra.sum(-1) <= r).all() and extra.any(), "random blocks: at most r per row, some new"


def test_local_largest_intermediate_and_flops_are_linear_in_N():
    B, H, N, w, D = 1, 2, 1024, 16, 8
    q, k, v = fresh_qkv(B=B, H=H, N=N, D=D, dtype=torch.float32)
    biggest = largest_intermediate(local, q, k, v, window=w)
    assert biggest.numel <= 4 * B * H * N * (2 * w + 1), biggest  # slabs of c + 2w <= 4w keys
    assert largest_intermediate(dense_attention, q, k, v).numel >= B * H * N * N
    flops = count_flops(local, q, k, v, window=w)
    assert flops <= 16 * B * H * N * w * D, flops  # 2 matmuls of 2·N·(c + 2w)·D, c + 2w <= 4w
    assert count_flops(dense_attention, q, k, v) >= 4 * B * H * N * N * D


@pytest.mark.parametrize("name, kwargs, visible", [
    ("strided", {"stride": 32}, lambda N: N * (32 + N // 32)),
    ("fixed", {"stride": 32, "summary": 2}, lambda N: N * (32 + 2 * N // 32)),
])
def test_strided_and_fixed_cost_scales_with_the_pattern_not_N_squared(name, kwargs, visible):
    """Largest tensor and FLOPs stay within a constant of the number of visible entries."""
    B, H, N, D = 1, 2, 1024, 8
    q, k, v = fresh_qkv(B=B, H=H, N=N, D=D, dtype=torch.float32)
    fn = VARIANTS[name]
    assert largest_intermediate(fn, q, k, v, **kwargs).numel <= 2 * B * H * visible(N)
    assert count_flops(fn, q, k, v, **kwargs) <= 4 * 2 * B * H * visible(N) * D
    assert 2 * B * H * visible(N) < B * H * N * N / 4  # the bounds above are far from dense


def test_dilated_cost_does_not_grow_with_the_dilation():
    """A dilated window is a plain window inside each residue class: O(N·w), whatever δ."""
    B, H, N, D, w = 1, 2, 1024, 8, 8
    q, k, v = fresh_qkv(B=B, H=H, N=N, D=D, dtype=torch.float32)
    for dilation in (1, 4, 16):
        biggest = largest_intermediate(VARIANTS["dilated"], q, k, v, window=w, dilation=dilation)
        assert biggest.numel <= 4 * B * H * (N + 16) * (2 * w + 1), (dilation, biggest)
        flops = count_flops(VARIANTS["dilated"], q, k, v, window=w, dilation=dilation)
        assert flops <= 16 * B * H * (N + 16) * (2 * w + 1) * D, (dilation, flops)


def test_longformer_global_keys_inside_the_window_count_once():
    q, k, v = fresh_qkv(N=24)
    g = torch.tensor([3, 4, 5, 12])  # 4 and 5 fall inside the windows of 3's neighbours
    torch.testing.assert_close(longformer(q, k, v, window=2, global_tokens=g),
                               dense_with(longformer_mask(2, g), q, k, v), atol=1e-12, rtol=1e-10)


def test_float32_and_gradients_match_the_reference():
    q, k, v = (x.requires_grad_() for x in fresh_qkv(N=19, D=4))
    for fn, kw in [(local, {"window": 3}), (longformer, {"window": 2, "global_tokens": 2}),
                   (VARIANTS["strided"].fn, {"stride": 4}),
                   (VARIANTS["fixed"].fn, {"stride": 5, "summary": 2})]:
        grads = torch.autograd.grad(fn(q, k, v, **kw).sum(), (q, k, v))
        ref = torch.autograd.grad(VARIANTS[fn.__name__].reference(q, k, v, **kw).sum(), (q, k, v))
        for got, exp in zip(grads, ref):
            torch.testing.assert_close(got, exp, atol=1e-10, rtol=1e-8)
    q32, k32, v32 = fresh_qkv(N=50, dtype=torch.float32)
    torch.testing.assert_close(local(q32, k32, v32, window=7),
                               dense_with(local_mask(7), q32, k32, v32), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("call", [
    lambda q, k, v: local(q, k, v, window=-1),
    lambda q, k, v: VARIANTS["strided"](q, k, v, stride=0),
    lambda q, k, v: VARIANTS["fixed"](q, k, v, stride=0),
    lambda q, k, v: VARIANTS["fixed"](q, k, v, stride=4, summary=-1),
    lambda q, k, v: longformer(q, k, v, window=1, global_tokens=torch.tensor([99])),
])
def test_bad_hyperparameters_raise(call):
    with pytest.raises(ValueError):
        call(*fresh_qkv(N=10))
