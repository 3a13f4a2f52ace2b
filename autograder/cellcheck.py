"""Preflight step 6: a submission's nbgrader cells checked against the released notebook.

nbgrader trusts a submission's cell metadata; a student who copies, deletes, edits or retypes
cells can confuse it (two cells with one ``grade_id`` abort the autograde; a deleted test is
simply not run). :func:`check_nbgrader_cells` makes the cells match the release again and says
what it changed, in notes that :mod:`autograder.pipeline` turns into flags where the student
changed what they may not change:

- copies of an nbgrader cell (same ``grade_id``) keep the one at the release's position; the
  others lose their nbgrader metadata ("copied grade cell 'x' ignored"), and an unchanged copy
  of a test or helper becomes a raw cell (the instructor's code does not run twice as student code);
- nbgrader metadata that differs from the release is restored;
- locked cells (tests, provided helpers) that were edited or deleted are put back from the
  release, in place (nbgrader then restores the hidden tests from the gradebook);
- a missing or retyped answer cell is named; a notebook holding none of the assignment's
  cells is reported (``preflight.sanitize`` refuses it).
"""
from __future__ import annotations

import copy
import json
import re

from .cells import grade_id, is_grade, is_solution, nbgrader_meta, set_type

__all__ = ["check_nbgrader_cells"]


def _kind(cell) -> str:
    if is_solution(cell):
        return "answer cell"
    return "grade cell" if is_grade(cell) else "locked cell"


def _names(ids: list[str]) -> str:
    return ", ".join(f"'{g}'" for g in ids)


def check_nbgrader_cells(nb: dict, release, notes: list[str]) -> bool:
    """Repair duplicated, edited, deleted and foreign nbgrader cells of ``nb`` (in place) against
    the release, noting each repair in ``notes``; False when ``nb`` holds none of the release's
    nbgrader cells (nothing to grade)."""
    ref = [(grade_id(c), c) for c in release.cells if grade_id(c)]
    order = {gid: i for i, (gid, _) in enumerate(ref)}
    ref_cells = dict(ref)
    cells = nb["cells"]
    by_id: dict[str, list[int]] = {}
    foreign = []
    for i, cell in enumerate(cells):
        meta = cell["metadata"].get("nbgrader")
        if meta is None:
            continue
        gid = meta.get("grade_id") if isinstance(meta, dict) else None
        if gid in order:
            by_id.setdefault(gid, []).append(i)
        else:
            del cell["metadata"]["nbgrader"]
            if isinstance(gid, str) and gid:
                foreign.append(gid)
            elif isinstance(meta, dict) and (meta.get("grade") or meta.get("solution")):
                foreign.append(f"#{i + 1}")
    if not by_id:
        return False
    if foreign:
        notes.append(f"nbgrader cells not in the assignment treated as ordinary cells: "
                     f"{_names(foreign)}")
    copies: dict[str, list[str]] = {}
    for gid, places in by_id.items():
        if len(places) > 1:
            k = next(j for j, c in enumerate(release.cells) if grade_id(c) == gid)
            anchor = _after(cells, release.cells, k)
            keep = min(places, key=lambda i: _misplacement(cells, i, gid, order, ref_cells, anchor))
            for i in places:
                if i != keep:
                    del cells[i]["metadata"]["nbgrader"]
                    kind = _kind(ref_cells[gid])
                    if kind != "answer cell" and cells[i]["source"] == ref_cells[gid].source:
                        set_type(cells[i], "raw")  # an unchanged copy of a test: not run twice
                    copies.setdefault(kind, []).append(gid)
            by_id[gid] = [keep]
    for kind, ids in copies.items():
        notes.append(f"copied {kind} {_names(ids)} ignored" if len(ids) == 1 else
                     f"copied {kind}s {_names(ids)} ignored")
    edited, retyped, meta_changed = [], [], []
    for gid, (i,) in by_id.items():
        cell, want = cells[i], ref_cells[gid]
        meta = nbgrader_meta(want)
        if cell["metadata"]["nbgrader"] != meta:
            meta_changed.append(gid)
            cell["metadata"]["nbgrader"] = copy.deepcopy(dict(meta))
        if cell["cell_type"] != want.cell_type:
            set_type(cell, want.cell_type)
            (retyped if is_solution(want) else edited).append(gid)
        if not is_solution(want) and cell["source"] != want.source:
            cell["source"] = want.source
            if gid not in edited:
                edited.append(gid)
    if meta_changed:
        notes.append(f"nbgrader metadata of {_names(meta_changed)} did not match the "
                     "assignment (restored)")
    _note_restored(notes, "edited", edited, ref_cells)
    for gid in retyped:
        notes.append(f"answer cell '{gid}' was changed to another cell type; graded as "
                     f"{ref_cells[gid].cell_type}")
    deleted, missing = _restore_deleted(cells, release.cells, by_id)
    _note_restored(notes, "deleted", deleted, ref_cells)
    if missing:
        notes.append(("answer cell " if len(missing) == 1 else "answer cells ")
                     + _names(missing) + " missing (deleted, or its nbgrader metadata removed)")
    return True


