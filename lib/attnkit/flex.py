"""The GPU path of the fixed patterns (and an opt-in CPU path): compiled FlexAttention, cached block masks.

FlexAttention (``torch.nn.attention.flex_attention``) takes a pattern as a ``mask_mod`` and a
bias as a ``score_mod`` and generates one fused Triton kernel for them. A ``BlockMask`` lists,
for every 128×128 tile of the score matrix, whether it is empty (skipped), full (no mask
evaluation) or partial (``mask_mod`` evaluated per entry): so the cost is proportional to the
number of non-empty tiles, and patterns aligned with the 128-token tiles run fastest.

Three traps this module guards against (measured on an H100, see ``docs/measurements.md``):

1. **Silent eager fallback.** Every distinct mask function or shape compiles again; after
   ``torch._dynamo.config.recompile_limit`` (8) compilations dynamo quietly runs the *eager*
   FlexAttention, which materialises the N×N scores (out of memory at N=65536). We raise the
   limit to :data:`RECOMPILE_LIMIT` and set ``fail_on_recompile_limit_hit`` so that hitting it
   raises instead of falling back; the pattern factories (:mod:`attnkit.masks` and the family
   modules) capture their hyperparameters as 0-d tensors, so a new window size is new *data*,
   not new code, and reuses the compiled kernel.
2. **``create_block_mask`` at long N** materialises the full mask unless compiled
   (``_compile=True``); it is slow to build, so block masks are cached per
   (pattern, B, H, N, M, device).
3. **Block alignment.** A pattern whose blocks do not line up with the 128-token tiles makes
   every tile partial (BigBird with 64-token blocks ran slower than dense): use ``block=128``.

On the CPU, FlexAttention compiles to C++ through Inductor. Inside :func:`on_cpu` (or with
``ATTNKIT_FLEX_CPU=1``) the patterns take that path for forward calls; it is never automatic,
because each new (pattern, N) compiles for seconds (``docs/benchmarks.md``, "Against the PyPI
peers", has the compile times and the speed against the kit's eager CPU kernels).

Source: He et al. (2024), "FlexAttention: The Flexibility of PyTorch with the Performance of
FlashAttention" (PyTorch blog); Dong et al. (2024), arXiv:2412.05496.
"""
from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from typing import Callable, Hashable, Iterator

import torch
from torch import Tensor

__all__ = ["RECOMPILE_LIMIT", "CPU_ENV", "available", "cpu_enabled", "on_cpu", "use_flex", "block_mask", "flex_attend", "flex_biased",
           "dispatch", "clear_cache", "blocks_visited"]

RECOMPILE_LIMIT = 64
_CACHE_SIZE = 32
_block_masks: OrderedDict = OrderedDict()
_compiled: Callable | None = None
CPU_ENV = "ATTNKIT_FLEX_CPU"
_cpu_flex: bool | None = None  # set by on_cpu(); None: read CPU_ENV


def available() -> bool:
    """FlexAttention is importable (torch >= 2.5)."""
    try:
        from torch.nn.attention import flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def cpu_enabled() -> bool:
    """The CPU Flex path is switched on: by :func:`on_cpu`, else by ``ATTNKIT_FLEX_CPU=1``."""
    if _cpu_flex is not None:
        return _cpu_flex
    return os.environ.get(CPU_ENV, "0") == "1"


@contextlib.contextmanager
def on_cpu(enabled: bool = True) -> Iterator[None]:
    """Inside this block, CPU tensors take compiled FlexAttention too (``enabled=False``: never).

        with flex.on_cpu():
            out = local(q, k, v, window=128)   # compiled Flex on the CPU

    Opt-in, never automatic. The first call for each new (pattern, N, thread count) compiles C++
    through Inductor: 4 to 14 s on the course machine (docs/benchmarks.md, "Against the PyPI
    peers"). After that, a window of 128 at N = 2048 to 8192 runs about as fast as the kit's own
    eager kernel (which took 0.8 to 1.3× Flex's time) in 1/13 of the memory (8 against 105 MiB
    at N = 8192): worth it for a long run at one length when memory is short, never for the
    varied lengths of a notebook. A student's notebook never compiles by surprise.
    """
    global _cpu_flex
    before, _cpu_flex = _cpu_flex, enabled
    try:
        yield
    finally:
        _cpu_flex = before


def use_flex(q: Tensor) -> bool:
    """The fast functions take the Flex path for CUDA tensors, and for CPU tensors when
    :func:`cpu_enabled` (the CPU has its own eager kernels by default)."""
    on_device = q.is_cuda or (q.device.type == "cpu" and cpu_enabled())
    return on_device and available()


def _guard_recompiles() -> None:
    """Make the dynamo recompile limit loud instead of a silent O(N²) eager fallback."""
    import torch._dynamo.config as dynamo_config

    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, RECOMPILE_LIMIT)
    dynamo_config.cache_size_limit = max(dynamo_config.cache_size_limit, RECOMPILE_LIMIT)
    dynamo_config.fail_on_recompile_limit_hit = True


def _compiled_flex() -> Callable:
    global _compiled
    if _compiled is None:
        from torch.nn.attention.flex_attention import flex_attention

        _guard_recompiles()
        _compiled = torch.compile(flex_attention, dynamic=False)
    return _compiled


def clear_cache() -> None:
    """Forget the cached block masks (they hold GPU memory)."""
    _block_masks.clear()


