"""Monitoring reads: stats and the event outbox.

``stats`` result (a stable shape; ``fanoctl status --json`` prints it)::

    {"now": float,
     "tasks": {"PENDING": n, "RUNNING": n, "DONE": n, "PARKED": n, "PAUSED": n, "CANCELLED": n, "total": n},
     "modules": {module: {"PENDING": n, ...}},     # queue depth per module = modules[m]["PENDING"]
     "oldest_pending_age": seconds | null,
     "ready": n, "delayed": n, "leases": n,
     "next_due_in": seconds | null,                # first not_before among delayed tasks
     "quota": [{"account", "mode", "window", "used", "limit", "remaining"}],
     "accounts": [{"account", "paused", "cooldowns"}],
     "broker": {"pid", "uptime", "requests", "batches", "mean_batch", "errors": {name: n},
                "map_size", "map_used", "map_full": bool, "last_event_seq",
                "dropped_replies",                 # replies not sent: the client had gone
                "storage": {"map_size": int, "map_used": int,   # bytes; map_used: live pages
                            "map_ceiling": int,                 # broker.map_ceiling
                            "disk_free": int, "disk_total": int,  # the data directory's filesystem
                            "refusing": null | "MAP_FULL" | "DISK_FULL",   # new work refused since
                            "since": float | null,              # world time
                            "growth_per_day": float | null,     # bytes/day over the last week of
                                                                # hourly samples (null before an hour)
                            "days_until_full": float | null}}}  # to min(ceiling, what the disk allows)
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.broker import ops_quota
from services.broker import schema as S
from services.broker import states as st
from services.broker.tx import Tx
from shared.errors import bad_argument


def collect_stats(tx: Tx) -> dict[str, Any]:
    tasks = {s: 0 for s in st.STATES}
    modules: dict[str, dict[str, int]] = {}
    per: dict[tuple[str, str], int] = dict(tx.ledger.count_deltas)  # this batch's, not yet flushed
    for key, raw in tx.cursor("counts"):
        pair = S.split_count_key(bytes(key))
        per[pair] = per.get(pair, 0) + S.from_u64(bytes(raw))
    for (state, module), n in per.items():
        if n:
            tasks[state] = tasks.get(state, 0) + n
            modules.setdefault(module, {})[state] = n
    tasks["total"] = sum(tasks[s] for s in st.STATES)
    oldest = None
    cur = tx.cursor("by_state")
    prefix = S.state_prefix(st.PENDING)
    if cur.set_range(prefix) and cur.key().startswith(prefix):
        first = tx.task(S.from_u64(bytes(cur.key())[len(prefix):]))
        oldest = max(0.0, tx.now - first["created"])
    delayed_first = None
    cur = tx.cursor("delayed")
    if cur.first():
        delayed_first = S.time_id_split(bytes(cur.key()))[0] / 1000 - tx.now
    shown = ops_quota.op_quota_show(tx, None)
    headroom = []
    for q in shown["quotas"]:
        for w in q["windows"]:
            headroom.append({"account": q["account"], "mode": q["mode"], "window": w["spec"], "used": w["used"],
                             "limit": w["limit"], "remaining": w["remaining"],
                             "cooldown_until": (q["cooldown"] or {}).get("until")})
    return {
        "now": tx.now, "tasks": tasks, "modules": modules, "oldest_pending_age": oldest,
        "ready": tx.txn.stat(tx.db["ready"])["entries"], "delayed": tx.txn.stat(tx.db["delayed"])["entries"],
        "leases": tx.txn.stat(tx.db["leases"])["entries"],
        "next_due_in": None if delayed_first is None else max(0.0, delayed_first),
        "quota": headroom, "accounts": shown["accounts"],
    }


def op_events(tx: Tx, after: int, limit: int) -> dict[str, Any]:
    if not 1 <= limit <= 10_000:
        raise bad_argument("limit must be in [1, 10000]", field="limit")
    after = max(0, after)  # seq numbers start at 1; a negative "after" means "from the start"
    cur = tx.cursor("events")
    events: list[Any] = []
    first_kept = None
    if cur.first():
        first_kept = S.from_u64(bytes(cur.key()))
    ok = after + 1 < 2**64 and cur.set_range(S.u64(after + 1))
    while ok and len(events) < limit:
        events.append(tx.get("events", bytes(cur.key())))
        ok = cur.next()
    last = tx.peek_counter("event_seq")
    # if the outbox no longer holds seq after+1, the subscriber missed pruned events: it must resync
    truncated = first_kept is not None and after + 1 < first_kept
    return {"events": events, "last_seq": last, "truncated": truncated}


def prune(tx: Tx, request_ttl: float, event_retention: int, budget: int = 2000) -> int:
    """Forget old request-log entries and events beyond retention, a bounded amount per call."""
    removed = 0
    horizon = S.ms(tx.now - request_ttl)
    cur = tx.cursor("requests_ts")
    ok = cur.first()
    while ok and removed < budget:
        key = bytes(cur.key())
        if S.from_u64(key[:8]) > horizon:
            break
        tx.delete("requests", key[8:])
        # delete() moves to the next item and returns True even when there is none (key() is then b"")
        ok = cur.delete() and bool(cur.key())
        removed += 1
    last = tx.peek_counter("event_seq")
    cur = tx.cursor("events")
    ok = cur.first()
    while ok and removed < budget and S.from_u64(bytes(cur.key())) <= last - event_retention:
        ok = cur.delete() and bool(cur.key())
        removed += 1
    return removed


# command -> handler(tx, **args) (services/broker/core.py dispatches)
HANDLERS: dict[str, Callable[..., Any]] = {"events": op_events}
