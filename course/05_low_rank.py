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
# # Chapter 5 — Low rank: Linformer and compressed attention
#
# Chapters 2 and 3 kept the exact softmax but computed fewer query–key pairs. This chapter
# keeps every query and shortens the *keys and values* instead: from $M$ of them to a small
# number $k$ of "representative" ones. The lecture notes pose the question as "do we need the
# full attention matrix?" and answer it with a picture: if many columns of the $N\times N$
# attention matrix repeat each other, drop the repeats and attend to a smaller matrix.
# Mathematically that is a statement about *rank*.
#
# This chapter covers:
#
# 1. the singular values of attention matrices: fast decay on structured inputs, slower on noise;
# 2. Linformer: keys and values projected to $k$ rows, and its error against $k$;
# 3. why the queries are not shortened the same way (a shape argument, in code);
# 4. compressed attention (pooling or a strided convolution) as a Linformer with a pooling matrix;
# 5. time and peak memory against $N$, measured on this CPU.
#
# **Notation.** $(B, H, N, D)$ queries, $(B, H, M, D)$ keys and values, projected length $k$
# (called `proj_len` in code, because `k` is the keys), pooling stride $s$. The attention matrix
# is $A = \operatorname{softmax}(QK^\top/\sqrt{D})$, of size $N\times M$.

# %% [markdown]
# ## Setup
#
# `BIG = True` extends the measurements of section 5 from $N \le 2048$ to $N = 8192$ (dense
# attention then needs about 1 GB for its scores and the section takes a minute or two longer).

# %%
import math
import sys

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from tqdm.auto import tqdm

import attnkit
from attnkit import dense_attention, lowrank
from attnkit.measure import time_call
from attnkit.notebook import one_thread, setup

setup(seed=0)

# %%
BIG = False  # True: time and memory up to N = 8192 in section 5

# %% [markdown]
# ## 1. How low is the rank of an attention matrix?
#
# A matrix of rank $r$ can be written exactly with $r$ columns' worth of information. The
# singular values $\sigma_1 \ge \sigma_2 \ge \dots$ say how close to low rank a matrix is: the
# best rank-$r$ approximation (the truncated SVD) has error
#
# $$
# \min_{\operatorname{rank} \tilde A \le r} \lVert A - \tilde A\rVert_F^2 = \sum_{i > r} \sigma_i^2 .
# $$
#
# The score matrix $S = QK^\top/\sqrt D$ has rank at most $D$, but the softmax applies $\exp$ to
# each entry, and an elementwise exponential can raise the rank all the way to $N$. So the rank
# of $A$ depends on the inputs. We build three kinds of input sequences of length $N = 512$ and
# width $d = 64$, pass each through random query and key projections $W_Q, W_K \in
# \mathbb{R}^{d\times D}$ with $D = 32$, and compare the spectra of the resulting $A$:
#
# * **smooth**: each of the $d$ channels is a sum of three slow sinusoids with random phases, so
#   neighbouring positions carry nearly the same vector;
# * **periodic**: a random pattern of length 16 repeated $N/16$ times;
# * **random**: independent Gaussian vectors, the contrast case.
#
# All three are scaled to the same per-entry variance, so the score scale is comparable.

# %%
N1, d_model, D1 = 512, 64, 32


def smooth_inputs(N, d, gen):
    """(N, d): each channel a sum of three slow sinusoids with random phases."""
    t = torch.linspace(0, 1, N).unsqueeze(1)  # (N, 1)
    freq = torch.randint(1, 4, (3, 1, d), generator=gen).float()  # (3, 1, d) cycles over the sequence
    phase = 2 * math.pi * torch.rand(3, 1, d, generator=gen)
    return torch.sin(2 * math.pi * freq * t + phase).sum(0)  # (N, d)


