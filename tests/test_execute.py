"""ResilientExecute (autograder/execute.py) on hostile notebooks, in real sandboxed kernels.

A cell that exits the kernel, one that SIGKILLs it and one that swallows the interrupt are
skipped with an error output saying why, the notebook is re-run without them, and the grade
cells score what they earn (nbgrader's own ``determine_grade``); a fork bomb is bounded and
grading goes on; the notebook's wall-clock limit stops the rest with "not run". Then the
pipeline: it refuses without a sandbox, ``--unsafe`` grades anyway, and a submission whose
extra cell kills the kernel still earns its full marks, with the restart in its notes.
"""
from __future__ import annotations

import csv
import json
import shutil

import nbformat
import pytest
from nbgrader.utils import determine_grade

from autograder import execute
from autograder.execute import SIDECAR, ResilientExecute, read_sidecar
from autograder.notebooks import ROOT

pytestmark = pytest.mark.slow

A1 = "a1_attention_basics"


def _notebook(cells: list[tuple[str | None, str]]) -> nbformat.NotebookNode:
    """Code cells from (grade_id or None, source); a grade cell is worth 1 point."""
    nb = nbformat.v4.new_notebook()
    for grade_id, source in cells:
        cell = nbformat.v4.new_code_cell(source)
        if grade_id:
            cell.metadata["nbgrader"] = {"grade": True, "solution": False, "locked": True,
                                         "grade_id": grade_id, "points": 1, "schema_version": 3}
        nb.cells.append(cell)
    return nb


def _scores(nb) -> dict[str, float]:
    return {c.metadata["nbgrader"]["grade_id"]: determine_grade(c)[0]
            for c in nb.cells if "nbgrader" in c.metadata}


def _errors(cell) -> list[tuple[str, str]]:
    return [(o.ename, o.evalue) for o in cell.outputs if o.output_type == "error"]


class _NoGuard:
    """Stands in for autograder/protect.py, doing nothing (the executor alone is tested)."""

    def prepare(self, nb, resources):
        return nb

    def finish(self, nb, resources):
        return nb


class _FakeProtect:
    """Stands in for autograder/protect.py: a first cell in, and out at the end."""

    def __init__(self):
        self.prepared, self.finished = [], 0

    def prepare(self, nb, resources):
        self.prepared.append([c.source for c in nb.cells])
        nb.cells.insert(0, nbformat.v4.new_code_cell("_guard = 'on'"))
        return nb

    def finish(self, nb, resources):
        self.finished += 1
        assert nb.cells[0].source == "_guard = 'on'" and nb.cells[0].outputs == []
        del nb.cells[0]
        return nb


