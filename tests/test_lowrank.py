"""Low-rank attention: Linformer and compressed attention equal their dense forms, Linformer with
k = M and identity projections is dense attention, its error falls as k grows on inputs with
low-rank (smooth along the length) structure, and the module forms start where the functions are."""
from __future__ import annotations

import pytest
import torch

from attnkit import VARIANTS, dense_attention, largest_intermediate
from attnkit.lowrank import (CompressedKV, LinformerProjection, compressed, compressed_reference,
                             linformer, linformer_reference, pooling_matrix, random_projection)
from strategies import fresh_qkv


CASES = [
    (linformer, linformer_reference, {"proj_len": 4, "seed": 1}),
    (linformer, linformer_reference, {"proj_len": 50, "seed": 2, "share_kv": True}),
    (linformer, linformer_reference, {"proj_len": 8, "scale": 0.3}),
    (compressed, compressed_reference, {"stride": 1}),
    (compressed, compressed_reference, {"stride": 4}),
    (compressed, compressed_reference, {"stride": 7, "scale": 0.5}),
    (compressed, compressed_reference, {"stride": 100}),
]


@pytest.mark.parametrize("N, M", [(1, 1), (37, 37), (20, 45), (64, 64)])
@pytest.mark.parametrize("fn, reference, kwargs", CASES)
def test_fast_form_equals_its_dense_form(fn, reference, kwargs, N, M):
    q, k, v = fresh_qkv(N=N, M=M, Dv=3)
    out = fn(q, k, v, **kwargs)
    assert out.shape == (2, 3, N, 3) and out.dtype == torch.float64
    torch.testing.assert_close(out, reference(q, k, v, **kwargs), atol=1e-12, rtol=1e-10)


