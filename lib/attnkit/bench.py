"""Benchmark every registered variant against dense attention: time, peak memory and error.

    attnkit bench [--device cpu|cuda] [--n 1024 2048 4096] [--variants local bigbird ...]

For each length N and each variant in :data:`attnkit.VARIANTS` (the registry, so a variant
registered anywhere is benchmarked), on random ``(B, H, N, D)`` inputs:

    ms, dense_ms = medians of compare_speed(variant, baseline)   (interleaved rounds A B, B A, ...)
    speedup      = dense_ms / ms                                 (> 1: the variant is faster)
    peak_mib     = peak_memory(variant) / 2**20                  (the same for the baseline)
    max_err      = max |variant - reference|                     (smallest N only, in float32)

The baseline is what a sparse variant has to beat on that device: on the CPU the kit's
``dense_attention`` (it materialises the N×N scores); on CUDA ``F.scaled_dot_product_attention``
(FlashAttention or the memory-efficient kernel, O(N) memory), and ``dense_attention`` then
appears as the registered ``dense`` variant. Peak memory is :func:`attnkit.measure.peak_memory`:
on the CPU the bytes of tensors allocated and alive during the call (a dispatch mode, not the
process RSS), on CUDA the allocator's peak above what was allocated before the call.

Hyperparameters: the registry's ``example_kwargs`` are sized for N = 64, so
:data:`BENCH_KWARGS` holds long-sequence settings per variant name (others fall back to their
``example_kwargs``). Dense attention above ``dense_max_n`` is skipped (NaN in the CSV, "—" in
the table): its N×N scores would not fit. A variant that raises is reported, not fatal.

Token mixers that are modules (:data:`attnkit.MIXERS`: Synthesizers, FNet, gMLP, MLP-Mixer) and
FNet's bare ``fourier_mixing`` are not functions of (q, k, v): they are timed on ``x (B, N, C)``,
C = H·D, against a dense attention *layer* of the same width (:class:`attnkit.MultiHeadAttention`:
four projections and dense attention), which is what they replace. They run with every full
benchmark; ``--variants`` alone leaves them out, ``--mixers NAME ...`` picks them.

Writes ``OUT/bench.csv`` (one row per variant × N, columns :data:`COLUMNS`) and
``OUT/bench.png`` (time and peak memory against N, log-log).

:func:`run_gpu_bench` is the GPU benchmark of ``attnkit gpu-check`` (``make gpu-check``):
the cases of :func:`gpu_cases` against SDPA in bfloat16 at N = 4096, 16384, 65536, the first call
(FlexAttention's compilation) apart from the median run time, each output checked first.
"""
from __future__ import annotations

import csv
import functools
import math
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from .dense import dense_attention
from .measure import compare_speed, peak_memory, time_call
from .mixing import fourier_mixing, fourier_mixing_reference
from .modules import MultiHeadAttention
from .registry import MIXERS, VARIANTS

__all__ = ["BENCH_KWARGS", "BENCH_KWARGS_CUDA", "MIXER_BENCH_KWARGS", "COLUMNS", "bench_kwargs", "baseline",
           "mixer_names", "run_bench", "write_csv", "plot_bench", "format_table", "bench",
           "GPU_COLUMNS", "GPU_NS", "GPU_TOLERANCE", "gpu_cases", "run_gpu_bench"]

# Long-sequence settings (w = window, s = stride, g = global tokens, r = random blocks).
BENCH_KWARGS: dict[str, dict[str, Any]] = {
    "local": {"window": 128},
    "dilated": {"window": 64, "dilation": 2},
    "strided": {"stride": 64},
    "fixed": {"stride": 64, "summary": 8},
    "longformer": {"window": 128, "global_tokens": 64},
    "bigbird": {"block": 64, "window_blocks": 1, "global_blocks": 1, "random_blocks": 3},
    "transformer_xl": {"segment": 256},
    "linformer": {"proj_len": 256, "seed": 0},
    "compressed": {"stride": 32},
    "performer": {"m": 256, "seed": 0},
    "lsh": {"buckets": 64, "chunk": 64, "rounds": 2, "seed": 0},
    "routing": {"clusters": 64, "seed": 0},
    "rfa": {"m": 128, "seed": 0},
    "sinkhorn": {"block": 64},
}

