"""Leases through BrokerCore: picking, requirements, fencing, every failure class, expiry, delays, startup."""
from __future__ import annotations

import pytest

from services.broker import schema as S
from shared import protocol
from tests.unit.corehelp import check_indices, expect_error

BASE = 5.0  # broker.backoff_base default


def used(core, account="acct", mode="standard") -> list[int]:
    """Units used in each window of (account, mode), in spec order."""
    for q in core.call("quota_show", account=account)["quotas"]:
        if q["mode"] == mode:
            return [w["used"] for w in q["windows"]]
    raise AssertionError(f"no quota for {account} {mode}")


@pytest.fixture
def qcore(make_core):
    """A core where acct/standard has a daily and a rolling window, to watch reservations."""
    return make_core(quotas={("acct", "standard"): ["100/day", "100/1h"],
                             ("acct", "deep"): ["10/day"]})


# --- picking -----------------------------------------------------------------------------------------------

def test_lease_picks_highest_priority_then_fifo(core):
    specs = [("a", 50), ("b", 80), ("c", 50), ("d", -10), ("e", 80), ("f", 0)]
    ids = {k: core.submit(k, priority=p)["task"]["id"] for k, p in specs}
    order = [core.lease(worker=f"w{i}")["task"]["key"] for i in range(len(specs))]
    assert order == ["b", "e", "a", "c", "f", "d"]
    assert core.lease()["task"] is None
    assert ids["b"] == 2


def test_lease_reply_shape(core):
    core.submit("a")
    out = core.lease(worker="w7", account="acct", backend="sim", ttl=30)
    assert out["epoch"] == 1 and out["mode"] == "standard" and out["ttl"] == 30 and out["reason"] == ""
    t = out["task"]
    assert t["state"] == "RUNNING" and t["attempts"] == 1 and t["epoch"] == 1
    assert t["lease"]["worker"] == "w7" and t["lease"]["account"] == "acct" and t["lease"]["backend"] == "sim"
    assert t["lease"]["deadline_in"] == 30 and "deadline" not in t["lease"] and "charges" not in t["lease"]
    ev = core.events[-1]
    assert ev["type"] == "task.running" and ev["worker"] == "w7" and ev["account"] == "acct"


def test_nothing_to_lease_says_why(core):
    assert core.lease() == {"task": None, "reason": "no runnable task", "retry_at": None}
    core.submit("d1", requires={"mode": "deep"})
    core.submit("d2", requires={"mode": "deep"})
    core.submit("x", requires={"backends": ["claude"]})
    out = core.lease(backend="sim")
    assert out["task"] is None
    assert "2 task(s): worker has no deep mode" in out["reason"]
    assert "1 task(s): task allows backends ['claude']" in out["reason"]


@pytest.mark.parametrize("args", [
    {"modes": []}, {"modes": ["turbo"]}, {"ttl": 0}, {"ttl": -1}, {"ttl": 10**6}, {"account": "Bad Name"},
    {"worker": ""}, {"modules": [1]},
])
def test_lease_argument_validation(core, args):
    kw = {"worker": "w", "account": "acct", **args}
    expect_error("BAD_ARGUMENT", core.call, "lease", **kw)


def test_requires_backends_matches_account_or_backend_kind(core):
    core.submit("a", requires={"backends": ["claude-main", "openai"]})
    assert core.lease(account="acct", backend="sim")["task"] is None
    assert core.lease(account="other", backend="openai")["task"]["key"] == "a"
    core.submit("b", requires={"backends": ["claude-main"]})
    assert core.lease(account="claude-main", backend="claude")["task"]["key"] == "b"


def test_requires_account(core):
    core.submit("a", requires={"account": "gemini-1"})
    out = core.lease(account="gemini-2")
    assert out["task"] is None and "bound to account gemini-1" in out["reason"]
    assert core.lease(account="gemini-1")["task"]["key"] == "a"


def test_modes_and_deep_fallback(core):
    core.submit("deep-only", requires={"mode": "deep"}, priority=90)
    core.submit("deep-or-std", requires={"mode": "deep", "deep_fallback": True}, priority=80)
    core.submit("std", priority=70)
    # a standard-only worker skips the deep-only task, runs the fallback one in standard mode
    out = core.lease(worker="s1", modes=["standard"])
    assert out["task"]["key"] == "deep-or-std" and out["mode"] == "standard"
    out = core.lease(worker="s2", modes=["standard"])
    assert out["task"]["key"] == "std"
    out = core.lease(worker="d1", modes=["deep", "standard"])
    assert out["task"]["key"] == "deep-only" and out["mode"] == "deep"
    assert out["task"]["lease"]["mode"] == "deep"


def test_deep_fallback_prefers_deep_when_available(core):
    core.submit("t", requires={"mode": "deep", "deep_fallback": True})
    assert core.lease(modes=["deep", "standard"])["mode"] == "deep"


