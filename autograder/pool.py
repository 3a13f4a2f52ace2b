"""Grading kernels started ahead of the student who will use them: a per-process pool.

Starting a kernel and importing torch and attnkit takes seconds of CPU; the student's cells
often take less. ``ResilientExecute`` (``execute.py``) therefore takes each kernel from the pool of
its process (:func:`kernel_pool`): the pool hands over the kernel it started earlier, if it was
started the same way (same kernel manager class and settings, same environment), and starts the
next one at once, so that it boots while this student's cells, nbgrader's bookkeeping and the
feedback run (a lookahead of one kernel per grading process).

What is pre-warmed, and what is not:

- the kernel process, in its sandbox (``sandbox.SandboxKernelManager``: its own uid, namespaces,
  limits), with its IPC sockets and connection file;
- the imports of ``warm_imports`` (``attnkit.guard``, hence torch and attnkit), run by IPython
  while the kernel boots (``IPKernelApp.exec_lines``, outside the history: execution counts and
  the user namespace are what they were);
- NOT the guard: ``protect.prepare`` still puts its install cell first in the notebook, and it
  runs, with this notebook's hashes and key, before any cell of the student.

Every kernel serves exactly one run of one notebook: ``take`` removes it from the pool, and the
executor shuts it down at the end of that run; a restart after a crash takes another one. A
kernel is never handed back.

The kernel's working folder is a fresh *scratch* folder made for it at start (the student's
folder does not exist yet when the kernel boots). ``Lease.load`` copies the notebook folder's
files into it (the notebooks themselves as empty read-only files, nbgrader's and the executor's
records not at all) and ``Lease.release`` copies back what the kernel left there (plain files and
folders only, no links) once the kernel is gone, then removes the scratch folder.

The pool of a process is closed (unused kernels killed, their folders removed) by ``close()``:
``dispatch.py`` calls it after an in-process run; worker processes close theirs when they exit
(``atexit``; a local worker turns SIGTERM into an exit for that).
"""
from __future__ import annotations

import atexit
import os
import shutil
import stat
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_core.utils import run_sync

# Files of the notebook folder the kernel never gets: the executor's and the guard's records.
RECORDS = ".attnkit-"


@dataclass
class Lease:
    """A started kernel manager ``km``, its scratch folder, and what it was started with."""

    km: object
    base: str  # holds scratch/ and kernel.log (the kernel's stdout and stderr)
    key: tuple
    started: float = field(default_factory=time.monotonic)
    log_file: object = None

    @property
    def scratch(self) -> str:
        return os.path.join(self.base, "scratch")

    @property
    def pid(self) -> int | None:
        provisioner = getattr(self.km, "provisioner", None)
        return getattr(provisioner, "pid", None)

    def load(self, folder: str | None) -> None:
        """Copy the notebook folder's files into the scratch folder (see the module docstring)."""
        if not folder or not os.path.isdir(folder):
            return
        _copy_tree(folder, self.scratch, top=True)
        uid = getattr(self.km, "uid", None)
        if uid is not None:  # the sandbox's kernel works there as its own uid
            from .sandbox import reclaim
            reclaim(self.scratch, (uid, uid))
        for name in os.listdir(folder):  # the notebooks (hidden tests!) masked: empty, read-only
            if name.endswith(".ipynb") and os.path.isfile(os.path.join(folder, name)):
                path = os.path.join(self.scratch, name)
                with open(path, "w"):
                    pass
                os.chmod(path, 0o444)

    def release(self, folder: str | None) -> None:
        """Make sure the kernel is gone, copy back what it left in scratch, remove scratch."""
        _stop(self.km)
        if self.log_file is not None:
            self.log_file.close()
        try:
            if folder and os.path.isdir(folder) and os.path.isdir(self.scratch):
                _copy_tree(self.scratch, folder, top=True)
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def kernel_log(self) -> str:
        try:
            return Path(self.base, "kernel.log").read_text(errors="replace")
        except OSError:
            return ""


def _copy_tree(src: str, dest: str, *, top: bool = False) -> None:
    """Copy plain files and folders of ``src`` into ``dest`` (no links, FIFOs or sockets); at the
    top level skip notebooks and the grader's records."""
    os.makedirs(dest, exist_ok=True)
    for name in os.listdir(src):
        if top and (name.endswith(".ipynb") or name.startswith(RECORDS)):
            continue
        s, d = os.path.join(src, name), os.path.join(dest, name)
        mode = os.lstat(s).st_mode
        if stat.S_ISDIR(mode):
            if os.path.lexists(d) and not os.path.isdir(d):
                os.unlink(d)
            _copy_tree(s, d)
        elif stat.S_ISREG(mode):
            if os.path.lexists(d) and (os.path.islink(d) or os.path.isdir(d)):
                shutil.rmtree(d) if os.path.isdir(d) and not os.path.islink(d) else os.unlink(d)
            shutil.copyfile(s, d, follow_symlinks=False)