# On a GPU: the issue-3 targets (H100, bfloat16, N=16384, w=256, 64 global tokens) and blocks of
# 128, the FlexAttention tile size (64-token BigBird blocks make every tile partial: slower).
BENCH_KWARGS_CUDA: dict[str, dict[str, Any]] = {
    "local": {"window": 256},
    "longformer": {"window": 256, "global_tokens": 64},
    "bigbird": {"block": 128, "window_blocks": 1, "global_blocks": 1, "random_blocks": 3},
}

# Token mixers at long N: constructor arguments besides dim = C and seq_len = N (heads = H for the
# Synthesizers); others take their defaults (gMLP's hidden width 6·C, for instance).
MIXER_BENCH_KWARGS: dict[str, dict[str, Any]] = {
    "mixer": {"token_hidden": 256},
    "synthesizer_factorized": {"k": 32},
}
FOURIER = "fourier_mixing"  # FNet's mixing function, benchmarked beside the registered mixers

COLUMNS = ["variant", "N", "device", "dtype", "B", "H", "D", "kwargs", "ms", "dense_ms", "speedup",
           "peak_mib", "dense_peak_mib", "max_err", "note"]

DENSE_MAX_N = {"cpu": 8192, "cuda": 16384}  # float32, B=1, H=4: scores 1 GiB / 4 GiB
NAN = float("nan")
MIB = 2**20


def bench_kwargs(name: str, device: str = "cpu") -> dict[str, Any]:
    """The hyperparameters ``name`` is benchmarked with: BENCH_KWARGS (with the CUDA overrides
    on a GPU), else its example_kwargs."""
    if device == "cuda" and name in BENCH_KWARGS_CUDA:
        return dict(BENCH_KWARGS_CUDA[name])
    return dict(BENCH_KWARGS.get(name, VARIANTS[name].example_kwargs))


def _sdpa(q, k, v):
    return F.scaled_dot_product_attention(q, k, v)


def baseline(device: str) -> tuple[str, Callable]:
    """The dense baseline on ``device``: (label, fn(q, k, v))."""
    if device == "cuda":
        return "SDPA", _sdpa
    return "dense_attention", dense_attention


def _format_kwargs(kw: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in kw.items())


def _device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"CPU, {torch.get_num_threads()} threads, {platform.machine()}"


def _inputs(B: int, H: int, N: int, D: int, dtype: torch.dtype, device: str, seed: int = 0):
    """q, k, v ``(B, H, N, D)``, drawn in float32 from a fixed seed, then cast."""
    g = torch.Generator().manual_seed(seed + N)
    return tuple(torch.randn(B, H, N, D, generator=g).to(device=device, dtype=dtype)
                 for _ in range(3))


def _time_alone(fn: Callable, q, k, v, rounds: int) -> float:
    """Median seconds of ``fn`` alone (when the dense baseline is skipped)."""
    with torch.no_grad():
        fn(q, k, v)
        return statistics.median(time_call(fn, q, k, v) for _ in range(rounds))


def _empty_row(name: str, note: str = "", device: str = "cpu") -> dict[str, Any]:
    return {"variant": name, "kwargs": _format_kwargs(bench_kwargs(name, device)), "ms": NAN,
            "dense_ms": NAN, "speedup": NAN, "peak_mib": NAN, "max_err": NAN, "note": note}


