"""The guard's audit hook: the operations a grading kernel refuses once the guard is installed.

``sys.addaudithook`` hooks cannot be removed, so the refusals hold for the rest of the kernel's
life. The hook reads the installed guard from :mod:`attnkit.guard.core` and does nothing before
it is installed.
"""
from __future__ import annotations

import importlib.util
import os
import sys

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


def _package_dir(name: str) -> str | None:
    """The folder of package ``name`` (with a trailing separator), found without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.join(os.path.realpath(list(spec.submodule_search_locations)[0]), "")


# The compilers a graded notebook may run: torch.compile (dynamo rewrites bytecode into new code
# objects and compiles generated source under made-up file names; inductor builds C++ with the
# system compiler and checks the CPU's vector units by running this Python) and Triton (ptxas and
# a C compiler on a GPU). From their own frames, and for a process only when it runs one of
# these programs, those operations are allowed.
_COMPILER_DIRS = tuple(d for d in map(_package_dir, ("torch._dynamo", "torch._inductor",
                                                     "torch._functorch", "triton")) if d)
_COMPILER_EVENTS = {"code.__new__", "compile", "subprocess.Popen", "os.posix_spawn"}
_COMPILER_PROGRAMS = {"g++", "gcc", "c++", "cc", "clang", "clang++", "ld", "ptxas", "nvcc", "nvdisasm",
                      "cuobjdump", "openssl"}


def _from_compiler(event: str, args: tuple) -> bool:
    """``event`` comes from torch.compile's or Triton's own code, and starts no other program."""
    if event in ("subprocess.Popen", "os.posix_spawn"):
        program = args[0] if args and args[0] is not None else None
        if program is None and len(args) > 1 and args[1]:
            argv = args[1]
            program = argv[0] if isinstance(argv, (list, tuple)) else str(argv).split()[0]
        if program is None:
            return False
        program = os.fsdecode(program)
        if os.path.basename(program) not in _COMPILER_PROGRAMS and \
                os.path.realpath(program) != os.path.realpath(sys.executable):
            return False
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_filename.startswith(_COMPILER_DIRS):
            return True
        frame = frame.f_back
    return False


def audit(event: str, args: tuple) -> None:
    g = core.active
    if g is None:
        return
    if event in _COMPILER_EVENTS and _COMPILER_DIRS and _from_compiler(event, args):
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
