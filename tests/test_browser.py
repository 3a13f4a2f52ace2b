"""What students and instructors see, in a real browser (Debian's Chromium driven by Playwright).

- A student opens a1 in JupyterLab (a server started here on loopback with a token, the kit's
  kernel), runs every cell, reads the visible test's failure for the blank answer, types a correct
  answer, re-runs, sees the test pass, and presses nbgrader's Validate button.
- An instructor opens the autograded submissions in nbgrader's formgrader, sees the scores and
  the flagged submission (its math rendered too), and overrides a score by hand that then
  appears in the export.
- The feedback pages and the report open with every figure loaded and the math rendered by the
  MathJax inside the page (``autograder/pages.py``), with no request leaving the machine; every
  released assignment's text renders its formulas and tables.
- The page check itself is shown to catch raw TeX, a missing figure and a run-together table.

The book's chapters are opened the same way by ``test_notebooks.py``, right after it executes
them. Screenshots: ``build/browser/*.png``. The tests share one xdist group (one worker, one
graded course); they are skipped only where Chromium or Playwright is missing (``make`` installs
both).
"""
from __future__ import annotations

import re
import shutil

import jupytext
import nbformat
import pytest

import browser_check as web
from autograder import gradebook as gbk
from autograder.cli import main
from autograder.config import load_config, write_config
from autograder.notebooks import ROOT
from autograder.pages import MARKER, TEMPLATES, WIDGET_VIEW, PageExporter
from autograder.pipeline import grade

A1 = "a1_attention_basics"
WHY = web.missing()
needs_browser = pytest.mark.skipif(WHY is not None, reason=str(WHY))
pytestmark = [pytest.mark.xdist_group(name="browser")]


def solution_of(assignment: str, grade_id: str) -> str:
    """The source's answer for the cell ``grade_id``, as a student would type it."""
    nb = jupytext.read(ROOT / "solutions" / assignment / f"{assignment}.py")
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)
    return "\n".join(line for line in cell.source.splitlines()
                     if "### BEGIN SOLUTION" not in line and "### END SOLUTION" not in line)


# ------------------------------------------------------------------ no browser needed

def _tiny_notebook():
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(
        "For $Q \\in \\mathbb{R}^{N \\times D}$,\n\n$$\\mathrm{softmax}(x)_i = e^{x_i} / \\sum_j e^{x_j}$$\n\n"
        "| part | points |\n| --- | --- |\n| 1 | 3 |\n\n![a figure](missing.png)")])


@pytest.mark.parametrize("template", [None, "classic"])
def test_pages_carry_their_own_mathjax(template):
    """No CDN MathJax, the inline MathJax 3 once, the table style; the book's template (None:
    attnkit_lab) loads no script from the internet at all."""
    exporter = PageExporter(template_name=template) if template else PageExporter()
    page, _ = exporter.from_notebook_node(_tiny_notebook())
    assert "mathjax/2.7.7" not in page and "x-mathjax-config" not in page
    if template is None:
        assert not re.search(r"<script[^>]*src=.http", page)


def test_book_pages_drop_widget_outputs():
    """tqdm's progress bar (a widget) would load the widget manager from unpkg.com, and its text
    stand-in says 0%: the book's pages leave it out, and keep the other outputs."""
    nb = _tiny_notebook()
    cell = nbformat.v4.new_code_cell("for i in tqdm(range(5)): pass\nprint('done')", outputs=[
        nbformat.v4.new_output("display_data", data={
            "text/plain": "measuring:   0%|          | 0/5", WIDGET_VIEW: {"model_id": "abc"}}),
        nbformat.v4.new_output("stream", name="stdout", text="done\n")])
    nb.cells.append(cell)
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    page, _ = PageExporter().from_notebook_node(nb)
    assert "measuring:" not in page and "unpkg.com" not in page and "done" in page
    assert len(nb.cells[-1].outputs) == 2  # the notebook itself is left as it was
    assert len(re.findall(f"id=[\"']{MARKER}[\"']", page)) == 1 and "DecompressionStream('gzip')" in page
    assert ".rendered_html th" in page
    assert 700_000 < len(page) < 3_000_000  # tex-svg-full.js, gzipped and base64-encoded


