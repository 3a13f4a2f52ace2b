"""Each grading check passes on a correct answer and fails, with a message a student can act on,
on a wrong one."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from attnkit import causal_mask, compare_speed, dense_attention
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


def _sleepy(seconds):
    """A stand-in answer: the right result (2x) after ``seconds``."""
    import time as _time

    def fn(x):
        _time.sleep(seconds)
        return x * 2
    return fn


def _inputs(seed):
    return (torch.randn(64, generator=torch.Generator().manual_seed(seed)),)


def _doubled(out, x):
    G.check_tensor(out, x * 2, name="fn(x)", axes=None)


def test_check_speedup_passes_a_fast_function_and_fails_a_slow_one():
    """Sleep-based stand-ins: a 40× gap passes a 4× bar (also when a loaded machine makes each
    sleep a few ms longer); equal times (ratio ~1, far below the bar) fail after one attempt
    without retries."""
    slow = _sleepy(0.04)
    assert G.check_speedup(_sleepy(0.001), slow, _inputs, min_speedup=4.0, check=_doubled, rounds=3) >= 4.0
    calls = []

    def as_slow(x):
        calls.append(1)
        return slow(x)

    with pytest.raises(AssertionError, match="at least 4× faster"):
        G.check_speedup(as_slow, slow, _inputs, min_speedup=4.0, check=_doubled, rounds=3)
    assert len(calls) == 3 + 2  # one attempt (3 rounds + 2 warm-up): far below the bar, no retry


def _caching(key):
    """The slow computation once per key, then the stored result: the answer of issue 17."""
    store = {}
    slow = _sleepy(0.02)

    def fn(x):
        k = key(x)
        if k not in store:
            store[k] = slow(x)
        return store[k]
    return fn


_CACHE_KEYS = {
    "identity": id,
    "data_ptr": lambda x: x.data_ptr(),
    "value_hash": lambda x: round(x.sum().item(), 6),
    "version": lambda x: (x._version, tuple(x.shape)),
    "shape": lambda x: tuple(x.shape),  # the last result for any input of this shape
}


@pytest.mark.parametrize("kind", sorted(_CACHE_KEYS))
def test_check_speedup_fails_answers_that_cache_their_outputs(kind):
    """On the same inputs every round (``compare_speed``) the cache makes the answer look 20×
    faster; with fresh inputs (and each result checked) it gains nothing."""
    fn, slow = _caching(_CACHE_KEYS[kind]), _sleepy(0.02)
    x = _inputs(1)[0]
    assert compare_speed(fn, slow, x, rounds=3, warmup=1).speedup > 4.0  # the old check is fooled
    fn = _caching(_CACHE_KEYS[kind])
    with pytest.raises(AssertionError, match="at least 4× faster|differ from the reference"):
        G.check_speedup(fn, slow, _inputs, min_speedup=4.0, check=_doubled, rounds=3)


def test_check_speedup_fails_an_answer_keyed_on_a_weak_reference():
    import weakref

    store = {}  # id -> (weak reference to the input, result): a hit only while that input lives
    slow = _sleepy(0.02)

    def fn(x):
        ref, out = store.get(id(x), (None, None))
        if ref is None or ref() is not x:
            out = slow(x)
            store[id(x)] = (weakref.ref(x), out)
        return out
    with pytest.raises(AssertionError, match="at least 4× faster"):
        G.check_speedup(fn, slow, _inputs, min_speedup=4.0, check=_doubled, rounds=3)


def test_check_speedup_inputs_are_never_reused_nor_predictable():
    """Every call (warm-up, timed, both sides, the work probe) sees tensors no other call saw:
    other objects, other values; the seeds come from the operating system, so an answer cannot
    compute the results ahead for the seeds it expects."""
    seen = []

    def record(tag, seconds):
        inner = _sleepy(seconds)

        def fn(x):
            seen.append((tag, x.sum().item()))
            return inner(x)
        return fn

    seeds = []

    def inputs(seed):
        seeds.append(seed)
        return _inputs(seed)

    G.check_speedup(record("a", 0.001), record("b", 0.04), inputs, min_speedup=4.0, check=_doubled,
                    rounds=3, max_elements=10_000)
    assert len(seen) == 2 * (2 + 3) + 1  # warm-up, timed rounds, one probe call of fn
    assert len({v for _, v in seen}) == len(seen)  # all distinct values
    assert len(set(seeds)) == len(seeds) and max(seeds) > 2 ** 40
    seeds2 = []
    G.check_speedup(_sleepy(0.001), _sleepy(0.04), lambda s: (seeds2.append(s), _inputs(s))[1],
                    min_speedup=4.0, check=_doubled, rounds=3)
    assert not set(seeds) & set(seeds2)


def test_check_speedup_checks_every_result():
    """A fast answer that is right only in its first calls fails at the first wrong result."""
    calls = []

    def fn(x):
        calls.append(1)
        return x * 2 if len(calls) < 4 else x * 2 + 1e-3

    with pytest.raises(AssertionError, match="differ from the reference"):
        G.check_speedup(fn, _sleepy(0.02), _inputs, min_speedup=4.0, check=_doubled, rounds=5)
    assert len(calls) == 4


def test_check_speedup_refuses_lazy_results_and_background_work():
    """A result whose work would happen when it is looked at (outside the timed region), and
    work left running on a thread after the call, do not count as fast."""
    class Lazy(torch.Tensor):
        pass

    with pytest.raises(AssertionError, match="plain torch.Tensor"):
        G.check_speedup(lambda x: (x * 2).as_subclass(Lazy), _sleepy(0.02), _inputs, min_speedup=4.0,
                        check=_doubled, rounds=3)
    import threading

    def later(x):  # returns at once; a thread fills the result in (and would slow the reference)
        out = torch.empty_like(x)
        threading.Thread(target=lambda: (_sleepy(0.05)(x), out.copy_(x * 2))).start()
        return out

    with pytest.raises(AssertionError, match="left a thread running"):
        G.check_speedup(later, _sleepy(0.02), _inputs, min_speedup=4.0, check=_doubled, rounds=3)
    import _thread

    def raw(x):  # the same through the low-level module, which threading.active_count() misses
        out = torch.empty_like(x)
        _thread.start_new_thread(lambda: (_sleepy(0.05)(x), out.copy_(x * 2)), ())
        return out

    with pytest.raises(AssertionError, match="left a thread running|differ from the reference"):
        G.check_speedup(raw, _sleepy(0.02), _inputs, min_speedup=4.0, check=_doubled, rounds=3)

    def hog(x):  # right and fast, but leaves a thread that slows down the reference's round
        threading.Thread(target=lambda: _sleepy(0.05)(x)).start()
        return x * 2

    with pytest.raises(AssertionError, match="left a thread running"):
        G.check_speedup(hog, _sleepy(0.02), _inputs, min_speedup=4.0, check=_doubled, rounds=3)


def test_check_speedup_measures_the_work_of_a_call_like_the_timed_ones():
    """max_elements / max_flops hold for a call on fresh inputs among the timed ones, measured in
    one call (a cache cannot do the work in one counter's call and skip it in the other's)."""
    def outer(x):  # allocates len(x)² elements and does 2·len(x)² FLOPs
        return (x[:, None] @ x[None, :]).sum(1) * 0 + x * 2

    fast_enough = dict(min_speedup=1e-9, check=_doubled, rounds=1, warmup=0)
    assert G.check_speedup(outer, _sleepy(0.0), _inputs, max_elements=64 * 64, max_flops=3 * 64 * 64,
                           **fast_enough) > 0
    with pytest.raises(AssertionError, match=r"allocated a tensor of shape \(64, 64\).*in a call of the speed test"):
        G.check_speedup(outer, _sleepy(0.0), _inputs, max_elements=64 * 63, **fast_enough)
    with pytest.raises(AssertionError, match="FLOPs in a call of the speed test"):
        G.check_speedup(outer, _sleepy(0.0), _inputs, max_flops=64 * 64, **fast_enough)
    probe_store = {}

    def cached_outer(x):  # caches by identity: the one measured call must still do the work
        if id(x) not in probe_store:
            probe_store[id(x)] = outer(x)
        return probe_store[id(x)]
    with pytest.raises(AssertionError, match="allocated a tensor"):
        G.check_speedup(cached_outer, _sleepy(0.0), _inputs, max_elements=64 * 63, **fast_enough)

