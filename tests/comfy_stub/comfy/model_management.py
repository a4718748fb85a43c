"""Stand-in for comfy.model_management: devices, memory, interruption, load_models_gpu."""

from __future__ import annotations

import torch

OOM_EXCEPTION = torch.OutOfMemoryError
current_loaded_models: list = []
load_calls: list[dict] = []  # test introspection
_interrupted = False
_device = torch.device("cpu")
# test switches: what core's precision helper answers, and whether load_models_gpu moves plain torch modules
# (newer ComfyUI with dynamic VRAM moves only modules built from comfy ops)
bf16_supported = False
moves_plain_modules = True


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
        if moves_plain_modules:
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


def vae_dtype(device=None, allowed_dtypes=()):
    """Core's VAE precision choice: bf16 only where the device supports it (never on CPU or with --force-fp32)."""
    for d in allowed_dtypes:
        if d == torch.bfloat16 and bf16_supported:
            return d
    return torch.float32
