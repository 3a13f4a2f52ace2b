"""The grading report: a student table, summary statistics and score-distribution plots.

``write_report(run)`` writes, into the run's output folder:

- ``plots/total.png``, ``plots/parts.png`` (mean score per grade cell) and one
  ``plots/<grade_id>.png`` per grade cell (how many students got each score);
- ``report.md`` (links the plots) and ``report.html`` (self-contained: plots embedded).

Failed submissions count as 0 in the total and in the summary statistics; the per-cell plots
show only the submissions nbgrader graded (a failed one has no cell scores). ``write_index``
writes a summary page over several assignments (``attnkit demo``).

Written answers graded by hand (``run.manual``): the tables say, per student, how many still
need a person ("2 pending") and the report lists them under **Needs manual grading**; a pending
answer counts 0 in the total until it is scored (the totals say they are provisional) and is left
out of its cell's mean and plot. Scores entered by hand are in the totals and the cell table.
"""
from __future__ import annotations

import base64
import html
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

_CSS = """body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;
color:#222}table{border-collapse:collapse;margin:1rem 0}th,td{border:1px solid #ccc;
padding:.3rem .6rem;text-align:left}th{background:#f3f3f3}td.num{text-align:right}
tr.failed td{background:#fde8e8}tr.flagged td{background:#fff3cd}.plots{display:flex;flex-wrap:wrap;gap:1rem}
.plots img{width:22rem;border:1px solid #eee}.muted{color:#666}"""


def summary(run) -> dict:
    """Counts and statistics of the totals (failed submissions count as 0)."""
    totals = [r.score for r in run.results]
    top = run.max_score
    pending = [c for c in getattr(run, "cells", []) if c.pending]
    return {
        "pending": len(pending),
        "pending_students": len({c.student for c in pending}),
        "students": len(totals),
        "graded": sum(r.status == "graded" for r in run.results),
        "failed": sum(r.status == "failed" for r in run.results),
        "missing": sum(r.status == "missing" for r in run.results),
        "flagged": sum(bool(getattr(r, "flags", None)) for r in run.results),
        "mean": statistics.fmean(totals) if totals else 0.0,
        "median": statistics.median(totals) if totals else 0.0,
        "full": sum(abs(t - top) < 1e-9 for t in totals) if top else 0,
        "zero": sum(t == 0 for t in totals),
        "max_score": top,
    }


def format_table(run) -> str:
    """The grade table printed by the CLI (a ``by hand`` column when there are written answers)."""
    manual = bool(getattr(run, "manual", None))
    rows = [("student", "score", "max", "status") + (("by hand",) if manual else ()) + ("notes",)]
    rows += [(r.student, f"{r.score:g}", f"{r.max_score:g}", status(r))
             + ((by_hand(run, r.student),) if manual else ()) + (_notes(r),)
             for r in run.results]
    n = len(rows[0]) - 1
    widths = [max(len(row[i]) for row in rows) for i in range(n)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:n], widths)) + "  " + row[n]
             for row in rows]
    s = summary(run)
    missing = f", {s['missing']} missing" if s["missing"] else ""
    lines.append(f"{s['students'] - s['missing']} submissions: {s['graded']} graded, "
                 f"{s['failed']} failed{missing}, {s['flagged']} flagged; "
                 f"mean {s['mean']:.2f}/{s['max_score']:g}, median {s['median']:g}, "
                 f"{s['full']} full marks, {s['zero']} zero")
    if s["pending"]:
        lines.append(_pending_line(s))
    return "\n".join(line.rstrip() for line in lines)


def _pending_line(s: dict) -> str:
    return (f"{s['pending']} written answer{'s' if s['pending'] != 1 else ''} of "
            f"{s['pending_students']} student{'s' if s['pending_students'] != 1 else ''} "
            "need manual grading (counted 0 until scored: the totals are provisional)")


def by_hand(run, student: str) -> str:
    """The state of ``student``'s written answers: ``2 pending``, ``1 to review``, ``done``
    (every one scored) or ``-`` (no graded submission)."""
    cells = [c for c in run.cells if c.student == student and c.grade_id in run.manual]
    if not cells:
        return "-"
    pending = sum(c.pending for c in cells)
    review = sum(c.grading == "review" for c in cells)
    words = [f"{pending} pending"] * bool(pending) + [f"{review} to review"] * bool(review)
    return ", ".join(words) or "done"


