"""Placement by expected finish time (services/scheduler/placement.py), driving SchedulerCore without sockets:
the tail (leave the last tasks to a much faster account), conversation binding, and no stall."""
import dataclasses

import pytest

from services.scheduler import conversations as CV
from services.scheduler import placement as P
from services.scheduler.conversations import Conversations
from services.scheduler.core import SchedulerCore
from services.scheduler.placement import Latencies, Option, config_hints, could_leave, leave_to_others
from services.scheduler.priority import QTask
from shared.config import AccountConfig
from tests.unit.test_scheduler_logic import T0, assigns, done, event, make_core, msg, ready, submitted, timer

FAST, MID, SLOW = b"fast", b"mid", b"slow"
MEANS = {"fast": 20.0, "mid": 60.0, "mid2": 60.0, "slow": 200.0}


def core_with(*names, learn=True):
    core = make_core(accounts=tuple((n, "sim", ("standard",)) for n in names))
    if learn:
        for i, name in enumerate(names):
            served(core, 9000 + 10 * i, name, MEANS[name])
    return core


def served(core, tid, account, seconds, mode="standard"):
    """The broker's events of a task that ran ``seconds`` on ``account`` (teaches its service time)."""
    now = core.clock.world()
    core.on_event({"seq": 0, "ts": now - seconds, "type": "task.running", "id": tid, "module": "m", "kind": "k",
                   "worker": f"backend-{account}", "account": account, "mode": mode, "epoch": 1})
    core.on_event({"seq": 0, "ts": now, "type": "task.done", "id": tid, "module": "m", "kind": "k", "epoch": 1})


def start(core, ident, account, tid, **kw):
    """``account``'s worker is ready, is assigned task ``tid`` and leases it."""
    ready(core, ident, account)
    assert assigns(core) == [(ident, tid)]
    event(core, "task.running", id=tid, module="explorer", kind="explorer.explore", worker=f"backend-{account}",
          account=account, mode="standard", epoch=1, **kw)


def finish(core, ident, account, tid):
    """``account`` completes ``tid`` (the broker's event, then the worker's done) and says ready again."""
    event(core, "task.done", id=tid, module="explorer", kind="explorer.explore", epoch=1)
    done(core, ident, tid, account=account)
    ready(core, ident, account)


def alive(core, seconds, *idents, step=1.0):
    """Let ``seconds`` pass in steps, the workers named heartbeating, and tick."""
    got = []
    left = seconds
    while left > 1e-9:
        dt = min(step, left)
        core.clock.advance(dt)
        left -= dt
        for ident in idents:
            msg(core, ident, "heartbeat", worker="w", task_id=None)
        got += assigns(core)
    return got


# --- the estimates ----------------------------------------------------------------------------------------

def test_service_times_are_learned_from_running_and_done_events():
    core = core_with("fast", "slow", learn=False)
    served(core, 1, "fast", 18.0)
    served(core, 2, "fast", 22.0)
    served(core, 3, "slow", 1000.0, mode="deep")
    lat = core.placement.latencies
    assert lat.mean("fast", "standard") == pytest.approx(20.0)
    assert lat.mean("slow", "standard") is None          # nothing to scale from yet
    served(core, 4, "mid", 300.0, mode="deep")
    served(core, 5, "mid", 60.0)
    assert lat.mean("slow", "standard") == pytest.approx(200.0)   # 1000 x (60 / 300): scaled, until observed
    served(core, 6, "slow", 180.0)
    assert lat.mean("slow", "standard") == pytest.approx(180.0)


