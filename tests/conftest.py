"""Shared fixtures: tiny LUA models, official-layout checkpoints, paths to ../shared."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tools"))

import comfyui_lab  # noqa: E402

from lua_core import LUAConfig, ModelInfo, SwinIRMultiHead, get_family  # noqa: E402
from lua_core.model import LUAModel  # noqa: E402

SHARED = ROOT.parent / "shared"
VAE_APPROX = SHARED / "vae_approx"
TRAIN_IMAGES = SHARED / "data" / "train"
COMFYUI_TESTS = "test_comfyui_integration.py"
_comfyui_build: subprocess.Popen | None = None


def free_port() -> int:
    """A loopback TCP port nothing listens on now (a fixed one collides with a second test run)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the real-ComfyUI tests last and build their ComfyUI venvs in the background meanwhile.

    A build is ~90 s per version, mostly pip unpacking wheels; run first and in turn, the builds added ~3 min to the
    suite. Started here, they overlap the CPU-bound tests; the tests' fixture (tools/comfyui_lab.py `provision`)
    waits on the same lock and reuses the build, or builds again itself, reporting the error, if this one failed."""
    global _comfyui_build
    comfy = [item for item in items if item.path.name == COMFYUI_TESTS]
    if not comfy or config.option.collectonly:
        return
    items[:] = [item for item in items if item.path.name != COMFYUI_TESTS] + comfy
    versions = [v for v in comfyui_lab.VERSIONS if comfyui_lab.tarball(v).is_file()]
    if versions and _comfyui_build is None:
        comfyui_lab.CACHE.mkdir(parents=True, exist_ok=True)
        with open(comfyui_lab.CACHE / "background-build.log", "w") as log:
            _comfyui_build = subprocess.Popen(
                [sys.executable, str(ROOT / "tools" / "comfyui_lab.py"), *versions],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: the session's end stops pip with it
            )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop a background ComfyUI build still running (a run stopped early); the next run starts it again."""
    if _comfyui_build is not None and _comfyui_build.poll() is None:
        os.killpg(_comfyui_build.pid, signal.SIGTERM)
        _comfyui_build.wait()


@pytest.fixture(autouse=True)
def torch_threads_as_found():
    """Give back torch's thread count after each test: in-process training sets it (train --threads), and the
    float reductions of later tests (compared with a ComfyUI server's numbers, say) change with it."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def tiny_config(channels: int = 4, **kw) -> LUAConfig:
    """A few-thousand-parameter LUA network: same code paths as the official one, fast on CPU."""
    base = dict(
        in_chans=channels,
        out_chans=channels,
        embed_dim=24,
        depths=(2, 2),
        num_heads=(2, 2),
        window_size=8,
        img_size=16,
        head_num_feat=16,
        scales=(2, 4),
    )
    base.update(kw)
    return LUAConfig(**base)


def make_model(channels: int = 4, family: str | None = "sdxl", seed: int = 0, **kw) -> LUAModel:
    """Random-weight tiny LUAModel (eval mode, fp32, CPU)."""
    torch.manual_seed(seed)
    cfg = tiny_config(channels, **kw)
    net = SwinIRMultiHead(cfg).eval()
    # random non-trivial biases so heads/attention are exercised beyond their init
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("relative_position_bias_table"):
                p.normal_(0, 0.5)
    return LUAModel(net, ModelInfo(cfg, get_family(family) if family else None), "tiny")


@pytest.fixture
def tiny_model() -> LUAModel:
    return make_model()


@pytest.fixture(scope="session")
def official_state_dict() -> dict[str, torch.Tensor]:
    """Random weights in the exact official LUA-FLUX layout (556 keys)."""
    torch.manual_seed(1234)
    net = SwinIRMultiHead(LUAConfig())
    return {k: v.clone() for k, v in net.state_dict().items()}


@pytest.fixture(scope="session")
def official_pth(tmp_path_factory, official_state_dict) -> Path:
    """A synthetic lua_flux.pth: torch.save({"params_ema": sd}) as BasicSR writes it."""
    path = tmp_path_factory.mktemp("official") / "lua_flux.pth"
    torch.save({"params_ema": official_state_dict}, path)
    return path
