"""Growing the document from blessed insights: the pipeline of one insight, evaluate -> draft ->
exposition -> append, started by a planning turn (:mod:`.planning`).

Task kinds, keys and payloads (every payload carries the ``prompt``; ids tell the simulated provider
what it is about)::

    documenter.evaluate     documenter.evaluate/<insight>/<run>/<slot>  {insight_id, run, evaluator}
                            (+ requires.backends = [account] when several accounts exist;
                            the key ends ``@<account>`` once the slot moved, :mod:`.seats`)
    documenter.draft        documenter.draft/<insight>/<run>/<round>    {insight_id, run, round, topic}
    documenter.exposition   documenter.exposition/<insight>/<run>/<round> {insight_id, run, round, reviewer}

A planning turn's ``INCORPORATE`` starts the insight's pipeline (:func:`start_job`), ``jobs/<insight>``::

    {"insight_id", "stage": "evaluate" | "draft" | "exposition" | "idle" | "needs_human" | "done" |
     "duplicate", "run": n (one per attempt), "disputes": n,
     "slots": [{"name", "account", "replaced"?: [account], "dropped"?: true}] (:mod:`.seats`),
     "replaced_tasks"?: [task id] (evaluations abandoned for lack of capacity, cancelled),
     "evals": {slot name: {"decision", "notes", "reasoning"}}, "round": 1 | 2, "draft": {...} | None,
     "notes": exposition revision notes | None, "similar": [[sid, score]], "section": sid | None,
     "last_reason", "history": [...], "updated"}

Cheap dedup against the current sections first (a duplicate is recorded, not dropped); then two or
three evaluators on different accounts must all answer INCLUDE; then a draft; then one exposition
review: APPROVE appends the section (new document version, concepts, ``incorporated/<insight>``),
REVISE gets one redraft, REJECT or a second REVISE fails. Any failed step (disagreement, rejection,
an unusable answer, a parked task) is a dispute; the insight may be planned again, and after
``max_disputes`` it waits for a human (``fanoctl document disputes`` / ``document retry``).

A result is applied only if it answers the pipeline's current question (same run, stage and round):
a late or replayed answer to an abandoned run changes nothing. If the explorer withdraws the blessing
while a pipeline runs (a user override), the pipeline stops without a dispute. Every task carries the
insight's priority as ``attrs.seed_priority`` (a planning turn: the highest it offers), ``attrs.backlog``
(blessed insights waiting) and the backlog boost as its priority offset (see :mod:`.settings`).
"""
from __future__ import annotations

import hashlib
from typing import Any

from services.modules import dedup
from services.modules.documenter import context as C
from services.modules.documenter import model as M
from services.modules.documenter.parsers import (
    parse_draft,
    parse_evaluation,
    parse_exposition,
)
from services.modules.documenter.settings import Settings
from shared import txn

MAX_ACTIVE = Settings.max_active       # defaults; ``[modules.documenter]`` max_active / max_disputes
MAX_DISPUTES = Settings.max_disputes
ACTIVE = ("evaluate", "draft", "exposition")


# --- reading ---------------------------------------------------------------------------------------------

def read_jobs(env: C.Env) -> dict[str, tuple[int, dict]]:
    """Every pipeline by insight id, read once per Env (:meth:`.context.Env.once`)."""
    return dict(env.once("jobs", lambda: {key.split("/", 1)[1]: (v, val) for key, v, val in env.store.scan("jobs/")
                                          if isinstance(val, dict)}))


def read_incorporated(env: C.Env) -> set[str]:
    return env.incorporated()


def candidates(env: C.Env, jobs=None, done=None) -> list[tuple[str, dict]]:
    """Blessed insights the planner may choose: those without a failed step first, then highest
    priority first (an insight that just failed is not offered at the top again at once, where it would
    use up its disputes in a row while the others wait)."""
    jobs = read_jobs(env) if jobs is None else jobs
    done = read_incorporated(env) if done is None else done
    out = [(i, ins) for i, ins in env.blessed().items()
           if i not in done and jobs.get(i, (0, {}))[1].get("stage", "idle") == "idle"]
    out.sort(key=lambda item: (int(jobs.get(item[0], (0, {}))[1].get("disputes") or 0),
                               -C.priority_of(item[1]), item[0]))
    return out


# --- the pipeline of one insight ------------------------------------------------------------------------

