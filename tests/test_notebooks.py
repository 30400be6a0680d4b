"""Every notebook in notebooks/ runs top to bottom under papermill in the quick profile.

New notebooks are picked up with no change here. Each run keeps its executed copy in
``runs/test-quick/`` (git-ignored; CI keeps it as an artifact) and must write
``<stem>.json``, which is read back. Each runs with its exercises answered by their solutions
(``drclib.notebooks.with_solutions``), so every solution executes and every self-check must say
"correct". ``CHECKS`` holds per-notebook assertions on those numbers;
a notebook without an entry still has to run and write its JSON with its profile in it.
"""

from __future__ import annotations

import json

import pytest

from drclib.notebooks import KERNEL_NAME, artifact_json, exercises, find_notebooks, run_notebook
from tests.conftest import REPO

OUT = REPO / "runs" / "test-quick"
TIMEOUT_PER_CELL = 600  # seconds


def _check_00(r):
    assert r["n_styles"] == 6 and r["image_size"] == 32
    assert r["concepts"] == "mini" and r["n_emoji"] == 32 and r["n_emoji_world"] >= 1300   # the quick profile's set
    assert sum(r["emoji_per_category"].values()) == r["n_emoji"]
    assert r["users"] == 40 and r["samples"] > 100 and r["triplets"] == 400
    sp = r["splits"]["sample"]
    assert sp["train"] > 6 * sp["test"] and sp["val"] > 0
    assert r["splits"]["heldout"]["test"] > 0
    assert 0.05 < r["mean_noise_rate"] < 0.4
    assert 0 <= r["noise_rate_range"][0] <= r["mean_noise_rate"] <= r["noise_rate_range"][1] <= 1   # the histogram's caption
    assert r["lean_share"] is None                            # mini's categories are too small to lean to
    assert r["pixel_diff_same_emoji_other_style"] > 10        # style is a real, visible factor


def _check_01(r):
    assert r["retrained"] is False
    assert r["tokenizer"]["psnr_heldout"] > 20 and r["tokenizer"]["usage"] > 0.5
    # the tokenizer keeps style and emoji for most reconstructions
    assert r["reconstruction_rates"]["style_acc"] > 0.5 and r["reconstruction_rates"]["emoji_top5"] > 0.6
    assert r["demo_training"]["last_loss"] < r["demo_training"]["first_loss"]     # the loop learns
    t2i = r["t2i_train_cells"]
    assert 0 <= t2i["both"] <= min(t2i["style_acc"], t2i["emoji_top1"]) <= 1
    assert t2i["style_acc"] > 0.3                                   # well above chance (1/6): the LMM draws styles
    assert r["generation_seconds_16"]["no_cache"] > r["generation_seconds_16"]["cache"]
    assert r["kv_cache_speedup"] > 1                                # the speed-up its caption states, measured here
    assert 0 <= r["grid_rates"]["both"] <= r["grid_rates"]["style_acc"] <= 1
    assert 0 <= r["captions_right"] <= len(r["captions"])
    assert len(r["captions"]) == 3 and all(isinstance(c, str) for c in r["captions"])
    # the pretraining augmentation: 4 stickers and 5 copies each, most codes changed by a 2-pixel shift
    assert r["augmented_copies"]["shape"] == [4, 6, 3, 32, 32] and r["augmented_copies"]["codes_shared"] < 0.9
    # held-out cells from words: the shipped (composing) LMM's card above the plain LMM's it replaced
    c = r["composing"]
    assert c["cells"] == 12 and all(0 <= x["both"] <= 1 for x in c["demo_rates"].values())
    assert c["card_heldout_both"]["shipped LMM"] > c["card_heldout_both"]["plain LMM"]
    # best of N: the kept candidates scored on the same held-out cells as the greedy drawings
    b = r["best_of"]
    assert b["n"] == 8 and b["heldout_best"]["n_cells"] == b["heldout_greedy"]["n_cells"] == r["t2i_heldout_cells"]["n_cells"]
    assert 0 <= b["heldout_best"]["both"] <= min(b["heldout_best"]["style_acc"], b["heldout_best"]["emoji_top1"])
    assert len(b["shown_chosen"]) == 4 and all(0 <= i < 8 for i in b["shown_chosen"])
    study = b["study"]                                   # the shipped study, read from data/results/best_of.json
    assert study["n"] == 64 and study["greedy"] < study["best"] < study["oracle"]


