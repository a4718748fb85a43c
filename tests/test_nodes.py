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
from lua_pack.lua_core.families import get_family  # noqa: E402
from lua_pack.lua_core.model import LUAModel, new_v2_model  # noqa: E402


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


def test_listing_covers_lua_folder_and_bundled_models(lua_dir):
    # our own folder lists every model file: a non-LUA one there gets a clear error when loaded
    for name in ("a.safetensors", "b.pth", "c.sft", "notes.txt", "sub/d.safetensors"):
        (lua_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (lua_dir / name).write_bytes(b"x")
    listed = inputs_of(Loader)["model_name"][1]["options"]
    for name in ("a.safetensors", "b.pth", "c.sft", os.path.join("sub", "d.safetensors")):
        assert name in listed
    assert "notes.txt" not in listed
    bundled = [f for f in os.listdir(folders.PACK_MODELS) if f.endswith(".safetensors")]
    assert set(bundled) <= set(listed)


@pytest.fixture
def core_dir(lua_dir, tmp_path):
    """Core's shared latent_upscale_models folder (ComfyUI >= 0.3.71), registered as core does."""
    core = tmp_path / "ComfyUI" / "models" / "latent_upscale_models"
    core.mkdir()
    folder_paths.folder_names_and_paths["latent_upscale_models"] = ([str(core)], folder_paths.supported_pt_extensions)
    return core


def fill_shared_folder(core):
    """LUA files in every container, beside the other kinds core's folder holds."""
    save_tiny(core / "lua-ours.safetensors")  # our metadata
    save_tiny(core / "lua_flux.pth", channels=16, family=None, container="pth")  # official layout, no metadata
    save_file(make_model().net.state_dict(), str(core / "lua-no-meta.safetensors"))  # LUA tensor names only
    v2 = new_v2_model(get_family("sdxl"), width=8, blocks=1)
    save_file({k: v.contiguous() for k, v in v2.net.state_dict().items()}, str(core / "lua-v2-no-meta.sft"))
    # not LUA: core's own kind of latent upscaler, a pixel upscaler, a tiny autoencoder, a legacy pickle, junk
    core_kind = {"in_conv.conv.weight": torch.zeros(8, 32, 3, 3), "blocks.0.block.0.conv.weight": torch.zeros(8, 8, 3, 3)}
    save_file(core_kind, str(core / "hunyuanvideo15_latent_upsampler.safetensors"))
    save_file({"conv_first.weight": torch.zeros(64, 3, 3, 3), "RRDB_trunk.0.RDB1.conv1.weight": torch.zeros(1)},
              str(core / "4x_esrgan.safetensors"))
    torch.save({"1.weight": torch.zeros(1)}, core / "taesdxl_decoder.pth")
    with open(core / "legacy.pth", "wb") as f:
        torch.save({"params": {"x.weight": torch.zeros(1)}}, f, _use_new_zipfile_serialization=False)
    (core / "broken.safetensors").write_bytes(b"\x00" * 7)


LUA_IN_SHARED = ["lua-no-meta.safetensors", "lua-ours.safetensors", "lua-v2-no-meta.sft", "lua_flux.pth"]


def test_shared_folder_lists_only_files_whose_header_says_lua(core_dir):
    fill_shared_folder(core_dir)
    listed = inputs_of(Loader)["model_name"][1]["options"]
    assert [n for n in listed if (core_dir / n).exists()] == LUA_IN_SHARED
    assert load("lua_flux.pth").model.channels == 16


def test_shared_folder_legacy_pickle_is_read_by_key_names(core_dir):
    with open(core_dir / "old_lua.pth", "wb") as f:
        torch.save({"params_ema": make_model().net.state_dict()}, f, _use_new_zipfile_serialization=False)
    assert "old_lua.pth" in inputs_of(Loader)["model_name"][1]["options"]


def test_header_check_is_cached_by_size_and_mtime(core_dir, monkeypatch):
    fill_shared_folder(core_dir)
    reads = []
    real = folders._read_lua_evidence
    monkeypatch.setattr(folders, "_read_lua_evidence", lambda p: reads.append(p) or real(p))
    folders._lua_file_cache.clear()
    first = folders.list_models()
    assert len(reads) == 9  # every model file in the shared folder, once
    assert folders.list_models() == first and len(reads) == 9
    path = core_dir / "lua-ours.safetensors"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # touched: read again
    folders.list_models()
    assert reads[9:] == [str(path)]


def test_our_files_stay_listed_when_another_pack_narrows_the_folders_to_safetensors(core_dir, lua_dir):
    # a pack does this at import: both entries lose .pth (and .sft)
    fill_shared_folder(core_dir)
    save_tiny(lua_dir / "mine.pth", container="pth")
    for key in ("lua", "latent_upscale_models"):
        paths, _ = folder_paths.folder_names_and_paths.get(key, ([str(lua_dir)], set()))
        folder_paths.folder_names_and_paths[key] = (paths, {".safetensors"})
    listed = inputs_of(Loader)["model_name"][1]["options"]
    assert "mine.pth" in listed and set(LUA_IN_SHARED) <= set(listed)
    assert load("lua_flux.pth").model.channels == 16 and load("mine.pth").model.channels == 4


def test_a_non_lua_file_in_the_shared_folder_is_refused_by_name(core_dir):
    fill_shared_folder(core_dir)
    expected = (
        f"'4x_esrgan.safetensors' in {core_dir} is not a LUA model (its header names no LUA tensors); core's "
        "latent_upscale_models folder also holds other latent upscalers, which core's Load Latent Upscale Model "
        "loads. Choose a LUA model in Load LUA Model"
    )
    assert Loader.validate_inputs(model_name="4x_esrgan.safetensors", dtype="auto") == expected
    with pytest.raises(FileNotFoundError) as err:
        load("4x_esrgan.safetensors")
    assert str(err.value) == expected


# --------------------------------------------------------------------------- input checks on every core


def test_loader_inputs_are_checked_by_the_node(lua_dir):
    # ComfyUI 0.3.59 does not check V3 combo values: 'fp64' ended in KeyError: 'fp64' inside execute
    save_tiny(lua_dir / "m.safetensors")
    dtype_msg = (
        "dtype 'fp64' is not one of auto, fp32, bf16, fp16; pick one of those in Load LUA Model (a workflow made "
        "with another version of the pack may carry other values)"
    )
    assert Loader.validate_inputs(model_name="m.safetensors", dtype="fp64") == dtype_msg
    with pytest.raises(ValueError) as err:
        load("m.safetensors", "fp64")
    assert str(err.value) == dtype_msg
    missing = Loader.validate_inputs(model_name="gone.safetensors", dtype="auto")
    assert missing.startswith("LUA model 'gone.safetensors' not found in ") and str(lua_dir) in missing
    assert missing.endswith("put LUA .safetensors/.pth files in models/lua and refresh (R) the browser")
    assert Loader.validate_inputs(model_name="m.safetensors", dtype="auto") is True
    assert Loader.validate_inputs(model_name=None, dtype=None) is True  # linked inputs: known only at run time
    matching_msg = dtype_msg.replace("dtype 'fp64'", "decoder_matching 'fast'").replace("auto, fp32, bf16, fp16", "on, off")
    assert Loader.validate_inputs(model_name="m.safetensors", dtype="auto", decoder_matching="fast") == matching_msg


def test_decoder_matching_off_loads_the_bundled_file_without_its_steps(lua_dir):
    on, off, default = (
        Loader.execute(model_name="lua-sdxl-small.safetensors", dtype="fp32", **kw)[0]
        for kw in ({"decoder_matching": "on"}, {"decoder_matching": "off"}, {})
    )
    assert on.model.config.match_by_scale and default.model.config == on.model.config
    assert off.model.config.match_by_scale == () and off.model.config.scales == on.model.config.scales
    assert all(torch.equal(v, off.model.net.state_dict()[k]) for k, v in on.model.net.state_dict().items())
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(upscale(on, {"samples": z})["samples"], upscale(off, {"samples": z})["samples"])


# --------------------------------------------------------------------------- start-up


def test_bundled_taesdxl_is_visible_to_cores_vae_loader(lua_dir, tmp_path):
    # a fresh ComfyUI has an empty models/vae_approx: the demo workflow's 'taesdxl' must still be offered
    asyncio.run(EXTENSION.get_node_list())
    approx = folder_paths.get_filename_list("vae_approx")
    # core's VAELoader.vae_list offers 'taesdxl' when names start with taesdxl_encoder. and taesdxl_decoder.
    assert any(n.startswith("taesdxl_encoder.") for n in approx) and any(n.startswith("taesdxl_decoder.") for n in approx)
    assert folder_paths.get_full_path("vae_approx", "taesdxl_decoder.safetensors") == os.path.join(
        folders.PACK_ASSETS, "taesdxl_decoder.safetensors"
    )
    # a user's own copy comes first; registering again changes nothing
    own = tmp_path / "ComfyUI" / "models" / "vae_approx"
    own.mkdir(parents=True)
    (own / "taesdxl_decoder.safetensors").write_bytes((ROOT / "lua_core" / "assets" / "taesdxl_decoder.safetensors").read_bytes())
    asyncio.run(EXTENSION.get_node_list())
    assert folder_paths.get_folder_paths("vae_approx") == [str(own), folders.PACK_ASSETS]
    assert folder_paths.get_full_path("vae_approx", "taesdxl_decoder.safetensors") == str(own / "taesdxl_decoder.safetensors")


def test_start_up_creates_models_lua(tmp_path):
    folder_paths.reset(str(tmp_path / "Fresh"))
    asyncio.run(EXTENSION.get_node_list())
    assert (tmp_path / "Fresh" / "models" / "lua").is_dir()


def test_schema_uses_newer_fields_only_where_the_core_has_them(monkeypatch):
    # 0.3.59 and 0.8.0 (and this stand-in) have neither field: the schema builds without them (TypeError before)
    loader, up = Loader.define_schema(), Upscale.define_schema()
    assert not hasattr(loader, "search_aliases") and not hasattr(up, "search_aliases")
    from comfy_api.latest import io

    class NewerSchema(io.Schema):
        def __init__(self, *args, search_aliases=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.search_aliases = search_aliases

    class NewerInt(io.Int.Input):
        def __init__(self, *args, advanced=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.advanced = advanced

    monkeypatch.setattr(io, "Schema", NewerSchema)
    monkeypatch.setattr(io.Int, "Input", NewerInt)
    loader, up = Loader.define_schema(), Upscale.define_schema()
    assert "LUA" in loader.search_aliases and "upscale latent" in up.search_aliases
    assert {i.id: getattr(i, "advanced", None) for i in up.inputs}["tile_size"] is True


# --------------------------------------------------------------------------- loading


@pytest.mark.parametrize(
    "name,container", [("m.safetensors", "safetensors"), ("m.sft", "safetensors"), ("m.pth", "pth")]
)
def test_loads_each_format(lua_dir, name, container):
    save_tiny(lua_dir / name, channels=16, family="flux1", container=container)
    handle = load(name)
    assert handle.model.channels == 16
    # a .pth has no metadata: only the official LUA-FLUX network is taken as FLUX.1 without it
    assert (handle.model.family.name if handle.model.family else None) == (None if container == "pth" else "flux1")
    assert handle.patcher.model.net is handle.model.net
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
    # optional: API prompts and workflows saved before it existed carry no value and still run
    assert loader["input_order"]["optional"] == ["decoder_matching"]
    assert inputs_of(Loader)["dtype"][1]["options"] == ["auto", "fp32", "bf16", "fp16"]
    matching = loader["input"]["optional"]["decoder_matching"][1]
    assert (matching["options"], matching["default"]) == (["on", "off"], "on")
    assert (up["name"], up["display_name"], up["category"]) == ("LUALatentUpscale", "Latent Upscale (LUA)", "latent/upscaling")
    assert up["output"] == ["LATENT"] and up["output_name"] == ["LATENT"]
    assert [t for t, _ in inputs_of(Upscale).values()] == ["LUA_MODEL", "LATENT", "FLOAT", "INT"]


def test_every_input_and_output_has_a_tooltip():
    for cls in (Loader, Upscale):
        info = node_info(cls)
        for name, (_, opts) in [kv for section in info["input"].values() for kv in section.items()]:
            assert opts.get("tooltip"), f"{cls.__name__}.{name} has no tooltip"
        assert all(info["output_tooltips"]) and info["description"]


def test_upscale_inputs_match_the_spec():
    req = inputs_of(Upscale)
    assert list(req) == ["lua_model", "samples", "scale_by", "tile_size"]
    assert {"default": 2.0, "min": 1.0, "max": 4.0, "step": 0.05}.items() <= req["scale_by"][1].items()
    assert req["tile_size"][1]["default"] == 0 and req["tile_size"][1]["min"] == 0
    assert "v1 models round down to whole attention windows" in req["tile_size"][1]["tooltip"]
    assert "1.0 returns an exact copy" in req["scale_by"][1]["tooltip"]


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


def test_scale_one_returns_an_exact_copy(sdxl_handle):
    x = torch.randn(1, 4, 8, 8)
    out = upscale(sdxl_handle, {"samples": x}, 1.0)["samples"]
    assert torch.equal(out, x) and out is not x


def test_console_names_the_model_as_users_know_it(lua_dir, caplog):
    save_tiny(lua_dir / "m.safetensors")
    with caplog.at_level(logging.INFO, logger="lua_latent_upscaler"):
        handle = load("m.safetensors")
    assert "LUA: loaded m.safetensors: LUA SDXL x2/x4 (v1)" in caplog.text
    # core logs `Requested to load <class name of patcher.model>`: before, 'SwinIRMultiHead'
    assert type(handle.patcher.model).__name__ == "LUA SDXL x2/x4 (v1)"
    assert sum(p.numel() for p in handle.patcher.model.parameters()) == sum(p.numel() for p in handle.model.net.parameters())


@pytest.mark.parametrize("channels", [4, 16, 128])
def test_video_latents_are_refused_without_naming_image_models(sdxl_handle, lua_dir, channels):
    # before: upscaled frame by frame by whatever image model had the same channel count
    save_tiny(lua_dir / "flux.safetensors", channels=16, family="flux1")
    with pytest.raises(LatentInputError) as err:
        upscale(sdxl_handle, {"samples": torch.randn(1, channels, 3, 8, 10)}, 1.5, 0)
    msg = str(err.value)
    assert msg.startswith(f"expected an image latent [B, C, h, w], got a 5-D video latent [1, {channels}, 3, 8, 10]")
    assert "installed LUA models" not in msg and "flux.safetensors" not in msg
    assert mm.load_calls == []


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
    assert "tile_size 8 rounded to 32 (multiples of 8 latent pixels, at least 32, for LUA SDXL x2/x4 (v1))" in caplog.text


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


def test_v2_model_through_the_nodes(lua_dir, caplog):
    """A v2 file (prior + residual) loads, upscales x2 and x4 (and x3 via the x4 head), and names its own tile rule."""
    if not (ROOT.parent / "shared" / "vae_approx").is_dir():
        pytest.skip("needs ../shared/vae_approx (CI has it)")
    new_v2_model(get_family("sd1"), width=8, blocks=1).save(lua_dir / "lua-v2.safetensors")
    handle = load("lua-v2.safetensors")
    latent = {"samples": torch.randn(1, 4, 12, 10)}
    for scale, size in ((2.0, (24, 20)), (4.0, (48, 40)), (3.0, (36, 30))):
        assert upscale(handle, latent, scale)["samples"].shape[-2:] == size
    with caplog.at_level(logging.INFO, logger="lua_latent_upscaler"):
        upscale(handle, {"samples": torch.randn(1, 4, 60, 60)}, 2.0, tile=20)
    assert "tile_size 20 rounded to 48 (multiples of 1 latent pixels, at least 48, for LUA SD1.x/SD2.x x2/x4 (v2" in caplog.text
