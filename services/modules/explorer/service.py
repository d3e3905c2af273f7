"""``module-explorer``: applies the explorer's settled tasks exactly once and proposes new work.

The steps are pure functions over a :class:`.context.Env` (docs/modules.md § Module style): ``HANDLERS``
(:mod:`.flow`, one per task kind) give the ops that apply a settled task, ``UNUSABLE`` (:mod:`.recovery`)
those that mark its entity when the answer cannot be used; the framework commits them with the ack.
Planning (:meth:`ExplorerService.plan`) starts threads while there is room, imports the seeds the
researcher promoted, re-ranks the tasks of overridden threads and insights (:mod:`.priorities`), and
every ``repair_interval`` re-proposes every open step (:mod:`.recovery`); between repairs, a
capacity-following pass moves panel seats blocked past ``member_patience`` (:mod:`.panels`). What is not
domain logic lives here: the reads of the broker and the scheduler and their caches, the commits, the
cancels.

Every transaction that creates tasks goes through :meth:`ExplorerService.paced`, which counts them
against their seed's hourly budget (over it, they wait) and pauses a seed whose threads keep producing
unusable answers (:mod:`.pacing`); :meth:`ExplorerService.plan` starts no thread on a paused seed or
one over its budget.
"""
from __future__ import annotations

import os
from collections.abc import Iterable

from services.modules import capacity as CAP
from services.modules.base import Effect, ModuleService
from services.modules.explorer import context as C
from services.modules.explorer import extraction as X
from services.modules.explorer import flow
from services.modules.explorer import load as L
from services.modules.explorer import model as M
from services.modules.explorer import pacing as PC
from services.modules.explorer import panels as PN
from services.modules.explorer import priorities as PR
from services.modules.explorer import recovery as RC
from services.modules.explorer import seeds as S
from services.modules.explorer import threads as T
from services.modules.store import KeptPrefix, Store
from shared import scheduler_client, txn
from shared.errors import BrokerUnavailable, FanoError

PROMOTIONS_WORLD = 60.0   # world seconds between two looks for seeds the researcher promoted
WAITING_RECHECK = 3.0   # real seconds between reads of the broker for waiting threads while planning
                        # (or repair_interval, if shorter) ...
WAITING_RECHECK_WORLD = 60.0   # ... or this many world seconds, if sooner (a scaled clock), but
RECHECK_REAL_MIN = 1.0         # never more often than this (real seconds)
FOLLOW_REAL_MIN = 1.0   # real seconds: the floor of the capacity-following pass's cadence (member_patience / 4)

# prefixes the service keeps between steps (prefix -> what of each record it keeps; None: maps whole)
KEPT = {"insights/": X.insight_view, "threads/": None}

HANDLERS = {M.EXPLORE: flow.handle_turn, M.CRITIQUE: flow.handle_turn, M.SYNTHESIS: flow.handle_synthesis,
            M.EXTRACT: flow.handle_extract, M.CONSOLIDATE: flow.handle_consolidate, M.DEDUP: flow.handle_dedup,
            **{kind: flow.handle_review for kind in flow.REVIEW_KINDS}}
UNUSABLE = {M.EXPLORE: RC.unusable_thread, M.CRITIQUE: RC.unusable_thread, M.SYNTHESIS: RC.unusable_thread,
            M.EXTRACT: RC.unusable_thread, M.CONSOLIDATE: RC.unusable_thread, M.DEDUP: RC.unusable_dedup,
            **{kind: RC.unusable_review for kind in flow.REVIEW_KINDS}}


