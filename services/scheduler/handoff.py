"""Conversation hand-off proposals: which waiting turns may leave the account their conversation lives on.

The broker decides a hand-off in the lease transaction (services/broker/ops_handoff.py has the rule); the
scheduler proposes it by the same rule, as far as it knows the accounts: a turn whose conversation lives on
an account that cannot run it — paused, cooling, refused by its quota for the turn's module and modes
(learned from declined leases), or without a worker for the hand-off time — is proposed to every account it
allows once it has waited ``[scheduler] conversation_handoff`` world seconds since it last became PENDING
(``pending_since``, or its ``not_before`` if later). A proposed turn carries ``task.handoff`` (the account
it leaves) and its placement class is no longer bound (:func:`services.scheduler.classes.placement_class`),
so any idle account it allows may take it; the new account's lease moves the conversation.

Never while a turn of the conversation is in flight (such a turn is held, not queued), nor while any of its
turns has an unknown outcome still bound to its account for reconciliation.

The proposal is kept current without polling: a timer at each turn's hand-off time (:attr:`Handoffs.checks`,
one heap entry per task and due time), and a re-check of an account's turns whenever its state changes — a
declined lease with a retry time, an ``account.*``/``quota.*`` event, a block or cool-down ending, its last
worker gone (and again once it has been gone for the hand-off time), a worker of it (back) online. And a
turn proposed to leave a busy account is placed again when a worker of that account says ready
(:attr:`Handoffs.leaving`): nobody took it meanwhile, and the free account takes it back (as an unbound
turn it would count as an opening everywhere and wait behind every account's own turns).
"""
from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from services.scheduler.classes import MODES

if TYPE_CHECKING:
    from services.scheduler.view import SchedulerView
from services.scheduler.priority import STANDARD, QTask


