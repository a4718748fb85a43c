"""Keep a new bundled file only if the quality report says it beats the file it replaced; else put the old back.

    cp models/lua-sdxl-small.safetensors runs/sdxl-before.safetensors; cp bench/results/quality.json runs/before.json
    cp runs/sdxl-selected.safetensors models/lua-sdxl-small.safetensors
    python bench/quality.py --families sdxl --limit 16 --update --previous runs/before.json
    python tools/keep_if_better.py --family sdxl --before-file runs/sdxl-before.safetensors --before-report runs/before.json

"Beats" = mean PSNR >= the old file's on every scale and > on at least one (bench/quality.py's per-image
numbers of both files on the same images), and no colour patches in flat images that the old file left flat, at
any scale (lua_core.evaluation `flat_region_failures`, the check of tests/test_flat_regions.py). Otherwise the
old file and its report entry are restored.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lua_core.evaluation import flat_region_failures  # noqa: E402
from lua_core.model import load_model  # noqa: E402
from lua_core.tiny_ae import load_tiny_autoencoder  # noqa: E402


def new_colour_patches(new_path: Path, old_path: Path, vae_approx: str, side: int = 256) -> dict[str, list[str]]:
    """Per scale, the flat images the new file paints patches into and the old one leaves flat."""
    new, old = load_model(new_path), load_model(old_path)
    ae = load_tiny_autoencoder(new.family, [vae_approx])
    added = {}
    for s in new.scales:
        names = sorted(set(flat_region_failures(new, ae, s, side)) - set(flat_region_failures(old, ae, s, side)))
        if names:
            added[f"x{s}"] = names
    return added


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", required=True)
    p.add_argument("--before-file", required=True, help="a copy of the bundled file before it was replaced")
    p.add_argument("--before-report", required=True, help="a copy of the quality report before the new run")
    p.add_argument("--report", default=str(ROOT / "bench" / "results" / "quality.json"))
    p.add_argument("--pattern", default="lua-{family}-small.safetensors")
    p.add_argument("--vae-approx", default=str(ROOT.parent / "shared" / "vae_approx"), help="the tiny autoencoders")
    args = p.parse_args()

    report = json.loads(Path(args.report).read_text())
    scales = report["families"][args.family]["scales"]
    if any("previous_model" not in s for s in scales.values()):
        raise SystemExit(f"{args.report}: {args.family} has no previous-file numbers; run bench/quality.py --previous")
    delta = {sc: round(s["mean"]["lua"]["psnr"] - s["previous_model"]["lua_psnr"], 4) for sc, s in scales.items()}
    better = all(d >= 0 for d in delta.values()) and any(d > 0 for d in delta.values())
    bundled = ROOT / "models" / args.pattern.format(family=args.family)
    patches = new_colour_patches(bundled, Path(args.before_file), args.vae_approx) if better else {}
    verdict = "restore the old file" if not better or patches else "keep the new file"
    print(f"{args.family}: new - old file = {delta} dB; new colour patches in flat images: {patches or 'none'} -> {verdict}")
    if not better or patches:
        shutil.copy(args.before_file, bundled)
        before = json.loads(Path(args.before_report).read_text())
        report["families"][args.family] = before["families"][args.family]
        Path(args.report).write_text(json.dumps(report, indent=1) + "\n")
        sys.path.insert(0, str(ROOT / "bench"))
        from quality import plot  # the bars figure is drawn from the report alone

        plot(report, ROOT / "docs" / "quality-psnr.png")
        print(f"restored; docs/quality-crops-{args.family}.png still shows the new file: restore it from git")


if __name__ == "__main__":
    main()
