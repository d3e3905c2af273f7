"""The broker client library: the only way other code talks to the broker.

Lazy pirate (zguide ch. 4): send, poll for a reply up to ``timeout``; on silence close the socket,
open a new one, resend the *same* request id, and give up with :class:`BrokerUnavailable` after
``retries`` attempts. Because mutating requests carry one request id across all attempts, a request
whose reply was lost (broker killed after commit, before reply) is applied once and answered from the
broker's request log on retry.

Requests the broker would refuse without reading them (a body over ``protocol.MAX_BODY``, arguments
nested deeper than ``protocol.MAX_DEPTH``) are refused here, before anything is sent: the broker's
``TOO_LARGE`` reply cannot carry our correlation id, so waiting for it would end as "unavailable".

Replies are never larger than ``protocol.MAX_MESSAGE`` (the most this socket accepts; libzmq would drop
a larger one and the call would look unanswered): the broker replaces such a reply by ``TOO_LARGE``, and
its pages stop at a byte budget. Every error reply raises :class:`shared.errors.FanoError` with the
broker's code; only silence becomes ``BrokerUnavailable``. Storage refusals (``MAP_FULL``, ``DISK_FULL``;
``shared.errors.STORAGE_REFUSALS``) pass by themselves: programs back off and retry them (a mutating call with the same
``rid``) rather than exit.

A client is not thread-safe: use one per thread.

A ``tcp://`` endpoint is reached with CURVE: ``keys`` (the program's key pair and the server's public
key) come from :meth:`shared.config.Config.client_keys`; without them such an endpoint raises
:class:`shared.keys.KeysError` (docs/security.md).
"""
from __future__ import annotations

import builtins
import logging
import time
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

import zmq

from shared import protocol, sockets
from shared import txn as txn_ops
from shared.errors import BrokerUnavailable, FanoError
from shared.records import EventsReply, KvItem, KvPage, LeaseReply, SubmitReply, TaskPage, TaskRecord

if TYPE_CHECKING:
    from shared.config import Config
    from shared.keys import ClientKeys

log = logging.getLogger(__name__)

# a reply whose shape shared/records.py does not (yet) describe: a msgpack map
Json = dict[str, Any]


