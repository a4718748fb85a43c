"""The two V3 nodes: Load LUA Model and Latent Upscale (LUA). Thin: read inputs, call lua_core, return.

Imported only from `comfy_entrypoint` (the V3 classes need comfy_api at class definition).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from comfy_api.latest import ComfyExtension, io

from ..lua_core import LatentInputError, LUAModel, check_latent, load_model, upscale_latent
from ..lua_core.engine import min_tile, working_memory
from ..lua_core.model import DTYPES
from .latent_family import latent_features, looks_like
from .model_folders import default_model, fitting_models, list_models, register_model_folders, resolve_model

log = logging.getLogger("lua_latent_upscaler")
LUA_MODEL = io.Custom("LUA_MODEL")


@dataclass
class LUAModelHandle:
    """What flows through a LUA_MODEL socket: the lua_core model, its ComfyUI ModelPatcher, the file name."""

    model: LUAModel
    patcher: object
    name: str = ""


def auto_dtype(device: torch.device) -> torch.dtype:
    """ComfyUI's own precision choice for this device (bf16 only where core would use it; fp32 otherwise).

    The same helper core's latent upscale model loader uses, so --force-fp32, --cpu and the --fp32-vae /
    --bf16-vae / --fp16-vae flags apply to LUA too.
    """
    import comfy.model_management as mm

    return mm.vae_dtype(device, allowed_dtypes=[torch.bfloat16])


def ensure_on_load_device(handle: LUAModelHandle) -> None:
    """Move the network to the patcher's load device if load_models_gpu left it elsewhere.

    Newer ComfyUI (dynamic VRAM) only moves modules built from comfy ops; LUA's network is plain torch,
    so, like core's upscale-model node, we move it ourselves when needed.
    """
    want = torch.device(handle.patcher.load_device)
    have = handle.model.device
    if have.type != want.type or (want.index is not None and have.index != want.index):
        log.debug("LUA: moving %s from %s to %s", handle.name, have, want)
        handle.model.to(want)


class LUAModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        names = list_models()
        return io.Schema(
            node_id="LUAModelLoader",
            display_name="Load LUA Model",
            category="loaders",
            description=(
                "Loads a LUA latent upscaler (official LUA-FLUX .pth or a LUA .safetensors). "
                "The file says which latent family it is for (SD1.x, SDXL, SD3, FLUX.1) and which scales it has."
            ),
            inputs=[
                io.Combo.Input(
                    "model_name",
                    options=names,
                    default=default_model(names),
                    tooltip="LUA model file from models/lua (or models/latent_upscale_models, or the pack's "
                    "bundled models). The default is the official lua_flux file when installed, else the bundled "
                    "SDXL model.",
                ),
                io.Combo.Input(
                    "dtype",
                    options=["auto", *DTYPES],
                    default="auto",
                    tooltip="Compute precision. auto: what ComfyUI picks for this device (bf16 on GPUs where core "
                    "uses it, fp32 on CPU or with --force-fp32). fp32 matches the official LUA code exactly; "
                    "fp16 can overflow on some latents.",
                ),
            ],
            outputs=[
                LUA_MODEL.Output(
                    "lua_model",
                    display_name="lua_model",
                    tooltip="The loaded LUA latent upscaler; connect it to Latent Upscale (LUA).",
                )
            ],
        )

    @classmethod
    def execute(cls, model_name: str, dtype: str) -> io.NodeOutput:
        import comfy.model_management as mm
        from comfy.model_patcher import ModelPatcher

        device = mm.get_torch_device()
        compute = auto_dtype(device) if dtype == "auto" else DTYPES[dtype]
        model = load_model(resolve_model(model_name), device="cpu", dtype=compute)
        patcher = ModelPatcher(model.net, load_device=device, offload_device=mm.unet_offload_device())
        return io.NodeOutput(LUAModelHandle(model, patcher, model_name))


class LUALatentUpscale(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LUALatentUpscale",
            display_name="Latent Upscale (LUA)",
            category="latent/upscaling",
            description=(
                "Upscales a latent x1-x4 with a learned LUA model in one pass: use it between KSampler and VAE "
                "Decode instead of a pixel upscaler, or instead of Upscale Latent before a hires-fix KSampler."
            ),
            inputs=[
                LUA_MODEL.Input("lua_model", tooltip="From Load LUA Model; must match the latent's family."),
                io.Latent.Input("samples", tooltip="Latent to upscale, straight from KSampler or VAE Encode."),
                io.Float.Input(
                    "scale_by",
                    default=2.0,
                    min=1.0,
                    max=4.0,
                    step=0.05,
                    tooltip="Upscale factor. 2 and 4 run the model's heads directly; other values use the "
                    "next larger head and an antialiased downscale to the exact size.",
                ),
                io.Int.Input(
                    "tile_size",
                    default=0,
                    min=0,
                    max=4096,
                    step=8,
                    tooltip="Tile side in latent pixels (1 latent pixel = 8 image pixels). 0 picks the largest "
                    "tile that fits in free memory; on out-of-memory the tile is halved automatically. Other "
                    "values are rounded down to whole attention windows and raised to at least 4 windows: "
                    "32 for the bundled models (window 8), 64 for lua_flux (window 16).",
                ),
            ],
            outputs=[
                io.Latent.Output(
                    "LATENT",
                    display_name="LATENT",
                    tooltip="The upscaled latent (same family, same keys); send it to VAE Decode or a second "
                    "KSampler.",
                )
            ],
        )

    @classmethod
    def execute(cls, lua_model: LUAModelHandle, samples: dict, scale_by: float, tile_size: int) -> io.NodeOutput:
        import comfy.model_management as mm
        import comfy.utils

        latent = samples["samples"]
        check_fits(lua_model, latent)  # wrong family etc. before any GPU work
        warn_if_other_family(lua_model, latent)
        if tile_size and tile_size != effective_tile(lua_model.model, tile_size):
            log.info(
                "LUA: tile_size %d rounded to %d (whole %d-pixel windows, at least 4)",
                tile_size,
                effective_tile(lua_model.model, tile_size),
                lua_model.model.config.window_size,
            )
        # ask ComfyUI to make room for one working tile, not the whole latent: tiling adapts to what is free,
        # and asking for more would evict the diffusion model and VAE on every run
        mm.load_models_gpu(
            [lua_model.patcher],
            memory_required=working_memory(lua_model.model, latent.shape, scale_by),
            force_full_load=True,
        )
        ensure_on_load_device(lua_model)
        log.info(
            "LUA: upscaling %s latent x%g with %s (%s, %s, tile %s)",
            "x".join(map(str, latent.shape)),
            scale_by,
            lua_model.name,
            lua_model.model.device,
            str(lua_model.model.dtype).replace("torch.", ""),
            effective_tile(lua_model.model, tile_size) if tile_size else "auto",
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
        return io.NodeOutput(result)


def effective_tile(model: LUAModel, tile_size: int) -> int:
    """The tile side a requested `tile_size` becomes: whole windows, at least min_tile (as the engine does)."""
    win = model.config.window_size
    return max(min_tile(model), int(tile_size) // win * win)


def check_fits(handle: LUAModelHandle, latent: object) -> None:
    """check_latent, with the chosen file and the installed models that would fit named on a family mismatch."""
    try:
        check_latent(handle.model, latent)
    except LatentInputError as err:
        plain = isinstance(latent, torch.Tensor) and not latent.is_nested and latent.ndim in (4, 5)
        channels = latent.shape[1] if plain else None
        if channels is None or channels == handle.model.config.in_chans:
            raise
        fits = fitting_models(channels)
        hint = (
            f"installed LUA models for {channels}-channel latents: {', '.join(fits)}"
            if fits
            else f"no installed LUA model takes {channels}-channel latents; put one in models/lua"
        )
        raise LatentInputError(f"{handle.name or 'the chosen LUA model'}: {err}; {hint}") from err


def warn_if_other_family(handle: LUAModelHandle, latent: torch.Tensor) -> None:
    """Log a warning when an SD1.x model meets a latent that is clearly SDXL's, or the reverse."""
    family = handle.model.family
    if family is None or family.name not in ("sd1", "sdxl") or latent.shape[1] != 4:
        return
    seen = looks_like(latent_features(latent))
    if seen is not None and seen != family.name:
        log.warning(
            "LUA: %s is a %s model, but this latent's statistics are clearly %s's; the output will have wrong "
            "colours. Load the LUA model for the checkpoint's VAE (lua-%s-small for %s).",
            handle.name,
            family.label,
            "SDXL" if seen == "sdxl" else "SD1.x",
            seen,
            "SDXL" if seen == "sdxl" else "SD1.x",
        )


class LUAExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        # register models/lua at start-up (0.3.59 and 0.8.0 never call on_load), so the frontend's
        # missing-models dialog knows the folder before any node is shown
        register_model_folders()
        return [LUAModelLoader, LUALatentUpscale]
