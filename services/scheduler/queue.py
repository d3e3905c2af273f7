"""The queue of PENDING tasks: exact best-first pick in O(B log n) (B = bins a worker can serve).

Structure
---------
Tasks are filed in *bins*, one per ``(placement class, module)``: every task of a bin fits exactly the
same workers, and the module-level priority terms (weight, backlog boost) are the same for all of them,
so a bin's best task is its best task for every worker that fits it. A pick compares only the bins'
tops and adds the module term at comparison time; a weight or backlog change touches no heap.

Inside a bin, priority = ``static + min(cap, rate * (now - created))``. Aging is linear with the same
slope for every task until the cap, so two heaps hold a bin exactly:

* ``aging``  — tasks not yet at the cap, keyed by ``static - rate * created``: their order does not
  change with time (everyone gains ``rate * dt``).
* ``capped`` — tasks at the cap, keyed by ``static`` (their priority is ``static + cap``, constant).
* the aging tasks by the time they reach the cap (``created + cap / rate``, i.e. by ``created``): the
  ``fifo`` deque holds the entries of those that arrived in order of creation (the usual case: the
  entry tuples themselves, no object of its own), the ``late`` heap the others; before each look at a
  bin, tasks whose cap time has passed move from ``aging`` to ``capped``. Each task moves at most once,
  so the migration is amortised O(log n).

The bin's best task is the better of the two heap tops. Removals and updates are lazy: a task holds its
one live entry (``QTask.qentry``, with ``qstate`` saying which heap it is in), so an entry is live when
it *is* its task's entry, and stale entries are dropped when they surface; a bin whose heaps hold more
than 3x its live tasks is rebuilt (amortised O(1) per operation). Delayed tasks (``not_before`` in the
future) wait in one time-ordered heap and enter their bin when due (:meth:`TaskQueue.advance`).

Memory: per ready task, its entry (a 3-tuple and one float) and a heap slot or two; the tasks by id are
the task table's dict (:class:`services.scheduler.tasks.TaskTable` passes it), priorities and bin keys
are shared. ``ops/bench-scheduler`` reports the scheduler's RSS at 10^6 queued tasks.

Complexity: insert O(log n); remove O(1) + amortised O(log n); pick O(B log n) with B the number of
non-empty bins (a handful of classes times a handful of modules), independent of n. ``ops`` counts
heap operations and bin inspections, so tests can check that a pick does not scan.

For the operator's questions (``why``, ``top``, :mod:`services.scheduler.queries`) the queue also keeps
the number of delayed tasks per module, lets a bin's tasks be listed, and draws uniform random samples
of the ready tasks of some bins in O(k) (:meth:`TaskQueue.sample`): a bin's two heaps are lists holding
each live task exactly once among stale entries that are at most about two thirds of them (the rebuild
rule above), so a uniformly drawn heap slot, kept only when it is live, is a uniformly drawn task.
"""
from __future__ import annotations

import heapq
import random
from bisect import bisect_right as _bisect_right
from collections import Counter, deque
from collections.abc import Callable, Iterator

from services.scheduler.priority import PriorityModel, QTask

# where a task is (``QTask.qstate``): out of the queue, delayed, ready and aging, ready and capped
OUT, DELAYED, AGING, CAPPED = 0, 1, 2, 3


