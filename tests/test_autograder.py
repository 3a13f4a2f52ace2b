"""The grading pipeline end to end, on a toy assignment made here (not the course's).

The toy has one answer cell (``square``) and two grade cells: ``test_square`` (2 points, with a
hidden test) and ``test_noisy`` (1 point, emits a warning that must not cost the point).
Students: a correct one, the blank release, malformed JSON, no notebook, one that raises
before defining anything, one whose cell runs past the timeout, one whose kernel crashes (that
cell is skipped and the notebook re-run without it), a loose
notebook and one zipped inside the student's folder.

The pipeline runs once per module (``graded``); tests marked ``slow`` share it, and the
``xdist_group`` keeps them on one pytest-xdist worker so it is not run twice.
"""
from __future__ import annotations

import json
import re
import shutil
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from autograder import gradebook as gbk
from autograder.assignments import DEFAULT, SPECS, spec_for
from autograder.config import load_config, write_config
from autograder.notebooks import assignment_names, read_source
from autograder.pipeline import grade
from autograder.release import clean_notebook, grade_ids, release
from autograder.submissions import collect

pytestmark = pytest.mark.xdist_group(name="autograder_toy")

TOY = '''\
# %% [markdown]
# # Toy assignment

# %%
import sys
print(sys.prefix)

# %% nbgrader={"grade": false, "grade_id": "square", "locked": false, "schema_version": 3, "solution": true, "task": false}
def square(x):
    ### BEGIN SOLUTION
    return x * x
    ### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "test_square", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
assert square(3) == 9
### BEGIN HIDDEN TESTS
assert square(-2) == 4
### END HIDDEN TESTS

# %% nbgrader={"grade": true, "grade_id": "test_noisy", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
import warnings
warnings.simplefilter("always")  # defeats PYTHONWARNINGS=ignore: IgnorePattern must strip it
warnings.warn("harmless", UserWarning)
assert square(0) == 0
'''

ANSWERS = {  # student -> the code of the answer cell
    "correct": "def square(x):\n    return x * x\n",
    "early": "raise NameError('typo')\ndef square(x):\n    return x * x\n",
    "slow": "import time\ndef square(x):\n    return x * x\ntime.sleep(60)\n",
    "dies": "import faulthandler\nfaulthandler._sigsegv()\n",  # the kernel crashes: skipped, re-run
    "loose": "def square(x):\n    return abs(x) * 3\n",  # passes 3*3 == 9, fails the hidden test
    "zipped": "def square(x):\n    return x ** 2\n",
    "tamper": "def square(x):\n    return x * x\n",  # and the test cell emptied: restored, flagged
}
EXPECTED = {"correct": 3.0, "blank": 0.0, "malformed": 0.0, "missing": 0.0, "early": 0.0,
            "slow": 3.0, "dies": 0.0, "loose": 1.0, "zipped": 3.0, "tamper": 3.0}
TIMEOUT = 4


def _with_answer(student_version: Path, code: str) -> nbformat.NotebookNode:
    nb = nbformat.read(str(student_version), as_version=4)
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "square")
    cell.source = code
    return nb


def _tampered(student_version: Path) -> nbformat.NotebookNode:
    """The correct answer, with the visible test replaced by ``pass`` (the grader restores it)."""
    nb = _with_answer(student_version, ANSWERS["tamper"])
    test = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "test_square")
    test.source = "pass"
    return nb


