"""The visual tokenizer: a diffusers ``VQModel`` that turns a 32 x 32 sticker into an 8 x 8 grid
of codebook ids (64 tokens an image, row-major) and back.

It stands in for LaVIT's visual tokenizer: the pocket LMM (:mod:`drclib.backbone`) reads and
writes images as these 64 ids, and :meth:`VisualTokenizer.decode` turns generated ids back into
pictures.

Pieces
------
- :class:`TokenizerConfig`: image size, grid, codebook size and the ``VQModel`` sizes.
- :class:`VisualTokenizer`: ``encode`` (images -> ids), ``decode`` (ids -> images),
  ``reconstruct``, ``encode_uint8``; saved and loaded with ``save_pretrained`` /
  ``from_pretrained`` (:class:`drclib.checkpoint.Pretrained`).
- :func:`train_tokenizer`: trains on every (style, emoji) cell except the held-out cells
  (:func:`drclib.data.heldout_cells`), with the VQ-VAE losses
  ``||x - D(z_q)||^2 + ||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2`` (van den Oord et al.
  2017: reconstruction, codebook and commitment terms; straight-through gradient) and a
  dead-code restart: a code unused for a while is moved onto a random encoder output of the
  current batch, which keeps nearly the whole codebook in use. A study option,
  ``style_weight``, adds a style objective beside reconstruction: a linear head reads the
  artist from the mean code vector of the image and its cross-entropy joins the loss, so the
  codes are asked to carry the style. Measured (RESULTS section 1, "The style ceiling"): the codes
  then name the artist, but they take it from the pixels, and the round trips' style reads no
  better; the shipped tokenizer has no style objective. Another, ``decoder_of``, retrains only
  the decoder of a trained tokenizer (its encoder and codebook kept, so every code keeps its
  meaning), with the pixel error as squared (``recon="mse"``) or absolute (``"l1"``, sharper
  edges): whether the same codes, drawn differently, show more style. Measured (same section):
  about a standard error more, far from the real stickers, with either error.
- :func:`psnr`, :func:`codebook_usage`, :func:`evaluate_tokenizer`: the numbers a student
  checks (reconstruction quality; how many codes are used; codebook perplexity).
- :func:`default_checkpoint_dir`, :func:`load_default`: the shipped checkpoint in
  ``data/checkpoints/tokenizer`` (made by ``python -m drclib.backbone.tokenizer``, see its model card).

The ``VQModel`` here uses only its encoder, ``quant_conv``, codebook (``quantize.embedding``),
``post_quant_conv`` and decoder; the nearest-code search and the losses are written out below
(diffusers' own ``VectorQuantizer`` applies ``beta`` to the codebook term instead of the
commitment term, a bug it keeps for backward compatibility).

Sizing, measured on the kit's 2-core CPU (Xeon with AMX-bf16, torch 2.14, batch 64)
------------------------------------------------------------------------------------
Other jobs shared the CPU during every measurement (one or two busy single-thread
processes), so throughputs varied up to 3x from run to run; the ranges are what was seen.
Blocks are ``DownEncoderBlock2D`` / ``UpDecoderBlock2D``, one ResNet a block, 256 codes;
"train" is forward + backward + Adam step; "encode" is fp32 under ``no_grad``.

=============================================  ======  =================  ===========
config: block_out_channels, latent/vq dim      params  train img/s        encode img/s
=============================================  ======  =================  ===========
(32, 64, 64), 16/16, fp32, 2 threads           0.94 M  17-103             200-1600
(32, 64, 64), 16/16, bf16 autocast, 2 threads  0.94 M  28-171             340-1400
(32, 64, 64), 16/16, + mid-block attention     0.97 M  17-91 (fp32)       75-210
(64, 128, 128), 32/32, fp32, 2 threads         3.73 M  7-57               70-630
(64, 128, 128), 32/32, bf16, 2 threads         3.73 M  21-112             250-830
(32, 64, 128), 32/16, 2 threads, contended     2.64 M  3-8 (!)            --
(32, 64, 128), 32/16, fp32, 1 thread           2.64 M  40-53              --
(32, 64, 128), 32/16, bf16, 1 thread (chosen)  2.64 M  95-120             180-400
=============================================  ======  =================  ===========

Findings: bf16 autocast (AMX) is 2-3x faster than fp32 for training; mid-block attention
costs a lot (encode 10x slower) for 8 x 8 latents where convolutions already see the whole
grid; with other processes on the two cores, 2 torch threads were 15-35x slower than 1
thread (OpenMP threads wait on each other), hence ``--threads 1``.
Quality (PSNR on the 685 held-out cells, default config, bf16, 1 thread): without
dead-code restarts, after 120 steps 13.9 dB with 13% of the codebook used; with restarts,
after 150 steps 15.4 dB with 92% used; the full run (944 steps, 8 epochs, 639 s, 1 thread,
bf16): 22.24 dB held-out, 22.29 dB training cells, 100% of the codes used (perplexity 222 of
256); the training curve was still rising (batch PSNR 20.2 dB at step 444, 22.1 at 801), so
more epochs give more (see ``data/checkpoints/tokenizer/README.md``).
bf16 vs fp32 quality was not compared at equal steps (the fp32 trial was stopped for time).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from drclib.checkpoint import Pretrained, load_shipped, shipped_dir
from drclib.data.stickers import StickerSet, to_tensor
from drclib.data.splits import heldout_cells
from drclib.runtime import pick_device, resolve_bf16

TRAIN_HINT = "python -m drclib.backbone.tokenizer --epochs 8 --threads 1 --out data/checkpoints/tokenizer"
"""The command that (re)makes the shipped checkpoint (its model card holds the exact one)."""


# ---------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class TokenizerConfig:
    """Sizes of the visual tokenizer.

    ``image_size / grid`` must be ``2 ** (len(block_out_channels) - 1)``: each block but the
    last halves the resolution (32 px -> 8 x 8 with three blocks).
    """

    image_size: int = 32
    grid: int = 8
    codebook_size: int = 256
    block_out_channels: tuple[int, ...] = (32, 64, 128)
    layers_per_block: int = 1
    latent_channels: int = 32
    vq_embed_dim: int = 16
    norm_num_groups: int = 16
    mid_block_add_attention: bool = False
    beta: float = 0.25
    """Weight of the commitment term ``||z_e - sg[e]||^2``."""

    def __post_init__(self):
        chans = tuple(int(c) for c in self.block_out_channels)
        object.__setattr__(self, "block_out_channels", chans)
        if self.image_size < 1 or self.grid < 1 or self.image_size % self.grid:
            raise ValueError(f"image_size ({self.image_size}) must be a positive multiple of grid ({self.grid})")
        factor = self.image_size // self.grid
        if not chans or 2 ** (len(chans) - 1) != factor:
            raise ValueError(f"block_out_channels {chans} gives a downsampling of {2 ** max(len(chans) - 1, 0)}, "
                             f"but image_size/grid = {factor}: use {int(math.log2(factor)) + 1} blocks "
                             f"(image_size/grid must be a power of two)")
        bad = [c for c in chans if c % self.norm_num_groups]
        if bad:
            raise ValueError(f"norm_num_groups ({self.norm_num_groups}) must divide every block_out_channels "
                             f"entry; {bad} are not multiples")
        if self.codebook_size < 2:
            raise ValueError(f"codebook_size must be at least 2, got {self.codebook_size}")
        if self.layers_per_block < 1 or self.latent_channels < 1 or self.vq_embed_dim < 1:
            raise ValueError("layers_per_block, latent_channels and vq_embed_dim must be positive")

    @property
    def tokens_per_image(self) -> int:
        return self.grid * self.grid


# ---------------------------------------------------------------------------------- model
class VisualTokenizer(Pretrained):
    """32 px RGB sticker <-> 64 codebook ids (an 8 x 8 grid, row-major), a diffusers ``VQModel``.

    >>> tok = VisualTokenizer(TokenizerConfig())                   # doctest: +SKIP
    >>> ids = tok.encode(images)          # float [B, 3, 32, 32] in [0, 1] -> long [B, 64]
    >>> back = tok.decode(ids)            # long [B, 64] -> float [B, 3, 32, 32] in [0, 1]
    """

    config_class = TokenizerConfig

    def __init__(self, config: TokenizerConfig | None = None):
        super().__init__()
        from diffusers import VQModel

        config = config or TokenizerConfig()
        if not isinstance(config, TokenizerConfig):
            raise TypeError(f"config must be a TokenizerConfig, got {type(config).__name__}")
        self.config = config
        n = len(config.block_out_channels)
        self.vq = VQModel(
            in_channels=3, out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
            block_out_channels=config.block_out_channels, layers_per_block=config.layers_per_block,
            latent_channels=config.latent_channels, sample_size=config.image_size,
            num_vq_embeddings=config.codebook_size, norm_num_groups=config.norm_num_groups,
            vq_embed_dim=config.vq_embed_dim, mid_block_add_attention=config.mid_block_add_attention,
        )
        self.training_info: dict = {}

    # -- sizes and device
    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def tokens_per_image(self) -> int:
        return self.config.tokens_per_image

    @property
    def codebook(self) -> torch.Tensor:
        """The code vectors, ``[codebook_size, vq_embed_dim]``."""
        return self.vq.quantize.embedding.weight

    @property
    def device(self) -> torch.device:
        return self.codebook.device

    # -- input checks
    def _check_images(self, images) -> torch.Tensor:
        size = self.config.image_size
        want = f"float images shaped [B, 3, {size}, {size}] with values in [0, 1]"
        if isinstance(images, np.ndarray):
            if images.dtype == np.uint8:
                raise ValueError(f"expected {want}, got a uint8 numpy array {images.shape}: use "
                                 "encode_uint8 for uint8 [B, H, W, 3] stickers")
            images = torch.from_numpy(np.asarray(images))
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"expected {want} as a torch.Tensor, got {type(images).__name__}")
        if not images.is_floating_point():
            raise ValueError(f"expected {want}, got dtype {images.dtype} (divide uint8 images by 255, "
                             "or use encode_uint8)")
        if images.ndim == 3 and images.shape[0] == 3:
            raise ValueError(f"expected {want}, got one image {tuple(images.shape)}: add a batch axis "
                             "(images[None])")
        if images.ndim != 4:
            raise ValueError(f"expected {want}, got shape {tuple(images.shape)}")
        if images.shape[1] != 3:
            hint = " (channels last? use images.permute(0, 3, 1, 2))" if images.shape[-1] == 3 else ""
            raise ValueError(f"expected {want}, got {images.shape[1]} channels in shape "
                             f"{tuple(images.shape)}{hint}")
        if tuple(images.shape[2:]) != (size, size):
            raise ValueError(f"expected {want}, got {images.shape[2]} x {images.shape[3]} pixels; "
                             f"resize to {size} x {size} first")
        if images.numel():
            if not torch.isfinite(images).all():
                raise ValueError(f"expected {want}, got NaN or infinite values")
            lo, hi = float(images.min()), float(images.max())
            if lo < 0.0 or hi > 1.0:
                raise ValueError(f"expected {want}, got values in [{lo:.3g}, {hi:.3g}] (images in "
                                 "[-1, 1]? map them with (x + 1) / 2; 0..255? divide by 255)")
        return images.to(device=self.device, dtype=torch.float32)

    def _check_codes(self, codes) -> torch.Tensor:
        n, k = self.tokens_per_image, self.codebook_size
        want = f"integer codes shaped [B, {n}] with values in 0..{k - 1}"
        if isinstance(codes, np.ndarray):
            codes = torch.from_numpy(codes)
        if not isinstance(codes, torch.Tensor):
            raise TypeError(f"expected {want} as a torch.Tensor, got {type(codes).__name__}")
        if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
            raise ValueError(f"expected {want}, got dtype {codes.dtype}")
        if codes.ndim == 3 and tuple(codes.shape[1:]) == (self.config.grid, self.config.grid):
            codes = codes.reshape(codes.shape[0], n)
        if codes.ndim != 2 or codes.shape[1] != n:
            raise ValueError(f"expected {want}, got shape {tuple(codes.shape)}"
                             + (" (one image? add a batch axis: codes[None])" if codes.ndim == 1 else ""))
        if codes.numel():
            lo, hi = int(codes.min()), int(codes.max())
            if lo < 0 or hi >= k:
                raise ValueError(f"expected {want}, got values in {lo}..{hi} (codes out of range; "
                                 "text or special token ids must be mapped back to visual codes first)")
        return codes.to(device=self.device, dtype=torch.long)

    # -- the pieces of the forward pass
    def _encode_latents(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> encoder output ``z_e`` ``[B, vq_embed_dim, grid, grid]``."""
        return self.vq.quant_conv(self.vq.encoder(x * 2.0 - 1.0))

    def _nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code (squared L2) of each vector of ``z`` ``[B, D, h, w]``."""
        flat = z.float().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        e = self.codebook.float()
        d = flat.pow(2).sum(1, keepdim=True) - 2.0 * flat @ e.t() + e.pow(2).sum(1)[None]
        return d.argmin(1).reshape(z.shape[0], -1)

    def _lookup(self, codes: torch.Tensor) -> torch.Tensor:
        g = self.config.grid
        q = self.codebook[codes]  # [B, 64, D]
        return q.reshape(codes.shape[0], g, g, -1).permute(0, 3, 1, 2).contiguous()

    def _decode_quantized(self, q: torch.Tensor) -> torch.Tensor:
        """Code vectors ``[B, D, grid, grid]`` -> images in about [0, 1] (not clamped)."""
        return (self.vq.decoder(self.vq.post_quant_conv(q)) + 1.0) / 2.0

    def forward(self, images: torch.Tensor, *, bf16: bool = False, pixel_loss: str = "mse") -> dict[str, torch.Tensor]:
        """Training pass (inputs assumed checked): reconstruction, codes and the VQ losses.
        ``bf16`` runs encoder and decoder under bfloat16 autocast; the code search and the
        losses are always float32. ``pixel_loss``: the pixel error, squared (``"mse"``) or absolute
        (``"l1"``)."""
        kind = images.device.type
        with torch.autocast(kind, dtype=torch.bfloat16, enabled=bf16):
            z = self._encode_latents(images)
        with torch.autocast(kind, enabled=False):
            z = z.float()
            codes = self._nearest(z.detach())
            q = self._lookup(codes)
            codebook_loss = F.mse_loss(q, z.detach())
            commit_loss = F.mse_loss(z, q.detach())
            q_st = z + (q - z).detach()  # straight-through: the decoder's gradient reaches the encoder
        with torch.autocast(kind, dtype=torch.bfloat16, enabled=bf16):
            recon = self._decode_quantized(q_st)
        recon = recon.float()
        if pixel_loss not in ("mse", "l1"):
            raise ValueError(f"pixel_loss must be 'mse' or 'l1', got {pixel_loss!r}")
        recon_loss = F.mse_loss(recon, images) if pixel_loss == "mse" else F.l1_loss(recon, images)
        loss = recon_loss + codebook_loss + self.config.beta * commit_loss
        return dict(loss=loss, recon_loss=recon_loss, codebook_loss=codebook_loss, commit_loss=commit_loss,
                    recon=recon, codes=codes, latents=z, quantized=q_st)

    # -- public API
    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Float images ``[B, 3, 32, 32]`` in [0, 1] -> codes, a LongTensor ``[B, 64]`` (row-major
        8 x 8 grid), on the tokenizer's device."""
        x = self._check_images(images)
        if x.shape[0] == 0:
            return torch.zeros(0, self.tokens_per_image, dtype=torch.long, device=self.device)
        return self._nearest(self._encode_latents(x))

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``[B, 64]`` (or ``[B, 8, 8]``) -> float images ``[B, 3, 32, 32]``, clamped to [0, 1]."""
        c = self._check_codes(codes)
        s = self.config.image_size
        if c.shape[0] == 0:
            return torch.zeros(0, 3, s, s, device=self.device)
        return self._decode_quantized(self._lookup(c)).clamp_(0.0, 1.0)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """``decode(encode(images))``: what the tokenizer keeps of an image."""
        return self.decode(self.encode(images))

    def encode_uint8(self, images: np.ndarray) -> torch.Tensor:
        """uint8 stickers ``[B, 32, 32, 3]`` (or one ``[32, 32, 3]``, giving ``[1, 64]``) -> codes."""
        arr = np.asarray(images)
        if arr.dtype != np.uint8:
            raise ValueError(f"encode_uint8 expects uint8 images [B, H, W, 3], got {arr.dtype}; "
                             "use encode for float images in [0, 1]")
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise ValueError(f"encode_uint8 expects uint8 images shaped [B, H, W, 3], got {arr.shape}")
        return self.encode(to_tensor(arr))

    def extra_repr(self) -> str:
        c = self.config
        return (f"{c.image_size}px -> {c.grid}x{c.grid} codes of {c.codebook_size}, "
                f"channels={c.block_out_channels}")


# ---------------------------------------------------------------------------------- metrics
def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, one value per image, for images in [0, 1] shaped
    ``[B, C, H, W]`` (or ``[C, H, W]``): ``10 log10(1 / MSE)``; identical images give 100 dB
    (MSE floored at 1e-10)."""
    if a.shape != b.shape:
        raise ValueError(f"psnr needs two image batches of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.ndim == 3:
        a, b = a[None], b[None]
    if a.ndim != 4:
        raise ValueError(f"psnr expects images [B, C, H, W] or [C, H, W], got shape {tuple(a.shape)}")
    mse = (a.float() - b.float().to(a.device)).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-10))


