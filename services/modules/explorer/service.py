"""``module-explorer``: applies the explorer's settled tasks exactly once and proposes new work.

The flow as task kinds (keys in :mod:`.model`; every follow-up is submitted in the same transaction
that records a result and acks it, so no step can be lost between two writes):

* plan: a seed without an open thread -> ``threads/<t>`` + turn 1 (``explorer.explore``), one txn;
* ``explorer.explore`` / ``explorer.critique`` turn k -> ``exchanges/<t>/<k>``; then turn k+1, or
  (thread ready) ``explorer.synthesis``;
* ``explorer.synthesis`` -> ``syntheses/<t>``; one ``explorer.extract`` per available account;
* ``explorer.extract`` -> ``proposals/<t>/<account>``; the last one -> ``explorer.consolidate``;
* ``explorer.consolidate`` -> ``insights/<i>`` (dedup-classified) -> ``explorer.dedup`` for close
  candidates, else ``reviews/<i>`` + round-1 ``explorer.review1`` tasks;
* ``explorer.dedup`` -> duplicate, or the review starts;
* review tasks (``review1``, ``mathcheck``, ``review2``, ``review3``) -> :func:`.review.record`.

Every handler first checks that the task is the one its entity waits for (the expected key, with its
retry suffix); anything else is a stale result and is only acked. Failures: :mod:`.recovery`.

Every transaction that creates tasks goes through :meth:`ExplorerService.paced`, which counts them
against their seed's hourly budget (over it, they wait) and pauses a seed whose threads keep producing
unusable answers (:mod:`.pacing`); :meth:`ExplorerService.plan` starts no thread on a paused seed or
one over its budget.
"""
from __future__ import annotations

import copy

from services.modules.base import Effect, ModuleService, Store
from services.modules.explorer import extraction as X
from services.modules.explorer import load as L
from services.modules.explorer import model as M
from services.modules.explorer import pacing as PC
from services.modules.explorer import parsers as P
from services.modules.explorer import priorities as PR
from services.modules.explorer import review as R
from services.modules.explorer import seeds as S
from services.modules.explorer import threads as T
from services.modules.explorer.panels import Panels
from services.modules.explorer.recovery import OPEN_REVIEW, REVIEW_KINDS, Recovery
from services.modules.explorer.state import Ops, StateReader
from shared import txn

PROMOTIONS_WORLD = 60.0   # world seconds between two looks for seeds the researcher promoted


