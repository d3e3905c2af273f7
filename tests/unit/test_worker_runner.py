"""The request thread's control flow (services/backends/runner.py) against a scripted broker client and a
scripted provider: the classification table, reconcile-before-send, intents, stale leases, cancels, and
result delivery that retries the same request id while the broker is away."""
from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from services.backends import registry
from services.backends.base import DEFAULT_REQUEST_TIMEOUTS, REQUEST_TIMEOUT_GRACE, Provider, ProviderError, Reply
from services.backends.runner import Job, TurnRunner, build_turn
from shared.clock import FakeClock
from shared.config import AccountConfig, ConfigError
from shared.errors import BrokerUnavailable, ErrorCode, FanoError
from tests.support import REPO

TASK = {"id": 7, "module": "explorer", "kind": "explorer.explore", "attempts": 2,
        "payload": {"prompt": "why?", "turn": 3, "seed": 1}, "requires": {"conversation": "c-1"},
        "unknown_turn": None}


def stale(what="lease void") -> FanoError:
    return FanoError(ErrorCode.STALE_EPOCH, what)


class FakeBroker:
    """Records every call; ``script[cmd]`` is a list of results or exceptions consumed in order (the last
    one repeats)."""

    def __init__(self, task=None, **script):
        task = dict(TASK if task is None else task)
        self.script = {"lease": [{"task": task, "epoch": 4, "mode": "deep", "ttl": 30.0, "reason": ""}],
                       "turn_begin": [{"id": task["id"], "epoch": 4}],
                       "complete": [{"id": task["id"], "state": "DONE"}],
                       "fail": [{"id": task["id"], "state": "PENDING", "not_before": 1234.5}]}
        self.script.update(script)
        self.calls: list[tuple[str, str, dict]] = []
        self.hook = None   # called as hook(cmd) before answering

    def call(self, cmd, rid=None, **args):
        self.calls.append((cmd, rid, args))
        if self.hook:
            self.hook(cmd)
        queue = self.script[cmd]
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def cmds(self) -> list[str]:
        return [c for c, _, _ in self.calls]

    def last(self, cmd) -> dict:
        return [a for c, _, a in self.calls if c == cmd][-1]


class FakeProvider:
    def __init__(self, send=None, reconcile=None):
        self.send_result = send if send is not None else Reply("the answer", {"model": "fake"})
        self.reconcile_result = reconcile
        self.sent, self.reconciled = [], []
        self.during_send = None   # called with the cancelled() callable while "generating"

    def send(self, turn, cancelled):
        self.sent.append(turn)
        if self.during_send:
            self.during_send(cancelled)
        if isinstance(self.send_result, BaseException):
            raise self.send_result
        return self.send_result

    def reconcile(self, turn):
        self.reconciled.append(turn)
        if isinstance(self.reconcile_result, BaseException):
            raise self.reconcile_result
        return self.reconcile_result


def run(broker, provider, job=None, patience=5.0):
    sleeps = []
    runner = TurnRunner(provider, broker, "backend-a", "a", "sim", ["standard", "deep"], lease_patience=patience,
                        sleep=sleeps.append)
    job = job or Job(7, 30.0)
    out = runner.run(job)
    assert job.finished.is_set() and job.outcome is out
    return out, sleeps


# --- the happy path -----------------------------------------------------------------------------------

def test_lease_intent_send_complete_in_that_order():
    broker, provider = FakeBroker(), FakeProvider()
    job = Job(7, 30.0)
    out, _ = run(broker, provider, job)
    assert out.outcome == "done" and out.epoch == 4
    assert broker.cmds() == ["lease", "turn_begin", "complete"]
    lease = broker.last("lease")
    assert lease == {"worker": "backend-a", "account": "a", "backend": "sim", "modes": ["standard", "deep"],
                     "ttl": 30.0, "task_id": 7}
    assert broker.calls[0][1] == job.lease_rid
    assert broker.last("turn_begin") == {"id": 7, "epoch": 4}
    assert broker.last("complete") == {"id": 7, "epoch": 4, "result": {"text": "the answer", "meta": {"model": "fake"}}}
    turn = provider.sent[0]
    assert (turn.task_id, turn.epoch, turn.attempt, turn.mode, turn.kind, turn.module) == \
        (7, 4, 2, "deep", "explorer.explore", "explorer")
    assert (turn.prompt, turn.conversation, turn.turn_index, turn.account) == ("why?", "c-1", 3, "a")
    assert job.epoch == 4


