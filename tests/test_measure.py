"""Measuring tools give the figures of computations whose cost is known by hand."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnkit import compare_speed, count_flops, dense_attention, largest_intermediate, peak_memory
from attnkit.measure import compare_speed_fresh
from attnkit.measure import MMAP_ENV, SpeedResult, time_call
from strategies import make_qkv, seeds, shapes


@settings(max_examples=15, deadline=None)
@given(shape=shapes(same_dv=True), seed=seeds)
def test_dense_flops_are_two_matmuls(shape, seed):
    q, k, v = make_qkv(shape, seed, dtype=torch.float32)
    B, H, N, M, D, _ = shape
    # Q Kᵀ and P V: B·H·N·M·D multiply-adds each, and a multiply-add is 2 FLOPs.
    assert count_flops(dense_attention, q, k, v) == 4 * B * H * N * M * D


def test_dense_flops_with_different_value_width():
    B, H, N, M, D, Dv = 2, 3, 5, 7, 4, 9
    q, k, v = make_qkv((B, H, N, M, D, Dv), seed=0, dtype=torch.float32)
    assert count_flops(dense_attention, q, k, v) == 2 * B * H * N * M * (D + Dv)


@settings(max_examples=10, deadline=None)
@given(n=st.integers(1, 20), k=st.integers(1, 20), m=st.integers(1, 20))
def test_matmul_flops(n, k, m):
    a, b = torch.randn(n, k), torch.randn(k, m)
    assert count_flops(lambda a, b: a @ b, a, b) == 2 * n * k * m
    assert count_flops(lambda a, b: (a @ b) @ b.t(), a, b) == 2 * n * k * m + 2 * n * m * k


def test_elementwise_ops_cost_no_flops():
    x = torch.randn(50, 50)
    assert count_flops(lambda x: (x.exp() + 1).sin(), x) == 0


@settings(max_examples=10, deadline=None)
@given(shape=shapes(), seed=seeds)
def test_largest_intermediate_of_dense_is_the_score_matrix(shape, seed):
    B, H, N, M, D, Dv = shape
    q, k, v = make_qkv(shape, seed, dtype=torch.float32)
    rec = largest_intermediate(dense_attention, q, k, v)
    # The scores (B·H·N·M) are the largest tensor unless the output (B·H·N·Dv) is larger;
    # Kᵀ is a view that the matmul reads in place.
    assert rec.numel == max(B * H * N * M, B * H * N * Dv)


def test_largest_intermediate_reports_the_score_matrix():
    B, H, N, M, D = 2, 3, 40, 30, 4
    q, k, v = make_qkv((B, H, N, M, D, D), seed=1, dtype=torch.float32)
    rec = largest_intermediate(dense_attention, q, k, v)
    assert rec.numel == B * H * N * M
    assert rec.nbytes == 4 * B * H * N * M and rec.dtype == torch.float32
    assert rec.shape in {(B, H, N, M), (B * H, N, M)}


def test_largest_intermediate_of_elementwise_ops():
    x = torch.randn(30, 20)
    rec = largest_intermediate(lambda x: (x.view(600) * 2 + 1).sin(), x)
    assert rec.numel == 600 and rec.shape == (600,)


def test_views_are_not_counted():
    x = torch.randn(100, 10)
    # Reshape, slice and transpose are views of x; only exp allocates, and only 10 elements.
    rec = largest_intermediate(lambda x: x.view(-1)[:10].view(2, 5).t().exp(), x)
    assert rec.numel == 10 and rec.op == "exp"
    with pytest.raises(ValueError, match="allocated no tensors"):
        largest_intermediate(lambda x: x.view(-1).view(10, 100).t()[3:], x)


def test_peak_memory_of_a_known_temporary():
    n = 256
    x = torch.randn(4)

    def one_temporary(x):
        t = torch.ones(n, n, dtype=torch.float32)  # 4·n² bytes
        return t.sum() + x.sum()

    peak = peak_memory(one_temporary, x)
    assert 4 * n * n <= peak < 4 * n * n + 1024


def test_peak_memory_counts_what_is_alive_at_once():
    n = 128

    def three_alive(x):
        a = torch.ones(n, n)
        b = a * 2
        c = a + b  # a, b and c all alive here: 3 · 4n² bytes
        return c.sum()

    def one_at_a_time(x):
        for _ in range(5):  # each temporary dies before the next is made
            torch.ones(n, n).sum()

    x = torch.randn(4)
    assert 3 * 4 * n * n <= peak_memory(three_alive, x) < 3 * 4 * n * n + 1024
    assert 4 * n * n <= peak_memory(one_at_a_time, x) < 2 * 4 * n * n


def test_peak_memory_tracks_a_temporary_kept_through_a_view():
    """``@`` returns a view of a tensor it drops at once: the storage stays alive with the view."""
    B, H, N, D = 1, 2, 64, 8
    q, k, _ = make_qkv((B, H, N, N, D, D), seed=5, dtype=torch.float32)

    def scores_and_exp(q, k):
        s = q @ k.transpose(-2, -1)  # (B, H, N, N), alive until the end
        e = s.exp()  # a second (B, H, N, N)
        return e.sum() + s.sum()

    score_bytes = 4 * B * H * N * N
    assert 2 * score_bytes <= peak_memory(scores_and_exp, q, k) < 2 * score_bytes + 1024


def test_peak_memory_of_dense_attention_grows_with_n_squared():
    B, H, D = 1, 2, 8
    peaks = []
    for N in (32, 64):
        q, k, v = make_qkv((B, H, N, N, D, D), seed=N, dtype=torch.float32)
        peaks.append(peak_memory(dense_attention, q, k, v))
    # Scores, their exponentials and the normalised weights are alive at once at the peak.
    for N, peak in zip((32, 64), peaks):
        assert 2 * 4 * B * H * N * N <= peak <= 4 * 4 * B * H * N * N, (N, peak)
    assert 3.0 < peaks[1] / peaks[0] < 5.0  # doubling N roughly quadruples the peak


def test_compare_speed_interleaves_and_measures_a_known_ratio():
    calls = []

    def fast():
        calls.append("a")
        time.sleep(0.002)

    def slow():
        calls.append("b")
        time.sleep(0.006)

    rounds, warmup = 5, 2
    res = compare_speed(fast, slow, rounds=rounds, warmup=warmup)
    assert isinstance(res, SpeedResult)
    assert len(res.times_a) == len(res.times_b) == rounds
    # Warm-up runs A then B; the timed rounds alternate which goes first: AB, BA, AB, ...
    assert calls[: 2 * warmup] == ["a", "b"] * warmup
    timed = [calls[2 * warmup + 2 * r: 2 * warmup + 2 * r + 2] for r in range(rounds)]
    assert timed == [["a", "b"] if r % 2 == 0 else ["b", "a"] for r in range(rounds)]
    assert len(calls) == 2 * (warmup + rounds)
    # Sleep never returns early; a loaded machine may add a few ms to some rounds.
    assert all(t >= 0.002 for t in res.times_a) and all(t >= 0.006 for t in res.times_b)
    assert 0.002 <= res.median_a < 0.008
    assert 0.006 <= res.median_b < 0.015
    assert res.median_a < res.median_b
    assert 2.0 < res.speedup < 4.0
    assert res.speedup == pytest.approx(sorted(b / a for a, b in zip(res.times_a, res.times_b))[2])
    assert "faster" in str(res)


def test_compare_speed_passes_arguments_to_both():
    seen = []
    res = compare_speed(lambda x, *, y: seen.append((x, y)), lambda x, *, y: seen.append((x, y)),
                        1, y=2, rounds=3, warmup=1)
    assert seen == [(1, 2)] * 8 and len(res.times_a) == 3


def test_compare_speed_fresh_interleaves_on_fresh_inputs_and_verifies_a():
    """ABBA order as compare_speed, but every call on its own new inputs (A and B of one round
    too), each A result verified right after its call, and one probe call at a random round."""
    calls, verified, probed = [], [], []

    def make(seed):
        return (torch.full((3,), float(seed % 1000)), seed)

    def fn(tag, seconds):
        def f(x, seed):
            calls.append((tag, seed))
            time.sleep(seconds)
            return x + 1
        return f

    res = compare_speed_fresh(fn("a", 0.01), fn("b", 0.03), make, rounds=5, warmup=2,
                              verify=lambda out, args: verified.append((calls[-1], args[1])),
                              probe=lambda args: probed.append(args[1]))
    assert len(res.times_a) == len(res.times_b) == 5 and 1.5 < res.speedup < 4.0  # ~3 (sleep runs long under load)
    assert [t for t, _ in calls] == ["a", "b", "b", "a"] * 3 + ["a", "b"]  # rounds -2..4: AB, BA, ...
    seeds = [s for _, s in calls] + probed
    assert len(set(seeds)) == len(seeds) == 2 * 7 + 1
    assert len(verified) == 7 and all(call == ("a", s) for call, s in verified)  # A only, just after it


def test_time_call_measures_wall_time():
    t = time_call(time.sleep, 0.003)
    assert 0.003 <= t < 0.05


def test_count_flops_counts_the_cpu_fused_attention_kernel():
    """On the CPU, F.scaled_dot_product_attention runs a fused kernel that torch's counter has no
    formula for; the kit counts it as the two matmuls it replaces (4·B·H·N·M·D for D = Dv)."""
    import torch.nn.functional as F

    q, k, v = torch.randn(2, 3, 40, 8), torch.randn(2, 3, 24, 8), torch.randn(2, 3, 24, 8)
    expected = 4 * 2 * 3 * 40 * 24 * 8
    assert count_flops(F.scaled_dot_product_attention, q, k, v) == expected
    assert count_flops(dense_attention, q, k, v) == expected
    mask = torch.rand(40, 24) < 0.5
    assert count_flops(F.scaled_dot_product_attention, q, k, v, attn_mask=mask) == expected


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
def test_resident_peak_sees_a_large_temporary_and_agrees_with_peak_memory():
    """resident_peak counts a 64 MiB temporary in a child started with MMAP_ENV (exact there),
    and a call that allocates nothing shows (almost) nothing."""
    code = textwrap.dedent("""
        import torch
        from attnkit.measure import peak_memory, resident_peak
        x = torch.randn(1024, 1024)
        big = lambda: (x.repeat(16, 1) * 2).sum()   # 64 MiB twice, alive together at the peak
        small = lambda: x.sum()
        big()
        print(resident_peak(big) / 2**20, peak_memory(big) / 2**20, resident_peak(small) / 2**20)
    """)
    env = {**os.environ, **MMAP_ENV}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    rss, dispatch, small = map(float, out.stdout.split())
    assert 127 <= dispatch <= 129
    assert abs(rss - dispatch) < 4, (rss, dispatch)
    assert small < 4
