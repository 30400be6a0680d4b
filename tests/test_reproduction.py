"""The quick reproduction (drclib.train.quick): DRC, its w/o-FusionNetwork ablation and Pigeon,
trained from scratch on the mini world inside the test suite, show the paper's direction.

The margins come from five seeds (benchmarks/quick_seeds.py, RESULTS.md section 6). This is the
suite's longest test (about 10 minutes on the 2-core CPU: two processes of one thread each)."""

import json

import pytest

from drclib.train.quick import LANES, MARGINS, ROWS, direction, merge, quick_reproduction_lanes


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


def lane(rows, seed=0, minutes=1.0):
    """A lane's result as quick_reproduction writes it (only what merge reads)."""
    return {"seed": seed, "threads": 1, "total_minutes": minutes, "concepts": "mini",
            "splits": {s: {r: {"n": 29, "both": 0.5} for r in rows} for s in ("sample", "heldout")},
            "pooled": {r: {"n": 58, "both": {"drc": 0.6}.get(r, 0.05),
                           "collapse_reference": {"pigeon": 0.5}.get(r, 0.05)} for r in rows},
            "minutes": {**{r: minutes for r in rows}, "evaluation": 0.1}, "direction_failures": ["partial"]}


def test_merge_joins_lanes_and_checks_the_direction_again():
    r = merge([lane(LANES[0], minutes=7.0), lane(LANES[1], minutes=5.0)])
    assert list(r["pooled"]) == list(ROWS) and set(r["splits"]["sample"]) == set(ROWS)
    assert r["direction_failures"] == [] and r["total_minutes"] == 7.0
    assert r["minutes"]["drc"] == 7.0 and r["minutes"]["pigeon"] == 5.0
    assert {"evaluation (lane 0)", "evaluation (lane 1)"} <= set(r["minutes"])
    assert merge([lane(("drc",))])["direction_failures"] == ["not every row was trained"]
    with pytest.raises(ValueError, match="different seeds"):
        merge([lane(LANES[0]), lane(LANES[1], seed=1)])
    with pytest.raises(ValueError, match="same row"):
        merge([lane(("drc", "concat")), lane(("drc", "pigeon"))])
    with pytest.raises(ValueError, match="every row"):
        quick_reproduction_lanes(0, lanes=(("drc",), ("pigeon",)))


@pytest.mark.reproduction
def test_quick_reproduction_shows_the_papers_direction(tmp_path):
    r = quick_reproduction_lanes(seed=0, out=tmp_path, progress=False)
    written = json.loads((tmp_path / "quick_reproduction.json").read_text())
    assert all(written["pooled"][row] == pytest.approx(r["pooled"][row]) for row in ROWS)
    assert set(r["pooled"]) == set(ROWS) and all(p["n"] >= 50 for p in r["pooled"].values())
    assert r["concepts"] == "mini"
    assert r["direction_failures"] == [], r["direction_failures"]
