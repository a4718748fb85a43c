"""Training pipeline: overfit check, exact resume, 2-process DDP, --help, bad data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import FrozenInstanceError, fields
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TRAIN_IMAGES, VAE_APPROX, free_port
from PIL import Image
from safetensors.torch import load_file

from lua_core import load_model, upscale_latent
from lua_core.baselines import resize_latent
from lua_core.data_split import scan_images
from lua_core.metrics import psnr
from lua_core.tiny_ae import load_tiny_autoencoder
from lua_core.train.config import TrainConfig
from lua_core.train.data import ALIGN, cache_key
from lua_core.train.optim import gradient_shares
from lua_core.train.schedule import FIT_AFTER_STEPS
from lua_core.train.state import config_with_resume
from lua_core.train.trainer import MultiHead, Trainer

pytestmark = pytest.mark.skipif(not TRAIN_IMAGES.is_dir() or not VAE_APPROX.is_dir(), reason="needs ../shared")

TINY = dict(
    family="sdxl",
    vae_approx=str(VAE_APPROX),
    crop=128,
    tile=160,
    max_tiles_per_image=2,
    synthetic_tiles=2,
    embed_dim=16,
    depths="1,1",
    num_heads="2,2",
    head_num_feat=16,
    batch_size=4,
    val_fraction=0.0,
    log_every=1,
    val_every=10_000,
    save_every=10_000,
    threads=2,
    amp="off",
)


@pytest.fixture(scope="module")
def few_images(tmp_path_factory) -> Path:
    """A handful of real training images (copied so the folder is small and fixed)."""
    src = sorted(p for p in (TRAIN_IMAGES / "pypi").rglob("*") if p.suffix.lower() in (".webp", ".png", ".jpg"))[:5]
    dst = tmp_path_factory.mktemp("images")
    for i, p in enumerate(src):
        shutil.copy(p, dst / f"{i}{p.suffix}")
    return dst


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def make_cfg(data: Path, run: Path, cache: Path, **kw) -> TrainConfig:
    return TrainConfig(data=str(data), run_dir=str(run), cache_dir=str(cache), **{**TINY, **kw})


def whole_split(dataset) -> dict[str, torch.Tensor]:
    """Every crop of a LatentCrops dataset stacked into one batch."""
    samples = [dataset[i] for i in range(len(dataset))]
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


def read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_tiny_model_overfits_and_beats_latent_bicubic(few_images, cache_dir, tmp_path):
    run = tmp_path / "run"
    cfg = make_cfg(few_images, run, cache_dir, stage_steps="60,0,0", lr=2e-3, single_head_fraction=0.0, ema_decay=0.9)
    trainer = Trainer(cfg, say=lambda m: None)
    crops = whole_split(trainer.train_set)

    def full_set_loss(net) -> float:
        with torch.no_grad():
            return (MultiHead(net).eval()({2: crops["z_lr2"]})[2] - crops["z_hr"]).abs().mean().item()

    before = full_set_loss(trainer.net)
    exported = trainer.run()
    assert len([r for r in read_log(run) if "loss" in r]) == 60
    assert full_set_loss(trainer.ema.module) < 0.95 * before, "latent L1 over the training crops did not fall"

    model = load_model(exported)
    assert model.family.name == "sdxl" and model.info.provenance["steps"] == 60
    with torch.no_grad():
        z = crops["z_lr2"]
        lua = psnr(trainer.ae.decode(upscale_latent(model, z, 2)), crops["hr_px"]).mean().item()
        bicubic = (
            psnr(trainer.ae.decode(resize_latent(z, tuple(crops["z_hr"].shape[-2:]), "bicubic")), crops["hr_px"])
            .mean()
            .item()
        )
    assert lua > bicubic + 0.2, f"LUA {lua:.2f} dB vs latent bicubic {bicubic:.2f} dB on the training crops"


def test_resume_continues_exactly(few_images, cache_dir, tmp_path):
    base = dict(stage_steps="4,3,3", decode_crop=8, single_head_fraction=0.3)
    whole = tmp_path / "whole"
    Trainer(make_cfg(few_images, whole, cache_dir, **base), say=lambda m: None).run()

    split = tmp_path / "split"
    first = Trainer(make_cfg(few_images, split, cache_dir, stop_after=5, **base), say=lambda m: None)
    assert first.run() is None and first.step == 5
    cfg = config_with_resume(make_cfg(few_images, split, cache_dir, **base), {"stop_after": 0})
    assert cfg.stop_after == 0
    second = Trainer(cfg, resume=True, say=lambda m: None)
    assert second.step == 5
    second.run()

    a = {r["step"]: r["loss"] for r in read_log(whole) if "loss" in r}
    b = {r["step"]: r["loss"] for r in read_log(split) if "loss" in r}
    assert sorted(a) == sorted(b) == list(range(1, 11))
    assert b[6] == a[6], "the first step after resuming must repeat the uninterrupted run exactly"
    assert all(a[s] == b[s] for s in a)
    wa = load_model(whole / "lua-sdxl.safetensors").net.state_dict()
    wb = load_model(split / "lua-sdxl.safetensors").net.state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_config_is_frozen_and_a_time_budget_fit_lives_in_the_trainer(few_images, cache_dir, tmp_path):
    run = tmp_path / "run"

    def cfg_of(**kw) -> TrainConfig:
        return make_cfg(few_images, run, cache_dir, stage_steps="40,10,50", fit_minutes=1.0, **kw)

    cfg = cfg_of()
    with pytest.raises(FrozenInstanceError):
        cfg.stage_steps = (1, 1, 1)
    trainer = Trainer(cfg, say=lambda m: None)
    trainer.step = FIT_AFTER_STEPS
    # 0.5 s/step after 15 s: 30 + (0.92 * 60 s - 15 s) / 0.5 = 110.4 steps fit, so every stage x1.104
    assert trainer._fit_schedule(sec_per_step=0.5, elapsed=15.0) == 110
    assert trainer.stages == (44, 11, 55) and trainer.total_steps == 110
    assert trainer.cfg is cfg and cfg == cfg_of() and cfg.stage_steps == (40, 10, 50)
    assert trainer.sched.lr_lambdas[0](44 + 6) == cfg.lr_gamma  # the LR milestones follow the fitted stage II

    trainer.save_state()
    state = torch.load(run / "state.pt", map_location="cpu", weights_only=True)
    assert state["stages"] == [44, 11, 55] and tuple(state["config"]["stage_steps"]) == (40, 10, 50)
    resumed = Trainer(config_with_resume(cfg_of(), {}), resume=True, say=lambda m: None)
    assert resumed.step == FIT_AFTER_STEPS and resumed.stages == (44, 11, 55)
    assert resumed.cfg.stage_steps == (40, 10, 50)
    asked = Trainer(config_with_resume(cfg_of(), {"stage_steps": "20,5,25"}), resume=True, say=lambda m: None)
    assert asked.stages == (20, 5, 25), "stage steps given on --resume replace the saved schedule"

    # state files from before the split kept the fitted schedule in their config and had no "stages"
    del state["stages"]
    state["config"]["stage_steps"] = (44, 11, 55)
    torch.save(state, run / "state.pt")
    old = Trainer(config_with_resume(cfg_of(), {}), resume=True, say=lambda m: None)
    assert old.stages == (44, 11, 55) and old.cfg.stage_steps == (44, 11, 55)


def test_two_process_gloo_ddp_ends_with_identical_replicas(few_images, cache_dir, tmp_path):
    run = tmp_path / "ddp"
    args = [
        "--data",
        str(few_images),
        "--run-dir",
        str(run),
        "--cache-dir",
        str(cache_dir),
        "--stage-steps",
        "3,2,2",
        "--decode-crop",
        "8",
        "--threads",
        "1",
        "--single-head-fraction",
        "0.3",
    ]
    for k, v in TINY.items():
        if k not in ("threads",):
            args += ["--" + k.replace("_", "-"), str(v)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        "-m",
        "lua_core",
        "train",
        *args,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = [r for r in read_log(run) if "replica_checksums" in r]
    assert final and final[-1]["replicas_identical"] is True and len(final[-1]["replica_checksums"]) == 2
    assert (run / "lua-sdxl.safetensors").is_file()
    steps = [r for r in read_log(run) if "loss" in r]
    assert steps[-1]["samples_per_sec"] > 0 and steps[-1]["step"] == 7


def test_help_documents_every_option():
    proc = subprocess.run(
        [sys.executable, "-m", "lua_core", "train", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        assert flag in text, flag
        assert " ".join(f.metadata["help"].split())[:40] in text, f"help text of {flag}"
    for extra in ("--preset", "--config", "--resume", "--export-only"):
        assert extra in text


def test_bad_data_is_reported_up_front(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no usable training images in .*empty: 0 image files found"):
        scan_images(empty, 128)
    with pytest.raises(FileNotFoundError, match="training data folder not found"):
        scan_images(tmp_path / "missing", 128)

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    Image.new("RGB", (40, 40)).save(mixed / "tiny.png")
    Image.new("RGBA", (300, 200), (10, 200, 30, 128)).save(mixed / "ok.png")
    scan = scan_images(mixed, 128)
    assert [p.name for p in scan.usable] == ["ok.png"]
    assert scan.summary() == "1 usable images, 1 skipped (unreadable), 1 skipped (smaller than 128px)"


def test_cli_errors_before_any_work(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "lua_core", "train", "--crop", "100"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "--data is required" in proc.stderr and "crop 100 must be a multiple of 32" in proc.stderr
    empty = tmp_path / "e"
    empty.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lua_core",
            "train",
            "--data",
            str(empty),
            "--vae-approx",
            str(VAE_APPROX),
            "--run-dir",
            str(tmp_path / "r"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "no usable training images" in proc.stderr and "Traceback" not in proc.stderr


def test_crops_are_every_aligned_window_of_every_tile(few_images, cache_dir, tmp_path):
    trainer = Trainer(make_cfg(few_images, tmp_path / "run", cache_dir), say=lambda m: None)
    data = trainer.train_set
    counts = trainer.index["counts"]
    assert counts["synthetic"] == TINY["synthetic_tiles"] and counts["train"] > counts["synthetic"]
    assert data.per_side == (TINY["tile"] - TINY["crop"]) // ALIGN + 1 == 2
    assert len(data) == counts["train"] * data.per_side**2
    shard = load_file(str(cache_dir / trainer.index["shards"]["train"][0]))
    tile = 1  # second tile of the first shard: its four crops, in raster order
    for pos, (y, x) in enumerate([(0, 0), (0, 32), (32, 0), (32, 32)]):
        sample = data[tile * 4 + pos]
        assert torch.equal(sample["hr_px"], shard["hr_px"][tile, :, y : y + 128, x : x + 128].float() / 255)
        assert torch.equal(sample["z_hr"], shard["z_hr"][tile, :, y // 8 : (y + 128) // 8, x // 8 : (x + 128) // 8])
        assert torch.equal(sample["z_lr2"], shard["z_lr2"][tile, :, y // 16 : y // 16 + 8, x // 16 : x // 16 + 8])
        assert torch.equal(sample["z_lr4"], shard["z_lr4"][tile, :, y // 32 : y // 32 + 4, x // 32 : x // 32 + 4])


def test_cache_key_follows_image_content_not_timestamps(few_images, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(few_images, copy)
    ae = load_tiny_autoencoder("sdxl", [VAE_APPROX])
    images = sorted(copy.iterdir())
    cfg = make_cfg(copy, tmp_path / "run", tmp_path / "cache")
    key = cache_key(cfg, images, ae)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # float reductions change with the thread count; the key must not
    try:
        assert cache_key(cfg, images, ae) == key
    finally:
        torch.set_num_threads(threads)
    os.utime(images[0], (1_000_000, 1_000_000))  # a restored or copied file: new mtime, same bytes
    assert cache_key(cfg, images, ae) == key
    images[0].write_bytes(images[0].read_bytes() + b"\0")  # same size class, different content
    assert cache_key(cfg, images, ae) != key


def test_every_enabled_loss_term_moves_the_gradient(few_images, cache_dir, tmp_path):
    """On a real batch and the v1 SDXL weights (shipped until 2026-11-28), no enabled term is under 1 % of the gradient."""
    shipped = ROOT / "tests" / "data" / "lua-sdxl-small-v1.safetensors"
    model_fields = {k: TrainConfig().__dict__[k] for k in ("embed_dim", "depths", "num_heads", "head_num_feat")}
    cfg = make_cfg(few_images, tmp_path / "run", cache_dir, init_from=str(shipped), batch_size=8, **model_fields)
    trainer = Trainer(cfg, say=lambda m: None)
    batch = next(trainer._batches)
    params = list(trainer.net.parameters())
    expected = {0: {"latent_l1", "latent_fft"}, 1: {"latent_l1", "latent_fft", "down_l1", "hf_l1"}}
    expected[2] = {"pix_l1", "pix_fft", "edge"}
    for stage, names in expected.items():
        shares = gradient_shares(trainer.loss_terms(batch, [2, 4], stage), params)
        assert set(shares) == names
        weak = {k: v for k, v in shares.items() if v < 0.01}
        assert not weak, f"stage {stage}: terms under 1 % of the gradient: {weak} (all shares {shares})"