def codebook_usage(codes: torch.Tensor | np.ndarray, codebook_size: int) -> dict[str, float]:
    """How the codebook is used by a set of codes (any shape): ``usage`` = fraction of the
    ``codebook_size`` codes that appear at least once; ``perplexity`` = exp(entropy) of the code
    histogram (= codebook_size when every code is equally frequent); ``used`` = count."""
    c = torch.as_tensor(np.asarray(codes) if isinstance(codes, np.ndarray) else codes).reshape(-1).long().cpu()
    if c.numel() and (int(c.min()) < 0 or int(c.max()) >= codebook_size):
        raise ValueError(f"codes must lie in 0..{codebook_size - 1}, got {int(c.min())}..{int(c.max())}")
    counts = torch.bincount(c, minlength=codebook_size).double()
    if counts.sum() == 0:
        return dict(usage=0.0, perplexity=0.0, used=0)
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return dict(usage=float((counts > 0).double().mean()), perplexity=float(entropy.exp()),
                used=int((counts > 0).sum()))


def _as_cells(stickers: StickerSet, cells) -> np.ndarray:
    """A bool mask ``[n_styles, n_emoji]`` or an int array ``[N, 2]`` -> int ``[N, 2]``."""
    cells = np.asarray(cells)
    if cells.dtype == bool:
        if cells.shape != tuple(stickers.shape):
            raise ValueError(f"a cell mask must be shaped {tuple(stickers.shape)}, got {cells.shape}")
        return np.argwhere(cells)
    if cells.ndim != 2 or cells.shape[1] != 2 or not np.issubdtype(cells.dtype, np.integer):
        raise ValueError(f"cells must be a bool mask {tuple(stickers.shape)} or int (style, emoji) pairs "
                         f"[N, 2], got {cells.dtype} {cells.shape}")
    return cells


