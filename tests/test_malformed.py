"""Bad input: each malformed submission gets a specific one-line reason (or is repaired and noted).

The malformed notebooks are made here from the released a1 notebook and the ``full`` and
``partial`` samples (``MAKERS``: name -> function writing that student's folder), checked one
by one against ``preflight.sanitize`` and ``submissions.collect`` (fast), then all graded
together with the two honest samples in one run of ``pipeline.grade`` (``slow``).
"""
from __future__ import annotations

import copy
import json
import os
import stat
import time
import tracemalloc
import zipfile
from pathlib import Path

import nbformat
import pytest

from autograder import preflight, submissions
from autograder.notebooks import ASSIGNMENTS, ROOT, solution_source
from autograder.preflight import release_reference, sanitize
from autograder.submissions import collect

A1 = "a1_attention_basics"
NB = f"{A1}.ipynb"
RELEASE = ASSIGNMENTS / A1 / NB
SAMPLES = ROOT / "autograder" / "samples" / A1
MALFORMED_SAMPLE = SAMPLES / "malformed" / NB


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(str(path), as_version=4)


def full() -> nbformat.NotebookNode:
    return _read(SAMPLES / "full" / NB)


def partial() -> nbformat.NotebookNode:
    return _read(SAMPLES / "partial" / NB)


