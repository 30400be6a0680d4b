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


TINY_LMM = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_positions=160)
"""Sizes of the tiny PocketLMM the unit tests build (random weights, fast)."""


def tiny_pipeline(stickers: StickerSet, seed: int = 0, lora: bool = False):
    """A DRCPipeline of tiny random parts (tokenizer with 32 codes, 1-layer LMM, stage-2 DRC
    with a mask generator), for tests of the plumbing around the pipeline."""
    import dataclasses

    import torch

    from drclib.backbone import PocketLMM
    from drclib.drc import DRC
    from drclib.pipeline import DRCPipeline
    from drclib.backbone.tokenizer import TokenizerConfig, VisualTokenizer

    torch.manual_seed(seed)
    tok = VisualTokenizer(TokenizerConfig(codebook_size=32, block_out_channels=(8, 16, 16), latent_channels=8,
                                          vq_embed_dim=8, norm_num_groups=8)).eval()
    lmm = PocketLMM.from_stickers(stickers, n_visual=32, **TINY_LMM).eval()
    if lora:
        lmm.add_lora(2, 4)
    drc = DRC(dataclasses.replace(DRC.for_lmm(lmm, n_latent=4).config, mask_generator=True)).eval()
    return DRCPipeline(drc, lmm, tok)


@pytest.fixture(scope="session")
def tiny_stickers() -> StickerSet:
    return synthetic_stickers()


@pytest.fixture(scope="session")
def shipped_stickers() -> StickerSet:
    return StickerSet.load()
