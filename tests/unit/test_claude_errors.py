"""claude backend: rate-limit headers and the failure classification (status, headers, body -> class)."""
import datetime as dt
import email.utils
from typing import Any

import anthropic
import httpx2
import pytest

from services.backends import claude_errors as ce

NOW = 1_790_000_000.0


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def body(etype: str, message: str = "", code: str | None = None) -> dict:
    err: dict[str, Any] = {"type": etype, "message": message}
    if code:
        err["details"] = {"error_code": code}
    return {"type": "error", "error": err, "request_id": "req_1"}


def classify(status, headers=None, b=None, billing_retry=21600.0):
    return ce.classify_status(status, headers or {}, b, NOW, billing_retry)


# --- rate limits ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("seconds", [5, 900, 7999])
def test_429_with_retry_after_is_a_quota_cool_down_of_that_length_short_or_long(seconds):
    err = classify(429, {"Retry-After": str(seconds), "request-id": "req_9"}, body("rate_limit_error", "slow down"))
    assert (err.error_class, err.retry_after, err.sent) == ("quota", float(seconds), False)   # refused: not served
    assert "req_9" in err.message and "slow down" in err.message


def test_retry_after_ms_and_http_date_forms():
    assert ce.retry_after({"retry-after-ms": "1500"}, NOW) == 1.5
    date = email.utils.formatdate(NOW + 120, usegmt=True)
    assert ce.retry_after({"Retry-After": date}, NOW) == pytest.approx(120, abs=1)
    assert ce.retry_after({"retry-after": "soon"}, NOW) is None
    assert ce.retry_after({"retry-after": "-3"}, NOW) is None
    assert ce.retry_after({}, NOW) is None


def test_429_without_retry_after_uses_the_reset_of_the_exhausted_bucket_or_says_nothing():
    headers = {"anthropic-ratelimit-requests-remaining": "0",
               "anthropic-ratelimit-requests-reset": iso(NOW + 42),
               "anthropic-ratelimit-tokens-remaining": "5000",
               "anthropic-ratelimit-tokens-reset": iso(NOW + 999)}
    err = classify(429, headers, body("rate_limit_error"))
    assert err.error_class == "quota" and err.retry_after == pytest.approx(42, abs=1)
    bare = classify(429, {}, body("rate_limit_error"))
    assert bare.error_class == "quota" and bare.retry_after is None   # the broker then cools down 1 h


def test_spend_limit_is_a_long_quota_with_the_regain_date_and_says_there_is_no_quick_retry():
    regain = dt.datetime.fromtimestamp(NOW, dt.UTC).replace(hour=0, minute=0, second=0) \
        + dt.timedelta(days=3)
    msg = ("You have reached your specified workspace API usage limits. "
           f"You will regain access on {regain:%Y-%m-%d} at 00:00 UTC.")
    err = classify(429, {"retry-after": "5"}, body("rate_limit_error", msg, "enforced_spend_limit_reached"))
    assert err.error_class == "quota"
    assert err.retry_after == pytest.approx(regain.timestamp() - NOW, abs=1)
    assert "no quick retry" in err.message and "spend limit" in err.message


@pytest.mark.parametrize("status,b", [
    (429, body("rate_limit_error", "Your spend limit has been reached")),
    (400, body("invalid_request_error", "Your credit balance is too low to access the Anthropic API.")),
    (402, body("billing_error", "payment required")),
    (429, body("rate_limit_error", "limit", "contract_spend_limit_reached")),
])
def test_billing_refusals_wait_billing_retry_never_the_short_retry_after(status, b):
    err = classify(status, {"retry-after": "5"}, b, billing_retry=7200.0)
    assert (err.error_class, err.retry_after) == ("quota", 7200.0)
    assert "no quick retry" in err.message and "2.0 h" in err.message
    assert err.scope == "account"          # the money is the organisation's: every mode cools