def _bench_one(name: str, N: int, q, k, v, *, base: Callable | None, rounds: int,
               with_err: bool, dense_max_n: int) -> dict[str, Any]:
    """Time, peak memory and (when ``with_err``) max error of one variant at one N."""
    variant = VARIANTS[name]
    kw = bench_kwargs(name, q.device.type)
    row = _empty_row(name, device=q.device.type)
    if variant.family == "dense" and N > dense_max_n:
        row["note"] = f"skipped: N={N} > --dense-max-n {dense_max_n}"
        return row
    fn = functools.partial(variant, **kw)
    with torch.no_grad():
        out = fn(q, k, v)  # also the first warm-up call
        if not isinstance(out, torch.Tensor) or out.shape != v.shape:
            raise ValueError(f"{name} returned {getattr(out, 'shape', type(out).__name__)}, "
                             f"expected (B, H, N, D) = {tuple(v.shape)}")
        if with_err:
            reference = functools.partial(variant.reference, **kw) if variant.reference else _sdpa
            ref = reference(q.float(), k.float(), v.float())  # float32 even for bfloat16 runs
            row["max_err"] = (out.float() - ref).abs().max().item()
        del out
        row["peak_mib"] = peak_memory(fn, q, k, v) / MIB
    if base is None:
        row["ms"] = _time_alone(fn, q, k, v, rounds) * 1e3
    else:
        result = compare_speed(fn, base, q, k, v, rounds=rounds, warmup=1)
        row["ms"], row["dense_ms"] = result.median_a * 1e3, result.median_b * 1e3
        row["speedup"] = row["dense_ms"] / row["ms"]
    return row


def mixer_names() -> list[str]:
    """What ``--mixers`` may name: FNet's mixing function and every :data:`MIXERS` entry."""
    return [FOURIER, *MIXERS]


def _build_mixer(name: str, N: int, C: int, H: int, dtype, device) -> tuple[Callable, dict[str, Any]]:
    """(module or function mapping x (B, N, C) -> (B, N, C), the hyperparameters shown)."""
    if name == FOURIER:
        return fourier_mixing, {}
    mixer = MIXERS[name]
    kw = dict(MIXER_BENCH_KWARGS.get(name, {}))
    if "heads" in mixer.example_kwargs:
        kw["heads"] = H
    return mixer.cls(dim=C, seq_len=N, **kw).to(device=device, dtype=dtype).eval(), kw


def _bench_mixer(name: str, x, *, layer: Callable | None, heads: int, rounds: int,
                 with_err: bool) -> dict[str, Any]:
    """One mixer at one N against the dense attention layer ``layer`` (None: timed alone)."""
    B, N, C = x.shape
    fn, kw = _build_mixer(name, N, C, heads, x.dtype, x.device)
    row = {"variant": name, "kwargs": _format_kwargs(kw), "ms": NAN, "dense_ms": NAN, "speedup": NAN,
           "peak_mib": NAN, "max_err": NAN, "note": ""}
    with torch.no_grad():
        out = fn(x)  # also the first warm-up call
        if out.shape != x.shape:
            raise ValueError(f"{name} returned {tuple(out.shape)}, expected (B, N, C) = {tuple(x.shape)}")
        if with_err and name == FOURIER:
            row["max_err"] = (out.float() - fourier_mixing_reference(x.float())).abs().max().item()
        del out
        row["peak_mib"] = peak_memory(fn, x) / MIB
        if layer is None:
            fn(x)
            row["ms"] = statistics.median(time_call(fn, x) for _ in range(rounds)) * 1e3
        else:
            result = compare_speed(fn, layer, x, rounds=rounds, warmup=1)
            row["ms"], row["dense_ms"] = result.median_a * 1e3, result.median_b * 1e3
            row["speedup"] = row["dense_ms"] / row["ms"]
    return row


