"""The birth-place experiment: pretrain a tiny causal model on biographies, then ask "Where was X born?".

This is the experiment of the CS224N attention assignment (a small GPT pretrained on ``wiki.txt``
with span corruption, then fine-tuned on ``birth_places_train.tsv``), on a synthetic corpus that is
generated from a seed, so nothing is downloaded. Its three numbers, reproduced in shape:

    no pretraining            ≈ the "always London" baseline (or below): the names of held-out
                                people were never seen next to their city, so there is nothing
                                to recall
    always the most common city   ≈ the share of that city (here about 11 %)
    pretrained, then fine-tuned   well above both: the biographies put each person next to their
                                birth place, and fine-tuning only teaches the question format

**The corpus** (:func:`make_corpus`). People have a given name of 2 syllables and a family name of
2–3 (``Kalo Mirasu``); each syllable is one token. Birth places come from :data:`CITIES` with
Zipf-like quotas, share(k) ∝ k^(-s), s = 0.4, so ``London`` is the most common (about 11 %).
Each person gets ``bios_per_person`` biographies written from templates: the birth fact ("was
born in", "was born and raised in", "His birthplace is") and two or three distractor facts with
other cities ("studied in", "moved to", "works in", "lives in"), in a random order, the name
sometimes far from the birth place (a pronoun refers back to it)::

    Kalo Mirasu is a painter . She studied in Oslo . She was born in London . Later , she moved to Lima .

Every biography is in the pretraining corpus; the fine-tuning questions cover a subset of the
people (``train``), the others are held out (``heldout``), as in the source assignment.

**The tokenizer** is word-level over a fixed vocabulary (:data:`VOCAB`): ``<pad>``, the mask
``⁇``, the syllables (a capitalised form that starts a name and a lower-case form that
continues it), the cities, the template words and the punctuation. ``decode(encode(s)) == s``.

**Span corruption** (:func:`span_corrupt`), the pretraining objective, as CS224N defines it, on
tokens instead of characters: truncate, cut out a span, move it to the end between mask markers::

    document  Kalo Mirasu was born in London . She studied in Oslo .
    seq       Ka lo Mi ra su was ⁇ . She studied in Oslo . ⁇ born in London <pad> ...
    x, y      seq[:-1], seq[1:]             (a causal language-model target, block tokens each)

**Fine-tuning** (:func:`finetune_example`): ``question ⁇ answer ⁇ <pad>...`` with the targets on
the question set to :data:`IGNORE`, so the loss falls on the answer and the closing mask only.
:func:`predict` decodes greedily after the first mask until the next mask.

**The model** is :class:`attnkit.models.Transformer` with ``causal=True``: any variant with a
causal form swaps in by name (``"dense"``, ``"local"``, ``"performer"``...).

API::

    corpus = make_corpus(seed=0)                       # people, bios, train / heldout questions
    ids = encode("Where was Kalo Mirasu born ?");  decode(ids)
    x, y = span_corrupt(ids, block=48, rng=random.Random(0))        # (48,), (48,)
    x, y = finetune_example(q_ids, a_ids, block=16)                  # (16,), (16,)
    model = build_model("dense", seed=0, config=QUICK)
    pretrain(model, corpus.bios, steps=..., block=48);  finetune(model, corpus.train, steps=...)
    accuracy(predict(model, [q for q, _ in corpus.heldout]), [a for _, a in corpus.heldout])
    most_common_baseline([a for _, a in corpus.train])                # "London"
    experiment("dense", seed=0, config=QUICK)          # {"no_pretraining": ..., "pretrained": ..., "baseline": ...}

Cost: pretraining is steps × batch sequences of ``block`` tokens through an L-layer model of
width C, O(steps·batch·L·(N·C² + mixer)); see :data:`QUICK` and :data:`FULL` for measured budgets.

Sources: CS224N (Stanford, Winter 2023) assignment 5, "Pretrained Transformer models and
knowledge access" (span corruption, the birth-place task, the London baseline); Raffel et al. 2020,
T5 (span corruption, arXiv:1910.10683); Allen-Zhu & Li 2023, Physics of Language Models 3.1
(knowledge stored in pretraining is extractable by fine-tuning only when each person's facts are
written several ways, arXiv:2309.14316).
"""
from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .graded import reference

