"""Applying the explorer's settled tasks: one handler per task kind, ``handle_<step>(env, task) -> ops``.

Every handler first checks that the task is the one its entity waits for (the expected key, with its
retry suffix: :func:`.context.expected_thread_task`, :func:`.context.expected_dedup`,
:func:`.review.expected`); anything else is a stale result, acked without effect (``[]``). Otherwise it
returns the ops that record the result and submit the follow-up in the same transaction (the service
paces them and adds the ack), so no step can be lost between two writes:

* ``explorer.explore`` / ``explorer.critique`` turn k -> ``exchanges/<t>/<k>``; then turn k+1, or
  (thread ready) ``explorer.synthesis``;
* ``explorer.synthesis`` -> ``syntheses/<t>``; one ``explorer.extract`` per available account;
* ``explorer.extract`` -> ``proposals/<t>/<account>``; the last one -> ``explorer.consolidate``;
* ``explorer.consolidate`` -> ``insights/<i>`` (dedup-classified) -> ``explorer.dedup`` for close
  candidates, else ``reviews/<i>`` + round-1 ``explorer.review1`` tasks;
* ``explorer.dedup`` -> duplicate, or the review starts;
* review tasks (``review1``, ``mathcheck``, ``review2``, ``review3``) -> :func:`.review.record`.

A result that cannot be parsed raises ``ParseError`` (:mod:`.parsers`); the framework records it and
:mod:`.recovery` decides what follows.
"""
from __future__ import annotations

import copy

from services.modules.explorer import context as C
from services.modules.explorer import extraction as X
from services.modules.explorer import load as L
from services.modules.explorer import model as M
from services.modules.explorer import parsers as P
from services.modules.explorer import review as R
from services.modules.explorer import threads as T
from shared import txn

REVIEW_KINDS = (M.REVIEW1, M.MATHCHECK, M.REVIEW2, M.REVIEW3)
OPEN_REVIEW = ("round1", "mathcheck", "round2", "round3_minority", "round3_majority", "round3_vote")


def answer(task: dict):
    """The answer's text (a result is ``{"text": ...}``; a bare string is taken as is)."""
    result = task.get("result")
    return result.get("text", "") if isinstance(result, dict) else result


def stale(env: C.Env, task: dict) -> list:
    env.log.info("task %s (%s, key %s): not what its entity waits for; acked without effect",
                 task["id"], task["kind"], task["key"])
    return []


def handle_turn(env: C.Env, task: dict) -> list:
    version, old = C.thread_of(env, task)
    if old is None or not C.expected_thread_task(old, task):
        return stale(env, task)
    k, text = task["payload"]["turn"], answer(task)
    parsed = P.parse_explore(text) if task["kind"] == M.EXPLORE else P.parse_critique(text)
    served, now, ops, s = env.served(task), env.now, C.Ops(), env.settings
    previous = env.exchanges(old["id"])
    ex = T.exchange_record(old, k, parsed, task, served, now, previous)
    exchanges = previous + [ex]
    recent = [e["response"] for e in exchanges[-s.profundity_window:]]
    thread = dict(old, exchanges=k, critiques=old["critiques"] + (ex["role"] == "critique"), attempt=0,
                  last_error=None, updated_at=now, profundity=round(T.profundity(recent, s), 3))
    if ex["role"] == "explore" and served["account"] and served["account"] != thread.get("explore_account"):
        # the first explore turn binds the conversation; a later one served elsewhere means the broker
        # handed the conversation to another account: the critic then avoids the new one
        thread["explore_account"] = served["account"]
    if ex["role"] == "critique" and served["account"]:
        thread["critic_account"] = served["account"]
    ops.put(M.exchange_key(thread["id"], k), ex, 0)
    reason = T.readiness(exchanges, s)
    if reason:
        thread.update(status="ready", ready_reason=reason)
        ops.submit(X.synthesis_task(thread, env.values("seeds/"), exchanges, s))
    else:
        if (k + 1) % 2 == 0:   # a critique next: routed to an account that can take it (load.py)
            thread = L.route_critic(thread, env.configured_accounts(), s, env.load())
        ops.submit(T.turn_task(thread, k + 1, env.values("seeds/"), exchanges, env.configured_accounts(), s))
    C.put_thread(old, thread, version, ops)
    return ops.ops


def handle_synthesis(env: C.Env, task: dict) -> list:
    version, old = C.thread_of(env, task)
    if old is None or not C.expected_thread_task(old, task):
        return stale(env, task)
    parsed = P.parse_synthesis(answer(task))
    served, now, ops = env.served(task), env.now, C.Ops()
    ops.put(M.synthesis_key(old["id"]), dict(parsed, thread_id=old["id"], backend=served["account"],
                                             mode=served["mode"], task_id=task["id"], at=now), 0)
    panel = env.extraction_panel()
    thread = dict(old, status="synthesised", panel=panel, panel_settled={}, panel_retries={}, panel_closed=False,
                  synthesised_at=now, attempt=0, last_error=None, updated_at=now)
    exchanges, insights = env.exchanges(old["id"]), env.values("insights/")
    for acct in panel:
        ops.submit(X.extract_task(thread, acct, parsed, exchanges, insights, env.settings))
    C.put_thread(old, thread, version, ops)
    return ops.ops


