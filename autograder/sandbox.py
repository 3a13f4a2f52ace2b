"""The grading kernel in a kernel-level sandbox (bubblewrap + rlimits + an unprivileged uid).

nbgrader, the gradebook and the source notebooks (with the hidden tests) stay outside; only the
kernel that runs student code goes in. ``SandboxKernelManager`` is a
``jupyter_client.AsyncKernelManager`` whose kernel command is

    bwrap <whitelist mounts> --unshare-net --unshare-pid --die-with-parent --new-session
          --clearenv --setenv ... --chdir <scratch>
      prlimit --as=<memory> --cpu=<s> --fsize=<bytes> --nproc=<n> --
      setpriv --reuid=<uid> --regid=<uid> --clear-groups --bounding-set=-all --no-new-privs
      <venv python> -m ipykernel_launcher -f <connection file> ...

What the kernel sees (``bwrap_args``):

- read-only: ``/usr /bin /lib /lib64 /sbin /etc``, the virtualenv and the Python installation
  it was made from, and the ``attnkit`` package (an editable install points into the
  repository's ``lib/``; nothing else of the repository: not ``solutions/``, the gradebook, the
  staged course, the submissions, other students' folders, the rest of the machine);
- read-write: its scratch folder (nbgrader's ``autograded/<student>/<a>/``, the kernel's cwd)
  with the notebooks in it masked (the autograded copy holds the restored hidden tests), a
  fresh runtime folder (home, IPython and matplotlib settings, the kernel's IPC sockets) and a
  private ``/tmp``;
- no network: its own network namespace, so the kernel talks to nbgrader over Unix sockets
  (``transport = "ipc"``), which cross namespaces where TCP on loopback does not;
- its own PID namespace: when the kernel exits or is killed, every process it started dies
  with it (bubblewrap's init is PID 1; ``--die-with-parent`` ties it to the grader);
- a clean environment (``--clearenv``): none of the grader's variables or secrets;
- an unprivileged, per-kernel uid (random, above 2^20) and no capabilities, so the process
  limit is really enforced (Linux exempts root from RLIMIT_NPROC) and nothing can be remounted.

Limits (``limits.Limits``): address space (a bigger allocation raises MemoryError), CPU
seconds, file size (a bigger write fails with ``OSError: File too large``) and processes +
threads. Interrupts go as ``interrupt_request`` messages (the kernel signals its own process
group), since a SIGINT to the bwrap process would not reach the kernel in its new session.

Two ways to start the kernel in it, with the same mounts, namespaces, environment, uid and
limits (``tests/test_sandbox.py`` probes both):

- forked (the default where supported): bubblewrap runs ``sleep infinity`` as a *holder* of the
  sandbox, and the process's fork server (``forkserver.py``: torch, IPython and attnkit imported
  once) forks the kernel into the holder's namespaces, where it drops to the uid and limits
  itself (``attnkit.guard.forkserver``). ``ForkedKernel`` is what the provisioner then holds:
  killing the holder ends the sandbox; the kernel's pidfd says when the kernel is gone;
- exec'd: the command above, a new Python per kernel (about 6 s of CPU importing torch). Used
  when forking is not supported (not root, no pidfds), with ``gpu``, with ``fork_server=False``,
  and for the rest of the process once the fork server has failed.

``probe()`` starts a trivial Python under the same command and says why when it cannot (no
bwrap, no namespaces, ...); grading refuses then unless ``unsafe=True``.

GPU: ``gpu=True`` (``c.SandboxKernelManager.gpu``) also binds ``/dev/nvidia*`` and
``/proc/driver/nvidia``: untested here (no GPU on this machine). Not covered: the memory of many
processes together (each has its own address-space limit; a cgroup would bound the sum), disk
use by many files, and the processes a fork bomb leaves behind: they hold the process limit
until the kernel ends, so a later cell that starts threads (torch) may kill the kernel; the
executor then skips that cell. The kernel runs as a uid of its own, which needs root (setpriv).
"""
from __future__ import annotations

