# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Assignment 6: sparse attention on the GPU
#
# Assignments 2 to 5 wrote every pattern in PyTorch on the CPU. This one writes them the way they
# run on a GPU, in two ways:
#
# - **Part A, FlexAttention.** PyTorch's `flex_attention` takes a pattern as a small function,
#   `mask_mod(b, h, q_idx, kv_idx) -> bool` (may query `q_idx` see key `kv_idx`?), and a bias as
#   `score_mod(score, b, h, q_idx, kv_idx) -> score`, and `torch.compile` turns them into one fused
#   kernel that skips the empty tiles of the score matrix. You write each pattern of the course as
#   such a function.
# - **Part B, Triton.** You write the kernels yourself: a row softmax, FlashAttention's forward
#   pass with the online softmax, and a sliding-window FlashAttention that visits only the tiles
#   that meet its band.
#
# | part | what | points |
# | --- | --- | --- |
# | 1 | causal, sliding-window and dilated `mask_mod`s | 3 |
# | 2 | the Sparse Transformer's strided and fixed patterns | 2 |
# | 3 | Longformer and BigBird | 2 |
# | 4 | ALiBi and the bell-curve window as `score_mod`s | 2 |
# | 5 | a row-softmax kernel in Triton | 2 |
# | 6 | FlashAttention's forward pass (online softmax), dense and causal | 3 |
# | 7 | sliding-window FlashAttention that visits only the tiles of its band | 3 |
# | 8 | the window kernel's work (and, on a GPU, its speed) | 2 |
#
# **No GPU needed.** Without one, compiled FlexAttention runs on the CPU, and Triton kernels run
# under Triton's *interpreter* (`TRITON_INTERPRET=1`, switched on by the setup cell): the same
# code, the same masks and bounds, executed through NumPy one program at a time, so the tests use
# small sizes. Every part earns its points the same way on a laptop and on a GPU, except part 8:
# see there (on a CPU its points come from deterministic work checks, on a GPU from those and a
# timing).
#
# Do not call `attnkit`'s implementations of these patterns in your answers: `attnkit.fixed`
# (`local_mask`, `dilated_mask`, `strided_mask`, `fixed_mask`, `longformer_mask`, `bigbird_mask`,
# ...), `attnkit.masks` (`window_mask`, `global_mask`, `layout_mask`), `attnkit.bellcurve`
# (`bell_score_mod`, ...) and `attnkit.triton_window` (all of it). The tests use them as
# references, and the grader refuses calls to them from your code. Anything in `torch` and
# `triton` is fine.

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false, "task": false}
import math
import warnings

import torch
import torch.nn.functional as F

warnings.filterwarnings("ignore")  # the autograder counts any warning printed by a test as a failure
torch.manual_seed(0)

from attnkit.notebook import triton_device

DEVICE = triton_device()  # "cuda" on a GPU; "cpu": Triton's interpreter (must come before `import triton`)

import triton
import triton.language as tl
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from attnkit import dense_attention, grading

BLOCK = 16 if DEVICE == "cpu" else 64  # the kernels' default tile size: small under the interpreter
torch._dynamo.reset()  # forget FlexAttention kernels compiled by an earlier run of this notebook
print("Triton kernels run on", DEVICE, "(interpreter)" if DEVICE == "cpu" else "")

# %% nbgrader={"grade": false, "grade_id": "test_helpers", "locked": true, "schema_version": 3, "solution": false, "task": false}
# Helpers of the tests below: run this cell, nothing to write here.
from attnkit.flex import blocks_visited as _blocks_visited
from attnkit.masks import materialize as _materialize, materialize_scores as _materialize_scores
from torch._dynamo.utils import counters as _dynamo_counters

_flex = torch.compile(flex_attention, dynamic=False)  # compiled FlexAttention
_FLEX_N, _FLEX_D = 256, 16  # every compiled check uses this one shape: a new shape would compile again
_FLEX_TOL = {"atol": 1e-5, "rtol": 1e-4} if DEVICE == "cpu" else {"atol": 1e-3, "rtol": 1e-3}
torch._dynamo.config.recompile_limit = 64  # answers that capture Python numbers compile often:
torch._dynamo.config.fail_on_recompile_limit_hit = True  # never a silent fallback to eager FlexAttention


def _check_masks(pairs, sizes):
    """(a) Each (name, mask_mod, reference) allows the same (query, key) pairs at every N in sizes."""
    for name, mod, ref in pairs:
        for N in sizes:
            grading.check_mask_mod(mod, ref, N, name=name)


def _check_blocks(pairs, N, block=128):
    """(b) FlexAttention's block mask of each mask_mod lets every query block visit the reference's
    number of KV blocks: the work FlexAttention will do, the same on every device."""
    for name, mod, ref in pairs:
        got = _blocks_visited(create_block_mask(mod, None, None, N, N, device=DEVICE, BLOCK_SIZE=block))
        expected = _blocks_visited(create_block_mask(ref, None, None, N, N, device=DEVICE, BLOCK_SIZE=block))
        if not torch.equal(got, expected):
            raise AssertionError(f"{name}: at N={N} (blocks of {block}) the query blocks visit "
                                 f"{got.flatten().tolist()} KV blocks, the reference "
                                 f"{expected.flatten().tolist()}.")


def _by_head(mods):
    """One mask_mod that runs mods[i] on head i: one compilation checks them all."""
    def mask_mod(b, h, q_idx, kv_idx):
        out = mods[-1](b, h, q_idx, kv_idx)
        for i in range(len(mods) - 2, -1, -1):
            out = torch.where(h == i, mods[i](b, h, q_idx, kv_idx), out)
        return out
    return mask_mod


def _qkv(H, seed):
    return grading.random_qkv(1, H, _FLEX_N, _FLEX_D, seed=seed, dtype=torch.float32, device=DEVICE)


def _check_flex(pairs, seed):
    """(c) Compiled FlexAttention with mask_mod i on head i equals dense attention with the
    reference's mask on that head (N=256, D=16, float32)."""
    names = [name for name, _, _ in pairs]
    mod, ref = _by_head([m for _, m, _ in pairs]), _by_head([r for _, _, r in pairs])
    H = len(pairs)
    q, k, v = _qkv(H, seed)
    block_mask = create_block_mask(mod, None, H, _FLEX_N, _FLEX_N, device=DEVICE)
    out = _flex(q, k, v, block_mask=block_mask)
    expected = dense_attention(q, k, v, mask=_materialize(ref, _FLEX_N, H=H, device=DEVICE))
    for i, name in enumerate(names):
        grading.check_tensor(out[:, i], expected[:, i], name=f"{name} through compiled FlexAttention (N={_FLEX_N})",
                             **_FLEX_TOL)


def _unique_graphs():
    return _dynamo_counters["stats"]["unique_graphs"]


