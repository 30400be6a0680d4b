"""How well does an LMM read DRC's hybrid prompt? (prints figures; not a test)

    python benchmarks/probe_hybrid_prompt.py [--lmm data/checkpoints/lmm] [--cells 32]

For a fixed set of training cells it prints the LMM's loss on the cell's 64 codes (nats per
code, eq. 3) after three prompts: the plain caption (``<bos> a sticker of ... <img>``), the
caption after DRC's hybrid-prompt sentence, and the sentence with one word only; then the
mean length of the LMM's word embeddings and of an untrained DRC model's latent tokens.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def main() -> None:
    from drclib.backbone import tokenizer as vt
    from drclib.backbone import BOS, PocketLMM, default_checkpoint_dir, sticker_caption, sticker_codes
    from drclib.data import StickerSet, heldout_cells
    from drclib.drc import DRC, hybrid_prompt, reconstruction_loss

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lmm", default=str(default_checkpoint_dir()))
    p.add_argument("--cells", type=int, default=32)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    stickers = StickerSet.load()
    lmm = PocketLMM.from_pretrained(args.lmm)
    tok = vt.load_default()
    codes = sticker_codes(tok, stickers)
    cells = np.argwhere(~heldout_cells(stickers))[::200][:args.cells]
    losses: dict[str, list[float]] = {"plain caption": [], "sentence + caption": [], "sentence + one word": []}
    with torch.no_grad():
        for s, e in cells:
            words = lmm.text_ids(sticker_caption(stickers.names[e], stickers.styles[s]))
            target = codes[s, e][None]
            prompts = {"plain caption": lmm.embed(torch.tensor([[BOS] + words])),
                       "sentence + caption": hybrid_prompt(lmm, lmm.embed(torch.tensor([words]))),
                       "sentence + one word": hybrid_prompt(lmm, lmm.embed(torch.tensor([words[:1]])))}
            for name, prompt in prompts.items():
                losses[name].append(float(reconstruction_loss(lmm, prompt, target)))
        print(f"LMM {args.lmm}, {len(cells)} training cells: loss of the cell's codes (nats per code)")
        for name, v in losses.items():
            print(f"  {name:<22} {np.mean(v):.2f}")
        w = lmm.lm.get_input_embeddings().weight
        words_from = lmm.visual_offset + lmm.config.n_visual
        torch.manual_seed(0)
        e = lmm.visual_embeddings(codes[0, :4])
        raw = DRC.for_lmm(lmm).fusion(e, e)
        print(f"mean length: word embeddings {w[words_from:].norm(dim=1).mean():.2f}, "
              f"fusion output before the z norm {raw.norm(dim=-1).mean():.2f}")


if __name__ == "__main__":
    main()
