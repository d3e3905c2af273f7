"""Keys and numbers from peers are checked against the store's limits at the door, with a specific error.

LMDB keys hold at most 511 bytes: every key the broker builds from client input (task keys, conversation
ids, request ids, kv keys, names) is checked with its prefix, so that an over-long one is BAD_ARGUMENT
at submit instead of an INTERNAL error (or a task that stays PENDING forever) later. Quota numbers are
range-checked: INVALID_QUOTA, never an overflow inside the broker.
"""
from __future__ import annotations

import pytest

from shared import protocol, sockets

from tests.unit.corehelp import check_indices, core, make_core  # noqa: F401  (fixtures)


def task(key="k1", **requires):
    return {"key": key, "module": "explorer", "kind": "ask", "requires": requires}


def test_a_conversation_id_past_the_key_limit_is_refused_at_submit(core):
    rep = core.reply("submit", task=task(conversation="c" * 600))
    assert rep.error["name"] == "BAD_ARGUMENT" and "conversation" in rep.error["message"]
    rep = core.reply("txn", module="explorer", ops=[{"op": "submit", "task": task("k2", conversation="é" * 201)}])
    assert rep.error["name"] == "BAD_ARGUMENT"
    assert core.call("list")["tasks"] == []
    ok = core.call("submit", task=task("k3", conversation="c" * 400))
    assert ok["task"]["state"] == "PENDING"
    lease = core.call("lease", worker="w", account="acct")
    assert lease["task"]["id"] == ok["task"]["id"]
    assert "INTERNAL" not in core.error_counts()


def store_long_conversation(h, tid: int, conv: str) -> None:
    """Rewrite task ``tid`` in the store as a version without the submit check would have kept it."""
    from services.broker import schema as S
    with h.storage.env.begin(write=True) as txn:
        db = h.storage.dbs["tasks"]
        rec = S.decode_value(txn.get(S.u64(tid), db=db))
        rec["requires"]["conversation"] = conv
        txn.put(S.u64(tid), S.encode_value(rec), db=db)


def test_an_old_task_with_a_conversation_id_past_the_key_limit_is_parked_by_the_lease(core):
    conv = "c" * 600
    old = core.call("submit", task=task("old", conversation="short"))["task"]["id"]
    store_long_conversation(core, old, conv)
    good = core.call("submit", task=task("good"))["task"]["id"]
    # the old task comes first in the queue: the lease parks it and goes on to the next one
    lease = core.call("lease", worker="w", account="acct")
    assert lease["task"]["id"] == good
    rec = core.call("get", id=old)
    assert rec["state"] == "PARKED" and rec["error"]["class"] == "terminal"
    assert "600 bytes is longer than the store's key limit (511 bytes)" in rec["error"]["message"]
    assert rec["conversation"] == {"id": conv}            # `queue show` reads it
    # an operator's retry puts it back; a lease naming it parks it again, with the reason as its answer
    assert core.call("retry", id=old)["state"] == "PENDING"
    named = core.call("lease", worker="w", account="acct", task_id=old)
    assert named["task"] is None and "too long" in named["reason"]
    assert core.call("get", id=old)["state"] == "PARKED"
    assert core.call("cancel", id=old)["state"] == "CANCELLED"
    assert "INTERNAL" not in core.error_counts()
    check_indices(core)


