"""What the explorer does when a step fails, and the repair pass. A mixin of :class:`ExplorerService`.

* An unusable answer (``ParseError``), a PARKED or a CANCELLED task: the framework stores
  ``errors/<task>``; :meth:`on_unusable` marks the entity (``last_error``) and re-asks with a new key
  (``:retry<n>``, ``payload.retry = n``) and a prompt that says it is asked again and why
  (:func:`.model.task_spec`), so a provider never answers a re-ask with the stored exchange, up to
  ``max_retries`` times. A cancel is the operator's decision and is not re-asked. Out of retries: a
  thread pauses (``pause_reason``, ``paused_by = "unusable answers"``) for a human, and enough such
  threads pause their seed (:mod:`.pacing`); a panel member's extraction counts as failed; a reviewer
  is dropped from that step; an LLM dedup check is recorded as unresolved and the insight goes to
  review; a math check is recorded as skipped.
* The repair pass re-proposes every open step from stored state (deterministic keys and payloads, so
  it is harmless when the task exists), closes extraction panels that ran out of patience, and replaces
  panel members blocked past ``member_patience`` (:mod:`.panels`).
"""
from __future__ import annotations

import copy

from services.modules.explorer import extraction as X
from services.modules.explorer import model as M
from services.modules.explorer import pacing as PC
from services.modules.explorer import review as R
from services.modules.explorer.host import Host
from services.modules.explorer.state import Ops, effective_status
from shared import txn

REVIEW_KINDS = (M.REVIEW1, M.MATHCHECK, M.REVIEW2, M.REVIEW3)
OPEN_REVIEW = ("round1", "mathcheck", "round2", "round3_minority", "round3_majority", "round3_vote")


