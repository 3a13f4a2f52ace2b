"""Grader side of the in-kernel guard (:mod:`attnkit.guard`): what goes into a notebook before it
runs, what is checked after, and a static scan of the student's cells.

The executor (``execute.py``) calls :func:`prepare` on a notebook after nbgrader has put back
the grade cells and hidden tests (and again on the original before each re-run after a kernel
restart), executes it, then calls :func:`finish`.

- ``prepare`` inserts a locked first cell that installs the guard (it runs before any student
  code) and a last cell that publishes the guard's report. The guard learns the hashes of the
  instructor's cells (grade and locked cells, checked against the course's source notebook
  when it can be found), the names only student cells bind, the library references this
  assignment protects (derived from their ``graded_in`` tags by
  :func:`attnkit.graded.protected_in`) and the paths the kernel must not open.
- ``finish`` removes both cells, gives an error output (score 0) to every grade cell that has
  none but did not really run to its end (no valid completion record from the guard: the
  test was blanked, skipped, or student code patched something while it ran), and records
  the flags, short reasons for a person, in ``resources["attnkit_flags"]`` and in
  ``.attnkit-flags.json`` in the notebook's folder.
- ``scan`` flags suspicious constructs in student cells (input/AST transformers, patching
  imported modules, ``exec``/``eval``/``setattr``, ``sys.modules``, ``gc``, ``ctypes``, process
  and signal calls, history variables, function internals, reading files...). A flag is a
  reason for a person to look, not a penalty.
"""
from __future__ import annotations

import ast
import copy
import hashlib
import json
import re
import secrets
from pathlib import Path

import nbformat

import attnkit
from attnkit.graded import protected_in
from attnkit.guard import MIME, verify

from .assignments import forbidden_in, watches_references
from .cells import grade_id, is_grade, is_instructor, is_solution

FLAGS_FILE = ".attnkit-flags.json"
_META = "attnkit_guard"
REPO = Path(attnkit.__file__).resolve().parents[2]

# Folders of the repository a kernel never needs (the library is in lib/, imported from there).
_DENIED_IN_REPO = ("solutions", "autograder", "tests", ".git", "scripts")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _bound_names(source: str) -> set[str]:
    """Top-level names a cell binds (def, class, import, assignment targets, for, with)."""
    try:
        tree = ast.parse(_strip_magics(source))
    except SyntaxError:
        return set()
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
            continue
        for sub in ast.walk(node):
            if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                break
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                names.add(sub.id)
    return names


def _strip_magics(source: str) -> str:
    """Cell source with IPython magics and shell escapes commented out (for ``ast.parse``)."""
    return re.sub(r"^(\s*)([%!])", r"\1#\2", source, flags=re.M)


def _source_cells(resources: dict) -> set[str] | None:
    """Sources of the instructor cells of the course's source notebook, when it can be found.

    nbgrader autogrades in ``<course>/autograded/<student>/<assignment>/``; the source notebook
    (with hidden tests) is ``<course>/source/<assignment>/<name>.ipynb``.
    """
    path = Path(resources.get("metadata", {}).get("path") or ".").resolve()
    if len(path.parts) < 4 or path.parents[1].name != "autograded":
        return None
    name = resources.get("metadata", {}).get("name")
    folder = path.parents[2] / "source" / path.name
    files = [folder / f"{name}.ipynb"] if name else sorted(folder.glob("*.ipynb"))
    sources = set()
    for f in files:
        if f.exists():
            sources.update(c.source for c in nbformat.read(str(f), as_version=4).cells if is_instructor(c))
    return sources or None


def _answer_names(resources: dict) -> set[str] | None:
    """Names the source notebook's solution cells bind (what students are meant to define)."""
    path = Path(resources.get("metadata", {}).get("path") or ".").resolve()
    if len(path.parts) < 4 or path.parents[1].name != "autograded":
        return None
    names = set()
    for f in sorted((path.parents[2] / "source" / path.name).glob("*.ipynb")):
        for c in nbformat.read(str(f), as_version=4).cells:
            if c.cell_type == "code" and is_solution(c):
                names |= _bound_names(c.source)
    return names or None


