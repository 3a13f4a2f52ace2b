"""Each grading check passes on a correct answer and fails, with a message a student can act on,
on a wrong one."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from attnkit import causal_mask, dense_attention
from attnkit import grading as G
from strategies import fresh_qkv as _fresh_qkv


def fresh_qkv(B=2, H=3, N=8, D=4, **kw):
    return _fresh_qkv(B, H, N, D, **kw)


def causal_attention(q, k, v):
    return dense_attention(q, k, v, mask=causal_mask(q.shape[-2], k.shape[-2]))


# --- check_tensor ---------------------------------------------------------------------------

def test_check_tensor_passes_on_the_reference():
    q, k, v = fresh_qkv()
    G.check_tensor(dense_attention(q, k, v), dense_attention(q, k, v))
    G.check_tensor(dense_attention(q, k, v) + 1e-9, dense_attention(q, k, v))  # within tolerance


def test_check_tensor_on_none_mentions_return():
    with pytest.raises(AssertionError, match="return"):
        G.check_tensor(None, torch.zeros(2, 3), name="attention(q, k, v)")


def test_check_tensor_on_numpy_array():
    expected = torch.zeros(2, 3)
    with pytest.raises(AssertionError, match=r"torch\.Tensor, got ndarray"):
        G.check_tensor(expected.numpy(), expected)


def test_check_tensor_on_tuple_says_return_only_the_tensor():
    q, k, v = fresh_qkv()
    out = dense_attention(q, k, v, return_weights=True)
    with pytest.raises(AssertionError, match="tuple of 2 items"):
        G.check_tensor(out, out[0])


def test_check_tensor_wrong_dtype():
    q, k, v = fresh_qkv()
    expected = dense_attention(q, k, v)
    with pytest.raises(AssertionError, match=r"expected dtype torch\.float64, got torch\.float32"):
        G.check_tensor(expected.float(), expected)
    G.check_tensor(expected.float(), expected, check_dtype=False, atol=1e-5)


def test_check_tensor_transposed_heads_mentions_transpose():
    q, k, v = fresh_qkv(B=2, H=4, N=6, D=3)
    expected = dense_attention(q, k, v)  # (B, H, N, D)
    with pytest.raises(AssertionError) as err:
        G.check_tensor(expected.transpose(1, 2), expected)  # (B, N, H, D)
    msg = str(err.value)
    assert "transpose" in msg
    assert "(2, 4, 6, 3)" in msg and "(2, 6, 4, 3)" in msg and "(B, H, N, D)" in msg


def test_check_tensor_other_shape_errors():
    expected = torch.zeros(2, 4, 6, 3)
    with pytest.raises(AssertionError, match="view/reshape"):
        G.check_tensor(torch.zeros(2, 4, 9, 2), expected)
    with pytest.raises(AssertionError, match="3 dims instead of 4"):
        G.check_tensor(torch.zeros(2, 4, 6), expected)
    with pytest.raises(AssertionError, match=r"Dimension\(s\) \[2\] differ"):
        G.check_tensor(torch.zeros(2, 4, 7, 3), expected)


def test_check_tensor_nan_mentions_overflow_and_maximum():
    q, k, v = fresh_qkv()
    expected = dense_attention(q, k, v)
    got = expected.clone()
    got[1, 2, 3, 0] = float("nan")
    with pytest.raises(AssertionError) as err:
        G.check_tensor(got, expected)
    msg = str(err.value)
    assert "overflow" in msg and "maximum" in msg
    assert "(1, 2, 3, 0)" in msg and "1 entries" in msg


def test_check_tensor_single_wrong_entry_gives_index_and_values():
    expected = torch.arange(2 * 3 * 4 * 5, dtype=torch.float64).reshape(2, 3, 4, 5) / 8
    got = expected.clone()
    got[1, 0, 2, 3] = 99.5
    with pytest.raises(AssertionError) as err:
        G.check_tensor(got, expected)
    msg = str(err.value)
    assert "(1, 0, 2, 3)" in msg
    assert "got 99.5" in msg and f"expected {expected[1, 0, 2, 3].item():g}" in msg
    assert "1 of 120 entries" in msg


# --- check_causal ---------------------------------------------------------------------------

def test_check_causal_passes_for_causal_attention():
    q, k, v = fresh_qkv(N=12)
    G.check_causal(causal_attention, q, k, v)


def test_check_causal_fails_for_full_attention():
    q, k, v = fresh_qkv(N=12)
    with pytest.raises(AssertionError, match="not causal"):
        G.check_causal(dense_attention, q, k, v, name="dense")


def test_check_causal_catches_a_single_leak():
    """Causal except that the first query also sees the last key."""
    N = 10
    leaky = causal_mask(N)
    leaky[0, N - 1] = True

    q, k, v = fresh_qkv(N=N)
    with pytest.raises(AssertionError, match="output at position 0"):
        G.check_causal(lambda q, k, v: dense_attention(q, k, v, mask=leaky), q, k, v)


def test_check_causal_catches_a_leak_between_the_first_tokens():
    """Query 0 also sees key 1: only perturbing everything after position 0 reveals it."""
    N = 12
    leaky = causal_mask(N)
    leaky[0, 1] = True
    q, k, v = fresh_qkv(N=N)
    with pytest.raises(AssertionError, match="after position 0 changed the output at position 0"):
        G.check_causal(lambda q, k, v: dense_attention(q, k, v, mask=leaky), q, k, v)


def test_check_causal_passes_kwargs_through():
    q, k, v = fresh_qkv(N=9)
    G.check_causal(dense_attention, q, k, v, mask=causal_mask(9))


# --- check_weights_on -----------------------------------------------------------------------

def test_check_weights_on():
    w = torch.tensor([0.1, 0.7, 0.2], dtype=torch.float64)
    G.check_weights_on(w, [1, 2], expected=[0.7, 0.2], tol=1e-9)
    G.check_weights_on(w, [0], expected=[0.15], tol=0.06)
    with pytest.raises(AssertionError) as err:
        G.check_weights_on(w, [0], expected=[0.5], tol=0.1)
    msg = str(err.value)
    assert "weight on key 0 is 0.1000, expected 0.500" in msg
    assert "key 1: 0.700" in msg  # it names where the weight went instead


# --- check_flops / check_largest_intermediate ------------------------------------------------

def test_check_flops_around_the_budget():
    B, H, N, D = 1, 2, 16, 4
    q, k, v = fresh_qkv(B, H, N, D)
    flops = 4 * B * H * N * N * D
    assert G.check_flops(dense_attention, q, k, v, max_flops=flops) == flops
    with pytest.raises(AssertionError, match=f"did {flops:,} FLOPs; the budget is {flops - 1:,}"):
        G.check_flops(dense_attention, q, k, v, max_flops=flops - 1)


def test_check_flops_forwards_kwargs():
    q, k, v = fresh_qkv(1, 1, 6, 2)
    G.check_flops(dense_attention, q, k, v, max_flops=4 * 36 * 2, mask=causal_mask(6))


def test_check_largest_intermediate_around_the_budget():
    B, H, N, D = 1, 2, 16, 4
    q, k, v = fresh_qkv(B, H, N, D)
    scores = B * H * N * N
    assert G.check_largest_intermediate(dense_attention, q, k, v, max_elements=scores) == scores
    with pytest.raises(AssertionError) as err:
        G.check_largest_intermediate(dense_attention, q, k, v, max_elements=scores - 1, name="mine")
    msg = str(err.value)
    assert msg.startswith("mine allocated a tensor of shape")
    assert f"({scores:,} elements" in msg and f"limit is {scores - 1:,}" in msg


# --- check_equal_int ------------------------------------------------------------------------

@pytest.mark.parametrize("got", [42, torch.tensor(42), torch.tensor(42.0), 42.0, np.int64(42)])
def test_check_equal_int_accepts_integers(got):
    G.check_equal_int(got, 42)


@pytest.mark.parametrize("got, pattern", [
    (3.5, r"should be an integer, got 3\.5 \(float\)"),
    (torch.tensor(3.5), r"should be an integer, got 3\.5"),
    (torch.tensor([1, 2]), r"single integer, got a tensor of shape \(2,\)"),
    (np.float32(3.5), r"should be an integer, got \S*3\.5"),
    ("42", "should be an integer"),
    (True, "should be an integer"),
    (None, "should be an integer"),
])
def test_check_equal_int_rejects_non_integers(got, pattern):
    with pytest.raises(AssertionError, match=pattern):
        G.check_equal_int(got, 42)


def test_check_equal_int_wrong_value_gives_the_ratio():
    with pytest.raises(AssertionError) as err:
        G.check_equal_int(2048, 1024, name="flops", hint="Count a multiply-add as 2.")
    msg = str(err.value)
    assert "flops: expected 1,024, got 2,048" in msg
    assert "2×" in msg and msg.endswith("Count a multiply-add as 2.")
    with pytest.raises(AssertionError, match=re.escape("0.5×")):
        G.check_equal_int(torch.tensor(512), 1024)


# --- random_qkv -----------------------------------------------------------------------------

def test_random_qkv_is_deterministic_by_seed():
    a = G.random_qkv(2, 3, 5, 4, seed=7)
    b = G.random_qkv(2, 3, 5, 4, seed=7)
    c = G.random_qkv(2, 3, 5, 4, seed=8)
    for x, y, z in zip(a, b, c):
        assert torch.equal(x, y)
        assert not torch.equal(x, z)
    q, k, v = a
    assert not torch.equal(q, k) and not torch.equal(k, v)


def test_random_qkv_shapes_dtype_and_scale():
    q, k, v = G.random_qkv(2, 3, 5, 4, M=7, seed=3, dtype=torch.float32, scale=10.0)
    assert q.shape == (2, 3, 5, 4) and k.shape == (2, 3, 7, 4) and v.shape == (2, 3, 7, 4)
    assert q.dtype == k.dtype == v.dtype == torch.float32
    q1, k1, v1 = G.random_qkv(2, 3, 5, 4, M=7, seed=3, dtype=torch.float32)
    torch.testing.assert_close(q, 10 * q1)
    torch.testing.assert_close(k, 10 * k1)
    torch.testing.assert_close(v, v1)  # values are not scaled


# ---------------------------------------------------------------- masks and speed

def test_check_mask_mod_names_the_disagreeing_pairs():
    from attnkit.fixed import local_mask

    G.check_mask_mod(local_mask(2), local_mask(2), 10)
    with pytest.raises(AssertionError, match=r"blocks \d+ pairs it should allow"):
        G.check_mask_mod(local_mask(1), local_mask(2), 10)
    with pytest.raises(AssertionError, match=r"allows \d+ \(query, key\) pairs it should not"):
        G.check_mask_mod(local_mask(3), local_mask(2), 10)
    with pytest.raises(AssertionError, match="Python `and`"):
        G.check_mask_mod(lambda b, h, i, j: i >= j and j >= 0, local_mask(2), 10)
    with pytest.raises(AssertionError, match="return the inner function"):
        G.check_mask_mod(None, local_mask(2), 10)


def test_check_speedup_passes_a_fast_function_and_fails_a_slow_one():
    """Sleep-based stand-ins: a 20× gap passes a 4× bar; equal times (ratio ~1, far below the
    bar) fail after one attempt without retries."""
    import time as _time

    def slow():
        _time.sleep(0.02)

    def fast():
        _time.sleep(0.001)

    assert G.check_speedup(fast, slow, min_speedup=4.0, rounds=3) >= 4.0
    calls = []

    def as_slow():
        calls.append(1)
        _time.sleep(0.02)

    with pytest.raises(AssertionError, match="at least 4× faster"):
        G.check_speedup(as_slow, slow, min_speedup=4.0, rounds=3)
    assert len(calls) == 3 + 2  # one attempt (3 rounds + 2 warm-up): far below the bar, no retry
