"""The one settings validator: a table of ``fano.toml`` (``[paths]``, ``[broker]``, ``[scheduler]``,
``[modules.NAME]``, ``[accounts.NAME]``) into a frozen settings object, every key declared once.

A settings class is a ``@dataclass(frozen=True)`` whose fields are declared with :func:`setting`: the
default, a doc line, and what a value may be (its kind, range or choices, or a ``parse`` function for a
shape of its own). :func:`load` checks a table against it and builds the object; the docs' settings
tables come from the same declarations (:func:`describe`; ``ops/settings_doc.py`` writes
``docs/configuration.md``), so the reference says what the declaration says.

``shared/config.py`` declares its own tables' keys (``[paths]``, ``[broker]``, ``[scheduler]``, an
account's ``backend`` and ``modes``) as field metadata with the same rules (this module imports it, so it
cannot import this one at class definition); :func:`specs` reads both.

Every problem is a :class:`SettingsError` (a ``ConfigError``: a program exits with the configuration exit
code, ``ops/config_check.py`` lists it) in one format, naming the table, the key, what was expected and
what was given::

    fano.toml: [modules.explorer] max_threads: expected an integer ≥ 0, got 'x'
    [accounts.claude-main] thinking: expected one of "enabled", "adaptive", got 'on'
    [modules.documenter]: unknown key(s) evaluator (known: backlog_boosts, ..., section_stale_days)

Unknown keys are errors, as everywhere in the configuration: a typo in ``enabled`` must not silently mean
"off". Checks that involve several keys are a ``check(self)`` method of the class that raises
:class:`Invalid` naming the key; a ``parse`` function raises :class:`Invalid` (or ``ValueError``) with
the "expected ..." text, and the loader adds the table and the key.

Kinds (``kind=``; by default the kind of the default value, except for a key with a ``parse`` function,
which is checked for a kind only when one is given): ``bool``, ``int`` (an integer: a float is
refused, not truncated), ``float`` (any finite number, stored as a float), ``str``, ``strings`` (a list
of strings, stored as a tuple), ``size`` (bytes: ``2097152`` or ``"2MiB"``), ``table`` (a TOML table,
stored as a dict; give ``parse`` to check its entries). ``choices`` restricts any kind to a set of values.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from shared.config import SETTING as _META
from shared.config import ConfigError, format_size, parse_size

KINDS = ("bool", "int", "float", "str", "strings", "size", "table")
T = TypeVar("T")


class SettingsError(ConfigError):
    """A settings table that cannot be used. ``where`` is the table (``[modules.explorer]``, with the
    file in front when known), ``key`` the offending key (None: the table itself)."""

    def __init__(self, where: str, key: str | None, problem: str) -> None:
        self.where, self.key, self.problem = where, key, problem
        super().__init__(f"{where} {key}: {problem}" if key else f"{where}: {problem}")


class Invalid(ValueError):
    """Raised by a ``parse`` function (the problem, e.g. ``expected a table {low, high}, got 3``) or by a
    class's ``check`` (with ``key``): :func:`load` turns it into a :class:`SettingsError`."""

    def __init__(self, problem: str, key: str | None = None) -> None:
        super().__init__(problem)
        self.problem, self.key = problem, key


