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
# # Assignment 1: attention basics
#
# In this assignment you build scaled dot-product attention yourself and use it to understand
# what a single query can and cannot do: copy one value, average two values, and survive noisy
# keys (only with more than one head). Then you write multi-head attention, causal masking,
# and count the work attention does.
#
# **How it works.** Fill in every cell that says `# YOUR CODE HERE` (delete the
# `raise NotImplementedError()` line). Each part is followed by a test cell: run it. The
# visible tests tell you what is wrong (shapes, values, which positions); when you submit,
# the autograder runs the same cells with additional hidden tests on fresh inputs.
#
# Conventions (the same in the whole course): tensors are shaped `(B, H, N, D)`: batch, heads,
# queries (or keys, `M`, when different), head dimension. Boolean masks are `True` where a query
# may attend to a key. Everything here runs on a laptop CPU in seconds.
#
# | part | what | points |
# | --- | --- | --- |
# | 1 | stable scaled dot-product attention (with masks) | 3 |
# | 2 | a query that copies one value: how large must the dot product be? | 1 |
# | 3 | a query that averages two values | 1 |
# | 4 | noisy keys: two heads where one head fails | 2 |
# | 5 | multi-head attention | 2 |
# | 6 | causal masking | 2 |
# | 7 | counting the FLOPs of attention | 1 |
#
# Do not call `attnkit.dense_attention`, `torch.nn.functional.scaled_dot_product_attention` or
# `torch.softmax` in your answers: the point is to build them. The tests use them as references.
# That covers every other name for them (`Tensor.softmax`, `F.softmax`, `nn.Softmax`,
# `torch.special.softmax`, `torch.ops.aten._softmax`, `nn.MultiheadAttention`...) and
# `torch.log_softmax` too: the grader refuses them in your code, and the part scores 0.
# `exp`, `sum`, `amax`, `masked_fill`, matrix products and the rest of `torch` are yours.

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false, "task": false}
import math
import warnings

import torch

warnings.filterwarnings("ignore")  # the autograder counts any warning printed by a test as a failure
torch.manual_seed(0)
torch.set_default_dtype(torch.float64)  # small problems: float64 makes the checks exact

from attnkit import grading

# %% [markdown]
# ## Part 1: scaled dot-product attention (3 points)
#
# For queries $Q \in \mathbb{R}^{N \times D}$, keys $K \in \mathbb{R}^{M \times D}$ and values
# $V \in \mathbb{R}^{M \times D_v}$ (per batch and head),
#
# $$\mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\left(\frac{Q K^\top}{\sqrt{D}}\right) V,$$
#
# where the softmax runs over the keys (the last dimension). Write it for `(B, H, N, D)` tensors.
#
# Two details matter:
#
# 1. **Stability.** `exp(1000)` is `inf` in floating point. Since
#    $\mathrm{softmax}(s) = \mathrm{softmax}(s - c)$ for any constant $c$, subtract the row maximum
#    before exponentiating.
# 2. **Masks.** `mask` is `None` or a boolean tensor broadcastable to `(B, H, N, M)`, `True` where
#    query $i$ may attend to key $j$. Give masked scores $-\infty$ (their weight becomes 0). You may
#    assume every query can see at least one key.

# %% nbgrader={"grade": false, "grade_id": "attention", "locked": false, "schema_version": 3, "solution": true, "task": false}
def attention(q, k, v, mask=None):
    """Scaled dot-product attention.

    q: (B, H, N, D), k: (B, H, M, D), v: (B, H, M, Dv), mask: bool, broadcastable to (B, H, N, M).
    Returns (B, H, N, Dv).
    """
    ### BEGIN SOLUTION
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, N, M)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    scores = scores - scores.amax(dim=-1, keepdim=True)  # every exponent <= 0: no overflow
    weights = scores.exp()
    weights = weights / weights.sum(dim=-1, keepdim=True)  # (B, H, N, M), rows sum to 1
    return weights @ v  # (B, H, N, Dv)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_attention", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
"""Part 1: attention() equals the reference on random inputs, is stable for large scores, and respects masks."""
from attnkit import dense_attention

