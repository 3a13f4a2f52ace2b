"""Token mixers: every ``MIXERS`` entry is a working (B, N, C) -> (B, N, C) module, and FNet's
Fourier mixing, gMLP's spatial gating and MLP-Mixer's token mixing equal independent computations
(``torch.fft``, explicit DFT matrices, loops over positions and channels)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import attnkit
from attnkit import MIXERS, Mixer, register_mixer
from attnkit.mixing import (FNetBlock, MixerBlock, dft_matrices, fourier_mixing, fourier_mixing_reference,
                            gMLPBlock, spatial_gating, token_mixing)
from strategies import seeds

B, N, C = 2, 32, 16  # the shape every registry entry is checked at


def randn(*shape, dtype=torch.float64):
    return torch.randn(*shape, dtype=dtype)


# ---------------------------------------------------------------- the registry of mixers

def test_mixers_are_registered():
    assert {"fnet", "gmlp", "mixer", "synthesizer_dense", "synthesizer_random",
            "synthesizer_factorized"} <= set(MIXERS)
    for name, mixer in MIXERS.items():
        assert isinstance(mixer, Mixer) and mixer.name == name
        assert issubclass(mixer.cls, torch.nn.Module)
        assert mixer.family in ("synthesizer", "attention-free") and mixer.cost and mixer.paper
        assert "arXiv:" in mixer.paper and "O(" in mixer.cost
        assert mixer.example_kwargs["dim"] == C and mixer.example_kwargs["seq_len"] == N
    assert attnkit.MIXERS is MIXERS


@pytest.mark.parametrize("name", sorted(MIXERS))
def test_mixer_maps_tokens_to_tokens(name):
    module = MIXERS[name]()
    x = torch.randn(B, N, C)
    out = module(x)
    assert out.shape == (B, N, C) and out.dtype == x.dtype
    assert torch.isfinite(out).all()
    shorter = module(x[:, :N // 2])  # any N <= seq_len
    assert shorter.shape == (B, N // 2, C) and torch.isfinite(shorter).all()


@pytest.mark.parametrize("name", sorted(MIXERS))
def test_mixer_is_deterministic_from_the_seed(name):
    outs = []
    for _ in range(2):
        torch.manual_seed(1234)
        module = MIXERS[name]()
        outs.append(module(torch.randn(B, N, C)))
    torch.testing.assert_close(outs[0], outs[1], atol=0, rtol=0)
    torch.manual_seed(4321)
    assert not torch.equal(MIXERS[name]()(torch.randn(B, N, C)), outs[0])


@pytest.mark.parametrize("name", sorted(MIXERS))
def test_mixer_trains(name):
    """Every parameter gets a gradient and one optimizer step lowers the loss on a fixed batch."""
    module = MIXERS[name]()
    x, target = torch.randn(B, N, C), torch.randn(B, N, C)
    opt = torch.optim.SGD(module.parameters(), lr=1e-2)
    loss = F.mse_loss(module(x), target)
    opt.zero_grad()
    loss.backward()
    for pname, p in module.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname
    opt.step()
    with torch.no_grad():
        after = F.mse_loss(module(x), target)
    assert after < loss.detach(), f"{name}: loss {loss.item():.5f} -> {after.item():.5f}"


def test_mixer_call_overrides_example_kwargs():
    block = MIXERS["gmlp"](causal=True, dim=8)
    assert isinstance(block, gMLPBlock) and block.causal and block.dim == 8


def test_register_mixer_refuses_duplicates():
    name = "test-temporary-mixer"
    try:
        mixer = register_mixer(name, FNetBlock, family="test", cost="O(1)", paper="none",
                               example_kwargs={"dim": 4})
        assert MIXERS[name] is mixer
        with pytest.raises(ValueError, match="already registered"):
            register_mixer(name, MixerBlock, family="test", cost="", paper="")
        assert MIXERS[name] is mixer, "a refused registration must not replace the entry"
    finally:
        MIXERS.pop(name, None)
    with pytest.raises(ValueError, match="'fnet' is already registered"):
        register_mixer("fnet", FNetBlock, family="attention-free", cost="", paper="")


# ---------------------------------------------------------------- FNet

@settings(max_examples=25, deadline=None)
@given(lead=st.integers(1, 3), n=st.integers(1, 17), c=st.integers(1, 9), seed=seeds)
def test_fourier_mixing_equals_fft2_and_dft_matrices(lead, n, c, seed):
    """Odd and even N and C alike."""
    x = torch.randn(lead, n, c, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    out = fourier_mixing(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    torch.testing.assert_close(out, torch.fft.fft2(x, dim=(-2, -1)).real, atol=1e-12, rtol=0)
    torch.testing.assert_close(out, fourier_mixing_reference(x), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("n", [1, 2, 7, 64, 101])
def test_dft_matrices_are_the_dft(n):
    Cn, Sn = dft_matrices(n)
    F_n = torch.complex(Cn, -Sn)  # C - i S
    eye = torch.eye(n, dtype=torch.complex128)
    torch.testing.assert_close(F_n, torch.fft.fft(eye, dim=0), atol=1e-12, rtol=0)
    # F_n / sqrt(n) is unitary
    torch.testing.assert_close(F_n @ F_n.conj().T / n, eye, atol=1e-12, rtol=0)


def test_fourier_mixing_of_a_constant_and_of_one_spike():
    x = torch.ones(1, 6, 5, dtype=torch.float64)
    expected = torch.zeros_like(x)
    expected[0, 0, 0] = 30.0  # all the energy in the zero frequency
    torch.testing.assert_close(fourier_mixing(x), expected, atol=1e-12, rtol=0)
    spike = torch.zeros(7, 3, dtype=torch.float64)
    spike[2, 1] = 1.0  # Re exp(-2πi (2a/7 + b/3))
    a, b = torch.meshgrid(torch.arange(7.0, dtype=torch.float64), torch.arange(3.0, dtype=torch.float64),
                          indexing="ij")
    expected = torch.cos(2 * math.pi * (2 * a / 7 + b / 3))
    torch.testing.assert_close(fourier_mixing(spike), expected, atol=1e-12, rtol=0)


def test_fourier_mixing_float32_and_odd_lengths():
    x = torch.randn(2, 33, 15)
    torch.testing.assert_close(fourier_mixing(x), fourier_mixing_reference(x.double()).float(),
                               atol=1e-4, rtol=1e-4)


def test_fnet_mixing_has_no_parameters():
    block = FNetBlock(C)
    owners = {name.split(".")[0] for name, _ in block.named_parameters()}
    assert owners == {"norm_mix", "ff", "norm_ff"}
    # The block is LN(x + fourier(x)) followed by the post-norm feed-forward; with the
    # feed-forward zeroed it reduces to the mixing alone (both norms start as the identity affine).
    torch.nn.init.zeros_(block.ff[2].weight)
    torch.nn.init.zeros_(block.ff[2].bias)
    x = torch.randn(B, 50, C)  # FNet serves any length
    expected = F.layer_norm(F.layer_norm(x + torch.fft.fft2(x).real, (C,)), (C,))
    torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- gMLP

def _gating_loop(x, weight, bias, nw=None, nb=None, causal=False):
    """Spatial gating position by position: out_i = u_i ⊙ (Σ_j W_ij LN(v_j) + b_i)."""
    e = x.shape[-1] // 2
    u, v = x[..., :e], x[..., e:]
    mean = v.mean(-1, keepdim=True)
    var = ((v - mean) ** 2).mean(-1, keepdim=True)
    v = (v - mean) / torch.sqrt(var + 1e-5)
    if nw is not None:
        v = v * nw + nb
    out = torch.empty_like(u)
    n = x.shape[-2]
    for i in range(n):
        mixed = bias[i] + sum(weight[i, j] * v[..., j, :] for j in range(n) if not (causal and j > i))
        out[..., i, :] = u[..., i, :] * mixed
    return out


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("affine", [False, True])
def test_spatial_gating_equals_a_loop_over_positions(causal, affine):
    n, e = 9, 5
    x, W, b = randn(3, n, 2 * e), randn(n, n), randn(n)
    nw, nb = (randn(e), randn(e)) if affine else (None, None)
    got = spatial_gating(x, W, b, causal=causal, norm_weight=nw, norm_bias=nb)
    assert got.shape == (3, n, e)
    torch.testing.assert_close(got, _gating_loop(x, W, b, nw, nb, causal), atol=1e-12, rtol=1e-10)


def test_spatial_gating_rejects_bad_shapes():
    with pytest.raises(ValueError, match="even number of channels"):
        spatial_gating(randn(2, 4, 5), randn(4, 4), randn(4))
    with pytest.raises(ValueError, match=r"weight \(N, N\)"):
        spatial_gating(randn(2, 4, 6), randn(5, 5), randn(5))


def test_gmlp_at_init_is_close_to_identity_gating():
    """W ≈ 0 and b = 1 at initialisation: the gate v ≈ 1, so the unit passes u through."""
    block = gMLPBlock(C, N, hidden=64)
    assert torch.equal(block.gate_bias, torch.ones(N))
    assert block.gate_weight.abs().max() <= 1e-3 / N
    z = torch.randn(B, N, 64)
    torch.testing.assert_close(block.gate(z), z[..., :32], atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("t", [0, 13, N - 2])
def test_causal_gmlp_ignores_the_future(t):
    torch.manual_seed(t)
    block = gMLPBlock(C, N, causal=True).double()
    with torch.no_grad():
        block.gate_weight.normal_()  # away from the near-zero init, so that mixing matters
    x = randn(B, N, C)
    x2 = x.clone()
    x2[:, t + 1:] = randn(B, N - t - 1, C)
    out, out2 = block(x), block(x2)
    torch.testing.assert_close(out2[:, :t + 1], out[:, :t + 1], atol=1e-12, rtol=0)
    assert not torch.allclose(out2[:, t + 1:], out[:, t + 1:])
    block.causal = False  # the same weights without the mask do see the future
    assert not torch.allclose(block(x2)[:, :t + 1], block(x)[:, :t + 1])


# ---------------------------------------------------------------- MLP-Mixer

def _token_mixing_loop(x, w1, b1, w2, b2):
    """Channel by channel: x[:, c] + W2 gelu(W1 LN(x)[:, c] + b1) + b2 (column vectors of length N)."""
    y = F.layer_norm(x, x.shape[-1:])
    out = x.clone()
    for c in range(x.shape[-1]):
        col = y[..., :, c]  # (B, N)
        hidden = F.gelu(col @ w1.T + b1)  # (B, Ds)
        out[..., :, c] = x[..., :, c] + hidden @ w2.T + b2  # (B, N)
    return out


def test_token_mixing_equals_a_loop_over_channels():
    n, c, ds = 11, 6, 7
    x = randn(3, n, c)
    w1, b1, w2, b2 = randn(ds, n), randn(ds), randn(n, ds), randn(n)
    got = token_mixing(x, w1, b1, w2, b2)
    assert got.shape == x.shape
    torch.testing.assert_close(got, _token_mixing_loop(x, w1, b1, w2, b2), atol=1e-12, rtol=1e-10)
    with pytest.raises(ValueError, match=r"w1 \(Ds, N\)"):
        token_mixing(x, randn(ds, n + 1), b1, w2, b2)


def test_mixer_block_is_token_then_channel_mixing():
    block = MixerBlock(C, N, token_hidden=12).double()
    for p in block.parameters():  # random affine norms too, so that their order matters
        torch.nn.init.normal_(p)
    n = 20  # fewer tokens than seq_len: the first n rows of the token weights
    x = randn(B, n, C)
    fc1, fc2 = block.token_fc1, block.token_fc2
    y = F.layer_norm(x, (C,), block.token_norm.weight, block.token_norm.bias).transpose(1, 2)  # (B, C, n)
    u = x + (F.gelu(y @ fc1.weight[:, :n].T + fc1.bias) @ fc2.weight[:n].T + fc2.bias[:n]).transpose(1, 2)
    h = F.layer_norm(u, (C,), block.channel_norm.weight, block.channel_norm.bias)
    lin1, lin2 = block.channel_mlp[0], block.channel_mlp[2]
    expected = u + F.gelu(h @ lin1.weight.T + lin1.bias) @ lin2.weight.T + lin2.bias
    torch.testing.assert_close(block(x), expected, atol=1e-10, rtol=1e-10)
    with pytest.raises(ValueError, match="at most seq_len"):
        block(randn(B, N + 1, C))


def test_whole_blocks_are_marked_as_blocks():
    """FNet, gMLP and MLP-Mixer bring their residuals and norms; the Synthesizers replace attention."""
    from attnkit import MIXERS

    assert {n for n, m in MIXERS.items() if m.block} == {"fnet", "gmlp", "mixer"}
