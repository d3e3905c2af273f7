"""Module transactions and the kv namespace; the event outbox; behaviour when the LMDB map fills up."""
from __future__ import annotations

import os

import lmdb
import pytest

from shared import protocol
from tests.unit.corehelp import check_indices, expect_error


def txn(core, *ops, module="explorer", rid=None):
    return core.call("txn", rid=rid, module=module, ops=list(ops))


def put(key, value, if_version=None):
    op = {"op": "put", "key": key, "value": value}
    if if_version is not None:
        op["if_version"] = if_version
    return op


def settle(core, key: str) -> int:
    tid = core.submit(key)["task"]["id"]
    lease = core.lease(task_id=tid)
    core.call("complete", id=tid, epoch=lease["epoch"], result={"answer": key})
    return tid


# --- txn: kv writes ---------------------------------------------------------------------------------------

def test_put_versions_and_get(core):
    assert core.call("kv_get", module="explorer", key="insight/1") is None
    out = txn(core, put("insight/1", {"text": "a"}))
    assert out == {"applied": True, "results": [{"key": "insight/1", "version": 1}]}
    assert txn(core, put("insight/1", {"text": "b"}))["results"][0]["version"] == 2
    assert core.call("kv_get", module="explorer", key="insight/1") == {
        "key": "insight/1", "version": 2, "value": {"text": "b"}}
    # namespaces are separate
    assert core.call("kv_get", module="documenter", key="insight/1") is None


def test_conditional_put_delete_check(core):
    # if_version 0: must not exist yet
    txn(core, put("doc", "v1", if_version=0))
    exc = expect_error("CONDITION_FAILED", txn, core, put("doc", "again", if_version=0))
    assert exc.details == {"index": 0, "key": "doc", "version": 1}
    txn(core, put("doc", "v2", if_version=1))
    expect_error("CONDITION_FAILED", txn, core, put("doc", "stale", if_version=1))
    assert txn(core, {"op": "check", "key": "doc", "if_version": 2})["results"] == [{"key": "doc", "version": 2}]
    expect_error("CONDITION_FAILED", txn, core, {"op": "check", "key": "doc", "if_version": 0})
    assert txn(core, {"op": "check", "key": "nothing", "if_version": 0})["results"][0]["version"] == 0
    expect_error("CONDITION_FAILED", txn, core, {"op": "delete", "key": "doc", "if_version": 1})
    assert txn(core, {"op": "delete", "key": "doc", "if_version": 2})["results"] == [{"key": "doc", "deleted": True}]
    assert core.call("kv_get", module="explorer", key="doc") is None
    assert txn(core, {"op": "delete", "key": "doc"})["results"] == [{"key": "doc", "deleted": False}]
    # a re-created key starts again at version 1
    assert txn(core, put("doc", "new", if_version=0))["results"][0]["version"] == 1


def test_condition_failure_rolls_back_everything(core):
    txn(core, put("a", 1), put("b", 1))
    n_events = len(core.events)
    done = settle(core, "finished")
    exc = expect_error("CONDITION_FAILED", txn, core,
                       put("a", 2), {"op": "delete", "key": "b"},
                       {"op": "submit", "task": {"key": "follow-up", "module": "explorer", "kind": "ask"}},
                       {"op": "ack", "task_id": done},
                       put("c", 1, if_version=5))
    assert exc.details["index"] == 4
    assert core.call("kv_get", module="explorer", key="a")["value"] == 1
    assert core.call("kv_get", module="explorer", key="b") is not None
    assert core.call("kv_get", module="explorer", key="c") is None
    assert [t["key"] for t in core.call("list")["tasks"]] == ["finished"]     # the submit was rolled back
    assert core.get(done)["consumed"] is False                               # and the ack
    assert not any(e["type"] in ("task.submitted", "task.consumed") and e.get("key") == "follow-up"
                   for e in core.events[n_events:])


