"""The whole process tree under a real supervisord, operated with fanoctl as a user would."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from ops.chaos import Tree
from tests.support import REPO, short_tmpdir, wait_for

pytestmark = pytest.mark.integration

CONFIG = """
[paths]
run_dir = "{root}/run"
data_dir = "{root}/data"
log_dir = "{root}/var/log"

[accounts.quick-sim]
backend = "sim"
modes = ["standard"]
seed = 1
latency = {{ standard = {{ dist = "fixed", value = 0.2 }} }}

[accounts.deep-sim]
backend = "sim"
modes = ["standard", "deep"]
seed = 2
latency = {{ standard = {{ dist = "fixed", value = 0.2 }}, deep = {{ dist = "fixed", value = 0.5 }} }}

[quotas.deep-sim.deep]
windows = ["1/day@00:00 UTC"]
"""


@pytest.fixture(scope="module")
def tree():
    root = short_tmpdir("ft")
    cfg = root / "fano.toml"
    cfg.write_text(CONFIG.format(root=root))
    t = Tree(root, cfg, scale=1.0)
    t.start()
    yield t
    orphans = t.stop()
    shutil.rmtree(root, ignore_errors=True)
    assert orphans == []


def fanoctl(tree, *args, timeout=60):
    env = dict(os.environ, FANO_CONFIG=str(tree.config.path))
    return subprocess.run([sys.executable, "-m", "cli.fanoctl", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_ask_waits_and_prints_the_answer(tree):
    res = fanoctl(tree, "ask", "hello", "--wait")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("sim answer to: hello")


def test_ask_deep_on_a_named_backend(tree):
    res = fanoctl(tree, "--json", "ask", "deep thought", "--deep", "--backend", "deep-sim", "--wait")
    assert res.returncode == 0, res.stderr
    task = json.loads(res.stdout)
    assert task["state"] == "DONE" and task["result"]["meta"]["model"] == "sim-deep"


def test_queue_why_explains_a_task_waiting_for_deep_quota(tree):
    # the deep quota of deep-sim is 1/day: the first deep ask (previous test or this one) uses it up
    fanoctl(tree, "ask", "use the quota", "--deep", "--backend", "deep-sim", "--max-wait", "20", "--wait")
    res = fanoctl(tree, "--json", "ask", "one more deep", "--deep", "--backend", "deep-sim")
    tid = json.loads(res.stdout)["task"]["id"]

    def why():
        out = fanoctl(tree, "queue", "why", str(tid))
        return out.stdout if "quota" in out.stdout else None
    text = wait_for(why, 20, interval=0.5, what="a why that names the quota")
    assert "deep" in text and "deep-sim" in text
    assert fanoctl(tree, "queue", "cancel", str(tid)).returncode == 0


def test_backends_ls_pause_resume(tree):
    res = fanoctl(tree, "--json", "backends", "ls")
    rows = {b["account"]: b for b in json.loads(res.stdout)["backends"]}
    assert set(rows) >= {"quick-sim", "deep-sim"}
    assert rows["quick-sim"]["state"] in ("idle", "busy")
    assert fanoctl(tree, "backends", "pause", "quick-sim", "--reason", "maintenance").returncode == 0
    rows = {b["account"]: b for b in json.loads(fanoctl(tree, "--json", "backends", "ls").stdout)["backends"]}
    assert rows["quick-sim"]["paused"] is True and rows["quick-sim"]["pause_reason"] == "maintenance"
    # while quick-sim is paused, work goes to deep-sim
    res = fanoctl(tree, "--json", "ask", "who answers", "--wait")
    assert json.loads(res.stdout)["lease"] is None
    assert fanoctl(tree, "backends", "resume", "quick-sim").returncode == 0


def test_top_once_shows_accounts_and_recent_completions(tree):
    res = fanoctl(tree, "top", "--once")
    assert res.returncode == 0, res.stderr
    assert "quick-sim" in res.stdout and "recent completions" in res.stdout


def test_kill_9_of_every_program_is_survived(tree):
    for name in ("broker", "scheduler", "backend-quick-sim", "backend-deep-sim"):
        before = {p["name"]: p["pid"] for p in tree.programs()}[name]
        tree.kill(name)
        wait_for(lambda: {p["name"]: (p["pid"], p["statename"]) for p in tree.programs()}[name][1] == "RUNNING"
                 and {p["name"]: p["pid"] for p in tree.programs()}[name] != before, 20,
                 what=f"{name} to be restarted")
    res = fanoctl(tree, "ask", "still there?", "--wait", timeout=90)
    assert res.returncode == 0 and res.stdout.startswith("sim answer to: still there?"), res.stderr
