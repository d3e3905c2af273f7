"""What the explorer does when a step fails, and what the repair pass re-proposes: pure functions over
an :class:`~.context.Env` (the service commits what they return).

* An unusable answer (``ParseError``), a PARKED or a CANCELLED task: the framework stores
  ``errors/<task>``; the ``unusable_*`` step of its kind marks the entity (``last_error``) and re-asks with a new key
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

from services.modules.explorer import context as C
from services.modules.explorer import extraction as X
from services.modules.explorer import model as M
from services.modules.explorer import pacing as PC
from services.modules.explorer import review as R
from services.modules.explorer.flow import OPEN_REVIEW


def _final(task: dict) -> bool:
    """An operator's cancel is not re-asked."""
    return task["state"] == "CANCELLED"


def unusable_review(env: C.Env, task: dict, error: str) -> list:
    """A review step's answer cannot be used: re-ask the seat, or drop it from the step (:func:`.review.fail`)."""
    iid = (task.get("payload") or {}).get("insight_id", "")
    vi, insight = env.store.get(M.insight_key(iid))
    vr, review = env.store.get(M.review_key(iid))
    ctx = env.review_ctx()
    if insight is None or review is None or insight["status"] != "pending" or not R.expected(review, insight, task,
                                                                                             ctx):
        return []
    new_review, new_insight = copy.deepcopy(review), copy.deepcopy(insight)
    if _final(task):
        _exhaust(new_review, task)
    tasks = R.fail(new_review, new_insight, task, error, ctx)
    new_insight["last_error"] = error
    return C.review_ops(iid, new_review, vr, new_insight, insight, vi, tasks)


def unusable_dedup(env: C.Env, task: dict, error: str) -> list:
    """An LLM duplicate check's answer cannot be used: re-ask, or record it unresolved and review."""
    iid = (task.get("payload") or {}).get("insight_id", "")
    version, insight = env.store.get(M.insight_key(iid))
    if not C.expected_dedup(insight, task):
        return []
    insight, ops = copy.deepcopy(insight), C.Ops()
    retries = insight["dedup"].get("retries", 0) + 1
    insight["dedup"]["retries"] = retries
    insight.update(last_error=error, updated_at=env.now)
    if retries <= env.settings.max_retries and not _final(task):
        known = X.corpus(env.values("insights/"), env.values("seeds/"), env.documented())
        ops.submit(X.dedup_task(insight, known, retries))
    else:   # recorded as unresolved (visible), and the panel reviews it
        insight["dedup"]["llm"] = {"unresolved": True, "error": error, "task_id": task["id"]}
        C.start_review(env, insight, ops)
    ops.put(M.insight_key(iid), insight, version)
    return ops.ops


def unusable_thread(env: C.Env, task: dict, error: str) -> list:
    """A thread step's answer cannot be used: re-ask, or (out of retries) count an extractor as failed,
    pause the thread (and maybe its seed, :mod:`.pacing`)."""
    version, old = C.thread_of(env, task)
    if old is None or not C.expected_thread_task(old, task):
        return []
    ops, now, final = C.Ops(), env.now, _final(task)
    thread = copy.deepcopy(old)
    thread.update(last_error=error, updated_at=now)
    if task["kind"] == M.EXTRACT:
        acct = task["payload"]["extractor"]
        n = thread.setdefault("panel_retries", {}).get(acct, 0) + 1
        thread["panel_retries"][acct] = n
        if n <= env.settings.max_retries and not final:
            synth = env.store.get(M.synthesis_key(thread["id"]))[1] or {}
            ops.submit(X.extract_task(thread, acct, synth, env.exchanges(thread["id"]), env.values("insights/"),
                                      env.settings, n))
        else:   # this member's proposals are missing (recorded); the others still count
            thread["panel_settled"][acct] = "failed"
            if all(a in thread["panel_settled"] for a in thread["panel"]):
                thread = C.close_panel(env, thread, ops, now)
        C.put_thread(old, thread, version, ops)
        return ops.ops
    thread["attempt"] = thread.get("attempt", 0) + 1
    if thread["attempt"] > env.settings.max_retries or final:
        if thread["status"] not in ("paused", "archived"):
            thread.update(status="paused", paused_from=C.effective_status(old))
            # counted by the seed's pause (services/modules/explorer/pacing.py); an operator's cancel is not
            thread["paused_by"] = None if final else "unusable answers"
            if not final:
                ops.ops.append(PC.pace_check(thread))
        thread["pause_reason"] = f"{task['kind']} failed: {error}"[:500]
    else:
        ops.submit(*C.thread_tasks(env, thread))
    C.put_thread(old, thread, version, ops)
    return ops.ops


# --- repair -----------------------------------------------------------------------------------------------

def out_of_patience(env: C.Env, thread: dict) -> bool:
    """An extraction panel that has waited ``extract_patience`` since the synthesis with at least one
    member's proposals in: it consolidates without the others."""
    now = env.now
    return (thread["status"] == "synthesised" and not thread.get("panel_closed")
            and now - (thread.get("synthesised_at") or now) > env.settings.extract_patience
            and "done" in thread["panel_settled"].values())


def close_out_of_patience(env: C.Env, thread: dict) -> list | None:
    """The ops closing ``thread``'s panel out of patience; None when it changed since the scan (the next
    pass looks again)."""
    version, current = env.store.get(M.thread_key(thread["id"]))
    if current != thread:
        return None
    missing = ", ".join(a for a in current["panel"] if a not in current["panel_settled"])
    ops = C.Ops()
    new = C.close_panel(env, dict(current, extraction_note=f"consolidated without {missing} (out of patience)"), ops,
                      env.now)
    C.put_thread(current, new, version, ops)
    return ops.ops


def open_review_tasks(env: C.Env) -> list[list[dict]]:
    """The tasks of every open review whose insight is still pending (one list per review). Only a
    pending insight's review can be open, so those are read by key: every review ever held (with its
    rounds' reasoning, most of the explorer's bytes after its transcripts) is never read whole."""
    ctx, out = env.review_ctx(), []
    for ident in env.pending_insight_ids():
        review = env.store.get(M.review_key(ident))[1]
        if isinstance(review, dict) and review.get("stage") in OPEN_REVIEW:
            insight = env.store.get(M.insight_key(ident))[1]
            if insight and insight.get("status") == "pending":
                out.append(R.open_tasks(review, insight, ctx))
    return out



def dedup_tasks(env: C.Env, insights: list[dict]) -> list[dict]:
    """The LLM duplicate checks pending insights wait for."""
    known, out = None, []
    for insight in insights:
        if (insight.get("status") == "pending" and insight["dedup"]["verdict"] == "candidates"
                and not insight["dedup"].get("llm")):
            known = known or X.corpus(insights, env.values("seeds/"), env.documented())
            out.append(X.dedup_task(insight, known, insight["dedup"].get("retries", 0)))
    return out


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
