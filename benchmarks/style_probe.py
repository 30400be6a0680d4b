"""Does the semantic encoder carry the artist's style, or does the probe lack data to see it?
(prints figures and writes a JSON; not a test, not a model the kit ships)

    python benchmarks/style_probe.py [--encoder FOLDER] [--concepts core] [--threads 2]
                                     [--out data/results/style_probe.json]

The kit's style probe (``drclib.backbone.encoder.probe_features``) fits a 6-way softmax
regression on the features of the concept set's training cells only (704 stickers for
``core``: about 117 per style over 8,192 feature dimensions) and scores it on the set's
held-out cells. Style is a property of every sticker, so the same probe can also be fitted on
the training cells of all 1,370 emoji (7,535 stickers; the held-out cells of the whole array,
which contain every set's, stay out). If the held-out style accuracy rises with that data, the
features carry the style and the set-only probe was data-starved; if it does not, the features
lose it.

Rows: the encoder's 64 tokens (what the towers read), their mean, its style embedding (the
half of ``image_embedding`` trained against "in <style> style"), and two calibration rows:
raw pixels (a probe that needs no encoder) and the majority style of the training cells (a
probe that ignores the image). Each accuracy comes with its binomial standard error; test sets:
the set's held-out cells and, for a smaller error, every held-out cell of the array. Views:
real stickers and their tokenizer round trip (what the LMM's codes decode to).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--encoder", default=None, help="encoder folder (default: the shipped one)")
    p.add_argument("--concepts", default="core")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="data/results/style_probe.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from drclib.backbone import encoder as enc_mod
    from drclib.backbone import tokenizer as tok_mod
    from drclib.data import StickerSet, heldout_cells
    from drclib.data.stickers import to_tensor
    from drclib.io import write_json
    from drclib.judges.metrics import rate_se
    from drclib.runtime import describe_machine, pick_device

    device = pick_device("cpu")
    t0 = time.perf_counter()
    whole = StickerSet.load()
    subset = StickerSet.load(concepts=args.concepts)
    enc = (enc_mod.SemanticEncoder.from_pretrained(args.encoder) if args.encoder else enc_mod.load_default()).eval()
    tokenizer = tok_mod.load_default()
    held = heldout_cells(whole)                                     # [S, E] over the whole array
    in_set = np.zeros(whole.n_emoji, bool)
    in_set[subset.concepts] = True
    styles = np.broadcast_to(np.arange(whole.n_styles)[:, None], held.shape)
    train_sets = {"set": ~held & in_set[None], "all": ~held}
    test_sets = {"set": held & in_set[None], "all": held}

    real = to_tensor(whole.images).flatten(0, 1)                    # [S * E, 3, 32, 32], style-major
    with torch.no_grad():
        recon = torch.cat([tokenizer.reconstruct(real[i:i + 512]).float().clamp(0, 1) for i in range(0, len(real), 512)])
    rows = []
    for view, images in (("real", real), ("round trip", recon)):
        tokens = enc.features(images)                               # [S * E, 64, dim]
        with torch.no_grad():
            style_emb = enc.image_embedding(tokens)[1]
        feats = {"encoder, 64 tokens (what the towers read)": tokens.flatten(1),
                 "encoder, mean token": tokens.mean(1),
                 "encoder, style embedding": style_emb,
                 "calibration: raw pixels": images.flatten(1)}
        for name, f in feats.items():
            for tr_name, tr in train_sets.items():
                tr_flat, y = tr.reshape(-1), torch.from_numpy(styles.reshape(-1).copy())
                row = {"view": view, "features": name, "probe trained on": tr_name, "n_train": int(tr_flat.sum())}
                for te_name, te in test_sets.items():
                    te_flat = te.reshape(-1)
                    r = enc_mod.linear_probe(f[tr_flat], y[tr_flat], f[te_flat], y[te_flat])
                    row[f"heldout_{te_name}"] = r["test_acc"]
                    row[f"heldout_{te_name}_se"] = rate_se(r["test_acc"], int(te_flat.sum()))
                    row[f"n_heldout_{te_name}"] = int(te_flat.sum())
                row["train_acc"] = r["train_acc"]
                rows.append(row)
                print(f"{view:10s} | {name:42s} | trained on {tr_name:3s} ({row['n_train']:5d}) | held-out {args.concepts}: "
                      f"{row['heldout_set']:.3f} ± {row['heldout_set_se']:.3f} | held-out all: "
                      f"{row['heldout_all']:.3f} ± {row['heldout_all_se']:.3f}", flush=True)
        for tr_name, tr in train_sets.items():                     # the probe that ignores the image
            majority = np.bincount(styles[tr]).argmax()
            row = {"view": view, "features": "calibration: majority style (ignores the image)",
                   "probe trained on": tr_name, "n_train": int(tr.sum())}
            for te_name, te in test_sets.items():
                acc = float((styles[te] == majority).mean())
                row.update({f"heldout_{te_name}": acc, f"heldout_{te_name}_se": rate_se(acc, int(te.sum())),
                            f"n_heldout_{te_name}": int(te.sum())})
            rows.append(row)
    out = {"command": "python benchmarks/style_probe.py " + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
           "machine": describe_machine(device), "minutes": round((time.perf_counter() - t0) / 60, 2),
           "encoder": args.encoder or "shipped", "concepts": args.concepts, "rows": rows}
    write_json(args.out, out)
    print(f"wrote {args.out} ({out['minutes']} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
