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
# # Chapter 7 — Beyond attention: Synthesizer, FNet, gMLP, MLP-Mixer
#
# Every chapter so far kept the core of attention: the weight with which token $i$ reads token
# $j$ is computed from the two tokens, $\operatorname{softmax}_j(q_i\cdot k_j)$, and the methods
# differed in which pairs they compute and how exactly. The lecture notes end with two blunter
# questions. "Do we need $q$ and $k$ to compute attention?" (the Synthesizer), and then
# "attention-free?": FNet, gMLP and MLP-Mixer mix the tokens with no query–key product at all.
# These models do well on some benchmarks; this chapter asks what they *can* learn, on two tiny
# tasks chosen to separate two abilities:
#
# 1. five ways to mix tokens, and what the mixing weight between $i$ and $j$ depends on;
# 2. FNet's Fourier mixing, checked against explicit DFT matrices, and timed;
# 3. two synthetic tasks: copying at a fixed offset (positional) and associative recall
#    (content-based);
# 4. each mixer trained beside dense attention on both, in one tiny model, on the CPU;
# 5. why: the mixing patterns the models learned.
#
# **Notation.** $N$ tokens of width $C$, $X \in \mathbb R^{N\times C}$; $H$ heads. The tasks and the
# model are in `attnkit.tasks`; the mixers in `attnkit.synthesizer` and `attnkit.mixing`, listed in
# `attnkit.MIXERS`.

# %% [markdown]
# ## Setup

# %%
import functools
import math
import sys
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from tqdm.auto import tqdm

import attnkit
from attnkit import dense_attention, mixing, synthesizer, tasks
from attnkit.models import Transformer
from attnkit.measure import time_call
from attnkit.notebook import one_thread, setup

setup(seed=0)
chapter_start = time.perf_counter()

# %% [markdown]
# ## 1. Five ways to mix tokens
#
# A Transformer block alternates two steps: *token mixing* (information moves between
# positions) and a per-token feed-forward layer (it moves between channels). Attention is one
# token mixer. Writing each mixer as "output $i$ = some combination of the tokens $j$", the
# question is what the combination depends on:
#
# | mixer | output $i$ | the weight of token $j$ depends on |
# | --- | --- | --- |
# | dense attention | $\sum_j \operatorname{softmax}_j(q_i\cdot k_j)\, v_j$ | both tokens $x_i$ and $x_j$ |
# | dense Synthesizer | $\sum_j \operatorname{softmax}_j\big(f(x_i)\big)_j\, v_j$, $f(x) = \operatorname{relu}(xW_1)W_2$ | token $i$ alone (its content and, through the embedding, its position) |
# | random Synthesizer | $\sum_j \operatorname{softmax}_j(R_{ij})\, v_j$, $R$ learned, $N\times N$ | positions only (factorised: $R = AB$ of rank $k$) |
# | FNet | $\operatorname{Re}\big(\mathrm{DFT}_N\, X\, \mathrm{DFT}_C\big)_i$ | nothing learned: fixed cosines and sines |
# | MLP-Mixer | $x_i + \big(W_2\,\operatorname{gelu}(W_1 \operatorname{LN}(X))\big)_i$, per channel | positions only, through a small MLP along the sequence |
# | gMLP | $u_i \odot \big(\sum_j W_{ij}\, \operatorname{LN}(v)_j + b_i\big)$ | positions only, but *multiplied* by token $i$'s own features $u_i$ |
#
# Only attention forms a weight from a pair of tokens. The dense Synthesizer lets token $i$
# choose *positions* to read from according to its own content, but it cannot look at what is
# there before choosing. The random Synthesizer, FNet and MLP-Mixer apply the same mixing to
# every input. gMLP also mixes with fixed positional weights, but then multiplies elementwise by
# a projection of token $i$ itself: a product of features of two different tokens, the closest
# any of them comes to an attention score (without a softmax or a search over $j$).
#
# The Synthesizers expose their weights; the next cell shows them for two different random
# inputs, beside the real part of FNet's DFT matrix along the sequence.

