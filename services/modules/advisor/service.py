"""``python -m services advisor`` (supervisord program ``module-advisor``): the optional advisor that
proposes module weights when the backlogs are out of balance (docs/research.md § Advisor). Off by default.

Every ``interval`` (world seconds) it looks at the broker's stats: the backlog of each module (its
PENDING tasks; the documenter's also counts blessed insights not yet incorporated). When they are out of
balance (:func:`.logic.imbalance`) and one more request keeps the advisor within ``max_share`` of all
tasks (:func:`.logic.may_ask`, at most 5%), it proposes one ``advisor.weights`` task: the backlogs, the
throughput of the last 24 h (from its own samples of DONE counts) and the quota headroom, asking for
``EXPLORER_WEIGHT:`` ... ``REASONING:``. One such task is in flight at a time.

Key layout (namespace ``advisor``; the records' types are in :mod:`.model`)::

    state               {"seq": last task number, "pending": bool, "key", "next_check": world time,
                         "last_check": {"at", "backlogs", "reason" | None, "skipped": why | None},
                         "last_applied": {module: weight} | None, "to_apply": seq | None}
    samples             [[world time, {module: DONE count}], ...]   (the last 26 h, one per sample_interval)
    proposals/<seq:06d> {"seq", "at", "task_id", "reason", "backlogs", "factors", "weights", "reasoning",
                         "status": "proposed" | "to_apply" | "applied" | "not_applied" | "unusable",
                         "note", "previous": {module: weight} | None, "applied_at"}
    errors/<task id>    unusable answers (the module framework)

The answer's factors become additive scheduler weights (``weight_scale * log2(factor)``, capped at
``max_weight``). With ``auto_apply = false`` (the default) a proposal is only recorded; ``fanoctl modules
weights`` shows it next to the weights in force, and ``--set`` applies what the user wants. With
``auto_apply = true`` the proposal is applied through the scheduler's ``weights`` query after it is
recorded (a crash in between applies it on the next pass; setting the same weights twice is harmless),
but only while the weights are the configured ones or the advisor's own last ones: a user's override
stands (recorded as ``not_applied``). The scheduler keeps applied weights in the broker, so they survive
its restarts.
"""
from __future__ import annotations

from typing import Any

from services.modules import prompts
from services.modules.advisor import logic as L
from services.modules.advisor.model import Check, Proposal, State, empty_state
from services.modules.advisor.settings import load_settings
from services.modules.base import Effect, ModuleService, Store
from services.modules.parsing import ParseError
from shared import txn
from shared.errors import BrokerUnavailable, FanoError
from shared.scheduler_client import query

STATE, SAMPLES = "state", "samples"


def proposal_key(seq: int) -> str:
    return f"proposals/{seq:06d}"


