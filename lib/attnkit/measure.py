"""Measuring tools that do not depend on a noisy clock, and a careful clock for when one is needed.

- :func:`count_flops`: floating-point operations of a call, from ``torch.utils.flop_counter``
  (a multiply-add counts as 2; matmuls, convolutions and SDPA are counted, elementwise ops not).
- :func:`largest_intermediate`: the largest tensor a call *allocates* (views are free), recorded
  by a ``TorchDispatchMode`` that sees every operator's outputs. It is the honest test of
  "never materialises the N×N matrix".
- :func:`peak_memory`: the peak of bytes allocated and still alive during a call (CUDA: the
  caching allocator's statistics; CPU: the same dispatch mode, freeing on garbage collection).
- :func:`resident_peak`: the process's peak resident memory during a call (Linux), which also
  sees compiled code; for comparing eager and compiled functions or other libraries.
- :func:`compare_speed`: times two functions in interleaved rounds (A B, then B A, ...) so that
  both see the same machine load, and reports medians and the median of per-round ratios.
- :func:`compare_speed_fresh`: the same on **fresh inputs for every call** (new random tensors
  from unpredictable seeds, made outside the timed region), each result checked right after its
  call: what grading uses, so that an answer caching its outputs gains nothing.
"""
from __future__ import annotations

import _thread
import os
import statistics
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

__all__ = [
    "count_flops", "TensorRecord", "largest_intermediate", "measure_work", "peak_memory",
    "resident_peak", "MMAP_ENV",
    "SpeedResult", "compare_speed", "compare_speed_fresh", "fresh_seed", "time_call",
]


def _cpu_sdpa_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of the CPU's fused attention kernel: the same two matmuls as any SDPA. (The counter
    passes the tensors' shapes.)"""
    return sdpa_flop_count(*(getattr(x, "shape", x) for x in (query, key, value)))


# Fused kernels torch's counter has no formula for (it would count them as 0 FLOPs): on the CPU,
# scaled_dot_product_attention runs ``_scaled_dot_product_flash_attention_for_cpu``.
_EXTRA_FLOP_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}


def count_flops(fn: Callable, *args, **kwargs) -> int:
    """Total FLOPs of ``fn(*args, **kwargs)`` (a multiply-add is 2 FLOPs)."""
    with FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOP_FORMULAS) as counter:
        fn(*args, **kwargs)
    return int(counter.get_total_flops())


@dataclass(frozen=True)
class TensorRecord:
    """A tensor allocated by some operator during a measured call."""

    op: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    numel: int
    nbytes: int


def _storage_key(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


class _AllocationRecorder(TorchDispatchMode):
    """Records every tensor an operator returns that does not share storage with its inputs."""

    def __init__(self):
        super().__init__()
        self.records: list[TensorRecord] = []
        self.live_bytes = 0
        self.peak_bytes = 0
        self._live: dict[int, int] = {}  # storage pointer -> bytes, for tensors still alive

    def _release(self, key: int) -> None:
        nbytes = self._live.pop(key, 0)
        self.live_bytes -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs, _ = tree_flatten((args, kwargs))
        seen = {_storage_key(t) for t in inputs if isinstance(t, torch.Tensor)}
        outputs, _ = tree_flatten(out)
        for t in outputs:
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            key = _storage_key(t)
            if key in seen or key in self._live or key == 0:
                continue  # a view, an in-place result, or an empty tensor: nothing new allocated
            nbytes = t.untyped_storage().nbytes()
            self.records.append(TensorRecord(str(func.overloadpacket.__name__), tuple(t.shape),
                                             t.dtype, t.numel(), nbytes))
            self._live[key] = nbytes
            self.live_bytes += nbytes
            self.peak_bytes = max(self.peak_bytes, self.live_bytes)
            # Freed when the storage dies, i.e. when its last view dies: composite ops such as
            # matmul return a view (_unsafe_view) of a tensor that is dropped at once.
            weakref.finalize(t.untyped_storage(), self._release, key)
        return out


def largest_intermediate(fn: Callable, *args, **kwargs) -> TensorRecord:
    """The largest tensor (by element count) that ``fn(*args, **kwargs)`` allocates.

    The output counts too (it is allocated by the call); inputs and views of them do not.
    Raises ``ValueError`` if the call allocates nothing.
    """
    recorder = _AllocationRecorder()
    with recorder:
        fn(*args, **kwargs)
    if not recorder.records:
        raise ValueError("the call allocated no tensors")
    return max(recorder.records, key=lambda r: r.numel)


def measure_work(fn: Callable, *args, **kwargs) -> tuple[Any, TensorRecord | None, int]:
    """One call of ``fn(*args, **kwargs)`` under both counters at once: its result, the largest
    tensor it allocated (``None`` if none) and its FLOPs. (Two separate calls on the same inputs
    would let an answer that caches its result do the work only in the first.)"""
    recorder = _AllocationRecorder()
    with FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOP_FORMULAS) as counter, recorder:
        out = fn(*args, **kwargs)
    largest = max(recorder.records, key=lambda r: r.numel) if recorder.records else None
    return out, largest, int(counter.get_total_flops())


