"""Resource and time limits of a grading kernel: the one set of defaults.

``Limits`` is read by the sandbox (``sandbox.SandboxKernelManager``: the rlimits of the kernel
process), the executor (``execute.ResilientExecute``: the wall-clock limit of the notebook), the
nbgrader configuration written for each course (``config.py``) and the ``attnkit grade`` flags
(``--memory``, ``--cpu-time``, ``--notebook-timeout``) that override them for one run.

The per-cell time limit is nbgrader's (``c.ExecutePreprocessor.timeout``), set per assignment in
``assignments.py``; ``Limits.for_cell_timeout`` scales the notebook and CPU limits to it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

GiB = 1 << 30
CELLS_PER_NOTEBOOK = 5  # the notebook's wall-clock limit, in cell limits (at least the default)


@dataclass(frozen=True)
class Limits:
    """Resource limits for one grading kernel (``None``: no limit).

    memory: address space in bytes (RLIMIT_AS): a bigger allocation raises ``MemoryError``.
    cpu_time: CPU seconds of the kernel process (RLIMIT_CPU; killed by SIGXCPU past it).
    file_size: largest file the kernel may write, bytes (RLIMIT_FSIZE).
    processes: processes and threads of the kernel's uid (RLIMIT_NPROC): bounds fork bombs.
    notebook_timeout: wall-clock seconds for the whole notebook, restarts included.
    """

    memory: int | None = 4 * GiB
    cpu_time: int | None = 1800
    file_size: int | None = 1 * GiB
    processes: int | None = 256
    notebook_timeout: int | None = 900

    @classmethod
    def for_cell_timeout(cls, cell_timeout: int, **overrides) -> Limits:
        """The limits for an assignment whose cells may each run ``cell_timeout`` seconds.

        The notebook gets ``CELLS_PER_NOTEBOOK`` cells' worth (never less than the default
        ``notebook_timeout``), the kernel twice that in CPU seconds; ``overrides`` (fields given
        on the command line) replace any of them.
        """
        notebook = max(cls().notebook_timeout, CELLS_PER_NOTEBOOK * int(cell_timeout))
        return dataclasses.replace(cls(notebook_timeout=notebook, cpu_time=2 * notebook),
                                   **overrides)


DEFAULT_LIMITS = Limits()
