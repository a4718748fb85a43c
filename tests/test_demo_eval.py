"""The one-command demo and the evaluation code behind the quality report."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, TRAIN_IMAGES, VAE_APPROX, make_model
from PIL import Image

from lua_core.demo import DEFAULT_MODEL
from lua_core.demo import main as demo_main
from lua_core.evaluation import METHODS, comparison_figure, detail_box, evaluate, held_out_images, hr_crop, outputs_for
from lua_core.tiny_ae import load_tiny_autoencoder
from lua_core.train.data import is_validation

needs_shared = pytest.mark.skipif(not VAE_APPROX.is_dir(), reason="needs ../shared/vae_approx")


def test_bundled_model_is_shipped():
    assert DEFAULT_MODEL.is_file(), "models/lua-sdxl-small.safetensors must ship with the pack"


@needs_shared
def test_demo_with_tiny_autoencoder(tmp_path, capsys):
    assert demo_main(["--output", str(tmp_path), "--vae-approx", str(VAE_APPROX)]) == 0
    out = capsys.readouterr().out
    assert "tiny autoencoder: taesdxl" in out and "x2: [1, 4, 32, 32] -> [1, 4, 64, 64] in" in out and " ms" in out
    with Image.open(tmp_path / "input.png") as im:
        assert im.size == (256, 256)
    with Image.open(tmp_path / "lua_x2.png") as im:
        assert im.size == (512, 512)
    with Image.open(tmp_path / "lua_x4.png") as im:
        assert im.size == (1024, 1024)
    for name in ("latent_bicubic_x2.png", "latent_bicubic_x4.png", "side_by_side.png"):
        assert (tmp_path / name).is_file()


def test_demo_without_autoencoder_uses_the_bundled_latent(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "lua_core", "demo", "--no-autoencoder", "--output", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "bundled sample latent" in proc.stdout and "latent preview" in proc.stdout
    with Image.open(tmp_path / "lua_x4.png") as im:
        assert im.size == (128, 128)  # 32x32 latent x4, shown one pixel per latent pixel


@needs_shared
@pytest.mark.skipif(not TRAIN_IMAGES.is_dir(), reason="needs ../shared/data/train")
def test_evaluation_uses_the_held_out_split_and_reports_every_method():
    images = held_out_images(TRAIN_IMAGES, 0.08)
    assert 20 <= len(images) <= 60
    assert all(is_validation(p, TRAIN_IMAGES, 0.08) for p in images)
    model = make_model(channels=4, family="sdxl", input_skip="bicubic")
    ae = load_tiny_autoencoder("sdxl", [VAE_APPROX])
    report = evaluate(model, ae, images[:2], max_side=128)
    # a freshly initialised bicubic-skip model is exactly latent bicubic (x2: 8x8 latents, no padding)
    x2 = report["scales"]["x2"]["mean"]
    assert x2["lua"]["psnr"] == pytest.approx(x2["latent_bicubic"]["psnr"], abs=1e-3)
    for scale in ("x2", "x4"):
        mean = report["scales"][scale]["mean"]
        assert set(mean) == {*METHODS, "ceiling"}
        assert all(10 < v["psnr"] < 60 and 0 < v["ssim"] <= 1 for v in mean.values())
        assert mean["ceiling"]["psnr"] > mean["latent_nearest-exact"]["psnr"]


@needs_shared
def test_outputs_have_the_hr_size():
    ae = load_tiny_autoencoder("sdxl", [VAE_APPROX])
    hr = hr_crop(ROOT / "lua_core" / "assets" / "sample.png", 96)
    assert hr.shape == (1, 3, 96, 96)
    outs = outputs_for(make_model(), ae, hr, 4)
    assert all(v.shape == hr.shape and torch.isfinite(v).all() for v in outs.values())


@needs_shared
def test_comparison_figure_has_one_row_per_scale_and_a_column_per_method(tmp_path):
    ae = load_tiny_autoencoder("sdxl", [VAE_APPROX])
    sample = ROOT / "lua_core" / "assets" / "sample.png"
    out = comparison_figure(make_model(), ae, sample, tmp_path / "crops.png", crop=32, max_side=64)
    with Image.open(out) as im:
        assert im.size == (5 * 32 * 3, 2 * (32 * 3 + 18))  # HR, LUA, 2 latent baselines, pixel bicubic; x2 and x4
        # the HR column is the most detailed 32 px window of the 64 px crop, zoomed 3x with nearest neighbour
        full = hr_crop(sample, 64)
        y0, x0 = detail_box(full, 32)
        assert 0 <= y0 <= 32 and 0 <= x0 <= 32
        hr = full[0, :, y0 : y0 + 32, x0 : x0 + 32]
        expected = (hr.permute(1, 2, 0) * 255 + 0.5).byte().numpy()
        got = np.asarray(im.crop((0, 18, 96, 114)).resize((32, 32), Image.NEAREST))
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_detail_box_finds_the_textured_window():
    hr = torch.full((1, 3, 64, 64), 0.5)
    hr[..., 40:56, 8:24] = torch.rand(3, 16, 16)  # the only texture
    y0, x0 = detail_box(hr, 16)
    assert abs(y0 - 40) <= 4 and abs(x0 - 8) <= 4
