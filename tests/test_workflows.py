"""Every workflow is consistent (node types, links, widgets, API twin), readable, laid out without overlaps
(classic and Nodes 2.0), opens on a view that shows it whole, and names a real download for every model it
needs that the pack does not bundle."""

from __future__ import annotations

import asyncio
import json
import re
from itertools import combinations
from pathlib import Path

import pytest
from comfy_env import ROOT, load_pack, use_stub
from PIL import Image

use_stub()
from comfy_api.latest import node_info  # noqa: E402

PACK = load_pack()
OURS = {cls.define_schema().node_id: cls for cls in asyncio.run(asyncio.run(PACK.comfy_entrypoint()).get_node_list())}
CORE = json.loads((Path(__file__).parent / "data" / "core_object_info.json").read_text())["nodes"]
OBJECT_INFO = CORE | {kind: node_info(cls) for kind, cls in OURS.items()}
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}  # any other type name is a socket
FRONTEND_ONLY = {"Note", "MarkdownNote"}  # the frontend's own virtual nodes: not in /object_info, never sent
TITLE_H = 30  # litegraph draws the title bar above `pos`
OFFICIAL_URL = "https://huggingface.co/vaskers5/LUA-FLUX/resolve/main/lua_flux.pth"
IMAGE_PREVIEW = {"LoadImage", "SaveImage"}  # their preview grows with the picture (square at node width or more)
# The frontend's panels over the canvas (comfyui-frontend-package 1.25/1.35 sources): the stored view must show
# every node in a 1280x720 window (canvas 1280x680) clear of them, with 16 px to spare.
VIEW = (1280, 680)
SAFE = (56 + 16, 52 + 16, VIEW[0] - 8 - 16, VIEW[1] - 8 - 16)  # left sidebar, top Run toolbar, right, bottom
CORNER = (VIEW[0] - 250 - 20, VIEW[1] - 54 - 200 - 16)  # minimap (250x200, 54 px up) and zoom buttons below it
VUE_SCALE = 1.2  # Nodes 2.0 spreads a classic layout by 1.2 about its top-left (ensureCorrectLayoutScale)


def widgets_of(spec: dict) -> list[tuple[str, bool]]:
    """(name, sent_to_api) for each widget in UI order; seeds add control_after_generate, uploads add 'upload'."""
    out = []
    for section in ("required", "optional"):
        for name in spec["input_order"].get(section, []):
            entry = spec["input"][section][name]
            kind, opts = entry[0], (entry[1] if len(entry) > 1 else {})
            if is_socket(kind):
                continue
            out.append((name, True))
            if opts.get("control_after_generate"):
                out.append(("control_after_generate", False))
            if opts.get("image_upload"):
                out.append(("upload", False))
    return out


def is_socket(kind) -> bool:
    """A linkable input (MODEL, LATENT, NOISE, LUA_MODEL, ...), not a widget (INT, a combo list, ...)."""
    return isinstance(kind, str) and kind not in WIDGET_TYPES


def sockets_of(spec: dict) -> list[str]:
    return [
        name
        for section in ("required", "optional")
        for name in spec["input_order"].get(section, [])
        if is_socket(spec["input"][section][name][0])
    ]


