"""Capacity sweep at a fixed CPU budget: which width, depth, window, stage split and decode crop to ship.

    python bench/sweep.py --cpu-minutes 3          # writes bench/results/sweep-sdxl-cpu.json + docs/sweep-sdxl.png

Every variant trains SDXL from scratch for the same minutes of process CPU time (`--max-cpu-minutes`;
wall time would punish whichever run shared the machine with something else), its curriculum fitted to
that budget (`--fit-minutes`), on the same latent cache, then is scored with the quality protocol of
bench/quality.py on --images held-out images: decoded PSNR of LUA, pixel bicubic and
decode -> resize -> encode, x2 and x4. One variable changes per variant; `base` is the CPU preset.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"

VARIANTS: dict[str, dict] = {
    "base": {},
    "width-32": {"embed_dim": 32, "head_num_feat": 32},
    "width-96": {"embed_dim": 96, "head_num_feat": 96},
    "depth-2x4": {"depths": (4, 4), "num_heads": (2, 2)},
    "window-4": {"window_size": 4},
    "stages-0/10/90": {"stage_steps": (0, 400, 3600)},
    "stages-40/10/50": {"stage_steps": (1600, 400, 2000)},
    "decode-crop-8": {"decode_crop": 8},
    "decode-crop-16": {"decode_crop": 16},
}
BASE = {"stage_steps": (1000, 300, 2700)}


def run_variant(name: str, args: argparse.Namespace) -> dict:
    """Train one variant for the CPU budget, then evaluate it."""
    import torch

    from lua_core.data_split import held_out_images
    from lua_core.evaluation import evaluate
    from lua_core.model import load_model
    from lua_core.tiny_ae import load_tiny_autoencoder
    from lua_core.train.config import TrainConfig
    from lua_core.train.trainer import Trainer

    run_dir = Path(args.work) / name
    values = {**BASE, **VARIANTS[name]}
    cfg = TrainConfig(
        data=args.data,
        family="sdxl",
        vae_approx=args.vae_approx,
        run_dir=str(run_dir),
        cache_dir=args.cache_dir,
        tile=args.tile,
        max_tiles_per_image=args.max_tiles_per_image,
        threads=args.threads,
        max_cpu_minutes=args.cpu_minutes,
        fit_minutes=args.cpu_minutes,
        val_every=10**9,
        log_every=50,
        **values,
    )
    trainer = Trainer(cfg, say=lambda m: print(f"[{name}] {m}", file=sys.stderr, flush=True))
    cpu0 = time.process_time()
    trainer.run()
    cpu = time.process_time() - cpu0
    path = trainer.export(str(run_dir / "model.safetensors"))
    model = load_model(path)
    ae = load_tiny_autoencoder("sdxl", [args.vae_approx])
    images = held_out_images(args.data, cfg.val_fraction)[: args.images]
    torch.manual_seed(0)
    report = evaluate(model, ae, images, args.max_side)
    scores = {}
    for scale, r in report["scales"].items():
        mean = r["mean"]
        scores[scale] = {
            "lua": mean["lua"]["psnr"],
            "pixel_bicubic": mean["pixel_bicubic"]["psnr"],
            "reencode": mean["reencode"]["psnr"],
            "lua_minus_pixel_bicubic_db": r["lua_minus_pixel_bicubic_db"],
        }
    return {
        "variant": name,
        "changes": {k: list(v) if isinstance(v, tuple) else v for k, v in VARIANTS[name].items()},
        "params": sum(p.numel() for p in model.net.parameters()),
        "steps": trainer.step,
        "fitted_stage_steps": list(trainer.stages),
        "cpu_minutes": round(cpu / 60, 2),
        "scores": scores,
    }


def plot(report: dict, dest: Path) -> None:
    """Bars of LUA - pixel bicubic per variant and scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["variants"]
    names = [r["variant"] for r in rows]
    fig, ax = plt.subplots(figsize=(10, 4))
    for k, scale in enumerate(("x2", "x4")):
        vals = [r["scores"][scale]["lua_minus_pixel_bicubic_db"] for r in rows]
        ax.bar([i + 0.4 * k for i in range(len(rows))], vals, width=0.4, label=scale)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks([i + 0.2 for i in range(len(rows))], names, rotation=30, ha="right")
    ax.set_ylabel("LUA - pixel bicubic (dB)")
    ax.set_title(f"SDXL from scratch, {report['cpu_minutes_each']} CPU-min each, {report['n_images']} held-out images")
    ax.legend()
    fig.tight_layout()
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu-minutes", type=float, default=3.0)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--data", default=str(SHARED / "data" / "train"))
    p.add_argument("--vae-approx", default=str(SHARED / "vae_approx"))
    p.add_argument("--cache-dir", default=str(ROOT / "runs" / "cache-sdxl"), help="shared by every variant")
    p.add_argument("--tile", type=int, default=320)
    p.add_argument("--max-tiles-per-image", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--images", type=int, default=12)
    p.add_argument("--max-side", type=int, default=256)
    p.add_argument("--work", default=str(ROOT / "runs" / "sweep"))
    p.add_argument("--output", default=str(ROOT / "bench" / "results" / "sweep-sdxl-cpu.json"))
    p.add_argument("--figure", default=str(ROOT / "docs" / "sweep-sdxl.png"))
    args = p.parse_args()
    out = Path(args.output)
    done = {r["variant"]: r for r in json.loads(out.read_text())["variants"]} if out.is_file() else {}
    rows = []
    for name in args.variants.split(","):
        if name in done and done[name]["cpu_minutes"] >= 0.95 * args.cpu_minutes:  # resumable: keep finished ones
            rows.append(done[name])
            continue
        rows.append(run_variant(name, args))
        best = max(rows, key=lambda r: r["scores"]["x2"]["lua"] + r["scores"]["x4"]["lua"])
        report = {
            "benchmark": "capacity-sweep",
            "date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPUs (shared with other jobs)",
            "command": "bench/sweep.py " + " ".join(sys.argv[1:]),
            "cpu_minutes_each": args.cpu_minutes,
            "n_images": args.images,
            "max_side": args.max_side,
            "variants": rows,
            "best": best["variant"],
        }
        out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"{name}: {rows[-1]['scores']}", file=sys.stderr)
    plot(report, Path(args.figure))
    print(f"wrote {out}; best at {args.cpu_minutes} CPU-min: {report['best']}")


if __name__ == "__main__":
    main()
