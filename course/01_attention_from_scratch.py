# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Chapter 1 — Attention from scratch
#
# Every efficient attention method in this course is an answer to one question: *how do we get
# (most of) what attention gives us without paying for all $N^2$ query–key pairs?* Before we can
# judge the answers we need to know the original well: what it computes, why each piece is there,
# what it can and cannot express, and where exactly the $N^2$ bill comes from.
#
# This chapter builds attention up from a few lines of tensor code:
#
# 1. scaled dot-product attention, and why the scores are divided by $\sqrt{D}$;
# 2. softmax as a *soft* dictionary lookup, and how to compute it without overflow;
# 3. the first thing a single query can do: **copy** one value;
# 4. the second: **average** two values;
# 5. a case where one head cannot average reliably but two heads can (noisy keys);
# 6. multi-head attention, checked against PyTorch's own module;
# 7. masks written as functions, and causal attention;
# 8. the $O(N^2)$ cost, measured on this machine;
# 9. what that cost means for a $256\times256$ image, and the map of the rest of the course.
#
# **Notation.** Tensors follow PyTorch's `scaled_dot_product_attention`: queries are
# $(B, H, N, D)$ and keys/values are $(B, H, M, D)$, with $B$ the batch size, $H$ the number of
# heads, $N$ the number of queries, $M$ the number of keys and $D$ the head dimension.
# In self-attention $M = N$.

# %% [markdown]
# ## Setup
#
# Imports, a fixed random seed, and a flag. `BIG = True` extends the cost measurement in
# section 8 to longer sequences (it needs a few GB of memory and a minute or two more).

# %%
import math
import sys

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import attnkit
from attnkit.measure import time_call
from attnkit.notebook import one_thread, setup

setup(seed=0)

# %%
BIG = False  # True: measure the cost up to N = 8192 instead of N = 2048

# %% [markdown]
# ## 1. Scaled dot-product attention
#
# Each query asks a question, each key advertises what its position can answer, and each value is
# what that position hands over. Query $i$ compares itself with every key through a dot product,
# turns the $M$ scores into weights that are positive and sum to one, and returns the weighted
# average of the values:
#
# $$
# s_{ij} = \frac{q_i \cdot k_j}{\sqrt{D}}, \qquad
# \alpha_{ij} = \frac{e^{s_{ij}}}{\sum_{l=1}^{M} e^{s_{il}}}, \qquad
# o_i = \sum_{j=1}^{M} \alpha_{ij}\, v_j .
# $$
#
# Stacking queries, keys and values as the rows of matrices $Q \in \mathbb{R}^{N\times D}$,
# $K \in \mathbb{R}^{M\times D}$, $V \in \mathbb{R}^{M\times D}$, all $N$ outputs come out of
# two matrix products and a row-wise softmax:
#
# $$
# \operatorname{Attention}(Q, K, V) = \operatorname{softmax}\!\left(\frac{QK^\top}{\sqrt{D}}\right) V .
# $$
#
# With batch and head dimensions in front, the same formula acts on $(B, H, N, D)$ tensors;
# `@` and `softmax(dim=-1)` only touch the last two dimensions.

# %%
def attention(q, k, v):
    """softmax(q kᵀ / sqrt(D)) v for q (B, H, N, D), k and v (B, H, M, D)."""
    D = q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(D)  # (B, H, N, M)
    weights = torch.softmax(scores, dim=-1)  # (B, H, N, M), each row sums to 1
    return weights @ v  # (B, H, N, M) @ (B, H, M, D) -> (B, H, N, D)


B, H, N, M, D = 2, 3, 5, 7, 16
q = torch.randn(B, H, N, D)
k = torch.randn(B, H, M, D)
v = torch.randn(B, H, M, D)
out = attention(q, k, v)
print("output shape:", tuple(out.shape))

# %% [markdown]
# Three implementations should agree to floating-point round-off: ours, the kit's reference
# `attnkit.dense_attention` (which every later variant is tested against), and PyTorch's
# `F.scaled_dot_product_attention`.

# %%
ref_kit = attnkit.dense_attention(q, k, v)
ref_torch = F.scaled_dot_product_attention(q, k, v)
print(f"max |ours - attnkit.dense_attention| = {(out - ref_kit).abs().max():.2e}")
print(f"max |ours - F.sdpa|                  = {(out - ref_torch).abs().max():.2e}")

# %% [markdown]
# ### Why divide by $\sqrt{D}$?
#
# Take a query and a key whose $D$ entries are independent with mean 0 and variance 1. Each term
# $q_d k_d$ of the dot product has mean 0 and variance $\mathbb{E}[q_d^2]\,\mathbb{E}[k_d^2] = 1$,
# and the terms are independent, so their variances add:
#
# $$
# \operatorname{Var}(q\cdot k) = \sum_{d=1}^{D} \operatorname{Var}(q_d k_d) = D,
# \qquad
# \operatorname{Var}\!\left(\frac{q\cdot k}{\sqrt{D}}\right) = 1 .
# $$
#
# Without the scale, the typical score grows like $\sqrt{D}$. Let us check the variance
# empirically first.

# %%
dims = [4, 8, 16, 32, 64, 128, 256, 512, 1024]
n_pairs = 20_000
print(f"{'D':>6} {'Var(q·k)':>10} {'Var(q·k/√D)':>12}")
for d in dims:
    qs, ks = torch.randn(n_pairs, d), torch.randn(n_pairs, d)
    dots = (qs * ks).sum(-1)  # n_pairs independent dot products
    print(f"{d:>6} {dots.var().item():>10.1f} {(dots / math.sqrt(d)).var().item():>12.3f}")

