"""The two nodes: Load LUA Model and Latent Upscale (LUA). Thin: read inputs, call lua_core, return."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..lua_core import LUAModel, check_latent, load_model, upscale_latent
from ..lua_core.engine import working_memory
from ..lua_core.model import resolve_dtype
from .model_folders import list_models, resolve_model


@dataclass
class LUAModelHandle:
    """What flows through a LUA_MODEL socket: the lua_core model and its ComfyUI ModelPatcher."""

    model: LUAModel
    patcher: object


class LUAModelLoader:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model_name": (
                    list_models(),
                    {
                        "tooltip": "LUA model file from models/lua (or models/latent_upscale_models, or the pack's bundled models)."
                    },
                ),
                "dtype": (
                    ["auto", "fp32", "bf16", "fp16"],
                    {
                        "default": "auto",
                        "tooltip": "Compute precision. auto: bf16 on GPUs that support it, fp32 otherwise. "
                        "fp32 matches the official LUA code exactly; fp16 can overflow on some latents.",
                    },
                ),
            }
        }

    RETURN_TYPES = ("LUA_MODEL",)
    RETURN_NAMES = ("lua_model",)
    OUTPUT_TOOLTIPS = ("The loaded LUA latent upscaler; connect it to Latent Upscale (LUA).",)
    FUNCTION = "load"
    CATEGORY = "loaders"
    DESCRIPTION = (
        "Loads a LUA latent upscaler (official LUA-FLUX .pth or a LUA .safetensors). "
        "The file says which latent family it is for (SD1.x, SDXL, SD3, FLUX.1) and which scales it has."
    )

    def load(self, model_name: str, dtype: str):
        import comfy.model_management as mm
        from comfy.model_patcher import ModelPatcher

        device = mm.get_torch_device()
        model = load_model(resolve_model(model_name), device="cpu", dtype=resolve_dtype(dtype, device))
        patcher = ModelPatcher(model.net, load_device=device, offload_device=mm.unet_offload_device())
        return (LUAModelHandle(model, patcher),)


class LUALatentUpscale:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "lua_model": ("LUA_MODEL", {"tooltip": "From Load LUA Model; must match the latent's family."}),
                "samples": ("LATENT", {"tooltip": "Latent to upscale, straight from KSampler or VAE Encode."}),
                "scale_by": (
                    "FLOAT",
                    {
                        "default": 2.0,
                        "min": 1.0,
                        "max": 4.0,
                        "step": 0.05,
                        "tooltip": "Upscale factor. 2 and 4 run the model's heads directly; other values use the "
                        "next larger head and an antialiased downscale to the exact size.",
                    },
                ),
                "tile_size": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 4096,
                        "step": 8,
                        "tooltip": "Tile side in latent pixels (1 latent pixel = 8 image pixels). 0 picks the largest "
                        "tile that fits in free memory; on out-of-memory the tile is halved automatically.",
                    },
                ),
            }
        }

    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The upscaled latent (same family, same keys); send it to VAE Decode or a second KSampler.",)
    FUNCTION = "upscale"
    CATEGORY = "latent/upscaling"
    DESCRIPTION = (
        "Upscales a latent x1-x4 with a learned LUA model in one pass: use it between KSampler and VAE Decode "
        "instead of a pixel upscaler, or instead of Upscale Latent before a hires-fix KSampler."
    )

    def upscale(self, lua_model: LUAModelHandle, samples: dict, scale_by: float, tile_size: int):
        import comfy.model_management as mm
        import comfy.utils

        latent = samples["samples"]
        check_latent(lua_model.model, latent)  # wrong family etc. before any GPU work
        # ask ComfyUI to make room for one working tile, not the whole latent: tiling adapts to what is free,
        # and asking for more would evict the diffusion model and VAE on every run
        mm.load_models_gpu(
            [lua_model.patcher],
            memory_required=working_memory(lua_model.model, latent.shape, scale_by),
            force_full_load=True,
        )
        bar = comfy.utils.ProgressBar(1)

        def progress(done: int, total: int) -> None:
            bar.update_absolute(done, total)
            mm.throw_exception_if_processing_interrupted()

        out = upscale_latent(
            lua_model.model,
            latent,
            scale_by,
            tile_size=tile_size or None,
            memory_budget=int(mm.get_free_memory(lua_model.model.device) * 0.8),
            progress=progress,
        )
        result = samples.copy()
        result["samples"] = out.to(device=mm.intermediate_device(), dtype=torch.float32)
        return (result,)


NODE_CLASS_MAPPINGS = {"LUAModelLoader": LUAModelLoader, "LUALatentUpscale": LUALatentUpscale}
NODE_DISPLAY_NAME_MAPPINGS = {"LUAModelLoader": "Load LUA Model", "LUALatentUpscale": "Latent Upscale (LUA)"}
