"""Command-line flags of a frozen training config: one flag per field, and the config built back from them."""

from __future__ import annotations

import argparse
from dataclasses import fields, replace
from typing import Any, TypeVar

from .state import read_state, state_path

Config = TypeVar("Config")


def int_tuple(text: str) -> tuple[int, ...]:
    """'2,4' -> (2, 4): the flag form of a tuple field."""
    return tuple(int(x) for x in text.split(","))


def add_config_flags(p: argparse.ArgumentParser, config: type, skip: tuple[str, ...]) -> None:
    """One `--field-name` flag per field of `config` not in `skip`, typed like the field's default (its help says
    the default; the config's own checks say what a wrong value should be)."""
    for f in fields(config):
        if f.name in skip:
            continue
        kind = type(f.default)
        if kind is bool:  # argparse's type=bool reads any non-empty text, "False" too, as True
            raise TypeError(f"{config.__name__}.{f.name}: a bool field needs its own flag (store_true), not type=bool")
        flag = "--" + f.name.replace("_", "-")
        default = ",".join(map(str, f.default)) if kind is tuple else f.default
        p.add_argument(flag, type=int_tuple if kind is tuple else kind, help=f"default: {default!r}" if default != "" else "default: none")


def with_tuples(values: dict[str, Any]) -> dict[str, Any]:
    """Lists (from argparse's nargs or a saved state) as tuples, the frozen configs' sequence type."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def config_from_flags(
    args: argparse.Namespace,
    config: type[Config],
    keep_on_resume: tuple[str, ...],
    if_given_on_resume: tuple[tuple[str, ...], ...] = (),
) -> tuple[Config, bool]:
    """The run's config and whether it resumes: the flags given, or with `--resume` and a saved state in its run
    folder, the saved config but for the fields in `keep_on_resume` (this call's, given or default) and each group of
    `if_given_on_resume` of which a flag was given (the whole group from this call: e.g. minutes and steps, two ways
    to say one run length)."""
    given = with_tuples({f.name: getattr(args, f.name) for f in fields(config) if getattr(args, f.name, None) is not None})
    cfg = config(**given)
    state = state_path(cfg.run_dir)
    if not (args.resume and state.is_file()):
        return cfg, False
    saved = with_tuples(read_state(state)["config"])
    mine = [*keep_on_resume, *(name for group in if_given_on_resume if set(group) & set(given) for name in group)]
    return replace(config(**saved), **{name: getattr(cfg, name) for name in mine}), True
