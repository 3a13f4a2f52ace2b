"""How fast does a class get graded? The old code against the new, side by side in one run.

Builds a class of a1 submissions from the bundled samples (``autograder/samples/a1_*``: full,
partial, blank, crash_early, hostile, malformed, in the proportions of ``MIX``, each under its
own student id), then grades it with ``attnkit grade --workers W`` twice: with the code of an
older commit (a ``git worktree`` of ``--old-rev`` at ``--old-tree``, run from this virtualenv
with ``PYTHONPATH`` pointing at it) and with the code of this checkout. It checks that every
student gets the same score and the same score per cell, and prints and writes the figures
(wall time, submissions per minute, the machine's load average before and after each run).

    python scripts/class_bench.py --n 200 --workers 2 --old-rev 743fdb6     # the A/B
    python scripts/class_bench.py --n 40 --rates --skip-ab                  # workers 1, 2, Dask
    python scripts/class_bench.py --phases 6 --old-rev 743fdb6              # per-phase table

``--phases N`` grades N submissions in one process (``--workers 1``) under a probe that times
the same phases in both codes (staging, kernel start, the guard's install cell with its imports,
the other cells, kernel shutdown, nbgrader's bookkeeping, feedback, the commit), by wrapping the
functions both codes share. ``--rates`` grades the class with the new code at 1 and 2 workers and
on a Dask ``LocalCluster`` of two single-threaded worker processes. Results go to ``--out``
(``results.json``, one line per measurement appended) and to stdout.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
A1 = "a1_attention_basics"
# Of 100 students: how many hand in each sample.
MIX = {"full": 35, "partial": 25, "blank": 15, "crash_early": 12, "hostile": 7, "malformed": 6}


def build_class(n: int, folder: Path, samples: Path) -> dict[str, str]:
    """``n`` submissions ``folder/s001/a1.ipynb`` ... in the proportions of ``MIX``; id -> sample."""
    shutil.rmtree(folder, ignore_errors=True)
    total = sum(MIX.values())
    kinds = []
    for kind, share in MIX.items():
        kinds += [kind] * round(n * share / total)
    kinds = (kinds + ["full"] * n)[:n]
    # interleave the kinds (a class arrives mixed, not sorted by outcome)
    kinds = [kinds[(i * 37) % n] for i in range(n)] if n % 37 else kinds
    who = {}
    for i, kind in enumerate(kinds, 1):
        student = f"s{i:03d}"
        (folder / student).mkdir(parents=True)
        shutil.copyfile(samples / kind / f"{A1}.ipynb", folder / student / f"{A1}.ipynb")
        who[student] = kind
    return who


def _env(code: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if code is not None:  # the old tree's autograder and its attnkit, before the editable install
        env["PYTHONPATH"] = f"{code}{os.pathsep}{code / 'lib'}"
    return env


def start_grading(code: Path | None, subs: Path, out: Path, *extra: str) -> dict:
    """Start ``attnkit grade`` with the code at ``code`` (None: this checkout)."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "autograder.cli", "grade", A1, str(subs), "--out", str(out), *extra]
    log = open(out.parent / f"{out.name}.log", "w")
    return {"proc": subprocess.Popen(cmd, env=_env(code), cwd=str(code or ROOT), stdout=log,
                                     stderr=subprocess.STDOUT, text=True),
            "log": log, "subs": subs, "load_before": os.getloadavg(), "start": time.perf_counter()}


def finish_grading(run: dict) -> dict:
    """Wait for a run of ``start_grading``; its wall time, rate and the load around it."""
    while run["proc"].poll() is None:  # poll: the end time of each of several concurrent runs
        time.sleep(0.2)
    code = run["proc"].returncode
    wall = run.get("end", time.perf_counter()) - run["start"]
    run["log"].close()
    if code != 0:
        text = Path(run["log"].name).read_text()
        raise RuntimeError(f"grading failed ({code}):\n{text[-3000:]}")
    n = sum(1 for p in run["subs"].iterdir() if p.is_dir())
    return {"wall_s": round(wall, 1), "submissions": n, "per_min": round(60 * n / wall, 1),
            "s_per_sub": round(wall / n, 2), "load_before": [round(x, 2) for x in run["load_before"]],
            "load_after": [round(x, 2) for x in os.getloadavg()]}


def grade(code: Path | None, subs: Path, out: Path, *extra: str) -> dict:
    return finish_grading(start_grading(code, subs, out, *extra))


