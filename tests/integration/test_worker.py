"""A backend worker process on the sim provider, a real broker process, and a fake scheduler (a ROUTER
speaking the worker protocol): the whole request path, crashes of each side, cancels and every failure
class the sim can produce."""
from __future__ import annotations

import time
from itertools import pairwise

import msgpack
import pytest

from services.backends.base import Turn
from services.backends.sim import SimProvider, content_key
from services.backends.sim_log import check_log, read_log, served_requests
from shared import protocol
from shared.clock import FakeClock
from shared.errors import ExitCode
from tests.support import wait_for
from tests.worker_support import WorkerEnv, WorkerProcess

pytestmark = pytest.mark.integration

FAST_BROKER = {"backoff_base": 0.2, "backoff_max": 1.0}


@pytest.fixture
def make_env():
    made = []

    def factory(accounts, broker=None, **kw):
        env = WorkerEnv(accounts, broker={**FAST_BROKER, **(broker or {})}, **kw)
        made.append(env)
        return env

    yield factory
    for env in made:
        env.close()


def sim(**settings) -> dict:
    return {"backend": "sim", "modes": ["standard"], "latency": "zero", **settings}


def ready_worker(env, account="a", after=0) -> tuple[WorkerProcess, bytes]:
    """Start a worker and return it with the identity of its first ``ready``."""
    proc = env.worker(account)
    try:
        msg = env.scheduler.wait_type("ready", 15, after=after, worker=f"backend-{account}")
    except AssertionError:
        raise AssertionError(f"worker never said ready; its log:\n{proc.log()[-3000:]}") from None
    return proc, msg["_from"]


def run_task(env, ident, task_id, ttl=10.0, timeout=15.0) -> dict:
    """Assign once and return how the worker ended that task (``WorkerEnv.wait_end``)."""
    mark = env.scheduler.mark()
    env.scheduler.send(ident, "assign", task_id=task_id, ttl=ttl)
    return env.wait_end(task_id, timeout, after=mark)


def run_until_leased(env, task_id, ttl=10.0, timeout=20.0) -> dict:
    """Assign (to the latest announced worker) until the worker leases the task; its ``done``."""
    deadline = time.monotonic() + timeout
    declined = []
    while time.monotonic() < deadline:
        ident = [m for m in env.scheduler.messages if m["type"] == "ready"][-1]["_from"]
        done = run_task(env, ident, task_id, ttl, timeout=max(1.0, deadline - time.monotonic()))
        if done["outcome"] != "declined":
            return done
        declined.append(done["message"])
        time.sleep(0.1)  # a poll interval: the task is in backoff or its old lease has not expired yet
    raise AssertionError(f"task {task_id} was never leased; declined: {declined[-3:]}")


def sim_events(env, account="a", event=None) -> list[dict]:
    return [r for r in read_log(env.sim_log(account)) if event is None or r["event"] == event]


# --- the request path ---------------------------------------------------------------------------------

def assert_reconciled_not_resent(env, task_id: int) -> None:
    """The task is DONE on its second attempt with the answer the provider gave the first, which it
    received and served once; the second attempt found it there and sent nothing."""
    got = env.client.get(task_id)
    assert got["state"] == "DONE" and got["attempts"] == 2 and got["unknown_turn"] is None
    served = served_requests(env.sim_log("a"))
    assert len(served) == 1 and served[0]["reconciled"] is True and served[0]["attempt"] == 1
    assert len(sim_events(env, event="received")) == 1                       # sent once, served once
    assert got["result"]["text"] == served[0]["reply"]