def _check_scores(name, mod, ref, H, N, seed):
    """(a) score_mod on a grid of random scores: the same values, and -inf at the same places."""
    if not callable(mod):
        raise AssertionError(f"{name} should return a function score_mod(score, b, h, q_idx, kv_idx), "
                             f"got {type(mod).__name__}.")
    scores = torch.randn(1, H, N, N, generator=torch.Generator().manual_seed(seed)).to(DEVICE)
    try:
        got = _materialize_scores(mod, scores)
    except Exception as exc:  # the student's function: say what it did
        raise AssertionError(f"{name} failed on index tensors ({type(exc).__name__}: {exc}); use tensor "
                             "operations (torch.where, comparisons), not Python `if`.") from exc
    expected = _materialize_scores(ref, scores)
    grading.check_type(got, name)
    got = got.expand_as(expected)
    wrong_inf = (torch.isinf(got) != torch.isinf(expected)).nonzero()[:, -2:].tolist()
    if wrong_inf:
        raise AssertionError(f"{name} on N={N}: {len(wrong_inf)} (query, key) pairs are -inf (masked) in one of "
                             f"your scores and the reference but not the other, e.g. {wrong_inf[:4]}.")
    grading.check_tensor(got, expected, name=f"{name} applied to random scores, N={N}", axes="B, H, N, M")


def _poisoned(x):
    """A contiguous copy of x whose storage goes on with NaN: a kernel that reads past the end
    of the last row, head or tile (a tl.load without its mask) reads NaN, deterministically."""
    buf = torch.full((2 * x.numel() + 4096,), float("nan"), dtype=x.dtype, device=x.device)
    out = buf[:x.numel()].view(x.shape)
    out.copy_(x)
    return out


_NAN_LOAD = ("a tl.load without its mask read past the end of a tensor (the tests put NaN right after each "
             "input), a row saw no key (0 / 0), or exp() overflowed (subtract the running maximum)")


def _check_out(got, expected, name, tol, nan_hint=_NAN_LOAD):
    """A kernel's result must be finite where the reference is, then close to it."""
    grading.check_type(got, name)
    if got.shape == expected.shape:
        bad = ~torch.isfinite(got) & torch.isfinite(expected)
        if bad.any():
            first = tuple(bad.nonzero()[0].tolist())
            raise AssertionError(f"{name}: {int(bad.sum())} entries are NaN or inf (first at index {first}), where "
                                 f"the reference is finite. Likely cause: {nan_hint}.")
    grading.check_tensor(got, expected, name=name, **tol)


def _random(*shape, seed, scale=1.0):
    return (scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))).to(DEVICE)


def _kernel_qkv(B, H, N, D, seed, M=None, scale=1.0):
    """float32 q, k, v on DEVICE, each followed by NaN in memory (see _poisoned)."""
    q, k, v = grading.random_qkv(B, H, N, D, M=M, seed=seed, dtype=torch.float32, scale=scale)
    return tuple(_poisoned(x.to(DEVICE)) for x in (q, k, v))


# Triton's interpreter computes exactly in float32; a GPU's tl.dot rounds float32 to TF32, which
# scores in the hundreds (q and k scaled up, the overflow tests) magnify: those only need finite, close values.
_TOL = {"atol": 1e-4, "rtol": 1e-4} if DEVICE == "cpu" else {"atol": 2e-2, "rtol": 2e-2}
_TOL_LARGE = _TOL if DEVICE == "cpu" else {"atol": 0.25, "rtol": 0.1}

# %% [markdown]
# ## Part A: every pattern as a FlexAttention function
#
# FlexAttention calls your `mask_mod(b, h, q_idx, kv_idx)` with index **tensors** (scalars inside
# the compiled kernel; broadcast grids when the tests materialise the mask) and expects a boolean
# tensor: True where query `q_idx` may see key `kv_idx`. So write it with tensor operations only
# (`&`, `|`, `~`, comparisons, `torch.where`, indexing a tensor), never Python `and`/`or`/`if` on
# the indices. A `score_mod(score, b, h, q_idx, kv_idx)` returns the new score (`-inf` masks).
#
# Each pattern is a **factory**: `local_mod(window)` returns a `mask_mod`. Capture every
# hyperparameter as a **0-d tensor** (`torch.tensor(window, device=DEVICE)`), not a Python int:
# `torch.compile` treats a captured tensor as an input (a new window is new data for the same
# compiled kernel) but a captured int as a constant (every new window compiles again, seconds
# each; past the recompile limit PyTorch would silently fall back to the slow eager path). Create
# captured tensors on `DEVICE`.
#
# Each test checks, in this order: (a) the mask your function materialises on a grid of a few
# sizes, ragged ones included, against the reference (the message lists (query, key) pairs that
# differ); (b) the number of KV blocks each query block of FlexAttention's block mask visits at a
# larger N (the work FlexAttention does); (c) the output of **compiled** FlexAttention with your
# function against dense attention with the reference mask, at $N = 256$. Compiling takes about
# ten seconds on a CPU, so each test compiles once (your functions on different heads of one
# call) and the hidden tests only change hyperparameter values. To try a mask yourself:
#
# ```python
# block_mask = create_block_mask(local_mod(8), None, None, N, N, device=DEVICE)
# out = torch.compile(flex_attention)(q, k, v, block_mask=block_mask)   # q, k, v: (B, H, N, D)
# ```
#
# ## Part 1: causal, sliding window, dilated (3 points)
#
# With $d = i - j$ (query $i$ = `q_idx`, key $j$ = `kv_idx`):
#
# - `causal_mod`: the mask itself (no factory): $j \le i$;
# - `local_mod(window, causal=False)`: $|d| \le w$, and also $j \le i$ when `causal`;
# - `dilated_mod(window, dilation)`: $|d| \le w \cdot \delta$ and $d \equiv 0 \pmod \delta$
#   (every $\delta$-th key, $w$ of them on each side).
#
# The test also checks that a second `local_mod` with another window reuses the compiled kernel.

# %% nbgrader={"grade": false, "grade_id": "causal_mod", "locked": false, "schema_version": 3, "solution": true, "task": false}
def causal_mod(b, h, q_idx, kv_idx):
    """Query i sees keys j <= i."""
    ### BEGIN SOLUTION
    return kv_idx <= q_idx
    ### END SOLUTION


# %% nbgrader={"grade": false, "grade_id": "local_mod", "locked": false, "schema_version": 3, "solution": true, "task": false}
def local_mod(window, causal=False):
    """mask_mod of the sliding window |i - j| <= window (and j <= i if causal)."""
    ### BEGIN SOLUTION
    w = torch.tensor(window, device=DEVICE)
    lowest = torch.tensor(0 if causal else -window, device=DEVICE)  # smallest allowed i - j

    def mask_mod(b, h, q_idx, kv_idx):
        d = q_idx - kv_idx
        return (d.abs() <= w) & (d >= lowest)
    return mask_mod
    ### END SOLUTION