# %% [markdown]
# Large scores matter because softmax is sensitive to *differences* between scores. When one
# score exceeds the others by several units, its exponential swamps theirs and the weights become
# nearly one-hot. A one-hot softmax is also nearly flat: its gradient with respect to the scores is
# $\partial \alpha_j / \partial s_l = \alpha_j(\delta_{jl} - \alpha_l)$, which vanishes when every
# $\alpha$ is 0 or 1, so training barely moves it.
#
# The experiment: one random query against $M = 16$ random keys, for growing $D$; record the
# largest weight in the row, averaged over many draws. A value near $1/M$ means "spread evenly",
# a value near 1 means "all on one key".

# %%
M_keys, n_draws = 16, 500
mean_var, max_w_raw, max_w_scaled = [], [], []
for d in dims:
    qs = torch.randn(n_draws, 1, d)  # one query per draw
    ks = torch.randn(n_draws, M_keys, d)  # M keys per draw
    scores = (qs @ ks.transpose(-2, -1)).squeeze(1)  # (n_draws, M)
    mean_var.append(scores.var().item())
    max_w_raw.append(torch.softmax(scores, -1).amax(-1).mean().item())
    max_w_scaled.append(torch.softmax(scores / math.sqrt(d), -1).amax(-1).mean().item())

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
ax1.loglog(dims, mean_var, "o-", label="measured Var(q·k)")
ax1.loglog(dims, dims, "k--", lw=1, label="D (theory)")
ax1.set(xlabel="head dimension D", ylabel="variance of the score",
        title="Unscaled scores: variance grows like D")
ax1.legend()
ax2.semilogx(dims, max_w_raw, "o-", color="tab:red", label="softmax(q·k)  (no scale)")
ax2.semilogx(dims, max_w_scaled, "s-", color="tab:blue", label="softmax(q·k / √D)")
ax2.axhline(1 / M_keys, color="gray", ls=":", label=f"uniform, 1/M = {1 / M_keys:.3f}")
ax2.set(xlabel="head dimension D", ylabel="average largest weight", ylim=(0, 1.05),
        title=f"Saturation of softmax over M = {M_keys} keys")
ax2.legend(loc="center right")
fig.tight_layout()
plt.show()

# %% [markdown]
# Without the scale the largest weight climbs towards 1 as $D$ grows: attention collapses onto a
# single key for reasons that have nothing to do with the content. With the scale, the score
# distribution, and therefore the sharpness of the weights, no longer depends on $D$. The
# network can still make attention sharp on purpose, by learning larger queries or keys; the
# scale only removes the accidental sharpness.

# %% [markdown]
# ## 2. Softmax as a soft lookup
#
# A Python `dict` maps a key to its value only if the query matches the key *exactly*, and the
# answer is not differentiable in the query. Attention replaces "find the matching key" by
# "weight every key by how well it matches":
#
# $$
# \text{dict: } o = v_{j^*} \text{ where } k_{j^*} = q
# \qquad\longrightarrow\qquad
# \text{attention: } o = \sum_j \operatorname{softmax}_j(q\cdot k_j)\, v_j .
# $$
#
# To see it, store four keys (random unit vectors in $D = 32$) with scalar values 10, 20, 30, 40,
# and ask with a query that is a slightly perturbed, scaled copy of key 2. In this section and the
# next three we apply softmax to raw dot products (`scale=1.0`), because we construct the queries
# by hand; the $1/\sqrt{D}$ factor would just be absorbed into their length.

# %%
g = torch.Generator().manual_seed(1)
D_lookup = 32
keys = F.normalize(torch.randn(4, D_lookup, generator=g), dim=-1)  # (M, D), unit rows
values = torch.tensor([[10.0], [20.0], [30.0], [40.0]])  # (M, 1)

query = 6.0 * F.normalize(keys[2] + 0.2 * torch.randn(D_lookup, generator=g), dim=-1)
out, w = attnkit.dense_attention(query.view(1, D_lookup), keys, values, scale=1.0,
                                 return_weights=True)
print("weights over the 4 keys:", w.squeeze())
print(f"output = {out.item():.2f}   (value stored under key 2 is 30)")

# %% [markdown]
# The weight concentrates on key 2 and the output is close to 30. Because every step is smooth,
# the gradient of the output with respect to the query exists and points towards keys whose
# values would lower the loss: this is what makes the lookup *learnable*.

# %% [markdown]
# ### Computing softmax without overflow
#
# The textbook formula $e^{s_j} / \sum_l e^{s_l}$ overflows as soon as a score exceeds about 88
# in float32 ($e^{88.7}$ is the largest representable value): the numerator and denominator both
# become `inf`, and `inf / inf` is `nan`. The fix costs nothing: subtract the row maximum $m$
# first. It cancels between numerator and denominator,
#
# $$
# \frac{e^{s_j}}{\sum_l e^{s_l}} = \frac{e^{m}\, e^{s_j - m}}{e^{m} \sum_l e^{s_l - m}}
# = \frac{e^{s_j - m}}{\sum_l e^{s_l - m}},
# $$
#
# and now every exponent is $\le 0$, so `exp` stays in $(0, 1]$.

# %%
scores = torch.tensor([1000.0, 999.0, 990.0])


def naive_softmax(s):
    e = torch.exp(s)
    return e / e.sum()


def stable_softmax(s):
    e = torch.exp(s - s.max())
    return e / e.sum()


print("exp(scores)         :", torch.exp(scores))
print("naive softmax       :", naive_softmax(scores))
print("stable softmax      :", stable_softmax(scores))
print("attnkit.softmax     :", attnkit.softmax(scores))
print("torch.softmax       :", torch.softmax(scores, dim=-1))

