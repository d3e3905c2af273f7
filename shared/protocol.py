"""Fano broker wire protocol, version 1 — this docstring is the specification.

Transport
---------
The broker binds a ZeroMQ ROUTER socket (``broker.sock`` in the run directory, or a ``tcp://``
endpoint) and a PUB socket for events (``events.sock``). Clients use a DEALER socket whose identity is
their program name. This module is the only code that builds or parses frames; the sockets themselves are set
up in :mod:`shared.sockets` (every option by ``configure_socket``; servers bind with ``bind``, which
makes an ``ipc://`` socket file 0600: only its user may connect).

Every request runs with the caller's role (:mod:`shared.roles`: ``worker:ACCOUNT``, ``module:NAME``,
``scheduler``, ``operator``), and one the role does not allow is answered ``FORBIDDEN``
(services/broker/roles.py has the rules). On ``ipc://`` the role is the one the identity's program name
implies; a ``tcp://`` endpoint is CURVE-encrypted, admits only the client keys of its ``authorized`` list,
and takes the role from the key (docs/security.md).

Frames
------
Request, client DEALER -> broker ROUTER, and its reply back::

    [HEADER, BODY]              (the ROUTER prepends the client's identity frame and routes the reply by it)

Event, broker PUB -> SUB::

    [TOPIC, HEADER, BODY]       TOPIC = :func:`event_topic`, e.g. b"evt.task.done/explorer/"

``HEADER`` is the literal ``b"FANO/1"``. ``BODY`` is a msgpack map (strings as str, binary as bin) no
larger than :data:`MAX_BODY` bytes; sockets drop messages above :data:`MAX_MESSAGE` outright.

Limits
------
- Size: a body above :data:`MAX_BODY` is answered ``TOO_LARGE``. The broker refuses it before reading
  it, so that reply carries ``cid: null``; the client library therefore checks the size itself before
  sending and raises ``TOO_LARGE`` without a round trip. A message whose frames hold more than
  :data:`MAX_MESSAGE` bytes together (``ZMQ_MAXMSGSIZE`` bounds each frame only) is read frame by frame,
  discarded without being copied (``shared.sockets.recv_bounded``) and answered ``TOO_LARGE`` with
  ``cid: null`` (the scheduler answers it ``disconnect``).
- Reply size: a reply over :data:`MAX_MESSAGE` bytes (what a client's socket accepts) is replaced by a
  ``TOO_LARGE`` error carrying its cid (:func:`encode_reply`). Pages (``list``, ``unconsumed``,
  ``kv_scan``) end once their records pass 1 MiB, with ``next`` to continue; ``list`` records leave
  out ``payload`` and ``result`` unless ``payloads: true``.
- Keys: whatever the broker stores under a key built from a request is checked against LMDB's 511-byte
  key limit at the door: request ids at most :data:`MAX_RID_BYTES` bytes of UTF-8; task keys, kv keys and
  conversation ids at most 400 bytes (``services/broker/ops_tasks.py``); quota numbers range-checked
  (``shared/quota.py``: ``INVALID_QUOTA``).
- Nesting: a request's ``args`` may nest maps and lists at most :data:`MAX_DEPTH` levels deep (the
  ``args`` map itself is level 1, so a ``submit`` payload gets ``MAX_DEPTH - 2``). Deeper arguments are
  answered ``BAD_ARGUMENT`` ("arguments nested deeper than N levels"); the client library checks this
  before sending too. The limit keeps every recursive walk of stored values (fingerprints, msgpack's
  own encoder) far from Python's recursion limit. A body nested past msgpack's decoder limit (1024
  levels) is not msgpack this broker can read: ``BAD_ENCODING``.

Request body::

    {"cmd": str,                # a name from COMMANDS
     "cid": str,                # correlation id, echoed in the reply; clients drop other replies
     "rid": str,                # request id; REQUIRED for mutating commands (see below)
     "args": {...}}             # the command's arguments, checked against COMMANDS

Reply body::

    {"cid": str, "ok": true,  "result": ...}
    {"cid": str, "ok": false, "error": {"code": int, "name": str, "message": str, "details": {...}}}

Event body::

    {"seq": int, "ts": float, "type": str, ...type-specific fields (task id, state, account...)}

Sequence numbers increase by one per event with no gaps; a subscriber that sees a gap (or starts late)
calls ``events`` with the last seq it processed to catch up from the broker's durable outbox.

Exactly-once for retries
------------------------
Every mutating command carries a client-generated ``rid``; a retry of one logical call resends the
identical body (the client library uses the rid as the cid of a mutating call, so even a process
that persisted a rid and repeats the call after a crash sends the same bytes). The broker stores the reply under the rid
in the same transaction as the effect, so a retried request returns the first reply and is applied once. Any unique
string of 8-128 characters (at most :data:`MAX_RID_BYTES` bytes in UTF-8, so that it fits an LMDB key; a longer one is
``BAD_ARGUMENT``) is a valid rid; the client library's are time-ordered (:func:`new_request_id`), which keeps the
request log's inserts together on disk. A rid
that arrives with a different body is ``REQUEST_ID_REUSED``. Replies are sent only after the
transaction has committed (fsync'd). Read-only commands are run after the batch's commit, one at a time
(each reply built and sent before the next; none built for a client that has gone), so they see every
write committed before them and never an uncommitted one.

Errors
------
Codes and names are in :mod:`shared.errors` (the one error table). Malformed input never crashes the
broker: every request that has an identity gets an error reply; the broker counts each error by name
(see ``stats``).

Commands
--------
:data:`COMMANDS` maps each name to whether it mutates and to its argument schema. The argument
conventions (task fields, lease replies, quota specs, module transactions) are documented in the
handlers' docstrings (``services/broker/ops_*.py``); the stable CLI shapes are in ``docs/cli.md``.

Worker protocol (scheduler <-> backend workers, and queries to the scheduler)
-----------------------------------------------------------------------------
The scheduler binds a ROUTER (``scheduler.sock``); each backend worker connects a DEALER whose identity
starts with its program name. Frames are ``[WORKER_HEADER, BODY]`` with ``WORKER_HEADER = b"FANOW/1"``
and ``BODY`` a msgpack map whose ``type`` is one of :data:`WORKER_MESSAGES`::

    worker -> scheduler
      ready      {worker, account, backend, modes: [..], finishing?}  idle: give me one task (no prefetch);
                                                                      ``finishing``: the task whose answer
                                                                      it is delivering (one assign is kept
                                                                      and started once that is done)
      heartbeat  {worker, task_id: int|null}                         every HEARTBEAT_INTERVAL seconds
      done       {worker, task_id, epoch, outcome, message, retry_at} outcome: done | failed | refused |
                                                                      stale | declined | cancelled
      disconnect {worker}                                            clean exit
    scheduler -> worker
      assign     {task_id, ttl}          lease this task from the broker (the worker leases it itself, so
                                         a scheduler crash never strands a lease) and run it
      cancel     {task_id}               interrupt the in-flight request for this task
      heartbeat  {}
      disconnect {reason}                forget me: recreate the socket and send ready again (a reason
                                         starting ``FORBIDDEN: ``, :data:`REFUSED`: the worker's role does not
                                         allow it; it asks again after LIVENESS heartbeats)

Every field above that the receiver reads is type- and range-checked by :func:`decode_worker`
(:data:`WORKER_MESSAGES` required, :data:`WORKER_OPTIONAL` optional); a message that fails is answered
``disconnect`` with the reason (a ``query`` whose ``cid`` is readable gets an ``answer`` with the error),
and counted by name in the scheduler's ``stats`` errors. A query whose handler fails is answered
``INTERNAL``; nothing a peer sends stops the scheduler.

A peer that has sent nothing for ``LIVENESS`` heartbeat intervals is dead: the scheduler forgets the
worker; the worker closes its socket, opens a new one and re-announces itself with ``ready`` (or a
``heartbeat`` naming its running task). Operators and ``fanoctl`` ask the scheduler questions on the
same socket::

      query      {cid, what: "why"|"backends"|"top"|"weights"|"stats", task_id?, set?}
                 -> answer {cid, ok, result | error}      (shapes: services/scheduler/queries.py)
"""
from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import msgpack

