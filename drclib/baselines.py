"""The methods DRC is compared with (the paper's Table 2), on the same pocket LMM and data.

Every one is a :class:`drclib.pipeline.PersonalizationPipeline`, called like DRC:
``pipe(history, reference, text, alpha_m, alpha_s, num_images, seed)``.

=============  ==========================================================================
``lmm_star``   **LMM*** (the paper's LaVIT*): the history's and the reference's visual
               tokens interleaved in the prompt of the pretrained LMM; no fine-tuning.
``lmm_sft``    **LMM-SFT** (the paper's LaVIT): the same prompt, the LMM fine-tuned with
               LoRA on the personalization samples, the target as its own reference.
``pigeon``     **Pigeon**: LMM-SFT plus a mask generator over the raw history and reference
               tokens (the one DRC's stage 2 borrows), masks ``alpha_s`` / ``alpha_m``;
               trained as Pigeon trains (the target as its own reference), with the masks
               applied multiplicatively so the generator receives gradient.
``recon``      **Recon**: the reference through the visual tokenizer (encode, decode).
``grd``        **Grd**: the reference itself.
=============  ==========================================================================

The interleaved prompt (``lmm_star``, ``lmm_sft``, ``pigeon``)::

    <bos> Create an image that meets the specified requirements [text]
          <img> h_1 </img> ... <img> h_N </img> <sep> <img> r </img>   then <img> -> 64 codes

Pigeon multiplies each history and reference token embedding by its mask (0 = masked),
so ``alpha_m`` near 1 leaves the reference's semantics out. LoRA rank, batch, data and loss
match DRC's stage 2 (:class:`drclib.train.Stage2Config`), so the comparison isolates the
method: DRC's disentangled instruction against raw tokens. The trained baselines start from
the bare LMM and get a larger learning rate and more steps (:data:`drclib.train.BASELINE_RECIPE`,
which says why).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from drclib.backbone import BOS, IMG, IMG_END, SEP, PocketLMM
from drclib.checkpoint import CheckpointError, Pretrained, shipped_dir
from drclib.drc import HYBRID_PROMPT
from drclib.io import atomic_path
from drclib.drc.modules import MaskGenerator
from drclib.pipeline import (IMAGE_SIZE, PIPELINE_FILE, PersonalizationPipeline, load_base_parts,
                             read_pipeline_meta, save_base_parts)

METHODS = {
    "lmm_star": "LMM* (interleaved tokens, no fine-tuning)",
    "lmm_sft": "LMM-SFT (interleaved tokens, LoRA SFT)",
    "pigeon": "Pigeon (LMM-SFT + mask generator)",
    "recon": "Recon (reference through the tokenizer)",
    "grd": "Grd (the reference itself)",
    "history": "Copy history (a random history image; ignores the reference)",
}
"""The baselines of this module and their table labels."""

TRAINED = ("lmm_sft", "pigeon")
"""Baselines that are fine-tuned (and ship in ``data/checkpoints/<name>``)."""


# ---------------------------------------------------------------------------- the prompt
@dataclass
class InterleavedConfig:
    """The trainable part of an interleaved-token baseline besides the LoRA adapters."""

    dim: int
    mask_generator: bool = False
    heads: int = 4
    ffn_mult: int = 2
    max_history: int = 16


class InterleavedPrompter(Pretrained):
    """Builds the interleaved prompt of LMM*, LMM-SFT and Pigeon; Pigeon's mask generator
    lives here (``config.mask_generator``)."""

    config_class = InterleavedConfig

    def __init__(self, config: InterleavedConfig):
        super().__init__()
        self.config = config
        if config.mask_generator:
            self.masks = MaskGenerator(config.dim, heads=config.heads, ffn_mult=config.ffn_mult,
                                       max_history=config.max_history)
        else:                           # keeps .parameters() and .to() meaningful for LMM-SFT
            self.register_buffer("_empty", torch.zeros(0), persistent=False)

    def prompt(self, lmm: PocketLMM, hist_codes: torch.Tensor, hist_mask: torch.Tensor, ref_codes: torch.Tensor,
               texts=None, alpha_s=0.2, alpha_m=0.5) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded prompt embeddings ``[B, T, d]`` and their attention mask ``[B, T]``.

        ``hist_codes`` ``[B, N, 64]`` with ``hist_mask`` ``[B, N]`` (True = a real image),
        ``ref_codes`` ``[B, 64]``; ``texts`` None, one str, or one per row. With a mask
        generator, ``alpha_s`` / ``alpha_m`` (floats or ``[B]``) are the masked ratios."""
        if hist_codes.ndim != 3 or ref_codes.ndim != 2 or hist_codes.shape[0] != ref_codes.shape[0]:
            raise ValueError(f"history codes must be [B, N, 64] and reference codes [B, 64], got "
                             f"{tuple(hist_codes.shape)} and {tuple(ref_codes.shape)}")
        dev = lmm.device
        b, n, t = hist_codes.shape
        hist_mask = hist_mask.to(dev).bool()
        if not hist_mask.any(1).all():
            raise ValueError("every sample needs at least one history image")
        with torch.no_grad():
            e_hist = lmm.visual_embeddings(hist_codes.reshape(b * n, t).to(dev)).view(b, n, t, -1).float()
            e_ref = lmm.visual_embeddings(ref_codes.to(dev)).float()
        if self.config.mask_generator:
            m_h, m_r = self.masks(e_hist, e_ref, alpha_s, alpha_m, hist_mask)
            e_hist = e_hist * m_h[..., None].to(e_hist.dtype)
            e_ref = e_ref * m_r[..., None].to(e_ref.dtype)
        if texts is None or isinstance(texts, str):
            texts = [texts] * b
        if len(texts) != b:
            raise ValueError(f"{len(texts)} texts for {b} samples")
        special = lmm.embed(torch.tensor([IMG, IMG_END, SEP], device=dev)).float()
        img, end, sep = special[0:1], special[1:2], special[2:3]
        rows = []
        for i in range(b):
            words = [BOS, *lmm.text_ids(HYBRID_PROMPT)] + (lmm.text_ids(texts[i]) if texts[i] else [])
            parts = [lmm.embed(torch.tensor(words, device=dev)).float()]
            for j in range(n):
                if hist_mask[i, j]:
                    parts += [img, e_hist[i, j], end]
            parts += [sep, img, e_ref[i], end]
            rows.append(torch.cat(parts, 0))
        width = max(len(r) for r in rows)
        emb = rows[0].new_zeros(b, width, rows[0].shape[-1])
        mask = torch.zeros(b, width, dtype=torch.long, device=dev)
        for i, r in enumerate(rows):
            emb[i, width - len(r):] = r
            mask[i, width - len(r):] = 1
        return emb, mask


