"""A human's writes to the documenter's namespace — author comments, reverting the document, retrying a
disputed insight (``fanoctl comments add``, ``document revert|retry``) — and the reads of the document's
history that the CLI and the web panel share (``document versions|show --version|diff|export``).

Version-checked where the running documenter could race them: a new comment must not exist yet; a revert
is computed from the document it read and refused if the document changed meanwhile, then recomputed.
Key layout and record shapes: services/modules/documenter/model.py. Returns:

* :func:`add_comment` -> Comment (``{"id", "section", "text", "quote", "status": "open", "created", ...}``;
  ``quote``: the passage of the section the comment is about, as the reader selected it, or None for the
  whole section);
* :func:`revert_document` -> ``{"version": the new version, "reverted_to", "changed_sections": [sids]}``;
* :func:`retry_insight` -> the insight's job record, idle with no disputes;
* :func:`resume_work` -> ``{"resumed": ["planning" | "section reviews", ...]}``: the work the documenter
  paused after unusable answers in a row (services/modules/pace.py) starts again.

Reads: :func:`versions` -> ``[Version]`` (``{"version", "at", "description", "cause", "manifest"}``, oldest
first); :func:`version_sections` -> ``{"version", "sections": [{"id", "title", "text", "establishes",
"requires", "rev"}]}``; :func:`diff_versions` -> ``{"from", "to", "sections": [SectionDiff]}`` with
``SectionDiff`` = ``{"id", "title", "change": "added" | "removed" | "changed" | "same", "lines": [{"tag":
" " | "-" | "+", "text"}]}`` (``lines`` empty for ``same``); :func:`markdown` -> ``(version, text)``, the
Markdown the module exports (services/modules/documenter/export.py).
"""
from __future__ import annotations

import difflib

from services.modules import pace
from services.modules.documenter import export
from services.modules.documenter import model as M
from services.modules.operations import update
from services.modules.store import Store
from shared import txn
from shared.errors import ErrorCode, FanoError, bad_argument

NS = "documenter"
REVERT_RETRIES = 3   # a revert rewrites the whole manifest: give way to a busy documenter soon
MAX_QUOTE = 2000     # characters of a selected passage kept with a comment (the prompt carries it)


def add_comment(client, section: str, text: str, *, now: float, quote: str | None = None) -> dict:
    """An open comment on ``section`` (an id such as s0003); the documenter addresses it first. ``quote``:
    the passage it is about, as the reader selected it (whitespace collapsed; the documenter's prompt
    quotes it). It is kept as given even when the section no longer holds it word for word: a selection
    across rendered math reads differently from the Markdown source, and the comment still means it."""
    store = Store(client, NS)
    if not isinstance(text, str) or not text.strip():
        raise bad_argument("the comment is empty")
    if quote is not None and not isinstance(quote, str):
        raise bad_argument("the quoted passage must be text")
    passage = " ".join((quote or "").split()) or None
    if passage is not None and len(passage) > MAX_QUOTE:
        raise bad_argument(f"the quoted passage is {len(passage)} characters; select at most {MAX_QUOTE}")
    if store.get(M.section_key(section))[1] is None:
        raise FanoError(ErrorCode.NOT_FOUND, f"no section {section!r} in the document", {"id": section})
    cid = M.new_comment_id(now)
    rec = {"id": cid, "section": section, "text": text.strip(), "quote": passage, "status": "open", "created": now,
           "attempts": 0, "failures": 0, "history": [{"at": now, "event": "added"}]}
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


def resume_work(client) -> dict:
    """Resume planning turns and section reviews that the documenter paused after ``pause_after``
    unusable answers in a row (their failure count starts again); a no-op for work that is not paused."""
    store = Store(client, NS)

    def compute():
        ops, resumed = [], []
        for key, what in ((M.PLAN_STATE, "planning"), (M.REVIEW_STATE, "section reviews")):
            v, state = store.get(key)
            if pace.paused(state):
                ops.append(txn.put(key, pace.resume(state), if_version=v))
                resumed.append(what)
        return ops, {"resumed": resumed}
    return update(client, NS, "the documenter's paused work", compute)


def pauses(store, now: float) -> dict:
    """Why the documenter's work waits at world time ``now``: ``{"planning": reason|None, "section reviews":
    reason|None, "budget": the hourly budget's note|None}`` (``document show``)."""
    _, hour = store.get(pace.HOUR_KEY)
    rec = pace.current(hour, now)
    limit = int(rec.get("limit") or 0)
    return {"planning": pace.paused(store.get(M.PLAN_STATE)[1]),
            "section reviews": pace.paused(store.get(M.REVIEW_STATE)[1]),
            "budget": pace.budget_note(rec, limit, "max_tasks_per_hour") if limit else None}


# --- reads: the document's history -------------------------------------------------------------------------

def versions(client) -> list[dict]:
    """Every version, oldest first."""
    return Store(client, NS).records("versions/")


def version_sections(client, version: int | None = None) -> dict:
    """The sections of ``version`` (None: the current document), from the immutable revisions; version 0
    is the empty document. ``NOT_FOUND`` for a version the document never had."""
    store = Store(client, NS)
    doc = M.read_doc(store)
    if version is None or version == doc.version:
        return {"version": doc.version, "sections": doc.ordered()}
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version <= doc.version:
        raise FanoError(ErrorCode.NOT_FOUND, f"no version {version!r} (the document is at version {doc.version})",
                        {"version": version})
    if version == 0:
        return {"version": 0, "sections": []}
    _, ver = store.get(M.version_key(version))
    if not isinstance(ver, dict):
        raise FanoError(ErrorCode.NOT_FOUND, f"version {version} is missing from the store", {"version": version})
    return {"version": version, "sections": M.version_text(store, ver["manifest"])}


def diff_versions(client, old: int, new: int) -> dict:
    """What changed from version ``old`` to version ``new``, section by section, in ``new``'s order (removed
    sections after it): a line diff of each section's text, with its title as the first line."""
    a = {s["id"]: s for s in version_sections(client, old)["sections"]}
    b = version_sections(client, new)["sections"]
    in_new = {x["id"] for x in b}
    out = []
    for sec in b + [s for sid, s in a.items() if sid not in in_new]:
        before, after = a.get(sec["id"]), sec if sec["id"] in in_new else None
        lines_a, lines_b = _lines(before), _lines(after)
        change = ("added" if before is None else "removed" if after is None
                  else "same" if lines_a == lines_b else "changed")
        lines = [] if change == "same" else [
            {"tag": d[0], "text": d[2:]} for d in difflib.ndiff(lines_a, lines_b) if d[:1] in (" ", "-", "+")]
        out.append({"id": sec["id"], "title": sec.get("title") or sec["id"], "change": change, "lines": lines})
    return {"from": old, "to": new, "sections": out}


def _lines(sec: dict | None) -> list[str]:
    if sec is None:
        return []
    return [f"## {sec.get('title') or sec['id']}", *(sec.get("text") or "").strip().splitlines()]


def markdown(client, version: int | None = None) -> tuple[int, str]:
    """(version, the Markdown of that version), as the module exports it."""
    d = version_sections(client, version)
    return d["version"], export.render(d["sections"], d["version"])
