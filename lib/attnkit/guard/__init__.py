"""The grading guard: protections that run inside the grading kernel, before any student code.

The grading pipeline puts a locked first cell into each submission before
it runs; that cell calls :func:`install` with the grade cells' source hashes, the cells the
instructor wrote (locked cells), the names only the student's cells define, the library
references that must refuse student callers, and paths the kernel must not open. Defence in
depth, layer by layer:

1. **An audit hook** (``sys.addaudithook``; it cannot be removed) refuses, once installed:
   ``sys.settrace``/``sys.setprofile`` (jumping over test lines), ``gc.get_objects``/
   ``get_referrers``/``get_referents`` (reaching hidden objects), every ``ctypes.*`` event
   (raw memory), ``os.kill``/``os.killpg``/``signal.pthread_kill``, process creation
   (``os.fork``/``forkpty``/``posix_spawn``/``system``/``exec``/``spawn``, ``subprocess.Popen``,
   ``pty.spawn``), network (``socket.connect``/``bind``/``sendto``/``getaddrinfo``),
   ``sqlite3.connect`` (the gradebook), ``compile`` of code under the name of an instructor's
   cell or of a library file with other text, ``code.__new__``/``code.replace`` (forged code),
   changing ``__code__``/``__defaults__``/``__kwdefaults__`` of library functions and
   ``__class__`` of the shell, and ``open``/``os.listdir``/``os.scandir`` under the denied paths
   (solutions, the course folder, the gradebook). ``os._exit``/``os.abort`` are replaced by
   functions that refuse. The compilers are the exception: from the frames of ``torch._dynamo``,
   ``torch._inductor``, ``torch._functorch`` and ``triton``, ``code.__new__`` and ``compile``
   are allowed, and so is starting a system compiler (g++, cc, ptxas, ...) or this Python (how
   compiled FlexAttention and Triton work; :mod:`attnkit.guard.audit`).
2. **A locked shell.** The IPython shell's class becomes a subclass whose cell-running methods
   are data descriptors (an instance attribute cannot shadow them). Cells are transformed with
   the transformers captured at install time, so an input or AST transformer a student
   registers never touches a later cell; instructor cells get no AST transformer at all.
   Before *every* cell the guard restores a snapshot of protected attributes (``torch``,
   ``torch.nn.functional``, ``torch.testing``, ``numpy``, ``numpy.testing``, ``math``, ``time``,
   ``builtins``, every ``attnkit`` module, the class dictionaries of ``torch.Tensor`` and
   ``torch.nn.Module``), the shell's event callbacks, the user namespace's ``__builtins__``,
   and the functions and modules the instructor's cells bound (so redefining a helper such as
   ``weights_for`` in a student cell has no effect on the tests); what it had to restore is
   flagged.
3. **Grade cells report completion.** A grade cell is recognised by the hash of its source.
   After it runs, the guard checks the snapshot again (a change *during* the cell means student
   code patched something while the test ran) and publishes a completion record (a display
   output of MIME type ``MIME`` with the grade id, whether the cell ran to its end untampered,
   and a keyed hash). ``protect.finish`` gives 0 to a grade cell without an error output that
   has no good record; the last cell publishes the guard's report (its absence is a flag).
4. **References refuse student callers.** Library functions marked with
   :func:`attnkit.graded.reference` (``dense_attention``, the fixed patterns, Linformer, linear
   attention, ...) raise ``PermissionError`` when the assignment being graded is among their
   ``graded_in`` tags and either a frame on the call stack
   comes from code that is neither an instructor cell nor a library file (student cells,
   ``exec``'d strings, files the student wrote), or the innermost instructor-cell frame is
   evaluating a call expression that names something only student cells define (this catches
   ``attention = dense_attention``, ``functools.partial(...)`` and objects whose ``__call__``
   is the reference, which leave no student frame on the stack).
5. **Unpatchable clocks.** :mod:`attnkit.measure` captures its clock at import (a default
   argument, which the audit hook keeps unchanged); patching ``time.perf_counter`` does not
   reach it and the module attribute is restored before every cell anyway.

The package is grading machinery, imported only by the grading kernel's first cell:
``core`` (the :class:`~attnkit.guard.core.Guard` and its checks), ``audit`` (the audit hook),
``shell`` (the locked shell), ``snapshot`` (protected attributes), ``errors``.

What this does NOT stop (the sandbox, the static scan in ``protect.py`` and the executor
cover some of it; the rest is noted in the README):

- Setting attributes of *types* (``torch.Tensor.__eq__ = ...``) and of modules is not an audit
  event in Python 3.11: it is undone before the next cell and fails a grade cell it happens
  during, but a background thread that patches and un-patches between checks is not caught.
- Reading ``__closure__``/``__globals__``/frames is not an audit event: a student can reach the
  undecorated reference through the wrapper's closure, or the guard's state. The static scan
  flags these names; nothing blocks them.
- Infinite loops, memory and fork bombs and a kernel that dies are for the sandbox and the
  executor (per-cell timeout, restart and re-run); the guard only refuses ``fork``/``kill``.
- Functions the assignment text forbids but the library does not own
  (``torch.softmax``, ``F.scaled_dot_product_attention``) are not refused.
- Anything outside Python (a C extension the student compiles is stopped only by the
  refusal of ``ctypes``/process creation and by the sandbox).
"""