# ---------------------------------------------------------------------------- pipelines
class InterleavedPipeline(PersonalizationPipeline):
    """LMM*, LMM-SFT or Pigeon: the LMM reads the raw visual tokens of the history and the
    reference. Build it with :meth:`pretrained_lmm` (LMM*), :meth:`from_pretrained` (a trained
    one, e.g. ``data/checkpoints/pigeon``), or from parts."""

    def __init__(self, prompter: InterleavedPrompter, lmm: PocketLMM, tokenizer, *, method: str = "pigeon",
                 device: str | torch.device | None = None):
        if prompter.config.dim != lmm.config.hidden_size:
            raise CheckpointError(f"the prompter has width {prompter.config.dim} but the LMM "
                                  f"{lmm.config.hidden_size}: they were not trained together")
        self.prompter, self.lmm, self.tokenizer = prompter.eval(), lmm.eval(), tokenizer.eval()
        self.method = method
        if device is not None:
            self.to(device)

    def to(self, device) -> "InterleavedPipeline":
        for m in (self.prompter, self.lmm, self.tokenizer):
            m.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.lmm.device

    @property
    def uses_alpha(self) -> bool:
        return bool(self.prompter.config.mask_generator)

    @classmethod
    def pretrained_lmm(cls, *, device: str | torch.device = "auto") -> "InterleavedPipeline":
        """LMM*: the shipped pocket LMM and tokenizer, no fine-tuning, no masks."""
        from drclib import backbone
        from drclib.backbone import tokenizer as tok_mod
        from drclib.runtime import pick_device

        device = pick_device(device)
        lmm = backbone.load_default(device)
        prompter = InterleavedPrompter(InterleavedConfig(dim=lmm.config.hidden_size))
        return cls(prompter, lmm, tok_mod.load_default(device=device), method="lmm_star", device=device)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, *, device: str | torch.device = "auto") -> "InterleavedPipeline":
        """Load a baseline saved by :meth:`save_pretrained` (shipped: ``data/checkpoints/pigeon``,
        ``data/checkpoints/lmm_sft``)."""
        from drclib.runtime import pick_device

        folder = Path(folder)
        meta = read_pipeline_meta(folder, "baseline pipeline", "data/checkpoints/pigeon")
        if meta.get("method") not in METHODS:
            raise CheckpointError(f"{folder / PIPELINE_FILE} names no baseline method (got {meta.get('method')!r}); "
                                  f"is it a DRC pipeline? Load that with DRCPipeline.from_pretrained")
        device = pick_device(device)
        prompter = InterleavedPrompter.from_pretrained(folder / "prompter", device=device)
        lmm, tok = load_base_parts(folder, meta, device)
        pipe = cls(prompter, lmm, tok, method=meta["method"], device=device)
        pipe.info = meta
        return pipe

    def save_pretrained(self, folder: str | os.PathLike, *, copy_base: bool = False,
                        dtype: torch.dtype | None = torch.float16, card: str | None = None,
                        extra: dict | None = None) -> Path:
        """Save the prompter (Pigeon's mask generator), the LoRA adapters and ``pipeline.json``;
        the base LMM and tokenizer are referenced by sha256, as :class:`DRCPipeline` does."""
        folder = Path(folder)
        meta = {"format": 1, "image_size": IMAGE_SIZE, "method": self.method}
        meta |= save_base_parts(folder, self.lmm, self.tokenizer, copy_base=copy_base, dtype=dtype)
        concepts = (extra or {}).get("concepts", self.concepts)
        if concepts is not None:
            meta["concepts"] = [int(c) for c in concepts]
        self.prompter.save_pretrained(folder / "prompter", dtype=dtype, card=card, extra=extra)
        with atomic_path(folder / PIPELINE_FILE) as tmp:
            tmp.write_text(json.dumps(meta, indent=2) + "\n")
        return folder

    def _generate(self, hist, refs, text, alpha_m, alpha_s, num_images, seed, *, greedy, temperature, top_k):
        hist_codes, mask, ref_codes = self.encode_inputs(hist, refs, self.tokenizer)
        prompt, attn = self.prompter.prompt(self.lmm, hist_codes, mask, ref_codes, text, alpha_s, alpha_m)
        if top_k is not None:
            top_k = min(int(top_k), self.lmm.config.n_visual)
        codes = self.lmm.generate_images(inputs_embeds=prompt, attention_mask=attn, num_images=num_images, seed=seed,
                                         greedy=greedy, temperature=temperature, top_k=top_k)
        return self.tokenizer.decode(codes.to(self.tokenizer.device))


