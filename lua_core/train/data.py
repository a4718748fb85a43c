"""Training data: a content-keyed cache of encoded tiles, read lazily as a map-style Dataset of random crops.

The cache holds large HR tiles (pixels + the raw latents of the tile and of its x2 and x4
antialiased-bicubic downsamples: the paper's protocol, downsample the image, then encode) in
safetensors shards. `LatentCrops` treats every grid-aligned crop of every tile as one sample, so a
shuffling sampler draws a fresh crop position each time instead of replaying a fixed crop set, and
it reads only the bytes of the crop it returns: memory does not grow with the dataset.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch.utils.data import Dataset

from ..checkpoint import sha256_file
from ..data_split import scan_images, split_images
from ..fileio import atomic_write, read_safetensors_header, update_digest
from ..imaging import bicubic_resize, load_rgb, synthetic_smooth_tile, to_tensor
from ..tiny_ae import TinyAutoencoder
from .config import TrainConfig

CACHE_VERSION = 4
SHARD_SIZE = 128
ALIGN = 32  # HR pixels per x4-LR latent pixel: crops on this grid cut every latent at whole pixels
KEYS = ("hr_px", "z_hr", "z_lr2", "z_lr4")
LATENT_STRIDE = {"hr_px": 1, "z_hr": 8, "z_lr2": 16, "z_lr4": 32}  # HR pixels per element of each tensor


def tile_boxes(w: int, h: int, tile: int, density: float, cap: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Random top-left corners of tiles; the count grows with image area (area-weighted sampling)."""
    n = int(np.clip(round(density * w * h / (tile * tile)), 1, cap))
    return [(int(rng.integers(0, w - tile + 1)), int(rng.integers(0, h - tile + 1))) for _ in range(n)]


def center_box(w: int, h: int, crop: int) -> tuple[int, int]:
    """Top-left corner of the center crop."""
    return (w - crop) // 2, (h - crop) // 2


def _prepare(rgb: np.ndarray, tile: int, min_rescale: float, rng: np.random.Generator | None) -> torch.Tensor:
    """[1, 3, H, W] float; large images randomly downscaled so tiles see varied content scales."""
    img = to_tensor(rgb)
    h, w = rgb.shape[:2]
    short = min(h, w)
    if rng is not None and short > 2 * tile and min_rescale < 1:
        lo = max(min_rescale, tile / short)
        f = float(rng.uniform(lo, 1.0))
        img = bicubic_resize(img, (max(tile, round(h * f)), max(tile, round(w * f)))).clamp(0, 1)
    return img


