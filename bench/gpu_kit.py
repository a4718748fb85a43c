"""One-command GPU kit: engine vs reference, the paper's pipeline, large tiled outputs, optional training sprint.

    python bench/gpu_kit.py OUT_DIR               # a CUDA GPU; about 7 minutes on one H100/H200 (--budget-s)
    python bench/gpu_kit.py OUT_DIR --smoke       # CPU, tiny shapes, seconds: CI runs it so the kit never rots
    python bench/gpu_kit.py OUT_DIR --train sdxl,flux1  # first a v2 training sprint per family, side by side
    python bench/gpu_kit.py OUT_DIR --train-upscalers sd1:4,flux1:4  # or pixel upscalers for bundled heads

Files written to OUT_DIR (at most 8, as the device tool brings back), each naming the device and torch:
gpu-kit.json (every number), gpu-kit.txt (short summary with the issue's targets), gpu-kit-profile.txt
(torch profiler table of the headline case); with --train F,G also train-F.safetensors per family (EMA
weights, prior included; the log and quality gates go into gpu-kit.json); with --train-upscalers F:S also
train-F-xS.safetensors (the bundled file with head S's pixel upscaler trained). The training runs first, the
benchmark sections then fit into --budget-s. The JSON is rewritten after every section, so a run cut short
still returns what it measured.

Sections, most important first; each checks the time budget and records what it skipped:
- engine: `upscale_latent` (ours) vs `tests/reference_lua.py` (the plain official-style forward, under
  autocast for bf16/fp16), official config (LUAConfig() = released LUA-FLUX network, random weights), x2 and
  x4, latents 1x16x64², 128², 256², 4x16x128², fp32 / tf32 / bf16 / fp16: median of timed runs after a
  warm-up (torch.cuda.synchronize around each), peak memory above the weights, and the error of every
  output against the fp32 reference output;
- sdpa + profile: whether the fused attention kernels accept our masks, and the top kernels of one run;
- pipeline: LUA x2 + decode at 2048 px vs decode at 1024 px + pixel-space SwinIR x2 (our network with
  3 channels, same trunk), with a full-size FLUX-style VAE decoder (`FluxDecoder` below, random weights);
- tiling: x4 of a 1x16x256² latent with automatic tiling under an 8 GB budget vs untiled (fp32 and bf16);
- cost: x2 of 1x4x64² with the bundled v2 SDXL model and the v1 network vs a full-size SDXL VAE decode of
  the output (`bench/cost.py`; target: v2 <= 5 % of the decode on a GPU);
- graphs/compile: a captured CUDA graph of the network, and LUA_COMPILE=default / reduce-overhead
  (each in a time-limited subprocess, so a slow compile cannot eat the budget).

Why our own VAE decoder instead of diffusers: the device machine has no diffusers (its wheels and their
dependencies would have to travel with every call), CI's smoke run must exercise the same code, and the
timing only needs the architecture: `FluxDecoder` is the LDM/FLUX decoder layer for layer (conv_in 16->512;
mid ResNet, single-head attention, ResNet; four up levels of three ResNet blocks at 512/512/256/128
channels with nearest x2 + conv upsampling after the first three; GroupNorm(32, eps 1e-6) + SiLU; conv_out
128->3; FLUX's latent scale/shift), 49.5 M parameters like FLUX.1's decoder.

Device run, one call (a later session with a GPU: nothing to install; results land under files_at):
    run(command="PYTHONUNBUFFERED=1 python3 bench/gpu_kit.py $OUT --budget-s 420", timeout_s=560)
With the training sprint: see docs/gpu.md (the working tree and .gpu_data must fit the device's 64 MiB).
Then copy gpu-kit.json to bench/results/gpu-kit-<gpu>.json and run `python tools/update_readme_tables.py`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from reference_lua import reference_forward  # noqa: E402

from lua_core import LUAConfig, ModelInfo, SwinIRMultiHead, upscale_latent  # noqa: E402
from lua_core.engine import plan_tiles  # noqa: E402
from lua_core.model import LUAModel  # noqa: E402

KIT_VERSION = 1
DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TILE_BUDGET = 8 << 30
ENGINE_SHARE = 0.55  # of --budget-s: the engine table is cut (largest shapes last) to keep time for the rest
# the targets (benchmarks, never tests)
TARGET_X2_128_BF16_MS = 10.0
TARGET_SPEEDUP_VS_REFERENCE = 3.0
TARGET_LUA_SHARE_OF_DECODE = 0.05
TARGET_TILED_MAX_ABS = 1e-3

SMOKE_CONFIG = dict(
    embed_dim=24, depths=(2, 2), num_heads=(2, 2), window_size=8, img_size=16, head_num_feat=16
)  # same code paths as the official network, milliseconds on a CPU


# --------------------------------------------------------------------------- a FLUX-style VAE decoder


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(32, cin, eps=1e-6)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.norm2 = nn.GroupNorm(32, cout, eps=1e-6)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions (the decoder's mid block)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(32, c, eps=1e-6)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        q, k, v = (conv(y).flatten(2).transpose(1, 2).unsqueeze(1) for conv in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v).squeeze(1).transpose(1, 2).reshape(b, c, h, w)
        return x + self.proj_out(out)


class FluxDecoder(nn.Module):
    """The FLUX.1 autoencoder's decoder architecture (ch 128, mults 1,2,4,4, 2+1 ResNets per level, 16 latent ch)."""

    def __init__(self, z_channels: int = 16, ch: int = 128, ch_mult: tuple[int, ...] = (1, 2, 4, 4)) -> None:
        super().__init__()
        self.scale_factor, self.shift_factor = 0.3611, 0.1159
        block_in = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, 1, 1)
        self.mid = nn.Sequential(ResnetBlock(block_in, block_in), AttnBlock(block_in), ResnetBlock(block_in, block_in))
        levels = []
        for level in reversed(range(len(ch_mult))):
            block_out = ch * ch_mult[level]
            blocks: list[nn.Module] = []
            for _ in range(3):
                blocks.append(ResnetBlock(block_in, block_out))
                block_in = block_out
            if level != 0:
                blocks += [nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(block_in, block_in, 3, 1, 1)]
            levels.append(nn.Sequential(*blocks))
        self.up = nn.Sequential(*levels)
        self.norm_out = nn.GroupNorm(32, block_in, eps=1e-6)
        self.conv_out = nn.Conv2d(block_in, 3, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z / self.scale_factor + self.shift_factor
        h = self.up(self.mid(self.conv_in(z)))
        return self.conv_out(F.silu(self.norm_out(h)))


# --------------------------------------------------------------------------- timing helpers


class Clock:
    """The run's time budget: sections ask `left()` before each case."""

    def __init__(self, budget_s: float) -> None:
        self.start, self.budget = time.perf_counter(), budget_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.budget - self.elapsed()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, clock: Clock, min_repeats: int = 3, max_repeats: int = 20, target_s: float = 1.5):
    """Warm up once, then time `fn` until target_s or max_repeats (at least min_repeats); returns (stats, output)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    warm_s = time.perf_counter() - t0
    times: list[float] = []
    while len(times) < max_repeats:
        if len(times) >= min_repeats and (sum(times) >= target_s or clock.left() < 5 * warm_s):
            break
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    stats = {
        "median_ms": round(statistics.median(times) * 1000, 3),
        "min_ms": round(min(times) * 1000, 3),
        "repeats": len(times),
        "warmup_ms": round(warm_s * 1000, 3),
    }
    if device.type == "cuda":
        stats["peak_mem_mb"] = round((torch.cuda.max_memory_allocated(device) - base) / 2**20, 1)
    return stats, out


@contextlib.contextmanager
def precision(mode: str, device: torch.device):
    """TF32 matrix maths on for 'tf32' only (fp32 means true fp32), restored afterwards."""
    old = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
    torch.set_float32_matmul_precision("high" if mode == "tf32" else "highest")
    torch.backends.cudnn.allow_tf32 = mode == "tf32"
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old[0])
        torch.backends.cudnn.allow_tf32 = old[1]


def errors(y: torch.Tensor, ref: torch.Tensor) -> dict:
    y, ref = y.float(), ref.float()
    return {
        "rel_l2_vs_fp32_reference": float((y - ref).norm() / ref.norm().clamp_min(1e-30)),
        "max_abs_vs_fp32_reference": float((y - ref).abs().max()),
        "finite": bool(torch.isfinite(y).all()),
    }


def make_model(cfg: LUAConfig, device: torch.device, dtype: torch.dtype, seed: int = 0) -> LUAModel:
    torch.manual_seed(seed)
    net = SwinIRMultiHead(cfg).eval().to(device=device, dtype=dtype)
    return LUAModel(net, ModelInfo(cfg, None))


def oom_guard(fn):
    """Run fn; an out-of-memory error becomes a recorded result instead of ending the kit."""
    try:
        return fn()
    except torch.OutOfMemoryError as err:
        torch.cuda.empty_cache()
        return {"error": f"out of memory: {str(err).splitlines()[0]}"}


# --------------------------------------------------------------------------- sections


def engine_cases(smoke: bool) -> list[tuple[int, tuple[int, int, int, int]]]:
    """(scale, latent shape) in priority order: the headline case first."""
    c = 4 if smoke else 16
    if smoke:
        return [(2, (1, c, 16, 16)), (4, (2, c, 16, 16))]
    return [
        (2, (1, c, 128, 128)),
        (2, (1, c, 64, 64)),
        (4, (1, c, 128, 128)),
        (2, (4, c, 128, 128)),
        (4, (1, c, 64, 64)),
        (2, (1, c, 256, 256)),
        (4, (4, c, 128, 128)),
        (4, (1, c, 256, 256)),
    ]


def section_engine(cfg: LUAConfig, device: torch.device, clock: Clock, smoke: bool, cases: list, report) -> list:
    """Fill `cases` (the report's list, so a cut-short run keeps what it measured) with ours vs reference."""
    repeats = (1, 1, 0.0) if smoke else (3, 20, 1.5)  # (min, max, target seconds) of timed runs
    stop_at = clock.budget * ENGINE_SHARE  # leave the rest of the budget to the pipeline and tiling sections
    models = {name: make_model(cfg, device, DTYPES[name]) for name in ("fp32", "bf16", "fp16")}
    models["tf32"] = models["fp32"]
    sd = {k: v for k, v in models["fp32"].net.state_dict().items()}
    for scale, shape in engine_cases(smoke):
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(1)).to(device)
        ref_out = None
        for dtype in DTYPES:
            for impl in ("reference", "ours"):  # the fp32 reference output is what every output is compared to
                row = {"scale": scale, "shape": list(shape), "dtype": dtype, "impl": impl}
                cases.append(row)
                if clock.left() < 10 or clock.elapsed() > stop_at:
                    row["skipped"] = "time budget"
                    continue
                model = models[dtype]
                if impl == "ours":
                    fn = lambda m=model, x=x, s=scale: upscale_latent(m, x, s, tile_size=100_000)  # noqa: E731
                else:
                    auto = DTYPES[dtype] if dtype in ("bf16", "fp16") else None

                    def fn(auto=auto, x=x, s=scale):
                        ctx = torch.autocast(device.type, dtype=auto) if auto else contextlib.nullcontext()
                        with torch.no_grad(), ctx:
                            return reference_forward(sd, x, s, cfg.window_size, cfg.input_skip)

                with precision(dtype, device):
                    result = oom_guard(lambda fn=fn: timed(fn, device, clock, *repeats))
                if isinstance(result, dict):
                    row.update(result)
                    continue
                stats, out = result
                row.update(stats)
                if ref_out is None and impl == "reference" and dtype == "fp32":
                    ref_out = out
                if ref_out is not None:
                    row.update(errors(out, ref_out))
                del out
            report()
    for row in cases:
        ref = next(
            (
                r
                for r in cases
                if r["impl"] == "reference" and r["dtype"] == row["dtype"] and r["scale"] == row["scale"]
                and r["shape"] == row["shape"] and "median_ms" in r
            ),
            None,
        )
        if row["impl"] == "ours" and ref and "median_ms" in row:
            row["speedup_vs_reference"] = round(ref["median_ms"] / row["median_ms"], 2)
    return cases