# Session scope, not module: with pytest-xdist the worker may run other modules' tests between
# these, and module-scoped fixtures would be rebuilt each time (another grading run of the toy class).
@pytest.fixture(scope="session")
def toy(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("toy") / "toy.py"
    path.write_text(TOY)
    return path


@pytest.fixture(scope="session")
def student_version(toy) -> Path:
    return release("toy", source=toy, dest_root=toy.parent / "assignments")


@pytest.fixture(scope="session")
def submissions(student_version) -> Path:
    subs = student_version.parents[2] / "submissions"
    for student in ("correct", "early", "slow", "dies"):
        (subs / student).mkdir(parents=True)
        nbformat.write(_with_answer(student_version, ANSWERS[student]), str(subs / student / "toy.ipynb"))
    (subs / "blank").mkdir()
    shutil.copyfile(student_version, subs / "blank" / "toy.ipynb")
    (subs / "tamper").mkdir()
    nbformat.write(_tampered(student_version), str(subs / "tamper" / "toy.ipynb"))
    (subs / "malformed").mkdir()
    (subs / "malformed" / "toy.ipynb").write_text('{"cells": [')
    (subs / "missing").mkdir()
    (subs / "missing" / "readme.txt").write_text("forgot to attach it")
    nbformat.write(_with_answer(student_version, ANSWERS["loose"]), str(subs / "loose.ipynb"))
    (subs / "zipped").mkdir()
    with zipfile.ZipFile(subs / "zipped" / "upload.zip", "w") as zf:
        zf.writestr("work/my answers.ipynb",
                    nbformat.writes(_with_answer(student_version, ANSWERS["zipped"])))
    return subs


@pytest.fixture(scope="session")
def graded(toy, submissions):
    out = submissions.parent / "out"
    run = grade("toy", submissions, out, source=toy, timeout=TIMEOUT, echo=lambda line: None)
    return run, out


# ------------------------------------------------------------------ fast: no nbgrader run

def test_source_metadata_round_trips(toy):
    nb = read_source(toy)
    assert grade_ids(nb) == [("test_square", 2.0), ("test_noisy", 1.0)]
    answer = nb.cells[2].metadata["nbgrader"]
    assert answer["solution"] and not answer["grade"] and answer["grade_id"] == "square"


def test_clean_notebook_is_stable(toy):
    a, b = clean_notebook(read_source(toy)), clean_notebook(read_source(toy))
    assert nbformat.writes(a) == nbformat.writes(b)
    assert [c.id for c in a.cells][2:] == ["square", "test_square", "test_noisy"]
    assert all("lines_to_next_cell" not in c.metadata for c in a.cells)


def test_config_file_round_trips(tmp_path):
    write_config(tmp_path, db_url="sqlite:///x.db", timeout=7, pattern=DEFAULT.ignore_pattern())
    c = load_config(tmp_path)
    assert c.ExecutePreprocessor.timeout == 7
    assert c.IgnorePattern.enabled and c.IgnorePattern.pattern == DEFAULT.ignore_pattern()
    assert c.CourseDirectory.root == str(tmp_path)
    assert spec_for("a1_attention_basics").timeout > 30 and spec_for("nope") == DEFAULT


def test_assignment_settings_cover_exactly_the_assignments():
    assert sorted(SPECS) == assignment_names(), "autograder/assignments.py's SPECS and solutions/ differ"


def test_collect_finds_notebooks_in_every_layout(tmp_path):
    subs = tmp_path / "subs"
    (subs / "ann" / "deep").mkdir(parents=True)
    (subs / "ann" / "deep" / "a.ipynb").write_text(nbformat.writes(nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("1")])))
    (subs / "bob").mkdir()
    (subs / "bob" / "a.ipynb").write_text("not json")
    (subs / "cy").mkdir()
    (subs / "__MACOSX").mkdir()
    archive = tmp_path / "subs.zip"
    with zipfile.ZipFile(archive, "w") as zf:  # an LMS-style zip with one wrapper folder
        for p in subs.rglob("*"):
            zf.write(p, Path("export") / p.relative_to(subs))
    for where in (subs, archive):
        found = {s.student: s for s in collect(where, "a", tmp_path / "scratch")}
        assert sorted(found) == ["ann", "bob", "cy"]
        assert found["ann"].problem is None and found["ann"].notebook.name == "a.ipynb"
        assert "not a valid notebook" in found["bob"].problem
        assert found["cy"].problem == "no notebook (.ipynb) found"


# ------------------------------------------------------------------ slow: real nbgrader

@pytest.mark.slow
def test_release_is_deterministic_and_hides_answers(toy, student_version, tmp_path):
    again = release("toy", source=toy, dest_root=tmp_path)
    assert again.read_bytes() == student_version.read_bytes()
    text = student_version.read_text()
    assert "YOUR CODE HERE" in text and "square(-2)" not in text and "BEGIN" not in text
    assert '"outputs": []' in text and '"checksum"' in text


@pytest.mark.slow
def test_grades_csv_has_expected_scores_and_status(graded):
    run, out = graded
    rows = {r["student_id"]: r for r in gbk.read_csv(out / "grades.csv")}
    assert list(gbk.read_csv(out / "grades.csv")[0]) == gbk.GRADE_COLUMNS
    assert {s: float(r["score"]) for s, r in rows.items()} == EXPECTED
    assert all(r["max_score"] == "3.0" for r in rows.values())
    failed = {s for s, r in rows.items() if r["status"] == "failed"}
    assert failed == {"malformed", "missing"}
    assert "not a valid notebook" in rows["malformed"]["notes"]
    assert "no notebook" in rows["missing"]["notes"]
    assert rows["dies"]["status"] == "graded"  # the cell that crashed the kernel is skipped
    assert "skipped 'square' (killed the kernel)" in rows["dies"]["notes"]
    assert rows["early"]["notes"] == ("raised NameError in cell 'square'; "
                                      "2 of 2 grade cells failed")
    assert "NotImplementedError" in rows["blank"]["notes"]
    assert "timed out in cell 'square'" in rows["slow"]["notes"]
    assert "1 of 2 grade cells failed" in rows["loose"]["notes"]
    assert "graded my answers.ipynb" in rows["zipped"]["notes"]