# %% [markdown]
# Overflow does not need exotic inputs: an aligned query and key of length 30 each already
# score 900, and in float16, common on GPUs, `exp` overflows for any score above about 11.
# Every production softmax (and every fused attention kernel, FlashAttention and FlexAttention
# among them) subtracts the maximum.

# %% [markdown]
# ## 3. Copying one value
#
# Suppose the keys $k_1,\dots,k_M$ are unit vectors that are (nearly) orthogonal, and we want the
# output to be exactly $v_j$. That needs $\alpha_j \approx 1$, i.e. $q\cdot k_j$ must beat every
# other score by a wide margin. Pointing the query along $k_j$ and making it long does it:
# with $q = n\,k_j$,
#
# $$
# q\cdot k_j = n, \qquad q\cdot k_i = n\, k_i\cdot k_j \approx 0 \;(i\neq j)
# \quad\Longrightarrow\quad
# \alpha_j \approx \frac{e^{n}}{e^{n} + (M-1)} \xrightarrow[n\to\infty]{} 1,
# \qquad o \to v_j .
# $$
#
# Random directions in high dimension are nearly orthogonal (their cosine is of order
# $1/\sqrt{D}$); for clean arithmetic we make them exactly orthonormal with a QR decomposition.

# %%
D_toy, M_toy = 64, 8
g = torch.Generator().manual_seed(2)
raw = torch.randn(M_toy, D_toy, generator=g)
cos = F.normalize(raw, dim=-1) @ F.normalize(raw, dim=-1).T
print(f"random directions in D={D_toy}: largest |cosine| between two of them = "
      f"{(cos - torch.eye(M_toy)).abs().max():.3f}")

mu = torch.linalg.qr(raw.T).Q.T  # (M, D): orthonormal rows
vals = torch.randn(M_toy, D_toy, generator=g)  # (M, D): one value vector per key
print("mu @ mu.T is the identity:", torch.allclose(mu @ mu.T, torch.eye(M_toy), atol=1e-5))


def attend(query, keys, values):
    """One query (or a stack of queries) against a set of keys, raw dot products (scale 1)."""
    return attnkit.dense_attention(query.unsqueeze(-2), keys, values, scale=1.0,
                                   return_weights=True)

# %% [markdown]
# Sweep the length $n$ of the query and record the weight on key $j$ and the distance between
# the output and $v_j$.

# %%
j = 3
ns = torch.linspace(0, 12, 49)
w_j, err = [], []
for n in ns:
    o, w = attend(n * mu[j], mu, vals)
    w_j.append(w[0, j].item())
    err.append((o[0] - vals[j]).norm().item() / vals[j].norm().item())
theory = torch.exp(ns) / (torch.exp(ns) + (M_toy - 1))

fig, ax = plt.subplots(figsize=(6.5, 3.6))
ax.plot(ns, w_j, "o", ms=4, label=r"measured weight $\alpha_j$")
ax.plot(ns, theory, "k-", lw=1, label=r"$e^n / (e^n + M - 1)$")
ax.plot(ns, err, "--", color="tab:red", label=r"relative error $\|o - v_j\| / \|v_j\|$")
ax.axhline(1 / M_toy, color="gray", ls=":", lw=1)
ax.text(9.0, 1 / M_toy + 0.03, f"uniform 1/M = {1 / M_toy:.3f}", color="gray")
ax.set(xlabel=r"query length $n$  (query $q = n\,k_j$)", ylabel="weight / relative error",
       title=f"Copying value {j} out of M = {M_toy}")
ax.legend(loc="center right")
fig.tight_layout()
plt.show()

# %% [markdown]
# At $n = 0$ the query sees nothing and averages all eight values; by $n \approx 8$ the weight on
# key $j$ is above 0.99 and the output is $v_j$ to within a percent. The margin needed grows only
# logarithmically with the number of keys ($n \gtrsim \ln M$ plus a few units).

# %% [markdown]
# ## 4. Averaging two values
#
# Now we want $o \approx \tfrac12(v_a + v_b)$. That requires $\alpha_a \approx \alpha_b \approx
# \tfrac12$ and every other weight near 0. Equal weights need equal scores,
# $q\cdot k_a = q\cdot k_b$, i.e. $q \perp (k_a - k_b)$; large scores for $a, b$ and small ones for
# the rest suggest the sum of the two keys, again made long:
#
# $$
# q = n\,(k_a + k_b): \qquad q\cdot k_a = q\cdot k_b = n, \qquad q\cdot k_i = 0 \;(i\notin\{a,b\}),
# \qquad
# \alpha_a = \alpha_b = \frac{e^{n}}{2e^{n} + M - 2} \to \tfrac12 .
# $$

# %%
a, b, n = 1, 5, 10.0
o, w = attend(n * (mu[a] + mu[b]), mu, vals)
target = 0.5 * (vals[a] + vals[b])
print("weights:", w[0])
print(f"alpha_a = {w[0, a]:.4f}, alpha_b = {w[0, b]:.4f}, all others sum to "
      f"{1 - w[0, a] - w[0, b]:.1e}")
print(f"||o - (v_a + v_b)/2|| / ||(v_a + v_b)/2|| = "
      f"{((o[0] - target).norm() / target.norm()).item():.1e}")

# %% [markdown]
# The same sweep over the query length as for copying, drawn: on the left the weight on each of
# the two keys against the formula, the weight left for the other six, and the distance of the
# output from the midpoint; on the right the eight weights at three lengths.

