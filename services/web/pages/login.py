"""``/login`` and ``/logout``: the sign-in form for a panel with ``[web] token`` (services/web/security.py)."""
from __future__ import annotations

import hmac
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from services.web.forms import field, local_path, read_form, redirect_back
from services.web.security import AUTH_COOKIE, session_value
from services.web.templating import render


def login_form(request: Request) -> Response:
    return render(request, "login.html", {"next": local_path(request.query_params.get("next", "/"), "/")})


async def login(request: Request) -> Response:
    form = await read_form(request)
    token: str = request.app.state.config.web.token
    target = local_path(field(form, "next", "/"), "/")
    if not token:
        return RedirectResponse(target, status_code=303)   # nothing to sign in to
    if not hmac.compare_digest(field(form, "token").encode(), token.encode()):
        return redirect_back("/login?" + urlencode({"next": target}), error="wrong token")
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(AUTH_COOKIE, session_value(token), httponly=True, samesite="strict", path="/")
    return response


async def logout(request: Request) -> Response:
    await read_form(request)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(AUTH_COOKIE, path="/", httponly=True, samesite="strict")
    return response


routes = [Route("/login", login_form), Route("/login", login, methods=["POST"]),
          Route("/logout", logout, methods=["POST"])]
