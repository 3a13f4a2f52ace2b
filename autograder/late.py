"""Due dates and late penalties, by nbgrader's rules.

nbgrader decides lateness from two things in the gradebook: the assignment's ``duedate`` (plus
a student's extension, if one was granted) and the submission's ``timestamp`` (the
``timestamp.txt`` that ``nbgrader submit`` / ``collect`` write beside the notebook). At
autograde time its ``AssignLatePenalties`` preprocessor asks a plugin for the penalty of a late
notebook; ``nbgrader export`` then writes ``raw_score``, ``late_submission_penalty`` and
``score = max(0, raw_score - penalty)``. The kit keeps all of that and only chooses the plugin:

=============  ===========================================================================
``--late-penalty``  penalty of a notebook that is ``s`` seconds late with raw score ``r``
=============  ===========================================================================
``none``        nothing (nbgrader's ``LateSubmissionPlugin``, its default)
``zero``        ``r``: a late notebook scores 0 (nbgrader's ``LateSubmissionPlugin``)
``P%/day``      ``r * min(1, P/100 * ceil(s / 86400))``: P percent of the score for each
                day or part of a day late (``PercentPerDay``, below)
=============  ===========================================================================

The due date comes from ``attnkit grade --due`` (written into the gradebook) or from the
gradebook itself, where an instructor set it with nbgrader (``nbgrader db assignment add
a1 --duedate=...``, formgrader). A submission an LMS marks late but whose time is unknown (a
Canvas ``_late_`` file) is stamped one second after the due date (:func:`stamp_late`): late,
by the least amount, so a per-day penalty takes one day.
"""
from __future__ import annotations

import datetime as dt
import math
import re

from nbgrader.plugins import LateSubmissionPlugin
from traitlets import Float

_PER_DAY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*/\s*day\s*$")


class LateError(ValueError):
    """A due date or a late penalty that cannot be read (one line for the command line)."""


class PercentPerDay(LateSubmissionPlugin):
    """P percent of the notebook's score off for each day, or part of a day, late."""

    percent_per_day = Float(10.0, help="percent of the score taken off per day late").tag(config=True)

    def late_submission_penalty(self, student_id: str, score: float,
                                total_seconds_late: float) -> float | None:
        if total_seconds_late <= 0:
            return None
        days = math.ceil(total_seconds_late / 86400)
        return round(score * min(1.0, self.percent_per_day / 100 * days), 6)  # 1.2, not 1.2000000000000002


def parse_penalty(text: str | None) -> str:
    """The canonical spelling of a ``--late-penalty`` value: ``none``, ``zero`` or ``P%/day``."""
    text = (text or "none").strip().lower()
    if text in ("none", "zero"):
        return text
    match = _PER_DAY.match(text)
    if not match or not 0 < float(match.group(1)) <= 100:
        raise LateError(f"late penalty {text!r}: use none, zero, or a percent per day "
                        "between 0 and 100 such as 10%/day")
    return f"{float(match.group(1)):g}%/day"


def penalty_config(penalty: str) -> str:
    """The ``nbgrader_config.py`` lines that make ``AssignLatePenalties`` apply ``penalty``."""
    penalty = parse_penalty(penalty)
    if penalty in ("none", "zero"):
        return (f"c.AssignLatePenalties.plugin_class = 'nbgrader.plugins.LateSubmissionPlugin'\n"
                f"c.LateSubmissionPlugin.penalty_method = {penalty!r}\n")
    percent = float(penalty.split("%")[0])
    return ("c.AssignLatePenalties.plugin_class = 'autograder.late.PercentPerDay'\n"
            f"c.PercentPerDay.percent_per_day = {percent!r}\n")


def parse_due(text: str | None) -> str | None:
    """``--due`` as nbgrader stores it: ISO 8601 in UTC without a zone (None stays None).

    A time without a zone is read as UTC, as nbgrader reads one; ``2026-12-01 17:00 Europe/Paris``
    or ``2026-12-01T17:00+01:00`` give the zone.
    """
    if text is None or not str(text).strip():
        return None
    from nbgrader.utils import parse_utc

    try:
        return parse_utc(str(text).strip()).isoformat()
    except (ValueError, OverflowError, TypeError) as exc:
        raise LateError(f"due date {text!r} is not a date and time ({exc})") from None


def parse_lms_time(text: str, zone: str | None = None) -> str | None:
    """A submission time as an LMS writes it (Moodle's worksheet: "Friday, 20 November 2026,
    7:30 PM", in the zone of the person who downloaded it) as ISO text in UTC; None for "-" or
    an empty cell. ``zone`` (IANA name, default UTC) is the zone of a time that names none."""
    import zoneinfo

    import dateutil.parser

    text = (text or "").strip()
    if text in ("", "-"):
        return None
    try:
        tz = zoneinfo.ZoneInfo(zone or "UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise LateError(f"time zone {zone!r} is not an IANA name such as Europe/Paris") from None
    try:
        when = dateutil.parser.parse(text)
    except (ValueError, OverflowError) as exc:
        raise LateError(f"submission time {text!r} is not a date and time ({exc})") from None
    when = when if when.tzinfo else when.replace(tzinfo=tz)
    return when.astimezone(dt.timezone.utc).replace(tzinfo=None).isoformat()


def stamp_late(timestamp: str | None, late: bool, due: str | None) -> tuple[str | None, str]:
    """The submission time to give nbgrader, and a note when it was made up.

    ``late``: the LMS marked the submission late. Without a due date, or with a known time that
    is already after it, nothing changes; otherwise the submission is stamped one second after
    the due date, so nbgrader counts it late.
    """
    if not late or due is None:
        return timestamp, ("marked late in the LMS export, but no due date is set "
                           "(attnkit grade --due): no late penalty" if late else "")
    due_at = dt.datetime.fromisoformat(due)
    if timestamp is not None:
        from nbgrader.utils import parse_utc

        if parse_utc(timestamp) > due_at:
            return timestamp, ""
    stamp = (due_at + dt.timedelta(seconds=1)).isoformat()
    return stamp, "marked late in the LMS export, time unknown: stamped 1 s after the due date"


def describe(seconds: float) -> str:
    """'2 days 3 h', '5 h 10 min', '40 s': how late, for a note."""
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} day{'s' * (days != 1)}" + (f" {hours} h" if hours else "")
    if hours:
        return f"{hours} h" + (f" {minutes} min" if minutes else "")
    return f"{minutes} min" if minutes else f"{secs} s"
