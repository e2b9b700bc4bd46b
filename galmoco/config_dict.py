"""Nested config dataclasses to and from plain dicts (what YAML files and checkpoints hold).

Generic over the dataclass, so :mod:`galmoco.config` keeps only the settings themselves.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from galmoco.errors import GalmocoError

__all__ = ["config_to_dict", "config_value", "dataclass_from_dict"]


def config_value(config: Any, dotted: str) -> Any:
    """The value of a dotted field (``"optim.lr"``) of a (nested) config dataclass."""
    for part in dotted.split("."):
        config = getattr(config, part)
    return config


def config_to_dict(config: Any) -> dict[str, Any]:
    """A dataclass as nested dicts of YAML/torch-safe primitives (tuples become lists)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        return v

    return plain(config)


def dataclass_from_dict(cls: type, data: dict[str, Any], where: str = "config") -> Any:
    """Build a (nested) config dataclass from a dict; missing keys keep their defaults.

    Args:
        cls: dataclass to build (every field has a default).
        data: mapping as written by :func:`config_to_dict` (or a hand-written YAML file).
        where: name of the source for error messages (a file name).

    Raises:
        GalmocoError: naming unknown keys (with their dotted path) and the valid ones.
    """
    return _build(cls, data, where, "")


def _build(cls: type, data: Any, where: str, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise GalmocoError(f"{where}: {prefix.rstrip('.') or 'top level'} must be a mapping, got {data!r}")
    defaults = cls()
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise GalmocoError(
            f"{where}: unknown key(s) {', '.join(prefix + k for k in unknown)}; "
            f"valid keys{' under ' + prefix.rstrip('.') if prefix else ''} are {', '.join(names)}"
        )
    kwargs = {}
    for key, value in data.items():
        default = getattr(defaults, key)
        if dataclasses.is_dataclass(default):
            value = _build(type(default), value, where, f"{prefix}{key}.")
        else:
            value = _check_type(value, default, where, prefix + key)
        kwargs[key] = value
    return cls(**kwargs)


def _check_type(value: Any, default: Any, where: str, name: str) -> Any:
    """``value`` converted to the kind of ``default`` (lists to tuples, ints to floats), or GalmocoError."""
    if isinstance(value, list):
        value = tuple(value)
    if default is None or value is None:
        return value
    kind = type(default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return value
    raise GalmocoError(f"{where}: {name} must be {kind.__name__}, got {value!r}")
