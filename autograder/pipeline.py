"""Grading submissions with nbgrader (releasing is in ``release.py``, re-exported here).

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

Workers and clusters (``dispatch.py``): every submission is autograded in a staging area of
its own (a scratch course and SQLite gradebook), in this process (``workers=1``), in
``workers`` local processes, or on the Dask cluster at ``scheduler``; this process alone
writes each result into the real gradebook, in one transaction per student, then records it
in ``state.json``. A run stopped anywhere (Ctrl-C, SIGKILL) keeps what was recorded; the next
run grades the rest.
"""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

from . import dispatch
from . import gradebook as gbk
from .assignments import spec_for
from .config import make_api, nbgrader_session, write_config
from .execute import read_sidecar
from .protect import read_flags
from .execute import summary as execution_summary
from .feedback import hidden_tests_redacted
from .notebooks import solution_source
from .outcome import describe_notebook, failure_reason
from .preflight import read_timestamp, release_reference, sanitize
from .release import (PipelineError, generate_assignment, grade_ids,  # noqa: F401
                      release, release_notebook, stage_course)
from .sandbox import Limits, default_limits, probe
from .submissions import Submission, collect

# Preflight notes that say the student changed what they may not change (preflight.py).
_TAMPERED = re.compile(r"(were|was) (edited|deleted) by the student|nbgrader metadata of .* did not match")

# Bump when a change to the pipeline should re-grade submissions that state.json calls unchanged.
STATE_VERSION = 2


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


@dataclass
class GradeRun:
    """Everything a report needs about one grading run."""

    assignment: str
    out: Path
    parts: list[tuple[str, float]]
    results: list[StudentResult] = field(default_factory=list)
    cells: list[gbk.CellScore] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def max_score(self) -> float:
        return sum(points for _, points in self.parts)


class _State:
    """``out/state.json``: per student, the notebook hash and outcome of the last grading."""

    def __init__(self, path: Path, settings: dict):
        self.path, self.settings = path, settings
        data = json.loads(path.read_text()) if path.exists() else {}
        same = data.get("settings") == settings
        self.students: dict[str, dict] = data.get("students", {}) if same else {}
        self.fresh = not same

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"settings": self.settings, "students": self.students},
                                  indent=1, sort_keys=True))
        os.replace(tmp, self.path)


def _grade_one(api, root: Path, out: Path, assignment: str, sub: Submission,
               db_url: str, parts, show_hidden: bool = False) -> StudentResult:
    """Autograde one student's submission in the staged course and copy the feedback out."""
    start = time.perf_counter()
    result = StudentResult(sub.student, "failed", sha256=sub.sha256)
    for folder in ("submitted", "autograded", "feedback"):
        shutil.rmtree(root / folder / sub.student / assignment, ignore_errors=True)
    feedback = out / "feedback" / sub.student / f"{assignment}.html"
    feedback.unlink(missing_ok=True)
    if sub.problem:
        result.notes = sub.problem
    else:
        try:
            _autograde(api, root, out, assignment, sub, db_url, parts, result, show_hidden)
        except Exception as exc:  # a bug or an nbgrader surprise must not stop the others
            result.status, result.notes = "failed", f"grading error: {type(exc).__name__}: {exc}"
    if result.status == "failed":
        gbk.discard_submission(db_url, assignment, sub.student)
    result.notes = "; ".join(filter(None, [result.notes, sub.note]))
    result.seconds = time.perf_counter() - start
    return result


