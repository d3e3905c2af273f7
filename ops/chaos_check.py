"""The end-of-run checks of a chaos run (ops/chaos.py), against the broker database and the sim logs.

Run them with the whole tree stopped. :func:`check_all` returns ``{"checks": {...}, "violations": [...],
"notes": [...], "tasks": {...}}``.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from itertools import pairwise
from pathlib import Path

from ops.invariants import inspect_broker_db
from ops.snapshot import load_snapshot
from services.backends import sim_log

SETTLED = {"DONE", "PARKED", "CANCELLED"}


def check_all(config, acked: dict[str, int], limits: dict[str, str] | None = None) -> dict:
    violations: list[str] = []
    notes: list[str] = []
    checks: dict[str, int] = {}
    db_dir = Path(config.data_dir) / "broker"

    report = inspect_broker_db(db_dir)
    violations += [f"broker db: {v}" for v in report.violations]
    notes += report.notes
    checks["broker_db_invariants"] = len(report.violations)

    snap = load_snapshot(db_dir)
    states = Counter(t["state"] for t in snap.tasks.values())
    key_to_id = {t["key"]: tid for tid, t in snap.tasks.items()}
    lost = [k for k, tid in acked.items() if key_to_id.get(k) != tid]
    violations += [f"acknowledged submission {k} (task {acked[k]}) is missing or remapped" for k in lost[:20]]
    checks["acknowledged_submissions"] = len(acked)
    unsettled = [tid for tid, t in snap.tasks.items() if t["state"] not in SETTLED]
    violations += [f"task {tid} ended {snap.tasks[tid]['state']}, not DONE/PARKED/CANCELLED" for tid in unsettled[:20]]
    unreconciled = [tid for tid, t in snap.tasks.items() if t.get("unknown_turn") and t["state"] != "DONE"]
    if unreconciled:
        notes.append(f"{len(unreconciled)} task(s) parked with an unreconciled unknown turn: {unreconciled[:10]}")

    account_rate_limits = {a.name: (a.settings.get("rate_limits") or {}) for a in config.accounts}
    served_total = 0
    for account in config.accounts:
        path = Path(config.data_dir) / "sim" / account.name / "requests.jsonl"
        if not path.exists():
            continue
        problems = sim_log.check_log(path, account_rate_limits[account.name], count="received")
        violations += [f"provider {account.name}: {p}" for p in problems]
        records = sim_log.read_log(path)
        violations += [f"provider {account.name}: {p}" for p in _resent_without_cause(records)]
        served_total += sum(1 for r in records if r["event"] == "served")
    checks["provider_requests_served"] = served_total
    return {"checks": checks, "violations": violations, "notes": notes,
            "tasks": {"total": len(snap.tasks), **dict(states)}}


def _resent_without_cause(records: list[dict]) -> list[str]:
    """A turn the provider received in one attempt and received again in a later attempt, although the
    first was never reported failed by the provider: the worker re-sent instead of reconciling."""
    by_turn: dict[tuple, list[dict]] = defaultdict(list)
    failed_recv = {r.get("recv_seq") for r in records if r["event"] == "failed"}
    for r in records:
        if r["event"] == "received":
            by_turn[(r["task_id"], r["turn_key"])].append(r)
    problems = []
    for (tid, turn_key), recvs in by_turn.items():
        for earlier, later in pairwise(recvs):
            if earlier["seq"] not in failed_recv and later["attempt"] != earlier["attempt"]:
                problems.append(f"turn {turn_key} of task {tid} re-sent in attempt {later['attempt']} although "
                                f"attempt {earlier['attempt']} reached the provider and did not fail")
    return problems
