"""The settings of a web chat account (its ``[accounts.NAME]`` table in fano.toml), validated.

::

    [accounts.chatgpt-pro]
    backend = "chatgpt"                 # or "gemini"
    modes = ["standard", "deep"]        # deep = ChatGPT Pro / Gemini Deep Think
    url = "https://chatgpt.com"         # base URL (default: the real site; tests use the stand-in)
    headless = true                     # the worker's browser; `fanoctl backends login` is always headed
    chromium = "/usr/bin/chromium"      # default: `chromium` on PATH
    timezone = "Europe/Paris"           # how the site shows reset times (default: this machine's zone)
    poll_interval = 1.0                 # seconds between two looks at the page
    timeout = { standard = 1200, deep = 3600 }   # seconds per mode before the turn is left to reconcile
    mode_labels = { deep = "Pro" }      # the UI's name of each mode, when the site renames it
    bar_confirm_polls = 3               # completion gate (docs/providers.md § Reply completion)
    min_stable = 1.2                    # seconds the reply must stay unchanged
    ready_timeout = 30                  # seconds for the page/composer to show
    capacity_retry = 300                # seconds before retrying after "a lot of people are using ..."
    quota_retry = 3600                  # cool-down when a limit message names no reset time
    mode_retry = 21600                  # cool-down of the deep mode alone when the page does not offer or
                                        # apply it (option missing, disabled, or read back differently)
    progress_grace = 90                 # seconds after sending within which the page must show a sign of
                                        # work (default: the site file's); else the layout changed
    reconcile_timeout = 3600            # seconds reconcile waits for a reply still generating
    login_timeout = 900                 # seconds `fanoctl backends login` waits for a signed-in page
    launch_args = ["--disable-blink-features=AutomationControlled"]

Every key is optional; each is declared once in :class:`WebKeys` below, and an unknown key or a bad value
raises :class:`shared.settings.SettingsError` (a config error at worker start).
"""
from __future__ import annotations

import datetime as dt
import math
import os
import shutil
from dataclasses import dataclass
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.backends.web.gate import GateConfig
from services.backends.web.site import SiteSpec
from shared.settings import Invalid, SettingsError, load, setting

MODES = ("standard", "deep")
DEFAULT_TIMEOUTS = {"standard": 1200.0, "deep": 3600.0}
DEFAULT_LAUNCH_ARGS = ("--disable-blink-features=AutomationControlled",)
@dataclass(frozen=True)
class WebSettings:
    url: str
    headless: bool
    chromium: str
    timezone: dt.tzinfo
    timezone_name: str | None      # given to the browser too, so the site shows times in that zone
    poll_interval: float
    timeouts: dict
    labels: dict
    gate: GateConfig
    ready_timeout: float
    capacity_retry: float
    quota_retry: float
    mode_retry: float
    progress_grace: float
    reconcile_timeout: float | None
    login_timeout: float
    launch_args: tuple
    modes: tuple


def find_chromium(path: str | None = None) -> str | None:
    """The Chromium to run: ``path`` if given, else ``chromium`` (or ``chromium-browser``) on PATH."""
    if path:
        return path if os.path.isfile(path) and os.access(path, os.X_OK) else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _url(value: str) -> str:
    if urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).netloc:
        raise Invalid(f"expected an http(s) URL, got {value!r}")
    return value.rstrip("/")


def _zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise Invalid(f"expected an IANA zone name such as \"Europe/Paris\", got {name!r}") from None
    return name


def _timeout(value) -> dict:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = {m: value for m in MODES}
    if not isinstance(value, dict) or set(value) - set(MODES):
        raise Invalid(f"expected seconds or a table {{standard = s, deep = s}}, got {value!r}")
    out = {}
    for mode, seconds in value.items():
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= 1e7 \
                or not math.isfinite(seconds):
            raise Invalid(f"expected a number of seconds in (0, 1e+07], got {seconds!r}", key=f"timeout.{mode}")
        out[mode] = float(seconds)
    return out


def _labels(value: dict) -> dict:
    if set(value) - set(MODES) or not all(isinstance(v, str) and v.strip() for v in value.values()):
        raise Invalid(f'expected a table {{standard = "...", deep = "..."}} of non-empty strings, got {value!r}')
    return value


def _launch_args(value: tuple) -> tuple:
    if not all(a.startswith("--") for a in value):
        raise Invalid(f"expected a list of --flags, got {list(value)!r}")
    if any(a.startswith("--user-data-dir") for a in value):
        raise Invalid("must not set --user-data-dir (each account has its own profile)")
    return value


