"""A hung worker frees its task: ``revoke`` (the scheduler's), reconcile leases that need no quota unit, and
the per-account hold of an unknown turn (services/broker/ops_lease.py)."""
from __future__ import annotations

import pytest

from tests.support import write_config
from tests.unit.corehelp import CoreHarness, check_indices, core, expect_error, make_core  # noqa: F401

SCHEDULER = b"scheduler#4242.abcdef12"


def revoke(core, tid: int, epoch: int, worker: str = "w1", reason: str = "silent for 3.1s"):
    core.ident = SCHEDULER
    try:
        return core.call("revoke", id=tid, epoch=epoch, worker=worker, reason=reason)
    finally:
        core.ident = b"test-client"


def used(core, account="acct", mode="standard") -> list[int]:
    for q in core.call("quota_show", account=account)["quotas"]:
        if q["mode"] == mode:
            return [w["used"] for w in q["windows"]]
    raise AssertionError(f"no quota for {account} {mode}")


@pytest.fixture
def full(make_core):
    """acct/standard holds one unit a day: once a lease took it, the window is full."""
    return make_core(quotas={("acct", "standard"): ["1/day"]}, broker={"lease_ttl": 600.0})


def test_a_lease_revoked_before_anything_was_sent_runs_elsewhere_at_once_and_refunds_its_unit(full):
    tid = full.submit("a")["task"]["id"]
    la = full.lease(worker="w1", account="acct")
    assert used(full) == [1]
    out = revoke(full, tid, la["epoch"])
    assert out == {"id": tid, "epoch": la["epoch"], "revoked": True, "state": "PENDING", "sent": False}
    rec = full.get(tid)
    assert rec["not_before"] <= full.clock.world() and rec.get("unknown_turn") is None
    assert rec["error"]["class"] == "revoked" and "nothing was sent" in rec["history"][-1]["why"]
    assert used(full) == [0] and rec["charged"] == 0 and rec["attempts"] == 1
    # another account takes it at once; the frozen worker's late writes are fenced off
    lb = full.lease(worker="w2", account="other")
    assert lb["task"]["id"] == tid and lb["epoch"] == la["epoch"] + 1
    expect_error("STALE_EPOCH", full.call, "turn_begin", id=tid, epoch=la["epoch"])
    expect_error("STALE_EPOCH", full.call, "complete", id=tid, epoch=la["epoch"], result={"text": "late"})
    full.call("turn_begin", id=tid, epoch=lb["epoch"])
    full.call("complete", id=tid, epoch=lb["epoch"], result={"text": "answer"})
    assert full.get(tid)["result"] == {"text": "answer"}
    check_indices(full)


def test_a_lease_revoked_after_its_intent_leaves_an_unknown_turn_reconciled_without_a_unit(full):
    tid = full.submit("a")["task"]["id"]
    la = full.lease(worker="w1", account="acct")
    full.call("turn_begin", id=tid, epoch=la["epoch"])
    out = revoke(full, tid, la["epoch"])
    assert out["revoked"] and out["sent"] is True and out["state"] == "PENDING"
    rec = full.get(tid)
    assert rec["unknown_turn"]["account"] == "acct" and rec["not_before"] <= full.clock.world()
    assert used(full) == [1]                                   # the provider may have served it
    assert full.lease(worker="w2", account="other")["task"] is None   # bound to acct for its hold
    # the window is full, yet acct's worker may lease the task to reconcile: that sends nothing
    lr = full.lease(worker="w1b", account="acct")
    assert lr["task"]["id"] == tid and used(full) == [1]
    expect_error("STALE_EPOCH", full.call, "complete", id=tid, epoch=la["epoch"], result={"text": "late"})
    full.call("complete", id=tid, epoch=lr["epoch"], result={"text": "served"}, reconciled=True)
    rec = full.get(tid)
    assert rec["state"] == "DONE" and used(full) == [1] and rec["charged"] == 1
    check_indices(full)


