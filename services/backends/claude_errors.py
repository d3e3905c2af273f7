"""How the ``claude`` backend reads the Anthropic API's answers: rate-limit headers and failure classes.

Pure functions (no SDK import at module level, no I/O), so that every rule below is unit-tested with plain
dicts. ``now`` is world time (``clock.world()``): the API's reset times are wall-clock times.

Classification (docs/tasks.md § Failure classes; docs/providers.md § Anthropic API):

==========================================  ==========  ===============================================
what the API said                           class       retry_after
==========================================  ==========  ===============================================
429 / 402 / 400 about money: spend limit    quota       until "regain access on <date>" if the message
(``*_spend_limit_reached``), billing_error,             says so, else max(retry-after, billing_retry):
"credit balance is too low", "usage          (every      never a quick retry, and the message says why;
limits"                                     mode)       the money is the organisation's, so every mode
                                                        of the account cools (``scope="account"``)
429 rate_limit_error (also mid-stream)      quota       ``retry-after`` (seconds or HTTP date; long
                                                        values are honoured, unlike the SDK's 60 s
                                                        cap), else the reset of an exhausted bucket
529 overloaded_error (also mid-stream)      transient   ``retry-after`` if given: a short retry, never
                                                        an account cool-down
500/502/503/504 api_error, 408, 409         transient   ``retry-after`` if given, else broker backoff
401 authentication_error, 403 permission    auth        — (sent=False: refused at the door)
404 not_found_error (an unknown model)      auth        — the account is misconfigured: pause it for
                                                        the operator rather than park every task
400 refusing the thinking settings          auth        — the same: every deep request would fail
413 request_too_large, 400 invalid_request  terminal    —
connect refused / connect timeout           transient   — (sent=False: the API never saw it)
read timeout, connection cut mid-reply      transient   — (sent=True: a stateless API may get it again)
==========================================  ==========  ===============================================

``sent`` (see :mod:`services.backends.base`): an HTTP error status is the API's answer *before any
streamed output* — the request was refused, not served, whatever the status (an overload, a rate
limit, a 5xx, a 4xx): ``sent=False``, so the broker refunds the quota unit and nothing is reconciled.
An ``event: error`` after HTTP 200 comes after the API accepted the request and began answering:
``sent=True``.
"""
from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterator

from services.backends.api_errors import billing_error, hours, is_billing, parse_retry_after
from services.backends.base import ProviderError

PREFIX = "anthropic-ratelimit-"
BUCKETS = ("requests", "tokens", "input-tokens", "output-tokens")
# error.type -> the HTTP status it stands for (an ``event: error`` arrives after HTTP 200)
TYPE_STATUS = {"invalid_request_error": 400, "authentication_error": 401, "billing_error": 402,
               "permission_error": 403, "not_found_error": 404, "request_too_large": 413,
               "rate_limit_error": 429, "api_error": 500, "timeout_error": 504, "overloaded_error": 529}


def _lower(headers) -> dict[str, str]:
    if not headers:
        return {}
    return {str(k).lower(): str(v) for k, v in headers.items()}


def _int(value) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def parse_time(value: str | None) -> float | None:
    """An RFC 3339 time (``2026-02-24T22:25:47Z``) as epoch seconds, or None."""
    if not value:
        return None
    try:
        when = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def retry_after(headers, now: float) -> float | None:
    """Seconds to wait from ``retry-after-ms`` / ``retry-after`` (seconds or an HTTP date); None if absent
    or unreadable. Any length is honoured: a drained window can answer hours."""
    h = _lower(headers)
    ms = h.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000.0
            if math.isfinite(value) and value >= 0:
                return value
        except ValueError:
            pass
    return parse_retry_after(h.get("retry-after"), now)


def parse_ratelimit(headers) -> dict:
    """The ``anthropic-ratelimit-*`` headers of one response as ``{bucket: {limit, remaining, reset}}``
    (only the buckets present), plus ``request_id`` and ``retry_after`` (raw) when given. JSON-safe, for
    Reply.meta; never contains a request header."""
    h = _lower(headers)
    out: dict = {}
    for name, value in h.items():
        if not name.startswith(PREFIX):
            continue
        rest = name[len(PREFIX):]
        for field in ("limit", "remaining", "reset"):
            if rest.endswith("-" + field):
                bucket = rest[:-len(field) - 1]
                out.setdefault(bucket, {})[field] = value if field == "reset" else _int(value)
    if "request-id" in h:
        out["request_id"] = h["request-id"]
    if "retry-after" in h:
        out["retry_after"] = h["retry-after"]
    return out


def exhausted_until(snapshot: dict | None, now: float, buckets=("requests",)) -> float | None:
    """The latest reset time (epoch) among ``buckets`` whose remaining count is 0 and whose reset is still
    ahead; None when none is exhausted. Used to report a cool-down instead of sending a doomed request."""
    until = None
    for bucket in buckets:
        info = (snapshot or {}).get(bucket)
        if not isinstance(info, dict) or info.get("remaining") != 0:
            continue
        reset = parse_time(info.get("reset"))
        if reset is not None and reset > now and (until is None or reset > until):
            until = reset
    return until


