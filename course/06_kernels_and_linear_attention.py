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
# # Chapter 6 — Kernels and linear attention
#
# Chapter 5 shortened the keys. This chapter keeps all of them and changes the *order* of the
# matrix products instead. The lecture notes put it as "attention is three-matrix
# multiplication": without the softmax, $(QK^\top)V$ and $Q(K^\top V)$ are the same matrix, but
# the first costs a multiple of $N^2$ and the second a multiple of $N$. The softmax stands in
# the way; replacing $\exp(q\cdot k)$ by a product of features $\phi(q)\cdot\phi(k)$ removes it.
# Which $\phi$, and how good the replacement is, is the rest of the chapter.
#
# This chapter covers:
#
# 1. associativity: FLOPs counted, times measured, and the crossover length;
# 2. softmax attention as a kernel smoother, and the feature-map trick;
# 3. linear attention with $\phi(x) = \operatorname{elu}(x) + 1$;
# 4. causal linear attention as prefix sums, and as a recurrent network;
# 5. FAVOR+ (Performer): random features for $\exp$, why trigonometric features fail where the
#    kernel is near zero, why positive features fix it, and orthogonal against iid features;
# 6. Random Feature Attention (RFA): random Fourier features of normalised queries and keys, the
#    temperature $\sigma^2$, the gate, and how it relates to the Performer;
# 7. time and memory of linear attention and the Performer against dense attention at long $N$.
#
# **Notation.** $(B, H, N, D)$ queries, $(B, H, M, D)$ keys, $(B, H, M, D_v)$ values; the lecture
# notes write $d$ and $d'$ for $D$ and $D_v$. $m$ random features, $\phi: \mathbb{R}^D \to
# \mathbb{R}^m$ applied row by row, $\Phi_Q = \phi(Q)$, $\Phi_K = \phi(K)$.

# %% [markdown]
# ## Setup
#
# `BIG = True` adds $N = 8192$ to the measurements of sections 1 and 7 (dense attention then
# needs about 1 GB for its scores and takes a few seconds per call).

# %%
import math
import sys

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from tqdm.auto import tqdm

import attnkit
from attnkit import dense_attention, kernel, rfa
from attnkit.measure import time_call
from attnkit.notebook import one_thread, setup

setup(seed=0)

# %%
BIG = False  # True: N = 8192 in sections 1 and 7


def log_x_ticks(ax, values):
    ax.set_xticks(values, [str(v) for v in values])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())

# %% [markdown]
# ## 1. Associativity: $(QK^\top)V$ against $Q(K^\top V)$
#
# Drop the softmax for a moment. Matrix products are associative, so
#
# $$
# \underbrace{(QK^\top)}_{N\times N}\,V \;=\; Q\,\underbrace{(K^\top V)}_{D\times D_v},
# $$
#
# but the work differs. Left to right: $QK^\top$ takes $N\cdot N\cdot D$ multiply-adds and
# multiplying the $N\times N$ result by $V$ another $N\cdot N\cdot D_v$, in total
# $(D + D_v)N^2$. Right to left: $K^\top V$ takes $D\cdot D_v\cdot N$ and $Q$ times the
# $D\times D_v$ result another $N\cdot D\cdot D_v$, in total $2DD_vN$. These are the two counts
# in the lecture notes, $(d+d')N^2$ and $2dd'N$. The second is smaller once
#
# $$
# N > N^* = \frac{2DD_v}{D + D_v}, \qquad N^* = D \text{ when } D_v = D .
# $$
#
# `count_flops` counts a multiply-add as two FLOPs, so it should report twice these numbers.

# %%
def left_first(q, k, v):
    return (q @ k.transpose(-2, -1)) @ v  # (B, H, N, D) @ (B, H, D, N) -> (B, H, N, N); @ V -> (B, H, N, Dv)


def right_first(q, k, v):
    return q @ (k.transpose(-2, -1) @ v)  # (B, H, D, N) @ (B, H, N, Dv) -> (B, H, D, Dv); Q @ -> (B, H, N, Dv)


torch.manual_seed(0)
B, H, D, Dv = 1, 4, 64, 64
q, k, v = (torch.randn(B, H, 256, D, dtype=torch.float64) for _ in range(3))
print("max |(QKᵀ)V - Q(KᵀV)| / max |(QKᵀ)V| =",
      f"{((left_first(q, k, v) - right_first(q, k, v)).abs().max() / left_first(q, k, v).abs().max()):.1e}")

Ns_assoc = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096] + ([8192] if BIG else [])
print(f"\nB={B}, H={H}, D={D}, Dv={Dv}: FLOPs counted (formula: 2·B·H·(D+Dv)·N² and 4·B·H·D·Dv·N)")
print(f"{'N':>6} {'(QKᵀ)V':>10} {'formula':>10} {'Q(KᵀV)':>10} {'formula':>10} {'ratio':>7}")
flops = {}
for N in Ns_assoc:
    q, k, v = (torch.randn(B, H, N, D) for _ in range(3))
    flops[N] = (attnkit.count_flops(left_first, q, k, v), attnkit.count_flops(right_first, q, k, v))
    print(f"{N:>6} {flops[N][0]:>10.2e} {2 * B * H * (D + Dv) * N * N:>10.2e} "
          f"{flops[N][1]:>10.2e} {4 * B * H * D * Dv * N:>10.2e} {flops[N][0] / flops[N][1]:>7.2f}")
print(f"predicted crossover N* = 2·D·Dv/(D+Dv) = {2 * D * Dv / (D + Dv):.0f}")

# %% [markdown]
# Now the clock: the median of several calls of each order, float32, on one thread (as in
# chapters 2 and 5: with two threads on a small shared machine, thread wake-ups add a floor of
# many milliseconds to every call and hide the curves).

# %%
@torch.no_grad()
def median_time(fn, *args, repeats=5):
    fn(*args)  # warm-up
    return float(np.median([time_call(fn, *args) for _ in range(repeats)]))


times_assoc = {}
with one_thread():
    for N in tqdm(Ns_assoc, desc="timing", file=sys.stdout):
        q, k, v = (torch.randn(B, H, N, D) for _ in range(3))
        reps = 15 if N <= 512 else 3
        times_assoc[N] = (median_time(left_first, q, k, v, repeats=reps),
                          median_time(right_first, q, k, v, repeats=reps))

print(f"{'N':>6} {'(QKᵀ)V ms':>10} {'Q(KᵀV) ms':>10} {'speed-up':>9}")
for N, (t_l, t_r) in times_assoc.items():
    print(f"{N:>6} {t_l * 1e3:>10.3f} {t_r * 1e3:>10.3f} {t_l / t_r:>9.2f}")