__all__ = [
    "PAD", "MASK", "IGNORE", "CITIES", "VOCAB", "STOI", "encode", "decode",
    "Person", "Corpus", "make_corpus", "question", "span_corrupt", "finetune_example", "Config", "QUICK", "FULL",
    "build_model", "lm_loss", "pretrain", "finetune", "predict", "accuracy", "most_common_baseline",
    "experiment",
]

IGNORE = -100
"""Target with no loss (``F.cross_entropy``'s ``ignore_index``; the same as ``attnkit.tasks.IGNORE``)."""

# ---------------------------------------------------------------- vocabulary

PAD_TOKEN, MASK_TOKEN = "<pad>", "⁇"
SYLLABLES: list[str] = [c + v for c in "bdklmnrstvz" for v in "aeiou" if c + v != "to"][:40]
"""Consonant-vowel syllables; a name is a capitalised one followed by lower-case ones."""

CITIES: list[str] = [
    "London", "Paris", "Berlin", "Madrid", "Rome", "Vienna", "Prague", "Lisbon", "Dublin", "Oslo",
    "Warsaw", "Athens", "Cairo", "Lagos", "Delhi", "Tokyo", "Lima", "Quito", "Sydney", "Boston",
]
"""Birth places, most common first: city k (from 1) has quota ∝ k^(-ZIPF_S)."""
ZIPF_S = 0.4

FIELDS = ["painter", "chemist", "farmer", "poet", "doctor", "singer", "lawyer", "pilot"]
WORDS: list[str] = [
    ".", ",", "?", "Where", "was", "born", "in", "and", "raised", "is", "a", "who", "Born",
    "He", "She", "he", "she", "His", "Her", "birthplace", "studied", "moved", "to", "Later",
    "works", "lives", "now", "visited", "twice", "as", "an", "adult", *FIELDS,
]
VOCAB: list[str] = [PAD_TOKEN, MASK_TOKEN, *[s.capitalize() for s in SYLLABLES], *SYLLABLES, *CITIES, *WORDS]
"""Every token, by id: ``<pad>`` = 0, ``⁇`` = 1, syllables (capitalised, then lower case), cities, words."""
STOI: dict[str, int] = {s: i for i, s in enumerate(VOCAB)}
PAD, MASK = STOI[PAD_TOKEN], STOI[MASK_TOKEN]
_CONTINUE = frozenset(STOI[s] for s in SYLLABLES)  # lower-case syllables: glued to a syllable before
_SYLLABLE = _CONTINUE | frozenset(STOI[s.capitalize()] for s in SYLLABLES)
assert len(STOI) == len(VOCAB), "duplicate token in VOCAB"


def encode(text: str) -> list[int]:
    """Token ids of ``text``: whitespace-separated words; a word that is not in :data:`VOCAB` is a
    name, split into 2-letter syllables (``"Mirasu" -> Mi ra su``)."""
    ids: list[int] = []
    for word in text.split():
        if word in STOI:
            ids.append(STOI[word])
            continue
        parts = [word[i:i + 2] for i in range(0, len(word), 2)]
        if (len(word) % 2 or parts[0] not in STOI or STOI[parts[0]] in _CONTINUE
                or any(p not in SYLLABLES for p in parts[1:])):
            raise ValueError(f"cannot encode {word!r}: not a vocabulary word, and not a name made of "
                             f"the syllables (a capitalised one, then lower-case ones, e.g. 'Kalo')")
        ids.extend(STOI[p] for p in parts)
    return ids


def decode(ids) -> str:
    """The text of token ids (a list or a 1-d tensor); lower-case syllables join the word before."""
    out: list[str] = []
    prev = None
    for i in (ids.tolist() if isinstance(ids, Tensor) else ids):
        if not 0 <= i < len(VOCAB):
            raise ValueError(f"token id {i} is outside the vocabulary [0, {len(VOCAB)})")
        if i in _CONTINUE and prev in _SYLLABLE:
            out[-1] += VOCAB[i]
        else:
            out.append(VOCAB[i])
        prev = i
    return " ".join(out)


# ---------------------------------------------------------------- the corpus

