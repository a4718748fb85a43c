"""What a LUA x2 costs next to decoding the result: v2 (prior + residual), v1, and a full-size SDXL VAE decoder.

    python bench/cost.py                      # CPU; writes bench/results/cost-cpu.json
    python bench/cost.py --device cuda        # writes bench/results/cost-cuda.json (bench/gpu_kit.py calls measure())

One run, one machine: x2 of a 1x4x64² latent with the bundled v2 SDXL model (models/lua-sdxl-small.safetensors,
everything it does: decode, bicubic, encode, residual, and decoder matching where its x2 head has it), with the v1 network the SDXL model had before (same
shapes, random weights: the time does not depend on the values), and the SDXL VAE's decoder at the output
size (1x4x128² -> 1024² pixels), timed first and last (shares use the mean of the two; both are in the JSON). The decoder is diffusers' AutoencoderKL with SDXL's config and random weights
(`pip install -r requirements-bench.txt`); where diffusers is missing (the GPU machine), `bench/gpu_kit.py`'s
LDM decoder of the same layout stands in and the JSON says so. Median of timed runs after a warm-up.
Targets (issue 15): v2 <= 15 % of the full decode on a CPU, <= 5 % on a GPU. Run it on a quiet machine.
`bundled` times x2 and x4 (`--scales`) of every bundled v2 model at the same 1024² output against the same decode
(x4 from a latent half the x2 input's side; a head with a learned pixel upscaler runs it at the decoded input size): a prior with
back-projection steps (arch/reencode_residual.py) pays a tiny decode and encode at the output size per step, a
head with decoder matching a tiny decode and its backward pass at the output size per step; such files are
timed again with it off (`*_without_match`: Load LUA Model's decoder_matching "off").
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_engine import CONFIGS  # noqa: E402

from lua_core import LUAConfig, ModelInfo, SwinIRMultiHead, load_model, upscale_latent  # noqa: E402
from lua_core.model import LUAModel, without_decoder_match  # noqa: E402

TARGET_SHARE = {"cpu": 0.15, "cuda": 0.05}
V1_SDXL = LUAConfig(**CONFIGS["small"])  # the v1 lua-sdxl-small shapes (replaced by the v2 file on 2026-11-28)


def sdxl_decoder(device: torch.device, dtype: torch.dtype) -> tuple[torch.nn.Module, str]:
    """A full-size SDXL VAE decoder with random weights: diffusers' AutoencoderKL, else the kit's LDM decoder."""
    torch.manual_seed(0)
    try:
        from diffusers import AutoencoderKL
    except ImportError:
        from gpu_kit import FluxDecoder

        dec = FluxDecoder(z_channels=4)
        dec.scale_factor, dec.shift_factor = 0.13025, 0.0
        return dec.eval().to(device, dtype), "bench/gpu_kit.py FluxDecoder(z_channels=4): the LDM/SDXL decoder layout"
    vae = (
        AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            layers_per_block=2,
            sample_size=1024,
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            scaling_factor=0.13025,
        )
        .eval()
        .to(device, dtype)
    )

    class Decode(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vae = vae

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return self.vae.decode(z * self.vae.config.scaling_factor).sample

    return Decode(), "diffusers AutoencoderKL (SDXL config: 128/256/512/512, 2 layers per block), decoder only"


def median_seconds(fn, device: torch.device, repeats: int) -> float:
    """Median wall time of `fn` after one warm-up call."""

    def once() -> float:
        t0 = time.perf_counter()
        with torch.no_grad():
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    once()
    return statistics.median(once() for _ in range(repeats))


def measure(
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    side: int = 64,
    repeats: int = 3,
    scales: tuple[int, ...] = (2, 4),
) -> dict:
    """Seconds for v2 x2, v1 x2, every bundled file at `scales` and the full SDXL decode of the output, and the
    ratios, on one device."""
    z = torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(0)).to(device)
    v2 = load_model(ROOT / "models" / "lua-sdxl-small.safetensors", device=device, dtype=dtype)
    torch.manual_seed(0)
    v1 = LUAModel(SwinIRMultiHead(V1_SDXL).eval().to(device, dtype), ModelInfo(V1_SDXL, None), "v1")
    decoder, decoder_kind = sdxl_decoder(device, dtype)
    out = torch.randn(1, 4, 2 * side, 2 * side).to(device, dtype)

    def decode_seconds() -> float:
        return median_seconds(lambda: decoder(out), device, max(1, repeats - 1))

    # the decode is timed first and again last, and the shares use the mean of the two: on a shared machine the
    # speed drifts over the minutes between (a second run of the same code once timed it 60.8 s, then 80.7 s)
    decode_first = decode_seconds()
    times = {
        "v2_x2_s": median_seconds(lambda: upscale_latent(v2, z, 2, tile_size=10_000), device, repeats),
        "v1_x2_s": median_seconds(lambda: upscale_latent(v1, z, 2, tile_size=10_000), device, repeats),
    }
    bundled = []
    for path in sorted((ROOT / "models").glob("lua-*.safetensors")):
        model = load_model(path, device=device, dtype=dtype)
        if model.info.prior is None:
            continue
        row = {"file": path.name}
        for scale in scales:
            # the same output pixels for every family and scale: 16 * side px
            zs = 16 * side // (scale * model.family.spatial_factor)
            zf = torch.randn(1, model.family.channels, zs, zs).to(device)
            x = f"x{scale}"
            sec = median_seconds(lambda m=model, z=zf, s=scale: upscale_latent(m, z, s, tile_size=10_000), device, repeats)
            row |= {
                f"{x}_refine_steps": model.config.refine_for(scale)[0],
                f"{x}_match_steps": model.config.match_for(scale)[0],  # a decoder pass and its backward each
                f"{x}_pixel_upscaler": scale in model.config.upscaler_scales,
                f"{x}_s": round(sec, 4),
            }
            if row[f"{x}_match_steps"]:  # what Load LUA Model's decoder_matching "off" costs
                fast = without_decoder_match(model)
                sec = median_seconds(lambda m=fast, z=zf, s=scale: upscale_latent(m, z, s, tile_size=10_000), device, repeats)
                row[f"{x}_s_without_match"] = round(sec, 4)
        bundled.append(row)
    decode_last = decode_seconds()
    dec = (decode_first + decode_last) / 2
    for row in bundled:
        for scale in scales:
            row[f"x{scale}_share_of_decode"] = round(row[f"x{scale}_s"] / dec, 4)
            if f"x{scale}_s_without_match" in row:
                row[f"x{scale}_share_of_decode_without_match"] = round(row[f"x{scale}_s_without_match"] / dec, 4)
    times |= {"sdxl_vae_decode_s": dec, "sdxl_vae_decode_first_s": decode_first, "sdxl_vae_decode_last_s": decode_last}
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "dtype": str(dtype).replace("torch.", ""),
        "latent": [1, 4, side, side],
        "decoded_pixels": [8 * 2 * side, 8 * 2 * side],
        "v2_model": f"models/lua-sdxl-small.safetensors: {v2.info.title()}",
        "decoder": decoder_kind,
        **{k: round(v, 4) for k, v in times.items()},
        "v2_share_of_decode": round(times["v2_x2_s"] / dec, 4),
        "v1_share_of_decode": round(times["v1_x2_s"] / dec, 4),
        "target_v2_share": TARGET_SHARE.get(device.type, TARGET_SHARE["cpu"]),
        "target_met": times["v2_x2_s"] / dec <= TARGET_SHARE.get(device.type, TARGET_SHARE["cpu"]),
        "bundled": bundled,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--scales", default="2,4", help="scales every bundled file is timed at (same output size)")
    p.add_argument("--output", default="")
    args = p.parse_args()
    scales = tuple(int(s) for s in args.scales.split(","))
    device = torch.device(args.device)
    res = {
        "benchmark": "cost",
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "command": f"bench/cost.py --device {args.device} --repeats {args.repeats} --scales {args.scales}",
        **measure(device, repeats=args.repeats, scales=scales),
    }
    out = Path(args.output or ROOT / "bench" / "results" / f"cost-{device.type}.json")
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
