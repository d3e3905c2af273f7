"""The status views ``fanoctl top`` / ``backends ls`` and the web panel's overview share, read through a
broker client: :func:`accounts_view` (one row per account) and :func:`research_summary`.

The research panel: what the research modules have made so far, counted from their
namespaces in the broker (layouts: ``services/modules/{explorer,documenter,researcher}/model.py``).

Shape (``top --json``, key ``research``)::

    {"threads": {status: n}, "insights": {status: n},   # explorer: threads/<id>, insights/<id> by status
     "sections": n, "document_version": n,              # documenter: doc/head (its manifest, one read)
     "questions": n, "findings": n,                     # researcher: questions/<id>, findings/<id>
     "partial": [names of counts cut short], "at": broker time of the count}

or ``{"error": "CODE: message", "at"}`` when the broker refused a read. Every known status is present
(0 when none); a status a record has that the model does not list is counted under its own name.

It stays cheap: the documenter keeps a summary (``doc/head``) and is read with one ``kv_get``; the other
counts need a scan (the modules keep no counters), read in pages of :data:`PAGE` records and cut at
:data:`MAX_PAGES` pages' worth per prefix (the page after tells whether there was more). A cut count is
a lower bound, named in ``partial`` (shown ``N+``).
``top`` computes the panel at most every :data:`REFRESH` seconds and shows the last one in between.
"""
from __future__ import annotations

import itertools

from shared.errors import FanoError

PAGE = 1000
MAX_PAGES = 3
REFRESH = 10.0   # seconds between counts in `fanoctl top`


def accounts_view(shown: dict, sched, configured: list[str], problem: str | None) -> dict:
    """One row per account the broker, the scheduler or the configuration knows (docs/cli.md has the
    shape): the scheduler's live row (``sched``: its ``backends`` or ``top`` answer, None when it does not
    answer) with the broker's pause and cool-downs (``shown``: the broker's ``quota_show`` reply);
    ``configured`` are the configuration's account names, and ``problem`` why they are missing (else None)."""
    broker_accounts = {a["account"]: a for a in shown["accounts"]}
    live = {}
    if isinstance(sched, dict):
        live = {b["account"]: b for b in sched.get("accounts", [])}
    names = set(broker_accounts) | set(live) | set(configured)
    rows = []
    for name in sorted(names):
        b = dict(live.get(name) or {"account": name, "state": "offline" if sched is not None else "unknown"})
        acct = broker_accounts.get(name) or {}
        b["paused"] = acct.get("paused", b.get("paused", False))
        b["pause_reason"] = acct.get("pause_reason", "")
        b["cooldowns"] = acct.get("cooldowns", {})
        rows.append(b)
    return {"now": shown["now"], "backends": rows, "scheduler": "up" if sched is not None else "not answering",
            "config_problem": problem}


def _scan(c, module: str, prefix: str) -> tuple[list, bool]:
    """Values under ``prefix`` (bounded), and whether that was all of them."""
    most = PAGE * MAX_PAGES
    # one record past the bound tells whether the count was cut
    values = [value for _, _, value in itertools.islice(c.kv_items(module, prefix, page=PAGE), most + 1)]
    return values[:most], len(values) <= most


def _by_status(values: list, known: tuple) -> dict:
    counts = dict.fromkeys(known, 0)
    for value in values:
        status = value.get("status") if isinstance(value, dict) else None
        status = status if isinstance(status, str) and status else "?"
        counts[status] = counts.get(status, 0) + 1
    return counts


def research_summary(c, now=None) -> dict:
    """The panel, read through the client ``c``."""
    from services.modules.documenter import model as D
    from services.modules.explorer import model as X
    from services.modules.researcher import model as R
    out = {"at": now, "partial": []}
    try:
        for name, prefix, known in (("threads", "threads/", X.THREAD_STATUSES),
                                    ("insights", "insights/", X.INSIGHT_STATUSES)):
            values, complete = _scan(c, X.MODULE, prefix)
            out[name] = _by_status(values, known)
            if not complete:
                out["partial"].append(name)
        rec = c.kv_get("documenter", D.HEAD)
        head = rec["value"] if rec and isinstance(rec.get("value"), dict) else {}
        manifest = head.get("manifest")
        out["sections"] = len(manifest) if isinstance(manifest, list) else 0
        version = head.get("version")
        out["document_version"] = version if isinstance(version, int) and not isinstance(version, bool) else 0
        for name in ("questions", "findings"):
            values, complete = _scan(c, R.NS, f"{name}/")
            out[name] = len(values)
            if not complete:
                out["partial"].append(name)
    except FanoError as exc:
        return {"error": f"{exc.name}: {exc.message}", "at": now}
    return out
