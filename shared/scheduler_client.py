"""Ask the scheduler a question: ``query(endpoint, "why", task_id=12)`` -> the answer's result.

The scheduler answers ``query {cid, what, ...}`` with ``answer {cid, ok, result | error}`` on its
ROUTER (the worker protocol in :mod:`shared.protocol`); the answer shapes are documented in
``services/scheduler/queries.py``: ``why`` {task_id}, ``backends``, ``top``, ``weights`` {set}, ``stats``, ``idle``.

One fresh DEALER per call (queries are rare and come from short-lived processes like ``fanoctl``).
An error answer raises :class:`shared.errors.FanoError`; silence raises :class:`SchedulerUnavailable`
(a :class:`shared.errors.BrokerUnavailable`, so callers that map "the orchestrator is down" to an exit
code treat both alike). A ``tcp://`` scheduler needs the caller's CURVE ``keys``
(:meth:`shared.config.Config.client_keys`), as the broker client does.
"""
from __future__ import annotations

import os
import time
from typing import Any

import zmq

from shared import protocol, sockets
from shared.errors import BrokerUnavailable, ErrorCode, FanoError
from shared.keys import ClientKeys


class SchedulerUnavailable(BrokerUnavailable):
    """The scheduler did not answer within the timeout."""


def query(endpoint: str, what: str, timeout: float = 2.0, name: str = "fanoctl",
          context: zmq.Context[zmq.Socket[bytes]] | None = None, keys: ClientKeys | None = None,
          **fields: Any) -> Any:
    ctx = context or zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sockets.configure_socket(sock, "dealer", identity=name)
    try:
        sockets.connect(sock, endpoint, keys)
        cid = protocol.new_id()
        try:
            sock.send_multipart(protocol.encode_worker("query", cid=cid, what=what, **fields), flags=zmq.NOBLOCK)
        except zmq.Again:
            raise SchedulerUnavailable(f"scheduler at {endpoint} is not accepting connections") from None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sock.poll(int(left * 1000) + 1):
                raise SchedulerUnavailable(f"scheduler at {endpoint} did not answer {what!r} within {timeout:g}s")
            try:
                msg = protocol.decode_worker(sock.recv_multipart())
            except FanoError:
                continue   # garbage on our socket: keep waiting for our answer
            if msg["type"] == "disconnect":
                raise FanoError(ErrorCode.BAD_ARGUMENT, f"scheduler refused the query: {msg.get('reason', '')}")
            if msg["type"] != "answer" or msg["cid"] != cid:
                continue   # heartbeats are not for us; late answers to someone else's cid are dropped
            if not msg["ok"]:
                raise FanoError.from_wire(msg.get("error") or {})
            return msg.get("result")
    finally:
        sock.close(linger=0)


def ask(endpoint: str, what: str, timeout: float = 2.0, name: str = "fanoctl", keys: ClientKeys | None = None,
        **fields: Any) -> Any:
    """:func:`query`, or None when the scheduler does not answer: it is stateless and may be restarting, and
    the views that ask (``fanoctl top``, ``backends ls``, the web panel) show what they have without it.
    An ``ipc://`` endpoint whose socket file is missing is not asked at all (nobody listens: a connect
    would wait the whole timeout). An error answer still raises :class:`shared.errors.FanoError`."""
    if endpoint.startswith("ipc://") and not os.path.exists(endpoint[len("ipc://"):]):
        return None
    try:
        return query(endpoint, what, timeout=timeout, name=name, keys=keys, **fields)
    except BrokerUnavailable:
        return None
