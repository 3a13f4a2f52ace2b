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
from jupytext.cell_metadata import text_to_metadata

from .cells import grade_id, nbgrader_meta

ROOT = Path(__file__).resolve().parent.parent
COURSE = ROOT / "course"
SOLUTIONS = ROOT / "solutions"
ASSIGNMENTS = ROOT / "assignments"

KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


class SourceError(ValueError):
    """A ``py:percent`` source that would not build the notebook its author wrote."""


# jupytext's py:percent cell header (its own pattern): ``# %%`` (also ``#%%``, indented), then
# options and metadata.
_CELL_HEADER = re.compile(r"^\s*#\s*%%%*(\s.*)$")
_NBGRADER_KEY = re.compile(r"\bnbgrader\s*=")


def check_cell_headers(text: str, path: str | Path = "<source>") -> None:
    """Refuse ``nbgrader=`` metadata anywhere but on a well-formed ``# %%`` cell header.

    jupytext reads ``# % nbgrader={...}`` (one percent sign) or ``# nbgrader={...}`` as a plain
    comment inside the cell above: the lock it was meant to set silently disappears, and the code
    below it joins that cell (in a student notebook, the answer cell). Metadata on a real header
    that is not valid JSON would be dropped the same way. Raises ``SourceError`` naming every
    offending ``path:line``.
    """
    problems = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.lstrip().startswith("#") or not _NBGRADER_KEY.search(line):
            continue
        header = _CELL_HEADER.match(line)
        if header is None:
            problems.append(f"{path}:{lineno}: nbgrader metadata outside a `# %%` cell header "
                            f"({line.strip()[:48]!r}...): jupytext reads it as a comment, so the code "
                            "below it joins the cell above instead of becoming a cell with this "
                            "metadata. Start the line with `# %% nbgrader=`.")
        elif "nbgrader" not in text_to_metadata(header.group(1), allow_title=True)[1]:
            problems.append(f"{path}:{lineno}: the nbgrader metadata on this cell header is not "
                            "valid JSON (jupytext would drop it).")
    if problems:
        raise SourceError("refusing a notebook source with misplaced nbgrader metadata:\n  "
                          + "\n  ".join(problems))


def read_source(path: Path) -> nbformat.NotebookNode:
    """Read a ``py:percent`` source as an nbformat v4 notebook with no outputs.

    Raises ``SourceError`` when nbgrader metadata is not on a ``# %%`` header (``check_cell_headers``).
    """
    text = Path(path).read_text(encoding="utf-8")
    check_cell_headers(text, path)
    nb = jupytext.reads(text, fmt="py:percent")
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
        gid = grade_id(cell)
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
    return [(c.cell_type, c.source, dict(nbgrader_meta(c))) for c in nb.cells]
