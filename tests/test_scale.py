"""Grading at scale: workers, interrupts, PostgreSQL and Dask give the grades of a plain run.

Six a1 students are copies of the bundled samples under other names (full=12, partial=7,
crash_early=5, blank=0 points). ``serial`` grades them once in this process with one worker;
every other way of running must give byte-identical ``grades.csv`` and ``cell_scores.csv``:

- two worker processes grading a class of twelve (the six and six more copies, so that work is
  always left to interrupt), interrupted with Ctrl-C (SIGINT to the process group, as a
  terminal sends it; no kernel process or kernel folder may outlive it) and then killed with
  SIGKILL, each after a student or two were recorded, and re-run to the end;
- a Dask ``LocalCluster`` (2 worker processes on loopback) with the gradebook on a real
  PostgreSQL server started on 127.0.0.1 (``tests/pg.py``), then a re-run from the command line.

Fast tests check the transactional gradebook write and the progress display on their own;
the serial run's phase timings (``timings.csv``) are checked to be there and to add up.
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

import nbformat
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


def _rows(path: Path, students) -> list[dict]:
    import csv

    with open(path) as f:
        return [r for r in csv.DictReader(f) if r.get("student_id", r.get("student")) in students]


def _same_outputs(out: Path, reference: Path, extra: dict | None = None) -> None:
    """``out`` graded STUDENTS as ``reference`` did (and ``extra``: student -> total, as well)."""
    if extra is None:
        for name in ("grades.csv", "cell_scores.csv"):
            assert (out / name).read_text() == (reference / name).read_text(), name
    else:  # a bigger class: the students of the reference byte for byte, the others by total
        for name in ("grades.csv", "cell_scores.csv"):
            assert _rows(out / name, STUDENTS) == _rows(reference / name, STUDENTS), name
        totals = {r["student_id"]: float(r["score"]) for r in _rows(out / "grades.csv", extra)}
        assert totals == pytest.approx(extra)
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
    now = [100.0]
    with open(tmp_path / "log.txt", "w") as stream:
        progress = Progress(stream, clock=lambda: now[0])
        assert not progress.bar  # a file is not a terminal: plain lines
        progress.start(4)
        progress.update(StudentResult("k", "graded", cached=True))  # kept: takes no time
        now[0] += 30
        progress.update(StudentResult("a", "graded", score=3, max_score=3))
        now[0] += 30
        progress.update(StudentResult("b", "failed", notes="no notebook (.ipynb) found"))
        now[0] += 60
        progress.update(StudentResult("c", "graded", flags=["patched torch.testing"]))
        progress.close()
    lines = (tmp_path / "log.txt").read_text().splitlines()
    assert lines[0].endswith("[1/4: 1 graded, 0 failed, 0 flagged]")  # no rate yet
    # 1 graded in 30 s: 2.0 a minute, the 2 left in a minute (the kept one is not in the rate)
    assert lines[1].endswith("[2/4: 2 graded, 0 failed, 0 flagged; 2.0/min, 1:00 left]")
    assert "no notebook" in lines[2] and lines[2].endswith("[3/4: 2 graded, 1 failed, 0 flagged; "
                                                           "2.0/min, 0:30 left]")
    assert lines[3].endswith("[4/4: 3 graded, 1 failed, 1 flagged; 1.5/min, 0:00 left]")


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
    assert "/min, 0:00 left" in text  # the rate and the time left


def test_workers_option_and_its_old_name():
    from autograder.cli import parser

    assert parser().parse_args(["grade", "a", "s", "--workers", "3"]).workers == 3
    assert parser().parse_args(["grade", "a", "s", "--jobs", "2"]).workers == 2
    assert parser().parse_args(["demo"]).workers == 1
    assert "--jobs" not in parser()._subparsers._group_actions[0].choices["grade"].format_help()
    with pytest.raises(SystemExit):
        parser().parse_args(["grade", "a", "s", "--workers", "0"])


# ------------------------------------------------------------------ slow: real grading

def _start(subs: Path, out: Path, *extra: str, temp: Path | None = None,
           marker: str | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "autograder.cli", "grade", A1, str(subs), "--out", str(out), *extra]
    env = dict(os.environ)
    if temp is not None:
        env["TMPDIR"] = str(temp)
    if marker is not None:
        key, value = marker.split("=", 1)
        env[key] = value
    # Its own process group, like a shell job, started as from a terminal: with Ctrl-C at its
    # default. A process inherits an ignored SIGINT (and Python then keeps ignoring it), and
    # something earlier in a long pytest worker can leave it ignored: the run then went on to
    # the end after Ctrl-C (seen twice in full runs, never when this file runs alone).
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True, preexec_fn=_default_sigint)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


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
    assert proc.poll() is None, "the run ended before it could be interrupted"
    return _recorded(out)


def _consistent(out: Path, students=STUDENTS) -> dict:
    """Students state.json calls graded have one full submission in the gradebook; failed, none."""
    recorded = _recorded(out)
    with _gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        rows = _submissions(gb, A1)
    graded = {s for s, v in recorded.items() if v["status"] == "graded"}
    assert all(rows.get(s) == CELLS for s in graded), (recorded, rows)
    assert not set(rows) & (set(recorded) - graded), (recorded, rows)
    assert set(rows) <= set(students) and all(n == CELLS for n in rows.values())
    return recorded


# The interrupted run grades a bigger class (STUDENTS and as many more), so that after the
# first result there is always more than a round of work left to interrupt; the last student
# ("zed") also waits in a cell of their own, so that the run cannot end, however fast the others
# are graded (forked kernels take a second or two each) or however late the parent records them.
MORE = {"gil": "full", "hal": "partial", "ida": "crash_early", "jon": "blank", "kim": "full",
        "lea": "partial", "zed": "full"}
SLOW = {"zed": "import time\ntime.sleep(25)  # a slow cell of a student's own (under the 30 s cell limit)"}


def _leftovers(temp: Path) -> list[str]:
    """Kernel runtime and scratch folders (sandbox.py, pool.py) left in ``temp``."""
    return sorted(p.name for p in temp.glob("attnkit-*"))


def _sigint_of(pid: int) -> str:
    """How process ``pid`` treats SIGINT: "ignored", "caught" (Python's handler) or "default"."""
    masks = dict(line.split(":\t") for line in Path("/proc", str(pid), "status").read_text().splitlines()
                 if line.startswith(("SigIgn", "SigCgt")))
    bit = 1 << (signal.SIGINT - 1)
    return "ignored" if int(masks["SigIgn"], 16) & bit else "caught" if int(masks["SigCgt"], 16) & bit else "default"


def _marked(marker: str) -> list[int]:
    """PIDs of live processes whose environment holds ``marker`` (the run's and its kernels')."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and marker.encode() in Path("/proc", entry, "environ").read_bytes():
                if "zombie" not in Path("/proc", entry, "status").read_text():
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


@pytest.mark.slow
def test_interrupted_parallel_run_resumes_to_the_same_grades(subs, serial, tmp_path):
    class_ = tmp_path / "class"
    shutil.copytree(subs, class_)
    for student, kind in MORE.items():
        (class_ / student).mkdir()
        shutil.copyfile(SAMPLES / kind / f"{A1}.ipynb", class_ / student / f"{A1}.ipynb")
        if student in SLOW:
            nb = nbformat.read(class_ / student / f"{A1}.ipynb", as_version=4)
            nb.cells.append(nbformat.v4.new_code_cell(SLOW[student]))
            nbformat.write(nb, class_ / student / f"{A1}.ipynb")
    everyone = {**STUDENTS, **MORE}
    out = tmp_path / "parallel"
    marker = f"ATTNKIT_TEST_RUN={os.getpid()}-{time.monotonic_ns()}"
    temps = [tmp_path / f"tmp{i}" for i in range(3)]  # TMPDIR of each run: kernel folders
    for temp in temps:
        temp.mkdir()
    # Ctrl-C: the run stops by itself, cleanly, with what it recorded kept.
    proc = _start(class_, out, "--workers", "2", temp=temps[0], marker=marker)
    at_signal = _wait_recorded(proc, out, 1)
    assert _sigint_of(proc.pid) == "caught", "the run does not take Ctrl-C"
    os.killpg(proc.pid, signal.SIGINT)
    printed, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err, (
        f"rc {proc.returncode}; recorded when signalled: {sorted(at_signal)}, at the end: "
        f"{sorted(_recorded(out))}\n{printed[-2000:]}\n{err[-2000:]}")
    first = _consistent(out, everyone)
    assert 1 <= len(first) < len(everyone)
    assert not (out / "work").exists(), "Ctrl-C left a staging area behind"
    # ... and no kernel (the ones in use, the ones started ahead) and none of their folders
    deadline = time.monotonic() + 15
    while _marked(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _marked(marker) == [], "a process of the run outlived Ctrl-C"
    # (their folders in TMPDIR are not all removed yet: the workers are killed before they can)
    # SIGKILL of the whole run (parent and workers) once one more student is recorded.
    proc = _start(class_, out, "--workers", "2", temp=temps[1])
    _wait_recorded(proc, out, len(first) + 1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    second = _consistent(out, everyone)
    assert len(first) < len(second) < len(everyone)
    # The re-run grades only the rest, and ends where an uninterrupted run ends.
    proc = _start(class_, out, "--workers", "2", temp=temps[2])
    printed, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, printed[-2000:] + err[-2000:]
    kept = {line.split(":")[0].strip() for line in printed.splitlines()
            if "unchanged, kept" in line}
    assert kept == set(second), printed
    assert set(_consistent(out, everyone)) == set(everyone)
    _same_outputs(out, serial, extra={s: EXPECTED[A1][kind] for s, kind in MORE.items()})
    assert _leftovers(temps[2]) == [], "a finished run left kernel folders behind"


def test_phase_timings_are_recorded(serial):
    """Every graded student has a row of phase timings (out/timings.csv) and a grading.log line."""
    import csv

    from autograder.job import TIMING_PHASES

    with open(serial / "timings.csv") as f:
        rows = {r["student"]: r for r in csv.DictReader(f)}
    assert set(rows) == set(STUDENTS)
    log = (serial / "grading.log").read_text()
    for student, row in rows.items():
        assert all(float(row[p]) >= 0 for p in TIMING_PHASES), row
        assert float(row["install"]) + float(row["cells"]) > 0 and float(row["kernel_start"]) > 0
        parts = sum(float(row[p]) for p in TIMING_PHASES if p not in ("total", "commit"))
        assert parts == pytest.approx(float(row["total"]), abs=0.05), row  # they add up
        assert f"timings {student}: stage " in log


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