def _stop(km) -> None:
    """Shut the kernel of ``km`` down at once (if it still runs) and free its resources."""
    if _alive(km):
        try:
            run_sync(km.shutdown_kernel)(now=True)
        except Exception:  # the loop is gone (exiting): kill the process directly
            process = getattr(getattr(km, "provisioner", None), "process", None)
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(5)
    try:
        run_sync(km.cleanup_resources)()
    except Exception:
        pass
    runtime = getattr(km, "runtime", None)
    if runtime:
        shutil.rmtree(runtime, ignore_errors=True)


def _config_key(km_class, config) -> str:
    """The settings a kernel manager of ``km_class`` reads from ``config`` (its classes' sections)."""
    names = [c.__name__ for c in km_class.mro()]
    return repr(sorted((n, repr(config[n])) for n in names if n in config))


class KernelPool:
    """Kernels started ahead, for one process (or thread): ``take`` one, ``close`` at the end."""

    def __init__(self, lookahead: int = 1):
        self.lookahead = lookahead
        self.ready: list[Lease] = []
        self.started = 0  # kernels this pool started (statistics and tests)
        self.hits = 0  # kernels handed over already started

    # The executor calls these two.

    def take(self, executor) -> Lease:
        """A kernel started with ``executor``'s settings: one started earlier, or a new one."""
        key = self._key(executor)
        lease = None
        while self.ready:
            candidate = self.ready.pop(0)
            if candidate.key == key and _alive(candidate.km):
                lease = candidate
                self.hits += 1
                break
            candidate.release(None)  # other settings (another run), or it died: discard
        if lease is None:
            lease = self._start(executor, key)
        self.fill(executor)
        return lease

    def fill(self, executor) -> None:
        """Start kernels until ``lookahead`` wait for the next students."""
        key = self._key(executor)
        while self.lookahead > 0 and len(self.ready) < self.lookahead:
            self.ready.append(self._start(executor, key))

    def close(self) -> None:
        """Kill the kernels nobody took and remove their folders."""
        while self.ready:
            self.ready.pop().release(None)

    # ------------------------------------------------------------------

    @staticmethod
    def _key(executor) -> tuple:
        cls = executor.kernel_manager_class
        return (f"{cls.__module__}.{cls.__qualname__}", executor.kernel_name,
                tuple(executor.extra_arguments), tuple(executor.warm_imports),
                executor.ipython_hist_file, _config_key(cls, executor.config),
                tuple(sorted(os.environ.items())))

    def _start(self, executor, key) -> Lease:
        base = tempfile.mkdtemp(prefix="attnkit-scratch-")
        os.makedirs(os.path.join(base, "scratch"))
        km = executor.kernel_manager_class(kernel_name=executor.kernel_name, config=executor.config)
        if km.has_trait("preload"):  # the sandbox's fork server imports them once, up front
            km.preload = list(executor.warm_imports)
        lease = Lease(km, base, key)
        args = list(executor.extra_arguments)
        if getattr(km, "ipykernel", False):
            args += [f"--HistoryManager.hist_file={executor.ipython_hist_file}"]
            if executor.warm_imports:
                # run by IPython at boot, outside the history; binds no name in the namespace
                code = "; ".join(f"import {m} as _attnkit_warm; del _attnkit_warm"
                                 for m in executor.warm_imports)
                args += [f"--IPKernelApp.exec_lines={code}"]
        lease.log_file = open(os.path.join(base, "kernel.log"), "ab", buffering=0)
        try:
            run_sync(km.start_kernel)(extra_arguments=args, cwd=lease.scratch,
                                      stdout=lease.log_file, stderr=lease.log_file)
        except BaseException:
            lease.release(None)
            raise
        self.started += 1
        return lease


def _alive(km) -> bool:
    try:
        return bool(km.has_kernel and run_sync(km.is_alive)())
    except Exception:
        return False


_local = threading.local()
_all: list[KernelPool] = []


def kernel_pool() -> KernelPool:
    """The pool of this thread (a grading process grades one student at a time per thread)."""
    pool = getattr(_local, "pool", None)
    if pool is None:
        pool = _local.pool = KernelPool()
        if not _all:
            atexit.register(close_pools)
        _all.append(pool)
    return pool


def close_pools() -> None:
    """Close every pool of this process (their kernels were started, never used)."""
    for pool in list(_all):
        pool.close()
