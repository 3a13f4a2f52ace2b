"""nbgrader's Execute step, made to survive hostile notebooks (``ResilientExecute``).

nbgrader runs the cells of a submission one after the other in one kernel and gives up on the
whole submission when the kernel dies (``os._exit``, a segfault, a SIGKILL from a resource
limit) or when a cell that ran past its time limit ignores the interrupt (a loop that catches
``KeyboardInterrupt``). Here instead:

- the offending cell is *skipped*: the kernel is restarted and the notebook re-run from the
  top without it (up to ``max_restarts`` times); the cell gets an error output saying why
  ("this cell killed the kernel ...", "this cell ran past the 60 s limit and ignored the
  interrupt ..."), so a grade cell that was skipped scores 0 and the others score what they earn;
- the whole notebook, restarts included, has a wall-clock limit (``notebook_timeout``): a cell
  running at the deadline is interrupted, and every cell left gets the error output
  "not run: the notebook ran past its N s limit" (nbgrader gives full marks to a grade cell
  with no output, so a cell that did not run must carry an error);
- the kernel runs in the sandbox (``sandbox.SandboxKernelManager``) unless the config names
  another ``kernel_manager_class`` (``attnkit grade --unsafe``: the plain kernel).

What happened (restarts, skipped cells and why, cells not run, the kernels used and the seconds
spent starting them, in the guard's install cell, in the other cells and shutting them down)
goes into ``resources["attnkit_execution"]`` and into ``.attnkit-execution.json`` beside the
autograded notebook (one entry per notebook), which the pipeline reads for its report. The
kernel cannot forge it: the kernel works in a scratch copy of the notebook's folder that never
holds the records (``pool.py``).

Kernels come from the process's pool (``pool.py``): started ahead, with the modules of
``warm_imports`` imported while they boot, each used for one run and killed after it (a restart
takes a fresh one).

The in-kernel guard (``protect.py``) goes around every run: ``protect.prepare(nb, resources)`` on
a fresh copy of the original notebook before executing, and ``protect.finish(nb, resources)``
once after the last run.
"""
from __future__ import annotations

import copy
import json
import math
import os
import time

from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbconvert.preprocessors import ExecutePreprocessor
from nbformat import NotebookNode
from nbgrader.preprocessors import Execute
from traitlets import Integer, List, Type, Unicode

from . import protect
from .cells import grade_id
from .limits import DEFAULT_LIMITS
from .pool import kernel_pool
from .sandbox import SandboxKernelManager

SIDECAR = ".attnkit-execution.json"
_KEY = "attnkit_original_index"  # cell metadata while executing: index in the original notebook


def _error(ename: str, text: str) -> NotebookNode:
    """An error output (nbgrader scores a grade cell with one 0)."""
    return NotebookNode(output_type="error", ename=ename, evalue=text,
                        traceback=[f"\x1b[0;31m{ename}\x1b[0m: {text}"])


# Seconds the guard's install cell (protect.prepare) may take, whatever the per-cell limit.
INSTALL_TIMEOUT = 120


