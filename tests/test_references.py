"""Cross-references in the text resolve: every "chapter N", course notebook and assignment named in
the course, the assignments, the README and docs/ exists, and every attention method the README
lists is a registered variant or has a chapter.

When a chapter or assignment is added (course/NN_*.py, solutions/aN_*/aN_*.py), references to it
become legal without touching this file.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import attnkit

ROOT = Path(__file__).resolve().parents[1]

# Every text a reader or student sees: chapters (py:percent sources of the notebooks), assignment
# sources (their released notebooks are built from them), the README and the docs.
TEXTS = sorted([*(ROOT / "course").glob("[0-9][0-9]_*.py"), *(ROOT / "solutions").glob("a*/a*.py"),
                ROOT / "README.md", *(ROOT / "docs").glob("*.md")])

CHAPTER_REF = re.compile(r"\b[Cc]hapters?\s+(\d+(?:\s*(?:,|and|or|to|–|-)\s*\d+)*)")
ASSIGNMENT_REF = re.compile(r"\b[Aa]ssignments?\s+(\d+(?:\s*(?:,|and|or|to|–|-)\s*\d+)*)")
NOTEBOOK_REF = re.compile(r"(?<![\w.])(\d{2}_[a-z][a-z0-9_]*)")  # 05_low_rank(.ipynb), course/06_...
# an assignment's folder name (a3_low_rank_and_kernels), not a file of that name elsewhere
# (scripts/a5_training_rates.py): after a space, a quote, "assignments/" or "solutions/"
ASSIGNMENT_NAME_REF = re.compile(r"(?:(?<=assignments/)|(?<=solutions/)|(?<![\w/.-]))(a\d+_[a-z][a-z0-9_]*)")
ASSIGNMENT_TAG_REF = re.compile(r"(?<![\w$\\{])a(\d+)\b(?![_.(])")  # "a2", "(in a2 or a5)"
CHAPTER_TABLE_ROW = re.compile(r"^\|\s*(\d+)\s*\|")


def chapters(root: Path = ROOT) -> set[int]:
    """Numbers of the chapters that exist: course/NN_*.py."""
    return {int(p.name[:2]) for p in (root / "course").glob("[0-9][0-9]_*.py")}


def course_stems(root: Path = ROOT) -> set[str]:
    return {p.stem for p in (root / "course").glob("[0-9][0-9]_*.py")}


def assignments(root: Path = ROOT) -> set[str]:
    """Names of the assignments that exist: solutions/<a>/<a>.py."""
    return {p.parent.name for p in (root / "solutions").glob("a*/a*.py") if p.stem == p.parent.name}


def numbers(listing: str) -> list[int]:
    """'2' -> [2]; '2 and 5' -> [2, 5]; '2, 3 and 5' -> [2, 3, 5]; '2–5' or '2 to 5' -> [2, 3, 4, 5]."""
    tokens = re.findall(r"\d+|–|-|to", listing)
    out: list[int] = []
    for i, tok in enumerate(tokens):
        if tok.isdigit():
            n = int(tok)
            if i >= 2 and tokens[i - 1] in ("–", "-", "to") and out:
                out.extend(range(out[-1] + 1, n))
            out.append(n)
    return out


def plain(text: str) -> str:
    """Drop the comment markers of py:percent markdown so that a reference split across lines
    ("chapters 2 and\\n# 5") reads as one."""
    return re.sub(r"(?m)^[ \t]*# ?", "", text)


def unresolved(text: str, *, chapter_set: set[int], stems: set[str], names: set[str]) -> list[str]:
    """Every reference in ``text`` that does not resolve, as 'what (line N)'."""
    text = plain(text)
    numbers_of_assignments = {int(re.match(r"a(\d+)", n).group(1)) for n in names}
    bad = []

    def line(m):
        return text.count("\n", 0, m.start()) + 1

    for m in CHAPTER_REF.finditer(text):
        bad += [f"{m.group(0)!r}: no chapter {n} (line {line(m)})"
                for n in numbers(m.group(1)) if n not in chapter_set]
    for m in ASSIGNMENT_REF.finditer(text):
        bad += [f"{m.group(0)!r}: no assignment a{n} (line {line(m)})"
                for n in numbers(m.group(1)) if n not in numbers_of_assignments]
    for m in NOTEBOOK_REF.finditer(text):
        if m.group(1) not in stems:
            bad.append(f"{m.group(1)!r}: no course/{m.group(1)}.py (line {line(m)})")
    for m in ASSIGNMENT_NAME_REF.finditer(text):
        if m.group(1) not in names:
            bad.append(f"{m.group(1)!r}: no solutions/{m.group(1)}/{m.group(1)}.py (line {line(m)})")
    for m in ASSIGNMENT_TAG_REF.finditer(text):
        if int(m.group(1)) not in numbers_of_assignments:
            bad.append(f"{m.group(0)!r}: no assignment a{m.group(1)} (line {line(m)})")
    # a table whose first column is "Chapter" (chapter 1's map of the course)
    in_table = False
    for i, row in enumerate(text.splitlines(), start=1):
        if re.match(r"^\|\s*Chapter\s*\|", row):
            in_table = True
        elif not row.startswith("|"):
            in_table = False
        elif in_table and (m := CHAPTER_TABLE_ROW.match(row)) and int(m.group(1)) not in chapter_set:
            bad.append(f"table row {row[:40]!r}: no chapter {m.group(1)} (line {i})")
    return bad


def test_there_are_texts_to_check():
    assert chapters() and assignments() and (ROOT / "README.md") in TEXTS


@pytest.mark.parametrize("path", TEXTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_references_resolve(path):
    bad = unresolved(path.read_text(encoding="utf-8"), chapter_set=chapters(), stems=course_stems(),
                     names=assignments())
    assert not bad, (f"{path.relative_to(ROOT)} refers to notebooks that do not exist "
                     f"(chapters: {sorted(chapters())}, assignments: {sorted(assignments())}):\n"
                     + "\n".join(bad))


def test_the_checker_catches_what_it_should():
    """The patterns themselves: a missing chapter, list, range, notebook, assignment, table row."""
    known = dict(chapter_set={1, 2, 3, 5, 6, 8}, stems={"01_attention_from_scratch", "05_low_rank"},
                 names={"a1_attention_basics", "a5_learnable_window"})
    assert unresolved("see chapter 2, section 3; chapters 5 and 6; Chapter 8", **known) == []
    assert unresolved("as in `05_low_rank.ipynb` and assignments/a1_attention_basics/", **known) == []
    assert unresolved("scripts/a5_training_rates.py; graded in a1 and a5; assignment 5", **known) == []
    assert len(unresolved("see chapter 4", **known)) == 1
    assert len(unresolved("# chapters 2 and\n# 4 and 9", **known)) == 2  # across comment lines
    assert len(unresolved("Chapters 2–5", **known)) == 1  # 4 is in the range
    assert len(unresolved("open 04_content_based.ipynb", **known)) == 1
    assert len(unresolved("then a4_content_based", **known)) == 1
    assert len(unresolved("(in a2 or a5)", **known)) == 1
    assert len(unresolved("| Chapter | Idea |\n|---|---|\n| 2 | x |\n| 7 | y |\n", **known)) == 1


# ---------------------------------------------------------------- the README's list of methods

# What each name in the README's opening list is in the kit: a VARIANTS entry, or a chapter
# number where the method is taught without a variant of its own. Names of planned variants are
# here already, so putting them back in the README fails until the variant exists.
METHODS: dict[str, str | int | tuple[str, ...]] = {
    "local": "local",
    "strided": "strided",
    "dilated": "dilated",
    "global patterns": 2,  # global tokens: part of the longformer and bigbird patterns, chapter 2
    "longformer": "longformer",
    "bigbird": "bigbird",
    "sparse transformer": "fixed",
    "transformer-xl": "transformer_xl",
    "linformer": "linformer",
    "compressed attention": "compressed",
    "linear attention": "linear",
    "efficient attention": "efficient",
    "performer": "performer",
    "random feature attention": "rfa",
    "reformer's lsh attention": "lsh",
    "routing transformer": "routing",
    "sinkhorn attention": "sinkhorn",
    "synthesizers": ("synthesizer_dense", "synthesizer_random", "synthesizer_factorized"),
    "fnet": "fnet",
    "gmlp": "gmlp",
    "mlp-mixer": "mixer",
    "a learnable bell-curve window": "bellcurve",
    "adaptive span": "adaptive_span",
}


def _registered(name: str) -> bool:
    return name in attnkit.VARIANTS or name in attnkit.MIXERS


def readme_methods(readme: str) -> list[str]:
    """The parenthesised list of methods in the README's first paragraph, one name per item."""
    m = re.search(r"the ways to make it cheaper \(([^)]*)\)", readme)
    assert m, "README.md: the opening sentence 'the ways to make it cheaper (...)' was not found"
    items = re.split(r",\s*|\s+and\s+", " ".join(m.group(1).split()))
    return [item.strip().lower() for item in items if item.strip()]


def test_readme_lists_exactly_the_methods_the_kit_has():
    """Every name in the README's list is a registered variant or mixer (or has a chapter), and
    every registered variant and mixer (dense aside) is in the list."""
    names = readme_methods((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(names) >= 5, names
    unknown = [n for n in names if n not in METHODS]
    assert not unknown, (f"README lists {unknown}: add each to METHODS in {Path(__file__).name} "
                         "with its attnkit.VARIANTS or attnkit.MIXERS name(s) or its chapter")
    missing = []
    for n in names:
        target = METHODS[n]
        if isinstance(target, int):
            if target not in chapters():
                missing.append(f"{n} -> chapter {target}")
        else:
            missing += [f"{n} -> {t!r}" for t in ((target,) if isinstance(target, str) else target)
                        if not _registered(t)]
    assert not missing, f"README lists methods the kit does not have: {missing}"
    listed = {t for n in names if not isinstance(METHODS[n], int)
              for t in ((METHODS[n],) if isinstance(METHODS[n], str) else METHODS[n])}
    unlisted = sorted((set(attnkit.VARIANTS) | set(attnkit.MIXERS)) - listed - {"dense"})
    assert not unlisted, f"the kit has {unlisted}, which the README's list of methods does not name"
