"""Shared fixtures. ``tiny_stickers`` is a synthetic StickerSet (no data file needed) so the
unit tests of the data code run even where the shipped npz is missing or being rebuilt."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from drclib.data.stickers import STYLES, StickerSet

REPO = Path(__file__).resolve().parents[1]



def synthetic_stickers(n_emoji: int = 120, size: int = 32, seed: int = 0) -> StickerSet:
    """A StickerSet of random blobs: 6 styles x ``n_emoji`` with names and 4 categories."""
    rng = np.random.default_rng(seed)
    images = np.full((len(STYLES), n_emoji, size, size, 3), 255, np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for s in range(len(STYLES)):
        for e in range(n_emoji):
            r = 4 + (e % 7) + s
            mask = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < r * r
            images[s, e][mask] = rng.integers(0, 255, 3, dtype=np.uint8)
    cats = ["Smileys & Emotion", "Animals & Nature", "Food & Drink", "Objects"]
    return StickerSet(
        images, styles=STYLES,
        codepoints=[f"1F{600 + e:03X}" for e in range(n_emoji)],
        chars=[chr(0x1F600 + e) for e in range(n_emoji)],
        names=[f"thing number {e}" for e in range(n_emoji)],
        categories=[cats[e * len(cats) // n_emoji] for e in range(n_emoji)],
        subcategories=[f"sub{e % 3}" for e in range(n_emoji)],
        style_packages=[f"pkg-{s}@1.0.0" for s in STYLES],
        style_licences=["MIT"] * len(STYLES),
        style_copyright=[f"(c) {s}" for s in STYLES],
    )


@pytest.fixture(scope="session")
def tiny_stickers() -> StickerSet:
    return synthetic_stickers()


@pytest.fixture(scope="session")
def shipped_stickers() -> StickerSet:
    return StickerSet.load()
