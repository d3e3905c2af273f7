"""Task retention: acked DONE/CANCELLED tasks lose their bodies after broker.task_retention, nothing else does."""
from __future__ import annotations

import random
import string

import pytest

from ops.invariants import inspect_snapshot, load_snapshot
from services.broker import ops_retention
from services.broker import schema as S
from services.broker.core import PRUNE_EVERY
from shared import protocol
from tests.unit.corehelp import check_indices, expect_error, reopen_on_a_full_map

RETENTION = 3600.0
BODY = 6000  # bytes of prompt and of answer: a task's bodies span overflow pages, as real ones do


def text(tag: str, size: int = BODY) -> str:
    """``size`` characters that compress little (the broker compresses large values; a repeated letter
    would shrink to nothing and the bodies would no longer fill pages as real ones do)."""
    rng = random.Random(tag)
    return "".join(rng.choices(string.ascii_letters + string.digits, k=size))


P, R = text("p"), text("r")


def settle(h, key: str, ack: bool = True, module: str = "explorer", size: int = BODY) -> int:
    """Submit, lease and complete a task with large bodies; ack it as its module would. Returns its id."""
    tid = h.submit(key, module=module, payload={"prompt": text("p", size)}, attrs={"seed_priority": 2})["task"]["id"]
    lease = h.lease(task_id=tid)
    h.call("complete", id=tid, epoch=lease["epoch"], result={"text": text("r", size)})
    if ack:
        h.call("txn", module=module, ops=[{"op": "ack", "task_id": tid}])
    return tid


def park(h, key: str) -> int:
    tid = h.submit(key, max_attempts=1, payload={"prompt": P})["task"]["id"]
    lease = h.lease(task_id=tid)
    h.call("fail", id=tid, epoch=lease["epoch"], error_class="terminal", message="deterministic")
    return tid


def housekeep(h, seconds: float) -> None:
    """Let world and monotonic time pass, then run the broker's periodic sweeps."""
    h.clock.advance(max(seconds, PRUNE_EVERY))
    h.tick()


def assert_consistent(h) -> None:
    check_indices(h)
    report = inspect_snapshot(load_snapshot(env=h.storage.env))
    assert report.violations == [], report.violations


# --- what is compacted, when ------------------------------------------------------------------------------------

def test_acked_done_task_is_compacted_after_retention(make_core):
    h = make_core(broker={"task_retention": RETENTION})
    tid = settle(h, "k1")
    whole = h.get(tid)
    housekeep(h, RETENTION - 60)
    assert not h.get(tid).get("compacted")
    housekeep(h, 120)
    t = h.get(tid)
    assert t["compacted"] is True and t["compacted_at"] == h.clock.world()
    assert t["payload"] is None and t["result"] is None
    assert t["history"] == whole["history"][-1:] and t["history"][0]["to"] == "DONE"
    assert t["attrs"] == {"seed_priority": 2}  # small hints are kept
    dropped = {"payload", "result", "history", "compacted", "compacted_at"}
    assert {k: v for k, v in t.items() if k not in dropped} == {k: v for k, v in whole.items() if k not in dropped}
    assert t["updated"] == whole["updated"]  # retention and listings still see the task's last real change
    assert_consistent(h)


def test_unacked_done_task_is_kept_until_its_module_acks(make_core):
    h = make_core(broker={"task_retention": RETENTION})
    tid = settle(h, "k1", ack=False)
    housekeep(h, 10 * RETENTION)
    t = h.get(tid)
    assert not t.get("compacted") and t["result"] == {"text": R}
    assert [x["id"] for x in h.call("unconsumed", module="explorer")["tasks"]] == [tid]
    # retention counts from the ack (the task's last update), not from completion
    h.call("txn", module="explorer", ops=[{"op": "ack", "task_id": tid}])
    housekeep(h, RETENTION - 60)
    assert not h.get(tid).get("compacted")
    housekeep(h, 120)
    assert h.get(tid)["compacted"]