def test_a_reconcile_that_must_send_again_is_charged_then_or_waits_for_room(make_core):
    core = make_core(quotas={("acct", "standard"): ["2/day"]})
    a = core.submit("a")["task"]["id"]
    la = core.lease()
    core.call("turn_begin", id=a, epoch=la["epoch"])
    revoke(core, a, la["epoch"])
    lr = core.lease(worker="w1b")                              # reconcile lease: no unit
    assert used(core) == [1]
    begun = core.call("turn_begin", id=a, epoch=lr["epoch"])   # the provider never got it: send again
    assert begun["turn"]["state"] == "sending" and used(core) == [2] and core.get(a)["charged"] == 2
    # the same with the window full: the task waits for room (no attempt burned), no longer bound
    b = core.submit("b")["task"]["id"]
    core.call("quota_reset", account="acct", mode="standard")
    lb = core.lease(task_id=b)
    core.call("turn_begin", id=b, epoch=lb["epoch"])
    revoke(core, b, lb["epoch"])
    core.call("quota_set", account="acct", mode="standard", windows=["1/day"])
    lr = core.lease(worker="w1b", task_id=b)
    assert lr["task"]["id"] == b and used(core) == [1]
    refused = core.call("turn_begin", id=b, epoch=lr["epoch"])
    assert refused["turn"] is None and refused["state"] == "PENDING" and refused["retry_at"] > core.clock.world()
    rec = core.get(b)
    assert rec["attempts"] == 1 and rec.get("unknown_turn") is None and used(core) == [1]
    assert core.lease(worker="w2", account="other", task_id=b)["task"]["id"] == b
    check_indices(core)


def test_revoke_is_the_schedulers_and_changes_nothing_when_the_lease_already_ended(core):
    tid = core.submit("a")["task"]["id"]
    la = core.lease(worker="w1")
    exc = expect_error("FORBIDDEN", core.call, "revoke", id=tid, epoch=la["epoch"], worker="w1")
    assert "scheduler" in exc.message and core.get(tid)["state"] == "RUNNING"
    assert revoke(core, tid, la["epoch"], worker="someone-else")["revoked"] is False
    assert revoke(core, tid, la["epoch"] + 1)["revoked"] is False
    assert core.get(tid)["state"] == "RUNNING"
    core.call("complete", id=tid, epoch=la["epoch"], result={"text": "x"})
    assert revoke(core, tid, la["epoch"]) == {"id": tid, "epoch": la["epoch"], "revoked": False,
                                              "state": "DONE", "sent": None}
    assert core.error_counts() == {"FORBIDDEN": 1}


def test_a_revoked_lease_of_a_last_attempt_parks_the_task(make_core):
    core = make_core(broker={"default_max_attempts": 1})
    tid = core.submit("a")["task"]["id"]
    la = core.lease()
    assert revoke(core, tid, la["epoch"])["state"] == "PARKED"


def test_the_unknown_turn_hold_is_per_account(tmp_path):
    accounts = {"acct": {"backend": "sim", "unknown_turn_hold": 30}, "slow": ["standard"], "other": ["standard"]}
    h = CoreHarness(tmp_path, write_config(tmp_path, broker={"unknown_turn_hold": 1800.0}, accounts=accounts))
    try:
        ids = {}
        for account in ("acct", "slow"):
            tid = h.submit(f"t-{account}", requires={"backends": [account, "other"]})["task"]["id"]
            lease = h.lease(worker=f"backend-{account}", account=account, task_id=tid)
            h.call("turn_begin", id=tid, epoch=lease["epoch"])
            revoke(h, tid, lease["epoch"], worker=f"backend-{account}")
            ids[account] = tid
        assert h.get(ids["acct"])["unknown_turn"]["until"] == pytest.approx(h.clock.world() + 30)
        assert h.get(ids["slow"])["unknown_turn"]["until"] == pytest.approx(h.clock.world() + 1800)
        h.clock.advance(31)
        got = h.lease(worker="backend-other", account="other")
        assert got["task"]["id"] == ids["acct"]               # acct's hold is over; slow's is not
        assert h.lease(worker="backend-other", account="other")["task"] is None
    finally:
        h.close()


def test_a_reconciles_resend_is_charged_in_the_share_that_admits_it(make_core):
    """Work a person waits for (``requires.share = "adhoc"``) may draw on the operator's reserve: so may its
    re-send after a reconcile, charged where the lease would have charged it."""
    core = make_core(quotas={("acct", "standard"): ["2/day reserve documenter=1,adhoc=1"]})
    tid = core.submit("c1", module="documenter", requires={"share": "adhoc"})["task"]["id"]
    la = core.lease()
    core.call("turn_begin", id=tid, epoch=la["epoch"])
    revoke(core, tid, la["epoch"])
    lr = core.lease(worker="w1b")
    assert lr["task"]["id"] == tid and lr["task"]["lease"]["reconcile"] is True
    core.call("turn_begin", id=tid, epoch=lr["epoch"])       # the documenter's reserve is spent: adhoc's
    by_module = core.call("quota_show", account="acct")["quotas"][0]["windows"][0]["by_module"]
    assert by_module == {"documenter": 1, "adhoc": 1}
