"""The ``attnkit`` command: build notebooks, release assignments, autograde, demo, book.

    attnkit build                         course/NN_*.py -> course/NN_*.ipynb
    attnkit release [ASSIGNMENT ...]      solutions/<a>/<a>.py -> assignments/<a>/<a>.ipynb
    attnkit grade ASSIGNMENT SUBMISSIONS --out DIR [--db URL] [--timeout S] [--force]
                                          [--workers N | --scheduler ADDRESS] [--show-hidden]
                                          [--unsafe] [--memory GIB] [--cpu-time S]
                                          [--notebook-timeout S]
    attnkit demo [--out build/demo]       release all, grade autograder/samples/*, one report
    attnkit samples [ASSIGNMENT ...]      rewrite the sample submissions from their recipes
    attnkit book [--out build/book]       execute the course notebooks, render them to HTML
    attnkit bench [--device D] [--n N ...] [--out build/bench]  every variant vs dense: time, memory

The grading pipeline lives in the ``autograder`` package (imported only when a command needs
it, so ``import attnkit`` stays light). ``attnkit grade`` prints one line per student while it
works and a grade table at the end; nbgrader's own log goes to ``DIR/grading.log``. Re-running
it on the same ``DIR`` re-grades only submissions whose notebook changed (``--force``: all).
``--workers N`` grades N students at once (``--jobs`` is an old name for it); ``--scheduler
ADDRESS`` runs the same per-student jobs on a Dask cluster (``autograder/dispatch.py``). A
progress bar with the count of graded / failed / flagged students shows on a terminal; piped
output gets one plain line per student instead.
Student code runs in a bubblewrap sandbox (``autograder/sandbox.py``: no network, no view of
the solutions or the gradebook, ``--memory`` / ``--cpu-time`` / ``--notebook-timeout`` limits);
where it cannot start, grading refuses unless ``--unsafe`` is given.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def cmd_build(args) -> int:
    from autograder.notebooks import build_course

    for path in build_course():
        print(f"wrote {path}")
    return 0


def cmd_release(args) -> int:
    from autograder.notebooks import assignment_names
    from autograder.pipeline import release

    names = args.assignments or assignment_names()
    if not names:
        print("no assignments found in solutions/")
    for name in names:
        print(f"released {release(name)}")
    return 0


def cmd_grade(args) -> int:
    from autograder.dispatch import Progress
    from autograder.pipeline import grade
    from autograder.report import format_table

    out = Path(args.out or f"build/grade/{args.assignment}")
    print(f"grading {args.assignment} from {args.submissions} into {out} "
          f"(nbgrader log: {out / 'grading.log'})")
    run = grade(args.assignment, Path(args.submissions), out, source=args.source,
                db_url=args.db, timeout=args.timeout, force=args.force, workers=args.workers,
                scheduler=args.scheduler, show_hidden=args.show_hidden, progress=Progress(),
                unsafe=args.unsafe, limits=_limits(args))
    print()
    print(format_table(run))
    print(f"\nwrote {out}/grades.csv, cell_scores.csv, feedback/, report.html ({run.seconds:.1f} s)")
    return 0


def cmd_demo(args) -> int:
    from autograder.dispatch import Progress
    from autograder.gradebook import GRADE_COLUMNS, read_csv, write_csv
    from autograder.notebooks import ROOT, assignment_names
    from autograder.pipeline import grade, release
    from autograder.report import format_table, write_index

    out = Path(args.out).resolve()
    runs, rows = [], []
    for name in assignment_names():
        print(f"released {release(name)}")
        samples = Path(args.samples or ROOT / "autograder" / "samples") / name
        if not samples.is_dir():
            print(f"  no sample submissions for {name} (looked in {samples})")
            continue
        print(f"grading the samples of {name}")
        run = grade(name, samples, out / name, timeout=args.timeout, force=args.force,
                    workers=args.workers, show_hidden=args.show_hidden, progress=Progress(),
                    unsafe=args.unsafe, limits=_limits(args))
        print(format_table(run) + "\n")
        runs.append(run)
        rows += read_csv(run.out / "grades.csv")
    if not runs:
        print("nothing to grade")
        return 1
    write_csv(out / "grades.csv", GRADE_COLUMNS, rows)
    print(f"wrote {out / 'grades.csv'} and {write_index(out, runs)}")
    return 0


def cmd_samples(args) -> int:
    from autograder.samples import write_samples

    for path in write_samples(args.assignments or None):
        print(f"wrote {path}")
    return 0


def _title(nb, default: str) -> str:
    """The first markdown heading of a notebook."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return default


