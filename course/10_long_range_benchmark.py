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
# # Chapter 10 — The long-range benchmark, and what pretraining knows
#
# Each chapter so far checked a variant against its dense reference: same numbers, less time or
# memory. None asked the question the field asks of them, which the Long Range Arena (Tay et al.
# 2021) put into one figure: **trained on the same task, with the same budget, what does each
# variant give up in accuracy for its speed and memory?** This chapter trains every attention
# variant and every token mixer of the course in one small model, on three synthetic long-range
# tasks, and then reruns the birth-place experiment of the source assignment: a tiny GPT that
# answers "Where was X born?" only if it has read about X before.
#
# 1. the three tasks, and what each mixer should manage before any number is measured;
# 2. the benchmark: every variant × every task, accuracy, step time, peak memory;
# 3. reading the table: where a variant fails, and the evidence for why;
# 4. cost as N grows;
# 5. the birth-place experiment: span corruption, fine-tuning, the "always London" baseline;
# 6. efficient attention in pretraining;
# 7. one table for the whole course.
#
# **Where things are.** The model is `attnkit.models.Transformer` (any variant or mixer by name;
# an encoder, or a decoder with `causal=True`), trained by `attnkit.training.fit`. The tasks are
# in `attnkit.lra`, the benchmark in `attnkit.capstone` (`make capstone`; the full table and its
# machine are in `docs/capstone.md`), the birth-place corpus and experiment in
# `attnkit.biography`. This notebook runs the *quick* budgets, about six minutes on a 2-core CPU.

# %% [markdown]
# ## Setup

# %%
import random
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from IPython.display import Image, Markdown, display

import attnkit
from attnkit import biography, capstone, lra
from attnkit.models import Transformer, causal_names, mixer_names
from attnkit.notebook import setup

setup(seed=0)
T_START = time.perf_counter()
OUT = Path("build") / "chapter10"

# %% [markdown]
# ## 1. Three long-range tasks
#
# Each task is drawn afresh from a seed at every training step (`task(n, length=N, seed=s)`
# returns token ids and targets, with `IGNORE` where nothing is asked), so a model cannot memorise
# its training set, and in each the evidence for an answer lies $N/2$ to $N$ tokens from where the
# answer is asked:
#
# * **ListOps** (hierarchical; LRA's own task): a nested expression over the digits, with MAX,
#   MIN, MED (lower median) and SM (sum mod 10), written at the start and padded to $N$; the
#   answer, a digit, is asked at the last token `=`.
# * **Recall** (content-based): four key–value pair tokens at random places among filler, then
#   one of the keys; the answer is its value. *Where* the pair sits depends on the tokens.
# * **Copy** (positional): uniform tokens; every token of the second half must output the token
#   $N/2$ before it. *Where* to look is the same for every input.

# %%
N_SHOW = 48
for name, task in lra.TASKS.items():
    x, y = task.fn(1, length=N_SHOW, seed=3)
    asked = (y[0] != lra.IGNORE).nonzero().flatten()
    print(f"{name:8s} vocab {task.vocab:3d}, chance {task.chance:.3f}: {task.tests}")
    print("   inputs :", " ".join(str(t) for t in x[0].tolist()))
    print(f"   asked at {len(asked)} position(s), first answer {y[0, asked[0]].item()} at position {asked[0].item()}\n")

x, y = lra.listops(1, length=64, seed=3)
tokens = [lra.LISTOPS_TOKENS[t] for t in x[0].tolist()]
print("ListOps, as text:", " ".join(t for t in tokens if t != "_"), "  -> answer",
      lra.LISTOPS_TOKENS[y[0, -1].item()], "(checked by an independent evaluator:", lra.listops_value(x[0]), ")")

# %% [markdown]
# What each kind of mixer should manage, before any number: the reach of a layer is the set of
# keys a query can read, and $L$ layers compose it.
#
# | mixer | reach of one layer | recall (content) | copy (position) | ListOps (whole expression) |
# | --- | --- | --- | --- | --- |
# | dense, linear, Performer, Linformer, ... | every token | yes | yes | yes |
# | local window $w$ | $w$ tokens | only if $L\,w \ge$ the distance | only if $L\,w \ge N/2$ | no |
# | strided / fixed / BigBird / Longformer | window plus summary or global tokens | through the summaries | if the stride divides $N/2$ | through the summaries |
# | Synthesizer (random), MLP-Mixer, FNet | every token, with weights fixed in advance | **no**: the weights cannot depend on where the pair is | yes | hard |
#
# The first three rows are about *reach*, the last about *content*: a mixer whose weights are
# the same for every input can learn "look $N/2$ back" but not "look where the matching key is".

