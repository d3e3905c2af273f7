"""The whole process tree under a real supervisord, operated with fanoctl as a user would."""
import json
import re

import pytest

from tests.support import run_fanoctl, running_tree, wait_for

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
latency = { standard = { dist = "fixed", value = 0.2 }, deep = { dist = "fixed", value = 0.5 } }

[quotas.deep-sim.deep]
windows = ["1/day@00:00 UTC"]
"""


@pytest.fixture(scope="module")
def tree():
    with running_tree("ft", ACCOUNTS) as t:
        yield t


def test_ask_waits_and_prints_the_answer(tree):
    res = run_fanoctl(tree, "ask", "hello", "--wait")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("sim answer to: hello")


def test_ask_deep_on_a_named_backend(tree):
    res = run_fanoctl(tree, "--json", "ask", "deep thought", "--deep", "--backend", "deep-sim", "--wait")
    assert res.returncode == 0, res.stderr
    task = json.loads(res.stdout)
    assert task["state"] == "DONE" and task["result"]["meta"]["model"] == "sim-deep"


def test_queue_why_explains_a_task_waiting_for_deep_quota(tree):
    # the deep quota of deep-sim is 1/day: the first deep ask (previous test or this one) uses it up
    run_fanoctl(tree, "ask", "use the quota", "--deep", "--backend", "deep-sim", "--max-wait", "20", "--wait")
    res = run_fanoctl(tree, "--json", "ask", "one more deep", "--deep", "--backend", "deep-sim")
    tid = json.loads(res.stdout)["task"]["id"]

    def why():
        out = run_fanoctl(tree, "queue", "why", str(tid))
        return out.stdout if "quota" in out.stdout else None
    text = wait_for(why, 20, interval=0.5, what="a why that names the quota")
    assert "deep" in text and "deep-sim" in text
    # `ask --wait` shows the same reason as its progress line while it waits, and gives up when told to
    res = run_fanoctl(tree, "ask", "x", "--deep", "--backend", "deep-sim", "--key", "same", "--wait", "--max-wait", "5")
    assert res.returncode == 1 and "still PENDING after 5s (it stays queued)" in res.stderr
    assert "quota" in res.stderr and "deep-sim" in res.stderr        # the progress line said why
    waiting = re.search(r"task (\d+) still PENDING", res.stderr).group(1)
    assert run_fanoctl(tree, "queue", "cancel", waiting).returncode == 0
    assert run_fanoctl(tree, "queue", "cancel", str(tid)).returncode == 0


def test_backends_ls_pause_resume(tree):
    res = run_fanoctl(tree, "--json", "backends", "ls")
    rows = {b["account"]: b for b in json.loads(res.stdout)["backends"]}
    assert set(rows) >= {"quick-sim", "deep-sim"}
    assert rows["quick-sim"]["state"] in ("idle", "busy")
    assert run_fanoctl(tree, "backends", "pause", "quick-sim", "--reason", "maintenance").returncode == 0
    rows = {b["account"]: b for b in json.loads(run_fanoctl(tree, "--json", "backends", "ls").stdout)["backends"]}
    assert rows["quick-sim"]["paused"] is True and rows["quick-sim"]["pause_reason"] == "maintenance"
    # while quick-sim is paused, work goes to deep-sim
    res = run_fanoctl(tree, "--json", "ask", "who answers", "--wait")
    assert json.loads(res.stdout)["lease"] is None
    assert run_fanoctl(tree, "backends", "resume", "quick-sim").returncode == 0


def test_top_once_shows_accounts_and_recent_completions(tree):
    res = run_fanoctl(tree, "top", "--once")
    assert res.returncode == 0, res.stderr
    assert "quick-sim" in res.stdout and "recent completions" in res.stdout
    assert "research:" in res.stdout and " sections" in res.stdout   # the research panel (zeros here)


def test_kill_9_of_every_program_is_survived(tree):
    for name in ("broker", "scheduler", "backend-quick-sim", "backend-deep-sim"):
        before = {p["name"]: p["pid"] for p in tree.programs()}[name]
        tree.kill(name)
        wait_for(lambda name=name, before=before:
                 {p["name"]: (p["pid"], p["statename"]) for p in tree.programs()}[name][1] == "RUNNING"
                 and {p["name"]: p["pid"] for p in tree.programs()}[name] != before, 20,
                 what=f"{name} to be restarted")
    res = run_fanoctl(tree, "ask", "still there?", "--wait", timeout=90)
    assert res.returncode == 0 and res.stdout.startswith("sim answer to: still there?"), res.stderr
