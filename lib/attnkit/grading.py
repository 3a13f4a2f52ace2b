"""Checks that notebook test cells call. Each one raises ``AssertionError`` with a message a
student can act on: what was expected, what came back, and where it differs.

Test cells use them like this::

    from attnkit import grading
    q, k, v = grading.random_qkv(2, 3, 16, 8, seed=1)
    grading.check_tensor(attention(q, k, v), dense_attention(q, k, v), name="attention(q, k, v)")
"""
from __future__ import annotations

import math
import numbers
from typing import Callable, Sequence

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten

from .masks import MaskMod, materialize
from .measure import compare_speed_fresh, count_flops, largest_intermediate, measure_work

__all__ = [
    "random_qkv", "check_type", "check_shape", "check_tensor", "check_causal",
    "check_weights_on", "check_flops", "check_largest_intermediate", "check_equal_int",
    "check_mask_mod", "check_speedup", "check_unbiased",
]

_AXIS_NAMES = "B, H, N, D"


def random_qkv(B: int, H: int, N: int, D: int, *, M: int | None = None, Dv: int | None = None,
               seed: int = 0, dtype: torch.dtype = torch.float64, device=None, scale: float = 1.0):
    """Fresh random ``q (B, H, N, D)``, ``k (B, H, M, D)``, ``v (B, H, M, Dv)`` from a seeded
    generator (M defaults to N, Dv to D; q and k are multiplied by ``scale``)."""
    g = torch.Generator().manual_seed(seed)
    M = N if M is None else M
    q = torch.randn(B, H, N, D, generator=g, dtype=dtype) * scale
    k = torch.randn(B, H, M, D, generator=g, dtype=dtype) * scale
    v = torch.randn(B, H, M, D if Dv is None else Dv, generator=g, dtype=dtype)
    return tuple(t.to(device) if device is not None else t for t in (q, k, v))


def check_type(got, name: str = "result") -> None:
    """The result must be a plain ``torch.Tensor`` (not None, a list, or a NumPy array)."""
    if got is None:
        raise AssertionError(f"{name} returned None: did you forget a `return` statement?")
    if isinstance(got, tuple) and got and isinstance(got[0], Tensor):
        raise AssertionError(f"{name} returned a tuple of {len(got)} items; return only the tensor.")
    # Exact types: a Tensor subclass (or any object) could override ==, allclose or __torch_function__.
    if type(got) is not Tensor and type(got) is not torch.nn.Parameter:
        raise AssertionError(f"{name} should be a torch.Tensor, got {type(got).__name__}.")


def _shape_hint(got: tuple, expected: tuple, axes: str | None) -> str:
    if sorted(got) == sorted(expected) and got != expected:
        hint = " The same sizes in another order: did you forget a transpose"
        if axes and "H" in axes:
            hint += " (heads go to dim 1: x.view(B, N, H, D).transpose(1, 2))"
        return hint + "?"
    if math.prod(got) == math.prod(expected):
        return " Same number of elements, different layout: check your view/reshape."
    if len(got) != len(expected):
        return f" It has {len(got)} dims instead of {len(expected)}."
    diff = [i for i, (a, b) in enumerate(zip(got, expected)) if a != b]
    return f" Dimension(s) {diff} differ."


def check_shape(got: Tensor, expected: Sequence[int], *, name: str = "result",
                axes: str | None = _AXIS_NAMES) -> None:
    """Shape must equal ``expected``; the message names the axes (B, H, N, D by default)."""
    check_type(got, name)
    got_s, exp_s = tuple(got.shape), tuple(expected)
    if got_s != exp_s:
        named = f"({axes}) = " if axes and len(axes.split(",")) == len(exp_s) else ""
        raise AssertionError(f"{name}: expected shape {named}{exp_s}, got {got_s}."
                             + _shape_hint(got_s, exp_s, axes))


