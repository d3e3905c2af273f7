"""Planning: which blessed insight the documenter incorporates next, or which foundation it writes first.

Task kind, key and payload::

    documenter.plan         documenter.plan/<seq>                       {prompt, seq, insight_ids}

One planning turn is in flight at a time (``plan/state``, :class:`.model.PlanState`); it is proposed when
some blessed insight is neither incorporated, nor in a pipeline, nor waiting for a human, and fewer than
``max_active`` pipelines run (:func:`propose_plan`). The answer (:func:`handle_plan`) decides:
``INCORPORATE`` starts the insight's pipeline (:func:`.flow.start_job`); ``PREREQUISITE`` appends the
foundation the planner wrote, unless what it establishes is already established or it duplicates a
section; ``WAIT`` holds planning until the candidates or the document change, or a backoff passes
(``WAIT_BASE``, doubled per WAIT in a row, at most ``WAIT_MAX``). The planning turn asks for the deep
mode and may fall back to the standard one. An unusable planning answer backs off (``FAIL_BASE``, doubled
per failure in a row); ``pause_after`` of them in a row pause planning with the reason in ``plan/state``
(``fanoctl document show``) until ``fanoctl document resume`` (services/modules/pace.py).
"""
from __future__ import annotations

import hashlib

from services.modules import dedup, pace
from services.modules.documenter import context as C
from services.modules.documenter import model as M
from services.modules.documenter.flow import ACTIVE, candidates, read_incorporated, read_jobs, start_job
from services.modules.documenter.parsers import parse_plan, split_heading
from services.modules.parsing import ParseError
from shared import txn

WAIT_BASE = 300.0        # world seconds before planning again after WAIT (doubled per WAIT in a row)
WAIT_MAX = 6 * 3600.0
FAIL_BASE = 60.0         # after an unusable planning answer (doubled per failure in a row)
PLAN_REQUIRES = {"mode": "deep", "deep_fallback": True}   # the planning turn may use the deep reserve


# --- reading ---------------------------------------------------------------------------------------------

def _basis(cands, doc: M.Doc) -> str:
    """What a WAIT was about: planning resumes early when this changes."""
    blob = "\x1f".join(sorted(i for i, _ in cands)) + f"|{doc.version}"
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def plan_state(env: C.Env) -> tuple[int, dict]:
    v, ps = env.store.get(M.PLAN_STATE)
    return v, (ps if isinstance(ps, dict) else {"seq": 1, "pending": False, "waits": 0, "failures": 0})


def bump_mix(env: C.Env, what: str) -> dict:
    v, mix = env.store.get(M.MIX)
    mix = dict(mix) if isinstance(mix, dict) else {"plans": 0, "reviews": 0}
    mix[what] = int(mix.get(what, 0)) + 1
    return txn.put(M.MIX, mix, if_version=v)


# --- proposing a planning turn --------------------------------------------------------------------------

def propose_plan(env: C.Env) -> list[dict]:
    """Ops that start a planning turn (state + submission in one transaction), or [] if none is due."""
    pv, ps = plan_state(env)
    if ps.get("pending") or pace.paused(ps):
        return []
    jobs = read_jobs(env)
    if sum(1 for _, j in jobs.values() if j.get("stage") in ACTIVE) >= env.settings.max_active:
        return []
    cands = candidates(env, jobs)
    if not cands:
        return []
    doc = M.read_doc(env.store)
    if env.now < float(ps.get("wait_until") or 0) and ps.get("wait_basis") == _basis(cands, doc):
        return []
    items = cands[:C.MAX_CANDIDATES]
    seq = int(ps["seq"])
    prompt = C.render("plan", outline=C.outline(doc), concepts=C.concepts(doc), candidates=C.candidate_list(items))
    key = C.task_key(C.PLAN, seq)
    spec = C.task(C.PLAN, key, {"prompt": prompt, "seq": seq, "insight_ids": [i for i, _ in items]}, PLAN_REQUIRES,
                  env.hints(max(C.priority_of(ins) for _, ins in items)))
    return [txn.put(M.PLAN_STATE, {**ps, "pending": True, "key": key, "proposed_at": env.now}, if_version=pv),
            txn.submit(spec)]


