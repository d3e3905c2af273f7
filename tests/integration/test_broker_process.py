"""The broker as a process: single instance, events on PUB, map full, restart durability, bad peers."""
import contextlib
import random
import subprocess
import sys
import time

import pytest
import zmq

from shared import protocol, sockets
from shared.errors import ErrorCode, ExitCode, FanoError
from tests.support import REPO, run_fanoctl, wait_for

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def raw_peer(broker, identity: str, configured: bool = True):
    """A DEALER that talks to the broker without the client library (frames as the test writes them).
    ``configured=False``: not even our socket options, like a peer that ignores our limits."""
    raw = zmq.Context.instance().socket(zmq.DEALER)
    if configured:
        sockets.configure_socket(raw, "dealer", identity=identity)
    else:
        raw.setsockopt(zmq.LINGER, 0)
    raw.connect(broker.endpoint)
    try:
        yield raw
    finally:
        raw.close(linger=0)


def test_second_broker_refuses_to_steal_the_socket(broker, client):
    second = subprocess.run([sys.executable, "-m", "services", "broker", "--config", str(broker.config_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=30)
    assert second.returncode == ExitCode.LOCKED
    assert "another instance" in second.stderr
    assert client.ping()["pid"] == broker.proc.pid  # the first broker still owns the socket


def test_events_are_published_with_sequence_numbers(broker, client):
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sockets.configure_socket(sub, "sub")
    sub.setsockopt(zmq.SUBSCRIBE, protocol.EVENT_PREFIX)
    sub.connect(broker.events_endpoint)
    try:
        seen = []

        def got_events():
            # PUB/SUB joins late: keep submitting until our subscription is live
            client.submit(f"k{len(seen)}-{protocol.new_id()[:6]}", "explorer", "ask")
            while sub.poll(50):
                seen.append(protocol.decode_event(sub.recv_multipart()))
            return len(seen) >= 2
        wait_for(got_events, 10, what="events on the PUB socket")
        seqs = [e["seq"] for e in seen]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        assert all(e["type"] == "task.submitted" for e in seen)
        # the outbox holds the same events for a late subscriber
        outbox = client.events(after=seqs[0] - 1, limit=len(seqs))["events"]
        assert [e["seq"] for e in outbox] == seqs
    finally:
        sub.close(linger=0)


def test_acknowledged_work_survives_kill_9(broker, client):
    ids = [client.submit(f"key-{i}", "explorer", "ask", {"i": i})["task"]["id"] for i in range(20)]
    lease = client.lease("w", "acct", modes=["standard"])
    client.complete(lease["task"]["id"], lease["epoch"], "answer")
    broker.restart()
    c2 = broker.client()
    try:
        assert c2.get(lease["task"]["id"])["state"] == "DONE"
        listed = c2.list(limit=100)["tasks"]
        assert sorted(t["id"] for t in listed) == sorted(ids)
        # the live lease of nobody else: the remaining 19 are still PENDING and leasable
        assert c2.stats()["tasks"]["PENDING"] == 19
    finally:
        c2.close()


def test_garbage_from_a_peer_gets_errors_and_the_broker_stays_up(broker, client):
    with raw_peer(broker, "rogue") as raw:
        cases = [[b"hello"], [protocol.HEADER, b"\xc1\xc1"], [b"FANO/9", b"x"], [protocol.HEADER, b"x", b"y"],
                 [protocol.HEADER, protocol.pack_value({"cmd": "nope", "cid": "c1"})]]
        codes = []
        for frames in cases:
            raw.send_multipart(frames)
            assert raw.poll(5000), f"no reply to {frames!r}"
            codes.append(protocol.decode_reply(raw.recv_multipart()).error["name"])
        assert codes == ["BAD_FRAME", "BAD_ENCODING", "BAD_VERSION", "BAD_FRAME", "UNKNOWN_COMMAND"]
        errors = client.stats()["broker"]["errors"]
        assert errors["BAD_FRAME"] >= 2 and errors["UNKNOWN_COMMAND"] >= 1
        assert client.ping()["pid"] == broker.proc.pid


def test_map_full_refuses_submissions_serves_the_rest_and_recovers_after_growth(make_broker):
    broker = make_broker(broker={"map_size": "4MiB", "headroom": "1MiB", "map_ceiling": "4MiB"})
    client = broker.client()
    try:
        # incompressible (the broker compresses large values: a repeated letter would never fill the map)
        big = random.Random(7).randbytes(30_000).hex()
        lease = None
        refused = None
        for i in range(400):
            try:
                client.submit(f"big-{i}", "explorer", "ask", {"blob": big})
            except FanoError as exc:
                refused = exc
                break
            if lease is None:
                lease = client.lease("w", "acct", modes=["standard"])
        assert refused is not None and refused.code == ErrorCode.MAP_FULL, "the map never filled"
        assert "grow" in refused.message
        # reads and completions keep working
        assert client.get(lease["task"]["id"])["state"] == "RUNNING"
        assert client.complete(lease["task"]["id"], lease["epoch"], "done")["state"] == "DONE"
        assert client.stats()["broker"]["map_full"] is True
        with pytest.raises(FanoError) as again:
            client.submit("after-full", "explorer", "ask", {})
        assert again.value.code == ErrorCode.MAP_FULL
        grown = client.call("grow_map", size=64 * 1024 * 1024)
        assert grown["map_size"] >= 64 * 1024 * 1024
        assert client.submit("after-grow", "explorer", "ask", {"blob": big})["created"]
        # the grown size persists across a restart
        broker.restart()
        c2 = broker.client()
        try:
            assert c2.stats()["broker"]["map_size"] >= 64 * 1024 * 1024
            assert c2.submit("after-restart", "explorer", "ask", {"blob": big})["created"]
        finally:
            c2.close()
    finally:
        client.close()


def test_oversized_messages_are_refused_and_the_broker_stays_up(broker, client):
    with raw_peer(broker, "big", configured=False) as raw:   # a peer that ignores our limits
        body = protocol.pack_value({"cmd": "ping", "cid": "big", "args": {"pad": "x" * (protocol.MAX_BODY + 10)}})
        raw.send_multipart([protocol.HEADER, body])
        assert raw.poll(5000)
        reply = protocol.decode_reply(raw.recv_multipart())
        assert reply.cid is None and reply.error["name"] == "TOO_LARGE"
        # above the socket's hard limit libzmq drops the connection: no reply, but no harm either
        raw.send_multipart([protocol.HEADER, b"\x00" * (protocol.MAX_MESSAGE + 1)])
        assert not raw.poll(500)
        assert client.ping()["pid"] == broker.proc.pid
        assert client.stats()["broker"]["errors"]["TOO_LARGE"] == 1


def test_grow_map_to_an_impossible_size_is_refused_and_the_broker_keeps_serving(broker, client):
    tid = client.submit("before", "explorer", "ask")["task"]["id"]
    size = client.stats()["broker"]["map_size"]
    with pytest.raises(FanoError) as huge:
        client.call("grow_map", size=1 << 55)   # unguarded, LMDB's mmap fails and the broker dies
    assert huge.value.code == ErrorCode.BAD_ARGUMENT and "limit" in huge.value.message
    # the operator's way: fanoctl says why, exit 1 (a refusal), not 3 (broker down)
    cli = run_fanoctl(broker.config_path, "admin", "grow-map", "1024TiB")   # 1 PiB
    assert cli.returncode == ExitCode.FAILURE, cli.stderr
    assert cli.stderr.startswith("fanoctl: BAD_ARGUMENT: new map size 1024.0 TiB exceeds")
    assert broker.alive() and client.ping()["pid"] == broker.proc.pid
    assert client.get(tid)["state"] == "PENDING"
    assert client.submit("after", "explorer", "ask")["created"]
    assert client.call("grow_map", size=size + 2**20)["map_size"] == size + 2**20
    stats = client.stats()["broker"]
    assert stats["errors"]["BAD_ARGUMENT"] == 2 and stats["map_size"] == size + 2**20


def test_an_oversized_submit_through_the_client_is_too_large_at_once(broker, client):
    started = time.monotonic()
    with pytest.raises(FanoError) as info:
        client.submit("big", "explorer", "ask", {"blob": "x" * (protocol.MAX_BODY + 10)})
    # refused by the client itself: no round trip, no retries, never "broker unavailable"
    assert info.value.code == ErrorCode.TOO_LARGE
    assert time.monotonic() - started < 1.0 and client.resends == 0
    assert client.ping()["pid"] == broker.proc.pid
    assert client.submit("small", "explorer", "ask", {"blob": "x" * 1000})["created"]
    assert "TOO_LARGE" not in client.stats()["broker"]["errors"]


def test_deeply_nested_arguments_from_a_peer_are_bad_argument_with_their_cid(broker, client):
    with raw_peer(broker, "nester") as raw:
        payload: list = []
        for _ in range(900):
            payload = [payload]
        task = {"key": "deep", "module": "explorer", "kind": "ask", "payload": payload}
        raw.send_multipart([protocol.HEADER, protocol.pack_value(
            {"cmd": "submit", "cid": "deep-cid", "rid": "deep-rid-1", "args": {"task": task}})])
        assert raw.poll(5000)
        reply = protocol.decode_reply(raw.recv_multipart())
        assert reply.cid == "deep-cid" and reply.error["name"] == "BAD_ARGUMENT"
        assert f"nested deeper than {protocol.MAX_DEPTH} levels" in reply.error["message"]
        stats = client.stats()["broker"]
        assert "INTERNAL" not in stats["errors"] and stats["errors"]["BAD_ARGUMENT"] == 1
        assert stats["dropped_replies"] == 0