def test_nbgrader_pages_use_the_local_mathjax(tmp_path):
    """nbgrader's exporters (generate_feedback's, formgrader's) are configured from the course's
    nbgrader_config.py: attnkit's template folder first, nbgrader's after, the filter named."""
    from nbconvert import HTMLExporter

    write_config(tmp_path, db_url="sqlite://", timeout=30, pattern="x")
    exporter = HTMLExporter(config=load_config(tmp_path))
    assert exporter.extra_template_basedirs[0] == str(TEMPLATES)
    assert exporter.extra_template_basedirs[1].endswith("formgrader/templates")
    page, _ = exporter.from_notebook_node(_tiny_notebook())
    assert "mathjax/2.7.7" not in page and len(re.findall(f"id=[\"']{MARKER}[\"']", page)) == 1


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def browser():
    if WHY is not None:
        pytest.skip(WHY)
    with web.chromium() as b:
        yield b


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """a1 graded for an honest student (the full sample) and a flagged one (the hostile
    ``patch_checks``, which patches the test helpers): ``attnkit grade``'s output folder."""
    root = tmp_path_factory.mktemp("browser-graded")
    for student, folder in {"honest": ROOT / "autograder" / "samples" / A1 / "full",
                            "patcher": ROOT / "tests" / "hostile" / A1 / "patch_checks"}.items():
        shutil.copytree(folder, root / "submissions" / student)
    return grade(A1, root / "submissions", root / "out", echo=lambda line: None).out


# ------------------------------------------------------------------ the student

def _idle(page, timeout=300_000):
    """Wait until no cell is queued or running and the kernel is idle."""
    page.wait_for_function("""() => {
        const prompts = [...document.querySelectorAll('.jp-Notebook .jp-InputPrompt')].map(e => e.textContent);
        return prompts.length > 0 && !prompts.some(t => t.includes('*'))
            && document.body.innerText.includes('| Idle');
    }""", timeout=timeout)


