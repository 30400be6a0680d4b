"""An LMM that composes: pocket LMMs pretrained on shifted and scaled copies of the stickers, and
DRC's stage 1 on each, beside the plain LMM and its stage 1 (prints figures and writes a JSON
that RESULTS sections 1 and 5 and notebook 07 quote; not a test). Seed 0's candidate became the
kit's default LMM; the plain one (the default before it) is kept in ``data/checkpoints/plain``.

    python benchmarks/composing_lmm.py --candidate NAME=LMM_FOLDER:STAGE1_FOLDER [...]
                                       [--show NAME] [--work runs/composing_lmm] [--threads 1]
                                       [--out data/results/composing_lmm.json]

For the plain LMM and for each candidate, one row:

- the LMM's own text-to-image figures from its card (greedy, the prompt naming style and emoji,
  300 training cells and the 64 held-out cells of `core`, the judges' argmax over the set) and its
  training minutes, the runs it continued included;
- its stage-1 model's card (minutes, final loss, swap test);
- section 5's protocol on that stage-1 model (``python -m drclib.evaluation --profile full --rows
  stage1_drc``, 200 `sample` and 64 `heldout` test samples, one greedy output each, through
  ``benchmarks/heldout_fix.py``'s :func:`pilot`). The plain row reads the ``stage1_drc``
  entry of section 5's evaluation of the plain kit (``data/results/evaluation_plain_lmm``); Pigeon's entry stands beside them.

``--show`` names the candidate shipped as the kit's LMM (default: the first), whose row notebook 07
sets beside the plain one (its images are the shipped evaluation's, ``data/results/evaluation_full``).


The candidates of this study (the 2-core AMD EPYC with AVX-512-bf16, one thread a job, two jobs
side by side; bf16 autocast on, which this CPU runs natively), in a clone of the repository, for
S in 0 1 (the recipe of ``benchmarks/lmm_recipes.py``'s "--augment 0.9 --copies 16" rows; its
6,000-step LMMs reproduce those rows' figures exactly):

    python -m drclib.train backbone --concepts core --threads 1 --augment 0.9 --copies 16 \
        --steps 3000 --seed S --state-dir runs/lmm/state_a3000_sS --out runs/lmm/aug_3000_sS
    python -m drclib.train backbone --concepts core --threads 1 --augment 0.9 --copies 16 \
        --steps 3000 --seed S --init-from runs/lmm/aug_3000_sS \
        --state-dir runs/lmm/state_a6000_sS --out runs/lmm/aug_6000_sS
    # 600 steps of the shipped recipe (no augmentation) at a quarter of its learning rate:
    # the training cells memorised again, on top of what the augmented steps taught
    python -m drclib.train backbone --concepts core --threads 1 --steps 600 --lr 5e-4 --warmup 30 \
        --seed S --init-from runs/lmm/aug_6000_sS \
        --state-dir runs/lmm/state_anneal_sS --out runs/lmm/aug_6000_sS_anneal
    # DRC's stage 1 (the shipped recipe) on the annealed LMM, and on the one before the anneal
    python -m drclib.train stage1 --variant drc --threads 1 --lmm runs/lmm/aug_6000_sS_anneal \
        --state-dir runs/st/anneal_sS --out runs/stage1/anneal_sS
    python -m drclib.train stage1 --variant drc --threads 1 --lmm runs/lmm/aug_6000_sS \
        --state-dir runs/st/plain_sS --out runs/stage1/plain_sS

Seed 0's annealed LMM and its stage 1 are shipped as the kit's defaults, ``data/checkpoints/lmm``
and ``data/checkpoints/stage1/drc`` (the kit's default seed; the two seeds' training-cell figures
tie). They were in ``data/checkpoints/composing`` when the JSON was written by

    python benchmarks/composing_lmm.py --threads 2 \
        --candidate "seed 0=data/checkpoints/composing/lmm:data/checkpoints/composing/stage1" \
        --candidate "seed 1=runs/composing/seed1/lmm:runs/composing/seed1/stage1" \
        --candidate "seed 0 before anneal=runs/composing/plain_s0/lmm:runs/composing/plain_s0/stage1" \
        --candidate "seed 1 before anneal=runs/composing/plain_s1/lmm:runs/composing/plain_s1/stage1"

(``runs/composing/*``: the clone's folders above, copied); the JSON's ``plain`` row was then
rewritten by :func:`plain_row` once the plain LMM had moved to ``data/checkpoints/plain``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _kit import in_repo, named_folder_pairs, read_card  # noqa: E402

FIGURES = ("style_acc", "emoji_top1", "both")
"""The text-to-image figures of an LMM's card kept per split of cells."""


