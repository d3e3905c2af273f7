"""The web control panel (program ``web``): a researcher's window onto the research and the orchestrator.

One process, stateless and crash-only like every other program: it reads through the broker client
(:mod:`shared.client`), writes through the same operations layer as ``fanoctl``
(:mod:`services.modules.operations`, the broker client's task commands), and follows the broker's event
stream to push live updates to browsers (server-sent events, :mod:`services.web.live`). It keeps no
database of its own. Starlette (ASGI) served by uvicorn, Jinja2 templates with autoescape; every CSS and
JS file comes from the panel itself (``static/``), so it works offline.

Layout:

- :mod:`.app` — :func:`~services.web.app.create_app`: the Starlette app (middleware, static files, the
  routes of every page module, the 503 page when the broker does not answer).
- :mod:`.pages` — one module per page group; :data:`services.web.pages.NAV` is the navigation bar (every
  page, in order) and :data:`services.web.pages.PAGE_MODULES` the modules whose ``routes`` are mounted.
- :mod:`.templating` — :func:`~services.web.templating.render` (a template inside ``base.html``).
- :mod:`.access` — :func:`~services.web.access.broker` (this thread's broker client),
  :func:`~services.web.access.call` (an async handler's blocking calls), :func:`~services.web.access.scheduler`
  (ask the scheduler), :func:`~services.web.access.clock`.
- :mod:`.security` — sign-in, CSRF, security headers (docs/web.md § Security).
- :mod:`.live` — the event follower and the hub that fans its updates out to browsers.
- :mod:`.service` — the supervised program (``python -m services web``).

How a page module is written (``services/web/pages/seeds.py`` is a complete example)::

    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from services.web.access import broker, call, clock
    from services.web.forms import field, read_form, redirect_back
    from services.web.templating import render

    def seeds(request: Request) -> Response:          # a plain (sync) function: run in a worker thread,
        rows = ...broker(request).kv_scan(...)...     # so blocking broker calls are fine here
        return render(request, "seeds.html", {"rows": rows}, page="seeds")

    async def add(request: Request) -> Response:      # a POST: read_form checks the CSRF token first
        form = await read_form(request)
        seed = await call(request, add_seed, field(form, "text"), ...)   # add_seed(client, text, ...) in a thread
        return redirect_back("/seeds", ok=f"seed {seed['id']} added")          # 303 + a one-line outcome

    routes = [Route("/seeds", seeds), Route("/seeds/add", add, methods=["POST"])]

Rules every page keeps:

- ``routes`` (a list of Starlette ``Route``) is the module's only export the app reads; add the module's
  name to :data:`services.web.pages.PAGE_MODULES` and its link to :data:`services.web.pages.NAV`.
- Templates live in ``services/web/templates/<page>.html`` and ``{% extends "base.html" %}``, filling
  ``{% block content %}``; ``render(..., page=NAME)`` marks NAME active in the navigation. Autoescape is
  on: never mark LLM- or user-written text ``|safe``; render it with the ``|md`` filter
  (:func:`services.web.templating.md`: Markdown and math through ``services/web/render.py``, which
  sanitises it). ``|when``, ``|duration`` and ``|pretty`` word times, durations and records as fanoctl does.
- Every form that POSTs includes ``{{ csrf_field() }}``; every POST handler starts with
  ``await read_form(request)`` (or :func:`services.web.security.check_csrf`), which refuses a missing or
  wrong token with 403.
- No inline ``<script>`` or ``style=`` attribute (the Content-Security-Policy forbids them): behaviour goes
  in ``static/panel.js`` (hooked by ``data-`` attributes), looks in ``static/panel.css``; bars are
  ``<meter>`` / ``<progress>`` elements.
- Writes go through :mod:`services.modules.operations` (or the broker client's task commands), the code
  ``fanoctl`` runs, so that the panel and the CLI validate alike; a ``FanoError`` refusal is shown to the
  user (``redirect_back(path, error=exc.message)``), a ``BrokerUnavailable`` becomes the 503 page by
  itself. An ``async`` handler must not block its event loop: it makes broker calls through
  :func:`services.web.access.call` (a worker thread with that thread's client; a client is never shared).
- Lists are paged (``?after=`` / ``?limit=``) and filterable by query parameters, never unbounded.
"""
