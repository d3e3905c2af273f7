"""The OpenAI-compatible chat API as data: account settings, the SSE stream, and failure classification.

Pure functions and small classes with no I/O, used by :mod:`services.backends.openai_compat` (the
provider, which owns sockets, slots and threads) and unit-tested on their own. The classification table
is in the provider's module docstring.
"""
from __future__ import annotations

import json
import math
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from services.backends.base import ProviderError
from services.backends.retry_after import parse_retry_after  # noqa: F401  (part of this module's API)

MODES = ("standard", "deep")
EFFORTS = ("none", "minimal", "low", "medium", "high")
LOADING_RETRY = 10.0     # 503 "Loading model" without Retry-After
BUSY_RETRY = 5.0         # 503 queue full / 429 without Retry-After
_KNOWN = {"base_url", "model", "models", "reasoning_effort", "max_tokens", "temperature", "system_prompt",
          "timeout", "transcript_chars", "max_concurrency", "slot_wait", "api_key_env", "api_key_file", "modes"}
_CONTEXT = re.compile(r"maximum context length|context length|context window|context size|too many tokens|"
                      r"context_length_exceeded|exceed_context_size|prompt is too long|input is too long|"
                      r"too long for the model", re.IGNORECASE)
_LOADING = re.compile(r"loading", re.IGNORECASE)


# --- settings -------------------------------------------------------------------------------------------

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


def _number(value, name: str, lo: float, hi: float = math.inf, integer: bool = False):
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or not lo <= value <= hi:
        kind = "an integer" if integer else "a number"
        raise ValueError(f"openai setting {name} must be {kind} in [{lo}, {hi}], got {value!r}")
    return value


def _per_mode(value, name: str, check: Callable, scalar_modes: tuple) -> dict:
    """A scalar applies to ``scalar_modes``; a table gives a value per mode."""
    if isinstance(value, dict):
        bad = set(value) - set(MODES)
        if bad:
            raise ValueError(f"openai setting {name}: modes are {', '.join(MODES)}, got {', '.join(sorted(bad))}")
        return {mode: check(v, f"{name}.{mode}") for mode, v in value.items()}
    return {mode: check(value, name) for mode in scalar_modes}


def _model_name(value, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"openai setting {name} must be a non-empty model name, got {value!r}")
    return value.strip()


def _effort(value, name: str) -> str:
    if value not in EFFORTS:
        raise ValueError(f"openai setting {name} must be one of {', '.join(EFFORTS)}, got {value!r}")
    return value


def parse_settings(settings: dict) -> Settings:
    """Validate an account's settings (see the module docstring). Raises ValueError naming the key."""
    if not isinstance(settings, dict):
        raise ValueError("openai settings must be a table")
    unknown = set(settings) - _KNOWN - {"api_key"}   # api_key inline: secrets.load_api_key explains
    if unknown:
        raise ValueError(f"unknown openai setting(s): {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(sorted(_KNOWN))})")
    base = settings.get("base_url")
    parts = urllib.parse.urlsplit(base) if isinstance(base, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise ValueError(f"openai setting base_url is required: the server's OpenAI prefix, e.g. "
                         f"\"http://127.0.0.1:11434/v1\" (got {base!r})")
    modes = settings.get("modes", ["standard"])
    if not isinstance(modes, (list, tuple)) or not modes or any(m not in MODES for m in modes):
        raise ValueError(f"openai setting modes must be a non-empty list of {', '.join(MODES)}")
    if ("model" in settings) == ("models" in settings):
        raise ValueError("openai settings need exactly one of model = \"NAME\" or models = {standard = \"...\", "
                         "deep = \"...\"}")
    if "model" in settings:
        given = {"standard": _model_name(settings["model"], "model")}
    else:
        table = settings["models"]
        if not isinstance(table, dict) or not table:
            raise ValueError("openai setting models must be a table like {standard = \"...\", deep = \"...\"}")
        given = _per_mode(table, "models", _model_name, ())
    models = {}
    for mode in modes:
        # deep falls back to the standard model (then it differs by reasoning effort only)
        name = given.get(mode) or (given.get("standard") if mode == "deep" else None)
        if name is None:
            raise ValueError(f"openai setting models has no model for mode {mode!r}")
        models[mode] = name
    efforts = {"deep": "high"} if "deep" not in given else {}
    efforts.update(_per_mode(settings.get("reasoning_effort", {}), "reasoning_effort", _effort, ("deep",)))
    efforts = {mode: effort for mode, effort in efforts.items() if mode in modes}
    max_tokens = _per_mode(settings.get("max_tokens", {}), "max_tokens",
                           lambda v, n: _number(v, n, 1, 10**7, integer=True), MODES)
    temperature = settings.get("temperature")
    if temperature is not None:
        temperature = float(_number(temperature, "temperature", 0.0, 2.0))
    system_prompt = settings.get("system_prompt", "")
    if not isinstance(system_prompt, str):
        raise ValueError("openai setting system_prompt must be a string")
    concurrency = settings.get("max_concurrency")
    if concurrency is not None:
        concurrency = _number(concurrency, "max_concurrency", 1, 1024, integer=True)
    for key in ("api_key_env", "api_key_file"):
        if key in settings and (not isinstance(settings[key], str) or not settings[key]):
            raise ValueError(f"openai setting {key} must be a non-empty string")
    return Settings(base_url=base.rstrip("/"), models=models, efforts=efforts, max_tokens=max_tokens,
                    temperature=temperature, system_prompt=system_prompt,
                    timeout=float(_number(settings.get("timeout", 600), "timeout", 0.1, 86400)),
                    transcript_chars=_number(settings.get("transcript_chars", 24000), "transcript_chars", 500,
                                             10**8, integer=True),
                    max_concurrency=concurrency,
                    slot_wait=float(_number(settings.get("slot_wait", 30), "slot_wait", 0, 86400)),
                    modes=tuple(modes))


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
                  account: str = "") -> ProviderError:
    """The ProviderError for an HTTP error answer received before any token (see the module table).

    Every one is ``sent=False``: a status line before the first token is the server refusing the request,
    which it did not serve (an overload, a rate limit, a 5xx, a 4xx) — the quota unit is refunded and there
    is nothing to reconcile (see :mod:`services.backends.base`)."""
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


def classify_stream_error(err: dict) -> ProviderError:
    """An error the server sent inside the stream (after the request was accepted)."""
    message = error_message({"error": err})
    if _CONTEXT.search(message):
        return ProviderError("terminal", f"context overflow (in stream: {message}); the prompt must shrink")
    return ProviderError("transient", f"server error in stream: {message}", sent=True)
