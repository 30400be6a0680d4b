"""drclib.data.users: users, samples, splits and triplets keep their promises."""

import numpy as np
import pytest

from drclib.data import make_dataset
from drclib.data.splits import choose_heldout_cells
from drclib.data.users import (INSTRUCTIONS, PAD, make_samples, make_triplets,
                               make_users, split_indices)


@pytest.fixture(scope="module")
def data(tiny_stickers):
    return make_dataset(tiny_stickers, "quick", seed=3)


def test_deterministic_given_seed(tiny_stickers, data):
    again = make_dataset(tiny_stickers, "quick", seed=3)
    other = make_dataset(tiny_stickers, "quick", seed=4)
    for name in ("history", "target", "references", "text", "user"):
        assert np.array_equal(getattr(data.samples, name), getattr(again.samples, name))
    assert np.array_equal(data.splits["sample"].train, again.splits["sample"].train)
    assert np.array_equal(data.triplets.pos_sem, again.triplets.pos_sem)
    assert not np.array_equal(data.samples.target, other.samples.target)


def test_users_prefer_one_style_balanced_with_noise(data, tiny_stickers):
    styles = np.bincount([u.style for u in data.users], minlength=6)
    assert styles.max() - styles.min() <= 1
    for u in data.users:
        assert len(np.unique(u.sequence[:, 1])) == len(u.sequence)  # no emoji twice
        assert 0.0 <= u.noise <= 0.4
    # realised noise follows each user's noise level (a few users are unlucky)
    assert np.corrcoef([u.noise for u in data.users], [u.noise_rate() for u in data.users])[0, 1] > 0.3
    assert 0.05 < np.mean([u.noise_rate() for u in data.users]) < 0.4
    assert any(u.lean for u in data.users)


def test_lean_pulls_items_to_categories(tiny_stickers):
    rng = np.random.default_rng(0)
    users = make_users(tiny_stickers, 60, 10, rng=rng, lean_probability=1.0, lean_strength=20.0)
    assert all(u.lean for u in users)
    cats = np.array(tiny_stickers.categories)
    share = np.mean([np.isin(cats[u.sequence[:, 1]], u.lean).mean() for u in users])
    base = np.mean([np.isin(cats, u.lean).mean() for u in users])
    assert share > base + 0.3


def test_every_sample_keeps_its_promises(data):
    s = data.samples
    assert s.history.shape[1:] == (5, 2) and s.references.shape[1:] == (5, 2)
    assert (s.target[:, 0] == s.style).all()                                    # target in user's style
    assert not (s.history[:, :, 1] == s.target[:, None, 1]).any()                # not in history
    refs = s.references
    ok = refs[:, :, 0] != PAD
    assert (refs[:, :, 1][ok] == np.repeat(s.target[:, 1:], 5, axis=1)[ok]).all()  # same emoji
    assert (refs[:, :, 0] != s.target[:, None, 0]).all()                           # other styles
    assert set(s.text) <= set(INSTRUCTIONS)
    one = s[0]
    assert len(one.references) == ok[0].sum() and one.text in INSTRUCTIONS
    assert s[-1].index == len(s) - 1
    with pytest.raises(IndexError):
        s[len(s)]


def test_history_is_a_sliding_window_of_the_user_sequence(data):
    s = data.samples
    first_heldout = int(data.splits["heldout"].test[0])  # held-out samples come last
    for i in range(0, first_heldout, 7):
        seq = data.users[s.user[i]].sequence
        t = next(t for t in range(5, len(seq)) if (seq[t] == s.target[i]).all())
        assert np.array_equal(seq[t - 5:t], s.history[i])
    for i in data.splits["heldout"].test:  # their history is the user's last five items
        assert np.array_equal(data.users[s.user[i]].sequence[-5:], s.history[i])


def test_sample_split_is_8_1_1_and_disjoint(data):
    sp = data.splits["sample"]
    n = len(sp.train) + len(sp.val) + len(sp.test)
    assert len(set(sp.train) | set(sp.val) | set(sp.test)) == n
    assert abs(len(sp.train) / n - 0.8) < 0.05 and len(sp.val) >= 1 and len(sp.test) >= 1
    with pytest.raises(KeyError):
        sp["dev"]


def test_heldout_cells_appear_in_no_training_data(data):
    H = data.heldout_cells
    assert H.sum() >= 6 and (H.sum(axis=0) <= 1).all()         # at most one style per emoji
    seen = np.concatenate([u.sequence for u in data.users])
    assert not H[seen[:, 0], seen[:, 1]].any()
    for part in ("train", "val"):
        tr = data.samples.take(data.splits["heldout"][part])
        cells = np.concatenate([tr.history.reshape(-1, 2), tr.target, tr.references.reshape(-1, 2)])
        cells = cells[cells[:, 0] != PAD]
        assert not H[cells[:, 0], cells[:, 1]].any()
    for arr in (data.triplets.anchor, data.triplets.pos_style, data.triplets.pos_sem):
        assert not H[arr[:, 0], arr[:, 1]].any()
    test = data.samples.take(data.splits["heldout"].test)
    assert H[test.target[:, 0], test.target[:, 1]].all()        # the test asks for exactly them
    assert (test.references[:, :, 0] != PAD).all()               # with all five references
    assert not (test.history[:, :, 1] == test.target[:, None, 1]).any()


