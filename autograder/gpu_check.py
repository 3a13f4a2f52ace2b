"""``attnkit gpu-check`` (``make gpu-check``): every GPU path of the kit in one command.

On a machine with a CUDA GPU, in this order:

1. **CUDA tests**: ``pytest -m cuda`` over every test module this Python can import; modules whose
   imports are missing here (nbgrader, nbformat, ... on a bare GPU machine) are listed and left out.
2. **GPU benchmark** (:func:`attnkit.bench.run_gpu_bench`): SDPA, ``local``, ``longformer``,
   ``bigbird``, ``linformer``, ``performer``, the bell-curve window, FlexAttention's window and the
   Triton window kernel; bfloat16, B=1, H=16, D=64, N = 4096, 16384, 65536. Each output is
   checked against its reference at the smallest N; the first call (compilation) is reported
   apart from the median run time; every ratio is against SDPA in the same run, and
   :data:`TARGETS` (issue 15) are marked pass / missed (a missed target is reported, not fatal).
3. **Grading** of the sample submissions of every assignment with ``attnkit demo --gpu``, where
   nbgrader is importable and the sandbox (bubblewrap) is there (else skipped, with the reason).

Optional packages: where some of :data:`OPTIONAL` are missing and a wheelhouse folder exists
(``--wheels``, default ``build/wheels``), they are installed from it with ``pip --no-index``,
every installed distribution pinned to its current version (never a second PyTorch).

Writes ``OUT/report.md`` (machine, steps, tables), ``OUT/results.csv``, ``OUT/ratios.png``,
``OUT/pytest.log`` (and ``OUT/demo/``, ``OUT/demo.log``).

Exit status: 0 every check ran and passed; 1 a CUDA test failed, a benchmark case raised, was
wrong or was not reached within the budget, or a step could not run; 3 no CUDA GPU.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NO_GPU = 3
# module -> pip name: what the grading step and the notebook tests need beyond torch
OPTIONAL = {"nbgrader": "nbgrader", "nbclient": "nbclient", "nbformat": "nbformat", "jupytext": "jupytext",
            "ipykernel": "ipykernel", "jupyter_client": "jupyter-client"}
NAN = float("nan")


@dataclass(frozen=True)
class Target:
    """``variant`` at least ``ratio`` times as fast as ``against`` at length N, in the same run."""

    variant: str
    N: int
    ratio: float
    against: str = "sdpa"

    def __str__(self) -> str:
        return f"{self.variant} >= {self.ratio:g}x {self.against} at N={self.N}"


TARGETS = (Target("local", 16384, 14), Target("local", 65536, 60), Target("longformer", 16384, 3.8),
           Target("bigbird", 16384, 4.8), Target("linformer", 16384, 10), Target("performer", 16384, 5),
           Target("triton_window", 16384, 1.0, "flex_window"),
           Target("triton_window", 65536, 1.0, "flex_window"))


@dataclass
class Step:
    """One step's outcome: status ``ok``, ``failed`` or ``skipped``, a line, and details."""

    name: str
    status: str
    summary: str
    details: list[str] = field(default_factory=list)


def evaluate(rows: list[dict[str, Any]], targets=TARGETS) -> list[dict[str, Any]]:
    """Each target with the measured ratio and a verdict: ``pass``, ``missed`` or ``not measured``."""
    ms = {(r["variant"], r["N"]): r["ms"] for r in rows if r["status"] == "ok"}
    out = []
    for t in targets:
        measured = ms.get((t.against, t.N), NAN) / ms.get((t.variant, t.N), NAN)
        verdict = "not measured" if math.isnan(measured) else "pass" if measured >= t.ratio else "missed"
        out.append({"target": str(t), "measured": measured, "verdict": verdict})
    return out


# ---------------------------------------------------------------- helpers

def _env() -> dict[str, str]:
    """This environment with the repository on PYTHONPATH (absolute: the sandbox has another cwd)."""
    paths = [str(ROOT / "lib"), str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}


def _run_logged(cmd: list[str], log: Path, timeout: float) -> tuple[int, bool]:
    """Run ``cmd`` in the repository, its output to the console and ``log``; (exit code, timed out).
    Past ``timeout`` seconds its whole process group is killed."""
    print("$ " + " ".join(cmd), flush=True)
    killed = threading.Event()
    with open(log, "w") as f, subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                                               stderr=subprocess.STDOUT, text=True,
                                               start_new_session=True) as proc:
        def kill():
            killed.set()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:  # it ended meanwhile
                pass

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            for line in proc.stdout:
                f.write(line)
                sys.stdout.write(line)
        finally:
            timer.cancel()
        return proc.wait(), killed.is_set()


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _commit() -> str:
    """The repository's commit, or ``$ATTNKIT_COMMIT`` (a copy without ``.git``)."""
    if os.environ.get("ATTNKIT_COMMIT"):
        return os.environ["ATTNKIT_COMMIT"]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True,
                               text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git repository)"
    return head + (" with uncommitted changes" if dirty else "")


