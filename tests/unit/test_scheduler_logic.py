"""The scheduler's decisions without sockets: SchedulerCore driven by events, worker messages and a fake clock."""
import random
from pathlib import Path

import pytest

from services.scheduler import queries
from services.scheduler.core import SchedulerCore
from shared import protocol
from shared.clock import FakeClock
from shared.config import AccountConfig, Config, SchedulerConfig
from shared.errors import BrokerUnavailable

T0 = 1_700_000_000.0
W1, W2, W3 = b"w1", b"w2", b"w3"


def make_core(accounts=(("a1", "sim", ("standard",)), ("a2", "sim", ("standard", "deep"))), **sched) -> SchedulerCore:
    sched.setdefault("assign_timeout", 10.0)
    sched.setdefault("lease_ttl", 30.0)
    cfg = Config(path=None, run_dir=Path("/tmp/x"), data_dir=Path("/tmp/x"), log_dir=Path("/tmp/x"),
                 scheduler=SchedulerConfig(**sched),
                 accounts=tuple(AccountConfig(n, b, m) for n, b, m in accounts))
    return SchedulerCore(cfg, FakeClock(world=T0, mono=1000.0))


def submitted(core, tid, module="explorer", kind="explorer.explore", priority=50, requires=None, attrs=None,
              created=None, not_before=0.0, unknown_account=None, typ="task.submitted"):
    core.on_event({"seq": 0, "ts": core.clock.world(), "type": typ, "id": tid, "module": module, "kind": kind,
                   "priority": priority, "requires": requires or {}, "attrs": attrs or {},
                   "created": core.clock.world() if created is None else created, "not_before": not_before,
                   "unknown_account": unknown_account, "state": "PENDING"})


def event(core, typ, **fields):
    core.on_event({"seq": 0, "ts": core.clock.world(), "type": typ, **fields})


def msg(core, ident, typ, **fields):
    core.on_message(ident, protocol.encode_worker(typ, **fields))


def ready(core, ident, account, modes=("standard",), backend="sim", name=None):
    msg(core, ident, "ready", worker=name or f"backend-{account}", account=account, backend=backend, modes=list(modes))


def advance(core, seconds, *alive):
    """Let time pass; the workers named stay alive (they heartbeat)."""
    core.clock.advance(seconds)
    for ident in alive:
        msg(core, ident, "heartbeat", worker="w", task_id=None)


def timer(core, what):
    return min(t for w, t in core.timers() if w == what) - core.clock.mono()


def done(core, ident, tid, outcome="done", account="a1", **kw):
    msg(core, ident, "done", worker=f"backend-{account}", task_id=tid, epoch=1, outcome=outcome, **kw)


def sent(core, types=("assign", "cancel", "disconnect", "answer")):
    return [(i, t, f) for i, t, f in core.take_output() if t in types]


def assigns(core):
    core.tick()
    return [(i, f["task_id"]) for i, t, f in sent(core) if t == "assign"]


def running(core, tid, account="a1"):
    event(core, "task.running", id=tid, module="explorer", kind="explorer.explore", worker=f"backend-{account}",
          account=account, mode="standard", epoch=1)


# --- dispatch -----------------------------------------------------------------------------------------

def test_best_task_goes_to_a_ready_worker_one_at_a_time():
    core = make_core()
    submitted(core, 1, kind="explorer.critique")      # 45
    submitted(core, 2, kind="documenter.synthesis")   # 60
    submitted(core, 3, kind="explorer.explore")       # 50
    assert assigns(core) == []                        # nobody is ready
    ready(core, W1, "a1")
    core.tick()
    out = sent(core)
    assert out == [(W1, "assign", {"task_id": 2, "ttl": 30.0})]
    assert assigns(core) == []                        # no prefetch: one task until it says ready again
    running(core, 2)
    done(core, W1, 2)
    assert assigns(core) == []
    ready(core, W1, "a1")
    assert assigns(core) == [(W1, 3)]


def test_tasks_arriving_while_a_worker_waits_are_assigned_at_once():
    core = make_core()
    ready(core, W1, "a1")
    assert assigns(core) == []
    submitted(core, 7)
    assert assigns(core) == [(W1, 7)]


def test_admission_by_backends_account_mode_and_affinity():
    core = make_core(accounts=(("a1", "sim", ("standard",)), ("a2", "sim", ("standard", "deep")),
                               ("c1", "claude", ("standard",))))
    submitted(core, 1, requires={"backends": ["claude"]})
    submitted(core, 2, requires={"account": "a2"})
    submitted(core, 3, requires={"mode": "deep"})
    submitted(core, 4, requires={"mode": "deep", "deep_fallback": True}, kind="x.ask")
    submitted(core, 5, unknown_account="a2", kind="x.generate_questions")
    ready(core, W1, "a1")
    assert assigns(core) == [(W1, 4)]                 # only the deep task that may fall back fits a1
    ready(core, W3, "c1", backend="claude")
    assert assigns(core) == [(W3, 1)]
    ready(core, W2, "a2", modes=("standard", "deep"))
    got = []
    for _ in range(3):
        (_, tid), = assigns(core)
        got.append(tid)
        running(core, tid, account="a2")
        done(core, W2, tid, account="a2")
        ready(core, W2, "a2", modes=("standard", "deep"))
    assert sorted(got) == [2, 3, 5]
    assert assigns(core) == []


