"""v2 models: frozen re-encode prior + learned residual (lua_core/arch/reencode_residual.py)."""

from __future__ import annotations

import contextlib
import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from conftest import SHARED, VAE_APPROX
from safetensors import safe_open

from lua_core import get_family, load_model, upscale_latent
from lua_core.arch.reencode_residual import MATCH_LR, ReencodeResidualConfig, smooth_weight
from lua_core.checkpoint import identify_foreign, read_state_dict, sha256_file
from lua_core.engine import plan_tiles
from lua_core.errors import CheckpointError
from lua_core.imaging import bicubic_resize, load_rgb, to_tensor
from lua_core.metrics import psnr
from lua_core.model import (
    new_v2_model,
    with_decoder_match,
    with_pixel_upscaler,
    with_prior_refinement,
    without_decoder_match,
)
from lua_core.tiny_ae import load_tiny_autoencoder

pytestmark = pytest.mark.skipif(not VAE_APPROX.is_dir(), reason="needs ../shared/vae_approx (CI has it)")

FAMILIES = ("sd1", "sdxl", "sd3", "flux1", "flux2")


def smooth_image(side: int, seed: int = 0) -> torch.Tensor:
    """A smooth random colour field [1, 3, side, side] in [0, 1] (cheap stand-in for a photo's low frequencies)."""
    g = torch.Generator().manual_seed(seed)
    return bicubic_resize(torch.rand(1, 3, 6, 6, generator=g), (side, side)).clamp(0, 1)


def gradient_image(side: int) -> torch.Tensor:
    """A diagonal colour gradient: any seam between tiles would show as a line across it."""
    t = torch.linspace(0, 1, side)
    ramp = (t[:, None] + t[None, :]) / 2
    return torch.stack([ramp, 1 - ramp, 0.3 + 0.4 * ramp])[None]


