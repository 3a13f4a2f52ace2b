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
# # Assignment 2: fixed sparse patterns
#
# Dense attention compares every query with every key: $N^2$ scores. The patterns of this
# assignment decide *in advance*, without looking at the data, which keys each query may see:
# a window of neighbours, every $s$-th key, a few global tokens, random blocks, the previous
# segment. You will write them as mask functions, then compute attention **without ever
# building the $N \times N$ matrix**, and show it is faster.
#
# **How it works.** Fill in every cell that says `# YOUR CODE HERE` (delete the
# `raise NotImplementedError()` line) and run the test cell after it. When you submit, the
# autograder runs the same cells with hidden tests on fresh inputs; efficiency is graded with
# deterministic checks (largest tensor allocated, FLOPs) and one speed measurement against the
# dense reference, timed in the same process. The cell that says `YOUR ANSWER HERE` (part 7b)
# takes a short written answer, in Markdown; it is graded by hand after the autograder has run.
#
# Conventions (as in assignment 1): tensors are `(B, H, N, D)`; a **mask function** is
# `mask_mod(b, h, q_idx, kv_idx) -> bool tensor`, True where query `q_idx` may see key `kv_idx`
# (the FlexAttention convention). It is called with *tensors* of indices, so write it with
# tensor operations (`&`, `|`, `~`, comparisons), never Python `and`, `or` or `if`.
#
# | part | what | points |
# | --- | --- | --- |
# | 1 | mask functions: local and dilated windows | 2 |
# | 2 | mask functions: strided and global | 2 |
# | 3 | banded sliding-window attention: correct | 2 |
# | 4 | ... within O(N·w) memory and FLOPs | 2 |
# | 5 | ... and at least 3× faster than dense | 2 |
# | 6 | Longformer: window + global tokens | 2 |
# | 7 | BigBird: window + global + seeded random blocks | 2 |
# | 7b | written: what BigBird's random blocks buy | 1 |
# | 8 | a Transformer-XL memory step | 2 |
#
# You may use `torch.softmax`, `torch.logsumexp` and anything in `torch`, but not
# `torch.nn.functional.scaled_dot_product_attention` (by any name: the grader refuses it in your
# code, and the part scores 0) or `attnkit`'s implementations of these patterns: the tests use
# those as references.

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false, "task": false}
import math
import warnings

import torch
import torch.nn.functional as F

warnings.filterwarnings("ignore")  # the autograder counts any warning printed by a test as a failure
torch.manual_seed(0)
torch.set_default_dtype(torch.float64)  # small checks in float64; the timing uses float32

from attnkit import dense_attention, grading, materialize
from attnkit.plot import plot_masks

# %% [markdown]
# ## Part 1: window masks (2 points)
#
# With $d = i - j$ for query $i$ and key $j$:
#
# - **local** (sliding window) of width $w$: $|d| \le w$; with `causal=True` also $d \ge 0$;
# - **dilated** window with dilation $\delta$: $|d| \le w\delta$ and $d \equiv 0 \pmod \delta$:
#   the same number of keys as a window of $w$, spread over $\delta$ times the distance.
#
# Each function returns a mask function (a closure).

# %% nbgrader={"grade": false, "grade_id": "window_masks", "locked": false, "schema_version": 3, "solution": true, "task": false}
def local_mask(window, causal=False):
    """mask_mod: |i - j| <= window (and j <= i when causal)."""
    ### BEGIN SOLUTION
    def mask_mod(b, h, q_idx, kv_idx):
        d = q_idx - kv_idx
        keep = d.abs() <= window
        return keep & (d >= 0) if causal else keep
    return mask_mod
    ### END SOLUTION


def dilated_mask(window, dilation):
    """mask_mod: |i - j| <= window * dilation and (i - j) % dilation == 0."""
    ### BEGIN SOLUTION
    def mask_mod(b, h, q_idx, kv_idx):
        d = q_idx - kv_idx
        return (d.abs() <= window * dilation) & (d % dilation == 0)
    return mask_mod
    ### END SOLUTION


# %% nbgrader={"grade": false, "grade_id": "plot_window_masks", "locked": true, "schema_version": 3, "solution": false, "task": false}
plot_masks({"local w=2": local_mask(2), "local w=2, causal": local_mask(2, causal=True),
            "dilated w=2, δ=3": dilated_mask(2, 3)}, 16);

