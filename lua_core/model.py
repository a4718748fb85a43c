"""`LUAModel`: a loaded network plus what it is for (family, scales, provenance)."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from .arch.reencode_residual import ReencodeResidual, ReencodeResidualConfig
from .arch.swinir_multihead import LUAConfig
from .checkpoint import ModelInfo, build_network, read_state_dict, save_safetensors
from .families import LatentFamily

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class LUAModel:
    """A ready-to-run LUA network (v1 SwinIRMultiHead or v2 ReencodeResidual) and its description."""

    net: nn.Module
    info: ModelInfo
    name: str = "model"

    @property
    def config(self) -> LUAConfig | ReencodeResidualConfig:
        return self.info.config

    @property
    def channels(self) -> int:
        """Latent channels the model takes and returns (as ComfyUI's LATENT holds them)."""
        return self.net.channels

    @property
    def family(self) -> LatentFamily | None:
        return self.info.family

    @property
    def scales(self) -> tuple[int, ...]:
        return self.info.config.scales

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.net.parameters()).dtype

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> LUAModel:
        """Move/cast in place (buffers keep their integer dtype) and return self."""
        self.net.to(device=device, dtype=dtype)
        return self

    def save(self, path: str | os.PathLike, dtype: torch.dtype | None = None) -> None:
        """Write this model in our safetensors format."""
        save_safetensors(self.net, self.info, path, dtype)


def resolve_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    """'auto'/None -> fp32 on CPU and MPS, bf16 on CUDA when supported, else fp32; names -> dtypes."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8:
            return torch.bfloat16  # native bf16 (Ampere and newer); emulated bf16 on older cards is slow
        return torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def load_model(
    path: str | os.PathLike,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
    decoder_match: bool = True,
) -> LUAModel:
    """Load a LUA checkpoint (ours or the official .pth), ready for `upscale_latent`; `decoder_match=False`
    switches off the decoder matching some v2 files carry (see `without_decoder_match`)."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    sd, meta = read_state_dict(path)
    net, info = build_network(sd, meta, Path(path).name)
    net.to(device=device, dtype=resolve_dtype(dtype, device))
    model = LUAModel(net, info, Path(path).stem)
    return model if decoder_match else without_decoder_match(model)


def new_v2_model(
    family: LatentFamily,
    scales: tuple[int, ...] = (2, 4),
    width: int = 64,
    blocks: int = 8,
    inputs: str = "latent+prior+pixels",
    vae_approx: str | os.PathLike = "",
    refine: tuple[int, float] = (0, 0.0),
) -> LUAModel:
    """An untrained v2 model (it equals its prior: decode -> bicubic -> encode, then `refine` = (steps, rate)
    back-projection steps) with the family's tiny autoencoder."""
    from .tiny_ae import load_tiny_autoencoder  # local: tiny_ae reads files through checkpoint

    ae = load_tiny_autoencoder(family, [vae_approx] if vae_approx else [])
    cfg = ReencodeResidualConfig(
        channels=family.channels,
        patch=family.patch,
        scale_factor=family.scale_factor,
        shift_factor=family.shift_factor,
        scales=scales,
        width=width,
        blocks=blocks,
        inputs=inputs,
        refine_steps=refine[0],
        refine_rate=refine[1],
        pooled_encoder=tuple(i for i, m in enumerate(ae.encoder) if getattr(m, "pool", None) is not None),
        pooled_decoder=tuple(i for i, m in enumerate(ae.decoder) if getattr(m, "pool", None) is not None),
    )
    net = ReencodeResidual(cfg)
    net.prior.encoder.load_state_dict(ae.encoder.state_dict())
    net.prior.decoder.load_state_dict(ae.decoder.state_dict())
    prior = {"kind": "reencode", "autoencoder": family.tiny_ae, "resize": cfg.resize, "source": Path(ae.source).name}
    return LUAModel(net.eval(), ModelInfo(cfg, family, {}, prior=prior), family.name)