def test_deep_fallback_when_deep_is_cooling_down(core):
    core.call("cooldown", account="acct", mode="deep", until=core.clock.world() + 100)
    core.submit("t1", requires={"mode": "deep", "deep_fallback": True})
    core.submit("t2", requires={"mode": "deep"})
    out = core.lease(modes=["deep", "standard"])
    assert out["task"]["key"] == "t1" and out["mode"] == "standard"
    out = core.lease(modes=["deep", "standard"])
    assert out["task"] is None and "cooling down" in out["reason"]


def test_modules_filter(core):
    core.submit("e", module="explorer", priority=90)
    core.submit("d", module="documenter")
    out = core.lease(modules=["documenter"])
    assert out["task"]["key"] == "d"
    out = core.lease(modules=["researcher"])
    assert out["task"] is None and "worker takes modules ['researcher']" in out["reason"]


def test_conversation_affinity_and_one_turn_in_flight(core):
    conv = {"conversation": "conv-1"}
    t1 = core.submit("c1-t1", requires=conv)["task"]["id"]
    t2 = core.submit("c1-t2", requires=conv)["task"]["id"]
    other = core.submit("other")["task"]["id"]
    l1 = core.lease(worker="w1", account="gemini-a")
    assert l1["task"]["id"] == t1
    # turn 2 cannot start while turn 1 is in flight, even on the same account
    l2 = core.lease(worker="w2", account="gemini-a")
    assert l2["task"]["id"] == other
    out = core.lease(worker="w3", account="gemini-a")
    assert out["task"] is None and f"turn task {t1} in flight" in out["reason"]
    core.call("complete", id=t1, epoch=l1["epoch"], result="r1")
    # now the conversation is bound to gemini-a: another account cannot take turn 2
    out = core.lease(worker="w4", account="gemini-b")
    assert out["task"] is None and "lives on account gemini-a" in out["reason"]
    assert core.lease(worker="w5", account="gemini-a")["task"]["id"] == t2


def test_a_conversation_keeps_its_page_and_get_shows_it(core):
    conv = {"conversation": "web-1"}
    t1 = core.submit("w-t1", requires=conv)["task"]["id"]
    t2 = core.submit("w-t2", requires=conv)["task"]["id"]
    assert core.get(t1)["conversation"] == {"id": "web-1"}            # not started yet
    l1 = core.lease(account="chatgpt-pro")
    core.call("complete", id=t1, epoch=l1["epoch"],
              result={"text": "a", "meta": {"url": "https://chatgpt.com/c/abc", "title": "Fano plane"}})
    got = core.get(t2)["conversation"]
    assert got == {"id": "web-1", "account": "chatgpt-pro", "inflight": None, "turns": 1,
                   "url": "https://chatgpt.com/c/abc", "title": "Fano plane"}
    l2 = core.lease(account="chatgpt-pro")
    core.call("complete", id=t2, epoch=l2["epoch"], result={"text": "b", "meta": {"url": 7}})   # junk ignored
    assert core.get(t2)["conversation"]["url"] == "https://chatgpt.com/c/abc"
    assert core.get(t2)["conversation"]["turns"] == 2
    assert "conversation" not in core.call("list")["tasks"][0]                  # get only


def test_conversation_released_by_failure_and_cancel(core):
    conv = {"conversation": "cv"}
    t1 = core.submit("t1", requires=conv, priority=90)["task"]["id"]
    t2 = core.submit("t2", requires=conv)["task"]["id"]
    l1 = core.lease()
    core.call("fail", id=t1, epoch=l1["epoch"], error_class="transient", retry_after=1000)
    assert core.lease()["task"]["id"] == t2  # the conversation is free again (t1 waits in backoff)
    core.call("cancel", id=t2)
    core.clock.advance(1001)
    core.tick()
    assert core.lease()["task"]["id"] == t1


def test_lease_specific_task(core):
    core.submit("a", priority=90)
    b = core.submit("b")["task"]["id"]
    out = core.lease(task_id=b)
    assert out["task"]["id"] == b
    out = core.lease(task_id=b)
    assert out["task"] is None and "RUNNING" in out["reason"]
    expect_error("NOT_FOUND", core.lease, task_id=77)
    c = core.submit("c", not_before=core.clock.world() + 60)["task"]["id"]
    assert "waits until" in core.lease(task_id=c)["reason"]


def test_paused_account_gets_nothing(core):
    core.submit("a")
    core.call("account_pause", account="acct", reason="maintenance")
    out = core.lease()
    assert out["task"] is None and "paused" in out["reason"] and "maintenance" in out["reason"]
    assert core.lease(account="other")["task"] is not None


# --- renew and fencing ---------------------------------------------------------------------------------

def test_renew_extends_the_lease(core):
    tid = core.submit("a")["task"]["id"]
    lease = core.lease(ttl=10)
    core.clock.advance(8)
    out = core.call("renew", id=tid, epoch=lease["epoch"], ttl=10)
    assert out == {"id": tid, "epoch": 1, "deadline_in": 10, "pause_requested": False}
    core.clock.advance(8)
    core.tick()
    assert core.get(tid)["state"] == "RUNNING"  # 16 s after the lease, still alive thanks to renew
    assert core.get(tid)["lease"]["deadline_in"] == pytest.approx(2)
    core.clock.advance(3)
    core.tick()
    assert core.get(tid)["state"] == "PENDING"
    expect_error("BAD_ARGUMENT", core.call, "renew", id=tid, epoch=1, ttl=0)


