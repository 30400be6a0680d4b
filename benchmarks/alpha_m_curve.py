"""What alpha_m trades (eq. 5): the shipped DRC pipelines at several fixed alpha_m, beside stage 1 alone.

Section 5's evaluation scores every masked method at one alpha_m (0.5). Stage 2 then lands
below the stage-1 model it starts from, which reads every reference token; is that the fine-tuning
or the mask? This script scores the shipped DRC and DRC w/o Aug pipelines at each alpha_m of a
grid (alpha_m = 0 keeps every reference token, as stage 1 alone does), on the same test samples
and references as the stage-2 cards (the full profile's `sample` and `heldout` test samples,
one reference per sample, greedy, alpha_s 0.2), judged by the kit's classifiers:

    python benchmarks/alpha_m_curve.py --threads 1     # writes data/results/alpha_m_curve.json

RESULTS section 4 quotes the JSON (rates with their standard errors).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _kit import full_profile_data  # noqa: E402  (this folder)

RATES = ("style_acc", "emoji_top1", "both", "collapse_reference", "collapse_history")
PIPELINES = {"drc": "DRC (stage 2)", "drc_no_aug": "w/o Aug", "stage1_drc": "stage 1 only"}


def table(rows) -> str:
    """The markdown table RESULTS shows: a line per row (split, pipeline, alpha_m), `sample` first."""
    from drclib.judges.metrics import format_rate

    out = ["| split | pipeline | alpha_m | user's style | reference's emoji | both | collapse: reference's style |",
           "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: r["split"] != "sample"):
        a = "n/a (no mask)" if r["alpha_m"] is None else f"{r['alpha_m']:.2f}"
        out.append(f"| {r['split']} | {PIPELINES[r['pipeline']]} | {a} | "
                   + " | ".join(format_rate(r[k], r["n"]) for k in ("style_acc", "emoji_top1", "both",
                                                                      "collapse_reference")) + " |")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    p.add_argument("--n", type=int, default=300, help="test samples per split (the heldout split has 64)")
    p.add_argument("--out", default=str(ROOT / "data" / "results" / "alpha_m_curve.json"))
    args = p.parse_args(argv)
    if any(not 0.0 <= a <= 1.0 for a in args.alphas):
        raise SystemExit(f"--alphas must lie in [0, 1], got {args.alphas}")
    t0 = time.perf_counter()
    device, stickers, data = full_profile_data(args.threads)
    from drclib import judges
    from drclib.evaluation import load_method
    from drclib.io import write_json
    from drclib.pipeline import evaluate_personalization
    from drclib.runtime import describe_machine
    style_clf, emoji_clf = judges.load_judges(stickers, device)
    rows = {}                                    # "<pipeline> <split> <alpha_m or ->": its rates
    for name in PIPELINES:
        pipe = load_method(name, device=device)
        alphas = [None] if name == "stage1_drc" else args.alphas    # stage 1 has no mask generator
        for split in ("sample", "heldout"):
            test = data.splits[split].test[:args.n]
            for a in alphas:
                r = evaluate_personalization(pipe, stickers, data.samples, test, style_clf, emoji_clf,
                                             alpha_m=0.5 if a is None else a, alpha_s=0.2)
                row = {"pipeline": name, "split": split, "alpha_m": a, "n": int(len(test)),
                       **{k: float(r[k]) for k in RATES}}
                rows[f"{name} {split} {'-' if a is None else a}"] = row
                print(f"{PIPELINES[name]:14s} {split:8s} alpha_m {'-' if a is None else f'{a:.2f}':>5s}: "
                      + "  ".join(f"{k} {row[k]:.3f}" for k in RATES), flush=True)
    out = {"command": "python benchmarks/alpha_m_curve.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "machine": describe_machine(device), "seconds": round(time.perf_counter() - t0, 1),
           "alpha_s": 0.2, "rows": rows, "table": table(rows.values())}
    write_json(args.out, out)
    print(out["table"])
    print(f"wrote {args.out} ({out['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
