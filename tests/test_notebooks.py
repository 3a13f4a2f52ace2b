"""Notebooks: every course chapter executes and renders as `attnkit book` renders it (the same
``render_chapter``: no committed outputs to compare), the rendered page shows its figures and
math in Chromium (``browser``), the committed .ipynb files match their py:percent sources, and
none carries outputs. The solution notebooks are executed by test_grade_cells.py."""
from __future__ import annotations

import json
import subprocess

import nbformat
import pytest

import browser_check as web
from autograder.book import render_chapter
from autograder.notebooks import ROOT, comparable, course_sources, read_source

# One group per chapter: the test that executes it and the one that opens its page in the
# browser run on the same worker, which executes the chapter once.
COURSE = [pytest.param(p, id=p.stem, marks=pytest.mark.xdist_group(name=f"chapter-{p.stem}"))
          for p in course_sources()]
BOOK = ROOT / "build" / "book-test"  # the pages the tests render (test artifacts, like `make book`'s)
_rendered: dict = {}


def rendered(source):
    """Execute and render ``source`` into ``build/book-test/`` once per test process: the page,
    and the error of the cell that raised (None when every cell ran). A chapter that could not be
    rendered at all (a cell over its time limit, a dead kernel) raises the same error again
    rather than running a second time."""
    if source not in _rendered:
        try:
            page, _, error = render_chapter(source, BOOK, timeout=600)
            _rendered[source] = page, error
        except Exception as exc:  # noqa: BLE001 (kept, and raised for each test of the chapter)
            _rendered[source] = exc
    if isinstance(_rendered[source], Exception):
        raise _rendered[source]
    return _rendered[source]


def test_there_is_a_course():
    assert COURSE, "no course/NN_*.py chapters found"


@pytest.mark.slow
@pytest.mark.parametrize("source", COURSE)
def test_course_notebook_executes(source):
    page, error = rendered(source)
    assert error is None, f"{source.name} failed to execute: {error} (the page: {page})"


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(web.missing() is not None, reason=str(web.missing()))
@pytest.mark.parametrize("source", COURSE)
def test_book_page_shows_figures_and_math(source):
    html, error = rendered(source)
    assert error is None, f"{source.name} failed to execute: {error}"
    with web.chromium() as browser:
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        outside = web.outside_requests(page)
        state = web.render_state(page, html.as_uri())
        web.shot(page, f"book_{source.stem}")
        if state["images"]:
            page.locator("img").first.scroll_into_view_if_needed()
            web.shot(page, f"book_{source.stem}_figure")
    assert state["markdown_cells"] > 5, state
    assert state["images"] > 0 and not state["broken"], f"figures: {state['images']}, broken {state['broken']}"
    assert state["math"] > 0 and not state["math_errors"], state["math_errors"]
    assert not state["raw_tex"], f"TeX shown raw: {state['raw_tex']}"
    assert all(t and t["padding"] >= 4 for t in state["tables"]), state["tables"]
    assert outside == [], f"{html.name} asked the network for {outside}"


@pytest.mark.parametrize("source", COURSE)
def test_course_ipynb_matches_source(source):
    built = source.with_suffix(".ipynb")
    assert built.exists(), f"{built.name} is missing: run `attnkit build`"
    committed = nbformat.read(str(built), as_version=4)
    assert comparable(committed) == comparable(read_source(source)), (
        f"{built.name} is out of date with {source.name}: run `attnkit build`")


def test_committed_notebooks_have_no_outputs():
    files = subprocess.run(["git", "ls-files", "*.ipynb"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    with_outputs = []
    for f in files:
        nb = json.loads((ROOT / f).read_text(encoding="utf-8"))
        if any(c.get("outputs") or c.get("execution_count") for c in nb["cells"] if c["cell_type"] == "code"):
            with_outputs.append(f)
    assert not with_outputs, f"notebooks committed with outputs: {with_outputs}"
