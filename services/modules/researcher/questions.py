"""Research questions: observing insights and sections, and applying ``researcher.generate_questions``.

**Observe** (:func:`propose_batch`): explorer insights (``insights/<id>``, not rejected) and revisions of
documenter sections (``sections/<id>`` at their ``rev``) not yet observed, the most recent first, at
most ``questions_batch`` of them, become one task (key ``researcher:questions:<hash of the ids>``)
about the numbers and concepts that recur in them. The batch is recorded (``state/questions``) in the
same transaction as the submission, and only one batch is in flight at a time, so a restart never
proposes an overlapping batch.

**Apply** (:func:`handle_questions`): store the new questions (one already stored, in any wording close
enough, is counted on the stored one: "Dedup" in :mod:`.model`), mark the items observed, end the batch,
and add the URLs the model proposed as sources (up to ``max_sources``). An unusable answer
(:func:`unusable_questions`) still marks its items observed and ends the batch; ``pause_after`` of them
in a row pause observing (``state/question_streak``, services/modules/pace.py) until ``fanoctl research
resume``, so a model whose answers are unusable is not asked again about every new insight.
"""
from __future__ import annotations

from typing import Any

from services.modules import dedup, pace, prompts
from services.modules.researcher import crossref, parsers
from services.modules.researcher import model as M
from services.modules.researcher.context import GENERATE_QUESTIONS, OBSERVED, Env, Task, answer_text, clip, partial
from services.modules.researcher.context import task as task_spec
from shared import txn


def observable(value: Any) -> bool:
    """Whether an observed record has something to research (text, and not rejected or a duplicate)."""
    if not isinstance(value, dict) or not isinstance(value.get("text"), str) or not value["text"].strip():
        return False
    return value.get("status") not in ("rejected", "duplicate")   # nothing to research in those


def propose_batch(env: Env) -> list[txn.Op]:
    """The ops proposing one ``generate_questions`` batch about the most recent items not yet observed
    (none while a batch is in flight, or when nothing is new)."""
    if env.store.get(M.K_QUESTION_BATCH)[1] is not None:
        return []  # one batch at a time: its key stays the same whatever arrives meanwhile
    if pace.paused(env.store.get(M.K_QUESTION_STREAK)[1]):
        return []  # its answers kept being unusable: until the operator resumes it
    seen = {key: value for key, _, value in env.store.scan("observed/")}
    fresh = []
    for ns, prefix in OBSERVED:
        for key, version, value in env.scan_ns(ns, prefix):
            ident = key[len(prefix):]
            if not ident or "/" in ident or not observable(value):
                continue
            obs = M.observation_id(ns, ident, value, version)
            if M.k_observed(ns, obs) in seen or M.legacy_observed(ns, value, seen.get(M.k_observed(ns, ident))):
                continue
            fresh.append({**value, "ns": ns, "id": ident, "obs": obs,
                          "version": M.observed_version(ns, value, version)})
    if not fresh:
        return []
    fresh.sort(key=lambda i: -M.recency(i["ns"], i))   # most recent first (stable: key order on ties)
    items = fresh[:env.settings.questions_batch]
    observed = [f"{i['ns']}/{i['obs']}" for i in items]
    spec = task_spec(GENERATE_QUESTIONS, M.key_questions(observed),
                     {"prompt": questions_prompt(env, items), "observed": observed,
                      "versions": [i["version"] for i in items]})
    return [txn.put(M.K_QUESTION_BATCH, spec, if_version=0), txn.submit(spec)]


def questions_prompt(env: Env, items: list[dict[str, Any]]) -> str:
    rec = crossref.recurring(items)
    material = []
    for i in items:
        if i["ns"] == "explorer":
            tags = ", ".join(map(str, i.get("tags") or [])) or "none"
            material.append(f"[insight {i['id']}, {i.get('status', '?')}] {clip(i['text'], 600)} (tags: {tags})")
        else:
            material.append(f"[section {i['id']}, revision {i['version']}: {i.get('title') or ''}] "
                            f"{clip(i['text'], 900)}")
    existing = sorted(env.records("questions/"), key=lambda q: -q.get("created", 0))[:20]
    return prompts.render(
        "researcher", "generate_questions",
        numbers=", ".join(f"{n} ({c}x)" for n, c in rec["numbers"]) or "none",
        concepts=", ".join(f"{n} ({c}x)" for n, c in rec["concepts"]) or "none",
        material="\n\n".join(material), existing="\n".join(f"- {q['question']}" for q in existing) or "none")


