"""Image quality metrics on [B, 3, H, W] tensors in [0, 1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def psnr(x: torch.Tensor, y: torch.Tensor, border: int = 0) -> torch.Tensor:
    """Per-image PSNR in dB after clamping to [0, 1], ignoring `border` pixels on each side."""
    if border:
        x, y = x[..., border:-border, border:-border], y[..., border:-border, border:-border]
    mse = (x.clamp(0, 1) - y.clamp(0, 1)).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    g = torch.exp(-((torch.arange(size) - size // 2) ** 2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(x: torch.Tensor, y: torch.Tensor, border: int = 0) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004: 11x11 Gaussian, sigma 1.5, on the luma channel)."""
    if border:
        x, y = x[..., border:-border, border:-border], y[..., border:-border, border:-border]
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    x = (x.clamp(0, 1) * weights).sum(1, keepdim=True)
    y = (y.clamp(0, 1) * weights).sum(1, keepdim=True)
    w = _gaussian_window().to(x)[None, None]
    c1, c2 = 0.01**2, 0.03**2
    mx, my = F.conv2d(x, w), F.conv2d(y, w)
    sxx = F.conv2d(x * x, w) - mx * mx
    syy = F.conv2d(y * y, w) - my * my
    sxy = F.conv2d(x * y, w) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1)