def check_tensor(got, expected: Tensor, *, name: str = "result", atol: float = 1e-6,
                 rtol: float = 1e-5, check_dtype: bool = True, axes: str | None = _AXIS_NAMES) -> None:
    """``got`` must be a tensor of ``expected``'s shape and dtype, finite where it is, and close.

    On failure the message gives the largest error, where it is, and how many entries differ.
    """
    check_type(got, name)
    check_shape(got, expected.shape, name=name, axes=axes)
    if check_dtype and got.dtype != expected.dtype:
        raise AssertionError(f"{name}: expected dtype {expected.dtype}, got {got.dtype}. "
                             "Keep the inputs' dtype (do not create float32 tensors from float64 inputs).")
    got_d = got.detach().to("cpu", torch.float64)
    exp_d = expected.detach().to("cpu", torch.float64)
    bad_finite = ~torch.isfinite(got_d) & torch.isfinite(exp_d)
    if bad_finite.any():
        idx = tuple(bad_finite.nonzero()[0].tolist())
        raise AssertionError(
            f"{name}: {int(bad_finite.sum())} entries are NaN or inf (first at index {idx}), "
            f"where the reference is finite ({exp_d[idx].item():.4g}). "
            "Large scores overflow exp(): subtract the row maximum before exponentiating.")
    err = (got_d - exp_d).abs()
    err = torch.where(torch.isfinite(exp_d), err, torch.zeros_like(err))
    tol = atol + rtol * exp_d.abs()
    too_far = err > tol
    if too_far.any():
        worst = tuple(int(i) for i in torch.unravel_index(err.argmax(), err.shape))
        raise AssertionError(
            f"{name}: {int(too_far.sum())} of {err.numel()} entries differ from the reference "
            f"(max abs error {err.max().item():.3g} at index {worst}: "
            f"got {got_d[worst].item():.6g}, expected {exp_d[worst].item():.6g}; "
            f"tolerance atol={atol:g}, rtol={rtol:g}).")


