"""Conversation hand-off: a conversation whose account cannot run its next turn moves to one that can.

A conversation is bound to the account that ran its first turn (docs/tasks.md § Conversations), so its
later turns wait for that account. When the account is blocked — its quota window for the turn's mode and
module used up, a cool-down, paused, or offline — for hours, its conversations would stall for hours while
other accounts sit idle. So the lease transaction lets another account take the turn, and moves the
conversation with it, when all of these hold (:func:`check`):

* ``[scheduler] conversation_handoff`` (world seconds, T) is not 0;
* no turn of the conversation is in flight (checked by the caller first), and neither this task nor another
  turn of the conversation (``rec["unknown"]``, kept by services/broker/ops_lease.py) has an unknown turn
  still held for its account to reconcile (``[broker] unknown_turn_hold``: a turn whose outcome is unknown
  is never re-sent elsewhere, nor its conversation moved, before that account had its time to reconcile it);
* the task has waited at least T since it last became PENDING (``pending_since``; its ``not_before`` if
  later: a backoff is not waiting for the account);
* the holding account cannot run it now (:func:`blocked`): it is paused, or every mode the task accepts
  is refused by a cool-down or by the quota gate for the task's module (the same
  :func:`services.broker.ops_quota.admission` a lease of that account would get), or no worker of that
  account has made a request to this broker for T (:class:`Activity`), or it is busy: it holds the lease
  of another RUNNING task (:func:`busy_with`). A busy account is not broken, but a turn that has waited
  T behind its other work while the account asking for it is idle (a lease request is an idle worker
  asking) is research standing still beside free capacity: issue 11's "no account with quota left sits
  idle while the research has anything to do" outweighs keeping the provider-side thread, which the
  modules' prompts do not need.

The hand-off happens in the lease transaction that grants the turn to the new account (:func:`apply`):
the conversation record's ``account`` changes, its ``url``/``title`` (the old account's page) are dropped,
and ``handoffs`` gets ``{"from", "to", "at", "why", "task", "turn"}`` (the last ``HANDOFFS_KEPT``); the
task's ``RUNNING`` history entry and its ``task.running`` event say ``handed off from A: why``. The new
account's worker holds no record of the conversation, so it starts a new one with the provider (the
modules' prompts carry their own context: the explorer's give the seed, the axioms and the recent
exchanges; see services/backends/conversations.py). The scheduler proposes hand-offs by the same rule
(services/scheduler/core.py), but only this transaction decides.
"""
from __future__ import annotations

from typing import Any

from services.broker import ops_quota as quota
from services.broker import schema as S
from services.broker.tx import Tx

HANDOFFS_KEPT = 20   # hand-off records kept per conversation (the task histories keep every one)
MAX_ACCOUNTS = 10_000   # accounts whose last request is remembered (far more than any deployment has)


class Activity:
    """When a worker of each account last made a request to this broker (world time, in memory).

    An account counts as offline once it has been silent for the hand-off time. A worker running a long
    turn renews its lease every third of its TTL, so it is never silent while it works; an account that is
    idle with a turn bound to it gets that turn from the scheduler and leases it. Not durable: after a
    broker restart every account counts as active at the restart (a hand-off waits T again)."""

    def __init__(self, started: float):
        self.started = started
        self.last: dict[str, float] = {}

    def seen(self, account: str, now: float) -> None:
        if account in self.last or len(self.last) < MAX_ACCOUNTS:   # a peer inventing names cannot grow it
            self.last[account] = now

    def silent_for(self, account: str, now: float) -> float:
        return now - self.last.get(account, self.started)


def waiting_since(task: dict[str, Any]) -> float:
    """World time since which the task has been waiting to run (see the module docstring)."""
    return max(task.get("pending_since") or task.get("created") or 0.0, task.get("not_before") or 0.0)


def modes_of(task: dict[str, Any]) -> list[str]:
    req = task.get("requires") or {}
    wanted = req.get("mode", "standard")
    return [wanted] + (["standard"] if wanted == "deep" and req.get("deep_fallback") else [])