MMAP_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def _proc_status_bytes(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024  # "VmHWM:   123456 kB"
    raise KeyError(key)


def resident_peak(fn: Callable, *args, **kwargs) -> int:
    """Peak resident memory of the process during ``fn(*args, **kwargs)`` above the resident
    memory before it, in bytes (Linux: the high-water mark VmHWM, reset through
    ``/proc/self/clear_refs``).

    Unlike :func:`peak_memory`, it sees every allocation, also those of compiled code
    (``torch.compile``, FlexAttention on the CPU) that bypass PyTorch's dispatcher: the measure
    that is fair between eager and compiled functions. It is exact only when freed buffers go
    back to the kernel at once: start the process with :data:`MMAP_ENV` in its environment
    (glibc's ``MALLOC_MMAP_THRESHOLD_``; measured on the course machine, it then agrees with
    :func:`peak_memory` to 0.5 MiB on eager calls). Other threads allocating meanwhile count too.
    """
    import gc

    gc.collect()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset VmHWM to the current resident size
    before = _proc_status_bytes("VmRSS")
    fn(*args, **kwargs)
    return max(_proc_status_bytes("VmHWM") - before, 0)


def peak_memory(fn: Callable, *args, **kwargs) -> int:
    """Peak bytes allocated during ``fn(*args, **kwargs)`` above what was allocated before it."""
    tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
    if tensors and tensors[0].is_cuda:
        device = tensors[0].device
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn(*args, **kwargs)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    recorder = _AllocationRecorder()
    with recorder:
        fn(*args, **kwargs)
    return recorder.peak_bytes


@dataclass
class SpeedResult:
    """Timings of an interleaved A/B comparison (seconds)."""

    times_a: list[float] = field(default_factory=list)
    times_b: list[float] = field(default_factory=list)

    @property
    def median_a(self) -> float:
        return statistics.median(self.times_a)

    @property
    def median_b(self) -> float:
        return statistics.median(self.times_b)

    @property
    def ratios(self) -> list[float]:
        """Per-round ``time_b / time_a``: how many times faster A is than B in each round."""
        return [b / a for a, b in zip(self.times_a, self.times_b)]

    @property
    def speedup(self) -> float:
        """Median of the per-round ratios: robust to a round slowed down by another process."""
        return statistics.median(self.ratios)

    def __str__(self) -> str:
        return (f"A {self.median_a * 1e3:.3f} ms, B {self.median_b * 1e3:.3f} ms "
                f"(median of {len(self.times_a)} interleaved rounds): A is {self.speedup:.2f}x faster")


def _sync_for(args: Any) -> Callable[[], None]:
    tensors = [t for t in tree_flatten(args)[0] if isinstance(t, torch.Tensor)]
    if tensors and tensors[0].is_cuda:
        return torch.cuda.synchronize
    return lambda: None


def _now(_clock=time.perf_counter) -> float:
    """The clock of every timing here, captured at import (a default argument): patching
    ``time.perf_counter`` afterwards does not reach it, and while grading the guard refuses
    changes to ``__defaults__`` of library functions (:mod:`attnkit.guard`)."""
    return _clock()


def time_call(fn: Callable, *args, **kwargs) -> float:
    """Wall time of one call in seconds (CUDA events when the inputs are on a GPU)."""
    tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
    if tensors and tensors[0].is_cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(*args, **kwargs)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = _now()
    fn(*args, **kwargs)
    return _now() - t0


def compare_speed(fn_a: Callable, fn_b: Callable, *args, rounds: int = 15, warmup: int = 2,
                  **kwargs) -> SpeedResult:
    """Time ``fn_a(*args, **kwargs)`` against ``fn_b(*args, **kwargs)`` in interleaved rounds.

    Each round runs both once, alternating which goes first (ABBA...), so slow drifts and a
    neighbour process load both sides equally. ``result.speedup`` is the median per-round
    ratio time_b / time_a (> 1 means A is faster).
    """
    sync = _sync_for((args, kwargs))
    with torch.no_grad():
        for _ in range(warmup):
            fn_a(*args, **kwargs)
            fn_b(*args, **kwargs)
        sync()
        result = SpeedResult()
        for r in range(rounds):
            order = ((fn_a, result.times_a), (fn_b, result.times_b))
            for fn, times in (order if r % 2 == 0 else order[::-1]):
                times.append(time_call(fn, *args, **kwargs))
    return result


def fresh_seed(_urandom=os.urandom) -> int:
    """A seed nobody can predict (63 bits from the operating system), for inputs made at grading
    time. ``os.urandom`` is captured at import, as the clock is (:func:`_now`)."""
    return int.from_bytes(_urandom(8), "little") >> 1


def _threads(_count=getattr(_thread, "_count", threading.active_count)) -> int:
    """Python threads alive now, also those started with ``_thread`` directly (captured at import)."""
    return _count()


def _plain_results(out) -> None:
    """A checked result must be made of plain tensors and numbers: an object or a Tensor subclass
    could put off its work until it is looked at (outside the timed region)."""
    for leaf in tree_flatten(out)[0]:
        if type(leaf) not in (torch.Tensor, int, float, bool, type(None)):
            raise AssertionError(f"the function returned a {type(leaf).__name__}; return plain "
                                 "torch.Tensor results.")


def _timed_fresh(fn: Callable, args: tuple, cuda: bool) -> tuple[float, Any]:
    """Wall time of ``fn(*args)`` and its result. On a GPU the whole device is synchronised before
    and after (every stream: work queued on a side stream is not left out of the time)."""
    if cuda:
        torch.cuda.synchronize()
    t0 = _now()
    out = fn(*args)
    if cuda:
        torch.cuda.synchronize()
    return _now() - t0, out


def compare_speed_fresh(fn_a: Callable, fn_b: Callable, make_inputs: Callable[[int], tuple], *,
                        rounds: int = 15, warmup: int = 2,
                        verify: Callable[[Any, tuple], None] | None = None,
                        probe: Callable[[tuple], None] | None = None,
                        seed: Callable[[], int] = fresh_seed) -> SpeedResult:
    """Time ``fn_a`` against ``fn_b`` in interleaved rounds (ABBA...), every call on fresh inputs.

    Each call, warm-up included, gets its own ``make_inputs(s)`` for a new unpredictable seed
    ``s``, made before the clock starts: A and B of a round see inputs of the same shape and
    distribution (equal cost) but never the same tensors, and no call sees a tensor (identity,
    storage or values) that an earlier call saw, so nothing an answer cached can be reused. The
    previous call's inputs are kept alive while the next ones are made, so their storage is not
    handed out again at once.

    ``verify(out, args)``, if given, checks each result of ``fn_a`` (which must be plain tensors
    and numbers) outside the timed region, on a copy taken right after the call (work still under way when the call returned is missing from
    it); it raises ``AssertionError`` on a wrong result. With ``verify``, ``fn_a`` must also not
    leave a Python thread running after it returns (work handed to a thread would escape the
    clock, and could slow down ``fn_b``'s turn). ``probe(args)``, if given, is
    called once, on fresh inputs, at a random round: an untimed call indistinguishable from the
    timed ones by its inputs (grading measures the work of that call).
    ``result.speedup`` is the median per-round ratio time_b / time_a (> 1 means A is faster).
    """
    seen: set[int] = set()

    def fresh() -> tuple:
        s = seed()
        while s in seen:
            s = seed()
        seen.add(s)
        args = make_inputs(s)
        return tuple(args) if isinstance(args, (tuple, list)) else (args,)

    probe_at = fresh_seed() % rounds if probe is not None else None
    result = SpeedResult()
    cuda = None
    keep: tuple = ()
    with torch.no_grad():
        for r in range(-warmup, rounds):
            if r == probe_at:
                keep = fresh()
                probe(keep)
            order = ((fn_a, result.times_a, True), (fn_b, result.times_b, False))
            for fn, times, is_a in (order if r % 2 == 0 else order[::-1]):
                keep = args = fresh()
                if cuda is None:
                    cuda = any(isinstance(t, torch.Tensor) and t.is_cuda for t in tree_flatten(args)[0])
                threads = _threads()
                elapsed, out = _timed_fresh(fn, args, cuda)
                if is_a and verify is not None:
                    _plain_results(out)
                    # A copy taken at once: what was not computed when the call returned (work left
                    # to a thread, filled in while the check runs) is missing from it.
                    out = tree_map(lambda x: x.clone() if isinstance(x, torch.Tensor) else x, out)
                    left = _threads() > threads
                    if not left:
                        verify(out, args)
                    if left or _threads() > threads:
                        raise AssertionError("the function left a thread running after it returned: "
                                             "its work must be done when it returns.")
                del out
                if r >= 0:
                    times.append(elapsed)
    del keep
    return result
