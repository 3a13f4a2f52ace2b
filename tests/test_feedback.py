"""Feedback redaction: hidden tests and their traceback frames never reach the student."""
from __future__ import annotations

import nbformat
from nbformat.v4 import new_code_cell, new_notebook, new_output

from autograder.feedback import hidden_tests_redacted, redact

GRADE = {"nbgrader": {"grade": True, "grade_id": "test_x", "points": 1, "locked": True,
                      "solution": False, "schema_version": 3}}
SOURCE = ('"""visible docstring"""\ncheck(f(1))\n### BEGIN HIDDEN TESTS\n'
          'check(f(12345))\ncheck(f(-7))\n### END HIDDEN TESTS\n')


def _notebook():
    error = new_output("error", ename="AssertionError", evalue="f(12345) should be 3",
                       traceback=["Traceback ...", "----> 4 check(f(12345))", "AssertionError: f(12345) should be 3"])
    graded = new_code_cell(SOURCE, metadata=GRADE, outputs=[error])
    plain = new_code_cell("### BEGIN HIDDEN TESTS\nx = 1\n### END HIDDEN TESTS\n")  # not a grade cell
    return new_notebook(cells=[graded, plain])


def test_redact_removes_hidden_source_and_traceback_frames():
    nb = redact(_notebook())
    cell = nb.cells[0]
    assert "12345" not in cell.source and "-7" not in cell.source
    assert "check(f(1))" in cell.source and "# (2 lines of hidden tests)" in cell.source
    error = cell.outputs[0]
    assert error["traceback"] == ["AssertionError: f(12345) should be 3"]  # the message stays
    assert "x = 1" in nb.cells[1].source  # only grade cells are touched


def test_context_manager_restores_the_instructors_copy(tmp_path):
    path = tmp_path / "a.ipynb"
    nbformat.write(_notebook(), str(path))
    before = path.read_bytes()
    with hidden_tests_redacted(path):
        assert "12345" not in nbformat.read(str(path), as_version=4).cells[0].source
    assert path.read_bytes() == before
    with hidden_tests_redacted(path, show_hidden=True):
        assert path.read_bytes() == before
