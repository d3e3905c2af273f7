"""fanoctl commands that set an account up: ``backends login NAME`` and ``backends check NAME``
(cli/backends.py adds them to its group).

Both run the account's provider in this process, on the account's own settings and data directory
(the browser profile of a web account, the key of an API account from this shell's environment), so
they work with the tree down. Output never carries a secret: every text is passed through the key
redaction of :mod:`services.backends.secrets` on its way out.
"""
from __future__ import annotations

import click

from cli import render as R
from cli.app import ctl, fail, json_option, out, warn
from shared.errors import ExitCode

WEB_BACKENDS = ("chatgpt", "gemini")


def _provider(name: str):
    """The provider of account ``name``, built as its worker would build it."""
    from services.backends.registry import make_provider
    from shared.clock import Clock
    from shared.config import load_config
    config = load_config(ctl().config_path)
    account = config.account(name)   # ConfigError (one line, exit CONFIG) when unknown
    return account, make_provider(account, Clock.from_env(), config.data_dir)


def _provider_failure(name: str, backend: str, exc) -> None:
    from services.backends.secrets import redact
    hint = ""
    if exc.error_class == "auth":
        hint = (f"; sign in with: fanoctl backends login {name}" if backend in WEB_BACKENDS
                else "; check the API key (api_key_env / api_key_file)")
    elif exc.error_class == "quota" and exc.retry_after is not None:
        hint = f"; cooling down for about {exc.retry_after:.0f}s"
    fail(redact(f"{name}: {exc.error_class}: {exc.message}{hint}"), ExitCode.FAILURE)


@click.command("check")
@click.argument("name")
@json_option
def backends_check(name):
    """Run a cheap live check of an account (key valid, logged in, server up)."""
    from services.backends.base import ProviderError
    from services.backends.secrets import redact
    account, provider = _provider(name)
    try:
        provider.start()
        result = provider.check()
    except ProviderError as exc:
        _provider_failure(name, account.backend, exc)
    finally:
        try:
            provider.close()
        except Exception as exc:  # closing a half-started browser must not mask the check's answer
            warn(redact(f"{name}: closing the provider failed: {type(exc).__name__}: {exc}"))
    result = {"account": name, "backend": account.backend, **result}
    clean = {k: redact(v) if isinstance(v, str) else v for k, v in result.items()}
    out(clean, R.check_text)
    if not clean.get("ok"):
        raise click.exceptions.Exit(int(ExitCode.FAILURE))


@click.command("login")
@click.argument("name")
@click.option("--headless", is_flag=True, hidden=True,
              help="No window (tests only: nobody can sign in there, so it ends at the login timeout).")
@json_option
def backends_login(name, headless):
    """Sign an account in once: opens a visible browser on the account's profile (web accounts).

    The account's worker must not be using the profile: stop it first
    (``supervisorctl -c supervisord.conf stop backend-NAME``), sign in, close the browser, start it again.
    Exits 1 when no signed-in page showed (the window was closed first, or the login timeout passed).
    """
    from services.backends.base import ProviderError
    from services.backends.secrets import redact
    account, provider = _provider(name)
    report = {"account": name, "backend": account.backend}
    if account.backend == "sim":
        out(dict(report, ok=True, detail="a simulated account needs no sign-in"),
            f"{name}: a simulated account needs no sign-in")
        return
    if account.backend not in WEB_BACKENDS:
        out(dict(report, ok=True, detail="no interactive login: the key comes from the environment or "
                                         "api_key_file"),
            f"{name}: a {account.backend} account has no interactive login; its key comes from the "
            f"environment or api_key_file (see the README). Try: fanoctl backends check {name}")
        return
    # progress goes to stderr: stdout carries the result (JSON under --json)
    click.echo(f"{name}: opening a browser on the account's profile; sign in, then close the window", err=True)
    try:
        result = provider.login(headless=True) if headless else provider.login()
    except ProviderError as exc:
        _provider_failure(name, account.backend, exc)
    result = {**report, **(result or {"ok": False, "detail": "the provider reported nothing"})}
    clean = {k: redact(v) if isinstance(v, str) else v for k, v in result.items()}
    if ctl().json:
        out(clean, "")
        if not clean.get("ok"):   # like a failed check: the report on stdout, exit 1
            raise click.exceptions.Exit(int(ExitCode.FAILURE))
    elif not clean.get("ok"):
        fail(f"{name}: login failed: {clean.get('detail')}", ExitCode.FAILURE)
    else:
        click.echo(f"{name}: signed in ({clean.get('detail')}). If the account was paused after an auth "
                   f"failure: fanoctl backends resume {name}")