HOSTILE = [
    (None, "x = 1"),
    ("g1", "assert x == 1"),
    (None, "import os\nos._exit(1)"),
    ("g2", "assert x == 1 and _guard == 'on'"),
    ("g3", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"),
    (None, "import time\nwhile True:\n    try:\n        time.sleep(1)\n    except KeyboardInterrupt:\n        pass"),
    ("g4", "assert x == 1"),
    ("g5", "assert x == 2"),
    (None, "import os, time\nt = time.time()\nwhile time.time() - t < 2:\n    try:\n"
           "        if os.fork() == 0:\n            time.sleep(600)\n            os._exit(0)\n"
           "    except OSError:\n        pass"),
    ("g6", "assert x == 1"),
]


def test_hostile_cells_are_skipped_and_the_rest_scored(tmp_path, monkeypatch):
    guard = _FakeProtect()
    monkeypatch.setattr(execute, "protect", guard)
    nb = _notebook(HOSTILE)
    (tmp_path / SIDECAR).write_text('{"hw": {"restarts": 0}, "forged": 1}')  # a stale file
    ep = ResilientExecute(timeout=3, iopub_timeout=4, kernel_name="python3")
    nb, resources = ep.preprocess(nb, {"metadata": {"path": str(tmp_path)},
                                       "nbgrader": {"notebook": "hw"}})
    assert [c.source for c in nb.cells] == [src for _, src in HOSTILE]
    assert _scores(nb) == {"g1": 1, "g2": 1, "g3": 0, "g4": 1, "g5": 0, "g6": 1}
    killed = ("this cell killed the kernel (it exited, crashed or hit a resource limit); it was "
              "skipped and the notebook re-run without it")
    assert _errors(nb.cells[2]) == [("DeadKernelError", killed)]
    assert _errors(nb.cells[4]) == [("DeadKernelError", killed)]
    assert _errors(nb.cells[5]) == [("CellTimeoutError", "this cell ran past the 3 s limit and "
                                     "ignored the interrupt; it was skipped and the notebook "
                                     "re-run without it")]
    assert _errors(nb.cells[8]) == []  # the fork bomb ran, bounded, and grading went on
    record = resources["attnkit_execution"]
    assert record["restarts"] == 3 and record["sandboxed"] and not record["timed_out"]
    assert [(s["cell"], s["grade_id"]) for s in record["skipped"]] == [(2, None), (4, "g3"), (5, None)]
    assert read_sidecar(tmp_path) == {"hw": json.loads(json.dumps(record)), "forged": 1}
    # the guard prepared each of the 4 runs from the original notebook, and finished once
    assert guard.prepared == [[src for _, src in HOSTILE]] * 4 and guard.finished == 1
    assert execute.summary(read_sidecar(tmp_path)) == (
        "kernel restarted 3 times, skipped '#3' (killed the kernel), 'g3' (killed the kernel), "
        "'#6' (ignored the interrupt)")


def test_past_the_restart_limit_the_rest_is_not_run(tmp_path, monkeypatch):
    monkeypatch.setattr(execute, "protect", _NoGuard())
    nb = _notebook([(None, "x = 1"), ("g1", "assert x == 1"), (None, "import os\nos._exit(1)"),
                    ("g2", "assert x == 1")])
    ep = ResilientExecute(max_restarts=0, kernel_name="python3")
    nb, resources = ep.preprocess(nb, {"metadata": {"path": str(tmp_path)}})
    assert _scores(nb) == {"g1": 1, "g2": 0}
    assert _errors(nb.cells[2]) == [("DeadKernelError", "this cell killed the kernel (it exited, "
                                     "crashed or hit a resource limit); the kernel was not "
                                     "restarted again (limit reached)")]
    assert _errors(nb.cells[3]) == [("NotRunError", "not run: the kernel was restarted 0 times "
                                     "(the limit)")]
    assert resources["attnkit_execution"]["restarts"] == 0


def test_the_notebook_time_limit_stops_the_rest(tmp_path, monkeypatch):
    monkeypatch.setattr(execute, "protect", _NoGuard())
    nb = _notebook([(None, "x = 1"), ("g1", "assert x == 1"), (None, "import time\ntime.sleep(60)"),
                    ("g2", "assert x == 1"), (None, "y = 2")])
    # no warm imports: booting torch on a busy machine would eat the 12 s before cell 1
    ep = ResilientExecute(timeout=60, notebook_timeout=12, kernel_name="python3", warm_imports=[])
    nb, resources = ep.preprocess(nb, {"metadata": {"path": str(tmp_path)}})
    assert _scores(nb) == {"g1": 1, "g2": 0}
    late = "the notebook ran past its 12 s limit"
    assert ("NotebookTimeoutError", "interrupted: " + late) in _errors(nb.cells[2])
    assert _errors(nb.cells[3]) == _errors(nb.cells[4]) == [("NotRunError", "not run: " + late)]
    record = resources["attnkit_execution"]
    assert record["timed_out"] and record["not_run"] == 2 and record["restarts"] == 0
    assert 12 <= record["seconds"] < 30


def test_grading_refuses_without_a_sandbox(tmp_path, monkeypatch, capsys):
    from autograder.cli import main
    from autograder.pipeline import grade
    from autograder.release import PipelineError

    monkeypatch.setenv("ATTNKIT_BWRAP", "/nonexistent/bwrap")
    (tmp_path / "subs").mkdir()
    with pytest.raises(PipelineError, match=r"sandbox cannot start: bubblewrap .* not found.*--unsafe"):
        grade(A1, tmp_path / "subs", tmp_path / "out")
    assert main(["grade", A1, str(tmp_path / "subs"), "--out", str(tmp_path / "out")]) == 2
    assert "error: the grading sandbox cannot start" in capsys.readouterr().err
    assert not (tmp_path / "out" / "course").exists()  # refused before anything ran


def _with_killer_cell(src, dest):
    """The full sample with an extra student cell that kills the kernel after the first answer."""
    nb = nbformat.read(str(src), as_version=4)
    at = next(i for i, c in enumerate(nb.cells)
              if c.metadata.get("nbgrader", {}).get("solution")) + 1
    # a segfault: the in-kernel guard refuses os._exit and os.kill, nothing stops this one
    nb.cells.insert(at, nbformat.v4.new_code_cell("import faulthandler\nfaulthandler._sigsegv()"))
    dest.parent.mkdir(parents=True)
    nbformat.write(nb, str(dest))


@pytest.mark.parametrize("unsafe", [False, True], ids=["sandbox", "unsafe"])
def test_a_cell_that_kills_the_kernel_costs_nothing_else(tmp_path, unsafe, capsys):
    from autograder.cli import main

    samples = ROOT / "autograder" / "samples" / A1
    if not unsafe:  # the honest twin, for comparison (once is enough)
        shutil.copytree(samples / "full", tmp_path / "subs" / "full")
    _with_killer_cell(samples / "full" / f"{A1}.ipynb", tmp_path / "subs" / "killer" / f"{A1}.ipynb")
    out = tmp_path / "out"
    args = ["grade", A1, str(tmp_path / "subs"), "--out", str(out)] + ["--unsafe"] * unsafe
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert ("WARNING: --unsafe" in printed) == unsafe
    with open(out / "grades.csv") as f:
        rows = {r["student_id"]: r for r in csv.DictReader(f)}
    assert float(rows["killer"]["score"]) == 12, (rows["killer"], printed)
    assert unsafe or float(rows["full"]["score"]) == 12, rows["full"]
    assert "kernel restarted 1 time, skipped '#" in rows["killer"]["notes"], rows["killer"]
    assert "killed the kernel" in rows["killer"]["notes"]
    manager = "AsyncKernelManager" if unsafe else "SandboxKernelManager"
    assert manager in (out / "course" / "nbgrader_config.py").read_text()


def test_limit_flags_reach_the_nbgrader_config(tmp_path):
    import dataclasses

    from autograder.cli import limit_overrides, parser
    from autograder.config import config_text
    from autograder.limits import Limits

    args = parser().parse_args(["grade", A1, "subs", "--memory", "2", "--cpu-time", "100",
                                "--notebook-timeout", "50"])
    given = limit_overrides(args)
    assert given == {"memory": 2 << 30, "cpu_time": 100, "notebook_timeout": 50}
    text = config_text(tmp_path, db_url="sqlite://", timeout=60, pattern="x",
                       limits=Limits.for_cell_timeout(60, **given))
    for line in ("c.SandboxKernelManager.memory = 2147483648", "c.SandboxKernelManager.cpu_time = 100",
                 "c.ResilientExecute.notebook_timeout = 50",
                 "c.ResilientExecute.kernel_manager_class = 'autograder.sandbox.SandboxKernelManager'"):
        assert line in text
    assert Limits.for_cell_timeout(600) == dataclasses.replace(
        Limits.for_cell_timeout(60), notebook_timeout=3000, cpu_time=6000)
    assert Limits.for_cell_timeout(60) == Limits()  # short cells: the defaults
    assert limit_overrides(parser().parse_args(["grade", A1, "subs"])) == {}