def test_stale_epochs_are_rejected(core):
    tid = core.submit("a")["task"]["id"]
    l1 = core.lease(ttl=5)
    core.clock.advance(6)
    core.tick()                               # lease 1 expired
    core.clock.advance(3600)
    core.tick()                               # backoff over
    l2 = core.lease()
    assert l2["epoch"] == 2
    for cmd, extra in [("complete", {"result": "zombie"}), ("fail", {"error_class": "transient"}),
                       ("refuse", {}), ("renew", {"ttl": 10})]:
        exc = expect_error("STALE_EPOCH", core.call, cmd, id=tid, epoch=l1["epoch"], **extra)
        assert exc.details == {"id": tid, "state": "RUNNING", "epoch": 2}
    expect_error("STALE_EPOCH", core.call, "complete", id=tid, epoch=3, result="future")
    core.call("complete", id=tid, epoch=2, result="ok")
    # completing twice with the right epoch: the lease is over
    expect_error("STALE_EPOCH", core.call, "complete", id=tid, epoch=2, result="again")
    t = core.get(tid)
    assert t["state"] == "DONE" and t["result"] == "ok"
    expect_error("NOT_FOUND", core.call, "complete", id=999, epoch=1)


def test_complete_records_result_and_history(core):
    tid = core.submit("a")["task"]["id"]
    lease = core.lease(worker="w9")
    out = core.call("complete", id=tid, epoch=lease["epoch"], result={"text": "hi", "n": [1, 2]})
    assert out == {"id": tid, "epoch": 1, "state": "DONE"}
    t = core.get(tid)
    assert t["result"] == {"text": "hi", "n": [1, 2]} and t["lease"] is None and t["error"] is None
    assert [h["to"] for h in t["history"]] == ["PENDING", "RUNNING", "DONE"]
    assert t["history"][-1]["why"] == "completed by w9"
    assert core.call("stats")["leases"] == 0


# --- fail, class by class ---------------------------------------------------------------------------------

def fail(core, tid, epoch, cls, **kw):
    return core.call("fail", id=tid, epoch=epoch, error_class=cls, **kw)


def died_mid_request(core, key: str = "a", account: str = "acct") -> tuple[int, dict]:
    """A task whose worker recorded its intent, sent, and died: the lease has expired, the turn is unknown.
    Returns (task id, the dead lease)."""
    tid = core.submit(key)["task"]["id"]
    lease = core.lease(account=account, ttl=1)
    core.call("turn_begin", id=tid, epoch=lease["epoch"])
    core.clock.advance(2)
    core.tick()
    return tid, lease


def test_transient_backoff_doubles_and_parks_after_max_attempts(core):
    tid = core.submit("a", max_attempts=4)["task"]["id"]
    delays = []
    for attempt in range(1, 5):
        lease = core.lease()
        assert lease["task"]["id"] == tid and lease["task"]["attempts"] == attempt
        now = core.clock.world()
        out = fail(core, tid, lease["epoch"], "transient", message=f"boom {attempt}")
        if attempt < 4:
            assert out["state"] == "PENDING"
            delays.append(out["not_before"] - now)
            assert core.lease()["task"] is None      # backing off
            core.clock.advance(delays[-1] - 0.5)
            core.tick()
            assert core.lease()["task"] is None      # still backing off just before not_before
            core.clock.advance(0.5)
            core.tick()
    assert delays == [BASE, 2 * BASE, 4 * BASE]
    t = core.get(tid)
    assert t["state"] == "PARKED" and t["attempts"] == 4
    assert t["error"]["class"] == "transient" and t["error"]["message"] == "boom 4"
    assert "attempts exhausted (4/4)" in t["history"][-1]["why"]
    assert check_indices(core) == {"PARKED": 1}


def test_backoff_is_capped(make_core):
    core = make_core(broker={"backoff_base": 100.0, "backoff_max": 250.0})
    tid = core.submit("a", max_attempts=10)["task"]["id"]
    delays = []
    for _ in range(4):
        lease = core.lease()
        now = core.clock.world()
        delays.append(fail(core, tid, lease["epoch"], "transient")["not_before"] - now)
        core.clock.advance(delays[-1])
        core.tick()
    assert delays == [100.0, 200.0, 250.0, 250.0]


def test_transient_retry_after_overrides_backoff(core):
    tid = core.submit("a")["task"]["id"]
    lease = core.lease()
    now = core.clock.world()
    assert fail(core, tid, lease["epoch"], "transient", retry_after=42.0)["not_before"] == now + 42.0


def test_transient_refunds_only_when_not_sent(qcore):
    a = qcore.submit("a")["task"]["id"]
    la = qcore.lease()
    assert used(qcore) == [1, 1]
    fail(qcore, a, la["epoch"], "transient", sent=False)
    assert used(qcore) == [0, 0]
    qcore.clock.advance(10)
    qcore.tick()
    la = qcore.lease()
    fail(qcore, a, la["epoch"], "transient", sent=True)
    assert used(qcore) == [1, 1]
    assert qcore.get(a)["attempts"] == 1  # the refusal gave its attempt back; the sent failure burned one
    assert qcore.get(a)["refusals"] == 1


