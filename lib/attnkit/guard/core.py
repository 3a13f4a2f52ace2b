"""The guard's state and checks: one :class:`Guard` per grading kernel, in :data:`active`.

The guard knows the instructor's cells by the hashes of their sources, the names only student
cells bind, the references the assignment protects and the paths the kernel must not open. It
runs before and after every cell (through the locked shell of :mod:`attnkit.guard.shell`),
restores what student code patched, refuses student callers of protected references (the
check :mod:`attnkit.graded` calls) and publishes a signed completion record after each grade
cell.
"""
from __future__ import annotations

import ast
import builtins
import functools
import hashlib
import hmac
import os
import sys
import threading
import types

from .. import graded
from .dispatch import operators
from .errors import GuardError
from .shell import lock_shell

MIME = "application/vnd.attnkit.guard+json"

# The folder that holds the ``attnkit`` package: its files are library code, not student code.
_LIB = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The installed guard of this kernel, or None before ``attnkit.guard.install``.
active = None


@functools.lru_cache(maxsize=None)
def _is_file(path: str) -> bool:
    return os.path.isfile(path)


def _route(why: str) -> str:
    """The short form of a refusal's reason, for the flag: "it was called from your code" ->
    "from your code"."""
    return why.removeprefix("it was called ").removeprefix("the test reached it ")


def _leaves_student_frame(value, kind) -> bool:
    """Calling ``value`` runs Python code a student cell wrote (so its frame shows on the stack)."""
    fn = getattr(value, "__func__", value)
    if isinstance(fn, types.FunctionType):
        return kind(fn.__code__.co_filename) == "student"
    cls = value if isinstance(value, type) else type(value)
    for attr in ("forward", "__call__"):
        method = getattr(getattr(cls, attr, None), "__func__", getattr(cls, attr, None))
        if isinstance(method, types.FunctionType) and kind(method.__code__.co_filename) == "student":
            return True
    return False


