"""A simulated account's latency setting: one spec per mode, read the same way by the sim provider (which
draws from it) and the scheduler (which takes its mean as the first guess of a service time).

A spec is ``{dist = "lognormal", median, sigma}``, ``{dist = "uniform", low, high}``,
``{dist = "fixed", value}``, ``"zero"`` or a plain number of seconds (fixed); the setting is one spec
for every mode or a table of mode = spec (the modes it does not name keep :data:`DEFAULT_LATENCY`).
"""

from __future__ import annotations

import math
from typing import Any

from shared.config import MODES
from shared.settings import Invalid, number

DEFAULT_LATENCY: dict[str, dict[str, Any]] = {
    "standard": {"dist": "lognormal", "median": 2.0, "sigma": 0.5},
    "deep": {"dist": "lognormal", "median": 60.0, "sigma": 0.5}}
_DIST_FIELDS = {"lognormal": {"median", "sigma"}, "uniform": {"low", "high"}, "fixed": {"value"}, "zero": set()}


def parse_spec(spec: Any, where: str) -> dict[str, Any]:
    """One spec in its normal form (a table with ``dist`` and exactly its fields), else :class:`Invalid`."""
    if spec == "zero":
        spec = {"dist": "zero"}
    elif isinstance(spec, (int, float)) and not isinstance(spec, bool):
        spec = {"dist": "fixed", "value": spec}
    if not isinstance(spec, dict) or spec.get("dist") not in _DIST_FIELDS:
        raise Invalid(f"expected a table with dist = one of {', '.join(_DIST_FIELDS)} (or a number of seconds, "
                      f"or \"zero\"), got {spec!r}", key=where)
    fields = _DIST_FIELDS[spec["dist"]]
    if set(spec) - {"dist"} != fields:
        raise Invalid(f"expected dist {spec['dist']!r} with exactly {', '.join(sorted(fields)) or 'no other fields'}"
                      f", got {', '.join(sorted(set(spec) - {'dist'})) or 'none'}", key=where)
    out = {"dist": spec["dist"], **{k: number(spec[k], f"{where}.{k}", hi=1e7) for k in fields}}
    if out["dist"] == "lognormal" and out["median"] <= 0:
        raise Invalid(f"expected a median > 0, got {out['median']:g}", key=f"{where}.median")
    if out["dist"] == "uniform" and out["low"] > out["high"]:
        raise Invalid(f"expected low <= high (low must be at most high), got {out['low']:g} > {out['high']:g}",
                      key=where)
    return out


def named_modes(value: Any) -> tuple[str, ...]:
    """The modes the setting itself gives a spec for (a per-mode table names some; one spec names all)."""
    return tuple(value) if isinstance(value, dict) and "dist" not in value else MODES


def parse(value: Any) -> dict[str, dict[str, Any]]:
    """mode -> spec: a table per mode (the modes not given keep DEFAULT_LATENCY), or one spec for all."""
    if isinstance(value, dict) and "dist" not in value:
        out = dict(DEFAULT_LATENCY)
        for mode, spec in value.items():
            if mode not in MODES:
                raise Invalid(f"expected a mode ({', '.join(MODES)}), got {mode!r}", key=f"latency.{mode}")
            out[mode] = parse_spec(spec, f"latency.{mode}")
        return out
    one = parse_spec(value, "latency")
    return {m: one for m in MODES}


def mean(spec: dict[str, Any]) -> float:
    """The mean of a spec in normal form (world seconds)."""
    if spec["dist"] == "lognormal":
        return float(spec["median"] * math.exp(spec["sigma"] ** 2 / 2))
    if spec["dist"] == "uniform":
        return float((spec["low"] + spec["high"]) / 2)
    return float(spec.get("value", 0.0))


def slowest(spec: dict[str, Any]) -> float:
    """A latency the distribution (almost) never exceeds: its top for bounded ones, the 3-sigma point
    (99.87th percentile) of a lognormal."""
    if spec["dist"] == "lognormal":
        return float(spec["median"] * math.exp(3.0 * spec["sigma"]))
    if spec["dist"] == "uniform":
        return float(spec["high"])
    return float(spec.get("value", 0.0))
