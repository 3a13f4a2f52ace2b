"""Notebook cells as nbgrader sees them: its metadata, the predicates on it, a cell's shape.

nbgrader keeps what a cell is in ``cell.metadata.nbgrader``: ``grade`` (a test, worth
``points``), ``solution`` (the student answers here), ``locked`` (instructor code the student may
not change) and ``grade_id`` (its name in the gradebook). The predicates follow nbgrader's own
(``nbgrader.utils.is_grade``, ``is_solution``, ``is_locked``), but accept plain dicts as well as
``NotebookNode``s and never raise on metadata a student mangled: a missing or non-dict
``metadata`` or ``nbgrader`` reads as no nbgrader metadata.
"""
from __future__ import annotations

# The keys nbformat 4 allows on each type of cell.
CELL_KEYS = {"code": {"id", "cell_type", "metadata", "source", "outputs", "execution_count"},
             "markdown": {"id", "cell_type", "metadata", "source", "attachments"},
             "raw": {"id", "cell_type", "metadata", "source", "attachments"}}


def nbgrader_meta(cell) -> dict:
    """The cell's nbgrader metadata ({} when it has none, or none that is a dict)."""
    meta = cell.get("metadata")
    value = meta.get("nbgrader") if isinstance(meta, dict) else None
    return value if isinstance(value, dict) else {}


def grade_id(cell):
    """The cell's ``grade_id`` (None without one; not necessarily a string in a submission)."""
    return nbgrader_meta(cell).get("grade_id")


def points(cell) -> float:
    """What a grade cell is worth (0 for any other cell)."""
    return float(nbgrader_meta(cell).get("points", 0)) if is_grade(cell) else 0.0


def is_grade(cell) -> bool:
    """A cell nbgrader scores (an autograded test, or a manually graded answer)."""
    return bool(nbgrader_meta(cell).get("grade"))


def is_solution(cell) -> bool:
    """A cell the student writes in."""
    return bool(nbgrader_meta(cell).get("solution"))


def is_manual(cell) -> bool:
    """A manually graded answer (grade and solution both set: a person scores it, usually a
    written answer in a markdown cell)."""
    return is_grade(cell) and is_solution(cell)


def is_locked(cell) -> bool:
    """A cell the student may not change: a grade cell that is not also an answer, or one marked
    ``locked``."""
    if is_solution(cell):
        return False
    return is_grade(cell) or bool(nbgrader_meta(cell).get("locked"))


def is_instructor(cell) -> bool:
    """Instructor code that runs in the grading kernel: a locked code cell (tests, helpers)."""
    return cell.get("cell_type") == "code" and is_locked(cell)


def set_type(cell: dict, ctype: str) -> None:
    """Give ``cell`` type ``ctype`` and exactly the keys that type allows (no outputs)."""
    cell["cell_type"] = ctype
    for key in list(cell):
        if key not in CELL_KEYS[ctype]:
            del cell[key]
    if ctype == "code":
        cell["outputs"], cell["execution_count"] = [], None
    elif not isinstance(cell.get("attachments", {}), dict):
        del cell["attachments"]
