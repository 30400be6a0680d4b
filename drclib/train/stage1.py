"""Stage 1 of DRC: disentanglement by reconstruction, with importance sampling (section 2.2).

:func:`train_stage1` trains the towers and the fusion network on contrastive triplets with
the objective of :mod:`drclib.drc.stage1`; the LMM stays frozen (or gets LoRA adapters when
``lora_rank > 0``). ``python -m drclib.train stage1 --variant drc|uniform|concat|mlp`` trains
one row of the ablation table, ``stage1-table`` prints it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from drclib.backbone import PocketLMM
from drclib.io import repo_relative
from drclib.pipeline import default_stage1_dir
from drclib.runtime import describe_machine, resolve_bf16
from drclib.train.cards import PAIR_TITLES, concept_record, model_stickers, swap_header, swap_row
from drclib.train.loop import (
    batch_indices,
    downsample,
    drc_trainables,
    load_training_state,
    lr_at,
    optimizer_step,
    save_training_state,
)


# ---------------------------------------------------------------------------- DRC stage 1
@dataclass
class Stage1Config:
    """Stage-1 (disentanglement) settings; all of them end up in the model card."""

    steps: int = 1200
    batch_size: int = 32
    lr: float = 1e-3
    """The paper uses 1e-4 on top of LaVIT; these small modules start from scratch and train
    for far fewer steps, so a larger rate with warm-up and cosine decay (pilot runs of 300
    steps: 1e-3 fell faster than 5e-4)."""
    warmup: int = 50
    weight_decay: float = 0.01
    importance: str = "difficulty"
    """``"difficulty"``: eq. (4), p(z) proportional to l(z); ``"uniform"``: p(z) = 1/4 (ablation)."""
    momentum: float = 0.9
    """Of the running per-combination losses that eq. (4) is applied to (see ImportanceSampler)."""
    lora_rank: int = 8
    """0: the LMM stays frozen. > 0: LoRA adapters of this rank (peft) on the LMM train too.
    The kit trains them (rank 8): in 300-step pilots a frozen LMM reached 3.6 nats per code,
    with adapters 2.9; the base weights never change either way."""
    lora_alpha: int = 16
    caption_weight: float = 0.0
    """0: the paper's stage 1, eq. (3) alone. > 0 (the kit's caption anchor, not in the paper):
    add this times :func:`drclib.drc.caption_anchor_loss` of all four instructions against
    the anchor's caption; needs a ``z_space="words"`` model and the captions."""
    seed: int = 0
    bf16: bool | None = None   # None: bf16 autocast where the device runs it fast (runtime.bf16_fast)
    checkpoint_every: int = 100

    def __post_init__(self):
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank must be >= 0, got {self.lora_rank}")
        if self.caption_weight < 0:
            raise ValueError(f"caption_weight must be >= 0, got {self.caption_weight}")
        if self.importance not in ("difficulty", "uniform"):
            raise ValueError(f"importance must be 'difficulty' or 'uniform', got {self.importance!r}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got {self.steps}, {self.batch_size}")


