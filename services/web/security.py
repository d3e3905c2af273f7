"""Sign-in, CSRF and security headers (docs/web.md § Security).

**Who may use the panel.** With ``[web] token`` empty the panel serves everyone who can reach it, and
:class:`shared.config.WebConfig` allows that only on a loopback address. With a token, every request but
the sign-in page and the static files must carry either the header ``Authorization: Bearer TOKEN``
(scripts) or the session cookie the sign-in form sets. The cookie holds an HMAC of the token, not the
token itself (a leaked cookie does not reveal the secret, and changing the token signs everyone out); it
is ``HttpOnly`` (no script reads it) and ``SameSite=Strict`` (no other site's page sends it).

**CSRF.** Double-submit: every response makes sure the browser holds a random ``fano_csrf`` cookie
(``SameSite=Strict``, ``HttpOnly``); every form carries the same value in a hidden field
(:func:`csrf_field`), and every POST must present it (:func:`check_csrf`: the field, or the header
``X-CSRF-Token`` for script-driven posts), compared in constant time. Another site can make a browser
POST here but can neither read nor set this site's cookie, so it cannot know the value. A request signed
in with the Bearer header is exempt: a browser never adds that header on its own, so it cannot be forged
cross-site.

**Headers** on every response: a Content-Security-Policy that allows nothing but this origin's own files
(no inline script or style, no framing, forms post only here), ``X-Content-Type-Options: nosniff``,
``X-Frame-Options: DENY``, ``Referrer-Policy: no-referrer``.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import quote

from markupsafe import Markup
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

AUTH_COOKIE = "fano_session"
CSRF_COOKIE = "fano_csrf"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
PUBLIC_PREFIXES = ("/login", "/static/")   # reachable without signing in

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
           (b"x-frame-options", b"DENY"), (b"referrer-policy", b"no-referrer")]


class CsrfRefused(Exception):
    """A POST without the right CSRF token: answered 403 (services/web/app.py)."""


def session_value(token: str) -> str:
    """The cookie a signed-in browser holds: an HMAC of the token (never the token itself)."""
    return hmac.new(token.encode(), b"fano-web-session", hashlib.sha256).hexdigest()


def bearer_ok(request: Request, token: str) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


def signed_in(request: Request, token: str) -> bool:
    """Whether the request may use the panel (always, when no token is configured)."""
    if not token:
        return True
    if bearer_ok(request, token):
        return True
    cookie = request.cookies.get(AUTH_COOKIE, "")
    return hmac.compare_digest(cookie.encode(), session_value(token).encode())


def csrf_token(request: Request) -> str:
    """This browser's CSRF token: its cookie, or a new one the response will set (SecurityMiddleware)."""
    token = request.cookies.get(CSRF_COOKIE) or request.scope.get("fano.csrf_new")
    if not token:
        token = secrets.token_urlsafe(32)
        request.scope["fano.csrf_new"] = token
    return str(token)


def csrf_field(request: Request) -> Markup:
    """The hidden form field every POST form carries (templates: ``{{ csrf_field() }}``)."""
    return Markup('<input type="hidden" name="{}" value="{}">').format(CSRF_FIELD, csrf_token(request))


def check_csrf(request: Request, form: FormData | None = None) -> None:
    """Raise :class:`CsrfRefused` unless the POST carries this browser's CSRF token (or is signed in with
    the Bearer header, which no other site can make a browser send)."""
    token = request.app.state.config.web.token
    if token and bearer_ok(request, token):
        return
    cookie = request.cookies.get(CSRF_COOKIE, "")
    sent = request.headers.get(CSRF_HEADER, "")
    if form is not None and not sent:
        value = form.get(CSRF_FIELD, "")
        sent = value if isinstance(value, str) else ""
    if not cookie or not sent or not hmac.compare_digest(cookie.encode(), sent.encode()):
        raise CsrfRefused("the form's CSRF token is missing or does not match this browser's; reload the page "
                          "and try again")


class SecurityMiddleware:
    """Pure ASGI middleware (it must not buffer the event stream): sign-in gate, CSRF cookie, headers."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        path = scope["path"]
        if not path.startswith(PUBLIC_PREFIXES) and not signed_in(request, self.token):
            response: Response
            if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
                response = RedirectResponse(f"/login?next={quote(path)}", status_code=303)
            else:
                response = PlainTextResponse("sign in first: the login form at /login, or the header "
                                             "'Authorization: Bearer TOKEN'", status_code=401)
            await response(scope, receive, self._wrap(send, scope))
            return
        await self.app(scope, receive, self._wrap(send, scope))

    @staticmethod
    def _wrap(send: Send, scope: Scope) -> Send:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", [])) + HEADERS
                new = scope.get("fano.csrf_new")
                if new:
                    headers.append((b"set-cookie", f"{CSRF_COOKIE}={new}; Path=/; HttpOnly; "
                                                   "SameSite=Strict".encode()))
                message = {**message, "headers": headers}
            await send(message)
        return send_with_headers
