"""Checking and augmenting sticker images (``[B, 3, H, W]`` floats in ``[0, 1]``).

- :func:`check_images`: the one place that says what an image batch must look like, with an
  error that says what was wrong and what to do;
- :func:`augment`: the augmentation the judges and the semantic encoder train with (small
  shifts and scaling, light blur, noise, a down/up-sampling that mimics the tokenizer's
  reconstructions, and, with ``colour=True``, hue/saturation jitter).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


# =============================================================================== input checks
def check_images(images: torch.Tensor, image_size: int | None = None, name: str = "images") -> torch.Tensor:
    """Check a float image batch ``[B, 3, H, W]`` in [0, 1] (a single ``[3, H, W]`` image is
    given a batch axis); raises ``ValueError`` saying what is wrong and how to fix it."""
    if not isinstance(images, torch.Tensor):
        if isinstance(images, np.ndarray):
            raise ValueError(f"{name} is a numpy array; convert uint8 [..., H, W, 3] images with "
                             "drclib.data.to_tensor(images) first")
        raise ValueError(f"{name} must be a torch tensor [B, 3, H, W] in [0, 1], got {type(images).__name__}")
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4 or images.shape[1] != 3:
        hint = " (channels last? use x.permute(0, 3, 1, 2))" if images.ndim == 4 and images.shape[-1] == 3 else ""
        raise ValueError(f"{name} must be shaped [B, 3, H, W], got {tuple(images.shape)}{hint}")
    if image_size is not None and tuple(images.shape[-2:]) != (image_size, image_size):
        raise ValueError(f"{name} must be {image_size} x {image_size} pixels, got "
                         f"{tuple(images.shape[-2:])}; resize with torch.nn.functional.interpolate "
                         f"(size={image_size}, mode='bilinear', antialias=True)")
    if not images.is_floating_point():
        raise ValueError(f"{name} must be float in [0, 1], got {images.dtype}; divide uint8 images by 255 "
                         "(drclib.data.to_tensor does it)")
    if images.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch")
    if not torch.isfinite(images).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        hint = " (looks like [-1, 1]: use (x + 1) / 2)" if lo >= -1.001 and hi <= 1.001 else \
            " (looks like 0..255: divide by 255)" if hi > 1.5 else ""
        raise ValueError(f"{name} must be in [0, 1], got values in [{lo:.3g}, {hi:.3g}]{hint}")
    return images


# =============================================================================== augmentation
def _blur3(x: torch.Tensor, sigma: float = 0.8) -> torch.Tensor:
    k1 = torch.exp(-torch.tensor([1.0, 0.0, 1.0]) / (2 * sigma * sigma))
    k1 = (k1 / k1.sum()).to(x)
    k = (k1[:, None] * k1[None, :]).expand(3, 1, 3, 3).contiguous()
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=3)


def augment(x: torch.Tensor, generator: torch.Generator, *, colour: bool, strength: float = 1.0) -> torch.Tensor:
    """Random augmentation of a batch ``[B, 3, H, W]`` in [0, 1] (white background), for
    judging generated stickers rather than memorising the shipped pixels:

    - geometry: shifts up to +-2 px (at 32 px), scale 0.9-1.1, rotation up to +-6 degrees;
      no flips (left- and right-pointing emoji are different emoji); the border fills white;
    - reconstruction artefacts: a blend with a blurred copy, with a down/up-sampled copy
      (the tokenizer's 4x downsampling loses detail this way), and Gaussian noise;
    - colour (``colour=True``, the emoji classifier only): hue rotation up to +-25 degrees,
      saturation and brightness/contrast jitter. The style classifier gets none of it:
      palette and shading are part of an artist's style.
    """
    b, _, h, w = x.shape
    dev = x.device

    def u(lo, hi, n=b):
        return (torch.rand(n, generator=generator) * (hi - lo) + lo).to(dev)

    s = strength
    scale = u(1 - 0.1 * s, 1 + 0.1 * s)
    ang = u(-6 * s, 6 * s) * math.pi / 180
    tx, ty = u(-2 * s, 2 * s) * 2 / w, u(-2 * s, 2 * s) * 2 / h
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = 1 - F.grid_sample(1 - x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # reconstruction-like degradations, each on a random part of the batch, blended
    a = u(0, 1) * (u(0, 1) < 0.4 * s)
    x = torch.lerp(x, _blur3(x), a.view(b, 1, 1, 1))
    a = u(0, 1) * (u(0, 1) < 0.3 * s)
    lowres = F.interpolate(F.interpolate(x, scale_factor=0.5, mode="bilinear", antialias=True),
                           size=(h, w), mode="bilinear", align_corners=False)
    x = torch.lerp(x, lowres, a.view(b, 1, 1, 1))
    if colour:
        # hue rotation about the grey axis (an orthogonal map of RGB space), then saturation
        hue = u(-25 * s, 25 * s) * math.pi / 180
        c, sn = torch.cos(hue), torch.sin(hue)
        k = 1 / 3
        r3 = math.sqrt(k)
        m = torch.empty(b, 3, 3, device=dev)
        m[:, 0, 0] = c + (1 - c) * k
        m[:, 0, 1] = k * (1 - c) - r3 * sn
        m[:, 0, 2] = k * (1 - c) + r3 * sn
        m[:, 1, 0] = k * (1 - c) + r3 * sn
        m[:, 1, 1] = c + k * (1 - c)
        m[:, 1, 2] = k * (1 - c) - r3 * sn
        m[:, 2, 0] = k * (1 - c) - r3 * sn
        m[:, 2, 1] = k * (1 - c) + r3 * sn
        m[:, 2, 2] = c + k * (1 - c)
        x = torch.einsum("bij,bjhw->bihw", m, x)
        grey = x.mean(1, keepdim=True)
        x = grey + (x - grey) * u(1 - 0.3 * s, 1 + 0.2 * s).view(b, 1, 1, 1)
        x = (x - 1) * u(1 - 0.15 * s, 1 + 0.15 * s).view(b, 1, 1, 1) + 1  # contrast about white
    noise = u(0, 0.03 * s) * (u(0, 1) < 0.5 * s)
    x = x + noise.view(b, 1, 1, 1) * torch.randn(x.shape, generator=generator).to(dev)
    return x.clamp_(0, 1)