def panel(accounts: list[str], ident: str, run: int, size: int = 3) -> list[dict]:
    """``size`` (2 or 3) evaluation slots, on different accounts when there are several (spread by
    insight); a later run is a fresh panel (its slot names differ, so their verdicts are drawn anew)."""
    names = sorted(accounts)
    suffix = "" if run <= 1 else f"#{run}"
    if len(names) >= 2:
        k = min(max(2, size), len(names))
        start = int(hashlib.sha256(ident.encode()).hexdigest(), 16) % len(names)
        chosen = [names[(start + i) % len(names)] for i in range(k)]
        return [{"name": f"{a}{suffix}", "account": a} for a in chosen]
    return [{"name": f"evaluator-{n}{suffix}", "account": None} for n in (1, 2)]


def start_job(env: C.Env, ident: str, insight: dict, entry, task: dict | None) -> list[dict]:
    jv, stored = entry if entry else (0, {"insight_id": ident, "disputes": 0, "run": 0, "history": []})
    job: dict[str, Any] = dict(stored)   # a Job (model.py) once stored; built up here
    doc = M.read_doc(env.store)
    verdict, hits = dedup.classify(insight["text"], doc.texts())
    if verdict == "duplicate":
        job.update(stage="duplicate", section=hits[0][0], updated=env.now)
        M.note(job, env.now, "duplicate", of=hits[0][0])
        return [txn.put(M.job_key(ident), job, if_version=jv, working=True),  # finished: scratch from now on
                txn.put(M.incorporated_key(ident), {"insight_id": ident, "how": "duplicate", "section": hits[0][0],
                                                  "version": doc.version, "at": env.now, "run": job["run"]},
                      if_version=0)]
    run = int(job.get("run") or 0) + 1
    slots = panel(panel_accounts(env), ident, run, env.settings.evaluators)
    job.update(stage="evaluate", run=run, slots=slots, evals={}, round=1, draft=None, notes=None,
               similar=[list(h) for h in hits], section=None, updated=env.now)
    M.note(job, env.now, "planned", run=run, by=task["id"] if task else None)
    similar = "\n".join(f"[{sid}] {doc.sections[sid][1].get('title', '')}: "
                        f"{' '.join(doc.sections[sid][1].get('text', '').split())[:300]}"
                        for sid, _ in hits if sid in doc.sections) or "(none)"
    prompt = C.render("evaluate", outline=C.outline(doc), concepts=C.concepts(doc), similar=similar,
                      insight_id=ident, insight=C.insight_text(ident, insight))
    ops = [txn.put(M.job_key(ident), job, if_version=jv)]
    hints = env.hints(C.priority_of(insight))
    for n, slot in enumerate(slots, 1):
        requires = {"backends": [slot["account"]]} if slot["account"] else None
        payload = {"prompt": prompt, "insight_id": ident, "run": run, "evaluator": slot["name"]}
        ops.append(txn.submit(C.task(C.EVALUATE, slot_key(ident, run, n, slot), payload, requires, hints)))
    return ops


def panel_accounts(env: C.Env) -> list[str]:
    """The accounts a new evaluation panel is drawn from: ``panel_accounts`` (or every account); of
    those, the ones with standard room now or within ``member_patience`` when at least two have it."""
    chosen = env.settings.panel_accounts
    allowed = ([a for a in env.accounts if a in chosen] if chosen else list(env.accounts)) or list(env.accounts)
    cap = env.cap()
    if cap is not None and cap.known:
        ready = cap.usable(allowed, "standard", env.settings.member_patience)
        if len(ready) >= 2:
            return ready
    return allowed


def slot_key(ident: str, run: int, n: int, slot: dict) -> str:
    """The task key of evaluation slot ``n`` (1-based); a slot given to another account
    (:mod:`.seats`) carries ``@<account>``, so a late answer to its old task is stale."""
    key = C.task_key(C.EVALUATE, ident, run, n)
    return f"{key}@{slot['account']}" if slot.get("replaced") else key


def active_slots(job: dict) -> list[dict]:
    """The slots whose verdict counts (a slot left out for lack of capacity is ``dropped``)."""
    return [s for s in job.get("slots") or [] if not s.get("dropped")]


def _current(env: C.Env, task: dict, stage: str):
    """(v, job) if the task answers the insight's current question, else None."""
    p = task["payload"]
    jv, job = env.store.get(M.job_key(str(p.get("insight_id"))))
    if not isinstance(job, dict) or job.get("stage") != stage or job.get("run") != p.get("run"):
        return None
    if stage != "evaluate" and job.get("round") != p.get("round"):
        return None
    return jv, dict(job)


