"""nbgrader configuration and the process environment nbgrader runs in.

Every staged course directory gets a plain ``nbgrader_config.py``, so an instructor can also
``cd`` there and run the ``nbgrader`` command line (or formgrader) on the same gradebook. The
pipeline loads that very file, so the command line and the pipeline never disagree.

``nbgrader_session`` wraps calls into nbgrader:

- the virtualenv's ``bin/`` goes first on ``PATH`` (nbgrader shells out to ``alembic`` when it
  creates a gradebook), and the grading kernel, started with the kernelspec ``python3`` whose
  ``argv[0]`` is ``python``, resolves to this interpreter (``sys.executable``);
- ``PYTHONWARNINGS=ignore`` is set for the kernels it starts, so warnings do not reach stderr;
- nbgrader's log, Python warnings and whatever the kernels write to the process's stderr go
  to a log file, so the console shows only what the pipeline prints.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path

from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader

from .limits import Limits

COURSE_ID = "attnkit"
KERNEL_NAME = "python3"

_TEMPLATE = '''\
"""nbgrader configuration written by the attnkit autograder (safe to edit for one-off runs)."""
c = get_config()  # noqa: F821

c.CourseDirectory.root = {root!r}
c.CourseDirectory.course_id = {course_id!r}
c.CourseDirectory.db_url = {db_url!r}
c.Exchange.root = {exchange!r}  # unused; keeps nbgrader from probing /usr/local/share

# The grading kernel: the course's virtualenv python ("python3" kernelspec, argv[0] "python").
c.ExecutePreprocessor.kernel_name = {kernel!r}
# Seconds each cell may run; a cell that runs longer is interrupted and shows CellTimeoutError.
# (nbgrader's Execute preprocessor is an ExecutePreprocessor, so this applies to it.)
c.ExecutePreprocessor.timeout = {timeout!r}

# Any stderr output zeroes a grade cell: strip known-harmless noise (warnings, progress bars).
c.IgnorePattern.enabled = True
c.IgnorePattern.pattern = {pattern!r}

# Autograde executes with attnkit's ResilientExecute (autograder/execute.py): a cell that kills
# the kernel or ignores the interrupt is skipped (error output, the notebook re-run without it),
# and the whole notebook has a wall-clock limit. The kernel runs in the bubblewrap sandbox
# (autograder/sandbox.py: no network, whitelisted read-only files, rlimits) unless --unsafe.
c.Autograde.autograde_preprocessors = [
    "autograder.execute.ResilientExecute",
    "nbgrader.preprocessors.IgnorePattern",
    "nbconvert.preprocessors.ClearMetadataPreprocessor",
    "nbgrader.preprocessors.LimitOutput",
    "nbgrader.preprocessors.SaveAutoGrades",
    "nbgrader.preprocessors.AssignLatePenalties",
    "nbgrader.preprocessors.CheckCellMetadata",
]
# Late submissions (autograder/late.py): the due date is in the gradebook, the submission time in
# timestamp.txt; this plugin turns the seconds late into nbgrader's late_submission_penalty.
{late}
c.ResilientExecute.kernel_manager_class = {kernel_manager!r}
c.ResilientExecute.notebook_timeout = {notebook_timeout!r}  # seconds, restarts included
c.SandboxKernelManager.memory = {memory!r}  # address space, bytes
c.SandboxKernelManager.cpu_time = {cpu_time!r}  # CPU seconds per kernel
c.SandboxKernelManager.file_size = {file_size!r}  # largest file written, bytes
c.SandboxKernelManager.processes = {processes!r}  # processes + threads
c.SandboxKernelManager.gpu = {gpu!r}  # bind /dev/nvidia* into the sandbox (attnkit grade --gpu)

# The feedback and formgrader's pages carry MathJax inside (the math renders with no network)
# and style their tables: attnkit's mathjax macro (autograder/templates/base/mathjax.html.j2,
# autograder/pages.py) is found before nbconvert's; nbgrader's own templates as usual.
c.HTMLExporter.extra_template_basedirs = {template_dirs!r}
c.HTMLExporter.filters = {{"attnkit_mathjax": "autograder.pages.page_head"}}
'''


def config_text(root: Path, *, db_url: str, timeout: int, pattern: str,
                course_id: str = COURSE_ID, unsafe: bool = False,
                limits: Limits | None = None, gpu: bool = False,
                late_penalty: str = "none") -> str:
    """The contents of ``nbgrader_config.py`` for a course directory at ``root``.

    ``limits`` (default ``Limits.for_cell_timeout(timeout)``) bound the sandboxed kernel;
    ``unsafe`` runs the plain kernel instead (no isolation); ``gpu`` lets the sandboxed kernel
    see the GPU; ``late_penalty`` is ``late.parse_penalty``'s spelling (none, zero, P%/day).
    """
    from .late import penalty_config

    limits = limits or Limits.for_cell_timeout(timeout)
    manager = ("jupyter_client.manager.AsyncKernelManager" if unsafe
               else "autograder.sandbox.SandboxKernelManager")
    return _TEMPLATE.format(root=str(root), course_id=course_id, db_url=db_url,
                            template_dirs=template_dirs(),
                            exchange=str(root / "exchange"),
                            kernel=KERNEL_NAME, timeout=int(timeout), pattern=pattern,
                            kernel_manager=manager, notebook_timeout=limits.notebook_timeout,
                            memory=limits.memory, cpu_time=limits.cpu_time,
                            file_size=limits.file_size, processes=limits.processes, gpu=bool(gpu),
                            late=penalty_config(late_penalty))


def template_dirs() -> list[str]:
    """nbconvert template folders for nbgrader's pages: attnkit's (local MathJax) and nbgrader's
    (its feedback and formgrade templates, which nbgrader adds only when none are configured)."""
    import nbgrader

    from .pages import TEMPLATES

    return [str(TEMPLATES), str(Path(nbgrader.__file__).parent / "server_extensions" / "formgrader"
                                / "templates")]


def write_config(root: Path, **kwargs) -> Path:
    """Write ``root/nbgrader_config.py`` (see ``config_text`` for the arguments)."""
    (root / "exchange").mkdir(parents=True, exist_ok=True)  # (nbgrader logs a missing one as CRITICAL)
    path = root / "nbgrader_config.py"
    path.write_text(config_text(root, **kwargs))
    return path


def load_config(root: Path) -> Config:
    """Read ``root/nbgrader_config.py`` back into a traitlets ``Config``."""
    return PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()


def make_api(root: Path):
    """An ``NbGraderAPI`` for the course directory at ``root``, configured from its config file."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    config = load_config(root)
    return NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)


