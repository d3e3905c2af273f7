"""WebProvider: the Provider of a consumer chat web UI (ChatGPT, Gemini), shared by both sites.

One worker process per account drives one persistent Chromium profile (``<data_dir>/backends/<account>/
profile``), one request at a time. A turn goes::

    open (new chat, or the conversation's URL for a follow-up) -> wait for the composer
      -> select the mode and read it back (not confirmed: nothing is sent)
      -> type -> mark the turn sent (durable) -> submit
      -> the moment the URL becomes /c/<id> (/app/<id>): record it (durable), before waiting
      -> poll: notices (limits, capacity, errors, login wall), the completion gate, signs of progress
      -> reply text (innerText of the reply) -> transcript

Notices are read where the site shows them — banners, toasts, dialogs, the turn's error container, the
title — with the site file's ``[messages]``. The reply itself is a notice only when the site renders its
refusals as the reply (Gemini) and the reply starts with one of the whole phrases of ``[reply_notices]``:
a genuine short answer that mentions "quota" or "an error occurred" is delivered as an answer.

Failure classes (base.py; what each makes the broker do is in runner.py):

==========================================  ==========  =====================================================
what happened                               class       why
==========================================  ==========  =====================================================
limit message ("until 2:56 PM", "in 35 m")  quota       the parsed reset is authoritative; no reset: quota_retry
capacity ("a lot of people are using Pro    transient   overload is a short retry (capacity_retry), no cool-down;
right now", in a banner or as the reply)                sent=False: nothing was served, the unit is refunded
                                                        and no attempt burned (broker max_refusals bounds it)
"something went wrong", "wasn't able to     transient   the site failed this turn; a new attempt may succeed.
finish"                                                 sent=False (refunded) when the turn shows no output of
                                                        its own or the notice says it "didn't count"
login wall, human check (their controls,    auth        a person must sign in: account paused; the reason
or a page without composer whose text is                starts "sign-in needed:" / "human check:" (shown by
the sign-in page / a check, or another                  backends ls and queue why), within seconds, not
host)                                                   "the layout may have changed" after ready_timeout
a limit notice that comes up when the       quota       sent=False: e.g. Gemini's Deep Think snack bar over
mode is picked (or covers a control a                   the composer: the mode cools until the stated time,
step must click)                                        not a browser error retried in a loop
deep turn answered in another mode (a       quota       sent=True; the broker refunds the deep unit and cools
"switched you to the latest default                     the deep mode for mode_retry; the task waits or falls
model" notice, the mode control reads                   back to standard as it allows; never delivered as deep
"Auto"/"Fast" after the reply, or the                   (served.mode is the mode the page confirmed)
mode cannot be read back at all)
a reconciled deep turn the reopened page    quota       sent=False (this lease sent nothing): deep cools; the
does not confirm (its model label, the                  attempt is settled, so the next reconcile sends it
site file's turn_mode, does not name the                afresh instead of finding it again. A confirmed one
mode, there is none, or a downgrade                     is delivered with meta.mode = deep (served.mode).
notice shows)
deep mode not confirmed (option missing,    quota       sent=False, retry_after=mode_retry (6 h): the broker
disabled, or read back differently)                     cools down the deep mode of this account only (its
                                                        cool-downs are per mode), so standard work goes on;
                                                        the task waits (or falls back to standard if it
                                                        allows that) with no attempt burned, its unit
                                                        refunded; the reason names what the page shows, and
                                                        a screenshot is saved. (auth would stop standard
                                                        work too; transient would burn attempts on a wall.)
standard mode not confirmed                 auth        nothing can be sent: a person must look
selector not found before submitting        auth        the layout changed: fail closed, screenshot saved
layout change / login wall after            unknown     sent=True, screenshot saved. The turn stays
submitting: no sign of progress within                  reconcilable (the broker binds it to this account and
progress_grace (no assistant turn, stop                 reconciles it from the recorded URL, never re-sends
control or thinking indicator), or the                  it blindly), and the account's *next* request —
page goes quiet without finishing                       that reconcile, or another task — fails auth
                                                        (sent=False): the account is paused for the operator.
                                                        (auth right away would drop the turn's reconcile and
                                                        re-send it once resumed.)
the same while reconciling                  auth        account paused; the turn stays reconcilable
anything else unclear after submitting      unknown     sent=True: the reply is reconciled from the recorded
(timeout, cancel, browser crash)                        URL, never re-sent blindly
reconcile of a new chat sent before its     (found)     the conversation is found in the site's history list
real URL showed (ChatGPT: a transient                   by its first prompt (recover.py) and its reply read;
/c/WEB:... for ~15 s)                       None/       None once it is certainly absent (a minute after
                                            unknown     sending), else unknown: never re-sent blindly
profile held by another process             auth        e.g. a `fanoctl backends login` in progress
==========================================  ==========  =====================================================

Screenshots of every layout/login/mode problem go to ``<account dir>/screenshots/`` for the operator.
"""
from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from services.backends.base import Provider, ProviderError, Reply, Turn
from services.backends.conversations import ConversationStore, conversation_key
from services.backends.web import recover
from services.backends.web.browser import BrowserHost, ProfileLock, kill_previous, record_browser
from services.backends.web.gate import ProgressWatch, Sample, TurnGate
from services.backends.web.operator import OperatorSession
from services.backends.web.page import ChatPage, PageSample, SiteProblem, playwright_error
from services.backends.web.reconcile import SCARCE_MODES, TurnReconcile
from services.backends.web.settings import parse_settings
from services.backends.web.site import load_site
from services.backends.web.warnings import Notice, classify, classify_reply, matches, parse_reset, says_not_counted

