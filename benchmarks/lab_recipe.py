"""How close a retrain from scratch comes to the shipped kit, part by part, and how long it took.

    make all PROFILE=full FROM_SCRATCH=1 RECIPE=lab        # the retrain (writes runs/full-lab/)
    python benchmarks/lab_recipe.py --run runs/full-lab     # ~10 min; writes data/results/lab_recipe.json

    make all PROFILE=full FROM_SCRATCH=1 RECIPE=lab PRETRAINED=paper   # tokenizer, judges, tiny CLIP shipped
    python benchmarks/lab_recipe.py --run runs/full-lab-pretrained --out data/results/lab_pretrained_lmm800.json
    # (that run's LMM had 800 steps; the lab recipe now keeps the card's 1,200: RESULTS section 7)

    make all PROFILE=full FROM_SCRATCH=1 PRETRAINED=paper              # the cards' own recipes
    python benchmarks/lab_recipe.py --run runs/full-pretrained --out data/results/card_pretrained.json
    # (that run trained the LMM in bf16; make all now trains it in float32 as its card was:)
    python benchmarks/lab_recipe.py --run runs/full-pretrained --out data/results/card_pretrained_fp32lmm.json

    make all PROFILE=full FROM_SCRATCH=1                                 # every part, the cards' recipes
    python benchmarks/lab_recipe.py --run runs/full --out data/results/card_scratch.json

Reads the run's time table (``runs/full-lab/reproduce.json``) and compares what it trained with
the shipped cards, under one yardstick:

- the parts that need no judge (tokenizer, the two judges themselves, tiny CLIP, semantic
  encoder) by the figures on their cards (``drclib.yardstick.compare_with_cards``);
- everything from the pocket LMM on by the **shipped** judges and tiny CLIP
  (``drclib.yardstick.yardstick_evaluation``): the LMM's text-to-image on its card's cells, and
  every method row of section 5's evaluation (DRC, its ablations, the stage-1 variants, the
  trained baselines) on both splits. The retrain's own evaluation (``07_evaluation``, scored by
  its own judges) is what ``make all`` reports; this one changes only who judges.

Each figure comes with the difference from the shipped one and its standard error, and whether
the difference is within two of them. RESULTS section 7 and README quote the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default="runs/full-lab", help="the retrain's folder (with checkpoints/ and reproduce.json)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="data/results/lab_recipe.json")
    args = p.parse_args(argv)

    import torch

    from drclib import reproduce as rp
    from drclib import yardstick as ys
    from drclib.io import atomic_path
    from drclib.runtime import describe_machine, pick_device

    torch.set_num_threads(args.threads)
    pick_device("cpu")
    run = Path(args.run) if Path(args.run).is_absolute() else ROOT / args.run
    record = json.loads((run / "reproduce.json").read_text())
    if not record.get("from_scratch"):
        raise SystemExit(f"{run / 'reproduce.json'} is not a from-scratch run: nothing to compare")
    t0 = time.perf_counter()
    compared = [e for e in ys.compare_with_cards(run / "checkpoints")    # a copied part equals its card
                if e["part"] not in record.get("pretrained", [])]
    judged = ys.yardstick_evaluation(run, record.get("profile", "full"))
    shipped_lmm = json.loads((ROOT / rp.SHIPPED / "lmm" / "config.json").read_text())["extra"]["evaluation"]
    shipped_eval = json.loads((ROOT / "data/results/evaluation_full/evaluation.json").read_text())
    compared += ys.compare_judged(judged, shipped_lmm, shipped_eval)

    seconds = record["seconds"]
    training = [s.name for s in rp.training_steps("st", "ck", record.get("recipe", "card"))]
    expected = rp.expected_minutes(record.get("recipe", "card"))
    out = {
        "command": "python benchmarks/lab_recipe.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "run_command": "make all PROFILE=full FROM_SCRATCH=1 RECIPE=" + record.get("recipe", "card")
                       + (" PRETRAINED=paper" if record.get("pretrained") else ""),
        "pretrained": record.get("pretrained", []),
        "machine": describe_machine(),
        "recipe": record.get("recipe", "card"),
        # the LMM's steps from its card: the one entry of LAB_RECIPE that changed between runs (800 -> 1,200);
        # a RECIPE=card run has no shortened steps to record
        "lab_recipe": {**rp.LAB_RECIPE, "pocket LMM": {"--steps": str(json.loads(
            (run / "checkpoints" / "lmm" / "config.json").read_text())["extra"]["pretrain"]["steps"])}}
        if record.get("recipe", "card") == "lab" else {},
        "minutes": {part: round(sec / 60, 2) for part, sec in seconds.items()},
        "expected_minutes": {part: round(expected.get(part, float("nan")), 2) for part in seconds},
        "card_minutes": {part: rp.EXPECTED_MINUTES.get(part) for part in seconds},
        "status": record["status"],
        "training_minutes": round((record["total_seconds"] - sum(seconds.get(k, 0.0) for k in
                                   ("data check", "evaluation", "notebooks"))) / 60, 1),
        "evaluation_minutes": round(seconds.get("evaluation", 0.0) / 60, 1),
        "notebooks_minutes": round(seconds.get("notebooks", 0.0) / 60, 1),
        "total_minutes": round(record["total_seconds"] / 60, 1),
        "compared": compared,
        "within_noise": {"yes": sum(e["within_noise"] is True for e in compared),
                         "no": sum(e["within_noise"] is False for e in compared)},
        "benchmark_minutes": None,
    }
    out["training_parts"] = training
    out["by_part"] = {}                     # the same entries by part and key, for README's and RESULTS' figures
    for e in compared:
        out["by_part"].setdefault(e["part"], {})[e["key"]] = {k: e[k] for k in ("shipped", "retrained")}
    out["benchmark_minutes"] = round((time.perf_counter() - t0) / 60, 1)
    dest = ROOT / args.out
    with atomic_path(dest) as tmp:
        tmp.write_text(json.dumps(out, indent=1) + "\n")
    print(ys.comparison_table(out))
    print(f"within two standard errors: {out['within_noise']['yes']}, outside: {out['within_noise']['no']}; "
          f"run total {out['total_minutes']} min -> {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
