"""Quotas through BrokerCore: reservations at lease time, resets, rolling windows, reserves, cool-downs,
and the quota_set / quota_show / quota_reset commands."""
from __future__ import annotations

import datetime as dt

import pytest

from shared.clock import FakeClock

from tests.unit.corehelp import core, expect_error, make_core, write_config  # noqa: F401  (fixtures)

# Friday 2024-05-10 03:00 UTC
T0 = dt.datetime(2024, 5, 10, 3, 0, tzinfo=dt.timezone.utc).timestamp()


def run_one(core, key: str, **lease_kw) -> dict:
    """Submit a task and lease it; returns the lease reply (task may be None)."""
    core.submit(key, **{k: v for k, v in lease_kw.pop("task", {}).items()})
    return core.lease(worker=f"w-{key}", **lease_kw)


def finish(core, lease) -> None:
    core.call("complete", id=lease["task"]["id"], epoch=lease["epoch"], result="ok")


def windows(core, account="acct", mode="standard") -> list[dict]:
    for q in core.call("quota_show", account=account)["quotas"]:
        if q["mode"] == mode:
            return q["windows"]
    raise AssertionError(f"no quota shown for {account}/{mode}")


def test_lease_reserves_in_every_window_of_the_mode(make_core):
    core = make_core(quotas={("acct", "standard"): ["10/day", "5/1h", "50/week@mon 00:00 UTC"],
                             ("acct", "deep"): ["3/day"]}, clock=FakeClock(world=T0))
    lease = run_one(core, "a")
    assert [w["used"] for w in windows(core)] == [1, 1, 1]
    assert [w["used"] for w in windows(core, mode="deep")] == [0]
    finish(core, lease)
    assert [w["used"] for w in windows(core)] == [1, 1, 1]   # completion keeps the unit counted
    # the tightest window decides
    for i in range(4):
        finish(core, run_one(core, f"b{i}"))
    out = run_one(core, "c")
    assert out["task"] is None and "quota 5/5 (5/1h)" in out["reason"]
    assert [w["remaining"] for w in windows(core)] == [5, 0, 45]
    # another account is not limited by acct's quota
    assert core.lease(account="other")["task"] is not None


def test_daily_window_resets_at_its_reset_hour(make_core):
    core = make_core(quotas={("acct", "standard"): ["2/day@04:00 UTC"]}, clock=FakeClock(world=T0))
    finish(core, run_one(core, "a"))
    finish(core, run_one(core, "b"))
    out = run_one(core, "c")
    assert out["task"] is None and "quota 2/2" in out["reason"]
    w = windows(core)[0]
    assert w["period_start"] == T0 - 23 * 3600 and w["resets_at"] == T0 + 3600
    core.clock.advance(3599)
    assert core.lease()["task"] is None
    core.clock.advance(1)  # 04:00: a new day for this window
    out = core.lease()
    assert out["task"]["key"] == "c"
    w = windows(core)[0]
    assert w["used"] == 1 and w["period_start"] == T0 + 3600


def test_daily_window_in_a_zone(make_core):
    # midnight in Los Angeles is 07:00 UTC in May
    core = make_core(quotas={("acct", "deep"): ["1/day@00:00 America/Los_Angeles"]},
                     clock=FakeClock(world=T0 + 3 * 3600))  # 06:00 UTC = 23:00 PDT
    deep = {"requires": {"mode": "deep"}}
    finish(core, run_one(core, "a", task=deep, modes=["deep"]))
    assert run_one(core, "b", task=deep, modes=["deep"])["task"] is None
    assert windows(core, mode="deep")[0]["resets_at"] == T0 + 4 * 3600
    core.clock.advance(3600)
    assert core.lease(modes=["deep"])["task"]["key"] == "b"


