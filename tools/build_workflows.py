"""Write workflows/*.json (ComfyUI UI format 0.4), their API-format twins in workflows/api/, and thumbnails.

The graphs below are the single source; run `python tools/build_workflows.py` after editing them.
File names are the titles the template browser shows (one line on a card: keep them short).
tests/test_workflows.py checks the written files against the node definitions, that no two nodes overlap
(classic and Nodes 2.0 layouts) and that the stored view shows every node.

    python tools/build_workflows.py                               # JSON files only
    python tools/build_workflows.py --thumbnails                  # + the cards of the big-model workflows
    python tools/build_workflows.py --demo-output OUT.png         # + the demo's card from a real ComfyUI run

`--thumbnails` needs ../shared (tiny autoencoders, the template renders in data/train); the demo's card needs
the image a real ComfyUI run of the demo saved (tests/test_comfyui_integration.py prints its path).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# node type -> (socket inputs [(name, type)], widget names in UI order, outputs [(name, type)])
# UI-only widgets (not sent to the API) are prefixed with "~".
SCHEMA: dict[str, tuple[list, list, list]] = {
    "CheckpointLoaderSimple": ([], ["ckpt_name"], [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")]),
    "UNETLoader": ([], ["unet_name", "weight_dtype"], [("MODEL", "MODEL")]),
    "DualCLIPLoader": ([], ["clip_name1", "clip_name2", "type", "device"], [("CLIP", "CLIP")]),
    "CLIPLoader": ([], ["clip_name", "type", "device"], [("CLIP", "CLIP")]),
    "VAELoader": ([], ["vae_name"], [("VAE", "VAE")]),
    "CLIPTextEncode": ([("clip", "CLIP")], ["text"], [("CONDITIONING", "CONDITIONING")]),
    "FluxGuidance": ([("conditioning", "CONDITIONING")], ["guidance"], [("CONDITIONING", "CONDITIONING")]),
    "EmptyLatentImage": ([], ["width", "height", "batch_size"], [("LATENT", "LATENT")]),
    "EmptySD3LatentImage": ([], ["width", "height", "batch_size"], [("LATENT", "LATENT")]),
    "EmptyFlux2LatentImage": ([], ["width", "height", "batch_size"], [("LATENT", "LATENT")]),
    "KSampler": (
        [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("latent_image", "LATENT")],
        ["seed", "~control_after_generate", "steps", "cfg", "sampler_name", "scheduler", "denoise"],
        [("LATENT", "LATENT")],
    ),
    # FLUX.2's sampler nodes, as ComfyUI's own FLUX.2 klein template wires them
    "RandomNoise": ([], ["noise_seed", "~control_after_generate"], [("NOISE", "NOISE")]),
    "CFGGuider": (
        [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING")],
        ["cfg"],
        [("GUIDER", "GUIDER")],
    ),
    "KSamplerSelect": ([], ["sampler_name"], [("SAMPLER", "SAMPLER")]),
    "Flux2Scheduler": ([], ["steps", "width", "height"], [("SIGMAS", "SIGMAS")]),
    "SamplerCustomAdvanced": (
        [
            ("noise", "NOISE"),
            ("guider", "GUIDER"),
            ("sampler", "SAMPLER"),
            ("sigmas", "SIGMAS"),
            ("latent_image", "LATENT"),
        ],
        [],
        [("output", "LATENT"), ("denoised_output", "LATENT")],
    ),
    "VAEDecode": ([("samples", "LATENT"), ("vae", "VAE")], [], [("IMAGE", "IMAGE")]),
    "VAEEncode": ([("pixels", "IMAGE"), ("vae", "VAE")], [], [("LATENT", "LATENT")]),
    "LoadImage": ([], ["image", "~upload"], [("IMAGE", "IMAGE"), ("MASK", "MASK")]),
    "SaveImage": ([("images", "IMAGE")], ["filename_prefix"], []),
    "LUAModelLoader": ([], ["model_name", "dtype", "decoder_matching"], [("lua_model", "LUA_MODEL")]),
    "LUALatentUpscale": (
        [("lua_model", "LUA_MODEL"), ("samples", "LATENT")],
        ["scale_by", "tile_size"],
        [("LATENT", "LATENT")],
    ),
    # the frontend's own note node (virtual: never sent to the server); its text box can be selected and copied
    "Note": ([], ["~text"], []),
}
OURS = {"LUAModelLoader", "LUALatentUpscale"}
FRONTEND_ONLY = {"Note"}

# size [w, h] each node type gets (at least what the frontend computes for it, image previews included)
SIZES: dict[str, tuple[int, int]] = {
    "CheckpointLoaderSimple": (320, 100),
    "UNETLoader": (320, 90),
    "DualCLIPLoader": (320, 140),
    "CLIPLoader": (320, 110),
    "VAELoader": (320, 60),
    "CLIPTextEncode": (400, 200),
    "FluxGuidance": (320, 60),
    "EmptyLatentImage": (320, 110),
    "EmptySD3LatentImage": (320, 110),
    "EmptyFlux2LatentImage": (320, 110),
    "KSampler": (320, 270),
    "RandomNoise": (320, 90),
    "CFGGuider": (320, 110),
    "KSamplerSelect": (320, 60),
    "Flux2Scheduler": (320, 110),
    "SamplerCustomAdvanced": (260, 150),
    "VAEDecode": (220, 50),
    "VAEEncode": (220, 50),
    "LoadImage": (320, 330),
    "SaveImage": (400, 420),
    "LUAModelLoader": (320, 114),
    "LUALatentUpscale": (320, 110),
    "Note": (400, 200),
}
TITLE_H = 30  # litegraph draws the title bar above `pos`
HGAP, VGAP = 70, 70  # room between columns / stacked nodes (Nodes 2.0 draws nodes taller than classic)

# The view stored in extra.ds (the frontend applies it on load: Comfy.EnableWorkflowViewRestore, default on).
# It must show every node in a small window, clear of the frontend's own panels (sizes from the frontend
# sources, comfyui-frontend-package 1.25.11 and 1.35.9): the side toolbar (48 px + 4 px padding) on the
# left, the top menu / Run toolbar (48 px + 4 px) at the top, the minimap (250x200, 54 px above the bottom,
# shown by default on wide screens) and the zoom buttons in the bottom-right corner.
VIEW = (1280, 680)  # canvas px of a 1280x720 window (0.3.59's menu bar takes ~40 px above the canvas)
VIEW_MARGINS = (72, 68, 24, 24)  # left, top, right, bottom: panels + 16 px
VIEW_CORNER = (270, 270)  # bottom-right box kept free (minimap + zoom buttons + margin)
VUE_LAYOUT_SCALE = 1.2  # Nodes 2.0 spreads a classic workflow by 1.2 about its top-left on load

BUNDLED_SDXL = "lua-sdxl-small.safetensors"
BUNDLED_FLUX2 = "lua-flux2-small.safetensors"
OFFICIAL_FLUX = "lua_flux.pth"
# The official LUA-FLUX weights: repository and file name from the official code (github vaskers5/LUA,
# lua/__init__.py: HF_REPO_ID = "vaskers5/LUA-FLUX", HF_FILENAME = "lua_flux.pth", fetched with
# hf_hub_download at its default revision "main"), put into Hugging Face's documented file URL
# https://huggingface.co/{namespace}/{repository}/resolve/{branch}/{filepath} (huggingface.co/docs/xet/file-id).
OFFICIAL_FLUX_URL = "https://huggingface.co/vaskers5/LUA-FLUX/resolve/main/lua_flux.pth"

# What the frontend's missing-models dialog reads from a node's properties.models (name, url, directory):
# entries whose name is one of the node's widget values, listed when that folder lacks the file.
# Every checkpoint URL is copied from ComfyUI's own workflow templates (PyPI packages, read as JSON):
#  - FLUX.1: flux_dev_full_text_to_image.json in comfyui-workflow-templates 0.1.75 (ComfyUI 0.3.59's pin)
#    and comfyui-workflow-templates-media-image 0.3.48 (ComfyUI 0.8.0's pin), identical in both;
#  - SDXL: sdxl_simple_example.json in the same two packages;
#  - FLUX.2 klein: image_flux2_klein_text_to_image.json in comfyui-workflow-templates-json 0.1.123
#    (comfyui-workflow-templates 0.11.97).
_DOWNLOADS = [
    ("flux1-dev.safetensors", "diffusion_models", "https://huggingface.co/Comfy-Org/flux1-dev/resolve/main/flux1-dev.safetensors"),
    ("clip_l.safetensors", "text_encoders", "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors"),
    ("t5xxl_fp16.safetensors", "text_encoders", "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp16.safetensors"),
    ("ae.safetensors", "vae", "https://huggingface.co/Comfy-Org/Lumina_Image_2.0_Repackaged/resolve/main/split_files/vae/ae.safetensors"),
    ("sd_xl_base_1.0.safetensors", "checkpoints", "https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/sd_xl_base_1.0.safetensors?download=true"),
    ("flux-2-klein-base-4b.safetensors", "diffusion_models", "https://huggingface.co/Comfy-Org/flux2-klein/resolve/main/split_files/diffusion_models/flux-2-klein-base-4b.safetensors"),
    ("qwen_3_4b.safetensors", "text_encoders", "https://huggingface.co/Comfy-Org/flux2-klein/resolve/main/split_files/text_encoders/qwen_3_4b.safetensors"),
    ("flux2-vae.safetensors", "vae", "https://huggingface.co/Comfy-Org/flux2-dev/resolve/main/split_files/vae/flux2-vae.safetensors"),
    (OFFICIAL_FLUX, "lua", OFFICIAL_FLUX_URL),
]  # fmt: skip
MODEL_DOWNLOADS = {name: {"name": name, "url": url, "directory": folder} for name, folder, url in _DOWNLOADS}
# the distilled klein (4 steps, cfg 1), named in the FLUX.2 note; same template (its second subgraph)
KLEIN_DISTILLED_URL = (
    "https://huggingface.co/Comfy-Org/flux2-klein/resolve/main/split_files/diffusion_models/flux-2-klein-4b.safetensors"
)

FLUX_WORKFLOW = "LUA FLUX.1 text to image x2"
FLUX2_WORKFLOW = "LUA FLUX.2 text to image x2"
SDXL_WORKFLOW = "LUA SDXL hires fix"
DEMO_WORKFLOW = "LUA demo x2 (no downloads)"
# workflows whose nodes an older ComfyUI lacks: name -> first tested version that has them all
MIN_COMFYUI = {FLUX2_WORKFLOW: "0.8.0"}

LUA_FLUX_NOTE = f"""LUA-FLUX weights for "Load LUA Model": lua_flux.pth (official, Hugging Face vaskers5/LUA-FLUX)

