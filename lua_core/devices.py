"""Device names given on the command line (--device), checked against this machine; what the CPU can do."""

from __future__ import annotations

import functools

import torch

from .errors import LUAError


def resolve_device(name: str | None) -> torch.device:
    """Parse a --device value and check this machine has it (cpu when None)."""
    if name is None:
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise LUAError(f"--device {name!r} is not a device name; expected cpu, cuda, cuda:N or mps") from e
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise LUAError(
                f"--device {name}: this PyTorch ({torch.__version__}) sees no CUDA GPU; use --device cpu, "
                "or install a CUDA build of torch (README, Install)"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise LUAError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here (cuda:0 ...)")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise LUAError(f"--device {name}: this machine has no Apple MPS device; use --device cpu")
    elif device.type != "cpu":
        raise LUAError(f"--device {name}: expected cpu, cuda, cuda:N or mps")
    return device


def training_device(name: str) -> torch.device:
    """A trainer's --device: "auto" is the CUDA GPU where there is one, else the CPU; other names as resolve_device."""
    return resolve_device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


@functools.cache  # asked once per tile by decoder matching; the CPU does not change
def cpu_has_native_bf16() -> bool:
    """True on x86 CPUs with AMX or AVX-512 bf16 (bf16 autocast is slower than fp32 elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def training_hardware() -> str:
    """What a training record names as its hardware: the CUDA device, else the CPU threads torch uses."""
    return torch.cuda.get_device_name() if torch.cuda.is_available() else f"{torch.get_num_threads()} CPU threads"
