"""Shared test configuration: CUDA-only tests skip themselves on a machine without a GPU.

The markers ``cuda`` and ``slow`` are declared in pyproject.toml. Shared hypothesis strategies
live in ``tests/strategies.py``.
"""
from __future__ import annotations

import zlib

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    """Skip every test marked ``cuda`` (directly or through a ``device`` parameter) without a GPU."""
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def seeded(request) -> None:
    """Seed torch's global generator from the test's id: fresh random inputs for every test
    (``tests.strategies.fresh_qkv``), the same in every run and under any order of workers."""
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(scope="session", params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request) -> torch.device:
    """Run a test on the CPU and, where a GPU exists, on CUDA too."""
    return torch.device(request.param)