def _seconds(default: float | None, doc: str, hi: float = 1e7):
    return setting(default, doc, kind="float", lo=0, lo_open=True, hi=hi)


@dataclass(frozen=True)
class WebKeys:
    """A web chat account's ``[accounts.NAME]`` table, each key declared once (the module docstring has an
    example); :func:`parse_settings` resolves it against the site file into :class:`WebSettings`."""

    url: str = setting(doc="the site's base URL (default: the site file's)", kind="str", parse=_url,
                       required=True, shown="the site file's", expected="an http(s) URL")
    headless: bool = setting(True, "the worker's browser; fanoctl backends login is always headed")
    chromium: str | None = setting(None, "the browser (default: chromium on PATH)", kind="str",
                                   expected="a path")
    timezone: str | None = setting(None, "how the site shows reset times (default: this machine's zone)",
                                   kind="str", parse=_zone, expected="an IANA zone name such as \"Europe/Paris\"")
    poll_interval: float = _seconds(1.0, "seconds between two looks at the page", hi=60)
    timeout: dict = setting(dict(DEFAULT_TIMEOUTS), "seconds per mode before the turn is left to reconcile "
                                                    "(a number applies to every mode)", parse=_timeout,
                            expected="seconds or a table {standard = s, deep = s}")
    mode_labels: dict = setting({}, "the UI's name of each mode, when the site renames it", kind="table",
                                parse=_labels, expected='a table {standard = "...", deep = "..."} of non-empty strings')
    bar_confirm_polls: int = setting(3, "completion gate: polls the reply must look finished", lo=1, hi=100)
    min_stable: float = setting(1.2, "seconds the reply must stay unchanged", lo=0, hi=600)
    ready_timeout: float = _seconds(30.0, "seconds for the page/composer to show", hi=600)
    capacity_retry: float = _seconds(300.0, "seconds before retrying after \"a lot of people are using ...\"")
    quota_retry: float = _seconds(3600.0, "cool-down when a limit message names no reset time")
    mode_retry: float = _seconds(21600.0, "cool-down of the deep mode alone when the page does not offer or "
                                          "apply it")
    progress_grace: float = setting(doc="seconds after sending within which the page must show a sign of work "
                                        "(default: the site file's)", kind="float", lo=0, lo_open=True, hi=3600,
                                    required=True, shown="the site file's")
    reconcile_timeout: float | None = _seconds(None, "seconds reconcile waits for a reply still generating "
                                                     "(default: the mode's timeout)")
    login_timeout: float = _seconds(900.0, "seconds fanoctl backends login waits for a signed-in page")
    launch_args: tuple = setting(DEFAULT_LAUNCH_ARGS, "browser flags", kind="strings", parse=_launch_args,
                                 expected="a list of --flags")
    modes: tuple = setting(("standard",), "the account's modes", choices=MODES, min_items=1)


def parse_settings(settings: dict, site: SiteSpec, where: str | None = None) -> WebSettings:
    """Validate a web account's settings with :mod:`shared.settings` (raises its SettingsError naming the
    key), resolved against the site file: its URL, progress grace and mode labels are the defaults."""
    where = where or f"{site.name} settings"
    keys = load(WebKeys, settings, where, defaults={"url": site.url, "progress_grace": site.progress_grace})
    chromium = find_chromium(keys.chromium)
    if chromium is None:
        raise SettingsError(where, "chromium", f"{keys.chromium!r} is not an executable file" if keys.chromium else
                            "no chromium on PATH: install it (apt-get install chromium) or set chromium = PATH")
    tz = (dt.datetime.now().astimezone().tzinfo or dt.UTC) if keys.timezone is None else ZoneInfo(keys.timezone)
    return WebSettings(
        url=keys.url.rstrip("/"), headless=keys.headless, chromium=chromium, timezone=tz,
        timezone_name=keys.timezone, poll_interval=keys.poll_interval,
        timeouts={**DEFAULT_TIMEOUTS, **keys.timeout},
        labels={m: keys.mode_labels.get(m, site.modes[m].label) for m in MODES},
        gate=GateConfig(keys.bar_confirm_polls, keys.min_stable), ready_timeout=keys.ready_timeout,
        capacity_retry=keys.capacity_retry, quota_retry=keys.quota_retry, mode_retry=keys.mode_retry,
        progress_grace=float(keys.progress_grace), reconcile_timeout=keys.reconcile_timeout,
        login_timeout=keys.login_timeout, launch_args=keys.launch_args, modes=keys.modes)
