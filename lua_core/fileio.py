"""File helpers shared by the whole package: atomic writes, the safetensors header, tensor digests, and
what a LUA file's tensor names look like.

Below everything else in lua_core: imports nothing from it, and nothing heavy at import time (torch is
only touched by `update_digest`, on tensors it is given), so the CLI's start-up checks and the ComfyUI
layer's folder listing can use it cheaply.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit for the JSON header

# Tensor names only a LUA network has: a file is LUA when every pattern of one signature occurs. One place
# for the rule: checkpoint loading checks a state dict's keys, the ComfyUI folder listing a raw header/pickle.
LUA_KEY_SIGNATURES: tuple[tuple[str, ...], ...] = (
    # v1 and the official LUA-FLUX network (Swin trunk, one head per scale)
    (
        r"conv_first\.weight",
        r"heads\.x\d+\.conv_last\.weight",
        r"layers\.\d+\.residual_group\.blocks\.\d+\.attn\.qkv\.weight",
    ),
    # v2 (re-encode prior + residual)
    (r"prior\.decoder\.1\.weight", r"stems\.x\d+\.weight", r"heads\.x\d+\.weight"),
)
_SIGNATURES = {
    whole: [[re.compile(f"(?m)^{p}$" if whole else p) for p in rule] for rule in LUA_KEY_SIGNATURES]
    for whole in (False, True)
}


def names_look_like_lua(names: str, whole_names: bool = False) -> bool:
    """True when `names` (key names joined by newlines if `whole_names`, else any text holding them, such as a
    safetensors header or a state dict's pickle decoded as latin-1) match one of LUA_KEY_SIGNATURES."""
    return any(all(rx.search(names) for rx in rule) for rule in _SIGNATURES[whole_names])


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> None:
    """Run `write(tmp)` on a temporary name beside `path`, then rename it over `path`.

    A failure (or an interrupt) leaves no partial file under `path`'s name, and the temporary file is
    removed; readers never see a half-written file, because the rename is atomic on one file system.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        write(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class HeaderError(ValueError):
    """A file that is not a readable safetensors file (the message says what was found)."""


def read_safetensors_header(path: str | os.PathLike) -> tuple[dict, int]:
    """(JSON header, byte offset where tensor data starts) of a safetensors file, reading only the header.

    Raises FileNotFoundError for a missing file and HeaderError for anything that is not a safetensors
    header (too short, an absurd length, not JSON, not a JSON object). Tensor entries are not checked here.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 2 <= length <= min(size - 8, MAX_HEADER_BYTES):
            raise HeaderError(f"{path.name} is not a safetensors file ({size} bytes, no valid header length)")
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise HeaderError(f"{path.name} has a damaged safetensors header ({e})") from e
    if not isinstance(header, dict):
        raise HeaderError(f"{path.name} has a damaged safetensors header (not a JSON object)")
    return header, 8 + length


def update_digest(h, tensors: Iterable[tuple[str, object]]) -> None:
    """Feed (name, tensor) pairs into hashlib object `h`: each name, then the tensor's raw bytes.

    Bytes, not a float sum, so the digest is the same on any thread count; equal to what
    `lua_core.train.distributed.state_checksum` and `lua_core.train.data.cache_key` hash per tensor.
    """
    import torch

    for k, v in tensors:
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
