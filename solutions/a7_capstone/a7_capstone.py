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
# # Assignment 7 (capstone): where was this person born?
#
# A student in the CS224N attention assignment (seed 003 of the source material) trained a small
# GPT to answer "Where was X born?" for people it had only read about. Fine-tuned on the questions
# alone, it answered **1 %** of the held-out people correctly, worse than answering "London" every
# time (**5 %**: London is the most common birth place). Pretrained first on the biographies with
# *span corruption*, then fine-tuned on the same questions, it reached **13.8 %**. The held-out
# people were never in a question, only in the pretraining text: what the model knows about them,
# it learned by reading.
#
# You will rebuild that experiment on `attnkit.biography`'s synthetic corpus (fictional people with
# names made of syllables, birth places drawn with a skew so that London is the most common, a few
# biographies each), in one to two minutes of CPU per run, and then swap an efficient attention variant
# into the model.
#
# | part | what | points |
# | --- | --- | --- |
# | 1 | the span-corruption example (exact) | 2 |
# | 2 | the fine-tuning example (exact) | 1 |
# | 3 | the "always the most common city" baseline and its held-out accuracy (exact) | 1 |
# | 4a | accuracy (exact match) | 1 |
# | 4b | greedy answers from the model | 2 |
# | 5a | the pretraining and fine-tuning loops (exact losses) | 2 |
# | 5b | the experiment: pretraining helps (above no pretraining, not below the baseline); no pretraining stays near the baseline | 3 |
# | 6 | an efficient causal variant in the model, pretrained | 2 |
# | 7 | written answers (graded by hand): why pretraining helps, the baseline and bias, a value matrix, your variant | 6 |
#
# Do not use `attnkit.biography`'s implementations of `span_corrupt`, `finetune_example`,
# `most_common_baseline`, `accuracy`, `predict`, `pretrain`, `finetune` or `experiment` in your
# answers: the tests use them as references. The rest of the library (`encode`, `decode`,
# `make_corpus`, `build_model`, `lm_loss`, `attnkit.training.fit`, `attnkit.models`) is yours to
# use, and anything in `torch` is fine. The cells that say `YOUR ANSWER HERE` (part 7) take short
# written answers, in Markdown; they are graded by hand after the autograder has run.

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false, "task": false}
import random
import warnings
from collections import Counter

import torch
import torch.nn.functional as F
from torch import nn

warnings.filterwarnings("ignore")  # the autograder counts any warning printed by a test as a failure
torch.manual_seed(0)
torch.set_num_threads(1)  # tiny models: one thread is fastest, and the grader's machine is shared

from attnkit.biography import (IGNORE, MASK, PAD, VOCAB, Config, build_model, decode, encode, lm_loss,
                               make_corpus)
from attnkit.models import Transformer, causal_names
from attnkit.training import fit

GRADED = Config(n_people=100, pretrain_steps=600)
"""The graded budget: 100 people (58 fine-tuning questions, 42 held out), C = 64, L = 2, H = 4,
N = 48; 600 pretraining steps of 32 sequences at lr 1e-2, 60 fine-tuning steps at lr 1e-3."""

corpus = make_corpus(0, n_people=GRADED.n_people)
print(corpus.bios[0])
print(corpus.train[0])

# %% [markdown]
# ## The corpus and the tokens
#
# `make_corpus(seed, n_people=...)` returns `bios` (the pretraining documents, strings), `train`
# and `heldout` (lists of `(question, answer)` pairs such as `("Where was Kalo Mirasu born ?",
# "London")`). `encode` turns a string into token ids (one per word or name syllable), `decode`
# back. Two ids are special: `PAD` (0) fills a sequence up to its length, and `MASK` (1, shown
# `⁇`) marks where a span was cut out and, in fine-tuning, where the answer starts and ends.
#
# The model is a causal Transformer (`build_model(variant, seed=..., config=GRADED)`): it reads
# `x` of shape `(B, N)` and returns logits `(B, N, V)`, position $i$ predicting token $i+1$.
# `lm_loss(model, (x, y))` is the mean cross-entropy over the targets `y` that are neither `PAD`
# nor `IGNORE` (-100).
#
# ## Part 1: span corruption (2 points)
#
# The pretraining objective of the source (CS224N's `CharCorruptionDataset`, here on tokens). Given
# a document `tokens` (a list of ids), a length `block` and a `random.Random` called `rng`, draw
# **exactly three numbers from `rng`, in this order**:
#
# 1. `n = rng.randint(4, int(block * 7 / 8))`; truncate: `doc = tokens[:n]`, of length
#    `L = len(doc)` (shorter than `n` when the document is short);
# 2. `m = rng.randint(1, L // 2)`: the length of the masked span;
# 3. `s = rng.randint(0, L - m)`: where the span starts.
#
# (`randint(a, b)` includes both ends.) Then build
#
# `seq = doc[:s] + [MASK] + doc[s+m:] + [MASK] + doc[s:s+m]`
#
# i.e. the span is cut out, replaced by one mask, and moved to the end after a second mask; pad
# `seq` with `PAD` to `block + 1` tokens and return `x = seq[:-1]`, `y = seq[1:]`, two
# `torch.long` tensors of length `block`. The model learns to fill in the span from the rest.

