"""Backend kind (``[accounts.NAME] backend = ...``) -> the Provider class that serves it.

Providers are imported lazily, by dotted path, only when a worker of that kind starts: a ``sim`` worker
must never import ``anthropic`` or ``playwright`` (nor pay for their import time), and a missing
optional dependency of one backend must not break the others.
"""
from __future__ import annotations

import importlib

from shared.config import BACKENDS, ConfigError
from shared.settings import SettingsError

# kind -> "module:Class"; kinds listed in shared.config.BACKENDS but absent here are not built yet
PROVIDERS: dict[str, str] = {
    "sim": "services.backends.sim:SimProvider",
    "claude": "services.backends.claude:ClaudeProvider",
    "openai": "services.backends.openai_compat:OpenAIProvider",
    "chatgpt": "services.backends.chatgpt:ChatGPTProvider",
    "gemini": "services.backends.gemini:GeminiProvider",
}


def provider_class(backend: str):
    """The Provider subclass for ``backend``; ConfigError when the kind is unknown or not available."""
    target = PROVIDERS.get(backend)
    if target is None:
        if backend in BACKENDS:
            raise ConfigError(f"backend {backend!r} is not implemented yet (available: {', '.join(PROVIDERS)})")
        raise ConfigError(f"unknown backend {backend!r} (known: {', '.join(BACKENDS)})")
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise ConfigError(f"backend {backend!r} is not implemented yet") from exc
        raise ConfigError(f"backend {backend!r} cannot be loaded: {exc}") from exc
    except ImportError as exc:
        raise ConfigError(f"backend {backend!r} cannot be loaded: {exc}") from exc
    return getattr(module, class_name)


def make_provider(account, clock, data_dir):
    """Build the provider of an :class:`shared.config.AccountConfig`. Settings errors are ConfigErrors
    (the worker then exits with ExitCode.CONFIG instead of crash-looping with a traceback)."""
    cls = provider_class(account.backend)
    settings = dict(account.settings, modes=list(account.modes))
    try:
        return cls(account.name, settings, clock, data_dir)
    except ValueError as exc:
        raise SettingsError(f"[accounts.{account.name}]", None, str(exc)) from exc


# kind -> the module whose ``parse_settings(settings, where)`` validates an account's own table (the same function
# its provider calls at start); the web kinds validate against their site file (web/settings.py)
SETTINGS: dict[str, str] = {
    "sim": "services.backends.sim",
    "claude": "services.backends.claude",
    "openai": "services.backends.openai_wire",
}
WEB = ("chatgpt", "gemini")
KEYED = ("claude", "openai")   # kinds whose workers read an API key (services/backends/secrets.py)


def check_settings(account) -> None:
    """Validate an account's own settings as its worker will at start, without starting anything (no
    browser, no connection, no file written): ``ops/up`` checks every account this way before it touches
    the running tree, so a bad time zone or setting fails there instead of leaving the program FATAL.
    Raises ConfigError naming the account. An API key's placement is checked (not inline, a key file
    readable and outside the repository); a key from a variable is not: the worker's environment is
    supervisord's, not the caller's (ops/supervisor_conf.py warns about that instead)."""
    provider_class(account.backend)   # the kind exists and its module loads
    settings = dict(account.settings, modes=list(account.modes))
    where = f"[accounts.{account.name}]"   # SettingsError names the table and the key (shared/settings.py)
    try:
        if account.backend in WEB:
            from services.backends.web.settings import parse_settings
            from services.backends.web.site import load_site
            parse_settings(settings, load_site(account.backend), where)
        else:
            importlib.import_module(SETTINGS[account.backend]).parse_settings(settings, where)
    except ValueError as exc:   # a site file that does not load
        raise SettingsError(f"[accounts.{account.name}]", None, str(exc)) from exc
    if account.backend in KEYED:
        from services.backends.secrets import load_api_key
        load_api_key(account.name, account.backend, settings, required=False, environ={})
