"""The stage-1 objective: reconstruction (eq. 3), importance sampling (eq. 4), the caption anchor.

Stage 1 teaches the towers and the fusion network to disentangle: from a triplet (anchor a,
positive-style s, positive-semantic m), each of the four instructions z_(i,j) must make the
frozen LMM redraw the anchor (eq. 3, :func:`reconstruction_loss`), and the instruction that is
hardest right now is drawn most often (eq. 4, :func:`importance_probabilities`,
:class:`ImportanceSampler`). The kit adds a caption anchor (:func:`caption_anchor_loss`): with a
slot-space z, its words are pulled toward the target's caption. The training loop is
:func:`drclib.train.train_stage1`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from drclib.backbone import IMG, PocketLMM
from drclib.drc.composition import prompt_mask
from drclib.drc.model import COMBINATIONS


def reconstruction_loss(lmm: PocketLMM, prompt: torch.Tensor, target_codes: torch.Tensor,
                        attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. (3): ``l(z) = - sum_j log P(E_{a,j} | z, E_{a,<j})`` for each row, divided by the
    64 tokens (nats per visual token; the scale does not change eq. 4's ratios).

    ``prompt`` ``[B, T, d]`` from :func:`hybrid_prompt` (or left-padded from
    :func:`hybrid_prompts`, with its ``attention_mask``); ``target_codes`` ``[B, 64]`` the
    tokenizer's codes of the image to reconstruct. Returns ``[B]``, differentiable in ``prompt``.
    Stage 2's SFT loss (eq. 9) is the same loss after the user's instruction.
    """
    ids = lmm.codes_to_ids(target_codes.to(lmm.device))
    if ids.ndim != 2 or ids.shape[0] != prompt.shape[0]:
        raise ValueError(f"target_codes must be [B, 64] with B = {prompt.shape[0]}, got {tuple(target_codes.shape)}")
    b = ids.shape[0]
    img = lmm.embed(torch.full((b, 1), IMG, device=lmm.device))
    seq = torch.cat([prompt, img.to(prompt.dtype), lmm.embed(ids).to(prompt.dtype)], 1)
    if attention_mask is None and not bool(prompt_mask(prompt).all()):
        attention_mask = prompt_mask(prompt)          # empty slots of the instruction
    if attention_mask is None:
        logits = lmm(inputs_embeds=seq).logits
    else:
        mask = torch.cat([attention_mask.to(lmm.device).long(),
                          torch.ones(b, 1 + ids.shape[1], dtype=torch.long, device=lmm.device)], 1)
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        logits = lmm(inputs_embeds=seq, attention_mask=mask, position_ids=positions).logits
    n = ids.shape[1]
    pred = logits[:, -n - 1:-1].float()        # the position before each code predicts it
    nll = F.cross_entropy(pred.reshape(-1, pred.shape[-1]), ids.reshape(-1), reduction="none")
    return nll.view(b, n).mean(1)


def caption_words(lmm: PocketLMM, stickers, n_latent: int, empty: int | None = None) -> torch.Tensor:
    """The caption of every cell as indices into the LMM's word table (what a words-space z is
    made of): ``[n_styles, n_emoji, n_latent]``, right-aligned, ``-100`` before the caption.

    Right-aligned because names have one to eight words: so the style word always sits in the
    same latent token (the second from the end: "... in <style> style") and the caption ends
    just before ``<img>``, as in the LMM's pretraining sequences. For
    :func:`caption_anchor_loss`; a caption longer than ``n_latent`` words is an error."""
    from drclib.backbone import sticker_caption

    first_word = lmm.first_word
    out = torch.full((len(stickers.styles), len(stickers.names), n_latent), -100 if empty is None else empty,
                     dtype=torch.long)
    for si, style in enumerate(stickers.styles):
        for ei, name in enumerate(stickers.names):
            ids = lmm.text_ids(sticker_caption(name, style))
            if len(ids) > n_latent:
                raise ValueError(f"the caption of ({style}, {name}) has {len(ids)} words but z has only "
                                 f"{n_latent} tokens: raise n_latent")
            out[si, ei, n_latent - len(ids):] = torch.tensor(ids) - first_word
    return out