# %% [markdown]
# ## 2. The benchmark
#
# Every name in `mixer_names()` goes into the same model, $C = 32$, $L = 2$ layers, 2 heads,
# learned positions, trained with AdamW (warm-up, cosine decay) on fresh batches with the same
# seeds, and scored on the same held-out sequences. Hyperparameters scale with the training
# length (`capstone.mixer_kwargs`): windows and blocks $N/16$, strides and Linformer's $k$ $N/8$.
# The quick budget below trains at $N = 32$ for 80 steps, one seed; the full budget
# (`make capstone`, `docs/capstone.md`) trains at $N = 128$ for 200 steps, two seeds. Both time
# one training step at larger $N$ too (section 4).

# %%
print(f"{len(mixer_names())} mixers: {', '.join(mixer_names())}")
print("quick budget:", capstone.QUICK)
rows = capstone.run(quick=True, out=OUT)
speed_rows = capstone.run.speed_rows
display(Markdown((OUT / "results.md").read_text()))

# %%
display(Image(filename=str(OUT / "capstone.png")))

# %% [markdown]
# ## 3. Reading the table
#
# A variant "fails" a task here when its accuracy is within a few points of the better of chance
# and "always the most common answer". The cell below sorts every variant into passed and failed
# per task, first for the quick run above, then for the full run (`make capstone`: $N = 128$,
# 200 steps, two seeds), whose results are kept in `docs/capstone/results.csv` with the machine
# and commit they came from. At 80 steps nobody learns recall, dense attention included: a
# budget that short separates the mixers on copy and hardly on the rest, which is why the full
# run exists.

# %%
import csv

by = {(r.variant, r.task): r for r in rows}
MARGIN = 0.05
FULL_CSV = Path("..") / "docs" / "capstone" / "results.csv"
full = [r for r in csv.DictReader(FULL_CSV.open())] if FULL_CSV.exists() else []


def classify(table, label):
    """Print, per task, who is above the floor (max of chance and the most common answer) and who is at it."""
    print(f"--- {label}")
    for task in dict.fromkeys(r["task"] for r in table):
        ok = [r for r in table if r["task"] == task and r["status"] == "ok"]
        if not ok:
            continue
        floor = max(float(ok[0]["chance"]), float(ok[0]["majority"]))
        passed = sorted((r for r in ok if float(r["accuracy_mean"]) > floor + MARGIN),
                        key=lambda r: -float(r["accuracy_mean"]))
        failed = [r["variant"] for r in ok if float(r["accuracy_mean"]) <= floor + MARGIN]
        print(f"{task}: floor {floor:.2f}, {len(ok)} variants")
        print("   above it:", ", ".join(f"{r['variant']} {float(r['accuracy_mean']):.2f}" for r in passed) or "none")
        print("   at it   :", ", ".join(failed) or "none")
        other = [r for r in table if r["task"] == task and r["status"] != "ok"]
        if other:
            print("   not run :", "; ".join(f"{r['variant']} ({r['note']})" for r in other))


classify([{k: str(v) for k, v in vars(r).items()} for r in rows], f"quick run (N = {capstone.QUICK.length}, this notebook)")
if full:
    classify(full, f"full run (N = {full[0]['N']}, seeds {full[0]['seeds']}; docs/capstone/results.csv)")

# %% [markdown]
# What the full run's recall column says (two seeds each, `docs/capstone.md` has the table):
# dense attention reaches about 0.62 against a floor of 0.28; routing (k-means clusters coarse
# enough that a query and its key often share one), the Performer and efficient attention
# learn part of it; every window, every pattern fixed by position, Linformer and compressed
# attention, and every mixer whose weights ignore the tokens stay at the floor. Transformer-XL
# sees only the last half of the sequence and answers a little above it. Copy at $N = 128$ is a
# warning about budgets rather than about structure: the windows cannot reach 64 tokens back
# and stay at chance, strided attention (stride 16 divides 64) solves it on both seeds, and
# dense attention solves it on one seed of two within 200 steps.
#
# The reach of the windowed variants, against the distance each task needs, at the quick
# run's length:

# %%
N_TRAIN = capstone.QUICK.length
print(f"reach of L = 2 layers at N = {N_TRAIN}; recall and copy need up to N/2 = {N_TRAIN // 2} tokens "
      f"or more, ListOps up to N - 1 = {N_TRAIN - 1}")