class ReferencePipeline(PersonalizationPipeline):
    """Calibration rows that copy an input. Grd (``method="grd"``: the reference itself) and
    Recon (``"recon"``: the reference through the visual tokenizer) ignore the history, the
    text and both ratios: the reference rows of the paper's table, the ceiling of semantic
    alignment and total collapse to the reference. ``"history"`` returns one of the user's
    history images, drawn at random (``seed``): it ignores the reference, so it shows what a
    method scores on style by copying the history, and its collapse to the history is total."""

    uses_alpha = False

    def __init__(self, method: str = "grd", tokenizer=None):
        if method not in ("grd", "recon", "history"):
            raise ValueError(f"method must be 'grd', 'recon' or 'history', got {method!r}")
        if method == "recon" and tokenizer is None:
            raise ValueError("Recon needs the visual tokenizer: ReferencePipeline('recon', tokenizer)")
        self.method, self.tokenizer = method, tokenizer

    @property
    def device(self) -> torch.device:
        return self.tokenizer.device if self.tokenizer is not None else torch.device("cpu")

    def _generate(self, hist, refs, text, alpha_m, alpha_s, num_images, seed, *, greedy, temperature, top_k):
        if self.method == "history":
            rng = np.random.default_rng(seed)
            picks = [h[int(rng.integers(len(h)))] for h in hist for _ in range(num_images)]
            return self._images(picks, "history")
        images = self._images(refs, "reference")
        if self.method == "recon":
            with torch.no_grad():
                images = self.tokenizer.decode(self.tokenizer.encode(images.to(self.tokenizer.device))).cpu()
        return images.repeat_interleave(num_images, 0)


# ---------------------------------------------------------------------------- loading by name
def default_baseline_dir(method: str) -> Path:
    """``data/checkpoints/<method>`` for the trained baselines (``lmm_sft``, ``pigeon``)."""
    if method not in TRAINED:
        raise ValueError(f"only {TRAINED} are trained and saved; got {method!r}")
    return shipped_dir(method)


def load_baseline(method: str, *, device: str | torch.device = "auto", folder: str | os.PathLike | None = None):
    """A baseline pipeline by name (see :data:`METHODS`); trained ones load from ``folder``
    (default ``data/checkpoints/<method>``), with a clear error saying how to train them."""
    from drclib.backbone import tokenizer as tok_mod
    from drclib.runtime import pick_device

    if method not in METHODS:
        raise ValueError(f"unknown baseline {method!r}; known: {list(METHODS)}")
    if method in ("grd", "history"):
        return ReferencePipeline(method)
    if method == "recon":
        return ReferencePipeline("recon", tok_mod.load_default(device=pick_device(device)))
    if method == "lmm_star":
        return InterleavedPipeline.pretrained_lmm(device=device)
    folder = Path(folder) if folder is not None else default_baseline_dir(method)
    if not (folder / PIPELINE_FILE).is_file():
        raise CheckpointError(f"no trained {method} baseline at {folder}; train it with: "
                              f"python -m drclib.train baseline --method {method}")
    return InterleavedPipeline.from_pretrained(folder, device=device)


__all__ = ["METHODS", "TRAINED", "InterleavedConfig", "InterleavedPrompter", "InterleavedPipeline",
           "ReferencePipeline", "default_baseline_dir", "load_baseline"]
