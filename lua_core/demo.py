"""`python -m lua_core demo`: LUA x2 and x4 on a real photo beside pixel and latent bicubic, with PSNR and timings.

Needs no downloads: the bundled SDXL model (models/lua-sdxl-small.safetensors), the bundled SDXL tiny
autoencoder (taesdxl, MIT, in lua_core/assets) and a bundled 512x512 photo.

So that every panel has a ground truth, the photo is the *original* and the demo's *input* is the original
downscaled 4x (antialiased bicubic; 2x for a model without an x4 head), encoded to one latent. From it:
  LUA             upscale the latent with the model, then decode;
  pixel bicubic   decode, then bicubic-upscale the picture (the usual route without LUA);
  latent bicubic  bicubic-upscale the latent (ComfyUI's Upscale Latent), then decode.
Each result is 2x / 4x the input's pixel size and is scored (PSNR in dB: higher is closer to the original) against the original resized to
that size (for the largest scale: the original itself). Decodes use the tiny autoencoder, so the scores
describe that pipeline, not a full VAE. Files written: original.png, input.png, <method>_x<scale>.png,
side_by_side.png and demo.json (scores and timings); existing files of those names are replaced.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from .baselines import resize_latent
from .devices import resolve_device
from .errors import LUAError
from .fileio import atomic_write
from .imaging import bicubic_resize, load_rgb, to_tensor, to_uint8
from .metrics import psnr

ASSETS = Path(__file__).resolve().parent / "assets"
SAMPLE_IMAGE = ASSETS / "sample.png"
DEFAULT_MODEL_NAME = "lua-sdxl-small.safetensors"
DEFAULT_OUTPUT = "lua_demo"  # relative to the working folder; git-ignored in the repo
METHODS = ("lua", "pixel_bicubic", "latent_bicubic")
LABELS = {"lua": "LUA", "pixel_bicubic": "pixel bicubic", "latent_bicubic": "latent bicubic"}


def bundled_model(name: str = DEFAULT_MODEL_NAME) -> Path:
    """A bundled model: inside an installed wheel (lua_core/bundled_models), else the pack's models/ folder."""
    here = Path(__file__).resolve().parent
    for folder in (here / "bundled_models", here.parent / "models"):
        if (folder / name).is_file():
            return folder / name
    return here.parent / "models" / name  # missing: load_model names this path in its error


DEFAULT_MODEL = bundled_model()


def original_image(path: str | Path, max_side: int, multiple: int) -> torch.Tensor:
    """[1, 3, H, W] in [0, 1]: shrunk (antialiased) to at most max_side, then center-cropped to a multiple."""
    img = to_tensor(load_rgb(path))
    h, w = img.shape[-2:]
    if max(h, w) > max_side:
        f = max_side / max(h, w)
        img = bicubic_resize(img, (max(multiple, round(h * f)), max(multiple, round(w * f)))).clamp(0, 1)
        h, w = img.shape[-2:]
    ch, cw = h // multiple * multiple, w // multiple * multiple
    if ch == 0 or cw == 0:
        raise LUAError(f"{path} is {w}x{h} px; the demo needs at least {multiple}x{multiple}")
    y, x = (h - ch) // 2, (w - cw) // 2
    return img[..., y : y + ch, x : x + cw]


def write_png(img: torch.Tensor, path: Path) -> None:
    """Write an RGB tensor in [0, 1] as PNG, atomically."""
    atomic_write(path, lambda tmp: Image.fromarray(to_uint8(img)).save(tmp, format="PNG"))


def side_by_side(rows: list[list[tuple[torch.Tensor, str]]], path: Path) -> None:
    """One row per scale of labelled panels at their own pixel size (no resampling of the results)."""
    from PIL import ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=15)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        font = ImageFont.load_default()
    label_h = 22
    width = max(sum(img.shape[-1] for img, _ in row) for row in rows)
    height = sum(max(img.shape[-2] for img, _ in row) + label_h for row in rows)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    top = 0
    for row in rows:
        left = 0
        for img, label in row:
            canvas.paste(Image.fromarray(to_uint8(img)), (left, top + label_h))
            draw.text((left + 4, top + 3), label, fill="black", font=font)
            left += img.shape[-1]
        top += max(img.shape[-2] for img, _ in row) + label_h
    atomic_write(path, lambda tmp: canvas.save(tmp, format="PNG"))


