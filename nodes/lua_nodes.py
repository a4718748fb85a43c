"""The two V3 nodes: Load LUA Model and Latent Upscale (LUA). Thin: read inputs, call lua_core, return.

Imported only from `comfy_entrypoint` (the V3 classes need comfy_api at class definition).
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass

import torch
from comfy_api.latest import ComfyExtension, io

from ..lua_core import LatentInputError, LUAModel, check_latent, load_model, upscale_latent
from ..lua_core.engine import min_tile, working_memory
from ..lua_core.model import DTYPES
from .latent_family import latent_features, looks_like
from .model_folders import (
    create_user_folder,
    default_model,
    fitting_models,
    list_models,
    register_model_folders,
    resolve_model,
)

log = logging.getLogger("lua_latent_upscaler")
LUA_MODEL = io.Custom("LUA_MODEL")
DTYPE_CHOICES = ["auto", *DTYPES]
DECODER_MATCHING_CHOICES = ["on", "off"]


def newer_fields(target: object, **fields: object) -> dict:
    """Of `fields` (schema fields newer cores added, e.g. Schema's search_aliases, an Input's advanced), the
    ones `target` takes by name on the running core; 0.3.59 and 0.8.0 take neither and raise TypeError on them."""
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return {}
    return {k: v for k, v in fields.items() if k in params and params[k].kind is not inspect.Parameter.VAR_KEYWORD}


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


class _NamedForTheConsole(torch.nn.Module):
    """What ComfyUI's memory manager holds: the LUA network inside a class named as users know the model.

    Core logs `Requested to load <class name>`; with this it reads 'LUA SDXL x2/x4 (v1)', not the network's class.
    """

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, *args, **kwargs):
        return self.net(*args, **kwargs)


def for_memory_manager(model: LUAModel) -> torch.nn.Module:
    """`model.net` wrapped in a module whose class name is the model's title (parameters shared, not copied)."""
    return type(model.info.title(), (_NamedForTheConsole,), {"__module__": __name__})(model.net)


def check_loader_inputs(model_name: str | None, dtype: str | None, decoder_matching: str | None = None) -> None:
    """The loader's inputs, checked the same way on every core (0.3.59 does not check V3 combo values itself);
    None (a linked input, known only at run time, or an optional one left out) passes."""
    checks = (("dtype", dtype, DTYPE_CHOICES), ("decoder_matching", decoder_matching, DECODER_MATCHING_CHOICES))
    for name, value, choices in checks:
        if value is not None and value not in choices:
            raise ValueError(
                f"{name} {value!r} is not one of {', '.join(choices)}; pick one of those in Load LUA Model "
                "(a workflow made with another version of the pack may carry other values)"
            )
    if model_name is not None:
        resolve_model(model_name)  # FileNotFoundError saying where it was looked for, or why it is not listed


class LUAModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        names = list_models()
        return io.Schema(
            node_id="LUAModelLoader",
            display_name="Load LUA Model",
            category="loaders",
            description=(
                "Loads a LUA latent upscaler (official LUA-FLUX .pth or a LUA .safetensors). The file says which "
                "latent family it is for (SD1.x, SDXL, SD3, FLUX.1, FLUX.2) and which scales it has."
            ),
            **newer_fields(io.Schema, search_aliases=["LUA", "latent upscale model", "latent upscaler"]),
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
                    options=DTYPE_CHOICES,
                    default="auto",
                    tooltip="Compute precision. auto: what ComfyUI picks for this device (bf16 on GPUs where core "
                    "uses it, fp32 on CPU or with --force-fp32). fp32 matches the official LUA code exactly; "
                    "fp16 can overflow on some latents. bf16 on a CPU is fast only where the CPU has bf16 "
                    "instructions (AVX-512 BF16, AMX); on others it runs several times slower than fp32.",
                ),
                io.Combo.Input(
                    "decoder_matching",
                    options=DECODER_MATCHING_CHOICES,
                    default="on",
                    optional=True,  # workflows and API prompts saved before it existed still run (as "on")
                    tooltip="on: the bundled SDXL, SD1 (x2), FLUX.1 and FLUX.2 models polish flat areas (sky, skin, bokeh) "
                    "with a few steps of the tiny VAE decoder, which keeps them free of grain and is what their "
                    "quality numbers measure. off: skip those steps, 3-10x faster on a CPU (x2 to 1024 px: 4-13 s "
                    "instead of 35-73 s); flat areas may show a fine grain, with SDXL, FLUX.1 and FLUX.2 also colour patches "
                    "(sky, dark areas), and FLUX.1 then scores below pixel bicubic. Other models ignore it.",
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
    def validate_inputs(
        cls, model_name: str | None = None, dtype: str | None = None, decoder_matching: str | None = None
    ) -> bool | str:
        """Called by core before a run: True, or the message shown for the node."""
        try:
            check_loader_inputs(model_name, dtype, decoder_matching)
        except (ValueError, FileNotFoundError) as e:
            return str(e)
        return True

    @classmethod
    def execute(cls, model_name: str, dtype: str, decoder_matching: str = "on") -> io.NodeOutput:
        import comfy.model_management as mm
        from comfy.model_patcher import ModelPatcher

        check_loader_inputs(model_name, dtype, decoder_matching)
        device = mm.get_torch_device()
        compute = auto_dtype(device) if dtype == "auto" else DTYPES[dtype]
        match = decoder_matching == "on"
        model = load_model(resolve_model(model_name), device="cpu", dtype=compute, decoder_match=match)
        log.info("LUA: loaded %s: %s%s", model_name, model.info.title(), "" if match else " (decoder matching off)")
        patcher = ModelPatcher(for_memory_manager(model), load_device=device, offload_device=mm.unet_offload_device())
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
            **newer_fields(io.Schema, search_aliases=["LUA", "upscale latent", "latent upscale", "hires fix"]),
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
                    "next larger head and an antialiased downscale to the exact size; 1.0 returns an exact copy.",
                ),
                io.Int.Input(
                    "tile_size",
                    default=0,
                    min=0,
                    max=4096,
                    step=8,
                    tooltip="Tile side in latent pixels (one latent pixel is 8 image pixels, 16 for FLUX.2). 0 picks "
                    "the largest tile that fits in free memory; on out-of-memory the tile is halved automatically. "
                    "Other values are rounded to what the model allows (the log says so): v1 models round down to "
                    "whole attention windows, at least 4 (32 for window 8, 64 for lua_flux); v2 models take at "
                    "least 48.",
                    **newer_fields(io.Int.Input, advanced=True),
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
                "LUA: tile_size %d rounded to %d (multiples of %d latent pixels, at least %d, for %s)",
                tile_size,
                effective_tile(lua_model.model, tile_size),
                lua_model.model.net.tile_align,
                min_tile(lua_model.model),
                lua_model.model.info.title(),
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
    """The tile side a requested `tile_size` becomes: a multiple of the network's alignment (v1: its attention
    window), at least min_tile (as the engine does)."""
    align = model.net.tile_align
    return max(min_tile(model), int(tile_size) // align * align)


def check_fits(handle: LUAModelHandle, latent: object) -> None:
    """check_latent, with the chosen file and the installed models that would fit named on a family mismatch."""
    try:
        check_latent(handle.model, latent)
    except LatentInputError as err:
        family = handle.model.family
        # a 5-D latent is refused as video before its channels count (unless the family takes video)
        shapes = (4, 5) if family is not None and family.video else (4,)
        plain = isinstance(latent, torch.Tensor) and not latent.is_nested and latent.ndim in shapes
        channels = latent.shape[1] if plain else None
        if channels is None or channels == handle.model.channels:
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
        create_user_folder()
        return [LUAModelLoader, LUALatentUpscale]
