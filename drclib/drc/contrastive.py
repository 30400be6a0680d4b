"""Contrastive samples for stage 1 (paper section 2.1): style statistics, positive-style
mining, positive-semantic samples, and the triplets <anchor, positive-style, positive-semantic>.

The paper mines a **positive-style** sample (same style, other semantics) by comparing style
statistics of a VGG network, the channel means and standard deviations that AdaIN-style
transfer uses (or Gram matrices), by mean squared error, and taking the nearest images of a
candidate pool. Its **positive-semantic** sample (same semantics, other style) is the anchor's
caption re-rendered by SDXL in other styles.

On the sticker set both have a ground truth: the same emoji drawn by the other artists *is*
the positive-semantic sample, and every sticker's style is known. So this module can measure
how well each way of mining style works (precision@k: the share of mined images that have the
anchor's style and another emoji), which the paper could not. Feature extractors
(:data:`EXTRACTORS`), all returning a list of feature maps for images in [0, 1]:

=================  ==========================================================================
``vgg_pretrained``   torchvision VGG-16 with ImageNet weights, when they are on disk (the paper)
``vgg_random``       the same network with random weights (seeded)
``kit_tokenizer``    the kit's visual tokenizer encoder (trained without any style label)
``kit_style``        the kit's style classifier (trained *with* style labels: an upper bound)
``colour``           the pixels themselves (plain colour statistics)
=================  ==========================================================================

Training uses the ground-truth triplets of :func:`drclib.data.make_dataset` (the data gives
the truth, so no mining error enters the ablation table); notebook 02 shows how close mining gets.
The SDXL re-rendering path for positive-semantic samples lives in :mod:`drclib.drc.rerender`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

VGG_WEIGHTS = "vgg16-397923af.pth"
"""torchvision's file name for ImageNet VGG-16 weights (looked up in TORCH_HOME only)."""

VGG_LAYERS = (3, 8, 15)
"""Indices in ``vgg16().features`` after relu1_2, relu2_2, relu3_3 (the usual style layers)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Extractor = Callable[[torch.Tensor], list]


# ---------------------------------------------------------------------------- statistics
def channel_stats(fmap: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """AdaIN-style statistics of feature maps ``[B, C, H, W]``: per-channel mean and standard
    deviation, ``[B, 2C]``."""
    if fmap.ndim != 4:
        raise ValueError(f"feature maps must be [B, C, H, W], got {tuple(fmap.shape)}")
    flat = fmap.float().flatten(2)
    return torch.cat([flat.mean(-1), (flat.var(-1, unbiased=False) + eps).sqrt()], 1)


def gram_stats(fmap: torch.Tensor) -> torch.Tensor:
    """Gram-matrix statistics ``G = F F^T / (H W)`` of feature maps, flattened (upper triangle
    with the diagonal), ``[B, C (C + 1) / 2]``."""
    if fmap.ndim != 4:
        raise ValueError(f"feature maps must be [B, C, H, W], got {tuple(fmap.shape)}")
    flat = fmap.float().flatten(2)
    g = flat @ flat.transpose(1, 2) / flat.shape[-1]
    iu = torch.triu_indices(g.shape[1], g.shape[1])
    return g[:, iu[0], iu[1]]


STATISTICS = {"meanstd": channel_stats, "gram": gram_stats}


@torch.no_grad()
def style_statistics(extractor: Extractor, images: torch.Tensor, kind: str = "meanstd",
                     batch_size: int = 256) -> torch.Tensor:
    """Style statistics of ``images`` ``[N, 3, H, W]`` in [0, 1]: the statistics of every
    feature map the extractor returns, each layer standardised over the batch (so no layer
    dominates the distance by its scale) and concatenated, ``[N, D]``."""
    if kind not in STATISTICS:
        raise ValueError(f"kind must be one of {sorted(STATISTICS)}, got {kind!r}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [N, 3, H, W] in [0, 1], got {tuple(images.shape)}")
    if len(images) == 0:
        raise ValueError("no images to compute statistics of")
    per_layer: list[list[torch.Tensor]] = []
    for i in range(0, len(images), batch_size):
        maps = extractor(images[i:i + batch_size].float())
        for j, m in enumerate(maps):
            if len(per_layer) <= j:
                per_layer.append([])
            per_layer[j].append(STATISTICS[kind](m).cpu())
    parts = []
    for chunks in per_layer:
        x = torch.cat(chunks)
        parts.append((x - x.mean(0)) / (x.std(0) + 1e-6) / np.sqrt(x.shape[1]))
    return torch.cat(parts, 1)


def style_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error between every pair of statistics rows, ``[len(a), len(b)]``."""
    return torch.cdist(a.float(), b.float()).pow(2) / a.shape[1]


