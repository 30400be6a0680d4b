"""Simulated users, personalization samples, splits and stage-1 triplets.

The paper personalises stickers for SER30K users; we simulate users over the sticker set so
that every quantity has a ground truth (design: ``DESIGN.md``, "The data"):

- A **user** prefers one style. Their interaction sequence is mostly in that style, with a
  per-user *noise* fraction of items in other styles (the liked and disliked features mixed
  in one history), and their emoji may *lean* to one or two categories. A user never sees
  the same emoji twice.
- A **sample** is a sliding window over a sequence, as in Pigeon: N = 5 history items, then
  the target, an item in the user's style whose emoji is not in the history. Its references
  are the target emoji in the other styles (the semantic-preserving set R, the analog of the
  paper's SDXL re-renderings), and its text is a generic instruction.
- Two **splits**. ``"sample"``: the samples split 8:1:1 at random. ``"heldout"``: whole
  (style, emoji) cells are held out from every training stage (no user ever interacted with
  them, no triplet and no reference uses them); its test samples ask for exactly those cells,
  so the model must compose a style and an emoji it never saw together. Both splits share
  their train and val samples, so one training run serves both. The held-out cells are part
  of the data's definition, like a benchmark's test set: :func:`heldout_cells` fixes them
  with its own seed, whatever the profile or the notebook's ``SEED``, so the shipped
  tokenizer, backbone and evaluators (trained without them) fit every run.
- **Triplets** ``<anchor, positive-style, positive-semantic>`` for stage 1: the anchor is an
  item someone interacted with, the positive-style image has its style and another emoji, the
  positive-semantic image its emoji in another style.

Cells are ``(style, emoji)`` integer pairs; arrays of them have a last axis of 2. Everything is
deterministic given the seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import numpy as np
from drclib.config import Profile, get_profile
from drclib.data.splits import _check_stickers, heldout_cells
from drclib.data.stickers import StickerSet


INSTRUCTIONS = (
    "Create a sticker for me.",
    "Make me a new sticker like this.",
    "Draw this as a sticker I would like.",
    "Generate a sticker that suits my taste.",
)
"""Generic text instructions; a sample's text is one of these (the reference carries the
semantics, the history the style)."""

PAD = -1
"""Fills a reference slot that is not usable (a held-out cell)."""


@dataclass(frozen=True)
class User:
    """One simulated user."""

    user_id: int
    style: int
    """The preferred style (index into ``StickerSet.styles``)."""
    noise: float
    """Probability that an interaction is in another style."""
    lean: tuple[str, ...]
    """Categories this user's emoji lean to (may be empty)."""
    sequence: np.ndarray = field(repr=False)
    """``[L, 2]`` (style, emoji) cells in the order the user interacted with them."""

    def noise_rate(self) -> float:
        """The realised share of interactions outside the preferred style."""
        return float(np.mean(self.sequence[:, 0] != self.style)) if len(self.sequence) else 0.0


@dataclass(frozen=True)
class Sample:
    """One personalization sample (a row of :class:`Samples`)."""

    index: int
    user: int
    style: int
    history: np.ndarray
    target: np.ndarray
    references: np.ndarray
    """``[k, 2]`` usable references (held-out cells already dropped)."""
    text: str


@dataclass
class Samples:
    """Personalization samples stored column by column (cheap to index and to batch)."""

    user: np.ndarray        # [M]
    style: np.ndarray       # [M] the user's preferred style (= target style)
    history: np.ndarray     # [M, N, 2]
    target: np.ndarray      # [M, 2]
    references: np.ndarray  # [M, S-1, 2], PAD where unusable
    text: np.ndarray        # [M] str

    def __post_init__(self):
        m = len(self.user)
        for name in ("style", "history", "target", "references", "text"):
            if len(getattr(self, name)) != m:
                raise ValueError(f"Samples.{name} has {len(getattr(self, name))} rows, expected {m}")

    def __len__(self) -> int:
        return len(self.user)

    def __getitem__(self, i: int) -> Sample:
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"sample {i} out of range: there are {len(self)}")
        i %= len(self)
        refs = self.references[i]
        return Sample(index=i, user=int(self.user[i]), style=int(self.style[i]),
                      history=self.history[i], target=self.target[i],
                      references=refs[refs[:, 0] != PAD], text=str(self.text[i]))

    def take(self, idx: np.ndarray) -> "Samples":
        """The samples at the given indices, as a new :class:`Samples`."""
        idx = np.asarray(idx, dtype=np.int64)
        return Samples(**{k: getattr(self, k)[idx] for k in
                          ("user", "style", "history", "target", "references", "text")})

    @property
    def history_length(self) -> int:
        return self.history.shape[1]

    def draw_reference(self, i: int, rng: np.random.Generator) -> np.ndarray:
        """One usable reference of sample ``i`` drawn at random (stage-2 training)."""
        refs = self[i].references
        return refs[rng.integers(len(refs))]


