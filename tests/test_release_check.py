"""nbgrader metadata must sit on a ``# %%`` cell header, or the release refuses the source.

jupytext reads ``# % nbgrader={...}`` (one percent sign) as a comment: the code below it joins
the cell above, so a locked cell ends up inside a student's answer cell and its lock is just
text. ``check_cell_headers`` (run by ``read_source``) refuses that, naming the file and line.
"""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from autograder.notebooks import (ASSIGNMENTS, SourceError, assignment_names, check_cell_headers,
                                  course_sources, read_source, solution_source)
from autograder.release import PipelineError, release_notebook

LOCKED = '{"grade": false, "grade_id": "plot", "locked": true, "schema_version": 3, "solution": false, "task": false}'
ANSWER = '{"grade": false, "grade_id": "answer", "locked": false, "schema_version": 3, "solution": true, "task": false}'


def _source(plot_header: str) -> str:
    return (f"# %% [markdown]\n# A toy assignment.\n\n"
            f"# %% nbgrader={ANSWER}\ndef f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\n\n\n"
            f"{plot_header}\nprint(f(1))\n")


@pytest.mark.parametrize("header", [f"# % nbgrader={LOCKED}", f"# nbgrader={LOCKED}",
                                    f"#  nbgrader = {LOCKED}", f"# %%nbgrader={LOCKED}"])
def test_misplaced_metadata_is_refused_with_file_and_line(header, tmp_path):
    path = tmp_path / "toy.py"
    path.write_text(_source(header))
    with pytest.raises(SourceError, match=r"toy\.py:11: nbgrader metadata outside a `# %%` cell header"):
        read_source(path)


def test_every_misplaced_line_is_named():
    text = _source(f"# % nbgrader={LOCKED}") + f"\n# % nbgrader={LOCKED}\nprint(2)\n"
    with pytest.raises(SourceError) as err:
        check_cell_headers(text, "x.py")
    assert "x.py:11:" in str(err.value) and "x.py:14:" in str(err.value)


def test_metadata_that_is_not_json_is_refused():
    with pytest.raises(SourceError, match=r"x\.py:11: .*not valid JSON"):
        check_cell_headers(_source('# %% nbgrader={"grade": false, "locked": true,}'), "x.py")


@pytest.mark.parametrize("header", [f"# %% nbgrader={LOCKED}", f"#%% nbgrader={LOCKED}",
                                    f'# %% tags=["plot"] nbgrader={LOCKED}'])
def test_cell_headers_are_accepted(header, tmp_path):
    path = tmp_path / "toy.py"
    path.write_text(_source(header))
    cells = read_source(path).cells
    assert cells[-1].metadata["nbgrader"]["locked"] is True
    assert cells[-1].source == "print(f(1))"


def test_prose_that_mentions_nbgrader_is_not_metadata():
    check_cell_headers("# %% [markdown]\n# nbgrader reads metadata from cell headers.\nx = dict(nbgrader=1)\n")


def test_release_refuses_misplaced_metadata(tmp_path):
    path = tmp_path / "toy_assignment.py"
    path.write_text(_source(f"# % nbgrader={LOCKED}"))
    with pytest.raises(PipelineError, match=r"toy_assignment\.py:11: nbgrader metadata outside"):
        release_notebook(source=path)


def test_every_source_in_the_repository_passes():
    for path in [solution_source(name) for name in assignment_names()] + course_sources():
        check_cell_headers(Path(path).read_text(encoding="utf-8"), path)


@pytest.mark.parametrize("name", assignment_names())
def test_no_metadata_leaks_into_released_cells(name):
    """A released cell whose text carries ``nbgrader=`` is a header that jupytext did not see."""
    nb = nbformat.read(str(ASSIGNMENTS / name / f"{name}.ipynb"), as_version=4)
    leaked = [c.metadata.get("nbgrader", {}).get("grade_id") for c in nb.cells if "nbgrader=" in c.source]
    assert not leaked, f"{name}: cells {leaked} contain nbgrader metadata as text"


def test_a2_plot_cells_are_locked_cells_of_their_own():
    name = "a2_sparse_patterns"
    nb = nbformat.read(str(ASSIGNMENTS / name / f"{name}.ipynb"), as_version=4)
    by_id = {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in nb.cells}
    for plot, answer in (("plot_window_masks", "window_masks"),
                         ("plot_strided_global_masks", "strided_global_masks")):
        meta = by_id[plot].metadata["nbgrader"]
        assert meta["locked"] and not meta["solution"] and not meta["grade"], f"{plot}: {meta}"
        assert by_id[plot].source.startswith("plot_masks("), by_id[plot].source
        assert by_id[answer].metadata["nbgrader"]["solution"]
        assert "plot_masks" not in by_id[answer].source, f"the plot code is inside answer cell {answer}"
