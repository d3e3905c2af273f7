"""What a web chat's notices mean: classification of notice texts and reset-time parsing (pure).

Notices are read where the site shows them: banners, toasts and dialogs, the assistant turn's error
container (:func:`classify`, any of the site's patterns may match anywhere in them). A model's own reply
is *not* a notice: a short genuine answer that mentions "quota" or "an error occurred" must stay an answer.
Only where a site really renders a refusal as the reply itself (Gemini: "You've reached your limit for
chats with Deep Think until ...") is the reply matched, by :func:`classify_reply`, against the site's
``[reply_notices]``: whole distinctive phrases anchored at the reply's start, never a single word.

A limit message is the authoritative source of a reset time (docs/providers.md § Notices and limits: what
the site says beats the configured window), so :func:`parse_reset` understands the forms seen on the real
sites. A phrase that names the reset is preferred to any other time in the text, because limit messages
also describe their window: in "You've reached the limit of 40 messages in 3 hours. Try again after
2:56 PM" the reset is 2:56 PM, not "in 3 hours". Reset phrases (the first one in the text wins)::

    after / until / till / at / by <clock>   try again after 7:22 AM, until 4 PM, resets at 14:56
    <date or weekday> [at] <clock>           until Jan 10, 2:56 PM / on March 12 at 9:00 AM / until
                                             10 Jan 14:56 UTC / Monday 9:00 AM / tomorrow at 9 AM /
                                             after 9:00 AM on March 12
    on / until / after / by <date|weekday>   on Mar 12 (no time: that day's start, 00:00)
    (try) again / resets / available in      try again in 35 minutes / resets in 2h 30m / again in an
    <duration>, wait <duration>              hour / in 1 hour and 5 minutes
    tomorrow                                 try again tomorrow (= next local midnight)

Only when no reset phrase is present does a bare time count: a clock time alone, or "in <duration>"
unless it describes the window ("40 messages in 3 hours", "per 3 hours"): then there is no reset time and
the caller's default applies.

Clock times and dates are read in the account's time zone (the browser is launched in that zone too),
unless the text names UTC/GMT. A time without a date is its next occurrence; a weekday is its next
occurrence (a week ahead when it is today and the time has passed). Nothing here reads a clock: ``now`` is
passed in, so tests fix it.
"""
from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass

from services.backends.web.site import NOTICE_CLASSES


@dataclass(frozen=True)
class Notice:
    kind: str          # one of NOTICE_CLASSES: auth | quota | capacity | transient
    text: str          # the notice as shown (trimmed)
    pattern: str       # the pattern that matched


def _folded(texts: Iterable[str]) -> list[str]:
    return [" ".join(t.split()) for t in texts if t and t.strip()]


def classify(texts: Iterable[str], messages: dict) -> Notice | None:
    """The most decisive notice among ``texts`` (auth > quota > capacity > transient), or None.

    ``texts`` are what notice elements show (banners, an error container), never a model's reply: see
    :func:`classify_reply`. ``messages`` maps a class to compiled patterns (a
    :class:`~.site.SiteSpec`'s ``messages``)."""
    texts = _folded(texts)
    for kind in NOTICE_CLASSES:
        for pattern in messages.get(kind, ()):
            for text in texts:
                if pattern.search(text):
                    return Notice(kind, text[:500], pattern.pattern)
    return None


def classify_reply(text: str, reply_notices: dict) -> Notice | None:
    """The notice a site renders *as* the reply (``reply_notices``: class -> patterns of whole phrases),
    matched at the start of the reply only, or None: a genuine answer is never a notice because it
    contains a notice's word."""
    folded = " ".join(text.split())
    if not folded:
        return None
    for kind in NOTICE_CLASSES:
        for pattern in reply_notices.get(kind, ()):
            if pattern.match(folded):
                return Notice(kind, folded[:500], pattern.pattern)
    return None


# the site says the failed turn was not counted against the account's limit ("This didn't count against your
# Fast limit"): its quota unit is refunded whatever the notice's class
_NOT_COUNTED = re.compile(r"\b(?:didn['’]t|did not|doesn['’]t|does not|won['’]t|will not)\s+count\b|"
                          r"\b(?:was|were|is|has been) not (?:been )?counted\b|\bwasn['’]t counted\b", re.IGNORECASE)


def says_not_counted(text: str) -> bool:
    """Whether a notice says the turn did not count against a limit."""
    return bool(_NOT_COUNTED.search(" ".join(text.split())))


def matches(text: str, patterns) -> bool:
    return any(p.search(text) for p in patterns)


# --- reset times -----------------------------------------------------------------------------------------

_MONTHS = {m: i + 1 for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep",
                                           "oct", "nov", "dec"))}
_WEEKDAYS = {d: i for i, d in enumerate(("mon", "tue", "wed", "thu", "fri", "sat", "sun"))}
_UNIT = {"h": 3600, "m": 60, "s": 1}

