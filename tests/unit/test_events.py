"""shared/events.py on real ZeroMQ sockets: a subscriber gets the topics it asked for, decoded; garbage is
skipped and counted; ``limit`` leaves the rest for the next drain."""
from __future__ import annotations

import zmq

from shared import events, protocol, sockets
from tests.support import short_tmpdir, wait_for


def test_drain_decodes_filters_skips_garbage_and_stops_at_the_limit():
    ctx = zmq.Context()
    endpoint = f"ipc://{short_tmpdir('ev')}/events.sock"
    pub = ctx.socket(zmq.PUB)
    sockets.configure_socket(pub, "pub")
    pub.bind(endpoint)
    sub = events.subscribe(ctx, endpoint, (b"evt.task.done",))
    try:
        def connected():   # a SUB joins asynchronously: publish probes until one arrives
            pub.send_multipart(protocol.encode_event({"seq": 0, "type": "task.done"}))
            return list(events.drain(sub))
        wait_for(connected, 5, interval=0.05, what="the subscription")
        bad = []
        pub.send_multipart([b"evt.task.done", b"not the header", b"x"])               # garbage
        pub.send_multipart(protocol.encode_event({"seq": 1, "type": "task.pending"}))  # another topic
        for seq in (2, 3, 4):
            pub.send_multipart(protocol.encode_event({"seq": seq, "type": "task.done", "id": seq}))
        wait_for(lambda: sub.poll(100), 5, what="events to arrive")
        got, drains = [], []

        def three():
            batch = list(events.drain(sub, limit=2, bad=lambda: bad.append(1)))
            drains.append(len(batch))
            got.extend(e for e in batch if e["seq"])        # late probes (seq 0) aside
            return len(got) >= 3
        wait_for(three, 5, what="three events")
        assert [e["seq"] for e in got] == [2, 3, 4] and bad == [1]
        assert max(drains) <= 2
    finally:
        sub.close(0)
        pub.close(0)
        ctx.term()
