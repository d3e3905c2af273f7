"""A hung worker frees its task within seconds (issue 14): real broker, real scheduler, real sim workers.

A worker is frozen with SIGSTOP while it holds a lease. The scheduler drops it after its liveness (3 s of
silence) and has the broker revoke its lease (``revoke``). Before the worker recorded its intent nothing
was sent, and the task runs on another account at once, exactly once; after the intent the turn's outcome
is unknown and the account's own worker reconciles it when it is back — with its quota window full, since a
reconcile sends nothing new. The frozen worker, continued, finds its lease void: its late writes are
refused by fencing. Leases here last 60 s, so nothing below comes from a lease running out.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
import zmq

from shared.client import BrokerClient
from tests.scheduler_support import SchedulerProcess
from tests.support import BrokerProcess, short_tmpdir, wait_for, write_config
from tests.worker_support import WorkerProcess

pytestmark = pytest.mark.integration

LEASE_TTL = 60.0


class Tree:
    """Broker, scheduler and sim workers as processes; every one stopped by pid (continued first)."""

    def __init__(self, accounts: dict, quotas: dict | None = None):
        self.root = short_tmpdir("hw")
        self.config = write_config(self.root, broker={"lease_ttl": LEASE_TTL}, quotas=quotas,
                                   scheduler={"lease_ttl": LEASE_TTL, "assign_timeout": 20.0}, accounts=accounts)
        self.broker = BrokerProcess(self.root, self.config)
        self.scheduler = SchedulerProcess(self.root, self.config)
        self.workers: dict[str, WorkerProcess] = {}
        self._client: BrokerClient | None = None
        self._proxy: HoldingProxy | None = None

    def start(self) -> Tree:
        self.broker.start()
        self.scheduler.start()
        self._client = self.broker.client(timeout=3.0)
        return self

    @property
    def client(self) -> BrokerClient:
        assert self._client is not None, "the tree is not started"
        return self._client

    def worker(self, account: str, env: dict | None = None) -> WorkerProcess:
        w = self.workers[account] = WorkerProcess(self.root, self.config, account)
        w.extra_env.update(env or {})
        w.start()
        wait_for(lambda: self.account_state(account) == "idle", 20, what=f"{account}'s worker to say ready")
        return w

    def account_state(self, account: str) -> str | None:
        rows = {r["account"]: r for r in self.scheduler.query("backends")["accounts"]}
        return rows.get(account, {}).get("state")

    def ask(self, key: str, **fields) -> int:
        return self.client.submit(key, "adhoc", "ask", {"prompt": f"question {key}"}, **fields)["task"]["id"]

    def sim_log(self, account: str, tid: int) -> list[str]:
        path = self.root / "data" / "sim" / account / "requests.jsonl"
        if not path.exists():
            return []
        events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [e["event"] for e in events if e.get("task_id") == tid]

    def used(self, account: str, mode: str = "standard") -> list[int]:
        for q in self.client.quota_show(account)["quotas"]:
            if q["mode"] == mode:
                return [w["used"] for w in q["windows"]]
        return []

    def until(self, predicate, timeout: float, what: str, interval: float = 0.05):
        """wait_for, failing with every process's log."""
        try:
            return wait_for(predicate, timeout, interval, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None

    def proxy(self) -> HoldingProxy:
        self._proxy = HoldingProxy(f"ipc://{self.root}/run/proxy.sock", self.broker.endpoint)
        self._proxy.start()
        return self._proxy

    def logs(self) -> str:
        parts = [f"--- {p.log_path.name} ---\n{p.log()}" for p in (self.broker, self.scheduler, *self.workers.values())]
        return "\n".join(parts)

    def check_invariants(self) -> None:
        """The broker's database is consistent (ops/invariants.py), read while the broker runs."""
        from ops.invariants import check_broker_db
        assert check_broker_db(self.broker.data_dir) == []

    def close(self) -> None:
        for proc in (*self.workers.values(), self.scheduler, self.broker):
            if proc.alive():
                os.kill(proc.pid, signal.SIGCONT)   # a stopped process is still killed by pid
                proc.kill()
        if self._client is not None:
            self._client.close()
        if self._proxy is not None:
            self._proxy.halt.set()
            self._proxy.join(timeout=5)


class HoldingProxy(threading.Thread):
    """A broker endpoint for one worker that forwards its requests to the broker and holds the broker's
    replies while ``hold`` is set: the worker's lease is granted, and it does not learn so yet. Each
    client identity gets a DEALER of the same identity to the broker (the broker sees the worker's own)."""

    def __init__(self, endpoint: str, broker_endpoint: str):
        super().__init__(daemon=True, name="holding-proxy")
        self.endpoint, self.broker_endpoint = endpoint, broker_endpoint
        self.hold, self.halt = threading.Event(), threading.Event()
        self._bound = threading.Event()

    def start(self) -> None:
        super().start()
        assert self._bound.wait(5), "the proxy did not bind"

    def run(self) -> None:
        ctx = zmq.Context()
        front = ctx.socket(zmq.ROUTER)
        front.setsockopt(zmq.LINGER, 0)
        front.bind(self.endpoint)
        self._bound.set()
        backs: dict[bytes, zmq.Socket] = {}
        poller = zmq.Poller()
        poller.register(front, zmq.POLLIN)
        held: list[list[bytes]] = []
        try:
            while not self.halt.is_set():
                events = dict(poller.poll(20))
                if front in events:
                    while True:
                        try:
                            ident, *frames = front.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        if ident not in backs:
                            back = backs[ident] = ctx.socket(zmq.DEALER)
                            back.setsockopt(zmq.LINGER, 0)
                            back.setsockopt(zmq.IDENTITY, ident)
                            back.connect(self.broker_endpoint)
                            poller.register(back, zmq.POLLIN)
                        backs[ident].send_multipart(frames)
                for ident, back in backs.items():
                    while back in events:
                        try:
                            held.append([ident, *back.recv_multipart(zmq.NOBLOCK)])
                        except zmq.Again:
                            break
                if not self.hold.is_set():
                    for msg in held:
                        front.send_multipart(msg)
                    held.clear()
        finally:
            for sock in (front, *backs.values()):
                sock.close(0)
            ctx.term()


@pytest.fixture
def make_tree():
    made = []

    def factory(*args, **kw) -> Tree:
        made.append(Tree(*args, **kw).start())
        return made[-1]

    yield factory
    for tree in made:
        tree.close()


def test_a_worker_frozen_before_sending_loses_its_task_to_another_account_at_once(make_tree):
    tree = make_tree({"a1": {"backend": "sim", "latency": 0.3}, "a2": {"backend": "sim", "latency": 0.3}})
    proxy = tree.proxy()
    proxy.hold.set()                                      # a1 will not hear from the broker for now
    w1 = tree.worker("a1", env={"FANO_BROKER": proxy.endpoint})
    tid = tree.ask("before-send")
    rec = tree.until(lambda: (r := tree.client.get(tid))["state"] == "RUNNING" and r, 15, "a1's lease")
    assert rec["lease"]["worker"] == "backend-a1" and rec.get("turn") is None, rec
    os.kill(w1.pid, signal.SIGSTOP)                       # a1 freezes before it can record any intent
    frozen = time.monotonic()
    proxy.hold.clear()                                    # the lease reply reaches the frozen a1
    tree.worker("a2")
    done = tree.until(lambda: (r := tree.client.get(tid))["state"] == "DONE" and r, 20,
                      "the task to be done elsewhere", 0.05)
    took = time.monotonic() - frozen
    print(f"frozen before sending: done on {done['served']['account']} {took:.1f}s after the freeze "
          f"(liveness 3 s, lease {LEASE_TTL:g} s)")
    assert took < 10.0, tree.logs()
    assert done["served"]["account"] == "a2"
    whys = [h["why"] for h in done["history"]]
    assert any("revoked" in why and "nothing was sent" in why for why in whys), whys
    assert tree.sim_log("a1", tid) == [] and tree.sim_log("a2", tid) == ["received", "served"]
    # a1 wakes up: its lease is void, it sends nothing and changes nothing
    os.kill(w1.pid, signal.SIGCONT)
    tree.until(lambda: "lease void" in w1.log(), 15, "a1 to find its lease void")
    assert tree.client.stats()["broker"]["errors"].get("STALE_EPOCH", 0) >= 1   # refused by fencing
    time.sleep(1.0)
    assert tree.sim_log("a1", tid) == [] and tree.client.get(tid)["result"] == done["result"]
    assert [h["to"] for h in tree.client.get(tid)["history"]].count("DONE") == 1
    tree.check_invariants()


def test_a_worker_frozen_after_sending_is_reconciled_by_its_account_without_a_quota_unit(make_tree):
    tree = make_tree({"a1": {"backend": "sim", "latency": 6.0}, "a2": {"backend": "sim", "latency": 0.3}},
                     quotas={("a1", "standard"): ["1/day"]})
    w1 = tree.worker("a1")
    tid = tree.ask("after-send")
    wait_for(lambda: tree.sim_log("a1", tid) == ["received"], 15, what="a1 to send the request")
    os.kill(w1.pid, signal.SIGSTOP)
    frozen = time.monotonic()
    tree.worker("a2")
    rec = tree.until(lambda: (r := tree.client.get(tid))["state"] == "PENDING" and r, 15, "the lease to be revoked",
                     0.05)
    revoked = time.monotonic() - frozen
    print(f"frozen after sending: lease revoked {revoked:.1f}s after the freeze")
    assert revoked < 8.0 and rec["unknown_turn"]["account"] == "a1", rec
    assert tree.used("a1") == [1]                        # the window is full
    time.sleep(2.0)                                      # a2 is idle, but the turn may have been served
    assert tree.client.get(tid)["state"] == "PENDING" and tree.sim_log("a2", tid) == []
    os.kill(w1.pid, signal.SIGCONT)                      # a1 is back: it reconciles, needing no unit
    done = tree.until(lambda: (r := tree.client.get(tid))["state"] == "DONE" and r, 30, "a1 to reconcile the turn", 0.1)
    assert done["served"]["account"] == "a1" and done["result"]["meta"]["reconciled"] is True
    assert tree.sim_log("a1", tid).count("received") == 1 and tree.sim_log("a1", tid).count("served") == 1
    assert tree.sim_log("a2", tid) == [] and tree.used("a1") == [1] and done["charged"] == 1
    assert "lease void" in w1.log() and "reconciling attempt 1" in w1.log()
    assert tree.client.stats()["broker"]["errors"].get("STALE_EPOCH", 0) >= 1   # its late write was refused
    assert [h["to"] for h in done["history"]].count("DONE") == 1
    tree.check_invariants()


def test_a_short_hold_moves_an_unknown_turn_to_another_account_at_the_price_of_a_second_request(make_tree):
    """``[accounts.a1] unknown_turn_hold = 2``: the trade-off of README "A hung worker", observed."""
    tree = make_tree({"a1": {"backend": "sim", "latency": 6.0, "unknown_turn_hold": 2},
                      "a2": {"backend": "sim", "latency": 0.3}})
    w1 = tree.worker("a1")
    tid = tree.ask("short-hold")
    wait_for(lambda: tree.sim_log("a1", tid) == ["received"], 15, what="a1 to send the request")
    os.kill(w1.pid, signal.SIGSTOP)
    frozen = time.monotonic()
    tree.worker("a2")
    done = tree.until(lambda: (r := tree.client.get(tid))["state"] == "DONE" and r, 20, "a2 to take over", 0.05)
    print(f"short hold: done on {done['served']['account']} {time.monotonic() - frozen:.1f}s after the freeze")
    assert done["served"]["account"] == "a2"
    # a1's provider had the request too: it was sent twice, once per account (what the hold prevents)
    assert tree.sim_log("a1", tid) == ["received"] and tree.sim_log("a2", tid) == ["received", "served"]
    tree.check_invariants()
