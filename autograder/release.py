"""Releasing an assignment: from the py:percent source to the student notebook.

``solutions/<a>/<a>.py`` (full solutions and hidden tests) is built into an nbgrader *source*
notebook in a throw-away course directory (``stage_course``), nbgrader's ``generate_assignment``
makes the student version, and that is cleaned (``clean_notebook``: no outputs, cell ids that
do not change between builds, no volatile metadata) and written to
``assignments/<a>/<a>.ipynb``. Releasing twice gives byte-identical files, and
``release_notebook(name)`` gives what ``release`` would write, for a staleness test.

``stage_course`` is also the first step of grading (``pipeline.grade``).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import nbformat

from .assignments import spec_for
from .cells import grade_id, is_grade, points
from .config import make_api, nbgrader_session, write_config
from .notebooks import ASSIGNMENTS, SourceError, read_source, solution_source, stable_ids
from .outcome import failure_reason

_VOLATILE_METADATA = ("lines_to_next_cell", "lines_to_end_of_cell_marker", "cell_marker",
                      "execution", "ExecuteTime", "collapsed", "scrolled")


class PipelineError(RuntimeError):
    """nbgrader refused a step that the whole run depends on (e.g. generate_assignment)."""


# ---------------------------------------------------------------- notebooks and staging

def clean_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Strip outputs, execution counts and volatile metadata; keep nbgrader's metadata."""
    nb.metadata = {k: nb.metadata[k] for k in ("kernelspec", "language_info") if k in nb.metadata}
    for cell in nb.cells:
        for key in _VOLATILE_METADATA:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return stable_ids(nb)


def grade_ids(nb: nbformat.NotebookNode) -> list[tuple[str, float]]:
    """(grade_id, points) of every grade cell, in notebook order."""
    return [(grade_id(c), points(c)) for c in nb.cells if is_grade(c)]


def stage_course(root: Path, assignment: str, source: Path, *, db_url: str,
                 timeout: int) -> nbformat.NotebookNode:
    """Write ``root/nbgrader_config.py`` and ``root/source/<a>/<a>.ipynb``; return the notebook.

    A source with nbgrader metadata off its cell headers is refused (``PipelineError``).
    """
    try:
        nb = clean_notebook(read_source(Path(source)))
    except SourceError as exc:
        raise PipelineError(str(exc)) from exc
    write_config(root, db_url=db_url, timeout=timeout,
                 pattern=spec_for(assignment).ignore_pattern())
    dest = root / "source" / assignment / f"{assignment}.ipynb"
    dest.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(dest))
    return nb


def generate_assignment(api, assignment: str) -> None:
    """nbgrader ``generate_assignment`` (creates or updates the gradebook entry), or raise."""
    result = api.generate_assignment(assignment, force=True, create=True)
    if not result["success"]:
        raise PipelineError(f"nbgrader generate_assignment failed for {assignment}: "
                            + failure_reason(result))


# ---------------------------------------------------------------- release

def release_notebook(name: str | None = None, *, source: Path | None = None) -> nbformat.NotebookNode:
    """The student version of an assignment, as ``attnkit release`` would write it."""
    source = Path(source) if source else solution_source(name)
    name = name or source.stem
    with tempfile.TemporaryDirectory(prefix="attnkit-release-") as tmp:
        root = Path(tmp) / "course"
        stage_course(root, name, source, db_url=f"sqlite:///{root / 'gradebook.db'}",
                     timeout=spec_for(name).timeout)
        with nbgrader_session(Path(tmp) / "release.log"):
            generate_assignment(make_api(root), name)
        nb = nbformat.read(str(root / "release" / name / f"{name}.ipynb"), as_version=4)
    return clean_notebook(nb)


def release(name: str, *, source: Path | None = None, dest_root: Path = ASSIGNMENTS) -> Path:
    """Write ``dest_root/<name>/<name>.ipynb`` (the committed student version)."""
    dest = Path(dest_root) / name / f"{name}.ipynb"
    dest.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(release_notebook(name, source=source), str(dest))
    return dest
