"""Training the judges from the command line, and listing the scoring backends.

    python -m drclib.judges train --target style|emoji [--epochs N] [--with-reconstructions] [--out DIR]
    python -m drclib.judges backends
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from drclib.checkpoint import CheckpointError
from drclib.judges.backends import available_backends
from drclib.judges.classifier import (
    DEFAULT_EPOCHS,
    DEFAULT_LR,
    TARGETS,
    StickerClassifier,
    StickerClassifierConfig,
    cells_where,
    default_checkpoint_dir,
    default_config,
    evaluate_classifier,
    train_classifier,
)


def _card(target: str, command: str, config: StickerClassifierConfig, metrics: dict, args) -> str:
    ho, tr = metrics["heldout"], metrics["train_cells"]
    lines = [
        f"# drc-kit {target} classifier (`StickerClassifier`)",
        "",
        f"A ground-truth evaluator: says which {'of the 6 artist styles' if target == 'style' else 'of the 1,370 emoji'} "
        "a 32 x 32 sticker shows. Later notebooks use it to score generated images "
        "(`drclib.judges.classify_rates`" + (", `style_sim`" if target == "style" else ", `fid`") + ").",
        "",
        "## How it was trained",
        "",
        "```bash",
        command,
        "```",
        "",
        f"- data: `data/stickers_32px.npz`, every (style, emoji) cell except the {ho['n']} held-out cells of "
        f"`drclib.data.heldout_cells` ({tr['n']} training cells); labels = the cell's {target}.",
        f"- {args.epochs} epochs, batch {args.batch_size}, AdamW (lr {args.lr}, one-cycle, weight decay 5e-4), "
        f"label smoothing 0.1, seed {args.seed}; augmentation `drclib.data.images.augment` "
        f"({'with' if target == 'emoji' else 'without'} colour jitter)"
        + (f"; {_share(args.reconstruct_prob)} of the training images replaced by their reconstruction through "
           "the shipped tokenizer" if metrics.get("with_reconstructions") else "") + ".",
        f"- training time: {metrics['train_time_s']:.0f} s wall clock, {metrics['train_cpu_s']:.0f} s of CPU "
        f"time, on {metrics['machine']}.",
        *([f"- note: {metrics['note']}"] if metrics.get("note") else []),
        f"- config: `{json.dumps(dataclasses.asdict(config))}`",
        f"- weights: float16 safetensors, {metrics.get('params', 0):,} parameters.",
        "",
        "## Measured metrics",
        "",
        "| cells | n | " + ("style accuracy |" if target == "style" else "emoji top-1 | emoji top-5 |"),
        "|---|---|---|" + ("" if target == "style" else "---|"),
    ]
    rows = [("held-out (unseen style x emoji combinations)", ho), ("training cells (no augmentation)", tr)]
    if "heldout_reconstructed" in metrics:
        rows.append(("held-out, after the tokenizer's round trip", metrics["heldout_reconstructed"]))
    for label, m in rows:
        lines.append(f"| {label} | {m['n']} | {m['acc']:.4f} |" + ("" if target == "style" else f" {m['top5']:.4f} |"))
    if "heldout_per_style" in metrics:
        lines += ["", "Held-out accuracy per style: " + ", ".join(
            f"{k} {v:.3f}" for k, v in metrics["heldout_per_style"].items()) + "."]
    lines += ["", "Measured by the fp16 weights as saved (reloaded as float32).", ""]
    return "\n".join(lines)


def _share(p: float) -> str:
    """The share of images replaced by their round trip, in words for the card."""
    return "half" if p == 0.5 else "all" if p == 1.0 else f"a share {p:g}"


def _tokenizer_reconstructor(args):
    """The shipped tokenizer's round trip, when ``--with-reconstructions`` asks for it."""
    if not getattr(args, "with_reconstructions", False):
        return None
    from drclib.backbone import tokenizer as vt

    tok = vt.load_default()
    return lambda x: tok.reconstruct(x.to(tok.device))


