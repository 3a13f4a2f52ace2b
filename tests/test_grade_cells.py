"""Every grade cell must pass on the solution, fail on the blank notebook, and fail on each
plausible wrong answer listed in ``solutions/<assignment>/wrong_answers.py``.

The notebooks run cell by cell in an IPython kernel, as nbgrader's autograde runs them (same
kernel spec, cells in order, errors allowed), with the hidden tests in place. A grade cell
"fails" when it raises or writes to stderr (nbgrader scores both as 0).
``test_autograder_e2e.py`` checks the same through the real ``attnkit grade`` on the sample
submissions.

Speed: the cases of one assignment share one kernel (``xdist_group`` keeps them on one worker),
and the user namespace is wiped (``%reset -f``) before each case, so a case pays for running
its cells, not for starting a kernel and importing torch. The solution runs first, in a fresh
kernel. A wrong-answer case stops after the last grade cell it must fail: the cells after it
cannot change that cell's outcome.
"""
from __future__ import annotations

import ast
import copy
import queue
import time

import pytest
from jupyter_client import KernelManager
from nbgrader.preprocessors import ClearSolutions

from autograder.notebooks import assignment_names, read_source, solution_source
from autograder.samples import load_wrong_answers

pytestmark = pytest.mark.slow
CELL_TIMEOUT = 300


def _grade_id(cell) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def _is_grade_cell(cell) -> bool:
    return bool(cell.get("metadata", {}).get("nbgrader", {}).get("grade"))


class _Kernel:
    """One IPython kernel that runs notebooks one after another, each in a wiped namespace."""

    def __init__(self, cwd: str):
        self.cwd = cwd
        self.km = None
        self._start()

    def _start(self) -> None:
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(cwd=self.cwd)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)

    def stop(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)

    def cell(self, source: str) -> bool:
        """Run one cell; True when it raised or wrote to stderr. A kernel that dies or outruns
        the timeout is restarted, and the cell counts as failed."""
        msg_id = self.kc.execute(source, allow_stdin=False)
        deadline = time.monotonic() + CELL_TIMEOUT
        failed = False
        while True:
            if time.monotonic() > deadline or not self.km.is_alive():
                self.stop()
                self._start()
                return True
            try:
                msg = self.kc.get_iopub_msg(timeout=1)
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "error" or (kind == "stream" and content.get("name") == "stderr"):
                failed = True
            elif kind == "status" and content["execution_state"] == "idle":
                break
        while True:
            reply = self.kc.get_shell_msg(timeout=CELL_TIMEOUT)
            if reply["parent_header"].get("msg_id") == msg_id:
                return failed or reply["content"]["status"] != "ok"

    def run(self, nb, upto: set[str] | None = None) -> dict[str, bool]:
        """Run ``nb``'s code cells from a wiped namespace; return {grade cell id: passed}.
        With ``upto``, stop after the last of those grade cells."""
        assert not self.cell("get_ipython().run_line_magic('reset', '-f')"), "could not wipe the namespace"
        left = set(upto) if upto is not None else None
        results = {}
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            failed = self.cell(cell.source)
            if _is_grade_cell(cell):
                results[_grade_id(cell)] = not failed
                if left is not None:
                    left.discard(_grade_id(cell))
                    if not left:
                        break
        return results


_KERNELS: dict[str, _Kernel] = {}


# Session scope: a module-scoped finaliser would also run whenever the xdist worker switches to
# another module's tests in between, and every kernel would start (and import torch) again.
@pytest.fixture(scope="session", autouse=True)
def _stop_kernels():
    yield
    for kernel in _KERNELS.values():
        kernel.stop()
    _KERNELS.clear()


def _run(nb, name: str, upto: set[str] | None = None) -> dict[str, bool]:
    if name not in _KERNELS:
        _KERNELS[name] = _Kernel(str(solution_source(name).parent))
    return _KERNELS[name].run(nb, upto)


def _replace_cell(nb, grade_id: str, source: str):
    nb = copy.deepcopy(nb)
    cells = [c for c in nb.cells if _grade_id(c) == grade_id]
    assert len(cells) == 1, f"no single answer cell {grade_id!r}"
    cells[0].source = source.strip() + "\n"
    return nb


def _cases():
    for name in assignment_names():
        group = pytest.mark.xdist_group(name=f"grade_cells_{name}")
        yield pytest.param(name, "solution", None, id=f"{name}-solution", marks=group)
        yield pytest.param(name, "blank", None, id=f"{name}-blank", marks=group)
        for i, wrong in enumerate(load_wrong_answers(name)):
            yield pytest.param(name, "wrong", wrong, id=f"{name}-wrong{i}-{wrong['cell']}", marks=group)