def test_paused_and_cooling_accounts_get_nothing_until_resumed_or_expired():
    core = make_core()
    submitted(core, 1)
    event(core, "account.paused", account="a1", reason="auth failure")
    ready(core, W1, "a1")
    assert assigns(core) == []
    event(core, "account.resumed", account="a1")
    event(core, "account.cooldown", account="a1", mode="standard", until=T0 + 600, reason="429")
    assert assigns(core) == []
    assert timer(core, "quota") == pytest.approx(600)
    advance(core, 599, W1)
    assert assigns(core) == []
    advance(core, 2, W1)
    assert assigns(core) == [(W1, 1)]


def test_declined_for_quota_blocks_the_account_mode_and_module_until_retry_at():
    core = make_core()
    for tid in (1, 2):
        submitted(core, tid, module="explorer")
    submitted(core, 3, module="documenter", kind="documenter.draft", priority=40)
    ready(core, W1, "a1")
    assert assigns(core) == [(W1, 1)]
    done(core, W1, 1, outcome="declined", message="quota 10/10 for explorer", retry_at=T0 + 3600)
    ready(core, W1, "a1")
    assert assigns(core) == [(W1, 3)]                 # the other module's reserve is not blocked
    done(core, W1, 3, outcome="declined", message="quota", retry_at=T0 + 1800)
    ready(core, W1, "a1")
    assert assigns(core) == []                        # nothing fits now; no retry loop
    assert timer(core, "quota") == pytest.approx(1800)   # wakes at the earliest reset, not by polling
    advance(core, 1801, W1)
    assert assigns(core) == [(W1, 3)]
    running(core, 3)
    done(core, W1, 3)
    event(core, "task.done", id=3, module="documenter", kind="documenter.draft")
    ready(core, W1, "a1")
    assert assigns(core) == []                        # explorer still blocked until T0+3600
    advance(core, 1800, W1)
    assert [t for _, t in assigns(core)] == [1]


def test_a_refresh_the_broker_cannot_answer_is_not_asked_again_and_a_task_it_does_not_know_is_forgotten():
    core = make_core()
    submitted(core, 1)
    submitted(core, 2)
    core.reread(1)
    core.reread(2)
    assert sorted(core.refresh_wanted(10)) == [1, 2] and len(core.refresh_wanted(1)) == 1
    core.on_refresh(1, None)                          # refused: the task stays as it was
    core.on_refresh(2, None, missing=True)            # no such task (a new database): forgotten
    assert core.refresh_wanted(10) == []
    assert 1 in core.table.tasks and 1 in core.table.queue
    assert 2 not in core.table.tasks and 2 not in core.table.queue


def test_declined_without_retry_time_sits_out_and_is_refreshed():
    core = make_core()
    submitted(core, 1)
    ready(core, W1, "a1")
    assert assigns(core) == [(W1, 1)]
    done(core, W1, 1, outcome="declined", message="conversation c lives on account a2")
    ready(core, W1, "a1")
    assert assigns(core) == []
    assert core.refresh_wanted(10) == [1]             # the service re-reads it from the broker
    core.on_refresh(1, {"id": 1, "state": "PENDING", "module": "explorer", "kind": "explorer.explore",
                        "created": T0, "not_before": 0.0})
    assert core.refresh_wanted(10) == []
    assert assigns(core) == []                        # the fresh record does not lift the hold
    assert timer(core, "due") == pytest.approx(1.0)
    advance(core, 1.5, W1)
    assert assigns(core) == [(W1, 1)]
    done(core, W1, 1, outcome="declined", message="still no")
    ready(core, W1, "a1")
    assert timer(core, "due") == pytest.approx(2.0)   # doubled per decline


def test_assignment_without_word_goes_back_after_the_timeout():
    core = make_core(assign_timeout=5.0)
    submitted(core, 1)
    ready(core, W1, "a1")
    assert assigns(core) == [(W1, 1)]
    ready(core, W2, "a1", name="backend-a1-bis")   # a second worker of the account (same name: replaced)
    assert timer(core, "assignment") == pytest.approx(5.0)
    core.clock.advance(3)
    msg(core, W1, "heartbeat", worker="backend-a1", task_id=None)
    assert assigns(core) == []
    core.clock.advance(2.5)
    msg(core, W1, "heartbeat", worker="backend-a1", task_id=None)
    msg(core, W2, "heartbeat", worker="backend-a1", task_id=None)
    out = assigns(core)
    assert len(out) == 1 and out[0][1] == 1           # back in the queue and assigned again


def test_a_heartbeat_naming_the_task_confirms_the_assignment():
    core = make_core(assign_timeout=2.0)
    submitted(core, 1)
    ready(core, W1, "a1")
    assert assigns(core) == [(W1, 1)]
    core.clock.advance(1)
    msg(core, W1, "heartbeat", worker="backend-a1", task_id=1)
    core.clock.advance(2)
    msg(core, W1, "heartbeat", worker="backend-a1", task_id=1)
    core.tick()
    assert 1 in core.table.assigned and 1 not in core.table.queue


