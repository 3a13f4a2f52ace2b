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
# # Chapter 2 — Fixed sparse patterns
#
# Chapter 1 ended with a bill: exact attention touches all $N^2$ query–key pairs. The cheapest way
# to pay less is to decide *in advance*, from what we know about the data, which pairs are worth
# computing, and to skip the rest. Neighbouring words usually matter more than distant ones;
# pixels in the same row or column of an image are related; a few summary tokens can collect and
# broadcast information for everybody. The lecture notes call this "skip some calculations with
# human knowledge". A pattern chosen this way does not look at the data, so it is called *fixed*.
#
# This chapter covers:
#
# 1. the patterns drawn as mask grids: local, dilated, strided, fixed, global, Longformer, BigBird;
# 2. what each pattern costs: how many keys each query sees as $N$ grows;
# 3. what the papers report, from the result tables in the lecture notes, and what those tables
#    do and do not show;
# 4. "different heads use different patterns": one mask function that depends on the head;
# 5. how the banded, reordered and block-sparse paths avoid building an $N\times N$ matrix
#    (FLOPs and the largest tensor, counted), and why a tile-based path needs the right tiles;
# 6. BigBird's graph argument with `networkx`: how many layers information needs to cross the
#    sequence, with and without random and global connections;
# 7. time and peak memory of every pattern against $N$, measured on this CPU;
# 8. on the GPU: FlexAttention, block masks and the 128-token tile.
#
# **Notation.** As in chapter 1: $(B, H, N, D)$ tensors, query $i$, key $j$, and the offset
# $d = i - j$. Pattern hyperparameters: window $w$, dilation $\delta$, stride $s$, number of global
# tokens $g$, number of random blocks $r$, block size $b$.

# %% [markdown]
# ## Setup
#
# `BIG = True` extends the measurements of section 7 to longer sequences (sparse patterns up to
# $N = 16384$, dense up to $N = 8192$; a few minutes more and about 3 GB of memory) and the graph
# experiment of section 6 to $N = 2048$.

# %%
import functools
import math
import sys

import matplotlib
import matplotlib.pyplot as plt
import networkx as nx
import numpy as np
import torch
from tqdm.auto import tqdm

import attnkit
from attnkit import fixed, materialize
from attnkit.blocksparse import block_layout, blocksparse_attention
from attnkit.measure import time_call
from attnkit.notebook import one_thread, setup
from attnkit.plot import plot_mask, plot_masks

setup(seed=0)

# %%
BIG = False  # True: longer sequences in sections 6 and 7


def with_title(fig, title):
    """Add a figure title above a grid of panels without overlapping their titles."""
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    return fig

# %% [markdown]
# ## 1. The patterns, drawn
#
# Every pattern in this chapter is a mask function `mask_mod(b, h, q_idx, kv_idx)` (chapter 1,
# section 7) that returns True where query $i$ may attend to key $j$. The kit's factories in
# `attnkit.fixed` build them from their hyperparameters:
#
# | pattern | query $i$ sees key $j$ when | idea | source |
# |---|---|---|---|
# | local (truncated) | $\lvert d\rvert \le w$ | neighbours carry most of the information | lecture notes; Sparse Transformer, Longformer |
# | dilated | $\lvert d\rvert \le w\delta$ and $\delta \mid d$ | same number of keys, $\delta$ times the reach | Longformer |
# | strided | $0 \le d$ and ($d < s$ or $s \mid d$) | the last $s$ positions, plus every $s$-th one further back | Sparse Transformer |
# | fixed | $j \le i$ and ($\lfloor j/s\rfloor = \lfloor i/s\rfloor$ or $j \bmod s \ge s - c$) | own block of $s$, plus the last $c$ "summary" positions of every earlier block | Sparse Transformer |
# | global | $i \in G$ or $j \in G$, $\lvert G\rvert = g$ | a few tokens see everybody and are seen by everybody | lecture notes; Longformer, BigBird |
# | Longformer | (dilated) window or global | local detail plus task-chosen global tokens | Beltagy et al. 2020 |
# | BigBird | on blocks of $b$: window of blocks, global blocks, $r$ random blocks per query block | Longformer plus random long-range links | Zaheer et al. 2020 |
#
# Strided and fixed are causal (they come from autoregressive models of images, text and
# music); the others are drawn bidirectional here. The global pattern is written in two lines
# below; everything else comes from the kit.

# %%
def global_mask(g):
    """The first g positions see every key and are seen by every query."""
    def mask_mod(b, h, q_idx, kv_idx):
        return (q_idx < g) | (kv_idx < g)
    return mask_mod


N_plot = 32
patterns = {
    "local, w=2": fixed.local_mask(2),
    "dilated, w=2, δ=3": fixed.dilated_mask(2, 3),
    "strided, s=4": fixed.strided_mask(4),
    "fixed, s=8, c=2": fixed.fixed_mask(8, 2),
    "global, g=2": global_mask(2),
    "Longformer, w=2, g=2": fixed.longformer_mask(2, 2),
    "BigBird, b=4, r=1": fixed.bigbird_mask(N_plot, block=4, window_blocks=1, global_blocks=1,
                                            random_blocks=1, seed=0),
    "dense (causal)": attnkit.causal,
}
fig = plot_masks(patterns, N=N_plot, ncols=4, size=3.4)
with_title(fig, f"Fixed sparse patterns at N = {N_plot} (filled: query i attends to key j)")
plt.show()

# %% [markdown]
# A few things to read off the grids:
#
# * **local** is a band around the diagonal: $2w+1$ keys per query, whatever $N$ is.
# * **dilated** keeps the same number of keys but spaces them $\delta$ apart, so the band is
#   $\delta$ times wider with holes in it. Stacking layers with different dilations covers the
#   holes (the same trick as dilated convolutions).
# * **strided** is a short causal band plus diagonal lines every $s$ positions. Read a row: the
#   query sees its last $s$ neighbours and then jumps back in steps of $s$.
# * **fixed** is a staircase of $s\times s$ causal blocks plus vertical stripes: the last $c$
#   positions of each block are "summary" positions that every later query reads.
# * **global** is a cross: $g$ full rows and $g$ full columns. On its own it is useless (the other
#   tokens only see the $g$ global ones); it is always combined with a window.
# * **Longformer** is window plus cross; **BigBird** works on $b\times b$ blocks: a band of blocks,
#   one global block row and column, and one random block in every block row.
#
# BigBird's paper draws its pattern from three building blocks (the lecture notes reproduce the
# figure: random attention with $r=2$, sliding window with $w=3$, global with $g=2$, and their
# union). The same picture from the kit's `bigbird_mask` with blocks of one token (the
# kit's random and global panels also keep the diagonal $j = i$, which is harmless):

