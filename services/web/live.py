"""The live overview: follow the broker's event stream, fan fresh overview parts out to browsers (SSE).

Two halves, in two threads:

- :class:`Follower` runs in the program's main thread (``WebService.loop``). It subscribes to the broker's
  PUB socket and notes every event's sequence number. Each event means "something changed"; when one
  arrived and a browser is watching, it rebuilds the overview's parts at most every
  :data:`MIN_INTERVAL` seconds (a burst of events is one rebuild, not hundreds) and publishes them to the
  :class:`Hub`. It never re-reads on a timer: a PUB message can be lost, so after :data:`EVENT_CHECK`
  quiet seconds it asks the broker for its last sequence number (one tiny read) and rebuilds only if that
  moved. While no browser watches it is unsubscribed (the broker's PUB then sends it nothing: a busy
  queue costs an unwatched panel no CPU); the first watcher subscribes it again and gets a fresh build.
  A broker that does not answer is published as ``status`` ``down`` (the page shows a banner) and asked
  again every :data:`DOWN_CHECK` seconds; when it answers, the parts are rebuilt and the banner goes.
- :class:`Hub` is thread-safe: the follower publishes ``(event name, data)``; each open event stream
  (``/live/overview``, in uvicorn's event loop) holds a :class:`Subscription` that keeps only the latest
  data per name, so a slow browser gets the newest state, never an unbounded backlog.

Stream format (``text/event-stream``): ``event: NAME`` + ``data: ...`` lines, where NAME is ``status``
(JSON ``{"broker": "up"|"down", "seq": N, "detail": text}``), ``clock`` (the server's world time, for
elapsed-time counters) or an overview part (``accounts``, ``quotas``, ``queue``, ``recent``, ``health``,
``research``: escaped HTML that replaces the element ``[data-part=NAME]``). A comment line every
:data:`KEEPALIVE` seconds keeps proxies from closing an idle stream.
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

import zmq

from shared import events, protocol
from shared.client import BrokerClient
from shared.errors import BrokerUnavailable, FanoError
from shared.keys import ClientKeys

MIN_INTERVAL = 0.5   # seconds between two rebuilds of the overview (events coalesce in between)
EVENT_CHECK = 5.0    # quiet seconds before asking the broker whether a PUB message was lost
DOWN_CHECK = 1.0     # seconds between tries while the broker is not answering
KEEPALIVE = 15.0     # seconds between comment lines on an idle stream
POLL_MS = 200        # one loop tick's wait on the event socket (a stop request is seen within this)

log = logging.getLogger("web")


class Subscription:
    """One open event stream: the latest data per event name, and a wake-up for its coroutine."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: dict[str, str] = {}
        self.ready = asyncio.Event()

    def offer(self, name: str, data: str) -> None:
        """Called in the event loop's thread (the hub schedules it there)."""
        self.pending[name] = data
        self.ready.set()

    def take(self) -> dict[str, str]:
        out, self.pending = self.pending, {}
        self.ready.clear()
        return out


class Hub:
    """The latest overview parts, and the streams waiting for them (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: set[Subscription] = set()
        self.latest: dict[str, str] = {}
        self.wanted = threading.Event()   # a new stream arrived: the follower should publish fresh parts

    def publish(self, name: str, data: str) -> None:
        with self._lock:
            self.latest[name] = data
            subs = list(self._subs)
        for sub in subs:
            try:
                sub.loop.call_soon_threadsafe(sub.offer, name, data)
            except RuntimeError:
                pass   # that stream's loop has closed (the server is stopping)

    def subscribe(self) -> Subscription:
        sub = Subscription(asyncio.get_running_loop())
        with self._lock:
            self._subs.add(sub)
            # the broker's state as last seen, at once; the parts themselves are not replayed: the page was
            # rendered fresh a moment ago, and older parts would overwrite it until the rebuild that follows
            for name in ("status", "clock"):
                if name in self.latest:
                    sub.offer(name, self.latest[name])
        self.wanted.set()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subs.discard(sub)

    @property
    def watchers(self) -> int:
        with self._lock:
            return len(self._subs)

    async def stream(self, disconnected: Callable[[], Any]) -> AsyncGenerator[str, None]:
        """The ``text/event-stream`` body of one browser's stream, until it goes away."""
        sub = self.subscribe()
        try:
            yield "retry: 1000\n\n"   # EventSource reconnects after 1 s when the panel restarts
            while True:
                try:
                    await asyncio.wait_for(sub.ready.wait(), KEEPALIVE)
                except TimeoutError:
                    if await disconnected():
                        return
                    yield ": keepalive\n\n"
                    continue
                for name, data in sub.take().items():
                    yield format_event(name, data)
        finally:
            self.unsubscribe(sub)


