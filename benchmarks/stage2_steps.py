"""Why the lab recipe's stage 2 falls short of its card: stage-2 cards side by side (steps,
minutes, the loss along the way, and each card's own scoring of the pipeline against the stage-1
model it starts from), written to one JSON that RESULTS section 7 quotes.

    # the stage-2 pipelines compared (one thread each, two at a time), on the shipped stage 1:
    python -m drclib.train stage2 --steps 100 --threads 1 --state-dir runs/s2/st100 --out runs/s2/drc100
    python -m drclib.train stage2 --steps 200 --threads 1 --state-dir runs/s2/st200 --out runs/s2/drc200
    python benchmarks/stage2_steps.py shipped=data/checkpoints/drc/drc lab100=runs/s2/drc100/drc \\
        card200=runs/s2/drc200/drc --out data/results/stage2_steps.json

Each card scores its pipeline and, beside it, the stage-1 model alone (``stage1_only``: the
same prompts without stage 2's adapters) on 300 test samples of ``sample`` and all of
``heldout``, with the shipped judges. Reads only the cards (``config.json``'s ``extra``):
nothing is trained or scored here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from drclib.io import write_json
from drclib.judges.metrics import rate_se

sys.path.insert(0, str(Path(__file__).resolve().parent))   # this folder, also when a test loads the script
from _kit import named_paths, read_card  # noqa: E402

AT_STEPS = (25, 50, 75, 100, 150, 200)


def entry(extra: dict) -> dict:
    hist = extra.get("history", {})
    loss = {}
    if hist.get("step"):
        st, values = np.asarray(hist["step"]), np.asarray(hist["loss"], dtype=float)
        for t in AT_STEPS:
            if t <= st.max() + 1:
                i = int(np.argmin(abs(st - t)))
                loss[str(t)] = round(float(values[max(0, i - 2):i + 3].mean()), 3)
    scores = {}
    for split, rows in extra["evaluation"].items():
        for name in ("drc", "stage1_only"):
            r = rows[name]
            scores.setdefault(split, {})[name] = {
                k: {"value": round(float(r[k]), 4), "se": round(rate_se(float(r[k]), int(r["n"])), 4)}
                for k in ("both", "emoji_top1", "style_acc", "collapse_reference")} | {"n": int(r["n"])}
    return {"command": extra.get("command"), "steps": extra["stage2"]["steps"], "lr": extra["stage2"]["lr"],
            "warmup": extra["stage2"].get("warmup"), "stage1": extra.get("stage1"),
            "train_minutes": extra.get("train_minutes"), "machine": extra.get("machine"),
            "loss": loss, "evaluation": scores}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("cards", nargs="+", metavar="NAME=FOLDER", help="a stage-2 model's folder (its config.json)")
    p.add_argument("--out", default="data/results/stage2_steps.json")
    args = p.parse_args(argv)
    out = {"command": "python benchmarks/stage2_steps.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "stage2": {}}
    for name, folder in named_paths(args.cards, "a stage-2 card").items():
        out["stage2"][name] = e = entry(read_card(folder, "stage-2"))
        for split, rows in e["evaluation"].items():
            d, s = rows["drc"], rows["stage1_only"]
            print(f"{name:10s} {e['steps']:4d} steps {e['train_minutes'] or 0:5.1f} min | {split:8s} "
                  f"both {d['both']['value']:.3f} ± {d['both']['se']:.3f} (stage 1 alone {s['both']['value']:.3f}) "
                  f"collapse {d['collapse_reference']['value']:.3f}")
    write_json(args.out, out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