for name in ["local", "dilated", "longformer", "bellcurve", "adaptive_span"]:
    kw = capstone.mixer_kwargs(name, N_TRAIN)
    w = kw.get("window", kw.get("span", 0))
    reach = 2 * w * kw.get("dilation", 1)
    extra = f" + {kw['global_tokens']} global tokens" if "global_tokens" in kw else ""
    accs = "  ".join(f"{t} {by[name, t].accuracy_mean:.2f}" for t in lra.TASKS if (name, t) in by
                     and by[name, t].status == "ok")
    print(f"  {name:14s} {str(kw):60s} reach {reach:3.0f}{extra:22s} {accs}")

# %% [markdown]
# **Why the fixed mixers cannot recall.** A Synthesizer (random) mixes with one learned
# $N\times N$ matrix, the same for every input; FNet with the Fourier transform, the same for
# every input; MLP-Mixer with a learned token MLP. Recall asks each sequence to read the one
# position whose key matches the query, a position that changes from sequence to sequence. The
# cell below measures the only thing that could help them: whether the answer can be read off a
# *fixed* place. It cannot: the queried pair sits almost uniformly anywhere.

# %%
K, V = 4, 4  # far_recall's defaults: filler 0, keys 1..K, values K+1..K+V, pair (k, v) = 1 + K + V + k·V + v
x, y = lra.far_recall(4096, length=N_TRAIN, seed=11)  # (4096, N)
query_key = x[:, -1] - 1  # (4096,)
is_pair = x[:, :-1] >= 1 + K + V  # (4096, N - 1)
pair_key = torch.where(is_pair, (x[:, :-1] - (1 + K + V)) // V, -1)
pos = (pair_key == query_key[:, None]).float().argmax(-1)  # (4096,) where the queried pair sits
counts = torch.bincount(pos, minlength=N_TRAIN - 1).float()
print(f"where the queried pair sits, over {len(pos)} sequences: the most common of the {N_TRAIN - 1} positions "
      f"holds {counts.max() / counts.sum():.1%} of them (uniform: {1 / (N_TRAIN - 1):.1%}); a fixed pattern that "
      f"bets on one place is right that often")


# %% [markdown]
# ## 4. Cost as N grows
#
# The tasks are trained at a small $N$ because a CPU cannot train 25 models at $N = 4096$ in a
# few minutes; the cost is what changes with $N$, and that is measured directly: one training
# step (forward, backward, AdamW) at each length, batch 1, with the hyperparameters the model was
# trained with (a window stays $w$ tokens as $N$ grows), and the peak memory of its forward and
# backward pass. The quick run above measured $N = 256$ and $512$; the plot shows the full
# run's $N = 512$ to $4096$ from `docs/capstone/speed.csv` (the machine is in
# `docs/capstone.md`), or the quick run's where that file is missing.

# %%
FULL_SPEED = Path("..") / "docs" / "capstone" / "speed.csv"
if FULL_SPEED.exists():
    speed_table = [dict(r, N=int(r["N"]), step_ms=float(r["step_ms"] or "nan"),
                        peak_memory_mb=float(r["peak_memory_mb"] or "nan")) for r in csv.DictReader(FULL_SPEED.open())]
else:
    speed_table = [vars(r) for r in speed_rows]
lengths = sorted({r["N"] for r in speed_table})
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for name in dict.fromkeys(r["variant"] for r in speed_table):
    pts = [(r["N"], r["step_ms"], r["peak_memory_mb"]) for r in speed_table if r["variant"] == name and r["status"] == "ok"]
    if len(pts) < 2:
        continue
    style = dict(lw=2.5, color="k") if name == "dense" else dict(lw=1, alpha=0.6)
    axes[0].plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name, **style)
    axes[1].plot([p[0] for p in pts], [p[2] for p in pts], marker="o", **style)
for ax, what in zip(axes, ["training step (ms)", "peak memory of forward + backward (MB)"]):
    ax.set(xscale="log", yscale="log", xlabel="N", ylabel=what)
    ax.xaxis.set_minor_locator(plt.NullLocator())
    ax.set_xticks(lengths, [str(n) for n in lengths])
