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
* ``captimes`` — the aging tasks by the time they reach the cap (``created + cap / rate``); before each
  look at a bin, tasks whose cap time has passed move from ``aging`` to ``capped``. Each task moves at
  most once, so the migration is amortised O(log n).

The bin's best task is the better of the two heap tops. Removals and updates are lazy: every entry
carries a generation number and stale entries are dropped when they surface; a bin whose heaps hold
more than 3x its live tasks is rebuilt (amortised O(1) per operation). Delayed tasks (``not_before``
in the future) wait in one time-ordered heap and enter their bin when due (:meth:`TaskQueue.advance`).

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
import math
import random
from bisect import bisect_right as _bisect_right
from collections import Counter
from collections.abc import Callable, Iterator

from services.scheduler.priority import PriorityModel, QTask


class _Entry:
    __slots__ = ("task", "gen", "key", "capped", "ready")

    def __init__(self, task: QTask, gen: int, key: tuple):
        self.task, self.gen, self.key = task, gen, key
        self.capped = False
        self.ready = False


class _Bin:
    __slots__ = ("aging", "capped", "captimes", "ids")

    def __init__(self):
        self.aging: list = []      # (-(static - rate*created), created, id, gen)
        self.capped: list = []     # (-static, created, id, gen)
        self.captimes: list = []   # (cap_time, id, gen)
        self.ids: set[int] = set()

    def size(self) -> int:
        return len(self.aging) + len(self.capped) + len(self.captimes)


