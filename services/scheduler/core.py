"""The scheduler's decisions, free of sockets: events and worker messages in, messages to send out.

:class:`SchedulerCore` is driven by the service (``services/scheduler/service.py``) and directly by the
tests: ``on_event(event)``, ``on_message(identity, frames)`` (or ``on_ready``/``on_heartbeat``/
``on_done``), ``tick()`` (timers and dispatch), ``on_task_record(record)`` (a fresh ``get``;
``refresh_wanted``/``on_refresh`` for the tasks it is unsure of), and :meth:`take_output` for the
``(identity, type, fields)`` messages to send. Time comes from the clock: world time for aging,
``not_before`` and quota times; monotonic time for heartbeats and assignments.

The core is the only writer of the scheduler's state, which lives with its owners: the task table
(:class:`services.scheduler.tasks.TaskTable`), the conversations
(:class:`services.scheduler.conversations.Conversations`), the workers table
(:class:`services.scheduler.workers.WorkerRegistry`) and the accounts
(:class:`services.scheduler.accounts.Accounts`). Worker and query messages are handled by its base class
(:class:`services.scheduler.messages.WorkerMessages`). The code that decides or answers from them reads them
through :attr:`SchedulerCore.view` (:class:`services.scheduler.view.SchedulerView`), never the core.

What it tracks — PENDING tasks only, each in exactly one place of the task table: the queue, held behind
its conversation's turn in flight (the conversations say which turn is in flight), or assigned (sent to a
worker that has not been seen running it; back to the queue when the worker declines, says ``ready``
again, is forgotten, or stays silent about it for ``assign_timeout``).

A ``task.running`` event ends the tracking (the task is the broker's lease's business until it comes
back with ``task.pending``); the table's ``running`` remembers who runs what and since when, for cancels,
conversation affinity and the expected finish times.

Placement classes (the bin key, with the module) are described in :mod:`services.scheduler.classes`.
Which idle worker takes the best task — or leaves it for a much faster account, and which account opens
a new conversation — is decided with the estimates of :mod:`services.scheduler.placement`
(:meth:`services.scheduler.placement.Placement.admits`). Which waiting turns are proposed to leave the
account their conversation lives on (conversation hand-off) is :mod:`services.scheduler.handoff`'s job.
"""
from __future__ import annotations

import itertools
import logging
from collections import Counter, deque
from collections.abc import Callable, Mapping
from typing import Any

from services.scheduler import responsive
from services.scheduler.accounts import Accounts
from services.scheduler.classes import (
    MODES,
    opens_conversation,
    placement_class,
)
from services.scheduler.conversations import Conversations
from services.scheduler.handoff import Handoffs
from services.scheduler.idle import IdleWatch
from services.scheduler.messages import WorkerMessages
from services.scheduler.placement import Placement
from services.scheduler.priority import PriorityModel, QTask, number
from services.scheduler.tasks import Assignment, Running, TaskTable
from services.scheduler.view import SchedulerView
from services.scheduler.workers import Revocations, WorkerRegistry
from shared import protocol

RECENT = 20              # completions kept for `top`
ENDED = ("task.done", "task.parked", "task.paused", "task.cancelled")

log = logging.getLogger("scheduler")


