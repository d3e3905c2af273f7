"""The advisor as a process on a sim account: out-of-balance backlogs get a weights proposal that is
applied (auto_apply) through the scheduler; a user's override stands; the advisor's requests stay within
5% of all requests; off by default it proposes nothing; fanoctl shows what it proposed."""
import json
import shutil
import time

import pytest
from click.testing import CliRunner

from cli.fanoctl import main as fanoctl
from services.modules.advisor import logic as L
from services.modules.advisor.service import AdvisorService
from shared.clock import Clock
from shared.config import load_config
from tests.scheduler_support import SchedulerProcess
from tests.support import BrokerProcess, ServiceProcess, short_tmpdir, wait_for, write_config

pytestmark = pytest.mark.integration

FAR = 4_000_000_000.0   # not_before: these tasks stay PENDING (a backlog) and never run


class Stack:
    def __init__(self, advisor: dict):
        self.procs: list = []
        self.client = None
        self.root = short_tmpdir("fv")
        self.cfg = write_config(self.root, broker={"lease_ttl": 5.0},
                                scheduler={"lease_ttl": 5.0, "assign_timeout": 3.0},
                                accounts={"sim-a": {"backend": "sim", "modes": ["standard"], "seed": 4,
                                                    "latency": {"dist": "fixed", "value": 0.1}}})
        with open(self.cfg, "a") as f:
            f.write("[modules.advisor]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in advisor.items()))

    def start(self):
        self.broker = BrokerProcess(self.root, self.cfg)
        self.procs.append(self.broker)       # registered before it starts: stopped at teardown whatever happens
        self.broker.start()
        self.scheduler = SchedulerProcess(self.root, self.cfg)
        self.procs.append(self.scheduler)
        self.scheduler.start()
        self.client = self.broker.client()

    def spawn(self, *args, log):
        proc = ServiceProcess(self.root, self.cfg, list(args), log)
        proc.spawn()
        self.procs.append(proc)
        return proc

    def backlog(self, module, n, start=0):
        for i in range(start, start + n):
            self.client.submit(f"{module}/{i}", module, "ask", {"prompt": f"work {i}"}, not_before=FAR)

    def state(self):
        return self.client.kv_get("advisor", "state") or {}

    def proposals(self):
        return [i["value"] for i in self.client.kv_scan("advisor", prefix="proposals/", limit=100)["items"]]

    def advisor_tasks(self):
        return self.client.list(module="advisor", limit=1000, payloads=True)["tasks"]

    def fanoctl(self, *args):
        res = CliRunner().invoke(fanoctl, ["--config", str(self.cfg), *args], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        return res.output

    def close(self):
        if self.client is not None:
            self.client.close()
        for proc in reversed(self.procs):
            proc.kill()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def make_stack():
    stacks = []

    def make(**advisor):
        s = Stack(advisor)
        stacks.append(s)
        s.start()
        return s
    yield make
    for s in stacks:
        s.close()


def test_proposals_are_applied_and_requests_stay_within_five_percent(make_stack):
    stack = make_stack(enabled=True, auto_apply=True, interval=0.5, min_backlog=5, imbalance_ratio=3.0,
                       sample_interval=1.0)
    stack.backlog("explorer", 57)
    stack.backlog("documenter", 2)
    worker = stack.spawn("backend", "--account", "sim-a", log="worker.log")
    advisor = stack.spawn("advisor", log="advisor.log")

    def first():
        recs = [p for p in stack.proposals() if p["seq"] == 1 and p["status"] != "to_apply"]
        return recs[0] if recs else None
    rec = wait_for(first, 40, interval=0.2, what="a first proposal applied\n" + advisor.log() + worker.log())
    assert rec["status"] == "applied", rec
    assert "explorer has 57" in rec["reason"] and rec["backlogs"]["documenter"] == 2
    assert set(rec["weights"]) == {"explorer", "documenter", "researcher"} and rec["reasoning"]
    assert rec["previous"] == {"explorer": 0.0, "documenter": 0.0, "researcher": 0.0}

    # with 59 other tasks the advisor may make 3 requests (3 of 62 <= 5%), and then it stops asking
    def bounded():
        st = stack.state().get("value") or {}
        return not st.get("pending") and "rate bound" in ((st.get("last_check") or {}).get("skipped") or "")
    wait_for(bounded, 40, interval=0.2, what="the rate bound to stop the advisor\n" + advisor.log())
    assert len(stack.advisor_tasks()) == 3
    wait_for(lambda: all(p["status"] == "applied" for p in stack.proposals()), 20, interval=0.2,
             what="every proposal applied\n" + advisor.log())
    last = stack.proposals()[-1]
    assert last["seq"] == 3 and stack.scheduler.query("weights")["weights"] == pytest.approx(last["weights"])
    out = stack.fanoctl("modules", "weights")
    assert "advisor: on, auto_apply on" in out and "advice #3" in out and "[applied]" in out
    # more traffic elsewhere makes room for exactly one more (4 of 82)
    stack.backlog("explorer", 19, start=57)
    wait_for(lambda: len(stack.advisor_tasks()) == 4 and bounded(), 40, interval=0.2,
             what="a fourth request\n" + advisor.log())
    time.sleep(1.5)   # several more looks (interval 0.5 s): still no fifth request
    mine_n, total = L.request_counts(stack.client.stats())
    assert mine_n == 4 and mine_n <= 0.05 * total, (mine_n, total)
    assert not stack.client.kv_scan("advisor", prefix="errors/")["items"]
    assert "advice #4" in stack.fanoctl("modules", "advice")
    assert advisor.stop() == 0


def in_process(stack, **settings):
    from services.modules.advisor.settings import Settings
    service = AdvisorService(load_config(stack.cfg), Clock())
    service.initialize()
    service.settings = Settings(**settings)
    return service


def settle(stack, service):
    """Wait for the advisor's task in flight and apply it, as the program does on its event."""
    key = (stack.state().get("value") or {}).get("key")
    [task] = [t for t in stack.advisor_tasks() if t["key"] == key]
    done = wait_for(lambda: (lambda t: t if t["state"] == "DONE"
                             else None)(stack.client.get(task["id"], history=False)),
                    30, interval=0.1, what=f"advisor task {task['id']} done")
    assert service.apply(done)


def test_a_users_override_stands_and_is_shown(make_stack):
    stack = make_stack(enabled=True, auto_apply=True)
    stack.backlog("explorer", 80)
    stack.backlog("documenter", 3)
    stack.spawn("backend", "--account", "sim-a", log="worker.log")
    service = in_process(stack, enabled=True, auto_apply=True, interval=0.0, min_backlog=5)
    try:
        service.plan()
        settle(stack, service)
        service.plan()                              # applies proposal 1 (and asks again: interval 0)
        [p1] = [p for p in stack.proposals() if p["seq"] == 1]
        assert p1["status"] == "applied" and stack.scheduler.query("weights")["weights"] == pytest.approx(p1["weights"])
        mine = {"explorer": 0.0, "documenter": 7.0, "researcher": 0.0}
        stack.scheduler.query("weights", set=mine)  # the user overrides
        settle(stack, service)
        service.plan()
        [p2] = [p for p in stack.proposals() if p["seq"] == 2]
        assert p2["status"] == "not_applied" and "override" in p2["note"] and p2["previous"] == mine
        assert stack.scheduler.query("weights")["weights"] == mine
        out = stack.fanoctl("modules", "weights")
        assert "documenter   7   (fano.toml: 0)" in out and "advice #2" in out and "[not_applied]" in out
        out = stack.fanoctl("modules", "weights", "--reset")
        assert "documenter" not in out.split("advisor:")[0] and stack.scheduler.query("weights")["weights"] == {}
    finally:
        service.shutdown()


def test_without_auto_apply_a_proposal_is_only_recorded(make_stack):
    stack = make_stack(enabled=True)
    stack.backlog("explorer", 80)
    stack.backlog("documenter", 3)
    stack.spawn("backend", "--account", "sim-a", log="worker.log")
    service = in_process(stack, enabled=True, interval=3600.0, min_backlog=5)
    try:
        service.plan()
        settle(stack, service)
        service.plan()
    finally:
        service.shutdown()
    [p] = stack.proposals()
    assert p["status"] == "proposed" and "auto_apply is off" in p["note"] and p["weights"]
    assert stack.scheduler.query("weights")["weights"] == {}
    assert len(stack.advisor_tasks()) == 1          # the next look is an hour away


def test_off_by_default_it_proposes_nothing(make_stack):
    stack = make_stack()                        # an empty [modules.advisor] table: the defaults
    stack.backlog("explorer", 60)
    stack.backlog("documenter", 2)
    service = AdvisorService(load_config(stack.cfg), Clock())
    service.initialize()
    try:
        assert service.settings.enabled is False
        service.loop()                          # a sweep and a planning pass, as the program does
        service.plan()
    finally:
        service.shutdown()
    assert stack.advisor_tasks() == [] and stack.client.kv_get("advisor", "state") is None
    assert "advisor: off" in stack.fanoctl("modules", "weights")
    # the same backlog with the advisor on does get a proposal (so the check above can fail)
    on = in_process(stack, enabled=True, min_backlog=5)
    try:
        on.plan()
    finally:
        on.shutdown()
    [task] = stack.advisor_tasks()
    assert task["kind"] == L.KIND and "EXPLORER_WEIGHT" in task["payload"]["prompt"]
