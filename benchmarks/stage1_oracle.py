"""Stage 1 with an oracle semantic feature: is the missing content a recognition problem?
(prints figures; not a test, not a model the kit ships)

    python benchmarks/stage1_oracle.py [--steps 600] [--z-space free|words] [--caption-weight W]
                                       [--pairs 100] [--threads N]

Every image the towers see gets its emoji's *name* added on all 64 tokens: the mean of the
LMM's word embeddings of the name, times 3 (the towers' layer norms rescale it). The towers
then need not recognise the emoji from pixel-patch tokens; they only have to pass the name on.
Everything else is the stage-1 recipe in the self form (``DRCConfig(stage1_form="self")``),
K = 16 (``--caption-weight W > 0``: plus the kit's caption anchor, which needs
``--z-space words``). Prints the final running losses, then the redraws of held-out anchors and the swap test
(``drclib.drc.evaluate_stage1``, ``--pairs`` held-out pairs and triplets).

If the emoji of B comes through here and not in the shipped models, the bottleneck is
recognising content from E_x; if it does not come through here either, it is the LMM's
reading of z (RESULTS.md section 3, "What was tried").
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from _kit import shipped_inputs   # this folder: the scripts run as python benchmarks/<name>.py


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--z-space", choices=["free", "words"], default="free")
    ap.add_argument("--caption-weight", type=float, default=0.0)
    ap.add_argument("--pairs", type=int, default=100)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    stickers, lmm, tok, codes = shipped_inputs(args.threads)
    from drclib import judges
    from drclib.data import make_dataset
    from drclib.drc import DRC, caption_words, evaluate_stage1, heldout_triplets, swap_pairs
    from drclib.train import Stage1Config, train_stage1

    with torch.no_grad():
        name_emb = torch.stack([lmm.embed(torch.tensor(lmm.text_ids(n))).mean(0) for n in stickers.names])
    emoji_of = {tuple(codes[s, e].tolist()): e for s in range(codes.shape[0]) for e in range(codes.shape[1])}

    class Oracle(DRC):
        @torch.no_grad()
        def image_tokens(self, lmm, c):
            e = super().image_tokens(lmm, c)
            ids = torch.tensor([emoji_of[tuple(r.tolist())] for r in torch.as_tensor(c).cpu()])
            return e + 3.0 * name_emb[ids][:, None].to(e.device, e.dtype)

    model = Oracle.for_lmm(lmm, stage1_form="self", z_space=args.z_space)
    t0 = time.perf_counter()
    history = train_stage1(model, lmm, codes, make_dataset(stickers, "full", seed=0).triplets,
                           Stage1Config(steps=args.steps, caption_weight=args.caption_weight), progress=False,
                           captions=caption_words(lmm, stickers, 16) if args.caption_weight > 0 else None)
    print(f"trained {args.steps} steps in {(time.perf_counter() - t0) / 60:.1f} min; final running losses",
          {c: round(history["l_" + c][-1], 3) for c in ("aa", "am", "sa", "sm")}, flush=True)
    if args.caption_weight > 0:
        tail = history["caption"][-50:]
        print(f"caption anchor loss, mean of the last {len(tail)} steps: {sum(tail) / len(tail):.3f}")
        held = heldout_triplets(stickers, 3)
        with torch.no_grad():
            said = model.read_words(lmm, model.image_tokens(lmm, codes[held.pos_style[:, 0], held.pos_style[:, 1]]),
                                    model.image_tokens(lmm, codes[held.pos_sem[:, 0], held.pos_sem[:, 1]]))
        for (s, e), words in zip(held.anchor, said):
            print(f"held-out z(s,m) says: {' '.join(words)!r}  (anchor: {stickers.names[e]} in {stickers.styles[s]} style)")
    ev = evaluate_stage1(model, lmm, tok, judges.load_default("style_classifier"),
                         judges.load_default("emoji_classifier"), codes,
                         triplets=heldout_triplets(stickers, args.pairs), pairs=swap_pairs(stickers, args.pairs))
    print(json.dumps({k: ev[k] for k in ("combinations", "swap")}, indent=1))


if __name__ == "__main__":
    main()