@pytest.mark.parametrize("name, kind, wrong", list(_cases()))
def test_grade_cells(name, kind, wrong):
    source = read_source(solution_source(name))
    grade_ids = [_grade_id(c) for c in source.cells if _is_grade_cell(c)]
    assert grade_ids, f"{name} has no grade cells"
    if kind == "solution":
        results = _run(source, name)
        assert all(results.values()), f"the solution fails grade cells: {[g for g, ok in results.items() if not ok]}"
    elif kind == "blank":
        blank, _ = ClearSolutions().preprocess(copy.deepcopy(source), {})
        results = _run(blank, name)
        passed = [g for g, ok in results.items() if ok]
        assert not passed, f"the blank notebook passes grade cells {passed}"
    else:
        results = _run(_replace_cell(source, wrong["cell"], wrong["source"]), name, upto=set(wrong["fails"]))
        assert set(wrong["fails"]) <= set(results), f"grade cells {sorted(set(wrong['fails']) - set(results))} never ran"
        wrongly_passed = [g for g in wrong["fails"] if results[g]]
        assert not wrongly_passed, f"wrong answer ({wrong['why']}) passes {wrongly_passed}"


@pytest.mark.parametrize("name", assignment_names())
def test_written_answers_need_a_human(name):
    """A written answer (markdown, grade + solution) never runs in the kernel above and is never
    scored automatically: nbgrader's own rule (``determine_grade``) leaves an answered one pending
    (no score) and scores only an answer left as released, 0."""
    from nbgrader.preprocessors import ComputeChecksums
    from nbgrader.utils import determine_grade

    source = read_source(solution_source(name))
    written = [c for c in source.cells if _is_grade_cell(c) and c.get("metadata", {}).get("nbgrader", {}).get("solution")]
    assert all(c.cell_type == "markdown" for c in written), f"{name}: a graded answer cell that is code"
    blank, _ = ClearSolutions().preprocess(copy.deepcopy(source), {})
    blank, _ = ComputeChecksums().preprocess(blank, {})  # as generate_assignment stores them
    blank_cells = {_grade_id(c): c for c in blank.cells}
    for cell in written:
        released = blank_cells[_grade_id(cell)]
        assert released.source == "YOUR ANSWER HERE", released.source
        assert determine_grade(released) == (0, float(cell.metadata["nbgrader"]["points"]))
        answered = copy.deepcopy(released)
        answered.source = cell.source  # the model answer, in place of the stub
        assert determine_grade(answered)[0] is None, f"{name}: {_grade_id(cell)} was scored automatically"


def test_every_answer_cell_has_a_wrong_answer():
    """Each solution cell is exercised by at least one plausible wrong answer."""
    for name in assignment_names():
        wrong_cells = {w["cell"] for w in load_wrong_answers(name)}
        source = read_source(solution_source(name))
        answers = {_grade_id(c) for c in source.cells
                   if c.get("metadata", {}).get("nbgrader", {}).get("solution") and c.cell_type == "code"}
        assert answers <= wrong_cells, f"{name}: no wrong answer for {sorted(answers - wrong_cells)}"


def _top_level_names(source: str) -> set[str]:
    """Names a cell binds at module level: defs, classes, imports, assignment and loop targets."""
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.For, ast.With)):
            targets = (node.targets if isinstance(node, ast.Assign) else
                       [i.optional_vars for i in node.items if i.optional_vars] if isinstance(node, ast.With)
                       else [node.target])
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


@pytest.mark.parametrize("name", assignment_names())
def test_grade_cells_do_not_rebind_answer_names(name):
    """A grade cell that binds a name the student defines (``from attnkit import causal_mask``
    while the student writes ``causal_mask``) would swap the library's answer in for theirs."""
    cells = read_source(solution_source(name)).cells
    answers = set().union(*(_top_level_names(c.source) for c in cells
                            if c.cell_type == "code" and c.get("metadata", {}).get("nbgrader", {}).get("solution")))
    assert answers, f"{name}: no answer names found"
    for cell in cells:
        if cell.cell_type == "code" and _is_grade_cell(cell):
            clash = _top_level_names(cell.source) & answers
            assert not clash, f"{name}: grade cell {_grade_id(cell)} rebinds the student's {sorted(clash)}"
