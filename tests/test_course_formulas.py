"""Formulas and numbers the course text states, checked by computing them.

- Chapter 6: every variance formula of the random-feature estimates of exp(qᵀk) (trig and
  positive features, iid and orthogonal) is ``kernel.feature_variance``, which the chapter also
  plots; a seeded Monte Carlo estimate with the library's own feature maps agrees with it within
  its standard error.
- Chapter 8: the normalised bell curve's window sum, and with it the global tokens' share, obeys
  the bound the chapter states only for σ >= 1/√(2π); below, the sum exceeds 1 by the amounts
  quoted. The F1 gap between bell-curve and plain-window rows is the range quoted.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from attnkit import kernel
from attnkit.bellcurve import bell_bias

ROOT = Path(__file__).resolve().parents[1]
CH6 = ROOT / "course" / "06_kernels_and_linear_attention.py"
CH8 = ROOT / "course" / "08_learnable_window.py"


def markdown(path: Path) -> str:
    """The text of a py:percent source with the comment markers removed."""
    return re.sub(r"(?m)^# ?", "", path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------- chapter 6: variance of FAVOR

def draws(rows: int, D: int, R: int, orthogonal: bool, seed: int) -> torch.Tensor:
    """``(R, rows, D)``: R independent W, each distributed as ``gaussian_features(rows, D)``.

    Orthogonal W is blocks of D orthogonal rows, independent between blocks, the last block cut to
    ``rows % D`` rows; ``orthogonal_gaussian(R·D, D)`` is R independent such blocks.
    """
    if not orthogonal:
        return torch.randn(R, rows, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    full, part = divmod(rows, D)
    blocks = []
    if full:
        blocks.append(kernel.orthogonal_gaussian(R * full * D, D, seed, dtype=torch.float64).reshape(R, full * D, D))
    if part:
        blocks.append(kernel.orthogonal_gaussian(R * D, D, seed + 1, dtype=torch.float64).reshape(R, D, D)[:, :part])
    return torch.cat(blocks, dim=1)


def estimates(q, k, m, kind, orthogonal, R, seed):
    """``(P, R)``: φ(q_p)·φ(k_p) for P pairs under R independent draws of W with m features.

    One call of the library's feature map on all R·rows directions at once: its normalisation
    (√(2/m_all) or 1/√m_all) is R times smaller in square than for one W, hence the factor R.
    """
    rows = m if kind == "positive" else m // 2
    phi = kernel.positive_features if kind == "positive" else kernel.trig_features
    W = draws(rows, q.shape[-1], R, orthogonal, seed).reshape(R * rows, -1)  # (R·rows, D)
    prod = phi(q, W) * phi(k, W)  # (P, R·rows) positive; (P, 2·R·rows) trig: cos part, sin part
    return R * prod.reshape(q.shape[0], -1, R, rows).sum(dim=(1, 3))  # (P, R)


# pairs (q, k) in D = 4: q = k, near opposite, orthogonal, generic; norms below 1 so that the
# positive estimate's fourth moment, which sets the error of a variance estimate, stays moderate
PAIRS_Q = torch.tensor([[0.5, 0.2, -0.3, 0.1], [0.6, 0.0, 0.0, 0.0], [0.3, -0.4, 0.2, 0.1],
                        [0.4, 0.4, -0.2, 0.3]], dtype=torch.float64)
PAIRS_K = torch.tensor([[0.5, 0.2, -0.3, 0.1], [-0.5, 0.2, 0.0, 0.0], [0.4, 0.3, 0.0, 0.0],
                        [-0.2, 0.5, 0.4, -0.3]], dtype=torch.float64)
CASES = [  # (kind, orthogonal, m): one block, several blocks, a cut block (D = 4)
    ("trig", False, 8), ("trig", True, 8), ("trig", True, 12),
    ("positive", False, 8), ("positive", True, 4), ("positive", True, 6),
]


@pytest.mark.parametrize("kind, orthogonal, m", CASES)
def test_feature_variance_matches_monte_carlo(kind, orthogonal, m):
    R = 20_000
    est = estimates(PAIRS_Q, PAIRS_K, m, kind, orthogonal, R, seed=9)  # (P, R)
    mean, var = est.mean(1), est.var(1)
    true = torch.exp((PAIRS_Q * PAIRS_K).sum(-1))
    formula = kernel.feature_variance(PAIRS_Q, PAIRS_K, m, kind=kind, orthogonal=orthogonal)
    # standard errors: of the mean √(Var/R); of the sample variance √((μ₄ - Var²)/R)
    se_mean = (var / R).sqrt()
    se_var = (((est - mean[:, None]) ** 4).mean(1) - var ** 2).clamp(min=0).sqrt() / math.sqrt(R)
    exact = formula < 1e-12  # q = k with trig features: every term is cos 0, no variance at all
    torch.testing.assert_close(mean[exact], true[exact])
    assert (var[exact] < 1e-20).all()
    z_mean, z_var = ((mean - true) / se_mean)[~exact], ((var - formula) / se_var)[~exact]
    assert z_mean.abs().max() < 4.5, f"{kind}, m={m}: biased estimate, z = {z_mean.tolist()}"
    assert z_var.abs().max() < 4.5, (
        f"{kind}, orthogonal={orthogonal}, m={m}: sample variance {var.tolist()} against "
        f"feature_variance {formula.tolist()} (z = {z_var.tolist()})")


def test_the_text_formulas():
    """The iid formulas as chapter 6 writes them, evaluated directly, against feature_variance."""
    q, k = PAIRS_Q, PAIRS_K
    nq, nk = (q * q).sum(-1), (k * k).sum(-1)
    for m in (2, 8, 64):
        positive = torch.exp((q * k).sum(-1)) ** 2 * (torch.exp(((q + k) ** 2).sum(-1)) - 1) / m
        trig = torch.exp(nq + nk) * (1 - torch.exp(-((q - k) ** 2).sum(-1))) ** 2 / m
        torch.testing.assert_close(kernel.feature_variance(q, k, m, kind="positive"), positive)
        torch.testing.assert_close(kernel.feature_variance(q, k, m, kind="trig"), trig)


def test_orthogonal_features_lower_the_variance_where_the_chapter_says():
    """Positive: never higher. Trig: lower unless |q - k|² is large (first above 9.5 for D = 4)."""
    g = torch.Generator().manual_seed(0)
    for D in (2, 4, 16):
        q, k = (torch.randn(500, D, generator=g, dtype=torch.float64) * 0.8 for _ in range(2))
        for kind in ("positive", "trig"):
            iid = kernel.feature_variance(q, k, 2 * D, kind=kind)
            ort = kernel.feature_variance(q, k, 2 * D, kind=kind, orthogonal=True)
            small = ((q - k) ** 2).sum(-1) < 8
            keep = torch.ones_like(small) if kind == "positive" else small
            assert (ort[keep] <= iid[keep] * (1 + 1e-12)).all(), (kind, D)
    far = torch.zeros(1, 4, dtype=torch.float64)
    far[0, 0] = math.sqrt(12.0)  # |Δ|² = 12: the trig covariance has turned positive for D = 4
    zero = torch.zeros_like(far)
    assert kernel.feature_variance(far, zero, 8, kind="trig", orthogonal=True) > \
        kernel.feature_variance(far, zero, 8, kind="trig")


def test_chapter6_states_exactly_the_checked_formulas():
    """Every variance written in chapter 6 is one checked above (a changed formula fails here)."""
    text = markdown(CH6)
    blocks = [" ".join(b.split()) for b in re.findall(r"\$\$(.*?)\$\$", text, flags=re.S)]
    stated = [b for b in blocks if r"\operatorname{Var}" in b]
    checked = {
        r"\operatorname{Var}\big[\phi_+(q)\cdot\phi_+(k)\big] = \tfrac{1}{m}\, \exp(q^\top k)^2 "
        r"\big(e^{\lVert q + k\rVert^2} - 1\big),",
        r"\operatorname{Var}\big[\phi_{\text{trig}}(q)\cdot\phi_{\text{trig}}(k)\big] = \tfrac{1}{m}\, "
        r"e^{\lVert q\rVert^2 + \lVert k\rVert^2}\big(1 - e^{-\lVert q - k\rVert^2}\big)^2 .",
        r"\operatorname{Var}_{\text{ort}}\big[\phi_+(q)\cdot\phi_+(k)\big] = \operatorname{Var}_{\text{iid}} "
        r"+ \tfrac{P}{m^2}\Big(e^{-\lVert q\rVert^2 - \lVert k\rVert^2} F\big(\tfrac12\lVert q + k\rVert^2\big) "
        r"- \exp(q^\top k)^2\Big),",
        r"\operatorname{Var}_{\text{ort}}\big[\phi_{\text{trig}}(q)\cdot\phi_{\text{trig}}(k)\big] = "
        r"\operatorname{Var}_{\text{iid}} + \tfrac{4P}{m^2}\, e^{\lVert q\rVert^2 + \lVert k\rVert^2} "
        r"\Big(F\big(-\tfrac12\lVert q - k\rVert^2\big) - e^{-\lVert q - k\rVert^2}\Big).",
    }
    assert set(stated) == checked, (
        "chapter 6's variance formulas changed; check the new ones against kernel.feature_variance "
        f"and update this test.\nstated: {stated}")
    assert r"\frac{1}{2m}" not in text  # the old trig variance, off by a factor 2
    assert "kernel.feature_variance" in CH6.read_text(encoding="utf-8")


# ---------------------------------------------------------------- chapter 8: the global-token bound

SIGMA0 = 1 / math.sqrt(2 * math.pi)  # where the normalised curve's peak 1/(σ√(2π)) is 1
THETA = math.pi ** 0.25 / math.gamma(0.75)  # θ₃(e^{-π}) = Σ_d e^{-π d²} = 1.0864...


def window_sum(sigma: float, window: int) -> float:
    """Σ_{|d| <= w} U(d) for the normalised curve, read off the library's bias (one query row)."""
    bias = bell_bias(2 * window + 1, float(sigma), normalised=True, window=window)[0, 0, window]  # (N,)
    return float(torch.exp(bias.double()).sum())


