"""The scheduler as a process: a real broker, the real scheduler, fake workers on real sockets."""
import time
from itertools import pairwise

import pytest

from shared.errors import FanoError
from tests.scheduler_support import FakeWorker, SchedulerProcess, write_scheduler_config
from tests.support import BrokerProcess, short_tmpdir, wait_for

pytestmark = pytest.mark.integration


class Stack:
    def __init__(self, root, config_path):
        self.broker = BrokerProcess(root, config_path)
        self.scheduler = SchedulerProcess(root, config_path)
        self.workers: list[FakeWorker] = []
        self.client = None

    def worker(self, account, modes=("standard",), **kw) -> FakeWorker:
        w = FakeWorker(self.scheduler.endpoint, self.broker.endpoint, account, modes, **kw)
        self.workers.append(w)
        w.start()
        return w

    def submit(self, n, prefix="t", **fields) -> list[int]:
        return [self.client.submit(f"{prefix}-{i}", "explorer", "explorer.explore", {"i": i}, **fields)["task"]["id"]
                for i in range(n)]

    def states(self, ids) -> list[str]:
        return [self.client.get(i, history=False)["state"] for i in ids]

    def wait_done(self, ids, timeout=20.0):
        def all_done():
            states = self.states(ids)
            return all(s == "DONE" for s in states) or None
        try:
            wait_for(all_done, timeout, interval=0.1, what=f"tasks {ids} to be DONE")
        except AssertionError as exc:
            raise AssertionError(f"states {self.states(ids)}\n--- scheduler log ---\n{self.scheduler.log()}") from exc

    def close(self):
        for w in self.workers:
            w.halt.set()
        for w in self.workers:
            w.join(timeout=10)
        if self.client is not None:
            self.client.close()
        self.scheduler.kill()
        self.broker.kill()


@pytest.fixture
def make_stack():
    made = []

    def factory(scheduler=None, quotas=None, accounts=None, broker=None, start_scheduler=True):
        root = short_tmpdir()
        cfg = write_scheduler_config(root, broker=broker or {"backoff_base": 0.2}, quotas=quotas,
                                     scheduler={"lease_ttl": 30.0, "assign_timeout": 5.0, **(scheduler or {})},
                                     accounts=accounts)
        stack = Stack(root, cfg)
        made.append((stack, root))
        stack.broker.start()
        stack.client = stack.broker.client()
        if start_scheduler:
            stack.scheduler.start()
        return stack

    yield factory
    import shutil
    for stack, root in made:
        stack.close()
        shutil.rmtree(root, ignore_errors=True)


def test_tasks_submitted_before_and_after_start_all_get_done(make_stack):
    stack = make_stack(start_scheduler=False)
    before = stack.submit(6, "before")
    stack.scheduler.start()
    w1, w2 = stack.worker("a1"), stack.worker("a2")
    after = stack.submit(6, "after")
    stack.wait_done(before + after)
    # every task ran exactly once, spread over both workers, and nobody was declined
    assert sorted(w1.completed + w2.completed) == sorted(before + after)
    assert w1.completed and w2.completed
    assert not w1.declined and not w2.declined and not w1.errors and not w2.errors


def test_higher_priority_first_and_stats(make_stack):
    stack = make_stack()
    low = stack.submit(3, "low", priority=40)
    high = stack.submit(3, "high", priority=70)
    w = stack.worker("a1")
    stack.wait_done(low + high)
    assert w.completed[:3] == high
    st = stack.scheduler.query("stats")
    assert st["synced"] and st["assigned_total"] == 6 and st["ready"] == 0


def test_kill_9_and_restart_loses_nothing(make_stack):
    stack = make_stack()
    w1, w2 = stack.worker("a1", work_time=0.2), stack.worker("a2", work_time=0.2)
    first = stack.submit(10, "first")
    wait_for(lambda: len(w1.completed) + len(w2.completed) >= 2, 15, what="some work to be done")
    stack.scheduler.kill()
    during = stack.submit(5, "during")            # while nobody schedules
    stack.scheduler.start()
    after = stack.submit(5, "after")
    stack.wait_done(first + during + after, timeout=40)
    done = w1.completed + w2.completed
    assert sorted(done) == sorted(first + during + after), "a task ran twice or not at all"


def test_a_restarted_scheduler_relearns_service_times_from_the_outbox(make_stack):
    stack = make_stack()
    stack.worker("a1", work_time=0.2)
    ids = stack.submit(3)
    stack.wait_done(ids)
    learned = stack.scheduler.query("stats")["service_times"]["a1/standard"]
    assert learned["samples"] == 3 and learned["mean_s"] >= 0.2   # each run took at least its work time
    stack.scheduler.kill()
    stack.scheduler.start()
    st = wait_for(lambda: (s := stack.scheduler.query("stats"))["synced"] and s, 10, what="the scheduler to sync")
    assert st["service_times"]["a1/standard"] == learned   # from the broker's outbox, before any new task


