"""Form helpers for POST handlers: read a form with its CSRF check, answer with a redirect and a message.

The panel keeps no session store, so the one-line outcome of an action ("seed 12 added", or the refusal's
text) travels in the redirect's query string (``?ok=`` / ``?error=``) and the page shows it above its
content (``base.html``). It is text, autoescaped like everything else.
"""
from __future__ import annotations

from urllib.parse import urlencode, urlsplit

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse

from services.web.security import check_csrf


async def read_form(request: Request) -> FormData:
    """The POSTed form, after its CSRF check (raises ``CsrfRefused`` -> 403)."""
    form = await request.form()
    check_csrf(request, form)
    return form


def field(form: FormData, name: str, default: str = "") -> str:
    """One text field, stripped (a file upload or a missing field reads as ``default``)."""
    value = form.get(name)
    return value.strip() if isinstance(value, str) else default


def local_path(target: str, fallback: str) -> str:
    """``target`` if it is a path on this site, else ``fallback``: a redirect never leaves the panel."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return fallback
    return target


def redirect_back(target: str, ok: str | None = None, error: str | None = None) -> RedirectResponse:
    """303 to ``target`` (a local path) with the action's outcome for the next page to show."""
    target = local_path(target, "/")
    query = urlencode({k: v for k, v in (("ok", ok), ("error", error)) if v})
    sep = "&" if "?" in target else "?"
    return RedirectResponse(target + (sep + query if query else ""), status_code=303)
