"""ops.invariants: a consistent broker database passes; each kind of corruption is reported."""
from __future__ import annotations

import itertools

import pytest

from ops.invariants import check_client_log, inspect_snapshot, load_snapshot
from services.broker import schema as S
from services.broker.core import BrokerCore
from shared import protocol
from shared.clock import FakeClock
from shared.config import BrokerConfig, Config, QuotaConfig

_ids = itertools.count(1)


class Core:
    """A BrokerCore on a temp dir, driven request by request with a fake clock."""

    def __init__(self, tmp_path, quotas=()):
        cfg = Config(path=None, run_dir=tmp_path / "run", data_dir=tmp_path / "data", log_dir=tmp_path / "log",
                     broker=BrokerConfig(map_size=64 * 2**20, headroom=2**20), quotas=tuple(quotas))
        self.path = tmp_path / "data" / "broker"
        self.storage = S.open_env(self.path, cfg.broker.map_size)
        self.clock = FakeClock()
        self.core = BrokerCore(self.storage, cfg, self.clock)
        self.core.startup()

    def call(self, cmd, **args):
        rid = protocol.new_id() if protocol.is_mutating(cmd) else None
        frames = protocol.encode_request(protocol.Request(cmd=cmd, cid=str(next(_ids)), args=args, rid=rid))
        replies, _, _ = self.core.handle_batch([(b"c", frames)])
        reply = protocol.decode_reply(replies[0][1])
        return reply.raise_for_error()

    def snapshot(self):
        return load_snapshot(env=self.storage.env)

    def check(self):
        return inspect_snapshot(self.snapshot())

    def raw(self, fn):
        with self.storage.env.begin(write=True) as txn:
            fn(txn, self.storage.dbs)


QUOTAS = [QuotaConfig("acct", "standard", ("100/day@00:00 UTC", "50/1h")),
          QuotaConfig("acct", "deep", ("2/day@00:00 UTC",))]


@pytest.fixture
def core(tmp_path):
    c = Core(tmp_path, QUOTAS)
    yield c
    c.storage.close()


def _workload(core):
    ids = [core.call("submit", task={"key": f"k{i}", "module": "m", "kind": "x",
                                     "requires": {"mode": "deep"} if i % 4 == 0 else {}})["task"]["id"]
           for i in range(12)]
    outcomes = itertools.cycle(["complete", "unsent", "sent", "hold", "refuse"])
    for _ in range(10):
        lease = core.call("lease", worker="w", account="acct", modes=["standard", "deep"])
        if lease["task"] is None:
            break
        tid, epoch = lease["task"]["id"], lease["epoch"]
        what = next(outcomes)
        if what == "complete":
            core.call("complete", id=tid, epoch=epoch, result={"ok": 1})
        elif what in ("unsent", "sent"):
            core.call("fail", id=tid, epoch=epoch, error_class="transient", sent=what == "sent", retry_after=0.0)
        elif what == "refuse":
            core.call("refuse", id=tid, epoch=epoch, until=core.clock.world() + 1)
        core.clock.advance(2)
    core.call("txn", module="m", ops=[{"op": "put", "key": "a", "value": 1}])
    return ids


def test_consistent_database_passes(core):
    _workload(core)
    report = core.check()
    assert report.violations == []
    assert report.stats["tasks"] == 12 and report.stats["outbox_complete"]
    assert report.stats["charged_units"] > 0
    by_window = {(q["mode"], q["window"]): q for q in report.stats["quota"]}
    assert by_window[("standard", "daily@00:00 UTC")]["used_all_periods"] == \
        by_window[("standard", "daily@00:00 UTC")]["attributed"]


def _corrupt(core, fn):
    core.raw(fn)
    return core.check().violations


def test_key_pointing_elsewhere(core):
    _workload(core)
    v = _corrupt(core, lambda txn, db: txn.put(b"k1", S.u64(3), db=db["keys"]))
    assert any(x.startswith("[keys]") for x in v), v


def test_state_changed_behind_the_indices(core):
    _workload(core)

    def flip(txn, db):
        raw = txn.get(S.u64(2), db=db["tasks"])
        task = S.decode_value(raw)
        task["state"] = "CANCELLED"
        txn.put(S.u64(2), protocol.pack_value(task), db=db["tasks"])
    v = _corrupt(core, flip)
    assert any(x.startswith("[by_state]") for x in v) and any(x.startswith("[counts]") for x in v), v


