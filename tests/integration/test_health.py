"""``fanoctl health`` and the idle line of ``fanoctl status`` on the whole tree under a real supervisord."""
import json
import shutil
import time

import pytest

from shared.client import BrokerClient
from tests.support import run_fanoctl, running_tree, short_tmpdir, wait_for, write_config

pytestmark = pytest.mark.integration

ACCOUNTS = """
[accounts.quick-sim]
backend = "sim"
modes = ["standard"]
seed = 1
latency = { standard = { dist = "fixed", value = 0.2 } }

[accounts.deep-sim]
backend = "sim"
modes = ["standard", "deep"]
seed = 2
latency = { standard = { dist = "fixed", value = 0.2 }, deep = { dist = "fixed", value = 0.2 } }

[quotas.deep-sim.deep]
windows = ["1/day@00:00 UTC"]
"""


@pytest.fixture(scope="module")
def tree():
    with running_tree("fh", ACCOUNTS) as t:
        yield t


def health(tree, *args):
    res = run_fanoctl(tree, "--json", "health", *args)
    assert res.stderr == "", res.stderr
    report = json.loads(res.stdout)
    assert res.returncode == report["exit"] == {"ok": 0, "degraded": 1, "down": 2}[report["status"]]
    return report


def failing(report) -> dict:
    return {c["check"]: c["line"] for c in report["checks"] if c["status"] != "ok"}


def broker_client(tree) -> BrokerClient:
    return BrokerClient(tree.config.broker_endpoint, name="test", timeout=2.0, retries=3)


def wait_ok(tree) -> dict:
    """The tree's programs are RUNNING before the scheduler answers: wait for a clean bill of health."""
    last = {}

    def ok():
        last["report"] = health(tree)
        return last["report"] if last["report"]["status"] == "ok" else None
    try:
        return wait_for(ok, 30, interval=0.5, what="health ok")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; still failing: {failing(last['report'])}") from None


def test_a_quiet_tree_is_ok(tree):
    report = wait_ok(tree)
    assert report["programs"]["supervisord"] == "running" and report["programs"]["not_running"] == []
    assert report["idle"] == [] and report["parked"] == {"count": 0, "sample": []}
    assert report["storage"]["map_size"] > 0 and report["storage"]["source"] in ("storage", "map")
    text = run_fanoctl(tree, "health")
    assert text.returncode == 0 and text.stdout.startswith("health: OK (exit 0)")


def test_an_account_idle_while_work_waits_for_an_exhausted_one(tree):
    """deep-sim's deep quota (1/day) is used up; a second deep task for it waits, and quick-sim sits idle."""
    used = run_fanoctl(tree, "ask", "use the quota", "--deep", "--backend", "deep-sim", "--wait", "--max-wait", "30")
    assert used.returncode == 0, used.stderr
    res = run_fanoctl(tree, "--json", "ask", "waits for tomorrow", "--deep", "--backend", "deep-sim")
    tid = json.loads(res.stdout)["task"]["id"]
    try:
        def idle_quick():
            rows = {r["account"]: r for r in (health(tree, "--idle-after", "1h")["idle"] or [])}
            return rows.get("quick-sim")
        row = wait_for(idle_quick, 30, interval=0.5, what="quick-sim idle while work waits")
        assert "deep-sim" not in {r["account"] for r in health(tree)["idle"]}   # its own quota keeps it
        assert row["waiting"] == 1 and row["groups"][0]["reason"] == "backends"
        assert row["groups"][0]["account"] == "deep-sim" and row["groups"][0]["until"] > time.time()
        assert row["line"].startswith("account quick-sim idle while 1 task waits (only deep-sim may run them: "
                                      "deep quota for adhoc blocked until ")
        # under the threshold it is reported but ok; over it, degraded
        report = health(tree, "--idle-after", "1h")
        assert report["status"] == "ok" and any(c["check"] == "idle" and "quick-sim" in c["line"]
                                                for c in report["checks"])
        report = health(tree, "--idle-after", "0s")
        assert report["status"] == "degraded" and "quick-sim idle while 1 task waits" in failing(report)["idle"]
        # the exhausted window is reported with its reset time, and does not degrade anything
        assert [(e["account"], e["mode"], e["used"], e["limit"]) for e in report["exhausted"]] == [
            ("deep-sim", "deep", 1, 1)]
        assert report["exhausted"][0]["resets_at"] > report["now"]
        # fanoctl status says the same
        status = run_fanoctl(tree, "status")
        assert "account quick-sim idle while 1 task waits (only deep-sim may run them: deep quota" in status.stdout
        rows = json.loads(run_fanoctl(tree, "--json", "status").stdout)["idle"]
        assert [r["account"] for r in rows] == ["quick-sim"]
        # and so does the live view
        assert "account quick-sim idle while 1 task waits" in run_fanoctl(tree, "top", "--once").stdout
        frame = json.loads(run_fanoctl(tree, "--json", "top", "--once").stdout)
        assert [r["account"] for r in frame["idle"]] == ["quick-sim"]
    finally:
        assert run_fanoctl(tree, "queue", "cancel", str(tid)).returncode == 0
    wait_for(lambda: health(tree, "--idle-after", "0s")["idle"] == [], 20, interval=0.5, what="no idle account")


