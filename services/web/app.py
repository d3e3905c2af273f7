"""The Starlette application: middleware, static files, every page module's routes, the error pages.

:func:`create_app` is what the program (services/web/service.py), the tests and ``ops/bench-web`` serve.
Error pages: the broker not answering is a 503 page that says so (``BrokerUnavailable``; the live
overview shows a banner instead and recovers by itself); a refusal from the broker or the operations
layer (``FanoError``) is a 4xx page with its code and message; a POST without its CSRF token is 403.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from services.web.access import PROGRAM
from services.web.pages import load_routes
from services.web.security import CsrfRefused, SecurityMiddleware
from services.web.templating import render
from shared.clock import Clock
from shared.config import Config
from shared.errors import BrokerUnavailable, ErrorCode, FanoError
from shared.service import Tolerance

STATIC = Path(__file__).parent / "static"

# a broker refusal as an HTTP status (anything else: 400)
STATUS = {ErrorCode.NOT_FOUND: 404, ErrorCode.CONDITION_FAILED: 409, ErrorCode.INVALID_STATE: 409}


def _error_page(request: Request, status: int, title: str, message: str) -> Response:
    return render(request, "error.html", {"title": title, "message": message}, status=status)


async def _unavailable(request: Request, exc: Exception) -> Response:
    return _error_page(request, 503, "The broker is unavailable",
                       f"The panel could not reach Fano's broker ({exc}). It is probably restarting: "
                       "supervisord brings it back by itself. Reload this page in a few seconds.")


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FanoError)
    return _error_page(request, STATUS.get(exc.code, 400), exc.code.name, exc.message)


async def _csrf(request: Request, exc: Exception) -> Response:
    return _error_page(request, 403, "Refused: no valid CSRF token", str(exc))


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error_page(request, exc.status_code, f"{exc.status_code}", str(exc.detail))


def create_app(config: Config, clock: Clock | None = None, hub: Any = None,
               tolerance: Tolerance | None = None) -> Starlette:
    """The panel for ``config``'s tree. ``hub`` (services/web/live.py ``Hub``) feeds the live overview;
    without one (tests of single pages, the benchmark) the overview's live stream says it is not live.
    ``tolerance`` counts and logs what a page went on without (the web program's own, else a new one)."""
    app = Starlette(
        routes=[*load_routes(), Mount("/static", StaticFiles(directory=STATIC), name="static")],
        middleware=[Middleware(SecurityMiddleware, token=config.web.token)],
        exception_handlers={BrokerUnavailable: _unavailable, FanoError: _refused, CsrfRefused: _csrf,
                            HTTPException: _http})
    app.state.config = config
    app.state.clock = clock or Clock.from_env()
    app.state.hub = hub
    app.state.tolerance = tolerance or Tolerance(logging.getLogger(PROGRAM))
    return app