@dataclass(frozen=True)
class Split:
    """Train / val / test indices into a :class:`Samples`."""

    name: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}

    def __getitem__(self, part: str) -> np.ndarray:
        if part not in ("train", "val", "test"):
            raise KeyError(f"split part must be 'train', 'val' or 'test', got {part!r}")
        return getattr(self, part)


@dataclass
class Triplets:
    """Stage-1 triplets, each array ``[T, 2]`` of (style, emoji) cells."""

    anchor: np.ndarray
    pos_style: np.ndarray
    """Same style as the anchor, another emoji."""
    pos_sem: np.ndarray
    """Same emoji as the anchor, another style."""

    def __len__(self) -> int:
        return len(self.anchor)


@dataclass
class PersonalizationData:
    """Everything :func:`make_dataset` builds, deterministic given (profile, seed)."""

    profile: Profile
    seed: int
    users: list[User]
    samples: Samples
    splits: dict[str, Split]
    triplets: Triplets
    heldout_cells: np.ndarray
    """bool ``[n_styles, n_emoji]``: cells no training stage may use."""

    @property
    def items(self) -> np.ndarray:
        """The distinct (style, emoji) cells some user interacted with, ``[I, 2]``."""
        cells = np.concatenate([u.sequence for u in self.users])
        return np.unique(cells, axis=0)

    def summary(self) -> dict:
        """Sizes in the shape of the paper's Table 1, plus the splits."""
        return {
            "users": len(self.users),
            "items": int(len(self.items)),
            "interactions": int(sum(len(u.sequence) for u in self.users)),
            "samples": len(self.samples),
            "triplets": len(self.triplets),
            "heldout_cells": int(self.heldout_cells.sum()),
            "mean_noise_rate": float(np.mean([u.noise_rate() for u in self.users])),
            "splits": {name: s.sizes() for name, s in self.splits.items()},
        }


def make_users(stickers: StickerSet, n_users: int, sequence_length: int, *,
               rng: np.random.Generator, heldout_cells: np.ndarray | None = None,
               noise_range: tuple[float, float] = (0.0, 0.4), lean_probability: float = 0.7,
               lean_strength: float = 6.0) -> list[User]:
    """Simulate ``n_users`` users, preferred styles balanced over the styles.

    Each interaction is in the user's style with probability ``1 - noise`` (else another style
    at random); its emoji is drawn without repetition, with weight ``lean_strength`` for emoji
    in the user's leaned-to categories and 1 otherwise. Held-out cells are never drawn.
    """
    n_styles, n_emoji = _check_stickers(stickers)
    if n_users < 1:
        raise ValueError(f"n_users must be at least 1, got {n_users}")
    if not 1 <= sequence_length <= n_emoji:
        raise ValueError(f"sequence_length must be in 1..{n_emoji}, got {sequence_length}")
    lo, hi = noise_range
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"noise_range must satisfy 0 <= low <= high <= 1, got {noise_range}")
    if lean_strength < 1.0:
        raise ValueError(f"lean_strength must be >= 1, got {lean_strength}")
    blocked = np.zeros((n_styles, n_emoji), bool) if heldout_cells is None else heldout_cells
    categories = np.array(stickers.categories)
    # categories with too few emoji to lean to (Flags has 5) are skipped
    leanable = [c for c in stickers.category_names if (categories == c).sum() >= 2 * sequence_length]
    styles = rng.permutation(np.arange(n_users) % n_styles)
    users = []
    for uid in range(n_users):
        style = int(styles[uid])
        noise = float(rng.uniform(lo, hi))
        lean: tuple[str, ...] = ()
        if leanable and rng.random() < lean_probability:
            k = min(len(leanable), int(rng.integers(1, 3)))
            lean = tuple(sorted(rng.choice(leanable, size=k, replace=False).tolist()))
        weights = np.where(np.isin(categories, lean), lean_strength, 1.0)
        used = np.zeros(n_emoji, dtype=bool)
        seq = np.empty((sequence_length, 2), dtype=np.int64)
        for t in range(sequence_length):
            s = style
            if rng.random() < noise:
                s = int(rng.choice([x for x in range(n_styles) if x != style]))
            w = np.where(used | blocked[s], 0.0, weights)
            if w.sum() == 0:
                raise ValueError("no emoji left to draw: sequence_length is too long for this set")
            e = int(rng.choice(n_emoji, p=w / w.sum()))
            used[e] = True
            seq[t] = (s, e)
        users.append(User(uid, style, noise, lean, seq))
    return users