def _index(nb, grade_id: str) -> int:
    return next(i for i, c in enumerate(nb.cells)
                if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def _dumps(nb) -> str:
    """nbformat's own JSON layout, without its validation (which renumbers duplicate ids)."""
    return nbformat.v4.writes_json(nb) + "\n"


def _write(folder: Path, nb, name: str = NB) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(_dumps(nb))
    return folder / name


def _put(folder: Path, data: bytes, name: str = NB) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    return folder / name


# ------------------------------------------------------------------ the malformed students

def make_truncated(folder):
    text = _dumps(full()).encode()
    return _put(folder, text[: len(text) // 2])


def make_copied(nb=None):
    """Copied cells: a test cell and an answer cell pasted elsewhere; two cells share an id."""
    nb = nb or full()
    test = copy.deepcopy(nb.cells[_index(nb, "test_attention")])
    answer = copy.deepcopy(nb.cells[_index(nb, "attention")])
    answer.source = "# my scratch copy\n" + answer.source
    nb.cells.insert(_index(nb, "test_causal") + 1, test)   # the copy runs later, unchanged
    nb.cells.insert(2, answer)                             # and a copy of an answer before
    nb.cells[4].id = nb.cells[3].id                        # duplicate cell ids
    return nb


def make_tampered():
    """Partial answers; tests edited to pass and deleted, a locked helper deleted."""
    nb = partial()
    nb.cells[_index(nb, "test_average_query")].source = "pass  # this one is fine"
    nb.cells[_index(nb, "test_causal")].source = "1"
    del nb.cells[_index(nb, "test_two_head_queries")]
    del nb.cells[_index(nb, "noisy_helpers")]
    return nb


def with_outputs(nb, total_mb: int, chunk_mb: int = 8):
    """``nb`` with ``total_mb`` MB of stream outputs in ``chunk_mb`` MB strings, as a dict."""
    data = json.loads(nbformat.writes(nb))
    code = [c for c in data["cells"] if c["cell_type"] == "code"]
    line = "x" * 1023 + "\n"
    text = line * (chunk_mb * 1024)
    for k in range(total_mb // chunk_mb):
        cell = code[k % len(code)]
        cell["outputs"].append({"output_type": "stream", "name": "stdout", "text": text})
        cell["outputs"].append({"output_type": "display_data", "metadata": {},
                                "data": {"text/plain": ["a picture"], "image/png": "iVBOR" * 100}})
        cell["execution_count"] = k + 1
    return data


def make_big_outputs(folder, total_mb: int = 64):
    data = with_outputs(full(), total_mb)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / NB, "w") as f:
        json.dump(data, f)
    return folder / NB


def make_latin1_r_kernel(folder):
    nb = full()
    nb.metadata["kernelspec"] = {"name": "ir", "display_name": "R", "language": "R"}
    nb.metadata["language_info"] = {"name": "R"}
    cell = nb.cells[_index(nb, "attention")]
    cell.source = "# résumé: ça marche\n" + cell.source
    return _put(folder, _dumps(nb).encode("latin-1"))


def make_utf16(folder):
    return _put(folder, _dumps(full()).encode("utf-16"))  # with a byte-order mark


def make_schema(folder):
    """No notebook metadata, a cell of an unknown type, sources as strings and as lists."""
    data = json.loads(nbformat.writes(full()))
    del data["metadata"]
    data["cells"][0]["cell_type"] = "heading"
    for i, cell in enumerate(data["cells"]):
        if i % 2 and isinstance(cell["source"], list):
            cell["source"] = "".join(cell["source"])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / NB).write_text(json.dumps(data))
    return folder / NB


def make_v3(folder):
    return _put(folder, nbformat.writes(nbformat.convert(full(), 3), version=3).encode())


def make_renamed_zip(folder):
    """A zip holding the notebook under another name, a '..' path, an absolute path, a link."""
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / "upload.zip", "w") as zf:
        zf.writestr("work/my answers.ipynb", nbformat.writes(full()))
        zf.writestr("../escaped.txt", "outside")
        zf.writestr("/tmp/absolute.txt", "outside")
        link = zipfile.ZipInfo("work/a1_attention_basics.ipynb")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
        zf.writestr("work/notes.txt", "extra file")
    return folder / "upload.zip"


def make_zip_bomb(folder):
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / "upload.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open(zipfile.ZipInfo(NB), "w", force_zip64=True) as member:
            block = b"\0" * (16 << 20)
            for _ in range((submissions.MAX_UNZIPPED_BYTES >> 24) + 1):
                member.write(block)
    return folder / "upload.zip"


def make_corrupt_zip(folder):
    folder.mkdir(parents=True, exist_ok=True)
    good = folder / "good.zip"
    with zipfile.ZipFile(good, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(NB, nbformat.writes(full()))
    data = bytearray(good.read_bytes())
    good.unlink()
    start = 30 + len(NB) + 100  # inside the compressed data of the first member
    data[start:start + 64] = bytes(64)
    (folder / "upload.zip").write_bytes(bytes(data))
    return folder / "upload.zip"


def make_too_big(folder):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / NB, "wb") as f:  # sparse: no disk used, nothing worth reading
        f.truncate(preflight.MAX_NOTEBOOK_BYTES + 1)
    return folder / NB


def make_huge_source(folder):
    nb = full()
    nb.cells[_index(nb, "attention")].source += "\n# " + "y" * (20 << 20)
    return _write(folder, nb)


def make_other_assignment(folder):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print('hello')")])
    nb.cells[0].metadata["nbgrader"] = {"grade_id": "ex1", "solution": True, "grade": False,
                                        "locked": False, "schema_version": 3, "task": False}
    return _write(folder, nb)


# (student, maker, status, score, text every note line must hold)
CASES = [
    ("full", lambda f: _write(f, full()), "graded", 12.0, []),
    ("partial", lambda f: _write(f, partial()), "graded", 7.0, []),
    ("truncated", make_truncated, "failed", 0.0, ["not a valid notebook", "ends early",
                                                  "truncated"]),
    ("empty", lambda f: _put(f, b""), "failed", 0.0, ["empty file (0 bytes)"]),
    ("whitespace", lambda f: _put(f, b" \n\t\n"), "failed", 0.0, ["only whitespace"]),
    ("json_list", lambda f: _put(f, b"[1, 2, 3]"), "failed", 0.0,
     ["valid JSON, but a list at the top level"]),
    ("json_dict", lambda f: _put(f, b'{"name": "x", "nbformat": 4}'), "failed", 0.0,
     ["valid JSON, but no 'cells' (keys: name, nbformat)"]),
    ("nbformat2", lambda f: _put(f, b'{"nbformat": 2, "nbformat_minor": 0, "worksheets": []}'),
     "failed", 0.0, ["nbformat 2 notebook, too old"]),
    ("nbformat5", lambda f: _put(f, b'{"nbformat": 5, "nbformat_minor": 0, "cells": []}'),
     "failed", 0.0, ["nbformat 5 notebook, newer than this grader reads"]),
    ("missing", lambda f: _put(f, b"forgot", "readme.txt"), "failed", 0.0,
     ["no notebook (.ipynb) found", "the folder holds readme.txt"]),
    ("empty_folder", lambda f: f.mkdir(parents=True), "failed", 0.0,
     ["no notebook (.ipynb) found; the folder is empty"]),
    ("corrupt_zip", make_corrupt_zip, "failed", 0.0, ["cannot unzip upload.zip: the zip is corrupted"]),
    ("zip_bomb", make_zip_bomb, "failed", 0.0, ["cannot unzip upload.zip: upload.zip unpacks "
                                                "to more than 512 MiB"]),
    ("too_big", make_too_big, "failed", 0.0, ["is 1,073,741,825 bytes (1.0 GiB), over the "
                                              "1.0 GiB limit"]),
    ("huge_source", make_huge_source, "failed", 0.0, ["cell 'attention' alone is 20.0 MiB"]),
    ("other_assignment", make_other_assignment, "failed", 0.0,
     ["none of the assignment's answer or test cells"]),
    ("nbformat3", make_v3, "graded", 12.0, ["converted from nbformat 3"]),
    ("renamed_zip", make_renamed_zip, "graded", 12.0,
     ["graded my answers.ipynb", "../escaped.txt ('..' in its path, not extracted)",
      "/tmp/absolute.txt (absolute path, not extracted)",
      "work/a1_attention_basics.ipynb (symbolic link, not extracted)"]),
    ("utf16", make_utf16, "graded", 12.0, ["file was UTF-16 text (decoded)"]),
    ("latin1_r_kernel", make_latin1_r_kernel, "graded", 12.0,
     ["file is not UTF-8 (byte 0xe9", "decoded as Windows-1252",
      "kernelspec was 'ir' (R); graded with Python 3"]),
    ("schema", make_schema, "graded", 12.0, ["notebook metadata was missing (added)",
                                             "cells of an unknown type: #1 ('heading' -> raw)"]),
    ("copied", lambda f: _write(f, make_copied()), "graded", 12.0,
     ["duplicate cell ids renumbered", "copied grade cell 'test_attention' ignored",
      "copied answer cell 'attention' ignored"]),
    ("tampered", lambda f: _write(f, make_tampered()), "graded", 7.0,
     ["grade cells 'test_average_query', 'test_causal' were edited by the student; the "
      "originals were restored",
      "grade cell 'test_two_head_queries' was deleted by the student; the original was restored",
      "locked cell 'noisy_helpers' was deleted by the student; the original was restored"]),
    ("big_outputs", make_big_outputs, "graded", 12.0, []),
]


@pytest.fixture(scope="module")
def release():
    return _read(RELEASE)


def _sanitize(tmp_path, maker, release):
    path = maker(tmp_path / "in")
    return sanitize(path, release, tmp_path / "clean" / NB)


def _expect(notes: list[str], texts: list[str]) -> None:
    line = "; ".join(notes)
    for text in texts:
        assert text in line, f"{text!r} not in {line!r}"


# ------------------------------------------------------------------ fast: preflight and collect

@pytest.mark.parametrize("student", ["truncated", "empty", "whitespace", "json_list", "json_dict",
                                     "nbformat2", "nbformat5", "too_big", "huge_source",
                                     "other_assignment"])
def test_unusable_notebooks_are_refused_with_a_reason(student, tmp_path, release):
    _, maker, _, _, texts = next(c for c in CASES if c[0] == student)
    clean, notes = _sanitize(tmp_path, maker, release)
    assert clean is None and not (tmp_path / "clean" / NB).exists()
    _expect(notes[:1], texts)  # the reason comes first
    assert "\n" not in notes[0] and len(notes[0]) < 200


def _graded_cells(nb) -> list[tuple[str, str, str]]:
    return [(c.metadata["nbgrader"]["grade_id"], c.cell_type, c.source) for c in nb.cells
            if "nbgrader" in c.metadata]


@pytest.mark.parametrize("student", ["nbformat3", "utf16", "latin1_r_kernel", "schema"])
def test_repairable_notebooks_keep_their_content(student, tmp_path, release):
    _, maker, _, _, texts = next(c for c in CASES if c[0] == student)
    clean, notes = _sanitize(tmp_path, maker, release)
    assert clean is not None, notes
    _expect(notes, texts)
    nb = _read(clean)
    nbformat.validate(nb)
    got, want = _graded_cells(nb), _graded_cells(full())
    if student == "latin1_r_kernel":
        want = [(g, t, "# résumé: ça marche\n" + s if g == "attention" else s) for g, t, s in want]
    assert got == want
    assert nb.metadata.kernelspec == release.metadata.kernelspec
    assert len(nb.cells) == len(full().cells)


def test_source_as_string_or_list_is_the_same_notebook(tmp_path, release):
    data = json.loads(nbformat.writes(full()))
    for cell in data["cells"]:
        cell["source"] = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
    as_string = _put(tmp_path / "s", json.dumps(data).encode())
    a, notes_a = sanitize(as_string, release, tmp_path / "a.ipynb")
    b, notes_b = sanitize(SAMPLES / "full" / NB, release, tmp_path / "b.ipynb")
    assert notes_a == notes_b == []
    assert _read(a) == _read(b) == full()  # an honest notebook comes through unchanged


def test_copied_cells_keep_the_one_in_place(tmp_path, release):
    clean, notes = sanitize(_write(tmp_path / "in", make_copied()), release, tmp_path / NB)
    _expect(notes, next(c for c in CASES if c[0] == "copied")[4])
    nb = _read(clean)
    ids = [c.id for c in nb.cells]
    assert len(set(ids)) == len(ids)
    gids = [c.metadata.get("nbgrader", {}).get("grade_id") for c in nb.cells]
    assert [g for g in gids if g] == [g for g, *_ in _graded_cells(release)]  # each once, in order
    # the kept ones are where the release has them; the copies are ordinary cells
    assert nb.cells[2].source.startswith("# my scratch copy") and "nbgrader" not in nb.cells[2].metadata
    assert gids.index("test_attention") == gids.index("attention") + 1
    copy_at = gids.index("test_causal") + 1  # an unchanged copy of a test: kept, not run
    assert "nbgrader" not in nb.cells[copy_at].metadata and nb.cells[copy_at].cell_type == "raw"
    assert nb.cells[copy_at].source == release.cells[_index(release, "test_attention")].source
    assert nb.cells[2].cell_type == "code"  # a copied answer is the student's code: it runs


def test_a_copy_placed_before_the_original_is_the_one_ignored(tmp_path, release):
    nb = full()
    test = copy.deepcopy(nb.cells[_index(nb, "test_causal")])
    nb.cells.insert(2, test)  # the copy first, far from its place
    clean, notes = sanitize(_write(tmp_path / "in", nb), release, tmp_path / NB)
    assert "copied grade cell 'test_causal' ignored" in notes
    out = _read(clean)
    assert "nbgrader" not in out.cells[2].metadata and out.cells[2].cell_type == "raw"
    assert _index(out, "test_causal") == _index(out, "causal") + 1


def test_an_edited_copy_of_a_test_runs_as_student_code(tmp_path, release):
    nb = full()
    test = copy.deepcopy(nb.cells[_index(nb, "test_causal")])
    test.source = "print(causal_mask(3))"
    nb.cells.append(test)
    clean, notes = sanitize(_write(tmp_path / "in", nb), release, tmp_path / NB)
    assert "copied grade cell 'test_causal' ignored" in notes
    last = _read(clean).cells[-1]
    assert last.cell_type == "code" and "nbgrader" not in last.metadata
    assert last.source == "print(causal_mask(3))"


def test_deleted_and_edited_locked_cells_are_restored(tmp_path, release):
    clean, notes = sanitize(_write(tmp_path / "in", make_tampered()), release, tmp_path / NB)
    _expect(notes, next(c for c in CASES if c[0] == "tampered")[4])
    nb = _read(clean)
    assert _graded_cells(nb) == _graded_cells(partial())  # everything back, in place
    assert [c.cell_type for c in nb.cells] == [c.cell_type for c in partial().cells]


def test_deleted_or_retyped_answer_cells_are_named(tmp_path, release):
    nb = full()
    del nb.cells[_index(nb, "causal")]
    flops = nb.cells[_index(nb, "attention_flops")]
    flops.cell_type = "markdown"
    del flops["outputs"], flops["execution_count"]
    clean, notes = sanitize(_write(tmp_path / "in", nb), release, tmp_path / NB)
    assert "answer cell 'causal' missing (deleted, or its nbgrader metadata removed)" in notes
    assert "answer cell 'attention_flops' was changed to another cell type; graded as code" in notes
    out = _read(clean)
    assert out.cells[_index(out, "attention_flops")].cell_type == "code"
    with pytest.raises(StopIteration):
        _index(out, "causal")  # not invented: the student's code is what is graded


def test_edited_nbgrader_metadata_is_restored(tmp_path, release):
    nb = full()
    meta = nb.cells[_index(nb, "test_attention")].metadata.nbgrader
    meta["points"], meta["locked"] = 100, False
    nb.cells[0].metadata["nbgrader"] = {"grade_id": "bonus", "grade": True, "points": 5}
    clean, notes = sanitize(_write(tmp_path / "in", nb), release, tmp_path / NB)
    _expect(notes, ["nbgrader metadata of 'test_attention' did not match the assignment (restored)",
                    "nbgrader cells not in the assignment treated as ordinary cells: 'bonus'"])
    assert _graded_cells(_read(clean)) == _graded_cells(full())


def test_huge_outputs_are_stripped_in_one_pass(tmp_path, release):
    path = make_big_outputs(tmp_path / "in", total_mb=64)
    size = path.stat().st_size
    assert size > 64e6
    tracemalloc.start()
    begin = time.perf_counter()
    try:
        clean, notes = sanitize(path, release, tmp_path / NB)
        seconds = time.perf_counter() - begin
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert clean is not None and notes == []
    assert _read(clean) == full()  # the outputs are gone, nothing else changed
    assert clean.stat().st_size < 200_000
    # the file's bytes, its text and one output at a time: about 2x, never every output as objects
    assert peak < 2.5 * size, f"peak {peak / 1e6:.0f} MB for a {size / 1e6:.0f} MB notebook"
    print(f"\n64 MiB of outputs: sanitized in {seconds:.2f} s, peak {peak / 1e6:.0f} MB")


def test_size_is_checked_before_reading(tmp_path, release, monkeypatch):
    path = make_too_big(tmp_path / "in")
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("read a too-big file"))
    clean, notes = sanitize(path, release, tmp_path / NB)
    assert clean is None and notes[0] == (f"{NB} is 1,073,741,825 bytes (1.0 GiB), over the "
                                          "1.0 GiB limit for a notebook file (clear its "
                                          "outputs and submit again)")
    assert submissions.check_notebook(path) == notes[0]


