"""Client journals of the crash tests, checked against the broker's database (see check_client_log)."""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from ops.snapshot import Report, Snapshot, usage_totals
from services.broker import states as st
from services.broker.ops_quota import slot_of


def read_journals(paths) -> list[dict]:
    """JSON-lines journals, one record per acknowledged operation. A torn last line is ignored."""
    out = []
    for path in paths:
        lines = Path(path).read_text().splitlines()
        for n, line in enumerate(lines):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                if n == len(lines) - 1:
                    continue  # the writer died mid-line: that operation was never journaled
                raise
            rec.setdefault("journal", str(path))
            out.append(rec)
    return out


def check_client_log(records: list[dict], snap: Snapshot, exact: bool = True) -> list[str]:
    """What clients were acknowledged, against the database.

    Records (one JSON object per acknowledged operation; ``client`` names the writer)::

        {"op": "submit", "key", "id"}                       submit acknowledged: key -> task id
        {"op": "lease", "id", "epoch", "account", "mode", "rid"}   lease granted
        {"op": "complete", "id", "epoch", "result"}         completion acknowledged
        {"op": "refund", "id", "epoch", "account", "mode"}  fail(sent=False) / quota fail / refuse acknowledged
        {"op": "stale", "id", "epoch", "cmd"}               a write with a void epoch, rejected (expected)
        {"op": "zombie_accepted", "id", "epoch", "cmd"}     a write with a void epoch that was accepted: a bug
        {"op": "txn_applied", "task_id", "rid"}             a module transaction acking task_id was applied

    ``exact``: every operation a client started was acknowledged (clients retried until answered), so
    the journals hold *every* grant and refund: quota usage must equal grants minus refunds.
    """
    r = Report()
    key_ids: dict = {}
    grants: dict = defaultdict(set)      # (id, epoch) -> rids
    grant_pair: dict = {}
    refunds: Counter = Counter()         # pair -> n
    per_task_grants: Counter[Any] = Counter()
    per_task_refunds: Counter[Any] = Counter()
    granted_pairs: Counter = Counter()
    applied: Counter[Any] = Counter()
    for rec in records:
        op = rec.get("op")
        who = rec.get("client", rec.get("journal", "?"))
        if op == "submit":
            key, tid = rec["key"], rec["id"]
            if key_ids.setdefault(key, tid) != tid:
                r.bad("journal-keys", f"key {key!r} was acknowledged as task {key_ids[key]} and as task {tid}")
            if snap.keys.get(key) != tid:
                r.bad("journal-keys", f"{who}: submit of {key!r} acknowledged as task {tid}, the database maps it "
                      f"to {snap.keys.get(key)}")
            elif (snap.tasks.get(tid) or {}).get("key") != key:
                r.bad("journal-keys", f"{who}: acknowledged task {tid} for {key!r} is missing or has another key")
        elif op == "lease":
            ident = (rec["id"], rec["epoch"])
            grants[ident].add(rec["rid"])
            pair = (rec["account"], rec["mode"])
            if grant_pair.setdefault(ident, pair) != pair:
                r.bad("journal-lease", f"lease {ident} acknowledged on {grant_pair[ident]} and on {pair}")
            per_task_grants[rec["id"]] += 1
            granted_pairs[pair] += 1
            t = snap.tasks.get(rec["id"])
            if t is None or t.get("epoch", 0) < rec["epoch"]:
                where = "missing" if t is None else f"at epoch {t.get('epoch')}"
                r.bad("journal-lease", f"{who}: lease {ident} acknowledged but the task is {where}")
        elif op == "complete":
            t = snap.tasks.get(rec["id"]) or {}
            # a compacted task (task retention) no longer holds its result: state and epoch still tell
            if (t.get("state") != st.DONE or t.get("epoch") != rec["epoch"]
                    or (not t.get("compacted") and t.get("result") != rec.get("result"))):
                r.bad("journal-complete", f"{who}: completion of {rec['id']}@{rec['epoch']} acknowledged but the task "
                      f"is {t.get('state', 'missing')}@{t.get('epoch')} with result {t.get('result')!r:.120}")
        elif op == "refund":
            refunds[(rec["account"], rec["mode"])] += 1
            per_task_refunds[rec["id"]] += 1
            if (rec["id"], rec["epoch"]) not in grants:
                r.bad("journal-refund", f"{who}: refund of {rec['id']}@{rec['epoch']} without a journaled grant")
        elif op == "zombie_accepted":
            r.bad("journal-fencing", f"{who}: {rec.get('cmd')} with void epoch {rec['id']}@{rec['epoch']} was accepted")
        elif op == "txn_applied":
            applied[rec["task_id"]] += 1
    for ident, rids in grants.items():
        if len(rids) > 1:
            r.bad("journal-lease", f"task {ident[0]} epoch {ident[1]} was granted to {len(rids)} lease requests")
    for tid, n in applied.items():
        if n > 1:
            r.bad("journal-txn", f"a module transaction acking task {tid} was applied {n} times")
    if exact:
        totals = usage_totals(snap)
        for (acct, mode), spec in snap.quota_specs.items():
            want = granted_pairs[(acct, mode)] - refunds[(acct, mode)]
            for window in (spec or {}).get("windows", []):
                slot = slot_of(window)
                used = totals.get((acct, mode, slot), (0, None))[0]
                if window["kind"] == "rolling" and used <= want:
                    continue  # rolling entries age out of the ledger; more than granted is still wrong
                if used != want:
                    r.bad("journal-quota", f"quota {acct}/{mode} {slot}: ledger holds {used}, clients were granted "
                          f"{granted_pairs[(acct, mode)]} and refunded {refunds[(acct, mode)]}")
        specd = set(snap.quota_specs)
        pairs_by_task = defaultdict(set)
        for (tid, _), pair in grant_pair.items():
            pairs_by_task[tid].add(pair)
        for tid, t in snap.tasks.items():
            grants_t = per_task_grants.get(tid, 0)
            if t.get("epoch", 0) != grants_t:
                r.bad("journal-lease", f"task {tid} is at epoch {t.get('epoch')} but clients were granted {grants_t} "
                      "lease(s) on it")
            if pairs_by_task[tid] <= specd:
                want = grants_t - per_task_refunds.get(tid, 0)
                if t.get("charged", 0) != want:
                    r.bad("journal-quota", f"task {tid}: charged={t.get('charged', 0)}, journals say {grants_t} "
                          f"grant(s) - {per_task_refunds.get(tid, 0)} refund(s)")
        for key, tid in snap.keys.items():
            if key not in key_ids:
                r.bad("journal-keys", f"task {tid} (key {key!r}) exists but no client was acknowledged its submit")
    return r.finish().violations
