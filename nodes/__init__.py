"""ComfyUI layer: the only code that imports comfy.* / comfy_api / folder_paths, never at package import."""

from __future__ import annotations

import logging

log = logging.getLogger("lua_latent_upscaler")
MIN_COMFYUI = "0.3.59"


async def comfy_entrypoint():
    """ComfyUI's V3 entry point: the extension that lists both nodes."""
    try:
        from .lua_nodes import LUAExtension
    except Exception as exc:  # noqa: BLE001 - one clear line instead of a traceback in ComfyUI's start-up log
        log.error(
            "LUA latent upscaler: nodes not loaded (%s: %s); reinstall the pack's requirements.txt",
            type(exc).__name__,
            exc,
        )
        raise
    return LUAExtension()


def mappings_for_comfyui_without_v3(name: str = "NODE_CLASS_MAPPINGS") -> dict:
    """What a ComfyUI without the V3 node API finds as NODE_CLASS_MAPPINGS: nothing, and an error saying why.

    A ComfyUI with V3 gets AttributeError, so it goes on to `comfy_entrypoint`.
    """
    try:
        import comfy_api.latest  # noqa: F401 - only asks whether the V3 node API exists
    except ImportError:
        if name != "NODE_CLASS_MAPPINGS":
            return {}  # said once, for NODE_CLASS_MAPPINGS
        log.error(
            "LUA latent upscaler needs ComfyUI >= %s (the V3 node API, comfy_api.latest); update ComfyUI",
            MIN_COMFYUI,
        )
        return {}
    raise AttributeError(f"{name}: this ComfyUI loads the pack through comfy_entrypoint")


__all__ = ["comfy_entrypoint", "mappings_for_comfyui_without_v3"]
