"""The learnable bell-curve window (attnkit.bellcurve, varwindow, span): fast paths equal the dense references, the
issue's semantics on a hand example, gradients w.r.t. sigma, window from sigma, per-query
variable windows in O(N·w) memory, and adaptive attention span.
"""
from __future__ import annotations

import math
import warnings

import pytest
import torch

from attnkit import VARIANTS
from attnkit.bellcurve import (
    SQRT_2PI, SigmaPredictor, bell_bias, bell_score_mod, bell_weights_attention, bellcurve, bellcurve_reference,
)
from attnkit.span import AdaptiveSpan, adaptive_span, adaptive_span_reference, span_ramp
from attnkit.varwindow import (
    SEED_WINDOWS, tail_mass, variable_window_attention, variable_window_reference, window_from_sigma,
)
from attnkit.measure import largest_intermediate
from strategies import fresh_qkv

B, H, N, D = 2, 3, 37, 8  # N not a multiple of anything: exercises the slab padding


def fresh(*shape, dtype=torch.float64, seed=None, low=0.0):
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, ())) if seed is None else seed)
    return torch.rand(*shape, generator=g, dtype=dtype) + low if low else \
        torch.randn(*shape, generator=g, dtype=dtype)


def qkv(n=N, d=D, dtype=torch.float64):
    return fresh_qkv(B, H, n, d, dtype=dtype)


def sigmas(kind, n=N, dtype=torch.float64):
    """Sigma in each accepted form, between 0.5 and 4.5."""
    shape = {"float": None, "scalar": (), "head": (H,), "token": (B, n), "token-1": (B, 1, n),
             "head-token": (B, H, n)}[kind]
    if shape is None:
        return 2.3
    return fresh(*shape, dtype=dtype, low=0.5) * 4 if shape else torch.tensor(1.7, dtype=dtype)


SIGMA_KINDS = ["float", "scalar", "head", "token", "token-1", "head-token"]


# ---------------------------------------------------------------- values