_AMOUNT = r"(?P<n>\d+|an?|one|a few|a couple of)"
_UNITS = r"(?P<unit>hours?|hrs?|h|minutes?|mins?|m|seconds?|secs?|s)"
_DURATION = (rf"(?:about\s+|around\s+|~)?{_AMOUNT}\s*{_UNITS}\b"
             rf"(?:,?\s*(?:and\s+)?(?P<n2>\d+)\s*(?P<unit2>minutes?|mins?|m|seconds?|secs?|s)\b)?")
# a duration that names when the limit lifts ("try again in", "resets in", "available again in", "wait")
_RESET_IN = re.compile(rf"\b(?:(?:again|resets?|refresh(?:es)?|renews?|available|unlocks?)\s+(?:in|after)|"
                       rf"wait(?:\s+for)?)\s+{_DURATION}", re.IGNORECASE)
_BARE_IN = re.compile(rf"\bin\s+{_DURATION}", re.IGNORECASE)
# "40 messages in 3 hours", "per 3 hours": the window of the limit, not its reset
_WINDOW_BEFORE = re.compile(r"\b(?:messages?|requests?|prompts?|chats?|queries|questions|uses|replies|"
                            r"responses|turns|tokens|per|every|each|within|last|past)\s*$", re.IGNORECASE)
# whole names or their usual abbreviations only: "Saturn" is no Saturday, "junk" no June
_MONTH = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?"
          r"|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?(?![a-z])")
_WEEKDAY = r"(?:mon|tues?|wed(?:nes)?|thu(?:rs?)?|fri|sat(?:ur)?|sun)(?:day)?\.?(?![a-z])"
_DATE = (rf"(?:(?P<mon>{_MONTH})\s+(?P<day>\d{{1,2}})(?![\d:])(?:st|nd|rd|th)?(?:,?\s+(?P<year>\d{{4}}))?"
         rf"|(?<!\d)(?P<day2>\d{{1,2}})(?:st|nd|rd|th)?\s+(?P<mon2>{_MONTH})(?:,?\s+(?P<year2>\d{{4}}))?)")
_AMPM = r"(?:[ap]\.\s?m\.|[ap]\s?m)(?![a-z])"      # "PM", "pm", "p.m." (a sentence's full stop is not ours)
# minutes or an am/pm marker are required: a bare number ("40 messages") is not a time
_TIME = rf"(?<![\d:])(?P<h>\d{{1,2}})(?::(?P<min>\d{{2}})(?!\d)\s*(?P<ampm>{_AMPM})?|\s*(?P<ampm2>{_AMPM}))"
_ABSOLUTE = re.compile(
    rf"(?:(?P<tomorrow>\btomorrow)|\b(?P<wd>{_WEEKDAY})|\b{_DATE})?[\s,]*(?:at\s+)?{_TIME}"
    rf"(?:\s*(?P<tz>UTC|GMT)\b)?", re.IGNORECASE)
# a date with no time after it: that day's start
_DAY_ONLY = re.compile(
    rf"\b(?:on|until|till|after|by)\s+(?:(?P<wd>{_WEEKDAY})|{_DATE})(?![\s,]*(?:at\s+)?\d{{1,2}}(?:[:\d]|\s*[ap]))",
    re.IGNORECASE)
# "after 9:00 AM on March 12": a date may follow the time as well
_DATE_AFTER = re.compile(rf"[\s,]*(?:on\s+)?(?:(?P<wd>{_WEEKDAY})|{_DATE})", re.IGNORECASE)
_KEYWORD_BEFORE = re.compile(r"\b(?:after|until|till|til|at|by|on)[\s,]*$", re.IGNORECASE)
_TOMORROW = re.compile(r"\btomorrow\b", re.IGNORECASE)
_TOMORROW_AFTER = re.compile(r"[\s,]*tomorrow\b", re.IGNORECASE)      # "until 4 PM tomorrow"


def _amount(word: str) -> int:
    word = word.lower()
    if word.isdigit():
        return int(word)
    return {"a": 1, "an": 1, "one": 1, "a few": 3, "a couple of": 2}[word]


def _seconds(m: re.Match) -> float:
    seconds = _amount(m.group("n")) * _UNIT[m.group("unit")[0].lower()]
    if m.group("n2"):
        seconds += int(m.group("n2")) * _UNIT[m.group("unit2")[0].lower()]
    return float(seconds)


def _clock(m: re.Match) -> tuple[int, int] | None:
    """(hour, minute) on a 24-hour clock of an :data:`_ABSOLUTE` match, None if it is no valid time."""
    h = int(m.group("h"))
    minute = int(m.group("min") or 0)
    ampm = m.group("ampm") or m.group("ampm2")
    if ampm:
        if not 1 <= h <= 12:
            return None
        h = h % 12 + (12 if ampm.lower().startswith("p") else 0)
    if h > 23 or minute > 59:
        return None
    return h, minute


