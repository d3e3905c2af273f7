"""A human's writes to the explorer's namespace: seeds, threads, insights (``fanoctl seeds|threads|insights``).

Every write is a read-modify-write with ``if_version`` (:func:`shared.txn.update`), retried on a race
with the running explorer, which writes the same records with version checks too. Entity shapes and keys:
services/modules/explorer/model.py; the seed rules: services/modules/explorer/seeds.py. Returns:

* :func:`add_seed`, :func:`edit_seed` -> Seed; :func:`set_seed_priority` -> ``{"seed", "threads": [ids of
  the open threads that followed]}``; :func:`remove_seed` -> ``{"removed": id}``; :func:`resume_seed` ->
  the seed's pace record (services/modules/explorer/pacing.py), None if it never had one;
  :func:`import_seeds` -> ``{"added", "updated", "unchanged": [ids]}``;
* :func:`pause_thread`, :func:`resume_thread`, :func:`archive_thread` -> Thread;
* :func:`override_insight`, :func:`set_insight_priority` -> Insight.
"""
from __future__ import annotations

from services.modules.explorer import model as M
from services.modules.explorer import pacing as PC
from services.modules.explorer import seeds as S
from services.modules.operations import update
from services.modules.store import Store
from shared import txn
from shared.errors import ErrorCode, FanoError, bad_argument

NS = M.MODULE
MAX_OPS = 400            # per transaction of a seed import (the broker takes at most txn.MAX_OPS)
SEED_TYPES = ("axiom", "conjecture", "question")
OVERRIDES = ("blessed", "interesting", "rejected")   # the statuses a human may give an insight


def _seed_error(exc: S.SeedError) -> FanoError:
    return bad_argument(str(exc))


def seed_priority(value: int | str) -> int:
    """A seed priority: 1-10 or high/medium/low (``BAD_ARGUMENT`` otherwise)."""
    try:
        return S.priority(value)
    except S.SeedError as exc:
        raise _seed_error(exc) from None


# --- seeds ---------------------------------------------------------------------------------------------

def add_seed(client, text: str, *, now: float, kind: str = "conjecture", priority: int | str = 5,
             tags: list[str] | tuple = (), seed_id: str | None = None, notes: str = "") -> dict:
    """A new seed (id derived from the text unless given); ``CONDITION_FAILED`` if its id exists. ``notes``:
    the researcher's own notes on it (shown with the seed, never sent to a model)."""
    try:
        seed = S.validate({"id": seed_id, "type": kind, "text": text, "priority": priority, "tags": list(tags),
                           "notes": notes}, now)
    except S.SeedError as exc:
        raise _seed_error(exc) from None
    if not txn.conditional(client, NS, [txn.put(M.seed_key(seed["id"]), seed, if_version=0)]):
        raise FanoError(ErrorCode.CONDITION_FAILED, f"seed {seed['id']} exists", {"id": seed["id"]})
    return seed


def resume_seed(client, seed_id: str, *, now: float) -> dict | None:
    """Let the explorer start threads on a seed it paused (its threads kept giving unusable answers)."""
    store = Store(client, NS)
    store.must(M.seed_key(seed_id), "seed", seed_id)

    def compute():
        version, pace = store.get(PC.pace_key(seed_id))
        if not (pace or {}).get("paused"):
            return [], pace
        new = dict(pace, paused=False, pause_reason=None, paused_at=None, resumed_at=now)
        return [txn.put(PC.pace_key(seed_id), new, if_version=version)], new
    return update(client, NS, f"seed {seed_id}", compute)