def _check_02(r):
    rows = {(x["extractor"], x["statistics"]): x for x in r["mining"]}
    assert len(rows) == 10 and all(x["backend"] for x in rows.values())
    # an unavailable extractor is reported as such, never as a number from random weights
    assert all((x["precision"] is None) == x["backend"].startswith("ImageNet VGG-16 weights absent")
               for x in rows.values())
    assert 0.1 < r["chance_precision"] < 0.25
    assert rows[("colour", "meanstd")]["precision"] > r["chance_precision"]
    assert rows[("kit_style", "meanstd")]["precision"] > rows[("colour", "meanstd")]["precision"]
    assert r["rerender_shape"] == [3, 3, 32, 32] and r["triplets"] == 400
    assert rows[tuple(r["best_unlabelled_extractor"].split("/"))]["precision"] > r["chance_precision"]   # its caption


def _check_03(r):
    assert r["e_shape"] == [1, 64, 128] and r["z_shape"] == [1, 16, 256]     # semantic tokens in, LMM width out
    assert r["variant_z_tokens"] == {"drc": 16, "concat": 128, "mlp": 16}
    assert all(v == [1, 64, 256] for v in r["features"].values())
    assert r["params"]["StyleTower"] == r["params"]["SemTower"] > 0           # one architecture, two towers
    assert r["params"]["lmm"] > r["params"]["drc"] > r["params"]["concat"]
    assert 0 < r["attention_entropy"]["style"] <= r["attention_entropy"]["uniform"] + 1e-6
    # eq. (1)'s cross-form shortcut: swapping the anchor moves z(s,m) in the cross form, never in the self form
    shortcut = r["cross_form_shortcut"]
    assert shortcut["cross"]["z(s,m)"] > 1e-3 and shortcut["self"]["z(s,m)"] < 1e-6
    assert shortcut["self"]["z(a,a)"] > 1e-3


def _check_04(r):
    assert r["retrained"] is False
    combos = ["aa", "am", "sa", "sm"]
    assert abs(sum(r["initial_p"]) - 1) < 1e-5
    for mode, d in r["demo"].items():
        assert d["steps"] == 12 and abs(sum(d["p_last"].values()) - 1) < 1e-5
    assert all(abs(v - 0.25) < 1e-9 for v in r["demo"]["uniform"]["p_last"].values())
    for c in combos:
        x = r["combinations"][c]
        assert 0 < x["n"] <= 24 and 0 <= x["both"] <= min(x["style_acc"], x["emoji_top1"]) <= 1   # mini: 16 held-out cells
    assert set(r["swap"]) == {"train", "heldout"}                          # both kinds of pairs
    for kind, forms in r["swap"].items():
        assert set(forms) == {"self", "cross"} and all(0 < x["n"] <= 24 for x in forms.values())
        refs = r["swap_references"][kind]
        assert refs["real target"]["style_of_A"] > 0.6 and refs["real target"]["emoji_of_B"] > 0.6
        # copying B is total collapse to the reference: B's style and emoji, never A's emoji
        assert refs["copy B"]["style_of_B"] > 0.6 and refs["copy B"]["emoji_of_A"] == 0
    assert set(r["ablation"]) == {"drc", "uniform", "concat", "mlp"}
    assert all(set(a["swap"]) == {"train", "heldout"} for a in r["ablation"].values())
    trained = r["final_running_losses"]["drc"]
    assert max(trained.values()) < min(r["initial_losses"].values())       # the shipped model learned
    for kind in ("train", "heldout"):                                       # the calibration rows of the swap test
        refs = r["swap_references"][kind]
        assert refs["copy A"]["emoji_of_B"] == 0 and refs["copy A"]["style_of_A"] > 0.6
        assert 0 <= refs["bare LMM (LMM*)"]["both"] <= 1
    red = r["redraw_references"]                                            # ... and of redrawing anchors
    assert red["real anchor"]["both"] > 0.6 and red["copy x_m"]["emoji_top1"] > 0.6 and red["copy x_s"]["emoji_top1"] == 0
    # the shipped 300-pair swap tests, read from the checkpoints
    assert all(x[kind]["n"] == 300 for x in r["shipped_swap"].values() for kind in ("train", "heldout"))
    assert r["shipped_swap"]["drc"]["train"]["both"] > r["shipped_swap"]["concat"]["train"]["both"] + 0.2
    iu = r["is_vs_uniform"]                      # importance sampling vs uniform: the stated conclusion
    assert iu["lower"] in ("importance sampling", "uniform sampling") and iu["spread"] > 0
    assert iu["swap_within_noise"] is True and abs(iu["swap_gap"]) <= 2 * iu["swap_gap_se"]   # no measurable gain


