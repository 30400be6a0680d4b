"""Stage 2 of DRC: personalized supervised fine-tuning with the mask generator (section 2.3).

From a user's history and a reference, :meth:`drclib.drc.DRC.user_instruction` (eq. 5-8)
builds z~, and the LMM must draw the target (eq. 9); with augmentation, the reference's own
tokens are masked so the model cannot copy them. ``python -m drclib.train stage2 [--no-augment]``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from drclib.backbone import PocketLMM
from drclib.io import repo_relative
from drclib.pipeline import default_stage1_dir, shipped_stage2_dir
from drclib.runtime import bf16_from_flag, describe_machine, resolve_bf16
from drclib.train.cards import concept_record
from drclib.train.loop import (
    batch_indices,
    downsample,
    drc_trainables,
    load_training_state,
    lr_at,
    optimizer_step,
    save_training_state,
)


# ---------------------------------------------------------------------------- DRC stage 2
@dataclass
class Stage2Config:
    """Stage-2 (personalized SFT) settings (paper section 2.2)."""

    steps: int = 200
    """The shipped pipelines' (``python -m drclib.train stage2`` reads its defaults here); 400 steps
    lift "both" on `sample` a little and neither length passes stage 1 alone (RESULTS section 4)."""
    batch_size: int = 16
    lr: float = 3e-4
    """The paper fine-tunes LaVIT at 1e-5; the kit's small modules, adapters and short run use
    a larger rate (warm-up, cosine decay)."""
    warmup: int = 30
    weight_decay: float = 0.01
    alpha_s: float = 0.2
    """History masking ratio, fixed in training (the paper)."""
    augment: bool = True
    """True: the reference is drawn from the target's semantic-preserving set (the same emoji in
    the other styles). False ("w/o Aug", Pigeon's protocol): the target is its own reference."""
    lora_rank: int = 8
    lora_alpha: int = 16
    caption_weight: float = 0.0
    """> 0 (the kit's, not in the paper; a words- or slots-space model): add this times
    :func:`drclib.drc.caption_anchor_loss` of z~ against the *target's* caption (the user's
    style, the reference's emoji), as stage 1's anchor does for the anchor's. Without it stage
    2's gradient, through the straight-through word choice, drifted z~ to junk words (loss 5 to
    9 nats per code in 330 steps on the core-set retrain)."""
    seed: int = 0
    bf16: bool | None = None   # None: bf16 autocast where the device runs it fast (runtime.bf16_fast)
    checkpoint_every: int = 100

    def __post_init__(self):
        if self.caption_weight < 0:
            raise ValueError(f"caption_weight must be >= 0, got {self.caption_weight}")
        if not 0 <= self.alpha_s <= 1:
            raise ValueError(f"alpha_s must lie in [0, 1], got {self.alpha_s}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got {self.steps}, {self.batch_size}")


def stage2_batch(samples, idx: np.ndarray, step: int, cfg: Stage2Config) -> dict:
    """What one stage-2 step trains on: history cells ``[B, N, 2]``, reference cells ``[B, 2]``
    (drawn from the semantic-preserving set, or the target itself without augmentation),
    target cells ``[B, 2]``, ``alpha_m ~ U(0, 1)`` ``[B]`` and the text instructions; drawn
    from ``(seed, step)`` alone so a resumed run sees the same batches."""
    rng = np.random.default_rng([cfg.seed, 5, step])
    refs = np.stack([samples.draw_reference(int(i), rng) if cfg.augment else samples.target[int(i)] for i in idx])
    return {"history": samples.history[idx], "reference": refs, "target": samples.target[idx],
            "alpha_m": torch.from_numpy(rng.uniform(0.0, 1.0, size=len(idx)).astype(np.float32)),
            "text": [str(t) for t in samples.text[idx]]}


def sft_loop(losses_of, samples, train_idx: np.ndarray, cfg: "Stage2Config", params, opt, holder, run_config: dict,
              *, device: torch.device, checkpoint_dir, progress: bool, stop_after: int | None, name: str) -> dict:
    """The supervised loop shared by DRC's stage 2 and the trained baselines: schedule, the
    batches of :func:`stage2_batch`, ``losses_of(batch, n, autocast)`` (per-sample losses),
    optimizer step, history, atomic resumable checkpoints."""
    from tqdm.auto import tqdm

    history: dict[str, list] = {"step": [], "loss": [], "lr": [], "alpha_m": []}
    step = 0
    if checkpoint_dir is not None and (Path(checkpoint_dir) / "config.json").is_file():
        step, history = load_training_state(checkpoint_dir, holder, opt, run_config)
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    bar = tqdm(total=cfg.steps, initial=step, desc=name, disable=not progress)
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=resolve_bf16(cfg.bf16, device))
    while step < end:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        idx = train_idx[batch_indices(len(train_idx), cfg.batch_size, step, cfg.seed, 4)]
        batch = stage2_batch(samples, idx, step, cfg)
        opt.zero_grad(set_to_none=True)
        loss = losses_of(batch, len(idx), autocast).mean()
        optimizer_step(loss, params, opt, step, name)
        step += 1
        history["step"].append(step)
        history["loss"].append(loss.item())
        history["lr"].append(opt.param_groups[0]["lr"])
        history["alpha_m"].append(float(batch["alpha_m"].mean()))
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if checkpoint_dir is not None and (step % cfg.checkpoint_every == 0 or step == end):
            save_training_state(checkpoint_dir, holder, opt, step, history, run_config)
    bar.close()
    return history