def status(r) -> str:
    """``graded`` / ``failed``, with ``+flagged`` when the grader found tampering to look at."""
    return r.status + ("+flagged" if getattr(r, "flags", None) else "")


def _notes(r) -> str:
    flags = getattr(r, "flags", None) or []
    return "; ".join(filter(None, [r.notes] + [f"FLAGGED: {f}" for f in flags]))


def _bars(ax, values: list[float], top: float, failed: int = 0) -> None:
    """Students per score: one bar per score value (0..top) or ten bins for a large range."""
    if top <= 20 and all(float(v).is_integer() for v in values):
        xs = list(range(int(top) + 1))
        counts = [sum(v == x for v in values) for x in xs]
        ax.bar(xs, counts, width=0.8, color="#4c78a8", label="graded")
        if failed:
            ax.bar([0], [failed], bottom=[counts[0]], width=0.8, color="#e45756", label="failed")
            ax.legend(frameon=False, fontsize=8)
        ax.set_xticks(xs)
    else:
        ax.hist(values + [0.0] * failed, bins=10, range=(0, top or 1), color="#4c78a8")
    ax.set_xlabel("score")
    ax.set_ylabel("students")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.spines[["top", "right"]].set_visible(False)


def _points(n: float) -> str:
    return f"{n:g} point" + ("" if n == 1 else "s")


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path


def make_plots(run) -> list[tuple[str, Path]]:
    """Write the plots; return (caption, path) pairs in display order."""
    folder = run.out / "plots"
    plots = []
    fig, ax = plt.subplots(figsize=(4.4, 2.8))
    graded = [r.score for r in run.results if r.status == "graded"]
    _bars(ax, graded, run.max_score, failed=len(run.results) - len(graded))
    ax.set_title(f"total ({_points(run.max_score)})", fontsize=10)
    plots.append(("Total score (failed submissions count as 0)", _save(fig, folder / "total.png")))
    if run.parts:
        fig, ax = plt.subplots(figsize=(5.2, 1.0 + 0.3 * len(run.parts)))
        means = []
        for gid, points in run.parts:
            got = [c.score or 0.0 for c in run.cells if c.grade_id == gid and not c.pending]
            means.append(100 * statistics.fmean(got) / points if got and points else 0.0)
        names = [gid for gid, _ in run.parts]
        ax.barh(names[::-1], means[::-1], color="#72b7b2")
        ax.set_xlim(0, 100)
        ax.set_xlabel("mean score, % of points")
        ax.spines[["top", "right"]].set_visible(False)
        plots.append(("Mean score per grade cell (graded submissions)",
                      _save(fig, folder / "parts.png")))
    for gid, points in run.parts:
        fig, ax = plt.subplots(figsize=(4.4, 2.8))
        _bars(ax, [c.score or 0.0 for c in run.cells if c.grade_id == gid and not c.pending], points)
        ax.set_title(f"{gid} ({_points(points)})", fontsize=10)
        plots.append((f"Grade cell {gid}", _save(fig, folder / f"{gid}.png")))
    return plots


def _summary_lines(run) -> list[str]:
    s = summary(run)
    kept = sum(r.cached for r in run.results)
    missing = (f"; {s['missing']} on the roster submitted nothing: score 0, status missing"
               if s["missing"] else "")
    lines = [f"Submissions: {s['students'] - s['missing']} ({s['graded']} graded, {s['failed']} "
             f"failed: score 0; {s['flagged']} flagged for review{missing})",
             f"Mean {s['mean']:.2f} / {s['max_score']:g}, median {s['median']:g}",
             f"Full marks: {s['full']}, zero: {s['zero']}"]
    manual = getattr(run, "manual", None)
    if manual:
        cells = [c for c in run.cells if c.grade_id in manual]
        scored = sum(c.grading in ("manual", "review") for c in cells)
        review = sum(c.grading == "review" for c in cells)
        lines.append(f"Written answers graded by hand ({', '.join(manual)}): {scored} scored by a "
                     f"person ({review} to review after a re-grade), {s['pending']} still need "
                     "manual grading" + (" (they count 0 until scored: the totals are provisional)"
                                         if s["pending"] else ""))
    if getattr(run, "exported_only", False):
        lines.append("This report: rebuilt from the gradebook after manual grading "
                     "(no notebook graded again)")
    else:
        lines.append(f"This run: {run.seconds:.1f} s ({len(run.results) - kept - s['missing']} graded now, "
                     f"{kept} unchanged and kept from an earlier run)")
    files = getattr(run, "lms_files", None)
    if files:
        lines.append("For the LMS (scores after the late penalty): "
                     + ", ".join(str(p.relative_to(run.out)) for p in files))
    lines += getattr(run, "lms_notes", None) or []
    return lines


