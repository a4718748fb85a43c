"""A small learned pixel upscaler for the v2 prior: bicubic plus a conv residual at the input pixels' resolution.

    r = pixel_shuffle(tail(body(x)), s)
    up = clamp(bicubic(x, s) + r - low_pass(r), 0, 1)        (low_pass = 0 when `highpass` is 0)

`x` are the tiny decoder's pixels of the input latent. A plain conv-ReLU stack (FSRCNN/ESPCN style) runs at their
resolution, so it costs a small share of the tiny decoder (width 32, depth 5: ~50 k parameters, ~0.1 MFLOP per
input pixel) and learns in CPU-minutes what the latent-resolution residual could not: pixel detail and the tiny
autoencoder's own round-trip losses. Its last conv starts at zero, so an untrained upscaler *is* bicubic.

`highpass` (sigma, in input pixels) takes the residual's broad low frequencies out: its s x s block means, blurred
by a Gaussian of that sigma, back at the output size. Left free, FLUX.1's x4 upscaler learnt a brightness offset
that helps on average and ruins dark images (a dark bokeh render: +0.013 on every channel, 40.1 -> 35.1 dB against
bicubic's 40.1); without its low frequencies the same weights keep 40.1 there and gain on the other images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def resize_pixels(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The pixel route's resize: antialiased bicubic to `size`, clamped to [0, 1]."""
    return F.interpolate(pixels, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


def _conv(c_in: int, c_out: int) -> nn.Conv2d:
    # replicate padding: it is trained on crops from inside images, so at an image's edge it must see what it saw
    # there; with zero padding the first SDXL x4 upscaler painted 32 px colour bands along the edges of flat images
    # (worst-1 % error 0.044 against bicubic's 0.013; 0.012 with replicate padding, same weights)
    return nn.Conv2d(c_in, c_out, 3, 1, 1, padding_mode="replicate")


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of each channel, radius 3 sigma, replicate padding (tiles see what images see)."""
    radius = max(1, round(3 * sigma))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-t.square() / (2 * sigma * sigma))
    k = (k / k.sum()).view(1, 1, 1, -1).repeat(x.shape[1], 1, 1, 1)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), k, groups=x.shape[1])
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), k.transpose(-1, -2), groups=x.shape[1])


def low_pass(residual: torch.Tensor, scale: int, sigma: float) -> torch.Tensor:
    """The broad part of an output-size residual: its scale x scale block means, blurred, bilinear back up."""
    blurred = gaussian_blur(F.avg_pool2d(residual, scale), sigma)
    return F.interpolate(blurred, scale_factor=scale, mode="bilinear", align_corners=False)


class PixelUpscaler(nn.Module):
    """RGB [B, 3, h, w] in [0, 1] -> RGB [B, 3, h*scale, w*scale]: bicubic plus a learned residual."""

    def __init__(self, scale: int, width: int, depth: int, highpass: float = 0.0) -> None:
        super().__init__()
        self.scale, self.highpass = scale, highpass
        layers: list[nn.Module] = [_conv(3, width), nn.ReLU()]
        for _ in range(depth):
            layers += [_conv(width, width), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.tail = _conv(width, 3 * scale * scale)
        nn.init.zeros_(self.tail.weight)  # untrained = bicubic, tensor for tensor
        nn.init.zeros_(self.tail.bias)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        h, w = pixels.shape[-2:]
        up = resize_pixels(pixels, (h * self.scale, w * self.scale))
        residual = F.pixel_shuffle(self.tail(self.body(pixels)), self.scale)
        if self.highpass:
            residual = residual - low_pass(residual, self.scale, self.highpass)
        return (up + residual).clamp(0, 1)
