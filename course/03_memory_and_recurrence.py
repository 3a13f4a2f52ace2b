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
# # Chapter 3 — Memory and recurrence: Transformer-XL
#
# Every pattern of chapter 2 lives inside one window of $N$ tokens. A language model reading a
# book, a log file or a DNA strand cannot hold the whole stream in one window, so the stream is
# cut into **segments** of length $S$. What happens at the cut decides how much context the model
# really has. Transformer-XL (Dai et al. 2019, "Transformer-XL: Attentive Language Models Beyond
# a Fixed-Length Context") makes two changes to the plain Transformer:
#
# * **segment-level recurrence**: the keys and values of the previous segment are kept as a
#   *memory* that the current segment attends to, without back-propagating into it;
# * **relative positions**: a score depends on how far apart a query and a key are, not on
#   where they are, so that cached keys keep their meaning when they are reused.
#
# This chapter covers:
#
# 1. the fragmentation problem of fixed-length segments, counted;
# 2. the Transformer-XL pattern as a mask grid;
# 3. stepping through segments with a memory gives the same output as one whole-sequence call;
# 4. the gradient stops at the memory, shown with autograd;
# 5. the context grows with depth: $L$ layers see about $L$ segments back;
# 6. why absolute positions break when segments are reused, and a relative-position bias written
#    as a `score_mod`;
# 7. what the lecture notes report about Transformer-XL;
# 8. the cost against dense causal attention, measured.
#
# **Notation.** As before, $(B, H, N, D)$ tensors, query $i$, key $j$. New symbols: segment length
# $S$, memory length $M_{\text{mem}}$ (the number of cached positions; Transformer-XL uses
# $M_{\text{mem}} = S$ in training), number of layers $L$, and $R$ learned relative distances.

# %% [markdown]
# ## Setup
#
# `BIG = True` extends the cost measurement of section 8 to $N = 16384$ (dense causal attention
# to $N = 8192$; a minute or two more and about 3 GB of memory).

# %%
import math
import sys

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from tqdm.auto import tqdm

import attnkit
from attnkit import materialize
from attnkit.masks import materialize_scores
from attnkit.measure import time_call
from attnkit.modules import merge_heads, split_heads
from attnkit.notebook import one_thread, setup
from attnkit.plot import plot_masks
from attnkit.recurrence import (SegmentRecurrence, relative_bias_matrix, relative_bias_mod,
                                transformer_xl, transformer_xl_reference, xl_attention, xl_mask)

setup(seed=0)

# %%
BIG = False  # True: measure the cost up to N = 16384 in section 8


def with_title(fig, title):
    """Add a figure title above a grid of panels without overlapping their titles."""
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    return fig

# %% [markdown]
# ## 1. Fragmentation: what a fixed-length segment loses
#
# The plain ("vanilla") way to train a Transformer language model on a long stream is to cut it
# into segments of $S$ tokens and treat each segment as an independent sequence with causal
# attention. The lecture notes show the picture from the Transformer-XL paper with $S = 4$. Two
# things go wrong:
#
# * **Fragmented context.** The first token of every segment is predicted with no context at
#   all, the second with one token, and so on: a token at offset $t$ in its segment sees $t + 1$
#   keys (itself included), on average only $(S+1)/2$, whatever the length of the stream.
#   Segments are cut at fixed positions, not at sentence boundaries, so a segment often starts in
#   the middle of a sentence.
# * **No information crosses a boundary**, however many layers the model has: the longest
#   dependency it can learn is $S$.
#
# Transformer-XL's fix is to let each segment also attend to the $M_{\text{mem}}$ positions just
# before it. In whole-sequence coordinates, query $i$ in segment $\lfloor i/S\rfloor$ sees key $j$
# when
#
# $$
# j \le i \quad\text{and}\quad j \ge \left\lfloor \tfrac{i}{S} \right\rfloor S - M_{\text{mem}} ,
# $$
#
# which is `attnkit.recurrence.xl_mask(S, memory)`. With `memory=0` it is exactly the vanilla
# model. Count the keys each query sees:

# %%
S_demo, N_demo = 8, 64
context = {
    "vanilla (memory 0)": materialize(xl_mask(S_demo, 0), N_demo).sum(1),
    f"Transformer-XL (memory {S_demo})": materialize(xl_mask(S_demo, S_demo), N_demo).sum(1),
    "dense causal": materialize(attnkit.causal, N_demo).sum(1),
}
for name, c in context.items():
    c = c.float()
    print(f"{name:<28} keys per query: min {c[S_demo:].min():4.0f} (after the first segment), "
          f"mean {c.mean():5.1f}, max {c.max():4.0f}")

fig, ax = plt.subplots(figsize=(8, 3.4))
for (name, c), style in zip(context.items(), ["o-", "s-", "k--"]):
    ax.plot(range(N_demo), c, style, ms=3, label=name)
