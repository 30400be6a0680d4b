"""Rates and distances computed with the judges.

- :func:`classify_rates`, :func:`personalization_rates`: how often images show a wanted style,
  a wanted emoji, both, or collapse onto the reference's or the history's style;
- :func:`gram_matrix`, :func:`style_sim`, :func:`style_sim_to_history`: the paper's StyleSim
  (lower is better), a Gram-matrix distance of the style judge's feature maps;
- :func:`frechet_distance`, :func:`fid`: Frechet distance of feature sets; ``fid`` uses a
  judge's ``features``. The paper's FID uses InceptionV3 pool3 features on thousands of
  images; FID is biased upwards on small sets, so only compare FIDs computed on sets of the
  same size with the same features;
- :func:`evaluate_text_to_image`: the LMM asked in words, judged (the backbone's card and the
  scaling study).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from drclib.backbone.lmm import PocketLMM, factor_caption, sticker_caption
from drclib.data.images import check_images
from drclib.judges.classifier import StickerClassifier


# =============================================================================== evaluation
def rate_se(p: float, n: int) -> float:
    """The standard error of a rate ``p`` measured on ``n`` independent samples,
    ``sqrt(p (1 - p) / n)``: every rate the kit reports comes with it."""
    if n <= 0:
        raise ValueError(f"a rate needs at least one sample, got n = {n}")
    return float(np.sqrt(max(p * (1 - p), 0.0) / n))


def diff_se(p1: float, n1: int, p2: float, n2: int) -> float:
    """The standard error of ``p1 - p2``, two rates measured on independent samples:
    ``sqrt(rate_se(p1, n1)**2 + rate_se(p2, n2)**2)``. A gap within two of these is within the noise."""
    return float(np.hypot(rate_se(p1, n1), rate_se(p2, n2)))


def format_rate(p: float, n: int, digits: int = 3) -> str:
    """``p`` with its standard error, as ``0.350 ± 0.034``."""
    return f"{p:.{digits}f} ± {rate_se(p, n):.{digits}f}"


def rate_table(rows: dict, columns: Sequence[tuple[str, str]], *, first: str = "method",
               italic: Sequence[str] = ()) -> str:
    """A markdown table of rates, each cell ``0.350 ± 0.034`` (standard error from the row's
    ``n``): ``rows`` is ``{label: {column key: rate, ..., "n": samples}}``, ``columns`` a list of
    ``(key, title)``. Labels in ``italic`` (calibration rows) are set in italics; a missing rate is n/a."""
    return rate_grid({(f"*{label}*" if label in italic else str(label)): {t: (r.get(k), r["n"]) for k, t in columns}
                      for label, r in rows.items()}, first=first, titles=[t for _, t in columns])


def rate_grid(rows: dict, *, first: str = "", titles: Sequence[str] | None = None) -> str:
    """A markdown table whose every cell carries its own sample count: ``rows`` is
    ``{label: {column title: (rate, n)}}``, the columns ``titles`` (default: the first row's, in its
    order); each cell ``0.350 ± 0.034``, a missing or ``None`` rate n/a. For rates over different
    sets side by side (an LMM's training and held-out cells, or one method in two evaluations),
    where :func:`rate_table`'s one ``n`` per row does not fit."""
    if titles is None:
        if not rows:
            raise ValueError("rate_grid needs at least one row (or the column titles)")
        titles = list(next(iter(rows.values())))
    lines = [f"| {first} | " + " | ".join(titles) + " |", "|---" * (len(titles) + 1) + "|"]
    for label, r in rows.items():
        cells = [format_rate(*r[t]) if r.get(t) is not None and r[t][0] is not None else "n/a" for t in titles]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


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


@torch.no_grad()
def draw_cells(lmm: PocketLMM, tokenizer, stickers, cells, *, batch_size: int = 64, greedy: bool = True,
               seed: int = 0, guidance_scale: float = 0.0, best_of: int = 1, encoder=None) -> torch.Tensor:
    """The LMM's drawing of each (style, emoji) cell from words, ``a sticker of <name> in <style>
    style``, decoded by ``tokenizer``: ``[len(cells), 3, H, W]`` in [0, 1], on the CPU.
    ``guidance_scale`` > 0 guides each drawing away from its caption without the style
    (``a sticker of <name>``; :meth:`PocketLMM.generate_images`), towards the asked style.
    ``best_of`` N > 1 keeps the best of N candidates by the LMM's caption and the semantic
    ``encoder``'s heads (:func:`drclib.backbone.best_of.draw_best_of`; default: the shipped encoder)."""
    cells = np.asarray(cells)
    if best_of != 1:
        if guidance_scale > 0 or not greedy:
            raise ValueError("best_of > 1 draws its own candidates (greedy first, then samples); "
                             "use it without guidance_scale and with greedy=True")
        from drclib.backbone import best_of as bo
        from drclib.backbone import encoder as enc_mod

        encoder = encoder if encoder is not None else enc_mod.load_default()
        drawn = bo.draw_best_of(lmm, tokenizer, stickers, cells, best_of, encoder=encoder, seed=seed)
        return bo.candidate_images(tokenizer, drawn["codes"][:, None])[:, 0]
    images = []
    for i in range(0, len(cells), batch_size):
        c = cells[i:i + batch_size]
        prompts = [sticker_caption(stickers.names[e], stickers.styles[s]) for s, e in c]
        guide = ({"negative_text": [factor_caption(name=stickers.names[e]) for _, e in c],
                  "guidance_scale": guidance_scale} if guidance_scale > 0 else {})
        codes = lmm.generate_images(prompts, greedy=greedy, seed=seed + i, **guide)
        images.append(tokenizer.decode(codes.to(tokenizer.device)).cpu())
    return torch.cat(images)


def evaluate_text_to_image(lmm: PocketLMM, tokenizer, style_clf, emoji_clf, stickers, cells, *,
                           batch_size: int = 64, greedy: bool = True, seed: int = 0,
                           guidance_scale: float = 0.0, best_of: int = 1, encoder=None) -> dict:
    """Draw every cell from words (:func:`draw_cells`, greedy unless ``best_of`` > 1) and classify
    the drawings: the rate with the asked style, the asked emoji (top-1, top-5) and both."""
    cells = np.asarray(cells)
    images = draw_cells(lmm, tokenizer, stickers, cells, batch_size=batch_size, greedy=greedy, seed=seed,
                        guidance_scale=guidance_scale, best_of=best_of, encoder=encoder)
    rates = classify_rates(style_clf, emoji_clf, images, torch.from_numpy(cells[:, 0]),
                           torch.from_numpy(cells[:, 1]))
    return {k: float(v) for k, v in rates.items()} | {"n_cells": int(len(cells))}
