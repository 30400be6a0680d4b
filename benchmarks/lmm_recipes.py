"""What each pretraining option changes: the pocket LMM on `core`, one option at a time.

    python benchmarks/lmm_recipes.py [--train] [--root runs/pilots] [--threads 1] [--keep]
                                     [--out data/results/lmm_recipes.json]

Every row is the plain recipe (:data:`drclib.train.LMM_RECIPE`: 1,200 steps of batch 32, seed
0) with one option switched on (the augmented recipe also at 3,000 steps, for seeds 0 and 1,
continued to 6,000 with ``--init-from``, at 3,000 steps with 8 layers instead of 4, and with
more augmentation, for three seeds and continued to 6,000 steps, at the same or a quarter of
the learning rate, with factor dropout or interleaved pairs, and more augmentation still, also
continued, for a second seed and to 9,000 steps, and annealed on the plain stickers),
trained with ``python -m drclib.train backbone --concepts core`` into ``<root>/lmm_<name>``
(``--train`` trains the missing ones, about 20 minutes each on one thread of the 2-core
machine, 30 at 3,000 steps, 60 with 8 layers), and scored by the command's own evaluation (greedy
text-to-image, 300 training cells and the 64 held-out cells, the judges' argmax over `core`).
The first row is the plain LMM (``data/checkpoints/plain/lmm``, the kit's until the composing LMM,
the ``augment_max_6000_anneal`` row, replaced it; rows written before then called it "shipped"). A continued run's minutes
include the run it continued. The loss column is the mean text-to-image loss (nats a
visual code) over the last 10% of the card's logged steps. Prints a markdown table with standard errors and writes the
rows, commands and machine to ``--out``; RESULTS.md section 1 quotes it. ``--keep``: a recipe
whose folder is gone keeps its row from ``--out`` (each row names its command and machine).
A recipe trained with several seeds (:data:`SEED_GROUPS`) also gets its seeds' mean and spread,
and two calibration rows (:data:`CALIBRATION`, no LMM) set the scale: what the real sticker of
each cell scores, and what the cell's emoji in another style scores.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

RECIPES = {
    "factor_dropout": ["--factor-dropout", "0.3"],
    "interleaved": ["--interleaved-fraction", "0.2"],
    "unconditional": ["--unconditional-fraction", "0.15"],
    "augment": ["--augment", "0.5", "--copies", "4"],
    # the augmented recipe was short of steps at 1,200 (training cells fell): 3,000, two seeds
    "augment_3000": ["--augment", "0.5", "--copies", "4", "--steps", "3000"],
    "augment_3000_seed1": ["--augment", "0.5", "--copies", "4", "--steps", "3000", "--seed", "1"],
    # held-out cells moved, training cells were still short of the shipped recipe's: 3,000 steps more on each
    # seed (a second learning-rate schedule from the 3,000-step weights), and the same recipe twice as deep
    "augment_6000": ["--augment", "0.5", "--copies", "4", "--steps", "3000",
                     "--init-from", "{root}/lmm_augment_3000"],
    "augment_6000_seed1": ["--augment", "0.5", "--copies", "4", "--steps", "3000", "--seed", "1",
                           "--init-from", "{root}/lmm_augment_3000_seed1"],
    "augment_3000_deep": ["--augment", "0.5", "--copies", "4", "--steps", "3000", "--layers", "8"],
    # neither more steps nor depth moved held-out cells: more augmentation instead
    "augment_strong_3000": ["--augment", "0.8", "--copies", "8", "--steps", "3000"],
    # it moved held-out cells the most and underfit the training cells: a second seed, and 3,000 steps more
    "augment_strong_3000_seed1": ["--augment", "0.8", "--copies", "8", "--steps", "3000", "--seed", "1"],
    "augment_strong_6000": ["--augment", "0.8", "--copies", "8", "--steps", "3000",
                            "--init-from", "{root}/lmm_augment_strong_3000"],
    # held-out style stayed the barrier: captions naming only the style (or only the emoji) beside
    # the strong augmentation, and the continuation at a quarter of the learning rate, so that the
    # training cells come back without undoing what the first 3,000 steps taught held-out cells
    "augment_strong_fd_3000": ["--augment", "0.8", "--copies", "8", "--steps", "3000", "--factor-dropout", "0.3"],
    "augment_strong_6000_lowlr": ["--augment", "0.8", "--copies", "8", "--steps", "3000", "--lr", "5e-4",
                                  "--init-from", "{root}/lmm_augment_strong_3000"],
    # neither kept held-out style: a third seed of the strong augmentation (its two seeds differ by
    # two standard errors), and more augmentation still
    "augment_strong_3000_seed2": ["--augment", "0.8", "--copies", "8", "--steps", "3000", "--seed", "2"],
    "augment_max_3000": ["--augment", "0.9", "--copies", "16", "--steps", "3000"],
    # more augmentation raised held-out emoji again, not style: in-context style (interleaved pairs
    # of one style or one emoji) beside the strong augmentation, and the most augmented continued
    "augment_strong_interleaved_3000": ["--augment", "0.8", "--copies", "8", "--steps", "3000",
                                        "--interleaved-fraction", "0.2"],
    "augment_max_6000": ["--augment", "0.9", "--copies", "16", "--steps", "3000",
                         "--init-from", "{root}/lmm_augment_max_3000"],
    # the only continuation that kept held-out style and emoji at once (one seed): a second seed,
    # and 3,000 steps more, to see whether the training cells come back further with it
    "augment_max_3000_seed1": ["--augment", "0.9", "--copies", "16", "--steps", "3000", "--seed", "1"],
    "augment_max_6000_seed1": ["--augment", "0.9", "--copies", "16", "--steps", "3000", "--seed", "1",
                               "--init-from", "{root}/lmm_augment_max_3000_seed1"],
    "augment_max_9000": ["--augment", "0.9", "--copies", "16", "--steps", "3000",
                         "--init-from", "{root}/lmm_augment_max_6000"],
    # 600 plain steps at a quarter of the learning rate after the most augmented 6,000 won the training
    # cells back (the shipped LMM, benchmarks/composing_lmm.py); the same anneal at a tenth of the rate,
    # and with half its sequences still augmented, to see whether either keeps more held-out cells
    "augment_max_6000_anneal": ["--steps", "600", "--lr", "5e-4", "--warmup", "30",
                                "--init-from", "{root}/lmm_augment_max_6000"],
    "augment_max_6000_anneal_lr2e4": ["--steps", "600", "--lr", "2e-4", "--warmup", "30",
                                      "--init-from", "{root}/lmm_augment_max_6000"],
    "augment_max_6000_anneal_mixed": ["--steps", "600", "--lr", "5e-4", "--warmup", "30", "--augment", "0.5",
                                      "--copies", "16", "--init-from", "{root}/lmm_augment_max_6000"],
    # and the shipped anneal after half the augmented steps (a chain half as long, for the lab recipe), two seeds
    "augment_max_3000_anneal": ["--steps", "600", "--lr", "5e-4", "--warmup", "30",
                                "--init-from", "{root}/lmm_augment_max_3000"],
    "augment_max_3000_anneal_seed1": ["--steps", "600", "--lr", "5e-4", "--warmup", "30", "--seed", "1",
                                      "--init-from", "{root}/lmm_augment_max_3000_seed1"],
}
"""Row name -> the flags added to the plain recipe (``python -m drclib.train backbone --help``);
``{root}`` is ``--root``. A recipe that continues another (``--init-from``) comes after it."""

SEED_GROUPS = {
    "mild augmentation, 3000 steps": ["augment_3000", "augment_3000_seed1"],
    "mild augmentation, 6000 steps": ["augment_6000", "augment_6000_seed1"],
    "strong augmentation, 3000 steps": ["augment_strong_3000", "augment_strong_3000_seed1",
                                        "augment_strong_3000_seed2"],
    "most augmentation, 3000 steps": ["augment_max_3000", "augment_max_3000_seed1"],
    "most augmentation, 6000 steps": ["augment_max_6000", "augment_max_6000_seed1"],
    "most augmentation, 3000 steps, annealed": ["augment_max_3000_anneal", "augment_max_3000_anneal_seed1"],
}
"""One recipe trained with several seeds: group name -> its recipes (names in :data:`RECIPES`).
The output's ``seed_groups`` gives each group's spread over its seeds (``lmm_seeds.spread``:
mean, standard deviation across seeds, lowest and highest), so a recipe is judged by its seeds'
mean, not by its luckiest seed."""


def row(folder: Path) -> dict | None:
    cfg = folder / "config.json"
    if not cfg.is_file():
        return None
    extra = json.loads(cfg.read_text())["extra"]
    ev = extra["evaluation"]
    t2i = [x for x in extra["history"]["loss_t2i"] if x is not None and x == x]
    tail = t2i[-max(1, len(t2i) // 10):]
    keep = ("style_acc", "emoji_top1", "both", "n_cells")
    # a continued run's card keeps the runs before it: its minutes are theirs and its own
    minutes = extra["train_minutes"] + sum(p.get("train_minutes", 0.0) for p in extra.get("previous", []))
    return {"folder": str(folder), "command": extra["command"], "train_minutes": minutes,
            "final_t2i_loss": sum(tail) / len(tail),
            "machine": extra.get("machine"),
            "train_cells": {k: ev["train_cells"][k] for k in keep},
            "heldout_cells": {k: ev["heldout_cells"][k] for k in keep}}


def pm(p: float, n: int) -> str:
    return f"{p:.3f} ± {math.sqrt(max(p * (1 - p), 0.0) / max(n, 1)):.3f}"


def table(rows: dict) -> str:
    out = ["| recipe | minutes | text-to-image loss, last 10% | train: emoji | train: both | held-out: style | held-out: emoji | held-out: both |",
           "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        t, h = r["train_cells"], r["heldout_cells"]
        minutes = "n/a" if r.get("train_minutes") is None else f"{r['train_minutes']:.1f}"
        loss = "n/a" if r.get("final_t2i_loss") is None else f"{r['final_t2i_loss']:.2f}"
        out.append(f"| {name} | {minutes} | {loss} | {pm(t['emoji_top1'], t['n_cells'])} | "
                   f"{pm(t['both'], t['n_cells'])} | {pm(h['style_acc'], h['n_cells'])} | "
                   f"{pm(h['emoji_top1'], h['n_cells'])} | {pm(h['both'], h['n_cells'])} |")
    return "\n".join(out)


GROUP_FIGURES = tuple((split, fig) for split in ("train_cells", "heldout_cells")
                      for fig in ("style_acc", "emoji_top1", "both"))
"""(split, figure) pairs a seed group's spread is taken over: style, emoji and both on each split
(the table's figures and the training cells' style)."""


def seed_groups(rows: dict, names: dict) -> dict:
    """:data:`SEED_GROUPS` whose recipes have at least two rows: each group's spread over its
    seeds (``names``: recipe name -> row key; a group's missing seeds are left out)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from lmm_seeds import spread   # (lmm_seeds imports this module: imported here, not at the top)
    out = {}
    for group, members in SEED_GROUPS.items():
        have = {names[m]: rows[names[m]] for m in members if m in names}
        if len(have) >= 2:
            out[group] = spread(have, GROUP_FIGURES)
    return out


CALIBRATION = {
    "calibration: the asked sticker itself (its tokenizer round trip)": "copy",
    "calibration: the asked emoji in another style it was seen in (style words ignored)": "other style",
}
"""Rows scored like an LMM's, without an LMM: what a perfect drawing of the asked cell scores (the
judges' ceiling: they miss some real stickers' style, the 64-code round trip more), and what
drawing the asked emoji in another style of the training cells scores (an LMM that ignores
the style words: its "style" is the judge's confusions)."""


def calibration(seed: int = 0) -> dict:
    """:data:`CALIBRATION`'s rows on the LMM card's cells (:func:`drclib.train.eval_cell_subsets`
    of `core`, 300), judged by the shipped judges: each cell's sticker coded by the shipped
    tokenizer and decoded ("copy"), or the same emoji's sticker in a random other style whose
    cell is a training cell ("other style", ``seed``)."""
    import numpy as np
    import torch

    from drclib import judges
    from drclib.backbone import sticker_codes
    from drclib.backbone import tokenizer as tok_mod
    from drclib.data import StickerSet, heldout_cells
    from drclib.judges.metrics import classify_rates
    from drclib.train import eval_cell_subsets

    stickers = StickerSet.load(concepts="core")
    tokenizer = tok_mod.load_default()
    codes = sticker_codes(tokenizer, stickers)
    style_clf, emoji_clf = judges.load_judges(stickers, "cpu")
    held = heldout_cells(stickers)
    rng = np.random.default_rng(seed)
    out = {}
    for name, kind in CALIBRATION.items():
        row = {"command": "python benchmarks/lmm_recipes.py (calibration)", "train_minutes": None, "final_t2i_loss": None}
        for split, cells in eval_cell_subsets(stickers, 300).items():
            drawn = cells[:, 0].copy()
            if kind == "other style":
                for i, (s, e) in enumerate(cells):
                    drawn[i] = rng.choice([t for t in range(len(stickers.styles)) if t != s and not held[t, e]])
            images = tokenizer.decode(codes[torch.as_tensor(drawn), torch.as_tensor(cells[:, 1])]).cpu()
            rates = classify_rates(style_clf, emoji_clf, images, torch.from_numpy(cells[:, 0]),
                                   torch.from_numpy(cells[:, 1]))
            row[split] = {k: float(rates[k]) for k in ("style_acc", "emoji_top1", "both")} | {"n_cells": int(len(cells))}
        out[name] = row
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", action="store_true", help="train the recipes whose folder is missing")
    p.add_argument("--root", default="runs/pilots")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="data/results/lmm_recipes.json")
    p.add_argument("--keep", action="store_true", help="keep the --out rows of recipes whose folder is gone")
    args = p.parse_args(argv)
    from drclib.io import write_json
    from drclib.pipeline import plain_lmm_dir

    rows = {"plain recipe": row(plain_lmm_dir() / "lmm")}
    old = json.loads(Path(args.out).read_text())["rows"] if args.keep and Path(args.out).is_file() else {}
    names = {}   # recipe name -> its row's key
    for name, recipe in RECIPES.items():
        flags = [f.format(root=args.root) for f in recipe]
        folder = Path(args.root) / f"lmm_{name}"
        if row(folder) is None and args.train:
            cmd = [sys.executable, "-m", "drclib.train", "backbone", "--concepts", "core", "--threads",
                   str(args.threads), *flags, "--out", str(folder)]
            print("$", " ".join(cmd[1:]), flush=True)
            subprocess.run(cmd, check=True)
        r = row(folder) or old.get(f"+ {' '.join(flags)}")
        if r is None:
            print(f"{name}: not trained ({folder}); run with --train", file=sys.stderr)
            continue
        rows[f"+ {' '.join(flags)}"] = r
        names[name] = f"+ {' '.join(flags)}"
    calib = calibration()
    print(table(calib | rows))
    groups = seed_groups(rows, names)
    for g, sp in groups.items():
        print(f"{g} ({sp['heldout_cells.both']['n_runs']} seeds): " + ", ".join(
            f"{k} {v['mean']:.3f} ± {v['sd']:.3f}" for k, v in sp.items()))
    write_json(args.out, {"command": "python benchmarks/lmm_recipes.py " + " ".join(sys.argv[1:] if argv is None else argv),
                          "rows": rows, "seed_groups": groups, "calibration": calib,
                          "table": table(calib | rows)})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