def test_parked_task_is_never_compacted_until_cancelled(make_core):
    h = make_core(broker={"task_retention": RETENTION})
    tid = park(h, "dead")
    h.call("txn", module="explorer", ops=[{"op": "ack", "task_id": tid}])
    housekeep(h, 10 * RETENTION)
    assert h.call("compact", older_than=0)["compacted"] == 0
    t = h.get(tid)
    assert t["state"] == "PARKED" and not t.get("compacted") and t["payload"] == {"prompt": P}
    assert h.call("retry", id=tid)["state"] == "PENDING"  # an operator can still retry it
    # a dead letter the operator cancels (already acked) becomes eligible from the cancellation on
    tid2 = park(h, "dead2")
    h.call("txn", module="explorer", ops=[{"op": "ack", "task_id": tid2}])
    h.call("cancel", id=tid2, reason="giving up")
    housekeep(h, RETENTION + 1)
    t2 = h.get(tid2)
    assert t2["state"] == "CANCELLED" and t2["compacted"] and t2["error"]["message"] == "deterministic"
    assert_consistent(h)


def test_cancelled_task_is_compacted_once_acked(make_core):
    h = make_core(broker={"task_retention": RETENTION})
    tid = h.submit("c", payload={"prompt": P})["task"]["id"]
    h.call("cancel", id=tid, reason="not needed")
    housekeep(h, 2 * RETENTION)
    assert not h.get(tid).get("compacted")  # its module may still read the payload to handle the cancellation
    h.call("txn", module="explorer", ops=[{"op": "ack", "task_id": tid}])
    housekeep(h, RETENTION + 1)
    t = h.get(tid)
    assert t["compacted"] and t["state"] == "CANCELLED" and t["payload"] is None
    assert t["history"][0]["why"] == "not needed"


def test_running_and_pending_tasks_are_untouched(make_core):
    h = make_core(broker={"task_retention": RETENTION})
    pending = h.submit("p", payload={"prompt": "x"})["task"]["id"]
    running = h.submit("r", payload={"prompt": "y"})["task"]["id"]
    h.lease(task_id=running, ttl=3 * RETENTION)
    housekeep(h, 2 * RETENTION)
    assert h.call("compact", older_than=0)["compacted"] == 0
    assert h.get(pending)["payload"] == {"prompt": "x"} and h.get(running)["payload"] == {"prompt": "y"}


def test_large_attrs_are_dropped(make_core):
    h = make_core(broker={"task_retention": RETENTION})
    tid = h.submit("k", attrs={"note": "n" * 2000})["task"]["id"]
    lease = h.lease(task_id=tid)
    h.call("complete", id=tid, epoch=lease["epoch"], result="ok")
    h.call("txn", module="explorer", ops=[{"op": "ack", "task_id": tid}])
    h.call("compact", older_than=0)
    assert h.get(tid)["attrs"] == {}


# --- idempotency and counts ------------------------------------------------------------------------------------

def test_resubmitting_the_key_of_a_compacted_task_returns_it(make_core):
    h = make_core(broker={"task_retention": RETENTION})
    tid = settle(h, "k1")
    housekeep(h, RETENTION + 1)
    again = h.submit("k1", payload={"prompt": P}, attrs={"seed_priority": 2})
    assert again["created"] is False and again["requeued"] is False
    assert again["task"]["id"] == tid and again["task"]["state"] == "DONE" and again["task"]["compacted"]
    # the payload's fingerprint outlives the payload: another payload under the key still conflicts
    exc = expect_error("KEY_CONFLICT", h.submit, "k1", payload={"prompt": "other"})
    assert exc.details == {"id": tid, "key": "k1"}
    # a module re-proposing it in a transaction gets the existing task; replaying its ack is a no-op
    sub = {"op": "submit", "task": {"key": "k1", "module": "explorer", "kind": "ask",
                                    "payload": {"prompt": P}}}
    assert h.call("txn", module="explorer", ops=[sub])["results"] == [
        {"id": tid, "created": False, "requeued": False, "state": "DONE"}]
    assert h.call("txn", module="explorer", ops=[{"op": "ack", "task_id": tid}]) == {
        "applied": False, "reason": "already consumed", "task_id": tid}
    assert h.call("stats")["tasks"]["total"] == 1
    assert_consistent(h)