def scores(out: Path) -> tuple[dict, dict]:
    """(student -> total score, (student, grade id) -> cell score) of a grading run."""
    with open(out / "grades.csv") as f:
        totals = {r["student_id"]: float(r["score"]) for r in csv.DictReader(f)}
    with open(out / "cell_scores.csv") as f:
        cells = {(r["student"], r["grade_id"]): r["score"] for r in csv.DictReader(f)}
    return totals, cells


def compare(old: Path, new: Path) -> list[str]:
    """Every difference in total or per-cell score between two runs ([] when identical)."""
    (t_old, c_old), (t_new, c_new) = scores(old), scores(new)
    diffs = [f"{s}: total {t_old.get(s)} -> {t_new.get(s)}" for s in sorted(set(t_old) | set(t_new))
             if t_old.get(s) != t_new.get(s)]
    diffs += [f"{k}: {c_old.get(k)} -> {c_new.get(k)}" for k in sorted(set(c_old) | set(c_new))
              if c_old.get(k) != c_new.get(k)]
    return diffs


# ---------------------------------------------------------------- the per-phase probe

PROBE_PHASES = ("staging", "kernel_start", "install", "cells", "shutdown", "executor_other",
                "nbgrader", "feedback", "commit")


def _probe(subs: Path, out: Path, result: Path) -> None:
    """Grade ``subs`` with workers=1 in this process, timing the phases (see the docstring)."""
    import functools

    from nbclient import NotebookClient
    from nbgrader.apps import NbGraderAPI

    from autograder import dispatch, execute
    from autograder.pipeline import grade as run_grade

    spent: dict[str, float] = {}

    def timed(owner, name, phase):
        original = getattr(owner, name)
        pick = phase if callable(phase) else (lambda *a, **k: phase)

        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                key = pick(*args, **kwargs)
                spent[key] = spent.get(key, 0.0) + time.perf_counter() - start
        setattr(owner, name, wrapper)

    def cell_phase(self, cell, *args, **kwargs):
        return "install" if cell.get("metadata", {}).get("attnkit_guard") == "install" else "cells"

    timed(dispatch, "grade_submission", "job")
    timed(NbGraderAPI, "autograde", "autograde")
    timed(NbGraderAPI, "generate_feedback", "feedback")
    timed(execute.ResilientExecute, "preprocess", "execute")
    timed(execute.ResilientExecute, "preprocess_cell", cell_phase)
    for name in ("start_new_kernel", "start_new_kernel_client"):
        timed(NotebookClient, name, "kernel_start")
    timed(NotebookClient, "_cleanup_kernel", "shutdown")
    try:
        from autograder import pool
        timed(pool.KernelPool, "take", "kernel_start")
        timed(pool.Lease, "load", "kernel_start")
        timed(pool.Lease, "release", "shutdown")
    except ImportError:  # the old code has no pool
        pass
    timed(dispatch, "commit", "commit")
    begin = time.perf_counter()
    run = run_grade(A1, subs, out, workers=1, echo=lambda line: None)
    wall = time.perf_counter() - begin
    n = len(run.results)
    inner = sum(spent.get(k, 0.0) for k in ("kernel_start", "install", "cells", "shutdown"))
    phases = {
        "staging": spent.get("job", 0) - spent.get("autograde", 0) - spent.get("feedback", 0),
        "kernel_start": spent.get("kernel_start", 0), "install": spent.get("install", 0),
        "cells": spent.get("cells", 0), "shutdown": spent.get("shutdown", 0),
        "executor_other": spent.get("execute", 0) - inner,
        "nbgrader": spent.get("autograde", 0) - spent.get("execute", 0),
        "feedback": spent.get("feedback", 0), "commit": spent.get("commit", 0)}
    result.write_text(json.dumps({"submissions": n, "wall_s": round(wall, 2),
                                  "per_submission": {k: round(v / n, 3) for k, v in phases.items()},
                                  "job_per_submission": round(spent.get("job", 0) / n, 3)}))


def start_phases(code: Path | None, subs: Path, out: Path):
    result = out.parent / (out.name + ".json")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--probe-run", str(subs), str(out), str(result)]
    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.Popen(cmd, env=_env(code), cwd=str(code or ROOT), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    return proc, result


def finish_phases(started) -> dict:
    proc, result = started
    text, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"probe failed:\n{text[-3000:]}")
    data = json.loads(result.read_text())
    data["load_after"] = [round(x, 2) for x in os.getloadavg()]
    return data


# ---------------------------------------------------------------- main

