"""The latent resizers LUA is compared against (ComfyUI's "Upscale Latent By" methods)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

LATENT_METHODS = ("nearest-exact", "bilinear", "bicubic", "bislerp")


def _slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of channel vectors (dim 1), magnitudes interpolated linearly."""
    na, nb = a.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)
    ua, ub = a / na.clamp_min(1e-8), b / nb.clamp_min(1e-8)
    cos = (ua * ub).sum(1, keepdim=True).clamp(-1 + 1e-6, 1 - 1e-6)
    omega = torch.acos(cos)
    so = torch.sin(omega)
    direction = (torch.sin((1 - t) * omega) * ua + torch.sin(t * omega) * ub) / so
    near = cos > 1 - 1e-4  # nearly parallel: plain lerp is exact enough and stable
    direction = torch.where(near, (1 - t) * ua + t * ub, direction)
    return direction * ((1 - t) * na + t * nb)


def _bislerp_axis(x: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    n = x.shape[dim]
    pos = ((torch.arange(size, device=x.device, dtype=x.dtype) + 0.5) * n / size - 0.5).clamp(0, n - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=n - 1)
    t = (pos - lo).to(x.dtype)
    shape = [1] * x.ndim
    shape[dim] = size
    return _slerp(x.index_select(dim, lo), x.index_select(dim, hi), t.view(shape))


def bislerp(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Separable slerp resize of [B, C, H, W], the idea behind ComfyUI's 'bislerp' (our own code)."""
    return _bislerp_axis(_bislerp_axis(x.float(), size[0], 2), size[1], 3).to(x.dtype)


def resize_latent(x: torch.Tensor, size: tuple[int, int], method: str) -> torch.Tensor:
    """Resize a latent [B, C, H, W] with one of LATENT_METHODS."""
    if method == "bislerp":
        return bislerp(x, size)
    if method not in LATENT_METHODS:
        raise ValueError(f"unknown latent resize method {method!r}; expected one of {LATENT_METHODS}")
    kwargs = {} if method == "nearest-exact" else {"align_corners": False}
    return F.interpolate(x, size=size, mode=method, **kwargs)
