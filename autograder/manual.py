"""Grading written answers by hand, after autograding, in nbgrader's gradebook.

A *written answer* is nbgrader's "manually graded answer": a cell with ``grade`` and ``solution``
both set (here a markdown cell, released as ``YOUR ANSWER HERE``). Autograde leaves its
``Grade`` row ``needs_manual_grade`` with no score (an answer left as released scores 0 at once,
nbgrader's rule). A person then scores it, either

- in nbgrader's **formgrader**, opened on the run's course folder (``DIR/course``: its
  ``nbgrader_config.py`` names the gradebook), then ``attnkit manual --run DIR export``; or
- with a CSV: ``attnkit manual --run DIR export-template`` writes every answer still waiting for a
  person (student, assignment, notebook, grade_id, points, the student's answer text, empty
  ``score`` and ``comment``), a TA fills in ``score`` (and ``comment``), and
  ``attnkit manual --run DIR import FILE`` enters them and re-exports.

``enter_scores`` is what both the command and the demo (``autograder/samples/<a>/
manual_grades.csv``) use. It writes nbgrader's own fields, as formgrader does:
``Grade.manual_score`` (and ``needs_manual_grade = False``) and ``Comment.manual_comment``, in one
transaction: every row is checked first (known student with a graded submission, known grade
cell, score a number in ``[0, points]``, no row twice, a comment only on an answer cell), and any
error writes nothing. A row with an empty ``score`` sets only its comment (or is skipped), so a
half-filled template can be imported as it is.

Re-grading keeps the manual scores: a submission that is unchanged is not graded again, and one
that is graded again (changed notebook, ``--force``) keeps its manual score, marked for review
as nbgrader's autograde marks it (``gradebook.store``).

    from autograder import manual
    manual.write_template("build/grade/a1", "todo.csv")        # -> rows still to grade
    manual.import_scores("build/grade/a1", "todo.csv")          # -> GradeRun (re-exported)
"""
from __future__ import annotations

import csv
import fcntl
import math
from dataclasses import dataclass
from pathlib import Path

import nbformat

from .cells import grade_id
from .gradebook import _gradebook, write_csv

TEMPLATE_COLUMNS = ["student", "assignment", "notebook", "grade_id", "points", "score", "comment",
                    "status", "answer"]
REQUIRED = ("student", "grade_id", "score")


class ManualGradeError(ValueError):
    """Manual scores that cannot be entered (nothing was written)."""


@dataclass(frozen=True)
class Entry:
    """One manual score (or comment) to enter; ``line`` is its line in the CSV (for errors)."""

    student: str
    grade_id: str
    score: float | None
    comment: str = ""
    notebook: str = ""
    assignment: str = ""
    line: int = 0


