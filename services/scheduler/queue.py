"""The queue of PENDING tasks: exact best-first pick in O(B log L) (B = bins a worker can serve, L = lanes).

Structure
---------
Tasks are filed in *bins*, one per ``(placement class, module)``: every task of a bin fits exactly the
same workers, and the module-level priority terms (weight, backlog boost) are the same for all of them,
so a bin's best task is its best task for every worker that fits it. A pick compares only the bins'
tops and adds the module term at comparison time; a weight or backlog change touches no heap.

Inside a bin, priority = ``static + min(cap, rate * (now - created))``, and ties go to the oldest task,
then the lowest id. A bin keeps its tasks in *lanes* (:class:`services.scheduler.lanes.Lane`), one per
distinct ``static`` (a handful: the kinds' base priorities, seed weights): in a lane every task has the
same static and gains the same aging, so its best task is always its oldest — a lane is a FIFO by
``(created, id)``, whatever the time: a list appended in order of creation (the usual case) and a small
heap for the tasks that come in out of order (requeued, or due after a delay).

A bin orders its lanes by their best tasks with the two heaps the aging formula needs, holding one entry
per lane (not per task):

* ``aging``  — lanes whose best task is not yet at the cap, keyed by ``static - rate * created``: their
  order does not change with time (everyone gains ``rate * dt``).
* ``capped`` — lanes whose best task is at the cap, keyed by ``static`` (priority ``static + cap``).
* the aging entries by the time they reach the cap (by ``created``): ``fifo`` those filed in order of
  creation, ``late`` a heap of the others; before each look at a bin, entries whose cap time has passed
  move from ``aging`` to ``capped``.

A lane is filed again whenever its best task changes (a pick, a removal of that task, an older task
arriving): O(log L). Removals are lazy: a task holds its one live entry (``QTask.qentry``; its lane is
found by its bin key and static), so an entry is live when it *is* its task's entry, and stale entries
are dropped when they surface; a lane or a bin whose lists hold more than 3x their live members (+64) is
compacted (amortised O(1) per operation). A task filed for the first time is its own entry (lanes.py has the
rule), so a queue of 10^6 fresh tasks holds one list slot per task and no other object. Delayed tasks
(``not_before`` in the future) wait in one time-ordered heap and enter their lane when due
(:meth:`TaskQueue.advance`).

Memory: per ready task, one slot in its lane's list (8 bytes); the tasks by id are the task table's dict
(:class:`services.scheduler.tasks.TaskTable` passes it), priorities and bin keys are shared.
``ops/bench-scheduler`` reports the scheduler's RSS at 10^6 queued tasks.

Complexity: insert O(1) in order of creation (O(log n) out of order, plus O(log L) when it becomes its
lane's best); remove O(1), or O(log L) for a lane's best task, plus amortised O(1) compaction; pick
O(B log L) with B the number of non-empty bins (a handful of classes times a handful of modules) and L
their lanes, independent of n. ``ops`` counts heap operations and inspections, so tests can check that a
pick does not scan.

For the operator's questions (``why``, ``top``, :mod:`services.scheduler.queries`) the queue also keeps
the number of delayed tasks per module, lets a bin's tasks be listed, and draws uniform random samples
of the ready tasks of some bins in O(k) (:meth:`TaskQueue.sample`): a lane's live segment and late heap
hold each live task exactly once among stale slots that are at most about two thirds of them (the
compaction rule above), so a uniformly drawn slot, kept only when it is live, is a uniformly drawn task.
"""
from __future__ import annotations

import heapq
import random
from bisect import bisect_right as _bisect_right
from collections import Counter, deque
from collections.abc import Callable, Iterator

from services.scheduler.lanes import FILED, SELF, Lane
from services.scheduler.priority import PriorityModel, QTask

# where a task is (``QTask.qstate``): out of the queue, delayed, ready (in a lane)
OUT, DELAYED, READY = 0, 1, 2
# where a lane is in its bin (``Lane.state``)
AGING, CAPPED = 1, 2


class _Bin:
    """One ``(placement class, module)``: its lanes by static, and the heaps that order them."""

    __slots__ = ("lanes", "aging", "capped", "fifo", "late", "n")

    def __init__(self):
        self.lanes: dict[float, Lane] = {}
        self.aging: list = []      # heap of (rate*created - static, created, id, lane): lanes not at the cap
        self.capped: list = []     # heap of (-static, created, id, lane): lanes at the cap
        # the aging entries by cap time (= by created): ``fifo`` those filed in order of creation, ``late``
        # a heap of (created, id, entry) for the others
        self.fifo: deque = deque()
        self.late: list = []
        self.n = 0                 # ready tasks in the bin

    def size(self) -> int:
        return len(self.aging) + len(self.capped) + len(self.fifo) + len(self.late)


