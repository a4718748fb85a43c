"""Compact training set for a GPU machine that gets only the working tree (64 MiB in all, ../shared stays behind).

    python tools/prepare_gpu_data.py                  # -> .gpu_data/ (git-ignored), about 16 MB

Writes, for `bench/gpu_kit.py --train FAMILY` (which trains a v2 model on `.gpu_data/train` and `.gpu_data/photos`):
  .gpu_data/train/     the training split of ../shared/data/train (hold-out excluded by the same hash rule),
                       each image downscaled to a short side of --short-side px and stored as --format, except
                       --native-share of the larger ones, stored as a --short-side px square cut at native
                       resolution (bench/quality.py crops photos at native resolution, and their smooth,
                       out-of-focus regions are where the bundled files lose to pixel bicubic; downscaled
                       views have few of them); the GPU builds its tile cache from these in seconds
  .gpu_data/photos/    the training split of ../shared/data/photos (research licences: see its README), the same way
  .gpu_data/holdout/   with --holdout-side N: the hold-out images as N px center crops (q95) for bench/quality.py
  .gpu_data/vae_approx with --families F,G: their tiny autoencoders (TAESD family, MIT, licence copied along);
                       by default none: the sprint takes each prior from the bundled file (`train-v2 --prior-from`)
The defaults are the sprint's (docs/gpu.md): the holdout and the autoencoders are for a kit run that evaluates
on the GPU too, which the 64 MiB tree has no room for beside five bundled models.
Images are stored as --format (webp: fewer bytes than jpg at the same --quality, which the device limit needs).
Refuses to finish above --budget-mb, so the tree still fits the device's limit.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import zlib
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"


def training_view(im: Image.Image, name: str, short_side: int, native_share: float) -> Image.Image:
    """What the sprint trains on from one image: downscaled to `short_side`, or (for `native_share` of the larger
    images, chosen by a hash of `name` so reruns agree) a `short_side` square cut at native resolution."""
    if min(im.size) <= short_side:
        return im
    key = zlib.crc32(name.encode())
    if key % 1000 < native_share * 1000:
        pick = random.Random(key)
        x, y = pick.randint(0, im.width - short_side), pick.randint(0, im.height - short_side)
        return im.crop((x, y, x + short_side, y + short_side))
    f = short_side / min(im.size)
    return im.resize((round(im.width * f), round(im.height * f)), Image.LANCZOS)


def main() -> int:
    from lua_core.data_split import held_out_images, scan_images
    from lua_core.families import get_family
    from lua_core.imaging import load_rgb

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(SHARED / "data" / "train"))
    p.add_argument("--photos", default=str(SHARED / "data" / "photos"), help="'' = leave the photos out")
    p.add_argument("--vae-approx", default=str(SHARED / "vae_approx"))
    p.add_argument("--families", default="", help="tiny autoencoders to copy (default none)")
    p.add_argument("--out", default=str(ROOT / ".gpu_data"))
    p.add_argument("--short-side", type=int, default=384)
    p.add_argument("--native-share", type=float, default=0.5, help="larger images kept as a native-resolution cut")
    p.add_argument("--quality", type=int, default=85)
    p.add_argument("--holdout-side", type=int, default=0, help="0 = no holdout/ (the sprint evaluates at home)")
    p.add_argument("--format", choices=("jpg", "webp"), default="webp")
    p.add_argument("--val-fraction", type=float, default=0.08, help="the hold-out rule of bench/quality.py")
    p.add_argument("--budget-mb", type=float, default=17.0)
    args = p.parse_args()

    root, out = Path(args.data), Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    holdout = set(held_out_images(root, args.val_fraction))
    for path in scan_images(root, args.short_side).usable:
        im = Image.fromarray(load_rgb(path))
        if path in holdout:
            if not args.holdout_side:
                continue
            side = min(im.size)
            box = ((im.width - side) // 2, (im.height - side) // 2)
            im = im.crop((*box, box[0] + side, box[1] + side)).resize((args.holdout_side,) * 2, Image.LANCZOS)
            dest, q = out / "holdout" / path.relative_to(root), 95
        else:
            im = training_view(im, str(path.relative_to(root)), args.short_side, args.native_share)
            dest, q = out / "train" / path.relative_to(root), args.quality
        dest = dest.with_name(f"{dest.name}.{args.format}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        im.save(dest, quality=q)
    if args.photos:
        photos = Path(args.photos)
        held = set(held_out_images(photos, args.val_fraction))  # never trained on, as in training on ../shared
        for path in scan_images(photos, args.short_side).usable:
            if path in held:
                continue
            im = training_view(Image.fromarray(load_rgb(path)), str(path.relative_to(photos)), args.short_side,
                               args.native_share)
            dest = out / "photos" / path.relative_to(photos)
            dest = dest.with_name(f"{dest.name}.{args.format}")
            dest.parent.mkdir(parents=True, exist_ok=True)
            im.save(dest, quality=args.quality)
    ae_dir = out / "vae_approx"
    families = [f for f in args.families.split(",") if f]
    if families:
        ae_dir.mkdir(parents=True)
        shutil.copy(Path(args.vae_approx) / "LICENSE-taesd.txt", ae_dir)
    for fam in families:
        name = get_family(fam).tiny_ae
        for part in ("encoder", "decoder"):  # taef2 ships as .pth only (tiny_ae.py reads both)
            src = Path(args.vae_approx) / f"{name}_{part}.safetensors"
            shutil.copy(src if src.is_file() else src.with_suffix(".pth"), ae_dir)
    sizes = {d.name: sum(f.stat().st_size for f in d.rglob("*") if f.is_file()) / 2**20 for d in out.iterdir()}
    total = sum(sizes.values())
    counts = {d.name: sum(1 for f in d.rglob("*") if f.is_file()) for d in out.iterdir()}
    print(f"{out}: " + ", ".join(f"{k} {counts[k]} files {v:.1f} MB" for k, v in sizes.items()) + f"; {total:.1f} MB")
    if total > args.budget_mb:
        print(f"{total:.1f} MB exceeds --budget-mb {args.budget_mb}: lower --short-side or --quality", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
