"""Who can work: the registry of connected backend workers, and the scheduler's view of the accounts.

Workers (:class:`WorkerRegistry`) are keyed by their ROUTER identity (one per socket; a restarted
worker comes back with a new one) and indexed by name (the program name, e.g. ``backend-gemini-sim``,
which is also the ``worker`` of its broker leases). A worker is in one of these states:

=========  ==========================================================================================
idle       said ``ready``; waiting for an assignment
assigned   was sent ``assign``; has not been seen running it yet
busy       runs a task (a ``task.running`` event or a heartbeat named it)
unready    reported ``done`` and has not said ``ready`` again; also a worker the scheduler met mid-task
           after a restart (it announced itself with a heartbeat naming its task)
=========  ==========================================================================================

Liveness is on the monotonic clock: a worker silent for ``LIVENESS * HEARTBEAT_INTERVAL`` is forgotten.

Placement (:func:`placement_class`, :func:`fits`, :func:`candidate_modes`) says which workers a task
fits, before admission. Accounts (:class:`Accounts`) hold what the broker said (paused, cool-downs per
mode or ``*``) and what the scheduler learned from declined leases: a block on ``(account, mode,
module)`` until the world time the broker gave as ``retry_at`` (quota windows can be split per module,
so a block is per module).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from services.scheduler.priority import DEEP, STANDARD, QTask
from services.scheduler.tasks import Running
from shared import quota
from shared.config import ADHOC
from shared.protocol import HEARTBEAT_INTERVAL, LIVENESS

MODES = (STANDARD, DEEP)
log = logging.getLogger("scheduler")
STATES = ("idle", "assigned", "busy", "unready")


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


@dataclass(eq=False, slots=True)
class Worker:
    ident: bytes
    name: str
    account: str | None = None
    backend: str = ""
    modes: tuple = ()
    state: str = "unready"
    task_id: int | None = None
    since: float = 0.0                  # monotonic time of the last state change
    last_seen: float = 0.0
    last_task: int | None = None
    last_outcome: str | None = None
    last_error: str | None = None

    def set_state(self, state: str, task_id: int | None, now: float) -> None:
        if state != self.state or task_id != self.task_id:
            self.since = now
        self.state, self.task_id = state, task_id


class WorkerRegistry:
    def __init__(self, interval: float = HEARTBEAT_INTERVAL, liveness: int = LIVENESS):
        self.by_ident: dict[bytes, Worker] = {}
        self.by_name: dict[str, bytes] = {}
        self.timeout = interval * liveness

    def __len__(self) -> int:
        return len(self.by_ident)

    def __iter__(self):
        return iter(list(self.by_ident.values()))

    def get(self, ident: bytes) -> Worker | None:
        return self.by_ident.get(ident)

    def named(self, name: str | None) -> Worker | None:
        ident = self.by_name.get(name) if name else None
        return self.by_ident.get(ident) if ident is not None else None

    def add(self, ident: bytes, name: str, now: float) -> tuple[Worker, Worker | None]:
        """Register (or find) the worker on ``ident``; returns it and the older incarnation with the same
        name on another identity, which the caller must forget (it restarted or recreated its socket)."""
        worker = self.by_ident.get(ident)
        old = None
        other = self.by_name.get(name)
        if other is not None and other != ident:
            old = self.by_ident.get(other)
        if worker is None:
            worker = Worker(ident=ident, name=name, since=now, last_seen=now)
            self.by_ident[ident] = worker
        elif worker.name != name and self.by_name.get(worker.name) == ident:
            del self.by_name[worker.name]
            worker.name = name
        self.by_name[name] = ident
        worker.last_seen = now
        return worker, old

    def forget(self, ident: bytes) -> Worker | None:
        worker = self.by_ident.pop(ident, None)
        if worker is not None and self.by_name.get(worker.name) == ident:
            del self.by_name[worker.name]
        return worker

    def expired(self, now: float) -> list[Worker]:
        return [w for w in self.by_ident.values() if now - w.last_seen > self.timeout]

    def next_expiry(self) -> float | None:
        return min((w.last_seen + self.timeout for w in self.by_ident.values()), default=None)

    def idle(self) -> list[Worker]:
        """Idle workers, longest idle first (fair between accounts)."""
        return sorted((w for w in self.by_ident.values() if w.state == "idle" and w.account),
                      key=lambda w: w.since)

    def for_account(self, account: str) -> list[Worker]:
        return [w for w in self.by_ident.values() if w.account == account]


@dataclass
class AccountInfo:
    backend: str | None = None
    modes: tuple = ()
    configured: bool = False


class Accounts:
    """Pauses, cool-downs (from the broker) and quota blocks (from declined leases)."""

    def __init__(self, configured=()):
        self.info: dict[str, AccountInfo] = {}
        for acct in configured:
            self.info[acct.name] = AccountInfo(acct.backend, tuple(acct.modes), True)
        self.reset()

    def reset(self) -> None:
        """Forget what the broker said (a rebuild reloads it); configured accounts stay known."""
        self.paused: dict[str, str] = {}
        self.cooldowns: dict[tuple[str, str], tuple[float, str]] = {}       # (account, mode|*) -> until, why
        self.blocks: dict[tuple[str, str, str], tuple[float, str]] = {}     # (account, mode, module) -> ...

    def note(self, account: str, backend: str | None = None, modes=()) -> None:
        info = self.info.setdefault(account, AccountInfo())
        if backend:
            info.backend = backend
        if modes:
            info.modes = tuple(modes)

    def load(self, shown: dict) -> None:
        """From the broker's ``quota_show`` result."""
        for acct in shown.get("accounts", []):
            name = acct.get("account")
            if not isinstance(name, str):
                continue
            self.note(name)
            if acct.get("paused"):
                self.paused[name] = str(acct.get("pause_reason") or "")
            for mode, cd in (acct.get("cooldowns") or {}).items():
                if isinstance(cd, dict) and isinstance(cd.get("until"), (int, float)):
                    self.cooldowns[(name, mode)] = (float(cd["until"]), str(cd.get("reason") or ""))

    def on_event(self, ev: dict) -> bool:
        """Apply an ``account.*``/``quota.*`` event; True if admission may have changed."""
        kind, account = ev.get("type"), ev.get("account")
        if not isinstance(account, str):
            return False
        self.note(account)
        if kind == "account.paused":
            self.paused[account] = str(ev.get("reason") or "")
        elif kind == "account.resumed":
            self.paused.pop(account, None)
        elif kind == "account.cooldown" and isinstance(ev.get("until"), (int, float)):
            self.cooldowns[(account, str(ev.get("mode") or "*"))] = (float(ev["until"]), str(ev.get("reason") or ""))
        elif kind in ("quota.reset", "quota.set"):
            # usage cleared or limits changed: what we learned from declines may no longer hold
            mode = ev.get("mode") or "*"
            modes = MODES if mode == "*" else (mode,)
            if kind == "quota.reset" and ev.get("usage", True):
                for m in (*modes, "*") if mode == "*" else modes:
                    self.cooldowns.pop((account, m), None)
            for key in [k for k in self.blocks if k[0] == account and k[1] in modes]:
                del self.blocks[key]
        else:
            return False
        return True

    def block(self, account: str, mode: str, module: str, until: float, why: str) -> None:
        key = (account, mode, module)
        if until > self.blocks.get(key, (0.0, ""))[0]:
            self.blocks[key] = (until, why)

    def why_not(self, account: str, mode: str, module: str, now: float) -> tuple[str, float, str] | None:
        """Why this account cannot take a ``mode`` task of ``module`` now: (what, until, reason) or None.

        ``what`` is ``"cooling"`` or ``"blocked"``; pauses are checked separately (:attr:`paused`).
        """
        for scope in (mode, "*"):
            cd = self.cooldowns.get((account, scope))
            if cd and cd[0] > now:
                return "cooling", cd[0], cd[1]
        blk = self.blocks.get((account, mode, module))
        if blk and blk[0] > now:
            return "blocked", blk[0], blk[1]
        return None

    def next_expiry(self, now: float) -> float | None:
        """The earliest future end of a cool-down or block (a wake-up: work may become admissible)."""
        times = [u for u, _ in self.cooldowns.values() if u > now] + [u for u, _ in self.blocks.values() if u > now]
        return min(times, default=None)

    def prune(self, now: float) -> set[str]:
        """Drop expired cool-downs and blocks; returns the accounts that had one (they may run more now)."""
        freed = set()
        for table in (self.cooldowns, self.blocks):
            for key in [k for k, (u, _) in table.items() if u <= now]:
                del table[key]
                freed.add(key[0])
        return freed


