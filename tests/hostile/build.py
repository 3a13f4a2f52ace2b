"""Hostile submissions for a1: each is the released notebook with honest answers for some parts
and one attack in a student cell. ``python -m tests.hostile.build`` rewrites the committed
notebooks ``tests/hostile/<assignment>/<student>/<assignment>.ipynb``; ``test_hostile.py`` checks
they are what these recipes produce and grades them.

``EXPECTED[student] = (score, flag)``: the score the honest content earns, and a substring of
the reason the report must give. ``LAYER[student]`` says which layer stops the attack.
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
    "read_hidden": (6.0, "refused access to"),
    "gradebook": (6.0, "refused opening an SQLite database"),
    # Part 5 is honest but calls the student's attention(), which calls the reference: 1 point.
    "reference": (1.0, "called the library's reference"),
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
    "infinite_loop": "executor (per-cell timeout)",
    "no_interrupt": "executor (kills and restarts the kernel, re-runs without the cell)",
    "memory_bomb": "sandbox (memory limit)",
    "fork_bomb": "guard (os.fork refused) + sandbox (process limit)",
    "kill_kernel": "guard (os.kill, os._exit refused) + executor (restart)",
}


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
    return [write_notebook(build(s), path(s)) for s in ATTACKS]


if __name__ == "__main__":
    for p in write_all():
        print(p.relative_to(HERE.parent.parent))