def test_submit_inside_txn(core):
    out = txn(core, put("seed/1", {"q": "why"}),
              {"op": "submit", "task": {"key": "explore:1", "module": "explorer", "kind": "explorer.explore",
                                        "payload": {"seed": 1}}})
    assert out["results"][1] == {"id": 1, "created": True, "requeued": False, "state": "PENDING"}
    again = txn(core, {"op": "submit", "task": {"key": "explore:1", "module": "explorer",
                                                "kind": "explorer.explore", "payload": {"seed": 1}}})
    assert again["results"][0]["created"] is False
    expect_error("KEY_CONFLICT", txn, core, put("x", 1),
                 {"op": "submit", "task": {"key": "explore:1", "module": "explorer", "kind": "other"}})
    assert core.call("kv_get", module="explorer", key="x") is None
    assert [e["type"] for e in core.events].count("task.submitted") == 1


def test_ack_marks_consumed_and_replay_applies_nothing(core):
    tid = settle(core, "t")
    out = txn(core, put("insight/9", "from t"), {"op": "ack", "task_id": tid},
              {"op": "submit", "task": {"key": "review:9", "module": "explorer", "kind": "review"}})
    assert out["applied"] and out["results"][1] == {"acked": tid}
    assert core.get(tid)["consumed"] is True
    assert any(e["type"] == "task.consumed" and e["id"] == tid and e["by"] == "explorer" for e in core.events)
    n_events = len(core.events)
    # the module crashed before it saw the reply and replays the same effect (new request id)
    replay = txn(core, put("insight/9", "from t"), {"op": "ack", "task_id": tid},
                 {"op": "submit", "task": {"key": "review:10", "module": "explorer", "kind": "review"}})
    assert replay == {"applied": False, "reason": "already consumed", "task_id": tid}
    assert core.call("kv_get", module="explorer", key="insight/9")["version"] == 1
    assert [t["key"] for t in core.call("list")["tasks"]] == ["t", "review:9"]
    assert len(core.events) == n_events


def test_an_unusable_answer_is_kept_as_the_done_tasks_error(core):
    tid = settle(core, "t")
    txn(core, put("errors/1", "x"), {"op": "ack", "task_id": tid, "unusable": "unusable answer: no RATING:"})
    task = core.get(tid)
    assert task["state"] == "DONE" and task["consumed"]
    assert task["error"]["class"] == "unusable" and task["error"]["module"] == "explorer"
    assert task["error"]["message"] == "unusable answer: no RATING:"
    other = settle(core, "u")
    expect_error("BAD_ARGUMENT", txn, core, {"op": "ack", "task_id": other, "unusable": 3})
    assert not core.get(other)["consumed"]


def test_an_unusable_note_never_replaces_a_parked_tasks_own_error(core):
    tid = core.submit("t", max_attempts=1)["task"]["id"]
    lease = core.lease()
    core.call("fail", id=tid, epoch=lease["epoch"], error_class="terminal", message="context overflow")
    txn(core, {"op": "ack", "task_id": tid, "unusable": "task PARKED: context overflow"})
    assert core.get(tid)["error"]["class"] == "terminal"


@pytest.mark.parametrize("state", ["PARKED", "CANCELLED"])
def test_ack_of_other_settled_states(core, state):
    tid = core.submit("t", max_attempts=1)["task"]["id"]
    if state == "PARKED":
        lease = core.lease()
        core.call("fail", id=tid, epoch=lease["epoch"], error_class="terminal")
    else:
        core.call("cancel", id=tid)
    assert txn(core, {"op": "ack", "task_id": tid})["applied"]
    assert core.get(tid)["consumed"]


def test_ack_of_unsettled_task_is_invalid_state(core):
    tid = core.submit("t")["task"]["id"]
    exc = expect_error("INVALID_STATE", txn, core, put("x", 1), {"op": "ack", "task_id": tid})
    assert exc.details == {"index": 1, "id": tid}
    core.lease()
    expect_error("INVALID_STATE", txn, core, {"op": "ack", "task_id": tid})
    expect_error("NOT_FOUND", txn, core, {"op": "ack", "task_id": 999})
    assert core.call("kv_get", module="explorer", key="x") is None


