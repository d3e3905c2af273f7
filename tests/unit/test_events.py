"""shared/events.py on real ZeroMQ sockets: a subscriber gets the topics it asked for, decoded; garbage is
skipped and counted; ``limit`` leaves the rest for the next drain."""
from __future__ import annotations

import time

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


def test_readable_says_whether_a_message_waits_and_drain_reads_all_that_wait():
    """Draining loops ask ``readable`` instead of receiving until ``zmq.Again``: it must see every
    waiting message, and a drain must still read all of them in one call."""
    ctx = zmq.Context()
    endpoint = f"ipc://{short_tmpdir('ev')}/events.sock"
    pub = ctx.socket(zmq.PUB)
    sockets.configure_socket(pub, "pub")
    pub.bind(endpoint)
    sub = events.subscribe(ctx, endpoint)
    try:
        def connected():
            pub.send_multipart(protocol.encode_event({"seq": 0, "type": "probe"}))
            return list(events.drain(sub))
        wait_for(connected, 5, interval=0.05, what="the subscription")
        wait_for(lambda: not list(events.drain(sub)) and not sockets.readable(sub), 5, what="quiet")
        for seq in (1, 2, 3, 4, 5):
            pub.send_multipart(protocol.encode_event({"seq": seq, "type": "task.done"}))
        wait_for(lambda: sockets.readable(sub), 5, interval=0.01, what="readable")
        time.sleep(0.2)   # all five are here now
        assert [e["seq"] for e in events.drain(sub) if e["seq"]] == [1, 2, 3, 4, 5]
        assert not sockets.readable(sub)
    finally:
        sub.close(0)
        pub.close(0)
        ctx.term()


def test_a_module_subscription_receives_only_that_modules_events():
    """An event of a module goes out under ``evt.<type>/<module>/``: a research module's subscription
    (``event_topic(type, module)``) takes its own and nothing of a module whose name extends it, while a
    subscription to the type or to ``evt.`` still takes them all."""
    ctx = zmq.Context()
    endpoint = f"ipc://{short_tmpdir('ev')}/events.sock"
    pub = ctx.socket(zmq.PUB)
    sockets.configure_socket(pub, "pub")
    pub.bind(endpoint)
    mine = events.subscribe(ctx, endpoint, (protocol.event_topic("task.done", "explorer"),))
    every = events.subscribe(ctx, endpoint, (protocol.event_topic("task.done"),))
    try:
        def connected():
            pub.send_multipart(protocol.encode_event({"seq": 0, "type": "task.done", "module": "explorer"}))
            return [e for e in events.drain(mine)] and [e for e in events.drain(every)]
        wait_for(connected, 5, interval=0.05, what="the subscriptions")
        time.sleep(0.1)
        list(events.drain(mine)), list(events.drain(every))
        sent = [("task.done", "explorer2"), ("task.done", "documenter"), ("task.running", "explorer"),
                ("task.done", None), ("task.done", "explorer")]
        for seq, (typ, module) in enumerate(sent, 1):
            pub.send_multipart(protocol.encode_event({"seq": seq, "type": typ, "module": module}))
        time.sleep(0.2)
        assert [e["seq"] for e in events.drain(mine)] == [5]
        assert [e["seq"] for e in events.drain(every)] == [1, 2, 4, 5]
    finally:
        mine.close(0)
        every.close(0)
        pub.close(0)
        ctx.term()
