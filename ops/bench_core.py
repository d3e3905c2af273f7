"""The scheduler's own work per task, without sockets: its core driven in process through a drain.

:func:`core_cost` builds a :class:`services.scheduler.core.SchedulerCore` with ``accounts`` instant sim
accounts on a fake clock, queues ``tasks`` tasks (their ``task.submitted`` events, before the clock
starts), lets each account's worker say ``ready``, and then, for every ``assign`` the core sends, feeds
what the running tree feeds it for that task: the broker's ``task.running`` event, the worker's ``ready
{finishing}``, the broker's ``task.done`` event — each followed by ``next_wake`` and ``tick``, as the
scheduler's service loop does on every wake-up. What it measures is what ``ops/bench-huey``'s
``sched_cpu_us_per_assign`` pays besides the sockets, msgpack and the loop around the core: events and
messages applied, timers computed, the next task picked and the ``assign`` built
(docs/architecture.md § The cost of a task).
"""
from __future__ import annotations

import time
from pathlib import Path

from services.scheduler.core import SchedulerCore
from shared import protocol
from shared.clock import FakeClock
from shared.config import AccountConfig, Config, SchedulerConfig

WORLD0 = 1_700_000_000.0


def _core(accounts: int) -> SchedulerCore:
    nowhere = Path("/nonexistent")   # the core opens no file
    cfg = Config(path=None, run_dir=nowhere, data_dir=nowhere, log_dir=nowhere, scheduler=SchedulerConfig(),
                 accounts=tuple(AccountConfig(f"z{i}", "sim", ("standard",)) for i in range(accounts)))
    return SchedulerCore(cfg, FakeClock(world=WORLD0, mono=1000.0))


def _wake(core: SchedulerCore) -> None:
    core.next_wake()
    core.tick()


def core_cost(tasks: int = 20_000, accounts: int = 4) -> dict:
    """Drain ``tasks`` through an in-process core; µs of CPU per task (wall and process time)."""
    core = _core(accounts)
    for tid in range(1, tasks + 1):
        core.on_event({"seq": tid, "ts": WORLD0, "type": "task.submitted", "id": tid, "module": "bench",
                       "kind": "ask", "priority": 50, "requires": {}, "attrs": {}, "created": WORLD0,
                       "not_before": 0.0, "unknown_account": None, "state": "PENDING"})
    idents = [f"backend-z{i}#1".encode() for i in range(accounts)]
    hello = {ident: {"worker": f"backend-z{i}", "account": f"z{i}", "backend": "sim", "modes": ["standard"]}
             for i, ident in enumerate(idents)}
    for ident in idents:
        core.on_message(ident, protocol.encode_worker("ready", **hello[ident]))
    _wake(core)
    seq, done = tasks, 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while done < tasks:
        out = core.take_output()
        if not out:
            raise RuntimeError(f"the core stopped assigning after {done} of {tasks} tasks")
        for ident, kind, fields in out:
            if kind != "assign":
                continue
            tid, who = fields["task_id"], hello[ident]
            seq += 1
            core.on_event({"seq": seq, "ts": core.clock.world(), "type": "task.running", "id": tid,
                           "worker": who["worker"], "account": who["account"], "mode": "standard", "epoch": 1})
            _wake(core)
            core.on_message(ident, protocol.encode_worker("ready", **who, finishing=tid))
            _wake(core)
            seq += 1
            core.on_event({"seq": seq, "ts": core.clock.world(), "type": "task.done", "id": tid, "module": "bench",
                           "kind": "ask", "state": "DONE", "prev": "RUNNING", "epoch": 1})
            _wake(core)
            core.clock.advance(0.0005)
            done += 1
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"tasks": tasks, "accounts": accounts, "us_per_task": round(wall / tasks * 1e6, 1),
            "cpu_us_per_task": round(cpu / tasks * 1e6, 1)}
