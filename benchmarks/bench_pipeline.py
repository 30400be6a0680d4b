"""Benchmark of the shipped DRC pipeline on this machine (prints figures; not a test).

    python benchmarks/bench_pipeline.py [--pipeline data/checkpoints/drc] [--batch 16] [--threads N]

Prints the CPU core count and torch threads, then images/s of ``DRCPipeline.__call__`` for one
sample at a time and for a batch of samples (history of 5 stickers, one reference each), and
the time of an alpha_m sweep (11 images, scored by the tiny CLIP).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch


def main() -> None:
    from drclib.data import StickerSet, make_dataset
    from drclib.pipeline import DRCPipeline, default_pipeline_dir

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipeline", default=str(default_pipeline_dir()))
    p.add_argument("--batch", type=int, default=16, help="samples generated in one call")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = DRCPipeline.from_pretrained(args.pipeline, device=args.device)
    print(f"machine: {platform.machine()} {platform.processor()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads, device {pipe.device}")
    stickers = StickerSet.load()
    data = make_dataset(stickers, "quick", seed=0)
    idx = data.splits["sample"].test[:args.batch]
    hist = [[stickers.images[s, e] for s, e in data.samples.history[i]] for i in idx]
    refs = [stickers.images[s, e] for s, e in (data.samples.references[i][0] for i in idx)]
    pipe(hist[0], refs[0], seed=0)                                         # warm-up
    t0 = time.perf_counter()
    for h, r in zip(hist, refs):
        pipe(h, r, seed=0)
    one = time.perf_counter() - t0
    print(f"one sample per call: {len(idx)} images in {one:.2f} s = {len(idx) / one:.1f} images/s")
    t0 = time.perf_counter()
    out = pipe(hist, refs, seed=0)
    batched = time.perf_counter() - t0
    print(f"{len(idx)} samples in one call: {len(out)} images in {batched:.2f} s = {len(out) / batched:.1f} images/s")
    t0 = time.perf_counter()
    pipe.sweep(hist[0], refs[0])
    print(f"alpha_m sweep (11 images + tiny-CLIP scores): {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
