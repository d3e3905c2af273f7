"""Answers to the operator's questions on the scheduler socket (``query`` -> ``answer``).

Request: ``query {cid, what, ...fields}``. Reply: ``answer {cid, ok: true, result}`` or
``answer {cid, ok: false, error: {code, name, message}}`` (codes from :mod:`shared.errors`). Times are
world time (epoch seconds); ``line`` texts are for humans, the other fields are stable.

``why`` {task_id} -> ::

    {"task_id": int, "where": "ready"|"delayed"|"held"|"assigned"|"untracked",
     "state": "PENDING"|"RUNNING"|"DONE"|"PARKED"|"PAUSED"|"CANCELLED"|null,   # null: no such task
     "line": "waiting: a1 busy with task 7; gemini-sim deep quota for explorer blocked until
              2025-01-01 00:00:00 UTC: 20/20 used in window 20/day@00:00 UTC; 3 higher-priority task(s)
              ahead",                                                                 # one line
              # (starts with "left for <account>, expected to finish it sooner (until ...)" when an idle
              # slower account leaves it, see services/scheduler/placement.py; with what binds it to one
              # account: "its last attempt has an unknown outcome on A: only A may run it ...", "conversation
              # C lives on A (paused ...); handed off to another account at ... unless A can run it by then",
              # "conversation C is being handed off from A (...)"; a delayed task says whether it is in a
              # retry backoff or sitting out a declined lease)
     "priority": float|null, "terms": {"base", "seed", "comment", "aging", "weight", "backlog", "total"}|null,
     "ahead": int|null,           # ready tasks of higher priority that an account able to run this one could take
     "ahead_approx": bool,        # true: ``ahead`` is estimated from a random sample (a large queue), rounded to
                                  # two significant digits; the line then says "≈ 41,000 higher-priority tasks ahead"
     "accounts": [{"account", "status", "detail", "until",
                   "quota": {"used", "limit", "window", "resets_at"}|null}]}
         # status: idle | busy | offline | paused | cooling | blocked | no_mode   (only accounts the task allows)
         # quota: for a "blocked" account, the figures of the window that refused the lease (the broker's
         # reason for declining it), e.g. "deep quota for explorer blocked until ...: 20/20 used in window
         # 20/day@00:00 UTC"; resets_at = until

Cost: ``why`` runs on the scheduler's single loop, so it is bounded whatever the queue length. The
candidates for ``ahead`` are the ready tasks of the bins a competing account serves (O(bins) to find);
up to AHEAD_EXACT of them are compared one by one, beyond that AHEAD_SAMPLE of them drawn uniformly
(:meth:`services.scheduler.queue.TaskQueue.sample`) estimate the share of higher-priority ones.

``backends`` -> ``{"now": float, "accounts": [row, ...]}`` with one row per known account::

    {"account", "backend", "modes": [..], "configured": bool,
     "state": "idle"|"busy"|"offline", "phase": "idle"|"assigned"|"busy"|"unready"|null,
     "worker": str|null, "workers": [names], "task_id": int|null, "since": seconds|null,
     "last_task": int|null, "last_outcome": str|null, "last_error": str|null,
     "paused": bool, "pause_reason": str,
     "cooling_until": {mode|"*": float}, "blocked_until": {mode: float},
     "blocked": [{"mode", "module", "until", "reason"}]}

``top`` -> ::

    {"now": float, "workers": int, "accounts": [backends rows],
     "queue": {"ready": n, "delayed": n, "held": n, "assigned": n, "running": n},
     "modules": {module: {"waiting", "ready", "delayed", "held", "assigned", "weight", "backlog_boost"}},
     "recent": [{"id", "module", "kind", "account", "at"}]}      # the last 20 task.done, newest first

  The module counts come from what the scheduler keeps (bin sizes, delayed per module, the assignments, the
  tracked tasks per module; held = the rest), never from a walk over the tasks: ``top`` is asked every
  second and must not grow with the queue.

``weights`` {set: {module: number}}? {reset: true}? -> ``{"weights": {module: float}, "configured":
{module: float}, "durable": bool}``: the module weights in force, changed by ``set`` (all-or-nothing; a
module the tree does not have, ``shared.config.KNOWN_MODULES``, is BAD_ARGUMENT naming the known ones) or
put back to ``[scheduler] module_weights`` of the configuration by ``reset``. A change is written to the
broker (kv ``scheduler``/``weights``) before it is applied, so it survives a restart of the scheduler
(the rebuild reads it back over the configured weights); with the broker down the query is refused
(``UNAVAILABLE``) and nothing changes. ``durable`` is false only for a scheduler core without a store (unit tests).

``stats`` -> the counters the scheduler logs every minute::

    {"ready", "delayed", "held", "assigned", "running", "workers", "idle", "assigned_total": int,
     "left_total": int,     # tasks an idle worker left for a faster account (services/scheduler/placement.py)
     "service_times": {"<account>/<mode>": {"mean_s": float, "samples": int}},   # learned, world seconds
     "errors": {name: n}, "synced": bool, "last_seq": int, "rebuilds": int, "dropped_sends": int}

``idle`` -> the accounts idle while work waits, why, and since when (world time): the shape and the
rules are in :mod:`services.scheduler.idle`. Bounded like ``top`` (bins, counters, idle workers).
"""
from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from services.scheduler import classes as C
from services.scheduler.handoff import due_time
from services.scheduler.priority import PriorityModel, clean_weights
from services.scheduler.view import SchedulerView
from shared.config import KNOWN_MODULES, unknown_name
from shared.errors import ErrorCode, FanoError, bad_argument

