"""Retention: compaction of old settled tasks and expiry of modules' working data, so that a system left
running for weeks stays in its map.

**Working data** (module kv keys put with ``"working": true``, see shared/txn.py) is deleted
when its ``kv_expiry`` entry falls due (``broker.working_retention`` after its last put): :func:`expire_kv`,
at most :data:`EXPIRE_BATCH` keys per pass, with the task compaction pass. docs/storage.md lists which
module data is working data and which is the research record (kept forever).

**Task retention**:

Every task record holds its full payload (a rendered prompt) and result (the full answer): several KB per
task that nothing needs once the owning module has applied the result and acked it (the module keeps what
it needs in its own namespace). Compaction drops those bodies and keeps the record's identity:

=======  =====================================================================================================
dropped  ``payload`` and ``result`` (set to null), the ``history`` but its last transition, ``attrs`` when
         larger than :data:`ATTRS_KEPT_BYTES` (set to {})
added    ``compacted: true`` and ``compacted_at`` (world time)
kept     every other field, notably ``id``, ``key``, ``fp`` (the payload fingerprint), ``module``, ``kind``,
         ``state``, ``attempts``, ``epoch``, ``charged``, ``created``, ``updated``, ``parked_at``, ``served``,
         ``consumed``, ``error`` (class and message) and ``requires``: what the idempotency check, the counts
         and the invariant checker (ops/invariants.py) rely on
=======  =====================================================================================================

Which tasks: DONE or CANCELLED tasks whose module has acked them (``consumed``), last updated more than
``broker.task_retention`` world seconds ago (0 = never). A result nobody has acked is never dropped; a
CANCELLED task waits for its ack too (a module handling a cancellation may read its payload). PARKED tasks
are never compacted: they are dead letters an operator may still retry (``fanoctl queue retry``) or
inspect; cancelling one makes it eligible.

Idempotency stays permanent: the ``keys`` index still maps the key to the task, and the fingerprint is
kept, so submitting the same key returns the compacted task exactly as before compaction (same payload:
the existing task; another payload: ``KEY_CONFLICT``). Counts per state and module do not change.

Candidates are found through the ``compactable`` index (updated time, id), filed when a task becomes
eligible (the ack, or a move into DONE/CANCELLED of an acked task): a pass reads only what it compacts.
The broker runs a pass with its other housekeeping (every few seconds), at most :data:`COMPACT_BATCH`
tasks per pass so that the batch holding the write transaction stays short; LMDB reuses the freed pages,
so the map stops growing by the bodies' size (what stays per task is its compacted record, a few hundred
bytes, and its index entries). No event is published: compaction changes no state. ``compact`` runs one
pass now::

    args   {"older_than": seconds | null}         # null: broker.task_retention
    reply  {"compacted": int, "more": bool,       # more: eligible tasks remain past this pass's budget
            "older_than": seconds | null,         # null: retention is off and no older_than was given
            "map_used_before": bytes, "map_used_after": bytes}   # live pages before/after, in bytes
"""
from __future__ import annotations

from shared.errors import bad_argument
from shared.protocol import pack_value

from services.broker import schema as S
from services.broker import states as st
from services.broker.tx import Tx

COMPACT_BATCH = 500         # tasks examined per pass (one nested transaction)
EXPIRE_BATCH = 500          # working-data keys deleted per pass
ATTRS_KEPT_BYTES = 512      # scheduling hints up to this size are kept: they are small unless misused
MAX_OLDER_THAN = 1e10       # seconds (~300 years): keeps the horizon's milliseconds in range


def compact_record(task: dict, now: float) -> None:
    """Drop the bulky parts of one task record in place (see the module docstring)."""
    task["payload"] = None
    task["result"] = None
    task["history"] = (task.get("history") or [])[-1:]
    attrs = task.get("attrs")
    if attrs and len(pack_value(attrs)) > ATTRS_KEPT_BYTES:
        task["attrs"] = {}
    task["compacted"] = True
    task["compacted_at"] = now


def compact(tx: Tx, horizon: float, budget: int | None = None) -> tuple[int, bool]:
    """Compact eligible tasks last updated at or before ``horizon`` (world time), oldest first, examining
    at most ``budget`` (default :data:`COMPACT_BATCH`) index entries. Returns ``(compacted, more)``."""
    due, more = _due(tx, "compactable", S.ms(horizon), S.time_id_split,
                     COMPACT_BATCH if budget is None else budget)
    compacted = 0
    for key in due:
        filed_ms, tid = S.time_id_split(key)
        tx.delete("compactable", key)
        task = tx.get("tasks", S.u64(tid))
        if (task is None or task["state"] not in st.COMPACTABLE or not task.get("consumed")
                or task.get("compacted")):
            continue  # not eligible (any more): a stale entry, dropped
        if S.ms(task["updated"]) != filed_ms:
            # saved again after it was filed: retention counts from its last update
            tx.file_compactable(task)
            continue
        compact_record(task, tx.now)
        # put, not save: "updated" keeps the time of the task's last real change
        tx.put("tasks", S.u64(tid), task)
        compacted += 1
    return compacted, more


def expire_kv(tx: Tx, budget: int | None = None) -> tuple[int, bool]:
    """Delete working-data keys whose expiry is due (world time ``tx.now``), oldest first, at most
    ``budget`` (default :data:`EXPIRE_BATCH`). Returns ``(deleted, more)``."""
    due, more = _due(tx, "kv_expiry", S.ms(tx.now), S.expiry_split, EXPIRE_BATCH if budget is None else budget)
    deleted = 0
    for key in due:
        exp, kv_key = S.expiry_split(key)
        tx.delete("kv_expiry", key)
        rec = tx.get("kv", kv_key)
        if rec is not None and rec.get("exp") == exp:  # else re-put or deleted since: a stale entry
            tx.delete("kv", kv_key)
            deleted += 1
    return deleted, more


def used_bytes(tx: Tx) -> int:
    """Bytes held by live data as this transaction sees it (free pages are reused, so not counted)."""
    return S.pages_in_use(tx.storage, tx.txn) * tx.storage.env.stat()["psize"]


def op_compact(tx: Tx, older_than):
    if older_than is not None and not 0 <= older_than <= MAX_OLDER_THAN:
        raise bad_argument(f"older_than must be in [0, {MAX_OLDER_THAN:.0e}] seconds", field="older_than")
    retention = tx.config.task_retention if older_than is None else float(older_than)
    before = used_bytes(tx)
    if older_than is None and retention <= 0:  # retention is off: only an explicit age compacts anything
        return {"compacted": 0, "more": False, "older_than": None, "map_used_before": before,
                "map_used_after": before}
    compacted, more = compact(tx, tx.now - retention)
    return {"compacted": compacted, "more": more, "older_than": retention, "map_used_before": before,
            "map_used_after": used_bytes(tx)}


HANDLERS = {"compact": op_compact}


def _due(tx: Tx, index: str, limit_ms: int, split, budget: int) -> tuple[list[bytes], bool]:
    """The keys of a time-ordered ``index`` (first field: world ms, read by ``split``) due at ``limit_ms``,
    at most ``budget`` of them, and whether more are due. Collected before the caller changes the index
    (a cursor must not walk what is being written)."""
    due: list[bytes] = []
    cur = tx.cursor(index)
    ok = cur.first()
    while ok:
        key = bytes(cur.key())
        if split(key)[0] > limit_ms:
            return due, False
        if len(due) >= budget:
            return due, True
        due.append(key)
        ok = cur.next()
    return due, False