def test_rolling_window_frees_units_as_time_passes(make_core):
    core = make_core(quotas={("acct", "standard"): ["2/1h"]}, clock=FakeClock(world=T0))
    finish(core, run_one(core, "a"))
    core.clock.advance(600)
    finish(core, run_one(core, "b"))
    out = run_one(core, "c")
    assert out["task"] is None
    w = windows(core)[0]
    assert w["used"] == 2 and w["resets_at"] == T0 + 3600   # when the oldest unit leaves the window
    core.clock.advance(3000)  # T0 + 3600: the first unit is exactly one hour old -> out of the window
    assert windows(core)[0]["used"] == 1
    assert core.lease()["task"]["key"] == "c"
    core.submit("d")
    assert core.lease()["task"] is None
    core.clock.advance(600)
    assert core.lease()["task"]["key"] == "d"


def test_reserves_per_module_enforced_at_lease_time(make_core):
    core = make_core(quotas={("gem", "deep"): ["5/day reserve explorer=2,documenter=1"]},
                     clock=FakeClock(world=T0))
    kw = {"account": "gem", "modes": ["deep"]}

    def try_lease(module, key):
        core.submit(key, module=module, requires={"mode": "deep"})
        return core.lease(worker=key, modules=[module], **kw)

    # the researcher (no reserve) can only use the buffer of 2
    assert try_lease("researcher", "r1")["task"] is not None
    assert try_lease("researcher", "r2")["task"] is not None
    out = try_lease("researcher", "r3")
    assert out["task"] is None and "for module researcher" in out["reason"]
    # the reserved modules still get their reserves
    assert try_lease("explorer", "e1")["task"] is not None
    assert try_lease("explorer", "e2")["task"] is not None
    assert try_lease("explorer", "e3")["task"] is None
    assert try_lease("documenter", "d1")["task"] is not None
    shown = windows(core, "gem", "deep")[0]
    assert shown["used"] == 5 and shown["by_module"] == {"researcher": 2, "explorer": 2, "documenter": 1}
    assert shown["reserves"] == {"explorer": 2, "documenter": 1}


def test_a_module_past_its_reserve_cannot_take_another_reserve(make_core):
    core = make_core(quotas={("gem", "deep"): ["20/day reserve explorer=10,documenter=5"]})
    kw = {"account": "gem", "modes": ["deep"], "modules": ["explorer"]}
    for i in range(16):
        core.submit(f"e{i}", requires={"mode": "deep"})
    got = [core.lease(worker=f"w{i}", **kw)["task"] for i in range(16)]
    assert sum(t is not None for t in got) == 15          # its own 10 plus the buffer of 5
    core.submit("d", module="documenter", requires={"mode": "deep"})
    assert core.lease(account="gem", modes=["deep"], modules=["documenter"])["task"]["key"] == "d"


def test_cooldown_blocks_the_mode_until_its_time(core):
    until = core.clock.world() + 120
    out = core.call("cooldown", account="acct", mode="deep", until=until, reason="429")
    assert out == {"account": "acct", "mode": "deep", "until": until}
    core.submit("d", requires={"mode": "deep"})
    core.submit("s")
    assert core.lease(modes=["deep"])["task"] is None
    assert core.lease(modes=["standard"])["task"]["key"] == "s"
    core.clock.advance(119)
    assert "cooling down" in core.lease(modes=["deep"])["reason"]
    core.clock.advance(1)
    assert core.lease(modes=["deep"])["task"]["key"] == "d"


def test_cooldown_without_mode_blocks_every_mode(core):
    core.call("cooldown", account="acct", until=core.clock.world() + 60, reason="account locked")
    core.submit("s")
    out = core.lease()
    assert out["task"] is None and "account locked" in out["reason"]
    shown = core.call("quota_show", account="acct")
    assert shown["accounts"][0]["cooldowns"]["*"]["until"] == core.clock.world() + 60
    core.clock.advance(60)
    assert core.lease()["task"] is not None


