"""Both V3 nodes end to end against the ComfyUI stand-in (comfy_api.latest, folder_paths, model_management, ...)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import warnings

import pytest
import torch
from comfy_env import ROOT, load_pack, use_stub
from conftest import make_model
from safetensors.torch import save_file

use_stub()
import comfy.model_management as mm  # noqa: E402
import comfy.utils  # noqa: E402
import folder_paths  # noqa: E402
from comfy_api.latest import ComfyExtension, node_info  # noqa: E402

PACK = load_pack()
EXTENSION = asyncio.run(PACK.comfy_entrypoint())
Loader, Upscale = asyncio.run(EXTENSION.get_node_list())
nodes_mod = sys.modules["lua_pack.nodes.lua_nodes"]
folders = sys.modules["lua_pack.nodes.model_folders"]
from lua_pack.lua_core import CheckpointError, LatentInputError, UpscaleOutOfMemoryError  # noqa: E402
from lua_pack.lua_core.model import LUAModel  # noqa: E402


@pytest.fixture(autouse=True)
def inference_mode_like_comfyui():
    """ComfyUI executes every node (loaders included) under torch.inference_mode()."""
    with torch.inference_mode():
        yield


@pytest.fixture
def lua_dir(tmp_path):
    folder_paths.reset(str(tmp_path / "ComfyUI"))
    mm.load_calls.clear()
    mm.current_loaded_models.clear()
    mm.interrupt_current_processing(False)
    mm.bf16_supported, mm.moves_plain_modules = False, True
    comfy.utils.set_progress_bar_global_hook(None)
    lua_dir = tmp_path / "ComfyUI" / "models" / "lua"
    lua_dir.mkdir(parents=True)
    yield lua_dir
    comfy.utils.set_progress_bar_global_hook(None)


def save_tiny(path, channels=4, family="sdxl", container="safetensors", **kw):
    """Write a tiny random LUA model (pack-side classes) in the requested container."""
    tests_model = make_model(channels=channels, family=family, **kw)
    if container == "safetensors":
        pack_model = LUAModel(tests_model.net, tests_model.info)
        pack_model.save(path)
    else:
        torch.save({"params_ema": tests_model.net.state_dict()}, path)
    return path


def load(name, dtype="auto"):
    return Loader.execute(model_name=name, dtype=dtype)[0]


def upscale(handle, latent, scale=2.0, tile=0):
    return Upscale.execute(lua_model=handle, samples=latent, scale_by=scale, tile_size=tile)[0]


def inputs_of(cls) -> dict:
    return node_info(cls)["input"]["required"]


# --------------------------------------------------------------------------- registration and listing


def test_registration_merges_an_existing_entry_and_is_idempotent(lua_dir, tmp_path):
    extra = str(tmp_path / "shared_models" / "lua")
    folder_paths.add_model_folder_path("lua", extra)  # what extra_model_paths.yaml does: ([path], set())
    inputs_of(Loader)
    inputs_of(Loader)
    paths, exts = folder_paths.folder_names_and_paths["lua"]
    assert paths == [extra, str(lua_dir), folders.PACK_MODELS]
    assert {".safetensors", ".sft", ".pth"} <= set(exts)
    assert folder_paths.supported_pt_extensions == {
        ".ckpt",
        ".pt",
        ".pt2",
        ".bin",
        ".pth",
        ".safetensors",
        ".pkl",
        ".sft",
    }


def test_registration_creates_the_folder_key(lua_dir):
    assert "lua" not in folder_paths.folder_names_and_paths
    inputs_of(Loader)
    assert folder_paths.folder_names_and_paths["lua"][0][:2] == [str(lua_dir), folders.PACK_MODELS]


def test_listing_covers_lua_core_folder_and_bundled_models(lua_dir, tmp_path):
    for name in ("a.safetensors", "b.pth", "c.sft", "notes.txt", "sub/d.safetensors"):
        (lua_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (lua_dir / name).write_bytes(b"x")
    core = tmp_path / "ComfyUI" / "models" / "latent_upscale_models"
    core.mkdir()
    (core / "e.safetensors").write_bytes(b"x")
    folder_paths.folder_names_and_paths["latent_upscale_models"] = ([str(core)], folder_paths.supported_pt_extensions)
    listed = inputs_of(Loader)["model_name"][1]["options"]
    for name in ("a.safetensors", "b.pth", "c.sft", os.path.join("sub", "d.safetensors"), "e.safetensors"):
        assert name in listed
    assert "notes.txt" not in listed
    bundled = [f for f in os.listdir(folders.PACK_MODELS) if f.endswith(".safetensors")]
    assert set(bundled) <= set(listed)


# --------------------------------------------------------------------------- loading


@pytest.mark.parametrize(
    "name,container", [("m.safetensors", "safetensors"), ("m.sft", "safetensors"), ("m.pth", "pth")]
)
def test_loads_each_format(lua_dir, name, container):
    save_tiny(lua_dir / name, channels=16, family="flux1", container=container)
    handle = load(name)
    assert handle.model.config.in_chans == 16
    # a .pth has no metadata: only the official LUA-FLUX network is taken as FLUX.1 without it
    assert (handle.model.family.name if handle.model.family else None) == (None if container == "pth" else "flux1")
    assert handle.patcher.model is handle.model.net
    assert handle.patcher.load_device == mm.get_torch_device()


@pytest.mark.parametrize(
    "choice,dtype",
    [("auto", torch.float32), ("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)],
)
def test_dtype_choice(lua_dir, choice, dtype):
    save_tiny(lua_dir / "m.safetensors")
    assert load("m.safetensors", choice).model.dtype == dtype


def test_dtype_auto_follows_comfyui(lua_dir):
    save_tiny(lua_dir / "m.safetensors")
    assert load("m.safetensors").model.dtype == torch.float32  # CPU / --force-fp32: core says fp32
    mm.bf16_supported = True  # a GPU where core itself would use bf16
    assert load("m.safetensors").model.dtype == torch.bfloat16


def test_schema_keeps_ids_types_and_names():
    loader, up = node_info(Loader), node_info(Upscale)
    assert (loader["name"], loader["display_name"], loader["category"]) == ("LUAModelLoader", "Load LUA Model", "loaders")
    assert loader["output"] == ["LUA_MODEL"] and loader["output_name"] == ["lua_model"]
    assert loader["input_order"]["required"] == ["model_name", "dtype"]
    assert inputs_of(Loader)["dtype"][1]["options"] == ["auto", "fp32", "bf16", "fp16"]
    assert (up["name"], up["display_name"], up["category"]) == ("LUALatentUpscale", "Latent Upscale (LUA)", "latent/upscaling")
    assert up["output"] == ["LATENT"] and up["output_name"] == ["LATENT"]
    assert [t for t, _ in inputs_of(Upscale).values()] == ["LUA_MODEL", "LATENT", "FLOAT", "INT"]


def test_every_input_and_output_has_a_tooltip():
    for cls in (Loader, Upscale):
        info = node_info(cls)
        for name, (_, opts) in info["input"]["required"].items():
            assert opts.get("tooltip"), f"{cls.__name__}.{name} has no tooltip"
        assert all(info["output_tooltips"]) and info["description"]


def test_upscale_inputs_match_the_spec():
    req = inputs_of(Upscale)
    assert list(req) == ["lua_model", "samples", "scale_by", "tile_size"]
    assert {"default": 2.0, "min": 1.0, "max": 4.0, "step": 0.05}.items() <= req["scale_by"][1].items()
    assert req["tile_size"][1]["default"] == 0 and req["tile_size"][1]["min"] == 0
    assert "rounded down to whole attention windows" in req["tile_size"][1]["tooltip"]


@pytest.mark.parametrize(
    "installed,default",
    [
        ([], "lua-sdxl-small.safetensors"),
        (["lua_flux.pth"], "lua_flux.pth"),
        (["sub/lua_flux.safetensors", "lua_flux.pth"], os.path.join("sub", "lua_flux.safetensors")),
    ],
)
def test_default_model_is_official_flux_else_bundled_sdxl(lua_dir, installed, default):
    for name in installed:
        (lua_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (lua_dir / name).write_bytes(b"x")
    assert inputs_of(Loader)["model_name"][1]["default"] == default


# --------------------------------------------------------------------------- upscaling


@pytest.fixture
def sdxl_handle(lua_dir):
    save_tiny(lua_dir / "sdxl.safetensors")
    return load("sdxl.safetensors")


def test_latent_keys_are_preserved_and_input_untouched(sdxl_handle):
    mask = torch.ones(1, 1, 64, 64)
    latent = {"samples": torch.randn(2, 4, 8, 8), "noise_mask": mask, "batch_index": [3, 4], "my_key": "kept"}
    before = dict(latent)
    out = upscale(sdxl_handle, latent, 2.0, 0)
    assert latent == before and latent["samples"].shape == (2, 4, 8, 8)
    assert out["samples"].shape == (2, 4, 16, 16)
    assert out["noise_mask"] is mask and out["batch_index"] == [3, 4] and out["my_key"] == "kept"
    assert out["samples"].dtype == torch.float32 and out["samples"].device == mm.intermediate_device()


def test_model_goes_through_the_memory_manager(sdxl_handle):
    upscale(sdxl_handle, {"samples": torch.randn(1, 4, 8, 8)}, 2.0, 0)
    call = mm.load_calls[-1]
    assert call["models"] == [sdxl_handle.patcher] and call["force_full_load"] is True
    assert call["memory_required"] > 0


def test_video_latents(sdxl_handle):
    out = upscale(sdxl_handle, {"samples": torch.randn(1, 4, 3, 8, 10)}, 1.5, 0)
    assert out["samples"].shape == (1, 4, 3, 12, 15)


def test_progress_updates_per_tile(sdxl_handle):
    seen = []
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: seen.append((value, total)))
    upscale(sdxl_handle, {"samples": torch.randn(1, 4, 80, 80)}, 2.0, 32)
    assert len(seen) > 1
    assert [v for v, _ in seen] == list(range(1, len(seen) + 1)) and seen[-1][0] == seen[-1][1]


def test_interruption_stops_between_tiles(sdxl_handle):
    seen = []

    def hook(value, total, preview, node_id=None):
        seen.append(value)
        if value == 2:
            mm.interrupt_current_processing()

    comfy.utils.set_progress_bar_global_hook(hook)
    with pytest.raises(mm.InterruptProcessingException):
        upscale(sdxl_handle, {"samples": torch.randn(1, 4, 80, 80)}, 2.0, 32)
    assert seen == [1, 2]


# --------------------------------------------------------------------------- errors users see


def test_wrong_family_message_names_the_file_and_what_fits(sdxl_handle, lua_dir):
    save_tiny(lua_dir / "flux.safetensors", channels=16, family="flux1")
    with pytest.raises(LatentInputError) as err:
        upscale(sdxl_handle, {"samples": torch.randn(1, 16, 8, 8)})
    msg = str(err.value)
    assert msg.startswith("sdxl.safetensors: this LUA model expects 4-channel SDXL latents but got 16 channels")
    assert "installed LUA models for 16-channel latents: flux.safetensors (FLUX.1)" in msg
    assert "lua-flux1-small.safetensors (FLUX.1)" in msg and "lua-sd3-small.safetensors (SD3)" in msg
    assert "lua-sdxl-small" not in msg.split("installed")[1]
    assert mm.load_calls == [], "the model must not be moved to the GPU for a latent it cannot take"


def test_network_is_moved_when_load_models_gpu_leaves_it(sdxl_handle):
    # newer ComfyUI (dynamic VRAM) may leave a module not built from comfy ops on the offload device
    mm.moves_plain_modules = False
    sdxl_handle.patcher.load_device = torch.device("meta")
    nodes_mod.ensure_on_load_device(sdxl_handle)
    assert sdxl_handle.model.device.type == "meta"


def test_node_checks_the_device_after_load_models_gpu(sdxl_handle, monkeypatch):
    mm.moves_plain_modules = False
    order = []
    monkeypatch.setattr(nodes_mod, "ensure_on_load_device", lambda h: order.append(("ensure", len(mm.load_calls))))
    upscale(sdxl_handle, {"samples": torch.randn(1, 4, 8, 8)})
    assert order == [("ensure", 1)]


def test_untiled_run_reports_progress_per_transformer_block(sdxl_handle):
    seen = []
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: seen.append((value, total)))
    upscale(sdxl_handle, {"samples": torch.randn(1, 4, 16, 16)})
    blocks = sum(sdxl_handle.model.config.depths)
    assert seen == [(i, blocks) for i in range(1, blocks + 1)] and blocks > 1


def test_untiled_run_stops_after_the_block_where_cancel_came(sdxl_handle):
    seen = []

    def hook(value, total, preview, node_id=None):
        seen.append(value)
        mm.interrupt_current_processing()

    comfy.utils.set_progress_bar_global_hook(hook)
    with pytest.raises(mm.InterruptProcessingException):
        upscale(sdxl_handle, {"samples": torch.randn(1, 4, 16, 16)})
    assert seen == [1]


def test_small_tile_size_is_rounded_and_said(sdxl_handle, caplog):
    with caplog.at_level(logging.INFO, logger="lua_latent_upscaler"):
        upscale(sdxl_handle, {"samples": torch.randn(1, 4, 40, 40)}, tile=8)
    assert "tile_size 8 rounded to 32 (whole 8-pixel windows, at least 4)" in caplog.text


def test_non_lua_file_message(lua_dir):
    save_file(
        {"conv_first.weight": torch.zeros(64, 3, 3, 3), "RRDB_trunk.0.RDB1.conv1.weight": torch.zeros(1)},
        str(lua_dir / "4x_esrgan.safetensors"),
    )
    with pytest.raises(
        CheckpointError,
        match="4x_esrgan.safetensors looks like a pixel-space ESRGAN/RRDB upscaler, not a LUA latent model",
    ):
        load("4x_esrgan.safetensors")


def test_missing_file_message(lua_dir):
    with pytest.raises(FileNotFoundError, match="LUA model 'gone.safetensors' not found in .*models/lua"):
        load("gone.safetensors")


def test_out_of_memory_at_the_smallest_tile(sdxl_handle, monkeypatch):
    def oom(x, scale):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(sdxl_handle.model.net, "forward", oom)
    with pytest.raises(
        UpscaleOutOfMemoryError,
        match="out of memory on cpu even with 32x32 latent tiles and batch 1.*unload other models",
    ):
        upscale(sdxl_handle, {"samples": torch.randn(1, 4, 64, 64)}, 2.0, 0)


def test_unsupported_latent_kinds(sdxl_handle):
    with pytest.raises(LatentInputError, match="looks like an audio latent"):
        upscale(sdxl_handle, {"samples": torch.randn(1, 64, 300), "type": "audio"}, 2.0, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nested = torch.nested.nested_tensor([torch.randn(4, 8, 8), torch.randn(4, 6, 8)])
    with pytest.raises(LatentInputError, match="nested latents"):
        upscale(sdxl_handle, {"samples": nested}, 2.0, 0)


# --------------------------------------------------------------------------- importing the pack


def test_import_is_cheap_and_touches_no_comfy_module():
    code = (
        "import sys, importlib.util;"
        f"spec=importlib.util.spec_from_file_location('p', r'{ROOT / '__init__.py'}', submodule_search_locations=[r'{ROOT}']);"
        "m=importlib.util.module_from_spec(spec); sys.modules['p']=m; spec.loader.exec_module(m);"
        "print(callable(m.comfy_entrypoint), any(k=='folder_paths' or k.startswith('comfy') for k in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "True False", out.stderr


def test_comfyui_with_v3_is_sent_to_the_entrypoint():
    assert isinstance(EXTENSION, ComfyExtension)
    assert not hasattr(PACK, "NODE_CLASS_MAPPINGS")  # so ComfyUI takes the comfy_entrypoint branch


def test_comfyui_without_v3_gets_no_nodes_and_one_clear_error(caplog, monkeypatch):
    monkeypatch.setitem(sys.modules, "comfy_api.latest", None)  # import fails, as on ComfyUI < 0.3.59
    with caplog.at_level(logging.ERROR):
        assert PACK.NODE_CLASS_MAPPINGS == {} and PACK.NODE_DISPLAY_NAME_MAPPINGS == {}
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        "LUA latent upscaler needs ComfyUI >= 0.3.59 (the V3 node API, comfy_api.latest); update ComfyUI"
    ]


def test_broken_install_logs_one_line(tmp_path, caplog):
    pack = tmp_path / "broken_pack"
    (pack / "nodes").mkdir(parents=True)
    (pack / "__init__.py").write_text((ROOT / "__init__.py").read_text())
    (pack / "nodes" / "__init__.py").write_text((ROOT / "nodes" / "__init__.py").read_text())
    (pack / "nodes" / "lua_nodes.py").write_text("import safetensors_that_is_not_installed\n")
    mod = load_pack("broken_pack", pack)  # importing the pack itself never fails
    with caplog.at_level(logging.ERROR), pytest.raises(ModuleNotFoundError):
        asyncio.run(mod.comfy_entrypoint())
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "LUA latent upscaler: nodes not loaded (ModuleNotFoundError" in errors[0].getMessage()
