"""Provision a real ComfyUI (source tarball from ../shared/comfyui + a CPU venv) for the integration tests.

    python tools/comfyui_lab.py 0.8.0          # prints the ComfyUI folder and its venv's python

Each version is extracted and its venv built once into .cache/comfyui/<version>-<tarball sha256[:12]>/
(ComfyUI/, lab/venv/), with ../shared/tools/setup_comfyui_cpu.sh; a finished build leaves a `ready`
stamp and is reused. A lock file makes concurrent test runs wait for one build instead of racing.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("LUA_SHARED_DIR", ROOT.parent / "shared"))
TARBALLS = SHARED / "comfyui"
SETUP_SCRIPT = SHARED / "tools" / "setup_comfyui_cpu.sh"
CACHE = ROOT / ".cache" / "comfyui"
VERSIONS = ("0.3.59", "0.8.0")


@dataclass(frozen=True)
class ComfyLab:
    """A ready ComfyUI checkout and the python of its venv."""

    version: str
    comfy_dir: Path
    python: Path


def tarball(version: str) -> Path:
    """The source tarball of one ComfyUI version in ../shared/comfyui."""
    return TARBALLS / f"ComfyUI-{version}.tar.gz"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def extract_safely(tar: tarfile.TarFile, dest: Path) -> None:
    """Unpack without writing outside `dest`: tarfile's "data" filter where this Python has it (3.11.4+),
    else the same refusal of absolute, parent-escaping and link members by hand (Debian 12 ships 3.11.2)."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, filter="data")
        return
    root = dest.resolve()
    for member in tar.getmembers():
        target = (dest / member.name).resolve()
        if member.issym() or member.islnk() or not target.is_relative_to(root):
            raise RuntimeError(f"refusing to unpack {member.name!r} from {tar.name}: a link or a path outside {dest}")
    tar.extractall(dest)


def provision(version: str, log=sys.stderr) -> ComfyLab:
    """Extract and build (or reuse) ComfyUI `version` with a CPU venv; raises RuntimeError with the log tail."""
    src = tarball(version)
    if not src.is_file():
        raise FileNotFoundError(f"no ComfyUI {version} tarball at {src}; see ../shared/comfyui/README.md")
    home = CACHE / f"{version}-{_sha256(src)[:12]}"
    comfy_dir, lab = home / "ComfyUI", home / "lab"
    ready = ComfyLab(version, comfy_dir, lab / "venv" / "bin" / "python")
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second test run waits here for the first one's build
        if (home / "ready").is_file():
            return ready
        for stale in (comfy_dir, lab):
            shutil.rmtree(stale, ignore_errors=True)
        print(f"building ComfyUI {version} CPU venv in {home} (a few minutes, once)", file=log, flush=True)
        with tarfile.open(src) as tar:
            extract_safely(tar, home)
        if not comfy_dir.is_dir():
            raise RuntimeError(f"{src} did not unpack to a ComfyUI/ folder; found {sorted(os.listdir(home))}")
        build_log = home / "setup.log"
        with open(build_log, "w") as out:
            done = subprocess.run(
                ["bash", str(SETUP_SCRIPT), str(lab), str(comfy_dir)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHON": shutil.which("python3.11") or "python3"},
            )
        if done.returncode != 0:
            raise RuntimeError(
                f"building the ComfyUI {version} venv failed (exit {done.returncode}); "
                f"last lines of {build_log}:\n{build_log.read_text()[-3000:]}"
            )
        (home / "ready").write_text(version + "\n")
    return ready


def main(argv: list[str]) -> None:
    for version in argv or VERSIONS:
        lab = provision(version)
        print(f"ComfyUI {lab.version}: {lab.comfy_dir} python {lab.python}")


if __name__ == "__main__":
    main(sys.argv[1:])
