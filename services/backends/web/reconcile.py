"""Reconciling a web turn whose outcome is unknown (a mixin of :class:`~.provider.WebProvider`, which owns the
profile, the browser thread, the conversation store and the page classification these use).

A turn marked sent is never re-sent blindly: its conversation is reopened from the recorded URL (or, for a
new chat whose URL never showed, found again in the site's history list, :mod:`.recover`) and its reply
read; None (send it) only when the site certainly never got the prompt or refused it. A reconciled deep
turn is delivered as deep only when the reopened page confirms it by the turn's own model label (the site
file's ``turn_mode``); otherwise it is a downgrade (see the table in :mod:`.provider`).
"""
from __future__ import annotations

import logging
import re
import time
from collections import Counter
from urllib.parse import urlsplit

from services.backends.base import ProviderError, Reply, Turn
from services.backends.conversations import conversation_key
from services.backends.web import recover
from services.backends.web.host import Host
from services.backends.web.page import ChatPage, PageSample, SiteProblem, playwright_error

log = logging.getLogger(__name__)

PROMPT_SETTLE = 3.0        # seconds a loaded conversation may take to show our prompt too
# modes whose loss cools down that mode only, not the account, and that a reopened page must confirm
# before a reconciled reply is delivered as that mode
SCARCE_MODES = ("deep",)