def test_release_reference_without_a_release_folder_is_the_release(tmp_path, release):
    from autograder.release import stage_course

    root = tmp_path / "course"
    stage_course(root, A1, solution_source(A1), db_url=f"sqlite:///{tmp_path / 'g.db'}", timeout=60)
    made = release_reference(root, A1)
    assert [(c.cell_type, c.source, c.metadata.get("nbgrader")) for c in made.cells] == \
        [(c.cell_type, c.source, c.metadata.get("nbgrader")) for c in release.cells]


def test_timestamp_is_used_only_when_valid(tmp_path):
    assert preflight.read_timestamp(tmp_path) == (None, "")
    (tmp_path / "timestamp.txt").write_text("2025-01-02 03:04:05.000000 UTC\n")
    assert preflight.read_timestamp(tmp_path) == ("2025-01-02 03:04:05.000000 UTC", "")
    (tmp_path / "timestamp.txt").write_text("yesterday-ish, roughly")
    assert preflight.read_timestamp(tmp_path) == (None, "timestamp.txt ignored (not a date and time)")


# ------------------------------------------------------------------ fast: finding the notebook

def test_collect_explains_missing_renamed_and_extra_files(tmp_path):
    subs = tmp_path / "subs"
    for student in ("missing", "empty_folder", "renamed_zip"):
        next(c for c in CASES if c[0] == student)[1](subs / student)
    _write(subs / "renamed", full(), "My Work (1).ipynb")
    _write(subs / "extra", full())
    _put(subs / "extra", b"a,b\n1,2\n", "data.csv")
    _write(subs / "two", full())
    _write(subs / "two", full(), "scratch.ipynb")
    found = {s.student: s for s in collect(subs, A1, tmp_path / "scratch")}
    assert found["missing"].problem == "no notebook (.ipynb) found"
    assert found["missing"].note == "the folder holds readme.txt"
    assert found["empty_folder"].note == "the folder is empty"
    assert found["renamed"].problem is None and found["renamed"].note == "graded My Work (1).ipynb"
    assert found["extra"].problem is None and found["extra"].note == ""
    assert found["two"].note == f"several notebooks ({NB}, scratch.ipynb); graded {NB}"
    zipped = found["renamed_zip"]
    assert zipped.problem is None and zipped.notebook.name == "my answers.ipynb"
    _expect([zipped.note], next(c for c in CASES if c[0] == "renamed_zip")[4])
    # nothing was written outside the scratch folder, and no link was created anywhere
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "scratch" / "escaped.txt").exists()
    assert not Path("/tmp/absolute.txt").exists()
    assert not any(p.is_symlink() for p in (tmp_path / "scratch").rglob("*"))
    assert not (zipped.notebook.parent / NB).exists()


