"""The Triton kernels (attnkit.triton_window), the tile classification (masks.tile_grid) and the
FlexAttention work count (flex.blocks_visited).

On the CPU the kernels run under Triton's interpreter (``TRITON_INTERPRET=1``, switched on by
``import attnkit``): exact float32 arithmetic, so the tolerances are tight; sizes stay small
because the interpreter runs one program instance at a time. The CUDA tests (bf16, the GPU
block sizes, the ``local`` path) run on a GPU only.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnkit import dense_attention, flex
from attnkit.fixed import bigbird_mask, local, local_mask, local_reference, longformer_mask
from attnkit.masks import EMPTY, FULL, PARTIAL, causal_mask, materialize, tile_grid

tw = pytest.importorskip("attnkit.triton_window", reason="needs triton")


def qkv(B, H, N, M, D, Dv=None, *, seed=0, dtype=torch.float32, device="cpu", scale=1.0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, N, D, generator=g) * scale
    k = torch.randn(B, H, M, D, generator=g) * scale
    v = torch.randn(B, H, M, Dv or D, generator=g)
    return (x.to(device=device, dtype=dtype) for x in (q, k, v))


def band(N: int, window: int | None, causal: bool, M: int | None = None) -> torch.Tensor:
    """The allowed (N, M) pairs, written out independently of the library."""
    M = N if M is None else M
    i = torch.arange(N).view(-1, 1)
    j = torch.arange(M).view(1, -1)
    keep = torch.ones(N, M, dtype=torch.bool)
    if window is not None:
        keep &= (i - j).abs() <= window
    if causal:
        keep &= j <= i
    return keep


# ---------------------------------------------------------------- the kernels, under the interpreter

def test_the_interpreter_is_on_without_a_gpu():
    assert tw.interpreting() == (not torch.cuda.is_available())
    if tw.interpreting():
        assert os.environ["TRITON_INTERPRET"] == "1"


@settings(max_examples=12, deadline=None)
@given(N=st.integers(1, 70), M=st.integers(1, 70), D=st.sampled_from([4, 16, 20]), causal=st.booleans(),
       blocks=st.sampled_from([(16, 16), (32, 16), (16, 32)]), seed=st.integers(0, 2**16))
def test_flash_attention_equals_dense_attention(N, M, D, causal, blocks, seed):
    if causal:
        M = N
    q, k, v = qkv(1, 2, N, M, D, seed=seed)
    got = tw.flash_attention(q, k, v, causal=causal, block_m=blocks[0], block_n=blocks[1])
    keep = band(N, None, causal, M)
    torch.testing.assert_close(got.out, dense_attention(q, k, v, mask=keep), atol=2e-6, rtol=1e-5)
    scores = (q @ k.transpose(-2, -1) / D ** 0.5).masked_fill(~keep, float("-inf"))  # (1, 2, N, M)
    torch.testing.assert_close(got.lse, torch.logsumexp(scores, dim=-1), atol=2e-6, rtol=1e-5)
    expected = tw.tile_counts(N, M, block_m=blocks[0], block_n=blocks[1], causal=causal)
    assert torch.equal(got.tiles, expected.to(torch.int32).expand(1, 2, -1))


@settings(max_examples=12, deadline=None)
@given(N=st.integers(1, 90), window=st.integers(0, 40), causal=st.booleans(), Dv=st.sampled_from([8, 16]),
       blocks=st.sampled_from([(16, 16), (32, 16), (16, 32)]), seed=st.integers(0, 2**16))
def test_window_kernel_equals_the_reference_and_visits_only_the_band(N, window, causal, Dv, blocks, seed):
    q, k, v = qkv(2, 1, N, N, 16, Dv, seed=seed)
    got = tw.flash_attention(q, k, v, window=window, causal=causal, block_m=blocks[0], block_n=blocks[1])
    torch.testing.assert_close(got.out, local_reference(q, k, v, window=window, causal=causal),
                               atol=2e-6, rtol=1e-5)
    grid = tile_grid(band(N, window, causal), *blocks)  # (nq, nk)
    assert torch.equal(got.tiles[0, 0].long(), (grid != EMPTY).sum(-1)), "visits a tile outside the band"
    assert torch.equal(got.tiles[0, 0].long(), tw.tile_counts(N, block_m=blocks[0], block_n=blocks[1],
                                                              window=window, causal=causal))


def test_the_window_kernel_reads_nothing_past_the_last_key():
    """Ragged N: the last tile is partly past the end; values there are poison (NaN) in a bigger
    buffer, so a load without its bounds mask would spread NaN into the output."""
    N, D = 37, 16
    q, k, v = qkv(1, 1, 48, 48, D, seed=3)
    k[..., N:, :] = float("nan")
    v[..., N:, :] = float("nan")
    q, k, v = q[..., :N, :], k[..., :N, :], v[..., :N, :]  # views: the poison stays right after them
    got = tw.flash_attention(q, k, v, window=5)
    assert torch.isfinite(got.out).all()
    torch.testing.assert_close(got.out, local_reference(q, k, v, window=5), atol=2e-6, rtol=1e-5)


def test_large_logits_do_not_overflow():
    q, k, v = qkv(1, 1, 40, 40, 16, seed=4, scale=30.0)  # scores in the thousands: exp() overflows
    got = tw.flash_attention(q, k, v, causal=True)
    assert torch.isfinite(got.out).all()
    # float32 scores of size ~3000 carry rounding of ~3e-4: the tolerance follows the conditioning
    ref = dense_attention(q.double(), k.double(), v.double(), mask=causal_mask(40)).float()
    torch.testing.assert_close(got.out, ref, atol=2e-3, rtol=1e-3)


def test_non_contiguous_inputs_and_a_scale():
    q, k, v = qkv(1, 3, 33, 33, 16, seed=5)
    q, k, v = (x.transpose(1, 2).contiguous().transpose(1, 2) for x in (q, k, v))  # (B, N, H, D) memory
    got = tw.window_attention(q, k, v, window=7, scale=0.5)
    torch.testing.assert_close(got, local_reference(q, k, v, window=7, scale=0.5), atol=2e-6, rtol=1e-5)


@settings(max_examples=10, deadline=None)
@given(rows=st.integers(1, 6), cols=st.integers(1, 300), big=st.booleans(), seed=st.integers(0, 2**16))
def test_softmax_kernel_equals_torch(rows, cols, big, seed):
    x = torch.randn(2, rows, cols, generator=torch.Generator().manual_seed(seed)) * (300.0 if big else 1.0)
    got = tw.softmax(x)
    assert got.shape == x.shape
    torch.testing.assert_close(got, torch.softmax(x, dim=-1), atol=1e-6, rtol=1e-5)


def test_clear_errors():
    q, k, v = qkv(1, 1, 8, 8, 16)
    with pytest.raises(ValueError, match="power of two"):
        tw.flash_attention(q, k, v, block_m=24)
    with pytest.raises(ValueError, match="power of two"):
        tw.flash_attention(q, k, v, block_n=8)
    with pytest.raises(ValueError, match="as many keys"):
        tw.flash_attention(q, k[..., :5, :], v[..., :5, :], causal=True)
    with pytest.raises(ValueError, match="window must be"):
        tw.flash_attention(q, k, v, window=-1)
    with pytest.raises(ValueError, match="shapes do not match"):
        tw.flash_attention(q, k[..., :4], v)
    with pytest.raises(ValueError, match=r"\(B, H, N, D\)"):
        tw.flash_attention(q[0], k[0], v[0])
    if tw.interpreting():
        with pytest.raises(ValueError, match="cpu tensors"):
            tw.flash_attention(q.to("meta"), k.to("meta"), v.to("meta"))


def test_triton_imported_first_gets_a_clear_error(tmp_path):
    """A notebook that imports triton (or torch._dynamo) before attnkit cannot use the interpreter."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    env.pop("TRITON_INTERPRET", None)
    code = "import torch._dynamo, triton.language\nfrom attnkit.notebook import triton_device\ntriton_device()\n"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode != 0 and "Restart the kernel" in run.stderr


