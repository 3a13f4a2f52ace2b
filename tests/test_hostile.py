"""Hostile submissions graded in ONE ``attnkit grade`` run (``autograder.pipeline.grade``) with the
honest a1 samples: each attack scores exactly what its honest content earns and is flagged
with the reason, and the honest students' grades do not change (12 / 7 / 5). The honest "full"
sample writes attention with exp, sum, matmul and masked_fill (the built-ins a1 allows) and
keeps 12/12 unflagged while ``forbidden_builtins`` and ``reference_routes`` (several routes in
one notebook, one part each) lose exactly the parts they attack.

The notebooks are built by ``tests/hostile/build.py`` (committed; a test checks they are what
the recipes produce). This needs the sandbox (bubblewrap) and the resilient executor; the
guard-level attacks are also tested without them in ``test_guard.py``.
"""
from __future__ import annotations

import shutil

import nbformat
import pytest

from autograder import gradebook as gbk
from autograder.pipeline import grade
from autograder.protect import read_flags
from autograder.samples import EXPECTED as SAMPLE_EXPECTED
from autograder.samples import SAMPLES_DIR
from autograder.sandbox import probe
from tests.hostile import build as hostile

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group(name="hostile")]
A1 = hostile.A1
# The honest a1 samples graded alongside (the demo's own "hostile" sample is not honest).
HONEST = ("full", "partial", "crash_early")


def test_committed_hostile_notebooks_match_their_recipes():
    for student in hostile.ATTACKS:
        committed = nbformat.read(str(hostile.path(student)), as_version=4)
        built = hostile.build(student)
        assert [c.source for c in committed.cells] == [c.source for c in built.cells], student


# Session scope, not module: with pytest-xdist the worker may run other modules' tests between
# these, and a module-scoped fixture is torn down and rebuilt each time (a second 200 s grading run).
@pytest.fixture(scope="session")
def run(tmp_path_factory):
    reason = probe()
    assert not reason, f"the sandbox cannot start here: {reason}"
    subs = tmp_path_factory.mktemp("subs")
    for student in HONEST:
        shutil.copytree(SAMPLES_DIR / A1 / student, subs / student)
    for student in hostile.ATTACKS:
        shutil.copytree(hostile.path(student).parent, subs / student)
    out = tmp_path_factory.mktemp("out")
    # two workers: the attacks also meet the parallel path (and the run takes half the time)
    return grade(A1, subs, out, timeout=20, workers=2, echo=lambda *_: None)


def test_honest_students_unchanged(run):
    scores = {r.student: r.score for r in run.results}
    for student in HONEST:
        expected = SAMPLE_EXPECTED[A1][student]
        assert scores[student] == expected, (student, scores[student])
        result = next(r for r in run.results if r.student == student)
        assert not result.flags, (student, result.flags)


@pytest.mark.parametrize("student", list(hostile.ATTACKS))
def test_attack_scores_its_honest_content_and_is_flagged(run, student):
    result = next(r for r in run.results if r.student == student)
    score = hostile.EXPECTED[student][0]
    assert result.status == "graded", result.line()
    assert result.score == score, result.line()
    sidecar = read_flags(run.out / "course" / "autograded" / student / A1)
    report = (run.out / "report.md").read_text()
    for flag in hostile.flags(student):  # every route of the notebook, each with its reason
        assert any(flag in f for f in sidecar), (flag, sidecar)
        assert any(flag in f for f in result.flags), (flag, result.line())
        assert student in report and flag in report, flag
    assert "FLAGGED" in result.line()
    # the export carries what the report knows (issue 17): status, flags, and the gradebook's mark
    row = next(r for r in gbk.read_csv(run.out / "grades.csv") if r["student_id"] == student)
    assert row["status"] == "graded+flagged", row
    assert row["flags"] == "; ".join(result.flags), (row["flags"], result.flags)
    assert student in gbk.flagged(f"sqlite:///{run.out / 'gradebook.db'}", A1, [student])


def test_honest_students_are_not_flagged_in_the_export(run):
    rows = {r["student_id"]: r for r in gbk.read_csv(run.out / "grades.csv")}
    for student in HONEST:
        assert rows[student]["status"] == "graded" and rows[student]["flags"] == "", rows[student]
