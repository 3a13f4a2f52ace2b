"""One student's grading job: :func:`grade_submission` ``(stage, task) -> Graded``.

The job is the same however a run is spread out (``dispatch.py``: in the grading process, in
local worker processes, on a Dask cluster). It takes plain data (the ``Stage`` every job of a run
shares, the ``Task`` of one student), grades in a private *staging area* (a throw-away nbgrader
course directory with its own scratch SQLite gradebook) and returns plain data (``Graded``). It
never touches the real gradebook or the main course; the staging area is removed before it
returns.

Inside the staging area: preflight (``preflight.sanitize``: a clean copy of the notebook, or why
it cannot be graded), nbgrader's ``autograde`` (with the sandbox, the resilient executor and the
guard that the course's ``nbgrader_config.py`` names), then ``generate_feedback`` with the
hidden tests redacted (``feedback.py``). What went wrong becomes one line of ``notes``; what a
person should look at (tests or metadata the student changed, tampering the guard saw) becomes
``flags``.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import gradebook as gbk
from .config import make_api, nbgrader_session
from .execute import read_sidecar
from .execute import summary as execution_summary
from .feedback import hidden_tests_redacted
from .outcome import describe_notebook, failure_reason
from .preflight import read_timestamp, release_reference, sanitize
from .protect import read_flags
from .submissions import Submission

COURSE_FOLDERS = ("submitted", "autograded", "feedback")  # per-student folders of a course tree

# Where a job's time goes, in order (seconds, ``Graded.timings``): unpacking the staging area
# and nbgrader's API; preflight; nbgrader's autograde set-up and bookkeeping around the
# execution; the kernel (waiting for it to start, the guard's install cell with its imports,
# the notebook's cells, shutting it down and copying its files back; ``execute.py``); the
# feedback page; reading the result back; in the parent, the commit into the real gradebook.
TIMING_PHASES = ("stage", "preflight", "nbgrader", "kernel_start", "install", "cells", "shutdown",
                 "feedback", "collect", "total", "commit")

# Preflight notes (cellcheck.py) that say the student changed what they may not change.
_TAMPERED = re.compile(r"(were|was) (edited|deleted) by the student|nbgrader metadata of .* did not match")

_STAGING_CONFIG = '''\
"""An attnkit staging area: the main course's settings, its own root and gradebook."""
c = get_config()  # noqa: F821
load_subconfig("base_config.py")  # noqa: F821  (the main course's nbgrader_config.py)
c.CourseDirectory.root = {root!r}
c.CourseDirectory.db_url = {db_url!r}
c.Exchange.root = {exchange!r}
'''


@dataclass
class StudentResult:
    """The outcome for one student: ``status`` is ``graded`` or ``failed`` (scored 0)."""

    student: str
    status: str
    notes: str = ""
    sha256: str = ""
    seconds: float = 0.0
    score: float = 0.0
    max_score: float = 0.0
    cached: bool = False
    flags: list[str] = field(default_factory=list)  # why the submission needs a human look

    @property
    def flagged(self) -> bool:
        return bool(self.flags)

    def line(self) -> str:
        how = "unchanged, kept" if self.cached else f"{self.seconds:.1f} s"
        text = f"{self.student}: {self.status} {self.score:g}/{self.max_score:g} ({how})"
        text += f" - {self.notes}" if self.notes else ""
        return text + (f" [FLAGGED: {'; '.join(self.flags)}]" if self.flags else "")


@dataclass(frozen=True)
class Stage:
    """Everything a job needs besides the submission, as plain data (it travels to Dask workers).

    ``files``: course-relative path -> bytes of the template course (``source/<a>/...``,
    ``release/<a>/...`` and ``gradebook.db``, the scratch gradebook after
    ``generate_assignment``); ``config``: the text of the main course's ``nbgrader_config.py``;
    ``scratch``: the folder to stage in ('' = the system temporary folder); ``extensions``:
    seconds of extension per student, from the main gradebook (the template's gradebook already
    has the due date), so nbgrader's late penalty sees them.
    """

    assignment: str
    config: str
    files: dict[str, bytes]
    parts: list[tuple[str, float]]
    show_hidden: bool = False
    scratch: str = ""
    extensions: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Task:
    """One student's submission as data: the ``Submission`` and its notebook's bytes."""

    sub: Submission
    notebook: bytes | None = None
    timestamp: bytes | None = None

    @classmethod
    def of(cls, sub: Submission) -> Task:
        """Read the notebook, and its submission time: ``sub.timestamp`` where the pipeline set it
        (``pipeline._stamp``), else ``timestamp.txt`` beside it when it is a valid one."""
        if sub.problem or sub.notebook is None:
            return cls(sub)
        stamp = sub.timestamp
        if stamp is None:
            stamp, note = read_timestamp(sub.notebook.parent)  # never follows a link
            if note:
                sub = dataclasses.replace(sub, note="; ".join(filter(None, [sub.note, note])))
        return cls(sub, sub.notebook.read_bytes(),
                   None if stamp is None else (stamp + "\n").encode())


@dataclass
class Graded:
    """What a job returns: the result, the gradebook record, the files for the course tree.

    ``record`` is ``gradebook.read_submission``'s dict (None: the submission failed);
    ``files`` maps course-relative paths (``submitted/<s>/<a>/...``, ``autograded/...``,
    ``feedback/...``) to bytes; ``log`` is nbgrader's log of this job; ``timings`` the seconds
    of each phase (``TIMING_PHASES``; the parent adds ``commit``).
    """

    result: StudentResult
    record: dict | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    log: str = ""
    timings: dict[str, float] = field(default_factory=dict)  # phase -> seconds (TIMING_PHASES)

    @classmethod
    def failed(cls, student: str, reason: str) -> Graded:
        """A submission that could not be graded, for ``reason``."""
        return cls(StudentResult(student, "failed", notes=reason))


# ---------------------------------------------------------------- course trees

def write_staging_config(root: Path, config: str) -> str:
    """Make ``root`` a course with the settings of the main course's ``config`` text but its own
    root and gradebook; return the gradebook's URL."""
    db_url = f"sqlite:///{root / 'gradebook.db'}"
    (root / "base_config.py").write_text(config)
    (root / "nbgrader_config.py").write_text(_STAGING_CONFIG.format(
        root=str(root), db_url=db_url, exchange=str(root / "exchange")))
    return db_url


def feedback_page(root: Path, assignment: str, student: str) -> Path:
    """Where ``generate_feedback`` writes a student's feedback in the course at ``root``."""
    return root / "feedback" / student / assignment / f"{assignment}.html"


def write_files(root: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` (path relative to ``root`` -> bytes) under ``root``."""
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _student_files(root: Path, assignment: str, student: str) -> dict[str, bytes]:
    """The student's submitted, autograded and feedback files, by course-relative path."""
    files = {}
    for folder in COURSE_FOLDERS:
        base = root / folder / student / assignment
        if base.is_dir():
            for path in sorted(p for p in base.rglob("*") if p.is_file() and not p.is_symlink()):
                files[str(path.relative_to(root))] = path.read_bytes()
    return files


class Clock:
    """Seconds per phase: ``lap(phase)`` adds the time since the previous lap to ``phase``."""

    def __init__(self):
        self.timings: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.add(phase, now - self._last)
        self._last = now

    def add(self, phase: str, seconds: float) -> None:
        self.timings[phase] = round(self.timings.get(phase, 0.0) + seconds, 3)

    def split(self, whole: str, parts) -> None:
        """Move ``parts`` (phase -> seconds, measured inside ``whole``) out of ``whole``."""
        for phase, seconds in (parts or {}).items() if isinstance(parts, dict) else ():
            if isinstance(seconds, (int, float)) and phase in TIMING_PHASES:
                self.add(phase, seconds)
                self.add(whole, -seconds)


def timing_line(student: str, timings: dict[str, float]) -> str:
    """One line for grading.log: "timings <student>: stage 0.05 s, ..., total 4.10 s"."""
    parts = [f"{p} {timings[p]:.2f} s" for p in TIMING_PHASES if p in timings]
    return f"timings {student}: {', '.join(parts)}\n"


# ---------------------------------------------------------------- the job

def grade_submission(stage: Stage, task: Task) -> Graded:
    """Grade one submission in a private staging area and return the outcome as data."""
    start = time.perf_counter()
    clock = Clock()
    lap = clock.lap
    sub = task.sub
    if sub.problem or task.notebook is None:
        notes = "; ".join(filter(None, [sub.problem or "no notebook (.ipynb) found", sub.note]))
        return Graded.failed(sub.student, notes)
    parent = Path(stage.scratch) if stage.scratch else Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"attnkit-stage-{sub.student}-", dir=parent))
    try:
        root = staging / "course"
        write_files(root, stage.files)
        db_url = write_staging_config(root, stage.config)
        incoming = staging / "incoming" / sub.student
        incoming.mkdir(parents=True)
        local = dataclasses.replace(sub, notebook=incoming / sub.notebook.name)
        local.notebook.write_bytes(task.notebook)
        if task.timestamp is not None:
            (incoming / "timestamp.txt").write_bytes(task.timestamp)
        result = StudentResult(sub.student, "failed", sha256=local.sha256)
        log_path = staging / "grading.log"
        with nbgrader_session(log_path):
            api = make_api(root)
            lap("stage")
            try:
                _autograde(api, root, stage, local, db_url, result, clock)
            except Exception as exc:  # a bug or an nbgrader surprise must not stop the others
                result.status, result.notes = "failed", f"grading error: {type(exc).__name__}: {exc}"
        result.notes = "; ".join(filter(None, [result.notes, sub.note]))
        graded = Graded(result, log=log_path.read_text(errors="replace"), timings=clock.timings)
        if result.status == "graded":
            graded.record = gbk.read_submission(db_url, stage.assignment, sub.student)
            graded.files = _student_files(root, stage.assignment, sub.student)
        lap("collect")
        result.seconds = time.perf_counter() - start
        clock.timings["total"] = round(result.seconds, 3)
        clock.timings["worker"] = os.getpid()
        graded.log += timing_line(sub.student, clock.timings)
        return graded
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _autograde(api, root: Path, stage: Stage, sub: Submission, db_url: str,
               result: StudentResult, clock: Clock | None = None) -> None:
    """Submit, autograde and generate feedback for one student; fill in ``result``."""
    clock = clock or Clock()
    lap = clock.lap
    assignment = stage.assignment
    dest = root / "submitted" / sub.student / assignment
    dest.mkdir(parents=True)
    # Preflight: a clean copy without outputs, or the reason it cannot be graded.
    clean, checks = sanitize(sub.notebook, release_reference(root, assignment),
                             dest / f"{assignment}.ipynb")
    stamp, stamp_note = read_timestamp(sub.notebook.parent)  # nbgrader's submission time
    checks = [*checks, stamp_note] if stamp_note else checks
    # Edited or deleted test cells and rewritten nbgrader metadata were repaired, but a human
    # should know: they are flags, not notes.
    result.flags = [c for c in checks if _TAMPERED.search(c)]
    checks = [c for c in checks if c not in result.flags]
    lap("preflight")
    if clean is None:
        result.notes = "; ".join(checks)
        return
    if stamp is not None:
        (dest / "timestamp.txt").write_text(stamp + "\n")
    if stage.extensions.get(sub.student):
        gbk.grant_extension(db_url, assignment, sub.student, stage.extensions[sub.student])
    graded = api.autograde(assignment, sub.student, force=True, create=True)
    lap("nbgrader")
    if not graded["success"]:
        result.notes = "; ".join([*checks, "autograde failed: " + failure_reason(graded)])
        return
    parts = stage.parts
    cells = gbk.cell_scores(db_url, assignment, [sub.student], [g for g, _ in parts])
    autograded = root / "autograded" / sub.student / assignment / f"{assignment}.ipynb"
    result.status = "graded"
    records = read_sidecar(autograded.parent)  # restarts, skipped cells (this notebook's only)
    clock.split("nbgrader", (records.get(assignment) or {}).get("timings"))
    ran = execution_summary({assignment: records.get(assignment)})
    result.notes = "; ".join(filter(None, [*checks, describe_notebook(autograded, parts, cells), ran]))
    result.flags += read_flags(autograded.parent)  # tampering the guard saw (protect.py)
    lap("nbgrader")
    with hidden_tests_redacted(autograded, show_hidden=stage.show_hidden):
        fb = api.generate_feedback(assignment, sub.student, force=True)
    lap("feedback")
    if not (fb["success"] and feedback_page(root, assignment, sub.student).exists()):
        result.notes = "; ".join(filter(None, [result.notes, "no feedback: " + failure_reason(fb)]))
