"""Turning nbgrader's results into one-line explanations for the report.

``failure_reason`` reads the log and traceback of an nbgrader step that failed (kernel died,
kernel did not start, an exception) and says why in one line. ``describe_notebook`` reads an
autograded notebook and says what went wrong in it: the first cell that raised, any cell that
timed out, grade cells that wrote to stderr (nbgrader scores those 0), and how many grade
cells lost points, e.g. "raised NameError in cell 'attention'; 3 of 7 grade cells failed (test_attention, ...)".
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat

from .cells import grade_id, is_grade
from .gradebook import CellScore


def failure_reason(result: dict) -> str:
    """One line saying why an nbgrader step failed, from its captured log and traceback."""
    text = (result.get("log") or "") + "\n" + (result.get("error") or "")
    if "DeadKernelError" in text:
        return "the kernel died (the notebook crashed, exited or ran out of memory)"
    if "Kernel didn't respond" in text or "Kernel died before replying" in text:
        return "the kernel did not start"
    errors = [m for m in re.findall(r"^\s*([A-Za-z_.]*(?:Error|Exception|Interrupt)): (.*)$",
                                    text, re.M) if "NbGraderException" not in m[0]]
    if errors:
        return f"{errors[-1][0]}: {errors[-1][1].strip()[:160]}"
    return "nbgrader failed (see grading.log)"


def describe_notebook(path: Path, parts: list[tuple[str, float]],
                      cells: list[CellScore]) -> str:
    """E.g. "raised NameError in cell 'attention'; 3 of 7 grade cells failed (test_attention, ...)"."""
    nb = nbformat.read(str(path), as_version=4)
    errors, stderr = [], []
    for i, cell in enumerate(nb.cells):
        label = grade_id(cell) or f"#{i + 1} (added)"
        outputs = cell.get("outputs", [])
        names = [o.get("ename", "") for o in outputs if o.output_type == "error"]
        if names:
            errors.append(("CellTimeoutError" if "CellTimeoutError" in names else names[0], label))
        elif is_grade(cell) and any(o.get("name") == "stderr" for o in outputs):
            stderr.append(label)  # nbgrader scores a grade cell with stderr output 0
    notes = []
    if errors:
        ename, label = errors[0]
        notes.append(f"timed out in cell '{label}'" if ename == "CellTimeoutError"
                     else f"raised {ename} in cell '{label}'")
        notes += [f"timed out in cell '{lb}'" for en, lb in errors[1:] if en == "CellTimeoutError"]
    if stderr:
        notes.append("wrote to stderr in " + ", ".join(f"'{lb}'" for lb in stderr))
    failed = [c for c in cells if c.score is not None and c.score < c.max_score]
    if failed:
        which = "" if len(failed) == len(parts) else \
            " (" + ", ".join(c.grade_id for c in failed) + ")"
        notes.append(f"{len(failed)} of {len(parts)} grade cells failed{which}")
    return "; ".join(notes)