class _Bin:
    __slots__ = ("aging", "capped", "fifo", "late", "n")

    def __init__(self):
        self.aging: list = []      # heap of (-(static - rate*created), created, id): aging tasks' entries
        self.capped: list = []     # heap of (-static, created, id): capped tasks' entries
        # the aging entries by cap time (= by created): ``fifo`` those that came in order of creation (the
        # entry tuples themselves, no new object), ``late`` a heap of (created, id, entry) for the others
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
        self.ops = 0                  # heap operations + bin inspections (complexity tests)

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
        return t is not None and t.qstate >= AGING

    @property
    def ready_count(self) -> int:
        return self._n - self._n_delayed

    @property
    def delayed_count(self) -> int:
        return self._n_delayed

    def tasks(self) -> Iterator[QTask]:
        return (t for t in self._tasks.values() if t.qstate)

    def ready_tasks(self) -> Iterator[QTask]:
        return (t for t in self._tasks.values() if t.qstate >= AGING)

    # --- changes ----------------------------------------------------------------------------------

    def push(self, task: QTask, now: float) -> None:
        """Insert (or re-insert after a change) a task; computes ``task.static``.

        ``task.created`` is clamped to ``now``: a creation time in the future (clock skew between
        processes) would otherwise give negative aging in the heap key.
        """
        self.remove(task.id)
        if task.created > now:
            task.created = now
        static = self.model.static(task)
        if len(self._statics) < 4096:   # shared: most tasks have one of a few priorities
            static = self._statics.setdefault(static, static)
        task.static = static
        key = (task.cls, task.module)
        task.qkey = self._keys.setdefault(key, key)   # one key tuple per bin, shared
        if self._own:
            self._tasks[task.id] = task
        self._n += 1
        if task.not_before > now:
            self._n_delayed += 1
            self.delayed_by_module[task.module] += 1
            task.qstate, task.qentry = DELAYED, (task.not_before, task.id)
            heapq.heappush(self._delayed, task.qentry)
            self.ops += 1
        else:
            self._enter_bin(task, now)

    def extend(self, tasks: list[QTask], now: float) -> None:
        """:meth:`push` each of ``tasks``, none of them queued yet (a rebuild's page): the same filing
        in one loop, the rebuild's hot path."""
        model, statics, keys, bins, own = self.model, self._statics, self._keys, self._bins, self._own
        rate, cap_time = model.rate, model.cap_time
        heappush = heapq.heappush
        for task in tasks:
            if task.qstate:
                self.push(task, now)
                continue
            if task.created > now:
                task.created = now
            static = model.static(task)
            task.static = statics.get(static, static)
            key = (task.cls, task.module)
            task.qkey = key = keys.setdefault(key, key)
            if own:
                self._tasks[task.id] = task
            self._n += 1
            if task.not_before > now:
                self._n_delayed += 1
                self.delayed_by_module[task.module] += 1
                task.qstate, task.qentry = DELAYED, (task.not_before, task.id)
                heappush(self._delayed, task.qentry)
                continue
            b = bins.get(key)
            if b is None:
                b = bins[key] = _Bin()
            b.n += 1
            if cap_time(task.created) <= now:
                task.qstate, task.qentry = CAPPED, (-task.static, task.created, task.id)
                heappush(b.capped, task.qentry)
            else:
                task.qstate = AGING
                task.qentry = entry = (rate * task.created - task.static, task.created, task.id)
                heappush(b.aging, entry)
                if rate > 0:
                    if not b.fifo or b.fifo[-1][1] <= entry[1]:
                        b.fifo.append(entry)
                    else:
                        heappush(b.late, (entry[1], entry[2], entry))
        self.ops += len(tasks)

    def remove(self, task_id: int) -> QTask | None:
        """Forget a task (lazily: its heap entries die when they surface)."""
        task = self._queued(task_id)
        if task is None:
            return None
        state, task.qstate, task.qentry = task.qstate, OUT, None
        self._n -= 1
        if self._own:
            del self._tasks[task_id]
        if state >= AGING:
            key = task.qkey
            b = self._bins[key]
            b.n -= 1
            if not b.n:
                del self._bins[key]   # drop the garbage with the bin
            elif b.size() > 3 * b.n + 64:
                self._rebuild(key, b)
        else:
            self._n_delayed -= 1
            self._uncount_delayed(task.module)
            if len(self._delayed) > 2 * self._n_delayed + 64:
                self._delayed = [item for item in self._delayed if self._live(item, DELAYED)]
                heapq.heapify(self._delayed)
        return task

    def advance(self, now: float) -> list[int]:
        """Move delayed tasks whose ``not_before`` has come into their bins; returns their ids."""
        moved = []
        while self._delayed and self._delayed[0][0] <= now:
            item = heapq.heappop(self._delayed)
            self.ops += 1
            task = self._live(item, DELAYED)
            if task is not None:
                self._n_delayed -= 1
                self._uncount_delayed(task.module)
                self._enter_bin(task, now)
                moved.append(task.id)
        return moved

    def next_due(self) -> float | None:
        """World time of the first delayed task (stale entries are dropped on the way)."""
        while self._delayed and self._live(self._delayed[0], DELAYED) is None:
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
        """The ready tasks of one bin (O(size of the bin): its heaps, stale entries skipped)."""
        b = self._bins.get(key)
        if b is None:
            return iter(())
        return (t for heap, state in ((b.aging, AGING), (b.capped, CAPPED))
                for t in (self._live(e, state) for e in heap) if t is not None)

    def sample(self, keys: list[tuple], k: int, rng: random.Random) -> list[QTask]:
        """About ``k`` ready tasks drawn uniformly (with replacement) from the bins ``keys``, in O(k).

        Draws heap slots uniformly over the bins' ``aging`` and ``capped`` lists and keeps the live ones
        (each live task has exactly one live slot), so every ready task of those bins is equally likely.
        Gives up after 8k draws (a bin at its worst holds ~3 stale slots per live one): fewer than ``k``
        tasks then, still uniform."""
        heaps, cumulative, total = [], [], 0        # (heap, state), running total of slots
        for key in keys:
            b = self._bins.get(key)
            for heap, state in (((b.aging, AGING), (b.capped, CAPPED)) if b is not None else ()):
                if heap:
                    total += len(heap)
                    heaps.append((heap, state))
                    cumulative.append(total)
        if not total or k <= 0:
            return []
        out: list[QTask] = []
        for _ in range(8 * k):
            if len(out) >= k:
                break
            i = rng.randrange(total)
            j = _bisect_right(cumulative, i)
            heap, state = heaps[j]
            self.ops += 1
            task = self._live(heap[i - (cumulative[j - 1] if j else 0)], state)
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
            task = None
            while heap:
                task = self._live(heap[0], state)
                if task is not None:
                    break
                heapq.heappop(heap)
                self.ops += 1
            if task is not None:
                prio = task.static + (model.cap if state == CAPPED else model.aging(task.created, now))
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

    def _live(self, entry: tuple, state: int) -> QTask | None:
        """The task whose live entry ``entry`` is (in ``state``), or None: a stale entry. A task's one live
        entry is the tuple it holds (``qentry``), so identity says it: no generation numbers to store."""
        task = self._tasks.get(entry[-1])   # every entry ends with the task's id
        return task if task is not None and task.qentry is entry and task.qstate == state else None

    def _cap(self, b: _Bin, now: float) -> None:
        """Move the bin's aging tasks whose aging reached the cap by ``now`` (``cap_time(created)``) to
        ``capped``; stale entries are dropped on the way."""
        cap_time = self.model.cap_time
        while b.fifo and cap_time(b.fifo[0][1]) <= now:
            self._to_capped(b, b.fifo.popleft())
        while b.late and cap_time(b.late[0][0]) <= now:
            self._to_capped(b, heapq.heappop(b.late)[2])

    def _to_capped(self, b: _Bin, entry: tuple) -> None:
        self.ops += 1
        task = self._live(entry, AGING)
        if task is not None:
            task.qstate, task.qentry = CAPPED, (-task.static, task.created, task.id)
            heapq.heappush(b.capped, task.qentry)
            self.ops += 1

    def _enter_bin(self, task: QTask, now: float) -> None:
        b = self._bins.get(task.qkey)
        if b is None:
            b = self._bins[task.qkey] = _Bin()
        b.n += 1
        model = self.model
        if model.cap_time(task.created) <= now:
            task.qstate, task.qentry = CAPPED, (-task.static, task.created, task.id)
            heapq.heappush(b.capped, task.qentry)
            self.ops += 1
        else:
            task.qstate = AGING
            task.qentry = entry = (model.rate * task.created - task.static, task.created, task.id)
            heapq.heappush(b.aging, entry)
            if model.rate > 0:
                self._by_cap_time(b, entry)
            self.ops += 2

    @staticmethod
    def _by_cap_time(b: _Bin, entry: tuple) -> None:
        if not b.fifo or b.fifo[-1][1] <= entry[1]:
            b.fifo.append(entry)   # created in order (the usual case): the entry itself, no new tuple
        else:
            heapq.heappush(b.late, (entry[1], entry[2], entry))

    def _rebuild(self, key: tuple, b: _Bin) -> None:
        """Drop a bin's stale entries (its live tasks keep their entries and cap state)."""
        fresh = _Bin()
        fresh.n = b.n
        fresh.aging = [e for e in b.aging if self._live(e, AGING) is not None]
        fresh.capped = [e for e in b.capped if self._live(e, CAPPED) is not None]
        for entry in sorted(fresh.aging, key=lambda e: (e[1], e[2])) if self.model.rate > 0 else ():
            fresh.fifo.append(entry)
        heapq.heapify(fresh.aging)
        heapq.heapify(fresh.capped)
        self._bins[key] = fresh
