"""The birth-place experiment (attnkit.biography): corpus, tokenizer, span corruption, fine-tuning
examples, baseline, evaluation, and a tiny training run."""
import dataclasses
import random
import statistics

import pytest
import torch
from torch import nn

from attnkit import biography as bio
from attnkit.biography import (CITIES, IGNORE, MASK, PAD, QUICK, VOCAB, accuracy, decode, encode,
                               finetune_example, make_corpus, most_common_baseline, predict, span_corrupt)


@pytest.fixture(scope="module")
def corpus():
    return make_corpus(3, n_people=500)


# ---------------------------------------------------------------- corpus and tokenizer

def test_corpus_is_deterministic_and_depends_on_the_seed(corpus):
    again = make_corpus(3, n_people=500)
    assert again.bios == corpus.bios and again.train == corpus.train and again.heldout == corpus.heldout
    assert make_corpus(4, n_people=500).bios != corpus.bios


def test_birth_places_are_skewed_towards_london(corpus):
    counts = {c: sum(p.birth == c for p in corpus.people) for c in CITIES}
    assert max(counts, key=counts.get) == "London"
    assert 0.08 <= counts["London"] / len(corpus.people) <= 0.15
    assert counts["London"] > counts["Paris"] > counts["Boston"] > 0
    assert most_common_baseline([a for _, a in corpus.train]) == "London"  # the split is stratified
    assert most_common_baseline([a for _, a in corpus.heldout]) == "London"


def test_people_are_unique_and_every_one_has_biographies(corpus):
    names = [p.name for p in corpus.people]
    assert len(set(names)) == len(names) == 500
    assert len(corpus.bios) == 3 * 500
    assert len(corpus.train) + len(corpus.heldout) == 500 and abs(len(corpus.train) - 300) <= 10
    heldout = {q for q, _ in corpus.heldout}
    assert not heldout & {q for q, _ in corpus.train}
    by_name = {p.name: p for p in corpus.people}
    for text in corpus.bios[:200]:
        name = next(n for n in by_name if n in text)  # every biography names its person ...
        p = by_name[name]
        assert f"born in {p.birth} ." in text or f"born and raised in {p.birth} ." in text \
            or f"birthplace is {p.birth} ." in text or f"Born in {p.birth} ," in text  # ... and the birth place
        assert text.count("born") + text.count("birthplace") + text.count("Born") == 1
        assert len(encode(text)) <= int(QUICK.block * 7 / 8)
    for q, a in corpus.heldout[:20]:  # held-out people are in the pretraining corpus
        name = q.removeprefix("Where was ").removesuffix(" born ?")
        assert sum(name in t for t in corpus.bios) == 3 and by_name[name].birth == a


def test_tokenizer_round_trip(corpus):
    assert len(set(VOCAB)) == len(VOCAB) and VOCAB[PAD] == "<pad>" and VOCAB[MASK] == "⁇"
    for text in corpus.bios[:300] + [q for q, _ in corpus.train[:50]]:
        ids = encode(text)
        assert decode(ids) == text
        assert decode(torch.tensor(ids)) == text
    assert encode("Kalo Mirasu") == [VOCAB.index("Ka"), VOCAB.index("lo"), VOCAB.index("Mi"),
                                     VOCAB.index("ra"), VOCAB.index("su")]
    assert decode([MASK, VOCAB.index("lo")]) == "⁇ lo"  # a syllable glues only to a syllable


def test_tokenizer_errors():
    with pytest.raises(ValueError, match="cannot encode"):
        encode("Where was Xyzzy born ?")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        decode([len(VOCAB)])


# ---------------------------------------------------------------- span corruption