def section_sdpa_and_profile(cfg: LUAConfig, device: torch.device, smoke: bool) -> tuple[dict, str]:
    """Do the fused attention kernels accept our inputs? And the top kernels of one headline run."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = make_model(cfg, device, dtype)
    side = 16 if smoke else 128
    x = torch.randn(1, cfg.in_chans, side, side, device=device, dtype=dtype)  # the network itself does not cast
    info: dict = {"dtype": str(dtype).replace("torch.", "")}
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        fused = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]
        if device.type == "cpu":
            fused = [SDPBackend.FLASH_ATTENTION]  # the CPU fused kernel
        with sdpa_kernel(fused), torch.no_grad():
            model.net(x, 2)
        info["fused_kernels_accept_our_attention"] = True
    except Exception as err:  # noqa: BLE001 - the answer is the recorded error
        info["fused_kernels_accept_our_attention"] = False
        info["fused_error"] = str(err).strip().splitlines()[0][:300]
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.no_grad():
        upscale_latent(model, x, 2)
        sync(device)
        with profile(activities=activities) as prof:
            upscale_latent(model, x, 2)
            sync(device)
    events = prof.key_averages()
    key = "device_time_total" if device.type == "cuda" else "cpu_time_total"
    key = key if hasattr(events[0], key) else "cuda_time_total"
    top = sorted(events, key=lambda e: getattr(e, key, 0), reverse=True)[:25]
    info["profile_sorted_by"] = key
    info["profile_top"] = [{"name": e.key[:120], "count": e.count, "total_us": round(getattr(e, key, 0), 1)} for e in top]
    if device.type == "cuda":
        launches = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx")
        info["cuda_kernel_launches"] = sum(e.count for e in events if e.key in launches)
    try:
        table = events.table(sort_by=key, row_limit=40)
    except (KeyError, AttributeError, ValueError):  # sort keys were renamed across torch versions
        table = events.table(sort_by="cpu_time_total", row_limit=40)
    return info, table


def section_pipeline(cfg: LUAConfig, device: torch.device, clock: Clock, smoke: bool) -> dict:
    """Latent path (LUA x2 + decode at 2x) vs pixel path (decode at 1x + pixel SwinIR x2), bf16 on GPUs."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    side = 4 if smoke else 128  # latent side at the small size: 1024 px with the FLUX VAE
    decoder = (FluxDecoder(ch=32) if smoke else FluxDecoder()).eval().to(device=device, dtype=dtype)
    lua = make_model(dataclasses.replace(cfg, in_chans=16, out_chans=16), device, dtype)
    pixel_cfg = dataclasses.replace(cfg, in_chans=3, out_chans=3, scales=(2,))
    pixel = make_model(pixel_cfg, device, dtype, seed=1)
    small = torch.randn(1, 16, side, side, device=device)
    big = torch.randn(1, 16, 2 * side, 2 * side, device=device)
    out: dict = {
        "dtype": str(dtype).replace("torch.", ""),
        "decoder_parameters_m": round(sum(p.numel() for p in decoder.parameters()) / 1e6, 2),
        "latent_small": [1, 16, side, side],
        "pixels_small": 8 * side,
        "pixels_big": 16 * side,
    }

    def decode(z):
        with torch.no_grad():
            return decoder(z.to(dtype))

    steps = {
        "lua_x2_ms": lambda: upscale_latent(lua, small, 2, tile_size=100_000),
        "decode_big_ms": lambda: decode(big),
        "decode_small_ms": lambda: decode(small),
    }
    for name, fn in steps.items():
        if clock.left() < 20:
            out[name] = None
            out.setdefault("skipped", []).append(name)
            continue
        result = oom_guard(lambda fn=fn: timed(fn, device, clock, *((1, 1, 0.0) if smoke else (3, 10, 2.0))))
        if isinstance(result, dict):
            out[name] = None
            out[name.replace("_ms", "_error")] = result["error"]
            continue
        stats, _ = result
        out[name] = stats["median_ms"]
        out[name.replace("_ms", "_peak_mem_mb")] = stats.get("peak_mem_mb")
    if out.get("decode_small_ms") is not None and clock.left() > 30:
        image = decode(small).float().clamp(-1, 1)  # the pixel path upscales the decoded image
        result = oom_guard(
            lambda: timed(
                lambda: upscale_latent(pixel, image, 2, tile_size=100_000), device, clock, *((1, 1, 0.0) if smoke else (2, 5, 3.0))
            )
        )
        if isinstance(result, dict):
            out["pixel_swinir_x2_ms"], out["pixel_swinir_x2_error"] = None, result["error"]
        else:
            out["pixel_swinir_x2_ms"] = result[0]["median_ms"]
            out["pixel_swinir_x2_peak_mem_mb"] = result[0].get("peak_mem_mb")
    else:
        out["pixel_swinir_x2_ms"] = None
    if out.get("lua_x2_ms") is not None and out.get("decode_big_ms") is not None:
        out["latent_path_ms"] = round(out["lua_x2_ms"] + out["decode_big_ms"], 3)
        out["lua_share_of_decode"] = round(out["lua_x2_ms"] / out["decode_big_ms"], 4)
    if out.get("pixel_swinir_x2_ms") is not None and out.get("decode_small_ms") is not None:
        out["pixel_path_ms"] = round(out["decode_small_ms"] + out["pixel_swinir_x2_ms"], 3)
        if "latent_path_ms" in out:
            out["latent_path_speedup"] = round(out["pixel_path_ms"] / out["latent_path_ms"], 2)
    return out