def test_ready_assign_done_with_the_sims_answer_and_heartbeats_both_ways(make_env):
    env = make_env({"a": sim(latency=1.5)})
    proc, ident = ready_worker(env)
    task = env.client.submit("k1", "explorer", "ask", {"prompt": "what is a Fano plane?"})["task"]
    mark = env.scheduler.mark()
    env.scheduler.send(ident, "assign", task_id=task["id"], ttl=10.0)
    busy = env.scheduler.wait_type("heartbeat", 5, after=mark, task_id=task["id"])
    assert busy["worker"] == "backend-a"
    done = env.wait_end(task["id"], 10, after=mark)
    assert done["outcome"] == "done" and done["epoch"] == 1 and done["worker"] == "backend-a"
    # announced with ready {finishing}: the completion sends no done (the broker's event says it)
    assert done.get("announced") and not [m for m in env.scheduler.messages[mark:] if m["type"] == "done"]
    again = env.scheduler.wait_type("ready", 5, after=mark)
    assert again["_from"] == ident and again["modes"] == ["standard"] and again["backend"] == "sim"
    got = env.client.get(task["id"])
    served = served_requests(env.sim_log("a"))
    assert got["state"] == "DONE" and len(served) == 1
    assert got["result"]["text"] == served[0]["reply"] and "Fano plane" in got["result"]["text"]
    assert got["result"]["meta"]["reconciled"] is False
    # idle heartbeats keep flowing about once a second
    mark = env.scheduler.mark()
    env.scheduler.wait(lambda m: len([x for x in env.scheduler.messages[mark:] if x["type"] == "heartbeat"]) >= 3,
                       6, "three idle heartbeats")
    beats = [m for m in env.scheduler.messages[mark:] if m["type"] == "heartbeat"]
    gaps = [b["_at"] - a["_at"] for a, b in pairwise(beats)]
    assert all(0.5 < g < 1.8 for g in gaps), gaps
    assert all(b["task_id"] is None for b in beats)
    assert proc.alive()


def test_kill_9_mid_request_is_reconciled_without_serving_the_turn_twice(make_env):
    env = make_env({"a": sim(latency=5)})
    first, ident = ready_worker(env)
    task = env.client.submit("k1", "explorer", "ask", {"prompt": "slow one"})["task"]
    env.scheduler.send(ident, "assign", task_id=task["id"], ttl=1.5)
    wait_for(lambda: sim_events(env, event="received"), 10, what="the sim to receive the request")
    first.kill()
    # the lease expires (ttl 1.5 s); the broker leaves the open intent as an unknown turn
    got = wait_for(lambda: (t := env.client.get(task["id"]))["state"] == "PENDING" and t, 10,
                   what="the lease to expire")
    assert got["unknown_turn"]["account"] == "a" and got["unknown_turn"]["attempt"] == 1
    mark = env.scheduler.mark()
    ready_worker(env, after=mark)
    done = run_until_leased(env, task["id"])
    assert done["outcome"] == "done", done
    assert_reconciled_not_resent(env, task["id"])
    assert check_log(env.sim_log("a"), {}) == []


def test_scheduler_cancel_interrupts_the_request_and_the_turn_is_reconciled_later(make_env):
    env = make_env({"a": sim(latency=30)})
    proc, ident = ready_worker(env)
    task = env.client.submit("k1", "explorer", "ask", {"prompt": "long"})["task"]
    other = env.client.submit("k2", "explorer", "ask", {"prompt": "other"})["task"]
    mark = env.scheduler.mark()
    env.scheduler.send(ident, "assign", task_id=task["id"], ttl=10.0)
    wait_for(lambda: sim_events(env, event="received"), 10, what="the sim to receive the request")
    # one request at a time: a second assignment is declined, not queued
    env.scheduler.send(ident, "assign", task_id=other["id"], ttl=10.0)
    busy = env.scheduler.wait_type("done", 5, after=mark, task_id=other["id"])
    assert busy["outcome"] == "declined" and busy["message"] == "busy"
    started = time.monotonic()
    env.scheduler.send(ident, "cancel", task_id=task["id"])
    done = env.scheduler.wait_type("done", 5, after=mark, task_id=task["id"])
    assert done["outcome"] == "cancelled" and time.monotonic() - started < 3
    got = env.client.get(task["id"])
    # the provider may still produce the reply: the broker remembers the turn as unknown
    assert got["state"] == "PENDING" and got["unknown_turn"]["attempt"] == 1
    assert got["error"]["class"] == "unknown"
    done = run_until_leased(env, task["id"])
    assert done["outcome"] == "done"
    assert_reconciled_not_resent(env, task["id"])


def test_operator_cancel_voids_the_lease_and_the_worker_stops(make_env):
    env = make_env({"a": sim(latency=30)})
    proc, ident = ready_worker(env)
    task = env.client.submit("k1", "explorer", "ask", {"prompt": "long"})["task"]
    mark = env.scheduler.mark()
    env.scheduler.send(ident, "assign", task_id=task["id"], ttl=1.5)   # renewed every 0.5 s
    wait_for(lambda: sim_events(env, event="received"), 10, what="the sim to receive the request")
    env.client.cancel(task["id"], reason="operator")
    # no cancel message: the next renew says STALE_EPOCH and the worker interrupts the request itself
    done = env.scheduler.wait_type("done", 5, after=mark, task_id=task["id"])
    assert done["outcome"] == "stale"
    env.scheduler.wait_type("ready", 5, after=mark)
    assert env.client.get(task["id"])["state"] == "CANCELLED"
    assert proc.alive()