@dataclass(frozen=True)
class Person:
    """One fictional person: ``name`` ("Kalo Mirasu"), ``birth`` (a city), ``she`` (pronoun), ``field``."""
    name: str
    birth: str
    she: bool
    field: str


@dataclass
class Corpus:
    """What :func:`make_corpus` generates.

    Attributes:
        people: everyone, in a random order.
        bios: the pretraining documents, ``bios_per_person`` per person, shuffled.
        train: ``(question, answer)`` pairs for fine-tuning ("Where was Kalo Mirasu born ?", "London").
        heldout: the same for the people left out of ``train`` (their biographies are in ``bios``).
    """
    people: list[Person]
    bios: list[str]
    train: list[tuple[str, str]]
    heldout: list[tuple[str, str]]
    seed: int = 0


def _name(rng: random.Random) -> str:
    def word(n: int) -> str:
        return "".join(rng.choice(SYLLABLES) for _ in range(n)).capitalize()
    return f"{word(2)} {word(rng.choice([2, 3]))}"


def _bio(p: Person, rng: random.Random) -> str:
    """One biography: an opening sentence, then the birth fact (unless the opening had it) and 2–3
    distractor facts with other cities, shuffled."""
    P, Pos = ("She", "Her") if p.she else ("He", "His")
    others = rng.sample([c for c in CITIES if c != p.birth], 3)
    facts = [f"{P} studied in {others[0]} .",
             rng.choice([f"Later , {P.lower()} moved to {others[1]} .", f"{P} moved to {others[1]} as an adult ."]),
             rng.choice([f"{P} works in {others[2]} .", f"{P} now lives in {others[2]} .",
                          f"{P} visited {others[2]} twice ."])]
    facts = rng.sample(facts, rng.choice([2, 3]))
    opening = rng.randrange(4)
    if opening == 0:
        first = f"{p.name} was born in {p.birth} ."
    elif opening == 1:
        first = f"{p.name} is a {p.field} who was born in {p.birth} ."
    elif opening == 2:
        first = f"Born in {p.birth} , {p.name} is a {p.field} ."
    else:  # the birth fact comes later, with a pronoun: far from the name
        first = f"{p.name} is a {p.field} ."
        facts.append(rng.choice([f"{P} was born in {p.birth} .", f"{P} was born and raised in {p.birth} .",
                                 f"{Pos} birthplace is {p.birth} ."]))
    rng.shuffle(facts)
    return " ".join([first, *facts])


def question(name: str) -> str:
    """The fine-tuning question about ``name``."""
    return f"Where was {name} born ?"


def make_corpus(seed: int = 0, *, n_people: int = 500, bios_per_person: int = 3,
                train_frac: float = 0.6) -> Corpus:
    """A deterministic biography corpus: ``n_people`` people, their biographies and the questions.

    Birth places follow fixed quotas, round(n · k^(-s) / Σ_j j^(-s)) for city k (s = ZIPF_S, the
    remainder to London), shuffled over people, so ``London`` is always the most common. The
    fine-tuning set takes ``round(train_frac · n_c)`` of the n_c people born in each city c (the
    split is stratified, so London is the most common answer in both sets); the rest are held out.
    """
    if n_people < 10 or bios_per_person < 1 or not 0 < train_frac < 1:
        raise ValueError(f"need n_people >= 10, bios_per_person >= 1, 0 < train_frac < 1; got "
                         f"{n_people}, {bios_per_person}, {train_frac}")
    rng = random.Random(seed)
    weights = [k ** -ZIPF_S for k in range(1, len(CITIES) + 1)]
    quotas = [round(n_people * w / sum(weights)) for w in weights]
    quotas[0] += n_people - sum(quotas)
    births = [c for c, q in zip(CITIES, quotas) for _ in range(q)]
    rng.shuffle(births)
    names: set[str] = set()
    people = []
    for birth in births:
        name = _name(rng)
        while name in names or any(part in STOI for part in name.split()):
            name = _name(rng)
        names.add(name)
        people.append(Person(name, birth, rng.random() < 0.5, rng.choice(FIELDS)))
    bios = [_bio(p, rng) for p in people for _ in range(bios_per_person)]
    rng.shuffle(bios)
    train, heldout = [], []
    for city in CITIES:  # stratified: each city splits train_frac / rest, so both keep the skew
        qa = [(question(p.name), p.birth) for p in people if p.birth == city]
        k = round(train_frac * len(qa))
        train += qa[:k]
        heldout += qa[k:]
    rng.shuffle(train)
    rng.shuffle(heldout)
    return Corpus(people, bios, train, heldout, seed)