def test_retried_txn_with_same_rid_returns_first_reply(core):
    tid = settle(core, "t")
    rid = protocol.new_id()
    first = txn(core, put("k", 1), {"op": "ack", "task_id": tid}, rid=rid)
    assert txn(core, put("k", 1), {"op": "ack", "task_id": tid}, rid=rid) == first
    assert first["applied"]


@pytest.mark.parametrize("ops", [
    [],
    [{"op": "upsert", "key": "a"}],
    ["put"],
    [{"op": "put", "key": "", "value": 1}],
    [{"op": "put", "key": "a\x00b", "value": 1}],
    [{"op": "put", "key": "x" * 401, "value": 1}],
    [{"op": "put", "key": 5, "value": 1}],
    [{"op": "put", "key": "a", "value": 1, "if_version": -1}],
    [{"op": "put", "key": "a", "value": 1, "if_version": "1"}],
    [{"op": "put", "key": "a", "value": 1, "if_version": True}],
    [{"op": "put", "key": "a", "value": 1, "colour": "red"}],
    [{"op": "ack", "task_id": "1"}],
    [{"op": "submit", "task": "nope"}],
    [{"op": "put", "key": "a", "value": 1}] * 501,
])
def test_txn_validation(core, ops):
    expect_error("BAD_ARGUMENT", core.call, "txn", module="explorer", ops=ops)
    assert core.call("kv_scan", module="explorer")["items"] == []
    assert "INTERNAL" not in core.error_counts()


def test_txn_bad_module_name(core):
    expect_error("BAD_ARGUMENT", core.call, "txn", module="Bad/Module", ops=[put("a", 1)])


# --- kv_get / kv_scan ------------------------------------------------------------------------------------

def test_kv_scan_versions_names_each_records_version_without_its_value(core):
    prose = " ".join(f"word{i}" for i in range(2000))   # stored compressed (over 1 KiB of msgpack)
    txn(core, put("ins/a", {"text": prose}), put("ins/b", 1), put("ins/c", {"n": [1] * 300}), put("other", 2))
    txn(core, put("ins/a", {"text": prose + " more"}), put("ins/c", {"n": [2] * 300}))
    txn(core, put("ins/c", "short now"))
    page = core.call("kv_scan", module="explorer", prefix="ins/", versions=True)
    assert page == {"items": [["ins/a", 2], ["ins/b", 1], ["ins/c", 3]], "next": None}
    first = core.call("kv_scan", module="explorer", prefix="ins/", versions=True, limit=2)
    assert first["items"] == [["ins/a", 2], ["ins/b", 1]] and first["next"] == "ins/b"
    expect_error("BAD_ARGUMENT", core.call, "kv_scan", module="explorer", versions="yes")


def test_stored_version_reads_the_head_and_falls_back_to_the_whole_record():
    import msgpack

    from services.broker.schema import encode_value
    from shared.stored import stored_version
    big = {"v": 7, "value": "x " * 5000}
    assert encode_value(big)[:2] == b"\xc1z" and stored_version(encode_value(big)) == 7
    assert stored_version(encode_value({"v": 2**40, "value": 1})) == 2**40
    # a record written with another key order (none is, today) is decoded whole
    assert stored_version(msgpack.packb({"value": "y", "v": 3})) == 3