def machine_info() -> dict[str, str]:
    """GPU, versions and commit for the report's header."""
    import torch

    info = {"GPU": "none", "GPU memory": "", "torch": torch.__version__, "CUDA": torch.version.cuda or "none",
            "triton": _version("triton"), "python": f"{platform.python_version()} ({sys.executable})",
            "commit": _commit(), "date": time.strftime("%Y-%m-%d %H:%M %Z")}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["GPU"] = f"{props.name} ({props.multi_processor_count} SMs)"
        info["GPU memory"] = f"{props.total_memory / 2**30:.0f} GiB"
    return info


def missing_optional() -> list[str]:
    """The modules of :data:`OPTIONAL` this Python cannot import."""
    importlib.invalidate_caches()
    return [m for m in OPTIONAL if importlib.util.find_spec(m) is None]


def constraints() -> str:
    """Every installed distribution pinned to its version: pip may add packages, never change one."""
    pins = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name and name.lower() not in pins:
            pins[name.lower()] = f"{name}=={dist.version}"
    return "\n".join(sorted(pins.values())) + "\n"


def install_optional(wheels: Path, out: Path) -> Step:
    """Install the missing :data:`OPTIONAL` packages from the wheelhouse ``wheels``, if there is one."""
    missing = missing_optional()
    if not missing:
        return Step("optional packages", "ok", "all present: " + ", ".join(OPTIONAL))
    if not wheels.is_dir():
        return Step("optional packages", "skipped",
                    f"missing {', '.join(missing)} and no wheelhouse at {wheels}: the steps that need "
                    "them are skipped (docs/benchmarks.md, 'GPU check', says how to fill one)")
    pins = out / "constraints.txt"
    pins.write_text(constraints())
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links", str(wheels),
           "-c", str(pins), *(OPTIONAL[m] for m in missing)]
    rc, _ = _run_logged(cmd, out / "pip.log", timeout=600)
    still = missing_optional()
    status = "ok" if rc == 0 and not still else "failed"
    return Step("optional packages", status,
                f"installed {', '.join(OPTIONAL[m] for m in missing)} from {wheels}" if status == "ok" else
                f"pip install from {wheels} exited {rc}; still missing: {', '.join(still) or 'none'} "
                f"(see {out / 'pip.log'})")


# ---------------------------------------------------------------- step 1: the CUDA tests

_PROBE = r"""
import ast, importlib, json, sys
bad = {}
for path in sys.argv[1:]:
    for node in ast.parse(open(path).read()).body:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module]
        else:
            continue
        for name in names:
            try:
                importlib.import_module(name)
            except Exception as exc:
                bad.setdefault(path, f"import {name}: {type(exc).__name__}: {exc}".splitlines()[0])
print(json.dumps(bad))
"""


def unimportable(files: list[str], tests: Path = ROOT / "tests") -> dict[str, str]:
    """Test files whose module-level imports fail in this Python: file -> the first failure."""
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join([str(tests), env["PYTHONPATH"]])  # as pytest's rootdir insert
    done = subprocess.run([sys.executable, "-c", _PROBE, *files], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"the import probe failed: {(done.stderr or done.stdout).strip()[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _junit(path: Path) -> tuple[dict[str, int], list[str]]:
    """(counts of tests, failures, errors, skipped; ids of the failed tests) from a JUnit XML file."""
    if not path.exists():
        return {}, []
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    failed = [f"{case.get('classname')}::{case.get('name')}" for case in root.iter("testcase")
              if case.find("failure") is not None or case.find("error") is not None]
    return counts, failed


def run_cuda_tests(out: Path, timeout: float, files: list[str] | None = None) -> Step:
    """``pytest -m cuda`` over the importable test modules (``files``, relative to the repository;
    default every ``tests/test_*.py``); failed unless every collected test passes or is skipped."""
    files = files or sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py"))
    try:
        left_out = unimportable(files)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        return Step("CUDA tests", "failed", f"could not tell which test modules import: {exc}")
    details = [f"left out {f}: {why}" for f, why in sorted(left_out.items())]
    xml = out / "pytest.xml"
    xml.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-p", "no:cacheprovider", "-rfE", "-q",
           f"--junitxml={xml}", *(f for f in files if f not in left_out)]
    rc, timed_out = _run_logged(cmd, out / "pytest.log", timeout)
    counts, failed = _junit(xml)
    details += [f"FAILED {t}" for t in failed]
    ran = ", ".join(f"{v} {k}" for k, v in counts.items()) or "no JUnit report"
    if timed_out:
        return Step("CUDA tests", "failed", f"killed after {timeout:.0f} s ({ran})", details)
    if rc == 5:
        return Step("CUDA tests", "failed", "no CUDA-marked test was collected", details)
    status = "ok" if rc == 0 else "failed"
    return Step("CUDA tests", status, f"pytest exited {rc}: {ran}; {len(left_out)} modules left out", details)


