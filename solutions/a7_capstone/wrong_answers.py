"""Plausible wrong answers to assignment 7, one mistake each.

``tests/test_grade_cells.py`` puts each one into the solution notebook in place of the answer
cell ``cell`` and checks that every grade cell in ``fails`` then fails.
"""

_CORRUPT = '''
def span_corrupt(tokens, *, block, rng):
    n = rng.randint(4, int(block * 7 / 8))
    doc = list(tokens[:TRUNC])
    L = len(doc)
    DRAWS
    seq = SEQ
    seq = seq + [PAD] * (block + 1 - len(seq))
    seq = torch.tensor(seq, dtype=torch.long)
    return seq[:-1], seq[1:]
'''
_DRAWS = "m = rng.randint(1, L // 2)\n    s = rng.randint(0, L - m)"
_SEQ = "doc[:s] + [MASK] + doc[s + m:] + [MASK] + doc[s:s + m]"


def _corrupt(trunc="n", draws=_DRAWS, seq=_SEQ):
    return _CORRUPT.replace("TRUNC", trunc).replace("DRAWS", draws).replace("SEQ", seq)


_EXAMPLE = '''
def finetune_example(question_ids, answer_ids, *, block):
    seq = [*question_ids, MASK, *answer_ids, MASK]
    CHECK
    seq = torch.tensor(seq + [PAD] * (block + 1 - len(seq)), dtype=torch.long)
    x, y = seq[:-1], seq[1:].clone()
    IGNORED
    return x, y
'''
_CHECK = ('if len(seq) > block + 1:\n'
          '        raise ValueError("too long")')

_BASELINE_TAIL = '''

def baseline_accuracy(train, heldout):
    city = most_common_baseline([a for _, a in train])
    return sum(a == city for _, a in heldout) / len(heldout)
'''

_ACCURACY = '''
def accuracy(predictions, answers):
    if len(predictions) != len(answers):
        raise ValueError("lengths differ")
    if not answers:
        raise ValueError("no answers")
    return sum(MATCH for p, a in zip(predictions, answers)) / len(answers)
'''
_MATCH = "p.strip() == a.strip()"

_PREDICT = '''

def predict(model, questions, *, max_new=3):
    was_training = model.training
    model.eval()
    answers = []
    with torch.no_grad():
        for q in questions:
            tokens = PROMPT
            out = []
            for _ in range(max_new):
                logits = model(torch.tensor([tokens]))
                nxt = int(logits[0, -1].argmax())
                STOP
                out.append(nxt)
                tokens.append(nxt)
            answers.append(decode(out))
    model.train(was_training)
    return answers
'''
_PROMPT, _STOP = "encode(q) + [MASK]", "if nxt == MASK:\n                    break"


def _evaluation(match=_MATCH, prompt=_PROMPT, stop=_STOP):
    return _ACCURACY.replace("MATCH", match) + _PREDICT.replace("PROMPT", prompt).replace("STOP", stop)


_PRETRAIN = '''
def pretrain(model, bios, *, steps, block, batch, lr, seed):
    docs = [encode(b) for b in bios]
    BODY
    return fit(model, batch_fn, lm_loss, steps=steps, lr=lr)
'''
_PRETRAIN_BODY = '''
    def batch_fn(step):
        rng = random.Random(seed * 1_000_003 + step)
        pairs = [span_corrupt(docs[rng.randrange(len(docs))], block=block, rng=rng) for _ in range(batch)]
        return torch.stack([x for x, _ in pairs]), torch.stack([y for _, y in pairs])
'''

