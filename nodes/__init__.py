"""ComfyUI layer: the only code that imports comfy.* / folder_paths, always inside functions."""

from .lua_nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