def _fmt(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def due_time(t: QTask, after: float) -> float:
    """World time from which ``t`` may be handed off (the broker's ``ops_handoff.waiting_since`` + T)."""
    return max(t.pending_since or t.created, t.not_before) + after


class Handoffs:
    """The scheduler core's hand-off state: soft, rebuilt from what the core sees (nothing durable).

    Reads the scheduler's state through ``view``; ``place(task)`` asks the core to place a queued turn
    again (its class and proposal may have changed)."""

    def __init__(self, view: SchedulerView, place: Callable[[QTask], None]):
        self.view = view
        self.place = place
        self.after = view.scfg.conversation_handoff   # world seconds; 0 = never
        self.started = view.clock.world()   # accounts never seen count as offline from here
        self.seen: set[str] = set()         # accounts a worker has said ready for
        self.gone_since: dict[str, float] = {}   # account -> world time its last worker went away
        self.reset()

    def reset(self) -> None:
        """Forget the timers (the core's rebuild places every task again); what is known of workers stays."""
        # (world time, task id, account): re-check one turn (account "") or an account's turns (task id -1)
        self.checks: list[tuple[float, int, str]] = []
        self.at: dict[int, float] = {}      # task id -> its pending check (one heap entry per due time)
        self.leaving: dict[str, set[int]] = {}   # account -> its turns proposed to leave it
        self._leaves: dict[int, str] = {}         # task id -> the account it is proposed to leave

    # --- the rule ---------------------------------------------------------------------------------------

    def propose(self, t: QTask, world: float) -> None:
        """Set ``t.handoff`` (:meth:`proposal`) and keep the account's list of turns proposed to leave it."""
        t.handoff = self.proposal(t, world)
        was = self._leaves.get(t.id)
        if was != t.handoff:
            self._unleave(t.id)
            if t.handoff:
                self._leaves[t.id] = t.handoff
                self.leaving.setdefault(t.handoff, set()).add(t.id)

    def proposal(self, t: QTask, world: float) -> str | None:
        """The account ``t``'s conversation should leave now, or None (with a timer at the hand-off time
        when it has not come yet)."""
        view, conv = self.view, t.conversation
        if self.after <= 0 or not conv or t.unknown_account:
            return None   # an unknown turn stays with its account until its hold lapses (broker rule)
        holder = view.convs.holder_of(t)
        if not holder:
            return None
        tasks = view.table.tasks
        if any(tasks[o].unknown_account for o in view.convs.turns.get(conv, ()) if o != t.id and o in tasks):
            return None   # another turn of it is unknown: the conversation stays until that is reconciled
        due = due_time(t, self.after)
        if world < due:
            self._check_at(t.id, due)
            return None
        if self.blocked_reason(holder, t, world):
            return holder
        # the holder can run it now; if it stays busy with other work the turn is looked at again one
        # hand-off time later (at fixed steps from its due time: one timer per step however often it is placed)
        self._check_at(t.id, due + self.after * (1 + int((world - due) // self.after)))
        return None

    def _check_at(self, tid: int, when: float) -> None:
        if self.at.get(tid) != when:   # a task is placed again and again: one timer per due time
            self.at[tid] = when
            heapq.heappush(self.checks, (when, tid, ""))

    def blocked_reason(self, account: str, t: QTask, world: float) -> str | None:
        """Why ``account`` cannot run ``t`` now, as far as the scheduler knows (None: it can)."""
        accounts = self.view.accounts
        if account in accounts.paused:
            return f"paused ({accounts.paused[account] or 'no reason given'})"
        if not self.view.workers.for_account(account):
            since = self.gone_since.get(account, self.started)
            if world - since >= self.after:
                return f"offline (no worker since {_fmt(since)})"
        req = t.requires
        mode = str(req.get("mode")) if req.get("mode") in MODES else STANDARD
        modes = (mode, STANDARD) if mode != STANDARD and req.get("deep_fallback") else (mode,)
        info = accounts.info.get(account)
        refusals: list[str] = []
        for m in modes:
            if info is not None and info.modes and m not in info.modes:
                continue
            r = accounts.why_not(account, m, t.module, world)
            if r is None:
                refusals = []
                break
            refusals.append(f"{m} {r[0]} until {_fmt(r[1])}")
        if refusals:
            return "; ".join(refusals)
        return self._busy(account, t)

    def _busy(self, account: str, t: QTask) -> str | None:
        """``account`` is busy: each of its workers has another task (the broker's rule: it holds another
        RUNNING lease; a waiting turn then moves to an idle account after the hand-off time)."""
        ws = self.view.workers.for_account(account)
        if not ws or any(w.state not in ("busy", "assigned") or w.task_id in (None, t.id) for w in ws):
            return None
        ids = sorted(w.task_id for w in ws if w.task_id is not None)
        return f"busy with task {ids[0]}" + (f" and {len(ids) - 1} more" if len(ids) > 1 else "")

    # --- keeping proposals current -------------------------------------------------------------------------

    def recheck(self, account: str) -> None:
        """An account's state changed: place again the queued turns of conversations it holds (or that
        were proposed to leave it)."""
        if self.after <= 0:
            return
        view = self.view
        for tids in list(view.convs.turns.values()):
            for tid in list(tids):
                t = view.table.tasks.get(tid)
                if t is None or tid not in view.table.queue:
                    continue
                if account in (view.convs.holder_of(t), t.handoff):
                    self.place(t)

    def worker_ready(self, account: str) -> None:
        if self.gone_since.pop(account, None) is not None or account not in self.seen:
            self.seen.add(account)
            self.recheck(account)   # (back) online: its conversations stay with it
            return
        # a worker of it is free again: turns proposed to leave it while it was busy may stay after all
        # (else, being no longer bound to it, they would wait behind other accounts' own turns)
        view = self.view
        for tid in list(self.leaving.get(account, ())):
            t = view.table.tasks.get(tid)
            if t is not None and tid in view.table.queue:
                self.place(t)

    def worker_gone(self, account: str, world: float) -> None:
        """The last worker of ``account`` went away: its turns may leave once it has been gone for T."""
        self.gone_since[account] = world
        if self.after > 0:
            heapq.heappush(self.checks, (world + self.after, -1, account))

    def forget(self, tid: int) -> None:
        self.at.pop(tid, None)
        self._unleave(tid)

    def _unleave(self, tid: int) -> None:
        account = self._leaves.pop(tid, None)
        if account is not None:
            tids = self.leaving[account]
            tids.discard(tid)
            if not tids:
                del self.leaving[account]

    def tick(self, world: float) -> None:
        """Run the checks that are due."""
        view = self.view
        while self.checks and self.checks[0][0] <= world:
            when, tid, account = heapq.heappop(self.checks)
            if account:
                self.recheck(account)
                continue
            if self.at.get(tid) != when:
                continue   # superseded (or the task is gone)
            del self.at[tid]
            t = view.table.tasks.get(tid)
            if t is not None and tid in view.table.queue:
                self.place(t)

    def next_check(self) -> float | None:
        """World time of the first check (a timer of the core)."""
        return self.checks[0][0] if self.checks else None
