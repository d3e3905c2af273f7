"""``/document`` — the living document rendered with math, with comments beside the text and each
section's provenance; its versions, a diff between two, revert, and the Markdown to download.

* ``GET /document``: every section rendered (services/web/render.py); beside it its comments with their
  state (open, addressing, resolved with the version that applied it, needs_human) and where it came
  from: the insight (linked to ``/insights/ID``, which shows its review rounds) and that insight's thread
  (``/threads/ID``), and each revision's cause (incorporation, comment, section review, revert).
  Selecting text in a section fills that section's comment form with the passage (static/panel.js,
  ``data-comment-section``); without a script the form takes a typed passage.
* ``POST /document/comment`` (``section``, ``text``, ``quote``):
  :func:`services.modules.operations.documenter.add_comment`, as ``fanoctl comments add --quote``.
* ``GET /document/versions``: every version, newest first, paged (``?after=N``); a form picks two to diff.
* ``GET /document/versions/N``: version N rendered. ``GET /document/diff?from=A&to=B``: what changed.
* ``POST /document/revert`` (``version``): :func:`~services.modules.operations.documenter.revert_document`.
* ``GET /document/download?version=N``: the Markdown the module exports (current version by default), as a
  file (``fano-document-vN.md``).
"""
from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.modules.operations import documenter as OD
from services.modules.operations import research_views as V
from services.web.access import broker, call, clock
from services.web.forms import field, read_form, redirect_back
from services.web.pages.insights import int_param
from services.web.templating import render
from shared.errors import FanoError

VERSIONS_PAGE = 50
DONE_SHOWN = 3      # resolved comments shown beside a section (the newest); the rest are one click away


def document(request: Request) -> Response:
    view = V.document_view(broker(request))
    for sec in view["sections"]:
        live = [c for c in sec["comments"] if c.get("status") != "resolved"]
        done = sorted((c for c in sec["comments"] if c.get("status") == "resolved"),
                      key=lambda c: c.get("resolved_at") or 0, reverse=True)
        show_all = request.query_params.get("comments") == "all"
        sec["shown_comments"] = live + (done if show_all else done[:DONE_SHOWN])
        sec["hidden_comments"] = 0 if show_all else max(0, len(done) - DONE_SHOWN)
    return render(request, "document.html", {"d": view}, page="document")


def versions(request: Request) -> Response:
    rows = list(reversed(OD.versions(broker(request))))
    after = request.query_params.get("after")
    chunk, nxt = V.page(rows, after, VERSIONS_PAGE, key="version")
    current = rows[0]["version"] if rows else 0
    return render(request, "document_versions.html", {
        "versions": chunk, "current": current, "next": f"/document/versions?after={nxt}" if nxt else None,
        "first": "/document/versions" if after else None}, page="document")


def version(request: Request) -> Response:
    d = OD.version_sections(broker(request), request.path_params["n"])   # NOT_FOUND: the app's 404 page
    return render(request, "document_version.html", {"d": d}, page="document")


def diff(request: Request) -> Response:
    q = request.query_params
    c = broker(request)
    current = OD.version_sections(c)["version"]
    old = int_param(q.get("from"), max(0, current - 1), 0, 2**31)
    new = int_param(q.get("to"), current, 0, 2**31)
    d = OD.diff_versions(c, old, new)
    return render(request, "document_diff.html", {"d": d, "current": current}, page="document")


def download(request: Request) -> Response:
    raw = request.query_params.get("version")
    n = int_param(raw, -1, -1, 2**31) if raw else None
    number, text = OD.markdown(broker(request), None if n is None or n < 0 else n)
    return Response(text, media_type="text/markdown; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="fano-document-v{number}.md"'})


async def comment(request: Request) -> Response:
    form = await read_form(request)
    sid = field(form, "section")
    back = "/document"   # the outcome travels in the query string, which a #fragment would swallow
    try:
        rec: dict[str, Any] = await call(request, OD.add_comment, sid, field(form, "text"),
                                         quote=field(form, "quote") or None, now=clock(request).world())
    except FanoError as exc:
        return redirect_back(back, error=exc.message)
    return redirect_back(back, ok=f"comment {rec['id']} on {sid} added; the documenter addresses it next")


async def revert(request: Request) -> Response:
    form = await read_form(request)
    raw = field(form, "version")
    try:
        target = int(raw)
    except ValueError:
        return redirect_back("/document/versions", error=f"a version number, not {raw!r}")
    try:
        d = await call(request, OD.revert_document, target, now=clock(request).world())
    except FanoError as exc:
        return redirect_back("/document/versions", error=exc.message)
    return redirect_back("/document/versions", ok=f"version {d['version']}: the document equals version {target} "
                                                  f"again ({len(d['changed_sections'])} section(s) changed)")


routes = [
    Route("/document", document),
    Route("/document/versions", versions),
    Route("/document/versions/{n:int}", version),
    Route("/document/diff", diff),
    Route("/document/download", download),
    Route("/document/comment", comment, methods=["POST"]),
    Route("/document/revert", revert, methods=["POST"]),
]