# %% nbgrader={"grade": false, "grade_id": "dilated_mod", "locked": false, "schema_version": 3, "solution": true, "task": false}
def dilated_mod(window, dilation):
    """mask_mod of the dilated window: |i - j| <= window * dilation and (i - j) % dilation == 0."""
    ### BEGIN SOLUTION
    reach = torch.tensor(window * dilation, device=DEVICE)
    step = torch.tensor(dilation, device=DEVICE)

    def mask_mod(b, h, q_idx, kv_idx):
        d = q_idx - kv_idx
        return (d.abs() <= reach) & (d % step == 0)
    return mask_mod
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_window_mods", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
"""Part 1: causal_mod, local_mod and dilated_mod allow the reference's pairs (ragged N included),
give FlexAttention block masks with the reference's number of KV blocks per query block, equal
dense attention through compiled FlexAttention, and a new window does not compile again."""
from attnkit.fixed import dilated_mask as _dilated_ref, local_mask as _local_ref
from attnkit.masks import causal as _causal_ref

def _window_pairs(w, causal_w, dilation_w, dilation):
    ref_local = _local_ref(w, device=DEVICE)
    ref_causal_local = _local_ref(causal_w, True, device=DEVICE)
    ref_dilated = _dilated_ref(dilation_w, dilation, device=DEVICE)
    return [("causal_mod", causal_mod, _causal_ref),
            (f"local_mod({w})", local_mod(w), ref_local),
            (f"local_mod({causal_w}, causal=True)", local_mod(causal_w, causal=True), ref_causal_local),
            (f"dilated_mod({dilation_w}, {dilation})", dilated_mod(dilation_w, dilation), ref_dilated)]

_pairs = _window_pairs(3, 2, 2, 3)
_check_masks(_pairs, sizes=(7, 20, 37))
_check_blocks(_pairs, N=1000)
_check_flex(_pairs, seed=1)

_graphs = _unique_graphs()
_check_flex(_window_pairs(40, 17, 9, 2), seed=2)
assert _unique_graphs() == _graphs, (
    "a new window compiled FlexAttention again: capture the hyperparameters as 0-d tensors "
    "(torch.tensor(window, device=DEVICE)), not Python numbers.")

### BEGIN HIDDEN TESTS
for _w, _cw, _dw, _dil in [(0, 0, 0, 1), (1, 5, 4, 2), (12, 30, 3, 5), (300, 255, 64, 4)]:
    _pairs = _window_pairs(_w, _cw, _dw, _dil)
    _check_masks(_pairs, sizes=(1, 16, 45))
    _check_blocks(_pairs, N=700, block=64)
_check_flex(_window_pairs(100, 64, 20, 6), seed=3)
assert _unique_graphs() == _graphs, "new hyperparameters compiled FlexAttention again."
### END HIDDEN TESTS

# %% [markdown]
# ## Part 2: the Sparse Transformer (2 points)
#
# Child et al. (2019) factorise attention into two causal patterns with a stride $s$
# (about $\sqrt N$), $d = i - j$:
#
# - `strided_mod(stride)`: $j \le i$ and ($d < s$ or $d \equiv 0 \pmod s$): the previous $s$ keys
#   and every $s$-th key before them;
# - `fixed_mod(stride, summary=1)`: $j \le i$ and ($\lfloor j / s \rfloor = \lfloor i / s \rfloor$
#   or $j \bmod s \ge s - \text{summary}$): the query's own block of $s$ keys, and the last
#   `summary` keys of every block ("summary" keys that carry each block's information forward).

# %% nbgrader={"grade": false, "grade_id": "strided_mod", "locked": false, "schema_version": 3, "solution": true, "task": false}
def strided_mod(stride):
    """mask_mod of the strided pattern: j <= i and (i - j < stride or (i - j) % stride == 0)."""
    ### BEGIN SOLUTION
    s = torch.tensor(stride, device=DEVICE)

    def mask_mod(b, h, q_idx, kv_idx):
        d = q_idx - kv_idx
        return (d >= 0) & ((d < s) | (d % s == 0))
    return mask_mod
    ### END SOLUTION


# %% nbgrader={"grade": false, "grade_id": "fixed_mod", "locked": false, "schema_version": 3, "solution": true, "task": false}
def fixed_mod(stride, summary=1):
    """mask_mod of the fixed pattern: j <= i and (same block of stride, or j % stride >= stride - summary)."""
    ### BEGIN SOLUTION
    s = torch.tensor(stride, device=DEVICE)
    first_summary = torch.tensor(stride - summary, device=DEVICE)

    def mask_mod(b, h, q_idx, kv_idx):
        same_block = kv_idx // s == q_idx // s
        summary_key = kv_idx % s >= first_summary
        return (kv_idx <= q_idx) & (same_block | summary_key)
    return mask_mod
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_sparse_transformer_mods", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""Part 2: strided_mod and fixed_mod allow the reference's pairs (ragged N included), give the
reference's block-mask sparsity, and equal dense attention through compiled FlexAttention."""
from attnkit.fixed import fixed_mask as _fixed_ref, strided_mask as _strided_ref

def _sparse_pairs(stride, fixed_stride, summary):
    ref_strided = _strided_ref(stride, device=DEVICE)
    ref_fixed = _fixed_ref(fixed_stride, summary, device=DEVICE)
    return [(f"strided_mod({stride})", strided_mod(stride), ref_strided),
            (f"fixed_mod({fixed_stride}, summary={summary})", fixed_mod(fixed_stride, summary), ref_fixed)]

_pairs = _sparse_pairs(4, 5, 2)
_check_masks(_pairs, sizes=(9, 23, 40))
_check_blocks(_pairs, N=1000)
_check_flex(_pairs, seed=4)

### BEGIN HIDDEN TESTS
_graphs = _unique_graphs()
for _s, _fs, _sum in [(1, 1, 1), (3, 4, 1), (7, 6, 6), (32, 32, 4), (100, 64, 8)]:
    _pairs = _sparse_pairs(_s, _fs, _sum)
    _check_masks(_pairs, sizes=(1, 17, 50))
    _check_blocks(_pairs, N=900, block=64)
_check_flex(_sparse_pairs(16, 16, 3), seed=5)
assert _unique_graphs() == _graphs, (
    "new strides compiled FlexAttention again: capture the hyperparameters as 0-d tensors.")
### END HIDDEN TESTS

# %% [markdown]
# ## Part 3: Longformer and BigBird (2 points)
#
# - `longformer_mod(window, global_tokens)`: the sliding window $|i - j| \le w$, plus the first
#   $g$ = `global_tokens` positions as **global** tokens: a global query sees every key, and every
#   query sees a global key (Beltagy et al. 2020).
# - `bigbird_mod(block, window_blocks, global_blocks, random_blocks)`: BigBird works on blocks of
#   `block` positions. With $a = \lfloor i / \text{block} \rfloor$ and
#   $c = \lfloor j / \text{block} \rfloor$ the query and key blocks, key $j$ is visible to query $i$
#   when $|a - c| \le$ `window_blocks`, or $a$ or $c$ is one of the first `global_blocks` blocks, or
#   `random_blocks[a, c]` is True. `random_blocks` is a boolean tensor `(nb, nb)` (on `DEVICE`,
#   `nb` = number of blocks) of the random key blocks each query block was given: look it up, by
#   block, inside the `mask_mod` (indexing a captured tensor with index tensors is fine).