# %% nbgrader={"grade": true, "grade_id": "test_window_masks", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""Part 1: local_mask() and dilated_mask() allow exactly the pairs of their formulas."""
from attnkit import fixed as _ref

grading.check_mask_mod(local_mask(2), _ref.local_mask(2), 12, name="local_mask(2)")
grading.check_mask_mod(dilated_mask(2, 3), _ref.dilated_mask(2, 3), 20, name="dilated_mask(2, 3)")

### BEGIN HIDDEN TESTS
for w, causal, N in [(0, False, 5), (1, True, 9), (3, False, 31), (5, True, 12), (40, False, 17)]:
    grading.check_mask_mod(local_mask(w, causal=causal), _ref.local_mask(w, causal), N,
                           name=f"local_mask({w}, causal={causal})")
for w, dil, N in [(1, 2, 13), (3, 4, 40), (2, 1, 9), (0, 5, 7)]:
    grading.check_mask_mod(dilated_mask(w, dil), _ref.dilated_mask(w, dil), N, name=f"dilated_mask({w}, {dil})")
### END HIDDEN TESTS

# %% [markdown]
# ## Part 2: strided and global masks (2 points)
#
# - **strided** (Sparse Transformer, causal) with stride $s$: $j \le i$ and
#   ($i - j < s$ or $(i - j) \equiv 0 \pmod s$): the last $s$ positions plus every $s$-th one
#   before them. With $s \approx \sqrt N$ each query sees about $2\sqrt N$ keys, and every
#   position can reach every earlier one in two steps.
# - **global** with $g$ global tokens (the first $g$ positions): query $i$ sees key $j$ when
#   $i < g$ (a global token sees everything) or $j < g$ (everyone sees the global tokens).

# %% nbgrader={"grade": false, "grade_id": "strided_global_masks", "locked": false, "schema_version": 3, "solution": true, "task": false}
def strided_mask(stride):
    """mask_mod: j <= i and (i - j < stride or (i - j) % stride == 0)."""
    ### BEGIN SOLUTION
    def mask_mod(b, h, q_idx, kv_idx):
        d = q_idx - kv_idx
        return (d >= 0) & ((d < stride) | (d % stride == 0))
    return mask_mod
    ### END SOLUTION


def global_mask(num_global):
    """mask_mod: i < num_global or j < num_global."""
    ### BEGIN SOLUTION
    def mask_mod(b, h, q_idx, kv_idx):
        return (q_idx < num_global) | (kv_idx < num_global)
    return mask_mod
    ### END SOLUTION


# %% nbgrader={"grade": false, "grade_id": "plot_strided_global_masks", "locked": true, "schema_version": 3, "solution": false, "task": false}
plot_masks({"strided s=4": strided_mask(4), "global g=2": global_mask(2)}, 16);

# %% nbgrader={"grade": true, "grade_id": "test_strided_global_masks", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""Part 2: strided_mask() and global_mask() allow exactly the pairs of their formulas."""
from attnkit import fixed as _ref

def _global_ref(g):
    return lambda b, h, i, j: (i < g) | (j < g)

grading.check_mask_mod(strided_mask(4), _ref.strided_mask(4), 16, name="strided_mask(4)")
grading.check_mask_mod(global_mask(2), _global_ref(2), 8, name="global_mask(2)")

### BEGIN HIDDEN TESTS
for s, N in [(1, 6), (3, 20), (5, 33), (8, 8)]:
    grading.check_mask_mod(strided_mask(s), _ref.strided_mask(s), N, name=f"strided_mask({s})")
for g, N in [(0, 5), (1, 9), (3, 12), (12, 12)]:
    grading.check_mask_mod(global_mask(g), _global_ref(g), N, name=f"global_mask({g})")
### END HIDDEN TESTS

