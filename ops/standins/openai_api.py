"""Stand-in for an OpenAI-compatible local server (llama.cpp ``llama-server``, ollama, vLLM).

Endpoints: ``POST /v1/chat/completions`` (streamed as SSE ``data:`` chunks ending with ``data: [DONE]``, or
one JSON body), ``GET /v1/models``, and in the llama.cpp flavour ``GET /health`` (503 "Loading model"
while loading, then ``{"status": "ok"}``), ``GET /props`` (``total_slots``) and ``GET /slots``. The ollama
flavour has none of the last three (404), like the real one.

Capacity: ``slots`` requests may run at once; one more gets 503 "server busy ... maximum pending requests
exceeded" (ollama's queue-full answer). The server records the most concurrent chat requests it ever saw
(``max_concurrent``), so a test can assert that a client-side cap held.

Scenarios, chosen at run time (``POST /control {"scenario": NAME}``, or the constructor / ``--scenario``)
or per request (header ``X-Standin-Scenario: NAME``, or ``[standin:NAME]`` in the last user message):

=================  ==============================================================================
normal             the answer ``openai stand-in answer to: <first line of the prompt>``, streamed; a
                   research prompt (``prompts/``) is answered in its format by the sim's generator
                   (``services/backends/prompt_answers.py``, as the request's model; ``reviews=``)
loading            503 ``{"error": {"message": "Loading model"}}`` (also from /health)
queue_full         503 as when all slots are busy
context_overflow   400 with vLLM's "This model's maximum context length is 4096 tokens. However, ..."
cut                a few chunks of the answer, then the connection drops (no [DONE], no last chunk)
slow               one chunk every ``slow_delay`` seconds (for cancellation)
hang               never answers (not even headers) until the client goes away or the server stops
error500           500 ``{"error": {"message": "internal server error"}}``
rate_limit         429 with ``Retry-After: 30``
malformed          a stream with a chunk that is not JSON
thinking_only      a reasoning model that spends its whole token budget thinking: reasoning deltas, no
                   content, ``finish_reason: "length"``
length             the first half of the answer, then ``finish_reason: "length"`` (cut at max_tokens,
                   whatever it is)
=================  ==============================================================================

In every scenario an answer longer than the request's ``max_tokens`` (one word is one token) stops
there with ``finish_reason: "length"``, as a real server's does.

=================  ==============================================================================
empty              no content at all, ``finish_reason: "stop"``
spend_limit        429 about money, no Retry-After (OpenAI's ``insufficient_quota``: "You exceeded your
                   current quota, please check your plan and billing details")
=================  ==============================================================================

Other control fields: ``health`` ("ok" | "loading"), ``loading_seconds`` (loading until then, then ok),
``slots``, ``chunk_delay``, ``slow_delay``, ``reset`` (clear statistics). ``GET /control`` returns the
statistics: ``max_concurrent``, ``in_flight``, ``requests`` (bodies received), ``hits`` (per path),
``aborted`` (clients that went away mid-answer). With ``api_key`` set, ``/v1/*`` requires
``Authorization: Bearer <key>`` (401 otherwise).

``python -m ops.standins openai [--port N] [--slots N] [--scenario NAME] [--flavor ollama]``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler

from ops.standins.server import StandinServer, reviews_option, serve_in_foreground
from services.backends.prompt_answers import answer_prompt

SCENARIOS = ("normal", "loading", "queue_full", "context_overflow", "cut", "slow", "hang", "error500",
             "rate_limit", "malformed", "thinking_only", "length", "empty", "spend_limit")
FLAVORS = ("llama.cpp", "ollama")
MARKER = re.compile(r"\[standin:([a-z_0-9]+)\]")
LOADING = {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}
BUSY = {"error": {"code": 503, "message": "server busy, please try again.  maximum pending requests exceeded",
                  "type": "unavailable_error"}}
SPEND_LIMIT = {"error": {"message": "You exceeded your current quota, please check your plan and billing details. "
                                "For more information on this error, read the docs.",
                         "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}}
OVERFLOW = {"object": "error", "type": "BadRequestError", "param": None, "code": 400,
            "message": "This model's maximum context length is 4096 tokens. However, you requested 5120 tokens "
                       "(4096 in the messages, 1024 in the completion). Please reduce the length of the "
                       "messages or completion."}


def answer_for(messages, model: str = "", reviews: dict | None = None) -> str:
    """The deterministic answer to a request: a research prompt (one of prompts/, its last user message)
    gets an answer in its format from the sim's generator, answered as ``model``
    (services/backends/prompt_answers.py); anything else an echo of the message's first line."""
    prompt = ""
    for message in messages if isinstance(messages, list) else []:
        if isinstance(message, dict) and message.get("role") == "user":
            prompt = str(message.get("content", ""))
    research = answer_prompt(MARKER.sub("", prompt), account=model or "openai", reviews=reviews)
    if research is not None:
        return research
    first = MARKER.sub("", prompt).strip().splitlines()
    return f"openai stand-in answer to: {first[0].strip() if first else ''}"


