"""Mutated messages for the socket fuzz tests: every way a peer can get a frame wrong.

:class:`Mutator` builds, from a seeded ``random.Random``, messages (lists of frames) for the broker's
request protocol (``FANO/1``), the worker protocol (``FANOW/1``) or a subscriber of the event socket: valid
requests with arguments replaced by values of the wrong type or out of range (and nested structures of
them), bodies with bytes flipped, inserted, cut or truncated, random msgpack values as bodies, wrong
headers and frame counts, bad correlation and request ids, nesting bombs, oversized bodies, and
subscriptions of hostile topics. The tests decide how many of each.
"""
from __future__ import annotations

import random
from typing import Any

import msgpack

from shared import protocol

H, WH = protocol.HEADER, protocol.WORKER_HEADER

# values that have broken or could break a handler: wrong types, edges of every integer width, huge
# and non-finite floats, strings past key limits, NULs, names of real things, specs near their limits
VALUES: list[Any] = [
    None, True, False, 0, 1, 2, 7, -1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, -2**63,
    0.5, -0.0, 1e15, 1e16, 1.7e9, 1e300, -1e300, float("nan"), float("inf"), float("-inf"),
    "", "\x00", "x", "é", "\U0001F600" * 130, "y" * 600, "z" * 5000, "a\x00b", "acct", "explorer", "documenter",
    "standard", "deep", "PENDING", "DONE", "transient", "unknown", "5/day", "1/1s", f"{2**64}/1h", "3/1e300s",
    "2/day@23:00 Asia/Kolkata", "1/week@mon 09:00 Nowhere/Zone", "5/1h reserve explorer=3,nobody=9",
    "0/1h", "1000000000/day", b"", b"\x00\xff", b"\xc1", [], [None], [1, 2], ["standard", "deep"], [[[]]],
    [{}], {}, {"a": 1}, {1: 2}, {None: 1}, {"": ""}, {"op": "put", "key": "k", "value": 1},
    {"op": "submit", "task": {"key": "z", "module": "explorer", "kind": "k"}}, {"op": "ack", "task_id": 1},
    {"op": "check", "key": "k", "if_version": 2**64 - 1}, {"op": "delete", "key": "k"},
    {"op": "put", "key": "k", "value": 1, "ttl": 1e300}, {"key": "k", "module": "explorer", "kind": "ask"},
    {"conversation": "c" * 600}, {"account": "acct"}, {"backends": ["acct", 1]}, {"mode": "turbo"},
    {"kind": "rolling", "seconds": 1e300, "limit": 1}, {"kind": "daily", "limit": 2**64 - 1, "tz": "Mars/Base"},
]
FIELD_NAMES = ["key", "module", "kind", "payload", "requires", "attrs", "not_before", "priority", "max_attempts",
               "op", "task_id", "value", "if_version", "ttl", "task", "conversation", "account", "mode",
               "backends", "epoch", "limit", "reserves", "seconds", "worker", "modes", "set", "what"]


def _base_args() -> dict[str, dict]:
    """A valid argument map for every broker command (grow_map: a size it refuses)."""
    base: dict[str, dict] = {c: {} for c in protocol.COMMANDS}
    task = {"key": "fz", "module": "explorer", "kind": "ask", "payload": {"p": 1}, "requires": {"conversation": "c1"}}
    base.update({
        "submit": {"task": task}, "get": {"id": 1}, "list": {"state": "PENDING", "limit": 10},
        "cancel": {"id": 1}, "pause": {"id": 1}, "resume": {"id": 1}, "retry": {"id": 1},
        "set_priority": {"id": 1, "priority": 3}, "lease": {"worker": "w", "account": "acct"},
        "renew": {"id": 1, "epoch": 1}, "turn_begin": {"id": 1, "epoch": 1},
        "complete": {"id": 1, "epoch": 1, "result": "r"}, "fail": {"id": 1, "epoch": 1, "error_class": "transient"},
        "refuse": {"id": 1, "epoch": 1}, "quota_show": {"account": "acct"},
        "quota_set": {"account": "acct", "mode": "standard", "windows": ["50/1h"]},
        "quota_reset": {"account": "acct"}, "cooldown": {"account": "acct", "until": 1.0},
        "account_pause": {"account": "acct"}, "account_resume": {"account": "acct"},
        "txn": {"module": "explorer", "ops": [{"op": "put", "key": "k", "value": 1}, {"op": "ack", "task_id": 1}]},
        "kv_get": {"module": "explorer", "key": "k"}, "kv_scan": {"module": "explorer", "prefix": "k"},
        "unconsumed": {"module": "explorer"}, "events": {"after": 0, "limit": 5},
        "grow_map": {"size": 2**60}, "compact": {"older_than": 1e9},
    })
    return base


