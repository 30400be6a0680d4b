"""Concept sets (drclib.data.concepts) and sticker subsets: the rule, its stored ranking, the
held-out cells of a set, and the judges' restriction to a set."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch

from drclib.data import StickerSet, heldout_cells
from drclib.data import concepts as C


def test_stored_ranking_is_what_the_rule_computes(shipped_stickers):
    """data/concept_ranking.json must be reproducible from the code (python -m drclib.data.build --ranking)."""
    import json

    from drclib.data.stickers import data_dir

    stored = json.loads((data_dir() / C.RANKING_FILE).read_text())
    assert stored["images_digest"] == shipped_stickers.digest()
    assert stored["ranking"] == C.concept_ranking(shipped_stickers).tolist()
    assert stored["n_emoji"] == shipped_stickers.full_n_emoji
    for name in C.CONCEPT_SETS:   # without the images, the stored ranking names the same sets
        assert (C.concept_set(name) == C.concept_set(name, shipped_stickers)).all()


def test_sets_sizes_nesting_and_balance(shipped_stickers):
    mini, core, every = (C.concept_set(n, shipped_stickers) for n in ("mini", "core", "all"))
    assert len(mini) == 32 and len(core) == 128 and len(every) == shipped_stickers.n_emoji
    assert set(mini) <= set(core), "mini must sit inside core, so core's weights serve the quick profile"
    held = heldout_cells(shipped_stickers)
    for s in (mini, core):
        assert held[:, s].any(0).sum() == len(s) // 2, "half of a set's emoji have a held-out cell"
        assert (held[:, s].sum(0) <= 1).all()
    cats = collections.Counter(shipped_stickers.categories[e] for e in core)
    assert len(cats) == 7 and max(cats.values()) - min(cats.values()) <= 1, cats


def test_rule_excludes_glyphs_colours_flags_and_clocks(shipped_stickers):
    pool = set(C.candidates(shipped_stickers).tolist())
    names = shipped_stickers.names
    for i in C.concept_set("core", shipped_stickers):
        assert shipped_stickers.categories[i] not in ("Symbols", "Flags")
        assert shipped_stickers.subcategories[i] != "heart"
        assert not C.COLOUR_WORDS.search(names[i].lower()), names[i]
    assert shipped_stickers.emoji_index("red apple") not in pool
    assert shipped_stickers.emoji_index("blue book") not in pool
    assert not any("o’clock" in names[i] for i in pool)


def test_core_is_distinct_under_the_rule(shipped_stickers):
    """No two emoji of core find each other often in the rule's searches (over all candidates)."""
    pool = C.candidates(shipped_stickers)
    core = np.searchsorted(pool, C.concept_set("core", shipped_stickers))
    _, confusion = C.cross_style_retrieval(shipped_stickers, pool)
    both = (confusion + confusion.T)[np.ix_(core, core)]
    np.fill_diagonal(both, 0)
    assert both.max() < C.CONFUSABLE


def test_shape_descriptor_is_style_robust(shipped_stickers):
    """Within the chosen set, an emoji drawn by one artist finds itself among another's drawings
    far above chance."""
    score, _ = C.cross_style_retrieval(shipped_stickers, C.concept_set("core", shipped_stickers))
    assert score.mean() > 0.25 and score.mean() > 10 / 128


def test_unknown_set_and_bad_prefix(shipped_stickers):
    with pytest.raises(ValueError, match="unknown concept set"):
        C.concept_set("huge", shipped_stickers)
    with pytest.raises(ValueError, match="needs 2"):
        C.ranked_prefix(1, shipped_stickers)


def test_subset_keeps_global_indices_and_heldout_cells(shipped_stickers):
    core = shipped_stickers.subset("core")
    assert core.n_emoji == 128 and core.concept_name == "core" and core.full_n_emoji == shipped_stickers.n_emoji
    assert np.array_equal(core.images, shipped_stickers.images[:, core.concepts])
    assert core.names[5] == shipped_stickers.names[core.concepts[5]]
    assert np.array_equal(heldout_cells(core), heldout_cells(shipped_stickers)[:, core.concepts])
    mini = StickerSet.load(concepts="mini")
    pos = np.searchsorted(core.concepts, mini.concepts)
    assert np.array_equal(heldout_cells(mini), heldout_cells(core)[:, pos]), "mini's held-out cells are core's"
    sub = core.subset([0, 3, 7])
    assert sub.concept_name == "custom" and list(sub.concepts) == list(core.concepts[[0, 3, 7]])
    assert "concept set 'core'" in repr(core)


def test_dataset_holds_out_the_worlds_cells_on_a_concept_set(shipped_stickers):
    """The users, samples and triplets of a concept set avoid the same cells the tokenizer,
    judges, encoder and LMM never train on (the whole array's held-out cells restricted to the
    set), and the ``heldout`` split tests exactly those cells: a rule of its own on the set's
    ``[6, K]`` grid would test cells the backbone trained on and train DRC on cells it never saw."""
    from drclib.data import make_dataset

    for name in ("mini", "core"):
        stickers = shipped_stickers.subset(name)
        world = heldout_cells(stickers)
        data = make_dataset(stickers, "quick" if name == "mini" else "full", seed=1, n_heldout_test=None)
        assert np.array_equal(data.heldout_cells, world), name
        assert not any(world[s, e] for u in data.users for s, e in u.sequence), "no user draws a held-out cell"
        assert not world[data.triplets.anchor[:, 0], data.triplets.anchor[:, 1]].any()
        test = data.samples.target[data.splits["heldout"].test]
        assert sorted(map(tuple, test.tolist())) == sorted(map(tuple, np.argwhere(world).tolist())), name


def test_subset_bad_input(shipped_stickers):
    with pytest.raises(ValueError, match="distinct"):
        shipped_stickers.subset([1, 1, 2])
    with pytest.raises(ValueError, match="at least 2"):
        shipped_stickers.subset([4])
    with pytest.raises(ValueError, match="whole array"):
        shipped_stickers.subset("core").subset("mini")


def test_profiles_pick_their_set():
    assert StickerSet.for_profile("quick").concept_name == "mini"
    assert StickerSet.for_profile("full").concept_name == "core"


def test_judge_restricted_to_a_set(shipped_stickers):
    from drclib import judges

    core = shipped_stickers.subset("core")
    full = judges.load_default("emoji_classifier")
    style, emoji = judges.load_judges(core)
    assert emoji.config.num_classes == 128 and style.config.num_classes == 6
    x = core.batch(np.array([[0, 0], [2, 5], [4, 100]]), as_torch=True)
    want = full.predict_proba(x)[:, torch.from_numpy(core.concepts)].argmax(1)
    assert torch.equal(emoji.predict(x), want), "argmax over the set, numbered as the set numbers its emoji"
    assert style is style.restricted(core.concepts)
    twice = emoji.restricted(core.concepts[[5, 2]])
    assert twice.config.num_classes == 2
    with pytest.raises(ValueError, match="does not know"):
        emoji.restricted([int(core.concepts[0]), int(np.setdiff1d(np.arange(1370), core.concepts)[0])])
