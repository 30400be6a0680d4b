"""The quick reproduction: DRC's parts trained from nothing on the `mini` world, then scored.

The notebooks run over shipped weights; this shows that the kit's *training* produces the
kit's result. On the quick profile's data (the `mini` concept set, which lies inside `core`, so
the shipped tokenizer, judges, semantic encoder and pocket LMM serve it) it trains, from
freshly initialised modules and with one seed:

- **DRC** (stage 1, the shipped recipe: semantic features, self form, z as slots of the LMM's
  words, caption anchor, difficulty-aware importance sampling, frozen LMM),
- **w/o FusionNetwork** (the same with concatenation in place of the fusion network),
- **Pigeon** (LoRA adapters and a mask generator over the raw history and reference tokens),

then scores the three under :mod:`drclib.evaluation`'s one protocol (one output per sample,
alpha_m 0.5, greedy) on the quick profile's test samples of both splits, pooled, and checks the
paper's direction (:func:`direction`): DRC's "both" above Pigeon's and above w/o
FusionNetwork's, its collapse to the reference's style below Pigeon's, each by a margin.

``python -m drclib.train quick --seed 0`` runs it in two lanes (:data:`LANES`: DRC and w/o
FusionNetwork in one process, Pigeon in another, one torch thread each, so the 2-core CPU's
cores both work; 9.8 minutes instead of 12.5-15.6 in one process, with the same numbers: each
row is trained from its own seed and scored greedily, so it does not matter which process runs
it). ``tests/test_reproduction.py`` runs it; ``benchmarks/quick_seeds.py`` runs five seeds and
reports their spread, from which :data:`MARGINS` were chosen.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

ROWS = ("drc", "concat", "pigeon")
"""What the quick reproduction trains, in order."""

LANES = (("drc", "concat"), ("pigeon",))
"""The rows each of the two processes trains and scores when the run uses both cores (about
7.5 and 5.5 minutes on one thread each)."""


@dataclass
class QuickRecipe:
    """The training budget of the quick reproduction (each part from scratch, one seed)."""

    stage1_steps: int = 150
    """At 100 steps DRC's pooled "both" varied from 0.16 to 0.35 over two seeds; at 150, 0.64 (seed 0)."""
    stage1_batch: int = 16
    stage1_lr: float = 1e-3
    caption_weight: float = 10.0
    pigeon_steps: int = 120
    pigeon_batch: int = 8
    pigeon_lr: float = 3e-3
    """Pigeon needs a higher rate than the full recipe's 1e-3 to reach its own behaviour in this
    budget: at 80 steps of 8 at 1e-3 it still ignored the reference (emoji 7%, collapse 7%,
    seed 0), at 120 steps at 3e-3 it starts to take the reference's style (collapse 28%)."""
    alpha_m: float = 0.5


MARGINS = {"both_vs_pigeon": 0.30, "both_vs_concat": 0.30, "collapse_vs_pigeon": 0.04}
"""How far apart the pooled rates must be for :func:`direction` to pass, chosen from the gaps
over five seeds on the shipped LMM (``benchmarks/quick_seeds.py``; their smallest, mean and sd in
``data/results/quick_seeds.json`` and RESULTS.md section 6, beside the plain LMM's, when the
collapse margin was 0.05): each margin lies below the mean minus three standard deviations of its
gap, so a correct kit fails it rarely, and well above zero, so a kit whose DRC stopped composing
(or stopped resisting collapse) fails it."""


def _pool(results: dict, row: str) -> dict:
    """A row's ground-truth rates pooled over the splits (weighted by their sample counts)."""
    entries = [s[row] for s in results["splits"].values() if row in s]
    n = sum(e["n"] for e in entries)
    keys = entries[0]["ground_truth"]
    return {"n": n, **{k: sum(e["ground_truth"][k] * e["n"] for e in entries) / n for k in keys}}


