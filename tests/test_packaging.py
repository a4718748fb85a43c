"""`pip install .` and `pip install -e .`: the package builds from what a clone holds, installs, imports from
another folder, and its console script and demo run from the installed copy with only the bundled assets.

Fast and offline by design: each throw-away venv is made without pip and borrows this test venv's packages
(torch, numpy, setuptools, ...) through a .pth file, and `pip --python VENV install --no-deps
--no-build-isolation --no-index` installs into it. So these tests prove the packaging (build backend,
package list, package data, console script, bundled-asset lookup), not the download of dependencies; that
`pyproject.toml` declares what `requirements.txt` lists is checked by a test below.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from conftest import ROOT
from PIL import Image

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def clone_files(dst: Path) -> Path:
    """Copy what a fresh clone would hold (tracked and not-ignored files) to dst, so no local build output leaks in."""
    proc = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True
    )
    if proc.returncode == 0:
        names = [n for n in proc.stdout.decode().split("\0") if n]
    else:  # not a git checkout (an unpacked archive): everything but local environments and caches
        skip = {".git", ".venv", ".cache", "build", "dist", "runs", "lua_demo", "__pycache__", ".pytest_cache"}
        names = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.parts)]
    for name in names:
        src = ROOT / name
        if src.is_file():  # a tracked file deleted in the working tree is not there to copy
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / name)
    return dst


def borrowing_venv(path: Path) -> tuple[Path, Path]:
    """A venv without pip whose imports fall back to this interpreter's site-packages; (python, its purelib)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    import site

    (purelib / "borrowed-from-test-venv.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return python, purelib


def pip_install(python: Path, *args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-build-isolation"]
    proc = subprocess.run([*cmd, "--no-index", *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("LUA_VAE_APPROX", "PYTHONPATH")}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return clone_files(tmp_path_factory.mktemp("clone") / "lua-latent-upscaler")


def test_pip_install_then_import_console_script_and_demo_from_another_folder(tmp_path, source):
    python, purelib = borrowing_venv(tmp_path / "venv")
    pip_install(python, str(source))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    proc = run([str(python), "-c", "import lua_core; print(lua_core.__file__)"], elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).parent == purelib / "lua_core"  # the installed copy, not the checkout

    script = python.parent / ("lua-upscale.exe" if os.name == "nt" else "lua-upscale")
    proc = run([str(script), "--help"], elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: lua-upscale")
    for command in ("info", "convert", "upscale", "train", "eval", "demo"):
        assert command in proc.stdout

    # the demo from the installed copy: bundled model, bundled taesdxl, bundled photo; nothing else reachable
    proc = run([str(script), "demo", "--output", "out", "--max-side", "128"], elsewhere)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"tiny autoencoder: taesdxl from {purelib / 'lua_core' / 'assets'}" in proc.stdout
    assert "model: lua-sdxl-small.safetensors" in proc.stdout
    for scale in (2, 4):
        for method in ("lua", "pixel_bicubic", "latent_bicubic"):
            with Image.open(elsewhere / "out" / f"{method}_x{scale}.png") as im:
                assert im.size == (32 * scale, 32 * scale)  # 128 px original -> 32 px input
    assert (purelib / "lua_core" / "bundled_models" / "lua-sdxl-small.safetensors").is_file()
    assert (purelib / "lua_core" / "assets" / "LICENSE-taesd.txt").is_file()


def test_editable_install_imports_the_checkout(tmp_path, source):
    python, _ = borrowing_venv(tmp_path / "venv")
    pip_install(python, "-e", str(source))
    probe = "import lua_core.demo as d; print(d.__file__); print(d.bundled_model())"
    proc = run([str(python), "-c", probe], tmp_path)
    assert proc.returncode == 0, proc.stderr
    module, model = proc.stdout.split()
    assert Path(module) == source / "lua_core" / "demo.py"
    assert Path(model) == source / "models" / "lua-sdxl-small.safetensors"
    proc = run([str(python.parent / "lua-upscale"), "info", str(source / "models" / "lua-sd3-small.safetensors")], tmp_path)
    assert proc.returncode == 0 and "SD3 latents" in proc.stdout, proc.stderr


def test_dependencies_match_requirements_txt():
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    required = sorted(line.strip() for line in lines if line.strip() and not line.startswith("#"))
    assert sorted(PYPROJECT["project"]["dependencies"]) == required
    assert not any(dep.startswith("torch") for dep in required)  # ComfyUI brings its own build


def test_every_lua_core_package_is_in_the_wheel():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "lua_core").rglob("__init__.py")
    }
    assert on_disk <= listed, f"add {sorted(on_disk - listed)} to [tool.setuptools] packages in pyproject.toml"
    assert PYPROJECT["project"]["scripts"]["lua-upscale"] == "lua_core.cli:main"