def _date_of(m: re.Match, today: dt.date) -> dt.date | None:
    """The calendar date a match names with month and day (None if invalid). Without a year, a date more
    than two days back means next year ("until Jan 2" said on Dec 30)."""
    month = _MONTHS[(m.group("mon") or m.group("mon2"))[:3].lower()]
    dom = int(m.group("day") or m.group("day2"))
    year = m.group("year") or m.group("year2")
    try:
        day = dt.date(int(year) if year else today.year, month, dom)
    except ValueError:
        return None
    if not year and day < today - dt.timedelta(days=2):
        day = day.replace(year=day.year + 1)
    return day


def _weekday(name: str, today: dt.date, allow_today: bool) -> dt.date:
    ahead = (_WEEKDAYS[name[:3].lower()] - today.weekday()) % 7
    return today + dt.timedelta(days=ahead or (0 if allow_today else 7))


def _clock_reset(m: re.Match, text: str, now: float, tz: dt.tzinfo) -> float | None:
    """Seconds until the clock time of an :data:`_ABSOLUTE` match, on the date named before or after it."""
    hm = _clock(m)
    if hm is None:
        return None
    h, minute = hm
    zone = dt.UTC if m.group("tz") else tz
    local_now = dt.datetime.fromtimestamp(now, zone)
    day = local_now.date()
    dated = m if (m.group("wd") or m.group("mon") or m.group("mon2")) else _DATE_AFTER.match(text, m.end())
    explicit = False
    if m.group("tomorrow") or _TOMORROW_AFTER.match(text, m.end()):
        day = day + dt.timedelta(days=1)
        explicit = True
    elif dated and dated.group("wd"):
        day = _weekday(dated.group("wd"), day, allow_today=True)
    elif dated:
        named = _date_of(dated, day)
        if named is None:
            return None
        day, explicit = named, True
    when = _at(day, h, minute, zone)
    if not explicit and when <= local_now:
        when = _at(day + dt.timedelta(days=7 if dated else 1), h, minute, zone)
    return max(0.0, when.timestamp() - now)


def _day_reset(m: re.Match, now: float, tz: dt.tzinfo) -> float | None:
    """Seconds until the start of the date or weekday of a :data:`_DAY_ONLY` match."""
    today = dt.datetime.fromtimestamp(now, tz).date()
    day = _weekday(m.group("wd"), today, allow_today=False) if m.group("wd") else _date_of(m, today)
    if day is None:
        return None
    return max(0.0, _at(day, 0, 0, tz).timestamp() - now)


def _midnight(now: float, tz: dt.tzinfo) -> float:
    tomorrow = dt.datetime.fromtimestamp(now, tz).date() + dt.timedelta(days=1)
    return max(0.0, _at(tomorrow, 0, 0, tz).timestamp() - now)


def _candidates(text: str, now: float, tz: dt.tzinfo):
    """Every time the text names, as (explicit, position, seconds): ``explicit`` when a reset phrase
    introduces it."""
    for m in _RESET_IN.finditer(text):
        yield True, m.start(), _seconds(m)
    for m in _BARE_IN.finditer(text):
        if not _WINDOW_BEFORE.search(text, 0, m.start()):
            yield False, m.start(), _seconds(m)
    for m in _ABSOLUTE.finditer(text):
        seconds = _clock_reset(m, text, now, tz)
        if seconds is None:
            continue
        dated = bool(m.group("tomorrow") or m.group("wd") or m.group("mon") or m.group("mon2"))
        introduced = _KEYWORD_BEFORE.search(text, 0, m.start("h")) or _KEYWORD_BEFORE.search(text, 0, m.start())
        yield bool(dated or introduced), m.start(), seconds
    for m in _DAY_ONLY.finditer(text):
        seconds = _day_reset(m, now, tz)
        if seconds is not None:
            yield True, m.start(), seconds
    for m in _TOMORROW.finditer(text):
        yield True, m.start() + 0.5, _midnight(now, tz)   # "tomorrow at 9 AM" at the same spot wins


def parse_reset(text: str, now: float, tz: dt.tzinfo) -> float | None:
    """Seconds from ``now`` (epoch seconds) until the reset a limit message announces, or None if it
    names none. Never negative (a reset already past is 0). The first time introduced by a reset phrase
    wins; without one, the first bare time that does not describe the limit's window."""
    found = sorted(_candidates(text, now, tz), key=lambda c: (not c[0], c[1]))
    return found[0][2] if found else None


def _at(day: dt.date, h: int, minute: int, zone: dt.tzinfo) -> dt.datetime:
    """Wall-clock time in ``zone``; a time skipped by a DST jump resolves forward (zoneinfo's fold=0)."""
    return dt.datetime(day.year, day.month, day.day, h, minute, tzinfo=zone)
