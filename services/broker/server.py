"""The broker program: sockets around :class:`services.broker.core.BrokerCore`.

Each tick: wait for requests (or the next lease deadline / due task), drain up to ``max_batch``
waiting requests, run them as one group commit, then send the replies and publish the events. Read-only
requests are answered after the commit one at a time, each sent as soon as it is ready (a batch of
page reads never holds all its replies at once). A message over ``protocol.MAX_MESSAGE`` bytes in all
its frames is discarded unread and answered ``TOO_LARGE``.

On a ``tcp://`` endpoint both sockets are CURVE servers (docs/security.md): the ZAP handler
(:class:`shared.zap.Gate`) admits only authorized keys, each request runs with the role its key has in
the ``authorized`` list as of now (a revoked key's requests are ``FORBIDDEN``), and when a key is removed
the event socket is bound anew so that every subscriber goes through a new handshake.
"""
from __future__ import annotations

import time
from typing import Any

import zmq

from services.broker.core import BrokerCore, Message, ReadLater
from services.broker.schema import open_env
from shared import protocol, sockets
from shared.roles import NOBODY, Role
from shared.service import Service
from shared.zap import EVENTS_DOMAIN, Gate

TICK = 0.5  # longest wait between looks at the stop flag and the sweeps
KEYS_CHECK = 1.0  # seconds between looks at whether the authorized list changed (a revocation)