q, k, v = grading.random_qkv(2, 3, 5, 4, seed=1)
grading.check_tensor(attention(q, k, v), dense_attention(q, k, v), name="attention(q, k, v)")

q, k, v = grading.random_qkv(1, 2, 4, 8, M=6, seed=2)  # more keys than queries
grading.check_tensor(attention(q, k, v), dense_attention(q, k, v), name="attention with M=6 keys")

### BEGIN HIDDEN TESTS
for seed, (B, H, N, M, D) in enumerate([(3, 2, 7, 7, 16), (1, 4, 9, 13, 8), (2, 1, 1, 5, 3)], start=10):
    q, k, v = grading.random_qkv(B, H, N, D, M=M, seed=seed)
    grading.check_tensor(attention(q, k, v), dense_attention(q, k, v), name=f"attention on shape {(B, H, N, M, D)}")
# large scores must not overflow
q, k, v = grading.random_qkv(2, 2, 6, 8, seed=20, scale=40.0)
grading.check_tensor(attention(q, k, v), dense_attention(q, k, v), name="attention with scores around 1000")
# boolean masks, (N, M) and per-head (B, H, N, M)
q, k, v = grading.random_qkv(2, 3, 6, 4, M=7, seed=21)
g = torch.Generator().manual_seed(22)
mask = torch.rand(6, 7, generator=g) < 0.5
mask[:, 0] = True
grading.check_tensor(attention(q, k, v, mask=mask), dense_attention(q, k, v, mask=mask), name="attention with an (N, M) mask")
mask4 = torch.rand(2, 3, 6, 7, generator=g) < 0.3
mask4[..., 3] = True
grading.check_tensor(attention(q, k, v, mask=mask4), dense_attention(q, k, v, mask=mask4), name="attention with a (B, H, N, M) mask")
# the dtype of the inputs is kept
q, k, v = grading.random_qkv(1, 2, 5, 4, seed=23, dtype=torch.float32)
grading.check_tensor(attention(q, k, v), dense_attention(q, k, v), name="attention in float32", atol=1e-5, rtol=1e-4)
### END HIDDEN TESTS

# %% [markdown]
# ## Part 2: a query that copies (1 point)
#
# In parts 2 to 4 we look at a single query $q \in \mathbb{R}^D$ and keys $k_1, \dots, k_N$ (the
# rows of `keys`, shape `(N, D)`), with the plain weights of the original formulation:
#
# $$\alpha_i = \frac{\exp(k_i^\top q)}{\sum_{i'=1}^{N} \exp(k_{i'}^\top q)}, \qquad c = \sum_i \alpha_i v_i .$$
#
# If $\alpha_j \approx 1$ then $c \approx v_j$: attention *copies* value $j$. For that, $k_j^\top q$
# must be much larger than every other $k_i^\top q$, so take a query along key $j$, $q = n\,k_j$.
# **How large must the dot product be?** Too small a scale $n$ and the other values leak into
# $c$; a scale far larger than needed saturates the softmax (its gradient vanishes) and
# overflows in low precision. So we want the smallest $n$ that still *guarantees* the copy.
#
# The keys are distinct and **unit-norm**, so $k_i^\top k_j = \cos(k_i, k_j)$. How easy key $j$ is
# to single out is measured by its **minimum cosine gap**
#
# $$\delta = 1 - \max_{i \ne j} \cos(k_i, k_j) \qquad (0 < \delta \le 2):$$
#
# the closest other key still has cosine $1 - \delta$ with $k_j$, itself has cosine 1.
#
# **Part 2a (½ point): derive the scale.** Find the smallest $n$ such that $\alpha_j \ge p$ for
# *every* set of $N$ unit keys whose gap is $\delta$. Work it out on paper first:
#
# 1. With $q = n\,k_j$, write each score $k_i^\top q$ with $n$ and the cosines, then divide the
#    numerator and the denominator of $\alpha_j$ by $\exp(k_j^\top q)$.
# 2. How large can each of the $N - 1$ other terms in the denominator be, given $\delta$? Which
#    keys make all of them that large at once? (`worst_case_keys(N, gap)` below builds them.)
# 3. That gives a lower bound on $\alpha_j$ that holds for every such set of keys and is exact for
#    the worst one. Solve "bound $\ge p$" for $n$.
#
# Write `copy_scale(N, gap, p)`, returning that smallest $n$ as a number. You may assume $N \ge 2$,
# $0 < \delta \le 2$ and $\frac1N < p < 1$ (with $p \le \frac1N$ even $n = 0$ would do). The test
# checks both sides: at your $n$ the worst case reaches weight $p$, and at an $n$ 0.1% smaller it
# does not.

