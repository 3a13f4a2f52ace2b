"""The LMS round trip around a grading run: who is in the class, and what goes back to the LMS.

``lms.py`` knows the formats; this module applies them to one run of ``pipeline.grade``:

1. ``ClassList.of(collected, roster)``: the students found in the submissions (``collect_all``:
   Canvas, Moodle or plain folders), matched against the roster CSV when one is given
   (``--roster``): names and emails, a pinned kit id, and the roster's students who submitted
   nothing (they get a row with 0 and status ``missing``).
2. ``save`` / ``load``: ``out/lms.json`` keeps that, so ``attnkit manual ... export`` rebuilds the
   LMS files after written answers are graded by hand.
3. ``register``: names and emails go into nbgrader's ``Student`` rows (``nbgrader export`` and
   formgrader show them); a missing student exists in the gradebook with no submission, which
   nbgrader exports as 0.
4. ``write_lms_files``: from the rows of ``grades.csv`` (scores after nbgrader's late penalty),
   ``out/lms/canvas_grades.csv`` (Canvas: Grades -> Import) or ``out/lms/moodle_grades.csv``
   (Moodle: "Upload grading worksheet"), and ``out/lms/feedback.zip`` for the LMS's bulk
   feedback upload. Students an LMS file cannot carry are listed in ``out/lms/left_out.txt``.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import gradebook as gbk
from . import late, lms
from .job import StudentResult
from .submissions import Collected

LMS_STATE = "lms.json"
LMS_DIR = "lms"


@dataclass
class ClassList:
    """The class of one run: each student's name, email and LMS ids; who submitted nothing."""

    layout: str                                  # "canvas" | "moodle" | "folders"
    people: dict[str, dict] = field(default_factory=dict)   # kit id -> name, email, lms, late
    missing: list[str] = field(default_factory=list)        # kit ids on the roster, no submission
    unmatched: list[str] = field(default_factory=list)      # export files that are no student's
    not_on_roster: list[str] = field(default_factory=list)  # submitters the roster does not list
    roster: str = ""                                         # the roster's path, if one was given
    title: str = ""          # the Canvas gradebook column's title (default: the assignment name)
    assignment_id: str = ""  # and its Canvas assignment id, when known


    @classmethod
    def of(cls, collected: Collected, roster: Path | None = None, *, title: str | None = None,
           assignment_id: str | None = None, zone: str | None = None) -> ClassList:
        """The class list of ``collected``; with ``roster``, its names, emails and pinned ids are
        applied to the submissions (which may change their ``student``), its submission times
        (Moodle's worksheet; read in ``zone`` when they name none) become the submissions' times
        where the download has none, and its students who submitted nothing are listed as
        missing."""
        subs = collected.submissions
        klass = cls(collected.layout, unmatched=list(collected.unmatched), title=title or "",
                    assignment_id=assignment_id or "")
        if roster is not None:
            entries = lms.read_roster(roster)
            if collected.layout == "folders":  # a plain folder is named with the kit id itself
                for entry in entries.entries:
                    entry.student_id = entry.student_id or entry.lms_id
            match = lms.match_roster(entries, subs)
            for sub in subs:  # (before apply_roster, which may give a submission a pinned id)
                _roster_time(sub, match.matched.get(sub.student), zone)
            lms.apply_roster(subs, match)
            klass.roster, klass.not_on_roster = str(roster), match.not_on_roster
            for entry in match.missing:
                klass.missing.append(entry.student)
                klass.people[entry.student] = {
                    "name": entry.name, "email": entry.email, "late": False, "timestamp": None,
                    "lms": {k: v for k, v in {**_ids(collected.layout, entry.lms_id),
                                              "login": entry.login, "sis_user_id": entry.sis_user_id,
                                              "sis_login_id": entry.sis_login_id,
                                              "section": entry.section}.items() if v}}
        for sub in subs:
            klass.people[sub.student] = {"name": sub.name, "email": sub.lms.get("email", ""),
                                         "late": sub.late, "timestamp": sub.timestamp,
                                         "lms": dict(sub.lms)}
        return klass

    def missing_results(self) -> list[StudentResult]:
        """A ``missing`` result (score 0) for each roster student who submitted nothing."""
        where = {"canvas": "the Canvas export", "moodle": "the Moodle export"}.get(
            self.layout, "the submissions")
        return [StudentResult(sid, "missing", notes=f"on the roster, nothing in {where}")
                for sid in self.missing]

    def lines(self) -> list[str]:
        """What an instructor should know about the class list (for the report and the log)."""
        out = [f"unmatched file in the {self.layout} export: {u}" for u in self.unmatched]
        out += [f"{sid} submitted but is not on the roster" for sid in self.not_on_roster]
        return out


