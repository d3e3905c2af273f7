"""Test helpers: a real broker process in a short temporary directory, and polls with deadlines."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shared.client import BrokerClient
from shared.errors import BrokerUnavailable

REPO = Path(__file__).resolve().parent.parent


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; fail with context after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # keep polling; report the last error on timeout
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc!r})" if last_exc else ""))


def short_tmpdir(prefix: str = "fa") -> Path:
    """A temporary directory with a short path: ipc:// endpoints must fit in ~100 bytes."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def write_config(root: Path, broker: dict | None = None, quotas: dict | None = None) -> Path:
    lines = ["[paths]", f'run_dir = "{root}/run"', f'data_dir = "{root}/data"', f'log_dir = "{root}/log"']
    if broker:
        lines.append("[broker]")
        for key, value in broker.items():
            lines.append(f"{key} = {value!r}" if not isinstance(value, str) else f'{key} = "{value}"')
    for (account, mode), windows in (quotas or {}).items():
        lines.append(f'[quotas."{account}".{mode}]')
        lines.append("windows = [" + ", ".join(f'"{w}"' for w in windows) + "]")
    path = root / "fano.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class BrokerProcess:
    """``python -m services broker`` on its own config; always stopped by pid at teardown."""

    def __init__(self, root: Path, config_path: Path):
        self.root = root
        self.config_path = config_path
        self.endpoint = f"ipc://{root}/run/broker.sock"
        self.events_endpoint = f"ipc://{root}/run/events.sock"
        self.data_dir = root / "data" / "broker"
        self.log_path = root / "broker.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        assert len(self.endpoint) < 100, self.endpoint

    def start(self, wait: bool = True) -> "BrokerProcess":
        env = dict(os.environ, FANO_CONFIG=str(self.config_path), PYTHONUNBUFFERED="1")
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "services", "broker", "--config", str(self.config_path)],
                                     cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.starts += 1
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 15.0) -> None:
        probe = self.client(timeout=0.3, retries=1)
        try:
            def ready():
                if self.proc.poll() is not None:
                    raise AssertionError(f"broker exited with {self.proc.returncode}:\n{self.log()}")
                try:
                    return probe.ping()
                except BrokerUnavailable:
                    return None
            wait_for(ready, timeout, what="broker to answer ping")
        finally:
            probe.close()

    def client(self, name: str = "test", timeout: float = 2.0, retries: int = 3) -> BrokerClient:
        return BrokerClient(self.endpoint, name=name, timeout=timeout, retries=retries)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode if self.proc else None

    def restart(self) -> None:
        self.kill()
        self.start()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)
