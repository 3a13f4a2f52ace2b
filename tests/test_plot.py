"""Plot helpers draw on the Agg backend and return their axes or figure."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from attnkit import causal, causal_mask, dense_attention, full  # noqa: E402
from attnkit.plot import plot_attention, plot_mask, plot_masks  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_plot_attention_draws_the_weights():
    q, k, v = (torch.randn(2, 3, 6, 4) for _ in range(3))
    _, w = dense_attention(q, k, v, return_weights=True)
    ax = plot_attention(w, title="weights")
    assert ax.get_title() == "weights"
    assert ax.get_xlabel() == "key j" and ax.get_ylabel() == "query i"
    image = ax.images[0].get_array()
    assert image.shape == (6, 6)
    torch.testing.assert_close(torch.as_tensor(image.data), w[0, 0])  # first batch, first head
    assert len(ax.figure.axes) == 2  # the heatmap and its colorbar


def test_plot_attention_on_given_axes_without_colorbar():
    fig, (a, b) = plt.subplots(1, 2)
    assert plot_attention(torch.rand(4, 5), ax=b, colorbar=False) is b
    assert len(fig.axes) == 2 and not a.images and b.images


def test_plot_mask_reports_density():
    ax = plot_mask(causal_mask(4))
    assert ax.get_title() == "62% of pairs"  # 10 of 16 pairs
    assert torch.equal(torch.as_tensor(ax.images[0].get_array().data).bool(), causal_mask(4))
    ax = plot_mask(causal, 10, title="causal")
    assert ax.get_title() == "causal: 55% of pairs"


def test_plot_mask_function_needs_n():
    with pytest.raises(ValueError, match="needs N"):
        plot_mask(causal)


def test_plot_masks_makes_a_grid_with_spare_panels_off():
    fig = plot_masks({"full": full, "causal": causal, "tensor": causal_mask(8)}, 8, ncols=2)
    axes = fig.axes
    assert len(axes) == 4
    assert [ax.get_title() for ax in axes[:3]] == ["full: 100% of pairs", "causal: 56% of pairs",
                                                  "tensor: 56% of pairs"]
    assert not axes[3].axison