import functools
import glob
import os
import secrets
import select
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager
from traitlets import Bool, Integer, List, Unicode

from . import forkserver
from .limits import DEFAULT_LIMITS, Limits

SYSTEM_DIRS = ("/usr", "/bin", "/lib", "/lib64", "/sbin", "/etc")
# With ``gpu``, also these (the driver's library path and the visible devices).
GPU_ENV = ("CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH", "CUDA_HOME", "TRITON_LIBCUDA_PATH")
# Variables of the grader's environment a kernel may keep (everything else is cleared).
# PYTHONPATH entries are only seen where they point into the whitelist.
PASS_ENV = ("PYTHONPATH", "PYTHONWARNINGS", "NBGRADER_EXECUTION", "NBGRADER_VALIDATING",
            "OMP_NUM_THREADS", "MKL_NUM_THREADS", "TZ", "PYTHONHASHSEED")
UID_BASE = 1 << 20  # kernels run as UID_BASE + random: no real user, no files outside


def bwrap_path() -> str | None:
    """The bubblewrap executable (``$ATTNKIT_BWRAP`` overrides ``bwrap`` on PATH)."""
    name = os.environ.get("ATTNKIT_BWRAP", "bwrap")
    return shutil.which(name)


def _ancestors(path: str) -> list[str]:
    """"/a/b/c" -> ["/a", "/a/b"] (folders bwrap must create, world-readable, before a bind)."""
    parts = Path(path).parts[1:-1]
    return [str(Path("/", *parts[:i + 1])) for i in range(len(parts))]


def readonly_paths() -> list[str]:
    """What the kernel needs read-only beyond the system folders: venv, base Python, attnkit."""
    import attnkit

    paths = [sys.prefix, sys.base_prefix, str(Path(attnkit.__file__).resolve().parent)]
    # The interpreter may be a symlink out of both prefixes (e.g. a venv made from a pyenv).
    real = str(Path(sys.executable).resolve().parent.parent)
    paths.append(real)
    out = []
    for p in map(os.path.realpath, paths):
        if not any(p == s or p.startswith(s + "/") for s in SYSTEM_DIRS) and p not in out:
            out.append(p)
    return out


def kernel_env(runtime: str, gpu: bool = False) -> dict[str, str]:
    """The kernel's whole environment (nothing else of the grader's passes)."""
    home = f"{runtime}/home"
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
           "HOME": home, "USER": "student", "LOGNAME": "student", "LANG": "C.UTF-8",
           "IPYTHONDIR": f"{home}/.ipython", "MPLCONFIGDIR": f"{home}/.config/matplotlib",
           "XDG_CACHE_HOME": f"{home}/.cache", "TMPDIR": "/tmp"}
    env.update({k: os.environ[k] for k in PASS_ENV if k in os.environ})
    if gpu:  # where the driver's libraries are and which GPU: CUDA cannot start without them
        env.update({k: os.environ[k] for k in GPU_ENV if k in os.environ})
    return env


