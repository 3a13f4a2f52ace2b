"""The pool of kernels started ahead (autograder/pool.py), through ResilientExecute, in the sandbox.

Three "students" graded one after the other by one process: each gets a kernel of its own (its
own uid and host pid, nothing left from the one before), the second and third get kernels that
were started ahead, a cell that kills the kernel gets a fresh one for the re-run, the kernel
works on a copy of the student's folder (the notebook masked, the grader's records absent, what
it writes comes back), and no kernel or folder is left once the pool is closed. Then the warm
imports: modules imported, no name bound, the execution count untouched.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
import time

import nbformat
import pytest
from traitlets.config import Config

from autograder import execute, pool
from autograder.execute import SIDECAR, ResilientExecute, read_sidecar

pytestmark = pytest.mark.slow


class _NoGuard:
    """Stands in for autograder/protect.py (the pool alone is tested)."""

    def prepare(self, nb, resources):
        return nb

    def finish(self, nb, resources):
        return nb


def _notebook(*sources: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    return nb


def _text(cell) -> str:
    return "".join(o.get("text", "") or f"{o.get('ename')}: {o.get('evalue')}" for o in cell.outputs).strip()


# Who am I, and did anyone run in this kernel before me?
WHO = ("import builtins, os\n"
       "print(os.getuid(), getattr(builtins, '_previous_student', None))\n"
       "builtins._previous_student = {name!r}")
FILES = ("import os\nprint(sorted(os.listdir('.')), open('data.txt').read(), repr(open('hw.ipynb').read()))\n"
         "n = open('result.txt', 'w').write('from ' + {name!r})")
KILL = "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return "zombie" not in f.read()
    except OSError:
        return False


def test_a_kernel_serves_one_student_and_is_destroyed(tmp_path, monkeypatch):
    monkeypatch.setattr(execute, "protect", _NoGuard())
    monkeypatch.setattr(pool._local, "pool", None, raising=False)  # a pool of this test's own
    # the kernels' runtime and scratch folders: a short path (a Unix socket path has a 107-byte limit)
    temp = Path(tempfile.mkdtemp(prefix="pool-", dir="/tmp"))
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    records, outputs = {}, {}
    for name in ("ana", "ben", "cleo"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "data.txt").write_text(f"{name}'s data")
        (folder / "hw.ipynb").write_text('{"hidden": "tests"}')
        (folder / SIDECAR).write_text("{}")
        cells = [WHO.format(name=name), FILES.format(name=name)]
        if name == "ben":  # kills its kernel: re-run without the cell, in a fresh kernel
            cells.insert(1, KILL)
        ep = ResilientExecute(timeout=60, kernel_name="python3", warm_imports=["json"])
        nb, resources = ep.preprocess(_notebook(*cells), {"metadata": {"path": str(folder)},
                                                          "nbgrader": {"notebook": "hw"}})
        records[name] = resources["attnkit_execution"]
        outputs[name] = [_text(c) for c in nb.cells]
        assert read_sidecar(folder)["hw"]["kernels"] == records[name]["kernels"]
        assert (folder / "result.txt").read_text() == f"from {name}"  # came back from scratch
        assert (folder / "hw.ipynb").read_text() == '{"hidden": "tests"}'
    kernels = [k for name in records for k in records[name]["kernels"]]
    assert [len(records[n]["kernels"]) for n in records] == [1, 2, 1]  # ben's restart: a new one
    assert len({k["uid"] for k in kernels}) == len({k["pid"] for k in kernels}) == 4
    for name in records:  # nobody ran in the kernel before
        uid = records[name]["kernels"][-1]["uid"]
        assert outputs[name][0] == f"{uid} None", (name, outputs[name])
        files = [o for o in outputs[name] if "data.txt" in o][0]
        # the notebook masked (empty), the grader's record not there at all
        assert files == f"['data.txt', 'hw.ipynb'] {name}'s data ''", files
    assert records["ben"]["restarts"] == 1
    # after the first, every kernel had been started ahead (booting while the previous ran)
    assert all(k["age_s"] >= 0 for k in kernels)
    the_pool = pool.kernel_pool()
    assert the_pool.hits == 3 and the_pool.started == 5  # 4 used + 1 waiting for a next student
    waiting = the_pool.ready[0]
    assert _alive(waiting.pid) and os.path.isdir(waiting.base)
    for k in kernels:  # the used ones are gone
        assert not _alive(k["pid"]), k
    assert sorted(p.name.split("-")[1] for p in temp.iterdir()) == ["kernel", "scratch"]  # its own
    the_pool.close()
    deadline = time.monotonic() + 10
    while _alive(waiting.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(waiting.pid) and the_pool.ready == []
    assert list(temp.iterdir()) == []  # every runtime and scratch folder removed


def test_warm_imports_bind_no_name_and_keep_the_count(tmp_path, monkeypatch):
    monkeypatch.setattr(execute, "protect", _NoGuard())
    monkeypatch.setattr(pool._local, "pool", None, raising=False)
    probe = ("import sys\nprint(get_ipython().execution_count, 'attnkit.guard' in sys.modules, "
             "'torch' in sys.modules, sorted(k for k in globals() if 'attnkit' in k or k == 'torch'))")
    results = {}
    # the control: a bare kernel started as a new Python; then warm ones, exec'd and forked (a
    # forked kernel has the fork server's imports, attnkit.guard among them, whatever it asks)
    for warm, fork in (([], False), (["attnkit.guard"], False), (["attnkit.guard"], True),
                       ([], True)):
        config = Config({"SandboxKernelManager": {"fork_server": fork}})
        ep = ResilientExecute(kernel_name="python3", warm_imports=warm, lookahead=0, config=config)
        nb, _ = ep.preprocess(_notebook(probe), {"metadata": {"path": str(tmp_path)}})
        results[bool(warm), fork] = (_text(nb.cells[0]), nb.cells[0].execution_count)
    count = results[False, False][0].split()[0]
    assert results[False, False] == (f"{count} False False []", 1)
    for key in ((True, False), (True, True), (False, True)):  # imported, nothing bound, same counts
        assert results[key] == (f"{count} True True []", 1), key
    assert pool.kernel_pool().ready == []  # lookahead 0: nothing started ahead
    assert json.loads((tmp_path / SIDECAR).read_text())["notebook"]["timings"]["cells"] > 0


def test_kernel_sockets_fit_under_a_deep_temp_folder(tmp_path, monkeypatch):
    """A deep TMPDIR (pytest's own folders are one) must not push the kernel's IPC socket
    paths past the 107 bytes a Unix socket allows: the runtime folder moves to /tmp."""
    from autograder import sandbox

    deep = tmp_path / ("d" * 60) / ("e" * 40)
    deep.mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    assert sandbox.socket_parent() == "/tmp"
    runtime = sandbox.make_runtime(os.getuid())
    try:
        assert len(os.path.join(runtime, "kernel-65535").encode()) <= sandbox.SOCKET_PATH_MAX
    finally:
        shutil.rmtree(runtime)
    short = tempfile.mkdtemp(prefix="s-", dir="/tmp")
    try:
        monkeypatch.setattr(tempfile, "tempdir", short)
        assert sandbox.socket_parent() == short  # a short temp folder is kept
    finally:
        os.rmdir(short)