def _check_05(r):
    assert r["mask_gradient"] > 0 and r["index_gradient"] is False      # ours trains, the index version cannot
    assert r["demo"]["steps"] == 6
    assert set(r["pipelines"]) == {"stage 1 only", "DRC (stage 2)", "w/o Aug"}
    assert set(r["mask_keep"]) == {"untrained", "trained"}
    for keep in r["mask_keep"].values():          # per-item keep shares of the style mask at alpha_s 0.4
        assert keep["n_on"] > 0 and keep["n_off"] > 0
        assert abs((keep["on_style"] * keep["n_on"] + keep["off_style"] * keep["n_off"]) / (keep["n_on"] + keep["n_off"])
                   - 0.6) < 0.02                  # the mask keeps 1 - alpha_s of all history tokens
        assert 0 < keep["on_style_se"] < 0.1 and 0 < keep["off_style_se"] < 0.2
    assert r["calibration"] == sorted(["copy reference (Grd)", "random history image", "bare LMM (LMM*)"])
    assert len(r["table"]) == 12                  # 3 pipelines + 3 calibration rows, 2 splits
    for row in r["table"].values():
        assert 16 <= row["n"] <= 24 and 0 <= row["both"] <= min(row["style_acc"], row["emoji_top1"]) <= 1
        assert 0 <= row["collapse_reference"] <= 1 and 0 <= row["collapse_history"] <= 1
    for split in ("sample", "heldout"):
        grd, hist = r["table"][f"{split}/copy reference (Grd)"], r["table"][f"{split}/random history image"]
        assert grd["collapse_reference"] > 0.8 and grd["emoji_top1"] > 0.6 and grd["style_acc"] < 0.2    # total collapse
        assert hist["collapse_history"] > 0.6 and hist["emoji_top1"] < 0.2                            # ignores the reference
    g = r["stage2_gain"]
    assert abs(g["both_stage2"] - g["both_stage1"] - g["diff"]) < 1e-9 and g["se"] > 0


def _check_06(r):
    assert r["generated"] is True and r["strip_images"] == 6
    assert "history is empty" in r["status"]                               # the error cell's message, no traceback
    assert r["grid_shape"] == [3, 1 + r["n_history"] + 5, 32, 32, 3]   # reference, the whole history, five alpha_m
    assert set(r["alpha_m_rates"]) == {"0.0", "0.25", "0.5", "0.75", "1.0"}
    assert all(len(v) == 5 and all(0 <= k <= 3 for k in v) for v in r["strip_judged"].values())
    rates = r["alpha_m_rates"]
    assert rates["0.0"]["emoji_top1"] > rates["1.0"]["emoji_top1"]         # alpha_m masks the reference's content away
    cal = r["calibration"]                                                  # calibration rows beside the sweep
    assert set(cal) == {"copy reference (Grd)", "random history image", "bare LMM (LMM*)"}
    assert cal["copy reference (Grd)"]["emoji_top1"] > 0.6 and cal["copy reference (Grd)"]["collapse_reference"] > 0.8
    assert cal["random history image"]["emoji_top1"] < 0.2


def _check_07(r):
    from drclib.evaluation import COLUMN_BACKENDS, ROWS

    assert r["rows"] == list(ROWS)                       # every row, including the shipped baselines
    assert r["invariant_problems"] == []                 # Grd at the top of semantic alignment, Recon above DRC
    assert set(r["columns"]) == set(COLUMN_BACKENDS) and all(r["columns"].values())
    assert r["settings"]["n_samples"] == 16 and set(r["table"]) == {"sample", "heldout"}
    # the style judge reads a real target's style well above chance (1/6); on mini's 16 held-out cells,
    # which it never trained on, it is right 11 times (benchmarks/style_judge_sets.py), so that split's floor is lower
    for name, split in r["table"].items():
        assert split["grd"]["semantic_cis_kit"] == pytest.approx(100, abs=0.01)
        assert split["grd"]["emoji_top5"] >= 0.75 and split["target"]["style_acc"] >= (0.75 if name == "sample" else 0.6)
        for row in split.values():
            assert row["n"] == 16 and 0 <= row["both"] <= min(row["style_acc"], row["emoji_top1"])
    assert r["comparison_columns"] == ["pigeon", "drc", "target"]
    # the shipped full run, read back: one protocol (fixed alpha_m), 200 + 64 samples, invariants hold
    full = r["full"]
    assert full["settings"]["sweep"] is False and full["settings"]["n_samples"] == 200
    assert full["invariant_problems"] == [] and r["sweep_shipped"] is True
    for split, n in (("sample", 200), ("heldout", 64)):
        assert all(row["n"] == n for row in full["table"][split].values())
    # the paper's direction on the `sample` split (held-out cells below)
    t = full["table"]["sample"]
    assert t["drc"]["both"] > t["pigeon"]["both"] and t["drc"]["both"] > t["stage1_concat"]["both"]
    assert t["drc"]["collapse_reference"] < t["pigeon"]["collapse_reference"]
    # the composing study, read back: the same stage 1 on the shipped (composing) LMM composes held-out
    # cells more often than on the plain LMM it replaced, whose drawing of them from words is rarer
    c = r["composing"]
    assert c["shipped"]["heldout"]["both"] > c["plain"]["heldout"]["both"]
    assert c["lmm_heldout_both"]["shipped"] > c["lmm_heldout_both"]["plain"]
    assert c["shipped"]["heldout"]["n"] == c["plain"]["heldout"]["n"] == 64
    # every part trained on the shipped LMM: DRC above Pigeon and w/o FusionNetwork on held-out cells too,
    # and above its own figure on the plain LMM's kit
    kh, old = full["table"]["heldout"], c["plain_kit_heldout"]
    assert kh["drc"]["both"] > kh["pigeon"]["both"] and kh["drc"]["both"] > kh["stage1_concat"]["both"]
    assert kh["drc"]["both"] > old["drc"]["both"]


