"""Can the towers and the fusion network recognise what an image shows? (prints figures; not
a test, not a model the kit ships)

    python benchmarks/probe_recognition.py [--steps 1000] [--features embeddings|hidden]
                                           [--lr 2e-3] [--eval-every 250] [--threads N]
    python benchmarks/probe_recognition.py --fixed 32 --steps 100 --eval-every 25
    python benchmarks/probe_recognition.py --linear [--threads N]

Stage 1 without the LMM: a words-space DRC (``z_space="words"``, self form, K = 16) trained on
the caption anchor alone (``drclib.drc.caption_anchor_loss``): z(a,a) and z(s,m) must spell the
anchor's caption, "a sticker of <emoji name> in <style> style", in their last tokens. No image
is generated, so a step costs only the towers and the fusion network, and the signal is direct
(a cross-entropy on the words, not a gradient through the LMM).

Every ``--eval-every`` steps it prints, for 200 training and 200 held-out triplets, how often
each instruction's most likely words name the style (one slot) and the emoji (every word of
the name right), and the anchor loss. If the style is named and the emoji is not, eq. (3)
cannot carry B's emoji either: the towers do not recognise it (RESULTS.md section 3).
``--fixed N`` trains on the first N training triplets only and scores "training" on them: can
the model learn names at all, given few enough of them?

``--linear`` asks the simplest question instead: how well does a linear classifier (softmax
regression, trained on the 7,535 training cells, scored on the 685 held-out cells) name the
style and the emoji from E_x averaged over the 64 tokens, or from the bag of visual codes?
On held-out cells the emoji is seen only in other styles, so this measures whether the kit's
visual tokens carry an emoji's identity across styles.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from _kit import shipped_inputs   # this folder: the scripts run as python benchmarks/<name>.py


def linear_probes(stickers, lmm, codes) -> None:
    from drclib.data.splits import heldout_cells

    n_styles, n_emoji = codes.shape[:2]
    train = torch.from_numpy(~heldout_cells(stickers).reshape(-1))
    style = torch.arange(n_styles).repeat_interleave(n_emoji)
    emoji = torch.arange(n_emoji).repeat(n_styles)
    with torch.no_grad():
        mean_e = lmm.visual_embeddings(codes.reshape(-1, 64)).float().mean(1)
    bag = torch.nn.functional.one_hot(codes.reshape(-1, 64), lmm.config.n_visual).float().sum(1)

    def probe(x, y, name, steps=300):
        x = (x - x[train].mean(0)) / (x[train].std(0) + 1e-5)
        w = torch.zeros(x.shape[1], int(y.max()) + 1, requires_grad=True)
        b = torch.zeros(int(y.max()) + 1, requires_grad=True)
        opt = torch.optim.Adam([w, b], lr=1e-2)
        for _ in range(steps):
            loss = torch.nn.functional.cross_entropy(x[train] @ w + b, y[train]) + 1e-4 * w.pow(2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            right = (x @ w + b).argmax(1) == y
        print(f"{name:<34} training cells {right[train].float().mean():.3f}   held-out cells "
              f"{right[~train].float().mean():.3f}   (chance {1 / (int(y.max()) + 1):.4f})", flush=True)

    probe(mean_e, style, "style <- mean of E_x")
    probe(mean_e, emoji, "emoji <- mean of E_x")
    probe(bag, emoji, "emoji <- bag of visual codes")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--features", choices=["embeddings", "hidden"], default="embeddings")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--fixed", type=int, default=0, help="train on the first N training triplets only")
    ap.add_argument("--linear", action="store_true", help="only the linear probes of E_x and the codes")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    from drclib.runtime import seed_everything

    seed_everything(0)          # before loading: building the LMM draws from torch's generator
    stickers, lmm, _, codes = shipped_inputs(args.threads)
    if args.linear:
        return linear_probes(stickers, lmm, codes)

    from drclib.data import make_dataset
    from drclib.drc import DRC, caption_anchor_loss, caption_words, heldout_triplets

    triplets = make_dataset(stickers, "full", seed=0).triplets
    held = heldout_triplets(stickers, 200)
    drc = DRC.for_lmm(lmm, n_latent=16, z_space="words", stage1_form="self", features=args.features)
    captions = caption_words(lmm, stickers, 16)
    opt = torch.optim.AdamW(drc.parameters(), lr=args.lr, weight_decay=0.01)
    combos = ("aa", "sm")

    def tokens(cells):
        return drc.image_tokens(lmm, codes[cells[:, 0], cells[:, 1]]).float()

    @torch.no_grad()
    def score(t, n):
        drc.eval()
        a = t.anchor[:n]
        zs = drc.stage1_instructions(tokens(a), tokens(t.pos_style[:n]), tokens(t.pos_sem[:n]), combos,
                                     return_logits=True)
        target = captions[a[:, 0], a[:, 1]]
        length = (target != -100).sum(1)
        name = torch.zeros_like(target, dtype=torch.bool)          # the slots between "a sticker of" and "in"
        for i, n_words in enumerate(length.tolist()):
            name[i, 16 - n_words + 3:16 - 3] = True
        out = {}
        for c, (_, logits) in zs.items():
            pred = logits.argmax(-1)
            out[c] = {"style": (pred[:, -2] == target[:, -2]).float().mean().item(),
                      "emoji": ((pred == target) | ~name).all(1).float().mean().item(),
                      "loss": caption_anchor_loss(logits, target).mean().item()}
        drc.train()
        return out

    print(f"features={args.features} lr={args.lr} batch={args.fixed or args.batch_size}"
          + (f" (the first {args.fixed} triplets, every step)" if args.fixed else "") + "; per instruction: style named / "
          "emoji named (all of its words) / anchor loss (nats per word)")
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        idx = (np.arange(args.fixed) if args.fixed else
               np.random.default_rng([0, step]).integers(0, len(triplets), args.batch_size))
        a = triplets.anchor[idx]
        with torch.no_grad():
            e = [tokens(v[idx]) for v in (triplets.anchor, triplets.pos_style, triplets.pos_sem)]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            zs = drc.stage1_instructions(*e, combos, return_logits=True)
            loss = torch.stack([caption_anchor_loss(v[1], captions[a[:, 0], a[:, 1]]) for v in zs.values()]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(drc.parameters(), 1.0)
        opt.step()
        if step % args.eval_every == 0 or step == args.steps:
            cols = []
            for name, t, n in (("train", triplets, args.fixed or 200), ("held-out", held, 200)):
                for c, r in score(t, n).items():
                    cols.append(f"{name} z({c[0]},{c[1]}) {r['style']:.2f}/{r['emoji']:.2f}/{r['loss']:.2f}")
            print(f"step {step:5d} ({time.perf_counter() - t0:6.0f} s)  " + "  ".join(cols), flush=True)

    with torch.no_grad():
        drc.eval()
        said = drc.read_words(lmm, tokens(held.pos_style[:3]), tokens(held.pos_sem[:3]))
    for i, words in enumerate(said):
        s, e = held.anchor[i]
        print(f"held-out z(s,m) says: {' '.join(words)!r}  (anchor: {stickers.names[e]} in {stickers.styles[s]} style)")


if __name__ == "__main__":
    main()
