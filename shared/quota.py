"""Quota windows: specs, calendar arithmetic and the reserve rule. Pure functions, no I/O.

A quota is a list of windows on one (backend account, mode) pair. A request must fit in every window.

Window kinds, as dicts (the wire and storage form) and as compact strings (CLI and config):

=========  ==========================================================  ===============================
kind       dict                                                        compact string
=========  ==========================================================  ===============================
rolling    ``{"kind": "rolling", "seconds": 10800, "limit": 50}``       ``50/3h``, ``10/90m``, ``5/30s``
daily      ``{"kind": "daily", "limit": 20, "reset": "04:00",``         ``20/day``, ``20/day@04:00``,
           `` "tz": "Europe/Berlin"}``                                  ``20/day@04:00 Europe/Berlin``
weekly     ``{"kind": "weekly", "limit": 100, "weekday": "mon",``       ``100/week@mon 09:00 UTC``
           `` "reset": "09:00", "tz": "UTC"}``
=========  ==========================================================  ===============================

Any window may carry ``"reserves": {"explorer": 10, "documenter": 5}`` (compact: a trailing
``reserve explorer=10,documenter=5``). The part of ``limit`` not reserved is a shared buffer. A module
may take a unit only if, afterwards, every *other* module can still use all of its unused reserve::

    used_total + 1 + sum(max(0, reserve[x] - used[x]) for x != module) <= limit

so nobody can eat another module's reserve, and a module past its own reserve draws on the buffer.
"""
from __future__ import annotations

import datetime as dt
import re
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.config import ADHOC
from shared.errors import ErrorCode, ExitCode, FanoError, StartupError

KINDS = ("rolling", "daily", "weekly")
# largest limit or reserve: far above any provider's window, and far inside the u64 counters that store it
MAX_COUNT = 10**9
# longest rolling window (ten years): its start, in ms, must stay a sane u64 index key
MAX_ROLLING_SECONDS = 10 * 366 * 86400.0
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


class QuotaSpecError(FanoError, StartupError):
    """A quota window that cannot be parsed: ``INVALID_QUOTA`` on the wire; in a program's own
    configuration it keeps the program from starting (exit ``CONFIG``)."""

    exit_code = ExitCode.CONFIG

    def __init__(self, message: str):
        super().__init__(ErrorCode.INVALID_QUOTA, message)