# %% nbgrader={"grade": false, "grade_id": "helpers", "locked": true, "schema_version": 3, "solution": false, "task": false}
def weights_for(q, keys):
    """alpha_i = softmax_i(k_i . q) for one query q (D,) and keys (N, D). Returns (N,)."""
    return torch.softmax(keys @ q, dim=0)


def unit_keys(N, D, seed):
    """N random unit-norm keys in D dimensions."""
    g = torch.Generator().manual_seed(seed)
    keys = torch.randn(N, D, generator=g)
    return keys / keys.norm(dim=1, keepdim=True)


def orthonormal_keys(N, D, seed):
    """N orthonormal keys in D >= N dimensions (rows of a random orthogonal matrix)."""
    g = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(D, N, generator=g))
    return basis.T.contiguous()  # (N, D)


def worst_case_keys(N, gap):
    """N unit keys (N, N) in which every key i >= 1 has cosine exactly 1 - gap with key 0.

    Key 0 is e_0; key i is (1 - gap) e_0 + sqrt(1 - (1 - gap)^2) e_i. Try a scale n with
    weights_for(n * keys[0], keys)[0].
    """
    c = 1.0 - gap
    keys = math.sqrt(max(0.0, 1.0 - c * c)) * torch.eye(N)
    keys[:, 0] = c
    keys[0, 0] = 1.0
    return keys


# %% nbgrader={"grade": false, "grade_id": "copy_scale", "locked": false, "schema_version": 3, "solution": true, "task": false}
def copy_scale(N, gap, p):
    """The smallest n such that q = n k_j puts weight >= p on key j, for any N unit keys with
    minimum cosine gap `gap` to key j. Returns a float."""
    ### BEGIN SOLUTION
    # k_i . q = n cos(k_i, k_j) <= n (1 - gap), so dividing by exp(k_j . q) = exp(n):
    #   alpha_j = 1 / (1 + sum_{i != j} exp(-n (1 - cos(k_i, k_j)))) >= 1 / (1 + (N - 1) exp(-n gap)),
    # with equality when every other key sits at cosine 1 - gap. The bound is >= p exactly when
    #   (N - 1) exp(-n gap) <= (1 - p) / p   <=>   n >= log((N - 1) p / (1 - p)) / gap.
    return math.log((N - 1) * p / (1 - p)) / gap
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_copy_scale", "locked": true, "points": 0.5, "schema_version": 3, "solution": false, "task": false}
"""Part 2a: copy_scale() is the smallest scale that guarantees weight p in the worst case."""
import numbers


def _worst_weight(n, N, gap):
    """alpha_j for q = n k_j when all N - 1 other unit keys have cosine exactly 1 - gap with k_j."""
    scores = torch.full((N,), n * (1.0 - gap), dtype=torch.float64)  # k_i . q = n cos(k_i, k_j)
    scores[0] = n  # k_j . q = n |k_j|^2 (key j first)
    return torch.softmax(scores, dim=0)[0].item()


def _check_scale(n, N, gap, p, name, slack=1e-3):
    """The worst case reaches weight p at n (up to rounding), and not at n * (1 - slack)."""
    if type(n) is torch.Tensor and n.numel() == 1:
        n = n.item()
    if type(n) not in (int, float) and not (type(n).__module__ == "numpy" and isinstance(n, numbers.Real)):
        raise AssertionError(f"{name} should be a number (a float), got {n!r} ({type(n).__name__}).")
    n = float(n)
    assert math.isfinite(n) and n > 0, f"{name} = {n}: expected a finite, positive scale."
    case = f"N = {N} keys, gap = {gap:.4g}, p = {p}"
    w = _worst_weight(n * (1 + 1e-6), N, gap)
    assert w >= p, (f"{name} = {n:.6g} is too small: for {case}, when all the other keys have cosine "
                    f"1 - gap = {1 - gap:.4g} with key j, the weight on key j is only {w:.6f} < p.")
    smaller = n * (1 - slack)
    w = _worst_weight(smaller, N, gap)
    assert w < p, (f"{name} = {n:.6g} is larger than needed: for {case}, the scale {smaller:.6g} "
                   f"({slack:.1%} smaller) already gives weight {w:.6f} >= p even in the worst case. "
                   "The smallest scale is where the worst-case weight equals p exactly.")


