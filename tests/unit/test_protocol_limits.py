"""Keys and numbers from peers are checked against the store's limits at the door, with a specific error.

LMDB keys hold at most 511 bytes: every key the broker builds from client input (task keys, conversation
ids, request ids, kv keys, names) is checked with its prefix, so that an over-long one is BAD_ARGUMENT
at submit instead of an INTERNAL error (or a task that stays PENDING forever) later. Quota numbers are
range-checked: INVALID_QUOTA, never an overflow inside the broker.
"""
from __future__ import annotations

import pytest

from shared import protocol

from tests.unit.corehelp import core, make_core  # noqa: F401  (fixtures)


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