def _tz(name: str) -> ZoneInfo:
    if not isinstance(name, str):  # ZoneInfo(None/5) raises TypeError, not a spec error
        raise QuotaSpecError(f"time zone must be a name like Europe/Berlin, got {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise QuotaSpecError(f"unknown time zone {name!r}") from None


def _hhmm(text: str) -> tuple[int, int]:
    m = _HHMM.match(str(text))
    if not m:
        raise QuotaSpecError(f"reset time must be HH:MM, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def _positive_int(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise QuotaSpecError(f"{what} must be a non-negative integer, got {value!r}")
    if value > MAX_COUNT:
        raise QuotaSpecError(f"{what} must be at most {MAX_COUNT:,}, got {value}")
    return value


def normalize_window(spec: Any) -> dict[str, Any]:
    """Validate a window (dict or compact string) and return its canonical dict. Raises QuotaSpecError."""
    if isinstance(spec, str):
        spec = parse_compact(spec)
    if not isinstance(spec, dict):
        raise QuotaSpecError(f"a window must be a map or a string, got {type(spec).__name__}")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise QuotaSpecError(f"window kind must be one of {', '.join(KINDS)}, got {kind!r}")
    allowed = {"kind", "limit", "reserves"} | {"rolling": {"seconds"}, "daily": {"reset", "tz"},
                                                "weekly": {"reset", "tz", "weekday"}}[kind]
    unknown = set(spec) - allowed
    if unknown:  # keys off the wire may be ints or bytes beside strs: sort their printed names
        names = sorted(map(str, unknown))
        raise QuotaSpecError(f"unknown field(s) for a {kind} window: {', '.join(names)}")
    out: dict[str, Any] = {"kind": kind, "limit": _positive_int(spec.get("limit"), "limit")}
    if kind == "rolling":
        seconds = spec.get("seconds")
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or \
                not 0 < seconds <= MAX_ROLLING_SECONDS:
            raise QuotaSpecError(f"rolling window needs 0 < seconds <= {MAX_ROLLING_SECONDS:.0f} (ten years), "
                                 f"got {seconds!r}")
        out["seconds"] = float(seconds)
    else:
        h, m = _hhmm(spec.get("reset", "00:00"))
        out["reset"] = f"{h:02d}:{m:02d}"
        out["tz"] = spec.get("tz", "UTC")
        _tz(out["tz"])
        if kind == "weekly":
            wd = str(spec.get("weekday", "mon")).lower()[:3]
            if wd not in WEEKDAYS:
                raise QuotaSpecError(f"weekday must be one of {', '.join(WEEKDAYS)}, got {spec.get('weekday')!r}")
            out["weekday"] = wd
    reserves = spec.get("reserves") or {}
    if not isinstance(reserves, dict):
        raise QuotaSpecError("reserves must be a map of module -> count")
    clean = {}
    for module, count in reserves.items():
        if not isinstance(module, str) or not module:
            raise QuotaSpecError("reserve module names must be non-empty strings")
        clean[module] = _positive_int(count, f"reserve for {module}")
    if sum(clean.values()) > out["limit"]:
        raise QuotaSpecError(f"reserves ({sum(clean.values())}) exceed the window limit ({out['limit']})")
    if clean:
        out["reserves"] = clean
    return out


def parse_compact(text: str) -> dict[str, Any]:
    """Parse ``LIMIT/PERIOD[@WHEN] [TZ] [reserve a=1,b=2]`` into a window dict (not yet validated)."""
    raw = text.strip()
    reserves = {}
    m = re.search(r"\s+reserves?\s+(\S+)$", raw)
    if m:
        raw = raw[: m.start()]
        for part in m.group(1).split(","):
            name, sep, count = part.partition("=")
            if not sep or not (count.isascii() and count.isdigit()):
                raise QuotaSpecError(f"bad reserve {part!r}: use module=count")
            reserves[name] = int(count)
    parts = raw.split()
    if len(parts) >= 2 and re.search(r"/week@[a-zA-Z]+$", parts[0]) and _HHMM.match(parts[1]):
        parts[:2] = [parts[0] + " " + parts[1]]  # "100/week@mon 09:00 UTC": the time belongs to "@mon"
    if not parts or len(parts) > 2 or "/" not in parts[0]:
        raise QuotaSpecError(f"cannot parse quota window {text!r}; examples: 50/3h, 20/day@04:00 UTC, "
                             "100/week@mon 09:00 Europe/Berlin")
    tz = parts[1] if len(parts) == 2 else "UTC"
    limit_text, _, period = parts[0].partition("/")
    if not (limit_text.isascii() and limit_text.isdigit()):
        raise QuotaSpecError(f"quota limit must be an integer, got {limit_text!r}")
    period, _, when = period.partition("@")
    out: dict[str, Any] = {"limit": int(limit_text)}
    if period == "day":
        out.update(kind="daily", reset=when or "00:00", tz=tz)
    elif period == "week":
        wd, _, hhmm = (when or "mon").partition(" ")
        if ":" in wd:  # "@09:00" without a weekday
            wd, hhmm = "mon", wd
        out.update(kind="weekly", weekday=wd, reset=hhmm or "00:00", tz=tz)
    else:
        m = _DURATION.match(period)
        if not m or when or len(parts) == 2:
            raise QuotaSpecError(f"period must be day, week or a duration like 3h/90m/30s, got {period!r}")
        out.update(kind="rolling", seconds=float(m.group(1)) * _UNIT_SECONDS[m.group(2)])
    if reserves:
        out["reserves"] = reserves
    return out


def normalize_windows(specs: Any) -> list[dict[str, Any]]:
    if isinstance(specs, str):
        specs = [s for s in (p.strip() for p in specs.split(";")) if s]
    if not isinstance(specs, (list, tuple)):
        raise QuotaSpecError("windows must be a list")
    return [normalize_window(s) for s in specs]


def describe(window: dict[str, Any]) -> str:
    """The compact string of a canonical window (round-trips through normalize_window)."""
    lim = window["limit"]
    if window["kind"] == "rolling":
        secs = window["seconds"]
        for unit in ("d", "h", "m"):
            if secs % _UNIT_SECONDS[unit] == 0:
                text = f"{lim}/{int(secs // _UNIT_SECONDS[unit])}{unit}"
                break
        else:
            text = f"{lim}/{secs:g}s"
    elif window["kind"] == "daily":
        text = f"{lim}/day@{window['reset']} {window['tz']}"
    else:
        text = f"{lim}/week@{window['weekday']} {window['reset']} {window['tz']}"
    if window.get("reserves"):
        text += " reserve " + ",".join(f"{k}={v}" for k, v in sorted(window["reserves"].items()))
    return text


# --- calendar arithmetic --------------------------------------------------------------------------------

def _boundary(day: dt.date, hh: int, mm: int, tz: ZoneInfo) -> float:
    # wall-clock reset time on that local date; zoneinfo resolves DST gaps/folds (fold=0: first one)
    return dt.datetime(day.year, day.month, day.day, hh, mm, tzinfo=tz).timestamp()


_PERIODS: dict[tuple[Any, ...], tuple[float, float]] = {}  # calendar slot -> (start, next reset) last computed


def _slot(window: dict[str, Any]) -> tuple[Any, ...]:
    return (window["kind"], window.get("reset"), window.get("tz"), window.get("weekday"))


def period_start(window: dict[str, Any], t: float) -> float:
    """Start of the calendar period containing world time ``t`` (the most recent reset <= t).

    For a rolling window this is ``t - seconds`` (entries strictly after it count).
    """
    if window["kind"] == "rolling":
        return t - float(window["seconds"])
    # the lease path asks this for every request; building zoneinfo datetimes each time is the cost,
    # and the answer only changes at the next reset
    cached = _PERIODS.get(_slot(window))
    if cached is not None and cached[0] <= t < cached[1]:
        return cached[0]
    start = _period_start(window, t)
    _PERIODS[_slot(window)] = (start, _next_after(window, start, t))
    return start


def _period_start(window: dict[str, Any], t: float) -> float:
    tz = _tz(window["tz"])
    hh, mm = _hhmm(window["reset"])
    local = dt.datetime.fromtimestamp(t, tz).date()
    if window["kind"] == "daily":
        step = 1
        day = local
    else:
        step = 7
        day = local - dt.timedelta(days=(local.weekday() - WEEKDAYS.index(window["weekday"])) % 7)
    start = _boundary(day, hh, mm, tz)
    while start > t:
        day -= dt.timedelta(days=step)
        start = _boundary(day, hh, mm, tz)
    return start


def next_reset(window: dict[str, Any], t: float) -> float:
    """The first reset strictly after ``t`` for calendar windows (rolling: ``t + seconds``, an upper bound)."""
    if window["kind"] == "rolling":
        return t + float(window["seconds"])
    start = period_start(window, t)
    cached = _PERIODS.get(_slot(window))
    if cached is not None and cached[0] == start and cached[1] > t:
        return cached[1]
    return _next_after(window, start, t)


def _next_after(window: dict[str, Any], start: float, t: float) -> float:
    tz = _tz(window["tz"])
    hh, mm = _hhmm(window["reset"])
    day = dt.datetime.fromtimestamp(start, tz).date()
    step = 1 if window["kind"] == "daily" else 7
    nxt = _boundary(day + dt.timedelta(days=step), hh, mm, tz)
    while nxt <= t:  # only in pathological DST cases
        day += dt.timedelta(days=step)
        nxt = _boundary(day + dt.timedelta(days=step), hh, mm, tz)
    return nxt


# --- the reserve rule ----------------------------------------------------------------------------------------

def headroom(window: dict[str, Any], used_total: int, used_by: dict[str, int], module: str) -> int:
    """How many more units ``module`` may take in this window now (never negative)."""
    reserves = window.get("reserves") or {}
    others_unused: int = sum(max(0, r - used_by.get(m, 0)) for m, r in reserves.items() if m != module)
    limit: int = window["limit"]
    return max(0, limit - used_total - others_unused)


def admits(window: dict[str, Any], used_total: int, used_by: dict[str, int], module: str) -> bool:
    return headroom(window, used_total, used_by, module) >= 1


def charge_modules(module: str, requires: dict[str, Any] | None) -> tuple[str, ...]:
    """The modules whose share of a window a task may draw on, in order: its own module's, then, for work
    a person waits for (``requires.share = "adhoc"``: an author's comment), the operator's ``adhoc``
    reserve too. The first that admits it is charged (the broker's lease; the scheduler mirrors it)."""
    share = (requires or {}).get("share") if isinstance(requires, dict) else None
    return (module, ADHOC) if share == ADHOC and module != ADHOC else (module,)
