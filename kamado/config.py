"""What every stage's typed config shares: choices, path fields, validation, and the marks that say which keys
change a stage's result.

Each stage package owns its config dataclass (kamado/<package>/config.py): choice fields typed by a `Choice`
enum (OmegaConf refuses any other value, naming the key), path fields declared with `path_field` (resolved
against the recipe's folder by `resolve_paths`, listed as stage inputs by `input_paths`), and a `validate(key)`
method for ranges and consistency inside the section (run by `validate_tree`). kamado/recipe.py composes them
into the recipe, loads YAML into it and names the file in every error. This module imports nothing of kamado.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import MISSING, field
from enum import Enum
from functools import lru_cache
from pathlib import Path
from typing import Any


REQUIRED = "???"  # a required value (OmegaConf's MISSING): a recipe that leaves it out is refused, naming it


class RecipeError(ValueError):
    """A recipe that cannot run: the message names the file and the key."""


class ConfigError(RecipeError):
    """A value refused by a config's own check; the recipe puts the file in front (`where: key 'k': message`)."""

    def __init__(self, key: str, message: str):
        super().__init__(f"key '{key}': {message}")
        self.key, self.message = key, message


class Choice(str, Enum):
    """A config value out of a fixed set: `Precision = Choice("Precision", "fp32 bf16 fp16")`. Members are named
    by their values, which is what the YAML holds and what OmegaConf matches; being a str, a member equals its
    value (`cfg.precision == "bf16"`, dict keys, json), and `str()`/f-strings give the value on every Python
    version (3.10 has no StrEnum)."""

    @staticmethod
    def _generate_next_value_(name: str, start: int, count: int, last_values: list) -> str:  # noqa: ARG004
        return name

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(m.value for m in cls)


# A stage's fingerprint covers the keys that change its result. Keys marked `operational` (logging, checkpoint
# and eval cadence, how many checkpoints are kept, worker processes, samples kept for inspection) never
# invalidate a finished stage nor move its folder aside. `extendable` keys (a training stage's max_steps) are
# kept out of the fingerprint too: raising one resumes the stage from its newest checkpoint (kamado/stage.py).
def operational(default: Any) -> Any:
    return field(default=default, metadata={"operational": True})


def extendable(default: Any) -> Any:
    return field(default=default, metadata={"extendable": True})


# `layout` keys (how many nodes and ranks, and the gradient accumulation that makes up the difference) say how a
# training step is spread over the machines a cluster gave this time, not what a step computes: the fingerprint
# holds their product with micro_batch_size, the samples per optimizer step, instead of each. A resume on another
# allocation with the same samples per step continues (kamado/train/elastic.py reshards the checkpoint).
def layout(default: Any) -> Any:
    return field(default=default, metadata={"layout": True})


def marked_keys(cls: type, mark: str) -> set[str]:
    """Names of `cls`'s fields marked `mark` here or in any dataclass it derives from (a subclass that only
    changes a default, like SFTConfig.max_steps, keeps its base's mark)."""
    return {f.name for base in cls.__mro__ if dataclasses.is_dataclass(base)
            for f in dataclasses.fields(base) if f.metadata.get(mark)}


# ---------------------------------------------------------------- paths
def path_field(default: Any = None, *, factory: Any = MISSING) -> Any:
    """A field holding a path or a list of paths (files, folders or globs) that a recipe writes relative to its
    own folder: `resolve_paths` makes it absolute, `input_paths` lists it among the stage's inputs."""
    if factory is not MISSING:
        return field(default_factory=factory, metadata={"path": True})
    return field(default=default, metadata={"path": True})


def paths_of(cls: type) -> Any:
    """A dict field of overrides for `cls` (e.g. a corpus source's `rules`): its keys that are path fields of
    `cls` are paths too."""
    return field(default_factory=dict, metadata={"paths_of": cls})


