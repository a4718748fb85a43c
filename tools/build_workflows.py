"""Write workflows/*.json (ComfyUI UI format 0.4), their API-format twins in workflows/api/, and thumbnails.

The graphs below are the single source; run `python tools/build_workflows.py` after editing them.
File names are the titles the template browser shows. tests/test_workflows.py checks the written files
against the node definitions and that no two nodes overlap.

    python tools/build_workflows.py                               # JSON files only
    python tools/build_workflows.py --demo-output OUT.png         # + the demo's thumbnail from a real run
    python tools/build_workflows.py --thumbnails                  # + the other thumbnails (bundled models)
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# node type -> (socket inputs [(name, type)], widget names in UI order, outputs [(name, type)])
# UI-only widgets (not sent to the API) are prefixed with "~".
SCHEMA: dict[str, tuple[list, list, list]] = {
    "CheckpointLoaderSimple": ([], ["ckpt_name"], [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")]),
    "UNETLoader": ([], ["unet_name", "weight_dtype"], [("MODEL", "MODEL")]),
    "DualCLIPLoader": ([], ["clip_name1", "clip_name2", "type", "device"], [("CLIP", "CLIP")]),
    "VAELoader": ([], ["vae_name"], [("VAE", "VAE")]),
    "CLIPTextEncode": ([("clip", "CLIP")], ["text"], [("CONDITIONING", "CONDITIONING")]),
    "FluxGuidance": ([("conditioning", "CONDITIONING")], ["guidance"], [("CONDITIONING", "CONDITIONING")]),
    "EmptyLatentImage": ([], ["width", "height", "batch_size"], [("LATENT", "LATENT")]),
    "EmptySD3LatentImage": ([], ["width", "height", "batch_size"], [("LATENT", "LATENT")]),
    "KSampler": (
        [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("latent_image", "LATENT")],
        ["seed", "~control_after_generate", "steps", "cfg", "sampler_name", "scheduler", "denoise"],
        [("LATENT", "LATENT")],
    ),
    "VAEDecode": ([("samples", "LATENT"), ("vae", "VAE")], [], [("IMAGE", "IMAGE")]),
    "VAEEncode": ([("pixels", "IMAGE"), ("vae", "VAE")], [], [("LATENT", "LATENT")]),
    "LoadImage": ([], ["image", "~upload"], [("IMAGE", "IMAGE"), ("MASK", "MASK")]),
    "SaveImage": ([("images", "IMAGE")], ["filename_prefix"], []),
    "LUAModelLoader": ([], ["model_name", "dtype"], [("lua_model", "LUA_MODEL")]),
    "LUALatentUpscale": (
        [("lua_model", "LUA_MODEL"), ("samples", "LATENT")],
        ["scale_by", "tile_size"],
        [("LATENT", "LATENT")],
    ),
}
OURS = {"LUAModelLoader", "LUALatentUpscale"}

# size [w, h] each node type gets (at least what the frontend computes for it, image previews included)
SIZES: dict[str, tuple[int, int]] = {
    "CheckpointLoaderSimple": (320, 100),
    "UNETLoader": (320, 90),
    "DualCLIPLoader": (320, 140),
    "VAELoader": (320, 60),
    "CLIPTextEncode": (400, 200),
    "FluxGuidance": (320, 60),
    "EmptyLatentImage": (320, 110),
    "EmptySD3LatentImage": (320, 110),
    "KSampler": (320, 270),
    "VAEDecode": (220, 50),
    "VAEEncode": (220, 50),
    "LoadImage": (320, 330),
    "SaveImage": (400, 420),
    "LUAModelLoader": (320, 90),
    "LUALatentUpscale": (320, 110),
}

BUNDLED_SDXL = "lua-sdxl-small.safetensors"
OFFICIAL_FLUX = "lua_flux.pth"
# what the frontend's missing-models dialog reads from a node's properties.models (name, url, directory)
MODEL_DOWNLOADS = {
    OFFICIAL_FLUX: {
        "name": OFFICIAL_FLUX,
        "url": "https://huggingface.co/vaskers5/LUA-FLUX/resolve/main/lua_flux.pth",
        "directory": "lua",
    }
}

FLUX_WORKFLOW = "LUA FLUX text to image x2"
SDXL_WORKFLOW = "LUA SDXL hires fix"
DEMO_WORKFLOW = "LUA demo - upscale an image x2 (no downloads)"

# name -> (description, nodes {id: (type, widget values, (x, y)[, title])}, links [(src, slot, dst, input name)])
WORKFLOWS = {
    FLUX_WORKFLOW: (
        "FLUX.1 text-to-image, then LUA x2 on the latent and one VAE decode (the paper's single pass). "
        "Needs the official LUA-FLUX weights (lua_flux.pth) in models/lua.",
        {
            1: ("UNETLoader", ["flux1-dev.safetensors", "default"], (40, 80)),
            2: ("DualCLIPLoader", ["clip_l.safetensors", "t5xxl_fp16.safetensors", "flux", "default"], (40, 230)),
            3: ("VAELoader", ["ae.safetensors"], (40, 430)),
            4: (
                "CLIPTextEncode",
                ["a lighthouse on a rocky coast at dawn, detailed photograph"],
                (400, 80),
                "Prompt",
            ),
            5: ("CLIPTextEncode", [""], (400, 340), "Negative prompt (unused by FLUX, left empty)"),
            6: ("FluxGuidance", [3.5], (840, 80)),
            7: ("EmptySD3LatentImage", [1024, 1024, 1], (400, 600)),
            8: ("KSampler", [42, "fixed", 20, 1.0, "euler", "simple", 1.0], (1200, 80)),
            9: ("LUAModelLoader", [OFFICIAL_FLUX, "auto"], (1200, 420)),
            10: ("LUALatentUpscale", [2.0, 0], (1560, 80)),
            11: ("VAEDecode", [], (1920, 80)),
            12: ("SaveImage", ["LUA_flux_x2"], (2180, 80)),
        },
        [
            (2, 0, 4, "clip"),
            (2, 0, 5, "clip"),
            (4, 0, 6, "conditioning"),
            (1, 0, 8, "model"),
            (6, 0, 8, "positive"),
            (5, 0, 8, "negative"),
            (7, 0, 8, "latent_image"),
            (9, 0, 10, "lua_model"),
            (8, 0, 10, "samples"),
            (10, 0, 11, "samples"),
            (3, 0, 11, "vae"),
            (11, 0, 12, "images"),
        ],
    ),
    SDXL_WORKFLOW: (
        "SDXL hires fix: KSampler at 1024 px, LUA x2 on the latent instead of latent interpolation, "
        "a second KSampler at denoise 0.4, VAE decode at 2048 px. Uses the bundled SDXL LUA model.",
        {
            1: ("CheckpointLoaderSimple", ["sd_xl_base_1.0.safetensors"], (40, 200)),
            2: (
                "CLIPTextEncode",
                ["a cozy reading nook with plants, soft window light, highly detailed"],
                (400, 80),
                "Prompt",
            ),
            3: ("CLIPTextEncode", ["blurry, low quality"], (400, 340), "Negative prompt"),
            4: ("EmptyLatentImage", [1024, 1024, 1], (400, 600)),
            5: ("KSampler", [7, "fixed", 25, 6.5, "dpmpp_2m", "karras", 1.0], (840, 80), "KSampler (1024 px)"),
            6: ("LUAModelLoader", [BUNDLED_SDXL, "auto"], (840, 420)),
            7: ("LUALatentUpscale", [2.0, 0], (1200, 80)),
            8: (
                "KSampler",
                [7, "fixed", 20, 6.5, "dpmpp_2m", "karras", 0.4],
                (1560, 80),
                "KSampler (hires pass, denoise 0.4)",
            ),
            9: ("VAEDecode", [], (1920, 80)),
            10: ("SaveImage", ["LUA_sdxl_hires"], (2180, 80)),
        },
        [
            (1, 1, 2, "clip"),
            (1, 1, 3, "clip"),
            (1, 0, 5, "model"),
            (2, 0, 5, "positive"),
            (3, 0, 5, "negative"),
            (4, 0, 5, "latent_image"),
            (6, 0, 7, "lua_model"),
            (5, 0, 7, "samples"),
            (1, 0, 8, "model"),
            (2, 0, 8, "positive"),
            (3, 0, 8, "negative"),
            (7, 0, 8, "latent_image"),
            (8, 0, 9, "samples"),
            (1, 2, 9, "vae"),
            (9, 0, 10, "images"),
        ],
    ),
    DEMO_WORKFLOW: (
        "Model-free demo: ComfyUI's own example.png, encoded with the tiny SDXL autoencoder (taesdxl), LUA x2, "
        "decoded, saved. Needs only the tiny autoencoders in models/vae_approx and the pack's bundled SDXL model.",
        {
            1: ("LoadImage", ["example.png", "image"], (40, 80)),
            2: ("VAELoader", ["taesdxl"], (40, 470)),
            3: ("VAEEncode", [], (400, 80)),
            4: ("LUAModelLoader", [BUNDLED_SDXL, "auto"], (400, 200)),
            5: ("LUALatentUpscale", [2.0, 0], (760, 80)),
            6: ("VAEDecode", [], (1120, 80)),
            7: ("SaveImage", ["LUA_demo"], (1380, 80)),
        },
        [
            (1, 0, 3, "pixels"),
            (2, 0, 3, "vae"),
            (4, 0, 5, "lua_model"),
            (3, 0, 5, "samples"),
            (5, 0, 6, "samples"),
            (2, 0, 6, "vae"),
            (6, 0, 7, "images"),
        ],
    ),
}


def build_ui(description: str, nodes: dict, links: list) -> dict:
    """UI-format (0.4) workflow."""
    ui_nodes, ui_links = [], []
    out_links: dict[tuple[int, int], list[int]] = {}
    in_links: dict[tuple[int, str], int] = {}
    for link_id, (src, slot, dst, name) in enumerate(links, start=1):
        sockets = SCHEMA[nodes[dst][0]][0]
        target_slot = [n for n, _ in sockets].index(name)
        kind = SCHEMA[nodes[src][0]][2][slot][1]
        ui_links.append([link_id, src, slot, dst, target_slot, kind])
        out_links.setdefault((src, slot), []).append(link_id)
        in_links[(dst, name)] = link_id
    order = _topological_order(nodes, links)
    for node_id, (kind, widgets, pos, *title) in nodes.items():
        sockets, _, outputs = SCHEMA[kind]
        properties = {"Node name for S&R": kind, "cnr_id": "lua-latent-upscaler" if kind in OURS else "comfy-core"}
        downloads = [MODEL_DOWNLOADS[w] for w in widgets if isinstance(w, str) and w in MODEL_DOWNLOADS]
        if downloads:
            properties["models"] = downloads
        ui_nodes.append(
            {
                "id": node_id,
                "type": kind,
                **({"title": title[0]} if title else {}),
                "pos": list(pos),
                "size": list(SIZES[kind]),
                "flags": {},
                "order": order.index(node_id),
                "mode": 0,
                "inputs": [{"name": n, "type": t, "link": in_links.get((node_id, n))} for n, t in sockets],
                "outputs": [
                    {"name": n, "type": t, "links": out_links.get((node_id, i), []), "slot_index": i}
                    for i, (n, t) in enumerate(outputs)
                ],
                "properties": properties,
                "widgets_values": list(widgets),
            }
        )
    return {
        "last_node_id": max(nodes),
        "last_link_id": len(links),
        "nodes": ui_nodes,
        "links": ui_links,
        "groups": [],
        "config": {},
        "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}, "info": {"description": description}},
        "version": 0.4,
    }


def ui_to_api(ui: dict) -> dict:
    """API-format prompt from a UI workflow (what the frontend's 'Export (API)' produces)."""
    links = {link[0]: link for link in ui["links"]}
    prompt = {}
    for node in sorted(ui["nodes"], key=lambda n: n["id"]):
        _, widget_names, _ = SCHEMA[node["type"]]
        inputs = {}
        for name, value in zip(widget_names, node["widgets_values"]):
            if not name.startswith("~"):
                inputs[name] = value
        for socket in node["inputs"]:
            if socket["link"] is not None:
                link = links[socket["link"]]
                inputs[socket["name"]] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def _topological_order(nodes: dict, links: list) -> list[int]:
    deps = {n: {src for src, _, dst, _ in links if dst == n} for n in nodes}
    order: list[int] = []
    while len(order) < len(nodes):
        ready = sorted(n for n in nodes if n not in order and deps[n] <= set(order))
        order.extend(ready)
    return order


THUMB_SIDE = 512
# the other workflows' thumbnails: LUA x2 with the bundled model of their family on the bundled sample photo
THUMB_SOURCES = {FLUX_WORKFLOW: ("flux1", "lua-flux1-small.safetensors"), SDXL_WORKFLOW: ("sdxl", BUNDLED_SDXL)}


def save_thumbnail(image, name: str, caption: str) -> Path:
    """Center-crop to a square, resize to THUMB_SIDE, caption it, write workflows/<name>.jpg."""
    from PIL import Image, ImageDraw

    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    thumb = image.convert("RGB").crop((left, top, left + side, top + side))
    thumb = thumb.resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(thumb)
    draw.rectangle((0, THUMB_SIDE - 26, THUMB_SIDE, THUMB_SIDE), fill=(0, 0, 0))
    draw.text((8, THUMB_SIDE - 21), caption, fill=(255, 255, 255))
    dest = ROOT / "workflows" / f"{name}.jpg"
    thumb.save(dest, format="JPEG", quality=88)
    return dest


def demo_thumbnail(output_png: Path) -> Path:
    """The demo's thumbnail from the image a real ComfyUI run of the demo workflow saved."""
    from PIL import Image

    with Image.open(output_png) as im:
        return save_thumbnail(im, DEMO_WORKFLOW, f"ComfyUI run of this workflow: example.png x2 ({im.width}x{im.height})")


def family_thumbnails(vae_approx: Path) -> list[Path]:
    """Thumbnails for the workflows that need big models: the bundled model of their family, x2, via tiny AEs."""
    import sys

    import torch
    from PIL import Image

    sys.path.insert(0, str(ROOT))
    from lua_core import load_model, upscale_latent
    from lua_core.imaging import load_rgb, to_tensor, to_uint8
    from lua_core.tiny_ae import load_tiny_autoencoder

    rgb = to_tensor(load_rgb(ROOT / "lua_core" / "assets" / "sample.png"))
    rgb = rgb[None] if rgb.ndim == 3 else rgb
    small = torch.nn.functional.interpolate(rgb, scale_factor=0.5, mode="bicubic", antialias=True).clamp(0, 1)
    written = []
    for name, (family, model_file) in THUMB_SOURCES.items():
        ae = load_tiny_autoencoder(family, [vae_approx])
        model = load_model(ROOT / "models" / model_file)
        with torch.no_grad():
            out = ae.decode(upscale_latent(model, ae.encode(small), 2.0)).clamp(0, 1)
        image = Image.fromarray(to_uint8(out[0]))
        written.append(save_thumbnail(image, name, f"LUA x2, bundled {model_file} (tiny-AE decode)"))
    return written


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="write the example workflows, their API twins and thumbnails")
    ap.add_argument("--demo-output", type=Path, help="image saved by a real ComfyUI run of the demo workflow")
    ap.add_argument("--thumbnails", action="store_true", help="also render the FLUX/SDXL workflow thumbnails")
    ap.add_argument("--vae-approx", type=Path, default=ROOT.parent / "shared" / "vae_approx")
    args = ap.parse_args(argv)
    (ROOT / "workflows" / "api").mkdir(parents=True, exist_ok=True)
    for name, (description, nodes, links) in WORKFLOWS.items():
        ui = build_ui(description, nodes, links)
        (ROOT / "workflows" / f"{name}.json").write_text(json.dumps(ui, indent=2) + "\n")
        (ROOT / "workflows" / "api" / f"{name}.json").write_text(json.dumps(ui_to_api(ui), indent=2) + "\n")
        print(f"wrote workflows/{name}.json and workflows/api/{name}.json")
    if args.demo_output:
        print(f"wrote {demo_thumbnail(args.demo_output)}")
    if args.thumbnails:
        for path in family_thumbnails(args.vae_approx):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