def train_stage1(drc, lmm: PocketLMM, codes: torch.Tensor, triplets, cfg: Stage1Config | None = None, *,
                 device: str | torch.device = "cpu", checkpoint_dir: str | Path | None = None,
                 progress: bool = True, stop_after: int | None = None,
                 captions: torch.Tensor | None = None, images: torch.Tensor | None = None) -> dict:
    """Stage 1 of DRC: teach the towers and the fusion network to write instructions that make
    the frozen LMM reconstruct the anchor (``L_recon``, eqs. 2-4).

    Each step takes a batch of triplets, builds all four instructions z(a,a), z(a,m), z(s,a),
    z(s,m) (eq. 2), draws one per sample from p(z) (eq. 4 on running losses, or uniform),
    and minimises the next-token loss of the anchor's 64 codes after the hybrid prompt (eq. 3).
    ``codes`` is ``[n_styles, n_emoji, 64]``; ``triplets`` a :class:`drclib.data.users.Triplets`;
    ``images`` (:func:`drclib.drc.cell_images`) when the model reads semantic features.
    The LMM's weights do not change (gradients flow through it into z); with
    ``cfg.lora_rank > 0`` LoRA adapters are added to it (if it has none) and train with the DRC.

    With ``cfg.caption_weight > 0`` the loss also has the kit's caption anchor
    (:func:`drclib.drc.caption_anchor_loss`): ``captions`` ``[n_styles, n_emoji, K]`` are the
    cells' captions as word indices (:func:`drclib.drc.caption_words`).

    Returns the history: ``loss`` (eq. 3's, of the drawn instructions), per-combination running
    losses ``l_aa`` ... and probabilities ``p_aa`` ..., ``caption`` (the anchor's loss, when it
    is on), ``lr``, and ``sampler`` (the sampler's state, for resuming).
    """
    from tqdm.auto import tqdm

    from drclib.drc import (
        COMBINATIONS,
        ImportanceSampler,
        TowerInputs,
        caption_anchor_loss,
        hybrid_prompt,
        reconstruction_loss,
    )

    cfg = cfg or Stage1Config()
    if len(triplets) == 0:
        raise ValueError("no triplets to train on: build them with drclib.data.make_dataset (n_triplets > 0)")
    anchored = cfg.caption_weight > 0
    if anchored and drc.config.z_space not in ("words", "slots"):
        raise ValueError("the caption anchor (caption_weight > 0) names words: build the model with z_space='words' or 'slots'")
    empty = drc.config.n_words if drc.config.z_space == "slots" else None
    if anchored and captions is None:
        raise ValueError("caption_weight > 0 needs the captions: pass captions=drclib.drc.caption_words(lmm, stickers, K)")
    device = torch.device(device)
    cfg = replace(cfg, bf16=resolve_bf16(cfg.bf16, device))
    params, opt, holder = drc_trainables(drc, lmm, cfg, device)
    sampler = ImportanceSampler(len(COMBINATIONS), uniform=cfg.importance == "uniform", momentum=cfg.momentum)
    run_config = {k: v for k, v in vars(cfg).items()} | {"n_triplets": int(len(triplets)),
                                                          "drc": dict(vars(drc.config))}
    history: dict[str, list] = {"step": [], "loss": [], "lr": []} | ({"caption": []} if anchored else {})
    for c in COMBINATIONS:
        history["l_" + c], history["p_" + c] = [], []
    step = 0
    if checkpoint_dir is not None and (Path(checkpoint_dir) / "config.json").is_file():
        step, history = load_training_state(checkpoint_dir, holder, opt, run_config)
        sampler.load_state(history["sampler"])
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    bar = tqdm(total=cfg.steps, initial=step, desc="stage 1", disable=not progress)
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=resolve_bf16(cfg.bf16, device))
    cells = {"a": triplets.anchor, "s": triplets.pos_style, "m": triplets.pos_sem}
    inputs = TowerInputs(drc, lmm, codes, images)
    while step < end:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        idx = batch_indices(len(triplets), cfg.batch_size, step, cfg.seed, 2)
        with torch.no_grad(), autocast:
            e = {k: inputs(v[idx]) for k, v in cells.items()}
        target = codes[cells["a"][idx, 0], cells["a"][idx, 1]].to(device)
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        which = sampler.sample(len(idx), gen).to(device)
        opt.zero_grad(set_to_none=True)
        with autocast:
            if anchored:      # the anchor reads all four instructions
                zs = drc.stage1_instructions(e["a"], e["s"], e["m"], return_logits=True)
                words = captions[cells["a"][idx, 0], cells["a"][idx, 1]].to(device)
                anchor = torch.stack([caption_anchor_loss(zs[c][1], words, empty) for c in COMBINATIONS]).mean()
                z = torch.stack([zs[c][0] for c in COMBINATIONS])[which, torch.arange(len(idx), device=device)]
            else:             # eq. (3) reads only the drawn one
                z = drc.drawn_instructions(e["a"], e["s"], e["m"], which)
            losses = reconstruction_loss(lmm, hybrid_prompt(lmm, z), target)
        loss = losses.mean()
        optimizer_step(loss + cfg.caption_weight * anchor if anchored else loss, params, opt, step, "stage-1")
        sampler.update(which, losses)
        step += 1
        probs = sampler.probabilities()
        history["step"].append(step)
        history["loss"].append(loss.item())
        if anchored:
            history["caption"].append(anchor.item())
        history["lr"].append(opt.param_groups[0]["lr"])
        for i, c in enumerate(COMBINATIONS):
            history["l_" + c].append(float(sampler.running[i]))
            history["p_" + c].append(float(probs[i]))
        history["sampler"] = sampler.state()
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if checkpoint_dir is not None and (step % cfg.checkpoint_every == 0 or step == end):
            save_training_state(checkpoint_dir, holder, opt, step, history, run_config)
    bar.close()
    drc.eval()
    lmm.eval()
    return history