def test_quota_refusal_returns_the_task_and_cools_the_account_down(make_env):
    env = make_env({"a": sim(rate_limits={"standard": ["1/1h"]})})
    proc, ident = ready_worker(env)
    t1 = env.client.submit("k1", "explorer", "ask", {"prompt": "one"})["task"]
    t2 = env.client.submit("k2", "explorer", "ask", {"prompt": "two"})["task"]
    assert run_task(env, ident, t1["id"])["outcome"] == "done"
    before = time.time()
    done = run_task(env, ident, t2["id"])
    assert done["outcome"] == "refused" and "quota" in done["message"]
    got = env.client.get(t2["id"])
    assert got["state"] == "PENDING" and got["attempts"] == 0 and got["error"]["class"] == "quota"
    (acct,) = env.client.quota_show(account="a")["accounts"]
    until = acct["cooldowns"]["standard"]["until"]
    assert until > before + 3000 and done["retry_at"] == pytest.approx(until)
    again = run_task(env, ident, t2["id"])
    assert again["outcome"] == "declined" and again["retry_at"] == pytest.approx(until)
    assert len(served_requests(env.sim_log("a"))) == 1


def _seed_failing_first_then_succeeding(tmp_path, payload) -> int:
    """A sim seed whose fault draw hits the first lease with a 500 and spares the second (the draw is a
    pure function of seed, account, turn content and lease epoch)."""
    turn = Turn(task_id=0, epoch=0, attempt=1, account="a", mode="standard", module="explorer", kind="ask",
                payload=payload, prompt=payload["prompt"])
    key = content_key(turn)
    for seed in range(500):
        p = SimProvider("a", {"seed": seed, "transient_rate": 0.5, "latency": "zero"}, FakeClock(), tmp_path)
        if p.fate(key, 1)[0] == "transient" and p.fate(key, 2)[0] is None:
            return seed
    raise AssertionError("no suitable seed")


def _used(env, account="a", mode="standard") -> int:
    (quota,) = [q for q in env.client.quota_show(account=account)["quotas"] if q["mode"] == mode]
    return quota["windows"][0]["used"]


def test_transient_error_is_retried_after_a_backoff(make_env, tmp_path):
    payload = {"prompt": "flaky"}
    seed = _seed_failing_first_then_succeeding(tmp_path, payload)
    env = make_env({"a": sim(seed=seed, transient_rate=0.5)}, quotas={("a", "standard"): ["10/1h"]})
    proc, ident = ready_worker(env)
    task = env.client.submit("k1", "explorer", "ask", payload)["task"]
    before = time.time()
    first = run_task(env, ident, task["id"])
    assert first["outcome"] == "failed" and first["message"].startswith("transient")
    got = env.client.get(task["id"])
    # a refusal: the attempt is given back (nothing was spent), and the retry still waits a backoff
    assert got["state"] == "PENDING" and got["attempts"] == 0 and got["refusals"] == 1
    assert got["error"]["class"] == "transient"
    assert got["not_before"] > before and first["retry_at"] == pytest.approx(got["not_before"])
    # a 500 before any output was not served: reported unsent, so the quota unit is refunded
    assert got["error"]["sent"] is False and got["unknown_turn"] is None and _used(env) == 0
    done = run_until_leased(env, task["id"])
    assert done["outcome"] == "done"
    got = env.client.get(task["id"])
    assert got["state"] == "DONE" and got["attempts"] == 1 and got["epoch"] == 2 and _used(env) == 1
    assert [(r["attempt"], r["reason"]) for r in sim_events(env, event="refused")] == [(1, "error")]
    assert sim_events(env, event="failed") == []
    assert [r["attempt"] for r in served_requests(env.sim_log("a"))] == [1]