def test_kv_scan_prefix_and_paging(core):
    keys = ["doc/a", "doc/b", "doc/b/1", "doc/c", "insight/1", "insight/2", "insight/10", "z"]
    txn(core, *[put(k, k.upper()) for k in keys])
    txn(core, put("doc/zzz", 1), module="documenter")  # another module's namespace
    all_items = core.call("kv_scan", module="explorer")
    assert [i["key"] for i in all_items["items"]] == sorted(keys) and all_items["next"] is None
    assert all_items["items"][0] == {"key": "doc/a", "version": 1, "value": "DOC/A"}
    assert [i["key"] for i in core.call("kv_scan", module="explorer", prefix="insight/")["items"]] == [
        "insight/1", "insight/10", "insight/2"]
    assert core.call("kv_scan", module="explorer", prefix="nothing/")["items"] == []
    # paging with a prefix
    seen, after, pages = [], None, 0
    while True:
        page = core.call("kv_scan", module="explorer", prefix="doc/", after=after, limit=2)
        seen.extend(i["key"] for i in page["items"])
        pages += 1
        assert pages < 10
        if page["next"] is None:
            break
        after = page["next"]
    assert seen == ["doc/a", "doc/b", "doc/b/1", "doc/c"]
    # "after" is exclusive and does not skip keys that extend it
    assert [i["key"] for i in core.call("kv_scan", module="explorer", after="doc/b")["items"]][:2] == [
        "doc/b/1", "doc/c"]
    expect_error("BAD_ARGUMENT", core.call, "kv_scan", module="explorer", limit=0)


def test_kv_scan_after_before_the_prefix_starts_at_the_prefix(core):
    txn(core, put("a", 1), put("a1", 1), put("b1", 1), put("b2", 1), put("c", 1))
    page = core.call("kv_scan", module="explorer", prefix="b", after="a")
    assert [i["key"] for i in page["items"]] == ["b1", "b2"]


def test_kv_get_validation(core):
    expect_error("BAD_ARGUMENT", core.call, "kv_get", module="explorer", key="")
    expect_error("BAD_ARGUMENT", core.call, "kv_get", module="No", key="k")


# --- events ------------------------------------------------------------------------------------------------

def test_every_transition_emits_an_event_with_consecutive_seq(core):
    a = core.submit("a")["task"]["id"]
    core.submit("b")
    lease = core.lease()
    core.call("complete", id=a, epoch=lease["epoch"], result=1)
    core.call("pause", id=2)
    core.call("resume", id=2)
    core.call("cancel", id=2)
    core.call("quota_set", account="acct", mode="standard", windows=["5/day"])
    core.call("cooldown", account="acct", until=core.clock.world() + 5)
    seqs = [e["seq"] for e in core.events]
    assert seqs == list(range(1, len(seqs) + 1))
    assert [e["type"] for e in core.events] == [
        "task.submitted", "task.submitted", "task.running", "task.done", "task.paused", "task.pending",
        "task.cancelled", "quota.set", "account.cooldown"]
    for e in core.events:
        assert e["ts"] == core.clock.world()
    # reads and failed requests emit nothing
    core.call("get", id=a)
    expect_error("INVALID_STATE", core.call, "cancel", id=2)
    assert core.call("events", after=0)["last_seq"] == len(seqs)
    # the outbox holds exactly what was published
    assert core.call("events", after=0)["events"] == core.events


def test_events_paging_and_truncation(make_core):
    core = make_core(broker={"event_retention": 5})
    for i in range(12):
        core.submit(f"k{i}")
    page = core.call("events", after=3, limit=4)
    assert [e["seq"] for e in page["events"]] == [4, 5, 6, 7]
    assert page["last_seq"] == 12 and not page["truncated"]
    assert core.call("events", after=12)["events"] == []
    expect_error("BAD_ARGUMENT", core.call, "events", limit=0)
    # pruning runs every few seconds of broker time; it keeps the last `event_retention` events
    core.clock.advance(10)
    core.tick()
    page = core.call("events", after=0)
    assert [e["seq"] for e in page["events"]] == [8, 9, 10, 11, 12]
    assert page["truncated"]            # seq 1..7 are gone: the subscriber must resync from state
    assert not core.call("events", after=7)["truncated"]


