"""``fanoctl backends check`` and ``fanoctl backends login`` for a web account: the operator's two ways to
look at the site through the account's own browser profile (a mixin of :class:`~.provider.WebProvider`,
which owns the profile, the browser thread and the page classification these use)."""
from __future__ import annotations

import os
import sys
import time

from services.backends.base import ProviderError
from services.backends.web.host import Host
from services.backends.web.page import SiteProblem, playwright_error


class OperatorSession(Host):
    """check() and login() of a :class:`~.provider.WebProvider`."""

    # --- check / login -------------------------------------------------------------------------------------

    def check(self) -> dict:
        """Open the site headless: ok when the composer and the first control of each configured mode (the
        model picker, Tools) show on the idle page; not ok, with a screenshot, when one is missing (the
        layout changed); ProviderError auth at a login wall or a limit notice."""
        owned = self.lock.held
        if not self._own_profile():
            return {"ok": False, "busy": True,
                    "detail": f"the profile is in use by pid {self.lock.holder()} (the account's worker is "
                              "running; it checks the page on every request)"}
        try:
            return self.host.run(self._check)
        finally:
            if not owned and not self._started:
                self.close()

    def _check(self, host) -> dict:
        if not host.launched:
            self._headless_override = True   # a check never opens a window
        try:
            chat = self._chat(host)
        finally:
            self._headless_override = None
        try:
            chat.goto(chat.new_chat_url, self.cfg.ready_timeout)
            s = chat.wait_ready(self.cfg.ready_timeout)
            self._raise_blocking(s, sent=False)
            missing = chat.missing_controls({m: self.site.modes[m] for m in self.cfg.modes})
        except SiteProblem as problem:
            raise self._problem_error(chat, problem, sent=False) from None
        except playwright_error() as exc:
            self._recycle(host)
            raise ProviderError("transient", f"cannot open {chat.new_chat_url}: {exc}"[:1000], sent=False) from None
        if missing:
            shot = self._screenshot(chat, "layout")
            return {"ok": False, "url": s.url,
                    "detail": f"signed in, but the page layout may have changed: {'; '.join(missing)}"
                              + (f" (screenshot: {shot})" if shot else "")}
        return {"ok": True, "detail": f"signed in: the composer and the mode controls show at {s.url}",
                "url": s.url}

    def login(self, headless: bool = False) -> dict:
        """Open the site in a headed browser on the account's profile for a person to sign in; return when
        a signed-in page shows (twice in a row) or the person closes the browser. Refused while the
        account's worker holds the profile. (``headless`` exists for tests only.)"""
        if not headless and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise ProviderError("terminal", "login needs a screen (no DISPLAY): run it on a desktop session, "
                                "or over `ssh -X`", sent=False)
        owned = self.lock.held
        if not self._own_profile():
            raise ProviderError("terminal", f"the worker of {self.account} is running and holds its browser "
                                f"profile (pid {self.lock.holder()}): pause it (`fanoctl backends pause "
                                f"{self.account}`) and stop its program (`supervisorctl stop backend-"
                                f"{self.account}`), then run login again", sent=False)
        try:
            return self.host.run(self._login, headless)
        finally:
            if not owned and not self._started:
                self.close()

    def _login(self, host, headless: bool) -> dict:
        host.close_browser()
        self._headless_override = headless
        try:
            chat = self._chat(host)
            chat.goto(chat.new_chat_url, self.cfg.ready_timeout)
            # stderr: stdout carries the command's result (JSON under --json)
            print(f"Sign in to {self.site.name} in the browser window ({chat.new_chat_url}); this returns once "
                  f"the chat page shows, or when you close the window.", file=sys.stderr, flush=True)
            deadline = time.monotonic() + self.cfg.login_timeout
            seen = 0
            while time.monotonic() < deadline:
                if not host.launched:
                    return {"ok": False, "detail": "the browser was closed before a signed-in page showed; "
                                                   f"`fanoctl backends check {self.account}` tells"}
                try:
                    s = chat.sample()
                except playwright_error():
                    s = None   # navigating, or the window is closing
                seen = seen + 1 if s is not None and s.composer and not s.login else 0
                if s is not None and seen >= 2:
                    return {"ok": True, "detail": f"signed in: the composer shows at {s.url}"}
                time.sleep(0.5)
            return {"ok": False, "detail": f"no signed-in page within {self.cfg.login_timeout:g}s"}
        finally:
            host.close_browser()
            self._headless_override = None
