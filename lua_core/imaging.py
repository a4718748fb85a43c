"""Image I/O and resampling helpers shared by training, evaluation and the demo."""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image as uint8 RGB [H, W, 3]: EXIF orientation applied, alpha composited over white."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            im = Image.alpha_composite(canvas, rgba)
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> float [1, 3, H, W] in [0, 1]."""
    return torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).float() / 255.0


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """float [1, 3, H, W] or [3, H, W] -> uint8 [H, W, 3] (clamped)."""
    if img.ndim == 4:
        img = img[0]
    return (img.detach().float().clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def bicubic_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Antialiased bicubic resize of [B, C, H, W] (the paper's LR protocol and pixel baseline)."""
    return F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)


def synthetic_smooth_tile(size: int, rng: np.random.Generator) -> torch.Tensor:
    """A flat colour, linear or radial gradient [1, 3, S, S]: teaches the model that flat stays flat."""
    a, b = rng.uniform(0.02, 0.98, 3), rng.uniform(0.02, 0.98, 3)
    kind = rng.integers(0, 3)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    if kind == 0:
        t = np.zeros((size, size))
    elif kind == 1:
        angle = rng.uniform(0, 2 * np.pi)
        t = np.cos(angle) * xx + np.sin(angle) * yy
        t = (t - t.min()) / max(np.ptp(t), 1e-6)
    else:
        cy, cx = rng.uniform(0, 1, 2)
        t = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
        t = t / max(t.max(), 1e-6)
    img = a[:, None, None] * (1 - t) + b[:, None, None] * t
    return torch.from_numpy(img).float().unsqueeze(0).clamp(0, 1)
