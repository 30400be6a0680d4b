"""Training loops: backbone pretraining, DRC stage 1 (disentanglement) and stage 2 (personalized SFT).

Shared habits of every loop in the kit:
- a ``tqdm.auto`` progress bar and a ``history`` dict of lists (for the notebooks' curves);
- data order drawn from ``(seed, epoch)`` alone, so a run resumed from its checkpoint sees the
  same batches as one that was never interrupted;
- training checkpoints (weights, optimizer, step, history) written atomically every
  ``checkpoint_every`` steps through :mod:`drclib.checkpoint`, never pickled;
- bf16 autocast on the CPU (measured here: close to 2x faster for the small transformer).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from drclib.backbone import BOS, EOS, IMG, IMG_END, PAD, SPECIALS, PocketLMM, sticker_caption
from drclib.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from drclib.io import atomic_path, repo_relative
from drclib.runtime import resolve_bf16

IGNORE = -100
"""Label of positions that carry no loss (prompt and padding)."""


# ---------------------------------------------------------------------------- optimizer state
def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Flatten an optimizer's state into named tensors + JSON (safetensors cannot nest)."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{pid}.{k}"] = v
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for name, v in tensors.items():
        _, pid, k = name.split(".", 2)
        state.setdefault(int(pid), {})[k] = v
    for key, v in meta["scalars"].items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_training_state(folder: str | Path, model: torch.nn.Module, opt: torch.optim.Optimizer, step: int,
                        history: dict, config: dict) -> None:
    """Weights + optimizer + step + history, atomically, in ``folder`` (resumable)."""
    folder = Path(folder)
    opt_tensors, opt_meta = _optimizer_tensors(opt)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    state.update(opt_tensors)
    save_checkpoint(folder, "TrainingState", config, state,
                    extra={"step": step, "optimizer": opt_meta})
    with atomic_path(folder / "history.json") as tmp:
        tmp.write_text(json.dumps(history))


def load_training_state(folder: str | Path, model: torch.nn.Module, opt: torch.optim.Optimizer,
                        config: dict) -> tuple[int, dict]:
    """Restore what :func:`save_training_state` wrote; returns ``(step, history)``."""
    saved_config, state, extra = load_checkpoint(folder, "TrainingState")
    if saved_config != config:
        raise CheckpointError(f"training state in {folder} was made with another configuration "
                              f"({saved_config} vs {config}); delete the folder to start afresh")
    model.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model.")})
    _load_optimizer(opt, {k: v for k, v in state.items() if k.startswith("opt.")}, extra["optimizer"])
    history = json.loads((Path(folder) / "history.json").read_text())
    return int(extra["step"]), history


# ---------------------------------------------------------------------------- backbone data
@dataclass
class PretrainConfig:
    """Backbone pretraining settings (all of them end up in the model card).

    Each batch mixes kinds of sequence in fixed shares (``*_fraction``; the rest is
    text-to-image): image-to-text captions, text-to-image after DRC's hybrid-prompt sentence,
    caption-free images, and interleaved pairs (an image, then the caption and image of
    another cell of the same style or the same emoji, as LaVIT's interleaved data)."""

    steps: int = 3000
    batch_size: int = 32
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.05
    i2t_fraction: float = 0.25
    """Share of image-to-text sequences in each batch."""
    hybrid_fraction: float = 0.0
    """Share of the text-to-image sequences whose caption follows DRC's hybrid-prompt sentence
    (``<bos> Create an image that meets the specified requirements a sticker of ... <img>``),
    so that the frozen LMM of stage 1 knows the sentence that precedes a latent instruction."""
    unconditional_fraction: float = 0.0
    """Share of caption-free image sequences ``<bos> <img> codes </img> <eos>``: the LMM learns
    to read and continue an image with no caption before it (every DRC and baseline prompt
    has none)."""
    interleaved_fraction: float = 0.0
    """Share of interleaved sequences ``<bos> <img> A </img> caption(B) <img> B </img> <eos>``
    where A shares B's style or B's emoji (the loss is on B)."""
    factor_dropout: float = 0.0
    """Share of text-to-image captions that name only the emoji (``a sticker of <name>``) or
    only the style (``a sticker in <style> style``), half each: the LMM learns what each factor
    alone draws, not only each memorised pair."""
    augment_prob: float = 0.0
    """With ``codes`` given as ``[copies, n_styles, n_emoji, 64]`` (copy 0: the sticker itself;
    :func:`drclib.tokenizer.augmented_codes`), the chance that a sequence uses a shifted or
    scaled copy instead of copy 0."""
    seed: int = 0
    bf16: bool | None = None   # None: bf16 autocast where the device runs it fast (runtime.bf16_fast)
    checkpoint_every: int = 250
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        shares = (self.i2t_fraction, self.unconditional_fraction, self.interleaved_fraction)
        for name, v in (("i2t_fraction", self.i2t_fraction), ("hybrid_fraction", self.hybrid_fraction),
                        ("unconditional_fraction", self.unconditional_fraction),
                        ("interleaved_fraction", self.interleaved_fraction),
                        ("factor_dropout", self.factor_dropout), ("augment_prob", self.augment_prob)):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {v}")
        if sum(shares) > 1.0:
            raise ValueError(f"i2t, unconditional and interleaved fractions add up to {sum(shares)} > 1")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got {self.steps}, {self.batch_size}")

    def counts(self) -> dict[str, int]:
        """Sequences of each kind in one batch."""
        n = {k: int(round(self.batch_size * getattr(self, k + "_fraction")))
             for k in ("i2t", "unconditional", "interleaved")}
        rest = max(0, self.batch_size - sum(n.values()))
        n["hybrid"] = int(round(rest * self.hybrid_fraction))
        n["t2i"] = rest - n["hybrid"]
        return n


LMM_RECIPE = {"steps": 1200, "batch_size": 32, "lr": 2e-3, "i2t_fraction": 0.25, "hybrid_fraction": 0.34,
              "unconditional_fraction": 0.0, "interleaved_fraction": 0.0, "factor_dropout": 0.0,
              "augment_prob": 0.0, "augment_copies": 0}
"""The shipped LMM's pretraining recipe (``python -m drclib.train backbone`` defaults; the
scaling study uses it at every K). See RESULTS.md section 1 for what each part changed."""


class SequenceBuilder:
    """Builds the pretraining sequences of :func:`pretrain_backbone` from cells, on the fly:
    token ids and labels (``IGNORE`` on the prompt) for each kind of sequence."""

    KINDS = ("t2i", "hybrid", "i2t", "unconditional", "interleaved")

    def __init__(self, lmm: PocketLMM, stickers, codes: torch.Tensor):
        from drclib.drc import HYBRID_PROMPT

        self.lmm = lmm
        self.codes = codes if codes.ndim == 4 else codes[None]
        n_styles, n_emoji = self.codes.shape[1:3]
        self.full = [[lmm.text_ids(sticker_caption(stickers.names[e], stickers.styles[s])) for e in range(n_emoji)]
                     for s in range(n_styles)]
        self.emoji_only = [lmm.text_ids(f"a sticker of {n}") for n in stickers.names]
        self.style_only = [lmm.text_ids(f"a sticker in {s} style") for s in stickers.styles]
        self.hybrid = lmm.text_ids(HYBRID_PROMPT)

    def caption(self, s: int, e: int, factor: int = 0) -> list[int]:
        """The caption's ids; ``factor`` 1: the emoji only, 2: the style only."""
        return self.full[s][e] if factor == 0 else self.emoji_only[e] if factor == 1 else self.style_only[s]

    def image(self, s: int, e: int, copy: int = 0) -> list[int]:
        return self.lmm.codes_to_ids(self.codes[copy, s, e]).tolist()

    def sequence(self, kind: str, cell, *, copy: int = 0, factor: int = 0, context=None,
                 context_copy: int = 0) -> tuple[list[int], int]:
        """``(ids, start)``: the sequence and the first position whose token is predicted."""
        s, e = int(cell[0]), int(cell[1])
        img = self.image(s, e, copy)
        if kind in ("t2i", "hybrid"):
            prompt = [BOS, *(self.hybrid if kind == "hybrid" else []), *self.caption(s, e, factor), IMG]
            return prompt + img + [IMG_END, EOS], len(prompt)
        if kind == "i2t":
            head = [BOS, IMG, *img, IMG_END]
            return head + self.caption(s, e) + [EOS], len(head)
        if kind == "unconditional":
            return [BOS, IMG, *img, IMG_END, EOS], 2
        if kind == "interleaved":
            cs, ce = int(context[0]), int(context[1])
            prompt = [BOS, IMG, *self.image(cs, ce, context_copy), IMG_END, *self.caption(s, e), IMG]
            return prompt + img + [IMG_END, EOS], len(prompt)
        raise ValueError(f"kind must be one of {self.KINDS}, got {kind!r}")

    @staticmethod
    def pad(rows: list[tuple[list[int], int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ids and labels ``[B, T]`` of ``(ids, start)`` rows."""
        width = max(len(r) for r, _ in rows)
        ids = torch.full((len(rows), width), PAD, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        for i, (r, start) in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r)
            labels[i, start:len(r)] = torch.tensor(r[start:])
        return ids, labels


def pretraining_sequences(lmm: PocketLMM, stickers, codes: torch.Tensor, cells: np.ndarray,
                          direction: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and labels ``[n_cells, T]`` for one direction (``"t2i"``, ``"hybrid"`` = t2i
    after DRC's hybrid-prompt sentence, ``"i2t"``, or ``"unconditional"``), right-padded;
    labels keep only the part the model must produce (image or caption)."""
    if direction not in ("t2i", "hybrid", "i2t", "unconditional"):
        raise ValueError(f"direction must be 't2i', 'hybrid', 'i2t' or 'unconditional', got {direction!r}")
    builder = SequenceBuilder(lmm, stickers, codes)
    return builder.pad([builder.sequence(direction, c) for c in np.asarray(cells)])


def _lr_at(step: int, cfg: PretrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def _batch_indices(n: int, batch: int, step: int, seed: int, stream: int) -> np.ndarray:
    """Indices of batch ``step``: epochs are permutations drawn from (seed, stream, epoch)."""
    per_epoch = max(1, n // batch)
    epoch, k = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, stream, epoch]).permutation(n)
    return perm[k * batch:(k + 1) * batch] if batch <= n else perm


def _pretraining_batch(builder: SequenceBuilder, cells: np.ndarray, cfg: PretrainConfig, step: int,
                       same_style: dict, same_emoji: dict) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Batch ``step`` of :func:`pretrain_backbone`: drawn from ``(seed, step)`` alone (so a resumed
    run sees the same batches); every kind of sequence walks through ``cells`` in its own epochs."""
    rng = np.random.default_rng([cfg.seed, 17, step])
    n_copies = builder.codes.shape[0]
    rows, kinds = [], []
    for stream, (kind, n) in enumerate(cfg.counts().items()):
        if n == 0:
            continue
        for i in _batch_indices(len(cells), n, step, cfg.seed, 10 + stream):
            cell = cells[i]
            copy = int(rng.integers(1, n_copies)) if n_copies > 1 and rng.random() < cfg.augment_prob else 0
            factor = int(rng.integers(1, 3)) if kind == "t2i" and rng.random() < cfg.factor_dropout else 0
            context = None
            if kind == "interleaved":
                pool = same_style if rng.random() < 0.5 else same_emoji
                options = pool[(int(cell[0]), int(cell[1]))]
                context = cells[options[rng.integers(len(options))]]
            rows.append(builder.sequence(kind, cell, copy=copy, factor=factor, context=context,
                                         context_copy=int(rng.integers(n_copies)) if n_copies > 1 else 0))
            kinds.append(kind)
    ids, labels = builder.pad(rows)
    return ids, labels, {"kinds": kinds}


def _context_pools(cells: np.ndarray) -> tuple[dict, dict]:
    """For every cell, the indices of the other cells with its style / with its emoji."""
    same_style, same_emoji = {}, {}
    for i, (s, e) in enumerate(cells):
        same_style[(int(s), int(e))] = np.flatnonzero((cells[:, 0] == s) & (cells[:, 1] != e))
        others = np.flatnonzero((cells[:, 1] == e) & (cells[:, 0] != s))
        same_emoji[(int(s), int(e))] = others if len(others) else same_style[(int(s), int(e))]
    return same_style, same_emoji


def pretrain_backbone(lmm: PocketLMM, stickers, codes: torch.Tensor, cells: np.ndarray,
                      cfg: PretrainConfig | None = None, *, device: str | torch.device = "cpu",
                      checkpoint_dir: str | Path | None = None, progress: bool = True,
                      stop_after: int | None = None) -> dict:
    """Pretrain the pocket LMM over ``cells`` on the kinds of sequence :class:`PretrainConfig`
    mixes (text-to-image, image-to-text, after the hybrid prompt, caption-free, interleaved).

    ``codes`` is ``[n_styles, n_emoji, 64]`` (the tokenizer's ids of every sticker), or
    ``[copies, n_styles, n_emoji, 64]`` with augmented copies; ``cells`` the (style, emoji)
    pairs to train on (callers pass every cell of the concept set outside its held-out cells).
    With ``checkpoint_dir`` the run saves a resumable state every ``cfg.checkpoint_every`` steps
    and resumes from it when started again. ``stop_after`` ends the run early at that step (to
    test resuming). Returns the history: ``loss`` (per token), ``loss_<kind>`` for each kind in
    the batch, ``lr``, ``tokens_per_s``.
    """
    from tqdm.auto import tqdm

    cfg = cfg or PretrainConfig()
    cells = np.asarray(cells)
    if cells.ndim != 2 or cells.shape[1] != 2 or len(cells) == 0:
        raise ValueError(f"cells must be a non-empty [N, 2] array of (style, emoji), got {cells.shape}")
    device = torch.device(device)
    cfg = replace(cfg, bf16=resolve_bf16(cfg.bf16, device))
    lmm.to(device).train()
    builder = SequenceBuilder(lmm, stickers, codes)
    same_style, same_emoji = _context_pools(cells) if cfg.interleaved_fraction > 0 else ({}, {})
    opt = torch.optim.AdamW(lmm.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)
    run_config = {k: v for k, v in vars(cfg).items() if k != "extra"} | {"n_cells": int(len(cells)),
                                                                          "copies": int(builder.codes.shape[0])}
    kinds = [k for k, n in cfg.counts().items() if n]
    history: dict[str, list] = {"step": [], "loss": [], "lr": [], "tokens_per_s": []} | {f"loss_{k}": [] for k in kinds}
    step = 0
    if checkpoint_dir is not None and (Path(checkpoint_dir) / "config.json").is_file():
        step, history = load_training_state(checkpoint_dir, lmm, opt, run_config)
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    bar = tqdm(total=cfg.steps, initial=step, desc="pretrain LMM", disable=not progress)
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=resolve_bf16(cfg.bf16, device))
    while step < end:
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, cfg)
        ids, labels, meta = _pretraining_batch(builder, cells, cfg, step, same_style, same_emoji)
        x, y = ids.to(device), labels.to(device)
        opt.zero_grad(set_to_none=True)
        with autocast:
            logits = lmm(input_ids=x, attention_mask=(x != PAD).long()).logits
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), y[:, 1:],
                                                ignore_index=IGNORE, reduction="none")
        counted = (y[:, 1:] != IGNORE).float()
        per_seq = (nll * counted).sum(1) / counted.sum(1).clamp(min=1)
        loss = per_seq.mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"pretraining loss became {loss.item()} at step {step}; lower the learning rate")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lmm.parameters(), 1.0)
        opt.step()
        step += 1
        dt = time.perf_counter() - t0
        tokens = int((x != PAD).sum())
        history["step"].append(step)
        history["loss"].append(loss.item())
        kind_of = np.array(meta["kinds"])
        for k in kinds:
            history[f"loss_{k}"].append(float(per_seq.detach()[torch.from_numpy(kind_of == k)].mean()))
        history["lr"].append(opt.param_groups[0]["lr"])
        history["tokens_per_s"].append(tokens / dt)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", tok_s=f"{tokens / dt:,.0f}")
        if checkpoint_dir is not None and (step % cfg.checkpoint_every == 0 or step == end):
            save_training_state(checkpoint_dir, lmm, opt, step, history, run_config)
    bar.close()
    lmm.eval()
    return history


# ---------------------------------------------------------------------------- shared by both DRC stages
def _drc_trainables(drc, lmm: PocketLMM, cfg, device: torch.device):
    """Set-up shared by stage 1 and stage 2: LoRA adapters on the LMM when ``cfg.lora_rank > 0``
    (added if it has none; otherwise nothing of the LMM trains), the LMM's base weights frozen,
    AdamW over the DRC parameters (+ adapters). Returns ``(params, optimizer, holder)``, where
    ``holder`` is the module whose state a training checkpoint saves."""
    if cfg.lora_rank and not lmm.has_lora:
        lmm.add_lora(cfg.lora_rank, cfg.lora_alpha)
    lmm.to(device).eval()
    lmm.freeze_base()
    if not cfg.lora_rank:
        lmm.requires_grad_(False)
    drc.to(device).train()
    params = list(drc.parameters()) + (lmm.lora_parameters() if cfg.lora_rank else [])
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)
    holder = torch.nn.ModuleDict({"drc": drc, "lmm": lmm}) if cfg.lora_rank else drc
    return params, opt, holder


def _optimizer_step(loss: torch.Tensor, params, opt: torch.optim.Optimizer, step: int, stage: str) -> None:
    """Backward, clip to norm 1, step; a non-finite loss stops the run with a clear message."""
    if not torch.isfinite(loss):
        raise FloatingPointError(f"{stage} loss became {loss.item()} at step {step}; lower the learning rate")
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()


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

    from drclib.drc import (COMBINATIONS, ImportanceSampler, TowerInputs, caption_anchor_loss, hybrid_prompt,
                            reconstruction_loss)

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
    params, opt, holder = _drc_trainables(drc, lmm, cfg, device)
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
            g["lr"] = _lr_at(step, cfg)
        idx = _batch_indices(len(triplets), cfg.batch_size, step, cfg.seed, 2)
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
        _optimizer_step(loss + cfg.caption_weight * anchor if anchored else loss, params, opt, step, "stage-1")
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


# ---------------------------------------------------------------------------- DRC stage 2
@dataclass
class Stage2Config:
    """Stage-2 (personalized SFT) settings (paper section 2.2)."""

    steps: int = 400
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


def _sft_loop(losses_of, samples, train_idx: np.ndarray, cfg: "Stage2Config", params, opt, holder, run_config: dict,
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
            g["lr"] = _lr_at(step, cfg)
        idx = train_idx[_batch_indices(len(train_idx), cfg.batch_size, step, cfg.seed, 4)]
        batch = stage2_batch(samples, idx, step, cfg)
        opt.zero_grad(set_to_none=True)
        loss = losses_of(batch, len(idx), autocast).mean()
        _optimizer_step(loss, params, opt, step, name)
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
    params, opt, holder = _drc_trainables(drc, lmm, cfg, device)
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

    history = _sft_loop(losses_of, samples, train_idx, cfg, params, opt, holder, run_config, device=device,
                        checkpoint_dir=checkpoint_dir, progress=progress, stop_after=stop_after, name="stage 2")
    drc.eval()
    lmm.eval()
    return history


# ---------------------------------------------------------------------------- baselines
BASELINE_RECIPE = {"steps": 400, "lr": 1e-3}
"""Steps and learning rate of the trained baselines (otherwise :class:`Stage2Config`'s).
They start from the bare pocket LMM, for which a prompt without a caption is far out of its
training distribution (11-14 nats per visual code before fine-tuning, against 0.39 after the
exact caption), while DRC's stage 2 starts from stage 1's adapters. With stage 2's 400 steps at
3e-4, Pigeon's loss was still 4.6 nats at the end (style 21% on 300 test samples); at 1e-3 the
loss falls faster (LMM-SFT: 4.5 by step 93), so the baselines get stage 1's rate. The
previous kit gave them 800 steps; on the float32-only CPU of the core-set retrain a Pigeon
step took 4.7 s (800 steps: an hour), so they now get stage 2's 400 steps at that rate."""


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

    cfg = cfg or Stage2Config(augment=False)
    train_idx = np.asarray(train_idx)
    if len(train_idx) == 0:
        raise ValueError("no training samples for the baseline")
    if not cfg.lora_rank and not any(True for _ in prompter.parameters()):
        raise ValueError("nothing to train: give lora_rank > 0 or a prompter with a mask generator")
    device = torch.device(device)
    params, opt, holder = _drc_trainables(prompter, lmm, cfg, device)
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

    history = _sft_loop(losses_of, samples, train_idx, cfg, params, opt, holder, run_config, device=device,
                        checkpoint_dir=checkpoint_dir, progress=progress, stop_after=stop_after, name="baseline")
    prompter.eval()
    lmm.eval()
    return history


# ---------------------------------------------------------------------------- command line
def _machine(device) -> str:
    import os
    import platform

    return f"{platform.machine()} {platform.processor()}".strip() + f", {os.cpu_count()} cores, device {device}"


def _downsample(values: list, n: int = 300) -> list:
    if len(values) <= n:
        return list(values)
    idx = np.linspace(0, len(values) - 1, n).round().astype(int)
    return [values[i] for i in idx]


PROBE_CELLS = 48
"""Training cells (the first of :func:`eval_cell_subsets`) whose scores the tests re-measure."""


def eval_cell_subsets(stickers, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The fixed cells the LMM's card is measured on: ``n`` training and ``n`` held-out cells."""
    from drclib.data import heldout_cells

    held = heldout_cells(stickers)
    rng = np.random.default_rng(seed)
    out = {}
    for name, cells in (("train_cells", np.argwhere(~held)), ("heldout_cells", np.argwhere(held))):
        out[name] = cells[np.sort(rng.choice(len(cells), size=min(n, len(cells)), replace=False))]
    return out


def _previous_lines(extra: dict) -> str:
    """Earlier runs this one continued from (``--init-from``), oldest first."""
    out = ""
    for p in extra.get("previous", []):
        out += (f"\n- Continued from: `{p.get('command', '?')}` ({p.get('pretrain', {}).get('steps', '?')} steps, "
                f"{p.get('train_minutes', 0):.1f} min).")
    return out


def _lmm_card(lmm: PocketLMM, extra: dict) -> str:
    c, ev, pre = lmm.config, extra["evaluation"], extra["pretrain"]
    n_params = sum(p.numel() for p in lmm.parameters())
    hist = extra["history"]
    rows = "\n".join(
        f"| {label} | {ev[k]['style_acc']:.3f} | {ev[k]['emoji_top1']:.3f} | {ev[k]['emoji_top5']:.3f} | "
        f"{ev[k]['both']:.3f} |" for k, label in (("train_cells", "training cells"),
                                                  ("heldout_cells", "held-out cells (never seen)")))
    return f"""# Pocket LMM (drc-kit)

A Llama-family causal LM (transformers `LlamaForCausalLM`): hidden {c.hidden_size}, {c.num_layers} layers,
{c.num_heads} heads, MLP {c.intermediate_size}; vocabulary {c.vocab_size} = {len(SPECIALS)} specials +
{c.n_visual} visual codes + words; {n_params / 1e6:.2f} M parameters, stored in fp16. It reads and writes
the 64 visual codes of the kit's tokenizer (data/checkpoints/tokenizer). Load it with
`drclib.backbone.load_default()`.

- Command: `{extra['command']}`, then `python -m drclib.train evaluate-backbone` (the table below,
  measured with the fp16 weights as shipped).
- Trained in {extra['train_minutes']:.1f} min on {extra['machine']}.{_previous_lines(extra)}
- Data: data/stickers_32px.npz, concept set `{extra.get('concept_set', 'all')}` ({len(extra.get('concepts', [])) or 'all'} emoji,
  `drclib.data.concepts`): the {extra['n_train_cells']} (style, emoji) cells outside its held-out cells,
  as text-to-image ({1 - pre['i2t_fraction']:.0%} of each batch; {pre.get('hybrid_fraction', 0):.0%} of those after DRC's hybrid-prompt sentence) and image-to-text ({pre['i2t_fraction']:.0%}) sequences;
  {pre['steps']} steps of batch {pre['batch_size']}, AdamW lr {pre['lr']} (warm-up, cosine), bf16 autocast {pre['bf16']},
  seed {pre['seed']}.
- Final training loss {hist['loss'][-1]:.3f} (text-to-image {hist['loss_t2i'][-1]:.3f}, image-to-text {hist['loss_i2t'][-1]:.3f}).

Text-to-image, greedy, prompt `a sticker of <name> in <style> style`; images decoded by the tokenizer and
judged by the kit's classifiers (data/checkpoints/style_classifier, emoji_classifier, its argmax over the set) on
{ev['train_cells']['n_cells']} training and {ev['heldout_cells']['n_cells']} held-out cells
(`drclib.train.eval_cell_subsets(stickers, {ev['train_cells']['n_cells']})`):

| cells | style correct | emoji top-1 | emoji top-5 | both |
|---|---|---|---|---|
{rows}

{extra.get('judges', '')}
"""


def concept_record(stickers) -> dict:
    """What a trained model records of its world: the concept set's name and its emoji
    (indices into the whole sticker array), so it can be reloaded with the same stickers."""
    return {"concept_set": stickers.concept_name, "concepts": [int(c) for c in stickers.concepts]}


def model_stickers(model):
    """The sticker set a trained model (anything with ``training_info`` from
    :func:`concept_record`, e.g. the LMM, or that record itself as a dict) was trained on; the
    whole array for models without a record."""
    from drclib.data import StickerSet

    info = (model if isinstance(model, dict) else getattr(model, "training_info", None)) or {}
    concepts = info.get("concepts")
    stickers = StickerSet.load()
    if concepts is None or len(concepts) == stickers.n_emoji:
        return stickers
    name = info.get("concept_set")
    from drclib.data.concepts import CONCEPT_SETS, concept_set

    if name in CONCEPT_SETS and np.array_equal(concept_set(name, stickers), concepts):
        return stickers.subset(name)
    return stickers.subset(np.asarray(concepts))


def evaluate_backbone(folder: str | Path, *, n_cells: int = 300, device="cpu") -> dict:
    """Reload the saved LMM (fp16 weights, as shipped), measure text-to-image on the fixed
    cells, and rewrite its card and metrics. Returns the evaluation."""
    from drclib import metrics, tokenizer as tok_mod
    from drclib.backbone import evaluate_text_to_image
    from drclib.data import StickerSet, heldout_cells

    lmm = PocketLMM.from_pretrained(folder, device=device)
    stickers = model_stickers(lmm)
    tokenizer = tok_mod.load_default(device=device)
    style_clf, emoji_clf = metrics.load_judges(stickers, device)
    subsets = eval_cell_subsets(stickers, n_cells)
    evaluation = {k: evaluate_text_to_image(lmm, tokenizer, style_clf, emoji_clf, stickers, v)
                  for k, v in subsets.items()}
    extra = dict(lmm.training_info)
    extra["evaluation"] = evaluation
    # a small fixed probe that the test suite re-measures (greedy decoding is deterministic)
    extra["probe"] = evaluate_text_to_image(lmm, tokenizer, style_clf, emoji_clf, stickers,
                                            subsets["train_cells"][:PROBE_CELLS])
    extra["probe_subset_n"] = n_cells
    si, ei = style_clf.training_info, emoji_clf.training_info
    try:
        extra["judges"] = (
            "The judges are not perfect: on real held-out stickers the style classifier is right "
            f"{si['heldout']['acc']:.0%} of the time ({si['heldout_reconstructed']['acc']:.0%} after the "
            f"tokenizer's round trip, the ceiling for generated images), the emoji classifier "
            f"{ei['heldout']['acc']:.0%} top-1 (their own cards).")
    except KeyError:
        extra["judges"] = "See the classifiers' own cards for how well they judge."
    extra.setdefault("n_train_cells", int(len(np.argwhere(~heldout_cells(stickers)))))
    card = _lmm_card(lmm, extra)
    lmm.cpu().save_pretrained(folder, dtype=torch.float16, card=card, extra=extra)
    print(card)
    return evaluation


def train_backbone_command(args) -> int:
    """Pretrain the pocket LMM on every non-held-out cell, save it, then evaluate the saved
    weights and write the model card."""
    import sys

    from drclib import tokenizer as tok_mod
    from drclib.backbone import encode_sticker_set
    from drclib.data import StickerSet, heldout_cells
    from drclib.runtime import pick_device, seed_everything

    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    stickers = StickerSet.load(concepts=args.concepts)
    tokenizer = tok_mod.load_default(device=device)
    train_cells = np.argwhere(~heldout_cells(stickers))
    codes = encode_sticker_set(tokenizer, stickers)
    previous = []
    if args.init_from:
        lmm = PocketLMM.from_pretrained(args.init_from)
        info = lmm.training_info
        previous = list(info.get("previous", [])) + [{k: info[k] for k in ("command", "train_minutes", "pretrain")
                                                     if k in info}]
    else:
        lmm = PocketLMM.from_stickers(stickers, n_visual=tokenizer.codebook_size, hidden_size=args.hidden,
                                      num_layers=args.layers, num_heads=args.heads,
                                      intermediate_size=args.intermediate)
    if args.augment > 0 and args.copies > 1:
        from drclib.tokenizer import augmented_codes

        codes = augmented_codes(tokenizer, stickers, args.copies, seed=args.seed)
    cfg = PretrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         i2t_fraction=args.i2t_fraction, bf16=resolve_bf16(False if args.no_bf16 else None, device), warmup=args.warmup,
                         hybrid_fraction=args.hybrid_fraction, unconditional_fraction=args.unconditional_fraction,
                         interleaved_fraction=args.interleaved_fraction, factor_dropout=args.factor_dropout,
                         augment_prob=args.augment if args.copies > 1 else 0.0)
    t0 = time.perf_counter()
    history = pretrain_backbone(lmm, stickers, codes, train_cells, cfg, device=device,
                                checkpoint_dir=args.state_dir)
    minutes = (time.perf_counter() - t0) / 60
    extra = {"command": "python -m drclib.train " + " ".join(sys.argv[1:]), "train_minutes": round(minutes, 2),
             "machine": _machine(device), "n_train_cells": int(len(train_cells)),
             "pretrain": {k: v for k, v in vars(cfg).items() if k != "extra"},
             "history": {k: _downsample(v) for k, v in history.items()}}
    if previous:
        extra["previous"] = previous
    extra |= concept_record(stickers)
    lmm.cpu().save_pretrained(args.out, dtype=torch.float16, extra=extra)
    evaluate_backbone(args.out, n_cells=args.eval_cells, device=device)
    return 0


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


def pm(rate: float, n: int) -> str:
    """``"0.520 ± 0.029"``: a rate with its standard error ``sqrt(p (1 - p) / n)``."""
    return f"{rate:.3f} ± {math.sqrt(max(rate * (1 - rate), 0.0) / max(n, 1)):.3f}"


SWAP_COLUMNS = (("style_of_A", "style of A"), ("emoji_of_B", "emoji of B"), ("both", "both"),
                ("style_of_B", "style of B (collapse)"), ("emoji_of_A", "emoji of A (collapse)"))
"""The swap-test columns of every stage-1 table, in order."""
PAIR_TITLES = {"train": "pairs of training cells (their target cell was trained on)",
               "heldout": "pairs of held-out cells (never trained on)"}


def _swap_row(label: str, r: dict) -> str:
    return f"| {label} | " + " | ".join(pm(r[k], r["n"]) for k, _ in SWAP_COLUMNS) + " |"


def _swap_header(first: str) -> list[str]:
    return [f"| {first} | " + " | ".join(t for _, t in SWAP_COLUMNS) + " |", "|---" * (len(SWAP_COLUMNS) + 1) + "|"]


def swap_markdown(rows: dict, first: str = "model") -> str:
    """A swap-test table as markdown: one row per ``{label: swap_rates}``, every column a rate
    ± its standard error (the notebooks and cards share it)."""
    return "\n".join(_swap_header(first) + [_swap_row(label, r) for label, r in rows.items()])


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
                      "(`drclib.drc.swap_pairs`):", ""] + _swap_header("composition")
            lines += [_swap_row(form, r) for form, r in forms.items()]
    return "\n".join(lines) + "\n"


def evaluate_stage1_folder(folder: str | Path, *, lmm_folder: str | Path | None = None, n_pairs: int = 300,
                           n_triplets: int = 300, device="cpu", command: str | None = None) -> dict:
    """Reload a saved stage-1 model (fp16 as shipped), run :func:`drclib.drc.evaluate_stage1`
    on its concept set (both kinds of swap pairs), and rewrite its card and metrics."""
    from drclib import metrics
    from drclib import tokenizer as tok_mod
    from drclib.backbone import sticker_codes
    from drclib.drc import cell_images, evaluate_stage1, heldout_triplets, load_stage1, swap_pair_sets

    folder = Path(folder)
    drc, lmm = load_stage1(folder, lmm_folder, device=device)
    info = dict(drc.training_info)
    tokenizer = tok_mod.load_default(device=device)
    stickers = model_stickers(drc)
    codes = sticker_codes(tokenizer, stickers)
    images = cell_images(stickers)
    style_clf, emoji_clf = metrics.load_judges(stickers, device)
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
        from drclib import metrics
        from drclib import tokenizer as tok_mod
        from drclib.backbone import load_default, sticker_codes
        from drclib.drc import swap_pair_sets, swap_reference_rows

        lmm = load_default()
        stickers = model_stickers(next((i for i in infos.values() if i), None) or lmm)
        tok = tok_mod.load_default()
        style_clf, emoji_clf = metrics.load_judges(stickers)
        codes = sticker_codes(tok, stickers)
        refs = {kind: swap_reference_rows(lmm, tok, style_clf, emoji_clf, stickers, codes, pairs)
                for kind, pairs in swap_pair_sets(stickers, n_pairs).items()}
    lines = []
    for kind in ("train", "heldout"):
        lines += ["", f"Swap test on {PAIR_TITLES[kind]}:", ""] + _swap_header("model")
        for v, info in infos.items():
            sw = (info or {}).get("evaluation", {}).get("swap", {}).get(kind, {}).get("self")
            lines.append(_swap_row(ABLATION_NAMES[v], sw) if sw else f"| {ABLATION_NAMES[v]} | not shipped |")
        for name, sw in refs.get(kind, {}).items():
            lines.append(_swap_row(f"*{name}*", sw))
    lines += ["", "| model | training | final loss z(s,m) |", "|---|---|---|"]
    for v, info in infos.items():
        if info:
            lines.append(f"| {ABLATION_NAMES[v]} | {info.get('train_minutes', '?')} min | "
                         f"{info.get('final_losses', {}).get('sm', float('nan')):.3f} |")
    return "\n".join(lines[1:])


def train_stage1_command(args) -> int:
    """Train one stage-1 variant on the full profile's triplets, save it, evaluate it."""
    import sys

    from drclib import encoder as enc_mod
    from drclib import tokenizer as tok_mod
    from drclib.backbone import default_checkpoint_dir, sticker_codes
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
            "train_minutes": round(minutes, 2), "machine": _machine(device), "lmm": lmm_fingerprint(lmm_folder),
            **concept_record(stickers),
            "stage1": vars(cfg) | {"n_triplets": len(data.triplets), "profile": args.profile},
            "final_losses": {c: history["l_" + c][-1] for c in COMBINATIONS},
            **({"final_caption_loss": float(np.mean(history["caption"][-50:]))} if cfg.caption_weight > 0 else {}),
            "history": {k: _downsample(v) for k, v in history.items() if k != "sampler"}}
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


def default_stage1_dir(variant: str = "drc") -> Path:
    """``data/checkpoints/stage1/<variant>``: the shipped stage-1 models (DRC and its ablations)."""
    from drclib.checkpoint import shipped_dir

    return shipped_dir("stage1") / variant


def train_stage2_command(args) -> int:
    """Stage 2 from the shipped stage-1 model: SFT, save the pipeline, evaluate it beside the
    stage-1-only pipeline on both splits' test samples, write the card."""
    import sys

    from drclib import metrics
    from drclib import tokenizer as tok_mod
    from drclib.backbone import sticker_codes
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
                       augment=not args.no_augment, lora_rank=s1_rank, caption_weight=weight)
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
            "machine": _machine(device), "lmm": lmm_fingerprint(default_checkpoint_dir()), **concept_record(stickers),
            "stage1": repo_relative(stage1_dir), "stage2": vars(cfg) | {"profile": args.profile},
            "history": {k: _downsample(v) for k, v in history.items()}}
    drc.training_info = info
    pipe = DRCPipeline(drc, lmm, tokenizer)
    style_clf, emoji_clf = metrics.load_judges(stickers, device)
    baseline = DRCPipeline(s1, s1_lmm, tokenizer)
    ev = {}
    for split in ("sample", "heldout"):
        test = data.splits[split].test[:args.eval_samples]
        ev[split] = {"drc": evaluate_personalization(pipe, stickers, data.samples, test, style_clf, emoji_clf),
                     "stage1_only": evaluate_personalization(baseline, stickers, data.samples, test, style_clf,
                                                             emoji_clf)}
    info["evaluation"] = ev
    pipe.save_pretrained(out, extra=info, card=_stage2_card(info))
    print((out / "drc" / "README.md").read_text())
    return 0


def shipped_stage2_dir(augment: bool = True) -> Path:
    """``data/checkpoints/drc`` (the DRC pipeline) or ``data/checkpoints/drc_no_aug`` (w/o Aug)."""
    from drclib.checkpoint import shipped_dir

    return shipped_dir("drc" if augment else "drc_no_aug")


def _stage2_card(info: dict) -> str:
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

    from drclib import metrics
    from drclib import tokenizer as tok_mod
    from drclib.backbone import default_checkpoint_dir, sticker_codes
    from drclib.baselines import METHODS, InterleavedConfig, InterleavedPipeline, InterleavedPrompter, default_baseline_dir
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
    cfg = Stage2Config(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed, augment=False)
    t0 = time.perf_counter()
    history = train_baseline(prompter, lmm, codes, data.samples, data.splits["sample"].train, cfg, device=device,
                             checkpoint_dir=args.state_dir)
    minutes = (time.perf_counter() - t0) / 60
    pipe = InterleavedPipeline(prompter, lmm, tokenizer, method=args.method)
    style_clf, emoji_clf = metrics.load_judges(stickers, device)
    ev = {}
    for split in ("sample", "heldout"):
        test = data.splits[split].test[:args.eval_samples]
        ev[split] = {args.method: evaluate_personalization(pipe, stickers, data.samples, test, style_clf, emoji_clf)}
    info = {"method": args.method, "label": METHODS[args.method],
            "command": "python -m drclib.train " + " ".join(sys.argv[1:]), "train_minutes": round(minutes, 2),
            "machine": _machine(device), "lmm": lmm_fingerprint(default_checkpoint_dir()), **concept_record(stickers),
            "stage2": vars(cfg) | {"profile": args.profile}, "evaluation": ev,
            "probe": baseline_probe(pipe, stickers, data.samples, data.splits["sample"].test, style_clf, emoji_clf),
            "history": {k: _downsample(v) for k, v in history.items()}}
    out = Path(args.out or default_baseline_dir(args.method))
    pipe.save_pretrained(out, extra=info, card=_baseline_card(info))
    print((out / "prompter" / "README.md").read_text())
    return 0


def _baseline_card(info: dict) -> str:
    s2 = info["stage2"]
    what = ("the LMM's LoRA adapters and the mask generator over the raw history and reference tokens"
            if info["method"] == "pigeon" else "the LMM's LoRA adapters")
    card = _stage2_card(info | {"stage1": "-"}).split("\n")
    head = [f"# Baseline: {info['label']} (drc-kit)", "",
            f"A baseline of the paper's Table 2 (`drclib.baselines`): the history's and the reference's visual tokens "
            f"interleaved in the prompt of the shipped pocket LMM; fine-tuned: {what}. Trained as Pigeon trains: the "
            f"target is its own reference; alpha_s {s2['alpha_s']}, alpha_m ~ U(0, 1).", "",
            f"- Command: `{info['command']}`", f"- Trained in {info['train_minutes']} min on {info['machine']}.",
            f"- {s2['steps']} steps of batch {s2['batch_size']}, lr {s2['lr']}, seed {s2['seed']}, the "
            f"`{s2['profile']}` profile's `sample`-split training samples (the same as DRC's stage 2).", ""]
    start = next(i for i, line in enumerate(card) if line.startswith("Greedy generation"))
    return "\n".join(head + card[start:])


def main(argv: list[str] | None = None) -> int:
    import argparse

    from drclib.backbone import default_checkpoint_dir

    p = argparse.ArgumentParser(prog="python -m drclib.train", description="Training commands of drc-kit.")
    sub = p.add_subparsers(dest="what", required=True)
    b = sub.add_parser("backbone", help="pretrain the pocket LMM (needs the shipped tokenizer and classifiers)",
                       description="Pretrain the pocket LMM on text-to-image and image-to-text over every "
                       "(style, emoji) cell outside the held-out cells, evaluate text-to-image with the kit's "
                       "classifiers, and save fp16 weights with a model card. Resumable with --state-dir.")
    b.add_argument("--concepts", default="core", help="concept set to train on (mini, core, all)")
    b.add_argument("--steps", type=int, default=LMM_RECIPE["steps"])
    b.add_argument("--batch-size", type=int, default=32)
    b.add_argument("--lr", type=float, default=LMM_RECIPE["lr"])
    b.add_argument("--i2t-fraction", type=float, default=LMM_RECIPE["i2t_fraction"])
    for flag, key, kind, text in (
            ("--hybrid-fraction", "hybrid_fraction", float, "share of text-to-image sequences prefixed by DRC's hybrid-prompt sentence"),
            ("--unconditional-fraction", "unconditional_fraction", float, "share of caption-free image sequences in a batch"),
            ("--interleaved-fraction", "interleaved_fraction", float,
             "share of interleaved sequences (an image, then a caption and image of the same style or emoji)"),
            ("--factor-dropout", "factor_dropout", float, "share of text-to-image captions naming only the emoji or only the style"),
            ("--augment", "augment_prob", float, "chance that a sequence uses a shifted/scaled copy of the sticker"),
            ("--copies", "augment_copies", int, "augmented copies of every sticker (with --augment > 0)")):
        b.add_argument(flag, type=kind, default=LMM_RECIPE[key], help=text)
    b.add_argument("--hidden", type=int, default=256)
    b.add_argument("--layers", type=int, default=4)
    b.add_argument("--heads", type=int, default=4)
    b.add_argument("--intermediate", type=int, default=704)
    b.add_argument("--warmup", type=int, default=100, help="warm-up steps of the learning rate")
    b.add_argument("--init-from", default=None, help="continue from a saved LMM (its sizes and tokenizer; "
                   "a new learning-rate schedule); its training record is kept in the new card")
    b.add_argument("--no-bf16", action="store_true", help="train in float32 (slower on CPU)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--device", default="auto")
    b.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    b.add_argument("--eval-cells", type=int, default=300, help="cells scored after training, per split")
    b.add_argument("--state-dir", default=None, help="folder for resumable training state")
    b.add_argument("--out", default=str(default_checkpoint_dir()))
    e = sub.add_parser("evaluate-backbone", help="measure a saved LMM and rewrite its model card",
                       description="Reload a saved pocket LMM (fp16 weights as shipped), generate every fixed "
                       "evaluation cell's caption greedily, classify the decoded images, and rewrite the "
                       "checkpoint's card and metrics.")
    e.add_argument("--folder", default=str(default_checkpoint_dir()))
    e.add_argument("--eval-cells", type=int, default=300)
    e.add_argument("--threads", type=int, default=0)
    s1 = sub.add_parser("stage1", help="DRC stage 1: train towers + fusion (and LoRA adapters on the LMM)",
                        description="Train one stage-1 variant (drc, or an ablation: uniform = w/o importance "
                        "sampling, concat = w/o FusionNetwork, mlp = w/o attention) on the profile's ground-truth "
                        "triplets, save fp16 weights under data/checkpoints/stage1/<variant>, then run the swap "
                        "test and write the model card. Resumable with --state-dir.")
    s1.add_argument("--variant", choices=["drc", "uniform", "concat", "mlp"], default="drc")
    s1.add_argument("--steps", type=int, default=300)
    s1.add_argument("--batch-size", type=int, default=32)
    s1.add_argument("--lr", type=float, default=1e-3)
    s1.add_argument("--n-latent", type=int, default=16, help="K, tokens of a latent instruction")
    s1.add_argument("--features", choices=["semantic", "embeddings", "hidden"], default="semantic",
                    help="what the towers read: the semantic encoder's tokens (default), the LMM's embedding "
                         "lookup E_x, or its hidden states")
    s1.add_argument("--form", choices=["cross", "self"], default="self",
                    help="tower form in stage 1: the paper's cross form (q from one image, k/v from the other) "
                         "or the self form of inference")
    s1.add_argument("--z-space", choices=["free", "words", "slots"], default="slots",
                    help="z as free vectors, soft mixtures of the LMM's word embeddings, or slots that each hold "
                         "one word or nothing (default)")
    s1.add_argument("--lora-rank", type=int, default=0,
                    help="0: frozen LMM (default); > 0: LoRA adapters train too (they cost the LMM its own "
                         "text-to-image: 0.90 -> 0.15 'both' from exact captions after 300 steps)")
    s1.add_argument("--caption-weight", type=float, default=10.0,
                    help="> 0: the kit's caption anchor (not in the paper) with this weight (default 1; 0: eq. 3 "
                         "alone); needs --z-space words or slots")
    s1.add_argument("--profile", default="full", help="whose triplets to train on")
    s1.add_argument("--lmm", default=None, help="LMM folder (default: the shipped one)")
    s1.add_argument("--seed", type=int, default=0)
    s1.add_argument("--device", default="auto")
    s1.add_argument("--threads", type=int, default=0)
    s1.add_argument("--eval-pairs", type=int, default=STAGE1_EVAL["pairs"])
    s1.add_argument("--eval-triplets", type=int, default=STAGE1_EVAL["triplets"])
    s1.add_argument("--state-dir", default=None, help="folder for resumable training state")
    s1.add_argument("--out", default=None, help="default: data/checkpoints/stage1/<variant>")
    e1 = sub.add_parser("evaluate-stage1", help="measure a saved stage-1 model and rewrite its card",
                        description="Reload a saved stage-1 model, reconstruct held-out anchors from each of "
                        "the four instructions, run the swap test (A's style with B's emoji), and rewrite the card.")
    e1.add_argument("--folder", default=None, help="default: data/checkpoints/stage1/drc")
    e1.add_argument("--lmm", default=None)
    e1.add_argument("--pairs", type=int, default=STAGE1_EVAL["pairs"])
    e1.add_argument("--triplets", type=int, default=STAGE1_EVAL["triplets"])
    e1.add_argument("--threads", type=int, default=0)
    s2 = sub.add_parser("stage2", help="DRC stage 2: personalized SFT, saves the DRC pipeline",
                        description="Start from the shipped stage-1 model, add the mask generator, fine-tune "
                        "towers, fusion, mask generator and the LMM's LoRA adapters on the sample split's training "
                        "samples (semantic-preserving augmentation unless --no-augment), save the pipeline to "
                        "data/checkpoints/drc (or drc_no_aug) and evaluate it beside the stage-1-only pipeline.")
    s2.add_argument("--steps", type=int, default=200)
    s2.add_argument("--batch-size", type=int, default=16)
    s2.add_argument("--lr", type=float, default=3e-4)
    s2.add_argument("--no-augment", action="store_true", help="w/o Aug: the target is its own reference")
    s2.add_argument("--stage1", default=None, help="stage-1 folder (default data/checkpoints/stage1/drc)")
    s2.add_argument("--profile", default="full")
    s2.add_argument("--seed", type=int, default=0)
    s2.add_argument("--device", default="auto")
    s2.add_argument("--threads", type=int, default=0)
    s2.add_argument("--eval-samples", type=int, default=300, help="test samples scored per split")
    s2.add_argument("--state-dir", default=None)
    s2.add_argument("--out", default=None)
    bl = sub.add_parser("baseline", help="fine-tune the LMM-SFT or Pigeon baseline",
                        description="Fine-tune an interleaved-token baseline of drclib.baselines from the shipped LMM "
                        "with the stage-2 recipe (the target as its own reference, as Pigeon trains), save it to "
                        "data/checkpoints/<method> and score it on both splits.")
    bl.add_argument("--method", choices=["pigeon", "lmm_sft"], required=True)
    bl.add_argument("--steps", type=int, default=BASELINE_RECIPE["steps"])
    bl.add_argument("--batch-size", type=int, default=16)
    bl.add_argument("--lr", type=float, default=BASELINE_RECIPE["lr"])
    bl.add_argument("--profile", default="full")
    bl.add_argument("--seed", type=int, default=0)
    bl.add_argument("--device", default="auto")
    bl.add_argument("--threads", type=int, default=0)
    bl.add_argument("--eval-samples", type=int, default=300, help="test samples scored per split")
    bl.add_argument("--state-dir", default=None)
    bl.add_argument("--out", default=None)
    st = sub.add_parser("stage1-table", help="print the ablation table from the shipped stage-1 cards",
                        description="Read data/checkpoints/stage1/*/config.json and print the swap-test table "
                        "(DRC and its ablations) as markdown; --references adds the reference rows.")
    st.add_argument("--references", action="store_true",
                    help="also score the real target, the tokenizer ceiling, the LMM asked in words and copying B")
    st.add_argument("--root", default=None,
                    help="read <root>/<variant> instead of data/checkpoints/stage1/<variant>")
    st.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.what == "stage2":
        return train_stage2_command(args)
    if args.what == "baseline":
        return train_baseline_command(args)
    if args.what == "stage1-table":
        if args.threads:
            torch.set_num_threads(args.threads)
        print(stage1_table(references=args.references, root=args.root))
        return 0
    if args.what == "stage1":
        return train_stage1_command(args)
    if args.what == "evaluate-stage1":
        import sys

        if args.threads:
            torch.set_num_threads(args.threads)
        evaluate_stage1_folder(args.folder or default_stage1_dir(), lmm_folder=args.lmm, n_pairs=args.pairs,
                               n_triplets=args.triplets, command="python -m drclib.train " + " ".join(sys.argv[1:]))
        return 0
    if args.what == "backbone":
        return train_backbone_command(args)
    if args.what == "evaluate-backbone":
        if args.threads:
            torch.set_num_threads(args.threads)
        evaluate_backbone(args.folder, n_cells=args.eval_cells)
        return 0
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