@pytest.mark.parametrize("kind", SIGMA_KINDS)
@pytest.mark.parametrize("normalised", [False, True])
@pytest.mark.parametrize("g", [0, 1, 3])
@pytest.mark.parametrize("window", [0, 4, 20, None])
def test_bellcurve_equals_reference_and_the_multiplicative_form(kind, normalised, g, window):
    q, k, v = qkv()
    kw = dict(sigma=sigmas(kind), normalised=normalised, window=window, global_tokens=g)
    expected = bellcurve_reference(q, k, v, **kw)
    torch.testing.assert_close(bellcurve(q, k, v, **kw), expected, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(bell_weights_attention(q, k, v, **kw), expected, atol=1e-10,
                               rtol=1e-8)


def test_hand_example_semantics():
    """N = 4, q = 0 (all scores 0), v = one-hot rows: the output rows are the weights themselves.

    sigma = 1, token 0 global. Row 0 sees every key unbiased; rows 1..3 see key 0 unbiased and
    window keys at offset d with weight p·exp(-d²/2), p = 1 (max-1) or 1/sqrt(2π) (PDF).
    """
    q = torch.zeros(1, 1, 4, 2, dtype=torch.float64)
    k = fresh(1, 1, 4, 2)
    v = torch.eye(4, dtype=torch.float64).view(1, 1, 4, 4)
    a, b = math.exp(-0.5), math.exp(-2.0)  # offsets 1 and 2
    for normalised in (False, True):
        p = 1 / SQRT_2PI if normalised else 1.0
        raw = {2: [[1, 1, 1, 1], [1, p, p * a, p * b], [1, p * a, p, p * a], [1, p * b, p * a, p]],
               1: [[1, 1, 1, 1], [1, p, p * a, 0], [1, p * a, p, p * a], [1, 0, p * a, p]]}
        for window, rows in raw.items():
            expected = torch.tensor(rows, dtype=torch.float64)
            expected = expected / expected.sum(-1, keepdim=True)
            out = bellcurve(q, k, v, sigma=1.0, normalised=normalised, window=window, global_tokens=1)
            torch.testing.assert_close(out[0, 0], expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("kind", SIGMA_KINDS)
def test_without_global_tokens_the_two_forms_agree(kind):
    q, k, v = qkv()
    sigma = sigmas(kind)
    for window in (3, None):
        a = bellcurve(q, k, v, sigma=sigma, window=window)
        b = bellcurve(q, k, v, sigma=sigma, window=window, normalised=True)
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


def global_share(sigma, normalised, g=2, window=6):
    """Share of each non-global row's attention mass on the g global keys (same q, k every call)."""
    torch.manual_seed(3)
    q, k, _ = qkv()
    v = (torch.arange(N) < g).to(torch.float64).view(1, 1, N, 1).expand(B, H, N, 1)
    out = bellcurve(q, k, v, sigma=sigma, normalised=normalised, window=window, global_tokens=g)
    return out[:, :, g:, 0]  # (B, H, N - g)


@pytest.mark.parametrize("sigma", [1.0, 9.5, 64.0])
def test_with_global_tokens_the_normalised_form_gives_globals_more_mass(sigma):
    plain, pdf = global_share(sigma, False), global_share(sigma, True)
    assert (pdf > plain).all(), "the PDF's peak < 1 must shift mass to the unbiased global keys"


def test_huge_sigma_pdf_swamps_the_window():
    """The seeds' sigma = 50000: window weights nearly zero with the PDF, not with the max-1 curve."""
    assert global_share(50000.0, True).min() > 0.99
    assert global_share(50000.0, False).max() < 0.9


# ---------------------------------------------------------------- gradients

@pytest.mark.parametrize("kind", ["scalar", "head", "token", "head-token"])
@pytest.mark.parametrize("normalised", [False, True])
def test_gradcheck_sigma(kind, normalised):
    n = 9
    q, k, v = qkv(n=n, d=3)
    sigma = sigmas(kind, n=n).requires_grad_()
    for fn in (bellcurve, bell_weights_attention):
        assert torch.autograd.gradcheck(
            lambda s: fn(q, k, v, sigma=s, normalised=normalised, window=3, global_tokens=2), (sigma,),
            fast_mode=True)


def test_gradcheck_inputs():
    q, k, v = (t.requires_grad_() for t in qkv(n=7, d=2))
    assert torch.autograd.gradcheck(
        lambda q, k, v: bellcurve(q, k, v, sigma=1.5, normalised=True, window=2, global_tokens=1),
        (q, k, v), fast_mode=True)


def test_gradcheck_variable_window_and_span():
    n = 9
    q, k, v = qkv(n=n, d=3)
    widths = torch.randint(0, 4, (B, n))
    sigma = sigmas("head-token", n=n).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda s: variable_window_attention(q, k, v, widths=widths, sigma=s, global_tokens=1), (sigma,),
        fast_mode=True)
    span = torch.tensor([1.3, 2.6, 4.1], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: adaptive_span(q, k, v, span=z, ramp=2.0), (span,),
                                     fast_mode=True)


# ---------------------------------------------------------------- sigma predictor

def test_sigma_predictor_starts_at_init_and_stays_positive():
    torch.manual_seed(0)
    pred = SigmaPredictor(16, heads=H, sigma_init=1.0, sigma_min=0.1)
    x = torch.randn(B, N, 16)
    sigma = pred(x)
    assert sigma.shape == (B, H, N)
    torch.testing.assert_close(sigma, torch.ones(B, H, N))
    with torch.no_grad():
        pred.U_d.bias.fill_(-1e4)
    assert (pred(x) >= 0.1).all() and torch.isfinite(pred(x)).all()


def test_sigma_predictor_learns_through_U_d_and_W_p():
    torch.manual_seed(0)
    pred = SigmaPredictor(8, heads=1, sigma_init=1.0)
    opt = torch.optim.Adam(pred.parameters(), lr=0.05)
    x = torch.randn(4, 10, 8)
    target = 1.0 + 3.0 * (x[..., 0] > 0).float().unsqueeze(1)  # sigma 4 where feature 0 > 0
    for _ in range(100):
        loss = ((pred(x) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 and pred.W_p.weight.grad.abs().sum() > 0


def test_sigma_predictor_rejects_bad_init():
    with pytest.raises(ValueError, match="sigma_init"):
        SigmaPredictor(4, sigma_init=0.05, sigma_min=0.1)


# ---------------------------------------------------------------- window from sigma

def test_window_from_sigma_is_the_smallest_w_below_tol():
    for tol in (1e-2, 1e-3, 1e-6):
        for s in (0.3, 1.0, 2.7, 9.5, 30.0):
            w = window_from_sigma(s, tol=tol, max_window=10_000)
            assert tail_mass(w, s) < tol <= tail_mass(w - 1, s), (s, tol, w)


def test_window_from_sigma_is_monotone_capped_and_vectorised():
    s = torch.logspace(-1, 5, 200, dtype=torch.float64)
    w = window_from_sigma(s, max_window=128)
    assert w.shape == s.shape and w.dtype == torch.long
    assert (w[1:] >= w[:-1]).all() and w.max() == 128 and w.min() >= 1
    grid = window_from_sigma(s.view(20, 10), tol=1e-4, max_window=50)
    assert grid.shape == (20, 10) and grid.max() == 50
    assert (window_from_sigma(s, tol=1e-5, max_window=10**9) >= window_from_sigma(s, max_window=10**9)).all()


def test_seed_rule_reproduces_the_seed_pairs():
    for s, w in SEED_WINDOWS:
        assert window_from_sigma(s, rule="seeds") == w
    assert window_from_sigma(15.0, rule="seeds") == 55  # 001: LR x10, "111 tokens (w = 55)"


def test_window_from_sigma_errors():
    with pytest.raises(ValueError, match="tol"):
        window_from_sigma(1.0, tol=0.0)
    with pytest.raises(ValueError, match="sigma"):
        window_from_sigma(torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="rule"):
        window_from_sigma(1.0, rule="linear")


# ---------------------------------------------------------------- variable windows

@pytest.mark.parametrize("per_head", [False, True])
@pytest.mark.parametrize("g", [0, 2])
@pytest.mark.parametrize("sigma", [None, "token"])
def test_variable_windows_equal_dense(per_head, g, sigma):
    q, k, v = qkv()
    widths = torch.randint(0, 12, (B, H, N) if per_head else (B, N))
    kw = dict(widths=widths, global_tokens=g, sigma=None if sigma is None else sigmas(sigma),
              normalised=True)
    torch.testing.assert_close(variable_window_attention(q, k, v, **kw),
                               variable_window_reference(q, k, v, **kw), atol=1e-10, rtol=1e-8)


def test_variable_windows_with_constant_width_are_bellcurve():
    q, k, v = qkv()
    s = sigmas("head-token")
    out = variable_window_attention(q, k, v, widths=torch.full((B, N), 5), sigma=s, global_tokens=1)
    torch.testing.assert_close(out, bellcurve(q, k, v, sigma=s, window=5, global_tokens=1))


def test_variable_windows_and_bellcurve_stay_sub_quadratic_in_memory():
    n, wmax = 2048, 32
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, n, 16, generator=g) for _ in range(3))
    widths = torch.randint(0, wmax + 1, (1, n), generator=g)
    sigma = torch.rand(1, n, generator=g) * 8 + 0.5
    for fn, kw in ((variable_window_attention, dict(widths=widths, sigma=sigma, global_tokens=2)),
                   (bellcurve, dict(sigma=sigma, window=wmax, global_tokens=2))):
        record = largest_intermediate(fn, q, k, v, **kw)
        assert record.numel <= 8 * n * wmax, f"{fn.__name__}: {record} (N² = {n * n})"


def test_variable_window_errors():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="widths must be"):
        variable_window_attention(q, k, v, widths=torch.ones(N, dtype=torch.long))
    with pytest.raises(ValueError, match="integers >= 0"):
        variable_window_attention(q, k, v, widths=-torch.ones(B, N, dtype=torch.long))


