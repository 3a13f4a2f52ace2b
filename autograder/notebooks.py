"""Notebook sources and builds.

Course chapters and nbgrader source notebooks are kept as jupytext ``py:percent`` files
(``course/NN_*.py``, ``solutions/<assignment>/<assignment>.py``): they diff and review like code,
and nbgrader's cell metadata lives in the ``# %% nbgrader={...}`` headers. The ``.ipynb`` files
readers and students open are built from them, without outputs.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parent.parent
COURSE = ROOT / "course"
SOLUTIONS = ROOT / "solutions"
ASSIGNMENTS = ROOT / "assignments"

KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


def read_source(path: Path) -> nbformat.NotebookNode:
    """Read a ``py:percent`` source as an nbformat v4 notebook with no outputs."""
    nb = jupytext.read(path, fmt="py:percent")
    nb.metadata.pop("jupytext", None)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.validator.normalize(nb)
    return stable_ids(nb)


def stable_ids(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Give cells ids that do not change between builds: the grade id, else a content hash."""
    used: set[str] = set()
    for cell in nb.cells:
        gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        base = re.sub(r"[^A-Za-z0-9_-]", "-", gid)[:56] if gid else \
            hashlib.sha1(f"{cell.cell_type}\0{cell.source}".encode()).hexdigest()[:10]
        cid, n = base, 1
        while cid in used:
            cid, n = f"{base}-{n}", n + 1
        used.add(cid)
        cell.id = cid
    return nb


def write_notebook(nb: nbformat.NotebookNode, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


def course_sources() -> list[Path]:
    return sorted(COURSE.glob("[0-9][0-9]_*.py"))


def assignment_names() -> list[str]:
    """Assignments that have a source notebook ``solutions/<name>/<name>.py``."""
    return sorted(p.parent.name for p in SOLUTIONS.glob("*/*.py") if p.stem == p.parent.name)


def solution_source(name: str) -> Path:
    path = SOLUTIONS / name / f"{name}.py"
    if not path.exists():
        known = ", ".join(assignment_names()) or "none"
        raise FileNotFoundError(f"no assignment {name!r} (looked for {path}; known: {known})")
    return path


def build_course() -> list[Path]:
    """Write ``course/NN_*.ipynb`` next to each ``course/NN_*.py`` source."""
    return [write_notebook(read_source(src), src.with_suffix(".ipynb")) for src in course_sources()]


def comparable(nb: nbformat.NotebookNode) -> list[tuple]:
    """What must match between a built notebook and a committed one: cell types, sources, metadata."""
    return [(c.cell_type, c.source, dict(c.get("metadata", {}).get("nbgrader", {})))
            for c in nb.cells]
