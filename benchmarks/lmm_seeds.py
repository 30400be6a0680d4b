"""How much the pocket LMM's figures move between training seeds: the noise a retrain is judged against.

    python benchmarks/lmm_seeds.py --train [--seeds 1 2] [--root runs/lmm_seeds]
                                   [--with NAME=FOLDER ...] [--out data/results/lmm_seeds.json]

``benchmarks/lab_recipe.py`` calls a retrained part "within noise" of its card when the difference
is inside two binomial standard errors of the difference (n = 300 training cells): the noise of
*scoring* one LMM on 300 cells. It leaves out the noise of *training* one: another seed of the
same recipe on the same data draws different cells right. This script measures that. It trains
the LMM with ``make all``'s recipe (``python -m drclib.train backbone --concepts core --no-bf16``:
the card's 1,200 steps of batch 32, float32, on the shipped tokenizer and judges) for each of
``--seeds`` (``--train`` trains the missing ones, two at a time, one torch thread each: about
17 minutes for two on the 2-core AMD EPYC), reads each card's own evaluation (greedy
text-to-image, 300 training cells and the 64 held-out cells, the judges' argmax over `core`),
and prints, beside the shipped LMM (seed 0), each seed's figures and their spread: the mean and
the standard deviation across runs, against the binomial standard error of one run's figure.
``--with NAME=FOLDER`` adds LMMs trained elsewhere with the same recipe (``make all``'s, say).

Last, every retrain's LMM that ``benchmarks/lab_recipe.py`` compared (``data/results/card_*.json``)
is placed against the spread: how many standard deviations of the seeds it lies from their mean.
RESULTS section 7 quotes the JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _kit import named_paths  # noqa: E402
from lmm_recipes import pm, row  # noqa: E402

FIGURES = (("train_cells", "emoji_top1"), ("train_cells", "both"), ("train_cells", "style_acc"),
           ("heldout_cells", "emoji_top1"), ("heldout_cells", "both"))
"""(split, figure) pairs of the LMM card's evaluation that the spread is taken over."""


def command(seed: int, out: Path) -> list:
    return [sys.executable, "-m", "drclib.train", "backbone", "--concepts", "core", "--no-bf16",
            "--seed", str(seed), "--threads", "1", "--out", str(out)]


def train(todo: dict, lanes: int = 2) -> None:
    """Train ``{seed: folder}`` with :func:`command`, ``lanes`` at a time, one thread each; each
    command's output goes to ``<folder>.log``."""
    from drclib.runtime import thread_env

    waiting, running = list(todo.items()), []
    while waiting or running:
        while waiting and len(running) < lanes:
            seed, out = waiting.pop(0)
            out.parent.mkdir(parents=True, exist_ok=True)
            log = open(f"{out}.log", "w")
            print("$", " ".join(command(seed, out)[1:]), f"  (log {out}.log)", flush=True)
            running.append((seed, subprocess.Popen(command(seed, out), cwd=ROOT, env=thread_env(1),
                                                   stdout=log, stderr=subprocess.STDOUT), log))
        time.sleep(5)
        for item in list(running):
            seed, proc, log = item
            if proc.poll() is not None:
                log.close()
                running.remove(item)
                if proc.returncode:
                    raise RuntimeError(f"seed {seed} failed (exit {proc.returncode}); see {log.name}")
                print(f"seed {seed} done", flush=True)


def spread(rows: dict, figures=FIGURES) -> dict:
    """Per figure (``(split, figure)`` pairs): the runs' values, their mean, the standard deviation
    across runs (n - 1), the lowest and highest with the runs that gave them, and the binomial
    standard error of one run's figure at the mean (its scoring noise)."""
    out = {}
    for split, fig in figures:
        vals = [r[split][fig] for r in rows.values()]
        names = list(rows)
        n_cells = min(r[split]["n_cells"] for r in rows.values())
        mean = sum(vals) / len(vals)
        sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else float("nan")
        lo, hi = min(range(len(vals)), key=vals.__getitem__), max(range(len(vals)), key=vals.__getitem__)
        out[f"{split}.{fig}"] = {"values": vals, "mean": mean, "sd": sd, "n_runs": len(vals),
                                 "min": vals[lo], "min_run": names[lo], "max": vals[hi], "max_run": names[hi],
                                 "binomial_se": math.sqrt(max(mean * (1 - mean), 0.0) / n_cells), "n_cells": n_cells}
    return out