def timed(fn: Callable[[], torch.Tensor], device: torch.device, warm_up: bool = True) -> tuple[torch.Tensor, float]:
    """(result, milliseconds) of a call; after a first untimed call (kernels and size caches) unless warm_up=False."""
    if warm_up:
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    value = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return value, (time.perf_counter() - t0) * 1000


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags and handler of `demo` (lua_core/cli.py `build_parser` names the subcommand)."""
    p.add_argument("--output", default=DEFAULT_OUTPUT, help=f"folder for the results (default: ./{DEFAULT_OUTPUT})")
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="LUA model (default: the bundled SDXL model)")
    p.add_argument("--image", default=str(SAMPLE_IMAGE), help="the original photo (default: the bundled 512x512 one)")
    p.add_argument("--max-side", type=int, default=1024, help="larger originals are shrunk to this many pixels first")
    p.add_argument(
        "--vae-approx", default="", help="folder holding the family's tiny autoencoder (default: the bundled taesdxl)"
    )
    p.add_argument("--device", default=None, help="cpu (default), cuda, mps")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo; prints a score/timing table and writes the pictures and demo.json into args.output."""
    from .engine import upscale_latent
    from .model import load_model
    from .tiny_ae import load_tiny_autoencoder

    device = resolve_device(args.device)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model = load_model(args.model, device=device)
    if model.family is None:
        raise LUAError(f"{args.model} records no latent family; record it with: convert MODEL --family NAME")
    ae = load_tiny_autoencoder(model.family, [args.vae_approx] if args.vae_approx else [], device=device)
    load_ms = (time.perf_counter() - t0) * 1000
    print(f"model: {Path(args.model).name} ({model.info.describe()})")
    print(f"tiny autoencoder: {model.family.tiny_ae} from {ae.source}")

    factor = max(model.scales)
    original = original_image(args.image, args.max_side, 8 * factor).to(device)
    h, w = original.shape[-2] // factor, original.shape[-1] // factor
    low = bicubic_resize(original, (h, w)).clamp(0, 1)
    with torch.no_grad():
        z, encode_ms = timed(lambda: ae.encode(low), device)
        decoded_low, decode_low_ms = timed(lambda: ae.decode(z).clamp(0, 1), device, warm_up=False)
    write_png(original, out / "original.png")
    write_png(low, out / "input.png")
    print(
        f"original {original.shape[-1]}x{original.shape[-2]} px -> input {w}x{h} px (bicubic /{factor}) -> "
        f"latent {list(z.shape)}; load {load_ms:.0f} ms, encode {encode_ms:.0f} ms"
    )

    report: dict = {
        "model": Path(args.model).name,
        "autoencoder": f"{model.family.tiny_ae} ({ae.source})",
        "device": str(device),
        "original": [original.shape[-1], original.shape[-2]],
        "input": [w, h],
        "latent": list(z.shape),
        "ms": {"load": round(load_ms, 1), "encode": round(encode_ms, 1)},
        "scales": {},
    }
    rows = []
    with torch.no_grad():
        for scale in model.scales:
            size = (h * scale, w * scale)
            zsize = (z.shape[-2] * scale, z.shape[-1] * scale)
            reference = original if size == tuple(original.shape[-2:]) else bicubic_resize(original, size).clamp(0, 1)
            z_lua, lua_ms = timed(lambda s=scale: upscale_latent(model, z, s), device)
            z_bic, latent_resize_ms = timed(lambda zs=zsize: resize_latent(z, zs, "bicubic"), device)
            pixel, pixel_resize_ms = timed(lambda sz=size: bicubic_resize(decoded_low, sz).clamp(0, 1), device)
            # decodes are the slow part on a CPU: timed once, cold (a warm second call is a little faster)
            lua_img, decode_ms = timed(lambda zl=z_lua: ae.decode(zl).clamp(0, 1), device, warm_up=False)
            bic_img, bic_decode_ms = timed(lambda zb=z_bic: ae.decode(zb).clamp(0, 1), device, warm_up=False)
            images = {"lua": lua_img, "pixel_bicubic": pixel, "latent_bicubic": bic_img}
            ms = {
                "lua": {"upscale": lua_ms, "decode": decode_ms},
                "pixel_bicubic": {"decode": decode_low_ms, "resize": pixel_resize_ms},
                "latent_bicubic": {"resize": latent_resize_ms, "decode": bic_decode_ms},
            }
            scores = {m: round(psnr(img, reference).item(), 3) for m, img in images.items()}
            print(
                f"x{scale}: {w}x{h} -> {size[1]}x{size[0]} px, latent {list(z.shape[-2:])} -> {list(z_lua.shape[-2:])}; "
                f"PSNR (dB, higher is better) against the original"
                f"{'' if reference is original else f' resized to {size[1]}x{size[0]}'}:"
            )
            row = [(_nearest(low, size), f"input, nearest x{scale}")]
            for m in METHODS:
                steps = " + ".join(f"{k} {v:.0f} ms" for k, v in ms[m].items())
                print(f"  {LABELS[m]:<15} {scores[m]:6.2f} dB   {steps}")
                write_png(images[m], out / f"{m}_x{scale}.png")
                row.append((images[m], f"{LABELS[m]} x{scale}: {scores[m]:.2f} dB"))
            row.append((reference, "original" if reference is original else f"original resized to {size[1]}x{size[0]}"))
            rows.append(row)
            report["scales"][f"x{scale}"] = {
                "size": [size[1], size[0]],
                "psnr_db": scores,
                "ms": {m: {k: round(v, 1) for k, v in d.items()} for m, d in ms.items()},
                "files": {m: f"{m}_x{scale}.png" for m in METHODS},
            }
    side_by_side(rows, out / "side_by_side.png")
    atomic_write(out / "demo.json", lambda tmp: Path(tmp).write_text(json.dumps(report, indent=1) + "\n"))
    print(f"wrote {out}/: original.png, input.png, {{lua,pixel_bicubic,latent_bicubic}}_x*.png, side_by_side.png, demo.json")
    return 0


def _nearest(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour enlargement (shows the input's pixels as they are)."""
    return torch.nn.functional.interpolate(img, size=size, mode="nearest")

