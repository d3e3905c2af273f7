"""Task commands through BrokerCore: submit idempotency, request-id replay, list, operator commands."""
from __future__ import annotations

import pytest

from shared import protocol
from tests.unit.corehelp import check_indices, expect_error


def park(core, key: str, **fields) -> int:
    """Submit a task and park it with a terminal failure; returns its id."""
    tid = core.submit(key, max_attempts=1, **fields)["task"]["id"]
    lease = core.lease(task_id=tid)
    core.call("fail", id=tid, epoch=lease["epoch"], error_class="terminal", message="deterministic")
    assert core.get(tid)["state"] == "PARKED"
    return tid


# --- submit ------------------------------------------------------------------------------------------------

def test_submit_creates_a_pending_task(core):
    out = core.submit("k1", payload={"seed": 3}, priority=70, attrs={"seed_priority": 2})
    assert out["created"] and not out["requeued"]
    t = out["task"]
    assert t["id"] == 1 and t["state"] == "PENDING" and t["attempts"] == 0 and t["epoch"] == 0
    assert t["key"] == "k1" and t["module"] == "explorer" and t["kind"] == "ask" and t["priority"] == 70
    assert t["payload"] == {"seed": 3} and t["max_attempts"] == 3 and t["attrs"] == {"seed_priority": 2}
    assert "fp" not in t and "queue" not in t
    assert t["created"] == core.clock.world()
    assert "history" not in t  # replies stay small; get() returns the history
    assert [h["to"] for h in core.get(1)["history"]] == ["PENDING"]
    assert core.submit("k2")["task"]["id"] == 2


def test_same_key_returns_the_same_task(core):
    first = core.submit("k", payload={"a": 1, "b": [1, 2], "c": {"x": 1, "y": 2}})
    again = core.submit("k", payload={"c": {"y": 2, "x": 1}, "b": [1, 2], "a": 1})  # key order differs
    assert not again["created"] and again["task"]["id"] == first["task"]["id"]
    assert core.call("stats")["tasks"]["total"] == 1
    # priority and attrs are scheduling hints, not part of the fingerprint
    assert core.submit("k", payload={"a": 1, "b": [1, 2], "c": {"x": 1, "y": 2}}, priority=1)["task"]["id"] == 1


@pytest.mark.parametrize("change", [
    {"payload": {"a": 2}}, {"payload": {"a": 1, "extra": None}}, {"payload": {"a": [1]}},
    {"kind": "other"}, {"module": "documenter"}, {"requires": {"mode": "deep"}},
])
def test_same_key_different_request_conflicts(core, change):
    core.submit("k", payload={"a": 1})
    fields = {"payload": {"a": 1}, **change}
    exc = expect_error("KEY_CONFLICT", core.submit, "k", **fields)
    assert exc.details == {"id": 1, "key": "k"}
    assert core.call("stats")["tasks"]["total"] == 1


