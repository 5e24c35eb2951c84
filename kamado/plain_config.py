"""A typed config built from plain YAML data without OmegaConf, for the recipes it can build exactly.

Why: importing OmegaConf (with its grammar and attrs) and building its typed nodes is about 0.1 s of every
`kamado` command: a tenth of a small corpus run. Most recipes hold only plain values, each already of its
field's type; those are built here directly into the dataclasses. Anything else raises `NotPlain` and
kamado/recipe.py loads the recipe with OmegaConf as before, which converts the value or names the error. So the
recipe is the same whichever path builds it, and every error still comes from one place
(tests/test_recipe.py compares both paths on every shipped recipe and on values only OmegaConf handles).

Left to OmegaConf: unknown keys, a value of another type than its field (an int for a str, "yes" for a bool),
strings that look like numbers outside float fields (its YAML loader reads 1e-3 as a float, PyYAML as a string),
interpolations (`${...}`), missing required values (`???`), duplicate keys, and --set overrides.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from enum import Enum
from functools import lru_cache
from typing import Any

import yaml

from kamado.config import REQUIRED

# What OmegaConf's YAML loader reads as a float (and PyYAML may keep as a string): any such string is left to it.
_NUMBER_LIKE = re.compile(r"[-+]?(?:\d[\d_]*)?\.?[\d_]*(?:[eE][-+]?\d+)?|[-+]?\.?(?:inf|nan)", re.IGNORECASE)


class NotPlain(Exception):
    """Data the fast path does not build; OmegaConf does (or names the error)."""


class _UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """PyYAML's safe loader that refuses duplicate keys (OmegaConf's loader does; PyYAML keeps the last)."""


def _mapping(loader: Any, node: Any, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
    if len(set(map(repr, keys))) != len(keys):
        raise NotPlain("duplicate key")
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_yaml(text: str) -> Any:
    """The YAML's plain data (NotPlain on a duplicate key; yaml.YAMLError on bad YAML)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a safe loader)


@lru_cache(maxsize=None)
def _hints(cls: type) -> tuple[tuple[str, Any, Any], ...]:
    """(name, type, default or REQUIRED when required) per field."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        out.append((f.name, hints[f.name], REQUIRED if required or f.default == REQUIRED else None))
    return tuple(out)


def build(cls: type, data: Any) -> Any:
    """An instance of dataclass `cls` from plain `data` (a dict), or NotPlain."""
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise NotPlain(cls.__name__)
    fields = _hints(cls)
    if not set(data) <= {name for name, _, _ in fields}:
        raise NotPlain("unknown key")
    kwargs = {}
    for name, kind, required in fields:
        if name in data:
            kwargs[name] = _value(kind, data[name])
        elif required is not None:
            raise NotPlain(f"{name}: required")
    return cls(**kwargs)


def _value(kind: Any, v: Any) -> Any:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Union:  # Optional[X]
        if v is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _value(inner, v)
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        return build(kind, v)
    if origin is list and isinstance(v, list):
        return [_value(args[0], e) for e in v]
    if origin is dict and isinstance(v, dict) and all(isinstance(k, str) for k in v):
        return {k: _value(args[1], e) for k, e in v.items()}
    if isinstance(kind, type) and issubclass(kind, Enum) and isinstance(v, str) and v in kind._value2member_map_:
        return kind(v)
    if kind is float and type(v) in (int, float):
        return float(v)
    if kind is float and type(v) is str and _NUMBER_LIKE.fullmatch(v.strip()):
        try:
            return float(v.replace("_", ""))
        except ValueError:
            raise NotPlain(v) from None
    if kind in (int, bool) and type(v) is kind:
        return v
    if kind is str and type(v) is str and not _special(v):
        return v
    if kind is Any:
        return _any(v)
    raise NotPlain(repr(v))


def _any(v: Any) -> Any:
    """A value of an untyped field (per-source rule overrides): plain data only, no number-like strings."""
    if isinstance(v, dict):
        return {k: _any(e) for k, e in v.items()}
    if isinstance(v, list):
        return [_any(e) for e in v]
    if v is None or type(v) in (bool, int, float) or (type(v) is str and not _special(v)):
        return v
    raise NotPlain(repr(v))


def _special(s: str) -> bool:
    """A string OmegaConf may read otherwise: an interpolation, MISSING, or what its YAML loader takes for a number."""
    t = s.strip()
    number = _NUMBER_LIKE.fullmatch(t) is not None and (any(c.isdigit() for c in t) or t.lower().lstrip("+-.") in ("inf", "nan"))
    return "${" in s or s == REQUIRED or number