from shared import stored
from shared.errors import ErrorCode, FanoError, bad_argument

HEADER = b"FANO/1"
VERSION = 1
MAX_BODY = 4 * 1024 * 1024          # soft limit: answered with TOO_LARGE
MAX_MESSAGE = 16 * 1024 * 1024      # hard limit: libzmq drops the connection (ZMQ_MAXMSGSIZE)
MAX_DEPTH = 100                     # nesting levels of maps/lists in a request's args: BAD_ARGUMENT
# a request id is a key of the request log, and 8 bytes of time and the id a key of its time index:
# LMDB keys hold at most 511 bytes
MAX_RID_BYTES = 500
EVENT_PREFIX = b"evt."

# --- argument schema -------------------------------------------------------------------------------

ANY = object()


@dataclass(frozen=True)
class Arg:
    """One argument of a command: accepted types, whether it is required, its default."""

    types: tuple[Any, ...]          # accepted Python types, or (ANY,) for any value
    required: bool = False
    default: Any = None
    nullable: bool = True


def _arg(*types: Any, required: bool = False, default: Any = None, nullable: bool = True) -> Arg:
    return Arg(types, required, default, nullable)


STR, INT, NUM, BOOL, MAP, LIST = (str,), (int,), (int, float), (bool,), (dict,), (list, tuple)