def _mixer_rows(names: Sequence[str], N: int, *, batch: int, heads: int, dim: int, dtype, device: str,
                rounds: int, with_err: bool, dense_max_n: int, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """The mixers at one N, each against a dense attention layer of width C = H·D."""
    C = heads * dim
    g = torch.Generator().manual_seed(N + 1)
    x = torch.randn(batch, N, C, generator=g).to(device=device, dtype=dtype)  # (B, N, C)
    torch.manual_seed(0)  # the layer's and the mixers' initial weights
    layer, layer_peak = None, NAN
    if N <= dense_max_n:
        layer = MultiHeadAttention(C, heads).to(device=device, dtype=dtype).eval()
        with torch.no_grad():
            layer_peak = peak_memory(layer, x) / MIB
    rows = []
    common = {"N": N, "device": device, "dtype": str(dtype).removeprefix("torch."), "B": batch, "H": heads,
              "D": dim}
    for name in names:
        try:
            row = _bench_mixer(name, x, layer=layer, heads=heads, rounds=rounds, with_err=with_err)
        except Exception as exc:  # reported like a broken variant
            row = {"variant": name, "kwargs": "", "ms": NAN, "dense_ms": NAN, "speedup": NAN, "peak_mib": NAN,
                   "max_err": NAN, "note": f"{type(exc).__name__}: {exc}".splitlines()[0][:200]}
        row.update(common, dense_peak_mib=layer_peak if row["note"] == "" else NAN)
        rows.append({c: row[c] for c in COLUMNS})
        log(f"N={N:>6} {name:<16} " + (row["note"] or f"{row['ms']:10.2f} ms ({row['speedup']:.2f}x "
                                                      "an attention layer)"))
    return rows


def run_bench(*, device: str = "cpu", ns: Sequence[int] = (1024, 2048, 4096),
              variants: Sequence[str] | None = None, dtype: str = "float32", batch: int = 1,
              heads: int = 4, dim: int = 64, rounds: int = 7, dense_max_n: int | None = None,
              mixers: Sequence[str] | None = None,
              log: Callable[[str], None] | None = print) -> list[dict[str, Any]]:
    """Benchmark ``variants`` and ``mixers`` at each N; one row per name × N.

    Defaults: every VARIANTS entry; the mixers (:func:`mixer_names`) too unless ``variants`` is given.
    """
    names = list(VARIANTS) if variants is None else list(variants)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; registered: {', '.join(VARIANTS)}")
    mixers = (mixer_names() if variants is None else []) if mixers is None else list(mixers)
    unknown = [n for n in mixers if n not in mixer_names()]
    if unknown:
        raise ValueError(f"unknown mixer(s) {unknown}; registered: {', '.join(mixer_names())}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: torch sees no GPU (torch.cuda.is_available() is False)")
    torch_dtype = getattr(torch, dtype)
    dense_max_n = DENSE_MAX_N.get(device, 8192) if dense_max_n is None else dense_max_n
    _, base_fn = baseline(device)
    log = log or (lambda line: None)
    rows = []
    for N in sorted(ns):
        q, k, v = _inputs(batch, heads, N, dim, torch_dtype, device)
        common = {"N": N, "device": device, "dtype": dtype, "B": batch, "H": heads, "D": dim}
        base, dense_peak = None, NAN  # above dense_max_n: variants are timed alone
        if N <= dense_max_n:
            base = base_fn
            with torch.no_grad():
                dense_peak = peak_memory(base, q, k, v) / MIB
        for name in names:
            try:
                row = _bench_one(name, N, q, k, v, base=base, rounds=rounds,
                                 with_err=N == min(ns) and N <= dense_max_n,
                                 dense_max_n=dense_max_n)
            except Exception as exc:  # a broken variant is reported, the run goes on
                row = _empty_row(name, f"{type(exc).__name__}: {exc}".splitlines()[0][:200], device)
                if device == "cuda":
                    torch.cuda.empty_cache()
            row.update(common, dense_peak_mib=dense_peak if row["note"] == "" else NAN)
            rows.append({c: row[c] for c in COLUMNS})
            log(f"N={N:>6} {name:<16} " + (row["note"] or f"{row['ms']:10.2f} ms "
                                                          f"({row['speedup']:.2f}x)"))
        del q, k, v
        rows += _mixer_rows(mixers, N, batch=batch, heads=heads, dim=dim, dtype=torch_dtype, device=device,
                            rounds=rounds, with_err=N == min(ns), dense_max_n=dense_max_n, log=log)
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]], columns: Sequence[str] = COLUMNS) -> Path:
    """One row per variant × N; floats to 6 significant digits, NaN as ``nan``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        for row in rows:
            writer.writerow({c: f"{x:.6g}" if isinstance(x, float) else x for c, x in row.items()})
    return path


def _fmt(x: float, spec: str, dash: str = "—") -> str:
    return dash if math.isnan(x) else format(x, spec)


def format_table(rows: list[dict[str, Any]]) -> str:
    """An aligned text table; a failed or skipped variant shows its note instead of figures."""
    head = ["variant", "N", "ms", "dense ms", "speedup", "peak MiB", "dense MiB", "max err"]
    lines = []
    for r in rows:
        if r["note"]:
            lines.append([r["variant"], str(r["N"]), r["note"]])
            continue
        lines.append([r["variant"], str(r["N"]), _fmt(r["ms"], ".2f"), _fmt(r["dense_ms"], ".2f"),
                      _fmt(r["speedup"], ".2f") + ("x" if not math.isnan(r["speedup"]) else ""),
                      _fmt(r["peak_mib"], ".1f"), _fmt(r["dense_peak_mib"], ".1f"),
                      _fmt(r["max_err"], ".1e", dash="")])
    full = [cells for cells in lines if len(cells) == len(head)]
    widths = [max([len(head[i])] + [len(c[i]) for c in full]) for i in range(len(head))]
    widths[0] = max([widths[0]] + [len(c[0]) for c in lines])
    widths[1] = max([widths[1]] + [len(c[1]) for c in lines])

    def render(cells):
        left = [cells[0].ljust(widths[0])]
        return "  ".join(left + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]).rstrip()

    out = [render(head), "  ".join("-" * w for w in widths)]
    for cells in lines:
        if len(cells) == len(head):
            out.append(render(cells))
        else:
            out.append(f"{cells[0].ljust(widths[0])}  {cells[1].rjust(widths[1])}  {cells[2]}")
    return "\n".join(out)


def _minor_label(ax) -> Callable[[float, int], str]:
    """Label the 2s and 5s between decades when the axis spans less than two decades."""
    def label(y: float, _pos) -> str:
        lo, hi = ax.get_ylim()
        mantissa = round(y / 10 ** math.floor(math.log10(y)), 6)
        return f"{y:g}" if hi / lo < 100 and mantissa in (2.0, 5.0) else ""
    return label


def plot_bench(rows: list[dict[str, Any]], path: Path, *, title: str = "") -> Path:
    """Time and peak memory against N (log-log), one line per variant plus the dense baseline."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    device = rows[0]["device"] if rows else "cpu"
    label, base_fn = baseline(device)
    fig = Figure(figsize=(12, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax_t, ax_m = fig.subplots(1, 2)
    ns = sorted({r["N"] for r in rows})
    for ax, col, dense_col, ylabel in ((ax_t, "ms", "dense_ms", "time per call (ms, median)"),
                                       (ax_m, "peak_mib", "dense_peak_mib", "peak memory (MiB)")):
        for name in dict.fromkeys(r["variant"] for r in rows):
            if VARIANTS.get(name) is not None and VARIANTS[name].fn is base_fn:
                continue  # the baseline itself: drawn once below
            pts = [(r["N"], r[col]) for r in rows if r["variant"] == name and r[col] > 0]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=name)
        for is_mixer, color, text in ((False, "k", f"dense baseline ({label})"),
                                      (True, "0.45", "dense attention layer (baseline of the mixers)")):
            dense = [(n, statistics.median(vals)) for n in ns
                     if (vals := [r[dense_col] for r in rows if r["N"] == n and r[dense_col] > 0
                                  and (r["variant"] not in VARIANTS) == is_mixer])]
            if dense:
                ax.plot(*zip(*dense), "--", color=color, marker="s", lw=2, label=text)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(_minor_label(ax)))
        ax.xaxis.set_major_locator(FixedLocator(ns))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([str(n) for n in ns])
        ax.set_xlabel("sequence length N")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = ax_t.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right center")
    fig.suptitle(title or "attention variants against dense attention")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def bench(*, out: Path | str = "build/bench", log: Callable[[str], None] | None = print,
          **options) -> list[dict[str, Any]]:
    """:func:`run_bench`, then write ``OUT/bench.csv`` and ``OUT/bench.png``; returns the rows."""
    rows = run_bench(log=log, **options)
    out = Path(out)
    write_csv(out / "bench.csv", rows)
    r0 = rows[0] if rows else {}
    device = options.get("device", "cpu")
    rounds = options.get("rounds", 7)
    title = (f"{_device_name(device)}, torch {torch.__version__}, {r0.get('dtype', '')}, "
             f"B={r0.get('B')}, H={r0.get('H')}, D={r0.get('D')}, median of {rounds} rounds")
    plot_bench(rows, out / "bench.png", title=title)
    return rows