axes[0].legend(fontsize=6, ncol=2)
fig.tight_layout()
plt.show()
at = {(r["variant"], r["N"]): r for r in speed_table if r["status"] == "ok"}
print(f"growth from N = {lengths[0]} to {lengths[-1]} (x{lengths[-1] // lengths[0]} in N): step time, peak memory")
for name in dict.fromkeys(r["variant"] for r in speed_table):
    a, b = at.get((name, lengths[0])), at.get((name, lengths[-1]))
    if a and b:
        print(f"  {name:24s} time x{b['step_ms'] / a['step_ms']:5.1f}   memory x{b['peak_memory_mb'] / a['peak_memory_mb']:5.1f}")

# %% [markdown]
# ## 5. The birth-place experiment
#
# The source assignment pretrains a small GPT on Wikipedia biographies with *span corruption*,
# fine-tunes it on "Where was X born?" for some people, and asks about people it was not
# fine-tuned on. Its three numbers: without pretraining 1 % correct; always answering "London"
# (the most common birth place) 5 %; pretrained then fine-tuned 13.8 %. Fine-tuning teaches the
# *format*; only pretraining can have put "X was born in Paris" into the weights.
#
# The kit's version is synthetic and small: fictional people with syllable names, birth places
# from 20 cities with skewed quotas (London about 11 %), three biographies each with distractor
# cities ("studied in Oslo", "moved to Lima"), a word-level vocabulary.

# %%
config = biography.QUICK
corpus = biography.make_corpus(0, n_people=config.n_people, bios_per_person=config.bios_per_person,
                               train_frac=config.train_frac)
print(f"{len(corpus.people)} people, {len(corpus.bios)} biographies, {len(corpus.train)} fine-tuning questions, "
      f"{len(corpus.heldout)} held-out questions")
for bio in corpus.bios[:3]:
    print("  ", bio)
print("  ", corpus.train[0])
births = [p.birth for p in corpus.people]
top = sorted(set(births), key=births.count, reverse=True)[:5]
print("most common birth places:", ", ".join(f"{c} {births.count(c) / len(births):.0%}" for c in top))

# %% [markdown]
# **Span corruption**, as CS224N defines it (here on tokens): truncate the document to a random
# length, cut out a random span of about a quarter of it, and move the span to the end between
# mask markers `⁇`. Trained as a causal language model on that sequence, the model must
# reconstruct the span from everything else, which is often exactly the fact: "⁇ born in London".
# Fine-tuning examples are `question ⁇ answer ⁇`, with no loss on the question.

# %%
ids = biography.encode(corpus.bios[0])
x, y = biography.span_corrupt(ids, block=config.block, rng=random.Random(4))
print("document :", corpus.bios[0])
print("corrupted:", biography.decode([t for t in x.tolist() if t != biography.PAD]))
q, a = corpus.train[0]
x, y = biography.finetune_example(biography.encode(q), biography.encode(a), block=config.ft_block)
print("fine-tune:", biography.decode([t for t in x.tolist() if t != biography.PAD]))
print("targets  :", " ".join("·" if t in (biography.IGNORE, biography.PAD) else biography.VOCAB[t] for t in y.tolist()))

# %% [markdown]
# The experiment on one seed, with the quick budget (`biography.QUICK`: 150 people, a 2-layer
# decoder of width 64, 800 pretraining steps of 32 sequences, 60 fine-tuning steps; a minute or
# two on one CPU thread). Both models start from the same initialisation; one is fine-tuned
# directly, the other pretrained first.

# %%
dense = biography.experiment("dense", seed=0, config=config, progress=True)
print(f"held-out accuracy: no pretraining {dense['no_pretraining']:.1%}, always {dense['baseline_city']} "
      f"{dense['baseline']:.1%}, pretrained {dense['pretrained']:.1%}  ({dense['seconds']:.0f} s)")

# %% [markdown]
# Without pretraining the model learns which answers are common and nothing about the people it
# was not fine-tuned on, so it lands at (or below) the baseline, as in the source; pretraining
# puts it well above. Over three seeds (`scripts/birthplace.py`, table in `docs/capstone.md`),
# with 58 held-out people a seed, so one person is 1.7 points:
#
# | budget | variant | no pretraining | always London | pretrained |
# | --- | --- | --- | --- | --- |
# | QUICK (800 steps) | dense | 11.5 ± 1.0 % | 10.3 % | 21.3 ± 9.5 % |
# | QUICK | local, $w = 4$ | 9.8 ± 2.6 % | 10.3 % | 17.2 ± 0.0 % |
# | QUICK | Performer, $m = 64$ | 11.5 ± 1.0 % | 10.3 % | 20.7 ± 7.5 % |
# | FULL (1600 steps) | dense | 11.5 ± 1.0 % | 10.3 % | 36.2 ± 16.4 % |
#
# The ordering of the source holds (no pretraining ≈ baseline < pretrained), and the spread is
# wide: at the quick budget one seed of three pretrained no better than the baseline; doubling
# the pretraining gives every seed at least 2.5 times the baseline. Memorising a fact per person
# from three sentences is slow for a tiny model, as it was for the source's GPT.
#
# ## 6. Efficient attention in pretraining
#
# Swap the decoder's attention: a causal window of 4 tokens (two layers reach 8 back), and the
# Performer's causal FAVOR+ (prefix sums of $\phi(k)v^\top$, every earlier token in reach).