# %% [markdown]
# ## Parts 3 to 5: banded sliding-window attention (6 points)
#
# A mask alone saves nothing: `dense_attention(q, k, v, mask=...)` still computes all $N^2$
# scores and throws most away. Write `sliding_window_attention(q, k, v, window)` (non-causal,
# $|i - j| \le w$) that only computes scores near the diagonal:
#
# 1. cut the queries into chunks of $c = w$ consecutive positions (pad the end with zeros);
# 2. chunk $n$ (queries $nc \ldots nc + c - 1$) can only see keys $nc - w \ldots nc + c - 1 + w$: a
#    **slab** of $L = c + 2w$ keys. Pad the keys and values with $w$ zeros in front (and enough
#    at the end), and cut them into overlapping slabs: `x.unfold(2, L, c)` makes the view
#    `(B, H, n_chunks, D, L)` without copying;
# 3. scores of a chunk against its slab: `(c, D) @ (D, L)`, batched over chunks, heads, batch;
# 4. mask the entries that are outside the window **or** fall on padding, softmax, multiply
#    by the value slab, and put the chunks back in order (crop the padding).
#
# The largest tensor is then $B \cdot H \cdot N \cdot 3w$ (not $N^2$) and the FLOPs
# $4 \cdot B H N \cdot 3w \cdot D$. The tests check the values (part 3), the largest tensor
# and the FLOPs (part 4), and the time against `dense_attention` at $N = 4096$, $w = 128$
# (part 5: at least 3× faster; on a GPU at least 4× at $N = 16384$, $w = 256$).

# %% nbgrader={"grade": false, "grade_id": "sliding_window", "locked": false, "schema_version": 3, "solution": true, "task": false}
def sliding_window_attention(q, k, v, window):
    """Attention where query i sees keys |i - j| <= window, in O(N * window) memory.

    q, k, v: (B, H, N, D). Returns (B, H, N, D).
    """
    ### BEGIN SOLUTION
    B, H, N, D = q.shape
    w = min(window, N - 1)
    c = max(w, 1)  # chunk length
    n, L = math.ceil(N / c), c + 2 * w  # chunks, slab length
    qc = F.pad(q, (0, 0, 0, n * c - N)).view(B, H, n, c, D) / math.sqrt(D)  # (B, H, n, c, D)
    pad = (0, 0, w, n * c - N + w)
    ks = F.pad(k, pad).unfold(2, L, c)  # (B, H, n, D, L)
    vs = F.pad(v, pad).unfold(2, L, c).transpose(-2, -1)  # (B, H, n, L, D)
    i = torch.arange(n * c, device=q.device).view(n, c, 1)  # query positions
    j = (torch.arange(n, device=q.device) * c - w).view(n, 1, 1) \
        + torch.arange(L, device=q.device)  # key positions of each slab
    keep = ((i - j).abs() <= w) & (j >= 0) & (j < N) | (i >= N)  # padded queries: anything finite
    scores = (qc @ ks).masked_fill(~keep, float("-inf"))  # (B, H, n, c, L)
    out = torch.softmax(scores, dim=-1) @ vs  # (B, H, n, c, D)
    return out.reshape(B, H, n * c, D)[:, :, :N]
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_sliding_window", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""Part 3: sliding_window_attention() equals dense attention with the window mask."""
from attnkit import fixed as _ref

def _check_window(B, H, N, D, w, seed, dtype=torch.float64):
    q, k, v = grading.random_qkv(B, H, N, D, seed=seed, dtype=dtype)
    expected = _ref.local_reference(q, k, v, window=w)
    tol = {} if dtype == torch.float64 else {"atol": 1e-5, "rtol": 1e-4}
    grading.check_tensor(sliding_window_attention(q, k, v, w), expected,
                         name=f"sliding_window_attention, N={N}, window={w}", **tol)

_check_window(1, 2, 16, 4, 2, seed=1)

### BEGIN HIDDEN TESTS
for seed, (B, H, N, D, w) in enumerate([(2, 3, 37, 8, 5), (1, 1, 64, 16, 16), (2, 2, 10, 4, 1),
                                        (1, 2, 9, 4, 30), (1, 1, 1, 4, 3), (1, 2, 50, 8, 7)], start=10):
    _check_window(B, H, N, D, w, seed)
_check_window(1, 4, 200, 32, 20, seed=30, dtype=torch.float32)
### END HIDDEN TESTS