@pytest.mark.slow
def test_flags_reach_the_export_and_the_gradebook(graded):
    """Every flag of the report is in grades.csv (``status`` graded+flagged, ``flags``), in
    cell_scores.csv for the cell it names, and in the gradebook (nbgrader's ``flagged``); a
    notebook a person flags in formgrader is exported as flagged too."""
    from nbgrader.api import Gradebook

    from autograder.pipeline import FLAGGED_BY_HAND, export

    run, out = graded
    rows = {r["student_id"]: r for r in gbk.read_csv(out / "grades.csv")}
    flagged = {r.student: r.flags for r in run.results if r.flags}
    assert list(flagged) == ["tamper"], flagged
    assert rows["tamper"]["status"] == "graded+flagged"
    assert "'test_square' was edited by the student" in rows["tamper"]["flags"]
    assert rows["tamper"]["flags"] == "; ".join(flagged["tamper"])
    assert all(rows[s]["flags"] == "" and "+flagged" not in rows[s]["status"] for s in rows if s != "tamper")
    report = (out / "report.md").read_text()
    for flag in flagged["tamper"]:  # what the report lists is what the export carries
        assert flag in report and flag in rows["tamper"]["flags"]
    cells = {(r["student"], r["grade_id"]): r["flags"] for r in gbk.read_csv(out / "cell_scores.csv")}
    assert "edited by the student" in cells[("tamper", "test_square")]
    assert cells[("tamper", "test_noisy")] == "" and cells[("correct", "test_square")] == ""
    db = f"sqlite:///{out / 'gradebook.db'}"
    assert gbk.flagged(db, "toy", list(EXPECTED)) == {"tamper"}
    before = {name: (out / name).read_bytes() for name in ("grades.csv", "cell_scores.csv")}

    def mark(student: str, value: bool) -> None:  # what formgrader's flag button does
        with Gradebook(db, "attnkit") as gb:
            for nb in gb.find_submission("toy", student).notebooks:
                nb.flagged = value
            gb.db.commit()

    mark("correct", True)
    try:
        export(out)
        rows = {r["student_id"]: r for r in gbk.read_csv(out / "grades.csv")}
        assert rows["correct"]["status"] == "graded+flagged"
        assert rows["correct"]["flags"] == FLAGGED_BY_HAND
        assert "edited by the student" in rows["tamper"]["flags"]  # kept from state.json
    finally:
        mark("correct", False)
        export(out)
    assert {name: (out / name).read_bytes() for name in before} == before


@pytest.mark.slow
def test_cell_scores_feedback_report_and_kernel(graded):
    run, out = graded
    cells = {(r["student"], r["grade_id"]): float(r["score"])
             for r in gbk.read_csv(out / "cell_scores.csv")}
    assert cells[("correct", "test_noisy")] == 1.0  # the warning did not zero it
    assert cells[("loose", "test_square")] == 0.0 and cells[("loose", "test_noisy")] == 1.0
    assert not any(s in {"malformed", "missing"} for s, _ in cells)
    assert cells[("dies", "test_square")] == 0.0
    for student, score in EXPECTED.items():
        feedback = out / "feedback" / student / "toy.html"
        assert feedback.exists() == (student not in {"malformed", "missing"}), student
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    for text in ("not a valid notebook", "no notebook", "killed the kernel", "data:image/png;base64"):
        assert text in html, text
    assert "plots/test_square.png" in md and (out / "plots" / "total.png").exists()
    graded_nb = nbformat.read(str(out / "course" / "autograded" / "correct" / "toy" / "toy.ipynb"), 4)
    assert graded_nb.cells[1].outputs[0].text.strip() == sys.prefix  # graded by this venv


@pytest.mark.slow
def test_rerun_is_idempotent(graded, toy, submissions, capsys):
    from autograder.cli import main

    run, out = graded
    before = (out / "grades.csv").read_bytes()
    args = ["grade", "toy", str(submissions), "--out", str(out), "--source", str(toy),
            "--timeout", str(TIMEOUT)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "correct: graded 3/3 (unchanged, kept)" in printed
    assert re.search(r"^malformed\s+0\s+3\s+failed\s+not a valid notebook", printed, re.M)
    assert (out / "grades.csv").read_bytes() == before
    again = grade("toy", submissions, out, source=toy, timeout=TIMEOUT, force=True, jobs=2,
                  echo=lambda line: None)  # everyone again, two worker processes
    assert not any(r.cached for r in again.results)
    assert (out / "grades.csv").read_bytes() == before
    # An interrupted run leaves the student being graded out of state.json: only it is re-graded.
    state = json.loads((out / "state.json").read_text())
    del state["students"]["loose"]
    (out / "state.json").write_text(json.dumps(state))
    resumed = grade("toy", submissions, out, source=toy, timeout=TIMEOUT, echo=lambda line: None)
    assert [r.student for r in resumed.results if not r.cached] == ["loose", "malformed",
                                                                     "missing"]  # failed: retried
    assert (out / "grades.csv").read_bytes() == before
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}", "attnkit") as gb:
        subs = gb.assignment_submissions("toy")
        assert sorted(s.student.id for s in subs) == sorted(
            set(EXPECTED) - {"malformed", "missing"})
        assert sum(len(nb.grades) for s in subs for nb in s.notebooks) == 2 * len(subs)
