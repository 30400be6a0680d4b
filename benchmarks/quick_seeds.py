"""The quick reproduction over several seeds: the spread its CI test's margins come from.

Runs ``python -m drclib.train quick --seed S --lanes 1`` for every seed (two seeds at a time, one
torch thread each, on the 2-core CPU), reads their JSON and prints, per row (DRC, w/o FusionNetwork,
Pigeon), the pooled "both" and collapse-to-the-reference rates of every seed, and the gaps the
test checks (DRC - Pigeon and DRC - w/o FusionNetwork in "both", Pigeon - DRC in collapse):
their smallest value, mean and standard deviation over seeds.

    python benchmarks/quick_seeds.py --seeds 0 1 2 3 4      # writes data/results/quick_seeds.json
    python benchmarks/quick_seeds.py --collect               # only re-read finished runs
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GAPS = {"both_vs_pigeon": ("drc", "pigeon", "both", +1), "both_vs_concat": ("drc", "concat", "both", +1),
        "collapse_vs_pigeon": ("drc", "pigeon", "collapse_reference", -1)}
"""Each checked gap: (row, other row, rate, sign); the gap is sign * (row's rate - other's)."""


def run_seeds(seeds, runs: Path, parallel: int = 2) -> None:
    from drclib.runtime import thread_env

    env = thread_env(1)
    todo = [s for s in seeds if not (runs / f"seed{s}" / "quick_reproduction.json").is_file()]
    running = []
    while todo or running:
        while todo and len(running) < parallel:
            s = todo.pop(0)
            log = open(runs / f"seed{s}.log", "w")
            cmd = [sys.executable, "-m", "drclib.train", "quick", "--seed", str(s), "--threads", "1", "--lanes", "1", "--quiet",
                   "--out", str(runs / f"seed{s}")]
            running.append((s, subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), log))
            print(f"seed {s} started", flush=True)
        time.sleep(5)
        for item in list(running):
            s, proc, log = item
            if proc.poll() is not None:
                log.close()
                running.remove(item)
                print(f"seed {s} finished (exit {proc.returncode})", flush=True)


def summarise(results: list[dict]) -> dict:
    rows = {}
    for r in results:
        for row, p in r["pooled"].items():
            rows.setdefault(row, {"both": [], "collapse_reference": [], "emoji_top1": [], "style_acc": []})
            for k in rows[row]:
                rows[row][k].append(p[k])
    gaps = {}
    for name, (a, b, rate, sign) in GAPS.items():
        g = [sign * (r["pooled"][a][rate] - r["pooled"][b][rate]) for r in results]
        gaps[name] = {"values": g, "min": float(min(g)), "mean": float(np.mean(g)),
                      "sd": float(np.std(g, ddof=1)) if len(g) > 1 else 0.0}
    return {"seeds": [r["seed"] for r in results], "n": results[0]["pooled"]["drc"]["n"],
            "rows": {row: {k: {"values": v, "mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1
                               else 0.0} for k, v in d.items()} for row, d in rows.items()},
            "gaps": gaps, "minutes": [r["total_minutes"] for r in results],
            "failures": {r["seed"]: r["direction_failures"] for r in results}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--runs", default=str(ROOT / "runs" / "quick-seeds"))
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--collect", action="store_true", help="do not run, only read finished seeds")
    p.add_argument("--out", default=str(ROOT / "data" / "results" / "quick_seeds.json"))
    args = p.parse_args(argv)
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    if not args.collect:
        run_seeds(args.seeds, runs, args.parallel)
    results = [json.loads((runs / f"seed{s}" / "quick_reproduction.json").read_text()) for s in args.seeds
               if (runs / f"seed{s}" / "quick_reproduction.json").is_file()]
    if not results:
        print("no finished seeds in", runs)
        return 1
    from drclib.io import write_json
    from drclib.train.quick import MARGINS

    summary = summarise(results)
    summary.update(command="python benchmarks/quick_seeds.py " + " ".join(argv or sys.argv[1:]),
                   machine=results[0]["machine"], recipe=results[0]["recipe"], margins=MARGINS)
    print(f"{'seed':>5} " + " ".join(f"{row + ' ' + k:>22s}" for row in ("drc", "concat", "pigeon")
                                     for k in ("both", "collapse_reference")[:1 if row == "concat" else 2]))
    for r in results:
        print(f"{r['seed']:>5} " + " ".join(f"{r['pooled'][row][k]:>22.3f}" for row in ("drc", "concat", "pigeon")
                                           for k in ("both", "collapse_reference")[:1 if row == "concat" else 2]))
    for name, g in summary["gaps"].items():
        print(f"{name:20s} min {g['min']:.3f}  mean {g['mean']:.3f}  sd {g['sd']:.3f}  margin used {MARGINS[name]}")
    write_json(args.out, summary)
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
