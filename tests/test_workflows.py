"""Every workflow JSON is consistent: known node types, valid links, widget counts, API twins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from comfy_env import ROOT, load_pack, use_stub

use_stub()
PACK = load_pack()
CORE = json.loads((Path(__file__).parent / "data" / "core_object_info.json").read_text())["nodes"]
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
SOCKET_TYPES = {"MODEL", "CLIP", "VAE", "CONDITIONING", "LATENT", "IMAGE", "MASK", "LUA_MODEL"}


def node_spec(kind: str) -> dict:
    """/object_info-style entry: core nodes from the ComfyUI snapshot, ours from the live classes."""
    if kind in CORE:
        return CORE[kind]
    cls = PACK.NODE_CLASS_MAPPINGS[kind]
    inputs = cls.INPUT_TYPES()
    return {
        "input": inputs,
        "input_order": {k: list(v) for k, v in inputs.items()},
        "output": list(cls.RETURN_TYPES),
    }


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


def ui_to_api(ui: dict) -> dict:
    links = {link[0]: link for link in ui["links"]}
    prompt = {}
    for node in ui["nodes"]:
        spec = node_spec(node["type"])
        inputs = {name: value for (name, sent), value in zip(widgets_of(spec), node["widgets_values"]) if sent}
        for socket in node["inputs"]:
            if socket["link"] is not None:
                inputs[socket["name"]] = [str(links[socket["link"]][1]), links[socket["link"]][2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def test_there_are_the_three_workflows():
    names = {p.stem for p in WORKFLOWS}
    assert {"lua_flux1_txt2img_x2", "lua_sdxl_hires_fix", "lua_demo_taesdxl"} <= names


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_ui_workflow_is_consistent(path):
    ui = json.loads(path.read_text())
    assert ui["version"] == 0.4
    nodes = {n["id"]: n for n in ui["nodes"]}
    assert ui["last_node_id"] >= max(nodes) and ui["last_link_id"] >= max(link[0] for link in ui["links"])
    for node in ui["nodes"]:
        assert node["type"] in CORE or node["type"] in PACK.NODE_CLASS_MAPPINGS, f"unknown node type {node['type']}"
        spec = node_spec(node["type"])
        assert len(node["widgets_values"]) == len(widgets_of(spec)), f"{node['type']} widget count"
        assert [s["name"] for s in node["inputs"]] == sockets_of(spec), f"{node['type']} sockets"
        assert [o["type"] for o in node["outputs"]] == list(spec["output"]), f"{node['type']} outputs"
    for link_id, src, slot, dst, target_slot, kind in ui["links"]:
        out = nodes[src]["outputs"][slot]
        assert out["type"] == kind and link_id in out["links"]
        target = nodes[dst]["inputs"][target_slot]
        assert target["link"] == link_id and target["type"] == kind
    required_sockets = [
        (n["id"], s["name"])
        for n in ui["nodes"]
        for s in n["inputs"]
        if s["name"] in node_spec(n["type"])["input"]["required"]
    ]
    unlinked = [
        (i, name)
        for i, name in required_sockets
        if next(s for s in nodes[i]["inputs"] if s["name"] == name)["link"] is None
    ]
    assert unlinked == [], f"required inputs left unconnected: {unlinked}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_api_twin_matches_ui(path):
    twin = ROOT / "workflows" / "api" / path.name
    assert twin.is_file(), f"missing API twin {twin}"
    assert json.loads(twin.read_text()) == ui_to_api(json.loads(path.read_text()))


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_our_widget_values_are_valid(path):
    for node in json.loads(path.read_text())["nodes"]:
        if node["type"] == "LUALatentUpscale":
            scale, tile = node["widgets_values"]
            assert 1.0 <= scale <= 4.0 and tile >= 0
        if node["type"] == "LUAModelLoader":
            name, dtype = node["widgets_values"]
            assert dtype in ("auto", "fp32", "bf16", "fp16") and name.endswith((".safetensors", ".sft", ".pth"))