def caption_anchor_loss(word_logits: torch.Tensor, caption: torch.Tensor, empty: int | None = None) -> torch.Tensor:
    """The kit's caption anchor (not in the paper), per sample ``[B]``: cross-entropy between
    the last tokens of a words-space instruction and the words of the anchor's caption,
    ``-(1/L) sum_k log softmax(logits_k)[w_k]`` over the caption's L words ``w_k`` (``caption``
    ``[B, K']`` word indices, ``-100`` = no target, as :func:`caption_words` makes them).

    Why: stage 1's only signal, eq. (3), reaches z through the LMM, so when z carries no
    content one cannot tell whether the towers failed to *recognise* it or the LMM failed to
    *read* it (RESULTS.md section 3). The anchor tells the towers and the fusion network
    directly *what* z should say: every one of the four instructions reconstructs the anchor,
    so every one should name the anchor's style and emoji, in words the frozen LMM already
    reads; z(s,m) can only do so by taking the style from x_s and the emoji from x_m. The
    tokens before the caption stay free, and eq. (3) still shapes all of them. ``caption`` is aligned with z's *last* tokens (as
    :func:`caption_words` right-aligns it)."""
    if word_logits.ndim != 3 or caption.ndim != 2 or caption.shape[0] != word_logits.shape[0]:
        raise ValueError(f"word_logits must be [B, K, n_words] and caption [B, L], got {tuple(word_logits.shape)} "
                         f"and {tuple(caption.shape)}")
    if caption.shape[1] > word_logits.shape[1]:
        raise ValueError(f"captions of {caption.shape[1]} slots run past z's {word_logits.shape[1]} tokens")
    tgt = caption.to(word_logits.device)
    if empty is not None and word_logits.shape[1] > tgt.shape[1]:   # slots: every slot before the caption is empty
        tgt = torch.cat([tgt.new_full((tgt.shape[0], word_logits.shape[1] - tgt.shape[1]), empty), tgt], 1)
    ce = F.cross_entropy(word_logits[:, -tgt.shape[1]:].float().transpose(1, 2), tgt, ignore_index=-100,
                         reduction="none")
    counted = (tgt != -100).sum(1).clamp(min=1)
    return ce.sum(1) / counted


def importance_probabilities(losses: torch.Tensor) -> torch.Tensor:
    """Eq. (4), difficulty-aware importance sampling: ``p(z) = l(z) / sum_{z'} l(z')`` over
    the last axis (the four combinations). Harder instructions are drawn more often."""
    losses = torch.as_tensor(losses, dtype=torch.float32)
    if losses.ndim == 0 or losses.shape[-1] == 0:
        raise ValueError("losses must have a last axis with one entry per instruction")
    if not torch.isfinite(losses).all() or (losses <= 0).any():
        raise ValueError(f"losses must be finite and positive to define p(z), got {losses.tolist()}")
    return losses / losses.sum(-1, keepdim=True)