class TaskQueue:
    def __init__(self, model: PriorityModel, tasks: dict[int, QTask] | None = None):
        """``tasks``: the tracked tasks by id, which the caller keeps (the task table's: one dict for both);
        None: the queue keeps its own."""
        self.model = model
        self._own = tasks is None
        self._tasks: dict[int, QTask] = {} if tasks is None else tasks
        self._n = 0
        self._bins: dict[tuple, _Bin] = {}
        self._keys: dict[tuple, tuple] = {}   # interned bin keys (a handful: classes x modules)
        self._statics: dict[float, float] = {}   # interned priorities (a few distinct values, shared)
        self._delayed: list = []      # heap of (not_before, id): the delayed tasks' entries
        self._n_delayed = 0
        self.delayed_by_module: Counter = Counter()   # module -> delayed tasks (for `top`, no walk)
        self.ops = 0                  # heap operations + inspections (complexity tests)

    # --- membership -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._n

    def _queued(self, task_id: int) -> QTask | None:
        t = self._tasks.get(task_id)
        return t if t is not None and t.qstate else None

    def __contains__(self, task_id: int) -> bool:
        return self._queued(task_id) is not None

    def get(self, task_id: int) -> QTask | None:
        return self._queued(task_id)

    def is_ready(self, task_id: int) -> bool:
        t = self._queued(task_id)
        return t is not None and t.qstate == READY

    @property
    def ready_count(self) -> int:
        return self._n - self._n_delayed

    @property
    def delayed_count(self) -> int:
        return self._n_delayed

    def tasks(self) -> Iterator[QTask]:
        return (t for t in self._tasks.values() if t.qstate)

    def ready_tasks(self) -> Iterator[QTask]:
        return (t for t in self._tasks.values() if t.qstate == READY)

    # --- changes ----------------------------------------------------------------------------------

    def push(self, task: QTask, now: float) -> None:
        """Insert (or re-insert after a change) a task; computes ``task.static``.

        ``task.created`` is clamped to ``now``: a creation time in the future (clock skew between
        processes) would otherwise give negative aging.
        """
        self.remove(task.id)
        if task.created > now:
            task.created = now
        static = self.model.static(task)
        if len(self._statics) < 4096:   # shared: most tasks have one of a few priorities
            static = self._statics.setdefault(static, static)
        task.static = static
        if self._own:
            self._tasks[task.id] = task
        self._n += 1
        if task.not_before > now:
            self._delay(task)
        else:
            self._enter(task)

    def extend(self, tasks: list[QTask], now: float) -> None:
        """:meth:`push` each of ``tasks``, none of them queued yet (a rebuild's page): the same filing
        in one loop, the rebuild's hot path."""
        model, statics, own = self.model, self._statics, self._own
        changed: set = set()   # lanes whose best task changed
        for task in tasks:
            if task.qstate:
                self.push(task, now)
                continue
            if task.created > now:
                task.created = now
            static = model.static(task)
            task.static = static = statics.get(static, static)
            if own:
                self._tasks[task.id] = task
            self._n += 1
            if task.not_before > now:
                self._delay(task)
                continue
            lane = self._file(task)
            if lane is not None:
                changed.add(lane)
        for lane in changed:
            self._file_lane(lane)
        self.ops += len(tasks)

    def remove(self, task_id: int) -> QTask | None:
        """Forget a task (lazily: its entry dies when it surfaces)."""
        task = self._queued(task_id)
        if task is None:
            return None
        state, task.qstate, task.qentry = task.qstate, OUT, FILED
        self._n -= 1
        if self._own:
            del self._tasks[task_id]
        if state == READY:
            b = self._bins[(task.cls, task.module)]   # a queued task's class and static never change
            lane = b.lanes[task.static]
            b.n -= 1
            lane.n -= 1
            if not lane.n:
                lane.entry = None   # its entries in the bin's heaps are stale now
                del b.lanes[lane.static]
                if not b.n:
                    del self._bins[lane.key]   # drop the garbage with the bin
                    return task
            else:
                if lane.top is task:
                    lane.top = lane.oldest(self._owner)
                    self.ops += 1
                    self._file_lane(lane)
                if lane.size() > 3 * lane.n + 64:
                    lane.compact(self._owner)
            if b.size() > 3 * len(b.lanes) + 64:
                self._rebuild(b)
        else:
            self._n_delayed -= 1
            self._uncount_delayed(task.module)
            if len(self._delayed) > 2 * self._n_delayed + 64:
                self._delayed = [item for item in self._delayed if self._live_delayed(item) is not None]
                heapq.heapify(self._delayed)
        return task

    def advance(self, now: float) -> list[int]:
        """Move delayed tasks whose ``not_before`` has come into their lanes; returns their ids."""
        moved = []
        while self._delayed and self._delayed[0][0] <= now:
            item = heapq.heappop(self._delayed)
            self.ops += 1
            task = self._live_delayed(item)
            if task is not None:
                self._n_delayed -= 1
                self._uncount_delayed(task.module)
                self._enter(task)
                moved.append(task.id)
        return moved

    def next_due(self) -> float | None:
        """World time of the first delayed task (stale entries are dropped on the way)."""
        while self._delayed and self._live_delayed(self._delayed[0]) is None:
            heapq.heappop(self._delayed)
            self.ops += 1
        return self._delayed[0][0] if self._delayed else None

    # --- the pick ---------------------------------------------------------------------------------

    def bins(self) -> list[tuple]:
        """The keys ``(class, module)`` of the non-empty bins of ready tasks."""
        return list(self._bins)

    def bin_size(self, key: tuple) -> int:
        """How many ready tasks a bin holds."""
        b = self._bins.get(key)
        return b.n if b is not None else 0

    def bin_tasks(self, key: tuple) -> Iterator[QTask]:
        """The ready tasks of one bin (O(size of the bin): its lanes, stale entries skipped)."""
        b = self._bins.get(key)
        if b is None:
            return iter(())
        return (t for lane in list(b.lanes.values()) for e in lane.slots()
                for t in (self._owner(e),) if t is not None)

    def sample(self, keys: list[tuple], k: int, rng: random.Random) -> list[QTask]:
        """About ``k`` ready tasks drawn uniformly (with replacement) from the bins ``keys``, in O(k).

        Draws slots uniformly over the lanes' live segments and late heaps and keeps the live ones (each
        live task has exactly one live slot), so every ready task of those bins is equally likely. Gives
        up after 8k draws (a lane at its worst holds ~3 stale slots per live one): fewer than ``k`` tasks
        then, still uniform."""
        parts, cumulative, total = [], [], 0        # (list, offset, position of the entry), running total
        for key in keys:
            b = self._bins.get(key)
            for lane in (b.lanes.values() if b is not None else ()):
                for seq, offset, pos in ((lane.items, lane.head, None), (lane.late, 0, 2)):
                    if len(seq) > offset:
                        total += len(seq) - offset
                        parts.append((seq, offset, pos))
                        cumulative.append(total)
        if not total or k <= 0:
            return []
        out: list[QTask] = []
        for _ in range(8 * k):
            if len(out) >= k:
                break
            i = rng.randrange(total)
            j = _bisect_right(cumulative, i)
            seq, offset, pos = parts[j]
            self.ops += 1
            slot = seq[offset + i - (cumulative[j - 1] if j else 0)]
            task = self._owner(slot if pos is None else slot[pos])
            if task is not None:
                out.append(task)
        return out

    def top(self, key: tuple, now: float) -> tuple[float, QTask] | None:
        """The best ready task of one bin and its priority without the module term."""
        b = self._bins.get(key)
        if b is None:
            return None
        self.ops += 1
        model = self.model
        if model.rate > 0:
            self._cap(b, now)
        best = None
        for heap, state in ((b.aging, AGING), (b.capped, CAPPED)):
            lane = None
            while heap:
                lane = heap[0][3]
                if lane.entry is heap[0] and lane.state == state:
                    break
                lane = None
                heapq.heappop(heap)
                self.ops += 1
            if lane is not None:
                task = lane.top
                assert task is not None   # a filed lane has a best task
                prio = lane.static + (model.cap if state == CAPPED else model.aging(task.created, now))
                if best is None or (prio, -task.created, -task.id) > (best[0], -best[1].created, -best[1].id):
                    best = (prio, task)
        return best

    def best(self, now: float, admit: Callable[[tuple], float | None]) -> tuple[QTask, float] | None:
        """The highest-priority ready task among the bins ``admit`` accepts, with its priority.

        ``admit((class, module))`` returns the module term to add, or None if the worker cannot take
        tasks of that bin. Ties: oldest, then lowest id.
        """
        self.advance(now)
        best = None
        for key in list(self._bins):
            extra = admit(key)
            if extra is None:
                continue
            top = self.top(key, now)
            if top is None:
                continue
            prio, task = top[0] + extra, top[1]
            if best is None or (prio, -task.created, -task.id) > (best[1], -best[0].created, -best[0].id):
                best = (task, prio)
        return best

    # --- internals --------------------------------------------------------------------------------

    def _uncount_delayed(self, module: str) -> None:
        self.delayed_by_module[module] -= 1
        if self.delayed_by_module[module] <= 0:
            del self.delayed_by_module[module]

    def _delay(self, task: QTask) -> None:
        self._n_delayed += 1
        self.delayed_by_module[task.module] += 1
        task.qstate, task.qentry = DELAYED, (task.not_before, task.id)
        heapq.heappush(self._delayed, task.qentry)
        self.ops += 1

    def _live_delayed(self, entry: tuple) -> QTask | None:
        task = self._tasks.get(entry[1])
        return task if task is not None and task.qentry is entry and task.qstate == DELAYED else None

    def _owner(self, entry) -> QTask | None:
        """The task whose live lane entry ``entry`` is (the task itself, or a ``(created, id)`` tuple), or
        None: a stale entry."""
        if entry.__class__ is QTask:
            task = entry if entry.qentry is SELF else None
            if task is not None and self._tasks.get(task.id) is not task:
                return None   # no longer the tracked record of its id
        else:
            task = self._tasks.get(entry[1])
            if task is not None and task.qentry is not entry:
                return None
        return task if task is not None and task.qstate == READY else None

    def _enter(self, task: QTask) -> None:
        """File a ready task in its lane (its static computed); the lane is filed again if the task is its
        new best."""
        self.ops += 1
        lane = self._file(task)
        if lane is not None:
            self._file_lane(lane)

    def _file(self, task: QTask) -> Lane | None:
        """Put a ready task in its bin's lane for its static (made if new); returns the lane if the task is
        its new best (the lane must then be filed again in the bin's heaps), else None."""
        key = (task.cls, task.module)
        b = self._bins.get(key)
        if b is None:
            key = self._keys.setdefault(key, key)
            b = self._bins[key] = _Bin()
        lane = b.lanes.get(task.static)
        if lane is None:
            lane = b.lanes[task.static] = Lane(task.static, key)
        b.n += 1
        task.qstate = READY
        return lane if lane.add(task) else None

    def _file_lane(self, lane: Lane) -> None:
        """(Re-)file a lane in its bin's heaps by its best task, as aging (``_cap`` moves it to the capped
        heap once that task's aging reaches the cap: the next look at the bin)."""
        task = lane.top
        if task is None:
            lane.entry = None
            return
        b = self._bins[lane.key]
        lane.state = AGING
        lane.entry = entry = (self.model.rate * task.created - lane.static, task.created, task.id, lane)
        heapq.heappush(b.aging, entry)
        if self.model.rate > 0:
            if not b.fifo or b.fifo[-1][1] <= entry[1]:
                b.fifo.append(entry)
            else:
                heapq.heappush(b.late, (entry[1], entry[2], entry))
        self.ops += 1

    def _cap(self, b: _Bin, now: float) -> None:
        """Move the bin's aging lanes whose best task's aging reached the cap by ``now`` to ``capped``;
        stale entries are dropped on the way."""
        cap_time = self.model.cap_time
        while b.fifo and cap_time(b.fifo[0][1]) <= now:
            self._to_capped(b, b.fifo.popleft())
        while b.late and cap_time(b.late[0][0]) <= now:
            self._to_capped(b, heapq.heappop(b.late)[2])

    def _to_capped(self, b: _Bin, entry: tuple) -> None:
        self.ops += 1
        lane = entry[3]
        if lane.entry is entry and lane.state == AGING:
            lane.state = CAPPED
            lane.entry = capped = (-lane.static, entry[1], entry[2], lane)
            heapq.heappush(b.capped, capped)
            self.ops += 1

    def _rebuild(self, b: _Bin) -> None:
        """Drop a bin's stale lane entries (its lanes keep their entries and cap state)."""
        b.aging = [e for e in b.aging if e[3].entry is e and e[3].state == AGING]
        b.capped = [e for e in b.capped if e[3].entry is e and e[3].state == CAPPED]
        heapq.heapify(b.aging)
        heapq.heapify(b.capped)
        b.fifo = deque(sorted(b.aging, key=lambda e: (e[1], e[2]))) if self.model.rate > 0 else deque()
        b.late = []
