"""The instructor's side of nbgrader's exchange on the kit's JupyterHub (``hub.py``).

``release_assignment`` stages the course directory (``source/`` from ``solutions/``, the kit's
grading config plus the exchange), runs ``generate_assignment``, records the due date and the
hub's students in the course's gradebook and ``release_assignment`` into the exchange;
``collect`` is nbgrader's ``collect`` (each student's newest submission, with its
``timestamp.txt``, into ``<course>/submitted``), which ``attnkit grade`` then grades; and
``release_feedback`` hands the kit's feedback pages back through the exchange, each to the
student whose submission it grades.
"""
from __future__ import annotations

import shutil
import stat
from pathlib import Path

from .config import COURSE_ID

EXCHANGE_MODE = 0o777 | stat.S_ISVTX  # nbgrader: everyone writes, only owners delete
_HUB_MARK = "# --- attnkit hub: the exchange (autograder/hub.py) ---"


def make_exchange(path: Path) -> Path:
    """nbgrader's exchange folder: world-writable with the sticky bit (mode 1777)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(EXCHANGE_MODE)  # chmod, not mkdir's mode: the umask would take bits off
    return path


def _api(course_root: Path):
    from .config import make_api

    return make_api(course_root)


def _check(result: dict, what: str) -> dict:
    from .outcome import failure_reason

    if not result.get("success"):
        raise RuntimeError(f"nbgrader {what} failed: {failure_reason(result)}")
    return result


def stage_hub_course(hub: "Hub", assignment: str) -> Path:  # hub.Hub (hub.py imports this module)
    """The instructor's course directory with ``source/<a>/<a>.ipynb`` and a config that also
    names the exchange; the gradebook ``gradebook.db`` lists the hub's students."""
    from .assignments import spec_for
    from .notebooks import solution_source
    from .release import stage_course

    course = hub.course_root
    stage_course(course, assignment, solution_source(assignment),
                 db_url=f"sqlite:///{course / 'gradebook.db'}", timeout=spec_for(assignment).timeout)
    config = course / "nbgrader_config.py"
    config.write_text(config.read_text().split(_HUB_MARK)[0] + f"""{_HUB_MARK}
c.Exchange.root = {str(hub.exchange)!r}
c.ExchangeCollect.check_owner = {hub.spawner != "lab"!r}  # LabSpawner: all submissions have one Unix owner
""")
    return course


def release_assignment(hub: "Hub", assignment: str, *, due: str | None = None) -> Path:
    """Stage the course, ``generate_assignment``, set the due date, ``release_assignment``."""
    from nbgrader.api import Gradebook

    from .config import nbgrader_session

    make_exchange(hub.exchange)
    course = stage_hub_course(hub, assignment)
    with nbgrader_session(course / "nbgrader.log"):
        api = _api(course)
        _check(api.generate_assignment(assignment, force=True, create=True), "generate_assignment")
        with Gradebook(api.coursedir.db_url, hub.course_id) as gb:
            for student in hub.students:
                gb.update_or_create_student(student)
        if due:
            set_due_date(course, assignment, due, course_id=hub.course_id)
        _check(api.release_assignment(assignment), "release_assignment")
    return course


def set_due_date(course_root: Path, assignment: str, due: str, *, course_id: str = COURSE_ID) -> None:
    """The assignment's due date in the course's gradebook (``nbgrader db assignment add --duedate``)."""
    from nbgrader.api import Gradebook
    from nbgrader.utils import parse_utc

    from .config import load_config

    db_url = load_config(course_root).CourseDirectory.db_url
    with Gradebook(db_url, course_id) as gb:
        gb.update_or_create_assignment(assignment, duedate=parse_utc(due))


def collect(course_root: Path, assignment: str) -> Path:
    """``nbgrader collect`` (newest submission of each student); return ``<course>/submitted``."""
    from .config import nbgrader_session

    with nbgrader_session(course_root / "nbgrader.log"):
        _check(_api(course_root).collect(assignment, update=True), "collect")
    return course_root / "submitted"


def _text(path: Path) -> str | None:
    return path.read_text().strip() if path.exists() else None


def release_feedback(run_out: Path, course_root: Path, assignment: str) -> list[str]:
    """Hand ``attnkit grade``'s feedback (``run_out/feedback/<s>/<a>.html``) back to the students.

    Each page goes to ``course_root/feedback/<s>/<a>/<a>.html`` beside the ``timestamp.txt`` and
    ``submission_secret.txt`` of the submission ``collect`` put in ``course_root/submitted``
    (nbgrader files feedback under a hash of that secret, which only the submitting student's
    cache holds), then nbgrader's ``release_feedback``. A student whose collected submission is
    not the one the run graded (another ``timestamp.txt`` than in ``run_out/course/submitted``:
    submitted again and re-collected after grading) is skipped. Returns the students whose
    feedback was released.
    """
    from .config import nbgrader_session

    run_out, course_root = Path(run_out), Path(course_root)
    released = []
    for submitted in sorted((course_root / "submitted").glob(f"*/{assignment}")):
        student = submitted.parent.name
        page = run_out / "feedback" / student / f"{assignment}.html"
        if not page.exists() or not (submitted / "submission_secret.txt").exists():
            continue
        graded = _text(run_out / "course" / "submitted" / student / assignment / "timestamp.txt")
        if graded is not None and graded != _text(submitted / "timestamp.txt"):
            print(f"{student}: the submission collected is not the one graded in {run_out} "
                  f"(submitted {_text(submitted / 'timestamp.txt')}, graded {graded}): "
                  "no feedback released (grade again)")
            continue
        dest = course_root / "feedback" / student / assignment
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(page, dest / f"{assignment}.html")
        for name in ("timestamp.txt", "submission_secret.txt"):
            shutil.copyfile(submitted / name, dest / name)
        released.append(student)
    if released:
        with nbgrader_session(course_root / "nbgrader.log"):
            _check(_api(course_root).release_feedback(assignment), "release_feedback")
    return released