def test_linformer_with_identity_projections_is_dense_attention():
    q, k, v = fresh_qkv(N=30, Dv=4)
    eye = torch.eye(30, dtype=torch.float64)
    torch.testing.assert_close(linformer(q, k, v, E=eye, F=eye), dense_attention(q, k, v),
                               atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(linformer(q, k, v, E=eye, share_kv=True), dense_attention(q, k, v),
                               atol=1e-12, rtol=1e-10)


def test_compressed_is_linformer_with_the_pooling_matrix():
    q, k, v = fresh_qkv(N=23, M=41)
    P = pooling_matrix(41, 6, dtype=torch.float64)
    assert P.shape == (7, 41)
    torch.testing.assert_close(P.sum(-1), torch.ones(7, dtype=torch.float64))
    torch.testing.assert_close(compressed(q, k, v, stride=6), linformer(q, k, v, E=P, F=P),
                               atol=1e-12, rtol=1e-10)


def test_linformer_error_falls_as_k_grows_on_smooth_inputs():
    """Keys and values that vary slowly along the length (a few low frequencies plus a little
    noise) are nearly low rank; pooling them to k rows loses less as k grows, nothing at k = N."""
    B, H, N, D = 1, 2, 256, 8
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, ())))
    t = torch.linspace(0, 1, N, dtype=torch.float64).view(N, 1)  # (N, 1) positions
    freqs = torch.arange(1, 4, dtype=torch.float64).view(1, 3)  # (1, 3) low frequencies

    def smooth(width):
        basis = torch.cat([torch.sin(3.14 * t * freqs), torch.cos(3.14 * t * freqs)], dim=-1)  # (N, 6)
        mix = torch.randn(B, H, 6, width, generator=g, dtype=torch.float64)  # (B, H, 6, width)
        return basis @ mix + 0.01 * torch.randn(B, H, N, width, generator=g, dtype=torch.float64)

    q = torch.randn(B, H, N, D, generator=g, dtype=torch.float64)
    k, v = smooth(D), smooth(D)
    exact = dense_attention(q, k, v)
    errors = []
    for proj_len in (8, 32, 128, 256):
        P = pooling_matrix(N, N // proj_len, dtype=torch.float64)  # (proj_len, N)
        errors.append((linformer(q, k, v, E=P, F=P) - exact).abs().max().item())
    assert errors[0] > errors[1] > errors[2] > errors[3], errors
    assert errors[3] < 1e-12 and errors[2] < errors[0] / 10, errors


def test_random_projection_is_reproducible_and_scaled():
    E, F = random_projection(64, 500, seed=3, dtype=torch.float64)
    E2, F2 = random_projection(64, 500, seed=3, dtype=torch.float64)
    assert torch.equal(E, E2) and torch.equal(F, F2) and not torch.equal(E, F)
    assert abs(E.var().item() * 64 - 1) < 0.05  # entries N(0, 1/k)
    Es, Fs = random_projection(8, 20, seed=3, share_kv=True)
    assert torch.equal(Es, Fs)
    q, k, v = fresh_qkv(N=20)
    assert torch.equal(linformer(q, k, v, proj_len=8, seed=4), linformer(q, k, v, proj_len=8, seed=4))
    assert not torch.allclose(linformer(q, k, v, proj_len=8, seed=4), linformer(q, k, v, proj_len=8, seed=5))



def test_linformer_reuses_its_draw_of_e_and_f():
    """E, F are drawn once per (k, M, seed, share_kv, dtype, device): the same numbers as a
    fresh draw, a new seed or length draws again, and clear_cache() forgets them."""
    from attnkit.lowrank import _drawn_projections, clear_cache

    q, k, v = fresh_qkv(N=40)
    clear_cache()
    out = linformer(q, k, v, proj_len=8, seed=6)
    E, F = random_projection(8, 40, seed=6, dtype=q.dtype)
    torch.testing.assert_close(out, linformer(q, k, v, E=E, F=F), rtol=0, atol=0)
    linformer(q, k, v, proj_len=8, seed=6)
    assert _drawn_projections.cache_info().hits == 1
    linformer(q, k, v, proj_len=8, seed=7)
    linformer(*fresh_qkv(N=41), proj_len=8, seed=6)
    assert _drawn_projections.cache_info().misses == 3
    clear_cache()
    assert _drawn_projections.cache_info().currsize == 0

def test_module_forms_start_at_the_functions_and_learn():
    q, k, v = fresh_qkv(N=24, D=4)
    layer = LinformerProjection(max_len=32, proj_len=6, seed=2)
    E, F = random_projection(6, 32, seed=2)
    torch.testing.assert_close(layer(q.float(), k.float(), v.float()),
                               linformer(q.float(), k.float(), v.float(), E=E[:, :24], F=F[:, :24]))
    layer(q.float(), k.float(), v.float()).sum().backward()
    assert layer.E.grad is not None and layer.F.grad is not None
    assert LinformerProjection(32, 6, share_kv=True).F is None
    with pytest.raises(ValueError, match="at most 32"):
        layer(*fresh_qkv(N=40, D=4, dtype=torch.float32))

    conv = CompressedKV(4, stride=4).double()
    torch.testing.assert_close(conv(q, k, v), compressed(q, k, v, stride=4), atol=1e-12, rtol=1e-10)
    conv(q, k, v).sum().backward()
    assert conv.conv_k.weight.grad is not None
    assert conv(*fresh_qkv(N=25, D=4)).shape == (2, 3, 25, 4)  # last run zero-padded


def test_memory_is_N_times_k_not_N_squared():
    B, H, N, D = 1, 2, 2048, 16
    q, k, v = fresh_qkv(B=B, H=H, N=N, D=D, dtype=torch.float32)
    assert largest_intermediate(linformer, q, k, v, proj_len=64).numel <= B * H * N * 64
    assert largest_intermediate(compressed, q, k, v, stride=32).numel <= B * H * N * 64


@pytest.mark.cuda
@pytest.mark.parametrize("fn, reference, kwargs", [CASES[0], CASES[2], CASES[4]])
def test_gpu_path_through_sdpa_equals_the_dense_form(fn, reference, kwargs):
    q, k, v = (x.cuda() for x in fresh_qkv(B=1, H=4, N=3000, D=64, dtype=torch.float32))
    torch.testing.assert_close(fn(q.bfloat16(), k.bfloat16(), v.bfloat16(), **kwargs).float(),
                               reference(q, k, v, **kwargs), atol=3e-2, rtol=3e-2)
    torch.testing.assert_close(fn(q, k, v, **kwargs), reference(q, k, v, **kwargs), atol=1e-4, rtol=1e-4)


def test_registry_entries():
    for name in ("linformer", "compressed"):
        assert VARIANTS[name].family == "low rank" and VARIANTS[name].reference is not None


@pytest.mark.parametrize("call", [
    lambda q, k, v: linformer(q, k, v),
    lambda q, k, v: linformer(q, k, v, proj_len=0),
    lambda q, k, v: linformer(q, k, v, E=torch.eye(10, dtype=q.dtype)),
    lambda q, k, v: linformer(q, k, v, E=torch.eye(9, dtype=q.dtype), share_kv=True),
    lambda q, k, v: compressed(q, k, v, stride=0),
])
def test_bad_hyperparameters_raise(call):
    with pytest.raises(ValueError):
        call(*fresh_qkv(N=10))