# ---------------------------------------------------------------- the GPU benchmark (attnkit gpu-check)

GPU_NS = (4096, 16384, 65536)
GPU_WINDOW = 256
GPU_COLUMNS = ["variant", "N", "device", "dtype", "B", "H", "D", "kwargs", "status", "first_call_s", "ms",
               "sdpa_ms", "ratio", "rel_err", "note"]
# ‖out - ref‖ / ‖ref‖ allowed at the smallest N, the reference in float32 on the same (rounded) inputs
GPU_TOLERANCE = {"bfloat16": 5e-2, "float16": 2e-2, "float32": 1e-4}


def _flex_window(q, k, v, *, window: int):
    """FlexAttention's sliding window itself (``local`` may pick another kernel on CUDA)."""
    from . import flex
    from .fixed import local_mask

    return flex.flex_attend(q, k, v, key=("local", window, False),
                            mask_mod=local_mask(window, device=q.device))


def _triton_window(q, k, v, *, window: int):
    from .triton_window import window_attention  # imports triton: only when this case runs

    return window_attention(q, k, v, window=window)


def gpu_cases() -> dict[str, tuple[Callable, Callable, dict[str, Any]]]:
    """What ``attnkit gpu-check`` times: label -> (fn, reference, kwargs), both called as
    ``f(q, k, v, **kwargs)``. ``sdpa`` is the baseline; the others are registered variants with
    their CUDA benchmark settings, the bell-curve window, and the Flex and Triton windows."""
    from .fixed import local_reference

    cases: dict[str, tuple[Callable, Callable, dict[str, Any]]] = {"sdpa": (_sdpa, _sdpa, {})}
    for name in ("local", "longformer", "bigbird", "linformer", "performer"):
        cases[name] = (VARIANTS[name].fn, VARIANTS[name].reference, bench_kwargs(name, "cuda"))
    cases["bellcurve"] = (VARIANTS["bellcurve"].fn, VARIANTS["bellcurve"].reference,
                          {"sigma": 64.0, "window": GPU_WINDOW})
    cases["flex_window"] = (_flex_window, local_reference, {"window": GPU_WINDOW})
    cases["triton_window"] = (_triton_window, local_reference, {"window": GPU_WINDOW})
    return cases