def test_stats_counts_are_unchanged_by_compaction(make_core):
    h = make_core(broker={"task_retention": RETENTION})
    for i in range(3):
        settle(h, f"e{i}")
    settle(h, "d0", module="documenter")
    settle(h, "u0", ack=False)
    h.call("cancel", id=h.submit("c0")["task"]["id"])
    park(h, "p0")
    h.submit("q0")
    before = h.call("stats")
    housekeep(h, RETENTION + 1)
    after = h.call("stats")
    assert after["tasks"] == before["tasks"] and after["modules"] == before["modules"]
    assert after["tasks"]["DONE"] == 5 and after["modules"]["documenter"] == {"DONE": 1}
    compacted = [t["id"] for t in h.call("list", limit=100)["tasks"] if t.get("compacted")]
    assert len(compacted) == 4  # the acked DONE ones; not the unacked, cancelled (unacked), parked, pending
    assert_consistent(h)


# --- the compact command, retention off, the index -------------------------------------------------------------

def test_compact_command_reply_and_batches(make_core, monkeypatch):
    h = make_core(broker={"task_retention": RETENTION})
    ids = [settle(h, f"k{i}") for i in range(5)]
    monkeypatch.setattr(ops_retention, "COMPACT_BATCH", 2)
    first = h.call("compact", older_than=0)
    assert set(first) == {"compacted", "more", "older_than", "map_used_before", "map_used_after"}
    assert first["compacted"] == 2 and first["more"] is True and first["older_than"] == 0
    assert first["map_used_after"] < first["map_used_before"]
    assert h.call("compact", older_than=0)["compacted"] == 2
    last = h.call("compact", older_than=0)
    assert last["compacted"] == 1 and last["more"] is False
    assert all(h.get(t)["compacted"] for t in ids)
    assert h.call("compact", older_than=0)["compacted"] == 0
    # the default age is the retention: a task acked just now is not old enough
    new = settle(h, "fresh")
    assert h.call("compact")["compacted"] == 0 and not h.get(new).get("compacted")
    expect_error("BAD_ARGUMENT", h.call, "compact", older_than=-1)
    assert_consistent(h)


def test_retention_zero_keeps_everything(make_core):
    h = make_core(broker={"task_retention": 0})
    tid = settle(h, "k")
    housekeep(h, 100 * 86400)
    assert not h.get(tid).get("compacted")
    off = h.call("compact")
    assert off["compacted"] == 0 and off["older_than"] is None
    assert h.call("compact", older_than=86400)["compacted"] == 1  # an explicit age still works


def test_index_survives_restart_and_is_rebuilt_for_older_databases(make_core):
    h = make_core(broker={"task_retention": RETENTION})
    tids = [settle(h, f"k{i}") for i in range(3)]
    h.restart()
    assert h.call("compact", older_than=0)["compacted"] == 3
    # a database from before the index existed: no index entries, no "built" marker
    more = [settle(h, f"m{i}") for i in range(2)]
    with h.storage.env.begin(write=True) as txn:
        txn.drop(h.storage.dbs["compactable"], delete=False)
        txn.delete(b"compactable_built", db=h.storage.dbs["meta"])
    h.restart()
    with h.storage.env.begin() as txn:
        assert txn.stat(h.storage.dbs["compactable"])["entries"] == 2  # the compacted ones are not refiled
    assert h.call("compact", older_than=0)["compacted"] == 2
    assert all(h.get(t)["compacted"] for t in tids + more)


def test_compaction_clears_a_map_full_flag(make_core):
    h = make_core(broker={"task_retention": RETENTION})
    settle(h, "k")
    h.core.map_full = True  # as after a real MDB_MAP_FULL
    h.call("compact", older_than=0)
    assert h.core.map_full is False


# --- the point of it all: the database stops growing by the bodies' size ---------------------------------------