# %% nbgrader={"grade": false, "grade_id": "longformer_mod", "locked": false, "schema_version": 3, "solution": true, "task": false}
def longformer_mod(window, global_tokens):
    """mask_mod of Longformer: |i - j| <= window, or i < global_tokens, or j < global_tokens."""
    ### BEGIN SOLUTION
    w = torch.tensor(window, device=DEVICE)
    g = torch.tensor(global_tokens, device=DEVICE)

    def mask_mod(b, h, q_idx, kv_idx):
        return ((q_idx - kv_idx).abs() <= w) | (q_idx < g) | (kv_idx < g)
    return mask_mod
    ### END SOLUTION


# %% nbgrader={"grade": false, "grade_id": "bigbird_mod", "locked": false, "schema_version": 3, "solution": true, "task": false}
def bigbird_mod(block, window_blocks, global_blocks, random_blocks):
    """mask_mod of BigBird: by blocks, window or global or random_blocks[i // block, j // block]."""
    ### BEGIN SOLUTION
    size = torch.tensor(block, device=DEVICE)
    wb = torch.tensor(window_blocks, device=DEVICE)
    gb = torch.tensor(global_blocks, device=DEVICE)

    def mask_mod(b, h, q_idx, kv_idx):
        qb, kb = q_idx // size, kv_idx // size  # the query's and the key's block
        return ((qb - kb).abs() <= wb) | (qb < gb) | (kb < gb) | random_blocks[qb, kb]
    return mask_mod
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_longformer_bigbird", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""Part 3: longformer_mod and bigbird_mod allow the reference's pairs (ragged N included), give
the reference's block-mask sparsity, and equal dense attention through compiled FlexAttention."""
from attnkit.fixed import bigbird_layout as _bigbird_layout, bigbird_mask as _bigbird_ref
from attnkit.fixed import longformer_mask as _longformer_ref

