"""The v2 prior's learned pixel upscaler (lua_core/arch/pixel_upscaler.py) and its trainer (train-upscaler)."""

from __future__ import annotations

import math
import shutil
from dataclasses import asdict, replace
from itertools import islice
from types import SimpleNamespace

import pytest
import torch
from conftest import SHARED, VAE_APPROX

from lua_core import get_family, load_model, upscale_latent
from lua_core.arch.pixel_upscaler import PixelUpscaler, resize_pixels
from lua_core.model import new_v2_model, with_pixel_upscaler, without_pixel_upscaler
from lua_core.train.pixel_upscaler import (
    TILE_MARGIN,
    PairCrops,
    UpscalerTrainConfig,
    UpscalerTrainer,
    round_trip_mse,
    training_pairs,
)
from lua_core.train.prior_tiles import StepSampler

pytestmark = pytest.mark.skipif(not VAE_APPROX.is_dir(), reason="needs ../shared/vae_approx (CI has it)")


def test_an_untrained_upscaler_is_bicubic_tensor_for_tensor():
    pixels = torch.rand(2, 3, 24, 40)
    for scale in (2, 4):
        assert torch.equal(PixelUpscaler(scale, 16, 2)(pixels), resize_pixels(pixels, (24 * scale, 40 * scale)))


def test_an_upscaler_treats_an_image_edge_like_its_inside():
    """Replicate padding: on a flat colour every conv's output is flat up to the edges, so the output repeats one
    scale x scale cell everywhere (zero padding painted bands along the edges of flat images)."""
    torch.manual_seed(0)
    upscaler = PixelUpscaler(4, 16, 3)
    with torch.no_grad():
        torch.nn.init.normal_(upscaler.tail.weight, std=0.05)
        out = upscaler(torch.tensor([0.53, 0.70, 0.92]).view(1, 3, 1, 1).expand(1, 3, 20, 20))
    cell = out[..., :4, :4]
    assert cell.flatten(2).std(-1).max() > 1e-3  # the residual is really there (bicubic of a flat colour is flat)
    assert torch.allclose(out, cell.repeat(1, 1, 20, 20), atol=1e-6)