# ---------------------------------------------------------------- tile counts and tile kinds

@settings(max_examples=60, deadline=None)
@given(N=st.integers(1, 200), window=st.none() | st.integers(0, 70), causal=st.booleans(),
       block_m=st.sampled_from([16, 32, 64]), block_n=st.sampled_from([16, 32, 64]))
def test_tile_counts_are_the_non_empty_tiles(N, window, causal, block_m, block_n):
    grid = tile_grid(band(N, window, causal), block_m, block_n)
    expected = (grid != EMPTY).sum(-1)
    assert torch.equal(tw.tile_counts(N, block_m=block_m, block_n=block_n, window=window, causal=causal), expected)


def test_tile_grid_kinds_by_hand():
    mask = band(8, 1, False)  # tridiagonal 8×8, tiles of 4
    assert tile_grid(mask, 4).tolist() == [[PARTIAL, PARTIAL], [PARTIAL, PARTIAL]]
    assert tile_grid(torch.ones(5, 7, dtype=torch.bool), 4, 4).tolist() == [[FULL, FULL], [FULL, FULL]]
    assert tile_grid(causal_mask(8), 4).tolist() == [[PARTIAL, EMPTY], [FULL, PARTIAL]]
    assert tile_grid(torch.zeros(3, 3, dtype=torch.bool), 2).tolist() == [[EMPTY, EMPTY], [EMPTY, EMPTY]]
    with pytest.raises(ValueError, match=r"\(N, M\)"):
        tile_grid(torch.ones(2, 2, 2, dtype=torch.bool), 2)
    with pytest.raises(ValueError, match=">= 1"):
        tile_grid(torch.ones(2, 2, dtype=torch.bool), 0)


