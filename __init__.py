"""LUA latent upscaler node pack for ComfyUI (nodes: Load LUA Model, Latent Upscale (LUA)).

ComfyUI >= 0.3.59 loads the nodes through `comfy_entrypoint` (the V3 node API). Importing this package
touches no ComfyUI module; the nodes are built when ComfyUI calls the entry point.
"""

from .nodes import comfy_entrypoint, mappings_for_comfyui_without_v3


def __getattr__(name: str):
    # ComfyUI checks `hasattr(pack, "NODE_CLASS_MAPPINGS")` before `comfy_entrypoint`: answer only a ComfyUI
    # that has no V3 node API, with an explanation instead of nodes
    if name in ("NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"):
        return mappings_for_comfyui_without_v3(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["comfy_entrypoint"]
