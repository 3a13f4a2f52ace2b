"""Notebooks: every course chapter executes (nbval, lax mode: no committed outputs to compare),
the committed .ipynb files match their py:percent sources, and none carries outputs.
The solution notebooks are executed by test_grade_cells.py."""
from __future__ import annotations

import json
import subprocess
import sys

import nbformat
import pytest

from autograder.notebooks import ROOT, comparable, course_sources, read_source

COURSE = [pytest.param(p, id=p.stem) for p in course_sources()]


def test_there_is_a_course():
    assert COURSE, "no course/NN_*.py chapters found"


@pytest.mark.slow
@pytest.mark.parametrize("source", COURSE)
def test_course_notebook_executes(source, tmp_path):
    nb_path = tmp_path / f"{source.stem}.ipynb"
    nbformat.write(read_source(source), str(nb_path))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "-q", "-p", "no:cacheprovider",
         "--nbval-current-env", "--nbval-cell-timeout=600", str(nb_path)],
        cwd=source.parent, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"{source.name} failed to execute:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"


@pytest.mark.parametrize("source", COURSE)
def test_course_ipynb_matches_source(source):
    built = source.with_suffix(".ipynb")
    assert built.exists(), f"{built.name} is missing: run `attnkit build`"
    committed = nbformat.read(str(built), as_version=4)
    assert comparable(committed) == comparable(read_source(source)), (
        f"{built.name} is out of date with {source.name}: run `attnkit build`")


def test_committed_notebooks_have_no_outputs():
    files = subprocess.run(["git", "ls-files", "*.ipynb"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    with_outputs = []
    for f in files:
        nb = json.loads((ROOT / f).read_text(encoding="utf-8"))
        if any(c.get("outputs") or c.get("execution_count") for c in nb["cells"] if c["cell_type"] == "code"):
            with_outputs.append(f)
    assert not with_outputs, f"notebooks committed with outputs: {with_outputs}"