WORKER_BASE: list[dict[str, Any]] = [
    {"type": "ready", "worker": "backend-fz", "account": "fz", "backend": "sim", "modes": ["standard"]},
    {"type": "heartbeat", "worker": "backend-fz", "task_id": 1},
    {"type": "done", "worker": "backend-fz", "task_id": 1, "epoch": 1, "outcome": "declined", "message": "m",
     "retry_at": 1.8e9},
    {"type": "disconnect", "worker": "backend-fz"},
    {"type": "query", "cid": "q", "what": "why", "task_id": 1},
    {"type": "query", "cid": "q", "what": "weights", "set": {"explorer": 2}},
    {"type": "query", "cid": "q", "what": "backends"}, {"type": "query", "cid": "q", "what": "top"},
    {"type": "query", "cid": "q", "what": "idle"},
]


class Mutator:
    def __init__(self, seed: int):
        self.rnd = random.Random(seed)
        self.base = _base_args()

    # --- values ------------------------------------------------------------------------------------------

    def value(self, old=None, depth: int = 0):
        """A replacement for ``old``: usually a hostile value, sometimes ``old`` changed inside."""
        r = self.rnd
        if depth < 3 and isinstance(old, dict) and r.random() < 0.5:
            out = dict(old)
            k = r.choice([*out, *FIELD_NAMES]) if r.random() < 0.9 else r.choice(VALUES[:12])
            try:
                out[k] = self.value(out.get(k), depth + 1)
            except TypeError:   # an unhashable key: keep the map as it was
                pass
            return out
        if depth < 3 and isinstance(old, list) and old and r.random() < 0.5:
            items = list(old)
            i = r.randrange(len(items))
            items[i] = self.value(items[i], depth + 1)
            return items
        return r.choice(VALUES)

    def mutate_bytes(self, data: bytes) -> bytes:
        r, b = self.rnd, bytearray(data)
        for _ in range(r.randint(1, 4)):
            op = r.random()
            if not b:
                b += bytes([r.randrange(256)])
            elif op < 0.4:
                b[r.randrange(len(b))] = r.randrange(256)
            elif op < 0.6:
                i = r.randrange(len(b) + 1)
                b[i:i] = bytes(r.randrange(256) for _ in range(r.randint(1, 8)))
            elif op < 0.8:
                i = r.randrange(len(b))
                del b[i:i + r.randint(1, 8)]
            else:
                del b[r.randrange(len(b)):]
        return bytes(b)

    @staticmethod
    def pack(obj) -> bytes:
        return msgpack.packb(obj, use_bin_type=True)

    # --- broker requests ------------------------------------------------------------------------------------

    def request_body(self) -> dict:
        """A request body with one or two of its arguments (or its envelope) mutated."""
        r = self.rnd
        cmd = r.choice(list(self.base))
        args = dict(self.base[cmd])
        spec = list(protocol.COMMANDS[cmd][1]) or ["x"]
        for _ in range(r.randint(1, 2)):
            name = r.choice(spec) if r.random() < 0.9 else r.choice(FIELD_NAMES)
            args[name] = self.value(args.get(name))
        body = {"cmd": cmd, "cid": f"m{r.randrange(10**9)}", "args": args}
        if protocol.is_mutating(cmd):
            body["rid"] = f"fz{r.getrandbits(64):016x}"
        roll = r.random()
        if roll < 0.04:
            body[r.choice(["cmd", "cid", "rid", "args"])] = self.value()
        elif roll < 0.06:
            body.pop(r.choice(["cmd", "cid", "rid", "args"]), None)
        return body

    def request(self) -> list[bytes]:
        """One hostile broker message (frames after the identity)."""
        r = self.rnd
        roll = r.random()
        if roll < 0.5:
            return [H, self.pack(self.request_body())]
        if roll < 0.75:
            return [H, self.mutate_bytes(self.pack(self.request_body()))]
        if roll < 0.85:
            return [H, self.pack(self.value())]
        if roll < 0.95:
            body = self.pack(self.request_body())
            return r.choice([[body], [H], [b"FANO/2", body], [b"", body], [H, body, body], [H, b""],
                             [self.mutate_bytes(H), body], [H, body, b"", b"x"]])
        levels = r.choice([101, 300, 1100])   # past MAX_DEPTH; 1100 past msgpack's decoder limit too
        return [H, b"\x83" + b"".join(map(self.pack, ["cmd", "ping", "cid", "deep", "args"])) + b"\x81" +
                self.pack("a") + nested_bytes(levels)]

    # --- worker messages ---------------------------------------------------------------------------------

    def worker_body(self) -> dict:
        r = self.rnd
        msg = dict(r.choice(WORKER_BASE))
        for _ in range(r.randint(1, 3)):
            name = r.choice([*msg, "type", "task_id", "cid", "what", "set", "reset", "modes", "retry_at",
                             "epoch", "worker", "account", "outcome"])
            msg[name] = self.value(msg.get(name))
        if r.random() < 0.1:
            msg["type"] = r.choice(["assign", "cancel", "answer", "heartbeat", "nope", [1], {"a": 1}, 7])
        return msg

    def worker(self) -> list[bytes]:
        """One hostile worker-protocol message (frames after the identity)."""
        r = self.rnd
        roll = r.random()
        if roll < 0.55:
            return [WH, self.pack(self.worker_body())]
        if roll < 0.8:
            return [WH, self.mutate_bytes(self.pack(self.worker_body()))]
        if roll < 0.9:
            return [WH, self.pack(self.value())]
        body = self.pack(self.worker_body())
        return r.choice([[body], [WH], [H, body], [b"", body], [WH, body, body], [WH, b""],
                         [self.mutate_bytes(WH), body],
                         [WH, b"\x84" + b"".join(map(self.pack, ["type", "query", "cid", "d", "what", "top", "x"]))
                          + nested_bytes(1100)]])

    # --- event subscribers ---------------------------------------------------------------------------------

    def subscriber(self) -> list[bytes]:
        """One hostile message from a subscriber to the broker's event socket (an XSUB can send anything):
        subscriptions and unsubscriptions of mutated, empty, long and binary topics, and messages that are not
        subscriptions at all (requests, events, random bytes, several frames)."""
        r = self.rnd
        roll = r.random()
        topic = r.choice([protocol.EVENT_PREFIX, b"evt.task.", b"evt.task.done/explorer/", b"", b"\x00\xff",
                          b"x" * r.choice([1, 200, 5000]), self.mutate_bytes(b"evt.task.submitted")])
        if roll < 0.6:
            return [r.choice([b"\x01", b"\x00"]) + topic]
        if roll < 0.7:
            return [r.choice([b"\x01", b"\x00", b"\x02", b"\xff", b""]) + self.mutate_bytes(topic)]
        if roll < 0.8:
            return self.request()
        if roll < 0.9:
            return [r.choice([b"\x01", b"\x00"]) + topic, H, self.pack(self.value())]
        return [self.mutate_bytes(self.pack(self.value())) for _ in range(r.randint(1, 4))]


def nested_bytes(levels: int) -> bytes:
    """msgpack of ``1`` inside ``levels`` one-element arrays, built by hand: msgpack's own packer
    refuses to nest past 511 levels."""
    return b"\x91" * levels + b"\x01"