def handle_questions(env: Env, task: Task) -> list[txn.Op]:
    """Apply a ``generate_questions`` answer (``ParseError`` when it is unusable); a usable one ends a
    streak of unusable batches."""
    ops = questions_ops(env, task, parsers.parse_questions(answer_text(task)))
    sv, streak = env.store.get(M.K_QUESTION_STREAK)
    if isinstance(streak, dict) and streak.get("failures"):
        ops.append(txn.put(M.K_QUESTION_STREAK, pace.succeeded(streak), if_version=sv))
    return ops


def unusable_questions(env: Env, task: Task, error: str) -> list[txn.Op]:
    """An unusable batch: its items are observed all the same (no questions), the batch ends, and the
    streak of unusable batches grows (``pause_after`` in a row pause observing)."""
    sv, streak = env.store.get(M.K_QUESTION_STREAK)
    streak = pace.failed(streak, error, env.settings.pause_after, "the researcher's question batches",
                         "fanoctl research resume", env.now)
    return questions_ops(env, task, None) + [txn.put(M.K_QUESTION_STREAK, streak, if_version=sv)]


def questions_ops(env: Env, task: Task, parsed: dict[str, Any] | None) -> list[txn.Op]:
    """Store new questions (or none, for an unusable answer), mark the batch observed, end the batch."""
    payload, now = task.get("payload") or {}, env.now
    ops = []
    bv, batch = env.store.get(M.K_QUESTION_BATCH)
    if batch is not None and batch.get("key") == task["key"]:
        ops.append(txn.delete(M.K_QUESTION_BATCH, if_version=bv))
    versions = payload.get("versions") or []
    for i, item in enumerate(payload.get("observed") or []):
        ns, _, ident = item.partition("/")
        ops.append(txn.put(M.k_observed(ns, ident), {"version": versions[i] if i < len(versions) else None,
                                                       "at": now, "task_id": task["id"]}))
    if parsed is None:
        return ops
    corpus = {q["id"]: q["question"] for q in env.records("questions/")
              if isinstance(q, dict) and q.get("id") and isinstance(q.get("question"), str)}
    new: dict[str, dict[str, Any]] = {}     # qid -> question stored by this batch
    touched: dict[str, list[Any]] = {}      # key -> [version, record]: stored questions asked again
    added_sources: set[str] = set()
    for q in parsed["questions"]:
        qid = M.question_id(q["question"])
        hit = (qid, 1.0) if qid in corpus else dedup.lexical_duplicate(q["question"], corpus,
                                                                       env.settings.dedup_threshold)
        if hit is not None:
            # asked before (in other words, or by this batch): one record, the repeat counted on it
            canon = hit[0]
            rec = new.get(canon) or env.touch(touched, M.k_question(canon))
            if rec is None:
                continue   # (cannot happen: the corpus was read from the store)
            M.note_duplicate(rec, {"question": q["question"], "type": q["type"], "score": hit[1],
                                   "batch": task["key"], "at": now})
            qid = canon
        else:
            new[qid] = {"id": qid, **q, "batch": task["key"], "created": now}
            corpus[qid] = q["question"]
        for url in q["urls"]:
            try:
                sid = M.source_id(url)
            except ValueError:
                continue
            if sid in added_sources or env.source_count + len(added_sources) >= env.settings.max_sources:
                continue
            if env.store.get(M.k_source(sid))[1] is None:
                added_sources.add(sid)
                ops += M.add_source_ops(url, f"question:{qid}", now)[1]
    ops += [txn.put(M.k_question(qid), rec, if_version=0) for qid, rec in new.items()]
    ops += [txn.put(key, rec, if_version=v) for key, (v, rec) in touched.items()]
    return ops + partial(env, task, parsed["dropped"], "questions")
