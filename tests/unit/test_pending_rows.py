"""PENDING rows (services/broker/schema.py, version 3): a PENDING task's ``by_state`` value is the row a
scheduler places it by; ``list(state="PENDING", rows=true)`` returns them without reading a task record."""
from __future__ import annotations

import lmdb
import pytest

from ops.invariants import inspect_snapshot, load_snapshot
from services.broker import schema as S
from services.broker.tx import Tx
from services.scheduler.priority import QTask
from shared import protocol
from shared.records import PENDING_ROW
from tests.unit.corehelp import check_indices, expect_error, reopen_on_a_full_map


def rows(h, **args) -> list[list]:
    """Every PENDING row, paging with ``next``."""
    out, after = [], None
    while True:
        page = h.call("list", state="PENDING", rows=True, after=after, **args)
        out += protocol.unpack_rows(page["rows"], page["count"])
        if page["next"] is None:
            return out
        after = page["next"]


def records(h) -> dict[int, dict]:
    page = h.call("list", state="PENDING", limit=1000)
    assert page["next"] is None
    return {t["id"]: t for t in page["tasks"]}


def fields(t: QTask) -> dict:
    return {name: getattr(t, name) for name in QTask.FIELDS}


def assert_rows_match(h) -> None:
    """The rows are the PENDING tasks, each as its record says now, and the scheduler reads both alike."""
    check_indices(h)   # every by_state value: the row of a PENDING task's record, empty otherwise
    recs = records(h)
    got = rows(h)
    assert [r[0] for r in got] == sorted(recs)
    for row in got:
        assert dict(zip(PENDING_ROW, row, strict=True))["id"] == row[0]
        assert fields(QTask.from_row(row)) == fields(QTask.from_fields(recs[row[0]])), (row, recs[row[0]])


def test_rows_follow_every_transition_of_a_pending_task(make_core):
    h = make_core()
    a = h.submit("a", requires={"mode": "standard", "backends": ["acct"]}, attrs={"seed_priority": 2.5})["task"]["id"]
    b = h.submit("b", not_before=h.clock.world() + 60)["task"]["id"]   # delayed
    c = h.submit("c", priority=70)["task"]["id"]
    assert_rows_match(h)
    h.call("set_priority", id=a, priority=90)                            # reindexed while PENDING
    assert rows(h)[0][3] == 90
    assert_rows_match(h)
    h.call("pause", id=c)                                                # leaves PENDING: no row
    assert [r[0] for r in rows(h)] == [a, b]
    h.call("resume", id=c)
    assert_rows_match(h)
    h.clock.advance(10)
    lease = h.lease(task_id=a)                                           # RUNNING
    assert [r[0] for r in rows(h)] == [b, c]
    h.call("fail", id=a, epoch=lease["epoch"], error_class="transient", message="x", sent=False)
    row = {r[0]: r for r in rows(h)}[a]                                  # back with a backoff
    assert row[5] > h.clock.world() and row[6] == h.clock.world()        # not_before, pending_since
    assert_rows_match(h)
    h.clock.advance(3600)
    h.tick()                                                             # due: ready again
    lease = h.lease(task_id=a)
    h.call("turn_begin", id=a, epoch=lease["epoch"])
    h.clock.advance(h.cfg.broker.lease_ttl + 1)
    h.tick()                                                             # expired mid-request: unknown turn
    row = {r[0]: r for r in rows(h)}[a]
    assert row[9] == "acct" and h.get(a)["unknown_turn"]["account"] == "acct"
    assert_rows_match(h)
    lease = h.lease(task_id=c)
    h.call("complete", id=c, epoch=lease["epoch"], result={"text": "ok"})
    h.call("cancel", id=b, reason="test")
    assert [r[0] for r in rows(h)] == [a]
    assert_rows_match(h)


def test_listing_rows_reads_no_task_record(make_core, monkeypatch):
    """O(PENDING), whatever the history holds: the rows are the index's values."""
    h = make_core()
    for i in range(60):
        tid = h.submit(f"done{i}")["task"]["id"]
        lease = h.lease(task_id=tid)
        h.call("complete", id=tid, epoch=lease["epoch"], result={})
    pending = [h.submit(f"p{i}")["task"]["id"] for i in range(3)]
    reads = []
    real = Tx.task
    monkeypatch.setattr(Tx, "task", lambda tx, tid: reads.append(tid) or real(tx, tid))
    assert [r[0] for r in rows(h)] == pending
    assert reads == []


def test_rows_page_by_limit_and_by_bytes(make_core, monkeypatch):
    h = make_core()
    ids = [h.submit(f"k{i}")["task"]["id"] for i in range(25)]
    page = h.call("list", state="PENDING", rows=True, limit=10)
    assert page["count"] == 10 and page["next"] == ids[9]
    page = h.call("list", state="PENDING", rows=True, limit=10, after=ids[19])
    assert page["count"] == 5 and page["next"] is None          # the end: no empty page after it
    assert [r[0] for r in rows(h, limit=10)] == ids
    size = len(S.pending_row(h.get(ids[0])))
    monkeypatch.setattr("services.broker.ops_tasks.PAGE_BYTES", 3 * size)
    page = h.call("list", state="PENDING", rows=True, limit=1000)
    assert page["count"] == 3 and page["next"] == ids[2]
    assert [r[0] for r in rows(h, limit=1000)] == ids