def limit_args(uid: int, limits: Limits) -> list[str]:
    """``prlimit`` and ``setpriv``: the limits, then the per-kernel uid without privileges."""
    prlimit = shutil.which("prlimit") or "prlimit"
    setpriv = shutil.which("setpriv") or "setpriv"
    args = [prlimit] + [f"{LIMIT_FLAGS[k]}={int(v)}" for k, v in limits_dict(limits).items()
                        if v is not None] + ["--"]
    return args + [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                   "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]


LIMIT_FLAGS = {"memory": "--as", "cpu_time": "--cpu", "file_size": "--fsize",
               "processes": "--nproc"}


def limits_dict(limits: Limits) -> dict[str, int | None]:
    return {"memory": limits.memory, "cpu_time": limits.cpu_time,
            "file_size": limits.file_size, "processes": limits.processes}


def bwrap_args(*, runtime: str, scratch: str, uid: int, limits: Limits, gpu: bool = False,
               extra_readonly: tuple[str, ...] = (), mask: tuple[str, ...] = (),
               drop: bool = True) -> list[str]:
    """The command prefix that runs a program in the sandbox (see the module docstring).

    runtime: fresh private folder (home, sockets, connection file), writable by ``uid``.
    scratch: the kernel's writable working folder; ``mask``: files in it hidden (read as empty).
    drop: end with ``limit_args`` (``False``: the fork server's holder, which runs as root).
    """
    bwrap = bwrap_path()
    if bwrap is None:
        raise FileNotFoundError("bubblewrap (bwrap) not found on PATH")
    args = [bwrap, "--die-with-parent", "--new-session", "--unshare-net", "--unshare-pid",
            "--unshare-ipc", "--unshare-uts", "--hostname", "grader", "--clearenv"]
    for d in SYSTEM_DIRS:
        if os.path.exists(d):
            args += ["--ro-bind", d, d]
    readonly = readonly_paths() + [os.path.realpath(p) for p in extra_readonly]
    binds = readonly + [runtime, scratch]
    # bwrap would create the mount points' parents mode 0700: the kernel's uid could not pass
    parents = sorted({a for p in binds for a in _ancestors(p)} - {"/tmp"})
    for d in parents:
        if not d.startswith("/tmp/") and not any(d == s or d.startswith(s + "/")
                                                 for s in SYSTEM_DIRS):
            args += ["--perms", "0755", "--dir", d]
    args += ["--dev", "/dev", "--proc", "/proc", "--perms", "1777", "--tmpfs", "/tmp"]
    args += [a for d in parents if d.startswith("/tmp/") for a in ("--perms", "0755", "--dir", d)]
    for p in readonly:
        args += ["--ro-bind", p, p]
    args += ["--bind", runtime, runtime, "--bind", scratch, scratch]
    for p in mask:  # an empty file (not /dev/null: bwrap's binds are nodev)
        args += ["--ro-bind", f"{runtime}/empty", p]
    for name in ("passwd", "group"):
        args += ["--ro-bind", f"{runtime}/{name}", f"/etc/{name}"]
    if gpu:  # untested here: no GPU on the development machine
        for dev in sorted(glob.glob("/dev/nvidia*")):
            args += ["--dev-bind", dev, dev]
        for d in ("/proc/driver/nvidia", "/usr/local/nvidia", "/usr/local/cuda"):  # driver, toolkit
            if os.path.isdir(d) and not any(d == s or d.startswith(s + "/") for s in SYSTEM_DIRS):
                args += ["--ro-bind", d, d]
    for key, value in kernel_env(runtime, gpu).items():
        args += ["--setenv", key, value]
    args += ["--chdir", scratch]
    return args + limit_args(uid, limits) if drop else args


# A Unix socket's path holds at most 107 bytes; the kernel's sockets are "<runtime>/kernel-N".
SOCKET_PATH_MAX = 107


def socket_parent() -> str:
    """Where kernel runtime folders go: the temp folder, or ``/tmp`` when the temp folder's
    path is too long for the kernel's IPC socket paths inside it (a deep ``TMPDIR`` would
    otherwise fail every kernel start with ZMQ's "File name too long")."""
    parent = tempfile.gettempdir()
    longest = os.path.join(parent, "attnkit-kernel-" + "x" * 8, "kernel-65535")
    return parent if len(longest.encode()) <= SOCKET_PATH_MAX else "/tmp"


def make_runtime(uid: int) -> str:
    """A fresh private runtime folder owned by ``uid``: home (with matplotlib's font cache so
    the first plot does not log "building the font cache" to stderr), passwd/group entries."""
    runtime = tempfile.mkdtemp(prefix="attnkit-kernel-", dir=socket_parent())
    home = Path(runtime, "home")
    (home / ".config" / "matplotlib").mkdir(parents=True)
    cache = Path(os.environ.get("MPLCONFIGDIR") or Path.home() / ".cache" / "matplotlib")
    for font_list in cache.glob("fontlist-*.json"):
        shutil.copyfile(font_list, home / ".config" / "matplotlib" / font_list.name)
    for name, line in (("passwd", f"student:x:{uid}:{uid}:student:{home}:/usr/sbin/nologin\n"),
                       ("group", f"student:x:{uid}:\n")):
        host = Path("/etc", name)
        Path(runtime, name).write_text((host.read_text() if host.exists() else "") + line)
    Path(runtime, "empty").touch(mode=0o444)
    for path in [runtime, *(str(p) for p in home.rglob("*")), str(home)]:
        os.lchown(path, uid, uid)
    os.chmod(runtime, 0o700)
    return runtime


def reclaim(folder: str, owner: tuple[int, int] = (os.getuid(), os.getgid())) -> None:
    """After a kernel: give ``folder`` back to the grader and delete what the kernel left in it
    that is not a plain file or folder (symlinks, FIFOs, sockets: a symlink to the solutions
    would otherwise be followed when nbgrader copies the folder into the feedback)."""
    if not os.path.isdir(folder):
        return
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISDIR(mode) or stat.S_ISREG(mode):
                os.lchown(path, *owner)
            else:
                os.unlink(path)
    os.lchown(folder, *owner)


class SandboxKernelManager(AsyncKernelManager):
    """An ``AsyncKernelManager`` whose kernel runs in the bubblewrap sandbox over IPC sockets."""

    memory = Integer(DEFAULT_LIMITS.memory, allow_none=True,
                     help="address-space limit, bytes").tag(config=True)
    cpu_time = Integer(DEFAULT_LIMITS.cpu_time, allow_none=True,
                       help="CPU-time limit, seconds").tag(config=True)
    file_size = Integer(DEFAULT_LIMITS.file_size, allow_none=True,
                        help="file-size limit, bytes").tag(config=True)
    processes = Integer(DEFAULT_LIMITS.processes, allow_none=True,
                        help="processes + threads").tag(config=True)
    gpu = Bool(False, help="bind /dev/nvidia* into the sandbox (untested)").tag(config=True)
    extra_readonly = List(Unicode(), help="more paths visible read-only").tag(config=True)
    fork_server = Bool(True, help="fork the kernel from a process that has imported torch "
                       "(forkserver.py) instead of starting a new Python in the sandbox; the "
                       "exec path is used anyway where forking is not supported, with gpu, "
                       "or when the fork server fails").tag(config=True)
    preload = List(Unicode(), help="modules the fork server imports (the kernel pool sets "
                   "the executor's warm_imports)")

    def __init__(self, **kwargs):
        self.uid = UID_BASE + secrets.randbelow(1 << 20)
        self.runtime = make_runtime(self.uid)
        kwargs.setdefault("transport", "ipc")
        kwargs.setdefault("ip", os.path.join(self.runtime, "kernel"))
        kwargs.setdefault("connection_file", os.path.join(self.runtime, "kernel.json"))
        super().__init__(**kwargs)
        self._scratch: str | None = None
        self._fork_plan: tuple | None = None  # (holder command, kernel argv, env) when forking

    @property
    def limits(self) -> Limits:
        return Limits(memory=self.memory, cpu_time=self.cpu_time, file_size=self.file_size,
                      processes=self.processes)

    @property
    def kernel_spec(self) -> KernelSpec | None:
        spec = super().kernel_spec
        if spec is not None and spec.interrupt_mode != "message":
            spec.interrupt_mode = "message"  # a SIGINT to bwrap would not reach the kernel
        return spec

    def write_connection_file(self, **kwargs) -> None:
        super().write_connection_file(**kwargs)
        os.chown(self.connection_file, self.uid, self.uid)

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        cmd = super().format_kernel_cmd(extra_arguments)
        cwd = (self._launch_args or {}).get("cwd")
        if cwd:
            scratch = os.path.realpath(cwd)
        else:
            scratch = os.path.join(self.runtime, "scratch")
            os.makedirs(scratch, exist_ok=True)
        self._scratch = scratch
        reclaim(scratch, (self.uid, self.uid))
        os.chmod(scratch, 0o700)
        mask = tuple(sorted(str(p) for p in Path(scratch).glob("*.ipynb")))
        prefix = bwrap_args(runtime=self.runtime, scratch=scratch, uid=self.uid,
                            limits=self.limits, gpu=self.gpu,
                            extra_readonly=tuple(self.extra_readonly), mask=mask, drop=False)
        # read-only over the writable binds: the connection file and the grader's records
        pinned = [os.path.realpath(self.connection_file)]
        pinned += sorted(str(p) for p in Path(scratch).glob(".attnkit-*") if p.is_file())
        at = prefix.index("--chdir")
        prefix[at:at] = [a for p in pinned for a in ("--ro-bind", p, p)]
        self._fork_plan = None
        argv = _ipykernel_argv(cmd)
        if (argv and self.fork_server and not self.gpu and forkserver.supported()
                and _forking_works()):
            self._fork_plan = (prefix + [shutil.which("sleep") or "/bin/sleep", "infinity"],
                               argv, kernel_env(self.runtime))
        return prefix + limit_args(self.uid, self.limits) + cmd

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw) -> None:
        # Without JPY_PARENT_PID ipykernel prints a "connect to this kernel" banner on stdout:
        # send the kernel's stdout where its stderr goes (the grading log), not to the console.
        kw.setdefault("stdout", 2)
        if self._fork_plan is not None:
            try:
                return await self._launch_forked(*self._fork_plan, **kw)
            except (OSError, RuntimeError) as exc:  # the exec path still works: use it
                _forking_failed(exc)
                self.log.warning("fork server: %s; starting the kernel in a new Python", exc)
                await self.provisioner.kill()
                await self.provisioner.wait()
        await super()._async_launch_kernel(kernel_cmd, **kw)

    async def _launch_forked(self, holder_cmd: list[str], argv: list[str], inside_env: dict,
                             **kw):
        """bubblewrap holds the sandbox (``sleep``); the fork server's kernel joins it."""
        await super()._async_launch_kernel(holder_cmd, **kw)
        holder = self.provisioner.process
        inside = _holder_inside(holder)
        server = forkserver.server(tuple(self.preload), kernel_env("/nonexistent"))
        pid, pidfd = server.spawn(holder=inside, uid=self.uid, cwd=self._scratch, env=inside_env,
                                  limits=limits_dict(self.limits), argv=argv,
                                  stdout=_fd(kw.get("stdout"), 1), stderr=_fd(kw.get("stderr"), 2))
        self.provisioner.process = ForkedKernel(holder, pid, pidfd)

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        if self._scratch:
            reclaim(self._scratch)
        if not restart:
            shutil.rmtree(self.runtime, ignore_errors=True)

    cleanup_resources = _async_cleanup_resources  # AsyncKernelManager binds the base one

    def __del__(self):
        shutil.rmtree(self.runtime, ignore_errors=True)
        super().__del__()


