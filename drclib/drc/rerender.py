"""Positive-semantic samples by re-rendering a caption with SDXL: the optional adapter.

DRC (Xu et al. 2025), section 2.1, builds the training triplets of its disentanglement stage
from an *anchor* image of the user's history. Its *positive-semantic* sample shows the same
content in a different style: the anchor is captioned, and the caption is re-rendered by
SDXL in other styles. The kit does not need SDXL for this: its sticker set holds the same
emoji drawn by 6 artists, so a ground-truth re-rendering of every anchor is already on disk,
and that is what the notebooks use.

This module is the real path, kept for readers who have SDXL: :class:`SDXLRerenderer` wraps
a ``diffusers`` :class:`~diffusers.StableDiffusionXLPipeline` and turns ``(emoji name, style
hint)`` pairs into small ``[B, 3, size, size]`` images in ``[0, 1]``, the format of the kit's
stickers. It never downloads anything:

- :func:`find_sdxl_weights` looks only on disk, in ``$DRC_SDXL_PATH`` and in the Hugging Face
  hub cache, for a diffusers snapshot of :data:`SDXL_REPO`;
- :meth:`SDXLRerenderer.from_disk` loads it with ``local_files_only=True`` and
  ``HF_HUB_OFFLINE=1``, and answers ``(None, reason)`` when the weights are absent.

:func:`tiny_random_pipeline` builds a pipeline of the same class from tiny, randomly
initialised components, fully offline, so that the tests and a notebook can run the code path
in seconds. Its images are noise: it shows the plumbing, not SDXL.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

SDXL_REPO = "stabilityai/stable-diffusion-xl-base-1.0"
"""The hub id of SDXL base 1.0, the model DRC re-renders captions with."""

ENV_SDXL_PATH = "DRC_SDXL_PATH"
"""Environment variable naming a local folder that holds a diffusers snapshot of SDXL."""

_MODEL_INDEX = "model_index.json"


# --------------------------------------------------------------------------------------------
# finding the weights on disk


def _hub_cache_dir() -> Path:
    """The Hugging Face hub cache folder, resolved the way ``huggingface_hub`` does.

    ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub``, else
    ``~/.cache/huggingface/hub``.
    """
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def _cached_snapshot(cache: Path, repo_id: str) -> Path | None:
    """The snapshot of ``repo_id`` in a hub cache that holds ``model_index.json``, if any.

    The snapshot named by ``refs/main`` wins; otherwise the most recently modified complete one.
    """
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    snapshots = repo_dir / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        preferred = snapshots / ref.read_text().strip()
        if (preferred / _MODEL_INDEX).is_file():
            return preferred
    complete = [s for s in snapshots.iterdir() if (s / _MODEL_INDEX).is_file()]
    if not complete:
        return None
    return max(complete, key=lambda s: s.stat().st_mtime)


def find_sdxl_weights(repo_id: str = SDXL_REPO) -> tuple[Path | None, str]:
    """Look on disk, and only on disk, for a diffusers snapshot of ``repo_id``.

    A snapshot is a folder holding ``model_index.json`` (and the component subfolders). The
    places looked at, in order:

    1. the folder named by ``$DRC_SDXL_PATH``;
    2. the Hugging Face hub cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
       ``~/.cache/huggingface/hub``), in the layout
       ``models--stabilityai--stable-diffusion-xl-base-1.0/snapshots/<hash>/model_index.json``.

    Returns:
        ``(path, "found at ...")`` when a snapshot is there, else ``(None, reason)`` where the
        reason says that the weights are absent, where it looked and how to provide them.
        Nothing is downloaded and nothing raises for absence.
    """
    looked: list[str] = []
    env_path = os.environ.get(ENV_SDXL_PATH)
    if env_path:
        folder = Path(env_path).expanduser()
        if (folder / _MODEL_INDEX).is_file():
            return folder, f"found at {folder} (from ${ENV_SDXL_PATH})"
        looked.append(f"${ENV_SDXL_PATH}={folder} (no {_MODEL_INDEX} there)")
    else:
        looked.append(f"${ENV_SDXL_PATH} (not set)")

    cache = _hub_cache_dir()
    snapshot = _cached_snapshot(cache, repo_id)
    if snapshot is not None:
        return snapshot, f"found at {snapshot} (Hugging Face hub cache)"
    looked.append(f"the Hugging Face hub cache {cache} (no snapshot of {repo_id} with {_MODEL_INDEX})")

    reason = (
        f"The {repo_id} weights are absent: looked in {' and in '.join(looked)}. "
        f"To use them, set {ENV_SDXL_PATH} to a folder holding a diffusers snapshot (with {_MODEL_INDEX}), "
        f"or put the snapshot in the Hugging Face hub cache (e.g. `hf download {repo_id}` "
        "where there is network access). Nothing is downloaded here; "
        "the kit uses its ground-truth re-renders (the same emoji by other artists) instead."
    )
    return None, reason


@contextlib.contextmanager
def _offline_env() -> Iterator[None]:
    """Set ``HF_HUB_OFFLINE=1`` (and the transformers twin) for the duration of the block."""
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    saved = {n: os.environ.get(n) for n in names}
    try:
        for n in names:
            os.environ[n] = "1"
        yield
    finally:
        for n, v in saved.items():
            if v is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = v


def _dtype_keyword(pipeline_cls: Any) -> str:
    """``"dtype"`` where ``from_pretrained`` takes it (newer diffusers, which deprecate
    ``torch_dtype``), else ``"torch_dtype"``."""
    import inspect

    try:
        source = inspect.getsource(pipeline_cls.from_pretrained)
    except (OSError, TypeError):
        return "torch_dtype"
    return "dtype" if 'kwargs.pop("dtype"' in source else "torch_dtype"


# --------------------------------------------------------------------------------------------
# prompts and the re-renderer


def rerender_prompt(name: str, style_hint: str) -> str:
    """The SDXL prompt that re-renders the caption ``name`` in the style ``style_hint``.

    >>> rerender_prompt("cat face", "noto style")
    'a sticker of cat face, noto style, emoji, flat icon, centered, plain white background'
    """
    return f"a sticker of {name}, {style_hint}, emoji, flat icon, centered, plain white background"


def _check_str_list(value: Any, what: str) -> list[str]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"{what} must be a list of str, got {type(value).__name__}")
    bad = [i for i, v in enumerate(value) if not isinstance(v, str)]
    if bad:
        raise ValueError(f"{what} must hold only str; item {bad[0]} is {type(value[bad[0]]).__name__}")
    return list(value)


def _resize_lanczos(image: np.ndarray, size: int) -> np.ndarray:
    """Resize one float image ``[H, W, 3]`` to ``[size, size, 3]`` with Lanczos, in float, clipped to [0, 1].

    Each channel is resized as a 32-bit float PIL image (mode ``"F"``), so nothing is lost to
    8-bit rounding.
    """
    from PIL import Image

    if image.shape[0] == size and image.shape[1] == size:
        return np.clip(image, 0.0, 1.0).astype(np.float32)
    channels = [
        np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c], dtype=np.float32))
                   .resize((size, size), Image.Resampling.LANCZOS))
        for c in range(image.shape[-1])
    ]
    return np.clip(np.stack(channels, axis=-1), 0.0, 1.0).astype(np.float32)


def _as_float_images(images: Any) -> list[np.ndarray]:
    """Pipeline output (a ``[B, H, W, C]`` array or a list of PIL images / arrays) as float ``[H, W, 3]`` arrays."""
    out = []
    for img in images:
        arr = np.asarray(img)
        if arr.dtype == np.uint8:
            arr = arr.astype(np.float32) / 255.0
        arr = arr.astype(np.float32)
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=-1)
        out.append(arr[..., :3])
    return out


class SDXLRerenderer:
    """Re-render ``(caption, style hint)`` pairs with an SDXL pipeline, at the kit's sticker size.

    This is DRC's way of making positive-semantic samples (DRC (Xu et al. 2025), section 2.1):
    the same content as an anchor, drawn in another style.

    Args:
        pipeline: a ``diffusers`` :class:`~diffusers.StableDiffusionXLPipeline`, or anything that
            can be called with the same keywords (``prompt``, ``height``, ``width``,
            ``num_inference_steps``, ``guidance_scale``, ``generator``, ``output_type``) and
            returns an object with ``.images`` (or a tuple whose first item are the images).
        size: side of the returned images (the kit's stickers are 32 px).
        steps: denoising steps per image.
        guidance_scale: classifier-free guidance scale (SDXL's default is 5.0).
        render_size: height and width the pipeline renders at before the Lanczos downsizing;
            ``None`` means the pipeline's default, ``unet.config.sample_size * vae_scale_factor``
            (1024 for SDXL base).
    """

    def __init__(self, pipeline: Any, size: int = 32, steps: int = 25, guidance_scale: float = 5.0,
                 render_size: int | None = None):
        if int(size) <= 0:
            raise ValueError(f"size must be positive, got {size}")
        if int(steps) <= 0:
            raise ValueError(f"steps must be positive, got {steps}")
        if render_size is not None and int(render_size) <= 0:
            raise ValueError(f"render_size must be positive or None, got {render_size}")
        self.pipeline = pipeline
        self.size = int(size)
        self.steps = int(steps)
        self.guidance_scale = float(guidance_scale)
        self.render_size = int(render_size) if render_size is not None else self._default_render_size(pipeline)

    @staticmethod
    def _default_render_size(pipeline: Any) -> int | None:
        """``unet.config.sample_size * vae_scale_factor`` where the pipeline has them, else None."""
        sample = getattr(pipeline, "default_sample_size", None)
        if sample is None:
            unet = getattr(pipeline, "unet", None)
            sample = getattr(getattr(unet, "config", None), "sample_size", None)
        factor = getattr(pipeline, "vae_scale_factor", None)
        if isinstance(sample, int) and isinstance(factor, int):
            return sample * factor
        return None

    @classmethod
    def from_disk(cls, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                  **kwargs: Any) -> tuple[SDXLRerenderer | None, str]:
        """Load SDXL from disk, if it is there, and wrap it.

        Uses :func:`find_sdxl_weights`, then ``StableDiffusionXLPipeline.from_pretrained(path,
        local_files_only=True)`` under ``HF_HUB_OFFLINE=1``: it never downloads. When the
        snapshot lacks full-precision files it retries with ``variant="fp16"``.

        Args:
            device: where the pipeline runs.
            dtype: weights' dtype; ``None`` means float16 on CUDA and float32 elsewhere.
            **kwargs: passed to the constructor (``size``, ``steps``, ``guidance_scale``, ``render_size``).

        Returns:
            ``(rerenderer, "found at ...")``, or ``(None, reason)`` when the weights are absent
            or cannot be loaded; absence never raises.
        """
        path, message = find_sdxl_weights()
        if path is None:
            return None, message
        device = torch.device(device)
        if dtype is None:
            dtype = torch.float16 if device.type == "cuda" else torch.float32
        from diffusers import StableDiffusionXLPipeline

        dtype_kwarg = {_dtype_keyword(StableDiffusionXLPipeline): dtype}
        errors = []
        pipe = None
        with _offline_env():
            for variant in (None, "fp16"):
                try:
                    pipe = StableDiffusionXLPipeline.from_pretrained(
                        str(path), local_files_only=True, variant=variant, **dtype_kwarg)
                    break
                except Exception as err:  # noqa: BLE001 - a broken snapshot is reported, not raised
                    errors.append(f"variant={variant}: {type(err).__name__}: {err}")
        if pipe is None:
            return None, f"SDXL {message}, but it could not be loaded: " + " | ".join(errors)
        pipe = pipe.to(device)
        return cls(pipe, **kwargs), message

    def prompts(self, names: Sequence[str], style_hints: Sequence[str]) -> list[str]:
        """The prompts for ``names`` and ``style_hints``, after checking them (see :meth:`__call__`)."""
        names = _check_str_list(names, "names")
        style_hints = _check_str_list(style_hints, "style_hints")
        if not names:
            raise ValueError("names and style_hints must not be empty")
        if len(names) != len(style_hints):
            raise ValueError(f"names and style_hints must have the same length, got {len(names)} and "
                             f"{len(style_hints)}")
        return [rerender_prompt(n, s) for n, s in zip(names, style_hints)]

    @torch.no_grad()
    def __call__(self, names: Sequence[str], style_hints: Sequence[str], seed: int = 0) -> torch.Tensor:
        """Render ``names[i]`` in the style ``style_hints[i]`` for every i.

        Args:
            names: captions of the anchors, e.g. emoji names such as ``"cat face"``.
            style_hints: one style description per name, e.g. ``"twemoji style"``.
            seed: seed of the one CPU generator used for the whole batch; the same seed gives
                the same images.

        Returns:
            float32 tensor ``[B, 3, size, size]`` with values in ``[0, 1]``, on the CPU.

        Raises:
            ValueError: ``names`` and ``style_hints`` are not lists of str of the same, non-zero length.
        """
        prompts = self.prompts(names, style_hints)
        call: dict[str, Any] = dict(
            prompt=prompts,
            num_inference_steps=self.steps,
            guidance_scale=self.guidance_scale,
            generator=torch.Generator(device="cpu").manual_seed(int(seed)),
            output_type="np",
        )
        if self.render_size is not None:
            call["height"] = call["width"] = self.render_size
        result = self.pipeline(**call)
        images = result.images if hasattr(result, "images") else result[0]
        arrays = [_resize_lanczos(img, self.size) for img in _as_float_images(images)]
        if len(arrays) != len(prompts):
            raise RuntimeError(f"the pipeline returned {len(arrays)} images for {len(prompts)} prompts")
        batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
        return batch.float()

    def __repr__(self) -> str:
        return (f"SDXLRerenderer({type(self.pipeline).__name__}, size={self.size}, steps={self.steps}, "
                f"guidance_scale={self.guidance_scale}, render_size={self.render_size})")


# --------------------------------------------------------------------------------------------
# a tiny random pipeline for tests and demonstrations


def _byte_level_alphabet() -> list[str]:
    """The 256 printable characters that byte-level BPE (GPT-2, CLIP) maps the 256 bytes to.

    Printable Latin-1 bytes stand for themselves; the others are shifted past 255, in order.
    """
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    kept = set(keep)
    shifted = iter(range(0x100, 0x200))
    return [chr(b) if b in kept else chr(next(shifted)) for b in range(256)]


def _tiny_clip_tokenizer(model_max_length: int):
    """A character-level ``CLIPTokenizer``: byte-level characters, their ``</w>`` forms, no merges.

    Written as ``vocab.json`` + ``merges.txt`` (CLIP's own file format) to a temporary folder
    and loaded with ``from_pretrained``; transformers 5 builds its ``tokenizers``-backed
    ``CLIPTokenizer`` from the two files, so the folder can be deleted afterwards. Ids: 0-255 characters inside a
    word, 256-511 the same at a word's end, 512 ``<|startoftext|>``, 513 ``<|endoftext|>``
    (which is also padding and unknown).
    """
    from transformers import CLIPTokenizer

    alphabet = _byte_level_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    with tempfile.TemporaryDirectory(prefix="drc_tiny_tok_") as folder:
        Path(folder, "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        Path(folder, "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
        tokenizer = CLIPTokenizer.from_pretrained(folder, model_max_length=model_max_length, local_files_only=True)
    return tokenizer


def tiny_random_pipeline(seed: int = 0):
    """A ``StableDiffusionXLPipeline`` of tiny, randomly initialised components, built offline.

    It has SDXL's structure (two CLIP text encoders whose penultimate hidden states are
    concatenated, the second one's pooled projection plus six size/crop numbers as extra
    conditioning, a UNet with cross-attention, a KL autoencoder, an Euler scheduler) but with
    thousands of times fewer weights, so a 2-step, 32 px batch takes well under a second on
    a CPU. Its weights are random: **its images are noise**. It exists to run and test
    :class:`SDXLRerenderer` and to show the code path in a notebook without SDXL's ~7 GB.

    Sizes: text encoders of width 32 (projection 32), so ``cross_attention_dim`` is 32 + 32 = 64
    and the added-conditioning input is 6 x 8 + 32 = 80; UNet latents 16 x 16 and a VAE that
    halves once, so the default render is 32 x 32 px.

    Args:
        seed: seed for the random initialisation (the global torch RNG is left untouched).
    """
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    max_length = 128   # the tokenizer is per character, so allow longer prompts than SDXL's 77 tokens
    text_width, projection_dim, time_embed_dim = 32, 32, 8
    tokenizer = _tiny_clip_tokenizer(max_length)
    tokenizer_2 = _tiny_clip_tokenizer(max_length)

    def text_config() -> CLIPTextConfig:
        return CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=text_width, intermediate_size=64, projection_dim=projection_dim,
            num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=max_length, hidden_act="gelu",
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(text_config()).eval()
        text_encoder_2 = CLIPTextModelWithProjection(text_config()).eval()
        unet = UNet2DConditionModel(
            sample_size=16, in_channels=4, out_channels=4,
            block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4), transformer_layers_per_block=(1, 2), use_linear_projection=True,
            cross_attention_dim=2 * text_width,
            addition_embed_type="text_time", addition_time_embed_dim=time_embed_dim,
            projection_class_embeddings_input_dim=6 * time_embed_dim + projection_dim,
        ).eval()
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, sample_size=32,
            block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        ).eval()
    # SDXL's noise schedule, written out rather than loaded from the hub
    scheduler = EulerDiscreteScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type="epsilon", timestep_spacing="leading", steps_offset=1,
    )
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler, add_watermarker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


__all__ = [
    "ENV_SDXL_PATH",
    "SDXL_REPO",
    "SDXLRerenderer",
    "find_sdxl_weights",
    "rerender_prompt",
    "tiny_random_pipeline",
]
