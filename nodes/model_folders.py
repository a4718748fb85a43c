"""Where LUA model files live in a ComfyUI install, registered with folder_paths idempotently.

Listing: every .safetensors/.sft/.pth in the `lua` folders (ours: a non-LUA file there gets a clear error when
loaded), and from core's shared `latent_upscale_models` only files whose header says LUA (core keeps other
latent upscalers there). The header check reads a few kilobytes (a safetensors JSON header, or a .pth's pickle
of key names, never unpickled) and is cached by size and mtime. Files are found with this pack's extensions,
whatever extension set another pack leaves on either folder's entry.
"""

from __future__ import annotations

import logging
import os
import zipfile

FOLDER_KEY = "lua"
CORE_KEY = "latent_upscale_models"  # core's folder (ComfyUI >= 0.3.71); listed too when present
VAE_APPROX_KEY = "vae_approx"
EXTENSIONS = {".safetensors", ".sft", ".pth"}
PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACK_MODELS = os.path.join(PACK_DIR, "models")
PACK_ASSETS = os.path.join(PACK_DIR, "lua_core", "assets")  # taesdxl_encoder/decoder.safetensors (MIT)

log = logging.getLogger("lua_latent_upscaler")


def register_model_folders() -> None:
    """Add models/lua and the pack's bundled models/ under the 'lua' key, merging any existing entry.

    Also appends the pack's assets folder to core's `vae_approx`, so core's Load VAE offers the bundled
    taesdxl (the demo workflow's VAE) on a ComfyUI whose models/vae_approx is empty; a user's own copy of
    taesdxl comes first, as folder_paths searches the folders in order.
    """
    import folder_paths

    default = os.path.join(folder_paths.models_dir, "lua")
    entry = folder_paths.folder_names_and_paths.get(FOLDER_KEY)
    if entry is None:
        folder_paths.folder_names_and_paths[FOLDER_KEY] = ([default, PACK_MODELS], set(EXTENSIONS))
    else:
        paths, exts = entry
        for p in (default, PACK_MODELS):
            if p not in paths:
                paths.append(p)  # after the user's extra_model_paths.yaml folders, which keep priority
        if not exts or not EXTENSIONS <= set(exts):
            # an extra_model_paths.yaml entry arrives with an empty (= unfiltered) extension set
            folder_paths.folder_names_and_paths[FOLDER_KEY] = (paths, set(exts) | EXTENSIONS)
    if VAE_APPROX_KEY in folder_paths.folder_names_and_paths:
        folder_paths.add_model_folder_path(VAE_APPROX_KEY, PACK_ASSETS)


def create_user_folder() -> None:
    """Create ComfyUI/models/lua at start-up, so the folder LUA files go into exists (a no-op when it does)."""
    import folder_paths

    path = os.path.join(folder_paths.models_dir, "lua")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:  # a read-only install: the README says to create it
        log.warning("LUA: could not create %s (%s); create it to hold LUA model files", path, e)


def _keys() -> list[str]:
    import folder_paths

    return [k for k in (FOLDER_KEY, CORE_KEY) if k in folder_paths.folder_names_and_paths]


def _files(key: str) -> dict[str, str]:
    """{name: full path} of every file with our extensions in `key`'s folders (the first folder wins a name)."""
    import folder_paths

    found: dict[str, str] = {}
    for folder in folder_paths.get_folder_paths(key):
        names, _ = folder_paths.recursive_search(folder, excluded_dir_names=[".git"])
        for name in names:
            if os.path.splitext(name)[1].lower() in EXTENSIONS:
                found.setdefault(name, os.path.join(folder, name))
    return found


_PICKLE_SCAN = 16 << 20  # a state dict's pickle (key names and storage references) is far smaller
_lua_file_cache: dict[str, tuple[int, int, bool]] = {}


def _names_look_like_lua(blob: bytes) -> bool:
    from ..lua_core.fileio import names_look_like_lua

    return names_look_like_lua(blob.decode("latin-1"))  # latin-1: every byte maps to one character