def randomised_residual(model, seed: int = 0, std: float = 0.02):
    """Give the zero-initialised heads small random weights, so tests exercise the residual path too."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for head in model.net.heads.values():
            head.weight.copy_(torch.randn(head.weight.shape, generator=g) * std)
    return model


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("scale", [2, 4])
def test_untrained_model_is_exactly_decode_bicubic_encode(family, scale):
    model = new_v2_model(get_family(family), vae_approx=VAE_APPROX)
    ae = load_tiny_autoencoder(family, [VAE_APPROX])
    hr = smooth_image(128, seed=scale)
    z = ae.encode(bicubic_resize(hr, (128 // scale, 128 // scale)).clamp(0, 1))
    with torch.no_grad():  # the pixel route, as bench/quality.py's "reencode" baseline computes it
        reference = ae.encode(bicubic_resize(ae.decode(z).clamp(0, 1), (128, 128)).clamp(0, 1))
    out = upscale_latent(model, z, scale)
    fam = get_family(family)
    assert out.shape == reference.shape == (1, fam.channels, 128 // fam.spatial_factor, 128 // fam.spatial_factor)
    assert torch.equal(out, reference)


@pytest.mark.parametrize("family", ["sd3", "flux2"])
@pytest.mark.parametrize("scale", [2, 4])
def test_untrained_refined_model_is_decode_bicubic_encode_then_back_projection(family, scale):
    model = new_v2_model(get_family(family), vae_approx=VAE_APPROX, refine=(2, 0.8))
    ae = load_tiny_autoencoder(family, [VAE_APPROX])
    hr = smooth_image(128, seed=scale)
    z = ae.encode(bicubic_resize(hr, (128 // scale, 128 // scale)).clamp(0, 1))
    with torch.no_grad():  # back-projection written out in raw latent space, with the public autoencoder
        target = ae.encode(bicubic_resize(ae.decode(z).clamp(0, 1), (128, 128)).clamp(0, 1))
        reference = target
        for _ in range(2):
            reference = reference + 0.8 * (target - ae.encode(ae.decode(reference).clamp(0, 1)))
    out = upscale_latent(model, z, scale)
    assert out.shape == reference.shape
    assert (out - reference).abs().max() <= 1e-4 * reference.abs().max()
    assert (out - target).abs().max() > 1e-2 * target.abs().max()  # the refinement really moved the prior
    assert "1 back-projection" not in model.info.describe() and "2 back-projection step(s)" in model.info.describe()


def test_one_head_can_refine_its_prior_on_its_own_and_the_file_keeps_it(tmp_path):
    """A head whose residual is switched off may take the prior setting best for the prior alone
    (refine_by_scale); the other heads keep the prior their residual was trained over."""
    from dataclasses import replace

    model = randomised_residual(new_v2_model(get_family("sd3"), width=8, blocks=1, vae_approx=VAE_APPROX, refine=(1, 0.8)))
    torch.nn.init.zeros_(model.net.heads["x4"].weight)  # x4 ships as the prior alone
    torch.nn.init.zeros_(model.net.heads["x4"].bias)
    mixed = with_prior_refinement(model, {4: (2, 0.5)})
    ae = load_tiny_autoencoder("sd3", [VAE_APPROX])
    z = ae.encode(smooth_image(32, seed=1))
    assert torch.equal(upscale_latent(mixed, z, 2), upscale_latent(model, z, 2))  # x2: prior and residual as before
    with torch.no_grad():  # x4: two back-projection steps at rate 0.5, written out with the public autoencoder
        target = ae.encode(bicubic_resize(ae.decode(z).clamp(0, 1), (128, 128)).clamp(0, 1))
        reference = target
        for _ in range(2):
            reference = reference + 0.5 * (target - ae.encode(ae.decode(reference).clamp(0, 1)))
    out = upscale_latent(mixed, z, 4)
    assert (out - reference).abs().max() <= 1e-4 * reference.abs().max()
    assert not torch.equal(out, upscale_latent(model, z, 4))
    assert mixed.net.progress_calls(4) > mixed.net.progress_calls(2)  # the extra step is a unit of progress

    mixed.save(tmp_path / "mixed.safetensors")
    loaded = load_model(tmp_path / "mixed.safetensors")
    assert loaded.config.refine_by_scale == ((4, 2, 0.5),) and "(x4: 2 step(s) at rate 0.5)" in loaded.info.describe()
    assert torch.equal(upscale_latent(loaded, z, 4), out)
    assert with_prior_refinement(loaded, {4: (1, 0.8)}).config.refine_by_scale == ()  # back to the file-wide one
    with pytest.raises(ValueError, match="one entry at most per head"):
        replace(model.config, refine_by_scale=((8, 1, 0.5),))
    with pytest.raises(ValueError, match="x4: refine steps 1 / rate 1.5"):
        replace(model.config, refine_by_scale=((4, 1, 1.5),))


def test_saved_file_is_self_contained_and_lossless(tmp_path):
    model = randomised_residual(new_v2_model(get_family("sdxl"), vae_approx=VAE_APPROX))
    path = tmp_path / "v2.safetensors"
    model.save(path)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        prior_dtypes = {f.get_tensor(k).dtype for k in f.keys() if k.startswith("prior.")}
    assert meta["lua.format_version"] == "2" and meta["lua.arch"] == "reencode_residual"
    assert json.loads(meta["lua.prior"]) == {
        "kind": "reencode",
        "autoencoder": "taesdxl",
        "resize": "bicubic",
        "source": "vae_approx",
    }
    assert prior_dtypes == {torch.bfloat16}  # the source files' precision: stored exactly, no rounding
    loaded = load_model(path)
    for k, v in model.net.state_dict().items():
        assert torch.equal(loaded.net.state_dict()[k], v), k
    z = torch.randn(1, 4, 12, 12, generator=torch.Generator().manual_seed(0))
    assert torch.equal(upscale_latent(loaded, z, 2), upscale_latent(model, z, 2))
    assert "v2: taesdxl re-encode prior + residual" in loaded.info.describe()


def test_v2_keys_are_recognised_and_damage_is_named(tmp_path):
    model = new_v2_model(get_family("sd1"), vae_approx=VAE_APPROX)
    path = tmp_path / "v2.safetensors"
    model.save(path)
    sd, meta = read_state_dict(path)
    assert identify_foreign(sd) is None
    from lua_core.checkpoint import build_network

    del sd["trunk.0.conv1.weight"]
    with pytest.raises(CheckpointError, match=r"does not match the LUA layout.*missing \['trunk.0.conv1.weight'\]"):
        build_network(sd, meta, "v2.safetensors")
    with pytest.raises(CheckpointError, match="reads up to v2. Update the node pack"):
        build_network(sd, {**meta, "lua.format_version": "3"}, "v2.safetensors")


def test_prior_is_frozen_and_only_the_residual_trains():
    model = new_v2_model(get_family("sdxl"), vae_approx=VAE_APPROX)
    trainable = {n for n, p in model.net.named_parameters() if p.requires_grad}
    assert trainable and not any(n.startswith("prior.") for n in trainable)
    assert all(n.split(".")[0] in ("stems", "trunk", "heads") for n in trainable)


TILING_CASES = [  # (family, prior refinement, image, pixel upscaler): a trained-like residual; a refined prior
    # reruns D and E; a (random) learned pixel upscaler runs inside each tile's prior
    ("sdxl", (0, 0.0), "gradient", False),
    ("sdxl", (0, 0.0), "photo", False),
    ("sd3", (1, 0.8), "photo", True),
]


@pytest.mark.parametrize("family,refine,image,upscaler", TILING_CASES)
@pytest.mark.parametrize("scale", [2, 4])
def test_tiled_and_untiled_decode_alike_through_the_prior(family, refine, image, upscaler, scale):
    model = randomised_residual(new_v2_model(get_family(family), vae_approx=VAE_APPROX, refine=refine), std=0.002)
    if upscaler:
        model = with_pixel_upscaler(model, scale)
        with torch.no_grad():
            torch.nn.init.normal_(model.net.prior.upscalers[f"x{scale}"].tail.weight, std=0.01)
    ae = load_tiny_autoencoder(family, [VAE_APPROX])
    size = {2: (384, 1536), 4: (256, 2560)}[scale]  # input latents 24x96 and 8x80: 48-pixel tiles cut them 3 and 2 ways
    if image == "photo":
        photo = to_tensor(load_rgb(sorted((SHARED / "data" / "photos" / "urban100").glob("*"))[0]))
        hr = bicubic_resize(photo, size).clamp(0, 1)
    else:
        hr = bicubic_resize(gradient_image(64), size).clamp(0, 1)
    z = ae.encode(bicubic_resize(hr, (size[0] // scale, size[1] // scale)).clamp(0, 1))
    plan = plan_tiles(model, 1, *z.shape[-2:], scale, 48, None, None)
    assert (plan.tile, plan.overlap) == (48, 24)  # the smallest tile, with the default overlap
    whole = upscale_latent(model, z, scale, tile_size=10_000)
    calls = []
    tiled = upscale_latent(model, z, scale, tile_size=48, progress=lambda d, t: calls.append((d, t)))
    # one progress unit per conv call of every tile (a refinement step reruns the prior's convs)
    assert len(calls) == calls[-1][1] > model.net.progress_calls(scale), "must really tile"
    with torch.no_grad():
        a, b = ae.decode(whole).clamp(0, 1), ae.decode(tiled).clamp(0, 1)
    assert abs(psnr(a, hr).item() - psnr(b, hr).item()) <= 0.05
    # a seam is a line: no pixel row or column of the difference may average more than 1/255
    diff = (a - b).abs().mean(1)[0]
    assert max(diff.mean(0).max().item(), diff.mean(1).max().item()) <= 1 / 255


def matched_sd1_on_a_smooth_image():
    """(base, base with x2 decoder matching, its tiny AE, the latent of a smooth 64 px image, its x2 bicubic pixels)."""
    # the stem and trunk start random: unseeded, the matching gain (2.0-2.45 dB) would depend on the test order
    torch.manual_seed(0)
    base = randomised_residual(new_v2_model(get_family("sd1"), width=8, blocks=1, vae_approx=VAE_APPROX), std=0.05)
    ae = load_tiny_autoencoder("sd1", [VAE_APPROX])
    z = ae.encode(smooth_image(64, seed=5))
    with torch.no_grad():
        bicubic = bicubic_resize(ae.decode(z).clamp(0, 1), (128, 128)).clamp(0, 1)
    return base, with_decoder_match(base, {2: (10, 0.1, 0.05)}), ae, z, bicubic


def test_decoder_matching_pulls_smooth_areas_to_the_bicubic_pixels_and_leaves_texture(tmp_path):
    """match_by_scale: where the bicubic pixels are flat, the output latent is stepped until the tiny decoder
    gives them back (the decoder's grain goes); textured areas keep what prior + residual decode to."""
    base, matched, ae, z, bicubic = matched_sd1_on_a_smooth_image()
    with torch.no_grad():
        before, after = (ae.decode(upscale_latent(m, z, 2)).clamp(0, 1) for m in (base, matched))
    assert psnr(after, bicubic).item() >= psnr(before, bicubic).item() + 2  # the painted grain is gone
    assert torch.equal(upscale_latent(matched, z, 4), upscale_latent(base, z, 4))  # x4 is not matched

    half = torch.cat([smooth_image(64, seed=6)[..., :32], torch.rand(1, 3, 64, 32, generator=torch.Generator())], -1)
    zh = ae.encode(half)  # left half smooth, right half noise
    with torch.no_grad():
        up = bicubic_resize(ae.decode(zh).clamp(0, 1), (128, 128)).clamp(0, 1)
        outs = [base.net.to_scaled(upscale_latent(m, zh, 2)) for m in (base, matched)]
    untouched = F.max_pool2d(F.avg_pool2d(smooth_weight(up, 0.1), 8), 3, 1, 1) == 0
    assert untouched[..., 10:].float().mean() > 0.5 and not untouched[..., :6].any()
    assert torch.equal(*(o.masked_select(untouched) for o in outs))  # textured latent pixels exactly as they were
    assert not torch.equal(*(o.masked_select(~untouched) for o in outs))

    matched.save(tmp_path / "matched.safetensors")
    with torch.inference_mode():  # as in ComfyUI: loaded and run under inference mode, autograd inside still works
        loaded = load_model(tmp_path / "matched.safetensors")
        out = upscale_latent(loaded, z, 2)
    assert loaded.config.match_by_scale == ((2, 10, 0.1, 0.05),)
    assert "x2 matched to the decoder where smooth (10 steps of 0.05, sigma 0.1)" in loaded.info.describe()
    assert torch.allclose(out, upscale_latent(matched, z, 2), atol=1e-5)
    assert with_decoder_match(loaded, {2: (0, 0.0, 0.0)}).config.match_by_scale == ()  # steps 0: off again
    with pytest.raises(ValueError, match="one \\(scale, steps >= 1, sigma > 0, step > 0\\) at most per head"):
        replace(base.config, match_by_scale=((8, 10, 0.1, 0.05),))
    with pytest.raises(ValueError, match="is not \\[scale, steps, sigma, step\\]"):
        replace(base.config, match_by_scale=((2, 10),))


def test_decoder_matching_takes_its_step_from_the_file_and_older_entries_the_default():
    """A [scale, steps, sigma] entry (files written before the step was stored) means a step of MATCH_LR; a
    smaller step moves the latent less."""
    base = randomised_residual(new_v2_model(get_family("sd1"), width=8, blocks=1, vae_approx=VAE_APPROX), std=0.05)
    stored = {**json.loads(base.config.to_json()), "match_by_scale": [[2, 3, 0.1]]}  # as an older file holds it
    default = with_decoder_match(base, {2: (3, 0.1, MATCH_LR)})
    assert ReencodeResidualConfig.from_dict(stored) == default.config
    assert default.config.match_by_scale == ((2, 3, 0.1, MATCH_LR),)
    z = load_tiny_autoencoder("sd1", [VAE_APPROX]).encode(smooth_image(32, seed=7))
    with torch.no_grad():
        plain, big, small = (
            base.net.to_scaled(upscale_latent(m, z, 2))
            for m in (base, default, with_decoder_match(base, {2: (3, 0.1, MATCH_LR / 10)}))
        )
    assert 0 < (small - plain).abs().max() < (big - plain).abs().max()


def test_decoder_matching_tiles_alike_and_counts_its_progress():
    # 3 steps, not the shipped 10: tiling treats every step alike, and each step is a decoder pass and its backward
    # over the whole image and again over each tile (with 10 this test took 331 s on one thread beside another job)
    model = with_decoder_match(
        randomised_residual(new_v2_model(get_family("sd1"), width=8, blocks=1, vae_approx=VAE_APPROX), std=0.02),
        {2: (3, 0.1)},
    )
    ae = load_tiny_autoencoder("sd1", [VAE_APPROX])
    photo = to_tensor(load_rgb(sorted((SHARED / "data" / "photos" / "urban100").glob("*"))[0]))
    hr = bicubic_resize(photo, (256, 1024)).clamp(0, 1)
    z = ae.encode(bicubic_resize(hr, (128, 512)).clamp(0, 1))  # 16x64 latent: 48-pixel tiles cut it 2 ways
    whole = upscale_latent(model, z, 2, tile_size=10_000)
    calls = []
    tiled = upscale_latent(model, z, 2, tile_size=48, progress=lambda d, t: calls.append((d, t)))
    assert len(calls) == calls[-1][1] > model.net.progress_calls(2), "one unit per conv call of every tile"
    with torch.no_grad():
        a, b = ae.decode(whole).clamp(0, 1), ae.decode(tiled).clamp(0, 1)
    assert abs(psnr(a, hr).item() - psnr(b, hr).item()) <= 0.05
    diff = (a - b).abs().mean(1)[0]
    assert max(diff.mean(0).max().item(), diff.mean(1).max().item()) <= 1 / 255


def test_decoder_matching_steps_run_in_bf16_only_on_a_cpu_with_native_bf16_and_land_where_fp32_steps_do(monkeypatch):
    """On an fp32 model on a CPU with AMX / AVX-512 bf16 the matching steps autocast to bf16 (faster); the result
    decodes as the fp32 steps' does. Elsewhere (no native bf16, or a model already in bf16) nothing changes."""
    import lua_core.arch.reencode_residual as rr

    _, matched, ae, z, bicubic = matched_sd1_on_a_smooth_image()
    scores, autocasts = {}, {}
    for native in (False, True):
        monkeypatch.setattr(rr, "cpu_has_native_bf16", lambda native=native: native)
        autocasts[native] = rr.match_autocast(z)
        out = upscale_latent(matched, z, 2)
        assert out.dtype == torch.float32  # the latent and its update stay fp32
        with torch.no_grad():
            scores[native] = psnr(ae.decode(out).clamp(0, 1), bicubic).item()
        assert isinstance(rr.match_autocast(z.bfloat16()), contextlib.nullcontext)  # bf16 models: already bf16
    assert isinstance(autocasts[False], contextlib.nullcontext)
    assert isinstance(autocasts[True], torch.autocast) and autocasts[True].fast_dtype == torch.bfloat16
    assert abs(scores[True] - scores[False]) <= 0.05, scores


def test_decoder_matching_skips_a_tile_with_nothing_smooth_and_the_bar_still_ends_full():
    base = randomised_residual(new_v2_model(get_family("sd1"), width=8, blocks=1, vae_approx=VAE_APPROX), std=0.02)
    matched = with_decoder_match(base, {2: (10, 1e-4, 0.05)})  # sigma 1e-4: no pixel of a noise image is smooth
    z = load_tiny_autoencoder("sd1", [VAE_APPROX]).encode(torch.rand(1, 3, 128, 128, generator=torch.Generator()))
    calls = []
    out = upscale_latent(matched, z, 2, tile_size=10_000, progress=lambda d, t: calls.append((d, t)))
    assert torch.equal(out, upscale_latent(base, z, 2, tile_size=10_000))
    total = matched.net.progress_calls(2)
    assert calls[-1] == (total, total) and len(calls) < total  # the matching steps' units were skipped, then caught up


def test_decoder_matching_off_is_the_same_file_without_its_steps(tmp_path):
    base = randomised_residual(new_v2_model(get_family("sd1"), width=8, blocks=1, vae_approx=VAE_APPROX), std=0.05)
    assert without_decoder_match(base) is base  # nothing to switch off: the model itself
    with_decoder_match(base, {2: (3, 0.1, 0.05), 4: (3, 0.2, 0.01)}).save(tmp_path / "matched.safetensors")
    fast = load_model(tmp_path / "matched.safetensors", decoder_match=False)
    assert fast.config == base.config and fast.info.provenance == base.info.provenance
    z = load_tiny_autoencoder("sd1", [VAE_APPROX]).encode(smooth_image(32, seed=8))
    assert torch.equal(upscale_latent(fast, z, 2), upscale_latent(base, z, 2))


def test_training_warm_starts_from_a_shipped_residual(tmp_path):
    from conftest import TRAIN_IMAGES

    from lua_core.train.residual import ResidualTrainConfig, ResidualTrainer

    shipped = randomised_residual(new_v2_model(get_family("sd1"), width=8, blocks=1, vae_approx=VAE_APPROX))
    shipped.save(tmp_path / "shipped.safetensors")
    cfg = ResidualTrainConfig(
        family="sd1", data=(str(TRAIN_IMAGES),), vae_approx=str(VAE_APPROX), run_dir=str(tmp_path / "run"),
        width=8, blocks=1, images_per_folder=1, synthetic_tiles=0, init_from=str(tmp_path / "shipped.safetensors"),
    )
    trainer = ResidualTrainer(cfg, say=lambda _: None)
    for k, v in shipped.net.state_dict().items():
        assert torch.equal(trainer.net.state_dict()[k], v), k
    with pytest.raises(ValueError, match="does not match this run's"):
        ResidualTrainer(ResidualTrainConfig(**{**cfg.__dict__, "width": 16}), say=lambda _: None)


def test_a_resumed_training_keeps_its_schedule_unless_a_length_is_given(tmp_path):
    """train-v2 --resume without --steps/--minutes keeps the run's schedule (not the flags' defaults); each given
    alone replaces only itself (--minutes: a time stop over the saved schedule)."""
    import argparse
    from dataclasses import asdict

    from lua_core.train.residual import ResidualTrainConfig, add_arguments, run_config
    from lua_core.train.state import write_state

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    saved = ResidualTrainConfig(family="sd1", data=("d",), run_dir=str(tmp_path), steps=1200, lr=3e-4)
    write_state(tmp_path / "state.pt", {"config": asdict(saved)})
    base = ["--family", "sd1", "--data", "d", "--run-dir", str(tmp_path), "--resume"]
    for flags, steps, minutes in (([], 1200, 0.0), (["--minutes", "30"], 1200, 30.0), (["--steps", "900"], 900, 0.0)):
        cfg, resuming = run_config(parser.parse_args([*base, *flags]))
        assert resuming and (cfg.steps, cfg.minutes, cfg.lr) == (steps, minutes, 3e-4), flags


def test_training_one_head_leaves_the_trunk_and_the_other_heads_exactly_as_the_shipped_file(tmp_path):
    """--train-heads 2 over a shipped file whose x2 residual is off: only x2's stem and head learn, so the exported x4
    head computes bit for bit what the shipped one does, and the record keeps what stays true of x4 and the prior."""
    from conftest import TRAIN_IMAGES

    from lua_core.train.residual import ResidualTrainConfig, ResidualTrainer

    shipped = randomised_residual(new_v2_model(get_family("sd1"), width=8, blocks=1, vae_approx=VAE_APPROX))
    shipped = with_pixel_upscaler(shipped, 4, width=8, depth=1)  # x4's prior resizes with a (trained) pixel upscaler
    torch.nn.init.normal_(shipped.net.prior.upscalers["x4"].tail.weight, std=0.01)
    torch.nn.init.zeros_(shipped.net.heads["x2"].weight)  # x2 ships as the prior alone
    shipped.info.provenance = {
        "residual_disabled": ["x2"], "residual_disabled_why": "off", "residual_gain": {"x4": 0.25},
        "residual_gain_why": "best", "decoder_match_by_head": {"x4": [10, 0.2, 0.05]}, "decoder_match_why": "m",
        "prior_refinement_by_head": {"x2": [2, 0.7]}, "prior_refinement_why": "alone",
        "pixel_upscalers": {"x4": {"trained_steps": 7}},
    }
    shipped.save(tmp_path / "shipped.safetensors")
    cfg = ResidualTrainConfig(
        family="sd1", data=(str(TRAIN_IMAGES),), run_dir=str(tmp_path / "run"), width=8, blocks=1,
        images_per_folder=1, synthetic_tiles=0, tile=128, crop=64, steps=4, lr=1e-2, train_heads=(2,),
        prior_from=str(tmp_path / "shipped.safetensors"), init_from=str(tmp_path / "shipped.safetensors"),
    )
    trainer = ResidualTrainer(cfg, say=lambda _: None)
    trainer.run()
    assert [r["scale"] for r in map(json.loads, (tmp_path / "run" / "log.jsonl").read_text().splitlines())] == [2] * 4
    trained = trainer.export(tmp_path / "trained.safetensors")
    after = load_model(tmp_path / "trained.safetensors")
    changed = {k for k, v in shipped.net.state_dict().items() if not torch.equal(after.net.state_dict()[k], v)}
    assert changed and all(k.startswith(("stems.x2.", "heads.x2.")) for k in changed), changed
    z = torch.randn(1, 4, 8, 8)
    assert torch.equal(upscale_latent(after, z, 4), upscale_latent(shipped, z, 4))
    assert not torch.equal(upscale_latent(after, z, 2), upscale_latent(shipped, z, 2))
    prov = trained.info.provenance
    assert prov["trained_heads"] == ["x2"] and prov["residual_gain"] == {"x4": 0.25} and "residual_disabled" not in prov
    assert prov["decoder_match_by_head"] == {"x4": [10, 0.2, 0.05]} and prov["continued_from"]["file"] == "shipped.safetensors"
    assert prov["pixel_upscalers"] == {"x4": {"trained_steps": 7}}  # the prior's upscaler keeps its record
    assert prov["prior_refinement_why"] == "alone; then x2 learned a residual over it (train-v2 --train-heads)"
    again = str(tmp_path / "trained.safetensors")  # x2 learns once more over the trained file: said once still
    again_cfg = replace(cfg, run_dir=str(tmp_path / "again"), init_from=again, prior_from=again)
    assert ResidualTrainer(again_cfg, say=lambda _: None).kept_provenance()["prior_refinement_why"] == prov["prior_refinement_why"]
    with pytest.raises(ValueError, match=r"--train-heads \(8,\) must be among --scales \(2, 4\)"):
        replace(cfg, train_heads=(8,))
    with pytest.raises(ValueError, match="give --init-from FILE"):
        replace(cfg, init_from="")


@pytest.mark.parametrize("refine", [(0, 0.0), (1, 0.5)])
def test_error_input_is_the_round_trip_error_of_the_prior_target(refine):
    """The "+error" variant feeds f with t - E(D(t)), t = E(bicubic(D(z))): written out with the public autoencoder."""
    model = new_v2_model(get_family("flux1"), width=8, blocks=1, vae_approx=VAE_APPROX, refine=refine,
                         inputs="latent+prior+pixels+error")
    ae = load_tiny_autoencoder("flux1", [VAE_APPROX])
    z = ae.encode(smooth_image(64, seed=3))
    net = model.net
    with torch.no_grad():
        zs = net.to_scaled(z)
        up = net.prior.upscale(net.prior.decode(zs), 2)
        prior, error = net.prior(up, refine, with_error=True)
        target = ae.encode(bicubic_resize(ae.decode(z).clamp(0, 1), (128, 128)).clamp(0, 1))
        reference = target - ae.encode(ae.decode(target).clamp(0, 1))
        assert torch.allclose(net.to_raw(error), reference + get_family("flux1").shift_factor, atol=1e-4)
        assert net.prior(up, refine)[1] is None  # computed only when asked for
    assert net.input_channels(2) == 16 + 16 * 4 + 3 * 64 + 16 * 4
    assert net.progress_calls(2) == sum(isinstance(m, torch.nn.Conv2d) for m in net.prior.modules()) * 2 + 1
    assert torch.equal(upscale_latent(model, z, 2), net.to_raw(prior))  # untrained: still exactly the prior
    randomised_residual(model)
    with torch.no_grad():
        for stem in net.stems.values():  # only the error's stem channels: the output must follow them
            stem.weight.zero_()
            stem.weight[:, -16:].normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(upscale_latent(model, z, 2), net.to_raw(prior))


def test_warm_start_into_the_error_variant_starts_as_the_shipped_file_and_caches_the_error(tmp_path):
    from conftest import TRAIN_IMAGES

    from lua_core.train.residual import ResidualTrainConfig, ResidualTrainer, pixel_loss

    shipped = randomised_residual(
        new_v2_model(get_family("sd3"), width=8, blocks=1, vae_approx=VAE_APPROX, refine=(1, 0.5)), std=0.01
    )
    shipped.save(tmp_path / "shipped.safetensors")
    cfg = ResidualTrainConfig(
        family="sd3", data=(str(TRAIN_IMAGES),), run_dir=str(tmp_path / "run"), width=8, blocks=1,
        images_per_folder=1, synthetic_tiles=0, tile=128, crop=64, prior_from=str(tmp_path / "shipped.safetensors"),
        init_from=str(tmp_path / "shipped.safetensors"), inputs="latent+prior+pixels+error",
    )
    trainer = ResidualTrainer(cfg, say=lambda _: None)
    stem = trainer.net.stems["x2"].weight
    assert stem.shape[1] == shipped.net.stems["x2"].weight.shape[1] + 16 * 4 and not stem[:, -64:].any()
    z = torch.randn(1, 16, 8, 8) * 0.5
    warm = trainer.model
    assert torch.allclose(upscale_latent(warm, z, 2), upscale_latent(shipped, z, 2), atol=1e-5)
    assert torch.allclose(upscale_latent(warm, z, 4), upscale_latent(shipped, z, 4), atol=1e-5)

    crop = trainer.crops[2][0]
    assert crop["error"].shape == crop["prior"].shape and crop["error"].abs().max() > 0
    with torch.no_grad():  # the cached error is what the network computes for the tile's prior at inference
        tile = trainer.crops[2].t
        _, error = trainer.net.prior(trainer.net.prior.upscale(tile["pix2"][:1], 2), (1, 0.5), with_error=True)
    assert torch.allclose(error, tile["error2"][:1], atol=1e-5)
    batch = {k: v[None] for k, v in crop.items()}
    pixel_loss(trainer.net, batch, 2, cfg, torch.autocast("cpu", enabled=False)).backward()
    assert trainer.net.stems["x2"].weight.grad[:, -64:].abs().sum() > 0  # the error channels learn
    with pytest.raises(ValueError, match="does not match this run's"):  # the other way round is refused
        ResidualTrainer(
            ResidualTrainConfig(**{**cfg.__dict__, "inputs": "latent+prior", "run_dir": str(tmp_path / "r2")}),
            say=lambda _: None,
        )


def test_window_loss_has_no_window_edges_it_is_the_whole_tile_decode_plus_the_residuals_change(tmp_path):
    """pixel_loss decodes a window of the crop (with decode_context latent pixels around it); inference decodes the
    whole image. With the tile's decoded prior in the batch, an untrained model's loss is exactly the whole-tile
    decode's L1 (or squared error) in the window (no edge errors), and a residual is scored by what it changes in the
    decode."""
    from conftest import TRAIN_IMAGES

    from lua_core.train.residual import ResidualTrainConfig, ResidualTrainer, pixel_loss

    cfg = ResidualTrainConfig(
        family="sdxl", data=(str(TRAIN_IMAGES),), vae_approx=str(VAE_APPROX), run_dir=str(tmp_path / "run"),
        width=8, blocks=1, images_per_folder=1, synthetic_tiles=0, tile=128, crop=32, context=4, border=8,
    )
    trainer = ResidualTrainer(cfg, say=lambda _: None)
    net, tiles = trainer.net, trainer.crops[2].t
    with torch.no_grad():  # the baseline is the tiny decoder's output of the whole tile's prior
        assert torch.equal(tiles["prior_pix2"][:1], net.prior.decoder(tiles["prior2"][:1]).half())
    batch = {k: v[None] for k, v in trainer.crops[2][0].items()}
    assert batch["prior_pix"].shape == batch["hr"].shape
    said = []  # the next start reads the decoded priors from the tile cache instead of decoding them again
    again = ResidualTrainer(cfg, say=said.append).crops[2].t
    assert any(".prior-pix.safetensors" in line for line in said)
    assert torch.equal(again["prior_pix2"], tiles["prior_pix2"]) and torch.equal(again["prior_pix4"], tiles["prior_pix4"])

    def inner(t):  # the scored part of the crop: the window (context removed), then the border
        off = cfg.context * 8
        return t[..., off:-off, off:-off][..., 8:-8, 8:-8]

    no_amp = torch.autocast("cpu", enabled=False)
    window_only = replace(cfg, decode_context=0)
    no_baseline = {k: v for k, v in batch.items() if k != "prior_pix"}
    with torch.no_grad():
        loss = pixel_loss(net, batch, 2, cfg, no_amp).item()
        whole_tile = F.l1_loss(inner(batch["prior_pix"]), inner(batch["hr"])).item()
        assert abs(pixel_loss(net, batch, 2, window_only, no_amp).item() - whole_tile) < 1e-5
        edges = abs(pixel_loss(net, no_baseline, 2, window_only, no_amp).item() - whole_tile)
        edges_with_context = abs(pixel_loss(net, no_baseline, 2, cfg, no_amp).item() - whole_tile)
        squared = pixel_loss(net, batch, 2, replace(cfg, loss="mse"), no_amp).item()
        whole_tile_squared = F.mse_loss(inner(batch["prior_pix"]), inner(batch["hr"])).item()
    assert abs(loss - whole_tile) < 1e-5  # untrained: exactly the whole-tile decode, no window edges
    assert abs(squared - whole_tile_squared) < 1e-6 and squared < loss  # --loss mse scores the same pixels squared
    with pytest.raises(ValueError, match=r"--loss 'l2': use one of l1, mse"):
        replace(cfg, loss="l2")
    assert edges > 1e-3  # what the window decode alone adds (what residuals used to learn)
    assert edges_with_context < edges  # decoding the context moves the decoder's edges away from the scored part
    with pytest.raises(ValueError, match=r"--decode-context 5 must be between 0 and --context 4: use --decode-context 0\.\.4"):
        replace(cfg, decode_context=5)  # refused by the config, before any tile is encoded
    randomised_residual(trainer.model, std=0.05)
    with torch.no_grad():
        moved = pixel_loss(net, batch, 2, cfg, no_amp).item()
    assert abs(moved - loss) > 1e-5  # the residual still moves the loss


def test_a_new_residual_over_a_shipped_prior_starts_as_that_prior_and_keeps_its_refinement(tmp_path):
    from conftest import TRAIN_IMAGES

    from lua_core.model import new_v2_model_over_prior
    from lua_core.train.residual import ResidualTrainConfig, ResidualTrainer

    shipped = randomised_residual(new_v2_model(get_family("sd3"), width=8, blocks=1, vae_approx=VAE_APPROX, refine=(1, 0.8)))
    shipped.save(tmp_path / "shipped.safetensors")
    fresh = new_v2_model_over_prior(tmp_path / "shipped.safetensors", width=16, blocks=2)
    assert (fresh.config.width, fresh.config.blocks) == (16, 2) and fresh.family.name == "sd3"
    assert (fresh.config.refine_steps, fresh.config.refine_rate) == (1, 0.8) and fresh.info.prior == shipped.info.prior
    for k, v in shipped.net.prior.state_dict().items():
        assert torch.equal(fresh.net.prior.state_dict()[k], v), k
    z = torch.randn(1, 16, 8, 8) * 0.5
    for head in shipped.net.heads.values():  # the shipped file with its residual switched off = its prior alone
        torch.nn.init.zeros_(head.weight)
    assert torch.equal(upscale_latent(fresh, z, 2), upscale_latent(shipped, z, 2))

    cfg = ResidualTrainConfig(
        family="sd3", data=(str(TRAIN_IMAGES),), run_dir=str(tmp_path / "run"), width=8, blocks=1,
        images_per_folder=1, synthetic_tiles=0, prior_from=str(tmp_path / "shipped.safetensors"), tile=128, crop=64,
    )
    trainer = ResidualTrainer(cfg, say=lambda _: None)  # no --vae-approx needed: the file holds the autoencoder
    assert trainer.net.config.refine_steps == 1
    with pytest.raises(ValueError, match="is a sd3 model, not sd1"):
        ResidualTrainer(ResidualTrainConfig(**{**cfg.__dict__, "family": "sd1"}), say=lambda _: None)
    with pytest.raises(ValueError, match="drop --vae-approx"):
        ResidualTrainer(ResidualTrainConfig(**{**cfg.__dict__, "vae_approx": str(VAE_APPROX)}), say=lambda _: None)


def test_several_tiles_per_image_are_distinct_and_keep_older_cache_keys(tmp_path):
    from conftest import TRAIN_IMAGES

    from lua_core.train.prior_tiles import TileSpec, build_tiles, cache_key, list_training_images

    net = new_v2_model(get_family("sdxl"), width=8, blocks=1, vae_approx=VAE_APPROX).net
    one = TileSpec((str(TRAIN_IMAGES),), 0.08, 64, 2, 0, 0)
    three = TileSpec((str(TRAIN_IMAGES),), 0.08, 64, 2, 0, 0, tiles_per_image=3)
    images = list_training_images(one)
    newer = ("tiles_per_image", "native_fraction")
    legacy = {k: v for k, v in one.__dict__.items() if k not in newer}  # the key before those fields existed
    assert one.key_fields() == legacy and cache_key(one, images, net) != cache_key(three, images, net)
    tiles = build_tiles(three, net, tmp_path, say=lambda _: None)
    assert tiles["hr"].shape[0] == 3 * len(images) == 6
    first = tiles["hr"][:3].flatten(1).float()
    assert torch.cdist(first, first)[~torch.eye(3, dtype=torch.bool)].min() > 0  # three different cuts of image 1
    assert set(tiles) == {"hr", "z2", "pix2", "prior2", "z4", "pix4", "prior4"}


def test_native_fraction_cuts_large_photos_at_native_resolution_and_keeps_older_cache_keys(tmp_path):
    """--native-fraction 1: a large photo's tile is a plain crop (its pixels are the file's 8-bit values, no resize)."""
    import numpy as np
    from PIL import Image

    from lua_core.train.prior_tiles import TileSpec, tile_of

    rng = np.random.default_rng(0)
    photo = tmp_path / "large.png"
    Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(photo)
    scaled, native = TileSpec((str(tmp_path),), 0.08, 64, 0, 0, 0), TileSpec((str(tmp_path),), 0.08, 64, 0, 0, 0, 1, 1.0)

    def is_plain_crop(t: torch.Tensor) -> bool:
        return bool(torch.allclose(t * 255, (t * 255).round(), atol=1e-3))

    assert all(is_plain_crop(tile_of(photo, native, np.random.default_rng(s))) for s in range(4))
    assert not any(is_plain_crop(tile_of(photo, scaled, np.random.default_rng(s))) for s in range(4))
    assert "native_fraction" not in scaled.key_fields() and native.key_fields()["native_fraction"] == 1.0
    with pytest.raises(ValueError, match="--native-fraction 1.5 is a share of tiles: use 0..1"):
        from lua_core.train.residual import ResidualTrainConfig

        ResidualTrainConfig(family="flux1", data=(str(tmp_path),), native_fraction=1.5)


def test_refine_prior_heads_gives_a_prior_only_head_its_best_setting_and_leaves_the_others(tmp_path):
    """tools/refine_prior_heads.py: scored on a held-out image, the x4 head (residual off) takes the best setting."""
    import subprocess
    import sys

    from conftest import ROOT

    model = randomised_residual(new_v2_model(get_family("sd3"), width=8, blocks=1, vae_approx=VAE_APPROX, refine=(1, 0.8)))
    torch.nn.init.zeros_(model.net.heads["x4"].weight)
    torch.nn.init.zeros_(model.net.heads["x4"].bias)
    model.info.provenance = {"residual_disabled": ["x4"]}
    model.save(tmp_path / "in.safetensors")
    out, report = tmp_path / "out.safetensors", tmp_path / "report.json"
    tool = [sys.executable, str(ROOT / "tools" / "refine_prior_heads.py")]
    args = ["--model", str(tmp_path / "in.safetensors"), "--output", str(out), "--report", str(report)]
    subprocess.run(tool + args + ["--limit", "1", "--max-side", "128", "--settings", "2:0.8,1:0.3", "--flat-side", "64"], check=True)
    rep = json.loads(report.read_text())
    scores = rep["psnr"]["x4"]
    assert set(rep["psnr"]) == {"x4"} and set(scores) == {"current", "steps2_rate0.8", "steps1_rate0.3"}
    assert rep["output_minus_current_db"]["x4"] >= 0 and set(rep["refused_for_colour_patches"]) == {"x4"}
    passing = {k: v for k, v in scores.items() if k not in rep["refused_for_colour_patches"]["x4"]}
    assert scores[rep["chosen"]["x4"]] == max(passing.values())  # the best of the settings the flat check let through
    chosen = load_model(out)
    expected = {"current": (), "steps2_rate0.8": ((4, 2, 0.8),), "steps1_rate0.3": ((4, 1, 0.3),)}[rep["chosen"]["x4"]]
    assert chosen.config.refine_by_scale == expected
    z = torch.randn(1, 16, 8, 8) * 0.5
    assert torch.equal(upscale_latent(chosen, z, 2), upscale_latent(model, z, 2))  # x2 keeps its prior and residual
    model.info.provenance = {}  # every head has its residual: nothing may change
    model.save(tmp_path / "all.safetensors")
    refused = subprocess.run(tool + ["--model", str(tmp_path / "all.safetensors"), "--output", str(out)],
                             capture_output=True, text=True)
    assert refused.returncode != 0 and "no head that ships as the prior alone" in refused.stderr


def test_match_decoder_heads_scores_photos_and_renders_and_writes_the_best_setting_per_head(tmp_path):
    """tools/match_decoder_heads.py: every head scored with and without matching on a training-split photo crop and
    a held-out render; the file it writes has each head's best setting (or none) and says so in its provenance."""
    import subprocess
    import sys

    from conftest import ROOT

    model = randomised_residual(new_v2_model(get_family("sd1"), width=8, blocks=1, vae_approx=VAE_APPROX), std=0.05)
    model.save(tmp_path / "in.safetensors")
    out, report = tmp_path / "out.safetensors", tmp_path / "report.json"
    args = ["--model", str(tmp_path / "in.safetensors"), "--output", str(out), "--report", str(report), "--photos", "1",
            "--limit", "1", "--max-side", "64", "--settings", "3:0.1:0.02", "--flat-side", "32"]
    subprocess.run([sys.executable, str(ROOT / "tools" / "match_decoder_heads.py"), *args], check=True)
    rep = json.loads(report.read_text())
    assert len(rep["photos_training_split"]) == len(rep["held_out_renders"]) == 1
    for sc in ("x2", "x4"):
        by_set = [rep["psnr_by_set"][k][sc] for k in ("photos", "held_out")]
        assert rep["psnr"][sc] == {m: round((by_set[0][m] + by_set[1][m]) / 2, 4) for m in ("current", "steps3_sigma0.1_lr0.02")}
        # the best score wins unless the flat-region check refused it (this random model sits near its bounds)
        allowed = {m: v for m, v in rep["psnr"][sc].items() if m not in rep["refused_for_colour_patches"][sc]}
        assert rep["chosen"][sc] == max(allowed, key=allowed.get)
    chosen = load_model(out)
    expected = tuple((int(sc[1:]), 3, 0.1, 0.02) for sc in ("x2", "x4") if rep["chosen"][sc] != "current")
    assert chosen.config.match_by_scale == expected
    assert chosen.info.provenance["decoder_match_by_head"] == {f"x{s}": [k, sg, lr] for s, k, sg, lr in expected}


def test_refine_prior_heads_passes_over_a_setting_that_paints_colour_patches():
    """The best-scoring setting is refused when it adds flat-region failures; the next best without them wins."""
    import sys

    from conftest import ROOT

    sys.path.insert(0, str(ROOT / "tools"))
    from refine_prior_heads import best_without_new_patches

    scores = {"current": 28.0, "steps2_rate1": 28.2, "steps2_rate0.7": 28.1, "steps1_rate1": 28.1}
    patches = {"steps2_rate1": ["flat(0.95, 0.95, 0.93)"], "steps2_rate0.7": [], "steps1_rate1": []}
    assert best_without_new_patches(scores, patches.get) == ("steps2_rate0.7", {"steps2_rate1": patches["steps2_rate1"]})
    everything_patches = dict.fromkeys(patches, ["smooth3"])
    assert best_without_new_patches(scores, everything_patches.get) == (
        "current", {"steps2_rate1": ["smooth3"], "steps2_rate0.7": ["smooth3"], "steps1_rate1": ["smooth3"]}
    )
    assert best_without_new_patches({"current": 28.0, "steps1_rate1": 28.0}, patches.get)[0] == "current"  # a tie


def test_keep_if_better_names_the_colour_patches_a_new_file_adds(tmp_path):
    """tools/keep_if_better.py: a file that paints patches where the old one did not is caught, per scale."""
    import sys

    from conftest import ROOT

    sys.path.insert(0, str(ROOT / "tools"))
    from keep_if_better import new_colour_patches

    clean, painting = tmp_path / "clean.safetensors", tmp_path / "painting.safetensors"
    new_v2_model(get_family("sd1"), vae_approx=VAE_APPROX).save(clean)
    randomised_residual(new_v2_model(get_family("sd1"), vae_approx=VAE_APPROX), std=0.5).save(painting)
    added = new_colour_patches(painting, clean, str(VAE_APPROX), side=64)
    assert set(added) == {"x2", "x4"} and all(added.values()), added
    assert all(name.startswith(("flat", "smooth")) for names in added.values() for name in names)
    assert new_colour_patches(clean, painting, str(VAE_APPROX), side=64) == {}  # the clean file adds none


def test_keep_if_better_scores_both_files_side_by_side_on_the_reports_images(tmp_path):
    """tools/keep_if_better.py judges the new file against the old one scored in the same process: a head both
    files share is found the same and not scored (0 dB), a changed head differs; a report made on other images is
    refused."""
    import sys

    from conftest import ROOT, SHARED

    sys.path.insert(0, str(ROOT / "tools"))
    from keep_if_better import new_minus_old_db
    from select_v2_heads import with_head_gains

    from lua_core.data_split import held_out_images

    data = SHARED / "data" / "train"
    new, old = tmp_path / "new.safetensors", tmp_path / "old.safetensors"
    trained = randomised_residual(new_v2_model(get_family("sd1"), width=8, blocks=1, vae_approx=VAE_APPROX), std=0.05)
    trained.save(new)
    with_head_gains(trained, {"x2": 0.0}).save(old)  # the same file but x2 shipped as the prior alone
    report = {"images": [held_out_images(data, 0.08)[0].name], "n_images": 1, "max_side": 64}
    compared = new_minus_old_db(new, old, report, str(data), str(VAE_APPROX))
    assert set(compared) == {"x2", "x4"}
    assert compared["x4"] == {"identical": True, "new_minus_old_db": 0.0}
    assert compared["x2"]["new_minus_old_db"] != 0
    assert compared["x2"]["new_minus_old_db"] == round(compared["x2"]["new"] - compared["x2"]["old"], 4)
    with pytest.raises(SystemExit, match="not the report's"):
        new_minus_old_db(new, old, {**report, "images": ["another.png"]}, str(data), str(VAE_APPROX))


@pytest.mark.parametrize("gain", [0.0, 0.5])
def test_head_gain_scales_the_residual_exactly(gain):
    """tools/select_v2_heads.py ships a head at gain g: its output is prior + g * (trained output - prior)."""
    import sys

    from conftest import ROOT

    sys.path.insert(0, str(ROOT / "tools"))
    from select_v2_heads import with_head_gains

    trained = randomised_residual(new_v2_model(get_family("sdxl"), width=8, blocks=1, vae_approx=VAE_APPROX))
    prior = with_head_gains(trained, {"x2": 0.0, "x4": 0.0})
    scaled = with_head_gains(trained, {"x2": gain})
    z = torch.randn(1, 4, 8, 8)
    p, t = upscale_latent(prior, z, 2), upscale_latent(trained, z, 2)
    assert not torch.equal(p, t)  # the residual is really there
    assert torch.allclose(upscale_latent(scaled, z, 2), p + gain * (t - p), atol=1e-5)
    assert torch.equal(upscale_latent(scaled, z, 4), upscale_latent(trained, z, 4))  # other heads untouched


@pytest.mark.parametrize("family", ["sdxl", "flux2"])  # flux2: taef2's pooled GroupNorm branch
def test_channels_last_layout_of_the_tiny_autoencoder_changes_no_output_or_gradient(family):
    """The tiny encoder/decoder run channels-last on a CPU for speed; outputs and the input gradient that
    decoder matching follows equal the published layers run in the plain layout, and come back in it."""
    ae = load_tiny_autoencoder(get_family(family), [VAE_APPROX])
    rgb = smooth_image(64)
    for net, x in ((ae.encoder, rgb), (ae.decoder, ae.encoder(rgb).detach())):
        x = x.clone().requires_grad_(True)
        fast = net(x)
        (grad_fast,) = torch.autograd.grad(fast.square().sum(), x)
        plain_x = x.detach().clone().requires_grad_(True)
        plain = torch.nn.Sequential.forward(net, plain_x)
        (grad_plain,) = torch.autograd.grad(plain.square().sum(), plain_x)
        assert fast.is_contiguous()
        assert torch.allclose(fast, plain, atol=1e-5, rtol=1e-5), (fast - plain).abs().max()
        # the backward pass sums in another order per layout, and a gradient runs through every layer: judged
        # against its own size (one element of the SDXL encoder's differed by 3e-4 on the AVX2-only CI machine, where
        # the whole gradient differed by 2e-5 of its norm), not element by element
        rel = float((grad_fast - grad_plain).norm() / grad_plain.norm())
        assert rel < 1e-4, f"input gradients differ by {rel:.2e} of their norm"


def test_flat_region_bench_finds_the_patches_the_check_finds():
    """bench/flat_regions.py: its patches are exactly flat_region_failures'; a noisy residual scores below none."""
    import sys

    from conftest import ROOT

    sys.path.insert(0, str(ROOT / "bench"))
    from flat_regions import measure

    from lua_core.evaluation import flat_region_failures

    ae = load_tiny_autoencoder(get_family("sd1"), [VAE_APPROX])
    painting = randomised_residual(new_v2_model(get_family("sd1"), vae_approx=VAE_APPROX), std=0.5)
    report = measure(painting, ae, 2, side=64)
    assert report["patches"] and report["patches"] == sorted(flat_region_failures(painting, ae, 2, side=64))
    assert len(report["images"]) == 14 and report["images_below_pixel_bicubic"] <= 14
    untrained = new_v2_model(get_family("sd1"), vae_approx=VAE_APPROX)
    clean = measure(untrained, ae, 2, side=64)
    assert clean["patches"] == sorted(flat_region_failures(untrained, ae, 2, side=64))
    assert clean["mean_psnr"]["lua"] > report["mean_psnr"]["lua"] + 1
    means = clean["mean_psnr"]
    assert clean["lua_minus_pixel_bicubic_db"] == pytest.approx(means["lua"] - means["pixel_bicubic"])


def test_flat_region_bench_measures_matching_off_only_on_the_heads_that_match(tmp_path, monkeypatch):
    """bench/flat_regions.py main: every file at x2 and x4 as shipped; "off" only where a head has matching steps."""
    import sys

    from conftest import ROOT

    sys.path.insert(0, str(ROOT / "bench"))
    import flat_regions

    plain = new_v2_model(get_family("sd1"), width=8, blocks=1, vae_approx=VAE_APPROX)
    plain.save(tmp_path / "plain.safetensors")
    with_decoder_match(plain, {2: (1, 0.2, 0.05)}).save(tmp_path / "matched.safetensors")
    out = tmp_path / "flat.json"
    argv = ["flat_regions.py", "--models", str(tmp_path / "plain.safetensors"), str(tmp_path / "matched.safetensors")]
    monkeypatch.setattr(sys, "argv", [*argv, "--side", "64", "--threads", "1", "--output", str(out)])
    flat_regions.main()
    files = json.loads(out.read_text())["files"]
    assert set(files["plain.safetensors"]) == {"family", "sha256", "date", "threads", "seconds", "as_shipped"}
    assert files["plain.safetensors"]["sha256"] == sha256_file(tmp_path / "plain.safetensors")  # which file it measured
    assert files["plain.safetensors"]["threads"] == 1 and files["plain.safetensors"]["seconds"] > 0
    assert set(files["plain.safetensors"]["as_shipped"]) == {"x2", "x4"}
    assert set(files["matched.safetensors"]["decoder_matching_off"]) == {"x2"}
    off, on = files["matched.safetensors"]["decoder_matching_off"]["x2"], files["plain.safetensors"]["as_shipped"]["x2"]
    assert off["mean_psnr"] == pytest.approx(on["mean_psnr"])  # "off" computes what the file without matching does
