"""``/seeds`` — seeds by type, with the form to add one; ``/seeds/ID`` — one seed: edit (text, type,
priority, tags, notes), priority, remove, resume, and its threads.

Reads: :func:`services.modules.operations.explorer_views.seed_rows` (what ``fanoctl seeds ls`` shows);
writes: :mod:`services.modules.operations.explorer` (``add_seed``, ``edit_seed``, ``set_seed_priority``,
``remove_seed``, ``resume_seed``), the functions ``fanoctl seeds add|edit|priority|rm|resume`` call, so the
panel refuses what the CLI refuses, with the same message.
"""
from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.modules.explorer.model import SEED_TYPES
from services.modules.operations import explorer as OX
from services.modules.operations.explorer_views import seed_rows, thread_rows
from services.web.access import broker, call, clock
from services.web.forms import field, read_form, redirect_back
from services.web.templating import render
from shared.errors import BrokerUnavailable, FanoError

PAGE = 100   # seeds per page (a researcher has tens; the list is cut, never unbounded)


def _priority(value: str) -> int | str:
    """A form's priority: digits are a number, anything else a word (high/medium/low), as on the CLI."""
    return int(value) if value.isdigit() else value


def _tags(value: str) -> list[str]:
    return [t for t in (part.strip() for part in value.replace(",", " ").split()) if t]


def seeds(request: Request) -> Response:
    kind = request.query_params.get("type") or None
    if kind not in SEED_TYPES:
        kind = None
    raw = request.query_params.get("offset", "")
    offset = int(raw) if raw.isdigit() else 0
    data = seed_rows(broker(request), clock(request).world(), kind)
    rows = sorted(data["seeds"], key=lambda s: (-s.get("priority", 0), s["id"]))
    shown = rows[offset:offset + PAGE]
    more = offset + PAGE < len(rows)
    return render(request, "seeds.html", {
        "seeds": shown, "threads": data["threads"], "kind": kind or "", "types": SEED_TYPES, "total": len(rows),
        "next": f"/seeds?offset={offset + PAGE}" + (f"&type={kind}" if kind else "") if more else None,
        "offset": offset}, page="seeds")


def seed(request: Request) -> Response:
    seed_id = request.path_params["seed_id"]
    c = broker(request)
    data = seed_rows(c, clock(request).world())
    row = next((s for s in data["seeds"] if s["id"] == seed_id), None)
    if row is None:
        return render(request, "error.html", {"title": "No such seed", "message": f"no seed {seed_id!r}"},
                      status=404)
    return render(request, "seed.html", {"s": row, "types": SEED_TYPES,
                                         "threads": thread_rows(c, seed_id=seed_id)}, page="seeds")


async def _write(request: Request, back: str, ok: str, fn: Any, *args: Any, **kw: Any) -> Response:
    """Run one operation; its refusal is shown on ``back`` (the broker being away is the 503 page)."""
    try:
        result = await call(request, fn, *args, **kw)
    except BrokerUnavailable:
        raise
    except FanoError as exc:
        return redirect_back(back, error=f"{exc.name}: {exc.message}")
    return redirect_back(back, ok=ok.format(r=result))


async def add(request: Request) -> Response:
    form = await read_form(request)
    now = clock(request).world()
    return await _write(request, "/seeds", "seed {r[id]} added", OX.add_seed, field(form, "text"), now=now,
                        kind=field(form, "type", "conjecture"), priority=_priority(field(form, "priority", "5")),
                        tags=_tags(field(form, "tags")), notes=field(form, "notes"),
                        seed_id=field(form, "id") or None)


async def edit(request: Request) -> Response:
    form = await read_form(request)
    seed_id = request.path_params["seed_id"]
    return await _write(request, f"/seeds/{seed_id}", "seed {r[id]} updated", OX.edit_seed, seed_id,
                        now=clock(request).world(), text=field(form, "text") or None,
                        kind=field(form, "type") or None,
                        priority=_priority(field(form, "priority")) if field(form, "priority") else None,
                        tags=_tags(field(form, "tags")), notes=field(form, "notes"))


async def priority(request: Request) -> Response:
    form = await read_form(request)
    seed_id = request.path_params["seed_id"]
    return await _write(request, field(form, "back") or f"/seeds/{seed_id}",
                        "seed " + seed_id + " priority {r[seed][priority]}", OX.set_seed_priority, seed_id,
                        _priority(field(form, "priority")), now=clock(request).world())


async def remove(request: Request) -> Response:
    await read_form(request)
    seed_id = request.path_params["seed_id"]
    try:
        await call(request, OX.remove_seed, seed_id)
    except BrokerUnavailable:
        raise
    except FanoError as exc:
        return redirect_back(f"/seeds/{seed_id}", error=f"{exc.name}: {exc.message}")
    return redirect_back("/seeds", ok=f"seed {seed_id} removed (its threads and insights stay)")


async def resume(request: Request) -> Response:
    await read_form(request)
    seed_id = request.path_params["seed_id"]
    return await _write(request, f"/seeds/{seed_id}", f"seed {seed_id} resumed", OX.resume_seed, seed_id,
                        now=clock(request).world())


routes = [Route("/seeds", seeds), Route("/seeds/add", add, methods=["POST"]),
          Route("/seeds/{seed_id:str}", seed),
          Route("/seeds/{seed_id:str}/edit", edit, methods=["POST"]),
          Route("/seeds/{seed_id:str}/priority", priority, methods=["POST"]),
          Route("/seeds/{seed_id:str}/remove", remove, methods=["POST"]),
          Route("/seeds/{seed_id:str}/resume", resume, methods=["POST"])]