def reference_span_corrupt(tokens, block, rng):
    """The docstring's recipe, written again: three draws, then the layout."""
    n = rng.randint(4, int(block * 7 / 8))
    doc = tokens[:n]
    m = rng.randint(1, len(doc) // 2)
    s = rng.randint(0, len(doc) - m)
    seq = doc[:s] + [MASK] + doc[s + m:] + [MASK] + doc[s:s + m]
    return seq + [PAD] * (block + 1 - len(seq)), doc, (s, m)


@pytest.mark.parametrize("block", [8, 48, 64])
def test_span_corrupt_layout(corpus, block):
    rng_a, rng_b = random.Random(block), random.Random(block)
    for text in corpus.bios[:100]:
        tokens = encode(text)
        x, y = span_corrupt(tokens, block=block, rng=rng_a)
        seq, doc, (s, m) = reference_span_corrupt(tokens, block, rng_b)
        assert x.shape == y.shape == (block,) and x.dtype == torch.long
        assert x.tolist() == seq[:-1] and y.tolist() == seq[1:]
        full = x.tolist() + y[-1:].tolist()
        assert full.count(MASK) == 2
        i, j = full.index(MASK), len(full) - 1 - full[::-1].index(MASK)
        prefix, suffix = full[:i], full[i + 1:j]
        content = [t for t in full[j + 1:] if t != PAD]
        assert prefix + content + suffix == doc  # nothing lost, nothing added
        assert 1 <= len(content) <= len(doc) // 2
    assert rng_a.random() == rng_b.random()  # exactly the documented number of draws


def test_span_corrupt_is_deterministic_and_spans_average_a_quarter():
    tokens = list(range(2, 202))  # a long document, so the truncation alone sets L
    a = span_corrupt(tokens, block=256, rng=random.Random(7))
    b = span_corrupt(tokens, block=256, rng=random.Random(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    rng = random.Random(0)
    ratios = []
    for _ in range(2000):
        x, y = span_corrupt(tokens, block=256, rng=rng)
        full = x.tolist() + y[-1:].tolist()
        j = len(full) - 1 - full[::-1].index(MASK)
        content = [t for t in full[j + 1:] if t != PAD]
        L = len(full) - full.count(PAD) - 2
        ratios.append(len(content) / L)
    assert 0.23 < statistics.mean(ratios) < 0.30


def test_span_corrupt_errors():
    with pytest.raises(ValueError, match="block"):
        span_corrupt(list(range(2, 20)), block=7, rng=random.Random(0))
    with pytest.raises(ValueError, match="at least 4"):
        span_corrupt([2, 3, 4], block=16, rng=random.Random(0))


# ---------------------------------------------------------------- fine-tuning, loss, evaluation

def test_finetune_example_masks_the_question():
    q, a = encode("Where was Kalo Mirasu born ?"), encode("London")
    x, y = finetune_example(q, a, block=16)
    assert x.shape == y.shape == (16,)
    assert x.tolist() == q + [MASK] + a + [MASK] + [PAD] * (16 - len(q) - 3)
    assert (y[:len(q)] == IGNORE).all()
    assert y[len(q):len(q) + 2].tolist() == a + [MASK]
    assert (y[len(q) + 2:] == PAD).all()
    with pytest.raises(ValueError, match="block"):
        finetune_example(q, a, block=len(q) + 1)


def test_lm_loss_ignores_pad_and_ignore():
    logits = torch.randn(2, 5, len(VOCAB))

    class Fixed(nn.Module):
        def forward(self, x):
            return logits

    y = torch.tensor([[3, PAD, IGNORE, 7, 9], [PAD, PAD, 4, IGNORE, 5]])
    keep = (y != PAD) & (y != IGNORE)
    expected = torch.nn.functional.cross_entropy(logits[keep], y[keep])
    torch.testing.assert_close(bio.lm_loss(Fixed(), (torch.zeros(2, 5, dtype=torch.long), y)), expected)


def test_baseline_and_accuracy():
    assert most_common_baseline(["Paris", "London", "Paris", "London", "Rome"]) == "Paris"  # tie: first seen
    assert most_common_baseline(["Rome", "Oslo", "Oslo"]) == "Oslo"
    with pytest.raises(ValueError):
        most_common_baseline([])
    assert accuracy(["London", "Paris ", "", "Rome"], ["London", "Paris", "Rome", "Oslo"]) == 0.5
    with pytest.raises(ValueError, match="predictions"):
        accuracy(["London"], ["London", "Paris"])


def test_predict_decodes_greedily_until_the_mask():
    paris = VOCAB.index("Paris")

    class Echo(nn.Module):
        """After ⁇ say Paris; after anything else say ⁇."""

        def forward(self, x):  # (B, N) -> (B, N, V)
            logits = torch.zeros(*x.shape, len(VOCAB))
            logits[..., MASK] = 1.0
            logits[..., paris] = 2.0 * (x == MASK)
            return logits

    out = predict(Echo(), ["Where was Kalo Mirasu born ?", "Where was Beda Nu born ?"])
    assert out == ["Paris", "Paris"]

    class Never(nn.Module):
        def forward(self, x):
            logits = torch.zeros(*x.shape, len(VOCAB))
            logits[..., paris] = 1.0
            return logits

    assert predict(Never(), ["Where was Kalo Mirasu born ?"], max_new=3) == ["Paris Paris Paris"]


# ---------------------------------------------------------------- training

def test_finetuning_a_tiny_model_beats_chance():
    """12 people, asked about the people it was trained on: far above chance (1 / 20)."""
    corpus = make_corpus(0, n_people=12, train_frac=0.5)
    data = corpus.train + corpus.heldout
    config = dataclasses.replace(QUICK, d_model=32, n_heads=2)
    model = bio.build_model("dense", seed=0, config=config)
    bio.finetune(model, data, steps=100, lr=1e-2, batch=12)
    acc = accuracy(predict(model, [q for q, _ in data]), [a for _, a in data])
    assert acc >= 0.3


def test_pretraining_lowers_the_loss_and_experiment_reports_three_numbers():
    config = dataclasses.replace(QUICK, n_people=20, d_model=32, n_heads=2, pretrain_steps=10,
                                 finetune_steps=5, batch=8)
    corpus = make_corpus(1, n_people=20)
    model = bio.build_model("dense", seed=1, config=config)
    result = bio.pretrain(model, corpus.bios, steps=30, block=config.block, batch=8, lr=1e-2, seed=1)
    assert sum(result.loss[-5:]) < sum(result.loss[:5])
    out = bio.experiment("dense", seed=1, config=config)
    assert {"no_pretraining", "pretrained", "baseline", "baseline_city"} <= set(out)
    city = most_common_baseline([a for _, a in corpus.train])
    answers = [a for _, a in corpus.heldout]
    assert out["baseline_city"] == city and out["baseline"] == answers.count(city) / len(answers)
    assert 0 <= out["pretrained"] <= 1 and 0 <= out["no_pretraining"] <= 1
