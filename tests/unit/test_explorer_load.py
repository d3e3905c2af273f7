"""Work for every account with room (services/modules/explorer/load.py): thread slots that grow with the
accounts that have room and with accounts the scheduler reports idle, a new thread's first turn steered to
an account under its share, several open threads per seed, and a critic that leaves a blocked or
backlogged account (the preference for "another backend than the explorer's" bending when it must).

The pure choices are checked on hand-made views; the service's use of them with the rig of
``test_explorer_flow`` (the real broker core in-process, a fake clock).
"""
from __future__ import annotations

from services.modules import capacity as CAP
from services.modules.explorer import load as L
from services.modules.explorer import model as M
from services.modules.explorer import panels as PN
from services.modules.explorer import threads as T

NAMES = ["a", "b", "c"]
MODES = {n: ("standard", "deep") for n in NAMES}


def cap(blocked=(), known=True) -> CAP.Capacity:
    return CAP.Capacity("explorer", 0.0, MODES, {(n, "standard"): (100.0, "used up") for n in blocked}, known)


def settings(**kw) -> M.ExplorerSettings:
    return M.ExplorerSettings(**kw)


def open_thread(tid, explore=None, on=(), status="active", critic=None, conv=0):
    return {"id": tid, "seed_id": tid.split(".")[0], "status": status, "explore_account": explore,
            "explore_on": list(on), "critic_account": critic, "critic_conv": conv}


# --- thread slots -------------------------------------------------------------------------------------

def test_thread_slots_grow_with_the_accounts_that_have_room():
    s = settings(max_active_threads=3, threads_per_account=2, max_threads=12)
    assert L.active_cap(L.Load(cap()), s, NAMES) == 6               # 3 accounts with room: 2 each
    assert L.active_cap(L.Load(cap(blocked=["b", "c"])), s, NAMES) == 3   # one: max_active_threads is the floor
    assert L.active_cap(L.Load(cap(), idle=("a",)), s, NAMES) == 7  # one more for an account idle while work waits
    assert L.active_cap(L.Load(cap(blocked=["a"]), idle=("a",)), s, NAMES) == 4   # (not when it has no room)
    assert L.active_cap(L.Load(cap()), settings(threads_per_account=5, max_threads=8), NAMES) == 8   # overall cap
    assert L.active_cap(L.Load(cap(known=False)), s, NAMES) == 3    # the broker did not say: as before
    assert L.active_cap(L.Load(cap()), settings(threads_per_account=0), NAMES) == 3                # off
    assert L.active_cap(L.Load(cap()), settings(threads_per_account=2, explore_accounts=("a",)), NAMES) == 3


def test_a_new_thread_explores_on_an_account_under_its_share_idle_ones_first():
    s = settings(threads_per_account=2)
    threads = [open_thread("x.t1", "a"), open_thread("x.t2", "a"), open_thread("y.t1", "b"),
               open_thread("z.t1", on=["b"]), open_thread("w.t1", "c", status="extracted")]
    assert L.explore_counts(threads) == {"a": 2, "b": 2}
    assert L.explore_targets(L.Load(cap()), threads, s, NAMES) == ["c"]          # a and b have their share
    assert L.explore_targets(L.Load(cap(blocked=["c"])), threads, s, NAMES) == []   # all at share: anywhere
    assert L.explore_targets(L.Load(cap(), idle=("a",)), threads, s, NAMES) == ["a"]  # idle: up to twice
    assert L.explore_targets(L.Load(cap()), [], s, NAMES) == ["a"]    # one account: new threads spread
    assert L.explore_targets(L.Load(cap()), threads[:1], s, NAMES) == ["b"]      # the least loaded
    assert L.explore_targets(L.Load(cap(known=False)), [], s, NAMES) == []


def test_the_scheduler_idle_rows_count_only_accounts_whose_waiting_work_is_pinned_elsewhere():
    rows = [{"account": "a", "groups": [{"reason": "bound", "n": 3, "account": "b"}]},
            {"account": "b", "groups": [{"reason": "runnable", "n": 1}, {"reason": "bound", "n": 2}]},
            {"account": "zz", "groups": []}, "garbage"]
    assert L.starved(rows, NAMES) == ("a",)
    assert L.starved(None, NAMES) == ()


