"""drclib.drc.contrastive: style statistics, mining, precision against the ground truth, triplets."""

import numpy as np
import pytest
import torch

from drclib.drc.contrastive import (EXTRACTORS, channel_stats, chance_precision, colour_extractor, get_extractor,
                                gram_stats, mine_positive_style, mined_triplets, mining_precision, mining_table,
                                positive_semantic, style_distance, style_statistics, vgg_extractor)
from drclib.data.users import Triplets


def test_channel_and_gram_statistics():
    f = torch.randn(3, 4, 5, 5)
    s = channel_stats(f)
    assert s.shape == (3, 8)
    torch.testing.assert_close(s[:, :4], f.flatten(2).mean(-1))
    g = gram_stats(f)
    assert g.shape == (3, 10)
    full = f.flatten(2) @ f.flatten(2).transpose(1, 2) / 25
    torch.testing.assert_close(g[:, 0], full[:, 0, 0])
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        channel_stats(torch.randn(3, 4))


def test_statistics_ignore_the_drawing_and_see_the_palette():
    """Two images with one palette but shapes moved around have equal colour statistics."""
    a = torch.zeros(1, 3, 8, 8)
    a[:, 0, :4] = 1
    b = a.flip(-1).flip(-2)
    c = torch.zeros(1, 3, 8, 8)
    c[:, 2, :4] = 1
    stats = style_statistics(colour_extractor()[0], torch.cat([a, b, c]))
    d = style_distance(stats, stats)
    assert d[0, 1] < 1e-6 < d[0, 2]


def test_style_statistics_bad_input():
    ext = colour_extractor()[0]
    with pytest.raises(ValueError, match="kind"):
        style_statistics(ext, torch.rand(2, 3, 8, 8), kind="fourier")
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        style_statistics(ext, torch.rand(2, 8, 8))
    with pytest.raises(ValueError, match="no images"):
        style_statistics(ext, torch.rand(0, 3, 8, 8))


def test_mining_returns_nearest_and_respects_exclusion():
    pool = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
    anchors = torch.tensor([[0.1, 0.0]])
    assert mine_positive_style(anchors, pool, 2).tolist() == [[0, 1]]
    assert mine_positive_style(anchors, pool, 1, exclude=np.array([[True, False, False]])).tolist() == [[1]]
    with pytest.raises(ValueError, match="pool size"):
        mine_positive_style(anchors, pool, 4)


def test_mining_precision_counts_style_hits_with_another_emoji():
    anchors = np.array([[0, 1], [2, 3]])
    pool = np.array([[0, 5], [0, 1], [2, 3], [1, 3], [2, 9]])
    mined = np.array([[0, 1], [4, 3]])       # anchor 0: hit, same cell (miss); anchor 1: hit, other style
    r = mining_precision(anchors, pool, mined)
    assert r["precision"] == 0.5 and r["same_emoji"] == 0.5 and r["k"] == 2


def test_mining_table_on_real_stickers_beats_chance(shipped_stickers):
    """Colour statistics alone find the anchor's artist well above chance on the real set."""
    rng = np.random.default_rng(0)
    cells = np.stack(np.meshgrid(np.arange(6), np.arange(shipped_stickers.n_emoji), indexing="ij"), -1)
    cells = cells.reshape(-1, 2)
    anchors, pool = cells[rng.choice(len(cells), 40, replace=False)], cells[rng.choice(len(cells), 300, replace=False)]
    rows = mining_table(shipped_stickers, anchors, pool, k=3, extractors=("colour",))
    assert [(r["extractor"], r["statistics"]) for r in rows] == [("colour", "meanstd"), ("colour", "gram")]
    assert all(r["backend"] == "pixels (RGB)" for r in rows)
    chance = chance_precision(anchors, pool)
    assert 0.1 < chance < 0.25
    assert rows[0]["precision"] > chance + 0.1


def test_pretrained_vgg_absent_is_reported_not_faked(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    ext, note = vgg_extractor(pretrained=True)
    assert ext is None and "absent" in note
    ext, note = get_extractor("vgg_random")
    maps = ext(torch.rand(2, 3, 32, 32))
    assert [m.shape[1] for m in maps] == [64, 128, 256]
    with pytest.raises(ValueError, match="unknown extractor"):
        get_extractor("sift")
    assert "vgg_pretrained" in EXTRACTORS


def test_positive_semantic_is_same_emoji_other_style_and_never_blocked():
    blocked = np.zeros((6, 10), bool)
    blocked[3, :] = True
    cells = np.array([[0, 1], [2, 4], [5, 9]] * 10)
    out = positive_semantic(cells, blocked, np.random.default_rng(0))
    assert (out[:, 1] == cells[:, 1]).all() and (out[:, 0] != cells[:, 0]).all() and (out[:, 0] != 3).all()
    blocked[:, 1] = True
    blocked[0, 1] = False
    with pytest.raises(ValueError, match="no other usable style"):
        positive_semantic(np.array([[0, 1]]), blocked, np.random.default_rng(0))


def test_mined_triplets_replace_only_the_positive_style(tiny_stickers):
    t = Triplets(np.array([[0, 1], [1, 2], [0, 1]]), np.array([[0, 3], [1, 4], [0, 5]]),
                 np.array([[2, 1], [3, 2], [4, 1]]))
    pool = np.stack([np.repeat(np.arange(6), 10), np.tile(np.arange(10), 6)], 1)
    m = mined_triplets(tiny_stickers, t, colour_extractor()[0], pool)
    np.testing.assert_array_equal(m.anchor, t.anchor)
    np.testing.assert_array_equal(m.pos_sem, t.pos_sem)
    np.testing.assert_array_equal(m.pos_style[0], m.pos_style[2])          # same anchor, same mined image
    assert not (m.pos_style == m.anchor).all(1).any()                       # never the anchor itself
