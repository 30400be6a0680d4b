"""Does stage 2's semantic-preserving augmentation help, or is one run's gap seed noise? The
shipped DRC and w/o Aug pipelines (seed 0) beside the same two recipes retrained with other
seeds on the same shipped stage-1 model, each scored by its own card (the stage-2 command's
evaluation: 300 test samples of ``sample``, the 64 of ``heldout``, alpha_m 0.5, the shipped
judges), with the mean and standard deviation over seeds and, seed by seed, DRC minus w/o Aug.

    # two lanes of one thread (about 5 minutes a pair on the 2-core AMD EPYC), seeds 1 and 2:
    python -m drclib.train stage2 --seed 1 --threads 1 --state-dir runs/s2seeds/st_drc_s1 --out runs/s2seeds/drc_s1
    python -m drclib.train stage2 --seed 1 --no-augment --threads 1 --state-dir runs/s2seeds/st_noaug_s1 \\
        --out runs/s2seeds/noaug_s1
    python benchmarks/stage2_seeds.py data/checkpoints/drc/drc data/checkpoints/drc_no_aug/drc \\
        runs/s2seeds/drc_s1/drc runs/s2seeds/noaug_s1/drc runs/s2seeds/drc_s2/drc runs/s2seeds/noaug_s2/drc

Reads only the cards (``config.json``'s ``extra``): nothing is trained or scored here. Every card
must start from the same stage-1 model and train as many steps, or the comparison would mix
two questions.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

from drclib.io import write_json
from drclib.judges.metrics import diff_se, format_rate

sys.path.insert(0, str(Path(__file__).resolve().parent))   # this folder, also when a test loads the script
from _kit import read_card  # noqa: E402

FIGURES = (("style_acc", "user's style"), ("emoji_top1", "reference's emoji"), ("both", "both"),
           ("collapse_reference", "collapse: reference's style"))
METHODS = {True: "DRC (stage 2)", False: "w/o Aug"}


def runs_of(cards: dict) -> dict:
    """``{folder: card}`` as ``{(augment, seed): {"folder", "stage1", "minutes", "evaluation"}}``;
    a clear exit on two cards of one (recipe, seed), or on cards from different stage-1 models or of
    different lengths (stage-2 steps)."""
    out, stage1, steps = {}, set(), set()
    for folder, card in cards.items():
        s2 = card["stage2"]
        key = (bool(s2["augment"]), int(s2["seed"]))
        if key in out:
            raise SystemExit(f"two cards of {METHODS[key[0]]} seed {key[1]}: {out[key]['folder']} and {folder}")
        stage1.add(str(card.get("stage1")))
        steps.add(int(s2["steps"]))
        out[key] = {"folder": str(folder), "stage1": card.get("stage1"), "minutes": card.get("train_minutes"),
                    "steps": s2["steps"], "evaluation": card["evaluation"]}
    if len(stage1) > 1:
        raise SystemExit(f"the cards start from different stage-1 models ({sorted(stage1)}): compare like with like")
    if len(steps) > 1:
        raise SystemExit(f"the cards trained for different numbers of steps ({sorted(steps)}): compare like with like")
    return out


def summarise(runs: dict) -> dict:
    """Per split and recipe: each seed's figures, their mean and standard deviation across seeds
    (n - 1); per split the seed-paired difference DRC - w/o Aug of "both" (each with its binomial
    standard error) and the mean difference with its standard error across seeds."""
    out = {}
    splits = sorted({s for r in runs.values() for s in r["evaluation"]}, key=lambda s: (s != "sample", s))
    for split in splits:
        o = out[split] = {"methods": {}, "stage1_only": None, "difference": {}}
        for aug in (True, False):
            seeds = sorted(seed for a, seed in runs if a == aug)
            if not seeds:
                continue
            rows = {seed: runs[(aug, seed)]["evaluation"][split]["drc"] for seed in seeds}
            stats = {}
            for fig, _ in FIGURES:
                vals = [float(rows[s][fig]) for s in seeds]
                stats[fig] = {"mean": statistics.fmean(vals), "sd": statistics.stdev(vals) if len(vals) > 1 else None}
            o["methods"][METHODS[aug]] = {"seeds": {str(s): rows[s] for s in seeds}, "mean": stats, "n_seeds": len(seeds)}
            if o["stage1_only"] is None:
                o["stage1_only"] = runs[(aug, seeds[0])]["evaluation"][split]["stage1_only"]
        paired = sorted(s for a, s in runs if a and (False, s) in runs)
        diffs = {}
        for s in paired:
            d, w = runs[(True, s)]["evaluation"][split]["drc"], runs[(False, s)]["evaluation"][split]["drc"]
            diffs[str(s)] = {"value": float(d["both"]) - float(w["both"]),
                             "se": diff_se(float(d["both"]), int(d["n"]), float(w["both"]), int(w["n"]))}
        vals = [v["value"] for v in diffs.values()]
        o["difference"] = {"seeds": diffs, "mean": statistics.fmean(vals) if vals else None,
                           "se_over_seeds": statistics.stdev(vals) / math.sqrt(len(vals)) if len(vals) > 1 else None,
                           "n_seeds": len(vals),
                           "positive": sum(v > 0 for v in vals)}
    return out


def table(summary: dict) -> str:
    """Markdown: per split, each recipe's seeds (rates ± binomial SE), its mean ± SD over seeds, the
    stage-1 model alone, and DRC minus w/o Aug on "both" (seed-paired; the mean ± its SE over seeds)."""
    lines = ["| split | pipeline | seed | " + " | ".join(t for _, t in FIGURES) + " |",
             "|---|---|---|" + "---|" * len(FIGURES)]
    for split, o in summary.items():
        for name, m in o["methods"].items():
            for seed, r in m["seeds"].items():
                lines.append(f"| {split} | {name} | {seed} | " +
                             " | ".join(format_rate(float(r[f]), int(r["n"])) for f, _ in FIGURES) + " |")
            if m["n_seeds"] > 1:
                lines.append(f"| {split} | **{name}, mean ± SD over seeds** | {m['n_seeds']} seeds | " + " | ".join(
                    f"**{m['mean'][f]['mean']:.3f} ± {m['mean'][f]['sd']:.3f}**" for f, _ in FIGURES) + " |")
        s1 = o["stage1_only"]
        if s1:
            lines.append(f"| {split} | *stage 1 only* | n/a | " +
                         " | ".join(format_rate(float(s1[f]), int(s1["n"])) for f, _ in FIGURES) + " |")
        d = o["difference"]
        if d["n_seeds"]:
            each = ", ".join(f"{v['value']:+.3f} ± {v['se']:.3f}" for v in d["seeds"].values())
            mean = f"{d['mean']:+.3f}" + (f" ± {d['se_over_seeds']:.3f}" if d["se_over_seeds"] is not None else "")
            lines.append(f"| {split} | DRC - w/o Aug, \"both\" | {', '.join(d['seeds'])} | | | "
                         f"{each}; mean {mean} | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folders", nargs="+", help="stage-2 pipelines' folders (each with its config.json card)")
    p.add_argument("--out", default="data/results/stage2_seeds.json")
    args = p.parse_args(argv)
    runs = runs_of({f: read_card(f, "stage-2") for f in args.folders})
    summary = summarise(runs)
    out = {"command": "python benchmarks/stage2_seeds.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "runs": {f"{METHODS[a]}, seed {s}": {k: v for k, v in r.items() if k != "evaluation"}
                    for (a, s), r in sorted(runs.items(), key=lambda kv: (not kv[0][0], kv[0][1]))},
           "splits": summary, "table": table(summary)}
    print(out["table"])
    write_json(args.out, out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