def test_build_turn_tolerates_odd_payloads():
    reply = {"task": {"id": 1, "attempts": 1, "kind": "ask", "module": "m", "payload": ["x"]}, "epoch": 1,
             "mode": None}
    turn = build_turn(reply, "a")
    assert turn.payload == {"value": ["x"]} and turn.prompt == "" and turn.mode == "standard"
    reply["task"]["payload"] = {"prompt": 42, "turn": True}
    turn = build_turn(reply, "a")
    assert turn.prompt == "42" and turn.turn_index == 0 and turn.conversation is None


def test_unserializable_meta_does_not_lose_the_reply():
    out, _ = run(broker := FakeBroker(), FakeProvider(send=Reply("t", {"obj": object(), "n": 1})))
    assert out.outcome == "done"
    meta = broker.last("complete")["result"]["meta"]
    assert meta["n"] == 1 and isinstance(meta["obj"], str)


# --- classification -----------------------------------------------------------------------------------

@pytest.mark.parametrize("cls,sent,retry_after,outcome", [
    ("quota", True, 3600.0, "refused"),
    ("transient", True, 2.5, "failed"),
    ("transient", False, None, "failed"),
    ("auth", False, None, "failed"),
    ("terminal", True, None, "failed"),
    ("unknown", True, None, "failed"),
])
def test_provider_errors_are_reported_with_their_class(cls, sent, retry_after, outcome):
    ack = {"id": 7, "state": "PENDING", "not_before": 99.0, "cooldown_until": 5000.0}
    broker = FakeBroker(fail=[ack])
    out, _ = run(broker, FakeProvider(send=ProviderError(cls, "boom", retry_after=retry_after, sent=sent)))
    assert broker.cmds() == ["lease", "turn_begin", "fail"]
    assert broker.last("fail") == {"id": 7, "epoch": 4, "error_class": cls, "message": "boom", "sent": sent,
                                   "retry_after": retry_after}
    assert out.outcome == outcome and out.message.startswith(cls)
    assert out.retry_at == (5000.0 if cls == "quota" else 99.0)


def test_an_unexpected_provider_exception_is_unknown_and_counted_as_sent():
    broker = FakeBroker()
    out, _ = run(broker, FakeProvider(send=RuntimeError("segfault-ish")))
    fail = broker.last("fail")
    assert fail["error_class"] == "unknown" and fail["sent"] is True and "RuntimeError" in fail["message"]
    assert out.outcome == "failed"


def test_an_absurd_retry_after_is_not_sent_to_the_broker():
    broker = FakeBroker()
    run(broker, FakeProvider(send=ProviderError("transient", "x", retry_after=float("inf"))))
    assert broker.last("fail")["retry_after"] is None


# --- reconcile before send ----------------------------------------------------------------------------

UNKNOWN = {"account": "a", "epoch": 2, "attempt": 1, "mode": "standard", "at": 1.0}


def test_unknown_turn_served_by_the_provider_completes_without_sending():
    broker = FakeBroker(task=dict(TASK, unknown_turn=UNKNOWN))
    provider = FakeProvider(reconcile=Reply("old answer", {"reconciled": True}))
    out, _ = run(broker, provider)
    assert out.outcome == "done"
    assert provider.sent == [] and broker.cmds() == ["lease", "complete"]
    assert broker.last("complete")["result"]["text"] == "old answer"
    previous = provider.reconciled[0]
    assert (previous.attempt, previous.epoch, previous.mode, previous.task_id) == (1, 2, "standard", 7)


def test_unknown_turn_never_received_is_sent_after_the_intent():
    broker = FakeBroker(task=dict(TASK, unknown_turn=UNKNOWN))
    provider = FakeProvider(reconcile=None)
    out, _ = run(broker, provider)
    assert out.outcome == "done" and len(provider.reconciled) == 1 and len(provider.sent) == 1
    assert broker.cmds() == ["lease", "turn_begin", "complete"]
    assert provider.sent[0].attempt == 2 and provider.sent[0].epoch == 4