for boundary in range(0, N_demo + 1, S_demo):
    ax.axvline(boundary - 0.5, color="gray", lw=0.6, ls=":")
ax.set(xlabel="query position i (dotted lines: segment boundaries)",
       ylabel="keys visible to query i", title=f"Context per token, segments of S = {S_demo}")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# The vanilla model's context is a saw-tooth that falls back to a single key at every boundary.
# With a memory of one segment, every query sees at least $S$ keys: the saw-tooth is lifted by
# $S$. Dense causal attention keeps growing, which is what we cannot afford for a long stream.
#
# ## 2. The pattern
#
# Drawn as mask grids ($N = 32$, $S = 8$): vanilla segments are causal blocks on the diagonal;
# Transformer-XL adds the block to their left (one segment of memory) or more (a longer memory).

# %%
N_grid, S_grid = 32, 8
fig = plot_masks({
    "vanilla (memory 0)": xl_mask(S_grid, 0),
    f"XL, memory {S_grid}": xl_mask(S_grid, S_grid),
    f"XL, memory {2 * S_grid}": xl_mask(S_grid, 2 * S_grid),
    "dense causal": attnkit.causal,
}, N=N_grid, ncols=4, size=3.3)
with_title(fig, f"Segment recurrence as a mask (N = {N_grid}, S = {S_grid})")
plt.show()

# %% [markdown]
# Each segment's $S$ queries meet at most $S + M_{\text{mem}}$ keys, so one layer costs
# $O(N (S + M_{\text{mem}}) D)$, linear in $N$, like chapter 2's windows. The pattern *is* a
# blocked causal sliding window. What makes Transformer-XL different is *how* it is computed and
# trained: one segment at a time, with the previous segment's keys and values read from a cache
# instead of being recomputed, and with no gradient through the cache.

# %% [markdown]
# ## 3. Stepping through segments equals one whole-sequence call
#
# One segment step, with $\tilde K = [\operatorname{SG}(K_{\text{mem}});\, K]$ and
# $\tilde V = [\operatorname{SG}(V_{\text{mem}});\, V]$ ($\operatorname{SG}$ = stop-gradient,
# `.detach()`), is causal attention over the concatenation:
#
# $$
# o_i = \sum_{j \le i + M_{\text{mem}}} \operatorname{softmax}_j\!\left(\frac{q_i\cdot \tilde k_j}{\sqrt D}\right) \tilde v_j ,
# \qquad i = 0, \dots, S-1, \quad j = 0, \dots, M_{\text{mem}} + S - 1 .
# $$
#
# `xl_attention(q, k, v, mem_k=..., mem_v=...)` is that step. Loop over the segments of a
# sequence, carrying each segment's keys and values as the next one's memory, and compare with
# `transformer_xl` (the kit's whole-sequence function, which loops internally) and with
# `transformer_xl_reference` (dense attention with the materialised `xl_mask`).

# %%
torch.manual_seed(0)
B, H, N, D, S = 2, 4, 96, 16, 16
q, k, v = (torch.randn(B, H, N, D, dtype=torch.float64) for _ in range(3))

outs, mem_k, mem_v = [], None, None
for start in range(0, N, S):
    seg = slice(start, start + S)
    outs.append(xl_attention(q[:, :, seg], k[:, :, seg], v[:, :, seg], mem_k=mem_k, mem_v=mem_v))
    mem_k, mem_v = k[:, :, seg], v[:, :, seg]  # this segment becomes the next one's memory
stepped = torch.cat(outs, dim=2)  # (B, H, N, D)

whole = transformer_xl(q, k, v, segment=S, memory=S)
reference = transformer_xl_reference(q, k, v, segment=S, memory=S)
print(f"{N // S} segments of S = {S}")
print(f"max |stepped - transformer_xl|           = {(stepped - whole).abs().max():.1e}")
print(f"max |stepped - dense reference (xl_mask)| = {(stepped - reference).abs().max():.1e}")

# %% [markdown]
# The same holds for a full layer with projections. `SegmentRecurrence(d_model, n_heads,
# max_distance=R)` is multi-head attention (chapter 1) whose forward pass takes one segment
# $x_n$ of shape $(B, S, C)$ and the memory returned by the previous call, and returns the output
# and the new memory: the keys and values of its last $M_{\text{mem}}$ positions, detached. Run it
# segment by segment, and compare with projecting the whole sequence at once and calling
# `transformer_xl` on it with the layer's own relative bias (section 6).

# %%
torch.manual_seed(1)
C, heads, S_layer, n_segments = 32, 4, 8, 5
layer = SegmentRecurrence(C, heads, max_distance=24).double()
with torch.no_grad():
    layer.bias.copy_(0.3 * torch.randn_like(layer.bias))  # a non-trivial relative bias
x = torch.randn(2, n_segments * S_layer, C, dtype=torch.float64)  # (B, N, C)