@torch.no_grad()
def evaluate_tokenizer(tok: VisualTokenizer, stickers: StickerSet, cells, *,
                       batch_size: int = 256) -> dict[str, float]:
    """Mean / std / min PSNR of ``decode(encode(x))`` over ``cells`` (bool mask or (style,
    emoji) pairs), with the codebook usage and perplexity of their codes."""
    cells = _as_cells(stickers, cells)
    if len(cells) == 0:
        raise ValueError("evaluate_tokenizer got no cells")
    scores, all_codes = [], []
    was_training = tok.training
    tok.eval()
    for i in range(0, len(cells), batch_size):
        x = stickers.batch(cells[i:i + batch_size], as_torch=True).to(tok.device)
        codes = tok.encode(x)
        scores.append(psnr(tok.decode(codes), x).cpu())
        all_codes.append(codes.cpu())
    tok.train(was_training)
    s = torch.cat(scores).double()
    use = codebook_usage(torch.cat(all_codes), tok.codebook_size)
    return dict(psnr=float(s.mean()), psnr_std=float(s.std()) if len(s) > 1 else 0.0,
                psnr_min=float(s.min()), usage=use["usage"], perplexity=use["perplexity"],
                n_images=int(len(cells)))


# ---------------------------------------------------------------------------------- training
def training_cells(stickers: StickerSet, exclude: np.ndarray | None = None) -> np.ndarray:
    """The (style, emoji) pairs ``[N, 2]`` the tokenizer trains on: every cell not in
    ``exclude`` (a bool mask ``[n_styles, n_emoji]``; default: the held-out cells)."""
    mask = heldout_cells(stickers) if exclude is None else np.asarray(exclude)
    if mask.dtype != bool or mask.shape != tuple(stickers.shape):
        raise ValueError(f"exclude must be a bool mask shaped {tuple(stickers.shape)}, got "
                         f"{mask.dtype} {mask.shape}")
    cells = np.argwhere(~mask)
    if len(cells) == 0:
        raise ValueError("every cell is excluded: nothing to train the tokenizer on")
    return cells


