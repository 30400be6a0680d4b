"""Semantic visual features: what the towers read of an image.

The paper's towers read E_x, the LMM's embeddings of LaVIT's visual tokens, and LaVIT's tokens
come from a ViT trained on image-text pairs: they carry *meaning*. The kit's tokenizer codes
encode 4 x 4-pixel patches, and their embeddings carry almost none (a linear probe names the
emoji of a held-out cell from them a fraction of the time; RESULTS.md section 1). So the kit
gives the towers what LaVIT's ViT gives them: features of the image trained against captions.

:class:`SemanticEncoder` reads an image's pixels and returns 64 feature tokens, one per cell
of the 8 x 8 grid the tokenizer's visual codes live on (each token sits over the 4 x 4-pixel
patch that one code encodes), ``[B, 64, d]``:

    pixels [B, 3, 32, 32] -> conv stem -> two stride-2 convs with residual blocks -> tokens [B, 64, d]

It is trained CLIP-style (:func:`train_encoder`) against the kit's captions, "a sticker of
<emoji> in <style> style", split in their two parts: the mean of its tokens, projected two
ways, must pick the image's emoji part among every emoji's and its style part among the six,
whose embeddings come from a small bag-of-words text encoder trained with it. Images are
augmented in pixels (shifts, scale, rotation, decoder-like blur; half of each batch recoloured,
and only the other half meets the style part, since colour is part of a style), and half of
them are first swapped for their tokenizer round trip, so the encoder reads decoded images
(what a generated sticker is) as well as real ones. Held-out cells are never used.

One conv stack serves both parts of the caption, and the two pull against each other: weighting
the style part up (``--style-weight``) keeps more style and loses emoji
(``benchmarks/encoder_style_weight.py``, RESULTS section 1). ``EncoderConfig.style_widths`` gives
the style its own small stack, whose channels fill the last ``style_dim`` of each token, so each
part of the loss trains only its own features.

:func:`linear_probe` is the test the kit sizes it by: softmax regression on the features of
training cells, scored on held-out cells (emoji and style).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from drclib.checkpoint import Pretrained, load_shipped, shipped_dir
from drclib.runtime import bf16_fast


@dataclass(frozen=True)
class EncoderConfig:
    """Sizes of a :class:`SemanticEncoder`. ``n_words``: the text encoder's vocabulary."""

    image_size: int = 32
    widths: tuple = (32, 64, 128)
    """Channels at 32, 16 and 8 px; the last stage's 8 x 8 grid gives the 64 tokens (most of
    the work happens at 16 and 8 px, which keeps a training step cheap on a CPU)."""
    dim: int = 128
    """Width of the output tokens (the towers project them to the LMM's width)."""
    embed_dim: int = 128
    """Width of the joint image-caption space of the contrastive loss."""
    n_words: int = 0
    style_widths: tuple = ()
    """Empty (the shipped encoder): one conv stack serves both parts of the caption. Three
    widths: a second, separate stack of those widths reads the style, and its ``style_dim``
    channels fill the last ones of each token; the emoji part reads only the first
    ``dim - style_dim`` channels and the style part only the last, so neither loss pulls on
    the other's features (the two factors disentangled by construction)."""
    style_dim: int = 32

    def __post_init__(self):
        for name in ("widths",) + (("style_widths",) if len(self.style_widths) else ()):
            w = getattr(self, name)
            if len(w) != 3 or min(w) < 8 or any(int(x) % 8 for x in w):
                raise ValueError(f"{name} must be three multiples of 8, got {w}")
        if len(self.style_widths) and not 8 <= self.style_dim <= self.dim - 8:
            raise ValueError(f"style_dim must leave at least 8 channels to each part of dim {self.dim}, got {self.style_dim}")
        if min(self.dim, self.embed_dim) < 1 or self.image_size % 4:
            raise ValueError(f"dim and embed_dim must be >= 1 and image_size a multiple of 4, got {self}")

    @property
    def grid(self) -> int:
        return self.image_size // 4


class _ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.net = nn.Sequential(nn.GroupNorm(8, ch), nn.GELU(), nn.Conv2d(ch, ch, 3, padding=1),
                                 nn.GroupNorm(8, ch), nn.GELU(), nn.Conv2d(ch, ch, 3, padding=1))

    def forward(self, x):
        return x + self.net(x)


