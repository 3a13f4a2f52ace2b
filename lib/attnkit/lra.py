"""Three synthetic long-range tasks in the spirit of the Long Range Arena, drawn from a seed.

Each task is a function ``task(n, *, length, seed) -> (inputs (n, N), targets (n, N))`` of
LongTensors, with ``targets == IGNORE`` (:data:`attnkit.tasks.IGNORE`) wherever there is nothing
to predict, so :func:`attnkit.tasks.accuracy` and ``F.cross_entropy(..., ignore_index=IGNORE)``
work unchanged. In every task the evidence for an answer lies far from where it is asked for;
:data:`TASKS` names them with their vocabulary size and chance accuracy.

* :func:`listops` (Nangia & Bowman 2018; Tay et al. 2021, LRA's ListOps, hierarchical): a nested
  expression of MAX, MIN, MED (lower median) and SM (sum mod 10) over the digits 0-9, written
  at the start and padded to N; the answer (a digit) is predicted at the last token ``=``::

      [MAX 4 [MIN 7 2 ] 9 [SM 5 8 ] ] _ _ _ _ _ _ ... _ _ =        (_ = PAD, N tokens)
      .    . .    . . . . .   . . . . . . . . . . ... . . 9

* :func:`far_recall` (associative recall at long distance, content-based): p key-value pairs,
  each one token ``(k v)`` (so one content lookup answers it), at random positions among filler
  tokens; the last token is one of the p keys and the answer is its value::

      _ _ (k3 v1) _ _ _ _ (k0 v2) _ ... _ (k2 v2) _ _ _ k0
      . .    .    . . . .    .    . ... .    .    . . . v2

* :func:`far_copy` (positional): uniform tokens; every token of the second half is asked for
  the token N/2 before it, whatever the tokens are::

      a b c d ... | a' b' c' d' ...                  (N/2 | N/2)
      . . . . ... | a  b  c  d  ...

What each kind of mixer should manage (the capstone measures it, :mod:`attnkit.capstone`):
the answer must see evidence N/2 to N tokens away, so a fixed local window fails all three;
far copy is one pattern fixed in advance (i looks at i - N/2), which a Synthesizer (random) or
a strided pattern whose stride divides N/2 can hold; recall needs a lookup by content, whose
position depends on the tokens, which no fixed mixing pattern (Synthesizer (random), FNet's
Fourier transform, MLP-Mixer) can point at; ListOps needs the whole expression, in order.

    x, y = listops(64, length=512, seed=0)         # (64, 512) each; y[:, -1] in the digit ids
    TASKS["listops"].vocab, TASKS["listops"].chance

Cost: O(n·N) to generate (ListOps builds each expression in Python, O(n·expression length)).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .tasks import IGNORE, offset_copy

__all__ = ["IGNORE", "LISTOPS_OPS", "LISTOPS_TOKENS", "listops_vocab", "listops_expression", "listops_value",
           "listops", "recall_vocab", "far_recall", "far_copy", "Task", "TASKS",
           "task_names"]


# ---------------------------------------------------------------- ListOps

LISTOPS_OPS = ("MAX", "MIN", "MED", "SM")
"""The operators; ``MED`` is the lower median (sorted[(k - 1) // 2]), ``SM`` the sum mod 10."""

# token ids: PAD, the answer marker, the closing bracket, one opening token per operator, digits
PAD, EQ, CLOSE = 0, 1, 2
OPEN = {op: 3 + i for i, op in enumerate(LISTOPS_OPS)}  # "[MAX" -> 3, ...
DIGIT0 = 3 + len(LISTOPS_OPS)  # digit d is token DIGIT0 + d
LISTOPS_TOKENS = ["_", "=", "]", *(f"[{op}" for op in LISTOPS_OPS), *(str(d) for d in range(10))]
"""``LISTOPS_TOKENS[id]``: how each token id is written."""


def listops_vocab() -> int:
    """Number of token ids :func:`listops` uses (PAD, ``=``, ``]``, four operators, ten digits)."""
    return len(LISTOPS_TOKENS)


def _apply(op: str, args: list[int]) -> int:
    if op == "MAX":
        return max(args)
    if op == "MIN":
        return min(args)
    if op == "MED":
        return sorted(args)[(len(args) - 1) // 2]
    return sum(args) % 10  # SM


def listops_expression(rng: random.Random, *, depth: int = 2, max_args: int = 4,
                       p_nest: float = 0.4) -> tuple[list[int], int]:
    """One random expression: ``(token ids, value)``.

    An operator with 2..``max_args`` arguments; each argument is a sub-expression with
    probability ``p_nest`` while ``depth`` allows (the outermost operator is depth 1), else a digit.
    """
    op = rng.choice(LISTOPS_OPS)
    tokens, args = [OPEN[op]], []
    for _ in range(rng.randint(2, max_args)):
        if depth > 1 and rng.random() < p_nest:
            sub, value = listops_expression(rng, depth=depth - 1, max_args=max_args, p_nest=p_nest)
            tokens += sub
        else:
            value = rng.randrange(10)
            tokens.append(DIGIT0 + value)
        args.append(value)
    tokens.append(CLOSE)
    return tokens, _apply(op, args)


def listops_value(tokens: list[int] | Tensor) -> int:
    """Evaluate a token sequence (PAD and ``=`` are skipped) with a stack; raises on a malformed one.

    The generator's evaluator is recursive; this one reads left to right, so the tests can check
    one against the other.
    """
    stack: list[tuple[str, list[int]]] = []
    result = None
    for t in (tokens.tolist() if isinstance(tokens, Tensor) else tokens):
        if t in (PAD, EQ):
            continue
        if t == CLOSE:
            op, args = stack.pop()
            value = _apply(op, args)
            if stack:
                stack[-1][1].append(value)
            else:
                result = value
        elif DIGIT0 <= t < DIGIT0 + 10:
            stack[-1][1].append(t - DIGIT0)
        else:
            stack.append((LISTOPS_OPS[t - 3], []))
    if stack or result is None:
        raise ValueError(f"malformed ListOps sequence: {' '.join(LISTOPS_TOKENS[t] for t in tokens)}")
    return result


def listops(n: int, *, length: int = 512, depth: int = 2, max_args: int = 4, p_nest: float = 0.4,
            seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` ListOps expressions, each at the start of a sequence of ``length`` tokens.

    Layout: the expression, PAD up to position N - 2, ``=`` at N - 1; the target at N - 1 is the
    value's digit token ``DIGIT0 + value``, every other target :data:`IGNORE`. Chance is 1/10
    (the answers are not uniform: MAX leans high, MIN low; see :data:`TASKS`).
    """
    if n < 1 or depth < 1 or max_args < 2:
        raise ValueError(f"listops: need n >= 1, depth >= 1 and max_args >= 2, got n={n}, depth={depth}, "
                         f"max_args={max_args}")
    longest = 2 + max_args  # the longest expression of depth 1, then of depth d: 2 + a·longest(d - 1)
    for _ in range(depth - 1):
        longest = 2 + max_args * longest
    if length < longest + 1:
        raise ValueError(f"listops: expressions of depth {depth} with up to {max_args} arguments take up to "
                         f"{longest} tokens, plus '=': need length >= {longest + 1}, got {length}")
    rng = random.Random(seed)
    inputs = torch.full((n, length), PAD, dtype=torch.long)  # (n, N)
    targets = torch.full((n, length), IGNORE, dtype=torch.long)  # (n, N)
    for i in range(n):
        tokens, value = listops_expression(rng, depth=depth, max_args=max_args, p_nest=p_nest)
        inputs[i, :len(tokens)] = torch.tensor(tokens)
        targets[i, -1] = DIGIT0 + value
    inputs[:, -1] = EQ
    return inputs, targets


# ---------------------------------------------------------------- associative recall at a distance

def recall_vocab(keys: int = 4, values: int = 4) -> int:
    """Token ids of :func:`far_recall`: filler 0, keys 1..K, values K+1..K+V, pairs after them."""
    return 1 + keys + values + keys * values


def far_recall(n: int, *, length: int = 512, pairs: int = 4, keys: int = 4, values: int = 4,
               seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` sequences of p key-value pair tokens spread among fillers, and a query key at the end.

    Token ids: filler 0; key k (0 <= k < K) is ``1 + k``; value v is ``1 + K + v``; the pair
    (k, v) is ``1 + K + V + k·V + v``. The p keys of a sequence are distinct; the pairs sit at p
    distinct positions drawn uniformly from 0..N-2; position N - 1 holds one of the p keys, and
    its target is that key's value token. Chance is 1/V.
    """
    if not 1 <= pairs <= keys or values < 2 or n < 1 or length < pairs + 1:
        raise ValueError(f"far_recall: need 1 <= pairs <= keys, values >= 2, n >= 1, length > pairs; got "
                         f"pairs={pairs}, keys={keys}, values={values}, n={n}, length={length}")
    g = torch.Generator().manual_seed(seed)
    k = torch.rand(n, keys, generator=g).argsort(-1)[:, :pairs]  # (n, p) distinct keys
    v = torch.randint(0, values, (n, pairs), generator=g)  # (n, p)
    where = torch.rand(n, length - 1, generator=g).argsort(-1)[:, :pairs]  # (n, p) distinct positions
    which = torch.randint(0, pairs, (n,), generator=g)  # (n,) the queried pair
    rows = torch.arange(n)
    inputs = torch.zeros(n, length, dtype=torch.long)  # (n, N) fillers
    inputs.scatter_(1, where, 1 + keys + values + k * values + v)
    inputs[:, -1] = 1 + k[rows, which]
    targets = torch.full_like(inputs, IGNORE)
    targets[:, -1] = 1 + keys + v[rows, which]
    return inputs, targets


# ---------------------------------------------------------------- copy from far away

def far_copy(n: int, *, length: int = 512, vocab: int = 8, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` sequences of uniform tokens; the target at i >= N/2 is the token at i - N/2.

    :func:`attnkit.tasks.offset_copy` with ``offset = N // 2``: N/2 targets per sequence, every
    one of them half the sequence away. Chance is 1 / ``vocab``.
    """
    if length < 2:
        raise ValueError(f"far_copy: need length >= 2, got length={length}")
    return offset_copy(n, length=length, vocab=vocab, offset=length // 2, seed=seed)


# ---------------------------------------------------------------- the table

@dataclass(frozen=True)
class Task:
    """A task of the benchmark: ``fn(n, length=N, seed=s)``, its vocabulary, its chance accuracy
    (1 / the number of possible answers) and what it tests."""

    name: str
    fn: Callable[..., tuple[Tensor, Tensor]]
    vocab: int
    chance: float
    tests: str


TASKS: dict[str, Task] = {
    "listops": Task("listops", listops, listops_vocab(), 0.1,
                    "hierarchical: evaluate a nested expression at the start, answer at the end"),
    "recall": Task("recall", far_recall, recall_vocab(), 1 / 4,
                   "content-based: find the pair whose key is the query, anywhere in N"),
    "copy": Task("copy", far_copy, 8, 1 / 8,
                 "positional: every token of the second half copies the token N/2 before it"),
}
"""The capstone's tasks, by name."""


def task_names() -> list[str]:
    return list(TASKS)