def test_a_new_thread_first_turn_carries_its_target_and_later_turns_do_not():
    thread = dict(T.new_thread({"id": "q", "type": "question", "text": "why?"}, [], 0.0), explore_on=["c"])
    s = settings()
    first = T.turn_task(thread, 1, [], [], NAMES, s)
    assert first["requires"]["backends"] == ["c"] and first["requires"]["conversation"] == "explorer:q.t1"
    third = T.turn_task(dict(thread, explore_account="c"), 3, [], [], NAMES, s)
    assert "backends" not in third["requires"]   # the conversation decides (and a hand-off may move it)


def test_several_open_threads_per_seed_once_every_seed_has_one():
    seeds = [{"id": "hi", "type": "question", "text": "x", "priority": 9},
             {"id": "lo", "type": "question", "text": "y", "priority": 2}]
    threads = [open_thread("hi.t1"), open_thread("lo.t1")]
    assert T.select_seed(seeds, threads, per_seed=2) is None            # no usable answer yet: one each
    threads = [dict(t, exchanges=1) for t in threads]
    assert T.select_seed(seeds, threads) is None                        # one per seed: as before
    assert T.select_seed(seeds, threads, per_seed=2)["id"] == "hi"      # the highest priority again
    assert T.select_seed(seeds, threads + [open_thread("hi.t2")], per_seed=2)["id"] == "lo"   # the fewest open
    assert T.select_seed(seeds, threads + [open_thread("hi.t2"), open_thread("lo.t2")], per_seed=2) is None


# --- the critic -----------------------------------------------------------------------------------------

def test_the_critic_prefers_another_account_but_takes_any_fit_one_when_it_must():
    s = settings(busy_backlog=2)
    t = open_thread("q.t1", explore="a")
    # the preference: not the explorer's; both others fit
    assert L.route_critic(t, NAMES, s, L.Load(cap()))["critic_on"] == ["b", "c"]
    # b backlogged (more than busy_backlog tasks only it can run): c alone
    assert L.route_critic(t, NAMES, s, L.Load(cap(), pinned={"b": 3}))["critic_on"] == ["c"]
    # the others blocked or backlogged: the explorer's own account critiques rather than waiting
    assert L.route_critic(t, NAMES, s, L.Load(cap(blocked=["c"]), pinned={"b": 5}))["critic_on"] == ["a"]
    # nobody fit: the preference stands (the task waits where it would have)
    assert L.route_critic(t, NAMES, s, L.Load(cap(blocked=NAMES)))["critic_on"] == []
    # no view (a repair pass re-proposing): unchanged
    assert L.route_critic(t, NAMES, s, None) is t


def test_a_critic_moved_off_a_backlogged_account_starts_a_new_conversation():
    s = settings(busy_backlog=2)
    t = open_thread("q.t1", explore="a", critic="b")
    stay = L.route_critic(t, NAMES, s, L.Load(cap()))
    assert stay["critic_on"] == [] and stay["critic_conv"] == 0 and stay["critic_account"] == "b"
    moved = L.route_critic(t, NAMES, s, L.Load(cap(), pinned={"b": 4}))
    assert moved["critic_on"] == ["c"] and moved["critic_conv"] == 1 and moved["critic_account"] is None
    task = T.turn_task(dict(moved, seed_type="question", seed_text="why?"), 2, [], [], NAMES, s)
    assert task["requires"] == {"conversation": "explorer:q.t1:critic.1", "backends": ["c"]}
    # the default conversation name is unchanged for threads that never moved their critic
    assert T.turn_task(dict(stay, seed_type="question", seed_text="why?"), 2, [], [], NAMES, s)["requires"][
        "conversation"] == "explorer:q.t1:critic"


def test_pinned_counts_follow_conversations_through_the_thread_records():
    threads = [open_thread("q.t1", explore="a", critic="b", conv=1)]
    pending = {"1": {"requires": {"conversation": "explorer:q.t1"}, "payload": {"thread_id": "q.t1"}},
               "2": {"requires": {"conversation": "explorer:q.t1:critic.1"}, "payload": {"thread_id": "q.t1"}},
               "3": {"requires": {"backends": ["c"]}, "payload": {"insight_id": "q.t1.i1"}},
               "4": {"requires": {}, "payload": {}}}
    assert L.pinned_counts(pending, threads, NAMES) == {"a": 1, "b": 1, "c": 1}


# --- in the service -------------------------------------------------------------------------------------

