"""Conversation hand-off in the broker's lease transaction (services/broker/ops_handoff.py), fake clock."""
from __future__ import annotations

import pytest

from cli.render import show_text

T = 300.0   # [scheduler] conversation_handoff default
CONV = {"conversation": "cv"}


@pytest.fixture
def h(make_core):
    """Account gem has one standard request per day; the conversation cv lives on it after turn 0."""
    core = make_core(quotas={("gem", "standard"): ["1/day@00:00 UTC"]})
    t0 = core.submit("cv#0", requires=CONV)["task"]["id"]
    lease = core.lease(worker="backend-gem", account="gem")
    assert lease["task"]["id"] == t0
    core.call("complete", id=t0, epoch=lease["epoch"], result={"text": "a", "meta": {"url": "https://g/c/1"}})
    return core


def keep_alive(core, account="gem"):
    """A worker of ``account`` asks the broker for work it cannot get (it is online, not offline)."""
    out = core.lease(worker=f"backend-{account}", account=account, modules=["nobody"])
    assert out["task"] is None


def test_a_turn_bound_to_an_exhausted_account_moves_after_the_handoff_time_not_before(h):
    t1 = h.submit("cv#1", requires=CONV)["task"]["id"]
    out = h.lease(worker="backend-cla", account="cla")
    assert out["task"] is None and "lives on account gem" in out["reason"] and "0s of 300s" in out["reason"]
    h.clock.advance(T - 1)
    keep_alive(h)
    out = h.lease(worker="backend-cla", account="cla")
    assert out["task"] is None and "lives on account gem" in out["reason"]
    # the holding account itself is refused by its quota: it cannot run the turn
    out = h.lease(worker="backend-gem", account="gem")
    assert out["task"] is None and "quota 1/1" in out["reason"]
    h.clock.advance(1)
    got = h.lease(worker="backend-cla", account="cla")
    assert got["task"]["id"] == t1
    task = h.get(t1)
    conv = task["conversation"]
    assert conv["account"] == "cla" and conv["inflight"] == t1 and "url" not in conv   # the old page is gem's
    [entry] = conv["handoffs"]
    assert entry["from"] == "gem" and entry["to"] == "cla" and entry["task"] == t1 and entry["turn"] == 1
    assert "quota 1/1" in entry["why"] and entry["at"] == h.clock.world()
    assert "handed off from gem" in task["history"][-1]["why"] and task["history"][-1]["to"] == "RUNNING"
    shown = show_text(task, h.clock.world())          # what `fanoctl queue show` prints
    assert "conversation hand-offs:" in shown and "quota 1/1" in shown.split("conversation hand-offs:")[1]
    running = [e for e in h.events if e["type"] == "task.running" and e["id"] == t1][-1]
    assert running["account"] == "cla" and running["handoff"]["from"] == "gem"
    assert any(e["type"] == "conversation.handoff" and e["to"] == "cla" for e in h.events)
    # later turns follow the conversation to its new account
    h.call("complete", id=t1, epoch=got["epoch"], result="b")
    t2 = h.submit("cv#2", requires=CONV)["task"]["id"]
    assert "lives on account cla" in h.lease(worker="backend-gem", account="gem")["reason"]
    assert h.lease(worker="backend-cla", account="cla")["task"]["id"] == t2


def test_no_handoff_while_the_holding_account_can_run_it(make_core):
    core = make_core()
    t0 = core.submit("cv#0", requires=CONV)["task"]["id"]
    lease = core.lease(worker="backend-gem", account="gem")
    core.call("complete", id=t0, epoch=lease["epoch"], result="a")
    core.submit("cv#1", requires=CONV)
    core.clock.advance(3 * T)
    keep_alive(core)   # online, with quota and idle: the turn waits for it
    out = core.lease(worker="backend-cla", account="cla")
    assert out["task"] is None and "gem can run it" in out["reason"]


