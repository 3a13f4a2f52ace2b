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
# # Chapter 4 — Content-based sparsity: Reformer, Routing Transformer, Sinkhorn
#
# Chapter 2 decided in advance which query–key pairs to compute: a window, a stride, a few
# global tokens. That works when the keys a query needs sit at predictable places. The lecture
# notes ask the next question: "can we only focus on critical parts?" — can we guess, *from the
# content*, which pairs will get a large attention weight, and compute only those? Their answer
# is clustering: put queries and keys that are alike into the same group and let a query attend
# only inside its group. Three ways of forming the groups follow:
#
# 1. why a fixed pattern misses what attention looks for when related tokens are far apart;
# 2. angular locality-sensitive hashing (LSH): the probability that two vectors share a bucket,
#    against the angle between them, in theory and measured;
# 3. the Reformer's bucket → sort → chunk, drawn on a concrete sentence;
# 4. how many of a query's true top keys the buckets find, against buckets and hashing rounds;
# 5. shared query–key attention, and why a token must not attend to itself there;
# 6. the Routing Transformer: spherical k-means instead of random hyperplanes;
# 7. Sparse Sinkhorn attention: a learned *sorting* of blocks, Sinkhorn normalisation, SortCut;
# 8. the cost of each, measured (largest tensor, FLOPs, time) against its formula.
#
# **Notation.** $(B, H, N, D)$ queries and keys, $b$ buckets (LSH) or clusters (Routing),
# $R$ hashing rounds, chunk length $c$, Sinkhorn block length $b_s$ with $n_b = N/b_s$ blocks.
# $\hat x = x/\lVert x\rVert$ is a unit vector.

# %% [markdown]
# ## Setup

# %%
import functools
import math
import sys

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import attnkit
from attnkit import dense_attention, lsh, routing, sinkhorn
from attnkit.measure import time_call
from attnkit.notebook import one_thread, setup

setup(seed=0)

# %% [markdown]
# ## 1. What a fixed pattern misses
#
# Attention looks for *similar* tokens, and similar tokens need not be neighbours: the second
# mention of a name refers back to the first, a repeated motif in a melody or an image tile
# resembles one far away. A toy sequence with that property: $N = 512$ tokens, each belonging to
# one of $T = 16$ "topics" placed at random. A token's query and key are its topic's direction
# plus independent noise,
#
# $$
# q_i = r\,\widehat{u_{t(i)} + \varepsilon_i}, \quad k_i = r\,\widehat{u_{t(i)} + \varepsilon'_i},
# \qquad u_t \text{ unit vectors in } \mathbb R^{D},\;
# \varepsilon_i, \varepsilon'_i \sim \mathcal N\!\big(0, \tfrac{0.8^2}{D} I\big),
# $$
#
# with norm $r = 8$ so that attention is fairly sharp. Where does each row of
# $A = \operatorname{softmax}(QK^\top/\sqrt D)$ put its weight?

# %%
def topic_sequence(N, D, topics, *, noise=0.8, radius=8.0, seed=0):
    """Queries and keys (N, D): topic direction + independent noise, norm `radius`; topics (N,)."""
    gen = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(topics, D, generator=gen, dtype=torch.float64), dim=-1)  # (T, D)
    labels = torch.randint(0, topics, (N,), generator=gen)  # (N,)
    q, k = (radius * F.normalize(centres[labels] + noise * torch.randn(N, D, generator=gen, dtype=torch.float64)
                                 / math.sqrt(D), dim=-1) for _ in range(2))  # (N, D) each
    return q, k, labels


N1, D1, T1 = 512, 64, 16
q1, k1, topic1 = topic_sequence(N1, D1, T1)
A1 = torch.softmax(q1 @ k1.T / math.sqrt(D1), dim=-1)  # (N, N)
same_topic = topic1[:, None] == topic1[None, :]  # (N, N)
dist = (torch.arange(N1)[:, None] - torch.arange(N1)[None, :]).abs()  # (N, N) |i - j|
print(f"mean attention mass on keys of the query's topic: {float((A1 * same_topic).sum(-1).mean()):.2f} "
      f"(they are {float(same_topic.double().mean()):.1%} of the keys)")
for w in [8, 32, 128]:
    inside = dist <= w
    print(f"local window |i - j| <= {w:>3}: {float(inside.double().mean()):5.1%} of the pairs, "
          f"{float((A1 * inside).sum(-1).mean()):5.1%} of the attention mass")

# %%
order = torch.argsort(topic1 * N1 + torch.arange(N1))  # sort by (topic, position)
fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
for ax, (mat, title, lab) in zip(axes, [(A1, "positions in sequence order", "position"),
                                        (A1[order][:, order], "rows and columns sorted by topic", "sorted position")]):
    im = ax.imshow(mat.numpy() ** 0.5, cmap="viridis", interpolation="nearest")
    ax.set(title=title, xlabel=f"key ({lab})", ylabel=f"query ({lab})")
    ax.grid(False)
fig.colorbar(im, ax=axes, fraction=0.025, label="√A (square root, to show small weights)")
fig.suptitle(f"One attention matrix, N = {N1}, {T1} topics placed at random", fontsize=12)
plt.show()