class BrokerClient:
    # every txn also wakes the module it writes to (a ``notify`` op): set by writers that are not the
    # module itself, such as fanoctl, so that a human's change is acted on at once
    notify_writes = False

    def __init__(self, endpoint: str, name: str = "client", timeout: float = 2.5, retries: int = 3,
                 context: zmq.Context[zmq.Socket[bytes]] | None = None, keys: ClientKeys | None = None):
        if retries < 1:
            raise ValueError("retries must be >= 1")
        from shared.keys import KeysError, needs_curve
        if needs_curve(endpoint) and keys is None:   # now, not at the first call: a program refuses to start
            raise KeysError(f"{endpoint} is a network endpoint: {name} needs its CURVE keys")
        self.keys = keys
        self.endpoint = endpoint
        self.name = name
        self.timeout = timeout
        self.retries = retries
        self._ctx = context or zmq.Context.instance()
        self._sock: zmq.Socket[bytes] | None = None
        self._poller: zmq.Poller | None = None
        self.resends = 0  # attempts beyond the first, across the client's life (for monitoring)
        self.garbage = 0  # frames on our socket that were no reply at all (ignored, logged)

    # --- plumbing -----------------------------------------------------------------------------------

    def _socket(self) -> zmq.Socket[bytes]:
        if self._sock is None:
            sock = self._ctx.socket(zmq.DEALER)
            sockets.configure_socket(sock, "dealer", identity=self.name)
            sockets.connect(sock, self.endpoint, self.keys)
            self._sock = sock
            # one poller per socket: Socket.poll() would build and tear down a Poller on every call
            self._poller = zmq.Poller()
            self._poller.register(sock, zmq.POLLIN)
        return self._sock

    def _reset(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
            self._poller = None

    def close(self) -> None:
        self._reset()

    def __enter__(self) -> BrokerClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def call(self, cmd: str, rid: str | None = None, timeout: float | None = None,
             retries: int | None = None, **args: Any) -> Any:
        """Send one command and return its result; raise FanoError on an error reply.

        ``rid`` may be given to make a call idempotent across client restarts too (a caller that
        persisted the rid before a crash can repeat the call safely).
        """
        if cmd not in protocol.COMMANDS:
            raise ValueError(f"unknown command {cmd!r}")
        if protocol.is_mutating(cmd):
            rid = rid or protocol.new_request_id()
        else:
            rid = None
        timeout = self.timeout if timeout is None else timeout
        attempts = self.retries if retries is None else retries
        # the same bytes on every attempt (and from any process repeating a persisted rid): the broker
        # recognises a retry by them, so a mutating call's correlation id is its request id
        cid = rid if rid is not None else protocol.new_id()
        frames = self._encode(cmd, cid, rid, args)
        for attempt in range(attempts):
            if attempt:
                self.resends += 1
            sock = self._socket()
            try:
                sockets.send_nowait(sock, frames)
            except zmq.Again:
                self._reset()
                time.sleep(min(timeout, 0.05))
                continue
            reply = self._await(sock, cid, timeout)
            if reply is None:
                self._reset()  # the lazy pirate: a silent socket is closed, never reused
                continue
            return reply.raise_for_error()
        raise BrokerUnavailable(f"broker at {self.endpoint} did not answer {cmd!r} "
                                f"after {attempts} attempt(s) of {timeout:g}s")

    @staticmethod
    def _encode(cmd: str, cid: str, rid: str | None, args: Json) -> builtins.list[bytes]:
        """The request's frames; raises the broker's own BAD_ARGUMENT / TOO_LARGE for what it would refuse."""
        protocol.check_depth(cmd, args)  # first: msgpack's encoder would fail with a bare ValueError
        frames = protocol.encode_request(protocol.Request(cmd=cmd, cid=cid, args=args, rid=rid))
        protocol.check_body_size(frames[1])
        return frames

    def _await(self, sock: zmq.Socket[bytes], cid: str, timeout: float) -> protocol.Reply | None:
        deadline = time.monotonic() + timeout
        poller = self._poller
        assert poller is not None   # made with the socket by _socket()
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(int(left * 1000) + 1):
                return None
            try:
                reply = protocol.decode_reply(sock.recv_multipart())
            except FanoError as exc:   # garbage on our socket: ignore, keep waiting for ours
                self.garbage += 1
                log.warning("%s: ignoring an undecodable message on the broker socket (%s; %d so far)",
                            self.name, exc, self.garbage)
                continue
            if reply.cid == cid:
                return reply
            # a late reply to an earlier call: drop it

    # --- typed helpers (one per command; arguments as in shared.protocol.COMMANDS; replies as in
    # shared.records where it describes them) -----------------------------------------------------------

    def ping(self) -> Json:
        return cast(Json, self.call("ping"))

    def submit(self, key: str, module: str, kind: str, payload: Any = None, force: bool = False,
               **fields: Any) -> SubmitReply:
        """Submit a task; returns ``{"task": {...}, "created": bool}`` (created False: key known)."""
        task = {"key": key, "module": module, "kind": kind, "payload": payload if payload is not None else {}}
        task.update(fields)
        return cast(SubmitReply, self.call("submit", task=task, force=force))

    def get(self, task_id: int, history: bool = True) -> TaskRecord:
        return cast(TaskRecord, self.call("get", id=task_id, history=history))

    def list(self, **filters: Any) -> TaskPage:
        return cast(TaskPage, self.call("list", **filters))

    def cancel(self, task_id: int, reason: str = "") -> Json:
        return cast(Json, self.call("cancel", id=task_id, reason=reason))

    def pause(self, task_id: int) -> Json:
        return cast(Json, self.call("pause", id=task_id))

    def resume(self, task_id: int) -> Json:
        return cast(Json, self.call("resume", id=task_id))

    def retry(self, task_id: int, reset_attempts: bool = True) -> Json:
        return cast(Json, self.call("retry", id=task_id, reset_attempts=reset_attempts))

    def set_priority(self, task_id: int, priority: int) -> Json:
        return cast(Json, self.call("set_priority", id=task_id, priority=priority))

    def lease(self, worker: str, account: str, **kw: Any) -> LeaseReply:
        return cast(LeaseReply, self.call("lease", worker=worker, account=account, **kw))

    def renew(self, task_id: int, epoch: int, ttl: float | None = None, rid: str | None = None) -> Json:
        return cast(Json, self.call("renew", rid=rid, id=task_id, epoch=epoch, ttl=ttl))

    def turn_begin(self, task_id: int, epoch: int, rid: str | None = None, refund_unknown: bool = False) -> Json:
        """Record the intent to send this turn (before the request leaves the worker). ``refund_unknown``:
        the reconciled previous attempt spent nothing, so its unit is given back."""
        extra = {"refund_unknown": True} if refund_unknown else {}
        return cast(Json, self.call("turn_begin", rid=rid, id=task_id, epoch=epoch, **extra))

    def complete(self, task_id: int, epoch: int, result: Any = None, rid: str | None = None,
                 reconciled: bool = False, mode: str | None = None) -> Json:
        """``reconciled``: the result is an earlier attempt's answer recovered from the provider; nothing
        was sent under this lease, so its quota unit is refunded. ``mode`` (reconciled only): the mode that
        answer was served in, as the provider confirmed it — ``served.mode`` then states it, not the mode
        of this lease."""
        extra: Json = {"mode": mode} if mode is not None else {}
        return cast(Json, self.call("complete", rid=rid, id=task_id, epoch=epoch, result=result,
                                    reconciled=reconciled, **extra))

    def fail(self, task_id: int, epoch: int, error_class: str, message: str = "", sent: bool = True,
             retry_after: float | None = None, rid: str | None = None, scope: str = "mode") -> Json:
        """``scope`` (class quota): ``"account"`` cools every mode of the account, not only the leased one."""
        return cast(Json, self.call("fail", rid=rid, id=task_id, epoch=epoch, error_class=error_class,
                                    message=message, sent=sent, retry_after=retry_after, scope=scope))

    def refuse(self, task_id: int, epoch: int, until: float | None = None, message: str = "") -> Json:
        return cast(Json, self.call("refuse", id=task_id, epoch=epoch, until=until, message=message))

    def quota_show(self, account: str | None = None) -> Json:
        return cast(Json, self.call("quota_show", account=account))

    def quota_set(self, account: str, mode: str, windows: builtins.list[str]) -> Json:
        return cast(Json, self.call("quota_set", account=account, mode=mode, windows=windows))

    def quota_reset(self, account: str, mode: str | None = None, usage: bool = True, spec: bool = False) -> Json:
        return cast(Json, self.call("quota_reset", account=account, mode=mode, usage=usage, spec=spec))

    def cooldown(self, account: str, until: float, mode: str | None = None, reason: str = "") -> Json:
        return cast(Json, self.call("cooldown", account=account, mode=mode, until=until, reason=reason))

    def txn(self, module: str, ops: builtins.list[Json], rid: str | None = None) -> Json:
        """One module transaction: ``ops`` built with :mod:`shared.txn` (the wire reference); most callers
        run it through :func:`shared.txn.conditional` or :func:`shared.txn.update` instead."""
        if self.notify_writes:
            ops = [*ops, txn_ops.notify(f"changed by {self.name}")]
        return cast(Json, self.call("txn", module=module, ops=ops, rid=rid))

    def kv_get(self, module: str, key: str) -> KvItem | None:
        return cast("KvItem | None", self.call("kv_get", module=module, key=key))

    def kv_scan(self, module: str, prefix: str = "", after: str | None = None, limit: int = 100,
                versions: bool = False) -> KvPage:
        """A page of records under ``prefix``; ``versions``: ``[key, version]`` pairs instead of items."""
        return cast(KvPage, self.call("kv_scan", module=module, prefix=prefix, after=after, limit=limit,
                                      versions=versions))

    def _kv_pages(self, module: str, prefix: str, page: int, versions: bool = False) -> Iterator[Any]:
        """Every item of the ``kv_scan`` pages under ``prefix``, read as the caller iterates."""
        after = None
        while True:
            res = self.kv_scan(module, prefix=prefix, after=after, limit=page, versions=versions)
            yield from res["items"]
            after = res["next"]
            if not after:
                return

    def kv_items(self, module: str, prefix: str = "", page: int = 500) -> Iterator[tuple[str, int, Any]]:
        """Every ``(key, version, value)`` under ``prefix`` in ``module``'s namespace, in key order, read
        ``page`` records per request as the caller iterates (stop iterating to stop reading)."""
        for item in self._kv_pages(module, prefix, page):
            yield item["key"], item["version"], item["value"]

    def kv_versions(self, module: str, prefix: str = "", page: int = 1000) -> Iterator[tuple[str, int]]:
        """Every ``(key, version)`` under ``prefix`` in ``module``'s namespace, in key order, without the
        values (``kv_scan`` with ``versions``)."""
        yield from ((key, version) for key, version in self._kv_pages(module, prefix, page, versions=True))

    def unconsumed(self, module: str, after: int | None = None, limit: int = 100) -> TaskPage:
        """Settled tasks of ``module`` not yet acked by it (what a restarted module must still apply)."""
        return cast(TaskPage, self.call("unconsumed", module=module, after=after, limit=limit))

    def stats(self) -> Json:
        return cast(Json, self.call("stats"))

    def events(self, after: int = 0, limit: int = 1000) -> EventsReply:
        return cast(EventsReply, self.call("events", after=after, limit=limit))


def connect(config: Config | None = None, name: str = "client", **kw: Any) -> BrokerClient:
    """A client for the broker of the given (or default) configuration, with program ``name``'s CURVE keys
    when the broker's endpoint is ``tcp://``."""
    if config is None:
        from shared.config import load_config
        config = load_config()
    return BrokerClient(config.broker_endpoint, name=name, keys=config.client_keys(name), **kw)
