"""Following capacity: thread slots, and panel members blocked past patience. A mixin of :class:`ExplorerService`.

What the accounts can take is read from the broker on each pass (:mod:`services.modules.capacity`);
what the module decides is written into its own records in one transaction with the tasks it submits,
so a restarted module re-derives everything from the broker:

* **Thread slots** (:meth:`waiting_threads`): an open thread whose every PENDING task can only run on
  accounts without room for it (an explore turn's conversation bound to an account out of quota, say)
  is *waiting*, and so is one whose tasks can only run on *backlogged* accounts (more than
  ``busy_backlog`` explorer tasks wait that only they can run: a thread behind the slowest account's
  queue must not keep the fast ones without work); the active-thread cap (:func:`.load.active_cap`:
  ``threads_per_account`` per account with room, at least ``max_active_threads``, at most
  ``max_threads``) counts the others, so new seeds get threads on the accounts with room;
  ``max_waiting_threads`` bounds how many waiting ones are held beside them.
* **Review seats** (:meth:`replace_reviewers`): a reviewer's task (any round, a round-3 speaker or voter)
  PENDING for ``member_patience`` world seconds while its account has no room for the mode the step
  needs goes to an account with room that no other seat counted in the step uses (a seat left out
  earlier frees its account; a seat on an account that is *backlogged* while another account with room
  is not counts as blocked too, but is only moved, never left out; :func:`.review.replace_member`: the seat keeps
  its name, its earlier answers and its place; its account and task key change, recorded in the seat's
  ``replaced`` and the review's ``replacements``); without such an account the seat is left out of the
  step if two reviewers stay, else the step waits.
* **Extraction members** (:meth:`skip_extractors`): an extractor blocked (or backlogged) the same way is settled as
  ``"skipped"`` (noted in ``extraction_note``) while another member is done or still in play; the panel
  consolidates what the others proposed.

The abandoned task is then cancelled (and again on a later pass if the module died first: its id is in
the record). Should it have run anyway, its answer no longer matches what the entity waits for (a new key)
and is acked as stale: applied once or ignored, never counted twice.
"""
from __future__ import annotations

import copy
import os

from services.modules import capacity as CAP
from services.modules.explorer import load as L
from services.modules.explorer import model as M
from services.modules.explorer import review as R
from services.modules.explorer import threads as T
from services.modules.explorer.host import Host
from services.modules.explorer.recovery import OPEN_REVIEW
from services.modules.explorer.state import Ops, effective_status
from shared import scheduler_client
from shared.errors import BrokerUnavailable, FanoError

WAITING_RECHECK = 3.0   # real seconds between reads of the broker for waiting threads while planning
                        # (or repair_interval, if shorter) ...
WAITING_RECHECK_WORLD = 60.0   # ... or this many world seconds, if sooner (a scaled clock), but
RECHECK_REAL_MIN = 1.0         # never more often than this (real seconds)
FOLLOW_REAL_MIN = 1.0   # real seconds: the floor of the capacity-following pass's cadence (member_patience / 4)
STEP_DEEP = {"round1": None, "round2": "review2", "round3_minority": "review3", "round3_majority": "review3",
             "round3_vote": "review3"}


