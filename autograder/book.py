"""The course as a book: every chapter notebook executed and rendered to HTML (``attnkit book``).

``build_book(out)`` executes each ``course/NN_*.py`` (as a notebook, in ``course/``) and writes
``out/NN_*.html`` and the executed ``out/NN_*.ipynb``, then ``out/index.html`` linking them by
their first heading. A chapter that raises is still rendered (up to the failing cell) and named;
the kernels' stderr goes to ``out/book.log``. Each page carries its own MathJax (``pages.py``), so
the math renders with no network and a page can be opened alone. ``render_chapter`` does one
chapter (the test suite renders every chapter through it and opens the pages in Chromium).
"""
from __future__ import annotations

import html
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from .config import stderr_to_log
from .notebooks import COURSE, course_sources, read_source
from .pages import PageExporter


def _title(nb, default: str) -> str:
    """The first markdown heading of a notebook (``default`` without one)."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return default


def render_chapter(src: Path, out: Path, *, timeout: int) -> tuple[Path, str, str | None]:
    """Execute the chapter ``src`` (cells may run ``timeout`` seconds each) and write
    ``out/<stem>.html`` and the executed ``out/<stem>.ipynb``; return the page, the chapter's
    title and, when a cell raised, the last line of the error (None when it ran through)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    nb = read_source(src)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(COURSE)}})
    error = None
    try:
        with stderr_to_log(out / "book.log"):
            client.execute()
    except CellExecutionError as exc:
        error = str(exc).strip().splitlines()[-1]
    body, _ = PageExporter().from_notebook_node(nb)
    page = out / f"{src.stem}.html"
    page.write_text(body)
    nbformat.write(nb, str(out / f"{src.stem}.ipynb"))
    return page, _title(nb, src.stem), error


def build_book(out: Path, *, timeout: int) -> list[str]:
    """Execute and render every chapter into ``out`` (cells may run ``timeout`` seconds each),
    printing each step; return the names of the chapters that failed."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pages, failed = [], []
    for src in course_sources():
        print(f"executing {src.name} ...", flush=True)
        page, title, error = render_chapter(src, out, timeout=timeout)
        if error is not None:
            failed.append(src.name)
            print(f"  {src.name} failed: {error}")
        pages.append((page, title))
        print(f"  wrote {page}")
    links = "".join(f"<li><a href='{p.name}'>{html.escape(t)}</a></li>" for p, t in pages)
    (out / "index.html").write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'>"
                                    f"<title>attnkit course</title></head><body><h1>Course</h1>"
                                    f"<ol>{links}</ol></body></html>\n")
    print(f"wrote {out / 'index.html'} ({len(pages)} chapters, {len(failed)} failed)")
    return failed