def read_scores(path: Path) -> list[Entry]:
    """The rows of a manual-grades CSV (``student``, ``grade_id``, ``score`` required; optional
    ``assignment``, ``notebook``, ``comment``; other columns such as ``answer`` are ignored)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no manual grades at {path}")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise ManualGradeError(f"{path}: missing column(s) {', '.join(missing)} (the header "
                                   f"must name student, grade_id, score; found {header})")
        entries, errors = [], []
        for line, raw in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
            if not any(row.values()):
                continue
            text = row.get("score", "")
            score = None
            if text:
                try:
                    score = float(text)
                except ValueError:
                    errors.append(f"{path}:{line}: score {text!r} is not a number")
                    continue
                if not math.isfinite(score):
                    errors.append(f"{path}:{line}: score {text!r} is not a finite number")
                    continue
            entries.append(Entry(row["student"], row["grade_id"], score, row.get("comment", ""),
                                 row.get("notebook", ""), row.get("assignment", ""), line))
    if errors:
        raise ManualGradeError("nothing was entered:\n  " + "\n  ".join(errors))
    return entries


def enter_scores(db_url: str, assignment: str, entries: list[Entry], *,
                 source: str = "manual grades") -> int:
    """Enter ``entries`` into the gradebook in one transaction; return how many scores were set.

    Every entry is checked before anything is written; any problem raises ``ManualGradeError``
    naming each bad line (``source:line``), and the gradebook is left as it was.
    """
    from nbgrader.api import Assignment, SubmittedAssignment

    errors, done = [], {}
    with _gradebook(db_url) as gb:
        db = gb.db
        try:
            subs = {s.student_id: s for s in db.query(SubmittedAssignment).join(Assignment)
                    .filter(Assignment.name == assignment)}
            scored = 0
            for e in entries:
                where = f"{source}:{e.line}" if e.line else source
                if e.assignment and e.assignment != assignment:
                    errors.append(f"{where}: assignment {e.assignment!r}, but this run grades "
                                  f"{assignment!r}")
                    continue
                sub = subs.get(e.student)
                if sub is None:
                    known = ", ".join(sorted(subs)) or "none"
                    errors.append(f"{where}: unknown student {e.student!r} (no graded submission "
                                  f"of {assignment} in this gradebook; students: {known})")
                    continue
                notebooks = [nb for nb in sub.notebooks if not e.notebook or nb.name == e.notebook]
                grades = [(nb, g) for nb in notebooks for g in nb.grades if g.name == e.grade_id]
                if len(grades) != 1:
                    cells = sorted({g.name for nb in sub.notebooks for g in nb.grades})
                    what = "unknown grade cell" if not grades else "ambiguous grade cell (name the notebook)"
                    errors.append(f"{where}: {what} {e.grade_id!r}"
                                  + (f" in notebook {e.notebook!r}" if e.notebook else "")
                                  + f" (grade cells of {assignment}: {', '.join(cells)})")
                    continue
                nb, grade = grades[0]
                key = (e.student, nb.name, e.grade_id)
                if key in done:
                    errors.append(f"{where}: {e.student}/{e.grade_id} already given on line {done[key]}")
                    continue
                done[key] = e.line
                top = float(grade.max_score)
                if e.score is not None and not 0 <= e.score <= top:
                    errors.append(f"{where}: score {e.score:g} for {e.student}/{e.grade_id} is "
                                  f"outside [0, {top:g}]")
                    continue
                comment = next((c for c in nb.comments if c.name == e.grade_id), None)
                if e.comment and comment is None:
                    errors.append(f"{where}: {e.grade_id!r} is not an answer cell, so it takes no "
                                  "comment")
                    continue
                if e.score is not None:
                    grade.manual_score = e.score
                    grade.needs_manual_grade = False  # as formgrader does once a score is given
                    scored += 1
                if e.comment:
                    comment.manual_comment = e.comment
            if errors:
                raise ManualGradeError(f"nothing was entered ({len(errors)} problem"
                                       f"{'s' if len(errors) != 1 else ''}):\n  " + "\n  ".join(errors))
            db.commit()
            return scored
        except BaseException:
            db.rollback()
            raise


def template_rows(out: Path, *, everything: bool = False) -> list[dict]:
    """One row per written answer still waiting for a person in the run at ``out`` (with
    ``everything``: every written answer, with its current score and comment), with the
    student's answer text from the autograded notebook."""
    from .pipeline import open_run

    out = Path(out).resolve()
    assignment, db_url = open_run(out)
    rows = []
    with _gradebook(db_url) as gb:
        for sub in sorted(gb.assignment_submissions(assignment), key=lambda s: s.student_id):
            for nb in sub.notebooks:
                answers = {c.name for c in nb.notebook.solution_cells}
                comments = {c.name: c for c in nb.comments}
                texts = None
                for g in nb.grades:
                    waiting = g.auto_score is None and g.manual_score is None or g.needs_manual_grade
                    if g.name not in answers or not (waiting or everything):
                        continue
                    if texts is None:
                        texts = _answers(out / "course", sub.student_id, assignment, nb.name)
                    comment = comments.get(g.name)
                    status = ("pending" if g.auto_score is None and g.manual_score is None
                              else "review" if g.needs_manual_grade else
                              "manual" if g.manual_score is not None else "auto")
                    rows.append({"student": sub.student_id, "assignment": assignment,
                                 "notebook": nb.name, "grade_id": g.name,
                                 "points": f"{float(g.max_score):g}",
                                 "score": "" if status == "pending" else f"{float(g.score):g}",
                                 "comment": (comment.manual_comment or "") if comment else "",
                                 "status": status, "answer": texts.get(g.name, "")})
    return rows


def _answers(course: Path, student: str, assignment: str, notebook: str) -> dict[str, str]:
    """grade_id -> source of each cell of the student's autograded (else submitted) notebook."""
    for folder in ("autograded", "submitted"):
        path = course / folder / student / assignment / f"{notebook}.ipynb"
        if path.exists():
            nb = nbformat.read(str(path), as_version=4)
            return {grade_id(c): c.source for c in nb.cells if grade_id(c)}
    return {}


def write_template(out: Path, dest: Path | None = None, *, everything: bool = False) -> tuple[Path, int]:
    """Write the CSV of answers to grade by hand (default ``out/manual_grades_todo.csv``);
    return its path and number of rows."""
    rows = template_rows(out, everything=everything)
    dest = Path(dest) if dest else Path(out) / "manual_grades_todo.csv"
    return write_csv(dest, TEMPLATE_COLUMNS, rows), len(rows)


def import_scores(out: Path, path: Path, *, echo=None, run=None):
    """Enter the manual grades in the CSV at ``path`` into the run at ``out`` (one transaction),
    then rebuild its ``grades.csv``, ``cell_scores.csv`` and report; return the ``GradeRun``
    (``run``: the one ``pipeline.grade`` just returned for ``out``, see ``pipeline.export``)."""
    from .pipeline import export, open_run

    out = Path(out).resolve()
    assignment, db_url = open_run(out)
    entries = read_scores(path)
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # not while a grading run writes this gradebook
        n = enter_scores(db_url, assignment, entries, source=str(path))
    if echo:
        echo(f"entered {n} manual score{'s' if n != 1 else ''} from {path} into {assignment}")
    return export(out, run)
