"""What each pretraining option changes: the pocket LMM on `core`, one option at a time.

    python benchmarks/lmm_recipes.py [--train] [--root runs/pilots] [--threads 1] [--keep]
                                     [--out data/results/lmm_recipes.json]

Every row is the shipped recipe (:data:`drclib.train.LMM_RECIPE`: 1,200 steps of batch 32, seed
0) with one option switched on (the augmented recipe also at 3,000 steps, for seeds 0 and 1,
continued to 6,000 with ``--init-from``, at 3,000 steps with 8 layers instead of 4, and with
more augmentation, for three seeds and continued to 6,000 steps, at the same or a quarter of
the learning rate, with factor dropout or interleaved pairs, and more augmentation still, also
continued),
trained with ``python -m drclib.train backbone --concepts core`` into ``<root>/lmm_<name>``
(``--train`` trains the missing ones, about 20 minutes each on one thread of the 2-core
machine, 30 at 3,000 steps, 60 with 8 layers), and scored by the command's own evaluation (greedy
text-to-image, 300 training cells and the 64 held-out cells, the judges' argmax over `core`).
The first row is the shipped LMM. A continued run's minutes
include the run it continued. The loss column is the mean text-to-image loss (nats a
visual code) over the last 10% of the card's logged steps. Prints a markdown table with standard errors and writes the
rows, commands and machine to ``--out``; RESULTS.md section 1 quotes it. ``--keep``: a recipe
whose folder is gone keeps its row from ``--out`` (each row names its command and machine).
A recipe trained with several seeds (:data:`SEED_GROUPS`) also gets its seeds' mean and spread.
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
}
"""Row name -> the flags added to the shipped recipe (``python -m drclib.train backbone --help``);
``{root}`` is ``--root``. A recipe that continues another (``--init-from``) comes after it."""

SEED_GROUPS = {
    "mild augmentation, 3000 steps": ["augment_3000", "augment_3000_seed1"],
    "mild augmentation, 6000 steps": ["augment_6000", "augment_6000_seed1"],
    "strong augmentation, 3000 steps": ["augment_strong_3000", "augment_strong_3000_seed1",
                                        "augment_strong_3000_seed2"],
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
        out.append(f"| {name} | {r['train_minutes']:.1f} | {r['final_t2i_loss']:.2f} | {pm(t['emoji_top1'], t['n_cells'])} | "
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", action="store_true", help="train the recipes whose folder is missing")
    p.add_argument("--root", default="runs/pilots")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="data/results/lmm_recipes.json")
    p.add_argument("--keep", action="store_true", help="keep the --out rows of recipes whose folder is gone")
    args = p.parse_args(argv)
    from drclib.backbone import default_checkpoint_dir
    from drclib.io import write_json

    rows = {"shipped recipe": row(default_checkpoint_dir())}
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
    print(table(rows))
    groups = seed_groups(rows, names)
    for g, sp in groups.items():
        print(f"{g} ({sp['heldout_cells.both']['n_runs']} seeds): " + ", ".join(
            f"{k} {v['mean']:.3f} ± {v['sd']:.3f}" for k, v in sp.items()))
    write_json(args.out, {"command": "python benchmarks/lmm_recipes.py " + " ".join(sys.argv[1:] if argv is None else argv),
                          "rows": rows, "seed_groups": groups,
                          "table": table(rows)})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
