"""Training the baselines that learn: Pigeon and LMM-SFT (:mod:`drclib.baselines`).

Both are trained on the same samples and with the same supervised loop as DRC's stage 2
(:func:`drclib.train.stage2.sft_loop`), for :data:`BASELINE_RECIPE`'s steps.
``python -m drclib.train baseline --method pigeon|lmm_sft``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from drclib.backbone import PocketLMM
from drclib.runtime import bf16_from_flag, describe_machine
from drclib.train.cards import concept_record
from drclib.train.loop import downsample, drc_trainables
from drclib.train.stage2 import Stage2Config, sft_loop, stage2_card

# ---------------------------------------------------------------------------- baselines
BASELINE_RECIPE = {"steps": 400, "lr": 1e-3}
"""Steps and learning rate of the trained baselines (otherwise :class:`Stage2Config`'s).
They start from the bare pocket LMM, for which a prompt without a caption is far out of its
training distribution (11-14 nats per visual code before fine-tuning, against 0.39 after the
exact caption), while DRC's stage 2 starts from stage 1's adapters. With 400 steps at stage 2's
3e-4, Pigeon's loss was still 4.6 nats at the end (style 21% on 300 test samples); at 1e-3 the
loss falls faster (LMM-SFT: 4.5 by step 93), so the baselines get stage 1's rate. The
previous kit gave them 800 steps; on the float32-only CPU of the core-set retrain a Pigeon
step took 4.7 s (800 steps: an hour), so they now get 400 steps (twice DRC's stage 2) at that rate."""


def train_baseline(prompter, lmm: PocketLMM, codes: torch.Tensor, samples, train_idx: np.ndarray,
                   cfg: Stage2Config | None = None, *, device: str | torch.device = "cpu",
                   checkpoint_dir: str | Path | None = None, progress: bool = True,
                   stop_after: int | None = None) -> dict:
    """Fine-tune an interleaved-token baseline (:mod:`drclib.baselines`: LMM-SFT, or Pigeon
    when ``prompter`` has a mask generator) on personalization samples.

    The same data, batches, LoRA set-up, schedule and loss as :func:`train_stage2`; only the
    prompt differs: the raw visual tokens of the history and the reference instead of DRC's
    instruction. ``cfg.augment=False`` is Pigeon's protocol (the target is its own reference);
    the commands use it for both baselines. Resumable like the DRC stages.
    """

    from drclib.drc import reconstruction_loss

    cfg = cfg or Stage2Config(augment=False, steps=BASELINE_RECIPE["steps"], lr=BASELINE_RECIPE["lr"])
    train_idx = np.asarray(train_idx)
    if len(train_idx) == 0:
        raise ValueError("no training samples for the baseline")
    if not cfg.lora_rank and not any(True for _ in prompter.parameters()):
        raise ValueError("nothing to train: give lora_rank > 0 or a prompter with a mask generator")
    device = torch.device(device)
    params, opt, holder = drc_trainables(prompter, lmm, cfg, device)
    run_config = dict(vars(cfg)) | {"n_train": int(len(train_idx)), "prompter": dict(vars(prompter.config))}

    def losses_of(batch, n, autocast):
        hist, ref = batch["history"], batch["reference"]
        hist_mask = torch.from_numpy(hist[..., 0] >= 0)
        hist_codes = codes[hist[..., 0].clip(min=0), hist[..., 1].clip(min=0)]
        target = codes[batch["target"][:, 0], batch["target"][:, 1]].to(device)
        with autocast:
            prompt, mask = prompter.prompt(lmm, hist_codes, hist_mask, codes[ref[:, 0], ref[:, 1]], batch["text"],
                                           cfg.alpha_s, batch["alpha_m"].to(device))
            return reconstruction_loss(lmm, prompt, target, mask)

    history = sft_loop(losses_of, samples, train_idx, cfg, params, opt, holder, run_config, device=device,
                        checkpoint_dir=checkpoint_dir, progress=progress, stop_after=stop_after, name="baseline")
    prompter.eval()
    lmm.eval()
    return history


BASELINE_PROBE = 24
"""Test samples (the first of the ``sample`` split) whose rates each baseline card stores, so
the test suite can check that the shipped weights still reproduce them."""


def baseline_probe(pipe, stickers, samples, test_idx, style_clf, emoji_clf) -> dict:
    """The rates of :func:`drclib.pipeline.evaluate_personalization` on the first
    :data:`BASELINE_PROBE` test samples (greedy, alpha_m 0.5)."""
    from drclib.pipeline import evaluate_personalization

    return evaluate_personalization(pipe, stickers, samples, np.asarray(test_idx)[:BASELINE_PROBE], style_clf,
                                    emoji_clf)


def train_baseline_command(args) -> int:
    """Fine-tune LMM-SFT or Pigeon from the shipped LMM on the sample split's training samples
    (the stage-2 recipe, the target as its own reference), save it with a card, and score it
    on both splits' test samples."""
    import sys

    from drclib import judges
    from drclib.backbone import default_checkpoint_dir, sticker_codes
    from drclib.backbone import tokenizer as tok_mod
    from drclib.baselines import (
        METHODS,
        InterleavedConfig,
        InterleavedPipeline,
        InterleavedPrompter,
        default_baseline_dir,
    )
    from drclib.data import StickerSet, make_dataset
    from drclib.drc import lmm_fingerprint
    from drclib.pipeline import evaluate_personalization
    from drclib.runtime import pick_device, seed_everything

    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    stickers = StickerSet.for_profile(args.profile)
    lmm = PocketLMM.from_pretrained(default_checkpoint_dir(), device=device)
    tokenizer = tok_mod.load_default(device=device)
    codes = sticker_codes(tokenizer, stickers)
    data = make_dataset(stickers, args.profile, seed=args.seed)
    prompter = InterleavedPrompter(InterleavedConfig(dim=lmm.config.hidden_size, mask_generator=args.method == "pigeon"))
    cfg = Stage2Config(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed, augment=False,
                       bf16=bf16_from_flag(args.no_bf16, device))
    t0 = time.perf_counter()
    history = train_baseline(prompter, lmm, codes, data.samples, data.splits["sample"].train, cfg, device=device,
                             checkpoint_dir=args.state_dir)
    minutes = (time.perf_counter() - t0) / 60
    pipe = InterleavedPipeline(prompter, lmm, tokenizer, method=args.method)
    style_clf, emoji_clf = judges.load_judges(stickers, device)
    ev = {}
    for split in ("sample", "heldout"):
        test = data.splits[split].test[:args.eval_samples]
        ev[split] = {args.method: evaluate_personalization(pipe, stickers, data.samples, test, style_clf, emoji_clf)}
    info = {"method": args.method, "label": METHODS[args.method],
            "command": "python -m drclib.train " + " ".join(sys.argv[1:]), "train_minutes": round(minutes, 2),
            "machine": describe_machine(device), "lmm": lmm_fingerprint(default_checkpoint_dir()), **concept_record(stickers),
            "stage2": vars(cfg) | {"profile": args.profile}, "evaluation": ev,
            "probe": baseline_probe(pipe, stickers, data.samples, data.splits["sample"].test, style_clf, emoji_clf),
            "history": {k: downsample(v) for k, v in history.items()}}
    out = Path(args.out or default_baseline_dir(args.method))
    pipe.save_pretrained(out, extra=info, card=_baseline_card(info))
    print((out / "prompter" / "README.md").read_text())
    return 0


def _baseline_card(info: dict) -> str:
    s2 = info["stage2"]
    what = ("the LMM's LoRA adapters and the mask generator over the raw history and reference tokens"
            if info["method"] == "pigeon" else "the LMM's LoRA adapters")
    card = stage2_card(info | {"stage1": "-"}).split("\n")
    head = [f"# Baseline: {info['label']} (drc-kit)", "",
            f"A baseline of the paper's Table 2 (`drclib.baselines`): the history's and the reference's visual tokens "
            f"interleaved in the prompt of the shipped pocket LMM; fine-tuned: {what}. Trained as Pigeon trains: the "
            f"target is its own reference; alpha_s {s2['alpha_s']}, alpha_m ~ U(0, 1).", "",
            f"- Command: `{info['command']}`", f"- Trained in {info['train_minutes']} min on {info['machine']}.",
            f"- {s2['steps']} steps of batch {s2['batch_size']}, lr {s2['lr']}, seed {s2['seed']}, the "
            f"`{s2['profile']}` profile's `sample`-split training samples (the same as DRC's stage 2)"
            + (f", bf16 autocast {s2['bf16']}." if s2.get("bf16") is not None else "."), ""]
    start = next(i for i, line in enumerate(card) if line.startswith("Greedy generation"))
    return "\n".join(head + card[start:])