# %%
ns_avg = torch.linspace(0, 12, 49)
w_a, w_rest, err_avg = [], [], []
for n_ in ns_avg:
    o_, w_ = attend(n_ * (mu[a] + mu[b]), mu, vals)
    w_a.append(w_[0, a].item())
    w_rest.append(1 - w_[0, a].item() - w_[0, b].item())
    err_avg.append(((o_[0] - target).norm() / target.norm()).item())
theory_avg = torch.exp(ns_avg) / (2 * torch.exp(ns_avg) + M_toy - 2)

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11.5, 3.8))
ax1.plot(ns_avg, w_a, "o", ms=4, label=r"measured $\alpha_a$ ($= \alpha_b$)")
ax1.plot(ns_avg, theory_avg, "k-", lw=1, label=r"$e^n / (2e^n + M - 2)$")
ax1.plot(ns_avg, w_rest, "s", ms=3, color="tab:gray", label=f"the other {M_toy - 2} keys together")
ax1.plot(ns_avg, err_avg, "--", color="tab:red", label=r"$\|o - \frac{1}{2}(v_a + v_b)\| \,/\, \|\frac{1}{2}(v_a + v_b)\|$")
ax1.axhline(0.5, color="gray", ls=":", lw=1)
ax1.set(xlabel=r"query length $n$  (query $q = n\,(k_a + k_b)$)", ylabel="weight / relative error",
        ylim=(0, 1.05), title=f"Averaging values {a} and {b} out of M = {M_toy}")
ax1.legend(fontsize=8, loc="upper right")
for offset, n_ in zip([-0.27, 0.0, 0.27], [0.0, 2.0, 10.0]):
    _, w_ = attend(n_ * (mu[a] + mu[b]), mu, vals)
    ax2.bar(torch.arange(M_toy) + offset, w_[0], width=0.27, label=f"n = {n_:g}")
ax2.set(xticks=range(M_toy), xlabel="key", ylabel="weight", ylim=(0, 0.55),
        title="The weights over the keys")
ax2.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# One query can therefore pick out *two* positions and blend them: the two weights rise together
# towards $\tfrac12$ (never past it), the six others fade, and the output settles on the
# midpoint of $v_a$ and $v_b$. The next section shows that this blend is fragile when the keys
# themselves are noisy.

# %% [markdown]
# ## 5. Noisy keys: when one head is not enough
#
# Real keys are produced by a network from real data, so they wobble. Model that by drawing each
# key from a Gaussian around a clean direction:
#
# $$
# k_i \sim \mathcal{N}(\mu_i, \Sigma_i), \qquad \mu_i \text{ orthonormal}, \qquad
# \Sigma_i = \alpha I \text{ with } \alpha \text{ small}.
# $$
#
# (In this section $\alpha$ without subscripts is the noise level; the attention weights keep
# their subscripts, $\alpha_a$, $\alpha_b$.)
#
# **Case (a), small isotropic noise.** Since $k_i \approx \mu_i$, the query
# $q = n(\mu_a + \mu_b)$ still gives scores $\approx n$ for $a$ and $b$ and $\approx 0$ for the
# others; the perturbation of each score, $n\,\epsilon_i\cdot(\mu_a+\mu_b)$ with
# $\epsilon_i = k_i - \mu_i$, has standard
# deviation $n\sqrt{2\alpha}$, which is tiny for small $\alpha$. The output stays near
# $\tfrac12(v_a+v_b)$.
#
# **Case (b), one key whose length wobbles.** Give key $a$ extra variance along its own direction:
#
# $$
# \Sigma_a = \alpha I + \tfrac12\, \mu_a \mu_a^\top
# \quad\Longrightarrow\quad
# k_a \approx \gamma\, \mu_a, \qquad \gamma \sim \mathcal{N}\!\left(1, \tfrac12\right).
# $$
#
# Key $a$ points the right way but its length changes from sample to sample. With the same query,
#
# $$
# q\cdot k_a \approx n\gamma, \qquad q\cdot k_b \approx n, \qquad
# \frac{\alpha_a}{\alpha_b} \approx e^{\,n(\gamma - 1)} .
# $$
#
# For $n = 10$ a typical fluctuation $|\gamma - 1| \approx 0.7$ puts a factor of about
# $e^{7} \approx 1000$ between the two weights: the output jumps to $v_a$ when the key is long and
# to $v_b$ when it is short. Making $n$ larger, which helped before, only makes the jumps sharper.
#
# **Two heads.** Give each value its own head: $q_1 = n\,\mu_a$ and $q_2 = n\,\mu_b$, and average
# the head outputs, $c = \tfrac12(c_1 + c_2)$. Head 2 never sees key $a$'s wobble, because
# $q_2\cdot k_a \approx n\gamma\,\mu_b\cdot\mu_a = 0$, so it copies $v_b$. Head 1 scores key $a$
# at $n\gamma$ against $\approx 0$ for everything else; a longer key only makes its already
# one-hot weights sharper, so it copies $v_a$. Neither head has to *balance* two scores, so the
# wobble has nothing to tip over. (Head 1 does fail when the sampled key becomes too short or
# flips sign: once $n\gamma$ is no longer several units above $\ln(M-1)$, roughly $\gamma < 0.5$
# here, the other keys get a share of head 1's weight, and for $\gamma < 0$ no query along
# $\mu_a$ can find key $a$ at all. We will see those samples in the plot.)
#
# The simulation: $D = 64$, $M = 8$ keys, 500 samples of the keys, $\alpha = 10^{-4}$, $n = 10$.
# To read the output on one axis, express it along the line from $v_b$ to $v_a$:
#
# $$
# t = \frac{(c - v_b)\cdot(v_a - v_b)}{\|v_a - v_b\|^2}
# \qquad (t = 0: c = v_b, \quad t = \tfrac12: \text{the average}, \quad t = 1: c = v_a).
# $$

