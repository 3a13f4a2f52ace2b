"""The LMS round trip through the real pipeline: `attnkit grade` on a Canvas download and on a
Moodle download, each with a roster, gives one row per student with the right id, late flag and
penalty, a ``missing`` row for the student who submitted nothing, and the file each LMS imports
back (checked field by field), plus the feedback zip for its bulk upload.

The Canvas download is the committed sample ``autograder/samples/lms/`` (``attnkit demo`` grades
it too); the Moodle one is built here from the a1 samples, to Moodle's folder layout.
"""
from __future__ import annotations

import csv
import subprocess
import sys
import zipfile

import pytest

from autograder.samples import CANVAS, canvas_members, sample_path

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("lms")]
A1 = CANVAS["assignment"]


def _csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return {r["student_id"]: r for r in csv.DictReader(f)}


def _grade(tmp_path, submissions, *extra):
    out = tmp_path / "graded"
    cmd = [sys.executable, "-m", "autograder.cli", "grade", A1, str(submissions), "--out", str(out),
           "--workers", "2", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


def test_canvas_sample_is_up_to_date():
    """The committed zip holds exactly the a1 samples it is made of (``attnkit samples``)."""
    with zipfile.ZipFile(CANVAS["zip"]) as zf:
        got = {info.filename: zf.read(info) for info in zf.infolist()}
    assert got == canvas_members(), "autograder/samples/lms is stale: run `attnkit samples`"
    assert CANVAS["roster"].read_text(encoding="utf-8") == CANVAS["roster_csv"]


@pytest.fixture(scope="module")
def canvas_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("canvas")
    return _grade(tmp, CANVAS["zip"], "--roster", str(CANVAS["roster"]), "--due", CANVAS["due"],
                  "--late-penalty", CANVAS["late_penalty"], "--lms-title", CANVAS["title"],
                  "--lms-assignment-id", CANVAS["assignment_id"])


def test_canvas_grades(canvas_run):
    out, stdout = canvas_run
    rows = _rows(out / "grades.csv")
    assert {s: (float(r["score"]), r["status"]) for s, r in rows.items()} == \
        {s: (pytest.approx(score), status) for s, (score, status) in CANVAS["expected"].items()}
    late = rows["angstromzoe_4822"]
    # the LATE file, time unknown: stamped 1 s after the due date; 10 % of 12 off for one day
    assert (late["duedate"], late["timestamp"]) == ("2026-11-20 17:00:00", "2026-11-20 17:00:01")
    assert (float(late["raw_score"]), float(late["late_submission_penalty"])) == (12.0, 1.2)
    assert "graded the latest, a1_attention_basics-2.ipynb" in late["notes"]
    assert "late by 1 s: -1.2 points" in late["notes"]
    on_time = rows["obrienzoe_4821"]
    assert (on_time["timestamp"], float(on_time["late_submission_penalty"])) == ("", 0.0)
    # names and emails from the roster reach nbgrader's student rows
    assert (on_time["first_name"], on_time["last_name"], on_time["email"]) == \
        ("Zoë", "O'Brien", "zoe.obrien@example.edu")
    assert rows["nguyenminh_4824"]["notes"] == "on the roster, nothing in the Canvas export"
    # the stray file is reported, not graded as a student
    assert "unmatched file in the canvas export: README.txt" in stdout
    assert "README.txt" in (out / "report.md").read_text(encoding="utf-8")


def test_canvas_import_file(canvas_run):
    """Canvas's gradebook import: header, the Points Possible row, one row per student by
    Canvas user id with the roster's SIS ids and section, scores after the late penalty."""
    out, _ = canvas_run
    table = _csv(out / "lms" / "canvas_grades.csv")
    assert table[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section",
                        "A1: attention basics (3301)"]
    assert table[1] == ["    Points Possible", "", "", "", "", "12"]
    assert sorted(table[2:]) == sorted([
        ["Zoë Ångström", "4822", "S1002", "zangstrom", "Section A", "10.8"],
        ["Jordan Lee", "4823", "S1003", "jlee", "Section B", "7"],
        ["Minh Nguyen", "4824", "S1004", "mnguyen", "Section B", "0"],
        ["Zoë O'Brien", "4821", "S1001", "zobrien", "Section A", "12"],
    ])


def test_canvas_feedback_zip(canvas_run):
    """Re-upload names: the login, user id and id of the graded file, then the page's name;
    each file is that student's own feedback page."""
    out, _ = canvas_run
    with zipfile.ZipFile(out / "lms" / "feedback.zip") as zf:
        names = sorted(zf.namelist())
        assert names == sorted(["ångströmzoë_4822_99022_a1_attention_basics.html",
                                "leejordan_4823_99030_a1_attention_basics.html",
                                "obrienzoë_4821_99012_a1_attention_basics.html"])
        page = zf.read("leejordan_4823_99030_a1_attention_basics.html")
    assert page == (out / "feedback" / "leejordan_4823" / f"{A1}.html").read_bytes()


def test_regrading_keeps_everyone(canvas_run, tmp_path):
    """A second run on the same folder keeps every grade (the timestamps are part of the hash)."""
    out, _ = canvas_run
    proc = subprocess.run([sys.executable, "-m", "autograder.cli", "grade", A1, str(CANVAS["zip"]),
                           "--out", str(out), "--roster", str(CANVAS["roster"]), "--due", CANVAS["due"],
                           "--late-penalty", CANVAS["late_penalty"], "--lms-title", CANVAS["title"],
                           "--lms-assignment-id", CANVAS["assignment_id"]],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("unchanged, kept") == 3, proc.stdout
    assert {s: float(r["score"]) for s, r in _rows(out / "grades.csv").items()} == \
        pytest.approx({s: v[0] for s, v in CANVAS["expected"].items()})


def test_moodle_round_trip(tmp_path):
    """A Moodle download (folders per participant; odd names), a roster with a student who
    submitted nothing, and Moodle's grading worksheet and feedback zip back."""
    subs = tmp_path / "moodle"
    for folder, student in [("Zoë O'Brien_12345_assignsubmission_file", "full"),
                            ("Jean-Luc Picard_12346_assignsubmission_file", "blank")]:
        (subs / folder).mkdir(parents=True)
        (subs / folder / f"{A1}.ipynb").write_bytes(sample_path(A1, student).read_bytes())
    (subs / "Jean-Luc Picard_12346_assignsubmission_onlinetext").mkdir()
    (subs / "Jean-Luc Picard_12346_assignsubmission_onlinetext" / "onlinetext.html").write_text("<p>hi</p>")
    roster = tmp_path / "roster.csv"
    # Moodle's own grading worksheet as the roster: its submission times, in the zone of the
    # teacher who downloaded it (Paris: 19:30 there is 18:30 UTC, 1 h 30 min after the due date)
    roster.write_text("Identifier,Full name,Email address,Status,Last modified (submission)\n"
                      "Participant 12345,Zoë O'Brien,zoe@example.edu,Submitted for grading,"
                      "\"Friday, 20 November 2026, 7:30 PM\"\n"
                      "Participant 12346,Jean-Luc Picard,jlp@example.edu,Submitted for grading,"
                      "\"Friday, 20 November 2026, 9:05 AM\"\n"
                      "Participant 12347,Ana María López,ana@example.edu,No submission,-\n",
                      encoding="utf-8")
    out, _ = _grade(tmp_path, subs, "--roster", str(roster), "--lms-timezone", "Europe/Paris",
                    "--due", "2026-11-20 17:00 UTC", "--late-penalty", "10%/day")
    rows = _rows(out / "grades.csv")
    assert {s: (float(r["score"]), r["status"]) for s, r in rows.items()} == {
        "zoe_obrien_12345": (pytest.approx(10.8), "graded"), "jean_luc_picard_12346": (0.0, "graded"),
        "ana_maria_lopez_12347": (0.0, "missing")}
    zoe = rows["zoe_obrien_12345"]
    assert (zoe["timestamp"], float(zoe["late_submission_penalty"])) == ("2026-11-20 18:30:00", 1.2)
    assert "late by 1 h 30 min: -1.2 points" in zoe["notes"]
    assert rows["jean_luc_picard_12346"]["timestamp"] == "2026-11-20 08:05:00"
    sheet = _csv(out / "lms" / "moodle_grades.csv")
    assert sheet[0] == ["Identifier", "Full name", "Email address", "Status", "Grade", "Maximum Grade",
                        "Grade can be changed", "Last modified (submission)", "Last modified (grade)",
                        "Feedback comments"]
    by_id = {r[0]: r for r in sheet[1:]}
    assert sorted(by_id) == ["Participant 12345", "Participant 12346", "Participant 12347"]
    assert by_id["Participant 12345"][1:8] == ["Zoë O'Brien", "zoe@example.edu",
                                               "Submitted for grading (late)", "10.80", "12.00", "Yes",
                                               "2026-11-20T18:30:00+00:00"]
    assert by_id["Participant 12346"][3:5] == ["Submitted for grading", "0.00"]
    assert by_id["Participant 12347"][3:5] == ["No submission", "0.00"]
    with zipfile.ZipFile(out / "lms" / "feedback.zip") as zf:
        assert sorted(zf.namelist()) == [
            f"Jean-Luc Picard_12346_assignsubmission_file_/{A1}.html",
            f"Zoë O'Brien_12345_assignsubmission_file_/{A1}.html"]
