"""cli/app.py's shared helpers: where the scheduler is (from the configuration, beside the broker's
endpoint, never derived from ``--broker``) and ``backends ls`` saying why configured accounts are
missing when the configuration does not load (the real broker core in-process behind the client)."""
from __future__ import annotations

import json
import time
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.app import Ctl
from cli.fanoctl import main
from tests.support import write_config
from tests.unit.corehelp import CoreClient, CoreHarness


def test_the_scheduler_endpoint_comes_from_the_configuration(tmp_path, monkeypatch):
    monkeypatch.delenv("FANO_SCHEDULER", raising=False)
    path = write_config(tmp_path)
    # --broker names another directory: the scheduler is still the configuration's
    c = Ctl(str(path), "ipc:///elsewhere/broker.sock", 1.0, False)
    assert c.scheduler_endpoint() == f"ipc://{tmp_path}/run/scheduler.sock"
    monkeypatch.setenv("FANO_SCHEDULER", "tcp://127.0.0.1:1")
    assert Ctl(str(path), None, 1.0, False).scheduler_endpoint() == "tcp://127.0.0.1:1"
    assert Ctl(str(path), None, 1.0, False, "ipc:///x/s.sock").scheduler_endpoint() == "ipc:///x/s.sock"


def test_a_missing_configuration_leaves_the_scheduler_unknown_and_says_so(tmp_path):
    res = CliRunner().invoke(main, ["--config", str(tmp_path / "nope.toml"), "--broker", "ipc:///nowhere/b.sock",
                                    "modules", "weights"], catch_exceptions=False)
    assert res.exit_code == 5 and "config file not found" in res.stderr


@pytest.fixture
def harness(tmp_path, monkeypatch):
    path = write_config(tmp_path, accounts={"alpha": ["standard"], "beta": ["standard"]})
    h = CoreHarness(tmp_path, path)
    monkeypatch.setattr(Ctl, "client", lambda self: CoreClient(h))
    yield h
    h.close()


def test_backends_ls_lists_the_configured_accounts(harness):
    res = CliRunner().invoke(main, ["--config", str(harness.config_path), "--json", "backends", "ls"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert [b["account"] for b in d["backends"]] == ["alpha", "beta"] and d["config_problem"] is None
    assert res.stderr == ""


def test_backends_ls_says_why_configured_accounts_are_missing(harness):
    broken = Path(harness.config_path)
    broken.write_text(broken.read_text() + "\n[nosuch]\n")
    res = CliRunner().invoke(main, ["--config", str(broken), "--json", "backends", "ls"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    # the broker's accounts are still listed; an account only the file has would be missing: it says so
    assert [b["account"] for b in d["backends"]] == ["alpha", "beta"] and "nosuch" in d["config_problem"]
    assert "only the accounts the broker and the scheduler know are listed" in res.stderr


def test_modules_advice_says_when_the_advisors_settings_cannot_be_read(harness):
    broken = Path(harness.config_path)
    broken.write_text(broken.read_text() + "\n[nosuch]\n")
    res = CliRunner().invoke(main, ["--config", str(broken), "--json", "modules", "advice"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["proposals"] == [] and d["enabled"] is None
    assert "the advisor's settings cannot be read" in res.stderr and "nosuch" in res.stderr


def test_top_says_a_problem_once_not_every_frame(harness, monkeypatch):
    from cli import work
    broken = Path(harness.config_path)
    broken.write_text(broken.read_text() + "\n[nosuch]\n")
    frames = []

    def sleep(_seconds):
        frames.append(1)
        if len(frames) >= 3:
            raise KeyboardInterrupt
    monkeypatch.setattr(work, "time", types.SimpleNamespace(monotonic=time.monotonic, sleep=sleep))
    res = CliRunner().invoke(main, ["--config", str(broken), "--json", "top"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert res.stdout.count('"research"') == 3                 # three frames ...
    assert res.stderr.count("only the accounts the broker and the scheduler know") == 1   # ... one warning