# %%
torch.manual_seed(0)
n_samples, alpha_iso, n = 500, 1e-4, 10.0
a, b = 0, 1
eye = torch.eye(D_toy)
cov_a = alpha_iso * eye.expand(M_toy, D_toy, D_toy).clone()  # case (a): alpha I for every key
cov_b = cov_a.clone()  # case (b): key a also wobbles along its own direction
cov_b[a] += 0.5 * torch.outer(mu[a], mu[a])

keys_a = torch.distributions.MultivariateNormal(mu, covariance_matrix=cov_a).sample((n_samples,))
keys_b = torch.distributions.MultivariateNormal(mu, covariance_matrix=cov_b).sample((n_samples,))
print("sampled keys:", tuple(keys_b.shape), "= (samples, M, D)")

gamma = keys_b[:, a] @ mu[a]  # (samples,): length of key a along its direction
print(f"gamma: mean {gamma.mean():.2f}, std {gamma.std():.2f} (theory 1 and {math.sqrt(0.5):.2f})")

# %%
d_ab = vals[a] - vals[b]


def position(c):
    """Where the output sits on the line v_b -> v_a (0 = v_b, 0.5 = average, 1 = v_a)."""
    return (c - vals[b]) @ d_ab / (d_ab @ d_ab)


def one_head(keys):
    c, _ = attend(n * (mu[a] + mu[b]), keys, vals)  # (samples, 1, D)
    return position(c[:, 0])


def two_heads(keys):
    c1, _ = attend(n * mu[a], keys, vals)  # head 1 looks for key a
    c2, _ = attend(n * mu[b], keys, vals)  # head 2 looks for key b
    return position(0.5 * (c1[:, 0] + c2[:, 0]))


t_a_one, t_b_one, t_b_two = one_head(keys_a), one_head(keys_b), two_heads(keys_b)
for name, t in [("(a) small noise, one head", t_a_one), ("(b) wobbling key, one head", t_b_one),
                ("(b) wobbling key, two heads", t_b_two)]:
    close = ((t - 0.5).abs() < 0.1).float().mean().item()
    print(f"{name:<29} t: mean {t.mean():.2f}, std {t.std():.3f}, "
          f"within 0.1 of 1/2 in {close:.0%} of samples")

# %%
fig, axes = plt.subplots(2, 2, figsize=(10, 6.5))
bins = np.linspace(-0.0125, 1.0125, 42)  # width 0.025, one bin centred on 1/2
panels = [(axes[0, 0], t_a_one, "tab:gray", "(a) small noise, one head"),
          (axes[0, 1], t_b_one, "tab:red", "(b) wobbling key a, one head"),
          (axes[1, 0], t_b_two, "tab:blue", "(b) wobbling key a, two heads")]
for ax, t, color, title in panels:
    ax.hist(t.numpy(), bins=bins, color=color, alpha=0.8)
    ax.axvline(0.5, color="k", ls="--", lw=1)
    ax.set(title=title, xlabel=r"output position $t$  (0 = $v_b$, 1 = $v_a$)",
           ylabel="samples")
ax = axes[1, 1]
ax.scatter(gamma, t_b_one, s=8, color="tab:red", alpha=0.6, label="one head")
ax.scatter(gamma, t_b_two, s=8, color="tab:blue", alpha=0.6, label="two heads")
ax.axhline(0.5, color="k", ls="--", lw=1)
ax.set(xlabel=r"sampled length $\gamma$ of key a", ylabel=r"output position $t$",
       title=r"Case (b): output against $\gamma$")
ax.legend()
fig.suptitle(f"Averaging v_a and v_b with noisy keys (n = {n:g}, {n_samples} samples)")
fig.tight_layout()
plt.show()

# %% [markdown]
# The top-left histogram is case (a): one head averages reliably. Top right is case (b): the
# same query now puts the output at $v_a$ or at $v_b$ and rarely in between. The scatter explains
# it: for one head, $t$ is a steep sigmoid of $\gamma$ centred at $\gamma = 1$, exactly the
# $e^{n(\gamma-1)}$ ratio above. With two heads (bottom left, blue in the scatter) the output
# sits at the average for every sample with a reasonably sized key, and drifts away only in the
# left tail where $\gamma$ is close to zero or negative.
#
# This is the intuition behind multi-head attention: instead of asking one softmax to hold a
# delicate balance between several positions, let several softmaxes each make a confident
# choice, and combine their answers with a linear layer.

# %% [markdown]
# ## 6. Multi-head attention
#
# In a transformer the queries, keys and values are not given; they are linear projections of the
# token vectors $X \in \mathbb{R}^{N\times C}$ (model width $C$). Multi-head attention splits the
# width into $H$ heads of size $D = C/H$, attends in each head independently, and mixes the heads
# back with an output projection:
#
# $$
# \operatorname{MultiHead}(X) = \big[\,\text{head}_1, \dots, \text{head}_H\,\big]\, W_o,
# \qquad
# \text{head}_h = \operatorname{Attention}\!\big(X W_q^{(h)},\; X W_k^{(h)},\; X W_v^{(h)}\big),
# $$
#
# where $W_q^{(h)}$ is the block of $D$ columns of $W_q \in \mathbb{R}^{C\times C}$ belonging to
# head $h$. In code, "taking a block of columns per head" is a reshape: `split_heads` turns
# $(B, N, C)$ into $(B, H, N, D)$, `merge_heads` undoes it.