def _read_lua_evidence(path: str) -> bool:
    from ..lua_core.fileio import read_safetensors_header

    if os.path.splitext(path)[1].lower() in (".safetensors", ".sft"):
        header, _ = read_safetensors_header(path)
        if (header.get("__metadata__") or {}).get("lua.format") == "lua-latent-upscaler":
            return True
        return _names_look_like_lua("\n".join(header).encode())
    if zipfile.is_zipfile(path):  # torch.save's format: the key names sit in <archive>/data.pkl, stored plainly
        with zipfile.ZipFile(path) as z:
            pkl = next((i for i in z.infolist() if i.filename.endswith("/data.pkl")), None)
            return pkl is not None and pkl.file_size <= _PICKLE_SCAN and _names_look_like_lua(z.read(pkl))
    with open(path, "rb") as f:  # legacy torch.save: the state dict's pickle comes before the tensor data
        return _names_look_like_lua(f.read(_PICKLE_SCAN))


def is_lua_file(path: str) -> bool:
    """True when the file's header (or a .pth's key names) says it is a LUA model; cached by size and mtime."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    cached = _lua_file_cache.get(path)
    if cached and cached[:2] == (st.st_size, st.st_mtime_ns):
        return cached[2]
    try:
        answer = _read_lua_evidence(path)
    except (OSError, ValueError, zipfile.BadZipFile):
        answer = False
    _lua_file_cache[path] = (st.st_size, st.st_mtime_ns, answer)
    return answer


def list_models() -> list[str]:
    """Model names for the loader's combo box: the lua folders' files, then core's folder's LUA files."""
    register_model_folders()
    names: list[str] = []
    for key in _keys():
        found = _files(key)
        for name in sorted(found):
            if name not in names and (key != CORE_KEY or is_lua_file(found[name])):
                names.append(name)
    return names


def resolve_model(name: str) -> str:
    """Full path of a listed model name; a clear FileNotFoundError otherwise."""
    import folder_paths

    register_model_folders()
    for key in _keys():
        path = _files(key).get(name)
        if path and (key != CORE_KEY or is_lua_file(path)):
            return path
    core = _files(CORE_KEY).get(name) if CORE_KEY in _keys() else None
    if core:
        raise FileNotFoundError(
            f"'{name}' in {os.path.dirname(core)} is not a LUA model (its header names no LUA tensors); core's "
            "latent_upscale_models folder also holds other latent upscalers, which core's Load Latent Upscale "
            "Model loads. Choose a LUA model in Load LUA Model"
        )
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

    safetensors: our metadata (v1 and v2 files carry lua.channels / lua.family), else the first conv's
    shape in the header; .pth (v1 only, e.g. the official lua_flux.pth): a memory-mapped, weights-only load.
    """
    import torch

    from ..lua_core.checkpoint import infer_config, is_official_flux, unwrap_state_dict
    from ..lua_core.families import FAMILIES, get_family
    from ..lua_core.fileio import read_safetensors_header

    try:
        if os.path.splitext(path)[1].lower() in (".safetensors", ".sft"):
            header, _ = read_safetensors_header(path)
            meta = header.get("__metadata__") or {}
            if "lua.channels" in meta:
                fam = meta.get("lua.family")
                return int(meta["lua.channels"]), get_family(fam).label if fam else None
            return int(header["conv_first.weight"]["shape"][1]), None
        sd = unwrap_state_dict(torch.load(path, map_location="cpu", weights_only=True, mmap=True))
        official = is_official_flux(infer_config(sd))
        return int(sd["conv_first.weight"].shape[1]), FAMILIES["flux1"].label if official else None
    except Exception:  # noqa: BLE001 - anything unreadable is simply not offered as a fit
        return None


def fitting_models(channels: int) -> list[str]:
    """Installed LUA models that take `channels`-channel latents, as 'name (family)' for messages."""
    out = []
    for name in list_models():
        found = model_channels(resolve_model(name))
        if found and found[0] == channels:
            out.append(f"{name} ({found[1]})" if found[1] else name)
    return out
