"""The whole tree under a real supervisord (the repository's supervisord.conf and generated backend
programs) through a full map: nothing exits, nothing ends FATAL, and the research resumes after
``fanoctl admin grow-map`` without touching supervisord.

Before, on MAP_FULL the explorer exited in ~0.2 s again and again under ``startsecs=1``, supervisord
marked it FATAL, and it stayed down after the map was grown.
"""
from __future__ import annotations

import time

import pytest

from shared.client import BrokerClient
from shared.errors import ErrorCode, FanoError
from tests.support import REPO, run_fanoctl, running_tree, wait_for

pytestmark = pytest.mark.integration

TREE = """
[broker]
map_size = "4MiB"
headroom = "512KiB"
map_ceiling = "4MiB"

[accounts.quick-sim]
backend = "sim"
modes = ["standard"]
seed = 1
latency = { standard = { dist = "fixed", value = 0.2 } }
"""

HOLD = 20.0  # seconds refusing: past supervisord's startsecs x startretries window (1+2+3+4+5 s of backoff)


def done(client, module="explorer") -> int:
    return client.stats()["modules"].get(module, {}).get("DONE", 0)


def log_of(tree, program) -> str:
    return (tree.root / "var/log" / f"{program}.log").read_text(errors="replace")


def test_a_full_map_backs_modules_and_workers_off_and_they_resume_after_grow_map():
    with running_tree("fz", TREE) as tree:
        client = BrokerClient(tree.config.broker_endpoint, name="test", timeout=5.0)
        try:
            res = run_fanoctl(tree, "seeds", "import", str(REPO / "seeds/demo.toml"))
            assert res.returncode == 0, res.stderr
            wait_for(lambda: done(client) >= 1, 90, interval=0.5, what="the explorer's first task to finish")
            pids = {p["name"]: p["pid"] for p in tree.programs()}
            # fill the map to its ceiling with another module's data
            for i in range(200):
                try:
                    client.txn("filler", [{"op": "put", "key": f"big/{i}", "value": "z" * 200_000}])
                except FanoError as exc:
                    assert exc.code == ErrorCode.MAP_FULL, exc
                    break
            else:
                raise AssertionError("the map never filled")
            res = run_fanoctl(tree, "submit", "--key", "refused", "--module", "explorer", "--kind", "ask")
            assert res.returncode == 1 and "MAP_FULL" in res.stderr, (res.returncode, res.stderr)
            wait_for(lambda: "broker refuses new work (MAP_FULL" in log_of(tree, "module-explorer"), 60,
                     interval=0.5, what="the explorer to meet the refusal")
            # nobody exits while the map is full: every program stays RUNNING with the same pid
            deadline = time.monotonic() + HOLD
            while time.monotonic() < deadline:
                states = {p["name"]: (p["statename"], p["pid"]) for p in tree.programs()}
                assert states == {name: ("RUNNING", pid) for name, pid in pids.items()}, states
                time.sleep(1.0)
            assert client.stats()["broker"]["storage"]["refusing"] == "MAP_FULL"
            finished = done(client)
            # the operator grows the map: the research resumes by itself
            res = run_fanoctl(tree, "admin", "grow-map", "64MiB")
            assert res.returncode == 0, res.stderr
            assert client.stats()["broker"]["storage"]["refusing"] is None
            wait_for(lambda: "accepts this module's work again" in log_of(tree, "module-explorer"), 60,
                     interval=0.5, what="the explorer to resume")
            wait_for(lambda: done(client) > finished, 90, interval=0.5, what="research to go on after the growth")
            states = {p["name"]: (p["statename"], p["pid"]) for p in tree.programs()}
            assert states == {name: ("RUNNING", pid) for name, pid in pids.items()}, states
        finally:
            client.close()