def train_stage2(drc, lmm: PocketLMM, codes: torch.Tensor, samples, train_idx: np.ndarray,
                 cfg: Stage2Config | None = None, *, device: str | torch.device = "cpu",
                 checkpoint_dir: str | Path | None = None, progress: bool = True,
                 stop_after: int | None = None, images: torch.Tensor | None = None,
                 captions: torch.Tensor | None = None) -> dict:
    """Stage 2 of DRC: supervised fine-tuning for personalization (eqs. 5-9).

    For each training sample: the user's history and a reference (semantic-preserving
    augmentation: the target's emoji in another style, drawn at random), ``alpha_m ~ U(0, 1)``,
    ``alpha_s`` fixed; ``z~ = drc.user_instruction(...)``; the loss is the next-token loss of the
    target's 64 codes after ``<bos> Create an image ... <text> z~ <img>`` (eq. 9). Towers, fusion,
    mask generator and the LMM's LoRA adapters train; the LMM's base weights do not.
    ``drc`` must carry a mask generator (:meth:`drclib.drc.DRC.from_stage1`); ``images``
    (:func:`drclib.drc.cell_images`) when it reads semantic features; ``captions``
    (:func:`drclib.drc.caption_words`) with ``cfg.caption_weight > 0``, whose per-sample loss is
    then added to eq. (9)'s (the ``loss`` of the history is their sum).
    """
    from drclib.drc import TowerInputs, caption_anchor_loss, hybrid_prompts, reconstruction_loss

    anchored = (cfg or Stage2Config()).caption_weight > 0
    if anchored and (captions is None or drc.config.z_space not in ("words", "slots")):
        raise ValueError("stage 2's caption anchor needs a words- or slots-space model and the captions: "
                         "pass captions=drclib.drc.caption_words(lmm, stickers, K, empty)")
    empty = drc.config.n_words if drc.config.z_space == "slots" else None

    cfg = cfg or Stage2Config()
    train_idx = np.asarray(train_idx)
    if len(train_idx) == 0:
        raise ValueError("no training samples for stage 2")
    if not drc.config.mask_generator:
        raise ValueError("stage 2 needs a DRC model with a mask generator: DRC.from_stage1(folder)")
    device = torch.device(device)
    cfg = replace(cfg, bf16=resolve_bf16(cfg.bf16, device))
    params, opt, holder = drc_trainables(drc, lmm, cfg, device)
    run_config = dict(vars(cfg)) | {"n_train": int(len(train_idx)), "drc": dict(vars(drc.config))}
    inputs = TowerInputs(drc, lmm, codes, images)

    def losses_of(batch, n, autocast):
        with torch.no_grad(), autocast:
            e_hist, e_ref = inputs(batch["history"]), inputs(batch["reference"])
        target = codes[batch["target"][:, 0], batch["target"][:, 1]].to(device)
        with autocast:
            z = drc.user_instruction(e_hist, e_ref, cfg.alpha_s, batch["alpha_m"].to(device), return_logits=anchored)
            if anchored:
                z, logits = z
            # a slots z stands for the caption itself: no user text before it (see DRCPipeline)
            prompt, mask = hybrid_prompts(lmm, z, None if drc.config.z_space == "slots" else batch["text"])
            loss = reconstruction_loss(lmm, prompt, target, mask)
            if anchored:
                words = captions[batch["target"][:, 0], batch["target"][:, 1]].to(device)
                loss = loss + cfg.caption_weight * caption_anchor_loss(logits, words, empty)
            return loss

    history = sft_loop(losses_of, samples, train_idx, cfg, params, opt, holder, run_config, device=device,
                        checkpoint_dir=checkpoint_dir, progress=progress, stop_after=stop_after, name="stage 2")
    drc.eval()
    lmm.eval()
    return history


