"""Give each head of a v2 file that ships as the prior alone the prior setting that scores best on held-out images.

    python tools/refine_prior_heads.py --model models/lua-sd3-small.safetensors \\
        --output runs/sd3-prior-heads.safetensors --report bench/results/selection/sd3-prior-heads.json

A head whose residual is switched off (`residual_disabled` in the provenance, tools/select_v2_heads.py) returns
its prior alone, so that head's back-projection setting (`refine_by_scale`, arch/reencode_residual.py) can change
without touching the prior the other heads' residuals were trained over. Each "steps:rate" of --settings is scored
like bench/quality.py on the held-out images tools/select_v2_heads.py chooses heads on (after the first --skip,
which the quality report scores); each such head keeps its best setting, its present one on a tie, unless that
setting paints colour patches into flat images that the present one leaves flat (lua_core.evaluation
`flat_region_failures`, the check of tests/test_flat_regions.py): then the next best is tried.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from prior_refinement import parse_settings  # noqa: E402
from select_v2_heads import add_selection_image_args, scores, selection_images  # noqa: E402

from lua_core.evaluation import flat_region_failures  # noqa: E402
from lua_core.model import load_model, with_prior_refinement  # noqa: E402
from lua_core.tiny_ae import load_tiny_autoencoder  # noqa: E402

WHY = (
    "the residual of these heads is switched off, so their prior takes the back-projection setting that scored "
    "best on held-out images of ../shared/data/train (tools/refine_prior_heads.py)"
)


def best_without_new_patches(scores: dict[str, float], new_patches) -> tuple[str, dict[str, list[str]]]:
    """The best-scoring setting (the first on a tie) for which new_patches(name) is empty, and what it refused."""
    refused = {}
    for name in sorted(scores, key=scores.get, reverse=True):  # stable: "current" comes first among equals
        patches = [] if name == "current" else new_patches(name)
        if not patches:
            return name, refused
        refused[name] = patches
    raise AssertionError("unreachable: 'current' adds no patches")


def best_per_head(
    model, models: dict, ae, heads: tuple[int, ...], per_scale: dict[str, dict[str, float]], flat_side: int
) -> tuple[dict[str, str], dict[str, dict[str, list[str]]]]:
    """Per head "x<s>": the best-scoring entry of `models` that adds no flat-region failure to `model`'s, and what
    it refused."""
    best, refused = {}, {}
    for h in heads:
        before = set(flat_region_failures(model, ae, h, flat_side))

        def new_patches(name: str, h: int = h, before: set = before) -> list[str]:
            return sorted(set(flat_region_failures(models[name], ae, h, flat_side)) - before)

        best[f"x{h}"], refused[f"x{h}"] = best_without_new_patches(per_scale[f"x{h}"], new_patches)
    return best, refused


def main() -> None:
    """Score the settings on the prior-only heads and write the file with the best one per head."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a v2 .safetensors (e.g. the bundled file)")
    p.add_argument("--output", required=True, help="where the file with the chosen settings goes")
    p.add_argument("--report", default="", help="JSON with the scores and the choice (default: --output + .json)")
    p.add_argument("--settings", default="1:0.8,1:1,2:0.5,2:0.7", help="back-projection steps:rate pairs to try")
    p.add_argument("--flat-side", type=int, default=256, help="pixels per side of the flat-region check's images")
    add_selection_image_args(p)
    args = p.parse_args()

    model = load_model(args.model)
    disabled = model.info.provenance.get("residual_disabled", [])
    if model.info.arch != "reencode_residual" or not disabled:
        raise SystemExit(
            f"{args.model}: {model.info.title()} has no head that ships as the prior alone (residual_disabled); "
            "only such heads can change their prior without retraining"
        )
    heads = tuple(int(h.lstrip("x")) for h in disabled)
    tried = {f"steps{k}_rate{r:g}": (k, r) for k, r in parse_settings(args.settings)}
    models = {"current": model, **{n: with_prior_refinement(model, dict.fromkeys(heads, kr)) for n, kr in tried.items()}}
    images = selection_images(args)
    ae = load_tiny_autoencoder(model.family, [args.vae_approx])
    t0 = time.time()
    per_scale = scores(models, ae, images, args.max_side, heads)
    best, refused = best_per_head(model, models, ae, heads, per_scale, args.flat_side)
    chosen = with_prior_refinement(model, {h: tried[best[f"x{h}"]] for h in heads if best[f"x{h}"] != "current"})
    prov = dict(chosen.info.provenance)
    prov.update(prior_refinement_by_head={f"x{s}": [k, r] for s, k, r in chosen.config.refine_by_scale})
    prov.update(prior_refinement_why=WHY)
    chosen.info.provenance = prov
    chosen.save(args.output)
    report = {
        "model": str(args.model),
        "family": model.family.name,
        "heads": [f"x{h}" for h in heads],
        "images": [p.name for p in images],
        "max_side": args.max_side,
        "psnr": per_scale,
        "settings_tried": args.settings,
        "chosen": best,
        "refused_for_colour_patches": refused,
        "refine_by_scale": [list(r) for r in chosen.config.refine_by_scale],
        "output_minus_current_db": {sc: round(m[best[sc]] - m["current"], 4) for sc, m in per_scale.items()},
        "seconds": round(time.time() - t0, 1),
    }
    Path(args.report or f"{args.output}.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report[k] for k in ("family", "psnr", "chosen", "output_minus_current_db")}))


if __name__ == "__main__":
    main()