def test_the_organisations_usage_limit_cools_every_mode_and_a_rate_limit_only_its_own():
    msg = "You have reached your specified API usage limits. You will regain access on 2031-01-01 at 00:00 UTC."
    org = classify(400, {}, body("invalid_request_error", msg))
    assert (org.error_class, org.scope, org.sent) == ("quota", "account", False)
    rate = classify(429, {"retry-after": "5"}, body("rate_limit_error", "slow down"))
    assert (rate.error_class, rate.scope) == ("quota", "mode")


def test_a_retry_after_longer_than_billing_retry_wins():
    err = classify(429, {"retry-after": "90000"}, body("rate_limit_error", "spend limit"), billing_retry=3600.0)
    assert err.retry_after == 90000.0


# --- overload, server errors, mid-stream ------------------------------------------------------------------

def test_529_overloaded_is_a_short_transient_retry_not_a_cool_down():
    err = classify(529, {"retry-after": "3"}, body("overloaded_error", "Overloaded"))
    assert (err.error_class, err.retry_after, err.sent) == ("transient", 3.0, False)   # refused: not served
    assert classify(529, {}, body("overloaded_error")).retry_after is None


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 409])
def test_server_errors_are_transient_with_backoff(status):
    err = classify(status, {}, body("api_error", "Internal server error"))
    assert (err.error_class, err.retry_after, err.sent) == ("transient", None, False)


@pytest.mark.parametrize("etype,cls", [("overloaded_error", "transient"), ("api_error", "transient"),
                                       ("rate_limit_error", "quota"), ("invalid_request_error", "terminal"),
                                       (None, "transient")])
def test_an_error_event_after_http_200_is_classified_by_its_type(etype, cls):
    b = body(etype, "x") if etype else {"type": "error"}
    err = classify(200, {}, b)
    assert err.error_class == cls and err.sent is True
    assert "mid-stream" in err.message


def test_a_status_before_any_output_is_never_served_and_an_error_event_after_200_is():
    """The quota unit of a refused request is refunded (sent=False); one the API began answering is not."""
    for status, etype in [(429, "rate_limit_error"), (529, "overloaded_error"), (500, "api_error"),
                          (503, "api_error"), (400, "invalid_request_error"), (401, "authentication_error"),
                          (402, "billing_error")]:
        assert classify(status, {"retry-after": "3"}, body(etype, "x")).sent is False, status
        assert classify(200, {}, body(etype, "x")).sent is True, etype


# --- auth and terminal --------------------------------------------------------------------------------------

@pytest.mark.parametrize("status,etype", [(401, "authentication_error"), (403, "permission_error")])
def test_bad_key_is_auth_and_never_counted_as_sent(status, etype):
    err = classify(status, {}, body(etype, "invalid x-api-key"))
    assert (err.error_class, err.sent) == ("auth", False)
    assert "api_key_env" in err.message


def test_unknown_model_pauses_the_account_rather_than_parking_every_task():
    err = classify(404, {}, body("not_found_error", "model: claude-nope"))
    assert err.error_class == "auth" and "model not found" in err.message and "key was accepted" in err.message


@pytest.mark.parametrize("status,b", [(400, body("invalid_request_error", "prompt is too long: 210000 tokens")),
                                      (413, body("request_too_large", "too big")),
                                      (422, "unprocessable")])
def test_requests_that_cannot_succeed_are_terminal(status, b):
    err = classify(status, {}, b)
    assert err.error_class == "terminal" and err.sent is False


# --- exceptions out of the SDK and httpx2 --------------------------------------------------------------------

REQ = httpx2.Request("POST", "http://127.0.0.1:1/v1/messages")


def chained(outer, inner):
    try:
        try:
            raise inner
        except Exception as exc:
            raise outer from exc
    except Exception as exc:
        return exc


