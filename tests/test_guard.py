"""The in-kernel guard (``attnkit.guard``) and its grader side (``autograder.protect``), tested by
executing notebooks with nbclient: prepare -> execute -> finish (``protect.run_guarded``).

A grade cell "passes" as nbgrader scores it: no error output and nothing on stderr.
"""
from __future__ import annotations

import json

import nbformat
import pytest

from autograder.notebooks import ROOT, read_source, solution_source
from autograder.protect import FLAGS_FILE, finish, prepare, run_guarded, scan
from tests.hostile import build as hostile

pytestmark = pytest.mark.slow
A1 = "a1_attention_basics"


def _score(nb) -> tuple[float, dict[str, bool]]:
    passed = {}
    total = 0.0
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type != "code" or not meta.get("grade"):
            continue
        ok = not any(o.get("output_type") == "error" or (o.get("output_type") == "stream" and o.get("name") == "stderr")
                     for o in cell.outputs)
        passed[meta["grade_id"]] = ok
        total += meta.get("points", 0) if ok else 0
    return total, passed


def _cell(source: str, grade_id: str | None = None, points: int = 1, locked: bool = False):
    cell = nbformat.v4.new_code_cell(source)
    if grade_id:
        cell.metadata["nbgrader"] = {"grade": bool(points), "grade_id": grade_id, "locked": True,
                                     "points": points, "schema_version": 3, "solution": False, "task": False}
    return cell


def test_honest_a1_passes_unflagged(tmp_path):
    nb, res = run_guarded(read_source(solution_source(A1)), tmp_path, name=A1, timeout=300)
    score, passed = _score(nb)
    assert all(passed.values()), passed
    assert score == 12
    assert res["attnkit_flags"] == []
    assert json.loads((tmp_path / FLAGS_FILE).read_text()) == {"flags": []}
    assert not any("attnkit_guard" in c.metadata for c in nb.cells), "finish must remove its cells"


# The guard alone (no sandbox, no executor) on three attacks only it can stop; test_hostile.py
# grades every attack through all the layers.
GUARD_LEVEL = ["transformer", "patch_checks", "reference"]


@pytest.mark.parametrize("student", GUARD_LEVEL)
def test_hostile_a1_scores_its_honest_content(student, tmp_path):
    """Without the sandbox and the executor: the guard and the exact-type checks alone."""
    nb, res = run_guarded(hostile.build(student), tmp_path, name=A1, timeout=60)
    score, passed = _score(nb)
    expected = hostile.EXPECTED[student][0]
    assert score == expected, (passed, res["attnkit_flags"])
    for flag in hostile.flags(student):
        assert any(flag in f for f in res["attnkit_flags"]), (flag, res["attnkit_flags"])


def test_clock_cannot_be_patched(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        _cell("import time, attnkit.measure as m", "setup", points=0, locked=True),
        _cell("time.perf_counter = lambda: 0.0\nm.time = None"),
        _cell("try:\n    m._now.__defaults__ = (lambda: 0.0,)\nexcept PermissionError as e:\n    print('refused')"),
        _cell("assert m.time_call(time.sleep, 0.05) >= 0.04, 'the clock was patched'", "test_clock"),
    ]
    nb, res = run_guarded(nb, tmp_path, timeout=60)
    assert _score(nb)[1] == {"test_clock": True}
    assert "refused" in nb.cells[2].outputs[0]["text"]
    flags = " | ".join(res["attnkit_flags"])
    assert "time.perf_counter" in flags and "attnkit.measure.time" in flags and "__defaults__" in flags