def test_a_silent_worker_is_forgotten_and_its_unleased_task_requeued():
    core = make_core()
    submitted(core, 1)
    submitted(core, 2)
    ready(core, W1, "a1")
    assert assigns(core) == [(W1, 1)]
    ready(core, W2, "a2")
    assert assigns(core) == [(W2, 2)]
    running(core, 2, account="a2")
    core.clock.advance(3.5)                           # neither has said anything for > 3 intervals
    core.tick()
    assert len(core.workers) == 0
    assert 1 in core.table.queue                            # never leased: back at once
    assert 2 not in core.table.tasks and 2 in core.table.running  # leased: the broker's lease decides
    event(core, "task.pending", id=2, module="explorer", kind="explorer.explore", priority=50, requires={},
          attrs={}, created=T0, not_before=0.0, unknown_account="a2", state="PENDING", prev="RUNNING")
    ready(core, W3, "a1")
    assert assigns(core) == [(W3, 1)]                 # task 2 must be reconciled by a2's worker
    ready(core, W2, "a2")
    assert assigns(core) == [(W2, 2)]


def test_heartbeats_flow_to_every_worker():
    core = make_core()
    ready(core, W1, "a1")
    ready(core, W2, "a2")
    core.tick()
    beats = [i for i, t, _ in core.take_output() if t == "heartbeat"]
    assert sorted(beats) == [W1, W2]
    core.clock.advance(0.5)
    core.tick()
    assert [t for _, t, _ in core.take_output()] == []
    core.clock.advance(0.6)
    core.tick()
    assert len([t for _, t, _ in core.take_output() if t == "heartbeat"]) == 2


def test_bad_and_unknown_peers_are_disconnected_and_counted():
    core = make_core()
    core.on_message(W1, [b"junk"])
    core.on_message(W1, [protocol.WORKER_HEADER, b"\xc1\xc1"])
    msg(core, W1, "heartbeat", worker="x", task_id=None)
    msg(core, W1, "assign", task_id=3)
    ready(core, W2, "")
    out = sent(core)
    assert [t for _, t, _ in out] == ["disconnect"] * 5
    assert sum(core.errors.values()) == 5
    assert len(core.workers) == 0


def test_a_worker_met_mid_task_after_a_restart_is_kept():
    core = make_core()
    running(core, 9, account="a1")
    msg(core, W1, "heartbeat", worker="backend-a1", task_id=9)
    assert sent(core) == []
    w = core.workers.get(W1)
    assert w.state == "busy" and w.task_id == 9 and w.account == "a1"
    done(core, W1, 9)
    ready(core, W1, "a1")
    assert core.workers.get(W1).state == "idle"


def test_a_cut_off_worker_heard_again_is_not_taken_for_the_account_its_task_moved_to():
    """A worker cut off by a partition (docs/tasks.md § Hung workers) whose lease was revoked and whose task now runs on
    another account heartbeats that task when the link heals: it is kept, busy, but not as that account's
    worker, so its report of the stale job is not refused as speaking for another account."""
    from shared.roles import Role
    core = make_core()
    running(core, 9, account="a2")                    # the task's live lease is a2's
    core.on_message(W1, protocol.encode_worker("heartbeat", worker="backend-a1", task_id=9), Role("worker", "a1"))
    w = core.workers.get(W1)
    assert w.state == "busy" and w.task_id == 9 and w.account is None
    core.on_message(W1, protocol.encode_worker("done", worker="backend-a1", task_id=9, epoch=1, outcome="stale"),
                    Role("worker", "a1"))
    assert core.errors["FORBIDDEN"] == 0 and not [f for _, t, f in core.take_output() if t == "disconnect"]


def test_a_reconnected_worker_replaces_its_old_socket():
    core = make_core()
    submitted(core, 1)
    ready(core, W1, "a1")
    assert assigns(core) == [(W1, 1)]
    ready(core, W2, "a1")                             # same name, new socket: the old one is dead
    assert core.workers.get(W1) is None
    assert assigns(core) == [(W2, 1)]


def test_cancel_reaches_the_worker_running_the_task():
    core = make_core()
    submitted(core, 1)
    ready(core, W1, "a1")
    assigns(core)
    running(core, 1)
    event(core, "task.cancelled", id=1, module="explorer", kind="explorer.explore", worker="backend-a1")
    assert sent(core) == [(W1, "cancel", {"task_id": 1})]
    assert 1 not in core.table.running


def test_one_turn_per_conversation_and_later_turns_follow_the_account():
    core = make_core(accounts=(("a1", "sim", ("standard",)), ("a2", "sim", ("standard",))))
    submitted(core, 1, requires={"conversation": "c"})
    submitted(core, 2, requires={"conversation": "c"})
    submitted(core, 3)
    ready(core, W2, "a2")
    assert assigns(core) == [(W2, 1)]
    ready(core, W1, "a1")
    assert assigns(core) == [(W1, 3)]                 # turn 2 waits for turn 1
    running(core, 3, account="a1")
    done(core, W1, 3)
    running(core, 1, account="a2")
    event(core, "task.done", id=1, module="explorer", kind="explorer.explore")
    ready(core, W1, "a1")
    assert assigns(core) == []                        # the conversation lives on a2
    ready(core, W2, "a2")
    assert assigns(core) == [(W2, 2)]


