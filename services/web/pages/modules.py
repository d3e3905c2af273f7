"""``/modules`` — the module weights the scheduler adds to every task's priority (edit, reset), the queue
per module, and the advisor's proposals next to them.

``POST /modules/weights`` (one ``w.<module>`` field per module; an empty field leaves that module alone)
and ``POST /modules/weights/reset`` go through :func:`services.modules.operations.weights.module_weights`,
the call behind ``fanoctl modules weights --set|--reset``: the scheduler validates the change, stores it
in the broker and re-ranks the queue. Without a scheduler the page says so and shows the proposals only.
"""
from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.modules.operations import weights as W
from services.web.access import SCHEDULER_TIMEOUT, broker, config, scheduler
from services.web.forms import read_form, redirect_back
from services.web.templating import render
from shared.config import KNOWN_MODULES
from shared.errors import BrokerUnavailable, FanoError

PROPOSALS = 20


def modules(request: Request) -> Response:
    current = scheduler(request, "weights")
    top = scheduler(request, "top") if current is not None else None
    proposals = list(reversed(W.proposals(broker(request), PROPOSALS)))
    weights = (current or {}).get("weights") or {}
    names = sorted(set(KNOWN_MODULES) | set(weights))
    queue = (top or {}).get("modules") or {} if isinstance(top, dict) else {}
    return render(request, "modules.html", {"current": current, "names": names, "weights": weights,
                                            "configured": (current or {}).get("configured") or {},
                                            "queue": queue, "proposals": proposals}, page="modules")


def _change(cfg: Any, set_: dict[str, float] | None, reset: bool) -> dict:
    return W.module_weights(cfg.scheduler_endpoint, set_=set_, reset=reset, timeout=SCHEDULER_TIMEOUT)


async def set_weights(request: Request) -> Response:
    form = await read_form(request)
    wanted: dict[str, float] = {}
    for key, value in form.multi_items():
        if not key.startswith("w.") or not isinstance(value, str) or not value.strip():
            continue
        try:
            wanted[key[2:]] = float(value)
        except ValueError:
            return redirect_back("/modules", error=f"{key[2:]}: a weight is a number, not {value.strip()!r}")
    if not wanted:
        return redirect_back("/modules", error="no weight given")
    return await _apply(request, wanted, False)


async def reset_weights(request: Request) -> Response:
    await read_form(request)
    return await _apply(request, None, True)


async def _apply(request: Request, wanted: dict[str, float] | None, reset: bool) -> Response:
    try:
        res = await run_in_threadpool(_change, config(request), wanted, reset)
    except BrokerUnavailable:
        return redirect_back("/modules", error="the scheduler does not answer: is it running?")
    except FanoError as exc:
        return redirect_back("/modules", error=exc.message)
    shown = ", ".join(f"{m} {w:+g}" for m, w in sorted(res["weights"].items())) or "none"
    return redirect_back("/modules", ok=("weights reset to fano.toml's: " if reset else "weights now: ") + shown)


routes = [
    Route("/modules", modules),
    Route("/modules/weights", set_weights, methods=["POST"]),
    Route("/modules/weights/reset", reset_weights, methods=["POST"]),
]