def test_compiled_flex_attention_runs_under_the_guard_and_student_processes_do_not(tmp_path):
    """torch.compile (a6's FlexAttention checks) rewrites bytecode, compiles generated source and
    runs g++ and this Python: allowed from its own frames, unflagged. A student starting the same
    programs, or compiling under a library's name, is still refused."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        _cell("import sys, subprocess, torch\n"
              "from torch.nn.attention.flex_attention import flex_attention, create_block_mask\n"
              "from attnkit.fixed import local_reference", "setup", points=0, locked=True),
        _cell("def window(b, h, q_idx, kv_idx):\n    return (q_idx - kv_idx).abs() <= 3"),
        _cell("q, k, v = torch.randn(3, 1, 1, 128, 16).unbind(0)\n"
              "mask = create_block_mask(window, None, None, 128, 128, device='cpu')\n"
              "out = torch.compile(flex_attention, dynamic=False)(q, k, v, block_mask=mask)\n"
              "torch.testing.assert_close(out, local_reference(q, k, v, window=3), atol=1e-5, rtol=1e-5)",
              "test_flex"),
        _cell("for argv in (['g++', '--version'], [sys.executable, '-c', 'print(1)']):\n"
              "    try:\n        subprocess.run(argv)\n    except Exception as e:\n        print('refused', type(e).__name__)"),
    ]
    nb, res = run_guarded(nb, tmp_path, timeout=240)
    assert _score(nb)[1] == {"test_flex": True}, nb.cells[2].outputs
    printed = "".join(o.get("text", "") for o in nb.cells[3].outputs)
    assert printed.count("refused GuardError") == 2, nb.cells[3].outputs
    flags = res["attnkit_flags"]
    assert flags and all("starting a process" in f for f in flags), flags


def test_grade_cell_without_completion_record_scores_zero(tmp_path):
    """finish fails a grade cell that shows no error but has no valid record (e.g. a forged one)."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [_cell("x = 1", "test_x")]
    res = {"metadata": {"path": str(tmp_path)}}
    prepare(nb, res)
    grade = nb.cells[1]
    grade.execution_count = 2
    grade.outputs = [nbformat.v4.new_output("display_data", data={
        "application/vnd.attnkit.guard+json": {"kind": "grade", "grade_id": "test_x", "ok": True, "mac": "0" * 64}})]
    finish(nb, res)
    assert _score(nb)[1] == {"test_x": False}
    assert any("'test_x' did not run to its end" in f for f in res["attnkit_flags"])
    assert any("final report is missing" in f for f in res["attnkit_flags"])


def test_static_scan_names_what_it_saw():
    flags = scan([(3, "import gc, ctypes\nget_ipython().input_transformers_post.append(f)\n"
                      "torch.testing.assert_close = f\nx = In[2]\nf.__closure__\nos.kill(1, 9)\n"
                      "open('/etc/passwd')\nexec('1')\n")])
    text = " | ".join(flags)
    for what in ("imports gc", "imports ctypes", "IPython shell access", "input_transformers_post",
                 "assigns torch.testing.assert_close", "history (In)", ".__closure__", ".kill",
                 "opens files", "exec()"):
        assert what in text, (what, text)
    assert all(f.endswith("(cell 3)") for f in flags)
    assert scan([(1, "def attention(q, k, v):\n    return (q @ k.mT).softmax(-1) @ v\n")]) == []


def test_protected_lists_come_from_the_graded_in_tags():
    """Each assignment protects the references tagged with it; every tag names an assignment."""
    from attnkit.graded import graded_in, protected_in, references

    assignments = sorted(p.parent.name for p in (ROOT / "solutions").glob("*/*.py")
                         if p.stem == p.parent.name)
    tags = {a.split("_")[0] for a in assignments}
    known = references()
    assert {t for fn in known.values() for t in graded_in(fn)} <= tags
    for name in assignments:
        names = protected_in(name)
        assert names and set(names) <= set(known), name
        assert protected_in(name.split("_")[0]) == names
    assert {"kernel.favor_two_softmax", "kernel.softmax_biased"} <= set(protected_in("a3_low_rank_and_kernels"))
    assert "dense.dense_attention" in protected_in("a1") and "dense.dense_attention" not in protected_in("a2")
    assert "fixed.local_mask" in protected_in("a2") and "bellcurve.bellcurve" in protected_in("a5")


