"""The locked IPython shell: cells run with the transformers captured when the guard installed.

:func:`lock_shell` gives the kernel's shell a subclass whose cell-running methods are data
descriptors (an instance attribute cannot shadow them), so every cell passes through the
guard's ``before_cell`` / ``after_cell``, and an input or AST transformer a student registers
never touches a later cell.
"""
from __future__ import annotations

import sys
import types

from .errors import GuardError

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


def lock_shell(guard, shell) -> None:
    """Give ``shell`` a locked subclass that runs every cell through ``guard``."""
    from IPython.core.inputtransformer2 import TransformerManager

    base = type(shell)
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
    guard._transformers = (post, ast_transformers, tuple(shell.input_transformers_cleanup))
    guard._pristine = (compiler, flags, events, callbacks, prefilter, prefilter_state, prefilter_handlers)

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
    guard.shell_class = locked
