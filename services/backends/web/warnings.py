"""What a web chat's notices mean: classification of banner/reply texts and reset-time parsing (pure).

A limit message is the authoritative source of a reset time (notes §1.3: "the observed limit always wins
over the configured one"), so :func:`parse_reset` understands the forms seen on the real sites::

    in 35 minutes / in 1 hour and 5 minutes / in 2h 30m / in an hour
    until 2:56 PM / after 7:22 AM / at 14:56 / resets at 14:56 / until 4 PM
    until Jan 10, 2:56 PM / until January 10 at 2:56 PM / until 10 Jan 14:56 UTC
    until Monday 9:00 AM / tomorrow at 9 AM / try again tomorrow (= next local midnight)

Clock times are read in the account's time zone (the browser is launched in that zone too), unless the
text names UTC/GMT. A time without a date is its next occurrence. Nothing here reads a clock: ``now`` is
passed in, so tests fix it.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Iterable

from services.backends.web.site import NOTICE_CLASSES


@dataclass(frozen=True)
class Notice:
    kind: str          # one of NOTICE_CLASSES: auth | quota | capacity | transient
    text: str          # the notice as shown (trimmed)
    pattern: str       # the pattern that matched


def classify(texts: Iterable[str], messages: dict) -> Notice | None:
    """The most decisive notice among ``texts`` (auth > quota > capacity > transient), or None.

    ``messages`` maps a class to compiled patterns (a :class:`~.site.SiteSpec`'s ``messages``)."""
    texts = [" ".join(t.split()) for t in texts if t and t.strip()]
    for kind in NOTICE_CLASSES:
        for pattern in messages.get(kind, ()):
            for text in texts:
                if pattern.search(text):
                    return Notice(kind, text[:500], pattern.pattern)
    return None


def matches(text: str, patterns) -> bool:
    return any(p.search(text) for p in patterns)


# --- reset times -----------------------------------------------------------------------------------------

_MONTHS = {m: i + 1 for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep",
                                           "oct", "nov", "dec"))}
_WEEKDAYS = {d: i for i, d in enumerate(("mon", "tue", "wed", "thu", "fri", "sat", "sun"))}
_UNIT = {"h": 3600, "m": 60, "s": 1}

_AMOUNT = r"(\d+|an?|one|a few|a couple of)"
_UNITS = r"(hours?|hrs?|h|minutes?|mins?|m|seconds?|secs?|s)"
_RELATIVE = re.compile(rf"\bin\s+(?:about\s+|around\s+|~)?{_AMOUNT}\s*{_UNITS}\b"
                       rf"(?:,?\s*(?:and\s+)?(\d+)\s*(minutes?|mins?|m|seconds?|secs?|s)\b)?", re.IGNORECASE)
_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?"
_WEEKDAY = r"(?:mon|tue|wed|thu|fri|sat|sun)[a-z]*"
_DATE = (rf"(?:(?P<mon>{_MONTH})\s+(?P<day>\d{{1,2}})(?![\d:])(?:st|nd|rd|th)?(?:,?\s+(?P<year>\d{{4}}))?"
         rf"|(?<!\d)(?P<day2>\d{{1,2}})(?:st|nd|rd|th)?\s+(?P<mon2>{_MONTH})(?:,?\s+(?P<year2>\d{{4}}))?)")
_AMPM = r"(?:[ap]\.\s?m\.|[ap]\s?m)(?![a-z])"      # "PM", "pm", "p.m." (a sentence's full stop is not ours)
# minutes or an am/pm marker are required: a bare number ("40 messages") is not a time
_TIME = rf"(?<![\d:])(?P<h>\d{{1,2}})(?::(?P<min>\d{{2}})(?!\d)\s*(?P<ampm>{_AMPM})?|\s*(?P<ampm2>{_AMPM}))"
_ABSOLUTE = re.compile(
    rf"(?:(?P<tomorrow>tomorrow)|(?P<wd>{_WEEKDAY})|{_DATE})?[\s,]*(?:at\s+)?{_TIME}(?:\s*(?P<tz>UTC|GMT)\b)?",
    re.IGNORECASE)
_TOMORROW = re.compile(r"\btomorrow\b", re.IGNORECASE)
_TOMORROW_AFTER = re.compile(r"[\s,]*tomorrow\b", re.IGNORECASE)      # "until 4 PM tomorrow"


def _amount(word: str) -> int:
    word = word.lower()
    if word.isdigit():
        return int(word)
    return {"a": 1, "an": 1, "one": 1, "a few": 3, "a couple of": 2}[word]


def _relative(text: str) -> float | None:
    m = _RELATIVE.search(text)
    if not m:
        return None
    seconds = _amount(m.group(1)) * _UNIT[m.group(2)[0].lower()]
    if m.group(3):
        seconds += int(m.group(3)) * _UNIT[m.group(4)[0].lower()]
    return float(seconds)


def _clock_matches(text: str):
    """Candidate clock times (hour, minute), in the order they appear."""
    for m in _ABSOLUTE.finditer(text):
        h = int(m.group("h"))
        minute = int(m.group("min") or 0)
        ampm = m.group("ampm") or m.group("ampm2")
        if ampm:
            if not 1 <= h <= 12:
                continue
            h = h % 12 + (12 if ampm.lower().startswith("p") else 0)
        if h > 23 or minute > 59:
            continue
        yield m, h, minute


def parse_reset(text: str, now: float, tz: dt.tzinfo) -> float | None:
    """Seconds from ``now`` (epoch seconds) until the reset a limit message announces, or None if it
    names none. Never negative (a reset already past is 0)."""
    relative = _relative(text)
    if relative is not None:
        return relative
    here = dt.datetime.fromtimestamp(now, tz)
    for m, h, minute in _clock_matches(text):
        zone = dt.timezone.utc if m.group("tz") else tz
        local_now = here.astimezone(zone)
        day = local_now.date()
        explicit = False
        if m.group("tomorrow") or _TOMORROW_AFTER.match(text, m.end()):
            day = day + dt.timedelta(days=1)
            explicit = True
        elif m.group("wd"):
            target = _WEEKDAYS[m.group("wd")[:3].lower()]
            day = day + dt.timedelta(days=(target - day.weekday()) % 7)
        elif m.group("mon") or m.group("mon2"):
            month = _MONTHS[(m.group("mon") or m.group("mon2"))[:3].lower()]
            dom = int(m.group("day") or m.group("day2"))
            year = m.group("year") or m.group("year2")
            try:
                day = dt.date(int(year) if year else day.year, month, dom)
            except ValueError:
                continue
            if not year and day < local_now.date() - dt.timedelta(days=2):
                day = day.replace(year=day.year + 1)   # "until Jan 2" said on Dec 30
            explicit = True
        when = _at(day, h, minute, zone)
        if not explicit and when <= local_now:
            when = _at(day + dt.timedelta(days=7 if m.group("wd") else 1), h, minute, zone)
        return max(0.0, when.timestamp() - now)
    if _TOMORROW.search(text):
        midnight = _at(here.date() + dt.timedelta(days=1), 0, 0, tz)
        return max(0.0, midnight.timestamp() - now)
    return None


def _at(day: dt.date, h: int, minute: int, zone: dt.tzinfo) -> dt.datetime:
    """Wall-clock time in ``zone``; a time skipped by a DST jump resolves forward (zoneinfo's fold=0)."""
    return dt.datetime(day.year, day.month, day.day, h, minute, tzinfo=zone)