def number(value: Any, where: str, lo: float = 0.0, hi: float = math.inf) -> float:
    """For ``parse`` functions: ``value`` as a float in [lo, hi], else :class:`Invalid` naming ``where`` (a key
    inside the setting's own value, e.g. ``latency.deep.median``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise Invalid(f"expected a number in [{lo:g}, {hi:g}], got {value!r}", key=where)
    return float(value)


@dataclasses.dataclass(frozen=True)
class Spec:
    """What one key may be (see :func:`setting`)."""

    doc: str
    kind: str | None = None
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False          # lo itself is refused (> lo)
    hi_open: bool = False
    choices: tuple[Any, ...] | None = None
    nonempty: bool = False         # str: not blank; strings: no blank item
    min_items: int = 0             # strings: at least this many items
    nested: type | None = None     # table: a settings class of its own (``[modules.researcher.fetch]``)
    parse: Callable[[Any], Any] | None = None
    expected: str | None = None    # the "expected ..." text of a parse-checked key, for errors and docs
    required: bool = False
    shown: str | None = None       # the docs' default column, when the default comes from elsewhere


def setting(default: Any = dataclasses.MISSING, doc: str = "", *, kind: str | None = None,
            lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False,
            choices: Iterable[Any] | None = None, nonempty: bool = False, min_items: int = 0,
            nested: type | None = None, parse: Callable[[Any], Any] | None = None, expected: str | None = None,
            required: bool = False, shown: str | None = None) -> Any:
    """A dataclass field that is a settings key. A mutable default (dict, list) is copied per object;
    ``required`` keys have no default (give one to :func:`load` through ``defaults`` when it depends on
    something else, e.g. a site file; ``shown`` then says where it comes from in the docs). For
    ``strings``, ``choices`` applies to each item. ``nested``: the key is a sub-table validated as that
    settings class (its default is that class's defaults)."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown setting kind {kind!r} (known: {', '.join(KINDS)})")
    if required and kind is None and parse is None:
        raise ValueError("a required setting needs its kind (there is no default to infer it from)")
    if nested is not None:
        kind, default = "table", dataclasses.MISSING
    spec = Spec(doc, kind, lo, hi, lo_open, hi_open, tuple(choices) if choices is not None else None, nonempty,
                min_items, nested, parse, expected, required, shown)
    meta = {_META: spec}
    if nested is not None:
        return dataclasses.field(default_factory=nested, metadata=meta)
    if required:
        return dataclasses.field(default=None, metadata=meta)
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def specs(cls: type) -> dict[str, tuple[Spec, Any]]:
    """``{key: (Spec, default)}`` of a settings class, in declaration order."""
    out = {}
    for f in dataclasses.fields(cls):
        spec = f.metadata.get(_META)
        if spec is None:
            continue
        if isinstance(spec, dict):   # declared as metadata (shared/config.py's sections: see its _key)
            spec = Spec(**spec)
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        out[f.name] = (spec, default)
    return out


def _kind(spec: Spec, default: Any) -> str | None:
    if spec.kind:
        return spec.kind
    if spec.parse:
        return None
    for kind, types in (("bool", bool), ("int", int), ("float", float), ("str", str), ("strings", tuple),
                        ("strings", list), ("table", dict)):
        if isinstance(default, types):
            return kind
    return None


def _num(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _range(spec: Spec, show: Callable[[Any], str] = _num) -> str:
    lo, hi = spec.lo, spec.hi
    if lo is not None and hi is not None:
        return f" in {'(' if spec.lo_open else '['}{show(lo)}, {show(hi)}{')' if spec.hi_open else ']'}"
    if lo is not None:
        return f" {'>' if spec.lo_open else '≥'} {show(lo)}"
    if hi is not None:
        return f" {'<' if spec.hi_open else '≤'} {show(hi)}"
    return ""


def expected(spec: Spec, default: Any = None) -> str:
    """What a key takes, in words ("an integer ≥ 1", "one of "low", "high""): errors and docs say the same."""
    if spec.expected:
        return spec.expected
    kind = _kind(spec, default)
    choices = None if spec.choices is None else \
        ", ".join(f'"{c}"' if isinstance(c, str) else _num(c) for c in spec.choices)
    if kind == "strings":
        items = f"of {choices}" if choices else "of non-empty strings" if spec.nonempty else "of strings"
        many = {0: "a list", 1: "a non-empty list"}.get(spec.min_items, f"a list of at least {spec.min_items}")
        return f"{many} {items}" if spec.min_items < 2 else f"{many} {items[3:]}"
    if choices is not None:
        return "one of " + choices
    if spec.nested is not None:
        return "a table"
    text = {"bool": "true or false", "int": "an integer", "float": "a number", "size": "a size (e.g. 2MiB)",
            "str": "a non-empty string" if spec.nonempty else "a string",
            "table": "a table", None: "a value"}[kind]
    if kind == "size":
        return text + _range(spec, format_size)
    return text + (_range(spec) if kind in ("int", "float") else "")


def _in_range(spec: Spec, x: float) -> bool:
    if spec.lo is not None and (x <= spec.lo if spec.lo_open else x < spec.lo):
        return False
    return not (spec.hi is not None and (x >= spec.hi if spec.hi_open else x > spec.hi))


def _value(spec: Spec, default: Any, value: Any) -> Any:
    """The stored value of ``value``, or Invalid with the "expected ..." text."""
    kind = _kind(spec, default)
    want = f"expected {expected(spec, default)}, got {value!r}"
    if spec.choices is not None and kind is None:
        if value not in spec.choices or isinstance(value, bool) != any(isinstance(c, bool) for c in spec.choices):
            raise Invalid(want)
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise Invalid(want)
    elif kind in ("int", "float"):
        ok = isinstance(value, int) if kind == "int" else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok or not math.isfinite(value) or not _in_range(spec, value):
            raise Invalid(want)
        value = float(value) if kind == "float" else value
    elif kind == "size":
        try:
            value = parse_size(value) if not isinstance(value, (bool, float)) else None
        except ConfigError:
            value = None
        if value is None or not _in_range(spec, value):
            raise Invalid(want)
    elif kind == "str":
        if not isinstance(value, str) or (spec.nonempty and not value.strip()):
            raise Invalid(want)
    elif kind == "strings":
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value) \
                or (spec.nonempty and not all(v.strip() for v in value)) or len(value) < spec.min_items \
                or (spec.choices is not None and not set(value) <= set(spec.choices)):
            raise Invalid(want)
        return _parsed(spec, tuple(value))
    elif kind == "table":
        if not isinstance(value, dict):
            raise Invalid(want)
        value = dict(value)
    if spec.choices is not None and value not in spec.choices:
        raise Invalid(want)
    return _parsed(spec, value)


def _parsed(spec: Spec, value: Any) -> Any:
    if spec.parse is not None:
        try:
            value = spec.parse(value)
        except Invalid:
            raise
        except (ValueError, TypeError) as exc:
            raise Invalid(str(exc)) from None
    return value


def load(cls: type[T], table: Any, where: str, defaults: dict[str, Any] | None = None) -> T:
    """``table`` checked against ``cls``'s declared keys: a frozen ``cls`` object. ``defaults`` overrides
    declared defaults that depend on context (not checked: they are the program's own). Raises
    :class:`SettingsError`."""
    if table is None:
        table = {}
    if not isinstance(table, dict):
        raise SettingsError(where, None, f"expected a table, got {table!r}")
    declared = specs(cls)
    unknown = sorted(map(str, set(table) - set(declared)))
    if unknown:
        raise SettingsError(where, None, f"unknown key(s) {', '.join(unknown)} "
                                         f"(known: {', '.join(sorted(declared))})")
    kw = dict(defaults or {})
    for key, (spec, default) in declared.items():
        if key in table:
            try:
                kw[key] = _value(spec, default, table[key])
                if spec.nested is not None:
                    kw[key] = load(spec.nested, kw[key], _sub(where, key))
            except Invalid as exc:
                raise SettingsError(where, exc.key or key, exc.problem) from None
        elif spec.required and kw.get(key) is None:
            raise SettingsError(where, key, f"required: expected {expected(spec, default)}")
    obj = cls(**kw)
    check = getattr(obj, "check", None)
    if check is not None:
        try:
            check()
        except Invalid as exc:
            raise SettingsError(where, exc.key, exc.problem) from None
    return obj


def _sub(where: str, key: str) -> str:
    """The name of a sub-table: ``[modules.researcher]`` + ``fetch`` -> ``[modules.researcher.fetch]``."""
    return f"{where[:-1]}.{key}]" if where.endswith("]") else f"{where}.{key}"


def describe(cls: type, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """``(key, expected, default, doc)`` for every declared key (a nested table's keys as
    ``table.key``): the rows of the docs' settings tables."""
    rows = []
    for key, (spec, default) in specs(cls).items():
        if spec.nested is not None:
            rows += describe(spec.nested, f"{prefix}{key}.")
            continue
        shown = spec.shown or ("required" if spec.required else
                               format_size(default) if _kind(spec, default) == "size" else _show(default))
        rows.append((prefix + key, expected(spec, default), shown, spec.doc))
    return rows


def _show(value: Any) -> str:
    """A default as it would be written in fano.toml."""
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_show(v)}" for k, v in value.items()) + "}"
    return _num(value)


def module_settings(cls: type[T], config: Any, module: str) -> T:
    """A research module's ``[modules.NAME]`` table of ``config`` (``Config.modules``; the defaults when
    there is none) as ``cls``: every module's ``load_settings``. Errors name the file when it is known."""
    table = (getattr(config, "modules", None) or {}).get(module) or {}
    path = getattr(config, "path", None)
    return load(cls, dict(table), f"{path}: [modules.{module}]" if path else f"[modules.{module}]")
