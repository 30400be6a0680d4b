"""How exactly must an instruction spell the caption for the pocket LMM to draw it?

    python benchmarks/prompt_sensitivity.py [--pairs 40] [--stage1 FOLDER ...] [--threads 1]

On the swap test's pairs of training cells (``drclib.drc.swap_pair_sets``: A's style, B's emoji;
the target cell was in the LMM's pretraining) the shipped LMM is given, in the place of DRC's
instruction z after the hybrid-prompt sentence, the *true* caption "a sticker of <B's emoji> in
<A's style> style":

- as plain words (what it was pretrained on);
- after a few junk words (what a words-space z with free leading tokens hands it);
- as a ``z_space="slots"`` instruction: the caption in the last of 16 slots, the others empty
  (zero vectors, masked out of the prompt by ``drclib.drc.hybrid_prompts``).

With ``--stage1 FOLDER`` the same true captions also go to the LMM *with that stage-1 model's LoRA
adapters* (``drclib.drc.load_stage1``): did stage 1's adapters cost the LMM its own captions?
Prints one row each (style of A, emoji of B, both; judged as in the swap test). This measured
the figures behind the ``slots`` design and the frozen LMM of stage 1 (RESULTS.md, section 3).
"""

from __future__ import annotations

import argparse

import torch


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=40)
    p.add_argument("--stage1", nargs="*", default=[], help="stage-1 folders whose LoRA-adapted LMM to test too")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from drclib import judges
    from drclib.backbone import tokenizer as vt
    from drclib.backbone import load_default, sticker_caption
    from drclib.data import StickerSet
    from drclib.drc import generate_codes, load_stage1, swap_pair_sets, swap_rates
    from drclib.drc.swap import _predict
    from drclib.runtime import pick_device

    pick_device("cpu")
    stickers = StickerSet.for_profile("full")
    tok = vt.load_default()
    style_clf, emoji_clf = judges.load_judges(stickers)
    a, b = swap_pair_sets(stickers, args.pairs)["train"]
    captions = [sticker_caption(stickers.names[b[i, 1]], stickers.styles[a[i, 0]]) for i in range(len(a))]

    def score(lmm, prefix: str = "", slots: bool = False) -> dict:
        zs = []
        with torch.no_grad():
            for cap in captions:
                ids = lmm.text_ids((prefix + " " if prefix else "") + cap)
                words = lmm.embed(torch.tensor(ids, device=lmm.device))
                if slots:
                    z = words.new_zeros(16, words.shape[-1])
                    z[16 - len(ids):] = words
                    words = z
                zs.append(words)
            images = []
            for z in zs:            # one by one: the rows differ in length
                images.append(tok.decode(generate_codes(lmm, z[None], greedy=True).to(tok.device)).cpu())
        return swap_rates(*_predict(style_clf, emoji_clf, torch.cat(images)), a, b)

    bare = load_default().eval()
    rows = {"true caption as words": score(bare),
            "true caption after 'a a a a a a'": score(bare, "a a a a a a"),
            "true caption after 'of meets of of a a a'": score(bare, "of meets of of a a a"),
            "true caption after 'sticker sticker sticker sticker'": score(bare, "sticker sticker sticker sticker"),
            "true caption in slots (empty slots masked)": score(bare, slots=True)}
    for folder in args.stage1:
        _, lmm = load_stage1(folder)
        rows[f"true caption as words, LMM with the LoRA of {folder}"] = score(lmm.eval())
    print(f"shipped LMM, {len(a)} swap pairs of training cells (style of A / emoji of B / both):")
    print("| prompt | style of A | emoji of B | both |\n|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['style_of_A']:.3f} | {r['emoji_of_B']:.3f} | {r['both']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
