"""``/insights`` — insights by how far they got (pending, reviewing, blessed, interesting, disputed,
rejected, duplicate), each with its review rounds; bless / interesting / reject / priority.

``GET /insights?status=&disputed=1&thread=&q=&after=&limit=``: the list, newest first, paged after an
insight id; ``GET /insights/ID``: one insight with its versions, dedup verdict, overrides, every review
round (each reviewer's rating, reasoning and proposed rewording, the math check, the deliberation, mind
changes) and the document sections made from it. ``POST /insights/ID/decide`` (``status`` = blessed |
interesting | rejected, ``note``) and ``POST /insights/ID/priority`` (``priority`` 1-10) run the
operations layer's :func:`~services.modules.operations.explorer.override_insight` and
:func:`~services.modules.operations.explorer.set_insight_priority`, as ``fanoctl insights bless|...``.
"""
from __future__ import annotations

import threading
import time
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.modules.operations import explorer as OX
from services.modules.operations import research_views as V
from services.modules.store import Store
from services.web.access import broker, call, clock
from services.web.forms import field, read_form, redirect_back
from services.web.templating import render
from shared.errors import FanoError

LIMIT, MAX_LIMIT = 50, 500
READ_TTL = 2.0   # seconds one read of the insights and their review stages serves the list

# The list needs every insight (its counts are over all of them) and the stage of every review, the two
# largest prefixes of the explorer's namespace: one read serves the page's threads for READ_TTL seconds, so
# a page of a list the explorer is changing is at most that much behind it. A write the panel makes
# itself (decide, priority) drops the read, so its result is on the next page at once.
_read_lock = threading.Lock()
_reads: dict[str, tuple[float, list[dict], dict[str, str | None]]] = {}   # broker endpoint -> (until, ...)


def _listing(c: Any) -> tuple[list[dict], dict[str, str | None]]:
    with _read_lock:
        hit = _reads.get(c.endpoint)
        if hit is None or time.monotonic() >= hit[0]:
            hit = _reads[c.endpoint] = (time.monotonic() + READ_TTL, Store(c, "explorer").records("insights/"),
                                        V.review_stages(c))
        return hit[1], hit[2]


def _forget() -> None:
    with _read_lock:
        _reads.clear()


DECISIONS = {"blessed": "bless", "interesting": "interesting", "rejected": "reject"}


def int_param(value: str | None, default: int, lo: int, hi: int) -> int:
    """A query parameter as an integer in [lo, hi]; ``default`` when absent or not a number."""
    try:
        return max(lo, min(hi, int(value or "")))
    except ValueError:
        return default


def insights(request: Request) -> Response:
    q = request.query_params
    status = q.get("status") if q.get("status") in V.SHOWN else None
    disputed = q.get("disputed") == "1"
    thread, text = q.get("thread") or None, q.get("q") or None
    limit = int_param(q.get("limit"), LIMIT, 1, MAX_LIMIT)
    c = broker(request)
    records, stages = _listing(c)
    data = V.insight_rows(c, status=status, thread=thread, text=text, disputed=disputed, stages=stages,
                          insights=records)
    rows, nxt = V.page(data["insights"], q.get("after"), limit)
    filters = {k: v for k, v in (("status", status), ("disputed", "1" if disputed else None), ("thread", thread),
                                 ("q", text), ("limit", str(limit) if limit != LIMIT else None)) if v}
    return render(request, "insights.html", {
        "rows": rows, "counts": data["counts"], "total": len(data["insights"]), "status": status,
        "disputed": disputed, "thread": thread, "q": text, "groups": V.SHOWN, "decisions": DECISIONS,
        "next": f"/insights?{urlencode({**filters, 'after': nxt})}" if nxt else None,
        "first": f"/insights?{urlencode(filters)}" if q.get("after") else None,
        "here": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
    }, page="insights")


def insight(request: Request) -> Response:
    view = V.insight_view(broker(request), request.path_params["iid"])   # NOT_FOUND: the app's 404 page
    review: dict[str, Any] = view["review"] or {}
    rounds = sorted((review.get("rounds") or {}).items(), key=lambda kv: str(kv[0]))
    return render(request, "insight.html", {**view, "rounds": rounds, "decisions": DECISIONS,
                                            "shown": V.shown_status(view["insight"], review.get("stage")),
                                            "here": request.url.path}, page="insights")


def _back(form: Any, iid: str) -> str:
    return field(form, "back") or f"/insights/{iid}"


async def decide(request: Request) -> Response:
    form = await read_form(request)
    iid, status = request.path_params["iid"], field(form, "status")
    try:
        new = await call(request, OX.override_insight, iid, status, note=field(form, "note") or None,
                         now=clock(request).world())
    except FanoError as exc:
        return redirect_back(_back(form, iid), error=exc.message)
    finally:
        _forget()   # after the write: a read made meanwhile must not serve the next page
    return redirect_back(_back(form, iid), ok=f"insight {iid}: {new['overrides'][-1]['from']} -> {status}")


async def priority(request: Request) -> Response:
    form = await read_form(request)
    iid = request.path_params["iid"]
    raw = field(form, "priority")
    try:
        value = int(raw)
    except ValueError:
        return redirect_back(_back(form, iid), error=f"an insight's priority is an integer 1-10, not {raw!r}")
    try:
        await call(request, OX.set_insight_priority, iid, value, now=clock(request).world())
    except FanoError as exc:
        return redirect_back(_back(form, iid), error=exc.message)
    finally:
        _forget()
    return redirect_back(_back(form, iid), ok=f"insight {iid}: priority {value}")


routes = [
    Route("/insights", insights),
    Route("/insights/{iid:str}", insight),
    Route("/insights/{iid:str}/decide", decide, methods=["POST"]),
    Route("/insights/{iid:str}/priority", priority, methods=["POST"]),
]