def train_stage2_command(args) -> int:
    """Stage 2 from the shipped stage-1 model: SFT, save the pipeline, evaluate it beside the
    stage-1-only pipeline on both splits' test samples, write the card."""
    import sys

    from drclib import judges
    from drclib.backbone import sticker_codes
    from drclib.backbone import tokenizer as tok_mod
    from drclib.data import StickerSet, make_dataset
    from drclib.drc import DRC, cell_images, lmm_fingerprint, load_stage1
    from drclib.pipeline import DRCPipeline, evaluate_personalization
    from drclib.runtime import pick_device, seed_everything

    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    stickers = StickerSet.for_profile(args.profile)
    stage1_dir = Path(args.stage1) if args.stage1 else default_stage1_dir("drc")
    import copy

    s1, s1_lmm = load_stage1(stage1_dir, device=device)
    lmm = copy.deepcopy(s1_lmm)                      # trained below; s1_lmm stays the stage-1 baseline's
    drc = DRC.from_stage1(stage1_dir, device=device)
    tokenizer = tok_mod.load_default(device=device)
    codes = sticker_codes(tokenizer, stickers)
    data = make_dataset(stickers, args.profile, seed=args.seed)
    # stage 2 adapts the LMM only if stage 1 did (a frozen LMM reads a slots-space z as words)
    s1_info = s1.training_info.get("stage1", {})
    s1_rank = int(s1_info.get("lora_rank", 8))
    # a words/slots model keeps stage 1's caption anchor, now on the target's caption
    weight = float(s1_info.get("caption_weight", 0.0)) if drc.config.z_space in ("words", "slots") else 0.0
    cfg = Stage2Config(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                       augment=not args.no_augment, lora_rank=s1_rank, caption_weight=weight,
                       bf16=bf16_from_flag(args.no_bf16, device))
    from drclib.drc import caption_words

    captions = (caption_words(lmm, stickers, drc.config.n_latent,
                              drc.config.n_words if drc.config.z_space == "slots" else None) if weight > 0 else None)
    t0 = time.perf_counter()
    history = train_stage2(drc, lmm, codes, data.samples, data.splits["sample"].train, cfg, device=device,
                           checkpoint_dir=args.state_dir, images=cell_images(stickers), captions=captions)
    minutes = (time.perf_counter() - t0) / 60
    out = Path(args.out or shipped_stage2_dir(cfg.augment))
    from drclib.backbone import default_checkpoint_dir

    info = {"command": "python -m drclib.train " + " ".join(sys.argv[1:]), "train_minutes": round(minutes, 2),
            "machine": describe_machine(device), "lmm": lmm_fingerprint(default_checkpoint_dir()), **concept_record(stickers),
            "stage1": repo_relative(stage1_dir), "stage2": vars(cfg) | {"profile": args.profile},
            "history": {k: downsample(v) for k, v in history.items()}}
    drc.training_info = info
    pipe = DRCPipeline(drc, lmm, tokenizer)
    style_clf, emoji_clf = judges.load_judges(stickers, device)
    baseline = DRCPipeline(s1, s1_lmm, tokenizer)
    ev = {}
    for split in ("sample", "heldout"):
        test = data.splits[split].test[:args.eval_samples]
        ev[split] = {"drc": evaluate_personalization(pipe, stickers, data.samples, test, style_clf, emoji_clf),
                     "stage1_only": evaluate_personalization(baseline, stickers, data.samples, test, style_clf,
                                                             emoji_clf)}
    info["evaluation"] = ev
    pipe.save_pretrained(out, extra=info, card=stage2_card(info))
    print((out / "drc" / "README.md").read_text())
    return 0


def stage2_card(info: dict) -> str:
    s2 = info["stage2"]
    lines = [f"# DRC pipeline, stage 2{'' if s2['augment'] else ' w/o Aug'} (drc-kit)", "",
             "Stage 2 of DRC on the shipped stage-1 model: mask generator + towers + fusion + the LMM's LoRA "
             "adapters, fine-tuned on personalization samples"
             + (" with semantic-preserving augmentation (the reference drawn from the target emoji in other "
                "styles)" if s2["augment"] else " with the target as its own reference (Pigeon's protocol)")
             + f"; alpha_s {s2['alpha_s']}, alpha_m ~ U(0, 1).", "",
             f"- Command: `{info['command']}`", f"- Trained in {info['train_minutes']} min on {info['machine']}.",
             f"- From `{info['stage1']}`; {s2['steps']} steps of batch {s2['batch_size']}, lr {s2['lr']}, seed "
             f"{s2['seed']}, the `{s2['profile']}` profile's `sample`-split training samples.", "",
             "Greedy generation, alpha_m 0.5, alpha_s 0.2, one reference per sample; judged by the kit's classifiers:", "",
             "| split | model | style (user's) | emoji top-1 (reference's) | top-5 | both | collapse to reference style "
             "| collapse to a history emoji |", "|---|---|---|---|---|---|---|---|"]
    for split, rows in info["evaluation"].items():
        for name, r in rows.items():
            lines.append(f"| {split} ({r['n']}) | {name} | {r['style_acc']:.3f} | {r['emoji_top1']:.3f} | "
                         f"{r['emoji_top5']:.3f} | {r['both']:.3f} | {r['collapse_reference']:.3f} | "
                         f"{r['collapse_history']:.3f} |")
    return "\n".join(lines) + "\n"
