"""``DRCPipeline``: personalized generation in one call, the way a diffusers pipeline works.

>>> pipe = DRCPipeline.from_pretrained("data/checkpoints/drc")                 # doctest: +SKIP
>>> images = pipe(["h1.png", "h2.png", "h3.png"], "reference.png", alpha_m=0.4, seed=0)
>>> images[0].save("out.png")                                                   # doctest: +SKIP

A pipeline bundles the four trained parts: the visual tokenizer, the pocket LMM (its base
weights plus the LoRA adapters DRC trained), and the DRC model (towers, fusion network, and
in stage 2 the mask generator). Images go in as PIL images, numpy arrays or file paths of any
size and mode; they are composited on white and resized to the kit's 32 px.

Saved layout (``save_pretrained``)::

    <folder>/pipeline.json      which parts, and the sha256 of the LMM and tokenizer weights
    <folder>/drc/               the DRC model (config.json, model.safetensors, README.md)
    <folder>/lora/              the LMM's LoRA adapters (peft's adapter_config.json + safetensors)
    <folder>/lmm/, tokenizer/   copies of the base models (only with ``copy_base=True``; else the
                                shipped ones are used, checked against the recorded sha256)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from drclib.checkpoint import CheckpointError
from drclib.io import atomic_path, file_digest

IMAGE_SIZE = 32
ALPHAS = tuple(round(0.1 * i, 1) for i in range(11))
"""The alpha_m grid of the paper's per-sample selection, {0.0, 0.1, ..., 1.0}."""

PIPELINE_FILE = "pipeline.json"