def test_a_request_id_of_128_four_byte_characters_is_bad_argument_not_internal(core):
    sub = lambda rid, key: core.batch([protocol.encode_request(  # noqa: E731
        protocol.Request("submit", "cid-" + key, {"task": task(key)}, rid))])[0]
    rep = sub("\U0001F600" * 128, "k1")
    assert rep.error["name"] == "BAD_ARGUMENT" and rep.cid == "cid-k1", rep.error
    assert str(protocol.MAX_RID_BYTES) in rep.error["message"]
    rid = "\U0001F600" * (protocol.MAX_RID_BYTES // 4)   # 500 bytes: the longest accepted
    assert sub(rid, "k2").ok and sub(rid, "k2").ok       # and a retry is answered from the request log
    assert [t["key"] for t in core.call("list")["tasks"]] == ["k2"]
    assert "INTERNAL" not in core.error_counts()


@pytest.mark.parametrize("windows", [
    [f"{2**64}/1h"],
    [f"{2**64 - 1}/1h"],
    [f"{10**9 + 1}/day"],
    ["5/day reserve explorer=" + str(2**64)],
    [{"kind": "daily", "limit": 2**64 - 1}],
    [{"kind": "rolling", "seconds": 1e300, "limit": 1}],
    [{"kind": "rolling", "seconds": float("inf"), "limit": 1}],
])
def test_quota_numbers_out_of_range_are_invalid_quota(core, windows):
    rep = core.reply("quota_set", account="acct", mode="standard", windows=windows)
    assert not rep.ok and rep.error["name"] == "INVALID_QUOTA", rep.error
    assert core.error_counts() == {"INVALID_QUOTA": 1}


def test_the_largest_quota_numbers_are_accepted(core):
    got = core.call("quota_set", account="acct", mode="standard",
                    windows=[f"{10**9}/day", {"kind": "rolling", "seconds": 10 * 366 * 86400, "limit": 3}])
    assert [w["limit"] for w in got["windows"]] == [10**9, 3]


# --- replies bounded in bytes ------------------------------------------------------------------------------

BIG = 3_500_000   # a legal payload (protocol.MAX_BODY is 4 MiB)


def big_text(i: int) -> str:
    return f"{i:08d}" * (BIG // 8)


def reply_bytes(core, cmd, **args) -> tuple[dict, int]:
    req = core.request(cmd, args)
    replies, _, _ = core.core.handle_batch([(b"c", protocol.encode_request(req))])
    [(_, frames)] = replies
    return protocol.decode_reply(frames).raise_for_error(), sum(map(len, frames))


def test_list_pages_leave_payloads_out_unless_asked_and_stop_at_the_byte_budget(core):
    from services.broker.ops_tasks import PAGE_BYTES
    for i in range(5):
        core.call("submit", task={"key": f"k{i}", "module": "explorer", "kind": "ask", "payload": big_text(i)})
    page, size = reply_bytes(core, "list", limit=1000)
    assert [t["id"] for t in page["tasks"]] == [1, 2, 3, 4, 5] and page["next"] is None
    assert all("payload" not in t and "result" not in t for t in page["tasks"])
    assert size < 20_000
    # asked for: every page stays within the budget plus one record, and `next` leads through all
    seen, after = [], None
    while True:
        page, size = reply_bytes(core, "list", limit=1000, payloads=True, after=after)
        assert size <= PAGE_BYTES + BIG + 10_000, size
        seen += [(t["id"], t["payload"][:8]) for t in page["tasks"]]
        after = page["next"]
        if after is None:
            break
    assert seen == [(i + 1, f"{i:08d}") for i in range(5)]


def test_unconsumed_and_kv_scan_pages_stop_at_the_byte_budget(core):
    from services.broker.ops_tasks import PAGE_BYTES
    for i in range(3):
        core.call("submit", task={"key": f"k{i}", "module": "explorer", "kind": "ask"})
        lease = core.call("lease", worker="w", account="acct")["task"]
        core.call("complete", id=lease["id"], epoch=lease["epoch"], result=big_text(i))
        core.call("txn", module="explorer", ops=[{"op": "put", "key": f"v{i}", "value": big_text(i)}])
    pages = []
    after = None
    while True:
        page, size = reply_bytes(core, "unconsumed", module="explorer", after=after, limit=100)
        assert size <= PAGE_BYTES + BIG + 10_000, size
        pages.append([t["id"] for t in page["tasks"]])
        after = page["next"]
        if after is None:
            break
    assert sum(pages, []) == [1, 2, 3] and len(pages) > 1
    keys, after = [], None
    while True:
        page, size = reply_bytes(core, "kv_scan", module="explorer", after=after, limit=100)
        assert size <= PAGE_BYTES + BIG + 10_000, size
        keys += [it["key"] for it in page["items"]]
        after = page["next"]
        if after is None:
            break
    assert keys == ["v0", "v1", "v2"]


def test_deferred_reads_are_answered_after_the_commit_one_at_a_time(core):
    from services.broker.core import ReadLater
    c = core.core
    reqs = [core.request("list", {}), core.request("submit", {"task": {"key": "k1", "module": "explorer",
                                                                         "kind": "ask"}}),
            core.request("get", {"id": 99}), core.request("stats", {})]
    replies, _, _ = c.handle_batch([(b"c%d" % i, protocol.encode_request(r)) for i, r in enumerate(reqs)],
                                   defer_reads=True)
    kinds = [type(frames).__name__ for _, frames in replies]
    assert kinds == ["ReadLater", "list", "ReadLater", "ReadLater"]
    answered = [protocol.decode_reply(c.answer_read(f) if isinstance(f, ReadLater) else f) for _, f in replies]
    assert [r.cid for r in answered] == [r.cid for r in reqs]
    # the list was queued before the submit, and runs after the commit: it sees the committed task
    assert [t["key"] for t in answered[0].result["tasks"]] == ["k1"]
    assert answered[1].ok and answered[2].error["name"] == "NOT_FOUND" and answered[3].ok
    assert core.error_counts() == {"NOT_FOUND": 1}


def test_a_reply_larger_than_a_client_accepts_becomes_too_large():
    huge = protocol.Reply(cid="c1", ok=True, result="x" * (protocol.MAX_MESSAGE + 1))
    rep = protocol.decode_reply(protocol.encode_reply(huge))
    assert rep.cid == "c1" and rep.error["name"] == "TOO_LARGE"
    packed = protocol.Reply(cid="c2", ok=True, packed_result=protocol.pack_value("y" * protocol.MAX_MESSAGE))
    assert protocol.decode_reply(protocol.encode_reply(packed)).error["name"] == "TOO_LARGE"
    small = protocol.Reply(cid="c3", ok=True, result="z" * 1000)
    assert protocol.decode_reply(protocol.encode_reply(small)).result == "z" * 1000


def test_recv_bounded_discards_a_message_over_the_total_limit_unread():
    import shutil

    import zmq

    from tests.support import short_tmpdir
    tmp_path = short_tmpdir("fr")
    ctx = zmq.Context()
    router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    try:
        sockets.configure_socket(router, "router")
        sockets.configure_socket(dealer, "dealer", identity="t")
        endpoint = f"ipc://{tmp_path}/r.sock"
        router.bind(endpoint)
        dealer.connect(endpoint)
        chunk = b"x" * (4 * 2**20)
        dealer.send_multipart([chunk] * 5)           # 20 MiB, each frame within MAXMSGSIZE
        dealer.send_multipart([b"FANO/1", b"small"])
        assert router.poll(5000)
        frames, total = sockets.recv_bounded(router)
        assert len(frames) == 1 and frames[0].startswith(b"t#") and total == 5 * len(chunk) + len(frames[0])
        assert router.poll(5000)
        frames, total = sockets.recv_bounded(router)
        assert frames[1:] == [b"FANO/1", b"small"]
        with pytest.raises(zmq.Again):
            sockets.recv_bounded(router)
    finally:
        router.close(0)
        dealer.close(0)
        ctx.term()
        shutil.rmtree(tmp_path, ignore_errors=True)


def test_deferred_quota_reads_with_expired_rolling_entries_are_answered(make_core):
    """quota_show and stats run in a read-only transaction after the commit: they must not prune a rolling
    window's expired entries there (LMDB refuses the write: every such read was INTERNAL)."""
    from services.broker.core import ReadLater
    from shared.clock import FakeClock
    h = make_core(quotas={("acct", "standard"): ["5/1h"]}, clock=FakeClock(world=1_700_000_000.0))
    tid = h.submit("a")["task"]["id"]
    lease = h.lease()
    h.call("complete", id=tid, epoch=lease["epoch"], result="x")
    h.clock.advance(7200)   # the unit has left the window; its entry is still stored
    reqs = [h.request("quota_show", {}), h.request("stats", {})]
    replies, _, _ = h.core.handle_batch([(b"c%d" % i, protocol.encode_request(r)) for i, r in enumerate(reqs)],
                                        defer_reads=True)
    assert all(isinstance(frames, ReadLater) for _, frames in replies)
    answered = [protocol.decode_reply(h.core.answer_read(f)) for _, f in replies]
    assert all(r.ok for r in answered), [r.error for r in answered]
    window = answered[0].result["quotas"][0]["windows"][0]
    assert window["used"] == 0 and window["resets_at"] is None
    assert h.error_counts() == {}
