"""LUA latent upscaler node pack for ComfyUI (nodes: Load LUA Model, Latent Upscale (LUA))."""

import logging

try:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
except Exception as exc:  # noqa: BLE001 - a broken install must not take ComfyUI start-up down
    logging.getLogger(__name__).error(
        "LUA latent upscaler: nodes not loaded (%s: %s); reinstall the pack's requirements.txt", type(exc).__name__, exc
    )
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