@pytest.mark.parametrize("account,unspent,refund", [("a", True, True), ("a", False, False), ("b", True, False)])
def test_an_unknown_turn_the_provider_says_spent_nothing_is_refunded_with_the_intent(account, unspent, refund):
    """Issue 16: the previous attempt never left (or the site answered it in another mode): the provider
    says so after reconcile returned None, and turn_begin asks the broker to refund that attempt's unit.
    Only for this account's own attempt; without the provider's word the unit stays counted."""
    broker = FakeBroker(task=dict(TASK, unknown_turn=dict(UNKNOWN, account=account)))
    provider = FakeProvider(reconcile=None)
    asked = []
    provider.unspent = lambda turn: asked.append((turn.attempt, turn.epoch)) or unspent
    out, _ = run(broker, provider)
    assert out.outcome == "done" and broker.cmds() == ["lease", "turn_begin", "complete"]
    assert broker.last("turn_begin").get("refund_unknown", False) is refund
    assert asked == ([(1, 2)] if account == "a" else [])


def test_a_reconcile_that_must_send_again_without_quota_room_sends_nothing():
    broker = FakeBroker(task=dict(TASK, unknown_turn=UNKNOWN),
                        turn_begin=[{"id": 7, "epoch": 4, "turn": None, "state": "PENDING",
                                     "reason": "account a deep quota 1/1", "retry_at": 5000.0}])
    provider = FakeProvider(reconcile=None)
    out, _ = run(broker, provider)
    assert provider.sent == [] and broker.cmds() == ["lease", "turn_begin"]
    assert out.outcome == "refused" and out.retry_at == 5000.0 and "quota 1/1" in out.message


@pytest.mark.parametrize("error,cls", [(ProviderError("unknown", "cannot tell yet", retry_after=30), "unknown"),
                                       (ProviderError("transient", "page did not load"), "unknown"),
                                       (ProviderError("auth", "logged out"), "auth"),
                                       (KeyError("bug"), "unknown")])
def test_a_reconcile_that_cannot_tell_never_sends(error, cls):
    broker = FakeBroker(task=dict(TASK, unknown_turn=UNKNOWN))
    provider = FakeProvider(reconcile=error)
    out, _ = run(broker, provider)
    assert provider.sent == [] and "turn_begin" not in broker.cmds()
    fail = broker.last("fail")
    assert fail["error_class"] == cls and fail["sent"] is False and fail["message"].startswith("reconcile")
    assert out.outcome == "failed"


def test_a_reconciled_answer_is_completed_in_the_mode_the_provider_confirmed():
    """served.mode of a reconciled turn is the earlier attempt's mode as the provider confirmed it (the
    reply's meta.mode), not this lease's; without a confirmed mode, the earlier attempt's."""
    deep = dict(UNKNOWN, mode="deep")
    broker = FakeBroker(task=dict(TASK, unknown_turn=deep))
    run(broker, FakeProvider(reconcile=Reply("deep answer", {"reconciled": True, "mode": "deep"})))
    assert broker.last("complete")["reconciled"] is True and broker.last("complete")["mode"] == "deep"
    broker = FakeBroker(task=dict(TASK, unknown_turn=UNKNOWN))      # standard, reconciled under a deep lease
    run(broker, FakeProvider(reconcile=Reply("old answer", {"reconciled": True})))
    assert broker.last("complete")["mode"] == "standard"
    broker = FakeBroker(task=dict(TASK))
    run(broker, FakeProvider(send=Reply("fresh", {"mode": "deep"})))
    assert "mode" not in broker.last("complete") and "reconciled" not in broker.last("complete")