def cmd_book(args) -> int:
    import html

    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    from nbconvert import HTMLExporter

    from autograder.config import stderr_to_log
    from autograder.notebooks import COURSE, course_sources, read_source

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pages, failed = [], []
    for src in course_sources():
        print(f"executing {src.name} ...", flush=True)
        nb = read_source(src)
        client = NotebookClient(nb, timeout=args.timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(COURSE)}})
        try:
            with stderr_to_log(out / "book.log"):
                client.execute()
        except CellExecutionError as exc:
            failed.append(src.name)
            print(f"  {src.name} failed: {str(exc).strip().splitlines()[-1]}")
        body, _ = HTMLExporter().from_notebook_node(nb)
        page = out / f"{src.stem}.html"
        page.write_text(body)
        nbformat.write(nb, str(out / f"{src.stem}.ipynb"))
        pages.append((page, _title(nb, src.stem)))
        print(f"  wrote {page}")
    links = "".join(f"<li><a href='{p.name}'>{html.escape(t)}</a></li>" for p, t in pages)
    (out / "index.html").write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'>"
                                    f"<title>attnkit course</title></head><body><h1>Course</h1>"
                                    f"<ol>{links}</ol></body></html>\n")
    print(f"wrote {out / 'index.html'} ({len(pages)} chapters, {len(failed)} failed)")
    return 1 if failed else 0


def cmd_bench(args) -> int:
    from attnkit import VARIANTS
    from attnkit.bench import bench, format_table

    unknown = [n for n in args.variants or [] if n not in VARIANTS]
    if unknown:
        print(f"attnkit bench: error: unknown variant(s) {unknown}; registered: "
              f"{', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("attnkit bench: error: --device cuda, but torch sees no GPU", file=sys.stderr)
            return 2
    ns = args.n or ([256, 512] if args.quick else [1024, 2048, 4096])
    rounds = args.rounds or (3 if args.quick else 7)
    rows = bench(out=args.out, device=args.device, ns=ns, variants=args.variants, dtype=args.dtype,
                 batch=args.batch, heads=args.heads, dim=args.dim, rounds=rounds,
                 dense_max_n=args.dense_max_n)
    print()
    print(format_table(rows))
    print(f"\nwrote {Path(args.out) / 'bench.csv'} and {Path(args.out) / 'bench.png'}")
    return 0


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
    """``--unsafe`` and the limits of the grading sandbox (``autograder/sandbox.py``)."""
    p.add_argument("--unsafe", action="store_true",
                   help="run student code WITHOUT the sandbox (only for trusted notebooks)")
    p.add_argument("--memory", type=float, metavar="GIB",
                   help="address-space limit per kernel in GiB (default 4)")
    p.add_argument("--cpu-time", type=int, metavar="S",
                   help="CPU seconds per kernel (default: twice the notebook limit)")
    p.add_argument("--notebook-timeout", type=int, metavar="S",
                   help="wall-clock seconds per notebook, restarts included "
                        "(default: 5 cells' worth, at least 900)")


def _limits(args) -> dict:
    """The limit flags given, as overrides of ``sandbox.default_limits``."""
    given = {"memory": None if args.memory is None else int(args.memory * (1 << 30)),
             "cpu_time": args.cpu_time, "notebook_timeout": args.notebook_timeout}
    return {k: v for k, v in given.items() if v is not None}


def parser() -> argparse.ArgumentParser:
    usage = __doc__.split("\n\n")[1]
    p = argparse.ArgumentParser(prog="attnkit", epilog=usage,
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

    bn = sub.add_parser("bench", help="time and memory of every variant against dense attention")
    bn.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    bn.add_argument("--n", type=int, nargs="+", help="sequence lengths (default 1024 2048 4096)")
    bn.add_argument("--variants", nargs="+", help="registered variant names (default: all)")
    bn.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    bn.add_argument("--batch", type=int, default=1, help="B (default 1)")
    bn.add_argument("--heads", type=int, default=4, help="H (default 4)")
    bn.add_argument("--dim", type=int, default=64, help="D, the head dim (default 64)")
    bn.add_argument("--rounds", type=int, help="interleaved timing rounds (default 7)")
    bn.add_argument("--dense-max-n", type=int,
                    help="skip dense attention above this N (default 8192 on CPU, 16384 on CUDA)")
    bn.add_argument("--quick", action="store_true", help="N 256 512 and 3 rounds (for tests)")
    bn.add_argument("--out", default="build/bench")
    bn.set_defaults(fn=cmd_bench)
    return p


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Errors reported as one line (anything else keeps its traceback: it is a bug)."""
    from autograder.pipeline import PipelineError

    return FileNotFoundError, PipelineError


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except _expected_errors() as exc:
        print(f"attnkit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # what was graded is kept: a re-run finishes the rest
        print(f"\nattnkit {args.command}: interrupted; run it again to finish the rest",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
