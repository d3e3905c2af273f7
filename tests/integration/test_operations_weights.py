"""services/modules/operations/weights.py against a real broker and the real scheduler process: the one way
the CLI and the web panel change module weights, and what it refuses."""
from __future__ import annotations

import math
import shutil

import pytest

from services.modules.operations import weights as W
from shared import txn
from shared.errors import BrokerUnavailable, FanoError
from tests.scheduler_support import SchedulerProcess, write_scheduler_config
from tests.support import BrokerProcess, short_tmpdir

pytestmark = pytest.mark.integration


@pytest.fixture
def stack():
    root = short_tmpdir()
    cfg = write_scheduler_config(root, scheduler={"module_weights": {"explorer": 1}}, accounts={"a1": ["standard"]})
    broker, scheduler = BrokerProcess(root, cfg), SchedulerProcess(root, cfg)
    broker.start()
    scheduler.start()
    client = broker.client()
    try:
        yield broker, scheduler, client
    finally:
        client.close()
        scheduler.kill()
        broker.kill()
        shutil.rmtree(root, ignore_errors=True)


def test_set_and_reset_weights_through_the_scheduler(stack):
    broker, scheduler, client = stack
    now = W.module_weights(scheduler.endpoint)
    assert now["weights"] == {"explorer": 1.0} and now["configured"] == {"explorer": 1.0} and now["durable"]
    changed = W.module_weights(scheduler.endpoint, set_={"documenter": 12, "explorer": -2.5})
    assert changed["weights"] == {"explorer": -2.5, "documenter": 12.0}
    # stored in the broker: a restarted scheduler keeps them
    assert client.kv_get("scheduler", "weights")["value"] == {"explorer": -2.5, "documenter": 12.0}
    scheduler.kill()
    scheduler.start()
    assert W.module_weights(scheduler.endpoint)["weights"] == {"explorer": -2.5, "documenter": 12.0}
    assert W.module_weights(scheduler.endpoint, reset=True)["weights"] == {"explorer": 1.0}


@pytest.mark.parametrize("change, words", [
    ({"explorer": "x"}, "finite number"), ({"explorer": math.inf}, "finite number"),
    ({"explorer": True}, "finite number"), ({"": 1}, "module name"), ({"nosuch": 1}, "nosuch"),
])
def test_bad_weights_are_refused_and_change_nothing(stack, change, words):
    _, scheduler, _ = stack
    with pytest.raises(FanoError) as err:
        W.module_weights(scheduler.endpoint, set_=change)
    assert err.value.name == "BAD_ARGUMENT" and words in err.value.message
    assert W.module_weights(scheduler.endpoint)["weights"] == {"explorer": 1.0}


def test_set_with_reset_and_a_silent_scheduler(stack):
    _, scheduler, _ = stack
    with pytest.raises(FanoError, match="exclude"):
        W.module_weights(scheduler.endpoint, set_={"explorer": 2}, reset=True)
    scheduler.kill()
    with pytest.raises(BrokerUnavailable):
        W.module_weights(scheduler.endpoint, timeout=0.3)


def test_advisor_proposals_oldest_first(stack):
    _, _, client = stack
    assert W.proposals(client) == []
    client.txn("advisor", [txn.put(f"proposals/{n:08d}", {"seq": n, "weights": {"explorer": n}}) for n in (1, 2, 3)])
    assert [p["seq"] for p in W.proposals(client)] == [1, 2, 3]
    assert [p["seq"] for p in W.proposals(client, limit=2)] == [2, 3]