def test_configured_sim_latencies_are_the_first_estimates():
    accounts = (AccountConfig("fast", "sim", ("standard",), {"latency": {"standard": 20}}),
                AccountConfig("both", "sim", ("standard", "deep"),
                              {"latency": {"dist": "uniform", "low": 50.0, "high": 70.0}}),
                AccountConfig("modes", "sim", ("standard", "deep"),
                              {"latency": {"standard": {"dist": "fixed", "value": 5}, "deep": "zero"}}),
                AccountConfig("claude", "claude", ("standard",), {"latency": 3}),     # not a sim setting
                AccountConfig("odd", "sim", ("standard",), {"latency": {"dist": "uniform", "low": "x"}}))
    assert sorted(config_hints(accounts)) == [("both", "deep", 60.0), ("both", "standard", 60.0),
                                              ("fast", "standard", 20.0), ("modes", "standard", 5.0)]
    lat = Latencies()
    lat.hint("fast", "standard", 20.0)
    assert lat.mean("fast", "standard") == 20.0 and not lat.counts
    lat.add("fast", "standard", 30.0)                   # the first observation replaces the guess
    lat.hint("fast", "standard", 20.0)                  # and a later hint changes nothing
    assert lat.mean("fast", "standard") == 30.0


def test_a_hinted_slow_account_leaves_work_before_anything_was_observed():
    core = make_core(accounts=(("fast", "sim", ("standard",)), ("slow", "sim", ("standard",))))
    accounts = (AccountConfig("fast", "sim", ("standard",), {"latency": 20.0}),
                AccountConfig("slow", "sim", ("standard",), {"latency": 200.0}))
    core = SchedulerCore(dataclasses.replace(core.config, accounts=accounts), core.clock)
    assert core.stats()["service_times"]["slow/standard"] == {"mean_s": 200.0, "samples": 0}
    submitted(core, 1)
    start(core, FAST, "fast", 1)
    submitted(core, 2)
    ready(core, SLOW, "slow")
    assert assigns(core) == []


def test_learn_history_uses_only_complete_runs():
    core = core_with("fast", learn=False)
    evs = [{"type": "task.running", "id": 1, "account": "fast", "mode": "standard", "ts": T0},
           {"type": "task.running", "id": 2, "account": "fast", "mode": "standard", "ts": T0},
           {"type": "task.pending", "id": 2, "ts": T0 + 5},            # failed: not a service time
           {"type": "task.done", "id": 2, "ts": T0 + 7},
           {"type": "task.done", "id": 1, "ts": T0 + 30}]
    assert core.placement.learn_history(evs) == 1
    assert core.placement.latencies.mean("fast", "standard") == pytest.approx(30.0)
    assert len(core.table.tasks) == 0 and len(core.table.running) == 0


def test_leave_to_others_counts_what_the_faster_accounts_absorb():
    now = T0
    fast = Option("fast", start=now + 5, cost=20.0, mean=20.0)      # free in 5 s
    # slow would finish at now+200; fast can finish floor((190 - 5) / 20) = 9 tasks by now + 0.95 x 200
    assert P.MARGIN == 0.05
    assert leave_to_others(now, 200.0, now, [fast], jobs=9, grace=1.0) == (now + 5 + 10 + 1, "fast")
    assert leave_to_others(now, 200.0, now, [fast], jobs=10, grace=1.0) is None
    same = Option("mid2", start=now, cost=60.0, mean=60.0)           # as fast as us: never counted
    assert leave_to_others(now, 60.0, now, [same], jobs=1, grace=1.0) is None
    assert leave_to_others(now, 60.0, now, [], jobs=1, grace=1.0) is None


def test_latencies_become_an_exponential_average_and_ignore_nonsense():
    lat = Latencies()
    for _ in range(P.LATENCY_WINDOW):
        lat.add("a", "standard", 10.0)
    lat.add("a", "standard", 10.0 + P.LATENCY_WINDOW)   # one sample moves the mean by 1/window of its offset
    assert lat.mean("a", "standard") == pytest.approx(11.0)
    for bad in (0.0, -3.0, float("nan"), float("inf")):
        lat.add("a", "standard", bad)
    assert lat.counts[("a", "standard")] == P.LATENCY_WINDOW + 1
    assert lat.fastest("standard") == pytest.approx(11.0) and lat.fastest("deep") is None


