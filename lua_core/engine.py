"""The inference engine: validation, padding, tiling with feathered blending, OOM fallback.

`upscale_latent` takes and returns raw VAE-space latents (ComfyUI LATENT `samples`), 4-D `[B, C, h, w]`
(FLUX.2: 128 packed channels at 1/16, as ComfyUI holds them). 5-D `[B, C, T, h, w]` video latents are refused
unless the model's family declares video support (none does yet); then their frames go through as a batch.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import LatentInputError, LUAError, UpscaleOutOfMemoryError
from .families import FAMILIES, VIDEO_LATENTS, describe_channels, families_with_channels
from .model import LUAModel

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]


# --------------------------------------------------------------------------- validation


def check_latent(model: LUAModel, samples: object) -> None:
    """Raise LatentInputError with an actionable message if `samples` cannot go through `model`."""
    if getattr(samples, "is_nested", False):  # torch.nested and ComfyUI's own NestedTensor
        raise LatentInputError(
            "nested latents (a batch of differently sized latents, or audio+video) are not supported; "
            "upscale each latent separately or resize them to one size first"
        )
    if not isinstance(samples, torch.Tensor):
        raise LatentInputError(f"expected a latent tensor, got {type(samples).__name__}")
    if samples.ndim == 3:
        raise LatentInputError(
            f"expected an image latent [B, C, h, w] or video latent [B, C, T, h, w], got 3-D shape "
            f"{list(samples.shape)}, which looks like an audio latent; LUA upscales image and video latents only"
        )
    if samples.ndim not in (4, 5):
        raise LatentInputError(
            f"expected an image latent [B, C, h, w] or video latent [B, C, T, h, w], got shape {list(samples.shape)}"
        )
    if samples.ndim == 5 and not (model.family is not None and model.family.video):
        raise LatentInputError(_video_message(samples.shape))
    if samples.numel() == 0:
        raise LatentInputError(f"the latent is empty (shape {list(samples.shape)}); nothing to upscale")
    if not samples.is_floating_point():
        raise LatentInputError(f"expected a floating-point latent, got {samples.dtype}")
    channels = samples.shape[1]
    want = model.channels
    if channels != want:
        raise LatentInputError(_channel_message(model, channels))
    bad = (~torch.isfinite(samples)).sum().item()
    if bad:
        raise LatentInputError(
            f"the input latent contains {bad} NaN/Inf value(s) out of {samples.numel()}; "
            "the sampler or VAE upstream produced them (try fp32 VAE/sampling or another seed)"
        )


def _video_message(shape: torch.Size) -> str:
    """Why a 5-D latent is refused: which video VAE it likely comes from, and what to use instead."""
    channels, frames = shape[1], shape[2]
    source = VIDEO_LATENTS.get(channels)
    likely = f"likely from {source}" if source else "from a video VAE that LUA does not know"
    single = (
        " (a single frame, as Qwen-Image and Wan hand over still images, is still that VAE's latent space)"
        if frames == 1
        else ""
    )
    image = ", ".join(f.label for f in FAMILIES.values() if not f.video)
    return (
        f"expected an image latent [B, C, h, w], got a 5-D video latent {list(shape)} ({channels} channels, "
        f"{frames} frame{'' if frames == 1 else 's'}), {likely}. LUA models are trained for image VAEs only "
        f"({image}), so this latent would come out wrong{single}; use core's Upscale Latent instead, or decode "
        "it and upscale the frames with a pixel upscaler"
    )


def _channel_message(model: LUAModel, channels: int) -> str:
    fam = model.family
    expects = f"{model.channels}-channel {fam.label}" if fam else describe_channels(model.channels)
    got = describe_channels(channels)
    matching = families_with_channels(channels)
    todo = (
        f"load a LUA model for {' or '.join(f.label for f in matching)}"
        if matching
        else "this is not a latent family LUA knows; check what feeds the node"
    )
    return f"this LUA model expects {expects} latents but got {got}; {todo}"


def pick_head(model: LUAModel, scale: float) -> int:
    """Smallest head scale >= `scale`; errors name the range this model covers."""
    if not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise LatentInputError(f"scale must be a finite number, got {scale!r}")
    top = max(model.scales)
    if scale < 1.0 or scale > top + 1e-9:
        raise LatentInputError(
            f"scale {scale:g} is outside what this model can do (1 to {top}; heads "
            f"{', '.join(f'x{s}' for s in model.scales)})"
        )
    return min(s for s in model.scales if s >= scale - 1e-9)


# --------------------------------------------------------------------------- padding


def reflect_indices(n: int, total: int, device: torch.device | None = None) -> torch.Tensor:
    """Indices 0..n-1 continued by mirror reflection to `total` entries (any total, any n >= 1)."""
    i = torch.arange(total, device=device)
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = i % period
    return torch.where(i < n, i, period - i)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad bottom/right to a multiple; same as F.pad(reflect) where that is defined.

    Unlike F.pad it also works when the pad is as large as the side (sides of 1..8 with a
    16 window), by continuing the reflection instead of failing.
    """
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph:
        x = x.index_select(-2, reflect_indices(h, h + ph, x.device))
    if pw:
        x = x.index_select(-1, reflect_indices(w, w + pw, x.device))
    return x