def test_a_highpass_upscaler_cannot_shift_brightness_but_keeps_its_detail():
    """With `highpass` the residual's broad part is taken out: a constant offset (what FLUX.1's x4 upscaler learnt,
    ruining a dark render) leaves bicubic as it was, while fine detail of the same size passes almost whole."""
    torch.manual_seed(0)
    pixels = torch.rand(1, 3, 32, 32) * 0.5 + 0.25  # no clamping anywhere near
    bicubic = resize_pixels(pixels, (128, 128))
    free, highpass = PixelUpscaler(4, 8, 1), PixelUpscaler(4, 8, 1, highpass=4.0)
    with torch.no_grad():
        for upscaler in (free, highpass):
            upscaler.tail.bias.fill_(0.05)
        assert torch.allclose(free(pixels), bicubic + 0.05, atol=1e-6)
        assert torch.allclose(highpass(pixels), bicubic, atol=1e-5)
        # a +-0.05 checkerboard of the output's own pixels: no broad part, so it passes almost unchanged
        checker = (torch.arange(16).view(4, 4) % 4 + torch.arange(16).view(4, 4) // 4) % 2 * 0.1 - 0.05
        for upscaler in (free, highpass):
            upscaler.tail.bias.copy_(checker.flatten().repeat(3))
        detail = highpass(pixels) - bicubic
        assert torch.allclose(detail, free(pixels) - bicubic, atol=2e-3) and detail.abs().max() > 0.049


def test_a_head_with_an_upscaler_starts_as_the_file_and_the_file_keeps_it(tmp_path):
    model = new_v2_model(get_family("sd3"), width=8, blocks=1, vae_approx=VAE_APPROX, refine=(1, 0.8))
    z = torch.randn(1, 16, 12, 12) * 0.5
    before = {s: upscale_latent(model, z, s) for s in (2, 4)}
    with_x2 = with_pixel_upscaler(model, 2, width=16, depth=2)
    assert with_x2.config.upscaler_scales == (2,) and set(with_x2.net.prior.upscalers) == {"x2"}
    assert torch.equal(upscale_latent(with_x2, z, 2), before[2])  # untrained: exactly the file it came from
    with torch.no_grad():
        torch.nn.init.normal_(with_x2.net.prior.upscalers["x2"].tail.weight, std=0.01)
    trained = upscale_latent(with_x2, z, 2)
    assert (trained - before[2]).abs().max() > 1e-3
    with_x2.save(tmp_path / "up.safetensors")
    loaded = load_model(tmp_path / "up.safetensors")
    assert torch.equal(upscale_latent(loaded, z, 2), trained)
    assert torch.equal(upscale_latent(loaded, z, 4), before[4])  # the other head's prior is bicubic as before
    assert "x2: bicubic + a learned pixel residual, width 16, depth 2" in loaded.info.describe()
    dropped = without_pixel_upscaler(loaded, 2)
    assert dropped.config.upscaler_scales == () and not list(dropped.net.prior.upscalers)
    assert torch.equal(upscale_latent(dropped, z, 2), before[2]) and without_pixel_upscaler(model, 2) is model
    with pytest.raises(ValueError, match="width 16, depth 2; a file's upscalers share them"):
        with_pixel_upscaler(loaded, 4, width=32, depth=5)
    # each upscaler has its own high-pass: x4 takes one without changing what x2 computes, and the file says so
    both = with_pixel_upscaler(loaded, 4, highpass=4.0)
    with torch.no_grad():
        torch.nn.init.normal_(both.net.prior.upscalers["x4"].tail.weight, std=0.01)
    assert (both.config.highpass_for(2), both.config.highpass_for(4)) == (0.0, 4.0)
    assert both.net.prior.upscalers["x4"].highpass == 4.0 and both.net.prior.upscalers["x2"].highpass == 0.0
    both.save(tmp_path / "both.safetensors")
    both_loaded = load_model(tmp_path / "both.safetensors")
    assert both_loaded.config == both.config and torch.equal(upscale_latent(both_loaded, z, 2), trained)
    assert torch.equal(upscale_latent(both_loaded, z, 4), upscale_latent(both, z, 4))
    assert "low frequencies out at none in x2, sigma 4 in x4" in both_loaded.info.describe()
    # one sigma for all is stored file-wide as before (older packs read it); the per-head key only where they differ
    assert with_pixel_upscaler(both, 2, highpass=4.0).config.upscaler_highpass_by_scale == ()
    assert "upscaler_highpass_by_scale" not in loaded.config.to_json()
    assert without_pixel_upscaler(both, 2).config.upscaler_highpass == 4.0
    with pytest.raises(ValueError, match="one \\(scale, sigma >= 0\\) at most per upscaler"):
        replace(both.config, upscaler_highpass_by_scale=((8, 1.0),))
    # its own head's upscaler may change: under another high-pass it is the warm start, under another shape fresh
    warm = with_pixel_upscaler(loaded, 2, highpass=4.0)
    assert warm.config.upscaler_highpass == 4.0 and "low frequencies out at sigma 4" in warm.info.describe()
    tail = "prior.upscalers.x2.tail.weight"
    assert torch.equal(warm.net.state_dict()[tail], loaded.net.state_dict()[tail])
    fresh = with_pixel_upscaler(loaded, 2, width=8, depth=1)
    assert not fresh.net.state_dict()[tail].any() and torch.equal(upscale_latent(fresh, z, 2), before[2])
    assert with_pixel_upscaler(loaded, 4).config.upscaler_width == 16  # None takes the file's shape
    with pytest.raises(ValueError, match="no x8 head"):
        with_pixel_upscaler(loaded, 8)


def bicubic_and_trained_mse(trainer: UpscalerTrainer) -> tuple[float, float]:
    """Squared error of bicubic and of the trained upscaler over the inside of every cached pair."""
    m, s = TILE_MARGIN, trainer.cfg.scale
    low = trainer.lows[:, :, m:-m, m:-m].float()
    high = trainer.highs[:, :, m * s : -m * s, m * s : -m * s].float()
    with torch.no_grad():
        bicubic = resize_pixels(low, tuple(high.shape[-2:]))
        trained = trainer.upscaler(low)
    b = trainer.border
    inner = (slice(None), slice(None), slice(b, -b), slice(b, -b))
    return (bicubic - high)[inner].square().mean().item(), (trained - high)[inner].square().mean().item()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-CUDA message cannot happen on a machine with CUDA")
def test_train_upscaler_on_a_missing_gpu_says_so_and_writes_nothing(tmp_path, capsys):
    from lua_core.cli import main
    from lua_core.devices import training_device

    assert training_device("auto").type == "cpu"  # auto: the GPU where there is one
    run = tmp_path / "run"
    cmd = ["train-upscaler", "--model", "m.safetensors", "--scale", "4", "--data", str(tmp_path), "--run-dir", str(run)]
    assert main([*cmd, "--device", "cuda"]) == 2
    assert "sees no CUDA GPU; use --device cpu" in capsys.readouterr().err and not run.exists()


def test_the_learning_rate_warms_up_then_follows_the_cosine():
    """Full rate from step one killed the last body layer of the SDXL x2 upscaler (Adam moves every weight by ~lr
    at first, whatever its gradient); the rate rises linearly over --warmup-steps, then decays as before."""
    cfg = UpscalerTrainConfig(model="m", scale=2, data=("d",), steps=1000, warmup_steps=200)
    factor = [UpscalerTrainer.lr_factor(SimpleNamespace(step=k, seconds=0.0, cfg=cfg)) for k in range(1000)]
    cosine = [0.5 * (1 + math.cos(math.pi * k / 1000)) for k in range(1000)]
    assert factor[0] == pytest.approx(1 / 200) and factor[99] == pytest.approx(0.5 * cosine[99])
    assert factor[199:] == pytest.approx(cosine[199:]) and all(a < b for a, b in zip(factor[:199], factor[1:200]))
    off = replace(cfg, warmup_steps=0)
    assert UpscalerTrainer.lr_factor(SimpleNamespace(step=0, seconds=0.0, cfg=off)) == 1.0
    with pytest.raises(ValueError, match="--warmup-steps -1"):
        replace(cfg, warmup_steps=-1)


def test_a_crop_the_loss_border_would_empty_is_refused_before_anything_is_written(tmp_path):
    """The loss leaves out (depth + 2) x scale output pixels per edge: a crop no larger than twice that trained
    nothing (an empty mean is NaN; the GPU kit's smoke did so over the bundled depth-6 upscalers), so it is refused up front."""
    new_v2_model(get_family("sd1"), width=8, blocks=1, vae_approx=VAE_APPROX).save(tmp_path / "base.safetensors")
    run = tmp_path / "run"
    cfg = UpscalerTrainConfig(
        model=str(tmp_path / "base.safetensors"), scale=2, data=(str(tmp_path),), run_dir=str(run), width=8,
        depth=6, tile=32, crop=16,
    )
    with pytest.raises(ValueError, match="--crop 16 x2 is 32 output pixels, but the loss leaves out 16 from each"):
        UpscalerTrainer(cfg, say=lambda *_: None)
    assert not run.exists()


def test_a_resumed_run_draws_the_crops_the_whole_run_would_have():
    cfg = UpscalerTrainConfig(model="m", scale=2, data=("d",), tile=40, crop=16, batch=4, seed=3)
    crops = PairCrops(torch.rand(5, 3, 40, 40), torch.rand(5, 3, 80, 80), cfg)
    whole_run = list(islice(iter(StepSampler(len(crops), 0, cfg.batch, cfg.seed)), 3 * cfg.batch))
    resumed = list(islice(iter(StepSampler(len(crops), 2, cfg.batch, cfg.seed)), cfg.batch))
    assert resumed == whole_run[2 * cfg.batch :] and len(set(whole_run)) == len(whole_run)  # each draw a new crop
    first, again = crops[resumed[0]], crops[resumed[0]]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert first[0].shape[-1] == 16 and first[1].shape[-1] == 32
    assert not torch.equal(crops[resumed[0]][0], crops[resumed[0] + len(crops)][0])  # same pair, another crop


def test_a_resume_keeps_the_runs_length_unless_one_is_given(tmp_path):
    """--resume without --minutes/--steps keeps the run's own length (a finished run then only exports); either flag
    given sets a new length, both fields from the call (steps > 0 overrides minutes, so a lone --minutes must clear
    the saved steps); a --highpass left out keeps the run's."""
    import argparse

    from lua_core.train.pixel_upscaler import add_arguments, run_config
    from lua_core.train.state import write_state

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    saved = UpscalerTrainConfig(model="first.safetensors", scale=2, data=("d",), run_dir=str(tmp_path), steps=2700,
                                minutes=10.0, highpass=4.0, width=48)  # fmt: skip
    write_state(tmp_path / "state.pt", {"config": asdict(saved)})
    base = ["--model", "later.safetensors", "--scale", "2", "--data", "d", "--run-dir", str(tmp_path), "--resume"]

    def resumed(*flags: str) -> UpscalerTrainConfig:
        cfg, resuming = run_config(parser.parse_args([*base, *flags]))
        assert resuming
        return cfg

    kept = resumed()
    assert (kept.steps, kept.minutes, kept.highpass, kept.width, kept.model) == (2700, 10.0, 4.0, 48, "later.safetensors")
    by_time = resumed("--minutes", "15")
    assert (by_time.steps, by_time.minutes) == (0, 15.0), "a lone --minutes must not be overridden by the saved steps"
    by_steps = resumed("--steps", "3000", "--highpass", "0")
    assert (by_steps.steps, by_steps.highpass, by_steps.width) == (3000, 0.0, 48)


def test_train_upscaler_learns_over_bicubic_resumes_and_leaves_every_other_weight(tmp_path, capsys, monkeypatch):
    photos = tmp_path / "photos"
    photos.mkdir()
    for path in sorted((SHARED / "data" / "photos" / "urban100").glob("*"))[:6]:
        shutil.copy(path, photos / path.name)
    torch.manual_seed(0)
    base = new_v2_model(get_family("sd1"), width=8, blocks=1, vae_approx=VAE_APPROX)
    base.save(tmp_path / "base.safetensors")
    cfg = UpscalerTrainConfig(
        model=str(tmp_path / "base.safetensors"), scale=2, data=(str(photos),), run_dir=str(tmp_path / "run"),
        minutes=0.15, width=16, depth=2, tile=64, crop=32, batch=8, lr=2e-3, synthetic_tiles=3,
        warmup_steps=10,  # a real run's 200 would be most of this one
    )
    trainer = UpscalerTrainer(cfg, say=lambda *_: None)
    assert trainer.lows.shape[-1] == 64 and trainer.highs.shape[-1] == 128
    assert trainer.lows.dtype == torch.float16 and len(trainer.lows) >= 2 + 3
    smooth = trainer.highs[-3:].float()  # the synthetic tiles come last: flat colours or gradients
    assert (smooth[..., 1:] - smooth[..., :-1]).abs().max() < 0.05 and (smooth[..., 1:, :] - smooth[..., :-1, :]).abs().max() < 0.05
    trainer.run()
    bicubic, trained = bicubic_and_trained_mse(trainer)
    assert trained < bicubic, f"after {trainer.step} steps: {trained} vs bicubic {bicubic}"
    trainer.export(tmp_path / "out.safetensors")

    again = UpscalerTrainer(replace(cfg, minutes=0.25), say=lambda *_: None)  # reads pairs.pt, resumes state.pt
    again.load_state()
    assert again.step == trainer.step and torch.equal(again.upscaler.tail.weight, trainer.upscaler.tail.weight)
    assert again.hardware == trainer.hardware is not None  # the machine that trained, kept for an export elsewhere
    again.run()
    assert again.step > trainer.step

    out = load_model(tmp_path / "out.safetensors")
    assert out.config.upscaler_scales == (2,)
    record = out.info.provenance["pixel_upscalers"]["x2"]
    assert record["trained_steps"] == trainer.step and record["loss"] == "mse" and record["data"] == ["photos"]
    shipped, new = base.net.state_dict(), out.net.state_dict()
    assert set(new) - set(shipped) == {k for k in new if k.startswith("prior.upscalers.x2.")}
    assert all(torch.equal(v, new[k]) for k, v in shipped.items())  # residual, heads and autoencoder bit for bit
    z = torch.randn(1, 4, 8, 8)
    assert torch.equal(upscale_latent(out, z, 4), upscale_latent(base, z, 4))

    # a resume may set a high-pass (the weights fit any); the record says from which step, and a later resume
    # without the flag keeps it
    from lua_core.cli import main

    cli = ["train-upscaler", "--model", cfg.model, "--scale", "2", "--data", str(photos), "--run-dir", cfg.run_dir,
           "--minutes", "0.25", "--resume"]  # fmt: skip
    # (an export-only resume on another machine names the one that trained)
    monkeypatch.setattr("lua_core.train.pixel_upscaler.training_hardware", lambda: "another machine")
    assert main([*cli, "--highpass", "4", "--export", str(tmp_path / "hp.safetensors")]) == 0
    assert load_model(tmp_path / "hp.safetensors").info.provenance["pixel_upscalers"]["x2"]["hardware"] == again.hardware
    assert main([*cli, "--export", str(tmp_path / "hp2.safetensors")]) == 0
    for name in ("hp", "hp2"):
        hp = load_model(tmp_path / f"{name}.safetensors")
        record = hp.info.provenance["pixel_upscalers"]["x2"]
        assert hp.config.upscaler_highpass == 4.0 and record["highpass"] == 4.0
        assert record["highpass_since_step"] == again.step == record["trained_steps"]
    assert "highpass" not in out.info.provenance["pixel_upscalers"]["x2"]
    # a resume puts the upscaler into the --model given (here a file that has since gained an x4 upscaler), not
    # into the file the run started from; a file of another family is refused
    grown = with_pixel_upscaler(base, 4, width=16, depth=2, highpass=4.0)
    with torch.no_grad():
        torch.nn.init.normal_(grown.net.prior.upscalers["x4"].tail.weight, std=0.01)
    grown.save(tmp_path / "grown.safetensors")
    model_flag = cli.index("--model") + 1
    into_grown = [*cli[:model_flag], str(tmp_path / "grown.safetensors"), *cli[model_flag + 1 :]]
    assert main([*into_grown, "--export", str(tmp_path / "both.safetensors")]) == 0
    both = load_model(tmp_path / "both.safetensors")
    assert both.config.upscaler_scales == (2, 4)
    for head, source in (("x2", load_model(tmp_path / "hp2.safetensors")), ("x4", grown)):
        assert torch.equal(both.net.prior.upscalers[head].tail.weight, source.net.prior.upscalers[head].tail.weight)
    # (an SD3 file whose x4 upscaler has another shape: the family is named, not the shape clash it would meet)
    sd3 = new_v2_model(get_family("sd3"), width=8, blocks=1, vae_approx=VAE_APPROX)
    with_pixel_upscaler(sd3, 4, width=8, depth=1).save(tmp_path / "sd3.safetensors")
    into_sd3 = [*cli[:model_flag], str(tmp_path / "sd3.safetensors"), *cli[model_flag + 1 :]]
    pairs_written = (tmp_path / "run" / "pairs.pt").stat().st_mtime_ns
    assert main(into_sd3) == 2
    err = capsys.readouterr().err
    assert "trained an upscaler of sd1 decodes" in err and "share them" not in err
    assert (tmp_path / "run" / "pairs.pt").stat().st_mtime_ns == pairs_written  # refused before anything was written
    # an upscaler the file refuses (x4 of another shape than its x2) is refused before any folder is made
    refused = tmp_path / "refused"
    clash = ["train-upscaler", "--model", str(tmp_path / "hp.safetensors"), "--scale", "4", "--data", str(photos),
             "--run-dir", str(refused), "--width", "8"]  # fmt: skip
    assert main(clash) == 2 and not refused.exists()



def test_round_trip_loss_trains_the_upscaler_for_what_survives_the_re_encode(tmp_path):
    """--loss-on round-trip: the loss is decode(encode(upscaled)) against HR, its gradient reaches the upscaler
    through the frozen autoencoder, and the run lowers it; settings that cannot work are refused up front."""
    with pytest.raises(ValueError, match="expected one of upscaled, round-trip"):
        UpscalerTrainConfig(model="m", scale=2, data=("d",), loss_on="decoded")
    with pytest.raises(ValueError, match="multiple of 8"):
        UpscalerTrainConfig(model="m", scale=2, data=("d",), crop=30, loss_on="round-trip")
    with pytest.raises(ValueError, match="--steps -1: expected a step count"):
        UpscalerTrainConfig(model="m", scale=2, data=("d",), steps=-1)
    photos = tmp_path / "photos"
    photos.mkdir()
    for path in sorted((SHARED / "data" / "photos" / "urban100").glob("*"))[:4]:
        shutil.copy(path, photos / path.name)
    torch.manual_seed(0)
    new_v2_model(get_family("sd1"), width=8, blocks=1, vae_approx=VAE_APPROX).save(tmp_path / "base.safetensors")
    cfg = UpscalerTrainConfig(
        model=str(tmp_path / "base.safetensors"), scale=2, data=(str(photos),), run_dir=str(tmp_path / "run"),
        steps=60, width=16, depth=2, tile=64, crop=32, batch=4, lr=2e-3, synthetic_tiles=2, loss_on="round-trip",
        warmup_steps=10,  # a real run's 200 would be longer than this whole run
    )
    trainer = UpscalerTrainer(cfg, say=lambda *_: None)
    assert trainer.border == (2 + 2) * 2 + 16
    m, prior = TILE_MARGIN, trainer.model.net.prior
    low, high = trainer.lows[:, :, m:-m, m:-m].float(), trainer.highs[:, :, 2 * m : -2 * m, 2 * m : -2 * m].float()
    loss = round_trip_mse(prior, 2, (0, 0.0), low[:1], high[:1], trainer.border)
    loss.backward()
    assert trainer.upscaler.tail.weight.grad.abs().sum() > 0  # through the frozen encoder and decoder
    assert all(p.grad is None for p in (*prior.encoder.parameters(), *prior.decoder.parameters()))
    trainer.upscaler.zero_grad(set_to_none=True)
    with torch.no_grad():
        before = round_trip_mse(prior, 2, (0, 0.0), low, high, trainer.border).item()
    trainer.run()
    with torch.no_grad():
        after = round_trip_mse(prior, 2, (0, 0.0), low, high, trainer.border).item()
    assert trainer.step == 60  # --steps: the same run on any machine (a time budget gave 50 steps under load and no gain)
    assert after < 0.99 * before, f"after {trainer.step} steps: {after} vs bicubic's round trip {before}"
    record = trainer.export(tmp_path / "out.safetensors").info.provenance["pixel_upscalers"]["x2"]
    assert record["loss"] == "mse after the tiny autoencoder's round trip"


def test_dark_fraction_darkens_that_share_of_the_same_image_tiles(tmp_path):
    """--dark-fraction: the same tiles as a run without it, that share of them scaled by one factor in [0.2, 1);
    the synthetic tiles stay as they were; a share outside [0, 1] is refused."""
    with pytest.raises(ValueError, match="between 0 and 1"):
        UpscalerTrainConfig(model="m", scale=2, data=("d",), dark_fraction=1.5)
    photos = tmp_path / "photos"
    photos.mkdir()
    for path in sorted((SHARED / "data" / "photos" / "urban100").glob("*"))[:5]:
        shutil.copy(path, photos / path.name)
    model = new_v2_model(get_family("sd1"), width=8, blocks=1, vae_approx=VAE_APPROX)
    cfg = UpscalerTrainConfig(model="m", scale=2, data=(str(photos),), tile=32, crop=16, tiles_per_image=4, synthetic_tiles=2)
    _, plain = training_pairs(model, cfg, say=lambda *_: None)
    lows, dark = training_pairs(model, replace(cfg, dark_fraction=0.5), say=lambda *_: None)
    assert dark.shape == plain.shape and lows.shape[0] == plain.shape[0]
    images = plain.shape[0] - 2
    ratio = dark[:images].float().flatten(1).sum(1) / plain[:images].float().flatten(1).sum(1)
    darkened = ratio < 0.999
    assert 0 < darkened.sum() < images and (ratio[darkened] >= 0.2 - 1e-3).all()
    for i in range(images):  # one factor per tile (fp16 rounding aside)
        assert torch.allclose(dark[i].float(), plain[i].float() * ratio[i], atol=2e-3)
    assert torch.equal(dark[images:], plain[images:])  # the synthetic tiles
