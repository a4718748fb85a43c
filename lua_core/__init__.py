"""LUA: learned latent upscaling for diffusion models (no ComfyUI imports in this package).

The names below are loaded on first use, so `import lua_core` (and `python -m lua_core`, which checks its
requirements first) works without torch; `from lua_core import upscale_latent` imports what it needs.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "FLUX_OFFICIAL_CONFIG": ".arch.swinir_multihead",
    "LUAConfig": ".arch.swinir_multihead",
    "SwinIRMultiHead": ".arch.swinir_multihead",
    "ModelInfo": ".checkpoint",
    "convert_checkpoint": ".checkpoint",
    "read_state_dict": ".checkpoint",
    "save_safetensors": ".checkpoint",
    "check_latent": ".engine",
    "upscale_latent": ".engine",
    "CheckpointError": ".errors",
    "LatentInputError": ".errors",
    "LUAError": ".errors",
    "UpscaleOutOfMemoryError": ".errors",
    "FAMILIES": ".families",
    "LatentFamily": ".families",
    "get_family": ".families",
    "LUAModel": ".model",
    "load_model": ".model",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = sorted(_EXPORTS)