def _cli_train(args) -> int:
    from drclib.data import StickerSet, heldout_cells

    stickers = StickerSet.load()
    held = heldout_cells(stickers)
    torch.set_num_threads(args.threads or torch.get_num_threads())
    t0, c0 = time.perf_counter(), time.process_time()
    n_classes = stickers.n_styles if args.target == "style" else stickers.n_emoji
    config = default_config(args.target, n_classes)
    if args.widths:
        config = dataclasses.replace(config, widths=tuple(int(w) for w in args.widths.split(",")))
    model, hist = train_classifier(stickers, args.target, epochs=args.epochs, batch_size=args.batch_size,
                                   lr=args.lr, seed=args.seed, device=args.device, progress=not args.quiet,
                                   config=config, augment_strength=args.augment_strength,
                                   reconstructor=_tokenizer_reconstructor(args),
                                   reconstruct_prob=args.reconstruct_prob)
    train_time, train_cpu = time.perf_counter() - t0, time.process_time() - c0
    out = Path(args.out)
    tmp_model = model.to("cpu")
    # measure with the weights as shipped (fp16), by a save/load round trip
    tmp_model.save_pretrained(out, dtype=torch.float16)
    shipped = StickerClassifier.from_pretrained(out)
    ho_cells, tr_cells = cells_where(held), cells_where(~held)
    metrics: dict[str, Any] = {
        "heldout": evaluate_classifier(shipped, stickers, ho_cells),
        "train_cells": evaluate_classifier(shipped, stickers, tr_cells),
        "train_time_s": round(train_time, 1),
        "train_cpu_s": round(train_cpu, 1),
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
        "final_loss": float(np.mean(hist["loss"][-20:])),
        "machine": (f"{'cuda' if torch.cuda.is_available() and args.device in ('auto', 'cuda') else 'cpu'}, "
                    f"{platform.machine()} with {os.cpu_count()} cores ({torch.get_num_threads()} torch threads), torch {torch.__version__}"),
        "params": int(sum(p.numel() for p in model.parameters())),
        "epoch_loss": [round(x, 4) for x in hist["epoch_loss"]],
    }
    if args.note:
        metrics["note"] = args.note
    metrics["with_reconstructions"] = bool(getattr(args, "with_reconstructions", False))
    try:  # how it judges decoder output: held-out cells after the shipped tokenizer's round trip
        from drclib.backbone import tokenizer as vt

        metrics["heldout_reconstructed"] = evaluate_classifier(shipped, stickers, ho_cells,
                                                               through=vt.load_default().reconstruct)
    except CheckpointError:
        pass
    # held-out top-1 accuracy per style of the cell (which artists the evaluator finds hard)
    label_col = 0 if args.target == "style" else 1
    ok = shipped.predict(stickers.batch(ho_cells, as_torch=True)).numpy() == ho_cells[:, label_col]
    metrics["heldout_per_style"] = {name: float(ok[ho_cells[:, 0] == s].mean())
                                    for s, name in enumerate(stickers.styles) if (ho_cells[:, 0] == s).any()}
    command = args.command or "python -m drclib.judges " + shlex.join(args.argv)
    metrics["command"] = command
    card = _card(args.target, command, shipped.config, metrics, args)
    tmp_model.save_pretrained(out, dtype=torch.float16, card=card, extra=metrics)
    print(json.dumps({k: v for k, v in metrics.items() if k != "epoch_loss"}, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m drclib.judges", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a style or emoji classifier, evaluate it and save it (fp16)")
    t.add_argument("--target", choices=TARGETS, required=True)
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto")
    t.add_argument("--threads", type=int, default=0)
    t.add_argument("--out", default=None, help="output folder (default data/checkpoints/<target>_classifier)")
    t.add_argument("--quiet", action="store_true")
    t.add_argument("--widths", default=None, help="channels per stage, e.g. 32,64,128,256 (default: the shipped shape)")
    t.add_argument("--with-reconstructions", action="store_true",
                   help="also train on the shipped tokenizer's reconstructions (--reconstruct-prob of the images), so the "
                        "classifier judges decoded, generated stickers well")
    t.add_argument("--reconstruct-prob", type=float, default=0.5,
                   help="with --with-reconstructions: the share of training images replaced by their "
                        "reconstruction (0.5 default, as the shipped judge; 1.0 trains on round trips only)")
    t.add_argument("--augment-strength", type=float, default=1.0,
                   help="scale of the augmentation (1.0 default; lower keeps more of the pixels)")
    t.add_argument("--note", default="", help="a line for the model card (e.g. about machine load)")
    t.add_argument("--command", default=None, help=argparse.SUPPRESS)
    sub.add_parser("backends", help="which pretrained backends have weights on disk")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    args.argv = argv
    if args.cmd == "backends":
        for k, v in available_backends().items():
            print(f"{k:18s} {v}")
        return 0
    args.epochs = args.epochs or DEFAULT_EPOCHS[args.target]
    args.lr = args.lr or DEFAULT_LR[args.target]
    args.out = args.out or str(default_checkpoint_dir(f"{args.target}_classifier"))
    return _cli_train(args)
