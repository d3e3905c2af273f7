"""The researcher module (``python -m services researcher``, supervisord program ``module-researcher``).

Written as the documenter is: a table of pure steps over an :class:`~.context.Env` (HANDLERS for
settled tasks, UNUSABLE for answers that cannot be used), one module per job, and this class for the
process around them (the fetch pool, the planning pass, running the steps' ops). Flow
(docs/research.md § Researcher; keys and entities in :mod:`.model`):

1. **Observe** (:mod:`.questions`, every ``observe_interval``): insights and section revisions not yet
   observed become one ``researcher.generate_questions`` batch at a time; applying it stores the new
   questions, marks the items observed, and adds the URLs the model proposed as sources.
2. **Fetch** (:mod:`.sources`; not an LLM call): sources in the fetch queue are fetched by a background
   thread (:mod:`.fetch`, whose per-domain rate limit survives restarts: it is kept in the HTTP cache
   directory); each outcome is applied in one transaction with the submission of its evaluations.
3. **Trust** (:mod:`.evaluate`, :mod:`.trust`): the evaluations and the allow-list give the trust
   score; below ``trust_min`` the source is ``ignored``; otherwise ``researcher.extract_findings`` is
   submitted in the same transaction.
4. **Findings** (:mod:`.findings`) are stored with deterministic ids, deduplicated, folded into the
   cross-reference index (:mod:`.crossref`) and, when ``auto_promote`` is on, promoted to seeds.

Every effect is applied with the ack of its task (:class:`~services.modules.base.ModuleService`), so a
replay is a no-op; an unusable answer is stored under ``errors/<task id>`` and marks its entity.

Every transaction that creates tasks is counted against the module's hourly budget
(``max_tasks_per_hour``, :mod:`services.modules.pace`): once it is used, no question batch is proposed
and no fetch started until the hour ends (a fetched source's evaluations and extraction go on).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.modules import pace
from services.modules.base import Effect, ModuleService
from services.modules.researcher import context as C
from services.modules.researcher import evaluate, findings, questions, sources
from services.modules.researcher import model as M
from services.modules.researcher.context import EVALUATE_SOURCE, EXTRACT_FINDINGS, GENERATE_QUESTIONS
from services.modules.researcher.fetch import Fetcher, FetchError, FetchPool, Page
from services.modules.researcher.settings import load_settings
from services.modules.store import KeptPrefix, Store
from shared import txn
from shared.errors import STORAGE_REFUSALS, BrokerUnavailable, FanoError

__all__ = ["EVALUATE_SOURCE", "EXTRACT_FINDINGS", "GENERATE_QUESTIONS", "HANDLERS", "UNUSABLE", "ResearcherService"]

Handler = Callable[[C.Env, C.Task], list[txn.Op]]
HANDLERS: dict[str, Handler] = {GENERATE_QUESTIONS: questions.handle_questions,
                                EVALUATE_SOURCE: evaluate.handle_evaluation,
                                EXTRACT_FINDINGS: findings.handle_findings}
UNUSABLE: dict[str, Callable[[C.Env, C.Task, str], list[txn.Op]]] = {
    GENERATE_QUESTIONS: questions.unusable_questions, EVALUATE_SOURCE: evaluate.unusable_evaluation,
    EXTRACT_FINDINGS: findings.unusable_findings}


class ResearcherService(ModuleService):
    module = M.NS

    def __init__(self, config, clock):
        super().__init__(config, clock)
        self.settings = load_settings(config)
        self.plan_interval = self.settings.plan_interval
        self.policy = C.policy_of(self.settings)
        self.pool: FetchPool | None = None
        self._next_observe = 0.0
        self._configured = False
        self._source_count = 0
        self._budget_logged = False   # "new work waits" is logged once per spell

    # --- process --------------------------------------------------------------------------------------

    def initialize(self) -> None:
        super().initialize()
        f = self.settings.fetch
        fetcher = Fetcher(self.config.data_dir / "researcher" / "cache", timeout=f.timeout, max_bytes=f.max_bytes,
                          min_interval=f.min_interval, cache_ttl=f.cache_ttl, cache_max_bytes=f.cache_max_bytes,
                          user_agent=f.user_agent, content_types=f.content_types)
        self.pool = FetchPool(fetcher)

    def loop(self) -> None:
        super().loop()
        try:
            self.collect_fetches()
        except BrokerUnavailable as exc:
            # the outcomes are lost, not the work: the sources are still queued and get fetched again
            self.log.warning("broker unavailable while applying fetches (%s)", exc)
        except FanoError as exc:
            if exc.code not in STORAGE_REFUSALS:
                raise
            self.storage_refused(exc)  # as above: lost outcomes are fetched again

    def shutdown(self) -> None:
        if self.pool is not None:
            self.pool.close()
        super().shutdown()

    def env(self) -> C.Env:
        """What a step reads: this module's namespace, the observed ones (read only), the world time."""
        others = {ns: Store(self.client, ns) for ns, _ in C.OBSERVED}
        kept = getattr(self, "_kept", None)
        if kept is None or any(k.store.client is not self.client for k in kept.values()):
            kept = self._kept = {(ns, prefix): KeptPrefix(others[ns], prefix, C.observed_view)
                                 for ns, prefix in C.OBSERVED}
        return C.Env(self.store, others, self.clock.world(), self.settings, self.policy, self._source_count,
                     kept)

    # --- plan -----------------------------------------------------------------------------------------

    def plan(self) -> None:
        if not self._configured:
            self.add_configured_sources()
            self._configured = True
        self.schedule_fetches()
        if self.clock.mono() >= self._next_observe:
            self._next_observe = self.clock.mono() + self.settings.observe_interval
            self._source_count = sum(1 for _ in self.store.scan("sources/"))
            self.observe()

    def add_configured_sources(self) -> None:
        for url in self.settings.sources:
            try:
                sid = M.source_id(url)
            except ValueError as exc:
                self.log.error("[modules.researcher] sources: %s", exc)
                continue
            if self.store.get(M.k_source(sid))[1] is None:
                self._txn_if_absent(M.add_source_ops(url, "config", self.clock.world())[1])

    def _txn_if_absent(self, ops: list) -> bool:
        return txn.conditional(self.client, self.module, ops)   # False: someone (the CLI) was first: fine

    def schedule_fetches(self) -> None:
        tidy, fetch = sources.queue_work(self.env(), self.pool.busy() if self.pool else set())
        for ops in tidy:
            self._txn_if_absent(ops)
        # a fetched page is evaluated (tasks): none starts while the hour's budget is used up
        if self.pool is not None and fetch and self.budget_room() >= self.settings.evaluations:
            for sid, url in fetch:
                self.pool.submit(sid, url)

    def observe(self) -> None:
        """Propose one ``generate_questions`` batch about the most recent items not yet observed."""
        ops = self.paced(questions.propose_batch(self.env()), new_work=True)
        if ops:
            self._txn_if_absent(ops)

    # --- the hourly budget (services/modules/pace.py) -------------------------------------------------

    def budget_room(self) -> int:
        """Tasks the module may still create this hour (logs once why new work waits when none)."""
        limit = self.settings.max_tasks_per_hour
        rec = pace.current(self.store.get(pace.HOUR_KEY)[1], self.clock.world())
        room = pace.room(rec, limit)
        if room < max(1, self.settings.evaluations) and not self._budget_logged:
            self.log.warning("new work waits: %s", pace.budget_note(rec, limit, "max_tasks_per_hour"))
        self._budget_logged = room < max(1, self.settings.evaluations)
        return room

    def paced(self, ops: list, new_work: bool = False) -> list:
        """``ops`` with the module's hourly task count updated in the same transaction (version-checked);
        for ``new_work``, [] when the hour has no room for its tasks (the next pass proposes it again)."""
        out, _ = pace.charge(self.store, ops, self.settings.max_tasks_per_hour, self.clock.world(), new_work)
        if out is None:
            self.budget_room()
            return []
        return out

    # --- fetch outcomes -------------------------------------------------------------------------------

    def collect_fetches(self) -> None:
        if self.pool is None:
            return
        for sid, _url, result in self.pool.results():
            self.apply_fetch(sid, result)

    def apply_fetch(self, sid: str, result: Page | FetchError) -> bool:
        """Record one fetch outcome in one transaction (version-checked; retried on a conflict)."""
        def compute():   # read again after a race: the source changed under us (a concurrent writer)
            ops, value = sources.fetch_outcome(self.env(), sid, result)
            return self.paced(ops), value
        try:
            if not txn.update(self.client, self.module, compute, what=f"source {sid}",
                              retries=self.max_conflict_retries).value:
                return False
        except txn.Conflict as exc:   # another writer kept changing the source: the next fetch pass tries again
            self.tolerate("recording a fetch outcome", exc)
            return False
        except FanoError as exc:
            self.log.error("source %s: cannot record the fetch: %s", sid, exc)
            return False
        if isinstance(result, FetchError):
            self.log.info("source %s: fetch failed (%s): %s", sid, result.reason, result.message)
        else:
            self.log.info("source %s: fetched (%s)", sid, result.cache)
        return True

    # --- results --------------------------------------------------------------------------------------

    def handle(self, task: dict[str, Any]) -> Effect:
        handler = HANDLERS.get(task["kind"])
        if handler is None:
            self.log.warning("task %s: unknown kind %s; acknowledged without effect", task["id"], task["kind"])
            return Effect([])
        return Effect(self.paced(handler(self.env(), task)))

    def on_unusable(self, task: dict[str, Any], error: str) -> list:
        handler = UNUSABLE.get(task["kind"])
        return self.paced(handler(self.env(), task, error) if handler else [])