# %% [markdown]
# In sequence order the weight is scattered over the whole matrix; a band around the diagonal
# catches only its proportional share (the printout: each window's share of the mass is close to
# its share of the pairs). Sorted by topic, the same matrix is block diagonal.
# Nothing about positions tells where the blocks are; the *content* does. If we could sort the
# tokens by content cheaply, a fixed block pattern on the sorted sequence would capture almost
# everything. That is the whole idea of this chapter; the three methods differ in how they sort.

# %% [markdown]
# ## 2. Angular LSH: nearby directions share a bucket
#
# Sorting by exact similarity would need all pairs. A *locality-sensitive hash* gets an
# approximate grouping in $O(N)$: a random function for which similar inputs are likely to
# collide and dissimilar ones are not. The Reformer uses angular LSH (Andoni et al. 2015): draw a
# random Gaussian matrix $R \in \mathbb R^{D\times b/2}$ and put $x$ in bucket
#
# $$
# h(x) = \arg\max\big([\hat x R;\; -\hat x R]\big) \in \{0, \dots, b - 1\},
# $$
#
# that is, rotate $\hat x$ randomly and pick the nearest of $b$ signed axes. For $b = 2$, $R$ is a
# single direction $r$ and $h(x)$ is the side of the hyperplane $r^\perp$ on which $x$ lies. Two
# vectors at angle $\theta$ are split exactly when the random hyperplane passes between them,
# which happens with probability $\theta/\pi$ (in the plane they span, the hyperplane's trace is
# a uniformly random line through the origin). So
#
# $$
# P\big[h(x) = h(y)\big] = 1 - \frac{\theta}{\pi} \qquad (b = 2).
# $$
#
# For more buckets there is no such simple formula; we measure it: for each angle, 4000 fresh
# rotations $R$ and the share under which the pair collides (`lsh.measured_collision`).

# %%
thetas = np.linspace(0, math.pi, 13)
bucket_counts = [2, 4, 8, 16]
measured = {b: [lsh.measured_collision(float(t), D1, b, trials=4000, seed=1) for t in thetas]
            for b in tqdm(bucket_counts, desc="buckets", file=sys.stdout)}
theory = [lsh.collision_probability(float(t), 2) for t in thetas]
print("θ (degrees):      " + " ".join(f"{math.degrees(t):5.0f}" for t in thetas))
print("theory, b = 2:    " + " ".join(f"{p:5.2f}" for p in theory))
for b in bucket_counts:
    print(f"measured, b = {b:<3}" + " ".join(f"{p:5.2f}" for p in measured[b]))

# %%
fig, ax = plt.subplots(figsize=(7, 4.3))
fine = np.linspace(0, math.pi, 200)
ax.plot(np.degrees(fine), 1 - fine / math.pi, "k-", lw=1.5, label="theory, b = 2: 1 − θ/π")
for i, b in enumerate(bucket_counts):
    ax.plot(np.degrees(thetas), measured[b], "o" if b == 2 else "o-", color=f"C{i}", ms=5,
            label=f"measured, b = {b}" + (" (4000 rotations per point)" if b == 2 else ""))
ax.axvline(90, color="grey", ls=":", lw=1)
ax.set(xlabel="angle θ between x and y (degrees)", ylabel="P[h(x) = h(y)]", xticks=range(0, 181, 30),
       title=f"Angular LSH: collision probability against angle, D = {D1}")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# The measured points for two buckets sit on the line $1 - \theta/\pi$. More buckets make the
# hash more selective: at $\theta = 90°$ (unrelated directions) two buckets still collide half
# the time, sixteen buckets rarely; but close directions also collide less often ($\theta = 30°$
# gives about $0.83$ for $b = 2$ and clearly less for $b = 16$). That trade-off is why the
# Reformer hashes in several independent *rounds* and lets a query attend to every key that
# shared its bucket in any of them (section 4 measures what that buys).

# %% [markdown]
# ## 3. Bucket, sort, chunk: the Reformer on a sentence
#
# Exact bucketed attention (query $i$ sees key $j$ iff they share a bucket) still needs an
# $N\times N$ mask to write down, and buckets have uneven sizes, which batches badly. The Reformer
# makes it regular:
#
# 1. hash every token (with shared queries and keys, section 5, one hash per token);
# 2. sort the tokens by (bucket, position): each bucket becomes a contiguous run;
# 3. cut the sorted sequence into chunks of $c$ tokens;
# 4. each chunk attends to itself and to the previous chunk (a bucket may straddle a chunk
#    boundary), and only to keys of its own bucket.
#
# The work is $N/c$ blocks of $c\times 2c$ scores: $O(Nc)$ instead of $O(N^2)$. Below, a concrete
# sentence: every word type gets a random vector, each occurrence that vector plus a little
# noise, so repeated words ("the", "fox", "dog") point in nearly the same direction. We hash
# into $b = 4$ buckets with one round and cut chunks of $c = 4$.

# %%
sentence = ("the quick brown fox saw the lazy dog and the dog saw the fox then the fox ran "
            "past the dog to the old barn").split()
