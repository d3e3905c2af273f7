"""Capacity-following with real processes: a real broker and scheduler, fake workers on real sockets."""

import pytest

from tests.integration import test_scheduler
from tests.support import wait_for

# the scheduler tests' fixture, bound here so pytest finds it for this module's tests too
make_stack = test_scheduler.make_stack

pytestmark = pytest.mark.integration

HANDOFF = 3.0   # world seconds (the clock is not scaled here)


def test_a_conversation_bound_to_an_exhausted_account_moves_to_an_idle_one(make_stack):
    stack = make_stack(quotas={("q1", "standard"): ["1/1h"]}, accounts={"q1": ["standard"], "a2": ["standard"]},
                       scheduler={"conversation_handoff": HANDOFF})
    c = stack.client
    q1 = stack.worker("q1")
    conv = {"conversation": "thread-1"}
    t0 = c.submit("thread-1#0", "explorer", "explorer.explore", {"turn": 0}, requires=conv)["task"]["id"]
    stack.wait_done([t0])
    a2 = stack.worker("a2")
    t1 = c.submit("thread-1#1", "explorer", "explorer.explore", {"turn": 1}, requires=conv)["task"]["id"]
    wait_for(lambda: q1.declined, 10, what="q1's lease to be declined for quota")
    why = wait_for(lambda: (r := stack.scheduler.query("why", task_id=t1))["where"] == "ready" and r, 5,
                   what="the turn to be back in the queue")
    # before the hand-off time (or, on a slow machine, once it has come)
    assert ("lives on q1" in why["line"] and "handed off to another account at" in why["line"]) \
        or "being handed off from q1" in why["line"], why["line"]
    stack.wait_done([t1], timeout=30)
    task = c.get(t1)
    assert t1 in a2.completed and task["served"]["account"] == "a2"
    [entry] = task["conversation"]["handoffs"]
    assert entry["from"] == "q1" and entry["to"] == "a2" and "quota" in entry["why"]
    leased = [h for h in task["history"] if h["to"] == "RUNNING"][-1]
    assert "handed off from q1" in leased["why"]
    assert leased["at"] - task["pending_since"] >= HANDOFF - 0.05 or leased["at"] - task["created"] >= HANDOFF
    # the next turn follows the conversation to a2 (q1 still has no quota, and would not get it anyway)
    t2 = c.submit("thread-1#2", "explorer", "explorer.explore", {"turn": 2}, requires=conv)["task"]["id"]
    stack.wait_done([t2], timeout=10)
    assert t2 in a2.completed and c.get(t2)["conversation"]["account"] == "a2"


def test_an_ask_bound_to_an_account_runs_before_its_research_backlog(make_stack):
    stack = make_stack(accounts={"a1": ["standard"]})
    c = stack.client
    backlog = [c.submit(f"x-{i}", "explorer", "explorer.explore", {"i": i}, attrs={"seed_priority": 10})["task"]["id"]
               for i in range(30)]
    ask = c.submit("ask-1", "adhoc", "ask", {"prompt": "hello"}, requires={"backends": ["a1"]})["task"]["id"]
    w = stack.worker("a1", work_time=0.05)
    stack.wait_done([ask], timeout=20)
    assert w.completed.index(ask) == 0, w.completed[:3]
    stack.wait_done(backlog, timeout=30)