def _references(target: np.ndarray, n_styles: int, blocked: np.ndarray | None) -> np.ndarray:
    """The target emoji in every other style, PAD where the cell is held out."""
    s, e = int(target[0]), int(target[1])
    refs = np.array([(x, e) for x in range(n_styles) if x != s], dtype=np.int64)
    if blocked is not None:
        refs[blocked[refs[:, 0], refs[:, 1]]] = PAD
    return refs


def make_samples(users: list[User], n_styles: int, history_length: int, *,
                 rng: np.random.Generator, heldout_cells: np.ndarray | None = None) -> Samples:
    """Sliding windows of ``history_length + 1`` over each user's sequence, kept where the last
    item (the target) is in the user's style. References are the target emoji in the other
    styles (held-out cells padded out)."""
    if history_length < 1:
        raise ValueError(f"history_length must be at least 1, got {history_length}")
    if not users:
        raise ValueError("no users: make_users first")
    rows = []
    for u in users:
        for t in range(history_length, len(u.sequence)):
            if u.sequence[t, 0] == u.style:
                rows.append((u.user_id, u.style, u.sequence[t - history_length:t], u.sequence[t]))
    if not rows:
        raise ValueError(f"no samples: sequences must be longer than history_length={history_length}")
    return _pack(rows, n_styles, heldout_cells, rng)


def _pack(rows, n_styles, blocked, rng) -> Samples:
    texts = np.array(INSTRUCTIONS)[rng.integers(len(INSTRUCTIONS), size=len(rows))]
    return Samples(
        user=np.array([r[0] for r in rows], dtype=np.int64),
        style=np.array([r[1] for r in rows], dtype=np.int64),
        history=np.stack([r[2] for r in rows]).astype(np.int64),
        target=np.stack([r[3] for r in rows]).astype(np.int64),
        references=np.stack([_references(r[3], n_styles, blocked) for r in rows]),
        text=texts,
    )


def make_heldout_samples(users: list[User], heldout_cells: np.ndarray, history_length: int, *,
                         rng: np.random.Generator, n_samples: int | None = None) -> Samples:
    """Test samples for held-out cells (style s, emoji e): a user who prefers s, their last
    ``history_length`` items as history (none of them emoji e), and target (s, e). One per
    cell, or ``n_samples`` cells drawn at random."""
    n_styles = heldout_cells.shape[0]
    by_style = {s: [u for u in users if u.style == s] for s in range(n_styles)}
    cells = np.argwhere(heldout_cells)
    if n_samples is not None and n_samples < len(cells):
        if n_samples < 1:
            raise ValueError(f"n_samples must be at least 1, got {n_samples}")
        cells = cells[np.sort(rng.choice(len(cells), size=n_samples, replace=False))]
    rows = []
    for s, e in cells:
        candidates = [u for u in by_style[int(s)] if len(u.sequence) >= history_length
                      and e not in u.sequence[-history_length:, 1]]
        if not candidates:
            continue
        u = candidates[int(rng.integers(len(candidates)))]
        rows.append((u.user_id, u.style, u.sequence[-history_length:], np.array([s, e])))
    if not rows:
        raise ValueError("no held-out samples could be made: too few users per style")
    return _pack(rows, n_styles, heldout_cells, rng)


