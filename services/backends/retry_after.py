"""The HTTP ``Retry-After`` header, read one way for every HTTP provider (RFC 9110 §10.2.3)."""
from __future__ import annotations

import datetime as dt
import email.utils
import math


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from ``now``: delta-seconds or an HTTP date (a date without zone is UTC; a date in
    the past is 0). None when absent or unusable — a negative or non-finite number included — so the
    caller falls back to its own default instead of trusting garbage. Any length is honoured: a drained
    window can answer hours (the SDKs ignore values above a minute; we do not)."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return max(0.0, when.timestamp() - now)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
