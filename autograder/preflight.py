"""Preflight: read a student's notebook defensively and hand nbgrader a clean copy, or say why not.

``sanitize(path, source_nb, dest)`` runs on every submission before it is staged for nbgrader,
so a broken file fails here with a one-line reason (no kernel is started) and a repairable one
is graded with a note saying what was repaired. ``source_nb`` is the student version of the
assignment (nbgrader's ``release/<a>/<a>.ipynb``), the reference for the checks on nbgrader
cells. What it does, in order:

1. **Size.** The file size is checked before anything is read: 0 bytes, or more than
   ``MAX_NOTEBOOK_BYTES`` (1 GiB), is refused.
2. **Text.** UTF-8 (with or without a byte-order mark) is read as is; UTF-16/32 with a BOM is
   decoded and noted; bytes that are not UTF-8 are decoded as Windows-1252 (else Latin-1) and
   noted. This is safe for JSON: its structure is ASCII, which all of these keep, so only the
   text inside strings can come out different from what the student saw.
3. **JSON, one pass, no outputs.** ``json.loads`` with a hook that replaces every output
   object by ``None`` as soon as it is parsed, so at most one output is in memory beside the
   text (peak about 2x the file size; ``nbformat.read`` would hold every output, as objects,
   and validate them). Truncated JSON, JSON that is not a notebook, a missing or wrong
   ``nbformat`` are refused with the reason.
4. **nbformat.** 4 is read; 3 is converted to 4 (noted); 1, 2 and anything newer than 4
   are refused, naming the version.
5. **Schema repairs.** Missing notebook or cell metadata is added, ``source`` given as a
   list of lines is joined (both forms are valid), cells of an unknown type become raw cells,
   missing cell ids are added and duplicate ones renumbered (noted), then the result must
   pass ``nbformat.validate``. What is left after the outputs are gone must fit in
   ``MAX_CLEAN_BYTES`` (a huge cell source is refused, naming the cell).
6. **nbgrader cells, against the release** (``cellcheck.py``). Copies of an nbgrader cell (same ``grade_id``)
   keep the one at the release's position and lose their nbgrader metadata (noted: "copied
   grade cell 'x' ignored"); a copy of a test or helper that is unchanged becomes a raw cell
   (the instructor's code is not run a second time as student code); metadata that does not match the release is restored; locked
   cells (the tests, the provided helpers) that were edited or deleted are put back from the
   release (noted; nbgrader then restores the hidden tests from the gradebook); a missing
   answer cell is noted; a notebook holding none of the assignment's cells is refused.
7. **Kernel.** The release's kernelspec and language are written in (nbgrader would
   overwrite them anyway); a kernelspec of another language is noted.
"""
from __future__ import annotations

import copy
import json
import os
import re
import tempfile
from pathlib import Path

import nbformat

from .cellcheck import check_nbgrader_cells
from .cells import CELL_KEYS, grade_id, set_type
from .config import load_config

MAX_NOTEBOOK_BYTES = 2**30      # refuse a notebook file larger than this before reading it
MAX_CLEAN_BYTES = 16 * 2**20    # the notebook without outputs (sources, metadata, attachments)
NBFORMAT = 4

_OUTPUT_TYPES = {"stream", "display_data", "execute_result", "error", "pyout", "pyerr"}  # v4 + v3
_ID_RE = re.compile(r"^[a-zA-Z0-9-_]{1,64}$")


class Refused(ValueError):
    """The notebook cannot be graded; ``str(exc)`` is the one-line reason."""


# ---------------------------------------------------------------- reading