N3, D3, b3, c3 = len(sentence), 16, 4, 4
vocab3 = sorted(set(sentence))
gen3 = torch.Generator().manual_seed(3)
word_vec = torch.randn(len(vocab3), D3, generator=gen3, dtype=torch.float64)  # (V, D)
x3 = torch.stack([word_vec[vocab3.index(w)] for w in sentence])  # (N, D)
x3 = x3 + 0.15 * torch.randn(N3, D3, generator=gen3, dtype=torch.float64)
R3 = lsh.random_rotations(D3, b3, rounds=1, seed=4, dtype=torch.float64)  # (1, D, b/2)
h3 = lsh.hash_vectors(x3, R3)[0]  # (N,) bucket of each token
order3 = torch.sort(h3, stable=True).indices  # (N,) sorted by (bucket, position)
rank3 = torch.empty_like(order3)
rank3[order3] = torch.arange(N3)  # rank3[i]: place of token i in the sorted order
chunk3 = rank3 // c3  # (N,) chunk of each token


def chunked_mask(h, chunk_of, *, shared_qk):
    """(N, N) bool, the Reformer's rule: same bucket, key chunk = query chunk or the one before."""
    gap = chunk_of[:, None] - chunk_of[None, :]  # (N, N)
    keep = (h[:, None] == h[None, :]) & ((gap == 0) | (gap == 1))
    if shared_qk:  # self only when nothing else is left (section 5)
        eye = torch.eye(len(h), dtype=torch.bool)
        other = keep & ~eye
        keep = other | (keep & eye & ~other.any(-1, keepdim=True))
    return keep


mask3 = chunked_mask(h3, chunk3, shared_qk=True)  # (N, N), original order
print("word    :", " ".join(f"{w:>5}" for w in sentence))
print("bucket  :", " ".join(f"{int(b):>5}" for b in h3))
print("sorted  :", " ".join(f"{sentence[int(i)]:>5}" for i in order3))
print("chunk   :", " ".join(f"{int(chunk3[i]):>5}" for i in order3))
# the library's chunked path computes exactly dense attention under this mask (shared-QK keys q̂)
q3, v3 = x3[None, None], torch.randn(1, 1, N3, 8, generator=gen3, dtype=torch.float64)
ours = dense_attention(q3, F.normalize(q3, dim=-1), v3, mask=mask3)
print("max |lsh(chunk=4, shared_qk) - dense attention under the mask above| =",
      f"{(lsh.lsh(q3, None, v3, buckets=b3, rotations=R3, chunk=c3, shared_qk=True) - ours).abs().max():.1e}")

# %%
fig = plt.figure(figsize=(12, 7.6))
top = fig.add_axes([0.15, 0.74, 0.83, 0.19])
colors = plt.get_cmap("tab10")
for row, (idx, label) in enumerate([(torch.arange(N3), "sequence order"), (order3, "sorted by (bucket, position)")]):
    y = 1 - row
    for slot, i in enumerate(idx.tolist()):
        top.add_patch(plt.Rectangle((slot, y - 0.4), 0.95, 0.8, color=colors(int(h3[i])), alpha=0.55))
        top.text(slot + 0.47, y, sentence[i], ha="center", va="center", fontsize=7, rotation=90)
    top.text(-0.5, y, label, ha="right", va="center", fontsize=9)
for boundary in range(c3, N3, c3):
    top.axvline(boundary - 0.025, ymin=0.0, ymax=0.5, color="k", lw=2)
top.set(xlim=(-0.2, N3), ylim=(-0.6, 1.6))
top.axis("off")
top.set_title(f"{N3} tokens, colour = bucket (b = {b3}); lower row cut into chunks of c = {c3}", fontsize=10)
ax1 = fig.add_axes([0.08, 0.08, 0.38, 0.56])
ax2 = fig.add_axes([0.56, 0.08, 0.38, 0.56])
ax1.imshow(mask3[order3][:, order3].numpy(), cmap="Greys", vmin=0, vmax=1.4)
ax1.set(title="allowed pairs, sorted order: chunk + previous chunk, same bucket",
        xlabel="key (sorted)", ylabel="query (sorted)")
for boundary in range(c3, N3, c3):
    ax1.axhline(boundary - 0.5, color="C3", lw=0.6)
    ax1.axvline(boundary - 0.5, color="C3", lw=0.6)
ax2.imshow(mask3.numpy(), cmap="Greys", vmin=0, vmax=1.4)
ax2.set_xticks(range(N3), sentence, rotation=90, fontsize=7)
ax2.set_yticks(range(N3), sentence, fontsize=7)
ax2.set_title("the same pairs in sentence order")
for ax in (ax1, ax2):
    ax.grid(False)
plt.show()

# %% [markdown]
# The repeated words share buckets, so after sorting they sit together and neighbouring chunks
# see each other: occurrences of "the", "dog" and "fox" attend to other occurrences far away in
# the sentence (right panel: scattered, content-driven pairs), while the computed blocks in sorted
# order (left) are a narrow band of $c\times 2c$ tiles. The diagonal is empty: with shared
# queries and keys a token does not attend to itself (section 5). Two things can go wrong, and
# both are visible in such pictures: a bucket larger than two chunks loses some of its pairs at
# the far ends, and a word whose vector falls on the other side of a random hyperplane ends up
# in a different bucket from its twin. Several rounds of hashing reduce the second.

# %% [markdown]
# ## 4. Do the buckets find the keys that matter?
#
# The keys that dominate a softmax row are the ones with the largest scores. A fair test of a
# hashing scheme is therefore its *recall*: of each query's $k$ highest-scoring keys, how many
# share a bucket with it in at least one of $R$ rounds? And at what price: the share of all
# $N^2$ pairs that the buckets let through. We use the topic sequence of section 1 ($N = 512$,
# $D = 64$) with shared queries and keys, the top $k = 8$ keys of each query (not itself), and
# compare with a local window, which keeps the same share of pairs without looking at the
# content.

