"""The FlexAttention path (attnkit.flex): correctness against the dense references, kernel reuse
across hyperparameters, and the guard against dynamo's silent eager fallback.

On the CPU, compiled FlexAttention runs through inductor's C++ backend (slow to compile, so one
test covers the patterns); on a GPU the public functions themselves take the Flex path.
"""
from __future__ import annotations

import pytest
import torch

from attnkit import VARIANTS, flex
from attnkit.fixed import bigbird_layout, longformer_mask
from attnkit.masks import layout_mask, window_mask
from attnkit.grading import random_qkv
from attnkit.measure import peak_memory

pytestmark = pytest.mark.skipif(not flex.available(), reason="needs torch with FlexAttention")


def qkv(N, *, B=1, H=2, D=16, device="cpu", dtype=torch.float32, seed=0):
    return tuple(x.to(device=device, dtype=dtype) for x in random_qkv(B, H, N, D, seed=seed, dtype=torch.float32))


def test_recompiles_raise_instead_of_falling_back_to_eager():
    import torch._dynamo.config as dynamo_config

    flex._guard_recompiles()
    assert dynamo_config.fail_on_recompile_limit_hit is True
    assert dynamo_config.recompile_limit >= flex.RECOMPILE_LIMIT


def test_block_masks_are_cached_per_pattern_and_length():
    flex.clear_cache()
    mod = window_mask(3)
    a = flex.block_mask(("local", 3), mod, 1, 1, 256, 256, "cpu")
    assert flex.block_mask(("local", 3), mod, 1, 1, 256, 256, "cpu") is a
    assert flex.block_mask(("local", 3), mod, 1, 1, 384, 384, "cpu") is not a
    tiles = a.to_dense()  # (1, 1, 2, 2): which 128×128 tiles hold a visible entry
    assert tiles.sum() == 4  # both diagonal tiles, and the band crosses the tile border both ways
    far = flex.block_mask(("local", 3), mod, 1, 1, 1024, 1024, "cpu").to_dense()  # (1, 1, 8, 8)
    assert far.sum() == 8 + 2 * 7  # a tridiagonal band of tiles, not all 64


def test_tensor_parameters_keep_the_mask_code_the_same():
    """A new window is new data in the same closure code: no new compilation is needed."""
    a, b = window_mask(4), window_mask(9, causal=True)
    assert a.__code__ is b.__code__
    i, j = torch.tensor(20), torch.arange(40)
    assert torch.equal(a(0, 0, i, j), (i - j).abs() <= 4)
    assert torch.equal(b(0, 0, i, j), ((i - j).abs() <= 9) & (j <= i))


@pytest.mark.slow
def test_compiled_flex_on_cpu_equals_the_references():
    import torch._dynamo.utils as dynamo_utils

    N = 256
    q, k, v = qkv(N)
    local_ref = VARIANTS["local"].reference
    out = flex.flex_attend(q, k, v, key=("local", 8, False), mask_mod=window_mask(8))
    torch.testing.assert_close(out, local_ref(q, k, v, window=8), atol=2e-5, rtol=1e-4)
    graphs = dynamo_utils.counters["stats"]["unique_graphs"]
    out = flex.flex_attend(q, k, v, key=("local", 21, True),
                           mask_mod=window_mask(21, causal=True))
    assert dynamo_utils.counters["stats"]["unique_graphs"] == graphs, "a new window recompiled"
    torch.testing.assert_close(out, local_ref(q, k, v, window=21, causal=True), atol=2e-5, rtol=1e-4)

    out = flex.flex_attend(q, k, v, key=("longformer", 8),
                           mask_mod=longformer_mask(8, torch.tensor([0, 1, 100])))
    expected = VARIANTS["longformer"].reference(q, k, v, window=8, global_tokens=torch.tensor([0, 1, 100]))
    torch.testing.assert_close(out, expected, atol=2e-5, rtol=1e-4)

    layout = bigbird_layout(4, 1, 1, 1, seed=3)
    out = flex.flex_attend(q, k, v, key=("bigbird", 64), mask_mod=layout_mask(layout, 64))
    expected = VARIANTS["bigbird"].reference(q, k, v, block=64, window_blocks=1, global_blocks=1,
                                             random_blocks=1, seed=3)
    torch.testing.assert_close(out, expected, atol=2e-5, rtol=1e-4)