def _median_ms(call: Callable[[], Any], cuda: bool, rounds: int = 5) -> float:
    """Median milliseconds of ``call()``, warm-up excluded (CUDA: events through do_bench)."""
    if cuda:
        from triton.testing import do_bench

        return do_bench(call, warmup=25, rep=200, return_mode="median")
    call()
    return statistics.median(time_call(call) for _ in range(rounds)) * 1e3


def _run_case(row: dict[str, Any], fn: Callable, reference: Callable, q, k, v, *, check: bool) -> None:
    """Fill ``row``: the first call alone (compilation included), the check, the median time."""
    sync = torch.cuda.synchronize if q.is_cuda else (lambda: None)
    with torch.no_grad():
        sync()
        t0 = time.perf_counter()
        out = fn(q, k, v)
        sync()
        row["first_call_s"] = time.perf_counter() - t0
        if out.shape != v.shape:
            raise ValueError(f"returned {tuple(out.shape)}, expected {tuple(v.shape)}")
        if check:
            ref = reference(q.float(), k.float(), v.float())
            row["rel_err"] = ((out.float() - ref).norm() / ref.norm()).item()
            tol = GPU_TOLERANCE[row["dtype"]]
            if not row["rel_err"] <= tol:  # NaN fails too
                raise ValueError(f"wrong output: relative error {row['rel_err']:.2e} > {tol:g}")
            del ref
        del out
        row["ms"] = _median_ms(lambda: fn(q, k, v), q.is_cuda)