class TurnReconcile(Host):
    """reconcile() of a :class:`~.provider.WebProvider`."""

    # --- reconcile -----------------------------------------------------------------------------------------

    def reconcile(self, turn: Turn) -> Reply | None:
        """Reopen the recorded conversation URL and read this turn's reply (waiting while it is still
        being generated). None only when the site certainly never got the prompt (never marked sent, or
        the reopened conversation does not show it, or the site refused/failed it). Only this task's records
        count (its recorded reply, its attempt's send mark): another task at the same turn is not this one."""
        key, idx = conversation_key(turn), turn.turn_index
        # only this task's own records count: a module's re-ask is a new task at the same conversation and
        # turn index (same thread), and another task's reply or send mark says nothing about it
        stored = self.store.recorded(turn)
        if stored is not None:
            handle = self.store.handle(key)
            return Reply(stored.reply, meta={"site": self.site.name, "account": self.account,
                                             "mode": stored.meta.get("mode") or turn.mode,
                                             "url": handle.get("url"), "title": handle.get("title"),
                                             "reconciled": True})
        if not self.store.sent_attempt(turn):
            self._mark_unspent(turn)
            return None
        handle = self.store.handle(key)
        if handle.get("settled_turn") == [idx, turn.attempt, turn.task_id]:
            # an earlier reconcile found this attempt answered in another mode than was paid for: it is not
            # this turn's answer, and that mode has cooled since; send the turn afresh
            log.info("%s: turn %s of %s (attempt %s) was answered in another mode than %s; sending it again",
                     self.account, idx, key, turn.attempt, turn.mode)
            self._mark_unspent(turn)
            return None
        if handle.get("sent_turn") != idx:
            raise ProviderError("unknown", f"turn {idx} of {key} was marked sent but its page was not recorded: "
                                "it may have reached the site, so it is not re-sent blindly (look at the site, "
                                "then `fanoctl queue retry` the task)", sent=True)
        self._require_profile()
        self._take_pause_request()
        if not handle.get("url"):   # a new chat whose URL never showed before we died: find it in the history
            return self.host.run(self._recover, turn, key, handle)
        return self.host.run(self._reconcile, turn, key, handle)

    def _mark_unspent(self, turn: Turn) -> None:
        """Before reconcile's None when the site spent nothing of the turn's mode on this attempt: the prompt
        never left or never arrived, the site answered it in another mode (a downgrade settled earlier), or
        it refused or failed the turn without serving it (the notices a send reports sent=False, or a limit).
        :meth:`unspent` then says so, and the worker has the broker refund that attempt's unit."""
        self.unspent_attempts.add((turn.task_id, turn.attempt))

    def unspent(self, turn: Turn) -> bool:
        """Provider.unspent: the last reconcile of this attempt returned None for one of the reasons above."""
        return (turn.task_id, turn.attempt) in self.unspent_attempts

    def _history_urls(self, chat: ChatPage) -> list[str] | None:
        """The history list's conversation URLs now (None when the page shows none)."""
        items = chat.history()
        return None if items is None else [item["url"] for item in items]

    def _recover(self, host, turn: Turn, key: str, handle: dict) -> Reply | None:
        """A new chat marked sent with no URL recorded (the worker died before the real URL showed): look for
        it in the site's history list (:mod:`.recover`); found, its URL is recorded and the reply read as
        for any reconcile; certainly absent, None (send it); otherwise unknown, never re-sent blindly."""
        chat = self._chat(host)
        try:
            chat.goto(chat.new_chat_url, self.cfg.ready_timeout)
            chat.wait_ready(self.cfg.ready_timeout)
            verdict = recover.search(chat, turn.prompt, handle.get("history_before"), handle.get("sent_at"),
                                     self.cfg.ready_timeout)
        except SiteProblem as problem:
            raise self._problem_error(chat, problem, sent=True, mode=turn.mode, reconciling=True) from None
        except playwright_error() as exc:
            self._recycle(host)
            raise ProviderError("unknown", f"browser error while searching the history: {exc}"[:1000],
                                sent=True) from None
        if verdict.kind == "absent":
            log.info("%s: turn %s of %s never reached the site: %s", self.account, turn.turn_index, key,
                     verdict.detail)
            self._mark_unspent(turn)
            return None
        if verdict.kind != "found":
            raise ProviderError("unknown", f"turn {turn.turn_index} of {key} was sent before the site showed its "
                                f"conversation URL: {verdict.detail}; it is not re-sent blindly (reconciled "
                                "again next time)", sent=True)
        log.info("%s: found turn %s of %s again: %s", self.account, turn.turn_index, key, verdict.detail)
        self.store.set_handle(key, url=verdict.url, title=verdict.title)
        return self._reconcile(host, turn, key, self.store.handle(key))

    def _reconcile(self, host, turn: Turn, key: str, handle: dict) -> Reply | None:
        url, prior = handle["url"], int(handle.get("prior_users") or 0)
        chat = self._chat(host)
        try:
            chat.goto(url, self.cfg.ready_timeout)
            # the conversation has loaded once it shows its earlier turns (or, for a first turn, any)
            s = chat.wait_ready(self.cfg.ready_timeout, min_users=max(prior, 1))
            if urlsplit(s.url).path != urlsplit(url).path:
                raise ProviderError("unknown", f"reopening {url} landed on {s.url}", sent=True)
            settle = time.monotonic() + PROMPT_SETTLE
            while s.users <= prior and time.monotonic() < settle:
                time.sleep(0.1)
                s = chat.sample()
            if s.users <= prior:
                if prior == 0:
                    raise ProviderError("unknown", f"{url} shows no prompt yet", sent=True)
                log.info("%s: %s shows the %d earlier turn(s) but not this prompt: it never arrived",
                         self.account, url, prior)
                self._mark_unspent(turn)
                return None
            timeout = self.cfg.reconcile_timeout or self.cfg.timeouts[turn.mode]
            seen: dict = {}
            try:
                s = self._await_reply(chat, key, prior, Counter(), time.monotonic() + timeout, lambda: False, seen)
            except ProviderError as exc:
                notice = exc.notice
                if notice is not None and notice.kind in ("quota", "capacity", "transient"):
                    log.info("%s: the site refused or failed the turn (%s): it may be sent again",
                             self.account, notice.text[:200])
                    if not exc.sent or notice.kind == "quota":   # refused, or failed without serving it
                        self._mark_unspent(turn)
                    return None
                raise
        except SiteProblem as problem:
            raise self._problem_error(chat, problem, sent=True, mode=turn.mode, reconciling=True) from None
        except playwright_error() as exc:
            self._recycle(host)
            raise ProviderError("unknown", f"browser error while reconciling: {exc}"[:1000], sent=True) from None
        label = self.cfg.labels.get(turn.mode)
        confirmed, evidence = self._turn_mode(turn, s, seen)
        if not confirmed:
            # never delivered as the scarce mode: settled (the next reconcile of this attempt sends afresh)
            # and the deep mode cooled, as for a downgrade seen live
            self.store.set_handle(key, settled_turn=[turn.turn_index, turn.attempt, turn.task_id])
            raise self._downgrade_error(chat, turn, label or turn.mode, evidence, reconciled=True)
        return self._finish(turn, key, s, {"mode_label": label, "mode_after": evidence}, reconciled=True)

    def _turn_mode(self, turn: Turn, s: PageSample, seen: dict) -> tuple[bool, str]:
        """Whether the reopened page confirms that ``turn`` was answered in its mode, and the evidence. The
        mode control of a reopened page shows the current choice, not the one that answered, so a scarce
        mode is confirmed only by the turn's own model label (the site file's ``turn_mode``) naming it, with
        no downgrade notice; a standard turn needs no confirmation (nothing cheaper to fall to)."""
        if turn.mode not in SCARCE_MODES:
            return True, "not read back (reconciled from the conversation URL)"
        label = self.cfg.labels.get(turn.mode) or turn.mode
        if seen.get("downgrade"):
            return False, f"the reopened conversation says another model answered: {seen['downgrade']}"
        if not s.turn_mode:
            return False, "unconfirmed: the reopened conversation names no model for the turn"
        if re.search(rf"(?<!\w){re.escape(label)}(?!\w)", s.turn_mode, re.I):
            return True, f"confirmed by the turn's model label ({s.turn_mode[:80]})"
        return False, f"the turn's model label reads {s.turn_mode[:80]!r}, not {label}"
