"""Keep a new bundled file only if the quality report says it beats the file it replaced; else put the old back.

    cp models/lua-sdxl-small.safetensors runs/sdxl-before.safetensors; cp bench/results/quality.json runs/before.json
    cp runs/sdxl-selected.safetensors models/lua-sdxl-small.safetensors
    python bench/quality.py --families sdxl --limit 16 --update --previous runs/before.json
    python tools/keep_if_better.py --family sdxl --before-file runs/sdxl-before.safetensors --before-report runs/before.json

"Beats" = mean PSNR >= the old file's on every scale and > on at least one, both files scored here, in one
process, on the report's images (bench/quality.py's protocol), and no colour patches in flat images that the old
file left flat, at any scale (lua_core.evaluation `flat_region_failures`, the check of tests/test_flat_regions.py).
Otherwise the old file and its report entry are restored. Both files are scored side by side rather than against
the old report's numbers because decoder matching's bf16 steps land slightly differently from one run to the next
(an SD1 x2 head identical tensor for tensor once scored 0.001 dB "below" its stored number). The comparison is
recorded in the report's family entry (`kept_over_previous`). A head whose output is the same tensor in both files
(on a random probe latent) is not scored: it is the same head, so it differs by 0 dB and adds no patches.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import torch  # noqa: E402
from select_v2_heads import scores  # noqa: E402

from lua_core.data_split import held_out_images  # noqa: E402
from lua_core.engine import upscale_latent  # noqa: E402
from lua_core.evaluation import flat_region_failures  # noqa: E402
from lua_core.model import LUAModel, load_model  # noqa: E402
from lua_core.tiny_ae import load_tiny_autoencoder  # noqa: E402


def changed_scales(new: LUAModel, old: LUAModel, side: int = 16) -> tuple[int, ...]:
    """The scales whose output differs between the two files on one random latent (the others are the same head)."""
    z = torch.randn(1, new.channels, side, side, generator=torch.Generator().manual_seed(0))
    return tuple(s for s in new.scales if not torch.equal(upscale_latent(new, z, s), upscale_latent(old, z, s)))


def new_colour_patches(new_path: Path, old_path: Path, vae_approx: str, side: int = 256) -> dict[str, list[str]]:
    """Per changed scale, the flat images the new file paints patches into and the old one leaves flat."""
    new, old = load_model(new_path), load_model(old_path)
    ae = load_tiny_autoencoder(new.family, [vae_approx])
    added = {}
    for s in changed_scales(new, old):
        names = sorted(set(flat_region_failures(new, ae, s, side)) - set(flat_region_failures(old, ae, s, side)))
        if names:
            added[f"x{s}"] = names
    return added


def new_minus_old_db(new_path: Path, old_path: Path, report: dict, data: str, vae_approx: str) -> dict[str, dict]:
    """Per scale: both files' mean PSNR on the report's images, scored in this one process, and their difference
    (a scale whose head is the same in both files: `identical`, 0 dB, not scored)."""
    images = held_out_images(data, report.get("val_fraction", 0.08))[: report["n_images"]]
    if [p.name for p in images] != report["images"]:
        raise SystemExit(f"{data}: its held-out images are not the report's; pass the --data the report was made from")
    new, old = load_model(new_path), load_model(old_path)
    ae = load_tiny_autoencoder(new.family, [vae_approx])
    changed = changed_scales(new, old)
    by_scale = scores({"new": new, "old": old}, ae, images, report["max_side"], changed) if changed else {}
    compared = {f"x{s}": {"identical": True, "new_minus_old_db": 0.0} for s in new.scales if s not in changed}
    return compared | {sc: {**d, "new_minus_old_db": round(d["new"] - d["old"], 4)} for sc, d in by_scale.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", required=True)
    p.add_argument("--before-file", required=True, help="a copy of the bundled file before it was replaced")
    p.add_argument("--before-report", required=True, help="a copy of the quality report before the new run")
    p.add_argument("--report", default=str(ROOT / "bench" / "results" / "quality.json"))
    p.add_argument("--pattern", default="lua-{family}-small.safetensors")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "train"), help="the report's image folder")
    p.add_argument("--vae-approx", default=str(ROOT.parent / "shared" / "vae_approx"), help="the tiny autoencoders")
    args = p.parse_args()

    report = json.loads(Path(args.report).read_text())
    bundled = ROOT / "models" / args.pattern.format(family=args.family)
    compared = new_minus_old_db(bundled, Path(args.before_file), report, args.data, args.vae_approx)
    delta = {sc: d["new_minus_old_db"] for sc, d in compared.items()}
    better = all(d >= 0 for d in delta.values()) and any(d > 0 for d in delta.values())
    patches = new_colour_patches(bundled, Path(args.before_file), args.vae_approx) if better else {}
    verdict = "restore the old file" if not better or patches else "keep the new file"
    print(f"{args.family}: new - old file = {delta} dB; new colour patches in flat images: {patches or 'none'} -> {verdict}")
    if not better or patches:
        shutil.copy(args.before_file, bundled)
        before = json.loads(Path(args.before_report).read_text())
        report["families"][args.family] = before["families"][args.family]
        sys.path.insert(0, str(ROOT / "bench"))
        from quality import plot  # the bars figure is drawn from the report alone

        plot(report, ROOT / "docs" / "quality-psnr.png")
        print(f"restored; docs/quality-crops-{args.family}.png still shows the new file: restore it from git")
    else:
        old_name = Path(args.before_file).name
        report["families"][args.family]["kept_over_previous"] = {"old_file": old_name, "scales": compared}
    Path(args.report).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
