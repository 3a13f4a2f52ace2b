"""The grading sandbox (autograder/sandbox.py), checked from inside a real sandboxed kernel.

One kernel runs a notebook of probes (no network, no view of the repository's solutions, the
gradebook, other students or the grader's home, a writable scratch folder and nothing else
writable, limits on memory, file size and processes, interrupts that still work, attnkit
importable); each probe prints one word that the test checks, next to a control run outside
the sandbox where that matters. Then ``probe()`` and an end-to-end grading of the a1 samples.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from traitlets.config import Config

from autograder import forkserver, sandbox
from autograder.notebooks import ROOT

pytestmark = pytest.mark.slow

A1 = "a1_attention_basics"
SAMPLES = ROOT / "autograder" / "samples" / A1


def _uids_alive(uid: int) -> list[int]:
    """PIDs of processes whose real uid is ``uid``."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                status = Path("/proc", entry, "status").read_text()
            except OSError:
                continue
            line = next(x for x in status.splitlines() if x.startswith("Uid:"))
            if int(line.split()[1]) == uid:
                pids.append(int(entry))
    return pids


def _run(cells: list[str], scratch: Path, *, timeouts: dict[int, int] | None = None,
         forked: bool | None = None, **limits):
    """Execute ``cells`` in one sandboxed kernel with cwd ``scratch``; (notebook, kernel uid).
    ``forked``: whether the kernel must have come from the fork server (default: as asked)."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    config = Config({"SandboxKernelManager": limits})
    timeouts = timeouts or {}
    client = NotebookClient(
        nb, kernel_name="python3", kernel_manager_class=sandbox.SandboxKernelManager,
        config=config, interrupt_on_timeout=True, allow_errors=True, iopub_timeout=10,
        timeout_func=lambda cell: timeouts.get(nb.cells.index(cell), 120),
        resources={"metadata": {"path": str(scratch)}})
    started = []
    client.on_notebook_start = lambda notebook: started.append(
        (client.km.uid, isinstance(client.km.provisioner.process, sandbox.ForkedKernel)))
    client.execute()
    uid = started[0][0]
    expected = limits.get("fork_server", True) if forked is None else forked
    assert started[0][1] == expected, "the kernel was not started the way expected"
    return nb, uid


def _text(cell) -> str:
    out = []
    for o in cell.outputs:
        out.append(o.get("text") or f"{o.get('ename')}: {o.get('evalue')}")
    return "".join(out).strip()


@pytest.mark.parametrize("fork_server", [True, False], ids=["forked", "exec"])
def test_kernel_is_isolated_and_limited(tmp_path, monkeypatch, fork_server):
    """The same probes for a kernel forked from the fork server into the sandbox
    (``forkserver.py``) and for one started as a new Python by bubblewrap."""
    course = tmp_path / "course"
    scratch = course / "autograded" / "alice" / A1
    scratch.mkdir(parents=True)
    (scratch / f"{A1}.ipynb").write_text('{"hidden": "tests"}')  # the autograded copy: masked
    (scratch / "data.txt").write_text("alice's file")
    other = course / "autograded" / "bob" / A1
    other.mkdir(parents=True)
    (other / "answer.txt").write_text("bob's")
    gradebook = course / "gradebook.db"
    gradebook.write_text("grades")
    hidden = [ROOT / "solutions", gradebook, other, ROOT / "autograder", Path.home() / ".cache"]
    monkeypatch.setenv("ATTNKIT_TEST_SECRET", "s3cret")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    socket.create_connection(("127.0.0.1", port), timeout=5).close()  # control: it listens
    checks = [
        "import os\nprint('uid', os.getuid(), 'caps', open('/proc/self/status').read().split('CapEff:')[1].split()[0])",
        f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=3)\n    print('connected')\n"
        "except OSError:\n    print('blocked')",
        f"print([os.path.exists(p) for p in {[str(p) for p in hidden]!r}])",
        "print(os.getcwd(), sorted(os.listdir('.')), open('data.txt').read(), "
        f"repr(open('{A1}.ipynb').read()))",
        "open('result.txt', 'w').write('written inside')\nprint('wrote')",
        "import attnkit\nbad = []\n"
        f"for p in ['{ROOT / 'lib' / 'attnkit' / 'x.py'}', '/usr/x', '/etc/x', '{course / 'x'}', '/x']:\n"
        "    try:\n        open(p, 'w')\n        bad.append(p)\n    except OSError:\n        pass\n"
        "open('/tmp/private', 'w').write('ok')\nprint('unwritable', bad)",
        "print('secret' if 'ATTNKIT_TEST_SECRET' in os.environ else 'clean', sorted(os.environ)[:3])",
        "try:\n    b = bytearray(6 << 30)\n    print('allocated')\nexcept MemoryError:\n    print('MemoryError')",
        "try:\n    open('big.bin', 'wb').write(b'x' * (2 << 20))\n    print('wrote big')\n"
        "except OSError as e:\n    print('EFBIG' if e.errno == 27 else e)",
        "import torch\nfrom attnkit import dense_attention\nq = torch.randn(1, 2, 64, 16)\n"
        "print('attnkit', tuple(dense_attention(q, q, q).shape), (torch.randn(256, 256) @ torch.randn(256, 256)).shape[0])",
        "import time\nt = time.time()\ntry:\n    time.sleep(100)\nexcept KeyboardInterrupt:\n"
        "    print('interrupted after', round(time.time() - t))",
        "import time\nn = 0\nt = time.time()\nwhile time.time() - t < 3:\n    try:\n"
        "        if os.fork() == 0:\n            time.sleep(600)\n            os._exit(0)\n        n += 1\n"
        "    except OSError:\n        pass\nprint('forked', n)",
        "print('alive after', sum(1 for _ in range(10)))",  # no new threads: the bomb holds them
        # no file or folder of the grader open past stdin/out/err (sockets, pipes: the kernel's)
        "status = open('/proc/self/status').read()\n"
        "field = lambda k: status.split(k + ':')[1].split()[0]\n"
        "def link(fd):  # files on the sandbox's private /tmp (a tmpfs of its own) are its own;\n"
        "    try:  # ipykernel keeps copies of its stdout and stderr (the kernel log: the grader's fd 2 here)\n"
        "        path, st = os.readlink(f'/proc/self/fd/{fd}'), os.stat(f'/proc/self/fd/{fd}')\n"
        f"        own = (os.stat('/tmp').st_dev, {os.fstat(2).st_dev}), {os.fstat(2).st_ino}\n"
        "        return '' if st.st_dev == own[0][0] or (st.st_dev, st.st_ino) == (own[0][1], own[1]) else path\n"
        "    except OSError:\n        return ''  # the listing's own descriptor\n"
        "files = [link(fd) for fd in os.listdir('/proc/self/fd') if int(fd) > 2]\n"
        "print('nnp', field('NoNewPrivs'), 'bnd', field('CapBnd'), 'inh', field('CapInh'), 'groups', "
        "os.getgroups(), 'tty', os.path.exists('/dev/tty') and os.isatty(0), 'files', "
        "[f for f in files if f.startswith('/') and not f.startswith(os.getcwd()) and f != '/dev/null'])",
    ]
    nb, uid = _run(checks, scratch, timeouts={10: 3}, file_size=1 << 20, processes=64,
                   fork_server=fork_server)
    out = [_text(c) for c in nb.cells]
    server.close()
    assert out[0] == f"uid {uid} caps 0000000000000000" and uid >= sandbox.UID_BASE, out[0]
    assert out[1] == "blocked", out[1]
    assert all(p.exists() for p in hidden)  # they exist outside ...
    assert out[2] == str([False] * len(hidden)), out[2]  # ... and not inside
    assert out[3] == f"{scratch} ['{A1}.ipynb', 'data.txt'] alice's file ''", out[3]
    assert out[4] == "wrote" and (scratch / "result.txt").read_text() == "written inside"
    assert out[5] == "unwritable []", out[5]
    assert not (tmp_path / "private").exists() and not Path("/tmp/private").exists()
    assert out[6].startswith("clean"), out[6]
    assert out[7] == "MemoryError", out[7]
    assert out[8] == "EFBIG", out[8]
    assert out[9] == "attnkit (1, 2, 64, 16) 256", out[9]
    assert out[10].startswith("interrupted after"), out[10]
    assert int(out[10].split()[-1]) <= 5, out[10]
    assert out[11].startswith("forked "), out[11]
    assert 0 < int(out[11].split()[1]) < 64, out[11]  # bounded by processes=64 (threads count too)
    assert out[12] == "alive after 10", out[12]
    assert out[13] == ("nnp 1 bnd 0000000000000000 inh 0000000000000000 groups [] tty False "
                       "files []"), out[13]
    deadline = time.monotonic() + 10  # the forked children die with the kernel
    while _uids_alive(uid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _uids_alive(uid) == []
    assert (scratch / "result.txt").stat().st_uid == os.getuid()  # given back to the grader
    assert (scratch / f"{A1}.ipynb").read_text() == '{"hidden": "tests"}'


@pytest.mark.parametrize("fork_server", [True, False], ids=["forked", "exec"])
def test_kernel_cpu_time_limit_kills_it(tmp_path, fork_server):
    from nbclient.exceptions import DeadKernelError

    with pytest.raises(DeadKernelError):
        _run(["while True:\n    pass"], tmp_path, cpu_time=5, fork_server=fork_server)


def test_the_fork_server_holds_nothing_of_the_grader(tmp_path, monkeypatch):
    """The server the kernels are forked from has none of the grader's environment and no open
    file of it (its descriptors: /dev/null for stdin, stdout and stderr, its control socket:
    not the grader's pipes, which a server that outlived its grader would keep open)."""
    monkeypatch.setenv("ATTNKIT_TEST_SECRET", "s3cret")
    forkserver.close_servers()
    nb, _ = _run(["print('forked')"], tmp_path)
    assert _text(nb.cells[0]) == "forked"
    (server,) = forkserver._servers.values()
    pid = server.process.pid
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert not any(b"s3cret" in e or e.startswith(b"ATTNKIT_TEST_SECRET") for e in environ)
    assert Path(f"/proc/{pid}/cwd").resolve() == Path("/")
    links = {int(fd): os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    assert links[0] == links[1] == links[2] == "/dev/null", links
    assert all(link.startswith("socket:") for fd, link in links.items() if fd > 2), links
    forkserver.close_servers()  # the next test's server gets this test's environment back


def test_the_fork_server_ends_with_its_grader(tmp_path):
    """A grader killed outright (SIGKILL: no atexit) takes its fork server with it."""
    code = ("import os, signal\nfrom autograder import forkserver, sandbox\n"
            "s = forkserver.server((), sandbox.kernel_env('/nonexistent'))\n"
            "print(s.process.pid, flush=True)\nos.kill(os.getpid(), signal.SIGKILL)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == -9, done.stderr
    pid = int(done.stdout.split()[0])
    deadline = time.monotonic() + 20
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    status = Path(f"/proc/{pid}/status")
    assert not status.exists() or "zombie" in status.read_text(), "the fork server outlived its grader"


def test_a_failing_fork_server_leaves_the_exec_path(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("broken on purpose")

    monkeypatch.setattr(sandbox, "_fork_failures", [])
    monkeypatch.setattr(forkserver, "server", broken)
    nb, _ = _run(["print('still graded')"], tmp_path, forked=False)
    assert _text(nb.cells[0]) == "still graded"
    assert sandbox._fork_failures == ["RuntimeError: broken on purpose"]
    nb, _ = _run(["print('again')"], tmp_path, forked=False)  # not tried again in this process
    assert _text(nb.cells[0]) == "again" and len(sandbox._fork_failures) == 1


def test_probe(monkeypatch):
    assert sandbox.probe() is None
    monkeypatch.setenv("ATTNKIT_BWRAP", str(Path("/nonexistent/bwrap")))
    assert "bubblewrap (/nonexistent/bwrap) was not found" in sandbox.probe()
    monkeypatch.setenv("ATTNKIT_BWRAP", shutil.which("false"))
    assert sandbox.probe().startswith("the sandbox did not start (exit 1)")


def test_gpu_binds_the_devices_and_keeps_the_driver_environment(monkeypatch, tmp_path):
    """``attnkit grade --gpu``: the kernel keeps the driver's library path and the visible devices;
    without ``gpu`` neither is passed (no GPU here: the argument list is what can be checked)."""
    monkeypatch.setattr(sandbox, "bwrap_path", lambda: "/usr/bin/bwrap")
    monkeypatch.setenv("LD_LIBRARY_PATH", "/usr/local/nvidia/lib64")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not for students")

    def setenv(gpu: bool) -> dict[str, str]:
        args = sandbox.bwrap_args(runtime=str(tmp_path), scratch=str(tmp_path), uid=12345,
                                  limits=sandbox.DEFAULT_LIMITS, gpu=gpu)
        return {args[i + 1]: args[i + 2] for i, a in enumerate(args) if a == "--setenv"}

    with_gpu, without = setenv(True), setenv(False)
    assert with_gpu["LD_LIBRARY_PATH"] == "/usr/local/nvidia/lib64" and with_gpu["CUDA_VISIBLE_DEVICES"] == "0"
    assert "LD_LIBRARY_PATH" not in without and "CUDA_VISIBLE_DEVICES" not in without
    assert "AWS_SECRET_ACCESS_KEY" not in with_gpu
