"""Synthesizer: attention weights that are not computed from query–key dot products.

Dense attention mixes the values with weights softmax(Q Kᵀ / sqrt(D)), one number per pair of
tokens. The Synthesizer asks whether the pairs are needed at all and *synthesises* the N×N logits
per head some other way; the values are then mixed exactly as in attention:

    out = softmax(R) V                                   R: (H, N, N) or (B, H, N, N) logits

Three ways to get R, with L = ``seq_len`` the longest sequence a module serves (the first N rows
and columns serve N tokens):

    dense       R_h[i, :] = (relu(x_i W1 + b1) W2 + b2)_h         W1 (C, Dh), W2 (Dh, H·L)
                row i depends on token i alone: no token–token interaction when forming weights
    random      R_h = a learned (or fixed) (L, L) matrix per head, the same for every input
    factorized  R_h = A_h B_h,  A_h (L, k), B_h (k, L): rank <= k, 2·H·L·k parameters instead of H·L²

A causal Synthesizer masks the logits of future tokens (j > i) with -inf before the softmax.
Each module is a drop-in for a multi-head attention layer: values V = x W_v split into H heads
of width D = C / H, the mix above, the heads merged and projected by W_o. Like
:class:`attnkit.MultiHeadAttention` it has no residual or normalisation of its own.

Cost: the mix is O(H·N²·D) time and O(H·N²) memory, as dense attention; forming R costs
O(N·C·Dh + N·Dh·H·L) (dense), nothing (random) or O(H·N²·k) (factorized).

Paper: Tay et al. 2021, Synthesizer: Rethinking Self-Attention in Transformer Models
(arXiv:2005.00743).
"""
from __future__ import annotations

import abc
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .graded import reference
from .masks import causal_mask
from .modules import merge_heads, split_heads

__all__ = ["synthesizer", "DenseSynthesizer", "RandomSynthesizer", "FactorizedRandomSynthesizer"]


@reference(graded_in=("a4",))
def synthesizer(v: Tensor, *, logits: Tensor) -> Tensor:
    """Mix the values with synthesised weights: softmax(logits) V.

    Shapes: ``v`` ``(B, H, M, Dv)``; ``logits`` ``(B, H, N, M)`` or ``(H, N, M)`` (the same for
    every batch element); the result is ``(B, H, N, Dv)``.
    Cost: time O(H·N·M·Dv), memory O(H·N·M).
    """
    if logits.shape[-1] != v.shape[-2]:
        raise ValueError(f"synthesizer: logits (..., N, M) must have M = {v.shape[-2]} columns, one per "
                         f"value row of v {tuple(v.shape)}; got logits {tuple(logits.shape)}")
    weights = torch.softmax(logits, dim=-1)  # (B, H, N, M), rows sum to 1
    return weights @ v  # (B, H, N, M) @ (B, H, M, Dv) -> (B, H, N, Dv)


