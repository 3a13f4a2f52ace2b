"""The real pipeline on the real assignments: `attnkit grade` on the bundled sample submissions
gives the expected totals, the full solution gets full marks on every autograded cell and the
blank release zero on every grade cell; the written answers (graded by hand) of the samples that
wrote one are pending, not scored, until the samples' ``manual_grades.csv`` is entered (as
``attnkit demo`` does); the committed student notebooks and samples are up to date."""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import nbformat
import pytest

from autograder.notebooks import ASSIGNMENTS, ROOT, assignment_names, comparable
from autograder.release import release_notebook
from autograder.samples import EXPECTED, EXPECTED_WITH_MANUAL, RECIPES, build_sample, sample_path

pytestmark = pytest.mark.slow


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("name", assignment_names())
def test_released_notebook_is_up_to_date(name):
    committed = nbformat.read(str(ASSIGNMENTS / name / f"{name}.ipynb"), as_version=4)
    assert comparable(committed) == comparable(release_notebook(name)), (
        f"assignments/{name}/{name}.ipynb is stale: run `attnkit release {name}`")


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_samples_are_up_to_date(name):
    for student, recipe in RECIPES[name].items():
        committed = nbformat.read(str(sample_path(name, student)), as_version=4)
        assert comparable(committed) == comparable(build_sample(name, recipe)), (
            f"sample {name}/{student} is stale: run `attnkit samples`")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_grading_the_samples(name, tmp_path):
    out = tmp_path / "graded"
    cmd = [sys.executable, "-m", "autograder.cli", "grade", name,
           str(ROOT / "autograder" / "samples" / name), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    totals = {row["student_id"]: float(row["score"]) for row in _read_csv(out / "grades.csv")}
    assert totals == pytest.approx(EXPECTED[name]), f"grades.csv totals {totals}"

    cells = _read_csv(out / "cell_scores.csv")
    per_student = {}
    for row in cells:
        per_student.setdefault(row["student"], []).append(row)
    written = {gid for gid, _ in _manual_cells(name)}
    for row in per_student["full"]:  # a written answer waits for a person: no score, not 0
        assert (row["grading"], row["score"]) == (("pending", "") if row["grade_id"] in written else
                                                  ("auto", row["max_score"])), row
    assert all(float(r["score"]) == 0 and r["grading"] == "auto" for r in per_student["blank"]), \
        "the blank release scored on some grade cell (an answer left as released scores 0 at once)"
    assert len(per_student["blank"]) == len(per_student["full"]) > 0
    pending = {row["student_id"]: int(row["needs_manual_grade"]) for row in _read_csv(out / "grades.csv")}
    assert pending["full"] == len(written) and pending["blank"] == 0, pending

    for student in EXPECTED[name]:
        assert list((out / "feedback" / student).glob("*.html")), f"no feedback for {student}"
    feedback = (out / "feedback" / "full" / f"{name}.html").read_text(encoding="utf-8")
    assert "BEGIN HIDDEN TESTS" not in feedback and "lines of hidden tests" in feedback, \
        "the feedback shows the hidden tests"
    # graded in the bubblewrap sandbox (the default), with the guard and the resilient executor
    assert "autograder.sandbox.SandboxKernelManager" in (out / "course" / "nbgrader_config.py").read_text()
    ran = json.loads((out / "course" / "autograded" / "full" / name / ".attnkit-execution.json").read_text())
    assert ran[name]["sandboxed"] is True and ran[name]["restarts"] == 0, ran
    autograded = (out / "course" / "autograded" / "full" / name / f"{name}.ipynb").read_text(encoding="utf-8")
    assert "BEGIN HIDDEN TESTS" in autograded, "the instructor's autograded copy lost its hidden tests"
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "crash_early" in report and "ModuleNotFoundError" in report, "the report does not explain the crash"
    flagged = report.split("## Flagged for review", 1)[-1].split("## Grade cells", 1)[0]
    if "hostile" in EXPECTED[name]:  # the demo's cheating student is flagged, with the reason
        assert "**hostile**" in flagged and "patched attnkit.grading" in flagged, flagged
    if "malformed" in EXPECTED[name]:  # repaired and graded, but a deleted test is worth a look
        assert "**malformed**" in flagged and "was deleted by the student" in flagged, flagged

    if written:
        assert "## Needs manual grading" in report and "| by hand |" in report
    expected = EXPECTED[name]
    manual = ROOT / "autograder" / "samples" / name / "manual_grades.csv"
    if manual.exists():  # the demo's TA: the same command an instructor runs
        entered = subprocess.run([sys.executable, "-m", "autograder.cli", "manual", "--run", str(out),
                                  "import", str(manual)], capture_output=True, text=True, timeout=300,
                                 cwd=tmp_path)
        assert entered.returncode == 0, entered.stdout[-3000:] + entered.stderr[-3000:]
        expected = EXPECTED_WITH_MANUAL[name]
        totals = {row["student_id"]: float(row["score"]) for row in _read_csv(out / "grades.csv")}
        assert totals == pytest.approx(expected), f"grades.csv totals after the manual grades {totals}"
        cells = {(r["student"], r["grade_id"]): r for r in _read_csv(out / "cell_scores.csv")}
        for row in _read_csv(manual):
            assert cells[(row["student"], row["grade_id"])]["grading"] == "manual", row
            assert float(cells[(row["student"], row["grade_id"])]["score"]) == float(row["score"]), row

    # A second run on the same folder is safe: same grades (manual ones kept), no duplicates.
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = _read_csv(out / "grades.csv")
    assert sorted(r["student_id"] for r in rows) == sorted(EXPECTED[name])
    assert {r["student_id"]: float(r["score"]) for r in rows} == pytest.approx(expected)


def _manual_cells(name):
    """(grade_id, points) of the written answers of assignment ``name``, graded by hand."""
    nb = nbformat.read(str(ASSIGNMENTS / name / f"{name}.ipynb"), as_version=4)
    return [(c.metadata["nbgrader"]["grade_id"], c.metadata["nbgrader"]["points"]) for c in nb.cells
            if c.metadata.get("nbgrader", {}).get("grade") and c.metadata["nbgrader"].get("solution")]


@pytest.mark.parametrize("name", assignment_names())
def test_written_answers_are_markdown_released_blank(name):
    """A written answer is a markdown cell graded by hand (1-2 points), released as nbgrader's
    ``YOUR ANSWER HERE``, with a model answer in the source; the full sample answers it."""
    nb = nbformat.read(str(ASSIGNMENTS / name / f"{name}.ipynb"), as_version=4)
    for gid, points in _manual_cells(name):
        cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == gid)
        assert cell.cell_type == "markdown" and cell.source == "YOUR ANSWER HERE", gid
        assert 1 <= points <= 2 and cell.metadata["nbgrader"]["task"] is False, gid
        if name in RECIPES:
            assert RECIPES[name]["full"].get(gid) == "solution", f"the full sample of {name} does not answer {gid}"
            assert gid not in RECIPES[name]["blank"]
