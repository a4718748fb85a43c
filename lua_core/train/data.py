"""Training data: image scan with up-front checks, a deterministic split, and an on-disk latent cache.

Each cached sample is one HR crop: its pixels and the raw latents of the HR crop and of its x2 and
x4 antialiased-bicubic downsamples (the paper's protocol: downsample the image, then encode).
Encoders run once; training reads shards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from safetensors.torch import load_file, save_file

from ..imaging import IMAGE_EXTENSIONS, bicubic_resize, load_rgb, to_tensor
from ..tiny_ae import TinyAutoencoder
from .config import TrainConfig

log = logging.getLogger(__name__)
CACHE_VERSION = 3
SHARD_SIZE = 256


@dataclass
class ImageScan:
    """Usable images and what was skipped (reported before any work starts)."""

    usable: list[Path]
    skipped: dict[str, list[str]]

    def summary(self) -> str:
        parts = [f"{len(self.usable)} usable images"]
        parts += [f"{len(v)} skipped ({k})" for k, v in self.skipped.items() if v]
        return ", ".join(parts)


def scan_images(folder: str | os.PathLike, min_side: int) -> ImageScan:
    """List images under `folder`, opening each header once; unreadable or too-small files are counted, not fatal."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"training data folder not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    skipped: dict[str, list[str]] = {"unreadable": [], f"smaller than {min_side}px": []}
    usable = []
    for p in files:
        try:
            with Image.open(p) as im:
                im.verify()
            with Image.open(p) as im:
                w, h = im.size
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            skipped["unreadable"].append(str(p))
            continue
        if min(w, h) < min_side:
            skipped[f"smaller than {min_side}px"].append(str(p))
            continue
        usable.append(p)
    if not usable:
        raise ValueError(
            f"no usable training images in {root}: {len(files)} image files found ({ImageScan([], skipped).summary()}); "
            f"need jpg/png/webp files at least {min_side}px on the short side"
        )
    return ImageScan(usable, skipped)