def test_refusals_burn_no_attempt_until_max_refusals_then_attempts_burn(make_core):
    core = make_core(broker={"max_refusals": 3})
    tid = core.submit("a", max_attempts=2)["task"]["id"]
    delays = []
    for _ in range(3):
        lease = core.lease()
        out = fail(core, tid, lease["epoch"], "transient", message="529 overloaded", sent=False)
        assert out["state"] == "PENDING" and core.get(tid)["attempts"] == 0
        delays.append(out["not_before"] - core.clock.world())
        core.clock.advance(delays[-1] + 1)
        core.tick()
    assert delays == [BASE, 2 * BASE, 4 * BASE]        # refusals back off on their own count
    assert "refusal 3/3" in core.get(tid)["history"][-1]["why"]
    for expected in ("PENDING", "PARKED"):              # past max_refusals: the usual attempts
        lease = core.lease()
        assert fail(core, tid, lease["epoch"], "transient", sent=False)["state"] == expected
        core.clock.advance(3600)
        core.tick()


def test_a_reconciled_completion_gives_back_its_leases_unit(qcore):
    a, _ = died_mid_request(qcore)                      # its unit stays counted
    qcore.clock.advance(60)
    lb = qcore.lease()
    assert used(qcore) == [1, 1]   # a reconcile lease sends nothing new: it is not charged at all
    # its successor finds the answer at the provider and completes without sending
    qcore.call("complete", id=a, epoch=lb["epoch"], result={"text": "served"}, reconciled=True)
    assert used(qcore) == [1, 1] and qcore.get(a)["charged"] == 1


def test_a_reconciled_answer_is_served_in_the_mode_the_provider_confirmed_not_the_leases(qcore):
    """Issue 16: served.mode of a reconciled turn came from the lease. An earlier attempt sent in standard,
    reconciled under a deep lease (or the reverse), states the mode the provider confirmed."""
    a, _ = died_mid_request(qcore)                      # attempt 1: standard, sent, unknown
    qcore.clock.advance(60)
    qcore.tick()
    lb = qcore.lease(modes=["deep", "standard"])
    qcore.call("complete", id=a, epoch=lb["epoch"], result={"text": "served"}, reconciled=True, mode="standard")
    assert qcore.get(a)["served"]["mode"] == "standard"
    b = qcore.submit("b", requires={"mode": "deep", "deep_fallback": True})["task"]["id"]
    lb = qcore.lease(modes=["deep", "standard"])
    assert lb["mode"] == "deep"
    qcore.call("turn_begin", id=b, epoch=lb["epoch"])   # sent under this lease: the lease's mode stands
    qcore.call("complete", id=b, epoch=lb["epoch"], result={"text": "x"}, reconciled=True, mode="standard")
    assert qcore.get(b)["served"]["mode"] == "deep"
    c = qcore.submit("c")["task"]["id"]
    lc = qcore.lease()
    expect_error("BAD_ARGUMENT", qcore.call, "complete", id=c, epoch=lc["epoch"], result={"text": "x"},
                 reconciled=True, mode="turbo")
    assert qcore.get(c)["state"] == "RUNNING"


def test_reconciled_is_ignored_when_this_lease_sent_its_own_turn(qcore):
    a = qcore.submit("a")["task"]["id"]
    la = qcore.lease()
    qcore.call("turn_begin", id=a, epoch=la["epoch"])
    qcore.call("complete", id=a, epoch=la["epoch"], result={"text": "x"}, reconciled=True)
    assert used(qcore) == [1, 1]


def test_unknown_stays_counted_even_if_not_sent(qcore):
    a = qcore.submit("a")["task"]["id"]
    la = qcore.lease()
    out = fail(qcore, a, la["epoch"], "unknown", sent=False)
    assert out["state"] == "PENDING" and out["not_before"] == qcore.clock.world() + BASE
    assert used(qcore) == [1, 1]
    assert qcore.get(a)["attempts"] == 1


def test_an_unknown_reconcile_that_sent_nothing_is_not_charged(qcore):
    """Issue 16 ("a reconcile that sends nothing is charged"): a worker reconciles an earlier attempt whose
    outcome is unknown, cannot tell, and gives up (fail unknown, sent=False) without recording an intent:
    nothing left under that lease, which holds no unit; the earlier attempt's unit (it may have been
    served) stays counted, and the task stays bound for reconciliation."""
    a, _ = died_mid_request(qcore)                      # attempt 1 sent, then the worker died: 1 unit
    qcore.clock.advance(60)
    qcore.tick()
    for state in ("PENDING", "PARKED"):                 # two reconciles that could not tell (3 attempts)
        lb = qcore.lease()
        assert lb["task"]["id"] == a and lb["task"]["unknown_turn"]["attempt"] == 1
        out = fail(qcore, a, lb["epoch"], "unknown", message="reconcile: the page did not load", sent=False)
        assert out["state"] == state
        assert used(qcore) == [1, 1] and qcore.get(a)["charged"] == 1
        assert qcore.get(a)["unknown_turn"]["attempt"] == 1
        qcore.clock.advance(60)                         # past the backoff, within the 1 h window
        qcore.tick()