# ---------------------------------------------------------------------------- images in
def load_image(image, size: int = IMAGE_SIZE) -> torch.Tensor:
    """One image as a float tensor ``[3, size, size]`` in [0, 1], from a PIL image, a numpy
    array (``H x W``, ``H x W x 3`` or ``H x W x 4``; uint8, or float in [0, 1]) or a file path.
    Transparency is composited on white; any size is resized with Lanczos."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"image file {path} does not exist")
        try:
            with Image.open(path) as im:
                im.load()
                image = im.copy()
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"cannot read {path} as an image ({e}); give a PNG or JPEG file") from e
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
        if image.ndim == 3 and image.shape[0] in (1, 3, 4) and image.shape[-1] not in (3, 4):
            image = np.moveaxis(image, 0, -1)
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (1, 3, 4)):
            raise ValueError(f"an image array must be H x W, H x W x 3 or H x W x 4, got shape {arr.shape}")
        if arr.size == 0 or min(arr.shape[:2]) < 1:
            raise ValueError(f"the image array is empty (shape {arr.shape})")
        if arr.dtype != np.uint8:
            arr = arr.astype(np.float64)
            if not np.isfinite(arr).all():
                raise ValueError("the image array contains NaN or infinite values")
            if arr.min() < 0 or arr.max() > 1:
                raise ValueError(f"a float image array must lie in [0, 1], got [{arr.min():.3g}, {arr.max():.3g}] "
                                 "(0..255 values? pass them as uint8)")
            arr = np.round(arr * 255).astype(np.uint8)
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        mode = "L" if arr.ndim == 2 else ("RGB" if arr.shape[-1] == 3 else "RGBA")
        image = Image.fromarray(arr, mode=mode)
    if not isinstance(image, Image.Image):
        raise TypeError(f"an image must be a PIL image, numpy array, torch tensor or file path, got "
                        f"{type(image).__name__}")
    if image.mode in ("RGBA", "LA", "P", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    image = image.convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.LANCZOS)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def to_pil(images: torch.Tensor) -> list:
    """Float images ``[B, 3, H, W]`` in [0, 1] -> PIL images."""
    from PIL import Image

    arr = (images.detach().clamp(0, 1).cpu().permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(a) for a in arr]


def _check_alpha(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}") from None
    if not np.isfinite(v) or not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
    return v


# ---------------------------------------------------------------------------- the common interface
class PersonalizationPipeline:
    """What every personalization method of the kit shares (DRC, the baselines of
    :mod:`drclib.baselines`): one call signature,
    ``pipe(history, reference, text, alpha_m, alpha_s, num_images, seed)``, the same input
    checks, and the paper's per-sample alpha_m sweep. A subclass implements :meth:`_generate`
    (images ``[B * num_images, 3, 32, 32]`` for normalised inputs)."""

    max_history = 16
    uses_alpha = True
    """Whether ``alpha_m`` / ``alpha_s`` change the output (False for methods without masks)."""

    @property
    def concepts(self) -> np.ndarray | None:
        """The concept set this pipeline was trained on: indices into the whole sticker array
        (:mod:`drclib.data.concepts`), saved in ``pipeline.json``; from its LMM's record when the
        pipeline was built from parts. ``None`` for a method trained on nothing (Recon, Grd)."""
        meta = getattr(self, "info", None) or {}
        if meta.get("concepts") is not None:
            return np.asarray(meta["concepts"], dtype=np.int64)
        for part in ("drc", "prompter", "lmm"):
            info = getattr(getattr(self, part, None), "training_info", None) or {}
            if info.get("concepts") is not None:
                return np.asarray(info["concepts"], dtype=np.int64)
        return None

    def _images(self, images, what: str) -> torch.Tensor:
        try:
            return torch.stack([load_image(x) for x in images])
        except (ValueError, TypeError, FileNotFoundError) as e:
            raise type(e)(f"{what}: {e}") from None

    def _batch(self, history, reference):
        """Normalise to a batch: history ``[B][N]`` images, reference ``[B]`` images."""
        single = not isinstance(reference, (list, tuple))
        if single:
            history, reference = [history], [reference]
        if len(history) != len(reference):
            raise ValueError(f"{len(history)} histories for {len(reference)} references")
        if len(reference) == 0:
            raise ValueError("no reference given")
        hist = []
        for h in history:
            h = list(h) if isinstance(h, (list, tuple)) else [h]
            if len(h) == 0:
                raise ValueError("the history is empty: give at least one image the user liked")
            if len(h) > self.max_history:
                raise ValueError(f"the history has {len(h)} images; at most {self.max_history} are supported "
                                 "(keep the most recent)")
            hist.append(h)
        return hist, list(reference), single

    def batch_images(self, hist: list[list], refs: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images of a normalised batch: history ``[B, N, 3, 32, 32]`` (padded with white), its
        mask of real images ``[B, N]`` and the references ``[B, 3, 32, 32]``."""
        n = max(len(h) for h in hist)
        images = self._images([x for h in hist for x in h], "history")
        hist_images = images.new_ones(len(hist), n, *images.shape[1:])
        mask = torch.zeros(len(hist), n, dtype=torch.bool)
        i = 0
        for b, h in enumerate(hist):
            hist_images[b, :len(h)] = images[i:i + len(h)]
            mask[b, :len(h)] = True
            i += len(h)
        return hist_images, mask, self._images(refs, "reference")

    def encode_inputs(self, hist: list[list], refs: list, tokenizer,
                      images: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Visual codes of a normalised batch: history ``[B, N, 64]`` (padded), its mask of real
        images ``[B, N]`` and the references' codes ``[B, 64]`` (``images``: what
        :meth:`batch_images` returned, if already computed)."""
        hist_images, mask, ref_images = images if images is not None else self.batch_images(hist, refs)
        b, n = mask.shape
        codes = tokenizer.encode(hist_images.flatten(0, 1).to(tokenizer.device)).cpu()
        return codes.view(b, n, -1), mask, tokenizer.encode(ref_images.to(tokenizer.device)).cpu()

    @staticmethod
    def _check_text(text, batch: int):
        if text is None or isinstance(text, str):
            return text
        if isinstance(text, (list, tuple)) and len(text) == batch and all(isinstance(t, str) for t in text):
            return list(text)
        raise TypeError(f"text must be a str, None, or a list of {batch} str (one per sample), got {text!r:.80}")

    def _generate(self, hist, refs, text, alpha_m: float, alpha_s: float, num_images: int, seed, *, greedy: bool,
                  temperature: float, top_k) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, history, reference, text: str | None = None, alpha_m: float = 0.5, alpha_s: float = 0.2,
                 num_images: int = 1, seed: int | None = None, *, greedy: bool = False, temperature: float = 1.0,
                 top_k: int | None = 40, output_type: str = "pil"):
        """Generate ``num_images`` images with the reference's content in the history's style.

        - ``history``: a list of images (PIL, numpy, torch or paths) the user liked; ``reference``:
          one image. For a batch, give a list of histories and a list of references.
        - ``text``: an optional instruction placed in the prompt (eq. 9); for a batch, one str
          for all samples or a list with one per sample.
        - ``alpha_m`` in [0, 1]: share of the reference's tokens masked (more = less of its
          content); ``alpha_s`` in [0, 1]: share of the history's style tokens masked (noise filter).
        - ``seed`` makes sampling repeatable; ``greedy=True`` takes the most likely code at each step.

        Returns a list of PIL images (``output_type="pil"``; for a batch, ``num_images`` per
        sample in order) or a float tensor ``[B * num_images, 3, 32, 32]`` (``"pt"``).
        """
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {num_images}")
        if output_type not in ("pil", "pt"):
            raise ValueError(f"output_type must be 'pil' or 'pt', got {output_type!r}")
        alpha_m, alpha_s = _check_alpha("alpha_m", alpha_m), _check_alpha("alpha_s", alpha_s)
        hist, refs, _ = self._batch(history, reference)
        text = self._check_text(text, len(refs))
        images = self._generate(hist, refs, text, alpha_m, alpha_s, num_images, seed, greedy=greedy,
                                temperature=temperature, top_k=top_k).clamp(0, 1).cpu()
        return images if output_type == "pt" else to_pil(images)

    @torch.no_grad()
    def sweep(self, history, reference, text: str | None = None, alphas: Sequence[float] = ALPHAS,
              alpha_s: float = 0.2, seed: int | None = 0, scorer=None, greedy: bool = True) -> dict:
        """The paper's per-sample choice of alpha_m: generate for every ratio in ``alphas``,
        score each output's style (mean CLIP image score against the history) and semantics
        (CLIP image score against the reference), and keep the output with the best F1 of the
        two. ``scorer`` is a model with ``image_score(a, b)`` (default: the kit's tiny CLIP).
        Returns ``{"best": PIL image, "alpha_m": float, "images": [...], "style": [...],
        "semantic": [...], "f1": [...]}``."""
        if scorer is None:
            from drclib.backbone import tinyclip

            scorer = tinyclip.load_default(device=getattr(self, "device", "cpu"))
        hist, refs, single = self._batch(history, reference)
        if not single:
            raise ValueError("sweep takes one sample (a history and one reference)")
        alphas = [_check_alpha("alpha_m", a) for a in alphas]
        if not alphas:
            raise ValueError("alphas is empty")
        dev = getattr(scorer, "device", torch.device("cpu"))
        h_img = self._images(hist[0], "history").to(dev)
        r_img = self._images(refs, "reference").to(dev)
        outs, sty, sem, f1 = [], [], [], []
        for a in alphas:
            img = self(hist[0], refs[0], text, a, alpha_s, 1, seed, greedy=greedy, output_type="pt").to(dev)
            s = float(scorer.image_score(img.expand(len(h_img), -1, -1, -1), h_img).mean())
            m = float(scorer.image_score(img, r_img).mean())
            outs.append(img)
            sty.append(s)
            sem.append(m)
            f1.append(2 * s * m / (s + m) if s + m > 0 else 0.0)
        best = int(np.argmax(f1))
        images = to_pil(torch.cat(outs))
        return {"best": images[best], "alpha_m": alphas[best], "images": images, "alphas": alphas,
                "style": sty, "semantic": sem, "f1": f1}


# ---------------------------------------------------------------------------- the pipeline
class DRCPipeline(PersonalizationPipeline):
    """History + reference (+ text) -> images in the user's style with the reference's content.

    Build it with :meth:`from_pretrained`, or from parts: ``DRCPipeline(drc, lmm, tokenizer)``.
    A stage-1 model (no mask generator) also works: it composes the mean style of the history
    with the reference (no masks, so ``alpha_m`` and ``alpha_s`` have no effect).
    """

    def __init__(self, drc, lmm, tokenizer, *, device: str | torch.device | None = None):
        self.drc, self.lmm, self.tokenizer = drc.eval(), lmm.eval(), tokenizer.eval()
        if drc.config.dim != lmm.config.hidden_size:
            raise CheckpointError(f"the DRC model has width {drc.config.dim} but the LMM {lmm.config.hidden_size}: "
                                  "they were not trained together")
        if lmm.config.n_visual != tokenizer.codebook_size:
            raise CheckpointError(f"the LMM knows {lmm.config.n_visual} visual codes, the tokenizer has "
                                  f"{tokenizer.codebook_size}: they were not trained together")
        if device is not None:
            self.to(device)

    def to(self, device) -> "DRCPipeline":
        for m in (self.drc, self.lmm, self.tokenizer):
            m.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.lmm.device

    # ------------------------------------------------------------------ saving and loading
    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, *, device: str | torch.device = "auto") -> "DRCPipeline":
        """Load a pipeline saved by :meth:`save_pretrained` (the shipped one:
        ``data/checkpoints/drc``). Clear errors for a missing folder, a missing or corrupt part,
        and parts that do not belong together."""
        from drclib.drc import DRC
        from drclib.runtime import pick_device

        folder = Path(folder)
        meta = read_pipeline_meta(folder, "DRC pipeline", "data/checkpoints/drc")
        device = pick_device(device)
        drc = DRC.from_pretrained(folder / "drc", device=device)
        lmm, tok = load_base_parts(folder, meta, device)
        pipe = cls(drc, lmm, tok, device=device)
        pipe.info = meta
        return pipe

    def save_pretrained(self, folder: str | os.PathLike, *, lmm_folder: str | os.PathLike | None = None,
                        tokenizer_folder: str | os.PathLike | None = None, copy_base: bool = False,
                        dtype: torch.dtype | None = torch.float16, card: str | None = None,
                        extra: dict | None = None) -> Path:
        """Save the DRC model, the LoRA adapters and ``pipeline.json``. The base LMM and tokenizer
        are referenced by the sha256 of their weights (``lmm_folder`` / ``tokenizer_folder``, by
        default the shipped ones), or copied in with ``copy_base=True``."""
        folder = Path(folder)
        meta = {"format": 1, "image_size": IMAGE_SIZE, "stage": 2 if self.drc.config.mask_generator else 1}
        meta |= save_base_parts(folder, self.lmm, self.tokenizer, lmm_folder=lmm_folder,
                                tokenizer_folder=tokenizer_folder, copy_base=copy_base, dtype=dtype)
        if self.concepts is not None:
            meta["concepts"] = [int(c) for c in self.concepts]
        self.drc.save_pretrained(folder / "drc", dtype=dtype, card=card,
                                 extra=(extra if extra is not None else getattr(self.drc, "training_info", None)))
        with atomic_path(folder / PIPELINE_FILE) as tmp:
            tmp.write_text(json.dumps(meta, indent=2) + "\n")
        return folder

    @torch.no_grad()
    def instruction(self, history, reference, alpha_m: float = 0.5, alpha_s: float = 0.2) -> torch.Tensor:
        """The latent instruction z~ ``[B, K, d]`` for the inputs (see :meth:`__call__`)."""
        alpha_m, alpha_s = _check_alpha("alpha_m", alpha_m), _check_alpha("alpha_s", alpha_s)
        hist, refs, _ = self._batch(history, reference)
        return self._instruction(hist, refs, alpha_m, alpha_s)

    def _instruction(self, hist, refs, alpha_m: float, alpha_s: float) -> torch.Tensor:
        images = self.batch_images(hist, refs)
        hist_codes, mask, ref_codes = self.encode_inputs(hist, refs, self.tokenizer, images)
        dev = self.device
        b, n = mask.shape
        hist_images = images[0].flatten(0, 1) if self.drc.needs_images else None
        e_hist = self.drc.image_tokens(self.lmm, hist_codes.view(b * n, -1).to(dev), hist_images).view(b, n, 64, -1)
        e_ref = self.drc.image_tokens(self.lmm, ref_codes.to(dev), images[2] if self.drc.needs_images else None)
        mask = mask.to(dev)
        if self.drc.config.mask_generator:
            return self.drc.user_instruction(e_hist, e_ref, alpha_s, alpha_m, history_mask=mask)
        return self.drc.instruction(e_hist, e_ref, history_mask=mask)

    @property
    def uses_alpha(self) -> bool:
        return bool(self.drc.config.mask_generator)

    def _generate(self, hist, refs, text, alpha_m, alpha_s, num_images, seed, *, greedy, temperature, top_k):
        from drclib.drc import generate_codes

        z = self._instruction(hist, refs, alpha_m, alpha_s)
        if top_k is not None:
            top_k = min(int(top_k), self.lmm.config.n_visual)
        if self.drc.config.z_space == "slots":
            # a slots z reaches the frozen LMM as the caption it was pretrained on; words before
            # it (the kit's generic instructions carry no content) cost the LMM most of what it
            # draws (RESULTS.md, section 3), so this model's stage 2 trained without them too
            text = None
        codes = generate_codes(self.lmm, z, text=text, greedy=greedy, seed=seed, num_images=num_images,
                               temperature=temperature, top_k=top_k)
        return self.tokenizer.decode(codes.to(self.tokenizer.device))

# ---------------------------------------------------------------------------- saved pipelines
def read_pipeline_meta(folder: Path, what: str, example: str) -> dict:
    """``pipeline.json`` of a saved pipeline folder, with clear errors when it is absent or corrupt."""
    meta_path = Path(folder) / PIPELINE_FILE
    if not meta_path.is_file():
        raise CheckpointError(f"no {what} at {folder} ({PIPELINE_FILE} is missing): give a folder written by "
                              f"save_pretrained, e.g. {example}")
    try:
        return json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{meta_path} is not valid JSON ({e}); save the pipeline again") from e


def load_base_parts(folder: Path, meta: dict, device):
    """The base LMM (with the folder's LoRA adapters, if any) and the tokenizer of a saved
    pipeline: copies inside the folder, else the shipped ones, checked against the sha256
    recorded in ``meta``."""
    from drclib.backbone import tokenizer as tok_mod
    from drclib.backbone import PocketLMM, default_checkpoint_dir

    folder = Path(folder)

    def part(name: str, default: Path) -> Path:
        local = folder / name
        path = local if (local / "config.json").is_file() else default
        want = meta.get(name, {}).get("sha256")
        if want and (path / "model.safetensors").is_file() and file_digest(path / "model.safetensors") != want:
            raise CheckpointError(f"the pipeline in {folder} was saved with another {name} than {path} (weights "
                                  "differ); save it with copy_base=True, or retrain it against this one")
        return path

    lmm = PocketLMM.from_pretrained(part("lmm", default_checkpoint_dir()), device=device)
    if (folder / "lora").is_dir():
        lmm.load_lora(folder / "lora")
    tok = tok_mod.VisualTokenizer.from_pretrained(part("tokenizer", tok_mod.default_checkpoint_dir()), device=device)
    return lmm.to(device), tok


def save_base_parts(folder: Path, lmm, tokenizer, *, lmm_folder=None, tokenizer_folder=None, copy_base: bool = False,
                    dtype=torch.float16) -> dict:
    """Write the LMM's LoRA adapters to ``folder/lora`` and reference (or, with ``copy_base``,
    copy) the base LMM and tokenizer; returns the ``pipeline.json`` entries for them."""
    from drclib.backbone import tokenizer as tok_mod
    from drclib.backbone import default_checkpoint_dir

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lmm_folder = Path(lmm_folder) if lmm_folder else default_checkpoint_dir()
    tokenizer_folder = Path(tokenizer_folder) if tokenizer_folder else tok_mod.default_checkpoint_dir()
    meta = {}
    if copy_base:
        tokenizer.save_pretrained(folder / "tokenizer", dtype=dtype)
        _base_lmm(lmm).save_pretrained(folder / "lmm", dtype=dtype)
        meta["lmm"] = {"sha256": file_digest(folder / "lmm" / "model.safetensors"), "copied": True}
        meta["tokenizer"] = {"sha256": file_digest(folder / "tokenizer" / "model.safetensors"), "copied": True}
    else:
        for name, path in (("lmm", lmm_folder), ("tokenizer", tokenizer_folder)):
            if not (path / "model.safetensors").is_file():
                raise CheckpointError(f"cannot reference the {name} at {path}: no model.safetensors there")
            meta[name] = {"sha256": file_digest(path / "model.safetensors"), "folder_hint": path.name}
    if lmm.has_lora:
        lmm.save_lora(folder / "lora", dtype=dtype)
    elif (folder / "lora").exists():
        # a frozen LMM: adapters left by an earlier save would be loaded onto it
        import shutil

        shutil.rmtree(folder / "lora")
    concepts = (getattr(lmm, "training_info", None) or {}).get("concepts")
    if concepts is not None:
        meta["concepts"] = [int(c) for c in concepts]
    return meta


@torch.no_grad()
def evaluate_personalization(pipe: DRCPipeline, stickers, samples, idx: np.ndarray, style_clf, emoji_clf, *,
                             alpha_m: float = 0.5, alpha_s: float = 0.2, batch_size: int = 32, seed: int = 0,
                             keep_images: int = 0) -> dict:
    """Run the pipeline greedily on samples ``idx`` (one reference per sample, drawn from its
    reference set with ``seed``) and score the outputs with
    :func:`drclib.judges.personalization_rates`. Every method gets one output per sample at the
    same ``alpha_m`` / ``alpha_s`` (ignored by methods without masks); ``seed`` also fixes the
    draws of a sampling method (e.g. the "random history image" calibration row)."""
    from drclib.judges import personalization_rates

    idx = np.asarray(idx)
    rng = np.random.default_rng([seed, 9])
    refs = np.stack([samples.draw_reference(int(i), rng) for i in idx])
    outs = []
    for i in range(0, len(idx), batch_size):
        sl = idx[i:i + batch_size]
        hist = [list(stickers.batch(samples.history[j], as_torch=True)) for j in sl]
        ref = list(stickers.batch(refs[i:i + batch_size], as_torch=True))
        outs.append(pipe(hist, ref, text=None, alpha_m=alpha_m, alpha_s=alpha_s, greedy=True, seed=seed + i,
                         output_type="pt"))
    images = torch.cat(outs)
    rates = personalization_rates(style_clf, emoji_clf, images, samples.target[idx], refs, samples.history[idx])
    if keep_images:
        rates["images"] = images[:keep_images]
        rates["references"] = refs[:keep_images]
    return rates


def _base_lmm(lmm):
    """A copy of ``lmm`` without LoRA adapters (the base weights only)."""
    from drclib.backbone import PocketLMM

    base = PocketLMM(lmm.config, lmm.text_tokenizer)
    state = {k.replace(".base_layer", ""): v for k, v in lmm.state_dict().items() if "lora_" not in k}
    base.load_state_dict(state)
    return base


def default_pipeline_dir() -> Path:
    from drclib.checkpoint import shipped_dir

    return shipped_dir("drc")


__all__ = ["DRCPipeline", "load_image", "to_pil", "ALPHAS", "IMAGE_SIZE", "default_pipeline_dir",
           "evaluate_personalization", "plain_lmm_dir", "load_plain_lmm"]


def default_stage1_dir(variant: str = "drc") -> Path:
    """``data/checkpoints/stage1/<variant>``: the shipped stage-1 models (DRC and its ablations)."""
    from drclib.checkpoint import shipped_dir

    return shipped_dir("stage1") / variant


def shipped_stage2_dir(augment: bool = True) -> Path:
    """``data/checkpoints/drc`` (the DRC pipeline) or ``data/checkpoints/drc_no_aug`` (w/o Aug)."""
    from drclib.checkpoint import shipped_dir

    return shipped_dir("drc" if augment else "drc_no_aug")


def plain_lmm_dir() -> Path:
    """``data/checkpoints/plain``: the pocket LMM of the plain recipe (``lmm/``: 1,200 steps on the
    unaugmented stickers, the kit's default until the composing LMM replaced it; RESULTS section 1)
    and DRC's stage 1 trained on it with the shipped recipe (``stage1/``). It memorises the
    training cells and seldom draws an unseen (style, emoji) cell; kept so that notebook 07 can show
    what the composing LMM gives DRC on held-out cells (RESULTS section 5)."""
    from drclib.checkpoint import shipped_dir

    return shipped_dir("plain")


def load_plain_lmm(device: str | torch.device = "cpu") -> DRCPipeline:
    """DRC's stage 1 on the plain LMM (:func:`plain_lmm_dir`) as a pipeline, with the shipped
    tokenizer: called like the shipped one, ``pipe(history, reference)``."""
    from drclib.backbone import tokenizer as tok_mod
    from drclib.drc import load_stage1
    from drclib.runtime import pick_device

    folder = plain_lmm_dir()
    if not (folder / "stage1" / "config.json").is_file() or not (folder / "lmm" / "config.json").is_file():
        raise CheckpointError(f"no plain LMM and stage 1 at {folder} (lmm/ and stage1/); restore them from git, "
                              "or train them with the commands in their cards (lmm/README.md, stage1/README.md)")
    device = pick_device(device)
    drc, lmm = load_stage1(folder / "stage1", folder / "lmm", device=device)
    return DRCPipeline(drc, lmm, tok_mod.load_default(device=device), device=device)
