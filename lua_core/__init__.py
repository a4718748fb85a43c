"""LUA: learned latent upscaling for diffusion models (no ComfyUI imports in this package)."""

from .arch.swinir_multihead import FLUX_OFFICIAL_CONFIG, LUAConfig, SwinIRMultiHead
from .checkpoint import ModelInfo, convert_checkpoint, read_state_dict, save_safetensors
from .engine import check_latent, upscale_latent
from .errors import CheckpointError, LatentInputError, LUAError, UpscaleOutOfMemoryError
from .families import FAMILIES, LatentFamily, get_family
from .model import LUAModel, load_model

__version__ = "0.1.0"

__all__ = [
    "FAMILIES",
    "FLUX_OFFICIAL_CONFIG",
    "CheckpointError",
    "LatentFamily",
    "LatentInputError",
    "LUAConfig",
    "LUAError",
    "LUAModel",
    "ModelInfo",
    "SwinIRMultiHead",
    "UpscaleOutOfMemoryError",
    "check_latent",
    "convert_checkpoint",
    "get_family",
    "load_model",
    "read_state_dict",
    "save_safetensors",
    "upscale_latent",
]