# %%
top_k = 8
x4 = q1[None, None]  # (1, 1, N, D), the queries of section 1; keys k̂ = q̂ (shared QK)
scores4 = q1 @ F.normalize(q1, dim=-1).T  # (N, N) shared-QK scores q_i · k̂_j
scores4.fill_diagonal_(-math.inf)
true_top = scores4.topk(top_k, dim=-1).indices  # (N, k)


def recall_and_share(mask):
    """Share of the true top-k keys inside `mask` (N, N), and the share of pairs the mask keeps."""
    return float(mask.gather(1, true_top).double().mean()), float(mask.double().mean())


rounds_list = [1, 2, 4, 8]
buckets_list = [2, 4, 8, 16, 32, 64]
recall4 = {}
for b in tqdm(buckets_list, desc="buckets", file=sys.stdout):
    for R in rounds_list:
        m = lsh.lsh_mask(x4, None, buckets=b, rounds=R, seed=10, shared_qk=True)[0, 0]  # (N, N)
        recall4[b, R] = recall_and_share(m)
window4 = {w: recall_and_share((dist <= w) & (dist > 0)) for w in [2, 8, 32, 64, 128, 256]}

print(f"recall of the top {top_k} keys (share of pairs kept), N = {N1}, shared QK")
print(f"{'b':>4}" + "".join(f"{'R = ' + str(R):>18}" for R in rounds_list))
for b in buckets_list:
    print(f"{b:>4}" + "".join(f"{recall4[b, R][0]:>9.2f} ({recall4[b, R][1]:5.1%})" for R in rounds_list))
print("local window:", ", ".join(f"w={w}: {r:.2f} ({s:.1%})" for w, (r, s) in window4.items()))

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
for i, b in enumerate(buckets_list):
    ax1.plot(rounds_list, [recall4[b, R][0] for R in rounds_list], "o-", color=f"C{i}", ms=4, label=f"b = {b}")
    ax2.plot([recall4[b, R][1] for R in rounds_list], [recall4[b, R][0] for R in rounds_list], "o-",
             color=f"C{i}", ms=4, label=f"LSH, b = {b}, R = 1…8")
ax2.plot([s for _, s in window4.values()], [r for r, _ in window4.values()], "ks--", ms=4,
         label="local window (any w)")
ax1.set(xlabel="hashing rounds R", ylabel=f"recall of the true top {top_k} keys", xticks=rounds_list,
        title="Recall against rounds", ylim=(0, 1.02))
ax2.set(xscale="log", xlabel="share of the N² pairs computed (log scale)", ylabel=f"recall of the top {top_k}",
        title="Recall against cost", ylim=(0, 1.02))
ax1.legend(fontsize=8)
ax2.legend(fontsize=7)
fig.suptitle(f"LSH buckets on the topic sequence, N = {N1}, D = {D1}, shared QK", fontsize=12)
fig.tight_layout()
plt.show()

# %% [markdown]
# Read the right panel as a price list. The local window's recall grows only in proportion to the
# pairs it keeps (the dashed line): the top keys are anywhere. LSH reaches the same recall with
# far fewer pairs. More buckets make the buckets smaller (cheaper) but split more true neighbours
# (lower recall for one round); more rounds win the recall back at a proportional cost. A few
# rounds of many buckets is the sweet spot the Reformer paper reports too (it trains with up to
# 8 rounds and notes that more rounds approach full attention).

# %% [markdown]
# ## 5. Shared queries and keys: why a token must not attend to itself
#
# To make the hash of a query and a key comparable, the Reformer ties them: $K = \hat Q$, the
# normalised queries (its "shared-QK" attention; the paper finds it does not hurt quality).
# Then each token's query shares a bucket with its own key by construction. But it also *wins*
# its own row: by Cauchy–Schwarz
#
# $$
# q_i \cdot \hat q_j \le \lVert q_i\rVert = q_i \cdot \hat q_i ,
# $$
#
# with equality only for $j$ of the same direction. If allowed, every row would give its largest
# single weight to itself, and the sharper the attention, the more of its total weight: weight
# that brings no information from the other tokens. So the Reformer masks the diagonal, allowing
# self-attention only when a token has no other candidate (then it must attend to something).
# The numbers on the topic sequence, with the queries scaled to three norms $\lVert q\rVert$:

# %%
print(f"{'|q|':>5} {'weight on itself':>17} {'itself the top key':>19} {'same topic, self masked':>24}")
no_self = ~torch.eye(N1, dtype=torch.bool)
for radius in [8.0, 32.0, 64.0]:
    q5 = radius / 8.0 * q1  # (N, D), norm `radius`
    s5 = q5 @ F.normalize(q5, dim=-1).T / math.sqrt(D1)  # (N, N) shared-QK scores
    A_self = torch.softmax(s5, dim=-1)
    A_noself = torch.softmax(s5.masked_fill(~no_self, -math.inf), dim=-1)
    print(f"{radius:>5.0f} {float(A_self.diagonal().mean()):>17.2f} "
          f"{float((A_self.argmax(-1) == torch.arange(N1)).double().mean()):>19.0%} "
          f"{float((A_noself * same_topic).sum(-1).mean()):>24.2f}")
