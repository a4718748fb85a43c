"""Training pipeline: data cache, curriculum losses, trainer (python -m lua_core train)."""