def test_bad_sigma_is_refused_with_a_clear_message():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="sigma must be"):
        bellcurve(q, k, v, sigma=torch.ones(N), window=3)  # (N,) is neither per head nor (B, N)
    with pytest.raises(ValueError, match="> 0"):
        bellcurve(q, k, v, sigma=0.0, window=3)


# ---------------------------------------------------------------- score_mod, registry

def test_score_mod_matches_the_bias_and_runs_under_flex_eager():
    """The score_mod is what FlexAttention traces: check it through flex_attention's eager path."""
    from attnkit import flex
    if not flex.available():
        pytest.skip("needs torch with FlexAttention")
    from torch.nn.attention.flex_attention import flex_attention

    q, k, v = qkv(n=16, dtype=torch.float32)
    sigma = sigmas("head-token", n=16, dtype=torch.float32).requires_grad_()
    mod = bell_score_mod(sigma, normalised=True, window=3, global_tokens=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = flex_attention(q, k, v, score_mod=mod)
    expected = bellcurve_reference(q, k, v, sigma=sigma, normalised=True, window=3, global_tokens=2)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    (grad,) = torch.autograd.grad(out.sum(), sigma)
    (ref,) = torch.autograd.grad(expected.sum(), sigma)
    torch.testing.assert_close(grad, ref, atol=1e-4, rtol=1e-4)
    bias = bell_bias(16, 2.0, window=3, global_tokens=2)
    assert bias[0, 0, 5, 9].item() == -math.inf and bias[0, 0, 5, 1].item() == 0.0
    assert bias[0, 0, 5, 7].item() == pytest.approx(-0.5)


def test_registry_entries():
    entry = VARIANTS["bellcurve"]
    assert entry.fn is bellcurve and entry.reference is bellcurve_reference
    assert set(entry.example_kwargs) == {"sigma", "window", "global_tokens"}
    assert VARIANTS["adaptive_span"].reference is adaptive_span_reference


# ---------------------------------------------------------------- adaptive span

def test_span_ramp_values():
    x = torch.tensor([0.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    torch.testing.assert_close(span_ramp(x, torch.tensor(4.0), 2.0),
                               torch.tensor([1.0, 1.0, 1.0, 0.5, 0.0, 0.0]))


@pytest.mark.parametrize("causal", [False, True])
def test_adaptive_span_equals_reference(causal):
    q, k, v = qkv()
    for span in (0.0, 2.5, torch.tensor([0.5, 3.0, 11.2], dtype=torch.float64)):
        torch.testing.assert_close(adaptive_span(q, k, v, span=span, ramp=3.0, causal=causal),
                                   adaptive_span_reference(q, k, v, span=span, ramp=3.0, causal=causal),
                                   atol=1e-10, rtol=1e-8)


def test_adaptive_span_module_learns_a_span():
    torch.manual_seed(0)
    mod = AdaptiveSpan(H, max_span=16, ramp=4.0, init_span=2.0).double()
    q, k, v = qkv()
    target = adaptive_span_reference(q, k, v, span=torch.tensor([6.0, 6.0, 6.0]), ramp=4.0)
    opt = torch.optim.Adam(mod.parameters(), lr=0.05)
    for _ in range(25):
        loss = ((mod(q, k, v) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (mod.span() > 3.0).all() and mod.loss().item() == pytest.approx(mod.span().mean().item())


# ---------------------------------------------------------------- CUDA (FlexAttention)

@pytest.mark.cuda
@pytest.mark.parametrize("kind", ["float", "head", "head-token"])
def test_cuda_flex_equals_reference_with_sigma_gradients(kind):
    q, k, v = (t.float().cuda() for t in qkv(n=300, d=16))
    sigma = sigmas(kind, n=300, dtype=torch.float32)
    sigma = sigma.cuda().requires_grad_() if isinstance(sigma, torch.Tensor) else sigma
    for normalised in (False, True):
        kw = dict(sigma=sigma, normalised=normalised, window=40, global_tokens=3)
        out, ref = bellcurve(q, k, v, **kw), bellcurve_reference(q, k, v, **kw)
        torch.testing.assert_close(out, ref, atol=2e-3, rtol=2e-3)
        if isinstance(sigma, torch.Tensor):
            (g1,) = torch.autograd.grad(out.sum(), sigma)
            (g2,) = torch.autograd.grad(ref.sum(), sigma)
            torch.testing.assert_close(g1, g2, atol=1e-2, rtol=1e-2)


@pytest.mark.cuda
def test_cuda_variable_windows_equal_reference():
    q, k, v = (t.float().cuda() for t in qkv(n=300, d=16))
    widths = torch.randint(0, 60, (B, 300), device="cuda")
    kw = dict(widths=widths, sigma=3.0, global_tokens=2)
    torch.testing.assert_close(variable_window_attention(q, k, v, **kw),
                               variable_window_reference(q, k, v, **kw), atol=2e-3, rtol=2e-3)
