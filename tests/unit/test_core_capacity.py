"""The broker core's storage capacity (services/broker/capacity.py): the map grows by itself up to the
ceiling and what the disk allows, disk blocks are allocated ahead, new work is refused (MAP_FULL at the
ceiling, DISK_FULL when the disk is short) while running work goes on, and it resumes by itself.

The full-disk cases on a real (tmpfs) filesystem are in tests/integration/test_broker_storage.py; here
the disk's free space is what ``disk_space`` says (monkeypatched) and the data directory is a real one.
"""
from __future__ import annotations

import os

import lmdb
import pytest

from services.broker import capacity as cap_module
from services.broker import core as core_module
from tests.unit.corehelp import check_indices, expect_error, make_core  # noqa: F401  (fixtures)

MIB = 2**20


def blob(n=60_000):
    return {"blob": os.urandom(n)}


def submit_until_refused(core, limit=600, prefix="big"):
    """Submit large tasks until one is refused; returns (accepted keys, the refusal)."""
    keys = []
    for i in range(limit):
        try:
            core.submit(f"{prefix}{i}", payload=blob())
        except Exception as exc:  # noqa: BLE001 - the refusal is what we are after
            return keys, exc
        keys.append(f"{prefix}{i}")
    raise AssertionError(f"never refused after {limit} submissions")


def storage(core):
    return core.call("stats")["broker"]["storage"]


@pytest.mark.slow   # over 2 s: left out by -m "not slow" (README, "Tests")
def test_the_map_grows_by_itself_and_refuses_only_at_the_ceiling(make_core):
    core = make_core(broker={"map_size": "2MiB", "headroom": "256KiB", "map_ceiling": "8MiB",
                             "disk_reserve": "1MiB"})
    keys, refusal = submit_until_refused(core)
    assert refusal.name == "MAP_FULL" and "ceiling" in refusal.message and "map_ceiling" in refusal.message
    # it grew in steps, to the ceiling, and filled it: far more than the first map could hold
    assert core.core.map_size == 8 * MIB
    assert len(keys) * 60_000 > 3 * MIB  # (each task is stored with its request log reply and event)
    st = storage(core)
    assert st["refusing"] == "MAP_FULL" and st["since"] == core.clock.world()
    assert st["map_ceiling"] == 8 * MIB and st["map_size"] == 8 * MIB
    assert 0 < st["map_used"] <= st["map_size"] and st["disk_free"] > 0 and st["disk_total"] >= st["disk_free"]
    assert core.call("stats")["broker"]["map_full"] is True
    # the data file's blocks are allocated ahead of use (to the map's end here: less than 3 x headroom left)
    assert (core.core.storage.path / "data.mdb").stat().st_size == 8 * MIB
    # nothing accepted was lost, and a restart keeps the grown map
    core.restart()
    assert core.core.map_size == 8 * MIB
    assert {t["key"] for t in core.call("list", limit=1000)["tasks"]} >= set(keys)
    check_indices(core)


def test_the_grow_map_command_after_map_full_resumes_new_work(make_core):
    core = make_core(broker={"map_size": "2MiB", "headroom": "256KiB", "map_ceiling": "2MiB"})
    submit_until_refused(core)
    assert storage(core)["refusing"] == "MAP_FULL"
    assert core.call("grow_map", size=16 * MIB)["map_size"] == 16 * MIB
    assert storage(core)["refusing"] is None
    assert core.submit("after", payload=blob())["created"]


def test_growth_stops_at_what_the_disk_allows_then_refuses_with_disk_full_and_resumes(make_core, monkeypatch):
    core = make_core(broker={"map_size": "2MiB", "headroom": "256KiB", "map_ceiling": "64MiB",
                             "disk_reserve": "1MiB"})
    free = {"bytes": 4 * MIB}
    monkeypatch.setattr(cap_module, "disk_space", lambda path: (free["bytes"], 100 * MIB))
    _, refusal = submit_until_refused(core)
    assert refusal.name == "DISK_FULL", refusal
    assert "disk" in refusal.message and "disk_reserve" in refusal.message
    assert core.core.map_size < 64 * MIB
    st = storage(core)
    assert st["refusing"] == "DISK_FULL" and st["disk_free"] == 4 * MIB
    # space appears: within one re-check the broker grows the map and takes new work, no command needed
    free["bytes"] = 500 * MIB
    expect_error("DISK_FULL", core.submit, "too-early")  # the re-check has not come yet
    core.clock.advance(cap_module.RECHECK)
    core.tick()
    assert storage(core)["refusing"] is None
    assert core.submit("after-space", payload=blob())["created"]