@pytest.mark.parametrize("never_left", [True, False], ids=["never-left", "may-have-left"])
def test_an_unknown_turn_its_provider_says_never_left_gives_its_unit_back_when_sent_again(qcore, never_left):
    """Issue 16 ("a task never parks with charges for sends that did not happen"): attempt 1 recorded its
    intent and its worker died before the prompt left (a web page still loading, or the site's history
    shows the chat never arrived). The reconciling worker of that account knows it never left and says so
    when it sends again (turn_begin refund_unknown): attempt 1's unit comes back, the new send is charged,
    one unit in all. Without that word (a stateless API that may have got it) the earlier unit stays."""
    a, _ = died_mid_request(qcore)                      # attempt 1: intent, no reply: 1 unit
    qcore.clock.advance(60)
    qcore.tick()
    lb = qcore.lease()
    assert lb["task"]["id"] == a and lb["task"]["unknown_turn"]["attempt"] == 1 and used(qcore) == [1, 1]
    assert "unknown_charges" not in lb["task"]           # the broker's own bookkeeping is not shown
    begun = qcore.call("turn_begin", id=a, epoch=lb["epoch"], refund_unknown=never_left)
    assert begun["turn"] is not None
    assert used(qcore) == ([1, 1] if never_left else [2, 2])
    assert qcore.get(a)["charged"] == (1 if never_left else 2)
    assert [c[0] for c in qcore.get(a)["live_charges"]] == ([lb["epoch"]] if never_left else [1, lb["epoch"]])
    qcore.call("complete", id=a, epoch=lb["epoch"], result={"text": "ok"})
    assert used(qcore) == ([1, 1] if never_left else [2, 2])


def test_refund_unknown_refunds_only_the_unknown_turn_of_the_leasing_account(qcore):
    """Another account's worker (the hold lapsed, or a hand-off) cannot know what the first account sent:
    its word refunds nothing."""
    a, _ = died_mid_request(qcore, account="acct")
    qcore.clock.advance(4000)                           # past the unknown-turn hold: any account may run it
    qcore.tick()
    lb = qcore.lease(account="other")
    assert lb["task"]["id"] == a
    qcore.call("turn_begin", id=a, epoch=lb["epoch"], refund_unknown=True)
    assert used(qcore)[0] == 1 and [c[0] for c in qcore.get(a)["live_charges"]] == [1]   # acct's unit stays


def test_quota_failure_refunds_cools_down_and_burns_no_attempt(qcore):
    a = qcore.submit("a", max_attempts=1)["task"]["id"]
    la = qcore.lease()
    until = qcore.clock.world() + 600
    out = fail(qcore, a, la["epoch"], "quota", message="limit reached", retry_after=600)  # seconds from now
    assert out["state"] == "PENDING" and out["cooldown_until"] == until
    t = qcore.get(a)
    assert t["attempts"] == 0 and t["error"]["class"] == "quota"   # max_attempts=1, still not parked
    assert used(qcore) == [0, 0]
    out = qcore.lease()
    assert out["task"] is None and "cooling down" in out["reason"] and "limit reached" in out["reason"]
    assert qcore.lease(account="other")["task"]["id"] == a         # another account may take it


def test_quota_failure_without_time_cools_down_for_the_default(qcore):
    from services.broker.ops_quota import DEFAULT_COOLDOWN
    a = qcore.submit("a")["task"]["id"]
    la = qcore.lease()
    out = fail(qcore, a, la["epoch"], "quota")
    assert out["cooldown_until"] == qcore.clock.world() + DEFAULT_COOLDOWN


def test_refuse_is_a_quota_refusal(qcore):
    a = qcore.submit("a", requires={"mode": "deep", "deep_fallback": True})["task"]["id"]
    la = qcore.lease(modes=["deep", "standard"])
    assert la["mode"] == "deep"
    until = qcore.clock.world() + 300
    out = qcore.call("refuse", id=a, epoch=la["epoch"], until=until, message="Deep Think limit")
    assert out["state"] == "PENDING" and out["cooldown_until"] == until
    assert used(qcore, mode="deep") == [0]
    assert qcore.get(a)["attempts"] == 0
    # only the deep mode cools down: the fallback runs it in standard at once
    la = qcore.lease(modes=["deep", "standard"])
    assert la["task"]["id"] == a and la["mode"] == "standard"
    cooldowns = [e for e in qcore.events if e["type"] == "account.cooldown"]
    assert [(e["account"], e["mode"], e["until"]) for e in cooldowns] == [("acct", "deep", until)]


