"""Placement classes: which workers a task fits, and in which modes, before admission.

A task's class (:func:`placement_class`) is the first part of its queue bin key (the module is the
other): every task of a class fits exactly the same workers, so the queue compares bins, not tasks
(services/scheduler/queue.py). :func:`fits` checks a class against an account and its backend,
:func:`candidate_modes` gives the modes a task of it may run in, :func:`charge_modules` the quota shares
it may draw on, :func:`reconciles` whether it is bound to reconcile an unknown turn on that account.
"""
from __future__ import annotations

from services.scheduler.priority import DEEP, STANDARD, QTask
from shared import quota
from shared.config import ADHOC

MODES = (STANDARD, DEEP)

_CLASSES: dict[tuple, tuple] = {}   # interned: a handful of distinct classes, shared by every task


def placement_class(task: QTask, conv_account: dict) -> tuple:
    """The bin key's class part: ``(backends, account, bound, mode, fallback, opens, share, reconcile)`` —
    allowed accounts or backend kinds, ``requires.account``, the account the task is bound to (the one whose
    unknown turn it must reconcile, else the one holding its conversation — learned from ``task.running`` events, or
    from a ``conversation_account`` field on the task's events if the broker sends one), the requested
    mode, deep-to-standard fallback, and whether running it binds a conversation that no account holds
    yet (its first placement is decided by :mod:`services.scheduler.placement`) — or that its conversation
    is to be handed off from a blocked account (``task.handoff``), which is the same decision — the
    reserve it may also draw on (``share``: ``adhoc`` or None), and whether it is bound to reconcile an
    unknown turn (then its account takes it whatever its quota or cool-down).
    Two tasks of one class fit exactly the same workers. Classes are interned (one tuple per class)."""
    req = task.requires
    backends = req.get("backends")
    backends = tuple(sorted({b for b in backends if isinstance(b, str)})) if isinstance(backends, list) else ()
    account = req.get("account") if isinstance(req.get("account"), str) and req.get("account") else None
    conv = task.conversation
    # a turn proposed for hand-off (its conversation's account is blocked, see SchedulerCore._handoff_from)
    # is bound to nobody: any account it allows may continue the conversation
    bound = task.unknown_account or (None if task.handoff else
                                     (conv_account.get(conv) if conv else None) or task.conversation_account)
    mode = req.get("mode") if req.get("mode") in MODES else STANDARD
    fallback = mode == DEEP and bool(req.get("deep_fallback"))
    # work a person waits for may also draw on the operator's reserve (shared/quota.py charge_modules)
    share = ADHOC if req.get("share") == ADHOC else None
    # a turn to reconcile: its account's lease charges no quota unit and waits for no cool-down (the
    # broker's, services/broker/ops_lease.py), so neither do our blocks keep it from that account
    reconcile = bool(task.unknown_account)
    cls = (backends or None, account, bound, mode, fallback, bool(conv) and bound is None, share, reconcile)
    return _CLASSES.setdefault(cls, cls)


def charge_modules(cls: tuple, module: str) -> tuple:
    """The modules whose quota share a task of this class may draw on (its own first): the broker's rule,
    shared/quota.py, applied to the share the class records."""
    return quota.charge_modules(module, {"share": cls[6]} if len(cls) > 6 else None)


def fits(cls: tuple, account: str | None, backend: str | None) -> bool:
    """Placement constraints other than modes and admission (backends, account, binding)."""
    backends, req_account, bound = cls[0], cls[1], cls[2]
    if backends and account not in backends and backend not in backends:
        return False
    return (req_account is None or req_account == account) and (bound is None or bound == account)


def opens_conversation(cls: tuple) -> bool:
    """Running a task of this class binds a conversation to the account that runs it."""
    return len(cls) > 5 and cls[5]


def reconciles(cls: tuple, account: str | None) -> bool:
    """A task of this class on ``account`` is a reconcile (needs no quota room)."""
    return len(cls) > 7 and cls[7] and cls[2] == account


def candidate_modes(cls: tuple) -> tuple:
    return (DEEP, STANDARD) if cls[4] else (cls[3],)
