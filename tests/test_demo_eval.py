"""The one-command demo and the evaluation code behind the quality report."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, TRAIN_IMAGES, VAE_APPROX, make_model
from PIL import Image

from lua_core import demo
from lua_core.cli import main
from lua_core.data_split import is_validation
from lua_core.demo import DEFAULT_MODEL, LABELS, original_image
from lua_core.demo import METHODS as DEMO_METHODS
from lua_core.evaluation import METHODS, comparison_figure, detail_box, evaluate, held_out_images, hr_crop, outputs_for
from lua_core.imaging import bicubic_resize
from lua_core.metrics import psnr
from lua_core.model import load_model
from lua_core.tiny_ae import BUNDLED_DIR, default_search_dirs, find_tiny_ae_files, load_tiny_autoencoder

needs_shared = pytest.mark.skipif(not VAE_APPROX.is_dir(), reason="needs ../shared/vae_approx")


def test_bundled_model_is_shipped():
    assert DEFAULT_MODEL.is_file(), "models/lua-sdxl-small.safetensors must ship with the pack"


def test_the_sdxl_tiny_autoencoder_is_bundled_with_its_licence():
    found = find_tiny_ae_files(load_model(DEFAULT_MODEL).family, [BUNDLED_DIR])
    assert found == (BUNDLED_DIR / "taesdxl_encoder.safetensors", BUNDLED_DIR / "taesdxl_decoder.safetensors")
    assert default_search_dirs()[-1] == BUNDLED_DIR  # the fallback: any copy of the user's own comes first
    assert "MIT License" in (BUNDLED_DIR / "LICENSE-taesd.txt").read_text()
    notes = (BUNDLED_DIR / "README.md").read_text()
    assert "madebyollin" in notes and "MIT" in notes and "LICENSE-taesd.txt" in notes
    if VAE_APPROX.is_dir():  # the same bytes ComfyUI uses, not a re-export
        for path in found:
            assert path.read_bytes() == (VAE_APPROX / path.name).read_bytes()


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[Path, str]:
    """One demo run (output folder, stdout) on the bundled photo shrunk to 128 px, to keep the tests quick."""
    out = tmp_path_factory.mktemp("demo") / "out"
    stdout = io.StringIO()
    calls = iter(range(1, 1000))

    def numbered(fn, device, warm_up=True):  # every timed step reports its own number as its "time"
        return fn(), float(next(calls))

    with contextlib.redirect_stdout(stdout), pytest.MonkeyPatch.context() as mp:
        mp.setattr(demo, "timed", numbered)
        assert main(["demo", "--output", str(out), "--max-side", "128", "--vae-approx", str(BUNDLED_DIR)]) == 0
    return out, stdout.getvalue()


def test_demo_writes_real_pictures_with_every_baseline_and_its_psnr(demo_run):
    out, text = demo_run
    assert f"tiny autoencoder: taesdxl from {BUNDLED_DIR}" in text
    report = json.loads((out / "demo.json").read_text())
    assert report["original"] == [128, 128] and report["input"] == [32, 32] and report["latent"] == [1, 4, 4, 4]
    with Image.open(out / "input.png") as im:
        assert im.size == (32, 32)
    for scale in (2, 4):
        entry = report["scales"][f"x{scale}"]
        assert set(entry["psnr_db"]) == set(DEMO_METHODS) == {"lua", "pixel_bicubic", "latent_bicubic"}
        for method in DEMO_METHODS:
            with Image.open(out / f"{method}_x{scale}.png") as im:
                assert im.size == (32 * scale, 32 * scale)  # 2x and 4x the demo's input
            assert f"{LABELS[method]:<15} {entry['psnr_db'][method]:6.2f} dB" in text
        assert all(v >= 0 for step in entry["ms"].values() for v in step.values())
    with Image.open(out / "side_by_side.png") as im:
        # rows x2 and x4; panels: input (nearest), LUA, pixel bicubic, latent bicubic, original
        assert im.size == (5 * 128, (64 + 22) + (128 + 22))


def test_each_decode_is_timed_on_its_own_and_the_table_says_higher_is_better(demo_run):
    out, text = demo_run
    report = json.loads((out / "demo.json").read_text())
    for scale in ("x2", "x4"):
        ms = report["scales"][scale]["ms"]
        # before: latent bicubic reported the LUA decode's time (its own decode was not timed)
        assert ms["latent_bicubic"]["decode"] != ms["lua"]["decode"]
        steps = [v for step in ms.values() for v in step.values()]
        assert len(set(steps) - {ms["pixel_bicubic"]["decode"]}) == len(steps) - 1  # only the shared input decode repeats
    assert text.count("PSNR (dB, higher is better)") == 2


def test_demo_scores_match_the_evaluation_protocol(demo_run):
    """x4 is scored exactly like bench/quality.py; x2 against the original resized to the x2 size."""
    out, _ = demo_run
    report = json.loads((out / "demo.json").read_text())
    model = load_model(DEFAULT_MODEL)
    ae = load_tiny_autoencoder("sdxl", [BUNDLED_DIR])
    original = original_image(ROOT / "lua_core" / "assets" / "sample.png", 128, 32)
    x4 = outputs_for(model, ae, original, 4, ceiling=original)
    for method in DEMO_METHODS:
        expected = psnr(x4[method], original).item()
        assert report["scales"]["x4"]["psnr_db"][method] == pytest.approx(expected, abs=2e-3), method
    with Image.open(out / "lua_x2.png") as im:
        lua_x2 = torch.from_numpy(np.array(im)).permute(2, 0, 1)[None].float() / 255
    reference = bicubic_resize(original, (64, 64)).clamp(0, 1)
    # the PNG is 8-bit: its PSNR is within rounding of the float score
    assert psnr(lua_x2, reference).item() == pytest.approx(report["scales"]["x2"]["psnr_db"]["lua"], abs=0.05)


def test_demo_failures_are_one_line(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["demo", "--output", str(blocker)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err


def test_default_demo_output_is_git_ignored():
    import subprocess

    from lua_core.demo import DEFAULT_OUTPUT

    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    proc = subprocess.run(["git", "check-ignore", "-q", f"{DEFAULT_OUTPUT}/side_by_side.png"], cwd=ROOT)
    assert proc.returncode == 0, f"{DEFAULT_OUTPUT}/ (the demo's default output) must be in .gitignore"


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
