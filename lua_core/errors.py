"""Exceptions with messages meant for the person at the keyboard: expected, found, what to do."""

from __future__ import annotations


class LUAError(Exception):
    """Base class for every error lua_core raises on purpose."""


class CheckpointError(LUAError):
    """A model file that is missing, corrupt, refused, or not a LUA latent model."""


class UnknownConfigKeys(ValueError):
    """A config dict with keys its class does not know (from a newer version of the pack, or a typo)."""

    def __init__(self, message: str, keys: list[str]) -> None:
        super().__init__(message)
        self.keys = keys


class LatentInputError(LUAError, ValueError):
    """A latent that this model cannot upscale (wrong channels, NaN, empty, nested...)."""


class UpscaleOutOfMemoryError(LUAError, MemoryError):
    """Out of memory even at the smallest tile and batch size."""
