"""The run's state file (<run_dir>/state.pt) of every trainer, and as `train --resume` reads it back: the settings the
run was started with, and the stage schedule it follows (which --fit-minutes may have rescaled)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from ..fileio import atomic_write
from .config import TrainConfig

STATE_FILE = "state.pt"
# the settings that fix the network's shape: a resumed run may change anything else
MODEL_FIELDS = (
    "input_skip",
    "embed_dim",
    "depths",
    "num_heads",
    "window_size",
    "mlp_ratio",
    "img_size",
    "head_num_feat",
    "scales",
    "family",
)


def state_path(run_dir: str | Path) -> Path:
    """Where a run keeps its state."""
    return Path(run_dir) / STATE_FILE


def read_state(path: Path) -> dict[str, Any]:
    """The saved state, tensors on the CPU."""
    return torch.load(path, map_location="cpu", weights_only=True)


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Save a run's state through a temporary file: a run stopped mid-write keeps its previous state."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def stored_config(state: dict[str, Any]) -> TrainConfig:
    """The settings a run was saved with (stored as a plain dict; settings since removed are dropped)."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in state["config"].items() if k in known})


def check_same_model(saved: TrainConfig, cfg: TrainConfig, run_dir: str | Path) -> None:
    """Refuse to resume into a network of another shape (its weights would not load)."""
    changed = [k for k in MODEL_FIELDS if getattr(saved, k) != getattr(cfg, k)]
    if changed:
        raise ValueError(f"--resume: the run in {run_dir} was trained with different {changed}; use a new --run-dir")


def resumed_stages(state: dict[str, Any], cfg: TrainConfig) -> tuple[int, ...]:
    """The stage schedule a resumed run continues on: the saved (possibly fitted) one, unless `cfg` asks for
    other stage steps than the run was started with."""
    saved = state.get("stages")
    # state files written before the schedule was saved on its own kept the fitted schedule in the config,
    # which config_with_resume carries into `cfg`
    if saved is None or cfg.stage_steps != stored_config(state).stage_steps:
        return cfg.stages
    return tuple(int(n) for n in saved)


def config_with_resume(cfg: TrainConfig, explicit: dict[str, Any]) -> TrainConfig:
    """On --resume, start from the stored run settings and re-apply only explicitly given ones."""
    path = state_path(cfg.run_dir)
    if not path.is_file():
        return cfg
    return dataclasses.replace(stored_config(read_state(path)), **explicit)
