"""Pluggable attention modules (dense, window, bell curve with fixed or learned σ) and the tiny
Longformer-like encoder with BERT's start/end span heads. See :mod:`attnkit.qa`.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..bellcurve import bell_bias
from ..dense import dense_attention
from ..fixed import longformer_mask
from ..masks import materialize
from ..models import Transformer
from ..modules import merge_heads, split_heads
from .data import GLOBAL_TOKENS, VOCAB_SIZE

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
            pattern = longformer_mask(self.window, self.global_tokens, device=device)
            self._masks[key] = materialize(pattern, N, device=device)
        return self._masks[key]

    def forward(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor | None = None) -> Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask(q.shape[-2], q.device))

    def extra_repr(self) -> str:
        return f"window={self.window}, global_tokens={self.global_tokens}"


class BellCurveAttention(nn.Module):
    """The reports' bell-curve window: scores get -½((i - j)/σ)² inside the window, σ fixed or learned.

        s_ij = q_i·k_j/√D - ½((i - j)/σ_i)² [- log(σ_i·√(2π)) if normalised]   |i - j| <= w, i, j >= g
        s_ij = q_i·k_j/√D   if i < g or j < g (global tokens);   -inf otherwise

    This is ``attnkit.VARIANTS["bellcurve"]`` (the tests hold the two equal). At the task's sizes
    (N <= 256) it is computed as one ``(B, 1, N, N)`` bias (:func:`attnkit.bellcurve.bell_log_curve`)
    added inside ``F.scaled_dot_product_attention``, the fastest path on a CPU for short inputs.

    With ``sigma="learned"`` an :class:`attnkit.bellcurve.SigmaPredictor` (the reports' W_p, U_d)
    maps each token's hidden state x_i to σ_i > 0; a number fixes σ for every query.
    ``normalised`` picks the PDF 1/(σ√(2π))·exp(..) over the max-1 curve; ``window`` caps
    |i - j| (None: no cap, the reports' stage 1); the first ``global_tokens`` tokens are
    Longformer's global tokens (no bias).

    The reports' stage 2: set ``slice_tol`` (e.g. 1e-3) and each query i attends only to the
    window w_i = ``window_from_sigma(σ_i, tol=slice_tol, max_window=window or N)`` sliced from
    its own σ, through :func:`attnkit.varwindow.variable_window_attention` (banded on the CPU,
    memory O(N·(max w_i + g)) instead of O(N²)). ``last_widths`` then holds the ``(B, N)`` widths.

    After each forward, ``last_sigma`` holds the σ used, detached: ``(B, N)`` when learned, a
    0-dim tensor when fixed. ``sigma_parameters()`` lists the predictor's parameters (empty
    for a fixed σ).

    Args:
        d_model: width C of the hidden states x (what the predictor reads).
        sigma: ``"learned"`` or a positive number.
        sigma_init: the predictor's σ at initialisation (the reports start at 1.0 and 9.5).
        normalised, window, global_tokens: as in ``VARIANTS["bellcurve"]``.
        slice_tol: None (stage 1: the whole capped window) or the tail tolerance of stage 2.
    """

    def __init__(self, d_model: int, *, sigma: float | str = "learned", sigma_init: float = 1.0,
                 normalised: bool = False, window: int | None = None,
                 global_tokens: int = GLOBAL_TOKENS, slice_tol: float | None = None):
        super().__init__()
        from ..bellcurve import SigmaPredictor
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
        """The additive bias, ``(B, 1, N, N)`` for σ ``(B, N)`` (``(1, 1, N, N)`` for a 0-dim σ)."""
        B = sigma.shape[0] if sigma.dim() else 1
        return bell_bias(N, sigma, normalised=self.normalised, window=self.window,
                         global_tokens=self.global_tokens, B=B, dtype=sigma.dtype, device=sigma.device)

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
        from ..varwindow import variable_window_attention, window_from_sigma
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

class QKVAttention(nn.Module):
    """The attention layer of the reader: fused q, k, v projection, ``attn(q, k, v, x)``, output projection.

        (q, k, v) = split(x W_qkv),   out = merge(attn(q, k, v, x)) W_o            x: (B, N, C)

    ``attn`` sees the layer's input ``x`` too: that is what a σ predictor reads. It is built
    before the projections (that order fixes which random numbers each parameter gets).
    """

    def __init__(self, d_model: int, n_heads: int, make_attn: Callable[[], nn.Module]):
        super().__init__()
        self.n_heads = n_heads
        attn = make_attn()
        self.w_qkv = nn.Linear(d_model, 3 * d_model)
        self.w_o = nn.Linear(d_model, d_model)
        self.attn = attn

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = (split_heads(t, self.n_heads) for t in self.w_qkv(x).chunk(3, dim=-1))  # (B, H, N, D)
        return self.w_o(merge_heads(self.attn(q, k, v, x)))  # (B, N, C)


class QAEncoder(Transformer):
    """A tiny Longformer-like reader: :class:`attnkit.models.Transformer` with a span head.

        h_0 = E[tokens] + P[positions],  h_l = Block_l(h_{l-1}),  (start, end) = LN(h_L) W_span

    Every block's mixer is a :class:`QKVAttention` around the module the ``attention`` factory
    makes, so any attention module ``(q, k, v, x)`` plugs in.

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
        make = attention or (lambda layer, c: FunctionAttention(F.scaled_dot_product_attention))

        def layer(i: int, c: int) -> nn.Module:
            return QKVAttention(c, n_heads, lambda: make(i, c))
        super().__init__(layer, vocab=vocab_size, max_len=max_len, out=2, d_model=d_model, n_layers=n_layers,
                         d_ff=d_ff, seed=seed)

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        logits = super().forward(tokens)  # (B, N, 2)
        return logits[..., 0], logits[..., 1]

    def attention_modules(self) -> list[nn.Module]:
        return [b.mixer.attn for b in self.blocks]

    def sigma_parameters(self) -> list[nn.Parameter]:
        """The parameters that only compute sigma (the reports' U_d and W_p), for their own LR."""
        return [p for m in self.attention_modules() if hasattr(m, "sigma_parameters")
                for p in m.sigma_parameters()]

    def last_sigma(self) -> list[Tensor | None]:
        """Per layer, the sigma its attention used in the last forward (None if it has none)."""
        return [getattr(m, "last_sigma", None) for m in self.attention_modules()]
