"""The course on a real JupyterHub, end to end (``autograder/hub.py``, ``exchange.py``,
``docs/hub.md``).

One hub on free loopback ports, the instructor and two students: the instructor releases
``a1_attention_basics`` into nbgrader's exchange; alice and bob get their own single-user servers
through the hub's REST API; alice fetches and submits through her server's nbgrader endpoints
(what the Assignments tab calls), bob logs in with the lab password in Chromium and uses the
Assignments tab itself; alice hands in the solved notebook before the due date, bob a half-right
one after it (nbgrader's late penalty takes his score); the instructor collects, ``attnkit grade`` grades the collected folder, the
feedback goes back through the exchange and each student fetches their own.

Skipped only where ``configurable-http-proxy``, bubblewrap or Chromium is missing (``make venv``
installs all three).
"""
from __future__ import annotations

import csv
import datetime as dt
import shutil
import subprocess
import sys
import time
from pathlib import Path

import browser_check as web
import pytest

from autograder.exchange import collect, release_assignment, release_feedback, set_due_date
from autograder.hub import (EXCHANGE_MODE, Hub, HubAPI, Student, find_proxy, free_port, start_hub,
                            stop_hub, wait_for_hub, write_hub)
from autograder.samples import EXPECTED, sample_path
from autograder.sandbox import bwrap_path

A = "a1_attention_basics"
COURSE = "attnkit"
MEMORY = 6 * 2**30

needs_proxy = pytest.mark.skipif(
    find_proxy() is None, reason="configurable-http-proxy not found (make venv installs it into .venv/node)")
needs_bwrap = pytest.mark.skipif(bwrap_path() is None,
                                 reason="bubblewrap not found (make venv installs it as root)")
needs_browser = pytest.mark.skipif(web.missing() is not None, reason=str(web.missing()))


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return {row["student_id"]: row for row in csv.DictReader(f)}


def _status(listing: dict) -> dict[str, str]:
    assert listing["success"], listing
    return {a["assignment_id"]: a["status"] for a in listing["value"]}


def _limits(pid: int) -> dict[str, str]:
    """``/proc/<pid>/limits``: the soft limit of each resource, by name."""
    lines = Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]
    return {line[:26].strip(): line[26:47].strip() for line in lines}


def _fetch_and_submit_in_a_browser(hub: Hub, user: str, answer: Path) -> None:
    """Log in as ``user`` in Chromium, Nbgrader > Assignment List, Fetch, put ``answer`` in the
    fetched notebook's place (the student's work), Submit; the page must then list the submission."""
    with web.chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(hub.url + "/hub/login")
        page.fill("input[name=username]", user)
        page.fill("input[name=password]", hub.password)
        page.click("button[type=submit], input[type=submit]")
        page.wait_for_selector(".jp-Launcher", timeout=120_000)
        page.click("text=Nbgrader")
        page.click("text=Assignment List")
        page.click("button:has-text('Fetch')", timeout=60_000)
        page.wait_for_selector("button:has-text('Submit')", timeout=60_000)
        fetched = hub.home(user) / A / f"{A}.ipynb"
        assert fetched.exists(), f"Fetch in the Assignments tab did not put {fetched} in place"
        shutil.copyfile(answer, fetched)
        page.click("button:has-text('Submit')")
        # the submission is listed, with its time and a Fetch Feedback button
        page.wait_for_selector("button:has-text('Fetch Feedback')", timeout=60_000)
        web.shot(page, f"hub_{user}_submitted")


