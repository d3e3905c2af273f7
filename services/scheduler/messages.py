"""The scheduler core's message dispatch: what workers and query clients send over the ROUTER.

:class:`WorkerMessages` is one part of :class:`services.scheduler.core.SchedulerCore` (its base class),
kept apart so that each file has one job: the core tracks tasks from broker events and runs its tick and
dispatch; this part decodes and checks each message (``ready``, ``heartbeat``, ``done``, ``disconnect``,
``query``), changes the workers table and the task table accordingly, and answers. It is the core — it
changes the scheduler's state, which the modules that only decide or answer must not (they read the
view, docs/scheduling.md § Internal state).
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from services.scheduler import queries
from services.scheduler.accounts import Accounts
from services.scheduler.classes import MODES, candidate_modes, charge_modules, placement_class
from services.scheduler.conversations import Conversations
from services.scheduler.handoff import Handoffs
from services.scheduler.idle import IdleWatch
from services.scheduler.priority import PriorityModel, number
from services.scheduler.roles import refusal
from services.scheduler.tasks import TaskTable
from services.scheduler.view import SchedulerView
from services.scheduler.workers import Revocations, Worker, WorkerRegistry
from shared import protocol, sockets
from shared.errors import ErrorCode, FanoError
from shared.roles import NOBODY, Role, of_identity

DECLINE_HOLD = 1.0       # real seconds a task declined for no known reason sits out; doubled per decline
DECLINE_HOLD_MAX = 60.0

log = logging.getLogger("scheduler")


class WorkerMessages:
    """Worker and query messages in; the core's state changed and answers queued (``_send``)."""

    # the core's state (set by SchedulerCore.__init__) and the tracking steps it provides
    config: Any
    clock: Any
    model: PriorityModel
    table: TaskTable
    convs: Conversations
    workers: WorkerRegistry
    accounts: Accounts
    handoffs: Handoffs
    revocations: Revocations
    idle_watch: IdleWatch
    view: SchedulerView
    errors: Counter
    last_outcome: dict[str, dict]
    why_lookups: list[tuple[bytes, str, int]]
    weights_store: Callable[[dict | None], None] | None

    def _send(self, ident: bytes, msg_type: str, **fields) -> None:
        raise NotImplementedError

    def _requeue(self, tid: int) -> None:
        raise NotImplementedError

    def stats(self) -> dict:
        raise NotImplementedError

    def on_message(self, ident: bytes, frames: list[bytes], role: Role | None = None) -> None:
        """One message from the ROUTER. Never raises: bad input is counted and answered.

        A message that does not decode is answered ``disconnect`` with the reason (the peer re-announces
        itself; a query with a readable cid gets the error as its answer), a query whose handler fails
        is answered ``INTERNAL``; either way the error is counted in
        ``errors`` (``stats`` and the minute's log line).

        ``role``: the sender's, proven by its CURVE key (tcp://); None over ipc://, where the program name
        of its identity gives it (shared/roles.py). A message outside the role (:func:`refusal`) is
        answered like a bad one, with ``FORBIDDEN``."""
        try:
            msg = protocol.decode_worker(frames)
        except FanoError as exc:
            self.errors[exc.name] += 1
            if "cid" in exc.details:   # a query: the asker gets the reason as its answer
                self._send(ident, "answer", cid=exc.details["cid"], ok=False, error=exc.to_wire())
            else:
                self._send(ident, "disconnect", reason=f"bad message: {exc.message}"[:200])
            return
        except Exception:  # a bug in the decoder: it must raise only FanoError; keep serving everyone
            self.errors["INTERNAL"] += 1
            log.exception("error decoding a message from %r", ident[:64])
            self._send(ident, "disconnect", reason="bad message: undecodable")
            return
        role = role if role is not None else of_identity(ident)
        w = self.workers.get(ident)
        refused = refusal(role, msg, w)
        if refused is not None:
            self.errors[refused.name] += 1
            if w is not None and role == NOBODY:   # its key was revoked: its leases are voided now too
                self._forget(w, "its CURVE key was revoked", silent=True)
            if msg["type"] == "query":
                self._send(ident, "answer", cid=msg["cid"], ok=False, error=refused.to_wire())
            else:
                self._send(ident, "disconnect", reason=(protocol.REFUSED + refused.message)[:200])
            return
        handler = {"ready": self.on_ready, "heartbeat": self.on_heartbeat, "done": self.on_done,
                   "disconnect": self.on_disconnect, "query": self.on_query}.get(msg["type"])
        if handler is None:
            self.errors["UNEXPECTED_MESSAGE"] += 1
            self._send(ident, "disconnect", reason=f"{msg['type']} is sent by the scheduler, not to it")
            return
        try:
            handler(ident, msg)
        except Exception as exc:  # a bug: keep serving everyone else
            self.errors["INTERNAL"] += 1
            log.exception("error handling %s from %r", msg["type"], ident[:64])
            if msg["type"] == "query":   # the asker waits for an answer: do not leave it to its timeout
                err = FanoError(ErrorCode.INTERNAL, f"the scheduler failed answering: {type(exc).__name__}")
                self._send(ident, "answer", cid=msg["cid"], ok=False, error=err.to_wire())

    def on_too_large(self, ident: bytes, total: int) -> None:
        """A message over ``protocol.MAX_MESSAGE`` bytes in all its frames (discarded unread)."""
        exc = sockets.too_large_message(total)
        self.errors[exc.name] += 1
        self._send(ident, "disconnect", reason=f"bad message: {exc.message}")

    def on_ready(self, ident: bytes, msg: dict) -> None:
        mono = self.clock.mono()
        modes = tuple(m for m in msg["modes"] if m in MODES)
        if not msg["account"] or not modes or not msg["worker"]:
            self.errors["BAD_READY"] += 1
            self._send(ident, "disconnect", reason="ready needs a worker name, an account and modes")
            return
        w, old = self.workers.add(ident, msg["worker"], mono)
        self.revocations.back(w.name)
        if old is not None:
            self._forget(old, "reconnected")
        finishing = msg.get("finishing")
        if w.state == "assigned" and w.task_id is not None:
            a = self.table.assigned.get(w.task_id)
            if a is not None and a.ident == ident and finishing == w.task_id:
                a.confirmed = True   # it ran the task (its running event is on its way) and is delivering it
            elif a is not None and a.ident == ident and not a.finished:
                self._requeue(w.task_id)   # it says it is idle: it did not take the assignment
        w.account, w.backend, w.modes = msg["account"], msg["backend"], modes
        self.accounts.note(w.account, w.backend, modes)
        w.finishing = finishing
        w.set_state("idle", None, mono)
        self.handoffs.worker_ready(w.account)

    def on_heartbeat(self, ident: bytes, msg: dict) -> None:
        mono = self.clock.mono()
        tid = msg.get("task_id") if isinstance(msg.get("task_id"), int) else None
        w = self.workers.get(ident)
        if w is None:
            if tid is None:
                self.errors["UNKNOWN_PEER"] += 1
                self._send(ident, "disconnect", reason="unknown worker: say ready")
                return
            # a worker met mid-task (we restarted): keep it; it says ready when it is done
            name = msg.get("worker")
            if not isinstance(name, str) or not name:
                name = ident.decode(errors="replace")
            w, old = self.workers.add(ident, name, mono)
            self.revocations.back(w.name)
            if old is not None:
                self._forget(old, "reconnected")
            run = self.table.running.get(tid)
            # the lease's account only if the lease is this worker's: a worker cut off from us (a partition)
            # whose lease was revoked and whose task now runs on another account must not be taken for that
            # account's worker (its report would then be refused as speaking for it)
            w.account = run.account if run is not None and run.worker == w.name else None
            w.set_state("busy", tid, mono)
            return
        w.last_seen = mono
        if tid is None or tid == w.finishing:
            return   # idle, or still delivering the task it said ready for: not busy with it again
        a = self.table.assigned.get(tid)
        if a is not None and a.ident == ident:
            a.confirmed = True
        if w.state == "idle" or (w.state == "assigned" and w.task_id == tid):
            w.set_state("busy", tid, mono)

    def on_done(self, ident: bytes, msg: dict) -> None:
        mono, world = self.clock.mono(), self.clock.world()
        tid, outcome = msg["task_id"], msg["outcome"]
        if outcome not in protocol.OUTCOMES:
            self.errors["BAD_OUTCOME"] += 1
            outcome = "failed"
        message = str(msg.get("message") or "")[:500]
        retry_at = number(msg.get("retry_at")) or None
        w = self.workers.get(ident)
        a = self.table.assigned.get(tid)
        account = w.account if w is not None and w.account else (a.account if a else None)
        held = w is not None and (w.task_id == tid or w.finishing == tid)
        if w is not None:
            if w.finishing == tid:
                w.finishing = None   # said ready while delivering it: its state moved on already
            w.last_seen = mono
            w.last_task, w.last_outcome = tid, outcome
            w.last_error = None if outcome == "done" else message
            if w.task_id == tid:
                w.set_state("unready", None, mono)
        if account:
            self.last_outcome[account] = {"task_id": tid, "outcome": outcome, "message": message, "at": world}
        mine = a is not None and a.ident == ident
        if not mine and not held:
            # a worker reporting on a task it was not given: harmless here (the result itself goes to the
            # broker, which fences it by epoch), but counted and logged so a confused worker is visible
            self.errors["FOREIGN_DONE"] += 1
            log.warning("done for task %s from %s, which does not hold it (ignored)", tid,
                        w.name if w is not None else ident)
        t = self.table.tasks.get(tid)
        if outcome != "declined":
            if mine and a is not None:
                # it leased the task, but its events have not reached us yet: ask the broker
                a.confirmed = a.finished = True
                self.table.missing.add(tid)
            return
        if retry_at is not None and retry_at > world and account and t is not None:
            # quota or cool-down: this account cannot take this module's work in these modes until then
            worker_modes = w.modes if w is not None else MODES
            cls = t.cls or placement_class(t, self.convs.holder)
            for mode in candidate_modes(cls):
                if mode in worker_modes:
                    for module in charge_modules(cls, t.module):   # each share it may draw on refused it
                        self.accounts.block(account, mode, module, retry_at, message or "lease declined")
            if mine:
                self._requeue(tid)
                mine = False
            self.handoffs.recheck(account)   # turns of its conversations may leave it now
        elif mine and t is not None:
            # declined for a reason we cannot see (state changed, binding, backoff): sit out, refresh
            t.declines += 1
            hold = min(DECLINE_HOLD_MAX, DECLINE_HOLD * 2 ** (t.declines - 1))
            t.hold_until = world + hold * getattr(self.clock, "scale", 1.0)
            self.table.missing.add(tid)
        if mine:
            self._requeue(tid)

    def on_disconnect(self, ident: bytes, msg: dict) -> None:
        w = self.workers.get(ident)
        if w is not None:
            self._forget(w, "said disconnect")

    def on_unreachable(self, ident: bytes) -> None:
        """A send failed (the peer is gone)."""
        w = self.workers.get(ident)
        if w is not None:
            self._forget(w, "unreachable")

    def _forget(self, w: Worker, why: str, silent: bool = False) -> None:
        """Forget worker ``w``; ``silent``: it stopped heartbeating (frozen, hung, cut off), so the leases
        it holds are revoked now (the broker frees what it had not sent yet for any account) instead of
        running into their deadlines, and a lease it is granted later is revoked when we hear of it."""
        self.workers.forget(w.ident)
        log.info("forgot worker %s (%s, account %s): %s", w.name, w.state, w.account, why)
        for tid, a in list(self.table.assigned.items()):
            if a.ident == w.ident:
                self._requeue(tid)
        if silent and self.workers.named(w.name) is None:
            self.revocations.drop(w.name, why, self.table.running)
        if w.account and not self.workers.for_account(w.account):
            self.handoffs.worker_gone(w.account, self.clock.world())

    # --- queries --------------------------------------------------------------------------------------

    def on_query(self, ident: bytes, msg: dict) -> None:
        """``stats``, ``weights`` (which changes the weights) and ``idle`` (which keeps the idle spells) are the
        core's; the read-only questions are :func:`services.scheduler.queries.answer`'s, from the view."""
        cid, what = msg["cid"], msg["what"]
        try:
            if what == "stats":
                result: dict | None = self.stats()
            elif what == "weights":
                result = queries.weights(self.model, self.weights_store, self.config.names_checked,
                                         msg.get("set"), msg.get("reset") is True)
            elif what == "idle":
                result = self.idle_watch.report(self.view)
            else:
                result = queries.answer(self.view, msg)
        except FanoError as exc:
            self._send(ident, "answer", cid=cid, ok=False, error=exc.to_wire())
            return
        if result is None:   # `why` about a task we do not track: the service asks the broker
            self.why_lookups.append((ident, cid, msg["task_id"]))
            return
        self._send(ident, "answer", cid=cid, ok=True, result=result)

    def take_why_lookups(self) -> list[tuple[bytes, str, int]]:
        """The ``why`` questions about tasks the core does not track: the service reads each task from the
        broker and answers with :meth:`answer_why_untracked`."""
        lookups, self.why_lookups = self.why_lookups, []
        return lookups

    def answer_why_untracked(self, ident: bytes, cid: str, tid: int, rec: Mapping[str, Any] | None) -> None:
        self._send(ident, "answer", cid=cid, ok=True, result=queries.why_untracked(tid, rec))
