"""Research records for the web panel's research pages, written straight into a real broker (the shapes of
services/modules/explorer/model.py, services/modules/documenter/model.py, services/modules/researcher/model.py).

:func:`plant` writes ``n`` insights (a mix of every status, a review with rounds for most), a document of a
few sections made from blessed insights (several versions), comments, researcher questions, sources and
findings; ``payload`` is put into every text a model would have written, so a test can check it is shown
as text and never run. Used by tests/integration/test_web_research.py and
tests/integration/test_web_research_browser.py (ops/bench_web.py fills larger records of its own).
"""
from __future__ import annotations

from typing import Any

from services.modules.documenter import model as DM
from services.modules.explorer import model as XM
from services.modules.researcher import model as RM
from services.modules.store import Store
from shared import txn

STATUSES = ("pending", "pending", "blessed", "interesting", "rejected", "pending", "blessed", "duplicate")
CHUNK = 200


def insight_id(n: int) -> str:
    return f"fano-plane.t{n // 10 + 1}.i{n % 10 + 1}"


def _review(iid: str, n: int, stage: str, payload: str, now: float) -> dict[str, Any]:
    def response(who: str, rating: str) -> dict[str, Any]:
        return {"rating": rating, "backend": f"{who}-sim", "mode": "standard", "at": now, "confidence": "high",
                "reasoning": f"Reviewer {who} on $|PG(2,2)| = 7$. {payload}",
                "mathematical_verification": "Counting flags: $7 \\cdot 3 = 21$.",
                "proposed_modification": None if n % 3 else f"Say it with $\\mathbb{{F}}_2^3$. {payload}"}
    panel = [{"reviewer": r, "account": f"{r}-sim"} for r in ("chatgpt", "gemini", "claude")]
    rounds = {"1": {"version": 1, "responses": {"chatgpt": response("chatgpt", "bless"),
                                                "gemini": response("gemini", "bless" if n % 2 else "reject"),
                                                "claude": response("claude", "interesting")},
                    "outcome": {"kind": "split", "rating": None, "counts": {"bless": 1}}}}
    return {"insight_id": iid, "panel": panel, "stage": stage, "rounds": rounds,
            "mind_changes": [{"reviewer": "gemini", "round": 2, "from": "reject", "to": "bless", "reason": payload}],
            "math": {"verdict": "verified", "claims": [{"claim": "$7 = 2^3 - 1$", "verdict": "verified"}]},
            "outcome": None if stage != "done" else {"rating": "bless", "status": "blessed", "round": 1},
            "created_at": now, "updated_at": now}


def plant(client, n: int = 30, payload: str = "", now: float = 1_700_000_000.0, sections: int = 3,
          reviews: bool = True) -> dict:
    """Write the records (``reviews`` False: no review records, for a tree whose running explorer would
    take planted reviews up); returns ``{"insights": [ids], "blessed": [ids], "sections": [sids], "version"}``."""
    ops: list[dict] = []
    ids, blessed = [], []

    def flush() -> None:
        if ops:
            client.txn(XM.MODULE, list(ops))
            ops.clear()
    for k in range(n):
        iid = insight_id(k)
        status = STATUSES[k % len(STATUSES)]
        text = f"Insight {k}: the Fano plane has $7$ points and $$7 \\cdot 3 = 21$$ flags. {payload}"
        ins = {"id": iid, "text": text,
               "version": 1, "versions": [{"version": 1, "text": f"Insight {k}.", "by": "panel", "round": 0,
                                           "at": now}],
               "tags": ["fano", "counting"], "confidence": "high", "thread_id": iid.rsplit(".", 1)[0],
               "seed_id": "fano-plane", "proposed_by": ["chatgpt-sim"], "depends_on": [], "status": status,
               "disputed": k % 7 == 3, "priority": 5, "created_at": now + k, "updated_at": now + k,
               "blessed_at": now + k if status == "blessed" else None}
        ops.append(txn.put(XM.insight_key(iid), ins))
        if reviews and k % 4 != 0:   # three in four were reviewed; of the pending ones, some are under review now
            stage = "round2" if status == "pending" else "done"
            ops.append(txn.put(XM.review_key(iid), _review(iid, k, stage, payload, now)))
        ids.append(iid)
        if status == "blessed":
            blessed.append(iid)
        if len(ops) >= CHUNK:
            flush()
    threads = sorted({i.rsplit(".", 1)[0] for i in ids})
    for tid in threads:
        ops.append(txn.put(XM.thread_key(tid), {"id": tid, "seed_id": "fano-plane", "status": "extracted",
                                                "priority": 5, "seed_text": f"Why seven? {payload}",
                                                "exchanges": 4, "created_at": now}))
        if len(ops) >= CHUNK:
            flush()
    flush()
    sids = _document(client, blessed[:sections], payload, now)
    _research(client, payload, now)
    return {"insights": ids, "blessed": blessed, "sections": sids,
            "version": DM.read_doc(Store(client, "documenter")).version}


def _document(client, blessed: list[str], payload: str, now: float) -> list[str]:
    store = Store(client, "documenter")
    sids = []
    for k, iid in enumerate(blessed):
        sid = f"s{k + 1:04d}"
        doc = DM.read_doc(store)
        change = {"title": f"Section {k + 1}: incidence", "establishes": [f"concept {k}"], "requires": [],
                  "text": (f"Every line of the Fano plane holds three points, and $\\binom{{7}}{{2}} = 21$ pairs "
                           f"lie on exactly one line each. {payload}\n\n"
                           "A second paragraph about $GL_3(\\mathbb{F}_2)$."),
                  "source": {"kind": "insight", "ref": iid},
                  # reviewed just now: a running documenter does not revise them under a test's feet
                  "status": "stable", "reviewed_at": now, "review_count": 1}
        ops, _ = DM.commit(doc, {sid: change}, {"kind": "insight", "ref": iid, "task": None},
                           f"incorporate insight {iid}", now + k)
        client.txn("documenter", ops)
        sids.append(sid)
    if sids:
        comment: dict[str, Any] = {"id": "c0000000000001aaaa", "section": sids[-1],
                                   "text": f"Define a flag first. {payload}", "quote": "three points",
                                   "status": "open", "created": now, "attempts": 0, "failures": 0}
        client.txn("documenter", [txn.put(DM.comment_key(comment["id"]), comment)])
    return sids


def _research(client, payload: str, now: float) -> None:
    q = {"id": "q1", "question": f"Why does 168 recur? {payload}", "type": "supporting", "concepts": ["symmetry"],
         "numbers": [168], "priority": 6, "created": now}
    src = {"id": "src1", "url": "http://example.org/fano", "domain": "example.org", "origin": "user",
           "status": "extracted", "trust_score": 82, "trust_reasons": [f"a university page {payload}"],
           "title": f"The Fano plane {payload}", "findings": 1, "added": now}
    low = dict(src, id="src2", url="http://blog.example/x", domain="blog.example", status="ignored", trust_score=31,
               trust_reasons=["a blog"], findings=0)
    finding = {"id": "f1abcdef0001", "source_id": "src1", "url": src["url"], "domain": "example.org",
               "type": "supporting", "summary": f"The automorphism group has order 168. {payload}",
               "quote": f"|Aut| = 168 {payload}", "concepts": ["symmetry"], "numbers": [168], "confidence": 0.8,
               "status": "kept", "related_questions": ["q1"], "extracted_at": now}
    client.txn(RM.NS, [txn.put(RM.k_question("q1"), q), txn.put(RM.k_source("src1"), src),
                       txn.put(RM.k_source("src2"), low), txn.put(f"findings/{finding['id']}", finding)])