def periodic_inputs(N, d, gen, period=16):
    """(N, d): one random pattern of `period` rows, repeated."""
    return torch.randn(period, d, generator=gen).repeat(N // period, 1)  # (N, d)


def random_inputs(N, d, gen):
    return torch.randn(N, d, generator=gen)


def attention_matrix(x, gen, D=D1):
    """A = softmax((x W_Q)(x W_K)ᵀ / sqrt(D)) for x (N, d) standardised, W_Q, W_K (d, D) random."""
    x = (x - x.mean()) / x.std()
    w_q, w_k = (torch.randn(x.shape[1], D, generator=gen, dtype=x.dtype) / math.sqrt(x.shape[1])
                for _ in range(2))
    return torch.softmax((x @ w_q) @ (x @ w_k).T / math.sqrt(D), dim=-1)  # (N, N)


gen = torch.Generator().manual_seed(0)
inputs = {"smooth": smooth_inputs(N1, d_model, gen),
          "periodic": periodic_inputs(N1, d_model, gen),
          "random": random_inputs(N1, d_model, gen)}
A_of = {name: attention_matrix(x.double(), gen.manual_seed(1)) for name, x in inputs.items()}
sv = {name: torch.linalg.svdvals(A) for name, A in A_of.items()}


def rank_for(sigma, energy):
    """Smallest r whose top-r singular values hold `energy` of the squared Frobenius norm."""
    cum = torch.cumsum(sigma ** 2, 0) / (sigma ** 2).sum()
    return int((cum < energy).sum()) + 1


print(f"N = {N1}, d = {d_model}, D = {D1}; numerical rank uses tolerance 1e-8·σ₁")
print(f"{'input':<9} {'σ₂/σ₁':>7} {'σ₁₇/σ₁':>8} {'σ₆₅/σ₁':>8} {'r(99%)':>7} {'r(99.9%)':>9} "
      f"{'num. rank':>10}")
for name, s in sv.items():
    print(f"{name:<9} {s[1] / s[0]:7.3f} {s[16] / s[0]:8.1e} {s[64] / s[0]:8.1e} {rank_for(s, 0.99):7d} "
          f"{rank_for(s, 0.999):9d} {int((s > 1e-8 * s[0]).sum()):10d}")

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.3))
for name, s in sv.items():
    ax1.semilogy(np.arange(1, N1 + 1), (s / s[0]).numpy(), lw=1.8, label=name)
ax1.axvline(D1, color="grey", ls=":", lw=1)
ax1.text(D1 + 5, 1e-2, f"D = {D1}", color="grey")
ax1.set(xlabel="index i", ylabel="σᵢ / σ₁ (log scale)", ylim=(1e-17, 2),
        title=f"Singular values of A = softmax(QKᵀ/√D), N = {N1}")
ax1.legend()
for ax, name in zip([ax2], ["smooth"]):
    im = ax.imshow(A_of[name].numpy(), cmap="viridis")
    ax.set(title=f"A for the {name} input", xlabel="key j", ylabel="query i")
    fig.colorbar(im, ax=ax, fraction=0.046)
fig.tight_layout()
plt.show()

# %% [markdown]
# The periodic input has only 16 distinct rows, so $A$ has at most 16 distinct rows and
# columns: its rank is exactly 16 or less, and the curve drops to rounding level right after.
# The smooth input is not exactly low rank, but its singular values fall by many orders of
# magnitude within the first few dozen: a rank-$k$ matrix with $k \ll N$ reproduces it almost
# exactly. The random input decays far more slowly, because each query and key is unrelated to
# its neighbours. Real sequences (text, audio, images) sit between the smooth and the random
# cases; the Linformer paper's motivation is that the attention matrices of trained models
# have spectra that fall quickly, so most of $A$'s energy is in a few directions.
#
# (The seed text of this chapter describes Linformer as "factoring the full self-attention
# matrix into two matrices using singular value decomposition". That is the motivation, not
# the method: computing an SVD of $A$ would need $A$, which is exactly what we want to avoid.
# Linformer never forms $A$; it projects $K$ and $V$ before the softmax, as the next section
# shows.)

