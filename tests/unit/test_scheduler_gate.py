"""The scheduler service gives out no work until its rebuild has completed (issue 12), in the fast tier:
the service's own loop on its real sockets, its broker an in-process core (tests/unit/corehelp.py). The
rebuild reads the PENDING task, then fails (the broker stops answering while it reads the recent outbox):
that half-read view must not assign the task to the worker that is waiting. The same check against a
broker process: tests/integration/test_scheduler_rebuild_gate.py."""
from __future__ import annotations

from services.scheduler.service import REBUILD_RETRY, SchedulerService
from shared import protocol
from shared.clock import FakeClock
from shared.config import load_config
from shared.errors import BrokerUnavailable
from tests.support import write_config
from tests.unit.corehelp import CoreClient, CoreHarness

WORKER = b"w-gate"


def test_no_assignment_from_a_rebuild_that_did_not_complete(tmp_path):
    h = CoreHarness(tmp_path, write_config(tmp_path, accounts={"a1": ["standard"]}))
    tid = h.submit("gate-1")["task"]["id"]
    svc = SchedulerService(load_config(h.config_path), FakeClock(world=h.clock.world(), mono=1000.0))
    svc.config.run_dir.mkdir(parents=True, exist_ok=True)   # what Service.run makes before initialize
    svc.initialize()
    try:
        svc.client.close()
        svc.rebuild_client.close()
        svc.client = svc.rebuild_client = CoreClient(h, name="scheduler")
        real_history = svc._history

        def stalled(client, seq0):
            raise BrokerUnavailable("the broker stopped answering while the outbox was read")
        svc._history = stalled
        svc.loop()                                   # the rebuild: the pages read, then the outbox fails
        assert not svc.synced and tid in svc.core.table.tasks   # the half-read view holds the task
        account = svc.config.accounts[0]
        svc.core.on_message(WORKER, protocol.encode_worker("ready", worker=f"backend-{account.name}",
                                                           account=account.name, backend=account.backend,
                                                           modes=list(account.modes)))
        for _ in range(2):
            svc.loop()
        assert svc.core.assigned_total == 0, "a task was assigned from a view the rebuild had not completed"
        assert not svc.synced and WORKER in svc.core.workers.by_ident

        svc._history = real_history                  # the broker answers again: the next rebuild completes
        svc.clock.advance(REBUILD_RETRY)
        svc.loop()
        assert svc.synced and svc.core.assigned_total == 1   # and the same worker gets the task
    finally:
        svc.shutdown()
        h.close()