# %%
torch.manual_seed(0)
N1, C1 = 16, 32
x_a, x_b = torch.randn(2, 1, N1, C1)  # two inputs (1, N, C)
mods = {
    "dense Synthesizer": synthesizer.DenseSynthesizer(C1, N1, heads=1),
    "random Synthesizer": synthesizer.RandomSynthesizer(C1, N1, heads=1),
    "factorised, k = 2": synthesizer.FactorizedRandomSynthesizer(C1, N1, heads=1, k=2),
}
fig, axes = plt.subplots(2, 4, figsize=(13, 6.4))
with torch.no_grad():
    for col, (name, mod) in enumerate(mods.items()):
        for row, x in enumerate([x_a, x_b]):
            w = mod.weights(x).reshape(-1, N1, N1)[0]  # (N, N), head 0 (and batch element 0)
            axes[row, col].imshow(w.numpy(), cmap="viridis", vmin=0)
            axes[row, col].set_title(f"{name}, input {'ab'[row]}", fontsize=10)
        same = torch.allclose(mod.weights(x_a), mod.weights(x_b))
        rank = int(torch.linalg.matrix_rank(mod.masked_logits(x_a).reshape(-1, N1, N1)[0]))
        print(f"{name:<19} weights the same for both inputs: {same!s:<5}  rank of the logits: {rank}")
