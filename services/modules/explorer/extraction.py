"""From a ready thread to insights: synthesis, panel extraction, consolidation, dedup.

Pure functions: task builders (deterministic in stored state, so re-proposing is harmless) and the
record builders the service commits. The panel is one ``explorer.extract`` task per available account
(``requires.backends = [account]``), then one ``explorer.consolidate`` once every member has settled
(or ``extract_patience`` has passed with at least one proposal in).

Dedup runs on each consolidated insight against the corpus of pending, interesting and blessed insights,
the seeds, and the documenter's sections (``documenter`` namespace, ``sections/<id>`` with a ``text``
field, read defensively): exact and lexical checks first (:mod:`services.modules.dedup`), an LLM check
(``explorer.dedup``) only for close candidates. A duplicate is kept as an insight with status
``duplicate`` and ``duplicate_of``; nothing is dropped silently.
"""
from __future__ import annotations

from services.modules import dedup as D
from services.modules import prompts
from services.modules.explorer import model as M
from services.modules.explorer.threads import axioms_text, exchanges_text

CORPUS_STATUSES = ("pending", "interesting", "blessed")


def insight_view(_key: str, value: object) -> dict | None:
    """What the explorer's steps read of a stored insight (its service keeps every insight cut to this:
    services/modules/store.py, KeptPrefix): the text only where dedup or a prompt reads it, the dedup
    record only while it is pending. Everything else (versions, review outcome, overrides) stays in the
    broker."""
    if not isinstance(value, dict) or "id" not in value:
        return None
    status = value.get("status")
    view = {k: value.get(k) for k in ("id", "status", "tags", "blessed_at", "priority", "queued_priority")}
    if status in CORPUS_STATUSES:
        view["text"] = value.get("text")
    if status == "pending":
        view["dedup"] = value.get("dedup")
    return view


def blessed_list(insights: list[dict], limit: int = 40) -> str:
    """The ``limit`` most recently blessed insights (key order would favour old threads' insights)."""
    blessed = [i for i in insights if i.get("status") == "blessed"]
    rows = sorted(blessed, key=lambda i: (i.get("blessed_at") or 0.0, i["id"]))[-limit:]
    return "\n".join(f"- [{i['id']}] [{', '.join(i.get('tags') or [])}]: {i['text'][:200]}"
                     for i in rows) or "(none yet)"


def blessed_ids(insights: list[dict]) -> list[str]:
    return [i["id"] for i in insights if i.get("status") == "blessed"]


def synthesis_task(thread: dict, seeds: list[dict], exchanges: list[dict], settings: M.ExplorerSettings) -> dict:
    mode, fallback = settings.deep_for("synthesis")
    requires = {"mode": mode, "deep_fallback": fallback} if mode == "deep" else {}
    payload = {"thread_id": thread["id"], "prompt": prompts.render(
        M.MODULE, "synthesis", axioms=axioms_text(seeds), seed_type=thread["seed_type"].upper(),
        seed_text=thread["seed_text"], exchanges=exchanges_text(exchanges, settings.synthesis_exchanges))}
    retry = int(thread.get("attempt", 0))
    if retry:
        payload["retry"] = retry
    return M.task_spec(M.thread_task_key(thread["id"], "synthesis", retry), M.SYNTHESIS, payload,
                       thread.get("priority"), requires)


def extract_task(thread: dict, account: str, synthesis: dict, exchanges: list[dict], insights: list[dict],
                 settings: M.ExplorerSettings, retry: int = 0) -> dict:
    payload = {"thread_id": thread["id"], "extractor": account, "prompt": prompts.render(
        M.MODULE, "extract", seed_text=thread["seed_text"], title=synthesis.get("title", ""),
        synthesis=synthesis.get("content", ""), exchanges=exchanges_text(exchanges, settings.extraction_exchanges),
        blessed=blessed_list(insights), max_proposals=settings.max_proposals)}
    if retry:
        payload["retry"] = retry
    return M.task_spec(M.thread_task_key(thread["id"], f"extract:{account}", retry), M.EXTRACT, payload,
                       thread.get("priority"), {"backends": [account]})