# %%
local = biography.experiment("local", seed=0, config=config, progress=True, window=4)
print(f"local w=4: no pretraining {local['no_pretraining']:.1%}, pretrained {local['pretrained']:.1%} "
      f"(dense {dense['pretrained']:.1%}, baseline {local['baseline']:.1%})")

# %% [markdown]
# What the window removes is the distance: span corruption moves the masked span to the end of
# the sequence, 10 to 40 tokens from the person's name, so under a window of 4 "⁇ born in London"
# is rebuilt without seeing whose biography it is. The only sentences that still teach the fact
# are those where the city sits within reach of the name ("Kalo Mirasu was born in London");
# "Her birthplace is London", ten or more tokens after the name, teaches nothing. The Performer
# keeps every earlier token in reach and recovers dense's accuracy on average, at a higher cost
# per step at this length: $m = 64$ random features is more than the $N = 48$ keys it replaces,
# and linear attention only pays when $N \gg m$ (chapter 6).

# %% [markdown]
# ## 7. One table for the whole course
#
# Cost formula (from the registry), measured step time and peak memory of one training step at
# the largest length of section 4, and accuracy on each task at the quick budget. Read it with the caveat of
# section 3: at 80 steps, a low number may be a slow learner rather than an impossible task;
# `docs/capstone.md` has the longer run.

# %%
from attnkit.registry import MIXERS, VARIANTS

N_BIG = lengths[-1]
speed = {r["variant"]: r for r in speed_table if r["N"] == N_BIG}
lines = [f"| variant | family | cost | step ms at N={N_BIG} | peak MB at N={N_BIG} | "
         + " | ".join(lra.TASKS) + " |", "|---" * (5 + len(lra.TASKS)) + "|"]
for name in mixer_names():
    entry = VARIANTS.get(name) or MIXERS.get(name)
    s = speed.get(name)
    cost = entry.cost.replace("|", "/")
    step = f"{s['step_ms']:.0f}" if s and s["status"] == "ok" else (s["status"] if s else "")
    mem = f"{s['peak_memory_mb']:.1f}" if s and s["status"] == "ok" else ""
    accs = [f"{by[name, t].accuracy_mean:.2f}" if (name, t) in by and by[name, t].status == "ok"
            else (by[name, t].status if (name, t) in by else "") for t in lra.TASKS]
    lines.append(f"| {name} | {entry.family} | {cost} | {step} | {mem} | " + " | ".join(accs) + " |")
display(Markdown("\n".join(lines)))

# %% [markdown]
# ## Summary
#
# * One model, one budget, one set of seeds: the only difference between two rows of the
#   benchmark is the token mixer. Accuracy, step time and peak memory together are the trade.
# * Reach and content are different failures. A window fails whatever needs more than $L\,w$
#   tokens of reach; a mixer whose weights are fixed in advance (Synthesizer (random), FNet,
#   MLP-Mixer) can learn *where* to look but not *where the matching key is*.
# * The memory of a variant is decided by what it materialises: $N^2$ scores for dense, $N\,w$ for
#   a window, $N\,m$ features for the Performer; at small $N$ the constant factors win, which is
#   why the speed part is measured and not assumed.
# * Pretraining is where knowledge comes from: fine-tuning alone lands at the "always London"
#   baseline; a model pretrained on the biographies answers for people it was never fine-tuned
#   on. An efficient attention keeps that only if its reach covers the distance between the fact
#   and the name it belongs to.
#
# Assignment `a7_capstone` is the hands-on half: the span-corruption dataset, the baseline, the
# evaluation, an efficient variant of your choice in the pretraining, and written answers.

# %%
print(f"chapter run time: {time.perf_counter() - T_START:.0f} s")
