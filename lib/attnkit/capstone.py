"""The capstone benchmark: every token mixer of the course trained on the same long-range tasks.

    attnkit capstone [--quick] [--out build/capstone] [--variants a,b] [--tasks x,y] [--seeds 0 1]

The Long Range Arena question (Tay et al. 2021, arXiv:2011.04006), on a CPU: what does each
variant give up in accuracy for its speed and memory? For every name V in
:func:`attnkit.models.mixer_names` (every :data:`attnkit.VARIANTS` entry and every
:data:`attnkit.MIXERS` module) and every task T of :data:`attnkit.lra.TASKS`, with the same
budget and seeds::

    model  = Transformer(V, vocab=T.vocab, max_len=N, d_model=32, n_layers=2, n_heads=2,
                         seed=s, **mixer_kwargs(V, N))
    fit(model, batch_fn=lambda t: T(B, length=N, seed=s·1000003 + t + 1), cross-entropy,
        steps, lr, AdamW + warm-up + cosine, threads=1)                    (attnkit.training.fit)
    accuracy_s = share of held-out targets predicted exactly   (the same held-out set for all)

``accuracy_mean`` and the min-max spread are over the seeds; ``step_ms`` is the median training
step (forward, backward, AdamW) of seed 0 and ``steps_per_second`` its inverse;
``peak_memory_mb`` is :func:`attnkit.measure.peak_memory` of one forward and backward pass on a
training batch: bytes of the tensors allocated and alive at the peak (activations, the scores
matrix where there is one, gradients), not the parameters already allocated nor the optimizer.

Then the speed part: one training step at each of ``speed_lengths`` (512 to 4096) with B = 1 and
the hyperparameters the model was trained with (a window stays w tokens as N grows), median of
``speed_rounds`` steps after a warm-up, and its peak memory.

Hyperparameters (:func:`mixer_kwargs`) scale with the training length N: window w = N/16,
strides and Linformer's k = N/8, blocks of w, Performer m = 64, RFA m = 32. The FULL budget
trains at N = 128 (B = 16, 200 steps, 2 seeds), the QUICK one at N = 32 (80 steps, one seed):
what fits in 30 and 3 minutes on two CPU cores; 512 to 4096 is the speed part's range. A
variant that cannot run a configuration is recorded with status ``unsupported`` and the reason,
one that raises while training ``failed``; neither stops the run.

Writes ``OUT/results.csv`` (:data:`COLUMNS`), ``OUT/speed.csv`` (:data:`SPEED_COLUMNS`),
``OUT/results.md`` and ``OUT/capstone.png`` (per task: accuracy against training steps per
second, bubble area = peak memory; and step time against N).

    rows = run(["dense", "local"], ["recall"], quick=True, out=Path("build/capstone"))   # list[Row]
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from . import lra
from .measure import peak_memory
from .models import Transformer, mixer_names
from .notebook import threads as torch_threads
from .tasks import IGNORE, accuracy
from .training import fit

__all__ = ["Budget", "FULL", "QUICK", "Row", "SpeedRow", "COLUMNS", "SPEED_COLUMNS", "mixer_kwargs", "family",
           "train_one", "speed_one", "run", "write_csv", "format_markdown", "plot", "add_arguments", "command",
           "main"]

TEST_SEED = 2**40 + 7  # the held-out set's seed: no training batch uses it
MB = 2**20


@dataclass(frozen=True)
class Budget:
    """What every variant gets: the training length N, steps, batch B, learning rate, seeds, the
    held-out set's size, the model's sizes, and the lengths and rounds of the speed part."""

    length: int = 128
    steps: int = 200
    batch: int = 16
    lr: float = 1e-2
    seeds: tuple[int, ...] = (0, 1)
    n_test: int = 512
    d_model: int = 32
    n_layers: int = 2
    n_heads: int = 2
    speed_lengths: tuple[int, ...] = (512, 1024, 2048, 4096)
    speed_rounds: int = 3


FULL = Budget()
QUICK = Budget(length=32, steps=80, seeds=(0,), n_test=256, speed_lengths=(256, 512), speed_rounds=1)


def mixer_kwargs(name: str, N: int) -> dict[str, Any]:
    """Hyperparameters of ``name`` for training length N (the registry's ``example_kwargs`` are sized
    for unit tests at N = 64). w = N/16 for windows and blocks, N/8 for strides and Linformer's k.
    Names not listed keep their defaults (the mixers: the papers' sizes, see :func:`attnkit.models.make_layer`);
    random projections keep the registry's ``seed=0`` (the model's ``seed`` is the initialisation's)."""
    w = max(4, N // 16)
    table: dict[str, dict[str, Any]] = {
        "local": {"window": w},
        "dilated": {"window": max(2, w // 2), "dilation": 2},
        "strided": {"stride": max(2, N // 8)},
        "fixed": {"stride": max(2, N // 8), "summary": 2},
        "longformer": {"window": w, "global_tokens": 2},
        "bigbird": {"block": w, "window_blocks": 1, "global_blocks": 1, "random_blocks": 1},
        "transformer_xl": {"segment": max(4, N // 4)},
        "performer": {"m": 64},
        "linformer": {"proj_len": max(4, N // 8)},
        "compressed": {"stride": 4},
        "bellcurve": {"sigma": w / 2, "window": w, "global_tokens": 2},
        "adaptive_span": {"span": float(w), "ramp": 4.0},
        "lsh": {"buckets": 8, "rounds": 2, "chunk": w},
        "routing": {"clusters": 4, "iters": 3},
        "rfa": {"m": 32},
        "sinkhorn": {"block": w},
    }
    return dict(table.get(name, {}))


def family(name: str) -> str:
    """The course's family of a variant or mixer (``registry.Variant.family`` / ``Mixer.family``)."""
    from .registry import MIXERS, VARIANTS
    entry = VARIANTS.get(name) or MIXERS.get(name)
    return entry.family if entry is not None else "?"


def _format_kwargs(kw: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in kw.items())


# ---------------------------------------------------------------- one training run

COLUMNS = ["variant", "family", "task", "N", "status", "accuracy_mean", "accuracy_spread", "accuracy_min",
           "accuracy_max", "accuracies", "chance", "majority", "step_ms", "steps_per_second", "peak_memory_mb", "seeds",
           "steps", "batch", "kwargs", "seconds", "note"]
NAN = float("nan")


@dataclass
class Row:
    """One variant on one task: :data:`COLUMNS`. ``accuracy_spread`` = max - min over the seeds;
    ``chance`` = 1 / the number of answers, ``majority`` = the accuracy of always giving the held-out
    set's most common answer (ListOps' answers are far from uniform);
    ``status``: ``ok``, ``unsupported`` (it cannot run this configuration: ``note`` says why) or
    ``failed`` (it raised, or its loss stopped being finite, while training)."""

    variant: str
    family: str
    task: str
    N: int
    status: str = "ok"
    accuracy_mean: float = NAN
    accuracy_spread: float = NAN
    accuracy_min: float = NAN
    accuracy_max: float = NAN
    accuracies: list[float] = field(default_factory=list)
    chance: float = NAN
    majority: float = NAN
    step_ms: float = NAN
    steps_per_second: float = NAN
    peak_memory_mb: float = NAN
    seeds: tuple[int, ...] = ()
    steps: int = 0
    batch: int = 0
    kwargs: str = ""
    seconds: float = 0.0
    note: str = ""


def _loss(model, batch) -> torch.Tensor:
    x, y = batch  # (B, N) each
    logits = model(x)  # (B, N, vocab)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=IGNORE)


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:240]


def _build(name: str, vocab: int, N: int, budget: Budget, seed: int, kw: dict[str, Any]) -> Transformer:
    return Transformer(name, vocab=vocab, max_len=N, d_model=budget.d_model, n_layers=budget.n_layers,
                       n_heads=budget.n_heads, seed=seed, **kw)


def train_one(name: str, task: str, budget: Budget = FULL) -> Row:
    """Train ``name`` on ``task`` once per seed of ``budget``; the row of :data:`COLUMNS`.

    First a check: the model is built and runs forward and backward on a training batch (its
    peak memory is measured there). If that raises, the row is ``unsupported`` with the error;
    an error later, or a loss that is not finite, makes it ``failed``.
    """
    t = lra.TASKS[task]
    N = budget.length
    kw = mixer_kwargs(name, N)
    row = Row(name, family(name), task, N, chance=t.chance, seeds=tuple(budget.seeds), steps=budget.steps,
              batch=budget.batch, kwargs=_format_kwargs(kw))
    t0 = time.perf_counter()
    test_x, test_y = t.fn(budget.n_test, length=N, seed=TEST_SEED)  # (n_test, N) each
    answers = test_y[test_y != IGNORE]
    row.majority = answers.bincount().max().item() / len(answers)
    with torch.random.fork_rng(devices=[]):
        with torch_threads(1):
            try:
                model = _build(name, t.vocab, N, budget, budget.seeds[0], kw)
                batch = t.fn(budget.batch, length=N, seed=0)

                def forward_backward():
                    _loss(model, batch).backward()

                row.peak_memory_mb = peak_memory(forward_backward) / MB
                model.zero_grad(set_to_none=True)
            except Exception as exc:  # it cannot run this configuration: recorded, not fatal
                row.status, row.note = "unsupported", _error(exc)
                row.seconds = time.perf_counter() - t0
                return row
            accs, step_s = [], []
            for seed in budget.seeds:
                def batch_fn(step: int, s: int = seed):  # a fresh batch every step, from its own seed
                    return t.fn(budget.batch, length=N, seed=s * 1_000_003 + step + 1)

                try:
                    model = _build(name, t.vocab, N, budget, seed, kw)
                    result = fit(model, batch_fn, _loss, steps=budget.steps, lr=budget.lr, threads=1,
                                 eval_fn=lambda m: {"accuracy": accuracy(m, test_x, test_y)})
                except Exception as exc:
                    row.status, row.note = "failed", f"seed {seed}: {_error(exc)}"
                    break
                if not all(math.isfinite(x) for x in result.loss[-5:]):
                    row.status, row.note = "failed", f"seed {seed}: the training loss is not finite"
                    break
                accs.append(result.final["accuracy"])
                step_s.append(result.step_seconds)
    if row.status == "ok":
        row.accuracies = [round(a, 4) for a in accs]
        row.accuracy_mean = statistics.fmean(accs)
        row.accuracy_min, row.accuracy_max = min(accs), max(accs)
        row.accuracy_spread = row.accuracy_max - row.accuracy_min
        row.step_ms = step_s[0] * 1e3
        row.steps_per_second = 1 / step_s[0]
    row.seconds = time.perf_counter() - t0
    return row


# ---------------------------------------------------------------- the speed part

SPEED_COLUMNS = ["variant", "family", "N", "status", "step_ms", "steps_per_second", "peak_memory_mb", "batch",
                 "kwargs", "note"]
SPEED_VOCAB = 16


@dataclass
class SpeedRow:
    """One training step of ``variant`` at length N (B = 1): :data:`SPEED_COLUMNS`."""

    variant: str
    family: str
    N: int
    status: str = "ok"
    step_ms: float = NAN
    steps_per_second: float = NAN
    peak_memory_mb: float = NAN
    batch: int = 1
    kwargs: str = ""
    note: str = ""


def speed_one(name: str, N: int, budget: Budget = FULL) -> SpeedRow:
    """Median time of a training step (forward, backward, AdamW) at length N with B = 1 and the
    training hyperparameters (:func:`mixer_kwargs` at ``budget.length``), and the peak memory of
    its forward and backward pass."""
    kw = mixer_kwargs(name, budget.length)
    row = SpeedRow(name, family(name), N, kwargs=_format_kwargs(kw))
    with torch.random.fork_rng(devices=[]), torch_threads(1):
        try:
            model = _build(name, SPEED_VOCAB, N, budget, 0, kw)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            x = torch.randint(0, SPEED_VOCAB, (1, N), generator=torch.Generator().manual_seed(N))  # (1, N)

            def forward_backward():
                loss = F.cross_entropy(model(x).reshape(-1, SPEED_VOCAB), x.reshape(-1))
                loss.backward()

            def step():
                opt.zero_grad(set_to_none=True)
                forward_backward()
                opt.step()

            step()  # warm-up (and AdamW's state)
            times = []
            for _ in range(budget.speed_rounds):
                t0 = time.perf_counter()
                step()
                times.append(time.perf_counter() - t0)
            opt.zero_grad(set_to_none=True)
            row.peak_memory_mb = peak_memory(forward_backward) / MB
        except Exception as exc:
            row.status, row.note = "unsupported", _error(exc)
            return row
    row.step_ms = statistics.median(times) * 1e3
    row.steps_per_second = 1e3 / row.step_ms
    return row


# ---------------------------------------------------------------- the whole benchmark

def _names(variants: Sequence[str] | None, tasks: Sequence[str] | None) -> tuple[list[str], list[str]]:
    names = mixer_names() if variants is None else list(variants)
    unknown = [n for n in names if n not in mixer_names()]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; known: {', '.join(mixer_names())}")
    task_list = lra.task_names() if tasks is None else list(tasks)
    unknown = [t for t in task_list if t not in lra.TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; known: {', '.join(lra.TASKS)}")
    return names, task_list


def run(variants: Sequence[str] | None = None, tasks: Sequence[str] | None = None, *, quick: bool = False,
        seeds: Sequence[int] | None = None, out: Path | str | None = Path("build/capstone"), progress: bool = True,
        budget: Budget | None = None, speed: bool = True) -> list[Row]:
    """Train every variant on every task (:func:`train_one`), then time them (:func:`speed_one`).

    ``variants``: names from :func:`attnkit.models.mixer_names` (default all); ``tasks``: from
    :data:`attnkit.lra.TASKS` (default all); ``budget``: default ``QUICK`` or ``FULL``, with
    ``seeds`` replacing its seeds; ``speed=False`` leaves the speed part out. Writes the files of
    the module docstring under ``out`` (None: nothing) and returns the rows of ``results.csv``
    (the speed part's rows are in ``speed.csv`` and ``run.speed_rows``).
    """
    names, task_list = _names(variants, tasks)
    budget = budget or (QUICK if quick else FULL)
    if seeds is not None:
        if not seeds:
            raise ValueError("run: need at least one seed")
        budget = replace(budget, seeds=tuple(int(s) for s in seeds))
    jobs = [(name, task) for task in task_list for name in names]
    speed_jobs = [(name, N) for N in budget.speed_lengths for name in names] if speed else []
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(jobs) + len(speed_jobs), desc="capstone", unit="run")
    out = None if out is None else Path(out)
    rows: list[Row] = []
    for name, task in jobs:
        if bar is not None:
            bar.set_postfix_str(f"{task} {name}")
        rows.append(train_one(name, task, budget))
        if out is not None:  # after every run, so an interrupted benchmark keeps what it finished
            write_csv(out / "results.csv", rows, COLUMNS)
        if bar is not None:
            bar.update(1)
    speed_rows: list[SpeedRow] = []
    for name, N in speed_jobs:
        if bar is not None:
            bar.set_postfix_str(f"speed N={N} {name}")
        speed_rows.append(speed_one(name, N, budget))
        if out is not None:
            write_csv(out / "speed.csv", speed_rows, SPEED_COLUMNS)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if out is not None:
        write_csv(out / "results.csv", rows, COLUMNS)
        write_csv(out / "speed.csv", speed_rows, SPEED_COLUMNS)
        (out / "results.md").write_text(format_markdown(rows, speed_rows, budget))
        plot(rows, speed_rows, out / "capstone.png", title=_title(budget))
    run.speed_rows = speed_rows
    return rows


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, 1 thread per run"


def _title(budget: Budget) -> str:
    return (f"trained at N={budget.length}, B={budget.batch}, {budget.steps} steps, seeds "
            f"{', '.join(map(str, budget.seeds))}; {_machine()}")


def write_csv(path: Path, rows: Sequence[Row | SpeedRow], columns: Sequence[str]) -> Path:
    """One line per row; floats to 4 significant digits, lists and tuples joined by spaces."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        for row in rows:
            d = asdict(row)
            writer.writerow({c: (f"{d[c]:.4g}" if isinstance(d[c], float) else
                                 " ".join(map(str, d[c])) if isinstance(d[c], (list, tuple)) else d[c])
                             for c in columns})
    return path


def _acc(row: Row) -> str:
    if row.status != "ok":
        return row.status
    return f"{row.accuracy_mean:.2f} ± {row.accuracy_spread / 2:.2f}" if len(row.accuracies) > 1 else \
        f"{row.accuracy_mean:.2f}"


def format_markdown(rows: Sequence[Row], speed_rows: Sequence[SpeedRow], budget: Budget) -> str:
    """The accuracy table (variant × task, mean ± half the min-max spread), the speed table
    (variant × N: step ms and peak MB) and the notes of every row that is not ``ok``."""
    names = list(dict.fromkeys(r.variant for r in rows)) or list(dict.fromkeys(r.variant for r in speed_rows))
    tasks = list(dict.fromkeys(r.task for r in rows))
    by = {(r.variant, r.task): r for r in rows}
    majority = {r.task: r.majority for r in rows}
    lines = [f"Capstone: {_title(budget)}.", "",
             "Accuracy on held-out sequences (mean ± half the min–max spread over seeds); chance / always the "
             "most common answer: " +
             ", ".join(f"{t} {lra.TASKS[t].chance:.3g} / {majority[t]:.3g}" for t in tasks) +
             f". Step time: median training step at N={budget.length}, B={budget.batch} (first task's run); "
             "peak memory: attnkit.measure.peak_memory of one forward + backward pass on a training batch.", ""]
    if rows:
        head = ["variant", "family", *tasks, "step ms", "steps/s", "peak MB"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name in names:
            first = next((by[name, t] for t in tasks if (name, t) in by and by[name, t].status == "ok"), None)
            cells = [name, family(name), *(_acc(by[name, t]) if (name, t) in by else "" for t in tasks)]
            cells += ([f"{first.step_ms:.1f}", f"{first.steps_per_second:.1f}", f"{first.peak_memory_mb:.1f}"]
                      if first else ["—", "—", "—"])
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if speed_rows:
        ns = sorted({r.N for r in speed_rows})
        sp = {(r.variant, r.N): r for r in speed_rows}
        lines += ["Training step (forward, backward, AdamW) at B=1, hyperparameters as trained: "
                  "step ms / peak MB of the forward + backward pass.", ""]
        head = ["variant", *(f"N={n}" for n in ns)]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name in dict.fromkeys(r.variant for r in speed_rows):
            cells = [name]
            for n in ns:
                r = sp.get((name, n))
                cells.append("" if r is None else r.status if r.status != "ok" else
                             f"{r.step_ms:.0f} ms / {r.peak_memory_mb:.1f} MB")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    notes = [f"- {r.variant} on {r.task}: {r.status}: {r.note}" for r in rows if r.status != "ok"]
    notes += [f"- {r.variant} at N={r.N} (speed): {r.status}: {r.note}" for r in speed_rows if r.status != "ok"]
    if notes:
        lines += ["Not run or failed:", "", *notes, ""]
    return "\n".join(lines)


def plot(rows: Sequence[Row], speed_rows: Sequence[SpeedRow], path: Path, *, title: str = "") -> Path:
    """The LRA figure: one panel per task, accuracy against training steps per second (bubble area
    proportional to peak memory, labelled, chance dashed); a last panel with step time against N."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tasks = list(dict.fromkeys(r.task for r in rows))
    panels = max(1, len(tasks) + (1 if speed_rows else 0))
    cols = min(panels, 2)
    rows_of_panels = math.ceil(panels / cols)
    fig = Figure(figsize=(7 * cols, 5.5 * rows_of_panels), layout="constrained")
    FigureCanvasAgg(fig)
    axes = list(fig.subplots(rows_of_panels, cols, squeeze=False).flat)
    for ax in axes[panels:]:
        ax.set_visible(False)
    ok = [r for r in rows if r.status == "ok"]
    biggest = max([r.peak_memory_mb for r in ok] or [1.0])
    names = list(dict.fromkeys(r.variant for r in rows))
    colors = {n: f"C{i % 10}" for i, n in enumerate(names)}
    for ax, task in zip(axes, tasks):
        pts = [r for r in ok if r.task == task]
        for r in pts:
            ax.scatter(r.steps_per_second, r.accuracy_mean, s=30 + 1500 * r.peak_memory_mb / biggest, alpha=0.4,
                       color=colors[r.variant], edgecolors="k", linewidths=0.5)
            if len(r.accuracies) > 1:
                ax.errorbar(r.steps_per_second, r.accuracy_mean, yerr=[[r.accuracy_mean - r.accuracy_min],
                                                                          [r.accuracy_max - r.accuracy_mean]],
                            color="k", lw=0.8, capsize=2)
            ax.annotate(r.variant, (r.steps_per_second, r.accuracy_mean), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        ax.axhline(lra.TASKS[task].chance, color="0.5", ls="--", lw=1, label="chance")
        bad = [r.variant for r in rows if r.task == task and r.status != "ok"]
        if bad:
            ax.text(0.01, 0.01, "not run: " + ", ".join(bad), transform=ax.transAxes, fontsize=7, va="bottom")
        ax.set_xscale("log")
        ax.set_ylim(0, 1.05)
        ax.set_xlabel(f"training steps per second (N={pts[0].N if pts else '?'})")
        ax.set_ylabel("held-out accuracy")
        ax.set_title(f"{task}: {lra.TASKS[task].tests}", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper right", fontsize=7)
    if speed_rows:
        ax = axes[panels - 1]
        for i, name in enumerate(dict.fromkeys(r.variant for r in speed_rows)):
            pts = sorted((r.N, r.step_ms) for r in speed_rows if r.variant == name and r.status == "ok")
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=3, lw=1, color=f"C{i % 10}",
                        ls="-" if i < 10 else "--" if i < 20 else ":", label=name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length N (B = 1)")
        ax.set_ylabel("training step (ms, median)")
        ax.set_title("speed: one training step against N", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    fig.suptitle(title or "capstone", fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


# ---------------------------------------------------------------- the command

def _split(values: Sequence[str] | None) -> list[str] | None:
    """``["a,b", "c"]`` -> ``["a", "b", "c"]`` (commas or spaces)."""
    if values is None:
        return None
    return [v for value in values for v in value.split(",") if v]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``attnkit capstone`` (used by the console script and by :func:`main`)."""
    p.add_argument("--quick", action="store_true", help="the chapter's run: N=32, 80 steps, one seed (~3 min)")
    p.add_argument("--out", default="build/capstone", help="output folder (default build/capstone)")
    p.add_argument("--variants", nargs="+", help="names, comma- or space-separated (default: all)")
    p.add_argument("--tasks", nargs="+", help=f"tasks (default: all of {', '.join(lra.TASKS)})")
    p.add_argument("--seeds", nargs="+", help="seeds (default 0 1; --quick: 0)")
    p.add_argument("--no-speed", action="store_true", help="leave out the speed part (512 to 4096)")


def command(args: argparse.Namespace) -> int:
    """Run ``attnkit capstone`` with parsed ``args``; 2 for an unknown name."""
    try:
        seeds = None if args.seeds is None else [int(s) for s in _split(args.seeds)]
        names, tasks = _names(_split(args.variants), _split(args.tasks))
    except ValueError as exc:
        print(f"attnkit capstone: error: {exc}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    run(names, tasks, quick=args.quick, seeds=seeds, out=Path(args.out), progress=True, speed=not args.no_speed)
    print((Path(args.out) / "results.md").read_text())
    print(f"wrote {args.out}/results.csv, speed.csv, results.md and capstone.png in {time.perf_counter() - t0:.0f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m attnkit.capstone [--quick] ...``, the same as ``attnkit capstone``."""
    p = argparse.ArgumentParser(prog="attnkit capstone", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return command(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
