"""A human's change to the module weights, and the advisor's proposals next to them (``fanoctl modules
weights|advice``, the web panel's Modules page).

The weights are the scheduler's (``services/scheduler/queries.py`` ``weights``: it validates the change,
stores it in the broker — ``scheduler/weights``, so it survives restarts — and applies it to every queued
task's priority); this is the one way to ask for them. The advisor's proposals are records in the
``advisor`` namespace (``proposals/<seq>``, services/modules/advisor/service.py). Returns:

* :func:`module_weights` -> ``{"weights": {module: float}, "configured": {module: float} (fano.toml's),
  "durable": bool}``;
* :func:`proposals` -> ``[Proposal]`` oldest first (``{"seq", "at", "weights", "status", "reason",
  "reasoning", "note", ...}``).

Refusals: ``BAD_ARGUMENT`` (a weight that is not a finite number, ``set`` with ``reset``, a module the
configuration does not know: the scheduler's own check), ``UNAVAILABLE`` when the scheduler does not
answer (:class:`shared.scheduler_client.SchedulerUnavailable`, a :class:`shared.errors.BrokerUnavailable`).
"""
from __future__ import annotations

import math
from typing import Any

from services.modules.store import Store
from shared.errors import bad_argument
from shared.scheduler_client import query

ADVISOR = "advisor"


def module_weights(endpoint: str, *, set_: dict[str, float] | None = None, reset: bool = False,
                   timeout: float = 2.0, context: Any = None, keys: Any = None) -> dict:
    """The weights in force; with ``set_`` (module -> additive weight) or ``reset`` (back to fano.toml's
    ``[scheduler] module_weights``) changed first."""
    if set_ and reset:
        raise bad_argument("set and reset exclude each other")
    change: dict[str, Any] = {}
    if set_:
        clean = {}
        for module, value in set_.items():
            if not isinstance(module, str) or not module:
                raise bad_argument(f"a module name, not {module!r}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise bad_argument(f"{module}: a weight is a finite number, not {value!r}")
            clean[module] = float(value)
        change["set"] = clean
    elif reset:
        change["reset"] = True
    result: dict = query(endpoint, "weights", timeout=timeout, context=context, keys=keys, **change)
    return result


def proposals(client, limit: int | None = None) -> list[dict]:
    """The advisor's proposals, oldest first (the newest ``limit`` of them)."""
    rows = Store(client, ADVISOR).records("proposals/")
    return rows[-limit:] if limit else rows
