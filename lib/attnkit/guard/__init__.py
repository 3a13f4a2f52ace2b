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
   functions that refuse. The compilers are the exception (how compiled FlexAttention and Triton
   work; :mod:`attnkit.guard.audit`): ``code.__new__``, ``compile`` and starting a process are
   allowed when the innermost frame outside the standard library is ``torch._dynamo``'s,
   ``torch._inductor``'s, ``torch._functorch``'s or ``triton``'s, and every such frame that
   student code calls directly is an entry point (a ``torch.compile``'d function being called, a
   Triton kernel being launched), not an internal such as inductor's ``cpp_builder``. The
   process must be a compiler from the system folders (g++, cc, ptxas, ...) without options
   that run other programs (``-wrapper``, ``-B``, ``-fplugin``, ``-specs``, response files), or
   this Python running exactly inductor's CPU probe, with the environment the kernel had at
   install (no ``LD_PRELOAD``, ``PYTHONPATH``, ``COMPILER_PATH``... of the student's; the probe
   gets the trusted part of ``sys.path`` and ``PYTHONSAFEPATH``, and ``os.putenv`` of those
   variables is refused). Frames of code torch generates (FX's ``<eval_with_key>``, inductor's
   and Triton's caches) are not student frames here, and student code may not compile under
   those names.
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
   evaluating a call expression that names a callable a student cell bound which runs no
   student Python of its own (this catches ``attention = dense_attention``,
   ``functools.partial(...)`` and objects whose ``__call__`` is the reference, which leave no
   student frame on the stack; names the instructor's cell binds itself, tensors and the
   student's own functions are not suspects). A reference called on a thread other than the
   kernel's is refused unless library code started that thread after install (threads,
   ``concurrent.futures`` pools, ``asyncio.to_thread``: the stack walk there sees no student
   frame). The reference's *original* code running with a caller other than its wrapper (the
   wrapper's ``__closure__``, a function rebuilt from the code object) is refused by the
   dispatch mode of layer 6 at its first tensor operation, in the assignments that watch
   references (``watch_references`` in the per-assignment table: not a3, a5 and a7, whose many tensor
   operations would each pay for it; there only the static scan flags ``__closure__``).
6. **Forbidden built-ins are refused by the operator** (:mod:`attnkit.guard.dispatch`). An
   assignment lists the built-ins its text forbids (the ``forbidden`` field of the
   grader's per-assignment table; a1: SDPA, ``torch.softmax``, ``torch.log_softmax``; a2: SDPA). A
   ``TorchDispatchMode`` entered at install sees every aten operator: those the forbidden
   built-ins reach (``aten._softmax``, ``aten._scaled_dot_product_flash_attention_for_cpu``,
   SDPA's math path's ``aten._safe_softmax``...) are refused when the innermost non-library
   frame is a student's, when the innermost instructor frame reached them through a student's
   alias (as in 4), or on a thread student code started; so ``Tensor.softmax``, ``F.softmax``,
   ``nn.Softmax``, ``torch.special.softmax``, ``torch.ops.aten``, ``getattr`` on assembled
   names, ``nn.MultiheadAttention`` and a ``torch.compile``'d function (which runs operator by
   operator under the mode when something is forbidden) are all the same call. Instructor cells,
   their helpers (also when a student calls them) and library references keep using them. The
   mode is on every thread started after install (``_thread.start_new_thread`` is wrapped, and
   restored before each cell like the snapshot); one popped from the kernel's stack is pushed
   back before the next cell and flagged, and a grade cell during which it was missing scores 0.
   With nothing forbidden (a4, a6) the mode only watches for references' original code and
   lets ``torch.compile`` compile (``ignore_compile_internals``), so a6's FlexAttention runs
   compiled; with nothing to watch (a3, a5, a7) there is no mode. It lets higher-order
   operators (eager FlexAttention) through. Cost: a Python call per operator (about 10 µs),
   a set lookup, a walk of the stack for reference code: about 20-60 µs an operator on this
   machine, 0.1-0.2 s for the 3,200 operators of grading a1.
5. **Unpatchable clocks.** :mod:`attnkit.measure` captures its clock at import (a default
   argument, which the audit hook keeps unchanged); patching ``time.perf_counter`` does not
   reach it and the module attribute is restored before every cell anyway.

The package is grading machinery, imported only by the grading kernel's first cell:
``core`` (the :class:`~attnkit.guard.core.Guard` and its checks), ``audit`` (the audit hook),
``dispatch`` (the dispatch mode and the thread wrapper), ``shell`` (the locked shell),
``snapshot`` (protected attributes), ``errors``.

What this does NOT stop (the sandbox, the static scan in ``protect.py`` and the executor
cover some of it; the rest is noted in the README):

- Setting attributes of *types* (``torch.Tensor.__eq__ = ...``) and of modules is not an audit
  event in Python 3.11: it is undone before the next cell and fails a grade cell it happens
  during, but a background thread that patches and un-patches between checks is not caught.
- Reading ``__closure__``/``__globals__``/frames is not an audit event: a student can reach the
  guard's state, or the original ``_thread.start_new_thread`` inside the guard's wrapper (a
  thread started with it has no dispatch mode: references are still refused there, forbidden
  built-ins are not). The undecorated reference reached through its wrapper's closure is refused
  at its first tensor operation (6), not before: a reference that does no tensor operation, or
  a copy of its *source* the student types in, is not caught. The static scan flags these names.
- Popping or disabling the dispatch mode *within* one call (``_disable_current_modes()``,
  ``torch._C._DisableTorchDispatch``, ``_ExcludeDispatchKeyGuard``) hides the operators run
  inside it; the mode is back before the next cell (flagged) and a grade cell that ends without
  it scores 0, but a context manager that restores it in time is not seen. The static scan
  flags these names and imports of ``torch._C``, ``torch.utils._python_dispatch`` and the
  compilers' internals; a name assembled at run time escapes the scan.
- A forbidden computation written by other means is not a forbidden built-in: a softmax from
  ``exp``/``sum`` is the honest answer; ``torch.nn.functional.multi_head_attention_forward``
  and ``nn.MultiheadAttention`` are refused only because they reach the forbidden operators.
  Other library functions that compute attention (``attnkit.fixed.local_reference`` with a
  window as long as the sequence...) are refused in a1 only when they reach a forbidden
  operator or a protected reference.
- Infinite loops, memory and fork bombs and a kernel that dies are for the sandbox and the
  executor (per-cell timeout, restart and re-run); the guard only refuses ``fork``/``kill``.
- Forbidden built-ins inside code the compilers generate: with something forbidden the mode
  makes ``torch.compile`` run operator by operator, but a Triton kernel (a6, where nothing is
  forbidden) is not aten operators at all.
- Anything outside Python (a C extension the student compiles is stopped only by the
  refusal of ``ctypes``/process creation and by the sandbox).
"""

from __future__ import annotations

import os
import sys

from .. import graded
from .audit import audit, capture_baseline, refuse_exit
from .dispatch import make_mode_class, wrap_start_new_thread
from .core import MIME, Guard, verify
from . import core
from .errors import GuardError
from .snapshot import Snapshot

__all__ = ["MIME", "GuardError", "install", "report", "verify"]


def install(config: dict) -> None:
    """Install the guard in this kernel (once; a second call is refused).

    ``config``: ``key`` (hex, signs the records), ``cells`` ({sha256 of an instructor cell's
    source: {"grade_id", "grade", "binds"}}), ``references`` (names from :func:`attnkit.graded.references`
    to protect), ``forbidden`` (built-ins of :data:`attnkit.guard.dispatch.BUILTINS` the
    assignment forbids in answers), ``answer_names`` (names the solution cells define),
    ``deny_paths`` and ``allow_paths`` (folders the kernel may not / may open inside the denied ones).
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
    _install_mode(guard)
    _wrap_threads(guard)
    capture_baseline()
    object.__setattr__(guard, "snapshot", Snapshot())  # after the exits are replaced and the guard is active
    sys.addaudithook(audit)
    object.__setattr__(guard, "current", {"grade_id": "guard", "grade": False})
    guard._scrub_history(guard.current)
    object.__setattr__(guard, "current", None)


def _install_mode(guard) -> None:
    """Enter the guard's dispatch mode on the kernel's thread (when there is something to refuse:
    forbidden built-ins or protected references). With nothing forbidden, ``torch.compile``
    compiles as usual under it (a6's FlexAttention); otherwise it runs operator by operator."""
    if not (guard.builtin_ops or guard.ref_codes):
        return
    mode_class = make_mode_class(guard, guard.builtin_ops, guard.ref_codes, graded.wrapper_code(),
                                 compile_ok=not guard.builtin_ops)
    mode = mode_class()
    mode.__enter__()  # never left: the guard puts it back before each cell if it was popped
    object.__setattr__(guard, "mode_class", mode_class)
    object.__setattr__(guard, "mode", mode)


def _wrap_threads(guard) -> None:
    """Threads started from now on run under the guard (its mode; who started them)."""
    import _thread
    import threading

    wrapped = wrap_start_new_thread(guard, _thread.start_new_thread)
    _thread.start_new_thread = wrapped
    if hasattr(_thread, "start_new"):
        _thread.start_new = wrapped
    threading._start_new_thread = wrapped


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