crossover = next((N for N, (t_l, t_r) in times_assoc.items() if t_r < t_l), None)
print(f"measured: Q(KᵀV) is faster from N = {crossover} on (FLOP crossover {2 * D * Dv // (D + Dv)})")

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
ax1.loglog(Ns_assoc, [flops[N][0] for N in Ns_assoc], "o-", ms=4, label="(QKᵀ)V: 2(D+Dv)N² per head")
ax1.loglog(Ns_assoc, [flops[N][1] for N in Ns_assoc], "s-", ms=4, label="Q(KᵀV): 4·D·Dv·N per head")
ax1.set(ylabel="FLOPs (count_flops)", title=f"FLOPs counted, B={B}, H={H}, D=Dv={D}")
ax2.loglog(Ns_assoc, [times_assoc[N][0] * 1e3 for N in Ns_assoc], "o-", ms=4, label="(QKᵀ)V")
ax2.loglog(Ns_assoc, [times_assoc[N][1] * 1e3 for N in Ns_assoc], "s-", ms=4, label="Q(KᵀV)")
ax2.set(ylabel="time per call (ms)", title="Time measured, float32, one thread")
for ax in (ax1, ax2):
    ax.axvline(2 * D * Dv / (D + Dv), color="grey", ls=":", lw=1, label="N* = 2·D·Dv/(D+Dv)")
    ax.set_xlabel("sequence length N")
    log_x_ticks(ax, Ns_assoc[::2])
    ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# The FLOP counts match the formulas exactly and cross at $N^* = D$. The measured crossover
# (printed above) lands close to it on this CPU, though where exactly depends on how well each
# shape suits the matrix kernels (tiny matrices are dominated by call overhead). Past a few
# hundred tokens the right-to-left order wins by a factor that grows at least linearly with $N$.

# %% [markdown]
# ## 2. Softmax attention as a kernel
#
# Put the softmax back. Output $i$ is (the lecture notes' $b^1$, for any query)
#
# $$
# o_i = \sum_{j=1}^{M} \frac{\operatorname{sim}(q_i, k_j)}{\sum_{l} \operatorname{sim}(q_i, k_l)}\, v_j,
# \qquad \operatorname{sim}(q, k) = \exp\!\big(q\cdot k/\sqrt D\big),
# $$
#
# a weighted average of the values with weights given by a *kernel*, a similarity function of
# two vectors. Suppose the kernel were a dot product of features, $\operatorname{sim}(q, k) =
# \phi(q)\cdot\phi(k)$ with $\phi: \mathbb{R}^D \to \mathbb{R}^m$. Then both sums factor, just as
# the lecture notes work out component by component:
#
# $$
# o_i = \frac{\sum_j \big(\phi(q_i)^\top \phi(k_j)\big)\, v_j}{\sum_l \phi(q_i)^\top \phi(k_l)}
#     = \frac{\phi(q_i)^\top \overbrace{\textstyle\sum_j \phi(k_j)\, v_j^\top}^{S\;(m\times D_v)}}
#            {\phi(q_i)^\top \underbrace{\textstyle\sum_l \phi(k_l)}_{z\;(m)}} .
# $$
#
# $S$ and $z$ are computed once, in $O(M m D_v)$, and shared by every query: total cost
# $O((N + M)\, m\, D_v)$, never an $N\times M$ matrix. The catch: the exponential kernel has no
# *finite* feature map (its Taylor series needs all monomials of every degree). Either we choose
# a different kernel that has one (section 3), or we approximate $\exp$ by random features
# (section 5).

# %% [markdown]
# ## 3. Linear attention: $\phi(x) = \operatorname{elu}(x) + 1$
#
# Katharopoulos et al. (the "Linear Transformer" of the lecture notes) take a simple positive
# map of the same dimension, $m = D$:
#
# $$
# \phi(x) = \operatorname{elu}(x) + 1 = \begin{cases} x + 1 & x > 0 \\ e^{x} & x \le 0 \end{cases}
# \;>\; 0 .
# $$
#
# Positivity matters: every weight $\phi(q)\cdot\phi(k)$ is positive, so the output is a proper
# weighted average and the denominator never vanishes. The kernel is a different one from
# softmax's, so the model is a different model, not an approximation of a softmax transformer.

# %%
torch.manual_seed(0)
q, k, v = (torch.randn(2, 4, 512, 32, dtype=torch.float64) for _ in range(3))
x = torch.linspace(-4, 3, 8, dtype=torch.float64)
print("x      :", x.numpy().round(2))
print("elu + 1:", kernel.elu_features(x).numpy().round(4))
out = kernel.linear(q, k, v)
print("\nmax |linear - linear_reference (dense N×M form)| =",
      f"{(out - kernel.linear_reference(q, k, v)).abs().max():.1e}")
print("relative difference from softmax attention      =",
      f"{((out - dense_attention(q, k, v)).norm() / dense_attention(q, k, v).norm()):.2f}  (a different kernel)")
print("largest tensor: linear", tuple(attnkit.largest_intermediate(kernel.linear, q, k, v).shape),
      "  dense", tuple(attnkit.largest_intermediate(dense_attention, q, k, v).shape))

# %% [markdown]
# ## 4. Causal linear attention: prefix sums, and an RNN
#
# In a causal model query $i$ may only use keys $j \le i$. Then $S$ and $z$ become prefix sums,
#
# $$
# S_i = \sum_{j \le i} \phi(k_j)\, v_j^\top = S_{i-1} + \phi(k_i)\, v_i^\top, \qquad
# z_i = z_{i-1} + \phi(k_i), \qquad o_i = \frac{\phi(q_i)^\top S_i}{\phi(q_i)^\top z_i},
# $$
#
# which is a recurrent network whose state $(S_i, z_i)$ has a fixed size $m\times D_v + m$,
# whatever the length (hence the paper's title, "Transformers are RNNs"). Generating a token
# costs $O(mD_v)$ instead of the $O(iD)$ of attending to a growing cache. The kit computes the
# same thing in two ways: `linear(causal=True)` processes chunks of $c$ rows in parallel (the
# masked $c\times c$ product inside a chunk, the running state across chunks), and
# `linear_recurrent` steps one token at a time. Both should equal the dense form with a
# lower-triangular mask.

# %%
torch.manual_seed(0)
N4 = 300
q, k, v = (torch.randn(1, 2, N4, 16, dtype=torch.float64) for _ in range(3))
ref = kernel.linear_reference(q, k, v, causal=True)
for chunk in [1, 7, 64, N4]:
    print(f"parallel, chunk c={chunk:<4} max |out - dense causal form| = "
          f"{(kernel.linear(q, k, v, causal=True, chunk=chunk) - ref).abs().max():.1e}")
rnn = kernel.linear_recurrent(q, k, v)
print(f"recurrent, one token at a time: max |out - dense causal form| = {(rnn - ref).abs().max():.1e}")

# the state carries everything: feed the sequence in two pieces
first, state = kernel.linear_recurrent(q[..., :200, :], k[..., :200, :], v[..., :200, :],
                                       return_state=True)
second = kernel.linear_recurrent(q[..., 200:, :], k[..., 200:, :], v[..., 200:, :], state=state)
print(f"two pieces with the state handed over:  max |out - one pass| = "
      f"{(torch.cat([first, second], dim=2) - rnn).abs().max():.1e}")
print("state shapes: S", tuple(state[0].shape), " z", tuple(state[1].shape), "(independent of N)")

# causality: changing the future leaves the past unchanged
v2 = v.clone()
v2[..., 150:, :] += 1.0
changed = (kernel.linear(q, k, v2, causal=True) - kernel.linear(q, k, v, causal=True)).abs().amax(dim=(0, 1, 3))
print(f"perturb values from position 150 on: outputs before 150 change by at most "
      f"{changed[:150].max():.1e}, from 150 on by up to {changed[150:].max():.2f}")

