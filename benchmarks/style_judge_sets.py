"""The style judge on a concept set's held-out cells: what the style aims of the world issue are
measured against (prints figures and writes a JSON; not a test).

    python benchmarks/style_judge_sets.py [--concepts core] [--threads 2]
                                          [--out data/results/style_judge_sets.json]
                                          [--judge NAME=FOLDER ...]
                                          [--tokenizer NAME=FOLDER ...]

The judge's card (``data/checkpoints/style_classifier``) gives its accuracy on the held-out cells
of the whole array; RESULTS section 1 compares the encoder's style probe and the style ceiling
(the judge on tokenizer round trips) on ``core``'s held-out cells, so this measures the judge on
exactly those cells, real stickers and their round trip through the shipped tokenizer, each
rate with its binomial standard error (:func:`drclib.judges.metrics.rate_se`).

``--judge NAME=FOLDER`` scores other style classifiers (``python -m drclib.judges train --target
style --out FOLDER ...``) on the same cells and round trips, under ``alternatives`` in the JSON,
with its card's command, time and accuracies (``training_info``): whether a better judge, not a
sharper tokenizer, is what the style ceiling lacks. The shipped judge stays the kit's yardstick.
``--tokenizer NAME=FOLDER`` has every judge read the round trips of other tokenizers
(``python -m drclib.backbone.tokenizer --out FOLDER ...``, e.g. with ``--codebook-size``), under
``tokenizers`` with each one's command, codebook and held-out PSNR: whether more codes keep more
style. Each tokenizer (the shipped one too) also gets ``codes_probe``: a linear style probe on its
codes themselves, fitted on every training cell of the whole array and scored on its 685 held-out
cells, read from the image's bag of codes (how often each code is used) and from its mean code
vector (what ``--style-weight`` trains a head on): whether a tokenizer's codes hold the artist,
apart from how its decoder draws them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))      # the folder's shared helpers, when imported

from _kit import in_repo, named_paths  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--concepts", nargs="+", default=["core"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="data/results/style_judge_sets.json")
    p.add_argument("--judge", nargs="*", default=[], metavar="NAME=FOLDER",
                   help="other style classifiers to score on the same cells")
    p.add_argument("--tokenizer", nargs="*", default=[], metavar="NAME=FOLDER",
                   help="other visual tokenizers whose round trips every judge reads")
    args = p.parse_args(argv)
    others, tokenizers = named_paths(args.judge, "--judge"), named_paths(args.tokenizer, "--tokenizer")
    torch.set_num_threads(args.threads)

    from drclib.backbone import tokenizer as tok_mod
    from drclib.data import StickerSet, heldout_cells
    from drclib.io import write_json
    from drclib.judges import StickerClassifier, evaluate_classifier, load_default
    from drclib.judges.metrics import rate_se
    from drclib.runtime import describe_machine, pick_device

    device = pick_device("cpu")
    t0 = time.perf_counter()
    judge, tokenizer = load_default("style_classifier", device).eval(), tok_mod.load_default()
    out = {"command": "python benchmarks/style_judge_sets.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "machine": describe_machine(device)}

    def score(clf, tok=tokenizer) -> dict:
        sets = {}
        for name in args.concepts:
            stickers = StickerSet.load(concepts=name)
            cells = np.argwhere(heldout_cells(stickers))
            entry = {"n": int(len(cells))}
            for view, through in (("real", None), ("round trip", tok.reconstruct)):
                acc = evaluate_classifier(clf, stickers, cells, through=through)["acc"]
                entry[view] = {"style_acc": acc, "se": rate_se(acc, len(cells)), "n": int(len(cells))}
            sets[name] = entry
        return sets

    def show(who: str, sets: dict) -> None:
        for name, e in sets.items():
            print(f"{who}, {name}: {e['n']} held-out cells; style judge on real stickers {e['real']['style_acc']:.3f} ± "
                  f"{e['real']['se']:.3f}, on their round trip {e['round trip']['style_acc']:.3f} ± "
                  f"{e['round trip']['se']:.3f}")

    def card(model) -> dict:
        """What ``drclib.judges train`` measured and recorded with the weights (``training_info``)."""
        info = model.training_info
        row = {k: info.get(k) for k in ("command", "train_time_s", "machine", "params")}
        row.update({k: info.get(k, {}).get("acc") for k in ("train_cells", "heldout", "heldout_reconstructed")})
        return row

    whole = StickerSet.load(concepts="all")
    held = heldout_cells(whole)
    train, test = np.argwhere(~held), np.argwhere(held)

    def codes_probe(tok) -> dict:
        """Linear style probes on the tokenizer's codes (``drclib.backbone.encoder.linear_probe``)."""
        from drclib.backbone import encode_sticker_set
        from drclib.backbone.encoder import linear_probe

        codes = encode_sticker_set(tok, whole)                                  # [n_styles, n_emoji, 64]
        views = {"bag of codes": F.one_hot(codes, tok.codebook_size).float().mean(2),
                 "mean code vector": tok.codebook.detach().cpu()[codes].mean(2)}
        out = {}
        for view, feats in views.items():
            r = linear_probe(feats[train[:, 0], train[:, 1]], torch.from_numpy(train[:, 0]),
                             feats[test[:, 0], test[:, 1]], torch.from_numpy(test[:, 0]))
            out[view] = {"style_acc": r["test_acc"], "se": rate_se(r["test_acc"], len(test)), "n": int(len(test)),
                         "train_acc": r["train_acc"]}
        print("codes probe, all: " + ", ".join(f"{v} {e['style_acc']:.3f} ± {e['se']:.3f}" for v, e in out.items()))
        return out

    def tok_card(tok) -> dict:
        """A tokenizer's command, codebook and held-out PSNR, as its training recorded them."""
        info = tok.training_info
        return {"command": info.get("training", {}).get("command"), "codebook_size": tok.codebook_size,
                "heldout_psnr": info.get("metrics", {}).get("heldout", {}).get("psnr"),
                "seconds": info.get("training", {}).get("seconds")}

    out["card"], out["sets"] = card(judge), score(judge)
    show("shipped judge", out["sets"])
    judges = {"shipped judge": judge}
    if others:
        out["alternatives"] = {}
    for who, folder in others.items():
        judges[who] = StickerClassifier.from_pretrained(in_repo(folder), device=device).eval()
        out["alternatives"][who] = {"folder": str(folder), "card": card(judges[who]), "sets": score(judges[who])}
        show(who, out["alternatives"][who]["sets"])
    if tokenizers:
        out["tokenizers"] = {"shipped": {**tok_card(tokenizer), "codes_probe": codes_probe(tokenizer)}}
    for name, folder in tokenizers.items():
        tok = tok_mod.VisualTokenizer.from_pretrained(in_repo(folder), device=device).eval()
        out["tokenizers"][name] = {"folder": str(folder), **tok_card(tok), "codes_probe": codes_probe(tok),
                                   "judges": {}}
        for who, j in judges.items():
            out["tokenizers"][name]["judges"][who] = score(j, tok)
            show(f"{who}, tokenizer {name!r}", out["tokenizers"][name]["judges"][who])
    out["minutes"] = round((time.perf_counter() - t0) / 60, 2)
    write_json(args.out, out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
