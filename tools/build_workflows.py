"""Write workflows/*.json (ComfyUI UI format 0.4) and their API-format twins in workflows/api/.

The graphs below are the single source; run `python tools/build_workflows.py` after editing them.
tests/test_workflows.py checks the written files against the node definitions.
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

BUNDLED_SDXL = "lua-sdxl-small.safetensors"

# name -> (description, nodes {id: (type, widget values, (x, y))}, links [(src, slot, dst, input name)])
WORKFLOWS = {
    "lua_flux1_txt2img_x2": (
        "FLUX.1 text-to-image, then LUA x2 on the latent and one VAE decode (the paper's single pass). "
        "Needs the official LUA-FLUX weights (lua_flux.pth) in models/lua.",
        {
            1: ("UNETLoader", ["flux1-dev.safetensors", "default"], (40, 80)),
            2: ("DualCLIPLoader", ["clip_l.safetensors", "t5xxl_fp16.safetensors", "flux", "default"], (40, 230)),
            3: ("VAELoader", ["ae.safetensors"], (40, 420)),
            4: ("CLIPTextEncode", ["a lighthouse on a rocky coast at dawn, detailed photograph"], (400, 180)),
            5: ("CLIPTextEncode", [""], (400, 420)),
            6: ("FluxGuidance", [3.5], (760, 180)),
            7: ("EmptySD3LatentImage", [1024, 1024, 1], (400, 620)),
            8: ("KSampler", [42, "fixed", 20, 1.0, "euler", "simple", 1.0], (1060, 180)),
            9: ("LUAModelLoader", ["lua_flux.pth", "auto"], (1060, 560)),
            10: ("LUALatentUpscale", [2.0, 0], (1420, 180)),
            11: ("VAEDecode", [], (1760, 180)),
            12: ("SaveImage", ["LUA_flux_x2"], (2000, 180)),
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
    "lua_sdxl_hires_fix": (
        "SDXL hires fix: KSampler at 1024 px, LUA x2 on the latent instead of latent interpolation, "
        "a second KSampler at denoise 0.4, VAE decode at 2048 px. Uses the bundled SDXL LUA model.",
        {
            1: ("CheckpointLoaderSimple", ["sd_xl_base_1.0.safetensors"], (40, 200)),
            2: ("CLIPTextEncode", ["a cozy reading nook with plants, soft window light, highly detailed"], (400, 80)),
            3: ("CLIPTextEncode", ["blurry, low quality"], (400, 320)),
            4: ("EmptyLatentImage", [1024, 1024, 1], (400, 560)),
            5: ("KSampler", [7, "fixed", 25, 6.5, "dpmpp_2m", "karras", 1.0], (760, 200)),
            6: ("LUAModelLoader", [BUNDLED_SDXL, "auto"], (760, 600)),
            7: ("LUALatentUpscale", [2.0, 0], (1120, 200)),
            8: ("KSampler", [7, "fixed", 20, 6.5, "dpmpp_2m", "karras", 0.4], (1440, 200)),
            9: ("VAEDecode", [], (1800, 200)),
            10: ("SaveImage", ["LUA_sdxl_hires"], (2040, 200)),
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
    "lua_demo_taesdxl": (
        "Model-free demo: Load Image, encode with the tiny SDXL autoencoder (taesdxl), LUA x2, decode, save. "
        "Needs only ComfyUI's bundled tiny autoencoders and the pack's bundled SDXL LUA model.",
        {
            1: ("LoadImage", ["example.png", "image"], (40, 120)),
            2: ("VAELoader", ["taesdxl"], (40, 480)),
            3: ("VAEEncode", [], (400, 120)),
            4: ("LUAModelLoader", [BUNDLED_SDXL, "auto"], (400, 360)),
            5: ("LUALatentUpscale", [2.0, 0], (760, 120)),
            6: ("VAEDecode", [], (1100, 120)),
            7: ("SaveImage", ["LUA_demo"], (1340, 120)),
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
    for node_id, (kind, widgets, pos) in nodes.items():
        sockets, _, outputs = SCHEMA[kind]
        ui_nodes.append(
            {
                "id": node_id,
                "type": kind,
                "pos": list(pos),
                "size": [320, 60 + 26 * (len(sockets) + len(widgets))],
                "flags": {},
                "order": order.index(node_id),
                "mode": 0,
                "inputs": [{"name": n, "type": t, "link": in_links.get((node_id, n))} for n, t in sockets],
                "outputs": [
                    {"name": n, "type": t, "links": out_links.get((node_id, i), []), "slot_index": i}
                    for i, (n, t) in enumerate(outputs)
                ],
                "properties": {
                    "Node name for S&R": kind,
                    "cnr_id": "lua-latent-upscaler" if kind in OURS else "comfy-core",
                },
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


def main() -> None:
    (ROOT / "workflows" / "api").mkdir(parents=True, exist_ok=True)
    for name, (description, nodes, links) in WORKFLOWS.items():
        ui = build_ui(description, nodes, links)
        (ROOT / "workflows" / f"{name}.json").write_text(json.dumps(ui, indent=2) + "\n")
        (ROOT / "workflows" / "api" / f"{name}.json").write_text(json.dumps(ui_to_api(ui), indent=2) + "\n")
        print(f"wrote workflows/{name}.json and workflows/api/{name}.json")


if __name__ == "__main__":
    main()
