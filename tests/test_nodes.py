"""Both nodes end to end against the ComfyUI stand-in (folder_paths, model_management, utils, model_patcher)."""

from __future__ import annotations

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

PACK = load_pack()
nodes_mod = sys.modules["lua_pack.nodes.lua_nodes"]
folders = sys.modules["lua_pack.nodes.model_folders"]
from lua_pack.lua_core import CheckpointError, LatentInputError, UpscaleOutOfMemoryError  # noqa: E402
from lua_pack.lua_core.model import LUAModel  # noqa: E402

Loader = PACK.NODE_CLASS_MAPPINGS["LUAModelLoader"]
Upscale = PACK.NODE_CLASS_MAPPINGS["LUALatentUpscale"]


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
    return Loader().load(name, dtype)[0]


# --------------------------------------------------------------------------- registration and listing


def test_registration_merges_an_existing_entry_and_is_idempotent(lua_dir, tmp_path):
    extra = str(tmp_path / "shared_models" / "lua")
    folder_paths.add_model_folder_path("lua", extra)  # what extra_model_paths.yaml does: ([path], set())
    Loader.INPUT_TYPES()
    Loader.INPUT_TYPES()
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
    Loader.INPUT_TYPES()
    assert folder_paths.folder_names_and_paths["lua"][0][:2] == [str(lua_dir), folders.PACK_MODELS]


