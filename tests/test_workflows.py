"""Every workflow is consistent (node types, links, widgets, API twin), readable, and laid out without overlaps."""

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
SOCKET_TYPES = {"MODEL", "CLIP", "VAE", "CONDITIONING", "LATENT", "IMAGE", "MASK", "LUA_MODEL"}
TITLE_H = 30  # litegraph draws the title bar above `pos`
OFFICIAL_URL = "https://huggingface.co/vaskers5/LUA-FLUX/resolve/main/lua_flux.pth"


def widgets_of(spec: dict) -> list[tuple[str, bool]]:
    """(name, sent_to_api) for each widget in UI order; seeds add control_after_generate, uploads add 'upload'."""
    out = []
    for section in ("required", "optional"):
        for name in spec["input_order"].get(section, []):
            entry = spec["input"][section][name]
            kind, opts = entry[0], (entry[1] if len(entry) > 1 else {})
            if isinstance(kind, str) and kind in SOCKET_TYPES:
                continue
            out.append((name, True))
            if opts.get("control_after_generate"):
                out.append(("control_after_generate", False))
            if opts.get("image_upload"):
                out.append(("upload", False))
    return out


def sockets_of(spec: dict) -> list[str]:
    return [
        name
        for section in ("required", "optional")
        for name in spec["input_order"].get(section, [])
        if isinstance(spec["input"][section][name][0], str) and spec["input"][section][name][0] in SOCKET_TYPES
    ]


def ui_to_api(ui: dict, info: dict) -> dict:
    links = {link[0]: link for link in ui["links"]}
    prompt = {}
    for node in ui["nodes"]:
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
        if s["name"] in info[n["type"]]["input"]["required"] and s["link"] is None
    ]
    assert unlinked == [], f"required inputs left unconnected: {unlinked}"


def min_size(node: dict) -> tuple[int, int]:
    """The least room the frontend gives a node: slot rows, widget rows, text boxes and image previews."""
    rows = max(len(node["inputs"]), len(node["outputs"]))
    height = 26 * rows + 24 * len(node["widgets_values"]) + 10
    if node["type"] == "CLIPTextEncode":
        height += 100  # multiline prompt box
    if node["type"] in ("LoadImage", "SaveImage"):
        height += 250  # the image preview below the widgets
    return 220, height


def bounding_box(node: dict) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) in canvas pixels, title bar included, at least the frontend's own size."""
    x, y = node["pos"]
    w, h = (max(a, b) for a, b in zip(node["size"], min_size(node)))
    return x, y - TITLE_H, x + w, y + h


def test_there_are_the_three_workflows():
    assert len(WORKFLOWS) == 3
    assert any("FLUX" in p.stem for p in WORKFLOWS) and any("SDXL hires fix" in p.stem for p in WORKFLOWS)
    assert any("demo" in p.stem for p in WORKFLOWS)


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
    overlaps = []
    for a, b in combinations(nodes, 2):
        (l1, t1, r1, b1), (l2, t2, r2, b2) = bounding_box(a), bounding_box(b)
        if l1 < r2 and l2 < r1 and t1 < b2 and t2 < b1:
            overlaps.append((a.get("title", a["type"]), b.get("title", b["type"])))
    assert overlaps == [], f"overlapping nodes: {overlaps}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_title_is_readable_and_thumbnail_is_beside_it(path):
    # the template browser shows the file name as the card's title and <name>.jpg as its picture
    assert re.fullmatch(r"LUA [A-Za-z0-9 ,()\-]+", path.stem) and "_" not in path.stem
    with Image.open(path.with_suffix(".jpg")) as im:
        assert im.format == "JPEG" and min(im.size) >= 256


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_our_widget_values_are_valid(path):
    for node in json.loads(path.read_text())["nodes"]:
        if node["type"] == "LUALatentUpscale":
            scale, tile = node["widgets_values"]
            assert 1.0 <= scale <= 4.0 and tile >= 0
        if node["type"] == "LUAModelLoader":
            name, dtype = node["widgets_values"]
            assert dtype in ("auto", "fp32", "bf16", "fp16") and name.endswith((".safetensors", ".sft", ".pth"))


def test_official_model_carries_its_download_for_the_missing_models_dialog():
    # the frontend reads node.properties.models entries whose name is one of the node's widget values
    loaders = [
        n
        for p in WORKFLOWS
        for n in json.loads(p.read_text())["nodes"]
        if n["type"] == "LUAModelLoader" and n["widgets_values"][0] == "lua_flux.pth"
    ]
    assert loaders, "the FLUX workflow should use the official lua_flux.pth"
    for node in loaders:
        assert node["properties"]["models"] == [{"name": "lua_flux.pth", "url": OFFICIAL_URL, "directory": "lua"}]