def test_a_silent_worker_is_forgotten_and_its_task_runs_elsewhere(make_stack):
    stack = make_stack(scheduler={"lease_ttl": 2.0})
    dead = stack.worker("a1")
    dead.hang_on_lease.set()
    (tid,) = stack.submit(1)
    wait_for(lambda: dead.hung.is_set(), 10, what="the worker to lease and hang")
    assert stack.client.get(tid)["state"] == "RUNNING"
    alive = stack.worker("a2")
    # forgotten after 3 silent heartbeat intervals; the lease expires after 2 s; then a2 gets it
    stack.wait_done([tid], timeout=20)
    assert alive.completed == [tid]

    def a1_forgotten():
        rows = {r["account"]: r for r in stack.scheduler.query("backends")["accounts"]}
        return rows["a1"]["state"] == "offline" and rows["a2"]["state"] in ("idle", "busy")
    wait_for(a1_forgotten, 5, what="the silent worker to be forgotten")
    history = [h["why"] for h in stack.client.get(tid)["history"]]
    assert any("expired" in why for why in history)


def test_a_quota_decline_stops_assignments_until_retry_at(make_stack):
    stack = make_stack(quotas={("q1", "standard"): ["1/3s"]})
    w = stack.worker("q1")
    ids = stack.submit(3)
    stack.wait_done(ids, timeout=30)
    # 1 per 3 s: each of tasks 2 and 3 is declined once, then waits for the window — no retry storm
    assert len(w.declined) <= 2, w.declined
    assert all(retry_at is not None for _, _, retry_at in w.declined)
    assert sorted(w.completed) == ids
    lease_times = [h["at"] for i in ids for h in stack.client.get(i)["history"] if h["to"] == "RUNNING"]
    lease_times.sort()
    assert all(b - a >= 2.9 for a, b in pairwise(lease_times)), lease_times


def test_why_and_backends_answers(make_stack):
    stack = make_stack(quotas={("q1", "standard"): ["1/1h"]}, accounts={"q1": ["standard"], "a2": ["standard"]})
    w = stack.worker("q1")
    (first,) = stack.submit(1, "first")
    stack.wait_done([first])
    (tid,) = stack.submit(1, "second")
    wait_for(lambda: w.declined, 10, what="the lease to be declined for quota")
    why = wait_for(lambda: (r := stack.scheduler.query("why", task_id=tid))["where"] == "ready" and r, 5,
                   what="the task to be back in the queue")
    assert why["state"] == "PENDING"
    rows = {a["account"]: a for a in why["accounts"]}
    assert rows["q1"]["status"] == "blocked" and rows["q1"]["until"] > time.time() + 3000
    assert rows["a2"]["status"] == "offline"
    assert "q1 standard quota for explorer blocked until" in why["line"]
    assert "a2 no worker connected" in why["line"]
    backends = {r["account"]: r for r in stack.scheduler.query("backends")["accounts"]}
    assert backends["q1"]["state"] == "busy" or backends["q1"]["state"] == "idle"
    assert backends["q1"]["blocked_until"]["standard"] == pytest.approx(rows["q1"]["until"])
    assert backends["q1"]["last_outcome"] == "declined" and "quota" in backends["q1"]["last_error"]
    assert backends["a2"]["state"] == "offline" and backends["a2"]["configured"]
    done = stack.scheduler.query("why", task_id=first)
    assert done["where"] == "untracked" and done["state"] == "DONE"
    top = stack.scheduler.query("top")
    assert top["recent"][0]["id"] == first and top["queue"]["ready"] == 1
    with pytest.raises(FanoError) as err:
        stack.scheduler.query("why", task_id="nope")
    assert err.value.name == "BAD_ARGUMENT"


def test_broker_kill_9_under_a_running_scheduler(make_stack):
    stack = make_stack(scheduler={"lease_ttl": 3.0}, broker={"backoff_base": 0.2})
    w = stack.worker("a1", work_time=0.3)
    first = stack.submit(4, "first")
    wait_for(lambda: w.completed, 10, what="the first completion")
    stack.broker.restart()                        # events published meanwhile are caught up from the outbox
    stack.client.close()
    stack.client = stack.broker.client()
    later = stack.submit(4, "later")
    stack.wait_done(first + later, timeout=40)
    last = stack.client.events(after=2**62, limit=1)["last_seq"]
    wait_for(lambda: (st := stack.scheduler.query("stats"))["synced"] and st["last_seq"] == last, 10,
             what=f"the scheduler to have followed every event up to {last}")


def test_module_weights_set_at_run_time_survive_a_kill_9_and_reset_goes_back_to_the_config(make_stack):
    stack = make_stack(scheduler={"module_weights": {"explorer": 2}})
    stack.scheduler.wait_synced()
    got = stack.scheduler.query("weights", set={"documenter": 7.5})
    assert got == {"weights": {"explorer": 2.0, "documenter": 7.5}, "configured": {"explorer": 2.0},
                   "durable": True}
    stack.scheduler.kill()
    stack.scheduler.start()
    stack.scheduler.wait_synced()
    assert stack.scheduler.query("weights")["weights"] == {"explorer": 2.0, "documenter": 7.5}
    assert stack.scheduler.query("weights", reset=True)["weights"] == {"explorer": 2.0}
    stack.scheduler.kill()
    stack.scheduler.start()
    stack.scheduler.wait_synced()
    assert stack.scheduler.query("weights")["weights"] == {"explorer": 2.0}


def test_a_weight_change_the_broker_cannot_store_is_refused_and_changes_nothing(make_stack):
    stack = make_stack()
    stack.scheduler.wait_synced()
    stack.broker.kill()
    with pytest.raises(FanoError) as err:
        stack.scheduler.query("weights", set={"explorer": 5})
    assert err.value.name == "UNAVAILABLE"
    assert stack.scheduler.query("weights")["weights"] == {}