class ImportanceSampler:
    """Draws which of the four instructions each training sample uses.

    Eq. (4) needs l(z) for every z of a sample; computing all four through the LMM would cost
    four forward passes per sample. The sampler keeps instead a running mean of each
    combination's loss (exponential, ``momentum``) and applies eq. (4) to those means. With
    ``uniform=True`` p(z) stays 1/4 (the ablation "w/o importance sampling").
    """

    def __init__(self, n: int = len(COMBINATIONS), uniform: bool = False, momentum: float = 0.9):
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.uniform, self.momentum = uniform, momentum
        self.running = torch.ones(n)
        self.seen = torch.zeros(n, dtype=torch.bool)

    def probabilities(self) -> torch.Tensor:
        if self.uniform or not self.seen.all():
            return torch.full_like(self.running, 1 / len(self.running))
        return importance_probabilities(self.running)

    def sample(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        return torch.multinomial(self.probabilities(), batch, replacement=True, generator=generator)

    def update(self, which: torch.Tensor, losses: torch.Tensor) -> None:
        """Fold the batch's per-sample ``losses`` of combinations ``which`` into the means."""
        which, losses = which.cpu(), losses.detach().float().cpu()
        for c in range(len(self.running)):
            sel = losses[which == c]
            if len(sel):
                m = float(sel.mean())
                self.running[c] = m if not self.seen[c] else self.momentum * self.running[c] + (1 - self.momentum) * m
                self.seen[c] = True

    def state(self) -> dict:
        return {"running": self.running.tolist(), "seen": self.seen.tolist(), "uniform": self.uniform,
                "momentum": self.momentum}

    def load_state(self, state: dict) -> None:
        self.running = torch.tensor(state["running"], dtype=torch.float32)
        self.seen = torch.tensor(state["seen"], dtype=torch.bool)


def compare_runs(a: dict, b: dict, keys, *, tail: int = 60) -> dict:
    """Compare two training histories of the same loop (e.g. importance sampling ``a`` against
    uniform ``b``, which saw the same batches) over their last ``tail`` steps: the mean over
    ``keys`` of each run's curves, step by step, and their difference ``d = a - b``.

    Returns ``{"a", "b"}`` (each run's mean over those steps), ``"diff"`` (mean of d),
    ``"spread"`` (the standard deviation of d across those steps: how much the gap moves from
    step to step), ``"within_noise"`` (``|diff| <= spread``) and ``"per_key"``
    (``{key: (mean of a, mean of b)}``)."""
    keys = list(keys)
    if not keys:
        raise ValueError("compare_runs needs at least one key")
    n = min(len(a[keys[0]]), len(b[keys[0]]))
    tail = max(1, min(int(tail), n))
    ya = np.stack([np.asarray(a[k], dtype=float)[n - tail:n] for k in keys])
    yb = np.stack([np.asarray(b[k], dtype=float)[n - tail:n] for k in keys])
    d = ya.mean(0) - yb.mean(0)
    diff, spread = float(d.mean()), float(d.std())
    return {"a": float(ya.mean()), "b": float(yb.mean()), "diff": diff, "spread": spread, "tail": tail,
            "within_noise": bool(abs(diff) <= spread),
            "per_key": {k: (float(ya[i].mean()), float(yb[i].mean())) for i, k in enumerate(keys)}}


# ---------------------------------------------------------------------------- triplets of held-out cells
def heldout_triplets(stickers, n: int, seed: int = 0):
    """``n`` test triplets whose anchors are held-out cells (never trained on), with a
    positive-style sample (same style, another emoji) and a positive-semantic sample (same
    emoji, another style) from training cells: reconstructing the anchor from z(s,m) means
    drawing a (style, emoji) pair the model never saw together."""
    from drclib.data import heldout_cells
    from drclib.data.users import Triplets

    held = heldout_cells(stickers)
    rng = np.random.default_rng([seed, 7])
    cells = np.argwhere(held)
    anchor = cells[np.sort(rng.choice(len(cells), size=min(n, len(cells)), replace=False))]
    pos_style, pos_sem = np.empty_like(anchor), np.empty_like(anchor)
    for t, (s, e) in enumerate(anchor):
        ok = np.flatnonzero(~held[s])
        pos_style[t] = (s, rng.choice(ok[ok != e]))
        ok = np.flatnonzero(~held[:, e])
        pos_sem[t] = (rng.choice(ok[ok != s]), e)
    return Triplets(anchor.astype(np.int64), pos_style.astype(np.int64), pos_sem.astype(np.int64))