# %%
N_bb = 16
building_blocks = {  # window_blocks=0 keeps only the diagonal j = i
    "random, r=2": fixed.bigbird_mask(N_bb, 1, window_blocks=0, global_blocks=0,
                                      random_blocks=2, seed=3),
    "window, w=3": fixed.bigbird_mask(N_bb, 1, window_blocks=1, global_blocks=0,
                                      random_blocks=0),
    "global, g=2": fixed.bigbird_mask(N_bb, 1, window_blocks=0, global_blocks=2, random_blocks=0),
    "all three": fixed.bigbird_mask(N_bb, 1, window_blocks=1, global_blocks=2,
                                    random_blocks=2, seed=3),
}
fig = plot_masks(building_blocks, N=N_bb, ncols=4, size=3.2)
for ax in fig.axes:
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
with_title(fig, f"BigBird's building blocks at token level (N = {N_bb})")
plt.show()

# %% [markdown]
# ## 2. What each pattern costs
#
# The work of attention is proportional to the number of visible pairs. For a fixed pattern
# that is $N$ times the average number of keys a query sees, so the question is how that number
# grows with $N$:
#
# $$
# \text{local, dilated: } 2w+1, \qquad
# \text{Longformer: } \approx 2w+1+g \;(\text{plus } g \text{ rows of } N), \qquad
# \text{BigBird: } \approx (2w_b+1+g_b+r)\,b \;(\text{plus } g_b b \text{ rows of } N),
# $$
#
# all constant in $N$: these patterns cost $O(N)$. Strided and fixed are different. Row $i$ of
# strided sees $\min(i+1, s)$ recent keys plus about $i/s$ older ones, so the average over rows
# is about $s + N/(2s)$; fixed, with $c$ summary keys per earlier block, averages about
# $s/2 + cN/(2s)$. For a fixed stride both grow in proportion to $N$ (quadratic work with a small
# constant). The sum $s + N/(2s)$ is smallest for $s \approx \sqrt{N/2}$: with a stride that grows
# like $\sqrt N$, a query sees $O(\sqrt N)$ keys and the whole layer costs $O(N\sqrt N)$, which is
# why the Sparse Transformer paper (Child et al. 2019) ties the stride to $\sqrt N$.
#
# The settings below are used for the rest of the chapter: fixed windows and blocks for the
# $O(N)$ patterns, and $s = \sqrt N$ (rounded to a power of two) with $c = 4$ summary keys for
# strided and fixed. `setup(name, N)` returns a pattern's fast function, its keyword arguments
# and its mask function at length $N$.

# %%
PATTERNS = ["dense", "local", "dilated", "strided", "fixed", "longformer", "bigbird"]
SETTINGS = {
    "dense": "all N keys", "local": "w=64", "dilated": "w=32, δ=2", "strided": "s=√N",
    "fixed": "s=√N, c=4", "longformer": "w=64, g=16", "bigbird": "b=64, w_b=1, g_b=1, r=2",
}


def sqrt_stride(N):
    """The power of two closest to √N."""
    return 2 ** round(math.log2(math.sqrt(N)))


def setup(name, N):
    """(fast function, keyword arguments, mask function) of a pattern at length N."""
    s = sqrt_stride(N)
    return {
        "dense": (attnkit.dense_attention, {}, attnkit.full),
        "local": (fixed.local, dict(window=64), fixed.local_mask(64)),
        "dilated": (fixed.dilated, dict(window=32, dilation=2), fixed.dilated_mask(32, 2)),
        "strided": (fixed.strided, dict(stride=s), fixed.strided_mask(s)),
        "fixed": (fixed.fixed, dict(stride=s, summary=4), fixed.fixed_mask(s, 4)),
        "longformer": (fixed.longformer, dict(window=64, global_tokens=16),
                       fixed.longformer_mask(64, 16)),
        "bigbird": (fixed.bigbird, dict(block=64, window_blocks=1, global_blocks=1,
                                        random_blocks=2, seed=0),
                    fixed.bigbird_mask(N, 64, 1, 1, 2, seed=0)),
    }[name]


@functools.lru_cache(maxsize=None)
def mask_grid(name, N):
    """The (N, N) boolean mask of a pattern (kept, since several sections reuse it)."""
    return materialize(setup(name, N)[2], N)


def keys_per_query(name, N):
    """Average number of keys a query sees (visible pairs / N)."""
    return mask_grid(name, N).sum().item() / N


Ns_keys = [256, 1024, 4096]
kpq = {name: [keys_per_query(name, N) for N in Ns_keys] for name in PATTERNS}

print(f"{'pattern':<11} {'settings':<24}" + "".join(f"{'N=' + str(N):>9}" for N in Ns_keys)
      + f"{'ratio 4096/1024':>17}   density at 4096")
for name, row in kpq.items():
    print(f"{name:<11} {SETTINGS[name]:<24}" + "".join(f"{x:>9.1f}" for x in row)
          + f"{row[2] / row[1]:>17.2f}   {row[2] / Ns_keys[2]:.1%}")

# %% [markdown]
# The table gives the average number of visible keys per query. Local, dilated and BigBird are
# flat once $N$ is larger than the pattern, and Longformer's average creeps up only because its
# 16 global rows see all $N$ keys. Dense grows in proportion to $N$ (ratio 4 from 1024 to 4096).
# Strided and fixed, with $s = \sqrt N$, sit in between with a ratio of about 2, i.e.
# $\sqrt{4}$. The last column is the density, the fraction of the $N^2$ pairs that a perfect
# sparse kernel would compute.
#
# The registry holds the same facts for every variant (chapter 1): its cost in the kit's symbols
# and its paper.

# %%
for name in PATTERNS[1:]:
    entry = attnkit.VARIANTS[name]
    print(f"{name:<11} {entry.cost:<52} {entry.paper.split(',')[0]}")