def test_a_zip_of_only_a_link_has_no_notebook(tmp_path):
    folder = tmp_path / "subs" / "eve"
    folder.mkdir(parents=True)
    with zipfile.ZipFile(folder / "x.zip", "w") as zf:
        link = zipfile.ZipInfo(NB)
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "../../../solutions/a1_attention_basics/a1_attention_basics.py")
    (sub,) = collect(tmp_path / "subs", A1, tmp_path / "scratch")
    assert sub.problem == "no notebook (.ipynb) found"
    assert sub.note == f"the folder holds x.zip; skipped in the zip: {NB} (symbolic link, not extracted)"


def test_a_class_zip_tells_each_student_what_was_skipped(tmp_path):
    archive = tmp_path / "class.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for student in ("alice", "bob"):
            zf.writestr(f"export/{student}/{NB}", _dumps(full()))
        zf.writestr("export/bob/../../evil.py", "import os")
        link = zipfile.ZipInfo(f"export/alice/{NB}.bak")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/shadow")
    found = {s.student: s for s in collect(archive, A1, tmp_path / "scratch")}
    assert sorted(found) == ["alice", "bob"] and not any(s.problem for s in found.values())
    assert found["bob"].note == ("skipped in the zip: export/bob/../../evil.py ('..' in its path, "
                                 "not extracted)")
    assert found["alice"].note == (f"skipped in the zip: export/alice/{NB}.bak (symbolic link, "
                                   "not extracted)")
    assert not (tmp_path / "evil.py").exists() and not (tmp_path / "scratch" / "evil.py").exists()


