"""The explorer as a process among real ones: broker, scheduler, three sim backend workers (zero latency)
and ``python -m services explorer``, seeded with ``fanoctl seeds import seeds/demo.toml``.

* from the demo seeds to blessed insights, read back with ``fanoctl insights``;
* ``kill -9`` of the module mid-flow, several times: afterwards every settled task is applied exactly
  once (no insight, review step or thread turn lost or applied twice; exchanges == usable DONE turns).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time

import pytest

from services.modules.explorer import model as M
from shared.client import BrokerClient
from tests.support import REPO, BrokerProcess, ServiceProcess, short_tmpdir, wait_for
from tests.unit.test_explorer_flow import check_applied_once

pytestmark = pytest.mark.integration

ACCOUNTS = ("alpha", "beta", "gamma")

CONFIG = """
[paths]
run_dir = "{root}/run"
data_dir = "{root}/data"
log_dir = "{root}/log"

[broker]
backoff_base = 0.2
backoff_max = 2.0
lease_ttl = 5.0

[scheduler]
lease_ttl = 5.0
assign_timeout = 3.0

[modules.explorer]
max_active_threads = 2
threads_per_account = 0   # a fixed thread count (load.py scales it with the accounts)
repair_interval = 2.0
"""

# the same seed on every account: the simulated reviewers then share each insight's latent quality
ACCOUNT = """
[accounts.{name}]
backend = "sim"
modes = ["standard", "deep"]
seed = 11
latency = "zero"
sloppy_rate = 0.3
garbage_rate = {garbage}
reviews = {{ good = 0.5, bad = 0.2, agree = 0.85, persuade = 0.4 }}
"""


class Stack:
    def __init__(self, garbage: float = 0.0):
        self.root = short_tmpdir("fe")
        self.cfg = self.root / "fano.toml"
        self.cfg.write_text(CONFIG.format(root=self.root)
                            + "".join(ACCOUNT.format(name=n, garbage=garbage) for n in ACCOUNTS))
        self.broker = BrokerProcess(self.root, self.cfg)
        self.scheduler = ServiceProcess(self.root, self.cfg, ["scheduler"], "scheduler.log")
        self.workers = [ServiceProcess(self.root, self.cfg, ["backend", "--account", n], f"backend-{n}.log")
                        for n in ACCOUNTS]
        self.explorer = ServiceProcess(self.root, self.cfg, ["explorer"], "explorer.log")
        self._client: BrokerClient | None = None

    @property
    def client(self) -> BrokerClient:
        assert self._client is not None, "the stack is not started"
        return self._client

    def start(self) -> Stack:
        self.broker.start()
        self._client = self.broker.client(timeout=5.0)
        res = self.fanoctl("seeds", "import", str(REPO / "seeds" / "demo.toml"))
        assert res.returncode == 0, res.stderr
        for p in (self.scheduler, *self.workers, self.explorer):
            p.spawn()
        return self

    def fanoctl(self, *args):
        env = dict(os.environ, FANO_CONFIG=str(self.cfg))
        return subprocess.run([sys.executable, "-m", "cli", *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=60)

    def values(self, prefix: str) -> list:
        return [value for _, _, value in self.client.kv_items(M.MODULE, prefix)]

    def tasks(self) -> list:
        out, after = [], None
        while True:
            page = self.client.list(module=M.MODULE, after=after, limit=1000, payloads=True)
            out += page["tasks"]
            after = page["next"]
            if not after:
                return out

    def blessed(self) -> list:
        return [i for i in self.values("insights/") if i["status"] == "blessed"]

    def logs(self) -> str:
        return "\n".join(f"--- {p.log_path.name} ---\n{p.log(3000)}" for p in (self.explorer, self.scheduler))

    def close(self) -> None:
        for p in (self.explorer, *self.workers, self.scheduler):
            p.kill()
        if self._client is not None:
            self._client.close()
        self.broker.kill()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def make_stack():
    made = []

    def factory(**kw):
        s = Stack(**kw)
        made.append(s)
        return s.start()
    yield factory
    for s in made:
        s.close()


def test_demo_seeds_to_blessed_insights(make_stack):
    s = make_stack()
    try:
        wait_for(lambda: len(s.blessed()) >= 2, 60, interval=0.3, what="two blessed insights")
    except AssertionError:
        raise AssertionError(s.logs()) from None
    res = s.fanoctl("--json", "insights", "ls", "--status", "blessed")
    assert res.returncode == 0, res.stderr
    blessed = json.loads(res.stdout)["insights"]
    assert blessed and all(i["status"] == "blessed" and i["decided_by"] == "panel" for i in blessed)
    shown = s.fanoctl("insights", "show", blessed[0]["id"])
    assert shown.returncode == 0 and "round 1" in shown.stdout and "outcome: ⚡ blessed" in shown.stdout
    # critiques ran on another account than the thread's explorer
    for thread in s.values("threads/"):
        for e in s.values(f"exchanges/{thread['id']}/"):
            assert e["backend"] in ACCOUNTS
            if e["role"] == "critique":
                assert e["backend"] != thread["explore_account"]
    assert s.explorer.alive(), s.explorer.log()


def test_kill_9_of_the_module_loses_and_repeats_nothing(make_stack):
    s = make_stack(garbage=0.03)
    rng = random.Random(5)
    kills = busy = 0

    def has_work() -> bool:    # results waiting to be applied, or tasks on their way to becoming results
        return bool(s.client.unconsumed(M.MODULE, limit=1)["tasks"]) or any(
            s.client.list(module=M.MODULE, state=state, limit=1)["tasks"] for state in ("PENDING", "RUNNING"))

    def up() -> bool:          # the restarted process got through its start (it logs one line per start)
        return s.explorer.log(10**7).count("module-explorer started") >= s.explorer.starts
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (kills < 8 or len(s.blessed()) < 2):
        wait_for(up, 20, interval=0.05, what="the module to start again")
        time.sleep(rng.uniform(0.05, 0.4))
        busy += has_work()
        s.explorer.kill()          # kill -9, at whatever it was doing
        kills += 1
        s.explorer.spawn()
    assert kills >= 8 and len(s.blessed()) >= 2, s.logs()
    assert busy >= kills - 2, f"only {busy} of {kills} kills hit the module while it had work"
    # stop the work, let the module apply everything that settled, then check
    for p in (s.scheduler, *s.workers):
        p.kill()

    def drained():
        return not s.client.unconsumed(M.MODULE, limit=10)["tasks"]
    try:
        wait_for(drained, 30, interval=0.3, what="the module to apply every settled result")
    except AssertionError:
        raise AssertionError(s.logs()) from None
    s.explorer.kill()
    tasks = s.tasks()
    check_applied_once(s.values, tasks)
    assert s.explorer.starts == kills + 1
    reviewed = [rv for rv in s.values("reviews/") if rv["stage"] == "done"]
    assert reviewed and sum(len(rd["responses"]) for rv in reviewed
                            for rd in rv["rounds"].values()) >= 3 * len(reviewed)


def test_seed_priority_reaches_the_queued_explore_task():
    """No workers: the explore task stays PENDING. After ``seeds priority`` the running module re-ranks it;
    ``queue ls`` shows the new base and the scheduler's ``queue why`` counts the new seed priority."""
    s = Stack()
    s.workers = []
    try:
        s.start()

        def explore_task():
            tasks = [t for t in s.client.list(module=M.MODULE, state="PENDING", limit=100,
                                                 payloads=True)["tasks"]
                     if t["kind"] == M.EXPLORE]
            return tasks[0] if tasks else None
        task = wait_for(explore_task, 30, interval=0.2, what="a pending explore task")
        thread_key = M.thread_key(task["payload"]["thread_id"])
        seed_id = s.client.kv_get(M.MODULE, thread_key)["value"]["seed_id"]
        old = task["attrs"]["seed_priority"]
        new = 10 if old != 10 else 1
        res = s.fanoctl("seeds", "priority", seed_id, str(new))
        assert res.returncode == 0, res.stderr

        def reranked():
            res = s.fanoctl("--json", "queue", "ls", "--state", "PENDING", "--module", M.MODULE)
            mine = [t for t in json.loads(res.stdout)["tasks"] if t["id"] == task["id"]]
            return mine and mine[0]["priority"] == 50 + 10 * (new - old)
        wait_for(reranked, 20, interval=0.3, what="the explore task re-ranked")

        def why():
            res = s.fanoctl("--json", "queue", "why", str(task["id"]))
            terms = (json.loads(res.stdout).get("scheduler") or {}).get("terms")
            return terms if terms and terms["base"] + terms["seed"] == 50 + 10 * new else None
        terms = wait_for(why, 20, interval=0.3, what="the scheduler to count the new seed priority")
        assert terms["seed"] == 10 * old    # attrs as submitted; the base makes up the difference
        assert s.client.kv_get(M.MODULE, thread_key)["value"]["queued_priority"] == new
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{s.logs()}") from None
    finally:
        s.close()