def test_cpu_flex_path_is_opt_in_forward_only_and_equals_the_reference(monkeypatch):
    """CPU tensors take compiled Flex only inside ``flex.on_cpu()`` (or with ATTNKIT_FLEX_CPU=1),
    and never while a gradient is needed (FlexAttention has no CPU backward): the eager kernel
    then runs, so training on the CPU works under ``on_cpu`` too."""
    calls = []
    real = flex.flex_attend
    monkeypatch.setattr(flex, "flex_attend", lambda *a, **kw: calls.append(kw["key"]) or real(*a, **kw))
    monkeypatch.delenv(flex.CPU_ENV, raising=False)
    q, k, v = qkv(256)
    local, ref = VARIANTS["local"], VARIANTS["local"].reference
    expected = ref(q, k, v, window=8)
    torch.testing.assert_close(local(q, k, v, window=8), expected, atol=2e-5, rtol=1e-4)
    assert calls == [] and not flex.cpu_enabled()
    with flex.on_cpu():
        assert flex.cpu_enabled() and flex.use_flex(q)
        torch.testing.assert_close(local(q, k, v, window=8), expected, atol=2e-5, rtol=1e-4)
        assert calls == [("local", 8, False)]
        qg, kg, vg = (x.clone().requires_grad_() for x in (q, k, v))
        out = local(qg, kg, vg, window=8)  # needs a gradient: the eager kernel
        assert calls == [("local", 8, False)]
        grads = torch.autograd.grad(out.sum(), (qg, kg, vg))
        expected_grads = torch.autograd.grad(ref(qg, kg, vg, window=8).sum(), (qg, kg, vg))
        for got, want in zip(grads, expected_grads):
            torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
        with flex.on_cpu(False):
            assert not flex.use_flex(q)
    assert not flex.cpu_enabled()
    monkeypatch.setenv(flex.CPU_ENV, "1")
    assert flex.cpu_enabled() and flex.use_flex(q)
    with flex.on_cpu(False):
        assert not flex.cpu_enabled()


GPU_CASES = [
    ("local", {"window": 256}), ("local", {"window": 100, "causal": True}),
    ("dilated", {"window": 32, "dilation": 3}), ("strided", {"stride": 64}),
    ("fixed", {"stride": 128, "summary": 8}), ("longformer", {"window": 256, "global_tokens": 64}),
    ("bigbird", {"block": 128, "window_blocks": 1, "global_blocks": 1, "random_blocks": 3, "seed": 0}),
    ("transformer_xl", {"segment": 256}), ("transformer_xl", {"segment": 128, "memory": 384}),
]


@pytest.mark.cuda
@pytest.mark.parametrize("name, kwargs", GPU_CASES, ids=[c[0] + str(i) for i, c in enumerate(GPU_CASES)])
def test_gpu_path_equals_the_reference(name, kwargs):
    q, k, v = qkv(2048, H=4, D=64, device="cuda", dtype=torch.bfloat16)
    if name == "transformer_xl":  # with a relative-position bias as the score_mod
        kwargs = {**kwargs, "bias": torch.randn(4, 512, device="cuda")}
    got = VARIANTS[name](q, k, v, **kwargs).float()
    expected = VARIANTS[name].reference(q.float(), k.float(), v.float(), **kwargs)
    torch.testing.assert_close(got, expected, atol=3e-2, rtol=3e-2)


@pytest.fixture
def eager_flex(monkeypatch):
    """The Flex branches with uncompiled FlexAttention: inductor's CPU backend has no log-sum-exp
    output ("torch.compile on CPU only supports inference and return_lse is not supported yet"),
    so on the CPU the Performer's Flex path runs the eager Flex (the same API, score_mod and
    lse, unfused); the compiled Triton kernel runs in the CUDA tests."""
    from torch.nn.attention.flex_attention import flex_attention

    monkeypatch.setattr(flex, "use_flex", lambda q: True)
    monkeypatch.setattr(flex, "_compiled_flex", lambda: flex_attention)