def test_a_link_in_the_submissions_folder_is_not_followed(tmp_path):
    subs = tmp_path / "subs"
    subs.mkdir()
    os.symlink(SAMPLES / "full" / NB, subs / "mallory.ipynb")
    (sub,) = collect(subs, A1, tmp_path / "scratch")
    assert sub.problem == "mallory.ipynb is a symbolic link (not followed)"


@pytest.mark.parametrize("student", ["corrupt_zip", "zip_bomb"])
def test_bad_zips_are_refused(student, tmp_path):
    _, maker, _, _, texts = next(c for c in CASES if c[0] == student)
    maker(tmp_path / "subs" / student)
    (sub,) = collect(tmp_path / "subs", A1, tmp_path / "scratch")
    _expect([sub.problem], texts)
    assert sub.notebook is None and sub.sha256 == ""


def test_a_truncated_zip_and_a_non_zip_are_refused(tmp_path):
    good = make_renamed_zip(tmp_path / "subs" / "cut")
    good.write_bytes(good.read_bytes()[:200])
    _put(tmp_path / "subs" / "fake", b"PK\x03\x04 not really a zip", "upload.zip")
    found = {s.student: s for s in collect(tmp_path / "subs", A1, tmp_path / "scratch")}
    assert found["cut"].problem == "cannot unzip upload.zip: not a zip file (corrupted, or another format)"
    assert found["fake"].problem == found["cut"].problem