def _open(r):
    return [t for t in r.values("threads/") if t["status"] in M.OPEN_THREAD]


def test_the_service_opens_more_threads_when_more_accounts_have_room(rig):
    r = rig(settings="max_active_threads = 1\nthreads_per_account = 1\nopen_threads_per_seed = 2\n")
    r.import_seeds()
    r.svc.plan()
    threads = _open(r)
    assert len(threads) == 3                                      # one per account with room
    assert sorted(t["explore_on"][0] for t in threads) == ["alpha", "beta", "gamma"]
    firsts = [t for t in r.tasks(state="PENDING") if t["kind"] == M.EXPLORE]
    assert sorted(t["requires"]["backends"][0] for t in firsts) == ["alpha", "beta", "gamma"]
    # two accounts out of room: the slots shrink back to max_active_threads; no new thread starts
    r.client.cooldown("beta", r.clock.world() + 86400, reason="429")
    r.client.cooldown("gamma", r.clock.world() + 86400, reason="429")
    r.svc._load_seen = None
    assert r.svc.thread_room(r.values("threads/")) == 0


def test_the_service_moves_the_critic_off_an_account_without_room(rig):
    r = rig(settings="max_active_threads = 1\nthreads_per_account = 0\nmin_exchanges = 6\nmin_critiques = 3\n"
                     "profundity_threshold = 1.0\n")
    r.import_seeds()
    r.svc.plan()
    thread = r.run_until(lambda: [t for t in _open(r) if t.get("critic_account") and t["exchanges"] == 2], steps=20)[0]
    critic, explorer = thread["critic_account"], thread["explore_account"]
    assert critic != explorer
    r.client.cooldown(critic, r.clock.world() + 86400, reason="429")
    r.svc._load_seen = None
    r.step([explorer])                      # turn 3 (explore) is applied; turn 4 is routed
    moved = r.get(M.thread_key(thread["id"]))
    assert moved["exchanges"] == 3 and moved["critic_conv"] == 1 and critic not in moved["critic_on"]
    task = [t for t in r.tasks(state="PENDING") if t["key"] == M.turn_task_key(thread["id"], 4)][0]
    assert task["requires"]["conversation"] == f"explorer:{thread['id']}:critic.1"
    assert set(task["requires"]["backends"]) == set(moved["critic_on"])
    r.step()                                # and it runs on an account with room
    assert r.get(M.thread_key(thread["id"]))["critic_account"] not in (None, critic)


def test_a_thread_waiting_only_on_a_backlogged_account_holds_no_slot(rig):
    r = rig(settings="max_active_threads = 1\nthreads_per_account = 1\nmax_threads = 1\nmax_waiting_threads = 1\n"
                     "busy_backlog = 0\n")
    r.import_seeds()
    r.svc.plan()
    [thread] = _open(r)
    target = thread["explore_on"][0]
    cap, pending = r.svc.capacity(), CAP.pending(r.client, M.MODULE)
    assert PN.waiting_threads([thread], cap, pending) == set()
    assert PN.waiting_threads([thread], cap, pending, busy={target}) == {thread["id"]}
    # in thread_room: its turn is the one task pinned to target (> busy_backlog = 0): one more thread may start
    r.svc._load_seen = r.svc._waiting_seen = None
    assert r.svc.load_view().pinned == {target: 1}
    assert r.svc.thread_room(r.values("threads/")) == 1


def test_a_refused_idle_query_is_counted_and_logged_not_swallowed(rig, monkeypatch, caplog):
    """The scheduler's ``idle`` answer is optional (the slots fall back to the broker's view), but a
    failure to get it is counted and logged (issue 12: no swallowed error without a log line and a
    counter), once for the first and then at each power of ten."""
    from tests.unit.modhelp import RefusingScheduler
    r = rig()
    with RefusingScheduler() as sched, caplog.at_level("WARNING"):
        monkeypatch.setenv("FANO_SCHEDULER", sched.endpoint)
        assert r.svc.scheduler_idle() == []
        assert r.svc.scheduler_idle() == []
    assert sched.asked == ["idle", "idle"]
    assert r.svc.tolerated["scheduler idle query"] == 2
    said = [rec.getMessage() for rec in caplog.records if "scheduler idle query failed" in rec.getMessage()]
    assert len(said) == 1 and "refused by the test's scheduler" in said[0]