@pytest.mark.parametrize("task,field", [
    ({"module": "explorer", "kind": "ask"}, "key"),
    ({"key": "", "module": "explorer", "kind": "ask"}, "key"),
    ({"key": "a\x00b", "module": "explorer", "kind": "ask"}, "key"),
    ({"key": "x" * 401, "module": "explorer", "kind": "ask"}, "key"),
    ({"key": "k", "module": "Explorer", "kind": "ask"}, "module"),
    ({"key": "k", "kind": "ask"}, "module"),
    ({"key": "k", "module": "explorer"}, "kind"),
    ({"key": "k", "module": "explorer", "kind": "ask", "priority": 2_000_000}, "priority"),
    ({"key": "k", "module": "explorer", "kind": "ask", "priority": True}, "priority"),
    ({"key": "k", "module": "explorer", "kind": "ask", "max_attempts": 0}, "max_attempts"),
    ({"key": "k", "module": "explorer", "kind": "ask", "max_attempts": 101}, "max_attempts"),
    ({"key": "k", "module": "explorer", "kind": "ask", "not_before": "soon"}, "not_before"),
    ({"key": "k", "module": "explorer", "kind": "ask", "not_before": float("nan")}, "not_before"),
    ({"key": "k", "module": "explorer", "kind": "ask", "not_before": float("inf")}, "not_before"),
    ({"key": "k", "module": "explorer", "kind": "ask", "not_before": 1e300}, "not_before"),
    ({"key": "k", "module": "explorer", "kind": "ask", "requires": {"mode": "turbo"}}, "requires"),
    ({"key": "k", "module": "explorer", "kind": "ask", "requires": {"gpu": True}}, "requires"),
    ({"key": "k", "module": "explorer", "kind": "ask", "requires": {"backends": "sim"}}, "requires"),
    ({"key": "k", "module": "explorer", "kind": "ask", "requires": {"backends": [1]}}, "requires"),
    ({"key": "k", "module": "explorer", "kind": "ask", "requires": [1]}, "requires"),
    ({"key": "k", "module": "explorer", "kind": "ask", "attrs": [1]}, "attrs"),
    ({"key": "k", "module": "explorer", "kind": "ask", "colour": "red"}, None),
])
def test_submit_validation(core, task, field):
    exc = expect_error("BAD_ARGUMENT", core.call, "submit", task=task)
    if field:
        assert exc.details.get("field") == field, exc.message
    assert core.call("stats")["tasks"]["total"] == 0
    assert "INTERNAL" not in core.error_counts()


def test_parked_key_refused_then_forced_then_requeued_after_window(core):
    tid = park(core, "det")
    exc = expect_error("KEY_PARKED", core.submit, "det", max_attempts=1)
    assert exc.details == {"id": tid, "key": "det"} and "deterministic" in exc.message
    core.clock.advance(core.cfg.broker.parked_key_window - 10)
    expect_error("KEY_PARKED", core.submit, "det")
    forced = core.submit("det", force=True)
    assert forced["requeued"] and not forced["created"] and forced["task"]["id"] == tid
    t = core.get(tid)
    assert t["state"] == "PENDING" and t["attempts"] == 0 and t["not_before"] == 0.0
    # park it again and let the window pass: resubmission without force requeues it
    lease = core.lease(task_id=tid)
    core.call("fail", id=tid, epoch=lease["epoch"], error_class="terminal", message="again")
    core.clock.advance(core.cfg.broker.parked_key_window + 1)
    out = core.submit("det")
    assert out["requeued"] and out["task"]["state"] == "PENDING"
    assert core.get(tid)["history"][-1]["why"] == "resubmitted"
    check_indices(core)


def test_done_and_cancelled_keys_are_permanent(core):
    tid = core.submit("k")["task"]["id"]
    lease = core.lease()
    core.call("complete", id=tid, epoch=lease["epoch"], result="r")
    out = core.submit("k")
    assert out["task"]["state"] == "DONE" and not out["created"] and not out["requeued"]
    t2 = core.submit("k2")["task"]["id"]
    core.call("cancel", id=t2)
    assert core.submit("k2", force=True)["task"]["state"] == "CANCELLED"


# --- request ids ---------------------------------------------------------------------------------------

def test_retried_request_returns_first_reply_and_applies_once(core):
    rid = protocol.new_id()
    task = {"key": "k", "module": "explorer", "kind": "ask"}
    first = core.call("submit", rid=rid, task=task)
    n_events = len(core.events)
    again = core.call("submit", rid=rid, task=task)
    assert again == first and first["created"]  # the first reply, verbatim: created stays True
    assert len(core.events) == n_events         # nothing happened the second time


def test_retried_lease_returns_same_task_and_epoch_and_leases_once(core):
    core.submit("a")
    core.submit("b")
    rid = protocol.new_id()
    first = core.lease(rid=rid)
    core.clock.advance(1)
    again = core.lease(rid=rid)
    assert again == first and first["task"]["id"] == 1 and first["epoch"] == 1
    t = core.get(1)
    assert t["attempts"] == 1 and t["epoch"] == 1
    assert core.get(2)["state"] == "PENDING"
    assert core.call("stats")["tasks"]["RUNNING"] == 1