from __future__ import annotations

import os
import sys

from .. import graded
from .audit import audit, refuse_exit
from .core import MIME, Guard, verify
from . import core
from .errors import GuardError
from .snapshot import Snapshot

__all__ = ["MIME", "GuardError", "install", "report", "verify"]


def install(config: dict) -> None:
    """Install the guard in this kernel (once; a second call is refused).

    ``config``: ``key`` (hex, signs the records), ``cells`` ({sha256 of an instructor cell's
    source: {"grade_id", "grade", "binds"}}), ``references`` (names from :func:`attnkit.graded.references`
    to protect), ``answer_names`` (names the solution cells define), ``deny_paths`` and
    ``allow_paths`` (folders the kernel may not / may open inside the denied ones).
    """
    if core.active is not None:
        raise GuardError("the grading guard is already installed")
    from IPython import get_ipython

    import attnkit  # noqa: F401 -- every module whose attributes are protected is imported first
    for name in ("numpy", "numpy.testing", "torch.testing", "torch.nn.functional"):
        try:
            __import__(name)
        except ImportError:
            pass
    shell = get_ipython()
    if shell is None:
        raise GuardError("the grading guard needs an IPython kernel")
    for name in ("_exit", "abort"):
        setattr(os, name, refuse_exit)
    posix = sys.modules.get("posix")
    if posix is not None:
        posix._exit = refuse_exit
        posix.abort = refuse_exit
    _warm_up()
    guard = Guard(config, shell)
    core.active = guard
    graded._check = guard.check_caller  # the marked references now ask the guard
    object.__setattr__(guard, "snapshot", Snapshot())  # after the exits are replaced and the guard is active
    sys.addaudithook(audit)
    object.__setattr__(guard, "current", {"grade_id": "guard", "grade": False})
    guard._scrub_history(guard.current)
    object.__setattr__(guard, "current", None)


def _warm_up() -> None:
    """Run the measuring tools once: they import modules lazily (sympy, torch._dynamo, which
    rebinds ``torch.manual_seed``), and that must happen before the snapshot, not during a test."""
    import torch

    from attnkit.measure import count_flops, largest_intermediate

    x = torch.ones(2, 2)
    count_flops(lambda: x @ x)
    largest_intermediate(lambda: x @ x)
    # torch.compile's first use wraps torch.nn.Module.__init__ / __setstate__ (dynamo's mutation
    # tracking): do it now, so the snapshot holds the wrapped ones and a compile is not a "patch";
    # and compile on one thread, without a pool of worker processes outside the guard.
    from torch._dynamo.mutation_guard import install_generation_tagging_init
    import torch._inductor.config as inductor_config

    install_generation_tagging_init()
    inductor_config.compile_threads = 1


def report() -> None:
    """Publish the guard's final report (the flags) as a signed display output."""
    g = core.active
    if g is None:
        raise GuardError("the grading guard is not installed")
    changed = g.snapshot.restore()
    if changed:
        g.flag("patched " + ", ".join(sorted(changed)[:6]) + " (restored)")
    g._publish({"kind": "report", "flags": list(g.flags)})