def check_causal(fn: Callable[..., Tensor], q: Tensor, k: Tensor, v: Tensor, *,
                 name: str = "attention", atol: float = 1e-9, **kwargs) -> None:
    """Perturb the future: changing keys/values at positions > t must not change outputs <= t."""
    N = q.shape[-2]
    base = fn(q, k, v, **kwargs)
    check_type(base, name)
    g = torch.Generator().manual_seed(1234)
    for t in sorted({0, N // 3, N // 2, N - 2}):
        if not 0 <= t < N - 1:
            continue
        k2, v2 = k.clone(), v.clone()
        k2[..., t + 1:, :] = torch.randn(k2[..., t + 1:, :].shape, generator=g, dtype=k.dtype)
        v2[..., t + 1:, :] = torch.randn(v2[..., t + 1:, :].shape, generator=g, dtype=v.dtype)
        out = fn(q, k2, v2, **kwargs)
        delta = (out[..., : t + 1, :] - base[..., : t + 1, :]).abs().max().item()
        if delta > atol:
            changed = (out - base).abs().amax(dim=tuple(range(out.dim() - 2)) + (-1,))[: t + 1]
            pos = int(changed.argmax())
            raise AssertionError(
                f"{name} is not causal: changing keys/values after position {t} changed the "
                f"output at position {pos} <= {t} by {delta:.3g}. Query i may only see keys j <= i.")


def check_weights_on(weights: Tensor, positions: Sequence[int], *, expected: Sequence[float],
                     tol: float, name: str = "attention weights") -> None:
    """Attention ``weights`` (a probability vector over keys) must put ``expected`` mass on ``positions``."""
    w = weights.detach().to(torch.float64).flatten()
    for pos, target in zip(positions, expected):
        if abs(w[pos].item() - target) > tol:
            top = torch.topk(w, min(3, w.numel()))
            tops = ", ".join(f"key {int(i)}: {x:.3f}" for x, i in zip(top.values.tolist(), top.indices.tolist()))
            raise AssertionError(
                f"{name}: weight on key {pos} is {w[pos].item():.4f}, expected {target:.3f} ± {tol:g}. "
                f"Largest weights: {tops}.")


def check_flops(fn: Callable, *args, max_flops: float, name: str = "your function", **kwargs) -> int:
    """The call must do at most ``max_flops`` FLOPs (counted by ``torch.utils.flop_counter``)."""
    flops = count_flops(fn, *args, **kwargs)
    if flops > max_flops:
        raise AssertionError(f"{name} did {flops:,} FLOPs; the budget is {int(max_flops):,}. "
                             "It computes more than the pattern needs.")
    return flops


def check_largest_intermediate(fn: Callable, *args, max_elements: float, name: str = "your function",
                               **kwargs) -> int:
    """No tensor the call allocates may have more than ``max_elements`` elements."""
    rec = largest_intermediate(fn, *args, **kwargs)
    if rec.numel > max_elements:
        raise AssertionError(f"{name} allocated a tensor of shape {rec.shape} ({rec.numel:,} elements, "
                             f"from `{rec.op}`); the limit is {int(max_elements):,}. "
                             "Something materialises a matrix that is too large.")
    return rec.numel


def check_equal_int(got, expected: int, *, name: str = "result", hint: str = "") -> None:
    """``got`` must be an integer equal to ``expected`` (a number, not a tensor or a float)."""
    if type(got) is Tensor:
        if got.numel() != 1:
            raise AssertionError(f"{name} should be a single integer, got a tensor of shape {tuple(got.shape)}.")
        got = got.item()
    # Exact types (int, float, or NumPy's): an int subclass could answer == and int() as it likes.
    exact = type(got) in (int, float) or (type(got).__module__ == "numpy" and isinstance(got, numbers.Real))
    if not exact or isinstance(got, bool) or (
            not isinstance(got, numbers.Integral) and not float(got).is_integer()):
        raise AssertionError(f"{name} should be an integer, got {got!r} ({type(got).__name__}).")
    if int(got) != expected:
        ratio = f" (your value is {got / expected:.3g}× the expected one)" if expected else ""
        raise AssertionError(f"{name}: expected {expected:,}, got {int(got):,}{ratio}. {hint}".rstrip())


def check_mask_mod(got: MaskMod, expected: MaskMod, N: int, *, M: int | None = None, H: int = 1,
                   name: str = "mask_mod") -> None:
    """``got`` and ``expected`` must allow the same (query, key) pairs on an N×M grid.

    Both are evaluated with :func:`attnkit.masks.materialize` on index tensors, as FlexAttention
    calls them; the message lists a few positions where they disagree.
    """
    if not callable(got):
        raise AssertionError(f"{name} should be a function mask_mod(b, h, q_idx, kv_idx), got "
                             f"{type(got).__name__}: return the inner function.")
    try:
        mask = materialize(got, N, M, H=H)
    except Exception as exc:  # noqa: BLE001 -- the student's function: report what it did
        raise AssertionError(f"{name} failed on index tensors ({type(exc).__name__}: {exc}); use tensor "
                             "operations (&, |, ~, comparisons), not Python `and`/`or`/`if`.") from exc
    ref = materialize(expected, N, M, H=H)
    if mask.shape != ref.shape or mask.dtype != torch.bool:
        raise AssertionError(f"{name} should give a boolean grid of shape {tuple(ref.shape)}, got "
                             f"{tuple(mask.shape)} of {mask.dtype}.")
    extra = (mask & ~ref).nonzero()[:, -2:].tolist()
    missing = (ref & ~mask).nonzero()[:, -2:].tolist()
    if extra or missing:
        parts = []
        if extra:
            parts.append(f"allows {len(extra)} (query, key) pairs it should not, e.g. {extra[:4]}")
        if missing:
            parts.append(f"blocks {len(missing)} pairs it should allow, e.g. {missing[:4]}")
        raise AssertionError(f"{name} on N={N}: " + "; ".join(parts) + ".")


def _exact_results(out, name: str) -> None:
    """Every leaf of a timed call's result must be a plain tensor or number: an object (or a
    Tensor subclass) could put off its work until it is looked at, outside the timed region."""
    for leaf in tree_flatten(out)[0]:
        if type(leaf) not in (Tensor, int, float, bool, type(None)):
            raise AssertionError(f"{name} returned a {type(leaf).__name__}; return plain torch.Tensor results.")


def check_speedup(fn: Callable, reference: Callable, make_inputs: Callable[[int], tuple], *,
                  min_speedup: float, check: Callable[..., None], name: str = "your function",
                  max_elements: float | None = None, max_flops: float | None = None,
                  rounds: int = 7, attempts: int = 3, warmup: int = 2) -> float:
    """``fn`` must run at least ``min_speedup`` times faster than ``reference``, on fresh inputs.

    Every call, timed or warm-up, gets new inputs ``make_inputs(seed)`` of the same shape (a new
    unpredictable seed each time, made outside the timed region; ``fn`` and ``reference`` never
    share tensors), so caching outputs by the inputs' identity, storage or values gains nothing.
    Right after each call of ``fn``, outside the timed region, ``check(out, *args)`` must accept
    its result (it raises ``AssertionError`` otherwise: e.g. ``check_tensor`` against a library
    implementation on the same ``args``), and the result must be made of plain tensors.

    ``max_elements`` / ``max_flops``: the work bounds of :func:`check_largest_intermediate` and
    :func:`check_flops`, measured on one call of ``fn`` made at a random round on fresh inputs,
    like the timed calls (and checked like them), not on a call the answer could tell apart by
    its inputs.

    Timed in the same process, interleaved (ABBA) with medians of per-round ratios
    (:func:`attnkit.measure.compare_speed_fresh`), so a neighbour process that slows the machine
    slows both sides. A measurement just below the bar (within a factor 2) is repeated, up to
    ``attempts`` times with more rounds each time (and again fresh inputs), before the check
    fails: one unlucky measurement does not cost a student the points, while a solution that is
    really slow stays slow in every attempt (and one far below the bar fails at once). Returns the
    best median speedup measured.
    """
    def verify(out, args):
        _exact_results(out, name)
        check(out, *args)

    def probe(args):
        out, rec, flops = measure_work(fn, *args)  # one call, both counters
        if max_elements is not None and rec is not None and rec.numel > max_elements:
            raise AssertionError(
                f"{name} allocated a tensor of shape {rec.shape} ({rec.numel:,} elements, from "
                f"`{rec.op}`) in a call of the speed test; the limit is {int(max_elements):,}. "
                "Something materialises a matrix that is too large.")
        if max_flops is not None and flops > max_flops:
            raise AssertionError(f"{name} did {flops:,} FLOPs in a call of the speed test; the budget is "
                                 f"{int(max_flops):,}. It computes more than the pattern needs.")
        verify(out, args)

    best, tries = 0.0, 0
    for tries in range(1, attempts + 1):
        result = compare_speed_fresh(fn, reference, make_inputs, rounds=rounds * tries, warmup=warmup,
                                     verify=verify, probe=probe if tries == 1 and (
                                         max_elements is not None or max_flops is not None) else None)
        best = max(best, result.speedup)
        if best >= min_speedup:
            return best
        if best < min_speedup / 2:  # far too slow: another attempt would not change the verdict
            break
    raise AssertionError(
        f"{name} is {best:.2f}× as fast as the dense reference (median of interleaved rounds on fresh "
        f"inputs, best of {tries} attempt(s): {result.median_a * 1e3:.1f} ms vs {result.median_b * 1e3:.1f} ms); "
        f"it needs to be at least {min_speedup:g}× faster. Compute only the keys each query can see.")


def check_unbiased(samples: Tensor, target: float, *, name: str = "estimate", n_se: float = 5.0) -> float:
    """The mean of i.i.d. ``samples`` of an estimator must match ``target`` within ``n_se``
    standard errors, the standard error estimated from the samples themselves (sd / sqrt(S)).

    For a Gaussian mean, |z| > 5 happens with probability 5.7e-7; for skewed estimators (random
    features are log-normal-ish) the tail is heavier, so callers measure the false-failure
    rate of their own test (see ``scripts/statistical_check_rates.py``). Returns z.
    """
    s = samples.detach().to(torch.float64).flatten()
    if not torch.isfinite(s).all():
        raise AssertionError(f"{name}: some estimates are inf or NaN (overflow in exp?).")
    se = s.std() / math.sqrt(s.numel())
    z = ((s.mean() - target) / se).item() if se > 0 else (0.0 if s.mean() == target else math.inf)
    if abs(z) > n_se:
        raise AssertionError(f"{name}: the mean of {s.numel()} estimates is {s.mean().item():.4g}, but the "
                             f"true value is {target:.4g}: {abs(z):.1f} standard errors away (allowed {n_se:g}). "
                             "The estimator is biased.")
    return z