def pending_by_student(run) -> dict[str, list[str]]:
    """Student -> the grade ids of their answers that still need a person."""
    todo: dict[str, list[str]] = {}
    for c in run.cells:
        if c.pending:
            todo.setdefault(c.student, []).append(c.grade_id)
    return todo


_PENDING_HELP = ("Score them in nbgrader's formgrader on this run's course folder, or fill in "
                 "the CSV of `attnkit manual --run DIR export-template` and load it with "
                 "`attnkit manual --run DIR import FILE`; both rebuild this report.")


def part_rows(run) -> list[tuple[str, str, str, str, str]]:
    """Per grade cell: id, how it is graded, points, mean, how many full marks, how many zero
    (graded submissions, pending answers left out), how many still need a person."""
    rows = []
    manual = set(getattr(run, "manual", None) or ())
    for gid, points in run.parts:
        cells = [c for c in run.cells if c.grade_id == gid]
        got = [c.score or 0.0 for c in cells if not c.pending]
        mean = f"{statistics.fmean(got):.2f}" if got else "-"
        rows.append((gid, "by hand" if gid in manual else "tests", f"{points:g}", mean,
                     str(sum(g == points for g in got)), str(sum(g == 0 for g in got)),
                     str(sum(c.pending for c in cells))))
    return rows


_PART_HEAD = ("grade cell", "graded", "points", "mean", "full marks", "zero", "pending")


