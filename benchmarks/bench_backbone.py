"""Benchmark of the pocket LMM on this machine (prints figures; not a test).

    python benchmarks/bench_backbone.py [--checkpoint data/checkpoints/lmm] [--batch 16] [--threads N]

Prints: the CPU core count and torch threads; training throughput (tokens/s) with and
without bf16 autocast; generation speed (images/s) with and without the KV cache, and their
ratio. Uses the shipped LMM when present (its size is what matters, not its weights), else an
untrained one of the default size.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch


def main() -> None:
    from drclib.backbone import PocketLMM, default_checkpoint_dir
    from drclib.data import StickerSet, heldout_cells
    from drclib.runtime import pick_device
    from drclib.train import PretrainConfig, pretrain_backbone

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(default_checkpoint_dir()))
    p.add_argument("--batch", type=int, default=16, help="images generated at once")
    p.add_argument("--train-steps", type=int, default=12)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    stickers = StickerSet.load()
    if os.path.isfile(os.path.join(args.checkpoint, "config.json")):
        lmm, source = PocketLMM.from_pretrained(args.checkpoint, device=device), args.checkpoint
    else:
        lmm, source = PocketLMM.from_stickers(stickers).to(device), "untrained, default size"
    n_params = sum(p.numel() for p in lmm.parameters())
    print(f"machine: {platform.machine()} {platform.processor()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads, device {device}")
    print(f"model: {source}, {n_params / 1e6:.2f} M parameters, hidden {lmm.config.hidden_size}, "
          f"{lmm.config.num_layers} layers")

    cells = np.argwhere(~heldout_cells(stickers))[:512]
    codes = torch.randint(0, lmm.config.n_visual, (stickers.n_styles, stickers.n_emoji, lmm.config.tokens_per_image))
    for bf16 in (False, True):
        h = pretrain_backbone(lmm, stickers, codes, cells, PretrainConfig(steps=args.train_steps, batch_size=32,
                                                                         warmup=1, bf16=bf16), device=device,
                              progress=False)
        tps = np.median(h["tokens_per_s"][2:])
        print(f"training, batch 32, bf16 autocast {'on ' if bf16 else 'off'}: {tps:,.0f} tokens/s (median)")

    prompts = [f"a sticker of {stickers.names[i]} in noto style" for i in range(args.batch)]
    lmm.generate_images(prompts[:2], seed=0)  # warm-up
    times = {}
    for cache in (True, False):
        t0 = time.perf_counter()
        out = lmm.generate_images(prompts, seed=0, use_cache=cache)
        times[cache] = time.perf_counter() - t0
        print(f"generation, {len(prompts)} images x {out.shape[1]} tokens, KV cache {'on ' if cache else 'off'}: "
              f"{times[cache]:.2f} s = {len(prompts) / times[cache]:.1f} images/s")
    print(f"KV cache speed-up: {times[False] / times[True]:.1f}x")


if __name__ == "__main__":
    main()
