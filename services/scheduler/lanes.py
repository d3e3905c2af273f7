"""A lane of the task queue: the ready tasks of one bin with one ``static`` priority, oldest first.

Every task of a lane has the same static priority and gains the same aging, so whatever the time its best
task is its oldest (ties: the lowest id), and the lane is a FIFO by ``(created, id)``
(services/scheduler/queue.py has the whole structure). ``items`` holds the entries appended in that order
(the usual case: tasks come in order of creation) from ``head`` on; ``late`` is a heap of
``(created, id, entry)`` for those that came in older than the last one appended (a task requeued, or due
after a delay). Removal is lazy: the queue's ``owner(entry)`` says whose live entry a slot is (None:
stale), and the lane drops stale slots when they surface or when it is compacted.

An entry is the task itself when it is filed for the first time (``QTask.qentry`` is then the marker
``SELF``): a lane of fresh tasks costs one list slot per task and no other object. A task filed again gets
a new ``(created, id)`` tuple as its entry, so a stale slot holding the task itself is never taken for a
live one (its ``qentry`` is never ``SELF`` again).
"""
from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from typing import Any

from services.scheduler.priority import QTask

SELF = object()   # ``QTask.qentry`` of a task whose live entry is the task itself (filed for the first time)
FILED = False     # ``QTask.qentry`` of a task filed before and out of the queue now (None: never filed)

Owner = Callable[[Any], "QTask | None"]


class Lane:
    """One bin's ready tasks with one ``static``; ``top`` is the oldest live one (the lane's best)."""

    __slots__ = ("static", "key", "items", "head", "late", "last", "n", "top", "entry", "state")

    def __init__(self, static: float, key: tuple):
        self.static, self.key = static, key
        self.items: list = []        # entries in order of (created, id) from ``head`` on (stale ones too)
        self.head = 0
        self.late: list = []         # heap of (created, id, entry): those that came in out of order
        self.last: tuple = ()        # (created, id) of the last entry appended to ``items``
        self.n = 0                   # live tasks
        self.top: QTask | None = None    # the oldest live task
        self.entry: tuple | None = None  # the lane's live entry in its bin's heaps (the queue's)
        self.state = 0               # which of the bin's heaps ``entry`` is in (the queue's AGING/CAPPED)

    def __lt__(self, other: Lane) -> bool:
        # a bin's heap entries end with their lane; two entries equal up to it (a lane filed again with
        # the same best task) are equal for the heap, which must not try to order lanes
        return False

    def size(self) -> int:
        """Slots held, live or stale."""
        return len(self.items) - self.head + len(self.late)

    def add(self, task: QTask) -> bool:
        """File ``task`` (counted, its ``qentry`` set); True if it is the lane's new best."""
        self.n += 1
        order = (task.created, task.id)
        if order >= self.last:
            if task.qentry is None:   # never filed: the task is its own entry
                task.qentry = SELF
                self.items.append(task)
            else:
                task.qentry = order
                self.items.append(order)
            self.last = order
        else:
            task.qentry = order
            heapq.heappush(self.late, (order[0], order[1], order))
        top = self.top
        if top is None or order < (top.created, top.id):
            self.top = task
            return True
        return False

    def oldest(self, owner: Owner) -> QTask | None:
        """The oldest live task (stale heads dropped on the way; the list's dead prefix trimmed)."""
        items, late = self.items, self.late
        head, n = self.head, len(items)
        first = None
        while head < n:
            first = owner(items[head])
            if first is not None:
                break
            head += 1
        if head > 1024 and head * 2 > n:
            del items[:head]
            head = 0
        self.head = head
        second = None
        while late:
            second = owner(late[0][2])
            if second is not None:
                break
            heapq.heappop(late)
        if first is None or (second is not None and (second.created, second.id) < (first.created, first.id)):
            return second
        return first

    def slots(self) -> Iterator:
        """Every entry, live or stale."""
        for i in range(self.head, len(self.items)):
            yield self.items[i]
        for item in list(self.late):
            yield item[2]

    def compact(self, owner: Owner) -> None:
        """Drop the stale slots (the live tasks keep their entries, the lane its best)."""
        owned = [(owner(e), e) for e in self.slots()]
        live = sorted(((t.created, t.id), e) for t, e in owned if t is not None)
        self.items, self.head, self.late = [e for _, e in live], 0, []
        self.last = live[-1][0] if live else ()
