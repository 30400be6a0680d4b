"""Why the retrained Pigeon falls short of its card: Pigeon cards side by side, on the shipped
pocket LMM and on a retrained one, in bf16 autocast and in float32, written to one JSON that
RESULTS section 7 quotes.

The fifth from-scratch run (``make all PROFILE=full FROM_SCRATCH=1 PRETRAINED=paper``, its
checkpoints in ``runs/full-pretrained/checkpoints``) trained Pigeon at its card's recipe (400
steps, lr 1e-3) on its own retrained LMM and carried the reference's emoji far less often than
the card. These runs separate the LMM underneath from the precision and the seed (one thread
each, two at a time, on the machine of that run):

    # the shipped LMM, bf16 autocast (this machine's default):
    python -m drclib.train baseline --method pigeon --threads 1 --state-dir runs/pg/st_a --out runs/pg/shipped_lmm_bf16
    # the retrained LMM, float32 (as the card was trained, on a CPU without fast bf16):
    DRC_CHECKPOINTS=runs/full-pretrained/checkpoints python -m drclib.train baseline --method pigeon \\
        --no-bf16 --threads 1 --state-dir runs/pg/st_b --out runs/pg/retrained_lmm_fp32
    # the retrained LMM, bf16, seed 1 (another draw of users and samples, and of Pigeon's init):
    DRC_CHECKPOINTS=runs/full-pretrained/checkpoints python -m drclib.train baseline --method pigeon \\
        --seed 1 --threads 1 --state-dir runs/pg/st_c --out runs/pg/retrained_lmm_bf16_seed1
    # an LMM retrained in float32 (the card's recipe with --no-bf16), the shipped tokenizer and
    # judges linked beside it in runs/pg/ck_fp32/, then Pigeon on it in float32 and in bf16:
    python -m drclib.train backbone --concepts core --threads 1 --no-bf16 --state-dir runs/pg/st_lmm --out runs/pg/ck_fp32/lmm
    DRC_CHECKPOINTS=runs/pg/ck_fp32 python -m drclib.train baseline --method pigeon --no-bf16 --threads 1 \\
        --state-dir runs/pg/st_d --out runs/pg/fp32_lmm_fp32
    DRC_CHECKPOINTS=runs/pg/ck_fp32 python -m drclib.train baseline --method pigeon --threads 1 \\
        --state-dir runs/pg/st_e --out runs/pg/fp32_lmm_bf16
    python benchmarks/pigeon_lmm.py card=data/checkpoints/pigeon \\
        fifth_run=runs/full-pretrained/checkpoints/pigeon shipped_lmm_bf16=runs/pg/shipped_lmm_bf16 \\
        retrained_lmm_fp32=runs/pg/retrained_lmm_fp32 retrained_lmm_bf16_seed1=runs/pg/retrained_lmm_bf16_seed1 \\
        fp32_lmm_fp32=runs/pg/fp32_lmm_fp32 fp32_lmm_bf16=runs/pg/fp32_lmm_bf16 --float32 card

Each card scores its own pipeline with the shipped judges on 300 test samples of ``sample`` and
all 64 of ``heldout`` (the training command's protocol, the same for every row; seed 1's samples
are another draw). Reads only the cards (``prompter/config.json``'s ``extra``): nothing is
trained or scored here. ``--float32 NAME`` marks a card trained in float32 that predates the
cards recording their precision (the shipped one: trained on an AVX2-only CPU, where the kit
turns bf16 off; RESULTS' header).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from drclib.drc import lmm_fingerprint
from drclib.io import write_json
from drclib.judges.metrics import rate_se

sys.path.insert(0, str(Path(__file__).resolve().parent))   # this folder, also when a test loads the script
from _kit import ROOT, in_repo, named_paths, read_card  # noqa: E402

FIGURES = ("both", "emoji_top1", "style_acc", "collapse_reference")


def _card(folder: Path) -> dict:
    extra = read_card(folder, "Pigeon", sub="prompter")
    if extra.get("method") != "pigeon":
        raise SystemExit(f"{folder / 'prompter'} holds a {extra.get('method')!r} card, not Pigeon's")
    return extra


def precision(extra: dict, float32: bool = False) -> str:
    """What the card's run trained in: the recorded bf16 flag, else what its command and machine
    imply (``--no-bf16``; a CPU with AMX or AVX-512-bf16 turns bf16 on), else ``float32`` when the
    caller says so, else ``unrecorded``."""
    recorded = extra.get("stage2", {}).get("bf16")
    if recorded is not None:
        return "bf16" if recorded else "float32"
    if float32 or "--no-bf16" in extra.get("command", ""):
        return "float32"
    if any(isa in extra.get("machine", "") for isa in ("AMX-bf16", "AVX-512-bf16")):
        return "bf16"
    return "unrecorded"


def entry(extra: dict, shipped_lmm: str, float32: bool = False) -> dict:
    loss = np.asarray(extra.get("history", {}).get("loss", []), dtype=float)
    scores = {}
    for split, rows in extra["evaluation"].items():
        r = rows["pigeon"]
        scores[split] = {k: {"value": round(float(r[k]), 4), "se": round(rate_se(float(r[k]), int(r["n"])), 4)}
                         for k in FIGURES} | {"n": int(r["n"])}
    lmm = extra.get("lmm", {}).get("sha256", "")
    return {"command": extra.get("command"), "machine": extra.get("machine"), "train_minutes": extra.get("train_minutes"),
            "steps": extra["stage2"]["steps"], "lr": extra["stage2"]["lr"], "seed": extra["stage2"]["seed"],
            "precision": precision(extra, float32), "lmm_sha256": lmm[:12], "lmm": "shipped" if lmm == shipped_lmm else "retrained",
            "final_loss": round(float(loss[-20:].mean()), 3) if loss.size else None, "evaluation": scores}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("cards", nargs="+", help="name=folder (a saved Pigeon pipeline)")
    p.add_argument("--float32", nargs="*", default=[], help="names whose cards predate the precision record "
                   "and were trained in float32")
    p.add_argument("--out", default="data/results/pigeon_lmm.json")
    args = p.parse_args(argv)
    shipped_lmm = lmm_fingerprint(ROOT / "data/checkpoints/lmm")["sha256"]
    out = {"command": "python benchmarks/pigeon_lmm.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "runs": {}}
    for name, folder in named_paths(args.cards, "a Pigeon run").items():
        out["runs"][name] = entry(_card(folder), shipped_lmm, name in args.float32)
    print("| run | LMM | precision | seed | final loss | sample: emoji | sample: both | heldout: emoji | heldout: both |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, e in out["runs"].items():
        s, h = e["evaluation"]["sample"], e["evaluation"]["heldout"]
        print(f"| {name} | {e['lmm']} | {e['precision']} | {e['seed']} | {e['final_loss']} | "
              f"{s['emoji_top1']['value']:.3f} ± {s['emoji_top1']['se']:.3f} | {s['both']['value']:.3f} ± {s['both']['se']:.3f} | "
              f"{h['emoji_top1']['value']:.3f} ± {h['emoji_top1']['se']:.3f} | {h['both']['value']:.3f} ± {h['both']['se']:.3f} |")
    path = in_repo(args.out)
    write_json(path, out)
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
