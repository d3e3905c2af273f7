"""A human's writes to the documenter's namespace: author comments, reverting the document, retrying a
disputed insight (``fanoctl comments add``, ``document revert|retry``).

Version-checked where the running documenter could race them: a new comment must not exist yet; a revert
is computed from the document it read and refused if the document changed meanwhile, then recomputed.
Key layout and record shapes: services/modules/documenter/model.py. Returns:

* :func:`add_comment` -> Comment (``{"id", "section", "text", "status": "open", "created", ...}``);
* :func:`revert_document` -> ``{"version": the new version, "reverted_to", "changed_sections": [sids]}``;
* :func:`retry_insight` -> the insight's job record, idle with no disputes.
"""
from __future__ import annotations

from shared import txn
from shared.errors import ErrorCode, FanoError, bad_argument

from services.modules.documenter import model as M
from services.modules.operations import update
from services.modules.store import Store

NS = "documenter"
REVERT_RETRIES = 3   # a revert rewrites the whole manifest: give way to a busy documenter soon


def add_comment(client, section: str, text: str, *, now: float) -> dict:
    """An open comment on ``section`` (an id such as s0003); the documenter addresses it first."""
    store = Store(client, NS)
    if not isinstance(text, str) or not text.strip():
        raise bad_argument("the comment is empty")
    if store.get(M.section_key(section))[1] is None:
        raise FanoError(ErrorCode.NOT_FOUND, f"no section {section!r} in the document", {"id": section})
    cid = M.new_comment_id(now)
    rec = {"id": cid, "section": section, "text": text.strip(), "status": "open", "created": now, "attempts": 0,
           "failures": 0, "history": [{"at": now, "event": "added"}]}
    # a fresh id (time and a random tail): a condition failure here would mean a reused id, so it raises
    client.txn(NS, [txn.put(M.comment_key(cid), rec, if_version=0)])
    return rec


def revert_document(client, version: int, *, now: float) -> dict:
    """Make the document equal to ``version`` again, as a new version (nothing is lost)."""
    store = Store(client, NS)

    def compute():
        doc = M.read_doc(store)
        try:
            changes, order = M.revert_changes(doc, store, version)
        except M.RevertError as exc:
            raise FanoError(ErrorCode.NOT_FOUND, str(exc), {"version": version}) from None
        ops, number = M.commit(doc, changes, {"kind": "revert", "ref": version, "task": None},
                               f"revert to version {version}", now, order)
        return ops, {"version": number, "reverted_to": version, "changed_sections": sorted(changes)}
    return update(client, NS, "the document", compute, retries=REVERT_RETRIES)


def retry_insight(client, insight_id: str, *, now: float, by: str = "fanoctl") -> dict:
    """Give a disputed insight (e.g. one waiting for a human) a fresh start: disputes back to 0, planned
    again. ``by``: who asked (kept in the job's history)."""
    store = Store(client, NS)

    def compute():
        v, job = store.get(M.job_key(insight_id))
        if not isinstance(job, dict):
            raise FanoError(ErrorCode.NOT_FOUND, f"the documenter has not worked on insight {insight_id!r}",
                            {"id": insight_id})
        if job.get("stage") not in ("idle", "needs_human"):
            raise FanoError(ErrorCode.INVALID_STATE, f"insight {insight_id} is {job.get('stage')}; only idle or "
                            "waiting ones can be retried", {"id": insight_id, "stage": job.get("stage")})
        job = {**job, "stage": "idle", "disputes": 0, "updated": now}
        M.note(job, now, "retry requested", by=by)
        return [txn.put(M.job_key(insight_id), job, if_version=v)], job
    return update(client, NS, f"insight {insight_id}", compute)
