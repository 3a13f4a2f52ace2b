"""Reading and exporting grades from nbgrader's gradebook.

The gradebook (SQLite by default, any SQLAlchemy URL) is the single source of truth for
scores: the CSV files and the report are regenerated from it on every run, so a re-run can
never duplicate or lose a grade. nbgrader's own ``update_or_create`` calls keep one row per
(student, grade cell) however often a submission is autograded.

``grades.csv`` is what ``nbgrader export`` writes (its CSV plugin, filtered to this
assignment and these students) plus two columns: ``status`` (``graded`` or ``failed``) and
``notes`` (the one-line reason or what went wrong in the notebook). A failed submission has
no submission in the gradebook, so nbgrader's export gives it 0.
"""
from __future__ import annotations

import csv
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .config import COURSE_ID

EXPORT_COLUMNS = ["assignment", "duedate", "timestamp", "student_id", "last_name",
                  "first_name", "email", "raw_score", "late_submission_penalty", "score",
                  "max_score"]
GRADE_COLUMNS = EXPORT_COLUMNS + ["status", "notes"]
CELL_COLUMNS = ["student", "grade_id", "score", "max_score"]


@dataclass
class CellScore:
    """The score of one grade cell for one student (``score`` is None while it needs a human)."""

    student: str
    grade_id: str
    score: float | None
    max_score: float


def _gradebook(db_url: str):
    from nbgrader.api import Gradebook
    return Gradebook(db_url, COURSE_ID)


def discard_submission(db_url: str, assignment: str, student: str) -> None:
    """Make sure ``student`` exists and has no submission (so it exports as 0)."""
    from nbgrader.api import MissingEntry
    with _gradebook(db_url) as gb:
        gb.update_or_create_student(student)
        try:
            gb.remove_submission(assignment, student)
        except MissingEntry:
            pass


def has_assignment(db_url: str, assignment: str, student: str | None = None) -> bool:
    """Whether the gradebook knows ``assignment`` (and ``student``'s submission of it)."""
    from nbgrader.api import MissingEntry
    with _gradebook(db_url) as gb:
        try:
            if student is None:
                gb.find_assignment(assignment)
            else:
                gb.find_submission(assignment, student)
        except MissingEntry:
            return False
        return True


def cell_scores(db_url: str, assignment: str, students: list[str],
                order: list[str]) -> list[CellScore]:
    """Every grade of the given students' submissions, grade cells in notebook ``order``."""
    from nbgrader.api import MissingEntry
    rank = {gid: i for i, gid in enumerate(order)}
    rows: list[CellScore] = []
    with _gradebook(db_url) as gb:
        for student in sorted(students):
            try:
                submission = gb.find_submission(assignment, student)
            except MissingEntry:
                continue
            grades = [g for nb in submission.notebooks for g in nb.grades]
            grades.sort(key=lambda g: (rank.get(g.name, len(rank)), g.name))
            rows += [CellScore(student, g.name, g.score, float(g.max_score)) for g in grades]
    return rows


def export_rows(db_url: str, assignment: str, students: list[str]) -> list[dict]:
    """nbgrader's CSV export for this assignment and these students, as dicts by student."""
    from nbgrader.plugins.export import CsvExportPlugin
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp) / "grades.csv"
        plugin = CsvExportPlugin(to=str(dest), assignment=[assignment], student=list(students))
        with _gradebook(db_url) as gb:
            plugin.export(gb)
        rows = list(csv.DictReader(io.StringIO(dest.read_text())))
    return sorted(rows, key=lambda r: r["student_id"])


def write_csv(path: Path, columns: list[str], rows: list[dict]) -> Path:
    """Write ``rows`` (dicts) with a header, in a stable format (``\\n`` line ends)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))
