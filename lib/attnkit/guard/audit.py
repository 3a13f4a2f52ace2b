"""The guard's audit hook: the operations a grading kernel refuses once the guard is installed.

``sys.addaudithook`` hooks cannot be removed, so the refusals hold for the rest of the kernel's
life. The hook reads the installed guard from :mod:`attnkit.guard.core` and does nothing before
it is installed.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
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
# a C compiler on a GPU). Those operations are allowed only when the compiler's own code does
# them, reached the way a notebook uses it (see ``_from_compiler``).
_COMPILER_DIRS = tuple(d for d in map(_package_dir, ("torch._dynamo", "torch._inductor",
                                                     "torch._functorch", "triton")) if d)
_TORCH_COMPILER_DIRS = tuple(d for d in map(_package_dir, ("torch._dynamo", "torch._inductor")) if d)
_TRITON_DIR = _package_dir("triton")
# Where student code may enter the compilers: calling a torch.compile'd function (dynamo's
# eval_frame) and launching a Triton kernel. Calling other internals directly (inductor's
# cpp_builder, dynamo's bytecode tools...) does not get the compilers' freedom.
_ENTRIES = tuple(os.path.join(d, f) for d, f in (
    (_package_dir("torch._dynamo"), "eval_frame.py"),
    (_TRITON_DIR, os.path.join("runtime", "jit.py")),
    (_TRITON_DIR, os.path.join("runtime", "autotuner.py")),
    (_TRITON_DIR, os.path.join("runtime", "interpreter.py"))) if d)
_STDLIB = os.path.join(os.path.realpath(os.path.dirname(os.__file__)), "")
# the folder holding the attnkit package (library code)
_LIB = os.path.realpath(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
_COMPILER_EVENTS = {"code.__new__", "compile", "subprocess.Popen", "os.posix_spawn"}
_COMPILER_PROGRAMS = {"g++", "gcc", "c++", "cc", "clang", "clang++", "ld", "ptxas", "nvcc", "nvdisasm",
                      "cuobjdump", "openssl"}
# Compiler options that run other programs or load code (gcc -wrapper/-B/-fplugin/-specs,
# linker plugins, response files that could hold them).
_BAD_OPTIONS = ("-wrapper", "-B", "-fplugin", "-specs", "--specs", "-plugin", "--plugin", "@",
                "-Wl,-plugin", "-Wl,--plugin", "-Xlinker")
# Environment variables that make a compiler or Python run other code: a child may not get
# values other than the kernel had when the guard installed.
_BAD_ENV = ("LD_PRELOAD", "LD_AUDIT", "GCC_EXEC_PREFIX", "COMPILER_PATH", "PYTHONPATH",
            "PYTHONSTARTUP", "PYTHONHOME", "PYTHONUSERBASE", "PYTHONINSPECT", "PYTHONEXECUTABLE",
            "PYTHONSAFEPATH", "PYTHONPLATLIBDIR")
# Set by ``capture_baseline`` at install: the environment and inductor's CPU probe (the one
# program this Python may be started with), read before any student code runs.
_BASELINE: dict = {}


def capture_baseline() -> None:
    """Remember the kernel's environment and the text of inductor's vector-ISA probe.

    The probe's Python gets ``PYTHONPATH`` from inductor (``TORCH_CUSTOM_PYTHONPATH``, else the
    kernel's ``sys.path``, which holds the student's folder): it is set here to the trusted
    entries of ``sys.path`` only, with ``PYTHONSAFEPATH`` (the child's working folder, the
    student's, is not searched either), so a ``sitecustomize.py`` or ``ctypes.py`` the student
    writes is never imported by it. Student code changing these variables is refused (``os.putenv``).
    """
    _BASELINE["system"] = tuple(os.path.join(os.path.realpath(p), "") for p in (
        "/usr", "/bin", "/sbin", "/lib", "/lib64", "/opt", sys.prefix, sys.base_prefix))
    trusted = [p for p in sys.path if p and os.path.isabs(p) and (
        os.path.join(os.path.realpath(p), "").startswith(_BASELINE["system"])
        or os.path.realpath(p) == _LIB)]
    os.environ["TORCH_CUSTOM_PYTHONPATH"] = os.pathsep.join(trusted)
    os.environ["PYTHONSAFEPATH"] = "1"
    _BASELINE["env"] = {k: os.environ.get(k) for k in _BAD_ENV}
    _BASELINE["pythonpath"] = os.environ["TORCH_CUSTOM_PYTHONPATH"]
    caches = []
    try:
        from torch._inductor.runtime.cache_dir_utils import cache_dir

        caches.append(cache_dir())
    except Exception:  # noqa: BLE001
        pass
    try:
        from triton.runtime.cache import default_cache_dir

        caches.append(default_cache_dir())
    except Exception:  # noqa: BLE001
        pass
    _BASELINE["generated"] = ("<eval_with_key>",) + tuple(os.path.join(os.path.realpath(c), "") for c in caches)
    _BASELINE["ld_library_path"] = os.environ.get("LD_LIBRARY_PATH")
    try:
        from torch._inductor.cpu_vec_isa import VecISA

        before, _, after = VecISA._avx_py_load.partition("__lib_path__")
        _BASELINE["probe"] = (before, after)
    except Exception:  # noqa: BLE001 -- no inductor: no Python child at all
        _BASELINE["probe"] = None


def _safe_process(args: tuple) -> bool:
    """A process the compilers may start: a system compiler without options that run other
    programs, or this Python running inductor's CPU probe, with the kernel's environment."""
    program = args[0] if args and args[0] is not None else None
    argv = list(args[1]) if len(args) > 1 and isinstance(args[1], (list, tuple)) else (
        str(args[1]).split() if len(args) > 1 and args[1] else [])
    if program is None and argv:
        program = argv[0]
    if program is None:
        return False
    program = os.fsdecode(program)
    argv = [os.fsdecode(a) if isinstance(a, (bytes, str)) else str(a) for a in argv]
    env = args[3] if len(args) > 3 else None
    env = dict(os.environ) if env is None else {os.fsdecode(k): os.fsdecode(v) for k, v in dict(env).items()}
    for key in _BAD_ENV:
        value = env.get(key)
        if value != _BASELINE.get("env", {}).get(key) and not (
                key == "PYTHONPATH" and value == _BASELINE.get("pythonpath")):
            return False
    for entry in (env.get("LD_LIBRARY_PATH") or "").split(os.pathsep):
        if entry and entry not in (_BASELINE.get("ld_library_path") or "").split(os.pathsep) and \
                not os.path.join(os.path.realpath(entry), "").startswith(_BASELINE.get("system", ())):
            return False
    if os.path.realpath(program) == os.path.realpath(sys.executable):
        probe = _BASELINE.get("probe")
        if probe is None or len(argv) != 3 or argv[1] != "-c":
            return False
        before, after = probe
        code = argv[2]
        middle = code[len(before):len(code) - len(after)] if len(code) >= len(before) + len(after) else None
        return (code.startswith(before) and code.endswith(after) and middle is not None
                and not any(c in middle for c in "\"'\\\n"))
    if os.path.basename(program) not in _COMPILER_PROGRAMS:
        return False
    resolved = program if os.sep in program else shutil.which(program, path=env.get("PATH"))
    if resolved is None or not os.path.join(os.path.realpath(resolved), "").startswith(_BASELINE.get("system", ())):
        return False
    return not any(a.startswith(_BAD_OPTIONS) for a in argv[1:])


def _generated(filename: str) -> bool:
    """Code torch generated and runs: FX graph modules, inductor's and Triton's cache."""
    return filename.startswith(_BASELINE.get("generated", ("<eval_with_key>",)))


def _innermost_kind(g) -> str:
    """The kind (``Guard._frame_kind``) of the innermost frame outside the standard library."""
    frame = sys._getframe(3)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not (filename.startswith(_STDLIB) and "site-packages" not in filename):
            return g._frame_kind(filename)
        frame = frame.f_back
    return "library"


def _from_compiler(event: str, args: tuple, g) -> bool:
    """``event`` comes from torch.compile's or Triton's own code, reached the way a notebook
    uses them, and starts no other program.

    The innermost frame outside the standard library must be the compilers' own; and a
    compiler frame that student code calls directly must be an entry point (a compiled
    function being called, a Triton kernel being launched; for processes, Triton's launch
    path only), not an internal such as inductor's ``cpp_builder`` or dynamo's bytecode tools.
    """
    process = event in ("subprocess.Popen", "os.posix_spawn")
    if process and not _safe_process(args):
        return False
    frame = sys._getframe(2)
    innermost = True
    while frame is not None:
        filename = frame.f_code.co_filename
        if innermost:
            if filename.startswith(_STDLIB) and "site-packages" not in filename:
                frame = frame.f_back
                continue
            if not filename.startswith(_COMPILER_DIRS):
                return False
            innermost = False
        back = frame.f_back
        if filename.startswith(_COMPILER_DIRS) and back is not None and \
                g._frame_kind(back.f_code.co_filename) == "student" and not _generated(back.f_code.co_filename):
            if filename.startswith(_TORCH_COMPILER_DIRS) or process:
                if filename not in _ENTRIES:
                    return False
        frame = back
    return not innermost


def audit(event: str, args: tuple) -> None:
    g = core.active
    if g is None:
        return
    if event in _COMPILER_EVENTS and _COMPILER_DIRS and _from_compiler(event, args, g):
        return
    reason = None
    if event in _REFUSED_EVENTS:
        reason = _REFUSED_EVENTS[event]
    elif event in _PROCESS_EVENTS:
        reason = f"starting a process ({event})"
    elif event == "os.kill" and len(args) == 2 and args[0] == os.getpid() \
            and args[1] == _SIGINT:
        return  # ipykernel answers an interrupt_request by sending itself SIGINT: harmless
    elif event == "os.killpg" and len(args) == 2 and args[0] == os.getpid() == os.getpgid(0) \
            and args[1] == _SIGINT:
        return  # the same, to its own process group when the kernel leads one (a forked kernel)
    elif event in _KILL_EVENTS:
        reason = f"sending signals ({event})"
    elif event.startswith("ctypes."):
        reason = f"ctypes ({event})"
    elif event in ("os.putenv", "os.unsetenv") and args:
        key = os.fsdecode(args[0])
        if key in _BAD_ENV or key == "TORCH_CUSTOM_PYTHONPATH":
            reason = f"changing the environment variable {key}"
    elif event == "object.__setattr__":
        reason = g.check_setattr(args)
    elif event == "compile":
        reason = g.check_compile(args)
        if reason is None and len(args) > 1 and isinstance(args[1], str) and _generated(args[1]) \
                and _innermost_kind(g) != "library":
            reason = f"compiling code under the name of code torch generates ({args[1]})"
    elif event in ("open", "os.listdir", "os.scandir") and g.deny:
        reason = g.check_path(args[0] if args else None)
    if reason:
        g.flag(f"refused {reason}")
        raise GuardError(f"the grading guard refused {reason}")


def refuse_exit(*args, **kwargs):
    if core.active is not None:
        core.active.flag("refused ending the kernel (os._exit/os.abort)")
    raise GuardError("the grading guard refused ending the kernel (os._exit/os.abort)")
