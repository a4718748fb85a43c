"""Stand-in for comfy.model_patcher.ModelPatcher (the bookkeeping load_models_gpu relies on)."""

from __future__ import annotations

import torch

from . import model_management


class ModelPatcher:
    def __init__(self, model: torch.nn.Module, load_device, offload_device, size: int = 0, weight_inplace_update=False):
        self.model = model
        self.load_device = load_device
        self.offload_device = offload_device
        self.size = size
        if not hasattr(model, "device") or model.device is None:
            model.device = offload_device

    def model_size(self) -> int:
        if self.size == 0:
            self.size = model_management.module_size(self.model)
        return self.size

    def current_loaded_device(self):
        return self.model.device