with torch.no_grad():
    mem, pieces = None, []
    for x_n in x.split(S_layer, dim=1):  # (B, S, C) each
        out_n, mem = layer(x_n, mem)
        pieces.append(out_n)
    stepped = torch.cat(pieces, dim=1)  # (B, N, C)

    q_all = split_heads(layer.w_q(x), heads)  # (B, H, N, D)
    k_all = split_heads(layer.w_k(x), heads)
    v_all = split_heads(layer.w_v(x), heads)
    at_once = layer.w_o(merge_heads(transformer_xl(q_all, k_all, v_all, segment=S_layer,
                                                   bias=layer.bias)))  # (B, N, C)
print("memory carried between calls:", [tuple(t.shape) for t in mem], "requires_grad:",
      [t.requires_grad for t in mem])
print(f"max |layer stepped over {n_segments} segments - one whole-sequence call| = "
      f"{(stepped - at_once).abs().max():.1e}")

# %% [markdown]
# ## 4. The gradient stops at the memory
#
# In the forward pass the memory is an ordinary input. In the backward pass it is a constant:
# the loss of segment $n$ sends no gradient into segment $n-1$. This is what keeps training
# affordable. Without the stop-gradient, back-propagating through the cache would mean
# keeping the activations of *every* earlier segment alive, back to the start of the stream
# (back-propagation through time over the whole stream).
#
# Autograd shows it directly. Two segments $x_1, x_2$ are leaves that require gradients; the loss
# is computed on the outputs of segment 2 only. Three versions of the same forward computation:
#
# * **dense**: one call over both segments with the `xl_mask`, no stop-gradient anywhere;
# * **the kit's layer**: `SegmentRecurrence` stepped over the two segments; its memory holds the
#   *keys and values* of segment 1, detached;
# * **the paper's formulation**: the memory holds segment 1's *layer input* (the hidden states
#   $h$), detached, and the memory's keys and values are recomputed from it with the current
#   projections, $\tilde k = \operatorname{SG}(h)\,W_k$.

# %%
torch.manual_seed(2)
x1 = torch.randn(1, S_layer, C, dtype=torch.float64, requires_grad=True)
x2 = torch.randn(1, S_layer, C, dtype=torch.float64, requires_grad=True)
watch = [x1, x2, layer.w_k.weight]


def second_segment_dense(first, second):
    """Outputs of segment 2 from one dense xl-masked call over [first; second]: (1, S, C)."""
    both = torch.cat([first, second], dim=1)  # (1, 2S, C)
    qf, kf, vf = (split_heads(w(both), heads) for w in (layer.w_q, layer.w_k, layer.w_v))
    out = transformer_xl_reference(qf, kf, vf, segment=S_layer, bias=layer.bias)  # (1, H, 2S, D)
    return layer.w_o(merge_heads(out))[:, S_layer:]


versions = {"dense": second_segment_dense(x1, x2)}
_, mem = layer(x1, None)  # the kit: segment 1 fills the key/value memory ...
versions["kit's layer"] = layer(x2, mem)[0]  # ... and segment 2 reads it
versions["paper"] = second_segment_dense(x1.detach(), x2)  # SG on the hidden states only

grads = {name: torch.autograd.grad(out.pow(2).sum(), watch, allow_unused=True)
         for name, out in versions.items()}
print(f"{'version':<12} {'max |out - dense|':>18} {'|dL/dx1|':>10} {'|dL/dx2 - dense|':>17} "
      f"{'|dL/dW_k - dense| / |dense|':>28}")
for name, (g1, g2, gw) in grads.items():
    d1, d2, dw = grads["dense"]
    print(f"{name:<12} {(versions[name] - versions['dense']).abs().max():>18.1e} "
          f"{'none' if g1 is None else f'{g1.norm():.3f}':>10} {(g2 - d2).abs().max():>17.1e} "
          f"{(gw - dw).norm() / dw.norm():>28.1%}")

# %% [markdown]
# All three compute the same outputs, and the gradient for the current segment $x_2$ is the same
# in all three. The difference is what flows back *through* the memory:
#
# * In both recurrent versions $x_1$ gets no gradient at all: it influenced the loss, but the
#   layer trains as if the memory were data handed in from outside.
# * The paper stops the gradient at the hidden states only, so the projections $W_k, W_v$ still
#   learn from the memory positions: its $W_k$ gradient equals the dense one. The kit's layer
#   caches the projected keys and values, which also cuts the projections' share: its $W_k$
#   gradient misses the part printed in the last column. Both are valid training schemes; the
#   paper's is the one to use when reproducing its results.
#
# The price of the stop-gradient is that the model never learns how changing the *previous*
# segment's states would have helped; the reward is that training costs the same for segment
# 1,000 as for segment 1.

