"""Flat areas per bundled model: PSNR and worst-1 % colour error on flat colours and smooth gradients.

    python bench/flat_regions.py              # every bundled model, x2 and x4; writes bench/results/flat-regions.json
    python bench/flat_regions.py --update --models models/lua-sd1-small.safetensors   # one file again, keep the rest

The images and the colour-patch bound are those of tests/test_flat_regions.py and tools/keep_if_better.py
(lua_core.evaluation `smooth_images`, `flat_region_outputs`, FLAT_MARGIN): six flat colours and eight random
gradients, 256 px, downsampled, encoded with the family's tiny autoencoder, upscaled, decoded. The test only asks
"no patch"; this file keeps the numbers, so the docs can say what each file does to flat areas next to pixel bicubic
(a file may pass the bound and still be a little below pixel bicubic there). Heads with decoder matching are
measured twice: as shipped and with Load LUA Model's decoder_matching off.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lua_core import load_model  # noqa: E402
from lua_core.checkpoint import sha256_file  # noqa: E402
from lua_core.evaluation import (  # noqa: E402
    FLAT_MARGIN,
    colour_patch_bound,
    flat_region_outputs,
    smooth_images,
    worst_colour_error,
)
from lua_core.metrics import psnr  # noqa: E402
from lua_core.model import LUAModel, without_decoder_match  # noqa: E402
from lua_core.tiny_ae import TinyAutoencoder, load_tiny_autoencoder  # noqa: E402


def measure(model: LUAModel, ae: TinyAutoencoder, scale: int, side: int) -> dict:
    """Per smooth image and method: PSNR and worst-1 % colour error; the summary over the images."""
    images = {}
    for name, hr in smooth_images(side):
        outputs = flat_region_outputs(model, ae, hr, scale)
        row = {k: {"psnr": float(psnr(v, hr)), "worst_error": worst_colour_error(v, hr)} for k, v in outputs.items()}
        bound = colour_patch_bound({k: v["worst_error"] for k, v in row.items()})
        images[name] = {**row, "bound": bound, "patch": row["lua"]["worst_error"] > bound}
    mean = {k: statistics.fmean(r[k]["psnr"] for r in images.values()) for k in ("lua", "pixel_bicubic", "ceiling")}
    return {
        "images": images,
        "mean_psnr": mean,
        "lua_minus_pixel_bicubic_db": mean["lua"] - mean["pixel_bicubic"],
        "images_below_pixel_bicubic": sum(r["lua"]["psnr"] < r["pixel_bicubic"]["psnr"] for r in images.values()),
        "patches": sorted(n for n, r in images.items() if r["patch"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", type=Path, default=sorted((ROOT / "models").glob("lua-*.safetensors")))
    ap.add_argument("--vae-approx", type=Path, default=ROOT.parent / "shared" / "vae_approx")
    ap.add_argument("--side", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "flat-regions.json")
    ap.add_argument("--update", action="store_true", help="keep the other files' entries of an existing --output")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    previous = json.loads(args.output.read_text()) if args.update and args.output.is_file() else {}
    files = previous.get("files", {})
    for path in args.models:
        started = time.time()
        model = load_model(path)
        ae = load_tiny_autoencoder(model.family, [args.vae_approx])
        # decoder matching "off" only where a head has matching steps (elsewhere it computes the same)
        matched = [s for s, steps, *_ in getattr(model.config, "match_by_scale", ()) if steps]
        variants = {"as_shipped": (model, (2, 4)), "decoder_matching_off": (without_decoder_match(model), matched)}
        # when, how and how long per file: an --update run measures some files and keeps the others' entries
        # which file was measured: tests/test_flat_regions.py holds a bundled file to the record of exactly that file
        files[path.name] = {
            "family": model.family.name,
            "sha256": sha256_file(path),
            "date": datetime.date.today().isoformat(),
            "threads": args.threads,
        }
        for variant, (m, scales) in variants.items():
            if not scales:
                continue
            files[path.name][variant] = {f"x{s}": measure(m, ae, s, args.side) for s in scales}
            for s, r in files[path.name][variant].items():
                print(
                    f"{path.name} {variant} {s}: LUA {r['mean_psnr']['lua']:.2f} dB, pixel bicubic "
                    f"{r['mean_psnr']['pixel_bicubic']:.2f}, below it on {r['images_below_pixel_bicubic']} of "
                    f"{len(r['images'])}, patches: {r['patches'] or 'none'}",
                    flush=True,
                )
        files[path.name]["seconds"] = round(time.time() - started, 1)
    report = {
        "date": datetime.date.today().isoformat(),
        "command": previous.get("command", "python bench/flat_regions.py " + " ".join(sys.argv[1:])),
        "side": args.side,
        "margin": FLAT_MARGIN,
        "files": dict(sorted(files.items())),
    }
    args.output.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