# %%
B, N, C, H = 2, 6, 32, 4
x = torch.randn(B, N, C)
xh = attnkit.split_heads(x, H)  # (B, N, C) -> view (B, N, H, D) -> transpose (B, H, N, D)
print("split_heads:", tuple(x.shape), "->", tuple(xh.shape))
print("merge_heads:", tuple(xh.shape), "->", tuple(attnkit.merge_heads(xh).shape))
print("round trip exact:", torch.equal(attnkit.merge_heads(xh), x))
print("head 1 holds channels 8..15:", torch.equal(xh[:, 1], x[:, :, 8:16]))

# %% [markdown]
# `attnkit.MultiHeadAttention` holds the four projections as `nn.Linear` layers `w_q, w_k, w_v,
# w_o` (an `nn.Linear` computes $x W^\top + b$ with `weight` of shape (out, in)). Written out step
# by step, its forward pass is:

# %%
torch.manual_seed(0)
mha = attnkit.MultiHeadAttention(d_model=C, n_heads=H)

q = attnkit.split_heads(mha.w_q(x), H)  # (B, N, C) -> (B, H, N, D)
k = attnkit.split_heads(mha.w_k(x), H)  # (B, H, N, D)
v = attnkit.split_heads(mha.w_v(x), H)  # (B, H, N, D)
heads = attention(q, k, v)  # (B, H, N, D): each head attends on its own
by_hand = mha.w_o(attnkit.merge_heads(heads))  # (B, N, C): concatenate heads, mix with W_o

with torch.no_grad():
    print(f"max |by hand - mha(x)| = {(by_hand - mha(x)).abs().max():.2e}")

# %% [markdown]
# PyTorch's `nn.MultiheadAttention` computes the same function but stores the weights
# differently: the three input projections are stacked into one `in_proj_weight` of shape
# $(3C, C)$ (queries, then keys, then values) and the output projection is `out_proj`. Copy our
# weights into it and compare.

# %%
ref = torch.nn.MultiheadAttention(C, H, batch_first=True)
with torch.no_grad():
    ref.in_proj_weight.copy_(torch.cat([mha.w_q.weight, mha.w_k.weight, mha.w_v.weight]))
    ref.in_proj_bias.copy_(torch.cat([mha.w_q.bias, mha.w_k.bias, mha.w_v.bias]))
    ref.out_proj.weight.copy_(mha.w_o.weight)
    ref.out_proj.bias.copy_(mha.w_o.bias)
    ours = mha(x)
    theirs, _ = ref(x, x, x, need_weights=False)
print("in_proj_weight:", tuple(ref.in_proj_weight.shape), " out_proj.weight:",
      tuple(ref.out_proj.weight.shape))
print(f"max |attnkit.MultiHeadAttention - nn.MultiheadAttention| = "
      f"{(ours - theirs).abs().max():.2e}")

# %% [markdown]
# The attention function inside `attnkit.MultiHeadAttention` is a parameter (`attn_fn`). Every
# later chapter plugs its own sparse or approximate attention into this same module, so the
# projections stay fixed while the attention changes.

# %% [markdown]
# ## 7. Masks
#
# Often a query must not see every key: a language model predicting token $i$ may not look at
# tokens after $i$, and most sparse methods in this course are nothing but a pattern of allowed
# pairs. A mask enters attention by setting forbidden scores to $-\infty$ before the softmax, so
# that their weight is $e^{-\infty} = 0$:
#
# $$
# \alpha_{ij} = \frac{\mathbb{1}[\text{mask}_{ij}]\, e^{s_{ij}}}
#                    {\sum_{l} \mathbb{1}[\text{mask}_{il}]\, e^{s_{il}}} .
# $$
#
# The kit writes patterns as **mask functions** in the convention of PyTorch's FlexAttention:
# `mask_mod(b, h, q_idx, kv_idx)` returns True where query `q_idx` may attend to key `kv_idx`.
# The function is written with tensor operations, so it can be evaluated on a whole grid of
# indices at once (`attnkit.materialize`) or handed to a GPU kernel that never builds the grid.
# Here is the causal pattern from the kit and a custom one: causal, but at most 3 steps back.

# %%
def look_back_3(b, h, q_idx, kv_idx):
    """Query i sees keys i-3, ..., i."""
    return (kv_idx <= q_idx) & (q_idx - kv_idx <= 3)


print(attnkit.materialize(look_back_3, 6).int())

# %%
fig = attnkit.plot.plot_masks(
    {"full": attnkit.full, "causal": attnkit.causal, "at most 3 back": look_back_3}, N=12)
plt.show()

# %% [markdown]
# The titles report the fraction of pairs that are computed. For causal attention it tends to
# one half; for "at most 3 back" it is about $4/N$ and shrinks as $N$ grows. Fixed patterns like
# the last one are the subject of chapter 2.
#
# Causal attention is dense attention with the causal mask. It should match SDPA's built-in
# `is_causal=True` (note that for SDPA, as in the kit, a boolean mask is True where attention is
# *allowed*; `nn.MultiheadAttention` uses the opposite convention).

# %%
torch.manual_seed(0)
B, H, N, D = 1, 2, 10, 16
q, k, v = (torch.randn(B, H, N, D) for _ in range(3))
mask = attnkit.causal_mask(N)  # (N, N) bool, broadcasts over B and H
out_causal, w_causal = attnkit.dense_attention(q, k, v, mask=mask, return_weights=True)
print(f"max |dense + causal mask - sdpa(is_causal=True)| = "
      f"{(out_causal - F.scaled_dot_product_attention(q, k, v, is_causal=True)).abs().max():.2e}")

