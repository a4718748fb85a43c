"""Can an SD1.x latent be told from an SDXL one? Statistics of real images encoded with taesd and taesdxl.

    python bench/latent_family_stats.py [--images 60] [--side 256]

Encodes two disjoint sets of training images (every k-th of ../shared/data/train from offset 0 and from
offset 7) with both tiny encoders (raw VAE latent space, as ComfyUI's VAE Encode gives) and records
per-latent features: overall standard deviation and the channel correlations corr(1,2) and corr(1,3).
Writes bench/results/latent-family-stats.json with each family's range per set and how often the pack's
warning rule (nodes/latent_family.py) names each family.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"

from lua_core.imaging import IMAGE_EXTENSIONS, load_rgb, to_tensor  # noqa: E402
from lua_core.tiny_ae import load_tiny_autoencoder  # noqa: E402
from nodes.latent_family import FEATURES, latent_features, looks_like  # noqa: E402


def encode_all(images: list[Path], side: int) -> dict[str, list[dict[str, float]]]:
    """Features of each image's latent under each family's tiny encoder."""
    out: dict[str, list[dict[str, float]]] = {}
    for fam in ("sd1", "sdxl"):
        ae = load_tiny_autoencoder(fam, [SHARED / "vae_approx"], parts=("encoder",))
        rows = []
        for p in images:
            x = to_tensor(load_rgb(p))
            x = F.interpolate(x[None] if x.ndim == 3 else x, size=(side, side), mode="area")
            with torch.no_grad():
                rows.append(latent_features(ae.encode(x)))
        out[fam] = rows
    return out


def all_images() -> list[Path]:
    """Every training image, sorted."""
    return sorted(p for p in (SHARED / "data" / "train").rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)


def pick_images(n: int, offset: int = 0) -> list[Path]:
    """Every k-th training image (deterministic), starting at `offset`."""
    files = all_images()
    step = max(1, len(files) // n)
    return files[offset::step][:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=60)
    ap.add_argument("--side", type=int, default=256)
    args = ap.parse_args()
    torch.set_num_threads(2)
    first = pick_images(args.images)
    second = [p for p in pick_images(args.images, offset=7) if p not in set(first)]
    report = {"date": time.strftime("%Y-%m-%d"), "side": args.side, "sets": {}}
    for label, images in (("offset0", first), ("offset7", second)):
        feats = encode_all(images, args.side)
        report["sets"][label] = {
            "images": len(images),
            "ranges": {
                fam: {k: [min(r[k] for r in rows), max(r[k] for r in rows)] for k in FEATURES}
                for fam, rows in feats.items()
            },
            # latents of family `fam` the rule calls sd1 / sdxl / cannot tell (a call of the other family is wrong)
            "rule": {
                fam: {
                    "called_sd1": sum(looks_like(r) == "sd1" for r in rows),
                    "called_sdxl": sum(looks_like(r) == "sdxl" for r in rows),
                    "undecided": sum(looks_like(r) is None for r in rows),
                }
                for fam, rows in feats.items()
            },
            "features": feats,
        }
    dest = ROOT / "bench" / "results" / "latent-family-stats.json"
    dest.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: {x: v[x] for x in ("images", "ranges", "rule")} for k, v in report["sets"].items()}, indent=1))


if __name__ == "__main__":
    main()