def _resolve_id(ident: str, offered: list[str]) -> str:
    if ident in offered:
        return ident
    lowered = {o.lower(): o for o in offered}
    if ident.lower() in lowered:
        return lowered[ident.lower()]
    if ident.isdigit() and 1 <= int(ident) <= len(offered):   # the list number instead of the id
        return offered[int(ident) - 1]
    raise ParseError(f"INSIGHT_ID {ident!r} is not one of the offered insights ({', '.join(offered[:5])}...)")


def handle_plan(env: C.Env, task: dict) -> list[dict]:
    pv, ps = plan_state(env)
    seq = task["payload"].get("seq")
    if not ps.get("pending") or ps.get("seq") != seq:
        return []   # an answer to a turn already settled
    plan = parse_plan(C.answer_text(task))
    offered = [str(i) for i in task["payload"].get("insight_ids") or []]
    # parse_plan gives INCORPORATE an INSIGHT_ID (or raises)
    ident = _resolve_id(plan.insight_id or "", offered) if plan.decision == "INCORPORATE" else None
    ops = [bump_mix(env, "plans")]
    new = {"seq": seq + 1, "pending": False, "waits": 0, "failures": 0,
           "last": {"seq": seq, "decision": plan.decision, "insight_id": ident, "reason": plan.reason, "at": env.now}}
    jobs, done = read_jobs(env), read_incorporated(env)
    cands = dict(candidates(env, jobs, done))
    if plan.decision == "INCORPORATE":
        if ident in cands:
            ops += start_job(env, ident, cands[ident], jobs.get(ident), task)
        else:
            new["last"]["outcome"] = "no longer a candidate"
    elif plan.decision == "PREREQUISITE":
        p_ops, outcome = prerequisite(env, plan, seq, task)
        ops += p_ops
        new["last"]["outcome"] = outcome
    else:
        waits = int(ps.get("waits") or 0) + 1
        new.update(waits=waits, wait_until=env.now + min(WAIT_MAX, WAIT_BASE * 2 ** (waits - 1)),
                   wait_basis=_basis(list(cands.items()), M.read_doc(env.store)))
    return [txn.put(M.PLAN_STATE, new, if_version=pv)] + ops


def prerequisite(env: C.Env, plan, seq: int, task: dict) -> tuple[list[dict], str]:
    """Append a foundation the planner wrote, unless it is already there."""
    doc = M.read_doc(env.store)
    have = doc.established()
    if all(M.slug(c) in have for c in plan.establishes):
        return [], "skipped: every concept it establishes is already established"
    verdict, hits = dedup.classify(plan.content, doc.texts())
    if verdict == "duplicate":
        return [], f"skipped: duplicate of section {hits[0][0]}"
    title, body = split_heading(plan.content)
    if not title:
        title = (plan.needed[:1].upper() + plan.needed[1:] if plan.needed
                 else "Foundations: " + ", ".join(plan.establishes))
    sid = M.new_sid(doc)
    ops, version = M.commit(doc, {sid: {"title": title[:200], "text": body, "establishes": plan.establishes,
                                        "requires": [], "source": {"kind": "prerequisite", "ref": seq,
                                                                   "needed": plan.needed}}},
                            {"kind": "prerequisite", "ref": seq, "task": task["id"]},
                            f"prerequisite {sid}: {title[:80]}", env.now)
    return ops, f"appended {sid} (version {version})"


# --- failures -------------------------------------------------------------------------------------------

def unusable_plan(env: C.Env, task: dict, error: str) -> list[dict]:
    """A planning turn whose answer cannot be used (or that was parked or cancelled): planning backs off
    (``FAIL_BASE``, doubled per failure in a row) unless the candidates or the document change."""
    pv, ps = plan_state(env)
    if not ps.get("pending") or ps.get("seq") != task["payload"].get("seq"):
        return []
    cands = candidates(env)
    streak = pace.failed(ps, error, env.settings.pause_after, "the documenter's planning turns",
                         "fanoctl document resume", env.now)
    failures = streak["failures"]
    new = {**streak, "seq": ps["seq"] + 1, "pending": False,
           "wait_until": env.now + min(WAIT_MAX, FAIL_BASE * 2 ** (failures - 1)),
           "wait_basis": _basis(cands, M.read_doc(env.store)),
           "last": {"seq": ps["seq"], "decision": None, "error": error[:500], "at": env.now}}
    return [txn.put(M.PLAN_STATE, new, if_version=pv), bump_mix(env, "plans")]