def _ipykernel_argv(cmd: list[str]) -> list[str] | None:
    """``[python, <flags>, -m, ipykernel_launcher, *args]`` -> ``[ipykernel_launcher, *args]``
    (the kernel's ``sys.argv`` in a forked kernel); None for any other kernel command, or for
    another Python than the grader's (the fork server is the grader's Python)."""
    if "ipykernel_launcher" not in cmd:
        return None
    at = cmd.index("ipykernel_launcher")
    if at < 2 or cmd[at - 1] != "-m" or (
            os.path.realpath(shutil.which(cmd[0]) or cmd[0]) != os.path.realpath(sys.executable)):
        return None
    return cmd[at:]


def _fd(stream, default: int) -> int:
    """The file descriptor behind a Popen-style ``stdout``/``stderr`` argument."""
    if stream is None:
        return default
    return stream if isinstance(stream, int) else stream.fileno()


def _holder_inside(holder: subprocess.Popen, timeout: float = 60.0) -> int:
    """The pid of the holder's ``sleep``, once bubblewrap has built the sandbox around it
    (bubblewrap starts it only then): bwrap -> bwrap's init (PID 1 inside) -> sleep."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if holder.poll() is not None:
            raise RuntimeError(f"the sandbox did not start (bwrap exit {holder.returncode})")
        for init in _children(holder.pid):
            for pid in _children(init):
                try:
                    if Path(f"/proc/{pid}/comm").read_text().strip() == "sleep":
                        return pid
                except OSError:
                    pass
        time.sleep(0.002)
    raise RuntimeError("the sandbox did not start in time")


def _children(pid: int) -> list[int]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            out += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    except OSError:
        pass
    return out


_fork_failures: list[str] = []


def _forking_works() -> bool:
    return not _fork_failures


def _forking_failed(exc: Exception) -> None:
    """After a failure of the fork server itself, this process starts kernels the exec way."""
    _fork_failures.append(f"{type(exc).__name__}: {exc}")


class ForkedKernel:
    """What the provisioner holds for a forked kernel, in ``subprocess.Popen``'s shape: the
    holder (bubblewrap) is the process that is signalled, killed and waited for; the kernel's
    pidfd says when the kernel is gone (then the holder is killed, taking the sandbox down)."""

    stdin = stdout = stderr = None

    def __init__(self, holder: subprocess.Popen, pid: int, pidfd: int):
        self.holder, self.kernel_pid, self.pidfd = holder, pid, pidfd
        self.pid = holder.pid

    @property
    def returncode(self) -> int | None:
        return self.holder.returncode

    def poll(self) -> int | None:
        if self.pidfd is not None and select.select([self.pidfd], [], [], 0)[0]:
            self._close_pidfd()
            if self.holder.poll() is None:
                self.holder.kill()
            self.holder.wait()
        return self.holder.poll()

    def wait(self, timeout: float | None = None) -> int:
        code = self.holder.wait(timeout)
        self._close_pidfd()
        return code

    def send_signal(self, signum: int) -> None:
        self.holder.send_signal(signum)

    def kill(self) -> None:
        self.holder.kill()

    def terminate(self) -> None:
        self.holder.terminate()

    def _close_pidfd(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None

    def __del__(self):
        self._close_pidfd()


def probe() -> str | None:
    """``None`` when the sandbox starts here; otherwise one line saying why it does not.

    Starts ``python -c "import ipykernel, attnkit"`` under the kernel's sandbox command (once
    per process and bwrap executable: the answer is cached).
    """
    bwrap = bwrap_path()
    if bwrap is None:
        name = os.environ.get("ATTNKIT_BWRAP", "bwrap")
        return (f"bubblewrap ({name}) was not found; install the Debian package 'bubblewrap' "
                "(make venv does it when run as root)")
    return _probe(bwrap)


@functools.lru_cache(maxsize=None)
def _probe(bwrap: str, timeout: float = 60.0) -> str | None:
    for tool in ("prlimit", "setpriv"):
        if shutil.which(tool) is None:
            return f"{tool} was not found; install the Debian package 'util-linux'"
    if os.getuid() != 0:
        return ("the sandbox drops to an unprivileged uid per kernel with setpriv, which needs "
                "root; run the grader as root (e.g. in its container)")
    uid = UID_BASE + secrets.randbelow(1 << 20)
    runtime = make_runtime(uid)
    try:
        scratch = os.path.join(runtime, "scratch")
        os.makedirs(scratch)
        os.chown(scratch, uid, uid)
        cmd = bwrap_args(runtime=runtime, scratch=scratch, uid=uid, limits=DEFAULT_LIMITS)
        code = "import os, ipykernel, attnkit; print('sandbox ok', os.getuid())"
        try:
            done = subprocess.run(cmd + [sys.executable, "-c", code], capture_output=True,
                                  text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"the sandbox did not start: {type(exc).__name__}: {exc}"
        if done.returncode != 0 or f"sandbox ok {uid}" not in done.stdout:
            lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
            return f"the sandbox did not start (exit {done.returncode}): {lines[-1][:200]}"
        return None
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
