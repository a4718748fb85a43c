"""The curriculum's loss terms (lua-paper.md), as short pure functions."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..imaging import bicubic_resize

SCHARR_X = torch.tensor([[3.0, 0.0, -3.0], [10.0, 0.0, -10.0], [3.0, 0.0, -3.0]]) / 16.0


def fft_magnitude_l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L1 between channel-wise 2-D FFT magnitudes (orthonormal, so size-independent)."""
    fx = torch.fft.rfft2(x.float(), norm="ortho").abs()
    fy = torch.fft.rfft2(y.float(), norm="ortho").abs()
    return F.l1_loss(fx, fy)


def gaussian_blur(x: torch.Tensor, kernel: int = 5, sigma: float = 1.0) -> torch.Tensor:
    """Depthwise Gaussian blur with reflect padding."""
    r = torch.arange(kernel, dtype=x.dtype, device=x.device) - kernel // 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    c = x.shape[1]
    x = F.pad(x, (kernel // 2,) * 4, mode="reflect")
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, kernel), groups=c)
    return F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, kernel, 1), groups=c)


def high_frequency(x: torch.Tensor) -> torch.Tensor:
    """x - GaussianBlur(x) (kernel 5, sigma 1)."""
    return x - gaussian_blur(x)


def luminance(x: torch.Tensor) -> torch.Tensor:
    """Rec.601 luma of [B, 3, H, W]."""
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def edge_map(x: torch.Tensor) -> torch.Tensor:
    """Edge strength: Scharr gradient magnitude of luma, then 3x3 local variance, scaled to [0, 1] per image."""
    y = F.pad(luminance(x), (1, 1, 1, 1), mode="replicate")
    kx = SCHARR_X.to(x)[None, None]
    gx, gy = F.conv2d(y, kx), F.conv2d(y, kx.transpose(-1, -2))
    mag = (gx.square() + gy.square() + 1e-12).sqrt()
    mean = F.avg_pool2d(mag, 3, 1, 1, count_include_pad=False)
    var = (F.avg_pool2d(mag.square(), 3, 1, 1, count_include_pad=False) - mean.square()).clamp_min(0)
    return var / var.flatten(1).amax(1).clamp_min(1e-8).view(-1, 1, 1, 1)


def high_pass_mask(h: int, w: int, cutoff: float, device: torch.device) -> torch.Tensor:
    """rfft2 mask that keeps frequencies above `cutoff` (fraction of Nyquist)."""
    fy = torch.fft.fftfreq(h, device=device).abs()[:, None]
    fx = torch.fft.rfftfreq(w, device=device)[None, :]
    return ((fy.square() + fx.square()).sqrt() * 2 > cutoff).float()


def edge_frequency_loss(x: torch.Tensor, target: torch.Tensor, cutoff: float = 0.25) -> torch.Tensor:
    """Edge-aware frequency term: high-passed FFT magnitudes of edge-weighted luma (edges from the target).

    The paper gives the ingredients (Scharr on luminance, 3x3 variance pooling, high-pass
    masked FFT magnitudes) but not the exact formula; this is our composition of them.
    """
    weight = edge_map(target).detach()
    fx = torch.fft.rfft2(luminance(x.float()) * weight, norm="ortho").abs()
    ft = torch.fft.rfft2(luminance(target.float()) * weight, norm="ortho").abs()
    mask = high_pass_mask(x.shape[-2], x.shape[-1], cutoff, x.device)
    return ((fx - ft).abs() * mask).sum() / (mask.sum() * x.shape[0])


def latent_terms(pred: torch.Tensor, target: torch.Tensor, w_l1: float, w_fft: float) -> dict[str, torch.Tensor]:
    """Stage I terms."""
    return {
        "latent_l1": w_l1 * F.l1_loss(pred.float(), target.float()),
        "latent_fft": w_fft * fft_magnitude_l1(pred, target),
    }


def bridge_terms(dec: torch.Tensor, dec_target: torch.Tensor, w_down: float, w_hf: float) -> dict[str, torch.Tensor]:
    """Stage II pixel terms between decodes: x2-downsampled L1 and high-frequency L1."""
    h, w = dec.shape[-2:]
    down = F.l1_loss(
        bicubic_resize(dec.float(), (h // 2, w // 2)), bicubic_resize(dec_target.float(), (h // 2, w // 2))
    )
    hf = F.l1_loss(high_frequency(dec.float()), high_frequency(dec_target.float()))
    return {"down_l1": w_down * down, "hf_l1": w_hf * hf}


def pixel_terms(
    dec: torch.Tensor, hr: torch.Tensor, w_l1: float, w_fft: float, w_edge: float
) -> dict[str, torch.Tensor]:
    """Stage III terms against the HR pixels."""
    dec, hr = dec.float(), hr.float()
    return {
        "pix_l1": w_l1 * F.l1_loss(dec, hr),
        "pix_fft": w_fft * fft_magnitude_l1(dec, hr),
        "edge": w_edge * edge_frequency_loss(dec, hr),
    }