log = logging.getLogger(__name__)

REPLY_NOTICE_CHARS = 400   # a finished reply this short may be a notice rendered as the reply (reply_notices)
PLACEHOLDER_CHARS = 600    # a reply this short may be a "still generating" placeholder
SCREENSHOTS_KEPT = 50
SLICE = 0.05               # seconds between two looks at cancelled() while waiting
URL_WAIT = 30.0            # seconds a new chat answered early may take to show its real URL (ChatGPT: ~15)


class WebProvider(OperatorSession, TurnReconcile, Provider):
    """A chat web UI account. Subclasses set ``backend`` and ``site_name`` (the data file)."""

    backend = "web"
    site_name = ""

    def __init__(self, account: str, settings: dict, clock, data_dir):
        super().__init__(account, settings, clock, data_dir)
        self.site = load_site(self.site_name)
        self.cfg = parse_settings(settings or {}, self.site, f"[accounts.{account}]")
        self.home = (Path(data_dir) / "backends" / account).resolve()
        self.profile = self.home / "profile"
        self.pidfile = self.home / "browser.json"
        self.pause_file = self.home / "pause-request.txt"
        self.screenshots = self.home / "screenshots"
        self.store = ConversationStore(self.home / "conversations")
        self.lock = ProfileLock(self.home / "profile.lock")
        self.host = BrowserHost(f"{self.backend}-{account}", self._launch)
        self.unspent_attempts = set()
        self._started = False
        self._headless_override: bool | None = None

    @property
    def modes(self) -> list[str]:
        return list(self.cfg.modes)

    # --- life cycle ----------------------------------------------------------------------------------------

    def configured_timeout(self, mode: str) -> float | None:
        """The account's turn timeout for ``mode`` (``timeout``, seconds or a per-mode table)."""
        return self.cfg.timeouts.get(mode)

    def start(self) -> None:
        """Take the profile and kill what a previous incarnation left on it. The browser itself starts
        lazily on the browser thread at the first request."""
        self._started = True
        if not self._own_profile():
            log.warning("%s: the browser profile is held by pid %s; requests are refused until it is free",
                        self.account, self.lock.holder())

    def close(self) -> None:
        self.host.shutdown()
        self.lock.release()
        self._started = False

    def _own_profile(self) -> bool:
        if self.lock.held:
            return True
        if not self.lock.acquire():
            return False
        kill_previous(self.profile, self.pidfile)
        return True

    def _require_profile(self) -> None:
        if not self._own_profile():
            raise ProviderError("auth", f"the browser profile of {self.account} is in use by pid "
                                f"{self.lock.holder()} (a `fanoctl backends login` session?); resume the "
                                "account when it has ended", sent=False)

    def _launch(self, playwright):
        """On the browser thread: the persistent context of this account's profile."""
        self.profile.mkdir(parents=True, exist_ok=True)
        headless = self.cfg.headless if self._headless_override is None else self._headless_override
        kwargs = dict(user_data_dir=str(self.profile), executable_path=self.cfg.chromium, headless=headless,
                      args=list(self.cfg.launch_args), ignore_default_args=["--enable-automation"],
                      viewport={"width": 1280, "height": 900})
        if self.cfg.timezone_name:
            kwargs["timezone_id"] = self.cfg.timezone_name
        ctx = playwright.chromium.launch_persistent_context(**kwargs)
        ctx.set_default_timeout(30_000)
        record_browser(self.pidfile, self.profile)
        log.info("%s: browser started (%s, profile %s)", self.account, "headless" if headless else "headed",
                 self.profile)
        return ctx

    def _recycle(self, host) -> None:
        """After a browser error: kill this profile's browser (it may be hung, where a polite close would
        hang too) so that the next request starts a fresh one."""
        kill_previous(self.profile, self.pidfile, wait=2.0)
        host.close_browser()

    def _chat(self, host) -> ChatPage:
        try:
            page = host.page()
        except playwright_error() as exc:
            raise ProviderError("auth", f"cannot start the browser ({self.cfg.chromium}): {exc}"[:1000],
                                sent=False) from None
        return ChatPage(page, self.site, self.cfg.url)

    # --- send ----------------------------------------------------------------------------------------------

    def send(self, turn: Turn, cancelled: Callable[[], bool]) -> Reply:
        if turn.mode not in self.cfg.modes:
            raise ProviderError("terminal", f"{self.site.name} account {self.account} has no mode {turn.mode!r}",
                                sent=False)
        if not turn.prompt.strip():
            raise ProviderError("terminal", "empty prompt", sent=False)
        self._require_profile()
        self._take_pause_request()
        return self.host.run(self._send, turn, cancelled)

    def _send(self, host, turn: Turn, cancelled: Callable[[], bool], retry: bool = True) -> Reply:
        key, idx = conversation_key(turn), turn.turn_index
        reused = host.launched    # a browser from an earlier request may have died or hung meanwhile
        label = self.cfg.labels[turn.mode]
        handle = self.store.handle(key)
        # a conversation continues at its page only once this account has an answered turn of it there.
        # Until then — its first turn, whatever index the module gave it (the explorer numbers a thread's
        # first turn 1), a first turn whose earlier attempt was refused, or a conversation handed off here
        # from another account (services/broker/ops_handoff.py) — it starts a new chat: the modules'
        # prompts carry their own context. One with answered turns but no recorded page cannot go on.
        held = bool(self.store.turns(key))
        if held and not handle.get("url"):
            raise ProviderError("terminal", f"conversation {key} has no recorded URL on {self.account}: turn "
                                f"{idx} cannot continue it", sent=False)
        target = handle["url"] if held else None
        chat = self._chat(host)
        submitted = False
        loaded = False     # the page answered once: probing it for a notice after a failed step is safe
        try:
            chat.goto(target or chat.new_chat_url, self.cfg.ready_timeout)
            s = chat.wait_ready(self.cfg.ready_timeout)
            loaded = True
            if target and urlsplit(s.url).path != urlsplit(target).path:
                raise ProviderError("transient", f"reopening {target} landed on {s.url}", sent=False)
            self._raise_blocking(s, sent=False)
            shown = Counter(s.banners)
            mode_check = chat.select_mode(turn.mode, self.site.modes[turn.mode], label)
            # picking a mode may bring up its limit notice (Gemini's Deep Think snack bar, over the composer)
            self._raise_fresh_notice(chat.sample(), shown)
            if cancelled():
                raise ProviderError("transient", "cancelled before sending", retry_after=0.0, sent=False)
            chat.type_prompt(turn.prompt)
            s = chat.sample()
            baseline = Counter(s.banners)
            index = s.assistants
            # a new chat's URL shows only after sending (ChatGPT: a transient one first): the history list as
            # it is now lets reconcile find the conversation again if we die before (recover.py)
            fresh = {} if target else {"url": None, "title": None, "sent_at": time.time(),
                                       "history_before": self._history_urls(chat)}
            self.store.set_handle(key, sent_turn=idx, prior_users=s.users, **fresh)
            self.store.mark_sent(key, idx, turn.prompt, task_id=turn.task_id, attempt=turn.attempt, mode=turn.mode)
            submitted = True
            chat.submit()
            deadline = time.monotonic() + self.cfg.timeouts[turn.mode]
            seen: dict = {}
            s = self._await_reply(chat, key, index, baseline, deadline, cancelled, seen)
        except SiteProblem as problem:
            if loaded and not submitted:   # a notice covering the page says why better than a missing element
                self._raise_page_notice(chat)
            raise self._problem_error(chat, problem, sent=submitted, mode=turn.mode) from None
        except playwright_error() as exc:
            # e.g. a click timed out because a limit notice covers the composer (not after a failed load: a
            # hung browser would hang the probe too)
            if loaded and not submitted:
                self._raise_page_notice(chat)
            self._recycle(host)
            if reused and retry and not submitted:
                log.warning("%s: the browser failed before sending (%s); retrying once with a new one",
                            self.account, str(exc).splitlines()[0][:200])
                return self._send(host, turn, cancelled, retry=False)
            raise ProviderError("unknown" if submitted else "transient", f"browser error: {exc}"[:1000],
                                sent=submitted) from None
        after, differs = self._mode_after(chat, turn.mode, label)
        if turn.mode in SCARCE_MODES and (differs or seen.get("downgrade")):
            raise self._downgrade_error(chat, turn, label, seen.get("downgrade") or after)
        if not target and turn.conversation:    # a one-shot ask has no next turn to continue the chat
            self._await_url(chat, key, turn.prompt)
        return self._finish(turn, key, s, {"mode_label": label, "mode_check": mode_check, "mode_after": after})

    def _downgrade_error(self, chat: ChatPage, turn: Turn, label: str, evidence: str,
                         reconciled: bool = False) -> ProviderError:
        """A scarce-mode turn the page answered in another mode (a "switched you to the latest default model"
        notice, or the mode control reading "Auto" / "Fast" after the reply) is not the answer that was paid
        for: it is never delivered as that mode. quota (sent=True: the site served something, but not in
        this mode): the broker refunds the deep unit, cools the deep mode of this account for ``mode_retry``
        (standard work goes on), and the task waits or falls back to standard as it allows — no attempt
        burned. The page's answer is not recorded as the turn's reply. ``reconciled``: found on reopening
        the conversation of an earlier attempt (sent=False: this lease sent nothing)."""
        shot = self._screenshot(chat, "downgrade")
        where = f" (screenshot: {shot})" if shot else ""
        how = (f"the reopened {label} turn is not confirmed as {label}" if reconciled else
               f"{label} was selected and confirmed before sending, but the page answered in another mode")
        then = (f"it is sent afresh and {turn.mode} requests on {self.account} wait" if reconciled else
                f"the {turn.mode} unit is refunded and {turn.mode} requests on {self.account} wait")
        return ProviderError("quota", f"downgrade: {how} ({evidence[:300]}){where}; not recorded as {turn.mode}: "
                             f"{then} {self.cfg.mode_retry:g}s", retry_after=self.cfg.mode_retry, sent=not reconciled)

    def _await_url(self, chat: ChatPage, key: str, prompt: str) -> None:
        """A new chat answered before the site showed its real URL (ChatGPT: ~15 s of a transient one): wait
        for it (URL_WAIT), else look for the conversation in the history list, so that the next turn can
        continue it. Best effort: the reply is in hand and is delivered either way."""
        if self.store.handle(key).get("url"):
            return
        deadline = time.monotonic() + URL_WAIT
        try:
            while time.monotonic() < deadline:
                s = chat.sample()
                if chat.conversation_url(s.url):
                    self.store.set_handle(key, url=s.url, title=s.title)
                    return
                time.sleep(0.25)
            verdict = recover.search(chat, prompt, self.store.handle(key).get("history_before"), None,
                                     self.cfg.ready_timeout)
        except (SiteProblem, playwright_error()) as exc:
            log.warning("%s: the conversation URL of %s did not show: %s", self.account, key, exc)
            return
        if verdict.kind == "found":
            self.store.set_handle(key, url=verdict.url, title=verdict.title)
        else:
            log.warning("%s: the conversation URL of %s did not show within %gs", self.account, key, URL_WAIT)

    def _finish(self, turn: Turn, key: str, s: PageSample, meta: dict, reconciled: bool = False) -> Reply:
        handle = self.store.handle(key)
        shown = s.url if self.site.is_conversation(urlsplit(s.url).path) else None   # never a transient URL
        meta = dict(meta, site=self.site.name, account=self.account, mode=turn.mode,
                    url=handle.get("url") or shown, title=handle.get("title") or s.title, reconciled=reconciled)
        self.store.record_reply(key, turn.turn_index, turn.prompt, s.text, url=meta["url"], mode=turn.mode,
                                task_id=turn.task_id, attempt=turn.attempt)
        return Reply(s.text, meta=meta)

    def _mode_after(self, chat: ChatPage, mode: str, label: str) -> tuple[str, bool]:
        """Re-read the mode after the reply: (what the page shows, whether it is not confirmed). A page that
        reads differently is a silent downgrade. A browser error while re-reading confirms nothing either:
        a scarce-mode reply is delivered as that mode only when the page confirms it, so the caller treats
        both alike (the downgrade path: deep refunded and cooled, the task waits or falls back); a standard
        reply needs no confirmation and is delivered either way."""
        try:
            return chat.verify_mode(mode, self.site.modes[mode], label, timeout=0.0), False
        except SiteProblem as problem:
            log.warning("%s: after the reply the mode reads differently: %s", self.account, problem.message)
            return f"unconfirmed: {problem.message}", True
        except playwright_error() as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.warning("%s: after the reply the mode could not be read back: %s", self.account, first[:200])
            return f"unconfirmed: the mode could not be read back after the reply ({first})"[:300], True

    # --- waiting for the reply -----------------------------------------------------------------------------

    def _await_reply(self, chat: ChatPage, key: str, index: int, baseline: Counter, deadline: float,
                     cancelled: Callable[[], bool], seen: dict | None = None) -> PageSample:
        """Poll until the assistant turn ``index`` is complete. Records the conversation URL (and title)
        the moment it appears. Raises a classified ProviderError (sent=True) on any notice, timeout or
        cancel, and SiteProblem("layout") when the page shows no sign of progress (:class:`ProgressWatch`).
        ``seen["downgrade"]`` gets the first fresh notice saying another model answered (``[messages]
        downgrade``): a toast may be gone by the time the reply is complete."""
        seen = {} if seen is None else seen
        gate = TurnGate(self.cfg.gate)
        watch = ProgressWatch(self.cfg.progress_grace, time.monotonic())
        msgs = self.site.messages
        recorded = self.store.handle(key)
        while True:
            s = chat.sample(index)
            if chat.conversation_url(s.url) and (s.url != recorded.get("url") or
                                                 (s.title and s.title != recorded.get("title"))):
                self.store.set_handle(key, url=s.url, title=s.title)
                recorded = {"url": s.url, "title": s.title}
            if s.challenge and not s.composer:
                raise SiteProblem("challenge", f"human check: the site shows a human check at {s.url} ({s.title!r})")
            if s.login:
                raise SiteProblem("login", f"sign-in needed: the site asks to sign in at {s.url}")
            fresh = list((Counter(s.banners) - baseline).elements())
            if "downgrade" in msgs and "downgrade" not in seen:
                said = [t for t in fresh + [s.turn_error] if t and matches(t, msgs["downgrade"])]
                if said:
                    seen["downgrade"] = " ".join(said[0].split())[:300]
            notice = (classify(fresh + [s.turn_error], msgs) or classify([s.title], {"auth": msgs["auth"]})
                      or (Notice("transient", s.turn_error[:500], "turn_error") if s.turn_error else None))
            if notice:
                raise self._notice_error(notice, sent=True, produced=bool(s.text.strip()))
            placeholder = len(s.text) < PLACEHOLDER_CHARS and matches(s.text, msgs["thinking"])
            now = time.monotonic()
            if gate.feed(Sample(now, s.text, s.stop, s.bar, s.thinking or placeholder)):
                # the model's own words are never matched against [messages]: only a site that renders its
                # refusals as the reply, with the whole phrase at the start (reply_notices)
                if len(s.text) < REPLY_NOTICE_CHARS:
                    notice = classify_reply(s.text, self.site.reply_notices)
                    if notice:    # the notice is all the turn shows: no output of the model's own
                        raise self._notice_error(notice, sent=True, produced=False)
                return s
            stalled = watch.feed(now, s.exists, s.text, s.stop, s.thinking or placeholder)
            if stalled:
                raise SiteProblem("layout", f"the page layout may have changed: {stalled} (gate: {gate.state}; "
                                            f"check the selectors of sites/{self.site.name}.toml)")
            if time.monotonic() > deadline:
                raise ProviderError("unknown", f"no complete reply within the turn timeout ({gate.state}); the "
                                    f"conversation {recorded.get('url') or '(no URL yet)'} is reconciled next, "
                                    "not re-sent", sent=True)
            if self._sleep(self.cfg.poll_interval, cancelled):
                raise ProviderError("unknown", "cancelled while the site was answering (the reply is read "
                                    "from the conversation URL when the turn is reconciled)", sent=True)

    @staticmethod
    def _sleep(seconds: float, cancelled: Callable[[], bool]) -> bool:
        """Sleep, looking at ``cancelled()`` every SLICE; True if it turned true."""
        end = time.monotonic() + seconds
        while True:
            if cancelled():
                return True
            left = end - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(SLICE, left))

    # --- classification ------------------------------------------------------------------------------------

    def _raise_blocking(self, s: PageSample, sent: bool) -> None:
        """Before submitting: a limit or login notice already on the page stops us. Errors and capacity
        notices there belong to earlier turns of a reopened conversation and are ignored."""
        notice = classify(s.banners + [s.title], {k: self.site.messages[k] for k in ("auth", "quota")})
        if notice:
            raise self._notice_error(notice, sent=sent)

    def _raise_fresh_notice(self, s: PageSample, shown: Counter, kinds=("auth", "quota", "capacity")) -> None:
        """Before submitting: a limit, login or overload notice that appeared since ``shown`` (the banners
        before the mode was picked) stops us, nothing sent. A quota notice cools the mode the turn asked for
        until the time it states (the broker's cool-downs are per mode)."""
        fresh = list((Counter(s.banners) - shown).elements())
        msgs = self.site.messages
        notice = classify(fresh, {k: msgs[k] for k in kinds})
        if notice:
            raise self._notice_error(notice, sent=False)

    def _raise_page_notice(self, chat: ChatPage) -> None:
        """Before submitting, after a step failed: a limit, login or overload notice on the page is the reason
        (a snack bar over the composer makes a click time out: that is no browser error to retry)."""
        try:
            s = chat.sample()
        except playwright_error():
            return
        # every banner, not only fresh ones, but no overload or error notice: on a reopened conversation those
        # belong to earlier turns
        self._raise_fresh_notice(s, Counter(), kinds=("auth", "quota"))

    def _notice_error(self, notice: Notice, sent: bool, produced: bool = True) -> ProviderError:
        """The ProviderError a notice means. ``produced``: the awaited turn showed reply text of its own (a
        notice rendered *as* the reply is no output). A turn the site refused or failed without serving it
        — an overload, a notice saying it did not count, a failure before any output — is reported
        ``sent=False``: the broker refunds its unit and gives the attempt back (within ``max_refusals``),
        and there is nothing to reconcile (base.py)."""
        text = notice.text
        if sent and (notice.kind == "capacity" or says_not_counted(text) or
                     (notice.kind == "transient" and not produced)):
            sent = False
        if notice.kind == "quota":
            wait = parse_reset(text, self.clock.world(), self.cfg.timezone)
            err = ProviderError("quota", text, retry_after=self.cfg.quota_retry if wait is None else wait, sent=sent)
        elif notice.kind == "capacity":
            err = ProviderError("transient", text, retry_after=self.cfg.capacity_retry, sent=sent)
        elif notice.kind == "auth":
            err = ProviderError("auth", f"{text} (sign in again: fanoctl backends login {self.account})", sent=sent)
        else:
            err = ProviderError("transient", text, sent=sent)
        err.notice = notice
        return err

    def _problem_error(self, chat: ChatPage, problem: SiteProblem, sent: bool, mode: str | None = None,
                       reconciling: bool = False) -> ProviderError:
        shot = self._screenshot(chat, problem.kind)
        where = f" (screenshot: {shot})" if shot else ""
        if problem.kind == "mode" and mode in SCARCE_MODES:
            # only this mode is lost (plan, quota of the mode, or its control moved): cool it down and let
            # standard work go on; the broker keeps cool-downs per mode and refunds the unit
            return ProviderError("quota", f"{mode} mode not available on this page: {problem.message}{where}; "
                                 f"{mode} requests on {self.account} wait {self.cfg.mode_retry:g}s, standard "
                                 "requests go on", retry_after=self.cfg.mode_retry, sent=False)
        what = f"{problem.message}{where}"
        if problem.kind == "login":
            what = f"{problem.message}: sign in with `fanoctl backends login {self.account}`{where}"
        elif problem.kind == "challenge":
            what = f"{problem.message}: pass it in `fanoctl backends login {self.account}` (a visible browser){where}"
        if sent and not reconciling:
            # auth now would pause the account but drop this turn's reconcile (the broker re-sends an auth
            # failure once resumed): keep the turn unknown, and pause at the account's next request
            self._request_pause(f"after a prompt was sent: {what}")
            return ProviderError("unknown", f"after the prompt was sent: {what}. The turn is reconciled from its "
                                 "URL, never re-sent blindly; the account's next request pauses it for the "
                                 "operator", sent=True)
        # mode not confirmed, the layout changed before anything was sent, a login wall, or any of these
        # while reconciling: a person must look
        return ProviderError("auth", what, sent=sent)

    # --- pausing the account for the operator ----------------------------------------------------------------

    def _request_pause(self, reason: str) -> None:
        """Make the account's next request (send or reconcile) fail ``auth`` with ``reason``, before it opens
        the page: how a problem whose own turn must stay ``unknown`` still gets the account paused. Durable
        (a file in the account dir), so a worker restart does not lose it; consumed once."""
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            tmp = self.pause_file.with_suffix(".tmp")
            tmp.write_text(reason, encoding="utf-8")
            os.replace(tmp, self.pause_file)
        except OSError as exc:   # the turn's own error still reaches the operator's logs
            log.warning("%s: cannot record the pause request: %s", self.account, exc)

    def _take_pause_request(self) -> None:
        try:
            reason = self.pause_file.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return
        self.pause_file.unlink(missing_ok=True)
        raise ProviderError("auth", f"paused for the operator: {reason}. If the page changed, fix "
                            f"services/backends/web/sites/{self.site.name}.toml (and restart the worker), then "
                            f"`fanoctl backends resume {self.account}`", sent=False)

    def _screenshot(self, chat: ChatPage, kind: str) -> str | None:
        try:
            self.screenshots.mkdir(parents=True, exist_ok=True)
            old = sorted(self.screenshots.glob("*.png"))
            for path in old[:max(0, len(old) - SCREENSHOTS_KEPT + 1)]:
                path.unlink(missing_ok=True)
            path = self.screenshots / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{kind}.png"
            return str(path) if chat.screenshot(path) else None
        except OSError:
            return None
