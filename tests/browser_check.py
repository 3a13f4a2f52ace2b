"""Helpers for the browser tests: Debian's Chromium driven by Playwright, a Jupyter server on
loopback, and the checks every page the kit writes must pass (figures loaded, math rendered, no
request leaving the machine).

Playwright's own browser download is not used (nor reachable here): the Makefile installs
Debian's ``chromium`` and ``playwright`` drives it through ``executable_path``. Screenshots go to
``build/browser/`` (test artifacts: look at them).
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "build" / "browser"
CHROMIUM = os.environ.get("ATTNKIT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# The flags that keep Chromium quiet on a machine with no network (no background fetches).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


def missing() -> str | None:
    """Why the browser tests cannot run here (None: they can)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (make installs it: pip install -e .)"
    if not Path(CHROMIUM).is_file():
        return f"no Chromium at {CHROMIUM} (make installs Debian's chromium: apt-get install chromium)"
    return None


@contextlib.contextmanager
def chromium():
    """A headless Chromium (Debian's) under Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def shot(page, name: str, *, full_page: bool = False) -> Path:
    """Save a screenshot of ``page`` as ``build/browser/<name>.png``."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def outside_requests(page) -> list[str]:
    """Start recording the requests of ``page`` that would leave the machine (not file:, data:,
    blob: or loopback); return the list that fills as the page loads."""
    seen: list[str] = []

    def record(request):
        url = request.url
        if not url.startswith(("file:", "data:", "blob:", "about:", "http://127.0.0.1",
                               "ws://127.0.0.1", "http://localhost")):
            seen.append(url)

    page.on("request", record)
    return seen


# What a rendered notebook page (feedback, book) must show.
PAGE_STATE = """() => {
  const imgs = [...document.images];
  const markdown = [...document.querySelectorAll('.text_cell_render, .jp-MarkdownOutput')];
  const text = markdown.map(e => e.innerText).join('\\n');
  const tex = text.match(/\\$\\$[^$]+\\$\\$|\\$[^$\\n]+\\$|\\\\(frac|mathrm|sqrt|mathbb|sum|in)\\b/g) || [];
  return {images: imgs.length, broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt || i.src.slice(0, 60)),
          math: document.querySelectorAll('mjx-container').length,
          math_errors: [...document.querySelectorAll('mjx-merror')].map(e => e.getAttribute('data-mjx-error') || e.textContent),
          raw_tex: tex.slice(0, 5), markdown_cells: markdown.length,
          tables: [...document.querySelectorAll('.text_cell_render table, .jp-MarkdownOutput table')].map(t => {
            const th = t.querySelector('th, td');
            const s = th ? getComputedStyle(th) : null;
            return s ? {padding: parseFloat(s.paddingLeft) + parseFloat(s.paddingRight)} : null;
          })};
}"""


def page_state(page, *, timeout_ms: int = 60_000) -> dict:
    """Wait for the page's MathJax (when it has the kit's) to finish; return ``PAGE_STATE``."""
    page.wait_for_load_state("load")
    if page.evaluate("() => !!document.getElementById('attnkit-local-mathjax')"):
        page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise",
                               timeout=timeout_ms)
        page.evaluate("() => MathJax.startup.promise")
    return page.evaluate(PAGE_STATE)


def render_state(page, url: str, *, timeout_ms: int = 60_000) -> dict:
    """Open ``url`` and return its ``page_state``."""
    page.goto(url)
    return page_state(page, timeout_ms=timeout_ms)


# ------------------------------------------------------------------ a Jupyter server on loopback

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterServer:
    """``jupyter lab`` (JupyterLab, nbgrader's extensions, formgrader) on a loopback port with a
    token, serving ``root`` and started in ``cwd`` (formgrader reads ``nbgrader_config.py`` from
    the folder the server starts in), with its settings, workspaces and runtime files in
    ``home`` so that nothing of the user's own Jupyter set-up leaks in."""

    def __init__(self, root: Path, home: Path, *, cwd: Path | None = None):
        self.root, self.home, self.cwd = Path(root), Path(home), Path(cwd or root)
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> JupyterServer:
        env = dict(os.environ)
        for var, sub in [("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_RUNTIME_DIR", "runtime"),
                         ("JUPYTER_DATA_DIR", "data"),
                         ("JUPYTERLAB_SETTINGS_DIR", "settings"),
                         ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"), ("IPYTHONDIR", "ipython")]:
            (self.home / sub).mkdir(parents=True, exist_ok=True)
            env[var] = str(self.home / sub)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env["PYTHONWARNINGS"] = "ignore"
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
               f"--port={self.port}", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}"]
        if hasattr(os, "getuid") and os.getuid() == 0:
            cmd.append("--allow-root")
        self.log = open(self.home / "server.log", "w")
        self.proc = subprocess.Popen(cmd, cwd=self.cwd, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while True:
            try:
                self.api("status")
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.__exit__(None, None, None)
                    raise RuntimeError("jupyter lab did not start:\n" + self.log_text()[-3000:])
                time.sleep(0.3)

    def api(self, path: str) -> dict:
        """GET ``/api/<path>`` (JSON)."""
        req = urllib.request.Request(f"{self.url}/api/{path}",
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def link(self, path: str) -> str:
        """The URL of ``path`` on this server, with the token."""
        sep = "&" if "?" in path else "?"
        return f"{self.url}/{path.lstrip('/')}{sep}token={self.token}"

    def log_text(self) -> str:
        self.log.flush()
        return (self.home / "server.log").read_text(errors="replace")

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