def test_could_leave_is_a_cheap_necessary_condition():
    # a 200 s worker, others at best 20 s: 3 others absorb at most 3 x floor(0.95 x 200 / 20) = 27 jobs
    assert could_leave(200.0, 0.0, 20.0, 3, 27)
    assert not could_leave(200.0, 0.0, 20.0, 3, 28)
    assert not could_leave(20.0, 0.0, 20.0, 3, 1)         # the fastest never leaves
    assert not could_leave(200.0, 0.0, None, 3, 1)        # no estimate for anyone
    assert not could_leave(200.0, 0.0, 20.0, 0, 1)        # nobody else
    assert leave_to_others(T0, 200.0, T0, [Option("fast", T0, 20.0, 20.0)], jobs=10, grace=0.0) is None
    assert leave_to_others(T0, 200.0, T0, [Option("fast", T0, 20.0, 20.0)], jobs=9, grace=0.0) is not None


def _turn(tid: int, conv: str) -> QTask:
    return QTask(id=tid, module="explorer", kind="explorer.explore", requires={"conversation": conv})


def test_conversation_turns_hint_mean_and_quiet_end():
    convs = Conversations()
    assert convs.expected_turns() == CV.DEFAULT_TURNS
    assert convs.expected_turns(3) == 3.0 and convs.expected_turns("x") == CV.DEFAULT_TURNS
    convs.bind("c", "a", "standard")
    for _ in range(2):
        convs.turn_ended("c", True, T0)
    assert convs.remaining("c") == CV.DEFAULT_TURNS - 2
    assert convs.sweep(T0 + CV.CONV_QUIET - 1) == []
    convs.track(_turn(9, "c"))
    assert convs.sweep(T0 + CV.CONV_QUIET) == []      # a turn is waiting: not over
    convs.untrack("c", 9)
    convs.turn_ended("c", False, T0 + 10)
    assert convs.sweep(T0 + 10 + CV.CONV_QUIET) == ["c"]
    assert convs.expected_turns() == pytest.approx((CV.DEFAULT_TURNS * CV.TURNS_PRIOR + 2) / (CV.TURNS_PRIOR + 1))
    assert "c" not in convs.open and not convs.by_account


def test_open_conversations_longer_than_the_estimate_raise_it_before_any_ends():
    convs = Conversations()
    for name in ("a", "b", "c"):
        convs.bind(name, "acct", "standard")
    for _ in range(int(CV.DEFAULT_TURNS)):
        for name in ("a", "b"):
            convs.turn_ended(name, True, T0)
    assert convs.expected_turns() == CV.DEFAULT_TURNS     # at the prior: no evidence yet
    for _ in range(4):
        for name in ("a", "b"):
            convs.turn_ended(name, True, T0)
    longer = CV.DEFAULT_TURNS + 4                          # a and b ran that many turns and go on
    prior = CV.DEFAULT_TURNS * CV.TURNS_PRIOR
    assert convs.expected_turns() == pytest.approx((prior + 2 * longer) / (CV.TURNS_PRIOR + 2))
    assert convs.remaining("a") == 0.0                     # past the estimate, nothing waits ...
    convs.track(_turn(1, "a"))
    assert convs.remaining("a") == 1.0                     # ... but a turn waits
    convs.start_turn("c", 2)
    assert convs.remaining("c") == pytest.approx(convs.expected_turns() - 1)
    assert convs.expected_turns(3) == 3.0                 # a module's hint wins


# --- the tail ---------------------------------------------------------------------------------------------

def test_a_shallow_queue_leaves_the_last_task_for_the_much_faster_account():
    core = core_with("fast", "slow")
    submitted(core, 1)
    start(core, FAST, "fast", 1)                      # fast busy until ~T0+20
    submitted(core, 2)
    ready(core, SLOW, "slow")
    assert assigns(core) == []                        # slow (200 s) leaves it: fast ends it by T0+40
    assert core.stats()["left_total"] == 1
    assert timer(core, "placement") == pytest.approx(20 + 10 + 1)   # its deadline: fast's start + half a task
    msg(core, b"cli", "query", cid="q", what="why", task_id=2)
    (_, _, body), = [x for x in core.take_output() if x[1] == "answer"]
    assert body["result"]["line"].startswith("waiting: left for fast, expected to finish it sooner")
    assert alive(core, 19, FAST, SLOW) == []
    core.clock.advance(1)
    finish(core, FAST, "fast", 1)
    assert assigns(core) == [(FAST, 2)]