CN, SN = mixing.dft_matrices(N1)
for row, (mat, title) in enumerate([(CN, "FNet: Re(DFT) = cos(2πij/N)"), (-SN, "FNet: Im(DFT) = -sin(2πij/N)")]):
    axes[row, 3].imshow(mat.numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
    axes[row, 3].set_title(title, fontsize=10)
for ax in axes.flat:
    ax.set(xlabel="token j", ylabel="output i")
    ax.grid(False)
fig.suptitle(f"Mixing weights at initialisation, N = {N1} (rows: output i, columns: token j)", fontsize=12)
fig.tight_layout()
plt.show()

# %% [markdown]
# The dense Synthesizer's rows change with the input (each row comes from its own token); the
# random ones do not, and the factorised logits have rank $k$. FNet's matrix is not learned
# and not a weighting at all: it has negative entries, and output $i$ is a fixed signed mixture
# of all tokens.

# %% [markdown]
# ## 2. FNet: mixing by a Fourier transform
#
# FNet replaces the attention layer by the real part of the two-dimensional discrete Fourier
# transform, over the sequence and over the channels:
#
# $$
# \operatorname{FNet}(X) = \operatorname{Re}\big(F_N\, X\, F_C\big), \qquad (F_n)_{ab} = e^{-2\pi i\,ab/n}
# = C_n - i S_n,
# $$
#
# so $\operatorname{Re}(F_N X F_C) = C_N X C_C - S_N X S_C$ with $C_n = \cos(2\pi ab/n)$ and
# $S_n = \sin(2\pi ab/n)$. No parameters, and with the FFT it costs $O(NC\log(NC))$ instead of
# attention's $O(N^2C)$. The library computes it with `torch.fft.fft2`; the explicit matrices
# give the same numbers:

# %%
x2 = torch.randn(2, 64, 48, dtype=torch.float64)  # (B, N, C)
print("max |fourier_mixing - (C_N X C_C - S_N X S_C)| =",
      f"{(mixing.fourier_mixing(x2) - mixing.fourier_mixing_reference(x2)).abs().max():.1e}")
print("max |fourier_mixing - torch.fft.fft2(x).real| =",
      f"{(mixing.fourier_mixing(x2) - torch.fft.fft2(x2).real).abs().max():.1e}")

# %% [markdown]
# The speed is the point of FNet. Against one dense attention layer of the same width (one head
# of width $C = 256$, its three projections included, as FNet replaces the whole layer), float32,
# one thread, median of a few calls:

# %%
C2 = 256
w_qkv = torch.randn(C2, 3 * C2) / math.sqrt(C2)


def attention_layer(x):
    q, k, v = (x @ w_qkv).chunk(3, dim=-1)  # (B, N, C) each
    return dense_attention(q[:, None], k[:, None], v[:, None])[:, 0]  # one head: (B, N, C)


speed2 = {}
with one_thread(), torch.no_grad():
    for N in [256, 1024, 4096]:
        x = torch.randn(1, N, C2)
        t_att = float(np.median([time_call(attention_layer, x) for _ in range(3)]))
        t_fft = float(np.median([time_call(mixing.fourier_mixing, x) for _ in range(3)]))
        speed2[N] = (t_att, t_fft)
        print(f"N = {N:>5}: attention layer {t_att * 1e3:8.2f} ms, Fourier mixing {t_fft * 1e3:6.2f} ms, "
              f"{t_att / t_fft:5.1f}x faster")

# %% [markdown]
# The gap grows with $N$, as $N^2$ against $N\log N$ predicts. What FNet gives up for it is the
# subject of the rest of the chapter.

# %% [markdown]
# ## 3. Two tasks: one positional, one content-based
#
# `attnkit.tasks` draws both from a seed.
#
# **Offset copy** (`offset_copy`): $N = 16$ random tokens from 16 symbols; the target at position
# $i \ge 3$ is the token at $i - 3$. The rule is about *positions*: the same matrix of weights
# (1 at $j = i - 3$) solves every sequence.
#
# **Associative recall** (`associative_recall`, `fused=True`): 4 key–value pairs, each written as
# one token, then a query key; the target at the last position is the query's value. Keys are
# distinct, from 8 symbols; values from 8 symbols, repeats allowed. Where the answer sits depends
# on the *content*: the query must find the pair with the matching key, which can be at any of
# the 4 positions.

# %%
COPY = dict(length=16, vocab=16, offset=3)
RECALL = dict(pairs=4, keys=8, values=8, fused=True)
RECALL_VOCAB = tasks.recall_vocab(RECALL["keys"], RECALL["values"], fused=True)
x, y = tasks.offset_copy(2, seed=0, **COPY)
print("offset copy   inputs :", x[0].tolist())
print("              targets:", ["·" if t == tasks.IGNORE else t for t in y[0].tolist()])
x, y = tasks.associative_recall(2, seed=0, **RECALL)
K, V = RECALL["keys"], RECALL["values"]
for s in range(2):
    pairs = [divmod(int(t) - K - V, V) for t in x[s, :-1]]
    print(f"recall {s}: pairs (key, value) {pairs}, query key {int(x[s, -1])} -> value {int(y[s, -1]) - K}")

# %% [markdown]
# Two baselines for recall. *Chance* is $1/8$. But a mixer that cannot match the query to its pair
# can still collect *which values occur* in the sequence and answer the most frequent one; with
# 4 pairs and repeated values that is right more often than chance. Its accuracy, exactly, on
# the held-out sequences:

# %%
x_test, y_test = tasks.associative_recall(20_000, seed=123, **RECALL)
vals = (x_test[:, :-1] - K - V) % V  # (n, p) the values in each sequence
counts = torch.nn.functional.one_hot(vals, V).sum(1)  # (n, V) how often each value occurs
answer = y_test[:, -1] - K  # (n,)
tied = counts == counts.max(-1, keepdim=True).values  # (n, V) the most frequent values
bag_baseline = float((tied.gather(1, answer[:, None])[:, 0] / tied.sum(-1)).mean())
print(f"chance 1/{V} = {1 / V:.3f};  'answer the most frequent value in the sequence' = {bag_baseline:.3f}")

# %% [markdown]
# ## 4. Every mixer on both tasks
#
# One tiny model for all (`attnkit.models.Transformer`, the model every later chapter trains too): token embedding plus learned positions, one
# block, a linear read-out, width $C = 32$. For attention and the Synthesizers the block is
# pre-norm, $x + \text{mixer}(\operatorname{LN}(x))$ then $x + \operatorname{FFN}(\operatorname{LN}(x))$,
# with 2 heads; FNet, gMLP and MLP-Mixer are used as the blocks their papers define (their own
# norms and residuals, FNet and MLP-Mixer with a feed-forward or channel MLP, gMLP with its
# gated MLP). Training: AdamW, learning rate $10^{-2}$ with warm-up and cosine decay, 200 steps of
# 64 fresh sequences, one thread; accuracy on 1024 held-out sequences. FNet gets a second run
# with two blocks, for a reason section 5 explains.

# %%
MIXER_NAMES = ["dense", "synthesizer_dense", "synthesizer_random", "synthesizer_factorized",
               "fnet", "gmlp", "mixer"]
TASKS = {
    "offset copy": (functools.partial(tasks.offset_copy, **COPY), COPY["vocab"], COPY["length"]),
    "recall": (functools.partial(tasks.associative_recall, **RECALL), RECALL_VOCAB, RECALL["pairs"] + 1),
}
TRAIN = dict(steps=200, batch_size=64, lr=1e-2, eval_every=25, seed=0)


def run(name, task, layers=1):
    sampler, vocab, length = TASKS[task]
    model = Transformer(name, vocab=vocab, max_len=length, d_model=32, n_layers=layers, n_heads=2,
                        seed=0)
    result = tasks.train(model, sampler, **TRAIN)
    return model, result


models, results = {}, {}
t_train = time.perf_counter()
for name, task in tqdm([(n, t) for n in MIXER_NAMES for t in TASKS], desc="training", file=sys.stdout):
    models[name, task], results[name, task] = run(name, task)
models["fnet, 2 blocks", "offset copy"], results["fnet, 2 blocks", "offset copy"] = run("fnet", "offset copy", 2)
print(f"{len(results)} runs in {time.perf_counter() - t_train:.0f} s")

# %%
print(f"{'mixer':<24} {'parameters':>10} {'offset copy':>12} {'recall':>8} {'ms / step':>10}"
      "   (parameters of the offset-copy model)")
for name in MIXER_NAMES + ["fnet, 2 blocks"]:
    row = [results.get((name, t)) for t in TASKS]
    n_params = sum(p.numel() for p in models[name, "offset copy"].parameters())
    accs = " ".join(f"{r.accuracy:>{w}.2f}" if r else f"{'–':>{w}}" for r, w in zip(row, (12, 8)))
    ms = np.mean([r.step_seconds for r in row if r]) * 1e3
    print(f"{name:<24} {n_params:>10,} {accs} {ms:>10.1f}")
print(f"chance: offset copy {1 / COPY['vocab']:.2f}, recall {1 / V:.2f};  most-frequent-value baseline "
      f"for recall {bag_baseline:.2f}")

# %%
labels = MIXER_NAMES + ["fnet, 2 blocks"]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.6), gridspec_kw={"width_ratios": [1.3, 1]})
xs = np.arange(len(labels))
for i, task in enumerate(TASKS):
    acc = [results[n, task].accuracy if (n, task) in results else np.nan for n in labels]
    ax1.bar(xs + (i - 0.5) * 0.38, acc, width=0.38, label=task, color=f"C{i}")
