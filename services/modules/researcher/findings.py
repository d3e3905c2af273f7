"""Findings: applying ``researcher.extract_findings``, cross-references and automatic promotions.

Findings are stored with deterministic ids (``findings/<fid>``); one already stored, from this source or
another, in any wording close enough, is counted on the stored one instead ("Dedup" in :mod:`.model`),
and its numbers and concepts still count for this source's domain. All of them are folded into the
cross-reference index (:mod:`.crossref`) and, when ``auto_promote`` is on, confident ones are promoted to
seeds (``promotions/<fid>``, the contract the explorer reads). The source ends ``extracted`` and its page
text becomes working data; an unusable answer ends it ``extraction_failed``.
"""
from __future__ import annotations

from typing import Any

from services.modules import dedup
from services.modules.researcher import crossref, parsers
from services.modules.researcher import model as M
from services.modules.researcher.context import Env, Task, answer_text, partial
from services.modules.researcher.evaluate import content_done
from shared import txn


def handle_findings(env: Env, task: Task) -> list[txn.Op]:
    """Apply an ``extract_findings`` answer (``ParseError`` when it is unusable)."""
    return findings_ops(env, task, parsers.parse_findings(answer_text(task)))


def unusable_findings(env: Env, task: Task, error: str) -> list[txn.Op]:
    """An unusable extraction ends its (trusted) source ``extraction_failed``."""
    sid = (task.get("payload") or {}).get("source_id", "")
    sv, src = env.store.get(M.k_source(sid))
    if src is not None and src.get("status") == "trusted":
        return [txn.put(M.k_source(sid), dict(src, status="extraction_failed",
                                              error={"reason": "unusable", "message": error}), if_version=sv)]
    return []


def findings_ops(env: Env, task: Task, parsed: dict[str, Any]) -> list[txn.Op]:
    payload, now = task.get("payload") or {}, env.now
    sid = payload.get("source_id", "")
    sv, src = env.store.get(M.k_source(sid))
    if src is None or src.get("status") != "trusted":
        return []
    questions = env.records("questions/")
    corpus = {v["id"]: v["summary"] for v in env.records("findings/")
              if isinstance(v, dict) and v.get("id") and isinstance(v.get("summary"), str)}
    findings: list[dict[str, Any]] = []
    ops: list[txn.Op] = []
    evidence: list[dict[str, Any]] = []
    touched: dict[str, list[Any]] = {}      # key -> [version, record]: stored findings found again
    duplicates = 0
    for f in parsed["findings"]:
        fid = M.finding_id(sid, f["summary"])
        status = "kept" if f["confidence"] >= env.settings.min_confidence else "low_confidence"
        hit = (fid, 1.0) if fid in corpus else dedup.lexical_duplicate(f["summary"], corpus,
                                                                       env.settings.dedup_threshold)
        if hit is not None:
            # the same finding again (reworded, or from another source): counted on the stored one;
            # its numbers and concepts still count for this source's domain in the cross-references
            canon = hit[0]
            rec = next((x for x in findings if x["id"] == canon), None) or env.touch(touched, M.k_finding(canon))
            if rec is None:
                continue   # (cannot happen: the corpus was read from the store)
            M.note_duplicate(rec, {"source_id": sid, "url": src["url"], "domain": src["domain"],
                                   "summary": f["summary"], "quote": str(f.get("quote") or "")[:300],
                                   "type": f["type"], "confidence": f["confidence"], "score": hit[1],
                                   "task_id": task["id"], "at": now})
            evidence.append({"id": canon, "domain": src["domain"], "status": status,
                             "numbers": f.get("numbers") or [], "concepts": f.get("concepts") or []})
            duplicates += 1
            continue
        findings.append({"id": fid, "source_id": sid, "url": src["url"], "domain": src["domain"], **f,
                         "status": status, "related_questions": related(f, questions),
                         "extracted_at": now, "task_id": task["id"]})
        corpus[fid] = f["summary"]
    ops += [txn.put(M.k_finding(f["id"]), f, if_version=0) for f in findings]
    ops += [txn.put(key, rec, if_version=v) for key, (v, rec) in touched.items()]
    existing = {}
    versions = {}
    for key in crossref.keys_for(findings + evidence):
        versions[key], existing[key] = env.store.get(key)
    changed = crossref.merge(existing, findings + evidence, now)
    ops += [txn.put(key, rec, if_version=versions[key]) for key, rec in changed.items()]
    if env.settings.auto_promote:
        ops += auto_promotions(env, findings, {**existing, **changed}, changed, questions)
    src = dict(src, status="extracted", findings=len(findings), duplicates=duplicates, numbers=parsed["numbers"],
               extracted_at=now, error=None)
    ops.append(txn.put(M.k_source(sid), src, if_version=sv))
    return ops + content_done(env, sid) + partial(env, task, parsed["dropped"], "findings")


def related(finding: dict[str, Any], questions: list[dict[str, Any]], limit: int = 3) -> list[str]:
    """The ids of the questions sharing the most numbers and concepts with ``finding`` (then by priority)."""
    nums = set(finding.get("numbers") or [])
    cons = {M.concept_slug(c) for c in finding.get("concepts") or []}
    scored = []
    for q in questions:
        overlap = (len(nums & set(q.get("numbers") or []))
                   + len(cons & {M.concept_slug(c) for c in q.get("concepts") or []}))
        if overlap:
            scored.append((-overlap, -q.get("priority", 5), q["id"]))
    return [qid for *_, qid in sorted(scored)[:limit]]


def auto_promotions(env: Env, findings: list[dict[str, Any]], index: dict[str, Any], changed: dict[str, Any],
                    questions: list[dict[str, Any]]) -> list[txn.Op]:
    """Promote confident findings (cross-referenced ones, by default). A cross-reference that just
    became active can qualify findings extracted earlier, so those are considered too."""
    s = env.settings
    candidates = {f["id"]: f for f in findings}
    for rec in changed.values():
        for fid in rec["findings"] if rec.get("active") else ():
            if fid not in candidates and len(candidates) < 50:
                old = env.store.get(M.k_finding(fid))[1]
                if old is not None:
                    candidates[fid] = old
    by_id = {q["id"]: q for q in questions}
    ops = []
    for f in candidates.values():
        if f.get("status") != "kept" or f["confidence"] < s.auto_promote_min_confidence:
            continue
        if s.auto_promote_requires_crossref and not crossref.is_crossreferenced(f, index):
            continue
        if env.store.get(M.k_promotion(f["id"]))[1] is not None:
            continue
        related_qs = [by_id[q] for q in f.get("related_questions") or [] if q in by_id]
        ops.append(txn.put(M.k_promotion(f["id"]), M.promotion(f, "auto", env.now,
                                                               question=related_qs[0] if related_qs else None),
                           if_version=0))
    return ops