def with_prior_refinement(model: LUAModel, by_scale: dict[int, tuple[int, float]]) -> LUAModel:
    """A copy of a v2 model whose prior refines under the given heads as {scale: (steps, rate)} says (the
    residual weights are kept; a setting equal to the file-wide one removes that head's override)."""
    cfg = model.config
    if not isinstance(cfg, ReencodeResidualConfig):
        raise ValueError(f"{model.info.title()} has no re-encode prior to refine")
    merged = {s: (k, r) for s, k, r in cfg.refine_by_scale} | by_scale
    default = (cfg.refine_steps, cfg.refine_rate)
    return _with_config(model, replace(cfg, refine_by_scale=tuple((s, *kr) for s, kr in merged.items() if kr != default)))


def with_decoder_match(model: LUAModel, by_scale: dict[int, tuple[int, float, float]]) -> LUAModel:
    """A copy of a v2 model whose heads match their output to the decoder in smooth areas as {scale: (steps,
    sigma, Adam step)} says (arch/reencode_residual.py; steps 0 switches a head's matching off; weights are kept)."""
    cfg = model.config
    if not isinstance(cfg, ReencodeResidualConfig):
        raise ValueError(f"{model.info.title()} has no tiny decoder to match")
    merged = {s: tuple(rest) for s, *rest in cfg.match_by_scale} | by_scale
    return _with_config(model, replace(cfg, match_by_scale=tuple((s, *ks) for s, ks in merged.items() if ks[0])))


def without_decoder_match(model: LUAModel) -> LUAModel:
    """The model with decoder matching off on every head: 3-10x faster on a CPU where a file has it, at the price
    of the tiny decoder's grain in flat areas (README, "What a v2 model costs"); other models come back as they
    are."""
    cfg = model.config
    if not isinstance(cfg, ReencodeResidualConfig) or not cfg.match_by_scale:
        return model
    return with_decoder_match(model, {s: (0, 0.0, 0.0) for s, *_ in cfg.match_by_scale})


def with_pixel_upscaler(
    model: LUAModel, scale: int, width: int | None = None, depth: int | None = None, highpass: float | None = None
) -> LUAModel:
    """A copy of a v2 model whose head `scale` resizes in its prior with a learned pixel upscaler
    (arch/pixel_upscaler.py): the head's present one if it has one and it has that shape (a warm start, also under
    another high-pass), else a fresh one, which is bicubic until trained. Every other weight is kept. The upscalers
    of one file share one shape (None takes the file's, or the config's defaults when it has none); each has its own
    high-pass (None keeps the head's, else the file's)."""
    cfg = model.config
    if not isinstance(cfg, ReencodeResidualConfig):
        raise ValueError(f"{model.info.title()} has no re-encode prior to give a pixel upscaler")
    if scale not in cfg.scales:
        raise ValueError(f"{model.info.title()} has no x{scale} head; it has {', '.join(f'x{s}' for s in cfg.scales)}")
    width, depth = width or cfg.upscaler_width, cfg.upscaler_depth if depth is None else depth
    highpass = cfg.highpass_for(scale) if highpass is None else highpass
    others = [s for s in cfg.upscaler_scales if s != scale]
    if others and (width, depth) != (cfg.upscaler_width, cfg.upscaler_depth):
        raise ValueError(
            f"{model.info.title()} already has pixel upscalers of width {cfg.upscaler_width}, depth "
            f"{cfg.upscaler_depth}; a file's upscalers share them, so give x{scale}'s the same (asked: width "
            f"{width}, depth {depth})"
        )
    highpasses = {**{s: cfg.highpass_for(s) for s in others}, scale: highpass}
    new_cfg = replace(_with_upscaler_highpasses(cfg, highpasses), upscaler_width=width, upscaler_depth=depth)
    net = ReencodeResidual(new_cfg)
    own = f"prior.upscalers.x{scale}."
    keep_own = (width, depth) == (cfg.upscaler_width, cfg.upscaler_depth)
    weights = {k: v for k, v in model.net.state_dict().items() if keep_own or not k.startswith(own)}
    missing, unexpected = net.load_state_dict(weights, strict=False)
    assert not unexpected and all(k.startswith(own) for k in missing), (missing, unexpected)
    net = net.to(device=model.device, dtype=model.dtype)
    return LUAModel(net.eval(), replace(model.info, config=new_cfg, provenance=dict(model.info.provenance)), model.name)


