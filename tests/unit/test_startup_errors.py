"""One root for the conditions that keep a program from starting (shared.errors.StartupError), each with
its exit code, and ``python -m services`` mapping them through that root: real programs started as
supervisord starts them, each stopped at start-up by a real cause (a missing file, a held lock, a
database of a newer schema, a corrupt request log of a simulated provider)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from services.backends.base import ProviderError
from services.backends.sim_log import LogCorrupt
from services.broker import schema as S
from shared.config import ConfigError, load_config
from shared.errors import ExitCode, FanoError, StartupError
from shared.protocol import pack_value
from shared.quota import QuotaSpecError
from shared.service import InstanceLock, LockHeld
from tests.support import REPO, write_config

EXPECTED = {ConfigError: ExitCode.CONFIG, QuotaSpecError: ExitCode.CONFIG, LockHeld: ExitCode.LOCKED,
            S.SchemaError: ExitCode.STORAGE, LogCorrupt: ExitCode.STORAGE, ProviderError: ExitCode.FAILURE}


@pytest.mark.parametrize("cls", list(EXPECTED), ids=lambda c: c.__name__)
def test_every_start_up_failure_derives_from_the_root_with_its_exit_code(cls):
    assert issubclass(cls, StartupError) and cls.exit_code == EXPECTED[cls]


def test_a_quota_spec_error_is_still_a_wire_error():
    assert issubclass(QuotaSpecError, FanoError) and QuotaSpecError("x").name == "INVALID_QUOTA"


def run_program(*args, timeout=30) -> subprocess.CompletedProcess:
    env = dict(os.environ, FANO_LOG_LEVEL="INFO")
    for var in ("FANO_CONFIG", "FANO_BROKER", "FANO_EVENTS", "FANO_SCHEDULER"):
        env.pop(var, None)
    return subprocess.run([sys.executable, "-m", "services", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_a_missing_configuration_exits_config(tmp_path):
    res = run_program("broker", "--config", str(tmp_path / "nope.toml"))
    assert res.returncode == ExitCode.CONFIG, res.stderr
    assert "broker cannot run: config file not found" in res.stderr and "Traceback" not in res.stderr


def test_a_held_lock_exits_locked(tmp_path):
    cfg = load_config(write_config(tmp_path))
    cfg.run_dir.mkdir(parents=True)
    lock = InstanceLock(cfg.lock_path("broker"))
    lock.acquire()
    try:
        res = run_program("broker", "--config", str(cfg.path))
    finally:
        lock.release()
    assert res.returncode == ExitCode.LOCKED, res.stderr
    assert "another instance is running" in res.stderr and "Traceback" not in res.stderr


def test_a_database_of_a_newer_schema_exits_storage(tmp_path):
    cfg = load_config(write_config(tmp_path))
    st = S.open_env(cfg.data_dir / "broker", 8 * 2**20)
    with st.env.begin(write=True) as txn:
        txn.put(b"schema_version", pack_value(S.SCHEMA_VERSION + 1), db=st.dbs["meta"])
    st.close()
    res = run_program("broker", "--config", str(cfg.path))
    assert res.returncode == ExitCode.STORAGE, res.stderr
    assert f"schema version {S.SCHEMA_VERSION + 1}" in res.stderr and "Traceback" not in res.stderr


def test_a_corrupt_sim_log_exits_storage(tmp_path):
    cfg = load_config(write_config(tmp_path, accounts={"quick-sim": ["standard"]}))
    log = cfg.data_dir / "sim" / "quick-sim" / "requests.jsonl"
    log.parent.mkdir(parents=True)
    log.write_text("not json\n{}\n")   # a bad line before the last one: corruption, never skipped
    res = run_program("backend", "--account", "quick-sim", "--config", str(cfg.path))
    assert res.returncode == ExitCode.STORAGE, res.stderr
    assert "backend-quick-sim cannot run:" in res.stderr and "requests.jsonl:1" in res.stderr
