"""Choose, per head of a v2 file, the decoder-matching setting (or none) that scores best where it matters.

    python tools/match_decoder_heads.py --model models/lua-flux1-small.safetensors \\
        --output runs/match/flux1-selected.safetensors --report bench/results/selection/flux1-decoder-match.json

Decoder matching (arch/reencode_residual.py `match_by_scale`) only acts on smooth areas, and the images the
heads are chosen on elsewhere (tools/select_v2_heads.py: held-out images 17-32) are 400 px renders with few of
them. So the choice here is made on two sets, scored together like bench/quality.py: --photos native-resolution
center crops of the large photos (short side >= --min-photo-side) in the *training* split of --data (the residual
saw them at random scales, the matching never did; never report them as held-out), and --limit of the held-out
images 17-32 (renders, so that texture keeps what the residual adds). The images bench/quality.py reports
(held-out 1-16) are not used. Each head keeps its best "steps:sigma" of --settings, or none on a tie, unless that
setting paints colour patches into flat images that the file leaves flat (tests/test_flat_regions.py's check).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from refine_prior_heads import best_per_head  # noqa: E402
from select_v2_heads import add_selection_image_args, scores, selection_images  # noqa: E402

from lua_core.arch.reencode_residual import MATCH_LR  # noqa: E402
from lua_core.data_split import is_validation, scan_images  # noqa: E402
from lua_core.model import load_model, with_decoder_match  # noqa: E402
from lua_core.tiny_ae import load_tiny_autoencoder  # noqa: E402

WHY = (
    "best of the decoder-matching settings tried on native-resolution crops of training-split photos and held-out "
    "renders of ../shared/data/train (tools/match_decoder_heads.py)"
)


def training_photos(data: str, val_fraction: float, min_side: int, count: int) -> list[Path]:
    """`count` large images of the training split (not the held-out one), spread evenly over their sorted list."""
    root = Path(data)
    large = [
        p
        for p in scan_images(root, min_side).usable
        if not is_validation(p, root, val_fraction) and min(Image.open(p).size) >= min_side
    ]
    if len(large) < count:
        raise SystemExit(f"{data}: {len(large)} training images have a short side >= {min_side} px, {count} wanted")
    return [large[i * len(large) // count] for i in range(count)]


def parse_match_settings(text: str) -> list[tuple[int, float, float]]:
    """'10:0.1,10:0.2:0.01' -> [(10, 0.1, MATCH_LR), (10, 0.2, 0.01)] (steps:sigma[:Adam step])."""
    parts = [item.split(":") for item in text.split(",") if item]
    return [(int(p[0]), float(p[1]), float(p[2]) if len(p) > 2 else MATCH_LR) for p in parts]


def main() -> None:
    """Score the settings per head and write the file with the best one per head."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a v2 .safetensors (e.g. the bundled file)")
    p.add_argument("--output", required=True, help="where the file with the chosen settings goes")
    p.add_argument("--report", default="", help="JSON with the scores and the choice (default: --output + .json)")
    p.add_argument(
        "--settings", default="10:0.05,10:0.1,10:0.2", help="decoder-matching steps:sigma[:Adam step] settings to try"
    )
    p.add_argument("--photos", type=int, default=8, help="native-resolution crops of training-split photos")
    p.add_argument("--min-photo-side", type=int, default=1024)
    p.add_argument("--flat-side", type=int, default=256, help="pixels per side of the flat-region check's images")
    add_selection_image_args(p)
    p.set_defaults(limit=8)
    args = p.parse_args()

    model = load_model(args.model)
    if model.info.arch != "reencode_residual":
        raise SystemExit(f"{args.model}: {model.info.title()} has no tiny decoder to match (v2 files only)")
    heads = model.scales
    tried = {f"steps{k}_sigma{sg:g}_lr{lr:g}": (k, sg, lr) for k, sg, lr in parse_match_settings(args.settings)}
    current = {s: model.config.match_for(s) for s in heads}
    models = {"current": model, **{n: with_decoder_match(model, dict.fromkeys(heads, ks)) for n, ks in tried.items()}}
    photos = training_photos(args.data, args.val_fraction, args.min_photo_side, args.photos)
    renders = selection_images(args)
    ae = load_tiny_autoencoder(model.family, [args.vae_approx])
    t0 = time.time()
    per_set = {
        "photos": scores(models, ae, photos, args.max_side),
        "held_out": scores(models, ae, renders, args.max_side),
    }
    n = len(photos) + len(renders)
    per_scale = {
        sc: {m: round((v * len(photos) + per_set["held_out"][sc][m] * len(renders)) / n, 4) for m, v in by.items()}
        for sc, by in per_set["photos"].items()
    }
    best, refused = best_per_head(model, models, ae, heads, per_scale, args.flat_side)
    chosen = with_decoder_match(model, {h: tried.get(best[f"x{h}"], current[h]) for h in heads})
    prov = dict(chosen.info.provenance)
    prov.update(decoder_match_by_head={f"x{s}": list(rest) for s, *rest in chosen.config.match_by_scale})
    prov.update(decoder_match_why=WHY)
    chosen.info.provenance = prov
    chosen.save(args.output)
    report = {
        "model": str(args.model),
        "family": model.family.name,
        "photos_training_split": [p.name for p in photos],
        "held_out_renders": [p.name for p in renders],
        "max_side": args.max_side,
        "psnr_by_set": per_set,
        "psnr": per_scale,
        "settings_tried": args.settings,
        "chosen": best,
        "refused_for_colour_patches": refused,
        "match_by_scale": [list(r) for r in chosen.config.match_by_scale],
        "output_minus_current_db": {sc: round(m[best[sc]] - m["current"], 4) for sc, m in per_scale.items()},
        "seconds": round(time.time() - t0, 1),
    }
    Path(args.report or f"{args.output}.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report[k] for k in ("family", "psnr", "chosen", "output_minus_current_db")}))


if __name__ == "__main__":
    main()