ax1.axhline(bag_baseline, color="C1", ls="--", lw=1, label="recall: most frequent value")
ax1.axhline(1 / V, color="C1", ls=":", lw=1, label="recall: chance")
ax1.axhline(1 / COPY["vocab"], color="C0", ls=":", lw=1, label="copy: chance")
ax1.set_xticks(xs, [n.replace("synthesizer_", "synth. ") for n in labels], rotation=25, ha="right")
ax1.set(ylabel="held-out accuracy", ylim=(0, 1.05), title="After 200 steps, one block (FNet also two)")
ax1.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=3)
for j, name in enumerate(MIXER_NAMES):
    r = results[name, "recall"]
    ax2.plot(r.eval_steps, r.accuracies, "o-", ms=3, color=f"C{j}", label=name.replace("synthesizer_", "synth. "))
ax2.axhline(bag_baseline, color="grey", ls="--", lw=1)
ax2.set(xlabel="training step", ylabel="held-out accuracy", title="Associative recall while training",
        ylim=(0, 1.05))
ax2.legend(fontsize=7)
fig.tight_layout()
plt.show()

# %% [markdown]
# The two tasks split the mixers as the table of section 1 predicts.
#
# **Offset copy is easy for anything with learned positional mixing.** Dense attention, the dense
# and factorised Synthesizers, gMLP and MLP-Mixer reach 1.00; the
# random Synthesizer is the slowest learner (0.93 after 200 steps), because its logits start as
# $\mathcal N(0, 1)$ noise and must grow one sharp entry per row. One FNet block cannot do it
# (0.27): its mixing is fixed, so the feed-forward layer at position $i$ receives one fixed
# signed mixture of all 16 tokens, from which it cannot pull out the token at $i - 3$. Two FNet
# blocks solve it (1.00); section 5 says how that is possible.
#
# **Recall needs the weights to depend on content.** Only dense attention (0.99) and gMLP (0.88)
# beat the most-frequent-value baseline (0.41). The three Synthesizers and MLP-Mixer end between
# 0.35 and 0.40, just under it, and FNet lower: they learned which values occur in a sequence,
# not which one belongs to the query. That is all their mixing allows. The position of the
# matching pair changes from sequence to sequence, and their weights for position $j$ cannot look
# at whether the key at $j$ matches; the dense Synthesizer's weights can depend on the query key
# itself, but that does not say *where* its pair is. gMLP is the exception among the
# attention-free mixers because of its multiplicative gate; it climbs more slowly than dense
# attention and levels off at 0.88 as the learning rate decays (the right panel). At $N \le 16$ the times per step say nothing about scaling: all are within a
# factor of two, dominated by fixed per-step overheads.