# %% [markdown]
# ## 3. What the papers report
#
# The lecture notes reproduce result tables from the three papers. They are quoted here as they
# appear there, then put in context; the derived numbers (differences, ratios) are computed in
# the cell after the tables.
#
# **Sparse Transformer** (Child et al. 2019), density modelling, bits per byte (lower is better):
#
# | data | model | bits per byte |
# |---|---|---|
# | CIFAR-10 | PixelCNN | 3.03 |
# | | PixelCNN++ | 2.92 |
# | | Image Transformer | 2.90 |
# | | PixelSNAIL | 2.85 |
# | | **Sparse Transformer 59M (strided)** | **2.80** |
# | Enwik8 | Deeper Self-Attention (Al-Rfou et al. 2018) | 1.06 |
# | | Transformer-XL 88M | 1.03 |
# | | Transformer-XL 277M | 0.99 |
# | | **Sparse Transformer 95M (fixed)** | **0.99** |
# | ImageNet 64×64 | PixelCNN | 3.57 |
# | | Parallel Multiscale | 3.7 |
# | | Glow | 3.81 |
# | | SPN 150M | 3.52 |
# | | **Sparse Transformer 152M (strided)** | **3.44** |
# | Classical music, 5 s at 12 kHz | **Sparse Transformer 152M (strided)** | **1.97** |
#
# **Longformer** (Beltagy et al. 2020). Large models on enwik8, test bits per character
# (the paper's Table 3):
#
# | model | parameters | test BPC |
# |---|---|---|
# | Transformer-XL (18 layers) | 88M | 1.03 |
# | Sparse (Child et al. 2019) | ≈ 100M | 0.99 |
# | Transformer-XL (24 layers) | 277M | 0.99 |
# | Adaptive (Sukhbaatar et al. 2019) | 209M | 0.98 |
# | Compressive (Rae et al. 2020) | 277M | 0.97 |
# | **Longformer** | 102M | 0.99 |
#
# Leaderboard results (Table 9; higher is better):
#
# | model | WikiHop | TriviaQA |
# |---|---|---|
# | previous best | 78.3 | 73.3 |
# | Longformer-large | 81.9 | 77.3 |
#
# WikiHop development-set ablations (Table 11), accuracy and change from the first row:
#
# | configuration | accuracy / Δ |
# |---|---|
# | Longformer (seqlen 4,096) | 73.8 |
# | RoBERTa-base (seqlen 512) | 72.4 / −1.4 |
# | Longformer (seqlen 4,096, 15 epochs) | 75.0 / +1.2 |
# | Longformer (seqlen 512, attention: $n^2$) | 71.7 / −2.1 |
# | Longformer (seqlen 512, attention: window) | 68.8 / −5.0 |
# | Longformer (seqlen 2,048) | 73.1 / −0.7 |
# | Longformer (no MLM pretraining) | 73.2 / −0.6 |
# | Longformer (no linear projection) | 72.2 / −1.6 |
# | Longformer (no linear projection, no global attention) | 65.5 / −8.3 |
#
# **BigBird** (Zaheer et al. 2020). Document classification, micro-averaged F1 (Table 6; IMDb and
# Hyperpartisan are averages of 5 runs, with standard deviations):
#
# | | IMDb | Yelp-5 | Arxiv | Patents | Hyperpartisan |
# |---|---|---|---|---|---|
# | examples | 25,000 | 650,000 | 30,043 | 1,890,093 | 645 |
# | classes | 2 | 5 | 11 | 663 | 2 |
# | excess fraction | 0.14 | 0.04 | 1.00 | 0.90 | 0.53 |
# | previous best | 97.4 | 73.28 | 87.96 | 69.01 | 90.6 |
# | RoBERTa | 95.0 ± 0.2 | 71.75 | 87.42 | 67.07 | 87.8 ± 0.8 |
# | BigBird | 95.2 ± 0.2 | 72.16 | 92.31 | 69.30 | 92.2 ± 1.7 |
#
# We read "excess fraction" as the share of documents longer than RoBERTa's 512-token input.

# %%
enwik8 = {  # bits per character, from the tables above: (parameters in millions, BPC)
    "Transformer-XL 88M": (88, 1.03), "Transformer-XL 277M": (277, 0.99),
    "Sparse Transformer (fixed)": (95, 0.99), "Longformer": (102, 0.99),
}
_, bpc_xl = enwik8["Transformer-XL 277M"]
for name in ["Sparse Transformer (fixed)", "Longformer"]:
    params, bpc = enwik8[name]
    print(f"{name:<27} matches Transformer-XL 277M ({bpc} vs {bpc_xl} BPC) with "
          f"{277 / params:.1f}x fewer parameters")

wikihop = {"4096 window+global": 73.8, "512 n^2": 71.7, "512 window": 68.8, "2048": 73.1,
           "no proj.": 72.2, "no proj., no global": 65.5}
print(f"\nWikiHop, at 512 tokens: full n^2 minus window-only = "
      f"{wikihop['512 n^2'] - wikihop['512 window']:.1f} points")
print(f"WikiHop, window+global at 4096 minus n^2 at 512 = "
      f"{wikihop['4096 window+global'] - wikihop['512 n^2']:.1f} points")
print(f"WikiHop, removing global attention on top of the projection = "
      f"{wikihop['no proj., no global'] - wikihop['no proj.']:.1f} points")

datasets = ["IMDb", "Yelp-5", "Arxiv", "Patents", "Hyperpartisan"]
excess = np.array([0.14, 0.04, 1.00, 0.90, 0.53])
roberta = np.array([95.0, 71.75, 87.42, 67.07, 87.8])
bigbird_f1 = np.array([95.2, 72.16, 92.31, 69.30, 92.2])
gain = bigbird_f1 - roberta
print("\nBigBird minus RoBERTa (F1 points):",
      ", ".join(f"{d} {x:+.2f}" for d, x in zip(datasets, gain)))
print(f"correlation between 'excess fraction' and the gain over 5 data sets: "
      f"{np.corrcoef(excess, gain)[0, 1]:.2f}")

# %% [markdown]
# **What the tables show.**
#
# * A sparse pattern does not have to cost quality. On enwik8 the fixed Sparse Transformer and
#   Longformer reach the same bits per character as the 277M-parameter Transformer-XL with about
#   three times fewer parameters (printed above). The Sparse Transformer also beats the earlier
#   image models on CIFAR-10 and ImageNet 64×64 with the strided pattern, whose rows and columns
#   suit two-dimensional data.
# * Long context is what pays. In the WikiHop ablations, the window alone at 512 tokens loses to
#   full attention at 512 tokens, but the window-plus-global model at 4,096 tokens beats both
#   (the three differences are printed above). A sparse pattern is a way to *afford* a longer
#   input, not a free improvement at equal length.
# * Global tokens carry the task. Removing global attention (together with its separate
#   projection) costs the largest drop in the ablation table.
# * BigBird gains most where documents do not fit in 512 tokens: Arxiv and Hyperpartisan, with
#   "excess fractions" of 1.00 and 0.53, gain several F1 points; IMDb and Yelp-5, mostly short,
#   barely move.
#
# **What they do not show.**
#
# * None of these tables measures speed or memory: they say the patterns are good enough, not
#   how much faster they are. Sections 5 and 7 measure that part here.
# * The language-modelling rows are bits per character or byte, a density-modelling metric; the
#   lecture notes point out that the Sparse Transformer was not evaluated on NLP end tasks, and
#   call Transformer-XL's bits-per-character evaluation "not very relevant".
# * The comparisons are between whole systems that differ in more than the attention pattern
#   (size, data, training length, pretraining objective; the lecture notes suspect BigBird of
#   "possible cheating" through its Pegasus pretraining). Only the Longformer ablation varies one
#   thing at a time, and it uses a single data set.
# * A correlation over five data sets is a hint, not evidence, and Hyperpartisan's standard
#   deviation (1.7 over 5 runs on 645 examples) is a sizeable fraction of its gain.
# * The table of BigBird results does not compare BigBird with Longformer; the lecture notes
#   report an ablation in which random attention gives BigBird an advantage of 3–5 % in accuracy
#   over Longformer, the claim that section 6 examines from the graph side.

