"""What the explorer's steps read (:class:`Env`), and the thread and insight bookkeeping they share.

Every step (:mod:`.flow` applies a settled task, :mod:`.recovery` an unusable one and re-derives open
steps, :mod:`.following` moves panel seats blocked past ``member_patience``) is a function of an
:class:`Env` and its input that returns ops (:class:`Ops`, built with :mod:`shared.txn`); it reads through
the Env and writes nothing. The service (:mod:`.service`) builds one Env per step and commits the ops
(with the ack, for a settled task: :class:`services.modules.base.ModuleService`).

Paused and archived threads: results that arrive for them are still recorded (an answer is never thrown
away), but no follow-up is proposed; the step the thread would be in is kept in ``paused_from`` and
``fanoctl threads resume`` restores it, after which the repair pass proposes the next task.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.modules import capacity as CAP
from services.modules.explorer import extraction as X
from services.modules.explorer import load as L
from services.modules.explorer import model as M
from services.modules.explorer import review as R
from services.modules.explorer import threads as T
from services.modules.store import KeptPrefix, Store
from shared import txn

HELD = ("paused", "archived")


def effective_status(thread: dict) -> str:
    """The step a thread is in, looking through a pause or an archive."""
    if thread["status"] in HELD:
        return thread.get("paused_from") or "active"
    return thread["status"]


class Ops:
    """The ops of one transaction: puts with version checks, submissions of explorer tasks."""

    def __init__(self) -> None:
        self.ops: list[dict] = []

    def put(self, key: str, value: Any, version: int, working: bool = False) -> None:
        """``working``: working data, deleted by the broker after ``broker.working_retention``."""
        self.ops.append(txn.put(key, value, if_version=version, working=working))

    def submit(self, *specs: dict) -> None:
        for spec in specs:
            self.ops.append(txn.submit(dict(spec, module=M.MODULE)))


READ_ONCE = ("insights/", "seeds/")   # prefixes an Env reads at most once (see Env.values)


@dataclass
class Env:
    """The reads one step needs. ``capacity`` and ``load`` are the service's: the accounts' headroom read
    from the broker (each call reads it), and the cached :class:`.load.Load` view (``load(threads)``)."""

    store: Store                      # the explorer's namespace
    documenter: Store                 # the documenter's, read only (its sections, for the dedup corpus)
    now: float
    modes: dict[str, tuple]           # every configured account (config order) -> the modes it offers
    settings: M.ExplorerSettings
    log: logging.Logger
    capacity: Callable[[], CAP.Capacity]
    load: Callable[..., L.Load]
    history: Callable[[int], list] = field(default=lambda _tid: [])   # a task's history (served)
    # prefixes the service keeps between steps (services/modules/store.py, KeptPrefix; service.KEPT): the
    # insights, as extraction.insight_view cuts them, and the threads
    kept: dict[str, KeptPrefix] = field(default_factory=dict)
    _once: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def values(self, prefix: str) -> list:
        """The records under ``prefix``. The whole-history prefixes (:data:`READ_ONCE`: every insight, every
        seed) are read at most once per Env: one step (or one repair pass over every open thread) asks for
        them from several places, and no step writes them before it returns its ops; a prefix the service
        keeps is brought up to date rather than read whole. The list is shared: read it, never change it
        in place."""
        kept = self.kept.get(prefix)
        if prefix not in READ_ONCE:
            return kept.values() if kept is not None else self.store.records(prefix)
        if prefix not in self._once:
            self._once[prefix] = kept.values() if kept is not None else self.store.records(prefix)
        return self._once[prefix]

    def items(self, prefix: str) -> list[tuple[str, int, object]]:
        """``(key, version, record)`` under ``prefix``: the kept ones brought up to date, else a scan."""
        kept = self.kept.get(prefix)
        return kept.items() if kept is not None else list(self.store.scan(prefix))

    def pending_insight_ids(self) -> list[str]:
        """The insights still pending (in dedup or review): only their reviews can be open."""
        return [i["id"] for i in self.values("insights/") if i.get("status") == "pending"]

    def exchanges(self, tid: str) -> list[dict]:
        return self.values(f"exchanges/{tid}/")

    def configured_accounts(self) -> list[str]:
        names = list(self.modes)
        wanted = self.settings.panel_accounts
        return [n for n in names if n in wanted] if wanted else names

    def documented(self) -> list[tuple[str, object]]:
        """The documenter's sections (``sections/<id>`` with a ``text``), read defensively."""
        return [(key, value) for key, _, value in self.documenter.scan("sections/")]

    def review_ctx(self) -> R.Ctx:
        return R.Ctx(self.settings, T.axioms_text(self.values("seeds/")), dict(self.modes), self.now)

    def served(self, task: dict) -> dict:
        """Account and mode that answered. The broker clears the lease when a task is DONE and the
        worker's result does not name them, so: the only allowed account, else the lease recorded in the
        task's history; the mode when the requirements leave no choice, else None (unknown)."""
        result = task.get("result")
        res: dict = result if isinstance(result, dict) else {}
        served = task.get("served")
        given = {**(served if isinstance(served, dict) else {}), **(res.get("served") or {}),
                 **{k: v for k, v in (res.get("meta") or {}).items() if k in ("account", "mode")}}
        req = task.get("requires") or {}
        account = given.get("account") or (req["backends"][0] if len(req.get("backends") or []) == 1 else None)
        if account is None:
            for h in reversed(self.history(task["id"])):
                why = str(h.get("why", ""))
                if h.get("to") == "RUNNING" and why.startswith("leased to backend-"):
                    account = why[len("leased to backend-"):]
                    break
        mode = given.get("mode")
        if mode is None and (req.get("mode", "standard") == "standard" or not req.get("deep_fallback")):
            mode = req.get("mode", "standard")
        return {"account": account, "mode": mode}

    # --- panels -------------------------------------------------------------------------------------------

    def available_accounts(self, cap: CAP.Capacity | None = None, mode: str = "standard") -> list[str]:
        """Configured panel accounts for a new extraction panel: those with room for ``mode`` now or within
        ``member_patience`` (not paused, not cooling down past it, quota left for this module); when none
        has, all that are not paused (the panel waits, and members blocked past patience are skipped)."""
        cap = cap or self.capacity()
        names = self.configured_accounts()
        ready = cap.usable(names, mode, self.settings.member_patience)
        return ready or [n for n in names if cap.until(n, mode) < CAP.INF] or names

    def backlogged(self) -> set[str]:
        """Accounts with more than ``busy_backlog`` explorer tasks waiting that only they can run
        (:mod:`.load`; none while ``threads_per_account`` is 0, the load-following switch)."""
        if not self.settings.threads_per_account:
            return set()
        return {a for a, n in self.load().pinned.items() if n > self.settings.busy_backlog}

    def extraction_panel(self) -> list[str]:
        """A new extraction panel: :meth:`available_accounts` without the *backlogged* ones (more than
        ``busy_backlog`` explorer tasks wait that only they can run, :mod:`.load`), as long as one stays.
        Every extraction waits for its slowest member (or ``extract_patience``), and its thread holds a
        thread slot meanwhile: seating the slowest account on every panel kept the fast accounts idle
        behind its queue in the demo."""
        panel = self.available_accounts()
        busy = self.backlogged()
        return [a for a in panel if a not in busy] or panel

    def review_panel(self, cap: CAP.Capacity | None = None) -> list[dict]:
        """A new review panel (round 1 is standard): ``reviewers`` seats on distinct accounts, drawn from the
        accounts with room (:meth:`available_accounts`). With every account ready this is
        :func:`review.make_panel` as ever (an account serves twice only when there are fewer accounts than
        seats); when some are blocked past patience and at least two distinct ones are ready, the panel is
        those (fewer seats, distinct models) rather than a seat that waits or a model that answers twice.
        So are the ready accounts that are not backlogged (:meth:`backlogged`), when at least two are: a
        panel waits for its slowest seat, and a backlogged account's queue only grows."""
        cap = cap or self.capacity()
        names = self.configured_accounts()
        ready = cap.usable(names, "standard", self.settings.member_patience)
        busy = self.backlogged() if cap.known else set()
        quick = [a for a in ready if a not in busy]
        if len(quick) < len(ready) and len(quick) >= 2:
            return R.make_panel(quick, min(self.settings.reviewers, len(quick)))
        if len(ready) == len(names) or not cap.known:
            return R.make_panel(names, self.settings.reviewers)
        if len(ready) >= 2:
            return R.make_panel(ready, min(self.settings.reviewers, len(ready)))
        waiting = [n for n in names if n not in ready and cap.until(n, "standard") < CAP.INF]
        return R.make_panel(ready + waiting or names, self.settings.reviewers)