def test_a_reconcile_that_finds_a_downgrade_is_a_quota_refusal():
    """A web page showing that the earlier deep attempt was answered in another mode: quota (the deep mode
    cools, the unit is refunded, no attempt burned), never sent, never completed as deep."""
    broker = FakeBroker(task=dict(TASK, unknown_turn=dict(UNKNOWN, mode="deep")))
    provider = FakeProvider(reconcile=ProviderError("quota", "downgrade: the reopened Pro turn ...", retry_after=600))
    out, _ = run(broker, provider)
    fail = broker.last("fail")
    assert provider.sent == [] and fail["error_class"] == "quota" and fail["sent"] is False
    assert fail["retry_after"] == 600 and out.outcome == "refused"


# --- stale leases and cancels -------------------------------------------------------------------------

def test_stale_intent_abandons_without_sending():
    broker = FakeBroker(turn_begin=[stale()])
    provider = FakeProvider()
    out, _ = run(broker, provider)
    assert out.outcome == "stale" and provider.sent == [] and broker.cmds() == ["lease", "turn_begin"]


def test_stale_completion_is_given_up():
    broker = FakeBroker(complete=[stale("task is CANCELLED")])
    out, _ = run(broker, FakeProvider())
    assert out.outcome == "stale" and "CANCELLED" in out.message
    assert broker.cmds().count("complete") == 1


def test_a_stale_renew_during_the_request_interrupts_it_and_reports_nothing():
    broker, provider, job = FakeBroker(), FakeProvider(), Job(7, 30.0)

    def generating(cancelled):
        job.mark_stale()          # what the main loop does when renew says STALE_EPOCH
        assert cancelled()
    provider.during_send = generating
    out, _ = run(broker, provider, job)
    assert out.outcome == "stale" and broker.cmds() == ["lease", "turn_begin"]


def test_cancel_during_the_request_reports_unknown_and_ends_cancelled():
    broker, job = FakeBroker(), Job(7, 30.0)
    provider = FakeProvider(send=ProviderError("unknown", "cancelled while generating", sent=True))
    seen = []

    def generating(cancelled):
        seen.append(cancelled())
        threading.Thread(target=job.request_cancel).start()  # the main loop's thread
        job._cancel.wait(5)
        seen.append(cancelled())
    provider.during_send = generating
    out, _ = run(broker, provider, job)
    assert seen == [False, True]
    fail = broker.last("fail")
    assert fail["error_class"] == "unknown" and fail["sent"] is True
    assert out.outcome == "cancelled"


def test_cancel_of_a_task_the_broker_already_cancelled_is_still_cancelled():
    broker, job = FakeBroker(fail=[stale("task is CANCELLED")]), Job(7, 30.0)
    provider = FakeProvider(send=ProviderError("unknown", "cancelled", sent=True))
    provider.during_send = lambda cancelled: job.request_cancel()
    out, _ = run(broker, provider, job)
    assert out.outcome == "cancelled"


def test_cancel_before_sending_gives_the_lease_back_unsent():
    broker, provider, job = FakeBroker(), FakeProvider(), Job(7, 30.0)
    broker.hook = lambda cmd: job.request_cancel() if cmd == "lease" else None
    out, _ = run(broker, provider, job)
    assert provider.sent == [] and broker.cmds() == ["lease", "fail"]
    fail = broker.last("fail")
    assert fail["error_class"] == "transient" and fail["sent"] is False and fail["retry_after"] == 0.0
    assert out.outcome == "cancelled"


# --- the request timeout ------------------------------------------------------------------------------

class HangingProvider(FakeProvider):
    """Never answers: waits (moving the fake clock) until ``cancelled()`` turns true, then raises what a
    provider raises when interrupted mid-request. ``ignore_cancel`` returns a reply regardless."""

    def __init__(self, clock, timeout=60.0, on_cancel=None, step=0.5):
        super().__init__()
        self.clock, self.timeout, self.looks, self.step = clock, timeout, 0, step
        self.on_cancel = on_cancel or ProviderError("unknown", "cancelled while generating", sent=True)

    def request_timeout(self, mode):
        return self.timeout

    def send(self, turn, cancelled):
        self.sent.append(turn)
        while not cancelled():
            self.looks += 1
            assert self.looks < 10_000, "the request was never interrupted"
            self.clock.advance(self.step)
        if self.during_send:
            self.during_send(cancelled)
        raise self.on_cancel


