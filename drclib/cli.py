"""The ``drc`` command line.

    drc run-notebooks --profile quick --out runs/quick   run every notebook in order
    drc build-data                                       rebuild data/stickers_32px.npz from npm
    drc info                                             what the sticker set and a profile hold
    drc generate --history a.png b.png --reference r.png --alpha-m 0.4 --out out.png
    drc train ...                                        the training commands (python -m drclib.train)
    drc evaluate ...                                     every method on both splits (python -m drclib.evaluation)
    drc reproduce ...                                    the whole kit, as make all (python -m drclib.reproduce)

``python -m drclib.cli`` works the same where the ``drc`` script is not on PATH.
"""

from __future__ import annotations

import argparse
import sys


def _cmd_run_notebooks(args) -> int:
    from drclib.notebooks import run_all

    out = args.out or f"runs/{args.profile}"
    run_all(out, profile=args.profile, seed=args.seed, device=args.device, only=args.only,
            timeout=args.timeout, lanes=args.lanes)
    return 0


def _cmd_build_data(args) -> int:
    from drclib.data import build

    return build.main(args.build_args) or 0


def _cmd_info(args) -> int:
    from drclib.data import StickerSet, make_dataset

    stickers = StickerSet.load(args.data)
    print(stickers)
    for row in stickers.licence_table():
        print(f"  {row['style']:<15} {row['package']:<36} {row['licence']}")
    counts = {c: int((stickers.emoji_in(c)).size) for c in stickers.category_names}
    print("emoji per category:", ", ".join(f"{c} {n}" for c, n in counts.items()))
    data = make_dataset(stickers, args.profile, seed=args.seed)
    s = data.summary()
    print(f"profile {args.profile}, seed {args.seed}: {s['users']} users, {s['items']} items, "
          f"{s['samples']} samples, {s['triplets']} triplets, {s['heldout_cells']} held-out cells")
    for name, sizes in s["splits"].items():
        print(f"  split {name:<8} train {sizes['train']}, val {sizes['val']}, test {sizes['test']}")
    return 0


def _cmd_generate(args) -> int:
    from pathlib import Path

    from drclib.pipeline import DRCPipeline, default_pipeline_dir

    folder = Path(args.pipeline) if args.pipeline else default_pipeline_dir()
    pipe = DRCPipeline.from_pretrained(folder, device=args.device)
    if args.sweep:
        result = pipe.sweep(args.history, args.reference, text=args.text, alpha_s=args.alpha_s, seed=args.seed)
        images = [result["best"]]
        print(f"alpha_m sweep: best {result['alpha_m']} (F1 " + ", ".join(
            f"{a}: {f:.3f}" for a, f in zip(result["alphas"], result["f1"])) + ")")
    else:
        images = pipe(args.history, args.reference, text=args.text, alpha_m=args.alpha_m, alpha_s=args.alpha_s,
                      num_images=args.num_images, seed=args.seed, greedy=args.greedy)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = [out] if len(images) == 1 else [out.with_name(f"{out.stem}_{i}{out.suffix or '.png'}")
                                             for i in range(len(images))]
    for im, path in zip(images, paths):
        im = im.resize((args.size, args.size), resample=0) if args.size != im.size[0] else im
        im.save(path)
        print(f"wrote {path}")
    return 0