def format_event(name: str, data: str) -> str:
    """One server-sent event (each line of ``data`` on its own ``data:`` line, as the format requires)."""
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"event: {name}\n{lines}\n"


class Follower:
    """Follows the broker's events and publishes the overview's parts to ``hub`` (see the module docstring).

    ``build(client)`` returns the parts, ``{name: html}``; it raises ``BrokerUnavailable`` when the broker
    does not answer. ``now()`` is the world clock (the ``clock`` event).
    """

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], events_endpoint: str, client: BrokerClient,
                 hub: Hub, build: Callable[[BrokerClient], dict[str, str]], now: Callable[[], float],
                 keys: ClientKeys | None = None) -> None:
        self.client = client
        self.hub = hub
        self.build = build
        self.now = now
        self.sub = events.subscribe(ctx, events_endpoint, topics=(), keys=keys)
        self.subscribed = False
        self.poller = zmq.Poller()
        self.poller.register(self.sub, zmq.POLLIN)
        self.last_seq = 0
        self.dirty = True
        self.broker_up: bool | None = None
        self.detail = ""
        self.last_build = 0.0
        self.last_event = time.monotonic()
        self.next_check = 0.0
        self.builds = 0
        self.events = 0

    def close(self) -> None:
        self.sub.close(linger=0)

    def tick(self, wait_ms: int = POLL_MS) -> None:
        """One step: take the events that arrived (waiting up to ``wait_ms``), then rebuild if due."""
        if self.poller.poll(wait_ms):
            self._drain()
        if self.hub.wanted.is_set():
            self.hub.wanted.clear()
            self.dirty = True
            self.last_build = 0.0   # a new browser should not wait for the coalescing interval
        mono = time.monotonic()
        watched = self.hub.watchers > 0
        if watched != self.subscribed:
            self._follow(watched, mono)
        if not watched:
            return   # nobody is looking: take no events, build nothing
        if self.broker_up is False or mono - self.last_event >= EVENT_CHECK:
            if mono >= self.next_check:
                self._check(mono)
        if self.dirty and mono - self.last_build >= MIN_INTERVAL:
            self._rebuild(mono)

    def _follow(self, on: bool, mono: float) -> None:
        """Subscribe to every event while someone watches; unsubscribe when the last watcher leaves.
        What happened meanwhile is unknown: the next watcher's first build reads it afresh."""
        self.sub.setsockopt(zmq.SUBSCRIBE if on else zmq.UNSUBSCRIBE, protocol.EVENT_PREFIX)
        self.subscribed = on
        self.dirty = True
        self.last_event = mono   # the quiet-period check counts from here

    def _drain(self) -> None:
        # an event we cannot read is skipped: the last-sequence check notices what we missed
        for ev in events.drain(self.sub):
            self.events += 1
            self.last_event = time.monotonic()
            if ev["seq"] != self.last_seq:
                self.last_seq = ev["seq"]
                self.dirty = True

    def _check(self, mono: float) -> None:
        """Ask the broker for its last event number: did we miss a PUB message? Is it back?"""
        try:
            last = self.client.events(after=2**62, limit=1)["last_seq"]
        except BrokerUnavailable as exc:
            self._down(str(exc))
            self.next_check = mono + DOWN_CHECK
            return
        except FanoError as exc:
            log.warning("the broker refused the event check: %s", exc)
            last = self.last_seq
        self.next_check = mono + (DOWN_CHECK if self.broker_up is False else EVENT_CHECK)
        self.last_event = mono
        if last != self.last_seq or self.broker_up is not True:
            self.last_seq = last
            self.dirty = True
            self.last_build = 0.0

    def _rebuild(self, mono: float) -> None:
        try:
            parts = self.build(self.client)
        except BrokerUnavailable as exc:
            self._down(str(exc))
            self.next_check = mono + DOWN_CHECK
            self.last_build = mono
            return
        self.dirty = False
        self.last_build = mono
        self.builds += 1
        for name, html in parts.items():
            self.hub.publish(name, html)
        self.hub.publish("clock", f"{self.now():.3f}")
        if self.broker_up is not True:
            log.info("the broker answers: the live overview is live")
        self.broker_up = True
        self.hub.publish("status", json.dumps({"broker": "up", "seq": self.last_seq, "detail": ""}))

    def _down(self, detail: str) -> None:
        if self.broker_up is not False:
            log.warning("the broker does not answer: %s", detail)
        self.broker_up = False
        self.dirty = True
        self.hub.publish("status", json.dumps({"broker": "down", "seq": self.last_seq, "detail": detail}))
