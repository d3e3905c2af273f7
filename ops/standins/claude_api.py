"""A stand-in for the Anthropic Messages API: the real ``anthropic`` SDK talks to it over HTTP.

``python -m ops.standins claude [--port N] [--scenario NAME] [--key-env VAR] [--requests-limit N]``
serves ``POST /v1/messages`` (JSON, or SSE when ``"stream": true``) and ``GET /v1/models[/ID]`` on
127.0.0.1, checking the key (``x-api-key``, or ``Authorization: Bearer`` as SDK 2.x sends it; 401
``authentication_error`` on a mismatch; any non-empty key when no key is configured). Tests start it in-process:
``ClaudeStandin(key=...).start()``, ``.url``, ``.stop()``.

What it reproduces of the real service (docs/providers.md § Anthropic API), never the model itself:

* the SSE event sequence ``message_start``, ``content_block_start``, ``ping``, ``content_block_delta``
  (``thinking_delta`` + ``signature_delta`` when thinking is on, then ``text_delta``),
  ``content_block_stop``, ``message_delta``, ``message_stop``; and ``event: error`` after HTTP 200;
* ``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`` and
  ``request-id`` on every answer; a requests bucket of ``requests_limit`` per minute that refills
  continuously and answers 429 with ``retry-after`` when empty;
* ``stop_reason: "max_tokens"``: an answer longer than the request's ``max_tokens`` (one word is one
  token) stops there;
* validation the real API does (``max_tokens``, alternating roles, thinking budget >= 1024 and below
  ``max_tokens``): a provider bug shows up as a 400 here, not in production.

The answer is deterministic: a research prompt (``prompts/``) is answered in its format by the sim's
generator (``services/backends/prompt_answers.py``; ``reviews=`` tunes its review verdicts), anything
else with ``claude stand-in answer to: <first line of the last user message>``.

Scenarios (:data:`SCENARIOS`) are chosen per request by a ``[[standin:NAME]]`` marker in the last user
message or an ``x-standin-scenario`` header, or at run time by ``POST /__scenario {"scenario": NAME,
"count": N}`` (N requests, then back to ``normal``; no count: until changed) or :meth:`set_scenario`.
Every ``/v1/messages`` request is recorded (``GET /__requests``, :attr:`ClaudeStandin.requests`): system
prompt, messages, scenario, status, outcome — so a test can check the replayed transcript and that
nothing was sent twice. ``POST /__reset`` clears records, scenario and the rate-limit bucket.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import socket
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler

from ops.standins.server import StandinServer, reviews_option, serve_in_foreground
from services.backends.prompt_answers import answer_prompt

SCENARIOS = {
    "normal": "answer (JSON or SSE as asked)",
    "streaming": "answer in many small deltas with pings between them",
    "rate_limit_short": "429 rate_limit_error, retry-after: 5",
    "rate_limit_long": "429 rate_limit_error, retry-after: 900",
    "spend_limit": "429 with error_code enforced_spend_limit_reached (monthly spend limit)",
    "org_spend_limit": "400 invalid_request_error: the organisation's API usage limits are reached "
                       "(\"You will regain access on <first of next month>\"), whatever the model",
    "credit_balance": "400 invalid_request_error: your credit balance is too low",
    "overloaded": "529 overloaded_error",
    "server_error": "500 api_error",
    "midstream_error": "HTTP 200, a few deltas, then event: error (overloaded_error)",
    "bad_key": "401 authentication_error whatever the key",
    "slow_stream": "a delta every slow_interval seconds for a long time (cancel tests)",
    "prompt_too_long": "400 invalid_request_error: prompt is too long",
    "too_large": "413 request_too_large",
    "disconnect": "HTTP 200, a few deltas, then the connection is cut mid-body",
    "empty_reply": "HTTP 200, stop_reason end_turn with an empty text block (the model said nothing)",
}
MARKER = re.compile(r"\[\[standin:([a-z_]+)\]\]")
TOKEN_LIMITS = {"tokens": 80000, "input-tokens": 40000, "output-tokens": 16000}


def _rfc3339(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _text_of(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict))
    return ""


def answer_for(messages: list, model: str = "", deep: bool = False, reviews: dict | None = None) -> str:
    """The deterministic answer to a request: a research prompt (one of prompts/, read from the last user
    message) gets an answer in its format from the sim's generator, answered as ``model``
    (services/backends/prompt_answers.py); anything else an echo of the message's first line."""
    last = MARKER.sub("", _text_of(messages[-1].get("content")) if messages else "").strip()
    research = answer_prompt(last, "deep" if deep else "standard", account=model or "claude", reviews=reviews)
    if research is not None:
        return research
    return f"claude stand-in answer to: {last.splitlines()[0].strip() if last else ''}"


