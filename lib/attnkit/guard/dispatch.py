"""The guard's checks below Python: a TorchDispatchMode that sees every aten operator, and the
wrapper that puts it on every thread started after the guard.

Forbidden built-ins (``torch.softmax``, ``F.scaled_dot_product_attention``...) are refused by
the *operator* they reach, not by their name: ``torch.softmax``, ``Tensor.softmax``,
``F.softmax``, ``nn.Softmax``, ``torch.special.softmax`` and ``torch.ops.aten._softmax`` all
dispatch ``aten._softmax``, whatever name or alias the student called them by. :data:`BUILTINS`
maps each forbidden built-in an assignment may list (the grader's per-assignment table) to its
operators.

The same mode closes the route around a reference's wrapper: while any operator runs, a frame
of a protected reference's *original* code (``attnkit.graded`` records the code objects) whose
caller is not the reference's wrapper means the undecorated function was reached some other
way (its wrapper's ``__closure__``, a function rebuilt from its code object) and is refused.

The mode is thread-local in PyTorch, so the guard wraps ``_thread.start_new_thread`` (what
``threading``, ``concurrent.futures`` and ``asyncio.to_thread`` use): each new thread runs with
its own mode and records whether student code started it.
"""
from __future__ import annotations

import sys
import threading

# The forbidden built-ins an assignment may list, and the aten operators (``func._opname``)
# that every route to them reaches.
BUILTINS: dict[str, frozenset[str]] = {
    "torch.softmax": frozenset({
        "softmax", "_softmax", "_safe_softmax", "special_softmax", "_masked_softmax"}),
    "torch.log_softmax": frozenset({"log_softmax", "_log_softmax", "special_log_softmax"}),
    "torch.nn.functional.scaled_dot_product_attention": frozenset({
        "scaled_dot_product_attention", "_scaled_dot_product_attention_math",
        "_scaled_dot_product_flash_attention", "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
        "_scaled_dot_product_fused_attention_overrideable", "_scaled_dot_product_attention_math_for_mps",
        "_flash_attention_forward", "_efficient_attention_forward", "_native_multi_head_attention",
        "_transformer_encoder_layer_fwd",
        # SDPA's math path (dropout, some masks and devices) is the only public route to this one
        "_safe_softmax"}),
}


def operators(names) -> dict[str, str]:
    """{aten operator name: the forbidden built-in it belongs to} for ``names``."""
    out: dict[str, str] = {}
    for name in names:
        if name not in BUILTINS:
            raise ValueError(f"unknown forbidden built-in {name!r} (known: {', '.join(sorted(BUILTINS))})")
    # an operator two built-ins reach is named after the more specific one (SDPA before softmax)
    for name in sorted(names, key=lambda n: -len(n)):
        for op in BUILTINS[name]:
            out.setdefault(op, name)
    return out


def make_mode_class(guard, ops: dict[str, str], ref_codes: dict, wrapper_code, compile_ok: bool):
    """A TorchDispatchMode class bound to ``guard``.

    ``ops``: forbidden operators; ``ref_codes``: {original code of a protected reference: its
    name}; ``compile_ok``: let ``torch.compile`` compile under the mode (when nothing is
    forbidden: compiled kernels run fused, so their operators are not seen one by one). With a
    forbidden list, ``torch.compile`` falls back to running each operator through the mode.
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    getframe = sys._getframe
    check_builtin = guard.check_builtin
    refuse_reference = guard.refuse_original

    class GuardMode(TorchDispatchMode):
        # higher-order operators (eager FlexAttention) come through __torch_dispatch__ too, and
        # run as they would without the mode
        supports_higher_order_operators = True

        @classmethod
        def ignore_compile_internals(cls) -> bool:
            return compile_ok

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            label = ops.get(getattr(func, "_opname", None)) if ops else None
            if label is not None:
                check_builtin(label)
            if ref_codes:
                frame = getframe(1)
                while frame is not None:
                    code = frame.f_code
                    if code in ref_codes:
                        back = frame.f_back
                        if back is None or back.f_code is not wrapper_code:
                            refuse_reference(ref_codes[code])
                    frame = frame.f_back
            return func(*args, **(kwargs or {}))

    GuardMode.__qualname__ = GuardMode.__name__ = "GradingGuardMode"
    return GuardMode


def wrap_start_new_thread(guard, original):
    """``_thread.start_new_thread`` that runs the new thread under the guard: it records whether
    student code started it, and enters the guard's dispatch mode there."""
    get_ident = threading.get_ident

    def start_new_thread(function, args, kwargs=None):
        student = guard.started_by_student()

        def run():
            guard.threads[get_ident()] = student
            mode = guard.new_mode()
            if mode is None:
                return function(*args, **(kwargs or {}))
            with mode:
                return function(*args, **(kwargs or {}))

        return original(run, ())

    start_new_thread.__name__ = getattr(original, "__name__", "start_new_thread")
    start_new_thread.__doc__ = getattr(original, "__doc__", None)
    return start_new_thread
