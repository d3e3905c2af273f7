"""Views several commands share, combining the broker's records with the scheduler's live answer:
the accounts table (``backends ls``, ``top``) and the accounts idle while work waits (``status``)."""
from __future__ import annotations

from cli.app import ask_scheduler, client, ctl, warn


def backends_view() -> dict:
    """One row per account the broker, the scheduler or the configuration knows (docs/cli.md has the
    shape); ``config_problem`` says why the configuration's accounts are missing from it (else null)."""
    shown = client().quota_show()
    broker_accounts = {a["account"]: a for a in shown["accounts"]}
    sched = ask_scheduler("backends")
    live = {}
    if isinstance(sched, dict):
        live = {b["account"]: b for b in sched.get("accounts", [])}
    configured, problem = _configured_accounts()
    names = set(broker_accounts) | set(live) | set(configured)
    rows = []
    for name in sorted(names):
        b = dict(live.get(name) or {"account": name, "state": "offline" if sched is not None else "unknown"})
        acct = broker_accounts.get(name) or {}
        b["paused"] = acct.get("paused", b.get("paused", False))
        b["pause_reason"] = acct.get("pause_reason", "")
        b["cooldowns"] = acct.get("cooldowns", {})
        rows.append(b)
    return {"now": shown["now"], "backends": rows, "scheduler": "up" if sched is not None else "not answering",
            "config_problem": problem}


def _configured_accounts() -> tuple[list[str], str | None]:
    """The configured account names, or none and why: a configuration that does not load leaves out the
    accounts neither the broker nor the scheduler mentions, and the operator is told so (stderr)."""
    from shared.config import ConfigError, load_config
    try:
        return [a.name for a in load_config(ctl().config_path).accounts], None
    except ConfigError as exc:
        warn(f"the configuration does not load ({exc}); only the accounts the broker and the scheduler "
             f"know are listed")
        return [], str(exc)


def idle_accounts() -> list | None:
    """The scheduler's ``idle`` rows (accounts idle while work waits, services/scheduler/idle.py), or None
    when it does not answer, is rebuilding, cannot be found (no config: :func:`cli.app.ask_scheduler`
    says so) or refuses the query (an older scheduler: said here)."""
    from shared.errors import FanoError
    try:
        answer = ask_scheduler("idle")
    except FanoError as exc:
        warn(f"the scheduler refused the idle query ({exc.name}: {exc.message})")
        return None
    if not isinstance(answer, dict) or answer.get("synced") is False:
        return None
    return answer.get("accounts")