# %% nbgrader={"grade": false, "grade_id": "span_corrupt", "locked": false, "schema_version": 3, "solution": true, "task": false}
def span_corrupt(tokens, *, block, rng):
    """tokens: list of ids; rng: random.Random. Returns (x, y): LongTensors of shape (block,)."""
    ### BEGIN SOLUTION
    n = rng.randint(4, int(block * 7 / 8))
    doc = list(tokens[:n])
    L = len(doc)
    m = rng.randint(1, L // 2)
    s = rng.randint(0, L - m)
    seq = doc[:s] + [MASK] + doc[s + m:] + [MASK] + doc[s:s + m]
    seq = seq + [PAD] * (block + 1 - len(seq))
    seq = torch.tensor(seq, dtype=torch.long)  # (block + 1,)
    return seq[:-1], seq[1:]
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_span_corrupt", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""Part 1: span_corrupt() equals the reference exactly, on many documents, blocks and seeds, drawing
from rng exactly as the reference does (the calls share one rng in a row)."""
import attnkit.biography as _bio

def _check_corrupt(docs, block, seed):
    rng, ref_rng = random.Random(seed), random.Random(seed)
    for i, doc in enumerate(docs):
        x, y = span_corrupt(doc, block=block, rng=rng)
        ex, ey = _bio.span_corrupt(doc, block=block, rng=ref_rng)
        for got, expected, what in ((x, ex, "x"), (y, ey, "y")):
            assert isinstance(got, torch.Tensor) and got.dtype == torch.long, \
                f"{what} should be a torch.long tensor, got {type(got).__name__} {getattr(got, 'dtype', '')}"
            assert got.shape == expected.shape, f"{what} should have shape ({block},), got {tuple(got.shape)}"
            assert torch.equal(got, expected), (
                f"document {i} (seed {seed}, block {block}): {what} is\n  {decode(got)}\nexpected\n  {decode(expected)}")
    assert rng.random() == ref_rng.random(), "draw exactly three numbers from rng per call, in the stated order"

_docs = [encode(b) for b in corpus.bios[:5]]
_check_corrupt(_docs, 48, seed=0)

### BEGIN HIDDEN TESTS
for _seed, _block in enumerate([48, 8, 9, 16, 32, 64, 100]):
    _check_corrupt([encode(b) for b in corpus.bios[10 * _seed: 10 * _seed + 40]], _block, seed=100 + _seed)
_check_corrupt([[5, 6, 7, 8], [9, 10, 11, 12, 13], list(range(2, 60))], 12, seed=7)
_check_corrupt([list(range(2, 40))] * 30, 48, seed=8)
### END HIDDEN TESTS

# %% [markdown]
# ## Part 2: the fine-tuning example (1 point)
#
# A question and its answer become one sequence,
#
# `seq = question + [MASK] + answer + [MASK]`, padded with `PAD` to `block + 1` tokens,
#
# with `x = seq[:-1]` and `y = seq[1:]` as before, **except** that the targets that predict the
# question are not trained on: set `y[:len(question)] = IGNORE`. So the loss falls on the answer
# tokens (predicted from the first mask on) and on the closing mask (which teaches the model to
# stop), never on the question. If `seq` would be longer than `block + 1`, raise `ValueError`.

# %% nbgrader={"grade": false, "grade_id": "finetune_example", "locked": false, "schema_version": 3, "solution": true, "task": false}
def finetune_example(question_ids, answer_ids, *, block):
    """Returns (x, y): LongTensors of shape (block,), with IGNORE on y's question targets."""
    ### BEGIN SOLUTION
    seq = [*question_ids, MASK, *answer_ids, MASK]
    if len(seq) > block + 1:
        raise ValueError(f"question + answer + 2 masks is {len(seq)} tokens, more than block + 1 = {block + 1}")
    seq = torch.tensor(seq + [PAD] * (block + 1 - len(seq)), dtype=torch.long)  # (block + 1,)
    x, y = seq[:-1], seq[1:].clone()
    y[:len(question_ids)] = IGNORE
    return x, y
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_finetune_example", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
"""Part 2: finetune_example() equals the reference exactly (no loss on the question), and refuses a
sequence longer than block + 1."""
import attnkit.biography as _bio

def _check_example(q, a, block):
    qi, ai = encode(q), encode(a)
    x, y = finetune_example(qi, ai, block=block)
    ex, ey = _bio.finetune_example(qi, ai, block=block)
    assert isinstance(x, torch.Tensor) and x.dtype == torch.long and y.dtype == torch.long, "return two long tensors"
    assert x.shape == ex.shape and y.shape == ey.shape, f"shapes {tuple(x.shape)}, {tuple(y.shape)}; expected ({block},)"
    assert torch.equal(x, ex), f"x for {q!r} -> {a!r}: {x.tolist()}, expected {ex.tolist()}"
    assert torch.equal(y, ey), f"y for {q!r} -> {a!r}: {y.tolist()}, expected {ey.tolist()}"

_check_example("Where was Kalo Mirasu born ?", "London", 16)

### BEGIN HIDDEN TESTS
for _q, _a in corpus.train[:20]:
    _check_example(_q, _a, 16)
_check_example("Where was Kalo Mirasu born ?", "London", 11)  # exactly block + 1 tokens, no padding
_check_example("Where was Ba Be born ?", "Kalo Mirasu", 20)
_check_example("?", "Oslo", 4)
try:
    finetune_example(encode("Where was Kalo Mirasu born ?"), encode("London"), block=8)
except ValueError:
    pass
else:
    raise AssertionError("a question and answer longer than block + 1 should raise ValueError")
### END HIDDEN TESTS

# %% [markdown]
# ## Part 3: the baseline (1 point)
#
# The model that ignores the question and always answers the most common birth place of the
# **fine-tuning** answers (the held-out answers are for evaluation only: a model may not look at
# them). Write `most_common_baseline(answers)`: the most common string of the list; on a tie, the
# one that appears **first** in the list. Raise `ValueError` on an empty list. Then
# `baseline_accuracy(train, heldout)`, with `train` and `heldout` lists of `(question, answer)`
# pairs: the share of held-out answers equal to the most common fine-tuning answer.

# %% nbgrader={"grade": false, "grade_id": "baseline", "locked": false, "schema_version": 3, "solution": true, "task": false}
def most_common_baseline(answers):
    """The most common answer (ties: the one seen first)."""
    ### BEGIN SOLUTION
    if not answers:
        raise ValueError("no answers: the baseline needs the fine-tuning answers")
    counts = Counter(answers)
    best = max(counts.values())
    return next(a for a in answers if counts[a] == best)
    ### END SOLUTION


def baseline_accuracy(train, heldout):
    """Held-out accuracy of always answering the most common fine-tuning answer."""
    ### BEGIN SOLUTION
    city = most_common_baseline([a for _, a in train])
    return sum(a == city for _, a in heldout) / len(heldout)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_baseline", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
"""Part 3: most_common_baseline() equals the reference (ties: first seen) and refuses an empty list;
baseline_accuracy() uses the fine-tuning answers and scores the held-out ones, exactly."""
import attnkit.biography as _bio

def _check_baseline(answers):
    got, expected = most_common_baseline(list(answers)), _bio.most_common_baseline(list(answers))
    assert got == expected, f"most_common_baseline({answers}) = {got!r}, expected {expected!r}"

_check_baseline(["Paris", "London", "London", "Oslo"])
_check_baseline(["Paris", "London", "London", "Paris"])  # a tie: the first seen wins
_train = [("q1", "Rome"), ("q2", "Oslo"), ("q3", "Rome")]
_held = [("q4", "Oslo"), ("q5", "Rome"), ("q6", "Oslo"), ("q7", "Lima")]
assert baseline_accuracy(_train, _held) == 0.25, \
    f"always 'Rome' (the most common fine-tuning answer) gets 1 of 4 held-out answers, not {baseline_accuracy(_train, _held)}"

### BEGIN HIDDEN TESTS
_check_baseline(["Oslo"])
_check_baseline(["Lima", "Oslo", "Oslo", "Lima", "Cairo", "Cairo"])
_check_baseline(["Rome", "Athens", "Athens", "Rome", "Athens", "Rome"])
_check_baseline(["b", "a", "c", "a", "c", "b"])
_check_baseline([a for _, a in corpus.train])
try:
    most_common_baseline([])
except ValueError:
    pass
else:
    raise AssertionError("most_common_baseline([]) should raise ValueError")
for _seed in range(3):
    _c = make_corpus(_seed, n_people=60)
    _city = _bio.most_common_baseline([a for _, a in _c.train])
    _expected = _bio.accuracy([_city] * len(_c.heldout), [a for _, a in _c.heldout])
    assert abs(baseline_accuracy(_c.train, _c.heldout) - _expected) < 1e-12, f"corpus seed {_seed}"
_train = [("q1", "Lima"), ("q2", "Oslo"), ("q3", "Oslo"), ("q4", "Lima"), ("q5", "Lima")]
_held = [("q6", "Oslo"), ("q7", "Oslo"), ("q8", "Lima")]
assert abs(baseline_accuracy(_train, _held) - 1 / 3) < 1e-12, "use the fine-tuning answers, score the held-out ones"
### END HIDDEN TESTS

# %% [markdown]
# ## Part 4: the evaluation (3 points)
#
# **(a)** `accuracy(predictions, answers)`: the share of predictions that equal their answer
# exactly, after stripping spaces at both ends (`" London "` is right, `"london"` is not, and
# neither is `"London Paris"`). Raise `ValueError` if the two lists differ in length or are empty.
#
# **(b)** `predict(model, questions, *, max_new=3)`: greedy answers. For each question, the
# prompt is `encode(question) + [MASK]`; repeatedly run the model on the tokens so far, take the
# argmax of the logits at the **last** position, and stop when that token is `MASK` or after
# `max_new` tokens; the answer is `decode` of the tokens generated before the stop (`""` if the
# first is `MASK`). Return the list of answers, in order. Put the model in `eval()` mode while
# predicting and under `torch.no_grad()` (and back in the mode you found it in). One question at
# a time is fine; if you batch them, mind the padding.

# %% nbgrader={"grade": false, "grade_id": "evaluation", "locked": false, "schema_version": 3, "solution": true, "task": false}
def accuracy(predictions, answers):
    """Share of exact matches (whitespace-stripped)."""
    ### BEGIN SOLUTION
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions for {len(answers)} answers")
    if not answers:
        raise ValueError("no answers to score")
    return sum(p.strip() == a.strip() for p, a in zip(predictions, answers)) / len(answers)
    ### END SOLUTION


def predict(model, questions, *, max_new=3):
    """Greedy answers to `questions` (strings): a list of strings."""
    ### BEGIN SOLUTION
    was_training = model.training
    model.eval()
    answers = []
    with torch.no_grad():
        for q in questions:
            tokens = encode(q) + [MASK]
            out = []
            for _ in range(max_new):
                logits = model(torch.tensor([tokens]))  # (1, n, V)
                nxt = int(logits[0, -1].argmax())
                if nxt == MASK:
                    break
                out.append(nxt)
                tokens.append(nxt)
            answers.append(decode(out))
    model.train(was_training)
    return answers
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_accuracy", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
"""Part 4a: accuracy() counts exact matches after stripping (case and extra words count as wrong)
and refuses lists of different lengths or no answers."""

assert accuracy(["London", "Paris", "Oslo"], ["London", "Oslo", "Oslo"]) == 2 / 3
assert accuracy([" London ", "london"], ["London", "London"]) == 0.5, "strip spaces; case matters"

### BEGIN HIDDEN TESTS
assert accuracy(["London Paris", "Lima"], ["London", "Lima"]) == 0.5, "a partial match is wrong"
assert accuracy(["", "Rome"], ["Rome", "Rome"]) == 0.5
assert accuracy(["Rome"], ["Rome "]) == 1.0
assert accuracy(["PARIS", "Paris"], ["Paris", "Paris"]) == 0.5, "case matters"
assert accuracy(["Lon", "London"], ["London", "London"]) == 0.5, "a prefix is not a match"
for _bad in ((["Rome"], ["Rome", "Oslo"]), ([], [])):
    try:
        accuracy(*_bad)
    except ValueError:
        pass
    else:
        raise AssertionError(f"accuracy{_bad} should raise ValueError")
### END HIDDEN TESTS

# %% nbgrader={"grade": true, "grade_id": "test_predict", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""Part 4b: predict() gives the reference's greedy answers: on scripted models (stop at the mask,
max_new, the empty answer, names decoded) and on a fine-tuned model; it leaves the mode as it was."""
import attnkit.biography as _bio

class _Scripted(nn.Module):
    """A 'model' whose next token depends only on the current one: next = table[token]."""
    def __init__(self, pairs, default="Oslo"):
        super().__init__()
        table = torch.full((len(VOCAB),), encode(default)[0], dtype=torch.long)
        for a, b in pairs:
            table[a] = b
        self.register_buffer("table", table)
    def forward(self, tokens):  # (B, N) -> (B, N, V)
        return F.one_hot(self.table[tokens], len(VOCAB)).float()

def _check_predict(model, questions, max_new=3):
    got = predict(model, questions, max_new=max_new)
    expected = _bio.predict(model, questions, max_new=max_new)
    assert isinstance(got, list) and len(got) == len(questions), "return one answer per question, as a list"
    wrong = [(q, g, e) for q, g, e in zip(questions, got, expected) if g != e]
    assert not wrong, f"{len(wrong)} answers differ, e.g. question {wrong[0][0]!r}: {wrong[0][1]!r}, expected {wrong[0][2]!r}"

_Ka, _lo, _mi = encode("Kalomi")
_qs = ["Where was Kalo Mirasu born ?", "Where was Ba Be born ?"]
_check_predict(_Scripted([(MASK, encode("Paris")[0]), (encode("Paris")[0], MASK)]), _qs)  # "Paris"
_check_predict(_Scripted([(MASK, _Ka), (_Ka, _lo), (_lo, MASK)]), _qs)  # "Kalo"

### BEGIN HIDDEN TESTS
_check_predict(_Scripted([(MASK, MASK)]), _qs)  # "": the first token is the mask
_check_predict(_Scripted([(MASK, _Ka), (_Ka, _lo), (_lo, _mi), (_mi, _Ka)]), _qs, max_new=3)  # stops at max_new
_check_predict(_Scripted([(MASK, _Ka), (_Ka, _lo), (_lo, _mi), (_mi, _Ka)]), _qs, max_new=5)
_m = build_model("dense", seed=1, config=GRADED)
_bio.finetune(_m, corpus.train, steps=60, lr=1e-2, seed=1)  # memorises some fine-tuning answers
_m.train()
_check_predict(_m, [q for q, _ in corpus.train[:30]] + [q for q, _ in corpus.heldout[:10]])
assert _m.training, "predict() should put the model back in training mode when it found it so"
_m.eval()
predict(_m, _qs)
assert not _m.training, "predict() should leave a model in eval mode in eval mode"
### END HIDDEN TESTS

# %% [markdown]
# ## Part 5: the experiment (5 points)
#
# **(a) The loops.** Write them with `attnkit.training.fit(model, batch_fn, lm_loss, steps=steps,
# lr=lr)` (AdamW with warm-up and cosine decay; keep its other defaults), which calls
# `batch_fn(step)` for `step = 0, 1, ...` and returns a result whose `.loss` is the list of
# training losses. Both loops must draw their batches exactly as follows (the test compares your
# losses with the reference's, step by step):
#
# - `pretrain(model, bios, *, steps, block, batch, lr, seed)`: encode every biography once; at
#   step `t`, `rng = random.Random(seed * 1_000_003 + t)`, then `batch` times: pick the document
#   `docs[rng.randrange(len(docs))]` and corrupt it with **your** `span_corrupt(doc, block=block,
#   rng=rng)` (the same `rng`, so the draws interleave: pick, corrupt, pick, corrupt, ...); stack
#   the `x`s and the `y`s into `(batch, block)` tensors.
# - `finetune(model, pairs, *, steps, block, batch, lr, seed)`: build every example once with
#   **your** `finetune_example(encode(q), encode(a), block=block)` and stack them into `X`, `Y` of
#   shape `(n, block)`; at step `t`, `g = torch.Generator().manual_seed(seed * 1_000_003 + t)` and
#   the batch is `X[idx], Y[idx]` with `idx = torch.randint(len(X), (batch,), generator=g)`.
#
# Both return what `fit` returns.
#
# **(b) The experiment.** `experiment(make_model, *, seed, config=GRADED)`: make the corpus
# `make_corpus(seed, n_people=config.n_people)`; build a model with `make_model(seed)` and only
# fine-tune it (`config.finetune_steps` steps, `block=config.ft_block`, `batch=config.batch`,
# `lr=config.finetune_lr`, `seed=seed`); build a second one with `make_model(seed)` (the same
# initial weights), pretrain it on the biographies (`config.pretrain_steps` steps,
# `block=config.block`, `batch=config.batch`, `lr=config.lr`, `seed=seed`) and then fine-tune it
# the same way. Return a dict with the held-out accuracies `"no_pretraining"`, `"pretrained"` and
# `"baseline"` (part 3), and `"pretrain_loss"`: the mean of the last 20 pretraining losses.
#
# The test runs `experiment` on seed 2 with the dense model and asks for the source's ordering:
# the pretrained model above the model without pretraining (by at least one person) and at least
# as good as the baseline, and the model without pretraining at most 5 points above the baseline.
# Those thresholds were measured on this solution over many seeds (`scripts/a7_training_rates.py`,
# see the end of this part for the numbers). A correct answer trains exactly as the solution does
# (part 5a checks the losses step by step), and the seed is fixed, so for a correct answer the test
# gives the same result every time. A run takes one to two minutes.

# %% nbgrader={"grade": false, "grade_id": "experiment", "locked": false, "schema_version": 3, "solution": true, "task": false}
def pretrain(model, bios, *, steps, block, batch, lr, seed):
    """Span-corruption pretraining on the documents `bios` (strings); returns fit's result."""
    ### BEGIN SOLUTION
    docs = [encode(b) for b in bios]

    def batch_fn(step):
        rng = random.Random(seed * 1_000_003 + step)
        pairs = [span_corrupt(docs[rng.randrange(len(docs))], block=block, rng=rng) for _ in range(batch)]
        return torch.stack([x for x, _ in pairs]), torch.stack([y for _, y in pairs])  # (B, N) each

    return fit(model, batch_fn, lm_loss, steps=steps, lr=lr)
    ### END SOLUTION