def test_quota_set_show_reset_shapes(core):
    out = core.call("quota_set", account="acct", mode="standard",
                    windows=["10/day@04:00 Europe/Berlin", {"kind": "rolling", "seconds": 3600, "limit": 4}])
    assert out["account"] == "acct" and out["mode"] == "standard" and out["source"] == "operator"
    assert [w["spec"] for w in out["windows"]] == ["10/day@04:00 Europe/Berlin", "4/1h"]
    w = out["windows"][0]
    assert set(w) == {"spec", "kind", "limit", "used", "remaining", "by_module", "reserves", "period_start",
                      "resets_at"}
    assert w["used"] == 0 and w["remaining"] == 10 and w["kind"] == "daily"
    assert core.events[-1]["type"] == "quota.set"
    # a compact string with several windows separated by ';'
    core.call("quota_set", account="acct", mode="deep", windows="2/day; 1/1h")
    core.submit("a")
    lease = core.lease()
    shown = core.call("quota_show")
    assert set(shown) == {"now", "quotas", "accounts"} and shown["now"] == core.clock.world()
    assert [(q["account"], q["mode"]) for q in shown["quotas"]] == [("acct", "deep"), ("acct", "standard")]
    assert [w["used"] for w in windows(core)] == [1, 1]
    core.call("complete", id=lease["task"]["id"], epoch=lease["epoch"])
    core.call("cooldown", account="acct", mode="standard", until=core.clock.world() + 50)
    out = core.call("quota_reset", account="acct", mode="standard")
    assert out == {"account": "acct", "modes": ["standard"], "cleared_records": 2, "spec_removed": False}
    assert [w["used"] for w in windows(core)] == [0, 0]
    assert core.call("quota_show", account="acct")["accounts"][0]["cooldowns"] == {}
    out = core.call("quota_reset", account="acct", usage=False, spec=True)
    assert out["modes"] == ["standard", "deep"] and out["spec_removed"]
    assert core.call("quota_show", account="acct")["quotas"] == []
    assert core.events[-1]["type"] == "quota.reset"


@pytest.mark.parametrize("account,mode,win,code", [
    ("acct", "standard", ["10/fortnight"], "INVALID_QUOTA"),
    ("acct", "standard", ["3/day reserve a=2,b=2"], "INVALID_QUOTA"),
    ("acct", "standard", [{"kind": "daily", "limit": 1, "tz": 5}], "INVALID_QUOTA"),
    ("acct", "standard", [17], "INVALID_QUOTA"),
    ("acct", "turbo", ["10/day"], "BAD_ARGUMENT"),
    ("Acct!", "standard", ["10/day"], "BAD_ARGUMENT"),
])
def test_quota_set_rejects_bad_specs(core, account, mode, win, code):
    expect_error(code, core.call, "quota_set", account=account, mode=mode, windows=win)
    assert core.call("quota_show")["quotas"] == []


def test_changing_a_limit_keeps_the_periods_usage(core):
    core.call("quota_set", account="acct", mode="standard", windows=["2/day"])
    finish(core, run_one(core, "a"))
    finish(core, run_one(core, "b"))
    core.call("quota_set", account="acct", mode="standard", windows=["3/day"])
    assert windows(core)[0]["used"] == 2
    assert run_one(core, "c")["task"] is not None
    assert run_one(core, "d")["task"] is None


def test_show_lists_cooldown_for_a_mode_without_quota(core):
    core.call("cooldown", account="acct", mode="deep", until=core.clock.world() + 30, reason="busy")
    shown = core.call("quota_show")
    q = shown["quotas"][0]
    assert (q["account"], q["mode"], q["windows"], q["source"]) == ("acct", "deep", [], None)
    assert q["cooldown"] == {"until": core.clock.world() + 30, "reason": "busy"}