class AdvisorService(ModuleService):
    module = L.MODULE

    def initialize(self) -> None:
        self.settings = load_settings(self.config)   # first: a bad table exits (CONFIG) before any socket
        super().initialize()
        self.explorer = Store(self.client, "explorer")      # read only
        self.documenter = Store(self.client, "documenter")  # read only
        if not self.settings.enabled:
            self.log.info("advisor disabled ([modules.advisor] enabled = false): it proposes nothing")

    # --- reading ------------------------------------------------------------------------------------------

    def state(self) -> tuple[int, State]:
        """The ``state`` record (:class:`.model.State`) and its version; a missing or damaged one reads as
        the empty state."""
        v, st = self.store.get(STATE)
        return v, (State(**{**empty_state(), **st}) if isinstance(st, dict) else empty_state())

    def documenter_waiting(self) -> int:
        """Blessed insights the documenter has not incorporated yet."""
        done = {k.split("/", 1)[1] for k, _, _ in self.documenter.scan("incorporated/")}
        return sum(1 for k, _, v in self.explorer.scan("insights/")
                   if isinstance(v, dict) and v.get("status") == "blessed" and k.split("/", 1)[1] not in done)

    def scheduler_weights(self, changes: dict | None = None) -> dict:
        fields: dict[str, Any] = {"set": changes} if changes else {}
        res = query(self.config.scheduler_endpoint, "weights", timeout=2.0, name=self.name, keys=self.keys, **fields)
        return dict(res.get("weights") or {})

    # --- planning -----------------------------------------------------------------------------------------

    def plan(self) -> None:
        if not self.settings.enabled:
            return
        self.apply_recorded()
        s, now = self.settings, self.clock.world()
        sv, st = self.state()
        stats = self.client.stats()
        modules = list(s.modules)
        sample_v, samples = self.store.get(SAMPLES)
        samples = samples if isinstance(samples, list) else []
        done = L.done_counts(stats, modules)
        new_samples = L.add_sample(samples, now, done, s.sample_interval)
        ops = [] if new_samples is samples else [txn.put(SAMPLES, new_samples, if_version=sample_v)]
        if st["pending"] or now < float(st.get("next_check") or 0.0):
            self._txn(ops)
            return
        backlog = L.backlogs(stats, modules, self.documenter_waiting())
        reason = L.imbalance(backlog, s.min_backlog, s.imbalance_ratio)
        check: Check = {"at": now, "backlogs": backlog, "reason": reason, "skipped": None}
        st = {**st, "next_check": now + s.interval, "last_check": check}
        if reason is not None:
            mine, total = L.request_counts(stats)
            if not L.may_ask(mine, total, s.max_share):
                check["skipped"] = (f"rate bound: {mine} advisor task(s) of {total}; one more would exceed "
                                    f"{s.max_share:.0%} of all requests")
            else:
                st["seq"], st["pending"] = st["seq"] + 1, True
                task = self.weights_task(st["seq"], reason, backlog, new_samples, now, done, stats)
                st["key"] = task["key"]
                ops.append(txn.submit(task))
                self.log.info("backlogs out of balance (%s): asking for weights (task key %s)", reason, task["key"])
        self._txn(ops + [txn.put(STATE, st, if_version=sv)])

    def weights_task(self, seq: int, reason: str, backlog: dict, samples: list, now: float, done: dict,
                     stats: dict) -> dict:
        s = self.settings
        per, span = L.throughput(samples, now, done)
        try:
            current = self.scheduler_weights()
        except FanoError as exc:   # BrokerUnavailable included: the prompt shows every factor as 1.0
            self.tolerate("scheduler weights query", exc)
            current = {}
        factors = {m: round(2 ** (float(current.get(m, 0.0)) / s.weight_scale), 2) if s.weight_scale else 1.0
                   for m in s.modules}
        span_text = ("in the last 24 h" if span >= 86000
                     else f"in the last {span / 3600:.1f} h (since the advisor started)")
        prompt = prompts.render(
            L.MODULE, "weights", reason=reason, backlogs=L.table(backlog), throughput=L.table(per),
            span=span_text, quota=L.quota_lines(stats), current=L.table(factors),
            format="\n".join(f"{L.tag(m)}: <factor>" for m in s.modules))
        spec = {"key": f"{L.KIND}/{seq}", "module": L.MODULE, "kind": L.KIND,
                "payload": {"prompt": prompt, "seq": seq, "modules": list(s.modules), "subject": f"advice-{seq}"}}
        if s.backends:
            spec["requires"] = {"backends": list(s.backends)}
        return spec

    def _txn(self, ops: list) -> None:
        if not ops:
            return
        if not txn.conditional(self.client, self.module, ops):
            self.log.info("advisor state raced with another writer; the next pass re-reads")

    # --- applying results ---------------------------------------------------------------------------------

    def handle(self, task: dict) -> Effect:
        if task["kind"] != L.KIND:
            raise ParseError(f"the advisor has no task kind {task['kind']!r}")
        sv, st = self.state()
        seq = (task.get("payload") or {}).get("seq")
        if not st["pending"] or st["seq"] != seq:
            self.log.info("task %s: not the advice the advisor waits for; acked without effect", task["id"])
            return Effect([])
        result = task.get("result")
        text = result.get("text", "") if isinstance(result, dict) else (result or "")
        factors, reasoning = L.parse_weights(text, self.settings.modules)
        weights = L.to_weights(factors, self.settings.weight_scale, self.settings.max_weight)
        auto = self.settings.auto_apply
        check: dict[str, Any] = dict(st["last_check"] or {})
        rec: Proposal = {"seq": seq, "at": self.clock.world(), "task_id": task["id"], "reason": check.get("reason"),
               "backlogs": check.get("backlogs"), "factors": factors, "weights": weights, "reasoning": reasoning,
               "status": "to_apply" if auto else "proposed", "previous": None, "applied_at": None,
               "note": None if auto else "auto_apply is off: apply with fanoctl modules weights --set"}
        st = {**st, "pending": False, "to_apply": seq if auto else st.get("to_apply")}
        self.log.info("advice %s: %s (%s)", seq, weights, "to apply" if auto else "recorded only")
        return Effect([txn.put(proposal_key(seq), rec, if_version=0), txn.put(STATE, st, if_version=sv)])

    def on_unusable(self, task: dict, error: str) -> list:
        sv, st = self.state()
        seq = (task.get("payload") or {}).get("seq")
        if not st["pending"] or st["seq"] != seq:
            return []
        check: dict[str, Any] = dict(st["last_check"] or {})
        rec: Proposal = {"seq": seq, "at": self.clock.world(), "task_id": task["id"], "status": "unusable",
                         "note": error[:500], "reason": check.get("reason"), "weights": None, "factors": None}
        return [txn.put(proposal_key(seq), rec, if_version=0),
                txn.put(STATE, {**st, "pending": False}, if_version=sv)]

    def apply_recorded(self) -> None:
        """Apply a recorded proposal (auto_apply) through the scheduler, then record what happened."""
        sv, st = self.state()
        seq = st.get("to_apply")
        if not seq:
            return
        pv, rec = self.store.get(proposal_key(seq))
        if not isinstance(rec, dict) or rec.get("status") != "to_apply":
            self._txn([txn.put(STATE, {**st, "to_apply": None}, if_version=sv)])
            return
        modules = list(self.settings.modules)
        try:
            current = self.scheduler_weights()
            if L.may_apply(current, self.config.scheduler.module_weights, st.get("last_applied"), modules):
                in_force = self.scheduler_weights(dict(rec["weights"]))
                rec = {**rec, "status": "applied", "previous": {m: current.get(m, 0.0) for m in modules},
                       "applied_at": self.clock.world(), "note": None}
                st = {**st, "to_apply": None, "last_applied": {m: in_force.get(m, 0.0) for m in modules}}
                self.log.info("advice %s applied: weights now %s", seq, in_force)
            else:
                rec = {**rec, "status": "not_applied", "previous": {m: current.get(m, 0.0) for m in modules},
                       "note": "the weights were changed by hand since the advisor last set them; the override stands"}
                st = {**st, "to_apply": None}
                self.log.info("advice %s not applied: the user's weights %s stand", seq, current)
        except BrokerUnavailable as exc:   # the scheduler is restarting: try again on the next pass
            self.log.info("advice %s: scheduler not answering (%s); applying later", seq, exc)
            return
        except FanoError as exc:           # the scheduler refused the weights: recorded, not retried
            rec = {**rec, "status": "not_applied", "note": f"the scheduler refused: {exc.message}"[:500]}
            st = {**st, "to_apply": None}
            self.log.warning("advice %s not applied: %s", seq, exc.message)
        self._txn([txn.put(proposal_key(seq), rec, if_version=pv), txn.put(STATE, st, if_version=sv)])