def write_markdown(run, plots) -> Path:
    lines = [f"# Grades: {run.assignment}", ""]
    manual = bool(getattr(run, "manual", None))
    lines += [f"- {line}" for line in _summary_lines(run)] + [""]
    lines += (["| student | score | max | status | by hand | notes |",
               "| --- | ---: | ---: | --- | --- | --- |"] if manual else
              ["| student | score | max | status | notes |", "| --- | ---: | ---: | --- | --- |"])
    for r in run.results:
        notes = _notes(r).replace("|", "\\|")
        hand = f" {by_hand(run, r.student)} |" if manual else ""
        lines.append(f"| {r.student} | {r.score:g} | {r.max_score:g} | {status(r)} |{hand} {notes} |")
    todo = pending_by_student(run)
    if todo:
        lines += ["", "## Needs manual grading", "",
                  f"{sum(map(len, todo.values()))} written answers have no score yet (counted 0 "
                  f"in the totals above). {_PENDING_HELP}", ""]
        lines += [f"- **{student}**: {', '.join(gids)}" for student, gids in todo.items()]
    flagged = [r for r in run.results if getattr(r, "flags", None)]
    if flagged:
        lines += ["", "## Flagged for review", "",
                  "The grader caught these submissions tampering with the tests or the kernel. "
                  "They scored only what their honest answers earned; look at them before "
                  "releasing grades.", ""]
        lines += [f"- **{r.student}**: " + "; ".join(r.flags) for r in flagged]
    lines += ["", "## Grade cells", "", "| " + " | ".join(_PART_HEAD) + " |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    lines += ["| " + " | ".join(row) + " |" for row in part_rows(run)]
    lines += ["", "## Score distributions", ""]
    lines += [f"![{cap}]({path.relative_to(run.out)})" for cap, path in plots]
    path = run.out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _img(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def write_html(run, plots) -> Path:
    esc = html.escape
    def name(r) -> str:  # link the student to their feedback page where there is one
        link = f"feedback/{r.student}/{run.assignment}.html"
        return f"<a href='{esc(link)}'>{esc(r.student)}</a>" if (run.out / link).exists() \
            else esc(r.student)

    manual = bool(getattr(run, "manual", None))
    rows = "".join(
        f"<tr class='{r.status}{' flagged' if getattr(r, 'flags', None) else ''}'>"
        f"<td>{name(r)}</td><td class='num'>{r.score:g}</td>"
        f"<td class='num'>{r.max_score:g}</td><td>{status(r)}</td>"
        + (f"<td>{esc(by_hand(run, r.student))}</td>" if manual else "")
        + f"<td>{esc(_notes(r))}</td></tr>"
        for r in run.results)
    todo = pending_by_student(run)
    pending = ""
    if todo:
        items_ = "".join(f"<li><b>{esc(student)}</b>: {esc(', '.join(gids))}</li>"
                         for student, gids in todo.items())
        pending = (f"<h2>Needs manual grading</h2><p>{sum(map(len, todo.values()))} written answers "
                   f"have no score yet (counted 0 in the totals above). {esc(_PENDING_HELP)}</p>"
                   f"<ul>{items_}</ul>")
    flagged = "".join(f"<li><b>{esc(r.student)}</b>: {esc('; '.join(r.flags))}</li>"
                      for r in run.results if getattr(r, "flags", None))
    if flagged:
        flagged = ("<h2>Flagged for review</h2><p>The grader caught these submissions tampering "
                   "with the tests or the kernel. They scored only what their honest answers "
                   f"earned; look at them before releasing grades.</p><ul>{flagged}</ul>")
    figs = "".join(f"<figure><img src='{_img(p)}' alt='{esc(c)}'><figcaption>{esc(c)}"
                   f"</figcaption></figure>" for c, p in plots)
    items = "".join(f"<li>{esc(line)}</li>" for line in _summary_lines(run))
    parts = "<tr>" + "".join(f"<th>{h}</th>" for h in _PART_HEAD) + "</tr>" + "".join(
        "<tr><td>" + esc(row[0]) + "</td>" + "".join(f"<td class='num'>{v}</td>" for v in row[1:])
        + "</tr>" for row in part_rows(run))
    body = (f"<h1>Grades: {esc(run.assignment)}</h1><ul>{items}</ul>"
            "<table><tr><th>student</th><th>score</th><th>max</th><th>status</th>"
            + ("<th>by hand</th>" if manual else "") + "<th>notes</th></tr>"
            f"{rows}</table><p class='muted'>Student names link to their feedback. All grades: "
            "<a href='grades.csv'>grades.csv</a>; per grade cell: "
            "<a href='cell_scores.csv'>cell_scores.csv</a>; nbgrader's log: grading.log.</p>"
            f"{pending}{flagged}<h2>Grade cells</h2><table>{parts}</table>"
            f"<h2>Score distributions</h2><div class='plots'>{figs}</div>")
    path = run.out / "report.html"
    path.write_text(_page(f"Grades: {run.assignment}", body))
    return path


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{_CSS}</style></head><body>{body}</body></html>\n")


def write_report(run) -> tuple[Path, Path]:
    """Write the plots, ``report.md`` and ``report.html`` into ``run.out``."""
    plots = make_plots(run)
    return write_markdown(run, plots), write_html(run, plots)


def write_index(out: Path, runs: list) -> Path:
    """A summary page over several graded assignments, linking each one's report."""
    rows = ""
    for run in runs:
        s = summary(run)
        link = f"{run.out.relative_to(out)}/report.html"
        rows += (f"<tr><td><a href='{link}'>{html.escape(run.assignment)}</a></td>"
                 f"<td class='num'>{s['students']}</td><td class='num'>{s['failed']}</td>"
                 f"<td class='num'>{s['flagged']}</td>"
                 f"<td class='num'>{s['mean']:.2f} / {s['max_score']:g}</td>"
                 f"<td class='num'>{s['median']:g}</td><td class='num'>{s['full']}</td>"
                 f"<td class='num'>{s['pending']}</td></tr>")
    body = ("<h1>Autograder demo</h1><table><tr><th>assignment</th><th>submissions</th>"
            "<th>failed</th><th>flagged</th><th>mean</th><th>median</th><th>full marks</th>"
            "<th>written answers to grade</th></tr>"
            f"{rows}</table><p class='muted'>All grades: <a href='grades.csv'>grades.csv</a>.</p>")
    path = out / "report.html"
    path.write_text(_page("Autograder demo", body))
    return path