_FINETUNE_AND_EXPERIMENT = '''

def finetune(model, pairs, *, steps, block, batch, lr, seed):
    examples = [finetune_example(encode(q), encode(a), block=block) for q, a in pairs]
    X = torch.stack([x for x, _ in examples])
    Y = torch.stack([y for _, y in examples])

    def batch_fn(step):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        idx = torch.randint(len(X), (batch,), generator=g)
        return X[idx], Y[idx]

    return fit(model, batch_fn, lm_loss, steps=steps, lr=lr)


def experiment(make_model, *, seed, config=GRADED):
    data = make_corpus(seed, n_people=config.n_people)
    questions = [q for q, _ in data.heldout]
    answers = [a for _, a in data.heldout]
    ft = dict(steps=config.finetune_steps, block=config.ft_block, batch=config.batch, lr=config.finetune_lr,
              seed=seed)
    scratch = make_model(seed)
    finetune(scratch, data.train, **ft)
    no_pretraining = accuracy(predict(scratch, questions), answers)
    model = make_model(seed)
    result = pretrain(PRETRAINED, data.bios, steps=config.pretrain_steps, block=config.block, batch=config.batch,
                      lr=config.lr, seed=seed)
    finetune(model, data.train, **ft)
    return {"no_pretraining": no_pretraining, "pretrained": accuracy(predict(model, questions), answers),
            "baseline": baseline_accuracy(data.train, data.heldout),
            "pretrain_loss": sum(result.loss[-20:]) / len(result.loss[-20:])}
'''


def _experiment(body=_PRETRAIN_BODY, pretrained="model"):
    return (_PRETRAIN.replace("BODY", body.strip("\n").lstrip())
            + _FINETUNE_AND_EXPERIMENT.replace("PRETRAINED", pretrained))


