"""False-failure rates of the statistical grade checks of assignments 3 and 4, measured on
correct answers.

The hidden tests of a3's parts 6 and 7 draw random features with fixed seeds, so for one student
they are deterministic; over the choice of seeds, a *correct* answer could still fail by bad luck.
The same holds for a4's collision rate of the LSH hash (part 1), the convergence of Sinkhorn
normalisation (part 5) and the error of RFA as m grows (part 7). This script repeats each check
with ``--reps`` different seeds using the kit's reference implementations (``attnkit.kernel``,
``attnkit.lsh``, ``attnkit.sinkhorn``, ``attnkit.rfa``) and reports how often each fails; it also
reports how often some plausible wrong answers fail (the power of the checks).

    python scripts/statistical_check_rates.py --reps 2000
    python scripts/statistical_check_rates.py --assignment a4 --reps 2000
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


def a3_rates(n: int, small: int) -> dict[str, float]:
    return {
        "part 6 unbiasedness, correct features": sum(unbiased_fails(positive, s) for s in range(n)) / n,
        "part 6, wrong: no -|x|²/2 (should be 1)": sum(unbiased_fails(no_shift, s) for s in range(small)) / small,
        "part 6, wrong: no 1/sqrt(m) (should be 1)": sum(unbiased_fails(no_sqrt_m, s) for s in range(small)) / small,
        "part 7 chi norms, correct (D=4 and D=8)": sum(norms_fail(4, s, 200) or norms_fail(8, s) for s in range(small)) / small,
        "part 7 orthogonal MSE < 0.6 iid, correct": sum(mse_fails(s) for s in range(small)) / small,
    }


# ---------------------------------------------------------------- assignment 4

def collision_fails(hash_fn, seed: int) -> bool:
    """a4 part 1: the collision rate of two vectors at angle θ under random hyperplanes is
    1 - θ/π within 5 standard errors, for the visible and the hidden (θ, D, trials)."""
    for j, (theta, D, trials) in enumerate([(math.pi / 3, 8, 2000), (math.pi / 6, 16, 4000),
                                            (math.pi / 2, 16, 4000), (3 * math.pi / 4, 16, 4000)]):
        g = torch.Generator().manual_seed(seed * 10 + j)
        x, u = torch.randn(2, D, generator=g)
        x = x / x.norm()
        u = u - (u @ x) * x
        u = u / u.norm()
        pair = torch.stack([x, math.cos(theta) * x + math.sin(theta) * u])  # (2, D) at angle θ
        h = hash_fn(pair, torch.randn(trials, D, 1, generator=g))  # (trials, 2)
        try:
            check_unbiased((h[:, 0] == h[:, 1]).double(), 1 - theta / math.pi)
        except AssertionError:
            return True
    return False


def lsh_hash_reference(x, rotations):
    from attnkit.lsh import hash_vectors
    return hash_vectors(x, rotations)


def lsh_hash_abs(x, rotations):  # wrong: argmax of |x̂R|, everything collides with 2 buckets
    return (x @ rotations).abs().argmax(-1)


def lsh_hash_random(x, rotations):  # wrong: one independent coin per row (collides half the time)
    return (torch.rand(rotations.shape[0], *x.shape[:-1]) < 0.5).long()


def sinkhorn_fails(seed: int) -> bool:
    """a4 part 5: with fresh logits, column sums are 1, and the L1 row error never rises over
    iters = 1, 2, 4, ..., 256 and ends 1000× below where it started (n = 5, τ = 0.75 and n = 12, τ = 0.3)."""
    from attnkit.sinkhorn import sinkhorn_normalise

    for n, tau in ((5, 0.75), (12, 0.3)):
        logits = torch.randn(3, n, n, generator=torch.Generator().manual_seed(seed))
        errors = []
        for iters in (1, 2, 4, 8, 16, 64, 256):
            P = sinkhorn_normalise(logits, iters=iters, temperature=tau)
            if (P.sum(-2) - 1).abs().max() >= 1e-9:
                return True
            errors.append((P.sum(-1) - 1).abs().sum(-1).max().item())
        if not (all(b <= a + 1e-12 for a, b in zip(errors, errors[1:])) and errors[-1] < 1e-3 * errors[0]):
            return True
    return False


def rfa_fails(seed: int, normalise: bool = True) -> bool:
    """a4 part 7: the median (over 5 draws of W) mean error of RFA to its m → ∞ limit falls at
    least 2× for each 16× more features, m = 16, 256, 4096 (σ = 1 and σ = 0.8)."""
    from attnkit.grading import random_qkv
    from attnkit.rfa import rfa_features, rfa_limit, rfa_weights

    for sigma in (1.0, 0.8):
        q, k, v = random_qkv(1, 2, 32, 8, seed=seed)
        limit = rfa_limit(q, k, v, sigma=sigma)
        errors = []
        for m in (16, 256, 4096):
            errs = []
            for s in range(5):
                w = rfa_weights(m, 8, sigma, 1000 * seed + s, dtype=q.dtype)
                features = rfa_features if normalise else _raw_fourier  # wrong: features of the raw q, k
                fq, fk = features(q, w), features(k, w)  # (1, 2, 32, 2m)
                out = (fq @ (fk.transpose(-2, -1) @ v)) / (fq @ fk.sum(-2).unsqueeze(-1))
                errs.append((out - limit).abs().mean().item())
            errors.append(sorted(errs)[2])
        if not all(b < 0.5 * a for a, b in zip(errors, errors[1:])):
            return True
    return False


def _raw_fourier(x, w):
    proj = x @ w.T
    return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1) / math.sqrt(w.shape[0])


def a4_rates(n: int, small: int) -> dict[str, float]:
    return {
        "a4 part 1 collision rate, correct hash": sum(collision_fails(lsh_hash_reference, s) for s in range(n)) / n,
        "a4 part 1, wrong: argmax |x̂R| (should be 1)": sum(collision_fails(lsh_hash_abs, s) for s in range(small)) / small,
        "a4 part 1, wrong: coin flip (should be 1)": sum(collision_fails(lsh_hash_random, s) for s in range(small)) / small,
        "a4 part 5 Sinkhorn convergence, correct": sum(sinkhorn_fails(s) for s in range(n)) / n,
        "a4 part 7 RFA error falls with m, correct": sum(rfa_fails(s) for s in range(small)) / small,
        "a4 part 7, wrong: raw q, k (should be 1)": sum(rfa_fails(s, normalise=False) for s in range(small)) / small,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=2000)
    p.add_argument("--assignment", choices=("a3", "a4", "all"), default="all")
    args = p.parse_args(argv)
    n, small = args.reps, max(args.reps // 20, 20)
    rates = {} if args.assignment == "a4" else a3_rates(n, small)
    if args.assignment != "a3":
        rates.update(a4_rates(n, small))
    for what, rate in rates.items():
        print(f"{what:<45} fails {rate:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
