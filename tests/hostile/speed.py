"""Hostile submissions for the speed checks (issue 17, part 2): answers that do the work slowly
once and then return a stored result, keyed on the input tensor's identity, its data pointer, a
hash of its values or a weak reference to it. Against a check that times the same tensors every
round they look fast; against :func:`attnkit.grading.check_speedup` (fresh inputs every round,
every result checked) they must lose the speed cell's points.

Each notebook is the released notebook with every answer right (the model solutions), except
that the timed function is wrapped in a cache around a slow computation of the right values.
The kinds are spread over the assignments to keep grading short:

- a2_sparse_patterns, ``cache_identity``: keyed on ``id`` of q, k, v; slow path: dense
  attention with the window mask (its N×N scores also break the work bound);
- a3_low_rank_and_kernels, ``cache_data_ptr``: keyed on ``data_ptr()`` of q, k, v; slow path:
  the kernel matrix by row blocks (within the work bound: only the clock catches it);
- a4_content_based, ``cache_value_hash``: keyed on ``q.sum().item()`` etc.; slow path: float64
  attention by row blocks, then the answer;
- a6_gpu_kernels, ``cache_weakref``: keyed on a weak reference to q; slow path: the N×N scores,
  then the kernel (timed on a GPU only).

``python -m tests.hostile.speed`` rewrites the committed notebooks
``tests/hostile/<assignment>/cache_<kind>/<assignment>.ipynb``; ``tests/test_hostile_speed.py``
checks they are what these recipes produce and runs their speed cells.
"""
from __future__ import annotations

from pathlib import Path

import nbformat

from autograder.notebooks import read_source, solution_source, write_notebook
from autograder.samples import build_sample

HERE = Path(__file__).resolve().parent

# assignment -> (answer cell holding the timed function, the grade cell that times it)
SPEED_CELLS = {
    "a2_sparse_patterns": ("sliding_window", "test_sliding_window_speed"),
    "a3_low_rank_and_kernels": ("linear_attention", "test_linear_speed"),
    "a4_content_based": ("lsh_chunked", "test_lsh_speed"),
    "a6_gpu_kernels": ("window", "test_window_work"),  # timed on a GPU only
}

# The cache's key: an expression of the timed function's first three arguments q, k, v.
KEYS = {
    "identity": "(id(q), id(k), id(v))",
    "data_ptr": "(q.data_ptr(), k.data_ptr(), v.data_ptr())",
    "value_hash": "(q.sum().item(), k.sum().item(), v.sum().item(), tuple(q.shape))",
}

# assignment -> (signature, slow computation of the right result from those arguments)
SLOW = {
    "a2_sparse_patterns": ("q, k, v, window", '''
    N = q.shape[-2]
    i = torch.arange(N, device=q.device)
    keep = (i.view(-1, 1) - i.view(1, -1)).abs() <= window
    scores = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(~keep, float("-inf"))
    weights = (scores - scores.amax(dim=-1, keepdim=True)).exp()
    return (weights / weights.sum(dim=-1, keepdim=True)) @ v
'''),
    "a3_low_rank_and_kernels": ("q, k, v", '''
    fq, fk, rows = elu_feature(q), elu_feature(k), []
    for i in range(0, q.shape[-2], 64):  # the quadratic way, 64 query rows at a time (no N×N tensor)
        kernel = fq[..., i:i + 64, :] @ fk.transpose(-2, -1)
        rows.append((kernel @ v) / kernel.sum(dim=-1, keepdim=True))
    return torch.cat(rows, dim=-2)
'''),
    "a4_content_based": ("q, k, v, rotations, chunk", '''
    q64, k64, v64 = q.double(), k.double(), v.double()
    for i in range(0, q.shape[-2], 256):  # full attention in float64 first ("to compare"), by row blocks
        (q64[..., i:i + 256, :] @ k64.transpose(-2, -1)).softmax(dim=-1) @ v64
    return _honest(q, k, v, rotations, chunk)
'''),
    "a6_gpu_kernels": ("q, k, v, window, causal=False, **blocks", '''
    scores = q @ k.transpose(-2, -1)
    scores.softmax(dim=-1)
    return _honest(q, k, v, window, causal, **blocks)
'''),
}

