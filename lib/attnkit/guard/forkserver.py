"""The kernel side of a fork server: sandboxed IPython kernels forked from a process that has
already imported torch.

Starting an IPython kernel that imports torch, torch._dynamo and attnkit costs about 6 s of CPU;
a student's notebook often takes less. ``serve`` runs in a clean process (started by the grader
with the kernel's environment, nothing else of its own) that imports those modules once and
then, for each request, forks a kernel into the namespaces of a sandbox that bubblewrap has
built around a placeholder process (the *holder*, ``sleep infinity``):

- the child joins the holder's IPC, UTS, network, PID and mount namespaces (``setns``; root and
  working folder become the sandbox's), then forks again (a new PID namespace applies to
  children only);
- that grandchild becomes the kernel, doing what bubblewrap, ``prlimit`` and ``setpriv`` do for
  an exec'd kernel: a new session; stdin ``/dev/null``, stdout and stderr the kernel log, every
  other file descriptor closed; the environment replaced; the working folder; the resource
  limits; the capability bounding set dropped; no supplementary groups; the per-kernel uid and
  gid; ``no_new_privs``. Then it runs ``ipykernel`` with the connection file it was given;
- the child hands back a pidfd of the kernel (opened while it is still the kernel's parent, so
  the pid cannot be reused in between) and exits.

The code lives in attnkit (mounted read-only in every sandbox) because its frames stay at the
bottom of the kernel's stack, where the grading guard must see library code, not unknown code.
What a kernel inherits from the server is the server's memory: imported modules and nothing
else (``random`` reseeds itself after a fork; numpy's global generator is reseeded here).

Protocol, on a ``SOCK_SEQPACKET`` socket: the server sends ``ready`` once imported; each request
is one JSON message (``holder`` pid, ``uid``, ``cwd``, ``env``, ``limits``, ``argv``) with the
kernel's stdout and stderr descriptors attached; the answer is ``{"pid": ...}`` with the pidfd
attached, or ``{"error": ...}``. The server exits when the socket closes.
"""
from __future__ import annotations

import ctypes
import json
import os
import resource
import socket
import sys

PR_CAPBSET_DROP, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 24, 4, 38
NAMESPACES = ("ipc", "uts", "net", "pid", "mnt")  # mnt last: it changes what /proc/<pid> means
LIMITS = {"memory": resource.RLIMIT_AS, "cpu_time": resource.RLIMIT_CPU,
          "file_size": resource.RLIMIT_FSIZE, "processes": resource.RLIMIT_NPROC}
MESSAGE = 1 << 20
CHILD_TIMEOUT = 30.0  # seconds the child may take to join the namespaces and fork the kernel

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")



def serve(control: int, modules: list[str]) -> None:
    """The server's main loop on the socket ``control``: import ``modules``, then fork a kernel
    for each request until the other end closes the socket: when the grader exits, however it
    ends, its end closes. (Not a parent-death signal: that follows the thread that started the
    server, and a grading thread may end before its process.)"""
    os.closerange(3, control)
    os.closerange(control + 1, os.sysconf("SC_OPEN_MAX"))
    import warnings
    warnings.filterwarnings("ignore", message=".*fork.*")  # torch's idle thread is not copied
    for name in ["ipykernel.kernelapp", *modules]:
        __import__(name)
    last_cap = int(open("/proc/sys/kernel/cap_last_cap").read())
    sock = socket.socket(fileno=control)
    sock.sendall(b"ready")
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(sock, MESSAGE, 2)
        except OSError:
            return
        if not data:
            return  # the grader closed the socket
        reply, out = _spawn(json.loads(data), fds, last_cap)
        for fd in fds:
            os.close(fd)
        socket.send_fds(sock, [json.dumps(reply).encode()], out)
        for fd in out:
            os.close(fd)


def _spawn(request: dict, fds: list[int], last_cap: int) -> tuple[dict, list[int]]:
    """Fork the kernel of ``request`` into the holder's namespaces: ({"pid"}, [pidfd]) or
    ({"error"}, [])."""
    parent, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    child = os.fork()
    if child == 0:  # joins the namespaces, forks the kernel, hands back its pidfd, exits
        try:
            parent.close()
            for ns in NAMESPACES:
                fd = os.open(f"/proc/{int(request['holder'])}/ns/{ns}", os.O_RDONLY)
                _check(_libc.setns(fd, 0), f"setns({ns})")
                os.close(fd)
            kernel = os.fork()
            if kernel == 0:
                _become_kernel(request, fds, last_cap)  # does not return
            pidfd = os.pidfd_open(kernel)
            socket.send_fds(child_end, [json.dumps({"pid": kernel}).encode()], [pidfd])
            os._exit(0)
        except BaseException as exc:  # noqa: BLE001 - said to the server, then gone
            try:
                child_end.send(json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
            finally:
                os._exit(1)
    child_end.close()
    parent.settimeout(CHILD_TIMEOUT)
    try:
        data, out, _, _ = socket.recv_fds(parent, MESSAGE, 1)
    except OSError as exc:  # stuck (it should take milliseconds): kill it, say so, serve on
        os.kill(child, 9)
        data, out = json.dumps({"error": f"the fork server's child did not answer: {exc}"}), []
    finally:
        parent.close()
        os.waitpid(child, 0)
    reply = json.loads(data) if data else {"error": "the fork server's child died"}
    return reply, list(out)


def _become_kernel(request: dict, fds: list[int], last_cap: int) -> None:
    """In the sandbox's namespaces, as root: become the student's kernel (never returns)."""
    code = 1
    try:
        os.setsid()
        stdout, stderr = fds
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(stdout, 1)
        os.dup2(stderr, 2)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for name, value in request["limits"].items():
            if value is not None:
                resource.setrlimit(LIMITS[name], (int(value), int(value)))
        for cap in range(last_cap + 1):
            _check(_libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), "prctl(CAPBSET_DROP)")
        uid = int(request["uid"])
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)  # root's capabilities go with it
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
        _check(_libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0), "prctl(DUMPABLE)")  # as after an exec
        if "numpy" in sys.modules:
            sys.modules["numpy"].random.seed()
        sys.argv = list(request["argv"])
        from ipykernel.kernelapp import launch_new_instance
        launch_new_instance()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - into the kernel log
        import traceback
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.argv[2:])
