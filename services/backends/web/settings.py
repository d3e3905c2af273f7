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

Every key is optional; an unknown key or a bad value raises ValueError (a config error at worker start).
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

MODES = ("standard", "deep")
DEFAULT_TIMEOUTS = {"standard": 1200.0, "deep": 3600.0}
DEFAULT_LAUNCH_ARGS = ("--disable-blink-features=AutomationControlled",)
KNOWN = {"url", "headless", "chromium", "timezone", "poll_interval", "timeout", "mode_labels",
         "bar_confirm_polls", "min_stable", "ready_timeout", "capacity_retry", "quota_retry",
         "reconcile_timeout", "login_timeout", "launch_args", "modes", "mode_retry", "progress_grace"}


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


def _seconds(value, key: str, lo: float = 0.0, hi: float = 1e7) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo < value <= hi \
            or not math.isfinite(value):
        raise ValueError(f"{key} must be a number of seconds in ({lo:g}, {hi:g}], got {value!r}")
    return float(value)


def find_chromium(path: str | None = None) -> str | None:
    """The Chromium to run: ``path`` if given, else ``chromium`` (or ``chromium-browser``) on PATH."""
    if path:
        return path if os.path.isfile(path) and os.access(path, os.X_OK) else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def parse_settings(settings: dict, site: SiteSpec) -> WebSettings:
    if not isinstance(settings, dict):
        raise ValueError(f"{site.name} settings must be a table")
    unknown = set(settings) - KNOWN
    if unknown:
        raise ValueError(f"unknown {site.name} setting(s): {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(sorted(KNOWN - {'modes'}))})")
    url = settings.get("url", site.url)
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
        raise ValueError(f"url must be an http(s) URL, got {url!r}")
    headless = settings.get("headless", True)
    if not isinstance(headless, bool):
        raise ValueError("headless must be true or false")
    chromium_setting = settings.get("chromium")
    if chromium_setting is not None and not isinstance(chromium_setting, str):
        raise ValueError("chromium must be a path")
    chromium = find_chromium(chromium_setting)
    if chromium is None:
        raise ValueError(f"chromium {chromium_setting!r} is not an executable file" if chromium_setting else
                         "no chromium on PATH: install it (apt-get install chromium) or set chromium = PATH")
    tz_name = settings.get("timezone")
    if tz_name is None:
        tz = dt.datetime.now().astimezone().tzinfo
    else:
        try:
            tz = ZoneInfo(tz_name)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ValueError(f"timezone must be an IANA zone name such as \"Europe/Paris\", got {tz_name!r}") \
                from None
    timeout = settings.get("timeout", {})
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        timeout = {m: timeout for m in MODES}
    if not isinstance(timeout, dict) or set(timeout) - set(MODES):
        raise ValueError("timeout must be seconds or a table {standard = s, deep = s}")
    timeouts = {m: _seconds(timeout.get(m, DEFAULT_TIMEOUTS[m]), f"timeout.{m}") for m in MODES}
    labels_in = settings.get("mode_labels", {})
    if not isinstance(labels_in, dict) or set(labels_in) - set(MODES) or \
            not all(isinstance(v, str) and v.strip() for v in labels_in.values()):
        raise ValueError("mode_labels must be a table {standard = \"...\", deep = \"...\"} of non-empty strings")
    labels = {m: labels_in.get(m, site.modes[m].label) for m in MODES}
    polls = settings.get("bar_confirm_polls", 3)
    if isinstance(polls, bool) or not isinstance(polls, int) or not 1 <= polls <= 100:
        raise ValueError("bar_confirm_polls must be an integer in [1, 100]")
    min_stable = settings.get("min_stable", 1.2)
    if isinstance(min_stable, bool) or not isinstance(min_stable, (int, float)) or not 0 <= min_stable <= 600:
        raise ValueError("min_stable must be seconds in [0, 600]")
    args = settings.get("launch_args", list(DEFAULT_LAUNCH_ARGS))
    if not isinstance(args, list) or not all(isinstance(a, str) and a.startswith("--") for a in args):
        raise ValueError("launch_args must be a list of --flags")
    if any(a.startswith("--user-data-dir") for a in args):
        raise ValueError("launch_args must not set --user-data-dir (each account has its own profile)")
    reconcile = settings.get("reconcile_timeout")
    modes = settings.get("modes", ["standard"])
    if not isinstance(modes, (list, tuple)) or not modes or any(m not in MODES for m in modes):
        raise ValueError(f"modes must be a non-empty list of {', '.join(MODES)}")
    return WebSettings(
        url=url.rstrip("/"), headless=headless, chromium=chromium, timezone=tz, timezone_name=tz_name,
        poll_interval=_seconds(settings.get("poll_interval", 1.0), "poll_interval", hi=60),
        timeouts=timeouts, labels=labels, gate=GateConfig(polls, float(min_stable)),
        ready_timeout=_seconds(settings.get("ready_timeout", 30.0), "ready_timeout", hi=600),
        capacity_retry=_seconds(settings.get("capacity_retry", 300.0), "capacity_retry"),
        quota_retry=_seconds(settings.get("quota_retry", 3600.0), "quota_retry"),
        mode_retry=_seconds(settings.get("mode_retry", 21600.0), "mode_retry"),
        progress_grace=_seconds(settings.get("progress_grace", site.progress_grace), "progress_grace", hi=3600),
        reconcile_timeout=None if reconcile is None else _seconds(reconcile, "reconcile_timeout"),
        login_timeout=_seconds(settings.get("login_timeout", 900.0), "login_timeout"),
        launch_args=tuple(args), modes=tuple(modes))