# %% nbgrader={"grade": true, "grade_id": "test_sliding_window_work", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""Part 4: the largest tensor sliding_window_attention() allocates stays within 4·B·H·N·w elements,
and its FLOPs within 16·B·H·N·w·D (dense would need N² elements and 4·N²·D FLOPs)."""
B, H, N, D, w = 1, 2, 1024, 16, 32
q, k, v = grading.random_qkv(B, H, N, D, seed=3, dtype=torch.float32)
_ = grading.check_largest_intermediate(sliding_window_attention, q, k, v, w, max_elements=4 * B * H * N * w,
                                       name="sliding_window_attention at N=1024, window=32")
_ = grading.check_flops(sliding_window_attention, q, k, v, w, max_flops=16 * B * H * N * w * D,
                        name="sliding_window_attention at N=1024, window=32")

### BEGIN HIDDEN TESTS
B, H, N, D, w = 2, 2, 2048, 8, 16
q, k, v = grading.random_qkv(B, H, N, D, seed=4, dtype=torch.float32)
_ = grading.check_largest_intermediate(sliding_window_attention, q, k, v, w, max_elements=4 * B * H * N * w,
                                       name="sliding_window_attention at N=2048, window=16")
_ = grading.check_flops(sliding_window_attention, q, k, v, w, max_flops=16 * B * H * N * w * D,
                        name="sliding_window_attention at N=2048, window=16")
### END HIDDEN TESTS

# %% nbgrader={"grade": true, "grade_id": "test_sliding_window_speed", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""Part 5: sliding_window_attention() is at least 3× faster than dense attention at N=4096, w=128
(float32, B=1, H=4, D=64; on a GPU: at least 4× at N=16384, w=256), timed interleaved in this process
on fresh random inputs in every round (a result stored from an earlier call gains nothing); every
result is checked against the library's sliding window on the same inputs, and the work bounds of
part 4 hold for a call among the timed ones."""
from attnkit import dense_attention as _dense
from attnkit import fixed as _fixed
_device = "cuda" if torch.cuda.is_available() else "cpu"
N, _win, bar = (16384, 256, 4.0) if _device == "cuda" else (4096, 128, 3.0)
q, k, v = grading.random_qkv(1, 4, 512, 64, seed=5, dtype=torch.float32, device=_device)
grading.check_tensor(sliding_window_attention(q, k, v, _win), _fixed.local_reference(q, k, v, window=_win),
                     name="sliding_window_attention (before timing it)", atol=1e-4, rtol=1e-3)

def _inputs(seed):
    return grading.random_qkv(1, 4, N, 64, seed=seed, dtype=torch.float32, device=_device)

def _right(out, q_, k_, v_):
    grading.check_tensor(out, _fixed.local(q_, k_, v_, window=_win), atol=1e-4, rtol=1e-3,
                         name=f"sliding_window_attention at N={N}, window={_win} (a timed call)")

speedup = grading.check_speedup(lambda q_, k_, v_: sliding_window_attention(q_, k_, v_, _win),
                                lambda q_, k_, v_: _dense(q_, k_, v_), _inputs, min_speedup=bar, check=_right,
                                max_elements=4 * 4 * N * _win, max_flops=16 * 4 * N * _win * 64,
                                name=f"sliding_window_attention at N={N}, window={_win}")
print(f"{speedup:.1f}× faster than dense attention on {_device}")

# %% [markdown]
# ## Part 6: Longformer (2 points)
#
# Longformer lets a few **global** tokens (here the first $g$ positions) see everything and be
# seen by everyone, on top of the sliding window: the union of `local_mask(w)` and
# `global_mask(g)`. Compute it without an $N \times N$ tensor:
#
# - a global query row sees all $N$ keys: plain dense attention for those $g$ rows;
# - every other query sees its window *and* the $g$ global keys. Compute the window part
#   (as in part 3) and the global-key part (scores against `k[:, :, :g]`, $N \times g$) as
#   two softmaxes over **disjoint** key sets (drop the global keys that are already inside the
#   window), then merge them with their log-sum-exps: for parts with outputs $o_p$ and
#   $\ell_p = \log \sum_{j \in p} e^{s_j}$,
#
# $$o = \frac{\sum_p e^{\ell_p - \ell^*} o_p}{\sum_p e^{\ell_p - \ell^*}}, \qquad \ell^* = \max_p \ell_p .$$
#
# The helper below does the merge (a part in which a row sees nothing has $\ell = -\infty$).
# The test checks the values and that no tensor reaches $N^2 / 4$ elements at $N = 512$.

