"""Shared hypothesis strategies: attention shapes, seeds and mask kinds (small, so tests stay fast).

Tests draw a ``seed`` with the shape and build their tensors from ``torch.Generator(seed)``:
every example gets fresh random inputs, and a failing example replays exactly.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from hypothesis import strategies as st

from attnkit.grading import random_qkv

seeds = st.integers(min_value=0, max_value=2**31 - 1)


class Shape(NamedTuple):
    """Sizes of one attention call: q (B, H, N, D), k (B, H, M, D), v (B, H, M, Dv)."""

    B: int
    H: int
    N: int
    M: int
    D: int
    Dv: int


@st.composite
def shapes(draw, *, max_b: int = 3, max_h: int = 3, max_n: int = 12, max_d: int = 8,
           square: bool = False, same_dv: bool = False) -> Shape:
    """A random attention shape; ``square`` forces M = N, ``same_dv`` forces Dv = D."""
    B = draw(st.integers(1, max_b))
    H = draw(st.integers(1, max_h))
    N = draw(st.integers(1, max_n))
    M = N if square else draw(st.integers(1, max_n))
    D = draw(st.integers(1, max_d))
    Dv = D if same_dv else draw(st.integers(1, max_d))
    return Shape(B, H, N, M, D, Dv)


def make_qkv(shape: Shape, seed: int, dtype: torch.dtype = torch.float64, device="cpu",
             scale: float = 1.0):
    """``q, k, v`` of ``shape`` from a generator seeded with ``seed`` (drawn in float64)."""
    B, H, N, M, D, Dv = shape
    q, k, v = random_qkv(B, H, N, D, M=M, Dv=Dv, seed=seed, scale=scale)
    return tuple(t.to(device=device, dtype=dtype) for t in (q, k, v))


def fresh_qkv(B: int = 2, H: int = 3, N: int = 37, D: int = 5, *, M: int | None = None,
              Dv: int | None = None, dtype: torch.dtype = torch.float64, scale: float = 1.0,
              device=None):
    """Fresh random ``q, k, v`` for each check: :func:`attnkit.grading.random_qkv` with a new
    seed drawn from torch's global generator (seeded per test by the ``seeded`` fixture)."""
    seed = int(torch.randint(0, 2**31 - 1, ()))
    return random_qkv(B, H, N, D, M=M, Dv=Dv, seed=seed, dtype=dtype, scale=scale, device=device)


# Where a mask lives relative to (B, H, N, M): every layout SDPA broadcasts.
mask_layouts = st.sampled_from(["NM", "B1NM", "BHNM", "11NM"])
# What a mask says: random keep/drop, causal, random with some fully masked query rows, or a bias.
mask_kinds = st.sampled_from(["none", "random", "causal", "empty_rows", "bias"])


def make_mask(kind: str, layout: str, shape: Shape, seed: int, dtype: torch.dtype = torch.float64,
              device="cpu"):
    """A mask of ``kind`` laid out as ``layout`` (see :data:`mask_layouts`), or None for "none"."""
    if kind == "none":
        return None
    B, H, N, M, _, _ = shape
    full_shape = {"NM": (N, M), "B1NM": (B, 1, N, M), "BHNM": (B, H, N, M), "11NM": (1, 1, N, M)}[layout]
    g = torch.Generator().manual_seed(seed + 1)
    if kind == "bias":
        return torch.randn(full_shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    if kind == "causal":
        mask = torch.ones(N, M, dtype=torch.bool).tril().expand(full_shape).clone()
    else:
        mask = torch.rand(full_shape, generator=g) < 0.6
        if kind == "empty_rows":
            rows = torch.rand(full_shape[:-1], generator=g) < 0.4  # these queries see no key
            mask &= ~rows.unsqueeze(-1)
    return mask.to(device)
