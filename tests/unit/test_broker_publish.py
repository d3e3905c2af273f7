"""The broker's event socket refusing an event (services/broker/server.py): subscribers catch up from the
outbox, so the broker goes on, but never silently (issue 12: no swallowed error without a log line and a
counter)."""
from __future__ import annotations

import zmq

from services.broker.server import BrokerService
from shared.clock import FakeClock
from shared.config import load_config
from tests.support import write_config


class RefusingSocket:
    def __init__(self) -> None:
        self.sent = 0

    def send(self, frame: bytes, flags: int = 0) -> None:
        self.sent += 1
        raise zmq.ZMQError(zmq.EAGAIN)


def test_an_event_the_socket_refuses_is_logged_and_counted(tmp_path, caplog):
    svc = BrokerService(load_config(write_config(tmp_path)), FakeClock())
    svc._rebind_pending = False
    svc.pub = RefusingSocket()
    events = [{"seq": n, "type": "task.created", "module": "explorer", "task_id": n} for n in (1, 2)]
    with caplog.at_level("WARNING", logger="broker"):
        svc._publish(events)
    assert svc.pub.sent == 2   # one refused event does not keep the next from being tried
    assert svc.tolerated["event publish"] == 2
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("event publish failed")]