# ---------------------------------------------------------------------------- extractors
def _vgg(weights_path=None, seed: int = 0) -> torch.nn.Module:
    from torchvision.models import vgg16

    g = torch.random.get_rng_state()
    torch.manual_seed(seed)
    net = vgg16(weights=None).features[:max(VGG_LAYERS) + 1]
    torch.random.set_rng_state(g)
    if weights_path is not None:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        net.load_state_dict({k[len("features."):]: v for k, v in state.items() if k.startswith("features.")
                             and int(k.split(".")[1]) <= max(VGG_LAYERS)})
    return net.eval()


def vgg_extractor(pretrained: bool = True, seed: int = 0, size: int = 64):
    """A VGG-16 extractor returning relu1_2, relu2_2, relu3_3 maps (images upsampled to
    ``size``). ``pretrained=True`` needs ImageNet weights on disk; returns ``(extractor,
    note)`` with ``extractor=None`` and the reason when they are absent."""
    from drclib.judges import find_torchvision_weights

    path = None
    if pretrained:
        path, why = find_torchvision_weights(VGG_WEIGHTS)
        if path is None:
            return None, f"ImageNet VGG-16 weights absent: {why}"
    net = _vgg(path, seed)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def extract(x: torch.Tensor) -> list:
        h = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        h = (h - mean) / std
        maps = []
        for i, layer in enumerate(net):
            h = layer(h)
            if i in VGG_LAYERS:
                maps.append(h)
        return maps

    return extract, "torchvision vgg16 " + ("ImageNet weights " + str(path) if pretrained else f"random (seed {seed})")


def tokenizer_extractor(tokenizer):
    """The kit's visual tokenizer: the encoder's 8 x 8 output before quantisation."""
    def extract(x: torch.Tensor) -> list:
        return [tokenizer._encode_latents(x.to(tokenizer.device))]

    return extract, "kit tokenizer encoder (data/checkpoints/tokenizer)"


def classifier_extractor(model):
    """A kit :class:`~drclib.judges.StickerClassifier`'s stage outputs."""
    def extract(x: torch.Tensor) -> list:
        return model.feature_maps(x)

    return extract, f"kit {model.config.target} classifier"


def colour_extractor():
    """The image itself as the only "feature map": plain colour statistics."""
    return (lambda x: [x]), "pixels (RGB)"


EXTRACTORS = ("vgg_pretrained", "vgg_random", "kit_tokenizer", "kit_style", "colour")


def get_extractor(name: str, device="cpu"):
    """``(extractor or None, note)`` for one of :data:`EXTRACTORS`; ``None`` when its weights are
    not on disk (the note says why) so tables can mark the row unavailable."""
    if name == "vgg_pretrained":
        return vgg_extractor(True)
    if name == "vgg_random":
        return vgg_extractor(False)
    if name == "kit_tokenizer":
        from drclib.backbone import tokenizer

        return tokenizer_extractor(tokenizer.load_default(device))
    if name == "kit_style":
        from drclib import judges

        return classifier_extractor(judges.load_default("style_classifier", device))
    if name == "colour":
        return colour_extractor()
    raise ValueError(f"unknown extractor {name!r}; use one of {EXTRACTORS}")


# ---------------------------------------------------------------------------- mining
def mine_positive_style(anchor_stats: torch.Tensor, pool_stats: torch.Tensor, k: int = 1,
                        exclude: np.ndarray | None = None) -> np.ndarray:
    """The paper's positive-style mining: for each anchor, the ``k`` pool images whose style
    statistics are nearest by mean squared error, ``[A, k]`` pool indices. ``exclude``
    (bool ``[A, P]``) removes candidates, e.g. the anchor itself."""
    if k < 1 or k > pool_stats.shape[0]:
        raise ValueError(f"k must be in 1..{pool_stats.shape[0]} (the pool size), got {k}")
    d = style_distance(anchor_stats, pool_stats)
    if exclude is not None:
        d = d.masked_fill(torch.as_tensor(exclude, dtype=torch.bool), float("inf"))
    return d.topk(k, largest=False).indices.numpy()


def mining_precision(anchor_cells: np.ndarray, pool_cells: np.ndarray, mined: np.ndarray) -> dict:
    """precision@k of mined positive-style samples against the ground truth: the share of mined
    images with the anchor's style and another emoji, and how often a mined image is the
    anchor's emoji (a positive-*semantic* sample by mistake)."""
    got = pool_cells[mined]                               # [A, k, 2]
    same_style = got[..., 0] == anchor_cells[:, None, 0]
    same_emoji = got[..., 1] == anchor_cells[:, None, 1]
    return {"precision": float((same_style & ~same_emoji).mean()), "same_emoji": float(same_emoji.mean()),
            "k": int(mined.shape[1]), "n_anchors": int(len(anchor_cells))}