# ---------------------------------------------------------------- step 2: the benchmark

def plot_ratios(rows: list[dict[str, Any]], path: Path, *, title: str = "", targets=TARGETS) -> Path:
    """Speed-up over SDPA against N (log-log), one line per variant; the targets as stars."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator

    fig = Figure(figsize=(8, 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for name in dict.fromkeys(r["variant"] for r in rows if r["variant"] != "sdpa"):
        pts = [(r["N"], r["ratio"]) for r in rows if r["variant"] == name and r["ratio"] > 0]
        if not pts:
            continue
        line, = ax.plot(*zip(*pts), marker="o", label=name)
        for t in targets:
            if t.variant == name and t.against == "sdpa":
                ax.plot(t.N, t.ratio, "*", ms=12, color=line.get_color(), mfc="none")
    ax.axhline(1.0, color="k", ls="--", lw=1, label="SDPA")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ns = sorted({r["N"] for r in rows})
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("sequence length N")
    ax.set_ylabel("speed-up over SDPA (same run)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="☆ = target", fontsize=8)
    ax.set_title(title or "GPU benchmark", fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def bench_step(rows: list[dict[str, Any]]) -> Step:
    """The benchmark's outcome: failed when a case raised, was wrong or was not reached."""
    bad = [r for r in rows if r["status"] != "ok"]
    details = [f"{r['variant']} N={r['N']}: {r['status']}: {r['note']}" for r in bad]
    status = "failed" if bad or not rows else "ok"
    return Step("GPU benchmark", status, f"{len(rows) - len(bad)} of {len(rows)} cases measured", details)


# ---------------------------------------------------------------- step 3: grading

def run_grading(out: Path, *, unsafe: bool, timeout: float) -> Step:
    """``attnkit demo --gpu`` over the samples, where nbgrader and the sandbox can run."""
    missing = missing_optional()
    if missing:
        return Step("grading (demo --gpu)", "skipped", f"needs {', '.join(missing)}, not installed here")
    if not unsafe and shutil.which(os.environ.get("ATTNKIT_BWRAP", "bwrap")) is None:
        return Step("grading (demo --gpu)", "skipped",
                    "bubblewrap (bwrap) is not installed, so the grading sandbox cannot start; "
                    "--grade-unsafe grades the kit's own samples without it")
    cmd = [sys.executable, "-m", "autograder.cli", "demo", "--gpu", "--workers", "4",
           "--out", str(out / "demo")] + (["--unsafe"] if unsafe else [])
    rc, timed_out = _run_logged(cmd, out / "demo.log", timeout)
    if timed_out:
        return Step("grading (demo --gpu)", "failed", f"killed after {timeout:.0f} s (see {out / 'demo.log'})")
    return Step("grading (demo --gpu)", "ok" if rc == 0 else "failed",
                f"attnkit demo --gpu exited {rc}; grades in {out / 'demo' / 'grades.csv'}")


# ---------------------------------------------------------------- the report

def _num(x: float, spec: str) -> str:
    return "—" if isinstance(x, float) and math.isnan(x) else format(x, spec)