def test_auth_failure_pauses_the_account_and_burns_no_attempt(qcore):
    a = qcore.submit("a", max_attempts=1)["task"]["id"]
    la = qcore.lease()
    out = fail(qcore, a, la["epoch"], "auth", message="session expired", sent=False)
    assert out["state"] == "PENDING"
    assert qcore.get(a)["attempts"] == 0
    assert used(qcore) == [0, 0]
    acct = next(x for x in qcore.call("quota_show")["accounts"] if x["account"] == "acct")
    assert acct["paused"] and "session expired" in acct["pause_reason"]
    assert qcore.lease()["task"] is None
    assert any(e["type"] == "account.paused" for e in qcore.events)
    qcore.call("account_resume", account="acct")
    assert qcore.lease()["task"]["id"] == a


def test_auth_failure_after_send_stays_counted(qcore):
    a = qcore.submit("a")["task"]["id"]
    la = qcore.lease()
    fail(qcore, a, la["epoch"], "auth", sent=True)
    assert used(qcore) == [1, 1]


@pytest.mark.parametrize("sent,expect_used", [(False, [0, 0]), (True, [1, 1])])
def test_terminal_parks_at_once(qcore, sent, expect_used):
    a = qcore.submit("a", max_attempts=5)["task"]["id"]
    la = qcore.lease()
    out = fail(qcore, a, la["epoch"], "terminal", message="content policy", sent=sent)
    assert out["state"] == "PARKED"
    t = qcore.get(a)
    assert t["attempts"] == 1 and t["parked_at"] == qcore.clock.world()
    assert t["error"]["message"] == "content policy" and t["error"]["sent"] is sent
    assert used(qcore) == expect_used


def test_unknown_error_class_rejected(core):
    tid = core.submit("a")["task"]["id"]
    lease = core.lease()
    expect_error("BAD_ARGUMENT", fail, core, tid, lease["epoch"], "weird")
    assert core.get(tid)["state"] == "RUNNING"


# --- expiry ----------------------------------------------------------------------------------------------

def test_lease_expiry_backs_off_then_parks_and_keeps_quota(qcore):
    tid = qcore.submit("a")["task"]["id"]  # max_attempts 3
    for attempt in (1, 2, 3):
        lease = qcore.lease(ttl=20)
        assert lease["task"]["id"] == tid
        qcore.clock.advance(19.9)
        qcore.tick()
        assert qcore.get(tid)["state"] == "RUNNING"
        qcore.clock.advance(0.2)
        qcore.tick()
        t = qcore.get(tid)
        assert t["error"]["class"] == "expired" and "w1" in t["error"]["message"]
        if attempt < 3:
            assert t["state"] == "PENDING"
            assert t["not_before"] == pytest.approx(qcore.clock.world() + BASE * 2 ** (attempt - 1))
            qcore.clock.advance(BASE * 2 ** (attempt - 1))
            qcore.tick()
    t = qcore.get(tid)
    assert t["state"] == "PARKED" and t["attempts"] == 3
    assert used(qcore) == [3, 3]   # the worker may have sent each request before dying
    assert qcore.call("stats")["leases"] == 0
    assert check_indices(qcore) == {"PARKED": 1}


def test_expired_task_goes_to_another_worker_with_a_new_epoch(core):
    tid = core.submit("a")["task"]["id"]
    core.lease(worker="w1", ttl=5)
    core.clock.advance(6)
    core.tick()
    core.clock.advance(BASE)
    core.tick()
    l2 = core.lease(worker="w2")
    assert l2["task"]["id"] == tid and l2["epoch"] == 2
    types = [e["type"] for e in core.events if e.get("id") == tid]
    assert types == ["task.submitted", "task.running", "task.pending", "task.due", "task.running"]


# --- delayed tasks ----------------------------------------------------------------------------------------

def test_delayed_task_becomes_leasable_and_emits_due(core):
    t0 = core.clock.world()
    tid = core.submit("later", not_before=t0 + 100, priority=99)["task"]["id"]
    core.submit("now")
    assert core.call("stats")["delayed"] == 1
    assert core.call("stats")["next_due_in"] == pytest.approx(100)
    assert core.lease()["task"]["key"] == "now"
    core.clock.advance(99)
    core.tick()
    assert core.lease()["task"] is None
    assert not any(e["type"] == "task.due" for e in core.events)
    core.clock.advance(1)
    core.tick()
    due = [e for e in core.events if e["type"] == "task.due"]
    assert len(due) == 1 and due[0]["id"] == tid
    assert core.lease()["task"]["id"] == tid
    core.tick()
    assert len([e for e in core.events if e["type"] == "task.due"]) == 1  # said once


def test_due_is_announced_once_even_within_the_same_millisecond(core):
    tid = core.submit("later", not_before=core.clock.world() + 10.0004)["task"]["id"]
    core.clock.advance(10.0001)   # same millisecond as not_before, but still before it
    core.tick()
    core.tick()
    core.clock.advance(0.001)
    core.tick()
    core.tick()
    due = [e for e in core.events if e["type"] == "task.due"]
    assert [e["id"] for e in due] == [tid]
    assert core.lease()["task"]["id"] == tid


