"""Reading and exporting grades from nbgrader's gradebook.

The gradebook (SQLite by default, any SQLAlchemy URL) is the single source of truth for
scores: the CSV files and the report are regenerated from it on every run, so a re-run can
never duplicate or lose a grade. nbgrader's own ``update_or_create`` calls keep one row per
(student, grade cell) however often a submission is autograded.

``grades.csv`` is what ``nbgrader export`` writes (its CSV plugin, filtered to this
assignment and these students) plus four columns: ``status`` (``graded`` or ``failed``, with
``+flagged`` when the submission needs a person's look, as in the printed table), ``notes`` (the
one-line reason or what went wrong in the notebook), ``flags`` (why it is flagged: tampering the
guard saw, tests the student edited, ...; ``; ``-separated) and ``needs_manual_grade`` (how many
of the student's written answers still wait for a person). A failed submission has no
submission in the gradebook, so nbgrader's export gives it 0. ``cell_scores.csv`` has a
``flags`` column too: the flags that name that grade cell.

Flags also go into the gradebook: nbgrader's ``flagged`` mark of the submitted notebook, which
formgrader shows and lets a person clear or set. Each autograde sets it anew from what the
grader found (:func:`store`); a notebook flagged by a person and not by the grader is exported
with the flag ``flagged in the gradebook`` (:func:`flagged`).

Parallel and distributed grading (``dispatch.py``) autograde each submission against a scratch
gradebook of its own; :func:`read_submission` packs what autograde wrote there into a dict and
:func:`store` writes that into the real gradebook in a single transaction (all of a student's
rows or none). That is all ``nbgrader export``, formgrader and the feedback read: the
submission's timestamp, per notebook the late penalty, per grade cell ``auto_score`` and
``needs_manual_grade``, per solution/task cell ``auto_comment``. Manual scores, extra credit,
manual comments, flags and extensions already in the real gradebook are kept, as nbgrader's
own autograde keeps them (a cell that already has a manual score is marked for review, as
nbgrader marks it). Works on any SQLAlchemy URL nbgrader supports (SQLite, PostgreSQL).

Written answers (nbgrader's "manually graded answer" cells: grade and solution both set) have
no automatic score: autograde leaves them ``needs_manual_grade`` until a person scores them in
formgrader or with ``attnkit manual`` (``manual.py``), except an answer left as released, which
nbgrader scores 0 at once. :class:`CellScore` says which kind each score is (``grading``:
``auto``, ``manual``, ``pending``, ``review``); a pending cell has no score (blank in
``cell_scores.csv``, not 0), and ``grades.csv`` counts each student's pending answers.
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
GRADE_COLUMNS = EXPORT_COLUMNS + ["status", "notes", "flags", "needs_manual_grade"]
CELL_COLUMNS = ["student", "grade_id", "score", "max_score", "auto_score", "manual_score",
                "grading", "flags"]


@dataclass
class CellScore:
    """The score of one grade cell for one student (``score`` is None while it needs a human).

    ``grading``: ``auto`` (autograded, or a written answer left blank: 0), ``manual`` (scored by
    a person), ``pending`` (a written answer nobody has scored yet: ``score`` None) or
    ``review`` (scored by a person, then the submission was autograded again: nbgrader keeps
    the manual score and asks for another look).
    """

    student: str
    grade_id: str
    score: float | None
    max_score: float
    auto_score: float | None = None
    manual_score: float | None = None
    grading: str = "auto"
    flags: str = ""  # the student's flags that name this grade cell ("; "-separated)

    @property
    def pending(self) -> bool:
        return self.grading == "pending"


def _cell_score(student: str, g) -> CellScore:
    """A ``CellScore`` from an nbgrader ``Grade`` row."""
    if g.auto_score is None and g.manual_score is None:
        how = "pending"
    elif g.needs_manual_grade:
        how = "review"
    else:
        how = "manual" if g.manual_score is not None else "auto"
    score = None if how == "pending" else float(g.score)
    return CellScore(student, g.name, score, float(g.max_score), g.auto_score, g.manual_score, how)


def _gradebook(db_url: str):
    from nbgrader.api import Gradebook
    return Gradebook(db_url, COURSE_ID)


def read_submission(db_url: str, assignment: str, student: str) -> dict:
    """What autograde wrote for ``student``'s submission, as plain data for :func:`store`.

    ``{"timestamp": ISO text or None, "notebooks": {name: {"late_submission_penalty": float
    or None, "grades": {cell: {"auto_score", "needs_manual_grade"}}, "comments": {cell:
    {"auto_comment"}}}}}``
    """
    with _gradebook(db_url) as gb:
        sub = gb.find_submission(assignment, student)
        notebooks = {}
        for nb in sub.notebooks:
            notebooks[nb.name] = {
                "late_submission_penalty": nb.late_submission_penalty,
                "grades": {g.name: {"auto_score": g.auto_score,
                                    "needs_manual_grade": bool(g.needs_manual_grade)}
                           for g in nb.grades},
                "comments": {c.name: {"auto_comment": c.auto_comment} for c in nb.comments},
            }
        stamp = sub.timestamp.isoformat() if sub.timestamp is not None else None
        return {"timestamp": stamp, "notebooks": notebooks}


def store(db_url: str, assignment: str, student: str, record: dict | None, *,
          flagged: bool = False) -> None:
    """Write ``record`` (from :func:`read_submission`) as ``student``'s submission, atomically.

    ``flagged``: the grader flagged the submission for review; it sets nbgrader's ``flagged``
    mark of every notebook of the submission (cleared when False: each autograde decides anew).
    ``record`` None: the student exists and has no submission (it exports as 0). Everything
    happens in one session and one commit; any error rolls all of it back. An existing
    submission is updated in place (one row per student and grade cell, however often).
    """
    from nbgrader import utils
    from nbgrader.api import (Assignment, Comment, Grade, Student, SubmittedAssignment,
                              SubmittedNotebook)
    with _gradebook(db_url) as gb:
        db = gb.db
        try:
            person = db.get(Student, student)
            if person is None:
                person = Student(id=student)
                db.add(person)
            sub = (db.query(SubmittedAssignment).join(Assignment)
                   .filter(Assignment.name == assignment,
                           SubmittedAssignment.student_id == student).one_or_none())
            if record is None:
                if sub is not None:
                    for nb in list(sub.notebooks):
                        for row in list(nb.grades) + list(nb.comments):
                            db.delete(row)
                        db.delete(nb)
                    db.delete(sub)
                db.commit()
                return
            if sub is None:  # mirror the assignment's structure, as Gradebook.add_submission does
                with db.no_autoflush:
                    sub = SubmittedAssignment(assignment=gb.find_assignment(assignment),
                                              student=person)
                    db.add(sub)
                    for notebook in sub.assignment.notebooks:
                        nb = SubmittedNotebook(notebook=notebook, assignment=sub)
                        db.add(nb)  # (SQLAlchemy 2 does not cascade along backrefs)
                        cells = list(notebook.grade_cells) + list(notebook.task_cells)
                        db.add_all(Grade(cell_id=cell.id, notebook=nb) for cell in cells)
                        cells = list(notebook.solution_cells) + list(notebook.task_cells)
                        db.add_all(Comment(cell_id=cell.id, notebook=nb) for cell in cells)
                db.flush()
            stamp = record.get("timestamp")
            sub.timestamp = utils.parse_utc(stamp) if stamp else None
            for nb in sub.notebooks:
                data = record["notebooks"].get(nb.name)
                if data is None:  # autograde's rule for a notebook that was not submitted
                    data = {"late_submission_penalty": None, "comments": {},
                            "grades": {g.name: {"auto_score": 0, "needs_manual_grade": False}
                                       for g in nb.grades}}
                nb.late_submission_penalty = data["late_submission_penalty"]
                nb.flagged = bool(flagged)
                for grade in nb.grades:
                    auto = data["grades"].get(grade.name, {}).get("auto_score")
                    grade.auto_score = auto
                    grade.needs_manual_grade = grade.manual_score is not None or auto is None
                for comment in nb.comments:
                    auto = data["comments"].get(comment.name, {}).get("auto_comment")
                    comment.auto_comment = auto
            db.commit()
        except BaseException:
            db.rollback()
            raise


def set_duedate(db_url: str, assignment: str, due: str | None) -> None:
    """Set (or with None, clear) the due date of ``assignment`` (ISO text in UTC, as nbgrader
    stores it)."""
    from nbgrader import utils
    with _gradebook(db_url) as gb:
        gb.find_assignment(assignment).duedate = utils.parse_utc(due) if due else None
        gb.db.commit()


def duedate(db_url: str, assignment: str) -> str | None:
    """The due date of ``assignment`` in the gradebook (ISO text in UTC), or None."""
    with _gradebook(db_url) as gb:
        due = gb.find_assignment(assignment).duedate
    return due.isoformat() if due is not None else None


def extensions(db_url: str, assignment: str) -> dict[str, float]:
    """Seconds of extension granted to each student of ``assignment`` (nbgrader's ``extension``,
    set with formgrader or ``Gradebook.grant_extension``); students without one are left out."""
    from nbgrader.api import Assignment, SubmittedAssignment
    with _gradebook(db_url) as gb:
        rows = (gb.db.query(SubmittedAssignment).join(Assignment)
                .filter(Assignment.name == assignment, SubmittedAssignment.extension.isnot(None)))
        return {s.student_id: s.extension.total_seconds() for s in rows
                if s.extension.total_seconds() > 0}


def grant_extension(db_url: str, assignment: str, student: str, seconds: float) -> None:
    """Give ``student`` an extension of ``seconds`` on ``assignment``, creating the student and an
    empty submission if needed (so it holds before autograde stamps the submission)."""
    from nbgrader.api import MissingEntry
    with _gradebook(db_url) as gb:
        gb.update_or_create_student(student)
        try:
            gb.find_submission(assignment, student)
        except MissingEntry:
            gb.add_submission(assignment, student)
        gb.grant_extension(assignment, student, minutes=seconds / 60)


def late_penalty(db_url: str, assignment: str, student: str) -> tuple[float, float]:
    """(points taken off for lateness, seconds late) of ``student``'s submission: nbgrader's
    ``late_submission_penalty`` summed over its notebooks and ``total_seconds_late`` (which
    counts an extension); (0, 0) without a submission."""
    from nbgrader.api import MissingEntry
    with _gradebook(db_url) as gb:
        try:
            sub = gb.find_submission(assignment, student)
        except MissingEntry:
            return 0.0, 0.0
        return (sum(nb.late_submission_penalty or 0.0 for nb in sub.notebooks),
                float(sub.total_seconds_late))


def set_students(db_url: str, people: dict[str, tuple[str, str]]) -> None:
    """Create or update each student (kit id -> (full name, email)) in one transaction; the
    name is split at its last space into nbgrader's first and last name."""
    from nbgrader.api import Student
    with _gradebook(db_url) as gb:
        for sid, (name, email) in people.items():
            first, _, last = (name or "").strip().rpartition(" ")
            person = gb.db.get(Student, sid) or Student(id=sid)
            if name:  # an empty name or email does not erase one set in formgrader
                person.first_name, person.last_name = (first, last) if first else (last, "")
            if email:
                person.email = email
            gb.db.add(person)
        gb.db.commit()


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


def flagged(db_url: str, assignment: str, students: list[str]) -> set[str]:
    """The students whose submission of ``assignment`` has a notebook flagged in the gradebook
    (by the grader, or by a person in formgrader)."""
    from nbgrader.api import MissingEntry
    marked = set()
    with _gradebook(db_url) as gb:
        for student in students:
            try:
                submission = gb.find_submission(assignment, student)
            except MissingEntry:
                continue
            if any(nb.flagged for nb in submission.notebooks):
                marked.add(student)
    return marked


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
            rows += [_cell_score(student, g) for g in grades]
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
