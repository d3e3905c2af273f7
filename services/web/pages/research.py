"""``/research`` — the researcher's questions, sources with their trust, findings; promote a finding to a
seed, add a source.

``GET /research?tab=questions|sources|findings&status=&after=&limit=`` (``status`` filters sources;
findings are most confident first, each with its source's trust, its cross-references and whether it was
promoted). ``POST /research/promote`` (``finding``, ``type`` question | conjecture | empty for the default,
``priority`` 1-10 or empty) runs :func:`services.modules.operations.researcher.promote_finding` and ``POST
/research/source`` (``url``, ``note``) :func:`~services.modules.operations.researcher.add_source`, as
``fanoctl research promote|add-source``.
"""
from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.modules.operations import research_views as V
from services.modules.operations import researcher as OR
from services.web.access import broker, call, clock
from services.web.forms import field, read_form, redirect_back
from services.web.pages.insights import int_param
from services.web.templating import render
from shared.errors import FanoError

TABS = ("findings", "questions", "sources")
LIMIT, MAX_LIMIT = 50, 500


def research(request: Request) -> Response:
    q = request.query_params
    tab = q.get("tab") if q.get("tab") in TABS else TABS[0]
    c = broker(request)
    status = q.get("status") or None
    limit = int_param(q.get("limit"), LIMIT, 1, MAX_LIMIT)
    trust = {s["id"]: s for s in V.sources(c)}
    if tab == "findings":
        rows = V.findings(c, q.get("source") or None)
    elif tab == "questions":
        rows = V.questions(c)
    else:
        rows = [s for s in trust.values() if status is None or s.get("status") == status]
    chunk, nxt = V.page(rows, q.get("after"), limit)
    filters = {k: v for k, v in (("tab", tab), ("status", status), ("source", q.get("source")),
                                 ("limit", str(limit) if limit != LIMIT else None)) if v}
    return render(request, "research.html", {
        "tab": tab, "tabs": TABS, "rows": chunk, "total": len(rows), "sources": trust, "status": status,
        "statuses": sorted({s.get("status") or "?" for s in trust.values()}),
        "next": f"/research?{urlencode({**filters, 'after': nxt})}" if nxt else None,
        "first": f"/research?{urlencode(filters)}" if q.get("after") else None}, page="research")


async def promote(request: Request) -> Response:
    form = await read_form(request)
    fid, kind, raw = field(form, "finding"), field(form, "type") or None, field(form, "priority")
    back = "/research?tab=findings"
    try:
        prio = int(raw) if raw else None
    except ValueError:
        return redirect_back(back, error=f"a seed priority is an integer 1-10, not {raw!r}")
    try:
        d = await call(request, OR.promote_finding, fid, kind=kind, priority=prio, now=clock(request).world())
    except FanoError as exc:
        return redirect_back(back, error=exc.message)
    p = d["promotion"]
    if not d["created"]:
        return redirect_back(back, ok=f"finding {fid} was already promoted ({p['type']}, priority {p['priority']})")
    return redirect_back(back, ok=f"finding {fid} promoted: the explorer adds it as a {p['type']} "
                                  f"(priority {p['priority']})")


async def add_source(request: Request) -> Response:
    form = await read_form(request)
    back = "/research?tab=sources"
    try:
        d = await call(request, OR.add_source, field(form, "url"), note=field(form, "note"), now=clock(request).world())
    except FanoError as exc:
        return redirect_back(back, error=exc.message)
    verb = "added: it is fetched and evaluated next" if d["created"] else "is already known"
    return redirect_back(back, ok=f"source {d['source']['url']} {verb}")


routes = [
    Route("/research", research),
    Route("/research/promote", promote, methods=["POST"]),
    Route("/research/source", add_source, methods=["POST"]),
]
