"""What Canvas and Moodle export, and what they import back: file names, ids, CSVs, zips.

This module knows the formats only; it touches no notebook and imports nothing else of the
kit (``submissions.collect_all`` walks the folders and asks it what each name means).

Layouts recognised in a submissions folder (after ``collect_all`` has unzipped the class zip
and stepped into a single wrapper folder)::

    Canvas  "Download Submissions": one flat folder, one file per uploaded file,
        obrienzoe_4821_99012_a1.ipynb           {login}_{user id}_{attachment id}_{file name}
        angstromzoe_LATE_4822_99013_a1-2.ipynb   a late submission ("LATE"; older Canvas: "late")
        LATE_anon_Xy7Qp_99014_a1.ipynb           anonymous grading: anon_{anonymous id}, no login
        obrienzoe_4821_text.html                 a text entry ("_link.html" for a URL): no file id
      ``login`` is the sortable name "O'Brien, Zoë" lower-cased with every non-word character
      removed ("obrienzoë": accents stay, apostrophes, commas and spaces go). Canvas renames a
      file uploaded again under the same name to ``a1-1.ipynb``, ``a1-2.ipynb``, ... The third
      number is the *attachment* (file) id, not a submission id: Canvas's "Re-upload
      submissions" reads the first two all-digit ``_``-separated tokens as user id and
      attachment id and accepts the file only if that attachment belongs to the student's
      submission, so feedback files must carry the ids of a file the student handed in.
    Moodle  "Download all submissions" (submissions in folders, the default since Moodle 3.1):
        Zoë O'Brien_12345_assignsubmission_file/a1.ipynb      Moodle 4.1+
        Zoë O'Brien_12345_assignsubmission_file_/a1.ipynb     Moodle 3.1-4.0 (trailing "_")
        Zoë O'Brien_12345_assignsubmission_onlinetext/onlinetext.html   (no notebook)
        Zoë O'Brien_12345_assignsubmission_file_a1.ipynb      "download as folders" switched off
      ``12345`` is the assignment's participant id (the "Participant 12345" of the grading
      worksheet), not the Moodle user id; "_" in a full name becomes a space, so the first "_"
      ends the name. Blind marking writes "Participant_12345_..."; team submissions write the
      group name and group id in the same places.
    Anything else is the kit's own layout: one folder (or notebook, or zip) per student.

The layout is the one a strict majority of the top-level entries follow (Moodle folders need
"_assignsubmission_" in their name, Canvas files two numeric ids), so a folder of ``alice/``,
``bob/`` is never read as an LMS export; in an LMS-shaped folder every file that follows no
pattern is reported as unmatched instead of becoming a student.

Kit student ids (nbgrader ids, they become paths): ``{slug}_{lms id}``, where ``slug`` is the
Canvas login or the Moodle full name folded to ASCII (``unicodedata`` NFKD, accents dropped,
apostrophes dropped, every other run of non-alphanumerics one ``_``), lower case. Examples:
Canvas "obrienzoe", user 4821 -> ``obrienzoe_4821``; Moodle "Zoë O'Brien", participant 12345
-> ``zoe_obrien_12345``; anonymous Canvas -> ``anon_xy7qp``. The LMS id keeps it unique, the
name keeps it readable; a roster's ``student_id`` column, when given, wins (``apply_roster``).

Late: Canvas marks late submissions in the file name ("LATE_" before the user id); Moodle's
download does not say, so Moodle submissions are never flagged late here: its grading worksheet,
given as the roster, has each submission time ("Last modified (submission)", ``RosterEntry
.submitted``), which ``roundtrip`` turns into the submission's time for nbgrader. Several notebooks
from one student: the highest ``-N`` suffix wins, then the latest zip member time, then the
name; the note says which was graded. Neither LMS stamps the submission time on zip members
(Canvas's rubyzip and Moodle's ZipStream both write the export time), so ``timestamp`` stays
None and the member time is kept as ``lms["file_time"]`` for information only.

Back to the LMS:
    ``write_canvas_csv``       Gradebook -> Import: ``Student,ID,SIS User ID,SIS Login ID,
                               Section,<Title> (<assignment id>)`` and a "Points Possible" row;
                               students are matched by ID (Canvas user id), then SIS ids, then
                               name. A blank cell is "no change" for Canvas, so a missing
                               student gets 0 (``missing_as_zero``) to record the zero.
    ``write_moodle_worksheet`` Assignment -> "Upload grading worksheet": Moodle reads only
                               "Identifier" ("Participant 12345"), "Grade", "Last modified
                               (grade)" and the feedback columns ("Feedback comments").
    ``feedback_bundle``        Canvas "Re-upload submissions" zip / Moodle "Upload multiple
                               feedback files in a zip" (needs "File feedback" enabled).
CSV files are UTF-8 without a byte-order mark (both importers read UTF-8; pass ``bom=True``
for a file meant to be opened in Excel first: Canvas's header test and Moodle's CSV reader
tolerate it).

Sources: the LMS source code (what their help pages "How do I import grades in the
Gradebook?", "How do I upload a file to multiple student submissions?", Moodle's "Offline
grading worksheet" and "Upload multiple feedback files in a zip" describe), read at
    https://github.com/instructure/canvas-lms  lib/content_zipper.rb (get_filename,
        sanitize_user_name, add_upload_submission), app/models/assignment.rb
        (infer_comment_context_from_filename), app/models/gradebook_importer.rb (header row,
        "Points Possible" row, matching students by ID, SIS ids, then name; blank = no change)
    https://github.com/moodle/moodle  mod/assign/classes/downloader.php (get_student_prefix,
        folder names), mod/assign/gradingtable.php and lang/en/assign.php (worksheet columns),
        mod/assign/feedback/offline/importgradeslib.php (what the worksheet import reads),
        mod/assign/feedback/file/importziplib.php (is_valid_filename_for_import),
        lib/classes/local/archive_writer/zip_writer.php (member times: the current time)
"""
from __future__ import annotations