def block_mask(key: Hashable, mask_mod, B: int, H: int, N: int, M: int, device,
               block_size: int = 128):
    """``create_block_mask`` for ``mask_mod``, cached under ``(key, B, H, N, M, device)``.

    ``key`` names the pattern and its hyperparameters (e.g. ``("local", 256, False)``): two
    calls with the same key must mean the same mask. B or H of 1 means "the same for all".
    """
    from torch.nn.attention.flex_attention import create_block_mask

    full_key = (key, B, H, N, M, str(device), block_size)
    if full_key in _block_masks:
        _block_masks.move_to_end(full_key)
        return _block_masks[full_key]
    _guard_recompiles()
    mask = create_block_mask(mask_mod, B if B > 1 else None, H if H > 1 else None, N, M,
                             device=device, BLOCK_SIZE=block_size, _compile=True)
    _block_masks[full_key] = mask
    if len(_block_masks) > _CACHE_SIZE:
        _block_masks.popitem(last=False)
    return mask


def blocks_visited(block_mask) -> Tensor:
    """KV blocks each query block visits under a FlexAttention ``BlockMask``: ``(B, H, nq)`` long.

    A ``BlockMask`` stores, per query block, the partial blocks (``kv_num_blocks``: mask_mod
    evaluated) and the full ones (``full_kv_num_blocks``: no mask evaluation, may be None). Their
    sum is the work FlexAttention does for that query block, whatever the device: the
    deterministic work check of a sparse pattern.
    """
    visited = block_mask.kv_num_blocks.long()
    if block_mask.full_kv_num_blocks is not None:
        visited = visited + block_mask.full_kv_num_blocks.long()
    return visited


def flex_attend(q: Tensor, k: Tensor, v: Tensor, *, key: Hashable | None, mask_mod, score_mod=None,
                scale: float | None = None, per_head: bool = False) -> Tensor:
    """Compiled FlexAttention of ``(B, H, N, D)`` tensors under the cached block mask ``key``.

    ``key=None``: the mask depends on data that changes every call (per-query widths), so its
    block mask is built for this call and not cached.
    ``per_head``: the pattern depends on b or h (builds a (B, H, ...) block mask).
    Cost: O(T·128²·D) for T non-empty 128×128 tiles; memory O(N·D) (no score matrix).
    """
    B, H, N, _ = q.shape
    M = k.shape[-2]
    Bm, Hm = (B, H) if per_head else (1, 1)
    if key is None:
        from torch.nn.attention.flex_attention import create_block_mask

        _guard_recompiles()
        mask = create_block_mask(mask_mod, Bm if Bm > 1 else None, Hm if Hm > 1 else None, N, M,
                                 device=q.device, _compile=True)
    else:
        mask = block_mask(key, mask_mod, Bm, Hm, N, M, q.device)
    return _compiled_flex()(q, k, v, score_mod=score_mod, block_mask=mask, scale=scale)


def dispatch(q: Tensor, k: Tensor, v: Tensor, cpu: Callable[[], Tensor], *, key: Hashable | None,
             mask_mod: Callable, score_mod: Callable | None = None, scale: float | None = None,
             per_head: bool = False, inference_only: bool = False) -> Tensor:
    """The one branch between a pattern's CPU kernel and FlexAttention.

    On CUDA tensors (and CPU tensors under :func:`on_cpu`): :func:`flex_attend` with
    ``mask_mod(device=q.device)`` (and ``score_mod(device=q.device)``): the factories build their
    0-d tensor parameters on the tensors' device. Elsewhere, or while a gradient is needed with
    ``inference_only`` or on the CPU (FlexAttention has no CPU backward): ``cpu()``.

        return flex.dispatch(q, k, v, lambda: window_attention(...)[0], key=("local", w, causal),
                             mask_mod=partial(local_mask, w, causal), scale=scale)
    """
    needs_grad = torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v))
    forward_only = inference_only or not q.is_cuda  # FlexAttention has no backward on the CPU
    if not use_flex(q) or (forward_only and needs_grad):
        return cpu()
    return flex_attend(q, k, v, key=key, mask_mod=mask_mod(device=q.device),
                       score_mod=None if score_mod is None else score_mod(device=q.device),
                       scale=scale, per_head=per_head)


def flex_biased(q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    """Compiled FlexAttention over every key with a per-key bias, and each query's log-sum-exp.

        s_ij = q_i·k_j + bias_j      (scale 1; ``bias`` is ``(B, H, M)``, float32)
        out_i = Σ_j softmax_j(s_i·) v_j      lse_i = log Σ_j exp(s_ij)   (natural log, float32)

    Shapes: ``(B, H, N, D)``, ``(B, H, M, D)``, ``(B, H, M, Dv)`` -> ``(B, H, N, Dv)``, ``(B, H, N)``.
    No block mask (every tile is full); the bias is a captured tensor, so new values reuse the
    compiled kernel. Used by the Performer's two-softmax form (:mod:`attnkit.kernel`).
    """
    def score_mod(score, b, h, q_idx, kv_idx):
        return score + bias[b, h, kv_idx]

    try:
        from torch.nn.attention.flex_attention import AuxRequest
    except ImportError:  # torch < 2.9: the older keyword
        return _compiled_flex()(q, k, v, score_mod=score_mod, scale=1.0, return_lse=True)
    out, aux = _compiled_flex()(q, k, v, score_mod=score_mod, scale=1.0, return_aux=AuxRequest(lse=True))
    return out, aux.lse
