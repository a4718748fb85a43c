#!/usr/bin/env python3
"""Set up this project's venv and run the demo or the whole test suite.

    python3 dev.py demo [DEMO FLAGS]     # e.g. --output DIR; see: python3 dev.py demo --help
    python3 dev.py test [PYTEST ARGS]    # ruff check . and python -m pytest -q tests (what CI runs)

Needs only Python >= 3.10 with pip and venv; works from any folder (it runs in the folder it lives in).
The venv is `.venv` beside this file: created on first use, then reused; packages are installed again only
when requirements*.txt or the torch choice change. torch is pinned to `torch==2.13.0`, the version the tests
use. From PyPI that pin is, on Linux, the CUDA build (gigabytes with its nvidia-* packages, GPU or not); the
small CPU-only build the tests run on comes from PyTorch's CPU wheel index:
LUA_TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu. For a CUDA build name its index instead (e.g.
https://download.pytorch.org/whl/cu128); for another version set LUA_TORCH_SPEC (e.g. "torch==2.13.0").
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / "lua-dev-installed.json"  # what was installed, so a reused venv is not reinstalled
DEFAULT_TORCH = "torch==2.13.0"  # the tests' version; PyPI's Linux wheel of it is the CUDA build (see docstring)
REQUIREMENTS = {"demo": ["requirements.txt"], "test": ["requirements.txt", "requirements-dev.txt"]}


def venv_python(venv: Path = VENV) -> Path:
    """The venv's interpreter (POSIX or Windows layout)."""
    posix = venv / "bin" / "python"
    return posix if posix.exists() or os.name != "nt" else venv / "Scripts" / "python.exe"


def wanted_packages(target: str, env: dict[str, str]) -> dict[str, str]:
    """What `target` needs installed, as {item: fingerprint}; an item is reinstalled when its fingerprint changes."""
    torch_spec = env.get("LUA_TORCH_SPEC") or DEFAULT_TORCH
    wanted = {"torch": json.dumps([torch_spec, env.get("LUA_TORCH_INDEX_URL", "")])}
    for name in REQUIREMENTS[target]:
        wanted[name] = hashlib.sha256((ROOT / name).read_bytes()).hexdigest()
    return wanted


def plan(
    target: str, args: list[str], env: dict[str, str], installed: dict[str, str] | None
) -> list[tuple[list[str], dict[str, str]]]:
    """The steps of `dev.py target args` as (command, what it installs), given what the venv has (None: no venv)."""
    py = str(venv_python())
    steps: list[tuple[list[str], dict[str, str]]] = []
    if installed is None:
        steps.append(([sys.executable, "-m", "venv", str(VENV)], {}))
        installed = {}
    wanted = wanted_packages(target, env)
    if installed.get("torch") != wanted["torch"]:
        torch_spec, index_url = json.loads(wanted["torch"])
        extra = ["--index-url", index_url] if index_url else []
        steps.append(([py, "-m", "pip", "install", torch_spec, *extra], {"torch": wanted["torch"]}))
    stale = {name: wanted[name] for name in REQUIREMENTS[target] if installed.get(name) != wanted[name]}
    if stale:
        steps.append(([py, "-m", "pip", "install"] + [a for name in stale for a in ("-r", name)], stale))
    if target == "demo":
        steps.append(([py, "-m", "lua_core", "demo", *args], {}))
    else:
        steps.append(([py, "-m", "ruff", "check", "."], {}))
        steps.append(([py, "-m", "pytest", "-q", "tests", *args], {}))
    return steps


def read_stamp() -> dict[str, str] | None:
    """What earlier runs installed into .venv ({} for a venv made some other way; None when there is no venv)."""
    if not venv_python().exists():
        return None
    try:
        return json.loads(STAMP.read_text())
    except (OSError, ValueError):
        return {}


def main(argv: list[str]) -> int:
    """Run `demo` or `test`; returns the exit code of the first failing step (0 when all pass)."""
    if not argv or argv[0] not in REQUIREMENTS:
        print(__doc__, file=sys.stderr)
        return 2
    target, args = argv[0], argv[1:]
    os.chdir(ROOT)
    for cmd, installs in plan(target, args, dict(os.environ), read_stamp()):
        print("+", " ".join(cmd), flush=True)
        code = subprocess.call(cmd)
        if code != 0:
            return code
        if installs:  # recorded only once the install succeeded
            STAMP.write_text(json.dumps({**(read_stamp() or {}), **installs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