def test_status_exceptions_are_classified_from_response_headers_and_body():
    response = httpx2.Response(429, headers={"retry-after": "900"}, request=REQ)
    exc = anthropic.RateLimitError("Error code: 429", response=response, body=body("rate_limit_error", "x"))
    err = ce.classify_exception(exc, NOW)
    assert (err.error_class, err.retry_after) == ("quota", 900.0)
    overloaded = anthropic.APIStatusError("mid", response=httpx2.Response(200, request=REQ),
                                          body=body("overloaded_error", "Overloaded"))
    assert ce.classify_exception(overloaded, NOW).error_class == "transient"


@pytest.mark.parametrize("inner", [httpx2.ConnectError("refused"), httpx2.ConnectTimeout("slow connect")])
def test_connection_never_made_is_transient_and_not_sent(inner):
    exc = chained(anthropic.APIConnectionError(request=REQ), inner)
    err = ce.classify_exception(exc, NOW)
    assert (err.error_class, err.sent) == ("transient", False)
    assert ce.classify_exception(inner, NOW).sent is False


def test_timeouts_and_cuts_after_sending_are_transient_and_sent():
    timeout = chained(anthropic.APITimeoutError(request=REQ), httpx2.ReadTimeout("read"))
    assert (ce.classify_exception(timeout, NOW).error_class, ce.classify_exception(timeout, NOW).sent) == \
        ("transient", True)
    cut = httpx2.RemoteProtocolError("peer closed connection without sending complete message body")
    err = ce.classify_exception(cut, NOW)
    assert (err.error_class, err.sent) == ("transient", True) and "RemoteProtocolError" in err.message
    assert ce.classify_exception(httpx2.ReadTimeout("r"), NOW).sent is True


def test_anything_else_is_left_to_the_caller():
    assert ce.classify_exception(ValueError("bug"), NOW) is None


# --- header snapshots ---------------------------------------------------------------------------------------

def test_parse_ratelimit_keeps_every_bucket_and_nothing_else():
    headers = httpx2.Headers({"anthropic-ratelimit-requests-limit": "1000",
                              "anthropic-ratelimit-requests-remaining": "999",
                              "anthropic-ratelimit-requests-reset": iso(NOW + 1),
                              "anthropic-ratelimit-output-tokens-remaining": "15000",
                              "request-id": "req_7", "retry-after": "4", "x-api-key": "never-here",
                              "content-type": "application/json"})
    snap = ce.parse_ratelimit(headers)
    assert snap["requests"] == {"limit": 1000, "remaining": 999, "reset": iso(NOW + 1)}
    assert snap["output-tokens"] == {"remaining": 15000}
    assert snap["request_id"] == "req_7" and snap["retry_after"] == "4"
    assert "never-here" not in str(snap)


def test_exhausted_until_only_for_an_empty_bucket_with_a_reset_ahead():
    snap = {"requests": {"remaining": 0, "reset": iso(NOW + 30)}}
    assert ce.exhausted_until(snap, NOW) == pytest.approx(NOW + 30, abs=1)
    assert ce.exhausted_until({"requests": {"remaining": 0, "reset": iso(NOW - 5)}}, NOW) is None
    assert ce.exhausted_until({"requests": {"remaining": 3, "reset": iso(NOW + 30)}}, NOW) is None
    assert ce.exhausted_until(None, NOW) is None
    assert ce.parse_time("garbage") is None and ce.parse_time("2026-01-01T00:00:00Z") == 1767225600.0


@pytest.mark.parametrize("message", [
    "thinking.type.enabled is not supported for this model. Use thinking.type.adaptive instead.",
    "adaptive thinking is not supported on claude-3-7-sonnet",
    "thinking: budget_tokens must be less than max_tokens",
])
def test_a_thinking_settings_refusal_pauses_the_account_instead_of_parking_every_deep_task(message):
    body = {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
    err = ce.classify_status(400, {}, body, NOW)
    assert err.error_class == "auth" and "thinking" in err.message and "backends resume" in err.message


def test_a_prompt_too_long_stays_terminal():
    body = {"type": "error", "error": {"type": "invalid_request_error",
                                       "message": "prompt is too long: 210000 tokens > 200000 maximum"}}
    assert ce.classify_status(400, {}, body, NOW).error_class == "terminal"
