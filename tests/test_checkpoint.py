"""Checkpoint containers, config inference, conversion, and every refusal message."""

from __future__ import annotations

import json
import os
import pickle
import traceback
from pathlib import Path

import pytest
import torch
from conftest import make_model
from safetensors.torch import save_file

from lua_core import CheckpointError, LUAConfig, convert_checkpoint, load_model, upscale_latent
from lua_core.checkpoint import FORMAT_NAME, infer_config, read_state_dict


def test_official_pth_loads_strictly_and_converts_identically(official_pth, official_state_dict, tmp_path):
    model = load_model(official_pth)
    assert model.config == LUAConfig()
    assert model.info.inferred and model.family.name == "flux1"
    for k, v in model.net.state_dict().items():
        assert torch.equal(v, official_state_dict[k]), k
    out = tmp_path / "lua_flux.safetensors"
    info = convert_checkpoint(official_pth, out)
    assert info.provenance["converted_from"] == "lua_flux.pth"
    converted = load_model(out)
    assert not converted.info.inferred and converted.family.name == "flux1"
    x = torch.randn(1, 16, 20, 18, generator=torch.Generator().manual_seed(0))
    a = upscale_latent(model, x, 2)
    b = upscale_latent(converted, x, 2)
    assert torch.equal(a, b)


@pytest.mark.parametrize("container", ["params_ema", "params", "bare", "both"])
def test_container_variants(tmp_path, container):
    model = make_model(channels=16, family="flux1")
    sd = model.net.state_dict()
    other = make_model(channels=16, family="flux1", seed=5).net.state_dict()
    obj = (
        {"params_ema": sd, "params": other} if container == "both" else ({container: sd} if container != "bare" else sd)
    )
    path = tmp_path / "m.pth"
    torch.save(obj, path)
    loaded = load_model(path)
    for k, v in loaded.net.state_dict().items():
        assert torch.equal(v, sd[k]), f"{container}: {k} did not come from the expected entry"


def test_ddp_prefix_is_stripped(tmp_path):
    sd = make_model(channels=16).net.state_dict()
    path = tmp_path / "ddp.pth"
    torch.save({"params": {"module." + k: v for k, v in sd.items()}}, path)
    assert load_model(path).config.in_chans == 16


def test_inferred_config_matches_official(official_state_dict):
    assert infer_config(official_state_dict) == LUAConfig()


def test_safetensors_metadata_round_trip(tmp_path):
    model = make_model(channels=4, family="sd1", scales=(2,))
    model.info.provenance = {"data": "unit test", "steps": 3}
    path = tmp_path / "lua-sd1.safetensors"
    model.save(path)
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta["lua.format"] == FORMAT_NAME
    assert meta["lua.family"] == "sd1"
    assert json.loads(meta["lua.scales"]) == [2]
    assert meta["lua.channels"] == "4"
    assert LUAConfig.from_dict(json.loads(meta["lua.config"])) == model.config
    loaded = load_model(path)
    assert loaded.family.name == "sd1" and loaded.scales == (2,)
    assert loaded.info.provenance == {"data": "unit test", "steps": 3}


def test_load_with_dtype_and_convert_dtype(tmp_path):
    model = make_model(channels=16, family="flux1")
    pth = tmp_path / "m.pth"
    torch.save({"params_ema": model.net.state_dict()}, pth)
    half = tmp_path / "m16.safetensors"
    convert_checkpoint(pth, half, family="flux1", dtype=torch.float16)  # not the official shapes: family by hand
    assert half.stat().st_size < pth.stat().st_size
    loaded = load_model(half, dtype="bf16")
    assert loaded.dtype == torch.bfloat16
    idx = dict(loaded.net.named_buffers())["layers.0.residual_group.blocks.0.attn.relative_position_index"]
    assert idx.dtype == torch.int64


# --------------------------------------------------------------------------- refusals


def _save(tmp_path: Path, sd: dict, name: str = "x.safetensors") -> Path:
    path = tmp_path / name
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


def test_pixel_swinir_is_refused(tmp_path):
    sd = {
        "conv_first.weight": torch.zeros(60, 3, 3, 3),
        "layers.0.residual_group.blocks.0.attn.qkv.weight": torch.zeros(180, 60),
        "conv_before_upsample.0.weight": torch.zeros(64, 60, 3, 3),
        "upsample.0.weight": torch.zeros(256, 64, 3, 3),
        "conv_last.weight": torch.zeros(3, 64, 3, 3),
    }
    with pytest.raises(CheckpointError, match="pixel-space SwinIR model .3-channel input., not a LUA latent model"):
        load_model(_save(tmp_path, sd))


def test_esrgan_is_refused(tmp_path):
    sd = {"conv_first.weight": torch.zeros(64, 3, 3, 3), "RRDB_trunk.0.RDB1.conv1.weight": torch.zeros(32, 64, 3, 3)}
    with pytest.raises(CheckpointError, match="looks like a pixel-space ESRGAN/RRDB upscaler, not a LUA latent model"):
        load_model(_save(tmp_path, sd))


def test_tiny_autoencoder_is_refused(tmp_path):
    sd = {"0.weight": torch.zeros(64, 3, 3, 3), "1.conv.0.weight": torch.zeros(64, 64, 3, 3)}
    with pytest.raises(CheckpointError, match="tiny autoencoder .* belongs in models/vae_approx"):
        load_model(_save(tmp_path, sd))


def test_unrecognised_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match=r"unrecognised model \(1 tensors, e.g. foo.bar\)"):
        load_model(_save(tmp_path, {"foo.bar": torch.zeros(2)}))