class SchedulerCore(WorkerMessages):
    """The scheduler's state and its changes: tracking from broker events, the tick and dispatch (worker
    and query messages: :class:`services.scheduler.messages.WorkerMessages`)."""

    def __init__(self, config, clock):
        self.config = config
        self.scfg = config.scheduler
        self.clock = clock
        self.model = PriorityModel(self.scfg)
        self.workers = WorkerRegistry()
        self.accounts = Accounts(config.accounts)
        self.errors: Counter = Counter()
        self.recent: deque = deque(maxlen=RECENT)
        self.last_outcome: dict[str, dict] = {}       # account -> last `done` of its workers
        self.table = TaskTable(self.model)
        self.convs = Conversations()
        self.out: list[tuple[bytes, str, dict]] = []
        self.why_lookups: list[tuple[bytes, str, int]] = []   # `why` about tasks we do not track
        self.revocations = Revocations()   # leases of workers dropped as silent (the service sends them)
        self._last_tick = clock.mono()
        self.assigned_total = 0
        # the service's own counters (synced, last seq), shown by `stats`: updated in place (the view holds it)
        self.status: dict[str, Any] = {}
        # where run-time module weights are kept (the service's broker write; None: not durable, in tests)
        self.weights_store: Callable[[dict | None], None] | None = None
        self._next_heartbeat = 0.0
        # what placement, the responsive rule, hand-offs, the idle watch and the queries read (never the core)
        self.view = SchedulerView(config, clock, self.model, self.table, self.convs, self.workers, self.accounts,
                                  self.recent, self.last_outcome, self.status)
        self.placement = self.view.placement = Placement(self.view)
        self.idle_watch = IdleWatch()   # since when accounts sit idle while work waits (the `idle` query)
        self.handoffs = self.view.handoffs = Handoffs(self.view, self._place)
        self.reset()

    def reset(self) -> None:
        """Forget every task (a rebuild follows). Workers stay; assignments stay until the rebuild says
        whether their tasks are still PENDING (:meth:`finish_rebuild`)."""
        self.table.reset()
        self.convs.reset()
        self.accounts.reset()
        self.placement.reset()
        self.handoffs.reset()

    def finish_rebuild(self) -> None:
        self.table.drop_stale_assignments()

    def take_output(self) -> list[tuple[bytes, str, dict]]:
        out, self.out = self.out, []
        return out

    def _send(self, ident: bytes, msg_type: str, **fields) -> None:
        self.out.append((ident, msg_type, fields))

    # --- tracking -------------------------------------------------------------------------------------

    def _track(self, t: QTask) -> None:
        """A PENDING task, new or updated (submitted, back from a lease, resumed, refreshed)."""
        self.table.put(t)
        self.convs.track(t)
        run = self.table.running.pop(t.id, None)
        if run is not None:
            self._end_turn(run.conversation, t.id)
        if t.id not in self.table.assigned:   # an assigned task stays out until its assignment ends
            self._place(t)

    def _place(self, t: QTask) -> None:
        self.table.unfile(t)
        if t.unknown_account and t.unknown_until:
            if self.clock.world() >= t.unknown_until:
                # the account that must reconcile its unknown turn had its time (frozen or gone): the
                # broker now lets any account take the task, and so do we
                t.unknown_account, t.unknown_until = None, 0.0
            else:
                self.table.hold_unknown(t)
        conv = t.conversation
        self.handoffs.propose(t, self.clock.world())
        t.cls = placement_class(t, self.convs.holder)
        t.not_before = max(t.not_before, t.hold_until)
        self.table.file(t, self.clock.world(), conv if self.convs.waits(conv, t.id) else None)

    def _untrack(self, tid: int) -> QTask | None:
        t = self.table.pop(tid)
        self.handoffs.forget(tid)
        self.placement.forget(tid)
        if t is None:
            return None
        self.convs.untrack(t.conversation, tid)
        return t

    def _start_turn(self, conv: str | None, tid: int) -> None:
        """A turn of ``conv`` is assigned or running: its other PENDING turns wait."""
        if not conv:
            return
        for other in self.convs.start_turn(conv, tid):
            if other in self.table.queue:
                self._place(self.table.tasks[other])

    def _end_turn(self, conv: str | None, tid: int) -> None:
        if conv and self.convs.end_turn(conv, tid):
            for other in self.table.release_held(conv):
                self._place(other)

    # --- broker events --------------------------------------------------------------------------------

    def on_event(self, ev: Mapping[str, Any]) -> None:
        """Apply one broker event (in sequence order; the service deduplicates by seq)."""
        typ = ev.get("type")
        try:
            if typ in ("task.submitted", "task.pending"):
                self._track(QTask.from_fields(ev))
            elif typ == "task.due":
                t = self.table.tasks.get(ev["id"])
                if t is None:
                    self.table.missing.add(int(ev["id"]))
                elif t.id in self.table.queue and not self.table.queue.is_ready(t.id):
                    t.not_before = min(t.not_before, self.clock.world())   # the broker's clock says due
                    self._place(t)
            elif typ == "task.running":
                self._on_running(int(ev["id"]), ev.get("worker"), ev.get("account"), mode=ev.get("mode"),
                                 start=number(ev.get("ts")) or None, epoch=ev.get("epoch"))
            elif typ in ENDED:
                self._on_ended(typ, int(ev["id"]), ev)
            elif typ == "task.priority":
                t = self.table.tasks.get(ev["id"])
                if t is not None and isinstance(ev.get("priority"), int):
                    t.priority = ev["priority"]
                    if t.id in self.table.queue:
                        self._place(t)
            elif isinstance(typ, str) and typ.startswith(("account.", "quota.")):
                if self.accounts.on_event(ev):
                    self.handoffs.recheck(ev["account"])
        except (KeyError, TypeError, ValueError) as exc:
            self.errors["bad_event"] += 1
            log.warning("ignoring malformed event %s: %r", typ, exc)

    def _on_running(self, tid: int, worker: str | None, account: str | None, conv: str | None = None,
                    mode: str | None = None, start: float | None = None, epoch=None) -> None:
        t = self._untrack(tid)
        conv = t.conversation if t is not None else conv
        mode = mode if mode in MODES else None
        epoch = epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None
        self.table.running[tid] = Running(worker, account, conv, mode, start, epoch)
        if self.workers.named(worker) is None:
            self.revocations.leased(tid, self.table.running[tid])   # granted to a worker we dropped as silent?
        if conv:
            if account:
                self.convs.leased(conv, account, mode, t.attrs.get("expected_turns") if t is not None else None)
            self._start_turn(conv, tid)
        w = self.workers.named(worker)
        if w is not None and w.state == "assigned" and w.task_id == tid:
            # only the expected transition: a late event must not mark a worker busy that said ready
            w.set_state("busy", tid, self.clock.mono())

    def _on_ended(self, typ: str, tid: int, ev: Mapping[str, Any]) -> None:
        a = self.table.assigned.get(tid)
        t = self._untrack(tid)
        run = self.table.running.pop(tid, None)
        conv = (run.conversation if run else None) or (t.conversation if t else None)
        self._end_turn(conv, tid)
        done = typ == "task.done" or ev.get("state") == "DONE"
        if typ == "task.done" and run is not None:   # a service time (a refreshed record has no end time)
            self.placement.learn(run.account, run.mode, run.start, ev.get("ts"))
        if conv:
            self.convs.turn_ended(conv, done, self.clock.world())
        if typ == "task.cancelled":
            # interrupt the in-flight request (or the lease about to be taken)
            targets = {a.ident} if a else set()
            for name in (ev.get("worker"), run.worker if run else None):
                w = self.workers.named(name)
                if w is not None:
                    targets.add(w.ident)
            for ident in targets:
                self._send(ident, "cancel", task_id=tid)
        elif typ == "task.done":
            self.recent.appendleft({"id": tid, "module": ev.get("module"), "kind": ev.get("kind"),
                                    "account": run.account if run else None, "at": ev.get("ts")})
            if run is not None:
                self._note_completed(run, tid, ev)

    def _note_completed(self, run: Running, tid: int, ev: Mapping[str, Any]) -> None:
        """What a worker's ``done`` would say of a completion: a worker that announced it with ``ready
        {finishing}`` sends none, the broker's event is the word (docs/wire.md § Worker protocol)."""
        w = self.workers.named(run.worker)
        if w is not None:
            if w.finishing == tid:
                w.finishing = None
            w.last_task, w.last_outcome, w.last_error = tid, "done", None
        if run.account:
            self.last_outcome[run.account] = {"task_id": tid, "outcome": "done", "message": "",
                                              "at": number(ev.get("ts")) or self.clock.world()}

    def on_task_record(self, rec: Mapping[str, Any]) -> None:
        """A task as ``get``/``list`` return it (rebuild, refreshes): the broker's word at that moment."""
        tid, state = int(rec["id"]), rec.get("state")
        if state == "PENDING":
            self.on_pending_task(QTask.from_fields(rec))
        elif state == "RUNNING":
            lease = rec.get("lease") or {}
            conv = (rec.get("requires") or {}).get("conversation")
            self._on_running(tid, lease.get("worker"), lease.get("account"), conv if isinstance(conv, str) else None,
                             mode=lease.get("mode"), start=number(lease.get("granted_at")) or None,
                             epoch=rec.get("epoch"))
        else:
            self._on_ended("task.refreshed", tid, rec)

    def on_pending_page(self, tasks: list[QTask]) -> None:
        """A rebuild's page of PENDING tasks: the ones :meth:`_track` would only queue are filed at once
        (TaskTable.load), the others tracked one by one."""
        for t in self.table.load(tasks, self.clock.world(), self.convs.holder):
            self.on_pending_task(t)

    def on_pending_task(self, t: QTask) -> None:
        """A task the broker says is PENDING (a record, or a rebuild's row: services/scheduler/rebuild.py)."""
        a = self.table.assigned.get(t.id)
        self._track(t)
        if a is not None and (a.finished or self.workers.get(a.ident) is None):
            self._requeue(t.id)

    def on_task_missing(self, tid: int) -> None:
        self._on_ended("task.refreshed", tid, {})

    def refresh_wanted(self, limit: int) -> list[int]:
        """Up to ``limit`` tasks whose state the core is unsure of: the service re-reads them with a broker
        ``get`` and hands the answer to :meth:`on_refresh`."""
        return list(itertools.islice(self.table.missing, limit))

    def on_refresh(self, tid: int, rec: Mapping[str, Any] | None, missing: bool = False) -> None:
        """The broker's answer to re-reading ``tid``: its record, or None (``missing``: there is no such
        task; otherwise the broker refused the read, and it is not asked again)."""
        self.table.missing.discard(tid)
        if rec is not None:
            self.on_task_record(rec)
        elif missing:
            self.on_task_missing(tid)

    def reread(self, tid: int) -> None:
        """Ask the broker again about ``tid`` (the service learned that its state changed some other way)."""
        self.table.missing.add(tid)

    def _requeue(self, tid: int) -> None:
        """An assignment ends without the task running: back to the queue."""
        self.table.assigned.pop(tid, None)
        t = self.table.tasks.get(tid)
        if t is None:
            return
        self.convs.requeued(t)
        self._end_turn(t.conversation, tid)
        self._place(t)


    # --- time -----------------------------------------------------------------------------------------

    def tick(self, dispatch: bool = True) -> None:
        """Timers (due tasks, liveness, assignment timeouts, heartbeats), then assign to idle workers."""
        mono, world = self.clock.mono(), self.clock.world()
        self.table.queue.advance(world)
        for account in self.accounts.prune(world):
            self.handoffs.recheck(account)   # its block ended: turns proposed to leave it stay after all
        self.convs.sweep(world)
        # a loop that itself stalled (a long rebuild) has not heard anyone: forget, but revoke nothing
        stalled = mono - self._last_tick > protocol.HEARTBEAT_INTERVAL * protocol.LIVENESS
        self._last_tick = mono
        for w in self.workers.expired(mono):
            self._forget(w, f"silent for {mono - w.last_seen:.1f}s", silent=not stalled)
        timeout = self.scfg.assign_timeout
        for tid, a in list(self.table.assigned.items()):
            if not a.confirmed and mono - a.at > timeout:
                log.warning("task %d: no word from its worker within %.0fs of assigning it; requeued", tid, timeout)
                self._requeue(tid)
        for w in self.workers:
            if w.state == "assigned" and w.task_id not in self.table.assigned and mono - w.since > timeout:
                # its assignment ended without a word from it (timeout, cancel): the assign may have
                # been lost, and it said ready, so it is offered work again
                w.set_state("idle", None, mono)
        self.handoffs.tick(world)
        for t in self.table.unknown_lapsed(world):
            self._place(t)
        if mono >= self._next_heartbeat:
            for w in self.workers:
                self._send(w.ident, "heartbeat")
            self._next_heartbeat = mono + protocol.HEARTBEAT_INTERVAL
        if dispatch:
            self.dispatch()
            self.idle_watch.tick(self.view, world, mono)

    def dispatch(self) -> int:
        """Give each idle worker the best task it can take (and should: see :meth:`Placement.admits`); returns how
        many were assigned."""
        world, mono = self.clock.world(), self.clock.mono()
        self.table.queue.advance(world)
        n = 0
        for w in self.workers.idle():
            if not w.account or w.account in self.accounts.paused:   # idle workers said ready with one
                continue
            admits = self.placement.admits(w, world, mono)
            if not admits:
                continue
            admits = responsive.admitted(self.view, w, admits, world)
            found = self.table.queue.best(world, admits.get)
            if found is None:
                continue
            t, prio = found
            self.table.queue.remove(t.id)
            mode = self.view.mode_for(w.account, w.modes, t.cls, t.module, world)
            self.table.assigned[t.id] = Assignment(t.id, w.ident, w.account, mono, world=world, mode=mode)
            w.set_state("assigned", t.id, mono)
            self.idle_watch.took_work(w.account)
            self.convs.assigned(t, w.account, mode, opens_conversation(t.cls))
            self.placement.assigned()
            self._start_turn(t.conversation, t.id)
            self._send(w.ident, "assign", task_id=t.id, ttl=float(self.scfg.lease_ttl))
            self.assigned_total += 1
            n += 1
            log.debug("assigned task %d (%s, priority %.1f) to %s", t.id, t.kind, prio, w.name)
        return n

    def timers(self) -> list[tuple[str, float]]:
        """The pending timers as ``(what, monotonic time)``: heartbeat, liveness, assignment timeouts, the
        first due task, the first quota/cool-down expiry and the first deadline of a task left for a faster
        account (world times converted, the clock may be scaled)."""
        mono, world = self.clock.mono(), self.clock.world()
        out = [("heartbeat", self._next_heartbeat)]
        expiry = self.workers.next_expiry()
        if expiry is not None:
            out.append(("liveness", expiry))
        out.extend(("assignment", a.at + self.scfg.assign_timeout) for a in self.table.assigned.values()
                   if not a.confirmed)
        scale = getattr(self.clock, "scale", 1.0) or 1.0
        hold = self.table.next_unknown_lapse()
        handoff = self.handoffs.next_check()
        for what, when in (("due", self.table.queue.next_due()), ("quota", self.accounts.next_expiry(world)),
                           ("placement", self.placement.next_deadline(world)), ("unknown turn", hold),
                           ("handoff", handoff)):
            if when is not None:
                out.append((what, mono + max(0.0, when - world) / scale))
        return out

    def next_wake(self) -> float:
        """Seconds until the next timer (see :meth:`timers`)."""
        return max(0.0, min(t for _, t in self.timers()) - self.clock.mono())

    def stats(self) -> dict:
        return {**self.table.counts(), "workers": len(self.workers),
                "idle": len(self.workers.idle()), "assigned_total": self.assigned_total,
                "left_total": self.placement.left_total, "service_times": self.placement.latencies.snapshot(),
                "errors": dict(self.errors),
                **self.status}