{OFFICIAL_FLUX_URL}

Download it into ComfyUI/models/lua/, then press R on the canvas (refresh) so the loader lists it.
The missing-models dialog names this file but cannot fetch it (it downloads .safetensors/.sft only): \
copy the link from this note.
Nothing to download? Pick the bundled lua-flux1-small.safetensors in the loader instead."""

FLUX2_NOTE = f"""FLUX.2 klein 4B + LUA x2 (model files: the missing-models dialog downloads them; links from \
ComfyUI's own FLUX.2 klein template).

Runs with ComfyUI 0.9.2 or newer (FLUX.2 klein's text encoder); 0.8.0 opens the graph but \
cannot run klein.

Faster: the distilled klein, 4 steps at cfg 1 (Flux2Scheduler steps 4, CFGGuider cfg 1):
{KLEIN_DISTILLED_URL}

LUA uses the bundled lua-flux2-small.safetensors (FLUX.2 dev and klein latents)."""


@dataclass
class Node:
    kind: str
    widgets: list
    title: str | None = None
    size: tuple[int, int] | None = None

    @property
    def wh(self) -> tuple[int, int]:
        return self.size or SIZES[self.kind]


@dataclass
class Workflow:
    description: str
    nodes: dict[int, Node]
    columns: list[list[int]]  # layout: node ids per column, left to right, each stacked top-down
    links: list[tuple[int, int, int, str]]  # (src, slot, dst, input name)


WORKFLOWS: dict[str, Workflow] = {
    FLUX_WORKFLOW: Workflow(
        "FLUX.1 dev text to image at 1024 px, then LUA x2 on the latent and one VAE decode at 2048 px (the "
        "paper's single pass). Uses the official LUA-FLUX weights (lua_flux.pth in models/lua; link in the note).",
        {
            1: Node("UNETLoader", ["flux1-dev.safetensors", "default"]),
            2: Node("DualCLIPLoader", ["clip_l.safetensors", "t5xxl_fp16.safetensors", "flux", "default"]),
            3: Node("VAELoader", ["ae.safetensors"]),
            4: Node("CLIPTextEncode", ["a lighthouse on a rocky coast at dawn, detailed photograph"], "Prompt"),
            5: Node("CLIPTextEncode", [""], "Negative prompt (unused by FLUX, left empty)"),
            6: Node("FluxGuidance", [3.5]),
            7: Node("EmptySD3LatentImage", [1024, 1024, 1]),
            8: Node("KSampler", [42, "fixed", 20, 1.0, "euler", "simple", 1.0]),
            9: Node("LUAModelLoader", [OFFICIAL_FLUX, "auto", "on"]),
            10: Node("LUALatentUpscale", [2.0, 0]),
            11: Node("VAEDecode", []),
            12: Node("SaveImage", ["LUA_flux_x2"]),
            13: Node("Note", [LUA_FLUX_NOTE], "LUA-FLUX download link", (400, 250)),
        },
        [[1, 2, 3, 9], [4, 5, 13], [6, 7, 8], [10, 11], [12]],
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
    FLUX2_WORKFLOW: Workflow(
        "FLUX.2 klein 4B text to image at 1024 px (ComfyUI's own klein template, unpacked), then LUA x2 on the "
        "128-channel latent with the bundled lua-flux2-small model and one VAE decode at 2048 px. "
        "Needs ComfyUI 0.9.2 or newer to run klein.",
        {
            1: Node("UNETLoader", ["flux-2-klein-base-4b.safetensors", "default"]),
            2: Node("CLIPLoader", ["qwen_3_4b.safetensors", "flux2", "default"]),
            3: Node("VAELoader", ["flux2-vae.safetensors"]),
            4: Node("CLIPTextEncode", ["a hedgehog wearing a tiny party hat, confetti, flash photography"], "Prompt"),
            5: Node("CLIPTextEncode", [""], "Negative prompt"),
            6: Node("CFGGuider", [5.0]),
            7: Node("KSamplerSelect", ["euler"]),
            8: Node("Flux2Scheduler", [20, 1024, 1024]),
            9: Node("RandomNoise", [42, "fixed"]),
            10: Node("EmptyFlux2LatentImage", [1024, 1024, 1]),
            11: Node("SamplerCustomAdvanced", []),
            12: Node("LUAModelLoader", [BUNDLED_FLUX2, "auto", "on"]),
            13: Node("LUALatentUpscale", [2.0, 0]),
            14: Node("VAEDecode", []),
            15: Node("SaveImage", ["LUA_flux2_x2"]),
            16: Node("Note", [FLUX2_NOTE], "FLUX.2 klein: models and ComfyUI version", (400, 290)),
        },
        [[1, 2, 3, 12], [4, 5, 16], [9, 6, 7, 8, 10], [11, 13, 14], [15]],
        [
            (2, 0, 4, "clip"),
            (2, 0, 5, "clip"),
            (1, 0, 6, "model"),
            (4, 0, 6, "positive"),
            (5, 0, 6, "negative"),
            (9, 0, 11, "noise"),
            (6, 0, 11, "guider"),
            (7, 0, 11, "sampler"),
            (8, 0, 11, "sigmas"),
            (10, 0, 11, "latent_image"),
            (12, 0, 13, "lua_model"),
            (11, 0, 13, "samples"),
            (13, 0, 14, "samples"),
            (3, 0, 14, "vae"),
            (14, 0, 15, "images"),
        ],
    ),
    SDXL_WORKFLOW: Workflow(
        "SDXL hires fix: KSampler at 1024 px, LUA x2 on the latent instead of latent interpolation, "
        "a second KSampler at denoise 0.4, VAE decode at 2048 px. Uses the bundled SDXL LUA model.",
        {
            1: Node("CheckpointLoaderSimple", ["sd_xl_base_1.0.safetensors"]),
            2: Node(
                "CLIPTextEncode", ["a cozy reading nook with plants, soft window light, highly detailed"], "Prompt"
            ),
            3: Node("CLIPTextEncode", ["blurry, low quality"], "Negative prompt"),
            4: Node("EmptyLatentImage", [1024, 1024, 1]),
            5: Node("KSampler", [7, "fixed", 25, 6.5, "dpmpp_2m", "karras", 1.0], "KSampler (1024 px)"),
            6: Node("LUAModelLoader", [BUNDLED_SDXL, "auto", "on"]),
            7: Node("LUALatentUpscale", [2.0, 0]),
            8: Node("KSampler", [7, "fixed", 20, 6.5, "dpmpp_2m", "karras", 0.4], "KSampler (hires pass, denoise 0.4)"),
            9: Node("VAEDecode", []),
            10: Node("SaveImage", ["LUA_sdxl_hires"]),
        },
        [[1, 4, 6], [2, 3], [5], [7, 8, 9], [10]],
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
    DEMO_WORKFLOW: Workflow(
        "Model-free demo: ComfyUI's own example.png, encoded with the tiny SDXL autoencoder (taesdxl), LUA x2, "
        "decoded, saved. Needs nothing beyond the pack: its bundled SDXL model and taesdxl (listed in Load VAE). "
        "On a CPU the x2 takes a minute or more; Load LUA Model's decoder_matching off makes it 3-10x "
        "faster, at the price of a fine grain in flat areas.",
        {
            1: Node("LoadImage", ["example.png", "image"]),
            2: Node("VAELoader", ["taesdxl"]),
            3: Node("VAEEncode", []),
            4: Node("LUAModelLoader", [BUNDLED_SDXL, "auto", "on"]),
            5: Node("LUALatentUpscale", [2.0, 0]),
            6: Node("VAEDecode", []),
            7: Node("SaveImage", ["LUA_demo"]),
        },
        [[2, 1], [3, 4], [5, 6], [7]],  # image previews (Load Image, Save Image) end their column: they grow
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


def layout(wf: Workflow) -> dict[int, tuple[int, int]]:
    """pos of every node: columns left to right, nodes stacked top-down, title bars included."""
    placed = [n for col in wf.columns for n in col]
    assert sorted(placed) == sorted(wf.nodes), "every node in exactly one column"
    pos, x = {}, 0
    for col in wf.columns:
        y = TITLE_H
        for node_id in col:
            pos[node_id] = (x, y)
            y += wf.nodes[node_id].wh[1] + TITLE_H + VGAP
        x += max(wf.nodes[n].wh[0] for n in col) + HGAP
    return pos


def node_boxes(nodes: list[dict], vue: bool = False) -> list[tuple[float, float, float, float]]:
    """(left, top, right, bottom) of each node with its title bar; vue=True: after Nodes 2.0's 1.2x spread.

    Nodes 2.0 (ensureCorrectLayoutScale in the frontend) moves every node away from the graph's top-left
    (bounds minus 10 px) by 1.2x and gives it 1.2x the size plus a title height; its DOM node is at least
    a header, its slot and widget rows and, for Load/Save Image, a preview square at the node's width
    (an estimate from the 1.35 frontend's styles; tests/test_workflows.py uses the same).
    """
    boxes = [
        (n["pos"][0], n["pos"][1] - TITLE_H, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1]) for n in nodes
    ]
    if not vue:
        return boxes
    ox, oy = min(b[0] for b in boxes) - 10, min(b[1] for b in boxes) - 10
    s = VUE_LAYOUT_SCALE
    out = []
    for n in nodes:
        x, y = ox + (n["pos"][0] - ox) * s, oy + (n["pos"][1] - oy) * s
        w, h = n["size"][0] * s, n["size"][1] * s + TITLE_H
        dom = 40 + 26 * max(len(n["inputs"]), len(n["outputs"])) + 34 * len(n["widgets_values"])
        if n["type"] in ("LoadImage", "SaveImage"):
            dom += w
        out.append((x, y - TITLE_H, x + w, y + max(h, dom)))
    return out


def on_screen(box, scale: float, offset) -> tuple[float, float, float, float]:
    """A canvas box in screen px under the view (litegraph: screen = (canvas + offset) * scale)."""
    return tuple((v + offset[i % 2]) * scale for i, v in enumerate(box))


def view_fits(boxes, scale: float, offset) -> bool:
    (vw, vh), (ml, mt, mr, mb), (cw, ch) = VIEW, VIEW_MARGINS, VIEW_CORNER
    for box in boxes:
        left, top, right, bottom = on_screen(box, scale, offset)
        if left < ml or top < mt or right > vw - mr or bottom > vh - mb:
            return False
        if right > vw - cw and bottom > vh - ch:  # under the minimap / zoom buttons
            return False
    return True


def fit_view(nodes: list[dict]) -> dict:
    """The largest view (scale <= 1) that shows every node, classic and Nodes 2.0 layouts, inside VIEW."""
    boxes = node_boxes(nodes) + node_boxes(nodes, vue=True)
    left, top = min(b[0] for b in boxes), min(b[1] for b in boxes)
    right, bottom = max(b[2] for b in boxes), max(b[3] for b in boxes)
    (vw, vh), (ml, mt, mr, mb) = VIEW, VIEW_MARGINS
    scale = min(1.0, (vw - ml - mr) / (right - left), (vh - mt - mb) / (bottom - top))
    scale = int(scale * 1000) / 1000
    while True:
        offset = [round(ml / scale - left, 1) + 1, round(mt / scale - top, 1) + 1]
        if view_fits(boxes, scale, offset):
            return {"scale": scale, "offset": offset}
        scale = round(scale - 0.005, 3)
        assert scale > 0.1, "graph too large for the reference view"


def build_ui(wf: Workflow) -> dict:
    """UI-format (0.4) workflow."""
    nodes, links = wf.nodes, wf.links
    ui_nodes, ui_links = [], []
    out_links: dict[tuple[int, int], list[int]] = {}
    in_links: dict[tuple[int, str], int] = {}
    for link_id, (src, slot, dst, name) in enumerate(links, start=1):
        sockets = SCHEMA[nodes[dst].kind][0]
        target_slot = [n for n, _ in sockets].index(name)
        kind = SCHEMA[nodes[src].kind][2][slot][1]
        ui_links.append([link_id, src, slot, dst, target_slot, kind])
        out_links.setdefault((src, slot), []).append(link_id)
        in_links[(dst, name)] = link_id
    order = _topological_order(nodes, links)
    pos = layout(wf)
    for node_id, node in nodes.items():
        sockets, _, outputs = SCHEMA[node.kind]
        if node.kind in FRONTEND_ONLY:
            properties = {}
        else:
            properties = {
                "Node name for S&R": node.kind,
                "cnr_id": "lua-latent-upscaler" if node.kind in OURS else "comfy-core",
            }
        downloads = [MODEL_DOWNLOADS[w] for w in node.widgets if isinstance(w, str) and w in MODEL_DOWNLOADS]
        if downloads:
            properties["models"] = downloads
        ui_nodes.append(
            {
                "id": node_id,
                "type": node.kind,
                **({"title": node.title} if node.title else {}),
                "pos": list(pos[node_id]),
                "size": list(node.wh),
                "flags": {},
                "order": order.index(node_id),
                "mode": 0,
                "inputs": [{"name": n, "type": t, "link": in_links.get((node_id, n))} for n, t in sockets],
                "outputs": [
                    {"name": n, "type": t, "links": out_links.get((node_id, i), []), "slot_index": i}
                    for i, (n, t) in enumerate(outputs)
                ],
                "properties": properties,
                "widgets_values": list(node.widgets),
            }
        )
    return {
        "last_node_id": max(nodes),
        "last_link_id": len(links),
        "nodes": ui_nodes,
        "links": ui_links,
        "groups": [],
        "config": {},
        "extra": {"ds": fit_view(ui_nodes), "info": {"description": wf.description}},
        "version": 0.4,
    }


def ui_to_api(ui: dict) -> dict:
    """API-format prompt from a UI workflow (what the frontend's 'Export (API)' produces)."""
    links = {link[0]: link for link in ui["links"]}
    prompt = {}
    for node in sorted(ui["nodes"], key=lambda n: n["id"]):
        if node["type"] in FRONTEND_ONLY:
            continue
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


# ---------------------------------------------------------------------------------------------------------
# Thumbnails ("cards"): the template browser shows them at most 256 px (object-contain, max-h-64), so every
# text is >= 26 px on the 512 px card, i.e. >= 13 px on screen. Each card says what its workflow does: a
# colour band with the model and the job, the 1x picture beside its 2x result (both whole, the 2x twice the
# side) and the pipeline in three steps.

THUMB_SIDE = 512
TEMPLATE_RENDERS = Path("data/train/pypi/comfyui-workflow-templates-media-image")  # under ../shared


@dataclass
class Card:
    title: str
    subtitle: str
    steps: tuple[str, str, str]
    accent: tuple[int, int, int]
    family: str = ""
    model_file: str = ""
    picture: str = ""  # ComfyUI template render (MIT, comfyui-workflow-templates-media-image) under ../shared


CARDS = {
    FLUX_WORKFLOW: Card(
        "FLUX.1 + LUA ×2",
        "1024 → 2048 px, one decode",
        ("FLUX.1", "LUA ×2", "decode"),
        (52, 98, 184),
        "flux1",
        "lua-flux1-small.safetensors",
        "comfyui_workflow_templates_media_image__templates__flux_dev_full_text_to_image-1.webp",
    ),
    FLUX2_WORKFLOW: Card(
        "FLUX.2 klein + LUA ×2",
        "1024 → 2048 px, one decode",
        ("klein", "LUA ×2", "decode"),
        (132, 64, 170),
        "flux2",
        BUNDLED_FLUX2,
        "comfyui_workflow_templates_media_image__templates__image_flux2_klein_text_to_image-1.webp",
    ),
    SDXL_WORKFLOW: Card(
        "SDXL hires fix",
        "LUA ×2, then a 0.4 pass",
        ("SDXL", "LUA ×2", "pass 0.4"),
        (196, 96, 36),
        "sdxl",
        BUNDLED_SDXL,
        "",  # the pack's own sample.png (an SDXL render)
    ),
    DEMO_WORKFLOW: Card(
        "LUA ×2 demo",
        "no downloads: example.png",
        ("taesdxl", "LUA ×2", "decode"),
        (40, 140, 96),
    ),
}


def _font(size: int, bold: bool = False):
    from PIL import ImageFont

    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    for folder in ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu", "/Library/Fonts"):
        if (Path(folder) / name).is_file():
            return ImageFont.truetype(str(Path(folder) / name), size)
    return ImageFont.load_default(size)


def _fit_text(draw, text: str, width: int, size: int, bold: bool):
    """The font of at most `size` px that fits `text` into `width` px."""
    while size > 26:
        font = _font(size, bold)
        if draw.textlength(text, font=font) <= width:
            return font
        size -= 2
    font = _font(26, bold)
    if draw.textlength(text, font=font) > width:
        raise ValueError(f"{text!r} does not fit {width} px at 26 px: shorten it")
    return font


def render_card(card: Card, small, big):
    """512x512 card: title band, the 1x picture and its 2x result, the pipeline."""
    from PIL import Image, ImageDraw

    side = THUMB_SIDE
    im = Image.new("RGB", (side, side), (22, 24, 29))
    draw = ImageDraw.Draw(im)
    draw.rectangle((0, 0, side, 112), fill=card.accent)
    draw.text((20, 10), card.title, font=_fit_text(draw, card.title, side - 40, 46, True), fill="white")
    draw.text((20, 66), card.subtitle, font=_fit_text(draw, card.subtitle, side - 40, 30, False), fill="white")
    # pictures: big = 2x result (300 px), small = the 1x picture at half that side, bottoms aligned
    big_side, top = 300, 128
    small_side = big_side // 2
    bx, sx = side - 20 - big_side, 20
    label = _font(34, True)
    if small is None:  # no x2 output to show (the family's bundled model is not there yet): the picture alone
        im.paste(_square(big, big_side), ((side - big_side) // 2, top))
    else:
        im.paste(_square(big, big_side), (bx, top))
        im.paste(_square(small, small_side), (sx, top + big_side - small_side))
        draw.text((sx, top + 8), "1×", font=label, fill=(200, 200, 200))
        draw.text((sx + 70, top + 60), "→", font=_font(60, True), fill="white")
        draw.rectangle((bx, top, bx + 74, top + 46), fill=(0, 0, 0))
        draw.text((bx + 10, top + 4), "2×", font=label, fill="white")
    # pipeline: three chips with arrows
    y0, y1, gap = 446, 496, 26
    chip_w = (side - 40 - 2 * gap) // 3
    for i, step in enumerate(card.steps):
        x0 = 20 + i * (chip_w + gap)
        draw.rounded_rectangle((x0, y0, x0 + chip_w, y1), radius=10, fill=(48, 52, 60) if i != 1 else card.accent)
        font = _fit_text(draw, step, chip_w - 12, 28, i == 1)
        tw = draw.textlength(step, font=font)
        draw.text((x0 + (chip_w - tw) / 2, y0 + 9), step, font=font, fill="white")
        if i < 2:
            draw.text((x0 + chip_w + 3, y0 + 6), "›", font=_font(34, True), fill=(200, 200, 200))
    return im


def _square(image, side: int):
    from PIL import Image

    s = min(image.size)
    left, top = (image.width - s) // 2, (image.height - s) // 2
    return image.convert("RGB").crop((left, top, left + s, top + s)).resize((side, side), Image.Resampling.LANCZOS)


def save_card(name: str, small, big) -> Path:
    dest = ROOT / "workflows" / f"{name}.jpg"
    render_card(CARDS[name], small, big).save(dest, format="JPEG", quality=86, optimize=True)
    return dest


def demo_thumbnail(output_png: Path, input_png: Path | None = None) -> Path:
    """The demo's card from the image a real ComfyUI run of the demo workflow saved (and its input)."""
    from PIL import Image

    input_png = input_png or output_png.parent.parent / "input" / "example.png"  # the test's base directory
    with Image.open(output_png) as out:
        out = out.convert("RGB")
    if input_png.is_file():
        with Image.open(input_png) as src:
            small = src.convert("RGB")
    else:
        small = out.resize((out.width // 2, out.height // 2), Image.Resampling.LANCZOS)
    return save_card(DEMO_WORKFLOW, small, out)


def family_thumbnails(shared: Path) -> list[Path]:
    """Cards of the workflows that need big models: a template render of that model, x2 with the pack's
    bundled LUA model of that family between the tiny autoencoder's encode and decode."""
    import sys

    import torch
    from PIL import Image

    sys.path.insert(0, str(ROOT))
    from lua_core import load_model, upscale_latent
    from lua_core.imaging import load_rgb, to_tensor, to_uint8
    from lua_core.tiny_ae import load_tiny_autoencoder

    written = []
    for name, card in CARDS.items():
        if not card.family:
            continue
        path = shared / TEMPLATE_RENDERS / card.picture if card.picture else ROOT / "lua_core" / "assets" / "sample.png"
        rgb = to_tensor(load_rgb(path))
        rgb = rgb[None] if rgb.ndim == 3 else rgb
        side = min(rgb.shape[-2:]) // 16 * 16
        rgb = rgb[..., :side, :side]
        small = Image.fromarray(to_uint8(rgb[0]))
        model_path = ROOT / "models" / card.model_file
        if not model_path.is_file():
            print(f"WARNING {name}: no {model_path.relative_to(ROOT)} yet: its card shows the picture without x2")
            written.append(save_card(name, None, small))
            continue
        ae = load_tiny_autoencoder(card.family, [shared / "vae_approx"])
        model = load_model(model_path)
        with torch.no_grad():
            out = ae.decode(upscale_latent(model, ae.encode(rgb), 2.0)).clamp(0, 1)
        written.append(save_card(name, small, Image.fromarray(to_uint8(out[0]))))
    return written


def write_json() -> None:
    wf_dir, api_dir = ROOT / "workflows", ROOT / "workflows" / "api"
    api_dir.mkdir(parents=True, exist_ok=True)
    for name, wf in WORKFLOWS.items():
        ui = build_ui(wf)
        (wf_dir / f"{name}.json").write_text(json.dumps(ui, indent=2, ensure_ascii=False) + "\n")
        (api_dir / f"{name}.json").write_text(json.dumps(ui_to_api(ui), indent=2) + "\n")
        print(f"wrote workflows/{name}.json and workflows/api/{name}.json")
    for stale in [*wf_dir.glob("*.json"), *wf_dir.glob("*.jpg"), *api_dir.glob("*.json")]:
        if stale.stem not in WORKFLOWS:
            stale.unlink()
            print(f"removed {stale.relative_to(ROOT)} (no such workflow any more)")


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="write the example workflows, their API twins and thumbnails")
    ap.add_argument("--demo-output", type=Path, help="image saved by a real ComfyUI run of the demo workflow")
    ap.add_argument("--demo-input", type=Path, help="that run's input (default: ../input/example.png beside it)")
    ap.add_argument("--thumbnails", action="store_true", help="also render the FLUX/SDXL workflow cards")
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared", help="the shared/ folder")
    args = ap.parse_args(argv)
    write_json()
    if args.demo_output:
        print(f"wrote {demo_thumbnail(args.demo_output, args.demo_input)}")
    if args.thumbnails:
        for path in family_thumbnails(args.shared):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
