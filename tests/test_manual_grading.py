"""Written answers graded by hand, end to end, on a toy assignment graded by the real pipeline.

The toy has one autograded part (``test_square``, 2 points) and one written answer (``why``, a
markdown cell nbgrader grades by hand, 2 points). Three students: ``correct`` (right code, an
answer), ``blank`` (the release: the untouched answer scores 0 at once, nbgrader's rule) and
``wrong`` (wrong code, an answer). After autograding, the two answers are pending: no score in
``cell_scores.csv``, counted in ``grades.csv``'s ``needs_manual_grade`` and listed in the report.
Scores entered through ``attnkit manual ... import`` (nbgrader's ``Grade.manual_score`` and
``Comment.manual_comment``) end up in every export; bad scores write nothing; re-grading keeps
them.
"""
from __future__ import annotations

import shutil

import nbformat
import pytest

from autograder import gradebook as gbk
from autograder.cli import main
from autograder.manual import ManualGradeError, import_scores, read_scores, template_rows
from autograder.pipeline import grade
from autograder.release import release

pytestmark = [pytest.mark.xdist_group(name="manual_grading"), pytest.mark.slow]

TOY = '''\
# %% [markdown]
# # Toy assignment with a written answer

# %% nbgrader={"grade": false, "grade_id": "square", "locked": false, "schema_version": 3, "solution": true, "task": false}
def square(x):
    ### BEGIN SOLUTION
    return x * x
    ### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "test_square", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
assert square(3) == 9

# %% [markdown]
# Why is `square(-x) == square(x)`? (2 points)

# %% [markdown] nbgrader={"grade": true, "grade_id": "why", "locked": false, "points": 2, "schema_version": 3, "solution": true, "task": false}
# ### BEGIN SOLUTION
# Because $(-x)^2 = x^2$: the sign cancels.
# ### END SOLUTION
'''

ANSWERS = {"correct": ("def square(x):\n    return x * x\n", "The sign cancels out."),
           "wrong": ("def square(x):\n    return 2 * x\n", "Squares are even functions.")}


def _cells(out):
    return {(r["student"], r["grade_id"]): r for r in gbk.read_csv(out / "cell_scores.csv")}


def _totals(out):
    return {r["student_id"]: (float(r["score"]), int(r["needs_manual_grade"]))
            for r in gbk.read_csv(out / "grades.csv")}


def _write(path, text):
    path.write_text(text)
    return path


@pytest.fixture(scope="session")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("manual")
    toy = _write(root / "toy.py", TOY)
    student = release("toy", source=toy, dest_root=root / "assignments")
    released = nbformat.read(str(student), as_version=4)
    why = next(c for c in released.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "why")
    assert why.cell_type == "markdown" and why.source == "YOUR ANSWER HERE"
    assert "sign cancels" not in nbformat.writes(released)
    subs = root / "submissions"
    for name, (code, text) in ANSWERS.items():
        nb = nbformat.read(str(student), as_version=4)
        for cell in nb.cells:
            gid = cell.metadata.get("nbgrader", {}).get("grade_id")
            cell.source = {"square": code, "why": text}.get(gid, cell.source)
        (subs / name).mkdir(parents=True)
        nbformat.write(nb, str(subs / name / "toy.ipynb"))
    (subs / "blank").mkdir()
    shutil.copyfile(student, subs / "blank" / "toy.ipynb")
    out = root / "out"
    grade("toy", subs, out, source=toy, timeout=30, echo=lambda line: None)
    # What autograding alone left, read now: later tests grade by hand in this folder, in any order.
    AUTOGRADED.update(cells=_cells(out), totals=_totals(out), template=template_rows(out),
                      md=(out / "report.md").read_text(), html=(out / "report.html").read_text())
    return toy, subs, out


AUTOGRADED: dict = {}  # the exports right after autograding (filled by ``graded``)


def test_written_answers_are_pending_after_autograding(graded):
    _, _, out = graded
    cells = AUTOGRADED["cells"]  # read before any test graded by hand
    assert AUTOGRADED["totals"] == {"correct": (2.0, 1), "wrong": (0.0, 1), "blank": (0.0, 0)}
    assert cells[("correct", "test_square")]["grading"] == "auto"
    for student in ("correct", "wrong"):
        row = cells[(student, "why")]
        assert row["score"] == "" and row["grading"] == "pending" and row["max_score"] == "2.0", row
    assert cells[("blank", "why")]["score"] == "0.0" and cells[("blank", "why")]["grading"] == "auto"
    report = AUTOGRADED["md"]
    assert "## Needs manual grading" in report and "- **correct**: why" in report
    assert "2 still need manual grading" in report and "provisional" in report
    assert "| correct | 2 | 4 | graded | 1 pending |" in report
    assert "Needs manual grading" in AUTOGRADED["html"]
    rows = AUTOGRADED["template"]
    assert [(r["student"], r["grade_id"], r["status"]) for r in rows] == [
        ("correct", "why", "pending"), ("wrong", "why", "pending")]
    assert rows[0]["answer"] == "The sign cancels out." and rows[0]["points"] == "2"
    # formgrader opens on the course folder: its config names this run's gradebook
    assert f"sqlite:///{out / 'gradebook.db'}" in (out / "course" / "nbgrader_config.py").read_text()


