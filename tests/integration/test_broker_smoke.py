import pytest

pytestmark = pytest.mark.integration


def test_submit_lease_complete_through_real_broker(broker, client):
    out = client.submit("k1", "explorer", "ask", {"prompt": "hi"})
    assert out["created"] and out["task"]["state"] == "PENDING"
    lease = client.lease("w1", "acct-a", modes=["standard"])
    assert lease["task"]["id"] == out["task"]["id"]
    assert client.complete(lease["task"]["id"], lease["epoch"], {"text": "hello"})["state"] == "DONE"
    assert client.get(out["task"]["id"])["result"] == {"text": "hello"}
