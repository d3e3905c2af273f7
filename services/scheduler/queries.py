"""Answers to the operator's questions on the scheduler socket (``query`` -> ``answer``).

Request: ``query {cid, what, ...fields}``. Reply: ``answer {cid, ok: true, result}`` or
``answer {cid, ok: false, error: {code, name, message}}`` (codes from :mod:`shared.errors`). Times are
world time (epoch seconds); ``line`` texts are for humans, the other fields are stable.

``why`` {task_id} -> ::

    {"task_id": int, "where": "ready"|"delayed"|"held"|"assigned"|"untracked",
     "state": "PENDING"|"RUNNING"|"DONE"|"PARKED"|"PAUSED"|"CANCELLED"|null,   # null: no such task
     "line": "waiting: a1 busy with task 7; gemini-sim deep quota for explorer blocked until
              2025-01-01 00:00:00 UTC (...); 3 higher-priority task(s) ahead",        # one line
              # (starts with "left for <account>, expected to finish it sooner (until ...)" when an idle
              # slower account leaves it, see services/scheduler/placement.py)
     "priority": float|null, "terms": {"base", "seed", "comment", "aging", "weight", "backlog", "total"}|null,
     "ahead": int|null,           # ready tasks of higher priority that an account able to run this one could take
     "accounts": [{"account", "status", "detail", "until"}]}
         # status: idle | busy | offline | paused | cooling | blocked | no_mode   (only accounts the task allows)

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

``weights`` {set: {module: number}}? {reset: true}? -> ``{"weights": {module: float}, "configured":
{module: float}, "durable": bool}``: the module weights in force, changed by ``set`` (all-or-nothing) or
put back to ``[scheduler] module_weights`` of the configuration by ``reset``. A change is written to the
broker (kv ``scheduler``/``weights``) before it is applied, so it survives a restart of the scheduler
(the rebuild reads it back over the configured weights); with the broker down the query is refused
(``UNAVAILABLE``) and nothing changes. ``durable`` is false only for a core without a store (unit tests).

``stats`` -> the counters the scheduler logs every minute::

    {"ready", "delayed", "held", "assigned", "running", "workers", "idle", "assigned_total": int,
     "left_total": int,     # tasks an idle worker left for a faster account (services/scheduler/placement.py)
     "service_times": {"<account>/<mode>": {"mean_s": float, "samples": int}},   # learned, world seconds
     "errors": {name: n}, "synced": bool, "last_seq": int, "rebuilds": int, "dropped_sends": int}
"""
from __future__ import annotations

import time

from shared.errors import ErrorCode, FanoError, bad_argument

from services.scheduler import workers as C
from services.scheduler.priority import clean_weights