def _note_restored(notes: list[str], how: str, ids: list[str], ref_cells) -> None:
    for kind in ("grade cell", "locked cell"):
        these = [g for g in ids if _kind(ref_cells[g]) == kind]
        if len(these) == 1:
            notes.append(f"{kind} '{these[0]}' was {how} by the student; the original was restored")
        elif these:
            notes.append(f"{kind}s {_names(these)} were {how} by the student; the originals "
                         "were restored")


def _misplacement(cells: list[dict], i: int, gid: str, order: dict, ref_cells,
                  anchor: int) -> tuple:
    """How far a copy of ``gid`` at index ``i`` is from where the release has it (smaller: keep).

    First: how many nbgrader cells around it are out of the release's order around ``gid``;
    then how far it is from ``anchor`` (just after the cell the release has before it); then
    whether its source differs from the release's; then the index (the first wins ties).
    """
    source_differs = cells[i]["source"] != ref_cells[gid].source
    before = {grade_id(c) for c in cells[:i]}
    after = {grade_id(c) for c in cells[i + 1:]}
    wrong = sum(1 for g in before if g in order and order[g] > order[gid]) + \
        sum(1 for g in after if g in order and order[g] < order[gid])
    return (wrong, abs(i - anchor), source_differs, i)


def _restore_deleted(cells: list[dict], release_cells, by_id) -> tuple[list[str], list[str]]:
    """Put back deleted locked cells where the release has them; list missing answer cells."""
    deleted, missing = [], []
    for k, want in enumerate(release_cells):
        gid = grade_id(want)
        if not gid or gid in by_id:
            continue
        if is_solution(want):
            missing.append(gid)
            continue
        where = _after(cells, release_cells, k)
        cell = json.loads(json.dumps(want))
        cell["id"] = _free_id(cells, cell.get("id") or gid)
        set_type(cell, cell["cell_type"])
        cells.insert(where, cell)
        by_id[gid] = (where,)
        deleted.append(gid)
    return deleted, missing


def _after(cells: list[dict], release_cells, k: int) -> int:
    """Where release cell ``k`` goes: after the nearest earlier release cell the notebook has
    (an nbgrader cell by its grade id, another cell by its type and text), else first."""
    for j in range(k - 1, -1, -1):
        want = release_cells[j]
        gid = grade_id(want)
        for i, cell in enumerate(cells):
            if (grade_id(cell) == gid if gid else
                    (cell["cell_type"] == want.cell_type and cell["source"] == want.source
                     and not nbgrader_meta(cell))):
                return i + 1
    return 0


def _free_id(cells: list[dict], cid: str) -> str:
    used = {c.get("id") for c in cells}
    base = re.sub(r"[^A-Za-z0-9_-]", "-", cid)[:50] or "restored"
    cid, n = base, 1
    while cid in used:
        cid, n = f"{base}-{n}", n + 1
    return cid