_, w_local = attnkit.dense_attention(q, k, v, mask=attnkit.materialize(look_back_3, N),
                                     return_weights=True)
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.8))
attnkit.plot.plot_attention(w_causal[0, 0], ax1, title="weights, causal mask (head 0)")
attnkit.plot.plot_attention(w_local[0, 0], ax2, title="weights, at most 3 back (head 0)")
fig.tight_layout()
plt.show()

# %% [markdown]
# Each row still sums to one; the masked entries are exactly zero. A direct test of causality:
# change every key and value from position $t$ on, and check that the outputs at positions before
# $t$ do not move at all (not even by round-off), while later outputs do.

# %%
t_cut = 6
k2, v2 = k.clone(), v.clone()
k2[:, :, t_cut:] += 5 * torch.randn(B, H, N - t_cut, D)
v2[:, :, t_cut:] += 5 * torch.randn(B, H, N - t_cut, D)
out2 = attnkit.dense_attention(q, k2, v2, mask=mask)
change = (out2 - out_causal).abs().amax(dim=(0, 1, 3))  # largest change per position
for i, c in enumerate(change.tolist()):
    print(f"position {i}: max change {c:.3g}" + ("   <- perturbed" if i >= t_cut else ""))

# %% [markdown]
# ## 8. The $O(N^2)$ cost, measured
#
# For one head, $QK^\top$ multiplies an $N\times D$ matrix by a $D\times M$ one: $NM$ dot products
# of length $D$, i.e. $2NMD$ floating-point operations (a multiply and an add each). The product
# of the $N\times M$ weights with $V$ costs the same again. Over the batch and heads, with $M = N$:
#
# $$
# \text{FLOPs} = 4\,B\,H\,N^2 D, \qquad
# \text{memory for scores} = B\,H\,N^2 \times 4 \text{ bytes (float32)} .
# $$
#
# Both grow with $N^2$. The softmax and the mask add $O(BHN^2)$ elementwise work that
# `count_flops` does not count. We measure for $B = 1$, $H = 4$, $D = 64$, float32:
#
# * wall time: median of several calls (`attnkit.measure.time_call`), after a warm-up call,
#   on a single thread (on a small shared machine, a two-thread call can stall for tens of
#   milliseconds waiting for a thread that the operating system put to sleep; one thread gives
#   clean curves, and the $N^2$ shape does not depend on the thread count);
# * peak memory: the largest number of bytes alive at once during the call
#   (`attnkit.peak_memory`);
# * FLOPs: counted by PyTorch's FLOP counter (`attnkit.count_flops`);
# * the largest tensor the call allocates (`attnkit.largest_intermediate`).

# %%
Bc, Hc, Dc = 1, 4, 64
Ns = [128, 256, 512, 1024, 2048] + ([4096, 8192] if BIG else [])


@torch.no_grad()
def measure_dense(Nc):
    """Median time, peak bytes, FLOPs and largest tensor of dense attention at length Nc."""
    q, k, v = (torch.randn(Bc, Hc, Nc, Dc) for _ in range(3))
    attnkit.dense_attention(q, k, v)  # warm-up
    repeats = 5 if Nc <= 2048 else 3  # the BIG sizes take seconds per call
    seconds = float(np.median([time_call(attnkit.dense_attention, q, k, v)
                               for _ in range(repeats)]))
    peak = attnkit.peak_memory(attnkit.dense_attention, q, k, v)
    flops = attnkit.count_flops(attnkit.dense_attention, q, k, v)
    biggest = attnkit.largest_intermediate(attnkit.dense_attention, q, k, v)
    return Nc, seconds, peak, flops, biggest


torch.manual_seed(0)
with one_thread():  # back to all cores for the rest of the notebook afterwards
    rows = [measure_dense(Nc) for Nc in tqdm(Ns, desc="measuring dense attention", file=sys.stdout)]

print(f"{'N':>6} {'time (ms)':>10} {'peak (MiB)':>11} {'FLOPs':>12} {'4BHN²D':>12}  largest tensor")
for Nc, seconds, peak, flops, biggest in rows:
    print(f"{Nc:>6} {seconds * 1e3:>10.2f} {peak / 2**20:>11.1f} {flops:>12.3e} "
          f"{4 * Bc * Hc * Nc**2 * Dc:>12.3e}  {biggest.shape} ({biggest.nbytes / 2**20:.0f} MiB)")

# %% [markdown]
# The counted FLOPs equal the formula exactly, and the largest tensor is always the stack of
# score matrices, one $N\times N$ matrix per head (the batched matrix product folds $B$ and $H$
# into one dimension). The peak is three times its size, because the scores, their exponentials
# and the normalised weights are separate $N\times N$ tensors alive at the same time.
#
# On a log-log plot a power law $y = cN^p$ is a straight line of slope $p$, and doubling $N$
# multiplies $y$ by $2^p$: by 4 for slope 2. We fit the slope over all sizes and also print the
# ratio between consecutive sizes.

