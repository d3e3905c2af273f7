"""What the scheduler knows, for the code that decides or answers from it without changing it.

:class:`SchedulerView` is handed to placement (services/scheduler/placement.py), the responsive-accounts
rule (services/scheduler/responsive.py), the hand-off proposals (services/scheduler/handoff.py), the idle
watch (services/scheduler/idle.py) and the operator's queries (services/scheduler/queries.py) instead of
the core (services/scheduler/core.py). It names the owners of the state, so a reader sees at each use
whose state it is:

==============  ========================================================================================
``table``       the tracked PENDING tasks and their place, the assignments, the running tasks
                (:class:`services.scheduler.tasks.TaskTable`)
``convs``       the conversations: binding, turn in flight, waiting and expected turns
                (:class:`services.scheduler.conversations.Conversations`)
``workers``     the workers table (:class:`services.scheduler.workers.WorkerRegistry`)
``accounts``    pauses, cool-downs and quota blocks (:class:`services.scheduler.accounts.Accounts`)
``model``       the priority model (:class:`services.scheduler.priority.PriorityModel`)
``placement``   the placement advisor's estimates and deadlines; ``handoffs`` the hand-off proposals
``recent``      the last task.done events (``top``); ``last_outcome``: each account's last ``done``;
                ``status``: the service's counters (synced, last seq, ...)
==============  ========================================================================================

plus the configuration (``config``, ``scfg``), the clock, and :meth:`mode_for`, the one answer to "in
which mode would this account run a task of this class now". Read-only by contract: only the core
changes the owners, on an event, a message or its tick (one writer, so nothing changes under a
decision being made). The view holds references, not copies: it costs nothing to pass around and is
never stale.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from services.scheduler.accounts import Accounts
from services.scheduler.classes import candidate_modes, charge_modules, reconciles
from services.scheduler.conversations import Conversations
from services.scheduler.priority import PriorityModel
from services.scheduler.tasks import TaskTable
from services.scheduler.workers import WorkerRegistry

if TYPE_CHECKING:   # they take the view themselves
    from services.scheduler.handoff import Handoffs
    from services.scheduler.placement import Placement


class SchedulerView:
    """Read-only references to the scheduler's state owners (module docstring)."""

    placement: Placement
    handoffs: Handoffs

    def __init__(self, config: Any, clock: Any, model: PriorityModel, table: TaskTable, convs: Conversations,
                 workers: WorkerRegistry, accounts: Accounts, recent: deque[dict], last_outcome: dict[str, dict],
                 status: dict[str, Any]):
        self.config, self.scfg, self.clock, self.model = config, config.scheduler, clock, model
        self.table, self.convs, self.workers, self.accounts = table, convs, workers, accounts
        self.recent, self.last_outcome, self.status = recent, last_outcome, status

    def mode_for(self, account: str, modes: Sequence[str], cls: tuple, module: str, world: float) -> str | None:
        """The mode in which ``account`` would run a task of this class now, or None if it cannot."""
        free = reconciles(cls, account)   # a reconcile lease is charged no unit (services/broker/ops_lease.py)
        for mode in candidate_modes(cls):
            if mode in modes and (free or any(self.accounts.why_not(account, mode, m, world) is None
                                              for m in charge_modules(cls, module))):
                return mode
        return None
