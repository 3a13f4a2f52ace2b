"""The registry of variants: every entry follows the calling convention and equals its reference.

The parametrised checks loop over ``VARIANTS``: registering a variant adds it to these tests.
"""
from __future__ import annotations

import pytest
import torch

import attnkit
from attnkit import VARIANTS, Variant, dense_attention, register
from strategies import fresh_qkv as _fresh_qkv

# Small enough to be fast, divisible enough for block- and window-based variants.
B, H, N, D = 2, 2, 64, 8


def fresh_qkv(dtype=torch.float64):
    return _fresh_qkv(B, H, N, D, dtype=dtype)


def test_variants_is_a_dict_of_variants():
    assert isinstance(VARIANTS, dict) and VARIANTS
    for name, variant in VARIANTS.items():
        assert isinstance(variant, Variant) and callable(variant)
        assert variant.name == name
        assert variant.family and variant.cost and variant.paper
        assert isinstance(variant.example_kwargs, dict)


def test_dense_is_registered_and_is_dense_attention():
    dense = VARIANTS["dense"]
    assert dense.fn is dense_attention and dense.reference is None and dense.family == "dense"
    q, k, v = fresh_qkv()
    assert torch.equal(dense(q, k, v), dense_attention(q, k, v))
    mask = torch.rand(N, N) < 0.5
    assert torch.equal(dense(q, k, v, mask=mask), dense_attention(q, k, v, mask=mask))


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_follows_the_convention(name):
    variant = VARIANTS[name]
    q, k, v = fresh_qkv()
    out = variant(q, k, v, **variant.example_kwargs)
    assert isinstance(out, torch.Tensor), f"{name} returned {type(out).__name__}"
    assert out.shape == (B, H, N, D) and out.dtype == q.dtype
    assert torch.isfinite(out).all()
    if variant.reference is not None:
        expected = variant.reference(q, k, v, **variant.example_kwargs)
        torch.testing.assert_close(out, expected, atol=1e-9, rtol=1e-7,
                                   msg=lambda m: f"{name} differs from its reference: {m}")


@pytest.fixture
def temporary_variant():
    """A variant registered for one test and removed afterwards."""
    name = "test-temporary-identity"
    assert name not in VARIANTS

    def identity_values(q, k, v):
        return v.clone()

    variant = register(name, identity_values, family="test", cost="O(N·D)", paper="none",
                       example_kwargs={}, reference=lambda q, k, v: v)
    try:
        yield variant
    finally:
        VARIANTS.pop(name, None)


def test_register_adds_and_refuses_duplicates(temporary_variant):
    name = temporary_variant.name
    assert VARIANTS[name] is temporary_variant
    q, k, v = fresh_qkv()
    assert torch.equal(VARIANTS[name](q, k, v), v)
    with pytest.raises(ValueError, match="already registered"):
        register(name, dense_attention, family="dense", cost="", paper="")
    assert VARIANTS[name] is temporary_variant, "a refused registration must not replace the entry"


def test_dense_cannot_be_registered_twice():
    with pytest.raises(ValueError, match="'dense' is already registered"):
        register("dense", dense_attention, family="dense", cost="", paper="")
    assert VARIANTS["dense"].fn is dense_attention


def test_register_copies_example_kwargs():
    kwargs = {"window": 3}
    try:
        variant = register("test-kwargs-copy", dense_attention, family="test", cost="", paper="",
                           example_kwargs=kwargs)
        kwargs["window"] = 99
        assert variant.example_kwargs == {"window": 3}
    finally:
        VARIANTS.pop("test-kwargs-copy", None)


def test_top_level_exports_exist():
    for name in attnkit.__all__:
        assert hasattr(attnkit, name), name