def run_hanging(provider, clock, job=None):
    broker = FakeBroker()
    runner = TurnRunner(provider, broker, "backend-a", "a", "sim", ["standard", "deep"], sleep=lambda s: None,
                        clock=clock)
    job = job or Job(7, 30.0)
    return broker, job, runner.run(job)


def test_a_request_that_never_returns_is_cut_at_its_timeout_and_reported_unknown():
    clock = FakeClock()
    provider = HangingProvider(clock, timeout=60.0)
    start = clock.mono()
    broker, job, out = run_hanging(provider, clock)
    assert clock.mono() - start == pytest.approx(60.0, abs=0.6)   # interrupted at the deadline, not later
    assert broker.cmds() == ["lease", "turn_begin", "fail"]
    fail = broker.last("fail")
    # unknown + sent: the provider may have it, so the next attempt reconciles before re-sending
    assert fail["error_class"] == "unknown" and fail["sent"] is True and "request timeout (60s)" in fail["message"]
    assert out.outcome == "failed" and job.timed_out and not job.cancel_requested
    assert job.deadline is None and not job.sending


def test_a_timed_out_provider_that_knows_nothing_left_keeps_its_class():
    clock = FakeClock()
    unsent = ProviderError("transient", "cancelled before sending", retry_after=0.0, sent=False)
    broker, job, out = run_hanging(HangingProvider(clock, timeout=5.0, on_cancel=unsent), clock)
    fail = broker.last("fail")
    assert (fail["error_class"], fail["sent"], fail["retry_after"]) == ("transient", False, 0.0)
    assert "request timeout" in fail["message"] and out.outcome == "failed"


def test_a_reply_that_arrives_just_past_the_deadline_is_kept():
    clock = FakeClock()
    provider = FakeProvider()
    provider.request_timeout = lambda mode: 1.0
    provider.during_send = lambda cancelled: (clock.advance(5.0), cancelled())
    broker = FakeBroker()
    out = TurnRunner(provider, broker, "backend-a", "a", "sim", ["deep"], clock=clock).run(Job(7, 30.0))
    assert out.outcome == "done" and broker.cmds() == ["lease", "turn_begin", "complete"]


@pytest.mark.parametrize("answer", [None, 0, -1, float("inf"), "600", True, RuntimeError("bug")])
def test_a_missing_or_absurd_request_timeout_still_bounds_the_request(answer):
    clock = FakeClock()
    provider = HangingProvider(clock, step=5.0)

    def request_timeout(mode):
        if isinstance(answer, BaseException):
            raise answer
        return answer
    provider.request_timeout = request_timeout
    start = clock.mono()
    broker, _, out = run_hanging(provider, clock)
    assert clock.mono() - start == pytest.approx(DEFAULT_REQUEST_TIMEOUTS["deep"], abs=5.1)   # the lease is deep
    assert broker.last("fail")["error_class"] == "unknown" and out.outcome == "failed"


def test_a_scheduler_cancel_of_a_request_past_its_deadline_is_still_a_cancel():
    clock, job = FakeClock(), Job(7, 30.0)
    provider = HangingProvider(clock, timeout=1.0, step=2.0)
    provider.during_send = lambda cancelled: job.request_cancel()   # the scheduler's cancel comes too
    broker, _, out = run_hanging(provider, clock, job)
    fail = broker.last("fail")
    assert (fail["error_class"], fail["sent"]) == ("unknown", True) and out.outcome == "cancelled"


