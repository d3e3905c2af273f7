"""Leases: lease, renew, complete, fail, refuse — and the sweeps of expired leases and due tasks.

Lease reply::

    {"task": {...task record...} | None, "epoch": int, "mode": "standard"|"deep", "ttl": float,
     "reason": str}            # when task is None: why nothing could be leased (for "queue why")

``retry_at`` (world time or null) accompanies an empty reply when quota or a cool-down blocks: the
earliest moment it may change, so a scheduler can sleep until then instead of polling.

Every write a worker makes about a leased task carries ``(id, epoch)``; a task that is no longer
RUNNING at that epoch answers ``STALE_EPOCH`` (a zombie worker can never complete a task twice).

Turn intents (docs/tasks.md § Unknown turns): before a worker sends a request it calls ``turn_begin(id, epoch)``, which
records ``task.turn = {state: "sending", epoch, account, mode, attempt, at}`` durably. The outcome is
the ``complete``/``fail`` that follows. If the lease ends without an outcome (expiry) or with class
``unknown``, the turn becomes ``task.unknown_turn = {account, epoch, attempt, mode, at, since, until}``:
the task may then be leased only by that account, whose worker reconciles with the provider (did it serve
the turn?) before anything is re-sent; ``turn_begin`` or ``complete`` clears it. The binding holds until
``until`` (``since`` + ``[broker] unknown_turn_hold``; null = forever): an account whose worker stays
frozen or gone must not keep the task from every other account; past it, another account may run it (a
new request there; the old turn stays unknown in the history). An account's own ``unknown_turn_hold``
(``[accounts.NAME]``, in ``tx.holds``) replaces the broker's for its turns.

Reconcile leases: the lease that account's worker takes while the task has its unknown turn asks the
provider about the earlier attempt and sends nothing new, so it reserves no quota unit and is admitted
whatever the account's windows and cool-downs (``lease.reconcile``). If the worker then sends again,
``turn_begin`` charges that request (admission included); with no room it puts the task back (no attempt
burned, the unknown turn cleared: the worker found it was not served) and answers ``turn: null``.
``turn_begin(refund_unknown=True)``: the worker's provider is sure the earlier attempt spent nothing
(never left, never arrived, or answered in another mode): that attempt's unit (``unknown_charges``, kept
when the turn became unknown) is refunded first — for the unknown turn of the leasing account only.

Revoke (``op_revoke``): the scheduler voids the lease of a worker it dropped as silent, instead of
waiting for the lease's deadline — the task runs elsewhere at once when no intent was recorded at that
epoch, or becomes an unknown turn (without backoff) when one was.

Conversations (docs/tasks.md § Conversations): a turn's lease binds its conversation to the leasing
account (the first) or must come from that account — unless the conversation is handed off to the leasing
account in this same transaction, because the account it lives on has been unable to run the turn for
``[scheduler] conversation_handoff`` (services/broker/ops_handoff.py has the rule). At most one turn is in
flight.

``fail`` error classes (docs/tasks.md § Failure classes) and what the broker does:

=========  ==========================================================================================
transient  retry with exponential backoff (``retry_after`` overrides it), PARKED after max_attempts;
           the quota unit is refunded when ``sent`` is false, and then (a refusal: nothing was spent)
           the attempt is not burned either, up to ``[broker] max_refusals`` per task (``refusals``)
unknown    like transient, but the quota unit always stays counted (the provider may have served it)
quota      the provider refused for quota: no attempt burned, unit refunded, the account cools down
           for that mode for ``retry_after`` seconds (1 h when unknown; ``refuse`` takes an absolute time);
           with ``scope="account"`` (an organisation's spend limit) every mode of the account cools
auth       no attempt burned, the account is paused for the operator, unit refunded unless sent
terminal   PARKED at once with the error; unit refunded when not sent
=========  ==========================================================================================
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.broker import ops_handoff as handoff
from services.broker import ops_quota as quota
from services.broker import schema as S
from services.broker import states as st
from services.broker.ops_tasks import MAX_KEY_BYTES, MODES, check_name, public
from services.broker.tx import Tx
from shared import quota as Q
from shared.errors import ErrorCode, FanoError, bad_argument

COOLDOWN_SCOPES = ("mode", "account")   # fail(quota, scope): the leased mode, or every mode ("*")
LEASE_SCAN_LIMIT = 2000   # ready tasks examined per lease before answering "nothing fits"
MAX_CONVERSATION_FIELD = 2000  # characters of a conversation's url / title kept
SWEEP_LIMIT = 1000        # expired leases / due tasks handled per batch (the rest next batch)


class _Fit:
    """Per-lease cache of admission answers, so a scan checks each (mode, module) quota once."""

    def __init__(self, tx: Tx, worker: dict[str, Any]):
        self.tx = tx
        self.worker = worker
        self.cache: dict[tuple[str, str], tuple[bool, str, float | None]] = {}   # (mode, module) -> admission
        self.retry_at: float | None = None  # earliest time a quota/cool-down refusal may lift
        self.handoffs: dict[int, tuple[str, str]] = {}  # task id -> (account it leaves, why): see ops_handoff
        self.blocked: dict[tuple[str, tuple[str, ...], str], str | None] = {}   # ops_handoff.blocked answers
        self.charge: dict[int, str] = {}   # task id -> the module whose share admitted it (shared/quota.py)
        self.unrunnable: list[tuple[dict[str, Any], str]] = []   # tasks that can never run: parked after the scan
        self.reconciles: set[int] = set()   # tasks this worker would lease to reconcile (no unit charged)

    def settle(self, reply: dict[str, Any]) -> dict[str, Any]:
        """Park what the scan found unrunnable (after it: the ready index must not change under its
        cursor), then answer ``reply``."""
        for task, why in self.unrunnable:
            task["error"] = {"class": "terminal", "message": why, "at": self.tx.now}
            self.tx.move(task, st.PARKED, why)
        return reply

    def admit(self, mode: str, module: str) -> tuple[bool, str, float | None]:
        key = (mode, module)
        if key not in self.cache:
            self.cache[key] = quota.admission(self.tx, self.worker["account"], mode, module)
        return self.cache[key]

    def mode_for(self, task: dict[str, Any]) -> tuple[str | None, str]:
        """The mode this worker would run the task in, or (None, reason it cannot)."""
        w, req = self.worker, task.get("requires") or {}
        conv = req.get("conversation")
        if conv and len(conv.encode()) > S.MAX_KEY:
            # stored before submit checked it (services/broker/ops_tasks.py): no conversation record can
            # exist for it, so it can never run; parked by the lease, which must not fail on it
            why = (f"conversation id of {len(conv.encode())} bytes is longer than the store's key limit "
                   f"({S.MAX_KEY} bytes); resubmit the task with an id of at most {MAX_KEY_BYTES} bytes")
            self.unrunnable.append((task, why))
            return None, "conversation id too long: parked"
        if w["modules"] is not None and task["module"] not in w["modules"]:
            return None, f"worker takes modules {w['modules']}"
        allowed = req.get("backends")
        if allowed and w["account"] not in allowed and w["backend"] not in allowed:
            return None, f"task allows backends {allowed}"
        if req.get("account") and req["account"] != w["account"]:
            return None, f"task is bound to account {req['account']}"
        if conv:
            rec = self.tx.conversation(conv) or {}
            if rec.get("inflight") not in (None, task["id"]):
                return None, f"conversation {conv} has turn task {rec['inflight']} in flight"
            if rec.get("account") and rec["account"] != w["account"]:
                moves, why = handoff.check(self.tx, task, rec, self.blocked)
                if not moves:
                    return None, f"conversation {conv} lives on account {rec['account']} ({why})"
                self.handoffs[task["id"]] = (rec["account"], why)
        unknown = task.get("unknown_turn")
        if unknown and unknown["account"] != w["account"] and not _hold_over(self.tx, unknown):
            return None, (f"attempt {unknown['attempt']} on account {unknown['account']} has an unknown outcome; "
                          "only that account can reconcile it")
        wanted = req.get("mode", "standard")
        candidates = [wanted] + (["standard"] if wanted == "deep" and req.get("deep_fallback") else [])
        reasons = []
        for mode in candidates:
            if mode not in w["modes"]:
                reasons.append(f"worker has no {mode} mode")
                continue
            if unknown and unknown["account"] == w["account"]:
                # a reconcile: it asks the provider about the earlier attempt and sends nothing new, so it
                # needs no quota unit (nor a cool-down's end); a re-send is charged at turn_begin
                self.reconciles.add(task["id"])
                return mode, ""
            for charge in Q.charge_modules(task["module"], req):
                ok, why, when = self.admit(mode, charge)
                if ok:
                    self.charge[task["id"]] = charge
                    return mode, ""
                reasons.append(why)
                if when is not None and (self.retry_at is None or when < self.retry_at):
                    self.retry_at = when
        return None, "; ".join(reasons)


def _checked_worker(tx: Tx, worker: str, account: str, backend: str, modes: Any, ttl: float,
                    modules: Any) -> dict[str, Any]:
    if not isinstance(worker, str) or not worker or len(worker) > 128:
        raise bad_argument("worker must be a non-empty name", field="worker")
    check_name(account, "account")
    if not isinstance(modes, (list, tuple)) or not modes or any(m not in MODES for m in modes):
        raise bad_argument(f"modes must be a non-empty list drawn from {MODES}", field="modes")
    if not 0 < ttl <= tx.config.max_lease_ttl:
        raise bad_argument(f"ttl must be in (0, {tx.config.max_lease_ttl:g}] seconds", field="ttl")
    if modules is not None and not all(isinstance(m, str) for m in modules):
        raise bad_argument("modules must be a list of module names", field="modules")
    return {"worker": worker, "account": account, "backend": backend or "", "modes": list(modes),
            "modules": list(modules) if modules is not None else None}


def op_lease(tx: Tx, worker: str, account: str, backend: str, modes: Any, ttl: float | None, task_id: int | None,
             modules: Any) -> dict[str, Any]:
    ttl = tx.config.lease_ttl if ttl is None else ttl
    w = _checked_worker(tx, worker, account, backend, modes, float(ttl), modules)
    if tx.activity is not None:
        tx.activity.seen(account, tx.now)
    acct = quota.get_account(tx, account)
    if acct.get("paused"):
        return {"task": None, "reason": f"account {account} is paused: {acct.get('pause_reason', '')}"}
    fit = _Fit(tx, w)
    return fit.settle(_lease_one(tx, fit, w, float(ttl), task_id))


def _lease_one(tx: Tx, fit: _Fit, w: dict[str, Any], ttl: float, task_id: int | None) -> dict[str, Any]:
    if task_id is not None:
        task = tx.task(task_id)
        if task["state"] != st.PENDING:
            return {"task": None, "reason": f"task {task_id} is {task['state']}"}
        if (task.get("not_before") or 0) > tx.now:
            return {"task": None, "reason": f"task {task_id} waits until {task['not_before']:.0f} (backoff)",
                    "retry_at": task["not_before"]}
        mode, why = fit.mode_for(task)
        if mode is None:
            return {"task": None, "reason": why, "retry_at": fit.retry_at}
        return _grant(tx, task, w, mode, ttl, fit.handoffs.get(task["id"]), fit.charge.get(task["id"]),
                      task["id"] in fit.reconciles)
    cur = tx.cursor("ready")
    reasons: dict[str, int] = {}
    for n, key in enumerate(cur.iternext(keys=True, values=False)):
        if n >= LEASE_SCAN_LIMIT:
            break
        task = tx.task(S.ready_key_id(key))
        mode, why = fit.mode_for(task)
        if mode is not None:
            return _grant(tx, task, w, mode, ttl, fit.handoffs.get(task["id"]), fit.charge.get(task["id"]),
                          task["id"] in fit.reconciles)
        reasons[why] = reasons.get(why, 0) + 1
    if not reasons:
        return {"task": None, "reason": "no runnable task", "retry_at": None}
    top = sorted(reasons.items(), key=lambda kv: -kv[1])[:3]
    return {"task": None, "reason": "; ".join(f"{n} task(s): {why}" for why, n in top), "retry_at": fit.retry_at}


def _grant(tx: Tx, task: dict[str, Any], w: dict[str, Any], mode: str, ttl: float,
           moved: tuple[str, str] | None = None, charge: str | None = None,
           reconcile: bool = False) -> dict[str, Any]:
    epoch = task["epoch"] + 1
    task["epoch"] = epoch
    task["attempts"] += 1
    task["lease"] = {"worker": w["worker"], "account": w["account"], "backend": w["backend"], "mode": mode,
                     "deadline": tx.mono + ttl, "granted_at": tx.now, "charges": []}
    # PENDING -> RUNNING: attempt +1, quota reserved (in the share that admitted it), conversation bound —
    # all in this transaction; a reconcile lease reserves nothing until its worker decides to send again
    # (op_turn_begin)
    if reconcile:
        task["lease"]["reconcile"] = True
    else:
        _charge(tx, task, charge)
    conv = (task.get("requires") or {}).get("conversation")
    why, extra = f"leased to {w['worker']}", {}
    if conv:
        rec = tx.conversation(conv) or {"account": None, "inflight": None, "turns": 0}
        if moved is not None and rec.get("account") == moved[0]:
            # the conversation moves with this turn, in this transaction (services/broker/ops_handoff.py)
            entry = handoff.apply(tx, rec, conv, task, w["account"], moved[1])
            why += f"; conversation {conv} handed off from {moved[0]}: {moved[1]}"
            extra["handoff"] = {"from": entry["from"], "why": entry["why"]}
        rec["account"] = rec.get("account") or w["account"]
        rec["inflight"] = task["id"]
        tx.put_conversation(conv, rec)
    tx.move(task, st.RUNNING, why, worker=w["worker"], account=w["account"], mode=mode, **extra)
    return {"task": public(task, tx.mono, history=False), "epoch": epoch, "mode": mode, "ttl": ttl, "reason": ""}


def _charge(tx: Tx, task: dict[str, Any], charge: str | None = None) -> None:
    """Reserve the unit of the task's lease in every window of its (account, mode), in the share of
    module ``charge`` (default: the task's own; shared/quota.py ``charge_modules``)."""
    lease = task["lease"]
    charges = quota.reserve(tx, lease["account"], lease["mode"], charge or task["module"], task["id"], task["epoch"])
    lease["charges"] = charges
    task["charged"] = task.get("charged", 0) + (1 if charges else 0)
    if charges:
        # where each still-counted unit lives, so the ledger can be audited exactly (ops/invariants.py)
        task.setdefault("live_charges", []).append([task["epoch"], lease["account"], lease["mode"]])


def _leased(tx: Tx, task_id: int, epoch: int) -> dict[str, Any]:
    task = tx.task(task_id)
    if tx.activity is not None and task.get("lease"):
        tx.activity.seen(task["lease"]["account"], tx.now)   # renewals keep a busy account "online"
    if task["state"] != st.RUNNING or task["epoch"] != epoch:
        raise FanoError(ErrorCode.STALE_EPOCH, f"lease {task_id}@{epoch} is void: task is {task['state']} "
                        f"at epoch {task['epoch']}", {"id": task_id, "state": task["state"], "epoch": task["epoch"]})
    return task


def _end_conversation_turn(tx: Tx, task: dict[str, Any], done: bool, result: Any = None) -> None:
    conv = (task.get("requires") or {}).get("conversation")
    if not conv:
        return
    rec = tx.conversation(conv)
    if rec and rec.get("inflight") == task["id"]:
        rec["inflight"] = None
        rec["turns"] = rec.get("turns", 0) + (1 if done else 0)
        # a turn left unknown keeps the conversation on its account until reconciled or its hold lapses
        # (services/broker/ops_handoff.py): noted here, since other turns of it are other tasks
        unknown = task.get("unknown_turn")
        if unknown:
            rec["unknown"] = {"task": task["id"], "account": unknown["account"], "until": unknown.get("until")}
        elif (rec.get("unknown") or {}).get("task") == task["id"]:
            del rec["unknown"]
        # a web conversation's page (docs/tasks.md § Conversations): kept with the conversation for the operator; the
        # account's worker also records it the moment it exists, to reopen and reconcile a turn
        meta = result.get("meta") if isinstance(result, dict) else None
        for name in ("url", "title"):
            value = meta.get(name) if isinstance(meta, dict) else None
            if isinstance(value, str) and value:
                rec[name] = value[:MAX_CONVERSATION_FIELD]
        tx.put_conversation(conv, rec)


def _refund(tx: Tx, task: dict[str, Any]) -> None:
    charges = (task.get("lease") or {}).get("charges") or []
    if charges:
        quota.refund(tx, charges)
        task["charged"] = task.get("charged", 0) - 1
        task["live_charges"] = [c for c in task.get("live_charges", []) if c[0] != task["epoch"]]
        task["lease"]["charges"] = []


def _backoff(tx: Tx, attempts: int) -> float:
    delay: float = min(tx.config.backoff_max, tx.config.backoff_base * (2 ** max(0, attempts - 1)))
    return delay


def _retry_or_park(tx: Tx, task: dict[str, Any], why: str, retry_after: float | None = None) -> None:
    _end_conversation_turn(tx, task, done=False)
    if task["attempts"] >= task["max_attempts"]:
        tx.move(task, st.PARKED, f"{why}; attempts exhausted ({task['attempts']}/{task['max_attempts']})")
        return
    delay = retry_after if retry_after is not None else _backoff(tx, task["attempts"])
    task["not_before"] = tx.now + max(0.0, delay)
    tx.move(task, st.PAUSED if task.get("pause_requested") else st.PENDING, why)


def _back_to_queue(tx: Tx, task: dict[str, Any], why: str) -> None:
    """RUNNING -> PENDING without burning the attempt (quota refusal, auth)."""
    task["attempts"] = max(0, task["attempts"] - 1)
    _end_conversation_turn(tx, task, done=False)
    tx.move(task, st.PAUSED if task.get("pause_requested") else st.PENDING, why)


def _settle_turn(tx: Tx, task: dict[str, Any], unknown: bool) -> None:
    """The lease ends: a turn that was being sent either has a known outcome or must be reconciled."""
    turn = task.get("turn")
    # a lease that never reached turn_begin sent nothing: there is nothing to reconcile
    if unknown and turn and turn.get("state") == "sending" and turn.get("epoch") == task["epoch"]:
        hold = tx.holds.get(turn["account"], tx.config.unknown_turn_hold)
        task["unknown_turn"] = {k: turn[k] for k in ("account", "epoch", "attempt", "mode", "at")}
        task["unknown_turn"].update(since=tx.now, until=tx.now + hold if hold > 0 else None)
        # its unit stays counted (the provider may have served it) until the account's worker says it
        # spent nothing (op_turn_begin refund_unknown); not shown to clients (ops_tasks.public)
        charges = (task.get("lease") or {}).get("charges") or []
        if charges:
            task["unknown_charges"] = [task["epoch"], charges]
        else:
            task.pop("unknown_charges", None)
    task["turn"] = None


def _has_intent(task: dict[str, Any]) -> bool:
    """Did this lease record the intent to send (``turn_begin`` at its epoch)? The intent is durable before
    a request leaves the worker, so a lease without one sent nothing."""
    turn = task.get("turn")
    return bool(turn and turn.get("epoch") == task["epoch"])


def _hold_over(tx: Tx, unknown: dict[str, Any]) -> bool:
    """Has the account holding an unknown turn had its time to reconcile it? (see the module doc)"""
    until = unknown.get("until")
    return until is not None and tx.now >= until


def _refund_unknown(tx: Tx, task: dict[str, Any], account: str) -> None:
    """The unknown turn's unit comes back: its account's worker reconciled it and knows it spent nothing
    (no send recorded, the site shows no such turn, or answered it in another mode). Only that account's
    word counts."""
    unknown, spent = task.get("unknown_turn"), task.get("unknown_charges")
    if not unknown or not spent or unknown.get("account") != account or spent[0] != unknown.get("epoch"):
        return
    quota.refund(tx, spent[1])
    task["charged"] = task.get("charged", 0) - 1
    task["live_charges"] = [c for c in task.get("live_charges", []) if c[0] != spent[0]]


def op_turn_begin(tx: Tx, id: int, epoch: int, refund_unknown: bool = False) -> dict[str, Any]:
    """``refund_unknown``: the previous attempt, whose outcome was unknown, spent nothing (its worker
    reconciled it and is sure: it never reached the provider, or was answered in another mode): that
    attempt's unit is refunded before this send is charged."""
    task = _leased(tx, id, epoch)
    lease = task["lease"]
    if refund_unknown:
        _refund_unknown(tx, task, lease["account"])
    task.pop("unknown_charges", None)
    if lease.pop("reconcile", False):
        # the reconcile found nothing to recover and the worker sends again: that request is charged now,
        # like any lease's (admission included); without room the task waits, no attempt burned, and runs
        # wherever there is room first (the earlier turn is reconciled: it may run anywhere)
        for charge in Q.charge_modules(task["module"], task.get("requires") or {}):
            ok, why, when = quota.admission(tx, lease["account"], lease["mode"], charge)
            if ok:
                _charge(tx, task, charge)
                break
        else:
            task["unknown_turn"] = None
            _back_to_queue(tx, task, f"reconciled; no quota to send again: {why}")
            return {"id": id, "epoch": epoch, "turn": None, "state": task["state"], "reason": why, "retry_at": when}
    # the intent is durable before the request leaves the worker; the previous unknown turn (if any)
    # has been reconciled by this worker, or it would not be sending
    task["turn"] = {"state": "sending", "epoch": epoch, "account": lease["account"], "mode": lease["mode"],
                    "attempt": task["attempts"], "at": tx.now}
    task["unknown_turn"] = None
    tx.save(task)
    return {"id": id, "epoch": epoch, "turn": task["turn"]}


def op_renew(tx: Tx, id: int, epoch: int, ttl: float | None) -> dict[str, Any]:
    ttl = tx.config.lease_ttl if ttl is None else ttl
    if not 0 < ttl <= tx.config.max_lease_ttl:
        raise bad_argument(f"ttl must be in (0, {tx.config.max_lease_ttl:g}]", field="ttl")
    task = _leased(tx, id, epoch)
    tx.reindex(task, deadline=tx.mono + ttl)
    return {"id": id, "epoch": epoch, "deadline_in": ttl, "pause_requested": bool(task.get("pause_requested"))}


def op_complete(tx: Tx, id: int, epoch: int, result: Any, reconciled: bool = False,
                mode: str | None = None) -> dict[str, Any]:
    """``mode``: with ``reconciled``, the mode the recovered answer was served in as the provider confirmed
    it (the earlier attempt's, not necessarily this lease's); served.mode states it. Ignored otherwise: a
    turn sent under this lease was served in the lease's mode (a provider that cannot confirm that fails
    the turn instead, e.g. a web page's silent downgrade)."""
    if mode is not None and mode not in MODES:
        raise bad_argument(f"mode must be one of {', '.join(MODES)}", field="mode")
    task = _leased(tx, id, epoch)
    recovered = reconciled and not _has_intent(task)
    if recovered:
        # an earlier attempt's answer, recovered from the provider: its unit is counted under that
        # attempt's lease, and this lease sent nothing (no intent at this epoch): give its unit back
        _refund(tx, task)
    task["result"] = result
    task["error"] = None
    task["turn"] = task["unknown_turn"] = None  # the outcome is known
    task.pop("unknown_charges", None)
    lease = task["lease"]
    # who answered, in which mode (the lease itself is cleared by the move; a module may need to know)
    served_mode = mode if recovered and mode is not None else lease["mode"]
    task["served"] = {"account": lease["account"], "mode": served_mode, "worker": lease["worker"]}
    _end_conversation_turn(tx, task, done=True, result=result)
    tx.move(task, st.DONE, f"completed by {task['lease']['worker']}")
    return {"id": id, "epoch": epoch, "state": st.DONE}


def op_fail(tx: Tx, id: int, epoch: int, error_class: str, message: str, sent: bool, retry_after: float | None,
            scope: str = "mode") -> dict[str, Any]:
    if error_class not in st.ERROR_CLASSES:
        raise bad_argument(f"error_class must be one of {', '.join(st.ERROR_CLASSES)}", field="error_class")
    if scope not in COOLDOWN_SCOPES:
        raise bad_argument(f"scope must be one of {', '.join(COOLDOWN_SCOPES)}", field="scope")
    if retry_after is not None and not abs(retry_after) < 1e15:  # inf/nan/huge would overflow the index key
        raise bad_argument("retry_after must be a finite number of seconds", field="retry_after")
    task = _leased(tx, id, epoch)
    lease = task["lease"]
    task["error"] = {"class": error_class, "message": message[:2000], "at": tx.now,
                     "worker": lease["worker"], "account": lease["account"], "sent": sent}
    _settle_turn(tx, task, unknown=error_class == "unknown")
    if error_class == "quota":
        until = None if retry_after is None else tx.now + retry_after
        return _quota_refusal(tx, task, until, message, scope)
    if error_class != "unknown" and not sent:
        _refund(tx, task)
    why = f"{error_class} error on {lease['account']}: {message[:200]}"
    if error_class == "terminal":
        _end_conversation_turn(tx, task, done=False)
        tx.move(task, st.PARKED, why)
    elif error_class == "auth":
        quota.pause_account(tx, lease["account"], f"auth failure: {message[:200]}")
        _back_to_queue(tx, task, why)
    elif error_class == "transient" and not sent and task.get("refusals", 0) < tx.config.max_refusals:
        # the provider refused before doing anything (overloaded, a 5xx status, the server down): nothing
        # was spent, so the attempt is given back -- a week of overload spells must not park good work --
        # and refusals back off on their own count (then, past max_refusals, attempts burn as usual)
        task["refusals"] = task.get("refusals", 0) + 1
        task["attempts"] = max(0, task["attempts"] - 1)
        delay = retry_after if retry_after is not None else _backoff(tx, task["refusals"])
        _retry_or_park(tx, task, f"{why} (refusal {task['refusals']}/{tx.config.max_refusals})", delay)
    else:
        _retry_or_park(tx, task, why, retry_after)
    return {"id": id, "epoch": epoch, "state": task["state"], "not_before": task["not_before"]}


def _quota_refusal(tx: Tx, task: dict[str, Any], until: float | None, message: str,
                   scope: str = "mode") -> dict[str, Any]:
    lease = task["lease"]
    _refund(tx, task)
    if until is None:  # the provider did not say until when: be conservative
        until = tx.now + quota.DEFAULT_COOLDOWN
    if until > tx.now:  # a reset time already past (e.g. "Retry-After: 0", or a delayed report) cools nothing
        # scope "account": a limit of the whole account (an organisation's spend limit), every mode ("*")
        quota.set_cooldown(tx, lease["account"], None if scope == "account" else lease["mode"], until,
                           message or "provider refused for quota")
    where = "every mode" if scope == "account" else lease["mode"]
    _back_to_queue(tx, task, f"quota refusal on {lease['account']} {where} until {until:.0f}")
    return {"id": task["id"], "epoch": task["epoch"], "state": task["state"], "cooldown_until": until}


def op_refuse(tx: Tx, id: int, epoch: int, until: float | None, message: str) -> dict[str, Any]:
    if until is not None:
        quota.check_until(until)
    task = _leased(tx, id, epoch)
    task["error"] = {"class": "quota", "message": message[:2000], "at": tx.now,
                     "worker": task["lease"]["worker"], "account": task["lease"]["account"], "sent": True}
    _settle_turn(tx, task, unknown=False)
    return _quota_refusal(tx, task, until, message)


def op_revoke(tx: Tx, id: int, epoch: int, worker: str, reason: str = "") -> dict[str, Any]:
    """The scheduler dropped ``worker`` (silent past its liveness): end its lease of task ``id`` now
    instead of at the lease's deadline. Only the scheduler calls it (services/broker/core.py).

    The lease is void at once — the task is no longer RUNNING at ``epoch``, so a late ``turn_begin``,
    ``complete`` or ``fail`` from that worker is ``STALE_EPOCH`` (fencing), and the next lease takes a
    new epoch. What follows depends on the send marker (``task.turn``, recorded by ``turn_begin`` before a
    request leaves the worker):

    * no intent at this epoch: nothing was sent under this lease, so the quota unit is refunded and the
      task is PENDING at once for any account (the attempt stays counted, as for a crash);
    * an intent: the outcome is unknown, exactly as for an expired lease (``unknown_turn``: only that
      account's worker may lease it, to reconcile, for its hold; the unit stays counted), without the
      backoff — the account's worker may be back any moment.

    Reply: ``{"id", "epoch", "revoked": bool, "state", "sent": bool|null}``; ``revoked`` is false (and
    nothing changes) when the task is not RUNNING at ``epoch`` under ``worker``: the lease already ended.
    """
    if not isinstance(worker, str) or not worker:
        raise bad_argument("worker must be a non-empty name", field="worker")
    task = tx.task(id)
    lease = task.get("lease") or {}
    if task["state"] != st.RUNNING or task["epoch"] != epoch or lease.get("worker") != worker:
        return {"id": id, "epoch": task["epoch"], "revoked": False, "state": task["state"], "sent": None}
    turn = task.get("turn")
    sent = bool(turn and turn.get("state") == "sending" and turn.get("epoch") == epoch)
    why = f"lease of {worker} revoked: {reason[:200] or 'its worker went silent'}"
    task["error"] = {"class": "revoked", "message": why, "at": tx.now, "worker": worker,
                     "account": lease.get("account"), "sent": sent}
    if not sent:
        _refund(tx, task)
    _settle_turn(tx, task, unknown=sent)
    _retry_or_park(tx, task, why + ("; its turn's outcome is unknown" if sent else "; nothing was sent"), 0.0)
    return {"id": id, "epoch": epoch, "revoked": True, "state": task["state"], "sent": sent}


# --- sweeps (run by the broker before each batch, and at start) -----------------------------------------

def expire_leases(tx: Tx, everything: bool = False) -> int:
    """RUNNING tasks whose lease deadline passed go back to PENDING (backoff) or PARKED.

    The quota unit stays counted: the worker may have sent the request before it died.
    """
    cur = tx.cursor("leases")
    limit_us = S.us(tx.mono)
    due: list[Any] = []
    for key, raw_epoch in cur:
        deadline, tid = S.time_id_split(bytes(key))
        if (deadline > limit_us and not everything) or len(due) >= SWEEP_LIMIT:
            break
        due.append((tid, S.from_u64(bytes(raw_epoch))))
    for tid, epoch in due:
        task = tx.task(tid)
        if task["state"] != st.RUNNING or task["epoch"] != epoch:
            continue
        lease = task["lease"]
        task["error"] = {"class": "expired", "message": f"lease of {lease['worker']} expired", "at": tx.now,
                         "worker": lease["worker"], "account": lease["account"], "sent": None}
        _settle_turn(tx, task, unknown=True)
        _retry_or_park(tx, task, f"lease of {lease['worker']} expired")
    return len(due)


def promote_due(tx: Tx) -> int:
    """Delayed PENDING tasks whose not_before has come move to the ready index (and say so)."""
    cur = tx.cursor("delayed")
    limit_ms = S.ms(tx.now)
    due: list[Any] = []
    for key in cur.iternext(keys=True, values=False):
        nb, tid = S.time_id_split(bytes(key))
        if nb > limit_ms or len(due) >= SWEEP_LIMIT:
            break
        due.append(tid)
    for tid in due:
        task = tx.task(tid)
        tx.reindex(task)  # index() files it under ready now that not_before <= now
        tx.emit("task.due", id=tid, module=task["module"], kind=task["kind"])
    return len(due)


def next_wakeup(tx: Tx) -> tuple[float | None, float | None]:
    """(first lease deadline on the monotonic clock, first not_before in world time) or None."""
    lease = delayed = None
    cur = tx.cursor("leases")
    if cur.first():
        lease = S.time_id_split(bytes(cur.key()))[0] / 1_000_000
    cur = tx.cursor("delayed")
    if cur.first():
        delayed = S.time_id_split(bytes(cur.key()))[0] / 1000
    return lease, delayed


# command -> handler(tx, **args) (services/broker/core.py dispatches)
HANDLERS: dict[str, Callable[..., Any]] = {
    "lease": op_lease, "renew": op_renew, "complete": op_complete, "fail": op_fail, "refuse": op_refuse,
    "turn_begin": op_turn_begin, "revoke": op_revoke,
}
