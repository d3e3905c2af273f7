"""The panel's pages: one module per page group, each exporting ``routes`` (see services/web/__init__.py).

:data:`NAV` is the navigation bar every page shows, in order: ``(page name, URL, label)``. A page module
named in :data:`PAGE_MODULES` but not (yet) present is skipped, so its link answers 404 until it lands.
"""
from __future__ import annotations

import importlib
import logging

from starlette.routing import BaseRoute

NAV: tuple[tuple[str, str, str], ...] = (
    ("overview", "/", "Overview"),
    ("queue", "/queue", "Queue"),
    ("seeds", "/seeds", "Seeds"),
    ("threads", "/threads", "Threads"),
    ("insights", "/insights", "Insights"),
    ("document", "/document", "Document"),
    ("research", "/research", "Research"),
    ("modules", "/modules", "Modules"),
)

# the modules whose ``routes`` the app mounts (login: the sign-in form when a token is configured)
PAGE_MODULES = ("login", "overview", "queue", "seeds", "threads", "insights", "document", "research", "modules")

log = logging.getLogger("web")


def load_routes() -> list[BaseRoute]:
    """Every present page module's ``routes``, in :data:`PAGE_MODULES` order."""
    routes: list[BaseRoute] = []
    for name in PAGE_MODULES:
        dotted = f"{__name__}.{name}"
        try:
            module = importlib.import_module(dotted)
        except ModuleNotFoundError as exc:
            if exc.name != dotted:
                raise   # the page exists but imports something missing: a bug, not a page to come
            log.info("page module %s is not present; its link answers 404", dotted)
            continue
        routes.extend(module.routes)
    return routes