def test_refusing_serves_running_work_and_module_acks_but_not_new_work(make_core):
    core = make_core(broker={"map_size": "2MiB", "headroom": "256KiB", "map_ceiling": "2MiB"})
    ids = [core.submit(f"r{i}")["task"]["id"] for i in range(4)]
    leases = [core.lease(worker=f"w{i}") for i in range(4)]
    submit_until_refused(core)
    # completions, failures, refusals, cancels and turn records go on
    core.call("turn_begin", id=ids[0], epoch=leases[0]["epoch"])
    core.call("complete", id=ids[0], epoch=leases[0]["epoch"], result={"text": "answer " * 200})
    core.call("fail", id=ids[1], epoch=leases[1]["epoch"], error_class="terminal", message="no")
    core.call("renew", id=ids[2], epoch=leases[2]["epoch"], ttl=60.0)
    core.call("cancel", id=ids[3])
    # a module applies a result: its writes and the ack go on ...
    applied = core.call("txn", module="explorer", ops=[{"op": "put", "key": "thread/1", "value": "x" * 2000},
                                                       {"op": "ack", "task_id": ids[0]}])
    assert applied["applied"]
    core.call("txn", module="explorer", ops=[{"op": "ack", "task_id": ids[3]}])
    # ... but not with a follow-up submission, nor writes without an ack
    expect_error("MAP_FULL", core.call, "txn", module="explorer",
                 ops=[{"op": "submit", "task": {"key": "next", "module": "explorer", "kind": "ask"}},
                      {"op": "ack", "task_id": ids[1]}])
    expect_error("MAP_FULL", core.call, "txn", module="explorer", ops=[{"op": "put", "key": "k", "value": 1}])
    assert core.get(ids[1])["consumed"] is False  # the refused transaction left nothing behind
    # no new lease: the scheduler is told when to ask again
    refused = core.lease(worker="w9")
    assert refused["task"] is None and refused["retry_at"] == core.clock.world() + core_module.STORAGE_LEASE_WAIT
    assert [core.get(i)["state"] for i in ids] == ["DONE", "PARKED", "RUNNING", "CANCELLED"]
    errors = core.call("stats")["broker"]["errors"]
    assert errors["MAP_FULL"] >= 3
    check_indices(core)


def test_freeing_module_data_resumes_new_work_by_itself(make_core):
    core = make_core(broker={"map_size": "2MiB", "headroom": "256KiB", "map_ceiling": "2MiB"})
    keys = []
    for i in range(200):
        try:
            core.call("txn", module="explorer", ops=[{"op": "put", "key": f"big/{i}", "value": os.urandom(60_000)}])
        except Exception as exc:  # noqa: BLE001
            assert exc.name == "MAP_FULL", exc
            break
        keys.append(f"big/{i}")
    else:
        raise AssertionError("the map never filled")
    expect_error("MAP_FULL", core.submit, "refused")
    # deleting is not new work: it goes on, and frees the pages; new work resumes only once twice the
    # headroom is free (no flapping at the edge)
    core.call("txn", module="explorer", ops=[{"op": "delete", "key": keys.pop()}])
    expect_error("MAP_FULL", core.submit, "too-early")
    for key in keys:
        core.call("txn", module="explorer", ops=[{"op": "delete", "key": key}])
    assert storage(core)["refusing"] is None
    # an MDB_MAP_FULL at the ceiling (e.g. no run of free pages long enough for one large value) refuses
    # new work too, until a re-check finds the map has room
    core.core.map_full = True
    core.tick()
    expect_error("MAP_FULL", core.submit, "after-map-full")
    core.clock.advance(cap_module.RECHECK)
    core.tick()
    assert core.submit("after-delete", payload=blob())["created"]


def test_growth_per_day_and_days_until_full_come_from_hourly_samples(make_core, monkeypatch):
    core = make_core(broker={"map_size": "64MiB", "headroom": "1MiB", "map_ceiling": "64MiB",
                             "disk_reserve": "1MiB"})
    monkeypatch.setattr(cap_module, "disk_space", lambda path: (10 * 2**30, 20 * 2**30))
    st = storage(core)
    assert st["growth_per_day"] is None and st["days_until_full"] is None  # one sample: no rate yet
    for hour in range(6):
        for i in range(5):
            core.submit(f"h{hour}-{i}", payload=blob(50_000))
        core.clock.advance(cap_module.SAMPLE_EVERY)
        core.tick()
    st = storage(core)
    samples = core.core.capacity.samples
    assert len(samples) == 7 and samples[-1][1] > samples[0][1]
    span = samples[-1][0] - samples[0][0]
    assert st["growth_per_day"] == pytest.approx((st["map_used"] - samples[0][1]) / span * 86400, rel=0.01)
    # ~250 KB an hour: a few MiB a day, against the 64 MiB ceiling (the disk allows more)
    assert 2 * MIB < st["growth_per_day"] < 20 * MIB
    assert st["days_until_full"] == pytest.approx((64 * MIB - st["map_used"]) / st["growth_per_day"], rel=0.01)
    # the samples are bounded and survive a restart
    core.restart()
    assert core.core.capacity.samples == samples
    monkeypatch.setattr(cap_module, "MAX_SAMPLES", 3)
    core.clock.advance(cap_module.SAMPLE_EVERY)
    core.tick()
    assert len(core.core.capacity.samples) == 3