def is_validation(path: Path, root: Path, fraction: float) -> bool:
    """Deterministic held-out split: a hash of the path relative to the data folder."""
    rel = path.relative_to(root).as_posix()
    bucket = int(hashlib.sha1(rel.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return bucket < fraction


def split_images(paths: list[Path], root: Path, fraction: float) -> tuple[list[Path], list[Path]]:
    """(train, val) lists; the same files land in val on every machine and every run."""
    val = [p for p in paths if is_validation(p, root, fraction)]
    train = [p for p in paths if not is_validation(p, root, fraction)]
    if fraction > 0 and not val and len(train) > 1:
        val, train = train[-1:], train[:-1]
    return train, val


def crop_boxes(w: int, h: int, crop: int, density: float, cap: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Random top-left corners; the count grows with image area (area-weighted sampling)."""
    n = int(np.clip(round(density * w * h / (crop * crop)), 1, cap))
    return [(int(rng.integers(0, w - crop + 1)), int(rng.integers(0, h - crop + 1))) for _ in range(n)]


def center_box(w: int, h: int, crop: int) -> tuple[int, int]:
    """Top-left corner of the center crop."""
    return (w - crop) // 2, (h - crop) // 2


def _prepare(rgb: np.ndarray, crop: int, min_rescale: float, rng: np.random.Generator | None) -> torch.Tensor:
    """[1, 3, H, W] float; large images randomly downscaled so crops see varied content scales."""
    img = to_tensor(rgb)
    h, w = rgb.shape[:2]
    short = min(h, w)
    if rng is not None and short > 2 * crop and min_rescale < 1:
        lo = max(min_rescale, crop / short)
        f = float(rng.uniform(lo, 1.0))
        img = bicubic_resize(img, (max(crop, round(h * f)), max(crop, round(w * f)))).clamp(0, 1)
    return img


@torch.no_grad()
def encode_crops(ae: TinyAutoencoder, hr: torch.Tensor) -> dict[str, torch.Tensor]:
    """One batch of HR crops [N, 3, S, S] in [0, 1] -> every tensor a cached sample needs."""
    s = hr.shape[-1]
    lr2 = bicubic_resize(hr, (s // 2, s // 2)).clamp(0, 1)
    lr4 = bicubic_resize(hr, (s // 4, s // 4)).clamp(0, 1)
    z_hr = ae.encode(hr)
    return {
        "hr_px": (hr * 255 + 0.5).to(torch.uint8),
        "z_hr": z_hr.float(),
        "z_lr2": ae.encode(lr2).float(),
        "z_lr4": ae.encode(lr4).float(),
    }


def cache_key(cfg: TrainConfig, images: list[Path], ae: TinyAutoencoder) -> str:
    """Hash of everything the cached tensors depend on."""
    h = hashlib.sha256()
    spec = {
        "v": CACHE_VERSION,
        "family": ae.family.name,
        "crop": cfg.crop,
        "density": cfg.crop_density,
        "cap": cfg.max_crops_per_image,
        "rescale": cfg.min_rescale,
        "val": cfg.val_fraction,
        "max_val": cfg.max_val_crops,
        "seed": cfg.seed,
    }
    h.update(json.dumps(spec, sort_keys=True).encode())
    root = Path(cfg.data)
    for p in images:
        st = p.stat()
        h.update(f"{p.relative_to(root).as_posix()}:{st.st_size}:{st.st_mtime_ns}".encode())
    for part in (ae.encoder, ae.decoder):
        for k, v in part.state_dict().items():
            h.update(k.encode())
            h.update(v.float().sum().item().hex().encode())
    return h.hexdigest()[:16]


def build_cache(cfg: TrainConfig, ae: TinyAutoencoder, cache_dir: Path, progress=print) -> dict:
    """Scan, split, crop and encode into safetensors shards + index.json (reused when the key matches)."""
    root = Path(cfg.data)
    scan = scan_images(root, cfg.crop)
    progress(f"data: {scan.summary()}")
    train_imgs, val_imgs = split_images(scan.usable, root, cfg.val_fraction)
    key = cache_key(cfg, scan.usable, ae)
    index_path = cache_dir / "index.json"
    if index_path.is_file():
        index = json.loads(index_path.read_text())
        if index.get("key") == key:
            progress(
                f"latent cache: reusing {cache_dir} ({index['counts']['train']} train / {index['counts']['val']} val crops)"
            )
            return index
    cache_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    shards: dict[str, list[str]] = {"train": [], "val": []}
    counts = {"train": 0, "val": 0}
    for split, images in (("train", train_imgs), ("val", val_imgs)):
        pending: list[torch.Tensor] = []
        done_images = 0
        for path in images:
            if split == "val" and counts["val"] + len(pending) >= cfg.max_val_crops:
                break
            img = _prepare(load_rgb(path), cfg.crop, cfg.min_rescale, rng if split == "train" else None)
            h, w = img.shape[-2:]
            boxes = (
                crop_boxes(w, h, cfg.crop, cfg.crop_density, cfg.max_crops_per_image, rng)
                if split == "train"
                else [center_box(w, h, cfg.crop)]
            )
            for x, y in boxes:
                crop = img[..., y : y + cfg.crop, x : x + cfg.crop]
                if split == "train":
                    # Flip the pixels before encoding: a flipped latent is not the latent of the
                    # flipped image (the tiny encoders are far from flip-equivariant).
                    if rng.random() < 0.5:
                        crop = crop.flip(-1)
                    if rng.random() < 0.5:
                        crop = crop.flip(-2)
                pending.append(crop)
            done_images += 1
            while len(pending) >= SHARD_SIZE:
                shards[split].append(_write_shard(ae, pending[:SHARD_SIZE], cache_dir, split, len(shards[split])))
                counts[split] += SHARD_SIZE
                pending = pending[SHARD_SIZE:]
                progress(f"latent cache: {split} {counts[split]} crops from {done_images}/{len(images)} images")
        if pending:
            shards[split].append(_write_shard(ae, pending, cache_dir, split, len(shards[split])))
            counts[split] += len(pending)
    index = {
        "version": CACHE_VERSION,
        "key": key,
        "family": ae.family.name,
        "vae": ae.source,
        "crop": cfg.crop,
        "data": str(root),
        "images": {"train": len(train_imgs), "val": len(val_imgs)},
        "val_images": [p.relative_to(root).as_posix() for p in val_imgs],
        "skipped": {k: len(v) for k, v in scan.skipped.items()},
        "counts": counts,
        "shards": shards,
    }
    tmp = index_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(index, indent=1))
    os.replace(tmp, index_path)
    progress(f"latent cache: {counts['train']} train / {counts['val']} val crops written to {cache_dir}")
    return index


def _write_shard(ae: TinyAutoencoder, crops: list[torch.Tensor], cache_dir: Path, split: str, i: int) -> str:
    parts: dict[str, list[torch.Tensor]] = {}
    for b in range(0, len(crops), 16):
        batch = torch.cat(crops[b : b + 16]).to(next(ae.parameters()).device)
        for k, v in encode_crops(ae, batch).items():
            parts.setdefault(k, []).append(v.cpu())
    name = f"{split}-{i:05d}.safetensors"
    save_file({k: torch.cat(v).contiguous() for k, v in parts.items()}, str(cache_dir / name))
    return name


class LatentPairs:
    """All cached samples of one split in memory, sampled from a seeded generator."""

    KEYS = ("hr_px", "z_hr", "z_lr2", "z_lr4")

    def __init__(self, cache_dir: Path, shard_names: list[str]) -> None:
        if not shard_names:
            raise ValueError(f"latent cache in {cache_dir} has no samples for this split")
        loaded = [load_file(str(cache_dir / n)) for n in shard_names]
        self.tensors = {k: torch.cat([s[k] for s in loaded]) for k in self.KEYS}
        self.size = self.tensors["z_hr"].shape[0]

    def __len__(self) -> int:
        return self.size

    def batch(self, idx: torch.Tensor, device: torch.device | str = "cpu") -> dict:
        """Samples `idx` as float tensors (pixels in [0, 1])."""
        out = {}
        for k in self.KEYS:
            t = self.tensors[k][idx].to(device)
            out[k] = t.float() / 255.0 if t.dtype == torch.uint8 else t
        return out

    def sample(self, n: int, gen: torch.Generator, device: torch.device | str = "cpu") -> dict:
        """A random batch drawn from `gen` (its state is saved for exact resume)."""
        return self.batch(torch.randint(0, self.size, (n,), generator=gen), device)
