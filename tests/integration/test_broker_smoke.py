import pytest

from shared import txn

pytestmark = pytest.mark.integration


def test_submit_lease_complete_through_real_broker(broker, client):
    out = client.submit("k1", "explorer", "ask", {"prompt": "hi"})
    assert out["created"] and out["task"]["state"] == "PENDING"
    lease = client.lease("w1", "acct-a", modes=["standard"])
    assert lease["task"]["id"] == out["task"]["id"]
    assert client.complete(lease["task"]["id"], lease["epoch"], {"text": "hello"})["state"] == "DONE"
    assert client.get(out["task"]["id"])["result"] == {"text": "hello"}


def test_kv_items_reads_every_page_in_key_order(broker, client):
    keys = [f"notes/{i:02d}" for i in range(7)] + ["other/1"]
    client.txn("explorer", [txn.put(k, {"n": k}) for k in reversed(keys)])
    items = list(client.kv_items("explorer", "notes/", page=2))           # four pages of at most two
    assert [k for k, _, _ in items] == keys[:7]
    assert all(v == 1 and value == {"n": k} for k, v, value in items)
    assert list(client.kv_items("explorer", "none/")) == []