def finetune(model, pairs, *, steps, block, batch, lr, seed):
    """Fine-tuning on (question, answer) pairs; returns fit's result."""
    ### BEGIN SOLUTION
    examples = [finetune_example(encode(q), encode(a), block=block) for q, a in pairs]
    X = torch.stack([x for x, _ in examples])  # (n, N)
    Y = torch.stack([y for _, y in examples])  # (n, N)

    def batch_fn(step):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        idx = torch.randint(len(X), (batch,), generator=g)
        return X[idx], Y[idx]

    return fit(model, batch_fn, lm_loss, steps=steps, lr=lr)
    ### END SOLUTION


def experiment(make_model, *, seed, config=GRADED):
    """Held-out accuracy without and with pretraining, the baseline's, and the final pretraining loss."""
    ### BEGIN SOLUTION
    data = make_corpus(seed, n_people=config.n_people)
    questions = [q for q, _ in data.heldout]
    answers = [a for _, a in data.heldout]
    ft = dict(steps=config.finetune_steps, block=config.ft_block, batch=config.batch, lr=config.finetune_lr,
              seed=seed)
    scratch = make_model(seed)
    finetune(scratch, data.train, **ft)
    no_pretraining = accuracy(predict(scratch, questions), answers)
    model = make_model(seed)
    result = pretrain(model, data.bios, steps=config.pretrain_steps, block=config.block, batch=config.batch,
                      lr=config.lr, seed=seed)
    finetune(model, data.train, **ft)
    return {"no_pretraining": no_pretraining, "pretrained": accuracy(predict(model, questions), answers),
            "baseline": baseline_accuracy(data.train, data.heldout),
            "pretrain_loss": sum(result.loss[-20:]) / len(result.loss[-20:])}
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_training_loops", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""Part 5a: pretrain() and finetune() give the reference's losses step by step (same batches, your
span_corrupt and finetune_example feeding them), from the same initial model."""
import attnkit.biography as _bio

def _check_loops(seed, steps=4):
    _small = Config(n_people=20, d_model=32, n_heads=2, batch=8)
    _c = make_corpus(seed, n_people=20)
    _a, _b = build_model("dense", seed=seed, config=_small), build_model("dense", seed=seed, config=_small)
    got = pretrain(_a, _c.bios, steps=steps, block=32, batch=8, lr=1e-2, seed=seed)
    expected = _bio.pretrain(_b, _c.bios, steps=steps, block=32, batch=8, lr=1e-2, seed=seed)
    assert len(got.loss) == steps, f"pretrain: {len(got.loss)} losses for {steps} steps"
    assert torch.allclose(torch.tensor(got.loss), torch.tensor(expected.loss), rtol=1e-5, atol=1e-6), \
        f"pretraining losses {[round(x, 4) for x in got.loss]}, expected {[round(x, 4) for x in expected.loss]}"
    got = finetune(_a, _c.train, steps=steps, block=16, batch=8, lr=1e-3, seed=seed)
    expected = _bio.finetune(_b, _c.train, steps=steps, block=16, batch=8, lr=1e-3, seed=seed)
    assert torch.allclose(torch.tensor(got.loss), torch.tensor(expected.loss), rtol=1e-5, atol=1e-6), \
        f"fine-tuning losses {[round(x, 4) for x in got.loss]}, expected {[round(x, 4) for x in expected.loss]}"

_check_loops(seed=0)

### BEGIN HIDDEN TESTS
_check_loops(seed=5)
### END HIDDEN TESTS

# %% nbgrader={"grade": true, "grade_id": "test_experiment", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
"""Part 5b: on seed 2, the pretrained dense model beats the model without pretraining and is at least
as good as the baseline; the model without pretraining is at most 5 points above the baseline."""
_r = experiment(lambda s: build_model("dense", seed=s, config=GRADED), seed=2, config=GRADED)
assert set(_r) >= {"no_pretraining", "pretrained", "baseline", "pretrain_loss"}, f"missing keys: {sorted(_r)}"
print("held-out accuracy: no pretraining {no_pretraining:.1%}, always the most common city {baseline:.1%}, "
      "pretrained {pretrained:.1%} (pretraining loss {pretrain_loss:.3f})".format(**_r))
assert _r["pretrained"] > _r["no_pretraining"], \
    f"pretraining should help: {_r['pretrained']:.1%} with it, {_r['no_pretraining']:.1%} without"
assert _r["pretrained"] >= _r["baseline"], \
    f"the pretrained model should not fall below the baseline: {_r['pretrained']:.1%} vs {_r['baseline']:.1%}"
assert _r["no_pretraining"] <= _r["baseline"] + 0.05, \
    f"without pretraining the model has nothing to recall: {_r['no_pretraining']:.1%} vs baseline {_r['baseline']:.1%}"

# %% [markdown]
# ### What the thresholds were measured on
#
# `scripts/a7_training_rates.py` ran this solution's `experiment` (dense, `GRADED`) on 22 seeds
# (0-7, 10-17, 20-25) and applied part 5b's thresholds: **false-failure rate 0 of 22**. Held-out
# accuracy over those seeds (42 held-out people, so one person is 2.4 points):
#
# | | min | median | max | mean ± sd |
# | --- | --- | --- | --- | --- |
# | no pretraining | 2.4 % | 10.7 % | 11.9 % | 9.7 ± 2.6 % |
# | always London (the baseline) | 11.9 % | 11.9 % | 11.9 % | 11.9 % |
# | pretrained, then fine-tuned | 11.9 % | 21.4 % | 45.2 % | 22.4 ± 8.3 % |
#
# The model without pretraining never beat the baseline (it mostly learns to answer London);
# the pretrained one beat the model without pretraining on every seed (by 2.4 to 33 points,
# median 12) and the baseline on 19 of 22 (it tied on seeds 11, 12 and 22). A stricter test,
# "pretrained at least 5 points above the baseline", would fail a correct answer on 6 of the 22
# seeds: at this budget (chosen so that grading fits in a few minutes) the gain is real but
# noisy, which is why the test compares with the model without pretraining as well. With the
# seed fixed at 2 (9.5 %, 11.9 %, 28.6 %) the test passes with a margin of several people. The
# part 6 threshold (pretraining loss below 2.5) was checked on the solution's `local` (window 8)
# on seeds 0 and 1: 1.18 both times (dense: 0.96 to 1.02 over the 22 seeds).

# %% [markdown]
# ## Part 6: an efficient variant in the model (2 points)
#
# The model's attention is any causal variant of the course, by name: `causal_names()` lists those
# whose output at position $i$ depends only on tokens $\le i$ (a decoder needs that: during
# pretraining, position $i$ predicts token $i + 1$). Choose one **other than dense**, with its
# keywords (for example `"local"` with `window=...`, `"performer"` with `m=...`, `"linear"`), and
# write `variant_model(seed)`: the `GRADED`-sized causal model with your variant in every layer
# (`build_model(VARIANT, seed=seed, config=GRADED, **VARIANT_KWARGS)` does it; you may also build
# `Transformer(...)` yourself). The test checks that your model is causal (changing future tokens
# does not change past logits) and uses your variant, then runs your `experiment` with it on
# seed 4 and asks that its pretraining trains: the mean of the last 20 pretraining losses below
# 2.5 (the untrained model starts near $\ln|V| \approx 4.9$). It prints the three accuracies:
# part 7 asks what changed.

# %% nbgrader={"grade": false, "grade_id": "variant", "locked": false, "schema_version": 3, "solution": true, "task": false}
### BEGIN SOLUTION
VARIANT = "local"
VARIANT_KWARGS = {"window": 8}


def variant_model(seed):
    return build_model(VARIANT, seed=seed, config=GRADED, **VARIANT_KWARGS)
### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test_variant", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
"""Part 6: variant_model() is a causal model with an efficient variant from causal_names() (not dense);
future tokens do not change past logits; pretrained with your experiment(), its loss falls below 2.5."""
assert VARIANT in causal_names() and VARIANT != "dense", \
    f"choose a variant from {[n for n in causal_names() if n != 'dense']}, got {VARIANT!r}"
_vm = variant_model(0)
assert getattr(_vm, "mixer_name", None) == VARIANT, \
    f"the model should use {VARIANT!r} in its layers, it uses {getattr(_vm, 'mixer_name', None)!r}"
_vm.eval()
with torch.no_grad():
    _x = torch.randint(2, len(VOCAB), (2, GRADED.block), generator=torch.Generator().manual_seed(0))
    _x2 = _x.clone()
    _x2[:, 30:] = torch.randint(2, len(VOCAB), (2, GRADED.block - 30), generator=torch.Generator().manual_seed(1))
    _l1, _l2 = _vm(_x), _vm(_x2)
assert torch.allclose(_l1[:, :30], _l2[:, :30], atol=1e-5), \
    "changing tokens 30.. changed the logits at positions < 30: the model is not causal (causal=True?)"
_r6 = experiment(variant_model, seed=4, config=GRADED)
print(f"{VARIANT} {VARIANT_KWARGS}: no pretraining {_r6['no_pretraining']:.1%}, baseline {_r6['baseline']:.1%}, "
      f"pretrained {_r6['pretrained']:.1%}, pretraining loss {_r6['pretrain_loss']:.3f}")
assert _r6["pretrain_loss"] < 2.5, f"the pretraining loss should fall below 2.5, got {_r6['pretrain_loss']:.3f}"

# %% [markdown]
# ## Part 7: written answers (6 points, graded by hand)
#
# Answer each question in the Markdown cell below it, in a few sentences; numbers from your runs
# above make an answer stronger.
#
# **(a) (2 points)** Why does pretraining help on the held-out people, who never appear in a
# fine-tuning question? What does fine-tuning teach the pretrained model, and why can the model
# without pretraining not do better than the baseline (what does it learn instead)?

# %% [markdown] nbgrader={"grade": true, "grade_id": "written_pretraining", "locked": false, "points": 2, "schema_version": 3, "solution": true, "task": false}
# ### BEGIN SOLUTION
# The held-out people's birth places are only in the biographies, so only a model that read them
# can know them: span corruption makes the model predict cut-out pieces of the biographies,
# including "... was born in ⁇ London", so after pretraining its weights store (some of) the
# name → city associations for *everyone*, held-out people included. Fine-tuning on 58 questions
# does not teach facts; it teaches the *format*: after "Where was NAME born ? ⁇", retrieve the
# city stored with NAME and stop with ⁇. That skill transfers to names never asked about. The
# model without pretraining has seen the held-out names nowhere; the best it can learn from the
# fine-tuning pairs is the answer distribution (mostly London) or to memorise the training
# answers, neither of which says anything about a new name, so it lands at or below the
# baseline (on seed 2 above: 9.5 % without pretraining, 11.9 % for "always London", 28.6 % with
# pretraining).
# ### END SOLUTION

# %% [markdown]
# **(b) (1 point)** A model that always answers the most common city gets some held-out people
# right. Which ones, and what does its accuracy measure? What does it say about a model (or a
# benchmark) when such a model scores well, for example when the training data over-represents
# one place?

# %% [markdown] nbgrader={"grade": true, "grade_id": "written_baseline_bias", "locked": false, "points": 1, "schema_version": 3, "solution": true, "task": false}
# ### BEGIN SOLUTION
# It gets exactly the people born in the most common city right (London, about 12 % here), and no
# one else: its accuracy is the share of that city in the held-out set, a property of the data,
# not of any understanding of the question. A model that ignores the person can score this much
# by learning the skew of the training answers, so any accuracy must be compared with this
# baseline: a model at or below it has learned the prior, not the facts. When the data
# over-represents one place (or group), a model rewarded for accuracy drifts towards it, answers
# it for people it knows nothing about, and is systematically wrong for everyone else: the bias
# of the data becomes the bias of the model, and a headline accuracy can hide it.
# ### END SOLUTION

# %% [markdown]
# **(c) (2 points)** Constructing a value matrix (the source's question (e)). Let
# $u_a, u_b, u_c, u_d \in \mathbb R^D$ be mutually orthogonal with $\|u\|^2 = \beta$ for each,
# $\beta$ large. Three tokens are $x_1 = u_d + u_b$, $x_2 = u_a$, $x_3 = u_c + u_b$. Single-head
# attention uses the tokens themselves as keys and queries ($k_i = q_i = x_i$, no scaling), so
# $\alpha_{2j} = \mathrm{softmax}_j(k_j^\top q_2)$, and values $v_i = V x_i$ for a $D \times D$ matrix
# $V$; the output of token 2 is $c_2 = \sum_j \alpha_{2j} v_j$.
# (i) With $V = I$, compute the weights $\alpha_{2j}$ and $c_2$ (approximately, for large
# $\beta$), and explain why $c_2$ cannot approximate $u_b$. (ii) Keeping the keys and queries,
# construct $V$ (in terms of the $u$'s and $\beta$) so that $c_2 \approx u_b$, and check it by
# computing $v_1, v_2, v_3$. What does this say about the roles of the attention weights and of $V$?

# %% [markdown] nbgrader={"grade": true, "grade_id": "written_value_matrix", "locked": false, "points": 2, "schema_version": 3, "solution": true, "task": false}
# ### BEGIN SOLUTION
# (i) $k_1^\top q_2 = (u_d + u_b)^\top u_a = 0$, $k_2^\top q_2 = u_a^\top u_a = \beta$,
# $k_3^\top q_2 = (u_c + u_b)^\top u_a = 0$, so $\alpha_{21} = \alpha_{23} = 1/(2 + e^\beta) \approx 0$ and
# $\alpha_{22} = e^\beta/(2 + e^\beta) \approx 1$: $c_2 \approx v_2 = x_2 = u_a$. With $V = I$ the
# output is a convex combination of the tokens, and almost all the weight is on $x_2 = u_a$,
# which has no $u_b$ component (and $u_a$ cannot be cancelled), so $c_2$ cannot approximate $u_b$.
# (ii) The weights stay the same, so choose what token 2 *contributes*: $V = u_b u_a^\top / \beta$.
# Then $v_2 = V u_a = u_b (u_a^\top u_a)/\beta = u_b$, $v_1 = V(u_d + u_b) = 0$, $v_3 = V(u_c + u_b) = 0$
# (orthogonality), so $c_2 \approx v_2 = u_b$. (Seed 003's $V = (u_b u_b^\top - u_c u_c^\top)/\beta$
# gives $v_1 = u_b$, $v_3 = u_b - u_c$: the same idea for queries that spread their weight over
# $x_1$ and $x_3$.) The attention weights decide *where* a token reads (they depend only on keys
# and queries); $V$ decides *what* is read, a linear map applied to every token, so a layer can
# output information that is not the attended token itself.
# ### END SOLUTION

# %% [markdown]
# **(d) (1 point)** What changed when you pretrained with your efficient variant instead of dense
# attention (the pretraining loss, the held-out accuracy, the time), and why, given what the
# variant can and cannot see?

# %% [markdown] nbgrader={"grade": true, "grade_id": "written_variant", "locked": false, "points": 1, "schema_version": 3, "solution": true, "task": false}
# ### BEGIN SOLUTION
# With `local` attention (window 8: each token sees itself and the 8 before it) pretraining still
# trains, but its loss ends higher than dense attention's (about 1.18 against 1.0 on the same
# seeds), and the pretrained model answers fewer held-out people (seed 0: 21 % against 24 %;
# seeds 1 and 4, the test's: 11.9 %, exactly the baseline, against 21 % and 19 %). Time is not
# the point at N = 48 (one run took 51 s against dense's 94 s, on a shared, busy machine: not a
# careful comparison); a window of 8 pays at thousands of tokens. The reason is distance: in many
# biographies the birth place comes a sentence or two after the name ("Kalo Mirasu is a painter . She studied
# in Oslo . She was born in London"), often more than 8 tokens away, and two layers reach at most
# 16 back. The model can still fill in local spans (so the loss falls), but it cannot always tie
# a distant name to its city, which is the fact the question needs.
# ### END SOLUTION