import csv
import re
import unicodedata
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

LAYOUTS = ("canvas", "moodle", "folders")

# ---------------------------------------------------------------------------- names -> ids

_CANVAS_FILE = re.compile(r"^(?P<login>.+?)_(?:(?P<late>late)_)?(?P<user>\d+)_(?P<att>\d+)_(?P<file>.+)$",
                          re.I | re.S)
_CANVAS_ANON = re.compile(r"^(?:(?P<late>late)_)?anon_(?P<anon>[A-Za-z0-9]+)_(?P<att>\d+)_(?P<file>.+)$",
                          re.I | re.S)
_CANVAS_TEXT = re.compile(r"^(?:(?P<login>.+?)_)?(?:(?P<late>late)_)?(?:anon_(?P<anon>[A-Za-z0-9]+)|"
                          r"(?P<user>\d+))_(?P<kind>text|link)\.html$", re.I | re.S)
_MOODLE = re.compile(r"^(?P<name>[^_/]+)_(?P<pid>\d+)_(?P<plugin>assign(?:submission|feedback)_[a-z0-9]+)"
                     r"(?:_(?P<rest>.*))?$", re.S)
_SUFFIX = re.compile(r"^(?P<base>.*?)-(?P<n>\d+)$")
_SPECIAL = str.maketrans({"ß": "ss", "ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE",
                          "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "þ": "th", "Þ": "TH", "ı": "i"})


def slug(text: str) -> str:
    """``text`` folded to lower-case ASCII words joined by '_': "Zoë O'Brien" -> "zoe_obrien"."""
    text = unicodedata.normalize("NFKD", text.translate(_SPECIAL))
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = re.sub(r"['’ʼ`´]", "", text)
    return re.sub(r"[^a-z0-9]+", "_", text).strip("_")


def student_key(name: str, lms_id: str | int) -> str:
    """The kit student id for an LMS person: ``{slug(name)}_{lms_id}`` (see the module docstring)."""
    lms_id = slug(str(lms_id))
    return "_".join(filter(None, [slug(name), lms_id])) or "student"


def canvas_login(sortable_name: str) -> str:
    """The token Canvas puts in file names for a sortable name ("O'Brien, Zoë" -> "obrienzoë")."""
    name = re.sub(r"_(\d+)_", r"\1", sortable_name).lower()
    return re.sub(r"[^\w]", "", name)


@dataclass
class CanvasName:
    """What a Canvas download file name says."""

    login: str            # lower-case last+first, '' for anonymous submissions
    user_id: str          # '' for anonymous submissions
    attachment_id: str    # '' for text and URL entries
    filename: str         # the student's file name as Canvas stored it ('' for text entries)
    late: bool = False
    anonymous_id: str = ""

    @property
    def student(self) -> str:
        return f"anon_{slug(self.anonymous_id)}" if self.anonymous_id else student_key(self.login, self.user_id)


def parse_canvas(name: str) -> CanvasName | None:
    """Read a Canvas submission file name (see the module docstring), or None."""
    if m := _CANVAS_ANON.match(name):
        return CanvasName("", "", m["att"], m["file"], bool(m["late"]), m["anon"])
    if m := _CANVAS_FILE.match(name):
        return CanvasName(m["login"], m["user"], m["att"], m["file"], bool(m["late"]))
    if (m := _CANVAS_TEXT.match(name)) and (m["anon"] or m["login"]):
        return CanvasName(m["login"] or "", m["user"] or "", "", "", bool(m["late"]), m["anon"] or "")
    return None


@dataclass
class MoodleName:
    """What a Moodle download folder (or flat file) name says."""

    full_name: str        # "Zoë O'Brien" ("Participant" under blind marking)
    participant: str      # the assignment's participant id
    plugin: str           # "assignsubmission_file", "assignsubmission_onlinetext", ...
    rest: str = ""        # the file name in the flat (not-in-folders) download

    @property
    def student(self) -> str:
        return student_key(self.full_name, self.participant)


def parse_moodle(name: str) -> MoodleName | None:
    """Read the first path component of a Moodle download (see the module docstring), or None."""
    m = _MOODLE.match(name)
    return MoodleName(m["name"].strip(), m["pid"], m["plugin"], m["rest"] or "") if m else None


def detect_layout(entries: list[tuple[str, bool]]) -> str:
    """"canvas", "moodle" or "folders" for the top-level ``(name, is_dir)`` entries of a folder:
    an LMS layout when a strict majority of the entries follow its pattern."""
    n = len(entries)
    moodle = sum(parse_moodle(name) is not None for name, _ in entries)
    canvas = sum(not is_dir and parse_canvas(name) is not None for name, is_dir in entries)
    if n and 2 * moodle > n:
        return "moodle"
    if n and 2 * canvas > n:
        return "canvas"
    return "folders"


@dataclass
class LmsStudent:
    """One student of an LMS export: who they are and which files (relative paths) are theirs."""

    student: str
    name: str
    lms: dict
    late: bool = False
    files: dict[str, dict] = field(default_factory=dict)  # relative path -> what its name said


def recognise(layout: str, paths: list[str]) -> tuple[list[LmsStudent], list[str]]:
    """Group the files (POSIX paths relative to the export root) of a Canvas or Moodle export by
    student: (students sorted by id, one "unmatched" line per file that follows no pattern)."""
    students: dict[str, LmsStudent] = {}
    unmatched: list[str] = []
    for path in sorted(paths):
        first, _, inner = path.partition("/")
        if layout == "canvas":
            c = parse_canvas(first) if not inner else None
            if c is None:
                unmatched.append(f"{path} (not a Canvas submission name: "
                                 "{login}_{user id}_{file id}_{file name})")
                continue
            lms = {"lms": "canvas", "user_id": c.user_id, "login": c.login}
            if c.anonymous_id:
                lms = {"lms": "canvas", "anonymous_id": c.anonymous_id}
            st = students.setdefault(c.student, LmsStudent(c.student, c.login, lms))
            st.late = st.late or c.late
            st.files[path] = {"attachment_id": c.attachment_id, "filename": c.filename}
        elif layout == "moodle":
            m = parse_moodle(first)
            if m is None or (not inner and not m.rest):
                unmatched.append(f"{path} (not in a Moodle submission folder: "
                                 "Full Name_{participant}_assignsubmission_file)")
                continue
            lms = {"lms": "moodle", "participant": m.participant, "full_name": m.full_name}
            st = students.setdefault(m.student, LmsStudent(m.student, m.full_name, lms))
            st.files[path] = {"plugin": m.plugin, "filename": inner or m.rest}
        else:
            raise ValueError(f"recognise: layout must be 'canvas' or 'moodle', got {layout!r}")
    return [students[k] for k in sorted(students)], unmatched


def owner(layout: str, path: str) -> str | None:
    """The kit student id a path of a Canvas/Moodle export belongs to, or None."""
    first = path.replace("\\", "/").split("/")[0]
    parsed = parse_canvas(first) if layout == "canvas" else parse_moodle(first)
    return parsed.student if parsed else None


def pick_latest(names: list[str], assignment: str, mtimes: list[float | None] | None = None) -> int:
    """Index of the notebook to grade among a student's ``names``: among those whose name holds
    ``assignment`` (or all), the highest ``-N`` suffix, then the latest time, then the last name."""
    mtimes = mtimes or [None] * len(names)

    def key(i: int) -> tuple:
        stem = Path(names[i]).stem
        m = _SUFFIX.match(stem)
        return (int(m["n"]) if m else 0, mtimes[i] or 0.0, names[i])

    named = [i for i, n in enumerate(names) if assignment in Path(n).stem] or range(len(names))
    return max(named, key=key)


def iso_utc(seconds: float) -> str:
    """A POSIX time as ISO 8601 UTC text: 2025-02-03T14:15:00Z."""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------- roster

class RosterError(ValueError):
    """A roster CSV that cannot be used (the message is one line a person can act on)."""


_ID_COLUMNS = ("lms_id", "id", "user_id", "canvas_user_id", "participant", "identifier")
_NAME_COLUMNS = ("name", "full_name", "student", "student_name")


@dataclass
class RosterEntry:
    """One person on the roster."""

    lms_id: str
    name: str = ""
    email: str = ""
    student_id: str = ""      # a kit id the instructor pinned (wins over the derived one)
    sis_user_id: str = ""
    sis_login_id: str = ""
    section: str = ""
    login: str = ""           # Canvas file-name token, when the roster gives last and first names
    submitted: str = ""       # the submission time as the LMS wrote it (Moodle's worksheet has it)

    @property
    def student(self) -> str:
        """The kit student id of this person (for those who submitted nothing)."""
        return self.student_id or student_key(self.login or self.name, self.lms_id)


@dataclass
class Roster:
    entries: list[RosterEntry]
    path: Path | None = None


def _column(header: list[str]) -> dict[str, int]:
    return {re.sub(r"[^a-z0-9]+", "_", h.strip().lower()).strip("_"): i for i, h in enumerate(header)}


def read_roster(path: Path) -> Roster:
    """Read a roster CSV with a header row: an id column (``lms_id``, ``id``, ``user_id``,
    ``participant``, ...); optional ``student_id``, ``name`` or ``first_name`` + ``last_name``,
    ``email``, ``sis_user_id``, ``sis_login_id``, ``section``, and the submission time
    (``submitted``, or Moodle's "Last modified (submission)", "-" when there is none).
    A Canvas gradebook export works as is (its "Points Possible" row is skipped)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RosterError(f"{path.name} is not UTF-8 text (byte {exc.start}): save it as "
                          f"'CSV UTF-8' and try again") from None
    except OSError as exc:
        raise RosterError(f"cannot read roster {path}: {exc.strerror or exc}") from None
    rows = [r for r in csv.reader(text.splitlines()) if any(c.strip() for c in r)]
    if not rows:
        raise RosterError(f"{path.name} is empty: expected a header row and one row per student")
    cols = _column(rows[0])
    id_col = next((cols[c] for c in _ID_COLUMNS if c in cols), None)
    if id_col is None:
        raise RosterError(f"{path.name} has no id column (one of {', '.join(_ID_COLUMNS)}); "
                          f"its columns are {', '.join(rows[0])}")

    def get(row: list[str], *names: str) -> str:
        for n in names:
            if n in cols and cols[n] < len(row) and row[cols[n]].strip():
                return row[cols[n]].strip()
        return ""

    entries: list[RosterEntry] = []
    seen: dict[str, int] = {}
    for line, row in enumerate(rows[1:], start=2):
        lms_id = row[id_col].strip() if id_col < len(row) else ""
        lms_id = re.sub(r"^participant\s*", "", lms_id, flags=re.I)
        if not lms_id and "points possible" in " ".join(row).lower():
            continue  # the second row of a Canvas gradebook export
        if not lms_id:
            raise RosterError(f"{path.name} line {line}: the id column ({rows[0][id_col]}) is empty")
        if lms_id in seen:
            raise RosterError(f"{path.name} line {line}: id {lms_id} is already on line {seen[lms_id]} "
                              "(each student once)")
        seen[lms_id] = line
        first, last = get(row, "first_name", "firstname", "given_name"), get(row, "last_name", "lastname",
                                                                              "surname", "family_name")
        name = get(row, *_NAME_COLUMNS)
        sortable = f"{last}, {first}" if last or first else (name if "," in name else "")
        if not name:
            name = " ".join(filter(None, [first, last]))
        elif "," in name and not (first or last):  # "Last, First" as Canvas writes it
            name = " ".join(reversed([p.strip() for p in name.split(",", 1)]))
        entries.append(RosterEntry(lms_id, name, get(row, "email", "email_address", "e_mail"),
                                   get(row, "student_id", "kit_id"), get(row, "sis_user_id"),
                                   get(row, "sis_login_id"), get(row, "section"),
                                   canvas_login(sortable) if sortable else "",
                                   get(row, "last_modified_submission", "submitted", "submitted_at")))
    return Roster(entries, path)


@dataclass
class RosterMatch:
    """Roster against submissions."""

    matched: dict[str, RosterEntry]   # kit student id of a submission -> roster person
    missing: list[RosterEntry]        # on the roster, submitted nothing (graded 0, "missing")
    not_on_roster: list[str]          # kit student ids of submitters the roster does not list


def _lms_id(lms: dict) -> str:
    return str(lms.get("user_id") or lms.get("participant") or "")


def match_roster(roster: Roster, submissions: list) -> RosterMatch:
    """Map each submission (anything with ``.student``, ``.name``, ``.lms``) to a roster person:
    by pinned kit id, then LMS id, then a unique folded name."""
    by_kit = {e.student_id: e for e in roster.entries if e.student_id}
    by_id = {e.lms_id: e for e in roster.entries}
    by_name: dict[str, list[RosterEntry]] = {}
    for e in roster.entries:
        for key in {slug(e.name), slug(e.login)} - {""}:
            by_name.setdefault(key, []).append(e)
    matched: dict[str, RosterEntry] = {}
    taken: set[int] = set()
    for sub in submissions:
        lms = getattr(sub, "lms", {}) or {}
        entry = by_kit.get(sub.student) or by_id.get(_lms_id(lms))
        if entry is None:
            names = by_name.get(slug(getattr(sub, "name", "") or ""), [])
            entry = names[0] if len(names) == 1 else None
        if entry is not None and id(entry) not in taken:
            matched[sub.student] = entry
            taken.add(id(entry))
    missing = [e for e in roster.entries if id(e) not in taken]
    not_on_roster = sorted(s.student for s in submissions if s.student not in matched)
    return RosterMatch(matched, missing, not_on_roster)


def apply_roster(submissions: list, match: RosterMatch) -> None:
    """Give matched submissions the roster's name, email, SIS ids and pinned kit id."""
    for sub in submissions:
        entry = match.matched.get(sub.student)
        if entry is None:
            continue
        sub.name = entry.name or sub.name
        extra = {"email": entry.email, "sis_user_id": entry.sis_user_id,
                 "sis_login_id": entry.sis_login_id, "section": entry.section}
        sub.lms = {**sub.lms, **{k: v for k, v in extra.items() if v}}
        if entry.student_id:
            sub.student = entry.student_id


# ---------------------------------------------------------------------------- export

def _points(x, places: int | None = None) -> str:
    """A score as the LMS wants it: '7', '7.5' (``places`` fixes the decimals: '7.50')."""
    if x is None or x == "":
        return ""
    x = round(float(x), 2)
    if places is not None:
        return f"{x:.{places}f}"
    return f"{x:.2f}".rstrip("0").rstrip(".")


def _open_csv(path: Path, bom: bool):
    return open(path, "w", newline="", encoding="utf-8-sig" if bom else "utf-8")


def write_canvas_csv(path: Path, rows: list[dict], *, assignment_title: str,
                     canvas_assignment_id: str | int | None = None, points_possible: float | None = None,
                     missing_as_zero: bool = True, bom: bool = False) -> list[str]:
    """Write a Canvas Gradebook import CSV; return one line per row left out (and why).

    Columns ``Student,ID,SIS User ID,SIS Login ID,Section,<title> (<id>)`` then a
    "Points Possible" row (the max score). ``ID`` is the Canvas user id (``row["lms"]["user_id"]``
    or ``row["lms_id"]``); Canvas matches on it first, then the SIS ids, then the name.
    """
    column = f"{assignment_title} ({canvas_assignment_id})" if canvas_assignment_id else assignment_title
    if points_possible is None:
        points_possible = max((float(r["max_score"]) for r in rows if r.get("max_score") is not None),
                              default=None)
    left_out: list[str] = []
    with _open_csv(Path(path), bom) as f:
        out = csv.writer(f, quoting=csv.QUOTE_MINIMAL)
        out.writerow(["Student", "ID", "SIS User ID", "SIS Login ID", "Section", column])
        out.writerow(["    Points Possible", "", "", "", "", _points(points_possible)])
        for r in rows:
            lms = r.get("lms") or {}
            user_id = str(lms.get("user_id") or r.get("lms_id") or "")
            sis_user, sis_login = lms.get("sis_user_id", r.get("sis_user_id", "")), \
                lms.get("sis_login_id", r.get("sis_login_id", ""))
            if not (user_id or sis_user or sis_login):
                why = "anonymous submission" if lms.get("anonymous_id") else "no Canvas user id or SIS id"
                left_out.append(f"{r.get('student', '?')}: {why}, Canvas could not match the row")
                continue
            score = r.get("score")
            if r.get("status") == "missing" or score is None:
                score = 0 if missing_as_zero else None
            out.writerow([r.get("name", ""), user_id, sis_user or "", sis_login or "",
                          lms.get("section", r.get("section", "")) or "", _points(score)])
    return left_out


MOODLE_COLUMNS = ["Identifier", "Full name", "Email address", "Status", "Grade", "Maximum Grade",
                  "Grade can be changed", "Last modified (submission)", "Last modified (grade)",
                  "Feedback comments"]


def _moodle_time(iso: str | None) -> str:
    """ISO 8601 with an explicit offset (PHP's strtotime, which the import uses, reads it)."""
    if not iso:
        return "-"
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(timezone.utc).isoformat()


def write_moodle_worksheet(path: Path, rows: list[dict], *, max_grade: float | None = None,
                           graded_at: str | None = None, bom: bool = False) -> list[str]:
    """Write a Moodle offline grading worksheet; return one line per row left out (and why).

    ``graded_at`` (ISO 8601, default now) fills "Last modified (grade)": Moodle skips a row whose
    grade was changed in Moodle more than a minute after it, unless "Allow updating records
    that have been modified more recently in Moodle" is ticked on upload.
    """
    graded_at = _moodle_time(graded_at or iso_utc(datetime.now(timezone.utc).timestamp()))
    left_out: list[str] = []
    with _open_csv(Path(path), bom) as f:
        out = csv.writer(f, quoting=csv.QUOTE_MINIMAL)
        out.writerow(MOODLE_COLUMNS)
        for r in rows:
            lms = r.get("lms") or {}
            participant = str(lms.get("participant") or r.get("lms_id") or "")
            if not participant:
                left_out.append(f"{r.get('student', '?')}: no Moodle participant id, "
                                "Moodle could not match the row")
                continue
            missing = r.get("status") == "missing"
            status = "No submission" if missing else "Submitted for grading"
            status += " (late)" if r.get("late") and not missing else ""
            score = 0 if missing or r.get("score") is None else r["score"]
            top = max_grade if max_grade is not None else r.get("max_score")
            out.writerow([f"Participant {participant}", lms.get("full_name") or r.get("name", ""),
                          r.get("email") or lms.get("email", ""), status, _points(score, 2),
                          _points(top, 2), "Yes", _moodle_time(r.get("timestamp")), graded_at,
                          r.get("comment", "")])
    return left_out


def _feedback_name(r: dict, lms: str) -> tuple[str | None, str]:
    """(path inside the feedback zip, '') or (None, why not) for one result row."""
    ids = r.get("lms") or {}
    source = Path(r["feedback"])
    if lms == "canvas":
        if ids.get("anonymous_id"):
            return None, "anonymous Canvas submission (re-upload matches by user id)"
        if not (ids.get("user_id") and ids.get("attachment_id")):
            return None, "no Canvas user id and file id (not in the Canvas download)"
        login = ids.get("login") or slug(r.get("name", "")) or "student"
        base = re.sub(r"[\x00/\\:*?\"<>|]+", "_", source.name)
        return f"{login}_{ids['user_id']}_{ids['attachment_id']}_{base}", ""
    if lms == "moodle":
        if not ids.get("participant"):
            return None, "no Moodle participant id (not in the Moodle download)"
        name = re.sub(r"[\x00/\\:*?\"<>|]+", "", (ids.get("full_name") or r.get("name", "")).replace("_", " "))
        return f"{name.strip() or 'Participant'}_{ids['participant']}_assignsubmission_file_/{source.name}", ""
    raise ValueError(f"feedback_bundle: lms must be 'canvas' or 'moodle', got {lms!r}")


def feedback_bundle(path_zip: Path, rows: list[dict], *, lms: str) -> list[str]:
    """Zip each student's feedback HTML (``row["feedback"]``) under the name the LMS's bulk
    feedback upload maps to that student; return one line per student left out (and why)."""
    left_out: list[str] = []
    written: set[str] = set()
    with zipfile.ZipFile(path_zip, "w", zipfile.ZIP_DEFLATED) as zf:
        for r in rows:
            if not r.get("feedback") or not Path(r["feedback"]).is_file():
                continue  # no feedback for this student (missing, or not graded)
            arcname, why = _feedback_name(r, lms)
            if arcname is None or arcname in written:
                left_out.append(f"{r.get('student', '?')}: {why or 'a second feedback file, same name'}")
                continue
            written.add(arcname)
            zf.write(r["feedback"], arcname)
    return left_out