def test_a_parked_task_degrades_until_it_is_cancelled(tree):
    with broker_client(tree) as c:
        # bound to quick-sim in deep mode, which its worker does not offer: only this test's lease takes it
        # (an account the tree does not have is refused by the broker)
        tid = c.submit("health:park-me", "adhoc", "ask", {"prompt": "x"},
                       requires={"account": "quick-sim", "mode": "deep"})["task"]["id"]
        lease = c.lease("test-worker", "quick-sim", modes=["deep"])
        assert lease["task"]["id"] == tid
        c.fail(tid, lease["task"]["epoch"], "terminal", "boom: a deterministic failure")
    report = health(tree)
    assert report["status"] == "degraded" and report["parked"]["count"] == 1
    assert report["parked"]["sample"] == [{"id": tid, "module": "adhoc", "kind": "ask",
                                           "error": "boom: a deterministic failure"}]
    assert f"1 parked task(s) (e.g. {tid})" in failing(report)["parked"]
    assert run_fanoctl(tree, "queue", "cancel", str(tid)).returncode == 0
    assert health(tree)["parked"]["count"] == 0


def test_a_paused_account_degrades(tree):
    assert run_fanoctl(tree, "backends", "pause", "quick-sim", "--reason", "auth: sign in again").returncode == 0
    try:
        report = health(tree)
        assert report["status"] == "degraded" and report["paused"] == [
            {"account": "quick-sim", "reason": "auth: sign in again"}]
        assert "account quick-sim paused (auth: sign in again)" in failing(report)["accounts"]
    finally:
        assert run_fanoctl(tree, "backends", "resume", "quick-sim").returncode == 0


def test_a_stopped_module_degrades_and_a_stopped_scheduler_is_down(tree):
    rpc = tree.rpc()
    rpc.supervisor.stopProcess("module-advisor")
    try:
        report = health(tree)
        assert report["status"] == "degraded"
        assert report["programs"]["not_running"] == [
            {"name": "module-advisor", "state": "STOPPED", "description": report["programs"]["not_running"][0]
             ["description"]}]
        assert failing(report)["programs"].startswith("not RUNNING: module-advisor STOPPED")
        rpc.supervisor.stopProcess("scheduler")
        try:
            report = health(tree)
            assert report["status"] == "down" and report["exit"] == 2
            bad = failing(report)
            assert "scheduler STOPPED" in bad["programs"] and "scheduler not answering" in bad["scheduler"]
            text = run_fanoctl(tree, "health")
            assert text.returncode == 2 and text.stdout.startswith("health: DOWN (exit 2)")
            assert "  DOWN      scheduler  scheduler not answering" in text.stdout
        finally:
            rpc.supervisor.startProcess("scheduler")
    finally:
        rpc.supervisor.startProcess("module-advisor")
    wait_ok(tree)


def test_nothing_running_is_down_and_says_what():
    root = short_tmpdir("fhd")
    try:
        cfg = write_config(root)
        start = time.monotonic()
        res = run_fanoctl(cfg, "--timeout", "0.3", "--json", "health")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert res.returncode == 2 and time.monotonic() - start < 15
    report = json.loads(res.stdout)
    assert report["status"] == "down" and report["storage"] is None and report["idle"] is None
    bad = failing(report)
    assert set(bad) == {"programs", "broker", "scheduler"}
    assert bad["programs"].startswith("supervisord not running")
    assert bad["broker"].startswith("broker not answering at ipc://")


def test_a_fatal_program_degrades(tree):
    """A program that cannot start ends FATAL under supervisord (here one that exits at once, no retries).
    ``startsecs`` is long: under load supervisord may look at a child only after a second, and a program
    that "ran" for ``startsecs`` counts as started, then EXITED, not FATAL."""
    (tree.root / "var/supervisor/zz-broken.conf").write_text(
        "[program:backend-broken]\ncommand=/bin/false\nautostart=false\nautorestart=false\nstartsecs=30\n"
        "startretries=0\n")
    wait_ok(tree)
    rpc = tree.rpc()
    rpc.supervisor.reloadConfig()
    rpc.supervisor.addProcessGroup("backend-broken")
    try:
        try:
            rpc.supervisor.startProcess("backend-broken")
        except Exception:   # the start itself is refused (SPAWN_ERROR/ABNORMAL_TERMINATION): it is FATAL now
            pass
        wait_for(lambda: tree.rpc().supervisor.getProcessInfo("backend-broken")["statename"] == "FATAL", 20,
                 interval=0.2, what="backend-broken FATAL")
        report = health(tree)
        assert report["status"] == "degraded"
        assert [(b["name"], b["state"]) for b in report["programs"]["not_running"]] == [("backend-broken", "FATAL")]
        assert failing(report)["programs"].startswith("not RUNNING: backend-broken FATAL")
    finally:
        rpc.supervisor.removeProcessGroup("backend-broken")
        (tree.root / "var/supervisor/zz-broken.conf").unlink()
    assert health(tree)["programs"]["not_running"] == []
