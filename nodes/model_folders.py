"""Where LUA model files live in a ComfyUI install, registered with folder_paths idempotently."""

from __future__ import annotations

import os

FOLDER_KEY = "lua"
CORE_KEY = "latent_upscale_models"  # core's folder (ComfyUI >= 0.3.71); listed too when present
EXTENSIONS = {".safetensors", ".sft", ".pth"}
PACK_MODELS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models")


def register_model_folders() -> None:
    """Add models/lua and the pack's bundled models/ under the 'lua' key, merging any existing entry."""
    import folder_paths

    default = os.path.join(folder_paths.models_dir, "lua")
    entry = folder_paths.folder_names_and_paths.get(FOLDER_KEY)
    if entry is None:
        folder_paths.folder_names_and_paths[FOLDER_KEY] = ([default, PACK_MODELS], set(EXTENSIONS))
        return
    paths, exts = entry
    for p in (default, PACK_MODELS):
        if p not in paths:
            paths.append(p)  # after the user's extra_model_paths.yaml folders, which keep priority
    if not exts or not EXTENSIONS <= set(exts):
        # an extra_model_paths.yaml entry arrives with an empty (= unfiltered) extension set
        folder_paths.folder_names_and_paths[FOLDER_KEY] = (paths, set(exts) | EXTENSIONS)


def _keys() -> list[str]:
    import folder_paths

    return [k for k in (FOLDER_KEY, CORE_KEY) if k in folder_paths.folder_names_and_paths]


def list_models() -> list[str]:
    """Model file names for the loader's combo box (lua folders first, then core's latent_upscale_models)."""
    import folder_paths

    register_model_folders()
    names: list[str] = []
    for key in _keys():
        for name in folder_paths.get_filename_list(key):
            if os.path.splitext(name)[1].lower() in EXTENSIONS and name not in names:
                names.append(name)
    return names


def resolve_model(name: str) -> str:
    """Full path of a listed model name; a clear FileNotFoundError otherwise."""
    import folder_paths

    register_model_folders()
    for key in _keys():
        path = folder_paths.get_full_path(key, name)
        if path:
            return path
    searched = [p for key in _keys() for p in folder_paths.get_folder_paths(key)]
    raise FileNotFoundError(
        f"LUA model '{name}' not found in {', '.join(searched)}; put LUA .safetensors/.pth files in models/lua "
        "and refresh (R) the browser"
    )


OFFICIAL_NAMES = ("lua_flux.safetensors", "lua_flux.sft", "lua_flux.pth")
BUNDLED_DEFAULT = "lua-sdxl-small.safetensors"


def default_model(names: list[str]) -> str | None:
    """The loader's default: the official LUA-FLUX file if installed (any subfolder), else the bundled SDXL model."""
    for official in OFFICIAL_NAMES:
        for name in names:
            if os.path.basename(name) == official:
                return name
    if BUNDLED_DEFAULT in names:
        return BUNDLED_DEFAULT
    return names[0] if names else None


def model_channels(path: str) -> tuple[int, str | None] | None:
    """(latent channels, family label or None) of a LUA file without building it; None if it is not one.

    safetensors: our metadata, else the first conv's shape; .pth: a memory-mapped, weights-only load.
    """
    import torch

    from ..lua_core.checkpoint import infer_config, is_official_flux, unwrap_state_dict
    from ..lua_core.families import FAMILIES, get_family

    try:
        if os.path.splitext(path)[1].lower() in (".safetensors", ".sft"):
            from safetensors import safe_open

            with safe_open(path, framework="pt", device="cpu") as f:
                meta = f.metadata() or {}
                if "lua.channels" in meta:
                    fam = meta.get("lua.family")
                    return int(meta["lua.channels"]), get_family(fam).label if fam else None
                return int(f.get_slice("conv_first.weight").get_shape()[1]), None
        sd = unwrap_state_dict(torch.load(path, map_location="cpu", weights_only=True, mmap=True))
        config = infer_config(sd)
    except Exception:  # noqa: BLE001 - anything unreadable is simply not offered as a fit
        return None
    return config.in_chans, FAMILIES["flux1"].label if is_official_flux(config) else None


def fitting_models(channels: int) -> list[str]:
    """Installed LUA models that take `channels`-channel latents, as 'name (family)' for messages."""
    out = []
    for name in list_models():
        found = model_channels(resolve_model(name))
        if found and found[0] == channels:
            out.append(f"{name} ({found[1]})" if found[1] else name)
    return out
