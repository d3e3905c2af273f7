"""``/threads`` — threads by status (and seed); ``/threads/ID`` — a thread's transcript: each exchange with
the account that answered, its mode and time, the answer rendered (``md``: services/web/render.py), then
its synthesis and insights; pause, resume, archive.

Reads: :mod:`services.modules.operations.explorer_views` (what ``fanoctl threads ls|show`` shows); writes:
:mod:`services.modules.operations.explorer` (``pause_thread``, ``resume_thread``, ``archive_thread``).
"""
from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.modules.explorer.model import THREAD_STATUSES
from services.modules.operations import explorer as OX
from services.modules.operations.explorer_views import thread_rows, thread_view
from services.web.access import broker, call, clock
from services.web.forms import read_form, redirect_back
from services.web.templating import render
from shared.errors import BrokerUnavailable, FanoError

PAGE = 100
ACTIONS = {"pause": (OX.pause_thread, "paused"), "resume": (OX.resume_thread, "resumed"),
           "archive": (OX.archive_thread, "archived")}


def threads(request: Request) -> Response:
    q = request.query_params
    status = q.get("status") or None
    if status not in THREAD_STATUSES:
        status = None
    seed_id = q.get("seed") or None
    raw = q.get("offset", "")
    offset = int(raw) if raw.isdigit() else 0
    rows = sorted(thread_rows(broker(request), status, seed_id), key=lambda t: t.get("updated_at") or 0,
                  reverse=True)
    keep = {k: v for k, v in (("status", status), ("seed", seed_id)) if v}
    more = offset + PAGE < len(rows)
    query = "&".join(f"{k}={v}" for k, v in keep.items())
    return render(request, "threads.html", {
        "threads": rows[offset:offset + PAGE], "total": len(rows), "status": status or "", "seed": seed_id or "",
        "statuses": THREAD_STATUSES, "offset": offset,
        "next": f"/threads?offset={offset + PAGE}" + (f"&{query}" if query else "") if more else None,
        "first": "/threads" + (f"?{query}" if query else "")}, page="threads")


def thread(request: Request) -> Response:
    thread_id = request.path_params["thread_id"]
    view = thread_view(broker(request), thread_id)
    return render(request, "thread.html", {"v": view, "t": view["thread"]}, page="threads")


async def action(request: Request) -> Response:
    await read_form(request)
    thread_id = request.path_params["thread_id"]
    back = f"/threads/{thread_id}"
    name = request.path_params["action"]
    if name not in ACTIONS:
        return redirect_back(back, error=f"unknown action {name!r}")
    fn, done = ACTIONS[name]
    try:
        await call(request, fn, thread_id, now=clock(request).world())
    except BrokerUnavailable:
        raise
    except FanoError as exc:
        return redirect_back(back, error=f"{exc.name}: {exc.message}")
    return redirect_back(back, ok=f"thread {thread_id} {done}")


routes = [Route("/threads", threads), Route("/threads/{thread_id:str}", thread),
          Route("/threads/{thread_id:str}/{action:str}", action, methods=["POST"])]
