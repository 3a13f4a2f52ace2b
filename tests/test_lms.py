"""LMS exports in, LMS imports out: Canvas and Moodle layouts, roster, CSVs, feedback zips.

The archives are built here to the layouts the LMS source code writes (see autograder/lms.py).
"""
from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import nbformat
import pytest

from autograder import lms
from autograder.submissions import collect, collect_all

ASSIGNMENT = "a1_attention_basics"
NB = nbformat.writes(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]))


def _zip(path: Path, members: dict[str, str], times: dict[str, tuple] | None = None) -> Path:
    """A zip of ``members`` (name -> text), with member times from ``times`` (default 2025-02-01)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in members.items():
            info = zipfile.ZipInfo(name, (times or {}).get(name, (2025, 2, 1, 12, 0, 0)))
            zf.writestr(info, text)
    return path


CANVAS = {
    "obrienzoe_4821_99012_a1_attention_basics.ipynb": NB,
    # Zoë Ångström: sortable name "Ångström, Zoë" -> login "ångströmzoë"; late; three uploads
    "ångströmzoë_LATE_4822_99020_a1_attention_basics.ipynb": NB,
    "ångströmzoë_LATE_4822_99021_a1_attention_basics-1.ipynb": NB,
    "ångströmzoë_LATE_4822_99022_a1_attention_basics-2.ipynb": NB,
    "lee_4823_text.html": "<p>my answer is in the text box</p>",
    "LATE_anon_Xy7Qp_99030_a1_attention_basics.ipynb": NB,
    "README.txt": "downloaded from Canvas",
    "notes.ipynb": NB,
}


def test_canvas_export_by_student(tmp_path):
    got = collect_all(_zip(tmp_path / "subs.zip", CANVAS), ASSIGNMENT, tmp_path / "scratch")
    assert got.layout == "canvas"
    subs = {s.student: s for s in got.submissions}
    assert sorted(subs) == ["angstromzoe_4822", "anon_xy7qp", "lee_4823", "obrienzoe_4821"]

    zoe = subs["obrienzoe_4821"]
    assert (zoe.problem, zoe.late, zoe.timestamp, zoe.note) == (None, False, None, "")
    assert zoe.notebook.name == "obrienzoe_4821_99012_a1_attention_basics.ipynb"
    assert zoe.lms == {"lms": "canvas", "user_id": "4821", "login": "obrienzoe",
                       "attachment_id": "99012", "file_time": "2025-02-01T12:00:00Z"}

    ang = subs["angstromzoe_4822"]
    assert ang.late is True and ang.problem is None and ang.name == "ångströmzoë"
    assert ang.notebook.name.endswith("-2.ipynb") and ang.lms["attachment_id"] == "99022"
    assert ang.note == ("3 notebooks (a1_attention_basics.ipynb, a1_attention_basics-1.ipynb, "
                        "a1_attention_basics-2.ipynb); graded the latest, a1_attention_basics-2.ipynb")

    assert subs["lee_4823"].problem == "no notebook (.ipynb) found"
    assert subs["lee_4823"].notebook is None and subs["lee_4823"].note == "submitted lee_4823_text.html"
    anon = subs["anon_xy7qp"]
    assert anon.late and anon.lms == {"lms": "canvas", "anonymous_id": "Xy7Qp", "attachment_id": "99030",
                                      "file_time": "2025-02-01T12:00:00Z"}
    assert got.unmatched == [
        "README.txt (not a Canvas submission name: {login}_{user id}_{file id}_{file name})",
        "notes.ipynb (not a Canvas submission name: {login}_{user id}_{file id}_{file name})"]
    assert [s.student for s in collect(tmp_path / "subs.zip", ASSIGNMENT, tmp_path / "s2")] == sorted(subs)


def test_latest_upload_by_member_time_when_names_tie(tmp_path):
    members = {"kimjo_7_1_a1_attention_basics.ipynb": NB, "kimjo_7_2_work.ipynb": NB,
               "parkmin_8_3_a1_attention_basics.ipynb": NB}
    times = {"kimjo_7_1_a1_attention_basics.ipynb": (2025, 1, 1, 0, 0, 0),
             "kimjo_7_2_work.ipynb": (2025, 3, 1, 0, 0, 0)}
    got = collect_all(_zip(tmp_path / "c.zip", members, times), ASSIGNMENT, tmp_path / "s")
    kim = got.submissions[0]
    # the assignment's name wins over a later unrelated notebook
    assert kim.notebook.name == "kimjo_7_1_a1_attention_basics.ipynb"
    assert kim.lms["file_time"] == "2025-01-01T00:00:00Z"
    assert lms.pick_latest(["a1.ipynb", "a1.ipynb"], "a1", [5.0, 9.0]) == 1


MOODLE_41 = "Zoë O'Brien_12345_assignsubmission_file"
MOODLE_OLD = "Zoë Ångström_12346_assignsubmission_file_"


def test_moodle_export_by_student(tmp_path):
    members = {
        f"{MOODLE_41}/a1_attention_basics.ipynb": NB,
        f"{MOODLE_OLD}/a1_attention_basics.ipynb": NB,
        f"{MOODLE_OLD}/scratch/old.ipynb": NB,
        "Jean-Luc Picard_12347_assignsubmission_onlinetext/onlinetext.html": "<p>text</p>",
        "Participant_12348_assignsubmission_file_a1_attention_basics.ipynb": NB,  # flat, blind marking
        "notes.ipynb": NB,
    }
    got = collect_all(_zip(tmp_path / "m.zip", {f"COURSE-A1-42/{k}": v for k, v in members.items()}),
                      ASSIGNMENT, tmp_path / "scratch")
    assert got.layout == "moodle"
    subs = {s.student: s for s in got.submissions}
    assert sorted(subs) == ["jean_luc_picard_12347", "participant_12348", "zoe_angstrom_12346",
                            "zoe_obrien_12345"]
    zoe = subs["zoe_obrien_12345"]
    assert (zoe.name, zoe.late, zoe.timestamp, zoe.problem) == ("Zoë O'Brien", False, None, None)
    assert zoe.lms == {"lms": "moodle", "participant": "12345", "full_name": "Zoë O'Brien",
                       "file_time": "2025-02-01T12:00:00Z"}
    ang = subs["zoe_angstrom_12346"]
    assert ang.notebook.name == "a1_attention_basics.ipynb" and ang.notebook.parent.name == MOODLE_OLD
    assert ang.note == ("2 notebooks (a1_attention_basics.ipynb, scratch/old.ipynb); "
                        "graded the latest, a1_attention_basics.ipynb")
    assert subs["jean_luc_picard_12347"].problem == "no notebook (.ipynb) found"
    assert subs["participant_12348"].notebook.name.endswith("_file_a1_attention_basics.ipynb")
    assert got.unmatched == ["notes.ipynb (not in a Moodle submission folder: "
                             "Full Name_{participant}_assignsubmission_file)"]


def test_single_moodle_folder_is_not_stepped_into(tmp_path):
    folder = tmp_path / "subs" / MOODLE_41
    folder.mkdir(parents=True)
    (folder / "a1_attention_basics.ipynb").write_text(NB)
    (folder / "draft.ipynb").write_text(NB)
    got = collect_all(tmp_path / "subs", ASSIGNMENT, tmp_path / "s")
    assert got.layout == "moodle" and [s.student for s in got.submissions] == ["zoe_obrien_12345"]


def test_plain_folders_are_not_misread(tmp_path):
    root = tmp_path / "subs"
    for name in ["alice", "bob_2", "carol_12_assignment"]:
        (root / name).mkdir(parents=True)
        (root / name / "a1_attention_basics.ipynb").write_text(NB)
    (root / "dave.ipynb").write_text(NB)
    (root / "smith_1_2_x.ipynb").write_text(NB)  # one Canvas-looking name is not a majority
    got = collect_all(root, ASSIGNMENT, tmp_path / "s")
    assert got.layout == "folders" and got.unmatched == []
    assert [s.student for s in got.submissions] == ["alice", "bob_2", "carol_12_assignment", "dave",
                                                    "smith_1_2_x"]
    assert all(s.lms == {} and s.late is False and s.timestamp is None for s in got.submissions)


@pytest.mark.parametrize("name, expected", [
    ("obrienzoe_4821_99012_a1.ipynb", ("obrienzoe", "4821", "99012", "a1.ipynb", False, "")),
    ("obrienzoe_late_4821_99012_my_a1-3.ipynb", ("obrienzoe", "4821", "99012", "my_a1-3.ipynb", True, "")),
    ("LATE_anon_Ab3dE_5_a1.ipynb", ("", "", "5", "a1.ipynb", True, "Ab3dE")),
    ("obrienzoe_4821_link.html", ("obrienzoe", "4821", "", "", False, "")),
    ("alice.ipynb", None), ("alice_1_x.ipynb", None),
])
def test_parse_canvas(name, expected):
    c = lms.parse_canvas(name)
    assert (c and (c.login, c.user_id, c.attachment_id, c.filename, c.late, c.anonymous_id)) == expected


def test_ids_and_folding():
    assert lms.student_key("Zoë O'Brien", 12345) == "zoe_obrien_12345"
    assert lms.student_key("Łukasz Straße-Ørsted", "7") == "lukasz_strasse_orsted_7"
    assert lms.canvas_login("O'Brien, Zoë") == "obrienzoë"
    assert lms.parse_moodle("Zoë O'Brien_12345_assignsubmission_file_").student == "zoe_obrien_12345"
    assert lms.parse_moodle("alice") is None and lms.parse_moodle("bob_12") is None


def _roster(tmp_path: Path, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / "roster.csv"
    path.write_bytes(text.encode(encoding))
    return path


def test_roster_match_and_missing(tmp_path):
    path = _roster(tmp_path, "user_id,last_name,first_name,email,section\n"
                             "4821,O'Brien,Zoë,zoe@x.edu,A\n4822,Ångström,Zoë,za@x.edu,A\n"
                             '4900,"Nakamura, Jr.",Ken,ken@x.edu,B\n')
    roster = lms.read_roster(path)
    assert [e.login for e in roster.entries] == ["obrienzoë", "ångströmzoë", "nakamurajrken"]
    subs = collect(_zip(tmp_path / "c.zip", CANVAS), ASSIGNMENT, tmp_path / "s")
    match = lms.match_roster(roster, subs)
    assert {k: v.email for k, v in match.matched.items()} == {"obrienzoe_4821": "zoe@x.edu",
                                                              "angstromzoe_4822": "za@x.edu"}
    assert [(e.student, e.name) for e in match.missing] == [("nakamurajrken_4900", "Ken Nakamura, Jr.")]
    assert match.not_on_roster == ["anon_xy7qp", "lee_4823"]
    lms.apply_roster(subs, match)
    zoe = next(s for s in subs if s.student == "obrienzoe_4821")
    assert zoe.name == "Zoë O'Brien" and zoe.lms["email"] == "zoe@x.edu" and zoe.lms["section"] == "A"


@pytest.mark.parametrize("text, encoding, message", [
    ("name,email\nZoë,z@x\n", "utf-8", "roster.csv has no id column (one of lms_id, id, user_id"),
    ("id,name\n1,A\n2,B\n1,C\n", "utf-8", "roster.csv line 4: id 1 is already on line 2"),
    ("id,name\n1,Zoë\n", "utf-16", "roster.csv is not UTF-8 text"),
    ("id,name\n,Zoë\n", "utf-8", "roster.csv line 2: the id column (id) is empty"),
])
def test_roster_errors(tmp_path, text, encoding, message):
    with pytest.raises(lms.RosterError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        lms.read_roster(_roster(tmp_path, text, encoding))


def test_canvas_gradebook_export_works_as_a_roster(tmp_path):
    path = _roster(tmp_path, "Student,ID,SIS User ID,SIS Login ID,Section,A1 (77)\n"
                             "    Points Possible,,,,,10\n\"O'Brien, Zoë\",4821,S1,zob,Sec 1,\n",
                   "utf-8-sig")
    (entry,) = lms.read_roster(path).entries
    assert (entry.lms_id, entry.name, entry.login, entry.sis_user_id, entry.section) == \
        ("4821", "Zoë O'Brien", "obrienzoë", "S1", "Sec 1")


def _rows(tmp_path: Path) -> list[dict]:
    (tmp_path / "fb").mkdir(exist_ok=True)
    html = tmp_path / "fb" / "a1_attention_basics.html"
    html.write_text("<html>feedback</html>")
    return [
        {"student": "obrienzoe_4821", "name": "O'Brien, Zoë", "email": "zoe@x.edu", "score": 7.5,
         "max_score": 10, "status": "graded", "late": False, "timestamp": None, "feedback": html,
         "lms": {"lms": "canvas", "user_id": "4821", "login": "obrienzoe", "attachment_id": "99012",
                 "sis_user_id": "S1", "section": "Sec, 1"}},
        {"student": "angstromzoe_4822", "name": "Ångström, Zoë", "email": "", "score": 9.0,
         "max_score": 10, "status": "graded", "late": True, "timestamp": "2025-02-03T14:15:00Z",
         "feedback": html, "lms": {"lms": "canvas", "user_id": "4822", "login": "ångströmzoë",
                                   "attachment_id": "99022"}},
        {"student": "nakamurajrken_4900", "name": "Nakamura, Jr., Ken", "email": "ken@x.edu", "score": None,
         "max_score": 10, "status": "missing", "late": False, "timestamp": None, "feedback": None,
         "lms_id": "4900", "lms": {}},
        {"student": "anon_xy7qp", "name": "", "score": 5, "max_score": 10, "status": "graded",
         "feedback": html, "lms": {"lms": "canvas", "anonymous_id": "Xy7Qp", "attachment_id": "99030"}},
    ]


def test_canvas_csv(tmp_path):
    left = lms.write_canvas_csv(tmp_path / "g.csv", _rows(tmp_path), assignment_title="A1, attention",
                                canvas_assignment_id=77)
    assert left == ["anon_xy7qp: anonymous submission, Canvas could not match the row"]
    text = (tmp_path / "g.csv").read_text(encoding="utf-8")
    assert not text.startswith("\ufeff")
    assert text.splitlines()[0] == 'Student,ID,SIS User ID,SIS Login ID,Section,"A1, attention (77)"'
    with open(tmp_path / "g.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows == [
        ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "A1, attention (77)"],
        ["    Points Possible", "", "", "", "", "10"],
        ["O'Brien, Zoë", "4821", "S1", "", "Sec, 1", "7.5"],
        ["Ångström, Zoë", "4822", "", "", "", "9"],
        ["Nakamura, Jr., Ken", "4900", "", "", "", "0"],
    ]
    lms.write_canvas_csv(tmp_path / "b.csv", _rows(tmp_path)[:3], assignment_title="A1", bom=True,
                         missing_as_zero=False)
    assert (tmp_path / "b.csv").read_bytes().startswith(b"\xef\xbb\xbfStudent,ID")
    with open(tmp_path / "b.csv", newline="", encoding="utf-8-sig") as f:
        assert list(csv.reader(f))[-1] == ["Nakamura, Jr., Ken", "4900", "", "", "", ""]


def test_moodle_worksheet(tmp_path):
    rows = _rows(tmp_path)
    rows[0]["lms"] = {"lms": "moodle", "participant": "12345", "full_name": "Zoë O'Brien"}
    rows[1]["lms"] = {"lms": "moodle", "participant": "12346", "full_name": "Zoë Ångström"}
    rows[0]["comment"] = 'Good work, "mostly"'
    left = lms.write_moodle_worksheet(tmp_path / "w.csv", rows, graded_at="2025-02-10T09:00:00Z")
    assert left == ["anon_xy7qp: no Moodle participant id, Moodle could not match the row"]
    with open(tmp_path / "w.csv", newline="", encoding="utf-8") as f:
        got = list(csv.reader(f))
    assert got[0] == ["Identifier", "Full name", "Email address", "Status", "Grade", "Maximum Grade",
                      "Grade can be changed", "Last modified (submission)", "Last modified (grade)",
                      "Feedback comments"]
    graded = "2025-02-10T09:00:00+00:00"
    assert got[1:] == [
        ["Participant 12345", "Zoë O'Brien", "zoe@x.edu", "Submitted for grading", "7.50", "10.00", "Yes",
         "-", graded, 'Good work, "mostly"'],
        ["Participant 12346", "Zoë Ångström", "", "Submitted for grading (late)", "9.00", "10.00", "Yes",
         "2025-02-03T14:15:00+00:00", graded, ""],
        ["Participant 4900", "Nakamura, Jr., Ken", "ken@x.edu", "No submission", "0.00", "10.00", "Yes",
         "-", graded, ""],
    ]


def test_feedback_bundles(tmp_path):
    rows = _rows(tmp_path)
    left = lms.feedback_bundle(tmp_path / "canvas.zip", rows, lms="canvas")
    assert left == ["anon_xy7qp: anonymous Canvas submission (re-upload matches by user id)"]
    with zipfile.ZipFile(tmp_path / "canvas.zip") as zf:
        assert zf.namelist() == ["obrienzoe_4821_99012_a1_attention_basics.html",
                                 "ångströmzoë_4822_99022_a1_attention_basics.html"]
        assert zf.read(zf.namelist()[0]) == b"<html>feedback</html>"
    # Canvas reads the first two all-digit '_' tokens as user id and file id
    for name in zipfile.ZipFile(tmp_path / "canvas.zip").namelist():
        assert [t for t in name.split("_") if t.isdigit()][:2] == \
            [lms.parse_canvas(name).user_id, lms.parse_canvas(name).attachment_id]

    rows[0]["lms"] = {"lms": "moodle", "participant": "12345", "full_name": "Zoë O'Brien"}
    rows[1]["lms"] = {"lms": "moodle", "participant": "12346", "full_name": "Zoë_Ångström"}
    left = lms.feedback_bundle(tmp_path / "moodle.zip", rows, lms="moodle")
    assert left == ["anon_xy7qp: no Moodle participant id (not in the Moodle download)"]
    with zipfile.ZipFile(tmp_path / "moodle.zip") as zf:
        names = zf.namelist()
    assert names == ["Zoë O'Brien_12345_assignsubmission_file_/a1_attention_basics.html",
                     "Zoë Ångström_12346_assignsubmission_file_/a1_attention_basics.html"]
    # what Moodle's importer does: explode('_', first folder, 5) -> name, id, subtype, type
    assert [n.split("/")[0].split("_", 4)[1:4] for n in names] == \
        [["12345", "assignsubmission", "file"], ["12346", "assignsubmission", "file"]]


def test_moodle_worksheet_works_as_a_roster(tmp_path):
    """Moodle's grading worksheet: participant ids, names, emails and the submission times as
    Moodle writes them ("-" for none), left as text for late.parse_lms_time."""
    path = tmp_path / "worksheet.csv"
    path.write_text("Identifier,Full name,Email address,Status,Grade,Maximum Grade,"
                    "Grade can be changed,Last modified (submission),Last modified (grade),Feedback comments\n"
                    "Participant 12345,Zoë O'Brien,zoe@example.edu,Submitted for grading,,12.00,Yes,"
                    "\"Friday, 20 November 2026, 7:30 PM\",-,\n"
                    "Participant 12347,Ana María López,ana@example.edu,No submission,,12.00,Yes,-,-,\n",
                    encoding="utf-8")
    entries = lms.read_roster(path).entries
    assert [(e.lms_id, e.name, e.email, e.submitted) for e in entries] == [
        ("12345", "Zoë O'Brien", "zoe@example.edu", "Friday, 20 November 2026, 7:30 PM"),
        ("12347", "Ana María López", "ana@example.edu", "-")]
    assert [e.student for e in entries] == ["zoe_obrien_12345", "ana_maria_lopez_12347"]
