"""Which inputs should the v2 residual see? The variants trained for the same steps, scored on held-out images.

    python bench/input_variants.py --family sdxl --compare-steps 200 --limit 12

Variants (arch/reencode_residual.py INPUT_VARIANTS): `latent+prior` (z and the space-to-depth prior),
`latent+prior+pixels` (plus the decoded input pixels, space-to-depth, which the prior computes anyway) and
`latent+prior+pixels+error` (plus the prior's round-trip error; added 2026-12-05, after the committed
comparison of the first two, so bench/results/input-variants-sdxl.json has two). All start from the same tile cache, seed and
schedule (`--steps`, cosine) and stop after `--compare-steps` steps (equal work: on a shared 2-core machine
wall-clock minutes vary with the load, so the minutes each took are recorded, not used); each is then scored with
`bench/quality.py`'s protocol on the first `--limit` held-out images of ../shared/data/train. The runs stay in
`--runs` (resumable): the training script continues the winner. Writes bench/results/input-variants-<family>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"


def main() -> None:
    from lua_core.arch.reencode_residual import INPUT_VARIANTS
    from lua_core.data_split import held_out_images
    from lua_core.evaluation import evaluate
    from lua_core.model import load_model
    from lua_core.tiny_ae import load_tiny_autoencoder
    from lua_core.train.residual import ResidualTrainConfig, ResidualTrainer

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", default="sdxl")
    p.add_argument("--compare-steps", type=int, default=200, help="training steps per variant")
    p.add_argument("--steps", type=int, default=1200, help="cosine schedule length (the winner continues to it)")
    p.add_argument("--limit", type=int, default=12, help="held-out images scored")
    p.add_argument("--runs", default=str(ROOT / "runs"))
    p.add_argument("--output", default="")
    args = p.parse_args()
    data = (str(SHARED / "data" / "train"), str(SHARED / "data" / "photos"))
    vae = str(SHARED / "vae_approx")
    images = held_out_images(data[0], 0.08)[: args.limit]
    ae = load_tiny_autoencoder(args.family, [vae])
    report = {
        "benchmark": "input-variants",
        "date": time.strftime("%Y-%m-%d"),
        "family": args.family,
        "command": f"bench/input_variants.py --family {args.family} --compare-steps {args.compare_steps} --limit {args.limit}",
        "protocol": "same cache, seed and cosine schedule; equal training steps; bench/quality.py protocol on "
        f"the first {len(images)} held-out images (384 px)",
        "variants": {},
    }
    for variant in INPUT_VARIANTS:
        run = Path(args.runs) / f"v2-{args.family}-{variant.replace('+', '-')}"
        cfg = ResidualTrainConfig(
            family=args.family,
            data=data,
            vae_approx=vae,
            run_dir=str(run),
            cache_dir=str(Path(args.runs) / f"cache-v2-{args.family}"),
            inputs=variant,
            steps=args.steps,
        )
        trainer = ResidualTrainer(cfg)
        if trainer.state_path.is_file():
            trainer.load_state()
        trainer.run(until_step=args.compare_steps)  # nothing more when a resumed run is already there
        path = run / "compare.safetensors"
        trainer.export(path, note=f"input-variant comparison, {variant}")
        r = evaluate(load_model(path), ae, images, 384)
        report["variants"][variant] = {
            "run_dir": run.name,
            "steps": trainer.step,
            "train_minutes": round(trainer.seconds / 60, 2),
            "parameters": sum(p.numel() for p in trainer.net.parameters() if p.requires_grad),
            "psnr": {
                sc: {m: s["mean"][m]["psnr"] for m in ("lua", "pixel_bicubic", "reencode")}
                for sc, s in r["scales"].items()
            },
        }
        print(variant, report["variants"][variant], flush=True)
    mean = {v: sum(s["lua"] for s in r["psnr"].values()) / len(r["psnr"]) for v, r in report["variants"].items()}
    report["mean_lua_psnr"] = mean
    report["winner"] = max(mean, key=mean.get)
    out = Path(args.output or ROOT / "bench" / "results" / f"input-variants-{args.family}.json")
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"winner: {report['winner']}; wrote {out}")


if __name__ == "__main__":
    main()
