"""drclib.figures: every figure README and RESULTS quote matches its source file, and the
check catches a figure that drifted."""

import json

import pytest

from drclib import figures
from drclib.paths import repo_root


@pytest.mark.parametrize("doc", figures.DOCUMENTS)
def test_documented_figures_match_their_sources(doc):
    path = repo_root() / doc
    assert figures.stale(path) == []
    n_figs, n_tables = figures.count(path)
    assert n_figs + n_tables > 0, f"{doc} quotes no figure from a source"


def test_results_carries_the_evaluation_tables():
    _, n_tables = figures.count(repo_root() / "RESULTS.md")
    assert n_tables >= 4          # ground truth and the paper's columns, both splits


@pytest.fixture
def fake_root(tmp_path):
    src = tmp_path / figures.SOURCES["eval"]
    src.parent.mkdir(parents=True)
    src.write_text(json.dumps({"splits": {"sample": {"drc": {"n": 200, "ground_truth": {"both": 0.35}}}}}))
    figures._load.cache_clear()
    yield tmp_path
    figures._load.cache_clear()


def test_a_drifted_figure_is_caught_and_rewritten(fake_root):
    doc = fake_root / "DOC.md"
    doc.write_text("both: <!--fig eval:splits.sample.drc.ground_truth.both|rate-->0.400 ± 0.035<!--/fig-->, "
                   "or <!--fig eval:splits.sample.drc.ground_truth.both|pct-->35%<!--/fig-->\n")
    bad = figures.stale(doc, root=fake_root)
    assert len(bad) == 1 and "0.350 ± 0.034" in bad[0]
    fixed = figures.refresh(doc.read_text(), root=fake_root)
    assert "0.350 ± 0.034" in fixed and "0.400" not in fixed
    doc.write_text(fixed)
    assert figures.stale(doc, root=fake_root) == []


def test_formats_and_bad_keys(fake_root):
    key = "eval:splits.sample.drc.ground_truth.both"
    assert [figures.figure(key, f, fake_root) for f in ("pct", "pct1", "pctse", "f2")] == ["35%", "35.0%", "35% ± 3", "0.35"]
    with pytest.raises(KeyError, match="no 'nope'"):
        figures.figure("eval:splits.nope", None, fake_root)
    with pytest.raises(KeyError, match="unknown figure source"):
        figures.figure("elsewhere:a", None, fake_root)
    with pytest.raises(ValueError, match="unknown figure format"):
        figures.render(0.5, "bogus")
    with pytest.raises(FileNotFoundError, match="missing"):
        figures.figure("scaling:rows", None, fake_root)
