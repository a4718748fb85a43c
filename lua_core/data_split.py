"""Which images exist and which are held out: one rule shared by training, evaluation and benchmarks."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .imaging import IMAGE_EXTENSIONS


@dataclass
class ImageScan:
    """Usable images and what was skipped (reported before any work starts)."""

    usable: list[Path]
    skipped: dict[str, list[str]]

    def summary(self) -> str:
        """One line: how many images are usable and how many were skipped, by reason."""
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


def held_out_images(data: str | os.PathLike, val_fraction: float) -> list[Path]:
    """The validation split the trainer keeps out of training (same hash rule)."""
    root = Path(data)
    return [p for p in scan_images(root, 128).usable if is_validation(p, root, val_fraction)]
