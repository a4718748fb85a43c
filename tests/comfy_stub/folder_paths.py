"""Stand-in for ComfyUI's folder_paths (model folder registry and file listing)."""

from __future__ import annotations

import os

supported_pt_extensions: set[str] = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
folder_names_and_paths: dict[str, tuple[list[str], set[str]]] = {}
base_path = ""
models_dir = ""
filename_list_cache: dict[str, tuple[list[str], dict[str, float]]] = {}


def reset(base: str) -> None:
    """Test helper: a fresh ComfyUI base directory with the default model folders."""
    global base_path, models_dir
    base_path = base
    models_dir = os.path.join(base, "models")
    folder_names_and_paths.clear()
    filename_list_cache.clear()
    for key in ("checkpoints", "vae", "vae_approx", "upscale_models"):
        folder_names_and_paths[key] = ([os.path.join(models_dir, key)], supported_pt_extensions)


def add_model_folder_path(folder_name: str, full_folder_path: str, is_default: bool = False) -> None:
    if folder_name in folder_names_and_paths:
        paths, _ = folder_names_and_paths[folder_name]
        if full_folder_path in paths:
            if is_default and paths[0] != full_folder_path:
                paths.remove(full_folder_path)
                paths.insert(0, full_folder_path)
        elif is_default:
            paths.insert(0, full_folder_path)
        else:
            paths.append(full_folder_path)
    else:
        folder_names_and_paths[folder_name] = ([full_folder_path], set())


def get_folder_paths(folder_name: str) -> list[str]:
    return folder_names_and_paths[folder_name][0][:]


def recursive_search(directory: str, excluded_dir_names: list[str] | None = None) -> tuple[list[str], dict[str, float]]:
    """Files under `directory` (relative paths, links followed) and each folder's mtime, as core returns them."""
    if not os.path.isdir(directory):
        return [], {}
    excluded = excluded_dir_names or []
    result, dirs = [], {directory: os.path.getmtime(directory)}
    for root, subdirs, files in os.walk(directory, followlinks=True, topdown=True):
        subdirs[:] = [d for d in subdirs if d not in excluded]
        result.extend(os.path.relpath(os.path.join(root, f), directory) for f in files)
        dirs.update({os.path.join(root, d): os.path.getmtime(os.path.join(root, d)) for d in subdirs})
    return result, dirs


def filter_files_extensions(files, extensions) -> list[str]:
    return sorted(f for f in files if os.path.splitext(f)[-1].lower() in extensions or len(extensions) == 0)


def get_filename_list(folder_name: str) -> list[str]:
    paths, exts = folder_names_and_paths[folder_name]
    found: set[str] = set()
    for p in paths:
        found.update(filter_files_extensions(recursive_search(p, excluded_dir_names=[".git"])[0], exts))
    return sorted(found)


def get_full_path(folder_name: str, filename: str) -> str | None:
    if folder_name not in folder_names_and_paths:
        return None
    filename = os.path.relpath(os.path.join("/", filename), "/")
    for p in folder_names_and_paths[folder_name][0]:
        full = os.path.join(p, filename)
        if os.path.isfile(full):
            return full
    return None


def get_full_path_or_raise(folder_name: str, filename: str) -> str:
    full = get_full_path(folder_name, filename)
    if full is None:
        raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.")
    return full
