"""Priority overrides reach tasks already queued (``fanoctl seeds priority``, ``insights priority``).

The scheduler ranks a task by ``seed_weight × attrs.seed_priority`` plus its kind's base adjusted by the
task's own ``priority`` around 50 (services/scheduler/priority.py). ``attrs`` are fixed when a task is
submitted and the broker has no command that changes them; ``set_priority`` (``fanoctl queue priority``)
changes the task's own priority. So a live task submitted at seed priority ``a`` is brought to the
entity's current priority ``p`` by giving it the priority::

    50 + seed_weight × (p − a)

which the scheduler turns into exactly the seed term of ``p``. The value is absolute (not a delta), so
setting it twice, or again after a crash, is the same as setting it once.

When: a thread (an insight) records in ``queued_priority`` the priority its live tasks are aligned with.
``new_thread`` / ``new_insights`` set it with ``priority``; the CLI's overrides change only ``priority``.
When the two differ (or ``queued_priority`` is missing: a record written before the field existed), the
module aligns every live task of the entity (PENDING, PAUSED, and RUNNING — a running task may fail back
into the queue), then records ``queued_priority`` with a version-checked write. A module killed in between
sees the difference again on its next pass and repeats the (idempotent) alignment; a human change made
meanwhile fails the version check and is aligned on the next pass. Threads are checked on every planning
pass (the module reads them anyway), pending insights on every repair pass (``repair_interval``).

Once aligned, the module leaves the tasks alone: a later ``fanoctl queue priority`` on one of them stays.
An earlier one on a task of that entity is replaced by the alignment (the broker keeps one priority per
task; the operator's adjustment and the module's cannot be told apart).
"""
from __future__ import annotations

from services.modules.explorer import model as M
from shared.errors import ErrorCode, FanoError

BROKER_DEFAULT_PRIORITY = 50      # the broker's default task priority: an adjustment of 0
LIVE_STATES = ("PENDING", "PAUSED", "RUNNING")
PAGE = 200
THREAD_FOLLOWS = M.OPEN_THREAD + ("paused",)   # threads whose tasks are still worth aligning


def target(task: dict, priority, weight: float) -> int:
    """The task priority that makes the scheduler count ``priority`` instead of the task's own
    ``attrs.seed_priority``."""
    attrs = task.get("attrs")
    queued = attrs.get("seed_priority") if isinstance(attrs, dict) else None
    if isinstance(queued, bool) or not isinstance(queued, (int, float)):
        queued = 0
    return BROKER_DEFAULT_PRIORITY + int(round(weight * (int(priority) - queued)))


def needs_alignment(record: dict) -> bool:
    return record.get("queued_priority") != record.get("priority")


OWNERS = {"thread_id": M.task_thread_id, "insight_id": M.task_insight_id}


def live_tasks(client, field: str, ids):
    """The module's live tasks of the entities ``ids`` (``field``: ``thread_id`` or ``insight_id``),
    listed without payloads: a task's key names its thread or insight (:func:`.model.task_thread_id`)."""
    ids, owner = set(ids), OWNERS[field]
    for state in LIVE_STATES:
        after = None
        while True:
            page = client.list(state=state, module=M.MODULE, after=after, limit=PAGE)
            for task in page["tasks"]:
                if owner(task) in ids:
                    yield task
            after = page.get("next")
            if not after:
                break


def align(client, field: str, wanted: dict, weight: float, log=None) -> list[int]:
    """Give every live task of the entities ``wanted`` ({id: priority}) its aligned priority; returns the
    ids of the tasks changed. A task that settled meanwhile is skipped (its follow-ups carry the new
    priority in their attrs)."""
    changed, owner = [], OWNERS[field]
    for task in list(live_tasks(client, field, wanted)):
        ident = owner(task)
        prio = target(task, wanted[ident], weight)
        if task.get("priority") == prio:
            continue
        try:
            client.set_priority(task["id"], prio)
        except FanoError as exc:
            if exc.code not in (ErrorCode.INVALID_STATE, ErrorCode.NOT_FOUND):
                raise
            continue
        changed.append(task["id"])
        if log is not None:
            log.info("task %s (%s): priority %s -> %s (%s %s now at priority %s)", task["id"], task["kind"],
                     task.get("priority"), prio, field.split("_")[0], ident, wanted[ident])
    return changed