@pytest.mark.parametrize("args", [{"state": "RUNNING"}, {"state": None}, {"state": "PENDING", "module": "explorer"},
                                  {"state": "PENDING", "before": 10}, {"state": "PENDING", "limit": 0},
                                  {"state": "PENDING", "limit": 100_001}])
def test_rows_refuse_what_they_do_not_list(make_core, args):
    h = make_core()
    h.submit("a")
    expect_error("BAD_ARGUMENT", h.call, "list", rows=True, **args)


def version_2(h) -> None:
    """Rewrite the database as a version-2 broker left it: PENDING entries without rows."""
    with h.storage.env.begin(write=True) as txn:
        cur = txn.cursor(db=h.storage.dbs["by_state"])
        for key in list(cur.iternext(keys=True, values=False)):
            txn.put(key, b"", db=h.storage.dbs["by_state"])
        txn.put(b"schema_version", protocol.pack_value(2), db=h.storage.dbs["meta"])


def test_a_version_2_database_gets_its_rows_when_opened(make_core):
    h = make_core()
    a = h.submit("a", attrs={"comment_boost": 5})["task"]["id"]
    h.submit("b", not_before=h.clock.world() + 60)
    r = h.submit("r")["task"]["id"]
    h.lease(task_id=r)
    d = h.submit("d")["task"]["id"]
    h.call("complete", id=d, epoch=h.lease(task_id=d)["epoch"], result={})
    h.call("set_priority", id=a, priority=10)
    version_2(h)
    h.restart()
    with h.storage.env.begin() as txn:
        assert protocol.unpack_value(txn.get(b"schema_version", db=h.storage.dbs["meta"])) == S.SCHEMA_VERSION == 3
    assert_rows_match(h)
    assert len(rows(h)) == 2


def test_an_entry_without_its_row_is_listed_from_the_record(make_core):
    h = make_core()
    ids = [h.submit(f"k{i}", priority=40 + i)["task"]["id"] for i in range(3)]
    want = rows(h)
    with h.storage.env.begin(write=True) as txn:
        txn.put(S.state_key("PENDING", ids[1]), b"", db=h.storage.dbs["by_state"])
    assert rows(h) == want


def test_a_newer_database_is_refused(make_core):
    h = make_core()
    with h.storage.env.begin(write=True) as txn:
        txn.put(b"schema_version", protocol.pack_value(S.SCHEMA_VERSION + 1), db=h.storage.dbs["meta"])
    h.close()
    with pytest.raises(S.SchemaError):
        h.open()


def test_the_invariant_checker_finds_a_stale_row(make_core):
    """The crash and chaos tiers check every database they leave (ops/invariants.py): rows included."""
    h = make_core()
    tid = h.submit("a")["task"]["id"]
    assert inspect_snapshot(load_snapshot(env=h.storage.env)).violations == []
    stale = dict(h.get(tid), priority=99)
    with h.storage.env.begin(write=True) as txn:
        txn.put(S.state_key("PENDING", tid), S.pending_row(stale), db=h.storage.dbs["by_state"])
    violations = inspect_snapshot(load_snapshot(env=h.storage.env)).violations
    assert len(violations) == 1 and violations[0].startswith("[by_state]") and f"task {tid}" in violations[0]


def test_a_full_map_during_the_migration_does_not_stop_the_broker(make_core, monkeypatch):
    """The rows are written at a later start; meanwhile list makes them from the records."""
    h = make_core()
    ids = [h.submit(f"k{i}", priority=40 + i)["task"]["id"] for i in range(4)]
    want = rows(h)
    version_2(h)
    h.close()

    def full(task):
        raise lmdb.MapFullError("mdb_put: MDB_MAP_FULL")
    monkeypatch.setattr(S, "pending_row", full)
    h.open()
    monkeypatch.undo()
    with h.storage.env.begin() as txn:
        assert protocol.unpack_value(txn.get(b"schema_version", db=h.storage.dbs["meta"])) == 3
        assert txn.get(S.ROWS_MISSING, db=h.storage.dbs["meta"]) is not None
    assert rows(h) == want and [r[0] for r in want] == ids
    assert inspect_snapshot(load_snapshot(env=h.storage.env)).violations == []
    h.restart()   # a later start writes them
    with h.storage.env.begin() as txn:
        assert txn.get(S.ROWS_MISSING, db=h.storage.dbs["meta"]) is None
    assert_rows_match(h)


def test_rows_put_off_by_a_full_map_are_logged_and_counted(make_core, monkeypatch, caplog):
    """Starting without the rows is tolerated, never silently (issue 12): a warning, and a count in the
    broker's ``errors`` (stats) until a start writes them."""
    h = make_core()
    h.submit("a")
    version_2(h)
    h.close()
    reopen_on_a_full_map(h, monkeypatch, caplog, S, "pending_row", "PENDING_ROWS_DEFERRED", "PENDING rows")