def without_pixel_upscaler(model: LUAModel, scale: int) -> LUAModel:
    """A copy of a v2 model whose head `scale` resizes in its prior by bicubic again (its upscaler and its record
    dropped; every other head computes exactly what it did)."""
    cfg = model.config
    if not isinstance(cfg, ReencodeResidualConfig) or scale not in cfg.upscaler_scales:
        return model
    new_cfg = _with_upscaler_highpasses(cfg, {s: cfg.highpass_for(s) for s in cfg.upscaler_scales if s != scale})
    net = ReencodeResidual(new_cfg).to(device=model.device, dtype=model.dtype)
    prefix = f"prior.upscalers.x{scale}."
    net.load_state_dict({k: v for k, v in model.net.state_dict().items() if not k.startswith(prefix)})
    prov = dict(model.info.provenance)
    records = {h: r for h, r in prov.pop("pixel_upscalers", {}).items() if h != f"x{scale}"}
    prov.update({"pixel_upscalers": records} if records else {})
    return LUAModel(net.eval(), replace(model.info, config=new_cfg, provenance=prov), model.name)


def _with_upscaler_highpasses(cfg: ReencodeResidualConfig, highpasses: dict[int, float]) -> ReencodeResidualConfig:
    """`cfg` with pixel upscalers on exactly the heads of `highpasses` ({scale: high-pass sigma}). One sigma for all
    is stored file-wide, as files before per-head high-passes did (older packs read it); differing ones per head."""
    sigmas = set(highpasses.values())
    shared = sigmas.pop() if len(sigmas) == 1 else 0.0 if sigmas else cfg.upscaler_highpass
    return replace(
        cfg,
        upscaler_scales=tuple(highpasses),
        upscaler_highpass=shared,
        upscaler_highpass_by_scale=tuple((s, sg) for s, sg in highpasses.items() if sg != shared),
    )


def _with_config(model: LUAModel, cfg: ReencodeResidualConfig) -> LUAModel:
    """A copy of a v2 model under `cfg` (a config that changes no weight shape), weights and provenance kept."""
    net = ReencodeResidual(cfg).to(device=model.device, dtype=model.dtype)
    net.load_state_dict(model.net.state_dict())
    return LUAModel(net.eval(), replace(model.info, config=cfg, provenance=dict(model.info.provenance)), model.name)


def new_v2_model_over_prior(
    path: str | os.PathLike,
    scales: tuple[int, ...] = (2, 4),
    width: int = 64,
    blocks: int = 8,
    inputs: str = "latent+prior+pixels",
) -> LUAModel:
    """An untrained v2 model over the prior of an existing v2 file: same family, autoencoder and refinement."""
    other = load_model(path)
    if not isinstance(other.net, ReencodeResidual):
        raise ValueError(
            f"{path}: {other.info.title()} has no re-encode prior; expected a v2 (reencode_residual) file such as "
            "models/lua-<family>-small.safetensors"
        )
    cfg = replace(other.config, scales=tuple(scales), width=width, blocks=blocks, inputs=inputs)
    net = ReencodeResidual(cfg)
    net.prior.load_state_dict(other.net.prior.state_dict())
    return LUAModel(net.eval(), ModelInfo(cfg, other.family, {}, prior=dict(other.info.prior)), other.family.name)