class BrokerService(Service):
    name = "broker"

    def initialize(self) -> None:
        cfg = self.config
        keys = cfg.server_keys()   # first: a tcp:// endpoint without keys refuses to start, touching nothing
        self.storage = open_env(cfg.data_dir / "broker", cfg.broker.map_size)
        self.core = BrokerCore(self.storage, cfg, self.clock)
        startup_events = self.core.startup()
        self.ctx = zmq.Context()
        self.gate: Gate | None = None
        if keys is not None:
            self.gate = Gate(keys)
            self.gate.start(self.ctx)
        self.router = self.ctx.socket(zmq.ROUTER)
        sockets.configure_socket(self.router, "router")
        self.curve = sockets.bind(self.router, cfg.broker_endpoint, keys)
        self.pub = self.ctx.socket(zmq.PUB)
        sockets.configure_socket(self.pub, "pub")
        self.pub_curve = sockets.bind(self.pub, cfg.events_endpoint, keys, EVENTS_DOMAIN)
        self._server_keys = keys
        self._rebind_pending = False
        self._next_keys_check = self.clock.mono() + KEYS_CHECK
        self.poller = zmq.Poller()
        self.poller.register(self.router, zmq.POLLIN)
        self._wake = self._compute_wake()
        self._publish(startup_events)
        self.log.info("listening on %s, events on %s, data in %s (map %d MiB)", cfg.broker_endpoint,
                      cfg.events_endpoint, self.storage.path, self.core.map_size // 2**20)

    def _compute_wake(self) -> float:
        """Monotonic time of the next sweep that is due without any request arriving."""
        lease, delayed = self.core.next_wakeup()  # as of the last batch, no extra transaction
        wake = self.clock.mono() + TICK * 10
        if lease is not None:
            wake = min(wake, lease)
        if delayed is not None:
            # not_before is world time: convert the distance to monotonic seconds (the clock may be scaled)
            wake = min(wake, self.clock.mono() + max(0.0, delayed - self.clock.world()) / self.clock.scale)
        return wake

    def loop(self) -> None:
        timeout = max(0.0, min(TICK, self._wake - self.clock.mono()))
        ready = self.poller.poll(int(timeout * 1000))
        messages: list[Message] = []
        if self.gate is not None and self.clock.mono() >= self._next_keys_check:
            self._check_keys(self.gate)
        if ready:
            for i in range(self.config.broker.max_batch):
                if i and not sockets.readable(self.router):   # the poll said the first one is there
                    break
                try:
                    frames, total, user = sockets.recv_from(self.router, curve=self.curve)
                except zmq.Again:
                    break
                if total > protocol.MAX_MESSAGE:
                    err = sockets.too_large_message(total)
                    self.core.errors[err.name] += 1
                    self._send(frames[0], protocol.encode_reply(protocol.error_reply(None, err)))
                    continue
                if len(frames) < 2:
                    continue  # no identity: cannot happen on a ROUTER, but never trust the wire
                if self.curve:
                    messages.append((frames[0], frames[1:], self._role(user)))
                else:
                    messages.append((frames[0], frames[1:]))
        if not messages and self.clock.mono() < self._wake:
            return
        replies, events, grow = self.core.handle_batch(messages, defer_reads=True)
        reads: list[tuple[bytes, ReadLater]] = []
        for ident, out in replies:
            if isinstance(out, ReadLater):
                reads.append((ident, out))
            else:
                self._send(ident, out)
        for ident, req in grow:
            self._send(ident, protocol.encode_reply(self.core.grow_map(req)))
        self._publish(events)
        for ident, item in reads:   # each built, sent and dropped before the next
            self._send_read(ident, item)
        self._wake = self._compute_wake()

    def _role(self, user: str | None) -> Role:
        """The role of a CURVE client's message: its key's in the authorized list now, else ``nobody``."""
        entry = self.gate.caller(user) if self.gate is not None else None
        return entry.role if entry is not None else NOBODY

    def _check_keys(self, gate: Gate) -> None:
        """Reread the authorized list if it changed; a removed key's event subscriptions are cut by binding the
        event socket anew (every subscriber reconnects through the ZAP handler and catches up from the outbox)."""
        self._next_keys_check = self.clock.mono() + KEYS_CHECK
        if gate.refresh() and self.pub_curve:
            self.log.info("key(s) revoked: re-binding %s so that every subscriber is authenticated again",
                          self.config.events_endpoint)
            self.pub.close(linger=0)
            self._rebind_pending = True
        if self._rebind_pending:
            self._rebind_pub()

    def _rebind_pub(self) -> None:
        """Bind a new event socket; the old one's port is freed by ZeroMQ's I/O thread a moment after its
        close, so a refused bind is tried again (for up to a second now, then at the next check)."""
        deadline = self.clock.mono() + 1.0
        while True:
            pub = self.ctx.socket(zmq.PUB)
            sockets.configure_socket(pub, "pub")
            try:
                sockets.bind(pub, self.config.events_endpoint, self._server_keys, EVENTS_DOMAIN)
            except zmq.ZMQError as exc:
                pub.close(linger=0)
                if self.clock.mono() >= deadline:
                    self.log.error("cannot bind %s again yet (%s); retried in %gs", self.config.events_endpoint,
                                   exc, KEYS_CHECK)
                    return
                time.sleep(0.02)
                continue
            self.pub, self._rebind_pending = pub, False
            return

    def _send_read(self, ident: bytes, item: ReadLater) -> None:
        """Answer a deferred read, unless its client has gone: the identity frame goes first, and
        ROUTER_MANDATORY refuses it at once for a peer that is no longer connected, so a queue of page
        reads from killed clients costs no page building."""
        try:
            self.router.send(ident, zmq.SNDMORE | zmq.NOBLOCK)
        except zmq.ZMQError:
            self.core.dropped_replies += 1
            return
        # the message is open now: its frames must follow whatever happens (answer_read never raises)
        frames = self.core.answer_read(item)
        for i, frame in enumerate(frames):
            self.router.send(frame, zmq.NOBLOCK if i == len(frames) - 1 else zmq.SNDMORE | zmq.NOBLOCK)

    def _send(self, ident: bytes, frames: list[bytes]) -> None:
        try:
            sockets.send_nowait(self.router, [ident, *frames])
        except zmq.ZMQError:
            # the client went away (ROUTER_MANDATORY) or is not reading: its retry gets the logged reply.
            # Counted in the core, which reports it in stats
            self.core.dropped_replies += 1

    def _publish(self, events: list[dict[str, Any]]) -> None:
        if self._rebind_pending:
            return   # no event socket for a moment: subscribers catch up from the outbox
        for event in events:
            try:
                sockets.send_nowait(self.pub, protocol.encode_event(event))
            except zmq.ZMQError as exc:   # slow subscribers catch up from the outbox; logged and counted
                self.tolerate("event publish", exc)

    def shutdown(self) -> None:
        for name in ("router", "pub"):
            sock = getattr(self, name, None)
            if sock is not None:
                sock.close(linger=0)
        gate = getattr(self, "gate", None)
        if gate is not None:
            gate.stop()
        if getattr(self, "ctx", None) is not None:
            self.ctx.term()
        # the core's storage: a failed map growth may have reopened it (closing twice is harmless)
        core = getattr(self, "core", None)
        storage = core.storage if core is not None else getattr(self, "storage", None)
        if storage is not None:
            storage.close()