def section_tiling(cfg: LUAConfig, device: torch.device, clock: Clock, smoke: bool) -> list[dict]:
    """x4 of a big latent: automatic tiles under a memory budget vs one untiled run."""
    side = 48 if smoke else 256
    budget = (1 << 20) if smoke else TILE_BUDGET
    x = torch.randn(1, cfg.in_chans, side, side, generator=torch.Generator().manual_seed(4)).to(device)
    rows = []
    for name in ("fp32", "bf16"):
        row = {"dtype": name, "shape": list(x.shape), "scale": 4, "memory_budget_mb": budget >> 20}
        rows.append(row)
        if clock.left() < 30:
            row["skipped"] = "time budget"
            continue
        model = make_model(cfg, device, DTYPES[name])
        plan = plan_tiles(model, 1, side, side, 4, None, None, budget)
        row["plan"] = {"tile": plan.tile, "overlap": plan.overlap, "batch": plan.batch}
        forced = side // 2  # 2x2 tiles even where the budget would allow one: the seams are what is checked
        runs = {
            "tiled": dict(memory_budget=budget),
            f"tiles{forced}": dict(tile_size=forced),
            "untiled": dict(tile_size=100_000),
        }
        results = {}
        with precision("fp32", device):
            for label, kwargs in runs.items():
                results[label] = oom_guard(
                    lambda m=model, kw=kwargs: timed(lambda: upscale_latent(m, x, 4, **kw), device, clock, 1, 1)
                )
        for label, result in results.items():
            if isinstance(result, dict):
                row[f"{label}_error"] = result["error"]
            else:
                row[f"{label}_ms"] = result[0]["median_ms"]
                row[f"{label}_peak_mem_mb"] = result[0].get("peak_mem_mb")
        whole = results["untiled"]
        for label in ("tiled", f"tiles{forced}"):
            if isinstance(results[label], dict) or isinstance(whole, dict):
                continue
            a, b = results[label][1].float(), whole[1].float()
            prefix = "" if label == "tiled" else f"{label}_"
            row[f"{prefix}max_abs_diff"] = float((a - b).abs().max())
            row[f"{prefix}rel_l2_diff"] = float((a - b).norm() / b.norm())
            row["output_std"] = float(b.std())
        del results, whole
    return rows


