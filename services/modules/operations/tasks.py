"""The operator's task commands as ``fanoctl queue ...`` and the panel's Queue page run them.

The writes are the broker client's own commands (``cancel``, ``pause``, ``resume``, ``retry``,
``set_priority``: :mod:`shared.client`), called alike by both; :func:`act` is the panel's dispatch over
them by name. :func:`why` composes what ``fanoctl queue why`` and the task page show about a waiting or
running task: the scheduler's explanation (asked only while the task is PENDING) with the broker's facts.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shared.errors import bad_argument

ACTIONS = ("cancel", "pause", "resume", "retry", "priority")


def act(client, task_id: int, action: str, reason: str = "", priority: int | None = None,
        reset_attempts: bool = True) -> dict:
    """Apply one operator ``action`` to a task; the broker's answer (its refusals raise ``FanoError``)."""
    if action == "cancel":
        return client.cancel(task_id, reason)
    if action == "pause":
        return client.pause(task_id)
    if action == "resume":
        return client.resume(task_id)
    if action == "retry":
        return client.retry(task_id, reset_attempts=reset_attempts)
    if action == "priority":
        if priority is None:
            raise bad_argument("priority needs a whole number", field="priority")
        return client.set_priority(task_id, priority)
    raise bad_argument(f"unknown action {action!r} (known: {', '.join(ACTIONS)})", field="action")


def why(client, task_id: int, ask: Callable[..., Any]) -> dict:
    """``{"id", "state", "scheduler", "not_before", "error", "lease"}``: ``scheduler`` is the scheduler's
    ``why`` answer (services/scheduler/queries.py) for a PENDING task, None otherwise or when it does not
    answer; ``ask(what, **fields)`` asks it (None for silence)."""
    task = client.get(task_id, history=False)
    answer = ask("why", task_id=task_id) if task["state"] == "PENDING" else None
    return {"id": task_id, "state": task["state"], "scheduler": answer, "not_before": task.get("not_before"),
            "error": task.get("error"), "lease": task.get("lease")}