TASK_ID = _arg(*INT, required=True, nullable=False)
EPOCH = _arg(*INT, required=True, nullable=False)

COMMANDS: dict[str, tuple[bool, dict[str, Arg]]] = {
    # name: (mutating, {arg: spec})
    "ping": (False, {}),
    "submit": (True, {"task": _arg(*MAP, required=True, nullable=False), "force": _arg(*BOOL, default=False)}),
    "get": (False, {"id": TASK_ID, "history": _arg(*BOOL, default=True)}),
    "list": (False, {"state": _arg(*STR), "module": _arg(*STR), "kind": _arg(*STR),
                     "after": _arg(*INT), "limit": _arg(*INT, default=100),
                     "payloads": _arg(*BOOL, default=False),     # records carry payload and result
                     "before": _arg(*INT),                        # descending from below this id
                     "rows": _arg(*BOOL, default=False)}),        # PENDING only: packed rows (op_list)
    "cancel": (True, {"id": TASK_ID, "reason": _arg(*STR, default="")}),
    "pause": (True, {"id": TASK_ID}),
    "resume": (True, {"id": TASK_ID}),
    "retry": (True, {"id": TASK_ID, "reset_attempts": _arg(*BOOL, default=True)}),
    "set_priority": (True, {"id": TASK_ID, "priority": _arg(*INT, required=True, nullable=False)}),
    "lease": (True, {"worker": _arg(*STR, required=True, nullable=False),
                     "account": _arg(*STR, required=True, nullable=False),
                     "backend": _arg(*STR, default=""),
                     "modes": _arg(*LIST, default=["standard"]),
                     "ttl": _arg(*NUM),             # default: broker.lease_ttl
                     "task_id": _arg(*INT),
                     "modules": _arg(*LIST)}),
    "renew": (True, {"id": TASK_ID, "epoch": EPOCH, "ttl": _arg(*NUM)}),
    "turn_begin": (True, {"id": TASK_ID, "epoch": EPOCH,
                          "refund_unknown": _arg(*BOOL, default=False)}),   # the unknown turn never left
    "complete": (True, {"id": TASK_ID, "epoch": EPOCH, "result": _arg(ANY),
                        "reconciled": _arg(*BOOL, default=False),
                        "mode": _arg(*STR)}),   # reconciled: the mode the provider confirmed it in
    "fail": (True, {"id": TASK_ID, "epoch": EPOCH,
                    "error_class": _arg(*STR, required=True, nullable=False),
                    "message": _arg(*STR, default=""), "sent": _arg(*BOOL, default=True),
                    "retry_after": _arg(*NUM),
                    "scope": _arg(*STR, default="mode")}),   # quota: "mode" | "account" (every mode)
    "refuse": (True, {"id": TASK_ID, "epoch": EPOCH, "until": _arg(*NUM),
                      "message": _arg(*STR, default="")}),
    # the scheduler only: void a silent worker's lease now (services/broker/ops_lease.py op_revoke)
    "revoke": (True, {"id": TASK_ID, "epoch": EPOCH, "worker": _arg(*STR, required=True, nullable=False),
                      "reason": _arg(*STR, default="")}),
    "quota_show": (False, {"account": _arg(*STR)}),
    "quota_set": (True, {"account": _arg(*STR, required=True, nullable=False),
                         "mode": _arg(*STR, required=True, nullable=False),
                         "windows": _arg(*LIST, *STR, required=True, nullable=False)}),
    "quota_reset": (True, {"account": _arg(*STR, required=True, nullable=False), "mode": _arg(*STR),
                           "usage": _arg(*BOOL, default=True), "spec": _arg(*BOOL, default=False)}),
    "cooldown": (True, {"account": _arg(*STR, required=True, nullable=False), "mode": _arg(*STR),
                        "until": _arg(*NUM, required=True, nullable=False), "reason": _arg(*STR, default="")}),
    "account_pause": (True, {"account": _arg(*STR, required=True, nullable=False), "reason": _arg(*STR, default="")}),
    "account_resume": (True, {"account": _arg(*STR, required=True, nullable=False)}),
    "txn": (True, {"module": _arg(*STR, required=True, nullable=False),
                   "ops": _arg(*LIST, required=True, nullable=False)}),
    "kv_get": (False, {"module": _arg(*STR, required=True, nullable=False),
                       "key": _arg(*STR, required=True, nullable=False)}),
    "kv_scan": (False, {"module": _arg(*STR, required=True, nullable=False), "prefix": _arg(*STR, default=""),
                        "after": _arg(*STR), "limit": _arg(*INT, default=100),
                        "versions": _arg(*BOOL, default=False)}),
    "unconsumed": (False, {"module": _arg(*STR, required=True, nullable=False), "after": _arg(*INT),
                           "limit": _arg(*INT, default=100)}),
    "stats": (False, {}),
    "events": (False, {"after": _arg(*INT, default=0), "limit": _arg(*INT, default=1000)}),
    "grow_map": (True, {"size": _arg(*INT, required=True, nullable=False)}),
    "compact": (True, {"older_than": _arg(*NUM)}),   # default: broker.task_retention
}


