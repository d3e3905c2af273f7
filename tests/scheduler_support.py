"""Test helpers for the scheduler: the real program as a process, and fake backend workers.

:class:`SchedulerProcess` mirrors :class:`tests.support.BrokerProcess` (always stopped by pid).
:class:`FakeWorker` is a thread speaking the worker protocol over a real DEALER: it says ``ready``,
leases what it is assigned through :class:`shared.client.BrokerClient`, completes it, says ``done``
and ``ready`` again; it heartbeats every second and re-announces itself when the scheduler goes silent
or disconnects it. It can be told to hang (stop talking, keep its lease) to play a dead worker.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import zmq

from shared import protocol, sockets
from shared.client import BrokerClient
from shared.errors import BrokerUnavailable, FanoError
from shared.scheduler_client import query
from tests.support import ServiceProcess, wait_for, write_config


def write_scheduler_config(root: Path, broker=None, quotas=None, scheduler=None, accounts=None) -> Path:
    """``accounts``: {name: [modes]} of sim accounts (see tests.support.write_config)."""
    return write_config(root, broker, quotas, scheduler, accounts)


class SchedulerProcess(ServiceProcess):
    """``python -m services scheduler`` on a config; always stopped by pid at teardown."""

    def __init__(self, root: Path, config_path: Path):
        super().__init__(root, config_path, ["scheduler"], "scheduler.log")
        self.endpoint = f"ipc://{root}/run/scheduler.sock"
        assert len(self.endpoint) < 100, self.endpoint

    def start(self, wait: bool = True) -> SchedulerProcess:
        self.spawn()
        if wait:
            self.wait_synced()
        return self

    def query(self, what: str, **fields):
        return query(self.endpoint, what, timeout=2.0, name="test", **fields)

    def wait_synced(self, timeout: float = 15.0) -> dict:
        def synced():
            if self.proc.poll() is not None:
                raise AssertionError(f"scheduler exited with {self.proc.returncode}:\n{self.log()}")
            try:
                st = query(self.endpoint, "stats", timeout=0.5, name="test")
            except BrokerUnavailable:
                return None
            return st if st.get("synced") else None
        return wait_for(synced, timeout, what="the scheduler to rebuild its view")


class FakeWorker(threading.Thread):
    def __init__(self, scheduler_endpoint: str, broker_endpoint: str, account: str, modes=("standard",),
                 work_time: float = 0.05, name: str | None = None):
        super().__init__(daemon=True, name=name or f"backend-{account}")
        self.endpoint = scheduler_endpoint
        self.broker_endpoint = broker_endpoint
        self.account = account
        self.modes = list(modes)
        self.work_time = work_time
        self.worker = name or f"backend-{account}"
        self.halt = threading.Event()
        self.hang_on_lease = threading.Event()   # after the next lease: go silent, keep the lease
        self.hung = threading.Event()
        self.assigned: list[int] = []
        self.completed: list[int] = []
        self.declined: list[tuple[int, str, float | None]] = []
        self.reconnects = 0
        self.errors: list[str] = []
        self._sock: zmq.Socket[bytes] | None = None

    # --- socket -----------------------------------------------------------------------------------

    def _connect(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self.reconnects += 1
        self._sock = zmq.Context.instance().socket(zmq.DEALER)
        sockets.configure_socket(self._sock, "dealer", identity=self.worker)
        self._sock.connect(self.endpoint)
        self._send("ready", worker=self.worker, account=self.account, backend="sim", modes=self.modes)
        self._heard = time.monotonic()

    @property
    def sock(self) -> zmq.Socket[bytes]:
        """The DEALER to the scheduler (made by :meth:`_connect`, first thing in :meth:`run`)."""
        assert self._sock is not None, "not connected yet"
        return self._sock

    def _send(self, msg_type: str, **fields) -> None:
        self.sock.send_multipart(protocol.encode_worker(msg_type, **fields))

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=10)

    # --- the loop ---------------------------------------------------------------------------------

    def run(self) -> None:
        client = BrokerClient(self.broker_endpoint, name=self.worker, timeout=2.0, retries=3)
        try:
            self._connect()
            next_beat = time.monotonic() + protocol.HEARTBEAT_INTERVAL
            while not self.halt.is_set():
                if self.hung.is_set():
                    time.sleep(0.05)
                    continue
                now = time.monotonic()
                if now >= next_beat:
                    self._send("heartbeat", worker=self.worker, task_id=None)
                    next_beat = now + protocol.HEARTBEAT_INTERVAL
                if now - self._heard > protocol.HEARTBEAT_INTERVAL * protocol.LIVENESS:
                    self._connect()   # the scheduler went silent: a fresh socket, announce again
                    continue
                if not self.sock.poll(100):
                    continue
                try:
                    msg = protocol.decode_worker(self.sock.recv_multipart())
                except FanoError as exc:
                    self.errors.append(str(exc))
                    continue
                self._heard = time.monotonic()
                if msg["type"] == "disconnect":
                    self._connect()
                elif msg["type"] == "assign":
                    self._run_assignment(client, msg["task_id"], msg.get("ttl"))
        except Exception as exc:  # surfaces in the test's assertions
            self.errors.append(repr(exc))
            raise
        finally:
            client.close()
            if self._sock is not None:
                self._sock.close(linger=0)

    def _run_assignment(self, client: BrokerClient, task_id: int, ttl) -> None:
        self.assigned.append(task_id)
        try:
            lease = client.lease(self.worker, self.account, modes=self.modes, task_id=task_id, ttl=ttl)
        except FanoError as exc:
            lease = {"task": None, "reason": str(exc), "retry_at": None}
        if lease["task"] is None:
            self.declined.append((task_id, lease.get("reason", ""), lease.get("retry_at")))
            self._send("done", worker=self.worker, task_id=task_id, epoch=0, outcome="declined",
                       message=lease.get("reason", ""), retry_at=lease.get("retry_at"))
            self._send("ready", worker=self.worker, account=self.account, backend="sim", modes=self.modes)
            return
        if self.hang_on_lease.is_set():
            self.hung.set()   # a dead worker holding a lease: no heartbeats, no result
            return
        self._send("heartbeat", worker=self.worker, task_id=task_id)
        time.sleep(self.work_time)
        client.complete(task_id, lease["epoch"], {"text": f"done by {self.worker}"})
        self.completed.append(task_id)
        self._send("done", worker=self.worker, task_id=task_id, epoch=lease["epoch"], outcome="done",
                   message="", retry_at=None)
        self._send("ready", worker=self.worker, account=self.account, backend="sim", modes=self.modes)