def old_tree(path: Path, rev: str) -> Path:
    """A worktree of ``rev`` at ``path`` (made when missing; reused when at ``rev``)."""
    want = subprocess.run(["git", "-C", str(ROOT), "rev-parse", rev], capture_output=True,
                          text=True, check=True).stdout.strip()
    if path.exists():
        have = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
        if have == want:
            return path
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], check=True)
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), want], check=True,
                   capture_output=True)
    return path


def machine() -> dict:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "cpu": next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                         if line.startswith("model name")), platform.processor()),
            "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200, help="submissions in the class")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--old-rev", default="HEAD", help="the commit to compare with")
    ap.add_argument("--old-tree", type=Path, default=Path("/tmp/attnkit-old"))
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "class_bench")
    ap.add_argument("--order", default="old,new", help="order of the A/B runs")
    ap.add_argument("--tree", action="append", default=[], metavar="NAME=PATH",
                    help="another code tree to compare with the old one (e.g. the new code "
                         "alone on top of the old commit); name it in --order")
    ap.add_argument("--skip-ab", action="store_true", help="no A/B run")
    ap.add_argument("--concurrent", action="store_true",
                    help="run the A/B's codes at the same time (on a machine others load: both "
                         "see the same load; the faster one then leaves the slower one alone, "
                         "so the speedup measured this way is on the low side)")
    ap.add_argument("--rates", action="store_true", help="new code: workers 1, 2 and Dask")
    ap.add_argument("--phases", type=int, default=0, help="per-phase table on this many submissions")
    ap.add_argument("--probe-run", nargs=3, type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.probe_run:
        _probe(*args.probe_run)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "results.json"

    def record(entry: dict) -> None:
        entry = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), **entry}
        print(json.dumps(entry), flush=True)
        with open(log, "a") as f:
            f.write(json.dumps(entry) + "\n")

    record({"machine": machine(), "mix": MIX})
    need_old = not args.skip_ab or args.phases
    old = old_tree(args.old_tree, args.old_rev) if need_old else None
    trees = {"old": old, "new": None, **{k: Path(v) for k, v in (t.split("=", 1) for t in args.tree)}}
    samples = (old or ROOT) / "autograder" / "samples" / A1  # the same notebooks for both codes
    if args.phases:
        subs = args.out / "phase_subs"
        build_class(args.phases, subs, samples)
        names = args.order.split(",")
        started = {}
        for name in names:  # one after the other, or all at once with --concurrent
            started[name] = start_phases(trees[name], subs, args.out / f"phases_{name}")
            if not args.concurrent:
                record({"phases": name, "tree": str(trees[name] or ROOT), **finish_phases(started.pop(name))})
        for name in started:
            record({"phases": name, "concurrent": True, "tree": str(trees[name] or ROOT),
                    **finish_phases(started[name])})
    if not args.skip_ab:
        subs = args.out / "subs"
        build_class(args.n, subs, samples)
        runs, names = {}, args.order.split(",")
        if args.concurrent:  # side by side at the same moment: the same load from outside
            started = {n: start_grading(trees[n], subs, args.out / n, "--workers", str(args.workers))
                       for n in names}
            while any(r["proc"].poll() is None for r in started.values()):
                for r in started.values():
                    if r["proc"].poll() is not None and "end" not in r:
                        r["end"] = time.perf_counter()
                time.sleep(0.2)
            for name in names:
                runs[name] = finish_grading(started[name])
                record({"ab": name, "concurrent": True, "tree": str(trees[name] or ROOT),
                        "workers": args.workers, **runs[name]})
        for name in names if not args.concurrent else ():
            code = trees[name]
            runs[name] = grade(code, subs, args.out / name, "--workers", str(args.workers))
            record({"ab": name, "tree": str(code or ROOT), "workers": args.workers, **runs[name]})
        for name in runs:
            if name != "old":
                diffs = compare(args.out / "old", args.out / name)
                record({"ab": f"old vs {name}", "old_rev": args.old_rev,
                        "speedup": round(runs["old"]["wall_s"] / runs[name]["wall_s"], 2),
                        "identical_grades": not diffs, "differences": diffs[:20]})
    if args.rates:
        subs = args.out / "rate_subs"
        build_class(args.n, subs, samples)
        for workers in (1, 2):
            record({"rate": f"workers={workers}", **grade(None, subs, args.out / f"rate_w{workers}",
                                                          "--workers", str(workers))})
        from distributed import LocalCluster

        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=None) as cluster:
            record({"rate": "dask, 2 local workers",
                    **grade(None, subs, args.out / "rate_dask", "--scheduler", cluster.scheduler_address)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