def test_retried_cancel_is_not_an_error(core):
    tid = core.submit("k")["task"]["id"]
    rid = protocol.new_id()
    first = core.call("cancel", rid=rid, id=tid)
    assert core.call("cancel", rid=rid, id=tid) == first  # not INVALID_STATE: it is the same request
    expect_error("INVALID_STATE", core.call, "cancel", id=tid)  # a new request is refused


def test_request_id_reused_for_different_request(core):
    rid = protocol.new_id()
    core.call("submit", rid=rid, task={"key": "k", "module": "explorer", "kind": "ask"})
    expect_error("REQUEST_ID_REUSED", core.call, "submit", rid=rid,
                 task={"key": "k2", "module": "explorer", "kind": "ask"})
    expect_error("REQUEST_ID_REUSED", core.call, "cancel", rid=rid, id=1)
    assert core.call("stats")["tasks"]["total"] == 1


def test_failed_request_is_not_recorded_under_its_rid(core):
    rid = protocol.new_id()
    expect_error("NOT_FOUND", core.call, "cancel", rid=rid, id=1)
    core.submit("k")
    assert core.call("cancel", rid=rid, id=1)["state"] == "CANCELLED"


def test_request_ids_in_one_batch(core):
    rid = protocol.new_id()
    frames = protocol.encode_request(protocol.Request(
        "submit", "c1", {"task": {"key": "k", "module": "explorer", "kind": "ask"}}, rid))
    r1, r2 = core.batch([frames, frames])
    assert r1.ok and r2.ok and r1.result == r2.result
    assert core.call("stats")["tasks"]["total"] == 1


# --- get / list ----------------------------------------------------------------------------------------

def test_get_unknown_and_without_history(core):
    expect_error("NOT_FOUND", core.get, 42)
    core.submit("k")
    assert "history" not in core.get(1, history=False)
    assert core.get(1)["history"]


def test_list_filters_and_paging(core):
    for i in range(7):
        core.submit(f"e{i}", module="explorer", kind="explorer.explore" if i % 2 else "ask")
    for i in range(3):
        core.submit(f"d{i}", module="documenter", kind="ask")
    core.call("cancel", id=2)
    core.call("pause", id=3)
    everything = core.call("list")
    assert [t["id"] for t in everything["tasks"]] == list(range(1, 11)) and everything["next"] is None
    assert "history" not in everything["tasks"][0]
    assert [t["id"] for t in core.call("list", module="documenter")["tasks"]] == [8, 9, 10]
    assert [t["id"] for t in core.call("list", kind="explorer.explore")["tasks"]] == [2, 4, 6]
    assert [t["id"] for t in core.call("list", state="CANCELLED")["tasks"]] == [2]
    assert [t["id"] for t in core.call("list", state="PENDING", module="explorer")["tasks"]] == [1, 4, 5, 6, 7]
    assert core.call("list", state="DONE")["tasks"] == []
    expect_error("BAD_ARGUMENT", core.call, "list", state="pending")
    expect_error("BAD_ARGUMENT", core.call, "list", limit=0)
    expect_error("BAD_ARGUMENT", core.call, "list", limit=1001)


def test_list_of_one_modules_pending_tasks_decodes_none_of_the_others(core, monkeypatch):
    """The PENDING index carries each task's row: a module's capacity pass listing its own PENDING tasks
    pays for the other modules' rows, not for their records."""
    from services.broker.tx import Tx
    for i in range(6):
        core.submit(f"e{i}", module="explorer" if i % 3 == 0 else "documenter", kind="ask")
    decoded: list[int] = []
    real = Tx.task
    monkeypatch.setattr(Tx, "task", lambda self, tid: decoded.append(tid) or real(self, tid))
    page = core.call("list", state="PENDING", module="explorer", limit=1)
    assert [t["id"] for t in page["tasks"]] == [1] and decoded == [1]
    page = core.call("list", state="PENDING", module="explorer", after=page["next"])
    assert [t["id"] for t in page["tasks"]] == [4] and decoded == [1, 4] and page["next"] is None


