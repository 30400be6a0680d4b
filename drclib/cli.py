"""The ``drc`` command line.

    drc run-notebooks --profile quick --out runs/quick   run every notebook in order
    drc build-data                                       rebuild data/stickers_32px.npz from npm
    drc info                                             what the sticker set and a profile hold

``python -m drclib.cli`` works the same where the ``drc`` script is not on PATH.
"""

from __future__ import annotations

import argparse
import sys


def _cmd_run_notebooks(args) -> int:
    from drclib.notebooks import run_all

    out = args.out or f"runs/{args.profile}"
    run_all(out, profile=args.profile, seed=args.seed, device=args.device, only=args.only,
            timeout=args.timeout)
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
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as e:
        print(f"drc {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
