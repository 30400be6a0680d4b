"""Best of N: draw several images, keep the one the kit's readers find closest to the prompt.

The pocket LMM reads pictures better than it draws them: on held-out (style, emoji) cells its
greedy drawing has the asked emoji and style far less often than a drawing among a few samples
does (RESULTS section 1, "Best of N"). So draw N candidates for a cell, the greedy drawing first
and N - 1 samples after it, and score each with *critics*, readers of the image that no judge
of the kit's evaluation is:

``caption``  the LMM itself, read backwards: ``log p(caption | image)`` from its image-to-text
             training (:meth:`drclib.backbone.PocketLMM.caption_logprob`), the self-reranking
             of CogView (Ding et al. 2021);
``style``    the semantic encoder's style head: ``log p(style | image)`` over the set's styles
             (:meth:`drclib.backbone.encoder.SemanticEncoder.zero_shot`), the contrastive half
             trained against "in <style> style", as CLIP reranks DALL-E's samples;
``emoji``    its emoji head: ``log p(emoji | image)`` over the set's emoji names.

A candidate's score is the sum of its critics' log-probabilities (a product of experts, each at
its own temperature, no weights to tune), and the best-scoring candidate is kept. The greedy
drawing is candidate 0, so N = 1 is greedy decoding. Neither critic saw a held-out cell in
training, and the judges (:mod:`drclib.judges`) that score the result are separate networks.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from drclib.backbone.lmm import PocketLMM, sticker_caption

CRITICS = ("caption", "style", "emoji")
"""Every critic, and the default set: the LMM's caption and the encoder's two heads."""


def _check_cells(stickers, cells) -> np.ndarray:
    cells = np.asarray(cells)
    if cells.ndim != 2 or cells.shape[1] != 2 or not len(cells):
        raise ValueError(f"cells must be a non-empty [C, 2] array of (style, emoji), got shape {cells.shape}")
    if (cells < 0).any() or (cells[:, 0] >= stickers.n_styles).any() or (cells[:, 1] >= stickers.n_emoji).any():
        raise ValueError(f"cells out of range for a set of {stickers.n_styles} styles and {stickers.n_emoji} emoji")
    return cells


def draw_candidates(lmm: PocketLMM, stickers, cells, n: int, *, temperature: float = 1.0, seed: int = 0,
                    batch_size: int = 32) -> torch.LongTensor:
    """Visual codes ``[C, n, 64]`` for each (style, emoji) cell's caption: candidate 0 the greedy
    drawing, candidates 1..n-1 samples at ``temperature`` (repeatable by ``seed``)."""
    cells = _check_cells(stickers, cells)
    if not (isinstance(n, (int, np.integer)) and n >= 1):
        raise ValueError(f"n (candidates per cell) must be an integer >= 1, got {n!r}")
    prompts = [sticker_caption(stickers.names[e], stickers.styles[s]) for s, e in cells]
    out = []
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i:i + batch_size]
        drawn = lmm.generate_images(chunk, greedy=True)[:, None]
        if n > 1:
            samples = lmm.generate_images(chunk, num_images=n - 1, seed=seed + i, temperature=temperature)
            drawn = torch.cat([drawn, samples.view(len(chunk), n - 1, -1)], 1)
        out.append(drawn.cpu())
    return torch.cat(out)


@torch.no_grad()
def candidate_images(tokenizer, codes: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Candidates' codes ``[C, n, 64]`` decoded by ``tokenizer``: images ``[C, n, 3, H, W]`` in [0, 1], on the CPU."""
    codes = torch.as_tensor(codes)
    if codes.ndim != 3:
        raise ValueError(f"codes must be [C, n, 64], got {tuple(codes.shape)}")
    flat = codes.flatten(0, 1)
    images = torch.cat([tokenizer.decode(flat[i:i + batch_size].to(tokenizer.device)).cpu()
                        for i in range(0, len(flat), batch_size)])
    return images.unflatten(0, codes.shape[:2])


