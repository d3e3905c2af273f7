"""capacity.with_payload: a capacity-following pass lists the backlog without prompts and reads the
payload only of a task it moves."""
import pytest

from services.modules import capacity as CAP
from shared.errors import ErrorCode, FanoError
from tests.unit.corehelp import CoreClient


def test_a_listed_task_gets_its_payload_and_the_list_carries_none(core):
    client = CoreClient(core)
    tid = core.submit("old", module="documenter", payload={"prompt": "p" * 5000})["task"]["id"]
    listed = CAP.pending(client, "documenter", payloads=False)["old"]
    assert listed["id"] == tid and listed.get("payload") is None
    got = CAP.with_payload(client, listed)
    assert got is not None and got["payload"] == {"prompt": "p" * 5000} and got["key"] == "old"
    assert listed.get("payload") is None   # the listed record is left as it was


def test_a_task_gone_before_its_payload_is_read_gives_none_and_other_errors_propagate(core):
    client = CoreClient(core)
    core.submit("old", module="documenter", payload={"prompt": "p"})
    listed = CAP.pending(client, "documenter", payloads=False)["old"]

    def gone(tid, history=True):
        raise FanoError(ErrorCode.NOT_FOUND, f"no task {tid}")
    client.get = gone   # type: ignore[method-assign]
    assert CAP.with_payload(client, listed) is None

    def broken(tid, history=True):
        raise FanoError(ErrorCode.INTERNAL, "boom")
    client.get = broken   # type: ignore[method-assign]
    with pytest.raises(FanoError):
        CAP.with_payload(client, listed)
