"""LUA v2: a frozen re-encode prior plus a learned residual.

    out = E(up(D(z), s)) + f(z, prior, D(z))

D and E are the family's tiny autoencoder (TAESD family), frozen and stored in the same file; `up` is bicubic,
or for the heads in `upscaler_scales` bicubic plus a small learned pixel residual (`arch/pixel_upscaler.py`,
trained in pixel space after the rest and frozen with the prior). The prior
is exactly the "decode -> resize -> encode" route t = E(up), optionally followed by `refine_steps`
back-projection steps p <- p + rate * (t - E(D(p))) that pull D(p) towards the bicubic pixels where the
round trip E -> D loses them (taef2: about +0.4 dB at x2; under taesdxl the iteration diverges, so SDXL
models use 0 steps; bench/prior_refinement.py measures it). `f` is a small conv network that runs at the
*input* latent resolution (the prior and the decoded pixels enter it by space-to-depth) and writes its
residual through a pixel-shuffle head per scale whose last conv starts at zero, so an untrained model
returns the prior tensor itself and training can only add to it. The "+error" input variant also gives `f` the
round-trip error t - E(D(t)) (what one back-projection step adds, before its rate), so `f` can learn a
spatially varying step where a fixed rate diverges; with refine_steps >= 1 the prior computes it anyway.

Decoder matching (`match_by_scale`, per head, off by default) is a last, test-time step: the tiny decoder paints
a fine grain into smooth areas (a dark bokeh crop: pixel bicubic 40.1 dB, D(E(HR)) 39.5, the prior 37.0), which
no latent from the encoder avoids. So where the bicubic pixels are smooth (local luma std below `sigma`), the
output latent takes a few Adam steps on ||D(q) - T||^2, T = the bicubic pixels there and D(prior + residual)
elsewhere; textured areas keep what the residual added. Adam's first steps move every latent value by about the
step size whatever its gradient, so the step is chosen per head: taef2 overshoots at 0.05 where taesdxl and taef1
do not (ad-hoc, FLUX.2 x2, a smooth photo: 38.4 dB unmatched, 34.5 at step 0.05, 37.9 at 0.01; the photos
and renders tools/match_decoder_heads.py scores gained 0.18 dB at 0.01).

Everything inside works on the family's scaled, unpacked latent (what the tiny autoencoder reads);
`forward` takes and returns the raw latent as ComfyUI holds it (FLUX.2: 128 packed channels).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..devices import cpu_has_native_bf16
from ..errors import UnknownConfigKeys
from .pixel_upscaler import PixelUpscaler, resize_pixels
from .taesd import make_decoder, make_encoder

INPUT_VARIANTS = ("latent+prior", "latent+prior+pixels", "latent+prior+pixels+error")
PIXEL_FACTOR = 8  # the tiny autoencoders' spatial factor (image pixels per unpacked latent pixel)
MATCH_WINDOW = 17  # output pixels per side of the window whose luma std says "smooth"
# Adam step on the scaled latent when a file names none (files of 2026-12-05 stored [scale, steps, sigma]; 10 steps
# took a bokeh crop from 37.0 to 39.5 dB, FLUX.1 x4)
MATCH_LR = 0.05


@dataclass(frozen=True)
class ReencodeResidualConfig:
    """Every hyperparameter that changes the weights' shapes or the forward pass of a v2 model."""

    channels: int = 4  # the LATENT as ComfyUI holds it (FLUX.2: 128)
    patch: int = 1  # FLUX.2: the LATENT is the VAE latent packed 2x2 into channels
    scale_factor: float = 0.13025  # raw -> scaled: (x - shift) * scale, the family's sampler convention
    shift_factor: float = 0.0
    scales: tuple[int, ...] = (2, 4)
    width: int = 64
    blocks: int = 8
    inputs: str = "latent+prior+pixels"
    resize: str = "bicubic"  # how the prior resizes the decoded pixels (the only rule so far)
    # heads whose prior adds a learned pixel residual to that resize (arch/pixel_upscaler.py), and its shape
    upscaler_scales: tuple[int, ...] = ()
    upscaler_width: int = 32
    upscaler_depth: int = 5
    upscaler_highpass: float = 0.0  # sigma (input pixels) of the low frequencies taken out of their residual; 0: none
    # (scale, sigma) for upscalers whose high-pass differs from upscaler_highpass: a head can take the sigma its
    # own upscaler needs without changing what the other heads compute
    upscaler_highpass_by_scale: tuple[tuple[int, float], ...] = ()
    pooled_encoder: tuple[int, ...] = ()  # taef2: encoder/decoder blocks with the extra pooled branch
    pooled_decoder: tuple[int, ...] = ()
    refine_steps: int = 0  # back-projection steps on the prior (0 = plain decode -> bicubic -> encode)
    refine_rate: float = 0.0  # step size of each: p <- p + rate * (E(target) - E(D(p)))
    # (scale, steps, rate) for heads whose prior refines differently: a head whose residual is switched off can
    # take the setting best for the prior alone without changing what the other heads were trained on
    refine_by_scale: tuple[tuple[int, int, float], ...] = ()
    # (scale, steps, sigma, Adam step) for heads whose output is matched to the decoder in smooth areas (see the
    # docstring); an entry without the step takes MATCH_LR
    match_by_scale: tuple[tuple[int, int, float, float], ...] = ()

    def __post_init__(self) -> None:
        for name in ("scales", "pooled_encoder", "pooled_decoder", "upscaler_scales"):
            object.__setattr__(self, name, tuple(sorted(int(v) for v in getattr(self, name))))
        by_scale = tuple(sorted((int(s), int(k), float(r)) for s, k, r in self.refine_by_scale))
        object.__setattr__(self, "refine_by_scale", by_scale)
        matches = tuple(sorted(map(_match_entry, self.match_by_scale)))
        object.__setattr__(self, "match_by_scale", matches)
        highpasses = tuple(sorted((int(s), float(sg)) for s, sg in self.upscaler_highpass_by_scale))
        object.__setattr__(self, "upscaler_highpass_by_scale", highpasses)
        problems = []
        if self.channels % (self.patch * self.patch):
            problems.append(f"channels {self.channels} not divisible by patch^2 = {self.patch**2}")
        if not self.scales or any(s not in (2, 3, 4, 8) for s in self.scales):
            problems.append(f"scales {self.scales} must be a non-empty subset of 2, 3, 4, 8")
        if self.inputs not in INPUT_VARIANTS:
            problems.append(f"inputs {self.inputs!r} must be one of {INPUT_VARIANTS}")
        if self.resize != "bicubic":
            problems.append(f"resize {self.resize!r}: only 'bicubic' is defined")
        for scale, steps, rate in ((None, self.refine_steps, self.refine_rate), *self.refine_by_scale):
            if steps < 0 or (steps and not 0 < rate <= 1):
                head = "" if scale is None else f"x{scale}: "
                problems.append(f"{head}refine steps {steps} / rate {rate}: need steps >= 0, 0 < rate <= 1")
        if any(s not in self.scales for s, _, _ in self.refine_by_scale) or len(
            {s for s, _, _ in self.refine_by_scale}
        ) < len(self.refine_by_scale):
            problems.append(f"refine_by_scale {self.refine_by_scale}: one entry at most per head of {self.scales}")
        if any(s not in self.scales or k < 1 or sg <= 0 or lr <= 0 for s, k, sg, lr in matches) or len(
            {m[0] for m in matches}
        ) < len(matches):
            problems.append(
                f"match_by_scale {matches}: one (scale, steps >= 1, sigma > 0, step > 0) at most per head of "
                f"{self.scales}"
            )
        if any(s not in self.scales for s in self.upscaler_scales):
            problems.append(f"upscaler_scales {self.upscaler_scales}: each must be a head of {self.scales}")
        if self.upscaler_scales and (self.upscaler_width < 4 or self.upscaler_depth < 0):
            problems.append(f"upscaler width {self.upscaler_width} / depth {self.upscaler_depth} too small")
        if self.upscaler_highpass < 0:
            problems.append(f"upscaler_highpass {self.upscaler_highpass}: a sigma >= 0 (0: none)")
        if any(s not in self.upscaler_scales or sg < 0 for s, sg in highpasses) or len(
            {s for s, _ in highpasses}
        ) < len(highpasses):
            problems.append(
                f"upscaler_highpass_by_scale {highpasses}: one (scale, sigma >= 0) at most per upscaler of "
                f"{self.upscaler_scales}"
            )
        if self.width < 8 or self.blocks < 1:
            problems.append(f"width {self.width} / blocks {self.blocks} too small")
        if problems:
            raise ValueError("invalid LUA v2 config: " + "; ".join(problems))

    def refine_for(self, scale: int) -> tuple[int, float]:
        """(back-projection steps, rate) of the prior under head `scale`."""
        for s, steps, rate in self.refine_by_scale:
            if s == scale:
                return steps, rate
        return self.refine_steps, self.refine_rate

    def highpass_for(self, scale: int) -> float:
        """High-pass sigma of head `scale`'s pixel upscaler (0: none)."""
        return next((sg for s, sg in self.upscaler_highpass_by_scale if s == scale), self.upscaler_highpass)

    def match_for(self, scale: int) -> tuple[int, float, float]:
        """(decoder-matching steps, smoothness sigma, Adam step) of head `scale`; (0, 0.0, 0.0) when off."""
        return next(((k, sg, lr) for s, k, sg, lr in self.match_by_scale if s == scale), (0, 0.0, 0.0))

    @property
    def vae_channels(self) -> int:
        """Channels of the unpacked latent the tiny autoencoder works on."""
        return self.channels // (self.patch * self.patch)

    def to_json(self) -> str:
        """JSON text of this config (as stored in checkpoint metadata)."""
        data = asdict(self)
        if not self.upscaler_highpass_by_scale:  # only files that use it carry it, so older packs read the rest
            del data["upscaler_highpass_by_scale"]
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> ReencodeResidualConfig:
        """Build a config from a dict, refusing unknown keys."""
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            known = sorted(cls.__dataclass_fields__)
            raise UnknownConfigKeys(f"unknown LUA v2 config keys {unknown}; known keys are {known}", unknown)
        return cls(**data)


