"""Classifier-free guidance towards the asked style: does it lift the LMM's held-out cells?

    python benchmarks/style_guidance.py [--lmm NAME=FOLDER ...] [--scales 0 0.5 1 2]
                                        [--threads 2] [--keep] [--out data/results/style_guidance.json]

The pocket LMM draws a held-out cell's emoji far more often than its style (RESULTS section 1:
held-out emoji up to 0.84, style 0.25-0.55). Guidance is the usual cure for a prompt that is
followed only in part: each step scores the codes by ``log p(c | caption) + w (log p(c | caption)
- log p(c | caption without its style))`` (:meth:`drclib.backbone.PocketLMM.generate_images`,
``negative_text``, ``guidance_scale``), so the drawing moves towards what the style words add.
For every LMM (default: the shipped one and the augmented pilots of
``benchmarks/lmm_recipes.py``, those whose folders exist) and every scale w, greedy text-to-image
on the LMM card's cells (300 training, the 64 held-out cells of `core`), judged as the card is
(:func:`drclib.judges.evaluate_text_to_image`); w = 0 is the card's own measurement. Prints a
markdown table with binomial standard errors and writes rows, command and machine to ``--out``
(``--keep``: an LMM whose folder is gone keeps its rows from ``--out``). About a minute an LMM
on one thread (four scales).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))   # this folder, also when a test loads the script

from _kit import in_repo, named_paths  # noqa: E402

DEFAULT_LMMS = {
    "shipped recipe": "data/checkpoints/lmm",
    "strong augmentation, 3,000 steps": "runs/pilots/lmm_augment_strong_3000",
    "strong augmentation + factor dropout 0.3": "runs/pilots/lmm_augment_strong_fd_3000",
    "most augmentation, 6,000 steps": "runs/pilots/lmm_augment_max_6000",
}
"""Name -> LMM folder. The factor-dropout LMM is the one that was trained on captions without
their style (three text-to-image captions in ten name one factor), so only its negative prompt
is in its training distribution."""

SPLITS = ("train_cells", "heldout_cells")


def table(rows: dict) -> str:
    from drclib.judges.metrics import rate_se

    out = ["| LMM | w | train: style | train: emoji | train: both | held-out: style | held-out: emoji | held-out: both |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows.values():
        cells = []
        for split in SPLITS:
            ev = r[split]
            cells += [f"{ev[k]:.3f} ± {rate_se(ev[k], ev['n_cells']):.3f}" for k in ("style_acc", "emoji_top1", "both")]
        out.append(f"| {r['lmm']} | {r['guidance_scale']:g} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def measure(folder: Path, scales: list[float]) -> dict:
    from drclib import judges
    from drclib.backbone import PocketLMM
    from drclib.backbone import tokenizer as tok_mod
    from drclib.judges import evaluate_text_to_image
    from drclib.train.backbone import eval_cell_subsets
    from drclib.train.cards import model_stickers

    lmm = PocketLMM.from_pretrained(folder).eval()
    stickers = model_stickers(lmm)
    tokenizer = tok_mod.load_default()
    style_clf, emoji_clf = judges.load_judges(stickers, "cpu")
    subsets = eval_cell_subsets(stickers, 300)
    out = {}
    for w in scales:
        out[w] = {split: evaluate_text_to_image(lmm, tokenizer, style_clf, emoji_clf, stickers, subsets[split],
                                                guidance_scale=w) for split in SPLITS}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lmm", nargs="+", default=[f"{k}={v}" for k, v in DEFAULT_LMMS.items()],
                   help="NAME=FOLDER of each LMM to measure")
    p.add_argument("--scales", nargs="+", type=float, default=[0.0, 0.5, 1.0, 2.0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--keep", action="store_true", help="keep the rows of LMMs whose folders are gone")
    p.add_argument("--out", default="data/results/style_guidance.json")
    args = p.parse_args(argv)
    if any(not w >= 0 for w in args.scales):
        raise SystemExit(f"--scales must be >= 0, got {args.scales}")
    import torch

    from drclib.io import write_json
    from drclib.runtime import describe_machine, pick_device

    torch.set_num_threads(args.threads)
    device = pick_device("cpu")
    out_path = in_repo(args.out)
    earlier = json.loads(out_path.read_text())["rows"] if args.keep and out_path.is_file() else {}
    rows = {}
    for name, folder in named_paths(args.lmm, "--lmm").items():
        if not (in_repo(folder) / "config.json").is_file():
            kept = {k: v for k, v in earlier.items() if v["lmm"] == name}
            print(f"{name}: no LMM at {folder}; " + (f"kept {len(kept)} earlier rows" if kept else "left out"))
            rows.update(kept)
            continue
        t0 = time.perf_counter()
        for w, ev in measure(in_repo(folder), args.scales).items():
            rows[f"{name}, w={w:g}"] = {"lmm": name, "folder": str(folder), "guidance_scale": w, **ev}
        print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
    text = table(rows)
    print(text)
    write_json(out_path, {"command": "python benchmarks/style_guidance.py " + " ".join(sys.argv[1:] if argv is None else argv),
                          "machine": describe_machine(device), "rows": rows, "table": text})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