AHEAD_EXACT = 5000      # up to this many candidates, ``ahead`` is an exact count
AHEAD_SAMPLE = 1000     # beyond, an estimate from this many drawn at random (standard error <= 1.6 % of them)
_RNG = random.Random()


def fmt_time(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def about(n: int) -> int:
    """An estimate rounded to two significant digits (41,237 -> 41,000): no false precision."""
    digits = len(str(abs(n)))
    return n if digits <= 2 else int(round(n, 2 - digits))


def answer(view: SchedulerView, msg: dict) -> dict | None:
    what = msg["what"]
    if what == "why":
        tid = msg.get("task_id")
        if not isinstance(tid, int) or isinstance(tid, bool):
            raise bad_argument("why needs an integer task_id", field="task_id")
        return why(view, tid)
    if what == "backends":
        return {"now": view.clock.world(), "accounts": backends(view)}
    if what == "top":
        return top(view)
    raise FanoError(ErrorCode.UNKNOWN_COMMAND,
                    f"unknown query {str(what)[:40]!r}: ask why, backends, top, weights, stats or idle")


# --- why ---------------------------------------------------------------------------------------------

def _worker_status(view: SchedulerView, account: str) -> tuple[str, str]:
    ws = view.workers.for_account(account)
    if not ws:
        return "offline", "no worker connected"
    idle = [w for w in ws if w.state == "idle"]
    if idle:
        return "idle", f"idle ({idle[0].name})"
    w = ws[0]
    if w.state == "assigned":
        return "busy", f"busy: assigned task {w.task_id}"
    if w.state == "busy":
        return "busy", f"busy with task {w.task_id}"
    return "busy", f"busy: finishing task {w.last_task}" if w.last_task else "busy: not ready"


def account_reasons(view: SchedulerView, t, world: float) -> list[dict]:
    """For each known account the task allows: why it does not run the task right now."""
    rows: list[dict[str, Any]] = []
    modes = C.candidate_modes(t.cls)
    for name in sorted(view.accounts.info):
        info = view.accounts.info[name]
        if not C.fits(t.cls, name, info.backend):
            continue
        offered = [m for m in modes if not info.modes or m in info.modes]
        if not offered:
            rows.append({"account": name, "status": "no_mode", "detail": f"offers no {'/'.join(modes)} mode",
                         "until": None})
            continue
        if name in view.accounts.paused:
            rows.append({"account": name, "status": "paused",
                         "detail": f"paused ({view.accounts.paused[name] or 'no reason given'})", "until": None})
            continue
        refusals: list[Any] = []
        for mode in ([] if C.reconciles(t.cls, name) else offered):   # a reconcile needs no quota room
            r = view.accounts.why_not(name, mode, t.module, world)
            if r is None:
                refusals = []
                break
            refusals.append(_refusal(name, mode, t.module, *r))
        if refusals:
            rows.append(min(refusals, key=lambda r: r["until"]))
            continue
        status, detail = _worker_status(view, name)
        rows.append({"account": name, "status": status, "detail": detail, "until": None})
    return rows


def quota_figures(reason: str, account: str, mode: str) -> dict | None:
    """``{used, limit, window}`` of the window named in a declined lease's reason, or None.

    The broker refuses a lease with ``account A MODE quota USED/LIMIT (WINDOW) for module M``
    (services/broker/ops_quota.py ``admission``); the worker passes that reason on in its ``done`` and the
    scheduler keeps it with the block. Read back here so that ``why`` shows the figures first."""
    m = re.search(rf"account {re.escape(account)} {re.escape(mode)} quota (\d+)/(\d+) \(([^()]*)\)", reason or "")
    if m is None:
        return None
    return {"used": int(m.group(1)), "limit": int(m.group(2)), "window": m.group(3)}


def _refusal(account: str, mode: str, module: str, what: str, until: float, reason: str) -> dict:
    """The row of an account that cannot take the task in ``mode`` until ``until`` (cooling or blocked)."""
    quota = quota_figures(reason, account, mode) if what == "blocked" else None
    if what == "cooling":
        detail = f"{mode} cooling down until {fmt_time(until)}" + (f" ({reason[:120]})" if reason else "")
    elif quota is not None:
        share = " (the module's share is used up)" if quota["used"] < quota["limit"] else ""
        detail = (f"{mode} quota for {module} blocked until {fmt_time(until)}: {quota['used']}/{quota['limit']} "
                  f"used in window {quota['window']}{share}")
        quota["resets_at"] = until
    else:
        detail = f"{mode} quota for {module} blocked until {fmt_time(until)}" + (f" ({reason[:120]})" if reason else "")
    return {"account": account, "status": what, "until": until, "detail": detail, "quota": quota}


def _serves(view: SchedulerView, account: str, cls: tuple) -> bool:
    info = view.accounts.info.get(account)
    if info is None or not C.fits(cls, account, info.backend):
        return False
    return any(not info.modes or m in info.modes for m in C.candidate_modes(cls))


def _rank(view: SchedulerView, t, world: float) -> tuple:
    return view.model.priority(t, world, view.table.waiting[t.module]), -t.created, -t.id


def _ahead(view: SchedulerView, t, world: float, competitors: list[str]) -> tuple[int, bool]:
    """(ready tasks of higher priority that an account able to run ``t`` could take, approximate?).

    Bounded work (see the module docstring): the candidate bins are found in O(bins); an exact count
    up to AHEAD_EXACT candidates, else an estimate from AHEAD_SAMPLE random ones."""
    queue = view.table.queue
    keys = [key for key in queue.bins() if any(_serves(view, a, key[0]) for a in competitors)]
    candidates = sum(queue.bin_size(key) for key in keys)
    if queue.is_ready(t.id) and (t.cls, t.module) in keys:
        candidates -= 1                     # never ahead of itself
    me = _rank(view, t, world)
    if candidates <= AHEAD_EXACT:
        above = sum(1 for key in keys for u in queue.bin_tasks(key) if u.id != t.id and _rank(view, u, world) > me)
        return above, False
    sample = [u for u in queue.sample(keys, AHEAD_SAMPLE, _RNG) if u.id != t.id]
    if not sample:
        return 0, True
    above = sum(1 for u in sample if _rank(view, u, world) > me)
    return about(round(candidates * above / len(sample))), True


def why(view: SchedulerView, tid: int) -> dict | None:
    t = view.table.tasks.get(tid)
    if t is None:
        return None
    world, mono = view.clock.world(), view.clock.mono()
    waiting = view.table.waiting[t.module]
    out = {"task_id": tid, "state": "PENDING", "priority": round(view.model.priority(t, world, waiting), 3),
           "terms": view.model.explain(t, world, waiting), "ahead": None, "ahead_approx": False, "accounts": []}
    a = view.table.assigned.get(tid)
    conv = t.conversation
    if a is not None:
        w = view.workers.get(a.ident)
        who = w.name if w else "a worker that is gone"
        out.update(where="assigned", line=f"assigned to {who} (account {a.account}) {mono - a.at:.0f}s ago; "
                                          "waiting for it to lease the task")
        return out
    if tid in view.table.queue and not view.table.queue.is_ready(tid):
        if t.hold_until >= t.not_before and t.hold_until > world:
            line = (f"sitting out until {fmt_time(t.hold_until)}: an account declined to lease it "
                    f"{t.declines} time(s) without saying until when (the scheduler asks the broker again)")
        else:
            line = (f"delayed until {fmt_time(t.not_before)} "
                    "(retry backoff after a failure, or the submitter's not_before)")
        out.update(where="delayed", line=line)
        return out
    if tid not in view.table.queue and conv:
        out.update(where="held", line=f"waiting for task {view.convs.inflight.get(conv)}, the turn of conversation "
                                      f"{conv} in flight (one turn at a time)")
        return out
    rows = account_reasons(view, t, world)
    out["accounts"] = rows
    if not rows and t.handoff is None and (t.unknown_account or conv):
        line = "; ".join(_binding(view, t, world)) or "waiting for the account its conversation lives on"
        out.update(where="ready", line=f"waiting: {line}")
        return out
    if not rows:
        backends, account, bound, mode = t.cls[:4]
        need = [f"backends {list(backends)}" if backends else "", f"account {account}" if account else "",
                f"bound to account {bound}" if bound else "", f"mode {mode}"]
        out.update(where="ready",
                   line="waiting: no known account can serve it (" + ", ".join(x for x in need if x) + ")")
        return out
    competitors = [r["account"] for r in rows if r["status"] != "no_mode"]
    out["ahead"], out["ahead_approx"] = _ahead(view, t, world, competitors)
    parts = _binding(view, t, world) + [f"{r['account']} {r['detail']}" for r in rows]
    left = view.placement.deadlines.get(tid)
    if left is not None and left[0] > world:
        parts.insert(0, f"left for {left[1]}, expected to finish it sooner (until {fmt_time(left[0])} at the latest)")
    ahead = (f"≈ {out['ahead']:,} higher-priority tasks ahead (estimated from a sample)" if out["ahead_approx"]
             else f"{out['ahead']} higher-priority task(s) ahead")
    out.update(where="ready", line=f"waiting: {'; '.join(parts)}; {ahead}")
    return out


def _binding(view: SchedulerView, t, world: float) -> list[str]:
    """What ties ``t`` to one account: an unknown turn to reconcile, its conversation (and its hand-off)."""
    parts = []
    if t.unknown_account:
        until = (f"until {fmt_time(t.unknown_until)}, then any account may" if t.unknown_until
                 else "for good (unknown_turn_hold = 0)")
        parts.append(f"its last attempt has an unknown outcome on {t.unknown_account}: only {t.unknown_account} "
                     f"may run it, reconciling with the provider first ({until})")
        return parts
    conv = t.conversation
    if not conv:
        return parts
    if t.handoff:
        why = view.handoffs.blocked_reason(t.handoff, t, world) or "blocked"
        parts.append(f"conversation {conv} is being handed off from {t.handoff} ({why}): any account it allows "
                     "may continue it")
        return parts
    holder = view.convs.holder_of(t)
    if not holder:
        return parts
    blocked = view.handoffs.blocked_reason(holder, t, world)
    after = view.scfg.conversation_handoff
    if blocked is None:
        parts.append(f"conversation {conv} lives on {holder}, which runs its turns")
    elif after <= 0:
        parts.append(f"conversation {conv} lives on {holder} ({blocked}); never handed off "
                     "(scheduler.conversation_handoff = 0)")
    else:
        due = due_time(t, after)
        parts.append(f"conversation {conv} lives on {holder} ({blocked}); handed off to another account at "
                     f"{fmt_time(max(due, world))} unless {holder} can run it by then")
    return parts


def why_untracked(tid: int, rec: Mapping[str, Any] | None) -> dict:
    out = {"task_id": tid, "where": "untracked", "state": None, "priority": None, "terms": None, "ahead": None,
           "ahead_approx": False, "accounts": []}
    if rec is None:
        out["line"] = f"task {tid}: no such task (or the broker did not answer)"
        return out
    state = rec.get("state")
    out["state"] = state
    lease, error = rec.get("lease") or {}, rec.get("error") or {}
    lines = {
        "RUNNING": f"running on {lease.get('account')} ({lease.get('mode')}) by {lease.get('worker')}",
        "DONE": "done",
        "PARKED": f"parked after {rec.get('attempts')} attempt(s): {str(error.get('message', ''))[:200]}",
        "PAUSED": f"paused by the operator (`fanoctl queue resume {tid}` puts it back in the queue)",
        "CANCELLED": "cancelled",
        "PENDING": "pending, but the scheduler has not seen it yet (events are on their way)",
    }
    out["line"] = f"task {tid}: {lines.get(str(state), str(state))}"
    return out


# --- backends, top, weights ---------------------------------------------------------------------------

def backends(view: SchedulerView) -> list[dict]:
    world, mono = view.clock.world(), view.clock.mono()
    names = set(view.accounts.info) | {w.account for w in view.workers if w.account}
    rows = []
    for name in sorted(names):
        info = view.accounts.info.get(name)
        ws = sorted(view.workers.for_account(name), key=lambda w: (w.state != "idle", w.name))
        w = ws[0] if ws else None
        last = view.last_outcome.get(name) or {}
        blocked: list[dict[str, Any]] = [{"mode": m, "module": mod, "until": u, "reason": why}
                   for (acct, m, mod), (u, why) in sorted(view.accounts.blocks.items()) if acct == name and u > world]
        blocked_until: dict[str, float] = {}
        for b in blocked:
            blocked_until[b["mode"]] = max(blocked_until.get(b["mode"], 0.0), b["until"])
        rows.append({
            "account": name, "backend": info.backend if info else None,
            "modes": list(info.modes) if info else [], "configured": bool(info and info.configured),
            "state": "offline" if w is None else ("idle" if w.state == "idle" else "busy"),
            "phase": w.state if w else None, "worker": w.name if w else None, "workers": [x.name for x in ws],
            "task_id": w.task_id if w else None, "since": round(mono - w.since, 1) if w else None,
            "last_task": last.get("task_id"), "last_outcome": last.get("outcome"),
            "last_error": (last.get("message") or None) if last.get("outcome") not in (None, "done") else None,
            "paused": name in view.accounts.paused, "pause_reason": view.accounts.paused.get(name, ""),
            "cooling_until": {m: u for (acct, m), (u, _) in view.accounts.cooldowns.items()
                              if acct == name and u > world},
            "blocked_until": blocked_until, "blocked": blocked,
        })
    return rows


def top(view: SchedulerView) -> dict:
    modules: dict[str, dict] = {}

    def row(module):
        if module not in modules:
            modules[module] = {"waiting": view.table.waiting.get(module, 0), "ready": 0, "delayed": 0, "held": 0,
                               "assigned": 0, "weight": view.model.weights.get(module, 0.0),
                               "backlog_boost": view.model.backlog_boost(module, view.table.waiting.get(module, 0))}
        return modules[module]

    # O(bins + modules + assignments): every tracked task is in exactly one place (assigned, ready,
    # delayed, held: see services/scheduler/tasks.py), so held is what the others leave of `waiting`
    for key in view.table.queue.bins():
        row(key[1])["ready"] += view.table.queue.bin_size(key)
    for module, n in view.table.queue.delayed_by_module.items():
        row(module)["delayed"] += n
    for tid in view.table.assigned:
        t = view.table.tasks.get(tid)
        if t is not None:
            row(t.module)["assigned"] += 1
    for module, n in view.table.waiting.items():
        r = row(module)
        r["held"] = max(0, n - r["ready"] - r["delayed"] - r["assigned"])
    for module in view.model.weights:
        row(module)
    return {"now": view.clock.world(), "workers": len(view.workers), "accounts": backends(view),
            "queue": view.table.counts(),
            "modules": modules, "recent": list(view.recent)}


def weights(model: PriorityModel, store: Callable[[dict | None], None] | None, names_checked: bool, changes,
            reset: bool) -> dict:
    """Store first, then apply: a refused or lost write changes nothing, a crash after it is applied by
    the next rebuild. ``store`` writes the weights to the broker (None: not durable, in tests);
    ``names_checked``: refuse a module the tree does not have."""
    if reset and changes is not None:
        raise bad_argument("weights: set and reset exclude each other", field="reset")
    if reset:
        if store is not None:
            store(None)
        model.reset_weights()
    elif changes is not None:
        try:
            clean = clean_weights(changes)
        except ValueError as exc:
            raise bad_argument(f"weights: {exc}", field="set") from None
        if names_checked:  # a misspelt module would be stored and kept across restarts
            for module in clean:
                if module not in KNOWN_MODULES:
                    raise bad_argument("weights: " + unknown_name("module", module, KNOWN_MODULES), field="set",
                                       name=module, known=sorted(KNOWN_MODULES))
        if store is not None:
            store({**model.weights, **clean})
        model.set_weights(clean)
    return {"weights": dict(model.weights), "configured": dict(model.configured), "durable": store is not None}
