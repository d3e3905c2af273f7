"""Placement by expected finish time: which idle worker should take a task, and which should leave it.

Priority (:mod:`services.scheduler.priority`) says *which* task goes next; this module says *where*, for
the two decisions in which greedy "every idle worker takes the best task it can" loses time when the
accounts differ a lot in speed (docs/scheduling.md § Placement; measured with ``ops/bench-utilization``):

* **The tail.** When only a few tasks are left, a slow account that happens to be free takes one and the
  run ends when it does, although a much faster account would have finished it sooner after its current
  task. So an idle worker ``w`` leaves a task for faster accounts when they can, together, finish *every*
  ready task ``w`` could take before ``w`` would finish one.
* **Conversation binding.** A conversation's first turn binds every later turn to the account that runs
  it (the broker enforces the affinity after the first lease; the scheduler decides the first placement).
  Binding a conversation commits the account to its whole chain, so an idle worker opens one only if it
  would finish it earliest in the greedy list schedule of the conversations waiting to be opened, counting
  the work already bound to each account; and it prefers its own bound turns to opening new ones (unless
  the new one is more urgent by ``OWN_TURNS_FIRST`` priority points: a preference, not a starvation).
* **The next turn.** A conversation's next turn is submitted by its module only once the broker reports
  the last one done, a moment after its worker is ready again (it says ``ready {finishing}`` while it
  still delivers the answer). Taking other work in that moment would put a one-shot between every two
  turns of the account's conversations, however the priorities compare, and stretch each chain by a
  task per turn: on accounts 3x slower than the fastest that made the last chain end well after the
  others (``ops/bench-utilization``). So an idle worker whose account has an open conversation expecting
  more turns (:meth:`Conversations.expected_turns`), none of them waiting, whose last turn ended less
  than ``NEXT_TURN_REAL`` real seconds ago (or is the answer it is delivering), takes only work bound to
  its account until then; a timer ends the wait. When the turn comes, priority decides as usual.

Both are the same test (:func:`leave_to_others`): with ``U`` jobs waiting that ``w`` could take, ``w``
finishing one at ``T_w``, and each other account ``a`` able to start at ``s_a`` and spend ``d_a`` per job,
``a`` can finish ``k_a = floor((H - s_a) / d_a)`` of them by the horizon ``H = now + (1 - MARGIN) (T_w -
now)``; ``w`` leaves the work alone iff ``sum k_a >= U``. With a deep queue ``U`` is large and every worker
takes work; the test only bites when few jobs are left relative to what the faster accounts absorb.

The estimates
-------------
* **Service time** per (account, mode) (:class:`Latencies`): world seconds from ``task.running`` to
  ``task.done`` (both events carry the broker's ``ts``), a cumulative mean over the first
  ``LATENCY_WINDOW`` samples, then an exponential average with weight ``1/LATENCY_WINDOW``. Until the
  first sample, a configured hint stands in (:func:`config_hints`: a sim account's latency). A mode never
  observed on an account is estimated from another mode of it, scaled by the ratio of the two modes on the
  accounts where both were observed (an account 3x slower in deep mode is taken to be 3x slower in
  standard mode until observed). No estimate at all: the account is not counted as an alternative, and a
  worker whose own time is unknown never leaves work (it knows no reason to).
* **When a worker is free**: idle now; ``unready`` (reported done, about to say ready) now, for
  ``UNREADY_GRACE`` real seconds; running a task that the broker already reported ended: now; assigned or
  running a task: its start + its mean (``now`` if overdue).
  A task running longer than ``OVERDUE`` times its mean makes its account no alternative (it may be stuck).
* **Work bound to an account**: for each open conversation bound to it, the turns not yet started
  (expected turns - done - the one in flight, at least 1 if a turn is waiting) x its mean; for one-shot
  decisions at least the tasks bound to it that are ready. All of it counts as coming first, for a
  one-shot too: counting only the turns ready at the moment made a fast account with conversations left
  look free soon, a slow account left the last one-shots to it, the fast account kept running its own
  (higher-priority) turns, and after the deadline the slow account took a one-shot at the very end and
  ended the run 150 s after everyone else.
* **Turns per conversation**: :meth:`services.scheduler.conversations.Conversations.expected_turns` (the
  module's hint, else the mean over finished conversations, smoothed).

Why it cannot stall work
------------------------
Leaving work never reserves it: the task stays in the queue for everyone, and every event (worker
ready or done, task submitted, ...) and every tick re-runs the dispatch with fresh estimates. An
alternative counts only if it would finish sooner by ``MARGIN``, so two workers never leave a task to each
other, and the worker that would finish earliest never leaves it. And the first time a task is left
alone it gets a deadline (:attr:`Placement.deadlines`): the moment the alternative was expected to start
it, plus a grace (half the job — a task, or a whole conversation — plus ``GRACE_REAL`` real seconds, the
clock may be scaled). After the deadline the task is never left again, by anyone (the deadline stays
with the task until it runs, so an assignment that comes back does not renew it), and the scheduler has
a timer at that moment (:meth:`SchedulerCore.timers`, "placement") — so an estimate that is
wrong (the fast account went offline, got stuck, or kept taking other work) delays a task by a bounded
amount, once per attempt. A task that a worker declined for a reason the scheduler cannot see (e.g. its
conversation lives on an account the scheduler did not learn after a restart) is never left: it is
placed greedily as before, so that the idle workers take turns with it.

Statelessness
-------------
Nothing here is durable. The open conversations are rebuilt with the queue (the broker's events and
records carry each conversation's account; turns already done before a restart are not known, so a
conversation counts its expected turns again — an overestimate that fades as it ends). The latencies
survive a resynchronisation within the process; a restarted scheduler starts from the configured hints,
relearns from the last ``WARM_EVENTS`` events of the broker's outbox (``SchedulerService._rebuild`` ->
:meth:`Placement.learn_history`), then from the stream. An account with neither a hint nor a sample is
simply not counted (the old greedy behaviour).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from services.scheduler.classes import fits, opens_conversation
from services.scheduler.priority import STANDARD
from shared import latency
from shared.settings import Invalid

if TYPE_CHECKING:
    from services.scheduler.view import SchedulerView

LATENCY_WINDOW = 20        # samples in the cumulative mean before it becomes an exponential average
MARGIN = 0.05              # an alternative must finish at least 5% sooner to count
OVERDUE = 3.0              # running longer than 3x its mean: that account is no alternative now
UNREADY_GRACE = 2.0        # real seconds a worker that reported done is expected to say ready within
GRACE_REAL = 1.0           # real seconds of slack in a deadline (worker hand-offs), plus half the job
OWN_TURNS_FIRST = 10.0     # priority points by which an opening turn must beat a worker's own turns
NEXT_TURN_REAL = 0.25      # real seconds an account waits for its conversation's next turn after one ends
WARM_EVENTS = 5000         # recent outbox events a starting scheduler learns latencies from

# events after which a task.running no longer pairs with a task.done (a failed or ended run)
_ENDS = ("task.pending", "task.parked", "task.paused", "task.cancelled")

log = logging.getLogger("scheduler")


class Latencies:
    """Mean service time (world seconds) per (account, mode), learned from the event stream."""

    def __init__(self):
        self.means: dict[tuple[str, str], float] = {}
        self.counts: dict[tuple[str, str], int] = {}
        self._scaled: dict[tuple[str, str], float | None] = {}   # estimates from other modes, until a sample

    def add(self, account: str, mode: str, seconds: float) -> None:
        if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
            return
        key = (account, mode)
        n = self.counts.get(key, 0) + 1
        self.counts[key] = n
        old = self.means.get(key, seconds)
        self.means[key] = old + (seconds - old) / min(n, LATENCY_WINDOW)
        self._scaled.clear()

    def hint(self, account: str, mode: str, seconds: float) -> None:
        """A configured guess (:func:`config_hints`), used until the first observation replaces it."""
        key = (account, mode)
        if key not in self.counts and isinstance(seconds, float) and math.isfinite(seconds) and seconds > 0:
            self.means[key] = seconds
            self._scaled.clear()

    def mean(self, account: str | None, mode: str) -> float | None:
        """Observed, else scaled from another mode of the account (module docstring), else None."""
        if account is None or mode is None:
            return None
        own = self.means.get((account, mode))
        if own is not None:
            return own
        key = (account, mode)
        if key not in self._scaled:
            self._scaled[key] = self._from_other_modes(account, mode)
        return self._scaled[key]

    def _from_other_modes(self, account: str, mode: str) -> float | None:
        estimates = []
        for (acct, other), base in self.means.items():
            if acct != account or other == mode:
                continue
            ratios = [m / self.means[(b, other)] for (b, md), m in self.means.items()
                      if md == mode and (b, other) in self.means]
            if ratios:   # geometric mean of the mode ratios seen elsewhere
                estimates.append(base * math.exp(sum(map(math.log, ratios)) / len(ratios)))
        return max(estimates) if estimates else None

    def fastest(self, mode: str) -> float | None:
        """The least mean (observed or scaled) of any account for ``mode``: bounds what others can absorb."""
        key = ("*", mode)
        if key not in self._scaled:
            means = [self.mean(a, mode) for a in {a for a, _ in self.means}]
            self._scaled[key] = min((m for m in means if m), default=None)
        return self._scaled[key]

    def snapshot(self) -> dict:
        return {f"{a}/{m}": {"mean_s": round(v, 1), "samples": self.counts.get((a, m), 0)}
                for (a, m), v in sorted(self.means.items())}


def config_hints(accounts) -> list[tuple[str, str, float]]:
    """Initial service times ``(account, mode, world seconds)`` from the configuration: the mean of a sim
    account's ``latency`` setting (read as the sim reads it: shared/latency.py), for the modes it names."""
    out = []
    for acct in accounts:
        value = acct.settings.get("latency") if acct.backend == "sim" else None
        if value is None:
            continue
        try:
            specs = latency.parse(value)
        except Invalid:   # the account's own checks refuse it at start; no guess from a bad setting
            continue
        for mode in latency.named_modes(value):
            seconds = latency.mean(specs[mode])
            if mode in acct.modes and seconds:
                out.append((acct.name, mode, seconds))
    return out


