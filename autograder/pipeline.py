"""Grading submissions with nbgrader: stage, plan, run, export (releasing is in ``release.py``).

``grade(assignment, submissions, out)`` stages a course directory at ``out/course/``
(``nbgrader_config.py``, gradebook at ``out/gradebook.db`` unless a ``db_url`` is given), runs
``generate_assignment`` (gradebook entry, checksums, hidden tests), then for each student
copies the notebook to ``submitted/<student>/<a>/<a>.ipynb`` and runs ``autograde`` and
``generate_feedback`` for that student alone. It writes ``grades.csv``, ``cell_scores.csv``,
``feedback/<student>/<a>.html``, ``report.md``/``report.html`` and ``grading.log`` in ``out``.

A submission that cannot be graded (no notebook, not valid JSON, the kernel died, nbgrader
failed) has status ``failed``, a one-line reason in ``notes``, no submission in the gradebook
and score 0 in ``grades.csv``; the other students are graded as usual. A cell that runs past
the timeout is interrupted, noted, and grading goes on with the next cell.

Re-runs and interruptions: ``out/state.json`` records, per student, the hash of the graded
notebook and the outcome, written after each student. A re-run keeps students whose notebook
is unchanged and who were graded (same source notebook, timeout and gradebook, and the grade
still in the gradebook), retries failed ones and grades new or changed ones; ``force=True``
re-grades everyone. A student being graded when a run is interrupted is graded again next
time. Grades live only in the gradebook (nbgrader updates its rows in place, so there are no
duplicates), and the CSVs and the report are rebuilt from it on every run.

Workers and clusters (``dispatch.py``): every submission is autograded by the same job
(``job.py``) in a staging area of its own (a scratch course and SQLite gradebook), in this
process (``workers=1``), in ``workers`` local processes, or on the Dask cluster at
``scheduler``; this process alone writes each result into the real gradebook, in one
transaction per student, then records it in ``state.json``. A run stopped anywhere (Ctrl-C,
SIGKILL) keeps what was recorded; the next run grades the rest.

Grading written answers: ``export(out)`` rebuilds the CSV files and the report of a run from its
gradebook alone, after a person scored the manually graded answers (``manual.py``, formgrader).

``grade`` goes through four stages, one function each: ``_stage`` (the nbgrader course and the
settings the grades depend on), ``_plan`` (which students are kept from an earlier run, which are
to grade), ``_run`` (grade, commit and record each student as the results come) and ``_export``
(CSV files and the report, from the gradebook).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

from . import dispatch
from . import gradebook as gbk
from . import late
from . import roundtrip
from .assignments import spec_for
from .cells import grade_id, is_manual
from .config import make_api, nbgrader_session, write_config
from .job import StudentResult
from .limits import Limits
from .notebooks import solution_source
from .preflight import read_timestamp
from .release import PipelineError, generate_assignment, grade_ids, stage_course
from .report import status as report_status
from .report import write_report
from .sandbox import probe
from .submissions import Submission, collect_all

# Bump when a change to the pipeline should re-grade submissions that state.json calls unchanged.
STATE_VERSION = 2


@dataclass
class GradeRun:
    """Everything a report needs about one grading run."""

    assignment: str
    out: Path
    parts: list[tuple[str, float]]
    results: list[StudentResult] = field(default_factory=list)
    cells: list[gbk.CellScore] = field(default_factory=list)
    seconds: float = 0.0
    manual: list[str] = field(default_factory=list)  # grade ids of the answers a person grades
    exported_only: bool = False  # rebuilt from the gradebook by ``export`` (nothing graded)
    lms_files: list[Path] = field(default_factory=list)  # written for the LMS (roundtrip.py)
    lms_notes: list[str] = field(default_factory=list)  # unmatched files, students off the roster

    @property
    def max_score(self) -> float:
        return sum(points for _, points in self.parts)


@dataclass(frozen=True)
class _Course:
    """The nbgrader course staged for one run (at ``out/course``) and what its grades depend on."""

    assignment: str
    out: Path
    db_url: str
    parts: list[tuple[str, float]]  # (grade_id, points) of every grade cell
    show_hidden: bool
    settings: dict  # state.json keeps grades only while these stay the same
    manual: tuple[str, ...] = ()  # grade ids of the manually graded answers

    @property
    def root(self) -> Path:
        return self.out / "course"


class _State:
    """``out/state.json``: per student, the notebook hash and outcome of the last grading."""

    FIELDS = ("student", "status", "notes", "sha256", "seconds", "flags")

    def __init__(self, path: Path, settings: dict):
        self.path, self.settings = path, settings
        data = json.loads(path.read_text()) if path.exists() else {}
        same = data.get("settings") == settings
        self.students: dict[str, dict] = data.get("students", {}) if same else {}
        self.fresh = not same

    def record(self, res: StudentResult) -> None:
        """Remember ``res`` (written at once: a run stopped later keeps it)."""
        self.students[res.student] = {k: v for k, v in asdict(res).items() if k in self.FIELDS}
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"settings": self.settings, "students": self.students},
                                  indent=1, sort_keys=True))
        os.replace(tmp, self.path)


def grade(assignment: str, submissions: Path, out: Path, *, source: Path | None = None,
          db_url: str | None = None, timeout: int | None = None, force: bool = False,
          jobs: int | None = None, show_hidden: bool = False, echo=print,
          workers: int = 1, scheduler: str | None = None, progress=None,
          unsafe: bool = False, limits: Limits | dict | None = None, gpu: bool = False,
          due: str | None = None, late_penalty: str | None = None, roster: Path | None = None,
          lms_title: str | None = None, lms_assignment_id: str | None = None,
          lms_timezone: str | None = None) -> GradeRun:
    """Grade every submission in ``submissions`` into ``out`` (see the module docstring).

    ``workers`` > 1 autogrades that many students at once, each in its own process and staging
    area (``jobs`` is the old name); ``scheduler`` (a Dask address) grades on that cluster
    instead. ``progress`` (a ``progress.Progress``) shows a live count; the per-student lines
    then go through it instead of ``echo``.
    ``show_hidden`` keeps the hidden tests in the students' feedback (see ``feedback.py``).
    Kernels run in the sandbox (``sandbox.py``) within ``limits`` (a ``limits.Limits``, or a
    dict of fields overriding ``Limits.for_cell_timeout(timeout)``); where the sandbox cannot
    start this raises ``PipelineError``, unless ``unsafe`` (plain kernels, a loud warning).
    ``gpu`` binds the GPU devices into the sandbox (``attnkit grade --gpu``).
    ``due`` (any date and time nbgrader reads; a zone, else UTC) is written into the gradebook
    as the assignment's due date; without it, the due date already there (set with nbgrader)
    counts. ``late_penalty`` (``none``, ``zero``, ``P%/day``: ``late.py``) is what nbgrader takes
    off a submission whose ``timestamp.txt`` (or LMS late mark) is after it.
    ``roster`` (a CSV, ``lms.read_roster``) names the class: names and emails, and a ``missing``
    row with 0 for each student on it who submitted nothing. A Canvas or Moodle export also gets
    the grade file and feedback zip its LMS imports (``roundtrip.py``; ``lms_title`` and
    ``lms_assignment_id`` name the Canvas gradebook column); a roster's submission times
    (Moodle's worksheet) are read in ``lms_timezone`` (IANA name, default UTC).
    """
    workers = max(1, int(jobs or workers))
    begin = time.perf_counter()
    source = Path(source).resolve() if source else solution_source(assignment)
    if not Path(submissions).exists():
        raise FileNotFoundError(f"no submissions at {submissions}")
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    timeout = int(timeout or spec_for(assignment).timeout)
    if not isinstance(limits, Limits):
        limits = Limits.for_cell_timeout(timeout, **(limits or {}))
    penalty, due = late.parse_penalty(late_penalty), late.parse_due(due)
    _check_sandbox(unsafe, echo)
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one grading run per output folder at a time
        db_url = db_url or f"sqlite:///{out / 'gradebook.db'}"
        if due is None:
            with nbgrader_session(out / "grading.log"):  # (a new gradebook runs alembic)
                if gbk.has_assignment(db_url, assignment):
                    due = gbk.duedate(db_url, assignment)  # set by the instructor with nbgrader
        course = _stage(assignment, source, out, db_url, timeout=timeout, limits=limits,
                        unsafe=unsafe, show_hidden=show_hidden, gpu=gpu, due=due, penalty=penalty)
        state = _State(out / "state.json", course.settings)
        collected = collect_all(Path(submissions), assignment, out / "incoming")
        klass = roundtrip.ClassList.of(collected, roster and Path(roster), title=lms_title,
                                       assignment_id=lms_assignment_id, zone=lms_timezone)
        subs = collected.submissions
        for sub in subs:
            _stamp(sub, due)
        run = GradeRun(assignment, out, course.parts, manual=list(course.manual))
        with nbgrader_session(out / "grading.log") as log:
            log.write(f"=== grading {assignment}: {len(subs)} submissions from {submissions} "
                      f"({collected.layout} layout)\n")
            for line in klass.lines():
                echo(f"  note: {line}")
                log.write(line + "\n")
            kept, todo = _plan(course, state, subs, force=force)
            results = _run(course, state, log, kept, todo, max_score=run.max_score,
                           workers=workers, scheduler=scheduler, progress=progress, echo=echo)
            roundtrip.register(course.db_url, assignment, klass)
            for res in klass.missing_results():
                res.max_score = run.max_score
                state.record(res)
                results[res.student] = res
            roundtrip.save(out, klass)
            run.results = [results[s] for s in sorted({s.student for s in subs} | set(klass.missing))]
            students = [r.student for r in run.results]
            run.cells = gbk.cell_scores(course.db_url, assignment, students,
                                        [g for g, _ in course.parts])
            rows = gbk.export_rows(course.db_url, assignment, students)
            marked = gbk.flagged(course.db_url, assignment, students)
        run.seconds = time.perf_counter() - begin
        _export(run, rows, marked)
    return run


def open_run(out: Path) -> tuple[str, str]:
    """The assignment and gradebook URL of the grading run in ``out`` (from its ``state.json``)."""
    path = Path(out) / "state.json"
    if not path.exists():
        raise PipelineError(f"{out} is not a grading run (no state.json there): grade into it "
                            "first with `attnkit grade ASSIGNMENT SUBMISSIONS --out DIR`")
    settings = json.loads(path.read_text()).get("settings", {})
    return settings["assignment"], settings["db_url"]


def export(out: Path, run: GradeRun | None = None) -> GradeRun:
    """Rebuild ``grades.csv``, ``cell_scores.csv`` and the report of the run in ``out`` from its
    gradebook, grading nothing: after written answers were graded by hand (formgrader or
    ``attnkit manual``). The students are those ``state.json`` records, with their status and
    notes from the last grading; or those of ``run``, the ``GradeRun`` that ``grade`` just
    returned for ``out`` (``attnkit demo``: the report keeps that run's timings).
    """
    begin = time.perf_counter()
    out = Path(out).resolve()
    assignment, db_url = open_run(out)
    source = out / "course" / "source" / assignment / f"{assignment}.ipynb"
    nb = nbformat.read(str(source), as_version=4)
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # not while a grading run writes this folder
        state = json.loads((out / "state.json").read_text())
        parts = grade_ids(nb)
        fresh = run is None
        if fresh:
            run = GradeRun(assignment, out, parts, exported_only=True)
            run.results = [StudentResult(**{k: v for k, v in rec.items() if k in _State.FIELDS},
                                         cached=True)
                           for _, rec in sorted(state.get("students", {}).items())]
        run.parts, run.manual = parts, [grade_id(c) for c in nb.cells if is_manual(c)]
        with nbgrader_session(out / "grading.log") as log:
            log.write(f"=== exporting {assignment} from the gradebook (manual grades)\n")
            for res in run.results:
                _score(res, db_url, assignment, run.max_score)
            students = [r.student for r in run.results]
            run.cells = gbk.cell_scores(db_url, assignment, students, [g for g, _ in parts])
            rows = gbk.export_rows(db_url, assignment, students)
            marked = gbk.flagged(db_url, assignment, students)
        if fresh:
            run.seconds = time.perf_counter() - begin
        _export(run, rows, marked)
    return run


def _check_sandbox(unsafe: bool, echo=print) -> None:
    """Refuse to grade where the sandbox cannot start, unless ``unsafe`` (then warn loudly)."""
    if unsafe:
        echo("WARNING: --unsafe: student code runs WITHOUT the sandbox, with this process's "
             "rights: it can read the solutions and the gradebook, use the network and "
             "exhaust the machine. Use only for trusted notebooks.")
        return
    reason = probe()
    if reason:
        raise PipelineError(f"the grading sandbox cannot start: {reason}. Grading refuses to "
                            "run student code unsandboxed; pass --unsafe to do it anyway")


def _stage(assignment: str, source: Path, out: Path, db_url: str, *, timeout: int,
           limits: Limits, unsafe: bool, show_hidden: bool, gpu: bool = False,
           due: str | None = None, penalty: str = "none") -> _Course:
    """Stage the nbgrader course at ``out/course``: the source notebook and a config with this
    run's sandbox, limits, stderr pattern and late penalty."""
    root = out / "course"
    nb = stage_course(root, assignment, source, db_url=db_url, timeout=timeout)
    pattern = spec_for(assignment).ignore_pattern()
    write_config(root, db_url=db_url, timeout=timeout, unsafe=unsafe, limits=limits,
                 pattern=pattern, gpu=gpu, late_penalty=penalty)
    digest = hashlib.sha256(nbformat.writes(nb).encode()).hexdigest()
    settings = {"version": STATE_VERSION, "assignment": assignment, "source": digest,
                "timeout": timeout, "db_url": db_url, "stderr_pattern": pattern,
                "show_hidden": show_hidden, "sandbox": not unsafe, "limits": asdict(limits)}
    # Only when set, so an earlier run's state.json stays valid: a grade kept from a run with
    # another due date or penalty would carry the wrong late penalty.
    settings.update({k: v for k, v in (("gpu", gpu), ("due", due)) if v})
    if penalty != "none":
        settings["late_penalty"] = penalty
    return _Course(assignment, out, db_url, grade_ids(nb), show_hidden, settings,
                   tuple(grade_id(c) for c in nb.cells if is_manual(c)))


def _plan(course: _Course, state: _State, subs: list[Submission], *,
          force: bool) -> tuple[dict[str, StudentResult], list[Submission]]:
    """Which students keep their grade from an earlier run, and which are to be graded now.

    Nothing is kept when the course or the gradebook is not the one ``state.json`` describes
    (nbgrader's ``generate_assignment`` then runs again first). A student is kept when they were
    graded, their notebook is unchanged and the gradebook still has their grade; the others are
    dropped from ``state.json`` until they are graded again (a run interrupted before that
    grades them next time).
    """
    assignment, db_url = course.assignment, course.db_url
    if (state.fresh or not (course.root / "release" / assignment).exists()
            or not gbk.has_assignment(db_url, assignment)):
        generate_assignment(make_api(course.root), assignment)
        state.students = {}
    if course.settings.get("due"):
        gbk.set_duedate(db_url, assignment, course.settings["due"])
    kept, todo = {}, []
    for sub in subs:
        old = state.students.get(sub.student)
        if (not force and old and old["status"] == "graded" and not sub.problem
                and old["sha256"] == sub.sha256
                and gbk.has_assignment(db_url, assignment, sub.student)):
            kept[sub.student] = StudentResult(**{**old, "cached": True})
        else:
            todo.append(sub)
            state.students.pop(sub.student, None)
    state.save()
    return kept, todo


def _run(course: _Course, state: _State, log, kept: dict[str, StudentResult],
         todo: list[Submission], *, max_score: float, workers: int, scheduler: str | None,
         progress, echo) -> dict[str, StudentResult]:
    """Grade ``todo``, committing and recording each result as it comes; return all results.

    Each student's line goes to ``progress`` (or ``echo``), kept ones first. Whatever stops the
    run, the workers are stopped and the staging areas removed before this returns.
    """
    show = progress.update if progress is not None else lambda r: echo("  " + r.line())
    if progress is not None:
        progress.start(len(kept) + len(todo), f"grading {course.assignment}")
    results = dict(kept)
    for res in kept.values():
        _score(res, course.db_url, course.assignment, max_score)
        show(res)
    stream = _grade_all(course, todo, workers, scheduler)
    try:
        for graded in stream:
            log.write(graded.log)
            res = dispatch.commit(graded, course.root, course.out, course.assignment,
                                  course.db_url)
            state.record(res)
            results[res.student] = res
            _score(res, course.db_url, course.assignment, max_score)
            show(res)
    finally:
        stream.close()  # on Ctrl-C or an error: stop the workers before cleaning up
        dispatch.cleanup(course.out)
        if progress is not None:
            progress.close()
    return results


def _stamp(sub: Submission, due: str | None) -> None:
    """Give ``sub`` the submission time nbgrader will see: ``timestamp.txt`` beside the notebook
    (nbgrader's collect writes one), else the time the LMS export gave, moved after the due date
    when the LMS marked it late (``late.stamp_late``)."""
    if sub.notebook is None or sub.problem:
        return
    # (an LMS export is one folder for the whole class: no timestamp.txt there is a student's)
    stamp, note = (None, "") if sub.lms else read_timestamp(sub.notebook.parent)
    stamp, late_note = late.stamp_late(stamp or sub.timestamp, sub.late, due)
    sub.timestamp = stamp
    note = note if stamp is not None else ""  # else ``Task.of`` reads the file again and says it
    sub.note = "; ".join(filter(None, [sub.note, note, late_note]))


def _grade_all(course: _Course, todo: list[Submission], workers: int, scheduler: str | None):
    """Yield a ``job.Graded`` per submission in ``todo`` as each is ready (not committed)."""
    if not todo:
        return
    stage = dispatch.prepare(course.root, course.out, course.assignment, course.parts,
                             show_hidden=course.show_hidden, local=not scheduler,
                             duedate=course.settings.get("due"),
                             extensions=gbk.extensions(course.db_url, course.assignment))
    yield from dispatch.results(stage, todo, workers=workers, scheduler=scheduler)


def cell_flags(flags: list[str], grade_id: str) -> list[str]:
    """The flags that name the grade cell ``grade_id`` (as a whole word: ``test_a`` is not
    ``test_ab``)."""
    word = re.compile(rf"(?<![\w]){re.escape(grade_id)}(?![\w])")
    return [f for f in flags if word.search(f)]


def _score(res: StudentResult, db_url: str, assignment: str, max_score: float) -> None:
    """Fill in the total score from the gradebook (0 for a failed submission), after nbgrader's
    late penalty, as ``nbgrader export`` computes it; a penalty is added to the notes."""
    res.max_score = max_score
    cells = gbk.cell_scores(db_url, assignment, [res.student], []) if res.status == "graded" else []
    raw = sum(c.score or 0.0 for c in cells)
    penalty, seconds = gbk.late_penalty(db_url, assignment, res.student) if cells else (0.0, 0.0)
    res.score = max(0.0, raw - penalty)
    if seconds > 0:
        lost = f"-{penalty:g} point{'s' * (penalty != 1)}" if penalty else "no penalty"
        res.notes = "; ".join(filter(None, [res.notes, f"late by {late.describe(seconds)}: {lost}"]))


# The flag of a submission that a person flagged in formgrader (the grader found nothing).
FLAGGED_BY_HAND = "flagged in the gradebook"


def _export(run: GradeRun, rows: list[dict], marked: set[str] = frozenset()) -> None:
    """Write ``grades.csv`` (nbgrader's export of ``rows`` plus each student's status, notes and
    flags), ``cell_scores.csv`` (with the flags that name each cell) and the report into
    ``run.out``. ``marked``: students whose submission is flagged in the gradebook."""
    by_student = {r.student: r for r in run.results}
    for r in run.results:
        if r.student in marked and not r.flags:
            r.flags = [FLAGGED_BY_HAND]
    pending = {}
    for cell in run.cells:
        pending[cell.student] = pending.get(cell.student, 0) + cell.pending
        cell.flags = "; ".join(cell_flags(by_student[cell.student].flags, cell.grade_id))
    for row in rows:
        res = by_student[row["student_id"]]
        row["status"] = report_status(res)
        row["notes"] = res.notes
        row["flags"] = "; ".join(res.flags)
        row["needs_manual_grade"] = pending.get(row["student_id"], 0)
    gbk.write_csv(run.out / "grades.csv", gbk.GRADE_COLUMNS, rows)
    gbk.write_csv(run.out / "cell_scores.csv", gbk.CELL_COLUMNS, [asdict(c) for c in run.cells])
    klass = roundtrip.load(run.out)
    if klass is not None:
        run.lms_files = roundtrip.write_lms_files(run.out, run.assignment, rows, klass)
        run.lms_notes = klass.lines()
    write_report(run)
