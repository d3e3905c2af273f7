"""Failure rules shared by every API provider (``claude``, ``openai``): one reading of each thing the
HTTP APIs say alike, so that a spend limit or a ``Retry-After`` means the same for each of them.

Pure functions (no I/O): the Retry-After header (RFC 9110 §10.2.3), whether a refusal is about money
(docs/tasks.md § Failure classes) and the ProviderError that says so. What only one API says (the
``anthropic-ratelimit-*`` headers, OpenAI-compatible servers' "Loading model") stays with its provider
(:mod:`.claude_errors`, :mod:`.openai_wire`).
"""
from __future__ import annotations

import datetime as dt
import email.utils
import math
import re

from services.backends.base import ProviderError

BILLING_RETRY = 21600.0  # a refusal about money (spend limit, no credit) without a stated time: 6 h
# error codes/types that mean money: Anthropic's spend limits, OpenAI's insufficient_quota / hard limit
BILLING_CODES = {"enforced_spend_limit_reached", "contract_spend_limit_reached",
                 "linked_organization_spend_limit_reached", "linked_organization_billing_unavailable",
                 "insufficient_quota", "billing_hard_limit_reached", "billing_not_active"}
_BILLING_TEXT = re.compile(r"spend(ing)? limit|credit balance|billing|api usage limits|purchase credits",
                           re.IGNORECASE)
_REGAIN = re.compile(r"regain access on (\d{4}-\d{2}-\d{2})(?:\s+at\s+(\d{1,2}:\d{2}))?", re.IGNORECASE)


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


def is_billing(status: int, etype: str | None, code: str | None, message: str) -> bool:
    """Whether a refusal is about money (spend limit, credit balance, no quota bought): no quick retry
    will help. ``etype``/``code`` are the error body's type and code (Anthropic: ``error.type`` and
    ``error.details.error_code``; OpenAI: ``error.type`` and ``error.code``)."""
    if code in BILLING_CODES or etype in BILLING_CODES or etype == "billing_error" or status == 402:
        return True
    return status in (400, 403, 429) and bool(_BILLING_TEXT.search(message))


def regain_at(message: str) -> float | None:
    """The time a spend-limit message names ("regain access on 2026-03-01 at 00:00", UTC), or None."""
    match = _REGAIN.search(message)
    if not match:
        return None
    try:
        when = dt.datetime.fromisoformat(f"{match.group(1)}T{match.group(2) or '00:00'}:00+00:00")
    except ValueError:
        return None
    return when.timestamp()


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds:.0f} s"


def billing_error(text: str, message: str, now: float, *, wait: float | None, billing_retry: float = BILLING_RETRY,
                  where: str, sent: bool) -> ProviderError:
    """The refusal about money as a ProviderError: quota for every mode of the account (the money is the
    organisation's, ``scope="account"``), until the time the message names, else for
    max(Retry-After, ``billing_retry``) — never a quick retry, which would only spend another request on
    the same refusal. ``where`` says where the operator raises the limit."""
    regain = regain_at(message)
    after = max(wait or 0.0, billing_retry) if regain is None or regain <= now else regain - now
    return ProviderError("quota", f"billing: spend limit or credit exhausted, no quick retry; not trying again "
                         f"for {hours(after)} (raise the limit or add credit {where}): {text}",
                         retry_after=after, sent=sent, scope="account")