# %% nbgrader={"grade": false, "grade_id": "merge_helper", "locked": true, "schema_version": 3, "solution": false, "task": false}
def merge_softmax_parts(out_a, lse_a, out_b, lse_b):
    """Merge attention over two disjoint key sets: outs (B, H, N, D), log-sum-exps (B, H, N)."""
    top = torch.maximum(lse_a, lse_b)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    wa, wb = torch.exp(lse_a - top).unsqueeze(-1), torch.exp(lse_b - top).unsqueeze(-1)
    total = wa + wb
    return (wa * out_a + wb * out_b) / torch.where(total > 0, total, torch.ones_like(total))


# %% nbgrader={"grade": false, "grade_id": "longformer", "locked": false, "schema_version": 3, "solution": true, "task": false}
def longformer_attention(q, k, v, window, num_global):
    """Sliding window |i - j| <= window, plus the first num_global tokens as global tokens.

    q, k, v: (B, H, N, D). Returns (B, H, N, D).
    """
    ### BEGIN SOLUTION
    B, H, N, D = q.shape
    g = min(num_global, N)
    # window part with its log-sum-exp (the banded computation of part 3)
    w = min(window, N - 1)
    c = max(w, 1)
    n, L = math.ceil(N / c), c + 2 * w
    qc = F.pad(q, (0, 0, 0, n * c - N)).view(B, H, n, c, D) / math.sqrt(D)
    pad = (0, 0, w, n * c - N + w)
    ks = F.pad(k, pad).unfold(2, L, c)
    vs = F.pad(v, pad).unfold(2, L, c).transpose(-2, -1)
    i = torch.arange(n * c).view(n, c, 1)
    j = (torch.arange(n) * c - w).view(n, 1, 1) + torch.arange(L)
    keep = ((i - j).abs() <= w) & (j >= 0) & (j < N) | (i >= N)
    scores = (qc @ ks).masked_fill(~keep, float("-inf"))
    out_w = (torch.softmax(scores, dim=-1) @ vs).reshape(B, H, n * c, D)[:, :, :N]
    lse_w = torch.logsumexp(scores, dim=-1).reshape(B, H, n * c)[:, :, :N]
    if g == 0:
        return out_w
    # global keys that are outside the window of query i
    s_g = q @ k[:, :, :g].transpose(-2, -1) / math.sqrt(D)  # (B, H, N, g)
    outside = (torch.arange(N).view(N, 1) - torch.arange(g).view(1, g)).abs() > w
    s_g = s_g.masked_fill(~outside, float("-inf"))
    lse_g = torch.logsumexp(s_g, dim=-1)
    out_g = torch.softmax(s_g, dim=-1).nan_to_num() @ v[:, :, :g]
    out = merge_softmax_parts(out_w, lse_w, out_g, lse_g)
    # global queries see everything
    rows = torch.softmax(q[:, :, :g] @ k.transpose(-2, -1) / math.sqrt(D), dim=-1) @ v
    return torch.cat([rows, out[:, :, g:]], dim=2)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_longformer", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""Part 6: longformer_attention() equals dense attention with the Longformer mask, without an N×N tensor."""
from attnkit import fixed as _ref

def _check_longformer(B, H, N, D, w, g, seed):
    q, k, v = grading.random_qkv(B, H, N, D, seed=seed)
    grading.check_tensor(longformer_attention(q, k, v, w, g), _ref.longformer_reference(q, k, v, window=w, global_tokens=g),
                         name=f"longformer_attention, N={N}, window={w}, num_global={g}")

_check_longformer(1, 2, 16, 4, 2, 2, seed=1)

### BEGIN HIDDEN TESTS
for seed, (B, H, N, D, w, g) in enumerate([(2, 3, 37, 8, 4, 3), (1, 2, 20, 4, 1, 0), (1, 1, 12, 4, 3, 12),
                                           (2, 1, 30, 4, 2, 5), (1, 2, 9, 4, 20, 1)], start=40):
    _check_longformer(B, H, N, D, w, g, seed)
q, k, v = grading.random_qkv(1, 2, 512, 8, seed=50, dtype=torch.float32)
_ = grading.check_largest_intermediate(longformer_attention, q, k, v, 16, 4, max_elements=2 * 512 * 512 // 4,
                                       name="longformer_attention at N=512, window=16, 4 global tokens")
