"""``openai``: any OpenAI-compatible chat endpoint (ollama, llama.cpp ``llama-server``, vLLM;
docs/architecture.md § Backends).

Why the standard library and not the ``openai`` SDK: the surface used is tiny (one streamed
``POST /chat/completions``, ``GET /models``, llama.cpp's ``GET /health`` and ``/props``), the SDK is not a
dependency of the project (pyproject.toml), and its own retries and timeouts would fight the worker's (the worker owns
every retry). A request runs in a small daemon thread (:class:`_Call`) so that ``send`` can poll ``cancelled()`` between
chunks and close the connection at once, even while the server is still thinking.

Settings (``[accounts.NAME]``, ``backend = "openai"``; each key declared once in
:class:`services.backends.openai_wire.Keys` and validated by :mod:`shared.settings`)::

    base_url = "http://127.0.0.1:11434/v1"      # required; the server's OpenAI prefix
    model = "qwen3:8b"                          # or per mode: models = {standard = "...", deep = "..."}
    reasoning_effort = "high"                   # deep mode's effort (default "high" unless models.deep is
                                                #   set); or per mode: {standard = "low", deep = "high"}
    max_tokens = 4096                           # optional; or per mode {standard = ..., deep = ...}
    temperature = 0.7                           # optional
    system_prompt = "..."                       # optional
    timeout = 600                               # seconds without a byte from the server before giving up
    transcript_chars = 24000                    # replayed conversation budget (pinned first turn + summary)
    max_concurrency = 2                         # in-flight requests to this server, across accounts and
                                                #   processes; default: llama.cpp's /props total_slots, else 1
    slot_wait = 30                              # seconds to wait for a free slot before giving the task back
    api_key_env = "OPENAI_API_KEY"              # optional key, sent as Bearer (or api_key_file)

Capacity, not quota (local servers have no rate limits): in-flight requests per server are capped with N
lock files ``<data_dir>/backends/openai-slots/<hash of base_url>/slot-<i>.lock`` held with ``flock``, so
several accounts (separate worker processes) pointing at one server never exceed its parallel slots; the
OS drops a dead process's locks (crash-only). The server's ``/health`` is probed on the first send and
after any failure: llama.cpp answers 503 "Loading model" while loading.

Failure classification (the message decides before the status: servers send context overflow as 400,
413 or even 429). An HTTP error status answered before the first token is a refusal — the server did not
serve the request — so every such answer is ``sent=False`` (unit refunded, nothing to reconcile; see
:mod:`services.backends.base`); only what goes wrong after the stream began is ``sent=True``:

====================================================  ===========================================
context overflow ("maximum context length", ...)      terminal (never retried unchanged)
401 / 403                                             auth
404 (model not found, or a wrong base_url)            terminal, naming the config to fix
402, or 400/403/429 about money (``insufficient_quota``, quota, scope account: every mode cools for
"spend limit", "credit balance", "billing")           max(Retry-After, BILLING_RETRY = 6 h); never a
                                                      busy-server retry (api_errors.is_billing decides)
429 with Retry-After                                  quota (retry_after from the header)
503 (loading, queue full), 429 without Retry-After    transient (retry_after 5-10 s)
other 5xx                                             transient
other 4xx                                             terminal
timeouts, stream cut mid-answer, error in the stream  transient (sent=True: re-sending is allowed,
                                                      the API is stateless)
connection refused, no free slot                      transient (sent=False)
cancelled while the request may be out                unknown (sent=True)
finished, ``finish_reason: "length"`` (cut at the     never an answer (sent=True). At the configured
token limit, or every token spent on reasoning)       max_tokens: transient, and the task's next attempt
                                                      asks for twice the budget; cut again, or with no
                                                      max_tokens set: terminal, naming max_tokens /
                                                      reasoning_effort to change
finished with no answer text                          transient (sent=True): never an answer
====================================================  ===========================================

The positive acceptance rule: a completion is delivered (and recorded) as the turn's answer only when the
model finished it (``finish_reason`` "stop", or none given) with some text (openai_wire.unusable_completion).

Conversations are replayed from :class:`ConversationStore` (bounded by :func:`replay_window`, the summary of
cut exchanges in the system message); each turn is marked sent before the request leaves and each completed
exchange is recorded with its task, which is all ``reconcile`` needs: it returns the reply recorded for
an earlier attempt of the same task, or None (the stateless server keeps nothing to ask about), and the
log then says whether that attempt may have reached the server or never left. Another task with the same
conversation, turn index and prompt is always sent. A key in ``api_key_file`` is read again before every
request, so a corrected file is used after ``fanoctl backends resume``.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import http.client
import json
import logging
import os
import queue
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from services.backends.api_errors import token_budget
from services.backends.base import ProviderError, Reply, Turn
from services.backends.conversations import TranscriptProvider, conversation_key, replay_window
from services.backends.openai_wire import (
    _LOADING,
    BUSY_RETRY,
    LOADING_RETRY,
    Answer,
    SSEDecoder,
    StreamError,
    classify_http,
    classify_stream_error,
    parse_data,
    parse_retry_after,
    parse_settings,
    server_root,
    unusable_completion,
)
from services.backends.secrets import KeyFileUnreadable, KeySource
from shared.config import ConfigError

log = logging.getLogger(__name__)

SLICE = 0.05             # real seconds between two looks at cancelled()
CONNECT_TIMEOUT = 30.0   # a host that drops SYNs must not hold a turn for the whole read timeout
PROBE_TIMEOUT = 10.0     # /health, /props, /models: small answers, a live server replies at once
DOWN_RETRY = 5.0         # connection refused
SLOT_RETRY = 2.0         # no free slot within slot_wait
MAX_LINE = 8 << 20       # one SSE line (a whole non-streamed answer can be long)
MAX_ERROR_BODY = 64 << 10


# --- capacity slots -------------------------------------------------------------------------------------

class SlotPool:
    """N lock files shared by every process pointed at one server; holding one = one request in flight.

    ``flock`` locks belong to an open file description, so two instances in one process exclude each
    other too, and the kernel releases a dead process's locks."""

    def __init__(self, directory: Path, count: int):
        self.directory = Path(directory)
        self.count = count

    def try_acquire(self) -> int | None:
        """A held slot's fd, or None when all ``count`` slots are taken."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for i in range(self.count):
            fd = os.open(self.directory / f"slot-{i}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
        return None

    def acquire(self, wait: float, cancelled: Callable[[], bool]) -> int | None:
        """Poll for a free slot for up to ``wait`` real seconds; None if none freed or cancelled."""
        deadline = time.monotonic() + wait
        while True:
            fd = self.try_acquire()
            if fd is not None or cancelled() or time.monotonic() >= deadline:
                return fd
            time.sleep(SLICE)

    @staticmethod
    def release(fd: int) -> None:
        os.close(fd)      # closing the last fd of the description drops the flock


def slot_dir(data_dir, base_url: str) -> Path:
    digest = hashlib.sha256(base_url.rstrip("/").encode()).hexdigest()[:16]
    return Path(data_dir) / "backends" / "openai-slots" / digest


# --- one HTTP request, in a thread --------------------------------------------------------------------

class _Cancelled(Exception):
    pass


class _Call:
    """One HTTP request run by a daemon thread; the caller reads its events and can abort it.

    Events: ("connected",), ("refused", exc), ("response", status, headers, body) for a whole answer,
    ("stream", status, headers), ("line", bytes)..., ("eof",), ("error", exc)."""

    def __init__(self, method: str, url: str, headers: dict, body: bytes | None, timeout: float,
                 stream: bool = False):
        self.events: queue.Queue = queue.Queue()
        self.conn: http.client.HTTPConnection | None = None
        self.connected = False
        self._closed = threading.Event()
        self._args = (method, url, headers, body, timeout, stream)
        threading.Thread(target=self._run, name="openai-http", daemon=True).start()

    def _run(self) -> None:
        method, url, headers, body, timeout, stream = self._args
        parts = urllib.parse.urlsplit(url)
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        try:
            if not parts.hostname:   # base_url is validated with a host: a bug if not, reported like a refusal
                raise OSError(f"no host in {url!r}")
            self.conn = cls(parts.hostname, parts.port, timeout=min(timeout, CONNECT_TIMEOUT))
            self.conn.connect()
            self.conn.sock.settimeout(timeout)   # from now on: the longest silence we accept
        except (OSError, http.client.HTTPException) as exc:
            self.events.put(("refused", exc))
            return
        self.connected = True           # before the check below: close() reads it after setting _closed
        if self._closed.is_set():
            self.conn.close()
            return
        self.events.put(("connected",))
        try:
            self.conn.request(method, path or "/", body=body, headers=headers)
            resp = self.conn.getresponse()
            ctype = resp.getheader("Content-Type", "")
            if not stream or resp.status != 200 or "text/event-stream" not in ctype:
                limit = MAX_LINE if resp.status == 200 else MAX_ERROR_BODY
                self.events.put(("response", resp.status, resp.headers, resp.read(limit)))
                return
            self.events.put(("stream", resp.status, resp.headers))
            while True:
                line = resp.readline(MAX_LINE)
                if not line:
                    self.events.put(("eof",))
                    return
                self.events.put(("line", line))
        except Exception as exc:  # every failure is an event; the caller classifies
            self.events.put(("error", exc))

    def next(self, cancelled: Callable[[], bool]):
        while True:
            if cancelled():
                self.close()
                raise _Cancelled()
            try:
                return self.events.get(timeout=SLICE)
            except queue.Empty:
                continue

    def close(self) -> None:
        """Abort: shut the socket so a blocked read in the thread returns at once."""
        self._closed.set()
        conn = self.conn
        sock = getattr(conn, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if conn is not None:
            conn.close()


# --- the provider ---------------------------------------------------------------------------------------

class OpenAIProvider(TranscriptProvider):
    """One account on an OpenAI-compatible server. See the module docstring."""

    backend = "openai"

    def __init__(self, account: str, settings: dict, clock, data_dir):
        super().__init__(account, settings, clock, data_dir)
        self.config = parse_settings(settings or {}, f"[accounts.{account}]")
        self.keys = KeySource(account, "openai", settings, required=False)
        try:
            self.key = self.keys.current()     # ConfigError if misplaced; a key file is read again per request
        except KeyFileUnreadable as exc:       # fixable in place: each request reports it (auth) until then
            log.warning("openai %s: %s; requests are refused as auth failures until it can be read", account, exc)
            self.key = None
        self.root = server_root(self.config.base_url)
        self.home = Path(data_dir) / "backends" / account
        self.transcripts = self.home / "conversations"
        self.slots = SlotPool(slot_dir(data_dir, self.config.base_url), self.config.max_concurrency or 1)
        self.slots_known = self.config.max_concurrency is not None
        self.probe_needed = True          # on start, and after any failure

    @property
    def modes(self) -> list[str]:
        return list(self.config.modes)

    def start(self) -> None:
        self.transcript()

    def _refresh_key(self) -> None:
        """Re-read an ``api_key_file``: a key corrected after an auth pause is used after ``fanoctl backends
        resume``; an unreadable file is an auth failure (nothing sent), not a crash."""
        if not self.keys.from_file:
            return
        try:
            self.key = self.keys.current()
        except ConfigError as exc:
            raise ProviderError("auth", f"{exc} (fix the file, then fanoctl backends resume "
                                f"{self.account})", sent=False) from None

    # --- HTTP helpers ------------------------------------------------------------------------------------

    def _headers(self, body: bool = False) -> dict:
        headers = {"Accept": "application/json"}
        if body:
            headers["Content-Type"] = "application/json"
        if self.key:
            headers["Authorization"] = f"Bearer {self.key.reveal()}"
        return headers

    def _get(self, url: str, cancelled: Callable[[], bool]):
        """(status, headers, body) of a small GET; None when the server is unreachable."""
        call = _Call("GET", url, self._headers(), None, min(self.config.timeout, PROBE_TIMEOUT))
        try:
            while True:
                event = call.next(cancelled)
                if event[0] == "response":
                    return event[1], event[2], event[3]
                if event[0] in ("refused", "error"):
                    return None
        finally:
            call.close()

    def _retry_after(self, headers) -> float | None:
        return parse_retry_after(headers.get("Retry-After") if headers is not None else None, self.clock.world())

    def probe(self, cancelled: Callable[[], bool] = lambda: False) -> None:
        """Is the server up and its model loaded? Raises a classified ProviderError (sent=False) if not."""
        got = self._get(f"{self.root}/health", cancelled)
        if got is not None and got[0] in (404, 405, 501):      # no /health (ollama): /models answers
            got = self._get(f"{self.config.base_url}/models", cancelled)
        if got is None:
            raise ProviderError("transient", f"server not reachable at {self.config.base_url}",
                                retry_after=DOWN_RETRY, sent=False)
        status, headers, body = got
        if status == 200:
            if _LOADING.search(_status_field(body)):      # old llama.cpp: 200 {"status": "loading model"}
                raise ProviderError("transient", f"model loading at {self.root}", retry_after=LOADING_RETRY,
                                    sent=False)
            self.probe_needed = False
            return
        error = classify_http(status, body, self._retry_after(headers), now=self.clock.world(),
                              url=self.config.base_url, account=self.account)
        error.sent = False             # a probe never carries the turn
        if error.error_class == "transient" and error.retry_after is None:
            error.retry_after = BUSY_RETRY
        raise error

    def discover_slots(self, cancelled: Callable[[], bool]) -> None:
        """llama.cpp tells its parallel slot count (/props total_slots, or /slots); others: 1."""
        count = None
        for path in ("/props", "/slots"):
            got = self._get(f"{self.root}{path}", cancelled)
            if got is None:
                return                   # unreachable: try again next time
            status, _, body = got
            if status != 200:
                continue
            try:
                data = json.loads(body)
            except ValueError:
                continue
            if isinstance(data, dict) and isinstance(data.get("total_slots"), int) and data["total_slots"] > 0:
                count = data["total_slots"]
            elif isinstance(data, list) and data:
                count = len(data)
            if count:
                break
        self.slots.count = min(count or 1, 1024)
        self.slots_known = True
        log.info("openai %s: %d slot(s) at %s", self.account, self.slots.count, self.root)

    # --- the request path --------------------------------------------------------------------------------

    def request_body(self, turn: Turn) -> dict:
        """The chat-completions body for a turn: replayed transcript, summary in the system message."""
        store = self.transcript()
        mode = turn.mode
        key = conversation_key(turn)
        history = [ex for ex in store.turns(key) if ex.index < turn.turn_index]
        replay = replay_window(history, self.config.transcript_chars)
        system = "\n\n".join(s for s in (self.config.system_prompt, replay.summary_block()) if s)
        prompt = turn.prompt or json.dumps(turn.payload, ensure_ascii=False, default=str)
        messages = ([{"role": "system", "content": system}] if system else []) + replay.messages(prompt)
        body = {"model": self.config.models[mode], "messages": messages, "stream": True}
        if mode in self.config.efforts:
            body["reasoning_effort"] = self.config.efforts[mode]
        if mode in self.config.max_tokens:
            # after an attempt of this task was cut at its budget, the next asks for more (api_errors)
            body["max_tokens"] = token_budget(self.config.max_tokens[mode], store.cut_at(turn))
        if self.config.temperature is not None:
            body["temperature"] = self.config.temperature
        return body

    def send(self, turn: Turn, cancelled: Callable[[], bool]) -> Reply:
        self.start()
        self._refresh_key()
        if turn.mode not in self.config.modes:
            raise ProviderError("terminal", f"openai account {self.account} has no mode {turn.mode!r}", sent=False)
        try:
            if cancelled():
                raise _Cancelled()
            if self.probe_needed:
                self.probe(cancelled)
                if self.config.max_concurrency is None:
                    self.slots_known = False     # it may have restarted with another slot count
            if not self.slots_known:
                self.discover_slots(cancelled)
            fd = self.slots.acquire(self.config.slot_wait, cancelled)
            if fd is None:
                if cancelled():
                    raise _Cancelled()
                raise ProviderError("transient", f"all {self.slots.count} slot(s) of {self.root} busy for "
                                    f"{self.config.slot_wait:g}s", retry_after=SLOT_RETRY, sent=False)
        except _Cancelled:
            raise ProviderError("transient", "cancelled before sending", retry_after=0.0, sent=False) from None
        except ProviderError:
            self.probe_needed = True
            raise
        try:
            reply = self._exchange(turn, cancelled)
        except ProviderError:
            self.probe_needed = True
            raise
        finally:
            SlotPool.release(fd)
        return reply

    def _exchange(self, turn: Turn, cancelled: Callable[[], bool]) -> Reply:
        store = self.transcript()
        body = self.request_body(turn)
        url = f"{self.config.base_url}/chat/completions"
        # before the request leaves: a crash from here on may have reached the server (resend_note says so)
        store.mark_sent(conversation_key(turn), turn.turn_index, turn.prompt, task_id=turn.task_id,
                             attempt=turn.attempt, mode=turn.mode, model=body["model"])
        call = _Call("POST", url, self._headers(body=True), json.dumps(body).encode(), self.config.timeout,
                     stream=True)
        answer, decoder = Answer(), SSEDecoder()
        try:
            while not answer.done:
                try:
                    event = call.next(cancelled)
                except _Cancelled:
                    if call.connected:
                        raise ProviderError("unknown", "cancelled while the request was in flight; connection "
                                            "closed", sent=True) from None
                    raise ProviderError("transient", "cancelled before sending", retry_after=0.0,
                                        sent=False) from None
                kind = event[0]
                if kind == "refused":
                    raise ProviderError("transient", f"cannot connect to {self.config.base_url}: "
                                        f"{_describe(event[1])}", retry_after=DOWN_RETRY, sent=False)
                elif kind == "response":
                    self._whole(answer, event[1], event[2], event[3], body["model"], url)
                elif kind == "line":
                    for field, data in decoder.feed(event[1].decode("utf-8", "replace")):
                        self._absorb(answer, field, data)
                elif kind == "eof":
                    for field, data in decoder.flush():
                        self._absorb(answer, field, data)
                    if answer.done or answer.finish_reason:
                        break
                    raise ProviderError("transient", f"stream cut after {len(answer.text)} characters "
                                        "(no [DONE])", sent=True)
                elif kind == "error":
                    raise ProviderError("transient", f"connection lost after {len(answer.text)} characters: "
                                        f"{_describe(event[1])}", sent=True)
        finally:
            call.close()
        text = answer.text
        # the positive acceptance rule: a cut or empty completion is never delivered (nor recorded) as the answer
        unusable = unusable_completion(text, answer.finish_reason, answer.reasoning_chars, body.get("max_tokens"),
                                       self.account, self.config.max_tokens.get(turn.mode))
        if unusable is not None:
            if answer.finish_reason == "length" and "max_tokens" in body:
                store.note_cut(turn, body["max_tokens"])
            raise unusable
        meta = {"model": answer.model or body["model"], "mode": turn.mode, "finish_reason": answer.finish_reason}
        if "reasoning_effort" in body:
            meta["reasoning_effort"] = body["reasoning_effort"]
        if answer.usage:
            meta["usage"] = answer.usage
        if answer.reasoning_chars:
            meta["reasoning_chars"] = answer.reasoning_chars
        store.record_reply(conversation_key(turn), turn.turn_index, turn.prompt, text, **meta,
                                task_id=turn.task_id, attempt=turn.attempt)
        self.probe_needed = False
        return Reply(text, meta)

    def _absorb(self, answer: Answer, field: str, data: str) -> None:
        if field == "error":
            try:
                err = json.loads(data)
            except ValueError:
                err = {"message": data}
            raise classify_stream_error(err if isinstance(err, dict) else {"message": str(err)})
        try:
            objects = parse_data(data)
            for obj in objects:
                err = answer.add(obj)
                if err is not None:
                    raise classify_stream_error(err)
        except StreamError as exc:
            raise ProviderError("transient", f"{exc} after {len(answer.text)} characters", sent=True) from None

    def _whole(self, answer: Answer, status: int, headers, body: bytes, model: str, url: str) -> None:
        """A non-streamed answer: an error, or a server that ignored ``stream``."""
        if status != 200:
            raise classify_http(status, body, self._retry_after(headers), now=self.clock.world(), model=model,
                                url=url, account=self.account)
        try:
            err = answer.add(json.loads(body))
        except (ValueError, StreamError):
            raise ProviderError("transient", f"unreadable answer: {body[:120]!r}", sent=True) from None
        if err is not None:
            raise classify_stream_error(err)
        answer.done = True

    def configured_timeout(self, mode: str) -> float | None:
        """The account's ``timeout`` (the longest silence from the API), whatever the mode."""
        return float(self.config.timeout)

    def check(self) -> dict:
        """``GET /models`` (or ``/health``): reachable, which models, are ours among them."""
        self._refresh_key()
        never = lambda: False  # noqa: E731
        got = self._get(f"{self.config.base_url}/models", never)
        if got is None:
            return {"ok": False, "detail": f"server not reachable at {self.config.base_url}", "models": []}
        status, headers, body = got
        if status in (401, 403):
            raise classify_http(status, body, account=self.account)
        if status != 200:
            try:
                self.probe(never)
            except ProviderError as exc:
                if exc.error_class == "auth":
                    raise
                return {"ok": False, "detail": exc.message, "models": []}
            return {"ok": True, "detail": f"server up at {self.root} (no /models: {status})", "models": []}
        try:
            data = json.loads(body).get("data") or []
            served = [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]
        except (ValueError, AttributeError, TypeError):
            served = []
        wanted = sorted(set(self.config.models.values()))
        missing = [m for m in wanted if served and m not in served and f"{m}:latest" not in served]
        if missing:
            return {"ok": False, "models": served, "detail": f"model(s) {', '.join(missing)} not served at "
                    f"{self.config.base_url} (it has: {', '.join(served)})"}
        return {"ok": True, "models": served,
                "detail": f"{len(served)} model(s) at {self.config.base_url}; using {', '.join(wanted)}"}


def _status_field(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    return str(data.get("status", "")) if isinstance(data, dict) else ""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "no data from the server within the timeout"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    return f"{type(exc).__name__}: {exc}"[:300]