def validate(body) -> str | None:
    """What the real API would reject with 400 invalid_request_error; None when the request is fine."""
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model: Field required"
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        return "max_tokens: Field required (a positive integer)"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        if msg["role"] != ("user" if i % 2 == 0 else "assistant"):
            return f"messages.{i}: roles must alternate between 'user' and 'assistant', starting with 'user'"
        if not _text_of(msg.get("content")).strip():
            return f"messages.{i}: all messages must have non-empty content"
    system = body.get("system")
    if system is not None and not isinstance(system, (str, list)):
        return "system: Input should be a valid string or list of text blocks"
    thinking = body.get("thinking")
    if thinking is not None:
        kind = thinking.get("type") if isinstance(thinking, dict) else None
        if kind == "enabled":
            budget = thinking.get("budget_tokens")
            if not isinstance(budget, int) or budget < 1024:
                return "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
            if budget >= max_tokens:
                return "`max_tokens` must be greater than `thinking.budget_tokens`"
        elif kind not in ("adaptive", "disabled"):
            return "thinking.type: Input should be 'enabled', 'adaptive' or 'disabled'"
    return None


class ClaudeStandin(StandinServer):
    """The server, startable in-process. Attributes are safe to read from the test thread."""

    thread_name = "claude-standin"

    def __init__(self, key: str | None = None, scenario: str = "normal", host: str = "127.0.0.1", port: int = 0,
                 requests_limit: int = 50, slow_interval: float = 0.2, slow_events: int = 300,
                 max_prompt_chars: int = 800_000, models: list[str] | None = None,
                 reviews: dict | None = None):
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r} (known: {', '.join(SCENARIOS)})")
        self.key = key
        self.host, self.port = host, port
        self.requests_limit = requests_limit
        self.slow_interval, self.slow_events = slow_interval, slow_events
        self.max_prompt_chars = max_prompt_chars
        self.models = models
        self.reviews = reviews      # the research answers' review tuning (prompt_answers.answer_prompt)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._scenario: str = scenario
        self._count: int | None = None
        self.records: list[dict] = []
        self._level = float(requests_limit)     # the requests bucket, refilled continuously
        self._level_at = time.time()

    # --- life cycle ---------------------------------------------------------------------------------

    def handler_class(self):
        return _Handler

    def stop(self) -> None:
        self.stopping.set()
        super().stop()

    # --- control ------------------------------------------------------------------------------------

    def set_scenario(self, name: str, count: int | None = None) -> None:
        """Serve ``name`` to the next ``count`` requests (all, when None), then ``normal``."""
        if name not in SCENARIOS:
            raise ValueError(f"unknown scenario {name!r} (known: {', '.join(SCENARIOS)})")
        with self.lock:
            self._scenario, self._count = name, count

    def reset(self) -> None:
        with self.lock:
            self.records.clear()
            self._scenario, self._count = "normal", None
            self._level, self._level_at = float(self.requests_limit), time.time()

    @property
    def requests(self) -> list[dict]:
        """A copy of the records of every /v1/messages request, oldest first."""
        with self.lock:
            return [dict(r) for r in self.records]

    def _pick(self, body: dict, header: str | None) -> str:
        messages = body.get("messages") if isinstance(body, dict) else None
        last = _text_of(messages[-1].get("content")) if isinstance(messages, list) and messages and \
            isinstance(messages[-1], dict) else ""
        found = MARKER.search(last)
        if found and found.group(1) in SCENARIOS:
            return found.group(1)
        if header in SCENARIOS:
            return header
        with self.lock:
            name = self._scenario
            if self._count is not None:
                self._count -= 1
                if self._count <= 0:
                    self._scenario, self._count = "normal", None
            return name

    def _take_request(self) -> tuple[bool, dict]:
        """Consume one unit of the requests bucket; (allowed, rate-limit headers after it)."""
        with self.lock:
            now = time.time()
            rate = self.requests_limit / 60.0
            self._level = min(float(self.requests_limit), self._level + (now - self._level_at) * rate)
            self._level_at = now
            allowed = self._level >= 1.0
            if allowed:
                self._level -= 1.0
            level = self._level
        full_at = now + (self.requests_limit - level) / rate
        headers = {"anthropic-ratelimit-requests-limit": str(self.requests_limit),
                   "anthropic-ratelimit-requests-remaining": str(int(level)),
                   "anthropic-ratelimit-requests-reset": _rfc3339(full_at)}
        for bucket, limit in TOKEN_LIMITS.items():
            headers[f"anthropic-ratelimit-{bucket}-limit"] = str(limit)
            headers[f"anthropic-ratelimit-{bucket}-remaining"] = str(limit - 1000)
            headers[f"anthropic-ratelimit-{bucket}-reset"] = _rfc3339(now + 1)
        if not allowed:
            headers["retry-after"] = str(max(1, int((1.0 - level) / rate + 0.999)))
        return allowed, headers

    def _record(self, record: dict) -> dict:
        with self.lock:
            record["seq"] = len(self.records) + 1
            self.records.append(record)
        return record


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: ClaudeStandin

    def log_message(self, fmt, *args):  # quiet: tests read records, not stderr
        pass

    # --- plumbing -----------------------------------------------------------------------------------

    def _body(self):
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw or b"null")
        except ValueError:
            return raw.decode("utf-8", "replace")

    def _send_json(self, status: int, payload, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, etype: str, message: str, headers: dict | None = None, code: str | None = None):
        rid = (headers or {}).get("request-id") or f"req_{uuid.uuid4().hex[:24]}"
        error: dict[str, object] = {"type": etype, "message": message}
        if code:
            error["details"] = {"error_code": code}
        self._send_json(status, {"type": "error", "error": error, "request_id": rid},
                        dict(headers or {}, **{"request-id": rid}))

    def _given_key(self) -> tuple[str, str | None]:
        """(key, how it came): ``x-api-key``, or ``Authorization: Bearer`` (what SDK 2.x sends)."""
        if self.headers.get("x-api-key"):
            return self.headers["x-api-key"], "x-api-key"
        auth = self.headers.get("authorization") or ""
        if auth.lower().startswith("bearer ") and auth[7:].strip():
            return auth[7:].strip(), "bearer"
        return "", None

    def _key_ok(self) -> bool:
        given, _ = self._given_key()
        return bool(given) and (self.owner.key is None or given == self.owner.key)

    # --- routes -------------------------------------------------------------------------------------

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/__requests":
            return self._send_json(200, self.owner.requests)
        if path.startswith("/v1/models"):
            if not self._key_ok() or self.owner._scenario == "bad_key":
                return self._error(401, "authentication_error", "invalid x-api-key")
            # the Models API has limits of its own: it does not touch the Messages requests bucket
            headers = {"request-id": f"req_{uuid.uuid4().hex[:24]}"}
            model_id = path[len("/v1/models/"):] if path.startswith("/v1/models/") else None
            known = self.owner.models
            if model_id is not None:
                if known is not None and model_id not in known:
                    return self._error(404, "not_found_error", f"model: {model_id}", headers)
                return self._send_json(200, _model_info(model_id), headers)
            ids = known or ["claude-sonnet-4-5", "claude-opus-4-5"]
            return self._send_json(200, {"data": [_model_info(m) for m in ids], "has_more": False,
                                         "first_id": ids[0], "last_id": ids[-1]}, headers)
        return self._error(404, "not_found_error", f"no route {path}")

    def do_POST(self):
        path = self.path.split("?")[0]
        body = self._body()
        if path == "/__scenario":
            try:
                self.owner.set_scenario(body.get("scenario", "normal"), body.get("count"))
            except (ValueError, AttributeError) as exc:
                return self._send_json(400, {"error": str(exc)})
            return self._send_json(200, {"scenario": body.get("scenario", "normal")})
        if path == "/__reset":
            self.owner.reset()
            return self._send_json(200, {"reset": True})
        if path != "/v1/messages":
            return self._error(404, "not_found_error", f"no route {path}")
        self._messages(body)

    def _messages(self, body) -> None:
        owner = self.owner
        scenario = owner._pick(body if isinstance(body, dict) else {}, self.headers.get("x-standin-scenario"))
        b = body if isinstance(body, dict) else {}
        rec = owner._record({"time": time.time(), "scenario": scenario, "key_ok": self._key_ok(),
                             "auth_via": self._given_key()[1],
                             "stream": bool(b.get("stream")), "model": b.get("model"),
                             "max_tokens": b.get("max_tokens"), "thinking": b.get("thinking"),
                             "system": b.get("system"), "messages": b.get("messages"), "status": None,
                             "outcome": None})
        rid = f"req_{uuid.uuid4().hex[:24]}"
        rec["request_id"] = rid
        if scenario == "bad_key" or not rec["key_ok"]:
            rec.update(status=401, outcome="refused")
            return self._error(401, "authentication_error", "invalid x-api-key", {"request-id": rid})
        allowed, headers = owner._take_request()
        headers["request-id"] = rid
        refusal = self._refusal(scenario, b, allowed, headers)
        if refusal is not None:
            status, etype, message, code = refusal
            rec.update(status=status, outcome="refused")
            return self._error(status, etype, message, headers, code)
        if owner.models is not None and b["model"] not in owner.models:
            rec.update(status=404, outcome="refused")
            return self._error(404, "not_found_error", f"model: {b['model']}", headers)
        rec["status"] = 200
        thinking = (b.get("thinking") or {}).get("type") in ("enabled", "adaptive")
        text = "" if scenario == "empty_reply" else answer_for(b["messages"], str(b.get("model") or ""), thinking,
                                                               owner.reviews)
        message = _message(b, text)
        if not b.get("stream"):
            rec["outcome"] = "served"
            return self._send_json(200, message, headers)
        rec["outcome"] = self._stream(message, scenario, headers)

    def _refusal(self, scenario: str, body: dict, allowed: bool, headers: dict):
        """(status, error type, message, error code) for a request refused before any answer, or None."""
        now = time.time()
        if scenario == "rate_limit_short":
            headers["retry-after"] = "5"
        elif scenario == "rate_limit_long":
            headers["retry-after"] = "900"
        if scenario in ("rate_limit_short", "rate_limit_long") or not allowed:
            headers["anthropic-ratelimit-requests-remaining"] = "0"
            headers["anthropic-ratelimit-requests-reset"] = _rfc3339(now + int(headers["retry-after"]))
            return (429, "rate_limit_error", "This request would exceed your organization's rate limit of "
                    f"{self.owner.requests_limit} requests per minute. Please try again later.", None)
        if scenario == "spend_limit":
            first = dt.datetime.fromtimestamp(now, dt.UTC).replace(day=1, hour=0, minute=0, second=0)
            nxt = (first + dt.timedelta(days=32)).replace(day=1)
            return (429, "rate_limit_error", "You have reached your specified workspace API usage limits "
                    f"(spend limit). You will regain access on {nxt:%Y-%m-%d} at 00:00 UTC.",
                    "enforced_spend_limit_reached")
        if scenario == "org_spend_limit":
            first = dt.datetime.fromtimestamp(now, dt.UTC).replace(day=1, hour=0, minute=0, second=0)
            nxt = (first + dt.timedelta(days=32)).replace(day=1)
            return (400, "invalid_request_error", "You have reached your specified API usage limits. You will "
                    f"regain access on {nxt:%Y-%m-%d} at 00:00 UTC.", None)
        if scenario == "credit_balance":
            return (400, "invalid_request_error", "Your credit balance is too low to access the Anthropic API. "
                    "Please go to Plans & Billing to upgrade or purchase credits.", None)
        if scenario == "overloaded":
            return 529, "overloaded_error", "Overloaded", None
        if scenario == "server_error":
            return 500, "api_error", "Internal server error", None
        if scenario == "too_large":
            return 413, "request_too_large", "Request exceeds the maximum allowed number of bytes.", None
        problem = validate(body)
        if problem:
            return 400, "invalid_request_error", problem, None
        size = len(_text_of(body.get("system"))) + sum(len(_text_of(m.get("content"))) for m in body["messages"])
        if scenario == "prompt_too_long" or size > self.owner.max_prompt_chars:
            return (400, "invalid_request_error",
                    f"prompt is too long: {max(size // 4, 200001)} tokens > 200000 maximum", None)
        return None

    # --- SSE ----------------------------------------------------------------------------------------

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _event(self, name: str, payload: dict) -> None:
        self._chunk(f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode())

    def _stream(self, message: dict, scenario: str, headers: dict) -> str:
        """Write the SSE answer; the outcome for the record (served, aborted, midstream_error, cut)."""
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        owner = self.owner
        try:
            start = dict(message, content=[], stop_reason=None,
                         usage={"input_tokens": message["usage"]["input_tokens"], "output_tokens": 1})
            self._event("message_start", {"type": "message_start", "message": start})
            self._event("ping", {"type": "ping"})
            sent_deltas = 0
            for index, block in enumerate(message["content"]):
                if block["type"] == "thinking":
                    self._event("content_block_start", {"type": "content_block_start", "index": index,
                                                        "content_block": {"type": "thinking", "thinking": "",
                                                                          "signature": ""}})
                    for piece in _pieces(block["thinking"], 12):
                        self._event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                            "delta": {"type": "thinking_delta", "thinking": piece}})
                    self._event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                        "delta": {"type": "signature_delta",
                                                                  "signature": block["signature"]}})
                else:
                    self._event("content_block_start", {"type": "content_block_start", "index": index,
                                                        "content_block": {"type": "text", "text": ""}})
                    size = 3 if scenario in ("streaming", "slow_stream") else 16
                    pieces = _pieces(block["text"], size)
                    if scenario == "slow_stream":
                        pieces = (pieces * (owner.slow_events // max(1, len(pieces)) + 1))[:owner.slow_events]
                    for piece in pieces:
                        if owner.stopping.is_set():
                            return "aborted"
                        self._event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                            "delta": {"type": "text_delta", "text": piece}})
                        sent_deltas += 1
                        if scenario == "streaming":
                            self._event("ping", {"type": "ping"})
                        elif scenario == "slow_stream":
                            time.sleep(owner.slow_interval)
                        if sent_deltas == 2 and scenario == "midstream_error":
                            self._event("error", {"type": "error", "error": {"type": "overloaded_error",
                                                                             "message": "Overloaded"}})
                            self._chunk(b"")
                            return "midstream_error"
                        if sent_deltas == 2 and scenario == "disconnect":
                            self.close_connection = True
                            self.connection.shutdown(socket.SHUT_RDWR)
                            return "cut"
                self._event("content_block_stop", {"type": "content_block_stop", "index": index})
            self._event("message_delta", {"type": "message_delta",
                                          "delta": {"stop_reason": message["stop_reason"],
                                                    "stop_sequence": None},
                                          "usage": {"output_tokens": message["usage"]["output_tokens"]}})
            self._event("message_stop", {"type": "message_stop"})
            self._chunk(b"")
            return "served"
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True
            return "aborted"


