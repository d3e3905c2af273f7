"""capacity.pending_waited: a capacity-following pass reads the backlog without prompts, and the prompt
only of the tasks that waited ``patience`` (the ones a pass may move and re-submit)."""
import pytest

from services.modules import capacity as CAP
from shared.errors import ErrorCode, FanoError
from tests.unit.corehelp import CoreClient


def test_only_tasks_waited_past_patience_carry_their_payload(core):
    client = CoreClient(core)
    old = core.submit("old", module="documenter", payload={"prompt": "p" * 5000})["task"]["id"]
    core.clock.advance(300)
    new = core.submit("new", module="documenter", payload={"prompt": "q" * 5000})["task"]["id"]
    got = CAP.pending_waited(client, "documenter", core.clock.world(), 300.0)
    assert got["old"]["id"] == old and got["old"]["payload"] == {"prompt": "p" * 5000}
    assert got["new"]["id"] == new and got["new"].get("payload") is None


def test_a_task_gone_before_its_payload_is_read_keeps_none_and_other_errors_propagate(core):
    client = CoreClient(core)
    core.submit("old", module="documenter", payload={"prompt": "p"})
    core.clock.advance(300)

    def gone(tid, history=True):
        raise FanoError(ErrorCode.NOT_FOUND, f"no task {tid}")
    client.get = gone   # type: ignore[method-assign]
    got = CAP.pending_waited(client, "documenter", core.clock.world(), 300.0)
    assert got["old"].get("payload") is None

    def broken(tid, history=True):
        raise FanoError(ErrorCode.INTERNAL, "boom")
    client.get = broken   # type: ignore[method-assign]
    with pytest.raises(FanoError):
        CAP.pending_waited(client, "documenter", core.clock.world(), 300.0)