for N, gap, p in [(2, 1.0, 0.9), (20, 0.5, 0.99)]:
    _check_scale(copy_scale(N, gap, p), N, gap, p, name=f"copy_scale({N}, {gap}, {p})")

### BEGIN HIDDEN TESTS
for N, gap, p in [(1000, 0.1, 0.999), (3, 1.5, 0.6), (50, 0.02, 0.95), (8, 1.0, 0.99), (5, 2.0, 0.9),
                  (4, 0.3, 1 - 1e-6)]:
    _check_scale(copy_scale(N, gap, p), N, gap, p, name=f"copy_scale({N}, {gap}, {p})")
### END HIDDEN TESTS

# %% [markdown]
# **Part 2b (½ point): build the query.** Write `copy_query(keys, j, p)`: measure the gap
# $\delta$ of key $j$ from `keys` (unit norm, shape `(N, D)`), and return $q = n\,k_j$ with
# `n = copy_scale(N, gap, p)` for that gap. The test checks that the weight on key $j$ is at least
# $p$, that $q$ points along $k_j$, and that its scale is the one the guarantee needs, no more.
#
# Then look at your formula. How does $n$ grow with the number of keys $N$? With $1/(1-p)$? With
# $1/\delta$? Which keys are hard to copy from?

# %% nbgrader={"grade": false, "grade_id": "copy_query", "locked": false, "schema_version": 3, "solution": true, "task": false}
def copy_query(keys, j, p=0.99):
    """A query q of shape (D,) along keys[j] with the smallest scale that guarantees weight >= p
    on key j. keys: (N, D), distinct, unit norm."""
    ### BEGIN SOLUTION
    cos = keys @ keys[j]  # (N,): cosines with key j (unit keys)
    others = torch.cat([cos[:j], cos[j + 1:]])  # (N - 1,): every key but j itself
    gap = 1.0 - others.max().item()
    return copy_scale(keys.shape[0], gap, p) * keys[j]
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_copy_query", "locked": true, "points": 0.5, "schema_version": 3, "solution": false, "task": false}
"""Part 2b: copy_query() copies value j with weight >= p, along keys[j], at the smallest guaranteed scale."""
def _check_copy(N, D, j, p, seed):
    keys = unit_keys(N, D, seed=seed)
    name = f"copy_query(keys, {j}, {p}) with N={N}, D={D}"
    q = copy_query(keys, j, p)
    grading.check_shape(q, (D,), name=name, axes="D")
    w = torch.softmax(keys @ q, dim=0)  # (N,)
    top = int(w.argmax())
    assert w[j] >= p - 1e-9, (f"{name} does not copy: the weight on key {j} is {w[j]:.6f}, below p = {p}"
                              + (f"; key {top} gets more ({w[top]:.6f})." if top != j else "."))
    n = (q @ keys[j]).item()  # the scale along k_j
    off = (q - n * keys[j]).norm().item()
    assert off <= 1e-6 * q.norm().item(), (f"{name} should point along keys[{j}] (q = n * keys[{j}]); "
                                           f"its component orthogonal to keys[{j}] has norm {off:.3g}.")
    others = torch.cat([keys[:j], keys[j + 1:]]) @ keys[j]  # (N - 1,) cosines with key j
    # _check_scale comes from the test of part 2a, which always runs before this one.
    _check_scale(n, N, 1.0 - others.max().item(), p, name=f"the scale q . keys[{j}] of {name}")


_check_copy(6, 8, 2, 0.99, seed=3)
_check_copy(20, 4, 19, 0.9, seed=31)