def direction(result: dict, margins: dict | None = None) -> list[str]:
    """The paper's direction on a quick reproduction's pooled rates; returns what fails, in words
    (an empty list: every check holds)."""
    m = {**MARGINS, **(margins or {})}
    p = result["pooled"]
    d, pg, cc = p["drc"], p["pigeon"], p["concat"]
    bad = []
    if not d["both"] >= pg["both"] + m["both_vs_pigeon"]:
        bad.append(f"DRC's both {d['both']:.3f} is not {m['both_vs_pigeon']} above Pigeon's {pg['both']:.3f}")
    if not d["both"] >= cc["both"] + m["both_vs_concat"]:
        bad.append(f"DRC's both {d['both']:.3f} is not {m['both_vs_concat']} above w/o FusionNetwork's {cc['both']:.3f}")
    if not d["collapse_reference"] <= pg["collapse_reference"] - m["collapse_vs_pigeon"]:
        bad.append(f"DRC's collapse to the reference {d['collapse_reference']:.3f} is not {m['collapse_vs_pigeon']} "
                   f"below Pigeon's {pg['collapse_reference']:.3f}")
    return bad


def quick_reproduction(seed: int = 0, out: str | Path | None = None, *, recipe: QuickRecipe | None = None,
                       device: str = "cpu", progress: bool = True, rows=ROWS) -> dict:
    """Train DRC, w/o FusionNetwork and Pigeon from scratch on the quick profile's data with
    ``seed``, score them, and return (and write to ``out/quick_reproduction.json``) the result:
    per-split and pooled rates, the minutes of every part, the recipe and the direction checks.
    ``rows``: train and score only some of :data:`ROWS` (pilots; the checks need all three)."""
    if not rows or set(rows) - set(ROWS):
        raise ValueError(f"rows must be a non-empty subset of {ROWS}, got {rows}")
    from drclib.backbone import PocketLMM, default_checkpoint_dir, sticker_codes
    from drclib.backbone import encoder as enc_mod
    from drclib.backbone import tokenizer as tok_mod
    from drclib.baselines import InterleavedConfig, InterleavedPipeline, InterleavedPrompter
    from drclib.data import StickerSet, make_dataset
    from drclib.drc import DRC, VARIANTS, caption_words, cell_images
    from drclib.evaluation import EvalConfig, Judges, evaluate
    from drclib.io import write_json
    from drclib.pipeline import DRCPipeline
    from drclib.runtime import describe_machine, seed_everything
    from drclib.train.baselines import train_baseline
    from drclib.train.stage1 import Stage1Config, train_stage1
    from drclib.train.stage2 import Stage2Config

    recipe = recipe or QuickRecipe()
    t_start = time.perf_counter()
    stickers = StickerSet.for_profile("quick")
    data = make_dataset(stickers, "quick", seed=seed)
    tokenizer = tok_mod.load_default(device=device)
    encoder = enc_mod.load_default(device=device)
    codes = sticker_codes(tokenizer, stickers)
    images = cell_images(stickers)
    minutes, pipes = {}, {}

    def fresh_lmm():
        return PocketLMM.from_pretrained(default_checkpoint_dir(), device=device)

    for row in [r for r in ("drc", "concat") if r in rows]:
        seed_everything(seed)
        lmm = fresh_lmm()
        model = DRC.for_lmm(lmm, encoder=encoder, n_latent=16, features="semantic", stage1_form="self",
                            z_space="slots", **VARIANTS[row])
        cfg = Stage1Config(steps=recipe.stage1_steps, batch_size=recipe.stage1_batch, lr=recipe.stage1_lr, seed=seed,
                           lora_rank=0, caption_weight=recipe.caption_weight, checkpoint_every=10**9)
        captions = caption_words(lmm, stickers, 16, model.config.n_words)
        t0 = time.perf_counter()
        train_stage1(model, lmm, codes, data.triplets, cfg, device=device, captions=captions, images=images,
                     progress=progress)
        minutes[row] = round((time.perf_counter() - t0) / 60, 2)
        pipes[row] = DRCPipeline(model.eval(), lmm.eval(), tokenizer, device=device)

    if "pigeon" in rows:
        seed_everything(seed)
        lmm = fresh_lmm()
        prompter = InterleavedPrompter(InterleavedConfig(dim=lmm.config.hidden_size, mask_generator=True))
        cfg = Stage2Config(steps=recipe.pigeon_steps, batch_size=recipe.pigeon_batch, lr=recipe.pigeon_lr, seed=seed,
                           augment=False, checkpoint_every=10**9)
        t0 = time.perf_counter()
        train_baseline(prompter, lmm, codes, data.samples, data.splits["sample"].train, cfg, device=device,
                       progress=progress)
        minutes["pigeon"] = round((time.perf_counter() - t0) / 60, 2)
        pipes["pigeon"] = InterleavedPipeline(prompter.eval(), lmm.eval(), tokenizer, method="pigeon")

    splits = {"sample": np.concatenate([data.splits["sample"].test, data.splits["sample"].val]),
              "heldout": data.splits["heldout"].test}
    n_max = max(len(v) for v in splits.values())
    judges = Judges.load(device, paper=False, stickers=stickers)
    t0 = time.perf_counter()
    results = evaluate(pipes, stickers, data.samples, splits,
                       EvalConfig(n_samples=n_max, alpha_m=recipe.alpha_m, sweep=False, seed=seed, profile="quick"),
                       judges, progress=progress)
    minutes["evaluation"] = round((time.perf_counter() - t0) / 60, 2)
    result = {"seed": seed, "recipe": asdict(recipe), "concepts": stickers.concept_name,
              "splits": {s: {r: {"n": e["n"], **e["ground_truth"]} for r, e in entries.items()}
                         for s, entries in results["splits"].items()},
              "pooled": {r: _pool(results, r) for r in rows}, "minutes": minutes,
              "total_minutes": round((time.perf_counter() - t_start) / 60, 2),
              "machine": describe_machine(device), "threads": torch.get_num_threads(),
              "command": f"python -m drclib.train quick --seed {seed}"}
    result["direction_failures"] = direction(result) if set(rows) == set(ROWS) else ["not every row was trained"]
    if out is not None:
        write_json(Path(out) / "quick_reproduction.json", result)
    return result