def _autograde(api, root: Path, out: Path, assignment: str, sub: Submission, db_url: str,
               parts, result: StudentResult, show_hidden: bool = False) -> None:
    """Submit, autograde and generate feedback for one student; fill in ``result``."""
    dest = root / "submitted" / sub.student / assignment
    dest.mkdir(parents=True)
    # Preflight (preflight.py): a clean copy without outputs, or the reason it cannot be graded.
    clean, checks = sanitize(sub.notebook, release_reference(root, assignment),
                             dest / f"{assignment}.ipynb")
    stamp, stamp_note = read_timestamp(sub.notebook.parent)  # nbgrader's submission time
    checks = [*checks, stamp_note] if stamp_note else checks
    # Edited or deleted test cells and rewritten nbgrader metadata were repaired, but a human
    # should know: they are flags, not notes.
    result.flags = [c for c in checks if _TAMPERED.search(c)]
    checks = [c for c in checks if c not in result.flags]
    if clean is None:
        result.notes = "; ".join(checks)
        return
    if stamp is not None:
        (dest / "timestamp.txt").write_text(stamp + "\n")
    graded = api.autograde(assignment, sub.student, force=True, create=True)
    if not graded["success"]:
        result.notes = "; ".join([*checks, "autograde failed: " + failure_reason(graded)])
        return
    cells = gbk.cell_scores(db_url, assignment, [sub.student], [g for g, _ in parts])
    autograded = root / "autograded" / sub.student / assignment / f"{assignment}.ipynb"
    result.status = "graded"
    result.notes = "; ".join(filter(None, [*checks, describe_notebook(autograded, parts, cells)]))
    records = read_sidecar(autograded.parent)  # restarts, skipped cells (this notebook's only)
    ran = execution_summary({assignment: records.get(assignment)})
    result.notes = "; ".join(filter(None, [result.notes, ran]))
    result.flags += read_flags(autograded.parent)  # tampering the guard saw (protect.py)
    with hidden_tests_redacted(autograded, show_hidden=show_hidden):
        fb = api.generate_feedback(assignment, sub.student, force=True)
    html = root / "feedback" / sub.student / assignment / f"{assignment}.html"
    if fb["success"] and html.exists():
        (out / "feedback" / sub.student).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(html, out / "feedback" / sub.student / f"{assignment}.html")
    else:
        result.notes = "; ".join(filter(None, [result.notes, "no feedback: " + failure_reason(fb)]))