def test_forbidden_builtins_and_threads_by_every_route(tmp_path):
    """a1 forbids SDPA and the softmax family: refused from student code by the operator they
    reach (aliases, torch.ops, nn.Softmax, a torch.compile'd function, asyncio's and _thread's
    threads); allowed in instructor cells and in the instructor's helpers, also when a student
    calls them. A student who pops the guard's dispatch mode gets it back before the next cell,
    flagged. Honest code (exp, sum, matmul, masked_fill) is untouched. Compiling under the names
    of torch's generated code and changing the compilers' environment are refused."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        _cell("import asyncio, _thread, time, torch, torch.nn.functional as F\n"
              "from attnkit import dense_attention\n"
              "def helper_weights(s):\n    return torch.softmax(s, dim=-1)", "setup", points=0, locked=True),
        _cell("def attempt(name, fn):\n    try:\n        fn()\n        print('allowed', name)\n"
              "    except PermissionError:\n        print('refused', name)\n"
              "x = torch.randn(1, 1, 3, 4)\n"
              "attempt('nn.Softmax', lambda: torch.nn.Softmax(-1)(x))\n"
              "attempt('torch.ops', lambda: torch.ops.aten._softmax(x, -1, False))\n"
              "attempt('log_softmax', lambda: getattr(F, 'log_' + 'softmax')(x, -1))\n"
              "attempt('sdpa dropout', lambda: F.scaled_dot_product_attention(x, x, x, dropout_p=1e-30))\n"
              "attempt('compiled', lambda: torch.compile(lambda t: t.softmax(-1))(x))\n"
              "attempt('helper', lambda: helper_weights(x))\n"
              "attempt('honest', lambda: (x - x.amax(-1, keepdim=True)).exp() / x.exp().sum(-1, keepdim=True))"),
        _cell("try:\n    await asyncio.to_thread(torch.softmax, x, -1)\n    print('allowed to_thread')\n"
              "except PermissionError:\n    print('refused to_thread')"),
        _cell("box = []\ndef work():\n    try:\n        dense_attention(x, x, x)\n        box.append('allowed')\n"
              "    except PermissionError:\n        box.append('refused')\n"
              "_thread.start_new_thread(work, ())\n"
              "while not box:\n    time.sleep(0.05)\nprint(box[0], '_thread')"),
        _cell("from torch.utils._python_dispatch import _pop_mode\n_pop_mode()"),
        _cell("attempt('after pop', lambda: torch.softmax(x, -1))\n"
              "import os\n"
              "attempt('generated name', lambda: compile('1', '<eval_with_key>.999', 'exec'))\n"
              "attempt('putenv', lambda: os.environ.__setitem__('TORCH_CUSTOM_PYTHONPATH', '.'))"),
        _cell("def attention(q, k, v):\n    s = (q @ k.transpose(-2, -1)).masked_fill(torch.zeros(1, dtype=torch.bool), 0.0) / 2.0\n"
              "    w = (s - s.amax(-1, keepdim=True)).exp()\n    return (w / w.sum(-1, keepdim=True)) @ v"),
        _cell("torch.testing.assert_close(attention(x, x, x), dense_attention(x, x, x, scale=0.5))\n"
              "torch.testing.assert_close(helper_weights(x), torch.softmax(x, -1))", "test_honest"),
    ]
    nb, res = run_guarded(nb, tmp_path, name=A1, timeout=120)
    printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    for route in ("nn.Softmax", "torch.ops", "log_softmax", "sdpa dropout", "compiled", "to_thread",
                  "_thread", "after pop", "generated name", "putenv"):
        assert f"refused {route}" in printed, (route, printed)
    assert "allowed helper" in printed and "allowed honest" in printed, printed
    assert _score(nb)[1] == {"test_honest": True}, nb.cells[-1].outputs
    flags = " | ".join(res["attnkit_flags"])
    for flag in ("called forbidden built-in torch.softmax in an answer (from your code)",
                 "called forbidden built-in torch.log_softmax in an answer (from your code)",
                 "called forbidden built-in torch.nn.functional.scaled_dot_product_attention",
                 "called forbidden built-in torch.softmax in an answer (on a thread your code started)",
                 "removed the grading guard's dispatch mode"):
        assert flag in flags, (flag, flags)


def test_forbidden_lists_name_known_builtins_stated_in_the_text():
    """Each assignment's forbidden built-ins are known to the guard, reach the operators the
    guard refuses by every alias, and are named in the text students read."""
    import torch
    import torch.nn.functional as F
    from torch.utils._python_dispatch import TorchDispatchMode

    from attnkit.guard.dispatch import BUILTINS, operators
    from autograder.assignments import SPECS, forbidden_in

    for name, spec in SPECS.items():
        operators(spec.forbidden)  # raises on an unknown name
        text = solution_source(name).read_text()
        for builtin in spec.forbidden:
            assert f"`{builtin}`" in text or f"`{builtin.replace('torch.nn.functional.', 'F.')}`" in text, \
                (name, builtin)
    assert forbidden_in("a1") == SPECS["a1_attention_basics"].forbidden
    assert "torch.softmax" not in forbidden_in("a2_sparse_patterns"), "a2 allows torch.softmax"
    with pytest.raises(ValueError):
        operators(["torch.nope"])

    seen = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(func._opname)
            return func(*args, **(kwargs or {}))

    x = torch.randn(2, 2, 4, 4)
    routes = {
        "torch.softmax": [lambda: torch.softmax(x, -1), lambda: x.softmax(-1), lambda: F.softmax(x, -1),
                          lambda: torch.nn.Softmax(-1)(x), lambda: torch.special.softmax(x, -1),
                          lambda: torch.ops.aten.softmax.int(x, -1), lambda: torch._softmax(x, -1, False)],
        "torch.log_softmax": [lambda: torch.log_softmax(x, -1), lambda: F.log_softmax(x, -1),
                              lambda: torch.nn.LogSoftmax(-1)(x)],
        "torch.nn.functional.scaled_dot_product_attention": [
            lambda: F.scaled_dot_product_attention(x, x, x),
            lambda: F.scaled_dot_product_attention(x, x, x, dropout_p=1e-30),
            lambda: F.scaled_dot_product_attention(x, x, x, is_causal=True),
            lambda: torch._C._nn.scaled_dot_product_attention(x, x, x),
            lambda: torch.nn.MultiheadAttention(4, 1, batch_first=True)(x[0], x[0], x[0], need_weights=False)],
    }
    ops = operators(BUILTINS)
    for builtin, calls in routes.items():
        for i, call in enumerate(calls):
            seen.clear()
            with Record():
                call()
            assert any(ops.get(op) == builtin for op in seen), (builtin, i, seen)
    seen.clear()
    with Record():
        (x @ x).exp().sum(-1).masked_fill(x[..., 0] > 0, 0.0)
    assert not any(op in ops for op in seen), seen


def test_compilers_start_only_their_own_programs(monkeypatch):
    """The audit hook's exception for the compilers: a system compiler without options that run
    other programs, or this Python running inductor's CPU probe, with the kernel's environment
    (and the probe's PYTHONPATH: trusted folders only)."""
    import importlib
    import os
    import sys

    audit = importlib.import_module("attnkit.guard.audit")  # the package's `audit` is the hook function
    monkeypatch.setattr(os, "environ", dict(os.environ))  # capture_baseline sets variables
    audit.capture_baseline()
    assert os.environ["PYTHONSAFEPATH"] == "1"
    trusted = os.environ["TORCH_CUSTOM_PYTHONPATH"].split(os.pathsep)
    assert trusted and "" not in trusted and os.getcwd() not in trusted
    before, after = audit._BASELINE["probe"]
    probe = before + "/tmp/torchinductor/x.so" + after
    ok = audit._safe_process
    assert ok(("g++", ["g++", "-O3", "-shared", "a.cpp", "-o", "a.so"], None, None))
    assert ok((sys.executable, [sys.executable, "-c", probe], None, None))
    assert not ok((sys.executable, [sys.executable, "-c", "print(1)"], None, None))
    assert not ok((sys.executable, [sys.executable, "-c", before + '"); import os; ("' + after], None, None))
    assert not ok(("g++", ["g++", "-wrapper", "/bin/sh,-c,id", "a.c"], None, None))
    assert not ok(("g++", ["g++", "-B/tmp/evil", "a.c"], None, None))
    assert not ok(("/tmp/g++", ["/tmp/g++", "a.c"], None, None)), "a compiler outside the system folders"
    assert not ok(("sh", ["sh", "-c", "id"], None, None))
    assert not ok(("g++", ["g++", "a.c"], None, {**os.environ, "LD_PRELOAD": "/tmp/x.so"}))
    assert not ok(("g++", ["g++", "a.c"], None, {**os.environ, "COMPILER_PATH": "/tmp"}))
    probe_env = {**os.environ, "PYTHONPATH": os.environ["TORCH_CUSTOM_PYTHONPATH"]}  # inductor's
    assert ok((sys.executable, [sys.executable, "-c", probe], None, probe_env))
    assert not ok((sys.executable, [sys.executable, "-c", probe], None, {**probe_env, "PYTHONPATH": "."}))
    assert not ok((sys.executable, [sys.executable, "-c", probe], None, {**probe_env, "PYTHONSAFEPATH": ""}))


def test_reference_around_its_wrapper_is_refused_above_every_cell_boundary(tmp_path):
    """The dispatch mode walks the whole stack of every operation. The undecorated
    reference (from its wrapper's closure) is still refused from a student cell, from a cell run
    inside a cell with ``get_ipython().run_cell`` (whose frame sits above the outer one), from a
    function deep in the student's own stack, and on a thread; the wrapped reference still runs
    for the instructor's test (through a helper of an instructor cell)."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        _cell("import threading, torch\nimport attnkit\nfrom attnkit import dense_attention\n"
              "def helper(q):\n    return dense_attention(q, q, q)", "setup", points=0, locked=True),
        _cell("orig = [c.cell_contents for c in attnkit.dense_attention.__closure__ if callable(c.cell_contents)][0]\n"
              "x = torch.randn(1, 1, 3, 4)\n"
              "def attempt(name, fn):\n    try:\n        fn()\n        print('allowed', name)\n"
              "    except Exception as exc:\n        print('refused' if 'around its wrapper' in str(exc) else 'error', name)\n"
              "attempt('cell', lambda: orig(x, x, x))\n"
              "attempt('nested cell', lambda: get_ipython().run_cell('orig(x, x, x)').raise_error())\n"
              "def deep(n):\n    return orig(x, x, x) if n == 0 else deep(n - 1)\n"
              "attempt('deep', lambda: deep(30))\n"
              # the reference's first step calls back into student code, which runs a cell whose
              # operation is the first one under the reference: the walk must go past that cell
              "class Q:\n    def dim(self):\n        r = get_ipython().run_cell('_ = x + 1')\n"
              "        e = r.error_in_exec\n"
              "        print('refused' if e and 'around its wrapper' in str(e) else 'allowed', 'under a nested cell')\n"
              "        return 4\n"
              "try:\n    orig(Q(), x, x)\nexcept Exception:\n    pass\n"
              "t = threading.Thread(target=lambda: attempt('thread', lambda: orig(x, x, x)))\n"
              "t.start(); t.join()"),
        _cell("torch.testing.assert_close(helper(x), dense_attention(x, x, x))", "test_helper"),
    ]
    nb, res = run_guarded(nb, tmp_path, name=A1, timeout=120)
    printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    for route in ("cell", "nested cell", "deep", "thread", "under a nested cell"):
        assert f"refused {route}\n" in printed, (route, printed)
    assert not [line for line in printed.splitlines() if line.startswith(("allowed", "error"))], printed
    assert _score(nb)[1] == {"test_helper": True}, nb.cells[-1].outputs
    assert any("around its wrapper" in f for f in res["attnkit_flags"]), res["attnkit_flags"]