def merge(parts: list[dict], total_minutes: float | None = None) -> dict:
    """One result from the results of lanes that each trained some of :data:`ROWS` with one
    seed (rates, minutes and machine are taken as they are; the direction is checked again)."""
    if not parts:
        raise ValueError("nothing to merge: pass the results of the lanes")
    seeds = {p["seed"] for p in parts}
    if len(seeds) != 1:
        raise ValueError(f"the lanes ran different seeds {sorted(seeds)}: merge runs of one seed only")
    rows = [r for p in parts for r in p["pooled"]]
    if len(rows) != len(set(rows)):
        raise ValueError(f"two lanes trained the same row: {rows}")
    result = {k: v for k, v in parts[0].items() if k not in ("splits", "pooled", "minutes", "direction_failures")}
    result["splits"] = {}
    for p in parts:
        for split, entries in p["splits"].items():
            result["splits"].setdefault(split, {}).update(entries)
    result["pooled"] = {r: p["pooled"][r] for r in ROWS for p in parts if r in p["pooled"]}
    result["minutes"] = {f"{k} (lane {i})" if k == "evaluation" else k: v
                         for i, p in enumerate(parts) for k, v in p["minutes"].items()}
    result["total_minutes"] = (round(total_minutes, 2) if total_minutes is not None
                               else max(p["total_minutes"] for p in parts))
    result["lanes"] = [list(p["pooled"]) for p in parts]
    result["threads"] = [p["threads"] for p in parts]
    result["direction_failures"] = (direction(result) if set(result["pooled"]) == set(ROWS)
                                    else ["not every row was trained"])
    return result


