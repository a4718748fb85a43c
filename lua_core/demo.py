"""`python -m lua_core demo`: upscale a bundled sample x2 and x4 with a bundled model, write PNGs, print timings.

Runs with no downloads. The sample image is encoded with the SDXL tiny autoencoder when one is found
(ComfyUI's models/vae_approx beside this pack, --vae-approx, $LUA_VAE_APPROX, or ../shared/vae_approx);
otherwise the bundled sample latent is used and the pictures are channel previews, not decodes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from .baselines import resize_latent
from .errors import CheckpointError
from .imaging import load_rgb, save_png, to_tensor
from .model import load_model
from .tiny_ae import TinyAutoencoder, load_tiny_autoencoder

ASSETS = Path(__file__).resolve().parent / "assets"
PACK_MODELS = Path(__file__).resolve().parent.parent / "models"
SAMPLE_IMAGE = ASSETS / "sample.png"
SAMPLE_LATENT = ASSETS / "sample_sdxl_latent.safetensors"
DEFAULT_MODEL = PACK_MODELS / "lua-sdxl-small.safetensors"


def latent_preview(z: torch.Tensor) -> torch.Tensor:
    """False-colour view of the first three latent channels (per-channel min/max), for when no decoder exists."""
    x = z[:, :3].float()
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(1e-6)


def side_by_side(images: list[torch.Tensor], labels: list[str], path: Path) -> None:
    """Equal-height panels, left to right, with labels (nearest-neighbour enlargement so pixels stay visible)."""
    from PIL import Image, ImageDraw

    height = max(img.shape[-2] for img in images)
    panels = []
    for img in images:
        arr = (img[0].permute(1, 2, 0).clamp(0, 1) * 255 + 0.5).byte().cpu().numpy()
        im = Image.fromarray(arr)
        panels.append(im.resize((im.width * height // im.height, height), Image.NEAREST))
    canvas = Image.new("RGB", (sum(p.width for p in panels), height + 20), "white")
    draw = ImageDraw.Draw(canvas)
    x = 0
    for panel, label in zip(panels, labels):
        canvas.paste(panel, (x, 20))
        draw.text((x + 4, 4), label, fill="black")
        x += panel.width
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m lua_core demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="LUA model (default: the bundled SDXL model)")
    p.add_argument("--image", default=str(SAMPLE_IMAGE), help="image to encode and upscale (default: bundled sample)")
    p.add_argument("--vae-approx", default="", help="folder holding taesdxl_encoder/decoder (tiny autoencoder)")
    p.add_argument("--output", default="lua_demo", help="folder for the results")
    p.add_argument("--device", default=None, help="cpu (default), cuda, mps")
    p.add_argument(
        "--no-autoencoder", action="store_true", help="use the bundled sample latent even if a tiny AE exists"
    )
    args = p.parse_args(argv)

    model = load_model(args.model, device=args.device)
    fam = model.family
    print(f"model: {Path(args.model).name} ({model.info.describe()})")
    ae: TinyAutoencoder | None = None
    if args.no_autoencoder:
        print("--no-autoencoder: using the bundled sample latent and channel previews")
    else:
        try:
            ae = load_tiny_autoencoder(fam, [args.vae_approx] if args.vae_approx else [], device=model.device)
            print(f"tiny autoencoder: {fam.tiny_ae} from {ae.source}")
        except CheckpointError as e:
            print(f"no tiny autoencoder found ({e}); using the bundled sample latent and channel previews")

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    if ae is not None:
        img = to_tensor(load_rgb(args.image))
        h, w = img.shape[-2:]
        img = img[..., : h // 8 * 8, : w // 8 * 8].to(model.device)
        with torch.no_grad():
            z = ae.encode(img)
        show = lambda t: ae.decode(t).clamp(0, 1)  # noqa: E731
        kind = "decoded"
    else:
        from safetensors.torch import load_file

        if fam is None or fam.name != "sdxl":
            raise CheckpointError("without a tiny autoencoder the demo needs an SDXL model (the sample latent is SDXL)")
        z = load_file(str(SAMPLE_LATENT))["latent_tensor"].to(model.device)
        show = latent_preview
        kind = "latent preview (first 3 channels)"
    print(f"input latent: {list(z.shape)}")

    panels, labels = [], []
    with torch.no_grad():
        low = show(z)
        save_png(low, out / "input.png")
        for scale in (2, 4):
            if scale > max(model.scales):
                continue
            upscale = _timed(lambda s=scale: _upscale(model, z, s))
            bicubic = resize_latent(z, (z.shape[-2] * scale, z.shape[-1] * scale), "bicubic")
            lua_img, bic_img = show(upscale["value"]), show(bicubic)
            save_png(lua_img, out / f"lua_x{scale}.png")
            save_png(bic_img, out / f"latent_bicubic_x{scale}.png")
            print(f"x{scale}: {list(z.shape)} -> {list(upscale['value'].shape)} in {upscale['seconds'] * 1000:.0f} ms")
            panels += [lua_img, bic_img]
            labels += [f"LUA x{scale}", f"latent bicubic x{scale}"]
    side_by_side([low] + panels, ["input"] + labels, out / "side_by_side.png")
    print(f"wrote {out}/input.png, lua_x2.png, lua_x4.png, latent_bicubic_x*.png and side_by_side.png ({kind})")
    return 0


def _upscale(model, z: torch.Tensor, scale: int) -> torch.Tensor:
    from .engine import upscale_latent

    return upscale_latent(model, z, scale)


def _timed(fn) -> dict:
    fn()  # warm-up: first call builds the size caches
    t0 = time.perf_counter()
    value = fn()
    if value.device.type == "cuda":
        torch.cuda.synchronize()
    return {"value": value, "seconds": time.perf_counter() - t0}