def test_a_conversation_binding_sent_by_the_broker_is_used():
    core = make_core(accounts=(("a1", "sim", ("standard",)), ("a2", "sim", ("standard",))))
    core.on_event({"seq": 0, "type": "task.pending", "id": 1, "module": "explorer", "kind": "x", "priority": 50,
                   "requires": {"conversation": "c"}, "attrs": {}, "created": T0, "not_before": 0.0,
                   "unknown_account": None, "conversation_account": "a2"})
    ready(core, W1, "a1")
    assert assigns(core) == []
    ready(core, W2, "a2")
    assert assigns(core) == [(W2, 1)]


def test_delayed_tasks_wait_for_their_time():
    core = make_core()
    submitted(core, 1, not_before=T0 + 30)
    ready(core, W1, "a1")
    assert assigns(core) == []
    assert core.next_wake() <= 1.0                    # heartbeats are due sooner than the task
    for _ in range(29):
        core.clock.advance(1)
        msg(core, W1, "heartbeat", worker="backend-a1", task_id=None)
        assert assigns(core) == []
    core.clock.advance(1)
    assert assigns(core) == [(W1, 1)]


def test_priority_events_and_backlog_reorder_the_queue():
    core = make_core(backlog_boosts={"documenter": [[3, 30]]})
    submitted(core, 1, module="explorer", kind="explorer.synthesis")      # 60
    submitted(core, 2, module="documenter", kind="documenter.draft")      # 50
    event(core, "task.priority", id=2, module="documenter", priority=65)  # 65
    ready(core, W1, "a1")
    assert assigns(core) == [(W1, 2)]
    core = make_core(backlog_boosts={"documenter": [[3, 30]]})
    submitted(core, 1, module="explorer", kind="explorer.synthesis")
    for tid in range(2, 6):                                               # 4 waiting > 3: +30
        submitted(core, tid, module="documenter", kind="documenter.draft")
    ready(core, W1, "a1")
    assert assigns(core) == [(W1, 2)]


def test_rebuild_records_restore_bindings_and_assignments_survive():
    core = make_core(accounts=(("a1", "sim", ("standard",)), ("a2", "sim", ("standard",))))
    core.on_task_record({"id": 5, "state": "RUNNING", "module": "explorer", "kind": "x",
                         "requires": {"conversation": "c"}, "lease": {"worker": "backend-a2", "account": "a2"}})
    core.on_task_record({"id": 6, "state": "PENDING", "module": "explorer", "kind": "x", "priority": 50,
                         "requires": {"conversation": "c"}, "attrs": {}, "created": T0, "not_before": 0.0})
    assert 6 not in core.table.queue and 6 in core.table.held["c"]
    event(core, "task.done", id=5, module="explorer", kind="x")
    ready(core, W1, "a1")
    assert assigns(core) == []
    ready(core, W2, "a2")
    assert assigns(core) == [(W2, 6)]
    core.reset()
    core.on_task_record({"id": 6, "state": "PENDING", "module": "explorer", "kind": "x", "created": T0})
    core.finish_rebuild()
    assert 6 in core.table.assigned and 6 not in core.table.queue


def test_done_before_the_events_keeps_the_task_out_and_asks_the_broker():
    core = make_core()
    submitted(core, 1)
    ready(core, W1, "a1")
    assigns(core)
    done(core, W1, 1, outcome="failed", message="transient")
    ready(core, W1, "a1")
    assert assigns(core) == [] and 1 in core.table.missing
    core.on_task_record({"id": 1, "state": "PENDING", "module": "explorer", "kind": "explorer.explore",
                         "created": T0, "not_before": T0 + 5})
    assert 1 not in core.table.assigned and 1 in core.table.queue
    advance(core, 5, W1)
    assert assigns(core) == [(W1, 1)]


# --- queries ------------------------------------------------------------------------------------------

def ask(core, what, **fields):
    msg(core, b"cli", "query", cid="q1", what=what, **fields)
    (ident, typ, body), = sent(core)
    assert ident == b"cli" and typ == "answer" and body["cid"] == "q1"
    return body


def test_why_explains_each_account_and_the_rank():
    core = make_core(accounts=(("a1", "sim", ("standard",)), ("a2", "sim", ("standard", "deep")),
                               ("a3", "sim", ("standard", "deep"))))
    submitted(core, 1, requires={"mode": "deep"}, kind="x.critique")
    submitted(core, 2, requires={"mode": "deep"}, kind="x.synthesis")
    submitted(core, 3, requires={"mode": "deep"}, kind="x.synthesis")
    submitted(core, 4, kind="x.address_comment")     # standard, but a2 and a3 could run it instead of 1
    ready(core, W2, "a2", modes=("standard", "deep"))
    assigns(core)
    done(core, W2, 4, account="a2", outcome="declined", retry_at=T0 + 7200, message="standard quota 80/80")
    ready(core, W2, "a2", modes=("standard", "deep"))
    body = ask(core, "why", task_id=1)
    assert body["ok"]
    r = body["result"]
    assert r["where"] == "ready" and r["state"] == "PENDING"
    statuses = {a["account"]: a["status"] for a in r["accounts"]}
    assert statuses == {"a1": "no_mode", "a2": "idle", "a3": "offline"}
    assert r["ahead"] == 3
    assert "a3 no worker connected" in r["line"] and "3 higher-priority task(s) ahead" in r["line"]
    # block a2's deep mode for the explorer module: the line says until when
    core.tick()
    (_, _, f), = [x for x in sent(core) if x[1] == "assign"]
    done(core, W2, f["task_id"], account="a2", outcome="declined", retry_at=T0 + 3600, message="deep quota 20/20")
    r = ask(core, "why", task_id=1)["result"]
    a2 = next(a for a in r["accounts"] if a["account"] == "a2")
    assert a2["status"] == "blocked" and a2["until"] == T0 + 3600 and "deep quota" in a2["detail"]
    assert r["terms"]["base"] == 45 and r["priority"] == pytest.approx(45)