### BEGIN HIDDEN TESTS
for N, D, j, p, seed in [(10, 16, 0, 0.999, 30), (50, 32, 7, 0.95, 32), (3, 3, 1, 0.6, 33),
                         (200, 64, 100, 0.99, 34)]:
    _check_copy(N, D, j, p, seed=seed)
### END HIDDEN TESTS

# %% [markdown]
# ## Part 3: a query that averages two values (1 point)
#
# Now we want $c \approx \tfrac12 (v_a + v_b)$: weights $\alpha_a \approx \alpha_b \approx \tfrac12$
# and all others $\approx 0$. Equal weights need $k_a^\top q = k_b^\top q$, that is
# $(k_a - k_b) \perp q$; both must also be much larger than every other $k_i^\top q$. For
# **orthonormal** keys, write `average_query` so that both weights are within 0.02 of 0.5.

# %% nbgrader={"grade": false, "grade_id": "average_query", "locked": false, "schema_version": 3, "solution": true, "task": false}
def average_query(keys, a, b):
    """A query q (D,) with weight ~1/2 on keys a and b (orthonormal keys (N, D))."""
    ### BEGIN SOLUTION
    n = 50.0
    return n * (keys[a] + keys[b])
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_average_query", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
"""Part 3: average_query() splits the weight evenly between the two requested keys."""
keys = orthonormal_keys(5, 8, seed=4)
q = average_query(keys, 1, 3)
grading.check_shape(q, (8,), name="average_query(keys, 1, 3)", axes="D")
grading.check_weights_on(weights_for(q, keys), [1, 3], expected=[0.5, 0.5], tol=0.02, name="weights for average_query(keys, 1, 3)")

### BEGIN HIDDEN TESTS
for seed, (N, D, a, b) in enumerate([(10, 16, 0, 9), (30, 30, 12, 4), (2, 5, 0, 1), (64, 128, 63, 31)], start=40):
    keys = orthonormal_keys(N, D, seed=seed)
    q = average_query(keys, a, b)
    grading.check_shape(q, (D,), name=f"average_query with N={N}, D={D}", axes="D")
    grading.check_weights_on(weights_for(q, keys), [a, b], expected=[0.5, 0.5], tol=0.02, name=f"weights for N={N}, a={a}, b={b}")
### END HIDDEN TESTS

# %% [markdown]
# ## Part 4: noisy keys, and why multi-head attention helps (2 points)
#
# Real keys are noisy. Let $k_i \sim \mathcal{N}(\mu_i, \Sigma_i)$ with orthonormal means $\mu_i$.
# When every $\Sigma_i = \epsilon I$ is tiny, $q = n(\mu_a + \mu_b)$ still averages. But suppose key
# $a$'s length fluctuates along its own direction:
#
# $$\Sigma_a = \epsilon I + \tfrac12 \mu_a \mu_a^\top \quad\Rightarrow\quad k_a \approx \gamma\, \mu_a,\ \ \gamma \sim \mathcal{N}(1, \tfrac12).$$
#
# Then $k_a^\top q \approx \gamma n$ while $k_b^\top q \approx n$: for large $n$ the softmax picks
# $a$ when $\gamma > 1$ and $b$ when $\gamma < 1$, so $c$ jumps between $v_a$ and $v_b$ from one
# sample to the next instead of staying at their average. Run the cell below to see it.

# %% nbgrader={"grade": false, "grade_id": "noisy_helpers", "locked": true, "schema_version": 3, "solution": false, "task": false}
def sample_noisy_keys(mu, a, n_samples, eps=1e-6, seed=0):
    """Samples of keys k_i ~ N(mu_i, eps I), except k_a ~ N(mu_a, eps I + 1/2 mu_a mu_a^T).

    mu: (N, D). Returns (n_samples, N, D).
    """
    g = torch.Generator().manual_seed(seed)
    S, (N, D) = n_samples, mu.shape
    keys = mu + math.sqrt(eps) * torch.randn(S, N, D, generator=g)
    z = torch.randn(S, 1, generator=g)  # the length fluctuation of key a
    keys[:, a] += math.sqrt(0.5) * z * mu[a]
    return keys


