"""The broker's server loop in this process, on real sockets: what it counts and reports about its sends."""
from __future__ import annotations

import shutil
import threading

import pytest

from services.broker.server import BrokerService
from shared import protocol
from shared.client import BrokerClient
from shared.clock import Clock
from shared.config import load_config
from tests.support import short_tmpdir, write_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture
def service():
    """An initialized BrokerService (no lock, no signals: ``run()`` is not called); shut down at teardown."""
    root = short_tmpdir("fs")
    (root / "run").mkdir()  # made by the instance lock in a real start
    svc = BrokerService(load_config(write_config(root)), Clock())
    svc.initialize()
    yield svc
    svc.shutdown()
    shutil.rmtree(root, ignore_errors=True)


def serving(svc: BrokerService):
    """Run the service's loop in a thread until the returned event is set (the thread owns the sockets)."""
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            svc.loop()
    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return stop, thread


def test_a_reply_to_a_peer_that_is_gone_is_counted_and_reported_in_stats(service):
    # ROUTER_MANDATORY: a reply to an identity that is not connected (the client closed its socket)
    # raises instead of vanishing; the server counts it. Sent before the loop thread owns the socket.
    service._send(b"client#gone", protocol.encode_reply(protocol.Reply(cid="c", ok=True, result=1)))
    assert service.core.dropped_replies == 1
    stop, thread = serving(service)
    try:
        with BrokerClient(service.config.broker_endpoint, timeout=2, retries=3) as client:
            assert client.stats()["broker"]["dropped_replies"] == 1
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