def write_report(path: Path, *, machine: dict[str, str], steps: list[Step], rows: list[dict[str, Any]],
                 verdicts: list[dict[str, Any]], seconds: float, exit_code: int) -> Path:
    """``report.md``: the machine, each step's outcome, the benchmark table and the targets."""
    lines = ["# attnkit gpu-check", "", "| machine | |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in machine.items()]
    lines += ["", f"Exit status {exit_code} after {seconds:.0f} s.", "", "## Steps", ""]
    for s in steps:
        lines.append(f"- **{s.name}**: {s.status.upper()}: {s.summary}")
        lines += [f"  - {d}" for d in s.details]
    if rows:
        r0 = rows[0]
        lines += ["", "## Benchmark", "",
                  f"{r0['dtype']}, B={r0['B']}, H={r0['H']}, D={r0['D']}; ms = median (CUDA events, "
                  "warm-up excluded); first call = compilation included; ratio = SDPA ms / ms, same run; "
                  "rel. err = ‖out − ref‖ / ‖ref‖ against the float32 reference at the smallest N.", "",
                  "| variant | N | kwargs | first call (s) | ms | SDPA ms | ratio | rel. err | status |",
                  "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
        for r in rows:
            status = r["status"] + (f": {r['note']}" if r["note"] else "")
            lines.append(f"| {r['variant']} | {r['N']} | {r['kwargs']} | {_num(r['first_call_s'], '.2f')} | "
                         f"{_num(r['ms'], '.3f')} | {_num(r['sdpa_ms'], '.3f')} | {_num(r['ratio'], '.2f')} | "
                         f"{_num(r['rel_err'], '.1e')} | {status} |")
    if verdicts:
        lines += ["", "## Targets (issue 15)", "", "| target | measured | verdict |", "| --- | ---: | --- |"]
        lines += [f"| {v['target']} | {_num(v['measured'], '.2f')} | {v['verdict']} |" for v in verdicts]
        lines += ["", "A missed target is reported, not fatal (exit status 0 when everything else passed)."]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------- the command

def gpu_check(*, out: Path, ns=None, variants=None, skip=(), wheels: Path | None = None,
              grade_unsafe: bool = False, budget: float = 450, test_timeout: float = 240,
              grade_timeout: float = 1200) -> int:
    """Run the steps (see the module docstring); return the exit status."""
    import torch

    if not torch.cuda.is_available():
        print(f"attnkit gpu-check: no CUDA GPU: nothing to check (torch {torch.__version__} sees none)")
        return NO_GPU
    from attnkit.bench import GPU_COLUMNS, GPU_NS, gpu_cases, run_gpu_bench, write_csv

    unknown = [v for v in variants or () if v not in gpu_cases()]
    if unknown:
        print(f"attnkit gpu-check: error: unknown case(s) {unknown}; known: {', '.join(gpu_cases())}",
              file=sys.stderr)
        return 2
    begin = time.monotonic()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    print("gpu-check on " + ", ".join(f"{k} {v}" for k, v in machine.items() if v), flush=True)
    steps = [install_optional(Path(wheels or ROOT / "build" / "wheels"), out)]
    if "tests" in skip:
        steps.append(Step("CUDA tests", "skipped", "--skip tests"))
    else:
        steps.append(run_cuda_tests(out, timeout=min(test_timeout, budget)))
    rows, verdicts = [], []
    if "bench" in skip:
        steps.append(Step("GPU benchmark", "skipped", "--skip bench"))
    else:
        try:
            rows = run_gpu_bench(ns=ns or GPU_NS, variants=variants, deadline=begin + budget)
            steps.append(bench_step(rows))
        except Exception as exc:  # the benchmark itself broke (not one case): fail loudly
            steps.append(Step("GPU benchmark", "failed", f"{type(exc).__name__}: {exc}"))
        write_csv(out / "results.csv", rows, GPU_COLUMNS)
        verdicts = evaluate(rows)
        try:
            plot_ratios(rows, out / "ratios.png", title=f"{machine['GPU']}, torch {machine['torch']}, "
                                                        f"triton {machine['triton']}, bfloat16, B=1, H=16, D=64")
        except Exception as exc:  # the figures are in the report and the CSV all the same
            steps.append(Step("plot", "failed", f"{type(exc).__name__}: {exc}"))
    if "grade" in skip:
        steps.append(Step("grading (demo --gpu)", "skipped", "--skip grade"))
    else:
        steps.append(run_grading(out, unsafe=grade_unsafe, timeout=grade_timeout))
    failed = [s.name for s in steps if s.status == "failed" and s.name != "optional packages"]
    code = 1 if failed else 0
    report = write_report(out / "report.md", machine=machine, steps=steps, rows=rows, verdicts=verdicts,
                          seconds=time.monotonic() - begin, exit_code=code)
    print()
    for s in steps:
        print(f"{s.name}: {s.status.upper()}: {s.summary}")
        for d in s.details:
            print(f"    {d}")
    for v in verdicts:
        print(f"target {v['target']}: {_num(v['measured'], '.2f')} {v['verdict'].upper()}")
    print(f"\nwrote {report}, {out / 'results.csv'}, {out / 'ratios.png'}")
    print(f"gpu-check: {'FAILED: ' + ', '.join(failed) if failed else 'PASSED'} (exit {code}, "
          f"{time.monotonic() - begin:.0f} s)")
    return code