# What the speed cell may fail it with: the work bound of the call made among the timed ones (a2's
# slow path materialises N×N), or the time on fresh inputs (the others stay within the bounds). A
# cache keyed on data_ptr can also hand back a stale answer when the allocator reuses a freed
# address for the next input; the speed cell checks every timed call's output and catches that.
WHY = {"cache_identity": ("in a call of the speed test",),
       "cache_data_ptr": ("faster", "(a timed call)"),
       "cache_value_hash": ("faster",), "cache_weakref": ("faster",)}

# student folder -> (assignment, cache kind)
STUDENTS = {
    ("a2_sparse_patterns", "cache_identity"): "identity",
    ("a3_low_rank_and_kernels", "cache_data_ptr"): "data_ptr",
    ("a4_content_based", "cache_value_hash"): "value_hash",
    ("a6_gpu_kernels", "cache_weakref"): "weakref",
}


def answer_cells(name: str) -> list[str]:
    """The code answer cells of assignment ``name`` (grade ids), in order."""
    cells = read_source(solution_source(name)).cells
    return [c.metadata["nbgrader"]["grade_id"] for c in cells if c.cell_type == "code"
            and c.get("metadata", {}).get("nbgrader", {}).get("solution")]


def honest(name: str) -> nbformat.NotebookNode:
    """The released notebook with every code answer the model solution."""
    return build_sample(name, {cell: "solution" for cell in answer_cells(name)})


def _function_name(name: str) -> str:
    return {"sliding_window": "sliding_window_attention", "window": "window_attention"}.get(
        SPEED_CELLS[name][0], SPEED_CELLS[name][0])


def caching_answer(name: str, kind: str) -> str:
    """The answer cell: the model solution, then the timed function replaced by a cache around
    a slow computation of the same values."""
    solution = next(c.source for c in honest(name).cells
                    if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == SPEED_CELLS[name][0])
    fn = _function_name(name)
    signature, slow = SLOW[name]
    args = ", ".join(a.split("=")[0] for a in signature.split(", ") if not a.startswith("**"))
    call = args + (", **blocks" if "**blocks" in signature else "")
    if kind == "weakref":
        lookup = f'''    import weakref
    hit = _CACHE.get(id(q))
    if hit is None or hit[0]() is not q:  # a new tensor (or one that reuses a dead one's id)
        hit = _CACHE[id(q)] = (weakref.ref(q), _slow({call}))
    return hit[1]'''
    else:
        lookup = f'''    key = {KEYS[kind]}
    if key not in _CACHE:
        _CACHE[key] = _slow({call})
    return _CACHE[key]'''
    return f'''{solution.rstrip()}


# Issue 17's caching answer ({kind}): slow once per input, then the stored result.
_honest = {fn}
_CACHE = {{}}


def _slow({signature}):{slow.rstrip()}


def {fn}({signature}):
{lookup}
'''


def build(name: str, student: str) -> nbformat.NotebookNode:
    kind = STUDENTS[(name, student)]
    nb = honest(name)
    cell = next(c for c in nb.cells if c.get("metadata", {}).get("nbgrader", {}).get("grade_id")
                == SPEED_CELLS[name][0])
    cell.source = caching_answer(name, kind).rstrip("\n")
    return nb


def path(name: str, student: str) -> Path:
    return HERE / name / student / f"{name}.ipynb"


def write_all() -> list[Path]:
    return [write_notebook(build(name, student), path(name, student)) for name, student in STUDENTS]


if __name__ == "__main__":
    for p in write_all():
        print(p.relative_to(HERE.parent.parent))
