"""Test helpers for backend workers: a config with sim accounts, a worker process, a fake scheduler.

The fake scheduler is a ROUTER on the scheduler endpoint that speaks the worker protocol
(shared.protocol, "Worker protocol"). Its socket lives in one background thread (ZeroMQ sockets are
not thread-safe); tests talk to it through thread-safe methods and poll with deadlines.
"""
from __future__ import annotations

import queue
import shutil
import threading
import time
from pathlib import Path

import zmq

from shared import protocol, sockets
from shared.errors import FanoError
from tests.support import BrokerProcess, ServiceProcess, short_tmpdir, write_config


def write_worker_config(root: Path, accounts: dict, broker: dict | None = None, quotas: dict | None = None,
                        scheduler: dict | None = None) -> Path:
    """``accounts``: {name: {[accounts.NAME] table}} (see tests.support.write_config)."""
    return write_config(root, broker, quotas, scheduler, accounts)


class WorkerProcess(ServiceProcess):
    """``python -m services backend --account NAME``; stopped by pid."""

    def __init__(self, root: Path, config_path: Path, account: str, tag: str = ""):
        super().__init__(root, config_path, ["backend", "--account", account], f"worker-{account}{tag}.log",
                         env={"FANO_LOG_LEVEL": "DEBUG"})
        self.account = account

    def start(self) -> WorkerProcess:
        self.spawn()
        return self

    def terminate(self, timeout: float = 15.0) -> int | None:
        return self.stop(timeout)

    def log(self, tail: int = 10**9) -> str:
        return super().log(tail)


class FakeScheduler:
    """A ROUTER on the scheduler endpoint: records what workers say, sends what the test tells it to, and
    heartbeats every identity it heard from recently (unless ``silent``)."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self.messages: list[dict] = []        # decoded, with "_from" (identity bytes) and "_at" (monotonic)
        self.garbage = 0
        self.silent = False
        self._cond = threading.Condition()
        self._out: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._peers: dict[bytes, float] = {}
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="fake-scheduler")
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"fake scheduler did not bind {endpoint}: {self._error!r}")

    def _run(self) -> None:
        ctx = zmq.Context.instance()
        sock = ctx.socket(zmq.ROUTER)
        try:
            sockets.configure_socket(sock, "router")
            sock.bind(self.endpoint)
        except BaseException as exc:
            self._error = exc
            sock.close(linger=0)
            return
        self._ready.set()
        next_beat = time.monotonic()
        try:
            while not self._stop.is_set():
                if sock.poll(20):
                    while True:
                        try:
                            frames = sock.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self._received(frames)
                while True:
                    try:
                        ident, frames = self._out.get_nowait()
                    except queue.Empty:
                        break
                    try:
                        sock.send_multipart([ident, *frames], flags=zmq.NOBLOCK)
                    except zmq.ZMQError:
                        pass  # that peer is gone (ROUTER_MANDATORY)
                now = time.monotonic()
                if now >= next_beat:
                    next_beat = now + protocol.HEARTBEAT_INTERVAL
                    if not self.silent:
                        for ident, seen in list(self._peers.items()):
                            if now - seen < protocol.LIVENESS * protocol.HEARTBEAT_INTERVAL:
                                try:
                                    sock.send_multipart([ident, *protocol.encode_worker("heartbeat")],
                                                        flags=zmq.NOBLOCK)
                                except zmq.ZMQError:
                                    pass
        finally:
            sock.close(linger=0)

    def _received(self, frames: list[bytes]) -> None:
        ident, rest = frames[0], frames[1:]
        try:
            msg = protocol.decode_worker(rest)
        except FanoError:
            self.garbage += 1
            return
        msg["_from"], msg["_at"] = ident, time.monotonic()
        self._peers[ident] = msg["_at"]
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    # --- test side ------------------------------------------------------------------------------------

    def wait(self, match, timeout: float = 10.0, what: str = "a message", after: int = 0) -> dict:
        """The first message (from index ``after`` on) for which ``match(msg)`` is true."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for msg in self.messages[after:]:
                    if match(msg):
                        return msg
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [{k: v for k, v in m.items() if k != "_at"} for m in self.messages[-8:]]
                    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last messages: {seen}")
                self._cond.wait(min(left, 0.1))

    def wait_type(self, msg_type: str, timeout: float = 10.0, after: int = 0, **fields) -> dict:
        return self.wait(lambda m: m["type"] == msg_type and all(m.get(k) == v for k, v in fields.items()),
                         timeout, f"{msg_type} {fields}", after)

    def mark(self) -> int:
        """An index for ``wait(after=...)``: only messages received from now on."""
        with self._cond:
            return len(self.messages)

    def send(self, ident: bytes, msg_type: str, **fields) -> None:
        self._out.put((ident, protocol.encode_worker(msg_type, **fields)))

    def send_raw(self, ident: bytes, frames: list[bytes]) -> None:
        self._out.put((ident, frames))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class WorkerEnv:
    """A broker process, a fake scheduler and worker processes sharing one short temp dir."""

    def __init__(self, accounts: dict, broker: dict | None = None, quotas: dict | None = None,
                 scheduler: dict | None = None):
        self.root = short_tmpdir("fw")
        self.config_path = write_worker_config(self.root, accounts, broker, quotas, scheduler)
        self.broker = BrokerProcess(self.root, self.config_path).start()
        self.client = self.broker.client()
        self.scheduler = FakeScheduler(f"ipc://{self.root}/run/scheduler.sock")
        self.workers: list[WorkerProcess] = []
        self.data_dir = self.root / "data"

    def wait_end(self, task_id: int, timeout: float = 10.0, after: int = 0) -> dict:
        """How the worker ended ``task_id``, as a scheduler learns it: its ``done``, or, for a completion it
        announced with ``ready {finishing}`` (which sends no ``done``: docs/wire.md § Worker protocol), the
        broker's record turning DONE, given as ``{"type": "done", "outcome": "done", "task_id", "epoch",
        "worker", "_from", "announced": True}``. A ``done`` that follows the announcement (its delivery
        failed: a stale lease) is returned instead."""
        deadline = time.monotonic() + timeout

        def done(m: dict) -> bool:
            return m["type"] == "done" and m.get("task_id") == task_id

        first = self.scheduler.wait(lambda m: done(m) or (m["type"] == "ready" and m.get("finishing") == task_id),
                                    timeout, f"the end of task {task_id}", after)
        if first["type"] == "done":
            return first
        while True:
            later = [m for m in self.scheduler.messages[after:] if done(m)]
            if later:
                return later[0]
            rec = self.client.get(task_id, history=False)
            if rec["state"] == "DONE":
                return {"type": "done", "outcome": "done", "task_id": task_id, "epoch": rec["epoch"],
                        "worker": first["worker"], "_from": first["_from"], "announced": True}
            if time.monotonic() > deadline:
                raise AssertionError(f"task {task_id} announced as finishing but not DONE within {timeout}s: "
                                     f"{rec['state']}")
            time.sleep(0.02)

    def worker(self, account: str) -> WorkerProcess:
        proc = WorkerProcess(self.root, self.config_path, account, tag=f"-{len(self.workers)}").start()
        self.workers.append(proc)
        return proc

    def sim_log(self, account: str) -> Path:
        return self.data_dir / "sim" / account / "requests.jsonl"

    def close(self) -> None:
        for proc in self.workers:
            proc.kill()
        self.scheduler.close()
        self.client.close()
        self.broker.kill()
        shutil.rmtree(self.root, ignore_errors=True)