@pytest.mark.slow
@pytest.mark.xdist_group("hub")
@needs_proxy
@needs_bwrap
@needs_browser
def test_course_on_jupyterhub(tmp_path):
    start = time.perf_counter()
    hub = Hub(tmp_path / "hub", port=free_port(), hub_port=free_port(), proxy_api_port=free_port(),
              students=["alice", "bob"], instructors=["instructor"], memory=MEMORY, cull_idle=0)
    write_hub(hub)
    assert hub.exchange.stat().st_mode & 0o7777 == EXCHANGE_MODE

    proc = start_hub(hub, wait=0)
    try:
        # The instructor releases the assignment into the exchange while the hub starts.
        course = release_assignment(hub, A)
        assert (hub.exchange / COURSE / "outbound" / A / f"{A}.ipynb").exists()
        wait_for_hub(hub, proc)
        api = HubAPI(hub)
        api.start_servers(["alice", "bob"])
        alice, bob = (Student(api, user, api.user_token(user)) for user in ("alice", "bob"))
        # (bob's server is started here too; he logs in to it in a browser below)

        # Each server runs under the spawner's limits.
        pid = api.server("alice")["state"]["pid"]
        assert _limits(pid)["Max address space"] == str(MEMORY)

        # alice fetches, puts in her solution and submits before the due date.
        assert _status(alice.fetch(COURSE, A)) == {A: "fetched"}
        fetched = hub.home("alice") / A / f"{A}.ipynb"
        assert fetched.exists()
        shutil.copyfile(sample_path(A, "full"), fetched)
        assert _status(alice.submit(COURSE, A)) == {A: "submitted"}

        # The due date falls between the two submissions (a whole second: any parser keeps it).
        now = dt.datetime.now(dt.timezone.utc)
        due = now.replace(microsecond=0) + dt.timedelta(seconds=1)
        set_due_date(course, A, due.isoformat(), course_id=COURSE)

        # bob does it in a browser, as a student would: he logs in with the lab password, opens
        # the Assignments tab, fetches, puts in a half-right answer and submits after the due date.
        time.sleep(max(0.0, (due - dt.datetime.now(dt.timezone.utc)).total_seconds() + 0.05))
        _fetch_and_submit_in_a_browser(hub, "bob", sample_path(A, "partial"))
        inbound = sorted(p.name.split("+")[0] for p in (hub.exchange / COURSE / "inbound").iterdir())
        assert inbound == ["alice", "bob"], inbound

        # The instructor collects; the kit grades the collected folder.
        submitted = collect(course, A)
        for student in ("alice", "bob"):
            assert (submitted / student / A / "timestamp.txt").exists()
        out = tmp_path / "graded"
        cmd = [sys.executable, "-m", "autograder.cli", "grade", A, str(submitted), "--out", str(out),
               "--workers", "2", "--due", due.isoformat(), "--late-penalty", "zero"]
        graded = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert graded.returncode == 0, graded.stdout[-3000:] + graded.stderr[-3000:]
        # nbgrader's late rules with the "zero" penalty: alice on time keeps her full marks; bob's
        # late notebook keeps its raw score and loses all of it.
        rows = _rows(out / "grades.csv")
        scores = {s: (float(rows[s]["raw_score"]), float(rows[s]["late_submission_penalty"]),
                      float(rows[s]["score"])) for s in ("alice", "bob")}
        full, partial = EXPECTED[A]["full"], EXPECTED[A]["partial"]
        assert scores == {"alice": (full, 0, full), "bob": (partial, partial, 0)}, scores

        # Feedback through the exchange: each student fetches their own page, and only theirs.
        assert release_feedback(out, course, A) == ["alice", "bob"]
        for student in (alice, bob):
            assert _status(student.fetch_feedback(COURSE, A)) == {A: "submitted"}
        pages = {s: list((hub.home(s) / A / "feedback").glob(f"*/{A}.html")) for s in ("alice", "bob")}
        assert all(len(p) == 1 for p in pages.values()), pages
        for s in ("alice", "bob"):
            assert pages[s][0].read_bytes() == (out / "feedback" / s / f"{A}.html").read_bytes(), \
                f"{s} did not get the feedback the kit wrote for {s}"
        assert pages["alice"][0].read_bytes() != pages["bob"][0].read_bytes()
    finally:
        stop_hub(proc)
    print(f"hub end to end: {time.perf_counter() - start:.1f} s")


def test_feedback_only_for_the_submission_that_was_graded(tmp_path, capsys):
    """A student who submitted again and was re-collected after grading gets no stale feedback."""
    course, run = tmp_path / "course", tmp_path / "graded"
    submitted = course / "submitted" / "alice" / A
    graded = run / "course" / "submitted" / "alice" / A
    for folder in (submitted, graded, run / "feedback" / "alice"):
        folder.mkdir(parents=True)
    (graded / "timestamp.txt").write_text("2026-12-01 16:00:00.000000 UTC")
    (submitted / "timestamp.txt").write_text("2026-12-01 16:30:00.000000 UTC")  # collected later
    (submitted / "submission_secret.txt").write_text("x")
    (run / "feedback" / "alice" / f"{A}.html").write_text("<p>old</p>")
    assert release_feedback(run, course, A) == []
    assert not (course / "feedback").exists()
    assert "not the one graded" in capsys.readouterr().out