def mining_table(stickers, anchors: np.ndarray, pool: np.ndarray, *, k: int = 5,
                 extractors=EXTRACTORS, kinds=("meanstd", "gram"), device="cpu") -> list[dict]:
    """precision@k of every extractor and statistic on ``anchors`` against a candidate
    ``pool`` (cells ``[N, 2]``); rows of unavailable extractors say why instead of a number."""
    anchors, pool = np.asarray(anchors), np.asarray(pool)
    a_img = stickers.batch(anchors, as_torch=True)
    p_img = stickers.batch(pool, as_torch=True)
    itself = (anchors[:, None, :] == pool[None, :, :]).all(-1)
    rows = []
    for name in extractors:
        ext, note = get_extractor(name, device)
        for kind in kinds:
            row = {"extractor": name, "statistics": kind, "backend": note}
            if ext is None:
                row |= {"precision": None, "same_emoji": None, "k": k, "n_anchors": len(anchors)}
            else:
                stats = style_statistics(ext, torch.cat([a_img, p_img]), kind)
                mined = mine_positive_style(stats[:len(anchors)], stats[len(anchors):], k, exclude=itself)
                row |= mining_precision(anchors, pool, mined)
            rows.append(row)
    return rows


def chance_precision(anchors: np.ndarray, pool: np.ndarray) -> float:
    """precision@k of picking pool images at random (the floor of the mining table)."""
    same_style = pool[None, :, 0] == anchors[:, None, 0]
    other_emoji = pool[None, :, 1] != anchors[:, None, 1]
    itself = ~other_emoji & same_style
    ok = (same_style & other_emoji).sum(1) / (len(pool) - itself.sum(1))
    return float(ok.mean())


# ---------------------------------------------------------------------------- triplets
def positive_semantic(cells: np.ndarray, blocked: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Ground-truth positive-semantic samples: the same emoji in another style, never a
    ``blocked`` (held-out) cell. The analog of the paper's caption + SDXL re-rendering."""
    cells = np.asarray(cells)
    out = np.empty_like(cells)
    for t, (s, e) in enumerate(cells):
        ok = np.flatnonzero(~blocked[:, e])
        ok = ok[ok != s]
        if len(ok) == 0:
            raise ValueError(f"emoji {e} has no other usable style")
        out[t] = (rng.choice(ok), e)
    return out


def mined_triplets(stickers, triplets, extractor: Extractor, pool: np.ndarray, kind: str = "meanstd"):
    """The triplets with each positive-style sample replaced by the nearest pool image
    (:func:`mine_positive_style`, k = 1, the anchor excluded): the paper's recipe, for
    comparison with the ground truth."""
    from drclib.data.users import Triplets

    pool = np.asarray(pool)
    uniq, inv = np.unique(triplets.anchor, axis=0, return_inverse=True)
    stats = style_statistics(extractor, stickers.batch(np.concatenate([uniq, pool]), as_torch=True), kind)
    itself = (uniq[:, None, :] == pool[None, :, :]).all(-1)
    mined = mine_positive_style(stats[:len(uniq)], stats[len(uniq):], 1, exclude=itself)[:, 0]
    return Triplets(triplets.anchor.copy(), pool[mined][inv.reshape(-1)], triplets.pos_sem.copy())


__all__ = ["channel_stats", "gram_stats", "style_statistics", "style_distance", "vgg_extractor",
           "tokenizer_extractor", "classifier_extractor", "colour_extractor", "get_extractor", "EXTRACTORS",
           "mine_positive_style", "mining_precision", "mining_table", "chance_precision", "positive_semantic",
           "mined_triplets"]


def main(argv=None) -> int:
    """``python -m drclib.drc.contrastive``: print the positive-style mining table (precision@k of
    every extractor and statistic against the ground truth) for the full profile's sizes."""
    import argparse

    from drclib.config import get_profile
    from drclib.data import StickerSet, heldout_cells

    p = argparse.ArgumentParser(prog="python -m drclib.drc.contrastive", description=main.__doc__)
    p.add_argument("--profile", default="full", help="whose mining sizes to use")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the rows to this file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    prof = get_profile(args.profile)
    stickers = StickerSet.for_profile(args.profile)          # the profile's concept set
    cells = np.argwhere(~heldout_cells(stickers))
    rng = np.random.default_rng(args.seed)
    anchors = cells[rng.choice(len(cells), size=min(prof.mining_anchors, len(cells)), replace=False)]
    pool = cells[rng.choice(len(cells), size=min(prof.mining_pool, len(cells)), replace=False)]
    rows = mining_table(stickers, anchors, pool, k=args.k)
    chance = chance_precision(anchors, pool)
    print(f"{len(anchors)} anchors, pool of {len(pool)}, k = {args.k}; chance {chance:.3f}")
    print("| extractor | statistics | precision@k | same emoji | backend |\n|---|---|---|---|---|")
    for r in rows:
        prec = "n/a" if r["precision"] is None else f"{r['precision']:.3f}"
        same = "n/a" if r["same_emoji"] is None else f"{r['same_emoji']:.3f}"
        print(f"| {r['extractor']} | {r['statistics']} | {prec} | {same} | {r['backend']} |")
    if args.json:
        from drclib.io import write_json

        write_json(args.json, {"rows": rows, "chance": chance})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
