"""fanoctl and the optional advisor: what it proposed, next to the weights in force.

``modules weights`` (in :mod:`cli.modules`) prints the scheduler's weights and, below, the advisor's last
proposal (:func:`show_weights`); ``modules advice`` lists its proposals (:func:`show_advice`). Both read the ``advisor``
namespace in the broker (key layout in ``services/modules/advisor/service.py``); the user overrides a
proposal with ``modules weights --set``, and an auto-applying advisor leaves such an override alone.
"""
from __future__ import annotations

import click

from cli import render as R
from cli.app import Ctl, client, out, warn
from shared.errors import FanoError

NS = "advisor"


def _now() -> float:
    from shared.clock import Clock
    return Clock.from_env().world()


def _settings():
    """The advisor's settings from the config fanoctl uses, or None (said on stderr) if it cannot be read."""
    from services.modules.advisor.settings import load_settings
    from shared.config import ConfigError, load_config
    try:
        return load_settings(load_config(click.get_current_context().find_object(Ctl).config_path))
    except (ConfigError, OSError) as exc:
        warn(f"the advisor's settings cannot be read ({exc}): shown as unknown")
        return None


def proposals(limit: int | None = None) -> list[dict]:
    from services.modules.operations.weights import proposals as read
    return read(client(), limit)


def _store():
    from services.modules.store import Store
    return Store(client(), NS)


def summary() -> dict:
    """``{"enabled", "auto_apply", "state", "last"}`` (None values where unknown)."""
    s = _settings()
    res = {"enabled": None if s is None else s.enabled, "auto_apply": None if s is None else s.auto_apply,
           "state": None, "last": None}
    try:
        res["state"] = _store().get("state")[1]
        last = proposals(limit=1)
        res["last"] = last[0] if last else None
    except FanoError as exc:   # BrokerUnavailable too: the weights above are still worth showing
        warn(f"the advisor's state cannot be read ({exc.name}: {exc.message}): shown as unknown")
    return res


def _weights(w: dict | None) -> str:
    return ", ".join(f"{m} {v:+g}" for m, v in (w or {}).items()) or "-"


def proposal_line(p: dict, now: float) -> str:
    status = p.get("status", "?")
    age = R.duration(now - (p.get("at") or now))
    lines = [f"advice #{p.get('seq')} {age} ago: {_weights(p.get('weights'))} [{status}]"]
    for label, key in (("note", "note"), ("why", "reason"), ("reasoning", "reasoning")):
        if p.get(key):
            lines.append(f"  {label}: {' '.join(str(p[key]).split())[:200]}")
    return "\n".join(lines)


def weights_text(d: dict) -> str:
    configured = d.get("configured") or {}
    rows = [f"{m:12s} {w:g}" + ("" if configured.get(m, 0.0) == w else f"   (fano.toml: {configured.get(m, 0.0):g})")
            for m, w in sorted(d["weights"].items())] or ["no weights set"]
    a = d.get("advisor") or {}
    if a.get("enabled") is None:
        rows.append("advisor: unknown (cannot read its settings)")
    elif not a["enabled"]:
        rows.append("advisor: off ([modules.advisor] enabled = false)")
    else:
        rows.append(f"advisor: on, auto_apply {'on' if a.get('auto_apply') else 'off'}")
    if a.get("last"):
        rows.append(proposal_line(a["last"], d["now"]))
    return "\n".join(rows)


def show_weights(res: dict) -> None:
    """Print the scheduler's answer to ``weights`` with the advisor's last proposal."""
    out({**res, "advisor": summary(), "now": _now()}, weights_text)


def show_advice(limit: int) -> None:
    data = {"proposals": proposals(limit), "now": _now(), **{k: v for k, v in summary().items() if k != "last"}}

    def text(d):
        if not d["proposals"]:
            return "no advice yet" + ("" if d.get("enabled") else " (the advisor is off: [modules.advisor] enabled)")
        return "\n".join(proposal_line(p, d["now"]) for p in d["proposals"])
    out(data, text)