# %% [markdown]
# ## 5. The context grows with depth
#
# One layer sees $M_{\text{mem}}$ positions back. But the memory of layer $\ell$ holds keys and
# values computed from layer $\ell - 1$'s outputs on the previous segment, which had themselves
# looked one segment further back. After $L$ layers the last output of a segment can depend on
# inputs about $L \cdot M_{\text{mem}}$ positions before its segment: with $M_{\text{mem}} = S$,
# the longest dependency is about $L \times S$ (the Transformer-XL paper states it as
# $O(N \times L)$ for its segment length $N$).
#
# A small computation makes it exact. Write one layer's pattern as a boolean matrix $A$ (row $i$:
# the inputs that output $i$ reads). Stacking layers composes the patterns, so output $i$ of an
# $L$-layer stack depends on input $j$ when $(A^L)_{ij} > 0$. We follow the last position of a
# 12-segment sequence through 1 to 8 layers.

# %%
S_rf, n_seg_rf, L_max = 16, 12, 8
N_rf = S_rf * n_seg_rf
last = N_rf - 1


def receptive_fields(mask_mod, N, layers):
    """Row L-1: which inputs can influence output N-1 after L layers (boolean, (layers, N))."""
    A = materialize(mask_mod, N).double()  # (N, N): one layer
    reach, rows = torch.eye(N, dtype=torch.float64), []
    for _ in range(layers):
        reach = ((A @ reach) > 0).double()  # compose one more layer
        rows.append(reach[N - 1] > 0)
    return torch.stack(rows)


fields = {"vanilla segments (memory 0)": receptive_fields(xl_mask(S_rf, 0), N_rf, L_max),
          f"Transformer-XL (memory S = {S_rf})": receptive_fields(xl_mask(S_rf, S_rf), N_rf, L_max)}

fig, axes = plt.subplots(1, 2, figsize=(12, 3.6), sharey=True)
for ax, (name, field) in zip(axes, fields.items()):
    ax.imshow(field.numpy(), aspect="auto", cmap=matplotlib.colors.ListedColormap(["white", "tab:blue"]),
              interpolation="nearest", extent=(-0.5, N_rf - 0.5, L_max + 0.5, 0.5))
    for boundary in range(0, N_rf + 1, S_rf):
        ax.axvline(boundary - 0.5, color="gray", lw=0.6, ls=":")
    ax.set(xlabel="input position j (dotted lines: segment boundaries)", title=name)
axes[0].set_ylabel("number of layers L")
with_title(fig, f"Inputs that can influence the last output (position {last}), S = {S_rf}")
plt.show()

print(f"{'layers L':>8} {'vanilla: earliest input':>24} {'XL: earliest input':>19} {'XL context':>11}"
      f" {'S + L*S':>8}")
for L in range(1, L_max + 1):
    first_v = int(fields["vanilla segments (memory 0)"][L - 1].nonzero().min())
    first_x = int(fields[f"Transformer-XL (memory S = {S_rf})"][L - 1].nonzero().min())
    print(f"{L:>8} {first_v:>24} {first_x:>19} {last - first_x + 1:>11} {S_rf + L * S_rf:>8}")

# %% [markdown]
# The vanilla model's receptive field never leaves the last segment, however deep it is. With
# one segment of memory per layer, each extra layer reaches exactly one more segment back: the
# context of the last token is $S + L\cdot S$ positions (its own segment plus $L$ segments of
# memory), printed above. It also explains how the lecture notes can quote a context of 784
# tokens in training but 3,800 at evaluation for Transformer-XL: nothing ties the memory length
# at evaluation to the one used in training, and every layer adds that memory to its reach.

# %% [markdown]
# ## 6. Relative positions
#
# ### Why absolute positions break
#
# A vanilla Transformer adds a position embedding $p_t$ to the token at position $t$ of its
# segment. When segments are reused as memory that becomes ambiguous. The cached segment had
# positions $0, \dots, S-1$, and so does the current one: key $j$ of the memory and key $j$ of
# the current segment carry the *same* position signal, although one is $S$ positions further
# from every query. Numbering positions along the whole stream instead does not help either:
# positions then grow without limit, and at evaluation the model meets positions it never saw in
# training.
#
# The ambiguity is easy to show. With sinusoidal embeddings (Vaswani et al. 2017), take the
# position-only part of the score, $p_i^\top W p_t$ for a query at position $i$ and a key at
# position $t$, over the concatenated keys $[\text{memory};\text{current}]$, once with positions
# restarted per segment and once with the distance $i + M_{\text{mem}} - j$ (relative):

