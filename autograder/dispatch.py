"""Spreading submissions over worker processes or a Dask cluster; one gradebook writer.

The unit of work is ``job.grade_submission`` ``(stage, task) -> Graded``: one student's
submission, graded from plain data in a private *staging area* (a throw-away nbgrader course
directory with its own scratch SQLite gradebook), returned as plain data (``job.py``). Every way
of running it calls that same function:

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
``nbgrader_config.py`` into a ``job.Stage``.
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

import os
import shutil
import signal
import sys
import time
from pathlib import Path

from . import gradebook as gbk
from .config import make_api, nbgrader_session
from .job import (COURSE_FOLDERS, TIMING_PHASES, Graded, Stage, StudentResult, Task,
                  feedback_page, grade_submission, write_files, write_staging_config)
from .pool import close_pools
from .release import generate_assignment
from .submissions import Submission

WORK = "work"  # out/work: the parent's template and the local staging areas
TIMINGS = "timings.csv"  # out/timings.csv: seconds per phase of each student graded by the run


def prepare(root: Path, out: Path, assignment: str, parts, *, show_hidden: bool = False,
            local: bool = True, duedate: str | None = None,
            extensions: dict[str, float] | None = None) -> Stage:
    """Build the template course in ``out/work/template`` and pack it into a ``Stage``.

    ``root`` is the staged main course (``stage_course`` has written its config and source).
    ``local``: stage jobs under ``out/work`` (else in each worker's temporary folder).
    ``duedate`` (ISO, UTC) goes into the template's gradebook and ``extensions`` (seconds per
    student) into the stage, so each job's autograde applies nbgrader's late penalty.
    """
    work = Path(out) / WORK
    cleanup(out)
    template = work / "template" / "course"
    (template / "source").mkdir(parents=True)
    shutil.copytree(root / "source" / assignment, template / "source" / assignment)
    config = (root / "nbgrader_config.py").read_text()
    write_staging_config(template, config)
    with nbgrader_session(Path(out) / "grading.log"):
        generate_assignment(make_api(template), assignment)
        gbk.set_duedate(f"sqlite:///{template / 'gradebook.db'}", assignment, duedate)
    files = {str(p.relative_to(template)): p.read_bytes()
             for folder in ("source", "release")
             for p in sorted((template / folder).rglob("*")) if p.is_file()}
    files["gradebook.db"] = (template / "gradebook.db").read_bytes()
    shutil.rmtree(work / "template", ignore_errors=True)
    (Path(out) / TIMINGS).write_text(",".join(["student", "worker", *TIMING_PHASES]) + "\n")
    return Stage(assignment, config, files, list(parts), show_hidden,
                 str(work) if local else "", dict(extensions or {}))


def cleanup(out: Path) -> None:
    """Remove ``out/work`` (the template and any staging area a killed run left behind)."""
    shutil.rmtree(Path(out) / WORK, ignore_errors=True)


def commit(graded: Graded, root: Path, out: Path, assignment: str, db_url: str) -> StudentResult:
    """Write one job's outcome into the main course and gradebook; return its result.

    Files first (the student's folders are replaced), then the gradebook in one transaction;
    the caller records the student in ``state.json`` last. A run killed anywhere in between
    leaves the student out of ``state.json``, so the next run grades them again and replaces
    both (``gradebook.store`` updates rows in place: no duplicates).
    """
    start = time.perf_counter()
    res = graded.result
    for folder in COURSE_FOLDERS:
        shutil.rmtree(root / folder / res.student / assignment, ignore_errors=True)
    feedback = Path(out) / "feedback" / res.student / f"{assignment}.html"
    feedback.unlink(missing_ok=True)
    write_files(root, graded.files)
    html = feedback_page(root, assignment, res.student)
    if html.exists():
        feedback.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(html, feedback)
    gbk.store(db_url, assignment, res.student, graded.record, flagged=res.flagged)
    graded.timings["commit"] = round(time.perf_counter() - start, 3)
    _write_timings(Path(out) / TIMINGS, graded)
    return res


def _write_timings(path: Path, graded: Graded) -> None:
    """Append the student's row to ``out/timings.csv`` (``prepare`` writes its header)."""
    if not path.exists() or not graded.timings.get("total"):
        return  # no header (nothing was staged), or a job that never ran
    t = graded.timings
    row = [graded.result.student, str(t.get("worker", "")),
           *(f"{t[p]:.3f}" if p in t else "" for p in TIMING_PHASES)]
    with open(path, "a") as f:
        f.write(",".join(row) + "\n")


def results(stage: Stage, subs: list[Submission], *, workers: int = 1,
            scheduler: str | None = None):
    """Yield a ``Graded`` per submission as each is ready (see the module docstring)."""
    tasks = [Task.of(sub) for sub in subs]
    if scheduler:
        yield from _on_dask(stage, tasks, scheduler)
    elif workers <= 1 or len(tasks) <= 1:
        try:
            for task in tasks:
                yield grade_submission(stage, task)
        finally:  # the kernel started ahead for a next student that will not come
            close_pools()
    else:
        yield from _in_processes(stage, tasks, workers)


def _worker_init() -> None:
    """Local workers leave Ctrl-C to the parent, which then terminates them: SIGTERM ends the
    worker like an exit, so its kernels (the one in use and the one started ahead) are shut down
    and their folders removed (``pool.py``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)


def _exit_on_sigterm(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills at once
    sys.exit(128 + signum)


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
                yield Graded.failed(task.sub.student, "the grading worker process died (re-run to retry)")
            except Exception as exc:  # a bug in one job must not stop the others
                yield Graded.failed(task.sub.student, f"grading error: {type(exc).__name__}: {exc}")
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
                    yield Graded.failed(task.sub.student, "grading error on the cluster: "
                                                          f"{type(exc).__name__}: {exc}")
        except BaseException:
            client.cancel(list(futures))
            raise
    finally:
        client.close()