def test_lost_ready_entry(core):
    _workload(core)
    snap = core.snapshot()
    prio, tid = snap.ready[0]
    v = _corrupt(core, lambda txn, db: txn.delete(S.ready_key(prio, tid), db=db["ready"]))
    assert any("PENDING task" in x for x in v), v


def test_running_task_without_lease_entry(core):
    _workload(core)
    snap = core.snapshot()
    deadline, tid, epoch = snap.leases[0]
    v = _corrupt(core, lambda txn, db: txn.delete(S.time_id_key(deadline, tid), db=db["leases"]))
    assert any("RUNNING task" in x for x in v), v


def test_quota_ledger_off_by_one(core):
    _workload(core)
    snap = core.snapshot()
    (acct, mode, slot, bucket), rec = next((k, r) for k, r in snap.quota_usage.items() if k[1] == "standard")

    def bump(txn, db):
        rec2 = dict(rec, total=rec["total"] + 1, by_module={"m": rec["total"] + 1})
        txn.put(S.quota_usage_key(acct, mode, slot, bucket), protocol.pack_value(rec2), db=db["quota_usage"])
    v = _corrupt(core, bump)
    assert any(x.startswith("[quota-total]") for x in v), v


def test_quota_overrun(core):
    _workload(core)
    snap = core.snapshot()
    key = next(k for k in snap.quota_usage if k[1] == "deep")

    def overrun(txn, db):
        txn.put(S.quota_usage_key(*key), protocol.pack_value({"total": 3, "by_module": {"m": 3}}), db=db["quota_usage"])
    v = _corrupt(core, overrun)
    assert any(x.startswith("[quota-overrun]") for x in v), v


def test_event_gap(core):
    _workload(core)
    v = _corrupt(core, lambda txn, db: txn.delete(S.u64(3), db=db["events"]))
    assert any(x.startswith("[events]") and "jumps" in x for x in v), v


def test_client_log_catches_double_grant_and_lost_completion(core):
    _workload(core)
    snap = core.snapshot()
    done = next(t for t in snap.tasks.values() if t["state"] == "DONE")
    records = [{"op": "lease", "id": 1, "epoch": 1, "account": "acct", "mode": "deep", "rid": "a"},
               {"op": "lease", "id": 1, "epoch": 1, "account": "acct", "mode": "deep", "rid": "b"},
               {"op": "complete", "id": done["id"], "epoch": done["epoch"], "result": {"other": 1}},
               {"op": "submit", "key": "k1", "id": 99}]
    v = check_client_log(records, snap, exact=False)
    assert any("granted to 2 lease requests" in x for x in v), v
    assert any(x.startswith("[journal-complete]") for x in v), v
    assert any(x.startswith("[journal-keys]") for x in v), v


def test_a_comment_charged_to_the_operators_reserve_is_consistent(tmp_path):
    """A task with ``requires.share = "adhoc"`` may be charged there (shared/quota.py charge_modules);
    a charge to any other module than the task's own or its share is still a ledger violation."""
    c = Core(tmp_path, [QuotaConfig("acct", "standard", ("2/3h reserve documenter=1,adhoc=1",))])
    try:
        for key, share in (("d1", None), ("c1", "adhoc")):
            req = {"share": share} if share else {}
            c.call("submit", task={"key": key, "module": "documenter", "kind": "documenter.address_comment",
                                   "requires": req})
            lease = c.call("lease", worker="w", account="acct", modes=["standard"])
            assert lease["task"]["key"] == key
            c.call("complete", id=lease["task"]["id"], epoch=lease["epoch"], result={"ok": 1})
        assert c.check().violations == []
        entries = c.snapshot().quota_entries
        assert sorted(e[6] for e in entries) == ["adhoc", "documenter"]
        # the same charge on a task without the share is a violation
        tid = next(e[4] for e in entries if e[6] == "adhoc")
        raw = c.snapshot().tasks[tid]

        def drop_share(txn, db):
            txn.put(S.u64(tid), S.encode_value(dict(raw, requires={})), db=db["tasks"])
        c.raw(drop_share)
        assert any("charged to module adhoc" in v for v in c.check().violations)
    finally:
        c.storage.close()
