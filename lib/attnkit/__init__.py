"""attnkit: attention and its efficient variants, with a dense reference beside every fast path.

    from attnkit import dense_attention, VARIANTS
    out = VARIANTS["dense"](q, k, v)          # (B, H, N, D) in, (B, H, N, D) out

Modules, one per family: ``dense`` (the reference), ``masks`` (patterns as mask functions,
the shared window / global / block-table patterns), ``modules`` (multi-head attention),
``measure`` (FLOPs, largest tensor, peak memory, timer), ``grading`` (checks for notebook test
cells), ``plot`` (heatmaps and mask grids), ``graded`` (the marker on reference functions);
the variants: ``fixed`` with its CPU kernels ``banded`` and ``blocksparse`` and its GPU path
``flex``, ``recurrence``, ``lowrank``, ``kernel`` (with ``rfa``, Random Feature Attention),
``bellcurve``, ``varwindow``, ``span``, ``lsh`` (Reformer) and ``routing`` (Routing
Transformer), ``sinkhorn`` (Sparse Sinkhorn attention); token mixers that are modules, listed in ``MIXERS``:
``synthesizer`` (dense, random and factorized Synthesizers) and ``mixing`` (FNet, gMLP,
MLP-Mixer). Models and training: ``models`` (one small Transformer, any variant or mixer by
name), ``training`` (the one training loop), the tasks it trains on: ``tasks`` (copy and
recall), ``lra`` (long-range tasks) with ``capstone`` (every variant on every task),
``biography`` (the birth-place pretraining experiment) and ``qa`` (a small QA task and the
chapter 8 reader). ``attnkit.guard`` is grading machinery: only a grading
kernel imports it. Nothing here imports the grading pipeline.
"""
import os as _os

import torch as _torch

if not _torch.cuda.is_available():
    # Without a GPU, Triton kernels run under Triton's interpreter. Triton reads TRITON_INTERPRET
    # when it decorates a function, its own library included, and the modules below import
    # torch._dynamo, which imports triton: so switch it on first (attnkit.notebook.triton_device).
    _os.environ["TRITON_INTERPRET"] = "1"

from . import grading, masks, measure, plot  # noqa: E402
from .dense import dense_attention, softmax  # noqa: E402
from .masks import and_masks, causal, causal_mask, full, materialize, or_masks
from .measure import compare_speed, count_flops, largest_intermediate, peak_memory  # noqa: E402
from .modules import MultiHeadAttention, merge_heads, split_heads  # noqa: E402
from .registry import MIXERS, VARIANTS, Mixer, Variant, register, register_mixer  # noqa: E402

register(
    "dense", dense_attention, family="dense",
    cost="O(N·M·D) time, O(N·M) memory",
    paper="Vaswani et al. 2017, Attention Is All You Need (arXiv:1706.03762)",
    example_kwargs={},
)
from . import banded, blocksparse, fixed, flex  # noqa: E402  (registers the fixed sparse patterns)
from . import recurrence  # noqa: E402  (registers transformer_xl)
from . import kernel, lowrank  # noqa: E402  (registers the low-rank and kernel variants)
from . import bellcurve, span, varwindow  # noqa: E402  (registers bellcurve and adaptive_span)
from . import lsh, routing  # noqa: E402  (registers lsh and routing)
from . import rfa, sinkhorn  # noqa: E402  (registers sinkhorn and rfa)
from . import mixing, synthesizer  # noqa: E402  (registers the token mixers)
from . import biography  # noqa: E402  (its @reference functions are graded in a7: the guard must see them)

__version__ = "0.1.0"
__all__ = [
    "dense_attention", "softmax", "VARIANTS", "Variant", "register", "MultiHeadAttention",
    "split_heads", "merge_heads", "full", "causal", "causal_mask", "materialize", "and_masks",
    "or_masks", "count_flops", "largest_intermediate", "peak_memory", "compare_speed",
    "grading", "masks", "measure", "plot", "MIXERS", "Mixer", "register_mixer",
]