def global_share(sigma: float, window: int, g: int) -> float:
    """Attention on the g global keys for a window query when all raw scores are equal."""
    N = g + 2 * window + 1
    bias = bell_bias(N, float(sigma), normalised=True, window=window, global_tokens=g)[0, 0]  # (N, N)
    return float(torch.softmax(bias.double(), dim=-1)[g + window, :g].sum())


def test_window_sum_is_the_poisson_sum():
    for sigma in (0.1, 0.2, 0.3, SIGMA0, 0.52, 1.0, 3.0):
        poisson = 1 + 2 * sum(math.exp(-2 * math.pi**2 * sigma**2 * j * j) for j in range(1, 60))
        assert window_sum(sigma, 128) == pytest.approx(poisson, rel=1e-6)
    assert window_sum(SIGMA0, 128) == pytest.approx(THETA, rel=1e-6)
    assert window_sum(0.52, 128) < 1.01  # "within 1% of 1 for σ >= 0.52"


@pytest.mark.parametrize("window, g", [(128, 16), (12, 3)])
def test_global_share_bound_holds_above_the_threshold_only(window, g):
    above = [SIGMA0, 0.45, 0.6, 1.0, 9.5, 1000.0, 50000.0]
    for sigma in above:
        assert window_sum(sigma, window) <= THETA * (1 + 1e-9)
        assert global_share(sigma, window, g) >= g / (g + THETA) - 1e-9
    for sigma in (0.1, 0.2, 0.3, 0.35):  # SigmaPredictor allows σ down to 0.1
        assert window_sum(sigma, window) > THETA
        assert global_share(sigma, window, g) < g / (g + 1)  # the unconditional claim fails