def test_a_worker_whose_task_the_broker_reported_done_counts_as_free():
    core = core_with("fast", "slow")
    submitted(core, 1)
    start(core, FAST, "fast", 1)
    submitted(core, 2)
    assert alive(core, 20, FAST) == []
    event(core, "task.done", id=1, module="explorer", kind="explorer.explore", epoch=1)   # before fast's `done`
    ready(core, SLOW, "slow")
    assert assigns(core) == []
    done(core, FAST, 1, account="fast")
    ready(core, FAST, "fast")
    assert assigns(core) == [(FAST, 2)]


def test_estimates_are_redone_as_time_passes():
    # fast reported done but does not say ready: it counts as free only for UNREADY_GRACE real seconds
    core = core_with("fast", "slow")
    submitted(core, 1)
    start(core, FAST, "fast", 1)
    core.clock.advance(20)
    event(core, "task.done", id=1, module="explorer", kind="explorer.explore", epoch=1)
    done(core, FAST, 1, account="fast")
    submitted(core, 2)
    ready(core, SLOW, "slow")
    assert assigns(core) == []                        # fast is about to say ready
    assert timer(core, "placement") > P.UNREADY_GRACE + 1
    assert alive(core, P.UNREADY_GRACE - 0.5, FAST, SLOW, step=0.5) == []
    assert alive(core, 1.0, FAST, SLOW, step=0.5) == [(SLOW, 2)]   # it did not: no alternative any more


def test_a_deep_queue_never_leaves_work():
    core = core_with("fast", "slow")
    submitted(core, 1)
    start(core, FAST, "fast", 1)
    for tid in range(2, 12):                          # 10 ready: fast, free at +20, finishes 8 by 0.95 x 200 s
        submitted(core, tid)
    ready(core, SLOW, "slow")
    assert assigns(core) == [(SLOW, 2)]
    assert core.stats()["left_total"] == 0


def test_the_queue_drains_to_the_fast_account_at_the_end():
    core = core_with("fast", "mid", "slow")
    for tid in range(1, 4):
        submitted(core, tid)
    ready(core, FAST, "fast")
    ready(core, MID, "mid")
    ready(core, SLOW, "slow")
    got = dict((i, t) for t, i in [(t, i) for i, t in assigns(core)])
    # three tasks, three idle workers: fast can do all of them before slow would finish one
    assert SLOW not in got.values() and len(got) == 2
    assert core.stats()["left_total"] == 1


def test_a_left_task_goes_to_the_slow_account_after_its_deadline():
    core = core_with("fast", "slow")
    submitted(core, 1)
    start(core, FAST, "fast", 1)
    submitted(core, 2)
    ready(core, SLOW, "slow")
    assert assigns(core) == []
    deadline = timer(core, "placement")
    # fast is alive (it heartbeats) but never finishes: the deadline, not the estimate, decides
    assert alive(core, deadline - 1, FAST, SLOW) == []
    assert alive(core, 1, FAST, SLOW) == [(SLOW, 2)]


def test_a_left_task_goes_to_the_slow_account_when_the_fast_one_goes_offline():
    core = core_with("fast", "slow")
    submitted(core, 1)
    start(core, FAST, "fast", 1)
    submitted(core, 2)
    ready(core, SLOW, "slow")
    assert assigns(core) == []
    got = alive(core, 5, SLOW, step=0.5)              # fast falls silent: forgotten after 3 heartbeats
    assert got == [(SLOW, 2)] and core.workers.get(FAST) is None