def outputs_over_samples(queries, keys, values):
    """c = mean over heads h of sum_i alpha_{h,i} v_i, for each sample of the keys.

    queries: list of (D,) tensors, one per head; keys: (S, N, D); values: (N, Dv). Returns (S, Dv).
    """
    outs = [torch.softmax(keys @ q, dim=-1) @ values for q in queries]  # each (S, Dv)
    return torch.stack(outs).mean(dim=0)


mu = orthonormal_keys(6, 16, seed=5)
values = orthonormal_keys(6, 6, seed=6)  # orthonormal values: v_a and v_b are easy to tell apart
a, b, n = 0, 1, 20.0
keys = sample_noisy_keys(mu, a, n_samples=500, seed=7)
c_single = outputs_over_samples([n * (mu[a] + mu[b])], keys, values)
share_a = c_single @ values[a]  # 1 when c = v_a, 0.5 at the average, 0 when c = v_b
print(f"one head, q = n(mu_a + mu_b): share of v_a in c over 500 samples: "
      f"mean {share_a.mean():.2f}, fraction near 0 or 1: {((share_a < 0.1) | (share_a > 0.9)).float().mean():.0%}")

# %% [markdown]
# With **two heads** each head only has to copy one value: head 1 looks for $a$, head 2 for $b$,
# and the layer averages the two heads' outputs, $c = \tfrac12 (c_1 + c_2)$. Write
# `two_head_queries(mu, a, b)` returning the pair $(q_1, q_2)$ such that $c \approx \tfrac12(v_a + v_b)$
# in (almost) every sample, even with the noisy $k_a$. The test draws 2000 samples and needs
# $\lVert c - \tfrac12(v_a+v_b) \rVert < 0.1$ in at least 80% of them (a single head gets a few %).
# Why can't it be 100%? Look at the sign of $\gamma$.

# %% nbgrader={"grade": false, "grade_id": "two_head_queries", "locked": false, "schema_version": 3, "solution": true, "task": false}
def two_head_queries(mu, a, b):
    """Queries (q1, q2), each of shape (D,), for the two heads. mu: (N, D) orthonormal key means."""
    ### BEGIN SOLUTION
    # Head 1 copies v_a: k_a . q1 = gamma n, which only sharpens the copy when gamma > 0.
    # Head 2 copies v_b: k_b is not noisy, and k_a . q2 = gamma n mu_a . mu_b = 0.
    n = 50.0
    return n * mu[a], n * mu[b]
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_two_head_queries", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""Part 4: with two heads the output stays near the average of v_a and v_b despite the noisy key."""
def _fraction_averaged(mu, values, a, b, seed, n_samples=2000):
    q1, q2 = two_head_queries(mu, a, b)
    for name, qh in (("q1", q1), ("q2", q2)):
        grading.check_shape(qh, (mu.shape[1],), name=f"two_head_queries(...) {name}", axes="D")
    keys = sample_noisy_keys(mu, a, n_samples=n_samples, seed=seed)
    c = outputs_over_samples([q1, q2], keys, values)
    err = (c - 0.5 * (values[a] + values[b])).norm(dim=-1)
    return (err < 0.1).float().mean().item()

frac = _fraction_averaged(orthonormal_keys(6, 16, seed=5), orthonormal_keys(6, 6, seed=6), 0, 1, seed=8)
assert frac >= 0.8, f"c was within 0.1 of (v_a + v_b)/2 in only {frac:.0%} of the samples (need 80%)."

### BEGIN HIDDEN TESTS
for seed, (N, D, a, b) in enumerate([(8, 32, 3, 5), (4, 4, 2, 0), (16, 64, 15, 9)], start=50):
    frac = _fraction_averaged(orthonormal_keys(N, D, seed=seed), orthonormal_keys(N, N, seed=seed + 100), a, b, seed=seed + 200)
    assert frac >= 0.8, f"N={N}, D={D}, a={a}, b={b}: c was within 0.1 of (v_a + v_b)/2 in only {frac:.0%} of the samples."
### END HIDDEN TESTS

