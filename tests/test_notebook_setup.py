"""attnkit.notebook: the course chapters' one-call setup, and the one-thread timing block."""
from __future__ import annotations

import random
import re
import warnings
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch

from attnkit.notebook import FIGURE_STYLE, one_thread, setup

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "course").glob("[0-9][0-9]_*.py"))


@pytest.fixture
def restore_globals():
    """setup() changes process-wide state: give it back after each test."""
    rc = matplotlib.rcParams.copy()
    rng = torch.get_rng_state(), np.random.get_state(), random.getstate()
    with warnings.catch_warnings():
        yield
    matplotlib.rcParams.update(rc)
    torch.set_printoptions(profile="default")
    torch.set_rng_state(rng[0])
    np.random.set_state(rng[1])
    random.setstate(rng[2])


def test_setup_seeds_every_generator(restore_globals):
    setup(seed=3, show=False)
    first = (torch.rand(3), np.random.rand(3), random.random())
    setup(seed=3, show=False)
    second = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1]) and first[2] == second[2]
    assert torch.equal(first[0], torch.rand(3, generator=torch.Generator().manual_seed(3)))


def test_setup_sets_style_printing_and_warnings(restore_globals, capsys):
    setup()
    out = capsys.readouterr().out
    assert re.fullmatch(r"torch \S+ \| attnkit \S+ \| threads \d+\n", out), out
    for key, value in FIGURE_STYLE.items():
        assert matplotlib.rcParams[key] == value
    assert str(torch.tensor([0.123456789])) == "tensor([0.1235])"
    with warnings.catch_warnings(record=True) as caught:  # keeps the filters setup() installed
        warnings.warn("noise")
    assert not caught


def test_setup_can_keep_warnings(restore_globals):
    warnings.simplefilter("always")
    setup(ignore_warnings=False, show=False)
    with pytest.warns(UserWarning):
        warnings.warn("kept", UserWarning)


def test_one_thread_restores_the_count_even_on_error():
    before = torch.get_num_threads()
    with one_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), one_thread():
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_every_chapter_uses_the_helper(chapter):
    """One setup call per chapter, and none of the setup it replaces copied back in."""
    src = chapter.read_text(encoding="utf-8")
    assert "from attnkit.notebook import" in src and src.count("\nsetup(seed=") == 1, chapter.name
    for copied in ("warnings.filterwarnings", "np.random.seed(", "plt.rcParams.update(",
                   "torch.set_printoptions(", "threads_before"):
        assert copied not in src, f"{chapter.name}: {copied!r} is what attnkit.notebook does"
