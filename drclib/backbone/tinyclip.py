"""A tiny CLIP trained by the kit: the stand-in for open_clip ViT-H-14 in the paper's metrics.

Built from open_clip's own ``CLIP`` class with small vision and text towers (a ViT over 4x4
patches of the 32x32 sticker; a causal text transformer over the kit's word-level vocabulary)
and trained contrastively on (sticker, caption) pairs. Captions come in three kinds, so that
one model can score all three things the evaluation asks:

- ``a sticker of cat face in noto style``  (both)
- ``a sticker of cat face``               (semantics only: the semantic CLIP score)
- ``a sticker in noto style``             (style only)

Scores follow the paper: ``100 * cosine`` between normalised embeddings. CLIP score (CS) is
text-to-image, CLIP image score (CIS) image-to-image. A score from this model is labelled
``tinyclip (kit)`` in every table, never ``ViT-H-14``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from drclib.backbone import EOS, PAD, WithTextTokenizer, build_text_tokenizer
from drclib.checkpoint import load_shipped, shipped_dir
from drclib.runtime import resolve_bf16

BACKEND_NAME = "tinyclip (kit)"

# channel statistics of the sticker set (mostly white): inputs are standardised with them
_MEAN = (0.86, 0.83, 0.80)
_STD = (0.27, 0.29, 0.31)


def caption_variants(name: str, style: str) -> tuple[str, str, str]:
    """The three caption kinds the tiny CLIP is trained on (both, semantics, style)."""
    return (f"a sticker of {name} in {style} style", f"a sticker of {name}", f"a sticker in {style} style")


@dataclass(frozen=True)
class TinyCLIPConfig:
    vocab_size: int
    embed_dim: int = 128
    image_size: int = 32
    patch_size: int = 4
    vision_width: int = 128
    vision_layers: int = 4
    text_width: int = 128
    text_layers: int = 3
    text_heads: int = 4
    context_length: int = 24


class TinyCLIP(WithTextTokenizer):
    """open_clip's CLIP at pocket size, with the kit's text tokenizer."""

    config_class = TinyCLIPConfig

    def __init__(self, config: TinyCLIPConfig, text_tokenizer=None):
        super().__init__()
        from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

        self.config = config
        vision = CLIPVisionCfg(layers=config.vision_layers, width=config.vision_width, head_width=32,
                               patch_size=config.patch_size, image_size=config.image_size)
        text = CLIPTextCfg(context_length=config.context_length, vocab_size=config.vocab_size,
                           width=config.text_width, heads=config.text_heads, layers=config.text_layers,
                           pad_id=PAD, eos_id=EOS, pool_type="eos")
        self.model = CLIP(embed_dim=config.embed_dim, vision_cfg=vision, text_cfg=text)
        self.text_tokenizer = text_tokenizer
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_stickers(cls, stickers, **sizes) -> "TinyCLIP":
        corpus = [c for n in stickers.names for s in stickers.styles for c in caption_variants(n, s)]
        tok = build_text_tokenizer(corpus, n_visual=0)
        return cls(TinyCLIPConfig(vocab_size=len(tok), **sizes), tok)

    # ------------------------------------------------------------------ encoding
    @property
    def device(self) -> torch.device:
        return self.mean.device

    def tokenize(self, texts: str | list[str]) -> torch.Tensor:
        """``[B, context_length]`` ids: ``<bos> words <eos>`` then padding (truncated if long)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise ValueError("texts must be a str or a non-empty list of str")
        n = self.config.context_length
        out = torch.full((len(texts), n), PAD, dtype=torch.long)
        for i, t in enumerate(texts):
            ids = self.text_tokenizer(t, add_special_tokens=False)["input_ids"][: n - 2]
            row = [self.text_tokenizer.bos_token_id, *ids, EOS]
            out[i, :len(row)] = torch.tensor(row)
        return out.to(self.device)

    def _check_images(self, images: torch.Tensor) -> torch.Tensor:
        images = torch.as_tensor(images)
        size = self.config.image_size
        if images.ndim != 4 or images.shape[1:] != (3, size, size) or not images.is_floating_point():
            raise ValueError(f"images must be float [B, 3, {size}, {size}] in [0, 1], got "
                             f"{images.dtype} {tuple(images.shape)}")
        if not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1:
            raise ValueError("images must be finite and lie in [0, 1]")
        return images.to(self.device)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-norm image embeddings ``[B, embed_dim]``."""
        x = (self._check_images(images) - self.mean) / self.std
        return F.normalize(self.model.encode_image(x), dim=-1)

    def encode_text(self, texts: str | list[str]) -> torch.Tensor:
        """Unit-norm text embeddings ``[B, embed_dim]``."""
        return F.normalize(self.model.encode_text(self.tokenize(texts)), dim=-1)

    @torch.no_grad()
    def clip_score(self, images: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """CS: ``100 * cos(image, text)`` per pair, ``[B]``."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if len(texts) != len(images):
            raise ValueError(f"got {len(images)} images but {len(texts)} texts")
        return 100 * (self.encode_image(images) * self.encode_text(texts)).sum(-1)

    @torch.no_grad()
    def image_score(self, images_a: torch.Tensor, images_b: torch.Tensor) -> torch.Tensor:
        """CIS: ``100 * cos(image_a, image_b)`` per pair, ``[B]``."""
        if len(images_a) != len(images_b):
            raise ValueError(f"got {len(images_a)} and {len(images_b)} images; pairs must match")
        return 100 * (self.encode_image(images_a) * self.encode_image(images_b)).sum(-1)

    def forward(self, images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE loss of a batch of matching (image, token ids) pairs."""
        x = (images - self.mean) / self.std
        img = F.normalize(self.model.encode_image(x), dim=-1)
        txt = F.normalize(self.model.encode_text(texts), dim=-1)
        logits = self.model.logit_scale.exp().clamp(max=100) * img @ txt.T
        target = torch.arange(len(images), device=images.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


# ---------------------------------------------------------------------------- training
def train_tinyclip(stickers, cells: np.ndarray, *, epochs: int = 20, batch_size: int = 256, lr: float = 1e-3,
                   seed: int = 0, device: str | torch.device = "cpu", bf16: bool | None = None, progress: bool = True,
                   model: TinyCLIP | None = None, **sizes) -> tuple[TinyCLIP, dict]:
    """Train a tiny CLIP on the given (style, emoji) cells (callers exclude held-out cells).

    Each epoch shows every cell once with one of its three caption kinds at random, and a
    light augmentation (random shifts of up to 2 px). Returns ``(model, history)``.
    """
    from tqdm.auto import tqdm

    cells = np.asarray(cells)
    if cells.ndim != 2 or cells.shape[1] != 2 or len(cells) < 2:
        raise ValueError(f"cells must be an [N >= 2, 2] array of (style, emoji), got {cells.shape}")
    device = torch.device(device)
    torch.manual_seed(seed)
    model = (model or TinyCLIP.from_stickers(stickers, **sizes)).to(device).train()
    images = stickers.batch(cells, as_torch=True)
    captions = [caption_variants(stickers.names[e], stickers.styles[s]) for s, e in cells]
    tokens = torch.stack([model.tokenize(list(c)).cpu() for c in captions])  # [N, 3, ctx]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    steps_per_epoch = max(1, len(cells) // batch_size)
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.1)
    history: dict[str, list] = {"step": [], "loss": [], "images_per_s": []}
    rng = np.random.default_rng(seed)
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=resolve_bf16(bf16, device))
    bar = tqdm(total=total, desc="train tiny CLIP", disable=not progress)
    step = 0
    for _ in range(epochs):
        perm = rng.permutation(len(cells))
        for k in range(steps_per_epoch):
            t0 = time.perf_counter()
            idx = perm[k * batch_size:(k + 1) * batch_size]
            kind = torch.from_numpy(rng.integers(0, 3, size=len(idx)))
            x = _shift(images[idx], rng).to(device)
            t = tokens[torch.from_numpy(idx), kind].to(device)
            with autocast:
                loss = model(x, t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"tiny CLIP loss became {value} at step {step}; lower the lr")
            history["step"].append(step)
            history["loss"].append(value)
            history["images_per_s"].append(len(idx) / (time.perf_counter() - t0))
            bar.update(1)
            bar.set_postfix(loss=f"{value:.3f}")
    bar.close()
    return model.eval(), history


def _shift(images: torch.Tensor, rng: np.random.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random translation with white fill (stickers sit on white)."""
    dx, dy = rng.integers(-max_shift, max_shift + 1, size=2)
    pad = F.pad(images, (max_shift,) * 4, value=1.0)
    h, w = images.shape[-2:]
    return pad[..., max_shift + dy:max_shift + dy + h, max_shift + dx:max_shift + dx + w]


@torch.no_grad()
def evaluate_tinyclip(model: TinyCLIP, stickers, cells: np.ndarray, batch_size: int = 512) -> dict:
    """Zero-shot accuracy on ``cells``: style (6-way, style captions), emoji top-1 and top-5
    (1,370-way, semantic captions), and the mean CS of matching vs mismatched captions."""
    cells = np.asarray(cells)
    model.eval()
    style_txt = model.encode_text([f"a sticker in {s} style" for s in stickers.styles])
    emoji_txt = torch.cat([model.encode_text([f"a sticker of {n}" for n in stickers.names[i:i + 512]])
                           for i in range(0, stickers.n_emoji, 512)])
    s_ok, e1, e5, match, other = [], [], [], [], []
    for i in range(0, len(cells), batch_size):
        c = cells[i:i + batch_size]
        img = model.encode_image(stickers.batch(c, as_torch=True))
        s_ok.append((img @ style_txt.T).argmax(1).cpu().numpy() == c[:, 0])
        sim = img @ emoji_txt.T
        top5 = sim.topk(5, dim=1).indices.cpu().numpy()
        e1.append(top5[:, 0] == c[:, 1])
        e5.append((top5 == c[:, 1:2]).any(1))
        match.append(100 * sim[torch.arange(len(c)), torch.from_numpy(c[:, 1])].cpu().numpy())
        other.append(100 * sim.mean(1).cpu().numpy())
    return {"style_acc": float(np.concatenate(s_ok).mean()), "emoji_top1": float(np.concatenate(e1).mean()),
            "emoji_top5": float(np.concatenate(e5).mean()), "cs_matching": float(np.concatenate(match).mean()),
            "cs_mean_other": float(np.concatenate(other).mean()), "n_cells": int(len(cells))}


def default_checkpoint_dir() -> Path:
    return shipped_dir("tinyclip")


def load_default(device: str | torch.device = "cpu") -> TinyCLIP:
    """The shipped tiny CLIP (``data/checkpoints/tinyclip``)."""
    return load_shipped(TinyCLIP, default_checkpoint_dir(), "python -m drclib.backbone.tinyclip --out data/checkpoints/tinyclip", device)


def main(argv: list[str] | None = None) -> int:
    """``python -m drclib.backbone.tinyclip``: train, evaluate and save the shipped tiny CLIP."""
    import argparse
    import json
    import platform

    from drclib.data import StickerSet, heldout_cells
    from drclib.runtime import pick_device

    p = argparse.ArgumentParser(prog="python -m drclib.backbone.tinyclip", description="Train the kit's tiny CLIP on "
                                "(sticker, caption) pairs of every cell outside the held-out cells, evaluate "
                                "it zero-shot on training and held-out cells, and save fp16 weights with a "
                                "model card.")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=str(default_checkpoint_dir()))
    args = p.parse_args(argv)
    device = pick_device(args.device)
    stickers = StickerSet.load()
    held = heldout_cells(stickers)
    train_cells, test_cells = np.argwhere(~held), np.argwhere(held)
    t0 = time.perf_counter()
    model, history = train_tinyclip(stickers, train_cells, epochs=args.epochs, batch_size=args.batch_size,
                                    lr=args.lr, seed=args.seed, device=device)
    minutes = (time.perf_counter() - t0) / 60
    model = model.cpu()
    metrics = {"train": evaluate_tinyclip(model, stickers, train_cells),
               "heldout": evaluate_tinyclip(model, stickers, test_cells)}
    command = "python -m drclib.backbone.tinyclip " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
    extra = {"metrics": metrics, "command": command.strip(), "train_minutes": round(minutes, 2),
             "machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores, "
                        f"device {device}", "final_loss": history["loss"][-1]}
    n_params = sum(p.numel() for p in model.parameters())
    card = f"""# Tiny CLIP (drc-kit)

open_clip `CLIP` with a {model.config.vision_layers}-layer ViT (width {model.config.vision_width}, 4x4 patches of
32x32 stickers) and a {model.config.text_layers}-layer text transformer over the kit's word vocabulary
({model.config.vocab_size} tokens); {n_params / 1e6:.2f} M parameters, stored in fp16. Used as the
`{BACKEND_NAME}` backend of CLIP score (CS) and CLIP image score (CIS); it is not ViT-H-14.

- Command: `{command.strip()}`
- Trained in {minutes:.1f} min on {extra['machine']}; final loss {history['loss'][-1]:.3f}.
- Data: data/stickers_32px.npz, the {len(train_cells)} (style, emoji) cells outside the held-out cells,
  each with three caption kinds (emoji and style, emoji only, style only).

| zero-shot | style acc. (6-way) | emoji top-1 (1,370-way) | emoji top-5 | CS matching | CS mean other |
|---|---|---|---|---|---|
| training cells | {metrics['train']['style_acc']:.3f} | {metrics['train']['emoji_top1']:.3f} | {metrics['train']['emoji_top5']:.3f} | {metrics['train']['cs_matching']:.1f} | {metrics['train']['cs_mean_other']:.1f} |
| held-out cells | {metrics['heldout']['style_acc']:.3f} | {metrics['heldout']['emoji_top1']:.3f} | {metrics['heldout']['emoji_top5']:.3f} | {metrics['heldout']['cs_matching']:.1f} | {metrics['heldout']['cs_mean_other']:.1f} |
"""
    model.save_pretrained(args.out, dtype=torch.float16, card=card, extra=extra)
    print(card)
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
