"""Due dates and late penalties (autograder/late.py): the rules, and nbgrader applying them.

The end-to-end check (a late LMS submission graded with a penalty) is in test_lms_grading.py.
"""
from __future__ import annotations

import pytest

from autograder import gradebook as gbk
from autograder import late
from autograder.config import config_text, load_config, write_config


@pytest.mark.parametrize("text, canon", [
    (None, "none"), ("none", "none"), ("ZERO", "zero"), ("10%/day", "10%/day"),
    (" 12.5 % / day ", "12.5%/day"), ("100%/day", "100%/day"),
])
def test_penalty_spellings(text, canon):
    assert late.parse_penalty(text) == canon


@pytest.mark.parametrize("text", ["10", "10%", "0%/day", "150%/day", "ten%/day", "-5%/day", "half"])
def test_bad_penalty_is_one_clear_error(text):
    with pytest.raises(late.LateError, match="late penalty"):
        late.parse_penalty(text)


@pytest.mark.parametrize("seconds, expected", [
    (0, None), (1, 1.0), (86400, 1.0), (86401, 2.0), (3 * 86400, 3.0), (20 * 86400, 5.0),
])
def test_percent_per_day(seconds, expected):
    """20 % of a score of 5 per day or part-day, never more than the score."""
    plugin = late.PercentPerDay(percent_per_day=20.0)
    assert plugin.late_submission_penalty("s", 5.0, seconds) == (expected if expected is None
                                                                 else pytest.approx(expected))


def test_penalty_config_reaches_nbgrader(tmp_path):
    """The config file the pipeline writes selects the plugin and its rate, as nbgrader reads it."""
    write_config(tmp_path, db_url="sqlite:///x.db", timeout=30, pattern="x", late_penalty="15%/day")
    config = load_config(tmp_path)
    assert config.AssignLatePenalties.plugin_class == "autograder.late.PercentPerDay"
    assert config.PercentPerDay.percent_per_day == 15.0
    text = config_text(tmp_path, db_url="sqlite:///x.db", timeout=30, pattern="x", late_penalty="zero")
    assert "c.LateSubmissionPlugin.penalty_method = 'zero'" in text
    default = config_text(tmp_path, db_url="sqlite:///x.db", timeout=30, pattern="x")
    assert "c.LateSubmissionPlugin.penalty_method = 'none'" in default


@pytest.mark.parametrize("text, iso", [
    ("2026-12-01 17:00", "2026-12-01T17:00:00"),
    ("2026-12-01T17:00:00+01:00", "2026-12-01T16:00:00"),
    ("2026-12-01 17:00:00 Europe/Paris", "2026-12-01T16:00:00"),
    (None, None), ("", None),
])
def test_due_dates_in_utc(text, iso):
    assert late.parse_due(text) == iso


def test_bad_due_date():
    with pytest.raises(late.LateError, match="not a date"):
        late.parse_due("next tuesday-ish")


def test_stamp_late():
    due = "2026-12-01T17:00:00"
    # an LMS late mark without a time: one second after the due date, and said so
    stamp, note = late.stamp_late(None, True, due)
    assert stamp == "2026-12-01T17:00:01" and "stamped 1 s after the due date" in note
    # a known time before the due date cannot be right for a late submission: moved after it
    assert late.stamp_late("2026-12-01T10:00:00", True, due)[0] == "2026-12-01T17:00:01"
    # a known late time is kept
    assert late.stamp_late("2026-12-03 09:00:00 UTC", True, due) == ("2026-12-03 09:00:00 UTC", "")
    # not late: nothing changes
    assert late.stamp_late("2026-12-01T10:00:00", False, due) == ("2026-12-01T10:00:00", "")
    assert late.stamp_late(None, False, due) == (None, "")
    # late without a due date: no penalty can apply, and the note says why
    stamp, note = late.stamp_late(None, True, None)
    assert stamp is None and "no due date" in note


def test_due_date_and_extensions_in_the_gradebook(tmp_path, monkeypatch):
    """set_duedate / duedate / grant_extension / extensions on a real nbgrader gradebook."""
    import os
    import sys

    from nbgrader.api import Gradebook

    # a new gradebook runs nbgrader's ``alembic`` from the virtualenv
    monkeypatch.setenv("PATH", os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]))
    url = f"sqlite:///{tmp_path / 'gb.db'}"
    with Gradebook(url, "attnkit") as gb:
        gb.add_assignment("a1")
    assert gbk.duedate(url, "a1") is None
    gbk.set_duedate(url, "a1", late.parse_due("2026-12-01 17:00:00 Europe/Paris"))
    assert gbk.duedate(url, "a1") == "2026-12-01T16:00:00"
    assert gbk.extensions(url, "a1") == {}
    gbk.grant_extension(url, "a1", "ana", 2 * 3600)
    assert gbk.extensions(url, "a1") == {"ana": 7200.0}
    with Gradebook(url, "attnkit") as gb:
        sub = gb.find_submission("a1", "ana")
        sub.timestamp = sub.assignment.duedate.replace(hour=17)  # 1 h late, inside the extension
        gb.db.commit()
        assert gb.find_submission("a1", "ana").total_seconds_late == 0
    gbk.set_duedate(url, "a1", None)
    assert gbk.duedate(url, "a1") is None


@pytest.mark.parametrize("seconds, text", [
    (1, "1 s"), (59, "59 s"), (60, "1 min"), (3600, "1 h"), (3660, "1 h 1 min"),
    (86400, "1 day"), (2 * 86400 + 3 * 3600 + 59, "2 days 3 h"),
])
def test_describe_lateness(seconds, text):
    assert late.describe(seconds) == text


@pytest.mark.parametrize("text, zone, iso", [
    ("Friday, 20 November 2026, 7:30 PM", "Europe/Paris", "2026-11-20T18:30:00"),
    ("Friday, 20 November 2026, 7:30 PM", None, "2026-11-20T19:30:00"),
    ("2026-11-20T19:30:00+01:00", "America/New_York", "2026-11-20T18:30:00"),
    ("-", "Europe/Paris", None), ("", None, None),
])
def test_lms_times(text, zone, iso):
    """Moodle's worksheet writes local times without a zone: read in the zone given."""
    assert late.parse_lms_time(text, zone) == iso


def test_bad_lms_times():
    with pytest.raises(late.LateError, match="not a date"):
        late.parse_lms_time("whenever", None)
    with pytest.raises(late.LateError, match="IANA"):
        late.parse_lms_time("Friday, 20 November 2026, 7:30 PM", "Mars/Olympus")
