"""Every grade cell must pass on the solution, fail on the blank notebook, and fail on each
plausible wrong answer listed in ``solutions/<assignment>/wrong_answers.py``.

The notebooks run here with nbclient, exactly as nbgrader's autograde runs them (same kernel,
cells in order, errors allowed), with the hidden tests in place. A grade cell "fails" when it
raises or writes to stderr (nbgrader scores both as 0). ``test_autograder_e2e.py`` checks the
same through the real ``attnkit grade`` on the sample submissions.
"""
from __future__ import annotations

import copy

import pytest
from nbclient import NotebookClient
from nbgrader.preprocessors import ClearSolutions

from autograder.notebooks import assignment_names, read_source, solution_source
from autograder.samples import load_wrong_answers

pytestmark = pytest.mark.slow


def _grade_id(cell) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def _is_grade_cell(cell) -> bool:
    return bool(cell.get("metadata", {}).get("nbgrader", {}).get("grade"))


def _run(nb, name: str) -> dict[str, bool]:
    """Execute ``nb``; return {grade cell id: passed}."""
    client = NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(solution_source(name).parent)}})
    client.execute()
    results = {}
    for cell in nb.cells:
        if cell.cell_type == "code" and _is_grade_cell(cell):
            failed = any(o.get("output_type") == "error" or
                         (o.get("output_type") == "stream" and o.get("name") == "stderr")
                         for o in cell.outputs)
            results[_grade_id(cell)] = not failed
    return results


def _replace_cell(nb, grade_id: str, source: str):
    nb = copy.deepcopy(nb)
    cells = [c for c in nb.cells if _grade_id(c) == grade_id]
    assert len(cells) == 1, f"no single answer cell {grade_id!r}"
    cells[0].source = source.strip() + "\n"
    return nb


def _cases():
    for name in assignment_names():
        yield pytest.param(name, "solution", None, id=f"{name}-solution")
        yield pytest.param(name, "blank", None, id=f"{name}-blank")
        for i, wrong in enumerate(load_wrong_answers(name)):
            yield pytest.param(name, "wrong", wrong, id=f"{name}-wrong{i}-{wrong['cell']}")


@pytest.mark.parametrize("name, kind, wrong", list(_cases()))
def test_grade_cells(name, kind, wrong):
    source = read_source(solution_source(name))
    grade_ids = [_grade_id(c) for c in source.cells if _is_grade_cell(c)]
    assert grade_ids, f"{name} has no grade cells"
    if kind == "solution":
        results = _run(source, name)
        assert all(results.values()), f"the solution fails grade cells: {[g for g, ok in results.items() if not ok]}"
    elif kind == "blank":
        blank, _ = ClearSolutions().preprocess(copy.deepcopy(source), {})
        results = _run(blank, name)
        passed = [g for g, ok in results.items() if ok]
        assert not passed, f"the blank notebook passes grade cells {passed}"
    else:
        results = _run(_replace_cell(source, wrong["cell"], wrong["source"]), name)
        wrongly_passed = [g for g in wrong["fails"] if results[g]]
        assert not wrongly_passed, f"wrong answer ({wrong['why']}) passes {wrongly_passed}"


def test_every_answer_cell_has_a_wrong_answer():
    """Each solution cell is exercised by at least one plausible wrong answer."""
    for name in assignment_names():
        wrong_cells = {w["cell"] for w in load_wrong_answers(name)}
        source = read_source(solution_source(name))
        answers = {_grade_id(c) for c in source.cells
                   if c.get("metadata", {}).get("nbgrader", {}).get("solution") and c.cell_type == "code"}
        assert answers <= wrong_cells, f"{name}: no wrong answer for {sorted(answers - wrong_cells)}"