@pytest.mark.parametrize("filters", [{}, {"state": "PENDING"}, {"module": "explorer"}])
def test_list_paging_visits_each_task_once_and_ends(core, filters):
    for i in range(7):
        core.submit(f"k{i}")
    seen, after, pages = [], None, 0
    while True:
        page = core.call("list", after=after, limit=3, **filters)
        seen.extend(t["id"] for t in page["tasks"])
        pages += 1
        assert pages < 10, f"paging does not end: {seen}"
        if page["next"] is None:
            break
        after = page["next"]
    assert seen == list(range(1, 8))
    # a page after the last id is empty, never a restart from the first task
    assert core.call("list", after=7, **filters) == {"tasks": [], "next": None}
    assert core.call("list", after=100, **filters) == {"tasks": [], "next": None}


@pytest.mark.parametrize("filters", [{}, {"state": "PENDING"}, {"module": "explorer"}, {"state": "CANCELLED"}])
def test_list_newest_first_with_before_visits_each_task_once_and_ends(core, filters):
    for i in range(7):
        core.submit(f"k{i}", module="explorer" if i % 2 else "adhoc")
    core.call("cancel", id=3)
    core.call("cancel", id=6)
    want = [t["id"] for t in core.call("list", **filters)["tasks"]][::-1]
    seen, before, pages = [], 2**63, 0
    while True:
        page = core.call("list", before=before, limit=2, **filters)
        seen.extend(t["id"] for t in page["tasks"])
        pages += 1
        assert pages < 10, f"paging does not end: {seen}"
        if page["next"] is None:
            break
        before = page["next"]
    assert seen == want and len(want) > 1
    assert [t["id"] for t in core.call("list", before=5, **filters)["tasks"]] == [i for i in want if i < 5]
    assert core.call("list", before=1, **filters) == {"tasks": [], "next": None}
    assert core.call("list", before=2**64 - 1, **filters)["tasks"][0]["id"] == want[0]   # the largest id: the newest
    expect_error("BAD_ARGUMENT", core.call, "list", before=3, after=1)


# --- operator commands ---------------------------------------------------------------------------------

def test_cancel(core):
    a = core.submit("a")["task"]["id"]
    b = core.submit("b")["task"]["id"]
    out = core.call("cancel", id=a, reason="no longer needed")
    assert out["state"] == "CANCELLED" and out["history"][-1]["why"] == "no longer needed"
    expect_error("INVALID_STATE", core.call, "cancel", id=a)
    expect_error("NOT_FOUND", core.call, "cancel", id=99)
    # a cancelled task is never leased
    assert core.lease()["task"]["id"] == b
    # cancelling a RUNNING task voids its lease: the worker's late result is refused
    out = core.call("cancel", id=b)
    assert out["state"] == "CANCELLED" and out["error"]["class"] == "cancelled"
    expect_error("STALE_EPOCH", core.call, "complete", id=b, epoch=1, result="late")
    assert core.call("stats")["leases"] == 0
    # a parked task (dead letter) can be cancelled too
    c = park(core, "c")
    assert core.call("cancel", id=c)["state"] == "CANCELLED"


def test_pause_and_resume_pending(core):
    a = core.submit("a", priority=90)["task"]["id"]
    b = core.submit("b", priority=10)["task"]["id"]
    assert core.call("pause", id=a)["state"] == "PAUSED"
    expect_error("INVALID_STATE", core.call, "pause", id=a)
    assert core.lease()["task"]["id"] == b
    assert core.call("resume", id=a)["state"] == "PENDING"
    expect_error("INVALID_STATE", core.call, "resume", id=a)
    assert core.lease()["task"]["id"] == a


def test_pause_of_running_task_takes_effect_when_the_lease_ends(core):
    tid = core.submit("a")["task"]["id"]
    lease = core.lease()
    out = core.call("pause", id=tid)
    assert out["state"] == "RUNNING" and out["pause_requested"]
    assert core.call("renew", id=tid, epoch=lease["epoch"], ttl=30)["pause_requested"] is True
    res = core.call("fail", id=tid, epoch=lease["epoch"], error_class="transient", message="boom")
    assert res["state"] == "PAUSED"
    assert core.lease()["task"] is None
    t = core.call("resume", id=tid)
    assert t["state"] == "PENDING" and not t["pause_requested"]


