"""The workers table: the connected backend workers, their state, and the leases of silent ones.

Workers (:class:`WorkerRegistry`) are keyed by their ROUTER identity (one per socket; a restarted
worker comes back with a new one) and indexed by name (the program name, e.g. ``backend-gemini-sim``,
which is also the ``worker`` of its broker leases). A worker is in one of these states:

=========  ==========================================================================================
idle       said ``ready``; waiting for an assignment (``ready {finishing}``: while it still delivers the
           answer of ``finishing``, whose ``done`` follows)
assigned   was sent ``assign``; has not been seen running it yet
busy       runs a task (a ``task.running`` event or a heartbeat named it)
unready    reported ``done`` and has not said ``ready`` again; also a worker the scheduler met mid-task
           after a restart (it announced itself with a heartbeat naming its task)
=========  ==========================================================================================

Liveness is on the monotonic clock: a worker silent for ``LIVENESS * HEARTBEAT_INTERVAL`` is forgotten.

Which workers a task fits is :mod:`services.scheduler.classes`' to say; what the scheduler knows of the
accounts (pauses, cool-downs, quota blocks) is :mod:`services.scheduler.accounts`'.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from services.scheduler.tasks import Running
from shared.protocol import HEARTBEAT_INTERVAL, LIVENESS

log = logging.getLogger("scheduler")
STATES = ("idle", "assigned", "busy", "unready")


@dataclass(eq=False, slots=True)
class Worker:
    ident: bytes
    name: str
    account: str | None = None
    backend: str = ""
    modes: tuple = ()
    state: str = "unready"
    task_id: int | None = None
    since: float = 0.0                  # monotonic time of the last state change
    last_seen: float = 0.0
    last_task: int | None = None
    last_outcome: str | None = None
    last_error: str | None = None
    finishing: int | None = None        # said ready while delivering this task's answer (its done follows)

    def set_state(self, state: str, task_id: int | None, now: float) -> None:
        if state != self.state or task_id != self.task_id:
            self.since = now
        self.state, self.task_id = state, task_id


class WorkerRegistry:
    def __init__(self, interval: float = HEARTBEAT_INTERVAL, liveness: int = LIVENESS):
        self.by_ident: dict[bytes, Worker] = {}
        self.by_name: dict[str, bytes] = {}
        self.timeout = interval * liveness

    def __len__(self) -> int:
        return len(self.by_ident)

    def __iter__(self):
        return iter(list(self.by_ident.values()))

    def get(self, ident: bytes) -> Worker | None:
        return self.by_ident.get(ident)

    def named(self, name: str | None) -> Worker | None:
        ident = self.by_name.get(name) if name else None
        return self.by_ident.get(ident) if ident is not None else None

    def add(self, ident: bytes, name: str, now: float) -> tuple[Worker, Worker | None]:
        """Register (or find) the worker on ``ident``; returns it and the older incarnation with the same
        name on another identity, which the caller must forget (it restarted or recreated its socket)."""
        worker = self.by_ident.get(ident)
        old = None
        other = self.by_name.get(name)
        if other is not None and other != ident:
            old = self.by_ident.get(other)
        if worker is None:
            worker = Worker(ident=ident, name=name, since=now, last_seen=now)
            self.by_ident[ident] = worker
        elif worker.name != name and self.by_name.get(worker.name) == ident:
            del self.by_name[worker.name]
            worker.name = name
        self.by_name[name] = ident
        worker.last_seen = now
        return worker, old

    def forget(self, ident: bytes) -> Worker | None:
        worker = self.by_ident.pop(ident, None)
        if worker is not None and self.by_name.get(worker.name) == ident:
            del self.by_name[worker.name]
        return worker

    def expired(self, now: float) -> list[Worker]:
        return [w for w in self.by_ident.values() if now - w.last_seen > self.timeout]

    def next_expiry(self) -> float | None:
        return min((w.last_seen + self.timeout for w in self.by_ident.values()), default=None)

    def idle(self) -> list[Worker]:
        """Idle workers, longest idle first (fair between accounts)."""
        return sorted((w for w in self.by_ident.values() if w.state == "idle" and w.account),
                      key=lambda w: w.since)

    def for_account(self, account: str) -> list[Worker]:
        return [w for w in self.by_ident.values() if w.account == account]


class Revocations:
    """Leases of workers dropped as silent, for the broker to revoke (``revoke``: the service sends
    :attr:`pending` and removes what the broker answered). A worker stays in :attr:`dropped` until it
    comes back (``ready``, or a heartbeat from a new socket), so that a lease it is granted meanwhile (its
    request was on its way) is revoked when the scheduler hears of it."""

    def __init__(self):
        self.pending: dict[int, tuple[str, int, str]] = {}   # task id -> (worker, epoch, why)
        self.dropped: dict[str, str] = {}                     # worker name -> why it was dropped

    def drop(self, name: str, why: str, running: dict) -> None:
        """Worker ``name`` went silent: revoke every lease it holds (``running``: task id -> Running)."""
        self.dropped[name] = why
        for tid, run in running.items():
            if run.worker == name:
                self.add(tid, run, why)

    def back(self, name: str) -> None:
        self.dropped.pop(name, None)

    def leased(self, tid: int, run: Running) -> None:
        """A lease the broker granted (``task.running``): revoke it if its worker was dropped (and has
        not come back: the caller checks)."""
        why = self.dropped.get(run.worker) if run.worker is not None else None
        if why is not None:
            self.add(tid, run, why)

    def add(self, tid: int, run: Running, why: str) -> None:
        if run.epoch is None or run.worker is None:
            return   # a record without its epoch: the lease's own deadline ends it
        log.warning("task %d: its worker %s was dropped (%s); revoking its lease (epoch %d)", tid, run.worker,
                    why, run.epoch)
        self.pending[tid] = (run.worker, run.epoch, why)
