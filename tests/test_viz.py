"""drclib.viz: figures have the promised layout and reject empty input."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from drclib import viz  # noqa: E402
from drclib.data import make_dataset  # noqa: E402


def test_contact_sheet_rows_are_styles_columns_are_emoji(tiny_stickers, tmp_path):
    fig = viz.contact_sheet(tiny_stickers, [0, "thing number 5", 9], title="t")
    axes = np.array(fig.axes).reshape(6, 3)
    assert [a.get_ylabel() for a in axes[:, 0]] == tiny_stickers.styles
    assert axes[0, 1].get_title() == "thing number 5"
    assert np.array_equal(axes[2, 2].images[0].get_array(), tiny_stickers.images[2, 9])
    fig.savefig(tmp_path / "sheet.png")
    plt.close(fig)
    fig = viz.contact_sheet(tiny_stickers, [1, 2], styles=["noto", 0])
    assert len(fig.axes) == 4 and fig.axes[0].get_ylabel() == "noto"
    plt.close(fig)


def test_contact_sheet_bad_input(tiny_stickers):
    with pytest.raises(ValueError, match="at least one"):
        viz.contact_sheet(tiny_stickers, [])
    with pytest.raises(KeyError):
        viz.contact_sheet(tiny_stickers, ["no such emoji"])


def test_image_row_and_sample_figures(tiny_stickers):
    fig = viz.image_row([tiny_stickers.images[0, 0]] * 3, ["a", "b", "c"], frame_colors=[None, "red", None])
    assert [a.get_title() for a in fig.axes] == ["a", "b", "c"]
    plt.close(fig)
    with pytest.raises(ValueError):
        viz.image_row([])
    data = make_dataset(tiny_stickers, "quick", seed=0)
    sample = data.samples[0]
    fig = viz.show_sample(tiny_stickers, sample)
    assert len(fig.axes) == 15
    plt.close(fig)
    fig = viz.show_collapse(tiny_stickers, sample)
    shown = [a.images[0].get_array() for a in fig.axes]
    ref = sample.references[0]
    assert np.array_equal(shown[2], tiny_stickers.images[ref[0], ref[1]])        # copy of the reference
    assert np.array_equal(shown[1], tiny_stickers.images[sample.target[0], sample.target[1]])
    plt.close(fig)


def test_show_token_masks_greys_masked_cells():
    import matplotlib.pyplot as plt
    import torch

    from drclib.viz import show_token_masks

    img = torch.ones(3, 32, 32)
    keep_left = torch.zeros(8, 8)
    keep_left[:, :4] = 1
    fig = show_token_masks(img, [torch.ones(64), keep_left.flatten()], ["all", "left"])
    shown = fig.axes[1].images[0].get_array()
    assert shown[:, :16].min() == 255 and abs(int(shown[:, 16:].max()) - 128) <= 1
    plt.close(fig)
