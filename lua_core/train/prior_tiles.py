"""Training tiles for v2 models: everything frozen is computed once per tile, not once per step.

A tile is an HR crop (flipped/rotated before anything is encoded). For each scale s it stores the
tiny-encoder latent of the antialiased-bicubic downsample (the paper's protocol), its decoded pixels
and the re-encode prior E(bicubic(D(z), s)) exactly as `ReencodeResidual` computes it at inference (with
the "+error" input variant also the prior's round-trip error); `TileCrops` cuts aligned random crops from them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset, Sampler

from ..arch.reencode_residual import PIXEL_FACTOR, ReencodeResidual
from ..data_split import scan_images, split_images
from ..fileio import atomic_write, update_digest
from ..imaging import bicubic_resize, load_rgb, synthetic_smooth_tile, to_tensor

CACHE_VERSION = 1
ENCODE_CHUNK = 32  # tiles encoded per batch on a GPU


@dataclass(frozen=True)
class TileSpec:
    """What goes into the tile cache (its key is built from these and the images' bytes)."""

    folders: tuple[str, ...]
    val_fraction: float
    tile: int
    images_per_folder: int  # 0 = all; else a seeded random sample (encoding is the expensive part on a CPU)
    synthetic_tiles: int
    seed: int
    tiles_per_image: int = 1  # random tiles cut from each image (a GPU sprint trains on many more crops)
    # the share of large photos' tiles cut at native resolution instead of a random content scale: bench/quality.py
    # (and the hidden hold-out) crop photos at native resolution, where smooth, out-of-focus content dominates
    native_fraction: float = 0.0

    def key_fields(self) -> dict:
        """The fields the cache key hashes; the newer ones only when set, so older caches keep their keys."""
        d = dict(self.__dict__)
        if d["tiles_per_image"] == 1:
            del d["tiles_per_image"]
        if not d["native_fraction"]:
            del d["native_fraction"]
        return d


def list_training_images(spec: TileSpec) -> list[Path]:
    """Training images of every folder, each folder's held-out split removed (the rule bench/quality.py uses)."""
    images: list[Path] = []
    rng = np.random.default_rng(spec.seed)
    for folder in spec.folders:
        root = Path(folder)
        train, _ = split_images(scan_images(root, spec.tile).usable, root, spec.val_fraction)
        if spec.images_per_folder and len(train) > spec.images_per_folder:
            train = [train[i] for i in sorted(rng.choice(len(train), spec.images_per_folder, replace=False))]
        images += train
    return images


def cache_key(spec: TileSpec, images: list[Path], net: ReencodeResidual) -> str:
    """Content key: tile settings, image bytes, the prior's config and weights (never mtimes)."""
    cfg = net.config  # only what changes the cached tensors: the residual's shape and inputs do not
    prior = [cfg.channels, cfg.patch, cfg.scale_factor, cfg.shift_factor, list(cfg.scales), cfg.resize]
    if cfg.refine_steps:  # appended only when used, so the caches of unrefined priors keep their keys
        prior += [cfg.refine_steps, cfg.refine_rate]
    if cfg.refine_by_scale:  # the same for per-head settings
        prior.append([list(r) for r in cfg.refine_by_scale])
    if net.uses_error:  # the same: only the "+error" input variant caches the round-trip error
        prior.append("error")
    h = hashlib.sha256(json.dumps([CACHE_VERSION, spec.key_fields(), prior], sort_keys=True).encode())
    for p in images:
        h.update(hashlib.sha256(p.read_bytes()).digest())
    update_digest(h, net.prior.state_dict().items())
    return h.hexdigest()[:16]


def tile_of(path: Path, spec: TileSpec, rng: np.random.Generator) -> torch.Tensor:
    """One random tile [1, 3, S, S] of an image: random content scale for large images (or native resolution, for
    `native_fraction` of them), random flip/rotation."""
    img = to_tensor(load_rgb(path))
    h, w = img.shape[-2:]
    short = min(h, w)
    # the draw only when asked for, so the tiles of runs without it stay the same
    native = bool(spec.native_fraction) and rng.random() < spec.native_fraction
    if short > 2 * spec.tile and not native:  # large photos: a random content scale from "tile = short side / 2" to 1
        f = float(rng.uniform(2 * spec.tile / short, 1.0))
        img = bicubic_resize(img, (round(h * f), round(w * f))).clamp(0, 1)
        h, w = img.shape[-2:]
    y, x = int(rng.integers(0, h - spec.tile + 1)), int(rng.integers(0, w - spec.tile + 1))
    t = torch.rot90(img[..., y : y + spec.tile, x : x + spec.tile], int(rng.integers(0, 4)), (-2, -1))
    return t.flip(-1) if rng.random() < 0.5 else t


@torch.no_grad()
def encode_tiles(net: ReencodeResidual, hr: torch.Tensor) -> dict[str, torch.Tensor]:
    """HR tiles [B, 3, S, S] -> the cached tensors (scaled, unpacked latents; pixels as uint8), batch first."""
    s = hr.shape[-1]
    out = {"hr": (hr * 255 + 0.5).to(torch.uint8)}
    hr = hr.to(next(net.parameters()).device)
    for scale in net.config.scales:
        lr = bicubic_resize(hr, (s // scale, s // scale)).clamp(0, 1)
        zs = net.prior.encoder(lr)
        pixels = net.prior.decode(zs)
        out[f"z{scale}"] = zs.cpu()
        out[f"pix{scale}"] = pixels.cpu()
        prior, error = net.prior(net.prior.upscale(pixels, scale), net.config.refine_for(scale), net.uses_error)
        out[f"prior{scale}"] = prior.cpu()
        if error is not None:
            out[f"error{scale}"] = error.cpu()
    return out


def build_tiles(
    spec: TileSpec, net: ReencodeResidual, cache_dir: Path, say=print, decoded_priors: bool = False
) -> dict[str, torch.Tensor]:
    """Encode every tile once (or read the cache written by an earlier run with the same key); with
    `decoded_priors` also each tile's decoded prior (`decode_priors`, cached beside it in its own file, so caches
    written before it existed keep their keys)."""
    images = list_training_images(spec)
    key = cache_key(spec, images, net)
    path = cache_dir / f"tiles-{key}.safetensors"
    if path.is_file():
        say(f"tile cache: {path} ({len(images)} images)")
        tiles = load_file(str(path))
    else:
        tiles = encode_all(spec, net, images, path, say)
    if decoded_priors:
        tiles.update(cached(path.with_suffix(".prior-pix.safetensors"), lambda: decode_priors(net, tiles), say))
    return tiles


def cached(path: Path, compute, say=print) -> dict[str, torch.Tensor]:
    """The tensors in `path`, or compute() written there (atomically) when it is missing."""
    if path.is_file():
        say(f"cache: {path}")
        return load_file(str(path))
    tensors = compute()
    atomic_write(path, lambda tmp: save_file(tensors, tmp))
    return tensors


def encode_all(
    spec: TileSpec, net: ReencodeResidual, images: list[Path], path: Path, say=print
) -> dict[str, torch.Tensor]:
    """Cut and encode the tiles of `images` (+ synthetic ones) and write them to `path`."""
    rng = np.random.default_rng(spec.seed)
    rows: dict[str, list[torch.Tensor]] = {}
    tiles = [tile_of(p, spec, rng) for p in images for _ in range(spec.tiles_per_image)]
    tiles += [synthetic_smooth_tile(spec.tile, rng) for _ in range(spec.synthetic_tiles)]
    say(f"encoding {len(tiles)} tiles from {len(images)} images (+{spec.synthetic_tiles} synthetic) once")
    chunk = ENCODE_CHUNK if next(net.parameters()).is_cuda else 1  # one at a time on a CPU, as before (least memory)
    for i in range(0, len(tiles), chunk):
        for k, v in encode_tiles(net, torch.cat(tiles[i : i + chunk])).items():
            rows.setdefault(k, []).append(v)
        if (i + chunk) // 100 > i // 100:
            say(f"  {min(i + chunk, len(tiles))}/{len(tiles)} tiles")
    stacked = {k: torch.cat(v).contiguous() for k, v in rows.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(
        path, lambda tmp: save_file(stacked, tmp, metadata={"images": str(len(images)), "tiles": str(len(tiles))})
    )
    return stacked


@torch.no_grad()
def decode_priors(net: ReencodeResidual, tiles: dict[str, torch.Tensor], chunk: int = 8) -> dict[str, torch.Tensor]:
    """The tiny decoder's output of each tile's whole prior, per scale (fp16, HR size): what inference decodes,
    which the loss uses as the baseline a window's residual is measured against (see train/residual.py)."""
    device = next(net.parameters()).device
    out = {}
    for scale in net.config.scales:
        prior = tiles[f"prior{scale}"]
        parts = [net.prior.decoder(prior[i : i + chunk].to(device)).half().cpu() for i in range(0, len(prior), chunk)]
        out[f"prior_pix{scale}"] = torch.cat(parts)
    return out


class StepSampler(Sampler[int]):
    """Endless stream of item ids for TileCrops / PairCrops: ids grow, so each draw is a new crop; it resumes by step
    (the ids of a step follow from the seed and the step alone)."""

    def __init__(self, n_tiles: int, start: int, batch: int, seed: int) -> None:
        self.n, self.start, self.batch, self.seed = n_tiles, start, batch, seed

    def __iter__(self):
        step = self.start
        while True:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
            tiles = torch.randint(0, self.n, (self.batch,), generator=g)
            yield from (int(step * self.n * self.batch + i * self.n + t) for i, t in enumerate(tiles))
            step += 1


class TileCrops(Dataset):
    """Random aligned crops of the cached tiles for one scale: item i is tile i % n at a crop position drawn from i.

    Indices beyond n are valid (a sampler drawing growing ids gets a fresh crop position every time).
    """

    def __init__(self, tiles: dict[str, torch.Tensor], scale: int, crop: int, seed: int = 0) -> None:
        """`crop`: input latent pixels per side of each crop."""
        self.t, self.scale, self.crop = tiles, scale, crop  # crop: input latent pixels
        self.side = tiles[f"z{scale}"].shape[-1]
        if crop > self.side:
            raise ValueError(f"crop {crop} > tile latent side {self.side} at x{scale}")
        self.seed = seed

    def __len__(self) -> int:
        return self.t["hr"].shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s, k = self.scale, self.crop
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        i = i % len(self)
        y, x = (int(v) for v in torch.randint(0, self.side - k + 1, (2,), generator=g))
        lat = slice(y * s, (y + k) * s), slice(x * s, (x + k) * s)  # output latent pixels
        f = PIXEL_FACTOR * s
        crop = {
            "z": self.t[f"z{s}"][i, :, y : y + k, x : x + k],
            "pix": self.t[f"pix{s}"][
                i, :, y * PIXEL_FACTOR : (y + k) * PIXEL_FACTOR, x * PIXEL_FACTOR : (x + k) * PIXEL_FACTOR
            ],
            "prior": self.t[f"prior{s}"][(i, slice(None), *lat)],
            "hr": self.t["hr"][i, :, y * f : (y + k) * f, x * f : (x + k) * f].float() / 255,
        }
        if f"error{s}" in self.t:
            crop["error"] = self.t[f"error{s}"][(i, slice(None), *lat)]
        if f"prior_pix{s}" in self.t:
            crop["prior_pix"] = self.t[f"prior_pix{s}"][i, :, y * f : (y + k) * f, x * f : (x + k) * f].float()
        return crop