# ---------------------------------------------------------------- examples

@reference(graded_in=("a7",))
def span_corrupt(tokens: list[int], *, block: int, rng: random.Random) -> tuple[Tensor, Tensor]:
    """One span-corruption example (CS224N's ``CharCorruptionDataset``, on tokens).

    Exactly three draws from ``rng`` (a ``random.Random``), in this order:

    1. ``n = rng.randint(4, int(block * 7 / 8))``; the document is truncated to
       ``doc = tokens[:n]``, of length ``L = len(doc)`` (L < n when the document is shorter);
    2. ``m = rng.randint(1, L // 2)``: the span length, mean (1 + L//2) / 2 ≈ L / 4;
    3. ``s = rng.randint(0, L - m)``: where the span starts.

    Then ``seq = doc[:s] + [MASK] + doc[s+m:] + [MASK] + doc[s:s+m]``, padded with ``PAD`` to
    ``block + 1`` tokens, and ``x = seq[:-1]``, ``y = seq[1:]`` (LongTensors of length ``block``;
    ``PAD`` targets carry no loss in :func:`lm_loss`).
    """
    if block < 8:
        raise ValueError(f"block={block} is too small: need block >= 8 so a truncated document "
                         f"(at most int(block*7/8) tokens) and two masks fit in block + 1")
    if len(tokens) < 4:
        raise ValueError(f"document of {len(tokens)} tokens: span corruption needs at least 4")
    n = rng.randint(4, int(block * 7 / 8))
    doc = list(tokens[:n])
    L = len(doc)
    m = rng.randint(1, L // 2)
    s = rng.randint(0, L - m)
    seq = doc[:s] + [MASK] + doc[s + m:] + [MASK] + doc[s:s + m]
    seq += [PAD] * (block + 1 - len(seq))
    seq_t = torch.tensor(seq, dtype=torch.long)  # (block + 1,)
    return seq_t[:-1], seq_t[1:]


@reference(graded_in=("a7",))
def finetune_example(question_ids: list[int], answer_ids: list[int], *, block: int) -> tuple[Tensor, Tensor]:
    """``seq = question + [MASK] + answer + [MASK]``, padded with ``PAD`` to ``block + 1``;
    ``x = seq[:-1]``, ``y = seq[1:]`` with ``y[:len(question)] = IGNORE``: no loss on the question
    (nor on the first mask), only on the answer and the closing mask. LongTensors of length ``block``."""
    seq = [*question_ids, MASK, *answer_ids, MASK]
    if len(seq) > block + 1:
        raise ValueError(f"question + answer + 2 masks is {len(seq)} tokens, more than block + 1 = {block + 1}")
    seq += [PAD] * (block + 1 - len(seq))
    seq_t = torch.tensor(seq, dtype=torch.long)  # (block + 1,)
    x, y = seq_t[:-1], seq_t[1:].clone()
    y[:len(question_ids)] = IGNORE
    return x, y


# ---------------------------------------------------------------- configs

@dataclass(frozen=True)
class Config:
    """Sizes and budgets of one run of :func:`experiment`.

    The defaults are :data:`QUICK`. Memorising who was born where takes a high pretraining rate
    (1e-2: with 200 people, 800 steps at 3e-3 left the model completing "NAME was born in" no
    better than the baseline, at 1e-2 it completed 72 % of 150 people); fine-tuning is
    short and gentle (60 steps at 1e-3) so that it teaches the question format instead of
    memorising the training answers, which the un-pretrained model does and which does not
    transfer to held-out people.
    """
    n_people: int = 150
    bios_per_person: int = 3
    train_frac: float = 0.6
    block: int = 48            # pretraining length N (biographies are at most ~40 tokens)
    ft_block: int = 16         # fine-tuning length (questions are at most 10 tokens)
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    pretrain_steps: int = 800
    finetune_steps: int = 60
    batch: int = 32
    lr: float = 1e-2
    finetune_lr: float = 1e-3
    mixer_kwargs: dict = field(default_factory=dict)


QUICK = Config()
"""150 people (92 fine-tuning questions, 58 held out), C = 64, L = 2, H = 4, N = 48; 800
pretraining steps of 32 sequences at lr 1e-2, 60 fine-tuning steps at 1e-3. One thread: 0.07–0.10 s
per dense step measured under light load, so about 60–80 s of pretraining and a few seconds of
fine-tuning (3–5× that when the two cores are shared). Held-out accuracy over seeds 0–2 (dense):
no pretraining 11.5 ± 1.0 %, always London 10.3 %, pretrained 21.3 ± 9.5 % (one seed of three
at the baseline: the ordering holds on the mean, not on every seed)."""
FULL = Config(pretrain_steps=1600)
"""QUICK with twice the pretraining (1600 steps, about 2–3 minutes on a quiet core): pretrained
36.2 ± 16.4 % over seeds 0–2 (every seed at least 2.5× the 10.3 % baseline)."""


def build_model(variant: str = "dense", *, seed: int = 0, config: Config = QUICK, **mixer_kwargs) -> nn.Module:
    """A causal :class:`attnkit.models.Transformer` over :data:`VOCAB` with the sizes of ``config``."""
    from .models import Transformer
    kwargs = {**config.mixer_kwargs, **mixer_kwargs}
    return Transformer(variant, vocab=len(VOCAB), max_len=config.block, d_model=config.d_model,
                       n_layers=config.n_layers, n_heads=config.n_heads, causal=True, seed=seed, **kwargs)


# ---------------------------------------------------------------- training and evaluation

def lm_loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    """Mean cross-entropy of ``model(x)`` against ``y`` over the targets that are neither ``PAD`` nor ``IGNORE``."""
    x, y = batch  # (B, N), (B, N)
    logits = model(x)  # (B, N, V)
    y = y.masked_fill(y == PAD, IGNORE)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=IGNORE)