# %% [markdown]
# ## 5. Why: what the mixers learned
#
# The table says *whether*; the learned weights say *how*. For the offset copy, the random
# Synthesizer's softmax weights and gMLP's spatial matrix $W$ are $N\times N$ maps from token $j$
# to output $i$, and dense attention's weights can be read off for one sequence. For recall,
# dense attention's weights of the query (last row) show whether it found the matching pair.

# %%
def attention_weights(model, tokens):
    """Softmax weights (H, N, N) of the first block of an attention Transformer on tokens (1, N)."""
    block = model.blocks[0]
    mha = block.mixer.attn
    with torch.no_grad():
        h = block.ln1(model.tok(tokens) + model.pos.weight[: tokens.shape[1]])  # (1, N, C)
        q = attnkit.split_heads(mha.w_q(h), mha.n_heads)  # (1, H, N, D)
        k = attnkit.split_heads(mha.w_k(h), mha.n_heads)
        return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)[0]  # (H, N, N)


x_copy, _ = tasks.offset_copy(1, seed=7, **COPY)
fig, axes = plt.subplots(1, 4, figsize=(14, 3.9))
panels = [
    (attention_weights(models["dense", "offset copy"], x_copy).mean(0), "dense attention\n(mean of heads)"),
    (models["synthesizer_random", "offset copy"].blocks[0].mixer.weights(torch.zeros(1, COPY["length"], 32))
     .detach().mean(0), "random Synthesizer\n(mean of heads)"),
    (models["gmlp", "offset copy"].blocks[0].gate_weight.detach(), "gMLP: spatial matrix W"),
]
for ax, (mat, title) in zip(axes, panels):
    lim = float(mat.abs().max())
    ax.imshow(mat.numpy(), cmap="viridis" if mat.min() >= 0 else "RdBu_r",
              vmin=0 if mat.min() >= 0 else -lim, vmax=lim)
    ax.set(title=f"offset copy: {title}", xlabel="token j", ylabel="output i")
    ax.title.set_fontsize(10)
    ax.grid(False)

x_rec, _ = tasks.associative_recall(200, seed=7, **RECALL)
last = torch.stack([attention_weights(models["dense", "recall"], x_rec[s:s + 1])[:, -1]
                    for s in range(len(x_rec))])  # (n, H, N): the query's row in each head