@dataclass(slots=True)
class Option:
    """Another account's worker that could take the job: when it can start it and what a job costs it."""

    account: str
    start: float      # world time: expected free + work bound to it that comes first
    cost: float       # world seconds per job (one task, or a whole conversation)
    mean: float       # its mean service time for one task of the job's mode


def could_leave(own_cost: float, own_start_in: float, fastest_cost: float | None, others: int, jobs: float) -> bool:
    """A cheap necessary condition for :func:`leave_to_others` (no alternative starts before now nor
    spends less than ``fastest_cost`` per job): False means take the job without looking further."""
    if not fastest_cost or others <= 0:
        return False
    return jobs <= others * int((1.0 - MARGIN) * (own_start_in + own_cost) // fastest_cost)


def leave_to_others(now: float, own_cost: float, own_start: float, options: list[Option], jobs: float,
                    grace: float) -> tuple[float, str] | None:
    """The test of the module docstring, for a worker that would start at ``own_start`` and spend
    ``own_cost`` on the job. Returns None (take it) or ``(deadline, account)``: the earliest alternative
    counted and the time it is expected to start the job plus half the job plus ``grace`` (world seconds)."""
    horizon = now + (1.0 - MARGIN) * (own_start + own_cost - now)
    capacity, best = 0, None
    for o in options:
        if o.cost <= 0 or o.start + o.cost > horizon:
            continue
        capacity += int((horizon - o.start) // o.cost)
        if best is None or o.start < best.start:
            best = o
    if best is None or capacity < jobs:
        return None
    return best.start + 0.5 * best.cost + grace, best.account


class Placement:
    """The core's placement advisor: latencies, the tasks left alone (with their deadlines), and the
    decisions of the module docstring. It reads the scheduler's state through the view (queue, workers,
    assignments, running turns, accounts) and changes none of it."""

    def __init__(self, view: SchedulerView):
        self.view = view
        self.latencies = Latencies()
        self.deadlines: dict[int, tuple[float, str]] = {}   # task id -> (world deadline, account left to)
        self.left_total = 0                                  # decisions to leave a task (stats)
        self.awaiting: dict[str, float] = {}                 # account -> world time its wait for a turn ends
        self._est: dict = {}                                 # estimates cached during one dispatch
        self._est_at: tuple | None = None                    # ... at this (world, mono) time
        for account, mode, seconds in config_hints(view.config.accounts):
            self.latencies.hint(account, mode, seconds)

    def reset(self) -> None:
        """Forget the deadlines and waits (a rebuild follows); the latencies stay."""
        self.deadlines.clear()
        self.awaiting.clear()
        self._est = {}

    # --- learning -------------------------------------------------------------------------------------

    def learn(self, account: str | None, mode: str | None, started, ended) -> None:
        if account and mode and isinstance(started, (int, float)) and isinstance(ended, (int, float)):
            self.latencies.add(account, mode, float(ended) - float(started))

    def learn_history(self, events) -> int:
        """Relearn service times from past events (the broker's outbox before a rebuild): only
        ``task.running`` -> ``task.done`` pairs count. Returns the samples learned."""
        starts: dict = {}
        n = 0
        for ev in events:
            typ, tid = ev.get("type"), ev.get("id")
            if typ == "task.running":
                starts[tid] = (ev.get("account"), ev.get("mode"), ev.get("ts"))
            elif typ == "task.done" and tid in starts:
                account, mode, ts = starts.pop(tid)
                self.learn(account, mode, ts, ev.get("ts"))
                n += 1
            elif typ in _ENDS:
                starts.pop(tid, None)
        return n

    # --- tasks left alone -----------------------------------------------------------------------------

    def may_leave(self, tid: int, now: float) -> bool:
        """False once the task's deadline passed: it is never left alone again (no stall)."""
        d = self.deadlines.get(tid)
        return d is None or now < d[0]

    def left(self, tid: int, until: float, account: str) -> None:
        """Task ``tid`` is left for ``account``; the first time, it gets its deadline."""
        if tid not in self.deadlines:
            self.deadlines[tid] = (until, account)
            self.left_total += 1

    def forget(self, tid: int) -> None:
        self.deadlines.pop(tid, None)

    def next_deadline(self, now: float) -> float | None:
        """World time of the next deadline of a task left alone or of an account's wait for a turn."""
        first = min((d for d, _ in self.deadlines.values() if d > now), default=None)
        if self.awaiting:   # a few accounts at most, and only for a moment after a turn ended
            for account in [a for a, until in self.awaiting.items() if until <= now]:
                del self.awaiting[account]
            waits = list(self.awaiting.values())
            first = min(waits if first is None else [first, *waits], default=None)
        return first

    # --- decisions ------------------------------------------------------------------------------------

    def assigned(self) -> None:
        """A task was just assigned: the cached estimates are stale."""
        self._est = {}

    def admits(self, w, world: float, mono: float) -> dict:
        """The bins idle worker ``w`` may take now, each with its module term (the ``admit`` of
        :meth:`TaskQueue.best`). A bin is left out if ``w`` cannot serve it (placement class, mode,
        cool-down, quota block), or if it should leave it to others:

        * a bin that opens a conversation, while ``w`` has turns of its own conversations waiting (unless
          the opening is more urgent by ``OWN_TURNS_FIRST``), or while the other accounts would finish all
          the waiting conversations before ``w`` finished one;
        * a bin others could take too, while faster accounts would finish every ready task ``w`` could take
          before ``w`` finished one (the tail).

        Looks at the bins' tops and sizes and at the workers, never at the tasks in a bin: O(B log n).
        """
        view, lat = self.view, self.latencies
        if self._est_at != (world, mono):   # the estimates hold for one moment (one dispatch)
            self._est, self._est_at = {}, (world, mono)
        queue = view.table.queue
        modes: dict[tuple, str] = {}
        for key in queue.bins():
            cls, module = key
            if fits(cls, w.account, w.backend):
                mode = view.mode_for(w.account, w.modes, cls, module, world)
                if mode is not None:
                    modes[key] = mode
        out = {key: view.model.module_term(key[1], view.table.waiting[key[1]]) for key in modes}
        until = self._next_turn_due(w, world)
        if until is not None:   # only its own turns until then (a timer: next_deadline)
            self.awaiting[w.account] = until
            return {key: term for key, term in out.items() if key[0][2] == w.account}
        self.awaiting.pop(w.account, None)
        shared = [key for key in modes if key[0][2] is None]   # not bound to an account: others may take it
        if not shared:
            return out
        own_tops = ((key, queue.top(key, world)) for key in modes if key[0][2] == w.account)
        own_best = max((top[0] + out[key] for key, top in own_tops if top is not None), default=None)
        openings = sum(queue.bin_size(key) for key in shared if opens_conversation(key[0]))
        # a waiting conversation counts as its expected turns
        tasks = sum(queue.bin_size(key) for key in shared) + openings * (view.convs.expected_turns() - 1)
        others = len(view.workers) - 1
        for key in shared:
            opening = opens_conversation(key[0])
            jobs = openings if opening else tasks
            if not opening and not could_leave(lat.mean(w.account, modes[key]) or 0.0, 0.0,
                                               lat.fastest(modes[key]), others, jobs):
                continue   # a deep queue: take work (this check only saves time)
            top = queue.top(key, world)
            if top is None or top[1].declines:
                # declined for a reason we cannot see (e.g. a rebuild lost the account of its conversation):
                # placed greedily, so that the idle workers take turns with it
                continue
            if opening and own_best is not None and top[0] + out[key] <= own_best + OWN_TURNS_FIRST:
                del out[key]   # its own conversations first (they are bound to it anyway), unless more urgent
                continue
            if not self.may_leave(top[1].id, world):
                continue
            left = self._leave(w, key, modes[key], top[1], jobs, world, mono)
            if left is not None:
                self.left(top[1].id, *left)
                del out[key]
        return out

    def _next_turn_due(self, w, world: float) -> float | None:
        """World time until which idle ``w`` waits for the next turn of a conversation of its account, or
        None: see "The next turn" in the module docstring."""
        convs = self.view.convs
        mine = convs.open_on(w.account)
        if not mine:
            return None
        grace, until = NEXT_TURN_REAL * (getattr(self.view.clock, "scale", 1.0) or 1.0), None
        for conv in mine:
            if conv in convs.turns:
                continue   # a turn of it is tracked already: it waits in w's own bin (or behind one in flight)
            c = convs.open[conv]
            flight = convs.inflight.get(conv)
            if flight is None:
                end = c.last_end + grace if c.last_end else 0.0   # its last turn ended then
                later = c.done
            elif flight == w.finishing:
                end, later = world + grace, c.done + 1   # w is delivering its answer: the turn ends now
            else:
                continue   # its turn is assigned or running, not ending here
            if end > world and convs.expected_turns(c.hint) - later >= 0.5:
                until = end if until is None else max(until, end)
        return until

    def _leave(self, w, key: tuple, mode: str, t, jobs: float, world: float, mono: float):
        """Should idle ``w`` leave task ``t`` (the top of bin ``key``, with ``jobs`` like it waiting) to the
        other workers? Returns (deadline, the account expected to take it) or None."""
        view, lat = self.view, self.latencies
        own = lat.mean(w.account, mode)
        if own is None:
            return None
        cls, module = key
        opening = opens_conversation(cls)
        turns = view.convs.expected_turns(t.attrs.get("expected_turns")) if opening else 1.0
        own_start = world + (self._backlog(w.account) if opening else 0.0)
        fastest = lat.fastest(mode)
        if not could_leave(turns * own, own_start - world, turns * fastest if fastest else None,
                           len(view.workers) - 1, jobs):
            return None
        options = []
        for v in view.workers:
            if v is w or not v.account or v.account == w.account or v.account in view.accounts.paused \
                    or not fits(cls, v.account, v.backend):
                continue
            m = view.mode_for(v.account, v.modes, cls, module, world)
            mean = lat.mean(v.account, m) if m else None
            free = self._free_at(v, world, mono) if mean else None
            if mean is None or free is None:
                continue
            # what it runs first: the turns of its own conversations (an opening turn queues behind them;
            # a one-shot too, as far as we know: a turn bound to it usually outranks it, and an
            # overestimate only makes w take the task itself, as a greedy scheduler would)
            first = self._backlog(v.account)
            if not opening:
                first = max(first, self._ready_bound(v.account) * mean)
            options.append(Option(v.account, free + first, turns * mean, mean))
        scale = getattr(view.clock, "scale", 1.0) or 1.0
        left = leave_to_others(world, turns * own, own_start, options, jobs, GRACE_REAL * scale)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s, %s task %d (%d like it waiting): own start +%.1f cost %.1f; others %s: %s", w.name,
                      "opening" if opening else "shared", t.id, jobs, own_start - world, turns * own,
                      [(o.account, round(o.start - world, 1), round(o.cost, 1)) for o in options],
                      f"left to {left[1]} until +{left[0] - world:.0f}" if left else "take")
        return left

    def _free_at(self, v, world: float, mono: float) -> float | None:
        """World time at which worker ``v`` is expected to be free, or None if we cannot tell (then it is
        no alternative): see "When a worker is free" in the module docstring."""
        key = ("free", v.ident)
        if key in self._est:
            return self._est[key]
        view, free = self.view, None
        if v.state == "idle":
            free = world
        elif v.state == "unready":
            free = world if mono - v.since < UNREADY_GRACE else None
        else:
            start = mode = None
            if v.state == "assigned":
                a = view.table.assigned.get(v.task_id)
                if a is not None:
                    start, mode = a.world, a.mode
            elif v.state == "busy":
                run = view.table.running.get(v.task_id)
                if run is None:   # its task ended (the broker's event came before the worker's `done`)
                    start, mode, free = None, None, world
                else:
                    start, mode = run.start, run.mode
            mean = self.latencies.mean(v.account, mode) if start and mode else None
            if start and mean is not None and world <= start + OVERDUE * mean:
                free = max(world, start + mean)
        self._est[key] = free
        return free

    def _backlog(self, account: str) -> float:
        """World seconds of conversation turns bound to ``account`` and not started yet."""
        key = ("backlog", account)
        if key not in self._est:
            convs, lat, total = self.view.convs, self.latencies, 0.0
            for conv in convs.open_on(account):
                mean = lat.mean(account, convs.open[conv].mode) or lat.mean(account, STANDARD) or 0.0
                total += mean * convs.remaining(conv)
            self._est[key] = total
        return self._est[key]

    def _ready_bound(self, account: str) -> int:
        """Ready tasks that only ``account`` may take."""
        key = ("bound", account)
        if key not in self._est:
            queue = self.view.table.queue
            self._est[key] = sum(queue.bin_size(b) for b in queue.bins() if b[0][2] == account)
        return self._est[key]