CHECKS = {"00_task_and_data": _check_00, "01_pocket_lmm": _check_01, "02_contrastive_samples": _check_02,
          "03_towers_and_fusion": _check_03, "04_stage1_training": _check_04, "05_stage2_sft": _check_05,
          "06_interactive": _check_06, "07_evaluation": _check_07}

NOTEBOOKS = find_notebooks()


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found in notebooks/"
    assert KERNEL_NAME == "python3"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_parameters_cell_is_one_papermill_reads(notebook, caplog):
    """papermill reads each parameter (for ``papermill --help-notebook`` and its injected cell's
    log) only from ``NAME = value  # help`` lines with one ``=``: a second one in the help text
    makes it skip the line with a warning on every run."""
    import logging

    import papermill

    with caplog.at_level(logging.WARNING, logger="papermill"):
        params = papermill.inspect_notebook(str(notebook))
    assert not [r for r in caplog.records if "Unable to parse" in r.getMessage()], caplog.text
    assert {"PROFILE", "CONCEPTS", "SEED", "DEVICE", "ARTIFACTS"} <= set(params), sorted(params)


@pytest.mark.notebook
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_notebook_runs_and_writes_its_numbers(notebook):
    out_json = artifact_json(notebook, OUT)
    out_json.unlink(missing_ok=True)
    executed = run_notebook(notebook, OUT, profile="quick", seed=0, device="cpu", timeout=TIMEOUT_PER_CELL,
                            solutions=True)
    assert executed.is_file()
    assert out_json.is_file(), f"{notebook.name} did not write {out_json.name}"
    results = json.loads(out_json.read_text())
    assert results["profile"] == "quick"
    # every exercise was answered by its solution and its self-check said "correct"
    n = len(exercises(notebook))
    assert results["exercises"] == {f"{notebook.stem[:2]}.{i}": "correct" for i in range(1, n + 1)}
    CHECKS.get(notebook.stem, lambda r: None)(results)


def _tiny_notebook(path, body: str):
    """A two-cell notebook: the tagged parameters cell papermill fills, then ``body``."""
    cells = [{"cell_type": "code", "metadata": {"tags": ["parameters"]}, "execution_count": None, "outputs": [],
              "source": 'PROFILE = "quick"\nSEED = 0\nDEVICE = "cpu"\nARTIFACTS = "."'},
             {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": body}]
    path.write_text(json.dumps({"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                             "language": "python"}},
                                "nbformat": 4, "nbformat_minor": 5}))
    return path


def test_run_all_in_lanes_one_thread_each_and_reports_a_failure(tmp_path):
    from drclib.notebooks import run_all

    body = ('import json, os, pathlib\n'
            'pathlib.Path(ARTIFACTS, "{stem}.json").write_text(json.dumps({{"threads": os.environ.get("OMP_NUM_THREADS"), '
            '"profile": PROFILE}}))')
    books = [_tiny_notebook(tmp_path / f"{stem}.ipynb", body.format(stem=stem)) for stem in ("10_a", "11_b", "12_c")]
    out = tmp_path / "out"
    times = run_all(out, books=books, lanes=2, profile="full", device="cpu", timeout=120)
    assert set(times) == {b.name for b in books}
    for b in books:                           # each ran in its own process with one thread, with the parameters
        assert json.loads((out / f"{b.stem}.json").read_text()) == {"threads": "1", "profile": "full"}
        assert (out / "logs" / f"notebook_{b.stem}.log").is_file()
    bad = _tiny_notebook(tmp_path / "13_bad.ipynb", 'raise ValueError("on purpose")')
    with pytest.raises(RuntimeError, match="13_bad.ipynb.*notebook_13_bad.log"):
        run_all(out, books=[books[0], bad], lanes=2, device="cpu", timeout=120)
    assert (out / "10_a.json").is_file()      # the good one still ran
    with pytest.raises(ValueError, match="lanes"):
        run_all(out, books=books, lanes=0)