STAGE1_EVAL = {"pairs": 300, "triplets": 300}
STAGE1_PROBE = {"pairs": 24, "triplets": 24}
"""The small fixed test whose result each stage-1 card stores, so the test suite can check that
the shipped weights still reproduce it."""


def stage1_probe(drc, lmm, tokenizer, style_clf, emoji_clf, stickers, codes, images=None) -> dict:
    """:func:`drclib.drc.evaluate_stage1` on :data:`STAGE1_PROBE` (self form only)."""
    from drclib.drc import evaluate_stage1, heldout_triplets, swap_pair_sets

    return evaluate_stage1(drc, lmm, tokenizer, style_clf, emoji_clf, codes,
                           triplets=heldout_triplets(stickers, STAGE1_PROBE["triplets"]),
                           pairs=swap_pair_sets(stickers, STAGE1_PROBE["pairs"]), forms=("self",), images=images)


def _stage1_card(variant: str, config: dict, info: dict) -> str:
    from drclib.drc import COMBINATIONS, LABELS

    ev = info.get("evaluation", {})
    s1 = info.get("stage1", {})
    lines = [f"# DRC stage 1, variant `{variant}` (drc-kit)", "",
             {"drc": "DRC's stage 1: StyleTower and SemTower (attention + feed-forward), FusionNetwork, "
                     "difficulty-aware importance sampling (eq. 4).",
              "uniform": "Ablation w/o importance sampling: the DRC model trained with p(z) = 1/4.",
              "concat": "Ablation w/o FusionNetwork: the towers' features concatenated (128 tokens) in place of "
                        "the fusion network.",
              "mlp": "Ablation w/o attention: a token-level MLP disentangler in place of both towers."}[variant],
             "", f"Config: `{json.dumps({k: v for k, v in config.items() if k != 'encoder'}, sort_keys=True)}`.", "",
             f"- Command: `{info.get('command', '?')}`",
             f"- Trained in {info.get('train_minutes', '?')} min on {info.get('machine', '?')}.",
             f"- LMM: `{info.get('lmm', {}).get('folder', '?')}`, "
             + ("frozen" if not s1.get("lora_rank") else f"frozen base + LoRA adapters (rank {s1['lora_rank']}, "
                f"alpha {s1.get('lora_alpha')}) trained with the model, saved in `lora/`") + " "
             f"(sha256 {info.get('lmm', {}).get('sha256', '?')[:12]}...).",
             f"- Data: concept set `{info.get('concept_set', '?')}`; {s1.get('n_triplets', '?')} ground-truth triplets "
             f"of the `{s1.get('profile', '?')}` profile (seed {s1.get('seed', '?')}), no held-out cell in any slot; "
             f"{s1.get('steps', '?')} steps of batch {s1.get('batch_size', '?')}, AdamW lr {s1.get('lr', '?')}, "
             f"importance `{s1.get('importance', '?')}`.",
             "- Final running losses (nats per visual token): "
             + ", ".join(f"{LABELS[c]} {info.get('final_losses', {}).get(c, float('nan')):.3f}" for c in COMBINATIONS),
             ""]
    if s1.get("caption_weight") or config.get("stage1_form") == "self" or config.get("features") != "embeddings":
        lines[-1:-1] = [f"- Recipe (the kit's, not only the paper's): towers read `{config.get('features')}` features, "
                        f"in the {config.get('stage1_form')} form during stage 1; z in the `{config.get('z_space')}` space"
                        + (f", caption anchor (`drclib.drc.caption_anchor_loss`) with weight {s1['caption_weight']}, "
                           f"final anchor loss {info.get('final_caption_loss', float('nan')):.3f} nats per word"
                           if s1.get("caption_weight") else "") + "."]
    if ev:
        lines += [f"Measured with `{ev.get('command', '?')}` (greedy generation, judged by the kit's style and "
                  "emoji classifiers, the emoji's argmax over the concept set; rates ± standard error).", "",
                  "Reconstructing a held-out anchor from each instruction "
                  f"({ev['combinations']['aa']['n']} triplets, `drclib.drc.heldout_triplets`):", "",
                  "| instruction | style | emoji top-1 | emoji top-5 | both |", "|---|---|---|---|---|"]
        for c in COMBINATIONS:
            r = ev["combinations"][c]
            lines.append(f"| {LABELS[c]} | {r['style_acc']:.3f} | {r['emoji_top1']:.3f} | {r['emoji_top5']:.3f} | "
                         f"{r['both']:.3f} |")
        for kind, forms in ev["swap"].items():
            n = next(iter(forms.values()))["n"]
            lines += ["", f"Swap test, A's style with B's emoji, {n} {PAIR_TITLES.get(kind, kind)} "
                      "(`drclib.drc.swap_pairs`):", ""] + swap_header("composition")
            lines += [swap_row(form, r) for form, r in forms.items()]
    return "\n".join(lines) + "\n"