def test_the_worker_cancels_an_overdue_request_and_exits_if_the_provider_ignores_it(tmp_path):
    from services.backends.worker import CANCEL_GRACE, BackendWorker
    from shared.config import Config
    from shared.errors import ExitCode

    acct = AccountConfig("a", "sim", ("standard",), {"latency": "zero"})
    cfg = Config(path=None, run_dir=tmp_path, data_dir=tmp_path, log_dir=tmp_path, accounts=(acct,))
    clock = FakeClock()
    worker = BackendWorker(cfg, clock, acct)
    try:
        job = worker.job = Job(7, 30.0)
        job.epoch, job.deadline = 4, clock.mono() + 10.0
        worker._watch()
        assert not job.cancelled()
        clock.advance(10.0)
        worker._watch()                    # the deadline: cancelled like a scheduler cancel, not a cancel
        assert job.timed_out and job.cancelled() and not job.cancel_requested and not worker.stopping
        clock.advance(CANCEL_GRACE - 1.0)
        worker._watch()
        assert not worker.stopping
        clock.advance(1.0)
        worker._watch()                    # still running: the provider is hung beyond our reach
        assert worker.stopping and worker.exit_code == ExitCode.FAILURE and job.abandon.is_set()
        worker.renew_at = clock.mono() - 1.0
        worker._renew()                    # no renew any more (worker.broker is None: a call would raise)
    finally:
        os.close(worker._wake_r)
        os.close(worker._wake_w)


def test_the_worker_hands_one_runner_and_its_broker_client_from_job_to_job(tmp_path, monkeypatch):
    """A broker connection per job cost a socket, a handshake and a new peer for the broker on every task;
    a thread per job its start and join: one request thread runs job after job."""
    import threading

    import zmq

    from services.backends import worker as W
    from services.backends.runner import Outcome
    from shared.config import Config

    clients, threads = [], []

    def run_job(runner, job):
        clients.append(runner.client)
        threads.append(threading.current_thread())
        job.outcome = Outcome("done", "", 1)
        job.finished.set()
        return job.outcome

    monkeypatch.setattr(W.TurnRunner, "run", run_job)
    acct = AccountConfig("a", "sim", ("standard",), {"latency": "zero"})
    cfg = Config(path=None, run_dir=tmp_path, data_dir=tmp_path, log_dir=tmp_path, accounts=(acct,))
    worker = W.BackendWorker(cfg, FakeClock(), acct)
    worker.ctx = zmq.Context()
    worker.sock = worker.ctx.socket(zmq.DEALER)   # unconnected: the done and ready it sends are dropped
    try:
        for tid in (1, 2, 3):
            worker._on_assign({"task_id": tid, "ttl": 30.0})
            assert worker.job.finished.wait(5)
            worker._reap()
            assert worker.job is None
        assert len(clients) == 3 and clients[0] is clients[1] is clients[2]
        assert threads[0] is threads[1] is threads[2] and threads[0] is not threading.current_thread()
    finally:
        worker._runner.client.close()
        worker.sock.close(0)
        worker.ctx.term()
        os.close(worker._wake_r)
        os.close(worker._wake_w)


def test_a_task_gets_one_log_line_unless_its_request_runs_long(tmp_path, caplog):
    """The lease's details go into the line the task's end writes; a request still running after
    LONG_REQUEST gets the lease's line of its own then (what runs now shows in the log), and its end's line
    does not repeat them."""
    import logging

    from services.backends.runner import Outcome
    from services.backends.worker import LONG_REQUEST, BackendWorker
    from shared.config import Config

    caplog.set_level(logging.INFO)
    broker, provider = FakeBroker(), FakeProvider()
    quick = Job(7, 30.0)
    run(broker, provider, quick)
    assert quick.lease_note == "attempt 2, explorer.explore, mode deep" and not quick.lease_logged
    assert not [r for r in caplog.records if "leased" in r.getMessage()]

    acct = AccountConfig("a", "sim", ("standard",), {"latency": "zero"})
    cfg = Config(path=None, run_dir=tmp_path, data_dir=tmp_path, log_dir=tmp_path, accounts=(acct,))
    clock = FakeClock()
    worker = BackendWorker(cfg, clock, acct)
    worker._done = lambda *args, **kw: None   # no scheduler link here
    worker._announce = lambda: None
    try:
        def finish(job, took):
            caplog.clear()
            job.epoch, job.lease_note, job.leased_at = 4, "attempt 2, ask, mode standard", clock.mono()
            worker.job = job
            for _ in range(2):
                clock.advance(took / 2)
                worker._log_long_request()
            job.outcome = Outcome("done", "", 4)
            job.finished.set()
            worker._reap()
            return [r.getMessage() for r in caplog.records]

        assert finish(Job(8, 30.0), LONG_REQUEST / 4) == ["task 8: done at epoch 4, attempt 2, ask, mode standard, "
                                                          "after 0.25s"]
        assert finish(Job(9, 30.0), LONG_REQUEST * 2) == ["task 9: running for 1s, leased at epoch 4, attempt 2, ask, "
                                                          "mode standard",
                                                          "task 9: done at epoch 4, after 2s"]
    finally:
        os.close(worker._wake_r)
        os.close(worker._wake_w)


