"""Shared fixtures: tiny LUA models, official-layout checkpoints, paths to ../shared."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from lua_core import LUAConfig, ModelInfo, SwinIRMultiHead, get_family  # noqa: E402
from lua_core.model import LUAModel  # noqa: E402

SHARED = ROOT.parent / "shared"
VAE_APPROX = SHARED / "vae_approx"
TRAIN_IMAGES = SHARED / "data" / "train"


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
