"""The live overview's follower (services/web/live.py) against a real broker process: it rebuilds the
overview when the broker's events say something changed — once for a burst, never on a timer while
nothing happens — says when the broker stops answering and recovers by itself when it is back; and the
hub hands each browser's stream only the newest data."""
from __future__ import annotations

import asyncio
import json
import time

import pytest
import zmq

from services.web import live
from services.web.live import Follower, Hub
from services.web.pages.overview import PARTS, build_parts
from shared.clock import Clock
from shared.config import load_config
from tests.support import wait_for

pytestmark = pytest.mark.integration


class Watched(Hub):
    """A hub with one browser watching, that records what is published."""

    def __init__(self) -> None:
        super().__init__()
        self.published: list[tuple[str, str]] = []

    @property
    def watchers(self) -> int:
        return 1

    def publish(self, name: str, data: str) -> None:
        self.published.append((name, data))
        super().publish(name, data)

    def statuses(self) -> list[str]:
        return [json.loads(d)["broker"] for n, d in self.published if n == "status"]


@pytest.fixture
def follower(broker, monkeypatch):
    monkeypatch.setattr(live, "EVENT_CHECK", 0.5)
    monkeypatch.setattr(live, "DOWN_CHECK", 0.2)
    cfg = load_config(broker.config_path)
    ctx = zmq.Context()
    client = broker.client("web-test", timeout=0.3, retries=1)
    hub = Watched()
    f = Follower(ctx, cfg.events_endpoint, client, hub, lambda c: build_parts(cfg, c, Clock()), time.time)
    yield f
    f.close()
    client.close()
    ctx.term()


def _ticks(f: Follower, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        f.tick(20)


def test_an_event_rebuilds_the_overview_and_quiet_rebuilds_nothing(broker, follower):
    _ticks(follower, 0.3)
    assert follower.builds == 1 and {n for n, _ in follower.hub.published} >= set(PARTS) | {"status", "clock"}
    _ticks(follower, 1.2)                      # quiet: only the cheap "last event number?" check, no rebuild
    assert follower.builds == 1
    c = broker.client()
    c.submit("live-1", "adhoc", "adhoc.ask", {"prompt": "x"})
    wait_for(lambda: follower.tick(20) or follower.builds == 2, 5, what="a rebuild after the submit's event")
    queue = [d for n, d in follower.hub.published if n == "queue"][-1]
    assert "pending 1" in queue


def test_a_burst_of_events_is_one_rebuild_per_interval(broker, follower):
    _ticks(follower, 0.3)
    c = broker.client()
    for i in range(40):
        c.submit(f"burst-{i}", "adhoc", "adhoc.ask", {"prompt": str(i)})
    built = follower.builds
    _ticks(follower, 1.0)
    assert follower.events >= 40
    assert 1 <= follower.builds - built <= 1.0 / live.MIN_INTERVAL + 1
    assert "pending 40" in [d for n, d in follower.hub.published if n == "queue"][-1]


def test_the_broker_going_away_is_said_and_its_return_recovers_by_itself(broker, follower):
    _ticks(follower, 0.3)
    assert follower.hub.statuses()[-1] == "up"
    broker.kill()
    wait_for(lambda: follower.tick(20) or follower.hub.statuses()[-1] == "down", 10,
             what="the follower to publish status down")
    built = follower.builds
    broker.start()
    wait_for(lambda: follower.tick(20) or follower.hub.statuses()[-1] == "up", 10,
             what="the follower to publish status up again")
    assert follower.builds > built             # fresh parts follow the recovery


class Counted(Watched):
    """A hub whose number of watchers the test sets."""

    count = 0

    @property
    def watchers(self) -> int:
        return self.count


def test_an_unwatched_follower_takes_no_events_and_the_first_watcher_gets_a_fresh_build(broker):
    cfg = load_config(broker.config_path)
    ctx = zmq.Context()
    client = broker.client("web-test", timeout=0.3, retries=1)
    hub = Counted()
    f = Follower(ctx, cfg.events_endpoint, client, hub, lambda c: build_parts(cfg, c, Clock()), time.time)
    try:
        c = broker.client()
        for i in range(20):   # the broker's PUB filters them out: they never reach the follower
            c.submit(f"unwatched-{i}", "adhoc", "adhoc.ask", {"prompt": str(i)})
        _ticks(f, 0.5)
        assert (f.events, f.builds, f.subscribed) == (0, 0, False)
        hub.count = 1
        wait_for(lambda: f.tick(20) or f.builds == 1, 5, what="a build for the first watcher")
        assert "pending 20" in [d for n, d in hub.published if n == "queue"][-1]

        sent = iter(range(1000))

        def followed() -> bool:   # the subscription reaches the broker asynchronously
            c.submit(f"watched-{next(sent)}", "adhoc", "adhoc.ask", {"prompt": "w"})
            _ticks(f, 0.1)
            return f.events > 0
        wait_for(followed, 5, what="events once watched")
        hub.count = 0
        _ticks(f, 0.1)
        seen = f.events
        c.submit("unwatched-again", "adhoc", "adhoc.ask", {"prompt": "u"})
        _ticks(f, 0.5)
        assert f.events == seen and not f.subscribed
    finally:
        f.close()
        client.close()
        ctx.term()


def test_a_slow_stream_gets_only_the_newest_data():
    async def run() -> list[str]:
        hub = Hub()
        hub.publish("status", '{"broker": "up"}')
        hub.publish("research", "stale")        # published before the browser came: not replayed
        out: list[str] = []

        async def never() -> bool:
            return False
        stream = hub.stream(never)
        out.append(await stream.__anext__())    # retry line
        for i in range(100):                    # many updates before the stream is read again
            hub.publish("queue", f"v{i}")
        await asyncio.sleep(0.05)
        out.append(await stream.__anext__())
        out.append(await stream.__anext__())
        try:                                    # nothing else is waiting
            extra = await asyncio.wait_for(stream.__anext__(), 0.2)
            out.append(extra)
        except TimeoutError:
            pass
        await stream.aclose()
        assert hub.watchers == 0
        return out
    retry, first, second, *more = asyncio.run(run())
    assert more == []
    assert retry.startswith("retry:")
    assert {first.splitlines()[0], second.splitlines()[0]} == {"event: status", "event: queue"}
    assert "data: v99" in first + second and "stale" not in first + second and "v98" not in first + second
