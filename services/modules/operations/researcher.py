"""A human's writes to the researcher's namespace: promote a finding to a seed, add a source
(``fanoctl research promote|add-source``).

Each is one transaction conditioned on its key being absent (``if_version`` 0), so repeating it is
harmless: the second time it returns what the first wrote with ``created`` False. Entity shapes and the
promotion contract: services/modules/researcher/model.py. Returns ``{"promotion": Promotion, "created":
bool}`` and ``{"source": Source, "created": bool}``.

:func:`resume_questions` (``fanoctl research resume``) lifts the pause of question batches whose answers
kept being unusable; :func:`waiting` says why the researcher's new work waits (``research questions``).
"""
from __future__ import annotations

from services.modules import pace
from services.modules.operations import update
from services.modules.researcher import model as M
from services.modules.store import Store
from shared import txn
from shared.errors import ErrorCode, FanoError, bad_argument

PROMOTED_TYPES = ("question", "conjecture")


def resolve_finding(client, prefix: str) -> dict:
    """The finding whose id is ``prefix`` or starts with it: ``NOT_FOUND`` for none, ``BAD_ARGUMENT`` when
    the prefix names several."""
    matches = [v for _, _, v in client.kv_items(M.NS, f"findings/{prefix}")]
    if not matches:
        raise FanoError(ErrorCode.NOT_FOUND, f"no finding {prefix!r}", {"id": prefix})
    if len(matches) > 1:
        raise bad_argument(f"ambiguous finding id {prefix!r}: {', '.join(m['id'] for m in matches[:5])}")
    return matches[0]


def promote_finding(client, finding: str, *, now: float, kind: str | None = None,
                    priority: int | None = None) -> dict:
    """Propose ``finding`` (id or unique prefix) as a seed: writes ``promotions/<id>`` for the explorer to
    import. ``kind``: question or conjecture (default: question for challenging and contextual findings,
    else conjecture); ``priority``: 1-10 (default: the finding's confidence x 10)."""
    store = Store(client, M.NS)
    if kind is not None and kind not in PROMOTED_TYPES:
        raise bad_argument(f"a finding is promoted to a {' or a '.join(PROMOTED_TYPES)}, not {kind!r}")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)
                                 or not 1 <= priority <= 10):
        raise bad_argument(f"a seed priority is an integer 1-10, not {priority!r}")
    f = resolve_finding(client, finding)
    key = M.k_promotion(f["id"])
    _, existing = store.get(key)
    if existing is None:
        related = None
        if (kind or "") == "question" or (kind is None and f.get("type") in ("challenging", "contextual")):
            for qid in f.get("related_questions") or []:
                _, related = store.get(M.k_question(qid))
                if related is not None:
                    break
        rec = M.promotion(f, "user", now, kind, priority, question=related)
        if txn.conditional(client, M.NS, [txn.put(key, rec, if_version=0)]):
            return {"promotion": rec, "created": True}
        _, existing = store.get(key)   # promoted meanwhile (auto-promotion or another user)
    return {"promotion": existing, "created": False}


def add_source(client, url: str, *, now: float, note: str = "") -> dict:
    """Add a source URL to research (fetched, evaluated, and mined for findings if trusted);
    ``BAD_ARGUMENT`` for a URL that is not absolute http(s)."""
    store = Store(client, M.NS)
    try:
        sid, ops = M.add_source_ops(url, "user", now, note)
    except ValueError as exc:
        raise bad_argument(str(exc)) from None
    created = txn.conditional(client, M.NS, ops)
    return {"source": store.get(M.k_source(sid))[1], "created": created}


def resume_questions(client) -> dict:
    """Let the researcher propose question batches again after ``pause_after`` unusable ones in a row:
    ``{"resumed": bool}`` (False: they were not paused)."""
    store = Store(client, M.NS)

    def compute():
        v, streak = store.get(M.K_QUESTION_STREAK)
        if not pace.paused(streak):
            return [], {"resumed": False}
        return [txn.put(M.K_QUESTION_STREAK, pace.resume(streak), if_version=v)], {"resumed": True}
    return update(client, M.NS, "the researcher's question batches", compute)


def waiting(client, now: float) -> dict:
    """Why the researcher's new work waits at world time ``now``: ``{"questions": pause reason|None,
    "budget": the hourly budget's note|None}``."""
    store = Store(client, M.NS)
    rec = pace.current(store.get(pace.HOUR_KEY)[1], now)
    limit = int(rec.get("limit") or 0)
    return {"questions": pace.paused(store.get(M.K_QUESTION_STREAK)[1]),
            "budget": pace.budget_note(rec, limit, "max_tasks_per_hour") if limit else None}