def handle_extract(env: C.Env, task: dict) -> list:
    version, old = C.thread_of(env, task)
    if old is None or not C.expected_thread_task(old, task):
        return stale(env, task)
    acct = task["payload"]["extractor"]
    blocks = P.parse_extract(answer(task), env.settings.max_proposals)
    served, now, ops = env.served(task), env.now, C.Ops()
    ops.put(M.proposal_key(old["id"], acct), {"thread_id": old["id"], "account": acct, "blocks": blocks,
                                              "backend": served["account"], "task_id": task["id"], "at": now}, 0)
    thread = dict(old, panel_settled=dict(old["panel_settled"], **{acct: "done"}), updated_at=now)
    if all(a in thread["panel_settled"] for a in thread["panel"]):
        # the proposal just stored is not visible to a scan yet: C.close_panel reads the others
        thread = dict(thread, panel_closed=True, attempt=0)
        proposals = sorted([p for p in C.panel_proposals(env, thread) if p["account"] != acct]
                           + [{"account": acct, "blocks": blocks}], key=lambda p: p["account"])  # as a scan
        ops.submit(X.consolidate_task(thread, proposals, env.values("insights/"), env.settings))
    C.put_thread(old, thread, version, ops)
    return ops.ops


def handle_consolidate(env: C.Env, task: dict) -> list:
    version, old = C.thread_of(env, task)
    if old is None or not C.expected_thread_task(old, task):
        return stale(env, task)
    insights = env.values("insights/")
    parsed = P.parse_consolidate(answer(task), X.blessed_ids(insights), env.settings.max_final_insights)
    now, ops, seeds = env.now, C.Ops(), env.values("seeds/")
    known = X.corpus(insights, seeds, env.documented())
    made = X.new_insights(old, parsed, known, task["id"], now)
    panel = env.review_panel()
    for ins in made:
        known[ins["id"]] = ins["text"]
        if ins["status"] == "pending" and ins["dedup"]["verdict"] == "candidates":
            ops.submit(X.dedup_task(ins, known))
        elif ins["status"] == "pending":
            C.start_review(env, ins, ops, panel)
        ops.put(M.insight_key(ins["id"]), ins, 0)
    verdicts = [i["dedup"]["verdict"] for i in made]
    note = (f"{len(made)} insight(s) consolidated: {verdicts.count('new')} new, {verdicts.count('candidates')} "
            f"to an LLM duplicate check, {verdicts.count('duplicate')} duplicate(s)"
            if made else "the panel found no insights")
    for key, pv, proposal in env.store.scan(f"proposals/{old['id']}/"):
        # consolidated: the insights are the record now, the proposals working data (docs/storage.md)
        ops.put(key, proposal, pv, working=True)
    earlier = old.get("extraction_note")
    thread = dict(old, status="extracted", insight_ids=[i["id"] for i in made], attempt=0, last_error=None,
                  extraction_note=(f"{earlier}; " if earlier else "") + note, updated_at=now)
    if old["status"] in ("paused", "archived"):
        # the insights exist now and review on their own; only the thread stays held
        ops.put(M.thread_key(old["id"]), dict(thread, status=old["status"], paused_from="extracted"), version)
    else:
        ops.put(M.thread_key(old["id"]), thread, version)
    return ops.ops


def handle_dedup(env: C.Env, task: dict) -> list:
    iid = (task.get("payload") or {}).get("insight_id", "")
    version, insight = env.store.get(M.insight_key(iid))
    if not C.expected_dedup(insight, task):
        return stale(env, task)
    parsed = P.parse_dedup(answer(task), [c for c, _ in insight["dedup"]["candidates"]])
    ops, insight = C.Ops(), copy.deepcopy(insight)
    insight["dedup"]["llm"] = dict(parsed, task_id=task["id"])
    insight.update(updated_at=env.now, last_error=None)
    if parsed["duplicate"]:
        insight.update(status="duplicate", duplicate_of=parsed["of"])
    else:
        C.start_review(env, insight, ops)
    ops.put(M.insight_key(iid), insight, version)
    return ops.ops


def handle_review(env: C.Env, task: dict) -> list:
    iid = (task.get("payload") or {}).get("insight_id", "")
    vi, insight = env.store.get(M.insight_key(iid))
    vr, review = env.store.get(M.review_key(iid))
    if insight is None or review is None:
        return stale(env, task)
    if insight["status"] != "pending":   # a human decided meanwhile: the panel stops here
        if review["stage"] in OPEN_REVIEW:
            return [txn.put(M.review_key(iid), dict(review, stage="stopped", updated_at=env.now), if_version=vr)]
        return stale(env, task)
    ctx = env.review_ctx()
    if not R.expected(review, insight, task, ctx):
        return stale(env, task)
    step, _ = R.locate(task)
    text = answer(task)
    if task["kind"] == M.REVIEW3:
        parsed = P.parse_review3(text, step.split("_")[1])
    else:
        parsed = {M.REVIEW1: P.parse_review1, M.REVIEW2: P.parse_review2,
                  M.MATHCHECK: P.parse_mathcheck}[task["kind"]](text)
    new_review, new_insight = copy.deepcopy(review), copy.deepcopy(insight)
    tasks = R.record(new_review, new_insight, task, parsed, env.served(task), ctx)
    if new_insight["status"] != "pending":
        env.log.info("insight %s: %s (%s)", iid, new_insight["status"], new_review["outcome"]["reason"])
    return C.review_ops(iid, new_review, vr, new_insight, insight, vi, tasks)
