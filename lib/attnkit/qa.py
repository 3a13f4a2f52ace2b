"""A small extractive QA task where the attention window matters, and a tiny Longformer to learn it.

The seeds (000, 001) train Longformer on SQuAD with a learnable bell-curve window and report F1
and exact match. This module is the CPU-sized stand-in: a synthetic task, a two-layer encoder
with pluggable attention, a trainer with a separate learning rate for the sigma parameters, and
SQuAD's metrics over spans.

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
see all and are seen by all), as the seeds and Longformer do for the question in SQuAD.

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

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .dense import dense_attention
from .modules import merge_heads, split_heads

__all__ = [
    "PAD", "QUESTION", "SEP", "N_CUES", "N_ANSWER_WORDS", "VOCAB_SIZE", "GLOBAL_TOKENS",
    "QAData", "make_dataset", "make_splits", "span_f1", "exact_match", "decode_spans",
    "FunctionAttention", "BellCurveAttention", "attention", "QAEncoder",
    "History", "train", "evaluate", "sigma_by_token_type",
]

# ---------------------------------------------------------------- vocabulary

PAD, QUESTION, SEP = 0, 1, 2
N_CUES, N_ANSWER_WORDS, N_FILLER = 8, 8, 13
CUE0 = 3                                    # cue ids: 3 .. 10
ANSWER0 = CUE0 + N_CUES                      # answer-word ids: 11 .. 18
FILLER0 = ANSWER0 + N_ANSWER_WORDS           # filler ids: 19 .. 31
VOCAB_SIZE = FILLER0 + N_FILLER              # 32
GLOBAL_TOKENS = 3                            # [QUESTION, c, SEP]


# ---------------------------------------------------------------- the data set

@dataclass(frozen=True)
class QAData:
    """A set of QA examples (tensors on the CPU).

    Attributes:
        tokens: ``(n, N)`` long, token ids.
        start, end: ``(n,)`` long, the gold answer span (inclusive) as positions in ``tokens``.
        cue: ``(n,)`` long, the position of the cue that the question names.
        distance: d, answer start minus cue position (the same for every example).
        global_tokens: g, the number of question tokens at the start (Longformer's global tokens).
    """

    tokens: Tensor
    start: Tensor
    end: Tensor
    cue: Tensor
    distance: int
    global_tokens: int = GLOBAL_TOKENS

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def length(self) -> int:
        return self.tokens.shape[1]

    def batch(self, index: Tensor) -> "QAData":
        """The examples at ``index`` (a long tensor)."""
        return QAData(self.tokens[index], self.start[index], self.end[index], self.cue[index],
                      self.distance, self.global_tokens)


def make_dataset(n: int, *, length: int = 64, distance: int = 8, seed: int = 0,
                 n_candidates: int = 3, max_span: int = 3, margin: int | None = None,
                 decoys: bool = False) -> QAData:
    """``n`` examples of the cue/answer task (see the module docstring), deterministic in ``seed``.

    Layout of a passage (after the g = 3 question tokens): ``n_candidates`` blocks in random
    order, block k a cue slot at position c_k and a candidate span of 1..``max_span`` answer
    words at c_k + d. The question's block keeps its cue (id c); the others hold filler there
    (``decoys=False``) or cues of other ids (``decoys=True``). Between the end of one span and
    the next cue slot lie at least d + margin + 1 positions (default margin = d // 2), so no
    other candidate token is within d + margin of the cue. The spare room is spread at random
    over the gaps. Raises ``ValueError`` when the blocks do not fit in ``length``.

    Cost: O(n·N) time and memory, vectorised (4096 examples of N = 64 in a few milliseconds).
    """
    d, K = int(distance), int(n_candidates)
    margin = d // 2 if margin is None else int(margin)
    if n < 1 or d < 1 or K < 1 or max_span < 1 or margin < 0:
        raise ValueError(f"need n, distance, n_candidates, max_span >= 1 and margin >= 0; got n={n}, "
                         f"distance={d}, n_candidates={K}, max_span={max_span}, margin={margin}")
    if K > N_CUES:
        raise ValueError(f"n_candidates={K} exceeds the {N_CUES} cue ids")
    g, P = GLOBAL_TOKENS, length - GLOBAL_TOKENS
    room = K * (d + max_span) + (K - 1) * (d + margin + 1)
    if room > P:
        raise ValueError(f"{K} blocks with distance={d}, max_span={max_span}, margin={margin} need "
                         f"{room + g} tokens; length={length} is too short")
    gen = torch.Generator().manual_seed(seed)
    span = torch.randint(1, max_span + 1, (n, K), generator=gen)  # span lengths L_k: (n, K)
    slack = P - (K * d + span.sum(1) + (K - 1) * (d + margin + 1))  # free positions: (n,)
    extra = (torch.rand(n, K, generator=gen) * (slack + 1).unsqueeze(1)).floor().long()
    extra = extra.sort(dim=1).values  # non-decreasing offsets in [0, slack]: (n, K)
    block = d + span + d + margin + 1  # block k plus its minimum gap: (n, K)
    before = torch.cumsum(block, 1) - block  # sum of earlier blocks: (n, K)
    cue_pos = g + extra + before  # (n, K)
    cue_id = CUE0 + torch.rand(n, N_CUES, generator=gen).argsort(1)[:, :K]  # distinct ids: (n, K)
    answer = torch.randint(0, K, (n,), generator=gen)  # which block is asked about: (n,)

    tokens = FILLER0 + torch.randint(0, N_FILLER, (n, length), generator=gen)
    words = ANSWER0 + torch.randint(0, N_ANSWER_WORDS, (n, K, max_span), generator=gen)
    rows = torch.arange(n)
    if decoys:
        tokens[rows.unsqueeze(1), cue_pos] = cue_id
    offsets = torch.arange(max_span).view(1, 1, -1)  # (1, 1, S)
    span_pos = (cue_pos + d).unsqueeze(-1) + offsets  # (n, K, S)
    inside = offsets < span.unsqueeze(-1)  # (n, K, S)
    tokens[rows.view(n, 1, 1).expand_as(span_pos)[inside], span_pos[inside]] = words[inside]
    cue = cue_pos[rows, answer]
    tokens[rows, cue] = cue_id[rows, answer]
    tokens[:, 0], tokens[:, 1], tokens[:, 2] = QUESTION, cue_id[rows, answer], SEP
    start = cue + d
    end = start + span[rows, answer] - 1
    return QAData(tokens, start, end, cue, d)


def make_splits(n_train: int, n_test: int, *, seed: int = 0, **kwargs) -> tuple[QAData, QAData]:
    """A training set and a held-out set drawn with different seeds (``seed`` and ``seed + 1``)."""
    return (make_dataset(n_train, seed=2 * seed, **kwargs),
            make_dataset(n_test, seed=2 * seed + 1, **kwargs))


# ---------------------------------------------------------------- metrics (SQuAD over spans)

def _check_spans(*spans: Tensor) -> None:
    shape = spans[0].shape
    if any(s.shape != shape for s in spans):
        raise ValueError(f"span tensors must share one shape, got {[tuple(s.shape) for s in spans]}")


def span_f1(pred_start: Tensor, pred_end: Tensor, gold_start: Tensor, gold_end: Tensor) -> Tensor:
    """SQuAD's token F1 between predicted and gold spans (inclusive ends), per example in [0, 1].

        o = max(0, min(e, e*) - max(s, s*) + 1),  p = o / (e - s + 1),  r = o / (e* - s* + 1),
        F1 = 2·p·r / (p + r)  (0 when o = 0; an empty prediction, e < s, scores 0)
    """
    _check_spans(pred_start, pred_end, gold_start, gold_end)
    overlap = (torch.minimum(pred_end, gold_end) - torch.maximum(pred_start, gold_start) + 1).clamp(min=0)
    n_pred = (pred_end - pred_start + 1).clamp(min=0)
    n_gold = (gold_end - gold_start + 1).clamp(min=1)
    overlap = overlap.float()
    p = overlap / n_pred.clamp(min=1)
    r = overlap / n_gold
    return torch.where(overlap > 0, 2 * p * r / (p + r).clamp(min=1e-12), torch.zeros_like(p))


def exact_match(pred_start: Tensor, pred_end: Tensor, gold_start: Tensor, gold_end: Tensor) -> Tensor:
    """1.0 where the predicted span equals the gold span, else 0.0 (per example)."""
    _check_spans(pred_start, pred_end, gold_start, gold_end)
    return ((pred_start == gold_start) & (pred_end == gold_end)).float()


def decode_spans(start_logits: Tensor, end_logits: Tensor, max_answer_len: int = 8) -> tuple[Tensor, Tensor]:
    """BERT's span decoding: argmax of start_logits[s] + end_logits[e] over s <= e < s + max_answer_len.

    ``(B, N)`` logits in, ``(B,)`` start and end positions out. Memory O(B·N²) (fine for the
    task's N; a real reader would keep the top-k starts and ends).
    """
    if start_logits.shape != end_logits.shape or start_logits.dim() != 2:
        raise ValueError(f"expected start and end logits of one shape (B, N), got "
                         f"{tuple(start_logits.shape)} and {tuple(end_logits.shape)}")
    B, N = start_logits.shape
    s = torch.arange(N).view(N, 1)
    e = torch.arange(N).view(1, N)
    allowed = (e >= s) & (e < s + max_answer_len)  # (N, N)
    pair = start_logits.unsqueeze(2) + end_logits.unsqueeze(1)  # (B, N, 1) + (B, 1, N) -> (B, N, N)
    pair = pair.masked_fill(~allowed, float("-inf"))
    best = pair.flatten(1).argmax(1)  # (B,)
    return best // N, best % N


# ---------------------------------------------------------------- pluggable attention modules

class FunctionAttention(nn.Module):
    """Wraps any kit-convention function ``fn(q, k, v, **kwargs)`` as a module ``(q, k, v, x)``.

    ``x`` (the hidden states) is ignored; the module has no parameters.
    """

    def __init__(self, fn: Callable[..., Tensor] = dense_attention, **kwargs):
        super().__init__()
        self.fn, self.kwargs = fn, kwargs

    def forward(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor | None = None) -> Tensor:
        return self.fn(q, k, v, **self.kwargs)

    def extra_repr(self) -> str:
        return f"fn={getattr(self.fn, '__name__', self.fn)}, {self.kwargs}"


class WindowAttention(nn.Module):
    """Longformer's pattern, window w plus g global tokens, as a boolean mask on dense attention.

    Equal to ``attnkit.VARIANTS["longformer"](q, k, v, window=w, global_tokens=g)``; at the
    task's sizes the masked dense product is faster on a CPU than the banded path (B, H, N, D =
    32, 4, 64, 8, w = 12, forward + backward: 8 ms against 20 ms on one core), so training uses it. Cost: time O(N²·D), memory O(N²) (the mask is cached per N).
    """

    def __init__(self, window: int, global_tokens: int = GLOBAL_TOKENS):
        super().__init__()
        if window < 0 or global_tokens < 0:
            raise ValueError(f"window and global_tokens must be >= 0, got {window}, {global_tokens}")
        self.window, self.global_tokens = int(window), int(global_tokens)
        self._masks: dict[tuple[int, str], Tensor] = {}

    def mask(self, N: int, device=None) -> Tensor:
        """The ``(N, N)`` boolean mask: |i - j| <= w, or i < g, or j < g."""
        key = (N, str(device))
        if key not in self._masks:
            i = torch.arange(N, device=device).view(N, 1)
            j = torch.arange(N, device=device).view(1, N)
            g = self.global_tokens
            self._masks[key] = ((i - j).abs() <= self.window) | (i < g) | (j < g)
        return self._masks[key]

    def forward(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor | None = None) -> Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask(q.shape[-2], q.device))

    def extra_repr(self) -> str:
        return f"window={self.window}, global_tokens={self.global_tokens}"


class BellCurveAttention(nn.Module):
    """The seeds' bell-curve window: scores get -½((i - j)/σ)² inside the window, σ fixed or learned.

        s_ij = q_i·k_j/√D - ½((i - j)/σ_i)² [- log(σ_i·√(2π)) if normalised]   |i - j| <= w, i, j >= g
        s_ij = q_i·k_j/√D   if i < g or j < g (global tokens);   -inf otherwise

    This is ``attnkit.VARIANTS["bellcurve"]`` (the tests hold the two equal). At the task's sizes
    (N <= 256) it is computed as one ``(B, 1, N, N)`` bias (:func:`attnkit.bellcurve.bell_log_curve`)
    added inside ``F.scaled_dot_product_attention``, the fastest path on a CPU for short inputs.

    With ``sigma="learned"`` an :class:`attnkit.bellcurve.SigmaPredictor` (the seeds' W_p, U_d)
    maps each token's hidden state x_i to σ_i > 0; a number fixes σ for every query.
    ``normalised`` picks the PDF 1/(σ√(2π))·exp(..) over the max-1 curve; ``window`` caps
    |i - j| (None: no cap, the seeds' stage 1); the first ``global_tokens`` tokens are
    Longformer's global tokens (no bias).

    The seeds' stage 2: set ``slice_tol`` (e.g. 1e-3) and each query i attends only to the
    window w_i = ``window_from_sigma(σ_i, tol=slice_tol, max_window=window or N)`` sliced from
    its own σ, through :func:`attnkit.bellcurve.variable_window_attention` (banded on the CPU,
    memory O(N·(max w_i + g)) instead of O(N²)). ``last_widths`` then holds the ``(B, N)`` widths.

    After each forward, ``last_sigma`` holds the σ used, detached: ``(B, N)`` when learned, a
    0-dim tensor when fixed. ``sigma_parameters()`` lists the predictor's parameters (empty
    for a fixed σ).

    Args:
        d_model: width C of the hidden states x (what the predictor reads).
        sigma: ``"learned"`` or a positive number.
        sigma_init: the predictor's σ at initialisation (the seeds start at 1.0 and 9.5).
        normalised, window, global_tokens: as in ``VARIANTS["bellcurve"]``.
        slice_tol: None (stage 1: the whole capped window) or the tail tolerance of stage 2.
    """

    def __init__(self, d_model: int, *, sigma: float | str = "learned", sigma_init: float = 1.0,
                 normalised: bool = False, window: int | None = None,
                 global_tokens: int = GLOBAL_TOKENS, slice_tol: float | None = None):
        super().__init__()
        from .bellcurve import SigmaPredictor
        if sigma != "learned" and not (isinstance(sigma, (int, float)) and sigma > 0):
            raise ValueError(f"sigma must be 'learned' or a positive number, got {sigma!r}")
        if window is not None and window < 0 or global_tokens < 0:
            raise ValueError(f"window and global_tokens must be >= 0, got {window}, {global_tokens}")
        self.learned = sigma == "learned"
        self.sigma = None if self.learned else float(sigma)
        self.predictor = SigmaPredictor(d_model, sigma_init=sigma_init) if self.learned else None
        self.normalised, self.window, self.global_tokens = bool(normalised), window, int(global_tokens)
        self.slice_tol = slice_tol
        self.last_sigma: Tensor | None = None
        self.last_widths: Tensor | None = None

    def sigma_parameters(self) -> list[nn.Parameter]:
        return list(self.predictor.parameters()) if self.learned else []

    def current_sigma(self, x: Tensor) -> Tensor:
        """σ for hidden states x ``(B, N, C)``: ``(B, N)`` when learned, else a 0-dim tensor."""
        if self.learned:
            return self.predictor(x).squeeze(1)  # (B, 1, N) -> (B, N)
        return torch.tensor(self.sigma, dtype=x.dtype, device=x.device)

    def bias(self, sigma: Tensor, N: int) -> Tensor:
        """The additive bias, ``(B, 1, N, N)`` for σ ``(B, N)`` (``(N, N)`` for a 0-dim σ)."""
        from .bellcurve import bell_log_curve
        i = torch.arange(N, device=sigma.device)
        d = (i.view(N, 1) - i.view(1, N)).to(sigma.dtype)  # (N, N), d = i - j
        sig = sigma.view(-1, 1, N, 1) if sigma.dim() else sigma  # per query row
        curve = bell_log_curve(d, sig, self.normalised)  # (B, 1, N, N) or (N, N)
        g = self.global_tokens
        is_global = (i.view(N, 1) < g) | (i.view(1, N) < g)  # (N, N)
        if self.window is not None:
            curve = curve.masked_fill(d.abs() > self.window, float("-inf"))
        return torch.where(is_global, torch.zeros((), dtype=curve.dtype, device=curve.device), curve)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor | None = None) -> Tensor:
        if x is None:
            raise ValueError("BellCurveAttention needs the hidden states x (B, N, C)")
        sigma = self.current_sigma(x)
        self.last_sigma = sigma.detach()
        if self.slice_tol is not None:
            return self.sliced(q, k, v, sigma)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=self.bias(sigma, q.shape[-2]).to(q.dtype))

    def sliced(self, q: Tensor, k: Tensor, v: Tensor, sigma: Tensor) -> Tensor:
        """Stage 2: per-query windows sliced from σ, on the efficient variable-window path."""
        from .bellcurve import variable_window_attention, window_from_sigma
        B, _, N, _ = q.shape
        cap = N if self.window is None else min(self.window, N)
        sig = sigma if sigma.dim() else sigma.expand(B, N)  # (B, N)
        widths = window_from_sigma(sig, tol=self.slice_tol, max_window=cap)  # (B, N) long
        self.last_widths = widths
        return variable_window_attention(q, k, v, widths=widths, sigma=sig.to(q.dtype),
                                         normalised=self.normalised, global_tokens=self.global_tokens)

    def extra_repr(self) -> str:
        s = "learned" if self.learned else self.sigma
        return f"sigma={s}, normalised={self.normalised}, window={self.window}, global_tokens={self.global_tokens}"


def attention(kind: str, **kwargs) -> Callable[[int, int], nn.Module]:
    """A factory ``(layer_index, d_model) -> module`` for :class:`QAEncoder`.

    Kinds: ``"dense"``; ``"window"`` (``window``, ``global_tokens=3``); ``"bellcurve"``
    (the keywords of :class:`BellCurveAttention`); ``"function"`` (``fn`` plus its keywords).
    """
    if kind == "dense":
        return lambda layer, d_model: FunctionAttention(F.scaled_dot_product_attention)
    if kind == "window":
        return lambda layer, d_model: WindowAttention(**kwargs)
    if kind == "bellcurve":
        return lambda layer, d_model: BellCurveAttention(d_model, **kwargs)
    if kind == "function":
        fn = kwargs.pop("fn")
        return lambda layer, d_model: FunctionAttention(fn, **kwargs)
    raise ValueError(f"unknown attention kind {kind!r}: expected dense, window, bellcurve or function")


# ---------------------------------------------------------------- the encoder

class _Block(nn.Module):
    """Pre-norm Transformer block: x + attn(LN(x)), then x + FFN(LN(x))."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, attn: nn.Module):
        super().__init__()
        self.n_heads = n_heads
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.w_qkv = nn.Linear(d_model, 3 * d_model)
        self.w_o = nn.Linear(d_model, d_model)
        self.attn = attn
        self.ff = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))

    def forward(self, x: Tensor) -> Tensor:
        h = self.ln1(x)  # (B, N, C)
        q, k, v = (split_heads(t, self.n_heads) for t in self.w_qkv(h).chunk(3, dim=-1))  # (B, H, N, D)
        x = x + self.w_o(merge_heads(self.attn(q, k, v, h)))  # (B, N, C)
        return x + self.ff(self.ln2(x))


class QAEncoder(nn.Module):
    """A tiny Longformer-like reader: embeddings + positions, L pre-norm blocks, start/end heads.

        h_0 = E[tokens] + P[positions],  h_l = Block_l(h_{l-1}),  (start, end) = h_L W_span

    Args:
        attention: factory ``(layer_index, d_model) -> module(q, k, v, x)`` (see :func:`attention`);
            default dense.
        d_model, n_heads, n_layers, d_ff: sizes (C, H, L, feed-forward width; default 4·C).
        max_len: the longest sequence (learned absolute positions, as in BERT and Longformer).
        seed: if given, parameters are initialised from ``torch.manual_seed(seed)`` without
            touching the global random state.

    ``forward(tokens (B, N)) -> (start_logits (B, N), end_logits (B, N))``.
    """

    def __init__(self, attention: Callable[[int, int], nn.Module] | None = None, *,
                 vocab_size: int = VOCAB_SIZE, d_model: int = 32, n_heads: int = 4, n_layers: int = 2,
                 d_ff: int | None = None, max_len: int = 256, seed: int | None = None):
        super().__init__()
        make = attention or (lambda layer, c: FunctionAttention(F.scaled_dot_product_attention))
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            self.tok = nn.Embedding(vocab_size, d_model)
            self.pos = nn.Embedding(max_len, d_model)
            self.blocks = nn.ModuleList(_Block(d_model, n_heads, d_ff or 4 * d_model, make(i, d_model))
                                        for i in range(n_layers))
            self.ln = nn.LayerNorm(d_model)
            self.span = nn.Linear(d_model, 2)
        self.max_len = max_len

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        if tokens.dim() != 2 or tokens.shape[1] > self.max_len:
            raise ValueError(f"expected tokens (B, N) with N <= {self.max_len}, got {tuple(tokens.shape)}")
        x = self.tok(tokens) + self.pos.weight[: tokens.shape[1]]  # (B, N, C)
        for block in self.blocks:
            x = block(x)
        logits = self.span(self.ln(x))  # (B, N, 2)
        return logits[..., 0], logits[..., 1]

    def attention_modules(self) -> list[nn.Module]:
        return [b.attn for b in self.blocks]

    def sigma_parameters(self) -> list[nn.Parameter]:
        """The parameters that only compute sigma (the seeds' U_d and W_p), for their own LR."""
        return [p for m in self.attention_modules() if hasattr(m, "sigma_parameters")
                for p in m.sigma_parameters()]

    def last_sigma(self) -> list[Tensor | None]:
        """Per layer, the sigma its attention used in the last forward (None if it has none)."""
        return [getattr(m, "last_sigma", None) for m in self.attention_modules()]


# ---------------------------------------------------------------- training and evaluation

@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` torch threads, then restore the previous number (None: leave it)."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class History:
    """What :func:`train` logged.

    Attributes:
        loss: training loss at every step (mean of the start and end cross-entropies).
        eval_steps: the steps at which the held-out split was scored; ``f1``, ``em`` (percent) there.
        sigma_mean: per step, the mean σ over the passage tokens (query positions >= g) of the
            training batch, one list per layer; empty lists if the model has no learned σ.
        seconds: wall time of the whole run.
    """

    loss: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    f1: list[float] = field(default_factory=list)
    em: list[float] = field(default_factory=list)
    sigma_mean: list[list[float]] = field(default_factory=list)
    seconds: float = 0.0

    def final(self) -> dict[str, float]:
        """The last held-out scores, ``{"f1": .., "em": ..}``."""
        return {"f1": self.f1[-1], "em": self.em[-1]}


def _loss(model: nn.Module, batch: QAData) -> Tensor:
    start_logits, end_logits = model(batch.tokens)  # (B, N) each
    return 0.5 * (F.cross_entropy(start_logits, batch.start) + F.cross_entropy(end_logits, batch.end))


@torch.no_grad()
def evaluate(model: nn.Module, data: QAData, *, batch_size: int = 512, max_answer_len: int = 8,
             threads: int | None = 1) -> dict[str, float]:
    """F1 and exact match in percent (SQuAD's convention) of ``model`` on ``data``."""
    was_training = model.training
    model.eval()
    f1 = em = 0.0
    with _threads(threads):
        for lo in range(0, len(data), batch_size):
            b = data.batch(torch.arange(lo, min(lo + batch_size, len(data))))
            ps, pe = decode_spans(*model(b.tokens), max_answer_len)
            f1 += span_f1(ps, pe, b.start, b.end).sum().item()
            em += exact_match(ps, pe, b.start, b.end).sum().item()
    model.train(was_training)
    return {"f1": 100 * f1 / len(data), "em": 100 * em / len(data)}


def train(model: nn.Module, data: tuple[QAData, QAData], *, steps: int = 200, lr: float = 6e-3,
          sigma_lr_mult: float = 1.0, batch_size: int = 32, weight_decay: float = 0.01,
          warmup: float = 0.1, seed: int = 0, log_every: int = 50, threads: int | None = 1,
          progress: bool = False) -> History:
    """Train ``model`` on ``data = (train_set, held_out)`` with AdamW; returns a :class:`History`.

    The parameters from ``model.sigma_parameters()`` (if any) form their own group with learning
    rate ``lr · sigma_lr_mult`` and no weight decay (the seeds' "higher LR for U_d and W_p").
    Schedule: linear warm-up over ``warmup · steps``, then cosine decay to 0; gradients clipped
    to norm 1. Batches are drawn with ``torch.Generator().manual_seed(seed)``; with the model
    built from a seed too, a run is bit-for-bit repeatable on one machine and thread count.
    ``threads``: torch threads during training (1 is fastest for this small model on a
    shared 2-core CPU; None leaves the setting alone). The held-out split is scored every
    ``log_every`` steps and at the end.
    """
    train_set, held_out = data
    if steps < 1 or lr <= 0 or sigma_lr_mult <= 0 or batch_size < 1:
        raise ValueError(f"need steps >= 1, lr > 0, sigma_lr_mult > 0, batch_size >= 1; got "
                         f"steps={steps}, lr={lr}, sigma_lr_mult={sigma_lr_mult}, batch_size={batch_size}")
    sigma_params = list(model.sigma_parameters()) if hasattr(model, "sigma_parameters") else []
    sigma_ids = {id(p) for p in sigma_params}
    rest = [p for p in model.parameters() if id(p) not in sigma_ids]
    groups = [{"params": rest, "lr": lr, "weight_decay": weight_decay, "base_lr": lr}]
    if sigma_params:
        groups.append({"params": sigma_params, "lr": lr * sigma_lr_mult, "weight_decay": 0.0,
                       "base_lr": lr * sigma_lr_mult})
    opt = torch.optim.AdamW(groups)
    n_warm = max(1, int(warmup * steps))

    def lr_factor(step: int) -> float:
        if step < n_warm:
            return (step + 1) / n_warm
        return 0.5 * (1 + math.cos(math.pi * (step - n_warm) / max(1, steps - n_warm)))

    gen = torch.Generator().manual_seed(seed)
    hist = History()
    g = train_set.global_tokens
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=steps, leave=False)
    t0 = time.perf_counter()
    model.train()
    with _threads(threads):
        for step in range(steps):
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * lr_factor(step)
            batch = train_set.batch(torch.randint(0, len(train_set), (batch_size,), generator=gen))
            loss = _loss(model, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            hist.loss.append(loss.item())
            if sigma_params:
                hist.sigma_mean.append([s[..., g:].mean().item() for s in model.last_sigma()
                                        if s is not None and s.dim() >= 1])
            if (step + 1) % log_every == 0 or step + 1 == steps:
                scores = evaluate(model, held_out, threads=None)
                hist.eval_steps.append(step + 1)
                hist.f1.append(scores["f1"])
                hist.em.append(scores["em"])
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    hist.seconds = time.perf_counter() - t0
    return hist


@torch.no_grad()
def sigma_by_token_type(model: QAEncoder, tokens: Tensor) -> list[dict[str, float]]:
    """Per layer, the mean σ the model gives to cue tokens, answer words and filler in ``tokens``.

    ``tokens`` is ``(B, N)``; question tokens (the first g) are left out. Layers without a
    learned σ give an empty dict. This is how the chapter sees *which* tokens widen their window.
    """
    was_training = model.training
    model.eval()
    model(tokens)
    model.train(was_training)
    passage = torch.zeros_like(tokens, dtype=torch.bool)
    passage[:, GLOBAL_TOKENS:] = True
    kinds = {"cue": (tokens >= CUE0) & (tokens < ANSWER0), "answer word": (tokens >= ANSWER0) & (tokens < FILLER0),
             "filler": tokens >= FILLER0}
    out = []
    for sigma in model.last_sigma():
        if sigma is None or sigma.dim() != 2:
            out.append({})
            continue
        out.append({name: float(sigma[mask & passage].mean()) for name, mask in kinds.items()})
    return out