def test_unknown_service_times_never_leave_work():
    core = core_with("fast", "slow", learn=False)
    submitted(core, 1)
    start(core, FAST, "fast", 1)
    submitted(core, 2)
    ready(core, SLOW, "slow")
    assert assigns(core) == [(SLOW, 2)]


def test_work_only_one_account_may_take_is_never_left():
    core = core_with("fast", "slow")
    submitted(core, 1)
    start(core, FAST, "fast", 1)
    submitted(core, 2, requires={"backends": ["slow"]})
    ready(core, SLOW, "slow")
    assert assigns(core) == [(SLOW, 2)]


# --- conversations ----------------------------------------------------------------------------------------

def conv_turn(core, tid, conv, **kw):
    submitted(core, tid, requires={"conversation": conv}, **kw)


@pytest.mark.parametrize("turns, slow_takes", [(20, True), (2, False)])
def test_a_fast_account_with_turns_of_its_own_left_is_no_alternative_for_a_one_shot(turns, slow_takes):
    # fast runs the first turn of a conversation expected to last `turns` turns, all of which come before a
    # lower-priority one-shot: with 19 left (380 s) slow takes the one-shot now; with 1 left fast is
    # expected to start it at T0+40 and slow leaves it (counting only the turns ready at the moment made
    # fast look free at T0+20 either way)
    core = core_with("fast", "slow")
    conv_turn(core, 1, "c1", attrs={"expected_turns": turns})
    start(core, FAST, "fast", 1, conversation="c1")
    submitted(core, 2, kind="researcher.extract_findings", priority=40)
    ready(core, SLOW, "slow")
    assert assigns(core) == ([(SLOW, 2)] if slow_takes else [])


def test_conversations_are_spread_by_expected_finish_time():
    core = core_with("fast", "mid", "slow")
    for tid, conv in ((1, "c1"), (2, "c2"), (3, "c3")):
        conv_turn(core, tid, conv)
    ready(core, SLOW, "slow")
    ready(core, MID, "mid")
    ready(core, FAST, "fast")
    got = assigns(core)
    # slow (6 turns = 1200 s) opens nothing: fast and mid finish the other conversations long before
    assert sorted(i for i, _ in got) == [FAST, MID]
    convs = core.convs
    assert sorted(convs.open) == sorted(f"c{t}" for _, t in got)
    assert {convs.account_of(f"c{t}") for _, t in got} == {"fast", "mid"}
    left = ({1, 2, 3} - {t for _, t in got}).pop()
    assert assigns(core) == []
    assert core.placement.deadlines[left][1] == "fast"   # expected to be opened by fast after its own
    # fast's first turn ends; the module submits the next turn of its conversation: fast runs its own turn
    fast_tid = next(t for i, t in got if i == FAST)
    event(core, "task.running", id=fast_tid, module="explorer", kind="explorer.explore", worker="backend-fast",
          account="fast", mode="standard", epoch=1)
    core.clock.advance(20)
    event(core, "task.done", id=fast_tid, module="explorer", kind="explorer.explore", epoch=1)
    done(core, FAST, fast_tid, account="fast")
    conv_turn(core, 10, f"c{fast_tid}")
    ready(core, FAST, "fast")
    assert assigns(core) == [(FAST, 10)]


@pytest.mark.parametrize("boost, first", [(int(P.OWN_TURNS_FIRST) - 1, 10), (int(P.OWN_TURNS_FIRST) + 1, 11)])
def test_own_turns_come_before_a_new_conversation_unless_it_is_more_urgent(boost, first):
    core = core_with("fast", "slow")
    conv_turn(core, 1, "c1")
    start(core, FAST, "fast", 1)
    core.clock.advance(20)
    event(core, "task.done", id=1, module="explorer", kind="explorer.explore", epoch=1)
    done(core, FAST, 1, account="fast")
    conv_turn(core, 10, "c1")                          # c1's next turn, bound to fast
    conv_turn(core, 11, "c2", priority=50 + boost)     # a new conversation, more urgent by `boost`
    ready(core, FAST, "fast")
    assert assigns(core) == [(FAST, first)]