def _absolute(value: Any, base: Path) -> Any:
    if isinstance(value, str):
        return value if os.path.isabs(value) else str((base / value).resolve())
    if isinstance(value, list):
        return [_absolute(v, base) for v in value]
    return value  # None (not set), or a wrong type that the typed merge reports


def resolve_paths(obj: Any, base: Path) -> None:
    """Every path field in `obj` and the dataclasses inside it, made absolute against `base` (in place)."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.metadata.get("path"):
            setattr(obj, f.name, _absolute(value, base))
        elif f.metadata.get("paths_of") and isinstance(value, dict):
            for key in marked_keys(f.metadata["paths_of"], "path") & set(value):
                value[key] = _absolute(value[key], base)
        else:
            for _, item in _children(value, ""):
                resolve_paths(item, base)


def input_paths(obj: Any, key: str) -> list[tuple[str, str]]:
    """(recipe key, path or glob) of every path set in `obj`'s path fields; a config that reads its paths in a
    way of its own (a token-shard folder's index.json, a disabled section) says so in an `input_paths(key)`."""
    own = getattr(obj, "input_paths", None)
    return own(key) if callable(own) else marked_paths(obj, key)


def marked_paths(obj: Any, key: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for f in dataclasses.fields(obj):
        value, sub = getattr(obj, f.name), f"{key}.{f.name}"
        if f.metadata.get("path"):
            out += _listed(sub, value)
        elif f.metadata.get("paths_of") and isinstance(value, dict):
            for name in sorted(marked_keys(f.metadata["paths_of"], "path") & set(value)):
                out += _listed(f"{sub}.{name}", value[name])
        else:
            for item_key, item in _children(value, sub):
                out += input_paths(item, item_key)
    return out


def _listed(key: str, value: Any) -> list[tuple[str, str]]:
    if isinstance(value, list):
        return [(f"{key}[{i}]", p) for i, p in enumerate(value) if p]
    return [(key, value)] if value else []


def _children(value: Any, key: str) -> list[tuple[str, Any]]:
    """The dataclasses directly inside a field's value, with their keys (a nested config, a list of them)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [(key, value)]
    if isinstance(value, list):
        return [(f"{key}[{i}]", v) for i, v in enumerate(value) if dataclasses.is_dataclass(v)]
    return []


# ---------------------------------------------------------------- validation
def omegaconf_message(exc: Exception) -> str:
    """OmegaConf's error in one line, with the key it names."""
    key = getattr(exc, "full_key", None)
    msg = str(exc).splitlines()[0]
    return f"key '{key}': {msg}" if key else msg


@lru_cache(maxsize=None)
def _choice_fields(cls: type) -> dict[str, type[Choice]]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)
            if isinstance(hints.get(f.name), type) and issubclass(hints[f.name], Choice)}


def validate_tree(obj: Any, key: str) -> None:
    """`obj.validate(key)` for `obj` and every dataclass inside it (each checks its own fields), after checking
    that each choice field holds one of its values (OmegaConf did so for YAML; this covers configs built in
    code). Raises ConfigError naming the full key."""
    for name, enum in _choice_fields(type(obj)).items():
        value = getattr(obj, name)
        if value not in enum.values():
            raise ConfigError(f"{key}.{name}", f"must be one of {', '.join(enum.values())}, not {value!r}")
    check = getattr(obj, "validate", None)
    if callable(check):
        check(key)
    for f in dataclasses.fields(obj):
        for item_key, item in _children(getattr(obj, f.name), f"{key}.{f.name}"):
            validate_tree(item, item_key)


def at_least(key: str, obj: Any, names: tuple[str, ...], low: int = 1, hint: str = "") -> None:
    """Each of `obj`'s fields `names` is `low` or more."""
    for name in names:
        value = getattr(obj, name)
        if value < low:
            more = "0 or more" if low == 0 else f"at least {low}"
            raise ConfigError(f"{key}.{name}", f"must be {more}, not {value}{hint}")
