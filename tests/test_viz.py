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


def test_tradeoff_numbers_points_and_names_them_in_a_legend():
    fig = viz.plot_tradeoff({"DRC": (40.0, 45.0), "Copy history": (46.0, 16.0)}, calibration=["Copy history"])
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert texts == ["1. DRC", "2. Copy history (calibration)"]
    plt.close(fig)
    with pytest.raises(ValueError, match="at least one point"):
        viz.plot_tradeoff({})


def test_method_rates_have_error_bars_and_hatched_calibration_rows():
    entries = {"drc": {"n": 200, "ground_truth": {"both": 0.35, "style_acc": 0.6}},
               "grd": {"n": 200, "ground_truth": {"both": 0.04, "style_acc": 0.04}}}
    fig = viz.plot_method_rates(entries, ["drc", "grd", "absent"], ["both", "style_acc"], calibration=["grd"])
    ax = fig.axes[0]
    assert len(ax.patches) == 4 and ax.patches[2].get_hatch() == "//" and ax.patches[0].get_hatch() is None
    from matplotlib.container import ErrorbarContainer
    assert sum(isinstance(c, ErrorbarContainer) for c in ax.containers) == 2     # error bars on every row
    plt.close(fig)
    with pytest.raises(ValueError, match="at least one row"):
        viz.plot_method_rates(entries, ["absent"], ["both"])


def test_rate_table_puts_a_standard_error_beside_every_rate():
    rows = {"DRC": {"both": 0.5, "style_acc": 0.7, "n": 100}, "copy": {"both": 0.0, "style_acc": None, "n": 100}}
    md = viz.rate_table(rows, [("style_acc", "style"), ("both", "both")], italic=["copy"])
    lines = md.splitlines()
    assert lines[0] == "| method | style | both |" and lines[2] == "| DRC | 0.700 ± 0.046 | 0.500 ± 0.050 |"
    assert lines[3] == "| *copy* | n/a | 0.000 ± 0.000 |"


def test_rate_grid_takes_each_cells_own_sample_count():
    rows = {"LMM": {"training cells": (0.5, 100), "held-out": (0.5, 25)},
            "other": {"training cells": (None, 100), "held-out": (0.0, 25)}}
    lines = viz.rate_grid(rows, first="both").splitlines()
    assert lines[0] == "| both | training cells | held-out |" and lines[1] == "|---|---|---|"
    assert lines[2] == "| LMM | 0.500 ± 0.050 | 0.500 ± 0.100 |"      # the same rate, its own n
    assert lines[3] == "| other | n/a | 0.000 ± 0.000 |"
    with pytest.raises(ValueError, match="at least one row"):
        viz.rate_grid({})


def test_plot_runs_draws_every_run_on_one_axes():
    h = {"step": [1, 2, 3], "l_a": [3.0, 2.0, 1.0], "l_b": [3.0, 2.5, 2.0]}
    fig = viz.plot_runs({"IS": h, "uniform": h}, ["l_a", "l_b"], labels={"l_a": "z(a,a)"})
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) == 4
    assert {ln.get_linestyle() for ln in fig.axes[0].lines} == {"-", "--"}
    assert "IS: z(a,a)" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    plt.close(fig)
    with pytest.raises(KeyError, match="no 'l_c'"):
        viz.plot_runs({"IS": h}, ["l_c"])


def test_apply_token_masks_greys_each_image_by_its_own_mask():
    import torch

    masks = torch.zeros(2, 64)
    masks[0] = 1
    out = viz.apply_token_masks(torch.ones(2, 3, 32, 32), masks)
    assert out.shape == (2, 3, 32, 32) and float(out[0].min()) == 1 and float(out[1].max()) == 0.5


def test_show_best_of_frames_the_kept_candidate_after_the_real_sticker():
    cand = np.zeros((2, 3, 3, 8, 8), np.float32)
    cand[1, 2] = 1.0
    fig = viz.show_best_of(cand, [0, 2], reals=np.ones((2, 3, 8, 8), np.float32), row_labels=["a", "b"])
    assert len(fig.axes) == 8 and fig.axes[0].get_title() == "real" and fig.axes[1].get_title() == "greedy"
    framed = [i for i, ax in enumerate(fig.axes) if any(sp.get_visible() for sp in ax.spines.values())]
    assert framed == [1, 7]                              # row 0 kept greedy, row 1 its sample 2
    assert fig.axes[7].images[0].get_array().min() == 255
    plt.close(fig)
    with pytest.raises(ValueError, match="one index in 0..n-1"):
        viz.show_best_of(cand, [0, 3])


def test_plot_best_of_draws_a_line_a_rule_and_the_bounds():
    both = lambda m: {"both": {"mean": m, "min": m - 0.05, "max": m + 0.05}}      # noqa: E731
    summary = {"rules": {"caption": {"1": both(0.3), "4": both(0.35)}, "encoder": {"1": both(0.3), "4": both(0.4)}},
               "oracle_both": {"mean": 0.8}}
    fig = viz.plot_best_of(summary, references={"aim": 0.4}, title="t")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["by caption", "by encoder"]
    assert {round(line.get_ydata()[0], 3) for line in ax.lines if line.get_linestyle() in ("--", ":")} == {0.8, 0.4}
    plt.close(fig)
    with pytest.raises(ValueError, match="run benchmarks/best_of.py"):
        viz.plot_best_of({"rules": {}})
