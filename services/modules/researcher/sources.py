"""Sources: the fetch queue and applying fetch outcomes (fetching itself is no LLM call: :mod:`.fetch`).

Sources in the fetch queue (``queue/fetch/<sid>``: user-given with ``fanoctl research add-source``,
configured, or proposed with a question) are fetched by the service's background pool
(:func:`queue_work` says which, and which queue entries are stale or on the deny list). Each outcome
is applied in one transaction (:func:`fetch_outcome`): the source, its text (``content/<sid>``), the end
of its queue entry and the submission of its evaluations (:mod:`.evaluate`). Transient failures are
retried with backoff (``retry_backoff``, doubled after each), permanent ones and the ``max_attempts``-th
end ``fetch_failed``; a page without text ends ``empty``.
"""
from __future__ import annotations

import hashlib
from typing import Any

from services.modules.researcher import model as M
from services.modules.researcher.context import Env
from services.modules.researcher.evaluate import evaluation_tasks
from services.modules.researcher.fetch import FetchError, Page
from shared import txn


def queue_work(env: Env, busy: set[str]) -> tuple[list[list[txn.Op]], list[tuple[str, str]]]:
    """What the fetch queue asks for now: the transactions that tidy it (an entry whose source is no
    longer ``new`` is stale; a source on the deny list ends ``excluded``, never fetched), and the
    (sid, url) to fetch (due, and not being fetched: ``busy``)."""
    tidy, fetch = [], []
    for key, qv, entry in env.store.scan("queue/fetch/"):
        sid = key.rsplit("/", 1)[1]
        if sid in busy or (entry or {}).get("not_before", 0) > env.now:
            continue
        sv, src = env.store.get(M.k_source(sid))
        if src is None or src.get("status") != "new":
            tidy.append([txn.delete(key, if_version=qv)])  # a stale index entry
        elif env.policy.excluded_domain(src["domain"]):
            src = dict(src, status="excluded", trust_score=0, error={"reason": "excluded",
                       "message": f"{src['domain']} is on the deny list"})
            tidy.append([txn.put(M.k_source(sid), src, if_version=sv), txn.delete(key, if_version=qv)])
        else:
            fetch.append((sid, src["url"]))
    return tidy, fetch


def fetch_outcome(env: Env, sid: str, result: Page | FetchError) -> tuple[list[txn.Op], bool]:
    """(ops, True) recording one fetch outcome, or ([], False) when the source is gone or no longer
    ``new`` (an outcome already recorded, or a concurrent writer decided it)."""
    sv, src = env.store.get(M.k_source(sid))
    qv, entry = env.store.get(M.k_fetch(sid))
    if src is None or src.get("status") != "new":
        return [], False
    return fetch_ops(env, src, sv, qv, entry, result), True


def fetch_ops(env: Env, src: dict[str, Any], sv: int, qv: int, entry: Any, result: Page | FetchError) -> list[txn.Op]:
    f, now, sid = env.settings.fetch, env.now, src["id"]
    src = dict(src, fetch_attempts=src.get("fetch_attempts", 0) + 1)
    queue_op = txn.delete(M.k_fetch(sid), if_version=qv) if qv else None
    if isinstance(result, FetchError):
        src["error"] = result.as_dict()
        if result.permanent or src["fetch_attempts"] >= f.max_attempts:
            src["status"] = "fetch_failed"
        else:
            src["next_fetch_at"] = now + f.retry_backoff * 2 ** (src["fetch_attempts"] - 1)
            queue_op = txn.put(M.k_fetch(sid), dict(entry or M.fetch_entry(src), not_before=src["next_fetch_at"]),
                               if_version=qv)
        return [txn.put(M.k_source(sid), src, if_version=sv)] + ([queue_op] if queue_op else [])
    title, text = result.title_and_text()
    text = text[:f.max_text_chars]
    src.update(fetched_at=now, fetch_count=src.get("fetch_count", 0) + 1, cache=result.cache, error=None,
               content_type=result.content_type, content_hash=hashlib.sha256(result.body).hexdigest()[:16],
               title=title or src.get("title") or "")
    ops = [queue_op] if queue_op else []
    if not text.strip():
        src.update(status="empty", error={"reason": "empty", "message": "the page has no text"})
        return [txn.put(M.k_source(sid), src, if_version=sv)] + ops
    src["status"] = "fetched"
    ops.append(txn.put(M.k_content(sid), {"url": src["url"], "title": src["title"], "text": text,
                                          "content_hash": src["content_hash"],
                                          "content_type": result.content_type, "fetched_at": now}))
    ops += evaluation_tasks(env, src, text)
    return [txn.put(M.k_source(sid), src, if_version=sv)] + ops
