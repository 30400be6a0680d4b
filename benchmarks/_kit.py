"""What the probe scripts in this folder share: the CPU set-up and the shipped inputs."""

from __future__ import annotations

import torch


def shipped_inputs(threads: int = 0, lmm_folder: str | None = None):
    """Use ``threads`` torch threads (0: torch's default), flush denormal floats
    (``drclib.runtime.pick_device``), and load the sticker set, the pocket LMM (``lmm_folder``,
    default the shipped one, in eval mode), the tokenizer and every sticker's visual codes
    ``[n_styles, n_emoji, 64]``. Returns ``(stickers, lmm, tokenizer, codes)``."""
    if threads:
        torch.set_num_threads(threads)
    from drclib.backbone import tokenizer as tok_mod
    from drclib.backbone import PocketLMM, default_checkpoint_dir, sticker_codes
    from drclib.data import StickerSet
    from drclib.runtime import pick_device

    pick_device("cpu")          # also flushes denormal floats (2-4x faster on this CPU)
    stickers = StickerSet.load()
    lmm = PocketLMM.from_pretrained(lmm_folder or default_checkpoint_dir()).eval()
    tokenizer = tok_mod.load_default()
    return stickers, lmm, tokenizer, sticker_codes(tokenizer, stickers)
