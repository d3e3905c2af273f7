"""What the panel's research pages (and ``fanoctl insights ls|show``) show of the modules' namespaces, read
through a broker client. Layouts: services/modules/explorer/model.py, services/modules/documenter/model.py,
services/modules/researcher/model.py.

* :func:`insight_rows` -> ``{"insights": [Insight + {"shown": SHOWN, "stage": review stage | None}],
  "counts": {SHOWN: n}}``; ``SHOWN`` is how the panel groups an insight: ``pending`` (not reviewed yet),
  ``reviewing`` (its review is under way), ``blessed``, ``interesting``, ``rejected``, ``duplicate``; and
  the ``disputed`` filter takes the insights whose decision was a split (any status);
* :func:`insight_view` -> ``{"insight", "review", "thread", "sections": [ids of document sections made
  from it]}``;
* :func:`document_view` -> ``{"version", "updated", "sections": [Section + {"provenance", "comments"}],
  "comments": [Comment not attached to a current section]}``; a section's ``provenance`` is
  ``{"insight": Insight | None, "thread_id", "revisions": [{"rev", "at", "cause"}], "comment_ids"}``;
* :func:`questions` -> ``[Question]`` highest priority first, newest first among equals;
  :func:`sources` -> ``[Source]`` in the order they were added; :func:`findings` -> ``[Finding +
  {"promoted": bool, "crossrefs": [crossref keys]}]``, most confident first (``fanoctl research
  questions|sources|findings`` show the same);
* :func:`page` -> ``(rows, next cursor | None)``: one page of a sorted list, continuing after an id.
"""
from __future__ import annotations

from typing import Any

from services.modules.documenter import model as DM
from services.modules.explorer import model as XM
from services.modules.researcher import model as RM
from services.modules.store import Store

SHOWN = ("pending", "reviewing", "blessed", "interesting", "rejected", "duplicate")
OPEN_REVIEW = ("done", "stopped")     # review stages after which a pending insight is no longer "reviewing"


def shown_status(insight: dict, stage: str | None) -> str:
    status = insight.get("status") or "pending"
    if status == "pending" and stage and stage not in OPEN_REVIEW:
        return "reviewing"
    return status if status in SHOWN else "pending"


def review_stages(client) -> dict[str, str | None]:
    """insight id -> the stage of its review."""
    return {str(r.get("insight_id")): r.get("stage") for r in Store(client, XM.MODULE).records("reviews/")}


def insight_rows(client, status: str | None = None, thread: str | None = None, text: str | None = None,
                 disputed: bool = False, stages: dict[str, str | None] | None = None,
                 insights: list[dict] | None = None) -> dict:
    """Every insight that passes the filters (``status`` one of :data:`SHOWN`; ``text`` a case-insensitive
    substring of the wording or the id), newest first, with the counts per group over all insights.
    ``stages``: :func:`review_stages` and ``insights``: the insight records, as read a moment ago (read now
    when None)."""
    stages = review_stages(client) if stages is None else stages
    if insights is None:
        insights = Store(client, XM.MODULE).records("insights/")
    needle = (text or "").lower().strip()
    counts = dict.fromkeys(SHOWN, 0)
    counts["disputed"] = 0
    rows = []
    for ins in insights:
        stage = stages.get(str(ins.get("id")))
        shown = shown_status(ins, stage)
        counts[shown] += 1
        counts["disputed"] += bool(ins.get("disputed"))
        if status is not None and shown != status:
            continue
        if disputed and not ins.get("disputed"):
            continue
        if thread is not None and ins.get("thread_id") != thread:
            continue
        if needle and needle not in str(ins.get("text", "")).lower() and needle not in str(ins.get("id", "")):
            continue
        rows.append(dict(ins, shown=shown, stage=stage))
    rows.sort(key=lambda i: (-(i.get("created_at") or 0), i.get("id", "")))
    return {"insights": rows, "counts": counts}


