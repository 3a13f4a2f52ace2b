"""Mask functions: materialised patterns equal their obvious tensor forms and FlexAttention's own
``create_mask``; combinators equal elementwise logic."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnkit import masks
from attnkit.masks import (and_masks, causal, causal_mask, density, full, materialize, not_mask,
                           or_masks)

sizes = st.integers(1, 24)


def window(w: int):
    def sliding_window(b, h, q_idx, kv_idx):
        return (q_idx - kv_idx).abs() <= w
    return sliding_window


def stride(s: int):
    def strided(b, h, q_idx, kv_idx):
        return (kv_idx % s) == 0
    return strided


def per_head(b, h, q_idx, kv_idx):
    """Head h sees h keys further into the future than plain causal."""
    return kv_idx <= q_idx + h


def per_batch(b, h, q_idx, kv_idx):
    """Batch b drops its first b keys."""
    return kv_idx >= b


mods = st.sampled_from([full, causal, window(1), window(3), stride(2), stride(3)])


@settings(max_examples=20, deadline=None)
@given(N=sizes)
def test_causal_is_lower_triangular(N):
    got = materialize(causal, N)
    assert got.dtype == torch.bool and got.shape == (N, N)
    assert torch.equal(got, torch.tril(torch.ones(N, N, dtype=torch.bool)))


@settings(max_examples=20, deadline=None)
@given(N=sizes, M=sizes)
def test_causal_mask_rectangular(N, M):
    got = causal_mask(N, M)
    assert got.shape == (N, M)
    expected = torch.tensor([[j <= i for j in range(M)] for i in range(N)], dtype=torch.bool)
    assert torch.equal(got.reshape(N, M), expected.reshape(N, M))
    assert torch.equal(causal_mask(N), materialize(causal, N))


@settings(max_examples=10, deadline=None)
@given(N=sizes, M=sizes)
def test_full_is_all_true(N, M):
    got = materialize(full, N, M)
    assert got.shape == (N, M) and got.all()


@settings(max_examples=30, deadline=None)
@given(N=sizes, M=sizes, a=mods, b=mods, c=mods)
def test_combinators_are_elementwise_logic(N, M, a, b, c):
    ma, mb, mc = (materialize(m, N, M) for m in (a, b, c))
    assert torch.equal(materialize(and_masks(a, b, c), N, M), ma & mb & mc)
    assert torch.equal(materialize(or_masks(a, b, c), N, M), ma | mb | mc)
    assert torch.equal(materialize(not_mask(a), N, M), ~ma)
    assert torch.equal(materialize(and_masks(a), N, M), ma)
    assert torch.equal(materialize(or_masks(a, not_mask(a)), N, M), torch.ones(N, M, dtype=torch.bool))


def test_combinators_need_a_mask_and_name_their_parts():
    with pytest.raises(ValueError):
        and_masks()
    with pytest.raises(ValueError):
        or_masks()
    assert and_masks(causal, full).__name__ == "and_causal_full"
    assert or_masks(causal, full).__name__ == "or_causal_full"
    assert not_mask(causal).__name__ == "not_causal"


def test_per_head_mask_differs_between_heads():
    N = 6
    got = materialize(per_head, N, B=2, H=3)
    assert got.shape == (2, 3, N, N) and got.dtype == torch.bool
    for h in range(3):
        expected = torch.ones(N, N, dtype=torch.bool).tril(diagonal=h)
        for b in range(2):
            assert torch.equal(got[b, h], expected), f"batch {b}, head {h}"
    assert not torch.equal(got[:, 0], got[:, 1]) and not torch.equal(got[:, 1], got[:, 2])


def test_per_batch_mask_and_head_independent_mask_broadcast():
    got = materialize(per_batch, 4, 5, B=3)  # H defaults to 1
    assert got.shape == (3, 1, 4, 5)
    for b in range(3):
        assert torch.equal(got[b, 0], (torch.arange(5) >= b).expand(4, 5))
    # A mask that ignores b and h is the same (N, M) pattern repeated over (B, H).
    rep = materialize(causal, 4, 5, B=2, H=3)
    assert rep.shape == (2, 3, 4, 5)
    assert torch.equal(rep, causal_mask(4, 5).expand(2, 3, 4, 5))
    assert rep.is_contiguous()  # a real tensor, not an expanded view that aliases one (N, M) block


def test_materialize_on_device(device):
    got = materialize(causal, 5, 7, device=device)
    assert got.device.type == device.type
    assert torch.equal(got.cpu(), torch.ones(5, 7, dtype=torch.bool).tril())


@settings(max_examples=20, deadline=None)
@given(N=sizes, M=sizes)
def test_density(N, M):
    assert density(materialize(full, N, M)) == 1.0
    assert density(~materialize(full, N, M)) == 0.0
    # The causal (N, M) mask has sum over i of min(i + 1, M) visible pairs.
    visible = sum(min(i + 1, M) for i in range(N))
    assert density(causal_mask(N, M)) == pytest.approx(visible / (N * M))


def test_density_of_square_causal_is_about_half():
    assert density(causal_mask(100)) == pytest.approx(101 / 200)


def test_materialize_scores_applies_a_score_mod():
    scores = torch.randn(2, 3, 4, 5, dtype=torch.float64)

    def alibi(score, b, h, q_idx, kv_idx):
        return score - (h + 1) * (q_idx - kv_idx).abs()

    got = masks.materialize_scores(alibi, scores)
    i, j = torch.arange(4).view(4, 1), torch.arange(5).view(1, 5)
    for h in range(3):
        torch.testing.assert_close(got[:, h], scores[:, h] - (h + 1) * (i - j).abs())


def _create_mask():
    flex = pytest.importorskip("torch.nn.attention.flex_attention",
                               reason="this torch has no FlexAttention")
    return flex.create_mask


@pytest.mark.parametrize("mod", [
    full, causal, window(2), stride(3), per_head, per_batch, and_masks(causal, window(2)),
    or_masks(causal, stride(2)), not_mask(causal),
], ids=lambda m: m.__name__)
def test_matches_flex_attention_create_mask(mod):
    create_mask = _create_mask()
    B, H, N, M = 2, 3, 9, 7
    expected = create_mask(mod, B, H, N, M, device="cpu")
    assert torch.equal(materialize(mod, N, M, B=B, H=H), expected)
    if mod not in (per_head, per_batch):  # no dependence on (b, h): the (N, M) form agrees too
        assert torch.equal(materialize(mod, N, M), expected[0, 0])


# ---------------------------------------------------------------- the shared patterns

LAYOUT = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 1]], dtype=torch.bool)


@pytest.mark.parametrize("mod", [
    masks.window_mask(2), masks.window_mask(2, dilation=3), masks.window_mask(3, causal=True),
    masks.global_mask(2), masks.global_mask([0, 5]), masks.layout_mask(LAYOUT, 3),
    or_masks(masks.window_mask(1), masks.global_mask(torch.tensor([4]))),
], ids=["window", "dilated", "causal-window", "first-g", "listed", "layout", "longformer"])
def test_shared_patterns_match_flex_create_mask(mod):
    create_mask = _create_mask()
    expected = create_mask(mod, 1, 1, 9, 9, device="cpu")[0, 0]
    assert torch.equal(materialize(mod, 9), expected)


def test_shared_patterns_equal_their_definitions():
    i, j = torch.arange(9).view(9, 1), torch.arange(9).view(1, 9)
    d = i - j
    assert torch.equal(materialize(masks.window_mask(2, dilation=3), 9), (d.abs() <= 6) & (d % 3 == 0))
    assert torch.equal(materialize(masks.window_mask(3, causal=True), 9), (d >= 0) & (d <= 3))
    listed = torch.zeros(9, dtype=torch.bool)
    listed[[0, 5]] = True
    assert torch.equal(materialize(masks.global_mask([0, 5]), 9), listed.view(9, 1) | listed.view(1, 9))
    assert torch.equal(materialize(masks.global_mask(2), 9), (i < 2) | (j < 2))
    assert torch.equal(materialize(masks.layout_mask(LAYOUT, 3), 9), LAYOUT[i // 3, j // 3])
    with pytest.raises(ValueError, match=">= 0"):
        masks.global_mask([-1, 2])


def test_new_hyperparameters_reuse_the_same_mask_code():
    """Hyperparameters are captured tensors: FlexAttention compiles each pattern's code once."""
    assert masks.window_mask(4).__code__ is masks.window_mask(9, dilation=2, causal=True).__code__
    tables = [masks.layout_mask(LAYOUT, 3), masks.layout_mask(~LAYOUT, 5)]
    assert tables[0].__code__ is tables[1].__code__


def test_patterns_live_in_the_mask_modules_not_in_the_flex_path():
    """Each pattern is written once (attnkit.masks and the family modules); the Flex path only
    runs them, and no other module reaches into its private helpers."""
    import ast
    import pathlib

    import attnkit
    from attnkit import flex

    lib = pathlib.Path(attnkit.__file__).parent
    tree = ast.parse((lib / "flex.py").read_text())
    defined = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    factories = [n for n in defined if n.endswith(("_mod", "_mask")) and n != "block_mask"]
    assert not factories, f"pattern factories in flex.py: {factories}"  # block_mask: the cache
    assert "dispatch" in flex.__all__
    for path in lib.rglob("*.py"):
        if path.name == "flex.py":
            continue
        private = [n.attr for n in ast.walk(ast.parse(path.read_text()))
                   if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
                   and n.value.id == "flex" and n.attr.startswith("_")]
        assert not private, (path.name, private)
