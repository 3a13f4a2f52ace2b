"""Plot helpers: attention weights as heatmaps and attention patterns as mask grids."""
from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from .masks import MaskMod, materialize

__all__ = ["plot_attention", "plot_mask", "plot_masks"]


def _axes(ax, figsize=(4, 4)):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def plot_attention(weights: Tensor, ax=None, *, title: str | None = None, cmap: str = "viridis",
                   colorbar: bool = True, xlabel: str = "key j", ylabel: str = "query i"):
    """Heatmap of one ``(N, M)`` attention-weight matrix (rows are queries, columns keys).

    Higher-dimensional inputs are reduced to their first batch and head.
    """
    w = weights.detach().float().cpu()
    while w.dim() > 2:
        w = w[0]
    ax = _axes(ax)
    im = ax.imshow(w.numpy(), cmap=cmap, aspect="auto", interpolation="nearest",
                   vmin=0.0, vmax=max(float(w.max()), 1e-12))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return ax


def plot_mask(mask: Tensor | MaskMod, N: int | None = None, ax=None, *, title: str | None = None,
              color: str = "tab:blue"):
    """Draw a pattern as a grid: a filled cell where query i (row) may attend to key j (column).

    ``mask`` is an ``(N, M)`` boolean tensor or a mask function (then ``N`` is required).
    The title reports the density (fraction of pairs computed).
    """
    from matplotlib.colors import ListedColormap

    if callable(mask) and not isinstance(mask, Tensor):
        if N is None:
            raise ValueError("plot_mask needs N when given a mask function")
        mask = materialize(mask, N)
    m = mask.detach().to(torch.bool).cpu()
    while m.dim() > 2:
        m = m[0]
    ax = _axes(ax)
    ax.imshow(m.numpy(), cmap=ListedColormap(["white", color]), vmin=0, vmax=1,
              interpolation="nearest")
    n, k = m.shape
    if max(n, k) <= 64:  # draw cell borders when cells are big enough to see
        ax.set_xticks([x - 0.5 for x in range(k + 1)], minor=True)
        ax.set_yticks([y - 0.5 for y in range(n + 1)], minor=True)
        ax.grid(which="minor", color="0.85", linewidth=0.5)
        ax.tick_params(which="minor", length=0)
    ax.set_xlabel("key j")
    ax.set_ylabel("query i")
    density = m.float().mean().item()
    ax.set_title(f"{title + ': ' if title else ''}{density:.0%} of pairs")
    return ax


def plot_masks(masks: Mapping[str, Tensor | MaskMod], N: int | None = None, *, ncols: int = 4,
               size: float = 3.0):
    """A grid of :func:`plot_mask` panels, one per named pattern. Returns the figure."""
    import matplotlib.pyplot as plt

    n = len(masks)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for ax, (name, mask) in zip(axes.flat, masks.items()):
        plot_mask(mask, N, ax, title=name)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    return fig
