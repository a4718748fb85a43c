"""Tiny autoencoders (TAESD family, MIT) as a fast, differentiable stand-in for each family's VAE.

The tiny encoder outputs the family's *scaled* latent; everything in lua_core works in raw VAE
space, so `TinyAutoencoder.encode`/`decode` apply the family's scale/shift on the way.
Weight files are found in a given folder, `$LUA_VAE_APPROX`, ComfyUI's `models/vae_approx`, or (SDXL only)
the copy bundled in `lua_core/assets`, which makes the demo work with no downloads.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from .arch.taesd import DECODER_FIRST, ENCODER_LAST, TinyNet, make_decoder, make_encoder, pooled_indices
from .errors import CheckpointError
from .families import LatentFamily, get_family

BUNDLED_DIR = Path(__file__).resolve().parent / "assets"  # taesdxl encoder + decoder (MIT, see its README)


def _load_part(path: Path, kind: str) -> TinyNet:
    from .checkpoint import read_state_dict  # local: checkpoint imports the LUA arch, not needed here

    sd, _ = read_state_dict(path)
    if "0.weight" not in sd and "1.weight" not in sd:
        raise CheckpointError(f"{path.name} is not a tiny autoencoder {kind} (no '0.weight'/'1.weight' key)")
    if kind == "encoder":
        net = make_encoder(int(sd[f"{ENCODER_LAST}.weight"].shape[0]), pooled_indices(sd))
    else:
        net = make_decoder(int(sd[f"{DECODER_FIRST}.weight"].shape[1]), pooled_indices(sd))
    try:
        net.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path.name} does not match the TAESD {kind} layout: {str(e)[:300]}") from e
    return net.eval().requires_grad_(False)


class TinyAutoencoder(nn.Module):
    """A family's tiny encoder/decoder pair working in raw VAE latent space."""

    def __init__(
        self, family: LatentFamily, encoder: nn.Module | None, decoder: nn.Module | None, source: str = ""
    ) -> None:
        super().__init__()
        self.family = family
        self.encoder = encoder
        self.decoder = decoder
        self.source = source

    def encode(self, rgb01: torch.Tensor) -> torch.Tensor:
        """RGB [B, 3, H, W] in [0, 1] -> raw latent as ComfyUI holds it ([B, C, H/8, W/8]; FLUX.2 packed)."""
        if self.encoder is None:
            raise CheckpointError(f"no tiny encoder loaded for {self.family.label}")
        return self.family.pack(self.family.to_raw(self.encoder(rgb01)))

    def decode(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw latent -> RGB, unclamped (clamp to [0, 1] for display; keep gradients for losses)."""
        if self.decoder is None:
            raise CheckpointError(f"no tiny decoder loaded for {self.family.label}")
        return self.decoder(self.family.to_scaled(self.family.unpack(raw)))


def default_search_dirs(extra: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """Where tiny autoencoder weights are looked for, in order."""
    dirs = [Path(p) for p in extra]
    if os.environ.get("LUA_VAE_APPROX"):
        dirs.append(Path(os.environ["LUA_VAE_APPROX"]))
    here = Path(__file__).resolve().parent.parent
    # a ComfyUI install when the pack sits in custom_nodes/, then the development checkout's ../shared
    dirs += [here.parent.parent / "models" / "vae_approx", here.parent / "shared" / "vae_approx"]
    return dirs + [BUNDLED_DIR]  # last: a user's own copy wins


def find_tiny_ae_files(family: LatentFamily, dirs: Iterable[Path]) -> tuple[Path, Path] | None:
    """(encoder, decoder) paths for a family in the first folder holding both, else None."""
    for d in dirs:
        for ext in (".safetensors", ".pth"):
            enc, dec = d / f"{family.tiny_ae}_encoder{ext}", d / f"{family.tiny_ae}_decoder{ext}"
            if enc.is_file() and dec.is_file():
                return enc, dec
    return None


def load_tiny_autoencoder(
    family: str | LatentFamily,
    search: Iterable[str | os.PathLike] = (),
    device: torch.device | str = "cpu",
    parts: tuple[str, ...] = ("encoder", "decoder"),
) -> TinyAutoencoder:
    """Load a family's tiny autoencoder from the first folder that has it (fp32, frozen)."""
    fam = get_family(family) if isinstance(family, str) else family
    dirs = default_search_dirs(search)
    found = find_tiny_ae_files(fam, dirs)
    if found is None:
        where = ", ".join(str(d) for d in dirs)
        raise CheckpointError(
            f"tiny autoencoder for {fam.label} ({fam.tiny_ae}_encoder/_decoder) not found in: {where}; "
            f"pass its folder (ComfyUI's models/vae_approx holds them) or set LUA_VAE_APPROX"
        )
    enc = _load_part(found[0], "encoder") if "encoder" in parts else None
    dec = _load_part(found[1], "decoder") if "decoder" in parts else None
    return TinyAutoencoder(fam, enc, dec, str(found[0].parent)).to(device)