def critic_scores(lmm: PocketLMM, tokenizer, stickers, cells, codes: torch.Tensor, *, encoder=None,
                  critics: Sequence[str] = CRITICS) -> dict[str, torch.Tensor]:
    """Each critic's log-probability of each candidate, ``{critic: [C, n]}`` (module docstring),
    for codes ``[C, n, 64]`` drawn for ``cells``. ``encoder`` (a trained
    :class:`~drclib.backbone.encoder.SemanticEncoder`) is needed by the ``style`` and ``emoji`` critics."""
    cells = _check_cells(stickers, cells)
    critics = list(critics)
    unknown = sorted(set(critics) - set(CRITICS))
    if unknown or not critics:
        raise ValueError(f"critics must be a non-empty subset of {CRITICS}, got {critics}")
    codes = torch.as_tensor(codes)
    if codes.ndim != 3 or codes.shape[0] != len(cells):
        raise ValueError(f"codes must be [C, n, 64] with C = {len(cells)} cells, got {tuple(codes.shape)}")
    n_cells, n = codes.shape[:2]
    flat = codes.reshape(n_cells * n, -1)
    out = {}
    if "caption" in critics:
        texts = [sticker_caption(stickers.names[e], stickers.styles[s]) for s, e in cells for _ in range(n)]
        out["caption"] = lmm.caption_logprob(flat.to(lmm.device), texts).view(n_cells, n)
    if {"style", "emoji"} & set(critics):
        if encoder is None:
            raise ValueError("the style and emoji critics read the image with the semantic encoder: pass encoder= "
                             "(drclib.backbone.encoder.load_default()), or use critics=('caption',)")
        images = candidate_images(tokenizer, codes).flatten(0, 1)
        emoji_lp, style_lp = encoder.zero_shot(images, list(stickers.names), list(stickers.styles))
        rows = torch.arange(n_cells * n)
        if "style" in critics:
            out["style"] = style_lp[rows, torch.as_tensor(np.repeat(cells[:, 0], n))].view(n_cells, n)
        if "emoji" in critics:
            out["emoji"] = emoji_lp[rows, torch.as_tensor(np.repeat(cells[:, 1], n))].view(n_cells, n)
    return out


def pick(scores: dict[str, torch.Tensor], critics: Sequence[str] | None = None, n: int | None = None) -> torch.LongTensor:
    """The index of the best candidate of each cell ``[C]``: the argmax of the summed log-probabilities
    of ``critics`` (default: every critic in ``scores``) over the first ``n`` candidates (default: all)."""
    critics = list(scores) if critics is None else list(critics)
    missing = [c for c in critics if c not in scores]
    if missing or not critics:
        raise ValueError(f"no scores for critics {missing or critics}; scored: {list(scores)}")
    total = sum(scores[c] for c in critics)
    if n is not None:
        if not 1 <= n <= total.shape[1]:
            raise ValueError(f"n must be in 1..{total.shape[1]}, got {n}")
        total = total[:, :n]
    return total.argmax(1)


def draw_best_of(lmm: PocketLMM, tokenizer, stickers, cells, n: int, *, encoder=None,
                 critics: Sequence[str] = CRITICS, temperature: float = 1.0, seed: int = 0) -> dict:
    """Draw ``n`` candidates a cell and keep the best (module docstring): ``{"codes": [C, 64] kept,
    "candidates": [C, n, 64], "scores": {critic: [C, n]}, "chosen": [C]}``. ``n = 1`` is greedy."""
    candidates = draw_candidates(lmm, stickers, cells, n, temperature=temperature, seed=seed)
    if n == 1:
        return {"codes": candidates[:, 0], "candidates": candidates, "scores": {},
                "chosen": torch.zeros(len(candidates), dtype=torch.long)}
    scores = critic_scores(lmm, tokenizer, stickers, cells, candidates, encoder=encoder, critics=critics)
    chosen = pick(scores, critics)
    return {"codes": candidates[torch.arange(len(candidates)), chosen], "candidates": candidates,
            "scores": scores, "chosen": chosen}
