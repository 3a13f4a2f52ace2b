"""attnkit.models and attnkit.training: every mixer name builds a model that maps tokens to logits
and trains; decoders are causal (a change in the future never moves the past); the schedule has the
formula's values; fit() evaluates when asked and is repeatable."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnkit import models, training
from attnkit.models import Transformer


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.mark.parametrize("name", models.mixer_names())
def test_every_mixer_builds_a_model_that_trains(name):
    N, vocab = 64, 11  # N = 64: the length every registered example_kwargs is meant for
    model = Transformer(name, vocab=vocab, max_len=N, d_model=16, n_layers=1, n_heads=2, seed=0)
    tokens = torch.randint(0, vocab, (2, N), generator=torch.Generator().manual_seed(0))
    logits = model(tokens)
    assert logits.shape == (2, N, vocab)
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    again = Transformer(name, vocab=vocab, max_len=N, d_model=16, n_layers=1, n_heads=2, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values())), \
        "the same seed should build the same parameters"


@pytest.mark.parametrize("name", models.causal_names())
def test_decoders_never_look_ahead(name):
    """Change the last 8 tokens: the logits of every earlier position must not move."""
    N, vocab = 64, 13
    model = Transformer(name, vocab=vocab, max_len=N, d_model=16, n_layers=2, n_heads=2, causal=True, seed=0).eval()
    g = torch.Generator().manual_seed(1)
    a = torch.randint(0, vocab, (2, N), generator=g)
    b = a.clone()
    b[:, -8:] = torch.randint(0, vocab, (2, 8), generator=g)
    with torch.no_grad():
        la, lb = model(a), model(b)
    torch.testing.assert_close(la[:, :-8], lb[:, :-8], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(la[:, -1], lb[:, -1]), "the changed tokens should change their own logits"


def test_the_encoder_does_look_ahead():
    """The same check fails without causal=True: the test above can tell the two apart."""
    model = Transformer("dense", vocab=13, max_len=16, d_model=16, seed=0).eval()
    a = torch.randint(0, 13, (1, 16), generator=torch.Generator().manual_seed(0))
    b = a.clone()
    b[0, -1] = (a[0, -1] + 1) % 13
    with torch.no_grad():
        assert not torch.allclose(model(a)[:, 0], model(b)[:, 0])


def test_shorter_inputs_factories_heads_and_errors():
    model = Transformer("local", vocab=7, max_len=32, out=3, window=2, seed=0)
    assert model(torch.zeros(2, 20, dtype=torch.long)).shape == (2, 20, 3)
    assert model.features(torch.zeros(1, 5, dtype=torch.long)).shape == (1, 5, 32)
    with pytest.raises(ValueError, match="N <= 32"):
        model(torch.zeros(1, 33, dtype=torch.long))
    with pytest.raises(ValueError, match="unknown token mixer"):
        Transformer("no_such_mixer", vocab=5, max_len=8)
    with pytest.raises(ValueError, match="no causal form"):
        Transformer("linformer", vocab=5, max_len=64, causal=True)
    with pytest.raises(ValueError, match="no causal form"):  # masks the future, but buckets see it
        Transformer("lsh", vocab=5, max_len=64, causal=True)
    with pytest.raises(ValueError, match="named mixer"):
        Transformer(lambda i, c: nn.Identity(), vocab=5, max_len=8, window=3)
    custom = Transformer(lambda i, c: nn.Linear(c, c), vocab=5, max_len=8, n_layers=3, seed=0)
    assert [type(b.mixer) for b in custom.blocks] == [nn.Linear] * 3
    state = torch.random.get_rng_state()
    Transformer("dense", vocab=5, max_len=8)
    assert torch.equal(state, torch.random.get_rng_state()), "building a model must not move the global RNG"


def test_warmup_cosine_values():
    f = [training.warmup_cosine(t, 100, 0.1) for t in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)  # linear warm-up over 10 steps
    assert f[10] == pytest.approx(1.0)
    assert f[55] == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert all(a >= b for a, b in zip(f[10:], f[11:])) and f[-1] < 0.01
    with pytest.raises(ValueError):
        training.warmup_cosine(0, 0)


def test_fit_learns_evaluates_and_repeats():
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    y = (x[:, 0] > 0).long()

    def run():
        model = nn.Linear(4, 2)
        torch.nn.init.zeros_(model.weight)
        torch.nn.init.zeros_(model.bias)
        return model, training.fit(model, lambda step: (x, y), lambda m, b: F.cross_entropy(m(b[0]), b[1]),
                                   steps=40, lr=0.1, eval_every=10,
                                   eval_fn=lambda m: {"acc": float((m(x).argmax(-1) == y).float().mean())})

    model, result = run()
    assert result.eval_steps == [10, 20, 30, 40] and len(result.loss) == 40
    assert result.final["acc"] > 0.9 and result.loss[-1] < result.loss[0]
    assert result.step_seconds > 0 and result.seconds >= result.step_seconds
    assert model.training
    assert run()[1].loss == result.loss
    with pytest.raises(ValueError, match="steps"):
        training.fit(model, lambda s: (x, y), lambda m, b: m(b[0]).sum(), steps=0)
