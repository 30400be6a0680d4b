"""The kit's judges: two small CNNs that say which style and which emoji an image shows.

Every image of the sticker set has a ground-truth STYLE (which of the six artists drew it)
and SEMANTICS (which emoji it shows), so a generated image can be *classified*.

- :class:`StickerClassifier` (:class:`StickerClassifierConfig`): a small residual CNN for
  32 x 32 RGB, with ``predict`` / ``predict_proba`` / ``topk``, ``features`` (the pooled
  penultimate vector) and ``feature_maps`` (one map a stage, for Gram matrices).
- :func:`train_classifier`: trains one on every (style, emoji) cell outside the held-out cells
  (:func:`drclib.data.heldout_cells`), with :func:`drclib.data.images.augment` chosen for
  judging *generated* images (hue/saturation jitter for the emoji judge only, because colour
  is part of a style).
- :func:`evaluate_classifier`: accuracies on given cells.
- :func:`default_checkpoint_dir`, :func:`load_default`, :func:`load_judges`: the shipped judges in
  ``data/checkpoints/{style_classifier,emoji_classifier}``, restricted to a concept set's
  emoji; ``python -m drclib.judges train --target style|emoji`` trains them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from drclib.checkpoint import Pretrained, load_shipped, shipped_dir
from drclib.data.images import augment, check_images

TARGETS = ("style", "emoji")
DEFAULT_NAMES = ("style_classifier", "emoji_classifier")


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


# =============================================================================== training
def cells_where(mask: np.ndarray) -> np.ndarray:
    return np.argwhere(mask).astype(np.int64)


def default_config(target: str, num_classes: int) -> StickerClassifierConfig:
    """The shipped evaluators' shapes: a narrow net for style, a wider one for the 1,370 emoji."""
    if target == "style":
        return StickerClassifierConfig(num_classes=num_classes, target="style", widths=(32, 64, 128, 256),
                                       dropout=0.1)
    return StickerClassifierConfig(num_classes=num_classes, target="emoji", widths=(32, 64, 128, 256),
                                   dropout=0.2)


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

    from drclib.data.splits import heldout_cells
    from drclib.runtime import pick_device, resolve_bf16

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
    cells = cells_where(~exclude)
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
    use_bf16 = resolve_bf16(bf16, device)
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


def evaluate_classifier(model: StickerClassifier, stickers, cells: np.ndarray, *,
                        through=None, batch_size: int = 256) -> dict[str, float]:
    """Accuracy of one classifier on (style, emoji) cells ``[N, 2]``: ``acc`` (top-1) and,
    for the emoji target (or whenever ``through`` is given), ``top5``; plus ``n``. ``through``:
    a function the stickers pass through first, in batches (e.g. a tokenizer's ``reconstruct``:
    how the classifier judges decoded images)."""
    cells = np.asarray(cells, dtype=np.int64)
    images = stickers.batch(cells, as_torch=True)
    if through is not None:
        with torch.no_grad():
            images = torch.cat([through(images[i:i + batch_size]).cpu() for i in range(0, len(images), batch_size)])
    labels = torch.from_numpy(cells[:, 0] if model.config.target == "style" else cells[:, 1])
    k = min(5, model.config.num_classes)
    top = model.topk(images, k)[1]
    out = {"acc": float((top[:, 0] == labels).float().mean()), "n": int(len(cells))}
    if model.config.target == "emoji" or through is not None:
        out["top5"] = float((top == labels[:, None]).any(1).float().mean())
    return out


# =============================================================================== shipped evaluators
def default_checkpoint_dir(name: str) -> Path:
    """``<repo>/data/checkpoints/<name>`` for ``name`` in ``style_classifier``, ``emoji_classifier``."""
    if name not in DEFAULT_NAMES:
        raise ValueError(f"unknown evaluator {name!r}; the kit ships {DEFAULT_NAMES}")
    return shipped_dir(name)


def train_command(name: str) -> str:
    target = name.split("_")[0]
    epochs = DEFAULT_EPOCHS[target]
    return (f"python -m drclib.judges train --target {target} --epochs {epochs} "
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