def _pieces(text: str, size: int) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def _message(body: dict, text: str) -> dict:
    """The complete Message the request gets (thinking first when thinking is on)."""
    content = []
    thinking = body.get("thinking") or {}
    if thinking.get("type") in ("enabled", "adaptive"):
        content.append({"type": "thinking", "thinking": "Let me think about this step by step.",
                        "signature": "EqQBCgIYAhIM" + uuid.uuid4().hex})
    # an answer longer than max_tokens (one word is one token here) stops there, as the real API's does
    words = re.findall(r"\S+\s*", text)
    cut = len(words) > body["max_tokens"]
    if cut:
        text = "".join(words[:body["max_tokens"]]).rstrip()
    content.append({"type": "text", "text": text})
    chars = len(_text_of(body.get("system"))) + sum(len(_text_of(m.get("content"))) for m in body["messages"])
    return {"id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant", "model": body["model"],
            "content": content, "stop_reason": "max_tokens" if cut else "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": max(1, chars // 4), "output_tokens": max(1, len(text) // 4)}}


def _model_info(model_id: str) -> dict:
    return {"type": "model", "id": model_id, "display_name": model_id.replace("-", " ").title(),
            "created_at": "2025-09-29T00:00:00Z", "lifecycle": "active"}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.standins claude", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: an ephemeral port (printed)")
    parser.add_argument("--scenario", default="normal", choices=sorted(SCENARIOS))
    parser.add_argument("--key-env", default=None,
                        help="environment variable holding the only accepted key (default: any non-empty key)")
    parser.add_argument("--requests-limit", type=int, default=50, help="requests per minute before 429")
    reviews_option(parser)
    args = parser.parse_args(argv)
    key = os.environ.get(args.key_env) if args.key_env else None
    if args.key_env and not key:
        print(f"environment variable {args.key_env} is empty", file=sys.stderr)
        return 2
    standin = ClaudeStandin(key=key, scenario=args.scenario, host=args.host, port=args.port,
                            requests_limit=args.requests_limit, reviews=args.reviews)
    return serve_in_foreground(standin)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
