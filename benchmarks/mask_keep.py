"""Does the trained style mask drop the off-style items of a noisy history? (notebook 05)

For the full profile's `sample` test samples, the share of each history image's 64 style
tokens that DRC's mask keeps (``drclib.drc.history_keep_rates``), for on-style items and for
off-style items (noise), at several alpha_s, with the shipped stage-2 mask generator and with
an untrained one (the stage-1 model plus a fresh generator). If the mask filtered noise, an
off-style item would keep less than an on-style one.

    python benchmarks/mask_keep.py --threads 1     # writes data/results/mask_keep.json
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--alphas", type=float, nargs="+", default=[0.2, 0.4, 0.8])
    p.add_argument("--n", type=int, default=300, help="test samples of the sample split")
    p.add_argument("--out", default=str(ROOT / "data" / "results" / "mask_keep.json"))
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    device, stickers, data = full_profile_data(args.threads)
    from drclib import drc
    from drclib.backbone import sticker_codes
    from drclib.backbone import tokenizer as tok_mod
    from drclib.io import write_json
    from drclib.pipeline import DRCPipeline, default_pipeline_dir, default_stage1_dir
    from drclib.runtime import describe_machine
    codes = sticker_codes(tok_mod.load_default(device=device), stickers)
    images = drc.cell_images(stickers)
    trained = DRCPipeline.from_pretrained(default_pipeline_dir(), device=device)
    untrained = drc.DRC.from_stage1(default_stage1_dir("drc"), device=device).eval()
    test = data.splits["sample"].test[:args.n]
    rows = {}
    for name, model in (("trained", trained.drc.eval()), ("untrained", untrained)):
        for a in args.alphas:
            r = drc.history_keep_rates(model, trained.lmm, codes, data.samples, test, images=images, alpha_s=a)
            rows[f"{name} alpha_s {a}"] = {k: r[k] for k in ("on_style", "on_style_se", "off_style", "off_style_se",
                                                             "n_on", "n_off", "alpha_s")}
            print(f"{name:9s} alpha_s {a:.1f}: on-style items keep {r['on_style']:.3f} ± {r['on_style_se']:.3f} "
                  f"({r['n_on']}), off-style {r['off_style']:.3f} ± {r['off_style_se']:.3f} ({r['n_off']})")
    write_json(args.out, {"command": "python benchmarks/mask_keep.py " + " ".join(argv or sys.argv[1:]),
                          "machine": describe_machine(device), "n_samples": int(len(test)), "rows": rows,
                          "seconds": round(time.perf_counter() - t0, 1)})
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
