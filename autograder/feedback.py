"""Student-facing feedback that does not give the hidden tests away.

nbgrader puts the hidden tests (``### BEGIN HIDDEN TESTS`` ... ``### END HIDDEN TESTS``) back
into the grade cells at autograde time, and ``generate_feedback`` renders that autograded
notebook, so by default every student would read the hidden tests in their feedback: the
source of each hidden block, and the hidden lines quoted in the tracebacks of failed tests.

:func:`hidden_tests_redacted` rewrites the autograded notebook for the time it takes to render
the feedback, then puts the original back (the instructor's copy in ``autograded/`` keeps the
hidden tests):

- each hidden block in a grade cell's source becomes one line, ``# (N lines of hidden tests)``;
- each error output of a grade cell keeps its exception type and message (written for the
  student: what was expected, what came back) but loses the traceback frames, which quote
  the test source.

``attnkit grade --show-hidden`` leaves the feedback as nbgrader makes it.

The page itself carries its MathJax and table style (``pages.py``, through the template folder
that ``nbgrader_config.py`` names): its math renders with no network, from the HTML file alone.
"""
from __future__ import annotations

import contextlib
import re
from pathlib import Path

import nbformat

from .cells import is_grade

HIDDEN_RE = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS[ \t]*\n(.*?)^[ \t]*### END HIDDEN TESTS[ \t]*$",
                       re.MULTILINE | re.DOTALL)


def _placeholder(match: re.Match) -> str:
    lines = len(match.group(1).splitlines())
    return f"# ({lines} line{'s' if lines != 1 else ''} of hidden tests)"


def redact(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Remove hidden-test source and traceback frames from the grade cells of ``nb`` (in place)."""
    for cell in nb.cells:
        if cell.cell_type != "code" or not is_grade(cell):
            continue
        if not HIDDEN_RE.search(cell.source):
            continue
        cell.source = HIDDEN_RE.sub(_placeholder, cell.source)
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                output["traceback"] = [f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"]
    return nb


@contextlib.contextmanager
def hidden_tests_redacted(path: Path, *, show_hidden: bool = False):
    """Within the block, the notebook at ``path`` has its hidden tests redacted (see above)."""
    path = Path(path)
    if show_hidden or not path.exists():
        yield
        return
    original = path.read_bytes()
    nb = nbformat.reads(original.decode("utf-8"), as_version=4)
    nbformat.write(redact(nb), str(path))
    try:
        yield
    finally:
        path.write_bytes(original)
