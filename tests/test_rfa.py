"""Random Feature Attention: the linear-time forms equal their dense forms (plain, causal, gated),
the gated scan equals the recurrence run one token at a time, the features have unit norm and
estimate a Gaussian kernel without bias, the error to the softmax limit falls as m grows, and
misuse fails with a clear message."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from attnkit import VARIANTS, dense_attention, largest_intermediate
from attnkit.rfa import (RandomFeatureAttention, RFAGate, gated_scan, rfa, rfa_features, rfa_limit,
                         rfa_reference, rfa_weights)
from strategies import fresh_qkv, make_qkv, seeds, shapes


def _gate(B=2, H=3, N=37, low=0.05, high=0.95):
    return low + (high - low) * torch.rand(B, H, N, dtype=torch.float64)


# σ = 2 keeps the kernel estimate near exp(-|Δ|²/8) >= e^-0.5 with a small spread, so the
# normaliser stays far from 0 even for the first causal tokens (see the module docstring).
CASES = [
    ({}, False),
    ({"causal": True}, False),
    ({"causal": True, "chunk": 5}, False),
    ({"causal": True}, True),
    ({"causal": True, "chunk": 1}, True),
    ({"causal": True, "chunk": 7}, True),
    ({"causal": True, "chunk": 100}, True),
]


@pytest.mark.parametrize("N", [1, 37, 64])
@pytest.mark.parametrize("kwargs, gated", CASES)
def test_linear_forms_equal_the_dense_form(kwargs, gated, N):
    causal = kwargs.get("causal", False)
    q, k, v = fresh_qkv(N=N, M=None if causal else N + 5, Dv=3)
    if gated:
        kwargs = {**kwargs, "gate": _gate(N=N)}
    out = rfa(q, k, v, m=32, sigma=2.0, seed=4, **kwargs)
    assert out.shape == (2, 3, N, 3) and out.dtype == torch.float64
    torch.testing.assert_close(out, rfa_reference(q, k, v, m=32, sigma=2.0, seed=4, **kwargs),
                               atol=1e-10, rtol=1e-8)


def test_gated_scan_equals_the_recurrence_one_token_at_a_time():
    q, k, v = fresh_qkv(N=30, Dv=4)
    g = _gate(N=30)
    w = rfa_weights(16, 5, 2.0, seed=1, dtype=torch.float64)
    fq, fk = rfa_features(q, w), rfa_features(k, w)  # (2, 3, 30, 32)
    S = torch.zeros(2, 3, 32, 4, dtype=torch.float64)
    z = torch.zeros(2, 3, 32, dtype=torch.float64)
    outs = []
    for t in range(30):
        gt = g[..., t, None]  # (2, 3, 1)
        S = gt[..., None] * S + (1 - gt[..., None]) * fk[..., t, :, None] * v[..., t, None, :]
        z = gt * z + (1 - gt) * fk[..., t, :]
        outs.append((fq[..., t, None, :] @ S).squeeze(-2) / (fq[..., t, :] * z).sum(-1, keepdim=True))
    expected = torch.stack(outs, dim=2)
    torch.testing.assert_close(gated_scan(fq, fk, v, g, chunk=7), expected, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(rfa(q, k, v, m=16, sigma=2.0, seed=1, causal=True, gate=g, chunk=7),
                               expected, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("kwargs", [{"causal": True}, {"causal": True, "gate": "g"}])
def test_causal_forms_ignore_the_future(kwargs):
    q, k, v = fresh_qkv(N=40)
    if kwargs.get("gate"):
        kwargs = {**kwargs, "gate": _gate(N=40)}
    out = rfa(q, k, v, m=32, sigma=2.0, chunk=8, **kwargs)
    t = 21
    q2, k2, v2 = (x.clone() for x in (q, k, v))
    for x in (q2, k2, v2):
        x[:, :, t + 1:] = torch.randn_like(x[:, :, t + 1:]) * 3
    if "gate" in kwargs:
        kwargs["gate"] = kwargs["gate"].clone()
        kwargs["gate"][..., t + 1:] = 0.5
    out2 = rfa(q2, k2, v2, m=32, sigma=2.0, chunk=8, **kwargs)
    torch.testing.assert_close(out2[:, :, :t + 1], out[:, :, :t + 1], atol=1e-12, rtol=0)
    assert not torch.allclose(out2[:, :, t + 1:], out[:, :, t + 1:]), "the future should change"


def test_a_gate_near_zero_attends_only_to_the_current_token():
    q, k, v = fresh_qkv(N=12)
    g = torch.full((2, 3, 12), 1e-12, dtype=torch.float64)  # S_t ≈ φ(k_t) v_tᵀ: out_t ≈ v_t
    torch.testing.assert_close(rfa(q, k, v, m=16, sigma=2.0, causal=True, gate=g, chunk=5), v,
                               atol=1e-9, rtol=0)


# ---------------------------------------------------------------- features and the m -> ∞ limit

def test_features_have_shape_2m_unit_norm_and_ignore_the_length_of_x():
    w = rfa_weights(24, 6, 0.7, seed=2, dtype=torch.float64)
    x = torch.randn(4, 5, 6, dtype=torch.float64) * 3
    phi = rfa_features(x, w)
    assert phi.shape == (4, 5, 48)
    torch.testing.assert_close((phi * phi).sum(-1), torch.ones(4, 5, dtype=torch.float64), atol=1e-14, rtol=0)
    torch.testing.assert_close(rfa_features(x * 7.5, w), phi, atol=1e-13, rtol=0)  # x̂ = x / |x|
    assert torch.isfinite(rfa_features(torch.zeros(2, 6, dtype=torch.float64), w)).all()


def test_weights_are_seeded_gaussians_with_std_one_over_sigma():
    w = rfa_weights(4000, 8, 0.5, seed=3, dtype=torch.float64)
    assert w.shape == (4000, 8) and w.dtype == torch.float64
    assert abs(w.std().item() - 2.0) < 0.05 and abs(w.mean().item()) < 0.05
    assert torch.equal(w, rfa_weights(4000, 8, 0.5, seed=3, dtype=torch.float64))
    assert not torch.equal(w, rfa_weights(4000, 8, 0.5, seed=4, dtype=torch.float64))
    torch.testing.assert_close(rfa_weights(10, 8, 0.5, seed=3), w[:10].float())


def test_feature_product_is_an_unbiased_estimate_of_the_gaussian_kernel():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, 6, generator=g, dtype=torch.float64)
    y = torch.randn(4, 6, generator=g, dtype=torch.float64)
    xh, yh = x / x.norm(dim=-1, keepdim=True), y / y.norm(dim=-1, keepdim=True)
    sigma = 0.8
    true = torch.exp(-((xh[:, None] - yh[None]) ** 2).sum(-1) / (2 * sigma**2))  # (4, 4)
    est = torch.stack([rfa_features(x, w) @ rfa_features(y, w).T
                       for w in (rfa_weights(4, 6, sigma, seed=s, dtype=torch.float64) for s in range(2000))])
    se = est.std(0) / math.sqrt(len(est))
    assert ((est.mean(0) - true).abs() <= 5 * se).all()
    assert not ((est.mean(0) - true * 1.2).abs() <= 5 * se).all()  # the check has power


@pytest.mark.parametrize("sigma", [1.0, 0.7])
def test_error_to_the_softmax_limit_falls_as_m_grows(sigma):
    """Mean squared error to rfa_limit over 8 draws of W: about 1/m, so 8x per step in theory;
    asked here: at least 3x per step."""
    q, k, v = fresh_qkv(B=1, H=2, N=64, D=8)
    exact = rfa_limit(q, k, v, sigma=sigma)
    err = [sum((rfa(q, k, v, m=m, sigma=sigma, seed=s) - exact).pow(2).mean().item() for s in range(8))
           for m in (8, 64, 512)]
    assert err[2] < err[1] / 3 and err[1] < err[0] / 3, err


def test_limit_is_softmax_attention_of_the_normalised_inputs():
    q, k, v = fresh_qkv(N=20)
    qh, kh = q / q.norm(dim=-1, keepdim=True), k / k.norm(dim=-1, keepdim=True)
    s = (qh @ kh.transpose(-2, -1)) / 0.5**2
    torch.testing.assert_close(rfa_limit(q, k, v, sigma=0.5), s.softmax(-1) @ v)
    causal = torch.ones(20, 20, dtype=torch.bool).tril()
    torch.testing.assert_close(rfa_limit(q, k, v, causal=True),
                               dense_attention(qh, kh, v, mask=causal, scale=1.0))


# ---------------------------------------------------------------- modules, memory, errors

def test_gate_module_and_learnable_rfa():
    gate = RFAGate(10, 3)
    x = torch.randn(2, 12, 10)
    g = gate(x)
    assert g.shape == (2, 3, 12) and ((g > 0) & (g < 1)).all()
    torch.testing.assert_close(g, torch.full_like(g, torch.sigmoid(torch.tensor(2.0)).item()))
    q, k, v = fresh_qkv(N=12, D=4, dtype=torch.float32)
    plain = RandomFeatureAttention(4, 3, m=16, seed=2)
    torch.testing.assert_close(plain(q, k, v), rfa(q, k, v, m=16, seed=2))  # σ = 1: the same W
    gated = RandomFeatureAttention(4, 3, m=16, sigma=2.0, causal=True, gated=True, dim=10)
    out = gated(q, k, v, x=x)
    assert out.shape == (2, 3, 12, 4) and torch.isfinite(out).all()
    out.pow(2).sum().backward()
    assert gated.log_sigma.grad is not None and gated.gate.proj.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="needs x"):
        gated(q, k, v)


def test_gated_memory_is_linear_in_N():
    B, H, N, D, m, chunk = 1, 2, 1024, 16, 16, 32
    q, k, v = fresh_qkv(B=B, H=H, N=N, D=D, dtype=torch.float32)
    g = torch.rand(B, H, N) * 0.5 + 0.4
    biggest = largest_intermediate(rfa, q, k, v, m=m, causal=True, gate=g, chunk=chunk)
    assert biggest.numel <= B * H * (N * 2 * m + chunk * chunk + 2 * m * D), biggest


@pytest.mark.parametrize("call, match", [
    (lambda q, k, v: rfa(q, k, v, m=8, gate=_gate(N=10)), "causal=True"),
    (lambda q, k, v: rfa(q, k, v, m=8, causal=True, gate=_gate(N=9)), r"gate must be \(B, H, N\)"),
    (lambda q, k, v: rfa(q, k, v, m=8, causal=True, gate=_gate(N=10) * 0), r"\(0, 1\]"),
    (lambda q, k, v: rfa(q, k, v, m=8, causal=True, gate=_gate(N=10) + 1), r"\(0, 1\]"),
    (lambda q, k, v: rfa(q[0], k[0], v[0], m=8), r"\(B, H, N, D\)"),
    (lambda q, k, v: rfa(q, k[..., :3], v, m=8), r"\(B, H, N, D\)"),
    (lambda q, k, v: rfa(q, k[:, :, :5], v[:, :, :5], m=8, causal=True), "as many keys"),
    (lambda q, k, v: rfa(q, k, v, m=0), "m >= 1"),
    (lambda q, k, v: rfa(q, k, v, m=8, sigma=0.0), "sigma > 0"),
    (lambda q, k, v: rfa(q, k, v, m=8, causal=True, gate=_gate(N=10), chunk=0), "chunk"),
])
def test_misuse_raises_a_clear_error(call, match):
    with pytest.raises(ValueError, match=match):
        call(*fresh_qkv(N=10))


def test_registry_entry():
    variant = VARIANTS["rfa"]
    assert variant.family == "kernel" and variant.reference is rfa_reference
    assert variant.example_kwargs == {"m": 32, "seed": 0}


@settings(max_examples=30, deadline=None)
@given(shape=shapes(max_b=2, max_h=2, max_n=24, max_d=6), seed=seeds, m=st.integers(1, 24),
       sigma=st.floats(0.5, 2.0), causal=st.booleans(), gated=st.booleans(), chunk=st.integers(1, 9))
def test_linear_time_forms_equal_the_dense_form_on_random_settings(shape, seed, m, sigma, causal, gated,
                                                                   chunk):
    """Any shape, m, σ, chunk; causal (square) with or without a gate, or not causal (M ≠ N)."""
    if causal:
        shape = shape._replace(M=shape.N)
    q, k, v = make_qkv(shape, seed)
    gate = (0.05 + 0.9 * torch.rand(shape.B, shape.H, shape.N, dtype=torch.float64,
                                    generator=torch.Generator().manual_seed(seed))) if causal and gated else None
    # sin/cos features can make a row's normaliser ~0 (see the module docstring): both forms then
    # divide by round-off; such draws are not a comparison of the two forms, so they are drawn again
    W = rfa_weights(m, shape.D, sigma, seed % 1000, dtype=torch.float64)
    fq, fk = rfa_features(q, W), rfa_features(k, W)  # (B, H, N, 2m), (B, H, M, 2m)
    a = fq @ fk.transpose(-2, -1)  # (B, H, N, M)
    if causal:
        weights = (1 - gate).unsqueeze(-2) * torch.exp(torch.log(gate).cumsum(-1).unsqueeze(-1)
                                                        - torch.log(gate).cumsum(-1).unsqueeze(-2)) if gated else 1
        a = (a * weights).tril()
    assume(a.sum(-1).abs().min() > 1e-3)
    kw = dict(m=m, sigma=sigma, seed=seed % 1000, causal=causal, gate=gate)
    out, ref = rfa(q, k, v, chunk=chunk, **kw), rfa_reference(q, k, v, **kw)
    assert out.shape == (shape.B, shape.H, shape.N, shape.Dv)
    torch.testing.assert_close(out, ref, atol=1e-8, rtol=1e-7)
    torch.testing.assert_close(ref, (a @ v) / a.sum(-1, keepdim=True), atol=1e-8, rtol=1e-7)