# %%
N_arr = np.array([r[0] for r in rows], dtype=float)
t_arr = np.array([r[1] for r in rows])
m_arr = np.array([r[2] for r in rows], dtype=float)
slope_t = np.polyfit(np.log(N_arr), np.log(t_arr), 1)[0]
slope_m = np.polyfit(np.log(N_arr), np.log(m_arr), 1)[0]
print(f"fitted slope, time:   {slope_t:.2f}")
print(f"fitted slope, memory: {slope_m:.2f}")
print("time ratio per doubling:  ", "  ".join(f"{r:.1f}" for r in t_arr[1:] / t_arr[:-1]))
print("memory ratio per doubling:", "  ".join(f"{r:.1f}" for r in m_arr[1:] / m_arr[:-1]))

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
for ax, y, unit, scale, slope, color in [(ax1, t_arr, "time (ms)", 1e3, slope_t, "tab:blue"),
                                         (ax2, m_arr, "peak memory (MiB)", 1 / 2**20, slope_m,
                                          "tab:orange")]:
    ax.loglog(N_arr, y * scale, "o-", color=color, label=f"dense attention (fit: slope {slope:.2f})")
    guide = y[-1] * scale * (N_arr / N_arr[-1]) ** 2
    ax.loglog(N_arr, guide, "k--", lw=1, label=r"slope 2 guide ($\propto N^2$)")
    ax.set(xlabel="sequence length N", ylabel=unit)
    ax.set_xticks(N_arr, [str(int(nn)) for nn in N_arr])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.legend()
ax1.set_title(f"Time (one thread), B={Bc}, H={Hc}, D={Dc}, float32")
ax2.set_title("Peak memory during the call")
fig.tight_layout()
plt.show()

# %% [markdown]
# Memory follows the $N^2$ line exactly: every doubling of $N$ multiplies it by 4. Time is at
# least quadratic, and on a CPU often a little worse. The arithmetic really is $4BHN^2D$, but the
# softmax makes several passes over the $N\times N$ scores, and how fast a pass runs depends on
# where the scores live: while they fit in the processor's cache (a few tens of MB here; one score
# tensor is 4 MB at $N = 512$ and 64 MB at $N = 2048$) a pass is fast; beyond, every pass streams
# from main memory. One doubling ratio near the cache boundary is therefore well above 4, and the
# fitted slope comes out somewhat above 2 (the exact number varies from run to run on a shared
# machine). The lesson is the same either way: doubling the sequence costs at least four times
# the time and exactly four times the memory.

# %% [markdown]
# ## 9. What $N^2$ means for a $256\times256$ image
#
# Treat every pixel of a $256\times256$ image as a token, as a vision transformer working on raw
# pixels would. The sequence has $N = 256^2 = 65\,536$ positions, and one head's score matrix
# has $N^2 \approx 4.3\times10^{9}$ entries.

# %%
N_img = 256 * 256
heads_img, D_img = 12, 64
bytes_one_head = N_img**2 * 4  # bytes of one float32 N×N matrix
print(f"N = {N_img:,} tokens, N² = {N_img**2:,} scores per head")
print(f"one head, float32 : {bytes_one_head / 1e9:6.1f} GB")
print(f"{heads_img} heads          : {heads_img * bytes_one_head / 1e9:6.1f} GB  (one layer, one image)")
for device, gb in [("laptop RAM", 16), ("NVIDIA H100 GPU", 80)]:
    print(f"  vs {device:<16} {gb:>3} GB: {heads_img * bytes_one_head / 1e9 / gb:4.1f}x too much")

flops_img = 4 * heads_img * N_img**2 * D_img
# extrapolate our own measurement at the largest N along the N² law
sec_img = rows[-1][1] * (N_img / rows[-1][0]) ** 2 * heads_img / Hc
print(f"FLOPs for one layer: {flops_img:.2e}")
print(f"one core of this CPU, extrapolated from N = {rows[-1][0]} along N²: "
      f"about {sec_img / 60:.0f} minutes per layer (if the memory existed)")

# %% [markdown]
# One layer of attention on one modest image needs on the order of 200 GB just to hold its
# scores, about 2.6 times what an 80 GB H100 holds, before counting the softmax
# temporaries, the backward pass, the batch, or the other layers. Attention is usually a small
# part of a network's parameters, but for long sequences it dominates both time and memory.
#
# There are two separate problems here. **Memory** can be solved without changing the result:
# fused kernels (FlashAttention, and FlexAttention in chapter 2) compute the softmax block by
# block and never store the $N\times N$ matrix. **Compute** cannot: exact attention still touches all $N^2$ pairs. To go
# below $N^2$ we must compute *something else* that is close enough, and the rest of the course is
# a tour of the ways to do that:
#
# | Chapter | Idea | Methods |
# |---|---|---|
# | 2 | Fixed sparse patterns: use prior knowledge of which pairs matter | local/sliding window, strided, global tokens, Longformer, BigBird; FlexAttention on the GPU |
# | 3 | Memory and recurrence: carry a summary across segments | Transformer-XL |
# | 4 | Content-based sparsity: let the queries and keys choose whom to meet | Reformer (LSH), Routing Transformer, Sparse Sinkhorn |
# | 5 | Low rank: a few representative keys and values | Linformer, compressed attention |
# | 6 | Kernels: reorder the three matrix products | linear attention, Performer, Random Feature Attention |
# | 7 | Beyond attention: mix tokens without query–key scores | Synthesizer, FNet, gMLP, MLP-Mixer |
# | 8 | Learnable windows: let the model choose how far to look | a differentiable bell-curve window |
# | 9 | Attention on the GPU: move fewer bytes, skip empty tiles | online softmax, FlashAttention tiling, FlexAttention, a Triton window kernel |
# | 10 | The long-range benchmark: every variant trained on the same tasks; what pretraining knows | ListOps, recall and copy at long range; the birth-place experiment with span corruption |
#
# Every chapter uses the tools of this one: `attnkit.dense_attention` as the reference to check
# against, mask functions to describe patterns, `MultiHeadAttention` to host the variant, and
# the measuring functions to see whether the $N^2$ really went away.