@pytest.mark.parametrize("name, mod", [
    ("local", local_mask(40)),
    ("longformer", longformer_mask(40, 16)),
    ("bigbird", bigbird_mask(512, 64, seed=1)),
])
def test_flex_blocks_visited_matches_the_tile_grid(name, mod):
    from torch.nn.attention.flex_attention import create_block_mask

    N, block = 512, 64
    mask = create_block_mask(mod, None, None, N, N, device="cpu", BLOCK_SIZE=block)
    grid = tile_grid(materialize(mod, N), block)
    assert torch.equal(flex.blocks_visited(mask)[0, 0], (grid != EMPTY).sum(-1))
    if mask.full_kv_num_blocks is not None:
        assert torch.equal(mask.full_kv_num_blocks[0, 0].long(), (grid == FULL).sum(-1))


# ---------------------------------------------------------------- on a GPU

@pytest.mark.cuda
@pytest.mark.parametrize("window, causal", [(None, False), (None, True), (256, False), (100, True)])
def test_gpu_kernel_in_bf16_equals_sdpa(window, causal):
    N = 1000  # ragged against the 128/64 tiles
    q, k, v = qkv(1, 4, N, N, 64, seed=7, dtype=torch.bfloat16, device="cuda")
    got = tw.flash_attention(q, k, v, window=window, causal=causal)
    keep = band(N, window, causal).cuda()
    ref = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=keep)
    err = (got.out.float() - ref).norm() / ref.norm()
    assert err < 1e-2, f"relative error {err:.2e}"
    bm, bn = tw.GPU_BLOCKS
    assert torch.equal(got.tiles[0, 0].cpu().long(),
                       tw.tile_counts(N, block_m=bm, block_n=bn, window=window, causal=causal))


@pytest.mark.cuda
def test_local_takes_the_triton_path_when_asked(monkeypatch):
    q, k, v = qkv(1, 2, 700, 700, 64, seed=8, device="cuda")
    monkeypatch.setenv("ATTNKIT_LOCAL_PATH", "triton")
    got = local(q, k, v, window=64)
    torch.testing.assert_close(got, local_reference(q, k, v, window=64), atol=2e-3, rtol=2e-3)