def test_request_log_is_pruned_after_its_ttl(make_core):
    core = make_core(broker={"request_log_ttl": 100.0})
    rid = protocol.new_id()
    task = {"key": "k", "module": "explorer", "kind": "ask"}
    core.call("submit", rid=rid, task=task)
    core.clock.advance(50)
    core.tick()
    expect_error("REQUEST_ID_REUSED", core.call, "submit", rid=rid, task={**task, "key": "k2"})
    core.clock.advance(60)
    core.tick()
    # forgotten: the rid may now be used again (a retry this late is not a retry)
    assert core.call("submit", rid=rid, task={**task, "key": "k2"})["created"]


# --- map full ---------------------------------------------------------------------------------------------

def fill(core, limit=200) -> int:
    """Submit large tasks until the broker refuses with MAP_FULL; returns how many were accepted."""
    for i in range(limit):
        try:
            core.submit(f"big{i}", payload={"blob": os.urandom(60_000)})
        except Exception as exc:
            assert getattr(exc, "name", None) == "MAP_FULL", exc
            return i
    raise AssertionError("the map never filled")


def test_map_full_refuses_new_work_serves_running_work_and_grows(make_core):
    core = make_core(broker={"map_size": "2MiB", "headroom": "512KiB", "map_ceiling": "2MiB"})
    running = [core.submit(f"r{i}")["task"]["id"] for i in range(2)]
    leases = [core.lease(worker=f"w{i}") for i in range(2)]
    parked = core.submit("p", max_attempts=1)["task"]["id"]
    lease = core.lease(task_id=parked)
    accepted = fill(core)
    assert accepted > 3
    assert core.call("stats")["broker"]["map_full"] is True
    # new work is refused ...
    expect_error("MAP_FULL", core.submit, "one-more")
    expect_error("MAP_FULL", core.call, "txn", module="explorer", ops=[put("k", 1)])
    expect_error("MAP_FULL", core.call, "quota_set", account="acct", mode="standard", windows=["1/day"])
    # ... but running work finishes, and reads are served
    core.call("complete", id=running[0], epoch=leases[0]["epoch"], result={"text": "done"})
    core.call("fail", id=running[1], epoch=leases[1]["epoch"], error_class="transient", message="x")
    assert core.get(running[0])["state"] == "DONE"
    assert len(core.call("list", limit=5)["tasks"]) == 5
    # ... and no new work is leased: the scheduler is told when to ask again
    refused = core.lease(worker="w9")
    assert refused["task"] is None and "storage" in refused["reason"] and refused["retry_at"] > core.clock.world()
    core.call("fail", id=parked, epoch=lease["epoch"], error_class="terminal")
    core.call("cancel", id=running[1])
    expect_error("MAP_FULL", core.call, "retry", id=parked)
    assert core.call("stats")["broker"]["errors"]["MAP_FULL"] >= 4
    # grow the map: new work is accepted again
    grown = core.call("grow_map", size=8 * 2**20)
    assert grown["map_size"] == 8 * 2**20 and grown["previous"] == 2 * 2**20
    assert core.submit("after-grow", payload={"blob": os.urandom(60_000)})["created"]
    assert core.call("stats")["broker"]["map_full"] is False
    # the grown size survives a restart with the smaller configured map
    core.restart()
    assert core.core.map_size >= 8 * 2**20
    assert core.submit("after-restart")["created"]
    check_indices(core)


def test_grow_map_never_shrinks(core):
    size = core.core.map_size
    expect_error("BAD_ARGUMENT", core.call, "grow_map", size=1024)
    assert core.core.map_size == size
    # the same size again (a retried grow whose reply was lost) is answered, not refused
    assert core.call("grow_map", size=size)["map_size"] == size


def test_retried_request_is_answered_while_the_map_is_full(make_core):
    core = make_core(broker={"map_size": "2MiB", "headroom": "512KiB", "map_ceiling": "2MiB"})
    rid = protocol.new_id()
    task = {"key": "early", "module": "explorer", "kind": "ask"}
    first = core.call("submit", rid=rid, task=task)
    fill(core)
    assert core.call("submit", rid=rid, task=task) == first


