"""Where the pocket LMM loses a held-out cell's style: per asked style, and what it draws instead.

    python benchmarks/heldout_styles.py [--lmm NAME=FOLDER ...] [--threads 2]
                                        [--out data/results/heldout_styles.json]

For each LMM (default: the shipped one and the most augmented pilot of
``benchmarks/lmm_recipes.py``), greedy text-to-image on the 64 held-out cells of the LMM card
(:func:`drclib.train.eval_cell_subsets`), and per asked style: how often the style judge names
the asked style on the LMM's drawing, and on the tokenizer round trip of the real held-out
sticker (the judge's ceiling on those very cells); the confusion matrix (asked style x judged
style) of both; and how much of each drawing is a copy: the share of its 64 codes equal, position
by position, to the codes of the real sticker of the asked cell (never seen in training), and
to those of the same emoji in its closest seen style (an LMM that recalls the emoji from another
style copies those). Prints the figures and writes them, the command and the machine to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))   # this folder, also when a test loads the script

from _kit import in_repo, named_paths  # noqa: E402

DEFAULT_LMMS = {
    "shipped recipe": "data/checkpoints/lmm",
    "most augmentation, 6,000 steps": "runs/pilots/lmm_augment_max_6000",
}


def confusion(asked: np.ndarray, judged: np.ndarray, n: int) -> list[list[int]]:
    """``[n, n]`` counts: row = asked style, column = judged style."""
    out = np.zeros((n, n), dtype=int)
    np.add.at(out, (asked, judged), 1)
    return out.tolist()


def copy_shares(drawn, codes, cells) -> dict:
    """Per drawing, the share of codes equal (same position) to the real sticker of its cell and
    to the closest of the same emoji's other styles: their means over the cells."""
    import torch

    cells_t = torch.as_tensor(cells)
    per_style = torch.stack([(drawn == codes[s, cells_t[:, 1]]).float().mean(1) for s in range(codes.shape[0])], 1)
    own = per_style[torch.arange(len(cells)), cells_t[:, 0]]
    others = per_style.clone()
    others[torch.arange(len(cells)), cells_t[:, 0]] = -1.0
    return {"asked_sticker": float(own.mean()), "closest_other_style": float(others.max(1).values.mean())}


def measure(folder: Path) -> dict:
    import torch

    from drclib import judges
    from drclib.backbone import PocketLMM, sticker_caption, sticker_codes
    from drclib.backbone import tokenizer as tok_mod
    from drclib.judges.metrics import rate_se
    from drclib.train import eval_cell_subsets, model_stickers

    lmm = PocketLMM.from_pretrained(folder).eval()
    stickers = model_stickers(lmm)
    tokenizer = tok_mod.load_default()
    style_clf, emoji_clf = judges.load_judges(stickers, "cpu")
    codes = sticker_codes(tokenizer, stickers)
    cells = eval_cell_subsets(stickers, 300)["heldout_cells"]
    drawn = lmm.generate_images([sticker_caption(stickers.names[e], stickers.styles[s]) for s, e in cells], greedy=True)
    real = codes[torch.as_tensor(cells[:, 0]), torch.as_tensor(cells[:, 1])]
    judged = {k: style_clf.predict(tokenizer.decode(c)).cpu().numpy() for k, c in (("lmm", drawn), ("round_trip", real))}
    asked, n_styles = cells[:, 0], len(stickers.styles)
    per_style = {}
    for s, name in enumerate(stickers.styles):
        m = asked == s
        per_style[name] = {"n": int(m.sum())} | {k: float((v[m] == s).mean()) if m.any() else None for k, v in judged.items()}
    return {"n_cells": int(len(cells)), "styles": list(stickers.styles),
            "style_acc": {k: float((v == asked).mean()) for k, v in judged.items()},
            "style_acc_se": {k: rate_se(float((v == asked).mean()), len(cells)) for k, v in judged.items()},
            "per_style": per_style,
            "confusion": {k: confusion(asked, v, n_styles) for k, v in judged.items()},
            "code_copy": copy_shares(drawn, codes, cells)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lmm", nargs="+", default=[f"{k}={v}" for k, v in DEFAULT_LMMS.items()],
                   help="NAME=FOLDER of each LMM to measure")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="data/results/heldout_styles.json")
    args = p.parse_args(argv)
    import torch

    from drclib.io import write_json
    from drclib.runtime import describe_machine, pick_device

    torch.set_num_threads(args.threads)
    device = pick_device("cpu")
    rows = {}
    for name, folder in named_paths(args.lmm, "--lmm").items():
        if not (in_repo(folder) / "config.json").is_file():
            raise SystemExit(f"no LMM at {folder}: train it first (benchmarks/lmm_recipes.py --train)")
        r = rows[name] = measure(in_repo(folder)) | {"folder": str(folder)}
        print(f"## {name} ({r['n_cells']} held-out cells)")
        print(f"style judged right: the LMM's drawing {r['style_acc']['lmm']:.3f} ± {r['style_acc_se']['lmm']:.3f}, "
              f"the real sticker's round trip {r['style_acc']['round_trip']:.3f} ± {r['style_acc_se']['round_trip']:.3f}")
        print("per asked style (n, LMM, round trip): " + "; ".join(
            f"{s} {v['n']}, {v['lmm']:.2f}, {v['round_trip']:.2f}" for s, v in r["per_style"].items() if v["n"]))
        print(f"codes equal to the asked sticker's {r['code_copy']['asked_sticker']:.3f}, "
              f"to the emoji's closest other style's {r['code_copy']['closest_other_style']:.3f}")
        for k in ("lmm", "round_trip"):
            print(f"confusion, {k} (rows: asked {r['styles']}):")
            for line in r["confusion"][k]:
                print("   ", line)
    write_json(in_repo(args.out), {"command": "python benchmarks/heldout_styles.py " + " ".join(sys.argv[1:] if argv is None else argv),
                                   "machine": describe_machine(device), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
