"""Which library functions are *graded references*, and in which assignments.

A reference such as :func:`attnkit.dense_attention` is what a grade cell compares a student's
answer with, so while that assignment is graded a student's own code must not call it. The
library marks such functions with a light decorator that names the assignments grading them:

    @reference(graded_in=("a1",))
    def dense_attention(q, k, v, *, mask=None, scale=None): ...

Outside grading the marked function behaves exactly like the original (one ``None`` check per
call). While grading, the in-kernel guard (:mod:`attnkit.guard`, imported only by the grading
kernel) installs a checker here that refuses student callers of the names protected for the
assignment being graded; :func:`protected_in` derives that list from the tags.
"""
from __future__ import annotations

import functools
import inspect
from typing import Callable

__all__ = ["reference", "references", "graded_in", "protected_in", "original_codes", "wrapper_code"]

# "module.qualname" (module without the ``attnkit.`` prefix) -> the marked function
_REFERENCES: dict[str, Callable] = {}
# "module.qualname" -> the code object of the original (undecorated) function: the guard
# refuses a frame of it whose caller is not the wrapper (the original reached around it)
_ORIGINAL_CODES: dict[str, object] = {}
# Set by the grading guard while it runs: called with the reference's name before each call.
_check: Callable[[str], None] | None = None


def reference(*, graded_in: tuple[str, ...]):
    """Mark a function as the reference of assignments ``graded_in`` (short tags: ``"a1"``).

    Applied at definition, so every alias (``attnkit.dense_attention``, the registry's entry,
    ``from attnkit.dense import dense_attention``) is the marked function. The original is not
    reachable through ``__wrapped__``.
    """
    tags = tuple(graded_in)
    if not tags or not all(isinstance(t, str) and t.startswith("a") for t in tags):
        raise ValueError(f"graded_in needs assignment tags such as ('a1',), got {graded_in!r}")

    def mark(fn: Callable) -> Callable:
        name = f"{fn.__module__.removeprefix('attnkit.')}.{fn.__qualname__}"

        @functools.wraps(fn)
        def marked(*args, **kwargs):
            check = _check
            if check is not None:
                check(name)
            return fn(*args, **kwargs)

        del marked.__wrapped__  # do not hand out the unmarked function
        marked.__signature__ = inspect.signature(fn)  # help() and completion show the arguments
        marked.__attnkit_reference__ = name
        marked.__attnkit_graded_in__ = tags
        _REFERENCES[name] = marked
        _ORIGINAL_CODES[name] = fn.__code__
        return marked
    return mark


def _wrapper_code():
    @reference(graded_in=("a0",))
    def probe():
        pass
    code = probe.__code__
    _REFERENCES.pop(probe.__attnkit_reference__)
    _ORIGINAL_CODES.pop(probe.__attnkit_reference__)
    return code


# The code object every marked wrapper shares (the only legitimate caller of an original).
_WRAPPER_CODE = _wrapper_code()


def wrapper_code():
    """The code object of every marked function's wrapper."""
    return _WRAPPER_CODE


def original_codes() -> dict:
    """{"module.qualname": code object of the original function} for every marked function."""
    return dict(_ORIGINAL_CODES)


def references() -> dict[str, Callable]:
    """Every marked function of the modules imported so far, by ``"module.qualname"``."""
    return dict(_REFERENCES)


def graded_in(fn: Callable) -> tuple[str, ...]:
    """The assignment tags a marked function carries (empty for any other function)."""
    return getattr(fn, "__attnkit_graded_in__", ())


def protected_in(assignment: str) -> tuple[str, ...]:
    """Names of the references that ``assignment`` (``"a2"`` or ``"a2_sparse_patterns"``) grades.

    Imports every library module first, so that no marked function is missed.
    """
    import attnkit  # noqa: F401 -- registers every family's references

    tag = assignment.split("_", 1)[0]
    return tuple(sorted(n for n, fn in _REFERENCES.items() if tag in graded_in(fn)))