m5 = lsh.lsh_mask(q1[None, None], None, buckets=64, rounds=1, seed=0, shared_qk=True)[0, 0]
alone = ~(m5 & no_self).any(-1)
print(f"lsh_mask(shared_qk=True), b = 64: diagonal kept in {int(m5.diagonal().sum())} rows, exactly the "
      f"{int(alone.sum())} rows with no other key in their bucket: {bool((m5.diagonal() == alone).all())}")

# %% [markdown]
# The first row of the table is the problem: the larger the queries (the sharper the attention),
# the more a token's weight goes to itself, and in every row it is the top key. Masking the
# diagonal gives the weight back to the tokens of the same topic, the ones attention is for.
# `lsh_mask` (and the chunked path) keep the diagonal only in the few rows whose bucket holds no
# other token, so that every query attends to something.

# %% [markdown]
# ## 6. Routing Transformer: clusters learned from the data
#
# Random hyperplanes ignore where the vectors actually are. The Routing Transformer (Roy et al.
# 2021) learns the groups instead, with *spherical k-means* on the normalised queries and keys:
# start from $b$ of the vectors as centroids $c_1, \dots, c_b$; repeat: assign every $\hat x$ to
# the centroid with the largest $\hat x\cdot c_m$, and move each centroid to the normalised sum of
# its members. A query attends to the keys routed to its centroid. (In a model the centroids are
# updated as a moving average during training; here k-means runs on the inputs.) First the
# picture in two dimensions, where unit vectors are points on a circle:

# %%
gen6 = torch.Generator().manual_seed(6)
angles6 = torch.cat([a + 0.25 * torch.randn(40, generator=gen6, dtype=torch.float64)
                     for a in (0.3, 1.6, 2.4, 3.9, 5.2)])  # five groups of directions
x6 = torch.stack([angles6.cos(), angles6.sin()], dim=-1) * (1 + 0.3 * torch.rand(200, 1, generator=gen6,
                                                                                    dtype=torch.float64))
x6 = x6[torch.randperm(200, generator=gen6)][None, None]  # (1, 1, N, 2), in random order
fig, axes = plt.subplots(1, 3, figsize=(13, 4.4))
for ax, iters in zip(axes, [0, 1, 10]):
    cent = routing.spherical_kmeans(x6, 5, iters=iters, seed=1)  # (1, 5, 2)
    assign = routing.route(x6, cent)[0, 0]  # (N,)
    pts = x6[0, 0].numpy()
    ax.scatter(pts[:, 0], pts[:, 1], c=[plt.get_cmap("tab10")(int(a)) for a in assign], s=12)
    for m in range(5):
        cx, cy = cent[0, m].tolist()
        ax.annotate("", xy=(cx, cy), xytext=(0, 0), arrowprops=dict(arrowstyle="->", color=plt.get_cmap("tab10")(m),
                                                                     lw=2))
    ax.add_patch(plt.Circle((0, 0), 1, fill=False, color="grey", lw=0.5))
    ax.set(aspect="equal", xlim=(-1.5, 1.5), ylim=(-1.5, 1.5),
           title=f"k-means, {iters} iteration{'s' if iters != 1 else ''}" + (" (initial centroids)" if iters == 0 else ""))
fig.suptitle("Spherical k-means in 2-D: points coloured by their nearest centroid (arrows, unit length)", fontsize=11)
fig.tight_layout()
plt.show()

# %% [markdown]
# Assignment depends only on the direction, so the length of a vector does not matter. After a
# few iterations the centroids sit in the middle of the five groups. On the topic sequence of
# section 4 (shared QK, top 8 keys), k-means clusters against LSH buckets with one round, at the
# same number of groups:

# %%
print(f"{'groups':>7} | {'k-means: recall':>15} {'pairs':>7} | {'LSH, R = 1: recall':>18} {'pairs':>7}")
recall6 = {}
for b in [4, 8, 16, 32]:
    cent = routing.spherical_kmeans(x4, b, iters=10, seed=0)  # (1, b, D)
    r = routing.route(x4, cent)[0, 0]  # (N,)
    km = (r[:, None] == r[None, :]) & ~torch.eye(N1, dtype=torch.bool)
    recall6[b] = recall_and_share(km)
    print(f"{b:>7} | {recall6[b][0]:>15.2f} {recall6[b][1]:>7.1%} | {recall4[b, 1][0]:>18.2f} {recall4[b, 1][1]:>7.1%}")

# %% [markdown]
# With the groups fitted to the data, one round of k-means finds most of the top keys at a cost
# similar to one round of hashing, which finds far fewer: the topics are real clusters, and
# k-means recovers them, while a random hyperplane cuts through them. Recall drops once there
# are more clusters than topics (32 groups for 16 topics must split some of them). The price is the
# clustering itself ($O(\text{iters}\cdot N b D)$) and centroids to maintain during training.
# Like buckets, clusters have uneven sizes; the paper's efficient implementation is *balanced*:
# each centroid takes its $w = N/b$ closest queries and keys, so every cluster is one
# $w\times w$ block (`routing(..., balanced=True)`), at the price that a query may land in no
# cluster or in several.