def test_config_quotas_applied_at_startup_and_operator_set_survives_restart(make_core):
    core = make_core(quotas={("gem", "deep"): ["20/day@00:00 America/Los_Angeles reserve explorer=10,documenter=5"],
                             ("chat", "standard"): ["80/3h"]})
    shown = core.call("quota_show")["quotas"]
    assert {(q["account"], q["mode"], q["source"]) for q in shown} == {("gem", "deep", "config"),
                                                                       ("chat", "standard", "config")}
    # the operator changes one quota at run time
    core.call("quota_set", account="chat", mode="standard", windows=["40/3h"])
    # restart with a config that changes both
    new_cfg = write_config(core.root, quotas={("gem", "deep"): ["25/day@00:00 America/Los_Angeles"],
                                              ("chat", "standard"): ["100/3h"]})
    core.restart(new_cfg)
    shown = {(q["account"], q["mode"]): q for q in core.call("quota_show")["quotas"]}
    assert [w["spec"] for w in shown["chat", "standard"]["windows"]] == ["40/3h"]
    assert shown["chat", "standard"]["source"] == "operator"
    assert [w["spec"] for w in shown["gem", "deep"]["windows"]] == ["25/day@00:00 America/Los_Angeles"]
    assert shown["gem", "deep"]["source"] == "config"


def test_lease_in_the_same_batch_cannot_overrun_a_window(core):
    """Group commit: several leases in one batch still see each other's reservations."""
    from shared import protocol
    core.call("quota_set", account="acct", mode="standard", windows=["2/day"])
    for i in range(4):
        core.submit(f"k{i}")
    frames = [protocol.encode_request(protocol.Request(
        "lease", f"c{i}", {"worker": f"w{i}", "account": "acct"}, protocol.new_id())) for i in range(4)]
    replies = core.batch(frames)
    assert [r.result["task"] is not None for r in replies] == [True, True, False, False]
    assert windows(core)[0]["used"] == 2


def test_quota_removed_from_config_is_no_longer_enforced_but_operator_quota_stays(make_core):
    core = make_core(quotas={("gem", "deep"): ["1/day"], ("chat", "standard"): ["80/3h"]})
    core.call("quota_set", account="chat", mode="standard", windows=["40/3h"])
    core.restart(write_config(core.root, quotas={}))
    shown = {(q["account"], q["mode"]) for q in core.call("quota_show")["quotas"]}
    assert shown == {("chat", "standard")}


def test_cooldown_with_non_finite_time_is_a_bad_argument(core):
    from shared.errors import ErrorCode, FanoError
    for until in (float("inf"), float("nan")):
        with pytest.raises(FanoError) as err:
            core.call("cooldown", account="acct", until=until)
        assert err.value.code == ErrorCode.BAD_ARGUMENT



def test_work_a_person_waits_for_may_draw_on_the_operators_reserve(make_core):
    """An author's comment (``requires.share = "adhoc"``) is not held by a window the research used up:
    it may take the ``adhoc`` reserve, charged there; other work of its module may not."""
    core = make_core(quotas={("acct", "standard"): ["3/3h reserve documenter=1,adhoc=1"]},
                     clock=FakeClock(world=T0))
    kw = {"account": "acct", "modes": ["standard"]}

    def try_lease(key, module="documenter", **requires):
        core.submit(key, module=module, requires=requires)
        return core.lease(worker=key, modules=[module], **kw)

    assert try_lease("e1", module="explorer")["task"] is not None      # the buffer
    assert try_lease("d1")["task"] is not None                          # the documenter's reserve
    out = try_lease("d2")
    assert out["task"] is None and "for module documenter" in out["reason"]
    comment = try_lease("c1", share="adhoc")
    assert comment["task"] is not None and comment["task"]["key"] == "c1"   # d2 is still refused
    shown = windows(core)[0]
    assert shown["used"] == 3 and shown["by_module"] == {"explorer": 1, "documenter": 1, "adhoc": 1}
    out = try_lease("c2", share="adhoc")
    assert out["task"] is None and "for module adhoc" in out["reason"]
    # the charge follows the share that admitted it: a refund gives the operator's unit back
    core.call("fail", id=comment["task"]["id"], epoch=comment["epoch"], error_class="transient", sent=False)
    assert windows(core)[0]["by_module"].get("adhoc", 0) == 0


def test_a_share_other_than_the_operators_is_refused_at_submit(core):
    from shared.errors import ErrorCode, FanoError
    with pytest.raises(FanoError) as err:
        core.submit("x", module="documenter", requires={"share": "explorer"})
    assert err.value.code == ErrorCode.BAD_ARGUMENT and "share" in err.value.message