def test_why_shows_the_figures_and_reset_of_the_quota_window_that_blocks():
    core = make_core()
    submitted(core, 1, requires={"mode": "deep"})
    ready(core, W2, "a2", modes=("standard", "deep"))
    assigns(core)
    # what the broker answers a lease the quota refuses, passed on by the worker's `done`
    reason = "account a2 deep quota 20/20 (20/day@00:00 UTC) for module explorer"
    done(core, W2, 1, account="a2", outcome="declined", retry_at=T0 + 3600, message=reason)
    r = ask(core, "why", task_id=1)["result"]
    a2 = next(a for a in r["accounts"] if a["account"] == "a2")
    assert a2["status"] == "blocked"
    assert a2["quota"] == {"used": 20, "limit": 20, "window": "20/day@00:00 UTC", "resets_at": T0 + 3600}
    until = queries.fmt_time(T0 + 3600)
    assert f"a2 deep quota for explorer blocked until {until}: 20/20 used in window 20/day@00:00 UTC; " \
           "0 higher-priority task(s) ahead" in r["line"]
    # a window split between modules: this module's share is gone although the window is not full
    submitted(core, 2, module="documenter", kind="documenter.draft", requires={"mode": "deep"})
    ready(core, W2, "a2", modes=("standard", "deep"))
    assigns(core)
    share = ("account a2 deep quota 15/20 (20/day@00:00 UTC reserve documenter=5,explorer=10) for module "
             "documenter")
    done(core, W2, 2, account="a2", outcome="declined", retry_at=T0 + 7200, message=share)
    r = ask(core, "why", task_id=2)["result"]
    a2 = next(a for a in r["accounts"] if a["account"] == "a2")
    assert a2["quota"]["used"] == 15 and a2["quota"]["window"].endswith("explorer=10")
    assert "15/20 used in window 20/day@00:00 UTC reserve documenter=5,explorer=10 (the module's share is used " \
           "up)" in a2["detail"]
    # a block whose reason names no window (another kind of refusal) keeps the reason as it was
    submitted(core, 3, module="other", requires={"mode": "deep"})
    ready(core, W2, "a2", modes=("standard", "deep"))
    assigns(core)
    done(core, W2, 3, account="a2", outcome="declined", retry_at=T0 + 60, message="something else")
    a2 = next(a for a in ask(core, "why", task_id=3)["result"]["accounts"] if a["account"] == "a2")
    assert a2["quota"] is None and a2["detail"].endswith("(something else)")


def test_why_on_a_huge_queue_estimates_ahead_from_a_bounded_sample(monkeypatch):
    monkeypatch.setattr(queries, "_RNG", random.Random(7))
    core = make_core()
    for i in range(1, 50_001):     # 2 in 5 rank above the task asked about (synthesis 60 > explore 50)
        submitted(core, i, kind="x.synthesis" if i % 5 < 2 else "x.critique")
    submitted(core, 60_000, kind="x.explore")
    calls = []
    priority = core.model.priority
    monkeypatch.setattr(core.model, "priority", lambda *a: calls.append(1) or priority(*a))
    ops = core.table.queue.ops
    r = ask(core, "why", task_id=60_000)["result"]
    assert r["ahead_approx"] is True and abs(r["ahead"] - 20_000) <= 3_000
    assert r["ahead"] % 1000 == 0                               # no false precision
    assert f"≈ {r['ahead']:,} higher-priority tasks ahead" in r["line"]
    # bounded work, whatever the queue length: the sample, not the 50,000 tasks
    assert len(calls) <= queries.AHEAD_SAMPLE + 5 and core.table.queue.ops - ops <= 8 * queries.AHEAD_SAMPLE + 50
    # a small candidate set is still counted exactly
    keep = queries.AHEAD_EXACT - 10
    for i in range(50_000, keep, -1):
        event(core, "task.cancelled", id=i)
    r = ask(core, "why", task_id=60_000)["result"]
    assert r["ahead_approx"] is False and r["ahead"] == sum(1 for i in range(1, keep + 1) if i % 5 < 2)
    assert "higher-priority task(s) ahead" in r["line"] and "≈" not in r["line"]


def test_queue_samples_are_live_ready_tasks_drawn_in_proportion():
    core = make_core()
    for i in range(1, 3001):
        submitted(core, i, module="explorer" if i <= 2000 else "documenter", kind="x.explore")
    for i in range(1, 1501, 2):    # removals leave stale heap entries behind
        event(core, "task.cancelled", id=i)
    submitted(core, 5000, not_before=T0 + 60)                   # delayed: never drawn
    live = {i for i in range(1, 3001) if not (i <= 1500 and i % 2)}
    got = core.table.queue.sample(core.table.queue.bins(), 4000, random.Random(3))
    assert len(got) == 4000 and {t.id for t in got} <= live
    explorer = sum(t.module == "explorer" for t in got) / len(got)
    assert abs(explorer - 1250 / 2250) < 0.04                  # 1,250 of the 2,250 live ones