@contextlib.contextmanager
def _environ(**updates: str):
    old = {k: os.environ.get(k) for k in updates}
    os.environ.update(updates)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _stderr_to(log_file):
    """Point file descriptor 2 at ``log_file`` (kernels inherit it), then put it back."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(log_file.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def stderr_to_log(log_path: Path):
    """Send everything written to stderr (ours and the kernels') to ``log_path`` (appended)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", buffering=1) as log_file, _stderr_to(log_file):
        yield log_file


@contextlib.contextmanager
def nbgrader_session(log_path: Path):
    """Run nbgrader quietly: its log and all stderr go to ``log_path`` (appended)."""
    bin_dir = str(Path(sys.executable).parent)
    path = os.pathsep.join([bin_dir, os.environ.get("PATH", "")])
    loggers = [logging.getLogger(name) for name in ("traitlets", "py.warnings", "alembic")]
    saved = [(lg, lg.propagate, lg.level) for lg in loggers]
    with stderr_to_log(log_path) as log_file, _environ(PATH=path, PYTHONWARNINGS="ignore"):
        handler = logging.StreamHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(message)s"))
        for lg in loggers:
            lg.addHandler(handler)
            lg.propagate = False
            lg.setLevel(logging.INFO)
        logging.captureWarnings(True)
        try:
            yield log_file
        finally:
            logging.captureWarnings(False)
            for lg, propagate, level in saved:
                lg.removeHandler(handler)
                lg.propagate, lg.level = propagate, level
