"""Test helpers: a real broker process in a short temporary directory, and polls with deadlines."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
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
    raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                         + (f" (last error: {last_exc!r})" if last_exc else ""))


def free_port() -> int:
    """A TCP port of 127.0.0.1 free at the time of asking."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_SHORT_DIRS: list[Path] = []


def short_tmpdir(prefix: str = "fa") -> Path:
    """A temporary directory with a short path: ipc:// endpoints must fit in ~100 bytes. Removed when the
    test session ends (:func:`remove_short_tmpdirs`), whichever test or fixture made it."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    _SHORT_DIRS.append(path)
    return path


def remove_short_tmpdirs() -> int:
    """Remove every directory :func:`short_tmpdir` made in this process; returns how many. Called by
    tests/conftest.py when the session ends: by then every process a test started has been stopped, and
    pytest's own ``tmp_path`` cannot serve here (its paths are too long for ipc:// endpoints)."""
    removed = 0
    while _SHORT_DIRS:
        path = _SHORT_DIRS.pop()
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


TREE_PATHS = """[paths]
run_dir = "{root}/run"
data_dir = "{root}/data"
log_dir = "{root}/var/log"
"""


@contextmanager
def running_tree(prefix: str, accounts_toml: str, env: dict | None = None, scale: float = 1.0):
    """The whole process tree under a real supervisord, with ``[paths]`` in a short temporary directory
    and ``accounts_toml`` (accounts, quotas) as the rest of its fano.toml; ``env`` is given to the tree's
    programs only. Stopped and removed at exit; fails if any process outlived the stop."""
    from ops.chaos import Tree
    root = short_tmpdir(prefix)
    cfg = root / "fano.toml"
    web = "" if "[web]" in accounts_toml else f"\n[web]\nport = {free_port()}\n"
    # the tree's web panel on a port of its own: trees of parallel tests never contend for [web]'s 8080
    cfg.write_text(TREE_PATHS.format(root=root) + accounts_toml + web)
    tree = Tree(root, cfg, scale=scale)
    tree.env.update(env or {})
    try:
        tree.start()
        yield tree
    finally:
        orphans = tree.stop()
        shutil.rmtree(root, ignore_errors=True)
    assert orphans == [], f"processes left after the stop: {orphans}"


def run_fanoctl(target, *args, timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
    """``fanoctl ARGS`` as a user runs it: a subprocess on ``target``'s config (a tree from
    :func:`running_tree`, or a config path), with ``env`` added to ours."""
    config_path = target.config.path if hasattr(target, "config") else target
    full_env = dict(os.environ, FANO_CONFIG=str(config_path), **(env or {}))
    return subprocess.run([sys.executable, "-m", "cli.fanoctl", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def wait_paused_for_auth(tree, account: str, timeout: float = 60) -> dict:
    """Poll ``fanoctl backends ls`` until ``account`` is paused for an auth failure; its row."""
    def paused():
        rows = json.loads(run_fanoctl(tree, "--json", "backends", "ls").stdout)["backends"]
        row = next(b for b in rows if b["account"] == account)
        return row if row["paused"] and "auth" in (row.get("pause_reason") or "") else None
    return wait_for(paused, timeout, interval=0.5, what=f"{account} to be paused by an auth failure")


def toml_value(value) -> str:
    """Enough TOML for test configs: str, bool, numbers, lists and inline tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def write_config(root: Path, broker: dict | None = None, quotas: dict | None = None,
                 scheduler: dict | None = None, accounts: dict | None = None) -> Path:
    """A fano.toml in ``root`` with its paths inside ``root``.

    ``quotas``: {(account, mode): [windows]}; ``accounts``: {name: {table}} or {name: [modes]} (a sim
    account offering those modes); ``broker`` and ``scheduler``: their tables.
    """
    lines = ["[paths]", f'run_dir = "{root}/run"', f'data_dir = "{root}/data"', f'log_dir = "{root}/log"']
    # the broker allocates 2-3 x headroom of disk ahead of use (services/broker/capacity.py): at the
    # default 32 MiB, the hundreds of brokers a test run starts (kept by pytest's last three tmp dirs)
    # would hold tens of GiB of disk; tests that care about the headroom set it
    broker = {"headroom": "1MiB", **(broker or {})}
    for section, table in (("broker", broker), ("scheduler", scheduler)):
        if table:
            lines.append(f"[{section}]")
            lines += [f"{key} = {toml_value(value)}" for key, value in table.items()]
    for (account, mode), windows in (quotas or {}).items():
        lines.append(f'[quotas."{account}".{mode}]')
        lines.append(f"windows = {toml_value(list(windows))}")
    for name, spec in (accounts or {}).items():
        if isinstance(spec, (list, tuple)):
            spec = {"backend": "sim", "modes": list(spec)}
        lines.append(f'[accounts."{name}"]')
        lines += [f"{key} = {toml_value(value)}" for key, value in spec.items()]
    path = root / "fano.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class ServiceProcess:
    """``python -m services ARGS`` on a config, logging to a file; always stopped by pid at teardown."""

    def __init__(self, root: Path, config_path: Path, args: list[str], log_name: str, env: dict | None = None):
        self.root = root
        self.config_path = config_path
        self.args = args
        self.log_path = root / log_name
        self.extra_env = env or {}
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def spawn(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FANO_CLOCK")}
        env.update(FANO_CONFIG=str(self.config_path), PYTHONUNBUFFERED="1", **self.extra_env)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "services", *self.args, "--config",
                                          str(self.config_path)],
                                         cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not spawned"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; the exit code."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode if self.proc else None

    def log(self, tail: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""


class BrokerProcess(ServiceProcess):
    """The broker on its own config, with a client factory and a readiness wait."""

    def __init__(self, root: Path, config_path: Path):
        super().__init__(root, config_path, ["broker"], "broker.log")
        self.endpoint = f"ipc://{root}/run/broker.sock"
        self.events_endpoint = f"ipc://{root}/run/events.sock"
        self.data_dir = root / "data" / "broker"
        assert len(self.endpoint) < 100, self.endpoint

    def start(self, wait: bool = True) -> BrokerProcess:
        self.spawn()
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

    def restart(self) -> None:
        self.kill()
        self.start()

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


def incompressible(n: int, seed: int = 7) -> str:
    """``n`` characters of seeded random hex: the broker compresses large values, so a repeated letter
    would never fill a map or a disk."""
    return random.Random(seed).randbytes((n + 1) // 2).hex()[:n]
