"""How much style the semantic encoder keeps, and what that costs the emoji: encoders trained
with the style part of the contrastive loss weighted up, side by side (issue 14's probe aims).
(prints a table and writes a JSON; not a test, not a model the kit ships)

    python benchmarks/encoder_style_weight.py NAME=FOLDER [NAME=FOLDER ...]
        [--style-probe NAME=JSON ...] [--out data/results/encoder_style_weight.json]

Each FOLDER is an encoder saved by ``python -m drclib.backbone.encoder`` (its card holds the
kit's probes on ``core``: softmax regression on the set's 704 training cells, scored on its 64
held-out cells, emoji and style, on real stickers and on their tokenizer round trips). Style is
also measured by ``benchmarks/style_probe.py`` on every held-out cell of the array (685, a
quarter of the standard error): read from ``FOLDER/style_probe.json`` or ``--style-probe
NAME=JSON``, and made (``python benchmarks/style_probe.py --encoder FOLDER --threads 1 --out
FOLDER/style_probe.json``) when neither exists. Every rate comes with its binomial standard error.
``--keep`` adds the encoders given to the rows already in ``--out`` (whose folders may be gone;
each row names its machine and command, the JSON the earlier commands); a row named again is
measured again in its place.

The encoders of RESULTS section 1 (one torch thread each, two at a time, on the machine its
JSON names):

    python -m drclib.backbone.encoder --steps 3000 --threads 1 --style-weight 3  --out runs/enc_style/sw3
    python -m drclib.backbone.encoder --steps 3000 --threads 1 --style-weight 10 --out runs/enc_style/sw10
    python -m drclib.backbone.encoder --steps 3000 --threads 1 --style-widths 16 32 64 --out runs/enc_style/two_stacks
    python -m drclib.backbone.encoder --steps 3000 --threads 1 --style-weight 3 --dim 256 --out runs/enc_style/sw3_d256
    python benchmarks/encoder_style_weight.py "shipped (style weight 1)=data/checkpoints/encoder" \\
        --style-probe "shipped (style weight 1)=data/results/style_probe.json" \\
        "style weight 3=runs/enc_style/sw3" "style weight 10=runs/enc_style/sw10" \\
        "style weight 3, 256-wide tokens=runs/enc_style/sw3_d256" \\
        "separate style stack (16-32-64), style weight 1=runs/enc_style/two_stacks"

and, a session later (same machine; those folders gone, so ``--keep``):

    python -m drclib.backbone.encoder --steps 3000 --threads 1 --style-widths 32 64 128 --style-weight 3 \\
        --out runs/enc_style/big_stack_sw3
    python -m drclib.backbone.encoder --steps 3000 --threads 1 --dim 192 --style-widths 32 64 128 --style-dim 64 \\
        --out runs/enc_style/big_stack_d192
    python benchmarks/encoder_style_weight.py --keep "shipped (style weight 1)=data/checkpoints/encoder" \\
        --style-probe "shipped (style weight 1)=data/results/style_probe.json" \\
        "separate style stack (32-64-128), style weight 3=runs/enc_style/big_stack_sw3" \\
        "separate style stack (32-64-128), 64 of 192 channels=runs/enc_style/big_stack_d192"
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))   # this folder, also when a test loads the script
from _kit import named_paths  # noqa: E402

ROW = "encoder, 64 tokens (what the towers read)"
MEAN = "encoder, mean token"
EMB = "encoder, style embedding"


def _probe_row(probe: dict, features: str, trained_on: str) -> dict:
    for r in probe["rows"]:
        if r["features"] == features and r.get("view", "real") == "real" and r["probe trained on"] == trained_on:
            return r
    raise KeyError(f"no {features!r} row trained on {trained_on!r} in the style probe")


def caption_match(folder: Path) -> dict:
    """The encoder's own emoji head on every held-out cell of the array (685): the share whose
    image embedding meets its own emoji's caption part best among all 1,370 ("a sticker of
    <name>", :func:`drclib.backbone.encoder.caption_parts`). No probe is fitted, so the test set
    is ten times the set's and the standard error a third: a tighter view of what a larger
    style weight costs the emoji."""
    import numpy as np
    import torch

    from drclib.backbone.encoder import SemanticEncoder, caption_parts
    from drclib.data import StickerSet, heldout_cells
    from drclib.judges.metrics import rate_se

    stickers = StickerSet.load()
    enc = SemanticEncoder.from_pretrained(folder).eval()
    test = np.argwhere(heldout_cells(stickers))
    with torch.no_grad():
        img_e, _ = enc.image_embedding(enc.features(stickers.batch(test, as_torch=True)))
        txt_e = enc.text_embedding(*caption_parts(stickers)[1]["emoji"])
        acc = float((((img_e @ txt_e.T).argmax(1)).numpy() == test[:, 1]).mean())
    return {"caption_emoji_all": acc, "caption_emoji_all_se": rate_se(acc, len(test))}


def row(name: str, folder: Path, probe: dict) -> dict:
    """One encoder's figures: its card's probes on ``core`` and the style probe on all held-out cells."""
    from drclib.judges.metrics import rate_se

    card = json.loads((folder / "config.json").read_text())
    extra = card.get("extra", card)
    core = extra["probes"]["core"]
    n = int(core["n_heldout"])
    probes = {"style_all": _probe_row(probe, ROW, "set"), "style_all_mean_token": _probe_row(probe, MEAN, "set"),
              "style_all_embedding": _probe_row(probe, EMB, "set"), "style_all_fit_all": _probe_row(probe, ROW, "all")}
    tokens = probes["style_all"]
    out = {"name": name, "folder": str(folder), "command": extra.get("command", ""),
           "style_weight": extra.get("train", {}).get("style_weight", 1.0),
           "steps": extra.get("train", {}).get("steps"), "dim": extra["config"]["dim"],
           "train_minutes": extra.get("train_minutes"), "n_cells": n,
           "n_heldout_all": int(tokens["n_heldout_all"]), "machine": extra.get("machine", "")}
    for key, value in (("emoji", core["real_tokens_emoji"]), ("style", core["real_tokens_style"]),
                       ("round_trip_emoji", core["reconstructed_tokens_emoji"]),
                       ("round_trip_style", core["reconstructed_tokens_style"])):
        out[key], out[key + "_se"] = float(value), rate_se(float(value), n)
    for key, r in probes.items():
        out[key], out[key + "_se"] = float(r["heldout_all"]), float(r["heldout_all_se"])
    return dict(out, **caption_match(folder))


def table(rows: list) -> str:
    def rate(r, key):      # rows kept from before a column existed lack it
        return f"{r[key]:.3f} ± {r[key + '_se']:.3f}" if key in r else "not measured"

    lines = ["| encoder | core held-out (64): emoji | core held-out: style | all held-out (685): style, 64 tokens "
             "| all held-out: style, mean token | all held-out: style embedding | all held-out: style, 64 tokens, "
             "probe fitted on all 7,535 training cells | all held-out: emoji by its own caption head (1,370-way) "
             "| round trip, core: emoji / style |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | " + " | ".join(rate(r, k) for k in (
                         "emoji", "style", "style_all", "style_all_mean_token", "style_all_embedding",
                         "style_all_fit_all", "caption_emoji_all"))
                     + f" | {r['round_trip_emoji']:.3f} / {r['round_trip_style']:.3f} |")
    return "\n".join(lines)


def main(argv: list | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("encoders", nargs="+", metavar="NAME=FOLDER")
    p.add_argument("--style-probe", action="append", default=[], metavar="NAME=JSON")
    p.add_argument("--out", default="data/results/encoder_style_weight.json")
    p.add_argument("--keep", action="store_true", help="keep the rows of the --out JSON that are not named here "
                   "(encoders of earlier sessions, whose folders may be gone), before the new ones")
    args = p.parse_intermixed_args(argv)
    encoders, probes = named_paths(args.encoders, "an encoder"), named_paths(args.style_probe, "--style-probe")
    new, old_rows, earlier = {}, [], []
    if args.keep and Path(args.out).is_file():
        old = json.loads(Path(args.out).read_text())
        old_rows, earlier = old["rows"], old.get("earlier_commands", []) + [old["command"]]
    for name, folder in encoders.items():
        if not (folder / "config.json").is_file():
            raise SystemExit(f"{folder} holds no encoder (config.json missing): train it with the command in this "
                             f"script's docstring")
        path = probes.get(name, folder / "style_probe.json")
        if not path.is_file():
            subprocess.run([sys.executable, str(Path(__file__).with_name("style_probe.py")), "--encoder", str(folder),
                            "--threads", "1", "--out", str(path)], check=True)
        new[name] = row(name, folder, json.loads(path.read_text()))
    rows = [new.pop(r["name"], r) for r in old_rows] + list(new.values())   # a row given again is replaced in place
    result = {"command": "python benchmarks/encoder_style_weight.py " + " ".join(
                  f'"{a}"' if " " in a else a for a in (argv if argv is not None else sys.argv[1:])),
              "earlier_commands": earlier, "rows": rows, "table": table(rows)}
    from drclib.io import write_json

    write_json(args.out, result)
    print(result["table"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
