"""The held-out split before and after its fix, and what an LMM that composes gives DRC on it
(prints figures and writes a JSON that RESULTS section 5 quotes; not a test).

    python benchmarks/heldout_fix.py [--pilot NAME=LMM_FOLDER:STAGE1_FOLDER ...]
                                     [--work runs/heldout_fix] [--threads 1]
                                     [--out data/results/heldout_fix.json]

**The leak.** Until the fix, :func:`drclib.data.make_dataset` drew a concept set's held-out cells
by the rule of :func:`drclib.data.heldout_cells` applied to the set's own ``[6, K]`` grid, while
the tokenizer, the judges, the semantic encoder, the tiny CLIP and the LMM leave out the whole
array's held-out cells restricted to the set (what ``heldout_cells(stickers)`` returns). This
script rebuilds each profile's dataset with the old rule and counts, against the world's cells:
how many of the old split's held-out cells are really held out, and how many stage-1/2 training
targets (the ``sample`` split's training samples) and stage-1 triplet anchors sit on a cell the
LMM never drew. Seconds, NumPy only.

**The pilot** (``--pilot``): a stage-1 model trained on another LMM, scored under section 5's
protocol (``python -m drclib.evaluation --profile full --rows stage1_drc``, both splits) with
``$DRC_CHECKPOINTS`` pointing at a folder under ``--work`` that holds the shipped tokenizer,
encoder and judges, that LMM and that stage-1 model (the evaluation resumes, so a second run
only reads it back). The pilot of this fix, in a clone on the 2-core AMD EPYC, one thread each:

    python -m drclib.train stage1 --variant drc --threads 1 --lmm runs/pilots/lmm_augment_max_6000_seed1 \\
        --state-dir runs/fix/st/pilot --out runs/fix/pilot/stage1/drc
    python benchmarks/heldout_fix.py \\
        --pilot "augmented LMM=runs/pilots/lmm_augment_max_6000_seed1:runs/fix/pilot/stage1/drc"

(the LMM: ``benchmarks/lmm_recipes.py``'s "--augment 0.9 --copies 16, seed 1, 3,000 steps more"
row, RESULTS section 1). Section 5's own ``stage1_drc`` row is the same protocol on the shipped LMM.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _kit import in_repo, named_folder_pairs  # noqa: E402

def _cells(mask: np.ndarray) -> set:
    return set(map(tuple, np.argwhere(mask).tolist()))


def leak(profile: str) -> dict:
    """Counts for ``profile``'s dataset (seed 0) built with the old rule, against the world's cells."""
    import drclib.data.users as users
    from drclib.data import StickerSet, heldout_cells

    stickers = StickerSet.for_profile(profile)
    world = heldout_cells(stickers)
    fixed = users.make_dataset(stickers, profile, seed=0)
    own_grid = heldout_cells((stickers.n_styles, stickers.n_emoji))
    users.heldout_cells = lambda s: own_grid          # the rule make_dataset used before the fix
    try:
        old = users.make_dataset(stickers, profile, seed=0)
    finally:
        users.heldout_cells = heldout_cells
    train = old.samples.target[old.splits["sample"].train]
    on_world = world[train[:, 0], train[:, 1]]
    anchors = old.triplets.anchor
    return {"concepts": stickers.concept_name, "world_cells": int(world.sum()),
            "old_split_cells": int(old.heldout_cells.sum()),
            "old_split_cells_held_out": len(_cells(old.heldout_cells) & _cells(world)),
            "old_train_targets": int(len(train)), "old_train_targets_on_world_cells": int(on_world.sum()),
            "old_world_cells_trained_as_targets": len(set(map(tuple, train[on_world].tolist()))),
            "old_triplets": int(len(anchors)),
            "old_triplet_anchors_on_world_cells": int(world[anchors[:, 0], anchors[:, 1]].sum()),
            "fixed_split_equals_world": bool(np.array_equal(fixed.heldout_cells, world))}


def pilot(name: str, lmm: Path, stage1: Path, work: Path, threads: int) -> dict:
    """Section 5's stage1_drc row for a stage-1 model on another LMM (both splits). The checkpoint
    folder gets the parts the paper does not train from the shipped kit as ``make all ...
    PRETRAINED=paper`` copies them (:func:`drclib.reproduce.copy_pretrained`), then the two models."""
    from drclib.io import read_json
    from drclib.reproduce import GIVEN, copy_pretrained, training_steps

    folder = work / name.replace(" ", "_")
    ckpt = folder / "checkpoints"
    copy_pretrained(training_steps(str(folder / "state"), str(ckpt)), GIVEN, ROOT)
    for src, dst in ((lmm, ckpt / "lmm"), (stage1, ckpt / "stage1" / "drc")):
        if not (dst / "config.json").is_file():
            if not (src / "config.json").is_file():
                raise SystemExit(f"--pilot {name!r}: no model at {src} (train it first; see this script's docstring)")
            shutil.copytree(src, dst)
    out = folder / "evaluation"
    cmd = [sys.executable, "-m", "drclib.evaluation", "--profile", "full", "--rows", "stage1_drc",
           "--threads", str(threads), "--out", str(out)]
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "DRC_CHECKPOINTS": str(ckpt.resolve())},
                   stdout=subprocess.DEVNULL)
    results = read_json(out / "evaluation.json")
    card = read_json(stage1 / "config.json")["extra"]["evaluation"]["swap"]
    return {"lmm": str(lmm), "stage1": str(stage1),
            "splits": {s: {"n": e["stage1_drc"]["n"], **e["stage1_drc"]["ground_truth"]}
                       for s, e in results["splits"].items()},
            "swap": {kind: card[kind]["self"] for kind in ("train", "heldout")}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pilot", action="append", default=[], help="NAME=LMM_FOLDER:STAGE1_FOLDER")
    p.add_argument("--work", default="runs/heldout_fix")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="data/results/heldout_fix.json")
    args = p.parse_args(argv)

    from drclib.io import write_json
    from drclib.runtime import describe_machine

    t0 = time.perf_counter()
    out = {"command": "python benchmarks/heldout_fix.py " + shlex.join(sys.argv[1:] if argv is None else argv),
           "machine": describe_machine("cpu"), "leak": {}, "pilots": {}}
    for profile in ("full", "quick"):
        r = out["leak"][profile] = leak(profile)
        print(f"{r['concepts']}: {r['old_split_cells_held_out']} of the old split's {r['old_split_cells']} held-out "
              f"cells were held out; {r['old_train_targets_on_world_cells']} of {r['old_train_targets']} training "
              f"targets sat on {r['old_world_cells_trained_as_targets']} of the {r['world_cells']} cells the LMM never "
              f"drew, {r['old_triplet_anchors_on_world_cells']} of {r['old_triplets']} triplet anchors too")
    for name, lmm, stage1 in named_folder_pairs(args.pilot, "--pilot"):
        r = out["pilots"][name] = pilot(name, lmm, stage1, in_repo(args.work), args.threads)
        print(f"{name}: 'both' {r['splits']['sample']['both']:.3f} on sample, {r['splits']['heldout']['both']:.3f} "
              f"on heldout; swap test {r['swap']['train']['both']:.3f} / {r['swap']['heldout']['both']:.3f}")
    out["minutes"] = round((time.perf_counter() - t0) / 60, 2)
    write_json(in_repo(args.out), out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