def proposals_text(proposals: list[dict]) -> str:
    parts = []
    for p in proposals:
        for b in p.get("blocks") or []:
            s = b.get("scores") or {}
            scores = ", ".join(f"{k}={s.get(k) if s.get(k) is not None else '-'}"
                               for k in ("impact", "intuition", "surprise"))
            parts.append(f"INSIGHT: {b['text']}\n(proposed by {p['account']}; scores {scores})")
    return "\n\n".join(parts) or "(no proposals)"


def consolidate_task(thread: dict, proposals: list[dict], insights: list[dict], settings: M.ExplorerSettings) -> dict:
    retry = int(thread.get("attempt", 0))
    payload = {"thread_id": thread["id"], "blessed_ids": blessed_ids(insights), "prompt": prompts.render(
        M.MODULE, "consolidate", seed_text=thread["seed_text"], proposals=proposals_text(proposals),
        blessed=blessed_list(insights), max_final=settings.max_final_insights)}
    if retry:
        payload["retry"] = retry
    return M.task_spec(M.thread_task_key(thread["id"], "consolidate", retry), M.CONSOLIDATE, payload,
                       thread.get("priority"))


def corpus(insights: list[dict], seeds: list[dict], sections: list[tuple[str, object]]) -> dict[str, str]:
    """Known content by id: insights pending/interesting/blessed, seeds (``seed:<id>``) and documented
    sections (``section:<id>``; values without a text are skipped)."""
    out = {i["id"]: i["text"] for i in insights if i.get("status") in CORPUS_STATUSES and i.get("text")}
    out.update({f"seed:{s['id']}": s["text"] for s in seeds if s.get("text")})
    for key, value in sections:
        text = value.get("text") if isinstance(value, dict) else None
        if isinstance(text, str) and text.strip():
            out[f"section:{key.split('/', 1)[-1]}"] = text
    return out


def new_insights(thread: dict, parsed: list[dict], known: dict[str, str], task_id: int, now: float) -> list[dict]:
    """Insight records for the consolidated claims, each classified against ``known`` and the ones before
    it in the batch (so two proposals of one claim are caught too)."""
    known = dict(known)
    out = []
    for n, item in enumerate(parsed, 1):
        iid = M.insight_id(thread["id"], n)
        verdict, cands = D.classify(item["text"], known)
        ins = {"id": iid, "text": item["text"], "version": 1,
               "versions": [{"version": 1, "text": item["text"], "by": "consolidation", "round": 0, "at": now}],
               "tags": item["tags"], "confidence": item["confidence"], "thread_id": thread["id"],
               "seed_id": thread["seed_id"], "proposed_by": item["proposed_by"], "depends_on": item["depends_on"],
               "unresolved_depends": item["unresolved_depends"], "status": "pending", "disputed": False,
               "priority": int(thread.get("priority", 5)), "queued_priority": int(thread.get("priority", 5)),
               "duplicate_of": None,
               "dedup": {"verdict": verdict, "candidates": [[c, s] for c, s in cands], "llm": None},
               "outcome": None, "decided_by": None, "overrides": [], "blessed_at": None, "last_error": None,
               "created_at": now, "updated_at": now, "task_id": task_id}
        if verdict == "duplicate":
            ins["status"] = "duplicate"
            ins["duplicate_of"] = cands[0][0]
        else:
            known[iid] = item["text"]
        out.append(ins)
    return out


def dedup_task(insight: dict, known: dict[str, str], retry: int = 0) -> dict:
    cands = [c for c, _ in insight["dedup"]["candidates"]]
    listing = "\n".join(f"{n}. [{c}] {known.get(c, '(no longer available)')[:300]}" for n, c in enumerate(cands, 1))
    payload = {"insight_id": insight["id"], "candidates": cands,
               "prompt": prompts.render(M.MODULE, "dedup", text=insight["text"][:800], candidates=listing)}
    if retry:
        payload["retry"] = retry
    return M.task_spec(M.insight_task_key(insight["id"], "dedup", retry), M.DEDUP, payload, insight.get("priority"))