# --- threads ----------------------------------------------------------------------------------------------

def thread_of(env: Env, task: dict) -> tuple[int, dict | None]:
    tid = (task.get("payload") or {}).get("thread_id")
    return env.store.get(M.thread_key(tid)) if isinstance(tid, str) else (0, None)


def expected_thread_task(thread: dict | None, task: dict) -> bool:
    """Whether a thread waits for this task now (its key, with the current retry suffix)."""
    if thread is None:
        return False
    tid, kind, p, status = thread["id"], task["kind"], task.get("payload") or {}, effective_status(thread)
    if kind in (M.EXPLORE, M.CRITIQUE):
        k = thread["exchanges"] + 1
        return status == "active" and p.get("turn") == k and task["key"] == M.thread_turn_key(thread, k)
    if kind == M.SYNTHESIS:
        return status == "ready" and task["key"] == M.thread_task_key(tid, "synthesis", thread.get("attempt", 0))
    if kind == M.EXTRACT:
        acct = p.get("extractor")
        return (status == "synthesised" and not thread.get("panel_closed") and acct in thread["panel"]
                and acct not in thread["panel_settled"] and task["key"] == M.thread_task_key(
                    tid, f"extract:{acct}", thread.get("panel_retries", {}).get(acct, 0)))
    if kind == M.CONSOLIDATE:
        return (status == "synthesised" and bool(thread.get("panel_closed"))
                and task["key"] == M.thread_task_key(tid, "consolidate", thread.get("attempt", 0)))
    return False


