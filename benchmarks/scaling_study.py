"""The scaling study: how many concepts can the pocket LMM master at a fixed training budget?

    python benchmarks/scaling_study.py [--sizes 16 32 64 128 256 512] [--steps 1200] [--threads 1]
                                       [--out data/results/scaling_study]

For each size K, the concept set is the first K emoji of the kit's ranking
(:func:`drclib.data.concepts.ranked_prefix`; ``mini`` is K = 32, ``core`` K = 128). A fresh LMM of
the shipped size is pretrained on the set's training cells with the shipped recipe
(:data:`drclib.train.LMM_RECIPE`) for the same number of steps at every K, then scored greedily on
up to 300 training and 300 held-out cells by the kit's judges (the emoji judge's argmax over the
set). The towers' input features (the shipped semantic encoder, the same for every K) are probed
on the set's held-out cells (:func:`drclib.backbone.encoder.probe_features`; on the mean token and on
all 64 tokens, what the towers read; `--reprobe` fills them in for older rows). Each K takes about 20
minutes on one thread of the 2-core machine. Writes ``scaling_study.json`` (one row per K, with
the command and machine) and ``scaling_study.png`` (quality against K), which notebook 01 and
RESULTS.md show. Rows already in the JSON are kept (the study resumes).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch


def run_size(k: int, steps: int, seed: int, n_eval: int) -> dict:
    from drclib import judges
    from drclib.backbone import tokenizer as tok_mod
    from drclib.backbone import PocketLMM, sticker_codes
    from drclib.judges import evaluate_text_to_image
    from drclib.data import StickerSet, heldout_cells
    from drclib.data.concepts import ranked_prefix
    from drclib.train import LMM_RECIPE, PretrainConfig, pretrain_backbone

    whole = StickerSet.load()
    stickers = whole.subset(ranked_prefix(k, whole))
    tok = tok_mod.load_default()
    recipe = dict(LMM_RECIPE, steps=steps, seed=seed)
    copies = recipe.pop("augment_copies", 0)
    codes = tok_mod.augmented_codes(tok, stickers, copies) if copies > 1 else sticker_codes(tok, stickers)
    held = heldout_cells(stickers)
    train, test = np.argwhere(~held), np.argwhere(held)
    lmm = PocketLMM.from_stickers(stickers, n_visual=tok.codebook_size)
    t0 = time.perf_counter()
    pretrain_backbone(lmm, stickers, codes, train, PretrainConfig(**recipe), progress=False)
    minutes = (time.perf_counter() - t0) / 60
    style_clf, emoji_clf = judges.load_judges(stickers)
    rng = np.random.default_rng(seed)
    pick = lambda cells: cells[np.sort(rng.choice(len(cells), size=min(n_eval, len(cells)), replace=False))]  # noqa: E731
    ev = {name: evaluate_text_to_image(lmm, tok, style_clf, emoji_clf, stickers, pick(cells))
          for name, cells in (("train_cells", train), ("heldout_cells", test))}
    probe = probe_row(k)
    keep = ("style_acc", "emoji_top1", "both", "n_cells")
    return {"k": k, "train_minutes": round(minutes, 2), "steps": steps,
            "train_cells": {x: ev["train_cells"][x] for x in keep},
            "heldout_cells": {x: ev["heldout_cells"][x] for x in keep},
            "probe": probe}


AIMS = {"train_emoji": 0.95, "train_both": 0.85}
"""The world issue's aims for training cells; the full profile's set is the largest K meeting them."""


def choose_size(rows: list[dict]) -> dict:
    """The largest K whose LMM meets :data:`AIMS` on training cells, with the rows that do."""
    ok = [r["k"] for r in rows if r["train_cells"]["emoji_top1"] >= AIMS["train_emoji"]
          and r["train_cells"]["both"] >= AIMS["train_both"]]
    return {"aims": AIMS, "sizes_meeting_aims": sorted(ok), "largest": max(ok) if ok else None}


PROBE_KEYS = ("real_emoji", "real_style", "real_tokens_emoji", "real_tokens_style")
"""Linear probes of the shipped semantic encoder on the set's held-out cells: on the mean of its
64 tokens and on all 64 side by side (what the towers read)."""


def probe_row(k: int) -> dict:
    from drclib.backbone import encoder as enc_mod
    from drclib.data import StickerSet
    from drclib.data.concepts import ranked_prefix

    whole = StickerSet.load()
    probe = enc_mod.probe_features(enc_mod.load_default(), whole.subset(ranked_prefix(k, whole)))
    return {x: probe[x] for x in PROBE_KEYS}


def markdown_table(rows: list[dict]) -> str:
    """The study as RESULTS.md shows it: rates with one binomial standard error."""
    import math

    pm = lambda p, n: f"{p:.2f} ± {math.sqrt(p * (1 - p) / max(n, 1)):.2f}"  # noqa: E731
    out = ["| K | minutes | train cells: emoji | train cells: both | held-out: style | held-out: emoji | held-out: both "
           "| probe, 64 tokens: emoji / style | probe, mean token: emoji / style |", "|" + "---|" * 9]
    for r in sorted(rows, key=lambda r: r["k"]):
        t, h, pr = r["train_cells"], r["heldout_cells"], r["probe"]
        tok = (f"{pr['real_tokens_emoji']:.2f} / {pr['real_tokens_style']:.2f}" if "real_tokens_emoji" in pr else "-")
        out.append(f"| {r['k']} | {r['train_minutes']:.1f} | {pm(t['emoji_top1'], t['n_cells'])} | {pm(t['both'], t['n_cells'])} "
                   f"| {pm(h['style_acc'], h['n_cells'])} | {pm(h['emoji_top1'], h['n_cells'])} | {pm(h['both'], h['n_cells'])} "
                   f"| {tok} | {pr['real_emoji']:.2f} / {pr['real_style']:.2f} |")
    return "\n".join(out)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from drclib import viz

    viz.plot_scaling_study(rows).savefig(path, dpi=110)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512])
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-cells", type=int, default=300)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="data/results/scaling_study")
    p.add_argument("--reprobe", action="store_true",
                   help="recompute the linear probes of rows that lack one of PROBE_KEYS (the encoder is the same at every K)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from drclib.runtime import pick_device
    from drclib.runtime import describe_machine

    pick_device("cpu")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "scaling_study.json"
    doc = json.loads(path.read_text()) if path.is_file() else {"rows": []}
    command = "python benchmarks/scaling_study.py " + " ".join(sys.argv[1:])
    doc.setdefault("command", command)                      # the command that made the first rows
    doc["commands"] = list(dict.fromkeys(doc.get("commands", [doc["command"]]) + [command]))
    doc.update(machine=describe_machine("cpu") + f", {args.threads} torch thread(s), python {platform.python_version()}, "
                                         f"torch {torch.__version__}")
    done = {(r["k"], r["steps"]) for r in doc["rows"]}
    if args.reprobe:
        for r in doc["rows"]:
            if any(x not in r["probe"] for x in PROBE_KEYS):
                r["probe"] = probe_row(r["k"])
                print(f"K={r['k']}: probe {r['probe']}", flush=True)
        path.write_text(json.dumps(doc, indent=1) + "\n")
    for k in args.sizes:
        if (k, args.steps) in done:
            continue
        row = run_size(k, args.steps, args.seed, args.eval_cells)
        print(json.dumps(row), flush=True)
        doc["rows"] = sorted([r for r in doc["rows"] if (r["k"], r["steps"]) != (k, args.steps)] + [row],
                             key=lambda r: (r["steps"], r["k"]))
        path.write_text(json.dumps(doc, indent=1) + "\n")
    rows = [r for r in doc["rows"] if r["steps"] == args.steps]
    doc["choice"] = choose_size(rows)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"largest K meeting the training-cell aims {AIMS}: {doc['choice']['largest']}")
    plot(rows, out / "scaling_study.png")
    print(markdown_table(rows))
    print(f"wrote {path} and {out / 'scaling_study.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