def evaluate_stage1_folder(folder: str | Path, *, lmm_folder: str | Path | None = None, n_pairs: int = 300,
                           n_triplets: int = 300, device="cpu", command: str | None = None) -> dict:
    """Reload a saved stage-1 model (fp16 as shipped), run :func:`drclib.drc.evaluate_stage1`
    on its concept set (both kinds of swap pairs), and rewrite its card and metrics."""
    from drclib import judges
    from drclib.backbone import sticker_codes
    from drclib.backbone import tokenizer as tok_mod
    from drclib.drc import cell_images, evaluate_stage1, heldout_triplets, load_stage1, swap_pair_sets

    folder = Path(folder)
    drc, lmm = load_stage1(folder, lmm_folder, device=device)
    info = dict(drc.training_info)
    tokenizer = tok_mod.load_default(device=device)
    stickers = model_stickers(drc)
    codes = sticker_codes(tokenizer, stickers)
    images = cell_images(stickers)
    style_clf, emoji_clf = judges.load_judges(stickers, device)
    ev = evaluate_stage1(drc, lmm, tokenizer, style_clf, emoji_clf, codes, images=images,
                         triplets=heldout_triplets(stickers, n_triplets), pairs=swap_pair_sets(stickers, n_pairs))
    ev["command"] = command or f"python -m drclib.train evaluate-stage1 --folder {repo_relative(folder)}"
    info["evaluation"] = ev
    info["probe"] = stage1_probe(drc, lmm, tokenizer, style_clf, emoji_clf, stickers, codes, images)
    drc.save_pretrained(folder, dtype=torch.float16, extra=info,
                        card=_stage1_card(info.get("variant", "drc"), dict(vars(drc.config)), info))
    return ev


ABLATION_NAMES = {"drc": "DRC", "uniform": "w/o importance sampling", "concat": "w/o FusionNetwork",
                  "mlp": "w/o attention"}


def stage1_table(variants=("drc", "uniform", "concat", "mlp"), references: bool = False, n_pairs: int = 300,
                 root: str | Path | None = None) -> str:
    """The ablation table (the paper's Table 3 as a swap test) from the stage-1 cards in
    ``root/<variant>`` (default: the shipped ones, ``data/checkpoints/stage1``), as markdown: for
    each kind of pairs (training cells, held-out cells) the swap-test rates of the self form
    with their standard errors. ``references=True`` adds the reference rows of
    :func:`drclib.drc.swap_reference_rows` on the same pairs (computed here: the real target,
    the tokenizer ceiling, the LMM asked in words, copying B)."""
    from drclib.checkpoint import load_checkpoint

    infos = {}
    for v in variants:
        folder = Path(root) / v if root is not None else default_stage1_dir(v)
        infos[v] = load_checkpoint(folder)[2] if (folder / "config.json").is_file() else None
    refs = {}
    if references:
        from drclib import judges
        from drclib.backbone import load_default, sticker_codes
        from drclib.backbone import tokenizer as tok_mod
        from drclib.drc import swap_pair_sets, swap_reference_rows

        lmm = load_default()
        stickers = model_stickers(next((i for i in infos.values() if i), None) or lmm)
        tok = tok_mod.load_default()
        style_clf, emoji_clf = judges.load_judges(stickers)
        codes = sticker_codes(tok, stickers)
        refs = {kind: swap_reference_rows(lmm, tok, style_clf, emoji_clf, stickers, codes, pairs)
                for kind, pairs in swap_pair_sets(stickers, n_pairs).items()}
    lines = []
    for kind in ("train", "heldout"):
        lines += ["", f"Swap test on {PAIR_TITLES[kind]}:", ""] + swap_header("model")
        for v, info in infos.items():
            sw = (info or {}).get("evaluation", {}).get("swap", {}).get(kind, {}).get("self")
            lines.append(swap_row(ABLATION_NAMES[v], sw) if sw else f"| {ABLATION_NAMES[v]} | not shipped |")
        for name, sw in refs.get(kind, {}).items():
            lines.append(swap_row(f"*{name}*", sw))
    lines += ["", "| model | training | final loss z(s,m) |", "|---|---|---|"]
    for v, info in infos.items():
        if info:
            lines.append(f"| {ABLATION_NAMES[v]} | {info.get('train_minutes', '?')} min | "
                         f"{info.get('final_losses', {}).get('sm', float('nan')):.3f} |")
    return "\n".join(lines[1:])


