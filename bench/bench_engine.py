"""Latency and peak memory of upscale_latent vs latent size, dtype and config; ours vs the reference forward.

    python bench/bench_engine.py                 # CPU, writes bench/results/engine-<device>.json
    python bench/bench_engine.py --device cuda   # same on a GPU (bf16 and fp32)
    python bench/bench_engine.py --quick         # fewer sizes, for a smoke run

Each case runs in a fresh subprocess; CPU peak memory is the peak RSS above the RSS right after the
model is loaded (Linux clear_refs reset); on CUDA peak memory is torch.cuda.max_memory_allocated. Weights are random (speed and
memory do not depend on their values). Timings are the median of --repeats runs after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

CONFIGS = {
    "official-flux": {},  # LUAConfig() defaults = the released LUA-FLUX network
    "small": dict(  # the v1 bundled models' network (models/lua-*-small.safetensors until 2026-11-28)
        input_skip="bicubic",
        in_chans=4,
        out_chans=4,
        embed_dim=64,
        depths=(4, 4, 4, 4),
        num_heads=(2, 2, 2, 2),
        window_size=8,
        img_size=16,
        head_num_feat=64,
    ),
}


def run_case(config: str, size: int, dtype: str, impl: str, device: str, repeats: int, scale: int) -> dict:
    """Time one case in this process (called in a child)."""
    import torch

    from lua_core import LUAConfig, ModelInfo, SwinIRMultiHead, upscale_latent
    from lua_core.model import DTYPES, LUAModel

    torch.manual_seed(0)
    cfg = LUAConfig(**CONFIGS[config])
    net = SwinIRMultiHead(cfg).eval().to(device=device, dtype=DTYPES[dtype])
    model = LUAModel(net, ModelInfo(cfg, None))
    x = torch.randn(1, cfg.in_chans, size, size, device=device)
    if impl == "reference":
        from reference_lua import reference_forward

        sd = {k: v.to(device) for k, v in net.state_dict().items()}

        def fn():
            with torch.no_grad():
                return reference_forward(sd, x, scale, cfg.window_size, cfg.input_skip)
    else:

        def fn():
            return upscale_latent(model, x, scale, tile_size=100_000)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    base_rss = _reset_peak_rss()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    result = {"config": config, "size": size, "scale": scale, "dtype": dtype, "impl": impl, "device": device}
    from lua_core.engine import estimate_memory

    weights = sum(p.numel() * p.element_size() for p in net.parameters())
    result["auto_tiling_estimate_mb"] = round((estimate_memory(model, x.shape, scale) - weights) / 2**20, 1)
    result["median_ms"] = round(statistics.median(times) * 1000, 3)
    result["min_ms"] = round(min(times) * 1000, 3)
    if device.startswith("cuda"):
        result["peak_mem_mb"] = round((torch.cuda.max_memory_allocated() - base_cuda) / 2**20, 1)
    else:
        result["peak_mem_mb"] = round((_peak_rss() - base_rss) / 2**20, 1)
    return result


def _without_note(argv: list[str]) -> list[str]:
    """The command line minus --note and its text (the note has its own field)."""
    out, skip = [], False
    for arg in argv:
        if skip or arg.startswith("--note="):
            skip = False
            continue
        skip = arg == "--note"
        if not skip:
            out.append(arg)
    return out


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _reset_peak_rss() -> int:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux: write 5 to clear_refs); returns current bytes."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_kb("VmRSS") * 1024
    except OSError:  # not Linux: fall back to the lifetime peak
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _peak_rss() -> int:
    try:
        return _status_kb("VmHWM") * 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cases(device: str, quick: bool) -> list[tuple]:
    sizes = [16, 32, 64] if quick else [16, 32, 64, 128, 256]
    out = []
    dtypes = ["fp32", "bf16"]
    for config in CONFIGS:
        for size in sizes:
            for dtype in dtypes:
                if device == "cpu" and config == "official-flux" and size == 256 and dtype == "fp32":
                    continue  # ~1 min a run on 2 cores; the bf16 row covers this size
                out.append((config, size, dtype, "ours"))
            ref_max = 64 if (device == "cpu" and config == "official-flux") else 128
            if size <= ref_max:
                out.append((config, size, "fp32", "reference"))
    return out


def machine(device: str) -> dict:
    import torch

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],  # other jobs on the machine slow every row
    }
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
        info["cpu"] = model
    except (OSError, StopIteration):
        info["cpu"] = platform.processor()
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--output", default=None)
    p.add_argument("--note", default="", help="stored in the JSON, e.g. what else was running")
    p.add_argument("--case", nargs=6, help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = p.parse_args()
    if args.case:
        config, size, dtype, impl, repeats, scale = args.case
        print(json.dumps(run_case(config, int(size), dtype, impl, args.device, int(repeats), int(scale))))
        return
    results = []
    for config, size, dtype, impl in cases(args.device, args.quick):
        repeats = 1 if size >= 256 else args.repeats
        cmd = [
            sys.executable,
            __file__,
            "--device",
            args.device,
            "--case",
            config,
            str(size),
            dtype,
            impl,
            str(repeats),
            "2",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            row = {
                "config": config,
                "size": size,
                "dtype": dtype,
                "impl": impl,
                "error": proc.stderr.strip().splitlines()[-1],
            }
        else:
            row = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(row)
        print(json.dumps(row), flush=True)
    summary = {}
    for config in CONFIGS:
        for size in (64, 128):
            ours = next(
                (
                    r
                    for r in results
                    if r.get("config") == config
                    and r["size"] == size
                    and r["impl"] == "ours"
                    and r["dtype"] == "fp32"
                    and "median_ms" in r
                ),
                None,
            )
            ref = next(
                (
                    r
                    for r in results
                    if r.get("config") == config and r["size"] == size and r["impl"] == "reference" and "median_ms" in r
                ),
                None,
            )
            if ours and ref:
                summary[f"{config}_{size}_fp32_speedup_vs_reference"] = round(ref["median_ms"] / ours["median_ms"], 2)
            best = min(
                (
                    r
                    for r in results
                    if r.get("config") == config and r["size"] == size and r["impl"] == "ours" and "median_ms" in r
                ),
                key=lambda r: r["median_ms"],
                default=None,
            )
            if best:
                summary[f"{config}_{size}_x2_best_ms"] = {"ms": best["median_ms"], "dtype": best["dtype"]}
    out = {
        "benchmark": "engine",
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join([Path(sys.argv[0]).as_posix()] + _without_note(sys.argv[1:])),
        "machine": machine(args.device),
        "note": args.note,
        "scale": 2,
        "batch": 1,
        "summary": summary,
        "results": results,
    }
    dest = Path(args.output or ROOT / "bench" / "results" / f"engine-{args.device.split(':')[0]}.json")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
