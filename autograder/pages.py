"""HTML pages that show their math with no network: MathJax ships inside each page.

nbconvert's templates load MathJax 2.7 from cdnjs; on a machine with no network (an exam room,
this course's grading machine) the math in the feedback, in formgrader and in the book then shows
as raw TeX. ``templates/base/mathjax.html.j2`` replaces nbconvert's ``mathjax`` macro (every
HTML template calls it in the page's ``<head>``) with :func:`page_head`: MathJax 3 from the
``django-static-mathjax`` package (``tex-svg-full.js``: the TeX input with every extension and
the SVG output, one file, no web fonts to fetch), gzip-compressed and base64-encoded inline,
unpacked by the browser's ``DecompressionStream``. About 1 MB per page: each page stands alone,
so a student who receives only her feedback HTML (nbgrader's ``release_feedback`` sends the
HTML file and nothing else) still sees the math, opened from disk (``file://``) or anywhere.

The same ``<head>`` brings the table style that nbgrader's feedback and formgrade templates lack
(they load Bootstrap but not the notebook's own CSS: a markdown table had no borders or padding,
and its header ran together).

Where it applies: nbgrader's pages through ``nbgrader_config.py`` (``config.py`` puts
:data:`TEMPLATES` first in ``HTMLExporter.extra_template_basedirs`` and registers the filter),
and ``attnkit book`` through :class:`PageExporter`.
"""
from __future__ import annotations

import base64
import copy
import functools
import gzip
from pathlib import Path

from nbconvert import HTMLExporter
from traitlets import default

MATHJAX_FILE = "es5/tex-svg-full.js"
MARKER = "attnkit-local-mathjax"  # the id of the loader script (tests look for it)

# What nbconvert's MathJax 2 configuration asked for, in MathJax 3's words.
_CONFIG = """window.MathJax = {
  tex: {inlineMath: [['$', '$'], ['\\\\(', '\\\\)']], displayMath: [['$$', '$$'], ['\\\\[', '\\\\]']],
        processEscapes: true, processEnvironments: true, tags: 'ams'},
  svg: {fontCache: 'global'}
};"""

_LOADER = """(async () => {
  const packed = Uint8Array.from(atob(document.getElementById('%s').dataset.js), c => c.charCodeAt(0));
  const stream = new Blob([packed]).stream().pipeThrough(new DecompressionStream('gzip'));
  const script = document.createElement('script');
  script.textContent = await new Response(stream).text();
  document.head.appendChild(script);
})();"""


def mathjax_path() -> Path:
    """MathJax 3's single-file TeX-to-SVG build, from the installed django-static-mathjax."""
    import mathjax  # django-static-mathjax: only data, no Django needed

    path = Path(mathjax.__file__).parent / "static" / "mathjax" / MATHJAX_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: pip install django-static-mathjax")
    return path


@functools.cache
def _packed() -> str:
    return base64.b64encode(gzip.compress(mathjax_path().read_bytes(), 9, mtime=0)).decode()


# Markdown tables as JupyterLab shows them (nbgrader's classic-based templates have no table
# style); the book's lab template styles its own (.jp-RenderedHTMLCommon), untouched by this.
TABLE_CSS = """.rendered_html table{border-collapse:collapse;margin:1em 0;font-size:13px}
.rendered_html th,.rendered_html td{border:1px solid #cfcfcf;padding:.3em .8em;text-align:left;
vertical-align:top}.rendered_html thead th{background:#f3f3f3}
.rendered_html tbody tr:nth-child(even){background:#fafafa}
.rendered_html .anchor-link{visibility:hidden;text-decoration:none;margin-left:.3em}
.rendered_html :hover>.anchor-link{visibility:visible}"""

TEMPLATES = Path(__file__).resolve().parent / "templates"  # base/mathjax.html.j2, attnkit_lab/
FILTER = "attnkit_mathjax"  # the Jinja filter that macro calls


def page_head(url: str | None = None) -> str:
    """What goes into the page's ``<head>`` in place of nbconvert's CDN MathJax (``url``, the
    CDN address the template passes, is ignored): MathJax configured as nbconvert configures it,
    the loader of the inline copy, and the table style."""
    return (f"<script>{_CONFIG}</script>\n"
            f'<script id="{MARKER}" data-js="{_packed()}">{_LOADER % MARKER}</script>\n'
            f"<style>{TABLE_CSS}</style>\n")


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def without_widgets(nb):
    """A copy of ``nb`` without its widget outputs (tqdm's progress bars in the course): a static
    page would fetch the widget manager from unpkg.com to draw them, and their text stand-in is
    the bar as first displayed (0%)."""
    nb = copy.deepcopy(nb)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if "outputs" in cell:
            cell.outputs = [o for o in cell.outputs if WIDGET_VIEW not in o.get("data", {})]
    return nb


class PageExporter(HTMLExporter):
    """nbconvert's HTML exporter for pages that fetch nothing (see the module docstring): the
    ``attnkit_lab`` template (JupyterLab's, without require.js), MathJax inside the page, no
    widget outputs."""

    @default("template_name")
    def _template_name(self):
        return "attnkit_lab"

    @default("extra_template_basedirs")
    def _basedirs(self):
        return [str(TEMPLATES)]

    @default("filters")
    def _filters(self):
        return {FILTER: page_head}

    def from_notebook_node(self, nb, resources=None, **kw):
        return super().from_notebook_node(without_widgets(nb), resources, **kw)
