"""Byte bounds on the broker's socket, against a real broker process (issue 14).

* Five legal 3.4 MB submits: the scheduler's rebuild still completes (its ``list`` pages carry no
  payloads and stop at a byte budget; before, one 17 MB page passed the 16 MiB a client accepts and
  the scheduler never synced).
* 1,000 ``list`` requests asking for payloads, queued by clients that are gone by the time they are
  read: the broker builds no page for them and answers the next live client at once, with a small
  peak memory (before: 4.4 GB and over 120 s without answering a ping).
* A 160 MiB message in 40 frames (each within ZMQ_MAXMSGSIZE) is answered ``TOO_LARGE`` unread.
"""
from __future__ import annotations

import os
import shutil
import time

import pytest
import zmq

from shared import protocol, sockets
from tests.scheduler_support import SchedulerProcess
from tests.support import BrokerProcess, short_tmpdir, wait_for, write_config

pytestmark = pytest.mark.integration

PAYLOAD_HEX = 1_700_000   # random bytes, hex: 3.4 MB payloads that compress poorly


def peak_rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.fixture
def broker():
    root = short_tmpdir("fb")
    b = BrokerProcess(root, write_config(root, accounts={"acct": ["standard"]}))
    b.start()
    yield b
    b.stop()
    shutil.rmtree(root, ignore_errors=True)


def submit_big(broker, n: int = 5) -> None:
    with broker.client(timeout=20) as c:
        for i in range(n):
            c.submit(f"big{i}", "explorer", "ask", payload=os.urandom(PAYLOAD_HEX).hex())


def test_the_scheduler_rebuilds_past_large_payloads(broker):
    submit_big(broker)
    sched = SchedulerProcess(broker.root, broker.config_path).start()   # waits for the rebuild
    try:
        st = sched.query("stats")
        assert st["synced"] and st["ready"] + st["delayed"] + st["held"] == 5, st
    finally:
        sched.stop()


def test_page_reads_of_gone_clients_cost_neither_memory_nor_time(broker):
    submit_big(broker)
    ctx = zmq.Context()
    socks = []
    try:
        for n in range(1000):
            s = ctx.socket(zmq.DEALER)
            sockets.configure_socket(s, "dealer", identity=f"gone{n}")
            s.connect(broker.endpoint)
            s.send_multipart(protocol.encode_request(protocol.Request("list", f"c{n}", {"limit": 1000,
                                                                                         "payloads": True})))
            socks.append(s)
        time.sleep(0.3)
    finally:
        for s in socks:
            s.close(0)
        ctx.term()
    started = time.monotonic()
    with broker.client(timeout=10, retries=1) as c:
        c.ping()
        waited = time.monotonic() - started
        dropped = wait_for(lambda: c.stats()["broker"]["dropped_replies"] or None, 10, what="dropped replies")
    assert waited < 5.0, waited
    assert dropped > 500
    assert peak_rss_mb(broker.pid) < 400, peak_rss_mb(broker.pid)


def test_a_message_over_the_total_limit_in_many_frames_is_too_large(broker):
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    try:
        sockets.configure_socket(sock, "dealer", identity="big")
        sock.connect(broker.endpoint)
        sock.send_multipart([protocol.HEADER] + [b"x" * (4 * 2**20)] * 40)
        assert sock.poll(30_000), broker.log()
        rep = protocol.decode_reply(sock.recv_multipart())
        assert rep.cid is None and rep.error["name"] == "TOO_LARGE", rep
        assert "in all frames" in rep.error["message"]
    finally:
        sock.close(0)
        ctx.term()
    with broker.client() as c:
        assert c.ping()["pid"] == broker.pid
        assert c.stats()["broker"]["errors"] == {"TOO_LARGE": 1}
    assert peak_rss_mb(broker.pid) < 500, peak_rss_mb(broker.pid)