def ui_to_api(ui: dict, info: dict) -> dict:
    links = {link[0]: link for link in ui["links"]}
    prompt = {}
    for node in ui["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        spec = info[node["type"]]
        inputs = {name: value for (name, sent), value in zip(widgets_of(spec), node["widgets_values"]) if sent}
        for socket in node["inputs"]:
            if socket["link"] is not None:
                inputs[socket["name"]] = [str(links[socket["link"]][1]), links[socket["link"]][2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def check_ui_workflow(ui: dict, info: dict) -> None:
    """Assert a UI workflow loads against /object_info-style node definitions (types, widgets, sockets, links)."""
    assert ui["version"] == 0.4
    nodes = {n["id"]: n for n in ui["nodes"]}
    assert ui["last_node_id"] >= max(nodes) and ui["last_link_id"] >= max(link[0] for link in ui["links"])
    for node in ui["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            assert node["inputs"] == node["outputs"] == [] and [type(v) for v in node["widgets_values"]] == [str]
            continue
        assert node["type"] in info, f"unknown node type {node['type']}"
        spec = info[node["type"]]
        assert len(node["widgets_values"]) == len(widgets_of(spec)), f"{node['type']} widget count"
        assert [s["name"] for s in node["inputs"]] == sockets_of(spec), f"{node['type']} sockets"
        assert [o["type"] for o in node["outputs"]] == list(spec["output"]), f"{node['type']} outputs"
    for link_id, src, slot, dst, target_slot, kind in ui["links"]:
        out = nodes[src]["outputs"][slot]
        assert out["type"] == kind and link_id in out["links"]
        target = nodes[dst]["inputs"][target_slot]
        assert target["link"] == link_id and target["type"] == kind
    unlinked = [
        (n["id"], s["name"])
        for n in ui["nodes"]
        for s in n["inputs"]
        if n["type"] not in FRONTEND_ONLY and s["name"] in info[n["type"]]["input"]["required"] and s["link"] is None
    ]
    assert unlinked == [], f"required inputs left unconnected: {unlinked}"


def min_size(node: dict) -> tuple[int, int]:
    """The least room the frontend gives a node: slot rows, widget rows, text boxes and image previews."""
    rows = max(len(node["inputs"]), len(node["outputs"]))
    height = 26 * rows + 24 * len(node["widgets_values"]) + 10
    if node["type"] in ("CLIPTextEncode", *FRONTEND_ONLY):
        height += 100  # multiline text box
    if node["type"] in IMAGE_PREVIEW:
        height += 250  # the image preview below the widgets
    return 220, height


def bounding_box(node: dict) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) in canvas pixels, title bar included, at least the frontend's own size."""
    x, y = node["pos"]
    w, h = (max(a, b) for a, b in zip(node["size"], min_size(node)))
    return x, y - TITLE_H, x + w, y + h


def vue_boxes(nodes: list[dict]) -> list[tuple[float, float, float, float]]:
    """Boxes after Nodes 2.0 loads a classic workflow: positions spread by 1.2 about the graph's top-left
    (bounds minus 10 px), sizes 1.2x plus a title, and at least the DOM node's own height (header, slot rows,
    widget rows; an image preview square at the node's width), estimated from the 1.35 frontend's styles."""
    boxes = [bounding_box(n) for n in nodes]
    ox, oy = min(b[0] for b in boxes) - 10, min(b[1] for b in boxes) - 10
    out = []
    for n, (left, top, right, bottom) in zip(nodes, boxes):
        x, y = ox + (left - ox) * VUE_SCALE, oy + (top + TITLE_H - oy) * VUE_SCALE
        w = (right - left) * VUE_SCALE
        h = (bottom - top - TITLE_H) * VUE_SCALE + TITLE_H
        dom = 40 + 26 * max(len(n["inputs"]), len(n["outputs"])) + 34 * len(n["widgets_values"])
        if n["type"] in IMAGE_PREVIEW:
            dom += w
        out.append((x, y - TITLE_H, x + w, y + max(h, dom)))
    return out


def overlaps(nodes: list[dict], boxes: list) -> list[tuple[str, str]]:
    found = []
    for (a, (l1, t1, r1, b1)), (b, (l2, t2, r2, b2)) in combinations(zip(nodes, boxes), 2):
        if l1 < r2 and l2 < r1 and t1 < b2 and t2 < b1:
            found.append((a.get("title", a["type"]), b.get("title", b["type"])))
    return found


def test_there_are_the_four_workflows():
    stems = {p.stem for p in WORKFLOWS}
    assert stems == {
        "LUA FLUX.1 text to image x2",
        "LUA FLUX.2 text to image x2",
        "LUA SDXL hires fix",
        "LUA demo x2 (no downloads)",
    }


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_ui_workflow_is_consistent(path):
    check_ui_workflow(json.loads(path.read_text()), OBJECT_INFO)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_api_twin_matches_ui(path):
    twin = ROOT / "workflows" / "api" / path.name
    assert twin.is_file(), f"missing API twin {twin}"
    assert json.loads(twin.read_text()) == ui_to_api(json.loads(path.read_text()), OBJECT_INFO)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_no_two_nodes_overlap(path):
    nodes = json.loads(path.read_text())["nodes"]
    assert overlaps(nodes, [bounding_box(n) for n in nodes]) == [], "classic layout"
    assert overlaps(nodes, vue_boxes(nodes)) == [], "Nodes 2.0 layout"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_nothing_below_an_image_preview(path):
    # Load Image / Save Image grow with the picture they show (taller for a tall picture): they end their column
    nodes = json.loads(path.read_text())["nodes"]
    for a in nodes:
        if a["type"] not in IMAGE_PREVIEW:
            continue
        left, top, right, _ = bounding_box(a)
        below = []
        for b in nodes:
            b_left, b_top, b_right, _ = bounding_box(b)
            if b is not a and b_top > top and b_left < right and left < b_right:
                below.append(b.get("title", b["type"]))
        assert below == [], f"{a['type']} has {below} below it"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_stored_view_shows_every_node_clear_of_the_panels(path):
    ui = json.loads(path.read_text())
    ds = ui["extra"]["ds"]
    scale, (dx, dy) = ds["scale"], ds["offset"]
    assert 0.3 <= scale <= 1.0, "readable zoom"
    for layout, boxes in (("classic", [bounding_box(n) for n in ui["nodes"]]), ("Nodes 2.0", vue_boxes(ui["nodes"]))):
        for node, (left, top, right, bottom) in zip(ui["nodes"], boxes):
            # litegraph: screen = (canvas + offset) * scale
            sl, st, sr, sb = (left + dx) * scale, (top + dy) * scale, (right + dx) * scale, (bottom + dy) * scale
            name = f"{layout}: {node.get('title', node['type'])} at {[round(v) for v in (sl, st, sr, sb)]}"
            assert SAFE[0] <= sl and SAFE[1] <= st and sr <= SAFE[2] and sb <= SAFE[3], f"{name} is off screen"
            assert not (sr > CORNER[0] and sb > CORNER[1]), f"{name} is under the minimap"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_title_is_readable_and_thumbnail_is_beside_it(path):
    # the template browser shows the file name as the card's title (one line of ~30 characters) and
    # <name>.jpg as its picture (at most 256 px, so the 512 px card keeps its text large)
    assert re.fullmatch(r"LUA [A-Za-z0-9 .,()\-]+", path.stem) and "_" not in path.stem
    assert len(path.stem) <= 30, "the card shows one line of the title"
    thumb = path.with_suffix(".jpg")
    with Image.open(thumb) as im:
        assert im.format == "JPEG" and im.size == (512, 512)
    assert thumb.stat().st_size < 80_000


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_our_widget_values_are_valid(path):
    for node in json.loads(path.read_text())["nodes"]:
        if node["type"] == "LUALatentUpscale":
            scale, tile = node["widgets_values"]
            assert 1.0 <= scale <= 4.0 and tile >= 0
        if node["type"] == "LUAModelLoader":
            name, dtype, matching = node["widgets_values"]
            assert dtype in ("auto", "fp32", "bf16", "fp16") and name.endswith((".safetensors", ".sft", ".pth"))
            assert matching == "on"  # what the bundled models' quality numbers measure


MODEL_FILE = re.compile(r".+\.(safetensors|sft|pth|ckpt|pt)$")
BUNDLED = {p.name for p in (ROOT / "models").glob("lua-*-small.safetensors")} | {"lua-flux2-small.safetensors"}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_every_model_to_download_carries_its_link(path):
    # the missing-models dialog reads node.properties.models entries whose name is one of the node's widget
    # values (name, url, directory = a models/ folder); bundled LUA models and tiny autoencoders need none
    for node in json.loads(path.read_text())["nodes"]:
        files = [v for v in node["widgets_values"] if isinstance(v, str) and MODEL_FILE.fullmatch(v)]
        needed = [f for f in files if f not in BUNDLED and node["type"] not in FRONTEND_ONLY]
        models = node["properties"].get("models", [])
        assert sorted(m["name"] for m in models) == sorted(needed), f"{node['type']}: {files}"
        for m in models:
            assert set(m) == {"name", "url", "directory"}
            assert m["url"].startswith("https://huggingface.co/") and m["name"] in m["url"]
            assert m["directory"] in {"checkpoints", "diffusion_models", "text_encoders", "vae", "lua"}


def test_official_model_link_is_in_the_dialog_and_in_a_note():
    # the dialog shows .pth files in red with Download and Copy URL disabled, so a Note carries the link as text
    (path,) = [p for p in WORKFLOWS if p.stem == "LUA FLUX.1 text to image x2"]
    nodes = json.loads(path.read_text())["nodes"]
    (loader,) = [n for n in nodes if n["type"] == "LUAModelLoader"]
    assert loader["widgets_values"][0] == "lua_flux.pth"
    assert loader["properties"]["models"] == [{"name": "lua_flux.pth", "url": OFFICIAL_URL, "directory": "lua"}]
    notes = [n["widgets_values"][0] for n in nodes if n["type"] == "Note"]
    assert any(f"\n{OFFICIAL_URL}\n" in text for text in notes), "the link on a line of its own in a Note"


def test_flux2_workflow_follows_comfyuis_klein_template():
    (path,) = [p for p in WORKFLOWS if p.stem == "LUA FLUX.2 text to image x2"]
    ui = json.loads(path.read_text())
    by_type = {n["type"]: n for n in ui["nodes"]}
    assert by_type["UNETLoader"]["widgets_values"][0].startswith("flux-2-klein")
    assert by_type["CLIPLoader"]["widgets_values"][:2] == ["qwen_3_4b.safetensors", "flux2"]
    assert by_type["VAELoader"]["widgets_values"] == ["flux2-vae.safetensors"]
    assert by_type["LUAModelLoader"]["widgets_values"][0] == "lua-flux2-small.safetensors"
    assert by_type["LUALatentUpscale"]["widgets_values"][0] == 2.0
    api = ui_to_api(ui, OBJECT_INFO)
    # EmptyFlux2LatentImage -> SamplerCustomAdvanced -> LUA -> VAE Decode
    ups = next(v for v in api.values() if v["class_type"] == "LUALatentUpscale")
    assert api[ups["inputs"]["samples"][0]]["class_type"] == "SamplerCustomAdvanced"
    decode = next(v for v in api.values() if v["class_type"] == "VAEDecode")
    assert api[decode["inputs"]["samples"][0]]["class_type"] == "LUALatentUpscale"