def split_indices(n: int, rng: np.random.Generator, ratios=(8, 1, 1)) -> tuple[np.ndarray, ...]:
    """Shuffle ``range(n)`` and cut it into parts in the given ratios (default 8:1:1).
    Every part gets at least one index when ``n >= len(ratios)``."""
    ratios = np.asarray(ratios, dtype=float)
    if (ratios < 0).any() or ratios.sum() <= 0:
        raise ValueError(f"ratios must be non-negative with a positive sum, got {ratios.tolist()}")
    if n < len(ratios):
        raise ValueError(f"need at least {len(ratios)} items to split, got {n}")
    sizes = np.floor(ratios / ratios.sum() * n).astype(int)
    sizes = np.maximum(sizes, (ratios > 0).astype(int))
    sizes[0] = n - sizes[1:].sum()
    perm = rng.permutation(n)
    return tuple(np.sort(p) for p in np.split(perm, np.cumsum(sizes)[:-1]))


def make_triplets(items: np.ndarray, n_styles: int, n_emoji: int, n_triplets: int, *,
                  rng: np.random.Generator, heldout_cells: np.ndarray | None = None) -> Triplets:
    """``n_triplets`` ground-truth triplets: anchors drawn from ``items`` (cells users
    interacted with), positive-style = same style and another emoji, positive-semantic = same
    emoji and another style; no slot uses a held-out cell."""
    if n_triplets < 0:
        raise ValueError(f"n_triplets must be >= 0, got {n_triplets}")
    blocked = np.zeros((n_styles, n_emoji), bool) if heldout_cells is None else heldout_cells
    items = np.asarray(items)
    items = items[~blocked[items[:, 0], items[:, 1]]]
    if len(items) == 0 and n_triplets:
        raise ValueError("no usable anchor items for triplets")
    anchor = items[rng.integers(len(items), size=n_triplets)] if n_triplets else np.empty((0, 2), np.int64)
    pos_style = np.empty_like(anchor)
    pos_sem = np.empty_like(anchor)
    for t, (s, e) in enumerate(anchor):
        ok = np.flatnonzero(~blocked[s])
        ok = ok[ok != e]
        pos_style[t] = (s, ok[rng.integers(len(ok))])
        ok = np.flatnonzero(~blocked[:, e])
        ok = ok[ok != s]
        pos_sem[t] = (ok[rng.integers(len(ok))], e)
    return Triplets(anchor.astype(np.int64), pos_style.astype(np.int64), pos_sem.astype(np.int64))


# ---------------------------------------------------------------------------- the whole set
def make_dataset(stickers: StickerSet, profile: str | Profile = "quick", seed: int = 0,
                 **overrides) -> PersonalizationData:
    """Users, samples, both splits and triplets for a profile, deterministic given ``seed``.

    ``overrides`` change profile fields, e.g. ``make_dataset(s, "quick", history_length=3)``.
    """
    prof = get_profile(profile)
    if overrides:
        prof = prof.replace(**overrides)
    n_styles, n_emoji = _check_stickers(stickers)
    rng = np.random.default_rng(seed)
    heldout = heldout_cells(stickers)  # the world's cells (a concept set's restricted): fixed first, no user draws them
    users = make_users(stickers, prof.n_users, prof.sequence_length, rng=rng, heldout_cells=heldout,
                       noise_range=prof.noise_range, lean_probability=prof.lean_probability,
                       lean_strength=prof.lean_strength)
    clean = make_samples(users, n_styles, prof.history_length, rng=rng, heldout_cells=heldout)
    held = make_heldout_samples(users, heldout, prof.history_length, rng=rng,
                                n_samples=prof.n_heldout_test)
    samples = Samples(**{k: np.concatenate([getattr(clean, k), getattr(held, k)]) for k in
                         ("user", "style", "history", "target", "references", "text")})
    train, val, test = split_indices(len(clean), rng)
    splits = {
        "sample": Split("sample", train, val, test),
        "heldout": Split("heldout", train, val, len(clean) + np.arange(len(held))),
    }
    items = np.unique(np.concatenate([u.sequence for u in users]), axis=0)
    triplets = make_triplets(items, n_styles, n_emoji, prof.n_triplets, rng=rng, heldout_cells=heldout)
    return PersonalizationData(prof, int(seed), users, samples, splits, triplets, heldout)