def edit_seed(client, seed_id: str, *, now: float, text: str | None = None, kind: str | None = None,
              priority: int | str | None = None, tags: list[str] | tuple | None = None,
              notes: str | None = None) -> dict:
    """Change a seed's text, type, priority, tags or notes (None: unchanged; notes "" removes them). Open
    threads keep the text they started with; a new priority reaches them as with :func:`set_seed_priority`."""
    store = Store(client, NS)
    prio = seed_priority(priority) if priority is not None else None

    def compute():
        version, seed = store.must(M.seed_key(seed_id), "seed", seed_id)
        raw = {k: seed[k] for k in S.CONTENT if k in seed}
        raw.update({k: v for k, v in (("text", text), ("type", kind), ("tags", list(tags or ()) or None),
                                      ("notes", notes)) if v is not None})
        try:
            new = S.validate(dict(raw, id=seed_id), now, seed)
        except S.SeedError as exc:
            raise _seed_error(exc) from None
        return [txn.put(M.seed_key(seed_id), new, if_version=version)], new
    seed = update(client, NS, f"seed {seed_id}", compute)
    if prio is not None:   # the same path as a priority change alone, so that the seed's open threads follow
        seed = set_seed_priority(client, seed_id, prio, now=now)["seed"]
    return seed


def set_seed_priority(client, seed_id: str, priority: int | str, *, now: float) -> dict:
    """The seed and its open threads get ``priority`` in one transaction; the running explorer re-ranks
    their queued tasks on its next planning pass."""
    store = Store(client, NS)
    prio = seed_priority(priority)

    def compute():
        version, seed = store.must(M.seed_key(seed_id), "seed", seed_id)
        threads = [(v, t) for t in store.records("threads/")
                   if t["seed_id"] == seed_id and t["status"] not in ("extracted", "archived")
                   for v in [store.get(M.thread_key(t["id"]))[0]]]
        ops = [txn.put(M.seed_key(seed_id), dict(seed, priority=prio, updated_at=now), if_version=version)]
        ops += [txn.put(M.thread_key(t["id"]), dict(t, priority=prio, updated_at=now), if_version=v)
                for v, t in threads]
        return ops, {"seed": dict(seed, priority=prio, updated_at=now), "threads": [t["id"] for _, t in threads]}
    return update(client, NS, f"seed {seed_id}", compute)


def remove_seed(client, seed_id: str) -> dict:
    """Remove a seed (its threads and insights stay)."""
    store = Store(client, NS)

    def compute():
        version, _ = store.must(M.seed_key(seed_id), "seed", seed_id)
        return [txn.delete(M.seed_key(seed_id), if_version=version)], {"removed": seed_id}
    return update(client, NS, f"seed {seed_id}", compute)


def seed_file(path: str, now: float) -> list[dict]:
    """The validated seeds of a TOML seed file (``BAD_ARGUMENT`` with the reason otherwise)."""
    try:
        return S.load_file(path, now)
    except S.SeedError as exc:
        raise _seed_error(exc) from None


def import_seeds(client, wanted: list[dict], *, now: float) -> dict:
    """Write validated seeds (:func:`seed_file`), idempotent by id: unchanged ones are left alone. A long
    list is written in parts of :data:`MAX_OPS` (each part stands alone: a seed is one record)."""
    store = Store(client, NS)

    def compute():
        ops, result = [], {"added": [], "updated": [], "unchanged": []}
        for seed in wanted:
            version, current = store.get(M.seed_key(seed["id"]))
            if S.same_content(current, seed):
                result["unchanged"].append(seed["id"])
                continue
            # a changed seed keeps its creation time (validate the content: the timestamps are the record's)
            content = {k: seed[k] for k in ("id", *S.CONTENT) if k in seed}
            try:
                new = S.validate(content, now, current) if current else seed
            except S.SeedError as exc:
                raise _seed_error(exc) from None
            ops.append(txn.put(M.seed_key(seed["id"]), new, if_version=version))
            result["updated" if current else "added"].append(seed["id"])
        return ops, result
    return update(client, NS, "the seeds", compute, max_ops=MAX_OPS)


# --- threads -------------------------------------------------------------------------------------------

