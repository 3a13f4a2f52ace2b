"""Audit every registered variant on the CPU: measured time against the work its cost formula names.

    .venv/bin/python scripts/variant_audit.py [--n 8192] [--threads 1] [--variants local ...] [--top 3]

For each entry of :data:`attnkit.VARIANTS` at length N (B=1, H=4, D=64, float32, forward, no
gradient; the long-sequence settings of :data:`attnkit.bench.BENCH_KWARGS`):

    ms          median of 5 calls after a warm-up
    GFLOP       matmul FLOPs (:func:`attnkit.measure.count_flops`; a multiply-add is 2)
    GFLOP/s     GFLOP / time: how close the call runs to the machine's matmul rate
    peak MiB    bytes allocated and alive at once (:func:`attnkit.measure.peak_memory`)
    largest     the largest tensor the call allocates, as a multiple of N·D (one q-sized tensor)
    top ops     the operators with the most self CPU time (``torch.profiler``), as % of the call

A variant whose GFLOP/s is low next to the matmul-bound ones spends its time outside matmuls: the
top ops say where (elementwise passes over a large tensor, copies, Python loops). Prints a
Markdown table for docs/benchmarks.md ("Every variant against its cost formula").
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

import attnkit  # noqa: F401  (registers every variant)
from attnkit.bench import bench_kwargs
from attnkit.measure import count_flops, largest_intermediate, peak_memory
from attnkit.registry import VARIANTS

B, H, D = 1, 4, 64
SKIP = {"dense"}  # the N×N baseline itself: 1 GiB of scores at N=8192, audited by its formula


def _median_ms(fn, *args, calls: int = 5) -> float:
    fn(*args)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _top_ops(fn, *args, top: int) -> str:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn(*args)
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows) or 1
    return ", ".join(f"{e.key.removeprefix('aten::')} {100 * e.self_cpu_time_total / total:.0f}%"
                     for e in rows[:top])


def audit(name: str, N: int, top: int) -> dict:
    kw = bench_kwargs(name)
    g = torch.Generator().manual_seed(N)
    q, k, v = (torch.randn(B, H, N, D, generator=g) for _ in range(3))

    def call(q, k, v):
        return VARIANTS[name](q, k, v, **kw)

    with torch.no_grad():
        ms = _median_ms(call, q, k, v)
        flops = count_flops(call, q, k, v)
        peak = peak_memory(call, q, k, v)
        largest = largest_intermediate(call, q, k, v)
        ops = _top_ops(call, q, k, v, top=top)
    return {"variant": name, "kwargs": " ".join(f"{a}={b}" for a, b in kw.items()), "cost": VARIANTS[name].cost,
            "ms": ms, "gflop": flops / 1e9, "gflops": flops / 1e9 / (ms / 1e3), "peak_mib": peak / 2**20,
            "largest": largest.numel / (N * D), "top": ops}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8192)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", nargs="+", default=None)
    parser.add_argument("--top", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = args.variants or [n for n in VARIANTS if n not in SKIP]
    rows = []
    for name in names:
        rows.append(audit(name, args.n, args.top))
        r = rows[-1]
        print(f"{name}: {r['ms']:.1f} ms, {r['gflop']:.2f} GFLOP, {r['gflops']:.1f} GFLOP/s, "
              f"{r['peak_mib']:.0f} MiB, largest {r['largest']:.1f}·N·D; {r['top']}", file=sys.stderr, flush=True)
    print(f"\nN={args.n}, B={B}, H={H}, D={D}, float32, {args.threads} thread(s), torch {torch.__version__}\n")
    print("| variant | settings | cost | ms | GFLOP | GFLOP/s | peak MiB | largest (× N·D) | where the time goes |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        print(f"| `{r['variant']}` | {r['kwargs']} | {r['cost']} | {r['ms']:.1f} | {r['gflop']:.2f} | "
              f"{r['gflops']:.1f} | {r['peak_mib']:.0f} | {r['largest']:.1f} | {r['top']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