def retrains(results: Path, spreads: dict) -> dict:
    """Each retrain's LMM that lab_recipe.py compared (``card_*.json`` with a ``pocket LMM`` part),
    placed against the seeds: its value and (value - mean) / sd for every figure both have."""
    out = {}
    for path in sorted(results.glob("card_*.json")):
        part = json.loads(path.read_text()).get("by_part", {}).get("pocket LMM")
        if not part:
            continue
        out[path.stem] = {k: {"retrained": v["retrained"],
                              "z": (v["retrained"] - spreads[k]["mean"]) / spreads[k]["sd"]
                              if spreads[k]["sd"] and spreads[k]["sd"] == spreads[k]["sd"] else None}
                          for k, v in part.items() if k in spreads}
    return out


def table(rows: dict, spreads: dict) -> str:
    heads = [f"{s.replace('_cells', '')}: {f.replace('_top1', '').replace('_acc', '')}" for s, f in FIGURES]
    out = ["| run | minutes | " + " | ".join(heads) + " |", "|---|---|" + "---|" * len(FIGURES)]
    for name, r in rows.items():
        out.append(f"| {name} | {r['train_minutes']:.1f} | " + " | ".join(
            pm(r[s][f], r[s]["n_cells"]) for s, f in FIGURES) + " |")
    out.append("| **mean ± SD across runs** | | " + " | ".join(
        f"**{spreads[f'{s}.{f}']['mean']:.3f} ± {spreads[f'{s}.{f}']['sd']:.3f}**" for s, f in FIGURES) + " |")
    return "\n".join(out)


def main(argv: list | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--root", default="runs/lmm_seeds")
    p.add_argument("--train", action="store_true", help="train the seeds whose folder is missing")
    p.add_argument("--lanes", type=int, default=2, choices=(1, 2))
    p.add_argument("--with", dest="extra", nargs="*", default=[], metavar="NAME=FOLDER",
                   help="LMMs trained elsewhere with the same recipe (e.g. make all's)")
    p.add_argument("--out", default="data/results/lmm_seeds.json")
    args = p.parse_args(argv)
    from drclib.backbone import default_checkpoint_dir
    from drclib.io import write_json
    from drclib.runtime import describe_machine

    folders = {s: Path(args.root) / f"seed_{s}" for s in args.seeds}
    missing = {s: f for s, f in folders.items() if row(f) is None}
    if missing and args.train:
        t0 = time.perf_counter()
        train(missing, args.lanes)
        print(f"trained {len(missing)} seed(s) in {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
    rows = {"shipped LMM (seed 0)": row(default_checkpoint_dir())}
    for name, folder in named_paths(args.extra, "--with").items():
        if row(folder) is None:
            raise SystemExit(f"--with {name}={folder}: no trained LMM in {folder} (expected its config.json)")
        rows[name] = row(folder)
    for s, f in folders.items():
        if row(f) is None:
            print(f"seed {s}: not trained ({f}); run with --train", file=sys.stderr)
            continue
        rows[f"seed {s}"] = row(f)
    if len(rows) < 2:
        raise SystemExit("need at least two trained LMMs for a spread")
    spreads = spread(rows)
    placed = retrains(ROOT / "data" / "results", spreads)
    print(table(rows, spreads))
    for name, figs in placed.items():
        print(f"{name}: " + ", ".join(f"{k} {v['retrained']:.3f} (z {v['z']:+.1f})" for k, v in figs.items()
                                      if v["z"] is not None))
    write_json(args.out, {"command": "python benchmarks/lmm_seeds.py " + " ".join(sys.argv[1:] if argv is None else argv),
                          "machine": describe_machine(), "rows": rows, "spread": spreads, "retrains": placed,
                          "table": table(rows, spreads)})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