def test_truncated_pth(tmp_path, official_pth):
    data = official_pth.read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="truncated PyTorch checkpoint"):
        load_model(path)


def test_truncated_safetensors(tmp_path):
    full = tmp_path / "full.safetensors"
    make_model().save(full)
    data = full.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match="truncated or corrupt safetensors file"):
        load_model(cut)


class NotATensor:
    def __init__(self) -> None:
        self.payload = "arbitrary code could run here"


def refusal(name: str, detail: str) -> str:
    return (
        f"pickle refused: {name} holds Python objects other than tensors and plain containers (torch's "
        f"weights-only check found {detail}), so it is refused on purpose and nothing in it was run. LUA "
        "checkpoints hold only tensors and never need that: use a LUA .safetensors file, or download this model "
        "again from where it was published"
    )


def assert_refused(path: Path, detail: str) -> None:
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    assert str(err.value) == refusal(path.name, detail)
    # torch's advice to load it unsafely reaches the user nowhere, not even through the exception chain
    shown = "".join(traceback.format_exception(err.value))
    assert "weights_only" not in shown and "safe_globals" not in shown and "trusted source" not in shown


def test_pickle_with_objects_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"params_ema": {"conv_first.weight": torch.zeros(1)}, "extra": NotATensor()}, path)
    assert_refused(path, f"unsupported GLOBAL {__name__}.NotATensor")


class RunsAShellCommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_would_run_code_is_refused_by_name_and_never_run(tmp_path):
    path, marker = tmp_path / "lua_flux.pth", tmp_path / "ran"
    torch.save({"params_ema": {"conv_first.weight": torch.zeros(1)}, "x": RunsAShellCommand(marker)}, path)
    assert_refused(path, f"unsupported GLOBAL {os.system.__module__}.system")  # posix.system on Linux and macOS
    assert not marker.exists()


def test_legacy_pickle_with_objects_is_refused(tmp_path):
    path = tmp_path / "legacy.pth"
    with open(path, "wb") as f:
        pickle.dump({"x": NotATensor()}, f, protocol=2)
    assert_refused(path, f"unsupported GLOBAL {__name__}.NotATensor")


def test_empty_and_garbage_and_missing_files(tmp_path):
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty \(0 bytes\)"):
        load_model(empty)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello world, not a model")
    with pytest.raises(CheckpointError, match="neither a safetensors file nor a PyTorch checkpoint"):
        load_model(junk)
    with pytest.raises(CheckpointError, match="model file not found"):
        load_model(tmp_path / "nope.safetensors")


def test_layout_mismatch_names_keys(tmp_path):
    sd = make_model().net.state_dict()
    sd.pop("norm.weight")
    with pytest.raises(CheckpointError, match=r"does not match the LUA layout.*missing \['norm.weight'\]"):
        load_model(_save(tmp_path, sd))


def test_dict_without_state_dict(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"epoch": 3, "optimizer": {"lr": 1.0}}, path)
    with pytest.raises(CheckpointError, match="found a dict with keys 'epoch', 'optimizer'"):
        load_model(path)


def test_newer_format_version_is_refused(tmp_path):
    model = make_model()
    path = tmp_path / "new.safetensors"
    model.save(path)
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata())
    meta["lua.format_version"] = "99"
    save_file(load_file(str(path)), str(path), metadata=meta)
    with pytest.raises(CheckpointError, match="uses LUA file format v99.*Update the node pack"):
        load_model(path)


def test_four_channel_conversion_needs_family(tmp_path):
    pth = tmp_path / "sd.pth"
    torch.save({"params_ema": make_model(channels=4).net.state_dict()}, pth)
    with pytest.raises(CheckpointError, match=r"ambiguous; pass --family \(sd1, sdxl\)"):
        convert_checkpoint(pth, tmp_path / "o.safetensors")
    with pytest.raises(CheckpointError, match="--family flux1 needs 16-channel latents"):
        convert_checkpoint(pth, tmp_path / "o.safetensors", family="flux1")
    info = convert_checkpoint(pth, tmp_path / "o.safetensors", family="sdxl")
    assert info.family.name == "sdxl"


def test_read_state_dict_gives_metadata(tmp_path):
    path = tmp_path / "m.safetensors"
    make_model().save(path)
    sd, meta = read_state_dict(path)
    assert "conv_first.weight" in sd and meta["lua.family"] == "sdxl"


def test_damaged_metadata_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "m.safetensors"
    make_model().save(path)
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata())
    for key, value in (("lua.family", "sdxxl"), ("lua.provenance", "{not json"), ("lua.format_version", "one")):
        broken = {**meta, key: value}
        save_file(load_file(str(path)), str(tmp_path / "b.safetensors"), metadata=broken)
        with pytest.raises(CheckpointError, match="b.safetensors"):
            load_model(tmp_path / "b.safetensors")


def test_a_newer_files_unknown_settings_ask_for_an_update_not_a_re_export(tmp_path):
    path = tmp_path / "m.safetensors"
    make_model().save(path)
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata())
    config = {**json.loads(meta["lua.config"]), "future_step": 3}
    save_file(load_file(str(path)), str(tmp_path / "n.safetensors"), metadata={**meta, "lua.config": json.dumps(config)})
    with pytest.raises(CheckpointError) as e:
        load_model(tmp_path / "n.safetensors")
    assert str(e.value) == (
        "n.safetensors uses settings this version of the pack does not know (future_step); it was written by a "
        "newer version. Update the node pack."
    )
