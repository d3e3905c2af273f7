"""``/queue`` — tasks by state, module and kind, paged; ``/queue/ID`` — one task with its history, error,
result, who served it and why it waits; ``POST /queue/ID/ACTION`` — cancel, pause, resume, retry,
priority, through :func:`services.modules.operations.tasks.act` (the broker client's commands, as
``fanoctl queue ...`` runs them).

Paging follows the broker's ``list``: newest first by default (``?before=ID`` continues below the last one
shown: the page's "next" link), or oldest first with ``?order=oldest`` (``?after=ID``); ``?state=``,
``?module=``, ``?kind=`` filter, ``?limit=`` sets the page size (at most :data:`MAX_LIMIT`).
"""
from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.modules.operations.tasks import ACTIONS, act, why
from services.web.access import broker, call, clock, scheduler, tolerate
from services.web.forms import field, read_form, redirect_back
from services.web.templating import render
from shared.errors import BrokerUnavailable, FanoError

STATES = ("PENDING", "RUNNING", "DONE", "PARKED", "PAUSED", "CANCELLED")
LIMIT = 50
MAX_LIMIT = 500
NEWEST = 2**63   # ``before`` that starts a newest-first page at the newest task


def _int(value: str | None, default: int | None, lo: int = 0, hi: int = 2**62) -> int | None:
    if not value:
        return default
    try:
        return min(hi, max(lo, int(value)))
    except ValueError:
        return default


def tasks(request: Request) -> Response:
    q = request.query_params
    state = q.get("state", "").upper() or None
    if state not in STATES:
        state = None
    module = q.get("module", "").strip() or None
    kind = q.get("kind", "").strip() or None
    limit = _int(q.get("limit"), LIMIT, 1, MAX_LIMIT) or LIMIT
    oldest = q.get("order") == "oldest"
    cursor = "after" if oldest else "before"
    position = _int(q.get(cursor), None)
    c = broker(request)
    page = c.list(state=state, module=module, kind=kind, limit=limit,
                  **{cursor: position if position is not None or oldest else NEWEST})
    stats = c.stats()
    filters = {k: v for k, v in (("state", state), ("module", module), ("kind", kind)) if v}
    if limit != LIMIT:
        filters["limit"] = str(limit)
    if oldest:
        filters["order"] = "oldest"
    nxt = f"/queue?{urlencode({**filters, cursor: page['next']})}" if page["next"] is not None else None
    return render(request, "queue.html", {
        "tasks": page["tasks"], "next": nxt, "first": f"/queue?{urlencode(filters)}" if position else None,
        "oldest": oldest, "state": state or "", "module": module or "", "kind": kind or "", "states": STATES,
        "modules": sorted((stats.get("modules") or {}).keys()), "counts": stats.get("tasks") or {},
        "now": clock(request).world()}, page="queue")


def task(request: Request) -> Response:
    task_id = request.path_params["task_id"]
    c = broker(request)
    record = c.get(task_id, history=True)
    explanation: dict[str, Any] | None
    try:
        explanation = why(c, task_id, lambda what, **kw: scheduler(request, what, **kw))
    except BrokerUnavailable:
        raise
    except FanoError as exc:   # the page shows the task without the explanation, and says so in the log
        tolerate(request, "the scheduler's why for a task page", exc)
        explanation = None
    return render(request, "task.html", {"t": record, "why": explanation, "actions": _actions(record["state"]),
                                         "now": clock(request).world()}, page="queue")


def _actions(state: str) -> list[str]:
    """The actions that make sense in ``state`` (the broker refuses the others with INVALID_STATE anyway)."""
    live = state in ("PENDING", "RUNNING", "PAUSED")
    out = []
    if live:
        out += ["cancel", "priority"]
    if state in ("PENDING", "RUNNING"):
        out.append("pause")
    if state == "PAUSED" or state == "RUNNING":
        out.append("resume")
    if state == "PARKED":
        out += ["retry", "cancel"]
    return out


async def action(request: Request) -> Response:
    form = await read_form(request)
    task_id = request.path_params["task_id"]
    name = request.path_params["action"]
    back = f"/queue/{task_id}"
    if name not in ACTIONS:
        return redirect_back(back, error=f"unknown action {name!r}")
    priority = _int(field(form, "priority"), None, -(2**31), 2**31) if name == "priority" else None
    try:
        await call(request, act, task_id, name, reason=field(form, "reason"), priority=priority,
                   reset_attempts=field(form, "keep_attempts") != "on")
    except BrokerUnavailable:
        raise
    except FanoError as exc:
        return redirect_back(back, error=f"{exc.name}: {exc.message}")
    done = {"cancel": "cancelled", "pause": "paused", "resume": "resumed", "retry": "requeued",
            "priority": f"priority set to {priority}"}[name]
    return redirect_back(back, ok=f"task {task_id} {done}")


routes = [Route("/queue", tasks), Route("/queue/{task_id:int}", task),
          Route("/queue/{task_id:int}/{action:str}", action, methods=["POST"])]
