"""Training-data memory: peak RSS while reading batches from a latent cache of N and of 10 N tiles.

    python bench/bench_data.py            # writes bench/results/data-rss.json

Shards are written in the cache's own format (random contents: the reader's memory does not depend on
the values), then each size is read in a fresh subprocess by the trainer's path (LatentCrops + DataLoader
with 2 workers, the same number of batches for both sizes). Reported: peak RSS of the training process and
of its largest worker (ru_maxrss), and for contrast the peak RSS of loading every shard into memory (what
the pre-v4 `LatentPairs` did, per rank).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def write_cache(folder: Path, tiles: int, tile: int, channels: int) -> list[str]:
    """Random tiles in shards of SHARD_SIZE; returns the shard names."""
    import torch

    from lua_core.train.data import SHARD_SIZE, write_shard

    folder.mkdir(parents=True, exist_ok=True)
    names = []
    g = torch.Generator().manual_seed(0)
    for i, start in enumerate(range(0, tiles, SHARD_SIZE)):
        n = min(SHARD_SIZE, tiles - start)
        shard = {"hr_px": torch.randint(0, 256, (n, 3, tile, tile), dtype=torch.uint8, generator=g)}
        for key, f in (("z_hr", 8), ("z_lr2", 16), ("z_lr4", 32)):
            shard[key] = torch.randn(n, channels, tile // f, tile // f, generator=g)
        names.append(f"train-{i:05d}.safetensors")
        write_shard(shard, folder / names[-1])
    return names


def read(args: argparse.Namespace) -> dict:
    """Child process: iterate `batches` batches the way the trainer does; report peak RSS."""
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    from lua_core.train.data import LatentCrops

    names = sorted(p.name for p in Path(args.cache).glob("train-*.safetensors"))
    if args.mode == "load-all":
        from safetensors.torch import load_file

        loaded = [load_file(str(Path(args.cache) / n)) for n in names]
        tensors = {k: torch.cat([s[k] for s in loaded]) for k in loaded[0]}
        n = len(tensors["z_hr"])
    else:
        data = LatentCrops(Path(args.cache), names, args.crop)
        loader = DataLoader(
            data,
            batch_size=args.batch,
            sampler=RandomSampler(data, generator=torch.Generator().manual_seed(0)),
            num_workers=2,
            drop_last=True,
        )
        n = 0
        for i, batch in enumerate(loader):
            n += len(batch["z_hr"])
            if i + 1 == args.batches:
                break
        del loader
    kb = 1024 if sys.platform != "darwin" else 1
    return {
        "samples_read": n,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * kb / 2**20, 1),
        "peak_worker_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * kb / 2**20, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiles", type=int, default=400, help="N: tiles of the small cache (the large one has 10 N)")
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--channels", type=int, default=4)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--output", default=str(ROOT / "bench" / "results" / "data-rss.json"))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--cache", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="loader", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(read(args)))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for tiles in (args.tiles, 10 * args.tiles):
            cache = Path(tmp) / f"cache-{tiles}"
            write_cache(cache, tiles, args.tile, args.channels)
            disk = sum(f.stat().st_size for f in cache.iterdir())
            for mode in ("loader", "load-all"):
                cmd = [sys.executable, __file__, "--child", "--cache", str(cache), "--mode", mode]
                cmd += ["--crop", str(args.crop), "--batch", str(args.batch), "--batches", str(args.batches)]
                t0 = time.time()
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                row = {"tiles": tiles, "cache_mb": round(disk / 2**20, 1), "mode": mode, **json.loads(out)}
                row["seconds"] = round(time.time() - t0, 1)
                rows.append(row)
                print(row, file=sys.stderr)
    loader = {r["tiles"]: r for r in rows if r["mode"] == "loader"}
    small, large = loader[args.tiles], loader[10 * args.tiles]
    report = {
        "benchmark": "data-rss",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "command": "bench/bench_data.py " + " ".join(sys.argv[1:]),
        "settings": {k: getattr(args, k) for k in ("tiles", "tile", "crop", "channels", "batch", "batches")},
        "rows": rows,
        "loader_rss_growth_10x": round(large["peak_rss_mb"] / small["peak_rss_mb"], 3),
        "loader_worker_rss_growth_10x": round(large["peak_worker_rss_mb"] / small["peak_worker_rss_mb"], 3),
    }
    Path(args.output).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.output}: loader RSS x{report['loader_rss_growth_10x']} for 10x the data")


if __name__ == "__main__":
    main()
