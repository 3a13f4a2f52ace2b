"""A small extractive QA task where the attention window matters, and a tiny Longformer to learn it.

Wu's progress reports (2022) train Longformer on SQuAD with a learnable bell-curve window and report F1
and exact match. This module is the CPU-sized stand-in: a synthetic task, a two-layer encoder
with pluggable attention, a trainer with a separate learning rate for the sigma parameters, and
SQuAD's metrics over spans.

Layout: :mod:`.data` (vocabulary, data set, SQuAD metrics), :mod:`.model` (pluggable attention
modules and the encoder), :mod:`.training` (training, evaluation, σ by token type).

The task. Every example is a token sequence of length N::

    [QUESTION, c, SEP,  . . a a . . . . c . . . . . a . . . . . . . . a a a . .  ]
     '-- g = 3 global --'  candidate    cue  '- d -' answer            candidate

The passage holds ``n_candidates`` candidate spans of 1..``max_span`` answer-word tokens in
filler. The question (positions 0..2) names a cue id c; the cue c sits in the passage exactly
``distance`` = d positions before the answer span, and every other candidate is more than
d + ``margin`` positions from it. So a candidate token must see the cue d positions back: a
window d <= w <= d + margin connects the answer, and only the answer, with the cue in one
layer; a window w < d cannot (L layers could relay over L·w through the filler, but the tiny
encoder does not learn that in the budgets used here: w = 4 stays at chance for d = 8), and
guessing a candidate scores about 1/n_candidates in exact match. A dense or wider window shows
the cue to every candidate, which must then learn the distance from positions (slow: w = 24
and dense stay at chance for 200 steps where w = 12 solves the task); a bell curve inside the
window builds that preference in. With ``decoys=True`` the other candidates get cues of their
own (other ids, also d before them), so only matching the question's id tells the answer apart:
a harder task (a window of 12 is still at chance after 900 steps).

The question is at the start, so the first g = 3 tokens are Longformer's global tokens (they
see all and are seen by all), as the reports and Longformer do for the question in SQuAD.

API (all deterministic from ``seed``)::

    data = make_dataset(n, length=64, distance=8, seed=0)         # QAData: tokens (n, N), start, end, cue
    train_set, test_set = make_splits(4096, 512, length=64, distance=8, seed=0)
    f1, em = span_f1(ps, pe, gs, ge), exact_match(ps, pe, gs, ge)  # per example, in [0, 1]

    model = QAEncoder(attention("dense"), seed=0)                       # or:
    model = QAEncoder(attention("window", window=12), seed=0)          # + g = 3 global question tokens
    model = QAEncoder(attention("bellcurve", sigma="learned", sigma_init=1.0,
                                normalised=False, window=12), seed=0)  # per-token σ (W_p, U_d)
    model = QAEncoder(attention("bellcurve", sigma=4.0, window=12))    # a fixed σ
    model = QAEncoder(lambda layer, d_model: MyModule())               # any module(q, k, v, x)
    start_logits, end_logits = model(tokens)                           # (B, N) each

    hist = train(model, (train_set, test_set), steps=200, lr=6e-3, sigma_lr_mult=10.0, seed=0)
    hist.f1[-1], hist.em[-1], hist.sigma_mean                          # curves, for plots
    evaluate(model, test_set)                                          # {"f1": .., "em": ..} in %
    sigma_by_token_type(model, tokens)                                 # mean σ of cue / words / filler

Sizes that work (measured on a shared 2-core CPU): N = 64, d = 8, 3 candidates, 2048 training
examples, C = 32, H = 4, L = 2, batch 32, lr 6e-3: a window w = 12 reaches F1 > 90 within
150-200 steps (5-10 s); w = 4 < d stays at chance.

Attention modules (``attention(kind, ...)`` returns a factory ``(layer_index, d_model) -> nn.Module``)
are called as ``module(q, k, v, x)`` with q, k, v of shape ``(B, H, N, D)`` and x the layer's
input hidden states ``(B, N, C)`` (what a sigma predictor reads). A module with learnable sigma
parameters exposes them through ``sigma_parameters()`` (the trainer gives them
``lr · sigma_lr_mult``) and the sigma it used in its last forward through ``last_sigma``.

Metrics (SQuAD v1.1's ``evaluate-v1.1.py``, over spans): with overlap o = number of positions in
both the predicted and the gold span, precision p = o / |pred|, recall r = o / |gold|,
F1 = 2pr / (p + r) (0 when o = 0), exact match = 1 when the spans are equal. SQuAD counts a bag
of normalised answer words; here a position counts, so a word repeated outside the gold span
earns nothing. Predicted spans are decoded as BERT does: argmax of start + end logits over
start <= end < start + max_answer_len.

Cost: the encoder is O(L·N·C²) for projections and feed-forward plus the attention's own cost
(the modules here use a dense ``(N, N)`` mask or bias: O(N²), the fastest on a CPU at N <= 256;
``slice_tol`` switches the bell curve to the banded variable-window path).

Sources: Rajpurkar et al. 2016, SQuAD (arXiv:1606.05250) for the metrics; Devlin et al. 2019,
BERT (arXiv:1810.04805) for the start/end span heads; Beltagy et al. 2020, Longformer
(arXiv:2004.05150) for window + global question tokens.
"""
from __future__ import annotations

from .data import (ANSWER0, CUE0, FILLER0, GLOBAL_TOKENS, N_ANSWER_WORDS, N_CUES, N_FILLER, PAD,
                   QUESTION, SEP, VOCAB_SIZE, QAData, decode_spans, exact_match, make_dataset,
                   make_splits, span_f1)
from .model import BellCurveAttention, FunctionAttention, QAEncoder, WindowAttention, attention
from .training import History, evaluate, sigma_by_token_type, train

__all__ = [
    "PAD", "QUESTION", "SEP", "N_CUES", "N_ANSWER_WORDS", "N_FILLER", "CUE0", "ANSWER0", "FILLER0",
    "VOCAB_SIZE", "GLOBAL_TOKENS",
    "QAData", "make_dataset", "make_splits", "span_f1", "exact_match", "decode_spans",
    "FunctionAttention", "WindowAttention", "BellCurveAttention", "attention", "QAEncoder",
    "History", "train", "evaluate", "sigma_by_token_type",
]