class ExplorerService(StateReader, Recovery, Panels, ModuleService):
    module = M.MODULE

    def initialize(self) -> None:
        self.settings = M.load_settings(self.config)   # first: a bad table exits (CONFIG) before any socket
        self._next_repair = 0.0
        self._next_follow = 0.0
        self._next_promotions = 0.0
        super().initialize()

    # --- apply --------------------------------------------------------------------------------------------

    def handle(self, task: dict) -> Effect:
        effect = self._handle(task)
        return Effect(self.paced(effect.ops))

    def on_unusable(self, task: dict, error: str) -> list:
        return self.paced(super().on_unusable(task, error))

    # --- pacing (services/modules/explorer/pacing.py) ------------------------------------------------

    def paced(self, ops: list) -> list:
        """``ops`` with the submissions over their seed's hourly budget left out (held: the repair pass
        proposes them again when the hour has room), ``pace_check`` markers resolved (the seed is paused
        when enough of its threads are paused by unusable answers), and each touched seed's pace record
        written, version-checked, in the same transaction."""
        now, s = self.now(), self.settings
        marks = [o for o in ops if o.get("op") == PC.PACE_CHECK]
        ops = [o for o in ops if o.get("op") != PC.PACE_CHECK]
        keys: dict[str, list[str]] = {}
        for o in ops:
            sid = PC.seed_of_task(o["task"]) if o.get("op") == "submit" else None
            if sid:
                keys.setdefault(sid, []).append(o["task"]["key"])
        touched = set(keys) | {m["seed_id"] for m in marks}
        held, writes, threads = set(), [], None
        for sid in sorted(touched):
            version, stored = self.store.get(PC.pace_key(sid))
            rec = PC.current(stored, sid, now)
            if sid in keys:
                _, hold = PC.ration(rec, keys[sid], s.max_tasks_per_seed_hour, now)
                if hold:
                    held |= hold
                    self.log.warning("seed %s: %s (%s)", sid, PC.budget_note(rec, s.max_tasks_per_seed_hour),
                                     ", ".join(sorted(hold)))
            mine = [m["thread"] for m in marks if m["seed_id"] == sid]
            if mine and s.seed_pause_after > 0 and not rec.get("paused"):
                threads = self.values("threads/") if threads is None else threads
                latest = {t["id"]: t for t in threads} | {t["id"]: t for t in mine}
                failed = PC.failed_threads(sorted(latest.values(), key=lambda t: t.get("created_at") or 0), sid)
                if len(failed) >= s.seed_pause_after:
                    rec = PC.pause(rec, failed, now)
                    self.log.warning("seed %s paused: %s", sid, rec["pause_reason"])
            if rec != stored:
                writes.append(txn.put(PC.pace_key(sid), rec, if_version=version))
        return [o for o in ops if not (o.get("op") == "submit" and o["task"]["key"] in held)] + writes

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

    def txn_or_skip(self, ops: list, what: str) -> bool:
        """Every planning transaction (a thread started, a held task proposed, a panel seat moved) is paced
        like an applied result's."""
        return super().txn_or_skip(self.paced(ops), what)

    def _handle(self, task: dict) -> Effect:
        result = task.get("result")
        text = result.get("text", "") if isinstance(result, dict) else result
        handler = {M.EXPLORE: self._turn, M.CRITIQUE: self._turn, M.SYNTHESIS: self._synthesis,
                   M.EXTRACT: self._extract, M.CONSOLIDATE: self._consolidate, M.DEDUP: self._dedup}.get(task["kind"])
        if handler is None and task["kind"] in REVIEW_KINDS:
            handler = self._review
        if handler is None:
            self.log.warning("task %s: unknown kind %s; acked without effect", task["id"], task["kind"])
            return Effect([])
        return handler(task, text)

    def _stale(self, task: dict) -> Effect:
        self.log.info("task %s (%s, key %s): not what its entity waits for; acked without effect",
                      task["id"], task["kind"], task["key"])
        return Effect([])

    def _turn(self, task: dict, text) -> Effect:
        version, old = self.thread_of(task)
        if not self.expected_thread_task(old, task):
            return self._stale(task)
        k = task["payload"]["turn"]
        parsed = P.parse_explore(text) if task["kind"] == M.EXPLORE else P.parse_critique(text)
        served, now, ops = self.served(task), self.now(), Ops()
        previous = self.exchanges(old["id"])
        ex = T.exchange_record(old, k, parsed, task, served, now, previous)
        exchanges = previous + [ex]
        recent = [e["response"] for e in exchanges[-self.settings.profundity_window:]]
        thread = dict(old, exchanges=k, critiques=old["critiques"] + (ex["role"] == "critique"), attempt=0,
                      last_error=None, updated_at=now, profundity=round(T.profundity(recent, self.settings), 3))
        if ex["role"] == "explore" and served["account"] and served["account"] != thread.get("explore_account"):
            # the first explore turn binds the conversation; a later one served elsewhere means the broker
            # handed the conversation to another account: the critic then avoids the new one
            thread["explore_account"] = served["account"]
        if ex["role"] == "critique" and served["account"]:
            thread["critic_account"] = served["account"]
        ops.put(M.exchange_key(thread["id"], k), ex, 0)
        reason = T.readiness(exchanges, self.settings)
        if reason:
            thread.update(status="ready", ready_reason=reason)
            ops.submit(X.synthesis_task(thread, self.values("seeds/"), exchanges, self.settings))
        else:
            if (k + 1) % 2 == 0:   # a critique next: routed to an account that can take it (load.py)
                thread = L.route_critic(thread, self.configured_accounts(), self.settings, self.load_view())
            ops.submit(T.turn_task(thread, k + 1, self.values("seeds/"), exchanges, self.configured_accounts(),
                                   self.settings))
        self.put_thread(old, thread, version, ops)
        return Effect(ops.ops)

    def _synthesis(self, task: dict, text) -> Effect:
        version, old = self.thread_of(task)
        if not self.expected_thread_task(old, task):
            return self._stale(task)
        parsed = P.parse_synthesis(text)
        served, now, ops = self.served(task), self.now(), Ops()
        ops.put(M.synthesis_key(old["id"]), dict(parsed, thread_id=old["id"], backend=served["account"],
                                                 mode=served["mode"], task_id=task["id"], at=now), 0)
        panel = self.extraction_panel()
        thread = dict(old, status="synthesised", panel=panel, panel_settled={}, panel_retries={}, panel_closed=False,
                      synthesised_at=now, attempt=0, last_error=None, updated_at=now)
        exchanges, insights = self.exchanges(old["id"]), self.values("insights/")
        for acct in panel:
            ops.submit(X.extract_task(thread, acct, parsed, exchanges, insights, self.settings))
        self.put_thread(old, thread, version, ops)
        return Effect(ops.ops)

    def _extract(self, task: dict, text) -> Effect:
        version, old = self.thread_of(task)
        if not self.expected_thread_task(old, task):
            return self._stale(task)
        acct = task["payload"]["extractor"]
        blocks = P.parse_extract(text, self.settings.max_proposals)
        served, now, ops = self.served(task), self.now(), Ops()
        ops.put(M.proposal_key(old["id"], acct), {"thread_id": old["id"], "account": acct, "blocks": blocks,
                                                  "backend": served["account"], "task_id": task["id"], "at": now}, 0)
        thread = dict(old, panel_settled=dict(old["panel_settled"], **{acct: "done"}), updated_at=now)
        if all(a in thread["panel_settled"] for a in thread["panel"]):
            # the proposal just stored is not visible to a scan yet: close_panel reads the others
            thread = dict(thread, panel_closed=True, attempt=0)
            proposals = sorted([p for p in self.panel_proposals(thread) if p["account"] != acct]
                               + [{"account": acct, "blocks": blocks}], key=lambda p: p["account"])  # as a scan
            ops.submit(X.consolidate_task(thread, proposals, self.values("insights/"), self.settings))
        self.put_thread(old, thread, version, ops)
        return Effect(ops.ops)

    def _consolidate(self, task: dict, text) -> Effect:
        version, old = self.thread_of(task)
        if not self.expected_thread_task(old, task):
            return self._stale(task)
        insights = self.values("insights/")
        parsed = P.parse_consolidate(text, X.blessed_ids(insights), self.settings.max_final_insights)
        now, ops, seeds = self.now(), Ops(), self.values("seeds/")
        known = X.corpus(insights, seeds, self.documented())
        made = X.new_insights(old, parsed, known, task["id"], now)
        panel = self.review_panel()
        for ins in made:
            known[ins["id"]] = ins["text"]
            if ins["status"] == "pending" and ins["dedup"]["verdict"] == "candidates":
                ops.submit(X.dedup_task(ins, known))
            elif ins["status"] == "pending":
                self.start_review(ins, ops, panel)
            ops.put(M.insight_key(ins["id"]), ins, 0)
        verdicts = [i["dedup"]["verdict"] for i in made]
        note = (f"{len(made)} insight(s) consolidated: {verdicts.count('new')} new, {verdicts.count('candidates')} "
                f"to an LLM duplicate check, {verdicts.count('duplicate')} duplicate(s)"
                if made else "the panel found no insights")
        for key, pv, proposal in self.store.scan(f"proposals/{old['id']}/"):
            # consolidated: the insights are the record now, the proposals working data (docs/storage.md)
            ops.put(key, proposal, pv, working=True)
        thread = dict(old, status="extracted", insight_ids=[i["id"] for i in made], attempt=0, last_error=None,
                      extraction_note=(old.get("extraction_note") + "; " if old.get("extraction_note") else "") + note,
                      updated_at=now)
        if old["status"] in ("paused", "archived"):
            # the insights exist now and review on their own; only the thread stays held
            ops.put(M.thread_key(old["id"]), dict(thread, status=old["status"], paused_from="extracted"), version)
        else:
            ops.put(M.thread_key(old["id"]), thread, version)
        return Effect(ops.ops)

    def _dedup(self, task: dict, text) -> Effect:
        iid = (task.get("payload") or {}).get("insight_id", "")
        version, insight = self.store.get(M.insight_key(iid))
        if not self.expected_dedup(insight, task):
            return self._stale(task)
        parsed = P.parse_dedup(text, [c for c, _ in insight["dedup"]["candidates"]])
        ops, insight = Ops(), copy.deepcopy(insight)
        insight["dedup"]["llm"] = dict(parsed, task_id=task["id"])
        insight.update(updated_at=self.now(), last_error=None)
        if parsed["duplicate"]:
            insight.update(status="duplicate", duplicate_of=parsed["of"])
        else:
            self.start_review(insight, ops)
        ops.put(M.insight_key(iid), insight, version)
        return Effect(ops.ops)

    def _review(self, task: dict, text) -> Effect:
        iid = (task.get("payload") or {}).get("insight_id", "")
        vi, insight = self.store.get(M.insight_key(iid))
        vr, review = self.store.get(M.review_key(iid))
        if insight is None or review is None:
            return self._stale(task)
        if insight["status"] != "pending":   # a human decided meanwhile: the panel stops here
            if review["stage"] in OPEN_REVIEW:
                return Effect([txn.put(M.review_key(iid), dict(review, stage="stopped", updated_at=self.now()),
                                         if_version=vr)])
            return self._stale(task)
        ctx = self.review_ctx()
        if not R.expected(review, insight, task, ctx):
            return self._stale(task)
        step, _ = R.locate(task)
        if task["kind"] == M.REVIEW3:
            parsed = P.parse_review3(text, step.split("_")[1])
        else:
            parsed = {M.REVIEW1: P.parse_review1, M.REVIEW2: P.parse_review2,
                      M.MATHCHECK: P.parse_mathcheck}[task["kind"]](text)
        new_review, new_insight = copy.deepcopy(review), copy.deepcopy(insight)
        tasks = R.record(new_review, new_insight, task, parsed, self.served(task), ctx)
        if new_insight["status"] != "pending":
            self.log.info("insight %s: %s (%s)", iid, new_insight["status"], new_review["outcome"]["reason"])
        return Effect(self.review_ops(iid, new_review, vr, new_insight, insight, vi, tasks))

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
                seed = S.validate({"text": promo.get("text", ""), "type": promo.get("type", "question"),
                                   "priority": promo.get("priority", 5), "tags": promo.get("tags", []),
                                   "source": promo.get("source", f"researcher:finding:{fid}")}, self.now())
            except S.SeedError as exc:
                self.log.warning("promotion %s not imported: %s", fid, exc)
                seed = None
            ops = Ops()
            ops.put(f"imported/{fid}", {"finding_id": fid, "seed": seed and seed["id"], "at": self.now()}, 0)
            if seed is not None and not self.store.get(M.seed_key(seed["id"]))[0]:
                ops.put(M.seed_key(seed["id"]), seed, 0)
            if self.txn_or_skip(ops.ops, f"import promotion {fid}") and seed is not None:
                self.log.info("seed %s imported from research finding %s", seed["id"], fid)

    def plan(self) -> None:
        """Start threads while there is room (:meth:`.panels.Panels.thread_room`); re-rank the queued tasks of
        threads whose priority was overridden (:mod:`.priorities`); every ``repair_interval``, re-propose open
        steps (and re-rank the tasks of overridden insights)."""
        self.import_promotions()
        seeds = self.values("seeds/")
        threads = self.values("threads/")
        paces = {p.get("seed_id"): p for p in self.values("pace/")}

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
            thread["explore_on"] = L.explore_targets(self.load_view(threads), threads, self.settings,
                                                     self.configured_accounts())
            ops = Ops()
            ops.put(M.thread_key(thread["id"]), thread, 0)
            ops.submit(T.turn_task(thread, 1, seeds, [], self.configured_accounts(), self.settings))
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
            ops = Ops()
            ops.put(key(rid), dict(current, queued_priority=prio), version)
            self.txn_or_skip(ops.ops, f"record the queued priority of {rid}")