def _assignment(resources: dict) -> str | None:
    path = Path(resources.get("metadata", {}).get("path") or ".").resolve()
    name = resources.get("metadata", {}).get("name")
    for candidate in (name, path.name):
        if candidate and protected_in(candidate):
            return candidate
    return resources.get("nbgrader", {}).get("assignment") if isinstance(resources.get("nbgrader"), dict) else None


def _paths(resources: dict) -> tuple[list[str], list[str]]:
    """(denied, allowed) folders for the kernel: the repository's solutions and grader, the
    course and gradebook around the submission's folder (which stays allowed)."""
    path = Path(resources.get("metadata", {}).get("path") or ".").resolve()
    deny = [str(REPO / d) for d in _DENIED_IN_REPO]
    allow = [str(path)]
    if len(path.parts) >= 5 and path.parents[1].name == "autograded":
        deny.append(str(path.parents[3]))  # the grading output: course, gradebook, feedback, other students
    return deny, allow


def prepare(nb, resources: dict):
    """Insert the guard's first and last cells into ``nb`` (in place; also returned)."""
    nb.cells = [c for c in nb.cells if _META not in c.get("metadata", {})]  # idempotent
    trusted_sources = _source_cells(resources)
    cells, answer_names, student_cells = {}, set(), []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        trusted = is_instructor(cell) and (trusted_sources is None or cell.source in trusted_sources)
        binds = _bound_names(cell.source)
        if is_solution(cell):
            answer_names |= binds
        if trusted:
            cells[_sha(cell.source)] = {"grade_id": grade_id(cell) or f"cell {index}",
                                        "grade": is_grade(cell), "binds": sorted(binds)}
        else:
            student_cells.append((index, cell.source))
    key = secrets.token_hex(16)
    assignment = _assignment(resources)
    deny, allow = _paths(resources)
    forbidden = list(forbidden_in(assignment)) if assignment else []
    config = {"key": key, "cells": cells, "references": list(protected_in(assignment) if assignment else ()),
              "forbidden": forbidden, "watch_references": watches_references(assignment) if assignment else True,
              "answer_names": sorted(_answer_names(resources) or answer_names),
              "deny_paths": deny, "allow_paths": allow}
    install = nbformat.v4.new_code_cell(
        "import attnkit.guard as _attnkit_guard\n"
        f"_attnkit_guard.install(__import__('json').loads({json.dumps(json.dumps(config))}))\n"
        "del _attnkit_guard")
    report = nbformat.v4.new_code_cell("__import__('attnkit.guard', fromlist=['report']).report()")
    for cell, role in ((install, "install"), (report, "report")):
        cell.metadata[_META] = role
    nb.cells = [install, *nb.cells, report]
    resources["attnkit_guard"] = {"key": key, "static_flags": scan(student_cells)}
    return nb


def _records(cell) -> list[dict]:
    return [o["data"][MIME] for o in cell.get("outputs", [])
            if o.get("output_type") == "display_data" and MIME in o.get("data", {})]