def test_a_hung_request_is_cut_at_its_timeout_and_reconciled_not_resent(make_env):
    # every attempt would hang: the first is cut by the worker's request timeout (1 world second here),
    # the second reconciles with the provider, which had the first all along, and sends nothing
    env = make_env({"a": sim(hang_rate=1.0, timeout=1.0)}, quotas={("a", "standard"): ["10/1h"]})
    proc, ident = ready_worker(env)
    task = env.client.submit("k1", "explorer", "ask", {"prompt": "stuck"})["task"]
    started = time.monotonic()
    first = run_task(env, ident, task["id"], ttl=10.0, timeout=10.0)
    assert first["outcome"] == "failed" and "request timeout" in first["message"], first
    assert 0.9 < time.monotonic() - started < 5
    got = env.client.get(task["id"])
    assert got["state"] == "PENDING" and got["error"]["class"] == "unknown" and got["error"]["sent"] is True
    assert got["unknown_turn"]["attempt"] == 1 and _used(env) == 1     # the provider may have served it
    done = run_until_leased(env, task["id"])
    assert done["outcome"] == "done", done
    assert_reconciled_not_resent(env, task["id"])
    assert check_log(env.sim_log("a"), {"standard": ["10/1h"]}, count="received") == []
    assert proc.alive()


def test_auth_failure_pauses_the_account(make_env):
    env = make_env({"a": sim(auth_fail=True)})
    proc, ident = ready_worker(env)
    task = env.client.submit("k1", "explorer", "ask", {"prompt": "x"})["task"]
    done = run_task(env, ident, task["id"])
    assert done["outcome"] == "failed" and done["message"].startswith("auth")
    (acct,) = env.client.quota_show(account="a")["accounts"]
    assert acct["paused"] is True and "auth" in acct["pause_reason"]
    got = env.client.get(task["id"])
    assert got["state"] == "PENDING" and got["attempts"] == 0
    again = run_task(env, ident, task["id"])
    assert again["outcome"] == "declined" and "paused" in again["message"]


def test_assignments_that_cannot_be_leased_are_declined_with_the_reason(make_env):
    env = make_env({"a": sim()})
    proc, ident = ready_worker(env)
    missing = run_task(env, ident, 4242)
    assert missing["outcome"] == "declined" and "NOT_FOUND" in missing["message"]
    task = env.client.submit("k1", "explorer", "ask", {"prompt": "x"})["task"]
    assert run_task(env, ident, task["id"])["outcome"] == "done"
    again = run_task(env, ident, task["id"])
    assert again["outcome"] == "declined" and "DONE" in again["message"]
    deep = env.client.submit("k2", "explorer", "ask", {"prompt": "y"}, requires={"mode": "deep"})["task"]
    refused = run_task(env, ident, deep["id"])
    assert refused["outcome"] == "declined" and "deep" in refused["message"]
    env.scheduler.wait_type("ready", 5, after=len(env.scheduler.messages) - 1)
    assert proc.alive()


# --- crashes and silence of the others ------------------------------------------------------------------

def test_result_is_delivered_after_a_broker_kill_9_and_restart(make_env):
    env = make_env({"a": sim(latency=2)})
    proc, ident = ready_worker(env)
    task = env.client.submit("k1", "explorer", "ask", {"prompt": "survive"})["task"]
    mark = env.scheduler.mark()
    env.scheduler.send(ident, "assign", task_id=task["id"], ttl=30.0)
    wait_for(lambda: sim_events(env, event="received"), 10, what="the sim to receive the request")
    env.broker.kill()
    wait_for(lambda: sim_events(env, event="served"), 10, what="the sim to serve the request")
    wait_for(lambda: "complete not acknowledged" in proc.log(), 10, what="the worker to retry delivery")
    env.broker.start()
    done = env.wait_end(task["id"], 20, after=mark)
    assert done["outcome"] == "done", done
    got = env.client.get(task["id"])
    assert got["state"] == "DONE" and got["result"]["text"] == served_requests(env.sim_log("a"))[0]["reply"]
    assert proc.alive()


