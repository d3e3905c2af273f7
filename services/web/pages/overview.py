"""``/`` — the overview, and ``/live/overview``, its live event stream (services/web/live.py).

The page and the stream show the same parts, rendered by the same macros (``overview_parts.html``):
``accounts`` (state, current task and its elapsed time, last error, cooling until, paused), ``quotas``
(each window as a bar: used / limit, reserves, reset), ``queue`` (depth per module), ``recent`` (the last
completions), ``health`` and ``research`` (counts). The page renders them once; afterwards the
follower re-renders them when the broker's events say something changed, and the browser swaps them in.

The facts are what ``fanoctl top`` reads (the broker's ``stats`` and ``quota_show``, the scheduler's
``top``, :mod:`services.modules.operations.summary`), gathered by :func:`gather`.
"""
from __future__ import annotations

import threading
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from services.modules.operations.summary import REFRESH, accounts_view, research_summary
from services.web.access import ask_scheduler, broker, config
from services.web.templating import render, templates
from shared.client import BrokerClient
from shared.clock import Clock
from shared.config import Config

PARTS = ("accounts", "quotas", "queue", "recent", "health", "research")
STATES = ("PENDING", "RUNNING", "DONE", "PARKED", "PAUSED", "CANCELLED")

# the research counts scan the modules' namespaces: counted at most every REFRESH seconds (as `top` does),
# shared by the page and the follower
_research_lock = threading.Lock()
_research: dict[str, Any] = {"at": None, "value": None}


def _research_counts(c: BrokerClient, now: float) -> dict[str, Any]:
    with _research_lock:
        fresh = _research["value"] is not None and time.monotonic() - _research["at"] < REFRESH
        if not fresh:
            _research["value"] = research_summary(c, now=now)
            _research["at"] = time.monotonic()
        value: dict[str, Any] = _research["value"]
        return value


def _health(stats: dict[str, Any], sched: Any, accounts: dict[str, Any]) -> list[dict[str, str]]:
    """A few lines on what needs the researcher: each ``{"status": ok|degraded|down, "line": text}``."""
    lines = [{"status": "ok", "line": "the broker answers"}]
    if sched is None:
        lines.append({"status": "down", "line": "the scheduler does not answer: nothing is dispatched"})
    elif isinstance(sched, dict) and sched.get("workers") == 0:
        lines.append({"status": "degraded", "line": "no worker is connected to the scheduler"})
    else:
        lines.append({"status": "ok", "line": f"the scheduler answers; {sched.get('workers', 0)} worker(s)"})
    storage = (stats.get("broker") or {}).get("storage") or {}
    if storage.get("refusing"):
        lines.append({"status": "degraded", "line": f"storage: new work refused ({storage['refusing']})"})
    elif isinstance(storage.get("days_until_full"), (int, float)) and storage["days_until_full"] < 7:
        lines.append({"status": "degraded", "line": f"storage: full in {storage['days_until_full']:.1f} days"})
    parked = (stats.get("tasks") or {}).get("PARKED", 0)
    if parked:
        lines.append({"status": "degraded", "line": f"{parked} parked task(s): retry or cancel them in the Queue"})
    for row in accounts.get("backends", []):
        if row.get("paused"):
            lines.append({"status": "degraded",
                          "line": f"account {row['account']} is paused: {row.get('pause_reason') or 'no reason'}"})
    return lines


def gather(cfg: Config, c: BrokerClient, clock: Clock) -> dict[str, Any]:
    """Everything the overview shows. Raises ``BrokerUnavailable`` when the broker does not answer."""
    stats = c.stats()
    shown = c.quota_show()
    sched = ask_scheduler(cfg, "top")
    accounts = accounts_view(shown, sched, list(cfg.account_names), None)
    modules = stats.get("modules") or {}
    sched_modules = (sched or {}).get("modules") or {} if isinstance(sched, dict) else {}
    queue = [{"module": m, **{s: counts.get(s, 0) for s in STATES},
              "ready": (sched_modules.get(m) or {}).get("ready"), "weight": (sched_modules.get(m) or {}).get("weight")}
             for m, counts in sorted(modules.items())]
    recent = (sched or {}).get("recent", [])[:15] if isinstance(sched, dict) else []
    return {"now": shown["now"], "stats": stats, "quotas": shown["quotas"], "accounts": accounts["backends"],
            "scheduler_up": sched is not None, "queue": queue, "recent": recent,
            "health": _health(stats, sched, accounts), "research": _research_counts(c, shown["now"])}


def build_parts(cfg: Config, c: BrokerClient, clock: Clock) -> dict[str, str]:
    """The overview's parts as HTML, ``{part: html}`` (the live stream's events)."""
    data = gather(cfg, c, clock)
    macros = templates.env.get_template("overview_parts.html").module
    return {name: str(getattr(macros, name)(data)) for name in PARTS}


def overview(request: Request) -> Response:
    data = gather(config(request), broker(request), request.app.state.clock)
    return render(request, "overview.html", {"d": data, "live": request.app.state.hub is not None},
                  page="overview")


async def live_overview(request: Request) -> Response:
    hub = request.app.state.hub
    if hub is None:
        return Response("this panel has no live follower (it is not the supervised program)", status_code=404)
    return StreamingResponse(hub.stream(request.is_disconnected), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


routes = [Route("/", overview), Route("/live/overview", live_overview)]