def blocked(tx: Tx, account: str, task: dict[str, Any], after: float,
            cache: dict[tuple[str, tuple[str, ...], str], str | None] | None = None) -> str | None:
    """Why ``account`` cannot run ``task`` now (None if it can, as far as the broker knows).

    ``after`` is how long (world seconds) an account must have been silent to count as offline. ``cache``
    (one lease's) keeps the answer per (account, modes, module): a lease scan may ask it for many turns."""
    key = (account, tuple(modes_of(task)), task["module"])
    if cache is not None and key in cache:
        return cache[key]
    why = _blocked(tx, account, task, after)
    if cache is not None:
        cache[key] = why
    return why


def _blocked(tx: Tx, account: str, task: dict[str, Any], after: float) -> str | None:
    acct = quota.get_account(tx, account)
    if acct.get("paused"):
        return f"{account} is paused ({acct.get('pause_reason') or 'no reason given'})"
    refusals: list[str] = []
    for mode in modes_of(task):
        ok, why, _ = quota.admission(tx, account, mode, task["module"])
        if ok:
            refusals = []
            break
        refusals.append(why)
    if refusals:
        return "; ".join(refusals)
    activity = getattr(tx, "activity", None)
    if activity is not None and activity.silent_for(account, tx.now) >= after:
        return f"no worker of {account} has been seen for {activity.silent_for(account, tx.now):.0f}s (offline)"
    busy = busy_with(tx, account)
    if busy:
        return f"{account} is busy with task {busy[0]}" + (f" and {len(busy) - 1} more" if len(busy) > 1 else "")
    return None


def busy_with(tx: Tx, account: str) -> list[int]:
    """Ids of the RUNNING tasks leased to ``account`` (the by-state index: as many as there are workers)."""
    prefix = S.state_prefix("RUNNING")
    cur = tx.cursor("by_state")
    out = []
    ok = cur.set_range(prefix)
    while ok and cur.key().startswith(prefix):
        tid = S.from_u64(cur.key()[len(prefix):])
        if ((tx.task(tid).get("lease") or {}).get("account")) == account:
            out.append(tid)
        ok = cur.next()
    return out


def check(tx: Tx, task: dict[str, Any], rec: dict[str, Any],
          cache: dict[tuple[str, tuple[str, ...], str], str | None] | None = None) -> tuple[bool, str]:
    """May ``task`` take its conversation (record ``rec``) away from the account it lives on now?
    ``(ok, why)``: on success ``why`` says why the conversation moves, else why not (the lease's reason)."""
    holder = rec["account"]
    after = tx.handoff_after
    if after <= 0:
        return False, "conversation hand-off is off (scheduler.conversation_handoff = 0)"
    unknown = task.get("unknown_turn")
    if unknown and not (unknown.get("until") is not None and tx.now >= unknown["until"]):
        return False, f"its attempt {unknown.get('attempt')} has an unknown outcome on {unknown.get('account')}"
    other = rec.get("unknown")
    if other and other.get("task") != task["id"] and not (other.get("until") is not None and tx.now >= other["until"]):
        return False, f"its turn task {other['task']} has an unknown outcome on {other.get('account')}"
    due = waiting_since(task) + after
    if tx.now < due:
        return False, f"it may be handed off from {tx.now - waiting_since(task):.0f}s of {after:.0f}s waiting"
    why = blocked(tx, holder, task, after, cache)
    if why is None:
        return False, f"{holder} can run it"
    return True, why


def apply(tx: Tx, rec: dict[str, Any], conv: str, task: dict[str, Any], to: str, why: str) -> dict[str, Any]:
    """Move the conversation record ``rec`` to account ``to`` (inside the lease transaction); returns the
    hand-off record."""
    entry = {"from": rec.get("account"), "to": to, "at": tx.now, "why": why[:300], "task": task["id"],
             "turn": rec.get("turns", 0)}
    rec["account"] = to
    rec.pop("url", None)      # the old account's page: the new account starts its own
    rec.pop("title", None)
    rec["handoffs"] = (rec.get("handoffs") or [])[-(HANDOFFS_KEPT - 1):] + [entry]
    tx.emit("conversation.handoff", conversation=conv, id=task["id"], module=task["module"],
            **{k: entry[k] for k in ("from", "to", "why", "turn")})
    return entry