def test_a_turn_waiting_behind_its_accounts_other_work_moves_to_an_idle_account_after_the_handoff_time(make_core):
    """gem is online with quota but busy with another task: its conversation's next turn waits T, then the
    idle cla takes it (issue 11: no account idles while work waits)."""
    core = make_core()
    t0 = core.submit("cv#0", requires=CONV)["task"]["id"]
    lease = core.lease(worker="backend-gem", account="gem")
    core.call("complete", id=t0, epoch=lease["epoch"], result="a")
    other = core.submit("long one", requires={"account": "gem"})["task"]["id"]
    busy = core.lease(worker="backend-gem", account="gem")
    assert busy["task"]["id"] == other
    t1 = core.submit("cv#1", requires=CONV)["task"]["id"]
    for _ in range(int(T - 1) // 20):   # gem works on, renewing its lease (online all along)
        core.clock.advance(20)
        core.call("renew", id=other, epoch=busy["epoch"], ttl=None)
    core.clock.advance(T - 1 - 20 * (int(T - 1) // 20))
    out = core.lease(worker="backend-cla", account="cla")
    assert out["task"] is None and "lives on account gem" in out["reason"]
    core.clock.advance(1)
    got = core.lease(worker="backend-cla", account="cla")
    assert got["task"]["id"] == t1
    [entry] = core.get(t1)["conversation"]["handoffs"]
    assert entry["from"] == "gem" and f"gem is busy with task {other}" in entry["why"]


def test_an_offline_account_hands_off_after_being_silent_for_the_handoff_time(make_core):
    core = make_core()
    t0 = core.submit("cv#0", requires=CONV)["task"]["id"]
    lease = core.lease(worker="backend-gem", account="gem")
    core.call("complete", id=t0, epoch=lease["epoch"], result="a")
    t1 = core.submit("cv#1", requires=CONV)["task"]["id"]
    core.clock.advance(T - 1)
    assert core.lease(worker="backend-cla", account="cla")["task"] is None
    core.clock.advance(1)
    assert core.lease(worker="backend-cla", account="cla")["task"]["id"] == t1
    assert "offline" in core.get(t1)["conversation"]["handoffs"][0]["why"]


def test_a_paused_account_hands_off_and_the_backoff_does_not_count_as_waiting(make_core):
    core = make_core()
    t0 = core.submit("cv#0", requires=CONV)["task"]["id"]
    lease = core.lease(worker="backend-gem", account="gem")
    core.call("complete", id=t0, epoch=lease["epoch"], result="a")
    t1 = core.submit("cv#1", requires=CONV)["task"]["id"]
    lease = core.lease(worker="backend-gem", account="gem")
    core.call("fail", id=t1, epoch=lease["epoch"], error_class="transient", message="x", sent=False,
              retry_after=600)
    core.call("account_pause", account="gem", reason="login expired")
    core.clock.advance(600 + T - 1)
    core.tick()
    keep_alive(core)
    assert "lives on account gem" in core.lease(worker="backend-cla", account="cla")["reason"]
    core.clock.advance(1)
    assert core.lease(worker="backend-cla", account="cla")["task"]["id"] == t1
    assert "paused (login expired)" in core.get(t1)["conversation"]["handoffs"][0]["why"]


def test_never_while_a_turn_is_in_flight(h):
    t1 = h.submit("cv#1", requires=CONV)["task"]["id"]
    t2 = h.submit("cv#2", requires=CONV)["task"]["id"]
    h.call("quota_reset", account="gem", mode="standard", usage=True, spec=False)
    running = h.lease(worker="backend-gem", account="gem", ttl=3600)
    assert running["task"]["id"] == t1
    h.call("account_pause", account="gem", reason="operator")
    for _ in range(4):   # the turn runs for an hour, its worker renewing the lease
        h.clock.advance(T / 2)
        h.call("renew", id=t1, epoch=running["epoch"], ttl=3600)
    out = h.lease(worker="backend-cla", account="cla")
    assert out["task"] is None and f"turn task {t1} in flight" in out["reason"]
    assert h.get(t2)["conversation"]["account"] == "gem"


def test_an_unknown_turn_is_not_handed_off_before_its_hold_lapses(h):
    t1 = h.submit("cv#1", requires=CONV)["task"]["id"]
    h.call("quota_reset", account="gem", mode="standard", usage=True, spec=False)
    lease = h.lease(worker="backend-gem", account="gem")
    h.call("turn_begin", id=t1, epoch=lease["epoch"])
    h.call("fail", id=t1, epoch=lease["epoch"], error_class="unknown", message="crashed mid-answer", sent=True,
           retry_after=0)
    h.call("account_pause", account="gem", reason="frozen")
    h.clock.advance(T + 1)            # past the hand-off time, inside unknown_turn_hold (1800 s)
    h.tick()
    out = h.lease(worker="backend-cla", account="cla")
    assert out["task"] is None and "unknown outcome" in out["reason"]
    h.clock.advance(1800)             # the hold lapsed: the account had its time to reconcile
    h.tick()
    got = h.lease(worker="backend-cla", account="cla")
    assert got["task"]["id"] == t1 and h.get(t1)["conversation"]["account"] == "cla"


def test_handoff_off_with_zero(make_core):
    core = make_core(scheduler={"conversation_handoff": 0})
    t0 = core.submit("cv#0", requires=CONV)["task"]["id"]
    lease = core.lease(worker="backend-gem", account="gem")
    core.call("complete", id=t0, epoch=lease["epoch"], result="a")
    core.submit("cv#1", requires=CONV)
    core.call("account_pause", account="gem", reason="x")
    core.clock.advance(100 * T)
    out = core.lease(worker="backend-cla", account="cla")
    assert out["task"] is None and "hand-off is off" in out["reason"]


def test_another_turn_left_unknown_keeps_the_conversation_where_it_is(h):
    t1 = h.submit("cv#1", requires=CONV, priority=90)["task"]["id"]
    t2 = h.submit("cv#2", requires=CONV)["task"]["id"]
    h.call("quota_reset", account="gem", mode="standard", usage=True, spec=False)
    lease = h.lease(worker="backend-gem", account="gem")
    assert lease["task"]["id"] == t1
    h.call("turn_begin", id=t1, epoch=lease["epoch"])
    h.clock.advance(61)                 # the worker died mid-request: the lease expires, the turn is unknown
    h.tick()
    assert h.get(t2)["conversation"]["unknown"]["task"] == t1
    h.call("account_pause", account="gem", reason="frozen")
    h.clock.advance(T)
    h.tick()
    out = h.lease(worker="backend-cla", account="cla", task_id=t2)
    assert out["task"] is None and f"turn task {t1} has an unknown outcome on gem" in out["reason"]
    h.call("cancel", id=t1)             # the operator gives up on that turn: the conversation may move
    assert "unknown" not in h.get(t2)["conversation"]
    assert h.lease(worker="backend-cla", account="cla")["task"]["id"] == t2


def test_the_handoff_setting_is_validated(tmp_path):
    from shared.config import ConfigError, load_config
    from tests.support import write_config
    cfg = load_config(write_config(tmp_path, scheduler={"conversation_handoff": 60}))
    assert cfg.scheduler.conversation_handoff == 60.0
    with pytest.raises(ConfigError, match=r"\[scheduler\] conversation_handoff: expected a number ≥ 0, got -5$"):
        load_config(write_config(tmp_path, scheduler={"conversation_handoff": -5}))
    with pytest.raises(ConfigError, match=r"\[scheduler\] conversation_handoff: expected a number ≥ 0, got 'soon'$"):
        load_config(write_config(tmp_path, scheduler={"conversation_handoff": "soon"}))
