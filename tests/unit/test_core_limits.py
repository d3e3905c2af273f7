"""The broker core at its limits: deeply nested arguments, map growth it must refuse, replies it dropped."""
from __future__ import annotations

import pytest

from services.broker import core as core_module
from shared import protocol
from tests.unit.corehelp import check_indices, expect_error


def nested(levels: int, leaf=1):
    for _ in range(levels):
        leaf = [leaf]
    return leaf


# --- nesting ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("levels", [600, 900, 1000])
def test_a_deeply_nested_payload_is_bad_argument_and_the_broker_keeps_serving(core, levels):
    exc = expect_error("BAD_ARGUMENT", core.submit, "deep", payload=nested(levels))
    assert f"nested deeper than {protocol.MAX_DEPTH} levels" in exc.message
    # the same depth elsewhere: a module's stored value, a task's result
    expect_error("BAD_ARGUMENT", core.call, "txn", module="explorer",
                 ops=[{"op": "put", "key": "k", "value": nested(levels)}])
    tid = core.submit("shallow")["task"]["id"]
    lease = core.lease(task_id=tid)
    expect_error("BAD_ARGUMENT", core.call, "complete", id=tid, epoch=lease["epoch"], result=nested(levels))
    assert core.call("complete", id=tid, epoch=lease["epoch"], result={"ok": 1})["state"] == "DONE"
    assert core.error_counts() == {"BAD_ARGUMENT": 3}
    check_indices(core)


def test_a_payload_just_inside_the_limit_is_stored_and_fingerprinted(core):
    payload = nested(protocol.MAX_DEPTH - 3, {"x": 1})   # args > task > payload > ... > {"x": 1}
    first = core.submit("edge", payload=payload)
    assert first["created"]
    assert core.get(first["task"]["id"])["payload"] == payload
    assert core.submit("edge", payload=payload)["created"] is False   # same fingerprint: the same task


# --- map growth ---------------------------------------------------------------------------------------------

def test_grow_map_beyond_the_cap_is_refused_and_the_core_keeps_serving(core):
    tid = core.submit("before")["task"]["id"]
    size = core.core.map_size
    for huge in (1 << 55, core_module.MAX_MAP_SIZE + 1):
        exc = expect_error("BAD_ARGUMENT", core.call, "grow_map", size=huge)
        assert "exceeds the broker's limit of 1.0 TiB" in exc.message and exc.details["field"] == "size"
    assert core.core.map_size == size
    assert core.get(tid)["state"] == "PENDING"
    assert core.submit("after")["created"]
    assert core.call("grow_map", size=size + 2**20)["map_size"] == size + 2**20
    assert core.error_counts() == {"BAD_ARGUMENT": 2}


def test_grow_map_beyond_the_free_disk_space_is_refused(core, monkeypatch):
    monkeypatch.setattr(core_module, "disk_space", lambda path: (2**20, 2**30))
    on_disk = (core.core.storage.path / "data.mdb").stat().st_size
    size = core.core.map_size
    exc = expect_error("BAD_ARGUMENT", core.call, "grow_map", size=max(size, on_disk) + 4 * 2**20)
    assert "cannot fit on disk" in exc.message and exc.details["free"] == 2**20
    assert core.core.map_size == size
    assert core.submit("still-served")["created"]


def test_a_size_lmdb_cannot_map_is_refused_and_the_environment_reopened(core, monkeypatch):
    # past the cap and the disk check, LMDB itself fails (mmap: ENOMEM) and py-lmdb closes the env
    monkeypatch.setattr(core_module, "MAX_MAP_SIZE", 1 << 63)
    monkeypatch.setattr(core_module, "disk_space", lambda path: (1 << 63, 1 << 63))
    ids = [core.submit(f"k{i}")["task"]["id"] for i in range(3)]
    lease = core.lease(task_id=ids[0])
    seq = core.call("stats")["broker"]["last_event_seq"]
    size = core.core.map_size
    old_env = core.core.env
    exc = expect_error("BAD_ARGUMENT", core.call, "grow_map", size=1 << 62)
    core.storage = core.core.storage   # the harness closes what the core holds now
    assert "cannot map" in exc.message and "the map stays at" in exc.message
    assert core.core.env is not old_env and core.core.map_size == size
    # everything as before: tasks, the lease, ids and event sequence numbers continue without a gap
    assert core.get(ids[1])["state"] == "PENDING"
    assert core.call("complete", id=ids[0], epoch=lease["epoch"], result="r")["state"] == "DONE"
    assert core.submit("k3")["task"]["id"] == ids[-1] + 1
    assert core.call("stats")["broker"]["last_event_seq"] > seq
    seqs = [e["seq"] for e in core.events]
    assert seqs == list(range(1, len(seqs) + 1))
    assert core.call("grow_map", size=size + 2**20)["map_size"] == size + 2**20
    check_indices(core)
    core.restart()
    assert core.core.map_size == size + 2**20 and core.get(ids[0])["state"] == "DONE"


# --- dropped replies -------------------------------------------------------------------------------------------

def test_stats_report_the_replies_the_server_dropped(core):
    assert core.call("stats")["broker"]["dropped_replies"] == 0
    core.core.dropped_replies += 2    # what the server does when a reply cannot be sent
    assert core.call("stats")["broker"]["dropped_replies"] == 2