def _match_entry(entry: tuple | list) -> tuple[int, int, float, float]:
    """A match_by_scale entry as (scale, steps, sigma, Adam step); entries written before the step was stored
    (three values) take MATCH_LR."""
    if len(entry) not in (3, 4):
        raise ValueError(f"invalid LUA v2 config: match_by_scale entry {list(entry)} is not [scale, steps, sigma, step]")
    s, k, sg, lr = (*entry, MATCH_LR) if len(entry) == 3 else entry
    return int(s), int(k), float(sg), float(lr)


class ResBlock(nn.Module):
    """conv-ReLU-conv with an identity skip (EDSR style, no normalisation)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, 1, 1)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


def smooth_weight(pixels: torch.Tensor, sigma: float) -> torch.Tensor:
    """Per-pixel weight [B, 1, H, W] in [0, 1]: 1 where the luma is flat, 0 where its local std reaches `sigma`."""
    luma = (pixels * pixels.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    pad = MATCH_WINDOW // 2
    mean = F.avg_pool2d(luma, MATCH_WINDOW, 1, pad, count_include_pad=False)
    var = F.avg_pool2d(luma * luma, MATCH_WINDOW, 1, pad, count_include_pad=False) - mean * mean
    return (1 - var.clamp_min(0).sqrt() / sigma).clamp(0, 1)


def match_autocast(latent: torch.Tensor) -> contextlib.AbstractContextManager:
    """bf16 autocast for the decoder-matching steps of an fp32 latent on a CPU with native bf16, else nothing.

    The steps are an optimisation that corrects its own rounding, so bf16 gradients land where fp32 ones do (the
    report moved by <= 0.01 dB) in well under half the time (AMX, 2 threads; README, Decoder matching); the latent
    itself and its update stay fp32. Elsewhere bf16 is emulated and slower than fp32."""
    if latent.device.type == "cpu" and latent.dtype == torch.float32 and cpu_has_native_bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class ReencodePrior(nn.Module):
    """decode -> resize -> encode with the family's tiny autoencoder, on the scaled unpacked latent."""

    def __init__(self, cfg: ReencodeResidualConfig) -> None:
        super().__init__()
        self.decoder = make_decoder(cfg.vae_channels, cfg.pooled_decoder)
        self.encoder = make_encoder(cfg.vae_channels, cfg.pooled_encoder)
        self.upscalers = nn.ModuleDict(
            {
                f"x{s}": PixelUpscaler(s, cfg.upscaler_width, cfg.upscaler_depth, cfg.highpass_for(s))
                for s in cfg.upscaler_scales
            }
        )
        self.requires_grad_(False)

    def decode(self, zs: torch.Tensor) -> torch.Tensor:
        """Scaled latent -> RGB clamped to [0, 1] (the pixel route's first step)."""
        return self.decoder(zs).clamp(0, 1)

    def upscale(self, pixels: torch.Tensor, scale: int) -> torch.Tensor:
        """Decoded pixels [B, 3, H, W] -> [B, 3, H*scale, W*scale]: head `scale`'s learned upscaler, else bicubic."""
        if f"x{scale}" in self.upscalers:
            return self.upscalers[f"x{scale}"](pixels)
        return resize_pixels(pixels, (pixels.shape[-2] * scale, pixels.shape[-1] * scale))

    def forward(
        self, up: torch.Tensor, refine: tuple[int, float], with_error: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Upscaled pixels (`upscale`) -> (their scaled latent after `refine` = (steps, rate) back-projection
        steps, and with `with_error` the round-trip error t - E(D(t)) of the re-encoded target t, else None)."""
        target = self.encoder(up)
        prior, error = target, None
        steps, rate = refine
        for _ in range(steps):  # back-projection: move the latent by what the round trip lost
            lost = target - self.encoder(self.decode(prior))
            error = lost if error is None else error
            prior = prior + rate * lost
        if with_error and error is None:
            error = target - self.encoder(self.decode(target))
        return prior, error if with_error else None

    def match(self, latent: torch.Tensor, up: torch.Tensor, steps: int, sigma: float, lr: float) -> torch.Tensor:
        """`latent` + mask * delta after `steps` Adam steps of size `lr` on ||D(.) - T||^2, T = `up` (the prior's
        upscaled pixels) where it is smooth and
        D(latent) elsewhere; the mask (smooth share of each latent pixel's 8x8 block, spread one latent pixel)
        leaves the latent of textured areas exactly as it was (Adam would move them by its step size)."""
        weight = smooth_weight(up, sigma)
        mask = F.max_pool2d(F.avg_pool2d(weight, PIXEL_FACTOR), 3, 1, 1)
        if not mask.any():  # nothing smooth (a textured tile): the steps could only return `latent` itself
            return latent
        target = weight * up + (1 - weight) * self.decode(latent)
        # ComfyUI runs nodes under inference mode; tensors made there (inputs, even weights loaded there) cannot
        # take part in autograd, so the steps work on clones made outside it
        with torch.inference_mode(False), torch.enable_grad(), match_autocast(latent):
            params = {k: v.clone() for k, v in self.decoder.named_parameters()}
            start, target, mask = latent.float().clone(), target.float().clone(), mask.float().clone()
            delta = torch.zeros_like(start, requires_grad=True)
            opt = torch.optim.Adam([delta], lr=lr)
            for _ in range(steps):
                decoded = torch.func.functional_call(self.decoder, params, ((start + mask * delta).to(latent.dtype),))
                # a sum, not a mean: Adam ignores the scale, and a tile's steps then equal the whole image's
                loss = (decoded.float() - target).square().sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            return (start + mask * delta.detach()).to(latent.dtype)


class ReencodeResidual(nn.Module):
    """The v2 LUA network: frozen re-encode prior + learned residual, one head per scale."""

    ARCH = "reencode_residual"
    FORMAT_VERSION = 2

    def __init__(self, cfg: ReencodeResidualConfig) -> None:
        super().__init__()
        self.config = cfg
        c, w = cfg.vae_channels, cfg.width
        self.prior = ReencodePrior(cfg)
        self.stems = nn.ModuleDict({f"x{s}": nn.Conv2d(self.input_channels(s), w, 3, 1, 1) for s in cfg.scales})
        self.trunk = nn.Sequential(*[ResBlock(w) for _ in range(cfg.blocks)])
        self.heads = nn.ModuleDict({f"x{s}": nn.Conv2d(w, c * s * s, 3, 1, 1) for s in cfg.scales})
        for head in self.heads.values():  # zero residual at the start: the untrained model *is* the prior
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    # what the engine asks every LUA network (tiling, memory, progress)
    @property
    def channels(self) -> int:
        """Latent channels in and out (as ComfyUI holds the LATENT)."""
        return self.config.channels

    tile_align = 1  # convolutions only: a tile may start anywhere
    min_tile = 48  # twice the context, so the default overlap always fits
    # input latent pixels of overlap: the prior's tile edge reaches ~10 px in; with 16 a seam of 2/255 stayed
    # on a photo, with 24 (8 px dropped, 16 px blended) under 0.3/255 (tests/test_v2.py)
    context = 24

    def progress_modules(self) -> list[nn.Module]:
        """Modules whose every forward call is one unit of progress (and a chance to cancel): each conv of the
        tiny autoencoder (a block at full pixel resolution takes seconds on a CPU) and each residual block (the
        pixel upscalers are a small share of a decode and count as none)."""
        convs = [m for part in (self.prior.decoder, self.prior.encoder) for m in part.modules() if isinstance(m, nn.Conv2d)]
        return [*convs, *self.trunk]

    @property
    def uses_error(self) -> bool:
        """Whether `f` reads the prior's round-trip error (the "+error" input variant)."""
        return self.config.inputs.endswith("+error")

    def round_trips(self, scale: int) -> int:
        """Tiny decode + encode passes at the output size after the first encode (refinement, error input)."""
        return max(self.config.refine_for(scale)[0], int(self.uses_error))

    def progress_calls(self, scale: int) -> int:
        """Forward calls of the progress modules in one pass of head `scale` (each round trip reruns the prior's
        convs, each decoder-matching step its decoder's, after one decode for the target)."""
        decoder_convs = sum(isinstance(m, nn.Conv2d) for m in self.prior.decoder.modules())
        convs = decoder_convs + sum(isinstance(m, nn.Conv2d) for m in self.prior.encoder.modules())
        steps = self.config.match_for(scale)[0]
        return convs * (1 + self.round_trips(scale)) + len(self.trunk) + decoder_convs * (steps + 1 if steps else 0)

    def max_auto_tile(self, device_type: str) -> int | None:
        """Largest automatic tile: on a CPU one prior conv at 64-pixel tiles (x2: 1024 px out) takes ~2 s, so
        Cancel answers within seconds; GPUs take whatever fits in memory."""
        return 64 if device_type == "cpu" else None

    def activation_bytes(self, scale: int, elem: int) -> int:
        """Rough peak bytes per input latent pixel of one image: the prior's pixel-resolution activations dominate."""
        pixels_in = (PIXEL_FACTOR * self.config.patch) ** 2  # image pixels per input latent pixel
        decoder = pixels_in * 64 * 4  # a few 64-channel maps alive at once at full resolution
        encoder = pixels_in * scale * scale * 64 * 3
        if self.round_trips(scale):  # refinement (or the error input) decodes at the output size
            decoder = max(decoder, pixels_in * scale * scale * 64 * 4)
        if self.config.match_for(scale)[0]:  # a backward pass keeps every decoder activation at the output size
            decoder = max(decoder, pixels_in * scale * scale * 64 * 16)
        if scale in self.config.upscaler_scales:  # its convs run at the input pixels' resolution
            decoder = max(decoder, pixels_in * self.config.upscaler_width * 3)
        residual = self.config.width * 6 + self.config.vae_channels * scale * scale * 4
        return int((decoder + encoder + residual) * elem * 1.25)

    def cache_bytes(self, elem: int) -> int:
        """Nothing is cached between calls."""
        return 0

    def input_channels(self, scale: int) -> int:
        """Channels `f` sees at the input resolution: latent, space-to-depth prior, (pixels), (error), in that
        order (a warm start from a variant with fewer inputs extends the stem at its end)."""
        c = self.config.vae_channels
        pixels = 3 * PIXEL_FACTOR * PIXEL_FACTOR if "+pixels" in self.config.inputs else 0
        error = c * scale * scale if self.uses_error else 0
        return c + c * scale * scale + pixels + error

    def to_scaled(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw ComfyUI latent -> the tiny autoencoder's scaled, unpacked latent."""
        cfg = self.config
        x = (raw - cfg.shift_factor) * cfg.scale_factor
        return x if cfg.patch == 1 else F.pixel_shuffle(x, cfg.patch)

    def to_raw(self, scaled: torch.Tensor) -> torch.Tensor:
        """Scaled, unpacked latent -> raw ComfyUI latent (the inverse of `to_scaled`)."""
        cfg = self.config
        x = scaled if cfg.patch == 1 else F.pixel_unshuffle(scaled, cfg.patch)
        return x / cfg.scale_factor + cfg.shift_factor

    def residual(
        self, zs: torch.Tensor, prior: torch.Tensor, pixels: torch.Tensor, scale: int, error: torch.Tensor | None
    ) -> torch.Tensor:
        """f(z, prior, D(z), error) on scaled latents: [B, c, h, w] -> residual [B, c, h*scale, w*scale]."""
        feats = [zs, F.pixel_unshuffle(prior, scale)]
        if "+pixels" in self.config.inputs:
            feats.append(F.pixel_unshuffle(pixels, PIXEL_FACTOR) * 2 - 1)
        if self.uses_error:
            feats.append(F.pixel_unshuffle(error, scale))
        x = self.stems[f"x{scale}"](torch.cat(feats, 1))
        x = x + self.trunk(x)
        return F.pixel_shuffle(self.heads[f"x{scale}"](x), scale)

    def upscale_scaled(self, zs: torch.Tensor, scale: int) -> torch.Tensor:
        """Scaled unpacked latent [B, c, h, w] -> upscaled scaled latent [B, c, h*scale, w*scale]."""
        pixels = self.prior.decode(zs)
        up = self.prior.upscale(pixels, scale)
        prior, error = self.prior(up, self.config.refine_for(scale), self.uses_error)
        out = prior + self.residual(zs, prior, pixels, scale, error)
        steps, sigma, lr = self.config.match_for(scale)
        return self.prior.match(out, up, steps, sigma, lr) if steps else out

    def forward(self, raw: torch.Tensor, scale: int) -> torch.Tensor:
        """Raw latent (as ComfyUI holds it) -> raw latent upscaled by head `scale`."""
        if f"x{scale}" not in self.heads:
            raise KeyError(f"no x{scale} head; this model has {', '.join(self.heads)}")
        return self.to_raw(self.upscale_scaled(self.to_scaled(raw), scale))
