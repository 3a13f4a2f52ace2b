"""False-failure rates of assignment 7's training grade cells (parts 5b and 6), measured on the solution.

The cells run the birth-place experiment on fixed seeds (2 for dense, 4 for the variant), so for
one student they are deterministic; over the choice of seed a *correct* answer could still fail
by bad luck. This script executes the solution's setup and answer cells (taken from the solution
source, not the grade cells), runs its ``experiment`` for ``--seeds`` seeds with the dense model
and applies part 5b's thresholds, and for ``--variant-seeds`` seeds with the solution's variant
and applies part 6's. It prints the failure rates and the spread of what the thresholds test.

    python scripts/a7_training_rates.py --seeds 20 --variant-seeds 10
    python scripts/a7_training_rates.py --seeds 10 --first 10 --jsonl build/a7_rates.jsonl  # a second half, in parallel
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "solutions" / "a7_capstone" / "a7_capstone.py"
NO_PRE_SLACK = 0.05  # part 5b: no_pretraining <= baseline + 0.05 (and pretrained > no_pretraining,
                     # pretrained >= baseline)
VARIANT_LOSS = 2.5  # part 6: mean of the last 20 pretraining losses < 2.5


def solution_namespace() -> dict:
    """Execute the setup cell and the code answer cells of the solution (not the grade cells)."""
    cells = re.split(r"^# %%(.*)$", SOURCE.read_text(), flags=re.M)
    ns: dict = {}
    for header, body in zip(cells[1::2], cells[2::2]):
        if "[markdown]" in header:
            continue
        if '"grade_id": "setup"' in header or '"solution": true' in header:
            exec(compile(body, str(SOURCE), "exec"), ns)
    return ns


def passes_5b(r: dict) -> bool:
    """Part 5b's thresholds."""
    return (r["pretrained"] > r["no_pretraining"] and r["pretrained"] >= r["baseline"]
            and r["no_pretraining"] <= r["baseline"] + NO_PRE_SLACK)


def _spread(xs: list[float]) -> str:
    return (f"min {min(xs):.3f}, median {statistics.median(xs):.3f}, max {max(xs):.3f}, "
            f"mean {statistics.mean(xs):.3f} ± {statistics.stdev(xs) if len(xs) > 1 else 0:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="dense seeds (part 5b)")
    parser.add_argument("--variant-seeds", type=int, default=10, help="variant seeds (part 6)")
    parser.add_argument("--first", type=int, default=0, help="first seed")
    parser.add_argument("--jsonl", help="append every run as one JSON line to this file")
    args = parser.parse_args()
    ns = solution_namespace()
    experiment, build_model, graded = ns["experiment"], ns["build_model"], ns["GRADED"]

    def log(row: dict) -> None:
        print(json.dumps(row), flush=True)
        if args.jsonl:
            with open(args.jsonl, "a") as fh:
                fh.write(json.dumps(row) + "\n")

    dense, variant = [], []
    for seed in range(args.first, args.first + args.seeds):
        t0 = time.perf_counter()
        r = experiment(lambda s: build_model("dense", seed=s, config=graded), seed=seed, config=graded)
        r.update(part="5b", variant="dense", seed=seed, seconds=time.perf_counter() - t0,
                 ok=passes_5b(r))
        dense.append(r)
        log(r)
    for seed in range(args.first, args.first + args.variant_seeds):
        t0 = time.perf_counter()
        r = experiment(ns["variant_model"], seed=seed, config=graded)
        r.update(part="6", variant=ns["VARIANT"], kwargs=ns["VARIANT_KWARGS"], seed=seed,
                 seconds=time.perf_counter() - t0, ok=r["pretrain_loss"] < VARIANT_LOSS)
        variant.append(r)
        log(r)
    if dense:
        fails = sum(not r["ok"] for r in dense)
        print(f"part 5b (dense), seeds {args.first}..{args.first + args.seeds - 1}: false failures {fails}/{len(dense)}")
        for key in ("no_pretraining", "baseline", "pretrained"):
            print(f"  {key}: {_spread([r[key] for r in dense])}")
        print(f"  pretrained - no_pretraining: "
              f"{_spread([r['pretrained'] - r['no_pretraining'] for r in dense])} (threshold > 0)")
        print(f"  pretrained - baseline: {_spread([r['pretrained'] - r['baseline'] for r in dense])} (threshold >= 0)")
        print(f"  no_pretraining - baseline: {_spread([r['no_pretraining'] - r['baseline'] for r in dense])} "
              f"(threshold <= {NO_PRE_SLACK})")
        print(f"  seconds per experiment: {_spread([r['seconds'] for r in dense])}")
    if variant:
        fails = sum(not r["ok"] for r in variant)
        print(f"part 6 ({ns['VARIANT']} {ns['VARIANT_KWARGS']}): false failures {fails}/{len(variant)}")
        for key in ("pretrain_loss", "no_pretraining", "baseline", "pretrained"):
            print(f"  {key}: {_spread([r[key] for r in variant])}")


if __name__ == "__main__":
    main()