def is_mutating(cmd: str) -> bool:
    return COMMANDS[cmd][0]


# --- messages ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Request:
    cmd: str
    cid: str | bytes        # echoed as it came: a peer may send either
    args: dict[str, Any]
    rid: str | None = None
    body: bytes = field(default=b"", compare=False, repr=False)  # the raw body, for retry fingerprints


@dataclass(frozen=True)
class Reply:
    cid: str | bytes | None
    ok: bool
    result: Any = None
    error: dict[str, Any] | None = field(default=None)
    packed_result: bytes | None = field(default=None, repr=False)  # result already in msgpack

    def raise_for_error(self) -> Any:
        if not self.ok:
            raise FanoError.from_wire(self.error or {})
        return self.result


class Event(dict[str, Any]):
    """An event body; ``packed`` holds its msgpack once encoded, so the outbox and PUB share one encoding."""

    __slots__ = ("packed",)
    packed: bytes


def new_id() -> str:
    """A fresh correlation id (random, 128 bits)."""
    return uuid.uuid4().hex


def new_request_id() -> str:
    """A fresh request id: 32 hex digits, time-ordered (like a UUIDv7).

    48 bits of wall-clock milliseconds, then 80 random bits (the uniqueness). The broker's request log
    is keyed by request id: ids made at about the same time sort next to each other, so a group commit
    dirties a few adjacent B-tree pages instead of one random page per request (each page a commit
    writes costs broker CPU). The time part means nothing else (a clock step is harmless), and any
    unique string of 8-128 characters remains a valid request id.
    """
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


