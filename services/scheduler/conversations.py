"""The scheduler's conversations model: affinity, one turn in flight, waiting turns and expected turns.

A conversation is a chain of tasks, one per turn, bound to one account once its first turn runs (the
broker enforces the binding in the lease transaction; docs/tasks.md § Conversations). :class:`Conversations`
is the one place the scheduler keeps what it knows of each:

* ``holder``   the account the broker bound it to, as the events said (``task.running``, or a
  ``conversation_account`` field on a task's record): later turns are placed there (affinity).
* ``inflight`` its turn assigned or running: at most one per conversation; the others are held
  (:meth:`waits`, the rule; the task table keeps the held ids).
* ``turns``    its PENDING turns the scheduler tracks.
* ``open``     the estimate of its remaining work (:mod:`services.scheduler.placement`): the account it is
  bound to for that purpose (also tentatively, while an opening turn is assigned: :meth:`assigned`), its
  mode, the turns done, the module's hint of its length.

Turns per conversation: the module's hint ``attrs.expected_turns`` if it is a number >= 1, else the mean
over finished conversations smoothed with ``DEFAULT_TURNS`` (weight ``TURNS_PRIOR``), in which the open
conversations that already ran longer than that count with their turns so far. A conversation is finished
once no turn of it has waited or run for ``CONV_QUIET`` world seconds after its last turn ended
(:meth:`sweep`); a turn arriving later simply reopens it (the broker still holds the binding).

Nothing here is durable: a rebuild forgets it (:meth:`reset`; the learned mean stays) and the broker's
records bring the bindings back.
"""
from __future__ import annotations

import heapq
import math
from collections.abc import Iterable

from services.scheduler.priority import STANDARD, QTask

DEFAULT_TURNS = 6.0        # expected turns of a conversation before any was seen to finish
TURNS_PRIOR = 2.0          # weight of DEFAULT_TURNS in the mean over finished conversations
CONV_QUIET = 300.0         # world seconds without a waiting or running turn: the conversation is over


def _hint(value: object) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 1:
        return float(value)
    return None


class _Conv:
    """An open conversation's estimate record."""

    __slots__ = ("account", "mode", "done", "hint", "last_end")

    def __init__(self, account: str, mode: str, hint: float | None):
        self.account, self.mode, self.hint = account, mode, hint
        self.done = 0
        self.last_end = 0.0


