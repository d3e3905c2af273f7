"""The invariant checker: is the broker's database consistent, and does it agree with what clients were told?

Entry points (shared by the crash tests and the operator)::

    check_broker_db(data_dir) -> [violation, ...]        the LMDB database on its own
    inspect_broker_db(data_dir) -> Report                the same, plus notes and counts
    check_client_log(records, snapshot) -> [violation]   a crash test's client journals against the database
    python -m ops.invariants DATA_DIR [--journal FILE ...]   prints JSON, exits 1 on violations

``DATA_DIR`` is the broker's LMDB directory (``<data_dir>/broker``), the config's ``data_dir`` or the
root holding ``data/broker``.

Reading while the broker runs
-----------------------------
The database is opened ``readonly=True`` **with** LMDB's lock file (``lock=True``): the checker takes a
reader slot like any reader, so its single read transaction is a consistent snapshot even while the
broker commits. ``lock=False`` would skip the reader table and the broker could recycle pages the
checker is still reading (torn, nonsensical results): only safe with the broker stopped, so it is not
offered. The lock file must be writable by the checker (the reader slot lives there).

What is checked
---------------
Exactly: every ``keys`` entry points at a task with that key and every task's key maps back to it (one
task per key); ``by_state`` and ``counts`` equal what the task records say (a PENDING task's
``by_state`` value is its row, as its record says); ``ready``/``delayed`` hold
exactly the PENDING tasks (with the priority / not_before they key on), ``leases`` exactly the RUNNING
ones with their epoch and deadline, and no other task carries a lease; ``0 <= charged <= epoch``;
conversations' in-flight turns are RUNNING tasks and vice versa; the event outbox has consecutive
sequence numbers ending at the counter; the request log and its time index match; every module key
kept as working data is filed once in ``kv_expiry`` under its expiry and nothing else is; quota usage records
are internally consistent (``total == sum(by_module)``); no window holds more than its limit (with
reserves: ``sum(max(used[m], reserve[m])) <= limit``, the invariant the admission rule keeps); rolling
entries name a live charge of their task; a RUNNING task's charges exist in the ledger.

Quota totals against tasks: a task records how many units are currently charged for it
(``task["charged"]``) but not on which (account, mode): a lease's charges are dropped from the task when
the lease ends. The checker attributes a task's units from the ``task.running`` events in the outbox
(each carries account and mode) when the outbox is complete (never pruned), else from the task's
requirements (``requires.mode`` without ``deep_fallback``, ``requires.account``). A task leased on
several quota'd pairs is *ambiguous*: its units only widen the bounds. For every calendar window then
``attributed <= sum of usage over all periods <= attributed + ambiguous`` (equality when nothing is
ambiguous), per module as well; rolling windows are pruned as they age, so their entry counts are
upper-bounded only. These totals are skipped (with a note) for a pair whose spec changed after its
units were charged or that an operator reset (``quota.set``/``quota.reset`` events).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from itertools import pairwise
from typing import Any

import lmdb

from ops.journals import check_client_log, read_journals  # noqa: F401  (part of this module's interface)
from ops.snapshot import Report, Snapshot, load_snapshot, resolve_db_dir, split_prefix3, usage_totals  # noqa: F401
from services.broker import schema as S
from services.broker import states as st
from services.broker.ops_quota import slot_of
from shared.protocol import unpack_value
from shared.quota import charge_modules

# --- database checks ------------------------------------------------------------------------------------------

def _check_tasks(snap: Snapshot, r: Report) -> None:
    for stored, rec_id in snap.task_keys:
        r.bad("tasks", f"task stored under id {stored} says id {rec_id}")
    if snap.tasks and max(snap.tasks) > snap.counter("task_id"):
        r.bad("tasks", f"task id {max(snap.tasks)} exceeds the id counter {snap.counter('task_id')}")
    for tid, t in snap.tasks.items():
        state = t.get("state")
        if state not in st.STATES:
            r.bad("tasks", f"task {tid} has unknown state {state!r}")
        epoch, attempts, charged = t.get("epoch", 0), t.get("attempts", 0), t.get("charged", 0)
        if not 0 <= attempts <= epoch:
            r.bad("tasks", f"task {tid}: attempts {attempts} outside [0, epoch {epoch}]")
        if not 0 <= charged <= epoch:
            r.bad("quota-task",
                  f"task {tid}: charged {charged} outside [0, epoch {epoch}] (one unit per grant at most)")
        if state == st.RUNNING:
            lease = t.get("lease")
            if not isinstance(lease, dict) or "deadline" not in lease:
                r.bad("leases", f"task {tid} is RUNNING without a lease record")
            elif lease.get("charges") and charged < 1:
                r.bad("quota-task", f"task {tid} holds charges {lease['charges']!r} but charged={charged}")
        elif t.get("lease"):
            r.bad("leases", f"task {tid} is {state} but still carries a lease {t['lease']!r}")
        if state != st.PENDING and "queue" in t:
            r.bad("queues", f"task {tid} is {state} but says it is queued in {t['queue']!r}")
        if t.get("consumed") and state not in st.SETTLED:
            r.bad("tasks", f"task {tid} is {state} but marked consumed")
        if state == st.PARKED and t.get("parked_at") is None:
            r.bad("tasks", f"task {tid} is PARKED without parked_at")


def _check_keys(snap: Snapshot, r: Report) -> None:
    for key, tid in snap.keys.items():
        t = snap.tasks.get(tid)
        if t is None:
            r.bad("keys", f"key {key!r} points at missing task {tid}")
        elif t.get("key") != key:
            r.bad("keys", f"key {key!r} points at task {tid} whose key is {t.get('key')!r}")
    for tid, t in snap.tasks.items():
        owner = snap.keys.get(t.get("key"))
        if owner != tid:
            r.bad("keys", f"task {tid}'s key {t.get('key')!r} maps to {owner} (one task per key)")


def _check_indices(snap: Snapshot, r: Report) -> None:
    want_state = {(t.get("state"), tid) for tid, t in snap.tasks.items()}
    have_state = Counter(snap.by_state)
    for item, n in have_state.items():
        if n > 1:
            r.bad("by_state", f"by_state holds {item} {n} times")
    for state, tid in set(have_state) - want_state:
        r.bad("by_state", f"by_state says task {tid} is {state}, the task says "
              f"{(snap.tasks.get(tid) or {}).get('state', 'nothing (missing)')}")
    for state, tid in want_state - set(have_state):
        r.bad("by_state", f"task {tid} is {state} but by_state does not list it")
    for tid, t in snap.tasks.items():
        # a PENDING task's entry is its row as its record says now (what a scheduler's rebuild reads)
        try:
            want = S.pending_row(t) if t.get("state") == "PENDING" else b""
        except (KeyError, TypeError, AttributeError):   # a record too broken for a row: other checks say why
            continue
        if S.ROWS_MISSING.decode() in snap.meta and snap.rows.get(tid) == b"":
            continue   # a migrated database whose rows are still to be written (schema.open_env)
        if (t.get("state"), tid) in have_state and snap.rows.get(tid) != want:
            r.bad("by_state", f"task {tid} ({t.get('state')}): by_state value {snap.rows.get(tid)!r}, "
                  f"its record says {want!r}")

    want_counts = Counter((t.get("state"), t.get("module")) for t in snap.tasks.values())
    for key in set(want_counts) | set(snap.counts):
        if snap.counts.get(key, 0) != want_counts.get(key, 0):
            r.bad("counts", f"counts{key} = {snap.counts.get(key, 0)}, tasks say {want_counts.get(key, 0)}")
    for key, n in snap.counts.items():
        if n <= 0:
            r.bad("counts", f"counts{key} stores {n} (zero entries must be deleted)")

    queued: Counter[Any] = Counter()
    for prio, tid in snap.ready:
        queued[tid] += 1
        t = snap.tasks.get(tid)
        if t is None or t.get("state") != st.PENDING or t.get("queue") != "ready":
            r.bad("queues", f"ready holds task {tid}, which is {(t or {}).get('state', 'missing')} "
                  f"queue={(t or {}).get('queue')!r}")
        elif t.get("priority") != prio:
            r.bad("queues", f"ready files task {tid} at priority {prio}, the task says {t.get('priority')}")
    for nb_ms, tid in snap.delayed:
        queued[tid] += 1
        t = snap.tasks.get(tid)
        if t is None or t.get("state") != st.PENDING or t.get("queue") != "delayed":
            r.bad("queues", f"delayed holds task {tid}, which is {(t or {}).get('state', 'missing')} "
                  f"queue={(t or {}).get('queue')!r}")
        elif S.ms(t.get("not_before") or 0) != nb_ms:
            r.bad("queues", f"delayed files task {tid} at {nb_ms} ms, its not_before is {t.get('not_before')}")
    for tid, t in snap.tasks.items():
        n = queued.get(tid, 0)
        if t.get("state") == st.PENDING and n != 1:
            r.bad("queues", f"PENDING task {tid} is in ready/delayed {n} times (must be exactly once)")
        elif t.get("state") != st.PENDING and n:
            r.bad("queues", f"{t.get('state')} task {tid} is still in ready/delayed")

    leased: Counter[Any] = Counter()
    for deadline_us, tid, epoch in snap.leases:
        leased[tid] += 1
        t = snap.tasks.get(tid)
        if t is None or t.get("state") != st.RUNNING:
            r.bad("leases", f"leases holds task {tid}@{epoch}, which is {(t or {}).get('state', 'missing')}")
            continue
        if epoch != t.get("epoch"):
            r.bad("leases", f"leases holds task {tid} at epoch {epoch}, the task is at epoch {t.get('epoch')}")
        lease = t.get("lease") or {}
        if "deadline" in lease and S.us(lease["deadline"]) != deadline_us:
            r.bad("leases", f"leases files task {tid} at {deadline_us} us, its lease deadline is {lease['deadline']}")
    for tid, t in snap.tasks.items():
        if t.get("state") == st.RUNNING and leased.get(tid, 0) != 1:
            r.bad("leases", f"RUNNING task {tid} has {leased.get(tid, 0)} lease entries (must be exactly one)")


def _check_events(snap: Snapshot, r: Report) -> None:
    keys, last = snap.event_keys, snap.counter("event_seq")
    for a, b in pairwise(keys):
        if b != a + 1:
            r.bad("events", f"event outbox jumps from seq {a} to {b}")
    if keys and keys[-1] != last:
        r.bad("events", f"last event in the outbox is {keys[-1]}, the counter says {last}")
    if not keys and last:
        r.bad("events", f"the event counter is at {last} but the outbox is empty")
    for seq, ev in snap.events.items():
        if ev is not None and ev.get("seq") != seq:
            r.bad("events", f"event stored under {seq} says seq {ev.get('seq')}")
    if not snap.outbox_complete:
        r.note(f"event outbox pruned (first kept seq {keys[0] if keys else None}): per-task event checks and "
               "quota attribution from events skipped")
        return
    # complete outbox: every task was submitted once, and each epoch was granted exactly once
    submitted: Counter[Any] = Counter()
    running: defaultdict[Any, list[Any]] = defaultdict(list)
    for ev in snap.events.values():
        if not ev:
            continue
        if ev.get("type") == "task.submitted":
            submitted[ev.get("id")] += 1
        elif ev.get("type") == "task.running":
            running[ev.get("id")].append(ev.get("epoch"))
    for tid, t in snap.tasks.items():
        if submitted.get(tid, 0) != 1:
            r.bad("events", f"task {tid} has {submitted.get(tid, 0)} task.submitted events")
        epochs = sorted(running.get(tid, []))
        if epochs != list(range(1, t.get("epoch", 0) + 1)):
            r.bad("events", f"task {tid} at epoch {t.get('epoch')} was granted epochs {epochs[:20]} "
                  "(each epoch exactly once)")


def _check_requests(snap: Snapshot, r: Report) -> None:
    indexed = Counter(rid for _, rid in snap.requests_ts)
    for ts_ms, rid in snap.requests_ts:
        rec = snap.requests.get(rid)
        if rec is None:
            r.bad("requests", f"requests_ts lists {rid} which is not in the request log")
        elif S.ms(rec.get("ts", 0)) != ts_ms:
            r.bad("requests", f"requests_ts files {rid} at {ts_ms} ms, its record says {rec.get('ts')}")
    for rid, rec in snap.requests.items():
        if indexed.get(rid, 0) != 1:
            r.bad("requests", f"request {rid} is indexed {indexed.get(rid, 0)} times in requests_ts")
        if not isinstance(rec, dict) or not {"ts", "fp", "reply"} <= set(rec):
            r.bad("requests", f"request log record {rid} is malformed: {rec!r:.200}")


def _check_conversations(snap: Snapshot, r: Report) -> None:
    for conv, rec in snap.conversations.items():
        tid = (rec or {}).get("inflight")
        if tid is None:
            continue
        t = snap.tasks.get(tid)
        if t is None or t.get("state") != st.RUNNING:
            r.bad("conversations", f"conversation {conv} has turn {tid} in flight, which is "
                  f"{(t or {}).get('state', 'missing')}")
        elif ((t.get("requires") or {}).get("conversation")) != conv:
            r.bad("conversations", f"conversation {conv} has task {tid} in flight, which belongs to "
                  f"{(t.get('requires') or {}).get('conversation')!r}")
    for tid, t in snap.tasks.items():
        conv = (t.get("requires") or {}).get("conversation")
        if conv and t.get("state") == st.RUNNING and (snap.conversations.get(conv) or {}).get("inflight") != tid:
            r.bad("conversations", f"RUNNING task {tid} is a turn of {conv} but not its in-flight turn")


def _check_unconsumed(snap: Snapshot, r: Report) -> None:
    want = {(t["module"], tid) for tid, t in snap.tasks.items()
            if t.get("state") in st.SETTLED and not t.get("consumed")}
    for module, tid in sorted(want - snap.unconsumed):
        r.bad("unconsumed", f"task {tid} of {module} is settled and not acked but missing from the index")
    for module, tid in sorted(snap.unconsumed - want):
        r.bad("unconsumed", f"index lists task {tid} of {module}, which is not a settled unacked task")


def _check_kv(snap: Snapshot, r: Report) -> None:
    for (module, key), rec in snap.kv.items():
        v = (rec or {}).get("v")
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            r.bad("kv", f"kv {module}/{key} has version {v!r}")
    # working data: each key with an expiry is filed once under it in kv_expiry, and only such keys
    indexed = Counter((module, key) for _, module, key in snap.kv_expiry)
    for exp, module, key in snap.kv_expiry:
        if (snap.kv.get((module, key)) or {}).get("exp") != exp:
            r.bad("kv", f"kv_expiry files {module}/{key} at {exp} ms, its record says "
                        f"{(snap.kv.get((module, key)) or {}).get('exp')!r}")
    for (module, key), rec in snap.kv.items():
        if (rec or {}).get("exp") is not None and indexed.get((module, key)) != 1:
            r.bad("kv", f"working data {module}/{key} is filed {indexed.get((module, key), 0)} times in kv_expiry")


# --- quotas ------------------------------------------------------------------------------------------------

def _grant_pairs(snap: Snapshot) -> dict:
    """task id -> set of (account, mode) it was leased on, from the outbox (complete outbox only)."""
    pairs = defaultdict(set)
    for ev in snap.events.values():
        if ev and ev.get("type") == "task.running":
            pairs[ev.get("id")].add((ev.get("account"), ev.get("mode")))
    return pairs


def _candidates(snap: Snapshot, t: dict, grants) -> set:
    specd = set(snap.quota_specs)
    if grants is not None:
        return grants.get(t["id"], set()) & specd
    req = t.get("requires") or {}
    cands = specd
    if not req.get("deep_fallback"):
        cands = {p for p in cands if p[1] == req.get("mode", "standard")}
    if req.get("account"):
        cands = {p for p in cands if p[0] == req["account"]}
    return cands


def _unstable_pairs(snap: Snapshot, earliest_charge: dict, r: Report) -> set:
    """Pairs whose usage totals cannot be compared with task charges (spec changed, operator reset)."""
    out = set()
    if snap.outbox_complete:
        for ev in snap.events.values():
            if not ev:
                continue
            if ev.get("type") == "quota.reset" and ev.get("usage"):
                modes = {m for (a, m) in snap.quota_specs if a == ev.get("account")}
                for m in (modes if ev.get("mode") == "*" else {ev.get("mode")}):
                    out.add((ev.get("account"), m))
            elif ev.get("type") == "quota.set":
                out.add((ev.get("account"), ev.get("mode")))
    else:
        r.note("outbox pruned: assuming no operator quota reset (a reset would show as usage below charges)")
    for pair, spec in snap.quota_specs.items():
        first = earliest_charge.get(pair)
        if first is not None and (spec or {}).get("updated", 0) > first:
            out.add(pair)
    for pair in sorted(out):
        r.note(f"quota {pair[0]}/{pair[1]}: spec changed or usage reset after units were charged; "
               "usage-vs-charges totals and overrun bounds not checked for it")
    return out


def _check_quota(snap: Snapshot, r: Report) -> None:
    for (acct, mode, slot, bucket), rec in snap.quota_usage.items():
        where = f"{acct}/{mode} {slot} period {bucket}"
        if not isinstance(rec, dict) or not isinstance(rec.get("total"), int) or rec["total"] < 0:
            r.bad("quota-ledger", f"{where}: malformed usage record {rec!r}")
            continue
        by = rec.get("by_module") or {}
        if any(not isinstance(n, int) or n <= 0 for n in by.values()):
            r.bad("quota-ledger", f"{where}: non-positive per-module count in {by}")
        if sum(by.values()) != rec["total"]:
            r.bad("quota-ledger", f"{where}: total {rec['total']} != sum of by_module {by}")

    # rolling entries: each names a grant of its task whose unit is still counted
    per_task_slot: Counter[Any] = Counter()
    oldest: dict[Any, Any] = {}
    for acct, mode, slot, ts, tid, epoch, module, key in snap.quota_entries:
        per_task_slot[(acct, mode, slot, tid)] += 1
        oldest[(acct, mode, slot)] = min(ts, oldest.get((acct, mode, slot), ts))
        t = snap.tasks.get(tid)
        where = f"rolling entry {acct}/{mode} {slot} task {tid}@{epoch}"
        if t is None:
            r.bad("quota-ledger", f"{where}: no such task")
            continue
        if module not in charge_modules(t.get("module"), t.get("requires")):
            r.bad("quota-ledger", f"{where}: charged to module {module}, the task is {t.get('module')}")
        if not 1 <= epoch <= t.get("epoch", 0):
            r.bad("quota-ledger", f"{where}: epoch outside the task's grants (task at {t.get('epoch')})")
        if t.get("state") == st.RUNNING and epoch == t.get("epoch"):
            charges = [bytes(c[1]) for c in ((t.get("lease") or {}).get("charges") or []) if c[0] == "e"]
            if key not in charges:
                r.bad("quota-ledger", f"{where}: current lease does not list this charge")
    for (acct, mode, slot, tid), n in per_task_slot.items():
        if n > snap.tasks.get(tid, {}).get("charged", 0):
            r.bad("quota-ledger", f"task {tid} has {n} entries in {acct}/{mode} {slot} but charged="
                  f"{snap.tasks.get(tid, {}).get('charged', 0)}")
    entry_keys = {e[7] for e in snap.quota_entries}
    for tid, t in snap.tasks.items():
        if t.get("state") != st.RUNNING:
            continue
        for kind, key, module in (t.get("lease") or {}).get("charges") or []:
            key = bytes(key)
            if kind == "c":
                acct, mode, slot = split_prefix3(key[:-8])
                rec = snap.quota_usage.get((acct, mode, slot, S.from_u64(key[-8:]))) or {}
                if rec.get("total", 0) < 1 or (rec.get("by_module") or {}).get(module, 0) < 1:
                    r.bad("quota-ledger", f"RUNNING task {tid} holds a charge in {acct}/{mode} {slot} that the "
                          f"ledger does not count ({rec})")
            elif key not in entry_keys:
                acct, mode, slot = split_prefix3(key[:-20])
                ts = S.from_u64(key[-20:-12])
                if ts > oldest.get((acct, mode, slot), 2**64):  # newer than a surviving entry: not pruned
                    r.bad("quota-ledger", f"RUNNING task {tid}'s rolling charge at {ts} in {acct}/{mode} {slot} "
                          "is missing from the ledger")

    # attribute each task's charged units to (account, mode)
    grants = _grant_pairs(snap) if snap.outbox_complete else None
    attributed: Counter[Any] = Counter()
    by_module: Counter[Any] = Counter()
    possible: Counter[Any] = Counter()
    earliest: dict = {}
    ambiguous = unplaced = 0
    for t in snap.tasks.values():
        charged = t.get("charged", 0)
        if charged <= 0:
            continue
        cands = _candidates(snap, t, grants)
        for pair in cands:
            earliest[pair] = min(t.get("created", 0), earliest.get(pair, float("inf")))
        if len(cands) == 1:
            (pair,) = cands
            attributed[pair] += charged
            # the shares it may have been charged in (shared/quota.py charge_modules): one module, or
            # its own and the operator's
            by_module[(pair, charge_modules(t.get("module"), t.get("requires")))] += charged
        elif cands:
            ambiguous += charged
            for pair in cands:
                possible[pair] += charged
        else:
            unplaced += charged
    if ambiguous:
        r.note(f"{ambiguous} charged unit(s) belong to tasks leased on several quota'd (account, mode) pairs: "
               "usage totals checked as bounds")
    if unplaced:
        r.note(f"{unplaced} charged unit(s) on pairs that no longer have a quota spec")
    unstable = _unstable_pairs(snap, earliest, r)
    totals = usage_totals(snap)
    quota_stats = []
    calendar_sum, calendar_pairs = 0, 0
    for (acct, mode), spec in sorted(snap.quota_specs.items()):
        pair = (acct, mode)
        first_calendar = True
        for window in (spec or {}).get("windows", []):
            slot = slot_of(window)
            used, used_by = totals.get((acct, mode, slot), (0, Counter()))
            quota_stats.append({"account": acct, "mode": mode, "window": slot, "used_all_periods": used,
                                "attributed": attributed[pair], "ambiguous": possible[pair]})
            stable = pair not in unstable
            if stable:
                _check_overrun(snap, r, acct, mode, slot, window)
            if not stable:
                continue
            lo, hi = attributed[pair], attributed[pair] + possible[pair]
            where = f"quota {acct}/{mode} {slot}"
            if window["kind"] == "rolling":
                if used > hi:
                    r.bad("quota-total", f"{where}: {used} rolling entries but tasks hold at most {hi} charged units")
                continue
            if first_calendar:
                first_calendar = False
                calendar_sum += used
                calendar_pairs += 1
            if not lo <= used <= hi:
                r.bad("quota-total", f"{where}: usage over all periods is {used}, tasks hold "
                      + (f"{lo} charged units" if lo == hi else f"between {lo} and {hi} charged units"))
            elif not possible[pair]:
                held = {group: n for (p, group), n in by_module.items() if p == pair}
                for modules in _share_groups(set(used_by), held):
                    spent = sum(used_by.get(m, 0) for m in modules)
                    owned = sum(n for group, n in held.items() if set(group) <= modules)
                    if spent != owned:
                        name = "module " + "+".join(sorted(modules))
                        r.bad("quota-total", f"{where}: {name} used {spent}, its tasks hold {owned} charged units")
    total_charged = sum(t.get("charged", 0) for t in snap.tasks.values())
    if not unstable and not unplaced and calendar_pairs == len(snap.quota_specs) and calendar_sum != total_charged:
        r.bad("quota-total", f"usage over every quota'd pair is {calendar_sum}, tasks hold {total_charged} "
              "charged units in all")
    r.stats["quota"] = quota_stats
    r.stats["charged_units"] = total_charged


def _share_groups(modules: set, held: dict) -> list[set]:
    """The modules of a window joined wherever one task may be charged in several of them: each group's
    usage must equal what its tasks hold (a comment charged to the documenter or to adhoc)."""
    groups = [{m} for m in modules | {m for group in held for m in group}]
    for group in held:
        joined = [g for g in groups if g & set(group)]
        groups = [g for g in groups if not g & set(group)] + [set().union(*joined)]
    return groups


def _check_overrun(snap: Snapshot, r: Report, acct: str, mode: str, slot: str, window: dict) -> None:
    limit = window["limit"]
    reserves = window.get("reserves") or {}
    if window["kind"] != "rolling":
        for (a, m, s, bucket), rec in snap.quota_usage.items():
            if (a, m, s) != (acct, mode, slot) or not isinstance(rec, dict):
                continue
            by = rec.get("by_module") or {}
            held = sum(max(by.get(x, 0), reserves.get(x, 0)) for x in set(by) | set(reserves))
            if held > limit or rec.get("total", 0) > limit:
                r.bad("quota-overrun", f"{acct}/{mode} {slot} period {bucket}: used {by} with reserves {reserves} "
                      f"holds {held} > limit {limit}")
        return
    span = S.ms(window["seconds"])
    stamps = sorted(e[3] for e in snap.quota_entries if e[:3] == (acct, mode, slot))
    lo = 0
    for hi, ts in enumerate(stamps):
        while stamps[lo] <= ts - span:
            lo += 1
        # entries sharing a timestamp were granted in one batch: the last of them saw all the others
        if hi + 1 < len(stamps) and stamps[hi + 1] == ts:
            continue
        if hi - lo + 1 > limit:
            r.bad("quota-overrun", f"{acct}/{mode} {slot}: {hi - lo + 1} requests in the window ending at {ts} ms "
                  f"> limit {limit}")


# --- entry points -------------------------------------------------------------------------------------------

def inspect_snapshot(snap: Snapshot) -> Report:
    r = Report()
    if snap.missing_dbs:
        r.note(f"sub-databases absent (never written): {snap.missing_dbs}")
    for item in snap.undecodable:
        r.bad("encoding", f"undecodable value {item}")
    raw_version = snap.meta.get("schema_version")
    if raw_version is not None and unpack_value(raw_version) != S.SCHEMA_VERSION:
        r.note(f"schema version {unpack_value(raw_version)} (checker knows {S.SCHEMA_VERSION})")
    _check_tasks(snap, r)
    _check_keys(snap, r)
    _check_indices(snap, r)
    _check_events(snap, r)
    _check_requests(snap, r)
    _check_conversations(snap, r)
    _check_kv(snap, r)
    _check_unconsumed(snap, r)
    _check_quota(snap, r)
    r.stats.update({
        "path": str(snap.path), "tasks": len(snap.tasks),
        "states": dict(Counter(t.get("state") for t in snap.tasks.values())),
        "keys": len(snap.keys), "events": len(snap.event_keys), "last_event_seq": snap.counter("event_seq"),
        "outbox_complete": snap.outbox_complete, "requests_logged": len(snap.requests), "kv": len(snap.kv),
    })
    return r.finish()


def inspect_broker_db(data_dir) -> Report:
    return inspect_snapshot(load_snapshot(data_dir))


def check_broker_db(data_dir) -> list[str]:
    """Violations of the broker database's invariants (empty when consistent). Safe while the broker runs."""
    return inspect_broker_db(data_dir).violations


# --- CLI ---------------------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.invariants", description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", help="broker LMDB dir, the config's data_dir, or a root holding data/broker")
    parser.add_argument("--journal", action="append", default=[], help="client journal (JSON lines); repeatable")
    parser.add_argument("--inexact", action="store_true", help="journals may miss operations (no totals check)")
    args = parser.parse_args(argv)
    try:
        snap = load_snapshot(args.data_dir)
    except (FileNotFoundError, lmdb.Error) as exc:
        print(json.dumps({"error": str(exc)}), file=sys.stderr)
        return 2
    report = inspect_snapshot(snap)
    out = report.as_dict()
    if args.journal:
        records = read_journals(args.journal)
        out["journal_records"] = len(records)
        out["violations"] = out["violations"] + check_client_log(records, snap, exact=not args.inexact)
    print(json.dumps(out, indent=2, sort_keys=True, default=str))
    return 1 if out["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
