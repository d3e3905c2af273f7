"""Storage lifecycle in the broker: large values compressed (old plain values still read) and modules'
working data expiring while the research record stays (services/broker/schema.py, ops_kv.py,
ops_retention.py; docs/storage.md)."""
from __future__ import annotations

import random

from ops.invariants import inspect_snapshot, load_snapshot
from services.broker import schema as S
from services.broker.core import PRUNE_EVERY
from shared import protocol
from tests.unit.corehelp import check_indices, expect_error

RETENTION = 3600.0
PROSE = " ".join(["the Fano plane has seven points and seven lines, each line holds three points"] * 40)


def raw_value(h, db: str, key: bytes) -> bytes:
    with h.storage.env.begin() as txn:
        return bytes(txn.get(key, db=h.storage.dbs[db]))


def housekeep(h, seconds: float) -> None:
    h.clock.advance(max(seconds, PRUNE_EVERY))
    h.tick()


def assert_consistent(h) -> None:
    check_indices(h)
    snap = load_snapshot(env=h.storage.env)
    assert snap.undecodable == []
    report = inspect_snapshot(snap)
    assert report.violations == [], report.violations


# --- the value codec --------------------------------------------------------------------------------------------

def test_encode_value_round_trips_and_compresses_only_what_pays():
    small = {"v": 1, "value": "short"}
    assert S.encode_value(small) == protocol.pack_value(small)            # small: plain msgpack
    big = {"id": 7, "payload": {"prompt": PROSE}, "result": {"text": PROSE}}
    enc = S.encode_value(big)
    assert enc[:2] == S.ZMARK and len(enc) < len(protocol.pack_value(big)) / 5
    assert S.decode_value(enc) == big
    noise = {"blob": random.Random(1).randbytes(4000)}                   # incompressible: stored plain
    assert S.encode_value(noise) == protocol.pack_value(noise)
    assert S.decode_value(S.encode_value(noise)) == noise
    # every plain msgpack value still reads (no msgpack value starts with the marker's 0xC1)
    for obj in (None, 0, -1, "x", [1, 2], {"a": b"\xc1z"}, 2**63):
        assert S.decode_value(protocol.pack_value(obj)) == obj


def test_large_task_and_kv_records_are_stored_compressed(make_core):
    h = make_core()
    tid = h.submit("k1", payload={"prompt": PROSE})["task"]["id"]
    lease = h.lease(task_id=tid)
    h.call("complete", id=tid, epoch=lease["epoch"], result={"text": PROSE})
    h.call("txn", module="explorer", ops=[{"op": "put", "key": "exchanges/t1/001", "value": {"response": PROSE}},
                                          {"op": "ack", "task_id": tid}])
    stored = raw_value(h, "tasks", S.u64(tid))
    assert stored[:2] == S.ZMARK and len(stored) < len(PROSE) / 2
    assert raw_value(h, "kv", S.kv_key("explorer", "exchanges/t1/001"))[:2] == S.ZMARK
    # read back whole through every command that returns them
    t = h.get(tid)
    assert t["payload"]["prompt"] == PROSE and t["result"]["text"] == PROSE
    assert h.call("kv_get", module="explorer", key="exchanges/t1/001")["value"]["response"] == PROSE
    items = h.call("kv_scan", module="explorer", prefix="exchanges/", after=None, limit=10)["items"]
    assert items[0]["value"]["response"] == PROSE
    assert_consistent(h)


def test_a_version_1_database_with_plain_records_opens_migrates_and_reads(make_core):
    h = make_core()
    tid = h.submit("old", payload={"prompt": "p"})["task"]["id"]
    # rewrite the database as a version-1 broker left it: plain msgpack records, version 1
    with h.storage.env.begin() as txn:
        task = S.decode_value(txn.get(S.u64(tid), db=h.storage.dbs["tasks"]))
    task["payload"] = {"prompt": PROSE}
    with h.storage.env.begin(write=True) as txn:
        txn.put(S.u64(tid), protocol.pack_value(task), db=h.storage.dbs["tasks"])
        txn.put(S.kv_key("explorer", "seeds/s1"), protocol.pack_value({"v": 3, "value": {"text": PROSE}}),
                db=h.storage.dbs["kv"])
        txn.put(S.state_key("PENDING", tid), b"", db=h.storage.dbs["by_state"])   # no rows before version 3
        txn.put(b"schema_version", protocol.pack_value(1), db=h.storage.dbs["meta"])
    h.restart()
    with h.storage.env.begin() as txn:
        assert protocol.unpack_value(txn.get(b"schema_version", db=h.storage.dbs["meta"])) == S.SCHEMA_VERSION == 3
    assert h.get(tid)["payload"]["prompt"] == PROSE
    assert h.call("kv_get", module="explorer", key="seeds/s1") == {"key": "seeds/s1", "version": 3,
                                                                   "value": {"text": PROSE}}
    # an old record rewritten by the new broker is stored compressed from then on
    h.call("txn", module="explorer", ops=[{"op": "put", "key": "seeds/s1", "value": {"text": PROSE},
                                           "if_version": 3}])
    assert raw_value(h, "kv", S.kv_key("explorer", "seeds/s1"))[:2] == S.ZMARK
    assert_consistent(h)


# --- working data -----------------------------------------------------------------------------------------------

def put(h, key, value=None, working=None, module="explorer", **extra):
    op = {"op": "put", "key": key, "value": value if value is not None else {"text": key}, **extra}
    if working is not None:
        op["working"] = working
    return h.call("txn", module=module, ops=[op])