def quick_reproduction_lanes(seed: int = 0, out: str | Path | None = None, *, lanes=LANES, device: str = "cpu",
                             progress: bool = True) -> dict:
    """:func:`quick_reproduction` with its rows split over processes, one torch thread each
    (``lanes``: the rows of each process; the default uses both cores of the 2-core CPU). Each
    lane writes its part under ``out/lane<i>/``; the merged result goes to
    ``out/quick_reproduction.json``. Raises if a lane fails (its log is ``out/lane<i>.log``)."""
    import subprocess
    import sys
    import tempfile

    from drclib.io import write_json
    from drclib.paths import repo_root
    from drclib.runtime import thread_env

    flat = [r for lane in lanes for r in lane]
    if sorted(flat) != sorted(ROWS):
        raise ValueError(f"the lanes must train every row of {ROWS} once, got {lanes}")
    base = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="quick-reproduction-"))
    base.mkdir(parents=True, exist_ok=True)
    env = thread_env(1)
    t0 = time.perf_counter()
    procs = []
    for i, lane in enumerate(lanes):
        (base / f"lane{i}" / "quick_reproduction.json").unlink(missing_ok=True)   # never read a stale result
        cmd = [sys.executable, "-m", "drclib.train", "quick", "--seed", str(seed), "--lanes", "1", "--threads", "1",
               "--device", device, "--quiet", "--rows", *lane, "--out", str(base / f"lane{i}")]
        log = open(base / f"lane{i}.log", "w")
        procs.append((i, lane, subprocess.Popen(cmd, cwd=repo_root(), env=env, stdout=log, stderr=subprocess.STDOUT),
                      log))
        if progress:
            print(f"lane {i}: {', '.join(lane)} (one thread; log {base / f'lane{i}.log'})", flush=True)
    failed = []
    for i, lane, proc, log in procs:
        # a lane's exit status is 1 when the direction cannot be checked on its rows alone; only
        # a missing result is a failure here
        proc.wait()
        log.close()
        if not (base / f"lane{i}" / "quick_reproduction.json").is_file():
            failed.append(f"lane {i} ({', '.join(lane)}) exited {proc.returncode} without a result; see "
                          f"{base / f'lane{i}.log'}")
        elif progress:
            print(f"lane {i} done after {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
    if failed:
        raise RuntimeError("; ".join(failed))
    parts = [json.loads((base / f"lane{i}" / "quick_reproduction.json").read_text()) for i in range(len(lanes))]
    result = merge(parts, total_minutes=(time.perf_counter() - t0) / 60)
    result["command"] = f"python -m drclib.train quick --seed {seed}"
    if out is not None:
        write_json(base / "quick_reproduction.json", result)
    return result


def quick_command(args) -> int:
    """``python -m drclib.train quick``: one seed of the quick reproduction; exit 1 if the
    paper's direction does not hold."""
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out or f"runs/quick-reproduction/seed{args.seed}")
    rows = tuple(r for r in ROWS if r in (args.rows or ROWS))
    if args.lanes == 2 and rows == ROWS:
        r = quick_reproduction_lanes(args.seed, out, device=args.device, progress=not args.quiet)
    else:
        r = quick_reproduction(args.seed, out, device=args.device, progress=not args.quiet, rows=rows)
    for row in [r_ for r_ in ROWS if r_ in r["pooled"]]:
        p = r["pooled"][row]
        print(f"{row:8s} n {p['n']:3d}  style {p['style_acc']:.3f}  emoji {p['emoji_top1']:.3f}  both {p['both']:.3f}  "
              f"collapse to the reference {p['collapse_reference']:.3f}  (trained in {r['minutes'][row]} min)")
    print(f"total {r['total_minutes']} min; written to {out / 'quick_reproduction.json'}")
    if set(r["pooled"]) != set(ROWS):
        print(f"direction not checked: only {', '.join(r['pooled'])} trained")
        return 0
    for line in r["direction_failures"]:
        print("FAILS:", line)
    return 1 if r["direction_failures"] else 0