# %%
def sinusoidal(positions, dim):
    """Sinusoidal position embeddings (Vaswani et al. 2017): (len(positions), dim)."""
    pos = positions.double().view(-1, 1)
    freq = torch.exp(-math.log(10_000.0) * torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    return torch.cat([torch.sin(pos * freq), torch.cos(pos * freq)], dim=1)


torch.manual_seed(3)
S_pos, dim = 8, 16
W = torch.randn(dim, dim, dtype=torch.float64) / math.sqrt(dim)  # a stand-in for W_q W_kᵀ
queries = sinusoidal(torch.arange(S_pos), dim)  # current segment, positions 0..S-1
keys_abs = sinusoidal(torch.cat([torch.arange(S_pos), torch.arange(S_pos)]), dim)  # [mem; cur]
absolute = queries @ W @ keys_abs.T  # (S, 2S): position-only scores

i = torch.arange(S_pos).view(-1, 1)
j = torch.arange(2 * S_pos).view(1, -1)
distance = i + S_pos - j  # how far key j of [mem; cur] lies behind query i
print("absolute positions restarted per segment:")
print(f"  max |score(query, memory key t) - score(query, current key t)| = "
      f"{(absolute[:, :S_pos] - absolute[:, S_pos:]).abs().max():.1e}  (indistinguishable)")
gap = (distance[:, :S_pos] - distance[:, S_pos:]).unique()
print(f"relative positions: distance to memory key t minus distance to current key t = "
      f"{gap.tolist()} for every query, so a score that depends on the distance tells them apart")

# %% [markdown]
# Transformer-XL replaces the absolute position term by terms that depend only on $i - j$ (its
# paper decomposes the score into content and position parts with sinusoidal relative
# encodings and two learned vectors). The kit uses the simplest form of the same idea, a learned
# scalar per head and distance, in the spirit of T5's relative bias (Raffel et al. 2020):
#
# $$
# s_{ij} = \frac{q_i\cdot k_j}{\sqrt D} + \beta_h\big[\min(i - j,\, R - 1)\big],
# $$
#
# with $\beta \in \mathbb{R}^{H\times R}$; distances beyond $R-1$ share the last entry. Because
# the bias depends only on the distance, it means the same thing for a memory key and a current
# key, in every segment, and at evaluation with a longer memory.
#
# ### The bias as a `score_mod`
#
# In FlexAttention's convention (chapter 2, section 8), a bias is a function
# `score_mod(score, b, h, q_idx, kv_idx) -> score` applied to each score before the softmax.
# `relative_bias_mod(bias, offset)` returns one: `offset` is the memory length, since queries
# are numbered within the segment and keys within $[\text{memory};\text{current}]$. Check it
# on a dense score tensor against `relative_bias_matrix`, which builds the whole $(H, N, M)$ bias:

# %%
H_b, R_b, S_b, mem_b = 4, 24, 16, 16
slopes = torch.tensor([1.0, 0.25, 1 / 16, 0.0], dtype=torch.float64)  # one per head
distances = torch.arange(R_b, dtype=torch.float64)
bias = -slopes.view(H_b, 1) * distances.view(1, R_b)  # (H, R): nearer keys score higher

score_mod = relative_bias_mod(bias, offset=mem_b)
scores = torch.zeros(1, H_b, S_b, mem_b + S_b, dtype=torch.float64)  # (B, H, N, M)
via_mod = materialize_scores(score_mod, scores)  # the score_mod on every (h, i, j)
via_matrix = relative_bias_matrix(bias, S_b, mem_b + S_b, offset=mem_b)  # (H, N, M)
print(f"max |score_mod on a grid - relative_bias_matrix| = {(via_mod[0] - via_matrix).abs().max():.1e}")
print(f"the bias matrix is Toeplitz (constant along diagonals): "
      f"{torch.equal(via_matrix[:, 1:, 1:], via_matrix[:, :-1, :-1])}")

# %% [markdown]
# The bias here is chosen by hand rather than learned: head $h$ subtracts $\text{slope}_h$ per
# step of distance, a linear penalty in the spirit of ALiBi (Press et al. 2022), with one head
# that has no preference. Its heatmap over one segment's queries and the
# $[\text{memory};\text{current}]$ keys, with the causal part that the mask removes left white:

# %%
visible = materialize(lambda b, h, qi, kj: kj <= qi + mem_b, S_b, mem_b + S_b)  # (S, mem + S)
fig, axes = plt.subplots(1, H_b, figsize=(3.3 * H_b, 3.5), layout="constrained")
for h, ax in enumerate(axes):
    shown = via_matrix[h].masked_fill(~visible, float("nan")).numpy()
    im = ax.imshow(shown, cmap="viridis", aspect="auto", interpolation="nearest",
                   vmin=float(bias.min()), vmax=0.0)
    ax.axvline(mem_b - 0.5, color="white", lw=1.5)
    ax.set(title=f"head {h}: slope {slopes[h].item():g}", xlabel="key j  ([memory | current])",
           ylabel="query i (current segment)")
fig.colorbar(im, ax=axes, fraction=0.02, pad=0.02, label="bias added to the score")
fig.suptitle("Relative-position bias, one segment with a memory of one segment", fontsize=12)
plt.show()

# %% [markdown]
# What the bias does to attention: take random queries and keys, and compare how far back, on
# average, each head looks, with and without the bias. The weights come from dense attention
# with the bias and the mask folded into one additive tensor, the same thing `xl_attention`
# does internally.

# %%
torch.manual_seed(4)
qb, kb, vb = (torch.randn(1, H_b, S_b, 16, dtype=torch.float64) for _ in range(3))
mem_kb, mem_vb = (torch.randn(1, H_b, mem_b, 16, dtype=torch.float64) for _ in range(2))
k_cat, v_cat = torch.cat([mem_kb, kb], dim=2), torch.cat([mem_vb, vb], dim=2)  # (1, H, mem + S, 16)
dist = (torch.arange(S_b).view(-1, 1) + mem_b - torch.arange(mem_b + S_b).view(1, -1)).double()

mask_plain = torch.zeros(H_b, S_b, mem_b + S_b, dtype=torch.float64).masked_fill(~visible, -math.inf)
_, w_plain = attnkit.dense_attention(qb, k_cat, v_cat, mask=mask_plain, return_weights=True)
_, w_bias = attnkit.dense_attention(qb, k_cat, v_cat, mask=mask_plain + via_matrix,
                                    return_weights=True)
out_bias = xl_attention(qb, kb, vb, mem_k=mem_kb, mem_v=mem_vb, bias=bias)
print(f"max |xl_attention(bias) - dense with bias matrix| = "
      f"{(out_bias - w_bias @ v_cat).abs().max():.1e}\n")
print(f"{'head':>4} {'slope':>7} {'mean distance, no bias':>23} {'with bias':>10} "
      f"{'weight on memory, no bias':>26} {'with bias':>10}")
for h in range(H_b):
    d0 = (w_plain[0, h] * dist).sum(-1).mean()
    d1 = (w_bias[0, h] * dist).sum(-1).mean()
    m0 = w_plain[0, h, :, :mem_b].sum(-1).mean()
    m1 = w_bias[0, h, :, :mem_b].sum(-1).mean()
    print(f"{h:>4} {slopes[h].item():>7g} {d0:>23.1f} {d1:>10.1f} {m0:>26.1%} {m1:>10.1%}")

# %% [markdown]
# A steep slope turns a head into a soft local window (mean distance of a step or two); a flat
# one leaves it free to read the whole memory. A learned $\beta$ finds its own profile per head,
# which is another instance of chapter 2's "different heads use different patterns", this time
# soft instead of hard.
#
# Finally, the whole-sequence function with a bias still equals its dense reference:

# %%
torch.manual_seed(5)
q, k, v = (torch.randn(2, H_b, 80, 16, dtype=torch.float64) for _ in range(3))
learned = 0.5 * torch.randn(H_b, R_b, dtype=torch.float64)
diff = (transformer_xl(q, k, v, segment=16, memory=16, bias=learned)
        - transformer_xl_reference(q, k, v, segment=16, memory=16, bias=learned)).abs().max()
print(f"max |transformer_xl(bias) - transformer_xl_reference(bias)| = {diff:.1e}")

# %% [markdown]
# ## 7. What the lecture notes report
#
# The lecture notes summarise Transformer-XL in four points: a window length of **784 in
# training and 3,800 at evaluation**, novel relative positional encodings, an evaluation they
# call "not very relevant" (bits per character on a text corpus), and models that are "not any
# smaller". They quote the
# paper's comparison on enwik8 (Table 2 there; bits per character, lower is better):
#
# | model | parameters | bpc |
# |---|---|---|
# | Ha et al. (2016), LN HyperNetworks | 27M | 1.34 |
# | Chung et al. (2016), LN HM-LSTM | 35M | 1.32 |
# | Zilly et al. (2016), RHN | 46M | 1.27 |
# | Mujika et al. (2017), FS-LSTM-4 | 47M | 1.25 |
# | Krause et al. (2016), Large mLSTM | 46M | 1.24 |
# | Knol (2017), cmix v13 | – | 1.23 |
# | Al-Rfou et al. (2018), 12L Transformer | 44M | 1.11 |
# | **12L Transformer-XL** | 41M | **1.06** |
# | Al-Rfou et al. (2018), 64L Transformer | 235M | 1.06 |
# | **18L Transformer-XL** | 88M | **1.03** |
# | **24L Transformer-XL** | 277M | **0.99** |
#
# Chapter 2's tables (Sparse Transformer, Longformer) list the same 88M and 277M Transformer-XL
# models as their baselines.

# %%
enwik8 = {  # name: (layers, parameters in millions, bpc), from the table above
    "12L Transformer (Al-Rfou)": (12, 44, 1.11), "12L Transformer-XL": (12, 41, 1.06),
    "64L Transformer (Al-Rfou)": (64, 235, 1.06), "18L Transformer-XL": (18, 88, 1.03),
    "24L Transformer-XL": (24, 277, 0.99),
}
a, b = enwik8["12L Transformer (Al-Rfou)"], enwik8["12L Transformer-XL"]
print(f"12 layers each: Transformer-XL is {a[2] - b[2]:.2f} bpc better "
      f"({(a[2] - b[2]) / a[2]:.1%}) with {a[1] - b[1]}M fewer parameters")
a, b = enwik8["64L Transformer (Al-Rfou)"], enwik8["12L Transformer-XL"]
print(f"12L Transformer-XL matches the 64L Transformer ({b[2]} bpc) with "
      f"{a[1] / b[1]:.1f}x fewer parameters and {a[0] // b[0]}x fewer layers")
print(f"evaluation context / training context = 3800 / 784 = {3800 / 784:.1f}")
best_lstm = 1.24
print(f"best recurrent network in the table (Large mLSTM, {best_lstm}) to the 24L "
      f"Transformer-XL: {best_lstm - 0.99:.2f} bpc")

# %% [markdown]
# **What the table shows.** At equal depth (12 layers) and similar size, adding recurrence and
# relative positions improves the Transformer; the 12-layer Transformer-XL matches a 64-layer
# Transformer; and the family scales, reaching 0.99 bpc at 277M parameters, a quarter of a bit
# below the best recurrent network in the table (printed above).
#
# **What it does not show.** It does not separate the two ingredients: the gain could come from
# the memory, from the relative positions, or from their combination (the paper has ablations
# for that; the lecture notes do not quote them). The models are "not any smaller", as the
# lecture notes put it: the best results come from the largest model. Bits per character on one
# corpus is a narrow test, and nothing in the table measures speed or memory, which section 8
# measures here. Finally, the 784/3,800 context lengths are per layer stack, not a window that a
# single attention layer sees: section 5 showed how the depth multiplies the reach.

# %% [markdown]
# ## 8. Cost against dense causal attention
#
# Transformer-XL over a sequence of $N$ tokens processes $N/S$ segments, each $S$ queries
# against $S + M_{\text{mem}}$ keys:
#
# $$
# \text{FLOPs} = 4 B H D\, S\, \big(S + (N/S - 1)(S + M_{\text{mem}})\big)
# \;\overset{M_{\text{mem}} = S}{=}\; 4BHD\,S\,(2N - S),
# \qquad \text{largest scores} = B H S (S + M_{\text{mem}}),
# $$
#
# (the first segment has no memory), against $4BHN^2D$ and $BHN^2$ for dense causal attention.
# Both compute the masked entries inside the blocks they touch and throw them away: dense causal
# attention computes the whole upper triangle, Transformer-XL the upper corner of each segment. We measure both at $B = 1$, $H = 4$, $D = 64$, float32, $S = M_{\text{mem}} =
# 256$, on one thread: FLOPs, largest tensor, peak memory and median time.

# %%
Bc, Hc, Dc, Sc = 1, 4, 64, 256
Ns = [512, 1024, 2048, 4096] + ([8192, 16384] if BIG else [])
N_DENSE_MAX = 8192


def dense_causal(q, k, v):
    return attnkit.dense_attention(q, k, v, mask=attnkit.causal_mask(q.shape[-2]))


def xl(q, k, v):
    return transformer_xl(q, k, v, segment=Sc, memory=Sc)


@torch.no_grad()
def measure(fn, N):
    q, k, v = (torch.randn(Bc, Hc, N, Dc) for _ in range(3))
    peak = attnkit.peak_memory(fn, q, k, v)  # also the warm-up call
    seconds = float(np.median([time_call(fn, q, k, v) for _ in range(3 if N <= 2048 else 2)]))
    return dict(flops=attnkit.count_flops(fn, q, k, v), peak=peak, seconds=seconds,
                biggest=attnkit.largest_intermediate(fn, q, k, v))


torch.manual_seed(0)
results = {"dense causal": {}, "Transformer-XL": {}}
jobs = [(name, N) for N in Ns for name in results if name != "dense causal" or N <= N_DENSE_MAX]
with one_thread():
    for name, N in tqdm(jobs, desc="measuring", file=sys.stdout):
        results[name][N] = measure(dense_causal if name == "dense causal" else xl, N)

print(f"B={Bc}, H={Hc}, D={Dc}, S = memory = {Sc}, float32, one thread\n")
print(f"{'N':>6} {'method':<15} {'FLOPs':>10} {'formula':>10} {'time (ms)':>10} {'peak (MiB)':>11}"
      f"   largest tensor")
for N in Ns:
    for name, rows in results.items():
        if N not in rows:
            continue
        r = rows[N]
        formula = (4 * Bc * Hc * Dc * Sc * (2 * N - Sc) if name == "Transformer-XL"
                   else 4 * Bc * Hc * N * N * Dc)
        print(f"{N:>6} {name:<15} {r['flops']:>10.2e} {formula:>10.2e} {r['seconds'] * 1e3:>10.1f} "
              f"{r['peak'] / 2**20:>11.1f}   {tuple(r['biggest'].shape)}")

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
for name, style in [("dense causal", "k-o"), ("Transformer-XL", "-s")]:
    rows = results[name]
    Ns_here = sorted(rows)
    t = np.array([rows[N]["seconds"] for N in Ns_here]) * 1e3
    m = np.array([rows[N]["peak"] for N in Ns_here]) / 2**20
    st = np.polyfit(np.log(Ns_here), np.log(t), 1)[0]
    sm = np.polyfit(np.log(Ns_here), np.log(m), 1)[0]
    ax1.loglog(Ns_here, t, style, label=f"{name} (slope {st:.2f})")
    ax2.loglog(Ns_here, m, style, label=f"{name} (slope {sm:.2f})")
for ax, unit, title in [(ax1, "time per call (ms)", "Time, one thread"),
                        (ax2, "peak memory (MiB)", "Peak memory during the call")]:
    ax.set(xlabel="sequence length N", ylabel=unit, title=f"{title}, S = memory = {Sc}")
    ax.set_xticks(Ns, [str(n) for n in Ns])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.legend()
fig.tight_layout()
plt.show()

N_cmp = max(N for N in Ns if N in results["dense causal"])
d, x_ = results["dense causal"][N_cmp], results["Transformer-XL"][N_cmp]
print(f"at N = {N_cmp}: Transformer-XL does {d['flops'] / x_['flops']:.1f}x fewer FLOPs, "
      f"is {d['seconds'] / x_['seconds']:.1f}x faster and needs {d['peak'] / x_['peak']:.1f}x "
      f"less peak memory")

# %% [markdown]
# The counted FLOPs equal the formula. The largest tensor is one segment's
# $(B, H, S, S + M_{\text{mem}})$ scores, or at large $N$ the output, instead of the $(B, H, N, N)$
# stack. Transformer-XL's time grows about linearly in $N$ (the fitted slope is noisy with so few
# sizes on a shared machine), and its peak memory hardly grows at all: it is dominated by one
# segment's scores, which do not depend on $N$; only the output does. Dense causal attention
# grows quadratically in both. The FLOP ratio at the largest common $N$ is about
# $N / (S + M_{\text{mem}})$ and keeps growing with $N$; the time and memory ratios are larger
# still, because the dense score tensors outgrow the caches (chapter 1).
#
# The saving at *evaluation* time is larger still. A vanilla model that must predict every token
# with a full window of context slides its window by one token and recomputes everything for
# each prediction. Transformer-XL computes each segment once and reuses it as memory. Counting
# attention FLOPs for $T$ predicted tokens with a context of $S$:

# %%
S_eval, T_eval, D_eval = 128, 1024, 64
q, k, v = (torch.randn(1, 1, S_eval, D_eval) for _ in range(3))
per_window = attnkit.count_flops(dense_causal, q, k, v)  # one full window of S tokens
vanilla_total = T_eval * per_window  # one window per predicted token
mem_k, mem_v = (torch.randn(1, 1, S_eval, D_eval) for _ in range(2))
per_segment = attnkit.count_flops(lambda a, b_, c: xl_attention(a, b_, c, mem_k=mem_k, mem_v=mem_v),
                                  q, k, v)  # S new tokens against memory + segment
xl_total = (T_eval // S_eval) * per_segment
print(f"T = {T_eval} tokens, context S = {S_eval}: vanilla sliding window {vanilla_total:.2e} FLOPs, "
      f"Transformer-XL {xl_total:.2e} FLOPs, ratio {vanilla_total / xl_total:.0f}")

# %% [markdown]
# The ratio is $S/2$ for attention alone (each vanilla window costs $S^2$ pairs per token, each
# Transformer-XL segment $2S^2$ pairs per $S$ tokens); the feed-forward layers and projections,
# recomputed for every window by the vanilla model, widen it further.
#
# ## Summary
#
# * Cutting a stream into independent segments leaves the first tokens of each segment without
#   context and caps every dependency at $S$.
# * Transformer-XL attends to a cached memory of the previous segment: the pattern is a blocked
#   causal window, computed one segment at a time; stepping through the segments gives exactly
#   the whole-sequence result.
# * The memory is a constant for autograd: forward values as in the dense model, gradients
#   truncated at the segment boundary, and a training cost that does not depend on the position
#   in the stream.
# * Depth multiplies the reach: with a memory of one segment, $L$ layers see $L$ segments back.
# * Reused keys need positions that mean the same thing in every segment: a bias on the distance
#   $i - j$, written as a `score_mod`, does that and runs unchanged in FlexAttention.
# * Cost: linear in $N$ for a fixed segment and memory, measured above against the quadratic
#   dense baseline.
#
# Chapter 5 keeps the exact set of queries but shortens the keys and values instead: from $N$ of
# them to a few representative ones (Linformer, compressed attention).
