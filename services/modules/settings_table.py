"""Validating a module's ``[modules.NAME]`` table into its settings dataclass: one way for every module.

``shared.config`` keeps each module's table raw; each module declares a frozen dataclass whose defaults
document the keys, and validates its own table with :func:`coerce_table` (each value checked against the
type of its default) plus whatever ranges it needs on top. Unknown keys are errors, as everywhere in the
configuration: a typo in ``enabled`` must not silently mean "off".
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any

from shared.config import ConfigError, parse_size


def check_known(cls, table: dict, where: str) -> None:
    """ConfigError naming the unknown keys of ``table`` (and the known ones)."""
    known = {f.name for f in fields(cls)}
    unknown = set(table or {}) - known
    if unknown:
        raise ConfigError(f"{where}: unknown key(s): {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})")


def coerce_table(cls, table: dict, where: str, sizes: frozenset = frozenset()):
    """``cls(**table)`` with every value checked against its default's type: bool, non-negative number,
    string, list of strings (a tuple), table of domain = 0-100 score (a dict); keys in ``sizes`` take a
    size ("512MiB")."""
    check_known(cls, table, where)
    defaults = cls()
    kw: dict[str, Any] = {}
    for name, value in (table or {}).items():
        want = getattr(defaults, name)
        at = f"{where}.{name}"
        if name in sizes:
            kw[name] = parse_size(value)
        elif isinstance(want, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{at} must be true or false")
            kw[name] = value
        elif isinstance(want, (int, float)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"{at} must be a non-negative number")
            kw[name] = type(want)(value)
        elif isinstance(want, str):
            if not isinstance(value, str):
                raise ConfigError(f"{at} must be a string")
            kw[name] = value
        elif isinstance(want, tuple):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{at} must be a list of strings")
            kw[name] = tuple(value)
        elif isinstance(want, dict):
            if not isinstance(value, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                      and 0 <= v <= 100 for v in value.values()):
                raise ConfigError(f"{at} must be a table of domain = score (0-100)")
            kw[name] = dict(value)
        else:
            raise ConfigError(f"{at}: cannot be set here")
    return cls(**kw)