def test_next_wakeup(core):
    assert core.core.next_wakeup() == (None, None)
    core.submit("a", not_before=core.clock.world() + 50)
    core.submit("b")
    core.lease(ttl=30)
    lease, delayed = core.core.next_wakeup()
    assert lease == pytest.approx(core.clock.mono() + 30)
    assert delayed == pytest.approx(core.clock.world() + 50)


# --- startup ---------------------------------------------------------------------------------------------

def test_startup_expires_overdue_leases(core):
    a = core.submit("a")["task"]["id"]
    b = core.submit("b")["task"]["id"]
    core.lease(ttl=10)
    core.lease(ttl=1000)
    core.close()
    core.clock.advance(20)
    evs = core.open()
    assert [e["id"] for e in evs if e["type"] == "task.pending"] == [a]
    assert core.get(a)["state"] == "PENDING" and core.get(b)["state"] == "RUNNING"


def test_startup_after_reboot_expires_every_lease(core):
    a = core.submit("a")["task"]["id"]
    b = core.submit("b")["task"]["id"]
    core.lease(ttl=1000)
    core.lease(ttl=3000)
    # the broker restarts without a reboot: the leases live on
    core.restart()
    assert core.get(a)["state"] == "RUNNING" and core.get(b)["state"] == "RUNNING"
    with core.storage.env.begin(write=True) as txn:
        txn.put(b"boot_id", protocol.pack_value("some-other-boot"), db=core.storage.dbs["meta"])
    core.restart()
    assert core.get(a)["state"] == "PENDING" and core.get(b)["state"] == "PENDING"
    assert core.call("stats")["leases"] == 0
    with core.storage.env.begin() as txn:
        stored = protocol.unpack_value(txn.get(b"boot_id", db=core.storage.dbs["meta"]))
    assert stored != "some-other-boot"


def test_startup_promotes_due_tasks(core):
    tid = core.submit("a", not_before=core.clock.world() + 30)["task"]["id"]
    core.close()
    core.clock.advance(31)
    evs = core.open()
    assert [e["id"] for e in evs if e["type"] == "task.due"] == [tid]
    with core.storage.env.begin() as txn:
        assert txn.stat(core.storage.dbs["ready"])["entries"] == 1
        assert txn.get(S.u64(tid), db=core.storage.dbs["tasks"]) is not None


def test_lease_ttl_defaults_to_the_configured_lease_ttl(make_core):
    core = make_core(broker={"lease_ttl": 7.0})
    tid = core.submit("a")["task"]["id"]
    lease = core.lease()
    assert lease["ttl"] == 7.0 and lease["task"]["lease"]["deadline_in"] == 7.0
    assert core.call("renew", id=tid, epoch=lease["epoch"])["deadline_in"] == 7.0


def test_cancel_of_a_running_turn_frees_the_conversation(core):
    conv = {"conversation": "cv"}
    t1 = core.submit("t1", requires=conv, priority=90)["task"]["id"]
    t2 = core.submit("t2", requires=conv)["task"]["id"]
    assert core.lease()["task"]["id"] == t1
    assert core.lease()["task"] is None
    core.call("cancel", id=t1)
    assert core.lease()["task"]["id"] == t2


@pytest.mark.parametrize("retry_after", [1e300, float("inf"), float("nan")])
def test_absurd_retry_after_is_a_bad_argument_not_an_internal_error(core, retry_after):
    tid = core.submit("a")["task"]["id"]
    lease = core.lease()
    expect_error("BAD_ARGUMENT", fail, core, tid, lease["epoch"], "transient", retry_after=retry_after)
    assert core.get(tid)["state"] == "RUNNING"
    assert fail(core, tid, lease["epoch"], "transient", retry_after=-5)["not_before"] == core.clock.world()


def test_quota_refusal_with_a_reset_time_already_past_does_not_cool_down(qcore):
    a = qcore.submit("a")["task"]["id"]
    la = qcore.lease()
    out = qcore.call("refuse", id=a, epoch=la["epoch"], until=qcore.clock.world() - 0.5, message="late report")
    assert out["state"] == "PENDING"
    assert qcore.lease()["task"]["id"] == a  # the account is not cooling down
    lb = qcore.get(a)
    out = fail(qcore, a, lb["epoch"], "quota", message="Retry-After: 0", retry_after=0)
    assert qcore.lease()["task"]["id"] == a


def test_live_charges_name_the_account_and_mode_of_every_counted_unit(qcore):
    a = qcore.submit("a")["task"]["id"]
    la = qcore.lease()
    fail(qcore, a, la["epoch"], "transient", message="x", sent=True, retry_after=0)
    qcore.clock.advance(1)
    lb = qcore.lease()
    fail(qcore, a, lb["epoch"], "transient", message="y", sent=False, retry_after=0)
    t = qcore.get(a)
    assert t["charged"] == 1 and [c[0] for c in t["live_charges"]] == [la["epoch"]]


# --- turn intents and reconciliation affinity (docs/tasks.md § Unknown turns) ------------------