@pytest.mark.parametrize("rows, message", [
    ("correct,why,2.5,too generous\n", r"score 2\.5 for correct/why is outside \[0, 2\]"),
    ("correct,why,-1,\n", r"outside \[0, 2\]"),
    ("correct,whyy,1,\n", r"unknown grade cell 'whyy'.*grade cells of toy: test_square, why"),
    ("nobody,why,1,\n", r"unknown student 'nobody'"),
    ("wrong,why,1,fine\nwrong,why,2,again\n", r"already given on line 2"),
    ("correct,test_square,1,a comment\n", r"not an answer cell"),
    ("correct,why,lots,\n", r"score 'lots' is not a number"),
    ("wrong,why,1,ok\ncorrect,why,3,\n", r"\.csv:3: score 3 for correct/why"),  # the good row is not kept
])
def test_bad_manual_grades_write_nothing(graded, tmp_path, rows, message):
    _, _, out = graded
    before = (_cells(out), _totals(out), (out / "report.md").read_text())
    path = _write(tmp_path / "scores.csv", "student,grade_id,score,comment\n" + rows)
    with pytest.raises(ManualGradeError, match=message):
        import_scores(out, path)
    assert (_cells(out), _totals(out), (out / "report.md").read_text()) == before
    assert main(["manual", "--run", str(out), "import", str(path)]) == 2  # one line, exit 2


def test_wrong_assignment_and_missing_columns_are_refused(graded, tmp_path):
    _, _, out = graded
    path = _write(tmp_path / "a.csv", "student,assignment,grade_id,score\ncorrect,a1,why,1\n")
    with pytest.raises(ManualGradeError, match=r"assignment 'a1', but this run grades 'toy'"):
        import_scores(out, path)
    with pytest.raises(ManualGradeError, match="missing column"):
        read_scores(_write(tmp_path / "b.csv", "student,cell,points\ncorrect,why,1\n"))
    with pytest.raises(FileNotFoundError):
        import_scores(out, tmp_path / "none.csv")


def test_manual_scores_are_exported_and_survive_regrading(graded, tmp_path, capsys):
    from nbgrader.api import Gradebook

    toy, subs, out = graded
    # The TA's path: the template, filled in, imported by the command.
    assert main(["manual", "--run", str(out), "export-template", "--to", str(tmp_path / "todo.csv")]) == 0
    todo = gbk.read_csv(tmp_path / "todo.csv")
    assert {r["student"] for r in todo} <= {"correct", "wrong"}
    for row in todo:
        row["score"], row["comment"] = {"correct": ("1.5", "Right, say why the sign cancels."),
                                        "wrong": ("2", "Good.")}[row["student"]]
    gbk.write_csv(tmp_path / "todo.csv", list(todo[0]) if todo else ["student"], todo)
    if todo:
        assert main(["manual", "--run", str(out), "import", str(tmp_path / "todo.csv")]) == 0
        printed = capsys.readouterr().out
        assert "entered 2 manual scores" in printed and "done" in printed

    assert _totals(out) == {"correct": (3.5, 0), "wrong": (2.0, 0), "blank": (0.0, 0)}
    cells = _cells(out)
    assert (cells[("correct", "why")]["score"], cells[("correct", "why")]["grading"],
            cells[("correct", "why")]["manual_score"]) == ("1.5", "manual", "1.5")
    assert cells[("correct", "test_square")]["grading"] == "auto"
    report = (out / "report.md").read_text()
    assert "| correct | 3.5 | 4 | graded | done |" in report and "## Needs manual grading" not in report
    assert "2 scored by a person" in report and "0 still need manual grading" in report
    assert "| why | by hand | 2 | 1.17 | 1 | 1 | 0 |" in report  # mean of 1.5, 2 and the blank 0
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}", "attnkit") as gb:
        grade_row = gb.find_grade("why", "toy", "toy", "correct")
        assert (grade_row.manual_score, grade_row.needs_manual_grade) == (1.5, False)
        assert gb.find_comment("why", "toy", "toy", "correct").manual_comment.startswith("Right")
    assert template_rows(out) == []  # nothing left to grade by hand

    # Re-grading: unchanged notebooks are kept as they are...
    run = grade("toy", subs, out, source=toy, timeout=30, echo=lambda line: None)
    assert all(r.cached for r in run.results)
    assert _totals(out) == {"correct": (3.5, 0), "wrong": (2.0, 0), "blank": (0.0, 0)}
    # ...and a resubmitted one is graded again: its manual score stays, marked for a second look
    # (nbgrader's rule), while the others are untouched.
    path = subs / "correct" / "toy.ipynb"
    nb = nbformat.read(str(path), as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell("(resubmitted)"))
    nbformat.write(nb, str(path))
    run = grade("toy", subs, out, source=toy, timeout=30, echo=lambda line: None)
    assert [r.student for r in run.results if not r.cached] == ["correct"]
    assert _totals(out) == {"correct": (3.5, 0), "wrong": (2.0, 0), "blank": (0.0, 0)}
    assert _cells(out)[("correct", "why")]["grading"] == "review"
    assert _cells(out)[("wrong", "why")]["grading"] == "manual"
    assert "| correct | 3.5 | 4 | graded | 1 to review |" in (out / "report.md").read_text()
    assert [(r["student"], r["status"]) for r in template_rows(out)] == [("correct", "review")]
    # Scoring it again clears the review (as `attnkit demo` enters its samples' manual grades:
    # right after grading, so the report keeps that run's timings).
    path = _write(tmp_path / "again.csv", "student,grade_id,score\ncorrect,why,2\nwrong,why,2\n")
    assert import_scores(out, path, run=run) is run
    assert "This run:" in (out / "report.md").read_text()
    assert _totals(out)["correct"] == (4.0, 0) and _cells(out)[("correct", "why")]["grading"] == "manual"
