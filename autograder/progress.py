"""A live count of graded / failed / flagged submissions while a grading run goes on.

On a terminal a tqdm bar with the counts, each student's line printed above it; elsewhere (logs,
CI, pipes) one plain line per student with the counts so far.
"""
from __future__ import annotations

import sys


class Progress:
    """The count of one run, shown on ``stream`` (a bar when ``stream.isatty()``, or ``bar``).

    ``update(result)`` takes a ``job.StudentResult``: ``graded`` or ``failed`` by its
    ``status``, ``flagged`` when it has ``flags``; its ``line()`` is printed.
    """

    def __init__(self, stream=None, bar: bool | None = None):
        self.stream = stream or sys.stdout
        self.bar = self.stream.isatty() if bar is None else bar
        self.total = self.done = self.graded = self.failed = self.flagged = 0
        self._tqdm = None

    def start(self, total: int, label: str = "grading") -> None:
        self.total, self.done = total, 0
        self.graded = self.failed = self.flagged = 0
        if self.bar:
            from tqdm import tqdm  # only for a terminal

            self._tqdm = tqdm(total=total, desc=label, unit="sub", file=self.stream,
                              dynamic_ncols=True, leave=True)

    def counts(self) -> str:
        return f"{self.graded} graded, {self.failed} failed, {self.flagged} flagged"

    def update(self, result) -> None:
        self.done += 1
        if result.status == "graded":
            self.graded += 1
        else:
            self.failed += 1
        self.flagged += bool(getattr(result, "flags", None))
        line = "  " + result.line()
        if self._tqdm is not None:
            self._tqdm.write(line, file=self.stream)
            self._tqdm.set_postfix_str(self.counts(), refresh=False)
            self._tqdm.update(1)
        else:
            print(f"{line}  [{self.done}/{self.total}: {self.counts()}]", file=self.stream,
                  flush=True)

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None
