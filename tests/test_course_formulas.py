"""Formulas and numbers the course text states, checked by computing them.

- Chapter 6: every variance formula of the random-feature estimates of exp(qᵀk) (trig and
  positive features, iid and orthogonal) is ``kernel.feature_variance``, which the chapter also
  plots; a seeded Monte Carlo estimate with the library's own feature maps agrees with it within
  its standard error.
- Chapter 8: the normalised bell curve's window sum, and with it the global tokens' share, obeys
  the bound the chapter states only for σ >= 1/√(2π); below, the sum exceeds 1 by the amounts
  quoted. The F1 gap between bell-curve and plain-window rows is the range quoted.
- Chapter 9: the limits of the arithmetic intensity in its three byte models, the floors and
  efficiencies it quotes for the H100, and its formulas for the key tiles a sliding-window query
  block visits and for the full ones, against ``masks.tile_grid`` of the materialised mask.
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


# ---------------------------------------------------------------- chapter 9: rooflines and tiles
# Chapter 9 states the arithmetic intensity of attention in three byte models, quotes floors and
# efficiencies computed from the H100's data sheet and earlier H100 timings, and gives formulas for
# the key tiles a sliding-window query block visits and for the ones that are full.

CH9 = ROOT / "course" / "09_attention_on_the_gpu.py"
H100_FLOPS, H100_BYTES_PER_S = 989e12, 3.35e12  # dense bf16, HBM3 (data sheet)


def ch9_text() -> str:
    return " ".join(markdown(CH9).split())


def attention_bytes(N: int, D: int, s: int, kind: str, block_m: int = 128) -> int:
    """Bytes per head as chapter 9 counts them: naive, streamed K/V, ideal fused."""
    return s * {"naive": 4 * N * N + 4 * N * D,
                "stream": 2 * N * D + 2 * N * D * math.ceil(N / block_m),
                "fused": 4 * N * D}[kind]


@pytest.mark.parametrize("D, s, block_m", [(64, 2, 128), (128, 2, 64), (64, 4, 128)])
def test_chapter9_intensity_limits(D, s, block_m):
    """I_naive -> D/s, I_stream -> 2·B_m/s for large N, and I_fused = N/s exactly."""
    N = 2**20
    flops = 4 * N * N * D
    assert flops / attention_bytes(N, D, s, "naive") == pytest.approx(D / s, rel=1e-3)
    assert flops / attention_bytes(N, D, s, "stream", block_m) == pytest.approx(2 * block_m / s, rel=1e-3)
    assert flops / attention_bytes(N, D, s, "fused") == N / s


def test_chapter9_quotes_the_computed_floors():
    text = ch9_text()
    H, D, s = 16, 64, 2
    floor_ms = lambda flops, nbytes: 1e3 * max(flops / H100_FLOPS, nbytes / H100_BYTES_PER_S)
    flops = {N: 4 * H * N * N * D for N in (4096, 16384, 65536)}
    naive = {N: H * attention_bytes(N, D, s, "naive") for N in flops}
    # "At N = 16384 on an H100 the floor is about 10 ms, of which the arithmetic would need about 1.1 ms"
    assert round(floor_ms(flops[16384], naive[16384])) == 10 and "floor is about 10 ms" in text
    assert round(1e3 * flops[16384] / H100_FLOPS, 1) == 1.1 and "need about 1.1 ms" in text
    # naive measured 1.60 ms (4K) and 19.6 ms (16K): "two to two and a half times the memory floor"
    ratios = [1.60 / floor_ms(flops[4096], naive[4096]), 19.6 / floor_ms(flops[16384], naive[16384])]
    assert 1.9 <= min(ratios) and max(ratios) <= 2.5, ratios
    assert "two to two and a half times the memory floor" in text
    # one bf16 score tensor over 16 heads at 64K: 137 GB
    assert round(s * H * 65536**2 / 1e9) == 137 and "is 137 GB" in text
    # SDPA 0.152 / 2.32 / 36.8 ms: "46% to 48% of the data-sheet peak"
    eff = [1e3 * flops[N] / H100_FLOPS / ms for N, ms in ((4096, 0.152), (16384, 2.32), (65536, 36.8))]
    assert (round(100 * min(eff)), round(100 * max(eff))) == (46, 48) and "46% to 48%" in text
    # ridge points "around 200 to 300 FLOPs per byte"
    ridges = [989 / 3.35, 989 / 4.8, 790 / 4.3]
    assert all(180 <= r <= 300 for r in ridges) and "around 200 to 300" in text
    # the ±256 window at 16K: 34.4 GFLOP; Flex's 0.164 ms is "about a quarter" of its floor at 790
    window_flops = 4 * H * 16384 * 513 * D
    assert round(window_flops / 1e9, 1) == 34.4
    assert 0.2 <= window_flops / 790e12 / 0.164e-3 <= 0.3 and "about a quarter" in text


def window_tiles_by_formula(N: int, w: int, bm: int, bn: int) -> torch.Tensor:
    """Chapter 9, section 3: key tiles floor(max(0, m0-w)/Bn) .. floor(min(N-1, m0+Bm-1+w)/Bn);
    tile [n0, n1] full when max(m1 - n0, n1 - m0) <= w (m1, n1 the last real row and key)."""
    from attnkit import masks

    nq, nk = math.ceil(N / bm), math.ceil(N / bn)
    kinds = torch.full((nq, nk), masks.EMPTY, dtype=torch.long)
    for a in range(nq):
        m0, m1 = a * bm, min(N, (a + 1) * bm) - 1
        for b in range(max(0, m0 - w) // bn, min(N - 1, m0 + bm - 1 + w) // bn + 1):
            n0, n1 = b * bn, min(N, (b + 1) * bn) - 1
            kinds[a, b] = masks.FULL if max(m1 - n0, n1 - m0) <= w else masks.PARTIAL
    return kinds


@pytest.mark.parametrize("N, w, bm, bn", [(256, 40, 32, 32), (200, 24, 16, 16), (1000, 70, 64, 32),
                                          (300, 0, 32, 16), (130, 200, 32, 64), (4096, 256, 128, 128)])
def test_chapter9_window_tile_formulas_match_the_mask(N, w, bm, bn):
    from attnkit import fixed, masks

    grid = masks.tile_grid(masks.materialize(fixed.local_mask(w), N), bm, bn)
    assert torch.equal(window_tiles_by_formula(N, w, bm, bn), grid)


def test_chapter9_window_tile_statements():
    """w = 256, N = 4096, 128×128 tiles: five tiles per row, three of them full, ~80% of pairs used;
    tile-count bounds of a 128×64 kernel against dense: about 26× at 16K and 103× at 64K."""
    from attnkit import masks
    from attnkit.triton_window import tile_counts

    text = ch9_text()
    grid = window_tiles_by_formula(4096, 256, 128, 128)
    middle = grid[2:-2]
    assert ((middle != masks.EMPTY).sum(1) == 5).all() and ((middle == masks.FULL).sum(1) == 3).all()
    visible = 4096 * 513 - 256 * 257  # pairs |i - j| <= 256 inside [0, 4096)
    used = visible / (int((grid != masks.EMPTY).sum()) * 128 * 128)
    assert 0.78 <= used <= 0.82 and "five tiles per query block out of 32" in text
    bounds = {N: math.ceil(N / 128) * math.ceil(N / 64) / int(tile_counts(N, block_m=128, block_n=64, window=256).sum())
              for N in (16384, 65536)}
    assert (round(bounds[16384]), round(bounds[65536])) == (26, 103)
    assert "About 26× at 16K and 103× at 64K" in text