def _thread_change(client, thread_id: str, change) -> dict:
    store = Store(client, NS)

    def compute():
        version, thread = store.must(M.thread_key(thread_id), "thread", thread_id)
        new = change(thread)
        return ([txn.put(M.thread_key(thread_id), new, if_version=version)] if new != thread else []), new
    return update(client, NS, f"thread {thread_id}", compute)


def pause_thread(client, thread_id: str, *, now: float) -> dict:
    """Stop proposing turns for an open thread; answers in flight are still recorded."""
    def change(t):
        if t["status"] not in ("active", "ready", "synthesised"):
            raise FanoError(ErrorCode.INVALID_STATE, f"thread {thread_id} is {t['status']}; only open threads can "
                            "be paused", {"id": thread_id, "status": t["status"]})
        return dict(t, status="paused", paused_from=t["status"], pause_reason="paused by the operator", updated_at=now)
    return _thread_change(client, thread_id, change)


def resume_thread(client, thread_id: str, *, now: float) -> dict:
    """Resume a paused or archived thread where it stopped (the explorer's repair pass proposes its next step)."""
    def change(t):
        if t["status"] not in ("paused", "archived"):
            raise FanoError(ErrorCode.INVALID_STATE, f"thread {thread_id} is {t['status']}, not paused or archived",
                            {"id": thread_id, "status": t["status"]})
        return dict(t, status=t.get("paused_from") or "active", paused_from=None, pause_reason=None, paused_by=None,
                    updated_at=now)
    return _thread_change(client, thread_id, change)


def archive_thread(client, thread_id: str, *, now: float) -> dict:
    """Archive a thread: it proposes nothing more (:func:`resume_thread` undoes it)."""
    def change(t):
        if t["status"] == "archived":
            return t
        held = t.get("paused_from") if t["status"] == "paused" else t["status"]
        return dict(t, status="archived", paused_from=held, updated_at=now)
    return _thread_change(client, thread_id, change)


# --- insights ------------------------------------------------------------------------------------------

def override_insight(client, insight_id: str, status: str, *, now: float, note: str | None = None) -> dict:
    """A human decision: the insight's ``status`` (blessed, interesting or rejected), recorded in its
    ``overrides``; an open review stops."""
    store = Store(client, NS)
    if status not in OVERRIDES:
        raise bad_argument(f"an insight can be set to {', '.join(OVERRIDES)}, not {status!r}")

    def compute():
        vi, ins = store.must(M.insight_key(insight_id), "insight", insight_id)
        vr, review = store.get(M.review_key(insight_id))
        new = dict(ins, status=status, decided_by="human", updated_at=now, last_error=None,
                   overrides=list(ins.get("overrides") or []) + [{"from": ins["status"], "to": status, "at": now,
                                                                  "note": note}])
        if status == "blessed" and not ins.get("blessed_at"):
            new["blessed_at"] = now
        ops = [txn.put(M.insight_key(insight_id), new, if_version=vi)]
        if isinstance(review, dict) and review.get("stage") not in ("done", "stopped"):
            ops.append(txn.put(M.review_key(insight_id), dict(review, stage="stopped", updated_at=now), if_version=vr))
        return ops, new
    return update(client, NS, f"insight {insight_id}", compute)


def set_insight_priority(client, insight_id: str, priority: int, *, now: float) -> dict:
    """An insight's priority (1-10): the running explorer re-ranks its queued review steps on its next
    repair pass and schedules the next ones by it."""
    store = Store(client, NS)
    if isinstance(priority, bool) or not isinstance(priority, int) or not 1 <= priority <= 10:
        raise bad_argument(f"an insight's priority is an integer 1-10, not {priority!r}")

    def compute():
        version, ins = store.must(M.insight_key(insight_id), "insight", insight_id)
        new = dict(ins, priority=priority, updated_at=now)
        return [txn.put(M.insight_key(insight_id), new, if_version=version)], new
    return update(client, NS, f"insight {insight_id}", compute)