def test_a_map_larger_than_the_disk_is_reported_at_start(make_core, monkeypatch, caplog):
    monkeypatch.setattr(cap_module, "disk_space", lambda path: (8 * MIB, 100 * MIB))
    make_core(broker={"map_size": "64MiB", "headroom": "256KiB", "disk_reserve": "1MiB"})
    assert "larger than the disk can hold" in caplog.text and "DISK_FULL" in caplog.text


def test_a_start_whose_sweep_cannot_be_written_comes_up_refusing_and_sweeps_later(make_core, monkeypatch):
    error, code = lmdb.Error("mdb_txn_commit: Input/output error"), "DISK_FULL"
    core = make_core(broker={"map_size": "2MiB", "headroom": "256KiB", "map_ceiling": "2MiB"})
    tid = core.submit("t")["task"]["id"]
    lease = core.lease()
    core.close()
    sweep = core_module.BrokerCore._startup_sweep
    monkeypatch.setattr(core_module.BrokerCore, "_startup_sweep",
                        lambda self: (_ for _ in ()).throw(error))
    core.open()  # would have crashed the broker: it comes up, refusing new work
    assert core.core._startup_pending and storage(core)["refusing"] == code
    expect_error(code, core.submit, "refused")
    assert core.call("complete", id=tid, epoch=lease["epoch"], result={"text": "ok"})["state"] == "DONE"
    monkeypatch.setattr(core_module.BrokerCore, "_startup_sweep", sweep)
    core.core.map_full = False
    core.clock.advance(cap_module.RECHECK)
    core.tick()   # room again: refusing stops and the start-of-life sweep is written
    assert not core.core._startup_pending and storage(core)["refusing"] is None
    assert core.submit("after")["created"]


def test_a_start_whose_sweep_finds_the_map_full_rechecks_the_map_at_once(make_core, monkeypatch):
    core = make_core(broker={"map_size": "2MiB", "headroom": "256KiB", "map_ceiling": "2MiB"})
    core.close()
    sweep = core_module.BrokerCore._startup_sweep
    calls = []

    def full_once(self):
        calls.append(1)
        if len(calls) == 1:
            raise lmdb.MapFullError("mdb_txn_commit: MDB_MAP_FULL")
        return sweep(self)
    monkeypatch.setattr(core_module.BrokerCore, "_startup_sweep", full_once)
    core.open()
    # the map turned out to have room (free pages): not refusing, and the sweep is written at the next batch
    assert core.core.capacity.refusing is None and core.core._startup_pending
    core.tick()
    assert not core.core._startup_pending and len(calls) == 2


def test_new_work_is_refused_before_the_disk_reserve_is_eaten(make_core, monkeypatch):
    # the map has room; the disk has some, but allocating ahead would leave less than disk_reserve
    core = make_core(broker={"map_size": "64MiB", "headroom": "256KiB", "map_ceiling": "64MiB",
                             "disk_reserve": "2MiB"})
    disk = {"bytes": 2 * MIB + 3 * MIB}  # what the data file and the free space share: 3 MiB past the reserve
    data_file = core.core.storage.path / "data.mdb"
    monkeypatch.setattr(cap_module, "disk_space",
                        lambda path: (disk["bytes"] - data_file.stat().st_size, 100 * MIB))
    _, refusal = submit_until_refused(core)
    assert refusal.name == "DISK_FULL" and "disk_reserve" in refusal.message, refusal
    # far from the map's end, and the reserve is still free: it is the reserve that stopped new work
    assert core.core.map_used < 4 * MIB
    assert cap_module.disk_space(None)[0] >= 2 * MIB
    disk["bytes"] = 100 * MIB
    core.clock.advance(cap_module.RECHECK)
    core.tick()
    assert core.submit("after", payload=blob())["created"]


@pytest.mark.parametrize("stored", [b"\xc1", {"a": 1}, [[1, 2, 3], "x", [1.0, 2]]])
def test_damaged_storage_samples_do_not_stop_the_broker(make_core, stored):
    from shared.protocol import pack_value
    core = make_core()
    core.close()
    env = lmdb.open(str(core.cfg.data_dir / "broker"), max_dbs=30)
    with env.begin(write=True) as txn:
        meta = env.open_db(b"meta", txn=txn)
        txn.put(cap_module.SAMPLES_KEY, stored if isinstance(stored, bytes) else pack_value(stored), db=meta)
    env.close()
    core.open()
    assert core.core.capacity.samples in ([], [[1.0, 2]])
    assert core.submit("ok")["created"]