def section_cost(device: torch.device, smoke: bool) -> dict:
    """v2 x2 (prior + residual) and v1 x2 against a full-size SDXL VAE decode of the output (bench/cost.py)."""
    from cost import measure

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    # smoke: 64 output px per file and scale (8 latent px took 107 s of the CI suite's time on 2 AVX2 cores: the
    # decoder-matching steps run the tiny decoder and its backward at the output size, 10-20 times)
    return measure(device, dtype, side=4 if smoke else 64, repeats=1 if smoke else 5)


def section_graph(cfg: LUAConfig, device: torch.device, clock: Clock) -> dict:
    """The network captured once as a CUDA graph and replayed (launch overhead gone): the eager ceiling."""
    if device.type != "cuda" or clock.left() < 30:
        return {"skipped": "needs CUDA" if device.type != "cuda" else "time budget"}
    model = make_model(cfg, device, torch.bfloat16)
    x = torch.randn(1, 16, 128, 128, device=device, dtype=torch.bfloat16)
    with torch.no_grad():
        eager = model.net(x, 2)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                model.net(x, 2)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = model.net(x, 2)
    stats, _ = timed(lambda: graph.replay(), device, clock, 5, 50, target_s=1.0)
    eager_stats, _ = timed(lambda: model.net(x, 2), device, clock, 5, 50, target_s=1.0)
    return {
        "case": "official x2 1x16x128² bf16, network only (no padding/validation)",
        "graph_replay_ms": stats["median_ms"],
        "eager_network_ms": eager_stats["median_ms"],
        "max_abs_graph_vs_eager": float((static_out.float() - eager.float()).abs().max()),
    }