def test_top_counts_come_from_kept_counters_and_match_a_brute_force_count():
    core = make_core(accounts=(("a1", "sim", ("standard",)), ("a2", "sim", ("standard", "deep"))),
                     module_weights={"idle-module": 3})
    for i in range(1, 41):
        module = ("explorer", "documenter", "researcher")[i % 3]
        conv = {"conversation": f"c{i % 4}"} if i % 5 == 0 else {}
        submitted(core, i, module=module, kind=f"{module}.x", requires=conv,
                  not_before=T0 + (30 if i % 7 == 0 else 0) + (90 if i % 11 == 0 else 0))
    running(core, 5)                                            # a turn of c1 runs: its other turns are held
    advance(core, 31)                                           # some delayed tasks come due
    core.tick(dispatch=False)
    ready(core, W1, "a1")
    ready(core, W2, "a2", modes=("standard", "deep"))
    assigns(core)                                               # two assigned
    event(core, "task.cancelled", id=14)
    event(core, "task.pending", id=41, module="documenter", kind="documenter.x", created=T0,
          not_before=T0 + 500, state="PENDING")

    def brute():
        rows = {}
        for t in core.table.tasks.values():
            row = rows.setdefault(t.module, {"ready": 0, "delayed": 0, "held": 0, "assigned": 0})
            if t.id in core.table.assigned:
                row["assigned"] += 1
            elif t.id in core.table.queue:
                row["ready" if core.table.queue.is_ready(t.id) else "delayed"] += 1
            else:
                row["held"] += 1
        return rows
    expected = brute()
    assert all(expected[m][k] for m in ("explorer", "documenter", "researcher") for k in ("ready", "delayed")) \
        and sum(r["held"] for r in expected.values()) and sum(r["assigned"] for r in expected.values()) == 2
    core.table.tasks = _NoWalk(core.table.tasks)                             # top must not walk the tasks
    top = ask(core, "top")["result"]
    got = {m: {k: r[k] for k in ("ready", "delayed", "held", "assigned")} for m, r in top["modules"].items()}
    assert got == {**expected, "idle-module": {"ready": 0, "delayed": 0, "held": 0, "assigned": 0}}
    assert {m: r["waiting"] for m, r in top["modules"].items() if r["waiting"]} == \
        {m: sum(r.values()) for m, r in expected.items()}


class _NoWalk(dict):
    """A task table that refuses to be iterated (lookups are fine)."""

    def values(self):
        raise AssertionError("walked every task")

    def __iter__(self):
        raise AssertionError("walked every task")


def test_why_about_other_states_and_unknown_tasks():
    core = make_core()
    submitted(core, 1, not_before=T0 + 60)
    assert ask(core, "why", task_id=1)["result"]["where"] == "delayed"
    submitted(core, 2)
    ready(core, W1, "a1")
    assigns(core)
    r = ask(core, "why", task_id=2)["result"]
    assert r["where"] == "assigned" and "backend-a1" in r["line"]
    msg(core, b"cli", "query", cid="q2", what="why", task_id=99)
    assert sent(core) == [] and core.why_lookups == [(b"cli", "q2", 99)]
    core.answer_why_untracked(b"cli", "q2", 99, {"id": 99, "state": "RUNNING",
                                                 "lease": {"account": "a1", "mode": "deep", "worker": "w"}})
    (_, _, body), = sent(core)
    assert body["result"]["state"] == "RUNNING" and "running on a1 (deep)" in body["result"]["line"]
    bad = ask(core, "why", task_id="x")
    assert not bad["ok"] and bad["error"]["name"] == "BAD_ARGUMENT"
    assert ask(core, "nonsense")["error"]["name"] == "UNKNOWN_COMMAND"


def test_backends_and_top_answers():
    core = make_core()
    submitted(core, 1)
    submitted(core, 2, module="documenter", kind="documenter.draft", not_before=T0 + 100)
    ready(core, W1, "a1")
    assigns(core)
    running(core, 1)
    event(core, "account.cooldown", account="a2", mode="deep", until=T0 + 50, reason="429")
    event(core, "task.done", id=1, module="explorer", kind="explorer.explore")
    done(core, W1, 1)
    rows = {r["account"]: r for r in ask(core, "backends")["result"]["accounts"]}
    assert rows["a1"]["state"] == "busy" and rows["a1"]["phase"] == "unready"
    assert rows["a1"]["last_outcome"] == "done" and rows["a1"]["last_task"] == 1
    assert rows["a2"]["state"] == "offline" and rows["a2"]["cooling_until"] == {"deep": T0 + 50}
    top = ask(core, "top")["result"]
    assert top["queue"] == {"ready": 0, "delayed": 1, "held": 0, "assigned": 0, "running": 0}
    assert top["modules"]["documenter"]["delayed"] == 1
    assert top["recent"][0]["id"] == 1 and top["recent"][0]["account"] == "a1"


