"""The long-range tasks (attnkit.lra), the capstone runner (attnkit.capstone) and ``attnkit capstone``."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from attnkit import capstone, lra
from attnkit.models import mixer_names
from attnkit.tasks import IGNORE

TINY = capstone.Budget(length=32, steps=3, batch=4, seeds=(0, 1), n_test=8, speed_lengths=(32, 64), speed_rounds=1)


# ---------------------------------------------------------------- an evaluator of ListOps of our own

def _words(tokens) -> list[str]:
    return [lra.LISTOPS_TOKENS[t] for t in tokens if lra.LISTOPS_TOKENS[t] not in ("_", "=")]


def _evaluate(words: list[str]) -> int:
    """Recursive descent over the written form: ``[MAX 4 [MIN 7 2 ] ]`` -> 4."""
    def expr(i: int) -> tuple[int, int]:
        if words[i].isdigit():
            return int(words[i]), i + 1
        op, i, args = words[i][1:], i + 1, []
        while words[i] != "]":
            value, i = expr(i)
            args.append(value)
        ordered = sorted(args)
        value = {"MAX": ordered[-1], "MIN": ordered[0], "MED": ordered[(len(args) - 1) // 2],
                 "SM": sum(args) % 10}[op]
        return value, i + 1
    value, end = expr(0)
    assert end == len(words), "tokens after the expression"
    return value


# ---------------------------------------------------------------- the tasks

@pytest.mark.parametrize("name", list(lra.TASKS))
def test_tasks_are_deterministic_exact_in_length_and_inside_their_vocab(name):
    task = lra.TASKS[name]
    x, y = task.fn(16, length=64, seed=3)
    x2, y2 = task.fn(16, length=64, seed=3)
    x3, _ = task.fn(16, length=64, seed=4)
    assert x.shape == y.shape == (16, 64) and x.dtype == y.dtype == torch.long
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, x3)
    assert 0 <= int(x.min()) and int(x.max()) < task.vocab
    answers = y[y != IGNORE]
    assert len(answers) > 0 and int(answers.max()) < task.vocab
    assert 0 < task.chance < 1


def test_listops_answers_match_an_independent_evaluator():
    x, y = lra.listops(200, length=128, depth=3, max_args=4, p_nest=0.5, seed=0)
    assert (x[:, -1] == lra.EQ).all() and (y[:, :-1] == IGNORE).all()
    nested = 0
    for row, target in zip(x.tolist(), y[:, -1].tolist()):
        words = _words(row)
        nested += sum(w.startswith("[") for w in words) > 1
        assert words.count("]") == sum(w.startswith("[") for w in words)
        assert target - lra.DIGIT0 == _evaluate(words) == lra.listops_value(row)
    assert nested > 50  # the expressions do nest
    ops = {w for row in x.tolist() for w in _words(row) if w.startswith("[")}
    assert ops == {"[MAX", "[MIN", "[MED", "[SM"}


def test_listops_pads_after_the_expression_and_refuses_what_does_not_fit():
    x, _ = lra.listops(50, length=40, seed=1)
    for row in x.tolist():
        body = row[:-1]
        end = len(body) - body[::-1].index(lra.CLOSE)  # just after the last "]"
        assert all(t == lra.PAD for t in body[end:]) and lra.PAD not in body[:end]
    with pytest.raises(ValueError, match="need length >= 107"):
        lra.listops(50, length=64, depth=3, max_args=4, seed=0)
    assert lra.listops(1, length=27, depth=2, max_args=4)[0].shape == (1, 27)  # 26 tokens and "="
    with pytest.raises(ValueError, match="malformed"):
        lra.listops_value([lra.OPEN["MAX"], lra.DIGIT0 + 1])


def test_far_recall_answer_is_the_value_of_the_queried_key():
    K = V = 4
    x, y = lra.far_recall(300, length=48, pairs=3, keys=K, values=V, seed=0)
    assert (y[:, :-1] == IGNORE).all()
    first_pair = 1 + K + V
    far = 0
    for row, target in zip(x.tolist(), y[:, -1].tolist()):
        query = row[-1] - 1
        assert 0 <= query < K
        pairs = {i: divmod(t - first_pair, V) for i, t in enumerate(row[:-1]) if t >= first_pair}
        assert len(pairs) == 3 and all(t == 0 for t in row[:-1] if t < first_pair)  # the rest is filler
        keys = [k for k, _ in pairs.values()]
        assert len(set(keys)) == 3 and query in keys
        (where, (_, value)), = [(i, kv) for i, kv in pairs.items() if kv[0] == query]
        assert target == 1 + K + value
        far += where < 48 - 12
    assert far > 200  # most answers lie more than a quarter of the sequence away


def test_far_copy_copies_from_half_the_sequence_back():
    x, y = lra.far_copy(8, length=20, vocab=5, seed=0)
    assert (y[:, :10] == IGNORE).all()
    assert torch.equal(y[:, 10:], x[:, :10])
    with pytest.raises(ValueError):
        lra.far_copy(8, length=1)


# ---------------------------------------------------------------- the runner

def _read(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_runner_writes_a_well_formed_csv_table_and_figure(tmp_path):
    rows = capstone.run(["dense", "local"], ["recall", "copy"], budget=TINY, out=tmp_path, progress=False)
    assert [(r.variant, r.task) for r in rows] == [(v, t) for t in ("recall", "copy") for v in ("dense", "local")]
    table = _read(tmp_path / "results.csv")
    assert list(table[0]) == capstone.COLUMNS
    assert len(table) == 4 and {r["status"] for r in table} == {"ok"}
    for r in table:
        accs = [float(a) for a in r["accuracies"].split()]
        assert len(accs) == 2 and all(0 <= a <= 1 for a in accs)
        assert float(r["accuracy_min"]) <= float(r["accuracy_mean"]) <= float(r["accuracy_max"])
        assert float(r["step_ms"]) > 0 and float(r["peak_memory_mb"]) > 0 and r["N"] == "32"
        assert abs(float(r["steps_per_second"]) * float(r["step_ms"]) - 1e3) < 1
        assert r["seeds"] == "0 1" and r["steps"] == "3"
    assert next(r for r in table if r["variant"] == "local")["kwargs"] == "window=4"
    speed = _read(tmp_path / "speed.csv")
    assert list(speed[0]) == capstone.SPEED_COLUMNS and len(speed) == 4
    dense = {int(r["N"]): float(r["peak_memory_mb"]) for r in speed if r["variant"] == "dense"}
    assert dense[64] > dense[32] > 0  # the N×N scores grow with N
    assert (tmp_path / "capstone.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "results.md").read_text()
    assert "| dense | dense |" in md and "N=64" in md


def test_runs_are_repeatable():
    budget = capstone.Budget(length=32, steps=4, batch=4, seeds=(0,), n_test=16)
    a = capstone.train_one("dense", "copy", budget)
    b = capstone.train_one("dense", "copy", budget)
    assert a.accuracies == b.accuracies


def test_a_variant_that_cannot_run_or_breaks_is_recorded_with_its_reason(tmp_path, monkeypatch):
    real = capstone.mixer_kwargs
    monkeypatch.setattr(capstone, "mixer_kwargs",
                        lambda name, N: {"window": N + 1000, "bogus": 1} if name == "local" else real(name, N))

    def broken_fit(model, *args, **kwargs):
        if model.mixer_name == "fnet":
            raise RuntimeError("out of patience")
        return real_fit(model, *args, **kwargs)
    real_fit = capstone.fit
    monkeypatch.setattr(capstone, "fit", broken_fit)
    rows = capstone.run(["dense", "local", "fnet"], ["copy"], budget=TINY, out=tmp_path, progress=False)
    status = {r.variant: (r.status, r.note) for r in rows}
    assert status["dense"] == ("ok", "")
    assert status["local"][0] == "unsupported" and "bogus" in status["local"][1]
    assert status["fnet"] == ("failed", "seed 0: RuntimeError: out of patience")
    table = {r["variant"]: r for r in _read(tmp_path / "results.csv")}
    assert table["local"]["status"] == "unsupported" and "bogus" in table["local"]["note"]
    assert table["local"]["accuracy_mean"] == "nan"
    speed = {(r["variant"], r["N"]): r for r in _read(tmp_path / "speed.csv")}
    assert speed["local", "64"]["status"] == "unsupported"
    md = (tmp_path / "results.md").read_text()
    assert "local on copy: unsupported" in md and "fnet on copy: failed" in md


def test_unknown_names_are_refused(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown variant"):
        capstone.run(["nope"], out=None, progress=False)
    with pytest.raises(ValueError, match="unknown task"):
        capstone.run(["dense"], ["nope"], out=None, progress=False)
    assert capstone.main(["--variants", "dense,nope", "--out", str(tmp_path)]) == 2
    assert "unknown variant" in capsys.readouterr().err


def test_every_variant_has_hyperparameters_that_build_at_the_training_lengths():
    from attnkit.models import Transformer

    x = torch.randint(0, 8, (2, 64))
    for name in mixer_names():
        model = Transformer(name, vocab=8, max_len=64, seed=0, **capstone.mixer_kwargs(name, 64))
        assert model(x).shape == (2, 64, 8), name


@pytest.mark.slow
def test_quick_capstone_through_the_cli_has_every_variant_and_task(tmp_path):
    from autograder.cli import main

    assert main(["capstone", "--quick", "--out", str(tmp_path)]) == 0
    table = _read(tmp_path / "results.csv")
    assert {(r["variant"], r["task"]) for r in table} == {(v, t) for v in mixer_names() for t in lra.TASKS}
    assert len(table) == len(mixer_names()) * len(lra.TASKS)
    assert all(r["status"] in ("ok", "unsupported", "failed") for r in table)
    assert all(r["note"] for r in table if r["status"] != "ok")
    dense_copy = next(r for r in table if r["variant"] == "dense" and r["task"] == "copy")
    assert float(dense_copy["accuracy_mean"]) > 2 * lra.TASKS["copy"].chance  # it learns even in the quick run
    assert {r["variant"] for r in _read(tmp_path / "speed.csv")} == set(mixer_names())
    assert (tmp_path / "capstone.png").stat().st_size > 10_000
