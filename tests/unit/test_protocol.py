"""The wire protocol: round trips, and the exact error code for every kind of malformed request."""
from __future__ import annotations

import msgpack
import pytest

from shared import protocol
from shared.errors import ErrorCode, FanoError

H = protocol.HEADER
RID = "r" * 16


def body(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def req(cmd="ping", args=None, cid="c1", rid=None, **extra) -> list[bytes]:
    msg = {"cmd": cmd, "cid": cid, "args": {} if args is None else args, **extra}
    if rid is not None:
        msg["rid"] = rid
    return [H, body(msg)]


def decode_error(frames) -> FanoError:
    with pytest.raises(FanoError) as info:
        protocol.decode_request(frames)
    return info.value


# --- round trips --------------------------------------------------------------------------------------

def test_request_round_trip_mutating_and_reading():
    r = protocol.Request("submit", "cid-1", {"task": {"key": "k", "module": "m", "kind": "ask",
                                                       "payload": {"b": b"\x00\xff", "n": [1, 2.5, None]}}},
                         "rid-000001")
    out = protocol.decode_request(protocol.encode_request(r))
    assert out.cmd == "submit" and out.cid == "cid-1" and out.rid == "rid-000001"
    assert out.args["task"]["payload"] == {"b": b"\x00\xff", "n": [1, 2.5, None]}
    assert out.args["force"] is False  # default filled in

    g = protocol.decode_request(protocol.encode_request(protocol.Request("get", "c2", {"id": 7})))
    assert g == protocol.Request("get", "c2", {"id": 7, "history": True}, None)


def test_reading_command_ignores_rid():
    out = protocol.decode_request(req("ping", rid=RID))
    assert out.rid is None


def test_reply_round_trip_ok_and_error():
    ok = protocol.Reply("c1", True, {"x": [1, 2], "b": b"raw"})
    assert protocol.decode_reply(protocol.encode_reply(ok)) == ok
    err = protocol.error_reply("c2", FanoError(ErrorCode.NOT_FOUND, "no such task: 3", {"id": 3}))
    back = protocol.decode_reply(protocol.encode_reply(err))
    assert back.cid == "c2" and not back.ok
    assert back.error == {"code": 10, "name": "NOT_FOUND", "message": "no such task: 3", "details": {"id": 3}}
    with pytest.raises(FanoError) as info:
        back.raise_for_error()
    assert info.value.code == ErrorCode.NOT_FOUND and info.value.details == {"id": 3}
    assert ok.raise_for_error() == {"x": [1, 2], "b": b"raw"}


def test_reply_decoding_rejects_garbage():
    with pytest.raises(FanoError) as info:
        protocol.decode_reply([b"NOPE/1", body({"ok": True})])
    assert info.value.code == ErrorCode.BAD_FRAME
    with pytest.raises(FanoError) as info:
        protocol.decode_reply([H, body([1, 2])])
    assert info.value.code == ErrorCode.BAD_ENCODING
    with pytest.raises(FanoError) as info:
        protocol.decode_reply([H, b"\xc1"])
    assert info.value.code == ErrorCode.BAD_ENCODING


def test_event_round_trip():
    ev = {"seq": 5, "ts": 1.5, "type": "task.done", "id": 3}
    frames = protocol.encode_event(ev)
    assert frames[0] == b"evt.task.done" and frames[1] == H
    assert protocol.decode_event(frames) == ev
    assert protocol.encode_event(dict(ev, module="explorer"))[0] == b"evt.task.done/explorer/"
    with pytest.raises(FanoError) as info:
        protocol.decode_event(frames[1:])
    assert info.value.code == ErrorCode.BAD_FRAME
    with pytest.raises(FanoError) as info:
        protocol.decode_event([frames[0], H, body({"seq": "5"})])
    assert info.value.code == ErrorCode.BAD_ENCODING


def test_wire_error_unknown_code_becomes_internal():
    assert FanoError.from_wire({"code": 999, "message": "x"}).code == ErrorCode.INTERNAL
    assert FanoError.from_wire({}).code == ErrorCode.INTERNAL


def test_every_command_has_a_known_shape():
    for name, (mutating, spec) in protocol.COMMANDS.items():
        assert isinstance(mutating, bool), name
        for arg_name, arg in spec.items():
            assert isinstance(arg, protocol.Arg), (name, arg_name)
    # the commands that change state are exactly these
    assert {n for n, (m, _) in protocol.COMMANDS.items() if not m} == {
        "ping", "get", "list", "quota_show", "kv_get", "kv_scan", "unconsumed", "stats", "events"}


# --- malformed requests: the specific code for each -------------------------------------------------------

BIG = [H, b"\xc6" + (protocol.MAX_BODY + 1).to_bytes(4, "big") + b"\x00" * (protocol.MAX_BODY + 1)]

MALFORMED = [
    # (case id, frames, code, cid known?)
    ("zero-frames", [], ErrorCode.BAD_FRAME, False),
    ("one-frame", [H], ErrorCode.BAD_FRAME, False),
    ("three-frames", [H, body({"cmd": "ping", "cid": "c1"}), b"extra"], ErrorCode.BAD_FRAME, False),
    ("wrong-header", [b"FANO/2", body({"cmd": "ping", "cid": "c1"})], ErrorCode.BAD_VERSION, False),
    ("empty-header", [b"", body({"cmd": "ping", "cid": "c1"})], ErrorCode.BAD_VERSION, False),
    ("not-msgpack", [H, b"\xc1\xc1\xc1"], ErrorCode.BAD_ENCODING, False),
    ("truncated-msgpack", [H, body({"cmd": "ping", "cid": "c1"})[:-2]], ErrorCode.BAD_ENCODING, False),
    ("trailing-bytes", [H, body({"cmd": "ping", "cid": "c1"}) + b"\x01"], ErrorCode.BAD_ENCODING, False),
    ("empty-body", [H, b""], ErrorCode.BAD_ENCODING, False),
    ("body-is-list", [H, body(["ping", "c1"])], ErrorCode.BAD_ENCODING, False),
    ("body-is-int", [H, body(7)], ErrorCode.BAD_ENCODING, False),
    ("too-large", BIG, ErrorCode.TOO_LARGE, False),
    ("missing-cid", [H, body({"cmd": "ping"})], ErrorCode.BAD_ARGUMENT, False),
    ("empty-cid", [H, body({"cmd": "ping", "cid": ""})], ErrorCode.BAD_ARGUMENT, False),
    ("int-cid", [H, body({"cmd": "ping", "cid": 5})], ErrorCode.BAD_ARGUMENT, False),
    ("missing-cmd", [H, body({"cid": "c1"})], ErrorCode.BAD_ARGUMENT, True),
    ("int-cmd", [H, body({"cid": "c1", "cmd": 3})], ErrorCode.BAD_ARGUMENT, True),
    ("unknown-cmd", req("launch_missiles"), ErrorCode.UNKNOWN_COMMAND, True),
    ("missing-rid", req("cancel", {"id": 1}), ErrorCode.BAD_ARGUMENT, True),
    ("short-rid", req("cancel", {"id": 1}, rid="abc"), ErrorCode.BAD_ARGUMENT, True),
    ("int-rid", req("cancel", {"id": 1}, rid=12345678), ErrorCode.BAD_ARGUMENT, True),
    ("args-not-map", req("get", [1]), ErrorCode.BAD_ARGUMENT, True),
    ("args-string", req("get", "id=1"), ErrorCode.BAD_ARGUMENT, True),
    ("unknown-arg", req("get", {"id": 1, "colour": "red"}), ErrorCode.BAD_ARGUMENT, True),
    ("missing-required", req("get", {}), ErrorCode.BAD_ARGUMENT, True),
    ("required-null", req("get", {"id": None}), ErrorCode.BAD_ARGUMENT, True),
    ("str-for-int", req("get", {"id": "1"}), ErrorCode.BAD_ARGUMENT, True),
    ("float-for-int", req("get", {"id": 1.0}), ErrorCode.BAD_ARGUMENT, True),
    ("bool-for-int", req("get", {"id": True}), ErrorCode.BAD_ARGUMENT, True),
    ("bool-for-num", req("renew", {"id": 1, "epoch": 1, "ttl": True}, rid=RID), ErrorCode.BAD_ARGUMENT, True),
    ("int-for-bool", req("get", {"id": 1, "history": 1}), ErrorCode.BAD_ARGUMENT, True),
    ("str-for-map", req("submit", {"task": "k"}, rid=RID), ErrorCode.BAD_ARGUMENT, True),
    ("map-for-list", req("lease", {"worker": "w", "account": "a", "modes": {"x": 1}}, rid=RID),
     ErrorCode.BAD_ARGUMENT, True),
    ("bytes-for-str", req("kv_get", {"module": b"m", "key": "k"}), ErrorCode.BAD_ARGUMENT, True),
]


@pytest.mark.parametrize("frames,code,cid_known", [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_decode_request_error_codes(frames, code, cid_known):
    exc = decode_error(frames)
    assert exc.code == code, exc
    if cid_known:
        assert exc.details.get("cid") == "c1"


def test_body_exactly_max_is_not_too_large():
    # a body of exactly MAX_BODY bytes passes the size check (and then fails on content, not size)
    frames = [H, b"\x00" * protocol.MAX_BODY]
    assert decode_error(frames).code == ErrorCode.BAD_ENCODING


def test_arg_error_names_the_field():
    exc = decode_error(req("get", {"id": "x"}))
    assert exc.details["field"] == "id" and "id" in exc.message


def test_nullable_optional_args_take_their_default():
    out = protocol.decode_request(req("list", {"state": None, "limit": None}))
    assert out.args == {"state": None, "module": None, "kind": None, "after": None, "limit": 100,
                        "payloads": False, "before": None, "rows": False}
    lease = protocol.decode_request(req("lease", {"worker": "w", "account": "a"}, rid=RID))
    assert lease.args["modes"] == ["standard"]
    # the default list is a copy, never the shared default object
    lease.args["modes"].append("deep")
    again = protocol.decode_request(req("lease", {"worker": "w", "account": "a"}, rid=RID))
    assert again.args["modes"] == ["standard"]


def test_args_missing_means_empty():
    msg = {"cmd": "ping", "cid": "c1"}
    assert protocol.decode_request([H, body(msg)]).args == {}


# --- through the broker ----------------------------------------------------------------------------------

def test_broker_answers_every_malformed_request_and_keeps_working(core):
    cases = [c for c in MALFORMED if c[0] != "too-large"]
    valid = protocol.encode_request(protocol.Request("ping", "good-cid", {}))
    frames_list = []
    for _, frames, _, _ in cases:
        frames_list.extend([frames, valid])
    replies = core.batch(frames_list)
    assert len(replies) == 2 * len(cases)
    for i, (case_id, _, code, cid_known) in enumerate(cases):
        bad, good = replies[2 * i], replies[2 * i + 1]
        assert not bad.ok, case_id
        assert bad.error["code"] == int(code) and bad.error["name"] == code.name, (case_id, bad.error)
        assert bad.cid == ("c1" if cid_known else None), case_id
        assert good.ok and good.cid == "good-cid" and good.result["version"] == protocol.VERSION, case_id
    errors = core.error_counts()
    expected: dict[str, int] = {}
    for _, _, code, _ in cases:
        expected[code.name] = expected.get(code.name, 0) + 1
    assert errors == expected


def test_broker_answers_too_large_and_counts_it(core):
    replies = core.batch([BIG, req("ping")])
    assert replies[0].error["name"] == "TOO_LARGE"
    assert replies[1].ok
    assert core.error_counts() == {"TOO_LARGE": 1}


def test_broker_counts_handler_errors_and_rolls_back_only_the_bad_request(core):
    sub = lambda key, rid: protocol.encode_request(protocol.Request(  # noqa: E731
        "submit", "c-" + key, {"task": {"key": key, "module": "explorer", "kind": "ask"}}, rid))
    bad_task = protocol.encode_request(protocol.Request(
        "submit", "c-bad", {"task": {"key": "k2", "module": "Not A Name", "kind": "ask"}}, protocol.new_id()))
    replies = core.batch([sub("k1", protocol.new_id()), bad_task, req("get", {"id": 99}),
                          sub("k3", protocol.new_id())])
    assert [r.ok for r in replies] == [True, False, False, True]
    assert replies[1].error["name"] == "BAD_ARGUMENT" and replies[1].cid == "c-bad"
    assert replies[2].error["name"] == "NOT_FOUND"
    listed = core.call("list")["tasks"]
    assert [t["key"] for t in listed] == ["k1", "k3"]
    assert core.error_counts() == {"BAD_ARGUMENT": 1, "NOT_FOUND": 1}


@pytest.mark.parametrize("cmd,args", [
    ("get", {"id": -1}),
    ("get", {"id": 2**64 - 1}),
    ("list", {"after": -5}),
    ("list", {"after": 2**64 - 1}),
    ("events", {"after": -3}),
    ("events", {"after": 2**64 - 1}),
])
def test_out_of_range_integers_are_not_internal_errors(core, cmd, args):
    rep = core.reply(cmd, **args)
    assert rep.ok or rep.error["name"] in ("NOT_FOUND", "BAD_ARGUMENT"), rep.error
    assert "INTERNAL" not in core.error_counts()


# --- peer input never causes an internal error --------------------------------------------------------------

FUZZ_VALUES = {
    int: [-1, 0, 1, 2, 3, 2**31, 2**63, 2**64 - 1, -2**63],
    float: [-1e300, float("nan"), float("inf"), -0.0, 0.5, 30.0, 1e15, 1e300],
    str: ["", "\x00", "x" * 500, "Ünï", "standard", "deep", "acct", "explorer", "PENDING", "5/day", "a\x00b"],
    bool: [True, False],
    dict: [{}, {"key": None}, {"key": "k", "module": "explorer", "kind": "ask", "payload": {"x": [1]}},
           {"key": "k1", "module": "explorer", "kind": "ask", "requires": {"conversation": "c"}},
           {"key": "k2", "module": "explorer", "kind": "ask", "not_before": 1.7e9 + 50},
           {"op": "put", "key": "a"}, {"kind": "daily", "limit": 1, "tz": "UTC", "reset": "23:59"}],
    list: [[], [None], [{}], ["deep"], ["standard", "deep"], [{"op": "put", "key": "k", "value": 1}],
           [{"op": "ack", "task_id": 1}], [{"op": "submit", "task": {"key": "z", "module": "m", "kind": "k"}}],
           ["1/1s"], ["2/day@23:00 Asia/Kolkata reserve explorer=1"],
           [{"op": "check", "key": "k", "if_version": 2**64 - 1}],
           [{"op": "delete", "key": "\x00"}], [{"op": "ack", "task_id": -1}], [{"op": "ack", "task_id": 2**64 - 1}]],
}


def test_random_requests_never_cause_internal_errors_and_keep_indices_consistent(make_core):
    import random

    from tests.unit.corehelp import check_indices

    core = make_core(quotas={("acct", "standard"): ["5/1h", "10/day"]})
    for i in range(5):
        core.submit(f"k{i}")
    rnd = random.Random(1)
    commands = [c for c in protocol.COMMANDS if c != "grow_map"]
    internal = []
    for _ in range(1500):
        cmd = rnd.choice(commands)
        args = {}
        for name, arg in protocol.COMMANDS[cmd][1].items():
            if not arg.required and rnd.random() < 0.3:
                continue
            types = [t for t in arg.types if t is not protocol.ANY and t is not tuple] or [int, str, dict, list]
            t = rnd.choice(types)
            args[name] = rnd.choice(FUZZ_VALUES[t])
        rep = core.reply(cmd, **args)
        if not rep.ok and rep.error["name"] == "INTERNAL":
            internal.append((cmd, args, rep.error["message"]))
        if rnd.random() < 0.02:
            core.clock.advance(rnd.choice([1, 100, 4000]))
    assert internal == []
    check_indices(core)
    seqs = [e["seq"] for e in core.events]
    assert seqs == list(range(1, len(seqs) + 1))


# --- limits: size and nesting ---------------------------------------------------------------------------

def nested(levels: int, leaf=1):
    """``leaf`` inside ``levels`` lists: nesting_depth(nested(n)) == n."""
    for _ in range(levels):
        leaf = [leaf]
    return leaf


def test_nesting_depth_counts_maps_and_lists_and_stops_past_the_limit():
    assert protocol.nesting_depth(7, 10) == 0
    assert protocol.nesting_depth([], 10) == 1
    assert protocol.nesting_depth({"a": [1, {"b": ()}], "c": 2}, 10) == 4
    assert protocol.nesting_depth(nested(50), 100) == 50
    assert protocol.nesting_depth(nested(5000), 100) == 101   # no recursion, stops one level past
    cyclic: list = []
    cyclic.append(cyclic)
    assert protocol.nesting_depth(cyclic, 100) == 101


def test_args_nested_at_the_limit_pass_and_one_level_more_is_bad_argument():
    # the args map is level 1, task level 2, payload level 3
    ok = {"task": {"key": "k", "module": "m", "kind": "k", "payload": nested(protocol.MAX_DEPTH - 3, {})}}
    assert protocol.nesting_depth(ok, 10_000) == protocol.MAX_DEPTH
    assert protocol.decode_request(req("submit", ok, rid=RID)).args["task"]["key"] == "k"
    deep = {"task": {"key": "k", "module": "m", "kind": "k", "payload": nested(protocol.MAX_DEPTH - 2, {})}}
    exc = decode_error(req("submit", deep, rid=RID))
    assert exc.code == ErrorCode.BAD_ARGUMENT and exc.details["cid"] == "c1"
    assert f"nested deeper than {protocol.MAX_DEPTH} levels" in exc.message


@pytest.mark.parametrize("levels", [600, 900, 1000])
def test_deeply_nested_args_are_bad_argument_not_a_crash(levels):
    exc = decode_error(req("complete", {"id": 1, "epoch": 1, "result": nested(levels)}, rid=RID))
    assert exc.code == ErrorCode.BAD_ARGUMENT and exc.details["cid"] == "c1"


def test_a_body_nested_past_msgpacks_decoder_limit_is_bad_encoding():
    # fixmap {"args": [[[...]]]} built by hand: the encoder refuses to write this deep
    frames = [H, b"\x81" + body("args") + b"\x91" * 5000 + b"\x01"]
    assert decode_error(frames).code == ErrorCode.BAD_ENCODING


def test_check_body_size_is_the_brokers_too_large():
    protocol.check_body_size(b"\x00" * protocol.MAX_BODY)
    with pytest.raises(FanoError) as info:
        protocol.check_body_size(b"\x00" * (protocol.MAX_BODY + 1))
    assert info.value.code == ErrorCode.TOO_LARGE and str(protocol.MAX_BODY) in info.value.message
