"""Finding each student's notebook in a folder (or zip) of submissions.

Accepted layouts, for an assignment ``a1``::

    submissions/alice/a1.ipynb           one folder per student (the folder name is the id)
    submissions/bob/work/my_answers.ipynb  any notebook name, at any depth
    submissions/carol/carol.zip          a student folder holding a zip of the notebook
    submissions/dave.ipynb               a loose notebook (the file name is the id)
    submissions.zip                      a zip of any of the above (one wrapper folder is fine)

In a student folder ``a1.ipynb`` wins; otherwise a single notebook is taken; with several,
one whose name contains the assignment name, else the first in sorted order (the choice is
noted in the report). A student whose notebook cannot be found or read gets ``problem`` set:
the pipeline gives them 0 and reports that one-line reason instead of grading them.
"""
from __future__ import annotations

import hashlib
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import nbformat

MAX_UNZIPPED_BYTES = 512 * 2**20
_JUNK = {"__MACOSX", ".ipynb_checkpoints", "__pycache__"}


@dataclass
class Submission:
    """One student's submission: the notebook to grade, or why there is none."""

    student: str
    notebook: Path | None = None
    problem: str | None = None   # set when the submission cannot be graded
    note: str = ""               # something the grader should know (which file was picked)

    @property
    def sha256(self) -> str:
        """Hash of the notebook's bytes ('' without a notebook): unchanged hash, same grade."""
        if self.notebook is None:
            return ""
        return hashlib.sha256(self.notebook.read_bytes()).hexdigest()


def student_id(name: str) -> str:
    """A folder or file name made safe as an nbgrader student id (it becomes a path)."""
    return re.sub(r"[^\w.@+-]", "_", name).strip("._") or "student"


def _visible(path: Path) -> bool:
    return not (path.name.startswith(".") or path.name in _JUNK)


def unzip(archive: Path, dest: Path) -> Path:
    """Extract ``archive`` into a fresh ``dest``, refusing absolute or '..' paths and zip bombs."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        if sum(m.file_size for m in members) > MAX_UNZIPPED_BYTES:
            raise ValueError(f"{archive.name} unpacks to more than {MAX_UNZIPPED_BYTES >> 20} MiB")
        for member in members:
            parts = Path(member.filename).parts
            if member.filename.startswith("/") or ".." in parts or not parts:
                continue
            target = dest.joinpath(*parts)
            if member.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
    return dest


def _notebooks(folder: Path) -> list[Path]:
    found = [p for p in folder.rglob("*.ipynb")
             if p.is_file() and not any(part in _JUNK or part.startswith(".")
                                        for part in p.relative_to(folder).parts)]
    return sorted(found, key=lambda p: (len(p.parts), str(p)))


def pick_notebook(folder: Path, assignment: str, scratch: Path) -> tuple[Path | None, str]:
    """The notebook to grade in a student's folder (unzipping any zip in it), and a note."""
    found = _notebooks(folder)
    if not found:
        for i, archive in enumerate(sorted(folder.rglob("*.zip"))):
            try:
                found += _notebooks(unzip(archive, scratch / f"zip{i}"))
            except (zipfile.BadZipFile, ValueError, OSError) as exc:
                return None, f"cannot unzip {archive.name}: {exc}"
    if not found:
        return None, ""
    exact = [p for p in found if p.name == f"{assignment}.ipynb"]
    if exact:
        return exact[0], ""
    if len(found) == 1:
        return found[0], f"graded {found[0].name}"
    named = [p for p in found if assignment in p.stem] or found
    names = ", ".join(p.name for p in found)
    return named[0], f"several notebooks ({names}); graded {named[0].name}"


def check_notebook(path: Path) -> str | None:
    """None if ``path`` reads as a notebook with cells, else a one-line reason."""
    try:
        nb = nbformat.read(str(path), as_version=4)
    except Exception as exc:  # JSON errors, wrong schema, bad encoding
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"not a valid notebook ({path.name}: {first[:120]})"
    if not nb.cells:
        return f"notebook {path.name} has no cells"
    return None


def _root(path: Path, assignment: str) -> Path:
    """Step into a single wrapper folder (as LMS zips often have) that holds submissions.

    The wrapper is recognised by holding two or more student entries (folders, notebooks,
    zips) and no ``<assignment>.ipynb`` of its own; a lone student folder is not stepped into.
    """
    entries = [p for p in path.iterdir() if _visible(p)]
    if len(entries) == 1 and entries[0].is_dir():
        inner = [p for p in entries[0].iterdir() if _visible(p)
                 and (p.is_dir() or p.suffix in (".ipynb", ".zip"))]
        if len(inner) >= 2 and not any(p.name == f"{assignment}.ipynb" for p in inner):
            return entries[0]
    return path


def collect(submissions: Path, assignment: str, scratch: Path) -> list[Submission]:
    """Every student's submission in ``submissions`` (a folder or a .zip), sorted by student.

    ``scratch`` is a folder the caller owns; zips are extracted there (it is emptied first).
    """
    submissions = Path(submissions)
    if not submissions.exists():
        raise FileNotFoundError(f"no submissions at {submissions}")
    shutil.rmtree(scratch, ignore_errors=True)
    if submissions.is_file():
        submissions = unzip(submissions, scratch / "_archive")
    root = _root(submissions, assignment)
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
            if entry.is_file():  # a loose zip: the student's folder is its content
                try:
                    folder = unzip(entry, scratch / sid / "_archive")
                except (zipfile.BadZipFile, ValueError, OSError) as exc:
                    sub.problem = f"cannot unzip {entry.name}: {exc}"
            if sub.problem is None:
                sub.notebook, note = pick_notebook(folder, assignment, scratch / sid)
                if sub.notebook is None:
                    sub.problem = note or "no notebook (.ipynb) found"
                else:
                    sub.note = note
        if sub.notebook is not None:
            sub.problem = check_notebook(sub.notebook)
        result[sid] = sub
    return [result[k] for k in sorted(result)]