def iterate_batches(stickers: StickerSet, cells: np.ndarray, batch_size: int, *,
                    rng: np.random.Generator) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """One epoch over ``cells`` in a random order: yields ``(cells_batch [b, 2], images
    float [b, 3, H, W])``; the last batch may be smaller (it is dropped if under half size,
    unless it is the only one)."""
    order = rng.permutation(len(cells))
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        if i and len(idx) < batch_size // 2:
            break
        batch = cells[idx]
        yield batch, stickers.batch(batch, as_torch=True)


def _restart_dead_codes(tok: VisualTokenizer, ema_counts: torch.Tensor, latents: torch.Tensor,
                        threshold: float, gen: torch.Generator) -> int:
    """Move codes whose running use is under ``threshold`` onto random encoder outputs."""
    dead = torch.nonzero(ema_counts < threshold).flatten()
    if len(dead) == 0:
        return 0
    pool = latents.detach().float().permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    pick = torch.randint(len(pool), (len(dead),), generator=gen).to(pool.device)
    noise = torch.randn(len(dead), pool.shape[1], generator=gen).to(pool.device) * 1e-3
    with torch.no_grad():
        tok.codebook[dead.to(tok.device)] = (pool[pick] + noise).to(tok.codebook.dtype)
    ema_counts[dead] = 1.0
    return int(len(dead))


