"""The pack inside real, headless ComfyUI 0.3.59 and 0.8.0, over HTTP only.

Self-provisioning: each version's source tarball from ../shared/comfyui is extracted and given a CPU venv
once (tools/comfyui_lab.py, cached in .cache/comfyui/), then started once per test session on loopback with a
throw-away --base-directory: this pack linked into custom_nodes/, models/vae_approx/ empty as ComfyUI ships it
(the demo's taesdxl comes from the pack; the wrong-family test adds taef1 for its own run), a generated input
image. Skipped only where ../shared/comfyui is absent (a user's
machine); where it exists (CI) a failed setup fails the tests.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import build_workflows  # noqa: E402
import comfyui_lab  # noqa: E402
from comfy_env import use_stub  # noqa: E402
from conftest import free_port  # noqa: E402
from test_workflows import FRONTEND_ONLY, WORKFLOWS, check_ui_workflow  # noqa: E402

DEMO = build_workflows.DEMO_WORKFLOW
VAE_APPROX = comfyui_lab.SHARED / "vae_approx"


def _get(url: str):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.load(r)


def _post(url: str, body: dict):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, text = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read()
    return status, json.loads(text) if text.strip() else None


class Server:
    """One running ComfyUI: its URL, base directory, version and log."""

    def __init__(self, version: str, url: str, base: Path, log: Path):
        self.version, self.url, self.base, self.log = version, url, base, log

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture(scope="session", params=comfyui_lab.VERSIONS, ids=lambda v: f"comfyui-{v}")
def server(request, tmp_path_factory):
    version = request.param
    if not comfyui_lab.tarball(version).is_file():
        pytest.skip(f"no {comfyui_lab.tarball(version)} (../shared/comfyui holds ComfyUI for these tests; CI has it)")
    lab = comfyui_lab.provision(version)  # raises (= test error) if the build fails
    base = tmp_path_factory.mktemp(f"comfy_base_{version}")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "lua_latent_upscaler").symlink_to(ROOT, target_is_directory=True)
    # empty, as a fresh ComfyUI has it: the demo workflow's taesdxl must come from the pack's registration
    (base / "models" / "vae_approx").mkdir(parents=True)
    (base / "input").mkdir()
    # the demo's input (every ComfyUI has input/example.png, 768 px) at a quarter of the side to keep the CPU run
    # short: 192 px in, 384 px out, still more than the demo card shows (300 px, tools/build_workflows.py)
    with Image.open(lab.comfy_dir / "input" / "example.png") as im:
        im.convert("RGB").resize((im.width // 4, im.height // 4), Image.Resampling.LANCZOS).save(
            base / "input" / "example.png"
        )
    port = free_port()
    log_path = base / "comfyui.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [str(lab.python), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port)]
        + ["--base-directory", str(base), "--disable-auto-launch", "--preview-method", "none"],
        cwd=lab.comfy_dir,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    srv = Server(version, f"http://127.0.0.1:{port}", base, log_path)
    deadline = time.time() + 300
    while True:
        try:
            _get(srv.url + "/system_stats")
            break
        except (urllib.error.URLError, ConnectionError, OSError):
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"ComfyUI {version} did not start:\n{srv.log_tail()}")
            time.sleep(1)
    yield srv
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def _queue(srv: Server, prompt: dict) -> str:
    status, body = _post(srv.url + "/prompt", {"prompt": prompt})
    assert status == 200, body
    return body["prompt_id"]


def _wait(srv: Server, pid: str, timeout: float = 600) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        hist = _get(f"{srv.url}/history/{pid}")
        if pid in hist and hist[pid]["status"].get("completed") is not None:
            return hist[pid]
        time.sleep(0.2)
    pytest.fail(f"prompt {pid} did not finish in {timeout} s:\n{srv.log_tail()}")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def _demo_prompt() -> dict:
    return json.loads((ROOT / "workflows" / "api" / f"{DEMO}.json").read_text())


def test_object_info_lists_both_nodes_as_the_stub_renders_them(server, tmp_path):
    info = _get(server.url + "/object_info")
    loader, upscale = info["LUAModelLoader"], info["LUALatentUpscale"]
    assert "lua-sdxl-small.safetensors" in loader["input"]["required"]["model_name"][1]["options"]
    assert loader["input"]["required"]["model_name"][1]["default"] == "lua-sdxl-small.safetensors"
    # the stand-in comfy_api used by the unit tests renders our schema exactly as this ComfyUI does
    use_stub()
    import folder_paths
    from comfy_api.latest import node_info
    from test_nodes import Loader, Upscale

    folder_paths.reset(str(tmp_path / "ComfyUI"))  # as the server's: no models/lua (unit tests leave theirs)

    for cls, live in ((Loader, loader), (Upscale, upscale)):
        want = node_info(cls)
        for key in ("name", "display_name", "category", "description", "output", "output_name", "input_order"):
            assert live[key] == want[key], f"{want['name']}.{key}"
        for section, name, (kind, opts) in [(k, n, v) for k, sec in want["input"].items() for n, v in sec.items()]:
            live_kind, live_opts = live["input"][section][name]
            assert live_kind == kind, f"{want['name']}.{name} type"
            assert {k: live_opts.get(k) for k in opts} == opts, f"{want['name']}.{name} options"


def test_each_ui_workflow_loads_against_live_node_definitions(server):
    info = _get(server.url + "/object_info")
    newer_only = set()  # node types of workflows that need a newer ComfyUI than this one (FLUX.2 on 0.3.59)
    for path in WORKFLOWS:
        ui = json.loads(path.read_text())
        needs = build_workflows.MIN_COMFYUI.get(path.stem)
        if needs and _version(server.version) < _version(needs):
            missing = {n["type"] for n in ui["nodes"]} - set(info) - FRONTEND_ONLY
            assert missing, f"{path.stem} has every node on ComfyUI {server.version}: lower its MIN_COMFYUI"
            newer_only |= missing
            continue
        check_ui_workflow(ui, info)
    # the unit tests' snapshot of these core nodes (tools/snapshot_core_nodes.py) still describes this ComfyUI
    snapshot = json.loads((ROOT / "tests" / "data" / "core_object_info.json").read_text())["nodes"]
    for kind, spec in snapshot.items():
        if kind in newer_only:
            continue
        assert info[kind]["input_order"] == spec["input_order"], f"core node {kind} changed its inputs"
        assert info[kind]["output"] == spec["output"], f"core node {kind} changed its outputs"


def test_model_folder_is_registered_for_the_missing_models_dialog(server):
    folders = [f["name"] for f in _get(server.url + "/experiment/models")]
    assert "lua" in folders


def test_demo_workflow_doubles_the_image(server):
    assert not any((server.base / "models" / "vae_approx").iterdir()), "the demo must run with no tiny AE installed"
    result = _wait(server, _queue(server, _demo_prompt()))
    assert result["status"]["status_str"] == "success", result["status"]["messages"]
    (image,) = [img for out in result["outputs"].values() for img in out.get("images", [])]
    path = server.base / "output" / image["subfolder"] / image["filename"]
    with Image.open(server.base / "input" / "example.png") as src, Image.open(path) as im:
        assert im.size == (src.width * 2, src.height * 2)
    print(f"demo output of ComfyUI {server.version}: {path}")  # source of the demo thumbnail (build_workflows.py)


def test_templates_are_listed_with_their_thumbnails(server):
    listed = _get(server.url + "/workflow_templates")["lua_latent_upscaler"]
    assert sorted(listed) == sorted(build_workflows.WORKFLOWS)
    for name in listed:
        url = f"{server.url}/api/workflow_templates/lua_latent_upscaler/{urllib.parse.quote(name)}.jpg"
        with urllib.request.urlopen(url, timeout=30) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "image/jpeg"


@contextlib.contextmanager
def _installed_tae(srv: Server, name: str):
    """Copy one tiny autoencoder (encoder + decoder) into models/vae_approx for one test, then remove it again,
    so the demo test always sees the folder as a fresh ComfyUI has it (empty)."""
    copies = [srv.base / "models" / "vae_approx" / f.name for f in VAE_APPROX.glob(f"{name}_*coder.safetensors")]
    assert len(copies) == 2, f"no {name} encoder/decoder in {VAE_APPROX}"
    try:
        for dst in copies:
            shutil.copy(VAE_APPROX / dst.name, dst)
        yield
    finally:
        for dst in copies:
            dst.unlink(missing_ok=True)


def test_wrong_family_error_reaches_the_user(server):
    prompt = _demo_prompt()
    prompt["2"]["inputs"]["vae_name"] = "taef1"  # FLUX.1 latents into the SDXL model
    with _installed_tae(server, "taef1"):  # the only tiny AE the pack does not bundle that a test needs
        result = _wait(server, _queue(server, prompt))
    assert result["status"]["status_str"] == "error"
    errors = [data for event, data in result["status"]["messages"] if event == "execution_error"]
    assert errors and errors[0]["node_type"] == "LUALatentUpscale"
    msg = errors[0]["exception_message"]
    assert msg.startswith("lua-sdxl-small.safetensors: this LUA model expects 4-channel SDXL latents but got 16")
    assert "installed LUA models for 16-channel latents: lua-flux1-small.safetensors (FLUX.1)" in msg


@pytest.mark.parametrize("tile_size", [48, 0], ids=["tiled", "untiled"])
def test_interrupt_stops_the_run_within_seconds(server, tile_size):
    prompt = {
        "1": {"class_type": "EmptyLatentImage", "inputs": {"width": 4096, "height": 4096, "batch_size": 1}},
        # no decoder_matching: an API prompt saved before that optional input existed still runs (as "on")
        "2": {"class_type": "LUAModelLoader", "inputs": {"model_name": "lua-sdxl-small.safetensors", "dtype": "auto"}},
        # 512x512 latent: in 48-pixel tiles (24 overlap) about 440 of them; "untiled" (auto) tiles by free memory
        "3": {
            "class_type": "LUALatentUpscale",
            "inputs": {"lua_model": ["2", 0], "samples": ["1", 0], "scale_by": 2.0, "tile_size": tile_size},
        },
        "4": {"class_type": "SaveLatent", "inputs": {"samples": ["3", 0], "filename_prefix": "latents/interrupted"}},
    }
    started = f"LUA: upscaling 1x4x512x512 latent x2 with lua-sdxl-small.safetensors (cpu, float32, tile {tile_size or 'auto'})"
    before = server.log.read_text(errors="replace").count(started)
    pid = _queue(server, prompt)
    deadline = time.time() + 120
    while server.log.read_text(errors="replace").count(started) <= before:
        assert time.time() < deadline, f"the run never started:\n{server.log_tail()}"
        time.sleep(0.2)
    time.sleep(1.0)
    sent = time.time()
    _post(server.url + "/interrupt", {})
    result = _wait(server, pid, timeout=60)
    took = time.time() - sent
    messages = dict(result["status"]["messages"])
    assert "execution_interrupted" in messages, list(messages)
    assert messages["execution_interrupted"]["node_type"] == "LUALatentUpscale"
    assert took < 5, f"interrupt took {took:.1f} s"
    print(f"ComfyUI {server.version}: {'tiled' if tile_size else 'untiled'} run interrupted in {took:.2f} s")


def test_every_node_schema_builds_on_this_core(server):
    # the schemas use newer V3 fields (search_aliases, advanced) only where the running core takes them;
    # a field this core lacks raised TypeError at start-up and the pack's nodes were missing from /object_info
    info = _get(server.url + "/object_info")
    for node_id in ("LUAModelLoader", "LUALatentUpscale"):
        assert node_id in info, f"{node_id} missing on ComfyUI {server.version}:\n{server.log_tail()}"
    pack_lines = [line for line in server.log.read_text(errors="replace").splitlines() if "lua_latent_upscaler" in line]
    assert not [line for line in pack_lines if "IMPORT FAILED" in line or "Cannot import" in line], pack_lines


def _validation_details(srv: Server, prompt: dict) -> list[str]:
    status, body = _post(srv.url + "/prompt", {"prompt": prompt})
    assert status == 400, body
    return [e["details"] for node in body["node_errors"].values() for e in node["errors"]]


def test_loader_inputs_are_validated_the_same_on_both_cores(server):
    # 0.3.59 does not check V3 combo values: 'fp64' ended in KeyError: 'fp64' at run time, a missing
    # model_name failed only when the node ran
    def prompt(model_name: str, dtype: str, **optional: str) -> dict:
        return {
            "1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "2": {"class_type": "LUAModelLoader", "inputs": {"model_name": model_name, "dtype": dtype, **optional}},
            "3": {
                "class_type": "LUALatentUpscale",
                "inputs": {"lua_model": ["2", 0], "samples": ["1", 0], "scale_by": 2.0, "tile_size": 0},
            },
            "4": {"class_type": "SaveLatent", "inputs": {"samples": ["3", 0], "filename_prefix": "latents/never"}},
        }

    details = _validation_details(server, prompt("lua-sdxl-small.safetensors", "fp64"))
    assert (
        "dtype - dtype 'fp64' is not one of auto, fp32, bf16, fp16; pick one of those in Load LUA Model (a workflow "
        "made with another version of the pack may carry other values)"
    ) in details
    details = _validation_details(server, prompt("lua-sdxl-small.safetensors", "auto", decoder_matching="fast"))
    assert (
        "decoder_matching - decoder_matching 'fast' is not one of on, off; pick one of those in Load LUA Model (a "
        "workflow made with another version of the pack may carry other values)"
    ) in details
    details = _validation_details(server, prompt("gone.safetensors", "auto"))
    assert any(
        d.startswith("model_name - LUA model 'gone.safetensors' not found in ")
        and d.endswith("put LUA .safetensors/.pth files in models/lua and refresh (R) the browser")
        for d in details
    ), details


def _saved_latent(srv: Server, result: dict, node: str):
    """The tensor a SaveLatent node of a finished prompt wrote."""
    from safetensors.torch import load_file

    (entry,) = result["outputs"][node]["latents"]
    return load_file(str(srv.base / "output" / entry["subfolder"] / entry["filename"]))["latent_tensor"]


def test_flux2_latents_are_upscaled_x2_and_x4(server):
    """FLUX.2's 128-channel LATENT (0.8.0+): EmptyFlux2LatentImage for the shape, a taef2-encoded photo for values."""
    if _version(server.version) < (0, 8, 0):
        pytest.skip(f"ComfyUI {server.version} has no FLUX.2 latents (EmptyFlux2LatentImage arrived in 0.8.0)")
    import torch
    from safetensors.torch import save_file

    from lua_core import load_model, upscale_latent
    from lua_core.evaluation import hr_crop
    from lua_core.imaging import bicubic_resize
    from lua_core.metrics import psnr
    from lua_core.tiny_ae import load_tiny_autoencoder

    # 0.8.0 cannot load taef2 as a VAE: the photo is encoded (and the result decoded) with lua_core's taef2
    ae = load_tiny_autoencoder("flux2", [VAE_APPROX])
    hr = hr_crop(ROOT / "lua_core" / "assets" / "sample.png", 256)
    with torch.no_grad():
        z = ae.encode(bicubic_resize(hr, (128, 128)).clamp(0, 1))
    assert z.shape == (1, 128, 8, 8)
    save_file(
        {"latent_tensor": z.contiguous(), "latent_format_version_0": torch.tensor([])},
        server.base / "input" / "flux2_photo.latent",
    )
    model = "lua-flux2-small.safetensors"
    prompt = {
        "1": {"class_type": "LoadLatent", "inputs": {"latent": "flux2_photo.latent"}},
        "2": {"class_type": "LUAModelLoader", "inputs": {"model_name": model, "dtype": "auto"}},
        "3": {
            "class_type": "LUALatentUpscale",
            "inputs": {"lua_model": ["2", 0], "samples": ["1", 0], "scale_by": 2.0, "tile_size": 0},
        },
        "4": {"class_type": "SaveLatent", "inputs": {"samples": ["3", 0], "filename_prefix": "latents/flux2_photo_x2"}},
        # small (4x8 latent): x4 runs the decoder matching at the output size; at 8x16 (1024x512 px out) this test
        # took 75 s in CI, at 4x8 37 s
        "5": {"class_type": "EmptyFlux2LatentImage", "inputs": {"width": 128, "height": 64, "batch_size": 1}},
        "6": {
            "class_type": "LUALatentUpscale",
            "inputs": {"lua_model": ["2", 0], "samples": ["5", 0], "scale_by": 4.0, "tile_size": 0},
        },
        "7": {"class_type": "SaveLatent", "inputs": {"samples": ["6", 0], "filename_prefix": "latents/flux2_empty_x4"}},
    }
    result = _wait(server, _queue(server, prompt))
    assert result["status"]["status_str"] == "success", result["status"]["messages"]
    photo_x2, empty_x4 = _saved_latent(server, result, "4"), _saved_latent(server, result, "7")
    assert photo_x2.shape == (1, 128, 16, 16) and empty_x4.shape == (1, 128, 16, 32)
    assert torch.isfinite(empty_x4).all()
    # the same numbers as lua_core gives outside ComfyUI, and a real upscale of the photo once decoded
    expected = upscale_latent(load_model(ROOT / "models" / model), z, 2)
    assert torch.allclose(photo_x2, expected, atol=1e-4), (photo_x2 - expected).abs().max()
    with torch.no_grad():
        ours = psnr(ae.decode(photo_x2).clamp(0, 1), hr).item()
        latent_bicubic = psnr(
            ae.decode(torch.nn.functional.interpolate(z, scale_factor=2, mode="bicubic")).clamp(0, 1), hr
        ).item()
    assert ours > latent_bicubic + 1.0, (ours, latent_bicubic)
