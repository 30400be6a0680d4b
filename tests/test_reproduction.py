"""The quick reproduction (drclib.train.quick): DRC, its w/o-FusionNetwork ablation and Pigeon,
trained from scratch on the mini world inside the test suite, show the paper's direction.

The margins come from five seeds (benchmarks/quick_seeds.py, RESULTS.md section 6). This is the
suite's longest test (about 7 minutes on the 2-core CPU)."""

import json

import pytest

from drclib.train.quick import MARGINS, ROWS, direction, quick_reproduction


def fake(drc_both, pigeon_both, concat_both, drc_collapse, pigeon_collapse):
    row = lambda both, col: {"n": 58, "both": both, "collapse_reference": col}  # noqa: E731
    return {"pooled": {"drc": row(drc_both, drc_collapse), "pigeon": row(pigeon_both, pigeon_collapse),
                       "concat": row(concat_both, 0.3)}}


def test_direction_names_each_failed_check():
    assert direction(fake(0.6, 0.05, 0.05, 0.05, 0.5)) == []
    bad = direction(fake(0.1, 0.05, 0.05, 0.05, 0.5))
    assert len(bad) == 2 and "Pigeon's" in bad[0] and "FusionNetwork" in bad[1]
    assert "collapse" in direction(fake(0.6, 0.05, 0.05, 0.48, 0.5))[0]
    assert direction(fake(0.6, 0.05, 0.05, 0.48, 0.5), margins={"collapse_vs_pigeon": 0.0}) == []
    assert set(MARGINS) == {"both_vs_pigeon", "both_vs_concat", "collapse_vs_pigeon"}


@pytest.mark.reproduction
def test_quick_reproduction_shows_the_papers_direction(tmp_path):
    r = quick_reproduction(seed=0, out=tmp_path, progress=False)
    written = json.loads((tmp_path / "quick_reproduction.json").read_text())
    assert all(written["pooled"][row] == pytest.approx(r["pooled"][row]) for row in ROWS)
    assert set(r["pooled"]) == set(ROWS) and all(p["n"] >= 50 for p in r["pooled"].values())
    assert r["concepts"] == "mini"
    assert r["direction_failures"] == [], r["direction_failures"]