def test_listing_covers_lua_core_folder_and_bundled_models(lua_dir, tmp_path):
    for name in ("a.safetensors", "b.pth", "c.sft", "notes.txt", "sub/d.safetensors"):
        (lua_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (lua_dir / name).write_bytes(b"x")
    core = tmp_path / "ComfyUI" / "models" / "latent_upscale_models"
    core.mkdir()
    (core / "e.safetensors").write_bytes(b"x")
    folder_paths.folder_names_and_paths["latent_upscale_models"] = ([str(core)], folder_paths.supported_pt_extensions)
    listed = Loader.INPUT_TYPES()["required"]["model_name"][0]
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
    assert handle.model.config.in_chans == 16 and handle.model.family.name == "flux1"
    assert handle.patcher.model is handle.model.net
    assert handle.patcher.load_device == mm.get_torch_device()


@pytest.mark.parametrize(
    "choice,dtype",
    [("auto", torch.float32), ("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)],
)
def test_dtype_choice(lua_dir, choice, dtype):
    save_tiny(lua_dir / "m.safetensors")
    assert load("m.safetensors", choice).model.dtype == dtype


def test_loader_output_type_is_ours():
    assert Loader.RETURN_TYPES == ("LUA_MODEL",) and "LATENT_UPSCALE_MODEL" not in Loader.RETURN_TYPES
    assert Loader.CATEGORY == "loaders" and Upscale.CATEGORY == "latent/upscaling"


def test_every_input_and_output_has_a_tooltip():
    for cls in (Loader, Upscale):
        for name, (_, opts) in cls.INPUT_TYPES()["required"].items():
            assert opts.get("tooltip"), f"{cls.__name__}.{name} has no tooltip"
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES)
        assert cls.DESCRIPTION


def test_upscale_inputs_match_the_spec():
    req = Upscale.INPUT_TYPES()["required"]
    assert list(req) == ["lua_model", "samples", "scale_by", "tile_size"]
    assert {"default": 2.0, "min": 1.0, "max": 4.0, "step": 0.05}.items() <= req["scale_by"][1].items()
    assert req["tile_size"][1]["default"] == 0 and req["tile_size"][1]["min"] == 0


# --------------------------------------------------------------------------- upscaling


@pytest.fixture
def sdxl_handle(lua_dir):
    save_tiny(lua_dir / "sdxl.safetensors")
    return load("sdxl.safetensors")


def test_latent_keys_are_preserved_and_input_untouched(sdxl_handle):
    mask = torch.ones(1, 1, 64, 64)
    latent = {"samples": torch.randn(2, 4, 8, 8), "noise_mask": mask, "batch_index": [3, 4], "my_key": "kept"}
    before = dict(latent)
    (out,) = Upscale().upscale(sdxl_handle, latent, 2.0, 0)
    assert latent == before and latent["samples"].shape == (2, 4, 8, 8)
    assert out["samples"].shape == (2, 4, 16, 16)
    assert out["noise_mask"] is mask and out["batch_index"] == [3, 4] and out["my_key"] == "kept"
    assert out["samples"].dtype == torch.float32 and out["samples"].device == mm.intermediate_device()


def test_model_goes_through_the_memory_manager(sdxl_handle):
    Upscale().upscale(sdxl_handle, {"samples": torch.randn(1, 4, 8, 8)}, 2.0, 0)
    call = mm.load_calls[-1]
    assert call["models"] == [sdxl_handle.patcher] and call["force_full_load"] is True
    assert call["memory_required"] > 0


def test_video_latents(sdxl_handle):
    (out,) = Upscale().upscale(sdxl_handle, {"samples": torch.randn(1, 4, 3, 8, 10)}, 1.5, 0)
    assert out["samples"].shape == (1, 4, 3, 12, 15)


def test_progress_updates_per_tile(sdxl_handle):
    seen = []
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: seen.append((value, total)))
    Upscale().upscale(sdxl_handle, {"samples": torch.randn(1, 4, 80, 80)}, 2.0, 32)
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
        Upscale().upscale(sdxl_handle, {"samples": torch.randn(1, 4, 80, 80)}, 2.0, 32)
    assert seen == [1, 2]


# --------------------------------------------------------------------------- errors users see


def test_wrong_family_message(sdxl_handle):
    with pytest.raises(
        LatentInputError,
        match=r"expects 4-channel SDXL latents but got 16 channels \(SD3/FLUX.1\); load a LUA model for SD3 or FLUX.1",
    ):
        Upscale().upscale(sdxl_handle, {"samples": torch.randn(1, 16, 8, 8)}, 2.0, 0)
    assert mm.load_calls == [], "the model must not be moved to the GPU for a latent it cannot take"


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
        Upscale().upscale(sdxl_handle, {"samples": torch.randn(1, 4, 64, 64)}, 2.0, 0)


def test_unsupported_latent_kinds(sdxl_handle):
    with pytest.raises(LatentInputError, match="looks like an audio latent"):
        Upscale().upscale(sdxl_handle, {"samples": torch.randn(1, 64, 300), "type": "audio"}, 2.0, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nested = torch.nested.nested_tensor([torch.randn(4, 8, 8), torch.randn(4, 6, 8)])
    with pytest.raises(LatentInputError, match="nested latents"):
        Upscale().upscale(sdxl_handle, {"samples": nested}, 2.0, 0)


# --------------------------------------------------------------------------- importing the pack


def test_import_is_cheap_and_touches_no_comfy_module():
    code = (
        "import sys, time, importlib.util; t=time.time();"
        f"spec=importlib.util.spec_from_file_location('p', r'{ROOT / '__init__.py'}', submodule_search_locations=[r'{ROOT}']);"
        "m=importlib.util.module_from_spec(spec); sys.modules['p']=m; spec.loader.exec_module(m);"
        "print(sorted(m.NODE_CLASS_MAPPINGS), any(k=='folder_paths' or k.startswith('comfy') for k in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "['LUALatentUpscale', 'LUAModelLoader'] False", out.stderr


def test_broken_install_logs_one_line_and_does_not_raise(tmp_path, caplog):
    pack = tmp_path / "broken_pack"
    (pack / "nodes").mkdir(parents=True)
    (pack / "__init__.py").write_text((ROOT / "__init__.py").read_text())
    (pack / "nodes" / "__init__.py").write_text("import safetensors_that_is_not_installed\n")
    with caplog.at_level(logging.ERROR):
        mod = load_pack("broken_pack", pack)
    assert mod.NODE_CLASS_MAPPINGS == {} and mod.NODE_DISPLAY_NAME_MAPPINGS == {}
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "LUA latent upscaler: nodes not loaded (ModuleNotFoundError" in errors[0].getMessage()