def _pack(obj: Any) -> bytes:
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


def _unpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise FanoError(ErrorCode.BAD_ENCODING, f"body is not valid msgpack: {type(exc).__name__}") from None


def encode_request(req: Request) -> list[bytes]:
    body = {"cmd": req.cmd, "cid": req.cid, "args": req.args}
    if req.rid is not None:
        body["rid"] = req.rid
    return [HEADER, _pack(body)]


def check_body_size(body: bytes) -> None:
    """Raise ``TOO_LARGE`` if an encoded body exceeds :data:`MAX_BODY` (broker and client both check)."""
    if len(body) > MAX_BODY:
        raise FanoError(ErrorCode.TOO_LARGE, f"body of {len(body)} bytes exceeds {MAX_BODY}")


def nesting_depth(value: Any, limit: int) -> int:
    """Levels of maps/lists in ``value`` (a scalar is 0), counting no further than ``limit + 1``.

    Breadth-first and iterative: it never recurses, so it is safe on any input (even a cyclic one
    built by a caller), and it stops one level past ``limit``.
    """
    containers = (dict, list, tuple)
    level, depth = ([value] if isinstance(value, containers) else []), 0
    while level and depth <= limit:  # ``level``: the containers at this depth, scalars left out
        depth += 1
        # map keys are scalars on the wire (msgpack array keys are unhashable and fail to decode)
        level = [x for c in level for x in (c.values() if isinstance(c, dict) else c)
                 if isinstance(x, containers)]
    return depth


def check_depth(cmd: str, args: Any) -> None:
    """Raise ``BAD_ARGUMENT`` if ``args`` nest deeper than :data:`MAX_DEPTH` (broker and client both check)."""
    if nesting_depth(args, MAX_DEPTH) > MAX_DEPTH:
        raise bad_argument(f"{cmd}: arguments nested deeper than {MAX_DEPTH} levels of maps/lists")


def _check_args(cmd: str, raw: Any) -> dict[str, Any]:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise bad_argument("args must be a map")
    spec = COMMANDS[cmd][1]
    unknown = raw.keys() - spec.keys()
    if unknown:
        raise bad_argument(f"{cmd}: unknown argument(s) {sorted(map(str, unknown))}")
    out = {}
    for name, arg in spec.items():
        if name not in raw or (raw[name] is None and arg.nullable and not arg.required):
            if arg.required:
                raise bad_argument(f"{cmd}: missing argument {name!r}", field=name)
            out[name] = list(arg.default) if isinstance(arg.default, list) else arg.default
            continue
        value = raw[name]
        if ANY not in arg.types:
            # bool is an int subclass in Python; an int field must not accept True
            ok = isinstance(value, arg.types) and not (isinstance(value, bool) and bool not in arg.types)
            if not ok:
                want = "/".join(t.__name__ for t in arg.types)
                raise bad_argument(f"{cmd}: argument {name!r} must be {want}, got {type(value).__name__}",
                                   field=name)
        out[name] = value
    return out


