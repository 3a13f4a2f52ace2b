"""False-failure rate of assignment 5's training grade cell (part 6), measured on the solution.

The cell trains the probe of part 6 with fixed seeds, so for one student it is deterministic;
over the choice of seed a *correct* answer could still fail by bad luck. This script runs the
solution's own ``train_sigma`` (with its ``bell_attention`` and ``SigmaNet``, taken from the
solution source between the solution markers) for ``--seeds`` seeds, applies the cell's
thresholds, and prints the failure rate and the spread of what the thresholds test.

    python scripts/a5_training_rates.py --seeds 50
"""
from __future__ import annotations

import argparse
import re
import statistics
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "solutions" / "a5_learnable_window" / "a5_learnable_window.py"
SIGMA_MIN_GROWTH = 1.3  # sigma after 30 steps, both forms (the grade cell's threshold)
LOSS_RATIO = 0.5  # loss(max-1) < LOSS_RATIO · loss(PDF) with 3 global tokens


def solution_namespace() -> dict:
    """Execute the setup cell and the answer cells of the solution (not the grade cells)."""
    cells = re.split(r"^# %%(.*)$", SOURCE.read_text(), flags=re.M)
    ns: dict = {}
    for header, body in zip(cells[1::2], cells[2::2]):
        if '"grade_id": "setup"' in header or '"solution": true' in header:
            exec(compile(body, str(SOURCE), "exec"), ns)
    return ns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=50)
    args = parser.parse_args()
    ns = solution_namespace()
    train_sigma = ns["train_sigma"]
    fails, sigmas, ratios, zero_gaps = 0, [], [], []
    for seed in range(args.seeds):
        s1, l1 = train_sigma(False, seed=seed)
        s2, l2 = train_sigma(True, seed=seed)
        sigmas.append(min(s1[-1], s2[-1]))
        ratios.append(l1 / l2)
        ok = s1[-1] >= SIGMA_MIN_GROWTH and s2[-1] >= SIGMA_MIN_GROWTH and l1 < LOSS_RATIO * l2
        _, z1 = train_sigma(False, seed=seed, global_tokens=0)
        _, z2 = train_sigma(True, seed=seed, global_tokens=0)
        zero_gaps.append(abs(z1 - z2) / max(z1, 1e-3))
        ok = ok and abs(z1 - z2) < 1e-6 * max(z1, 1e-3) + 1e-9
        fails += not ok
    print(f"seeds: {args.seeds}; false failures: {fails}/{args.seeds} = {fails / args.seeds:.3f}")
    print(f"min over forms of sigma after 30 steps: min {min(sigmas):.3f}, median {statistics.median(sigmas):.3f} "
          f"(threshold {SIGMA_MIN_GROWTH})")
    print(f"loss ratio max-1 / PDF: max {max(ratios):.3f}, median {statistics.median(ratios):.3f} "
          f"(threshold {LOSS_RATIO})")
    print(f"no global tokens, relative loss gap between the forms: max {max(zero_gaps):.2e} (threshold 1e-6)")


if __name__ == "__main__":
    main()