def _random_blocks(N, block, r, seed):
    """The random key blocks of each query block, as BigBird draws them: (nb, nb) bool on DEVICE."""
    nb = -(-N // block)
    layout = _bigbird_layout(nb, 0, 0, r, seed)  # the diagonal and r random blocks per row
    return (layout & ~torch.eye(nb, dtype=torch.bool)).to(DEVICE)  # the diagonal is in every window

def _bigbird_pair(N, block, wb, gb, r, seed):
    ref = _bigbird_ref(N, block, wb, gb, r, seed, device=DEVICE)
    table = _random_blocks(N, block, r, seed)
    return (f"bigbird_mod({block}, {wb}, {gb}, random_blocks) at N={N}", bigbird_mod(block, wb, gb, table), ref)

def _longformer_pair(w, g):
    ref = _longformer_ref(w, g, device=DEVICE)
    return (f"longformer_mod({w}, {g})", longformer_mod(w, g), ref)

_check_masks([_longformer_pair(2, 3)], sizes=(8, 21, 40))
for _N in (20, 37):
    _check_masks([_bigbird_pair(_N, 4, 1, 1, 2, seed=_N)], sizes=(_N,))
_check_blocks([_longformer_pair(32, 64), _bigbird_pair(1000, 50, 1, 1, 2, seed=1)], N=1000)
_check_flex([_longformer_pair(8, 5), _bigbird_pair(_FLEX_N, 32, 1, 1, 1, seed=2)], seed=6)

### BEGIN HIDDEN TESTS
_graphs = _unique_graphs()
for _w, _g in [(0, 0), (0, 4), (5, 0), (3, 30), (40, 2)]:
    _check_masks([_longformer_pair(_w, _g)], sizes=(1, 13, 33))
for _N, _blk, _wb, _gb, _r, _seed in [(30, 5, 0, 0, 1, 3), (45, 8, 1, 2, 0, 4), (64, 16, 0, 1, 2, 5),
                                        (19, 4, 2, 0, 3, 6), (7, 3, 0, 0, 1, 7)]:
    _check_masks([_bigbird_pair(_N, _blk, _wb, _gb, _r, _seed)], sizes=(_N,))
_check_blocks([_longformer_pair(100, 3), _bigbird_pair(900, 64, 2, 1, 3, seed=8)], N=900)
_check_flex([_longformer_pair(30, 17), _bigbird_pair(_FLEX_N, 32, 0, 2, 3, seed=9)], seed=7)
assert _unique_graphs() == _graphs, (
    "new hyperparameters compiled FlexAttention again: capture them as 0-d tensors.")
### END HIDDEN TESTS

# %% [markdown]
# ## Part 4: biases as `score_mod`s (2 points)
#
# - **ALiBi** (Press et al. 2022) adds a linear penalty for distance, with one slope per head:
#   `alibi_mod(H)` returns the `score_mod` $s + m_h\,(j - i)$ with $m_h = 2^{-8 (h + 1) / H}$ for
#   heads $h = 0, \dots, H - 1$ (so $\frac12, \frac14, \dots$ for $H = 8$). It is used with the
#   causal mask, where $j - i \le 0$; the `score_mod` itself applies the formula to every pair.
# - **The bell-curve window** of chapter 8: `bell_mod(sigma, window)` weights the window keys by
#   $e^{-\frac12 (d/\sigma)^2}$, $d = i - j$, which on the scores is the **log-space** bias
#   $s - \frac12 (d / \sigma)^2$ for $|d| \le w$, and $-\infty$ outside the window (multiplying
#   the softmax weights by the curve and renormalising is the same thing).
#
# Capture the slopes, σ and $w$ as tensors on `DEVICE`.

# %% nbgrader={"grade": false, "grade_id": "alibi_mod", "locked": false, "schema_version": 3, "solution": true, "task": false}
def alibi_mod(H):
    """score_mod of ALiBi for H heads: score + m_h * (j - i), m_h = 2 ** (-8 * (h + 1) / H)."""
    ### BEGIN SOLUTION
    slopes = 2.0 ** (-8.0 * torch.arange(1, H + 1, device=DEVICE) / H)  # (H,)

    def score_mod(score, b, h, q_idx, kv_idx):
        return score + slopes[h] * (kv_idx - q_idx)
    return score_mod
    ### END SOLUTION


# %% nbgrader={"grade": false, "grade_id": "bell_mod", "locked": false, "schema_version": 3, "solution": true, "task": false}
def bell_mod(sigma, window):
    """score_mod of the bell-curve window: score - (i - j)**2 / (2 sigma**2) if |i - j| <= window, else -inf."""
    ### BEGIN SOLUTION
    s = torch.tensor(sigma, device=DEVICE)
    w = torch.tensor(window, device=DEVICE)

    def score_mod(score, b, h, q_idx, kv_idx):
        d = q_idx - kv_idx
        return torch.where(d.abs() <= w, score - 0.5 * (d / s) ** 2, -math.inf)
    return score_mod
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_score_mods", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""Part 4: alibi_mod and bell_mod give the reference's scores (and -inf where it has -inf) on a
grid of random scores, and equal dense attention through compiled FlexAttention (ALiBi with the
causal mask)."""
from attnkit.bellcurve import bell_score_mod as _bell_ref

def _alibi_ref(H):
    slopes = torch.tensor([2.0 ** (-8.0 * (h + 1) / H) for h in range(H)], device=DEVICE)
    return lambda score, b, h, q_idx, kv_idx: score + slopes[h] * (kv_idx - q_idx)

def _check_score_flex(H, sigma, w, seed):
    """ALiBi on heads 0..H-1 (causal), the bell curve on heads H..2H-1, one compiled call."""
    mods = [alibi_mod(H), bell_mod(sigma, w)]
    refs = [_alibi_ref(H), _bell_ref(sigma, window=w, device=DEVICE)]
    reach = torch.tensor(w, device=DEVICE)

    def by_head(pair):
        return lambda score, b, h, q, kv: torch.where(h < H, pair[0](score, b, h % H, q, kv),
                                                      pair[1](score, b, h % H, q, kv))

    def mask(b, h, q, kv):
        return torch.where(h < H, kv <= q, (q - kv).abs() <= reach)
    q, k, v = _qkv(2 * H, seed)
    block_mask = create_block_mask(mask, None, 2 * H, _FLEX_N, _FLEX_N, device=DEVICE)
    out = _flex(q, k, v, score_mod=by_head(mods), block_mask=block_mask)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(_FLEX_D)
    scores = _materialize_scores(by_head(refs), scores).masked_fill(~_materialize(mask, _FLEX_N, H=2 * H,
                                                                                  device=DEVICE), -math.inf)
    expected = torch.softmax(scores, dim=-1) @ v
    for name, heads in ((f"alibi_mod({H})", slice(0, H)), (f"bell_mod({sigma}, {w})", slice(H, 2 * H))):
        grading.check_tensor(out[:, heads], expected[:, heads], **_FLEX_TOL,
                             name=f"{name} through compiled FlexAttention (N={_FLEX_N})")

for _H in (2, 4):
    _check_scores(f"alibi_mod({_H})", alibi_mod(_H), _alibi_ref(_H), H=_H, N=20, seed=_H)
_bell_reference = _bell_ref(2.0, window=3, device=DEVICE)
_check_scores("bell_mod(2.0, 3)", bell_mod(2.0, 3), _bell_reference, H=1, N=13, seed=1)
_check_score_flex(2, 3.0, 20, seed=8)

### BEGIN HIDDEN TESTS
_graphs = _unique_graphs()
for _H in (1, 8, 16):
    _check_scores(f"alibi_mod({_H})", alibi_mod(_H), _alibi_ref(_H), H=_H, N=11, seed=10 + _H)
for _seed, (_sigma, _w) in enumerate([(0.5, 0), (1.0, 2), (7.5, 4), (30.0, 100), (2.5, 40)], start=20):
    _bell_reference = _bell_ref(_sigma, window=_w, device=DEVICE)
    _check_scores(f"bell_mod({_sigma}, {_w})", bell_mod(_sigma, _w), _bell_reference, H=1, N=45, seed=_seed)
_check_score_flex(2, 0.8, 60, seed=9)
assert _unique_graphs() == _graphs, "a new sigma or window compiled FlexAttention again: capture them as tensors."
### END HIDDEN TESTS

# %% [markdown]
# ## Part B: Triton
#
# A Triton kernel is a function decorated with `@triton.jit` that runs as a grid of **programs**;
# each finds out which piece of the work it owns with `tl.program_id(axis)` and works on whole
# blocks of values at once:
#
# ```python
# @triton.jit
# def add_one(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
#     offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)    # (BLOCK,) positions of this program
#     inside = offsets < n                                        # the last block sticks out
#     x = tl.load(x_ptr + offsets, mask=inside, other=0.0)        # never read past the end
#     tl.store(out_ptr + offsets, x + 1, mask=inside)
#
# add_one[(triton.cdiv(n, 256),)](x, out, n, BLOCK=256)            # the launcher: grid, then arguments
# ```
#
# A tensor argument becomes a pointer to its first element, so the kernel computes addresses
# itself (the tests pass **contiguous** tensors: row r of an `(R, C)` tensor starts at `r * C`).
# `tl.constexpr` arguments are compile-time constants (block sizes must be powers of two);
# `tl.arange`, `tl.load`/`tl.store` with a `mask`, `tl.dot` (a matrix product of blocks of at
# least 16×16), `tl.max`/`tl.sum(x, axis=...)`, `tl.exp`, `tl.where`, `tl.maximum`/`tl.minimum`
# and `tl.trans` are all you need. A `for start in range(lo, hi, STEP)` loop may have bounds
# computed in the kernel.
#
# **Bounds.** Every `tl.load` that can reach past the end of a tensor needs its `mask`: on a GPU
# the read may crash or return garbage, under the interpreter it reads whatever lies in memory.
# The tests put NaN right after each input tensor, so a missing mask shows up as NaN in your
# result.
#
# **Tolerance.** Under the interpreter the arithmetic is exact float32 and the tests compare to
# $10^{-4}$; on a GPU `tl.dot` rounds float32 inputs to TF32, and the tolerance is $2 \cdot 10^{-2}$
# (looser for the overflow tests, whose scores are in the hundreds: there only NaN and inf matter).
#
# ## Part 5: row softmax (2 points)
#
# Write `softmax_kernel` (one program per row) and its launcher `softmax(x)` for a contiguous
# float32 `x` of shape `(R, C)` on `DEVICE`: the softmax of every row. The block must cover a whole
# row: `BLOCK = triton.next_power_of_2(C)` columns, masked beyond `C` (read `-inf` there, so the
# padding adds nothing to the sum). Subtract the row's maximum before `tl.exp`: the test feeds
# scores in the thousands, where $e^x$ overflows float32.

# %% nbgrader={"grade": false, "grade_id": "softmax", "locked": false, "schema_version": 3, "solution": true, "task": false}
@triton.jit
def softmax_kernel(x_ptr, out_ptr, n_cols, BLOCK: tl.constexpr):
    """One program per row of x (contiguous, n_cols columns), BLOCK >= n_cols."""
    ### BEGIN SOLUTION
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    inside = cols < n_cols
    x = tl.load(x_ptr + row * n_cols + cols, mask=inside, other=float("-inf"))  # (BLOCK,)
    e = tl.exp(x - tl.max(x, axis=0))  # <= 1: no overflow; the padding gives exp(-inf) = 0
    tl.store(out_ptr + row * n_cols + cols, e / tl.sum(e, axis=0), mask=inside)
    ### END SOLUTION


def softmax(x):
    """x: (R, C) float32 on DEVICE. Returns the softmax of each row, (R, C)."""
    ### BEGIN SOLUTION
    x = x.contiguous()
    R, C = x.shape
    out = torch.empty_like(x)
    softmax_kernel[(R,)](x, out, C, BLOCK=triton.next_power_of_2(C))
    return out
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_softmax", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""Part 5: softmax() equals torch.softmax over rows of any length (ragged: not a power of two),
reads nothing past the end, and stays finite for scores in the thousands."""

def _check_softmax(R, C, seed, scale=1.0):
    x = _poisoned(_random(R, C, seed=seed, scale=scale))
    _check_out(softmax(x), torch.softmax(x, dim=-1), f"softmax of a ({R}, {C}) tensor (×{scale:g})", _TOL,
               nan_hint="a tl.load without its mask read past the row (the tests put NaN after the tensor), "
                        "or exp() overflowed (subtract the row's maximum first)")

_check_softmax(4, 16, seed=1)
_check_softmax(5, 37, seed=2)
_check_softmax(3, 20, seed=3, scale=1000.0)

### BEGIN HIDDEN TESTS
_check_softmax(1, 1, seed=4)
_check_softmax(6, 100, seed=5)
_check_softmax(2, 129, seed=6, scale=3000.0)
_check_softmax(33, 8, seed=7, scale=50.0)
_x = _random(3, 10, seed=8)
_x[:, 4:] = -math.inf  # masked scores: they get weight 0
_check_out(softmax(_poisoned(_x)), torch.softmax(_x, dim=-1), "softmax of rows with -inf entries", _TOL)
### END HIDDEN TESTS

# %% [markdown]
# ## Part 6: FlashAttention's forward pass (3 points)
#
# Dense attention writes the $N \times M$ scores to memory, reads them back for the softmax, and
# again for the product with $V$. FlashAttention (Dao et al. 2022) never stores them: a program
# owns one block of `BLOCK_M` queries (of one batch element and head), keeps them in fast memory,
# and walks over the keys one tile of `BLOCK_N` at a time with the **online softmax**. Per query
# row it keeps the running maximum $m$, the running sum $\ell$ and the running output
# $\mathrm{acc}$, and for each tile of scores $s = q K_{\text{tile}}^\top / \sqrt D$:
#
# $$m' = \max(m, \max_j s_j), \quad \alpha = e^{m - m'}, \quad p = e^{s - m'}, \quad
# \ell' = \alpha\,\ell + \textstyle\sum_j p_j, \quad \mathrm{acc}' = \alpha\,\mathrm{acc} + p\,V_{\text{tile}};$$
#
# at the end $\mathrm{out} = \mathrm{acc} / \ell$. The factor $\alpha$ rescales what was summed
# under the old maximum; without it the early tiles get the wrong weight. Start $m$ at a large
# negative *finite* number (say $-10^{30}$): with $-\infty$, a row whose first tile is fully masked
# would compute $e^{-\infty - (-\infty)} = $ NaN.
#
# Write `flash_kernel` and the launcher `flash_attention(q, k, v, causal=False, *, block_m, block_n)`:
# `q` is `(B, H, N, D)`, `k` and `v` are `(B, H, M, D)`, contiguous float32 on `DEVICE`, $D$ a power
# of two ≥ 16, and the result is `(B, H, N, D)`. A grid of `(cdiv(N, block_m), B * H)` programs is
# natural. Mask the keys past $M$ (scores to $-\infty$ with `tl.where`, and the loads) and the
# queries past $N$ (loads and stores). With `causal=True` ($M = N$), query $i$ sees keys $j \le i$,
# and a query block stops at the tile of its last query: the tiles above the diagonal are never
# visited. The default tile size `BLOCK` (16 under the interpreter, 64 on a GPU) comes from the setup cell.

# %% nbgrader={"grade": false, "grade_id": "flash", "locked": false, "schema_version": 3, "solution": true, "task": false}
@triton.jit
def flash_kernel(Q, K, V, O, N, M, scale, CAUSAL: tl.constexpr, D: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Program (a, bh): query block a of (batch, head) bh. (Change the arguments if you like.)"""
    ### BEGIN SOLUTION
    pid_m = tl.program_id(0)  # which block of queries
    bh = tl.program_id(1)  # which (batch, head)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,) query positions
    dims = tl.arange(0, D)
    q = tl.load(Q + bh * N * D + rows[:, None] * D + dims[None, :], mask=rows[:, None] < N, other=0.0)  # (BLOCK_M, D)

    m_i = tl.full([BLOCK_M], -1.0e30, tl.float32)  # running max (finite: no -inf - -inf)
    l_i = tl.zeros([BLOCK_M], tl.float32)  # running sum of exp(s - m_i)
    acc = tl.zeros([BLOCK_M, D], tl.float32)  # running sum of exp(s - m_i) v
    hi = M
    if CAUSAL:
        hi = tl.minimum(M, (pid_m + 1) * BLOCK_M)  # up to the diagonal tile
    for start in range(0, hi, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)  # (BLOCK_N,) key positions
        k = tl.load(K + bh * M * D + cols[:, None] * D + dims[None, :], mask=cols[:, None] < M, other=0.0)
        s = tl.dot(q, tl.trans(k)) * scale  # (BLOCK_M, BLOCK_N)
        keep = cols[None, :] < M
        if CAUSAL:
            keep = keep & (cols[None, :] <= rows[:, None])
        s = tl.where(keep, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp(m_i - m_new)  # rescales the old state to the new max
        p = tl.exp(s - m_new[:, None])  # masked entries give 0
        v = tl.load(V + bh * M * D + cols[:, None] * D + dims[None, :], mask=cols[:, None] < M, other=0.0)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    out = acc / l_i[:, None]
    tl.store(O + bh * N * D + rows[:, None] * D + dims[None, :], out.to(O.dtype.element_ty),
             mask=rows[:, None] < N)
    ### END SOLUTION


def flash_attention(q, k, v, causal=False, *, block_m=BLOCK, block_n=BLOCK):
    """q: (B, H, N, D), k, v: (B, H, M, D), contiguous, on DEVICE. Returns (B, H, N, D)."""
    ### BEGIN SOLUTION
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    B, H, N, D = q.shape
    M = k.shape[2]
    out = torch.empty_like(q)
    grid = (triton.cdiv(N, block_m), B * H)
    flash_kernel[grid](q, k, v, out, N, M, 1 / math.sqrt(D), CAUSAL=causal, D=D,
                       BLOCK_M=block_m, BLOCK_N=block_n)
    return out
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_flash_attention", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
"""Part 6: flash_attention() equals dense attention, non-causal (M != N too) and causal, for N and M
that are not multiples of the tile (reading nothing past the end), and for large scores."""

def _check_flash(B, H, N, D, seed, M=None, causal=False, scale=1.0, blocks=(16, 16)):
    q, k, v = _kernel_qkv(B, H, N, D, seed, M=M, scale=scale)
    mask = torch.ones(N, N, dtype=torch.bool, device=DEVICE).tril() if causal else None
    expected = dense_attention(q, k, v, mask=mask)
    got = flash_attention(q, k, v, causal=causal, block_m=blocks[0], block_n=blocks[1])
    _check_out(got, expected, f"flash_attention with N={N}, M={M or N}, causal={causal}, blocks {blocks}"
                              + (f", q and k ×{scale:g}" if scale != 1 else ""), _TOL if scale == 1 else _TOL_LARGE)

_check_flash(1, 2, 40, 16, seed=1, M=72)
_check_flash(1, 2, 50, 16, seed=2, causal=True)
_check_flash(1, 1, 48, 16, seed=3, scale=10.0)

### BEGIN HIDDEN TESTS
_check_flash(2, 1, 33, 32, seed=4, M=20)
_check_flash(1, 2, 17, 16, seed=5, M=5)
_check_flash(1, 1, 64, 16, seed=6, causal=True)
_check_flash(1, 2, 45, 16, seed=7, causal=True, blocks=(32, 16))
_check_flash(2, 1, 39, 16, seed=8, M=61, blocks=(16, 32))
_check_flash(1, 1, 1, 16, seed=9)
_check_flash(1, 1, 70, 16, seed=10, causal=True, scale=8.0)
### END HIDDEN TESTS

# %% [markdown]
# ## Part 7: sliding-window FlashAttention (3 points)
#
# With a window $|i - j| \le w$, a block of queries $[m_0, m_0 + \text{BLOCK\_M})$ needs only the
# keys $[\max(m_0 - w, 0),\ \min(m_0 + \text{BLOCK\_M} + w, N))$ (with `causal=True` the end is
# $\min(m_0 + \text{BLOCK\_M}, N)$): every other tile of the score matrix is empty. Write
# `window_kernel` and its launcher `window_attention(q, k, v, window, causal=False, *, block_m,
# block_n)` ($M = N$) that loops over **only the key tiles that meet this range**, where tiles
# are the aligned blocks $[t \cdot \text{BLOCK\_N}, (t + 1) \cdot \text{BLOCK\_N})$: start at the
# tile that holds key $\max(m_0 - w, 0)$, stop after the tile that holds the last key of the range.
# Inside a tile, mask what lies outside the window (or past $N$, or above the diagonal).
#
# Each program also **counts** the tiles it visited and writes the count to `tiles[b, h, a]`
# (query block $a$): return `(out, tiles)` with `tiles` an int32 tensor `(B, H, cdiv(N, block_m))`.
# The tests compare it with the fewest tiles each query block must visit; a kernel that visits
# all tiles gets the right values and the wrong counts.

# %% nbgrader={"grade": false, "grade_id": "window", "locked": false, "schema_version": 3, "solution": true, "task": false}
@triton.jit
def window_kernel(Q, K, V, O, TILES, N, window, scale, NQ, CAUSAL: tl.constexpr, D: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Program (a, bh): query block a of (batch, head) bh; writes its tile count to TILES[bh * NQ + a]."""
    ### BEGIN SOLUTION
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    m0 = pid_m * BLOCK_M
    rows = m0 + tl.arange(0, BLOCK_M)  # (BLOCK_M,) query positions
    dims = tl.arange(0, D)
    base = bh * N * D  # this (batch, head) in q, k, v, out
    q = tl.load(Q + base + rows[:, None] * D + dims[None, :], mask=rows[:, None] < N, other=0.0)

    m_i = tl.full([BLOCK_M], -1.0e30, tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, D], tl.float32)
    lo = (tl.maximum(m0 - window, 0) // BLOCK_N) * BLOCK_N  # the tile holding the first key of the band
    hi = tl.minimum(m0 + BLOCK_M + window, N)  # one past the band's last key
    if CAUSAL:
        hi = tl.minimum(hi, m0 + BLOCK_M)
    visited = pid_m * 0  # a 0-d int32 counter
    for start in range(lo, hi, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        k = tl.load(K + base + cols[:, None] * D + dims[None, :], mask=cols[:, None] < N, other=0.0)
        s = tl.dot(q, tl.trans(k)) * scale  # (BLOCK_M, BLOCK_N)
        d = rows[:, None] - cols[None, :]  # i - j
        keep = (cols[None, :] < N) & (d <= window) & (d >= -window)
        if CAUSAL:
            keep = keep & (d >= 0)
        s = tl.where(keep, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(s - m_new[:, None])
        v = tl.load(V + base + cols[:, None] * D + dims[None, :], mask=cols[:, None] < N, other=0.0)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
        visited += 1
    out = acc / l_i[:, None]
    tl.store(O + base + rows[:, None] * D + dims[None, :], out.to(O.dtype.element_ty), mask=rows[:, None] < N)
    tl.store(TILES + bh * NQ + pid_m, visited)
    ### END SOLUTION


def window_attention(q, k, v, window, causal=False, *, block_m=BLOCK, block_n=BLOCK):
    """q, k, v: (B, H, N, D), contiguous, on DEVICE. Returns (out (B, H, N, D), tiles (B, H, cdiv(N, block_m)) int32)."""
    ### BEGIN SOLUTION
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    B, H, N, D = q.shape
    nq = triton.cdiv(N, block_m)
    out = torch.empty_like(q)
    tiles = torch.zeros(B, H, nq, dtype=torch.int32, device=q.device)
    window_kernel[(nq, B * H)](q, k, v, out, tiles, N, window, 1 / math.sqrt(D), nq, CAUSAL=causal, D=D,
                               BLOCK_M=block_m, BLOCK_N=block_n)
    return out, tiles
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_window_attention", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
"""Part 7: window_attention() equals dense attention with the window mask (causal or not, ragged N,
reading nothing past the end), and each query block visits exactly the fewest key tiles."""
from attnkit.fixed import local_reference as _local_reference
from attnkit.triton_window import tile_counts as _tile_counts

def _check_window(B, H, N, D, w, seed, causal=False, blocks=(16, 16)):
    q, k, v = _kernel_qkv(B, H, N, D, seed)
    expected = _local_reference(q, k, v, window=w, causal=causal)
    result = window_attention(q, k, v, w, causal=causal, block_m=blocks[0], block_n=blocks[1])
    what = f"window_attention with N={N}, window={w}, causal={causal}, blocks {blocks}"
    assert isinstance(result, tuple) and len(result) == 2, f"{what} should return (out, tiles)."
    out, tiles = result
    _check_out(out, expected, what, _TOL)
    fewest = _tile_counts(N, block_m=blocks[0], block_n=blocks[1], window=w, causal=causal)  # (nq,)
    grading.check_shape(tiles, (B, H, fewest.numel()), name=f"the tile counts of {what}", axes="B, H, query blocks")
    got = tiles.cpu().long()
    if not (got == fewest).all():
        raise AssertionError(f"{what}: the query blocks visited {got[0, 0].tolist()} key tiles "
                             f"(batch 0, head 0), the fewest that cover the band are {fewest.tolist()}.")

_check_window(1, 2, 100, 16, 5, seed=1)
_check_window(1, 2, 77, 16, 13, seed=2, causal=True)
_check_window(1, 1, 64, 16, 20, seed=3, blocks=(32, 16))

### BEGIN HIDDEN TESTS
_check_window(1, 1, 50, 16, 0, seed=4)
_check_window(2, 1, 37, 16, 100, seed=5)
_check_window(1, 2, 90, 32, 7, seed=6, causal=True, blocks=(16, 32))
_check_window(1, 1, 120, 16, 31, seed=7, blocks=(32, 32))
_check_window(1, 1, 1, 16, 3, seed=8)
_check_window(1, 2, 65, 16, 16, seed=9, causal=True)
### END HIDDEN TESTS

# %% [markdown]
# ## Part 8: the window kernel's work, and its speed (2 points)
#
# A window kernel is worth writing only if it skips the empty tiles. The test checks that
# deterministically, the same way on every machine, at $N = 4096$, $w = 64$ with 64×64 tiles
# ($B = H = 1$, $D = 16$):
#
# - the tile counter of every query block equals the fewest tiles that cover its band (190 tiles
#   in all, 4.6% of the 4096 a dense kernel visits), and
# - the outputs of a few *probe* query blocks are right while **every key tile outside their
#   bands holds NaN**: a kernel that loads a single tile it does not need (whatever its counter
#   says) turns those rows into NaN.
#
# **On a machine without a GPU** these checks alone earn the 2 points. **On a GPU** the same
# checks run, and then your kernel is timed against PyTorch's `scaled_dot_product_attention`
# (dense FlashAttention) in this process, interleaved, medians, at $N = 16384$, $w = 256$
# (float32, $B = 1$, $H = 16$, $D = 64$): it must be at least 3× faster to earn the points (the
# band holds 3% of the scores). The library's FlexAttention window is timed too, for comparison
# only.

# %% nbgrader={"grade": true, "grade_id": "test_window_work", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""Part 8: at N=4096, w=64, 64x64 tiles, window_attention() visits exactly the fewest key tiles
(4.6% of the dense tiles) and never loads a tile outside a query block's band (probe blocks stay
right with NaN in every other tile). On a GPU only: it is also at least 3x faster than SDPA at
N=16384, w=256 (float32, B=1, H=16, D=64), timed interleaved on fresh random inputs in every round
(a result stored from an earlier call gains nothing), each timed call's output and tile counts checked."""
from attnkit.fixed import local_reference as _local_reference
from attnkit.triton_window import tile_counts as _tile_counts

def _check_counts(N, w, block):
    q, k, v = _kernel_qkv(1, 1, N, 16, seed=N)
    _, tiles = window_attention(q, k, v, w, block_m=block, block_n=block)
    fewest = _tile_counts(N, block_m=block, block_n=block, window=w)
    got = tiles.cpu().long().flatten()
    if not torch.equal(got, fewest):
        raise AssertionError(f"window_attention at N={N}, window={w}, tiles of {block}: the query blocks visited "
                             f"{got.sum().item()} key tiles in all, the fewest is {fewest.sum().item()} "
                             f"(of {(-(-N // block)) ** 2} dense); first blocks: {got[:6].tolist()} "
                             f"vs {fewest[:6].tolist()}.")

_check_counts(256, 16, 16)  # small and quick first: a dense kernel fails here, not after a long run

def _check_probes(N, w, block, probes, seed):
    """Poison every key tile outside the probe blocks' bands with NaN; the probes must stay right."""
    q, k, v = grading.random_qkv(1, 1, N, 16, seed=seed, dtype=torch.float32, device=DEVICE)
    clean = torch.zeros(N, dtype=torch.bool, device=DEVICE)  # keys inside some probe's band tiles
    for a in probes:
        first = max(a * block - w, 0) // block * block
        last = -(-min(a * block + block + w, N) // block) * block
        clean[first:last] = True
    k_bad, v_bad = (x.masked_fill(~clean.view(1, 1, N, 1), float("nan")) for x in (k, v))
    out, tiles = window_attention(q, k_bad, v_bad, w, block_m=block, block_n=block)
    expected = _local_reference(q, k, v, window=w)
    for a in probes:
        rows = slice(a * block, a * block + block)
        _check_out(out[:, :, rows], expected[:, :, rows],
                   f"window_attention at N={N}, window={w}, tiles of {block}: query block {a} (rows {a * block}.."
                   f"{a * block + block - 1})", _TOL,
                   nan_hint="the kernel loaded a key tile outside this query block's band (this test puts NaN "
                            "in every such tile)")
    fewest = _tile_counts(N, block_m=block, block_n=block, window=w)
    got = tiles.cpu().long().flatten()
    if not torch.equal(got, fewest):
        raise AssertionError(f"window_attention at N={N}, window={w}, tiles of {block}: the query blocks visited "
                             f"{got.sum().item()} key tiles in all, the fewest is {fewest.sum().item()} "
                             f"(of {(-(-N // block)) ** 2} dense).")
    return got.sum().item()

_visited = _check_probes(4096, 64, 64, probes=(0, 5, 31, 63), seed=11)
print(f"window_attention at N=4096, w=64: {_visited} of 4096 key tiles ({_visited / 4096:.1%})")

if DEVICE == "cuda":  # timed on fresh random inputs in every round; each result checked (values and tiles)
    from attnkit.banded import window_attention as _banded_window
    from attnkit.fixed import local as _flex_local
    from attnkit.measure import compare_speed_fresh as _compare_speed_fresh

    def _inputs(seed):
        return grading.random_qkv(1, 16, 16384, 64, seed=seed, dtype=torch.float32, device=DEVICE)

    def _window(q, k, v):
        return window_attention(q, k, v, 256)

    def _sdpa(q, k, v):
        return F.scaled_dot_product_attention(q, k, v)

    def _flex_window(q, k, v):
        return _flex_local(q, k, v, window=256)

    _fewest = _tile_counts(16384, block_m=BLOCK, block_n=BLOCK, window=256)

    def _right(result, q, k, v):
        """A timed call's output against the library's banded window, and its tiles: the fewest."""
        if not isinstance(result, tuple) or len(result) != 2:
            raise AssertionError("window_attention should return (out, tiles).")
        _check_out(result[0], _banded_window(q, k, v, window=256, scale=0.125)[0],
                   "window_attention at N=16384, window=256 (a timed call)", _TOL)
        grading.check_type(result[1], "the tiles of window_attention")
        got = result[1].cpu().long().view(-1, _fewest.numel())
        if not (got == _fewest).all():
            raise AssertionError(f"window_attention at N=16384, window=256 (a timed call): the query blocks "
                                 f"visited {got.sum().item()} key tiles, the fewest is {16 * _fewest.sum().item()}.")

    _speedup = grading.check_speedup(_window, _sdpa, _inputs, min_speedup=3.0, check=_right,
                                     name="window_attention at N=16384, window=256 (vs SDPA)")
    print(f"{_speedup:.1f}× faster than SDPA")
    try:  # for comparison only: a problem in the library's Flex path costs no points
        _vs_flex = _compare_speed_fresh(_window, _flex_window, _inputs, rounds=7,
                                        verify=lambda result, args: _right(result, *args)).speedup
        print(f"{_vs_flex:.2f}× the speed of FlexAttention's window (attnkit.fixed.local)")
    except Exception as _exc:  # noqa: BLE001
        print(f"FlexAttention's window was not timed ({type(_exc).__name__}: {_exc})")

### BEGIN HIDDEN TESTS
_check_counts(1000, 40, 32)
_visited = _check_probes(2048, 100, 64, probes=(1, 17, 31), seed=13)  # (a number as the last line would be a score)
### END HIDDEN TESTS