def test_an_unknown_turn_logs_its_lease_before_the_reconcile(caplog):
    import logging

    caplog.set_level(logging.INFO)
    broker = FakeBroker(task={**TASK, "unknown_turn": {"attempt": 1, "epoch": 3}})
    run(broker, FakeProvider(reconcile=None))
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "task 7: leased at epoch 4, attempt 2, explorer.explore, mode deep"
    assert "reconciling" in lines[1]


def test_provider_timeouts_honour_the_accounts_own_timeout(tmp_path):
    """The deadline comes from each provider's validated settings (one settings reader), never below the
    floors; the base class itself reads no settings."""
    from services.backends.chatgpt import ChatGPTProvider
    from services.backends.claude import ClaudeProvider
    web = ChatGPTProvider("w", {"timeout": {"standard": 1200, "deep": 10800}}, FakeClock(), tmp_path)
    assert web.request_timeout("standard") == DEFAULT_REQUEST_TIMEOUTS["standard"]   # the floor is higher
    assert web.request_timeout("deep") == 10800 + REQUEST_TIMEOUT_GRACE               # never cut before its own
    api = ClaudeProvider("c", {"timeout": 600}, FakeClock(), tmp_path, environ={"ANTHROPIC_API_KEY": "k"})
    assert (api.request_timeout("standard"), api.request_timeout("deep")) == (1800.0, 7200.0)   # floors rule
    slow = ClaudeProvider("s", {"timeout": 9000}, FakeClock(), tmp_path, environ={"ANTHROPIC_API_KEY": "k"})
    assert slow.request_timeout("standard") == 9000 + REQUEST_TIMEOUT_GRACE
    assert Provider("x", {"timeout": 99999}, FakeClock(), None).request_timeout("deep") == 7200.0


# --- the broker going away ----------------------------------------------------------------------------

def test_result_delivery_retries_the_same_rid_until_acknowledged():
    down = BrokerUnavailable("down")
    broker = FakeBroker(complete=[down, down, down, down, {"id": 7, "state": "DONE"}])
    out, sleeps = run(broker, FakeProvider())
    assert out.outcome == "done"
    rids = [rid for cmd, rid, _ in broker.calls if cmd == "complete"]
    assert len(rids) == 5 and len(set(rids)) == 1
    assert sleeps == sorted(sleeps) and sleeps[0] < sleeps[-1]   # backoff grows


def test_intent_and_failure_reports_are_retried_too():
    down = BrokerUnavailable("down")
    broker = FakeBroker(turn_begin=[down, {"id": 7, "epoch": 4}], fail=[down, down, {"state": "PENDING"}])
    out, _ = run(broker, FakeProvider(send=ProviderError("transient", "500")))
    assert out.outcome == "failed"
    for cmd in ("turn_begin", "fail"):
        rids = {rid for c, rid, _ in broker.calls if c == cmd}
        assert len(rids) == 1


@pytest.mark.parametrize("code", [ErrorCode.MAP_FULL, ErrorCode.DISK_FULL])
def test_a_storage_refusal_of_a_result_is_retried_with_the_same_rid(code):
    # the broker is short of storage: it resumes by itself, so the answer is delivered, not thrown away
    full = FanoError(code, "storage is full")
    broker = FakeBroker(turn_begin=[full, {"id": 7, "epoch": 4}], complete=[full, full, {"id": 7, "state": "DONE"}])
    out, sleeps = run(broker, FakeProvider())
    assert out.outcome == "done" and len(sleeps) == 3
    for cmd, n in (("turn_begin", 2), ("complete", 3)):
        rids = [rid for c, rid, _ in broker.calls if c == cmd]
        assert len(rids) == n and len(set(rids)) == 1


