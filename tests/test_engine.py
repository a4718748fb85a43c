"""upscale_latent: shapes, scales, padding, tiling, OOM fallback, progress, dtypes, and error messages."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import make_model

from lua_core import LatentInputError, LUAError, UpscaleOutOfMemoryError, upscale_latent
from lua_core.engine import pad_to_multiple, plan_tiles, reflect_indices, run_network, tile_spans


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("scale", [2, 4])
def test_integer_heads_give_exact_shapes(tiny_model, scale):
    x = torch.randn(2, 4, 19, 26)
    y = upscale_latent(tiny_model, x, scale)
    assert y.shape == (2, 4, 19 * scale, 26 * scale)
    assert y.dtype == x.dtype and torch.isfinite(y).all()


def test_scale_one_returns_input_unchanged(tiny_model):
    x = torch.randn(1, 4, 10, 12)
    y = upscale_latent(tiny_model, x, 1.0)
    assert torch.equal(x, y) and y is not x


@pytest.mark.parametrize("scale,head", [(1.5, 2), (2.5, 4), (3.0, 4), (1.05, 2)])
def test_fractional_scales_downscale_the_next_head(tiny_model, scale, head):
    x = torch.randn(1, 4, 21, 30)
    y = upscale_latent(tiny_model, x, scale)
    assert y.shape == (1, 4, round(21 * scale), round(30 * scale))
    full = run_network(tiny_model, x, head)
    expected = F.interpolate(full, size=y.shape[-2:], mode="bicubic", antialias=True, align_corners=False)
    assert torch.allclose(y, expected, atol=1e-5)


def video_model(model):
    """`model` with its family marked as a video family (none is today; the engine keeps the frame path for one)."""
    model.info.family = dataclasses.replace(model.info.family, video=True)
    return model


def test_a_video_family_folds_frames_into_batch(tiny_model):
    model = video_model(tiny_model)
    x = torch.randn(2, 4, 3, 12, 10)
    y = upscale_latent(model, x, 2)
    assert y.shape == (2, 4, 3, 24, 20)
    frame = upscale_latent(model, x[:, :, 1], 2)
    assert torch.allclose(y[:, :, 1], frame, atol=1e-5)


IMAGE_FAMILIES = "SD1.x/SD2.x, SDXL, SD3, FLUX.1, FLUX.2/FLUX.3"
TODO = "use core's Upscale Latent instead, or decode it and upscale the frames with a pixel upscaler"


@pytest.mark.parametrize(
    "channels,frames,source",
    [
        (4, 3, "from a video VAE that LUA does not know"),
        (
            16,
            3,
            "likely from the Wan 2.1 VAE (Wan 2.1, Wan 2.2 S2V/Animate, Qwen-Image, Cosmos Predict2), "
            "HunyuanVideo's (also Kandinsky 5) or Cosmos 1's",
        ),
        (48, 2, "likely from the Wan 2.2 VAE (Wan 2.2 TI2V 5B)"),
        (128, 5, "likely from LTX-Video's VAE (LTXV, LTXAV)"),
        (12, 2, "likely from Mochi's VAE"),
    ],
)
def test_video_latents_are_refused_naming_the_likely_video_vae(channels, frames, source):
    # before: a 16-channel HunyuanVideo latent went through a FLUX.1 model without a word, and a 128-channel
    # LTX-Video latent was called FLUX.2
    # the model whose channel count matches, where there is one: the latent would pass the channel check
    model = make_model(channels=channels, family="flux1") if channels == 16 else make_model()
    if channels == 128:
        model = make_model(channels=128, family="flux2")
    x = torch.randn(1, channels, frames, 8, 8)
    with pytest.raises(LatentInputError) as err:
        upscale_latent(model, x, 2)
    assert str(err.value) == (
        f"expected an image latent [B, C, h, w], got a 5-D video latent [1, {channels}, {frames}, 8, 8] "
        f"({channels} channels, {frames} frames), {source}. LUA models are trained for image VAEs only "
        f"({IMAGE_FAMILIES}), so this latent would come out wrong; {TODO}"
    )


def test_a_single_frame_5d_latent_is_refused_too():
    # Qwen-Image / Wan hand over still images as [B, 16, 1, h, w]: the Wan VAE's space, not FLUX.1's or SD3's
    model = make_model(channels=16, family="flux1")
    with pytest.raises(LatentInputError) as err:
        upscale_latent(model, torch.randn(1, 16, 1, 8, 8), 2)
    msg = str(err.value)
    assert msg.startswith("expected an image latent [B, C, h, w], got a 5-D video latent [1, 16, 1, 8, 8] (16 channels, 1 frame)")
    assert msg.endswith(
        "so this latent would come out wrong (a single frame, as Qwen-Image and Wan hand over still images, is still "
        f"that VAE's latent space); {TODO}"
    )


def test_reflect_padding_matches_torch_where_defined():
    x = torch.randn(1, 2, 11, 13)
    assert torch.equal(pad_to_multiple(x, 8), F.pad(x, (0, 3, 0, 5), mode="reflect"))
    assert reflect_indices(3, 9).tolist() == [0, 1, 2, 1, 0, 1, 2, 1, 0]
    assert reflect_indices(1, 4).tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("side", range(1, 9))
def test_tiny_sides_never_crash(tiny_model, side):
    y = upscale_latent(tiny_model, torch.randn(1, 4, side, 9), 2)
    assert y.shape == (1, 4, 2 * side, 18) and torch.isfinite(y).all()


def test_same_input_same_output(tiny_model):
    x = torch.randn(1, 4, 20, 20)
    a = upscale_latent(tiny_model, x, 2)
    upscale_latent(tiny_model, torch.randn(2, 4, 33, 17), 4)  # other sizes in between
    b = upscale_latent(tiny_model, x, 2)
    assert torch.equal(a, b)


# --------------------------------------------------------------------------- tiling


@pytest.mark.parametrize(
    "size,tile,overlap", [(100, 32, 16), (120, 64, 16), (513, 64, 16), (70, 64, 16), (1000, 128, 32)]
)
def test_tile_spans_are_window_aligned_and_cover_with_overlap(size, tile, overlap):
    spans = tile_spans(size, tile, overlap, 8)
    assert spans[0][0] == 0 and spans[-1][1] == size
    assert all(s % 8 == 0 for s, _ in spans)
    assert all(b[0] < a[1] for a, b in zip(spans, spans[1:])), "consecutive tiles must overlap"
    assert all(a[1] - b[0] >= overlap for a, b in zip(spans, spans[1:]))
    assert all(e - s <= tile + 8 for s, e in spans)
    assert len(spans) <= 2 + (size - tile) // (tile - overlap)


def test_caller_tile_size_is_aligned_and_clamped(tiny_model):
    assert plan_tiles(tiny_model, 1, 20, 20, 2, 4096, None, None).tile == 32  # never bigger than needed
    assert plan_tiles(tiny_model, 1, 200, 200, 2, 77, None, None).tile == 72  # whole windows
    assert plan_tiles(tiny_model, 1, 200, 200, 2, 8, None, None).tile == 32  # the floor: four windows


@pytest.mark.parametrize("tile", [32, 48])
@pytest.mark.parametrize("scale", [2, 4])
def test_tiled_matches_untiled(tiny_model, tile, scale):
    x = torch.randn(2, 4, 70, 53, generator=torch.Generator().manual_seed(1))
    whole = upscale_latent(tiny_model, x, scale, tile_size=10_000)
    calls = []
    tiled = upscale_latent(tiny_model, x, scale, tile_size=tile, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1][0] == calls[-1][1] > 1, "small tiles must really tile"
    assert rel_err(tiled, whole) <= 1e-3


def test_automatic_tiles_follow_the_memory_budget(tiny_model):
    roomy = plan_tiles(tiny_model, 1, 128, 128, 2, None, None, memory_budget=1 << 40)
    tight = plan_tiles(tiny_model, 1, 128, 128, 2, None, None, memory_budget=4 << 20)
    assert roomy.tile >= 128
    assert 32 <= tight.tile < 128 and tight.tile % 8 == 0
    x = torch.randn(1, 4, 64, 64)
    a = upscale_latent(tiny_model, x, 2, memory_budget=1 << 40)
    b = upscale_latent(tiny_model, x, 2, memory_budget=3 << 20)
    assert rel_err(b, a) <= 1e-3


def _oom_above(model, max_side: int, log: list):
    real = model.net.forward

    def forward(x, scale):
        log.append(tuple(x.shape))
        if max(x.shape[-2:]) > max_side:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(x, scale)

    return forward


def test_oom_halves_the_tile_and_retries(tiny_model, monkeypatch, caplog):
    x = torch.randn(1, 4, 64, 64)
    expected = upscale_latent(tiny_model, x, 2)
    seen: list = []
    monkeypatch.setattr(tiny_model.net, "forward", _oom_above(tiny_model, 32, seen))
    got = upscale_latent(tiny_model, x, 2)
    assert seen[0][-1] == 64 and max(seen[-1][-2:]) <= 32
    assert "retrying with 32" in caplog.text
    assert rel_err(got, expected) <= 1e-3


def test_oom_at_the_floor_raises_a_clear_error(tiny_model, monkeypatch):
    monkeypatch.setattr(tiny_model.net, "forward", _oom_above(tiny_model, 0, []))
    with pytest.raises(UpscaleOutOfMemoryError, match=r"out of memory on cpu even with 32x32 latent tiles and batch 1"):
        upscale_latent(tiny_model, torch.randn(2, 4, 40, 40), 2)


def test_cpu_allocator_message_counts_as_oom(tiny_model, monkeypatch):
    real = tiny_model.net.forward
    state = {"n": 0}

    def flaky(x, scale):
        state["n"] += 1
        if state["n"] == 1:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
        return real(x, scale)

    monkeypatch.setattr(tiny_model.net, "forward", flaky)
    assert upscale_latent(tiny_model, torch.randn(1, 4, 40, 40), 2).shape == (1, 4, 80, 80)


def test_other_errors_are_not_swallowed(tiny_model, monkeypatch):
    def broken(x, scale):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(tiny_model.net, "forward", broken)
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        upscale_latent(tiny_model, torch.randn(1, 4, 16, 16), 2)


def test_progress_raising_cancels(tiny_model):
    class Cancelled(Exception):
        pass

    def progress(done, total):
        if done == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        upscale_latent(tiny_model, torch.randn(1, 4, 64, 64), 2, tile_size=24, progress=progress)


# --------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precisions_track_fp32(dtype):
    model = make_model()
    x = torch.randn(1, 4, 24, 24)
    ref = upscale_latent(model, x, 2)
    model.to(dtype=dtype)
    y = upscale_latent(model, x, 2)
    assert y.dtype == torch.float32 and y.shape == ref.shape
    assert rel_err(y, ref) < 0.05


def test_output_keeps_input_dtype(tiny_model):
    x = torch.randn(1, 4, 16, 16, dtype=torch.float16)
    assert upscale_latent(tiny_model, x, 2).dtype == torch.float16


def test_non_finite_output_is_reported(tiny_model, monkeypatch):
    monkeypatch.setattr(
        tiny_model.net,
        "forward",
        lambda x, s: torch.full((x.shape[0], 4, x.shape[2] * s, x.shape[3] * s), float("inf")),
    )
    with pytest.raises(LUAError, match="produced NaN/Inf values in float32; reload it with dtype bf16 or fp32"):
        upscale_latent(tiny_model, torch.randn(1, 4, 16, 16), 2)


# --------------------------------------------------------------------------- input errors


def test_wrong_channels_names_both_families(tiny_model):
    with pytest.raises(
        LatentInputError,
        match=r"this LUA model expects 4-channel SDXL latents but got 16 channels \(SD3/FLUX.1\); "
        r"load a LUA model for SD3 or FLUX.1",
    ):
        upscale_latent(tiny_model, torch.randn(1, 16, 8, 8), 2)


def test_flux_model_given_sdxl_latent():
    model = make_model(channels=16, family="flux1")
    with pytest.raises(
        LatentInputError, match=r"expects 16-channel FLUX.1 latents but got 4 channels \(SD1.x/SD2.x/SDXL\)"
    ):
        upscale_latent(model, torch.randn(1, 4, 8, 8), 2)


def test_flux2_latent_given_a_flux1_model_names_flux2_and_flux3():
    model = make_model(channels=16, family="flux1")
    with pytest.raises(
        LatentInputError,
        match=r"expects 16-channel FLUX.1 latents but got 128 channels \(FLUX.2/FLUX.3\); load a LUA model for FLUX.2/FLUX.3",
    ):
        upscale_latent(model, torch.randn(1, 128, 8, 8), 2)


def test_unknown_channel_count(tiny_model):
    with pytest.raises(LatentInputError, match="7 channels .no known image family.*not a latent family LUA knows"):
        upscale_latent(tiny_model, torch.randn(1, 7, 8, 8), 2)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_input(tiny_model, bad):
    x = torch.randn(1, 4, 8, 8)
    x[0, 1, 2, 3] = bad
    with pytest.raises(LatentInputError, match=r"contains 1 NaN/Inf value\(s\) out of 256"):
        upscale_latent(tiny_model, x, 2)


def test_empty_nested_audio_and_other_shapes(tiny_model):
    with pytest.raises(LatentInputError, match=r"the latent is empty \(shape \[0, 4, 8, 8\]\)"):
        upscale_latent(tiny_model, torch.zeros(0, 4, 8, 8), 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "nested tensors are a prototype"
        nested = torch.nested.nested_tensor([torch.randn(4, 8, 8), torch.randn(4, 8, 10)])
    with pytest.raises(LatentInputError, match="nested latents .* are not supported"):
        upscale_latent(tiny_model, nested, 2)
    with pytest.raises(LatentInputError, match="looks like an audio latent"):
        upscale_latent(tiny_model, torch.randn(1, 64, 215), 2)

    class ComfyNestedTensor:  # ComfyUI's own container: not a torch.Tensor, but says is_nested
        is_nested = True

    with pytest.raises(LatentInputError, match="nested latents"):
        upscale_latent(tiny_model, ComfyNestedTensor(), 2)
    with pytest.raises(LatentInputError, match=r"got shape \[4, 8\]"):
        upscale_latent(tiny_model, torch.randn(4, 8), 2)
    with pytest.raises(LatentInputError, match="expected a floating-point latent, got torch.int64"):
        upscale_latent(tiny_model, torch.zeros(1, 4, 8, 8, dtype=torch.long), 2)
    with pytest.raises(LatentInputError, match="expected a latent tensor, got dict"):
        upscale_latent(tiny_model, {"samples": torch.zeros(1)}, 2)


@pytest.mark.parametrize("scale", [0.5, 4.5, float("nan")])
def test_scale_out_of_range(tiny_model, scale):
    with pytest.raises(LatentInputError, match="scale"):
        upscale_latent(tiny_model, torch.randn(1, 4, 8, 8), scale)


def test_scale_beyond_the_models_heads():
    model = make_model(scales=(2,))
    with pytest.raises(LatentInputError, match=r"scale 3 is outside what this model can do \(1 to 2; heads x2\)"):
        upscale_latent(model, torch.randn(1, 4, 8, 8), 3)


# --------------------------------------------------------------------------- precision and compile paths

# Stated tolerances versus fp32 (relative L2 error), official config, random weights. Measured on CPU:
# bf16 0.0087, fp16 0.0041 (1x16x32x32, x2). The GPU kit reports the same numbers for the GPU kernels.
HALF_TOLERANCE = {torch.bfloat16: 2e-2, torch.float16: 1e-2}
COMPILED_TOLERANCE = 1e-5  # same dtype, different kernels/fusion: only rounding may differ


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_official_config_half_precision_within_stated_tolerance(official_state_dict, dtype):
    from lua_core import LUAConfig, ModelInfo, SwinIRMultiHead
    from lua_core.model import LUAModel

    net = SwinIRMultiHead(LUAConfig()).eval()
    net.load_state_dict(official_state_dict, strict=True)
    model = LUAModel(net, ModelInfo(LUAConfig(), None))
    x = torch.randn(1, 16, 32, 32, generator=torch.Generator().manual_seed(11))
    ref = upscale_latent(model, x, 2)
    model.to(dtype=dtype)
    assert rel_err(upscale_latent(model, x, 2), ref) <= HALF_TOLERANCE[dtype]


def test_compiled_path_matches_eager(tiny_model, monkeypatch):
    """LUA_COMPILE routes through torch.compile (here a backend that needs no compiler toolchain)."""
    from lua_core import engine

    x = torch.randn(2, 4, 24, 20, generator=torch.Generator().manual_seed(2))
    eager = upscale_latent(tiny_model, x, 2)
    monkeypatch.setattr(engine, "COMPILE_BACKEND", "aot_eager")
    monkeypatch.setenv("LUA_COMPILE", "1")
    compiled = upscale_latent(tiny_model, x, 2)
    assert tiny_model.net._lua_compiled["default"] is not None, "the compiled path must really have run"
    assert rel_err(compiled, eager) <= COMPILED_TOLERANCE


def test_compile_failure_falls_back_to_eager(tiny_model, monkeypatch, caplog):
    from lua_core import engine

    def broken_backend(gm, example_inputs):
        raise RuntimeError("no compiler toolchain here")

    x = torch.randn(1, 4, 16, 16)
    eager = upscale_latent(tiny_model, x, 2)
    monkeypatch.setattr(engine, "COMPILE_BACKEND", broken_backend)
    monkeypatch.setenv("LUA_COMPILE", "reduce-overhead")
    with caplog.at_level("WARNING"):
        y = upscale_latent(tiny_model, x, 2)
    assert torch.equal(y, eager)
    assert tiny_model.net._lua_compiled["reduce-overhead"] is None
    assert "running eagerly" in caplog.text


def test_unknown_compile_setting_is_refused(tiny_model, monkeypatch):
    monkeypatch.setenv("LUA_COMPILE", "fast-please")
    with pytest.raises(LUAError, match="LUA_COMPILE='fast-please' is not understood.*reduce-overhead"):
        upscale_latent(tiny_model, torch.randn(1, 4, 16, 16), 2)