def _run_all(page):
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile("^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile("^Run All Cells$")).click()
    # wait for the run to start (cells queued: "[*]"), so that the idle check below does not see
    # the notebook as it was before the click on a slow machine
    started = """() => [...document.querySelectorAll('.jp-Notebook .jp-InputPrompt')]
        .some(e => e.textContent.includes('*'))"""
    try:
        page.wait_for_function(started, timeout=30_000)
    except Exception:  # noqa: BLE001 -- a run that finished between two polls is fine
        pass
    _idle(page)


@needs_browser
@pytest.mark.slow
@pytest.mark.browser
def test_student_runs_a1_fixes_part_1_and_validates(page, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    shutil.copyfile(ROOT / "assignments" / A1 / f"{A1}.ipynb", work / f"{A1}.ipynb")
    home = tmp_path / "home"
    # no "get notified about Jupyter news?" toast: JupyterLab fetches nothing on its own
    settings = home / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    with web.JupyterServer(work, home) as server:
        spec = server.api("kernelspecs")["kernelspecs"]["python3"]["spec"]
        assert spec["argv"][0] == str(ROOT / ".venv" / "bin" / "python") or \
            spec["argv"][0].startswith(str(ROOT)), f"the notebook's kernel is not the kit's: {spec['argv']}"
        outside = web.outside_requests(page)
        page.goto(server.link(f"lab/tree/{A1}.ipynb"))
        page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=120_000)
        _idle(page)
        assert "Python 3 (attnkit)" in page.locator(".jp-Toolbar-kernelName, .jp-KernelName").first.inner_text()

        # Run > Run All Cells: execution stops at the first failing test, part 1's
        _run_all(page)
        test = page.locator(".jp-CodeCell", has_text="attention() equals the reference on random inputs")
        test.scroll_into_view_if_needed()
        failure = test.locator(".jp-OutputArea").text_content()
        assert "NotImplementedError" in failure, failure[:2000]
        web.shot(page, "student_1_blank_answer_fails")

        # type part 1's answer over the stub, run everything again
        answer = page.locator(".jp-CodeCell", has_text="def attention(q, k, v, mask=None)")
        assert "raise NotImplementedError()" in answer.text_content()
        answer.locator(".cm-content").click()
        page.keyboard.press("Control+a")
        page.keyboard.insert_text(solution_of(A1, "attention"))
        page.keyboard.press("Escape")
        _run_all(page)
        test.scroll_into_view_if_needed()
        assert re.fullmatch(r"\[\d+\]:", test.locator(".jp-InputPrompt").text_content().strip())
        assert not test.locator(".jp-OutputArea-output").count(), test.locator(".jp-OutputArea").text_content()
        web.shot(page, "student_2_part_1_passes")
        # the next blank part is now the first failure
        copy = page.locator(".jp-CodeCell", has_text="Part 2a: copy_scale()")
        copy.scroll_into_view_if_needed()
        page.wait_for_function(  # its output may be drawn a moment after the kernel went idle
            "e => e.textContent.includes('NotImplementedError')",
            arg=copy.locator(".jp-OutputArea").element_handle(), timeout=60_000)

        # nbgrader's Validate button: saves, validates, shows the result
        page.get_by_role("button", name="Validate").click()
        dialog = page.locator(".jp-Dialog")
        dialog.wait_for(timeout=300_000)
        page.wait_for_timeout(500)
        text = dialog.inner_text()
        web.shot(page, "student_3_validate")
        assert "Validation Results" in text and "failed" in text, text[:2000]
        assert "Part 2a" in text and "Part 1:" not in text, text[:2000]  # part 1 passes now
        dialog.get_by_role("button", name="Ok").click()
        saved = nbformat.read(str(work / f"{A1}.ipynb"), as_version=4)
        src = next(c.source for c in saved.cells if "def attention(q, k, v, mask=None)" in c.source)
        assert "NotImplementedError" not in src and "scores.exp()" in src
        assert outside == [], f"the page asked the network for {outside}"


# ------------------------------------------------------------------ the instructor

@needs_browser
@pytest.mark.slow
@pytest.mark.browser
def test_instructor_sees_scores_and_flag_and_grades_by_hand_in_formgrader(page, graded, tmp_path):
    out = graded
    auto = {r["student_id"]: float(r["score"]) for r in gbk.read_csv(out / "grades.csv")}
    assert auto["honest"] == 12 and 0 < auto["patcher"] < 12, auto
    # formgrader, as the README says: Jupyter started in the run's course folder
    with web.JupyterServer(out / "course", tmp_path / "home") as server:
        outside = web.outside_requests(page)
        page.goto(server.link("formgrader"))  # the token once; the cookie after
        page.goto(f"{server.url}/formgrader/gradebook/{A1}/{A1}")
        page.wait_for_selector("text=Submission #2", timeout=60_000)
        page.get_by_role("button", name="Show All Names").click()
        head = [h.inner_text().strip() for h in page.locator("table thead th").all()]
        rows = {}
        for row in page.locator("table tbody tr").all():
            cells = row.locator("td")
            rows[cells.nth(head.index("Submission ID")).inner_text().strip()] = (
                cells.nth(head.index("Overall Score")).inner_text().strip(),
                cells.nth(head.index("Flagged?")).locator(".glyphicon-flag").count())
        web.shot(page, "instructor_1_a1_submissions")
        assert rows == {"honest": ("12 / 12", 0), "patcher": (f"{auto['patcher']:g} / 12", 1)}, rows

        # the flagged notebook: part 1's autograded score overridden by hand (it patched the
        # checks; the instructor takes part 1's points away)
        page.locator("a", has_text=re.compile("^patcher$")).click()
        box = page.locator("input#test_attention.score")
        box.wait_for(timeout=60_000)
        _check(web.page_state(page), "formgrader's view of the submission")  # math, tables
        page.get_by_text("Two details matter").scroll_into_view_if_needed()
        web.shot(page, "instructor_2_submission")
        # the autograder's score is the placeholder; what a person types is the manual score
        page.wait_for_function("() => document.querySelector('input#test_attention.score').placeholder")
        assert (box.get_attribute("placeholder"), box.input_value()) == ("3", "")  # part 1 passed
        box.scroll_into_view_if_needed()
        with page.expect_response(lambda r: "/formgrader/api/grade/" in r.url
                                  and r.request.method == "PUT") as saved:
            box.fill("0")
            box.press("Tab")  # formgrader saves on change
        assert saved.value.ok
        web.shot(page, "instructor_3_manual_score")
        page.reload()
        box = page.locator("input#test_attention.score")
        page.wait_for_function("() => (document.querySelector('input#test_attention.score') || {}).value")
        assert float(box.input_value()) == 0  # stored, not only typed
        assert outside == [], f"formgrader asked the network for {outside}"

    assert main(["manual", "--run", str(out), "export"]) == 0
    row = next(r for r in gbk.read_csv(out / "cell_scores.csv")
               if r["student"] == "patcher" and r["grade_id"] == "test_attention")
    assert (float(row["score"]), row["grading"], float(row["manual_score"])) == (0, "manual", 0), row
    totals = {r["student_id"]: float(r["score"]) for r in gbk.read_csv(out / "grades.csv")}
    assert totals == {"honest": 12, "patcher": auto["patcher"] - 3}, totals


# ------------------------------------------------------------------ feedback and report

def _check(state: dict, what: str, *, math: bool = True):
    assert not state["broken"], f"{what}: figures that did not load: {state['broken']}"
    assert not state["raw_tex"], f"{what}: TeX shown raw: {state['raw_tex']}"
    if math:
        assert state["math"] > 0 and not state["math_errors"], (what, state["math"], state["math_errors"])
    for table in state["tables"]:  # a header cell with no padding runs into the next one
        assert table and table["padding"] >= 4, f"{what}: unstyled table {table}"


@needs_browser
@pytest.mark.slow
@pytest.mark.browser
def test_feedback_and_report_render_offline(page, graded):
    outside = web.outside_requests(page)
    seen = {}
    for html in sorted((graded / "feedback").glob(f"*/{A1}.html")):
        state = web.render_state(page, html.as_uri())
        _check(state, f"feedback of {html.parent.name}")
        seen[html.parent.name] = state
        web.shot(page, f"feedback_{html.parent.name}")
        page.get_by_text("Two details matter").scroll_into_view_if_needed()
        web.shot(page, f"feedback_{html.parent.name}_math")
    assert set(seen) == {"honest", "patcher"}
    assert all(s["math"] > 50 and s["tables"] for s in seen.values())  # a1's formulas, its parts table
    # a copy of the page alone, elsewhere (as nbgrader's release_feedback hands it out) is the same
    alone = graded.parent / "alone" / "feedback.html"
    alone.parent.mkdir()
    shutil.copyfile(graded / "feedback" / "patcher" / f"{A1}.html", alone)
    assert web.render_state(page, alone.as_uri())["math"] == seen["patcher"]["math"]
    state = web.render_state(page, (graded / "report.html").as_uri())
    _check(state, "report", math=False)
    assert state["images"] >= 2, f"report: {state['images']} plots"
    web.shot(page, "report", full_page=True)
    assert outside == [], f"pages asked the network for {outside}"


@needs_browser
@pytest.mark.slow
@pytest.mark.browser
def test_every_assignment_shows_its_math_and_tables(page, tmp_path):
    """Each released assignment rendered as nbgrader renders it (the course's configuration):
    every formula typeset without a MathJax error, no TeX left raw, the tables laid out."""
    from nbconvert import HTMLExporter

    write_config(tmp_path, db_url="sqlite://", timeout=30, pattern="x")
    exporter = HTMLExporter(config=load_config(tmp_path), template_name="classic")
    notebooks = sorted((ROOT / "assignments").glob("*/*.ipynb"))
    assert len(notebooks) >= 7
    for path in notebooks:
        html = tmp_path / f"{path.stem}.html"
        html.write_text(exporter.from_notebook_node(nbformat.read(str(path), as_version=4))[0])
        state = web.render_state(page, html.as_uri())
        _check(state, path.stem)
        assert state["tables"], f"{path.stem}: the parts table is missing"
        web.shot(page, f"assignment_{path.stem}")


@needs_browser
@pytest.mark.browser
def test_the_page_check_sees_raw_tex_and_broken_figures(page, tmp_path):
    """The check above fails on what it must catch: a page whose MathJax would come from the
    internet (nbconvert's own exporter) shows raw TeX here, and a missing figure is reported."""
    from nbconvert import HTMLExporter

    cdn = tmp_path / "cdn.html"
    body = HTMLExporter(template_name="classic").from_notebook_node(_tiny_notebook())[0]
    # the a1 table as nbgrader's feedback template showed it (Bootstrap, no notebook CSS)
    cdn.write_text(body.replace("</head>", "<style>.rendered_html th, .rendered_html td"
                                "{padding: 0 !important}</style></head>"))
    state = web.render_state(page, cdn.as_uri())
    assert state["raw_tex"] and state["math"] == 0 and state["broken"] == ["a figure"], state
    assert state["tables"] == [{"padding": 0}], state
    for wrong in ("did not load", "TeX shown raw", "unstyled table"):
        with pytest.raises(AssertionError, match=wrong):
            _check({**state, **{k: v for k, v in _GOOD.items() if k not in _FIELDS[wrong]}}, "cdn")
    local = tmp_path / "local.html"
    local.write_text(PageExporter(template_name="classic").from_notebook_node(_tiny_notebook())[0])
    state = web.render_state(page, local.as_uri())
    assert state["math"] == 2 and not state["raw_tex"] and state["tables"][0]["padding"] > 0, state


_GOOD = {"broken": [], "raw_tex": [], "math": 2, "math_errors": [], "tables": [{"padding": 12.0}]}
_FIELDS = {"did not load": ("broken",), "TeX shown raw": ("raw_tex", "math"),
           "unstyled table": ("tables",)}
