"""Caching answers lose the speed cells' points; the honest answers keep them (issue 17, part 2).

The notebooks come from ``tests/hostile/speed.py``: the model solutions, with the timed function
wrapped in a cache keyed on the inputs' identity (a2), data pointer (a3), a hash of their values
(a4) or a weak reference (a6). Grading a whole a2-a4 notebook takes minutes, so each case runs
only what the speed cell needs, the way ``test_grade_cells.py`` runs grade cells: in an IPython
kernel, every code cell that is not a grade cell up to the speed cell, then the speed cell as the
source notebook has it. The speed cell fails when it raises or writes to stderr (nbgrader's
rule); the test also checks that it fails for the speed test's reason. a6 times its kernel on a
GPU only: its case is skipped without CUDA.

The honest side, the same notebooks with the model answer left alone, is
``test_grade_cells.py::test_grade_cells[<assignment>-solution]``, which runs every grade cell of
the solution (these speed cells included) in the same ``make test``: not run twice here, as each
speed cell takes a minute on a loaded 2-core machine. ``HONEST=1`` in the environment runs it here
too, before the caching answer, in the same kernel.
"""
from __future__ import annotations

import os

import nbformat
import pytest
import torch

from autograder.notebooks import read_source, solution_source
from tests.hostile import speed

_KERNELS: dict = {}


def _grade_id(cell) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def _is_grade_cell(cell) -> bool:
    return bool(cell.get("metadata", {}).get("nbgrader", {}).get("grade"))


def test_committed_speed_notebooks_match_their_recipes():
    for name, student in speed.STUDENTS:
        committed = nbformat.read(str(speed.path(name, student)), as_version=4)
        built = speed.build(name, student)
        assert [c.source for c in committed.cells] == [c.source for c in built.cells], (name, student)


def test_caching_answers_are_right_and_would_fool_a_same_inputs_check():
    """The caching a3 answer computes the right values (so only speed can catch it) and, timed on
    the same tensors every round as the old check did, looks far faster than dense attention."""
    import math  # noqa: F401 -- the answer cells use it
    import torch.nn.functional as F  # noqa: F401

    from attnkit import dense_attention
    from attnkit.kernel import linear
    from attnkit.measure import compare_speed

    name = "a3_low_rank_and_kernels"
    ns = {"torch": torch, "F": F, "math": math}
    exec(speed.caching_answer(name, "data_ptr"), ns)  # noqa: S102 -- our own recipe
    q, k, v = (torch.randn(1, 2, 1024, 32) for _ in range(3))
    torch.testing.assert_close(ns["linear_attention"](q, k, v), linear(q, k, v), atol=1e-4, rtol=1e-3)
    assert compare_speed(ns["linear_attention"], dense_attention, q, k, v, rounds=3, warmup=1).speedup > 5


@pytest.fixture(scope="module")
def kernels():
    yield _KERNELS
    for kernel in _KERNELS.values():
        kernel.stop()
    _KERNELS.clear()


def _last_error(kernel) -> str:
    """The exception the kernel raised last (``sys.last_value``), as text."""
    msg_id = kernel.kc.execute("import sys; print(repr(getattr(sys, 'last_value', None))[:300])")
    out = []
    while True:
        msg = kernel.kc.get_iopub_msg(timeout=60)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return "".join(out)


def _speed_cell(kernels, name: str, nb) -> tuple[bool, str]:
    """(passed, the error it raised) for the speed cell of ``nb``."""
    from test_grade_cells import _Kernel

    if name not in kernels:
        kernels[name] = _Kernel(str(solution_source(name).parent))
    kernel = kernels[name]
    target = speed.SPEED_CELLS[name][1]
    graded = {_grade_id(c): c.source for c in read_source(solution_source(name)).cells if _is_grade_cell(c)}
    assert not kernel.cell("get_ipython().run_line_magic('reset', '-f')"), "could not wipe the namespace"
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if _grade_id(cell) == target:
            failed = kernel.cell(graded[target])
            return not failed, _last_error(kernel) if failed else ""
        if not _is_grade_cell(cell):
            kernel.cell(cell.source)
    raise AssertionError(f"{name}: no grade cell {target}")


def _cases():
    for name, student in speed.STUDENTS:
        marks = [pytest.mark.slow, pytest.mark.xdist_group(name=f"hostile_speed_{name}")]
        if name == "a6_gpu_kernels":
            marks.append(pytest.mark.skipif(not torch.cuda.is_available(), reason="a6 times its kernel on a GPU only"))
        yield pytest.param(name, student, id=f"{name}-{student}", marks=marks)


@pytest.mark.parametrize("name, student", list(_cases()))
def test_caching_answer_loses_the_speed_cell(kernels, name, student):
    if os.environ.get("HONEST") == "1":
        passed, error = _speed_cell(kernels, name, speed.honest(name))
        assert passed, f"{name}: the honest answer fails the speed cell: {error}"
    passed, error = _speed_cell(kernels, name, speed.build(name, student))
    assert not passed, f"{name}: the caching answer ({student}) passes the speed cell"
    print(f"{name}, {student}: {error}")
    # Lost to the speed test itself (too slow on fresh inputs, or the work bound of a call made
    # among the timed ones), not to some unrelated error.
    assert "AssertionError" in error and any(why in error for why in speed.WHY[student]), error