def test_ready_while_delivering_the_answer_and_the_next_assignment_starts_once_it_is_delivered(make_env):
    """Once the provider has answered, the worker says ``ready {finishing}`` before the completion is
    acknowledged; an assignment then is kept, not declined, and leased right after
    (docs/wire.md § Worker protocol). The broker is down meanwhile, so the completion waits as long as
    we like."""
    env = make_env({"a": sim(latency=1.5)})
    proc, ident = ready_worker(env)
    first = env.client.submit("k1", "explorer", "ask", {"prompt": "first"})["task"]["id"]
    second = env.client.submit("k2", "explorer", "ask", {"prompt": "second"})["task"]["id"]
    mark = env.scheduler.mark()
    env.scheduler.send(ident, "assign", task_id=first, ttl=30.0)
    wait_for(lambda: sim_events(env, event="received"), 10, what="the sim to receive the request")
    env.broker.kill()
    early = env.scheduler.wait_type("ready", 10, after=mark, finishing=first)
    assert early["_from"] == ident
    env.scheduler.send(ident, "assign", task_id=second, ttl=30.0)
    time.sleep(1.5)
    said = env.scheduler.messages[env.scheduler.messages.index(early):]
    assert [m for m in said if m["type"] == "done"] == [], said   # neither the first nor a decline of the second
    beats = [m for m in said if m["type"] == "heartbeat"]
    assert beats and all(m["task_id"] != first for m in beats), beats   # idle to the scheduler: not busy again
    env.broker.start()
    done1 = env.wait_end(first, 20, after=mark)
    done2 = env.wait_end(second, 20, after=mark)
    assert done1["outcome"] == "done" and done2["outcome"] == "done", (done1, done2)
    # both completions were announced with ready {finishing}: no done, and no plain ready in between (the
    # scheduler had its ready and gave the second task on it)
    assert done1.get("announced") and done2.get("announced"), (done1, done2)
    said = env.scheduler.messages[mark:]
    assert [m for m in said if m["type"] == "done"] == [], said
    assert [m for m in said if m["type"] == "ready" and m.get("finishing") is None] == [], said
    a, b = env.client.get(first), env.client.get(second)
    assert a["state"] == b["state"] == "DONE"
    done_at = [h["at"] for h in a["history"] if h["to"] == "DONE"][0]
    leased_at = [h["at"] for h in b["history"] if h["to"] == "RUNNING"][0]
    assert leased_at >= done_at   # leased only once the first was delivered: one lease at a time
    assert proc.alive()


def test_silent_scheduler_makes_the_worker_reconnect_and_reannounce(make_env):
    env = make_env({"a": sim(latency=6)})
    proc, ident = ready_worker(env)
    # idle: a new socket (new identity) says ready again
    env.scheduler.silent = True
    mark = env.scheduler.mark()
    again = env.scheduler.wait_type("ready", 8, after=mark)
    assert again["_from"] != ident
    env.scheduler.silent = False
    ident = again["_from"]
    # busy: the new socket names the running task instead, and the request is not dropped
    task = env.client.submit("k1", "explorer", "ask", {"prompt": "keep going"})["task"]
    mark = env.scheduler.mark()
    env.scheduler.send(ident, "assign", task_id=task["id"], ttl=10.0)
    wait_for(lambda: sim_events(env, event="received"), 10, what="the sim to receive the request")
    env.scheduler.silent = True
    beat = env.scheduler.wait(lambda m: m["type"] == "heartbeat" and m["_from"] != ident, 8,
                              "a heartbeat from a new socket", after=mark)
    assert beat["task_id"] == task["id"]
    assert not any(m["type"] == "ready" for m in env.scheduler.messages[mark:])
    env.scheduler.silent = False
    done = env.wait_end(task["id"], 15, after=mark)
    assert done["outcome"] == "done" and done["_from"] != ident
    assert len(served_requests(env.sim_log("a"))) == 1


def test_scheduler_disconnect_makes_the_worker_reannounce(make_env):
    env = make_env({"a": sim()})
    proc, ident = ready_worker(env)
    mark = env.scheduler.mark()
    env.scheduler.send(ident, "disconnect", reason="who are you?")
    again = env.scheduler.wait_type("ready", 5, after=mark)
    assert again["_from"] != ident


def test_garbage_from_the_scheduler_is_counted_and_ignored(make_env):
    env = make_env({"a": sim()})
    proc, ident = ready_worker(env)
    pack = lambda obj: msgpack.packb(obj, use_bin_type=True)  # noqa: E731
    junk = [[b"hello"], [protocol.WORKER_HEADER, b"\xc1\xc1"], [b"FANOW/9", pack({"type": "assign"})],
            [protocol.WORKER_HEADER, pack({"type": "bogus"})], [protocol.WORKER_HEADER, pack([1, 2])],
            [protocol.WORKER_HEADER, pack({"type": "assign", "task_id": "7"})],
            [protocol.WORKER_HEADER, pack({"type": "assign", "task_id": True})],
            [protocol.WORKER_HEADER, pack({"type": "ready", "worker": "x", "account": "a", "backend": "sim",
                                           "modes": []})],
            [protocol.WORKER_HEADER, b"x", b"y"]]
    for frames in junk:
        env.scheduler.send_raw(ident, frames)
    wait_for(lambda: f"({len(junk)} so far)" in proc.log(), 10, what="the worker to count the garbage")
    task = env.client.submit("k1", "explorer", "ask", {"prompt": "still fine?"})["task"]
    assert run_task(env, ident, task["id"])["outcome"] == "done"
    assert proc.alive()