class _CommitFails:
    """Wraps the LMDB environment so that the next ``times`` outer (batch) commits fail with ``error``
    (by default a full map)."""

    def __init__(self, env, times=1, error=None):
        self._env = env
        self.times = times
        self.error = error or lmdb.MapFullError("mdb_txn_commit: MDB_MAP_FULL")

    def __getattr__(self, name):
        return getattr(self._env, name)

    def begin(self, write=False, parent=None, **kw):
        txn = self._env.begin(write=write, parent=parent, **kw)
        if write and parent is None and self.times > 0:
            return _FailingCommit(txn, self)
        return txn


class _FailingCommit:
    """A write transaction whose commit (the end of its ``with`` block) fails; abort() is left alone."""

    def __init__(self, txn, env):
        self.txn = txn
        self.env = env

    def __getattr__(self, name):
        return getattr(self.txn, name)

    def __enter__(self):
        return self.txn

    def __exit__(self, *exc):
        self.txn.abort()
        if exc[0] is None:
            self.env.times -= 1
            raise self.env.error
        return False


def _submits(n):
    return [protocol.Request("submit", f"cid-{i}", {"task": {"key": f"k{i}", "module": "explorer", "kind": "ask"}},
                             protocol.new_id()) for i in range(n)]


def test_a_batch_commit_that_fills_the_map_below_the_ceiling_grows_it_and_applies_the_batch(core):
    core.submit("before")
    size = core.core.map_size
    core.core.env = _CommitFails(core.core.env)
    replies = core.batch([protocol.encode_request(r) for r in _submits(3)])
    assert [r.ok for r in replies] == [True] * 3   # run again after the map grew: applied once
    assert core.core.map_size == 2 * size and not core.core.nearly_full()
    assert [t["key"] for t in core.call("list")["tasks"]] == ["before", "k0", "k1", "k2"]


@pytest.mark.parametrize("error, code", [(lmdb.MapFullError("mdb_txn_commit: MDB_MAP_FULL"), "MAP_FULL"),
                                         (lmdb.Error("mdb_txn_commit: Input/output error"), "DISK_FULL")])
def test_a_batch_whose_commit_fails_twice_answers_everyone_with_their_cid(make_core, error, code):
    core = make_core(broker={"map_size": "2MiB", "headroom": "256KiB", "map_ceiling": "2MiB"})
    core.submit("before")
    core.core.env = _CommitFails(core.core.env, times=2, error=error)
    reqs = _submits(3)
    frames = [protocol.encode_request(r) for r in reqs] + [[b"garbage"]]
    replies = core.batch(frames)
    assert [r.error["name"] for r in replies] == [code] * 4
    assert [r.cid for r in replies] == ["cid-0", "cid-1", "cid-2", None]
    # nothing of the batch happened; once storage has room again (a re-check), a retry is applied once
    assert [t["key"] for t in core.call("list")["tasks"]] == ["before"]
    core.core.map_full = False
    core.core.capacity.write_error = None
    core.core.capacity.after_batch(force=True)
    again = core.batch([protocol.encode_request(reqs[0])])
    assert again[0].ok and again[0].result["created"]


def test_event_outbox_can_be_pruned_to_nothing(make_core):
    core = make_core(broker={"event_retention": 0})
    core.submit("a")
    core.clock.advance(10)
    core.tick()
    assert core.call("events")["events"] == []
    assert core.submit("b")["created"]
    assert core.call("events")["last_seq"] == 2