def test_weights_query_reads_and_sets_at_run_time():
    core = make_core(module_weights={"explorer": 0})
    submitted(core, 1, module="explorer")
    submitted(core, 2, module="documenter", kind="documenter.draft")
    assert ask(core, "weights")["result"] == {"weights": {"explorer": 0.0}, "configured": {"explorer": 0.0},
                                              "durable": False}
    r = ask(core, "weights", set={"documenter": 10})
    assert r["result"]["weights"] == {"explorer": 0.0, "documenter": 10.0}
    assert ask(core, "weights", set={"documenter": "x", "explorer": 3})["error"]["name"] == "BAD_ARGUMENT"
    assert ask(core, "weights", set={"explorer": 1}, reset=True)["error"]["name"] == "BAD_ARGUMENT"
    ready(core, W1, "a1")
    assert assigns(core) == [(W1, 2)]
    assert ask(core, "weights", reset=True)["result"]["weights"] == {"explorer": 0.0}


def test_weights_are_stored_before_they_apply_and_a_failed_store_changes_nothing():
    core = make_core(module_weights={"explorer": 1})
    stored = []
    core.weights_store = stored.append
    r = ask(core, "weights", set={"documenter": 10})["result"]
    assert stored == [{"explorer": 1.0, "documenter": 10.0}] and r["durable"] is True
    assert ask(core, "weights", reset=True)["result"]["weights"] == {"explorer": 1.0} and stored[-1] is None

    def broker_down(_):
        raise BrokerUnavailable("broker did not answer")
    core.weights_store = broker_down
    assert ask(core, "weights", set={"explorer": 9})["error"]["name"] == "UNAVAILABLE"
    assert ask(core, "weights")["result"]["weights"] == {"explorer": 1.0}


def test_ready_again_means_the_assignment_was_not_taken():
    core = make_core()
    submitted(core, 1)
    submitted(core, 2, priority=10)
    ready(core, W1, "a1")
    assert assigns(core) == [(W1, 1)]
    ready(core, W1, "a1")                             # e.g. it restarted its socket before reading assign
    assert assigns(core) == [(W1, 1)]                 # at once, not after assign_timeout
    assert 1 in core.table.assigned and 2 in core.table.queue


def test_a_task_bound_to_a_frozen_account_for_reconciliation_goes_elsewhere_once_the_hold_ends():
    core = make_core(accounts=(("a1", "sim", ("standard",)), ("a2", "sim", ("standard",))))
    core.on_event({"seq": 0, "ts": T0, "type": "task.pending", "id": 7, "module": "adhoc", "kind": "ask",
                   "priority": 60, "requires": {}, "attrs": {}, "created": T0, "not_before": 0.0,
                   "unknown_account": "a2", "unknown_until": T0 + 600, "state": "PENDING"})
    ready(core, W1, "a1")
    assert assigns(core) == []                          # only a2 may reconcile it, and a2 is silent
    assert 599 <= timer(core, "unknown turn") <= 600    # the scheduler sleeps until the hold ends
    advance(core, 601, W1)
    core.tick()
    assert assigns(core) == [(W1, 7)]


def test_an_unknown_turn_bound_without_a_hold_stays_bound():
    core = make_core(accounts=(("a1", "sim", ("standard",)), ("a2", "sim", ("standard",))))
    submitted(core, 8, unknown_account="a2", kind="x.ask")
    ready(core, W1, "a1")
    advance(core, 10 * 86400, W1)
    core.tick()
    assert assigns(core) == [] and not [w for w, _ in core.timers() if w == "unknown turn"]


def test_a_done_for_a_task_the_worker_was_not_given_is_counted_and_changes_nothing():
    core = make_core(accounts=(("a1", "sim", ("standard",)), ("a2", "sim", ("standard",))))
    submitted(core, 3, kind="x.ask")
    ready(core, W1, "a1")
    assert assigns(core) == [(W1, 3)]
    ready(core, W2, "a2")
    done(core, W2, 3, account="a2")                     # W2 never got task 3
    assert core.errors["FOREIGN_DONE"] == 1
    assert core.table.assigned[3].ident == W1                 # W1's assignment stands
    running(core, 3, account="a1")
    done(core, W1, 3, account="a1")
    assert core.errors["FOREIGN_DONE"] == 1             # the holder's own report is not foreign


def test_a_worker_delivering_an_answer_gets_its_next_task_and_its_late_done_is_its_own():
    """``ready {finishing}`` (docs/wire.md § Worker protocol): the next task is assigned while the worker
    still delivers the first; the first's ``done`` then is neither foreign nor a reason to think the
    worker unready, and a ready naming the task it was assigned confirms that assignment instead of
    taking it back."""
    core = make_core()
    submitted(core, 1, kind="x.ask")
    submitted(core, 2, kind="x.ask")
    submitted(core, 3, kind="x.ask")
    ready(core, W1, "a1")
    assert assigns(core) == [(W1, 1)]
    running(core, 1)
    msg(core, W1, "ready", worker="backend-a1", account="a1", backend="sim", modes=["standard"], finishing=1)
    assert assigns(core) == [(W1, 2)]
    done(core, W1, 1)                                   # the first answer delivered, after the assign
    assert core.errors["FOREIGN_DONE"] == 0
    w = core.workers.get(W1)
    assert (w.state, w.task_id, w.finishing) == ("assigned", 2, None)
    # the running event of 2 has not reached us when it says it is finishing 2: it ran it
    msg(core, W1, "ready", worker="backend-a1", account="a1", backend="sim", modes=["standard"], finishing=2)
    assert assigns(core) == [(W1, 3)] and 2 in core.table.assigned and core.table.assigned[2].confirmed
    assert 2 not in core.table.queue