# %% [markdown]
# ## 2. Linformer: project the keys and values to $k$ rows
#
# The lecture notes describe it in one line: stack the $N$ keys as a $d\times N$ matrix, multiply
# by an $N\times K$ matrix, and the $K$ columns of the result are the representative keys, each
# a linear combination of all the keys. Same for the values. In our notation, with $E, F \in
# \mathbb{R}^{k\times M}$:
#
# $$
# \operatorname{Linformer}(Q, K, V) = \operatorname{softmax}\!\Big(\frac{Q\,(EK)^\top}{\sqrt D}\Big)\,(FV),
# \qquad EK \in \mathbb{R}^{k\times D},\; FV \in \mathbb{R}^{k\times D_v}.
# $$
#
# The score matrix is $N\times k$ instead of $N\times M$; cost $O(NkD + kMD)$ time and $O(Nk)$
# memory. Since $Q(EK)^\top = (QK^\top)E^\top$, it is the full score matrix with its $M$ columns
# mixed down to $k$, which is how `linformer_reference` computes it. In the paper $E$ and $F$
# are learned; the kit's default draws them as Gaussian matrices with entries
# $\mathcal N(0, 1/k)$ (`random_projection`), which is also how `LinformerProjection`
# initialises its parameters.

# %%
torch.manual_seed(0)
B, H, N, D = 2, 4, 256, 32
q, k, v = (torch.randn(B, H, N, D, dtype=torch.float64) for _ in range(3))
proj_len = 32
E, F = lowrank.random_projection(proj_len, N, seed=0, dtype=torch.float64)
k_proj, v_proj = E @ k, F @ v  # (k, M) @ (B, H, M, D) -> (B, H, k, D)
print("E, F:", tuple(E.shape), " EK:", tuple(k_proj.shape), " FV:", tuple(v_proj.shape))
out = lowrank.linformer(q, k, v, proj_len=proj_len, seed=0)
print("out:", tuple(out.shape), "(one row per query, as in dense attention)")
print("max |linformer - reference| =",
      f"{(out - lowrank.linformer_reference(q, k, v, proj_len=proj_len, seed=0)).abs().max():.1e}")
eye = torch.eye(N, dtype=torch.float64)
print("with k = M and E = F = I:   max |linformer - dense| =",
      f"{(lowrank.linformer(q, k, v, E=eye, F=eye) - dense_attention(q, k, v)).abs().max():.1e}")
print("largest tensor, linformer:", tuple(attnkit.largest_intermediate(
    lowrank.linformer, q, k, v, E=E, F=F).shape),
      "  dense:", tuple(attnkit.largest_intermediate(dense_attention, q, k, v).shape))

# %% [markdown]
# ### Error against $k$
#
# How much does the output change when $M$ keys become $k$? We measure the relative error
# $\lVert O_k - O\rVert_F / \lVert O\rVert_F$ of the output against dense attention, on the
# smooth and random inputs of section 1 (here $Q = XW_Q$, $K = XW_K$, $V = XW_V$), for three
# ways of building the $k$ rows:
#
# * **Linformer, random $E, F$** (untrained, as initialised);
# * **pooling**: $E = F =$ the averaging matrix of runs of $s = M/k$ positions (section 4);
# * **best rank $k$**: the truncated SVD of $A$, times $V$. This is not an efficient method (it
#   needs $A$); it is the floor that no rank-$k$ method can beat in this norm.
#
# The random projection is averaged over five draws of $E, F$.

# %%
def qkv_from(x, gen, D=D1):
    x = (x - x.mean()) / x.std()
    w_q, w_k, w_v = (torch.randn(x.shape[1], D, generator=gen, dtype=x.dtype) / math.sqrt(x.shape[1])
                     for _ in range(3))
    return [(x @ w)[None, None] for w in (w_q, w_k, w_v)]  # three (1, 1, N, D)


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


