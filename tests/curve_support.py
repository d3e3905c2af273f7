"""The tcp:// + CURVE test harness shared by the CURVE tests and the socket fuzz: a config whose endpoints are
tcp:// on free ports, its keys directory, programs started on it and clients with their keys."""
from __future__ import annotations

import os
import socket

import pytest
import zmq

from shared.client import BrokerClient
from shared.config import load_config
from shared.errors import BrokerUnavailable
from shared.keys import ClientKeys
from shared.scheduler_client import query
from tests.support import ServiceProcess, run_fanoctl, wait_for, write_config


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Net:
    """A config with tcp:// endpoints on free ports, its keys directory, and the programs started on it."""

    def __init__(self, root, accounts=None):
        self.root = root
        self.config_path = write_config(root, accounts=accounts or {"a1": ["standard"], "a2": ["standard"]})
        self.env = {"FANO_BROKER": f"tcp://127.0.0.1:{free_port()}",
                    "FANO_EVENTS": f"tcp://127.0.0.1:{free_port()}",
                    "FANO_SCHEDULER": f"tcp://127.0.0.1:{free_port()}"}
        self.keys_dir = root / "var" / "keys"
        self.procs: list[ServiceProcess] = []

    def fanoctl(self, *args, **kw):
        return run_fanoctl(self.config_path, *args, env=self.env, **kw)

    def start(self, *args: str, wait: str | None = None) -> ServiceProcess:
        """``python -m services ARGS`` with the tcp:// endpoints; ``wait``: a log line to wait for."""
        proc = ServiceProcess(self.root, self.config_path, list(args), f"{'-'.join(args)}.log", env=self.env)
        proc.spawn()
        self.procs.append(proc)
        if wait:
            wait_for(lambda: wait in proc.log() or (not proc.alive() and pytest.fail(proc.log())), 20,
                     what=f"{args} to log {wait!r}")
        return proc

    def keys(self, name: str) -> ClientKeys:
        with environment(self.env):
            keys = load_config(self.config_path).client_keys(name)
        assert keys is not None
        return keys

    def client(self, name: str, keys: ClientKeys | None = None, timeout: float = 2.0,
               retries: int = 1) -> BrokerClient:
        return BrokerClient(self.env["FANO_BROKER"], name=name, timeout=timeout, retries=retries,
                            keys=keys or self.keys(name), context=zmq.Context())

    def query(self, name: str, what: str, **fields):
        return query(self.env["FANO_SCHEDULER"], what, name=name, keys=self.keys(name), **fields)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


class environment:
    """Set environment variables for a block (the config loader reads the endpoint overrides from it)."""

    def __init__(self, env):
        self.env, self.saved = env, {}

    def __enter__(self):
        self.saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)

    def __exit__(self, *exc):
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def answers(client: BrokerClient) -> bool:
    """Whether the broker behind ``client`` answers a ping (the client is closed after)."""
    try:
        return bool(client.ping())
    except BrokerUnavailable:
        return False
    finally:
        client.close()