@reference(graded_in=("a7",))
def pretrain(model: nn.Module, corpus: list[str], *, steps: int, block: int = 48, batch: int = 32,
             lr: float = 3e-3, seed: int = 0, **fit_kwargs):
    """Span-corruption pretraining on the documents ``corpus`` (strings); returns the ``FitResult``.

    Step t draws ``batch`` documents and corrupts each with ``random.Random(seed * 1_000_003 + t)``,
    so a run is reproducible whatever happened before it.
    """
    from .training import fit
    docs = [encode(d) for d in corpus]

    def batch_fn(step: int) -> tuple[Tensor, Tensor]:
        rng = random.Random(seed * 1_000_003 + step)
        pairs = [span_corrupt(docs[rng.randrange(len(docs))], block=block, rng=rng) for _ in range(batch)]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])  # (B, N) each

    return fit(model, batch_fn, lm_loss, steps=steps, lr=lr, **fit_kwargs)


def _finetune_tensors(dataset: list[tuple[str, str]], block: int) -> tuple[Tensor, Tensor]:
    pairs = [finetune_example(encode(q), encode(a), block=block) for q, a in dataset]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])  # (n, N) each


@reference(graded_in=("a7",))
def finetune(model: nn.Module, dataset: list[tuple[str, str]], *, steps: int, block: int = 16, batch: int = 32,
             lr: float = 1e-3, seed: int = 0, **fit_kwargs):
    """Fine-tune on ``(question, answer)`` pairs (:func:`finetune_example`); returns the ``FitResult``.

    Step t trains on ``batch`` pairs drawn with ``torch.Generator().manual_seed(seed * 1_000_003 + t)``.
    """
    from .training import fit
    X, Y = _finetune_tensors(dataset, block)  # (n, N) each

    def batch_fn(step: int) -> tuple[Tensor, Tensor]:
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        idx = torch.randint(len(X), (batch,), generator=g)
        return X[idx], Y[idx]

    return fit(model, batch_fn, lm_loss, steps=steps, lr=lr, **fit_kwargs)