def run_rounds(h, start: int, rounds: int, per_round: int = 10) -> None:
    """submit -> lease -> complete -> ack of ``per_round`` tasks per round, in four batches, then a minute
    passes and the sweeps run (so tasks older than the retention are compacted as the loop goes)."""
    def batch(cmd, args_list):
        replies = h.batch([protocol.encode_request(h.request(cmd, a)) for a in args_list])
        return [r.raise_for_error() for r in replies]

    for r in range(start, start + rounds):
        keys = [f"t{r}-{i}" for i in range(per_round)]
        subs = batch("submit", [{"task": {"key": k, "module": "explorer", "kind": "ask",
                                          "payload": {"prompt": P}}} for k in keys])
        ids = [s["task"]["id"] for s in subs]
        leases = batch("lease", [{"worker": "w1", "account": "acct", "task_id": t} for t in ids])
        batch("complete", [{"id": t, "epoch": lz["epoch"], "result": {"text": R}}
                           for t, lz in zip(ids, leases, strict=True)])
        batch("txn", [{"module": "explorer", "ops": [{"op": "ack", "task_id": t} for t in ids]}])
        h.clock.advance(60)
        h.tick()


def pages(h) -> tuple[int, int]:
    """(pages holding live data, pages the file has ever used: the high-water mark MAP_FULL is about)."""
    with h.storage.env.begin() as txn:
        live = S.pages_in_use(h.storage, txn)
    return live, h.storage.env.info()["last_pgno"] + 1


@pytest.mark.slow   # over 2 s: left out by -m "not slow" (README, "Tests")
def test_map_use_stops_growing_with_the_bodies(make_core):
    # retention 10 minutes, a minute per round: after the first 10 rounds, each round compacts as many
    # tasks as it adds; the request log and the outbox are pruned too, so what remains per task is its
    # compacted record and index entries (a few hundred bytes, against ~12 KB of bodies)
    h = make_core(broker={"task_retention": 600.0, "request_log_ttl": 300.0, "event_retention": 500})
    n = 20
    per_round = 10
    run_rounds(h, 0, n, per_round)
    live_n, file_n = pages(h)
    run_rounds(h, n, n, per_round)
    live_2n, file_2n = pages(h)
    tasks = n * per_round
    # without compaction each of those tasks adds ~4 pages (the control below); compacted, under half a page
    assert live_2n - live_n < tasks * 0.5, (live_n, live_2n)
    assert file_2n - file_n < tasks * 0.5, (file_n, file_2n)  # freed pages are reused: the file stays put
    compacted = [t for t in h.call("list", state="DONE", limit=1000)["tasks"] if t.get("compacted")]
    assert len(compacted) >= 2 * tasks - 11 * per_round  # all but the last retention's worth
    assert_consistent(h)


def test_without_retention_the_same_loop_grows_by_the_bodies(make_core):
    """The control for the test above: the same loop with retention off grows by pages per task."""
    h = make_core(broker={"task_retention": 0, "request_log_ttl": 300.0, "event_retention": 500})
    run_rounds(h, 0, 5)
    live_a, _ = pages(h)
    run_rounds(h, 5, 5)
    live_b, _ = pages(h)
    assert live_b - live_a > 50 * 2, (live_a, live_b)  # 50 tasks, over two pages each


def test_an_index_put_off_by_a_full_map_is_logged_and_counted(make_core, monkeypatch, caplog):
    """Starting without the ``compactable`` index is tolerated, never silently (issue 12): a warning, and a
    count in the broker's ``errors`` (stats) until a start builds it."""
    h = make_core(broker={"task_retention": RETENTION})
    settle(h, "k")
    with h.storage.env.begin(write=True) as txn:
        txn.drop(h.storage.dbs["compactable"], delete=False)
        txn.delete(b"compactable_built", db=h.storage.dbs["meta"])
    h.close()
    reopen_on_a_full_map(h, monkeypatch, caplog, S, "time_id_key", "COMPACTABLE_INDEX_DEFERRED", "compactable")
    assert h.call("compact", older_than=0)["compacted"] == 1
