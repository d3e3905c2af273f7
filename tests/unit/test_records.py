"""shared/records.py describes what the broker answers: every field a real reply carries is declared there,
and every required field is present (the in-process broker core, real LMDB)."""
from __future__ import annotations

from typing import Any

from shared import protocol, txn
from shared import records as RC
from tests.unit.corehelp import CoreHarness


def check(shape: Any, value: dict, what: str, where: str = "shared/records.py") -> None:
    """``value`` has every required field of TypedDict ``shape`` (declared in ``where``) and no other."""
    keys = set(value)
    missing = set(shape.__required_keys__) - keys
    unknown = keys - set(shape.__required_keys__) - set(shape.__optional_keys__)
    assert not missing, f"{what}: {shape.__name__} requires {sorted(missing)}, the reply has {sorted(keys)}"
    assert not unknown, f"{what}: fields {sorted(unknown)} are not in {where} {shape.__name__}"


def test_task_records_submit_and_lease_replies_have_the_declared_fields(core: CoreHarness):
    sub = core.submit("k1", requires={"mode": "standard"})
    check(RC.SubmitReply, sub, "submit")
    check(RC.TaskRecord, sub["task"], "submit's task")

    lease = core.lease()
    check(RC.LeaseReply, lease, "lease")
    check(RC.TaskRecord, lease["task"], "the leased task")
    check(RC.TaskLease, lease["task"]["lease"], "task.lease")
    check(RC.LeaseReply, core.lease(), "an empty lease")

    core.call("fail", id=lease["task"]["id"], epoch=lease["epoch"], error_class="transient", message="x")
    got = core.get(lease["task"]["id"])
    check(RC.TaskRecord, got, "get")
    check(RC.TaskError, got["error"], "task.error")
    for h in got["history"]:
        check(RC.Transition, h, "a history entry")

    page = core.call("list", limit=10, payloads=True)
    check(RC.TaskPage, page, "list")
    for t in page["tasks"]:
        check(RC.TaskRecord, t, "a listed task")
    rows = core.call("list", state="PENDING", rows=True, limit=10)
    check(RC.RowPage, rows, "list with rows")
    assert [len(row) for row in protocol.unpack_rows(rows["rows"], rows["count"])] == [len(RC.PENDING_ROW)]


def test_done_tasks_pages_kv_and_events_have_the_declared_fields(core: CoreHarness):
    tid = core.submit("k2")["task"]["id"]
    lease = core.lease()
    core.call("complete", id=tid, epoch=lease["epoch"], result={"text": "done"})
    check(RC.TaskRecord, core.get(tid), "a DONE task")
    check(RC.TaskPage, core.call("unconsumed", module="explorer", after=None, limit=10), "unconsumed")

    core.call("txn", module="explorer", ops=[txn.put("a", {"x": 1})])
    check(RC.KvItem, core.call("kv_get", module="explorer", key="a"), "kv_get")
    scan = core.call("kv_scan", module="explorer", prefix="", after=None, limit=10)
    check(RC.KvPage, scan, "kv_scan")
    check(RC.KvItem, scan["items"][0], "a kv_scan item")

    evs = core.call("events", after=0, limit=100)
    check(RC.EventsReply, evs, "events")
    for e in evs["events"]:
        if e["type"].startswith("task.") and e["type"] not in ("task.submitted",):
            for field in ("seq", "ts", "type", "id", "module"):
                assert field in e, (field, e)
