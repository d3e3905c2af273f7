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


# --- a completion cut at the token limit ------------------------------------------------------------------
# A completion that stopped at max_tokens (OpenAI-compatible ``finish_reason: "length"``, Claude
# ``stop_reason: "max_tokens"``) is never an answer: half an answer, or a reasoning model's thinking with
# none. The same request would be cut at the same place, so where the account names the budget the next
# attempt of that task asks for LENGTH_GROWTH times the budget that cut it — once; cut again, it fails
# with the setting to raise. The provider remembers the cut in its conversation store (note_cut/cut_at),
# so a worker restart between the two attempts does not start over.

LENGTH_GROWTH = 2


def token_budget(configured: int, cut_at: int | None) -> int:
    """The max_tokens of an attempt: the configured budget, or after an earlier attempt of the same task
    was cut at ``cut_at`` tokens, LENGTH_GROWTH times that."""
    return configured if cut_at is None else max(configured, cut_at * LENGTH_GROWTH)


def length_cut(budget: int | None, configured: int | None, what: str, hint: str) -> ProviderError:
    """The ProviderError for a completion cut at ``budget`` tokens (None: the server's own default, which
    the account does not set, so there is nothing to grow). ``configured`` is the account's budget: a cut
    at it is retried once with a larger one (transient, sent: the tokens were spent); a cut at a grown
    budget, or where the budget cannot be grown, is terminal and names ``hint`` (the setting to change)."""
    if budget is not None and configured is not None and budget <= configured:
        return ProviderError("transient", f"the completion hit max_tokens {budget} ({what}); not an answer: "
                             f"retrying once with max_tokens {budget * LENGTH_GROWTH}", retry_after=0.0, sent=True)
    limit = "the server's default token limit" if budget is None else f"max_tokens {budget}"
    again = (f" again after one retry with a larger budget than the configured {configured}"
             if budget is not None and configured is not None else "")
    return ProviderError("terminal", f"the completion hit {limit}{again} ({what}); not an answer: {hint}",
                         sent=True)
