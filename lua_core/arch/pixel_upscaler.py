"""A small learned pixel upscaler for the v2 prior: bicubic plus a conv residual at the input pixels' resolution.

    up = clamp(bicubic(x, s) + pixel_shuffle(tail(body(x)), s), 0, 1)

`x` are the tiny decoder's pixels of the input latent. A plain conv-ReLU stack (FSRCNN/ESPCN style) runs at their
resolution, so it costs a small share of the tiny decoder (width 32, depth 5: ~50 k parameters, ~0.1 MFLOP per
input pixel) and learns in CPU-minutes what the latent-resolution residual could not: pixel detail and the tiny
autoencoder's own round-trip losses. Its last conv starts at zero, so an untrained upscaler *is* bicubic.

A head may gate the learned residual (`gate` = a luma std, the config's `upscaler_gates`): it is added only where
the bicubic pixels have detail, weight 1 - smooth_weight(bicubic, gate), so smooth areas stay bicubic. There the
upscaler has nothing to add and can only sharpen the tiny decoder's grain: FLUX.1's first x4 upscaler took a dark
bokeh render from 40.1 dB (bicubic) to 35.1 at the pixels while adding 0.2-0.7 dB on textured ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SMOOTH_WINDOW = 17  # pixels per side of the window whose luma std says "smooth"


def smooth_weight(pixels: torch.Tensor, sigma: float) -> torch.Tensor:
    """Per-pixel weight [B, 1, H, W] in [0, 1]: 1 where the luma is flat, 0 where its local std reaches `sigma`."""
    luma = (pixels * pixels.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    pad = SMOOTH_WINDOW // 2
    mean = F.avg_pool2d(luma, SMOOTH_WINDOW, 1, pad, count_include_pad=False)
    var = F.avg_pool2d(luma * luma, SMOOTH_WINDOW, 1, pad, count_include_pad=False) - mean * mean
    return (1 - var.clamp_min(0).sqrt() / sigma).clamp(0, 1)


def resize_pixels(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The pixel route's resize: antialiased bicubic to `size`, clamped to [0, 1]."""
    return F.interpolate(pixels, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


def _conv(c_in: int, c_out: int) -> nn.Conv2d:
    # replicate padding: it is trained on crops from inside images, so at an image's edge it must see what it saw
    # there; with zero padding the first SDXL x4 upscaler painted 32 px colour bands along the edges of flat images
    # (worst-1 % error 0.044 against bicubic's 0.013; 0.012 with replicate padding, same weights)
    return nn.Conv2d(c_in, c_out, 3, 1, 1, padding_mode="replicate")


class PixelUpscaler(nn.Module):
    """RGB [B, 3, h, w] in [0, 1] -> RGB [B, 3, h*scale, w*scale]: bicubic plus a learned residual."""

    def __init__(self, scale: int, width: int, depth: int) -> None:
        super().__init__()
        self.scale = scale
        layers: list[nn.Module] = [_conv(3, width), nn.ReLU()]
        for _ in range(depth):
            layers += [_conv(width, width), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.tail = _conv(width, 3 * scale * scale)
        nn.init.zeros_(self.tail.weight)  # untrained = bicubic, tensor for tensor
        nn.init.zeros_(self.tail.bias)

    def forward(self, pixels: torch.Tensor, gate: float = 0.0) -> torch.Tensor:
        """Upscaled pixels; with `gate` > 0 the learned residual only where the bicubic pixels have detail."""
        h, w = pixels.shape[-2:]
        up = resize_pixels(pixels, (h * self.scale, w * self.scale))
        residual = F.pixel_shuffle(self.tail(self.body(pixels)), self.scale)
        if gate > 0:
            residual = residual * (1 - smooth_weight(up, gate))
        return (up + residual).clamp(0, 1)
