"""attnkit.tasks: the synthetic tasks are deterministic and right (checked by explicit loops), and
dense attention learns offset_copy through the shared training loop."""
from __future__ import annotations

import functools

import pytest
import torch

from attnkit import tasks
from attnkit.models import Transformer
from attnkit.tasks import IGNORE, associative_recall, offset_copy, recall_vocab


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread is faster than two on a shared CPU (no wake-ups)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------- tasks

@pytest.mark.parametrize("make, kwargs", [
    (offset_copy, dict(length=12, vocab=7, offset=3)),
    (associative_recall, dict(pairs=3, keys=5, values=4)),
    (associative_recall, dict(pairs=3, keys=5, values=4, fused=True)),
])
def test_tasks_are_deterministic_by_seed(make, kwargs):
    a, b, c = make(50, seed=3, **kwargs), make(50, seed=3, **kwargs), make(50, seed=4, **kwargs)
    assert all(x.dtype == torch.long for x in (*a, *c))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0]), "a different seed should give different sequences"


def test_offset_copy_targets_by_loop():
    length, vocab, offset = 10, 5, 3
    x, y = offset_copy(40, length=length, vocab=vocab, offset=offset, seed=1)
    assert x.shape == y.shape == (40, length)
    assert int(x.min()) >= 0 and int(x.max()) < vocab
    for s in range(40):
        for i in range(length):
            want = x[s, i - offset] if i >= offset else IGNORE
            assert int(y[s, i]) == int(want), (s, i)


@pytest.mark.parametrize("fused", [False, True])
def test_associative_recall_targets_by_loop(fused):
    K, V, p = 6, 5, 4
    x, y = associative_recall(60, pairs=p, keys=K, values=V, fused=fused, seed=2)
    length = p + 1 if fused else 2 * p + 1
    assert x.shape == y.shape == (60, length)
    assert int(x.max()) < recall_vocab(K, V, fused=fused)
    for s in range(60):
        table = {}
        for j in range(p):
            if fused:
                token = int(x[s, j]) - K - V
                assert 0 <= token < K * V
                key, value = divmod(token, V)
            else:
                key, value = int(x[s, 2 * j]), int(x[s, 2 * j + 1]) - K
            assert 0 <= key < K and 0 <= value < V
            assert key not in table, "keys of one sequence must be distinct"
            table[key] = value
        query = int(x[s, -1])
        assert query in table
        assert int(y[s, -1]) == K + table[query]
        assert all(int(t) == IGNORE for t in y[s, :-1])


def test_task_arguments_are_checked():
    with pytest.raises(ValueError, match="offset"):
        offset_copy(4, length=8, offset=8)
    with pytest.raises(ValueError, match="pairs"):
        associative_recall(4, pairs=9, keys=8)


# ---------------------------------------------------------------- training

def test_dense_attention_learns_offset_copy():
    task = functools.partial(offset_copy, length=12, vocab=8, offset=3)
    model = Transformer("dense", vocab=8, max_len=12, d_model=32, n_layers=1, seed=0)
    result = tasks.train(model, task, steps=120, batch_size=32, lr=1e-2, n_test=256, seed=0)
    assert result.accuracy > 0.9, result.accuracies
    assert result.step_seconds > 0 and len(result.loss) == 120


def test_training_is_deterministic():
    task = functools.partial(associative_recall, pairs=2, keys=4, values=4, fused=True)
    runs = [tasks.train(Transformer("dense", vocab=recall_vocab(4, 4, fused=True), max_len=3, d_model=16,
                                    n_layers=1, seed=1), task, steps=6, batch_size=16, n_test=32, seed=5)
            for _ in range(2)]
    assert runs[0].loss == runs[1].loss and runs[0].accuracy == runs[1].accuracy
