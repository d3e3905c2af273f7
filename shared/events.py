"""Following the broker's event stream: the one way a program subscribes to it and reads what arrived.

The broker publishes every transition on its PUB socket (``events_endpoint``) as ``[topic, FANO/1, body]``
(:func:`shared.protocol.encode_event`; the topic is ``evt.<type>``, followed by ``/<module>/`` for an event
of a module, e.g. ``evt.task.done/explorer/``: :func:`shared.protocol.event_topic`) and keeps the same
events in its outbox. :func:`subscribe` opens a SUB socket with the project's options
(:func:`shared.sockets.configure_socket`) on the topics a program wants. ZeroMQ filters subscriptions at
the publisher, so what a program does not subscribe to never reaches it: a research module takes its own
module's settled tasks, the web panel every event only while a browser watches, the scheduler every event
(``evt.``). :func:`drain` yields the events waiting on it, decoded, without blocking, and skips a message
it cannot decode (``bad`` is told, for a counter): a peer's garbage never stops a follower.

PUB/SUB may lose a message (a reconnect, a full queue), so every follower has its own way to catch up,
suited to what it does with events: the scheduler reads the outbox from its last sequence number
(services/scheduler/service.py), a research module sweeps its unconsumed tasks (services/modules/base.py),
the web panel asks for the broker's last sequence number and re-reads its overview (services/web/live.py).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import zmq

from shared import protocol, sockets
from shared.errors import FanoError
from shared.keys import ClientKeys


def subscribe(ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str,
              topics: Iterable[bytes] = (protocol.EVENT_PREFIX,), keys: ClientKeys | None = None) -> zmq.Socket[bytes]:
    """A SUB socket connected to ``endpoint`` receiving the events whose topic starts with one of ``topics``
    (default: every event); ``keys``: the program's CURVE keys, needed when ``endpoint`` is ``tcp://``
    (:meth:`shared.config.Config.client_keys`; a worker's key is refused there: docs/security.md § Roles)."""
    sock = ctx.socket(zmq.SUB)
    sockets.configure_socket(sock, "sub")
    for topic in topics:
        sock.setsockopt(zmq.SUBSCRIBE, topic)
    sockets.connect(sock, endpoint, keys)
    return sock


def drain(sock: zmq.Socket[bytes], limit: int | None = None,
          bad: Callable[[], None] | None = None) -> Iterator[dict[str, Any]]:
    """The events waiting on ``sock`` now (at most ``limit`` messages read; the rest stay for the next
    call), decoded; an undecodable message is skipped and ``bad()`` called."""
    read = 0
    while limit is None or read < limit:
        if read and not sockets.readable(sock):   # the caller's poll said the first one is there
            return
        try:
            frames, _, _ = sockets.recv_from(sock)   # plain-int flags; an oversized one is skipped as bad
        except zmq.Again:
            return
        read += 1
        try:
            yield protocol.decode_event(frames)
        except FanoError:
            if bad is not None:
                bad()