ks = [4, 8, 16, 32, 64, 128, 256, 512]
errors = {}
for name in ["smooth", "random"]:
    qx, kx, vx = qkv_from(inputs[name].double(), gen.manual_seed(1))
    exact = dense_attention(qx, kx, vx)
    A = torch.softmax(qx @ kx.transpose(-2, -1) / math.sqrt(D1), dim=-1)[0, 0]  # (N, N)
    U, S, Vh = torch.linalg.svd(A)
    for kk in ks:
        lin = np.mean([rel_err(lowrank.linformer(qx, kx, vx, proj_len=kk, seed=s), exact)
                       for s in range(5)])
        pool = rel_err(lowrank.compressed(qx, kx, vx, stride=N1 // kk), exact)
        best = rel_err((U[:, :kk] * S[:kk]) @ Vh[:kk] @ vx[0, 0], exact[0, 0])
        errors[name, kk] = (lin, pool, best)

print(f"{'k':>5} | {'smooth: linformer':>17} {'pooling':>8} {'best':>8} | "
      f"{'random: linformer':>17} {'pooling':>8} {'best':>8}")
for kk in ks:
    print(f"{kk:>5} | {errors['smooth', kk][0]:>17.3f} {errors['smooth', kk][1]:>8.1e} "
          f"{errors['smooth', kk][2]:>8.1e} | {errors['random', kk][0]:>17.3f} "
          f"{errors['random', kk][1]:>8.1e} {errors['random', kk][2]:>8.1e}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4.3), sharey=True)
for ax, name in zip(axes, ["smooth", "random"]):
    for i, (label, style) in enumerate([("Linformer, random E, F (5 draws)", "o-"),
                                        ("pooling, s = M/k", "s-"),
                                        ("best rank k (truncated SVD of A)", "k--")]):
        ax.loglog(ks, [max(errors[name, kk][i], 1e-16) for kk in ks], style, ms=4, label=label)
    ax.set(xlabel="projected length k", ylabel="relative output error",
           title=f"{name} input, N = M = {N1}, D = {D1}")
    ax.set_xticks(ks, [str(kk) for kk in ks])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
axes[0].legend(fontsize=8)
fig.suptitle("Error of attending to k projected keys and values instead of M", fontsize=12)
fig.tight_layout()
plt.show()

# %% [markdown]
# Three lessons from the table and the plot:
#
# * **The floor follows the spectrum.** The best rank-$k$ error on the smooth input collapses
#   within a few dozen directions, as section 1 predicted; on the random input it falls slowly.
# * **Pooling is excellent on smooth inputs** and poor on random ones: averaging neighbours
#   loses nothing when neighbours are alike, and everything when they are not.
# * **An untrained random projection is not an approximation of dense attention.** Its error
#   is *above* 1 (worse than answering zero) and only falls to about 1 at $k = M$. Each row of
#   $E$ has squared norm about $M/k$, so $EK$ and $FV$ are random mixtures of all keys and
#   values, inflated by $\sqrt{M/k}$; the softmax over $Q(EK)^\top$ is a different attention,
#   not a noisy copy of the dense one. This is why Linformer *learns* $E$ and $F$ with the rest of the model; its claim
#   is that a trained model with projected keys reaches accuracy comparable to a dense one, not
#   that a random projection approximates a given attention layer.

# %% [markdown]
# ## 3. Why shorten the keys and not the queries?
#
# The lecture notes ask this directly: why not also choose representative *queries*? Because
# the output has one row per query. Attention maps $N$ queries to $N$ outputs,
#
# $$
# \underbrace{\operatorname{softmax}(Q K^\top)}_{N\times M}\;\underbrace{V}_{M\times D_v}
# \;=\; \underbrace{O}_{N\times D_v},
# $$
#
# and the key length $M$ only appears on the inner dimension, where it is summed away. Shorten
# the keys and values to $k$ and $O$ is still $N\times D_v$. Shorten the queries to $k$ and $O$
# is $k\times D_v$: the output sequence itself is shorter.
#
# The lecture notes' verdict is "case by case". If the whole sequence gets a single label
# (sentiment of a sentence, class of an image) a shorter output is fine, since it is reduced to
# one vector anyway. If every position needs its own output (tagging every word, a
# language model predicting every next token, the next layer of a transformer), there is
# nothing to put in the missing rows.

# %%
torch.manual_seed(0)
q, k, v = (torch.randn(1, 4, 256, 32) for _ in range(3))
E, F = lowrank.random_projection(32, 256, seed=0)
shapes = {
    "dense            softmax(Q Kᵀ) V": dense_attention(q, k, v),
    "keys shortened   softmax(Q (EK)ᵀ) (FV)": dense_attention(q, E @ k, F @ v),
    "queries shortened softmax((EQ) Kᵀ) V": dense_attention(E @ q, k, v),
}
for label, o in shapes.items():
    print(f"{label:<40} -> output {tuple(o.shape)}")

# %%
# A per-position task needs N outputs: the residual connection of a transformer block is x + attn(x).
x = torch.randn(1, 4, 256, 32)
print("residual with shortened keys:   ", tuple((x + dense_attention(x, E @ x, F @ x)).shape))
try:
    x + dense_attention(E @ x, x, x)
except RuntimeError as err:
    print("residual with shortened queries: RuntimeError:", str(err).split("\n")[0])
# A single-label task pools the outputs to one vector: both shapes can do that.
print("pooled to one vector for a single label:",
      tuple(dense_attention(E @ x, x, x).mean(-2).shape), tuple(dense_attention(x, x, x).mean(-2).shape))

# %% [markdown]
# ## 4. Compressed attention: a Linformer with a pooling matrix
#
# The lecture notes' first way of choosing representative keys is *compressed attention* (Liu
# et al. 2018, the model that generated Wikipedia articles): run a convolution along the long
# sequence of keys with stride $s$, so that it becomes $s$ times shorter, and use the result as
# the keys (and the same for values). With a kernel of width $s$ whose weights all equal
# $1/s$, the convolution averages each run of $s$ positions, which is a linear map of the
# sequence:
#
# $$
# P \in \mathbb{R}^{\lceil M/s\rceil \times M}, \qquad P_{rj} = \begin{cases} 1/s & rs \le j < rs+s \\
# 0 & \text{otherwise} \end{cases}
# \qquad\Longrightarrow\qquad \operatorname{compressed}(Q,K,V) = \operatorname{Linformer}(Q,K,V; E=F=P).
# $$
#
# So compressed attention is the special case of Linformer whose projection is local and fixed
# (or, with a learned convolution, local and learned per channel), while Linformer's $E$ mixes
# all positions. The kit's `compressed` pools by a reshape and a sum; below we check it against
# Linformer with the explicit pooling matrix, and against `CompressedKV`, the module whose
# `Conv1d` is initialised to the average.

# %%
torch.manual_seed(0)
M, s = 24, 4
P = lowrank.pooling_matrix(M, s)
print(f"pooling matrix for M = {M}, s = {s}: shape {tuple(P.shape)}, row sums {P.sum(-1).tolist()}")

q, k, v = (torch.randn(2, 4, 256, 32, dtype=torch.float64) for _ in range(3))
for s in [2, 4, 8, 16]:
    Pm = lowrank.pooling_matrix(256, s, dtype=torch.float64)
    diff = (lowrank.compressed(q, k, v, stride=s) - lowrank.linformer(q, k, v, E=Pm, F=Pm)).abs().max()
    conv = lowrank.CompressedKV(32, s).double()
    with torch.no_grad():
        diff_conv = (conv(q, k, v) - lowrank.compressed(q, k, v, stride=s)).abs().max()
    print(f"s = {s:>2}: keys {256} -> {Pm.shape[0]:>3}   max |compressed - linformer(E=F=P)| = "
          f"{diff:.1e}   max |CompressedKV (conv, average init) - compressed| = {diff_conv:.1e}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 2.8))
E_show, _ = lowrank.random_projection(6, M, seed=0)
for ax, (mat, title) in zip(axes, [(P, f"compressed: pooling matrix P, s = {4}"),
                                   (E_show, "Linformer: random E (6 × 24)")]):
    lim = float(mat.abs().max())
    im = ax.imshow(mat.numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    ax.set(title=title, xlabel="key position j", ylabel="projected row r")
    fig.colorbar(im, ax=ax)
fig.suptitle("Two (k × M) projections of the keys: local and fixed, or global and random", fontsize=11)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 5. Time and memory against $N$, measured
#
# With $k$ fixed, Linformer's scores are $N\times k$: time and memory should grow linearly in
# $N$, against $N^2$ for dense attention. Compressed attention with a fixed stride keeps
# $M/s$ keys, which still grows with $N$, so it is $s$ times cheaper than dense but still
# quadratic. We measure at $B = 1$, $H = 4$, $D = 64$, float32, on one thread (cleaner curves on
# a small shared machine): the median of a few calls after a warm-up, and the peak memory of one
# call (`attnkit.peak_memory`). $E$ and $F$ are drawn once per length, outside the timed call, as
# a trained model would hold them.

# %%
Ns_time = [256, 512, 1024, 2048] + ([4096, 8192] if BIG else [])
K_LIN, S_COMP = 128, 8
methods = {
    "dense": lambda q, k, v, E, F: dense_attention(q, k, v),
    f"linformer k={K_LIN}": lambda q, k, v, E, F: lowrank.linformer(q, k, v, E=E, F=F),
    f"compressed s={S_COMP}": lambda q, k, v, E, F: lowrank.compressed(q, k, v, stride=S_COMP),
}


@torch.no_grad()
def measure(fn, N):
    q, k, v = (torch.randn(1, 4, N, 64) for _ in range(3))
    E, F = lowrank.random_projection(K_LIN, N, seed=0)
    peak = attnkit.peak_memory(fn, q, k, v, E, F)  # also the warm-up call
    seconds = float(np.median([time_call(fn, q, k, v, E, F) for _ in range(5 if N <= 1024 else 3)]))
    return seconds, peak


timing = {name: {} for name in methods}
with one_thread():
    for N in tqdm(Ns_time, desc="timing", file=sys.stdout):
        for name, fn in methods.items():
            timing[name][N] = measure(fn, N)

print(f"{'method':<16}" + "".join(f"{'N=' + str(N):>20}" for N in Ns_time))
for name, rows in timing.items():
    print(f"{name:<16}" + "".join(f"{rows[N][0] * 1e3:>9.2f} ms {rows[N][1] / 2**20:>6.1f} MiB"
                                  for N in Ns_time))

# %%
def fitted_slope(rows, index):
    Ns_fit = [N for N in sorted(rows) if N >= 512]
    return np.polyfit(np.log(Ns_fit), np.log([rows[N][index] for N in Ns_fit]), 1)[0]


fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
for name, rows in timing.items():
    ax1.loglog(Ns_time, [rows[N][0] * 1e3 for N in Ns_time], "o-", ms=4,
               label=f"{name} (slope {fitted_slope(rows, 0):.2f})")
    ax2.loglog(Ns_time, [rows[N][1] / 2**20 for N in Ns_time], "o-", ms=4,
               label=f"{name} (slope {fitted_slope(rows, 1):.2f})")
for ax, unit, title in [(ax1, "time per call (ms)", "Time, one thread"),
                        (ax2, "peak memory (MiB)", "Peak memory during the call")]:
    ax.set(xlabel="sequence length N", ylabel=unit, title=f"{title}, B=1, H=4, D=64, float32")
    ax.set_xticks(Ns_time, [str(n) for n in Ns_time])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.legend(fontsize=8, title="fitted from N = 512 on", title_fontsize=8)
fig.tight_layout()
plt.show()

N_top = Ns_time[-1]
for name in list(methods)[1:]:
    print(f"{name:<16} at N = {N_top}: {timing['dense'][N_top][0] / timing[name][N_top][0]:5.1f}x faster, "
          f"{timing['dense'][N_top][1] / timing[name][N_top][1]:5.1f}x less peak memory than dense")

# %% [markdown]
# On log-log axes, dense attention's memory has slope close to 2 (the $N\times N$ scores) and
# Linformer's close to 1 (the $N\times k$ scores plus the inputs-sized projections).
# Compressed attention has dense attention's slope, shifted down by a factor of about $s$.
# Times on a CPU are noisier: at small $N$ fixed overheads pull the slopes down, and once dense
# attention's $N\times N$ scores no longer fit in the CPU's caches its time can grow faster
# than $N^2$ over a short range. The ordering is what to read. Linformer's advantage grows
# with $N$ because $k$ stays fixed; at $N \le k$ it has no advantage at all.
#
# ## Summary
#
# * Attention matrices on structured inputs have quickly decaying singular values, so a few
#   directions carry most of $A$; on unstructured inputs they do not.
# * Linformer projects the $M$ keys and values to $k$ rows with $(k\times M)$ matrices $E, F$:
#   $N\times k$ scores, linear in $N$. Untrained, random $E, F$ define a different attention
#   rather than approximating the dense one; the projections are learned.
# * Only keys and values are shortened, because the output has one row per query; shortening
#   the queries is acceptable only when the whole sequence gets a single output.
# * Compressed attention (pooling, or a strided convolution) is a Linformer whose projection is
#   a local averaging matrix; with a fixed stride it stays quadratic, $s$ times cheaper.
#
# The next chapter takes the other road in the lecture notes' summary: keep all keys, but
# change the *order* of the matrix products.