class Revocations:
    """Leases of workers dropped as silent, for the broker to revoke (``revoke``: the service sends
    :attr:`pending` and removes what the broker answered). A worker stays in :attr:`dropped` until it
    comes back (``ready``, or a heartbeat from a new socket), so that a lease it is granted meanwhile (its
    request was on its way) is revoked when the scheduler hears of it."""

    def __init__(self):
        self.pending: dict[int, tuple[str, int, str]] = {}   # task id -> (worker, epoch, why)
        self.dropped: dict[str, str] = {}                     # worker name -> why it was dropped

    def drop(self, name: str, why: str, running: dict) -> None:
        """Worker ``name`` went silent: revoke every lease it holds (``running``: task id -> Running)."""
        self.dropped[name] = why
        for tid, run in running.items():
            if run.worker == name:
                self.add(tid, run, why)

    def back(self, name: str) -> None:
        self.dropped.pop(name, None)

    def leased(self, tid: int, run: Running) -> None:
        """A lease the broker granted (``task.running``): revoke it if its worker was dropped (and has
        not come back: the caller checks)."""
        why = self.dropped.get(run.worker)
        if why is not None:
            self.add(tid, run, why)

    def add(self, tid: int, run: Running, why: str) -> None:
        if run.epoch is None or run.worker is None:
            return   # a record without its epoch: the lease's own deadline ends it
        log.warning("task %d: its worker %s was dropped (%s); revoking its lease (epoch %d)", tid, run.worker,
                    why, run.epoch)
        self.pending[tid] = (run.worker, run.epoch, why)