# %% [markdown]
# ## 5. FAVOR+: random features for the softmax kernel
#
# The Performer keeps the softmax kernel and estimates it. For Gaussian $w \sim \mathcal N(0, I_D)$,
# two identities hold (after scaling $x \to x/D^{1/4}$ so that $q\cdot k$ below stands for
# $q\cdot k/\sqrt D$):
#
# $$
# \exp(q^\top k) = e^{\lVert q\rVert^2/2}\, e^{\lVert k\rVert^2/2}\,
# \mathbb{E}_w\big[\cos\big(w^\top(q - k)\big)\big]
# = \mathbb{E}_w\Big[e^{w^\top q - \lVert q\rVert^2/2}\; e^{w^\top k - \lVert k\rVert^2/2}\Big].
# $$
#
# Averaging over $m$ draws $w_1, \dots, w_m$ gives two feature maps whose dot product is an
# unbiased estimate of $\exp(q^\top k)$:
#
# $$
# \phi_{\text{trig}}(x) = \sqrt{\tfrac{2}{m}}\, e^{\lVert x\rVert^2/2}
# \big[\cos(w_r^\top x), \sin(w_r^\top x)\big]_{r=1}^{m/2},
# \qquad
# \phi_{+}(x) = \tfrac{1}{\sqrt m}\big[e^{w_r^\top x - \lVert x\rVert^2/2}\big]_{r=1}^{m} .
# $$
#
# The lecture notes name the problem with the first: trigonometric features take negative
# values, and where the true kernel value is close to zero an estimator with large variance
# becomes unstable; the Performer paper shows that the variance of the trigonometric estimate is
# large exactly when the approximated values tend to zero. Attention is full of tiny kernel
# values (most keys are irrelevant to most queries), and a sum of many noisy terms near zero,
# some negative, can make the denominator $\phi(q)^\top z$ close to zero or negative. The
# positive features are, as the name says, always positive. With independent $w_r$ the two
# variances are
#
# $$
# \operatorname{Var}\big[\phi_+(q)\cdot\phi_+(k)\big] = \tfrac{1}{m}\, \exp(q^\top k)^2
# \big(e^{\lVert q + k\rVert^2} - 1\big),
# $$
#
# $$
# \operatorname{Var}\big[\phi_{\text{trig}}(q)\cdot\phi_{\text{trig}}(k)\big] = \tfrac{1}{m}\,
# e^{\lVert q\rVert^2 + \lVert k\rVert^2}\big(1 - e^{-\lVert q - k\rVert^2}\big)^2 .
# $$
#
# (For the first, each of the $m$ terms $e^{w^\top(q + k) - \lVert q\rVert^2/2 - \lVert k\rVert^2/2}$
# has second moment $e^{\lVert q\rVert^2 + \lVert k\rVert^2 + 4q^\top k}$. For the second, the
# $m/2$ cos–sin pairs add up to $\tfrac{2}{m} e^{(\lVert q\rVert^2 + \lVert k\rVert^2)/2}
# \sum_r \cos\big(w_r^\top(q - k)\big)$, and $\operatorname{Var}\cos(w^\top\delta) =
# \tfrac12\big(1 - e^{-\lVert\delta\rVert^2}\big)^2$; $\tfrac m2$ terms times $(\tfrac 2m)^2$
# times $\tfrac12$ is $\tfrac1m$.) `kernel.feature_variance` computes both. The positive variance
# shrinks *with* the kernel value; the trigonometric one does not. The first experiment makes
# this visible: $q$ and $k$ of fixed norm with the angle between them swept, so that
# $\exp(q^\top k)$ runs from $e^{-r^2}$ to $e^{r^2}$, and the relative error of each estimator at
# $m = 64$ (iid features) over 300 draws, against the formulas.