class Guard:
    def __init__(self, config: dict, shell):
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
            sys.prefix, sys.base_prefix, sys.exec_prefix, _LIB,
            os.path.dirname(os.__file__))}))
        self.snapshot = None
        self.setattr_targets = {id(f) for f in graded.references().values()}
        # forbidden built-ins: {aten operator: built-in}; refused in student code by the dispatch mode
        self.forbidden = tuple(config.get("forbidden", ()))
        self.builtin_ops = types.MappingProxyType(operators(self.forbidden))  # read-only
        # original code of each protected reference (reached around its wrapper: refused)
        self.ref_codes = types.MappingProxyType({code: name for name, code in graded.original_codes().items()
                                                 if name in self.protected} if config.get("watch_references", True) else {})
        self.main_thread = threading.get_ident()  # the kernel's thread, the one running the cells
        self.threads: dict[int, bool] = {}  # thread started after install -> started by student code?
        self.mode_class = None  # the dispatch mode (attnkit.guard.dispatch), set by install
        self.mode = None
        lock_shell(self, shell)
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
                                               and _is_file(filename)):
            return "library"
        return "student"

    # -- threads -------------------------------------------------------------------------------
    def _student_thread(self) -> bool:
        """This thread is not the kernel's and was not started by library code after install
        (started by student code, or by a route around the guard's thread wrapper)."""
        ident = threading.get_ident()
        return ident != self.main_thread and self.threads.get(ident, True)

    def started_by_student(self) -> bool:
        """A thread started now would run student work: student code is on the stack, or this
        thread itself is a student's."""
        if self._student_thread():
            return True
        frame = sys._getframe(2)
        while frame is not None:
            if self._frame_kind(frame.f_code.co_filename) == "student":
                return True
            frame = frame.f_back
        return False

    def new_mode(self):
        """A fresh dispatch mode for a new thread (None when the guard runs without one)."""
        return None if self.mode_class is None else self.mode_class()

    def mode_missing(self) -> bool:
        """The guard's dispatch mode is no longer on this (the kernel's) thread's mode stack."""
        if self.mode is None:
            return False
        import torch

        stack = [torch._C._get_dispatch_stack_at(i) for i in range(torch._C._len_torch_dispatch_stack())]
        return not any(m is self.mode for m in stack)

    def _restore_mode(self) -> None:
        if self.mode_missing():
            from torch.utils._python_dispatch import _push_mode

            _push_mode(self.mode)
            self.flag("removed the grading guard's dispatch mode (restored before each cell)")

    # -- forbidden built-ins and routes around a reference's wrapper -----------------------------
    def check_builtin(self, label: str) -> None:
        """An operator of the forbidden built-in ``label`` is about to run: refuse it when student
        code called it (a student frame is the innermost non-library frame), when the test
        reached it through something a student cell bound that runs no Python of its own
        (``attention = F.scaled_dot_product_attention``, a partial of it), or on a student's thread."""
        frame = sys._getframe(1)
        while frame is not None:
            kind = self._frame_kind(frame.f_code.co_filename)
            if kind == "student":
                self._refuse_builtin(label, "it was called from your code")
            if kind == "instructor":
                n = self._reached_through(frame)
                if n is not None:
                    self._refuse_builtin(label, f"the test reached it through your {n!r}")
                return
            frame = frame.f_back
        if self._student_thread():
            self._refuse_builtin(label, "it was called on a thread your code started")

    def _refuse_builtin(self, label: str, why: str):
        self.flag(f"called forbidden built-in {label} in an answer ({_route(why)})")
        raise GuardError(f"{label} is not allowed in this assignment's answers; {why}. "
                         "Write it with other torch functions.")

    def refuse_original(self, name: str):
        """The original code of protected reference ``name`` runs without its wrapper."""
        self.flag(f"called the library's reference {name} around its wrapper (its closure or code) in an answer")
        raise GuardError(f"attnkit's {name.split('.')[-1]} is the reference this assignment grades against; "
                         "it was reached around its wrapper. Write your own implementation.")

    def check_caller(self, name: str) -> None:
        """Refuse a call of the protected reference ``name`` that student code made or reached.

        Called by the marked function itself (:mod:`attnkit.graded`), so frame 2 is its caller.
        """
        if name not in self.protected:
            return
        if self._student_thread():
            self._refuse(name, "it was called on a thread your code started")
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
        n = self._reached_through(innermost)
        if n is not None:
            self._refuse(name, f"the test reached it through your {n!r}")

    def _reached_through(self, frame) -> str | None:
        """A name in the call expression instructor ``frame`` is evaluating that a student cell
        bound to a callable running no student Python of its own (an alias of a library or
        built-in function, a partial, an object whose ``__call__`` is one): the work it reaches
        leaves no student frame on the stack. Tensors and the student's own functions (whose
        frames the stack walk sees) are not such names."""
        scope = {**frame.f_globals, **frame.f_locals}
        for n in sorted(self._call_names(frame)):
            value = self.student_values.get(n, self)
            if value is not self and scope.get(n, self) is value and callable(value) \
                    and not _leaves_student_frame(value, self._frame_kind):
                return n
        return None

    def _refuse(self, name: str, why: str):
        short = name.split(".")[-1]
        self.flag(f"called the library's reference {name} in an answer ({_route(why)})")
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
        """Names in the call expression an instructor frame is evaluating, less the names its
        own cell binds (a test that imports ``dense_attention`` calls the library's, even when
        a student cell imported it too)."""
        entry = self.trusted_files.get(frame.f_code.co_filename) or {}
        return self._names_at(frame.f_code, frame.f_lasti) - frozenset(entry.get("binds", ()))

    # -- cells -------------------------------------------------------------------------------
    def classify(self, raw_cell: str):
        """The config entry of an instructor cell with exactly this source, else None."""
        return self.cells.get(hashlib.sha256(raw_cell.encode()).hexdigest())

    def register_cell(self, shell, transformed: str, raw_cell: str, entry: dict) -> None:
        """Remember the filename the shell will compile this instructor cell under."""
        name = shell.compile.get_code_name(raw_cell, transformed, shell.execution_count)
        self.trusted_files[name] = entry
        self.cell_sources[name] = transformed

    def before_cell(self, raw_cell: str):
        entry = self.classify(raw_cell)
        restored = self.snapshot.restore()
        if restored:
            self.flag("patched " + ", ".join(sorted(restored)[:6])
                      + (" ..." if len(restored) > 6 else "") + " (restored before each cell)")
        self._restore_mode()
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
        if self.mode_missing():
            changed.append("the grading guard's dispatch mode")
        ok = bool(result.success) and not changed and type(self.shell) is self.shell_class
        why = ""
        if changed:
            why = f"student code patched {', '.join(sorted(changed)[:4])} while the test ran"
            self.flag(f"grade cell {entry['grade_id']!r}: {why}")
        elif not result.success:
            why = "the test raised an error"
        self._publish({"kind": "grade", "grade_id": entry["grade_id"], "ok": ok, "why": why,
                       "execution_count": result.execution_count})

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