match = (x_rec[:, :-1] - K - V) // V == x_rec[:, -1:]  # (n, p): the pair with the query's key
on_match = (last[:, :, :-1] * match[:, None]).sum(-1)  # (n, H)
shown = torch.cat([last[:6, 0], torch.full((6, 1), float("nan")), last[:6, 1]], dim=-1)  # (6, 2N + 1)
axes[3].imshow(shown.numpy(), cmap="viridis", vmin=0, vmax=1)
for s in range(6):
    j = int(match[s].nonzero()[0, 0])
    for offset in (0, RECALL["pairs"] + 2):
        axes[3].add_patch(plt.Rectangle((offset + j - 0.5, s - 0.5), 1, 1, fill=False, ec="C3", lw=2))
axes[3].set_xticks(range(2 * RECALL["pairs"] + 3), ["p1", "p2", "p3", "p4", "q", "", "p1", "p2", "p3", "p4", "q"])
axes[3].set(title="recall, dense attention: the query's row\nhead 0 | head 1 (red: the matching pair)",
            ylabel="sequence")
axes[3].title.set_fontsize(10)
axes[3].grid(False)
fig.tight_layout()
plt.show()
print(f"dense attention on recall, {len(x_rec)} sequences: weight of the query on the matching pair, mean per "
      f"head {[round(float(w), 2) for w in on_match.mean(0)]}; the larger of the two heads: mean "
      f"{float(on_match.max(-1).values.mean()):.2f}, above 0.5 in {float((on_match.max(-1).values > 0.5).double().mean()):.0%}"
      " of the sequences")

# %% [markdown]
# For the copy, dense attention and gMLP learned the same thing in different forms: a single
# diagonal at $j = i - 3$ (the first three rows have no target, and attention spreads them
# anywhere). gMLP's $W$ is almost exactly the shift matrix, so its gate computes
# $u_i \odot \operatorname{LN}(v)_{i-3}$, the copied token scaled by features of the current one.
# The random Synthesizer found the same diagonal, blurrier after 200 steps. For recall, dense
# attention's two heads share the work: neither finds the matching pair every time, but in most
# sequences one of them puts more than half of the query's weight on it, wherever it is (the red
# boxes; the printout gives the shares over 200 sequences), and the rest goes mostly to the query
# token itself. That is the content-based lookup the other mixers lack.
#
# **How two FNet blocks copy.** A shift is diagonal in the Fourier basis: shifting a sequence by
# 3 multiplies its frequency $f$ by $e^{-2\pi i\, 3f/N}$ (the convolution theorem). After the
# first block's transform, position $i$ of the hidden sequence holds frequency $i$ of the input,
# so a per-token feed-forward layer acts on each frequency separately, and it knows which
# frequency it is at through the learned position embedding carried in the residual stream; the
# second transform maps back. Transform, per-frequency filter, transform back is a convolution,
# and a shift is a convolution. (The real parts and the transform over channels make the exact
# computation messier; the accuracy says the model found a way.) Depth buys FNet fixed,
# input-independent filters of any shape, but not content-dependent lookups.

# %% [markdown]
# ## Summary
#
# * Token mixers differ in what the weight between tokens $i$ and $j$ may depend on: both
#   tokens (attention), token $i$ only (dense Synthesizer), positions only (random Synthesizer,
#   MLP-Mixer, gMLP's $W$), or nothing learned (FNet's Fourier transform).
# * Positional tasks do not need token–token interaction: on the offset copy every mixer with
#   learned positional weights matched dense attention, and FNet did with two blocks.
# * Content-based lookup does: on associative recall the Synthesizers, MLP-Mixer and FNet stayed
#   at or under a baseline that only counts values; dense attention solved it, and gMLP, whose
#   gate multiplies features of two tokens, came second.
# * FNet's mixing costs $O(NC\log(NC))$ and no parameters; section 2 measured it many times
#   faster than a dense attention layer, the gap growing with $N$. The trade is the one above:
#   cheap fixed mixing, no lookup by content. The gMLP paper draws the same conclusion and adds a tiny
#   attention head ("aMLP") for tasks that need cross-token alignment.

# %%
print(f"chapter ran in {time.perf_counter() - chapter_start:.0f} s")
