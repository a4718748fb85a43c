"""Latent families: the VAE latent conventions a LUA model is tied to, as plain data."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LatentFamily:
    """One VAE latent space: channel count, spatial factor and the sampler-side scale/shift."""

    name: str
    label: str
    channels: int
    spatial_factor: int
    scale_factor: float
    shift_factor: float
    tiny_ae: str | None
    comfy_channels: int
    models: str
    supported: bool = True
    unsupported_reason: str = ""

    def to_scaled(self, raw):
        """Map a raw VAE latent to the sampler's scaled space: (x - shift) * scale."""
        return (raw - self.shift_factor) * self.scale_factor

    def to_raw(self, scaled):
        """Map a scaled latent (e.g. a tiny encoder's output) back to raw VAE space."""
        return scaled / self.scale_factor + self.shift_factor


FAMILIES: dict[str, LatentFamily] = {
    f.name: f
    for f in (
        LatentFamily("sd1", "SD1.x/SD2.x", 4, 8, 0.18215, 0.0, "taesd", 4, "SD 1.x / 2.x, PixArt-alpha"),
        LatentFamily(
            "sdxl", "SDXL", 4, 8, 0.13025, 0.0, "taesdxl", 4, "SDXL, Pony, Illustrious, PixArt-sigma, AuraFlow"
        ),
        LatentFamily("sd3", "SD3", 16, 8, 1.5305, 0.0609, "taesd3", 16, "SD 3 / 3.5"),
        LatentFamily("flux1", "FLUX.1", 16, 8, 0.3611, 0.1159, "taef1", 16, "FLUX.1, Chroma, HiDream, Lumina 2"),
        LatentFamily(
            "flux2",
            "FLUX.2",
            32,
            8,
            1.0,
            0.0,
            "taef2",
            128,
            "FLUX.2 dev / klein",
            supported=False,
            unsupported_reason=(
                "FLUX.2 latents are not supported yet: ComfyUI stores them as 128 patchified, "
                "batch-normalised channels and no LUA model for FLUX.2 exists; "
                "decode and re-encode, or use a pixel-space upscaler for now"
            ),
        ),
    )
}


def get_family(name: str) -> LatentFamily:
    """Return the family called `name`, with a message listing the known ones otherwise."""
    key = name.strip().lower().replace(".", "").replace("-", "").replace("_", "")
    aliases = {"sd15": "sd1", "sd2": "sd1", "sd35": "sd3", "flux": "flux1"}
    key = aliases.get(key, key)
    if key not in FAMILIES:
        raise ValueError(f"unknown latent family {name!r}; expected one of {', '.join(FAMILIES)}")
    return FAMILIES[key]


def families_with_channels(channels: int) -> list[LatentFamily]:
    """Families whose ComfyUI LATENT has `channels` channels (4 -> sd1, sdxl; 16 -> sd3, flux1)."""
    return [f for f in FAMILIES.values() if f.comfy_channels == channels]


def describe_channels(channels: int) -> str:
    """Human label for a channel count, e.g. '4 channels (SD1.x/SD2.x/SDXL)'."""
    fams = families_with_channels(channels)
    if not fams:
        return f"{channels} channels (no known image family)"
    return f"{channels} channels ({'/'.join(f.label for f in fams)})"