def test_an_account_with_bound_work_leaves_a_new_conversation_to_an_equal_one():
    core = core_with("mid", "mid2")
    MID2 = b"mid2"
    conv_turn(core, 1, "c1")
    start(core, MID, "mid", 1)
    submitted(core, 2)
    start(core, MID2, "mid2", 2)                      # a one-shot: mid2 is free again at T0+60
    assert alive(core, 30, MID, MID2) == []
    finish(core, MID, "mid", 1)                       # mid holds c1: 5 more turns to come
    conv_turn(core, 3, "c3")
    # mid would finish c3 after its own 5 turns; mid2 in 30 s + 6 turns: c3 is left for mid2 (the old rule
    # bound it to whoever was free first)
    assert alive(core, 29, MID, MID2) == []
    core.clock.advance(1)
    finish(core, MID2, "mid2", 2)
    assert assigns(core) == [(MID2, 3)]
    assert core.convs.account_of("c3") == "mid2"


def test_many_waiting_conversations_are_opened_by_every_account():
    core = core_with("fast", "mid", "slow")
    for tid in range(1, 31):
        conv_turn(core, tid, f"c{tid}")
    ready(core, SLOW, "slow")
    ready(core, MID, "mid")
    ready(core, FAST, "fast")
    assert sorted(i for i, _ in assigns(core)) == [FAST, MID, SLOW]


def test_a_declined_opening_turn_forgets_its_tentative_binding():
    core = core_with("fast", "slow")
    conv_turn(core, 1, "c1")
    ready(core, FAST, "fast")
    assert assigns(core) == [(FAST, 1)]
    assert core.convs.account_of("c1") == "fast"
    done(core, FAST, 1, account="fast", outcome="declined", message="busy", retry_at=T0 + 60)
    assert core.convs.account_of("c1") is None


# --- the rebuild's reads (paged; service times relearned from the outbox) --------------------------------

class FakeBroker:
    def __init__(self, n_events, tasks):
        self.events_log = [{"seq": i, "type": "x", "id": i} for i in range(1, n_events + 1)]
        self.tasks = tasks

    def events(self, after, limit):
        evs = [e for e in self.events_log if e["seq"] > after][:limit]
        return {"events": evs, "last_seq": len(self.events_log), "truncated": False}

    def list(self, state, after, limit):
        rest = [t for t in self.tasks if t["id"] > (after or 0)]
        page = rest[:limit]
        return {"tasks": page, "next": page[-1]["id"] if len(rest) > limit else None}


def test_the_rebuild_reads_pages_and_the_recent_outbox():
    from services.scheduler.service import PAGE, SchedulerService
    broker = FakeBroker(P.WARM_EVENTS + 2500, [{"id": i} for i in range(1, 2 * PAGE + 2)])
    pages = list(SchedulerService._pages(broker, "PENDING"))
    assert [len(p) for p in pages] == [PAGE, PAGE, 1]
    seq0 = P.WARM_EVENTS + 2000            # events after the snapshot's seq are not history
    seqs = [e["seq"] for e in SchedulerService._history(broker, seq0)]
    assert seqs == list(range(seq0 - P.WARM_EVENTS + 1, seq0 + 1))
    assert list(SchedulerService._history(FakeBroker(0, []), 0)) == []


# --- conversations whose account the scheduler does not know (after a rebuild) -----------------------------

