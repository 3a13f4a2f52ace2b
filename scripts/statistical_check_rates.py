"""False-failure rates of assignment 3's statistical grade checks, measured on correct answers.

The hidden tests of parts 6 and 7 draw random features with fixed seeds, so for one student they
are deterministic; over the choice of seeds, a *correct* answer could still fail by bad luck.
This script repeats each check with ``--reps`` different seeds using the kit's reference
implementations (``attnkit.kernel``) and reports how often each fails; it also reports how
often the plausible wrong answers fail (the power of the checks).

    python scripts/statistical_check_rates.py --reps 2000
"""
from __future__ import annotations

import argparse
import math

import torch

from attnkit.grading import check_unbiased
from attnkit.kernel import orthogonal_gaussian

torch.set_default_dtype(torch.float64)

PAIRS = [  # (q, k, m) as in the visible and hidden tests of part 6
    ([0.3, -0.2, 0.5, 0.1], [0.4, 0.1, -0.3, 0.2], 8),
    ([0.6, 0.2, -0.4, 0.3], [0.5, -0.1, 0.2, 0.6], 16),
    ([-0.5, 0.3, 0.2, -0.4, 0.1, 0.2], [0.2, 0.4, -0.5, 0.1, 0.3, -0.2], 4),
    ([0.7, 0.0, 0.1, -0.6], [-0.6, 0.1, 0.0, 0.5], 32),
]


# Feature maps for a batch of draws: x (D,), w (draws, m, D) -> (draws, m).
def positive(x, w):  # the solution's formula (attnkit.kernel.positive_features, batched)
    return torch.exp(w @ x - (x * x).sum() / 2) / math.sqrt(w.shape[-2])


def no_shift(x, w):  # wrong: misses -|x|²/2
    return torch.exp(w @ x) / math.sqrt(w.shape[-2])


def no_sqrt_m(x, w):  # wrong: not divided by sqrt(m)
    return torch.exp(w @ x - (x * x).sum() / 2)


def unbiased_fails(features, seed: int, draws: int = 4000) -> bool:
    for q, k, m in PAIRS:
        q, k = torch.tensor(q), torch.tensor(k)
        w = torch.randn(draws, m, len(q), generator=torch.Generator().manual_seed(seed))
        est = (features(q, w) * features(k, w)).sum(-1)  # (draws,)
        try:
            check_unbiased(est, math.exp(q @ k))
        except AssertionError:
            return True
    return False


def norms_fail(D: int, seed: int, draws: int = 400) -> bool:
    norms = torch.cat([orthogonal_gaussian(D, D, seed=seed * 1000 + s, dtype=torch.float64).norm(dim=1)
                       for s in range(draws)])
    chi_mean = math.sqrt(2) * math.exp(math.lgamma((D + 1) / 2) - math.lgamma(D / 2))
    try:
        check_unbiased(norms, chi_mean)
    except AssertionError:
        return True
    return norms.std() <= 0.2


def mse_fails(seed: int, D: int = 16, m: int = 16, n_seeds: int = 300) -> bool:
    deltas = torch.randn(30, D, generator=torch.Generator().manual_seed(seed))
    deltas = deltas / deltas.norm(dim=1, keepdim=True)
    exact = torch.exp(-(deltas * deltas).sum(-1) / 2)

    def mse(draw):
        return torch.stack([(torch.cos(deltas @ draw(s).T).mean(-1) - exact) ** 2
                            for s in range(seed * 1000, seed * 1000 + n_seeds)]).mean()

    orth = mse(lambda s: orthogonal_gaussian(m, D, seed=s, dtype=torch.float64))
    iid = mse(lambda s: torch.randn(m, D, generator=torch.Generator().manual_seed(s)))
    return not orth < 0.6 * iid


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=2000)
    args = p.parse_args(argv)
    n, small = args.reps, max(args.reps // 20, 20)
    rates = {
        "part 6 unbiasedness, correct features": sum(unbiased_fails(positive, s) for s in range(n)) / n,
        "part 6, wrong: no -|x|²/2 (should be 1)": sum(unbiased_fails(no_shift, s) for s in range(small)) / small,
        "part 6, wrong: no 1/sqrt(m) (should be 1)": sum(unbiased_fails(no_sqrt_m, s) for s in range(small)) / small,
        "part 7 chi norms, correct (D=4 and D=8)": sum(norms_fail(4, s, 200) or norms_fail(8, s) for s in range(small)) / small,
        "part 7 orthogonal MSE < 0.6 iid, correct": sum(mse_fails(s) for s in range(small)) / small,
    }
    for what, rate in rates.items():
        print(f"{what:<45} fails {rate:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
