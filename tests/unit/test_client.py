"""The client library against a scripted broker: a real ROUTER socket in a thread that misbehaves on purpose.

No broker process: the stand-in answers (or not) as each test scripts it and records every request it
got, with the identity of the socket that sent it.
"""
from __future__ import annotations

import shutil
import threading
import time

import msgpack
import pytest
import zmq

from shared import protocol
from shared.client import BrokerClient
from shared.errors import BrokerUnavailable, ErrorCode, FanoError
from tests.support import short_tmpdir, wait_for

pytestmark = pytest.mark.timeout(30)


class ScriptedBroker:
    """A ROUTER bound in its own thread; ``script(n, request) -> [reply frames, ...]`` for the n-th request.

    ``request`` is the decoded body; ``seen`` holds ``(identity, raw body, decoded body)`` per request.
    """

    def __init__(self, endpoint: str, script):
        self.endpoint = endpoint
        self.script = script
        self.seen: list[tuple[bytes, bytes, dict]] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(5), "the scripted broker did not bind"

    def _run(self) -> None:
        # created, used and closed in this thread: a zmq socket belongs to one thread
        sock = zmq.Context.instance().socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(self.endpoint)
        self._ready.set()
        try:
            while not self._stop.is_set():
                if not sock.poll(20):
                    continue
                ident, *frames = sock.recv_multipart()
                request = msgpack.unpackb(frames[1], raw=False)
                self.seen.append((ident, frames[1], request))
                for reply in self.script(len(self.seen), request):
                    sock.send_multipart([ident, *reply])
        finally:
            sock.close(linger=0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def reply(cid, result=None, **body) -> list[bytes]:
    return [protocol.HEADER, protocol.pack_value({"cid": cid, "ok": True, "result": result, **body})]


@pytest.fixture
def scripted():
    """Factory: ``scripted(script)`` -> (ScriptedBroker, its endpoint); stopped and removed at teardown."""
    root = short_tmpdir("fc")
    made = []

    def factory(script):
        made.append(ScriptedBroker(f"ipc://{root}/b{len(made)}.sock", script))
        return made[-1]

    yield factory
    for broker in made:
        broker.stop()
    shutil.rmtree(root, ignore_errors=True)


def test_replies_with_a_foreign_cid_or_garbage_are_dropped_and_the_client_waits_for_its_own(scripted, caplog):
    def script(n, request):
        time.sleep(0.05)   # the client is already waiting when the wrong replies arrive
        return [reply("someone-else", "wrong"),
                reply(None, ok=False, error={"code": 4, "name": "TOO_LARGE", "message": "x"}),
                [b"garbage"], [protocol.HEADER, b"\xc1"],
                reply(request["cid"], "right")]
    broker = scripted(script)
    with BrokerClient(broker.endpoint, timeout=5, retries=1) as client, caplog.at_level("WARNING"):
        assert client.call("ping") == "right"
        assert client.resends == 0
        assert client.garbage == 2   # the two undecodable messages: counted and logged, not dropped silently
    assert len(broker.seen) == 1
    assert sum("undecodable message" in r.getMessage() for r in caplog.records) == 2


def test_a_late_reply_to_an_earlier_call_is_not_taken_for_the_next_one(scripted):
    def script(n, request):
        if n == 1:
            return []  # the first call times out; its reply comes with the second call's
        return [reply(broker.seen[0][2]["cid"], "stale"), reply(request["cid"], "fresh")]
    broker = scripted(script)
    with BrokerClient(broker.endpoint, timeout=0.2, retries=1) as client:
        with pytest.raises(BrokerUnavailable):
            client.call("ping")
        assert client.call("ping", timeout=5) == "fresh"


def test_a_resend_after_a_timeout_repeats_the_rid_on_a_new_socket(scripted):
    def script(n, request):
        return [] if n == 1 else [reply(request["cid"], {"task": {"id": 1}, "created": True})]
    broker = scripted(script)
    with BrokerClient(broker.endpoint, name="resender", timeout=0.3, retries=5) as client:
        out = client.submit("k", "explorer", "ask", {"x": 1})
        assert out["created"]
        resends = client.resends
    assert len(broker.seen) >= 2 and resends == len(broker.seen) - 1
    bodies = [raw for _, raw, _ in broker.seen]
    rid = broker.seen[0][2]["rid"]
    # byte-identical resends: one rid, which is also the correlation id of a mutating call
    assert len(rid) >= 8 and broker.seen[0][2]["cid"] == rid
    assert all(b == bodies[0] for b in bodies)
    # the lazy pirate: every attempt comes from a new socket (a new identity on the ROUTER)
    identities = [ident for ident, _, _ in broker.seen]
    assert len(set(identities)) == len(identities)
    assert all(ident.startswith(b"resender#") for ident in identities)


def test_silence_ends_in_broker_unavailable_after_the_configured_retries(scripted):
    broker = scripted(lambda n, request: [])
    with BrokerClient(broker.endpoint, timeout=0.15, retries=3) as client:
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable) as info:
            client.call("cancel", id=7)
        elapsed = time.monotonic() - started
        assert info.value.code == ErrorCode.UNAVAILABLE
        assert broker.endpoint in info.value.message and "'cancel'" in info.value.message
        assert "3 attempt(s) of 0.15s" in info.value.message
        assert 0.4 <= elapsed < 5
        wait_for(lambda: len(broker.seen) == 3, 5, what="three attempts at the scripted broker")
        assert len({ident for ident, _, _ in broker.seen}) == 3
        assert len({raw for _, raw, _ in broker.seen}) == 1
        # a per-call retry budget overrides the client's
        with pytest.raises(BrokerUnavailable) as again:
            client.call("ping", retries=1)
        assert "1 attempt(s)" in again.value.message


def test_requests_the_broker_would_refuse_unread_fail_at_once_without_a_socket(scripted):
    broker = scripted(lambda n, request: [reply(request["cid"], "pong")])
    cyclic: list = []
    cyclic.append(cyclic)
    with BrokerClient(broker.endpoint, timeout=5, retries=3) as client:
        started = time.monotonic()
        with pytest.raises(FanoError) as big:
            client.submit("big", "explorer", "ask", {"blob": "x" * protocol.MAX_BODY})
        assert big.value.code == ErrorCode.TOO_LARGE and str(protocol.MAX_BODY) in big.value.message
        deep: list = []
        for _ in range(protocol.MAX_DEPTH):
            deep = [deep]
        for payload in (cyclic, deep):
            with pytest.raises(FanoError) as nested:
                client.submit("deep", "explorer", "ask", payload)
            assert nested.value.code == ErrorCode.BAD_ARGUMENT and "nested deeper" in nested.value.message
        assert time.monotonic() - started < 1.0
        assert client._sock is None and client.resends == 0   # never touched the socket
        assert client.ping() == "pong"                        # and the client still works
    assert [req["cmd"] for _, _, req in broker.seen] == ["ping"]