def train_tokenizer(stickers: StickerSet, *, config: TokenizerConfig | None = None, epochs: float = 6,
                    batch_size: int = 64, lr: float = 2e-3, seed: int = 0, device: str | torch.device = "auto",
                    progress: bool = True, exclude: np.ndarray | None = None, max_steps: int | None = None,
                    bf16: bool | None = None, restart_every: int = 10, restart_until: float = 0.8,
                    log_every: int = 10, weight_decay: float = 0.0, style_weight: float = 0.0,
                    recon: str = "mse", decoder_of: VisualTokenizer | None = None,
                    threads: int | None = None) -> tuple[VisualTokenizer, dict[str, list]]:
    """Train a :class:`VisualTokenizer` on every cell of ``stickers`` not in ``exclude``
    (default: :func:`drclib.data.heldout_cells`, which no training may use).

    Adam with a short warm-up and a cosine decay of ``lr``; ``epochs`` may be fractional;
    ``max_steps`` caps the steps (tests, the quick profile). Losses: reconstruction MSE +
    codebook + ``beta`` x commitment (see the module docstring). Every ``restart_every``
    steps, codes used less than once in ~20 batches (running count) are restarted on random
    encoder outputs, until ``restart_until`` of the run. ``style_weight`` > 0 adds
    ``style_weight`` x the cross-entropy of a linear style head on the image's mean code vector
    (straight-through, so it shapes the encoder and, through the codebook term, the codes; the
    head is trained alongside and not saved). ``recon`` is the pixel error, ``"mse"`` or ``"l1"``.
    ``decoder_of`` (a trained tokenizer, left untouched) starts from a copy of it and trains only
    ``post_quant_conv`` and the decoder: the encoder and codebook stay (no restarts), so the codes
    are the same; ``config`` must then be None. ``bf16`` (default: on for CPU and
    bf16-capable GPUs) runs encoder and decoder under bfloat16 autocast; the code search and
    losses stay float32. Deterministic for a given ``seed`` on a given machine. ``threads``
    sets ``torch.set_num_threads`` for the run (and restores it after): use 1 when other jobs
    share the CPU (measured: with two other busy processes on the 2 cores, 2 threads made a
    step 15-35x slower than 1 thread).

    Returns ``(tokenizer in eval mode, history)``; ``history`` holds lists (one entry every
    ``log_every`` steps) ``step, epoch, seconds, loss, recon, codebook, commit, style, psnr, usage,
    perplexity, restarted, lr`` (``style``: the style head's cross-entropy, 0 without it), plus
    ``n_train_images``.
    """
    if epochs <= 0 or batch_size < 1 or lr <= 0:
        raise ValueError(f"need epochs > 0, batch_size >= 1 and lr > 0; got {epochs}, {batch_size}, {lr}")
    if not style_weight >= 0:
        raise ValueError(f"style_weight must be >= 0 (0: no style objective), got {style_weight}")
    if recon not in ("mse", "l1"):
        raise ValueError(f"recon must be 'mse' or 'l1', got {recon!r}")
    if decoder_of is not None and config is not None:
        raise ValueError("decoder_of keeps that tokenizer's config: pass config=None")
    dev = pick_device(device)
    old_threads = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(int(threads))
    try:
        return _train(stickers, config, epochs, batch_size, lr, seed, dev, progress, exclude, max_steps, bf16,
                      restart_every, restart_until, log_every, weight_decay, style_weight, recon, decoder_of)
    finally:
        torch.set_num_threads(old_threads)