class Conversations:
    """Every conversation the scheduler knows: binding, turn in flight, waiting turns, expected turns."""

    def __init__(self) -> None:
        self.finished = 0          # conversations seen to finish, and their turns (the learned mean)
        self.finished_turns = 0
        self.reset()

    def reset(self) -> None:
        """Forget every conversation (a rebuild reloads them); the learned mean stays."""
        self.holder: dict[str, str] = {}
        self.inflight: dict[str, int] = {}
        self.turns: dict[str, set[int]] = {}
        self.open: dict[str, _Conv] = {}
        self.by_account: dict[str, set[str]] = {}
        self._quiet: list[tuple[float, str, int]] = []   # (world time it may be finished, conv, done count)
        self._mean: float | None = None   # expected_turns() without a hint, until a turn ends

    # --- affinity -----------------------------------------------------------------------------------------

    def holder_of(self, t: QTask) -> str | None:
        """The account ``t``'s conversation lives on, as far as the broker told us (None: unbound, or
        not a conversation)."""
        conv = t.conversation
        return (self.holder.get(conv) or t.conversation_account) if conv else None

    def leased(self, conv: str, account: str, mode: str | None, hint: object = None) -> None:
        """A turn of ``conv`` was leased on ``account``: the broker bound the conversation there."""
        self.holder[conv] = account   # later turns go to the account that holds it
        self.bind(conv, account, mode or STANDARD, hint)

    def assigned(self, t: QTask, account: str, mode: str | None, opens: bool) -> None:
        """``t`` was assigned to ``account``; an opening turn (``opens``) binds its conversation
        tentatively (the lease confirms it, or :meth:`requeued` forgets it)."""
        if opens and t.conversation:
            self.bind(t.conversation, account, mode or STANDARD, t.attrs.get("expected_turns"))

    def requeued(self, t: QTask) -> None:
        """``t``'s assignment ended without a lease: a tentative binding never happened, and a proposed
        hand-off that did not happen leaves the conversation where it was."""
        conv = t.conversation
        if not conv:
            return
        if conv not in self.holder and not t.conversation_account:
            self.unbind(conv)
        elif t.handoff:
            holder = self.holder_of(t)
            if holder:
                self.bind(conv, holder, t.requires.get("mode") or STANDARD, t.attrs.get("expected_turns"))

    # --- turns ----------------------------------------------------------------------------------------------

    def track(self, t: QTask) -> None:
        """``t``, a PENDING turn, is tracked; the estimate follows the binding the broker told us."""
        conv = t.conversation
        if not conv:
            return
        self.turns.setdefault(conv, set()).add(t.id)
        holder = self.holder_of(t)
        if holder and self.account_of(conv) != holder:
            self.bind(conv, holder, t.requires.get("mode") or STANDARD, t.attrs.get("expected_turns"))

    def untrack(self, conv: str | None, tid: int) -> None:
        if not conv:
            return
        ids = self.turns.get(conv)
        if ids is not None:
            ids.discard(tid)
            if not ids:
                del self.turns[conv]

    def waits(self, conv: str | None, tid: int) -> bool:
        """Must turn ``tid`` of ``conv`` be held? Yes while another turn of it is in flight."""
        return conv is not None and self.inflight.get(conv, tid) != tid

    def start_turn(self, conv: str, tid: int) -> list[int]:
        """Turn ``tid`` of ``conv`` is assigned or running; returns its other tracked turns (they wait)."""
        self.inflight[conv] = tid
        return [other for other in self.turns.get(conv, ()) if other != tid]

    def end_turn(self, conv: str, tid: int) -> bool:
        """``tid`` is no longer in flight; True if it was ``conv``'s turn in flight (its held turns go)."""
        if self.inflight.get(conv) == tid:
            del self.inflight[conv]
            return True
        return False

    def busy(self, conv: str) -> bool:
        """A turn of ``conv`` waits or runs."""
        return conv in self.turns or conv in self.inflight

    # --- estimates ------------------------------------------------------------------------------------------

    def expected_turns(self, hint: object = None) -> float:
        """The hint if it is one, else the mean over finished conversations smoothed with the prior, where
        open conversations that already ran more turns than that count too, with their turns so far (a
        lower bound): a module whose conversations are longer than the prior is noticed before the first
        one ends. O(open conversations), cached until a turn ends."""
        if isinstance(hint, (int, float)) and not isinstance(hint, bool) and math.isfinite(hint) and hint >= 1:
            return float(hint)
        if self._mean is None:
            total, n = DEFAULT_TURNS * TURNS_PRIOR + self.finished_turns, TURNS_PRIOR + self.finished
            longer = [c.done for c in self.open.values() if c.hint is None and c.done > total / n]
            self._mean = (total + sum(longer)) / (n + len(longer))
        return self._mean

    def bind(self, conv: str, account: str, mode: str, hint: object = None) -> None:
        """Estimate ``conv`` as living on ``account`` (a first turn assigned or running, or the broker
        says so)."""
        c = self.open.get(conv)
        if c is not None and c.account == account:
            return
        if c is not None:
            self._drop(conv, c)
        self.open[conv] = _Conv(account, mode, _hint(hint))
        self.by_account.setdefault(account, set()).add(conv)

    def unbind(self, conv: str) -> None:
        """A tentative binding (an assigned first turn) that the broker never made: forget it."""
        c = self.open.get(conv)
        if c is not None and c.done == 0:
            self._drop(conv, c)

    def account_of(self, conv: str) -> str | None:
        """The account ``conv`` is estimated on (tentatively too), or None."""
        c = self.open.get(conv)
        return c.account if c else None

    def open_on(self, account: str) -> Iterable[str]:
        return self.by_account.get(account, ())

    def turn_ended(self, conv: str, done: bool, now: float) -> None:
        c = self.open.get(conv)
        if c is None:
            return
        if done:
            c.done += 1
            self._mean = None
        c.last_end = now
        heapq.heappush(self._quiet, (now + CONV_QUIET, conv, c.done))

    def remaining(self, conv: str) -> float:
        """Turns of open ``conv`` not started yet (at least one while a turn of it waits)."""
        c = self.open[conv]
        left = self.expected_turns(c.hint) - c.done - (1 if conv in self.inflight else 0)
        return max(left, 1.0 if conv in self.turns else 0.0)

    def sweep(self, now: float) -> list[str]:
        """Close the conversations quiet for ``CONV_QUIET`` (no turn waiting or running)."""
        closed = []
        while self._quiet and self._quiet[0][0] <= now:
            _, conv, done = heapq.heappop(self._quiet)
            c = self.open.get(conv)
            if c is None or c.done != done or c.last_end + CONV_QUIET > now or self.busy(conv):
                continue
            self.finished += 1
            self.finished_turns += c.done
            self._drop(conv, c)
            closed.append(conv)
        return closed

    def _drop(self, conv: str, c: _Conv) -> None:
        del self.open[conv]
        self._mean = None
        convs = self.by_account.get(c.account)
        if convs is not None:
            convs.discard(conv)
            if not convs:
                del self.by_account[c.account]
