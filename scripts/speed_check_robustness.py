"""How often does a graded speed check fail a correct solution on a busy machine?

Runs assignment 2's part-5 check (the solution's ``sliding_window_attention`` against
``dense_attention`` at N=4096, w=128, float32, B=1, H=4, D=64, bar 3×, through
``attnkit.grading.check_speedup`` as the grade cell calls it: fresh inputs every round, each
result checked) ``--runs`` times, each in a fresh Python process, while ``--load`` busy-looping
processes compete for the CPU. Prints every run's measured speedup and the failure rate;
``--csv`` writes them.

    python scripts/speed_check_robustness.py --runs 30 --load 1
"""
from __future__ import annotations

import argparse
import csv
import multiprocessing as mp
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "solutions" / "a2_sparse_patterns" / "a2_sparse_patterns.py"

# One graded run: define the solution's function from the source notebook, then run the check.
ONE_RUN = r"""
import json, math, re, sys, torch
import torch.nn.functional as F
from attnkit import dense_attention, grading
src = open(sys.argv[1]).read()
cell = src[src.index("def sliding_window_attention"):src.index("# %% nbgrader", src.index("def sliding_window_attention"))]
exec(cell)
from attnkit import fixed
inputs = lambda seed: grading.random_qkv(1, 4, 4096, 64, seed=seed, dtype=torch.float32)
right = lambda out, q, k, v: grading.check_tensor(out, fixed.local(q, k, v, window=128),
                                                  atol=1e-4, rtol=1e-3)
try:
    s = grading.check_speedup(lambda q, k, v: sliding_window_attention(q, k, v, 128),
                              lambda q, k, v: dense_attention(q, k, v), inputs, min_speedup=3.0, check=right,
                              max_elements=4 * 4 * 4096 * 128, max_flops=16 * 4 * 4096 * 128 * 64,
                              name="sliding_window_attention")
    print(json.dumps({"passed": True, "speedup": s}))
except AssertionError as e:
    print(json.dumps({"passed": False, "speedup": float(re.search(r"is ([0-9.]+)×", str(e)).group(1))}))
"""


def _burn(stop) -> None:
    """Keep one core busy until ``stop`` is set."""
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x = (x * 31 + 7) % 1_000_003


def main(argv=None) -> int:
    import json

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--load", type=int, default=1, help="busy processes running alongside (default 1)")
    p.add_argument("--csv", type=Path, help="write run, passed, speedup, seconds")
    args = p.parse_args(argv)

    stop = mp.Event()
    burners = [mp.Process(target=_burn, args=(stop,), daemon=True) for _ in range(args.load)]
    for b in burners:
        b.start()
    rows = []
    try:
        for run in range(1, args.runs + 1):
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", ONE_RUN, str(SOURCE)], capture_output=True,
                                 text=True, check=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            seconds = time.perf_counter() - t0
            rows.append((run, result["passed"], result["speedup"], seconds))
            print(f"run {run:2d}: {'pass' if result['passed'] else 'FAIL'}  "
                  f"speedup {result['speedup']:5.2f}×  ({seconds:.1f} s)", flush=True)
    finally:
        stop.set()
        for b in burners:
            b.join(timeout=5)
    fails = sum(not r[1] for r in rows)
    speeds = [r[2] for r in rows]
    print(f"\n{len(rows)} runs with {args.load} busy process(es): {fails} failed "
          f"({100 * fails / len(rows):.0f}%); speedup min {min(speeds):.2f}×, "
          f"median {statistics.median(speeds):.2f}×, max {max(speeds):.2f}× (bar 3×)")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["run", "passed", "speedup", "seconds"])
            w.writerows(rows)
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