### END HIDDEN TESTS

# %% [markdown]
# ## Part 7: BigBird (2 points)
#
# BigBird works on blocks of `block` positions. Query block $a$ sees key block $b$ when
#
# - $|a - b| \le$ `window_blocks` (a window of blocks),
# - $a <$ `global_blocks` or $b <$ `global_blocks` (global blocks), or
# - $b$ is one of `random_blocks` blocks drawn at random for row $a$.
#
# The random blocks must be **reproducible**: draw them with a generator seeded by `seed`,
# `gen = torch.Generator().manual_seed(seed)`, e.g. `torch.randperm(num_blocks, generator=gen)`
# for each row, so the same seed always gives the same layout (and different seeds, usually,
# different ones). Write `bigbird_layout` (a `(num_blocks, num_blocks)` boolean tensor) and
# `bigbird_attention`, which must equal dense attention under the mask your layout defines
# (token $i$ sees token $j$ when `layout[i // block, j // block]`). Random edges matter: they
# make every token reachable from every other in a few hops (chapter 2 measures it).

# %% nbgrader={"grade": false, "grade_id": "bigbird", "locked": false, "schema_version": 3, "solution": true, "task": false}
def bigbird_layout(num_blocks, window_blocks, global_blocks, random_blocks, seed):
    """(num_blocks, num_blocks) bool: which key blocks each query block sees."""
    ### BEGIN SOLUTION
    a = torch.arange(num_blocks).view(-1, 1)
    b = torch.arange(num_blocks).view(1, -1)
    layout = ((a - b).abs() <= window_blocks) | (a < global_blocks) | (b < global_blocks)
    gen = torch.Generator().manual_seed(seed)
    r = min(random_blocks, num_blocks)
    for row in range(num_blocks):
        layout[row, torch.randperm(num_blocks, generator=gen)[:r]] = True
    return layout
    ### END SOLUTION