def _error_fields(body) -> tuple[str | None, str | None, str]:
    """(error.type, error.details.error_code, error.message) of an API error body (dict or text)."""
    if isinstance(body, dict):
        inner = body.get("error")
        err: dict = inner if isinstance(inner, dict) else body
        details = err.get("details")
        code = details.get("error_code") if isinstance(details, dict) else None
        etype = err.get("type")
        return (etype if isinstance(etype, str) else None, code if isinstance(code, str) else None,
                str(err.get("message") or ""))
    return None, None, "" if body is None else str(body)[:500]


# a 400 that no retry of the same request can fix but a settings change can: the thinking mode
_CONFIG_REFUSAL = re.compile(r"\bthinking\b.*\b(not supported|unsupported|must be|is not allowed|only)\b|"
                             r"\b(adaptive|budget_tokens)\b.*\b(not supported|unsupported|required|must)\b",
                             re.IGNORECASE)


def classify_status(status: int, headers, body, now: float, billing_retry: float = 21600.0) -> ProviderError:
    """The ProviderError for an error answer of the API: an HTTP status >= 400, or (status 200) an
    ``event: error`` received mid-stream, whose ``error.type`` then says what happened."""
    etype, code, message = _error_fields(body)
    midstream = status < 400
    if midstream:
        status = TYPE_STATUS.get(etype or "", 500)   # an unnamed error event: a server-side failure
    # a status line before any output is a refusal: nothing was served (see the module docstring)
    sent = midstream
    h = _lower(headers)
    wait = retry_after(h, now)
    request_id = h.get("request-id")
    label = (f"error event mid-stream after HTTP 200: {etype or 'error'}" if midstream else
             f"{status} {etype or 'error'}") + (f" ({code})" if code else "")
    text = f"{label}: {message or 'no message'}" + (f" [request-id {request_id}]" if request_id else "")
    if is_billing(status, etype, code, message):
        return billing_error(text, message, now, wait=wait, billing_retry=billing_retry,
                             where="in the Anthropic Console", sent=sent)
    if status == 429 or etype == "rate_limit_error":
        if wait is None:
            until = exhausted_until(parse_ratelimit(h), now, BUCKETS)
            wait = None if until is None else until - now
        hint = f"; retry after {hours(wait)}" if wait is not None else ""
        return ProviderError("quota", f"rate limited: {text}{hint}", retry_after=wait, sent=sent)
    if status == 529 or etype == "overloaded_error":
        return ProviderError("transient", f"overloaded (a short retry, not a cool-down): {text}",
                             retry_after=wait, sent=sent)
    if status in (401, 403):
        return ProviderError("auth", f"the API refused the key: {text} (check the account's api_key_env or "
                             f"api_key_file)", sent=sent)
    if status == 404:
        return ProviderError("auth", f"model not found: {text} (the key was accepted: fix the account's "
                             f"model / deep_model setting, then fanoctl backends resume)", sent=sent)
    if status >= 500 or status in (408, 409):
        return ProviderError("transient", f"server error: {text}", retry_after=wait, sent=sent)
    if status == 400 and _CONFIG_REFUSAL.search(message or ""):
        # the model refuses the account's thinking settings (e.g. a model that takes only adaptive
        # thinking): every deep request would fail the same way, so the operator must fix the
        # configuration; parking the tasks one by one would only bury good work
        return ProviderError("auth", f"the model refuses this account's thinking settings: {text} (set "
                             f"thinking = \"adaptive\" or \"enabled\" to what the model supports, then "
                             f"fanoctl backends resume)", sent=sent)
    return ProviderError("terminal", f"request refused: {text}", sent=sent)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or during, each once."""
    seen = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or link.__context__


def classify_exception(exc: BaseException, now: float, billing_retry: float = 21600.0) -> ProviderError | None:
    """The ProviderError for an exception out of the SDK (or out of httpx2 while a stream is read); None
    when it is none of those (the caller then reports ``unknown``: we cannot tell what happened)."""
    import anthropic
    import httpx2

    if isinstance(exc, anthropic.APIStatusError):
        return classify_status(exc.status_code, exc.response.headers if exc.response is not None else {},
                               exc.body, now, billing_retry)
    causes = list(_chain(exc))
    never_sent = (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout, httpx2.UnsupportedProtocol)
    if isinstance(exc, (anthropic.APIConnectionError, httpx2.TransportError)):
        if any(isinstance(c, never_sent) for c in causes):
            cause = next(c for c in causes if isinstance(c, never_sent))
            return ProviderError("transient", f"could not connect to the API ({type(cause).__name__}: {cause})",
                                 sent=False)
        if any(isinstance(c, (anthropic.APITimeoutError, httpx2.TimeoutException)) for c in causes):
            return ProviderError("transient", "timed out waiting for the reply after the request was sent "
                                 "(a stateless API: it is sent again)", sent=True)
        inner = causes[-1]
        return ProviderError("transient", f"connection lost after the request was sent "
                             f"({type(inner).__name__}: {inner})", sent=True)
    if isinstance(exc, anthropic.APIResponseValidationError):
        return ProviderError("transient", f"unreadable reply: {exc.message}", sent=True)
    return None