@reference(graded_in=("a7",))
@torch.no_grad()
def predict(model: nn.Module, questions: list[str], *, max_new: int = 3) -> list[str]:
    """Greedy answers: feed ``question ⁇``, append the argmax token until it is ``⁇`` (or
    ``max_new`` tokens); the decoded tokens before that mask are the answer ("" if none)."""
    was_training = model.training
    model.eval()
    try:
        prompts = [encode(q) + [MASK] for q in questions]
        width = max(len(p) for p in prompts) + max_new
        seqs = torch.full((len(prompts), width), PAD, dtype=torch.long)  # (n, W): right padding is safe, causal
        for i, p in enumerate(prompts):
            seqs[i, :len(p)] = torch.tensor(p)
        pos = torch.tensor([len(p) for p in prompts])  # next position to fill, per row
        done = torch.zeros(len(prompts), dtype=torch.bool)
        answers: list[list[int]] = [[] for _ in prompts]
        rows = torch.arange(len(prompts))
        for _ in range(max_new):
            logits = model(seqs)  # (n, W, V)
            nxt = logits[rows, pos - 1].argmax(-1)  # (n,)
            for i in range(len(prompts)):
                if done[i]:
                    continue
                if nxt[i] == MASK:
                    done[i] = True
                else:
                    answers[i].append(int(nxt[i]))
                    seqs[i, pos[i]] = nxt[i]
            pos = torch.where(done, pos, pos + 1)
            if done.all():
                break
        return [decode(a) for a in answers]
    finally:
        model.train(was_training)


@reference(graded_in=("a7",))
def accuracy(predictions: list[str], answers: list[str]) -> float:
    """Share of exact matches (whitespace-stripped); the length of both lists must agree."""
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions for {len(answers)} answers")
    if not answers:
        raise ValueError("no answers to score")
    return sum(p.strip() == a.strip() for p, a in zip(predictions, answers)) / len(answers)


@reference(graded_in=("a7",))
def most_common_baseline(answers: list[str]) -> str:
    """The most common answer (ties: the one seen first): what "always London" answers."""
    if not answers:
        raise ValueError("no answers: the baseline needs the fine-tuning answers")
    return Counter(answers).most_common(1)[0][0]


def experiment(variant: str = "dense", *, seed: int = 0, config: Config = QUICK, pretrain_variant: bool = True,
               progress: bool = False, **mixer_kwargs) -> dict:
    """The three numbers of the source on one seed: held-out accuracy without pretraining, with
    pretraining, and of the most-common-city baseline.

    Both models are ``build_model(variant, seed=seed, config=config)`` (same initialisation); one is
    fine-tuned directly, the other pretrained first. Returns a dict with ``no_pretraining``,
    ``pretrained``, ``baseline`` (accuracies), ``baseline_city``, ``seconds_pretrain``,
    ``seconds_finetune`` and ``seconds``.
    """
    start = time.perf_counter()
    corpus = make_corpus(seed, n_people=config.n_people, bios_per_person=config.bios_per_person,
                         train_frac=config.train_frac)
    questions = [q for q, _ in corpus.heldout]
    answers = [a for _, a in corpus.heldout]
    city = most_common_baseline([a for _, a in corpus.train])
    ft = dict(steps=config.finetune_steps, block=config.ft_block, batch=config.batch, lr=config.finetune_lr,
              seed=seed, progress=progress)

    scratch = build_model(variant, seed=seed, config=config, **mixer_kwargs)
    t0 = time.perf_counter()
    finetune(scratch, corpus.train, **ft)
    t_ft = time.perf_counter() - t0
    no_pre = accuracy(predict(scratch, questions), answers)

    model = build_model(variant, seed=seed, config=config, **mixer_kwargs)
    t0 = time.perf_counter()
    pretrain(model, corpus.bios, steps=config.pretrain_steps, block=config.block, batch=config.batch,
             lr=config.lr, seed=seed, progress=progress)
    t_pre = time.perf_counter() - t0
    finetune(model, corpus.train, **ft)
    pre = accuracy(predict(model, questions), answers)
    return {"variant": variant, "seed": seed, "no_pretraining": no_pre, "pretrained": pre,
            "baseline": accuracy([city] * len(answers), answers), "baseline_city": city,
            "seconds_pretrain": t_pre, "seconds_finetune": t_ft, "seconds": time.perf_counter() - start}