def bigbird_attention(q, k, v, block, window_blocks, global_blocks, random_blocks, seed):
    """BigBird attention on (B, H, N, D) tensors. Returns (B, H, N, D)."""
    ### BEGIN SOLUTION
    B, H, N, D = q.shape
    nb = math.ceil(N / block)
    layout = bigbird_layout(nb, window_blocks, global_blocks, random_blocks, seed)
    pos = torch.arange(N)
    outs = []
    for a in range(nb):  # one query block at a time: only its visible key blocks
        rows = pos[a * block:(a + 1) * block]
        cols = pos[layout[a][pos // block]]  # key positions in visible blocks
        scores = q[:, :, rows] @ k[:, :, cols].transpose(-2, -1) / math.sqrt(D)
        outs.append(torch.softmax(scores, dim=-1) @ v[:, :, cols])
    return torch.cat(outs, dim=2)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_bigbird", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""Part 7: bigbird_layout() has the window, global and seeded random blocks; bigbird_attention() equals
dense attention under that layout, one block row at a time (no N×N tensor)."""
def _check_layout(nb, wb, gb, rb, seed):
    name = f"bigbird_layout({nb}, {wb}, {gb}, {rb}, seed={seed})"
    layout = bigbird_layout(nb, wb, gb, rb, seed)
    grading.check_type(layout, name)
    grading.check_shape(layout, (nb, nb), name=name)
    assert layout.dtype == torch.bool, f"{name} should be a bool tensor, got {layout.dtype}."
    a, b = torch.arange(nb).view(-1, 1), torch.arange(nb).view(1, -1)
    fixed_part = ((a - b).abs() <= wb) | (a < gb) | (b < gb)
    missing = (fixed_part & ~layout).nonzero().tolist()
    assert not missing, f"{name} misses window or global blocks, e.g. (query block, key block) {missing[:3]}."
    extra = (layout & ~fixed_part).sum(dim=1)
    assert int(extra.max()) <= rb, (f"{name}: a row has {int(extra.max())} extra blocks beyond the window and "
                                    f"global ones; at most {rb} random blocks per row.")
    assert torch.equal(layout, bigbird_layout(nb, wb, gb, rb, seed)), f"{name} is not reproducible from its seed."
    return layout, extra

def _check_bigbird(B, H, N, D, block, wb, gb, rb, seed):
    q, k, v = grading.random_qkv(B, H, N, D, seed=seed)
    nb = math.ceil(N / block)
    layout = bigbird_layout(nb, wb, gb, rb, seed)
    pos = torch.arange(N)
    mask = layout[pos.view(-1, 1) // block, pos.view(1, -1) // block]
    grading.check_tensor(bigbird_attention(q, k, v, block, wb, gb, rb, seed), dense_attention(q, k, v, mask=mask),
                         name=f"bigbird_attention, N={N}, block={block}")

_check_layout(8, 1, 1, 2, seed=0)
_check_bigbird(1, 2, 32, 4, 4, 1, 1, 1, seed=0)

### BEGIN HIDDEN TESTS
_, extra = _check_layout(32, 1, 1, 3, seed=1)
assert int(extra.sum()) > 0, "bigbird_layout(32, 1, 1, 3) added no random blocks outside the window and globals."
layouts = {seed: bigbird_layout(32, 1, 1, 3, seed) for seed in range(4)}
assert len({tuple(l.flatten().tolist()) for l in layouts.values()}) > 1, \
    "bigbird_layout gives the same layout for every seed: draw the random blocks from a generator seeded by `seed`."
_check_layout(5, 0, 0, 0, seed=3)
_check_layout(6, 2, 0, 6, seed=4)
for seed, (B, H, N, D, block, wb, gb, rb) in enumerate([(2, 2, 37, 4, 5, 1, 1, 2), (1, 3, 24, 8, 8, 0, 1, 1),
                                                         (1, 1, 16, 4, 3, 1, 0, 0)], start=60):
    _check_bigbird(B, H, N, D, block, wb, gb, rb, seed)
q, k, v = grading.random_qkv(1, 2, 1024, 8, seed=70, dtype=torch.float32)
_ = grading.check_largest_intermediate(bigbird_attention, q, k, v, 32, 1, 1, 2, 0, max_elements=2 * 2 * 32 * 1024,
                                       name="bigbird_attention at N=1024, block=32")
### END HIDDEN TESTS

# %% [markdown]
# ## Part 7b (written, 1 point): what do the random blocks buy?
#
# BigBird already has a window and global blocks. In the cell below, explain in a few sentences
# what the `random_blocks` add that those two do not: think of attention as a graph (an edge
# where a query may see a key) and of how many layers information needs to travel between two
# distant tokens, and what the cost per layer is. (This cell is graded by hand: replace
# `YOUR ANSWER HERE` with your answer, in Markdown.)

# %% [markdown] nbgrader={"grade": true, "grade_id": "bigbird_random", "locked": false, "points": 1, "schema_version": 3, "solution": true, "task": false}
# ### BEGIN SOLUTION
# With a window alone, information moves about one window per layer, so two tokens $N$ apart
# need $\sim N/w$ layers to interact. Global blocks shorten every path to two hops, but all of
# those paths go through the same few global tokens, a bottleneck. Random blocks turn the
# attention graph into something close to a random (expander) graph: any two tokens are joined by
# a short path of $O(\log N)$ hops, and by many different ones, so information mixes across the
# whole sequence in a few layers without a bottleneck. They cost only $r$ extra blocks per row,
# so a layer stays $O(N)$ in time and memory (and block-sparse, which GPUs run well); the BigBird
# paper uses them, with the global tokens, to keep the expressive power of full attention.
# ### END SOLUTION

# %% [markdown]
# ## Part 8: a Transformer-XL memory step (2 points)
#
# Transformer-XL reads a long sequence segment by segment. While processing segment $t$ it also
# attends to the **cached** keys and values of the positions just before it (the memory), but
# no gradient flows into the cache: it was computed for segment $t-1$ and is treated as a
# constant. Write one step: the $S$ queries of the segment attend causally over the
# concatenation $[\text{memory}; \text{segment}]$ (query $i$ of the segment sees all $P$ cached
# positions and segment keys $j \le i$), and the new memory is the last `memory` positions of
# that concatenation, detached. Stepping through a sequence this way equals attention with the
# mask "$j \le i$ and $j \ge$ (start of $i$'s segment) $-$ memory".

# %% nbgrader={"grade": false, "grade_id": "xl_step", "locked": false, "schema_version": 3, "solution": true, "task": false}
def xl_step(q, k, v, mem_k, mem_v, memory):
    """One Transformer-XL segment step.

    q, k, v: (B, H, S, D) for the current segment; mem_k, mem_v: (B, H, P, D) cached (P may be 0).
    Returns (out (B, H, S, D), (new_mem_k, new_mem_v)) with new_mem_* the last `memory` positions
    of [mem; segment], detached.
    """
    ### BEGIN SOLUTION
    S, P = q.shape[-2], mem_k.shape[-2]
    keys = torch.cat([mem_k.detach(), k], dim=2)  # (B, H, P + S, D)
    values = torch.cat([mem_v.detach(), v], dim=2)
    visible = torch.arange(P + S).view(1, -1) <= torch.arange(S).view(-1, 1) + P  # (S, P + S)
    scores = (q @ keys.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(~visible, float("-inf"))
    out = torch.softmax(scores, dim=-1) @ values
    start = max(P + S - memory, 0)
    return out, (keys[:, :, start:].detach(), values[:, :, start:].detach())
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_xl_step", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""Part 8: xl_step() attends over [memory; segment] causally, keeps the last `memory` positions
detached, and stepping through a sequence equals attnkit's Transformer-XL."""
from attnkit.recurrence import transformer_xl as _xl, xl_attention as _xl_attention

def _check_step(B, H, S, P, D, memory, seed):
    q, k, v = grading.random_qkv(B, H, S, D, seed=seed)
    mem_k, mem_v, _ = grading.random_qkv(B, H, P, D, seed=seed + 1)
    result = xl_step(q, k, v, mem_k, mem_v, memory)
    assert isinstance(result, tuple) and len(result) == 2, "xl_step should return (out, (new_mem_k, new_mem_v))."
    out, (nk, nv) = result
    grading.check_tensor(out, _xl_attention(q, k, v, mem_k=mem_k, mem_v=mem_v),
                         name=f"xl_step output, segment {S}, {P} cached positions")
    keep = min(memory, P + S)
    grading.check_tensor(nk, torch.cat([mem_k, k], dim=2)[:, :, P + S - keep:], name="new_mem_k", axes="B, H, memory, D")
    grading.check_tensor(nv, torch.cat([mem_v, v], dim=2)[:, :, P + S - keep:], name="new_mem_v", axes="B, H, memory, D")

def _check_sequence(B, H, N, D, S, memory, seed):
    q, k, v = grading.random_qkv(B, H, N, D, seed=seed)
    mem_k = mem_v = q.new_zeros(B, H, 0, D)
    outs = []
    for start in range(0, N, S):
        out, (mem_k, mem_v) = xl_step(q[:, :, start:start + S], k[:, :, start:start + S],
                                      v[:, :, start:start + S], mem_k, mem_v, memory)
        outs.append(out)
    grading.check_tensor(torch.cat(outs, dim=2), _xl(q, k, v, segment=S, memory=memory),
                         name=f"xl_step through a sequence of {N} in segments of {S}, memory {memory}")

_check_step(1, 2, 4, 3, 4, 3, seed=1)
_check_sequence(1, 1, 12, 4, 4, 4, seed=2)

### BEGIN HIDDEN TESTS
_check_step(2, 3, 5, 0, 8, 5, seed=10)
_check_step(1, 2, 6, 7, 4, 4, seed=11)
_check_step(2, 1, 3, 5, 4, 20, seed=12)
_check_sequence(2, 2, 23, 4, 5, 5, seed=13)
_check_sequence(1, 2, 20, 4, 4, 10, seed=14)
# the gradient stops at the memory
q, k, v = (t.requires_grad_() for t in grading.random_qkv(1, 2, 4, 4, seed=15))
mem_k, mem_v, _ = (t.requires_grad_() for t in grading.random_qkv(1, 2, 4, 4, seed=16))
out, (nk, nv) = xl_step(q, k, v, mem_k, mem_v, 4)
assert not nk.requires_grad and not nv.requires_grad, "the new memory must be detached (new_mem.detach())."
out.sum().backward()
assert mem_k.grad is None and mem_v.grad is None, \
    "gradient flowed into the cached memory: use mem_k.detach() and mem_v.detach() inside xl_step."
assert q.grad is not None and k.grad is not None, "the output does not depend on the segment's q and k."
### END HIDDEN TESTS