# %%
def kernel_estimates(q, k, m, kind, orthogonal, seeds):
    """(len(seeds), P): φ(q_p)·φ(k_p) for P pairs (rows of q, k), one W per seed."""
    out = []
    for seed in seeds:
        if kind == "positive":
            w = kernel.gaussian_features(m, q.shape[-1], orthogonal=orthogonal, seed=seed, dtype=q.dtype)
            fq, fk = kernel.positive_features(q, w), kernel.positive_features(k, w)
        else:
            w = kernel.gaussian_features(m // 2, q.shape[-1], orthogonal=orthogonal, seed=seed, dtype=q.dtype)
            fq, fk = kernel.trig_features(q, w), kernel.trig_features(k, w)
        out.append((fq * fk).sum(-1))  # (P,)
    return torch.stack(out)  # (seeds, P)


D5, r = 16, 1.5
angles = torch.linspace(0, math.pi, 25, dtype=torch.float64)
e1 = torch.zeros(D5, dtype=torch.float64)
e1[0] = 1
e2 = torch.zeros(D5, dtype=torch.float64)
e2[1] = 1
q_pairs = (r * e1).expand(len(angles), D5)  # (P, D)
k_pairs = r * (torch.cos(angles)[:, None] * e1 + torch.sin(angles)[:, None] * e2)  # (P, D)
true = torch.exp((q_pairs * k_pairs).sum(-1))  # (P,)
seeds5 = range(300)
rel_rmse, rel_formula = {}, {}  # measured over the draws, and the formula's √Var / exp(qᵀk)
for kind in ["trig", "positive"]:
    est = kernel_estimates(q_pairs, k_pairs, 64, kind, False, seeds5)  # (seeds, P)
    rel_rmse[kind] = ((est - true) ** 2).mean(0).sqrt() / true
    rel_formula[kind] = kernel.feature_variance(q_pairs, k_pairs, 64, kind=kind).sqrt() / true
    print(f"{kind:<9} negative estimates: {(est < 0).float().mean():6.1%}   relative RMSE at "
          f"exp(qᵀk) = {true[0]:.1f}: {rel_rmse[kind][0]:.2f},  at exp(qᵀk) = {true[-1]:.3f}: "
          f"{rel_rmse[kind][-1]:.2f}")

fig, ax = plt.subplots(figsize=(6.5, 4.3))
for kind, marker, color in [("trig", "o", "C0"), ("positive", "s", "C1")]:
    ax.loglog(true.numpy(), rel_rmse[kind].numpy(), marker, color=color, ms=4,
              label=f"{kind} features, measured")
    ax.loglog(true.numpy(), rel_formula[kind].numpy(), "-", color=color, lw=1,
              label=f"{kind} features, formula")
ax.set_ylim(1e-3, 50)  # the exact end points (error ~1e-16) lie below the frame
ax.set(xlabel="true kernel value exp(qᵀk)", ylabel="relative RMSE of φ(q)·φ(k)",
       title=f"Estimating exp(qᵀk): |q| = |k| = {r}, D = {D5}, m = 64, iid, 300 draws")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# The two estimators fail at opposite ends. With $q = k$ every trigonometric term is
# $\cos 0 = 1$ and the estimate is exact, while the positive estimate is noisiest there
# (its variance grows with $\lVert q + k\rVert^2$). As the kernel value falls towards zero the
# roles swap: the trigonometric estimator's *relative* error grows without bound (its absolute
# error stays roughly constant while the target vanishes, and a fifth of its estimates in this
# sweep are negative), while the positive estimator becomes exact at $q = -k$. Attention needs
# the small values right, because most of the weights in a row are small: that is the FAVOR+
# argument in one picture. The trigonometric points sit on their formula. The positive points
# fall below theirs where the kernel is large: there the estimate is heavy-tailed (a rare $w$
# that points along $q + k$ contributes $e^{w^\top(q+k)}$, with $\lVert q + k\rVert = 3$ at the
# right end), and 300 draws rarely meet the draws that make up most of the variance, so the
# sample underestimates it. The formula is the true error.
#
# ### Orthogonal against iid features
#
# The "O" in FAVOR+ stands for orthogonal: instead of $m$ independent Gaussian $w_r$, draw them in
# blocks of $D$ mutually orthogonal directions (each still with a Gaussian-distributed length).
# Each $w_r$ on its own is still $\mathcal N(0, I_D)$, so the estimate stays unbiased, but the
# directions no longer cluster by chance. (The reason the seed text gives, that orthogonality
# "reduces overfitting", is not the argument of the paper; it is a variance-reduction device for
# the estimator.) How much it reduces can be computed exactly. Two rows of one block are no
# longer independent: $w_1 + w_2$ has squared length $\chi^2_{2D}$ (against $2\chi^2_D$ for
# independent rows) and a uniform direction, so its moment generating function is Kummer's
# function $F(z) = {}_1F_1(D; D/2; z)$ instead of $e^{2z}$. With $P = \sum_b n_b(n_b - 1)$ ordered
# pairs of rows that share a block ($n_b \le D$ rows in block $b$; the trigonometric map has
# $m/2$ rows, the positive map $m$), the variance is the iid one plus the covariances:
#
# $$
# \operatorname{Var}_{\text{ort}}\big[\phi_+(q)\cdot\phi_+(k)\big] = \operatorname{Var}_{\text{iid}}
# + \tfrac{P}{m^2}\Big(e^{-\lVert q\rVert^2 - \lVert k\rVert^2} F\big(\tfrac12\lVert q + k\rVert^2\big)
# - \exp(q^\top k)^2\Big),
# $$
#
# $$
# \operatorname{Var}_{\text{ort}}\big[\phi_{\text{trig}}(q)\cdot\phi_{\text{trig}}(k)\big] =
# \operatorname{Var}_{\text{iid}} + \tfrac{4P}{m^2}\, e^{\lVert q\rVert^2 + \lVert k\rVert^2}
# \Big(F\big(-\tfrac12\lVert q - k\rVert^2\big) - e^{-\lVert q - k\rVert^2}\Big).
# $$
#
# For positive features the bracket is always negative (the Performer paper proves that the
# variance can only go down); for trigonometric features it is negative too, except when
# $\lVert q - k\rVert^2$ is large (above about 9 for $D \le 16$), where it is tiny.
# `kernel.feature_variance(q, k, m, kind=..., orthogonal=True)` computes these. We measure the
# mean squared error of the kernel estimate, averaged over 200 random pairs $(q, k)$ of unit
# norm in random directions (kernel values between $e^{-1}$ and $e$, mostly near 1) and over
# 100 draws of $W$, for every combination of iid/orthogonal and trig/positive, and draw the
# formulas (averaged over the same pairs) as thin lines.

# %%
torch.manual_seed(0)
P5 = 200
q5, k5 = (torch.nn.functional.normalize(torch.randn(P5, D5, dtype=torch.float64), dim=-1)
          for _ in range(2))  # (P, D), |q| = |k| = 1
true5 = torch.exp((q5 * k5).sum(-1))
ms = [8, 16, 32, 64, 128, 256, 512]
mse, formula_mse = {}, {}
for kind in ["trig", "positive"]:
    for orthogonal in [False, True]:
        label = f"{kind}, {'orthogonal' if orthogonal else 'iid'}"
        mse[label] = [float(((kernel_estimates(q5, k5, m, kind, orthogonal, range(100)) - true5) ** 2).mean())
                      for m in ms]
        formula_mse[label] = [float(kernel.feature_variance(q5, k5, m, kind=kind, orthogonal=orthogonal).mean())
                              for m in ms]  # unbiased: MSE = variance

print(f"mean exp(qᵀk) over the pairs = {true5.mean():.3f};  MSE of the estimate:")
print(f"{'m':>5}" + "".join(f"{label:>22}" for label in mse))
for i, m in enumerate(ms):
    print(f"{m:>5}" + "".join(f"{vals[i]:>22.2e}" for vals in mse.values()))
for kind in ["trig", "positive"]:
    ratio = np.array(mse[f"{kind}, iid"]) / np.array(mse[f"{kind}, orthogonal"])
    print(f"{kind}: iid MSE / orthogonal MSE at m = {ms[0]} ... {ms[-1]}: {ratio.round(2).tolist()}")
    ratio = np.array(formula_mse[f"{kind}, iid"]) / np.array(formula_mse[f"{kind}, orthogonal"])
    print(f"{kind}: the same ratio from the formulas:           {ratio.round(2).tolist()}")

# %%
fig, ax = plt.subplots(figsize=(7, 4.5))
styles = {"trig, iid": "o--", "trig, orthogonal": "o-", "positive, iid": "s--", "positive, orthogonal": "s-"}
for i, (label, vals) in enumerate(mse.items()):
    ax.loglog(ms, vals, styles[label], color=f"C{i}", ms=4, label=label)
    ax.loglog(ms, formula_mse[label], color=f"C{i}", lw=0.8, alpha=0.6)
ax.loglog(ms, [mse["positive, iid"][0] * ms[0] / m for m in ms], color="grey", ls=":", lw=1,
          label="slope -1 (variance ∝ 1/m)")
ax.plot([], [], color="grey", lw=0.8, label="thin lines: the formulas")
ax.set(xlabel="number of random features m", ylabel="MSE of φ(q)·φ(k) against exp(qᵀk)",
       title=f"Random-feature estimators of the softmax kernel, D = {D5}")
log_x_ticks(ax, ms)
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# All four fall like $1/m$ (slope $-1$), as the variance of an average of $m$ terms should, and
# orthogonal directions lower the error at the same $m$. The formulas say by how much: for
# trigonometric features by a factor of 3.3 once the $m/2$ directions fill a whole block
# ($m \ge 2D = 32$; 1.5 at $m = D$), and the measurements agree; for positive features only by a
# factor of 1.22 once $m \ge D$. The measured positive ratios scatter around that (at one $m$
# the orthogonal error even comes out higher) because the positive estimates are heavy-tailed,
# so an average over 100 draws of $W$ is itself noisy. On these pairs the kernel values are
# near 1, not near 0, and there the
# trigonometric estimator has the *lower* error: the advantage of positive features is not a
# smaller error everywhere, it is a small error where attention needs it. To see that, look at
# whole attention rows, where most entries are small. The next cell estimates the attention
# matrix $\hat A = \Phi_Q\Phi_K^\top / \text{row sums}$ for random queries and keys
# $x \sim \mathcal N(0, a^2 I_D)$ with $D = 64$, $N = 512$, and reports the mean total-variation
# distance $\tfrac12\sum_j\lvert\hat A_{ij} - A_{ij}\rvert$ of a row from softmax attention
# (0 is perfect, 1 is disjoint; above 1 only with negative weights) and the share of rows whose
# estimated denominator $\phi(q_i)^\top z$ is negative.

# %%
torch.manual_seed(0)
N5, D6, c = 512, 64, 64 ** -0.25  # c: the Performer's x -> x / D^(1/4)
print(f"N = {N5}, D = {D6}, orthogonal features, mean over 3 draws of W")
print(f"{'a':>5} {'m':>5} {'positive: TV':>13} {'trig: TV':>10} {'trig: negative denominators':>29}")
for a in [0.75, 1.0]:
    q, k = (a * torch.randn(1, 4, N5, D6, dtype=torch.float64) for _ in range(2))
    A = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(D6), dim=-1)  # (1, 4, N, N)
    for m in [64, 256, 1024]:
        tv = {"positive": [], "trig": []}
        neg = []
        for seed in range(3):
            w_pos = kernel.gaussian_features(m, D6, seed=seed, dtype=q.dtype)  # (m, D)
            w_trig = kernel.gaussian_features(m // 2, D6, seed=seed, dtype=q.dtype)  # (m/2, D)
            for kind, phi in [("positive", lambda x: kernel.positive_features(x * c, w_pos)),
                              ("trig", lambda x: kernel.trig_features(x * c, w_trig))]:
                weights = phi(q) @ phi(k).transpose(-2, -1)  # (1, 4, N, N), estimates of exp(q·k/√D)
                den = weights.sum(-1, keepdim=True)  # (1, 4, N, 1) = φ(q_i)ᵀ z
                tv[kind].append(float(0.5 * (weights / den - A).abs().sum(-1).mean()))
                if kind == "trig":
                    neg.append(float((den < 0).double().mean()))
        print(f"{a:>5} {m:>5} {np.mean(tv['positive']):>13.3f} {np.mean(tv['trig']):>10.3g} "
              f"{np.mean(neg):>29.1%}")

# %% [markdown]
# With positive features the rows get closer to softmax attention as $m$ grows, slowly (the
# error of a random-feature estimate falls like $1/\sqrt m$). With trigonometric features the
# weights are far off, denominators come out negative for a share of the queries, and a row
# normalised by a denominator near zero can be arbitrarily wrong: total variation far above 1.
# Larger inputs ($a = 1$) make everything worse, because both variances grow exponentially with
# the norms; the trigonometric one grows regardless of the kernel value. That is the instability
# the lecture notes describe, and the reason the Performer uses positive features.

# %% [markdown]
# ### One attention matrix, estimated
#
# The table gives averages; a picture shows *where* the estimates go wrong. Below, $N = 64$
# queries and keys are the same sinusoidal position codes ($D = 16$), so the exact attention is
# a band around the diagonal, and the Performer estimates it with $m = 128$ orthogonal features
# of each kind. Top: the exact matrix and the two estimates on one colour scale. Bottom: one row
# of each, and the errors $\hat A - A$ (the colour scale stops at half the largest weight).

# %%
N7, D7, m7 = 64, 16, 128
pos7 = torch.arange(N7, dtype=torch.float64)[:, None]  # (N, 1)
freqs7 = (N7 / 2) ** -(torch.arange(D7 // 2, dtype=torch.float64) / (D7 // 2))  # (D/2,)
x7 = 1.4 * torch.cat([torch.cos(pos7 * freqs7), torch.sin(pos7 * freqs7)], dim=-1)  # (N, D), q = k
A7 = torch.softmax(x7 @ x7.T / math.sqrt(D7), dim=-1)  # (N, N) exact
A7_hat = {}
for kind, phi, rows in [("positive", kernel.positive_features, m7), ("trig", kernel.trig_features, m7 // 2)]:
    w7 = kernel.gaussian_features(rows, D7, seed=0, dtype=torch.float64)  # (m or m/2, D)
    f7 = phi(x7 * D7 ** -0.25, w7)  # (N, m)
    weights7 = f7 @ f7.T  # (N, N) estimates of exp(q·k/√D)
    A7_hat[kind] = weights7 / weights7.sum(-1, keepdim=True)
    print(f"{kind:<9} mean TV distance of a row {0.5 * (A7_hat[kind] - A7).abs().sum(-1).mean():.2f}, "
          f"negative weights {(A7_hat[kind] < 0).double().mean():.0%}")

fig, axes = plt.subplots(2, 3, figsize=(12, 7.5))
vmax7 = float(A7.max())
for ax, (name, mat) in zip(axes[0], [("exact softmax attention A", A7),
                                     ("estimate Â, positive features", A7_hat["positive"]),
                                     ("estimate Â, trig features", A7_hat["trig"])]):
    im = ax.imshow(mat.numpy(), cmap="viridis", vmin=0, vmax=vmax7, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set(title=name, xlabel="key j", ylabel="query i")
for ax, kind in zip(axes[1, 1:], ["positive", "trig"]):
    im = ax.imshow((A7_hat[kind] - A7).numpy(), cmap="RdBu_r", vmin=-vmax7 / 2, vmax=vmax7 / 2,
                   interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, extend="both")
    ax.set(title=f"error Â - A, {kind} features", xlabel="key j", ylabel="query i")
for ax in [*axes[0], *axes[1, 1:]]:
    ax.grid(False)
i7, ax = N7 // 2, axes[1, 0]
ax.plot(A7[i7].numpy(), "k-", lw=2, label="exact")
ax.plot(A7_hat["positive"][i7].numpy(), color="C1", label="positive")
ax.plot(A7_hat["trig"][i7].numpy(), color="C0", label="trig")
ax.axhline(0, color="grey", lw=0.8)
ax.set(title=f"row i = {i7}", xlabel="key j", ylabel="attention weight")
ax.legend(fontsize=8)
fig.suptitle(f"Performer estimate of one attention matrix: N = {N7}, D = {D7}, m = {m7}, orthogonal")
fig.tight_layout()
plt.show()

# %% [markdown]
# The two kinds of features fail in the two ways the variances predict. The positive estimate
# is clean far from the diagonal, where the kernel is small, and its errors sit *on* the band,
# where $q = k$ and $e^{\lVert q + k\rVert^2}$ is largest: peaks too high or too low, but
# never below zero. The trigonometric estimate gets the band roughly right and scatters noise
# of both signs over the whole matrix, negative weights included, because its variance does
# not shrink where the kernel does, and most of an attention row is where the kernel is small.

# %% [markdown]
# ### On a GPU: FAVOR+ as two softmax attentions
#
# Written out, the Performer creates two $N \times m$ feature matrices and reads them back a few
# times. On a GPU that traffic is the whole cost: a plain PyTorch FAVOR+ ($m = 256$) ran only
# 1.7 times faster than FlashAttention at $N = 16384$ on an H100. The positive features allow a
# rearrangement. Write $s_{fj} = w_f^\top k_j - \lVert k_j\rVert^2/2$ for feature $f$ and key
# $j$, $z_f = \sum_j e^{s_{fj}}$ and $a_f = \sum_j e^{s_{fj}} v_j / z_f$. Then
#
# $$
# a_f = \sum_j \operatorname{softmax}_j(s_{f\cdot})\, v_j ,
# \qquad
# \text{out}_i = \frac{\sum_f e^{w_f^\top q_i} z_f a_f}{\sum_f e^{w_f^\top q_i} z_f}
# = \sum_f \operatorname{softmax}_f\big(w_f^\top q_i + \log z_f\big)\, a_f .
# $$
#
# (The factor $e^{-\lVert q_i\rVert^2/2}$ is the same for every $f$, so it cancels.) The first
# formula is softmax attention in which the $m$ rows of $W$ are the queries, with a bias of
# $-\lVert k_j\rVert^2/2$ on each key. The second is softmax attention of the queries over
# the $m$ rows of $W$, with a bias of $\log z_f$ on each. Each runs as one fused kernel
# (FlexAttention, with `score_mod` for the bias and the log-sum-exp returned for $\log z$),
# so the feature matrices never reach memory. The kit's `performer` takes this path for CUDA
# tensors; `kernel.favor_two_softmax` with its dense `attend` shows that it is the same
# estimate:

# %%
q, k, v = (torch.randn(1, 4, 1024, 64) for _ in range(3))
W2 = kernel.gaussian_features(256, 64, seed=0)
two = kernel.favor_two_softmax(q * c, k * c, v, W2)  # dense attend; FlexAttention on a GPU
print(f"largest difference from kernel.performer: {(two - kernel.performer(q, k, v, features=W2)).abs().max():.2e}")

# %% [markdown]
# ## 6. Random Feature Attention: Fourier features of unit vectors
#
# RFA (Peng et al. 2021), the third realisation in the lecture notes, reaches the softmax kernel
# from a different classic: Rahimi and Recht's *random Fourier features* for the Gaussian
# kernel. For $w \sim \mathcal N(0, \sigma^{-2} I_D)$,
#
# $$
# \mathbb E_w\big[\cos\big(w^\top(x - y)\big)\big] = \exp\!\Big(-\frac{\lVert x - y\rVert^2}{2\sigma^2}\Big),
# $$
#
# and since $\sin a \sin b + \cos a \cos b = \cos(a - b)$, the $2m$ features
#
# $$
# \phi(x) = \sqrt{\tfrac{1}{m}}\,\big[\sin(W\hat x),\; \cos(W\hat x)\big],
# \qquad \phi(x)\cdot\phi(y) = \frac1m \sum_{r=1}^m \cos\big(w_r^\top(\hat x - \hat y)\big),
# $$
#
# estimate that kernel without bias. RFA applies them to the *normalised* $\hat q, \hat k$. On
# unit vectors $\lVert \hat q - \hat k\rVert^2 = 2 - 2\,\hat q\cdot\hat k$, so
#
# $$
# \exp\!\Big(-\frac{\lVert \hat q - \hat k\rVert^2}{2\sigma^2}\Big) = e^{-1/\sigma^2}\,
# \exp\!\Big(\frac{\hat q\cdot\hat k}{\sigma^2}\Big),
# $$
#
# the softmax kernel of the unit vectors at temperature $\sigma^2$, times a constant that cancels
# between numerator and denominator. As $m \to \infty$, RFA tends to
# $\operatorname{softmax}(\hat Q\hat K^\top/\sigma^2)V$ (`rfa.rfa_limit`); the temperature
# $\sigma^2$ takes the place of $\sqrt D$ and of the norms, which the normalisation has removed.
#
# **Relation to the Performer.** These are the trigonometric features of section 5 with
# $W$ drawn at scale $1/\sigma$: the section-5 factor $e^{\lVert x\rVert^2/2}$ is the same
# constant for every unit vector and cancels. So RFA *is* the Performer's trigonometric estimator
# on normalised, temperature-scaled inputs, which the next cell checks to rounding error. The
# normalisation removes the worst of the trigonometric estimator's trouble (variance growing
# like $e^{\lVert q\rVert^2 + \lVert k\rVert^2}$), and each product $\phi(q)\cdot\phi(k)$ is
# bounded by 1. What remains is the problem of section 5: the estimate can be negative and its
# relative error is large where the kernel is small, here where $\sigma$ is small (sharp
# attention: most keys get $e^{(\hat q\cdot\hat k - 1)/\sigma^2} \approx 0$).

# %%
torch.manual_seed(0)
q, k, v = (torch.randn(1, 4, 256, 32, dtype=torch.float64) for _ in range(3))
sigma, m_rfa = 0.7, 64
W_rfa = rfa.rfa_weights(m_rfa, 32, sigma, seed=3, dtype=torch.float64)  # (m, D), rows ~ N(0, σ⁻² I)
q_hat, k_hat = (x / x.norm(dim=-1, keepdim=True) for x in (q, k))
as_performer = kernel.performer(q_hat, k_hat, v, kind="trig", features=W_rfa * sigma, scale=1 / sigma**2)
print(f"max |rfa(m={m_rfa}) - performer(trig, q̂, k̂, W·σ, scale 1/σ²)| = "
      f"{(rfa.rfa(q, k, v, m=m_rfa, sigma=sigma, seed=3) - as_performer).abs().max():.1e}")
phi = rfa.rfa_features(q, W_rfa)  # (1, 4, N, 2m)
print(f"φ(q)·φ(q) = 1 for every q: max |φ·φ - 1| = {((phi * phi).sum(-1) - 1).abs().max():.1e};  "
      f"φ(q)·φ(k) in [{float((phi @ rfa.rfa_features(k, W_rfa).transpose(-2, -1)).min()):.2f}, "
      f"{float((phi @ rfa.rfa_features(k, W_rfa).transpose(-2, -1)).max()):.2f}]")

# %% [markdown]
# ### Error against $m$: trigonometric against positive features on the same target
#
# The target is $\operatorname{softmax}(\hat Q\hat K^\top/\sigma^2)V$ for random $q, k, v$ with
# $N = 512$, $D = 64$, at two temperatures. RFA with $m$ directions has $2m$ features; the
# Performer's positive features (iid, so that only the kind of feature differs) estimate the
# same target when given $\hat q, \hat k$ and `scale` $= 1/\sigma^2$, and get as many features,
# $2m$. Relative error of the output, mean over three draws of $W$, and the share of queries whose
# estimated denominator $\phi(q_i)^\top z$ is negative. A prediction first: one product
# $\phi(q)\cdot\phi(k)$ is a mean of $m$ cosines, and $\operatorname{Var}\cos(w^\top\delta) =
# \tfrac12(1 - \kappa^2)^2$ (section 5's computation with $w$ scaled by $1/\sigma$), so its
# variance is $(1 - \kappa^2)^2/(2m)$, one over the number of features as in section 5, around
# the kernel value $\kappa = e^{-\lVert\hat q - \hat k\rVert^2/2\sigma^2}$ (the next cell checks
# it by sampling). For unrelated directions
# ($\hat q\cdot\hat k \approx 0$, as for random vectors in $D = 64$) $\kappa \approx e^{-1/\sigma^2}$,
# and the relative error of one product is $(1 - \kappa^2)/(\kappa\sqrt{2m})$: 1.7, 5.4 and 39
# divided by $\sqrt m$ for $\sigma^2 = 1, 0.49, 0.25$. Small temperatures need exponentially
# many features.

# %%
N6, D6r = 256, 64
gen6 = torch.Generator().manual_seed(6)
q6, k6, v6 = (torch.randn(1, 1, N6, D6r, generator=gen6, dtype=torch.float64) for _ in range(3))
q6_hat, k6_hat = (x / x.norm(dim=-1, keepdim=True) for x in (q6, k6))

# the variance of one product, sampled: 4000 independent W (m = 16 rows each) for one pair
pair = rfa.rfa_features(torch.stack([q6[0, 0, 0], k6[0, 0, 0]]),
                        rfa.rfa_weights(4000 * 16, D6r, 0.7, seed=9, dtype=torch.float64))  # (2, 2·4000·16)
prods = (pair[0] * pair[1]).view(2, 4000, 16).sum((0, 2)) * 4000  # (4000,) φ(q)·φ(k), one per W
kappa = math.exp(-float((q6_hat[0, 0, 0] - k6_hat[0, 0, 0]).norm()) ** 2 / (2 * 0.7**2))
print(f"σ = 0.7, m = 16, one pair: sampled mean {float(prods.mean()):.4f} (κ = {kappa:.4f}), sampled variance "
      f"{float(prods.var()):.4f}, formula (1 - κ²)²/2m = {(1 - kappa**2) ** 2 / 32:.4f}")
ms_rfa = [4, 8, 16, 32, 64, 128, 256, 512]
sigmas6 = [1.0, 0.7, 0.5]


def rfa_errors(sigma, m, seeds=range(3)):
    """Mean relative output error of RFA and of 2m positive features, share of negative RFA denominators."""
    exact = rfa.rfa_limit(q6, k6, v6, sigma=sigma)
    e_rfa, e_pos, neg = [], [], []
    for seed in seeds:
        e_rfa.append(float((rfa.rfa(q6, k6, v6, m=m, sigma=sigma, seed=seed) - exact).norm() / exact.norm()))
        pos = kernel.performer(q6_hat, k6_hat, v6, m=2 * m, kind="positive", orthogonal=False, seed=seed,
                               scale=1 / sigma**2)
        e_pos.append(float((pos - exact).norm() / exact.norm()))
        w = rfa.rfa_weights(m, D6r, sigma, seed=seed, dtype=torch.float64)  # the W that rfa drew
        den = rfa.rfa_features(q6, w) @ rfa.rfa_features(k6, w).sum(-2).transpose(-2, -1)  # φ(q_i)ᵀ z
        neg.append(float((den < 0).double().mean()))
    return np.mean(e_rfa), np.mean(e_pos), np.mean(neg)


with one_thread():  # many small calls: one thread avoids thread wake-ups on a shared machine
    results6 = {(s, m): rfa_errors(s, m) for s in sigmas6
                for m in tqdm(ms_rfa, desc=f"σ = {s}", file=sys.stdout)}
err6 = {key: r[:2] for key, r in results6.items()}
neg6 = {key: r[2] for key, r in results6.items()}

print("relative error of RFA and of positive features (2m of each), share of negative RFA denominators")
print(f"{'m':>5} {'2m':>5} | " + " | ".join(f"σ² = {s**2:<4g} {'RFA':>7} {'positive':>8} {'neg.':>6}" for s in sigmas6))
for m in ms_rfa:
    print(f"{m:>5} {2 * m:>5} | " + " | ".join(f"{'':>9} {err6[s, m][0]:>7.3g} {err6[s, m][1]:>8.3g} {neg6[s, m]:>6.1%}"
                                                for s in sigmas6))

# %%
fig, ax = plt.subplots(figsize=(10, 4.6))
for i, sigma in enumerate(sigmas6):
    ax.loglog([2 * m for m in ms_rfa], [err6[sigma, m][0] for m in ms_rfa], "o-", color=f"C{i}", ms=4,
              label=f"RFA (sin, cos features), σ² = {sigma**2:g}")
    ax.loglog([2 * m for m in ms_rfa], [err6[sigma, m][1] for m in ms_rfa], "s--", color=f"C{i}", ms=4,
              label=f"positive features (Performer), σ² = {sigma**2:g}")
ref = err6[1.0, ms_rfa[-1]][0] * (2 * ms_rfa[-1]) ** 0.5
ax.loglog([2 * m for m in ms_rfa], [ref / (2 * m) ** 0.5 for m in ms_rfa], color="grey", ls=":", lw=1,
          label="slope −1/2")
ax.set(xlabel="number of features (length of φ) = 2m", ylabel="relative error of the output",
       title=f"Softmax attention of unit q, k at temperature σ², N = {N6}, D = {D6r}, mean of 3 draws")
log_x_ticks(ax, [2 * m for m in ms_rfa][::2])
ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
fig.tight_layout()
plt.show()

# %% [markdown]
# Once $m$ is large enough both errors fall like $1/\sqrt m$ (the dotted slope), and the
# temperature sets the level, as the prediction says. At $\sigma^2 = 1$ the two kinds of feature
# are about equally good (RFA slightly better from a few dozen features on). The difference
# shows at lower temperatures, and it is the one section 5 found: with few features a share of
# RFA's denominators is negative (up to 37% of them at $\sigma^2 = 0.25$), and a denominator
# near zero blows its output up, so the error is far above 1 until $m = 32$ at $\sigma^2 = 0.49$
# and still above 1 at $m = 512$ for $\sigma^2 = 0.25$. Positive features fail gracefully
# instead: at $\sigma^2 = 0.25$ their error stays between 1 and 2.5 (no better than answering
# zero) but never explodes. Neither is usable there with these $m$: a sharp softmax needs
# exponentially many random features, trigonometric or positive.
#
# ### The gate: a recency bias
#
# Causal RFA is the recurrence of section 4 with these features. The paper adds a learned
# scalar gate $g_t \in (0, 1)$ per head and token,
#
# $$
# S_t = g_t\, S_{t-1} + (1 - g_t)\,\phi(k_t)\,v_t^\top, \qquad
# z_t = g_t\, z_{t-1} + (1 - g_t)\,\phi(k_t), \qquad
# o_t = \frac{\phi(q_t)^\top S_t}{\phi(q_t)^\top z_t},
# $$
#
# so token $j$ enters output $i$ with the extra factor $(1 - g_j)\prod_{t = j+1}^{i} g_t$: older
# tokens fade geometrically, unless the gate stays near 1. In the paper
# $g_t = \operatorname{sigmoid}(w\cdot x_t + b)$ (the module `rfa.RFAGate`), so the model decides
# from the content when to forget, as a gated recurrent network does. The state keeps its
# fixed size. To see the weights, feed the identity matrix as values ($v_j = e_j$): output $i$ is
# then row $i$ of the effective attention matrix. With a constant gate the prediction is
# $\propto (1 - g)\,g^{\,i - j} \exp(\hat q_i\cdot\hat k_j/\sigma^2)$ over $j \le i$.

# %%
N7r, D7r, m7r = 48, 16, 4096
gen7 = torch.Generator().manual_seed(7)
q7, k7 = (torch.randn(1, 1, N7r, D7r, generator=gen7, dtype=torch.float64) for _ in range(2))
eye7 = torch.eye(N7r, dtype=torch.float64)[None, None]  # (1, 1, N, N): v_j = e_j
logits7 = (q7 / q7.norm(dim=-1, keepdim=True)) @ (k7 / k7.norm(dim=-1, keepdim=True)).transpose(-2, -1)  # q̂·k̂
i7r = N7r - 1
j7 = torch.arange(N7r)
gated_rows = {}
for g in [None, 0.95, 0.8]:
    gate = None if g is None else torch.full((1, 1, N7r), g, dtype=torch.float64)
    est = rfa.rfa(q7, k7, eye7, m=m7r, sigma=1.0, seed=0, causal=True, gate=gate)[0, 0, i7r]  # (N,)
    decay = torch.ones(N7r, dtype=torch.float64) if g is None else (1 - g) * g ** (i7r - j7).double()
    pred = decay * torch.exp(logits7[0, 0, i7r])  # (N,), all j <= i = N - 1
    gated_rows[g] = (est, pred / pred.sum())
    label = "no gate" if g is None else f"g = {g}"
    print(f"{label:>8}: weight on the last 8 tokens, estimated {float(est[-8:].sum()):.2f}, "
          f"predicted {float((pred / pred.sum())[-8:].sum()):.2f}")

fig, ax = plt.subplots(figsize=(7.5, 4))
for i, (g, (est, pred)) in enumerate(gated_rows.items()):
    label = "no gate" if g is None else f"constant gate g = {g}"
    ax.plot(j7, pred.numpy(), "-", color=f"C{i}", lw=1.5, label=f"{label}: prediction")
    ax.plot(j7, est.numpy(), "o", color=f"C{i}", ms=3, label=f"{label}: causal RFA, m = {m7r}")
ax.set(xlabel="key position j", ylabel=f"weight of key j in output i = {i7r}",
       title="Gated RFA: older tokens fade geometrically (σ = 1)")
ax.legend(fontsize=7, ncol=2)
fig.tight_layout()
plt.show()

# %% [markdown]
# The estimates scatter around the predicted curves (random features, $m$ finite); without a
# gate the weights follow the content alone and reach back to the first token, with $g = 0.8$
# almost all the weight sits on the last few tokens. RFA therefore has two knobs the plain
# Performer lacks: a temperature $\sigma^2$ and a learned recency bias. Its costs are those of
# linear attention: $O(N m D_v)$ time, a state of $2m\times D_v$ numbers per head.

# %% [markdown]
# ## 7. Speed at long $N$, measured
#
# Finally the clock on the whole attention call: dense softmax attention, linear attention
# ($\phi = $ elu + 1, $m = D$) and the Performer with $m = 256$ positive orthogonal features,
# at $B = 1$, $H = 4$, $D = 64$, float32, on one thread, from $N = 512$ to $4096$
# ($8192$ with `BIG`). Time is the median of a few calls after a warm-up; the peak memory is that
# of one call. For the Performer the features $W$ are drawn once outside the timed call (a model
# holds them in a buffer, as `RandomFeatures` does).

# %%
Ns_speed = [512, 1024, 2048, 4096] + ([8192] if BIG else [])
W_perf = kernel.gaussian_features(256, 64, seed=0)
speed_methods = {
    "dense": lambda q, k, v: dense_attention(q, k, v),
    "linear (elu+1)": lambda q, k, v: kernel.linear(q, k, v),
    "performer m=256": lambda q, k, v: kernel.performer(q, k, v, features=W_perf),
}
speed = {name: {} for name in speed_methods}
with one_thread(), torch.no_grad():
    for N in tqdm(Ns_speed, desc="timing", file=sys.stdout):
        q, k, v = (torch.randn(1, 4, N, 64) for _ in range(3))
        for name, fn in speed_methods.items():
            peak = attnkit.peak_memory(fn, q, k, v)  # also the warm-up call
            speed[name][N] = (float(np.median([time_call(fn, q, k, v) for _ in range(3)])), peak)

print(f"{'method':<17}" + "".join(f"{'N=' + str(N):>21}" for N in Ns_speed))
for name, rows in speed.items():
    print(f"{name:<17}" + "".join(f"{rows[N][0] * 1e3:>9.2f} ms {rows[N][1] / 2**20:>7.1f} MiB"
                                  for N in Ns_speed))
N_top = Ns_speed[-1]
for name in list(speed_methods)[1:]:
    print(f"{name:<17} at N = {N_top}: {speed['dense'][N_top][0] / speed[name][N_top][0]:5.1f}x faster, "
          f"{speed['dense'][N_top][1] / speed[name][N_top][1]:5.1f}x less peak memory than dense")

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
for name, rows in speed.items():
    slope_t = np.polyfit(np.log(Ns_speed), np.log([rows[N][0] for N in Ns_speed]), 1)[0]
    slope_m = np.polyfit(np.log(Ns_speed), np.log([rows[N][1] for N in Ns_speed]), 1)[0]
    ax1.loglog(Ns_speed, [rows[N][0] * 1e3 for N in Ns_speed], "o-", ms=4, label=f"{name} (slope {slope_t:.2f})")
    ax2.loglog(Ns_speed, [rows[N][1] / 2**20 for N in Ns_speed], "o-", ms=4, label=f"{name} (slope {slope_m:.2f})")
for ax, unit, title in [(ax1, "time per call (ms)", "Time"), (ax2, "peak memory (MiB)", "Peak memory")]:
    ax.set(xlabel="sequence length N", ylabel=unit,
           title=f"{title}, B=1, H=4, D=64, float32" + (", one thread" if unit.startswith("time") else ""))
    log_x_ticks(ax, Ns_speed)
    ax.legend(fontsize=8, title="method (fitted slope)", title_fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# Peak memory follows the theory exactly: slope 2 for dense attention (the $N\times N$ scores),
# slope 1 for linear attention and the Performer. The time slopes are noisier: dense attention
# grows at least like $N^2$, while the two linear-time methods grow more slowly than $N$ over
# this range because fixed per-call overheads still weigh at a few milliseconds. The Performer pays for its $m = 256$ features (four times
# $D$), so at short lengths it is no faster than dense attention; the gap opens as $N$ grows.
# Linear attention with $m = D$ is the cheapest of the three.
#
# ## Summary
#
# * Without the softmax, $Q(K^\top V)$ costs $2DD_vN$ multiply-adds against $(D + D_v)N^2$ for
#   $(QK^\top)V$; the FLOP crossover is at $N^* = 2DD_v/(D + D_v)$.
# * Softmax attention is a kernel smoother; a kernel that factors as $\phi(q)\cdot\phi(k)$ lets
#   the sums over keys be computed once, in linear time.
# * Linear attention uses $\phi = \operatorname{elu} + 1$: a different, positive kernel. Causal,
#   it is a prefix sum, and token by token an RNN with a fixed-size state.
# * The Performer estimates the softmax kernel with random features. Trigonometric features go
#   negative and have large relative variance where the kernel is small; positive features do
#   not; orthogonal directions lower the variance further.
# * RFA uses random Fourier (sin, cos) features of the normalised $\hat q, \hat k$: the
#   Performer's trigonometric estimator at temperature $\sigma^2$. Its error grows like
#   $e^{1/\sigma^2}$ as the temperature falls; its gate adds a learned recency bias to the
#   causal recurrence.