def run_network(model: LUAModel, x: torch.Tensor, scale: int) -> torch.Tensor:
    """Pad, run one head, crop: [N, C, h, w] -> [N, C, h*scale, w*scale] in the model's dtype."""
    h, w = x.shape[-2:]
    x = pad_to_multiple(x.to(device=model.device, dtype=model.dtype), model.net.tile_align)
    return network_forward(model, x, scale)[..., : h * scale, : w * scale]


# --------------------------------------------------------------------------- torch.compile (opt-in)

COMPILE_ENV = "LUA_COMPILE"
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
COMPILE_BACKEND = "inductor"  # tests swap in a backend that needs no C++/Triton toolchain


def compile_mode() -> str | None:
    """The torch.compile mode asked for by LUA_COMPILE: unset/0 = off (eager), 1 = default, or a mode name."""
    value = os.environ.get(COMPILE_ENV, "").strip().lower()
    if value in ("", "0", "off", "false", "no"):
        return None
    if value in ("1", "on", "true", "yes"):
        return "default"
    if value not in COMPILE_MODES:
        raise LUAError(
            f"{COMPILE_ENV}={value!r} is not understood; expected 0 (off), 1 (on) or a torch.compile mode: "
            f"{', '.join(COMPILE_MODES)}"
        )
    return value


def network_forward(model: LUAModel, x: torch.Tensor, scale: int) -> torch.Tensor:
    """`model.net(x, scale)`, through torch.compile when LUA_COMPILE asks for it; eager if compiling fails.

    reduce-overhead mode replays CUDA graphs and reuses their output buffers: callers copy the
    result before the next call (run_tiled does).
    """
    mode = compile_mode()
    if mode is None or torch.is_grad_enabled():
        return model.net(x, scale)
    compiled = getattr(model.net, "_lua_compiled", {})
    if mode not in compiled:
        try:
            compiled[mode] = torch.compile(model.net, mode=mode, dynamic=False, backend=COMPILE_BACKEND)
        except Exception as err:  # noqa: BLE001 - any failure to set up compile means: run eagerly
            log.warning("LUA: torch.compile(mode=%s) is unavailable, running eagerly: %s", mode, _first_line(err))
            compiled[mode] = None
        model.net._lua_compiled = compiled
    fn = compiled[mode]
    if fn is None:
        return model.net(x, scale)
    try:
        return fn(x, scale)
    except Exception as err:  # noqa: BLE001 - OOM re-raised for the tiling fallback, else eager from now on
        if is_oom(err):
            raise
        log.warning("LUA: torch.compile(mode=%s) failed, running eagerly from now on: %s", mode, _first_line(err))
        compiled[mode] = None
    return model.net(x, scale)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"


# --------------------------------------------------------------------------- memory


