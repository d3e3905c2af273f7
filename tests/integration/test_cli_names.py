"""fanoctl and names, against a real broker process configured with accounts (issue 14): unknown accounts,
backends and modules are refused with the known names and leave nothing behind; a removed account leaves
``backends ls``; a broken fano.toml does not lock fanoctl out of the running tree."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cli.fanoctl import main
from shared.config import find_endpoints
from shared.errors import ExitCode
from tests.scheduler_support import SchedulerProcess
from tests.support import BrokerProcess, short_tmpdir, write_config

pytestmark = pytest.mark.integration

ACCOUNTS = {"gem": ["standard", "deep"], "claude": ["standard"]}


@pytest.fixture
def broker():
    root = short_tmpdir("fn")
    proc = BrokerProcess(root, write_config(root, accounts=ACCOUNTS)).start()
    yield proc
    proc.cleanup()


def run(broker, *args, code: int = 0):
    result = CliRunner().invoke(main, ["--config", str(broker.config_path), *args], catch_exceptions=False)
    assert result.exit_code == code, (f"fanoctl {' '.join(args)} exited {result.exit_code}, wanted {code}\n"
                                      f"stdout: {result.stdout}\nstderr: {result.stderr}")
    return result


def accounts_listed(broker) -> list[str]:
    return [b["account"] for b in json.loads(run(broker, "--json", "backends", "ls").stdout)["backends"]]


def test_unknown_names_are_refused_with_the_known_ones_and_leave_nothing(broker):
    known = "(known: claude, gem)"
    for args in (["backends", "pause", "nosuch"], ["backends", "resume", "nosuch"],
                 ["quota", "set", "nosuch", "deep", "5/day"], ["quota", "reset", "nosuch"],
                 ["quota", "show", "nosuch"]):
        res = run(broker, *args, code=ExitCode.FAILURE)
        assert res.stderr == f"fanoctl: BAD_ARGUMENT: unknown account 'nosuch' {known}\n", (args, res.stderr)
    assert accounts_listed(broker) == ["claude", "gem"]   # no phantom row

    res = run(broker, "ask", "hello", "--backend", "nosuch-sim", "--wait", code=ExitCode.FAILURE)
    assert "unknown account or backend 'nosuch-sim' (known: claude, gem, sim)" in res.stderr
    res = run(broker, "quota", "set", "gem", "deep", "5/day", "--reserve", "explorr=1", code=ExitCode.FAILURE)
    assert "unknown module 'explorr' (known: adhoc, advisor, documenter, explorer, researcher)" in res.stderr
    assert json.loads(run(broker, "--json", "status").stdout)["tasks"]["total"] == 0

    run(broker, "backends", "pause", "gem")
    assert json.loads(run(broker, "--json", "backends", "ls").stdout)["backends"][1]["paused"] is True


def test_a_removed_account_leaves_backends_ls(broker):
    run(broker, "backends", "pause", "claude", "--reason", "retiring it")
    run(broker, "ask", "hello", "--backend", "claude")
    broker.stop()
    write_config(broker.root, accounts={"gem": ["standard", "deep"]})   # claude removed from fano.toml
    broker.start()
    assert accounts_listed(broker) == ["gem"]
    task = json.loads(run(broker, "--json", "queue", "show", "1").stdout)
    assert task["requires"] == {"backends": ["claude"]}   # its history stays in the task records


def test_a_broken_config_does_not_lock_fanoctl_out_of_the_running_tree(broker):
    path = broker.config_path
    good = path.read_text()
    path.write_text(good + "[quotas.nosuch.deep]\nwindows = ['5/day']\n")   # loads no more
    res = run(broker, "--json", "status")
    assert json.loads(res.stdout)["tasks"]["total"] == 0
    assert res.stderr.startswith("fanoctl: warning: the configuration does not load (")
    assert "unknown account 'nosuch'" in res.stderr and str(broker.root / "run") in res.stderr
    assert accounts_listed(broker) == ["claude", "gem"]   # the broker's own view of the accounts
    run(broker, "backends", "pause", "gem")
    # a file that does not even parse: the default run directory beside it (nothing runs there)
    path.write_text("= = =\n" + good)
    assert find_endpoints(path).run_dir == broker.root / "var" / "run"
    res = run(broker, "--timeout", "0.2", "status", code=ExitCode.UNAVAILABLE)
    assert "warning: the configuration does not load" in res.stderr
    # a file that does not exist is a wrong path, not a broken configuration
    res = run(broker, "--config", str(broker.root / "nope.toml"), "status", code=ExitCode.CONFIG)
    assert "config file not found" in res.stderr


def test_weights_for_an_unknown_module_are_refused_with_the_known_ones(broker):
    sched = SchedulerProcess(broker.root, broker.config_path).start()
    try:
        res = run(broker, "modules", "weights", "--set", "explorr=5", "--set", "documenter=4", code=ExitCode.FAILURE)
        assert "unknown module 'explorr' (known: adhoc, advisor, documenter, explorer, researcher)" in res.stderr
        assert json.loads(run(broker, "--json", "modules", "weights").stdout)["weights"] == {}   # all or nothing
        run(broker, "modules", "weights", "--set", "documenter=4")
        assert json.loads(run(broker, "--json", "modules", "weights").stdout)["weights"] == {"documenter": 4.0}
    finally:
        sched.stop()


def test_a_module_name_the_tree_does_not_have_is_flagged_where_tasks_are_listed_or_submitted(broker):
    """`queue ls --module explorr` answered "no tasks" as if the module were idle. A raw task may carry any
    module name (scripts and tests submit their own), so the command still runs, with a warning naming the
    known modules."""
    known = "unknown module 'explorr' (known: adhoc, advisor, documenter, explorer, researcher)"
    res = run(broker, "queue", "ls", "--module", "explorr")
    assert f"fanoctl: warning: {known}" in res.stderr and "no tasks" in res.stdout
    res = run(broker, "submit", "--key", "k1", "--module", "explorr", "--kind", "x.y")
    assert f"fanoctl: warning: {known}" in res.stderr and "created" in res.stdout
    assert "warning" not in run(broker, "queue", "ls", "--module", "explorer").stderr
