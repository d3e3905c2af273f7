"""What each role may send the scheduler (docs/security.md § Roles): :func:`refusal`.

=========  ======================================================================================
operator   everything (fanoctl's queries, ``weights`` changes; a test or script acting as a worker)
worker:A   ``ready`` for account A only; ``heartbeat``/``done``/``disconnect`` as the worker of A that said
           ``ready`` on this connection; the read-only queries
module:M   the read-only queries (``why``, ``backends``, ``top``, ``weights`` without a change, ``stats``,
           ``idle``); the advisor (module:advisor) also changes ``weights``: applying its proposals is its job
scheduler  the read-only queries
=========  ======================================================================================

A refusal is the scheduler's answer to a bad message: a query gets an ``answer`` with the ``FORBIDDEN``
error, anything else ``disconnect`` with the reason; it is counted under ``FORBIDDEN`` in ``stats``.
"""
from __future__ import annotations

from typing import Any

from shared.errors import ErrorCode, FanoError
from shared.roles import NOBODY, OPERATOR, WORKER, Role

WORKER_MESSAGES = ("ready", "heartbeat", "done", "disconnect")
WEIGHTS_WRITER = Role("module", "advisor")   # proposes and applies module weights (services/modules/advisor)


def _forbidden(role: Role, why: str) -> FanoError:
    return FanoError(ErrorCode.FORBIDDEN, f"{role} may not {why}", {"role": str(role)})


def refusal(role: Role, msg: dict[str, Any], worker: Any = None) -> FanoError | None:
    """Why ``role`` may not send ``msg`` (a decoded worker-protocol message), or None. ``worker``: the worker
    registered on the sender's connection, if any (its ``account``)."""
    if role == NOBODY:
        return _forbidden(role, "send anything: its CURVE key is not in the authorized list (revoked)")
    if role.kind == OPERATOR:
        return None
    kind = msg["type"]
    if kind == "query":
        changes = msg.get("set") is not None or msg.get("reset") is True
        if msg.get("what") == "weights" and changes and role != WEIGHTS_WRITER:
            return _forbidden(role, "change the module weights: the operator does (or the advisor)")
        return None
    if kind in WORKER_MESSAGES:
        if role.kind != WORKER:
            return _forbidden(role, f"send {kind}: only a backend worker does")
        account = msg.get("account") if kind == "ready" else getattr(worker, "account", None)
        if account is not None and account != role.scope:
            return _forbidden(role, f"speak for account {account!r}: it serves {role.scope}")
    return None
