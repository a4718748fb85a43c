"""Stand-in for comfy.model_management: devices, memory, interruption, load_models_gpu."""

from __future__ import annotations

import torch

OOM_EXCEPTION = torch.OutOfMemoryError
current_loaded_models: list = []
load_calls: list[dict] = []  # test introspection
_interrupted = False
_device = torch.device("cpu")


class InterruptProcessingException(Exception):
    pass


def get_torch_device() -> torch.device:
    return _device


def intermediate_device() -> torch.device:
    return torch.device("cpu")


def unet_offload_device() -> torch.device:
    return torch.device("cpu")


def get_free_memory(dev=None, torch_free_too=False):
    return 8 << 30


def module_size(module: torch.nn.Module) -> int:
    return sum(t.nelement() * t.element_size() for t in module.state_dict().values())


def load_models_gpu(
    models, memory_required=0, force_patch_weights=False, minimum_memory_required=None, force_full_load=False
):
    load_calls.append({"models": list(models), "memory_required": memory_required, "force_full_load": force_full_load})
    for m in models:
        m.model.to(m.load_device)
        if m not in current_loaded_models:
            current_loaded_models.insert(0, m)


def soft_empty_cache(force=False) -> None:
    pass


def interrupt_current_processing(value: bool = True) -> None:
    global _interrupted
    _interrupted = value


def processing_interrupted() -> bool:
    return _interrupted


def throw_exception_if_processing_interrupted() -> None:
    global _interrupted
    if _interrupted:
        _interrupted = False
        raise InterruptProcessingException()
