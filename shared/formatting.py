"""How times, durations, sizes and JSON are worded for people: one wording for ``fanoctl`` (cli/render.py)
and the web panel (services/web/templating.py).

Pure functions of their arguments (``now`` is passed in), standard library only.
"""
from __future__ import annotations

import base64
import datetime as dt
import json

from shared.config import format_size


def to_json(obj: object) -> str:
    """Indented JSON with sorted keys; bytes (rare: binary values a worker stored) become text."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=json_default)


def json_default(obj: object) -> object:
    if isinstance(obj, (bytes, bytearray, memoryview)):
        raw = bytes(obj)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(raw).decode("ascii")
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return repr(obj)


def duration(seconds: float | str | None) -> str:
    """``45s``, ``12m05s``, ``3h12m``, ``2d04h``; the two most significant units."""
    if seconds is None:
        return "-"
    s = int(abs(float(seconds)))  # truncated: "in 59m59s" until the hour has really passed
    sign = "-" if float(seconds) < 0 and s else ""
    if s < 60:
        return f"{sign}{s}s"
    if s < 3600:
        return f"{sign}{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{sign}{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{sign}{s // 86400}d{(s % 86400) // 3600:02d}h"


def relative(ts: float | None, now: float) -> str:
    """``in 3h12m`` or ``5m02s ago`` for a world time ``ts``."""
    if ts is None:
        return "-"
    delta = float(ts) - now
    return f"in {duration(delta)}" if delta >= 0 else f"{duration(delta).lstrip('-')} ago"


def local_time(ts: float | None, with_date: bool = True) -> str:
    """A world time (epoch seconds) as local wall-clock time with the zone abbreviation."""
    if ts is None:
        return "-"
    when = dt.datetime.fromtimestamp(float(ts)).astimezone()
    return when.strftime("%Y-%m-%d %H:%M:%S %Z" if with_date else "%H:%M:%S %Z")


def when(ts: float | None, now: float) -> str:
    """``2024-05-01 14:03:00 CEST (in 3h12m)``."""
    if ts is None:
        return "-"
    return f"{local_time(ts)} ({relative(ts, now)})"


def size(n: int | None) -> str:
    """Bytes as ``512.0 MiB``; ``-`` when unknown."""
    return "-" if n is None else format_size(n)


def truncate(text: object, width: int) -> str:
    text = "" if text is None else str(text)
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"