# --- process life ---------------------------------------------------------------------------------------

def test_sigterm_when_idle_exits_cleanly_and_says_goodbye(make_env):
    env = make_env({"a": sim()})
    proc, ident = ready_worker(env)
    mark = env.scheduler.mark()
    assert proc.terminate() == ExitCode.OK
    env.scheduler.wait_type("disconnect", 5, after=mark)


def test_sigterm_does_not_wait_for_a_long_request(make_env):
    env = make_env({"a": sim(latency=60)})
    proc, ident = ready_worker(env)
    task = env.client.submit("k1", "explorer", "ask", {"prompt": "forever"})["task"]
    env.scheduler.send(ident, "assign", task_id=task["id"], ttl=30.0)
    wait_for(lambda: sim_events(env, event="received"), 10, what="the sim to receive the request")
    started = time.monotonic()
    assert proc.terminate(timeout=15) == ExitCode.OK
    assert time.monotonic() - started < 8
    assert "in flight" in proc.log()
    assert env.client.get(task["id"])["state"] == "RUNNING"   # until the lease expires


def test_sigterm_lets_a_nearly_done_request_finish(make_env):
    env = make_env({"a": sim(latency=1.5)})
    proc, ident = ready_worker(env)
    task = env.client.submit("k1", "explorer", "ask", {"prompt": "almost"})["task"]
    mark = env.scheduler.mark()
    env.scheduler.send(ident, "assign", task_id=task["id"], ttl=30.0)
    wait_for(lambda: sim_events(env, event="received"), 10, what="the sim to receive the request")
    assert proc.terminate() == ExitCode.OK
    assert env.client.get(task["id"])["state"] == "DONE"
    env.scheduler.wait_type("done", 2, after=mark, task_id=task["id"], outcome="done")


def test_a_second_worker_for_the_same_account_refuses_to_start(make_env):
    env = make_env({"a": sim()})
    first, ident = ready_worker(env)
    second = env.worker("a")
    wait_for(lambda: not second.alive(), 15, what="the second worker to exit")
    assert second.proc.returncode == ExitCode.LOCKED
    assert first.alive()


def test_bad_account_settings_exit_with_the_config_code(make_env):
    env = make_env({"a": sim(sede=1)})
    proc = env.worker("a")
    wait_for(lambda: not proc.alive(), 15, what="the worker to exit")
    assert proc.proc.returncode == ExitCode.CONFIG and "sede" in proc.log()


def test_a_turn_handed_off_to_another_account_starts_a_new_conversation_there(make_env):
    env = make_env({"a": sim(), "b": sim()}, scheduler={"conversation_handoff": 1.0})
    _, ident_a = ready_worker(env, "a")
    _, ident_b = ready_worker(env, "b")
    conv = {"conversation": "thread-9"}
    t0 = env.client.submit("thread-9#0", "explorer", "explorer.explore", {"prompt": "turn 0", "turn": 0},
                           requires=conv)["task"]["id"]
    assert run_task(env, ident_a, t0)["outcome"] == "done"
    env.client.call("account_pause", account="a", reason="login expired")
    t1 = env.client.submit("thread-9#1", "explorer", "explorer.explore", {"prompt": "turn 1", "turn": 1},
                           requires=conv)["task"]["id"]
    refused = run_task(env, ident_b, t1)       # before the hand-off time: the conversation stays on a
    assert refused["outcome"] == "declined" and "lives on account a" in refused["message"]
    time.sleep(1.2)
    assert run_task(env, ident_b, t1)["outcome"] == "done"
    got = env.client.get(t1)
    assert got["state"] == "DONE" and got["served"]["account"] == "b"
    assert got["conversation"]["account"] == "b" and got["conversation"]["handoffs"][0]["from"] == "a"
    served = served_requests(env.sim_log("b"))
    assert len(served) == 1 and served[0]["task_id"] == t1 and got["result"]["text"] == served[0]["reply"]
