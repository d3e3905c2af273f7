"""Templates: Jinja2 with autoescape on, every page inside ``templates/base.html``. A field a record lacks
(``task.served`` before it is DONE) reads as empty (``ChainableUndefined``): the broker's records have many
optional fields.

:func:`render` is the one way a page answers with HTML. Besides the page's own context, templates get
``nav`` (every page, :data:`services.web.pages.NAV`), ``page`` (the active one), ``csrf_field()`` (the
hidden field every POST form needs), ``ok`` / ``error`` (the last action's outcome, from the query
string: :mod:`services.web.forms`) and the filters below: ``when`` (epoch -> local time), ``duration``,
``pretty`` (JSON), ``md`` (untrusted Markdown -> sanitised HTML: :func:`md`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.templating import Jinja2Templates

from shared import formatting as F  # the wording of times and durations fanoctl uses too

TEMPLATES = Path(__file__).parent / "templates"


def when(ts: Any, with_date: bool = True) -> str:
    """Epoch seconds as local time, as fanoctl shows them (shared/formatting.py ``local_time``); '' for none."""
    if not isinstance(ts, (int, float)) or isinstance(ts, bool) or ts <= 0:
        return ""
    return F.local_time(ts, with_date)


def duration(seconds: Any) -> str:
    """``95`` -> ``1m35s``, as fanoctl shows durations (shared/formatting.py ``duration``); '' for none."""
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        return ""
    return F.duration(seconds)


def pretty(value: Any) -> str:
    """Any record as indented JSON, as ``fanoctl --json`` prints it (shared/formatting.py ``to_json``)."""
    return F.to_json(value)


def md(text: Any) -> Markup:
    """Text an LLM or a user wrote, as safe HTML: Markdown and math through ``services/web/render.py``
    (which sanitises it), or, where that renderer is not installed, the escaped text in a ``<pre>``."""
    try:
        from services.web.render import markdown
    except ModuleNotFoundError as exc:
        if exc.name != "services.web.render":
            raise
        return Markup('<pre class="text">{}</pre>').format("" if text is None else str(text))
    return Markup(markdown(None if text is None else str(text)))   # noqa: S704 (sanitised by render.py)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.ChainableUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(when=when, duration=duration, pretty=pretty, md=md)
    return env


templates = Jinja2Templates(env=_environment())


def context(request: Request, page: str | None = None, **values: Any) -> dict[str, Any]:
    """The context every template gets (see the module docstring), plus ``values``."""
    from services.web.pages import NAV
    from services.web.security import csrf_field

    return {"request": request, "nav": NAV, "page": page, "csrf_field": lambda: csrf_field(request),
            "ok": request.query_params.get("ok"), "error": request.query_params.get("error"),
            "signed_in_by_token": bool(request.app.state.config.web.token), **values}


def render(request: Request, name: str, values: dict[str, Any] | None = None, page: str | None = None,
           status: int = 200) -> HTMLResponse:
    """``templates/<name>`` with :func:`context` and ``values``, as an HTML response."""
    response: HTMLResponse = templates.TemplateResponse(request, name, context(request, page, **(values or {})),
                                                        status_code=status)
    return response


def render_text(name: str, values: dict[str, Any]) -> str:
    """A template (a fragment without ``base.html``) as a string: the live overview's SSE updates."""
    return templates.env.get_template(name).render(**values)