def _shown(folder: Path) -> str:
    """``folder`` relative to the repository when it lies inside it (so the JSON names no machine's paths)."""
    folder = Path(folder).resolve()
    return str(folder.relative_to(ROOT)) if folder.is_relative_to(ROOT) else str(folder)


def lmm_row(folder: Path) -> dict:
    """An LMM's card: its text-to-image figures on training and held-out cells, its training
    minutes (the runs it continued included) and the commands that made it, first to last."""
    extra = read_card(folder, "LMM")
    ev = extra["evaluation"]
    previous = extra.get("previous", [])
    return {"folder": _shown(folder),
            "commands": [p.get("command") for p in previous] + [extra["command"]],
            "train_minutes": round(extra["train_minutes"] + sum(p.get("train_minutes", 0.0) for p in previous), 2),
            "machine": extra.get("machine"),
            **{cells: {"n": int(ev[cells]["n_cells"]), **{k: float(ev[cells][k]) for k in FIGURES}}
               for cells in ("train_cells", "heldout_cells")}}


def stage1_row(folder: Path) -> dict:
    """A stage-1 model's card: its command, minutes, final losses and swap test (its own pairs)."""
    extra = read_card(folder, "stage-1")
    return {"folder": _shown(folder), "command": extra["command"], "train_minutes": extra["train_minutes"],
            "final_losses": extra.get("final_losses"),
            "swap": {kind: extra["evaluation"]["swap"][kind]["self"] for kind in ("train", "heldout")}}


def plain_row() -> dict:
    """The plain LMM and its stage 1 (``data/checkpoints/plain``, the kit's default until the
    composing LMM replaced it), with section 5's ``stage1_drc`` and ``pigeon`` entries from the
    evaluation of that kit (``data/results/evaluation_plain_lmm``)."""
    from drclib.io import read_json
    from drclib.paths import repo_root
    from drclib.pipeline import plain_lmm_dir

    full = read_json(repo_root() / "data" / "results" / "evaluation_plain_lmm" / "evaluation.json")
    pick = lambda row: {s: {"n": e[row]["n"], **e[row]["ground_truth"]} for s, e in full["splits"].items()}
    return {"lmm": lmm_row(plain_lmm_dir() / "lmm"), "stage1": stage1_row(plain_lmm_dir() / "stage1"),
            "splits": pick("stage1_drc"), "pigeon": pick("pigeon")}


def candidate_row(name: str, lmm: Path, stage1: Path, work: Path, threads: int) -> dict:
    """One candidate: its LMM's and stage 1's cards and section 5's protocol on its stage 1."""
    from heldout_fix import pilot

    return {"lmm": lmm_row(lmm), "stage1": stage1_row(stage1),
            "splits": pilot(name, lmm, stage1, work, threads)["splits"]}


def print_row(name: str, r: dict) -> None:
    t, h = r["lmm"]["train_cells"], r["lmm"]["heldout_cells"]
    s, ho = r["splits"]["sample"], r["splits"]["heldout"]
    print(f"{name}: LMM {r['lmm']['train_minutes']:.1f} min, text-to-image 'both' {t['both']:.3f} training cells / "
          f"{h['both']:.3f} held-out; its stage 1 'both' {s['both']:.3f} on sample / {ho['both']:.3f} on heldout "
          f"(swap test {r['stage1']['swap']['train']['both']:.3f} / {r['stage1']['swap']['heldout']['both']:.3f})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--candidate", action="append", default=[], help="NAME=LMM_FOLDER:STAGE1_FOLDER")
    p.add_argument("--show", default=None, help="the candidate shipped as the kit's LMM (default: the first)")
    p.add_argument("--work", default="runs/composing_lmm")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="data/results/composing_lmm.json")
    args = p.parse_args(argv)

    from drclib.io import write_json
    from drclib.runtime import describe_machine

    t0 = time.perf_counter()
    wanted = named_folder_pairs(args.candidate, "--candidate")
    out_path = in_repo(args.out)
    out = {"command": "python benchmarks/composing_lmm.py " + shlex.join(sys.argv[1:] if argv is None else argv),
           "machine": describe_machine("cpu"), "plain": plain_row(), "candidates": {}}
    if args.show is not None and args.show not in [w[0] for w in wanted]:
        raise SystemExit(f"--show {args.show!r} names no --candidate (have: {[w[0] for w in wanted]})")
    print_row("plain", out["plain"])
    for name, lmm, stage1 in wanted:
        r = out["candidates"][name] = candidate_row(name, lmm, stage1, in_repo(args.work), args.threads)
        print_row(name, r)
    if wanted:
        out["shown"] = args.show or wanted[0][0]
    out["minutes"] = round((time.perf_counter() - t0) / 60, 2)
    write_json(out_path, out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
