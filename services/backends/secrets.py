"""API keys for the real providers: where they come from, and how they stay out of logs and records.

An account names its key, never contains it::

    [accounts.claude-main]
    backend = "claude"
    api_key_env = "ANTHROPIC_API_KEY"          # read from the worker's environment (the default), or
    api_key_file = "~/.config/fano/claude.key" # a file outside the repository, first line = the key

A key found inline in fano.toml (``api_key = ...``) is refused: the configuration file is meant to be
committed and shown. A key file inside the checkout is refused for the same reason.

The value travels as a :class:`Secret`, whose ``str``/``repr`` are redacted, so an accidental
``log.info("%s", settings)`` or an exception message prints ``Secret('sk-…7f3a')``-style stubs, never the
key. A key file is read again before each request (:class:`KeySource`), so a corrected file is used
after ``fanoctl backends resume`` without a restart. :func:`install_log_redaction` is a last line of defence: a logging
filter that blanks every known key from every record of the process.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from shared.config import ConfigError
from shared.settings import SettingsError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ENV = {"claude": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}
REDACTED = "[redacted]"

_known: set[str] = set()   # every key this process has loaded (for the log filter)


class KeyFileUnreadable(ConfigError):
    """``api_key_file`` is missing, empty or unreadable: a condition the operator fixes in place (the file
    is read again before each request), so a provider reports it as ``auth`` per request (the account
    pauses) instead of failing its worker's start."""


class Secret:
    """A string that does not print itself. ``reveal()`` is the one way to get the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value
        if len(value) >= 8:
            _known.add(value)

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret(" + REDACTED + ")"

    __str__ = __repr__

    def __reduce__(self):  # never pickled/msgpacked by accident into a task record
        raise TypeError("a Secret cannot be serialized")


def load_api_key(account: str, backend: str, settings: dict, *, required: bool = True,
                 environ: Mapping[str, str] | None = None) -> Secret | None:
    """The account's key from ``api_key_file`` or ``api_key_env`` (default per backend kind).

    ConfigError (with the account named, the key never shown) when it is inline, inside the repository,
    unreadable, or missing while ``required``."""
    env_vars: Mapping[str, str] = os.environ if environ is None else environ
    if "api_key" in settings:
        raise SettingsError(f"[accounts.{account}]", "api_key", "do not put api_key in the configuration file; use "
                            "api_key_env (an environment variable) or api_key_file (outside the repository)")
    path = settings.get("api_key_file")
    if path:
        file = Path(str(path)).expanduser().resolve()
        if file == REPO_ROOT or REPO_ROOT in file.parents:
            raise SettingsError(f"[accounts.{account}]", "api_key_file", f"{file} is inside the repository; keep "
                                f"keys outside it (e.g. ~/.config/fano/{account}.key)")
        try:
            value = file.read_text(encoding="utf-8").strip().splitlines()[0].strip()
        except (OSError, IndexError, UnicodeDecodeError) as exc:
            raise KeyFileUnreadable(f"[accounts.{account}] api_key_file: cannot read {file}: "
                                    f"{type(exc).__name__}") from None
        return Secret(value)
    env = settings.get("api_key_env") or DEFAULT_ENV.get(backend)
    value = env_vars.get(env, "").strip() if env else ""
    if value:
        return Secret(value)
    if required:
        raise SettingsError(f"[accounts.{account}]", "api_key_env", f"no API key: set the environment variable "
                            f"{env} or api_key_file")
    return None


class KeySource:
    """Where an account's key comes from, read again whenever it is needed.

    A key in ``api_key_file`` is re-read at every :meth:`current` (a few bytes; the operator who fixed a
    refused key and ran ``fanoctl backends resume`` expects the next request to carry the new key, with
    no restart). A key from the environment is fixed for the life of the process (the environment
    is). Raises ConfigError like :func:`load_api_key`."""

    def __init__(self, account: str, backend: str, settings: dict, *, required: bool = True,
                 environ: Mapping[str, str] | None = None):
        self.account, self.backend, self.settings = account, backend, dict(settings or {})
        self.required, self.environ = required, environ
        self.from_file = bool(self.settings.get("api_key_file"))
        self._env_key: Secret | None = None
        self._loaded = False

    def current(self) -> Secret | None:
        if self.from_file or not self._loaded:
            key = load_api_key(self.account, self.backend, self.settings, required=self.required,
                               environ=self.environ)
            if self.from_file:
                return key
            self._env_key, self._loaded = key, True
        return self._env_key


def redact(text: str) -> str:
    """``text`` with every key this process knows replaced by a marker."""
    for value in _known:
        if value in text:
            text = text.replace(value, REDACTED)
    return text


class RedactingFilter(logging.Filter):
    """Blanks known keys from log records (message and arguments, after formatting)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _known:
            message = record.getMessage()
            cleaned = redact(message)
            if cleaned != message:
                record.msg, record.args = cleaned, None
            if record.exc_info and not record.exc_text:
                # the formatter uses exc_text when set: format the traceback here, cleaned
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = redact(record.exc_text)
        return True


def install_log_redaction() -> None:
    """Attach the filter to every handler of the root logger (idempotent)."""
    root = logging.getLogger()
    for handler in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