def fmt_time(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def answer(core, msg: dict) -> dict | None:
    what = msg["what"]
    if what == "why":
        tid = msg.get("task_id")
        if not isinstance(tid, int) or isinstance(tid, bool):
            raise bad_argument("why needs an integer task_id", field="task_id")
        return why(core, tid)
    if what == "backends":
        return {"now": core.clock.world(), "accounts": backends(core)}
    if what == "top":
        return top(core)
    if what == "weights":
        return weights(core, msg.get("set"), msg.get("reset") is True)
    if what == "stats":
        return core.stats()
    raise FanoError(ErrorCode.UNKNOWN_COMMAND,
                    f"unknown query {str(what)[:40]!r}: ask why, backends, top, weights or stats")


# --- why ---------------------------------------------------------------------------------------------

def _worker_status(core, account: str) -> tuple[str, str]:
    ws = core.workers.for_account(account)
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


def account_reasons(core, t, world: float) -> list[dict]:
    """For each known account the task allows: why it does not run the task right now."""
    rows = []
    modes = C.candidate_modes(t.cls)
    for name in sorted(core.accounts.info):
        info = core.accounts.info[name]
        if not C.fits(t.cls, name, info.backend):
            continue
        offered = [m for m in modes if not info.modes or m in info.modes]
        if not offered:
            rows.append({"account": name, "status": "no_mode", "detail": f"offers no {'/'.join(modes)} mode",
                         "until": None})
            continue
        if name in core.accounts.paused:
            rows.append({"account": name, "status": "paused",
                         "detail": f"paused ({core.accounts.paused[name] or 'no reason given'})", "until": None})
            continue
        refusals = []
        for mode in offered:
            r = core.accounts.why_not(name, mode, t.module, world)
            if r is None:
                refusals = []
                break
            what, until, reason = r
            text = "cooling down" if what == "cooling" else f"quota for {t.module} blocked"
            detail = f"{mode} {text} until {fmt_time(until)}" + (f" ({reason[:120]})" if reason else "")
            refusals.append({"account": name, "status": what, "until": until, "detail": detail})
        if refusals:
            rows.append(min(refusals, key=lambda r: r["until"]))
            continue
        status, detail = _worker_status(core, name)
        rows.append({"account": name, "status": status, "detail": detail, "until": None})
    return rows


def _serves(core, account: str, cls: tuple) -> bool:
    info = core.accounts.info.get(account)
    if info is None or not C.fits(cls, account, info.backend):
        return False
    return any(not info.modes or m in info.modes for m in C.candidate_modes(cls))


def _ahead(core, t, world: float, competitors: list[str]) -> int:
    me = (core.model.priority(t, world, core.waiting[t.module]), -t.created, -t.id)
    n = 0
    for u in core.queue.ready_tasks():
        if u.id == t.id:
            continue
        if (core.model.priority(u, world, core.waiting[u.module]), -u.created, -u.id) > me \
                and any(_serves(core, a, u.cls) for a in competitors):
            n += 1
    return n


def why(core, tid: int) -> dict | None:
    t = core.tasks.get(tid)
    if t is None:
        return None
    world, mono = core.clock.world(), core.clock.mono()
    waiting = core.waiting[t.module]
    out = {"task_id": tid, "state": "PENDING", "priority": round(core.model.priority(t, world, waiting), 3),
           "terms": core.model.explain(t, world, waiting), "ahead": None, "accounts": []}
    a = core.assigned.get(tid)
    conv = t.conversation
    if a is not None:
        w = core.workers.get(a.ident)
        who = w.name if w else "a worker that is gone"
        out.update(where="assigned", line=f"assigned to {who} (account {a.account}) {mono - a.at:.0f}s ago; "
                                          "waiting for it to lease the task")
        return out
    if tid in core.queue and not core.queue.is_ready(tid):
        out.update(where="delayed", line=f"delayed until {fmt_time(t.not_before)} (retry backoff or not_before)")
        return out
    if tid not in core.queue and conv:
        out.update(where="held", line=f"waiting for task {core.conv_inflight.get(conv)}, the turn of conversation "
                                      f"{conv} in flight (one turn at a time)")
        return out
    rows = account_reasons(core, t, world)
    out["accounts"] = rows
    if not rows:
        backends, account, bound, mode = t.cls[:4]
        need = [f"backends {list(backends)}" if backends else "", f"account {account}" if account else "",
                f"bound to account {bound}" if bound else "", f"mode {mode}"]
        out.update(where="ready",
                   line="waiting: no known account can serve it (" + ", ".join(x for x in need if x) + ")")
        return out
    competitors = [r["account"] for r in rows if r["status"] != "no_mode"]
    out["ahead"] = _ahead(core, t, world, competitors)
    parts = [f"{r['account']} {r['detail']}" for r in rows]
    left = core.placement.deadlines.get(tid)
    if left is not None and left[0] > world:
        parts.insert(0, f"left for {left[1]}, expected to finish it sooner (until {fmt_time(left[0])} at the latest)")
    out.update(where="ready", line=f"waiting: {'; '.join(parts)}; {out['ahead']} higher-priority task(s) ahead")
    return out


def why_untracked(core, tid: int, rec: dict | None) -> dict:
    out = {"task_id": tid, "where": "untracked", "state": None, "priority": None, "terms": None, "ahead": None,
           "accounts": []}
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
        "PAUSED": "paused by the operator (fanoctl task resume)",
        "CANCELLED": "cancelled",
        "PENDING": "pending, but the scheduler has not seen it yet (events are on their way)",
    }
    out["line"] = f"task {tid}: {lines.get(state, str(state))}"
    return out


# --- backends, top, weights ---------------------------------------------------------------------------

def backends(core) -> list[dict]:
    world, mono = core.clock.world(), core.clock.mono()
    names = set(core.accounts.info) | {w.account for w in core.workers if w.account}
    rows = []
    for name in sorted(names):
        info = core.accounts.info.get(name)
        ws = sorted(core.workers.for_account(name), key=lambda w: (w.state != "idle", w.name))
        w = ws[0] if ws else None
        last = core.last_outcome.get(name) or {}
        blocked = [{"mode": m, "module": mod, "until": u, "reason": why}
                   for (acct, m, mod), (u, why) in sorted(core.accounts.blocks.items()) if acct == name and u > world]
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
            "paused": name in core.accounts.paused, "pause_reason": core.accounts.paused.get(name, ""),
            "cooling_until": {m: u for (acct, m), (u, _) in core.accounts.cooldowns.items()
                              if acct == name and u > world},
            "blocked_until": blocked_until, "blocked": blocked,
        })
    return rows


def top(core) -> dict:
    modules: dict[str, dict] = {}

    def row(module):
        if module not in modules:
            modules[module] = {"waiting": core.waiting.get(module, 0), "ready": 0, "delayed": 0, "held": 0,
                               "assigned": 0, "weight": core.model.weights.get(module, 0.0),
                               "backlog_boost": core.model.backlog_boost(module, core.waiting.get(module, 0))}
        return modules[module]

    for t in core.tasks.values():
        if t.id in core.assigned:
            row(t.module)["assigned"] += 1
        elif t.id in core.queue:
            row(t.module)["ready" if core.queue.is_ready(t.id) else "delayed"] += 1
        else:
            row(t.module)["held"] += 1
    for module in core.model.weights:
        row(module)
    st = core.stats()
    return {"now": core.clock.world(), "workers": st["workers"], "accounts": backends(core),
            "queue": {k: st[k] for k in ("ready", "delayed", "held", "assigned", "running")},
            "modules": modules, "recent": list(core.recent)}


def weights(core, changes, reset) -> dict:
    """Store first, then apply: a refused or lost write changes nothing, a crash after it is applied by
    the next rebuild."""
    model, store = core.model, core.weights_store
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
        if store is not None:
            store({**model.weights, **clean})
        model.set_weights(clean)
    return {"weights": dict(model.weights), "configured": dict(model.configured), "durable": store is not None}
