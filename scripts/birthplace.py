"""The birth-place experiment over seeds and variants: a markdown table of held-out accuracies.

    .venv/bin/python scripts/birthplace.py                       # QUICK, dense, seeds 0 1 2
    .venv/bin/python scripts/birthplace.py --config full --variants dense local performer
    .venv/bin/python scripts/birthplace.py --variants local --window 2 --jsonl build/bio.jsonl

Each (variant, seed) runs :func:`attnkit.biography.experiment`: the same model fine-tuned without
pretraining, pretrained with span corruption then fine-tuned, and the "always the most common
city" baseline. The table gives mean ± standard deviation over the seeds.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys

from attnkit.biography import FULL, QUICK, experiment

KWARGS = {"local": lambda a: {"window": a.window}, "performer": lambda a: {"m": a.m}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=["quick", "full"], default="quick")
    parser.add_argument("--variants", nargs="+", default=["dense"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--window", type=int, default=4, help="local: window w (keys i-w..i)")
    parser.add_argument("--m", type=int, default=64, help="performer: random features m")
    parser.add_argument("--jsonl", help="also append every run as one JSON line to this file")
    args = parser.parse_args(argv)
    config = {"quick": QUICK, "full": FULL}[args.config]
    rows = []
    for variant in args.variants:
        kwargs = KWARGS.get(variant, lambda a: {})(args)
        runs = []
        for seed in args.seeds:
            r = experiment(variant, seed=seed, config=config, **kwargs)
            r.update(kwargs)
            runs.append(r)
            print(json.dumps(r), file=sys.stderr, flush=True)
            if args.jsonl:
                with open(args.jsonl, "a") as f:
                    f.write(json.dumps({**r, "config": args.config}) + "\n")
        rows.append((variant, kwargs, runs))

    def ms(runs, key, scale=100.0):
        xs = [r[key] * scale for r in runs]
        sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
        return f"{statistics.mean(xs):.1f} ± {sd:.1f}"

    print(f"config={args.config}, seeds={args.seeds}: held-out accuracy in %, mean ± std")
    print("| variant | no pretraining | always most common | pretrained | pretrain s |")
    print("|---|---|---|---|---|")
    for variant, kwargs, runs in rows:
        name = variant + "".join(f" {k}={v}" for k, v in kwargs.items())
        print(f"| {name} | {ms(runs, 'no_pretraining')} | {ms(runs, 'baseline')} | {ms(runs, 'pretrained')} "
              f"| {ms(runs, 'seconds_pretrain', 1.0)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
