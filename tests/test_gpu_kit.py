"""bench/gpu_kit.py: the CPU smoke run works and writes the files a GPU session will read back."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
KIT = ROOT / "bench" / "gpu_kit.py"
sys.path.insert(0, str(KIT.parent))

import gpu_kit  # noqa: E402

SHARED = ROOT.parent / "shared"


def tiny_gpu_data(dest: Path) -> Path:
    """The layout of tools/prepare_gpu_data.py with three training images, two hold-out crops and taesdxl."""
    from PIL import Image

    images = sorted((SHARED / "data" / "train" / "pypi").rglob("*.png"))[:5]
    for sub in ("train", "holdout", "vae_approx"):
        (dest / sub).mkdir(parents=True)
    for i, path in enumerate(images):
        with Image.open(path) as im:
            im.convert("RGB").resize((192, 160)).save(dest / ("train" if i < 3 else "holdout") / f"{i}.jpg")
    for part in ("encoder", "decoder"):
        name = f"taesdxl_{part}.safetensors"
        (dest / "vae_approx" / name).write_bytes((SHARED / "vae_approx" / name).read_bytes())
    return dest


@pytest.fixture(scope="module")
def smoke_dir(tmp_path_factory) -> Path:
    """One CPU smoke run of the whole kit, the training sprint included (CI runs it on every submission)."""
    out = tmp_path_factory.mktemp("kit")
    data = tiny_gpu_data(tmp_path_factory.mktemp("gpu_data"))
    cmd = [sys.executable, str(KIT), str(out), "--smoke", "--train", "sdxl", "--train-upscalers", "sdxl:2"]
    cmd += ["--train-data", str(data)]
    proc = subprocess.run(cmd + ["--train-minutes", "3"], capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_smoke_writes_few_plainly_named_files(smoke_dir):
    names = sorted(p.name for p in smoke_dir.iterdir())
    assert names == [
        "gpu-kit-profile.txt", "gpu-kit.json", "gpu-kit.txt", "train-sdxl-x2.safetensors", "train-sdxl.safetensors"
    ]
    assert len(names) <= 8 and all(p.stat().st_size < 16 * 2**20 for p in smoke_dir.iterdir())  # device limits
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", n) for n in names)  # what the device tool brings back


def test_every_file_names_the_device_and_torch(smoke_dir):
    res = json.loads((smoke_dir / "gpu-kit.json").read_text())
    assert res["kit"] == "lua-gpu-kit" and isinstance(res["kit_version"], int)
    assert res["torch"] == torch.__version__
    assert res["device"].startswith("cpu (") and res["gpu"] is None and res["smoke"] is True
    for name in ("gpu-kit.txt", "gpu-kit-profile.txt"):
        first = (smoke_dir / name).read_text().splitlines()[0]
        assert res["device"] in first and f"torch {torch.__version__}" in first


def test_engine_rows_cover_every_dtype_and_both_implementations(smoke_dir):
    rows = json.loads((smoke_dir / "gpu-kit.json").read_text())["engine"]
    assert {(r["dtype"], r["impl"]) for r in rows} == {(d, i) for d in gpu_kit.DTYPES for i in ("ours", "reference")}
    assert {r["scale"] for r in rows} == {2, 4}
    for r in rows:
        assert isinstance(r["shape"], list) and len(r["shape"]) == 4
        assert isinstance(r["median_ms"], float) and r["median_ms"] > 0 and r["repeats"] >= 1
        assert r["finite"] is True
        tolerance = 1e-5 if r["dtype"] in ("fp32", "tf32") else 2e-2  # the stated tolerances (tests/test_engine.py)
        assert r["rel_l2_vs_fp32_reference"] <= tolerance
        if r["impl"] == "ours":
            assert isinstance(r["speedup_vs_reference"], float)


def test_pipeline_tiling_compile_and_targets_are_reported(smoke_dir):
    res = json.loads((smoke_dir / "gpu-kit.json").read_text())
    pipe = res["pipeline"]
    for key in ("lua_x2_ms", "decode_big_ms", "decode_small_ms", "pixel_swinir_x2_ms", "latent_path_ms", "pixel_path_ms"):
        assert isinstance(pipe[key], float) and pipe[key] > 0, key
    assert pipe["pixels_big"] == 2 * pipe["pixels_small"]
    assert isinstance(pipe["lua_share_of_decode"], float)
    tiling = {r["dtype"]: r for r in res["tiling"]}
    assert set(tiling) == {"fp32", "bf16"}
    assert tiling["fp32"]["plan"]["tile"] < tiling["fp32"]["shape"][-1], "the smoke budget must force real tiles"
    assert isinstance(tiling["fp32"]["max_abs_diff"], float) and tiling["fp32"]["rel_l2_diff"] <= 1e-3
    assert res["graph"] == {"skipped": "needs CUDA"}
    assert [c["mode"] for c in res["compile"]] == ["default"] and res["compile"][0]["compiled"] is True
    assert res["compile"][0]["rel_l2_compiled_vs_eager_same_dtype"] <= 1e-5
    assert res["sdpa"]["fused_kernels_accept_our_attention"] is True and res["sdpa"]["profile_top"]
    cost = res["cost"]
    for key in ("v2_x2_s", "v1_x2_s", "sdxl_vae_decode_s", "v2_share_of_decode", "v1_share_of_decode"):
        assert isinstance(cost[key], float) and cost[key] > 0, key
    decodes = (cost["sdxl_vae_decode_first_s"], cost["sdxl_vae_decode_last_s"])  # timed first and last: drift shows
    assert cost["sdxl_vae_decode_s"] == pytest.approx(sum(decodes) / 2, abs=1e-4)
    assert cost["v2_share_of_decode"] == pytest.approx(cost["v2_x2_s"] / cost["sdxl_vae_decode_s"], rel=1e-3)
    assert cost["v2_model"].startswith("models/lua-sdxl-small.safetensors") and cost["target_v2_share"] == 0.15
    for x in ("x2", "x4"):  # every bundled file at both scales; matched heads again with decoder_matching off
        assert all(b[f"{x}_s"] > 0 and b[f"{x}_share_of_decode"] > 0 for b in cost["bundled"]), x
        matched = [b for b in cost["bundled"] if b[f"{x}_match_steps"]]
        assert matched and all(b[f"{x}_s_without_match"] > 0 and f"{x}_share_of_decode_without_match" in b for b in matched)
    assert set(res["targets"]) == {
        "v2_share_of_sdxl_decode",
        "x2_128_bf16_ms",
        "x2_128_bf16_speedup_vs_reference",
        "lua_share_of_decode_at_output_size",
        "tiled_x4_256_fp32_max_abs_diff_under_8gb",
    }
    for t in res["targets"].values():
        assert set(t) >= {"value", "target", "met"} and t["met"] in (True, False, None)
    assert "Targets:" in (smoke_dir / "gpu-kit.txt").read_text()


def test_flux_decoder_has_the_flux_vae_decoder_size():
    """49,545,475 parameters: diffusers' AutoencoderKL decoder in the FLUX.1 configuration has exactly as many
    (checked once with diffusers 0.42.1, which also gave the same outputs to 4e-6 with the weights mapped)."""
    with torch.device("meta"):
        dec = gpu_kit.FluxDecoder()
    assert sum(p.numel() for p in dec.parameters()) == 49_545_475
    small = gpu_kit.FluxDecoder(ch=32)
    assert small(torch.randn(1, 16, 4, 6)).shape == (1, 3, 32, 48)


def test_training_sprint_smoke_trains_exports_and_scores_every_gate(smoke_dir):
    from lua_core import load_model

    kit = json.loads((smoke_dir / "gpu-kit.json").read_text())
    res = kit["train"]["sdxl"]
    assert res["train"]["rc"] == 0 and res["eval"]["rc"] == 0 and "error" not in res, res
    assert " train-v2 --family sdxl " in res["command"] and " --prior-from " in res["command"]
    assert list(kit["section_s"])[0] == "train"  # the training runs before the benchmark sections
    model = load_model(smoke_dir / "train-sdxl.safetensors")
    assert model.family.name == "sdxl" and model.info.arch == "reencode_residual"  # a v2 model, prior included
    shipped = load_model(gpu_kit.ROOT / "models" / "lua-sdxl-small.safetensors")
    for k, v in shipped.net.prior.state_dict().items():  # trained over the bundled file's prior, unchanged
        assert torch.equal(model.net.prior.state_dict()[k], v), k
    assert res["steps"] == 4 and [r["step"] for r in res["log"]] == [1, 4]  # the first, every 100th and the last
    assert all(r["loss"] > 0 for r in res["log"]) and res["log"][0]["lr"] > res["log"][-1]["lr"] >= 0  # cosine
    assert res["quality"]["n_images"] == 2
    for scale in ("x2", "x4"):
        gates = res["quality"]["scales"][scale]["gates"]
        assert set(gates) == {"beats_decode_resize_encode", "beats_pixel_bicubic", "goal_over_pixel_bicubic"}
        assert res["quality"]["scales"][scale]["psnr"]["lua"] > 0


def test_train_section_calls_the_training_cli_with_todays_flags(tmp_path, monkeypatch):
    from lua_core.cli import build_parser

    calls = []
    monkeypatch.setattr(gpu_kit, "_run_all", lambda cmds, timeout: [calls.append((c, timeout)) or {"rc": 0} for c in cmds])
    data = tmp_path / "data"
    for sub in ("vae_approx", "train", "photos"):
        (data / sub).mkdir(parents=True)
    args = gpu_kit.argparse.Namespace(
        train_data=str(data),
        train_run_dir=str(tmp_path / "run"),
        train_vae_approx="",
        train_minutes=2.0,
        smoke=False,
    )
    info = gpu_kit.section_train(["sdxl", "flux2"], args, tmp_path / "out")
    assert [c[0][c[0].index("--family") + 1] for c in calls] == ["sdxl", "flux2"]  # one process per family
    cmd, timeout = calls[0]
    assert cmd[1:4] == ["-m", "lua_core", "train-v2"] and timeout == 2.0 * 60 + 150
    assert info["sdxl"]["error"].startswith("no exported model")  # the fake run exported nothing, and says so
    parsed = build_parser().parse_args(cmd[3:])
    assert parsed.family == "sdxl" and parsed.data == [str(data / "train"), str(data / "photos")]
    assert parsed.prior_from == str(gpu_kit.ROOT / "models" / "lua-sdxl-small.safetensors") and not parsed.vae_approx
    assert parsed.minutes == 2.0 and parsed.steps == 0  # the cosine schedule spans the time budget
    assert (parsed.width, parsed.blocks, parsed.batch) == (80, 10, 64) and parsed.run_dir == str(tmp_path / "run" / "sdxl")
    assert (parsed.tile, parsed.tiles_per_image, parsed.crop, parsed.context) == (256, 8, 128, 8)
    with pytest.raises(ValueError, match="at most 5 runs"):
        gpu_kit.section_train(["sdxl", "sd1", "sd3", "flux1"], args, tmp_path / "out", ["sdxl:4", "sd1:4"])

    calls.clear()
    info = gpu_kit.section_train([], args, tmp_path / "out", ["sd1:4"])
    (cmd, _), = calls
    assert cmd[1:4] == ["-m", "lua_core", "train-upscaler"] and info["sd1-x4"]["family"] == "sd1"
    parsed = build_parser().parse_args(cmd[3:])
    bundled = gpu_kit.ROOT / "models" / "lua-sd1-small.safetensors"
    assert parsed.model == str(bundled) and parsed.scale == 4 and parsed.minutes == 2.0 and parsed.batch == 64
    assert cmd[-len(shape := gpu_kit.shape_of_file(bundled, gpu_kit.GPU_UPSCALER)) :] == shape
    assert parsed.tile * parsed.scale <= 384  # tools/prepare_gpu_data.py's images: a tile must fit one


def test_an_upscaler_sprint_takes_the_files_own_shape_once_it_has_upscalers(tmp_path):
    from lua_core import get_family
    from lua_core.model import new_v2_model, with_pixel_upscaler

    fresh = new_v2_model(get_family("sd1"), width=8, blocks=1, vae_approx=SHARED / "vae_approx")
    fresh.save(tmp_path / "fresh.safetensors")
    with_pixel_upscaler(fresh, 4, width=16, depth=2).save(tmp_path / "with-x4.safetensors")
    assert gpu_kit.shape_of_file(tmp_path / "fresh.safetensors", gpu_kit.GPU_UPSCALER) == gpu_kit.GPU_UPSCALER
    flags = gpu_kit.shape_of_file(tmp_path / "with-x4.safetensors", gpu_kit.GPU_UPSCALER)
    parsed = gpu_kit.argparse.ArgumentParser()
    for name in ("--width", "--depth", "--batch", "--tile"):
        parsed.add_argument(name, type=int)
    known, _ = parsed.parse_known_args(flags)
    assert (known.width, known.depth, known.batch, known.tile) == (None, None, 64, 80)  # a file's upscalers: one shape


def test_upscaler_sprint_smoke_trains_the_bundled_files_upscaler_and_keeps_every_other_weight(smoke_dir):
    from lua_core import load_model

    res = json.loads((smoke_dir / "gpu-kit.json").read_text())["train"]["sdxl-x2"]
    assert res["train"]["rc"] == 0 and "error" not in res and res["steps"] >= 1, res
    assert "skipped" in res["eval"]  # chosen and scored at home
    model = load_model(smoke_dir / "train-sdxl-x2.safetensors")
    bundled = load_model(gpu_kit.ROOT / "models" / "lua-sdxl-small.safetensors")
    assert model.config.upscaler_scales == tuple(sorted({2, *bundled.config.upscaler_scales}))  # x4's kept
    assert model.info.provenance["pixel_upscalers"]["x2"]["trained_steps"] >= 1
    shipped, new = bundled.net.state_dict(), model.net.state_dict()
    x2 = {k for k in new if k.startswith("prior.upscalers.x2.")}
    # the head's upscaler is new, or (the bundled SDXL file has one since 2026-12-07) its warm start
    assert x2 and set(new) - set(shipped) <= x2
    assert all(torch.equal(new[k], v) for k, v in shipped.items() if k not in x2)  # every other weight kept
    # and it trained: finite weights, moved from the warm start (an empty loss gave NaN everywhere)
    assert all(new[k].isfinite().all() for k in x2)
    assert any(k not in shipped or not torch.equal(new[k], shipped[k]) for k in x2)


def test_prepare_gpu_data_keeps_a_share_of_large_images_at_native_resolution(tmp_path):
    """tools/prepare_gpu_data.py: --native-share of the larger images become a native-resolution square cut."""
    import numpy as np
    from PIL import Image

    sys.path.insert(0, str(ROOT / "tools"))
    from prepare_gpu_data import training_view

    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (200, 240, 3), dtype=np.uint8)).save(data / f"large{i}.png")
    Image.fromarray(rng.integers(0, 256, (160, 170, 3), dtype=np.uint8)).save(data / "small.png")

    def sizes(share: float) -> dict[str, tuple[int, int]]:
        out = tmp_path / f"out{share}"
        cmd = [sys.executable, str(ROOT / "tools" / "prepare_gpu_data.py"), "--data", str(data), "--photos", ""]
        cmd += ["--out", str(out), "--short-side", "160", "--native-share", str(share)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr
        return {p.name.split(".")[0]: Image.open(p).size for p in (out / "train").iterdir()}

    half, none, every = sizes(0.5), sizes(0.0), sizes(1.0)
    large = [k for k in none if k.startswith("large")]
    assert len(large) >= 10 and none["small"] == half["small"] == every["small"] == (170, 160)  # kept as they are
    assert all(none[k] == (192, 160) for k in large) and all(every[k] == (160, 160) for k in large)
    assert {half[k] for k in large} == {(192, 160), (160, 160)}  # both views in the set
    im = Image.fromarray(rng.integers(0, 256, (100, 120, 3), dtype=np.uint8))
    cut = np.asarray(training_view(im, "any/name.png", 60, 1.0))
    assert any(np.array_equal(cut, np.asarray(im)[y : y + 60, x : x + 60]) for y in range(41) for x in range(61))
    assert np.array_equal(np.asarray(training_view(im, "any/name.png", 60, 1.0)), cut)  # the same cut on every run