# %% [markdown]
# ## Part 5: multi-head attention (2 points)
#
# A multi-head layer projects tokens $X \in \mathbb{R}^{B \times N \times C}$ with $W_q, W_k, W_v \in \mathbb{R}^{C \times C}$,
# splits the $C$ channels into $H$ heads of width $D = C / H$, attends within each head, and mixes
# the heads with $W_o$:
#
# $$\mathrm{MHA}(X) = \mathrm{concat}(\text{head}_1, \dots, \text{head}_H)\, W_o, \qquad \text{head}_h = \mathrm{Attention}(X W_q^{(h)}, X W_k^{(h)}, X W_v^{(h)}),$$
#
# where $W^{(h)}$ are the columns $hD, \dots, (h+1)D - 1$. Use your `attention` from part 1; pass
# `mask` through to it. Watch the layout: `(B, N, C)` must become `(B, H, N, D)`, not
# `(B, N, H, D)`.

# %% nbgrader={"grade": false, "grade_id": "multi_head_attention", "locked": false, "schema_version": 3, "solution": true, "task": false}
def multi_head_attention(x, w_q, w_k, w_v, w_o, n_heads, mask=None):
    """x: (B, N, C); w_*: (C, C) (tokens are multiplied on the left: x @ w_q). Returns (B, N, C)."""
    ### BEGIN SOLUTION
    B, N, C = x.shape
    D = C // n_heads

    def split(t):  # (B, N, C) -> (B, H, N, D)
        return t.view(B, N, n_heads, D).transpose(1, 2)

    out = attention(split(x @ w_q), split(x @ w_k), split(x @ w_v), mask=mask)  # (B, H, N, D)
    return out.transpose(1, 2).reshape(B, N, C) @ w_o  # (B, N, C)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_multi_head_attention", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""Part 5: multi_head_attention() equals a reference multi-head layer with the same weights."""
from attnkit import MultiHeadAttention, causal_mask as _reference_causal_mask

def _reference_mha(x, w_q, w_k, w_v, w_o, n_heads, mask=None):
    C = x.shape[-1]
    layer = MultiHeadAttention(C, n_heads, bias=False).to(x.dtype)
    with torch.no_grad():
        for lin, w in ((layer.w_q, w_q), (layer.w_k, w_k), (layer.w_v, w_v), (layer.w_o, w_o)):
            lin.weight.copy_(w.T)  # nn.Linear computes x @ weight.T
        return layer(x) if mask is None else layer(x, mask=mask)

def _mha_case(B, N, C, H, seed, mask=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, C, generator=g)
    ws = [torch.randn(C, C, generator=g) / math.sqrt(C) for _ in range(4)]
    got = multi_head_attention(x, *ws, H, mask=mask)
    grading.check_tensor(got, _reference_mha(x, *ws, H, mask=mask), axes="B, N, C",
                         name=f"multi_head_attention with B={B}, N={N}, C={C}, H={H}")

_mha_case(1, 3, 4, 2, seed=59)

### BEGIN HIDDEN TESTS
_mha_case(2, 5, 8, 2, seed=60)
_mha_case(1, 7, 12, 3, seed=61)
_mha_case(3, 4, 16, 4, seed=62)
_mha_case(2, 6, 6, 1, seed=63)
_mha_case(2, 6, 12, 4, seed=64, mask=_reference_causal_mask(6))
### END HIDDEN TESTS

# %% [markdown]
# ## Part 6: causal masking (2 points)
#
# A language model that predicts token $i+1$ from tokens $1..i$ must not look ahead: query $i$
# may attend to key $j$ only when $j \le i$. Write `causal_mask(N)` (an `(N, N)` boolean tensor,
# `True` where attention is allowed) and `causal_attention(q, k, v)` (self-attention, `N = M`).
# The test changes the future keys and values and checks that the past outputs do not move.

# %% nbgrader={"grade": false, "grade_id": "causal", "locked": false, "schema_version": 3, "solution": true, "task": false}
def causal_mask(N):
    """(N, N) bool: True where key j <= query i."""
    ### BEGIN SOLUTION
    return torch.ones(N, N, dtype=torch.bool).tril()
    ### END SOLUTION