def decode_request(frames: list[bytes]) -> Request:
    """Parse the frames a ROUTER received *after* the identity frame. Raises FanoError.

    On error the exception's ``details`` may carry the ``cid`` so the reply can still be correlated.
    """
    if len(frames) != 2:
        raise FanoError(ErrorCode.BAD_FRAME, f"expected 2 frames [header, body], got {len(frames)}")
    header, body = frames
    if header != HEADER:
        raise FanoError(ErrorCode.BAD_VERSION, f"unsupported protocol header {bytes(header[:16])!r}; "
                        f"this broker speaks {HEADER!r}")
    check_body_size(body)
    msg = _unpack(body)
    if not isinstance(msg, dict):
        raise FanoError(ErrorCode.BAD_ENCODING, "body must be a msgpack map")
    cid = msg.get("cid")
    if not isinstance(cid, (str, bytes)) or not cid:
        raise FanoError(ErrorCode.BAD_ARGUMENT, "missing or invalid correlation id 'cid'")
    ctx = {"cid": cid}
    cmd = msg.get("cmd")
    if not isinstance(cmd, str):
        raise FanoError(ErrorCode.BAD_ARGUMENT, "missing or invalid 'cmd'", ctx)
    if cmd not in COMMANDS:
        raise FanoError(ErrorCode.UNKNOWN_COMMAND, f"unknown command {cmd[:64]!r}", ctx)
    rid = msg.get("rid")
    if is_mutating(cmd):
        if not isinstance(rid, str) or not (8 <= len(rid) <= 128) or len(rid.encode()) > MAX_RID_BYTES:
            raise FanoError(ErrorCode.BAD_ARGUMENT, f"{cmd} mutates state and needs a request id 'rid' "
                            f"(string of 8-128 characters, at most {MAX_RID_BYTES} bytes in UTF-8)", ctx)
    else:
        rid = None
    try:
        # here, before any handler walks the arguments recursively (and would hit RecursionError)
        check_depth(cmd, msg.get("args"))
        args = _check_args(cmd, msg.get("args"))
    except FanoError as exc:
        exc.details.update(ctx)
        raise
    return Request(cmd=cmd, cid=cid, args=args, rid=rid, body=bytes(body))


_REPLY_CID = b"\x83" + _pack("cid")                     # a map of 3 entries; the first key
_REPLY_OK_RESULT = _pack("ok") + b"\xc3" + _pack("result")  # "ok": true, and the key of the result


def encode_reply(reply: Reply) -> list[bytes]:
    """The reply's frames. A reply over :data:`MAX_MESSAGE` bytes, which the client's socket would drop
    (and the caller take the broker for unavailable), is replaced by a ``TOO_LARGE`` error."""
    if reply.ok and reply.packed_result is not None:
        # {"cid": cid, "ok": true, "result": <packed>} assembled around the stored encoding
        body = b"".join((_REPLY_CID, _pack(reply.cid), _REPLY_OK_RESULT, reply.packed_result))
    else:
        fields: dict[str, Any] = {"cid": reply.cid, "ok": reply.ok}
        if reply.ok:
            fields["result"] = reply.result
        else:
            fields["error"] = reply.error
        body = _pack(fields)
    if len(body) > MAX_MESSAGE:
        err = FanoError(ErrorCode.TOO_LARGE, f"reply of {len(body)} bytes exceeds {MAX_MESSAGE}: ask for less "
                        "(a smaller page, no payloads)")
        body = _pack({"cid": reply.cid, "ok": False, "error": err.to_wire()})
    return [HEADER, body]


def error_reply(cid: str | bytes | None, exc: FanoError) -> Reply:
    return Reply(cid=cid, ok=False, error=exc.to_wire())


def decode_reply(frames: list[bytes]) -> Reply:
    """Parse a reply on the client side. Raises FanoError(BAD_FRAME/BAD_ENCODING) on garbage.

    A ``kv_scan`` item the broker passed through as stored (:func:`shared.stored.kv_item`) is decoded here, into the
    same ``{"key", "version", "value"}`` map."""
    if len(frames) != 2 or frames[0] != HEADER:
        raise FanoError(ErrorCode.BAD_FRAME, "reply is not [FANO/1, body]")
    try:
        msg = msgpack.unpackb(frames[1], raw=False, strict_map_key=False, ext_hook=stored.reply_ext)
    except Exception as exc:  # msgpack (and a bad stored item) raise several unrelated types
        raise FanoError(ErrorCode.BAD_ENCODING, f"body is not valid msgpack: {type(exc).__name__}") from None
    if not isinstance(msg, dict) or "ok" not in msg:
        raise FanoError(ErrorCode.BAD_ENCODING, "reply body must be a map with 'ok'")
    return Reply(cid=msg.get("cid"), ok=bool(msg["ok"]), result=msg.get("result"), error=msg.get("error"))


