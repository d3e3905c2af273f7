"""The worker protocol's decoder checks every field it hands on, and the scheduler survives any message.

The first test is the message that killed the scheduler (issue 14): a list as ``type`` raised TypeError
out of ``decode_worker``. The fuzz test mutates valid worker messages field by field and feeds them to a
real SchedulerCore (no sockets), ticking it in between: nothing may raise, and no query may be answered
``INTERNAL``; the full-process version over real sockets is tests/fuzz/test_fuzz_sockets.py.
"""
from __future__ import annotations

import random

import msgpack
import pytest

from shared import protocol
from shared.errors import FanoError
from tests.unit.test_scheduler_logic import W1, W2, make_core, submitted

WH = protocol.WORKER_HEADER


def packed(obj) -> list[bytes]:
    return [WH, msgpack.packb(obj, use_bin_type=True)]


def decode_error(frames) -> FanoError:
    with pytest.raises(FanoError) as info:
        protocol.decode_worker(frames)
    return info.value


@pytest.mark.parametrize("typ", [[1], {"a": 1}, 7, None, b"ready", 1.5, True])
def test_a_type_that_is_not_a_string_is_unknown_command(typ):
    assert decode_error(packed({"type": typ})).name == "UNKNOWN_COMMAND"


@pytest.mark.parametrize("msg,field", [
    ({"type": "ready", "worker": "w", "account": "a", "backend": "sim", "modes": "standard"}, "modes"),
    ({"type": "ready", "worker": "w", "account": "a", "backend": "sim", "modes": [["x"]]}, "modes"),
    ({"type": "ready", "worker": "w", "account": "a" * 300, "backend": "sim", "modes": []}, "account"),
    ({"type": "heartbeat", "task_id": "7"}, "task_id"),
    ({"type": "heartbeat", "task_id": -1}, "task_id"),
    ({"type": "heartbeat", "worker": [1]}, "worker"),
    ({"type": "done", "worker": "w", "task_id": 1, "outcome": "done", "retry_at": 2**62}, "retry_at"),
    ({"type": "done", "worker": "w", "task_id": 1, "outcome": "done", "retry_at": float("nan")}, "retry_at"),
    ({"type": "done", "worker": "w", "task_id": 1, "outcome": "done", "retry_at": float("inf")}, "retry_at"),
    ({"type": "done", "worker": "w", "task_id": 1, "outcome": "done", "epoch": True}, "epoch"),
    ({"type": "done", "worker": "w", "task_id": 1, "outcome": "done", "message": {"m": 1}}, "message"),
    ({"type": "query", "cid": "c", "what": "why", "task_id": [1]}, "task_id"),
    ({"type": "query", "cid": "c", "what": "weights", "set": [1]}, "set"),
    ({"type": "query", "cid": ["c"], "what": "why"}, "cid"),
])
def test_each_field_is_type_and_range_checked(msg, field):
    exc = decode_error(packed(msg))
    assert exc.name == "BAD_ARGUMENT" and exc.details.get("field") == field, exc


def test_optional_fields_may_be_absent_or_null():
    msg = protocol.decode_worker(packed({"type": "done", "worker": "w", "task_id": 1, "outcome": "done",
                                         "epoch": None, "message": None, "retry_at": None}))
    assert msg["task_id"] == 1
    assert protocol.decode_worker(packed({"type": "heartbeat"}))["type"] == "heartbeat"


def test_the_message_that_killed_the_scheduler_is_answered_and_counted():
    core = make_core()
    core.on_message(W1, packed({"type": [1]}))
    out = core.take_output()
    assert [(i, t) for i, t, _ in out] == [(W1, "disconnect")]
    assert core.errors == {"UNKNOWN_COMMAND": 1}


def test_a_query_whose_handler_fails_is_answered_internal_not_left_to_time_out(monkeypatch):
    from services.scheduler import queries
    core = make_core()
    monkeypatch.setattr(queries, "answer", lambda core, msg: 1 / 0)
    core.on_message(W1, protocol.encode_worker("query", cid="c9", what="top"))
    [(ident, typ, fields)] = core.take_output()
    assert (ident, typ, fields["cid"], fields["ok"]) == (W1, "answer", "c9", False)
    assert fields["error"]["name"] == "INTERNAL" and core.errors["INTERNAL"] == 1


VALUES = [None, True, 0, -1, 2**63, 2**64 - 1, -2**63, 1.5, float("nan"), float("inf"), 1e300, "", "x", "a1",
          "standard", "deep", "y" * 5000, [], [1], ["standard"], [[1]], {}, {"a": 1}, {1: 2}, "why", "backends",
          "top", "weights", "stats", "idle", "done", "declined", "ready", {"explorer": 1e308},
          {"explorer": "x"}, 2**40, 1.8e9]
GOOD = [
    {"type": "ready", "worker": "w", "account": "a1", "backend": "sim", "modes": ["standard"]},
    {"type": "heartbeat", "worker": "w", "task_id": 1},
    {"type": "done", "worker": "w", "task_id": 1, "epoch": 1, "outcome": "declined", "message": "m",
     "retry_at": 1.8e9},
    {"type": "disconnect", "worker": "w"},
    {"type": "query", "cid": "c", "what": "why", "task_id": 1},
    {"type": "query", "cid": "c", "what": "weights", "set": {"explorer": 2}},
    {"type": "query", "cid": "c", "what": "backends"},
]


def test_mutated_worker_messages_never_raise_nor_answer_internal():
    core = make_core()
    for tid in range(1, 6):
        submitted(core, tid)
    rnd = random.Random(14)
    for _ in range(20_000):
        m = dict(rnd.choice(GOOD))
        for _ in range(rnd.randint(0, 3)):
            m[rnd.choice([*m, "type", "task_id", "cid", "what", "set", "reset", "modes", "retry_at"])] = \
                rnd.choice(VALUES)
        core.on_message(rnd.choice([W1, W2, b"w3"]), packed(m))
        core.tick()
        for _, typ, fields in core.take_output():
            protocol.encode_worker(typ, **fields)   # every output can be sent
            assert not (typ == "answer" and not fields["ok"] and fields["error"]["name"] == "INTERNAL"), m
        if rnd.random() < 0.05:
            core.clock.advance(rnd.choice([0.5, 5, 100]))
    assert "INTERNAL" not in core.errors, core.errors