class ResilientExecute(Execute):
    """nbgrader's ``Execute`` with restarts, skipped cells and a per-notebook time limit."""

    kernel_manager_class = Type(
        SandboxKernelManager, klass="jupyter_client.KernelManager",
        help="the sandbox; AsyncKernelManager for --unsafe").tag(config=True)
    notebook_timeout = Integer(
        DEFAULT_LIMITS.notebook_timeout, allow_none=True,
        help="seconds for the whole notebook, restarts included").tag(config=True)
    max_restarts = Integer(
        3, help="kernel restarts before the remaining cells are given up").tag(config=True)
    iopub_timeout = Integer(
        15, help="seconds to wait for a cell's last output after its reply; past that after a "
        "timeout, the kernel ignored the interrupt").tag(config=True)
    sidecar = Unicode(
        SIDECAR, help="record file beside the autograded notebook").tag(config=True)
    warm_imports = List(
        Unicode(), ["attnkit.guard", "attnkit.measure", "numpy.testing", "torch.testing",
                    "torch._dynamo", "torch._inductor.config", "sympy"],
        help="modules a kernel imports while it boots (what the guard's install cell imports), "
        "binding no name; the guard is still installed by the notebook's first cell").tag(config=True)
    lookahead = Integer(
        1, help="kernels started ahead of the next run in this process (pool.py); 0: each "
        "kernel starts when its run begins").tag(config=True)

    def __init__(self, *args, **kwargs):
        # Not Execute.__init__: it pins AsyncKernelManager over whatever the config says.
        ExecutePreprocessor.__init__(self, *args, **kwargs)
        self._deadline: float | None = None
        self.kernels: list[dict] = []  # pid and uid of the kernel of each run (restarts included)

    # ------------------------------------------------------------------ the whole notebook

    def preprocess(self, nb: NotebookNode, resources: dict, km=None):
        resources = resources if resources is not None else {}
        start = time.monotonic()
        self._deadline = start + self.notebook_timeout if self.notebook_timeout else None
        path = (resources.get("metadata") or {}).get("path") or ""
        sidecar = os.path.join(path, self.sidecar) if path else None
        if sidecar and not os.path.isfile(sidecar):
            with open(sidecar, "w") as f:  # exists before the kernel: mounted read-only in it
                f.write("{}\n")
        original = copy.deepcopy(nb)
        for i, cell in enumerate(original.cells):
            cell.metadata[_KEY] = i
        skip: dict[int, tuple[str, str]] = {}  # original index -> (ename, why)
        record = {"sandboxed": issubclass(self.kernel_manager_class, SandboxKernelManager),
                  "restarts": 0, "skipped": [], "not_run": 0, "timed_out": False,
                  "notebook_timeout": self.notebook_timeout}
        timings: dict[str, float] = {}
        self.kernels = []
        while True:
            work = protect.prepare(copy.deepcopy(original), resources)
            failure = self._run(work, resources, skip, km, timings)
            if failure is None:
                break
            index, ename, why = failure
            skip[index] = (ename, why)
            record["skipped"].append({"cell": index, "grade_id": grade_id(original.cells[index]),
                                      "reason": why})
            if record["restarts"] >= self.max_restarts or self._out_of_time():
                at = next(i for i, c in enumerate(work.cells) if c.metadata.get(_KEY) == index)
                self._give_up(work, at + 1, "not run: " + (
                    f"the kernel was restarted {record['restarts']} times (the limit)"
                    if not self._out_of_time() else self._late()))
                then = ("no time was left to re-run the notebook" if self._out_of_time()
                        else "the kernel was not restarted again (limit reached)")
                work.cells[at].outputs = [_error(ename, why.split(";")[0] + "; " + then)]
                break
            record["restarts"] += 1
            self.log.warning("restarting the kernel without cell %d: %s", index, why)
        record["not_run"] = sum(any(o.get("ename") == "NotRunError" for o in c.get("outputs", []))
                                for c in work.cells)
        record["timed_out"] = any("notebook ran past" in o.get("evalue", "")
                                  for c in work.cells for o in c.get("outputs", []))
        record["seconds"] = round(time.monotonic() - start, 2)
        record["timings"] = timings
        record["kernels"] = self.kernels
        for cell in work.cells:
            cell.metadata.pop(_KEY, None)
        work = protect.finish(work, resources)
        resources["attnkit_execution"] = record
        if sidecar:
            self._write_sidecar(sidecar, resources, record)
        nb.clear()
        nb.update(work)
        return nb, resources

    def _run(self, work: NotebookNode, resources: dict, skip: dict, km=None, timings=None):
        """Execute ``work`` in a fresh kernel; ``None``, or (original index, ename, why) of the
        cell that killed the kernel or ignored the interrupt (the kernel is then shut down).

        The kernel comes from this process's pool (``pool.py``: started ahead, used once) unless
        ``km`` is given; ``timings`` (phase -> seconds) gets this run's time added."""
        from nbclient import NotebookClient

        timings = timings if timings is not None else {}
        clock = time.perf_counter()

        def lap(phase: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[phase] = round(timings.get(phase, 0.0) + now - clock, 3)
            clock = now

        NotebookClient.__init__(self, work, km)  # what ExecutePreprocessor.preprocess does
        self.reset_execution_trackers()
        self._check_assign_resources(resources)
        folder = (resources.get("metadata") or {}).get("path") or None
        lease = None
        if km is None:
            pool = kernel_pool()
            pool.lookahead = self.lookahead
            lease = pool.take(self)
            lease.load(folder)
            self.km = lease.km
            self.kernels.append({"pid": lease.pid, "uid": getattr(lease.km, "uid", None),
                                 "age_s": round(time.monotonic() - lease.started, 2)})
        graceful = self.shutdown_kernel
        if lease is not None:  # once its outputs are in, nothing in the kernel is needed: kill it
            self.shutdown_kernel = "immediate"
        try:
            with self.setup_kernel():
                info = self.wait_for_reply(self.kc.kernel_info())
                work.metadata["language_info"] = info["content"]["language_info"]
                lap("kernel_start")
                for index, cell in enumerate(work.cells):
                    original = cell.metadata.get(_KEY)
                    if cell.cell_type != "code":
                        continue
                    if original in skip:
                        cell.outputs = [_error(*skip[original])]
                        continue
                    if self._out_of_time():
                        self._give_up(work, index, "not run: " + self._late())
                        break
                    try:
                        self.preprocess_cell(cell, resources, index)
                    except (DeadKernelError, CellTimeoutError) as exc:
                        self.shutdown_kernel = "immediate"  # kill it, do not ask it politely
                        if original is None:  # the guard's own cell: nothing to skip
                            raise
                        return (original, *self._why(exc))
                    except BaseException:  # Ctrl-C, or the worker told to stop: no goodbyes
                        self.shutdown_kernel = "immediate"
                        raise
                    finally:
                        lap("install" if cell.metadata.get("attnkit_guard") == "install" else "cells")
                    if self._out_of_time() and any(  # interrupted at the notebook deadline
                            o.get("ename") == "CellTimeoutError" for o in cell.outputs):
                        cell.outputs.append(_error("NotebookTimeoutError",
                                                   "interrupted: " + self._late()))
        finally:
            self.shutdown_kernel = graceful
            if lease is not None:
                text = lease.kernel_log().strip()
                lease.release(folder)
                if text:
                    self.log.info("kernel output:\n%s", text)
            lap("shutdown")
        self.set_widgets_metadata()
        return None

    # ------------------------------------------------------------------ helpers

    def _why(self, exc: Exception) -> tuple[str, str]:
        if isinstance(exc, DeadKernelError):
            return ("DeadKernelError", "this cell killed the kernel (it exited, crashed or hit a "
                    "resource limit); it was skipped and the notebook re-run without it")
        return ("CellTimeoutError", f"this cell ran past the {self.timeout} s limit and ignored "
                "the interrupt; it was skipped and the notebook re-run without it")

    def _late(self) -> str:
        return f"the notebook ran past its {self.notebook_timeout} s limit"

    def _out_of_time(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    @staticmethod
    def _give_up(work: NotebookNode, first: int, why: str) -> None:
        """Error outputs on every code cell from ``first`` on (they did not run)."""
        for cell in work.cells[first:]:
            if cell.cell_type == "code":
                cell.outputs = [_error("NotRunError", why)]
                cell.execution_count = None

    def _get_timeout(self, cell):
        """The cell's limit, cut to what is left of the notebook's."""
        timeout = super()._get_timeout(cell)
        if timeout and cell is not None and cell.get("metadata", {}).get("attnkit_guard") == "install":
            # the guard's install cell imports torch and attnkit: a slow start on a busy
            # machine must not be mistaken for a student's slow cell
            timeout = max(timeout, INSTALL_TIMEOUT)
        if self._deadline is None:
            return timeout
        left = max(1, math.ceil(self._deadline - time.monotonic()))
        return min(timeout, left) if timeout else left

    def _write_sidecar(self, path: str, resources: dict, record: dict) -> None:
        name = (resources.get("nbgrader") or {}).get("notebook") or "notebook"
        try:
            with open(path) as f:
                data = json.load(f)
            data = data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            data = {}
        data[name] = record
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)


def read_sidecar(folder) -> dict:
    """The records of ``ResilientExecute`` in ``folder`` (notebook name -> record), or {}."""
    try:
        with open(os.path.join(folder, SIDECAR)) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def summary(records: dict) -> str:
    """One clause for the report, e.g. "kernel restarted 1 time: skipped 'loop' (ignored the
    interrupt)"; "" when nothing happened."""
    parts = []
    for record in records.values():
        if not isinstance(record, dict):
            continue
        skipped = [s for s in record.get("skipped", []) if isinstance(s, dict)]
        if skipped:
            names = ", ".join(
                f"'{s.get('grade_id') or '#' + str(s.get('cell', 0) + 1)}' ("
                + ("killed the kernel" if "killed" in s.get("reason", "") else
                   "ignored the interrupt") + ")" for s in skipped)
            n = record.get("restarts", 0)
            parts.append(f"kernel restarted {n} time{'s' * (n != 1)}, skipped {names}")
        if record.get("timed_out"):
            parts.append(f"notebook ran past its {record.get('notebook_timeout')} s limit "
                         f"({record.get('not_run', 0)} cells not run)")
    return "; ".join(parts)
