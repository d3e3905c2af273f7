"""Evaluation slots that follow capacity: a slot blocked past ``member_patience`` moves or is left out.

Functions over an :class:`~.context.Env`, the accounts' headroom (a
:class:`services.modules.capacity.Capacity` read from the broker) and the documenter's PENDING tasks by
key, listed without payloads (a moved slot's payload is read then); the service commits what they
return and then cancels the abandoned tasks.

For every pipeline in stage ``evaluate``, a slot bound to an account (``requires.backends``) whose task
has waited ``member_patience`` world seconds while that account has no standard room (out of quota for
the documenter, cooling down, paused):

* moves to the first panel account with room that no counted slot of the panel uses (distinct models):
  the slot keeps its name, its ``account`` changes, the old one is appended to ``replaced`` and the new
  task (same prompt, key ``...@<account>``, :func:`.flow.slot_key`) is submitted in the same transaction;
* without such an account, is left out (``dropped``) when at least two counted slots remain (every one of
  them must still answer INCLUDE; if they all have, the verdict is reached now); else it waits.

The abandoned task's id goes to the job's ``replaced_tasks``: the service cancels it after the commit, and
again on a later pass while it is still PENDING (a module that died in between). If it runs anyway its
answer no longer matches the slot's key and is ignored (:func:`.flow.handle_evaluate`), and its failure is
no dispute (:func:`.flow.unusable`).
"""
from __future__ import annotations

from services.modules import capacity as CAP
from services.modules.documenter import context as C
from services.modules.documenter import flow
from services.modules.documenter import model as M
from shared import txn


def follow(env: C.Env, cap: CAP.Capacity, pending: dict) -> tuple[list[tuple[list[dict], int]], list[int]]:
    """``(moves, stale)`` for one pass: each move is (the ops of one transaction, the id of the task it
    abandons: cancel it once the transaction committed), one per pipeline; ``stale`` are tasks abandoned
    by earlier passes and still PENDING (cancel them)."""
    txns, cancels = [], []
    live = {t["id"] for t in pending.values()}
    for ident, (jv, job) in sorted(flow.read_jobs(env).items()):
        cancels += [tid for tid in job.get("replaced_tasks") or [] if tid in live]
        if job.get("stage") != "evaluate":
            continue
        for n, slot in enumerate(job.get("slots") or [], 1):
            if not slot.get("account") or slot.get("dropped") or slot["name"] in (job.get("evals") or {}):
                continue
            task = pending.get(flow.slot_key(ident, job["run"], n, slot))
            if (task is None or CAP.waited(task, env.now) < env.settings.member_patience
                    or cap.serves(task, [slot["account"]])):
                continue
            task = CAP.with_payload(env.store.client, task)   # its prompt goes to the moved slot's task
            if task is None:
                continue   # settled meanwhile: nothing to move
            ops = move(env, cap, jv, dict(job), n, task)
            if ops:
                txns.append((ops, task["id"]))
                break
    return txns, cancels


def move(env: C.Env, cap: CAP.Capacity, jv: int, job: dict, n: int, task: dict) -> list[dict]:
    """The ops that move slot ``n`` of ``job`` (whose task is ``task``) or leave it out; [] to wait."""
    slots = [dict(s) for s in job["slots"]]
    slot = slots[n - 1]
    old = slot["account"]
    why = f"{old} blocked past member_patience: {cap.reason(old, 'standard')}"
    taken = {s["account"] for s in flow.active_slots({"slots": slots})}
    chosen = env.settings.panel_accounts
    allowed = [a for a in env.accounts if a in chosen] if chosen else list(env.accounts)
    new = next((a for a in cap.with_room(allowed, "standard") if a not in taken), None)
    job.update(slots=slots, replaced_tasks=list(job.get("replaced_tasks") or []) + [task["id"]], updated=env.now)
    if new is not None:
        slot["replaced"] = list(slot.get("replaced") or []) + [old]
        slot["account"] = new
        M.note(job, env.now, "evaluator moved", run=job["run"], slot=slot["name"], frm=old, to=new, why=why[:200])
        spec = C.task(C.EVALUATE, flow.slot_key(job["insight_id"], job["run"], n, slot), task["payload"],
                      {"backends": [new]}, {"priority": task.get("priority"), "attrs": task.get("attrs") or {}})
        return [txn.put(M.job_key(job["insight_id"]), job, if_version=jv), txn.submit(spec)]
    if len(flow.active_slots(job)) <= 2:
        return []
    slot["dropped"] = True
    M.note(job, env.now, "evaluator left out", run=job["run"], slot=slot["name"], account=old, why=why[:200])
    return flow.decide_evals(env, jv, job)