def test_triplets_are_ground_truth(data):
    t = data.triplets
    assert len(t) == data.profile.n_triplets
    assert (t.pos_style[:, 0] == t.anchor[:, 0]).all() and (t.pos_style[:, 1] != t.anchor[:, 1]).all()
    assert (t.pos_sem[:, 1] == t.anchor[:, 1]).all() and (t.pos_sem[:, 0] != t.anchor[:, 0]).all()


def test_summary_and_overrides(tiny_stickers, data):
    s = data.summary()
    assert s["users"] == 40 and s["samples"] == len(data.samples) and s["triplets"] == 400
    assert s["splits"]["heldout"]["test"] == len(data.splits["heldout"].test)
    small = make_dataset(tiny_stickers, "quick", seed=0, history_length=3, n_users=12)
    assert small.samples.history.shape[1] == 3 and len(small.users) == 12


def test_draw_reference_only_draws_usable_ones(data):
    rng = np.random.default_rng(0)
    i = int(np.flatnonzero((data.samples.references[:, :, 0] == PAD).any(axis=1))[0]) \
        if (data.samples.references[:, :, 0] == PAD).any() else 0
    for _ in range(20):
        r = data.samples.draw_reference(i, rng)
        assert r[0] != PAD and not data.heldout_cells[r[0], r[1]]


@pytest.mark.parametrize("kwargs, msg", [
    (dict(n_users=0), "n_users"),
    (dict(sequence_length=0), "sequence_length"),
    (dict(sequence_length=10_000), "sequence_length"),
    (dict(noise_range=(0.5, 0.1)), "noise_range"),
    (dict(noise_range=(0.0, 1.5)), "noise_range"),
    (dict(lean_strength=0.5), "lean_strength"),
])
def test_make_users_rejects_bad_sizes(tiny_stickers, kwargs, msg):
    args = dict(n_users=5, sequence_length=8) | kwargs
    with pytest.raises(ValueError, match=msg):
        make_users(tiny_stickers, rng=np.random.default_rng(0), **args)


def test_other_bad_inputs(tiny_stickers):
    rng = np.random.default_rng(0)
    users = make_users(tiny_stickers, 6, 4, rng=rng)
    with pytest.raises(ValueError, match="no samples"):
        make_samples(users, 6, history_length=5, rng=rng)
    with pytest.raises(ValueError, match="history_length"):
        make_samples(users, 6, history_length=0, rng=rng)
    with pytest.raises(ValueError, match="no users"):
        make_samples([], 6, history_length=5, rng=rng)
    with pytest.raises(ValueError, match="at least 3 items"):
        split_indices(2, rng)
    with pytest.raises(ValueError, match="ratios"):
        split_indices(10, rng, ratios=(1, -1, 1))
    with pytest.raises(ValueError, match="hold out"):
        choose_heldout_cells(6, 10, 11, rng)
    with pytest.raises(ValueError, match="n_triplets"):
        make_triplets(np.array([[0, 0]]), 6, 10, -1, rng=rng)
    with pytest.raises(ValueError, match="unknown profile"):
        make_dataset(tiny_stickers, "huge")
    with pytest.raises(TypeError):
        make_dataset(tiny_stickers, "quick", not_a_field=1)


def test_split_indices_small_and_exact():
    a, b, c = split_indices(3, np.random.default_rng(0))
    assert sorted(np.concatenate([a, b, c]).tolist()) == [0, 1, 2] and len(b) == len(c) == 1
    a, b, c = split_indices(100, np.random.default_rng(0))
    assert (len(a), len(b), len(c)) == (80, 10, 10)


def test_heldout_cells_do_not_depend_on_profile_or_seed(tiny_stickers, data):
    from drclib.data import heldout_cells

    fixed = heldout_cells(tiny_stickers)
    assert fixed.sum() == 60 and (fixed.sum(axis=0) <= 1).all()         # half the emoji, one style each
    assert np.array_equal(data.heldout_cells, fixed)
    assert np.array_equal(make_dataset(tiny_stickers, "quick", seed=99).heldout_cells, fixed)
    assert len(data.splits["heldout"].test) == data.profile.n_heldout_test == 24
    every = make_dataset(tiny_stickers, "quick", seed=3, n_heldout_test=None)
    assert len(every.splits["heldout"].test) == fixed.sum()             # one sample per cell
