"""The scheduler's task table: the PENDING tasks it tracks, where each one is, and what runs.

:class:`TaskTable` owns every per-task structure of the scheduler (nothing durable: a rebuild fills it
again from the broker). A tracked task (``tasks``: PENDING, by id) is in exactly one place:

* ``queue``    ready or delayed (:class:`services.scheduler.queue.TaskQueue`)
* ``held``     its conversation has another turn assigned or running (at most one turn in flight; which
  turn that is, is :class:`services.scheduler.conversations.Conversations`' to say)
* ``assigned`` sent to a worker that has not been seen running it (:class:`Assignment`)

Beside them: ``unknown_holds`` (when a task's binding to the account that must reconcile its unknown turn
lapses), ``waiting`` (tracked tasks per module, for the priority's backlog terms and ``top``),
``missing`` (ids to refresh with a broker ``get``) and ``running`` (:class:`Running`: who runs what since
when, from ``task.running`` until the task ends or comes back PENDING).

The table files and unfiles; *which* place a task goes to is the core's decision
(services/scheduler/core.py), so the rules live in one place.
"""
from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass

from services.scheduler.classes import placement_class
from services.scheduler.priority import PriorityModel, QTask
from services.scheduler.queue import TaskQueue


# what the core remembers of work it handed out: an assignment until the broker's task.running event,
# then who runs it
@dataclass(slots=True)
class Assignment:
    task_id: int
    ident: bytes
    account: str
    at: float                 # monotonic time sent
    confirmed: bool = False   # the worker said it is working on it (heartbeat or done)
    finished: bool = False    # the worker reported an outcome before the broker's events came
    world: float = 0.0        # world time sent, and the mode it will probably run in (finish estimates)
    mode: str | None = None


@dataclass(slots=True)
class Running:
    worker: str | None
    account: str | None
    conversation: str | None
    mode: str | None = None
    start: float | None = None   # world time of the lease (the event's ts), for service times
    epoch: int | None = None     # the lease's epoch: a silent worker's lease is revoked at exactly this one


class TaskTable:
    """Tracked PENDING tasks and their place (queue, held, assigned), unknown-turn holds, running tasks."""

    def __init__(self, model: PriorityModel):
        self.model = model
        # assignments outlive a reset: the rebuild says whether their tasks are still PENDING
        self.assigned: dict[int, Assignment] = {}
        self.reset()

    def reset(self) -> None:
        """Forget every task but the assignments (a rebuild follows; :meth:`drop_stale_assignments`)."""
        self.tasks: dict[int, QTask] = {}
        self.queue = TaskQueue(self.model, self.tasks)   # one dict of tasks for both
        self.held: dict[str, set[int]] = {}
        # (world time, task id): when a task's binding to the account that must reconcile it lapses
        self.unknown_holds: list[tuple[float, int]] = []
        self.running: dict[int, Running] = {}
        self.waiting: Counter[str] = Counter()
        self.missing: set[int] = set()

    def drop_stale_assignments(self) -> None:
        """After a rebuild: an assignment whose task is no longer PENDING is over."""
        for tid in [t for t in self.assigned if t not in self.tasks]:
            del self.assigned[tid]

    # --- tracking ---------------------------------------------------------------------------------------

    def put(self, t: QTask) -> QTask | None:
        """Track ``t`` (new, or a newer record of a tracked task, which it replaces and unfiles); returns
        the record it replaced. What the scheduler itself learned about the task carries over: a refresh
        must not lift a hold, and a ``get``/``list`` record does not name its conversation's account."""
        old = self.tasks.get(t.id)
        if old is None:
            self.waiting[t.module] += 1
        else:
            t.declines, t.hold_until = old.declines, old.hold_until
            t.conversation_account = t.conversation_account or old.conversation_account
            self.unfile(old)
        self.tasks[t.id] = t
        return old

    def pop(self, tid: int) -> QTask | None:
        """Stop tracking ``tid`` (it runs or ended): out of its place and of the assignments."""
        t = self.tasks.get(tid)
        self.assigned.pop(tid, None)
        if t is None:
            return None
        self.unfile(t)   # while the queue still finds it in the dict it shares
        del self.tasks[tid]
        self.waiting[t.module] -= 1
        if self.waiting[t.module] <= 0:
            del self.waiting[t.module]
        return t

    def load(self, tasks: list[QTask], world: float, conv_account: dict) -> list[QTask]:
        """File a rebuild's page of PENDING tasks in one pass: each task that the core's rules
        (SchedulerCore._track) would simply queue — new to the table, no conversation, no unknown turn,
        neither assigned nor running — is tracked and queued here; the others are returned, in order,
        for the core to track one by one. ``conv_account``: the conversations' holders (for the class)."""
        rest, filed = [], []
        tracked, waiting, assigned, running = self.tasks, self.waiting, self.assigned, self.running
        plain = None   # the class of a task without requirements: the same for all of them
        for t in tasks:
            tid = t.id
            if t.unknown_account or tid in tracked or tid in assigned or tid in running or \
                    (t.requires and t.conversation):
                rest.append(t)
                continue
            if t.requires:
                t.cls = placement_class(t, conv_account)
            else:
                t.cls = plain = plain or placement_class(t, conv_account)
            if t.not_before < t.hold_until:
                t.not_before = t.hold_until
            tracked[tid] = t
            waiting[t.module] += 1
            filed.append(t)
        self.queue.extend(filed, world)
        return rest

    # --- places -----------------------------------------------------------------------------------------

    def file(self, t: QTask, world: float, held_by: str | None = None) -> None:
        """Put ``t`` in the queue, or among the held turns of conversation ``held_by``."""
        if held_by:
            self.held.setdefault(held_by, set()).add(t.id)
        else:
            self.queue.push(t, world)

    def unfile(self, t: QTask) -> None:
        if self.queue.remove(t.id) is None and t.conversation in self.held:
            ids = self.held[t.conversation]
            ids.discard(t.id)
            if not ids:
                del self.held[t.conversation]

    def release_held(self, conv: str) -> list[QTask]:
        """The turns held behind ``conv``'s turn in flight, now free to be placed (not the assigned ones)."""
        return [self.tasks[tid] for tid in self.held.pop(conv, ())
                if tid in self.tasks and tid not in self.assigned]

    def held_count(self) -> int:
        return sum(len(ids) for ids in self.held.values())

    # --- unknown turns ----------------------------------------------------------------------------------

    def hold_unknown(self, t: QTask) -> None:
        """``t`` is bound to the account that must reconcile its unknown turn until ``t.unknown_until``."""
        heapq.heappush(self.unknown_holds, (t.unknown_until, t.id))

    def unknown_lapsed(self, world: float) -> list[QTask]:
        """Tasks whose unknown-turn binding lapsed by ``world`` (still bound, not assigned): place again."""
        out = []
        while self.unknown_holds and self.unknown_holds[0][0] <= world:
            _, tid = heapq.heappop(self.unknown_holds)
            t = self.tasks.get(tid)
            if t is not None and t.unknown_account and t.unknown_until and tid not in self.assigned:
                out.append(t)
        return out

    def next_unknown_lapse(self) -> float | None:
        return self.unknown_holds[0][0] if self.unknown_holds else None

    def counts(self) -> dict[str, int]:
        """Tasks per place (``stats``, ``top``): O(conversations held), never a walk over the tasks."""
        return {"ready": self.queue.ready_count, "delayed": self.queue.delayed_count, "held": self.held_count(),
                "assigned": len(self.assigned), "running": len(self.running)}

