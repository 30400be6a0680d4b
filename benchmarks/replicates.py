"""Two retrains of the same recipe side by side: how far apart does the same command land?

    python benchmarks/replicates.py data/results/card_pretrained_fp32lmm.json \\
        data/results/card_pretrained_amd.json [--out data/results/replicates.json]

``benchmarks/lab_recipe.py`` compares one retrain with the shipped cards and calls a figure
"within noise" when the difference is inside two standard errors of it, the binomial standard
errors of *scoring* each model on its cells. Whether that is the right yardstick depends on how
much the *training* moves a figure: two runs of one command (same recipe, same seed, other
machine or other floating-point order) should then differ by about one such standard error.
This script reads two (or more) of lab_recipe.py's JSONs made with the same ``run_command`` and,
for every figure all of them compared, gives each run's value beside the shipped one, the
spread between the runs in standard errors, and a summary: how many of the runs' differences
from each other are within two standard errors, and the root mean square of
difference / standard error (about 1 when scoring noise explains the spread; well above 1 when
training noise adds to it), overall and per part. RESULTS section 7 quotes the JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def n_cells(entry: dict) -> float | None:
    """The number of cells behind a binomial figure, recovered from lab_recipe.py's standard error
    of its difference (both sides were scored on the same number of cells)."""
    se, s, r = entry.get("se_diff"), entry["shipped"], entry["retrained"]
    var = s * (1 - s) + r * (1 - r)
    if not se or var <= 0 or not (0 <= s <= 1 and 0 <= r <= 1):
        return None
    return var / se ** 2


def compare(runs: dict) -> dict:
    """``runs``: name -> a lab_recipe.py JSON. Returns ``{"rows": [...], "summary": {...}}``: per
    figure (part, key) that every run compared and that has a binomial standard error, the runs'
    values and each pair's difference in standard errors; the summary counts pairs within two
    standard errors and the root mean square of the z's, overall and per part, beside each run's
    own z's against the shipped card."""
    names = list(runs)
    by_key = [{(e["part"], e["key"]): e for e in runs[n]["compared"]} for n in names]
    keys = [k for k in by_key[0] if all(k in b for b in by_key[1:])]
    rows = []
    for key in keys:
        entries = [b[key] for b in by_key]
        ns = [n_cells(e) for e in entries]
        if any(n is None for n in ns):
            continue
        n = min(ns)
        vals = [e["retrained"] for e in entries]
        pairs = {}
        for (i, a), (j, b) in itertools.combinations(enumerate(vals), 2):
            se = math.sqrt((a * (1 - a) + b * (1 - b)) / n)
            pairs[f"{names[i]} - {names[j]}"] = {"diff": a - b, "se": se, "z": (a - b) / se if se else None}
        rows.append({"part": key[0], "key": key[1], "what": entries[0]["what"], "n": round(n),
                     "shipped": entries[0]["shipped"], "runs": dict(zip(names, vals)),
                     "vs_shipped_z": {nm: (e["diff"] / e["se_diff"] if e["se_diff"] else None)
                                      for nm, e in zip(names, entries)},
                     "pairs": pairs})

    def stats(zs: list) -> dict:
        zs = [z for z in zs if z is not None]
        return {"n": len(zs), "within_2se": sum(abs(z) <= 2 for z in zs),
                "rms_z": math.sqrt(sum(z * z for z in zs) / len(zs)) if zs else None}

    summary = {"between_runs": stats([p["z"] for r in rows for p in r["pairs"].values()]),
               "vs_shipped": {nm: stats([r["vs_shipped_z"][nm] for r in rows]) for nm in names},
               "by_part": {}}
    for part in dict.fromkeys(r["part"] for r in rows):
        summary["by_part"][part] = stats([p["z"] for r in rows if r["part"] == part for p in r["pairs"].values()])
    return {"rows": rows, "summary": summary}


def summary_table(result: dict, names: list) -> str:
    """Per part: how many of its figures the runs compared, how many of the runs' differences from
    each other are within two standard errors, and their root mean square z; then every run
    against the shipped cards the same way."""
    s = result["summary"]
    out = ["| part | figures | runs within 2 SE of each other | rms z between runs |", "|---|---|---|---|"]
    for part, v in s["by_part"].items():
        out.append(f"| {part} | {v['n']} | {v['within_2se']} | {v['rms_z']:.2f} |")
    b = s["between_runs"]
    out.append(f"| **every part** | **{b['n']}** | **{b['within_2se']}** | **{b['rms_z']:.2f}** |")
    for nm in names:
        v = s["vs_shipped"][nm]
        out.append(f"| {nm} against the shipped cards | {v['n']} | {v['within_2se']} | {v['rms_z']:.2f} |")
    return "\n".join(out)


def table(result: dict, names: list) -> str:
    out = ["| part | figure | shipped | " + " | ".join(names) + " | between runs (z) |",
           "|---|---|---|" + "---|" * len(names) + "---|"]
    for r in result["rows"]:
        zs = ", ".join(f"{p['z']:+.1f}" for p in r["pairs"].values() if p["z"] is not None)
        out.append(f"| {r['part']} | {r['what']} | {r['shipped']:.3f} | "
                   + " | ".join(f"{r['runs'][n]:.3f}" for n in names) + f" | {zs} |")
    return "\n".join(out)


def main(argv: list | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="lab_recipe.py JSONs of the same run command")
    p.add_argument("--out", default="data/results/replicates.json")
    args = p.parse_args(argv)
    if len(args.runs) < 2:
        raise SystemExit("give at least two lab_recipe.py JSONs")
    runs = {}
    for path in args.runs:
        f = Path(path)
        if not f.is_file():
            raise SystemExit(f"no such file: {path} (benchmarks/lab_recipe.py writes it)")
        runs[f.stem] = json.loads(f.read_text())
    commands = {r.get("run_command") for r in runs.values()}
    if len(commands) != 1:
        raise SystemExit(f"the runs were made by different commands ({sorted(map(str, commands))}): not replicates")
    result = compare(runs)
    s = result["summary"]
    print(table(result, list(runs)))
    print(summary_table(result, list(runs)))
    b = s["between_runs"]
    print(f"between runs: {b['within_2se']} of {b['n']} within 2 SE, rms z {b['rms_z']:.2f}; against the shipped card: "
          + "; ".join(f"{nm} {v['within_2se']}/{v['n']}, rms z {v['rms_z']:.2f}" for nm, v in s["vs_shipped"].items()))
    from drclib.io import write_json

    write_json(ROOT / args.out if not Path(args.out).is_absolute() else args.out,
               {"command": "python benchmarks/replicates.py " + " ".join(sys.argv[1:] if argv is None else argv),
                "run_command": commands.pop(), "machines": {nm: r.get("machine") for nm, r in runs.items()},
                **result, "table": summary_table(result, list(runs)), "rows_table": table(result, list(runs))})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