def insight_view(client, insight_id: str) -> dict:
    """An insight with its review (every round), its thread and the document sections made from it
    (``NOT_FOUND`` if there is no such insight)."""
    store = Store(client, XM.MODULE)
    _, ins = store.must(XM.insight_key(insight_id), "insight", insight_id)
    review = store.get(XM.review_key(insight_id))[1]
    thread = store.get(XM.thread_key(ins["thread_id"]))[1] if ins.get("thread_id") else None
    doc = Store(client, "documenter")
    made = {"kind": "insight", "ref": insight_id}
    sections = [s["id"] for s in doc.records("sections/")
                if {k: (s.get("source") or {}).get(k) for k in made} == made]
    return {"insight": ins, "review": review if isinstance(review, dict) else None,
            "thread": thread if isinstance(thread, dict) else None, "sections": sections}


def document_view(client) -> dict:
    """The current document with, for each section, where it came from and its comments."""
    store = Store(client, "documenter")
    doc = DM.read_doc(store)
    comments: dict[str, list[dict]] = {}
    for c in store.records("comments/"):
        comments.setdefault(str(c.get("section")), []).append(c)
    revisions: dict[str, list[dict]] = {}
    for r in store.records("revisions/"):
        revisions.setdefault(str(r.get("sid")), []).append({"rev": r.get("rev"), "at": r.get("at"),
                                                            "cause": r.get("cause") or {}})
    explorer = Store(client, XM.MODULE)
    sections = []
    for sec in doc.ordered():
        source: Any = sec.get("source") or {}
        insight = None
        if source.get("kind") == "insight" and source.get("ref"):
            insight = explorer.get(XM.insight_key(str(source["ref"])))[1]
        revs = revisions.get(sec["id"], [])
        prov = {"source": source, "insight": insight if isinstance(insight, dict) else None,
                "thread_id": insight.get("thread_id") if isinstance(insight, dict) else None,
                "revisions": revs,
                "comment_ids": [r["cause"].get("ref") for r in revs if r["cause"].get("kind") == "comment"]}
        sections.append(dict(sec, provenance=prov, comments=comments.pop(sec["id"], [])))
    orphans = [c for cs in comments.values() for c in cs]
    return {"version": doc.version, "updated": doc.head.get("updated"), "sections": sections, "comments": orphans}


def page(rows: list[dict], after: str | None, limit: int, key: str = "id") -> tuple[list[dict], Any]:
    """``limit`` rows following the row whose ``key`` is ``after`` (from the start if None or gone), and
    the cursor of the next page (None on the last)."""
    start = 0
    if after is not None:
        for i, row in enumerate(rows):
            if str(row.get(key)) == after:
                start = i + 1
                break
    chunk = rows[start:start + limit]
    more = start + limit < len(rows)
    return chunk, (chunk[-1].get(key) if more and chunk else None)


# --- the researcher -----------------------------------------------------------------------------------------

def questions(client) -> list[dict]:
    rows = Store(client, RM.NS).records("questions/")
    return sorted(rows, key=lambda q: (-(q.get("priority") or 5), -(q.get("created") or 0)))


def sources(client, status: str | None = None) -> list[dict]:
    rows = [s for s in Store(client, RM.NS).records("sources/") if status is None or s.get("status") == status]
    return sorted(rows, key=lambda s: (s.get("added") or 0, s.get("id", "")))


def findings(client, source: str | None = None) -> list[dict]:
    """``source``: only the findings of sources whose id starts with it."""
    store = Store(client, RM.NS)
    promoted = {k.split("/", 1)[1] for k, _, _ in store.scan("promotions/")}
    refs: dict[str, list[str]] = {}
    for key, _, rec in store.scan("crossrefs/"):
        if isinstance(rec, dict) and rec.get("active"):
            for fid in rec.get("findings") or []:
                refs.setdefault(fid, []).append(key)
    rows = [dict(f, promoted=f["id"] in promoted, crossrefs=sorted(refs.get(f["id"], [])))
            for f in store.records("findings/") if not source or str(f.get("source_id", "")).startswith(source)]
    return sorted(rows, key=lambda f: (-(f.get("confidence") or 0), f.get("id", "")))