def test_turn_begin_records_the_intent_and_complete_clears_it(core):
    tid = core.submit("a")["task"]["id"]
    la = core.lease(account="acct")
    out = core.call("turn_begin", id=tid, epoch=la["epoch"])
    assert out["turn"]["state"] == "sending" and out["turn"]["account"] == "acct"
    assert core.get(tid)["turn"]["epoch"] == la["epoch"]
    core.call("complete", id=tid, epoch=la["epoch"], result="r")
    t = core.get(tid)
    assert t["turn"] is None and t["unknown_turn"] is None


def test_turn_begin_with_a_stale_epoch_is_refused_so_a_zombie_never_sends(core):
    tid = core.submit("a")["task"]["id"]
    la = core.lease(account="acct", ttl=1)
    core.clock.advance(2)
    core.tick()
    core.clock.advance(3600)  # past the backoff
    lb = core.lease(account="acct")
    expect_error("STALE_EPOCH", core.call, "turn_begin", id=tid, epoch=la["epoch"])
    assert core.call("turn_begin", id=tid, epoch=lb["epoch"])["turn"]["epoch"] == lb["epoch"]


def test_expired_lease_after_turn_begin_binds_the_task_to_that_account_until_reconciled(core):
    tid, la = died_mid_request(core)
    core.clock.advance(60)  # past any backoff, within the hold (30 min)
    core.tick()
    t = core.get(tid)
    assert t["state"] == "PENDING" and t["unknown_turn"]["account"] == "acct"
    assert t["unknown_turn"]["epoch"] == la["epoch"]
    other = core.lease(account="other")
    assert other["task"] is None and "only that account can reconcile" in other["reason"]
    lb = core.lease(account="acct")
    assert lb["task"]["id"] == tid and lb["task"]["unknown_turn"]["attempt"] == 1
    # the worker reconciled (provider never saw it) and sends again: the intent replaces the unknown turn
    core.call("turn_begin", id=tid, epoch=lb["epoch"])
    assert core.get(tid)["unknown_turn"] is None


def test_expired_lease_without_turn_begin_needs_no_reconciliation(core):
    tid = core.submit("a")["task"]["id"]
    core.lease(account="acct", ttl=1)
    core.clock.advance(3600)
    core.tick()
    core.clock.advance(3600)  # past the backoff
    assert core.get(tid).get("unknown_turn") is None
    assert core.lease(account="other")["task"]["id"] == tid


def test_unknown_failure_after_sending_needs_reconciliation_but_a_transient_one_does_not(core):
    a = core.submit("a")["task"]["id"]
    la = core.lease(account="acct")
    core.call("turn_begin", id=a, epoch=la["epoch"])
    fail(core, a, la["epoch"], "unknown", message="connection lost", retry_after=0)
    assert core.get(a)["unknown_turn"]["account"] == "acct"
    b = core.submit("b")["task"]["id"]
    core.clock.advance(1)
    lb = core.lease(account="other")
    assert lb["task"]["id"] == b
    core.call("turn_begin", id=b, epoch=lb["epoch"])
    fail(core, b, lb["epoch"], "transient", message="500", retry_after=0)
    assert core.get(b).get("unknown_turn") is None


def test_empty_lease_says_when_quota_frees(qcore):
    qcore.call("quota_set", account="acct", mode="deep", windows=["1/day@00:00 UTC"])
    a = qcore.submit("a", requires={"mode": "deep"})["task"]["id"]
    b = qcore.submit("b", requires={"mode": "deep"})["task"]["id"]
    la = qcore.lease(modes=["deep"])
    assert la["task"]["id"] == a
    out = qcore.lease(modes=["deep"], task_id=b)
    assert out["task"] is None and out["retry_at"] > qcore.clock.world()
    import datetime as dt
    assert dt.datetime.fromtimestamp(out["retry_at"], dt.UTC).strftime("%H:%M") == "00:00"


def test_an_unknown_turns_binding_lapses_after_the_hold_and_any_account_may_run_the_task(make_core):
    core = make_core(broker={"unknown_turn_hold": 600.0})
    tid, la = died_mid_request(core)              # the worker froze mid-request: its lease expires
    unknown = core.get(tid)["unknown_turn"]
    assert unknown["until"] == pytest.approx(unknown["since"] + 600.0)
    core.clock.advance(300)
    assert core.lease(account="other")["task"] is None
    core.clock.advance(301)
    lb = core.lease(account="other")
    assert lb["task"]["id"] == tid
    # the frozen worker wakes up and reports its late result: refused, the new lease stands
    expect_error("STALE_EPOCH", core.call, "complete", id=tid, epoch=la["epoch"], result={"text": "late"})
    core.call("turn_begin", id=tid, epoch=lb["epoch"])
    core.call("complete", id=tid, epoch=lb["epoch"], result={"text": "answer"})
    assert core.get(tid)["state"] == "DONE" and core.get(tid)["result"] == {"text": "answer"}


def test_a_zero_hold_keeps_the_binding_forever(make_core):
    core = make_core(broker={"unknown_turn_hold": 0})
    tid, _ = died_mid_request(core)
    assert core.get(tid)["unknown_turn"]["until"] is None
    core.clock.advance(30 * 86400)
    assert core.lease(account="other")["task"] is None