def test_a_worker_that_exits_stops_retrying_delivery():
    broker, job = FakeBroker(complete=[BrokerUnavailable("down")]), Job(7, 30.0)
    runner = TurnRunner(FakeProvider(), broker, "backend-a", "a", "sim", ["standard"],
                        sleep=lambda s: job.abandon.set())
    out = runner.run(job)
    assert out.outcome == "failed" and "exiting" in out.message
    assert broker.cmds().count("complete") == 1


def test_an_unexpected_broker_error_on_completion_is_not_retried():
    broker = FakeBroker(complete=[FanoError(ErrorCode.INVALID_STATE, "weird")])
    out, _ = run(broker, FakeProvider())
    assert out.outcome == "failed" and "INVALID_STATE" in out.message and broker.cmds().count("complete") == 1


def test_lease_is_retried_with_the_assignment_rid():
    down = BrokerUnavailable("down")
    lease = FakeBroker().script["lease"][0]
    broker, job = FakeBroker(lease=[down, down, lease]), Job(7, 30.0)
    out, _ = run(broker, FakeProvider(), job)
    assert out.outcome == "done"
    assert [rid for c, rid, _ in broker.calls if c == "lease"] == [job.lease_rid] * 3


def test_lease_gives_up_after_its_patience():
    broker, provider = FakeBroker(lease=[BrokerUnavailable("down")]), FakeProvider()
    runner = TurnRunner(provider, broker, "backend-a", "a", "sim", ["standard"], lease_patience=0.0,
                        sleep=lambda s: None)
    out = runner.run(Job(7, 30.0))
    assert out.outcome == "declined" and "unavailable" in out.message and provider.sent == []


def test_nothing_to_lease_is_declined_with_the_reason():
    broker = FakeBroker(lease=[{"task": None, "reason": "task 7 is RUNNING", "retry_at": 777.0}])
    out, _ = run(broker, provider := FakeProvider())
    assert (out.outcome, out.message, out.retry_at) == ("declined", "task 7 is RUNNING", 777.0)
    assert provider.sent == [] and broker.cmds() == ["lease"]
    broker = FakeBroker(lease=[FanoError(ErrorCode.NOT_FOUND, "no such task: 7")])
    out, _ = run(broker, FakeProvider())
    assert out.outcome == "declined" and "NOT_FOUND" in out.message


def test_a_bug_in_the_runner_is_an_outcome_not_a_dead_thread():
    broker = FakeBroker(lease=[{"task": {"id": 7}}])   # malformed reply: no epoch
    out, _ = run(broker, FakeProvider())
    assert out.outcome == "failed" and "worker error" in out.message


# --- registry -----------------------------------------------------------------------------------------

def test_registry_builds_the_sim_provider(tmp_path):
    acct = AccountConfig("a", "sim", ("standard", "deep"), {"latency": "zero", "seed": 3})
    provider = registry.make_provider(acct, FakeClock(), tmp_path)
    assert type(provider).__name__ == "SimProvider" and provider.modes == ["standard", "deep"]
    assert provider.log_path == tmp_path / "sim" / "a" / "requests.jsonl"


def test_registry_refuses_unknown_or_unbuilt_backends_and_bad_settings(tmp_path, monkeypatch):
    monkeypatch.setitem(registry.PROVIDERS, "claude", "services.backends.not_built_yet:Nothing")
    with pytest.raises(ConfigError, match="not implemented"):
        registry.provider_class("claude")
    monkeypatch.setitem(registry.PROVIDERS, "claude", "services.backends.claude:ClaudeProvider")
    with pytest.raises(ConfigError, match="unknown backend"):
        registry.provider_class("nope")
    with pytest.raises(ConfigError, match="accounts.a"):
        registry.make_provider(AccountConfig("a", "sim", ("standard",), {"sede": 1}), FakeClock(), tmp_path)


def test_a_sim_worker_imports_no_provider_sdk():
    code = ("import sys; from services.backends import worker, registry; "
            "assert 'services.backends.sim' not in sys.modules, 'sim imported eagerly'; "
            "registry.provider_class('sim'); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('anthropic', 'playwright', 'openai')]; "
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