class TaskQueue:
    def __init__(self, model: PriorityModel):
        self.model = model
        self._entries: dict[int, _Entry] = {}
        self._bins: dict[tuple, _Bin] = {}
        self._keys: dict[tuple, tuple] = {}   # interned bin keys (a handful: classes x modules)
        self._delayed: list = []      # (not_before, id, gen)
        self._n_delayed = 0
        self.delayed_by_module: Counter = Counter()   # module -> delayed tasks (for `top`, no walk)
        self._gen = 0
        self.ops = 0                  # heap operations + bin inspections (complexity tests)

    # --- membership -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, task_id: int) -> bool:
        return task_id in self._entries

    def get(self, task_id: int) -> QTask | None:
        entry = self._entries.get(task_id)
        return entry.task if entry else None

    def is_ready(self, task_id: int) -> bool:
        entry = self._entries.get(task_id)
        return bool(entry and entry.ready)

    @property
    def ready_count(self) -> int:
        return len(self._entries) - self._n_delayed

    @property
    def delayed_count(self) -> int:
        return self._n_delayed

    def tasks(self) -> Iterator[QTask]:
        return (e.task for e in self._entries.values())

    def ready_tasks(self) -> Iterator[QTask]:
        return (e.task for e in self._entries.values() if e.ready)

    # --- changes ----------------------------------------------------------------------------------

    def push(self, task: QTask, now: float) -> None:
        """Insert (or re-insert after a change) a task; computes ``task.static``.

        ``task.created`` is clamped to ``now``: a creation time in the future (clock skew between
        processes) would otherwise give negative aging in the heap key.
        """
        self.remove(task.id)
        task.created = min(task.created, now)
        task.static = self.model.static(task)
        self._gen += 1
        key = (task.cls, task.module)
        entry = _Entry(task, self._gen, self._keys.setdefault(key, key))   # one key tuple per bin, shared
        self._entries[task.id] = entry
        if task.not_before > now:
            self._n_delayed += 1
            self.delayed_by_module[task.module] += 1
            heapq.heappush(self._delayed, (task.not_before, task.id, entry.gen))
            self.ops += 1
        else:
            self._enter_bin(entry, now)

    def remove(self, task_id: int) -> QTask | None:
        """Forget a task (lazily: its heap entries die when they surface)."""
        entry = self._entries.pop(task_id, None)
        if entry is None:
            return None
        if entry.ready:
            b = self._bins[entry.key]
            b.ids.discard(task_id)
            if not b.ids:
                del self._bins[entry.key]   # drop the garbage with the bin
            elif b.size() > 3 * len(b.ids) + 64:
                self._rebuild(entry.key, b)
        else:
            self._n_delayed -= 1
            self._uncount_delayed(entry.task.module)
            if len(self._delayed) > 2 * self._n_delayed + 64:
                self._delayed = [item for item in self._delayed if self._valid_delayed(item)]
                heapq.heapify(self._delayed)
        return entry.task

    def advance(self, now: float) -> list[int]:
        """Move delayed tasks whose ``not_before`` has come into their bins; returns their ids."""
        moved = []
        while self._delayed and self._delayed[0][0] <= now:
            item = heapq.heappop(self._delayed)
            self.ops += 1
            if self._valid_delayed(item):
                entry = self._entries[item[1]]
                self._n_delayed -= 1
                self._uncount_delayed(entry.task.module)
                self._enter_bin(entry, now)
                moved.append(entry.task.id)
        return moved

    def next_due(self) -> float | None:
        """World time of the first delayed task (stale entries are dropped on the way)."""
        while self._delayed and not self._valid_delayed(self._delayed[0]):
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
        return len(b.ids) if b is not None else 0

    def bin_tasks(self, key: tuple) -> Iterator[QTask]:
        """The ready tasks of one bin (O(size of the bin))."""
        b = self._bins.get(key)
        return (self._entries[tid].task for tid in (b.ids if b is not None else ()))

    def sample(self, keys: list[tuple], k: int, rng: random.Random) -> list[QTask]:
        """About ``k`` ready tasks drawn uniformly (with replacement) from the bins ``keys``, in O(k).

        Draws heap slots uniformly over the bins' ``aging`` and ``capped`` lists and keeps the live ones
        (each live task has exactly one live slot), so every ready task of those bins is equally likely.
        Gives up after 8k draws (a bin at its worst holds ~3 stale slots per live one): fewer than ``k``
        tasks then, still uniform."""
        heaps, cumulative, total = [], [], 0        # (heap, capped), running total of slots
        for key in keys:
            b = self._bins.get(key)
            for heap, capped in (((b.aging, False), (b.capped, True)) if b is not None else ()):
                if heap:
                    total += len(heap)
                    heaps.append((heap, capped))
                    cumulative.append(total)
        if not total or k <= 0:
            return []
        out: list[QTask] = []
        for _ in range(8 * k):
            if len(out) >= k:
                break
            i = rng.randrange(total)
            j = _bisect_right(cumulative, i)
            heap, capped = heaps[j]
            _, _, tid, gen = heap[i - (cumulative[j - 1] if j else 0)]
            self.ops += 1
            entry = self._entries.get(tid)
            if entry is not None and entry.gen == gen and entry.capped == capped and entry.ready:
                out.append(entry.task)
        return out

    def top(self, key: tuple, now: float) -> tuple[float, QTask] | None:
        """The best ready task of one bin and its priority without the module term."""
        b = self._bins.get(key)
        if b is None:
            return None
        self.ops += 1
        model = self.model
        while b.captimes and b.captimes[0][0] <= now:      # tasks that reached the aging cap
            _, tid, gen = heapq.heappop(b.captimes)
            self.ops += 1
            entry = self._entries.get(tid)
            if entry is not None and entry.gen == gen and not entry.capped:
                entry.capped = True
                heapq.heappush(b.capped, (-entry.task.static, entry.task.created, tid, gen))
                self.ops += 1
        best = None
        for heap, capped in ((b.aging, False), (b.capped, True)):
            while heap:
                _, _, tid, gen = heap[0]
                entry = self._entries.get(tid)
                if entry is not None and entry.gen == gen and entry.capped == capped:
                    break
                heapq.heappop(heap)
                self.ops += 1
            if heap:
                task = self._entries[heap[0][2]].task
                prio = task.static + (model.cap if capped else model.aging(task.created, now))
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

    def _valid_delayed(self, item) -> bool:
        entry = self._entries.get(item[1])
        return entry is not None and entry.gen == item[2] and not entry.ready

    def _enter_bin(self, entry: _Entry, now: float) -> None:
        entry.ready = True
        b = self._bins.get(entry.key)
        if b is None:
            b = self._bins[entry.key] = _Bin()
        b.ids.add(entry.task.id)
        self._file(b, entry, now)

    def _file(self, b: _Bin, entry: _Entry, now: float) -> None:
        task, model = entry.task, self.model
        cap_time = model.cap_time(task.created)
        if cap_time <= now:
            entry.capped = True
            heapq.heappush(b.capped, (-task.static, task.created, task.id, entry.gen))
            self.ops += 1
        else:
            entry.capped = False
            akey = task.static - (model.rate * task.created if model.rate > 0 else 0.0)
            heapq.heappush(b.aging, (-akey, task.created, task.id, entry.gen))
            if cap_time < math.inf:
                heapq.heappush(b.captimes, (cap_time, task.id, entry.gen))
            self.ops += 2

    def _rebuild(self, key: tuple, b: _Bin) -> None:
        """Drop a bin's stale entries (its live tasks keep their generation and cap state)."""
        fresh = _Bin()
        fresh.ids = b.ids
        model = self.model
        for tid in b.ids:
            entry = self._entries[tid]
            task = entry.task
            if entry.capped:
                fresh.capped.append((-task.static, task.created, tid, entry.gen))
            else:
                akey = task.static - (model.rate * task.created if model.rate > 0 else 0.0)
                fresh.aging.append((-akey, task.created, tid, entry.gen))
                cap_time = model.cap_time(task.created)
                if cap_time < math.inf:
                    fresh.captimes.append((cap_time, tid, entry.gen))
        for heap in (fresh.aging, fresh.capped, fresh.captimes):
            heapq.heapify(heap)
        self._bins[key] = fresh
