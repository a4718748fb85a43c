"""How much back-projection steps on the re-encode prior recover, per family and scale (no training involved).

    python bench/prior_refinement.py                      # writes bench/results/prior-refinement.json
    python bench/prior_refinement.py --families sd3 --limit 4
    python bench/prior_refinement.py --families sd3 flux2 --settings 1:0.8,1:1,2:0.5 --output /tmp/more.json

The prior decode -> bicubic -> encode loses what the tiny autoencoder's round trip loses at the output size;
a back-projection step p <- p + rate * (E(target) - E(D(p))) pulls D(p) back towards the bicubic target.
Whether that converges depends on how well the tiny encoder inverts its decoder, so it is measured per family:
untrained v2 models (= their prior, see arch/reencode_residual.py) with each (steps, rate) setting, scored
like bench/quality.py (decoded PSNR against HR) next to pixel bicubic, on held-out images of
../shared/data/train after the first --skip (the ones tools/select_v2_heads.py chooses heads on; the quality
report scores the first 16), so the setting is not chosen on the published images.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"

from lua_core import get_family, upscale_latent  # noqa: E402
from lua_core.data_split import held_out_images  # noqa: E402
from lua_core.evaluation import hr_crop, lr_latent  # noqa: E402
from lua_core.imaging import bicubic_resize  # noqa: E402
from lua_core.metrics import psnr  # noqa: E402
from lua_core.model import new_v2_model  # noqa: E402
from lua_core.tiny_ae import load_tiny_autoencoder  # noqa: E402

SETTINGS = "0:0,1:0.5,1:0.8"  # steps:rate pairs; 0:0 is the plain prior


def parse_settings(text: str) -> list[tuple[int, float]]:
    """Parse "0:0,1:0.8,2:0.5" into [(0, 0.0), (1, 0.8), (2, 0.5)] (back-projection steps, rate)."""
    pairs = [item.split(":") for item in text.split(",")]
    if any(len(p) != 2 for p in pairs):
        raise SystemExit(f"--settings {text!r}: expected steps:rate pairs separated by commas, e.g. {SETTINGS}")
    return [(int(k), float(r)) for k, r in pairs]


@torch.no_grad()
def measure(
    family: str, images: list[Path], vae_approx: Path, max_side: int, settings: list[tuple[int, float]]
) -> dict:
    """Mean decoded PSNR per scale of pixel bicubic and of the prior under every refinement setting."""
    ae = load_tiny_autoencoder(family, [vae_approx])
    priors = {
        f"steps{k}_rate{r}": new_v2_model(get_family(family), vae_approx=vae_approx, refine=(k, r)) for k, r in settings
    }
    sums: dict[str, dict[str, float]] = {}
    for path in images:
        hr = hr_crop(path, max_side)
        for s in (2, 4):
            row = sums.setdefault(f"x{s}", {})
            z = lr_latent(ae, hr, s)
            pix = bicubic_resize(ae.decode(z).clamp(0, 1), tuple(hr.shape[-2:])).clamp(0, 1)
            row["pixel_bicubic"] = row.get("pixel_bicubic", 0.0) + psnr(pix, hr).item()
            for name, model in priors.items():
                out = ae.decode(upscale_latent(model, z, s)).clamp(0, 1)
                row[name] = row.get(name, 0.0) + psnr(out, hr).item()
    return {sc: {k: round(v / len(images), 4) for k, v in row.items()} for sc, row in sums.items()}


def main() -> None:
    """Measure every family and write the JSON."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", nargs="+", default=["sd1", "sdxl", "sd3", "flux1", "flux2"])
    p.add_argument("--data", default=str(SHARED / "data" / "train"))
    p.add_argument("--vae-approx", default=str(SHARED / "vae_approx"))
    p.add_argument("--skip", type=int, default=16, help="held-out images the quality report scores (not used here)")
    p.add_argument("--limit", type=int, default=8)
    p.add_argument("--max-side", type=int, default=384)
    p.add_argument("--settings", default=SETTINGS, help="back-projection steps:rate pairs to measure")
    p.add_argument("--output", default=str(ROOT / "bench" / "results" / "prior-refinement.json"))
    args = p.parse_args()
    images = held_out_images(args.data, 0.08)[args.skip : args.skip + args.limit]
    settings = parse_settings(args.settings)
    results = {}
    for fam in args.families:
        t0 = time.time()
        results[fam] = measure(fam, images, Path(args.vae_approx), args.max_side, settings)
        print(fam, json.dumps(results[fam]), f"{time.time() - t0:.0f} s", flush=True)
    report = {
        "benchmark": "prior-refinement",
        "date": time.strftime("%Y-%m-%d"),
        "command": "bench/prior_refinement.py " + " ".join(sys.argv[1:]),
        "protocol": "decoded PSNR (dB) vs HR, tiny AE as VAE, as bench/quality.py; untrained v2 models = the prior",
        "settings": [{"steps": k, "rate": r} for k, r in settings],
        "images": [p.name for p in images],
        "max_side": args.max_side,
        "families": results,
    }
    Path(args.output).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