def causal_attention(q, k, v):
    """Causal self-attention on (B, H, N, D) tensors."""
    ### BEGIN SOLUTION
    return attention(q, k, v, mask=causal_mask(q.shape[-2]))
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_causal", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""Part 6: causal_mask() is lower-triangular with the diagonal; causal_attention() never sees the future."""
from attnkit import causal as _causal_mod, materialize

def _check_causal_mask(N):
    got = causal_mask(N)
    grading.check_type(got, f"causal_mask({N})")
    grading.check_shape(got, (N, N), name=f"causal_mask({N})", axes="N, N")
    assert got.dtype == torch.bool, f"causal_mask({N}) should be a bool tensor, got {got.dtype}."
    wrong = (got != materialize(_causal_mod, N)).nonzero().tolist()
    assert not wrong, (f"causal_mask({N}) is wrong at {len(wrong)} (query, key) positions, e.g. {wrong[:3]}; "
                       "query i may see key j exactly when j <= i (itself included).")

_check_causal_mask(4)
q, k, v = grading.random_qkv(1, 2, 5, 4, seed=5)
grading.check_causal(causal_attention, q, k, v, name="causal_attention")

### BEGIN HIDDEN TESTS
for N in (1, 2, 17):
    _check_causal_mask(N)
for seed, (B, H, N, D) in enumerate([(2, 2, 6, 4), (1, 3, 11, 8)], start=70):
    q, k, v = grading.random_qkv(B, H, N, D, seed=seed)
    grading.check_tensor(causal_attention(q, k, v), dense_attention(q, k, v, mask=materialize(_causal_mod, N)),
                         name=f"causal_attention on shape {(B, H, N, D)}")
    grading.check_causal(causal_attention, q, k, v, name="causal_attention")
### END HIDDEN TESTS

# %% [markdown]
# ## Part 7: counting the work (1 point)
#
# A matrix product of an $(n \times k)$ and a $(k \times m)$ matrix does $n\,m\,k$ multiply-adds,
# which we count as $2nmk$ floating-point operations (FLOPs). Write `attention_flops`, returning
# the FLOPs of the two matrix products in attention, $QK^\top$ and $AV$ (with $A$ the weights), for
# `q: (B, H, N, D)`, `k: (B, H, M, D)`, `v: (B, H, M, Dv)`. The test compares with PyTorch's own
# FLOP counter. Then note how both grow with $N M$: that product is the $N^2$ every later chapter
# attacks.

# %% nbgrader={"grade": false, "grade_id": "attention_flops", "locked": false, "schema_version": 3, "solution": true, "task": false}
def attention_flops(B, H, N, M, D, Dv):
    """Return (flops of Q @ K^T, flops of A @ V) as two ints."""
    ### BEGIN SOLUTION
    return 2 * B * H * N * M * D, 2 * B * H * N * M * Dv
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_attention_flops", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
"""Part 7: attention_flops() matches torch.utils.flop_counter on both matrix products."""
from attnkit.measure import count_flops

def _check_flops(B, H, N, M, D, Dv):
    q, k, _ = grading.random_qkv(B, H, N, D, M=M, seed=N + M)
    v = torch.randn(B, H, M, Dv)
    a = torch.rand(B, H, N, M)
    result = attention_flops(B, H, N, M, D, Dv)
    assert isinstance(result, tuple) and len(result) == 2, f"attention_flops should return a pair, got {result!r}"
    grading.check_equal_int(result[0], count_flops(lambda: q @ k.transpose(-2, -1)),
                            name=f"FLOPs of Q @ K^T for {(B, H, N, M, D)}", hint="A multiply-add counts as 2 FLOPs.")
    grading.check_equal_int(result[1], count_flops(lambda: a @ v),
                            name=f"FLOPs of A @ V for {(B, H, N, M, Dv)}", hint="A multiply-add counts as 2 FLOPs.")

_check_flops(1, 1, 4, 4, 2, 2)

### BEGIN HIDDEN TESTS
for B, H, N, M, D, Dv in [(2, 3, 5, 7, 4, 6), (1, 8, 64, 32, 16, 8)]:
    _check_flops(B, H, N, M, D, Dv)
### END HIDDEN TESTS
