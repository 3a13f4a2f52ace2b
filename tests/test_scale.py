"""Grading at scale: workers, interrupts, PostgreSQL and Dask give the grades of a plain run.

Six a1 students are copies of the bundled samples under other names (full=12, partial=7,
crash_early=5, blank=0 points). ``serial`` grades them once in this process with one worker;
every other way of running must give byte-identical ``grades.csv`` and ``cell_scores.csv``:

- two worker processes, interrupted with Ctrl-C (SIGINT to the process group, as a terminal
  sends it) and then killed with SIGKILL, each after a student or two were recorded, and
  re-run to the end;
- a Dask ``LocalCluster`` (2 worker processes on loopback) with the gradebook on a real
  PostgreSQL server started on 127.0.0.1 (``tests/pg.py``), then a re-run from the command line.

Fast tests check the transactional gradebook write and the progress display on their own.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autograder import gradebook as gbk
from autograder.job import StudentResult
from autograder.notebooks import ROOT, read_source, solution_source
from autograder.pipeline import grade
from autograder.progress import Progress
from autograder.release import grade_ids
from autograder.samples import EXPECTED

sys.path.insert(0, str(Path(__file__).parent))
import pg  # noqa: E402

A1 = "a1_attention_basics"
SAMPLES = ROOT / "autograder" / "samples" / A1
STUDENTS = {"ana": "full", "ben": "partial", "cleo": "crash_early", "dev": "blank",
            "eli": "full", "fay": "partial"}
TOTALS = {s: EXPECTED[A1][kind] for s, kind in STUDENTS.items()}
CELLS = len(grade_ids(read_source(solution_source(A1))))  # grade cells of a1: rows per submission
pytestmark = pytest.mark.xdist_group(name="scale")


def _gradebook(url):
    from nbgrader.api import Gradebook
    return Gradebook(url, "attnkit")


def _submissions(gb, assignment):
    """student -> number of grade rows, for every submission of ``assignment``."""
    return {s.student.id: sum(len(nb.grades) for nb in s.notebooks)
            for s in gb.assignment_submissions(assignment)}


# Session scope, not module: with pytest-xdist the worker may run other modules' tests between
# these, and a module-scoped fixture would be rebuilt each time (another serial grading run).
@pytest.fixture(scope="session")
def subs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("scale") / "subs"
    for student, kind in STUDENTS.items():
        (folder / student).mkdir(parents=True)
        shutil.copyfile(SAMPLES / kind / f"{A1}.ipynb", folder / student / f"{A1}.ipynb")
    return folder


@pytest.fixture(scope="session")
def serial(subs) -> Path:
    out = subs.parent / "serial"
    run = grade(A1, subs, out, workers=1, echo=lambda line: None)
    assert {r.student: r.score for r in run.results} == pytest.approx(TOTALS)
    return out


def _same_outputs(out: Path, reference: Path) -> None:
    for name in ("grades.csv", "cell_scores.csv"):
        assert (out / name).read_text() == (reference / name).read_text(), name
    for student in STUDENTS:
        assert (out / "feedback" / student / f"{A1}.html").exists(), student
        assert (out / "course" / "autograded" / student / A1 / f"{A1}.ipynb").exists(), student
    assert not (out / "work").exists(), "a staging area was left behind"


# ------------------------------------------------------------------ fast

@pytest.fixture()
def toy_gradebook(tmp_path, monkeypatch):
    """A gradebook with assignment 'toy': notebook 'toy', grade cells a (2 pts) and b (1 pt)."""
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent),
                                                os.environ["PATH"]]))  # nbgrader runs alembic
    url = f"sqlite:///{tmp_path / 'gb.db'}"
    with _gradebook(url) as gb:
        gb.add_assignment("toy")
        gb.add_notebook("toy", "toy")
        for name, points in (("a", 2), ("b", 1)):
            gb.add_grade_cell(name, "toy", "toy", max_score=points, cell_type="code")
        gb.add_solution_cell("answer", "toy", "toy")
    return url


def _record(a, b, comment=None):
    return {"timestamp": "2024-05-01T10:00:00", "notebooks": {"toy": {
        "late_submission_penalty": None,
        "grades": {"a": {"auto_score": a, "needs_manual_grade": False},
                   "b": {"auto_score": b, "needs_manual_grade": False}},
        "comments": {"answer": {"auto_comment": comment}}}}}


def test_store_updates_in_place_and_keeps_manual_grades(toy_gradebook):
    gbk.store(toy_gradebook, "toy", "zoe", _record(2.0, 0.0, "No response."))
    assert gbk.read_submission(toy_gradebook, "toy", "zoe")["notebooks"]["toy"]["grades"]["a"] \
        == {"auto_score": 2.0, "needs_manual_grade": False}
    with _gradebook(toy_gradebook) as gb:
        gb.find_grade("b", "toy", "toy", "zoe").manual_score = 0.5  # a human's grade
        gb.db.commit()
    gbk.store(toy_gradebook, "toy", "zoe", _record(1.0, 1.0))
    with _gradebook(toy_gradebook) as gb:
        assert _submissions(gb, "toy") == {"zoe": 2}  # one row per cell, however often
        assert gb.find_grade("a", "toy", "toy", "zoe").score == 1.0
        assert gb.find_grade("b", "toy", "toy", "zoe").score == 0.5  # the human's grade stays
        assert gb.find_comment("answer", "toy", "toy", "zoe").auto_comment is None
    gbk.store(toy_gradebook, "toy", "zoe", None)  # failed now: no submission, student kept
    with _gradebook(toy_gradebook) as gb:
        assert _submissions(gb, "toy") == {} and gb.find_student("zoe")


def test_store_is_all_or_nothing(toy_gradebook):
    gbk.store(toy_gradebook, "toy", "zoe", _record(2.0, 1.0))
    bad = _record(0.0, "not a number")  # the second grade fails at commit
    from sqlalchemy.exc import StatementError
    with pytest.raises(StatementError, match="not a number"):
        gbk.store(toy_gradebook, "toy", "zoe", bad)
    with pytest.raises(StatementError, match="not a number"):
        gbk.store(toy_gradebook, "toy", "new", bad)
    with _gradebook(toy_gradebook) as gb:
        assert gb.find_grade("a", "toy", "toy", "zoe").score == 2.0  # untouched
        assert _submissions(gb, "toy") == {"zoe": 2}
        assert [s.id for s in gb.students] == ["zoe"]  # 'new' rolled back with its grades


def test_progress_counts_graded_failed_flagged(tmp_path):
    with open(tmp_path / "log.txt", "w") as stream:
        progress = Progress(stream)
        assert not progress.bar  # a file is not a terminal: plain lines
        progress.start(3)
        progress.update(StudentResult("a", "graded", score=3, max_score=3))
        progress.update(StudentResult("b", "failed", notes="no notebook (.ipynb) found"))
        progress.update(StudentResult("c", "graded", flags=["patched torch.testing"]))
        progress.close()
    lines = (tmp_path / "log.txt").read_text().splitlines()
    assert lines[0].endswith("[1/3: 1 graded, 0 failed, 0 flagged]")
    assert "no notebook" in lines[1] and lines[1].endswith("[2/3: 1 graded, 1 failed, 0 flagged]")
    assert lines[2].endswith("[3/3: 2 graded, 1 failed, 1 flagged]")


def test_progress_bar_on_a_terminal():
    import io

    stream = io.StringIO()
    progress = Progress(stream, bar=True)
    progress.start(2)
    progress.update(StudentResult("a", "graded", score=3, max_score=3))
    progress.update(StudentResult("b", "failed", notes="kernel died"))
    progress.close()
    text = stream.getvalue()
    assert "a: graded 3/3" in text and "b: failed" in text
    assert "2/2" in text and "1 graded, 1 failed, 0 flagged" in text  # the bar and its counts


def test_workers_option_and_its_old_name():
    from autograder.cli import parser

    assert parser().parse_args(["grade", "a", "s", "--workers", "3"]).workers == 3
    assert parser().parse_args(["grade", "a", "s", "--jobs", "2"]).workers == 2
    assert parser().parse_args(["demo"]).workers == 1
    assert "--jobs" not in parser()._subparsers._group_actions[0].choices["grade"].format_help()
    with pytest.raises(SystemExit):
        parser().parse_args(["grade", "a", "s", "--workers", "0"])


# ------------------------------------------------------------------ slow: real grading

def _start(subs: Path, out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "autograder.cli", "grade", A1, str(subs), "--out", str(out), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group, like a shell job


def _recorded(out: Path) -> dict:
    try:
        return json.loads((out / "state.json").read_text())["students"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return {}


def _wait_recorded(proc: subprocess.Popen, out: Path, at_least: int, timeout: float = 240):
    deadline = time.monotonic() + timeout
    while len(_recorded(out)) < at_least:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline, "no student was recorded in time"
        time.sleep(0.2)
    return _recorded(out)


def _consistent(out: Path) -> dict:
    """Students state.json calls graded have one full submission in the gradebook; failed, none."""
    recorded = _recorded(out)
    with _gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        rows = _submissions(gb, A1)
    graded = {s for s, v in recorded.items() if v["status"] == "graded"}
    assert all(rows.get(s) == CELLS for s in graded), (recorded, rows)
    assert not set(rows) & (set(recorded) - graded), (recorded, rows)
    assert set(rows) <= set(STUDENTS) and all(n == CELLS for n in rows.values())
    return recorded


@pytest.mark.slow
def test_interrupted_parallel_run_resumes_to_the_same_grades(subs, serial, tmp_path):
    out = tmp_path / "parallel"
    # Ctrl-C: the run stops by itself, cleanly, with what it recorded kept.
    proc = _start(subs, out, "--workers", "2")
    _wait_recorded(proc, out, 1)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err, err[-2000:]
    first = _consistent(out)
    assert 1 <= len(first) < len(STUDENTS)
    assert not (out / "work").exists(), "Ctrl-C left a staging area behind"
    # SIGKILL of the whole run (parent and workers) once one more student is recorded.
    proc = _start(subs, out, "--workers", "2")
    _wait_recorded(proc, out, len(first) + 1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    second = _consistent(out)
    assert len(first) < len(second) < len(STUDENTS)
    # The re-run grades only the rest, and ends where an uninterrupted run ends.
    proc = _start(subs, out, "--workers", "2")
    printed, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, printed[-2000:] + err[-2000:]
    kept = {line.split(":")[0].strip() for line in printed.splitlines()
            if "unchanged, kept" in line}
    assert kept == set(second), printed
    assert set(_consistent(out)) == set(STUDENTS)
    _same_outputs(out, serial)


@pytest.fixture(scope="module")
def postgres():
    if pg.binaries() is None:
        pytest.skip(pg.MISSING)
    with pg.postgres_server() as server:
        yield server


@pytest.mark.slow
def test_dask_cluster_with_postgres_gradebook(subs, serial, postgres, tmp_path):
    from distributed import LocalCluster

    url = postgres.create_database("dask_gradebook")
    out = tmp_path / "dask"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        run = grade(A1, subs, out, db_url=url, scheduler=cluster.scheduler_address,
                    echo=lambda line: None)
    assert {r.student: r.score for r in run.results} == pytest.approx(TOTALS)
    _same_outputs(out, serial)
    assert not (out / "gradebook.db").exists(), "grades went to SQLite, not PostgreSQL"
    with _gradebook(url) as gb:
        assert _submissions(gb, A1) == {s: CELLS for s in STUDENTS}
    # A re-run from the command line on the same PostgreSQL gradebook keeps everyone.
    cmd = [sys.executable, "-m", "autograder.cli", "grade", A1, str(subs), "--out", str(out),
           "--db", url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout.count("unchanged, kept") == len(STUDENTS), proc.stdout
    _same_outputs(out, serial)