def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def _decode(data: bytes) -> tuple[str, str]:
    """The text of ``data`` and a note ('' for plain UTF-8)."""
    for bom, codec in ((b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"),
                       (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16")):
        if data.startswith(bom):
            try:
                return data.decode(codec), f"file was {codec.upper()} text (decoded)"
            except UnicodeDecodeError as exc:
                raise Refused(f"file starts with a {codec.upper()} byte-order mark but is not "
                              f"{codec.upper()} (bad bytes at offset {exc.start})") from None
    try:
        return data.decode("utf-8-sig"), ""
    except UnicodeDecodeError as exc:
        bad = data[exc.start:exc.start + 1].hex()
        where = f"byte 0x{bad} at offset {exc.start}"
    try:
        return data.decode("cp1252"), f"file is not UTF-8 ({where}); decoded as Windows-1252"
    except UnicodeDecodeError:
        return data.decode("latin-1"), f"file is not UTF-8 ({where}); decoded as Latin-1"


def _drop_outputs(pairs: list[tuple[str, object]]):
    """``object_pairs_hook``: an output object becomes None as soon as it is parsed."""
    for key, value in pairs:
        if key == "output_type" and isinstance(value, str) and value in _OUTPUT_TYPES:
            return None
    return dict(pairs)


def check_file(path: Path) -> int:
    """The size of the notebook file at ``path``, or ``Refused`` (not a file, empty, too big)."""
    name = path.name
    if path.is_symlink() or not path.is_file():
        raise Refused(f"{name} is not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise Refused(f"{name} is an empty file (0 bytes)")
    if size > MAX_NOTEBOOK_BYTES:
        raise Refused(f"{name} is {size:,} bytes ({_size(size)}), over the "
                      f"{_size(MAX_NOTEBOOK_BYTES)} limit for a notebook file (clear its "
                      "outputs and submit again)")
    return size


def load(path: Path) -> tuple[dict, list[str]]:
    """The notebook at ``path`` as a plain nbformat-4 dict without outputs, and notes.

    Raises ``Refused`` with a one-line reason when it cannot be read as a notebook.
    """
    path = Path(path)
    name = path.name
    check_file(path)
    text, note = _decode(path.read_bytes())
    notes = [note] if note else []
    if not text.strip():
        raise Refused(f"not a valid notebook ({name}: the file holds only whitespace)")
    try:
        data = json.loads(text, object_pairs_hook=_drop_outputs)
    except json.JSONDecodeError as exc:
        end = len(text.rstrip())
        del text
        if exc.pos >= end or exc.msg.startswith("Unterminated string"):  # ran into the end
            raise Refused(f"not a valid notebook ({name}: the JSON ends early at line "
                          f"{exc.lineno}, column {exc.colno}: truncated file?)") from None
        raise Refused(f"not a valid notebook ({name}: not JSON: {exc.msg} at line {exc.lineno}, "
                      f"column {exc.colno})") from None
    except RecursionError:
        raise Refused(f"not a valid notebook ({name}: JSON nested too deeply)") from None
    del text
    return _upgrade(data, name, notes), notes


def _upgrade(data, name: str, notes: list[str]) -> dict:
    """Check the top level and the nbformat version; convert nbformat 3 to 4."""
    if not isinstance(data, dict):
        kind = {list: "a list", str: "a string", int: "a number", float: "a number",
                bool: "true/false", type(None): "null"}.get(type(data), type(data).__name__)
        raise Refused(f"not a valid notebook ({name}: valid JSON, but {kind} at the top level)")
    version = data.get("nbformat")
    if "cells" not in data and "worksheets" not in data:
        keys = ", ".join(sorted(map(str, data))[:5]) or "none"
        raise Refused(f"not a valid notebook ({name}: valid JSON, but no 'cells' (keys: {keys}))")
    if version is None:
        if "worksheets" in data:
            raise Refused(f"not a valid notebook ({name}: no 'nbformat' version and old-style "
                          "'worksheets')")
        notes.append("no nbformat version in the file (read as 4)")
        data["nbformat"], data["nbformat_minor"], version = NBFORMAT, 0, NBFORMAT
    if not isinstance(version, int) or isinstance(version, bool):
        raise Refused(f"not a valid notebook ({name}: nbformat is {version!r}, not a number)")
    if version == 3:
        for sheet in data.get("worksheets") or []:
            for cell in (sheet.get("cells") or []) if isinstance(sheet, dict) else []:
                if isinstance(cell, dict) and "outputs" in cell:
                    cell["outputs"] = []  # the hook left None where each output was
        try:
            nb = nbformat.convert(nbformat.from_dict(data), NBFORMAT)
        except Exception as exc:  # nbformat raises several kinds on a broken v3 file
            raise Refused(f"nbformat 3 notebook {name} could not be converted to 4: "
                          f"{_first_line(exc)}") from None
        notes.append("converted from nbformat 3")
        return _plain(nb)
    if version < 3:
        raise Refused(f"{name} is an nbformat {version} notebook, too old to grade (open it in "
                      f"Jupyter and save it again to get nbformat {NBFORMAT})")
    if version > NBFORMAT:
        raise Refused(f"{name} is an nbformat {version} notebook, newer than this grader reads "
                      f"(nbformat {NBFORMAT})")
    return data


def _plain(nb) -> dict:
    """A NotebookNode as plain dicts and lists."""
    if isinstance(nb, dict):
        return {k: _plain(v) for k, v in nb.items()}
    if isinstance(nb, list):
        return [_plain(v) for v in nb]
    return nb


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:160]


# ---------------------------------------------------------------- schema repairs

def _label(cell: dict, i: int) -> str:
    gid = grade_id(cell)
    return f"'{gid}'" if isinstance(gid, str) else f"#{i + 1}"


def _text(value, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return "".join(value)
    raise Refused(f"not a valid notebook ({where} is not text)")


def repair(data: dict, name: str, notes: list[str], types: dict[str, str] | None = None) -> dict:
    """Make an nbformat-4 dict valid where that is safe (see the module docstring, step 5).

    ``types`` maps grade ids to the cell type the release has (for cells of an unknown type).
    """
    types = types or {}
    if not isinstance(data.get("metadata"), dict):
        notes.append("notebook metadata was missing (added)")
        data["metadata"] = {}
    cells = data.get("cells")
    if not isinstance(cells, list):
        raise Refused(f"not a valid notebook ({name}: 'cells' is not a list)")
    if not cells:
        raise Refused(f"notebook {name} has no cells")
    retyped, missing_meta, ids_added, renumbered, used = [], 0, 0, 0, set()
    for i, cell in enumerate(cells):
        if not isinstance(cell, dict):
            raise Refused(f"not a valid notebook ({name}: cell #{i + 1} is not a JSON object)")
        if not isinstance(cell.get("metadata"), dict):
            cell["metadata"], missing_meta = {}, missing_meta + 1
        ctype = cell.get("cell_type")
        if ctype not in CELL_KEYS:
            gid = grade_id(cell)
            cell["cell_type"] = types.get(gid, "raw") if isinstance(gid, str) else "raw"
            retyped.append(f"{_label(cell, i)} ({ctype!r} -> {cell['cell_type']})")
        cell["source"] = _text(cell.get("source", ""), f"{name}: the source of cell {_label(cell, i)}")
        set_type(cell, cell["cell_type"])
        cid = cell.get("id")
        if not (isinstance(cid, str) and _ID_RE.match(cid)):
            cid, ids_added = f"cell-{i + 1}", ids_added + 1
        elif cid in used:
            cid, renumbered = f"{cid[:50]}-copy-{i + 1}", renumbered + 1
        while cid in used:
            cid += "x"
        used.add(cid)
        cell["id"] = cid
    data["nbformat"], data["nbformat_minor"] = NBFORMAT, nbformat.v4.nbformat_minor
    if missing_meta:
        notes.append(f"{missing_meta} cell(s) had no metadata (added)")
    if retyped:
        notes.append("cells of an unknown type: " + ", ".join(retyped))
    if renumbered:
        notes.append(f"duplicate cell ids renumbered ({renumbered} cell(s), e.g. from copied cells)")
    return data


def _check_size(nb: dict, name: str) -> None:
    sizes = [len(json.dumps(c)) for c in nb["cells"]]
    total = sum(sizes) + len(json.dumps(nb["metadata"]))
    if total > MAX_CLEAN_BYTES:
        i = max(range(len(sizes)), key=sizes.__getitem__)
        raise Refused(f"{name} holds {_size(total)} besides outputs (limit "
                      f"{_size(MAX_CLEAN_BYTES)}); cell {_label(nb['cells'][i], i)} alone is "
                      f"{_size(sizes[i])}")


# ---------------------------------------------------------------- kernel

def _kernel(nb: dict, release, notes: list[str]) -> None:
    want = release.metadata.get("kernelspec")
    if not want:
        return
    have = nb["metadata"].get("kernelspec")
    lang = have.get("language") if isinstance(have, dict) else None
    wanted = want.get("language", "python")
    if isinstance(have, dict) and lang and str(lang).lower() != wanted:
        notes.append(f"kernelspec was {have.get('name', '?')!r} ({lang}); graded with "
                     f"{want.get('display_name', want.get('name'))}")
    nb["metadata"]["kernelspec"] = copy.deepcopy(dict(want))
    if "language_info" in release.metadata:
        nb["metadata"]["language_info"] = copy.deepcopy(dict(release.metadata["language_info"]))


# ---------------------------------------------------------------- the reference and the whole preflight

def release_reference(root: Path, assignment: str) -> nbformat.NotebookNode:
    """The student version of ``assignment`` in the nbgrader course at ``root``.

    ``release/<a>/<a>.ipynb`` where ``generate_assignment`` wrote it; otherwise (a staging
    area that holds only ``source/`` and the gradebook) made from ``source/<a>/<a>.ipynb`` by
    nbgrader's own preprocessors in ``generate_assignment``'s order, with the course's config
    (same cells, sources and checksums; a test holds the two equal).
    """
    released = Path(root) / "release" / assignment / f"{assignment}.ipynb"
    if released.is_file():
        return nbformat.read(str(released), as_version=NBFORMAT)
    from nbgrader.preprocessors import (ClearHiddenTests, ClearMarkScheme, ClearOutput,
                                        ClearSolutions, ComputeChecksums, LockCells)

    config = load_config(Path(root))
    nb = nbformat.read(str(Path(root) / "source" / assignment / f"{assignment}.ipynb"),
                       as_version=NBFORMAT)
    resources = {"nbgrader": {"notebook": assignment, "assignment": assignment}}
    for step in (LockCells, ClearSolutions, ClearOutput, ComputeChecksums, ClearHiddenTests,
                 ClearMarkScheme, ComputeChecksums):
        nb, resources = step(config=config).preprocess(nb, resources)
    return nb


def read_timestamp(folder: Path) -> tuple[str | None, str]:
    """nbgrader's ``timestamp.txt`` beside a submission: (its text or None, a note).

    Only a small regular file that nbgrader can parse is used; anything else is ignored
    (noted), since nbgrader would fail the whole autograde on it.
    """
    path = Path(folder) / "timestamp.txt"
    if not path.exists() and not path.is_symlink():
        return None, ""
    if path.is_symlink() or not path.is_file() or path.stat().st_size > 200:
        return None, "timestamp.txt ignored (not a small regular file)"
    try:
        from nbgrader.utils import parse_utc

        text = path.read_text(encoding="utf-8").strip()
        parse_utc(text)
    except Exception:  # dateutil raises several kinds on garbage
        return None, "timestamp.txt ignored (not a date and time)"
    return text, ""


def sanitize(path: Path, source_nb, dest: Path | None = None) -> tuple[Path | None, list[str]]:
    """Check and repair ``path`` against the released notebook ``source_nb``; write the result.

    Returns ``(dest, notes)`` with the clean notebook written at ``dest`` (a temporary file
    when not given) and what was repaired, or ``(None, [reason, *notes])`` when the notebook
    cannot be graded. ``source_nb`` is a NotebookNode or a path to one.
    """
    path = Path(path)
    if not isinstance(source_nb, nbformat.NotebookNode):
        source_nb = nbformat.read(str(source_nb), as_version=NBFORMAT)
    notes: list[str] = []
    try:
        data, notes = load(path)
        types = {grade_id(c): c.cell_type for c in source_nb.cells if grade_id(c)}
        data = repair(data, path.name, notes, types)
        _check_size(data, path.name)
        if not check_nbgrader_cells(data, source_nb, notes):  # step 6: cellcheck.py
            raise Refused("none of the assignment's answer or test cells is in this notebook "
                          "(is it the notebook of another assignment?)")
        _kernel(data, source_nb, notes)
        nb = nbformat.from_dict(data)
        try:
            nbformat.validate(nb)
        except nbformat.ValidationError as exc:
            raise Refused(f"not a valid notebook ({path.name}: does not match the notebook "
                          f"schema: {_first_line(exc)})") from None
    except Refused as exc:
        return None, [str(exc), *notes]
    if dest is None:
        handle, name = tempfile.mkstemp(suffix=".ipynb", prefix="attnkit-preflight-")
        dest = Path(name)
        os.close(handle)
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(dest))
    return Path(dest), notes
