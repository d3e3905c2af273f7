"""The OpenAI-compatible chat API as data: account settings, the SSE stream, and failure classification.

Pure functions and small classes with no I/O, used by :mod:`services.backends.openai_compat` (the
provider, which owns sockets, slots and threads) and unit-tested on their own. The classification table
is in the provider's module docstring.
"""
from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from services.backends.api_errors import (
    billing_error,
    is_billing,
    length_cut,
    parse_retry_after,  # noqa: F401  (part of this module's API)
)
from services.backends.base import ProviderError
from shared.settings import Invalid, SettingsError, load, setting

MODES = ("standard", "deep")
EFFORTS = ("none", "minimal", "low", "medium", "high")
LOADING_RETRY = 10.0     # 503 "Loading model" without Retry-After
BUSY_RETRY = 5.0         # 503 queue full / 429 without Retry-After
_CONTEXT = re.compile(r"maximum context length|context length|context window|context size|too many tokens|"
                      r"context_length_exceeded|exceed_context_size|prompt is too long|input is too long|"
                      r"too long for the model", re.IGNORECASE)
_LOADING = re.compile(r"loading", re.IGNORECASE)


# --- settings -------------------------------------------------------------------------------------------

def _url(value: str) -> str:
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise Invalid(f"expected the server's OpenAI prefix, e.g. \"http://127.0.0.1:11434/v1\", got {value!r}")
    return value.rstrip("/")


def _model_name(value, name: str = "") -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"expected a non-empty model name{name}, got {value!r}")
    return value.strip()


def _effort(value, name: str = "") -> str:
    if value not in EFFORTS:
        raise Invalid(f"expected one of {', '.join(EFFORTS)}{name}, got {value!r}")
    return value


