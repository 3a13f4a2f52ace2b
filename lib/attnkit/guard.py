"""The grading guard: protections that run inside the grading kernel, before any student code.

The autograder (``autograder/protect.py``) puts a locked first cell into each submission before
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
   functions that refuse.
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
4. **References refuse student callers.** Library functions decorated with :func:`reference`
   (``dense_attention``, the fixed patterns, Linformer, linear attention, ...) raise
   ``PermissionError`` when the assignment protects them and either a frame on the call stack
   comes from code that is neither an instructor cell nor a library file (student cells,
   ``exec``'d strings, files the student wrote), or the innermost instructor-cell frame is
   evaluating a call expression that names something only student cells define (this catches
   ``attention = dense_attention``, ``functools.partial(...)`` and objects whose ``__call__``
   is the reference, which leave no student frame on the stack).
5. **Unpatchable clocks.** :mod:`attnkit.measure` captures its clock at import (a default
   argument, which the audit hook keeps unchanged); patching ``time.perf_counter`` does not
   reach it and the module attribute is restored before every cell anyway.

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

import ast
import builtins
import functools
import hashlib
import hmac
import inspect
import os
import sys
import types

__all__ = ["MIME", "reference", "install", "installed", "report", "GuardError"]

MIME = "application/vnd.attnkit.guard+json"


class GuardError(PermissionError):
    """Raised when the guard refuses an operation during grading."""


# The state of the guard in this process. ``_G`` is None until ``install``.
_G = None
_REFERENCES: dict[str, object] = {}  # "module.qualname" -> the decorated function


def installed() -> bool:
    return _G is not None


def reference(fn):
    """Mark ``fn`` as a graded reference: while the guard protects it, student code may not call it.

    Applied at definition, so every alias (``attnkit.dense_attention``, the registry's entry,
    ``from attnkit.dense import dense_attention``) is the guarded function.
    """
    name = f"{fn.__module__.removeprefix('attnkit.')}.{fn.__qualname__}"

    @functools.wraps(fn)
    def guarded(*args, **kwargs):
        if _G is not None and name in _G.protected:
            _G.check_caller(name)
        return fn(*args, **kwargs)

    del guarded.__wrapped__  # do not hand out the unguarded function
    guarded.__signature__ = inspect.signature(fn)  # help() and completion still show the arguments
    guarded.__attnkit_reference__ = name
    _REFERENCES[name] = guarded
    return guarded


def references() -> dict[str, object]:
    """All functions marked with :func:`reference` (imported modules only)."""
    return dict(_REFERENCES)


# --------------------------------------------------------------------------------------------
# Audit hook

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


def _audit(event: str, args: tuple) -> None:
    g = _G
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
        object.__setattr__(g, "busy", True)
        try:
            g.flag(f"refused {reason}")
        finally:
            object.__setattr__(g, "busy", False)
        raise GuardError(f"the grading guard refused {reason}")


def _refuse_exit(*args, **kwargs):
    if _G is not None:
        _G.flag("refused ending the kernel (os._exit/os.abort)")
    raise GuardError("the grading guard refused ending the kernel (os._exit/os.abort)")


# --------------------------------------------------------------------------------------------
# Snapshots of protected attributes

_MODULES = ("builtins", "math", "time", "torch", "torch.nn.functional", "torch.testing",
            "numpy", "numpy.testing", "attnkit.guard")
_CLASSES = (("torch", "Tensor"), ("torch.nn", "Module"))


def _protected_namespaces() -> list[tuple[str, object, bool]]:
    """(label, object, is_class) for every namespace whose attributes the guard snapshots."""
    out = []
    for name in _MODULES:
        if name in sys.modules:
            out.append((name, sys.modules[name], False))
    for name, mod in sorted(sys.modules.items()):
        if (name == "attnkit" or name.startswith("attnkit.")) and mod is not None and name not in _MODULES:
            out.append((name, mod, False))
    for mod_name, cls_name in _CLASSES:
        mod = sys.modules.get(mod_name)
        if mod is not None and isinstance(getattr(mod, cls_name, None), type):
            out.append((f"{mod_name}.{cls_name}", getattr(mod, cls_name), True))
    return out


# Set by IPython (builtin_trap) and ipykernel (input forwarding) around every cell.
_VOLATILE = {"builtins": {"input", "get_ipython", "exit", "quit", "display", "raw_input", "_"},
             "torch": {"Storage"}}  # set_default_dtype rebinds torch.Storage


class _Snapshot:
    """Identity snapshot of module and class dictionaries; ``restore`` undoes changes."""

    def __init__(self):
        self.items = [(label, obj, is_cls, {k: v for k, v in vars(obj).items()
                                            if k not in _VOLATILE.get(label, ())})
                      for label, obj, is_cls in _protected_namespaces()]

    def changes(self) -> list[str]:
        out = []
        for label, obj, is_cls, saved in self.items:
            now = vars(obj)
            for key, value in saved.items():
                if key not in now or now[key] is not value:
                    out.append(f"{label}.{key}")
            if is_cls:
                out.extend(f"{label}.{key}" for key in now if key not in saved)
        return out

    def restore(self) -> list[str]:
        changed = self.changes()
        if not changed:
            return []
        for label, obj, is_cls, saved in self.items:
            now = vars(obj)
            for key, value in saved.items():
                if key not in now or now[key] is not value:
                    if is_cls:
                        type.__setattr__(obj, key, value)
                    else:
                        now[key] = value
            if is_cls:
                for key in [k for k in now if k not in saved]:
                    type.__delattr__(obj, key)
        return changed


# --------------------------------------------------------------------------------------------
# The locked shell

class _Locked:
    """A data descriptor: the method cannot be replaced on the instance."""

    def __init__(self, fn):
        self.fn = fn

    def __get__(self, obj, owner=None):
        return self.fn if obj is None else types.MethodType(self.fn, obj)

    def __set__(self, obj, value):
        raise GuardError("the grading guard refused replacing a method of the IPython shell")

    def __delete__(self, obj):
        raise GuardError("the grading guard refused deleting a method of the IPython shell")


class _Fixed:
    """A data descriptor that always returns the object captured at install time."""

    def __init__(self, value):
        self.value = value

    def __get__(self, obj, owner=None):
        return self.value

    def __set__(self, obj, value):
        if value is not self.value:
            raise GuardError("the grading guard refused replacing a part of the IPython shell")

    def __delete__(self, obj):
        raise GuardError("the grading guard refused deleting a part of the IPython shell")


class _Guard:
    def __init__(self, config: dict, shell):
        object.__setattr__(self, "busy", True)
        self.shell = shell
        self.key = bytes.fromhex(config["key"])
        self.cells: dict[str, dict] = config.get("cells", {})  # sha256 -> {"grade_id", "grade"}
        self.protected = frozenset(config.get("references", ()))
        self.answer_names = frozenset(config.get("answer_names", ()))
        # user namespace after the last cell (identities); what IPython put there itself
        # (exit, quit, open, In, Out...) is not the student's
        self.seen: dict[str, object] = dict(shell.user_ns)
        self.student_values: dict[str, object] = {}  # names a student cell bound last -> value
        self.deny = tuple(os.path.realpath(p) for p in config.get("deny_paths", ()))
        self.allow = tuple(os.path.realpath(p) for p in config.get("allow_paths", ()))
        self.flags: list[str] = []
        object.__setattr__(self, "current", None)  # the cell being run: its config entry, None for a student cell
        self.trusted_files: dict[str, dict] = {}  # cell filename -> config entry
        self.cell_sources: dict[str, str] = {}  # cell filename -> transformed source
        self.bound: dict[str, object] = {}  # callables/modules bound by instructor cells
        self.hidden: dict[str, object] = {}  # student names shadowing builtins, during a grade cell
        self.trusted_dirs = tuple(sorted({os.path.realpath(p) for p in (
            sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.dirname(__file__)),
            os.path.dirname(os.__file__))}))
        self.snapshot = None
        self.setattr_targets = {id(f) for f in _REFERENCES.values()}
        self._lock_shell(shell)
        object.__setattr__(self, "busy", False)
        self._sealed = True

    def __setattr__(self, name, value):
        if getattr(self, "_sealed", False):
            raise GuardError("the grading guard refused changing its own state")
        object.__setattr__(self, name, value)

    # -- flags -------------------------------------------------------------------------------
    def flag(self, text: str) -> None:
        if text not in self.flags:
            self.flags.append(text)

    # -- audit checks ------------------------------------------------------------------------
    def check_setattr(self, args) -> str | None:
        obj, name = args[0], args[1]
        if obj is self.shell and name == "__class__":
            return "changing the class of the IPython shell"
        if name in ("__code__", "__defaults__", "__kwdefaults__") and isinstance(obj, types.FunctionType):
            module = getattr(obj, "__module__", "") or ""
            if id(obj) in self.setattr_targets or module.split(".")[0] in ("attnkit", "torch", "numpy"):
                return f"changing {name} of {module}.{obj.__qualname__}"
        return None

    def check_compile(self, args) -> str | None:
        if len(args) < 2 or not isinstance(args[1], str):
            return None
        filename = args[1]
        if filename in self.trusted_files and self.trusted_files[filename] is not self.current:
            return f"compiling code under the name of an instructor cell ({filename})"
        if filename.startswith(self.trusted_dirs) and filename not in self.trusted_files:
            source = args[0]
            try:
                with open(filename, "rb") as f:
                    on_disk = f.read()
            except OSError:
                return f"compiling code under the name of a library file that does not exist ({filename})"
            text = source if isinstance(source, bytes) else str(source).encode() if isinstance(source, str) else None
            if text is None or text.strip() != on_disk.strip():
                return f"compiling code under the name of a library file ({filename})"
        return None

    def check_path(self, path) -> str | None:
        if isinstance(path, int) or path is None:
            return None
        try:
            real = os.path.realpath(os.fsdecode(path))
        except (TypeError, ValueError):
            return None
        for deny in self.deny:
            if real == deny or real.startswith(deny + os.sep):
                if not any(real == a or real.startswith(a + os.sep) for a in self.allow):
                    return f"access to {real} (outside the submission's folder)"
        return None

    # -- references ----------------------------------------------------------------------------
    def _frame_kind(self, filename: str) -> str:
        if filename in self.trusted_files:
            return "instructor"
        if filename.startswith("<frozen ") or (filename.startswith(self.trusted_dirs)
                                               and os.path.isfile(filename)):
            return "library"
        return "student"

    def check_caller(self, name: str) -> None:
        object.__setattr__(self, "busy", True)
        try:
            frame = sys._getframe(2)
            innermost = None
            while frame is not None:
                kind = self._frame_kind(frame.f_code.co_filename)
                if kind == "student":
                    self._refuse(name, "it was called from your code")
                if kind == "instructor" and innermost is None:
                    innermost = frame
                frame = frame.f_back
            if innermost is None:
                return  # called from library code alone (no notebook on the stack)
            # No student frame: was the reference reached through something a student cell bound
            # (an alias, a partial, an object whose __call__ is the reference) named in the call?
            scope = {**innermost.f_globals, **innermost.f_locals}
            for n in sorted(self._call_names(innermost)):
                if n in self.student_values and scope.get(n, self) is self.student_values[n]:
                    self._refuse(name, f"the test reached it through your {n!r}")
        finally:
            object.__setattr__(self, "busy", False)

    def _refuse(self, name: str, why: str):
        short = name.split(".")[-1]
        self.flag(f"called the library's reference {name} in an answer")
        raise GuardError(f"attnkit's {short} is the reference this assignment grades against; "
                         f"{why}. Write your own implementation.")

    @functools.lru_cache(maxsize=4096)  # noqa: B019 -- one guard per process
    def _names_at(self, code, lasti: int) -> frozenset:
        positions = list(code.co_positions())
        index = lasti // 2
        if not 0 <= index < len(positions):
            return frozenset()
        line, end_line, col, end_col = positions[index]
        source = self.cell_sources.get(code.co_filename)
        if source is None or None in (line, end_line, col, end_col):
            return frozenset()
        lines = source.splitlines()
        if end_line > len(lines):
            return frozenset()
        if line == end_line:
            segment = lines[line - 1][col:end_col]
        else:
            segment = "\n".join([lines[line - 1][col:], *lines[line:end_line - 1], lines[end_line - 1][:end_col]])
        try:
            tree = ast.parse("(" + segment + "\n)", mode="eval")
        except SyntaxError:
            return frozenset()
        return frozenset(n.id for n in ast.walk(tree) if isinstance(n, ast.Name))

    def _call_names(self, frame) -> frozenset:
        return self._names_at(frame.f_code, frame.f_lasti)

    # -- the shell -----------------------------------------------------------------------------
    def _lock_shell(self, shell) -> None:
        from IPython.core.inputtransformer2 import TransformerManager

        base = type(shell)
        guard = self
        manager = TransformerManager()
        post = tuple(shell.input_transformers_post)
        ast_transformers = tuple(shell.ast_transformers)
        compiler = shell.compile
        flags = compiler.flags
        events = shell.events
        callbacks = {k: list(v) for k, v in events.callbacks.items()}
        prefilter = shell.prefilter_manager
        prefilter_state = {k: list(getattr(prefilter, k)) for k in ("_transformers", "_checkers")
                           if isinstance(getattr(prefilter, k, None), list)}
        prefilter_handlers = dict(getattr(prefilter, "_handlers", {}))
        self._transformers = (post, ast_transformers, tuple(shell.input_transformers_cleanup))
        self._pristine = (compiler, flags, events, callbacks, prefilter, prefilter_state, prefilter_handlers)

        def transform_cell(self, raw_cell):
            cell = manager.transform_cell(raw_cell)
            if len(cell.splitlines()) == 1 and guard.classify(raw_cell) is None:
                with self.builtin_trap:
                    cell = prefilter.prefilter_lines(cell) + "\n"
            lines = cell.splitlines(keepends=True)
            for transform in post:
                lines = transform(lines)
            return "".join(lines)

        def transform_ast(self, node):
            if guard.current is not None:
                return node  # instructor cells: no AST transformer at all
            for transformer in ast_transformers:
                node = transformer.visit(node)
            return node

        async def run_cell_async(self, raw_cell, store_history=False, silent=False, shell_futures=True,
                                 *, transformed_cell=None, preprocessing_exc_tuple=None,
                                 cell_id=None, cell_meta=None):
            entry = guard.before_cell(raw_cell)
            try:
                transformed, exc = transform_cell(self, raw_cell), None
            except Exception:  # noqa: BLE001 -- shown as the cell's error, as IPython does
                transformed, exc = raw_cell, sys.exc_info()
            if entry is not None:
                guard.register_cell(self, transformed, raw_cell, entry)
            result = await base.run_cell_async(
                self, raw_cell, store_history, silent, shell_futures, transformed_cell=transformed,
                preprocessing_exc_tuple=exc, cell_id=cell_id, cell_meta=cell_meta)
            guard.after_cell(entry, result)
            return result

        def should_run_async(self, raw_cell, *, transformed_cell=None, preprocessing_exc_tuple=None):
            return base.should_run_async(self, raw_cell, transformed_cell=transform_cell(self, raw_cell),
                                         preprocessing_exc_tuple=preprocessing_exc_tuple)

        ns = {"transform_cell": _Locked(transform_cell), "transform_ast": _Locked(transform_ast),
              "run_cell_async": _Locked(run_cell_async), "should_run_async": _Locked(should_run_async),
              "compile": _Fixed(compiler), "events": _Fixed(events),
              "builtin_trap": _Fixed(shell.builtin_trap), "display_trap": _Fixed(shell.display_trap),
              "display_pub": _Fixed(shell.display_pub), "displayhook": _Fixed(shell.displayhook)}
        for name in ("run_cell", "_run_cell", "run_ast_nodes", "run_code", "showtraceback",
                     "_showtraceback", "set_custom_exc", "register_post_execute"):
            if hasattr(base, name):
                ns[name] = _Locked(getattr(base, name))
        for name in ("compile", "events", "builtin_trap", "display_trap", "display_pub", "displayhook"):
            shell.__dict__.pop(name, None)
        locked = type(base)("GuardedShell", (base,), ns)
        shell.__class__ = locked
        self.shell_class = locked

    def classify(self, raw_cell: str):
        return self.cells.get(hashlib.sha256(raw_cell.encode()).hexdigest())

    def register_cell(self, shell, transformed: str, raw_cell: str, entry: dict) -> None:
        """Remember the filename the shell will compile this instructor cell under."""
        name = shell.compile.get_code_name(raw_cell, transformed, shell.execution_count)
        self.trusted_files[name] = entry
        self.cell_sources[name] = transformed

    def before_cell(self, raw_cell: str):
        object.__setattr__(self, "busy", True)
        try:
            entry = self.classify(raw_cell)
            restored = self.snapshot.restore()
            if restored:
                self.flag("patched " + ", ".join(sorted(restored)[:6])
                          + (" ..." if len(restored) > 6 else "") + " (restored before each cell)")
            self._restore_shell()
            ns = self.shell.user_ns
            if ns.get("__builtins__") is not builtins:
                ns["__builtins__"] = builtins
                self.flag("replaced __builtins__ of the notebook (restored)")
            rebound = [k for k, v in self.bound.items() if ns.get(k) is not v and k not in self.answer_names]
            for k in rebound:
                ns[k] = self.bound[k]
            if rebound:
                self.flag(f"redefined {', '.join(sorted(rebound))} from an instructor cell (restored)")
            for key in ("_i", "_ii", "_iii"):
                if isinstance(ns.get(key), str):
                    ns[key] = ""
            object.__setattr__(self, "current", entry)
            if entry is not None and entry.get("grade"):
                self._hide_shadowing()
            return entry
        finally:
            object.__setattr__(self, "busy", False)

    def _restore_shell(self) -> None:
        compiler, flags, events, callbacks, prefilter, prefilter_state, handlers = self._pristine
        compiler.flags = flags
        for event, now in events.callbacks.items():
            # Library callbacks (matplotlib's inline backend registers one) stay; others go.
            keep = [cb for cb in now if cb in callbacks.get(event, ()) or self._is_library(cb)]
            if len(keep) != len(now):
                self.flag("registered IPython event callbacks (removed before each cell)")
                now[:] = keep
        for key, value in prefilter_state.items():
            setattr(prefilter, key, list(value))
        if handlers:
            prefilter._handlers = dict(handlers)
        shell = self.shell
        if (list(shell.input_transformers_post) != list(self._transformers[0])
                or list(shell.ast_transformers) != list(self._transformers[1])
                or list(shell.input_transformers_cleanup) != list(self._transformers[2])):
            self.flag("registered input/AST transformers (ignored: cells run with the original ones)")
        if type(self.shell) is not self.shell_class:
            self.flag("changed the class of the IPython shell")

    def _track_names(self, entry) -> None:
        """Who bound each name last: instructor callables are kept to restore them, and the
        values student cells bound are remembered for the reference check."""
        ns = self.shell.user_ns
        callable_types = (types.FunctionType, type, types.ModuleType, functools.partial)
        for name, value in list(ns.items()):
            if self.seen.get(name, self) is value or name.startswith("_") and name[1:].isdigit():
                continue
            if entry is None:
                self.student_values[name] = value
            else:
                self.student_values.pop(name, None)
                if issubclass(type(value), callable_types):
                    self.bound[name] = value
                else:
                    self.bound.pop(name, None)
        for name in [n for n in self.bound if n in self.answer_names and n in self.student_values]:
            del self.bound[name]  # an answer the student is meant to define: theirs wins
        self.seen.clear()
        self.seen.update(ns)

    def _is_library(self, fn) -> bool:
        code = getattr(getattr(fn, "__func__", fn), "__code__", None)
        return code is not None and self._frame_kind(code.co_filename) == "library"

    def _hide_shadowing(self) -> None:
        """Before a grade cell: names a student cell bound that shadow builtins (``len``,
        ``isinstance``...) are hidden while the test runs, and put back after it."""
        ns = self.shell.user_ns
        hidden = {n: ns.pop(n) for n in list(self.student_values)
                  if n in vars(builtins) and not n.startswith("_") and n in ns}
        if hidden:
            self.flag(f"shadowed builtins {', '.join(sorted(hidden))} (hidden during the tests)")
        object.__setattr__(self, "hidden", hidden)

    def after_cell(self, entry, result) -> None:
        object.__setattr__(self, "busy", True)
        try:
            object.__setattr__(self, "current", None)
            self.shell.user_ns.update(self.hidden)
            object.__setattr__(self, "hidden", {})
            self._scrub_history(entry)
            self._track_names(entry)
            if entry is None:
                return
            if not entry.get("grade"):
                return
            changed = self.snapshot.changes()
            ok = bool(result.success) and not changed and type(self.shell) is self.shell_class
            why = ""
            if changed:
                why = f"student code patched {', '.join(sorted(changed)[:4])} while the test ran"
                self.flag(f"grade cell {entry['grade_id']!r}: {why}")
            elif not result.success:
                why = "the test raised an error"
            self._publish({"kind": "grade", "grade_id": entry["grade_id"], "ok": ok, "why": why,
                           "execution_count": result.execution_count})
        finally:
            object.__setattr__(self, "busy", False)

    def _scrub_history(self, entry) -> None:
        """Instructor cells leave no source in In/_ih (hidden tests stay hidden)."""
        if entry is None:
            return
        ns = self.shell.user_ns
        hm = self.shell.history_manager
        for lst in (ns.get("In"), ns.get("_ih"), getattr(hm, "input_hist_raw", None),
                    getattr(hm, "input_hist_parsed", None)):
            if isinstance(lst, list) and lst:
                lst[-1] = f"# {entry.get('grade_id') or 'instructor cell'}"
        for key in ("_i", f"_i{self.shell.execution_count - 1}"):
            if isinstance(ns.get(key), str):
                ns[key] = ""

    def sign(self, payload: dict) -> dict:
        body = {k: payload[k] for k in sorted(payload) if k != "mac"}
        text = repr(sorted(body.items())).encode()
        return {**body, "mac": hmac.new(self.key, text, hashlib.sha256).hexdigest()}

    def _publish(self, payload: dict) -> None:
        from IPython.display import publish_display_data

        publish_display_data({MIME: self.sign(payload),
                              "text/plain": f"[grading guard: {payload.get('kind')}]"})


def verify(payload: dict, key_hex: str) -> bool:
    """True when ``payload`` (a completion record or report) was signed with ``key_hex``."""
    if not isinstance(payload, dict) or not isinstance(payload.get("mac"), str):
        return False
    body = {k: payload[k] for k in sorted(payload) if k != "mac"}
    text = repr(sorted(body.items())).encode()
    expected = hmac.new(bytes.fromhex(key_hex), text, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, payload["mac"])


def install(config: dict) -> None:
    """Install the guard in this kernel (once; a second call is refused).

    ``config``: ``key`` (hex, signs the records), ``cells`` ({sha256 of an instructor cell's
    source: {"grade_id", "grade", "binds"}}), ``references`` (names from :func:`references`
    to protect), ``answer_names`` (names the solution cells define), ``deny_paths`` and
    ``allow_paths`` (folders the kernel may not / may open inside the denied ones).
    """
    global _G
    if _G is not None:
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
        setattr(os, name, _refuse_exit)
    posix = sys.modules.get("posix")
    if posix is not None:
        posix._exit = _refuse_exit
        posix.abort = _refuse_exit
    _warm_up()
    guard = _Guard(config, shell)
    _G = guard
    object.__setattr__(guard, "snapshot", _Snapshot())  # after the exits are replaced and _G is set
    sys.addaudithook(_audit)
    object.__setattr__(guard, "busy", True)
    try:
        object.__setattr__(guard, "current", {"grade_id": "guard", "grade": False})
        guard._scrub_history(guard.current)
        object.__setattr__(guard, "current", None)
    finally:
        object.__setattr__(guard, "busy", False)


def _warm_up() -> None:
    """Run the measuring tools once: they import modules lazily (sympy, torch._dynamo, which
    rebinds ``torch.manual_seed``), and that must happen before the snapshot, not during a test."""
    import torch

    from attnkit.measure import count_flops, largest_intermediate

    x = torch.ones(2, 2)
    count_flops(lambda: x @ x)
    largest_intermediate(lambda: x @ x)


def report() -> None:
    """Publish the guard's final report (the flags) as a signed display output."""
    g = _G
    if g is None:
        raise GuardError("the grading guard is not installed")
    object.__setattr__(g, "busy", True)
    try:
        changed = g.snapshot.restore()
        if changed:
            g.flag("patched " + ", ".join(sorted(changed)[:6]) + " (restored)")
        g._publish({"kind": "report", "flags": list(g.flags)})
    finally:
        object.__setattr__(g, "busy", False)