# %%
torch.manual_seed(0)
q6b, k6b, v6b = (torch.randn(2, 2, 64, 16, dtype=torch.float64) for _ in range(3))
cent6 = routing.spherical_kmeans(torch.cat([q6b, k6b], dim=2), 4, iters=5, seed=0)  # fitted to q and k
for balanced in [False, True]:
    out = routing.routing(q6b, k6b, v6b, clusters=4, centroids=cent6, balanced=balanced)
    ref = routing.routing_reference(q6b, k6b, v6b, clusters=4, centroids=cent6, balanced=balanced)
    print(f"balanced={balanced!s:<5}: max |routing - routing_reference| = {(out - ref).abs().max():.1e}")

# %% [markdown]
# ## 7. Sparse Sinkhorn attention: sort blocks, softly
#
# The lecture notes' third content-based method lets "another network decide which places need
# attention". Sparse Sinkhorn attention (Tay et al. 2020) cuts the sequence into $n_b$ blocks of
# $b_s$ tokens and learns a *permutation of the blocks*: query block $i$ attends to its own block
# and to one other block, the one the sorting sends to it. A permutation is not differentiable,
# so it is relaxed to a doubly stochastic matrix (rows and columns sum to 1, a convex mix of
# permutations). Sinkhorn's algorithm produces one from any score matrix $R \in \mathbb
# R^{n_b\times n_b}$ by normalising rows and columns in turn, in log space for stability:
#
# $$
# X^{(0)} = R/\tau, \qquad
# X \leftarrow X - \operatorname{logsumexp}_{\text{row}}(X), \qquad
# X \leftarrow X - \operatorname{logsumexp}_{\text{col}}(X), \qquad P = e^{X}.
# $$
#
# The column sums are exactly 1 after each round; the row sums converge to 1. The temperature
# $\tau$ controls how close $P$ gets to a hard permutation.