def test_pause_of_running_task_then_lease_expiry_pauses_it(core):
    tid = core.submit("a")["task"]["id"]
    core.lease(ttl=10)
    core.call("pause", id=tid)
    core.clock.advance(11)
    core.tick()
    assert core.get(tid)["state"] == "PAUSED"


def test_resume_of_running_task_withdraws_the_pause_request(core):
    tid = core.submit("a")["task"]["id"]
    lease = core.lease()
    core.call("pause", id=tid)
    assert core.call("resume", id=tid)["pause_requested"] is False
    core.call("fail", id=tid, epoch=lease["epoch"], error_class="transient")
    assert core.get(tid)["state"] == "PENDING"


def test_retry_of_parked_task(core):
    tid = park(core, "p")
    t = core.get(tid)
    assert t["attempts"] == 1 and t["error"]["message"] == "deterministic"
    out = core.call("retry", id=tid)
    assert out["state"] == "PENDING" and out["attempts"] == 0
    expect_error("INVALID_STATE", core.call, "retry", id=tid)
    # retry without resetting attempts grants exactly one more attempt
    lease = core.lease()
    core.call("fail", id=tid, epoch=lease["epoch"], error_class="terminal")
    out = core.call("retry", id=tid, reset_attempts=False)
    assert out["attempts"] == 1 and out["max_attempts"] == 2
    lease = core.lease()
    core.call("fail", id=tid, epoch=lease["epoch"], error_class="transient")
    assert core.get(tid)["state"] == "PARKED"


def test_set_priority_reorders_leasing(core):
    ids = [core.submit(f"k{i}", priority=50)["task"]["id"] for i in range(3)]
    out = core.call("set_priority", id=ids[2], priority=60)
    assert out["priority"] == 60
    assert core.events[-1]["type"] == "task.priority" and core.events[-1]["prev"] == 50
    core.call("set_priority", id=ids[0], priority=-5)
    assert [core.lease(worker=f"w{i}")["task"]["id"] for i in range(3)] == [ids[2], ids[1], ids[0]]
    expect_error("BAD_ARGUMENT", core.call, "set_priority", id=ids[0], priority=10**7)


def test_set_priority_of_running_and_final_tasks(core):
    tid = core.submit("a")["task"]["id"]
    lease = core.lease(ttl=10)
    assert core.call("set_priority", id=tid, priority=5)["state"] == "RUNNING"
    assert core.call("stats")["leases"] == 1  # the lease index survived the reindex
    core.call("complete", id=tid, epoch=lease["epoch"], result=None)
    expect_error("INVALID_STATE", core.call, "set_priority", id=tid, priority=1)


def test_paused_task_priority_change_is_kept_on_resume(core):
    a = core.submit("a", priority=1)["task"]["id"]
    b = core.submit("b", priority=5)["task"]["id"]
    core.call("pause", id=a)
    core.call("set_priority", id=a, priority=100)
    core.call("resume", id=a)
    assert core.lease()["task"]["id"] == a
    assert core.lease()["task"]["id"] == b


def test_stats_counts(core):
    for i in range(3):
        core.submit(f"e{i}")
    core.submit("d", module="documenter")
    core.call("cancel", id=1)
    core.lease(modules=["documenter"])
    s = core.call("stats")
    assert s["tasks"] == {"PENDING": 2, "RUNNING": 1, "DONE": 0, "PARKED": 0, "PAUSED": 0, "CANCELLED": 1,
                          "total": 4}
    assert s["modules"] == {"explorer": {"PENDING": 2, "CANCELLED": 1}, "documenter": {"RUNNING": 1}}
    assert s["ready"] == 2 and s["leases"] == 1 and s["delayed"] == 0
    assert check_indices(core) == {"PENDING": 2, "RUNNING": 1, "CANCELLED": 1}