@pytest.mark.filterwarnings("ignore::UserWarning")  # eager Flex on the CPU warns that it is unfused
def test_flex_biased_returns_the_softmax_and_its_natural_log_sum_exp(eager_flex):
    from attnkit.kernel import softmax_biased

    q, k, v = qkv(256, H=3, D=16)
    bias = torch.randn(1, 3, 256, generator=torch.Generator().manual_seed(4)) * 3
    out, lse = flex.flex_biased(q[:, :, :40], k, v, bias)
    ref_out, ref_lse = softmax_biased(q[:, :, :40], k, v, bias)
    torch.testing.assert_close(out, ref_out, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(lse, ref_lse, atol=2e-5, rtol=1e-5)  # base e, not base 2


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_performer_cuda_branch_is_the_two_softmax_form(eager_flex, monkeypatch):
    from attnkit import kernel

    calls = []
    two_softmax = kernel.favor_two_softmax
    monkeypatch.setattr(kernel, "favor_two_softmax", lambda *a, **kw: calls.append(kw) or two_softmax(*a, **kw))
    q, k, v = qkv(2048, H=4, D=32)
    out = kernel.performer(q, k, v, m=128, seed=1)
    assert calls == [{"splits": 2}]  # 4 heads x 1 W tile: the 2048 keys in two pieces of 1024
    torch.testing.assert_close(out, kernel.performer_reference(q, k, v, m=128, seed=1), atol=2e-5, rtol=1e-4)
    kernel.performer(q, k, v, m=128, causal=True)  # prefix sums: the eager chunked form
    kernel.performer(q, k, v, m=128, kind="trig")  # signed features: no softmax form
    kernel.performer(q, k, v.requires_grad_(), m=128)  # gradients: the eager form
    assert len(calls) == 1


@pytest.mark.cuda
def test_gpu_performer_equals_the_reference_without_an_n_by_m_tensor():
    from attnkit.kernel import performer, performer_reference

    q, k, v = qkv(4096, H=4, D=64, device="cuda", dtype=torch.bfloat16)
    got = performer(q, k, v, m=256, seed=0).float()
    expected = performer_reference(q.float(), k.float(), v.float(), m=256, seed=0)
    torch.testing.assert_close(got, expected, atol=3e-2, rtol=3e-2)
    q, k, v = qkv(65536, H=16, D=64, device="cuda", dtype=torch.bfloat16)
    performer(q, k, v, m=256)  # compile first
    # the output is 128 MiB; one (N, m) feature matrix would be 512 MiB
    assert peak_memory(performer, q, k, v, m=256) < 256 * 2**20


@pytest.mark.cuda
def test_gpu_local_at_64k_never_materialises_the_scores():
    """An eager fallback would need 16·65536² bf16 scores (128 GiB): the Flex path needs MiBs."""
    q, k, v = qkv(65536, H=16, D=64, device="cuda", dtype=torch.bfloat16)
    VARIANTS["local"](q, k, v, window=256)  # compile and build the block mask first
    assert peak_memory(VARIANTS["local"], q, k, v, window=256) < 2**30


@pytest.mark.slow
def test_the_public_functions_flex_branches_on_cpu(monkeypatch):
    """The branch each public function takes on CUDA, run on the CPU through compiled Flex
    (inductor's C++ backend): the same mask and score mods, block masks and caching as on a GPU,
    in float32, against the dense references. What this cannot show is GPU speed and memory."""
    from attnkit.bellcurve import bellcurve, bellcurve_reference
    from attnkit.varwindow import variable_window_attention, variable_window_reference

    torch._dynamo.reset()
    flex.clear_cache()
    monkeypatch.setattr(flex, "_cpu_flex", True)  # as inside flex.on_cpu()
    q, k, v = qkv(512, H=4, D=32)
    for name, kwargs in GPU_CASES:
        if name == "transformer_xl":
            kwargs = {**kwargs, "bias": torch.randn(4, 512, generator=torch.Generator().manual_seed(1))}
        torch.testing.assert_close(VARIANTS[name](q, k, v, **kwargs), VARIANTS[name].reference(q, k, v, **kwargs),
                                   atol=2e-5, rtol=1e-4, msg=lambda m, name=name: f"{name}: {m}")

    g = torch.Generator().manual_seed(2)
    sigma = torch.rand(1, 4, 512, generator=g) * 3 + 0.5  # one σ per token and head
    for normalised in (False, True):
        kw = {"sigma": sigma, "window": 20, "global_tokens": 3, "normalised": normalised}
        torch.testing.assert_close(bellcurve(q, k, v, **kw), bellcurve_reference(q, k, v, **kw),
                                   atol=2e-5, rtol=1e-4)
    widths = torch.randint(0, 17, (1, 512), generator=g)
    kw = {"widths": widths, "sigma": sigma, "global_tokens": 2}
    torch.testing.assert_close(variable_window_attention(q, k, v, **kw), variable_window_reference(q, k, v, **kw),
                               atol=2e-5, rtol=1e-4)
    torch._dynamo.reset()
    flex.clear_cache()