def run_gpu_bench(*, device: str = "cuda", ns: Sequence[int] = GPU_NS, variants: Sequence[str] | None = None,
                  dtype: str = "bfloat16", batch: int = 1, heads: int = 16, dim: int = 64,
                  deadline: float | None = None, cases: dict | None = None,
                  log: Callable[[str], None] | None = print) -> list[dict[str, Any]]:
    """Every case of :func:`gpu_cases` (or ``cases``) against SDPA at each N: rows of GPU_COLUMNS.

    Per case and N: ``first_call_s``, the first call alone (FlexAttention compiles there); ``ms``,
    the median of later calls; ``ratio`` = sdpa_ms / ms, SDPA timed in the same run. At the
    smallest N each output is checked first against its reference in float32 (``rel_err``, at
    most GPU_TOLERANCE[dtype]). A case that raises or is wrong gets status ``error`` and is not
    run at larger N; past ``deadline`` (a ``time.monotonic()`` value) rows are ``skipped``.
    ``device="cpu"`` runs the same code at small sizes (tests).
    """
    cases = gpu_cases() if cases is None else cases
    names = ["sdpa"] + [n for n in (variants or cases) if n != "sdpa"]
    unknown = [n for n in names if n not in cases]
    if unknown:
        raise ValueError(f"unknown GPU case(s) {unknown}; known: {', '.join(cases)}")
    log = log or (lambda line: None)
    broken: dict[str, str] = {}
    rows = []
    for N in sorted(ns):
        q, k, v = _inputs(batch, heads, N, dim, getattr(torch, dtype), device)
        sdpa_ms = NAN
        for name in names:
            fn, reference, kw = cases[name]
            row = {"variant": name, "N": N, "device": device, "dtype": dtype, "B": batch, "H": heads, "D": dim,
                   "kwargs": _format_kwargs(kw), "status": "ok", "first_call_s": NAN, "ms": NAN,
                   "sdpa_ms": sdpa_ms, "ratio": NAN, "rel_err": NAN, "note": ""}
            if name in broken:
                row["status"], row["note"] = "skipped", broken[name]
            elif deadline is not None and time.monotonic() > deadline:
                row["status"], row["note"] = "skipped", "the time budget was spent"
            else:
                try:
                    _run_case(row, functools.partial(fn, **kw), functools.partial(reference, **kw), q, k, v,
                              check=N == min(ns))
                except Exception as exc:  # reported, the run goes on
                    row["status"], row["note"] = "error", f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                    broken[name] = f"not run: it failed at N={N}"
                    if device == "cuda":
                        torch.cuda.empty_cache()
            if name == "sdpa":
                sdpa_ms = row["sdpa_ms"] = row["ms"]
            row["ratio"] = sdpa_ms / row["ms"]  # NaN when either is missing
            rows.append(row)
            log(f"N={N:>6} {name:<14} " + (f"{row['status']}: {row['note']}" if row["note"] else
                                            f"{row['ms']:9.3f} ms ({row['ratio']:6.2f}x SDPA), first call "
                                            f"{row['first_call_s']:.1f} s"))
        del q, k, v
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows
