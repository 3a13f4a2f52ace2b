"""Finding each student's notebook in a folder (or zip) of submissions.

Accepted layouts, for an assignment ``a1``::

    submissions/alice/a1.ipynb           one folder per student (the folder name is the id)
    submissions/bob/work/my_answers.ipynb  any notebook name, at any depth
    submissions/carol/carol.zip          a student folder holding a zip of the notebook
    submissions/dave.ipynb               a loose notebook (the file name is the id)
    submissions.zip                      a zip of any of the above (one wrapper folder is fine)

Canvas and Moodle "download all submissions" exports (flat ``{login}_{userid}_{fileid}_{name}``
files, or ``Full Name_{participant}_assignsubmission_file`` folders) are recognised by
``lms.detect_layout`` and grouped per student by ``lms.recognise``; ``collect_all`` also returns
the files of such an export that follow no pattern ("unmatched") instead of making students of them.

In a student folder ``a1.ipynb`` wins; otherwise a single notebook is taken; with several,
one whose name contains the assignment name, else the first in sorted order (the choice is
noted in the report). A student whose notebook cannot be found or read gets ``problem`` set:
the pipeline gives them 0 and reports that one-line reason instead of grading them.

Zips are extracted defensively: members with absolute or ``..`` paths, symbolic links and other
special files are skipped (never created, never followed) and noted for the student; more than
``MAX_ZIP_MEMBERS`` members or ``MAX_UNZIPPED_BYTES`` of content (counted while extracting, so
sizes a zip lies about do not help) refuse the zip; a corrupted zip is a one-line reason.
Notebook files are only checked here (``check_notebook``: size always, the full read for files
up to ``PRECHECK_BYTES``); ``preflight.sanitize`` does the rest before grading.
"""
from __future__ import annotations

import calendar
import hashlib
import os
import re
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from . import lms as lms_formats
from .preflight import Refused, check_file, load

MAX_UNZIPPED_BYTES = 512 * 2**20
MAX_ZIP_MEMBERS = 10_000
PRECHECK_BYTES = 16 * 2**20  # notebooks up to this size are read in full when collected
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, ValueError,
               OSError, NotImplementedError, RuntimeError)
_JUNK = {"__MACOSX", ".ipynb_checkpoints", "__pycache__"}


@dataclass
class Submission:
    """One student's submission: the notebook to grade, or why there is none."""

    student: str
    notebook: Path | None = None
    problem: str | None = None   # set when the submission cannot be graded
    note: str = ""               # something the grader should know (which file was picked)
    late: bool = False           # the LMS marked the submission late (Canvas file names do)
    timestamp: str | None = None  # ISO 8601 UTC submission time, when the export tells it
    name: str = ""               # display name (Moodle full name, Canvas login, or the roster's)
    lms: dict = field(default_factory=dict)  # LMS ids: see lms.py ({"lms": "canvas", "user_id": ...})

    @property
    def sha256(self) -> str:
        """Hash of the notebook's bytes ('' without a notebook): unchanged hash, same grade. With
        a submission time (it decides the late penalty), the hash covers it too."""
        if self.notebook is None or self.problem:
            return ""
        with open(self.notebook, "rb") as f:  # streamed: a notebook may be hundreds of MB
            digest = hashlib.file_digest(f, "sha256")
        if self.timestamp:
            digest.update(b"\0timestamp " + self.timestamp.encode())
        return digest.hexdigest()


def student_id(name: str) -> str:
    """A folder or file name made safe as an nbgrader student id (it becomes a path)."""
    return re.sub(r"[^\w.@+-]", "_", name).strip("._") or "student"


def _visible(path: Path) -> bool:
    return not (path.name.startswith(".") or path.name in _JUNK)


def unzip(archive: Path, dest: Path, skipped: list[str] | None = None) -> Path:
    """Extract ``archive`` into a fresh ``dest``; return ``dest``.

    Members with absolute or '..' paths, symbolic links and other non-regular files are not
    extracted; a line for each is appended to ``skipped``. Raises ``ValueError`` for a zip
    bomb (too many members or too many bytes) and zipfile/zlib errors for a corrupted zip.
    """
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    skipped = [] if skipped is None else skipped
    budget = MAX_UNZIPPED_BYTES
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        if len(members) > MAX_ZIP_MEMBERS:
            raise ValueError(f"{archive.name} holds {len(members)} files "
                             f"(more than {MAX_ZIP_MEMBERS}): refused")
        if sum(m.file_size for m in members) > MAX_UNZIPPED_BYTES:
            raise ValueError(f"{archive.name} unpacks to more than {MAX_UNZIPPED_BYTES >> 20} MiB")
        for member in members:
            name = member.filename
            parts = Path(name).parts
            mode = member.external_attr >> 16
            if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
                skipped.append(f"{name} (absolute path, not extracted)")
                continue
            if ".." in parts or ".." in name.split("\\") or not parts:
                skipped.append(f"{name} ('..' in its path, not extracted)")
                continue
            if stat.S_ISLNK(mode):
                skipped.append(f"{name} (symbolic link, not extracted)")
                continue
            if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):  # 0: no type recorded
                skipped.append(f"{name} (not a regular file, not extracted)")
                continue
            target = dest.joinpath(*parts)
            if member.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, open(target, "wb") as out:
                while chunk := src.read(1 << 20):
                    budget -= len(chunk)
                    if budget < 0:
                        raise ValueError(f"{archive.name} unpacks to more than "
                                         f"{MAX_UNZIPPED_BYTES >> 20} MiB")
                    out.write(chunk)
            try:  # keep the member's time (zip times carry no zone: read as UTC)
                seconds = calendar.timegm((*member.date_time, 0, 0, 0))
                os.utime(target, (seconds, seconds))
            except (OverflowError, ValueError, OSError):
                pass
    return dest


def zip_problem(archive: Path, exc: BaseException) -> str:
    """One line for a zip that could not be extracted."""
    text = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, zipfile.BadZipFile) and "not a zip file" in text:
        return f"cannot unzip {archive.name}: not a zip file (corrupted, or another format)"
    if isinstance(exc, (zlib.error, EOFError, zipfile.BadZipFile)):
        return f"cannot unzip {archive.name}: the zip is corrupted ({text})"
    return f"cannot unzip {archive.name}: {text}"


def _first(items: list[str], n: int, sep: str) -> str:
    """The first ``n`` of ``items`` joined by ``sep``, and how many more there are."""
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return sep.join(items[:n]) + more


def _skipped_note(skipped: list[str]) -> str:
    return "skipped in the zip: " + _first(skipped, 3, "; ") if skipped else ""


def _notebooks(folder: Path) -> list[Path]:
    found = [p for p in folder.rglob("*.ipynb")
             if p.is_file() and not p.is_symlink()
             and not any(part in _JUNK or part.startswith(".")
                         for part in p.relative_to(folder).parts)]
    return sorted(found, key=lambda p: (len(p.parts), str(p)))


def _pick(folder: Path, assignment: str, scratch: Path) -> tuple[Path | None, str, str]:
    """The notebook to grade in a student's folder (unzipping any zip in it into ``scratch``):
    (notebook, problem, note), ``problem`` set when there is no notebook to grade."""
    found = _notebooks(folder)
    skipped: list[str] = []
    if not found:
        for i, archive in enumerate(sorted(folder.rglob("*.zip"))):
            try:
                found += _notebooks(unzip(archive, scratch / f"zip{i}", skipped))
            except _ZIP_ERRORS as exc:
                return None, zip_problem(archive, exc), ""
    skip = _skipped_note(skipped)
    if not found:
        return None, "no notebook (.ipynb) found", "; ".join(filter(None, [_contents(folder), skip]))
    exact = [p for p in found if p.name == f"{assignment}.ipynb"]
    if len(found) == 1:
        renamed = "" if exact else f"graded {found[0].name}"
        return found[0], "", "; ".join(filter(None, [renamed, skip]))
    named = exact or [p for p in found if assignment in p.stem] or found
    names = ", ".join(p.name for p in found)
    return named[0], "", "; ".join(filter(None, [f"several notebooks ({names}); graded "
                                                 f"{named[0].name}", skip]))


def _contents(folder: Path) -> str:
    """'the folder is empty' or 'the folder holds a.txt, b.py' (for a missing notebook)."""
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                   if p.is_file() and _visible(p))
    return "the folder holds " + _first(files, 4, ", ") if files else "the folder is empty"


def check_notebook(path: Path) -> str | None:
    """None if ``path`` looks gradable, else a one-line reason (see ``preflight.load``).

    Files up to ``PRECHECK_BYTES`` are read in full; larger ones only have their size checked
    here, and are read once, by ``preflight.sanitize``, just before grading.
    """
    try:
        if check_file(path) <= PRECHECK_BYTES:
            load(path)
    except Refused as exc:
        return str(exc)
    except OSError as exc:
        return f"cannot read {path.name}: {exc.strerror or exc}"
    return None


def _root(path: Path, assignment: str) -> Path:
    """Step into a single wrapper folder (as LMS zips often have) that holds submissions.

    The wrapper is recognised by holding two or more student entries (folders, notebooks,
    zips) and no ``<assignment>.ipynb`` of its own; a lone student folder is not stepped into.
    """
    entries = [p for p in path.iterdir() if _visible(p)]
    if len(entries) == 1 and entries[0].is_dir() and not lms_formats.parse_moodle(entries[0].name):
        inner = [p for p in entries[0].iterdir() if _visible(p)
                 and (p.is_dir() or p.suffix in (".ipynb", ".zip"))]
        if len(inner) >= 2 and not any(p.name == f"{assignment}.ipynb" for p in inner):
            return entries[0]
    return path


@dataclass
class Collected:
    """What ``collect_all`` found: the layout, one Submission per student, stray files."""

    layout: str                   # "canvas" | "moodle" | "folders"
    submissions: list[Submission]
    unmatched: list[str] = field(default_factory=list)  # one line per file that is no student's


def collect(submissions: Path, assignment: str, scratch: Path) -> list[Submission]:
    """Every student's submission in ``submissions`` (a folder or a .zip), sorted by student.

    ``scratch`` is a folder the caller owns; zips are extracted there (it is emptied first).
    """
    return collect_all(submissions, assignment, scratch).submissions


def collect_all(submissions: Path, assignment: str, scratch: Path) -> Collected:
    """``collect``, plus the layout found and the files of an LMS export that match no student."""
    submissions = Path(submissions)
    if not submissions.exists():
        raise FileNotFoundError(f"no submissions at {submissions}")
    shutil.rmtree(scratch, ignore_errors=True)
    skipped: list[str] = []  # members of a class-wide zip that were not extracted
    if submissions.is_file():
        submissions = unzip(submissions, scratch / "_archive", skipped)
    root = _root(submissions, assignment)
    entries = [(p.name, p.is_dir()) for p in root.iterdir() if _visible(p)]
    layout = lms_formats.detect_layout(entries)
    if layout == "folders":
        return Collected(layout, _collect_folders(root, assignment, scratch, skipped))
    return _collect_lms(layout, root, assignment, scratch, skipped)


def _collect_folders(root: Path, assignment: str, scratch: Path, skipped: list[str]) -> list[Submission]:
    """One student per folder, loose notebook or loose zip of ``root`` (the kit's own layout)."""
    result: dict[str, Submission] = {}
    for entry in sorted(p for p in root.iterdir() if _visible(p)):
        if entry.is_file() and entry.suffix not in (".ipynb", ".zip"):
            continue
        sid = student_id(entry.stem if entry.is_file() else entry.name)
        if sid in result:
            result[sid].note = (result[sid].note + f"; also found {entry.name} (ignored)").lstrip("; ")
            continue
        sub = Submission(sid)
        if entry.suffix == ".ipynb":
            sub.notebook = entry
        else:
            folder = entry
            loose: list[str] = []
            if entry.is_file():  # a loose zip: the student's folder is its content
                try:
                    folder = unzip(entry, scratch / sid / "_archive", loose)
                except _ZIP_ERRORS as exc:
                    sub.problem = zip_problem(entry, exc)
            if sub.problem is None:
                sub.notebook, problem, note = _pick(folder, assignment, scratch / sid)
                sub.problem = problem or None
                sub.note = "; ".join(filter(None, [note, _skipped_note(loose)]))
        if entry.is_symlink():
            sub.notebook, sub.problem = None, f"{entry.name} is a symbolic link (not followed)"
        if sub.notebook is not None:
            sub.problem = check_notebook(sub.notebook)
        result[sid] = sub
    for line in skipped:  # tell each student about their own members a class zip skipped
        parts = {student_id(p) for p in re.split(r"[/\\]", line.split(" (")[0])}
        for sid in parts & set(result):
            result[sid].note = "; ".join(filter(None, [result[sid].note,
                                                       _skipped_note([line])]))
    return [result[k] for k in sorted(result)]


def _collect_lms(layout: str, root: Path, assignment: str, scratch: Path,
                 skipped: list[str]) -> Collected:
    """One Submission per student of a Canvas or Moodle export (see ``lms``)."""
    files, links = [], []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if any(part in _JUNK or part.startswith(".") for part in rel.parts):
            continue
        if p.is_symlink():
            links.append(f"{rel.as_posix()} (symbolic link, not followed)")
        elif p.is_file():
            files.append(rel.as_posix())
    students, unmatched = lms_formats.recognise(layout, files)
    result: dict[str, Submission] = {}
    for st in students:
        sub = Submission(st.student, late=st.late, name=st.name, lms=dict(st.lms))
        notebooks = [f for f in st.files if f.lower().endswith(".ipynb")]
        paths = [root / f for f in notebooks]
        labels = [st.files[f]["filename"] for f in notebooks]
        owners = list(notebooks)
        loose: list[str] = []
        if not notebooks:  # a zip handed in instead of a notebook
            for i, f in enumerate(f for f in st.files if f.lower().endswith(".zip")):
                try:
                    found = _notebooks(unzip(root / f, scratch / sub.student / f"zip{i}", loose))
                except _ZIP_ERRORS as exc:
                    sub.problem = zip_problem(root / f, exc)
                    break
                paths += found
                labels += [p.name for p in found]
                owners += [f] * len(found)
        if not paths and sub.problem is None:
            names = ", ".join(st.files[f]["filename"] or Path(f).name for f in st.files)
            sub.problem = "no notebook (.ipynb) found"
            sub.note = f"submitted {names}"
        elif paths and sub.problem is None:
            mtimes = [p.stat().st_mtime for p in paths]
            i = lms_formats.pick_latest(labels, assignment, mtimes)
            sub.notebook = paths[i]
            sub.lms.update({k: v for k, v in st.files[owners[i]].items() if k == "attachment_id" and v})
            sub.lms["file_time"] = lms_formats.iso_utc(mtimes[i])
            if len(paths) > 1:
                sub.note = (f"{len(paths)} notebooks ({', '.join(labels)}); "
                            f"graded the latest, {labels[i]}")
            sub.problem = check_notebook(sub.notebook)
        sub.note = "; ".join(filter(None, [sub.note, _skipped_note(loose)]))
        result[sub.student] = sub
    for line in skipped:  # members the class zip did not extract: tell their owner, else report
        sid = lms_formats.owner(layout, line.split(" (")[0])
        if sid in result:
            result[sid].note = "; ".join(filter(None, [result[sid].note, _skipped_note([line])]))
        else:
            unmatched.append(f"skipped in the zip: {line}")
    return Collected(layout, [result[k] for k in sorted(result)], unmatched + links)