def _train(stickers, config, epochs, batch_size, lr, seed, dev, progress, exclude, max_steps, bf16,
           restart_every, restart_until, log_every, weight_decay, style_weight, recon, decoder_of):
    from tqdm.auto import tqdm

    config = decoder_of.config if decoder_of is not None else (config or TokenizerConfig())
    if stickers.image_size != config.image_size:
        raise ValueError(f"stickers are {stickers.image_size}px but the config expects {config.image_size}px")
    cells = training_cells(stickers, exclude)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tok = VisualTokenizer(config)
        head = torch.nn.Linear(config.vq_embed_dim, stickers.shape[0]) if style_weight else None
    if decoder_of is not None:  # the same codes, drawn anew: only post_quant_conv and the decoder learn
        tok.load_state_dict(decoder_of.state_dict())
        for name, p in tok.named_parameters():
            p.requires_grad_(name.startswith(("vq.post_quant_conv.", "vq.decoder.")))
        restart_every = 0
    tok.to(dev).train()
    params = [p for p in tok.parameters() if p.requires_grad]
    if head is not None:
        head.to(dev)
        params += list(head.parameters())
    use_bf16 = resolve_bf16(bf16, dev)

    steps_per_epoch = max(1, sum(1 for i in range(0, len(cells), batch_size)
                                 if i == 0 or len(cells) - i >= batch_size // 2))
    total = max(1, int(round(epochs * steps_per_epoch)))
    if max_steps is not None:
        total = max(1, min(total, int(max_steps)))
    warmup = min(100, max(1, total // 20))
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))
    K = config.codebook_size
    ema = torch.ones(K, dtype=torch.float64)  # running uses a batch; a new code counts as used once
    threshold = 0.05  # fewer than one use in ~20 batches: unused for about 30 steps
    history: dict[str, list] = {k: [] for k in ("step", "epoch", "seconds", "loss", "recon", "codebook",
                                                "commit", "style", "psnr", "usage", "perplexity", "restarted",
                                                "lr")}
    history["n_train_images"] = int(len(cells))
    window: dict[str, list] = {k: [] for k in ("loss", "recon", "codebook", "commit", "style", "psnr")}
    window_codes: list[torch.Tensor] = []
    restarted = 0
    step, t0 = 0, time.perf_counter()
    bar = tqdm(total=total, desc="tokenizer", disable=not progress, unit="step")
    done = False
    epoch = 0
    while not done:
        for batch, x in iterate_batches(stickers, cells, batch_size, rng=rng):
            x = x.to(dev)
            if step == 0 and decoder_of is None:  # start the codebook on encoder outputs (a random pick)
                with torch.no_grad():
                    z0 = tok._encode_latents(x).float()
                    _restart_dead_codes(tok, torch.zeros(K, dtype=torch.float64), z0, 1.0, gen)
            out = tok(x, bf16=use_bf16, pixel_loss=recon)
            out["style_loss"] = torch.zeros(())
            if head is not None:  # the study's style objective: the artist read from the mean code vector
                styles = torch.as_tensor(batch[:, 0], device=dev)
                out["style_loss"] = F.cross_entropy(head(out["quantized"].mean((2, 3))), styles)
                out["loss"] = out["loss"] + style_weight * out["style_loss"]
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            opt.step()
            sched.step()
            step += 1
            counts = torch.bincount(out["codes"].flatten().cpu(), minlength=K).double()
            ema.mul_(0.9).add_(counts, alpha=0.1)
            if restart_every and step % restart_every == 0 and step < restart_until * total:
                restarted += _restart_dead_codes(tok, ema, out["latents"], threshold, gen)
            with torch.no_grad():
                window["psnr"].append(float(psnr(out["recon"].clamp(0, 1), x).mean()))
            for k, name in (("loss", "loss"), ("recon", "recon_loss"), ("codebook", "codebook_loss"),
                            ("commit", "commit_loss"), ("style", "style_loss")):
                window[k].append(float(out[name].detach()))
            window_codes.append(out["codes"].detach().cpu())
            if step % log_every == 0 or step == total:
                use = codebook_usage(torch.cat(window_codes), K)
                history["step"].append(step)
                history["epoch"].append(step / steps_per_epoch)
                history["seconds"].append(time.perf_counter() - t0)
                for k in window:
                    history[k].append(float(np.mean(window[k])))
                    window[k].clear()
                window_codes.clear()
                history["usage"].append(use["usage"])
                history["perplexity"].append(use["perplexity"])
                history["restarted"].append(restarted)
                history["lr"].append(sched.get_last_lr()[0])
                bar.set_postfix(loss=f"{history['loss'][-1]:.4f}", psnr=f"{history['psnr'][-1]:.1f}",
                                usage=f"{use['usage']:.2f}")
            bar.update(1)
            if step >= total:
                done = True
                break
        epoch += 1
    bar.close()
    history["train_seconds"] = time.perf_counter() - t0
    tok.eval()
    tok.training_info = dict(seed=seed, epochs=epochs, steps=step, batch_size=batch_size, lr=lr,
                             style_weight=style_weight, recon=recon, decoder_only=decoder_of is not None,
                             bf16=use_bf16, threads=torch.get_num_threads(), n_train_images=int(len(cells)))
    return tok, history


# ---------------------------------------------------------------------------------- shipped checkpoint
@torch.no_grad()
def shifted_and_scaled(images: torch.Tensor, generator: torch.Generator | None = None, *, max_shift: float = 2.0,
                       scale: float = 0.1) -> torch.Tensor:
    """Each image of ``images`` (``[B, 3, H, W]`` in [0, 1]) shifted by up to ``max_shift`` px and
    scaled by ``1 +- scale``, filled with white: the same sticker under another code sequence, the
    augmentation the shipped LMM's pretraining draws from (:func:`augmented_codes`)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"shifted_and_scaled needs [B, 3, H, W] images, got shape {tuple(images.shape)}")
    b = len(images)
    s = 1 + (torch.rand(b, generator=generator) * 2 - 1) * scale
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / s
    theta[:, :, 2] = (torch.rand(b, 2, generator=generator) * 2 - 1) * max_shift * 2 / images.shape[-1]
    grid = F.affine_grid(theta, list(images.shape), align_corners=False).to(images.device)
    return 1 - F.grid_sample(1 - images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@torch.no_grad()
def augmented_codes(tok: VisualTokenizer, stickers: StickerSet, copies: int, *, seed: int = 0,
                    max_shift: float = 2.0, scale: float = 0.1, batch_size: int = 512) -> torch.Tensor:
    """Codes of ``copies`` versions of every sticker, ``[copies, n_styles, n_emoji, 64]``: copy 0
    is the sticker itself, the others are shifted by up to ``max_shift`` px and scaled by
    ``1 +- scale`` (white fill), then encoded. No colour change (colour is part of a style).
    Augmentation for the LMM's pretraining: the same cell under many code sequences."""
    if copies < 1:
        raise ValueError(f"copies must be >= 1, got {copies}")
    gen = torch.Generator().manual_seed(seed)
    flat = torch.from_numpy(stickers.images.reshape(-1, *stickers.images.shape[2:])).permute(0, 3, 1, 2).float() / 255
    out = []
    for c in range(copies):
        x = shifted_and_scaled(flat, gen, max_shift=max_shift, scale=scale) if c else flat
        out.append(torch.cat([tok.encode(x[i:i + batch_size].to(tok.device)).cpu()
                              for i in range(0, len(x), batch_size)]))
    return torch.stack(out).view(copies, stickers.n_styles, stickers.n_emoji, -1)


def default_checkpoint_dir() -> Path:
    """Where the kit's trained tokenizer lives: ``<repo>/data/checkpoints/tokenizer``."""
    return shipped_dir("tokenizer")


def load_default(device: str | torch.device = "cpu") -> VisualTokenizer:
    """Load the shipped tokenizer (:func:`default_checkpoint_dir`) on ``device``."""
    return load_shipped(VisualTokenizer, default_checkpoint_dir(), f"{TRAIN_HINT}  (about 10 minutes on a 2-core CPU)",
                        pick_device(device))


def heldout_probe_cells(stickers: StickerSet, n: int = 64) -> np.ndarray:
    """A fixed subset of ``n`` held-out cells (evenly spaced in row-major order) used to check
    that a shipped checkpoint still scores what its card says."""
    cells = np.argwhere(heldout_cells(stickers))
    idx = np.linspace(0, len(cells) - 1, min(n, len(cells))).round().astype(int)
    return cells[idx]


def _card(cmd: str, seconds: float, config: TokenizerConfig, hist: dict, metrics: dict, n_train: int,
          n_heldout: int, size_mb: float) -> str:
    cfg = "\n".join(f"| `{k}` | `{v}` |" for k, v in dataclasses.asdict(config).items())
    tr, ho = metrics["train"], metrics["heldout"]
    return f"""# drc-kit visual tokenizer (diffusers `VQModel`)

32 x 32 RGB sticker <-> 8 x 8 grid of ids from a codebook of {config.codebook_size}
(64 tokens an image, row-major). The stand-in for LaVIT's visual tokenizer in drc-kit.
Load it with `drclib.backbone.tokenizer.load_default()` or `VisualTokenizer.from_pretrained(this_folder)`.

## How it was made

```bash
{cmd}
```

- Training time: **{seconds / 60:.1f} min** ({seconds:.0f} s) on {platform.processor() or platform.machine()},
  {hist.get('threads')} thread(s), torch {torch.__version__}, bf16 autocast: {hist.get('bf16')}
  (the machine has 2 cores; another job shared the CPU during the run).
- Steps: {hist['steps']} of batch {hist['batch_size']} ({hist['epochs']} epochs), Adam lr {hist['lr']}
  with warm-up and cosine decay, seed {hist['seed']}; dead-code restarts: {hist['restarted']}; pixel error
  {hist.get('recon', 'mse')}; style objective weight {hist.get('style_weight', 0.0)} (0: reconstruction and the VQ
  terms only){'; only the decoder trained, encoder and codebook kept from `--decoder-of`' if hist.get('decoder_only') else ''}.
- Data: `data/stickers_32px.npz`, every (style, emoji) cell except the {n_heldout} held-out cells
  of `drclib.data.heldout_cells` ({n_train} training images, all six styles).
- Weights stored as float16 ({size_mb:.2f} MB); the metrics below are measured with these
  float16 weights (loaded back as float32).

## Config

| field | value |
|---|---|
{cfg}

## Measured

| cells | images | PSNR mean (dB) | PSNR std | PSNR min | codebook usage | perplexity |
|---|---|---|---|---|---|---|
| training | {tr['n_images']} | {tr['psnr']:.2f} | {tr['psnr_std']:.2f} | {tr['psnr_min']:.2f} | {tr['usage']:.3f} | {tr['perplexity']:.1f} |
| held-out | {ho['n_images']} | {ho['psnr']:.2f} | {ho['psnr_std']:.2f} | {ho['psnr_min']:.2f} | {ho['usage']:.3f} | {ho['perplexity']:.1f} |

Probe (64 fixed held-out cells, `drclib.backbone.tokenizer.heldout_probe_cells`, checked by the tests):
PSNR {metrics['probe_psnr']:.3f} dB.

Licence: the weights are derived from the sticker set (CC BY-SA 4.0 as a whole; see `data/NOTICE`).
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m drclib.backbone.tokenizer",
                                     description="Train, evaluate and save the visual tokenizer.")
    parser.add_argument("--epochs", type=float, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--no-bf16", action="store_true", help="train in float32 (default: bf16 autocast)")
    parser.add_argument("--out", default=str(default_checkpoint_dir()))
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (use 1 when other jobs share the CPU)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--codebook-size", type=int, default=TokenizerConfig.codebook_size,
                        help=f"codes in the codebook (a study: the kit's LMM and every later part read the shipped "
                             f"{TokenizerConfig.codebook_size})")
    parser.add_argument("--vq-embed-dim", type=int, default=TokenizerConfig.vq_embed_dim,
                        help="numbers per code vector (a study, like --codebook-size)")
    parser.add_argument("--grid", type=int, choices=(8, 16), default=TokenizerConfig.grid,
                        help="codes per side (a study: 16 gives 256 codes of 2 x 2 pixels, the shipped blocks "
                             "less the last downsampling one)")
    parser.add_argument("--style-weight", type=float, default=0.0,
                        help="weight of a style objective beside reconstruction (a study; 0: none, as shipped)")
    parser.add_argument("--recon-loss", choices=("mse", "l1"), default="mse",
                        help="the pixel error, squared (as shipped) or absolute (a study)")
    parser.add_argument("--decoder-of", default=None, metavar="FOLDER",
                        help="retrain only the decoder of this trained tokenizer, its codes kept (a study; the "
                             "shape flags above are then its own)")
    args = parser.parse_args(argv)
    blocks = TokenizerConfig.block_out_channels[: int(math.log2(TokenizerConfig.image_size // args.grid)) + 1]
    config = TokenizerConfig(codebook_size=args.codebook_size, vq_embed_dim=args.vq_embed_dim, grid=args.grid,
                             block_out_channels=blocks)
    cmd = "python -m drclib.backbone.tokenizer " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))

    if args.threads is not None:
        torch.set_num_threads(args.threads)  # also for the evaluation after training
    stickers = StickerSet.load()
    t0 = time.perf_counter()
    decoder_of = VisualTokenizer.from_pretrained(args.decoder_of) if args.decoder_of else None
    tok, hist = train_tokenizer(stickers, config=None if decoder_of else config, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                seed=args.seed, device=args.device, progress=not args.no_progress,
                                max_steps=args.max_steps, bf16=False if args.no_bf16 else None,
                                style_weight=args.style_weight, recon=args.recon_loss, decoder_of=decoder_of,
                                threads=args.threads)
    seconds = time.perf_counter() - t0
    tok = tok.cpu()
    with torch.no_grad():  # score the weights that ship: round them to float16 first
        for p in tok.parameters():
            p.copy_(p.half().float())
    held = heldout_cells(stickers)
    metrics = dict(train=evaluate_tokenizer(tok, stickers, ~held), heldout=evaluate_tokenizer(tok, stickers, held))
    metrics["probe_psnr"] = evaluate_tokenizer(tok, stickers, heldout_probe_cells(stickers))["psnr"]
    info = dict(tok.training_info, restarted=hist["restarted"][-1] if hist["restarted"] else 0)
    n_params = sum(p.numel() for p in tok.parameters())
    extra = dict(metrics=metrics, training=dict(info, seconds=round(seconds, 1), command=cmd),
                 final_loss=hist["loss"][-1] if hist["loss"] else None, n_params=n_params)
    card = _card(cmd, seconds, tok.config, info, metrics, int((~held).sum()), int(held.sum()), n_params * 2 / 1e6)
    out = tok.save_pretrained(args.out, dtype=torch.float16, card=card, extra=extra)
    size = (out / "model.safetensors").stat().st_size / 1e6
    print(f"trained in {seconds:.0f} s; PSNR train {metrics['train']['psnr']:.2f} dB, held-out "
          f"{metrics['heldout']['psnr']:.2f} dB; usage {metrics['train']['usage']:.3f} (train), "
          f"{metrics['heldout']['usage']:.3f} (held-out); weights {size:.2f} MB -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