def test_a_declined_turn_is_placed_greedily_so_that_the_owner_gets_it():
    # a rebuild reads PENDING turns from `list` records, which do not name their conversation's account: the
    # turn looks like an opening one, and placement would give it to fast every time; fast's lease is
    # declined ("conversation c2 lives on account mid"), so the turn must then go round the idle workers
    core = core_with("fast", "mid", "slow")
    core.on_task_record({"id": 83, "state": "PENDING", "module": "explorer", "kind": "explorer.explore",
                         "requires": {"conversation": "c2"}, "created": T0})
    ready(core, SLOW, "slow")
    ready(core, MID, "mid")
    ready(core, FAST, "fast")
    got = []
    for _ in range(3):
        out = assigns(core)
        for _ in range(140):                          # the decline's hold: 1 s, then 2 s, ...
            if out:
                break
            out = alive(core, 0.5, FAST, MID, SLOW)
        assert len(out) == 1
        ident, tid = out[0]
        got.append(ident)
        if ident == MID:
            break
        account = ident.decode()
        done(core, ident, 83, account=account, outcome="declined", message="conversation c2 lives on account mid")
        ready(core, ident, account)
        core.on_task_record({"id": 83, "state": "PENDING", "module": "explorer", "kind": "explorer.explore",
                             "requires": {"conversation": "c2"}, "created": T0})   # the refresh
    assert got[0] == FAST and got[-1] == MID and len(got) == len(set(got))


def test_a_refreshed_record_keeps_the_conversation_account_its_events_named():
    core = core_with("fast", "mid")
    core.on_event({"seq": 0, "type": "task.pending", "id": 5, "module": "explorer", "kind": "x", "priority": 50,
                   "requires": {"conversation": "c"}, "attrs": {}, "created": T0, "not_before": 0.0,
                   "unknown_account": None, "conversation_account": "mid"})
    core.on_task_record({"id": 5, "state": "PENDING", "module": "explorer", "kind": "x",
                         "requires": {"conversation": "c"}, "created": T0})
    ready(core, FAST, "fast")
    assert assigns(core) == []
    ready(core, MID, "mid")
    assert assigns(core) == [(MID, 5)]


# --- the next turn ---------------------------------------------------------------------------------------

def finishing(core, ident, account, tid):
    """``account``'s worker has the answer of ``tid`` and says ready while it delivers it."""
    msg(core, ident, "ready", worker=f"backend-{account}", account=account, backend="sim", modes=["standard"],
        finishing=tid)


@pytest.mark.parametrize("announced", [False, True])
def test_an_account_waits_a_moment_for_its_conversations_next_turn(announced):
    # fast ends turn 1 of c1 (6 expected) with a one-shot waiting: it takes the next turn when the module
    # submits it, not the one-shot (which would come between every two turns of its chain)
    core = core_with("fast")
    conv_turn(core, 1, "c1")
    start(core, FAST, "fast", 1, conversation="c1")
    submitted(core, 2, kind="researcher.extract_findings")
    core.clock.advance(20)
    if announced:
        finishing(core, FAST, "fast", 1)
        assert assigns(core) == []
        event(core, "task.done", id=1, module="explorer", kind="explorer.explore", epoch=1)
    else:
        finish(core, FAST, "fast", 1)
    assert assigns(core) == []
    assert 0 < timer(core, "placement") <= P.NEXT_TURN_REAL
    core.clock.advance(0.01)
    conv_turn(core, 3, "c1")
    assert assigns(core) == [(FAST, 3)]


def test_the_wait_for_a_next_turn_is_bounded():
    core = core_with("fast")
    conv_turn(core, 1, "c1")
    start(core, FAST, "fast", 1, conversation="c1")
    submitted(core, 2, kind="researcher.extract_findings")
    core.clock.advance(20)
    finish(core, FAST, "fast", 1)
    assert assigns(core) == []
    core.clock.advance(P.NEXT_TURN_REAL)   # the module submitted nothing: the conversation may be over
    assert assigns(core) == [(FAST, 2)]


def test_no_wait_after_a_conversations_last_expected_turn():
    core = core_with("fast")
    conv_turn(core, 1, "c1", attrs={"expected_turns": 1})
    start(core, FAST, "fast", 1, conversation="c1")
    submitted(core, 2, kind="researcher.extract_findings")
    core.clock.advance(20)
    finish(core, FAST, "fast", 1)
    assert assigns(core) == [(FAST, 2)]
