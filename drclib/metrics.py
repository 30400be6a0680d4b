"""Scoring generated stickers: ground-truth classifiers, StyleSim, FID and the paper's backends.

Every image of the sticker set has a ground-truth STYLE (which of the six artists drew it) and
SEMANTICS (which of the 1,370 emoji it shows), so a generated image can be *classified*: two
small CNNs trained by the kit on real stickers say which style and which emoji a generated
image looks like. :func:`classify_rates` turns that into the rates later notebooks report.

What lives here
- :class:`StickerClassifier` (:class:`StickerClassifierConfig`): a small residual CNN for
  32 x 32 RGB, with ``predict`` / ``predict_proba`` / ``topk``, ``features`` (the pooled
  penultimate vector) and ``feature_maps`` (one map a stage, for Gram matrices).
- :func:`train_classifier`: trains one on every (style, emoji) cell outside the held-out cells
  of :func:`drclib.data.heldout_cells`, with augmentation chosen for judging *generated*
  images (small shifts and scaling, light blur, noise and a down/up-sampling that mimic the
  tokenizer's reconstructions; hue/saturation jitter for the emoji classifier only, because
  colour is part of a style).
- :func:`evaluate_classifier`, :func:`classify_rates`: accuracies on given cells / images.
- :func:`gram_matrix`, :func:`style_sim`, :func:`style_sim_to_history`: the paper's StyleSim
  (lower is better), a Gram-matrix distance of the style classifier's feature maps.
- :func:`frechet_distance`, :func:`fid`: Frechet distance of feature sets; ``fid`` uses a kit
  classifier's ``features``. The paper's FID uses InceptionV3 pool3 features on thousands of
  images; FID is biased upwards on small sets (a few hundred images give noticeably larger
  values than the population value, and the bias depends on the set size and the feature
  dimension), so only compare FIDs computed on sets of the same size with the same features.
- Pretrained backends of the paper (open_clip ViT-H-14 laion2b_s32b_b79k for CLIP scores,
  DINOv2-large for the DINO score, LPIPS with its VGG backbone, InceptionV3 for FID): loaders
  that only look at weights already on disk and never download, returning ``(scorer, None)``
  or ``(None, reason)``; :func:`available_backends` reports them all. A metrics table names the
  backend behind each column (:func:`metric_columns`), and a column whose weights are absent
  is reported as unavailable, never computed from random weights.
- :func:`default_checkpoint_dir`, :func:`load_default`: the shipped evaluators in
  ``data/checkpoints/{style_classifier,emoji_classifier}``, and a command line that trains
  them: ``python -m drclib.metrics train --target style|emoji --epochs N --out DIR``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import glob
import json
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from drclib.checkpoint import CheckpointError, Pretrained, load_shipped, shipped_dir

TARGETS = ("style", "emoji")
DEFAULT_NAMES = ("style_classifier", "emoji_classifier")


# =============================================================================== input checks
def check_images(images: torch.Tensor, image_size: int | None = None, name: str = "images") -> torch.Tensor:
    """Check a float image batch ``[B, 3, H, W]`` in [0, 1] (a single ``[3, H, W]`` image is
    given a batch axis); raises ``ValueError`` saying what is wrong and how to fix it."""
    if not isinstance(images, torch.Tensor):
        if isinstance(images, np.ndarray):
            raise ValueError(f"{name} is a numpy array; convert uint8 [..., H, W, 3] images with "
                             "drclib.data.to_tensor(images) first")
        raise ValueError(f"{name} must be a torch tensor [B, 3, H, W] in [0, 1], got {type(images).__name__}")
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4 or images.shape[1] != 3:
        hint = " (channels last? use x.permute(0, 3, 1, 2))" if images.ndim == 4 and images.shape[-1] == 3 else ""
        raise ValueError(f"{name} must be shaped [B, 3, H, W], got {tuple(images.shape)}{hint}")
    if image_size is not None and tuple(images.shape[-2:]) != (image_size, image_size):
        raise ValueError(f"{name} must be {image_size} x {image_size} pixels, got "
                         f"{tuple(images.shape[-2:])}; resize with torch.nn.functional.interpolate "
                         f"(size={image_size}, mode='bilinear', antialias=True)")
    if not images.is_floating_point():
        raise ValueError(f"{name} must be float in [0, 1], got {images.dtype}; divide uint8 images by 255 "
                         "(drclib.data.to_tensor does it)")
    if images.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch")
    if not torch.isfinite(images).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        hint = " (looks like [-1, 1]: use (x + 1) / 2)" if lo >= -1.001 and hi <= 1.001 else \
            " (looks like 0..255: divide by 255)" if hi > 1.5 else ""
        raise ValueError(f"{name} must be in [0, 1], got values in [{lo:.3g}, {hi:.3g}]{hint}")
    return images


# =============================================================================== the classifier
@dataclasses.dataclass(frozen=True)
class StickerClassifierConfig:
    """A :class:`StickerClassifier`'s shape.

    ``widths``: channels of each stage (stage 0 at full resolution, then each stage halves the
    resolution); ``blocks``: residual blocks per stage; ``norm``: ``"batch"`` or ``"group"``.
    """

    num_classes: int = 6
    target: str = "style"
    widths: tuple = (32, 64, 128, 256)
    blocks: int = 1
    norm: str = "batch"
    dropout: float = 0.1
    image_size: int = 32

    def __post_init__(self):
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if self.norm not in ("batch", "group"):
            raise ValueError(f"norm must be 'batch' or 'group', got {self.norm!r}")
        if not self.widths or any(int(w) < 1 for w in self.widths):
            raise ValueError(f"widths must be positive channel counts, got {self.widths}")
        if self.blocks < 1:
            raise ValueError(f"blocks must be >= 1, got {self.blocks}")
        if self.norm == "group" and any(int(w) % 8 for w in self.widths):
            raise ValueError("with norm='group' every width must be a multiple of 8")


def _norm(kind: str, ch: int) -> nn.Module:
    return nn.BatchNorm2d(ch) if kind == "batch" else nn.GroupNorm(8, ch)


class _Block(nn.Module):
    """Residual block: conv3x3-norm-ReLU-conv3x3-norm, plus a (projected) shortcut, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.n1 = _norm(norm, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.n2 = _norm(norm, cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _norm(norm, cout))

    def forward(self, x):
        y = F.relu(self.n1(self.conv1(x)))
        y = self.n2(self.conv2(y))
        return F.relu(y + (x if self.short is None else self.short(x)))


class StickerClassifier(Pretrained):
    """A small residual CNN that says which style (6-way) or which emoji (1,370-way) a 32 x 32
    sticker shows. Inputs are float ``[B, 3, 32, 32]`` in [0, 1] (white background); the model
    normalises internally. ``feature_maps`` gives one map a stage (for Gram matrices,
    :func:`style_sim`); ``features`` the pooled penultimate vector (for :func:`fid`)."""

    config_class = StickerClassifierConfig

    def __init__(self, config: StickerClassifierConfig | None = None, **kwargs):
        super().__init__()
        config = config or StickerClassifierConfig(**kwargs)
        self.config = config
        widths = [int(w) for w in config.widths]
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False),
                                  _norm(config.norm, widths[0]), nn.ReLU())
        stages, cin = [], widths[0]
        for i, w in enumerate(widths):
            layers = [_Block(cin, w, 1 if i == 0 else 2, config.norm)]
            layers += [_Block(w, w, 1, config.norm) for _ in range(config.blocks - 1)]
            stages.append(nn.Sequential(*layers))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(widths[-1], config.num_classes)
        self.training_info: dict = {}

    @property
    def feature_dim(self) -> int:
        return int(self.config.widths[-1])

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        x = check_images(x, self.config.image_size)
        p = next(self.parameters())
        return x.to(device=p.device, dtype=p.dtype)

    def _maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.stem((x - 0.5) / 0.25)
        maps = []
        for stage in self.stages:
            h = stage(h)
            maps.append(h)
        return maps

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of every stage: ``[B, widths[i], 32 / 2**i, 32 / 2**i]`` for each i."""
        return self._maps(self._check(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate vector ``[B, widths[-1]]`` (global average pool of the last stage)."""
        return self._maps(self._check(x))[-1].mean(dim=(2, 3))

    def forward(self, x: torch.Tensor, *, checked: bool = False) -> torch.Tensor:
        """Logits ``[B, num_classes]``. ``checked=True`` skips the input checks (training loop)."""
        if not checked:
            x = self._check(x)
        h = self._maps(x)[-1].mean(dim=(2, 3))
        return self.head(self.dropout(h))

    @property
    def classes(self) -> np.ndarray:
        """For an emoji classifier: the index in the whole sticker array of each class
        (``arange(num_classes)`` for one trained on every emoji)."""
        info = getattr(self, "training_info", None) or {}
        return np.asarray(info.get("classes", np.arange(self.config.num_classes)), dtype=np.int64)

    def restricted(self, concepts) -> "StickerClassifier":
        """A copy that chooses only among ``concepts`` (emoji indices into the whole sticker
        array, e.g. ``StickerSet.concepts``), its classes numbered 0..K-1 in that order: the
        judge's argmax over a concept set. A style classifier is returned as it is."""
        if self.config.target != "emoji":
            return self
        concepts = np.asarray(concepts, dtype=np.int64)
        where = {int(c): i for i, c in enumerate(self.classes)}
        missing = [int(c) for c in concepts if int(c) not in where]
        if missing:
            raise ValueError(f"this emoji classifier does not know emoji {missing[:5]} (it was trained on "
                             f"{len(where)} emoji); train one on this concept set")
        rows = torch.tensor([where[int(c)] for c in concepts])
        if len(rows) == self.config.num_classes and (rows == torch.arange(len(rows))).all():
            return self
        import copy

        out = copy.deepcopy(self)
        out.config = dataclasses.replace(self.config, num_classes=len(rows))
        head = nn.Linear(self.head.in_features, len(rows)).to(self.head.weight.device, self.head.weight.dtype)
        with torch.no_grad():
            head.weight.copy_(self.head.weight[rows])
            head.bias.copy_(self.head.bias[rows])
        out.head = head
        out.training_info = dict(getattr(self, "training_info", {}) or {}) | {"classes": concepts.tolist()}
        return out

    @torch.no_grad()
    def _batched_logits(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        images = check_images(images, self.config.image_size)
        was = self.training
        self.eval()
        try:
            out = [self(images[i:i + batch_size]).float().cpu() for i in range(0, len(images), batch_size)]
        finally:
            self.train(was)
        return torch.cat(out)

    def predict_proba(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Class probabilities ``[B, num_classes]`` (eval mode, no gradient, on the CPU)."""
        return self._batched_logits(images, batch_size).softmax(-1)

    def predict(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Predicted class ``LongTensor [B]``."""
        return self._batched_logits(images, batch_size).argmax(-1)

    def topk(self, images: torch.Tensor, k: int = 5, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
        """``(probabilities [B, k], classes [B, k])``, most likely first."""
        if not 1 <= k <= self.config.num_classes:
            raise ValueError(f"k must be in 1..{self.config.num_classes}, got {k}")
        return self.predict_proba(images, batch_size).topk(k, dim=-1)


# =============================================================================== augmentation
def _blur3(x: torch.Tensor, sigma: float = 0.8) -> torch.Tensor:
    k1 = torch.exp(-torch.tensor([1.0, 0.0, 1.0]) / (2 * sigma * sigma))
    k1 = (k1 / k1.sum()).to(x)
    k = (k1[:, None] * k1[None, :]).expand(3, 1, 3, 3).contiguous()
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=3)


def augment(x: torch.Tensor, generator: torch.Generator, *, colour: bool, strength: float = 1.0) -> torch.Tensor:
    """Random augmentation of a batch ``[B, 3, H, W]`` in [0, 1] (white background), for
    judging generated stickers rather than memorising the shipped pixels:

    - geometry: shifts up to +-2 px (at 32 px), scale 0.9-1.1, rotation up to +-6 degrees;
      no flips (left- and right-pointing emoji are different emoji); the border fills white;
    - reconstruction artefacts: a blend with a blurred copy, with a down/up-sampled copy
      (the tokenizer's 4x downsampling loses detail this way), and Gaussian noise;
    - colour (``colour=True``, the emoji classifier only): hue rotation up to +-25 degrees,
      saturation and brightness/contrast jitter. The style classifier gets none of it:
      palette and shading are part of an artist's style.
    """
    b, _, h, w = x.shape
    dev = x.device

    def u(lo, hi, n=b):
        return (torch.rand(n, generator=generator) * (hi - lo) + lo).to(dev)

    s = strength
    scale = u(1 - 0.1 * s, 1 + 0.1 * s)
    ang = u(-6 * s, 6 * s) * math.pi / 180
    tx, ty = u(-2 * s, 2 * s) * 2 / w, u(-2 * s, 2 * s) * 2 / h
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = 1 - F.grid_sample(1 - x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # reconstruction-like degradations, each on a random part of the batch, blended
    a = u(0, 1) * (u(0, 1) < 0.4 * s)
    x = torch.lerp(x, _blur3(x), a.view(b, 1, 1, 1))
    a = u(0, 1) * (u(0, 1) < 0.3 * s)
    lowres = F.interpolate(F.interpolate(x, scale_factor=0.5, mode="bilinear", antialias=True),
                           size=(h, w), mode="bilinear", align_corners=False)
    x = torch.lerp(x, lowres, a.view(b, 1, 1, 1))
    if colour:
        # hue rotation about the grey axis (an orthogonal map of RGB space), then saturation
        hue = u(-25 * s, 25 * s) * math.pi / 180
        c, sn = torch.cos(hue), torch.sin(hue)
        k = 1 / 3
        r3 = math.sqrt(k)
        m = torch.empty(b, 3, 3, device=dev)
        m[:, 0, 0] = c + (1 - c) * k
        m[:, 0, 1] = k * (1 - c) - r3 * sn
        m[:, 0, 2] = k * (1 - c) + r3 * sn
        m[:, 1, 0] = k * (1 - c) + r3 * sn
        m[:, 1, 1] = c + k * (1 - c)
        m[:, 1, 2] = k * (1 - c) - r3 * sn
        m[:, 2, 0] = k * (1 - c) - r3 * sn
        m[:, 2, 1] = k * (1 - c) + r3 * sn
        m[:, 2, 2] = c + k * (1 - c)
        x = torch.einsum("bij,bjhw->bihw", m, x)
        grey = x.mean(1, keepdim=True)
        x = grey + (x - grey) * u(1 - 0.3 * s, 1 + 0.2 * s).view(b, 1, 1, 1)
        x = (x - 1) * u(1 - 0.15 * s, 1 + 0.15 * s).view(b, 1, 1, 1) + 1  # contrast about white
    noise = u(0, 0.03 * s) * (u(0, 1) < 0.5 * s)
    x = x + noise.view(b, 1, 1, 1) * torch.randn(x.shape, generator=generator).to(dev)
    return x.clamp_(0, 1)


# =============================================================================== training
def _cells_where(mask: np.ndarray) -> np.ndarray:
    return np.argwhere(mask).astype(np.int64)


def default_config(target: str, num_classes: int) -> StickerClassifierConfig:
    """The shipped evaluators' shapes: a narrow net for style, a wider one for the 1,370 emoji."""
    if target == "style":
        return StickerClassifierConfig(num_classes=num_classes, target="style", widths=(32, 64, 128, 256),
                                       dropout=0.1)
    return StickerClassifierConfig(num_classes=num_classes, target="emoji", widths=(32, 64, 128, 256),
                                   dropout=0.2)


def _bf16_fast(device: torch.device) -> bool:
    from .runtime import bf16_fast
    return bf16_fast(device)


def train_classifier(stickers, target: str, *, epochs: int = 10, batch_size: int = 128, lr: float = 3e-3,
                     seed: int = 0, device: str | torch.device = "auto", progress: bool = True,
                     exclude: np.ndarray | None = None, config: StickerClassifierConfig | None = None,
                     label_smoothing: float = 0.1, weight_decay: float = 5e-4,
                     max_steps: int | None = None, bf16: bool | None = None,
                     augment_strength: float = 1.0, reconstructor: Callable | None = None,
                     reconstruct_prob: float = 0.5) -> tuple[StickerClassifier, dict[str, list]]:
    """Train a :class:`StickerClassifier` on every (style, emoji) cell outside ``exclude``
    (default: :func:`drclib.data.heldout_cells`, the cells no training may use).

    ``target`` is ``"style"`` (6 classes) or ``"emoji"`` (1,370). AdamW with a one-cycle
    learning rate, label smoothing, augmentation by :func:`augment` (colour jitter for the
    emoji target only). ``max_steps`` stops early (tests). ``bf16`` uses bfloat16 autocast;
    ``None`` = on CUDA, and on CPUs with native bfloat16 (AVX512-BF16 / AMX:
    1.5-2x faster per step on this project's 2-core machine, with channels-last memory). Seeded: the same seed gives the same model on a CPU.
    Returns ``(model in eval mode, history)`` with per-step ``loss`` and ``lr``, per-epoch
    ``epoch_loss``, ``epoch_acc`` (training batches, augmented) and ``epoch_time_s``.

    ``reconstructor`` (e.g. the visual tokenizer's ``reconstruct``) maps images ``[B, 3, 32, 32]``
    to their round trip through a generator's decoder; each training image is then replaced
    by its reconstruction with probability ``reconstruct_prob``. A judge of *generated*
    stickers must recognise decoder output: without this, the style classifier calls many
    tokenizer reconstructions by the wrong style.
    """
    from tqdm.auto import tqdm

    from drclib.data.users import heldout_cells
    from drclib.runtime import pick_device

    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError("epochs and batch_size must be >= 1 and lr > 0")
    device = pick_device(device)
    n_styles, n_emoji = stickers.shape
    if exclude is None:
        exclude = heldout_cells((n_styles, n_emoji))
    exclude = np.asarray(exclude, dtype=bool)
    if exclude.shape != (n_styles, n_emoji):
        raise ValueError(f"exclude must be a bool mask shaped {(n_styles, n_emoji)}, got {exclude.shape}")
    cells = _cells_where(~exclude)
    if len(cells) == 0:
        raise ValueError("exclude leaves no cell to train on")
    num_classes = n_styles if target == "style" else n_emoji
    config = config or default_config(target, num_classes)
    if config.target != target or config.num_classes != num_classes:
        raise ValueError(f"config is for {config.target} with {config.num_classes} classes, but training "
                         f"{target} with {num_classes}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = StickerClassifier(config).to(device)
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    images = stickers.batch(cells, as_torch=True)  # [N, 3, 32, 32], training cells only
    recon = None
    if reconstructor is not None:
        if not 0 <= reconstruct_prob <= 1:
            raise ValueError(f"reconstruct_prob must be in [0, 1], got {reconstruct_prob}")
        with torch.no_grad():
            recon = torch.cat([reconstructor(images[i:i + 256]).float().cpu().clamp(0, 1)
                               for i in range(0, len(images), 256)])
        if recon.shape != images.shape:
            raise ValueError(f"reconstructor returned {tuple(recon.shape)} for {tuple(images.shape)}")
    labels = torch.from_numpy(cells[:, 0] if target == "style" else cells[:, 1]).long()
    n = len(cells)
    steps_per_epoch = max(1, math.ceil(n / batch_size))
    total = epochs * steps_per_epoch if max_steps is None else min(max_steps, epochs * steps_per_epoch)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.15)
    use_bf16 = _bf16_fast(device) if bf16 is None else bool(bf16)
    history: dict[str, list] = {"loss": [], "lr": [], "epoch_loss": [], "epoch_acc": [], "epoch_time_s": []}
    model.train()
    step = 0
    bar = tqdm(total=total, desc=f"train {target} classifier", disable=not progress, leave=False)
    try:
        for epoch in range(epochs):
            t0 = time.perf_counter()
            perm = torch.randperm(n, generator=gen)
            tot_loss = tot_correct = seen = 0.0
            for i in range(0, n, batch_size):
                if step >= total:
                    break
                idx = perm[i:i + batch_size]
                x = images[idx]
                if recon is not None:
                    swap = torch.rand(len(idx), generator=gen) < reconstruct_prob
                    x = torch.where(swap.view(-1, 1, 1, 1), recon[idx], x)
                x = augment(x.to(device), gen, colour=(target == "emoji"), strength=augment_strength)
                if device.type == "cpu":
                    x = x.contiguous(memory_format=torch.channels_last)
                y = labels[idx].to(device)
                ctx = torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()
                with ctx:
                    logits = model(x, checked=True)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                lv = float(loss.detach())
                history["loss"].append(lv)
                history["lr"].append(float(opt.param_groups[0]["lr"]))
                tot_loss += lv * len(idx)
                tot_correct += float((logits.detach().argmax(-1) == y).sum())
                seen += len(idx)
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{lv:.3f}")
            if seen:
                history["epoch_loss"].append(tot_loss / seen)
                history["epoch_acc"].append(tot_correct / seen)
                history["epoch_time_s"].append(time.perf_counter() - t0)
            if step >= total:
                break
    finally:
        bar.close()
    model = model.to(memory_format=torch.contiguous_format).eval()
    model.training_info = {"train_cells": int(n), "steps": step}
    return model, history


# =============================================================================== evaluation
def _rates(style_pred, emoji_top, style_labels, emoji_labels) -> dict[str, float]:
    out = {}
    if style_pred is not None:
        s_ok = style_pred == style_labels
        out["style_acc"] = float(s_ok.float().mean())
    if emoji_top is not None:
        e1 = emoji_top[:, 0] == emoji_labels
        out["emoji_top1"] = float(e1.float().mean())
        out["emoji_top5"] = float((emoji_top[:, :5] == emoji_labels[:, None]).any(1).float().mean())
    if style_pred is not None and emoji_top is not None:
        out["both"] = float((s_ok & e1).float().mean())
    return out


def classify_rates(style_model: StickerClassifier | None, emoji_model: StickerClassifier | None,
                   images: torch.Tensor, style_labels, emoji_labels) -> dict[str, float]:
    """Score images against their intended style and emoji: ``style_acc`` (style classifier
    agrees), ``emoji_top1`` / ``emoji_top5`` (the emoji is the top / in the top 5 of the emoji
    classifier) and ``both`` (style right AND emoji top-1 right), each a fraction in [0, 1],
    plus ``n``. Either model may be ``None`` (its rates are then left out)."""
    images = check_images(images, 32)
    n = len(images)
    sl = torch.as_tensor(np.asarray(style_labels), dtype=torch.long).reshape(-1) if style_model is not None else None
    el = torch.as_tensor(np.asarray(emoji_labels), dtype=torch.long).reshape(-1) if emoji_model is not None else None
    for lab, name in ((sl, "style_labels"), (el, "emoji_labels")):
        if lab is not None and len(lab) != n:
            raise ValueError(f"{name} has {len(lab)} entries for {n} images")
    style_pred = style_model.predict(images) if style_model is not None else None
    emoji_top = None
    if emoji_model is not None:
        k = min(5, emoji_model.config.num_classes)
        emoji_top = emoji_model.topk(images, k)[1]
    out = _rates(style_pred, emoji_top, sl, el)
    out["n"] = n
    return out


def personalization_rates(style_model: StickerClassifier, emoji_model: StickerClassifier, images: torch.Tensor,
                          targets: np.ndarray, references: np.ndarray, histories: np.ndarray) -> dict[str, float]:
    """Ground-truth scores of personalized outputs, one row per sample:

    - ``style_acc``: the output is in the target's style (the user's preferred style);
    - ``emoji_top1`` / ``emoji_top5``: the output shows the target's emoji (the reference's);
    - ``both``: style right and emoji top-1 right;
    - ``collapse_reference``: the output took the reference's style (copying the reference);
    - ``collapse_history``: the output's emoji (top-1) is one of the history's emoji (copying the history).

    ``targets`` and ``references`` are (style, emoji) cells ``[B, 2]``, ``histories`` ``[B, N, 2]``
    (rows with style -1 are padding)."""
    images = check_images(images, 32)
    targets, references, histories = (np.asarray(a) for a in (targets, references, histories))
    if not len(images) == len(targets) == len(references) == len(histories):
        raise ValueError(f"images, targets, references and histories must have one row per sample, got "
                         f"{len(images)}, {len(targets)}, {len(references)}, {len(histories)}")
    style_pred = style_model.predict(images)
    emoji_top = emoji_model.topk(images, min(5, emoji_model.config.num_classes))[1]
    out = _rates(style_pred, emoji_top, torch.from_numpy(targets[:, 0]), torch.from_numpy(targets[:, 1]))
    out["collapse_reference"] = float((style_pred == torch.from_numpy(references[:, 0])).float().mean())
    hist_e = torch.from_numpy(np.where(histories[..., 0] >= 0, histories[..., 1], -1))
    out["collapse_history"] = float((emoji_top[:, :1] == hist_e).any(1).float().mean())
    out["n"] = int(len(images))
    return out


def evaluate_classifier(model: StickerClassifier, stickers, cells: np.ndarray) -> dict[str, float]:
    """Accuracy of one classifier on (style, emoji) cells ``[N, 2]``: ``acc`` (top-1) and,
    for the emoji target, ``top5``; plus ``n``."""
    cells = np.asarray(cells, dtype=np.int64)
    images = stickers.batch(cells, as_torch=True)
    labels = torch.from_numpy(cells[:, 0] if model.config.target == "style" else cells[:, 1])
    k = min(5, model.config.num_classes)
    top = model.topk(images, k)[1]
    out = {"acc": float((top[:, 0] == labels).float().mean()), "n": int(len(cells))}
    if model.config.target == "emoji":
        out["top5"] = float((top == labels[:, None]).any(1).float().mean())
    return out


# =============================================================================== StyleSim
def gram_matrix(fmap: torch.Tensor) -> torch.Tensor:
    """Gram matrix of feature maps ``[B, C, H, W]`` -> ``[B, C, C]``, normalised by ``C*H*W``."""
    b, c, h, w = fmap.shape
    f = fmap.reshape(b, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


STYLE_LAYERS = (-1,)
"""Stages of the style classifier whose Gram matrices StyleSim compares: the deepest (for the
shipped classifier, stage 3: 4x4 maps of 256 channels). Measured with the shipped style classifier on 300 random anchors (seed 0),
how often an image of the *same style, other emoji* is nearer than one of the *same emoji,
other style* (higher is better): stage 0 alone 51%, 1: 60%, 2: 71%, 3: 85%, stages (0, 1, 2)
summed 54%. At 32 px, the Gram statistics of shallow layers mostly track what is drawn; the
deepest stage of a network trained to tell styles apart tracks the style."""

STYLE_SIM_SCALE = 1e6
"""StyleSim is reported x1e6 so typical values are of order 1-10 (the paper's are 6-14;
different features, so only the direction "lower is better" carries over)."""


def style_grams(model: StickerClassifier, images: torch.Tensor, layers: Sequence[int] | None = None,
                batch_size: int = 512) -> list[torch.Tensor]:
    """The Gram matrices StyleSim compares, one ``[B, C, C]`` tensor per layer (default
    :data:`STYLE_LAYERS`), so a fixed set of images (a history) is encoded once."""
    images = check_images(images, model.config.image_size)
    if layers is None:
        layers = tuple(i for i in STYLE_LAYERS if -len(model.stages) <= i < len(model.stages))
    was = model.training
    model.eval()
    out = [[] for _ in layers]
    try:
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                maps = model.feature_maps(images[i:i + batch_size])
                for j, layer in enumerate(layers):
                    out[j].append(gram_matrix(maps[layer].float()).cpu())
    finally:
        model.train(was)
    return [torch.cat(g) for g in out]


def style_sim_from_grams(grams_a: list[torch.Tensor], grams_b: list[torch.Tensor]) -> torch.Tensor:
    """StyleSim ``[B]`` from Gram matrices made by :func:`style_grams` (pairs row by row)."""
    total = 0
    for ga, gb in zip(grams_a, grams_b):
        total = total + (ga - gb).pow(2).mean(dim=(1, 2))
    return total * STYLE_SIM_SCALE


def style_sim(model: StickerClassifier, images_a: torch.Tensor, images_b: torch.Tensor,
              layers: Sequence[int] | None = None) -> torch.Tensor:
    """StyleSim (lower is better): for each pair, the squared Frobenius distance of the Gram
    matrices of the style classifier's feature maps, averaged over entries, summed over
    ``layers`` (default :data:`STYLE_LAYERS`, those the model has) and scaled by
    :data:`STYLE_SIM_SCALE`. ``[B]`` for two batches of B images
    (a single ``[3, H, W]`` image in either is broadcast). 0 for identical images."""
    a = check_images(images_a, model.config.image_size, "images_a")
    b = check_images(images_b, model.config.image_size, "images_b")
    if len(a) != len(b) and 1 not in (len(a), len(b)):
        raise ValueError(f"images_a and images_b must have the same batch size (or one of them 1), "
                         f"got {len(a)} and {len(b)}")
    if layers is None:
        layers = tuple(i for i in STYLE_LAYERS if -len(model.stages) <= i < len(model.stages))
    bad = [i for i in layers if not -len(model.stages) <= i < len(model.stages)]
    if bad:
        raise ValueError(f"layers {bad} out of range: the model has {len(model.stages)} stages")
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            ma, mb = model.feature_maps(a), model.feature_maps(b)
    finally:
        model.train(was)
    total = 0
    for i in layers:
        ga, gb = gram_matrix(ma[i].float()), gram_matrix(mb[i].float())
        total = total + (ga - gb).pow(2).mean(dim=(1, 2))
    return (total * STYLE_SIM_SCALE).cpu()


def style_sim_to_history(model: StickerClassifier, images: torch.Tensor, history: torch.Tensor,
                         layers: Sequence[int] | None = None) -> torch.Tensor:
    """StyleSim of each image against a history, averaged over the history images (the
    paper's style alignment is measured against the user's history).

    ``images [B, 3, H, W]`` with ``history [N, 3, H, W]`` (one history shared by all) or
    ``[B, N, 3, H, W]`` (one history per image). Returns ``[B]``."""
    images = check_images(images, model.config.image_size)
    if not isinstance(history, torch.Tensor) or history.ndim not in (4, 5):
        raise ValueError("history must be a tensor [N, 3, H, W] or [B, N, 3, H, W]")
    if history.ndim == 4:
        history = history.unsqueeze(0).expand(len(images), *history.shape)
    if len(history) != len(images):
        raise ValueError(f"history has {len(history)} rows for {len(images)} images")
    b, n = history.shape[:2]
    rep = images.unsqueeze(1).expand(b, n, *images.shape[1:]).reshape(b * n, *images.shape[1:])
    d = style_sim(model, rep, history.reshape(b * n, *history.shape[2:]), layers)
    return d.view(b, n).mean(1)


# =============================================================================== FID
def _sqrtm_trace_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """tr(sqrtm(s1 @ s2)) for symmetric PSD s1, s2, computed stably as
    tr(sqrtm(A s2 A)) with A = sqrtm(s1) (a symmetric PSD product, so eigh applies)."""
    w1, v1 = np.linalg.eigh(s1)
    a = (v1 * np.sqrt(np.clip(w1, 0, None))) @ v1.T
    m = a @ s2 @ a
    w = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(w, 0, None)).sum())


def frechet_distance(feats_a, feats_b, *, eps: float = 1e-6) -> float:
    """Frechet distance between Gaussians fitted to two feature sets ``[N, D]``, ``[M, D]``:
    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 sqrtm(S_a S_b))`` (float64).

    The matrix square root uses ``scipy.linalg.sqrtm`` when scipy is present (with ``eps`` on
    the diagonals if the product is near singular, as few samples in many dimensions give),
    otherwise a symmetric eigen-decomposition. Each set needs at least 2 rows. Small sets
    bias the value upwards; compare only FIDs on sets of equal size and features.
    """
    a = np.asarray(feats_a.detach().cpu().double() if isinstance(feats_a, torch.Tensor) else feats_a, np.float64)
    b = np.asarray(feats_b.detach().cpu().double() if isinstance(feats_b, torch.Tensor) else feats_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets must be [N, D] and [M, D] with the same D, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("each feature set needs at least 2 rows to estimate a covariance")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("feature sets contain NaN or infinite values")
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    diff = mu1 - mu2
    try:
        from scipy import linalg

        covmean = linalg.sqrtm(s1 @ s2)
        if isinstance(covmean, tuple):  # older scipy returned (sqrtm, errest) with disp=False
            covmean = covmean[0]
        if not np.isfinite(covmean).all():
            off = np.eye(len(s1)) * eps
            covmean = linalg.sqrtm((s1 + off) @ (s2 + off))
        if np.iscomplexobj(covmean):
            if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3 * max(1.0, np.abs(covmean).max())):
                # fall back on the eigen-decomposition route when sqrtm is unreliable
                tr = _sqrtm_trace_product(s1, s2)
            else:
                tr = float(np.trace(covmean.real))
        else:
            tr = float(np.trace(covmean))
    except ImportError:
        tr = _sqrtm_trace_product(s1, s2)
    d = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr)
    return max(d, 0.0)


@torch.no_grad()
def extract_features(model: StickerClassifier, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """``model.features`` over a batch, in eval mode, in chunks: ``[B, feature_dim]`` on the CPU."""
    images = check_images(images, model.config.image_size)
    was = model.training
    model.eval()
    try:
        return torch.cat([model.features(images[i:i + batch_size]).float().cpu()
                          for i in range(0, len(images), batch_size)])
    finally:
        model.train(was)


def fid(model: StickerClassifier, images_a: torch.Tensor, images_b: torch.Tensor) -> float:
    """FID on the kit encoder's features: :func:`frechet_distance` of ``model.features`` of
    two image sets (e.g. generated vs. real). Not comparable with InceptionV3 FIDs (the paper's);
    biased upwards on small sets, so compare only sets of equal size."""
    return frechet_distance(extract_features(model, images_a), extract_features(model, images_b))


# =============================================================================== pretrained backends
def torch_hub_dir() -> Path:
    """torch's hub folder: ``$TORCH_HOME/hub``, else ``$XDG_CACHE_HOME/torch/hub``, else
    ``~/.cache/torch/hub`` (pretrained torchvision weights sit in its ``checkpoints/``)."""
    if os.environ.get("TORCH_HOME"):
        return Path(os.environ["TORCH_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "torch" / "hub"


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
    ``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def _hf_snapshot_files(repo_id: str, names: Sequence[str]) -> list[Path]:
    """Files called one of ``names`` in any snapshot of ``repo_id`` in the HF cache (real files only)."""
    folder = hf_hub_cache() / ("models--" + repo_id.strip("/").replace("/", "--")) / "snapshots"
    found = []
    for name in names:
        for p in sorted(glob.glob(str(folder / "*" / name))):
            if Path(p).is_file() and Path(p).stat().st_size > 0:
                found.append(Path(p))
    return found


@contextlib.contextmanager
def _offline():
    """Make the Hugging Face libraries refuse network access for the duration."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _resize_norm(images: torch.Tensor, size: int, mean, std) -> torch.Tensor:
    x = F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


@dataclasses.dataclass
class BackendInfo:
    """Which pretrained weights a metric column uses, and where they were found."""

    name: str
    description: str
    path: str | None = None


class ClipScorer:
    """open_clip CLIP: ``image_embeddings``, ``text_embeddings``; ``clip_score`` (CS: 100 x cosine
    of image and text) and ``clip_image_score`` (CIS: 100 x cosine of two images)."""

    def __init__(self, model, tokenizer, mean, std, size: int, info: BackendInfo, device="cpu"):
        self.model, self.tokenizer = model.eval().to(device), tokenizer
        self.mean, self.std, self.size, self.info, self.device = mean, std, size, info, device

    @torch.no_grad()
    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        x = _resize_norm(check_images(images).to(self.device), self.size, self.mean, self.std)
        return F.normalize(self.model.encode_image(x).float(), dim=-1)

    @torch.no_grad()
    def text_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        return F.normalize(self.model.encode_text(self.tokenizer(list(texts)).to(self.device)).float(), dim=-1)

    def clip_score(self, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        return 100 * (self.image_embeddings(images) * self.text_embeddings(texts)).sum(-1).cpu()

    def clip_image_score(self, images_a: torch.Tensor, images_b: torch.Tensor) -> torch.Tensor:
        return 100 * (self.image_embeddings(images_a) * self.image_embeddings(images_b)).sum(-1).cpu()


class DinoScorer:
    """DINOv2 (transformers): DIS = 100 x cosine of the pooler outputs of two images."""

    def __init__(self, model, info: BackendInfo, size: int = 224, device="cpu"):
        self.model, self.info, self.size, self.device = model.eval().to(device), info, size, device

    @torch.no_grad()
    def embeddings(self, images: torch.Tensor) -> torch.Tensor:
        x = _resize_norm(check_images(images).to(self.device), self.size,
                         (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        return F.normalize(self.model(pixel_values=x).pooler_output.float(), dim=-1)

    def dino_image_score(self, images_a: torch.Tensor, images_b: torch.Tensor) -> torch.Tensor:
        return 100 * (self.embeddings(images_a) * self.embeddings(images_b)).sum(-1).cpu()


class LpipsScorer:
    """LPIPS (lower is better) with its VGG backbone; images are upsampled to ``size`` first."""

    def __init__(self, model, info: BackendInfo, size: int = 64, device="cpu"):
        self.model, self.info, self.size, self.device = model.eval().to(device), info, size, device

    @torch.no_grad()
    def __call__(self, images_a: torch.Tensor, images_b: torch.Tensor) -> torch.Tensor:
        def prep(x):
            x = check_images(x).to(self.device)
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
            return x * 2 - 1

        return self.model(prep(images_a), prep(images_b)).flatten().cpu()


class InceptionFeatures:
    """torchvision InceptionV3, pool3 (2048-d) features for FID; images are resized to 299 px.
    (torchvision's ImageNet weights, not the TF weights of the original FID code, so values
    are close to but not identical with pytorch-fid's.)"""

    def __init__(self, model, info: BackendInfo, device="cpu"):
        model.fc = nn.Identity()
        self.model, self.info, self.device = model.eval().to(device), info, device

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        images = check_images(images)
        out = []
        for i in range(0, len(images), batch_size):
            x = _resize_norm(images[i:i + batch_size].to(self.device), 299,
                             (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
            out.append(self.model(x).float().cpu())
        return torch.cat(out)

    def fid(self, images_a: torch.Tensor, images_b: torch.Tensor) -> float:
        return frechet_distance(self(images_a), self(images_b))


CLIP_MODEL, CLIP_PRETRAINED = "ViT-H-14", "laion2b_s32b_b79k"
CLIP_HF_REPO = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
DINO_REPO = "facebook/dinov2-large"
VGG16_FILE = "vgg16-397923af.pth"
INCEPTION_FILE = "inception_v3_google-0cc3c7bd.pth"
_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def find_clip_weights(model_name: str = CLIP_MODEL, pretrained: str = CLIP_PRETRAINED,
                      hf_repo: str | None = None) -> tuple[Path | None, str]:
    """Look for open_clip weights on disk: the HF cache snapshot of ``hf_repo`` (open_clip
    downloads ViT-H-14 laion2b from the hub) or open_clip's URL cache ``~/.cache/clip``.
    Returns ``(path, "")`` or ``(None, reason)``."""
    explicit = hf_repo is not None
    hf_repo = hf_repo or CLIP_HF_REPO
    if not explicit and (model_name, pretrained) != (CLIP_MODEL, CLIP_PRETRAINED):
        try:  # open_clip's table of pretrained tags (importing it takes seconds, so only if needed)
            import open_clip

            cfg = open_clip.get_pretrained_cfg(model_name, pretrained) or {}
            hf_repo = (cfg.get("hf_hub") or hf_repo).strip("/")
        except Exception:  # noqa: BLE001 - open_clip missing or name unknown: keep the default
            pass
    found = _hf_snapshot_files(hf_repo, _CLIP_FILES)
    if found:
        return found[0], ""
    clip_cache = Path.home() / ".cache" / "clip"
    local = sorted(p for p in clip_cache.glob("*") if p.is_file() and pretrained in p.name) if clip_cache.is_dir() else []
    if local:
        return local[0], ""
    return None, (f"no weights for open_clip {model_name} {pretrained} in {hf_hub_cache()} "
                  f"(models--{hf_repo.replace('/', '--')}) or {clip_cache}")


def load_clip(device="cpu", model_name: str = CLIP_MODEL, pretrained: str = CLIP_PRETRAINED,
              hf_repo: str | None = None) -> tuple[ClipScorer | None, str | None]:
    """The paper's CLIP (open_clip ViT-H-14, laion2b_s32b_b79k) from disk, never downloading.
    Returns ``(scorer, None)`` or ``(None, reason)``."""
    path, reason = find_clip_weights(model_name, pretrained, hf_repo)
    if path is None:
        return None, reason
    try:
        import open_clip

        with _offline():
            model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=str(path))
            tokenizer = open_clip.get_tokenizer(model_name)
        size = model.visual.image_size
        size = size[0] if isinstance(size, (tuple, list)) else int(size)
        mean = getattr(model.visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073)
        std = getattr(model.visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711)
    except Exception as e:  # noqa: BLE001 - report, never fall back on random weights
        return None, f"open_clip {model_name} weights at {path} failed to load: {type(e).__name__}: {e}"
    info = BackendInfo("clip_vit_h14", f"open_clip {model_name} {pretrained}", str(path))
    return ClipScorer(model, tokenizer, mean, std, size, info, device), None


def find_dino_weights(repo_id: str = DINO_REPO) -> tuple[Path | None, str]:
    """A snapshot folder of ``repo_id`` in the HF cache holding config.json and weights."""
    for w in _hf_snapshot_files(repo_id, _HF_WEIGHTS):
        if (w.parent / "config.json").is_file():
            return w.parent, ""
    return None, f"no weights for {repo_id} in {hf_hub_cache()} (models--{repo_id.replace('/', '--')})"


def load_dino(device="cpu", repo_id: str = DINO_REPO) -> tuple[DinoScorer | None, str | None]:
    """The paper's DINO (DINOv2-large, pooler output) from the HF cache, offline."""
    folder, reason = find_dino_weights(repo_id)
    if folder is None:
        return None, reason
    try:
        from transformers import AutoModel

        with _offline():
            model = AutoModel.from_pretrained(str(folder), local_files_only=True)
        size = int(getattr(model.config, "image_size", 224) or 224)
    except Exception as e:  # noqa: BLE001
        return None, f"{repo_id} at {folder} failed to load: {type(e).__name__}: {e}"
    return DinoScorer(model, BackendInfo("dinov2_large", f"transformers {repo_id}", str(folder)),
                      size=min(size, 224), device=device), None


def find_torchvision_weights(filename: str) -> tuple[Path | None, str]:
    p = torch_hub_dir() / "checkpoints" / filename
    if p.is_file() and p.stat().st_size > 0:
        return p, ""
    return None, f"no {filename} in {p.parent} (torchvision's download cache; set TORCH_HOME to another cache)"


def load_lpips(device="cpu") -> tuple[LpipsScorer | None, str | None]:
    """LPIPS with VGG: the package's own linear weights (shipped inside ``lpips``) on top of
    torchvision's VGG16 ImageNet weights, which must already be in torch's hub cache. The
    backbone is built without weights and loaded from that file, so nothing is downloaded."""
    import importlib.util

    spec = importlib.util.find_spec("lpips")  # found without importing it (slow: torchvision, scipy)
    if spec is None or not spec.origin:
        return None, "the lpips package is not installed (pip install lpips)"
    lin = Path(spec.origin).parent / "weights" / "v0.1" / "vgg.pth"
    if not lin.is_file():
        return None, f"lpips's linear-layer weights {lin} are missing (reinstall lpips)"
    path, reason = find_torchvision_weights(VGG16_FILE)
    if path is None:
        return None, "LPIPS VGG backbone: " + reason
    try:
        import io as _io

        import warnings

        state = torch.load(path, map_location="cpu", weights_only=True)
        feats = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        if len(feats) != 26:  # checked before building the (large) network
            raise ValueError(f"expected the 26 conv tensors of VGG16's features, found {len(feats)}")
        import lpips

        with contextlib.redirect_stdout(_io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torchvision's 'pretrained' deprecation
            model = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)
        net = model.net
        slices = [getattr(net, f"slice{i}") for i in range(1, 6)]
        loaded = 0
        for sl in slices:
            for name, mod in sl.named_children():
                for pname, param in mod.named_parameters(recurse=False):
                    key = f"{name}.{pname}"
                    if key not in feats:
                        raise KeyError(f"{key} missing from {path}")
                    with torch.no_grad():
                        param.copy_(feats[key])
                    loaded += 1
        if loaded != 26:
            raise ValueError(f"expected 26 VGG16 conv tensors, loaded {loaded}")
    except Exception as e:  # noqa: BLE001
        return None, f"LPIPS VGG from {path} failed to load: {type(e).__name__}: {e}"
    return LpipsScorer(model, BackendInfo("lpips_vgg", "lpips 0.1 VGG16 (torchvision ImageNet)", str(path)),
                       device=device), None


def load_inception(device="cpu") -> tuple[InceptionFeatures | None, str | None]:
    """torchvision InceptionV3 (pool3 features, for the paper-style FID) from torch's hub cache."""
    path, reason = find_torchvision_weights(INCEPTION_FILE)
    if path is None:
        return None, "InceptionV3: " + reason
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # before the slow import
        from torchvision.models import inception_v3

        model = inception_v3(weights=None, aux_logits=True, init_weights=False)
        model.load_state_dict(state)
    except Exception as e:  # noqa: BLE001
        return None, f"InceptionV3 from {path} failed to load: {type(e).__name__}: {e}"
    return InceptionFeatures(model, BackendInfo("inception_v3", "torchvision InceptionV3 IMAGENET1K_V1", str(path)),
                             device=device), None


BACKENDS: dict[str, Callable[[], tuple[Path | None, str]]] = {
    "clip_vit_h14": find_clip_weights,
    "dinov2_large": find_dino_weights,
    "lpips_vgg": lambda: find_torchvision_weights(VGG16_FILE),
    "inception_v3": lambda: find_torchvision_weights(INCEPTION_FILE),
}
LOADERS = {"clip_vit_h14": load_clip, "dinov2_large": load_dino, "lpips_vgg": load_lpips,
           "inception_v3": load_inception}


def available_backends() -> dict[str, str]:
    """Which of the paper's pretrained backends have weights on disk (nothing is loaded or
    downloaded): ``{name: "available: <path>" | "unavailable: <reason>"}``, plus the kit's own
    evaluators (``style_classifier``, ``emoji_classifier``)."""
    out = {}
    for name, find in BACKENDS.items():
        path, reason = find()
        out[name] = f"available: {path}" if path is not None else f"unavailable: {reason}"
    for name in DEFAULT_NAMES:
        d = default_checkpoint_dir(name)
        out[name] = f"available: {d}" if (d / "model.safetensors").is_file() else \
            f"unavailable: no checkpoint in {d}; train it with: {train_command(name)}"
    from drclib.tinyclip import default_checkpoint_dir as clip_dir

    d = clip_dir()
    out["tinyclip"] = f"available: {d}" if (d / "model.safetensors").is_file() else \
        f"unavailable: no checkpoint in {d}; train it with: python -m drclib.tinyclip"
    return out


METRIC_BACKENDS = {
    "CS": "clip_vit_h14", "CIS": "clip_vit_h14", "DIS": "dinov2_large", "LPIPS": "lpips_vgg",
    "StyleSim": "style_classifier", "FID": "inception_v3", "FID_kit": "emoji_classifier",
    "style_acc": "style_classifier", "emoji_top1": "emoji_classifier", "emoji_top5": "emoji_classifier",
    "CS_kit": "tinyclip", "CIS_kit": "tinyclip",
}
"""The backend behind each metrics-table column (the paper's six, plus the kit's own)."""


def metric_columns(columns: Sequence[str] | None = None) -> dict[str, dict[str, str]]:
    """For each metric column: the backend that computes it and whether it can here, e.g.
    ``{"CIS": {"backend": "clip_vit_h14", "status": "unavailable: no weights ..."}}``. A table
    shows an unavailable column as such (never computes it from random weights)."""
    status = available_backends()
    columns = list(METRIC_BACKENDS) if columns is None else list(columns)
    unknown = [c for c in columns if c not in METRIC_BACKENDS]
    if unknown:
        raise KeyError(f"unknown metric columns {unknown}; known: {list(METRIC_BACKENDS)}")
    return {c: {"backend": METRIC_BACKENDS[c], "status": status[METRIC_BACKENDS[c]]} for c in columns}


# =============================================================================== shipped evaluators
def default_checkpoint_dir(name: str) -> Path:
    """``<repo>/data/checkpoints/<name>`` for ``name`` in ``style_classifier``, ``emoji_classifier``."""
    if name not in DEFAULT_NAMES:
        raise ValueError(f"unknown evaluator {name!r}; the kit ships {DEFAULT_NAMES}")
    return shipped_dir(name)


def train_command(name: str) -> str:
    target = name.split("_")[0]
    epochs = DEFAULT_EPOCHS[target]
    return (f"python -m drclib.metrics train --target {target} --epochs {epochs} "
            f"--out data/checkpoints/{name}")


def load_default(name: str, device: str | torch.device = "cpu", stickers=None) -> StickerClassifier:
    """Load a shipped evaluator (``"style_classifier"`` or ``"emoji_classifier"``). With
    ``stickers`` (a :class:`~drclib.data.StickerSet`, usually a concept set) the emoji judge
    chooses among that set's emoji only, numbered as the set numbers them."""
    model = load_shipped(StickerClassifier, default_checkpoint_dir(name), train_command(name), device)
    return model.restricted(stickers.concepts) if stickers is not None else model


def load_judges(stickers, device: str | torch.device = "cpu") -> tuple[StickerClassifier, StickerClassifier]:
    """The shipped style and emoji judges for a sticker set: ``(style_clf, emoji_clf)``, the
    emoji judge's argmax over the set's emoji (:meth:`StickerClassifier.restricted`)."""
    return load_default("style_classifier", device), load_default("emoji_classifier", device, stickers)


DEFAULT_EPOCHS = {"style": 18, "emoji": 28}
DEFAULT_LR = {"style": 3e-3, "emoji": 4e-3}


def _card(target: str, command: str, config: StickerClassifierConfig, metrics: dict, args) -> str:
    ho, tr = metrics["heldout"], metrics["train_cells"]
    lines = [
        f"# drc-kit {target} classifier (`StickerClassifier`)",
        "",
        f"A ground-truth evaluator: says which {'of the 6 artist styles' if target == 'style' else 'of the 1,370 emoji'} "
        "a 32 x 32 sticker shows. Later notebooks use it to score generated images "
        "(`drclib.metrics.classify_rates`" + (", `style_sim`" if target == "style" else ", `fid`") + ").",
        "",
        "## How it was trained",
        "",
        "```bash",
        command,
        "```",
        "",
        f"- data: `data/stickers_32px.npz`, every (style, emoji) cell except the {ho['n']} held-out cells of "
        f"`drclib.data.heldout_cells` ({tr['n']} training cells); labels = the cell's {target}.",
        f"- {args.epochs} epochs, batch {args.batch_size}, AdamW (lr {args.lr}, one-cycle, weight decay 5e-4), "
        f"label smoothing 0.1, seed {args.seed}; augmentation `drclib.metrics.augment` "
        f"({'with' if target == 'emoji' else 'without'} colour jitter)"
        + ("; half of the training images replaced by their reconstruction through the shipped tokenizer"
           if metrics.get("with_reconstructions") else "") + ".",
        f"- training time: {metrics['train_time_s']:.0f} s wall clock, {metrics['train_cpu_s']:.0f} s of CPU "
        f"time, on {metrics['machine']}.",
        *([f"- note: {metrics['note']}"] if metrics.get("note") else []),
        f"- config: `{json.dumps(dataclasses.asdict(config))}`",
        f"- weights: float16 safetensors, {metrics.get('params', 0):,} parameters.",
        "",
        "## Measured metrics",
        "",
        "| cells | n | " + ("style accuracy |" if target == "style" else "emoji top-1 | emoji top-5 |"),
        "|---|---|---|" + ("" if target == "style" else "---|"),
    ]
    rows = [("held-out (unseen style x emoji combinations)", ho), ("training cells (no augmentation)", tr)]
    if "heldout_reconstructed" in metrics:
        rows.append(("held-out, after the tokenizer's round trip", metrics["heldout_reconstructed"]))
    for label, m in rows:
        lines.append(f"| {label} | {m['n']} | {m['acc']:.4f} |" + ("" if target == "style" else f" {m['top5']:.4f} |"))
    if "heldout_per_style" in metrics:
        lines += ["", "Held-out accuracy per style: " + ", ".join(
            f"{k} {v:.3f}" for k, v in metrics["heldout_per_style"].items()) + "."]
    lines += ["", "Measured by the fp16 weights as saved (reloaded as float32).", ""]
    return "\n".join(lines)


def _tokenizer_reconstructor(args):
    """The shipped tokenizer's round trip, when ``--with-reconstructions`` asks for it."""
    if not getattr(args, "with_reconstructions", False):
        return None
    from drclib import tokenizer as vt

    tok = vt.load_default()
    return lambda x: tok.reconstruct(x.to(tok.device))


def _cli_train(args) -> int:
    from drclib.data import StickerSet, heldout_cells

    stickers = StickerSet.load()
    held = heldout_cells(stickers)
    torch.set_num_threads(args.threads or torch.get_num_threads())
    t0, c0 = time.perf_counter(), time.process_time()
    n_classes = stickers.n_styles if args.target == "style" else stickers.n_emoji
    config = default_config(args.target, n_classes)
    if args.widths:
        config = dataclasses.replace(config, widths=tuple(int(w) for w in args.widths.split(",")))
    model, hist = train_classifier(stickers, args.target, epochs=args.epochs, batch_size=args.batch_size,
                                   lr=args.lr, seed=args.seed, device=args.device, progress=not args.quiet,
                                   config=config, augment_strength=args.augment_strength,
                                   reconstructor=_tokenizer_reconstructor(args))
    train_time, train_cpu = time.perf_counter() - t0, time.process_time() - c0
    out = Path(args.out)
    tmp_model = model.to("cpu")
    # measure with the weights as shipped (fp16), by a save/load round trip
    tmp_model.save_pretrained(out, dtype=torch.float16)
    shipped = StickerClassifier.from_pretrained(out)
    ho_cells, tr_cells = _cells_where(held), _cells_where(~held)
    metrics: dict[str, Any] = {
        "heldout": evaluate_classifier(shipped, stickers, ho_cells),
        "train_cells": evaluate_classifier(shipped, stickers, tr_cells),
        "train_time_s": round(train_time, 1),
        "train_cpu_s": round(train_cpu, 1),
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
        "final_loss": float(np.mean(hist["loss"][-20:])),
        "machine": (f"{'cuda' if torch.cuda.is_available() and args.device in ('auto', 'cuda') else 'cpu'}, "
                    f"{platform.machine()} with {os.cpu_count()} cores ({torch.get_num_threads()} torch threads), torch {torch.__version__}"),
        "params": int(sum(p.numel() for p in model.parameters())),
        "epoch_loss": [round(x, 4) for x in hist["epoch_loss"]],
    }
    if args.note:
        metrics["note"] = args.note
    metrics["with_reconstructions"] = bool(getattr(args, "with_reconstructions", False))
    try:  # how it judges decoder output: held-out cells after the shipped tokenizer's round trip
        from drclib import tokenizer as vt

        tok = vt.load_default()
        x = stickers.batch(ho_cells, as_torch=True)
        rec = torch.cat([tok.reconstruct(x[i:i + 256]).cpu() for i in range(0, len(x), 256)])
        top = shipped.topk(rec, min(5, shipped.config.num_classes))[1]
        lab = torch.from_numpy(ho_cells[:, 0 if args.target == "style" else 1])
        metrics["heldout_reconstructed"] = {"acc": float((top[:, 0] == lab).float().mean()),
                                            "top5": float((top == lab[:, None]).any(1).float().mean()),
                                            "n": int(len(ho_cells))}
    except CheckpointError:
        pass
    # held-out top-1 accuracy per style of the cell (which artists the evaluator finds hard)
    label_col = 0 if args.target == "style" else 1
    ok = shipped.predict(stickers.batch(ho_cells, as_torch=True)).numpy() == ho_cells[:, label_col]
    metrics["heldout_per_style"] = {name: float(ok[ho_cells[:, 0] == s].mean())
                                    for s, name in enumerate(stickers.styles) if (ho_cells[:, 0] == s).any()}
    command = args.command or "python -m drclib.metrics " + shlex.join(args.argv)
    metrics["command"] = command
    card = _card(args.target, command, shipped.config, metrics, args)
    tmp_model.save_pretrained(out, dtype=torch.float16, card=card, extra=metrics)
    print(json.dumps({k: v for k, v in metrics.items() if k != "epoch_loss"}, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m drclib.metrics", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a style or emoji classifier, evaluate it and save it (fp16)")
    t.add_argument("--target", choices=TARGETS, required=True)
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto")
    t.add_argument("--threads", type=int, default=0)
    t.add_argument("--out", default=None, help="output folder (default data/checkpoints/<target>_classifier)")
    t.add_argument("--quiet", action="store_true")
    t.add_argument("--widths", default=None, help="channels per stage, e.g. 32,64,128,256 (default: the shipped shape)")
    t.add_argument("--with-reconstructions", action="store_true",
                   help="also train on the shipped tokenizer's reconstructions (half the images), so the "
                        "classifier judges decoded, generated stickers well")
    t.add_argument("--augment-strength", type=float, default=1.0,
                   help="scale of the augmentation (1.0 default; lower keeps more of the pixels)")
    t.add_argument("--note", default="", help="a line for the model card (e.g. about machine load)")
    t.add_argument("--command", default=None, help=argparse.SUPPRESS)
    sub.add_parser("backends", help="which pretrained backends have weights on disk")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    args.argv = argv
    if args.cmd == "backends":
        for k, v in available_backends().items():
            print(f"{k:18s} {v}")
        return 0
    args.epochs = args.epochs or DEFAULT_EPOCHS[args.target]
    args.lr = args.lr or DEFAULT_LR[args.target]
    args.out = args.out or str(default_checkpoint_dir(f"{args.target}_classifier"))
    return _cli_train(args)


if __name__ == "__main__":
    raise SystemExit(main())