def _withdrawn(env: C.Env, jv: int, job: dict) -> list[dict] | None:
    """Ops that stop the pipeline if the explorer no longer offers the insight as blessed (a user
    override, say): not a dispute, the insight is simply no longer wanted; else None."""
    ins = env.insight(job["insight_id"])
    if ins is not None and ins.get("status") == "blessed":
        return None
    job.update(stage="idle", updated=env.now, last_reason="the insight is no longer blessed")
    M.note(job, env.now, "withdrawn", run=job.get("run"))
    return [txn.put(M.job_key(job["insight_id"]), job, if_version=jv)]


def dispute(job: dict, now: float, reason: str, limit: int = MAX_DISPUTES) -> dict:
    job["disputes"] = int(job.get("disputes") or 0) + 1
    job["stage"] = "needs_human" if job["disputes"] >= limit else "idle"
    job.update(last_reason=reason[:500], updated=now)
    M.note(job, now, "dispute", run=job.get("run"), reason=reason[:300], disputes=job["disputes"])
    return job


def handle_evaluate(env: C.Env, task: dict) -> list[dict]:
    cur = _current(env, task, "evaluate")
    slot = task["payload"].get("evaluator")
    if cur is None or slot in cur[1].get("evals", {}):
        return []
    jv, job = cur
    if not _slot_task(job, task):
        return []   # the slot moved to another account or was left out: a late answer to its old task
    if (stop := _withdrawn(env, jv, job)) is not None:
        return stop
    ev = parse_evaluation(C.answer_text(task))
    job["evals"] = {**job.get("evals", {}), slot: {"decision": ev.decision, "notes": ev.notes,
                                                   "reasoning": (ev.reasoning or "")[:1000], "task": task["id"]}}
    job["updated"] = env.now
    return decide_evals(env, jv, job)


def _slot_task(job: dict, task: dict) -> bool:
    """Whether ``task`` is the current task of a counted evaluation slot (not one it had before)."""
    name = (task.get("payload") or {}).get("evaluator")
    for n, seat in enumerate(job.get("slots") or [], 1):
        if seat["name"] == name:
            return not seat.get("dropped") and task["key"] == slot_key(job["insight_id"], job["run"], n, seat)
    return False


def decide_evals(env: C.Env, jv: int, job: dict) -> list[dict]:
    """Once every counted slot has its verdict: all INCLUDE -> draft, else a dispute; before, just store."""
    names = [s["name"] for s in active_slots(job)]
    if any(n not in job.get("evals", {}) for n in names):
        return [txn.put(M.job_key(job["insight_id"]), job, if_version=jv)]
    votes = [job["evals"][n]["decision"] for n in names]
    if all(d == "INCLUDE" for d in votes):
        M.note(job, env.now, "evaluated", run=job["run"], votes=votes)
        return _draft(env, jv, job)
    reason = f"evaluation: {votes.count('INCLUDE')} INCLUDE, {votes.count('EXCLUDE')} EXCLUDE"
    job = dispute(job, env.now, reason, env.settings.max_disputes)
    return [txn.put(M.job_key(job["insight_id"]), job, if_version=jv)]


def _insight(env: C.Env, ident: str) -> dict:
    return env.insight(ident) or {"text": f"(insight {ident} is no longer readable)"}


def _draft(env: C.Env, jv: int, job: dict) -> list[dict]:
    ident, doc = job["insight_id"], M.read_doc(env.store)
    insight = _insight(env, ident)
    job.update(stage="draft", updated=env.now)
    revision = ""
    if job.get("round", 1) > 1 and job.get("draft"):
        revision = (f"\nA REVIEWER ASKED FOR A REVISION OF THIS EARLIER DRAFT:\n{job['draft']['text']}\n\n"
                    f"REVISION NOTES:\n{job.get('notes')}\n")
    sections = doc.ordered()
    prompt = C.render("draft", outline=C.outline(doc), concepts=C.concepts(doc),
                      previous=C.section_block(sections[-1] if sections else None),
                      insight=C.insight_text(ident, insight), revision=revision)
    return _job_step(env, jv, job, insight, C.DRAFT, prompt, topic=" ".join(insight["text"].split())[:80])


def _job_step(env: C.Env, jv: int, job: dict, insight: dict, kind: str, prompt: str, **extra) -> list[dict]:
    """Ops that save ``job`` (version-checked) and submit its next step: a ``kind`` task for this run and
    round, at the insight's priority."""
    ident = job["insight_id"]
    payload = {"prompt": prompt, "insight_id": ident, "run": job["run"], "round": job["round"], **extra}
    spec = C.task(kind, C.task_key(kind, ident, job["run"], job["round"]), payload, None,
                  env.hints(C.priority_of(insight)))
    return [txn.put(M.job_key(ident), job, if_version=jv), txn.submit(spec)]