class Panels(Host):
    # --- thread slots -------------------------------------------------------------------------------------

    def waiting_threads(self, threads: list[dict], cap: CAP.Capacity, pending: dict, busy=frozenset()) -> set[str]:
        """Ids of the open threads that wait only on accounts without room for their tasks, or backlogged
        (``busy``: more than ``busy_backlog`` explorer tasks wait that only they can run, :mod:`.load`)."""
        by_thread: dict[str, list] = {}
        for task in pending.values():
            tid = M.task_thread_id(task)
            if tid is not None:
                by_thread.setdefault(tid, []).append(task)
        names = list(cap.modes)
        by_id = {t["id"]: t for t in threads}
        out = set()
        for thread in threads:
            tasks = by_thread.get(thread["id"])
            if thread.get("status") not in M.OPEN_THREAD or not tasks:
                continue   # running or between steps: it moves
            # a bound turn's account from the thread's record (it follows a hand-off): no read per task
            if not any(cap.serves(t, [a for a in L.pinned_accounts(t, by_id, names) if a not in busy])
                       for t in tasks):
                out.add(thread["id"])
        return out

    def load_view(self, threads: list[dict] | None = None) -> L.Load:
        """What the accounts can take and how much explorer work is pinned to each (:mod:`.load`), read at
        most every few seconds (planning runs after every applied result); the scheduler's ``idle`` query
        is asked too when its socket exists, and left out when it does not answer (it is optional)."""
        cached = getattr(self, "_load_seen", None)
        if cached is not None and self.clock.mono() < cached[0]:
            return cached[1]
        cap = self.capacity()
        names = self.configured_accounts()
        if threads is None:
            threads = self.values("threads/")
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
        """The scheduler's ``idle`` rows (services/scheduler/idle.py), or [] when it cannot say."""
        endpoint = getattr(self.config, "scheduler_endpoint", "") or ""
        if not endpoint or (endpoint.startswith("ipc://") and not os.path.exists(endpoint[len("ipc://"):])):
            return []
        try:
            answer = scheduler_client.query(endpoint, "idle", timeout=0.5, name="module-explorer",
                                            keys=self.keys)
        except FanoError:   # silence (SchedulerUnavailable) included: it is stateless and may be restarting
            return []
        if not isinstance(answer, dict) or answer.get("synced") is False:
            return []
        return answer.get("accounts") or []

    def thread_room(self, threads: list[dict]) -> int:
        """How many new threads may start now (see the module docstring)."""
        s = self.settings
        open_ = [t for t in threads if t.get("status") in M.OPEN_THREAD]
        load = self.load_view(threads)
        active = L.active_cap(load, s, self.configured_accounts())
        if len(open_) < active:
            return active - len(open_)
        if len(open_) >= active + s.max_waiting_threads:
            return 0
        cached = getattr(self, "_waiting_seen", None)
        if cached is None or self.clock.mono() >= cached[0]:
            # planning runs after every applied result: read the broker for this at most every few seconds
            # (a thread that stopped waiting meanwhile can only let one more thread start, within the bound)
            cap = self.capacity()
            explorers = list(s.explore_accounts) or self.configured_accounts()
            room_now = bool(cap.with_room(explorers, "standard"))
            busy = {a for a, n in load.pinned.items() if n > s.busy_backlog} if s.threads_per_account else set()
            waiting_ids = (self.waiting_threads(open_, cap, CAP.pending(self.client, M.MODULE, payloads=False), busy)
                           if room_now else set())
            every = self.recheck_interval()
            cached = self._waiting_seen = (self.clock.mono() + every, room_now, waiting_ids)
        if not cached[1]:
            return 0   # no explorer account has room: a new thread would only wait too
        waiting = len(cached[2] & {t["id"] for t in open_})
        return max(0, min(active - (len(open_) - waiting), active + s.max_waiting_threads - len(open_)))

    def extraction_panel(self) -> list[str]:
        """A new extraction panel: :meth:`available_accounts` without the *backlogged* ones (more than
        ``busy_backlog`` explorer tasks wait that only they can run, :mod:`.load`), as long as one stays.
        Every extraction waits for its slowest member (or ``extract_patience``), and its thread holds a
        thread slot meanwhile: seating the slowest account on every panel kept the fast accounts idle
        behind its queue in the demo."""
        panel = self.available_accounts()
        busy = self.backlogged()
        return [a for a in panel if a not in busy] or panel

    def backlogged(self) -> set[str]:
        """Accounts with more than ``busy_backlog`` explorer tasks waiting that only they can run
        (:mod:`.load`; none while ``threads_per_account`` is 0, the load-following switch)."""
        if not self.settings.threads_per_account:
            return set()
        return {a for a, n in self.load_view().pinned.items() if n > self.settings.busy_backlog}

    # --- panel members blocked past patience ------------------------------------------------------------

    def follow_capacity(self, full: bool = False) -> None:
        """One pass over open panels. The frequent pass (every :meth:`follow_interval`) reads only the
        threads and reviews with a PENDING task that has waited ``member_patience``: nothing else can be
        blocked past it. The ``full`` pass (with the repair pass) reads them all, and so also cancels the
        tasks of seats moved before a crash."""
        cap = self.capacity()
        if not cap.known:
            return
        pending = CAP.pending(self.client, M.MODULE)
        # one read per pass: a seat waiting behind a backlogged account's queue moves too, as long as some
        # account with room keeps up (when every account is behind, waiting in line is all there is)
        busy = self.backlogged()
        self._busy = busy if any(cap.room(a) and a not in busy for a in self.configured_accounts()) else set()
        # a task looked at under the same capacity (who has room, who is backlogged) has nothing new to
        # offer: deep review rounds waiting a day for deep budgets would otherwise be read every pass
        signature = (frozenset(cap.blocked), frozenset(self._busy))
        seen = getattr(self, "_examined", {})
        if full:
            self._patient = None
        else:
            now, patience = self.now(), self.settings.member_patience
            self._patient = [t for t in pending.values()
                             if CAP.waited(t, now) >= patience and seen.get(t["id"]) != signature]
        self._examined = {t["id"]: signature for t in pending.values()
                          if CAP.waited(t, self.now()) >= self.settings.member_patience}
        self.skip_extractors(cap, pending)
        self.replace_reviewers(cap, pending)
        self.retarget_first_turns(cap, pending)

    def _followed(self, prefix: str, field: str, key):
        """(key, version, record) of the records this pass looks at: every one under ``prefix`` on a full
        pass, else those a waited-out PENDING task names in its payload's ``field``."""
        patient = getattr(self, "_patient", None)
        if patient is None:
            yield from self.store.scan(prefix)
            return
        for ident in sorted({i for t in patient if isinstance(i := (t.get("payload") or {}).get(field), str)}):
            version, record = self.store.get(key(ident))
            yield key(ident), version, record

    def retarget_first_turns(self, cap: CAP.Capacity, pending: dict) -> None:
        """A new thread's first turn is restricted to one account (``explore_on``, :mod:`.load`); should
        that account lose its room (its window used up, say, for hours) before the turn runs, the turn
        moves once it has waited ``member_patience``: to another account with a free share, or to any
        account (``explore_on`` cleared), under a new key (``first_turn_moves``); the old task is cancelled."""
        for _key, version, thread in self._followed("threads/", "thread_id", M.thread_key):
            if not isinstance(thread, dict) or effective_status(thread) != "active" or thread.get("exchanges"):
                continue
            on = thread.get("explore_on") or []
            task = pending.get(M.thread_turn_key(thread, 1))
            if len(on) != 1 or not self._blocked(task, cap, on[0]):
                continue
            threads = [t for t in self.values("threads/") if t.get("id") != thread["id"]]
            targets = [a for a in L.explore_targets(self.load_view(threads), threads, self.settings,
                                                    self.configured_accounts()) if a != on[0]]
            new = dict(thread, explore_on=targets, first_turn_moves=int(thread.get("first_turn_moves") or 0) + 1,
                       updated_at=self.now())
            ops = Ops()
            ops.submit(T.turn_task(new, 1, self.values("seeds/"), [], self.configured_accounts(), self.settings))
            self.put_thread(thread, new, version, ops)
            why = self._why_blocked(cap, on[0], "standard")
            if self.txn_or_skip(ops.ops, f"move the first turn of {thread['id']}"):
                self.log.info("thread %s: first turn moved off %s (%s)", thread["id"], on[0], why)
                self._cancel([task["id"]], pending, why)

    def _blocked(self, task: dict | None, cap: CAP.Capacity, account: str) -> bool:
        """``task`` has waited ``member_patience`` for ``account``, which has no room for it or is
        *backlogged* (:meth:`backlogged`: the task would wait behind that account's queue while others idle)."""
        return (task is not None and CAP.waited(task, self.now()) >= self.settings.member_patience
                and (not cap.serves(task, [account]) or account in self._backlogged_now()))

    def _backlogged_now(self) -> set[str]:
        return getattr(self, "_busy", set())

    def _why_blocked(self, cap: CAP.Capacity, account: str, mode: str) -> str:
        if account in self._backlogged_now() and cap.serves({"requires": {"mode": mode}}, [account]):
            return (f"{account} backlogged past member_patience: more than {self.settings.busy_backlog} "
                    "explorer tasks wait that only it can run")
        return f"{account} blocked past member_patience: {cap.reason(account, mode)}"

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

    def skip_extractors(self, cap: CAP.Capacity, pending: dict) -> None:
        for _key, version, thread in self._followed("threads/", "thread_id", M.thread_key):
            if not isinstance(thread, dict):
                continue
            self._cancel((thread.get("panel_skipped") or {}).values(), pending, "extraction member skipped")
            if effective_status(thread) != "synthesised" or thread.get("panel_closed"):
                continue
            waiting = [a for a in thread["panel"] if a not in thread["panel_settled"]]
            for acct in waiting:
                task = pending.get(M.thread_task_key(thread["id"], f"extract:{acct}",
                                                     thread.get("panel_retries", {}).get(acct, 0)))
                others = [a for a in waiting if a != acct] + [a for a, v in thread["panel_settled"].items()
                                                              if v == "done"]
                if not self._blocked(task, cap, acct) or not others:
                    continue
                why = self._why_blocked(cap, acct, "standard")
                now, ops = self.now(), Ops()
                new = copy.deepcopy(thread)
                new["panel_settled"][acct] = "skipped"
                new.setdefault("panel_skipped", {})[acct] = task["id"]
                new["extraction_note"] = ((thread.get("extraction_note") + "; ") if thread.get("extraction_note")
                                          else "") + why
                new["updated_at"] = now
                if all(a in new["panel_settled"] for a in new["panel"]):
                    new = self.close_panel(new, ops, now)
                self.put_thread(thread, new, version, ops)
                if self.txn_or_skip(ops.ops, f"skip extractor {acct} of {thread['id']}"):
                    self.log.info("thread %s: extraction by %s skipped (%s)", thread["id"], acct, why)
                    self._cancel([task["id"]], pending, why)
                break   # the thread changed: the next pass looks at its other members

    def step_candidates(self, cap: CAP.Capacity, step: str, ctx: R.Ctx) -> list[str]:
        """Accounts with room for a review step's mode (deep where the step asks for it and the account has it)."""
        deep_step = STEP_DEEP.get(step)
        out = []
        for acct in self.configured_accounts():
            requires = R._deep(ctx, acct, deep_step) if deep_step else {}
            if cap.serves({"requires": requires}, [acct]):
                out.append(acct)
        return out

    def replace_reviewers(self, cap: CAP.Capacity, pending: dict) -> None:
        ctx = self.review_ctx()
        for _key, vr, review in self._followed("reviews/", "insight_id", M.review_key):
            if not isinstance(review, dict):
                continue
            self._cancel([r["task_id"] for r in review.get("replacements") or [] if r.get("task_id")], pending,
                         "review seat replaced")
            if review.get("stage") not in OPEN_REVIEW:
                continue
            vi, insight = self.store.get(M.insight_key(review["insight_id"]))
            if not insight or insight.get("status") != "pending":
                continue
            for spec in R.open_tasks(review, insight, ctx):
                task = pending.get(spec["key"])
                backends = (spec.get("requires") or {}).get("backends") or []
                if len(backends) != 1 or task is None or not self._blocked(task, cap, backends[0]):
                    continue
                step, _ = R.seat_of(review, task)
                why = self._why_blocked(cap, backends[0], CAP.task_modes(task)[0])
                candidates = [a for a in self.step_candidates(cap, step, ctx) if a not in self._backlogged_now()]
                new_review, new_insight = copy.deepcopy(review), copy.deepcopy(insight)
                tasks = R.replace_member(new_review, new_insight, task, candidates, why, ctx)
                if tasks is None or (new_review["replacements"][-1]["to"] is None and cap.serves(task, backends)):
                    continue   # a merely backlogged seat moves but is never left out (that is for no room)
                ops = self.review_ops(review["insight_id"], new_review, vr, new_insight, insight, vi, tasks)
                if self.txn_or_skip(ops, f"replace a reviewer of {review['insight_id']}"):
                    last = new_review["replacements"][-1]
                    self.log.info("insight %s: %s seat %s: %s -> %s (%s)", review["insight_id"], step,
                                  last["reviewer"], last["from"], last["to"] or "left out", why)
                    self._cancel([task["id"]], pending, why)
                break   # the review changed: the next pass looks at its other seats
