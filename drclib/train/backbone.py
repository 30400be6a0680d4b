"""Pretraining the pocket LMM (the stand-in for LaVIT) on the concept set's training cells.

Sequences (:class:`SequenceBuilder`): text-to-image, image-to-text and hybrid (a prompt with
a ``<z>`` slot holding caption words), with optional augmentation, caption-free,
interleaved and factor-dropout sequences (:data:`LMM_RECIPE`: the plain recipe; the shipped LMM is
three runs of this command, chained in :func:`drclib.reproduce.training_steps`).
``python -m drclib.train backbone`` trains it; ``evaluate-backbone`` scores a folder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from drclib.backbone import BOS, EOS, IMG, IMG_END, PAD, SPECIALS, PocketLMM, factor_caption, sticker_caption
from drclib.runtime import bf16_from_flag, describe_machine, resolve_bf16
from drclib.train.cards import concept_record, model_stickers, previous_lines
from drclib.train.loop import IGNORE, batch_indices, downsample, load_training_state, lr_at, save_training_state


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
    :func:`drclib.backbone.tokenizer.augmented_codes`), the chance that a sequence uses a shifted or
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
"""The plain pretraining recipe (``python -m drclib.train backbone`` defaults; the scaling study
uses it at every K, and it made the kit's LMM until 2026-12-07, now ``data/checkpoints/plain/lmm``).
The shipped LMM, the composing one, is 6,000 steps of it with ``--augment 0.9 --copies 16`` (two
runs), then 600 plain steps at ``--lr 5e-4 --warmup 30`` (:func:`drclib.reproduce.training_steps`
chains them; its card lists the three commands). See RESULTS.md section 1 for what each part changed."""


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
        self.emoji_only = [lmm.text_ids(factor_caption(name=n)) for n in stickers.names]
        self.style_only = [lmm.text_ids(factor_caption(style=s)) for s in stickers.styles]
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
        for i in batch_indices(len(cells), n, step, cfg.seed, 10 + stream):
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
            g["lr"] = lr_at(step, cfg)
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
- Trained in {extra['train_minutes']:.1f} min on {extra['machine']}.{previous_lines(extra)}
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


def evaluate_backbone(folder: str | Path, *, n_cells: int = 300, device="cpu") -> dict:
    """Reload the saved LMM (fp16 weights, as shipped), measure text-to-image on the fixed
    cells, and rewrite its card and metrics. Returns the evaluation."""
    from drclib import judges
    from drclib.backbone import tokenizer as tok_mod
    from drclib.data import heldout_cells
    from drclib.judges import evaluate_text_to_image

    lmm = PocketLMM.from_pretrained(folder, device=device)
    stickers = model_stickers(lmm)
    tokenizer = tok_mod.load_default(device=device)
    style_clf, emoji_clf = judges.load_judges(stickers, device)
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

    from drclib.backbone import encode_sticker_set
    from drclib.backbone import tokenizer as tok_mod
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
        from drclib.backbone.tokenizer import augmented_codes

        codes = augmented_codes(tokenizer, stickers, args.copies, seed=args.seed)
    cfg = PretrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         i2t_fraction=args.i2t_fraction, bf16=bf16_from_flag(args.no_bf16, device), warmup=args.warmup,
                         hybrid_fraction=args.hybrid_fraction, unconditional_fraction=args.unconditional_fraction,
                         interleaved_fraction=args.interleaved_fraction, factor_dropout=args.factor_dropout,
                         augment_prob=args.augment if args.copies > 1 else 0.0)
    t0 = time.perf_counter()
    history = pretrain_backbone(lmm, stickers, codes, train_cells, cfg, device=device,
                                checkpoint_dir=args.state_dir)
    minutes = (time.perf_counter() - t0) / 60
    extra = {"command": "python -m drclib.train " + " ".join(sys.argv[1:]), "train_minutes": round(minutes, 2),
             "machine": describe_machine(device), "n_train_cells": int(len(train_cells)),
             "pretrain": {k: v for k, v in vars(cfg).items() if k != "extra"},
             "history": {k: downsample(v) for k, v in history.items()}}
    if previous:
        extra["previous"] = previous
    extra |= concept_record(stickers)
    lmm.cpu().save_pretrained(args.out, dtype=torch.float16, extra=extra)
    evaluate_backbone(args.out, n_cells=args.eval_cells, device=device)
    return 0