WRONG_ANSWERS = [
    # ---- part 1: span corruption
    {
        "cell": "span_corrupt",
        "fails": ["test_span_corrupt", "test_training_loops"],
        "why": "leaves the span in place between the two masks instead of moving it to the end",
        "source": _corrupt(seq="doc[:s] + [MASK] + doc[s:s + m] + [MASK] + doc[s + m:]"),
    },
    {
        "cell": "span_corrupt",
        "fails": ["test_span_corrupt", "test_training_loops"],
        "why": "off by one in the truncation (keeps n + 1 tokens)",
        "source": _corrupt(trunc="n + 1"),
    },
    {
        "cell": "span_corrupt",
        "fails": ["test_span_corrupt", "test_training_loops"],
        "why": "draws the span's start before its length",
        "source": _corrupt(draws="s = rng.randint(0, L - 1)\n    m = rng.randint(1, max(1, min(L // 2, L - s)))"),
    },
    {
        "cell": "span_corrupt",
        "fails": ["test_span_corrupt"],
        "why": "the span is dropped: only the masks mark where it was",
        "source": _corrupt(seq="doc[:s] + [MASK] + doc[s + m:] + [MASK]"),
    },
    # ---- part 2: the fine-tuning example
    {
        "cell": "finetune_example",
        "fails": ["test_finetune_example", "test_training_loops"],
        "why": "trains on the question tokens too (no IGNORE)",
        "source": _EXAMPLE.replace("CHECK", _CHECK).replace("IGNORED", "pass"),
    },
    {
        "cell": "finetune_example",
        "fails": ["test_finetune_example", "test_training_loops"],
        "why": "ignores one target too many: the first answer token carries no loss",
        "source": _EXAMPLE.replace("CHECK", _CHECK).replace("IGNORED", "y[:len(question_ids) + 1] = IGNORE"),
    },
    {
        "cell": "finetune_example",
        "fails": ["test_finetune_example"],
        "why": "no ValueError when the sequence is too long (x comes out longer than block)",
        "source": _EXAMPLE.replace("CHECK", "pass").replace("IGNORED", "y[:len(question_ids)] = IGNORE"),
    },
    # ---- part 3: the baseline
    {
        "cell": "baseline",
        "fails": ["test_baseline"],
        "why": "the baseline city is taken from the held-out answers",
        "source": '''
def most_common_baseline(answers):
    if not answers:
        raise ValueError("no answers")
    counts = Counter(answers)
    best = max(counts.values())
    return next(a for a in answers if counts[a] == best)


def baseline_accuracy(train, heldout):
    city = most_common_baseline([a for _, a in heldout])
    return sum(a == city for _, a in heldout) / len(heldout)
''',
    },
    {
        "cell": "baseline",
        "fails": ["test_baseline"],
        "why": "ties go to the alphabetically first answer, not the first seen",
        "source": '''
def most_common_baseline(answers):
    if not answers:
        raise ValueError("no answers")
    counts = Counter(answers)
    return min(counts, key=lambda a: (-counts[a], a))
''' + _BASELINE_TAIL,
    },
    {
        "cell": "baseline",
        "fails": ["test_baseline"],
        "why": "ties go to the last answer seen",
        "source": '''
def most_common_baseline(answers):
    if not answers:
        raise ValueError("no answers")
    return Counter(reversed(answers)).most_common(1)[0][0]
''' + _BASELINE_TAIL,
    },
    # ---- part 4: the evaluation
    {
        "cell": "evaluation",
        "fails": ["test_accuracy"],
        "why": "accuracy ignores case",
        "source": _evaluation(match="p.strip().lower() == a.strip().lower()"),
    },
    {
        "cell": "evaluation",
        "fails": ["test_accuracy"],
        "why": "accuracy counts a prediction that contains the answer (a partial match)",
        "source": _evaluation(match="a.strip() in p"),
    },
    {
        "cell": "evaluation",
        "fails": ["test_predict"],
        "why": "the prompt lacks the mask that starts the answer",
        "source": _evaluation(prompt="encode(q)"),
    },
    {
        "cell": "evaluation",
        "fails": ["test_predict"],
        "why": "does not stop at the mask (keeps generating to max_new)",
        "source": _evaluation(stop="pass"),
    },
    {
        "cell": "evaluation",
        "fails": ["test_predict"],
        "why": "batched with right padding, reading every row's logits at the last column",
        "source": _ACCURACY.replace("MATCH", _MATCH) + '''

def predict(model, questions, *, max_new=3):
    model.eval()
    prompts = [encode(q) + [MASK] for q in questions]
    width = max(len(p) for p in prompts)
    seqs = [p + [PAD] * (width - len(p)) for p in prompts]
    outs = [[] for _ in prompts]
    done = [False] * len(prompts)
    with torch.no_grad():
        for _ in range(max_new):
            nxt = model(torch.tensor(seqs))[:, -1].argmax(-1).tolist()
            for i, t in enumerate(nxt):
                if t == MASK:
                    done[i] = True
                if not done[i]:
                    outs[i].append(t)
                seqs[i].append(t)
    model.train()
    return [decode(o) for o in outs]
''',
    },
    # ---- part 5: the loops and the experiment
    {
        "cell": "experiment",
        "fails": ["test_training_loops"],
        "why": "pretrains as a plain language model: no span corruption",
        "source": _experiment(body='''
    def batch_fn(step):
        rng = random.Random(seed * 1_000_003 + step)
        seqs = []
        for _ in range(batch):
            doc = docs[rng.randrange(len(docs))][:block + 1]
            seqs.append(torch.tensor(doc + [PAD] * (block + 1 - len(doc))))
        seqs = torch.stack(seqs)
        return seqs[:, :-1], seqs[:, 1:]
'''),
    },
    {
        "cell": "experiment",
        "fails": ["test_training_loops"],
        "why": "one random.Random for the whole run instead of one per step",
        "source": _experiment(body='''
    rng = random.Random(seed)

    def batch_fn(step):
        pairs = [span_corrupt(docs[rng.randrange(len(docs))], block=block, rng=rng) for _ in range(batch)]
        return torch.stack([x for x, _ in pairs]), torch.stack([y for _, y in pairs])
'''),
    },
    {
        "cell": "experiment",
        "fails": ["test_experiment"],
        "why": "pretrains a fresh model and fine-tunes another: no pretraining reaches the answers",
        "source": _experiment(pretrained="make_model(seed)"),
    },
    # ---- part 6: the variant
    {
        "cell": "variant",
        "fails": ["test_variant"],
        "why": "dense attention is not an efficient variant",
        "source": '''
VARIANT = "dense"
VARIANT_KWARGS = {}


def variant_model(seed):
    return build_model(VARIANT, seed=seed, config=GRADED, **VARIANT_KWARGS)
''',
    },
    {
        "cell": "variant",
        "fails": ["test_variant"],
        "why": "builds the local-window model without causal=True: an encoder sees the future",
        "source": '''
VARIANT = "local"
VARIANT_KWARGS = {"window": 8}


def variant_model(seed):
    return Transformer(VARIANT, vocab=len(VOCAB), max_len=GRADED.block, d_model=GRADED.d_model,
                       n_layers=GRADED.n_layers, n_heads=GRADED.n_heads, seed=seed, **VARIANT_KWARGS)
''',
    },
]