def put_thread(old: dict, new: dict, version: int, ops: Ops) -> None:
    """Write the thread; a held (paused/archived) thread keeps its status, remembers the step it moved
    to in ``paused_from`` and proposes nothing."""
    if old["status"] in HELD:
        moved = new["status"] if new["status"] not in HELD else new.get("paused_from")
        new = dict(new, status=old["status"], paused_from=moved)
        ops.ops = [o for o in ops.ops if o["op"] != "submit"]
    ops.put(M.thread_key(new["id"]), new, version)


def panel_proposals(env: Env, thread: dict) -> list[dict]:
    return [p for p in env.values(f"proposals/{thread['id']}/")
            if thread["panel_settled"].get(p["account"]) == "done"]


def close_panel(env: Env, thread: dict, ops: Ops, now: float) -> dict:
    """Consolidate with the proposals in (the panel is complete, or out of patience)."""
    thread = dict(thread, panel_closed=True, attempt=0, updated_at=now)
    ops.submit(X.consolidate_task(thread, panel_proposals(env, thread), env.values("insights/"), env.settings))
    return thread


def thread_tasks(env: Env, thread: dict) -> list[dict]:
    """The tasks an open thread waits for now, from stored state (for retries and the repair pass)."""
    tid, status, s = thread["id"], effective_status(thread), env.settings
    if status == "active":
        return [T.turn_task(thread, thread["exchanges"] + 1, env.values("seeds/"), env.exchanges(tid),
                            env.configured_accounts(), s)]
    if status == "ready":
        return [X.synthesis_task(thread, env.values("seeds/"), env.exchanges(tid), s)]
    if status == "synthesised" and thread.get("panel_closed"):
        return [X.consolidate_task(thread, panel_proposals(env, thread), env.values("insights/"), s)]
    if status == "synthesised":
        synth = env.store.get(M.synthesis_key(tid))[1] or {}
        ex, ins = env.exchanges(tid), env.values("insights/")
        return [X.extract_task(thread, a, synth, ex, ins, s, thread.get("panel_retries", {}).get(a, 0))
                for a in thread["panel"] if a not in thread["panel_settled"]]
    return []


# --- insights ---------------------------------------------------------------------------------------------

def expected_dedup(insight: dict | None, task: dict) -> bool:
    return (insight is not None and insight["status"] == "pending" and insight["dedup"]["verdict"] == "candidates"
            and insight["dedup"].get("llm") is None
            and task["key"] == M.insight_task_key(insight["id"], "dedup", insight["dedup"].get("retries", 0)))


def start_review(env: Env, insight: dict, ops: Ops, panel: list[dict] | None = None) -> None:
    if panel is None:
        panel = env.review_panel()
    review = R.new_review(insight, panel, env.now)
    ops.submit(*R.open_tasks(review, insight, env.review_ctx()))
    ops.put(M.review_key(insight["id"]), review, 0)


def review_ops(iid: str, review: dict, vr: int, insight: dict, old_insight: dict, vi: int,
               tasks: list[dict]) -> list[dict]:
    """Submit ``tasks``, write the review, and the insight if it changed (else check it did not)."""
    ops = Ops()
    ops.submit(*tasks)
    ops.put(M.review_key(iid), review, vr)
    if insight != old_insight:
        ops.put(M.insight_key(iid), insight, vi)
    else:   # unchanged, but the outcome was computed from it: it must not have changed meanwhile
        ops.ops.append(txn.check(M.insight_key(iid), vi))
    return ops.ops