class Recovery(Host):
    def on_unusable(self, task: dict, error: str) -> list:
        final = task["state"] == "CANCELLED"   # an operator's cancel is not re-asked
        kind = task["kind"]
        if kind in REVIEW_KINDS:
            return self._review_failure(task, error, final)
        if kind == M.DEDUP:
            return self._dedup_failure(task, error, final)
        version, thread = self.thread_of(task)
        if not self.expected_thread_task(thread, task):
            return []
        return self._thread_failure(thread, version, task, error, final)

    def _review_failure(self, task: dict, error: str, final: bool) -> list:
        iid = (task.get("payload") or {}).get("insight_id", "")
        vi, insight = self.store.get(M.insight_key(iid))
        vr, review = self.store.get(M.review_key(iid))
        ctx = self.review_ctx()
        if insight is None or review is None or insight["status"] != "pending" or not R.expected(review, insight, task,
                                                                                                 ctx):
            return []
        new_review, new_insight = copy.deepcopy(review), copy.deepcopy(insight)
        if final:
            _exhaust(new_review, task)
        tasks = R.fail(new_review, new_insight, task, error, ctx)
        new_insight["last_error"] = error
        return self.review_ops(iid, new_review, vr, new_insight, insight, vi, tasks)

    def _dedup_failure(self, task: dict, error: str, final: bool) -> list:
        iid = (task.get("payload") or {}).get("insight_id", "")
        version, insight = self.store.get(M.insight_key(iid))
        if not self.expected_dedup(insight, task):
            return []
        insight, ops = copy.deepcopy(insight), Ops()
        retries = insight["dedup"].get("retries", 0) + 1
        insight["dedup"]["retries"] = retries
        insight.update(last_error=error, updated_at=self.now())
        if retries <= self.settings.max_retries and not final:
            known = X.corpus(self.values("insights/"), self.values("seeds/"), self.documented())
            ops.submit(X.dedup_task(insight, known, retries))
        else:   # recorded as unresolved (visible), and the panel reviews it
            insight["dedup"]["llm"] = {"unresolved": True, "error": error, "task_id": task["id"]}
            self.start_review(insight, ops)
        ops.put(M.insight_key(iid), insight, version)
        return ops.ops

    def _thread_failure(self, old: dict, version: int, task: dict, error: str, final: bool) -> list:
        ops, now = Ops(), self.now()
        thread = copy.deepcopy(old)
        thread.update(last_error=error, updated_at=now)
        if task["kind"] == M.EXTRACT:
            acct = task["payload"]["extractor"]
            n = thread.setdefault("panel_retries", {}).get(acct, 0) + 1
            thread["panel_retries"][acct] = n
            if n <= self.settings.max_retries and not final:
                synth = self.store.get(M.synthesis_key(thread["id"]))[1] or {}
                ops.submit(X.extract_task(thread, acct, synth, self.exchanges(thread["id"]), self.values("insights/"),
                                          self.settings, n))
            else:   # this member's proposals are missing (recorded); the others still count
                thread["panel_settled"][acct] = "failed"
                if all(a in thread["panel_settled"] for a in thread["panel"]):
                    thread = self.close_panel(thread, ops, now)
            self.put_thread(old, thread, version, ops)
            return ops.ops
        thread["attempt"] = thread.get("attempt", 0) + 1
        if thread["attempt"] > self.settings.max_retries or final:
            if thread["status"] not in ("paused", "archived"):
                thread.update(status="paused", paused_from=effective_status(old))
                # counted by the seed's pause (services/modules/explorer/pacing.py); an operator's cancel is not
                thread["paused_by"] = None if final else "unusable answers"
                if not final:
                    ops.ops.append(PC.pace_check(thread))
            thread["pause_reason"] = f"{task['kind']} failed: {error}"[:500]
        else:
            ops.submit(*self.thread_tasks(thread))
        self.put_thread(old, thread, version, ops)
        return ops.ops

    # --- repair -------------------------------------------------------------------------------------------

    def repair(self, threads: list[dict]) -> None:
        """Re-propose every open step from stored state; close extraction panels out of patience."""
        now = self.now()
        for thread in threads:
            if thread.get("status") not in M.OPEN_THREAD:
                continue
            if (thread["status"] == "synthesised" and not thread.get("panel_closed")
                    and now - (thread.get("synthesised_at") or now) > self.settings.extract_patience
                    and "done" in thread["panel_settled"].values()):
                self._out_of_patience(thread, now)
                continue
            self.submit_if_absent(self.thread_tasks(thread))
        ctx = self.review_ctx()
        for _, _, review in self.store.scan("reviews/"):
            if isinstance(review, dict) and review.get("stage") in OPEN_REVIEW:
                insight = self.store.get(M.insight_key(review["insight_id"]))[1]
                if insight and insight.get("status") == "pending":
                    self.submit_if_absent(R.open_tasks(review, insight, ctx))
        self.follow_capacity(full=True)
        insights, known = self.values("insights/"), None
        self.align_priorities([i for i in insights if i.get("status") == "pending"], "insight_id", M.insight_key)
        for insight in insights:
            if (insight.get("status") == "pending" and insight["dedup"]["verdict"] == "candidates"
                    and not insight["dedup"].get("llm")):
                known = known or X.corpus(insights, self.values("seeds/"), self.documented())
                self.submit_if_absent([X.dedup_task(insight, known, insight["dedup"].get("retries", 0))])

    def _out_of_patience(self, thread: dict, now: float) -> None:
        version, current = self.store.get(M.thread_key(thread["id"]))
        if current != thread:
            return   # changed since the scan: the next pass looks again
        missing = ", ".join(a for a in current["panel"] if a not in current["panel_settled"])
        ops = Ops()
        new = self.close_panel(dict(current, extraction_note=f"consolidated without {missing} (out of patience)"), ops,
                               now)
        self.put_thread(current, new, version, ops)
        self.txn_or_skip(ops.ops, f"close the extraction panel of {thread['id']}")

    def txn_or_skip(self, ops: list, what: str) -> bool:
        """A planning transaction (no ack); False when another writer changed what it read (next pass)."""
        if txn.conditional(self.client, self.module, ops):
            return True
        self.log.info("%s: another writer changed what it read; will look again", what)
        return False


def _exhaust(review: dict, task: dict) -> None:
    """Make :func:`review.fail` drop the step at once (no re-ask)."""
    step, reviewer = R.locate(task)
    big = 10**6
    if step == "mathcheck":
        review["math_retries"] = big
    elif step in ("round3_minority", "round3_majority"):
        review["deliberation"]["retries"][step.split("_")[1]] = big
    else:
        review["rounds"][{"round1": "1", "round2": "2", "round3_vote": "3"}[step]]["retries"][reviewer] = big
