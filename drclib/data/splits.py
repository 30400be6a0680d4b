"""Held-out cells: the (style, emoji) pairs no training stage may see.

The ``heldout`` split tests composition of an unseen (emoji, style) pair: half of the emoji
lose one of their six styles. The rule is fixed by :data:`HELDOUT_SEED`, so every profile,
seed, concept set and trained checkpoint agrees on it. It lives below the concept sets and
the users (which both use it) and takes any object with ``shape``, ``n_emoji``,
``full_n_emoji`` and ``concepts`` (a :class:`drclib.data.StickerSet`), or a ``(n_styles,
n_emoji)`` pair.
"""

from __future__ import annotations

import numpy as np

HELDOUT_SEED = 2504_17349
"""Seed of the held-out cells (the paper's arXiv number); never the notebook's SEED."""

HELDOUT_EMOJI_FRACTION = 0.5
"""Share of emoji that have one of their six styles held out (685 of 1,370 cells, 8% of all)."""


# ---------------------------------------------------------------------------- building blocks
def _check_stickers(stickers) -> tuple[int, int]:
    shape = tuple(stickers) if isinstance(stickers, (tuple, list)) else tuple(stickers.shape)
    if len(shape) != 2 or shape[0] < 2 or shape[1] < 2:
        raise ValueError(f"need at least 2 styles and 2 emoji, got shape {shape}")
    return int(shape[0]), int(shape[1])


def choose_heldout_cells(n_styles: int, n_emoji: int, n_cells: int,
                         rng: np.random.Generator) -> np.ndarray:
    """Pick ``n_cells`` (style, emoji) cells to hold out: at most one style per emoji, styles
    in turn so each style loses about as many. Returns a bool mask ``[n_styles, n_emoji]``."""
    if not 0 <= n_cells <= n_emoji:
        raise ValueError(f"can hold out 0..{n_emoji} cells (one style per emoji), asked {n_cells}")
    mask = np.zeros((n_styles, n_emoji), dtype=bool)
    emoji = rng.permutation(n_emoji)[:n_cells]
    styles = rng.permutation(np.arange(n_cells) % n_styles)
    mask[styles, emoji] = True
    return mask


def heldout_cells(stickers) -> np.ndarray:
    """The held-out (style, emoji) cells of the ``heldout`` split, as a bool mask
    ``[n_styles, n_emoji]``: half of the emoji lose one style each, styles in turn. Fixed by
    :data:`HELDOUT_SEED` so that every profile, seed and trained checkpoint agrees on them;
    no training stage (tokenizer, backbone, evaluators, DRC) may use these cells.

    A concept set (a :class:`StickerSet` made by :meth:`StickerSet.subset`) gets the cells of
    the whole array restricted to its emoji, so every set agrees with every other (``mini``'s
    held-out cells are ``core``'s restricted to ``mini``); the concept-set rule picks half of
    its emoji among those that have a held-out cell (:mod:`drclib.data.concepts`)."""
    if not isinstance(stickers, (tuple, list)) and stickers.n_emoji != stickers.full_n_emoji:
        whole = heldout_cells((stickers.n_styles, stickers.full_n_emoji))
        return whole[:, stickers.concepts]
    n_styles, n_emoji = _check_stickers(stickers)
    n_cells = int(round(HELDOUT_EMOJI_FRACTION * n_emoji))
    return choose_heldout_cells(n_styles, n_emoji, n_cells, np.random.default_rng(HELDOUT_SEED))