def test_too_many_members_is_a_zip_bomb(tmp_path, monkeypatch):
    monkeypatch.setattr(submissions, "MAX_ZIP_MEMBERS", 3)
    folder = tmp_path / "subs" / "many"
    folder.mkdir(parents=True)
    with zipfile.ZipFile(folder / "x.zip", "w") as zf:
        for i in range(4):
            zf.writestr(f"f{i}.txt", "")
    (sub,) = collect(tmp_path / "subs", A1, tmp_path / "scratch")
    assert sub.problem == "cannot unzip x.zip: x.zip holds 4 files (more than 3): refused"


def test_the_committed_malformed_sample_is_up_to_date():
    assert MALFORMED_SAMPLE.read_text() == _dumps(malformed_sample()), (
        "autograder/samples/a1_attention_basics/malformed is stale: run "
        "`.venv/bin/python tests/test_malformed.py`")


def malformed_sample() -> nbformat.NotebookNode:
    """The demo's malformed student: the full solution with copied cells and a deleted test."""
    nb = make_copied()
    del nb.cells[_index(nb, "test_attention_flops")]
    return nb


# ------------------------------------------------------------------ slow: one grading run

@pytest.mark.slow
def test_grading_every_malformed_case_with_honest_ones(tmp_path):
    from autograder.pipeline import grade

    subs = tmp_path / "subs"
    for student, maker, *_ in CASES:
        maker(subs / student)
    begin = time.perf_counter()
    run = grade(A1, subs, tmp_path / "out", echo=lambda line: None, **_grade_options())
    seconds = time.perf_counter() - begin
    got = {r.student: r for r in run.results}
    assert sorted(got) == sorted(c[0] for c in CASES)
    for student, _, status, score, texts in CASES:
        r = got[student]
        line = r.line()
        assert (r.status, r.score) == (status, score), line
        _expect(["; ".join([r.notes, *r.flags])], texts)  # edited/deleted tests are flags
        assert r.notes or status == "graded", line  # every failure says why
        assert "\n" not in r.notes
    honest = {"full": "", "partial": "raised AssertionError in cell 'test_average_query'"}
    for student, start in honest.items():
        assert got[student].notes.startswith(start), got[student].line()
    # the report carries each line; graded repairs kept their answers' scores
    html = (tmp_path / "out" / "report.html").read_text()
    assert "copied grade cell &#x27;test_attention&#x27; ignored" in html
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| truncated | 0 | 12 | failed | not a valid notebook" in md
    # the restored tests really ran: the autograded notebook holds the instructor's test
    autograded = _read(tmp_path / "out" / "course" / "autograded" / "tampered" / A1 / NB)
    cell = autograded.cells[_index(autograded, "test_causal")]
    assert cell.source == _read(tmp_path / "out" / "course" / "source" / A1 / NB).cells[
        _index(autograded, "test_causal")].source
    print(f"\n{len(CASES)} submissions graded in {seconds:.0f} s")


def _grade_options() -> dict:
    """Run sandboxed where the sandbox works here, else (no user namespaces) unsandboxed."""
    import inspect

    from autograder import pipeline

    if "unsafe" not in inspect.signature(pipeline.grade).parameters:
        return {}
    from autograder.sandbox import probe
    return {} if probe() is None else {"unsafe": True}


if __name__ == "__main__":  # rewrite the demo's malformed sample
    MALFORMED_SAMPLE.parent.mkdir(parents=True, exist_ok=True)
    MALFORMED_SAMPLE.write_text(_dumps(malformed_sample()))
    print(f"wrote {MALFORMED_SAMPLE}")