def _cmd_train(args) -> int:
    from drclib import train

    return train.main(args.train_args) or 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="drc", description="drc-kit: DRC personalized image generation, "
                                "a teaching kit. Each command below has its own --help.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run-notebooks", help="run every notebook in order with papermill",
                       description="Execute notebooks/NN_*.ipynb in order with papermill. Executed copies "
                       "and each notebook's JSON of key numbers go to --out.")
    r.add_argument("--profile", choices=["quick", "full"], default="quick",
                   help="quick: about a minute a notebook on a laptop CPU; full: the real results")
    r.add_argument("--out", default=None, help="folder for executed notebooks and JSON (default runs/PROFILE)")
    r.add_argument("--seed", type=int, default=0, help="seed passed to every notebook (default 0)")
    r.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda or mps")
    r.add_argument("--only", nargs="+", metavar="PREFIX", help="run only notebooks starting with these, e.g. 00 01")
    r.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell (default 1800)")
    r.add_argument("--lanes", type=int, default=1,
                   help="notebooks run at once, each in its own process with one torch thread (default 1: in order)")
    r.set_defaults(func=_cmd_run_notebooks)

    b = sub.add_parser("build-data", help="rebuild the sticker set from pinned npm tarballs",
                       description="Fetch the pinned npm tarballs with npm, verify their sha1, rasterise "
                       "and write data/stickers_32px.npz. Arguments after build-data go to "
                       "`python -m drclib.data.build` (see its --help).", add_help=False)
    b.add_argument("build_args", nargs=argparse.REMAINDER)
    b.set_defaults(func=_cmd_build_data)

    i = sub.add_parser("info", help="summarise the sticker set and the users/samples of a profile",
                       description="Load the sticker set (checking its sha256) and print its styles, "
                       "licences and categories, then the sizes of the users, samples, splits and "
                       "triplets a profile makes.")
    i.add_argument("--profile", choices=["quick", "full"], default="quick")
    i.add_argument("--seed", type=int, default=0)
    i.add_argument("--data", default=None, help="path of a sticker npz (default data/stickers_32px.npz)")
    i.set_defaults(func=_cmd_info)

    g = sub.add_parser("generate", help="generate an image from history PNGs and a reference PNG",
                       description="Personalized generation with a saved DRC pipeline (default: the shipped "
                       "one in data/checkpoints/drc): the reference's content drawn in the style of the "
                       "history images. Images of any size and mode are accepted (composited on white, "
                       "resized to 32 px).")
    g.add_argument("--history", nargs="+", required=True, metavar="PNG", help="images the user liked (1 to 16)")
    g.add_argument("--reference", required=True, metavar="PNG", help="the image whose content to draw")
    g.add_argument("--text", default=None, help="an optional text instruction")
    g.add_argument("--alpha-m", type=float, default=0.5,
                   help="share of the reference's tokens masked, in [0, 1]: more = less of its content (default 0.5)")
    g.add_argument("--alpha-s", type=float, default=0.2,
                   help="share of the history's style tokens masked, in [0, 1] (default 0.2)")
    g.add_argument("--sweep", action="store_true",
                   help="try alpha_m = 0.0, 0.1, ..., 1.0 and keep the best by the paper's F1 rule")
    g.add_argument("--num-images", type=int, default=1)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--greedy", action="store_true", help="most likely code at every step instead of sampling")
    g.add_argument("--size", type=int, default=32, help="pixel size of the saved PNG (nearest-neighbour upscale)")
    g.add_argument("--pipeline", default=None, help="a folder saved by DRCPipeline.save_pretrained")
    g.add_argument("--device", default="auto")
    g.add_argument("--out", required=True, help="output PNG (with --num-images > 1: out_0.png, out_1.png, ...)")
    g.set_defaults(func=_cmd_generate)

    t = sub.add_parser("train", help="training and evaluation commands (backbone, stage1, stage2, ...)",
                       description="The same as `python -m drclib.train`; `drc train --help` lists them.",
                       add_help=False)
    t.add_argument("train_args", nargs=argparse.REMAINDER)
    t.set_defaults(func=_cmd_train)
    for name, what in (("evaluate", "python -m drclib.evaluation"), ("reproduce", "python -m drclib.reproduce")):
        sub.add_parser(name, help=f"the same as `{what}` (--help lists its options)", add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # pass-through commands hand every later argument (--help included) to their own parser
    if argv and argv[0] == "train":
        from drclib import train

        return int(train.main(argv[1:]) or 0)
    if argv and argv[0] in ("evaluate", "reproduce"):
        from drclib import evaluation, reproduce

        return int((evaluation if argv[0] == "evaluate" else reproduce).main(argv[1:]) or 0)
    if argv and argv[0] == "build-data":
        from drclib.data import build

        return int(build.main(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError, TypeError) as e:
        print(f"drc {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