class OpenAIStandIn(StandinServer):
    """The server, startable in-process: ``start()``, ``url`` (the /v1 base), ``root``, ``stop()``."""

    thread_name = "openai-standin"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, scenario: str = "normal", slots: int = 1,
                 models=("standin-small", "standin-large"), api_key: str | None = None,
                 loading_seconds: float = 0.0, flavor: str = "llama.cpp", chunk_delay: float = 0.01,
                 slow_delay: float = 0.5, reviews: dict | None = None):
        if scenario not in SCENARIOS or flavor not in FLAVORS:
            raise ValueError(f"scenario must be one of {SCENARIOS}, flavor one of {FLAVORS}")
        self.host, self.port = host, port
        self.scenario = scenario
        self.slots = slots
        self.models = list(models) if models else None
        self.api_key = api_key
        self.flavor = flavor
        self.chunk_delay = chunk_delay
        self.slow_delay = slow_delay
        self.reviews = reviews      # the research answers' review tuning (prompt_answers.answer_prompt)
        self.health = "ok"
        self.loading_until = time.monotonic() + loading_seconds if loading_seconds else 0.0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.in_flight = 0
        self.max_concurrent = 0
        self.requests: list[dict] = []
        self.aborted = 0
        self.hits: dict[str, int] = {}       # path -> requests received

    # --- life cycle -------------------------------------------------------------------------------------

    def handler_class(self):
        return _Handler

    def stop(self) -> None:
        self.stopping.set()
        super().stop()

    @property
    def root(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.root}/v1"

    # --- state ------------------------------------------------------------------------------------------

    def loading(self) -> bool:
        return self.health == "loading" or time.monotonic() < self.loading_until

    def control(self, body: dict) -> dict:
        """Apply a control request (see the module docstring); returns the statistics."""
        with self.lock:
            if "scenario" in body:
                if body["scenario"] not in SCENARIOS:
                    raise ValueError(f"unknown scenario {body['scenario']!r}")
                self.scenario = body["scenario"]
            if "health" in body:
                if body["health"] not in ("ok", "loading"):
                    raise ValueError("health must be ok or loading")
                self.health = body["health"]
                self.loading_until = 0.0
            if "loading_seconds" in body:
                self.loading_until = time.monotonic() + float(body["loading_seconds"])
            for key in ("slots", "chunk_delay", "slow_delay"):
                if key in body:
                    setattr(self, key, type(getattr(self, key))(body[key]))
            if body.get("reset"):
                self.requests.clear()
                self.max_concurrent = self.aborted = 0
                self.hits.clear()
        return self.stats()

    def stats(self) -> dict:
        return {"scenario": self.scenario, "slots": self.slots, "in_flight": self.in_flight,
                "max_concurrent": self.max_concurrent, "aborted": self.aborted,
                "requests": list(self.requests), "hits": dict(self.hits), "loading": self.loading()}

    def hit(self, path: str) -> None:
        with self.lock:
            self.hits[path] = self.hits.get(path, 0) + 1

    def set_scenario(self, name: str) -> None:
        self.control({"scenario": name})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: OpenAIStandIn

    def log_message(self, fmt, *args):  # quiet: tests read the statistics instead
        pass

    # --- plumbing ---------------------------------------------------------------------------------------

    def _json(self, status: int, obj, headers: dict | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _event(self, obj) -> None:
        self._chunk(b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n\n")

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        return body if isinstance(body, dict) else {}

    def _authorized(self) -> bool:
        key = self.owner.api_key
        return not key or self.headers.get("Authorization") == f"Bearer {key}"

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    # --- routes -----------------------------------------------------------------------------------------

    def do_GET(self):
        s, path = self.owner, self.path.split("?")[0]
        if path == "/control":
            return self._json(200, s.stats())
        s.hit(path)
        if path in ("/health", "/props", "/slots") and s.flavor != "llama.cpp":
            return self._json(404, {"error": "404 page not found"})
        if path == "/health":
            return self._json(503, LOADING) if s.loading() or s.scenario == "loading" else \
                self._json(200, {"status": "ok"})
        if path == "/props":
            return self._json(200, {"total_slots": s.slots, "model_path": (s.models or ["model"])[0],
                                    "default_generation_settings": {"n_ctx": 4096}})
        if path == "/slots":
            return self._json(200, [{"id": i, "is_processing": i < s.in_flight} for i in range(s.slots)])
        if path == "/v1/models":
            if not self._authorized():
                return self._json(401, {"error": {"code": 401, "message": "Invalid API Key",
                                                  "type": "authentication_error"}})
            return self._json(200, {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "standin"}
                                                               for m in s.models or []]})
        return self._json(404, {"error": {"message": f"File Not Found: {path}", "code": 404}})

    def do_POST(self):
        s, path = self.owner, self.path.split("?")[0]
        body = self._body()
        if path != "/control":
            s.hit(path)
        if path == "/control":
            try:
                return self._json(200, s.control(body))
            except (ValueError, TypeError) as exc:
                return self._json(400, {"error": {"message": str(exc)}})
        if path not in ("/v1/chat/completions", "/chat/completions"):
            return self._json(404, {"error": {"message": f"File Not Found: {path}", "code": 404}})
        with s.lock:
            s.in_flight += 1
            s.max_concurrent = max(s.max_concurrent, s.in_flight)
            over = s.in_flight > s.slots
        try:
            self._chat(body, over)
        except OSError:   # the client went away mid-answer (cancel)
            with s.lock:
                s.aborted += 1
            self.close_connection = True
        finally:
            with s.lock:
                s.in_flight -= 1

    def _scenario(self, body: dict) -> str:
        messages = body.get("messages")
        if not isinstance(messages, list):
            messages = []
        last = next((m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"), {})
        marked = MARKER.search(str(last.get("content", "")))
        name = self.headers.get("X-Standin-Scenario") or (marked.group(1) if marked else self.owner.scenario)
        return name if name in SCENARIOS else "normal"

    def _chat(self, body: dict, over: bool) -> None:
        s = self.owner
        scenario = self._scenario(body)
        with s.lock:
            s.requests.append({"model": body.get("model"), "messages": body.get("messages"),
                               "stream": body.get("stream"), "reasoning_effort": body.get("reasoning_effort"),
                               "max_tokens": body.get("max_tokens"), "scenario": scenario,
                               "authorized": self._authorized()})
        if not self._authorized():
            return self._json(401, {"error": {"code": 401, "message": "Invalid API Key",
                                              "type": "authentication_error"}})
        if s.loading() or scenario == "loading":
            return self._json(503, LOADING)
        if over or scenario == "queue_full":
            return self._json(503, BUSY)
        if s.models and body.get("model") not in s.models:
            return self._json(404, {"error": {"message": f"model \"{body.get('model')}\" not found, try pulling "
                                                         "it first", "type": "api_error"}})
        if scenario == "context_overflow":
            return self._json(400, OVERFLOW)
        if scenario == "error500":
            return self._json(500, {"error": {"code": 500, "message": "internal server error",
                                              "type": "server_error"}})
        if scenario == "rate_limit":
            return self._json(429, {"error": {"message": "rate limit exceeded", "type": "rate_limit"}},
                              {"Retry-After": "30"})
        if scenario == "spend_limit":
            return self._json(429, SPEND_LIMIT)
        if scenario == "hang":
            while not s.stopping.is_set() and not self._client_gone():
                time.sleep(0.02)
            raise OSError("client gone")
        text = answer_for(body.get("messages"), str(body.get("model") or ""), s.reviews)
        model = body.get("model")
        if not body.get("stream"):
            return self._json(200, {"id": "chatcmpl-standin", "object": "chat.completion", "model": model,
                                    "choices": [{"index": 0, "finish_reason": "stop",
                                                 "message": {"role": "assistant", "content": text}}],
                                    "usage": {"prompt_tokens": 10, "completion_tokens": len(text.split())}})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        delay = s.slow_delay if scenario == "slow" else s.chunk_delay
        pieces = re.findall(r"\S+\s*", text)
        if scenario == "slow":
            pieces = pieces + [" ."] * 100     # long enough for any cancel test

        def chunk(delta, finish=None):
            return {"id": "chatcmpl-standin", "object": "chat.completion.chunk", "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        self._chunk(b": keep-alive\n\n")
        if body.get("reasoning_effort") or scenario == "thinking_only":
            self._event(chunk({"role": "assistant", "reasoning_content": "thinking it over. "}))
        finish = "stop"
        if scenario == "thinking_only":
            pieces, finish = [], "length"
            for _ in range(20):
                self._event(chunk({"reasoning_content": "and over again. "}))
        elif scenario == "length":
            pieces, finish = pieces[:max(1, len(pieces) // 2)], "length"
        elif isinstance(body.get("max_tokens"), int) and 0 < body["max_tokens"] < len(pieces):
            pieces, finish = pieces[:body["max_tokens"]], "length"      # a real server stops at the budget
        elif scenario == "empty":
            pieces = []
        for i, piece in enumerate(pieces):
            if s.stopping.is_set() or self._client_gone():     # a real server stops generating too
                raise OSError("client gone")
            if scenario == "cut" and i >= max(1, len(pieces) // 2):
                self.connection.shutdown(socket.SHUT_RDWR)   # mid-answer, no terminating chunk
                self.close_connection = True
                return
            if scenario == "malformed" and i == 1:
                self._event(b'{"choices": [{"delta": {"content": "bro')
            self._event(chunk({"content": piece}))
            if delay:
                time.sleep(delay)
        self._event(chunk({}, finish))
        self._event({"id": "chatcmpl-standin", "object": "chat.completion.chunk", "model": model, "choices": [],
                     "usage": {"prompt_tokens": 10, "completion_tokens": len(pieces)}})
        self._event(b"[DONE]")
        self._chunk(b"")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.standins openai", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--scenario", default="normal", choices=SCENARIOS)
    parser.add_argument("--slots", type=int, default=1)
    parser.add_argument("--model", action="append", help="a served model name (repeatable)")
    parser.add_argument("--flavor", default="llama.cpp", choices=FLAVORS)
    parser.add_argument("--loading-seconds", type=float, default=0.0)
    parser.add_argument("--api-key-env", help="require the key held by this environment variable")
    reviews_option(parser)
    args = parser.parse_args(argv)
    key = os.environ.get(args.api_key_env, "") if args.api_key_env else None
    standin = OpenAIStandIn(args.host, args.port, args.scenario, args.slots,
                            models=args.model or ("standin-small", "standin-large"), api_key=key or None,
                            loading_seconds=args.loading_seconds, flavor=args.flavor, reviews=args.reviews)
    return serve_in_foreground(standin)