def test_unconsumed_lists_settled_results_until_acked(core):
    ids = [core.submit(f"k{i}")["task"]["id"] for i in range(3)]
    for _ in ids[:2]:
        lease = core.lease()
        core.call("complete", id=lease["task"]["id"], epoch=lease["epoch"], result="r")
    core.call("cancel", id=ids[2])
    listed = core.call("unconsumed", module="explorer")
    assert [t["id"] for t in listed["tasks"]] == ids and listed["next"] is None
    assert core.call("unconsumed", module="documenter")["tasks"] == []
    core.call("txn", module="explorer", ops=[{"op": "ack", "task_id": ids[0]}])
    assert [t["id"] for t in core.call("unconsumed", module="explorer")["tasks"]] == ids[1:]
    page = core.call("unconsumed", module="explorer", limit=1)
    assert [t["id"] for t in page["tasks"]] == [ids[1]] and page["next"] == ids[1]
    assert [t["id"] for t in core.call("unconsumed", module="explorer", after=ids[1])["tasks"]] == [ids[2]]


def test_a_parked_task_that_is_retried_leaves_the_unconsumed_index(core):
    tid = core.submit("p", max_attempts=1)["task"]["id"]
    lease = core.lease()
    core.call("fail", id=tid, epoch=lease["epoch"], error_class="terminal", message="no")
    assert [t["id"] for t in core.call("unconsumed", module="explorer")["tasks"]] == [tid]
    core.call("retry", id=tid)
    assert core.call("unconsumed", module="explorer")["tasks"] == []


# --- txn: notify ----------------------------------------------------------------------------------------

def test_notify_publishes_a_module_notify_event_with_the_transaction(core):
    n_events = len(core.events)
    out = txn(core, put("seeds/s1", {"text": "q"}), {"op": "notify", "reason": "changed by fanoctl"})
    assert out["results"][1] == {"notified": True}
    assert [(e["type"], e.get("module"), e.get("reason")) for e in core.events[n_events:]] == [
        ("module.notify", "explorer", "changed by fanoctl")]
    # a failed transaction publishes nothing
    n_events = len(core.events)
    expect_error("CONDITION_FAILED", txn, core, put("seeds/s1", "x", if_version=0), {"op": "notify"})
    assert len(core.events) == n_events


@pytest.mark.parametrize("op", [{"op": "notify", "reason": 7}, {"op": "notify", "reason": "x" * 201},
                                {"op": "notify", "key": "k"}])
def test_a_malformed_notify_is_a_bad_argument(core, op):
    expect_error("BAD_ARGUMENT", txn, core, op)


def test_a_scanned_record_is_passed_through_as_stored_and_read_as_before(core, monkeypatch):
    """kv_scan items travel as the stored bytes (docs/wire.md § Stored values): the broker decodes none of
    them, and the reader gets the same {key, version, value} maps, large (compressed) values included."""
    from services.broker import schema
    from shared import txn as T
    big = {"text": "octonions " * 400}
    core.call("txn", module="explorer", ops=[T.put("s/a", {"n": 1}), T.put("s/b", big)])
    core.call("txn", module="explorer", ops=[T.put("s/b", big, if_version=1)])

    def never(raw):
        raise AssertionError("the broker decoded a scanned record")
    monkeypatch.setattr(schema, "decode_value", never)
    page = core.call("kv_scan", module="explorer", prefix="s/")
    assert page["items"] == [{"key": "s/a", "version": 1, "value": {"n": 1}},
                             {"key": "s/b", "version": 2, "value": big}]
    assert page["next"] is None


def test_a_broken_stored_item_is_a_bad_encoding_for_the_reader():
    import msgpack

    from shared import protocol
    from shared.errors import FanoError
    from shared.stored import STORED_ITEM, ZMARK
    for ext in (msgpack.ExtType(STORED_ITEM, b"\x00\x01k" + ZMARK + b"not zlib"),
                msgpack.ExtType(7, b"")):
        body = protocol._pack({"ok": True, "cid": "c", "result": {"items": [ext], "next": None}})
        with pytest.raises(FanoError) as err:
            protocol.decode_reply([protocol.HEADER, body])
        assert err.value.code.name == "BAD_ENCODING"
