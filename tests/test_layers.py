"""The layers hold: the library students import knows nothing of grading, and the grading
pipeline's modules import each other in one direction only.

- importing every ``attnkit`` module (``attnkit.cli`` too) loads no ``autograder`` module;
- no file under ``lib/attnkit/`` names the grading package at all;
- every ``autograder`` module imports on its own in a fresh interpreter, and the static import
  graph of ``autograder/`` (every ``import``, also inside functions) has no cycle.
"""
from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import autograder

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "lib" / "attnkit"
GRADING = "autograder"


def _python(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter of this environment, from the repository root."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def _grading_modules() -> dict[str, Path]:
    """Every module of the grading package: dotted name -> source file."""
    found = {GRADING: Path(autograder.__file__)}
    for info in pkgutil.walk_packages(autograder.__path__, f"{GRADING}."):
        spec = info.module_finder.find_spec(info.name.rpartition(".")[2])
        found[info.name] = Path(spec.origin)
    return found


def test_importing_every_library_module_loads_no_grading_module():
    code = f"""
import importlib, pkgutil, sys
import attnkit
names = ["attnkit.cli"] + [m.name for m in pkgutil.walk_packages(attnkit.__path__, "attnkit.")]
for name in names:
    importlib.import_module(name)
loaded = sorted(m for m in sys.modules if m == {GRADING!r} or m.startswith({GRADING + "."!r}))
print(len(names), "modules;", "loaded:", loaded)
assert not loaded, f"importing the library loaded {{loaded}}"
"""
    done = _python(code)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]


def test_no_library_file_names_the_grading_package():
    hits = []
    for path in sorted(LIB.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
            if GRADING in line.lower():
                hits.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()[:80]}")
    assert not hits, "the library names the grading package:\n" + "\n".join(hits)


def imported_names(name: str, path: Path, modules: set[str]) -> set[str]:
    """What module ``name`` (source at ``path``) imports anywhere in its body, as absolute
    dotted names: ``import a.b`` gives a.b; ``from a import b`` gives a.b when that is one of
    ``modules``, else a; relative imports are resolved against the module's package."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module
            if node.level:  # relative: from the package, one level up per extra dot
                base = package.rsplit(".", node.level - 1)[0]
                base = f"{base}.{node.module}" if node.module else base
            found.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                         for alias in node.names)
    return found - {name}


def test_every_grading_module_imports_on_its_own():
    """Each module is imported in a fresh process that has loaded no grading module.

    One interpreter loads what the package imports from outside (the library, nbgrader, torch,
    ...: slow, and the same for every module), then forks one child per module, which imports
    that module alone. A module that works only after another was imported fails here.
    """
    modules = _grading_modules()
    outside = sorted({m for name, path in modules.items()
                      for m in imported_names(name, path, set(modules))
                      if m.split(".")[0] != GRADING})
    code = f"""
import importlib, os, sys, traceback
for dep in {outside!r}:
    try:
        importlib.import_module(dep)
    except ImportError:
        pass  # not a module (an attribute), or optional: the child says if it matters
assert not [m for m in sys.modules if m.split(".")[0] == {GRADING!r}]
failed = []
for name in {sorted(modules)!r}:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    if os.waitpid(pid, 0)[1] != 0:
        failed.append(name)
print("failed:", failed)
sys.exit(1 if failed else 0)
"""
    done = _python(code)
    assert done.returncode == 0, done.stdout[-1000:] + done.stderr[-5000:]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None when it has none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_reports_the_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_the_grading_package_has_no_import_cycle():
    modules = _grading_modules()
    graph = {name: imported_names(name, path, set(modules)) & set(modules)
             for name, path in modules.items()}
    assert graph[f"{GRADING}.pipeline"] >= {f"{GRADING}.dispatch", f"{GRADING}.job"}  # it reads them
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in the grading package: " + " -> ".join(cycle)