class SemanticEncoder(Pretrained):
    """Images ``[B, 3, 32, 32]`` in [0, 1] -> semantic feature tokens ``[B, 64, dim]``, one per
    cell of the 8 x 8 grid the tokenizer's codes live on (see the module docstring).

    >>> enc = SemanticEncoder(EncoderConfig(n_words=10))
    >>> enc(torch.ones(2, 3, 32, 32)).shape
    torch.Size([2, 64, 128])
    """

    config_class = EncoderConfig

    def __init__(self, config: EncoderConfig | None = None):
        super().__init__()
        self.config = c = config or EncoderConfig()
        self.split = c.dim - c.style_dim if len(c.style_widths) else 0   # > 0: channels [split:] are the style stack's
        self.net = self._stack(c.widths, self.split or c.dim)
        self.norm = nn.LayerNorm(self.split or c.dim)
        if self.split:
            self.style_net, self.style_norm = self._stack(c.style_widths, c.style_dim), nn.LayerNorm(c.style_dim)
            self.emoji_proj, self.style_proj = nn.Linear(self.split, c.embed_dim), nn.Linear(c.style_dim, c.embed_dim)
        else:
            self.image_proj = nn.Linear(c.dim, 2 * c.embed_dim)      # [emoji part | style part]
        self.word_emb = nn.Embedding(max(1, c.n_words), c.embed_dim)
        self.text_proj = nn.Linear(c.embed_dim, c.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.training_info: dict = {}

    @staticmethod
    def _stack(widths, out: int) -> nn.Sequential:
        w1, w2, w3 = (int(w) for w in widths)
        return nn.Sequential(
            nn.Conv2d(3, w1, 3, padding=1), nn.GroupNorm(8, w1), nn.GELU(),
            nn.Conv2d(w1, w2, 3, stride=2, padding=1), _ResBlock(w2),
            nn.Conv2d(w2, w3, 3, stride=2, padding=1), _ResBlock(w3), _ResBlock(w3),
            nn.GroupNorm(8, w3), nn.Conv2d(w3, out, 1))

    @property
    def device(self) -> torch.device:
        return self.word_emb.weight.device

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Feature tokens ``[B, 64, dim]`` (row-major over the 8 x 8 grid) of images ``[B, 3, 32, 32]``."""
        from drclib.data.images import check_images

        x = (check_images(images, self.config.image_size).to(self.device) - 0.5) / 0.25
        tokens = self.norm(self.net(x).flatten(2).transpose(1, 2))
        if self.split:
            tokens = torch.cat([tokens, self.style_norm(self.style_net(x).flatten(2).transpose(1, 2))], -1)
        return tokens

    def image_embedding(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two unit-length image vectors of the contrastive loss, from feature tokens: one
        to meet the caption's emoji part, one to meet its style part."""
        m = tokens.mean(1)
        if self.split:
            e, s = self.emoji_proj(m[:, :self.split]), self.style_proj(m[:, self.split:])
        else:
            e, s = self.image_proj(m).chunk(2, dim=-1)
        return F.normalize(e, dim=-1), F.normalize(s, dim=-1)

    def text_embedding(self, words: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Unit-length caption vectors from word ids ``[C, L]`` (0-padded) and their lengths ``[C]``."""
        keep = torch.arange(words.shape[1], device=words.device)[None] < lengths[:, None]
        emb = self.word_emb(words) * keep[..., None]
        return F.normalize(self.text_proj(emb.sum(1) / lengths[:, None]), dim=-1)

    @torch.no_grad()
    def zero_shot(self, images: torch.Tensor, names: Sequence[str], styles: Sequence[str],
                  batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
        """The contrastive heads read as classifiers: log-probabilities ``([B, len(names)],
        [B, len(styles)])`` that each image shows each emoji name ("a sticker of <name>") and is
        in each style ("in <style> style"), a softmax over the given candidates at the encoder's
        own temperature, as in training. Words must be in the encoder's training vocabulary."""
        vocab = self.training_info.get("vocab")
        if not vocab:
            raise ValueError("this encoder has no training vocabulary (training_info['vocab']); load a trained one")
        index = {w: i for i, w in enumerate(vocab)}

        def encode(captions):
            words, lengths = word_table(captions, index)
            return self.text_embedding(words.to(self.device), lengths.to(self.device))

        was = self.training
        self.eval()
        txt_e, txt_s = encode([EMOJI_PART.format(n) for n in names]), encode([STYLE_PART.format(s) for s in styles])
        scale = self.logit_scale.exp().clamp(max=100)
        out_e, out_s = [], []
        for i in range(0, len(images), batch_size):
            img_e, img_s = self.image_embedding(self(images[i:i + batch_size]))
            out_e.append(F.log_softmax(scale * img_e.float() @ txt_e.float().T, -1).cpu())
            out_s.append(F.log_softmax(scale * img_s.float() @ txt_s.float().T, -1).cpu())
        self.train(was)
        return torch.cat(out_e), torch.cat(out_s)

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """:meth:`forward` in eval mode, batched, float32 on the CPU (for caches and probes)."""
        was = self.training
        self.eval()
        out = torch.cat([self(images[i:i + batch_size]).float().cpu() for i in range(0, len(images), batch_size)])
        self.train(was)
        return out


# ---------------------------------------------------------------------------- captions
EMOJI_PART, STYLE_PART = "a sticker of {}", "in {} style"
"""The two parts of a caption the encoder's contrastive heads are trained on."""


def word_table(captions: Sequence[str], index: dict[str, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Captions as word ids ``[C, L]`` (0-padded, lower-cased words) and lengths ``[C]``, by the
    vocabulary ``index`` (word -> id); a word outside it is an error that names it."""
    words = [c.lower().split() for c in captions]
    if not words or not all(words):
        raise ValueError("give at least one caption, none of them empty")
    missing = sorted({w for c in words for w in c if w not in index})
    if missing:
        raise ValueError(f"captions use words the encoder was not trained on: {missing[:5]}")
    ids = torch.zeros(len(words), max(map(len, words)), dtype=torch.long)
    for i, c in enumerate(words):
        ids[i, :len(c)] = torch.tensor([index[w] for w in c])
    return ids, torch.tensor([len(c) for c in words])


def caption_parts(stickers) -> tuple[list[str], dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """The two parts of every caption "a sticker of <emoji> in <style> style" as word ids:
    ``(vocabulary, {"emoji": (words [E, L], lengths [E]), "style": (words [S, L], lengths [S])})``,
    the emoji part "a sticker of <name>" and the style part "in <style> style"; word id 0 is padding."""
    emoji = [EMOJI_PART.format(n) for n in stickers.names]
    style = [STYLE_PART.format(s) for s in stickers.styles]
    vocab = ["<pad>"] + sorted({w for c in emoji + style for w in c.lower().split()})
    index = {w: i for i, w in enumerate(vocab)}
    return vocab, {"emoji": word_table(emoji, index), "style": word_table(style, index)}


# ---------------------------------------------------------------------------- training
@dataclass
class EncoderTrainConfig:
    steps: int = 1000
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    reconstruct_prob: float = 0.5
    """Share of training images replaced by their tokenizer round trip, so the encoder reads
    decoded images (what a generated sticker is) as well as real ones."""
    style_weight: float = 1.0
    """Weight of the style part's loss beside the emoji part's (1: the shipped encoder). The
    emoji part is a choice among every emoji, the style part among six, so at equal weight the
    emoji part dominates the gradient; a larger weight asks the features to keep more style."""
    seed: int = 0


def train_encoder(stickers, cells: np.ndarray, cfg: EncoderTrainConfig | None = None, *,
                  config: EncoderConfig | None = None, reconstructor=None,
                  progress: bool = True) -> tuple[SemanticEncoder, dict]:
    """Train a :class:`SemanticEncoder` CLIP-style on ``cells`` against the two parts of each
    cell's caption (:func:`caption_parts`): every augmented image (:func:`drclib.data.images.augment`,
    geometry and decoder-like blur, no colour change: colour is part of a style) must pick its
    emoji part "a sticker of <name>" among the emoji parts of every emoji of ``stickers``, and
    its style part "in <style> style" among the six (softmax over cosines at a learned
    temperature; the text side is a bag-of-words encoder trained with it). Splitting the
    caption makes the two factors separate directions of the features: an emoji drawn by a
    new artist still meets its name.
    ``reconstructor`` (the tokenizer's ``reconstruct``) supplies round-tripped images. Returns
    ``(encoder in eval mode, history)``."""
    from tqdm.auto import tqdm

    from drclib.data.images import augment

    cfg = cfg or EncoderTrainConfig()
    if not cfg.style_weight >= 0:
        raise ValueError(f"style_weight must be >= 0 (1: the shipped encoder), got {cfg.style_weight}")
    cells = np.asarray(cells)
    if cells.ndim != 2 or cells.shape[1] != 2 or len(cells) < 2:
        raise ValueError(f"cells must be [N >= 2, 2] (style, emoji) pairs, got {cells.shape}")
    torch.manual_seed(cfg.seed)
    vocab, parts = caption_parts(stickers)
    config = config or EncoderConfig(n_words=len(vocab))
    if config.n_words != len(vocab):
        raise ValueError(f"config.n_words is {config.n_words} but the captions have {len(vocab)} words")
    enc = SemanticEncoder(config)
    images = stickers.batch(cells, as_torch=True)
    recon = None
    if reconstructor is not None and cfg.reconstruct_prob > 0:
        with torch.no_grad():
            recon = torch.cat([reconstructor(images[i:i + 256]).float().cpu().clamp(0, 1)
                               for i in range(0, len(images), 256)])
    emoji_labels, style_labels = torch.from_numpy(cells[:, 1]), torch.from_numpy(cells[:, 0])
    opt = torch.optim.AdamW(enc.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    history: dict[str, list] = {"loss": [], "emoji_acc": [], "style_acc": []}
    enc.train()
    per_epoch = max(1, len(cells) // cfg.batch_size)
    bar = tqdm(range(cfg.steps), desc="semantic encoder", disable=not progress)
    for step in bar:
        lr = cfg.lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        if step % per_epoch == 0:
            perm = torch.randperm(len(cells), generator=gen)
        k = step % per_epoch
        idx = perm[k * cfg.batch_size:(k + 1) * cfg.batch_size]
        x = images[idx]
        if recon is not None:
            swap = torch.rand(len(idx), generator=gen) < cfg.reconstruct_prob
            x = torch.where(swap.view(-1, 1, 1, 1), recon[idx], x)
        half = len(idx) // 2               # one half keeps its colours, the other is recoloured
        x = torch.cat([augment(x[:half], gen, colour=False), augment(x[half:], gen, colour=True)])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16_fast("cpu")):
            img_e, img_s = enc.image_embedding(enc(x))
            txt_e, txt_s = enc.text_embedding(*parts["emoji"]), enc.text_embedding(*parts["style"])
        scale = enc.logit_scale.exp().clamp(max=100)
        logits_e, logits_s = scale * img_e.float() @ txt_e.float().T, scale * img_s[:half].float() @ txt_s.float().T
        loss = (F.cross_entropy(logits_e, emoji_labels[idx])
                + cfg.style_weight * F.cross_entropy(logits_s, style_labels[idx[:half]]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history["loss"].append(loss.item())
        history["emoji_acc"].append(float((logits_e.argmax(1) == emoji_labels[idx]).float().mean()))
        history["style_acc"].append(float((logits_s.argmax(1) == style_labels[idx[:half]]).float().mean()))
        bar.set_postfix(loss=f"{loss.item():.3f}")
    enc.eval()
    enc.training_info = {"vocab": vocab}
    return enc, history


# ---------------------------------------------------------------------------- the probe
def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, *,
                 steps: int = 300, weight_decay: float = 1e-3, seed: int = 0) -> dict:
    """Softmax regression on features ``[N, D]`` (standardised with the training mean and
    spread), trained full-batch with L-BFGS, scored on the test features. Returns
    ``{"train_acc", "test_acc", "n_train", "n_test", "n_classes"}``."""
    torch.manual_seed(seed)
    x, xt = train_x.float(), test_x.float()
    mu, sd = x.mean(0), x.std(0).clamp(min=1e-6)
    x, xt = (x - mu) / sd, (xt - mu) / sd
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    lin = nn.Linear(x.shape[1], n_classes)
    opt = torch.optim.LBFGS(lin.parameters(), lr=1, max_iter=steps, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(lin(x), train_y) + weight_decay * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return {"train_acc": float((lin(x).argmax(1) == train_y).float().mean()),
                "test_acc": float((lin(xt).argmax(1) == test_y).float().mean()),
                "n_train": int(len(x)), "n_test": int(len(xt)), "n_classes": n_classes}


def default_checkpoint_dir() -> Path:
    return shipped_dir("encoder")


def load_default(device: str | torch.device = "cpu") -> SemanticEncoder:
    """The shipped semantic encoder (``data/checkpoints/encoder``)."""
    return load_shipped(SemanticEncoder, default_checkpoint_dir(), "python -m drclib.backbone.encoder", device)


def probe_features(encoder: SemanticEncoder, stickers, *, tokenizer=None) -> dict:
    """The linear probes of the towers' input features on a concept set: softmax regression
    on the features of every training cell, scored on the held-out cells, for the emoji
    (K-way) and the style (6-way): ``<view>_emoji`` / ``<view>_style`` on the mean of the 64
    feature tokens, ``<view>_tokens_emoji`` / ``..._style`` on all 64 tokens side by side (what
    the towers read). Views: ``real`` stickers and, with ``tokenizer``, ``reconstructed``
    (their round trip through it)."""
    from drclib.data import heldout_cells
    from drclib.data.stickers import to_tensor

    held = heldout_cells(stickers)
    train, test = np.argwhere(~held), np.argwhere(held)
    views = {"real": to_tensor(stickers.images).flatten(0, 1)}
    if tokenizer is not None:
        with torch.no_grad():
            views["reconstructed"] = torch.cat([tokenizer.reconstruct(views["real"][i:i + 512].to(tokenizer.device)).cpu()
                                                for i in range(0, len(views["real"]), 512)]).clamp(0, 1)
    out = {}
    for view, images in views.items():
        tokens = encoder.features(images).view(stickers.n_styles, stickers.n_emoji, 64, -1)
        for pool, feats in (("", tokens.mean(2)), ("tokens_", tokens.flatten(2))):
            for name, col in (("emoji", 1), ("style", 0)):
                r = linear_probe(feats[train[:, 0], train[:, 1]], torch.from_numpy(train[:, col]),
                                 feats[test[:, 0], test[:, 1]], torch.from_numpy(test[:, col]))
                out[f"{view}_{pool}{name}"] = r["test_acc"]
    out["n_train"], out["n_heldout"] = int(len(train)), int(len(test))
    return out


def _card(info: dict) -> str:
    c, t = info["config"], info["train"]
    final = f" Final loss {info['final_loss']:.3f}." if np.isfinite(info.get("final_loss", float("nan"))) else ""
    rows = "\n".join(f"| `{name}` | {p['n_heldout']} | " + " | ".join(
        f"{p.get(f'{view}_{pool}emoji', float('nan')):.3f} / {p.get(f'{view}_{pool}style', float('nan')):.3f}"
        for view in ("real", "reconstructed") for pool in ("tokens_", "")) + " |" for name, p in info["probes"].items())
    return f"""# Semantic encoder (drc-kit)

What DRC's towers read of an image (`drclib.backbone.encoder.SemanticEncoder`): a small CNN, 32 px -> 64 feature tokens of
width {c['dim']} on the 8 x 8 grid of the visual codes, trained CLIP-style against the kit's captions, the stand-in
for LaVIT's ViT features. Frozen inside every DRC model built on it.

- Command: `{info['command']}`
- Trained in {info['train_minutes']} min on {info['machine']}.
- Data: {info['data']}; {t['steps']} steps of batch {t['batch_size']}, AdamW lr {t['lr']}, tokenizer round trips
  mixed in with probability {t['reconstruct_prob']}; seed {t['seed']}.{final}

Linear probes (`drclib.backbone.encoder.probe_features`): softmax regression on the features of each training cell of a
concept set, scored on its held-out cells (never seen by the encoder); emoji / style accuracy, on all 64 tokens side
by side (what the towers read) and on their mean:

| concept set | held-out cells | real, 64 tokens | real, mean token | round trip, 64 tokens | round trip, mean token |
|---|---|---|---|---|---|
{rows}
"""


def main(argv: list[str] | None = None) -> int:
    import argparse
    import shlex
    import sys

    from drclib.backbone import tokenizer as tok_mod
    from drclib.data import StickerSet, heldout_cells
    from drclib.runtime import pick_device

    p = argparse.ArgumentParser(prog="python -m drclib.backbone.encoder",
                                description="Train the semantic encoder on every sticker outside the held-out cells, "
                                            "probe it on the concept sets, save it with a card.")
    p.add_argument("--steps", type=int, default=EncoderTrainConfig.steps)
    p.add_argument("--batch-size", type=int, default=EncoderTrainConfig.batch_size)
    p.add_argument("--lr", type=float, default=EncoderTrainConfig.lr)
    p.add_argument("--concepts", default="all", help="concept set to train on (default: every emoji)")
    p.add_argument("--dim", type=int, default=EncoderConfig.dim, help="width of the feature tokens (default: 128, shipped)")
    p.add_argument("--style-widths", type=int, nargs=3, default=None, metavar="W",
                   help="a separate conv stack of these widths for the style, its --style-dim channels last in each "
                        "token (default: none, one stack for both, the shipped encoder)")
    p.add_argument("--style-dim", type=int, default=EncoderConfig.style_dim)
    p.add_argument("--style-weight", type=float, default=EncoderTrainConfig.style_weight,
                   help="weight of the style part's loss beside the emoji part's (default: 1, the shipped encoder)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default=str(default_checkpoint_dir()))
    p.add_argument("--card-from", default=None, metavar="FOLDER",
                   help="do not train: take the weights saved in FOLDER by a run of this command with the same "
                        "arguments (e.g. an experiment's output), probe them and write them with the card to --out")
    p.add_argument("--minutes", type=float, default=None, help="with --card-from: that run's training time")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device("cpu")
    stickers = StickerSet.load(concepts=args.concepts)
    tokenizer = tok_mod.load_default()
    cfg = EncoderTrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                             style_weight=args.style_weight, seed=args.seed)
    argv_used = [a for a in (sys.argv[1:] if argv is None else argv)]
    if args.card_from:
        enc = SemanticEncoder.from_pretrained(args.card_from)
        hist = {"loss": list(enc.training_info.get("history", {}).get("loss", [float("nan")]))}
        enc.training_info.setdefault("vocab", caption_parts(stickers)[0])
        minutes = args.minutes if args.minutes is not None else float("nan")
        drop = {"--card-from", "--minutes"}
        argv_used = [a for i, a in enumerate(argv_used) if a not in drop and (i == 0 or argv_used[i - 1] not in drop)]
    else:
        t0 = time.perf_counter()
        enc, hist = train_encoder(stickers, np.argwhere(~heldout_cells(stickers)), cfg,
                                  config=EncoderConfig(n_words=len(caption_parts(stickers)[0]), dim=args.dim,
                                                       style_widths=tuple(args.style_widths or ()),
                                                       style_dim=args.style_dim),
                                  reconstructor=tokenizer.reconstruct)
        minutes = (time.perf_counter() - t0) / 60
    with torch.no_grad():                     # probe the weights as shipped (float16)
        for q in enc.parameters():
            q.copy_(q.half().float())
    probes = {name: probe_features(enc, StickerSet.load(concepts=name), tokenizer=tokenizer) for name in ("mini", "core")}
    from drclib.runtime import describe_machine

    info = {"command": "python -m drclib.backbone.encoder " + " ".join(shlex.quote(a) for a in argv_used),
            "train_minutes": round(minutes, 2), "machine": describe_machine(device),
            "data": f"concept set `{stickers.concept_name}` ({stickers.n_emoji} emoji), every cell outside the held-out cells "
                    f"({int((~heldout_cells(stickers)).sum())} stickers)",
            "config": dataclasses.asdict(enc.config), "train": dataclasses.asdict(cfg),
            "final_loss": float(np.mean(hist["loss"][-50:])), "probes": probes,
            "vocab": enc.training_info["vocab"], "history": {"loss": hist["loss"][::10] if len(hist["loss"]) > 300
                                                             else hist["loss"]}}
    enc.save_pretrained(args.out, dtype=torch.float16, extra=info, card=_card(info))
    print(_card(info))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