def free_memory(device: torch.device) -> int:
    """Bytes this process can still allocate on `device` (best effort)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type == "mps" and hasattr(torch.mps, "recommended_max_memory"):
        return max(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory(), 1 << 30)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def bytes_per_pixel(model: LUAModel, scale: int) -> int:
    """Rough peak bytes per input latent pixel of one image (measured peaks stay below it)."""
    return model.net.activation_bytes(scale, torch.finfo(model.dtype).bits // 8)


def estimate_memory(model: LUAModel, shape: tuple[int, ...] | torch.Size, scale: float) -> int:
    """Bytes an untiled run of a latent of `shape` needs on the model's device (weights included)."""
    head = pick_head(model, scale) if scale > 1 else min(model.scales)
    n = shape[0] * (shape[2] if len(shape) == 5 else 1)
    pixels = shape[-2] * shape[-1]
    weights = sum(p.numel() * p.element_size() for p in model.net.parameters())
    return weights + n * pixels * bytes_per_pixel(model, head) + mask_bytes(model)


def working_memory(model: LUAModel, shape: tuple[int, ...] | torch.Size, scale: float) -> int:
    """Bytes for one image at a moderate tile (at most 8 windows a side): what to reserve before a run."""
    side = min(max(shape[-2:]), 2 * model.net.min_tile)
    weights = sum(p.numel() * p.element_size() for p in model.net.parameters())
    return estimate_memory(model, (1, shape[1], side, side), scale) - weights


def mask_bytes(model: LUAModel) -> int:
    """Bytes the network caches between calls (v1: attention masks; v2: nothing)."""
    return model.net.cache_bytes(torch.finfo(model.dtype).bits // 8)


OOM_ERRORS = (
    getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError),
    MemoryError,
)  # torch < 2.5 lacks the alias


def is_oom(err: BaseException) -> bool:
    """True for out-of-memory errors from any backend."""
    if isinstance(err, OOM_ERRORS) and not isinstance(err, UpscaleOutOfMemoryError):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _release_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


@dataclass
class TilePlan:
    """How one call is cut into work: tile side (input latent pixels), overlap and batch chunk."""

    tile: int
    overlap: int
    batch: int


