"""The ``attnkit`` command: build notebooks, release assignments, autograde, demo, book.

    attnkit build                         course/NN_*.py -> course/NN_*.ipynb
    attnkit release [ASSIGNMENT ...]      solutions/<a>/<a>.py -> assignments/<a>/<a>.ipynb
    attnkit grade ASSIGNMENT SUBMISSIONS --out DIR [--db URL] [--timeout S] [--force]
                                          [--workers N | --scheduler ADDRESS] [--show-hidden]
                                          [--unsafe] [--memory GIB] [--cpu-time S]
                                          [--notebook-timeout S] [--gpu]
                                          [--due DATE] [--late-penalty none|zero|P%/day]
                                          [--roster CSV] [--lms-title T] [--lms-assignment-id ID]
                                          [--lms-timezone ZONE]
    attnkit demo [--out build/demo] [--gpu]  release all, grade autograder/samples/*, one report;
                                          then the Canvas sample round trip (build/demo/canvas)
    attnkit manual --run DIR export-template [--to FILE] [--all]   written answers to grade by hand
    attnkit manual --run DIR import FILE  enter manual scores (CSV), then re-export the grades
    attnkit manual --run DIR export       re-export grades.csv and the report (after formgrader)
    attnkit gpu-check [--out build/gpu-check]  CUDA tests, GPU benchmark, grading with --gpu
    attnkit hub start|write|release|collect|feedback   JupyterHub with the nbgrader exchange
                                          (build/hub; docs/hub.md)
    attnkit samples [ASSIGNMENT ...]      rewrite the sample submissions from their recipes
    attnkit book [--out build/book]       execute the course notebooks, render them to HTML
    attnkit capstone [--quick] [--out build/capstone] [--variants a,b] [--tasks x,y] [--seeds 0 1]
                                          every variant trained on the long-range tasks (chapter 10)

The library's own commands (``attnkit bench``) are defined in ``attnkit.cli`` and added to the
same parser, so there is one ``attnkit --help``. Each command imports the parts of the pipeline
it needs when it runs, so ``attnkit bench`` and ``--help`` do not load nbgrader.

``attnkit grade`` prints one line per student while it works and a grade table at the end;
nbgrader's own log goes to ``DIR/grading.log``. Re-running it on the same ``DIR`` re-grades only
submissions whose notebook changed (``--force``: all). ``--workers N`` grades N students at once
(``--jobs`` is an old name for it); ``--scheduler ADDRESS`` runs the same per-student jobs on a
Dask cluster (``autograder/dispatch.py``). A progress bar with the count of graded / failed /
flagged students shows on a terminal; piped output gets one plain line per student instead.
Student code runs in a bubblewrap sandbox (``autograder/sandbox.py``: no network, no view of
the solutions or the gradebook, ``--memory`` / ``--cpu-time`` / ``--notebook-timeout`` limits);
where it cannot start, grading refuses unless ``--unsafe`` is given. ``--gpu`` binds the GPU
devices into the sandbox (``c.SandboxKernelManager.gpu`` in the course's nbgrader config).

``attnkit manual`` grades the written answers by hand (``autograder/manual.py``): a CSV of those
still pending, entering a filled-in CSV into the gradebook in one transaction, re-exporting the
grades after formgrader. ``attnkit demo`` enters ``autograder/samples/<a>/manual_grades.csv``
the same way where there is one.

``attnkit gpu-check`` (``autograder/gpu_check.py``) needs only torch: it runs on a bare GPU
machine with ``PYTHONPATH=lib:.`` and exits 3 where there is no CUDA GPU.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from attnkit import cli as library

from .limits import CELLS_PER_NOTEBOOK, DEFAULT_LIMITS, GiB

USAGE = __doc__.split("\n\n")[1]
MANUAL_GRADES = "manual_grades.csv"  # autograder/samples/<a>/: entered by `attnkit demo`


def cmd_build(args) -> int:
    from .notebooks import build_course

    for path in build_course():
        print(f"wrote {path}")
    return 0


def cmd_release(args) -> int:
    from .notebooks import assignment_names
    from .release import release

    names = args.assignments or assignment_names()
    if not names:
        print("no assignments found in solutions/")
    for name in names:
        print(f"released {release(name)}")
    return 0


def cmd_grade(args) -> int:
    from .pipeline import grade
    from .progress import Progress
    from .report import format_table

    out = Path(args.out or f"build/grade/{args.assignment}")
    print(f"grading {args.assignment} from {args.submissions} into {out} "
          f"(nbgrader log: {out / 'grading.log'})")
    run = grade(args.assignment, Path(args.submissions), out, source=args.source,
                db_url=args.db, timeout=args.timeout, force=args.force, workers=args.workers,
                scheduler=args.scheduler, show_hidden=args.show_hidden, progress=Progress(),
                unsafe=args.unsafe, limits=limit_overrides(args), gpu=args.gpu,
                due=args.due, late_penalty=args.late_penalty, roster=args.roster,
                lms_title=args.lms_title, lms_assignment_id=args.lms_assignment_id,
                lms_timezone=args.lms_timezone)
    print()
    print(format_table(run))
    print(f"\nwrote {out}/grades.csv, cell_scores.csv, feedback/, report.html ({run.seconds:.1f} s)")
    for path in run.lms_files:
        print(f"wrote {path} (for the LMS)")
    if any(c.pending for c in run.cells):
        print(f"written answers to grade by hand: formgrader in {out / 'course'}, or "
              f"`attnkit manual --run {out} export-template` (README: Grading written answers)")
    return 0


def cmd_demo(args) -> int:
    from .gradebook import GRADE_COLUMNS, read_csv, write_csv
    from .manual import import_scores
    from .notebooks import assignment_names
    from .pipeline import grade
    from .progress import Progress
    from .release import release
    from .report import format_table, write_index
    from .samples import CANVAS, SAMPLES_DIR

    out = Path(args.out).resolve()
    runs, rows = [], []
    for name in assignment_names():
        print(f"released {release(name)}")
        samples = Path(args.samples or SAMPLES_DIR) / name
        if not samples.is_dir():
            print(f"  no sample submissions for {name} (looked in {samples})")
            continue
        print(f"grading the samples of {name}")
        run = grade(name, samples, out / name, timeout=args.timeout, force=args.force,
                    workers=args.workers, show_hidden=args.show_hidden, progress=Progress(),
                    unsafe=args.unsafe, limits=limit_overrides(args), gpu=args.gpu)
        if (samples / MANUAL_GRADES).exists():  # a TA's scores for the written answers
            run = import_scores(run.out, samples / MANUAL_GRADES, echo=print, run=run)
        print(format_table(run) + "\n")
        runs.append(run)
        rows += read_csv(run.out / "grades.csv")
    if not runs:
        print("nothing to grade")
        return 1
    write_csv(out / "grades.csv", GRADE_COLUMNS, rows)
    print(f"wrote {out / 'grades.csv'} and {write_index(out, runs)}")
    if CANVAS["zip"].exists() and not args.samples:
        _demo_canvas(out / "canvas", args)
    return 0


def _demo_canvas(out: Path, args) -> None:
    """The LMS round trip: a Canvas download of a1 (late work, resubmissions, a stray file) with
    its roster (one student submitted nothing), graded into the Canvas import CSV."""
    from .pipeline import grade
    from .progress import Progress
    from .report import format_table
    from .samples import CANVAS

    print(f"\ngrading the Canvas download {CANVAS['zip'].name} with its roster "
          f"(due {CANVAS['due']}, late penalty {CANVAS['late_penalty']})")
    run = grade(CANVAS["assignment"], CANVAS["zip"], out, roster=CANVAS["roster"],
                due=CANVAS["due"], late_penalty=CANVAS["late_penalty"], lms_title=CANVAS["title"],
                lms_assignment_id=CANVAS["assignment_id"], timeout=args.timeout, force=args.force,
                workers=args.workers, progress=Progress(), unsafe=args.unsafe,
                limits=limit_overrides(args), gpu=args.gpu)
    print(format_table(run))
    for path in run.lms_files:
        print(f"wrote {path} (for Canvas)")


def cmd_manual(args) -> int:
    from .manual import import_scores, write_template
    from .pipeline import export
    from .report import format_table

    if args.action == "export-template":
        path, n = write_template(Path(args.run), args.to and Path(args.to), everything=args.all)
        print(f"wrote {path}: {n} written answer{'s' if n != 1 else ''} "
              f"{'in all' if args.all else 'to grade by hand'} (fill in score and comment, then "
              f"`attnkit manual --run {args.run} import {path}`)")
        return 0
    if args.action == "import":
        if not args.file:
            print("attnkit manual import: name the CSV of manual grades", file=sys.stderr)
            return 2
        run = import_scores(Path(args.run), Path(args.file), echo=print)
    else:
        run = export(Path(args.run))
    print(format_table(run))
    print(f"\nwrote {run.out}/grades.csv, cell_scores.csv, report.html")
    return 0


def cmd_gpu_check(args) -> int:
    from .gpu_check import gpu_check

    return gpu_check(out=Path(args.out), ns=args.n, variants=args.variants, skip=args.skip or (),
                     wheels=args.wheels and Path(args.wheels), grade_unsafe=args.grade_unsafe, budget=args.budget)


def cmd_samples(args) -> int:
    from .samples import write_samples

    for path in write_samples(args.assignments or None):
        print(f"wrote {path}")
    return 0


def cmd_book(args) -> int:
    from .book import build_book

    return 1 if build_book(Path(args.out), timeout=args.timeout) else 0


def cmd_hub(args) -> int:
    from .hub import run

    return run(args)


def cmd_capstone(args) -> int:
    from attnkit.capstone import command

    return command(args)


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _workers_options(p: argparse.ArgumentParser) -> None:
    """``--workers N`` and its hidden old name ``--jobs N``."""
    p.add_argument("--workers", type=_workers, default=1, metavar="N",
                   help="students graded at once, each in its own process (default 1)")
    p.add_argument("--jobs", dest="workers", type=_workers, help=argparse.SUPPRESS)


def _sandbox_options(p: argparse.ArgumentParser) -> None:
    """``--unsafe`` and the limits of the grading sandbox (``limits.Limits``)."""
    p.add_argument("--unsafe", action="store_true",
                   help="run student code WITHOUT the sandbox (only for trusted notebooks)")
    p.add_argument("--memory", type=float, metavar="GIB",
                   help=f"address-space limit per kernel in GiB "
                        f"(default {DEFAULT_LIMITS.memory / GiB:g})")
    p.add_argument("--cpu-time", type=int, metavar="S",
                   help="CPU seconds per kernel (default: twice the notebook limit)")
    p.add_argument("--notebook-timeout", type=int, metavar="S",
                   help="wall-clock seconds per notebook, restarts included "
                        f"(default: {CELLS_PER_NOTEBOOK} cells' worth, at least "
                        f"{DEFAULT_LIMITS.notebook_timeout})")
    p.add_argument("--gpu", action="store_true",
                   help="bind the GPU devices (/dev/nvidia*) into the sandbox; lifts the address-space "
                        "limit unless --memory is given (CUDA reserves far more than it uses)")


def limit_overrides(args) -> dict:
    """The limit flags given, as ``limits.Limits`` fields overriding the assignment's limits.

    With ``--gpu`` and no ``--memory`` the address space is not limited (``memory=None``): CUDA
    maps tens of GiB of virtual memory at initialisation and fails under a 4 GiB RLIMIT_AS.
    """
    given = {"memory": None if args.memory is None else int(args.memory * GiB),
             "cpu_time": args.cpu_time, "notebook_timeout": args.notebook_timeout}
    overrides = {k: v for k, v in given.items() if v is not None}
    if getattr(args, "gpu", False) and args.memory is None:
        overrides["memory"] = None
    return overrides


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="attnkit", epilog=USAGE + "\n" + library.USAGE,
                                description="Build, release and autograde the attnkit course.",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("build", help="rebuild course/NN_*.ipynb from course/NN_*.py").set_defaults(fn=cmd_build)

    r = sub.add_parser("release", help="write assignments/<a>/<a>.ipynb with nbgrader")
    r.add_argument("assignments", nargs="*", help="default: every assignment in solutions/")
    r.set_defaults(fn=cmd_release)

    g = sub.add_parser("grade", help="autograde a folder or zip of submissions")
    g.add_argument("assignment")
    g.add_argument("submissions", help="folder with one sub-folder (or notebook) per student, or a .zip")
    g.add_argument("--out", help="output folder (default build/grade/ASSIGNMENT)")
    g.add_argument("--db", help="gradebook SQLAlchemy URL (default sqlite:///OUT/gradebook.db)")
    g.add_argument("--timeout", type=int, help="seconds per cell (default: autograder/assignments.py)")
    g.add_argument("--source", help="source notebook (py:percent) instead of solutions/<a>/<a>.py")
    g.add_argument("--force", action="store_true", help="re-grade unchanged submissions too")
    _workers_options(g)
    _sandbox_options(g)
    g.add_argument("--scheduler", metavar="ADDRESS",
                   help="grade on this Dask cluster (e.g. tcp://host:8786) instead of locally")
    g.add_argument("--show-hidden", action="store_true",
                   help="keep the hidden tests in the students' feedback (default: redacted)")
    g.add_argument("--due", metavar="DATE",
                   help="due date, e.g. '2026-12-01 17:00 Europe/Paris' (no zone: UTC); default: "
                        "the one in the gradebook (nbgrader db assignment add A --duedate=...)")
    g.add_argument("--late-penalty", metavar="RULE", default="none",
                   help="what a late submission loses: none (default), zero, or P%%/day "
                        "(P percent of the score per day or part of a day late)")
    g.add_argument("--roster", metavar="CSV",
                   help="the class list (LMS id, name, email; a Canvas gradebook export works): "
                        "names in the grades, and a 'missing' row with 0 for each student who "
                        "submitted nothing")
    g.add_argument("--lms-title", metavar="TEXT",
                   help="Canvas: the gradebook column to fill (default: the assignment name)")
    g.add_argument("--lms-assignment-id", metavar="ID", help="Canvas: that column's assignment id")
    g.add_argument("--lms-timezone", metavar="ZONE",
                   help="the zone of the roster's submission times (Moodle's worksheet writes them in "
                        "the downloader's zone, e.g. Europe/Paris; default UTC)")
    g.set_defaults(fn=cmd_grade)

    d = sub.add_parser("demo", help="release everything and grade the sample submissions")
    d.add_argument("--out", default="build/demo")
    d.add_argument("--samples", help="folder of <assignment>/<student>/ (default autograder/samples)")
    d.add_argument("--timeout", type=int, help="seconds per cell (default: per assignment)")
    d.add_argument("--force", action="store_true", help="re-grade unchanged submissions too")
    _workers_options(d)
    _sandbox_options(d)
    d.add_argument("--show-hidden", action="store_true", help="keep hidden tests in the feedback")
    d.set_defaults(fn=cmd_demo)

    s = sub.add_parser("samples", help="rewrite autograder/samples/ from their recipes")
    s.add_argument("assignments", nargs="*", help="default: every assignment with recipes")
    s.set_defaults(fn=cmd_samples)

    b = sub.add_parser("book", help="execute the course notebooks and render HTML")
    b.add_argument("--out", default="build/book")
    b.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    b.set_defaults(fn=cmd_book)

    m = sub.add_parser("manual", help="grade written answers by hand: CSV template, import, re-export")
    m.add_argument("--run", required=True, metavar="DIR",
                   help="the output folder of an `attnkit grade` run (or build/demo/ASSIGNMENT)")
    m.add_argument("action", choices=["export-template", "import", "export"],
                   help="export-template: CSV of the answers still to grade; import FILE: enter "
                        "its scores and re-export; export: re-export after grading in formgrader")
    m.add_argument("file", nargs="?", help="import: the CSV (student, grade_id, score[, comment, "
                                          "assignment, notebook])")
    m.add_argument("--to", metavar="FILE", help="export-template: where to write "
                                                "(default DIR/manual_grades_todo.csv)")
    m.add_argument("--all", action="store_true",
                   help="export-template: every written answer, with its current score")
    m.set_defaults(fn=cmd_manual)

    gc = sub.add_parser("gpu-check", help="on a GPU machine: CUDA tests, GPU benchmark, grading with --gpu")
    gc.add_argument("--out", default="build/gpu-check")
    gc.add_argument("--n", type=int, nargs="+", help="sequence lengths (default 4096 16384 65536)")
    gc.add_argument("--variants", nargs="+", help="benchmark cases (default: all; sdpa always runs)")
    gc.add_argument("--skip", nargs="+", choices=["tests", "bench", "grade"], help="steps to leave out")
    gc.add_argument("--wheels", metavar="DIR",
                    help="wheelhouse to install missing optional packages from with pip --no-index "
                         "(default build/wheels, used when it exists)")
    gc.add_argument("--grade-unsafe", action="store_true",
                    help="grade the kit's own samples without the sandbox where bubblewrap is missing")
    gc.add_argument("--budget", type=float, default=450,
                    help="seconds for the tests and the benchmark; later cases are skipped (default 450)")
    gc.set_defaults(fn=cmd_gpu_check)

    from .hub import add_arguments as hub_arguments  # light: JupyterHub loads only for spawners

    hb = sub.add_parser("hub", help="JupyterHub with nbgrader's exchange: start, write, release, "
                                    "collect, feedback (docs/hub.md)")
    hub_arguments(hb)
    hb.set_defaults(fn=cmd_hub)

    from attnkit.capstone import add_arguments as capstone_arguments  # argparse only; runs nothing

    cs = sub.add_parser("capstone", help="train every variant on the long-range tasks: build/capstone/")
    capstone_arguments(cs)
    cs.set_defaults(fn=cmd_capstone)

    library.add_commands(sub)
    return p


def _expected_errors() -> library.Errors:
    """Errors reported as one line (anything else keeps its traceback: it is a bug)."""
    try:
        from .late import LateError
        from .lms import RosterError
        from .manual import ManualGradeError
        from .release import PipelineError
    except ImportError:  # a bare GPU machine without nbgrader: gpu-check still reports its errors
        return (FileNotFoundError,)
    return FileNotFoundError, PipelineError, ManualGradeError, LateError, RosterError


def main(argv: list[str] | None = None) -> int:
    return library.run(parser().parse_args(argv), expected=_expected_errors)


if __name__ == "__main__":
    sys.exit(main())