def _roster_time(sub, entry, zone: str | None) -> None:
    """Give ``sub`` the roster's submission time when the download did not carry one."""
    if entry is None or not entry.submitted or sub.timestamp:
        return
    try:
        sub.timestamp = late.parse_lms_time(entry.submitted, zone)
    except late.LateError as exc:
        sub.note = "; ".join(filter(None, [sub.note, f"roster: {exc}; no submission time"]))


def _ids(layout: str, lms_id: str) -> dict:
    """The LMS ids of a roster person, keyed as ``lms.py`` keys a submission's."""
    if layout == "canvas":
        return {"lms": "canvas", "user_id": lms_id}
    if layout == "moodle":
        return {"lms": "moodle", "participant": lms_id}
    return {}


def _after(timestamp: str | None, due: str | None) -> bool:
    """Whether nbgrader's ``timestamp`` is after its ``duedate`` (both as its export writes them)."""
    if not timestamp or not due:
        return False
    from nbgrader.utils import parse_utc

    return parse_utc(timestamp) > parse_utc(due)


def save(out: Path, klass: ClassList) -> None:
    """Write ``out/lms.json`` (atomically)."""
    path = Path(out) / LMS_STATE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(klass), indent=1, sort_keys=True, ensure_ascii=False))
    os.replace(tmp, path)


def load(out: Path) -> ClassList | None:
    """The class list of the run in ``out`` (None for a run graded before there was one)."""
    path = Path(out) / LMS_STATE
    return ClassList(**json.loads(path.read_text())) if path.exists() else None


def register(db_url: str, assignment: str, klass: ClassList) -> None:
    """Names and emails into the gradebook; each missing student without a submission."""
    gbk.set_students(db_url, {sid: (p.get("name", ""), p.get("email", ""))
                              for sid, p in klass.people.items()})
    for sid in klass.missing:
        gbk.store(db_url, assignment, sid, None)


def write_lms_files(out: Path, assignment: str, rows: list[dict], klass: ClassList) -> list[Path]:
    """The grade file and feedback zip the LMS of ``klass.layout`` imports (none for plain
    folders); return the paths written. ``rows`` are ``grades.csv``'s."""
    if klass.layout not in ("canvas", "moodle"):
        return []
    folder = Path(out) / LMS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    results = []
    for row in rows:
        sid = row["student_id"]
        person = klass.people.get(sid, {})
        feedback = Path(out) / "feedback" / sid / f"{assignment}.html"
        results.append({"student": sid, "name": person.get("name", ""),
                        "email": row.get("email") or person.get("email", ""),
                        "lms": person.get("lms", {}),
                        "late": person.get("late", False) or _after(row.get("timestamp"),
                                                                     row.get("duedate")),
                        "timestamp": row.get("timestamp") or person.get("timestamp"),
                        "score": float(row["score"] or 0), "max_score": float(row["max_score"] or 0),
                        "status": row.get("status", ""),
                        "feedback": str(feedback) if feedback.exists() else ""})
    if klass.layout == "canvas":
        grades = folder / "canvas_grades.csv"
        left = lms.write_canvas_csv(grades, results, assignment_title=klass.title or assignment,
                                    canvas_assignment_id=klass.assignment_id or None)
    else:
        grades = folder / "moodle_grades.csv"
        left = lms.write_moodle_worksheet(grades, results)
    bundle = folder / "feedback.zip"
    left += lms.feedback_bundle(bundle, results, lms=klass.layout)
    notes = folder / "left_out.txt"
    notes.unlink(missing_ok=True)
    if left:
        notes.write_text("".join(line + "\n" for line in left))
    return [grades, bundle] + ([notes] if left else [])
