"""Sandboxed kernels forked from a process that has already imported torch (a fork server).

Starting a grading kernel costs about 6 s of CPU, nearly all of it importing torch,
torch._dynamo, IPython and attnkit; a student's a1 cells take one or two. On a two-core machine
that import is what bounds a class's grading rate. Here it is paid once per grading process:
:class:`ForkServer` starts ``python -m attnkit.guard.forkserver`` (the server and the kernel side,
described there) in a clean process: the kernel's environment, ``/`` as its folder, none of the
grader's file descriptors, no gradebook, notebook or secret in its memory.

The sandbox's kernel manager (``sandbox.SandboxKernelManager``) starts bubblewrap as before, with
the student's mounts, namespaces and scratch folder, but runs ``sleep infinity`` in it (the
*holder*, as root, without limits) instead of the kernel, then asks the server for a kernel in
the holder's namespaces. It sees the kernel as gone when the pidfd says so and then kills the
holder; killing the holder (bubblewrap) ends the PID namespace and every process in it, the
kernel and whatever the student started, exactly as for an exec'd kernel. Each forked kernel
serves one student and is destroyed after.

The server needs root (``setns`` into namespaces made by root, ``setresuid``) and Linux 5.3 or
later (``pidfd_open``); without them, with GPU binds (CUDA is left to the exec path), or once the
server fails in a process, kernels start the exec way.
"""
from __future__ import annotations

import atexit
import json
import os
import socket
import subprocess
import sys
import threading

from attnkit.guard.forkserver import MESSAGE


def supported() -> bool:
    """Whether kernels can be forked into sandboxes here (root, pidfds, setns)."""
    return (sys.platform == "linux" and os.getuid() == 0 and hasattr(os, "pidfd_open")
            and hasattr(socket, "send_fds"))


class ForkServer:
    """The grader's handle on one server process (see the module docstring)."""

    def __init__(self, modules: tuple[str, ...], env: dict[str, str], timeout: float = 300.0):
        self.modules, self.env = tuple(modules), dict(env)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "attnkit.guard.forkserver", str(theirs.fileno()),
             *self.modules],
            pass_fds=[theirs.fileno()], env=self.env, cwd="/", stdin=subprocess.DEVNULL,
            # not the grader's stdout or stderr: a server that outlived its grader would keep
            # the pipes of whoever reads them open (kernels get their log through the socket)
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        theirs.close()
        self.sock = ours
        self.lock = threading.Lock()
        ours.settimeout(timeout)
        try:
            ready = ours.recv(16)
        except OSError as exc:
            self.close()
            raise RuntimeError(f"the fork server did not start: {exc}") from exc
        if ready != b"ready":
            self.close()
            raise RuntimeError(f"the fork server did not start (exit {self.process.wait()})")

    def spawn(self, *, holder: int, uid: int, cwd: str, env: dict, limits: dict, argv: list,
              stdout: int, stderr: int) -> tuple[int, int]:
        """Fork a kernel into the namespaces of process ``holder``: (its pid, a pidfd on it)."""
        request = {"holder": holder, "uid": uid, "cwd": cwd, "env": env, "limits": limits,
                   "argv": argv}
        with self.lock:
            try:
                socket.send_fds(self.sock, [json.dumps(request).encode()], [stdout, stderr])
                data, fds, _, _ = socket.recv_fds(self.sock, MESSAGE, 1)
            except OSError as exc:  # no answer in time: a late one would answer the next request
                self.close()
                raise RuntimeError(f"the fork server did not answer: {exc}") from exc
        if not data:
            raise RuntimeError("the fork server exited")
        reply = json.loads(data)
        if "error" in reply:
            for fd in fds:
                os.close(fd)
            raise RuntimeError(f"the fork server could not start the kernel: {reply['error']}")
        return int(reply["pid"]), fds[0]

    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        self.sock.close()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


_servers: dict[tuple, ForkServer] = {}
_servers_lock = threading.Lock()


def server(modules: tuple[str, ...], env: dict[str, str]) -> ForkServer:
    """This process's server for ``modules`` and ``env`` (started on first use, restarted when it
    died; the others are closed: one server per grading process)."""
    key = (tuple(modules), tuple(sorted(env.items())))
    with _servers_lock:
        current = _servers.get(key)
        if current is not None and current.alive():
            return current
        for old in _servers.values():
            old.close()
        _servers.clear()
        _servers[key] = ForkServer(modules, env)
        return _servers[key]


@atexit.register
def close_servers() -> None:
    with _servers_lock:
        for old in _servers.values():
            old.close()
        _servers.clear()