# %%
logits7 = torch.randn(8, 8, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
iters_shown = [0, 1, 3, 10]
fig, axes = plt.subplots(1, len(iters_shown) + 1, figsize=(15, 3.3))
for ax, it in zip(axes, iters_shown):
    P = torch.softmax(logits7 / 0.75, dim=-1) if it == 0 else sinkhorn.sinkhorn_normalise(logits7, it, 0.75)
    ax.imshow(P.numpy(), cmap="viridis", vmin=0, vmax=1)
    ax.set(title=f"{'row softmax only' if it == 0 else f'{it} iteration' + ('s' if it > 1 else '')}\n"
                 f"row sums {float(P.sum(-1).min()):.2f}…{float(P.sum(-1).max()):.2f}, "
                 f"columns {float(P.sum(-2).min()):.2f}…{float(P.sum(-2).max()):.2f}", xlabel="block m")
    ax.title.set_fontsize(9)
    ax.grid(False)
axes[0].set_ylabel("block i")
its = list(range(1, 41))
for tau in [1.0, 0.75, 0.3]:
    dev = [float((sinkhorn.sinkhorn_normalise(logits7, it, tau).sum(-1) - 1).abs().max()) for it in its]
    axes[-1].semilogy(its, dev, label=f"τ = {tau}")
axes[-1].set(xlabel="iterations", ylabel="max |row sum − 1|", title="rows converge\n(columns sum to 1 exactly)")
axes[-1].title.set_fontsize(9)
axes[-1].legend(fontsize=8)
fig.suptitle("Sinkhorn normalisation of one random 8 × 8 score matrix (τ = 0.75 in the heatmaps)", fontsize=11)
fig.tight_layout()
plt.show()
for tau in [1.0, 0.3, 0.05]:
    P = sinkhorn.sinkhorn_normalise(logits7, 100, tau)
    print(f"τ = {tau:<4}: after 100 iterations the largest entry of each row is "
          f"{float(P.max(-1).values.min()):.2f} or more; argmax a permutation: "
          f"{sorted(P.argmax(-1).tolist()) == list(range(8))}")

# %% [markdown]
# Row softmax alone gives rows that sum to 1 but columns that do not (some blocks would be read by
# many query blocks, some by none). A few iterations fix both, faster at high temperature.
# Lowering $\tau$ sharpens $P$ towards the permutation that maximises $\sum_i R_{i\pi(i)}$, at the
# price of slower convergence and a rougher gradient.
#
# In the attention, $R$ comes from block summaries (here the mean query of block $i$ against the
# mean key of block $m$; the paper uses a small learned network), and query block $i$ attends to
# its own $b_s$ keys and to a *sorted* block, the $P$-weighted mix of the other blocks,
# $\tilde K_i = \sum_{m\ne i} P_{im}K_m / \sum_{m\ne i}P_{im}$ (same for $V$). For a hard
# permutation $\pi$ this is exactly dense attention under a block mask, own block $\cup$ block
# $\pi(i)$, which the next cell checks. *SortCut* goes further: every query attends only to the
# first $k$ sorted blocks, $N\times k b_s$ scores with $k$ fixed, no own block, for encoders
# where a query need not see its neighbours.

# %%
torch.manual_seed(0)
N7, bs7 = 64, 8
nb7 = N7 // bs7
q7, k7, v7 = (torch.randn(1, 1, N7, 16, dtype=torch.float64) for _ in range(3))
perm7 = torch.tensor([3, 0, 5, 7, 1, 2, 4, 6])  # block i reads block perm7[i]
hard = torch.full((nb7, nb7), -math.inf, dtype=torch.float64)
hard[torch.arange(nb7), perm7] = 0.0  # Sinkhorn keeps -inf at 0, so P is this permutation
blk = torch.arange(N7) // bs7
block_mask = (blk[:, None] == blk[None, :]) | (perm7[blk][:, None] == blk[None, :])  # (N, N)
print("hard permutation: max |sinkhorn - dense attention under the block mask| =",
      f"{(sinkhorn.sinkhorn(q7, k7, v7, block=bs7, logits=hard) - dense_attention(q7, k7, v7, mask=block_mask)).abs().max():.1e}")
soft = sinkhorn.sinkhorn(q7, k7, v7, block=bs7)
print("soft P (block means): max |sinkhorn - sinkhorn_reference| =",
      f"{(soft - sinkhorn.sinkhorn_reference(q7, k7, v7, block=bs7)).abs().max():.1e}")
cut = sinkhorn.sinkhorn(q7, k7, v7, block=bs7, sortcut=2)
print("SortCut k = 2: output", tuple(cut.shape), " largest tensor",
      tuple(attnkit.largest_intermediate(sinkhorn.sinkhorn, q7, k7, v7, block=bs7, sortcut=2).shape))

fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
axes[0].imshow(block_mask.numpy(), cmap="Greys", vmin=0, vmax=1.4)
axes[0].set(title="own block ∪ sorted block π(i)", xlabel="key j", ylabel="query i")
P7 = sinkhorn.sinkhorn_normalise(sinkhorn.block_logits(q7, k7, bs7), 8, 0.75)[0, 0]  # (nb, nb)
im = axes[1].imshow(P7.numpy(), cmap="viridis", vmin=0)
axes[1].set(title="soft P from block means (τ = 0.75, 8 iterations)", xlabel="key block m", ylabel="query block i")
fig.colorbar(im, ax=axes[1], fraction=0.046)
for ax in axes:
    ax.grid(False)
fig.tight_layout()
plt.show()

# %% [markdown]
# The left panel is the pattern a hard sort produces: two blocks per query block, one of them
# far away. The right panel is the honest caveat: for random queries and keys the block means
# are all alike, so $P$ is close to uniform and the "sorted" block is an average of everything.
# The sorting means something only when the blocks differ in content, which is why the paper
# learns the sorting network with the rest of the model.

# %% [markdown]
# ## 8. What each costs, measured against the formulas
#
# Per head, with $D = 64$:
#
# | method | scores computed | FLOPs | largest tensor |
# | --- | --- | --- | --- |
# | dense | $N^2$ | $4N^2D$ | $N^2$ |
# | LSH, chunk $c$, $R$ rounds | $R\cdot N\cdot 2c$ | $4RN\cdot 2c\cdot D$ | $R\cdot N\cdot 2\max(c, D)$ (scores, gathered keys) |
# | Routing, balanced, $b$ clusters | $b\cdot w^2 = Nw$, $w = N/b$ | $4NwD + 4NbD$ (routing $q$, $k$ to centroids) | $N\cdot\max(w, D)$ |
# | Sinkhorn, block $b_s$ | $N\cdot 2b_s$ | $4N\cdot 2b_s\cdot D + 4n_b^2 b_s D$ | $N\cdot 2\max(b_s, D)$ |
# | SortCut, $k$ blocks | $N\cdot k b_s$ | $4N\cdot kb_s\cdot D$ | $N\cdot kb_s$ |
#
# (The $4n_b^2b_sD$ term is the mixing $PK$, $PV$ of the blocks; hashing and sorting carry few
# FLOPs.) `attnkit.count_flops` counts the FLOPs of the matrix products and
# `attnkit.largest_intermediate` the largest tensor a call allocates (Sinkhorn's block attention
# runs inside PyTorch's fused `scaled_dot_product_attention`; `count_flops` counts its CPU kernel
# with the same formula as two matrix products). Settings: LSH with $b = 16$ buckets, $R = 2$ rounds, $c = 64$; Routing balanced with
# $b = N/64$ clusters ($w = 64$), centroids fitted beforehand; Sinkhorn with $b_s = 64$; SortCut
# with $k = 2$. One head, $B = H = 1$ (the formulas scale with $B\cdot H$).

# %%
D8 = 64


def cost_methods(N):
    clusters = N // 64
    return {
        "dense": (lambda q, k, v: dense_attention(q, k, v), 4 * N * N * D8, N * N),
        "lsh b=16 R=2 c=64": (lambda q, k, v: lsh.lsh(q, k, v, buckets=16, rounds=2, chunk=64, seed=0),
                              4 * 2 * N * 128 * D8, 2 * N * 2 * 64),
        "routing balanced w=64": (functools.partial(balanced_routing, clusters=clusters),
                                  4 * N * 64 * D8 + 4 * N * clusters * D8, N * 64),
        "sinkhorn bs=64": (lambda q, k, v: sinkhorn.sinkhorn(q, k, v, block=64),
                           4 * N * 128 * D8 + 4 * (N // 64) ** 2 * 64 * D8, N * 2 * 64),
        "sortcut k=2": (lambda q, k, v: sinkhorn.sinkhorn(q, k, v, block=64, sortcut=2),
                        4 * N * 128 * D8, N * 128),
    }


def balanced_routing(q, k, v, *, clusters):
    return routing.routing(q, k, v, clusters=clusters, centroids=CENTROIDS[clusters], balanced=True)


Ns8 = [512, 1024, 2048, 4096]
CENTROIDS = {}
cost8 = {}
for N in tqdm(Ns8, desc="counting", file=sys.stdout):
    q, k, v = (torch.randn(1, 1, N, D8) for _ in range(3))
    CENTROIDS[N // 64] = routing.spherical_kmeans(torch.cat([q, k], dim=2), N // 64, iters=3, seed=0)
    for name, (fn, flops_formula, largest_formula) in cost_methods(N).items():
        flops = attnkit.count_flops(fn, q, k, v)
        cost8[name, N] = (flops, flops_formula, attnkit.largest_intermediate(fn, q, k, v).numel, largest_formula)

print(f"{'method':<22}" + "".join(f"{'N=' + str(N):>28}" for N in Ns8))
print(f"{'':<22}" + "".join(f"{'FLOPs / formula':>17}{'largest/form.':>11}" for N in Ns8))
for name in cost_methods(Ns8[0]):
    print(f"{name:<22}" + "".join(f"{cost8[name, N][0]:>9.2e} /{cost8[name, N][0] / cost8[name, N][1]:>5.2f}"
                                  f"{cost8[name, N][2]:>9.1e} /{cost8[name, N][2] / cost8[name, N][3]:>4.1f}"
                                  for N in Ns8))

# %% [markdown]
# Time is the noisy measurement, so we keep it at small $N$ and one thread: the median of a few
# calls, float32, $B = 1$, $H = 4$.

# %%
Ns_time8 = [512, 1024, 2048]
time8 = {}
with one_thread(), torch.no_grad():
    for N in tqdm(Ns_time8, desc="timing", file=sys.stdout):
        q, k, v = (torch.randn(1, 4, N, D8) for _ in range(3))
        CENTROIDS[N // 64] = routing.spherical_kmeans(torch.cat([q, k], dim=2), N // 64, iters=3, seed=0)
        for name, (fn, _, _) in cost_methods(N).items():
            fn(q, k, v)  # warm-up
            time8[name, N] = float(np.median([time_call(fn, q, k, v) for _ in range(3)]))

print(f"{'method':<22}" + "".join(f"{'N=' + str(N):>12}" for N in Ns_time8))
for name in cost_methods(Ns8[0]):
    print(f"{name:<22}" + "".join(f"{time8[name, N] * 1e3:>9.1f} ms" for N in Ns_time8))

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.4))
for i, name in enumerate(cost_methods(Ns8[0])):
    ax1.loglog(Ns8, [cost8[name, N][0] for N in Ns8], "o-", color=f"C{i}", ms=4, label=name)
    ax1.loglog(Ns8, [cost8[name, N][1] for N in Ns8], ":", color=f"C{i}", lw=1)
    ax2.loglog(Ns_time8, [time8[name, N] * 1e3 for N in Ns_time8], "o-", color=f"C{i}", ms=4, label=name)
ax1.set(xlabel="N", ylabel="FLOPs (count_flops)", title="FLOPs, one head (dotted: formulas)")
ax2.set(xlabel="N", ylabel="time per call (ms)", title="Time, H = 4, float32, one thread")
for ax, ns in [(ax1, Ns8), (ax2, Ns_time8)]:
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.minorticks_off()
    ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# The counts agree with the formulas: the largest tensor exactly (ratio 1.0 everywhere), the
# FLOPs within a few per cent (LSH's extra 6% is the hashing, $x R$ for every query and round).
# Dense attention's FLOPs and largest tensor grow like $N^2$, the others like $N$, with one
# exception worth noticing: balanced routing with a fixed cluster size $w = 64$ needs $b = N/64$
# centroids, so routing the tokens to them, $4NbD = N^2D/16$, is itself quadratic and dominates
# by $N = 4096$ (without that term the ratio would read 2.0 there). The paper's choice
# $b \approx \sqrt N$ balances the two terms at $O(N^{1.5}D)$. The times follow the counts once
# $N$ is large enough: by $N = 2048$ dense attention is several times slower than all four, and
# its time grows fastest. At $N = 512$ the savings are small, and the LSH path, with its hashing,
# sorting and gathering, can be slower than dense attention.
#
# ## Summary
#
# * Attention's large weights go to *similar* tokens, wherever they are; a fixed pattern catches
#   them only in proportion to its size.
# * Angular LSH puts vectors at angle $\theta$ in the same bucket with probability $1 - \theta/\pi$
#   for two buckets, more selectively for more; the Reformer sorts by bucket and attends in
#   chunks, $O(Nc)$ scores, and hashes in several rounds to win back recall.
# * With shared queries and keys a token is its own best match, so it is masked from its own row.
# * The Routing Transformer fits the groups with spherical k-means, which finds real clusters
#   that random hyperplanes cut through.
# * Sparse Sinkhorn attention learns a soft permutation of blocks, made doubly stochastic by
#   alternating row and column normalisation; SortCut keeps only the first $k$ sorted blocks.
#
# Chapter 5 takes a different road to the same saving: instead of choosing which keys each
# query sees, it shortens the keys themselves.
