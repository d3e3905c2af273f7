"""``/`` — the overview, and ``/live/overview``, its live event stream (services/web/live.py).

The page and the stream show the same parts, rendered by the same macros (``overview_parts.html``):
``accounts`` (state, current task and its elapsed time, last error, cooling until, paused), ``quotas``
(each window as a bar: used / limit, reserves, reset), ``queue`` (depth per module), ``recent`` (the last
completions), ``health`` and ``research`` (counts). The page renders them once; afterwards the
follower re-renders them when the broker's events say something changed, and the browser swaps them in.

The facts are what ``fanoctl top`` reads (the broker's ``stats`` and ``quota_show``, the scheduler's
``top``, :mod:`services.modules.operations.summary`; the health is ``fanoctl health``'s report), gathered by
:func:`gather`.
"""
from __future__ import annotations

import threading
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from services.health import health_report, supervisor_conf
from services.modules.operations.summary import REFRESH, accounts_view, research_summary
from services.web.access import ask_scheduler, broker, config
from services.web.templating import render, templates
from shared.client import BrokerClient
from shared.clock import Clock
from shared.config import Config

PARTS = ("accounts", "quotas", "queue", "recent", "health", "research")
STATES = ("PENDING", "RUNNING", "DONE", "PARKED", "PAUSED", "CANCELLED")
IDLE_AFTER = 600.0   # fanoctl health's defaults: an account idle this long while work waits is degraded ...
MIN_DAYS = 7.0       # ... and storage full in fewer days than this

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


def _health(cfg: Config, c: BrokerClient) -> list[dict[str, str]]:
    """The checks of ``fanoctl health`` (services/health.py, the one health verdict: supervisord's programs, the
    broker, storage, parked tasks, paused accounts, the scheduler, accounts idle while work waits), each
    ``{"check", "status": ok|degraded|down, "line"}``."""
    report = health_report(c, lambda what, **kw: ask_scheduler(cfg, what, **kw), supervisor_conf(cfg.path),
                           IDLE_AFTER, MIN_DAYS, cfg.broker_endpoint, lambda: cfg.scheduler_endpoint)
    checks: list[dict[str, str]] = report["checks"]
    return checks


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
            "health": _health(cfg, c), "research": _research_counts(c, shown["now"])}


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
