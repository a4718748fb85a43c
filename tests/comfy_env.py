"""Load the node pack the way ComfyUI does (as a package from its folder) against tests/comfy_stub."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STUB = Path(__file__).resolve().parent / "comfy_stub"


def load_pack(name: str = "lua_pack", root: Path = ROOT):
    """Import <root>/__init__.py as package `name` (ComfyUI's load_custom_node does the same)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, root / "__init__.py", submodule_search_locations=[str(root)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def use_stub() -> None:
    """Put the ComfyUI stand-in first on sys.path."""
    if str(STUB) not in sys.path:
        sys.path.insert(0, str(STUB))