def _error(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_output("error", ename="GradingGuardError", evalue=text,
                                  traceback=[f"GradingGuardError: {text}"])


def finish(nb, resources: dict):
    """Remove the guard's cells, fail grade cells that did not really run, record the flags."""
    state = resources.get("attnkit_guard") or {}
    key = state.get("key")
    flags: list[str] = []
    report = [c for c in nb.cells if c.get("metadata", {}).get(_META) == "report"]
    install = [c for c in nb.cells if c.get("metadata", {}).get(_META) == "install"]
    if key is None:
        flags.append("the grading guard was not prepared for this notebook")
    elif install and any(o.get("output_type") == "error" for o in install[0].get("outputs", [])):
        err = next(o for o in install[0].outputs if o.get("output_type") == "error")
        flags.append(f"the grading guard did not install ({err.get('ename')}: {err.get('evalue')})")
    good = [r for c in report for r in _records(c) if key and verify(r, key) and r.get("kind") == "report"]
    if good:
        flags.extend(good[-1].get("flags", []))
    elif key is not None:
        flags.append("the guard's final report is missing (the kernel died or the run was cut short)")
    nb.cells = [c for c in nb.cells if _META not in c.get("metadata", {})]
    for cell in nb.cells:
        if cell.cell_type != "code" or not is_grade(cell):
            continue
        records = _records(cell)
        cell.outputs = [o for o in cell.get("outputs", []) if not (
            o.get("output_type") == "display_data" and MIME in o.get("data", {}))]
        if any(o.get("output_type") == "error" for o in cell.outputs):
            continue
        gid = grade_id(cell)
        mine = [r for r in records if key and verify(r, key) and r.get("grade_id") == gid]
        if mine and all(r.get("ok") for r in mine):
            continue
        why = next((r.get("why") for r in mine if r.get("why")), "") or (
            "its code was altered or it did not run" if cell.get("execution_count") else "it did not run")
        flags.append(f"grade cell {gid!r} did not run to its end ({why})")
        cell.outputs.append(_error(f"the grading guard could not confirm that this test ran to its end: {why}."))
    flags.extend(state.get("static_flags", []))
    flags = list(dict.fromkeys(flags))
    resources["attnkit_flags"] = flags
    folder = resources.get("metadata", {}).get("path")
    if folder:
        (Path(folder) / FLAGS_FILE).write_text(json.dumps({"flags": flags}, indent=1))
    return nb


# ---------------------------------------------------------------------------------------------
# Static scan

_CALLS = {"setattr": "setattr()", "delattr": "delattr()", "exec": "exec()", "eval": "eval()",
          "compile": "compile()", "__import__": "__import__()", "globals": "globals()",
          "vars": "vars()", "open": "opens files", "get_ipython": "IPython shell access (get_ipython)",
          "breakpoint": "breakpoint()", "input": "input()"}
_MODULES = {"importlib": "importlib", "gc": "gc", "ctypes": "ctypes", "subprocess": "subprocess",
            "signal": "signal", "socket": "network (socket)", "sqlite3": "sqlite3", "pty": "pty",
            "multiprocessing": "multiprocessing", "threading": "threads", "_thread": "threads",
            "builtins": "builtins", "inspect": "inspect", "pathlib": "file access (pathlib)",
            "shutil": "file access (shutil)", "glob": "file access (glob)", "pickle": "pickle",
            "marshal": "marshal", "types": "types", "IPython": "IPython internals", "urllib": "network",
            "requests": "network", "http": "network", "resource": "resource limits"}
_ATTRS = {"__closure__", "__code__", "__globals__", "__wrapped__", "__builtins__", "__subclasses__",
          "__bases__", "__mro__", "f_back", "f_locals", "f_globals", "tb_frame", "cell_contents",
          "input_transformers_post", "input_transformers_cleanup", "ast_transformers",
          "input_transformer_manager", "user_ns", "modules", "settrace", "setprofile", "_getframe",
          "kill", "killpg", "_exit", "abort", "fork", "forkpty", "system", "popen", "execv", "execve",
          "spawnv", "posix_spawn", "read_text", "read_bytes", "listdir", "scandir", "walk", "guard",
          "history_manager", "addaudithook",
          # torch's dispatch internals (popping or disabling the guard's dispatch mode) and the
          # compilers' internals (starting programs)
          "_C", "_python_dispatch", "_pop_mode", "_disable_current_modes", "_pop_torch_dispatch_mode",
          "_DisableTorchDispatch", "_ExcludeDispatchKeyGuard", "_unset_dispatch_mode", "_inductor",
          "cpp_builder"}
_INTERNAL_MODULES = ("torch._C", "torch.utils._python_dispatch", "torch._inductor", "torch._dynamo")
_HISTORY = {"In", "Out", "_ih", "_oh", "_i", "_ii", "_iii", "_dh"}


# Module names the released notebooks import in their locked setup cells (and their usual aliases).
_COMMON_MODULES = frozenset({"torch", "nn", "F", "np", "numpy", "math", "time", "attnkit", "grading",
                             "builtins", "os", "sys", "warnings", "functools", "random", "plt"})


def _scan_cell(source: str) -> list[str]:
    try:
        tree = ast.parse(_strip_magics(source))
    except SyntaxError:
        return []
    found = []
    imported: set[str] = set()
    if re.search(r"^\s*[%!]", source, flags=re.M):
        found.append("IPython magics or shell commands")
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for mod in mods:
                root = mod.split(".")[0]
                if root in _MODULES:
                    found.append(f"imports {_MODULES[root]}")
                if mod.startswith(_INTERNAL_MODULES) or any(
                        f"{mod}.{a.name}".startswith(_INTERNAL_MODULES) for a in node.names):
                    found.append("imports torch internals (dispatch or compiler)")
                if mod.startswith(("attnkit.guard", "attnkit.graded")) or (
                        isinstance(node, ast.ImportFrom) and root == "attnkit"
                        and any(a.name in ("guard", "graded") for a in node.names)):
                    found.append("imports the grading guard")
            imported.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _CALLS:
            found.append(f"calls {_CALLS[node.func.id]}")
        elif isinstance(node, ast.Attribute) and node.attr in _ATTRS:
            found.append(f"uses .{node.attr}")
        elif isinstance(node, ast.Name) and (node.id in _HISTORY or re.fullmatch(r"_i\d+", node.id)):
            found.append(f"reads the input/output history ({node.id})")
        elif isinstance(node, ast.Name) and node.id in ("__builtins__", "get_ipython"):
            found.append(f"uses {node.id}")
        elif isinstance(node, ast.ClassDef):
            for stmt in node.body:
                if isinstance(stmt, ast.FunctionDef) and stmt.name in ("__eq__", "__ne__", "__bool__",
                                                                        "__torch_function__", "__torch_dispatch__"):
                    found.append(f"defines {stmt.name} in class {node.name}")
            for base in node.bases:
                text = ast.unparse(base)
                if text.endswith("Tensor") or text.endswith("ModuleType"):  # not nn.Module
                    found.append(f"subclasses {text}")
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            for target in targets:
                if isinstance(target, ast.Attribute):
                    root = target
                    while isinstance(root, ast.Attribute):
                        root = root.value
                    # only attributes of modules: `x.requires_grad = True` is honest work
                    if isinstance(root, ast.Name) and root.id in imported | _COMMON_MODULES:
                        found.append(f"assigns {ast.unparse(target)} (patching an attribute)")
        elif isinstance(node, ast.While) and isinstance(node.test, ast.Constant) and node.test.value \
                and not any(isinstance(n, (ast.Break, ast.Return)) for n in ast.walk(node)):
            found.append("loops forever (while True without break)")
        elif isinstance(node, ast.ExceptHandler):
            names = [] if node.type is None else [ast.unparse(t) for t in (
                node.type.elts if isinstance(node.type, ast.Tuple) else [node.type])]
            if node.type is None or any(n.endswith(("KeyboardInterrupt", "BaseException", "SystemExit"))
                                        for n in names):
                found.append("catches KeyboardInterrupt/BaseException (ignores interrupts)")
    return found


def scan(cells: list[tuple[int, str]]) -> list[str]:
    """Static flags for student cells ``[(index, source)]``: "static: <what> (cells i, j)"."""
    where: dict[str, list[int]] = {}
    for index, source in cells:
        for what in _scan_cell(source):
            where.setdefault(what, [])
            if index not in where[what]:
                where[what].append(index)
    return [f"static: {what} (cell {', '.join(map(str, idx))})" for what, idx in where.items()]


def run_guarded(nb, path: Path | str, *, timeout: int = 120, name: str | None = None):
    """prepare, execute with nbclient (errors allowed), finish: for tests and one-off checks.

    Returns ``(notebook, resources)``; the kernel runs in ``path``. A kernel that dies ends the
    run (the real executor restarts it and re-runs; see ``execute.py``).
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError

    nb = copy.deepcopy(nb)
    resources = {"metadata": {"path": str(path), **({"name": name} if name else {})}}
    prepare(nb, resources)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                            interrupt_on_timeout=True, resources=resources)
    try:
        client.execute()
    except DeadKernelError:
        pass
    finish(nb, resources)
    return nb, resources


def read_flags(folder) -> list[str]:
    """The flags ``finish`` wrote in ``folder`` (``[]`` when there is no readable file)."""
    try:
        data = json.loads((Path(folder) / FLAGS_FILE).read_text())
    except (OSError, ValueError):
        return []
    flags = data.get("flags") if isinstance(data, dict) else None
    return [str(f) for f in flags] if isinstance(flags, list) else []