def compile_case(mode: str, smoke: bool) -> dict:
    """Child process: LUA_COMPILE=mode through the engine, vs eager fp32 and eager bf16 (same process)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = LUAConfig(**SMOKE_CONFIG, in_chans=4, out_chans=4) if smoke else LUAConfig()
    side = 16 if smoke else 128
    x = torch.randn(1, cfg.in_chans, side, side, generator=torch.Generator().manual_seed(3)).to(device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    ref = upscale_latent(make_model(cfg, device, torch.float32), x, 2)
    model = make_model(cfg, device, dtype)
    eager = upscale_latent(model, x, 2)
    if smoke:  # dynamo only: checks the plumbing in seconds, without a C++/Triton toolchain
        from lua_core import engine

        engine.COMPILE_BACKEND = "eager"
    os.environ["LUA_COMPILE"] = mode
    t0 = time.perf_counter()
    first = upscale_latent(model, x, 2)
    sync(device)
    compile_s = time.perf_counter() - t0
    stats, out = timed(lambda: upscale_latent(model, x, 2), device, Clock(60), 5, 50, target_s=1.0)
    os.environ["LUA_COMPILE"] = "0"
    eager_stats, _ = timed(lambda: upscale_latent(model, x, 2), device, Clock(60), 5, 50, target_s=1.0)
    compiled_ok = model.net._lua_compiled.get(mode) is not None
    return {
        "mode": mode,
        "compiled": compiled_ok,
        "first_call_s": round(compile_s, 2),
        "compiled_ms": stats["median_ms"],
        "eager_ms": eager_stats["median_ms"],
        "rel_l2_compiled_vs_eager_same_dtype": float((out - eager).norm() / eager.norm()),
        "rel_l2_compiled_vs_fp32": float((first - ref).norm() / ref.norm()),
        "rel_l2_eager_vs_fp32": float((eager - ref).norm() / ref.norm()),
    }


def section_compile(clock: Clock, smoke: bool, modes: list[str]) -> list[dict]:
    rows = []
    for mode in modes:
        limit = min(clock.left() - 10, 60 if smoke else 200)
        if limit < 30 and not smoke:
            rows.append({"mode": mode, "skipped": "time budget"})
            continue
        cmd = [sys.executable, __file__, "--compile-case", mode] + (["--smoke"] if smoke else [])
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(limit, 5))
        except subprocess.TimeoutExpired:
            rows.append({"mode": mode, "error": f"did not finish within {limit:.0f} s"})
            continue
        if proc.returncode != 0:
            rows.append({"mode": mode, "error": (proc.stderr.strip().splitlines() or ["?"])[-1][:300]})
        else:
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return rows


# --------------------------------------------------------------------------- training sprint (thin)


SMOKE_TRAIN = [  # a few CPU steps of the same command: CI proves the sprint's wiring, not its quality
    *("--width", "8", "--blocks", "1", "--batch", "2", "--images-per-folder", "3", "--synthetic-tiles", "1"),
    *("--steps", "4", "--save-every", "2", "--tile", "128", "--crop", "64"),
]
GPU_TRAIN = [  # the sprint: a wider, deeper residual on many tiles of every training image, cosine over the budget
    *("--width", "80", "--blocks", "10", "--batch", "64", "--images-per-folder", "0", "--steps", "0"),  # FLUX.2: 15 MB file
    # 256 px tiles, each crop the whole tile with 8 output latent px of context: the x4 head sees 8x8 input
    # latents (192 px tiles and crop 96 gave it 5x5, mostly padding, and x4 never beat the prior on a CPU)
    *("--tile", "256", "--tiles-per-image", "8", "--crop", "128", "--context", "8"),
    # and the decoder gets the whole tile too, so the residual has no window edges to learn (train/residual.py
    # `pixel_loss`; the files of the first sprint learnt them, bench/results/window-decode-flux1-bundled.json)
    *("--decode-context", "8"),
    *("--ema", "0.995", "--save-every", "1000", "--threads", "3"),
]
SMOKE_UPSCALER = [  # seconds of the same command on the CPU
    # crop 32: a bundled file's own shape (depth 6) leaves out (6 + 2) x 2 output pixels per edge of the x2 loss,
    # which crop 16 (32 output pixels) left empty, so its smoke trained nothing (NaN loss)
    *("--width", "8", "--depth", "2", "--batch", "2", "--tile", "48", "--crop", "32", "--tiles-per-image", "1"),
    *("--synthetic-tiles", "2", "--save-every", "2"),
]
GPU_UPSCALER = [  # a wider, deeper pixel upscaler than the CPU's (48 x 6) on more tiles; .gpu_data images are 384 px
    *("--width", "64", "--depth", "8", "--batch", "64", "--tile", "80", "--crop", "48", "--tiles-per-image", "4"),
    *("--synthetic-tiles", "512", "--save-every", "2000", "--threads", "3"),
]
MAX_TRAIN_FILES = 5  # 3 kit files + one model per run: the device tool brings back 8 files


def shape_of_file(bundled: Path, flags: list[str]) -> list[str]:
    """`flags` without --width/--depth where the file already has pixel upscalers (a file's share one shape)."""
    from lua_core import load_model

    if not load_model(bundled).config.upscaler_scales:
        return flags
    pairs = [flags[i : i + 2] for i in range(0, len(flags), 2)]
    return [x for pair in pairs if pair[0] not in ("--width", "--depth") for x in pair]


def section_train(families: list[str], args, out_dir: Path, upscalers: list[str] = ()) -> dict:
    """v2 models (`train-v2`, one process per family) and pixel upscalers (`train-upscaler`, one process per
    FAMILY:SCALE), all at once, on <train-data>/train + photos for --train-minutes each, then, where <train-data>
    has holdout/ and vae_approx/, bench/quality.py on the hold-out for the v2 models.

    <train-data> is what tools/prepare_gpu_data.py writes. Each residual trains over the prior of the bundled
    file (`--prior-from models/lua-F-small.safetensors`: the shipped autoencoder and refinement, no autoencoder
    folder needed), else over <train-data>/vae_approx; each upscaler goes into the bundled file's prior, every
    other weight kept. Out: train-F.safetensors per family (EMA weights, prior included) and train-F-xS.safetensors
    per upscaler (tools/select_v2_heads.py --heads xS chooses its residual's gain at home); the log (first, every
    100th and last step) and the quality gates go into gpu-kit.json.
    """
    if len(families) + len(upscalers) > MAX_TRAIN_FILES:
        raise ValueError(
            f"--train and --train-upscalers take at most {MAX_TRAIN_FILES} runs (8 files back), got "
            f"{[*families, *upscalers]}"
        )
    data = Path(args.train_data)
    vae = Path(args.train_vae_approx) if args.train_vae_approx else data / "vae_approx"
    folders = [str(data / d) for d in ("train", "photos") if (data / d).is_dir()] or [str(data / "train")]
    deadline = args.train_minutes * 60 + 150  # the trainer stops itself at --minutes (+ tile cache); hard stop
    runs_root = Path(args.train_run_dir or tempfile.mkdtemp(prefix="lua-train-"))
    runs = {}
    for family in families:
        run_dir = runs_root / family
        bundled = ROOT / "models" / f"lua-{family}-small.safetensors"
        cmd = [sys.executable, "-m", "lua_core", "train-v2", "--family", family, "--data", *folders]
        cmd += ["--prior-from", str(bundled)] if bundled.is_file() else ["--vae-approx", str(vae)]
        cmd += ["--run-dir", str(run_dir), "--val-fraction", "0"]  # the hold-out is already out
        cmd += ["--minutes", str(args.train_minutes), "--export", str(run_dir / f"lua-{family}.safetensors")]
        cmd += SMOKE_TRAIN if args.smoke else GPU_TRAIN
        runs[family] = {"family": family, "command": " ".join(cmd[1:]), "run_dir": str(run_dir), "cmd": cmd}
    for spec in upscalers:
        family, scale = spec.split(":")
        name = f"{family}-x{scale}"
        run_dir = runs_root / name
        bundled = ROOT / "models" / f"lua-{family}-small.safetensors"
        cmd = [sys.executable, "-m", "lua_core", "train-upscaler", "--model", str(bundled)]
        cmd += ["--scale", scale, "--data", *folders, "--run-dir", str(run_dir), "--val-fraction", "0"]
        cmd += ["--minutes", "0.05" if args.smoke else str(args.train_minutes)]
        cmd += ["--export", str(run_dir / f"lua-{name}.safetensors")]
        cmd += shape_of_file(bundled, SMOKE_UPSCALER if args.smoke else GPU_UPSCALER)
        runs[name] = {"family": family, "command": " ".join(cmd[1:]), "run_dir": str(run_dir), "cmd": cmd}
    t0 = time.perf_counter()
    for name, result in zip(runs, _run_all([r.pop("cmd") for r in runs.values()], deadline)):
        runs[name]["train"] = result
    wall = round(time.perf_counter() - t0, 1)
    for name, info in runs.items():
        info["train_s"] = wall  # side by side: the wall time of all of them
        run_dir = Path(info["run_dir"])
        exported = run_dir / f"lua-{name}.safetensors"
        if not exported.is_file():
            info["error"] = f"no exported model at {exported}"
            continue
        shutil.copyfile(exported, out_dir / f"train-{name}.safetensors")
        if (run_dir / "log.jsonl").is_file():
            log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
            info["steps"] = len(log)
            info["log"] = [r for r in log if r["step"] % 100 == 0 or r is log[0] or r is log[-1]]
        if name != info["family"]:
            info["eval"] = {"skipped": "a pixel upscaler: tools/select_v2_heads.py and bench/quality.py at home"}
            continue
        family = name
        if not (data / "holdout").is_dir() or not vae.is_dir():
            info["eval"] = {"skipped": "no holdout/ or vae_approx/ in the training data: evaluate at home"}
            continue
        quality = run_dir / "quality.json"
        eval_cmd = [sys.executable, str(ROOT / "bench" / "quality.py"), "--families", family, "--models", str(run_dir)]
        eval_cmd += ["--pattern", "lua-{family}.safetensors", "--data", str(data / "holdout"), "--val-fraction", "1.0"]
        eval_cmd += ["--vae-approx", str(vae), "--output", str(quality), "--docs", str(run_dir / "docs")]
        info["eval"] = _run(eval_cmd, 600)
        if quality.is_file():
            report = json.loads(quality.read_text())
            info["quality"] = {
                "n_images": report["n_images"],
                "scales": {
                    s: {"psnr": {k: v["psnr"] for k, v in r["mean"].items()}, "gates": r["gates"]}
                    for s, r in report["families"][family]["scales"].items()
                },
            }
    return runs


def _run_all(cmds: list[list[str]], timeout: float) -> list[dict]:
    """Run commands side by side (one GPU, one process each), each killed at `timeout`; their results in order."""
    logs = [tempfile.TemporaryFile("w+") for _ in cmds]
    procs = [subprocess.Popen(c, stdout=f, stderr=subprocess.STDOUT, text=True, cwd=ROOT) for c, f in zip(cmds, logs)]
    t0, results = time.perf_counter(), []
    for proc, log in zip(procs, logs):
        try:
            rc = proc.wait(timeout=max(1.0, timeout - (time.perf_counter() - t0)))
            error = None
        except subprocess.TimeoutExpired:
            proc.kill()
            rc, error = None, f"killed after {timeout:.0f} s"
        log.seek(0)
        tail = log.read().strip().splitlines()[-15:]
        results.append({"rc": rc, "output_tail": tail, **({"error": error} if error else {})})
    return results


def _run(cmd: list[str], timeout: float) -> dict:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"rc": None, "error": f"killed after {timeout:.0f} s"}
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
    return {"rc": proc.returncode, "output_tail": tail}