def test_chapter8_quotes_the_computed_values():
    text = " ".join(markdown(CH8).split())
    assert "the sum is at most 1 (it is a probability)" not in text
    assert r"1/\sqrt{2\pi}" in text
    # "1.34 at $\sigma = 0.3$, 2.0 at $0.2$": a window sum or (for g = 16, w = 128) a global share
    start = text.index("Poisson summation")
    pairs = re.findall(r"(\d+\.\d+) at \$(?:\\sigma = )?(\d+\.\d+)\$", text[start:start + 1500])
    assert len(pairs) >= 5, pairs
    for value, sigma in pairs:
        digits = len(value.split(".")[1])
        computed = (window_sum(float(sigma), 128), global_share(float(sigma), 128, 16))
        assert any(round(c, digits) == float(value) for c in computed), (value, sigma, computed)


def test_chapter8_f1_gap_range():
    """Bell-curve rows against plain-window rows of the seeds' tables, as chapter 8 quotes them."""
    with_curve = [57.29, 58.01, 59.35, 58.30, 59.42, 58.01, 56.59, 58.47, 58.15, 53.65, 53.30]
    without = [73.25, 73.78, 73.11, 72.84, 72.22]
    text = markdown(CH8)
    for f1 in with_curve + without:
        assert f"{f1:.2f}" in text, f"F1 {f1} is not in chapter 8's tables"
    low, high = min(without) - max(with_curve), max(without) - min(with_curve)
    assert (round(low, 1), round(high, 1)) == (12.8, 20.5)
    assert " ".join(text.split()).count(f"{low:.1f} to {high:.1f} F1 points") == 2
