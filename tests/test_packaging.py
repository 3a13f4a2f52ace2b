"""Packaging stays consistent: one dependency list in two files, the entry points people use."""
from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def pip_section_plain(text: str) -> list[str]:
    """The ``- pip:`` list of environment.yml, read without YAML: the ``- item`` lines indented
    under ``- pip:`` (comments and blank lines skipped)."""
    items, pip_indent = None, -1
    for raw in text.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        if not line:
            continue
        indent = len(line) - len(line.lstrip())
        if line.strip() == "- pip:":
            items, pip_indent = [], indent
        elif items is not None:
            if indent <= pip_indent or not line.strip().startswith("- "):
                break
            items.append(line.strip()[2:].strip())
    assert items is not None, "environment.yml has no `- pip:` section"
    return items


def environment_pip_section(text: str) -> list[str]:
    """The ``pip:`` list under ``dependencies:`` in environment.yml (PyYAML when installed)."""
    try:
        import yaml
    except ImportError:
        return pip_section_plain(text)
    deps = yaml.safe_load(text)["dependencies"]
    return next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)


def test_plain_reader_agrees_with_yaml():
    yaml = pytest.importorskip("yaml", reason="PyYAML not installed: only the plain reader is used")
    text = (ROOT / "environment.yml").read_text()
    deps = yaml.safe_load(text)["dependencies"]
    assert pip_section_plain(text) == next(d["pip"] for d in deps if isinstance(d, dict))


def test_environment_and_pyproject_list_the_same_requirements():
    declared = pyproject()["project"]["dependencies"]
    pip = [r for r in environment_pip_section((ROOT / "environment.yml").read_text()) if r != "-e ."]
    assert sorted(pip) == sorted(declared), (
        f"only in environment.yml: {sorted(set(pip) - set(declared))}; "
        f"only in pyproject.toml: {sorted(set(declared) - set(pip))}")
    assert len(set(declared)) == len(declared), "pyproject.toml lists a requirement twice"


def test_environment_installs_the_kit_itself():
    assert "-e ." in environment_pip_section((ROOT / "environment.yml").read_text())


def test_console_script_is_declared_and_resolves():
    target = pyproject()["project"]["scripts"]["attnkit"]
    assert target == "autograder.cli:main"
    module, func = target.split(":")
    assert callable(getattr(importlib.import_module(module), func))


def test_ci_runs_make_test():
    lines = [l.split("#", 1)[0].strip() for l in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert "make test" in lines


def test_makefile_has_the_entry_targets():
    text = (ROOT / "Makefile").read_text()
    targets = set()
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z0-9_. -]+?)\s*:(?!=)", line)
        if m:
            targets.update(m.group(1).split())
    assert {"demo", "test", "lab"} <= targets, f"Makefile targets: {sorted(targets)}"
    phony = re.search(r"^\.PHONY:(.*)$", text, re.M)
    assert phony and {"demo", "test", "lab"} <= set(phony.group(1).split())


def test_xdist_groups_stay_on_one_worker(tmp_path):
    """``make test`` runs ``--dist loadgroup``: the tests of one ``xdist_group`` (an expensive shared
    grading run, one kernel per assignment) must share a worker, or each worker pays for them
    again. pytest 9.2 with pytest-xdist 3.8 silently stopped grouping; this catches that."""
    import subprocess
    import sys

    (tmp_path / "test_grouped.py").write_text(
        "import time, pytest\n"
        "@pytest.mark.xdist_group(name='one')\n"
        "@pytest.mark.parametrize('i', range(6))\n"
        "def test_grouped(i):\n"
        "    time.sleep(0.05)\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v",
                           "-p", "no:cacheprovider", "test_grouped.py"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    ran = [line.split()[0] for line in done.stdout.splitlines() if "PASSED" in line]  # "[gw0] [ 16%] PASSED ..."
    assert len(ran) == 6, done.stdout
    assert len(set(ran)) == 1, f"one xdist_group ran on workers {sorted(set(ran))}:\n{done.stdout}"
