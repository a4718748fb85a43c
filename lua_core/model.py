"""`LUAModel`: a loaded network plus what it is for (family, scales, provenance)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .arch.swinir_multihead import LUAConfig, SwinIRMultiHead
from .checkpoint import ModelInfo, build_network, read_state_dict, save_safetensors
from .families import LatentFamily

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class LUAModel:
    """A ready-to-run LUA network and its description (spandrel-style descriptor)."""

    net: SwinIRMultiHead
    info: ModelInfo
    name: str = "model"

    @property
    def config(self) -> LUAConfig:
        return self.info.config

    @property
    def family(self) -> LatentFamily | None:
        return self.info.family

    @property
    def scales(self) -> tuple[int, ...]:
        return self.info.config.scales

    @property
    def device(self) -> torch.device:
        return self.net.conv_first.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.net.conv_first.weight.dtype

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
) -> LUAModel:
    """Load a LUA checkpoint (ours or the official .pth), ready for `upscale_latent`."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    sd, meta = read_state_dict(path)
    net, info = build_network(sd, meta, Path(path).name)
    net.to(device=device, dtype=resolve_dtype(dtype, device))
    return LUAModel(net, info, Path(path).stem)


def model_from_network(net: SwinIRMultiHead, info: ModelInfo, name: str = "model") -> LUAModel:
    """Wrap an in-memory network (training, tests) as a LUAModel."""
    return LUAModel(net.eval(), info, name)