# --------------------------------------------------------------------------- report


def header(device: torch.device, smoke: bool, budget: float) -> dict:
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    head = {
        "kit": "lua-gpu-kit",
        "kit_version": KIT_VERSION,
        "device": gpu or f"cpu ({cpu})",
        "gpu": gpu,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:]),
        "smoke": smoke,
        "budget_s": budget,
        "config": "smoke (tiny)" if smoke else "official-flux (LUAConfig() defaults, random weights)",
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "notes": [],
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        head["gpu_memory_gb"] = round(props.total_memory / 2**30, 1)
        head["gpu_capability"] = f"{props.major}.{props.minor}"
    return head


def section_rows(res: dict, name: str) -> list[dict]:
    """A table section's rows; none where the section broke (it then holds {"error": ...})."""
    rows = res.get(name)
    return rows if isinstance(rows, list) else []


def targets(res: dict) -> dict:
    """The issue's targets, judged from this run (None when the run did not measure it)."""
    out: dict = {}
    head = next(
        (
            r
            for r in section_rows(res, "engine")
            if r["impl"] == "ours" and r["dtype"] == "bf16" and r["scale"] == 2 and r["shape"][0] == 1
            and r["shape"][2] == (16 if res["smoke"] else 128) and "median_ms" in r
        ),
        None,
    )
    out["x2_128_bf16_ms"] = {
        "value": head["median_ms"] if head else None,
        "target": f"<= {TARGET_X2_128_BF16_MS} ms",
        "met": head["median_ms"] <= TARGET_X2_128_BF16_MS if head else None,
    }
    speed = head.get("speedup_vs_reference") if head else None
    out["x2_128_bf16_speedup_vs_reference"] = {
        "value": speed,
        "target": f">= {TARGET_SPEEDUP_VS_REFERENCE}x",
        "met": speed >= TARGET_SPEEDUP_VS_REFERENCE if speed else None,
    }
    v2_share = res.get("cost", {}).get("v2_share_of_decode")
    out["v2_share_of_sdxl_decode"] = {
        "value": v2_share,
        "target": f"<= {TARGET_LUA_SHARE_OF_DECODE:.0%}",
        "met": v2_share <= TARGET_LUA_SHARE_OF_DECODE if v2_share is not None else None,
    }
    share = res.get("pipeline", {}).get("lua_share_of_decode")
    out["lua_share_of_decode_at_output_size"] = {
        "value": share,
        "target": f"<= {TARGET_LUA_SHARE_OF_DECODE:.0%}",
        "met": share <= TARGET_LUA_SHARE_OF_DECODE if share is not None else None,
    }
    fp32 = next((r for r in section_rows(res, "tiling") if r["dtype"] == "fp32" and "max_abs_diff" in r), None)
    ok = None
    if fp32:
        ok = fp32["max_abs_diff"] <= TARGET_TILED_MAX_ABS and (fp32.get("tiled_peak_mem_mb") or 0) <= TILE_BUDGET >> 20
    out["tiled_x4_256_fp32_max_abs_diff_under_8gb"] = {
        "value": fp32["max_abs_diff"] if fp32 else None,
        "peak_mem_mb": fp32.get("tiled_peak_mem_mb") if fp32 else None,
        "target": f"<= {TARGET_TILED_MAX_ABS} and peak <= 8 GB",
        "met": ok,
    }
    return out