def keys(h, module="explorer", prefix=""):
    return [i["key"] for i in h.call("kv_scan", module=module, prefix=prefix, after=None, limit=1000)["items"]]


def test_working_data_expires_after_retention_and_the_record_stays(make_core):
    h = make_core(broker={"working_retention": RETENTION})
    put(h, "errors/000000000001", working=True)
    put(h, "errors/000000000002", working=True, module="documenter")
    put(h, "insights/t1.i1")                                     # research record: no flag
    put(h, "exchanges/t1/001", working=False)
    housekeep(h, RETENTION - 60)
    assert "errors/000000000001" in keys(h) and keys(h, "documenter") == ["errors/000000000002"]
    housekeep(h, 120)
    assert keys(h) == ["exchanges/t1/001", "insights/t1.i1"]
    assert keys(h, "documenter") == []
    with h.storage.env.begin() as txn:
        assert txn.stat(h.storage.dbs["kv_expiry"])["entries"] == 0
    housekeep(h, 100 * RETENTION)                                # the record is kept forever
    assert keys(h) == ["exchanges/t1/001", "insights/t1.i1"]
    assert_consistent(h)


def test_a_later_put_replaces_the_expiry_and_a_delete_drops_it(make_core):
    h = make_core(broker={"working_retention": RETENTION})
    put(h, "jobs/a", working=True)
    put(h, "jobs/b", working=True)
    put(h, "jobs/c", working=True)
    housekeep(h, RETENTION / 2)
    put(h, "jobs/a", if_version=1)                               # promoted to a kept record
    put(h, "jobs/b", working=True, if_version=1)                 # counts from its last put
    h.call("txn", module="explorer", ops=[{"op": "delete", "key": "jobs/c"}])
    with h.storage.env.begin() as txn:
        assert txn.stat(h.storage.dbs["kv_expiry"])["entries"] == 1   # only jobs/b's current expiry
    housekeep(h, RETENTION / 2 + 60)
    assert keys(h) == ["jobs/a", "jobs/b"]
    housekeep(h, RETENTION / 2)
    assert keys(h) == ["jobs/a"]
    h.restart()                                                  # nothing of it lives in memory
    assert keys(h) == ["jobs/a"]


def test_expiry_is_bounded_per_pass(make_core, monkeypatch):
    from services.broker import ops_retention
    monkeypatch.setattr(ops_retention, "EXPIRE_BATCH", 3)
    h = make_core(broker={"working_retention": RETENTION})
    h.call("txn", module="researcher", ops=[{"op": "put", "key": f"errors/{i:012d}", "value": {}, "working": True}
                                            for i in range(7)])
    housekeep(h, RETENTION + 1)
    assert len(keys(h, "researcher")) == 4
    housekeep(h, PRUNE_EVERY)
    housekeep(h, PRUNE_EVERY)
    assert keys(h, "researcher") == []


def test_working_retention_zero_keeps_everything_and_bad_flags_are_refused(make_core):
    h = make_core(broker={"working_retention": 0})
    put(h, "errors/000000000001", working=True)
    housekeep(h, 1e9)
    assert keys(h) == ["errors/000000000001"]
    expect_error("BAD_ARGUMENT", put, h, "x", working="yes")
    expect_error("BAD_ARGUMENT", h.call, "txn", module="explorer",
                 ops=[{"op": "delete", "key": "x", "working": True}])
    assert h.call("ping") is not None                            # the broker keeps answering


# --- the request log --------------------------------------------------------------------------------------------

def test_the_request_log_keeps_no_copy_of_a_prompt_and_replays_the_same_reply(make_core):
    h = make_core()
    task = {"key": "k1", "module": "explorer", "kind": "ask", "payload": {"prompt": PROSE, "turn": 1}}
    first = h.reply("submit", rid="rid-submit", task=task, force=False)
    lease = h.reply("lease", rid="rid-lease-1", worker="w1", account="acct")
    for rid, rep in (("rid-submit", first), ("rid-lease-1", lease)):
        assert rep.result["task"]["payload"]["prompt"] == PROSE
        with h.storage.env.begin() as txn:
            logged = S.decode_value(txn.get(rid.encode(), db=h.storage.dbs["requests"]))
        assert logged["payload_of"] == rep.result["task"]["id"]
        assert PROSE[:200] not in str(protocol.unpack_value(logged["reply"]))   # the prompt is the task's only
    # retries (same request ids) are answered from the log with exactly the reply that was sent
    assert h.reply("submit", rid="rid-submit", task=task, force=False).result == first.result
    assert h.reply("lease", rid="rid-lease-1", worker="w1", account="acct").result == lease.result
    # a reply without a payload is logged as it is
    h.reply("complete", rid="rid-done-1", id=lease.result["task"]["id"], epoch=lease.result["epoch"],
            result={"text": "short"})
    with h.storage.env.begin() as txn:
        assert "payload_of" not in S.decode_value(txn.get(b"rid-done-1", db=h.storage.dbs["requests"]))
    assert_consistent(h)


def test_the_checker_sees_a_working_key_and_its_expiry_out_of_step(make_core):
    h = make_core(broker={"working_retention": RETENTION})
    put(h, "errors/000000000001", working=True)
    put(h, "errors/000000000002", working=True)
    assert_consistent(h)
    with h.storage.env.begin(write=True) as txn:     # lose one index entry, as a bug would
        cur = txn.cursor(db=h.storage.dbs["kv_expiry"])
        cur.first()
        cur.delete()
    violations = inspect_snapshot(load_snapshot(env=h.storage.env)).violations
    assert any("filed 0 times in kv_expiry" in v for v in violations), violations