# %% [markdown]
# ## 4. Different heads, different patterns
#
# After listing local, stride and global attention, the lecture notes ask which one to choose and
# answer: **different heads use different patterns**, that is, use them all. The kit supports
# this directly because a mask function receives the head index `h`. Below, four heads get four
# patterns in one `mask_mod`: a local window, a stride ($d$ a multiple of $s$), global tokens, and
# blocks of $s$ consecutive positions. Selecting by head is a product of booleans, so the
# function still works on whole index grids:
#
# $$
# \text{mask}(h, i, j) = \bigvee_{p} \big[h = p\big] \wedge \text{pattern}_p(i, j).
# $$

# %%
s_heads, w_heads, g_heads = 8, 2, 2
head_patterns = [
    ("local, w=2", fixed.local_mask(w_heads)),
    ("stride, s=8", lambda b, h, i, j: (i - j) % s_heads == 0),
    ("global, g=2", global_mask(g_heads)),
    ("block, s=8", lambda b, h, i, j: i // s_heads == j // s_heads),
]


def per_head_mask(b, h, q_idx, kv_idx):
    """Head p uses head_patterns[p]."""
    keep = torch.zeros((), dtype=torch.bool)
    for p, (_, pattern) in enumerate(head_patterns):
        keep = keep | ((h == p) & pattern(b, h, q_idx, kv_idx))
    return keep


H_demo, N_demo = len(head_patterns), 32
grid = materialize(per_head_mask, N_demo, H=H_demo)  # (1, H, N, N)
print("materialised per-head mask:", tuple(grid.shape))
fig = plot_masks({f"head {p}: {name.split(',')[0]}": grid[0, p]
                  for p, (name, _) in enumerate(head_patterns)}, ncols=4, size=3.2)
with_title(fig, f"One mask_mod, four heads (N = {N_demo}; w = {w_heads}, s = {s_heads}, "
                f"g = {g_heads})")
plt.show()

# %% [markdown]
# The block-sparse path evaluates the same function per head, so each head skips its own empty
# blocks. Check it against the dense reference with the materialised $(B, H, N, N)$ mask, and
# check that head 0 equals the kit's single-pattern `local` on that head alone.

# %%
torch.manual_seed(1)
B, N, D = 2, 256, 32
q, k, v = (torch.randn(B, H_demo, N, D, dtype=torch.float64) for _ in range(3))
out_sparse = blocksparse_attention(q, k, v, mask_mod=per_head_mask, block=32)
mask_full = materialize(per_head_mask, N, B=B, H=H_demo)  # (B, H, N, N)
out_dense = attnkit.dense_attention(q, k, v, mask=mask_full)
out_local = fixed.local(q[:, :1], k[:, :1], v[:, :1], window=w_heads)
print(f"max |block-sparse - dense reference|     = {(out_sparse - out_dense).abs().max():.1e}")
print(f"max |head 0 - fixed.local on head 0 alone| = {(out_sparse[:, :1] - out_local).abs().max():.1e}")

layout = block_layout(per_head_mask, N, block=32, H=H_demo)[0]  # (H, N/32, N/32)
for p, (name, _) in enumerate(head_patterns):
    print(f"head {p} ({name:<12}): {grid[0, p].float().mean():6.1%} of pairs at N=32, "
          f"{layout[p].float().mean():6.1%} of 32x32 blocks at N={N}")

# %% [markdown]
# The last lines count tiles of $32\times32$ at $N = 256$: the stride head, with only one pair in
# eight visible, still touches every tile. Section 5 comes back to this.
#
# Why mix patterns? A single layer with the *stride* head lets position $i$ read positions
# $i \pm s, i \pm 2s, \dots$; the *block* head lets it read its own block. Neither alone connects
# every pair, but one after the other they do: to get from $j$ to $i$, go first within $j$'s
# residue class to the position of $i$'s block that has the same residue as $j$, then within
# $i$'s block to $i$. This is the "head factorization" the lecture notes credit to the Sparse
# Transformer: split the work of one dense head over two sparse ones. The check is a boolean
# matrix product (reachability in two steps):

# %%
N_fact = 64
stride_part = materialize(head_patterns[1][1], N_fact).float()
block_part = materialize(head_patterns[3][1], N_fact).float()
two_steps = (block_part @ stride_part) > 0  # i reads k in its block, k read j in its class
print(f"pairs reachable by the stride head alone: {stride_part.mean():.1%}")
print(f"pairs reachable by the block head alone:  {block_part.mean():.1%}")
print(f"pairs reachable by block after stride:    {two_steps.float().mean():.1%}")
print(f"keys per query per layer: {stride_part.sum(1).mean():.0f} + {block_part.sum(1).mean():.0f}"
      f" = {stride_part.sum(1).mean() + block_part.sum(1).mean():.0f} instead of {N_fact}")

# %% [markdown]
# With $N = s^2$ each head reads $\sqrt N$ keys per query, and two layers connect everything:
# $O(N\sqrt N)$ work instead of $O(N^2)$.

# %% [markdown]
# ## 5. How the sparse paths avoid the $N\times N$ matrix
#
# A pattern with few visible pairs only saves work if the code never touches the others. The
# dense reference builds the whole $(B, H, N, N)$ score tensor and fills the invisible entries
# with $-\infty$: it is exactly as expensive as dense attention. The kit uses three techniques.
#
# **Banded** (`local`, Longformer's window, strided's recent keys). Cut the queries into chunks
# of $c$ consecutive positions. Chunk $n$ only needs keys from $nc - w$ to $nc + c + w$, a slab of
# $L = c + 2w$ keys, so each chunk is a small dense attention of shape $c \times L$:
#
# $$
# \underbrace{(B, H, \tfrac{N}{c}, c, D)}_{\text{query chunks}} \;@\;
# \underbrace{(B, H, \tfrac{N}{c}, D, L)}_{\text{key slabs}}
# \;\longrightarrow\; (B, H, \tfrac{N}{c}, c, L), \qquad
# \text{scores: } B H N (c + 2w) \text{ instead of } B H N^2 .
# $$
#
# The slabs are views (`unfold`) of the padded keys, not copies. The corners of each slab are
# outside the band and get masked, so the banded path computes somewhat more than the $2w+1$
# keys per query it needs; in exchange every step is one large batched matrix product.
#
# **Reordering into dense pieces** (strided, fixed, dilated). Some patterns are dense after a
# reshape.
# Viewing the positions as an $(N/s)\times s$ grid, position $p$ in row $\lfloor p/s\rfloor$ and
# column $p \bmod s$, strided's older keys $j \equiv i \pmod s$ are *the same column* of the grid,
# and fixed's own-block keys are *the same row*. Each is an ordinary causal attention over $N/s$
# or $s$ positions after a `view` (and a transpose for columns). In the same way a dilated
# window is a plain window of $w$ steps inside each residue class mod $\delta$: the kit runs the
# banded path on the $\delta$ class sequences, so its cost does not grow with $\delta$. A
# pattern that is the union of
# disjoint pieces $P_1, P_2, \dots$ is then put together from the pieces' outputs $o_{p,i}$ and
# log-sum-exps $\ell_{p,i} = \log \sum_{j \in P_p} e^{s_{ij}}$:
#
# $$
# o_i = \frac{\sum_p e^{\ell_{p,i}}\, o_{p,i}}{\sum_p e^{\ell_{p,i}}},
# $$
#
# which is exactly the softmax over the union (the same identity lets FlashAttention process
# keys block by block). Strided = causal window of reach $s-1$ + column; fixed = row
# block + the gathered summary keys.
#
# **Block-sparse** (BigBird, and any mask function, including per-head ones). Cut
# queries and keys into blocks of $b$. The *block layout* records which (query block, key block)
# tiles contain at least one visible pair:
#
# $$
# \text{layout}[q_b, k_b] = \bigvee_{i \in q_b,\; j \in k_b} \text{mask}(i, j).
# $$
#
# Each query block gathers its $K$ visible key blocks, applies the element mask inside them and
# takes a softmax over the $Kb$ gathered keys. The work is $4\,B H D\, b^2 \sum_{q_b} K_{q_b}$
# FLOPs, and the largest tensor is one block row's scores, $(B, H, b, Kb)$.
#
# All of this can be checked without a clock: `count_flops` counts the matrix-product FLOPs and
# `largest_intermediate` records the largest tensor the call allocates. Dividing the FLOPs by
# $4BHND$ gives the number of keys each query was *actually* multiplied with, to compare with
# the number it *needs* (section 2).

# %%
torch.manual_seed(0)
B, H, N, D = 1, 4, 1024, 64
q, k, v = (torch.randn(B, H, N, D) for _ in range(3))
print(f"B={B}, H={H}, N={N}, D={D}, float32\n")
print(f"{'pattern':<11} {'FLOPs':>10} {'vs dense':>9} {'keys computed':>14} {'keys needed':>12}"
      f"   largest tensor")
work = {}
with torch.no_grad():
    for name in PATTERNS:
        fn, kwargs, _ = setup(name, N)
        flops = attnkit.count_flops(fn, q, k, v, **kwargs)
        biggest = attnkit.largest_intermediate(fn, q, k, v, **kwargs)
        work[name] = flops
        print(f"{name:<11} {flops:>10.2e} {flops / work['dense']:>9.1%} "
              f"{flops / (4 * B * H * N * D):>14.0f} {keys_per_query(name, N):>12.0f}   "
              f"{str(tuple(biggest.shape)):<22} {biggest.nbytes / 2**20:6.2f} MiB")

# %% [markdown]
# The dense call's largest tensor is the full $(1, 4, N, N)$ stack of scores. None of the
# sparse calls allocates anything of that size: the largest tensor is one set of chunk scores,
# one block row, a reordered piece, or simply the output. The keys computed per query are within
# a small factor of the keys needed; the waste is the masked corners of slabs, partly visible
# tiles of BigBird, and the padding of reordered pieces.
#
# Why not send every pattern through the block path? Because a tile is computed as soon as
# *one* of its pairs is visible. Draw the block layouts:

# %%
N_lay, b_lay = 1024, 64
layouts = {name: block_layout(setup(name, N_lay)[2], N_lay, block=b_lay)[0, 0]
           for name in ["dilated", "strided", "fixed", "longformer", "bigbird"]}
fig, axes = plt.subplots(1, len(layouts), figsize=(3.0 * len(layouts), 3.3))
for ax, (name, lay) in zip(axes, layouts.items()):
    plot_mask(lay, ax=ax)
    ax.set(xlabel="key block", ylabel="query block",
           title=f"{name}: {lay.float().mean():.0%} of tiles")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
with_title(fig, f"Block layouts at N = {N_lay}, b = {b_lay} (filled: the tile is computed)")
plt.show()
for name, lay in layouts.items():
    print(f"{name:<11} visible pairs {keys_per_query(name, N_lay) / N_lay:6.1%}   "
          f"computed tiles {lay.float().mean():6.1%}")

# %% [markdown]
# For strided and fixed every tile on or below the diagonal is computed, about half of the
# dense work, although only a few percent of the pairs are visible: a stride column or a
# summary column passes through *every* key block. A dilated window through the block path
# would waste a factor $\delta$ inside its tiles for the same reason (the holes are inside the
# tiles). The reordering removes the problem for strided, fixed and dilated. Here is its core
# written out by hand: the column piece alone (query $i$ reads $j \le i$ with $s \mid i - j$), as
# a reshape, a transpose and one causal
# attention per residue class,
#
# $$
# (B, H, N, D) \xrightarrow{\text{view}} (B, H, N/s, s, D) \xrightarrow{\text{transpose}}
# (B, H, s, N/s, D), \qquad \text{scores: } B H s (N/s)^2 = B H N^2 / s ,
# $$
#
# checked against the dense reference and compared with the block path on the same mask, and
# then the kit's complete `strided` (window piece + column piece, merged by log-sum-exp)
# against the block path on the complete strided mask.

# %%
def strided_columns(q, k, v, *, stride):
    """Causal attention within each residue class mod s, by reordering: O(N²/s) scores."""
    B, H, N, D = q.shape
    assert N % stride == 0, "this demo needs N to be a multiple of the stride"

    def regroup(x):  # (B, H, N, D) -> (B, H, s, N/s, D): class r holds r, r+s, r+2s, ...
        return x.view(B, H, N // stride, stride, x.shape[-1]).transpose(2, 3)

    out = attnkit.dense_attention(regroup(q), regroup(k), regroup(v),
                                  mask=attnkit.causal_mask(N // stride))  # (B, H, s, N/s, D)
    return out.transpose(2, 3).reshape(B, H, N, -1)  # back to sequence order


def column_mask(stride):
    return lambda b, h, i, j: (j <= i) & ((i - j) % stride == 0)


s_col = sqrt_stride(N)
candidates = {
    "column piece, block path (b=64)":
        lambda: blocksparse_attention(q, k, v, mask_mod=column_mask(s_col), block=64),
    "column piece, reordered by hand": lambda: strided_columns(q, k, v, stride=s_col),
    "strided, block path (b=64)":
        lambda: blocksparse_attention(q, k, v, mask_mod=fixed.strided_mask(s_col), block=64),
    "strided, fixed.strided (kit)": lambda: fixed.strided(q, k, v, stride=s_col),
}
with torch.no_grad():
    column_ref = attnkit.dense_attention(q, k, v, mask=materialize(column_mask(s_col), N))
    strided_ref = fixed.strided_reference(q, k, v, stride=s_col)
    print(f"N = {N}, s = {s_col}")
    for label, fn in candidates.items():
        ref = column_ref if label.startswith("column") else strided_ref
        err = (fn() - ref).abs().max().item()
        flops, biggest = attnkit.count_flops(fn), attnkit.largest_intermediate(fn)
        print(f"{label:<33} FLOPs {flops:.2e} ({flops / work['dense']:6.2%} of dense), "
              f"max error {err:.1e}, largest tensor {tuple(biggest.shape)}")

# %% [markdown]
# Reordered, the column piece costs $1/s$ of dense attention; through the block path, about
# half. The lesson carries over to GPUs (section 8): a pattern is only as sparse as its layout at
# the granularity of the kernel's tiles, and a reshape can turn a scattered pattern into a
# compact one.

# %% [markdown]
# ## 6. BigBird's graph argument
#
# A pattern can also be read as a graph. Put one node per position and an edge $i \to j$ when
# query $i$ sees key $j$. One layer moves information along one edge (from $j$ to $i$, against the
# arrow), so a path of length $L$ from $i$ to $j$ means that after $L$ layers output $i$ can
# depend on input $j$. Two numbers summarise how quickly information mixes:
#
# * the **average shortest path length** over all ordered pairs, and
# * the **diameter**, the longest of the shortest paths: the number of layers after which every
#   output can depend on every input.
#
# BigBird's authors argue from graph theory (the lecture notes cite Watts and Strogatz, "Collective
# dynamics of 'small-world' networks"): a ring of local connections has paths of length
# proportional to $N$, but adding a few random long-range edges makes the paths logarithmic in
# $N$, the "small world" effect, without adding much work. Global tokens shortcut everything
# through a hub. We build the four graphs from the kit's `bigbird_mask` at token level (blocks of
# one position) with the lecture figure's sizes: window of 3 (reach 1), $g = 2$, $r = 2$.

# %%
GRAPH_KINDS = {  # name: (global tokens, random keys per query)
    "window only": (0, 0),
    "window + global": (2, 0),
    "window + random": (0, 2),
    "BigBird (all three)": (2, 2),
}


def attention_graph(N, global_tokens, random_keys, seed=0):
    """Directed graph with edge i -> j when query i sees key j (self-loops dropped)."""
    mask = materialize(fixed.bigbird_mask(N, 1, window_blocks=1, global_blocks=global_tokens,
                                          random_blocks=random_keys, seed=seed), N)
    graph = nx.from_numpy_array(mask.numpy(), create_using=nx.DiGraph)
    graph.remove_edges_from(list(nx.selfloop_edges(graph)))
    return graph


Ns_graph = [128, 256, 512, 1024] + ([2048] if BIG else [])
graph_stats = {kind: {"asp": [], "diam": [], "edges": []} for kind in GRAPH_KINDS}
for N_g in tqdm(Ns_graph, desc="shortest paths", file=sys.stdout):
    for kind, (g_tok, r_keys) in GRAPH_KINDS.items():
        G = attention_graph(N_g, g_tok, r_keys)
        assert nx.is_strongly_connected(G)
        graph_stats[kind]["asp"].append(nx.average_shortest_path_length(G))
        graph_stats[kind]["diam"].append(nx.diameter(G))
        graph_stats[kind]["edges"].append(G.number_of_edges() / N_g)

print(f"{'graph':<21} {'edges/node':>10}  " + "  ".join(f"{'N=' + str(n):>12}" for n in Ns_graph))
for kind, st in graph_stats.items():
    cells = "  ".join(f"{a:6.2f} / {d:<4d}" for a, d in zip(st["asp"], st["diam"]))
    print(f"{kind:<21} {st['edges'][-1]:>10.1f}  {cells}")
print("(each cell: average shortest path / diameter)")

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
styles = {"window only": "o-", "window + global": "s--", "window + random": "^-",
          "BigBird (all three)": "d:"}
for kind, st in graph_stats.items():
    ax1.loglog(Ns_graph, st["asp"], styles[kind], label=kind)
    ax2.loglog(Ns_graph, st["diam"], styles[kind], label=kind)
for ax, what in [(ax1, "average shortest path length"), (ax2, "diameter (longest shortest path)")]:
    ax.set(xlabel="sequence length N (nodes)", ylabel=f"{what} (layers)",
           title=what[0].upper() + what[1:] + " vs N")
    ax.set_xticks(Ns_graph, [str(n) for n in Ns_graph])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

asp_random = np.array(graph_stats["window + random"]["asp"])
print("window + random: growth of the average path per doubling of N:",
      "  ".join(f"{x:+.2f}" for x in np.diff(asp_random)))
print("window only:     ratio of the average path per doubling of N: ",
      "  ".join(f"{x:.2f}" for x in np.array(graph_stats["window only"]["asp"][1:])
                / np.array(graph_stats["window only"]["asp"][:-1])))

# %% [markdown]
# The window-only graph is a chain: its average path is about $N/3$ and its diameter is
# $N - 1$, so it doubles with every doubling of $N$ (ratios printed above). A model built only
# from windows of reach 1 would need as many layers as there are tokens to connect the two ends.
# Two random keys per query change the picture completely: the average path grows by a roughly
# constant amount per doubling, the signature of $\log N$, and the diameter stays in single
# digits. Global tokens make the diameter 2 at every $N$: any $i$ reaches any $j$ through a
# global token (the two curves with global tokens lie on top of each other).
#
# If global tokens are that good, why random edges? Because a diameter of 2 through a hub means
# that almost every long-range path runs through the same two tokens, and each of them has to
# summarise the whole sequence in one vector per layer. The **betweenness** of a node, the
# fraction of all shortest paths that pass through it, makes the load visible:

# %%
N_bc = 256
print(f"N = {N_bc}: share of all shortest paths through the busiest nodes")
for kind, (g_tok, r_keys) in GRAPH_KINDS.items():
    if kind == "window only":
        continue
    bc = nx.betweenness_centrality(attention_graph(N_bc, g_tok, r_keys))
    top = sorted(bc.values(), reverse=True)
    print(f"{kind:<21} busiest node {top[0]:6.1%}, second {top[1]:6.1%}, "
          f"median node {np.median(top):6.2%}")

# %% [markdown]
# With global tokens, each of the two hubs lies on about half of all shortest paths; with random
# edges the traffic is spread, and no node carries more than a few percent. BigBird keeps both:
# the hubs for speed of mixing, random edges for paths that do not depend on two vectors.
#
# What this experiment does not show: short paths are necessary for long-range reasoning, not
# sufficient. Whether a model actually *learns* to route information along them is an empirical
# question, which is what the ablation quoted in the lecture notes (random attention worth 3–5 %
# of accuracy over Longformer) tries to answer. Also, the kit's BigBird, like the paper's implementation, draws
# random *blocks* rather than random tokens; on a graph of blocks the same argument holds with
# $N/b$ nodes.

# %% [markdown]
# ## 7. Time and memory against $N$, measured
#
# Now the clock. For each pattern with the settings of section 2, at $B = 1$, $H = 4$, $D = 64$,
# float32, on one thread (as in chapter 1: a single thread gives clean curves on a small shared
# machine), we record the median time of a few calls after a warm-up, and the peak memory of one
# call (`attnkit.peak_memory`, whose call doubles as the warm-up). All patterns run from
# $N = 512$ to $4096$ by default; `BIG = True` takes the sparse ones to $16384$ and dense to
# $8192$. For the block-sparse pattern (BigBird) we also time how long it takes to derive its
# block layout from the mask function, because it turns out to matter.
#
# On a log-log plot a cost $cN^p$ is a line of slope $p$. We fit each curve's slope over its
# sizes from $N = 1024$ on, where fixed overheads matter less.

# %%
Ns_time = [512, 1024, 2048, 4096] + ([8192, 16384] if BIG else [])
N_DENSE_MAX = 8192 if BIG else 4096


@torch.no_grad()
def measure(name, N):
    """(median seconds, peak bytes, seconds of the block layout alone or None) at length N."""
    fn, kwargs, mask_mod = setup(name, N)
    q, k, v = (torch.randn(1, 4, N, 64) for _ in range(3))
    peak = attnkit.peak_memory(fn, q, k, v, **kwargs)  # also the warm-up call
    repeats = 3 if N <= 2048 else 2
    seconds = float(np.median([time_call(fn, q, k, v, **kwargs) for _ in range(repeats)]))
    layout_seconds = None
    if name == "bigbird":
        layout_seconds = time_call(block_layout, mask_mod, N, block=kwargs["block"], B=1, H=4)
    return seconds, peak, layout_seconds


torch.manual_seed(0)
timing = {name: {} for name in PATTERNS}
jobs = [(name, N) for N in Ns_time for name in PATTERNS if name != "dense" or N <= N_DENSE_MAX]
with one_thread():
    for name, N in tqdm(jobs, desc="timing", file=sys.stdout):
        timing[name][N] = measure(name, N)

print(f"{'pattern':<11}" + "".join(f"{'N=' + str(N):>19}" for N in Ns_time))
for name, rows in timing.items():
    print(f"{name:<11}" + "".join(
        f"{rows[N][0] * 1e3:>9.1f} ms {rows[N][1] / 2**20:>5.0f} MiB" if N in rows else f"{'':>19}"
        for N in Ns_time))
print("\nderiving the block layout from the mask function, relative to the whole call:")
for name in ("bigbird",):
    print(f"{name:<11}" + "".join(f"{'N=' + str(N)}: {timing[name][N][2] / timing[name][N][0]:4.0%}   "
                                  for N in Ns_time))

# %%
def fitted_slope(rows, index):
    Ns_fit = [N for N in sorted(rows) if N >= 1024]
    return np.polyfit(np.log(Ns_fit), np.log([rows[N][index] for N in Ns_fit]), 1)[0]


colors = dict(zip(PATTERNS, ["black"] + plt.rcParams["axes.prop_cycle"].by_key()["color"]))
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
slopes = {}
for name, rows in timing.items():
    Ns_here = sorted(rows)
    slopes[name] = (fitted_slope(rows, 0), fitted_slope(rows, 1))
    lw = 2.5 if name == "dense" else 1.5
    ax1.loglog(Ns_here, [rows[N][0] * 1e3 for N in Ns_here], "o-", ms=4, lw=lw,
               color=colors[name], label=f"{name} ({slopes[name][0]:.2f})")
    ax2.loglog(Ns_here, [rows[N][1] / 2**20 for N in Ns_here], "o-", ms=4, lw=lw,
               color=colors[name], label=f"{name} ({slopes[name][1]:.2f})")
for ax, unit, title in [(ax1, "time per call (ms)", "Time, one thread"),
                        (ax2, "peak memory (MiB)", "Peak memory during the call")]:
    ax.set(xlabel="sequence length N", ylabel=unit, title=f"{title}, B=1, H=4, D=64, float32")
    ax.set_xticks(Ns_time, [str(n) for n in Ns_time])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.legend(fontsize=8, title="pattern (fitted slope)", title_fontsize=8)
fig.tight_layout()
plt.show()

N_top = min(Ns_time[-1], N_DENSE_MAX)
print(f"{'pattern':<11} {'time slope':>10} {'memory slope':>13}   at N={N_top} against dense")
for name, (st, sm) in slopes.items():
    line = f"{name:<11} {st:>10.2f} {sm:>13.2f}"
    if name != "dense":
        t_ratio = timing["dense"][N_top][0] / timing[name][N_top][0]
        m_ratio = timing["dense"][N_top][1] / timing[name][N_top][1]
        line += f"   {t_ratio:5.1f}x faster, {m_ratio:5.1f}x less memory"
    print(line)

# %% [markdown]
# What the measurements say (exact numbers move from run to run on a shared machine; the
# slopes and the ordering are what to look at):
#
# * **Memory.** Dense attention's peak follows $N^2$ (slope 2). The sparse peaks have slopes
#   near 1 for the $O(N)$ patterns and between 1 and 1.5 for strided and fixed, whose keys per
#   query grow like $\sqrt N$ (in steps, as the stride is a power of two): each path's largest
#   tensor is one set of chunk scores, one block row or one reordered piece.
# * **Time.** The banded patterns (local, Longformer) and the reordered ones (strided, fixed)
#   are a handful of large matrix products with no Python loop: they are the fastest at every
#   $N$ measured. Their time slopes can sit above their memory slopes, because larger working
#   sets fall out of the processor's caches (chapter 1, section 8).
# * **The block path** (BigBird) loops over query blocks in Python, so it is slower than the
#   banded and reordered paths, though its memory is linear. The printed ratio shows a second
#   trap: deriving the *block layout* from the mask function evaluates it on all $N^2$ pairs.
#   Those are cheap boolean operations, but there are $N^2$ of them, and at large $N$ they
#   would cost as much as the attention itself (or more). So the kit never does that per call:
#   `bigbird` reads its layout from the small $(N/b)\times(N/b)$ table that defines it, as
#   FlexAttention caches its block masks (next section). An earlier version of the kit
#   recomputed it on every call, and its time slopes were well above 1.
#
# Note that all of this is PyTorch on one CPU thread. The absolute speed-ups depend on the
# machine; the statement that sparse attention turns a quadratic cost into a (nearly) linear one
# does not.
#
# ## 8. On the GPU: FlexAttention
#
# On a GPU, a Python loop over block rows would be far too slow; the kernel itself has to skip
# the invisible tiles. PyTorch's **FlexAttention** (`torch.nn.attention.flex_attention`) does
# exactly that, and it takes the same two kinds of functions as the kit:
#
# * a `mask_mod(b, h, q_idx, kv_idx) -> bool`, the convention every pattern in this chapter
#   already follows, and
# * a `score_mod(score, b, h, q_idx, kv_idx) -> score` that changes a score before the softmax
#   (a relative-position bias, for instance: chapter 3).
#
# Usage, for reference (not run here):
#
# ```python
# from torch.nn.attention.flex_attention import create_block_mask, flex_attention
#
# block_mask = create_block_mask(fixed.local_mask(64), B=None, H=None, Q_LEN=N, KV_LEN=N,
#                                device="cuda")        # evaluate the mask_mod once, per tile
# flex = torch.compile(flex_attention)                   # generates a fused Triton kernel
# out = flex(q, k, v, block_mask=block_mask)             # q, k, v: (B, H, N, D) on the GPU
# ```
#
# `create_block_mask` evaluates the mask function on the whole grid once and summarises it per
# tile of $128\times128$ positions (the default block size), sorting tiles into three kinds:
# **empty** tiles are skipped, **full** tiles are computed without calling the mask function,
# and **partial** tiles are computed with the mask applied elementwise. This is the kit's block
# layout with `block=128`, plus the "full" flag, so the cost of a pattern on the GPU can be
# estimated on the CPU. The block mask is built once and passed to every call, which is how
# FlexAttention avoids paying for the $N^2$ mask evaluation over and over. The fused kernel
# computes the softmax tile by tile (an online softmax, as in FlashAttention) and never stores a
# score matrix, so its memory is $O(N)$ for every pattern; its time is proportional to the number of
# non-empty tiles.
#
# `B=None, H=None` means "the same for every batch element and head"; a per-head pattern such as
# the one of section 4 is passed with `H=H` and gets one layout per head. The kit's own GPU path
# is the module `attnkit.flex`, which wraps these calls and is checked against the same dense
# references; this chapter does not import it so that it runs on any machine.
#
# The tile counts at 128 positions, for this chapter's settings at $N = 4096$:

# %%
N_gpu, tile = 4096, 128
nt = N_gpu // tile
print(f"N = {N_gpu}, tiles of {tile}x{tile}: {nt * nt} tiles in all\n")
print(f"{'pattern':<11} {'visible pairs':>13} {'non-empty tiles':>16} {'full':>6} {'partial':>8}"
      f" {'tile work vs dense':>19}")
for name in PATTERNS:
    m = mask_grid(name, N_gpu).view(nt, tile, nt, tile)  # (q tile, i, k tile, j)
    non_empty = m.any(dim=3).any(dim=1)  # (nt, nt)
    full = m.all(dim=3).all(dim=1)  # (nt, nt)
    print(f"{name:<11} {m.float().mean():>13.1%} {int(non_empty.sum()):>16} {int(full.sum()):>6} "
          f"{int((non_empty & ~full).sum()):>8} {non_empty.float().mean():>19.1%}")

# %% [markdown]
# At 128-token granularity the window patterns keep most of their savings, though a window of
# reach 64 still needs about three tiles per tile row while it uses about one tile's worth of
# keys. BigBird with 64-token blocks does not line up with 128-token tiles. Strided and fixed,
# written as plain mask functions, are as bad as on the CPU block path, because no tile on or
# below the diagonal is empty. The remedies are those of section 5: choose windows and blocks
# that are multiples of the tile size, and reorder positions (or give the row and column parts
# to different heads) so that a pattern's visible pairs fall into few tiles. `create_block_mask`
# also accepts other tile sizes (`BLOCK_SIZE=`), at some cost in kernel efficiency.

# %% [markdown]
# ## Summary
#
# * A fixed pattern is a mask function. One definition gives the picture, the dense reference,
#   the CPU path and the GPU block mask.
# * Local, dilated, Longformer and BigBird see a constant number of keys per query, so their
#   work and memory are $O(N)$; strided and fixed need about $\sqrt N$ keys per query at the best
#   stride. The measured memory slopes show it directly; deriving a block layout from the mask
#   on every call would cost $N^2$ mask evaluations, so layouts are tabulated or cached.
# * How a pattern is computed matters as much as how sparse it is: banded slabs, reshapes that
#   make scattered patterns compact (merged by log-sum-exp), and block layouts whose tiles must
#   match the pattern.
# * The published results in the lecture notes show that sparse patterns match dense models at
#   equal size and win where the extra length is used; they say nothing about speed, which has to
#   be measured.
# * Different heads can use different patterns; two sparse heads in sequence can connect every
#   pair.
# * Random edges make paths between tokens short (logarithmic in $N$) without creating hubs;
#   global tokens make them shorter still, at the price of a bottleneck.
#
# Every pattern here still processes one fixed window of $N$ tokens. Chapter 3 goes past the edge
# of the window: Transformer-XL keeps the previous segment's keys and values as a memory and
# replaces absolute positions with relative ones.
