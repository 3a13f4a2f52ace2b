"""A live count of graded / failed / flagged submissions while a grading run goes on.

On a terminal a tqdm bar with the counts, the rate (submissions graded per minute) and the time
left, each student's line printed above it; elsewhere (logs, CI, pipes) one plain line per
student with the same. Students kept from an earlier run ("unchanged, kept") count as done but
not in the rate: they take no time.
"""
from __future__ import annotations

import sys
import time


class Progress:
    """The count of one run, shown on ``stream`` (a bar when ``stream.isatty()``, or ``bar``).

    ``update(result)`` takes a ``job.StudentResult``: ``graded`` or ``failed`` by its
    ``status``, ``flagged`` when it has ``flags``; its ``line()`` is printed.
    """

    def __init__(self, stream=None, bar: bool | None = None, clock=time.monotonic):
        self.stream = stream or sys.stdout
        self.bar = self.stream.isatty() if bar is None else bar
        self.total = self.done = self.graded = self.failed = self.flagged = 0
        self.fresh = 0  # graded by this run (not kept from an earlier one)
        self.clock = clock
        self.began = clock()
        self._tqdm = None

    def start(self, total: int, label: str = "grading") -> None:
        self.total, self.done = total, 0
        self.graded = self.failed = self.flagged = self.fresh = 0
        self.began = self.clock()
        if self.bar:
            from tqdm import tqdm  # only for a terminal

            # tqdm's own rate and ETA would count the kept students: ours are in the postfix
            self._tqdm = tqdm(total=total, desc=label, unit="sub", file=self.stream,
                              dynamic_ncols=True, leave=True,
                              bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")

    def counts(self) -> str:
        return f"{self.graded} graded, {self.failed} failed, {self.flagged} flagged"

    def rate(self) -> float | None:
        """Submissions graded per minute by this run so far (None before the first)."""
        elapsed = self.clock() - self.began
        return 60 * self.fresh / elapsed if self.fresh and elapsed > 0 else None

    def pace(self) -> str:
        """E.g. "12.5/min, 3:20 left" ("" before the first submission is graded)."""
        rate = self.rate()
        if rate is None:
            return ""
        left = round(60 * (self.total - self.done) / rate)
        return f"{rate:.1f}/min, {left // 60}:{left % 60:02d} left"

    def update(self, result) -> None:
        self.done += 1
        if result.status == "graded":
            self.graded += 1
        else:
            self.failed += 1
        self.flagged += bool(getattr(result, "flags", None))
        self.fresh += not getattr(result, "cached", False)
        line = "  " + result.line()
        status = "; ".join(filter(None, [self.counts(), self.pace()]))
        if self._tqdm is not None:
            self._tqdm.write(line, file=self.stream)
            self._tqdm.set_postfix_str(status, refresh=False)
            self._tqdm.update(1)
        else:
            print(f"{line}  [{self.done}/{self.total}: {status}]", file=self.stream, flush=True)

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None
