"""Before/after speed of the kit's training and generation, measured in one run on this machine.

    python benchmarks/speed.py                  # about 6 minutes; writes data/results/speed.json
    python benchmarks/speed.py --compile        # also torch.compile on LMM pretraining and stage 1 (+3 min)

Run it with nothing else running. For each training part it measures the machine's throughput

- **before**: one process with torch's two threads, the way the kit trained its parts one after
  another (``make all`` before the two lanes, the quick reproduction in one process);
- **after**: two processes of one thread each, at once, their rates summed: how ``make all``
  (``drclib.reproduce``, two lanes) and the quick reproduction (``drclib.train quick``) train now;

for LMM pretraining (tokens/s, the shipped recipe's batch of 32 sequences), stage 1 (steps/s,
batch 32, the shipped DRC recipe) and stage 2 (steps/s, batch 16). Then the LMM's generation of
64 images at once on two threads (images/s): without the KV cache (before) and with it (the
kit's default; aim at least 40 images/s). With ``--compile``: LMM pretraining and stage 1 with
``torch.compile`` against eager, one process of two threads (each after its compile time).

Also the speed-up a second thread gives one process (before / one lane), which ``make all``'s
plan uses (:data:`drclib.reproduce.TWO_THREADS`). Each rate is the median over timed steps after two warm-up steps (stage 1 and 2: the mean over
the timed steps); the training parts read the quick profile's data (``mini``) with the shipped
LMM, encoder and stage-1 model (their sizes are the full profile's).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PARTS = {"lmm": ("LMM pretraining", "tokens/s", 12), "stage1": ("stage 1", "steps/s", 6),
         "stage2": ("stage 2", "steps/s", 8)}
"""part -> (name, unit, timed steps)."""


def _steps_per_s(train, steps: int) -> float:
    """Run ``train(n)`` for 2 warm-up steps, then time ``steps`` more (a fresh run each time)."""
    train(2)
    t0 = time.perf_counter()
    train(steps)
    return steps / (time.perf_counter() - t0)


def worker(part: str, steps: int, compile_: bool = False) -> float:
    """The rate of one training part in this process (torch's threads as set by the caller)."""

    from drclib.backbone import PocketLMM, default_checkpoint_dir, sticker_codes
    from drclib.backbone import tokenizer as tok_mod
    from drclib.data import StickerSet, heldout_cells, make_dataset
    from drclib.runtime import pick_device, seed_everything

    pick_device("cpu")
    seed_everything(0)
    stickers = StickerSet.for_profile("quick")
    tokenizer = tok_mod.load_default()
    codes = sticker_codes(tokenizer, stickers)
    lmm = PocketLMM.from_pretrained(default_checkpoint_dir())
    if compile_:
        lmm.lm.compile()
    if part == "lmm":
        from drclib.train import PretrainConfig, pretrain_backbone

        cells = np.argwhere(~heldout_cells(stickers))
        lmm.train()
        h = pretrain_backbone(lmm, stickers, codes, cells, PretrainConfig(steps=steps + 2, batch_size=32),
                              progress=False)
        return float(np.median(h["tokens_per_s"][2:]))
    data = make_dataset(stickers, "quick", seed=0)
    from drclib.drc import DRC, VARIANTS, caption_words, cell_images

    images = cell_images(stickers)
    if part == "stage1":
        from drclib.backbone import encoder as enc_mod
        from drclib.train.stage1 import Stage1Config, train_stage1

        encoder = enc_mod.load_default()
        drc = DRC.for_lmm(lmm, encoder=encoder, n_latent=16, features="semantic", stage1_form="self",
                          z_space="slots", **VARIANTS["drc"])
        captions = caption_words(lmm, stickers, 16, drc.config.n_words)
        return _steps_per_s(lambda n: train_stage1(
            drc, lmm, codes, data.triplets, Stage1Config(steps=n, batch_size=32, lr=1e-3, lora_rank=0, caption_weight=10.0,
                                                         checkpoint_every=10**9),
            captions=captions, images=images, progress=False), steps)
    if part == "stage2":
        import copy

        from drclib.drc import load_stage1
        from drclib.pipeline import default_stage1_dir
        from drclib.train.stage2 import Stage2Config, train_stage2

        folder = default_stage1_dir("drc")
        s1, s1_lmm = load_stage1(folder)
        lmm2 = copy.deepcopy(s1_lmm)
        drc = DRC.from_stage1(folder)
        rank = int(s1.training_info.get("stage1", {}).get("lora_rank", 8))     # as drclib.train stage2 does
        captions = caption_words(lmm2, stickers, drc.config.n_latent, drc.config.n_words)
        return _steps_per_s(lambda n: train_stage2(
            drc, lmm2, codes, data.samples, data.splits["sample"].train,
            Stage2Config(steps=n, batch_size=16, lora_rank=rank, caption_weight=10.0, checkpoint_every=10**9),
            images=images, captions=captions, progress=False), steps)
    raise ValueError(f"unknown part {part!r}: use one of {list(PARTS)}")


def _spawn(part: str, threads: int, compile_: bool = False) -> subprocess.Popen:
    from drclib.runtime import thread_env

    env = thread_env(threads)
    cmd = [sys.executable, __file__, "--worker", part, "--threads", str(threads)] + ["--compile"] * compile_
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def _rate(proc: subprocess.Popen) -> float:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"a worker failed (exit {proc.returncode}): {out[-500:]}")
    return float(json.loads(out.strip().splitlines()[-1])["rate"])