def summary_text(res: dict) -> str:
    lines = [
        f"LUA GPU kit v{res['kit_version']} on {res['device']}, torch {res['torch']} (CUDA {res['cuda']}), "
        f"{res['date']}, {res['config']}{', SMOKE' if res['smoke'] else ''}; {res.get('elapsed_s', '?')} s",
        "",
        "Targets:",
    ]
    for name, t in res.get("targets", {}).items():
        verdict = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        lines.append(f"  {name}: {t['value']} (target {t['target']}): {verdict}")
    lines += ["", "Engine (ours vs reference; ms median, peak MB, speed-up, rel L2 vs fp32 reference):"]
    for r in section_rows(res, "engine"):
        what = f"  x{r['scale']} {'x'.join(map(str, r['shape']))} {r['dtype']:4} {r['impl']:9}"
        if "median_ms" in r:
            lines.append(
                f"{what} {r['median_ms']:9.2f} ms {r.get('peak_mem_mb', 0) or 0:8.0f} MB "
                f"{r.get('speedup_vs_reference', ''):>6} {r.get('rel_l2_vs_fp32_reference', float('nan')):.1e}"
            )
        else:
            lines.append(f"{what} {r.get('skipped') or r.get('error')}")
    p = res.get("pipeline")
    if p:
        lines += [
            "",
            f"Pipeline ({p['dtype']}, decoder {p['decoder_parameters_m']} M params): latent path "
            f"{p.get('latent_path_ms')} ms (LUA {p.get('lua_x2_ms')} + decode {p['pixels_big']} px "
            f"{p.get('decode_big_ms')}), pixel path {p.get('pixel_path_ms')} ms (decode {p['pixels_small']} px "
            f"{p.get('decode_small_ms')} + SwinIR x2 {p.get('pixel_swinir_x2_ms')}); speed-up "
            f"{p.get('latent_path_speedup')}",
        ]
    for r in section_rows(res, "tiling"):
        lines.append(
            f"Tiling x4 {r['shape']} {r['dtype']}: plan {r.get('plan')}, tiled {r.get('tiled_ms')} ms / "
            f"{r.get('tiled_peak_mem_mb')} MB, untiled {r.get('untiled_ms')} ms / {r.get('untiled_peak_mem_mb')} MB, "
            f"max abs diff {r.get('max_abs_diff')}; forced 2x2 tiles: "
            f"{ {k: v for k, v in r.items() if k.startswith('tiles')} } {r.get('skipped', '')}"
        )
    if res.get("graph"):
        lines.append(f"CUDA graph: {res['graph']}")
    for r in res.get("compile", []):
        lines.append(f"compile: {r}")
    s = res.get("sdpa")
    if s:
        lines.append(f"SDPA fused kernels accept our attention: {s.get('fused_kernels_accept_our_attention')} "
                     f"{s.get('fused_error', '')}; kernel launches per x2 call: {s.get('cuda_kernel_launches')}")
    for family, t in (res.get("train") or {}).items():
        last = (t.get("log") or [{}])[-1]
        lines.append(
            f"train {family}: rc {t.get('train', {}).get('rc')}, {t.get('steps')} steps, last loss {last.get('loss')}, "
            f"{last.get('minutes')} min; {t.get('error', '')} {json.dumps(t.get('quality', t.get('eval')))[:600]}"
        )
    for note in res.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", nargs="?", help="folder for gpu-kit.json, gpu-kit.txt, gpu-kit-profile.txt (+ train files)")
    p.add_argument("--smoke", action="store_true", help="CPU, tiny shapes, seconds (CI)")
    p.add_argument("--device", default=None, help="default: cuda if available (cpu with --smoke)")
    p.add_argument("--budget-s", type=float, default=420.0, help="time budget of the benchmark sections")
    p.add_argument("--compile-modes", default="default,reduce-overhead", help="LUA_COMPILE modes to time ('' = none)")
    p.add_argument(
        "--train", metavar="FAMILIES", default="", help="also train these families first (comma-separated, side by side)"
    )
    p.add_argument(
        "--train-upscalers",
        metavar="FAMILY:SCALE",
        default="",
        help="also train these heads' pixel upscalers into the bundled files first (comma-separated, e.g. sd1:4)",
    )
    p.add_argument("--train-data", default=str(ROOT / ".gpu_data"), help="folder written by tools/prepare_gpu_data.py")
    p.add_argument("--train-vae-approx", default="", help="tiny autoencoder folder (default: <train-data>/vae_approx)")
    p.add_argument("--train-minutes", type=float, default=4.0)
    p.add_argument("--train-run-dir", default="", help="default: a temporary folder (keeps OUT_DIR to 8 files)")
    p.add_argument("--compile-case", help=argparse.SUPPRESS)  # internal: one compile measurement, prints JSON
    args = p.parse_args()
    if args.compile_case:
        print(json.dumps(compile_case(args.compile_case, args.smoke)))
        return
    if not args.out_dir:
        p.error("OUT_DIR is required")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.smoke else "cpu"))
    if device.type != "cuda" and not args.smoke:
        p.error("no CUDA device: the full kit needs a GPU; use --smoke on a CPU")
    started = time.perf_counter()
    res = header(device, args.smoke, args.budget_s)
    if args.smoke:
        res["notes"].append("smoke run: tiny network and shapes on the CPU; checks the kit works, measures nothing")
    cfg = LUAConfig(**SMOKE_CONFIG, in_chans=4, out_chans=4) if args.smoke else LUAConfig()
    json_path, text_path = out_dir / "gpu-kit.json", out_dir / "gpu-kit.txt"

    def report() -> None:
        res["elapsed_s"] = round(time.perf_counter() - started, 1)
        res["targets"] = targets(res)
        json_path.write_text(json.dumps(res, indent=1) + "\n")
        text_path.write_text(summary_text(res))

    sections = [
        ("engine", lambda: section_engine(cfg, device, clock, args.smoke, res["engine"], report)),
        ("cost", lambda: section_cost(device, args.smoke)),
        ("pipeline", lambda: section_pipeline(cfg, device, clock, args.smoke)),
        ("tiling", lambda: section_tiling(cfg, device, clock, args.smoke)),
        ("graph", lambda: section_graph(cfg, device, clock)),
    ]
    if args.train or args.train_upscalers:  # first: the models are what this device time is most for
        train, upscalers = (a.split(",") if a else [] for a in (args.train, args.train_upscalers))
        res["train"] = section_train(train, args, out_dir, upscalers)
        res["section_s"] = {"train": round(time.perf_counter() - started, 1)}
        report()
        print(f"[{time.perf_counter() - started:6.1f} s] train done", flush=True)
    clock = Clock(args.budget_s)  # the benchmark sections' budget starts after the training
    res["engine"] = []
    for name, fn in sections:
        t0 = time.perf_counter()
        try:
            res[name] = fn()
        except Exception as err:  # noqa: BLE001 - one broken section must not lose the others' numbers
            res[name] = {"error": f"{type(err).__name__}: {str(err).strip()[:500]}"}
        res.setdefault("section_s", {})[name] = round(time.perf_counter() - t0, 1)
        report()
        print(f"[{clock.elapsed():6.1f} s] {name} done", flush=True)
    try:
        res["sdpa"], table = section_sdpa_and_profile(cfg, device, args.smoke)
    except Exception as err:  # noqa: BLE001
        res["sdpa"], table = {"error": f"{type(err).__name__}: {err}"}, ""
    (out_dir / "gpu-kit-profile.txt").write_text(
        f"torch profiler, x2 of 1x{cfg.in_chans}x{16 if args.smoke else 128}², {res['device']}, torch {res['torch']}\n\n{table}\n"
    )
    report()
    modes = [m for m in args.compile_modes.split(",") if m]
    res["compile"] = section_compile(clock, args.smoke, modes if not args.smoke else modes[:1])
    report()
    print(text_path.read_text())


if __name__ == "__main__":
    main()