@torch.no_grad()
def encode_tiles(ae: TinyAutoencoder, hr: torch.Tensor) -> dict[str, torch.Tensor]:
    """One batch of HR tiles [N, 3, S, S] in [0, 1] -> every tensor a cached tile needs."""
    s = hr.shape[-1]
    lr2 = bicubic_resize(hr, (s // 2, s // 2)).clamp(0, 1)
    lr4 = bicubic_resize(hr, (s // 4, s // 4)).clamp(0, 1)
    return {
        "hr_px": (hr * 255 + 0.5).to(torch.uint8),
        "z_hr": ae.encode(hr).float(),
        "z_lr2": ae.encode(lr2).float(),
        "z_lr4": ae.encode(lr4).float(),
    }



def cache_key(cfg: TrainConfig, images: list[Path], ae: TinyAutoencoder) -> str:
    """Hash of everything the cached tensors depend on: settings, image contents, autoencoder weights."""
    h = hashlib.sha256()
    spec = {
        "v": CACHE_VERSION,
        "family": ae.family.name,
        "tile": cfg.tile,
        "crop": cfg.crop,
        "density": cfg.tile_density,
        "cap": cfg.max_tiles_per_image,
        "rescale": cfg.min_rescale,
        "val": cfg.val_fraction,
        "max_val": cfg.max_val_crops,
        "synthetic": cfg.synthetic_tiles,
        "seed": cfg.seed,
    }
    h.update(json.dumps(spec, sort_keys=True).encode())
    root = Path(cfg.data)
    for p in images:
        h.update(f"{p.relative_to(root).as_posix()}:{sha256_file(p)}".encode())
    for part in (ae.encoder, ae.decoder):
        update_digest(h, part.state_dict().items())  # the bytes, not a float sum (which varies with the thread count)
    return h.hexdigest()[:16]


def write_shard(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Write one shard atomically: tensors keyed by KEYS, first dimension = tile."""
    atomic_write(path, lambda tmp: save_file({k: tensors[k].contiguous() for k in KEYS}, tmp))


class _ShardWriter:
    """Collects tiles of one split, encodes them in batches and writes shards of SHARD_SIZE tiles."""

    def __init__(self, ae: TinyAutoencoder, cache_dir: Path, split: str, progress) -> None:
        self.ae, self.cache_dir, self.split, self.progress = ae, cache_dir, split, progress
        self.pending: list[torch.Tensor] = []
        self.shards: list[str] = []
        self.count = 0

    def add(self, tile: torch.Tensor) -> None:
        self.pending.append(tile)
        if len(self.pending) >= SHARD_SIZE:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        parts: dict[str, list[torch.Tensor]] = {}
        device = next(self.ae.parameters()).device
        for b in range(0, len(self.pending), 16):
            for k, v in encode_tiles(self.ae, torch.cat(self.pending[b : b + 16]).to(device)).items():
                parts.setdefault(k, []).append(v.cpu())
        name = f"{self.split}-{len(self.shards):05d}.safetensors"
        write_shard({k: torch.cat(v) for k, v in parts.items()}, self.cache_dir / name)
        self.shards.append(name)
        self.count += len(self.pending)
        self.pending = []
        self.progress(f"latent cache: {self.split} {self.count} tiles encoded")


def build_cache(cfg: TrainConfig, ae: TinyAutoencoder, cache_dir: Path, progress=print) -> dict:
    """Scan, split, tile and encode into safetensors shards + index.json (reused when the content key matches)."""
    index_path = cache_dir / "index.json"
    if not cfg.data:  # a prepared cache (e.g. carried to a GPU machine without the images)
        if not index_path.is_file():
            raise FileNotFoundError(f"no --data given and no prepared cache at {index_path}")
        index = json.loads(index_path.read_text())
        progress(f"latent cache: using the prepared cache {cache_dir} as is ({index['counts']})")
        return index
    root = Path(cfg.data)
    scan = scan_images(root, cfg.tile)
    progress(f"data: {scan.summary()}")
    train_imgs, val_imgs = split_images(scan.usable, root, cfg.val_fraction)
    key = cache_key(cfg, scan.usable, ae)
    if index_path.is_file():
        index = json.loads(index_path.read_text())
        if index.get("key") == key:
            progress(f"latent cache: reusing {cache_dir} ({index['counts']})")
            return index
    cache_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    train = _ShardWriter(ae, cache_dir, "train", progress)
    for path in train_imgs:
        img = _prepare(load_rgb(path), cfg.tile, cfg.min_rescale, rng)
        h, w = img.shape[-2:]
        for x, y in tile_boxes(w, h, cfg.tile, cfg.tile_density, cfg.max_tiles_per_image, rng):
            tile = img[..., y : y + cfg.tile, x : x + cfg.tile]
            # Flip the pixels before encoding: a flipped latent is not the latent of the
            # flipped image (the tiny encoders are far from flip-equivariant).
            if rng.random() < 0.5:
                tile = tile.flip(-1)
            if rng.random() < 0.5:
                tile = tile.flip(-2)
            train.add(tile)
    for _ in range(cfg.synthetic_tiles):
        train.add(synthetic_smooth_tile(cfg.tile, rng))
    train.flush()
    val = _ShardWriter(ae, cache_dir, "val", progress)
    for path in val_imgs[: cfg.max_val_crops]:
        img = _prepare(load_rgb(path), cfg.crop, cfg.min_rescale, None)
        x, y = center_box(img.shape[-1], img.shape[-2], cfg.crop)
        val.add(img[..., y : y + cfg.crop, x : x + cfg.crop])
    val.flush()
    index = {
        "version": CACHE_VERSION,
        "key": key,
        "family": ae.family.name,
        "vae": ae.source,
        "tile": {"train": cfg.tile, "val": cfg.crop},
        "data": str(root),
        "images": {"train": len(train_imgs), "val": len(val_imgs)},
        "val_images": [p.relative_to(root).as_posix() for p in val_imgs],
        "skipped": {k: len(v) for k, v in scan.skipped.items()},
        "counts": {"train": train.count, "val": val.count, "synthetic": cfg.synthetic_tiles},
        "shards": {"train": train.shards, "val": val.shards},
    }
    atomic_write(index_path, lambda tmp: Path(tmp).write_text(json.dumps(index, indent=1)))
    progress(f"latent cache: {train.count} train / {val.count} val tiles written to {cache_dir}")
    return index


SAFETENSORS_DTYPES = {"U8": torch.uint8, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


class ShardRows:
    """Reads one tile (row) of a shard's tensors with plain file reads.

    Not safetensors' own `safe_open`: that memory-maps the whole file, and every page a worker has
    touched then counts in its RSS, which grows with the cache (bench/bench_data.py measured it).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        header, self.base = read_safetensors_header(path)
        self.meta = {k: v for k, v in header.items() if k != "__metadata__"}
        self.rows = self.meta["hr_px"]["shape"][0]
        self.file = None
        self.pid = -1

    def row(self, key: str, i: int) -> torch.Tensor:
        """Tensor `key`'s row `i` as a fresh tensor."""
        if self.pid != os.getpid():  # opened per process: a forked DataLoader worker must not share the offset
            self.file, self.pid = open(self.path, "rb"), os.getpid()  # noqa: SIM115 - lives with the reader
        m = self.meta[key]
        start, end = m["data_offsets"]
        size = (end - start) // m["shape"][0]
        self.file.seek(self.base + start + i * size)
        data = bytearray(self.file.read(size))
        return torch.frombuffer(data, dtype=SAFETENSORS_DTYPES[m["dtype"]]).view(m["shape"][1:])


class LatentCrops(Dataset):
    """Every ALIGN-grid crop of every cached tile is one sample; only the sampled tile is read from disk."""

    def __init__(self, cache_dir: Path, shard_names: list[str], crop: int) -> None:
        if not shard_names:
            raise ValueError(f"latent cache in {cache_dir} has no samples for this split")
        self.shards = [ShardRows(str(Path(cache_dir) / n)) for n in shard_names]
        self.crop = crop
        self.rows = [(s, r) for s, shard in enumerate(self.shards) for r in range(shard.rows)]  # (shard, row) per tile
        tiles = {shard.meta["hr_px"]["shape"][-1] for shard in self.shards}
        if len(tiles) != 1 or min(tiles) < crop:
            raise ValueError(f"latent cache {cache_dir}: tile sides {sorted(tiles)} cannot give {crop}px crops")
        self.tile = tiles.pop()
        self.per_side = (self.tile - crop) // ALIGN + 1

    def __len__(self) -> int:
        return len(self.rows) * self.per_side**2

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        tile, pos = divmod(int(i), self.per_side**2)
        y, x = (ALIGN * v for v in divmod(pos, self.per_side))
        shard, row = self.rows[tile]
        out = {}
        for k in KEYS:
            st = LATENT_STRIDE[k]
            t = self.shards[shard].row(k, row)[:, y // st : (y + self.crop) // st, x // st : (x + self.crop) // st]
            out[k] = t.float() / 255.0 if k == "hr_px" else t.contiguous()
        return out