def generation(threads: int = 2, batch: int = 64) -> dict:
    """Images/s of the LMM generating ``batch`` images at once, without and with the KV cache."""
    import torch

    from drclib.backbone import PocketLMM, default_checkpoint_dir
    from drclib.data import StickerSet
    from drclib.runtime import pick_device

    torch.set_num_threads(threads)
    pick_device("cpu")
    stickers = StickerSet.for_profile("full")
    lmm = PocketLMM.from_pretrained(default_checkpoint_dir()).eval()
    prompts = [f"a sticker of {stickers.names[i % len(stickers.names)]} in noto style" for i in range(batch)]
    lmm.generate_images(prompts[:4], seed=0)
    out = {}
    for cache, repeats in ((False, 1), (True, 5)):       # the cached call varies run to run: the median of 5
        rates = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            lmm.generate_images(prompts, seed=0, use_cache=cache)
            rates.append(batch / (time.perf_counter() - t0))
        out["kv_cache" if cache else "no_cache"] = float(np.median(rates))
        out[("kv_cache" if cache else "no_cache") + "_runs"] = rates
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", choices=list(PARTS), help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--compile", action="store_true", help="also measure torch.compile (LMM pretraining, stage 1)")
    p.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    p.add_argument("--out", default=str(ROOT / "data" / "results" / "speed.json"))
    args = p.parse_args(argv)
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        rate = worker(args.worker, PARTS[args.worker][2], args.compile)
        print(json.dumps({"rate": rate}))
        return 0

    from drclib.io import write_json
    from drclib.runtime import describe_machine

    t_start = time.perf_counter()
    result = {"command": "python benchmarks/speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": describe_machine("cpu"), "training": {}, "generation": {}, "compile": {}}
    for part in args.parts:
        name, unit, _ = PARTS[part]
        before = _rate(_spawn(part, 2))
        a, b = _spawn(part, 1), _spawn(part, 1)
        lanes = [_rate(a), _rate(b)]
        after = sum(lanes)
        result["training"][part] = {"name": name, "unit": unit, "before_one_process_2_threads": before,
                                    "after_two_lanes_1_thread_each": lanes, "after": after, "ratio": after / before,
                                    "second_thread": before / float(np.mean(lanes))}
        print(f"{name:16s} before (1 process x 2 threads) {before:9.2f} {unit}   after (2 lanes x 1 thread) "
              f"{after:9.2f} {unit}  ({lanes[0]:.2f} + {lanes[1]:.2f})   ratio {after / before:.2f}x", flush=True)
    g = generation()
    result["generation"] = {"batch": 64, "threads": 2, **g, "ratio": g["kv_cache"] / g["no_cache"], "aim": 40.0}
    print(f"generation, 64 images at once, 2 threads: no KV cache {g['no_cache']:.1f} images/s, KV cache "
          f"{g['kv_cache']:.1f} images/s (median of 5: {min(g['kv_cache_runs']):.1f}-{max(g['kv_cache_runs']):.1f}; ratio {g['kv_cache'] / g['no_cache']:.1f}x; aim >= 40)", flush=True)
    if args.compile:
        for part in ("lmm", "stage1"):
            name, unit, _ = PARTS[part]
            eager = result["training"][part]["before_one_process_2_threads"] if part in result["training"] else \
                _rate(_spawn(part, 2))
            compiled = _rate(_spawn(part, 2, compile_=True))
            result["compile"][part] = {"name": name, "unit": unit, "eager": eager, "compiled": compiled,
                                       "ratio": compiled / eager}
            print(f"{name:16s} torch.compile, 1 process x 2 threads: eager {eager:.2f}, compiled {compiled:.2f} "
                  f"{unit} (ratio {compiled / eager:.2f}x)", flush=True)
    result["minutes"] = round((time.perf_counter() - t_start) / 60, 1)
    write_json(args.out, result)
    print(f"wrote {args.out} ({result['minutes']} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
