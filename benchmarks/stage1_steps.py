"""Why a shortened stage 1 composes nothing: stage-1 cards side by side (steps, minutes, the loss
at fixed steps, the swap test), written to one JSON that RESULTS section 7 quotes.

    # the stage-1 models compared (one thread each, two at a time), in a clone with a lab run:
    python -m drclib.train stage1 --variant drc --steps 150 --threads 1 --out runs/diag/s150_shipped
    python -m drclib.train stage1 --variant drc --steps 150 --lr 2e-3 --threads 1 --out runs/diag/s150_lr2e-3_shipped
    DRC_CHECKPOINTS=runs/full-lab-pretrained/checkpoints python -m drclib.train stage1 --variant drc \\
        --steps 300 --threads 1 --lmm runs/full-lab-pretrained/checkpoints/lmm --out runs/diag/s300_lab_lmm_enc
    # (``shipped`` was then the 300-step card; since the 600-step retrain it is in git at d4c4609)
    python benchmarks/stage1_steps.py shipped=data/checkpoints/stage1/drc \\
        lab150=runs/full-lab-pretrained/checkpoints/stage1/drc shipped150=runs/diag/s150_shipped \\
        shipped150_lr2x=runs/diag/s150_lr2e-3_shipped lab300=runs/diag/s300_lab_lmm_enc \\
        --lmm lab=runs/full-lab-pretrained/checkpoints/lmm --lmm shipped=data/checkpoints/lmm \\
        --out data/results/stage1_steps.json

Does a semantic encoder that probes better make a better stage 1, and a pocket LMM that composes
better? And does stage 1 want more steps? The shipped stage-1 recipe on other encoders and on
other LMMs, and with 600 and 1,200 steps instead of its 300 (DRC, and its three ablations at
600), beside a rerun on the shipped parts on the same machine (``data/results/stage1_encoders.json``,
RESULTS section 1; each ``runs/enc_ckpt*`` folder links every shipped part but the one named,
``DRC_CHECKPOINTS`` points stage 1 at it):

    python -m drclib.train stage1 --variant drc --steps 300 --threads 1 --out runs/enc_ckpt/stage1_shipped_enc/drc
    DRC_CHECKPOINTS=runs/enc_ckpt python -m drclib.train stage1 --variant drc --steps 300 --threads 1 \\
        --out runs/enc_ckpt/stage1/drc                  # encoder: runs/enc_style/big_stack_d192
    DRC_CHECKPOINTS=runs/enc_ckpt_sw3 python -m drclib.train stage1 --variant drc --steps 300 --threads 1 \\
        --out runs/enc_ckpt_sw3/stage1/drc              # encoder: runs/enc_style/big_stack_sw3
    python -m drclib.train stage1 --variant drc --steps 300 --threads 1 --lmm runs/pilots/lmm_augment_3000 \\
        --out runs/enc_ckpt/stage1_aug_lmm/drc
    python -m drclib.train stage1 --variant drc --steps 300 --threads 1 --seed 1 --out runs/enc_ckpt/stage1_shipped_enc_seed1/drc
    python -m drclib.train stage1 --variant drc --steps 300 --threads 1 --lmm runs/pilots/lmm_augment_6000 \\
        --out runs/enc_ckpt/stage1_aug6000_lmm/drc
    python -m drclib.train stage1 --variant drc --steps 300 --threads 1 --lmm runs/pilots/lmm_augment_6000_seed1 \\
        --out runs/enc_ckpt/stage1_aug6000_s1_lmm/drc
    python -m drclib.train stage1 --variant drc --steps 300 --threads 1 --lmm runs/pilots/lmm_augment_strong_3000 \\
        --out runs/enc_ckpt/stage1_strong_lmm/drc
    python -m drclib.train stage1 --variant drc --steps 300 --threads 1 --lmm runs/pilots/lmm_augment_strong_6000 \\
        --out runs/enc_ckpt/stage1_strong6000_lmm/drc
    python -m drclib.train stage1 --variant drc --steps 300 --threads 1 --lmm runs/pilots/lmm_augment_max_6000 \\
        --out runs/enc_ckpt/stage1_max6000_lmm/drc
    python -m drclib.train stage1 --variant drc --steps 300 --threads 2 --seed 1 --lmm runs/pilots/lmm_augment_max_6000 \\
        --out runs/enc_ckpt/stage1_max6000_lmm_seed1/drc
    DRC_CHECKPOINTS=runs/enc_ckpt_sw3 python -m drclib.train stage1 --variant drc --steps 300 --threads 1 --seed 1 \\
        --out runs/enc_ckpt_sw3/stage1_seed1/drc
    python -m drclib.train stage1 --variant drc --threads 1 --steps 600 --lmm runs/pilots/lmm_augment_max_6000 \\
        --out runs/enc_ckpt/stage1_max6000_lmm_600/drc
    python -m drclib.train stage1 --variant drc --threads 1 --steps 600 \\
        --lmm runs/pilots/lmm_augment_max_6000_seed1 --out runs/enc_ckpt/stage1_max6000s1_lmm_600/drc
    python -m drclib.train stage1 --variant drc --threads 1 --steps 600 --out runs/enc_ckpt/stage1_shipped_600/drc
    python -m drclib.train stage1 --variant drc --threads 1 --steps 600 --seed 1 \\
        --out runs/enc_ckpt/stage1_shipped_600_seed1/drc
    python -m drclib.train stage1 --variant drc --threads 1 --steps 1200 --out runs/enc_ckpt/stage1_shipped_1200/drc
    python -m drclib.train stage1 --variant concat --threads 1 --steps 600 --out runs/enc_ckpt/stage1_shipped_600/concat
    python -m drclib.train stage1 --variant mlp --threads 1 --steps 600 --out runs/enc_ckpt/stage1_shipped_600/mlp
    python -m drclib.train stage1 --variant uniform --threads 1 --steps 600 --out runs/enc_ckpt/stage1_shipped_600/uniform
    python benchmarks/stage1_steps.py "shipped parts=runs/enc_ckpt/stage1_shipped_enc/drc" \\
        "shipped parts, seed 1=runs/enc_ckpt/stage1_shipped_enc_seed1/drc" \\
        "encoder with a 32-64-128 style stack, 64 of 192 channels=runs/enc_ckpt/stage1/drc" \\
        "encoder with a 32-64-128 style stack, style weight 3=runs/enc_ckpt_sw3/stage1/drc" \\
        "encoder with a 32-64-128 style stack, style weight 3, seed 1=runs/enc_ckpt_sw3/stage1_seed1/drc" \\
        "LMM trained with --augment 0.5 --copies 4 --steps 3000=runs/enc_ckpt/stage1_aug_lmm/drc" \\
        "LMM trained with --augment 0.5 --copies 4 for 6000 steps=runs/enc_ckpt/stage1_aug6000_lmm/drc" \\
        "LMM trained with --augment 0.5 --copies 4 for 6000 steps, LMM seed 1=runs/enc_ckpt/stage1_aug6000_s1_lmm/drc" \\
        "LMM trained with --augment 0.8 --copies 8 --steps 3000=runs/enc_ckpt/stage1_strong_lmm/drc" \\
        "LMM trained with --augment 0.8 --copies 8 for 6000 steps=runs/enc_ckpt/stage1_strong6000_lmm/drc" \\
        "LMM trained with --augment 0.9 --copies 16 for 6000 steps=runs/enc_ckpt/stage1_max6000_lmm/drc" \\
        "LMM trained with --augment 0.9 --copies 16 for 6000 steps, stage-1 seed 1=runs/enc_ckpt/stage1_max6000_lmm_seed1/drc" \\
        "LMM trained with --augment 0.9 --copies 16 for 6000 steps, 600 stage-1 steps=runs/enc_ckpt/stage1_max6000_lmm_600/drc" \\
        "LMM trained with --augment 0.9 --copies 16 for 6000 steps, LMM seed 1, 600 stage-1 steps=runs/enc_ckpt/stage1_max6000s1_lmm_600/drc" \\
        "shipped parts, 600 stage-1 steps=runs/enc_ckpt/stage1_shipped_600/drc" \\
        "shipped parts, 600 stage-1 steps, seed 1=runs/enc_ckpt/stage1_shipped_600_seed1/drc" \\
        "shipped parts, 1200 stage-1 steps=runs/enc_ckpt/stage1_shipped_1200/drc" \\
        "w/o FusionNetwork (concat), shipped parts, 600 stage-1 steps=runs/enc_ckpt/stage1_shipped_600/concat" \\
        "w/o attention (mlp), shipped parts, 600 stage-1 steps=runs/enc_ckpt/stage1_shipped_600/mlp" \\
        "w/o importance sampling (uniform), shipped parts, 600 stage-1 steps=runs/enc_ckpt/stage1_shipped_600/uniform" \\
        --out data/results/stage1_encoders.json

(the encoders: ``benchmarks/encoder_style_weight.py``; the LMM: ``benchmarks/lmm_recipes.py``).
Reads only the cards (``config.json``'s ``extra``, and the encoder's sizes from ``config``):
nothing is trained or scored here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from drclib.io import write_json

sys.path.insert(0, str(Path(__file__).resolve().parent))   # this folder, also when a test loads the script
from _kit import in_repo, named_paths, read_card  # noqa: E402

AT_STEPS = (50, 100, 150, 200, 250, 300)


def loss_at(history: dict, key: str, steps=AT_STEPS, window: int = 2) -> dict:
    """The mean of ``history[key]`` over the ``2 * window + 1`` logged points around each step (None past the run's end)."""
    st, values = np.asarray(history["step"]), np.asarray(history[key], dtype=float)
    out = {}
    for t in steps:
        if t > st.max() + 1:
            out[str(t)] = None
            continue
        i = int(np.argmin(abs(st - t)))
        out[str(t)] = round(float(values[max(0, i - window):i + window + 1].mean()), 3)
    return out


def stage1_entry(extra: dict) -> dict:
    swap = extra["evaluation"]["swap"]
    return {
        "command": extra.get("command"),
        "steps": extra["stage1"].get("steps") if "stage1" in extra else None,
        "train_minutes": extra.get("train_minutes"),
        "lmm": extra.get("lmm"),
        "lr": extra["stage1"].get("lr") if "stage1" in extra else None,
        "loss": loss_at(extra["history"], "loss"),
        "loss_end": round(float(np.mean(extra["history"]["loss"][-4:])), 3),
        "caption_loss": loss_at(extra["history"], "caption"),
        "swap": {split: {k: round(float(v), 3) for k, v in swap[split]["self"].items() if isinstance(v, (int, float))}
                 for split in swap},
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage1", nargs="+", help="name=folder of a stage-1 card")
    p.add_argument("--lmm", action="append", default=[], help="name=folder of an LMM card (its text-to-image)")
    p.add_argument("--out", default="data/results/stage1_steps.json")
    args = p.parse_args(argv)
    out = {"command": "python benchmarks/stage1_steps.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "stage1": {}, "lmm": {}}
    for name, folder in named_paths(args.stage1, "a stage-1 card").items():
        card = read_card(folder, part=None)
        out["stage1"][name] = dict(stage1_entry(card["extra"]), folder=str(folder),
                                   encoder=card.get("config", {}).get("encoder"))   # the towers' input features
    for name, folder in named_paths(args.lmm, "--lmm").items():
        extra = read_card(folder)
        out["lmm"][name] = {"folder": str(folder), "command": extra.get("command"), "steps": extra["pretrain"]["steps"],
                            "train_minutes": extra.get("train_minutes"), "evaluation": extra["evaluation"],
                            "loss": loss_at(extra["history"], "loss", (400, 600, 800, 1000, 1200))}
    dest = write_json(in_repo(args.out), out)
    for name, e in out["stage1"].items():
        print(f"{name:12s} steps {e['steps']}  loss@150 {e['loss']['150']}  loss@300 {e['loss']['300']}  "
              f"swap both train {e['swap']['train']['both']:.3f} heldout {e['swap']['heldout']['both']:.3f}")
    print(f"-> {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