def handle_draft(env: C.Env, task: dict) -> list[dict]:
    cur = _current(env, task, "draft")
    if cur is None:
        return []
    jv, job = cur
    if (stop := _withdrawn(env, jv, job)) is not None:
        return stop
    draft = parse_draft(C.answer_text(task))
    ident = job["insight_id"]
    insight = _insight(env, ident)
    title = draft.title or " ".join(insight["text"].split()[:8]).rstrip(".,;:")
    job.update(stage="exposition", updated=env.now,
               draft={"title": title[:200], "text": draft.text, "establishes": draft.establishes,
                      "requires": draft.requires, "diagram": draft.diagram, "task": task["id"]})
    doc = M.read_doc(env.store)
    prompt = C.render("exposition", outline=C.outline(doc), concepts=C.concepts(doc),
                      insight=C.insight_text(ident, insight), draft=f"## {title}\n\n{draft.text}",
                      establishes=", ".join(draft.establishes) or "none", requires=", ".join(draft.requires) or "none")
    return _job_step(env, jv, job, insight, C.EXPOSITION, prompt, reviewer=f"exposition-{job['round']}")


def handle_exposition(env: C.Env, task: dict) -> list[dict]:
    cur = _current(env, task, "exposition")
    if cur is None:
        return []
    jv, job = cur
    if (stop := _withdrawn(env, jv, job)) is not None:
        return stop
    review = parse_exposition(C.answer_text(task))
    ident = job["insight_id"]
    if review.decision == "REVISE" and job.get("round", 1) == 1:
        job.update(round=2, notes=review.notes)
        M.note(job, env.now, "revise", run=job["run"], notes=(review.notes or "")[:300])
        return _draft(env, jv, job)
    if review.decision != "APPROVE":
        reason = f"exposition: {review.decision}" + (f" ({review.notes[:200]})" if review.notes else "")
        return [txn.put(M.job_key(ident), dispute(job, env.now, reason, env.settings.max_disputes), if_version=jv)]
    return append(env, jv, job, task)


def append(env: C.Env, jv: int, job: dict, task: dict) -> list[dict]:
    """The approved draft becomes the last section: one new document version, concepts, incorporation."""
    ident = job["insight_id"]
    iv, inc = env.store.get(M.incorporated_key(ident))
    if inc is not None:
        return []   # already in (cannot happen through the pipeline; a human may have recorded it)
    doc = M.read_doc(env.store)
    insight = _insight(env, ident)
    verdict, hits = dedup.classify(insight["text"], doc.texts())
    if verdict == "duplicate":   # another pipeline wrote the same claim while this one ran
        job.update(stage="duplicate", section=hits[0][0], updated=env.now)
        M.note(job, env.now, "duplicate", of=hits[0][0])
        return [txn.put(M.job_key(ident), job, if_version=jv, working=True),  # finished: scratch from now on
                txn.put(M.incorporated_key(ident), {"insight_id": ident, "how": "duplicate", "section": hits[0][0],
                                                  "version": doc.version, "at": env.now, "run": job["run"]},
                      if_version=0)]
    draft, sid = job["draft"], M.new_sid(doc)
    ops, version = M.commit(doc, {sid: {"title": draft["title"], "text": draft["text"],
                                        "establishes": draft["establishes"], "requires": draft["requires"],
                                        "source": {"kind": "insight", "ref": ident}}},
                            {"kind": "insight", "ref": ident, "task": task["id"]},
                            f"incorporate insight {ident} as {sid}: {draft['title'][:80]}", env.now)
    job.update(stage="done", section=sid, updated=env.now)
    M.note(job, env.now, "incorporated", run=job["run"], section=sid, version=version)
    return ops + [txn.put(M.job_key(ident), job, if_version=jv, working=True),  # finished: scratch from now on
                  txn.put(M.incorporated_key(ident), {"insight_id": ident, "how": "section", "section": sid,
                                                    "version": version, "at": env.now, "run": job["run"]},
                        if_version=0)]


# --- failures -------------------------------------------------------------------------------------------

def unusable(env: C.Env, task: dict, error: str) -> list[dict]:
    """A pipeline task whose answer cannot be used (or that was parked or cancelled): a dispute, unless
    it answers a question the pipeline no longer asks."""
    kind = task["kind"]
    stage = {C.EVALUATE: "evaluate", C.DRAFT: "draft", C.EXPOSITION: "exposition"}.get(kind)
    cur = _current(env, task, stage) if stage else None
    if cur is None or (kind == C.EVALUATE and not _slot_task(cur[1], task)):
        return []
    jv, job = cur
    return [txn.put(M.job_key(job["insight_id"]), dispute(job, env.now, f"{stage}: {error}", env.settings.max_disputes),
                  if_version=jv)]
