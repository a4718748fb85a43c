"""Tiny autoencoder networks (TAESD family, MIT; github madebyollin/taesd): encoder and decoder as plain modules.

Indices follow the published state dicts (`0.weight`, `1.conv.0.weight`, ...), so files load strictly.
Finding and reading the weight files lives in `lua_core/tiny_ae.py`; the v2 LUA network embeds these
modules as its frozen re-encode prior (`arch/reencode_residual.py`).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

ENCODER_LAST = 14  # index of the encoder's final conv (64 -> latent channels)
DECODER_FIRST = 1  # index of the decoder's first conv (latent channels -> 64)


def _conv(c_in: int, c_out: int, bias: bool = True, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride, 1, bias=bias)


class Clamp(nn.Module):
    """Soft clamp of the decoder input: tanh(x / 3) * 3."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class Block(nn.Module):
    """Three 3x3 convs with an identity skip; taef2 adds a pooled 1x1 branch to the input first."""

    def __init__(self, c: int, pool: bool = False) -> None:
        super().__init__()
        self.conv = nn.Sequential(_conv(c, c), nn.ReLU(), _conv(c, c), nn.ReLU(), _conv(c, c))
        self.pool = (
            nn.Sequential(
                nn.Conv2d(c, 4 * c, 1, bias=False),
                nn.GroupNorm(4, 4 * c),
                nn.ReLU(),
                nn.Conv2d(4 * c, c, 1, bias=False),
            )
            if pool
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return F.relu(self.conv(x) + x)


class TinyNet(nn.Sequential):
    """An encoder or decoder: its layers in the published order, run in channels-last layout on a CPU, where
    oneDNN's 64-channel 3x3 convs and their backward pass are faster in it (bench/cost.py, 2 threads: a v2 x2
    1.5x faster without decoder matching, 1.3x with it); the result comes back in the usual layout."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":  # unmeasured on GPUs: keep the layout cuDNN was given
            return super().forward(x)
        return super().forward(x.contiguous(memory_format=torch.channels_last)).contiguous()


def make_encoder(latent_channels: int, pooled: Iterable[int] = ()) -> TinyNet:
    """TAESD encoder: RGB in [0, 1] -> scaled latent at 1/8 resolution."""
    pooled = set(pooled)
    layers: list[nn.Module] = [_conv(3, 64), Block(64, 1 in pooled)]
    for i in (2, 6, 10):
        layers += [_conv(64, 64, bias=False, stride=2)] + [Block(64, j in pooled) for j in range(i + 1, i + 4)]
    layers.append(_conv(64, latent_channels))
    return TinyNet(*layers)


def make_decoder(latent_channels: int, pooled: Iterable[int] = ()) -> TinyNet:
    """TAESD decoder: scaled latent -> RGB (about [0, 1]; clamp for display)."""
    pooled = set(pooled)
    layers: list[nn.Module] = [Clamp(), _conv(latent_channels, 64), nn.ReLU()]
    layers += [Block(64, j in pooled) for j in (3, 4, 5)]
    for i in (6, 11, 16):
        layers += [nn.Upsample(scale_factor=2), _conv(64, 64, bias=False)]
        layers += [Block(64, j in pooled) for j in range(i + 2, i + (5 if i < 16 else 3))]
    layers.append(_conv(64, 3))
    return TinyNet(*layers)


def pooled_indices(sd: dict[str, torch.Tensor], prefix: str = "") -> set[int]:
    """Block indices that carry taef2's pooled branch (`N.pool.*` keys), read from a state dict."""
    return {int(k[len(prefix) :].split(".")[0]) for k in sd if k.startswith(prefix) and ".pool." in k}