def _tokens(value, name: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10**7:
        raise Invalid(f"expected an integer in [1, 10000000]{name}, got {value!r}")
    return value


def _per_mode(check: Callable) -> Callable:
    """A value for every mode, or a table ``{standard = ..., deep = ...}`` of values per mode."""
    def parse(value):
        if isinstance(value, dict):
            bad = set(value) - set(MODES)
            if bad:
                raise Invalid(f"expected a table whose keys are modes ({', '.join(MODES)}), got {value!r}")
            return {mode: check(v, f" for {mode}") for mode, v in value.items()}
        return check(value)
    return parse


def _models(value) -> dict:
    if not value:
        raise Invalid(f'expected a table like {{standard = "...", deep = "..."}}, got {value!r}')
    return _per_mode(_model_name)(value)


@dataclass(frozen=True)
class Keys:
    """The ``[accounts.NAME]`` table of an ``openai`` account, each key declared once; resolved per mode
    into :class:`Settings` by :func:`parse_settings`."""

    base_url: str = setting(doc="the server's OpenAI prefix (required)", kind="str", required=True, parse=_url,
                            expected='an http(s) URL, e.g. "http://127.0.0.1:11434/v1"')
    model: str | None = setting(None, "the model of every mode (or models)", parse=_model_name,
                                expected="a non-empty model name")
    models: dict | None = setting(None, "a model per mode, {standard = ..., deep = ...} (or model)", kind="table",
                                  parse=_models, expected='a table like {standard = "...", deep = "..."}')
    reasoning_effort: object = setting({}, "a reasoning_effort for deep (or a table per mode); deep without a "
                                           "model of its own: high", parse=_per_mode(_effort),
                                       expected=f"one of {', '.join(EFFORTS)} (or a table per mode)")
    max_tokens: object = setting({}, "a max_tokens for every mode (or a table per mode); default: the server's",
                                 parse=_per_mode(_tokens), expected="an integer in [1, 10000000] (or a table per mode)")
    temperature: float | None = setting(None, "sampling temperature; default: the server's", kind="float", lo=0, hi=2)
    system_prompt: str = setting("", "a system prompt for every request")
    timeout: float = setting(600.0, "seconds per request", lo=0.1, hi=86400)
    transcript_chars: int = setting(24000, "replay budget of a conversation", lo=500, hi=10**8)
    max_concurrency: int | None = setting(None, "requests in flight on the server from every account using it",
                                          kind="int", lo=1, hi=1024)
    slot_wait: float = setting(30.0, "seconds to wait for a free slot", lo=0, hi=86400)
    api_key_env: str | None = setting(None, "the variable holding the key", kind="str", nonempty=True)
    api_key_file: str | None = setting(None, "the file holding the key", kind="str", nonempty=True)
    modes: tuple = setting(("standard",), "the account's modes", choices=MODES, min_items=1)

    def check(self):
        if (self.model is None) == (self.models is None):
            raise Invalid('needs exactly one of model = "NAME" or models = {standard = "...", deep = "..."}',
                          key="model")


@dataclass(frozen=True)
class Settings:
    base_url: str
    models: dict            # mode -> model name
    efforts: dict           # mode -> reasoning_effort (absent: not sent)
    max_tokens: dict        # mode -> int (absent: the server's default)
    temperature: float | None
    system_prompt: str
    timeout: float
    transcript_chars: int
    max_concurrency: int | None
    slot_wait: float
    modes: tuple


def parse_settings(settings: dict, where: str = "openai settings") -> Settings:
    """Validate an account's settings (see the module docstring) with :mod:`shared.settings`; raises its
    SettingsError naming the key. An inline ``api_key`` is left to :func:`secrets.load_api_key`, which
    explains where a key belongs."""
    table = {k: v for k, v in settings.items() if k != "api_key"} if isinstance(settings, dict) else settings
    keys = load(Keys, table, where)
    # Keys requires exactly one of model and models
    given: dict = {"standard": keys.model} if keys.model is not None else (keys.models or {})
    models = {}
    for mode in keys.modes:
        # deep falls back to the standard model (then it differs by reasoning effort only)
        name = given.get(mode) or (given.get("standard") if mode == "deep" else None)
        if name is None:
            raise SettingsError(where, "models", f"no model for mode {mode!r}")
        models[mode] = name
    efforts: dict = {"deep": "high"} if "deep" not in given else {}
    effort = keys.reasoning_effort
    efforts.update(effort if isinstance(effort, dict) else {"deep": effort})
    efforts = {mode: e for mode, e in efforts.items() if mode in keys.modes}
    tokens = keys.max_tokens
    return Settings(base_url=keys.base_url, models=models, efforts=efforts,
                    max_tokens=tokens if isinstance(tokens, dict) else {m: tokens for m in MODES},
                    temperature=keys.temperature, system_prompt=keys.system_prompt, timeout=keys.timeout,
                    transcript_chars=keys.transcript_chars, max_concurrency=keys.max_concurrency,
                    slot_wait=keys.slot_wait, modes=keys.modes)


def server_root(base_url: str) -> str:
    """Where /health, /props and /slots live: the base URL minus its OpenAI prefix (``/v1``)."""
    base = base_url.rstrip("/")
    return base[:-3] if base.endswith("/v1") else base


# --- the stream -----------------------------------------------------------------------------------------

class StreamError(Exception):
    """A chunk the parser cannot use (the answer would have a hole)."""


class SSEDecoder:
    """Server-sent events, line by line: ``feed`` returns the (field, data) events a line completes.

    Per the SSE spec, ``data:`` lines accumulate until a blank line dispatches them; comments (``:``) are
    keep-alives. llama.cpp has sent errors as an ``error:`` field, so that field is an event too."""

    def __init__(self):
        self._data: list[str] = []

    def feed(self, line: str) -> list[tuple[str, str]]:
        line = line.rstrip("\r\n")
        if not line:
            return self.flush()
        if line.startswith(":"):
            return []
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name == "error":
            return self.flush() + [("error", value)]
        return []

    def flush(self) -> list[tuple[str, str]]:
        if not self._data:
            return []
        data, self._data = "\n".join(self._data), []
        return [("data", data)]


def parse_data(data: str) -> list:
    """The JSON objects of one event's data (``"[DONE]"`` stays a string). Lenient about servers that
    send several ``data:`` lines without the blank line between; raises StreamError on anything else."""
    data = data.strip()
    if not data:
        return []
    if data == "[DONE]":
        return ["[DONE]"]
    try:
        return [json.loads(data)]
    except ValueError:
        pass
    out = []
    for part in data.split("\n"):
        part = part.strip()
        if part == "[DONE]":
            out.append(part)
        elif part:
            try:
                out.append(json.loads(part))
            except ValueError:
                raise StreamError(f"malformed stream chunk: {part[:120]!r}") from None
    return out


class Answer:
    """What the chunks of one completion add up to (streamed deltas or a whole ``message``)."""

    def __init__(self):
        self.parts: list[str] = []
        self.reasoning_chars = 0
        self.finish_reason: str | None = None
        self.model: str | None = None
        self.usage: dict | None = None
        self.done = False

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def add(self, obj) -> dict | None:
        """Absorb one chunk; returns the server's error object when the chunk is one."""
        if obj == "[DONE]":
            self.done = True
            return None
        if not isinstance(obj, dict):
            raise StreamError(f"unexpected stream chunk: {str(obj)[:120]!r}")
        if obj.get("error") is not None:
            err = obj["error"]
            return err if isinstance(err, dict) else {"message": str(err)}
        if isinstance(obj.get("model"), str):
            self.model = obj["model"]
        if isinstance(obj.get("usage"), dict):
            self.usage = obj["usage"]
        choices = obj.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            choice = choices[0]
            delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else choice.get("message")
            if isinstance(delta, dict):
                if isinstance(delta.get("content"), str):
                    self.parts.append(delta["content"])
                for key in ("reasoning_content", "reasoning"):     # thinking models: not the answer
                    if isinstance(delta.get(key), str):
                        self.reasoning_chars += len(delta[key])
            if isinstance(choice.get("finish_reason"), str):
                self.finish_reason = choice["finish_reason"]
        return None


# --- classification -------------------------------------------------------------------------------------

def error_message(body) -> str:
    """The human part of an error body: OpenAI/llama.cpp ``{"error": {"message"}}``, vLLM/ollama
    ``{"message"}`` or ``{"error": "..."}``, else the text itself (shortened)."""
    obj = body
    if isinstance(body, (bytes, str)):
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        try:
            obj = json.loads(text)
        except ValueError:
            return " ".join(text.split())[:500]
    if isinstance(obj, dict):
        err = obj.get("error", obj)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"][:500]
        if isinstance(err, str):
            return err[:500]
        if isinstance(obj.get("detail"), str):
            return obj["detail"][:500]
    return json.dumps(obj)[:500]


def classify_http(status: int, body, retry_after: float | None = None, *, model: str = "", url: str = "",
                  account: str = "", now: float | None = None) -> ProviderError:
    """The ProviderError for an HTTP error answer received before any token (see the module table).

    Every one is ``sent=False``: a status line before the first token is the server refusing the request,
    which it did not serve (an overload, a rate limit, a 5xx, a 4xx) — the quota unit is refunded and there
    is nothing to reconcile (see :mod:`services.backends.base`). ``now`` (world time) reads a spend limit's
    "regain access on <date>"; without it the billing wait is max(Retry-After, BILLING_RETRY)."""
    message = error_message(body)
    text = f"{status}: {message}"
    if _CONTEXT.search(message):
        return ProviderError("terminal", f"context overflow ({text}); the prompt must shrink", sent=False)
    if status in (401, 403):
        return ProviderError("auth", f"the server refused the API key ({text}); set api_key_env or "
                             f"api_key_file for accounts.{account}", sent=False)
    if status == 404:
        if "model" in message.lower():
            return ProviderError("terminal", f"model {model!r} is not served at {url} ({text}); fix model/models "
                                 f"of accounts.{account} in fano.toml (GET /models lists what it has)", sent=False)
        return ProviderError("terminal", f"{url} does not exist ({text}); check base_url of accounts.{account} "
                             f"(it usually ends in /v1)", sent=False)
    etype, code = _error_codes(body)
    # OpenAI's token rate limits may link the billing page ("add a payment method ... /account/billing"):
    # a code that says rate limit is a rate limit, whatever the text mentions
    if "rate_limit" not in f"{etype} {code}" and is_billing(status, etype, code, message):
        # the money is the whole account's: every mode cools, and a busy-server retry would only spend
        # another request on the same refusal
        return billing_error(text, message, float("inf") if now is None else now, wait=retry_after,
                             where="with the provider", sent=False)
    if status == 429:
        if retry_after is not None:
            return ProviderError("quota", f"rate limited ({text})", retry_after=retry_after, sent=False)
        return ProviderError("transient", f"server busy ({text})", retry_after=BUSY_RETRY, sent=False)
    if status == 503:
        default = LOADING_RETRY if _LOADING.search(message) else BUSY_RETRY
        what = "model loading" if _LOADING.search(message) else "server busy"
        return ProviderError("transient", f"{what} ({text})", retry_after=retry_after or default, sent=False)
    if status >= 500 or status in (408, 409, 425):
        return ProviderError("transient", f"server error ({text})", retry_after=retry_after, sent=False)
    return ProviderError("terminal", f"request refused ({text})", sent=False)


def _error_codes(body) -> tuple[str | None, str | None]:
    """``error.type`` and ``error.code`` of an error body (strings only), for :func:`is_billing`."""
    obj = body
    if isinstance(body, (bytes, str)):
        try:
            obj = json.loads(body)
        except ValueError:
            return None, None
    err = obj.get("error", obj) if isinstance(obj, dict) else None
    if not isinstance(err, dict):
        return None, None
    etype, code = err.get("type"), err.get("code")
    return (etype if isinstance(etype, str) else None, code if isinstance(code, str) else None)


def unusable_completion(text: str, finish_reason: str | None, reasoning_chars: int, max_tokens: int | None,
                        account: str = "", configured: int | None = None) -> ProviderError | None:
    """None when a finished completion is an answer; else why it is not (the positive acceptance rule: a
    completion is the answer only when the model finished it, ``finish_reason`` "stop" or none, with some
    text). Both failures are ``sent=True``: the server spent the tokens.

    - cut at the token limit (``finish_reason: "length"``), empty or not (a reasoning model that spent the
      whole budget thinking): :func:`~.api_errors.length_cut` — at the account's ``configured``
      max_tokens, transient (the next attempt asks for twice the budget); at a grown budget, or with no
      max_tokens set (the server's default cannot be grown), terminal, naming the setting to raise.
    - no text at all although the model stopped: transient, a new attempt may answer."""
    if finish_reason == "length":
        what = (f"all of it spent on reasoning ({reasoning_chars} characters) and no answer" if not text.strip()
                else f"the answer cut after {len(text)} characters")
        return length_cut(max_tokens, configured, what,
                          f"raise max_tokens (or lower reasoning_effort) of accounts.{account}")
    if not text.strip():
        return ProviderError("transient", f"the server finished ({finish_reason or 'no finish_reason'}) with no "
                             "answer text" + (f" after {reasoning_chars} characters of reasoning"
                                              if reasoning_chars else "") + "; not an answer", sent=True)
    return None


def classify_stream_error(err: dict) -> ProviderError:
    """An error the server sent inside the stream (after the request was accepted)."""
    message = error_message({"error": err})
    if _CONTEXT.search(message):
        return ProviderError("terminal", f"context overflow (in stream: {message}); the prompt must shrink")
    return ProviderError("transient", f"server error in stream: {message}", sent=True)