def event_topic(event_type: str, module: object = None) -> bytes:
    """``b"evt." + type``, then ``b"/" + module + b"/"`` for an event of a module (a subscription prefix
    that selects one module's events; the trailing ``/`` keeps ``explorer`` from matching ``explorer2``)."""
    topic = EVENT_PREFIX + event_type.encode()
    return topic + b"/" + module.encode() + b"/" if isinstance(module, str) and module else topic


def encode_event(event: dict[str, Any]) -> list[bytes]:
    packed = getattr(event, "packed", None) or _pack(event)
    return [event_topic(event["type"], event.get("module")), HEADER, packed]


def decode_event(frames: list[bytes]) -> dict[str, Any]:
    if len(frames) != 3 or frames[1] != HEADER:
        raise FanoError(ErrorCode.BAD_FRAME, "event is not [topic, FANO/1, body]")
    msg = _unpack(frames[2])
    if not isinstance(msg, dict) or not isinstance(msg.get("seq"), int):
        raise FanoError(ErrorCode.BAD_ENCODING, "event body must be a map with an int 'seq'")
    return msg


def pack_value(obj: Any) -> bytes:
    """Encode a stored value (the broker stores msgpack, same conventions as the wire)."""
    return _pack(obj)


def unpack_value(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def unpack_rows(rows: bytes, count: int) -> list[Any]:
    """``count`` msgpack values packed back to back (a ``rows`` page of ``list``), as one list: one C call
    behind an array32 header, instead of an unpacker stepping through them."""
    out: list[Any] = msgpack.unpackb(b"\xdd" + count.to_bytes(4, "big") + rows, raw=False, strict_map_key=False)
    return out


# --- worker protocol ---------------------------------------------------------------------------------------

WORKER_HEADER = b"FANOW/1"
HEARTBEAT_INTERVAL = 1.0   # seconds, monotonic
LIVENESS = 3               # missed intervals before a peer is declared dead
OUTCOMES = ("done", "failed", "refused", "stale", "declined", "cancelled")
# how a ``disconnect`` reason starts when the sender's role does not allow what it sent (a worker key for
# another account: docs/security.md § Roles). Only the operator can put that right (the authorized list),
# so a worker asks again after LIVENESS heartbeats, not at once: an immediate retry would only spin
REFUSED = "FORBIDDEN: "

# message type -> required fields (with accepted types)
WORKER_MESSAGES: dict[str, dict[str, tuple[Any, ...]]] = {
    "ready": {"worker": STR, "account": STR, "backend": STR, "modes": LIST},
    "heartbeat": {},
    "done": {"worker": STR, "task_id": INT, "outcome": STR},
    "disconnect": {},
    "assign": {"task_id": INT},
    "cancel": {"task_id": INT},
    "query": {"cid": STR, "what": STR},
    "answer": {"cid": STR, "ok": BOOL},
}
# message type -> optional fields the receiver reads (absent or null, else of these types); others pass unchecked
WORKER_OPTIONAL: dict[str, dict[str, tuple[Any, ...]]] = {
    "ready": {"finishing": INT},
    "heartbeat": {"worker": STR, "task_id": INT},
    "done": {"epoch": INT, "message": STR, "retry_at": NUM},
    "disconnect": {"worker": STR, "reason": STR},
    "assign": {"ttl": NUM},
    "cancel": {},
    "query": {"task_id": INT, "set": MAP, "reset": BOOL},
    "answer": {"error": MAP},
}
MAX_NAME = 256           # characters of a name field (worker, account, backend, cid, what, modes)
MAX_TEXT = 4096          # characters of a free-text field (message, reason)
MAX_MODES = 8            # entries of ``modes``
MAX_WORLD_TIME = 2.0 ** 33   # a number field (retry_at, ttl) is finite and in [0, 2^33) (year 2242)
_TEXT_FIELDS = frozenset({"message", "reason"})


def _check_worker_field(msg_type: str, name: str, value: Any, types: tuple[Any, ...]) -> None:
    """Raise BAD_ARGUMENT unless ``value`` has one of ``types`` and lies in the field's range."""
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        want = "/".join(t.__name__ for t in types)   # only for the error: every message passes through here
        raise bad_argument(f"{msg_type}: field {name!r} must be {want}, got {type(value).__name__}", field=name)
    if isinstance(value, str):
        limit = MAX_TEXT if name in _TEXT_FIELDS else MAX_NAME
        if len(value) > limit:
            raise bad_argument(f"{msg_type}: field {name!r} longer than {limit} characters", field=name)
    elif isinstance(value, bool):
        pass
    elif float in types and isinstance(value, (int, float)):   # a time or a duration
        if not (0.0 <= value < MAX_WORLD_TIME):   # NaN fails this too
            raise bad_argument(f"{msg_type}: field {name!r} must be a finite number in [0, 2^33)", field=name)
    elif isinstance(value, int):
        if not 0 <= value < 2**63:   # task ids and epochs are the broker's 63-bit counters
            raise bad_argument(f"{msg_type}: field {name!r} out of range [0, 2^63)", field=name)
    elif name == "modes":
        if len(value) > MAX_MODES or not all(isinstance(m, str) and len(m) <= MAX_NAME for m in value):
            raise bad_argument(f"{msg_type}: modes must be at most {MAX_MODES} strings", field=name)


def encode_worker(msg_type: str, **fields: Any) -> list[bytes]:
    if msg_type not in WORKER_MESSAGES:
        raise ValueError(f"unknown worker message type {msg_type!r}")
    return [WORKER_HEADER, _pack({"type": msg_type, **fields})]


def decode_worker(frames: list[bytes]) -> dict[str, Any]:
    """Parse a worker-protocol message (frames after any identity). Raises FanoError on garbage.

    Every field the receiver reads is type- and range-checked here (:data:`WORKER_MESSAGES` required,
    :data:`WORKER_OPTIONAL` optional: absent or null, else of the listed types; strings at most
    :data:`MAX_NAME` characters, or :data:`MAX_TEXT` for ``message``/``reason``; integers in
    [0, 2^63); numbers finite in [0, 2^33)). Anything else is ``BAD_FRAME``, ``BAD_VERSION``,
    ``TOO_LARGE``, ``BAD_ENCODING``, ``UNKNOWN_COMMAND`` or ``BAD_ARGUMENT``, never another exception;
    the error of a ``query`` whose ``cid`` is readable carries it in ``details["cid"]``.
    """
    if len(frames) != 2:
        raise FanoError(ErrorCode.BAD_FRAME, f"expected 2 frames [header, body], got {len(frames)}")
    if frames[0] != WORKER_HEADER:
        raise FanoError(ErrorCode.BAD_VERSION, f"unsupported worker header {bytes(frames[0][:16])!r}")
    if len(frames[1]) > MAX_BODY:
        raise FanoError(ErrorCode.TOO_LARGE, f"body of {len(frames[1])} bytes exceeds {MAX_BODY}")
    msg = _unpack(frames[1])
    if not isinstance(msg, dict):
        raise FanoError(ErrorCode.BAD_ENCODING, "worker message body must be a msgpack map")
    msg_type = msg.get("type")
    # a list or map as "type" is unhashable: test the type before looking it up
    if not isinstance(msg_type, str) or msg_type not in WORKER_MESSAGES:
        raise FanoError(ErrorCode.UNKNOWN_COMMAND, f"unknown worker message {str(msg_type)[:40]!r}")
    try:
        for name, types in WORKER_MESSAGES[msg_type].items():
            _check_worker_field(msg_type, name, msg.get(name), types)
        for name, types in WORKER_OPTIONAL[msg_type].items():
            if msg.get(name) is not None:
                _check_worker_field(msg_type, name, msg[name], types)
    except FanoError as exc:
        cid = msg.get("cid")
        if msg_type == "query" and isinstance(cid, str) and len(cid) <= MAX_NAME:
            exc.details["cid"] = cid   # a query with a readable cid gets its error as an answer
        raise
    return msg
