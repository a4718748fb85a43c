"""What a v1 training step uses besides the loss itself: the mixed-precision context, the EMA of the weights, and
each loss term's share of the gradient (logged, so every enabled term is seen to matter)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

from ..devices import cpu_has_native_bf16
from .config import TrainConfig


def autocast_for(cfg: TrainConfig, device: torch.device) -> AbstractContextManager:
    """Mixed-precision context for the forward pass."""
    mode = cfg.amp
    if mode == "auto":
        mode = "bf16" if device.type == "cuda" or cpu_has_native_bf16() else "off"
    if mode == "off":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def ema_average(decay: float) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """AveragedModel avg_fn: EMA with the decay warmed up over the first steps ((1+n)/(10+n))."""

    def avg(ema_param: torch.Tensor, param: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        # the warm-up keeps the random initial weights from dominating the average of a short run
        d = min(decay, (1 + float(num_averaged)) / (10 + float(num_averaged)))
        return ema_param + (param - ema_param) * (1 - d)

    return avg


def gradient_shares(terms: dict[str, torch.Tensor], params: list[nn.Parameter]) -> dict[str, float]:
    """Each loss term's gradient norm as a share of the sum over terms (what the optimiser hears from it)."""
    norms = {}
    for name, value in terms.items():
        grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
        norms[name] = float(torch.sqrt(sum(g.float().square().sum() for g in grads if g is not None)))
    total = sum(norms.values()) or 1.0
    return {k: round(v / total, 5) for k, v in norms.items()}
