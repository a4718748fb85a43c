"""Latent families: the VAE latent conventions a LUA model is tied to, as plain data."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LatentFamily:
    """One VAE latent space as ComfyUI's LATENT holds it: channels, spatial factor, sampler-side scale/shift.

    `patch` > 1 means the LATENT is the VAE latent packed patch x patch into channels (FLUX.2: 32 channels at
    1/8 -> 128 at 1/16); the tiny autoencoders work on the unpacked latent (`unpack`/`pack`).
    `video` means its LATENT may be 5-D [B, C, T, h, w] (frames are upscaled one by one); no family is today,
    so 5-D latents are refused (see VIDEO_LATENTS).
    """

    name: str
    label: str
    channels: int
    spatial_factor: int
    scale_factor: float
    shift_factor: float
    tiny_ae: str | None
    models: str
    patch: int = 1
    video: bool = False

    @property
    def vae_channels(self) -> int:
        """Channels of the VAE latent before packing (what the tiny autoencoder reads and writes)."""
        return self.channels // (self.patch * self.patch)

    def unpack(self, x):
        """[B, C*p*p, h, w] -> [B, C, h*p, w*p] (`c (i pi) (j pj) <- (c pi pj) i j`); identity when p = 1."""
        return x if self.patch == 1 else torch.nn.functional.pixel_shuffle(x, self.patch)

    def pack(self, x):
        """[B, C, h*p, w*p] -> [B, C*p*p, h, w], the inverse of `unpack`; identity when p = 1."""
        return x if self.patch == 1 else torch.nn.functional.pixel_unshuffle(x, self.patch)

    def to_scaled(self, raw):
        """Map a raw VAE latent to the sampler's scaled space: (x - shift) * scale."""
        return (raw - self.shift_factor) * self.scale_factor

    def to_raw(self, scaled):
        """Map a scaled latent (e.g. a tiny encoder's output) back to raw VAE space."""
        return scaled / self.scale_factor + self.shift_factor


FAMILIES: dict[str, LatentFamily] = {
    f.name: f
    for f in (
        LatentFamily("sd1", "SD1.x/SD2.x", 4, 8, 0.18215, 0.0, "taesd", "SD 1.x / 2.x, PixArt-alpha"),
        LatentFamily("sdxl", "SDXL", 4, 8, 0.13025, 0.0, "taesdxl", "SDXL, Pony, Illustrious, PixArt-sigma, AuraFlow"),
        LatentFamily("sd3", "SD3", 16, 8, 1.5305, 0.0609, "taesd3", "SD 3 / 3.5"),
        LatentFamily("flux1", "FLUX.1", 16, 8, 0.3611, 0.1159, "taef1", "FLUX.1, Chroma, HiDream, Lumina 2"),
        # ComfyUI's FLUX.2 LATENT is already batch-norm normalised (process_in/out are identity): scale 1, shift 0
        LatentFamily("flux2", "FLUX.2/FLUX.3", 128, 16, 1.0, 0.0, "taef2", "FLUX.2 dev / klein, FLUX.3 Klein", patch=2),
    )
}


# 5-D (video) LATENTs by channel count: ComfyUI 0.8.0's comfy/latent_formats.py, every format with
# latent_dimensions = 3, and the models using it in comfy/supported_models.py. None is a LUA family's latent
# space, including a single frame (T = 1), which is how Qwen-Image and Wan hand over still images.
VIDEO_LATENTS: dict[int, str] = {
    12: "Mochi's VAE",
    16: "the Wan 2.1 VAE (Wan 2.1, Wan 2.2 S2V/Animate, Qwen-Image, Cosmos Predict2), HunyuanVideo's (also "
    "Kandinsky 5) or Cosmos 1's",
    32: "HunyuanVideo 1.5's VAE",
    48: "the Wan 2.2 VAE (Wan 2.2 TI2V 5B)",
    64: "the HunyuanImage 2.1 refiner's VAE",
    128: "LTX-Video's VAE (LTXV, LTXAV)",
}


def get_family(name: str) -> LatentFamily:
    """Return the family called `name`, with a message listing the known ones otherwise."""
    key = name.strip().lower().replace(".", "").replace("-", "").replace("_", "")
    aliases = {"sd15": "sd1", "sd2": "sd1", "sd35": "sd3", "flux": "flux1", "flux3": "flux2", "flux3klein": "flux2"}
    key = aliases.get(key, key)
    if key not in FAMILIES:
        raise ValueError(f"unknown latent family {name!r}; expected one of {', '.join(FAMILIES)}")
    return FAMILIES[key]


def families_with_channels(channels: int) -> list[LatentFamily]:
    """Families whose ComfyUI LATENT has `channels` channels (4 -> sd1, sdxl; 16 -> sd3, flux1; 128 -> flux2)."""
    return [f for f in FAMILIES.values() if f.channels == channels]


def describe_channels(channels: int) -> str:
    """Human label for a channel count, e.g. '4 channels (SD1.x/SD2.x/SDXL)'."""
    fams = families_with_channels(channels)
    if not fams:
        return f"{channels} channels (no known image family)"
    return f"{channels} channels ({'/'.join(f.label for f in fams)})"
