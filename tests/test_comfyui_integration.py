"""The pack inside a real, headless ComfyUI (skipped unless LUA_COMFYUI_DIR points at a ComfyUI checkout).

    LUA_COMFYUI_DIR=/path/to/ComfyUI LUA_COMFYUI_PYTHON=/path/to/venv/bin/python python -m pytest tests/test_comfyui_integration.py

See DEVELOPERS.md for getting ComfyUI 0.3.59 and its CPU venv. The test builds a throw-away base
directory (custom_nodes/ with this pack linked in, models/vae_approx with the tiny autoencoders,
an input image), starts ComfyUI on loopback, and talks to it over HTTP only.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
COMFY = os.environ.get("LUA_COMFYUI_DIR")
pytestmark = pytest.mark.skipif(not COMFY, reason="set LUA_COMFYUI_DIR to a ComfyUI checkout to run")
INPUT_SIZE = (256, 192)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.load(r)


def _post(url: str, body: dict):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def _tiny_ae_dir() -> Path:
    for d in (Path(COMFY) / "models" / "vae_approx", ROOT.parent / "shared" / "vae_approx"):
        if (d / "taesdxl_decoder.safetensors").is_file():
            return d
    pytest.fail("no taesdxl_encoder/decoder found in ComfyUI's models/vae_approx or ../shared/vae_approx")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy_base")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "lua_latent_upscaler").symlink_to(ROOT, target_is_directory=True)
    vae_approx = base / "models" / "vae_approx"
    vae_approx.mkdir(parents=True)
    for f in _tiny_ae_dir().iterdir():
        if f.name.startswith(("taesd", "taef1")):
            shutil.copy(f, vae_approx / f.name)
    (base / "input").mkdir()
    x, y = INPUT_SIZE
    Image.radial_gradient("L").resize((x, y)).convert("RGB").save(base / "input" / "example.png")
    port = _free_port()
    python = os.environ.get("LUA_COMFYUI_PYTHON", sys.executable)
    log = open(base / "comfyui.log", "w")
    proc = subprocess.Popen(
        [
            python,
            "main.py",
            "--cpu",
            "--listen",
            "127.0.0.1",
            "--port",
            str(port),
            "--base-directory",
            str(base),
            "--disable-auto-launch",
        ],
        cwd=COMFY,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while True:
        try:
            _get(url + "/system_stats")
            break
        except (urllib.error.URLError, ConnectionError, OSError):
            if proc.poll() is not None or time.time() > deadline:
                log.flush()
                pytest.fail("ComfyUI did not start:\n" + (base / "comfyui.log").read_text()[-3000:])
            time.sleep(1)
    yield url, base
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def _run(url: str, prompt: dict, timeout: float = 600) -> dict:
    status, body = _post(url + "/prompt", {"prompt": prompt})
    assert status == 200, body
    pid = body["prompt_id"]
    deadline = time.time() + timeout
    while time.time() < deadline:
        hist = _get(f"{url}/history/{pid}")
        if pid in hist and hist[pid]["status"].get("completed") is not None:
            if hist[pid]["status"]["status_str"] in ("success", "error"):
                return hist[pid]
        time.sleep(1)
    pytest.fail(f"prompt {pid} did not finish in {timeout} s")


def test_object_info_lists_both_nodes(server):
    url, _ = server
    info = _get(url + "/object_info")
    loader, upscale = info["LUAModelLoader"], info["LUALatentUpscale"]
    assert loader["display_name"] == "Load LUA Model" and loader["category"] == "loaders"
    assert loader["output"] == ["LUA_MODEL"]
    assert "lua-sdxl-small.safetensors" in loader["input"]["required"]["model_name"][0]
    assert loader["input"]["required"]["dtype"][0] == ["auto", "fp32", "bf16", "fp16"]
    assert upscale["display_name"] == "Latent Upscale (LUA)" and upscale["category"] == "latent/upscaling"
    assert upscale["input_order"]["required"] == ["lua_model", "samples", "scale_by", "tile_size"]
    scale = upscale["input"]["required"]["scale_by"][1]
    assert (scale["min"], scale["max"], scale["step"], scale["default"]) == (1.0, 4.0, 0.05, 2.0)
    assert upscale["output"] == ["LATENT"] and upscale["description"]
    snapshot = json.loads((ROOT / "tests" / "data" / "core_object_info.json").read_text())["nodes"]
    for kind, spec in snapshot.items():
        assert info[kind]["input_order"] == spec["input_order"], f"core node {kind} changed its inputs"


def test_demo_workflow_doubles_the_image(server):
    url, base = server
    prompt = json.loads((ROOT / "workflows" / "api" / "lua_demo_taesdxl.json").read_text())
    result = _run(url, prompt)
    assert result["status"]["status_str"] == "success", result["status"]["messages"]
    (image,) = [img for out in result["outputs"].values() for img in out.get("images", [])]
    with Image.open(base / "output" / image["subfolder"] / image["filename"]) as im:
        assert im.size == (INPUT_SIZE[0] * 2, INPUT_SIZE[1] * 2)


def test_wrong_family_error_reaches_the_user(server):
    url, _ = server
    prompt = json.loads((ROOT / "workflows" / "api" / "lua_demo_taesdxl.json").read_text())
    prompt["2"]["inputs"]["vae_name"] = "taef1"  # FLUX.1 latents into the SDXL model
    result = _run(url, prompt)
    assert result["status"]["status_str"] == "error"
    errors = [data for event, data in result["status"]["messages"] if event == "execution_error"]
    assert errors and errors[0]["node_type"] == "LUALatentUpscale"
    assert "expects 4-channel SDXL latents but got 16 channels (SD3/FLUX.1)" in errors[0]["exception_message"]