def train_stage1_command(args) -> int:
    """Train one stage-1 variant on the full profile's triplets, save it, evaluate it."""
    import sys

    from drclib.backbone import default_checkpoint_dir, sticker_codes
    from drclib.backbone import encoder as enc_mod
    from drclib.backbone import tokenizer as tok_mod
    from drclib.data import StickerSet, make_dataset
    from drclib.drc import COMBINATIONS, DRC, VARIANTS, caption_words, cell_images, lmm_fingerprint
    from drclib.runtime import pick_device, seed_everything

    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    stickers = StickerSet.for_profile(args.profile)
    lmm_folder = Path(args.lmm) if args.lmm else default_checkpoint_dir()
    lmm = PocketLMM.from_pretrained(lmm_folder, device=device)
    tokenizer = tok_mod.load_default(device=device)
    codes = sticker_codes(tokenizer, stickers)
    data = make_dataset(stickers, args.profile, seed=args.seed)
    encoder = enc_mod.load_default(device=device) if args.features == "semantic" else None
    drc = DRC.for_lmm(lmm, encoder=encoder, n_latent=args.n_latent, features=args.features, stage1_form=args.form,
                      z_space=args.z_space, **VARIANTS[args.variant])
    cfg = Stage1Config(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                       importance="uniform" if args.variant == "uniform" else "difficulty", lora_rank=args.lora_rank,
                       caption_weight=args.caption_weight)
    captions = (caption_words(lmm, stickers, args.n_latent, drc.config.n_words if args.z_space == "slots" else None)
                if cfg.caption_weight > 0 else None)
    t0 = time.perf_counter()
    history = train_stage1(drc, lmm, codes, data.triplets, cfg, device=device, checkpoint_dir=args.state_dir,
                           captions=captions, images=cell_images(stickers))
    minutes = (time.perf_counter() - t0) / 60
    out = Path(args.out or default_stage1_dir(args.variant))
    info = {"variant": args.variant, "command": "python -m drclib.train " + " ".join(sys.argv[1:]),
            "train_minutes": round(minutes, 2), "machine": describe_machine(device), "lmm": lmm_fingerprint(lmm_folder),
            **concept_record(stickers),
            "stage1": vars(cfg) | {"n_triplets": len(data.triplets), "profile": args.profile},
            "final_losses": {c: history["l_" + c][-1] for c in COMBINATIONS},
            **({"final_caption_loss": float(np.mean(history["caption"][-50:]))} if cfg.caption_weight > 0 else {}),
            "history": {k: downsample(v) for k, v in history.items() if k != "sampler"}}
    if cfg.lora_rank:
        lmm.cpu().save_lora(out / "lora", dtype=torch.float16)
    elif (out / "lora").exists():
        import shutil

        shutil.rmtree(out / "lora")
    drc.cpu().save_pretrained(out, dtype=torch.float16, extra=info,
                              card=_stage1_card(args.variant, dict(vars(drc.config)), info))
    evaluate_stage1_folder(out, lmm_folder=lmm_folder, n_pairs=args.eval_pairs, n_triplets=args.eval_triplets,
                           device=device)
    print((out / "README.md").read_text())
    return 0
