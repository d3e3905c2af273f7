"""The scheduler assigns nothing until it has rebuilt its view from the broker (issue 12: a safety check no
test guarded). A rebuild that fails half-way leaves the view it had read so far (here: the PENDING task,
but not the events after it); giving that out could assign a task cancelled or leased meanwhile.

Real parts: the broker as a process, the scheduler's own service on its real sockets (driven loop by loop
in this thread), a fake backend worker speaking the worker protocol over a real DEALER. The rebuild fails
for a real reason: the broker stops answering (SIGSTOP) while the scheduler reads the recent outbox.
"""
from __future__ import annotations

import os
import signal
import time

import pytest

from services.scheduler.service import SchedulerService
from shared.client import BrokerClient
from shared.clock import Clock
from shared.config import load_config
from tests.scheduler_support import FakeWorker

pytestmark = pytest.mark.integration


def test_no_assignment_before_the_rebuild_completes(broker, client):
    tid = client.submit("gate-1", "explorer", "explorer.explore", {"prompt": "p"})["task"]["id"]
    svc = SchedulerService(load_config(broker.config_path), Clock.from_env())
    svc.initialize()
    # the rebuild's client fails fast once the broker stops (the default waits 2 x 5 s)
    svc.rebuild_client.close()
    svc.rebuild_client = BrokerClient(broker.endpoint, name="scheduler", timeout=0.3, retries=1, context=svc.ctx)
    real_history, stalled = svc._history, []

    def history(c, seq0):   # the pages were read; now the broker stops answering
        if not stalled:
            stalled.append(True)
            os.kill(broker.pid, signal.SIGSTOP)
        return real_history(c, seq0)
    svc._history = history

    worker = FakeWorker(svc.config.scheduler_endpoint, broker.endpoint, "acct")
    try:
        svc.loop()                                   # the rebuild: pages read, then the outbox times out
        assert stalled and not svc.synced
        assert tid in svc.core.table.tasks                 # the half-read view holds the PENDING task
        worker.start()
        deadline = time.monotonic() + 3.0            # a few failed retries (REBUILD_RETRY 1 s) while stopped
        while time.monotonic() < deadline:
            svc.loop()
        assert worker.assigned == [], "a task was assigned from a view the rebuild had not completed"
        assert not svc.synced and worker.worker in svc.core.workers.by_name   # it was heard, and idle
    finally:
        os.kill(broker.pid, signal.SIGCONT)
    try:
        deadline = time.monotonic() + 15.0           # once rebuilt, the same worker gets the task
        while time.monotonic() < deadline and tid not in worker.completed:
            svc.loop()
        assert svc.synced and worker.assigned == [tid] and worker.completed == [tid], worker.errors
    finally:
        worker.stop()
        svc.shutdown()
