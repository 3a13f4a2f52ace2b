"""The synthetic QA task's vocabulary and data set, and SQuAD's F1 and exact match over spans.

See :mod:`attnkit.qa` for the task: a cue d positions before the answer span, the question's
cue id in the first g = 3 (global) tokens, candidates in filler.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

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
