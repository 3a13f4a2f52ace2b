"""Spreading submissions over worker processes or a Dask cluster; one gradebook writer.

The unit of work is :func:`grade_submission` ``(stage, task) -> Graded``: one student's
submission, graded from plain data in a private *staging area* (a throw-away nbgrader course
directory with its own scratch SQLite gradebook), returned as plain data. Every way of running
it calls that same function:

- ``workers == 1``: in this process, one submission after the other;
- ``workers == N``: in N spawned local processes (``concurrent.futures.ProcessPoolExecutor``);
- ``scheduler == ADDRESS``: on the Dask cluster at ADDRESS (``distributed.Client``), one Dask
  task per submission; the stage is scattered to the workers once.

The *parent* (the ``attnkit grade`` process) is the only writer of the real gradebook:
:func:`commit` writes each returned result into it in one transaction (``gradebook.store``)
and copies the submitted and autograded notebooks and the feedback into the main course tree.
So the default SQLite gradebook is safe with any number of workers, and on a Dask cluster too:
no worker ever opens it. PostgreSQL (``--db postgresql://...``) is what to use when several
people or tools (formgrader, several courses) share the gradebook while grading runs; the
grading run itself does not need it.

Why the stage is data, not a path: a Dask worker on another machine shares no folder with the
parent. :func:`prepare` runs nbgrader's ``generate_assignment`` once into a template course
(``out/work/template``) and packs its ``source/`` and ``release/`` folders, its scratch
gradebook (the assignment, its cells and checksums) and the main course's
``nbgrader_config.py`` into a :class:`Stage`.
A job unpacks it into a fresh staging folder; the staging ``nbgrader_config.py`` loads the main
one and overrides only the course root and the gradebook URL, so every other setting (time
limits, sandbox, stderr patterns) is the same as in the main course. Dask workers must run the
same installation (same paths to the virtualenv and the kit) as the parent.

Staging areas: local jobs stage under ``out/work/``, which the parent empties at the start and
the end of every run (also after Ctrl-C; after a SIGKILL the next run empties it). Jobs on a
Dask cluster stage in the worker's temporary folder (``attnkit-stage-*``) and remove it when
done; only a worker killed mid-job leaves one behind.

Interrupts: local workers ignore SIGINT; on Ctrl-C (``KeyboardInterrupt``) the parent cancels
what has not started, terminates the workers (their kernels exit with them: ipykernel's parent
poller, or bubblewrap's ``--die-with-parent``) and re-raises. What was committed stays; the
students in flight were never committed and are graded by the next run. On a Dask cluster,
Ctrl-C cancels the tasks; one already running finishes on its worker and its result is
dropped. If a local worker dies (killed, out of memory), the pool breaks and the students not
yet finished are failed with a note; the next run retries them, like any failed submission.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import gradebook as gbk
from .config import make_api, nbgrader_session
from .release import generate_assignment
from .submissions import Submission

WORK = "work"  # out/work: the parent's template and the local staging areas
_FOLDERS = ("submitted", "autograded", "feedback")  # per-student folders of a course tree

_STAGING_CONFIG = '''\
"""An attnkit staging area: the main course's settings, its own root and gradebook."""
c = get_config()  # noqa: F821
load_subconfig("base_config.py")  # noqa: F821  (the main course's nbgrader_config.py)
c.CourseDirectory.root = {root!r}
c.CourseDirectory.db_url = {db_url!r}
c.Exchange.root = {exchange!r}
'''


@dataclass(frozen=True)
class Stage:
    """Everything a job needs besides the submission, as plain data (it travels to Dask workers).

    ``files``: course-relative path -> bytes of the template course (``source/<a>/...``,
    ``release/<a>/...`` and ``gradebook.db``, the scratch gradebook after
    ``generate_assignment``); ``config``: the text
    of the main course's ``nbgrader_config.py``; ``scratch``: the folder to stage in ('' = the
    system temporary folder).
    """

    assignment: str
    config: str
    files: dict[str, bytes]
    parts: list[tuple[str, float]]
    show_hidden: bool = False
    scratch: str = ""


@dataclass(frozen=True)
class Task:
    """One student's submission as data: the ``Submission`` and its notebook's bytes."""

    sub: Submission
    notebook: bytes | None = None
    timestamp: bytes | None = None

    @classmethod
    def of(cls, sub: Submission) -> "Task":
        """Read the notebook, and ``timestamp.txt`` beside it when it is a valid one."""
        from .preflight import read_timestamp

        if sub.problem or sub.notebook is None:
            return cls(sub)
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
    ``feedback/...``) to bytes; ``log`` is nbgrader's log of this job.
    """

    result: object  # pipeline.StudentResult (not imported here: pipeline imports this module)
    record: dict | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    log: str = ""


# ---------------------------------------------------------------- the job (runs anywhere)

def _unpack(stage: Stage, staging: Path) -> tuple[Path, str]:
    """Write the template course into ``staging/course``; return its root and gradebook URL."""
    root = staging / "course"
    for rel, data in stage.files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    db_url = f"sqlite:///{root / 'gradebook.db'}"
    (root / "base_config.py").write_text(stage.config)
    (root / "nbgrader_config.py").write_text(_STAGING_CONFIG.format(
        root=str(root), db_url=db_url, exchange=str(root / "exchange")))
    return root, db_url


def _course_files(root: Path, student: str, assignment: str) -> dict[str, bytes]:
    """The student's submitted, autograded and feedback files, by course-relative path."""
    files = {}
    for folder in _FOLDERS:
        base = root / folder / student / assignment
        if base.is_dir():
            for path in sorted(p for p in base.rglob("*") if p.is_file() and not p.is_symlink()):
                files[str(path.relative_to(root))] = path.read_bytes()
    return files


def grade_submission(stage: Stage, task: Task) -> Graded:
    """Grade one submission in a private staging area and return the outcome as data.

    The one job of every kind of run (serial, local workers, Dask). It never touches the real
    gradebook or the main course; the staging area is removed before it returns.
    """
    from .pipeline import StudentResult, _grade_one

    start = time.perf_counter()
    sub = task.sub
    if sub.problem or task.notebook is None:
        notes = "; ".join(filter(None, [sub.problem or "no notebook (.ipynb) found", sub.note]))
        return Graded(StudentResult(sub.student, "failed", notes=notes))
    parent = Path(stage.scratch) if stage.scratch else Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"attnkit-stage-{sub.student}-", dir=parent))
    try:
        root, db_url = _unpack(stage, staging)
        incoming = staging / "incoming" / sub.student
        incoming.mkdir(parents=True)
        notebook = incoming / sub.notebook.name
        notebook.write_bytes(task.notebook)
        if task.timestamp is not None:
            (incoming / "timestamp.txt").write_bytes(task.timestamp)
        local = dataclasses.replace(sub, notebook=notebook)
        log_path = staging / "grading.log"
        with nbgrader_session(log_path):
            result = _grade_one(make_api(root), root, staging, stage.assignment, local, db_url,
                                stage.parts, stage.show_hidden)
        graded = Graded(result, log=log_path.read_text(errors="replace"))
        if result.status == "graded":
            graded.record = gbk.read_submission(db_url, stage.assignment, sub.student)
            graded.files = _course_files(root, sub.student, stage.assignment)
        result.seconds = time.perf_counter() - start
        return graded
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ---------------------------------------------------------------- the parent

def prepare(root: Path, out: Path, assignment: str, parts, *, show_hidden: bool = False,
            local: bool = True) -> Stage:
    """Build the template course in ``out/work/template`` and pack it into a ``Stage``.

    ``root`` is the staged main course (``stage_course`` has written its config and source).
    ``local``: stage jobs under ``out/work`` (else in each worker's temporary folder).
    """
    work = Path(out) / WORK
    cleanup(out)
    template = work / "template" / "course"
    (template / "source").mkdir(parents=True)
    shutil.copytree(root / "source" / assignment, template / "source" / assignment)
    config = (root / "nbgrader_config.py").read_text()
    (template / "base_config.py").write_text(config)
    db_url = f"sqlite:///{template / 'gradebook.db'}"
    (template / "nbgrader_config.py").write_text(_STAGING_CONFIG.format(
        root=str(template), db_url=db_url, exchange=str(template / "exchange")))
    with nbgrader_session(Path(out) / "grading.log"):
        generate_assignment(make_api(template), assignment)
    files = {str(p.relative_to(template)): p.read_bytes()
             for folder in ("source", "release")
             for p in sorted((template / folder).rglob("*")) if p.is_file()}
    files["gradebook.db"] = (template / "gradebook.db").read_bytes()
    shutil.rmtree(work / "template", ignore_errors=True)
    return Stage(assignment, config, files, list(parts), show_hidden,
                 str(work) if local else "")


def cleanup(out: Path) -> None:
    """Remove ``out/work`` (the template and any staging area a killed run left behind)."""
    shutil.rmtree(Path(out) / WORK, ignore_errors=True)


def commit(graded: Graded, root: Path, out: Path, assignment: str, db_url: str):
    """Write one job's outcome into the main course and gradebook; return its StudentResult.

    Files first (the student's folders are replaced), then the gradebook in one transaction;
    the caller records the student in ``state.json`` last. A run killed anywhere in between
    leaves the student out of ``state.json``, so the next run grades them again and replaces
    both (``gradebook.store`` updates rows in place: no duplicates).
    """
    res = graded.result
    for folder in _FOLDERS:
        shutil.rmtree(root / folder / res.student / assignment, ignore_errors=True)
    feedback = Path(out) / "feedback" / res.student / f"{assignment}.html"
    feedback.unlink(missing_ok=True)
    for rel, data in graded.files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    html = root / "feedback" / res.student / assignment / f"{assignment}.html"
    if html.exists():
        feedback.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(html, feedback)
    gbk.store(db_url, assignment, res.student, graded.record)
    return res


def _failed(task: Task, reason: str) -> Graded:
    from .pipeline import StudentResult
    return Graded(StudentResult(task.sub.student, "failed", notes=reason))


def results(stage: Stage, subs: list[Submission], *, workers: int = 1,
            scheduler: str | None = None):
    """Yield a ``Graded`` per submission as each is ready (see the module docstring)."""
    tasks = [Task.of(sub) for sub in subs]
    if scheduler:
        yield from _on_dask(stage, tasks, scheduler)
    elif workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield grade_submission(stage, task)
    else:
        yield from _in_processes(stage, tasks, workers)


def _worker_init() -> None:
    """Local workers leave Ctrl-C to the parent (which then terminates them)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _in_processes(stage: Stage, tasks: list[Task], workers: int):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    context = multiprocessing.get_context("spawn")  # no fork of a process holding kernels
    pool = ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=context,
                               initializer=_worker_init)
    futures = {pool.submit(grade_submission, stage, task): task for task in tasks}
    try:
        for future in as_completed(futures):
            task = futures[future]
            try:
                yield future.result()
            except BrokenProcessPool:
                yield _failed(task, "the grading worker process died (re-run to retry)")
            except Exception as exc:  # a bug in one job must not stop the others
                yield _failed(task, f"grading error: {type(exc).__name__}: {exc}")
    except BaseException:  # Ctrl-C, or the consumer stopped early: stop the workers now
        _terminate(pool)
        raise
    pool.shutdown(wait=True)


def _terminate(pool) -> None:
    """Cancel what has not started and end the worker processes (SIGTERM, then SIGKILL)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
    deadline = time.monotonic() + 5
    for proc in processes:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join(1)


def _on_dask(stage: Stage, tasks: list[Task], scheduler: str):
    """One Dask task per submission on the cluster at ``scheduler``; results as they finish."""
    try:
        from distributed import Client, as_completed
    except ImportError as exc:  # a declared dependency; say so clearly if it is missing
        raise RuntimeError("--scheduler needs the 'distributed' package") from exc
    client = Client(scheduler, timeout="30s")
    try:
        shared = client.scatter(stage, broadcast=True)
        futures = {}
        for task in tasks:
            key = f"attnkit-grade-{task.sub.student}-{os.urandom(4).hex()}"
            futures[client.submit(grade_submission, shared, task, key=key, pure=False,
                                  retries=0)] = task
        try:
            for future in as_completed(list(futures)):
                task = futures[future]
                try:
                    yield future.result()
                except Exception as exc:  # the job raised, or its worker died (KilledWorker)
                    yield _failed(task, "grading error on the cluster: "
                                        f"{type(exc).__name__}: {exc}")
        except BaseException:
            client.cancel(list(futures))
            raise
    finally:
        client.close()


# ---------------------------------------------------------------- progress

class Progress:
    """A live count of graded / failed / flagged submissions while a run goes on.

    On a terminal (``stream.isatty()``) a tqdm bar with the counts; elsewhere (logs, CI, pipes)
    one plain line per student with the counts so far. ``flagged``: the result has ``flags``.
    """

    def __init__(self, stream=None, bar: bool | None = None):
        self.stream = stream or sys.stdout
        self.bar = self.stream.isatty() if bar is None else bar
        self.total = self.done = self.graded = self.failed = self.flagged = 0
        self._tqdm = None

    def start(self, total: int, label: str = "grading") -> None:
        self.total, self.done = total, 0
        self.graded = self.failed = self.flagged = 0
        if self.bar:
            from tqdm import tqdm
            self._tqdm = tqdm(total=total, desc=label, unit="sub", file=self.stream,
                              dynamic_ncols=True, leave=True)

    def counts(self) -> str:
        return f"{self.graded} graded, {self.failed} failed, {self.flagged} flagged"

    def update(self, result) -> None:
        self.done += 1
        if result.status == "graded":
            self.graded += 1
        else:
            self.failed += 1
        self.flagged += bool(getattr(result, "flags", None))
        line = "  " + result.line()
        if self._tqdm is not None:
            self._tqdm.write(line, file=self.stream)
            self._tqdm.set_postfix_str(self.counts(), refresh=False)
            self._tqdm.update(1)
        else:
            print(f"{line}  [{self.done}/{self.total}: {self.counts()}]", file=self.stream,
                  flush=True)

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None