class _Synthesizer(nn.Module, abc.ABC):
    """What every Synthesizer shares: value and output projections, the causal mask, the mix.

    Subclasses define :meth:`logits` ``x (B, N, C) -> (H, N, N) or (B, H, N, N)``.
    """

    def __init__(self, dim: int, seq_len: int, *, heads: int, causal: bool):
        super().__init__()
        if dim % heads:
            raise ValueError(f"{type(self).__name__}: dim={dim} must be divisible by heads={heads}")
        self.dim, self.seq_len, self.heads, self.causal = dim, seq_len, heads, causal
        self.to_v = nn.Linear(dim, dim)  # W_v
        self.to_out = nn.Linear(dim, dim)  # W_o

    def _length(self, x: Tensor) -> int:
        B, N, C = x.shape  # batch, tokens, channels
        if C != self.dim:
            raise ValueError(f"{type(self).__name__} was built for width {self.dim}, got x {tuple(x.shape)}")
        if N > self.seq_len:
            raise ValueError(f"{type(self).__name__} was built for at most seq_len={self.seq_len} tokens, "
                             f"got N={N}")
        return N

    @abc.abstractmethod
    def logits(self, x: Tensor) -> Tensor:
        """The synthesised logits, ``(H, N, N)`` or ``(B, H, N, N)``: what each subclass defines
        (from each token alone, a learned table, or a product of two thin tables)."""

    def masked_logits(self, x: Tensor) -> Tensor:
        """:meth:`logits`, with -inf on the future tokens (j > i) when the module is causal."""
        logits = self.logits(x)  # (H, N, N) or (B, H, N, N)
        if self.causal:
            N = logits.shape[-1]
            logits = logits.masked_fill(~causal_mask(N, device=logits.device), float("-inf"))
        return logits

    def weights(self, x: Tensor) -> Tensor:
        """The synthesised attention weights softmax(R), ``(H, N, N)`` or ``(B, H, N, N)``."""
        return torch.softmax(self.masked_logits(x), dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        """``x (B, N, C)`` -> ``(B, N, C)``."""
        logits = self.masked_logits(x)  # (H, N, N) or (B, H, N, N)
        v = split_heads(self.to_v(x), self.heads)  # (B, H, N, D)
        out = synthesizer(v, logits=logits)  # (B, H, N, N) @ (B, H, N, D) -> (B, H, N, D)
        return self.to_out(merge_heads(out))  # (B, N, C)


class DenseSynthesizer(_Synthesizer):
    """Dense Synthesizer: each token predicts its own row of logits, R_h[i, :] = relu(x_i W1) W2.

    Args:
        dim: width C of the tokens.
        seq_len: the longest sequence L served (W2 predicts L logits per head).
        heads: number of heads H.
        hidden: width Dh of the per-token MLP (default C).
        causal: mask the logits of future tokens.
    """

    def __init__(self, dim: int, seq_len: int, *, heads: int = 1, hidden: int | None = None,
                 causal: bool = False):
        super().__init__(dim, seq_len, heads=heads, causal=causal)
        self.to_hidden = nn.Linear(dim, hidden or dim)  # W1, b1
        self.to_logits = nn.Linear(hidden or dim, heads * seq_len)  # W2, b2

    def logits(self, x: Tensor) -> Tensor:
        """``(B, N, C)`` -> ``(B, H, N, N)``; row i is a function of token i only."""
        N = self._length(x)
        B = x.shape[0]
        h = F.relu(self.to_hidden(x))  # (B, N, Dh)
        rows = self.to_logits(h).view(B, N, self.heads, self.seq_len)  # (B, N, H, L)
        return rows[..., :N].transpose(1, 2)  # (B, N, H, N) -> (B, H, N, N)


class RandomSynthesizer(_Synthesizer):
    """Random Synthesizer: one (L, L) logit matrix per head, the same for every input.

    Drawn N(0, 1) from torch's global generator; a parameter when ``learned``, else a fixed buffer.
    """

    def __init__(self, dim: int, seq_len: int, *, heads: int = 1, learned: bool = True,
                 causal: bool = False):
        super().__init__(dim, seq_len, heads=heads, causal=causal)
        R = torch.randn(heads, seq_len, seq_len)  # (H, L, L)
        if learned:
            self.R = nn.Parameter(R)
        else:
            self.register_buffer("R", R)

    def logits(self, x: Tensor) -> Tensor:
        """``(H, N, N)``: the first N rows and columns of R (x only gives N)."""
        N = self._length(x)
        return self.R[:, :N, :N]  # (H, N, N)


class FactorizedRandomSynthesizer(_Synthesizer):
    """Factorized Random Synthesizer: R_h = A_h B_h with A_h (L, k), B_h (k, L), so rank(R_h) <= k.

    A and B are drawn N(0, 1/sqrt(k)) (so R's entries have variance 1, as the Random Synthesizer's);
    parameters when ``learned``, else fixed buffers.
    """

    def __init__(self, dim: int, seq_len: int, *, heads: int = 1, k: int = 8, learned: bool = True,
                 causal: bool = False):
        super().__init__(dim, seq_len, heads=heads, causal=causal)
        if k < 1:
            raise ValueError(f"FactorizedRandomSynthesizer: the rank k must be >= 1, got {k}")
        self.k = k
        A = torch.randn(heads, seq_len, k) / math.sqrt(math.sqrt(k))  # (H, L, k)
        B = torch.randn(heads, k, seq_len) / math.sqrt(math.sqrt(k))  # (H, k, L)
        if learned:
            self.A, self.B = nn.Parameter(A), nn.Parameter(B)
        else:
            self.register_buffer("A", A)
            self.register_buffer("B", B)

    def logits(self, x: Tensor) -> Tensor:
        """``(H, N, N)`` of rank at most k."""
        N = self._length(x)
        return self.A[:, :N] @ self.B[..., :N]  # (H, N, k) @ (H, k, N) -> (H, N, N)


# ---------------------------------------------------------------- registry entries

def _register() -> None:
    from .registry import register_mixer

    paper = ("Tay et al. 2021, Synthesizer: Rethinking Self-Attention in Transformer Models "
             "(arXiv:2005.00743)")
    register_mixer("synthesizer_dense", DenseSynthesizer, family="synthesizer", paper=paper,
                   cost="O(N·C·H·L + H·N²·D) time, O(H·N²) memory",
                   example_kwargs={"dim": 16, "seq_len": 32, "heads": 2})
    register_mixer("synthesizer_random", RandomSynthesizer, family="synthesizer", paper=paper,
                   cost="O(H·N²·D) time, O(H·N²) memory, H·L² parameters",
                   example_kwargs={"dim": 16, "seq_len": 32, "heads": 2})
    register_mixer("synthesizer_factorized", FactorizedRandomSynthesizer, family="synthesizer",
                   paper=paper, cost="O(H·N²·(k + D)) time, O(H·N²) memory, 2·H·L·k parameters",
                   example_kwargs={"dim": 16, "seq_len": 32, "heads": 2, "k": 4})


_register()
