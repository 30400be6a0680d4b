"""How much of a sticker's content can the pocket LMM name? (prints figures; not a test)

    python benchmarks/probe_lmm_captions.py [--lmm data/checkpoints/lmm] [--cells 300] [--threads N]

The LMM was pretrained to caption stickers (image-to-text, "a sticker of <emoji> in <style>
style"). Its greedy captions of the fixed training and held-out cells of its card
(``drclib.train.eval_cell_subsets``) are compared with the true caption: the rate at which the
emoji's name and the style's name appear. On held-out cells (a style and an emoji it never saw
together) this is an upper estimate of what any feature read from the LMM can know of the
content; stage 1's swap test needs exactly that (issue 4, RESULTS.md section 3).
"""

from __future__ import annotations

import argparse

import torch

from _kit import shipped_inputs   # this folder: the scripts run as python benchmarks/<name>.py


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lmm", default=None, help="LMM folder (default: the shipped one)")
    ap.add_argument("--cells", type=int, default=300)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    stickers, lmm, _, codes = shipped_inputs(args.threads, args.lmm)
    from drclib.train import eval_cell_subsets


    def norm(text: str) -> str:          # the LMM's own spelling (lower case, punctuation split off)
        return lmm.decode_text(lmm.text_ids(text))

    print(f"{'cells':<15} {'n':>4} {'emoji named':>12} {'style named':>12} {'both':>6}")
    for name, cells in eval_cell_subsets(stickers, args.cells).items():
        captions = []
        with torch.no_grad():
            for i in range(0, len(cells), 100):
                part = cells[i:i + 100]
                captions += lmm.caption(codes[part[:, 0], part[:, 1]])
        emoji = [(c + " ").startswith(norm(f"a sticker of {stickers.names[e]}") + " in ")   # the exact name
                 for c, (s, e) in zip(captions, cells)]
        style = [c.endswith(norm(f"in {stickers.styles[s]} style")) for c, (s, e) in zip(captions, cells)]
        both = sum(a and b for a, b in zip(emoji, style))
        print(f"{name:<15} {len(cells):>4} {sum(emoji) / len(cells):>12.3f} {sum(style) / len(cells):>12.3f} "
              f"{both / len(cells):>6.3f}")


if __name__ == "__main__":
    main()
