"""The guard's audit hook: the operations a grading kernel refuses once the guard is installed.

``sys.addaudithook`` hooks cannot be removed, so the refusals hold for the rest of the kernel's
life. The hook reads the installed guard from :mod:`attnkit.guard.core` and does nothing before
it is installed.
"""
from __future__ import annotations

import os

from . import core
from .errors import GuardError


_PROCESS_EVENTS = {"os.fork", "os.forkpty", "os.posix_spawn", "os.system", "os.exec", "os.spawn",
                   "subprocess.Popen", "pty.spawn", "os.startfile"}
_KILL_EVENTS = {"os.kill", "os.killpg", "signal.pthread_kill"}
_SIGINT = 2  # signal.SIGINT on every POSIX system
_REFUSED_EVENTS = {"sys.settrace": "sys.settrace (tracing can skip test lines)",
                   "sys.setprofile": "sys.setprofile",
                   "gc.get_objects": "gc.get_objects", "gc.get_referrers": "gc.get_referrers",
                   "gc.get_referents": "gc.get_referents",
                   "socket.connect": "network access", "socket.bind": "network access",
                   "socket.sendto": "network access", "socket.getaddrinfo": "network access",
                   "sqlite3.connect": "opening an SQLite database (the gradebook)",
                   "code.__new__": "creating code objects", "sys.addaudithook": "adding an audit hook"}


def audit(event: str, args: tuple) -> None:
    g = core.active
    if g is None:
        return
    reason = None
    if event in _REFUSED_EVENTS:
        reason = _REFUSED_EVENTS[event]
    elif event in _PROCESS_EVENTS:
        reason = f"starting a process ({event})"
    elif event == "os.kill" and len(args) == 2 and args[0] == os.getpid() \
            and args[1] == _SIGINT:
        return  # ipykernel answers an interrupt_request by sending itself SIGINT: harmless
    elif event in _KILL_EVENTS:
        reason = f"sending signals ({event})"
    elif event.startswith("ctypes."):
        reason = f"ctypes ({event})"
    elif event == "object.__setattr__":
        reason = g.check_setattr(args)
    elif event == "compile":
        reason = g.check_compile(args)
    elif event in ("open", "os.listdir", "os.scandir") and g.deny:
        reason = g.check_path(args[0] if args else None)
    if reason:
        g.flag(f"refused {reason}")
        raise GuardError(f"the grading guard refused {reason}")


def refuse_exit(*args, **kwargs):
    if core.active is not None:
        core.active.flag("refused ending the kernel (os._exit/os.abort)")
    raise GuardError("the grading guard refused ending the kernel (os._exit/os.abort)")