class ExplorerService(ModuleService):
    module = M.MODULE

    def initialize(self) -> None:
        self.settings = M.load_settings(self.config)   # first: a bad table exits (CONFIG) before any socket
        self._next_repair = 0.0
        self._next_follow = 0.0
        self._next_promotions = 0.0
        super().initialize()

    def now(self) -> float:
        return self.clock.world()

    def env(self) -> C.Env:
        """What one step reads (a fresh world time; the stores read the broker on every call)."""
        return C.Env(self.store, Store(self.client, "documenter"), self.now(),
                     {a.name: tuple(a.modes) for a in self.config.accounts}, self.settings, self.log,
                     self.capacity, self.load_view,
                     lambda tid: self.client.get(tid, history=True).get("history") or [],
                     kept={prefix: self.kept(prefix) for prefix in KEPT})

    def kept(self, prefix: str) -> KeptPrefix:
        """The records of a prefix in :data:`KEPT` (every insight, every thread ever made: read on most
        steps), kept between steps and brought up to date by versions (services/modules/store.py,
        KeptPrefix) rather than read whole each time."""
        kept = getattr(self, "_kept", None)
        if kept is None or kept[prefix].store is not self.store:
            kept = self._kept = {p: KeptPrefix(self.store, p, shape) for p, shape in KEPT.items()}
        return kept[prefix]

    def capacity(self) -> CAP.Capacity:
        """The accounts' headroom for this module now, read from the broker (:mod:`services.modules.capacity`)."""
        modes = {a.name: tuple(a.modes) for a in self.config.accounts}
        return CAP.Capacity.read(self.client, M.MODULE, modes, self.now(), getattr(self, "log", None))

    # --- apply --------------------------------------------------------------------------------------------

    def handle(self, task: dict) -> Effect:
        handler = HANDLERS.get(task["kind"])
        if handler is None:
            self.log.warning("task %s: unknown kind %s; acked without effect", task["id"], task["kind"])
            return Effect([])
        env = self.env()
        return Effect(PC.paced(env, handler(env, task)))

    def on_unusable(self, task: dict, error: str) -> list:
        handler = UNUSABLE.get(task["kind"])
        env = self.env()
        return PC.paced(env, handler(env, task, error) if handler else [])

    # --- commits (paced: services/modules/explorer/pacing.py) ----------------------------------------------

    def paced(self, ops: list) -> list:
        """:func:`.pacing.paced` over a fresh Env."""
        return PC.paced(self.env(), ops)

    def txn_or_skip(self, ops: list, what: str) -> bool:
        """A planning transaction (no ack; a thread started, a held task proposed, a panel seat moved),
        paced like an applied result's; False when another writer changed what it read (next pass)."""
        if txn.conditional(self.client, self.module, self.paced(ops)):
            return True
        self.log.info("%s: another writer changed what it read; will look again", what)
        return False

    def submit_if_absent(self, tasks: list[dict]) -> None:
        """The repair pass's proposals: a task held by its seed's budget is created (and counted) only when
        the hour has room; the others exist already or are re-proposed as before."""
        plain = []
        for spec in tasks:
            sid = PC.seed_of_task(spec)
            rec = PC.current(self.store.get(PC.pace_key(sid))[1], sid, self.now()) if sid else None
            if rec is None or spec["key"] not in rec["held"]:
                plain.append(spec)
            elif PC.room(rec, self.settings.max_tasks_per_seed_hour) > 0:
                self.txn_or_skip([txn.submit(dict(spec, module=M.MODULE))], f"propose held task {spec['key']}")
        super().submit_if_absent(plain)

    # --- plan ---------------------------------------------------------------------------------------------

    def import_promotions(self) -> None:
        """Seeds promoted by the researcher (``promotions/<finding>`` in its namespace, written once) become
        seeds here; ``if_version=0`` makes the import idempotent, and a seed the user removed is not
        imported again (the ``imported/`` marker stays). Looked for every ``PROMOTIONS_WORLD`` world seconds
        (at most every 5 real seconds), not on every pass: planning follows every applied result."""
        if self.clock.mono() < getattr(self, "_next_promotions", 0.0):
            return
        self._next_promotions = self.clock.mono() + self.world_interval(PROMOTIONS_WORLD, 0.25, 5.0)
        imported = {key.split("/", 1)[1] for key, _, _ in self.store.scan("imported/")}
        for key, _, promo in Store(self.client, "researcher").scan("promotions/"):
            fid = key.split("/", 1)[1]
            if fid in imported:
                continue
            try:
                seed = S.from_promotion(fid, promo, self.now())
            except S.SeedError as exc:
                self.log.warning("promotion %s not imported: %s", fid, exc)
                seed = None
            ops = C.Ops()
            ops.put(f"imported/{fid}", {"finding_id": fid, "seed": seed and seed["id"], "at": self.now()}, 0)
            if seed is not None and not self.store.get(M.seed_key(seed["id"]))[0]:
                ops.put(M.seed_key(seed["id"]), seed, 0)
            if self.txn_or_skip(ops.ops, f"import promotion {fid}") and seed is not None:
                self.log.info("seed %s imported from research finding %s", seed["id"], fid)

    def plan(self) -> None:
        """Start threads while there is room (:meth:`thread_room`); re-rank the queued tasks of threads whose
        priority was overridden (:mod:`.priorities`); every ``repair_interval``, re-propose open steps (and
        re-rank the tasks of overridden insights); between, follow capacity every :meth:`follow_interval`."""
        self.import_promotions()
        seeds = self.store.records("seeds/")
        threads = self.kept("threads/").values()
        paces = {p.get("seed_id"): p for p in self.store.records("pace/")}
        accounts = self.env().configured_accounts()

        def candidate():
            # a paused seed, or one over its hourly budget, gets no new thread (services/modules/explorer/pacing.py)
            blocked = PC.blocked_seeds(seeds, threads, paces, self.settings, self.now())
            return T.select_seed([s for s in seeds if s.get("id") not in blocked], threads,
                                 self.settings.open_threads_per_seed)
        room = self.thread_room(threads) if candidate() is not None else 0
        while room > 0:
            seed = candidate()
            if seed is None:
                break
            thread = T.new_thread(seed, threads, self.now())
            # its first turn goes to an account with a free share of threads (load.py); counted below
            thread["explore_on"] = L.explore_targets(self.load_view(threads), threads, self.settings, accounts)
            ops = C.Ops()
            ops.put(M.thread_key(thread["id"]), thread, 0)
            ops.submit(T.turn_task(thread, 1, seeds, [], accounts, self.settings))
            if not self.txn_or_skip(ops.ops, f"start thread {thread['id']}"):
                return
            paces[seed["id"]] = self.store.get(PC.pace_key(seed["id"]))[1]
            self.log.info("thread %s started on seed %s (%s)", thread["id"], seed["id"], seed["type"])
            threads.append(thread)
            room -= 1
        self.align_priorities([t for t in threads if t.get("status") in PR.THREAD_FOLLOWS], "thread_id", M.thread_key)
        if self.clock.mono() >= self._next_repair:
            self._next_repair = self.clock.mono() + self.settings.repair_interval
            self._next_follow = self.clock.mono() + self.follow_interval()
            self.repair(threads)   # follows capacity too
        elif self.clock.mono() >= self._next_follow:
            self._next_follow = self.clock.mono() + self.follow_interval()
            self.follow_capacity()

    def align_priorities(self, records: list[dict], field: str, key) -> None:
        """Bring the live tasks of threads (insights) whose priority was overridden to that priority, then
        record it in ``queued_priority`` (see :mod:`.priorities`: idempotent, repeated after a crash)."""
        stale = {r["id"]: r["priority"] for r in records
                 if PR.needs_alignment(r) and isinstance(r.get("priority"), int)}
        if not stale:
            return
        PR.align(self.client, field, stale, self.config.scheduler.seed_weight, self.log)
        for rid, prio in stale.items():
            version, current = self.store.get(key(rid))
            if not isinstance(current, dict) or current.get("priority") != prio:
                continue   # changed again meanwhile: the next pass aligns to the new value
            ops = C.Ops()
            ops.put(key(rid), dict(current, queued_priority=prio), version)
            self.txn_or_skip(ops.ops, f"record the queued priority of {rid}")

    def repair(self, threads: list[dict]) -> None:
        """Re-propose every open step from stored state; close extraction panels out of patience
        (:mod:`.recovery`); follow capacity over every open panel."""
        env = self.env()
        for thread in threads:
            if thread.get("status") not in M.OPEN_THREAD:
                continue
            if RC.out_of_patience(env, thread):
                ops = RC.close_out_of_patience(env, thread)
                if ops is not None:
                    self.txn_or_skip(ops, f"close the extraction panel of {thread['id']}")
                continue
            self.submit_if_absent(C.thread_tasks(env, thread))
        for tasks in RC.open_review_tasks(env):
            self.submit_if_absent(tasks)
        self.follow_capacity(full=True)
        insights = self.kept("insights/").values()
        self.align_priorities([i for i in insights if i.get("status") == "pending"], "insight_id", M.insight_key)
        for spec in RC.dedup_tasks(env, insights):
            self.submit_if_absent([spec])

    # --- following capacity (services/modules/explorer/panels.py) ---------------------------------------

    def load_view(self, threads: list[dict] | None = None) -> L.Load:
        """What the accounts can take and how much explorer work is pinned to each (:mod:`.load`), read at
        most every few seconds (planning runs after every applied result); the scheduler's ``idle`` query
        is asked too when its socket exists, and left out when it does not answer (it is optional)."""
        cached = getattr(self, "_load_seen", None)
        if cached is not None and self.clock.mono() < cached[0]:
            return cached[1]
        cap = self.capacity()
        names = self.env().configured_accounts()
        if threads is None:
            threads = self.kept("threads/").values()
        pinned = (L.pinned_counts(CAP.pending(self.client, M.MODULE, payloads=False), threads, names)
                  if cap.known else {})
        view = L.Load(cap, pinned, L.starved(self.scheduler_idle(), names))
        if cached is None or set(cached[1].idle) != set(view.idle):   # said once per change, not every pass
            if view.idle:
                self.log.info("idle while the waiting work is pinned elsewhere (scheduler): %s; "
                              "one more thread slot each", ", ".join(view.idle))
        self._load_seen = (self.clock.mono() + self.recheck_interval(), view)
        return view

    def recheck_interval(self) -> float:
        """Real seconds a read of the accounts' load and of the waiting threads is reused while planning."""
        return self.world_interval(WAITING_RECHECK_WORLD, RECHECK_REAL_MIN,
                                   min(WAITING_RECHECK, self.settings.repair_interval))

    def follow_interval(self) -> float:
        """Real seconds between capacity-following passes (:meth:`follow_capacity`): a quarter of
        ``member_patience`` in world time, at least ``FOLLOW_REAL_MIN``, at most ``repair_interval``."""
        return self.world_interval(self.settings.member_patience / 4, FOLLOW_REAL_MIN,
                                   max(FOLLOW_REAL_MIN, self.settings.repair_interval))

    def scheduler_idle(self) -> list:
        """The scheduler's ``idle`` rows (services/scheduler/idle.py), or [] when it cannot say (an error
        answer or silence is counted and logged: :meth:`shared.service.Service.tolerate`)."""
        endpoint = getattr(self.config, "scheduler_endpoint", "") or ""
        if not endpoint or (endpoint.startswith("ipc://") and not os.path.exists(endpoint[len("ipc://"):])):
            return []
        try:
            answer = scheduler_client.query(endpoint, "idle", timeout=0.5, name="module-explorer",
                                            keys=self.keys)
        except FanoError as exc:   # silence (SchedulerUnavailable) included: it is stateless and may be restarting
            self.tolerate("scheduler idle query", exc)
            return []
        if not isinstance(answer, dict) or answer.get("synced") is False:
            return []
        return answer.get("accounts") or []

    def thread_room(self, threads: list[dict]) -> int:
        """How many new threads may start now (:mod:`.panels`, thread slots)."""
        s = self.settings
        open_ = [t for t in threads if t.get("status") in M.OPEN_THREAD]
        load = self.load_view(threads)
        accounts = self.env().configured_accounts()
        active = L.active_cap(load, s, accounts)
        if len(open_) < active:
            return active - len(open_)
        if len(open_) >= active + s.max_waiting_threads:
            return 0
        cached = getattr(self, "_waiting_seen", None)
        if cached is None or self.clock.mono() >= cached[0]:
            # planning runs after every applied result: read the broker for this at most every few seconds
            # (a thread that stopped waiting meanwhile can only let one more thread start, within the bound)
            cap = self.capacity()
            explorers = list(s.explore_accounts) or accounts
            room_now = bool(cap.with_room(explorers, "standard"))
            busy = {a for a, n in load.pinned.items() if n > s.busy_backlog} if s.threads_per_account else set()
            waiting_ids = (PN.waiting_threads(open_, cap, CAP.pending(self.client, M.MODULE, payloads=False), busy)
                           if room_now else set())
            cached = self._waiting_seen = (self.clock.mono() + self.recheck_interval(), room_now, waiting_ids)
        return PN.thread_room(s, open_, active, cached[1], cached[2])

    def follow_capacity(self, full: bool = False) -> None:
        """One pass over open panels (:mod:`.panels`). The frequent pass (every :meth:`follow_interval`)
        reads only the threads and reviews with a PENDING task that has waited ``member_patience``: nothing
        else can be blocked past it. The ``full`` pass (with the repair pass) reads them all, and so also
        cancels the tasks of seats moved before a crash."""
        cap = self.capacity()
        if not cap.known:
            return
        pending = CAP.pending(self.client, M.MODULE, payloads=False)
        # one read per pass: a seat waiting behind a backlogged account's queue moves too, as long as some
        # account with room keeps up (when every account is behind, waiting in line is all there is)
        env = self.env()
        busy = env.backlogged()
        busy = busy if any(cap.room(a) and a not in busy for a in env.configured_accounts()) else set()
        # a task looked at under the same capacity (who has room, who is backlogged) has nothing new to
        # offer: deep review rounds waiting a day for deep budgets would otherwise be read every pass
        signature = (frozenset(cap.blocked), frozenset(busy))
        seen = getattr(self, "_examined", {})
        if full:
            self._patient = None
        else:
            now, patience = self.now(), self.settings.member_patience
            self._patient = [t for t in pending.values()
                             if CAP.waited(t, now) >= patience and seen.get(t["id"]) != signature]
        self._examined = {t["id"]: signature for t in pending.values()
                          if CAP.waited(t, self.now()) >= self.settings.member_patience}
        p = PN.Pass(cap, pending, frozenset(busy), self._patient)
        for step in (PN.skip_extractors, PN.replace_reviewers, PN.retarget_first_turns):
            self.run_moves(step(self.env(), p), pending)

    def run_moves(self, moves: Iterable[PN.Move], pending: dict) -> None:
        """Commit each move (paced), then cancel the tasks it abandons; a step reads on after each."""
        for move in moves:
            if move.ops is None:
                self._cancel(move.cancel, pending, move.why)
            elif self.txn_or_skip(move.ops, move.what):
                self.log.info("%s", move.done)
                self._cancel(move.cancel, pending, move.why)

    def _cancel(self, task_ids, pending: dict, why: str) -> None:
        live = {t["id"] for t in pending.values()}
        for tid in task_ids:
            if tid in live:
                try:
                    self.client.cancel(tid, reason=why[:200])
                except BrokerUnavailable:
                    raise
                except FanoError as exc:   # it started or settled meanwhile: its answer will be stale
                    self.log.info("task %s not cancelled: %s", tid, exc.message)
