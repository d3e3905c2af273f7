"""Views several commands share, combining the broker's records with the scheduler's live answer:
the accounts table (``backends ls``, ``top``) and the accounts idle while work waits (``status``)."""
from __future__ import annotations

from cli.app import ask_scheduler, client, ctl, warn


def backends_view() -> dict:
    """One row per account the broker, the scheduler or the configuration knows (docs/cli.md has the
    shape); ``config_problem`` says why the configuration's accounts are missing from it (else null)."""
    from services.modules.operations.summary import accounts_view
    configured, problem = _configured_accounts()
    return accounts_view(client().quota_show(), ask_scheduler("backends"), configured, problem)


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
