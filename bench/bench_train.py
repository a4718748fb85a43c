"""Training throughput: samples/second and peak memory of a preset, per curriculum stage.

    python bench/bench_train.py                       # cpu preset, writes bench/results/train-cpu-cpu.json
    python bench/bench_train.py --device cuda --preset paper

Uses a small latent cache built from a few images of ../shared/data/train (speed does not depend on
the cache size), then times --steps optimiser steps of each stage in a fresh subprocess (peak RSS,
or torch.cuda.max_memory_allocated on GPU). The first two steps of each stage are warm-up.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"


def one_stage(args: argparse.Namespace) -> dict:
    import torch

    from lua_core.train.config import PRESETS, TrainConfig
    from lua_core.train.optim import autocast_for
    from lua_core.train.trainer import Trainer

    values = {**PRESETS[args.preset], "data": args.data, "family": args.family, "vae_approx": args.vae_approx}
    values.update(run_dir=args.run_dir, cache_dir=args.cache_dir, val_fraction=0.0, stage_steps="1000,1000,1000")
    cfg = TrainConfig(**values)
    trainer = Trainer(cfg, say=lambda m: None)
    trainer.step = 1000 * args.stage
    for _ in range(2):
        trainer.train_step()
    if trainer.dist.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        trainer.train_step()
    if trainer.dist.device.type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / args.steps
    result = {
        "stage": ["I-latent", "II-latent+pixel", "III-pixel"][args.stage],
        "sec_per_step": round(dt, 4),
        "samples_per_sec": round(cfg.batch_size / dt, 2),
        "batch_size": cfg.batch_size,
        "amp": str(autocast_for(cfg, trainer.dist.device).__class__.__name__ != "nullcontext"),
        "params": sum(p.numel() for p in trainer.net.parameters()),
    }
    if trainer.dist.device.type == "cuda":
        result["peak_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    else:
        result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cpu")
    p.add_argument("--family", default="sdxl")
    p.add_argument("--device", default="cpu", help="cpu or cuda (the trainer picks CUDA when available)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--images", type=int, default=8, help="images copied into the throw-away cache")
    p.add_argument("--vae-approx", default=str(SHARED / "vae_approx"))
    p.add_argument("--output", default="")
    p.add_argument("--stage", type=int, help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--run-dir", help=argparse.SUPPRESS)
    p.add_argument("--cache-dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.stage is not None:
        print(json.dumps(one_stage(args)))
        return
    work = Path(tempfile.mkdtemp(prefix="lua_bench_train_"))
    try:
        data = work / "images"
        data.mkdir()
        big = sorted(p for p in (SHARED / "data" / "train" / "debian").rglob("*.jpg"))[: args.images]
        for i, src in enumerate(big):
            shutil.copy(src, data / f"{i}{src.suffix}")
        rows = []
        for stage in range(3):
            cmd = [
                sys.executable,
                __file__,
                "--stage",
                str(stage),
                "--preset",
                args.preset,
                "--family",
                args.family,
                "--steps",
                str(args.steps),
                "--vae-approx",
                args.vae_approx,
                "--data",
                str(data),
                "--run-dir",
                str(work / "run"),
                "--cache-dir",
                str(work / "cache"),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(proc.stderr[-2000:])
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    import platform

    import torch

    out = {
        "benchmark": "train",
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(["bench/bench_train.py"] + sys.argv[1:]),
        "preset": args.preset,
        "family": args.family,
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "cpu_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "stages": rows,
    }
    dest = Path(args.output or ROOT / "bench" / "results" / f"train-{args.preset}-{args.device}.json")
    dest.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