def tile_spans(size: int, tile: int, overlap: int, window: int) -> list[tuple[int, int]]:
    """[start, end) of each tile along one axis, every neighbour overlapping by at least `overlap`.

    Starts are multiples of the window so every tile cuts the same windows as an untiled
    run; only context beyond a tile's edge differs, and the feather hides that. The last
    tile is aligned to the end, so it may overlap more than one neighbour; blending
    normalises by the summed weights, so that only costs a little extra work.
    """
    if size <= tile:
        return [(0, size)]
    step = max(window, (tile - overlap) // window * window)
    starts = list(range(0, size - tile, step))
    last = (size - tile) // window * window
    if not starts or last > starts[-1]:
        starts.append(last)
    return [(s, s + tile) for s in starts[:-1]] + [(starts[-1], size)]


def plan_tiles(
    model: LUAModel,
    n: int,
    h: int,
    w: int,
    scale: int,
    tile_size: int | None,
    tile_overlap: int | None,
    memory_budget: int | None,
) -> TilePlan:
    """Choose tile side and batch chunk: the caller's tile size, or the largest that fits the budget."""
    win = model.net.tile_align
    floor = min_tile(model)
    if tile_size:
        # whole windows, no smaller than the floor, no larger than the latent (a bigger tile only wastes OOM retries)
        tile = min(max(floor, int(tile_size) // win * win), max(floor, -(-max(h, w) // win) * win))
        batch = n
    else:
        budget = memory_budget if memory_budget is not None else int(free_memory(model.device) * 0.6)
        per_px = bytes_per_pixel(model, scale)
        side = max(h, w)
        tile, batch = min(side, model.net.max_auto_tile(model.device.type) or side), n
        while tile > floor and batch * tile * min(tile, min(h, w)) * per_px + mask_bytes(model) > budget:
            tile = max(floor, tile // 2 // win * win)
        while batch > 1 and batch * tile * tile * per_px > budget:
            batch = (batch + 1) // 2
    overlap = tile_overlap if tile_overlap is not None else default_overlap(model, tile)
    overlap = min(max(0, int(overlap)), tile // 2)
    return TilePlan(tile, overlap, batch)


def min_tile(model: LUAModel) -> int:
    """Smallest tile side (v1: four windows, so the two-window overlap still leaves clean context)."""
    return model.net.min_tile


def default_overlap(model: LUAModel, tile: int) -> int:
    """Overlap between tiles: the network's context (v1: two windows), at most half a tile."""
    return min(model.net.context, tile // 2)


def feather(spans: list[tuple[int, int]], i: int, scale: int, margin: int, device: torch.device) -> torch.Tensor:
    """Blend weights of tile i along one axis, in output pixels.

    Inside an overlap the weight is 0 for the `margin` pixels nearest the tile's own edge
    (where the last, cyclically shifted window lacks real context), then ramps linearly to 1.
    The neighbour's ramp is the mirror image; run_tiled divides by the summed weights, so
    the blend is exact wherever two or more tiles meet.
    """
    start, end = spans[i]
    r = torch.ones((end - start) * scale, device=device)

    def ramp(overlap: int) -> torch.Tensor:
        m = min(margin, overlap // 3) * scale
        n = overlap * scale
        u = torch.arange(n, device=device, dtype=torch.float32)
        return ((u - m + 0.5) / max(1, n - 2 * m)).clamp(0, 1)

    if i > 0:
        lead = spans[i - 1][1] - start
        r[: lead * scale] = ramp(lead)
    if i + 1 < len(spans):
        trail = end - spans[i + 1][0]
        r[r.shape[0] - trail * scale :] = torch.minimum(r[r.shape[0] - trail * scale :], ramp(trail).flip(0))
    return r


def run_tiled(
    model: LUAModel,
    x: torch.Tensor,
    scale: int,
    plan: TilePlan,
    progress: ProgressFn | None = None,
) -> torch.Tensor:
    """Upscale [N, C, h, w] by an integer head with overlapping feathered tiles; float32 result on x.device."""
    n, c, h, w = x.shape
    win = model.net.tile_align
    rows = tile_spans(h, plan.tile, plan.overlap, win)
    cols = tile_spans(w, plan.tile, plan.overlap, win)
    batches = [(b, min(n, b + plan.batch)) for b in range(0, n, plan.batch)]
    # progress counts network stages (v1: transformer blocks; v2: prior and residual blocks), so a single
    # untiled pass moves the bar (and can be cancelled) too
    blocks = model.net.progress_calls(scale)
    total, done = len(batches) * len(rows) * len(cols) * blocks, 0
    tiled = len(rows) * len(cols) > 1
    out = torch.zeros(n, c, h * scale, w * scale, dtype=torch.float32, device=x.device)
    weight = torch.zeros(h * scale, w * scale, dtype=torch.float32, device=x.device) if tiled else None

    def block_done(*_) -> None:
        nonlocal done
        done = min(done + 1, total)
        progress(done, total)

    def tile_done(tiles: int) -> None:
        # a tile may skip stages (decoder matching skips a tile with nothing smooth): catch the bar up
        nonlocal done
        if progress is not None and done < tiles * blocks:
            done = tiles * blocks
            progress(done, total)

    with after_each_block(model, block_done if progress is not None else None):
        _run_tiles(model, x, scale, batches, rows, cols, out, weight, tile_done)
    return out / weight if tiled else out


def after_each_block(model: LUAModel, callback: Callable[..., None] | None) -> contextlib.AbstractContextManager:
    """Call `callback` after every progress module of the network inside the `with` (nothing if None)."""
    if callback is None:
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    for block in model.net.progress_modules():
        stack.callback(block.register_forward_hook(callback).remove)
    return stack


def _run_tiles(model, x, scale, batches, rows, cols, out, weight, tile_done) -> None:
    """Accumulate every tile's output into `out` (feathered into `weight` when tiled), calling `tile_done(tiles
    finished so far)` after each."""
    win = model.net.context // 2  # feather margin: the v1 window; half the v2 context
    tiled = weight is not None
    finished = 0
    for b0, b1 in batches:
        for iy, (y0, y1) in enumerate(rows):
            for ix, (x0, x1) in enumerate(cols):
                tile = run_network(model, x[b0:b1, :, y0:y1, x0:x1], scale).float().to(x.device)
                region = (slice(y0 * scale, y1 * scale), slice(x0 * scale, x1 * scale))
                if tiled:
                    wt = (
                        feather(rows, iy, scale, win, x.device)[:, None]
                        * feather(cols, ix, scale, win, x.device)[None, :]
                    )
                    out[(slice(b0, b1), slice(None)) + region] += tile * wt
                    if b0 == 0:
                        weight[region] += wt
                else:
                    out[b0:b1] = tile
                finished += 1
                tile_done(finished)


# --------------------------------------------------------------------------- public API


def upscale_latent(
    model: LUAModel,
    samples: torch.Tensor,
    scale: float,
    *,
    tile_size: int | None = None,
    tile_overlap: int | None = None,
    memory_budget: int | None = None,
    progress: ProgressFn | None = None,
) -> torch.Tensor:
    """Upscale a raw latent by `scale` in [1, max head]; returns a raw latent like the input.

    Heads run at their own integer factor; other scales take the next larger head and an
    antialiased bicubic downscale to exactly round(h*scale) x round(w*scale). Tiles are
    chosen from free memory unless `tile_size` is given; on out-of-memory the tile (then
    the batch chunk) is halved and the work restarted, down to a floor. `progress(done,
    total)` is called after each transformer block of each tile and may raise to cancel.
    """
    check_latent(model, samples)
    head = pick_head(model, scale)
    if scale == 1.0:
        return samples.clone()
    video = samples.ndim == 5
    if video:
        b, c, t, h, w = samples.shape
        x = samples.movedim(2, 1).reshape(b * t, c, h, w)
    else:
        x = samples
    n, c, h, w = x.shape
    target = (round(h * scale), round(w * scale))
    plan = plan_tiles(model, n, h, w, head, tile_size, tile_overlap, memory_budget)
    with torch.no_grad():
        y = _run_with_fallback(model, x, head, plan, progress)
        if not torch.isfinite(y).all():
            raise LUAError(
                f"the model produced NaN/Inf values in {str(model.dtype).replace('torch.', '')}; "
                "reload it with dtype bf16 or fp32"
            )
        if target != tuple(y.shape[-2:]):
            y = F.interpolate(y, size=target, mode="bicubic", antialias=True, align_corners=False)
    y = y.to(device=samples.device, dtype=samples.dtype)
    if video:
        y = y.reshape(b, t, c, *target).movedim(1, 2)
    return y


def _run_with_fallback(
    model: LUAModel, x: torch.Tensor, scale: int, plan: TilePlan, progress: ProgressFn | None
) -> torch.Tensor:
    floor = min_tile(model)
    win = model.net.tile_align
    while True:
        try:
            return run_tiled(model, x, scale, plan, progress)
        except Exception as err:  # noqa: BLE001 - only OOM is handled, everything else re-raised
            if not is_oom(err):
                raise
            failure = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        # outside the except block, so the failed attempt's tensors are no longer referenced
        _release_memory(model.device)
        if plan.tile > floor:
            new_tile = max(floor, plan.tile // 2 // win * win)
            log.warning("LUA: out of memory with %d px tiles, retrying with %d", plan.tile, new_tile)
            plan = TilePlan(new_tile, min(plan.overlap, new_tile // 2), plan.batch)
        elif plan.batch > 1:
            log.warning("LUA: out of memory with batch chunk %d, retrying with %d", plan.batch, plan.batch // 2)
            plan = TilePlan(plan.tile, plan.overlap, plan.batch // 2)
        else:
            raise UpscaleOutOfMemoryError(
                f"out of memory on {model.device} even with {plan.tile}x{plan.tile} latent tiles and batch 1 "
                f"({x.shape[-2]}x{x.shape[-1]} latent, model in {str(model.dtype).replace('torch.', '')}); "
                f"free memory (unload other models), load the LUA model in bf16/fp16, or run on the CPU [{failure}]"
            )