def grade(assignment: str, submissions: Path, out: Path, *, source: Path | None = None,
          db_url: str | None = None, timeout: int | None = None, force: bool = False,
          jobs: int | None = None, show_hidden: bool = False, echo=print,
          workers: int = 1, scheduler: str | None = None, progress=None,
          unsafe: bool = False, limits: Limits | dict | None = None) -> GradeRun:
    """Grade every submission in ``submissions`` into ``out`` (see the module docstring).

    ``workers`` > 1 autogrades that many students at once, each in its own process and staging
    area (``jobs`` is the old name); ``scheduler`` (a Dask address) grades on that cluster
    instead. ``progress`` (a ``dispatch.Progress``) shows a live count; the per-student lines
    then go through it instead of ``echo``.
    ``show_hidden`` keeps the hidden tests in the students' feedback (see ``feedback.py``).
    Kernels run in the sandbox (``sandbox.py``) within ``limits`` (a ``sandbox.Limits``, or a
    dict of fields overriding ``sandbox.default_limits(timeout)``); where the sandbox cannot
    start this raises ``PipelineError``, unless ``unsafe`` (plain kernels, a loud warning).
    """
    from .report import write_report

    workers = max(1, int(jobs or workers))
    begin = time.perf_counter()
    source = Path(source).resolve() if source else solution_source(assignment)
    if not Path(submissions).exists():
        raise FileNotFoundError(f"no submissions at {submissions}")
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    root = out / "course"
    timeout = int(timeout or spec_for(assignment).timeout)
    db_url = db_url or f"sqlite:///{out / 'gradebook.db'}"
    if not isinstance(limits, Limits):
        limits = dataclasses.replace(default_limits(timeout), **(limits or {}))
    _check_sandbox(unsafe, echo)
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one grading run per output folder at a time
        nb = stage_course(root, assignment, source, db_url=db_url, timeout=timeout)
        write_config(root, db_url=db_url, timeout=timeout, unsafe=unsafe, limits=limits,
                     pattern=spec_for(assignment).ignore_pattern())  # the sandbox and limits
        parts = grade_ids(nb)
        digest = hashlib.sha256(nbformat.writes(nb).encode()).hexdigest()
        settings = {"version": STATE_VERSION, "assignment": assignment, "source": digest,
                    "timeout": timeout, "db_url": db_url,
                    "stderr_pattern": spec_for(assignment).ignore_pattern(),
                    "show_hidden": show_hidden, "sandbox": not unsafe,
                    "limits": dataclasses.asdict(limits)}
        state = _State(out / "state.json", settings)
        subs = collect(Path(submissions), assignment, out / "incoming")
        run = GradeRun(assignment, out, parts)
        with nbgrader_session(out / "grading.log") as log:
            log.write(f"=== grading {assignment}: {len(subs)} submissions from {submissions}\n")
            api = make_api(root)
            if (state.fresh or not (root / "release" / assignment).exists()
                    or not gbk.has_assignment(db_url, assignment)):
                generate_assignment(api, assignment)
                state.students = {}
            results, todo = {}, []
            for sub in subs:
                old = state.students.get(sub.student)
                if (not force and old and old["status"] == "graded" and not sub.problem
                        and old["sha256"] == sub.sha256
                        and gbk.has_assignment(db_url, assignment, sub.student)):
                    results[sub.student] = StudentResult(**{**old, "cached": True})
                else:
                    todo.append(sub)
                    state.students.pop(sub.student, None)  # if interrupted: graded again
            state.save()
            show = progress.update if progress is not None else lambda r: echo("  " + r.line())
            if progress is not None:
                progress.start(len(subs), f"grading {assignment}")
            for res in results.values():
                _score(res, db_url, assignment, run.max_score)
                show(res)
            stream = _grade_all(root, out, assignment, parts, show_hidden, todo, workers,
                                scheduler)
            try:
                for graded in stream:
                    log.write(graded.log)
                    res = dispatch.commit(graded, root, out, assignment, db_url)
                    state.students[res.student] = {
                        k: v for k, v in asdict(res).items()
                        if k in ("student", "status", "notes", "sha256", "seconds", "flags")}
                    state.save()
                    results[res.student] = res
                    _score(res, db_url, assignment, run.max_score)
                    show(res)
            finally:
                stream.close()  # on Ctrl-C or an error: stop the workers before cleaning up
                dispatch.cleanup(out)
                if progress is not None:
                    progress.close()
            run.results = [results[s.student] for s in subs]
            students = [r.student for r in run.results]
            run.cells = gbk.cell_scores(db_url, assignment, students, [g for g, _ in parts])
            rows = gbk.export_rows(db_url, assignment, students)
        by_student = {r.student: r for r in run.results}
        for row in rows:
            row["status"] = by_student[row["student_id"]].status
            row["notes"] = by_student[row["student_id"]].notes
        gbk.write_csv(out / "grades.csv", gbk.GRADE_COLUMNS, rows)
        gbk.write_csv(out / "cell_scores.csv", gbk.CELL_COLUMNS, [asdict(c) for c in run.cells])
        run.seconds = time.perf_counter() - begin
        write_report(run)
    return run


def _grade_all(root: Path, out: Path, assignment: str, parts, show_hidden: bool,
               todo: list[Submission], workers: int, scheduler: str | None):
    """Yield a ``dispatch.Graded`` per submission in ``todo`` as each is ready (not committed)."""
    if not todo:
        return
    stage = dispatch.prepare(root, out, assignment, parts, show_hidden=show_hidden,
                             local=not scheduler)
    yield from dispatch.results(stage, todo, workers=workers, scheduler=scheduler)


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


def _score(res: StudentResult, db_url: str, assignment: str, max_score: float) -> None:
    """Fill in the total score from the gradebook (0 for a failed submission)."""
    res.max_score = max_score
    cells = gbk.cell_scores(db_url, assignment, [res.student], []) if res.status == "graded" else []
    res.score = sum(c.score or 0.0 for c in cells)