def finishing_task_1() -> SchedulerCore:
    """A core whose worker W1 (account a1) runs task 1 and has said ``ready {finishing: 1}``."""
    core = make_core()
    submitted(core, 1, kind="x.ask")
    ready(core, W1, "a1")
    assert assigns(core) == [(W1, 1)]
    running(core, 1)
    msg(core, W1, "ready", worker="backend-a1", account="a1", backend="sim", modes=["standard"], finishing=1)
    return core


def test_a_completion_announced_with_ready_finishing_is_known_from_the_broker_event_without_a_done():
    """A worker that said ``ready {finishing}`` sends no ``done`` when the completion is delivered
    (docs/wire.md § Worker protocol): the task.done event clears what it was finishing and is the account's
    last outcome, as ``backends`` shows it."""
    core = finishing_task_1()
    event(core, "task.done", id=1, module="explorer", kind="x.ask", state="DONE", prev="RUNNING", epoch=1)
    w = core.workers.get(W1)
    assert (w.state, w.finishing, w.last_task, w.last_outcome) == ("idle", None, 1, "done")
    row = {r["account"]: r for r in ask(core, "backends")["result"]["accounts"]}["a1"]
    assert (row["last_task"], row["last_outcome"]) == (1, "done")
    assert core.errors == {} and not core.table.running and not core.table.assigned


def test_a_heartbeat_naming_the_task_a_worker_is_finishing_does_not_make_it_busy_again():
    """Between ``ready {finishing}`` and its ``done``, a heartbeat may still name the task (a worker of an
    older version, or one sent just before): the worker stays idle, and its done does not leave it
    unready, which would keep the account idle with work waiting (the soak caught it)."""
    core = finishing_task_1()
    assert assigns(core) == []                          # nothing waits
    msg(core, W1, "heartbeat", worker="backend-a1", task_id=1)
    done(core, W1, 1)
    assert core.workers.get(W1).state == "idle"
    submitted(core, 2, kind="x.ask")
    assert assigns(core) == [(W1, 2)]


def test_a_silent_workers_leases_are_revoked_and_so_is_one_it_is_granted_later():
    core = make_core()
    submitted(core, 1)
    submitted(core, 2)
    ready(core, W1, "a1")
    assert assigns(core) == [(W1, 1)]
    running(core, 1, account="a1")                    # leased at epoch 1 by backend-a1
    ready(core, W2, "a2")
    assert assigns(core) == [(W2, 2)]                 # its lease request is on its way
    for _ in range(8):                                # both freeze; the loop keeps ticking
        core.clock.advance(0.5)
        core.tick()
    assert len(core.workers) == 0 and 2 in core.table.queue
    assert list(core.revocations.pending) == [1]
    worker, epoch, why = core.revocations.pending[1]
    assert (worker, epoch) == ("backend-a1", 1) and why.startswith("silent for")
    core.revocations.pending.clear()
    # backend-a2's lease was granted after all: the broker's event names a worker we dropped
    event(core, "task.running", id=2, module="explorer", kind="explorer.explore", worker="backend-a2",
          account="a2", mode="standard", epoch=3)
    assert core.revocations.pending[2][:2] == ("backend-a2", 3)
    # a worker that comes back is trusted again
    core.revocations.pending.clear()
    ready(core, W3, "a2")
    submitted(core, 3)
    assert assigns(core) == [(W3, 3)]
    event(core, "task.running", id=3, module="explorer", kind="explorer.explore", worker="backend-a2",
          account="a2", mode="standard", epoch=1)
    assert core.revocations.pending == {}


def test_workers_found_silent_after_the_loop_itself_stalled_are_forgotten_without_revoking():
    core = make_core()
    submitted(core, 1)
    ready(core, W1, "a1")
    assert assigns(core) == [(W1, 1)]
    running(core, 1, account="a1")
    core.clock.advance(5.0)                           # e.g. a long rebuild: nobody was heard, us included
    core.tick()
    assert len(core.workers) == 0 and core.revocations.pending == {}


def test_a_turn_to_reconcile_goes_to_its_account_whatever_its_quota_block():
    core = make_core()
    ready(core, W1, "a1")
    submitted(core, 1)
    assert assigns(core) == [(W1, 1)]
    done(core, W1, 1, outcome="declined", message="a1 standard quota 1/1", retry_at=T0 + 3600)
    ready(core, W1, "a1")
    assert assigns(core) == []                         # a1 is blocked for explorer's standard work ...
    submitted(core, 2, unknown_account="a1")
    assert assigns(core) == [(W1, 2)]                  # ... but reconciling sends nothing: no unit needed


def test_why_does_not_call_a_turn_to_reconcile_blocked_by_its_accounts_quota():
    core = make_core()
    ready(core, W1, "a1")
    submitted(core, 1)
    assert assigns(core) == [(W1, 1)]
    done(core, W1, 1, outcome="declined", message="a1 standard quota 1/1", retry_at=T0 + 3600)
    submitted(core, 2, unknown_account="a1")
    status = lambda tid: {r["account"]: r["status"] for r in ask(core, "why", task_id=tid)["result"]["accounts"]}  # noqa
    assert status(1)["a1"] == "blocked"
    assert status(2)["a1"] != "blocked"
