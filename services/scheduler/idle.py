"""Idle while work waits: which accounts could work but do not, why, and since when (the ``idle`` query).

An account is **idle while work waits** when all of these hold:

* one of its workers is ``idle`` (said ready, has no assignment) and the account is not paused;
* one of the modes that worker offers is not cooling down (the account has headroom for some mode);
* at least one tracked PENDING task waits that its own quota does not explain: a ready task (in a bin
  of the queue) for which the account is not blocked or cooling in the task's modes and module, or a
  turn held behind its conversation's turn in flight.

Tasks in retry backoff (``not_before`` in the future) and tasks the account's own quota or cool-down
keeps from it are reported beside the count but never make an account "idle while work waits": they
wait for time, not for capacity. Assigned tasks are on their way to a worker and are not counted.

Each counted task falls in one group (``reason``), so that the line says why the account does not get it:

==========  ===============================================================================================
bound       its conversation (or an unknown turn it must reconcile) is bound to another account; the group
            names that account and its state (``blocked until``, ``cooling until``, ``paused``, ``busy``...)
account     it requires another account (``requires.account``); the group names it and its state
backends    its allowed backends exclude this account (the detail gives the state of each allowed name that is
            an account; ``account`` is set when only one account is allowed)
no_mode     it needs a mode this account does not offer
runnable    this account could take it now: the placement left it for a faster account or keeps the
            account free a moment for its conversation's next turn (see services/scheduler/placement.py),
            or the next dispatch gives it out
held        it waits for the turn of its conversation in flight (one turn at a time)
==========  ===============================================================================================

Cost: the test runs on the scheduler's single loop, after a dispatch at most once a second
(:meth:`IdleWatch.tick`) and for each ``idle`` query, so it looks only at what the scheduler keeps: the
queue's bins (a handful of placement classes times modules, with their sizes), the delayed count, the
held conversations and the idle workers: O(idle accounts x bins + held conversations), never a walk
over the tasks (the queue may hold 10^6). Measured: 0.5-1.3 ms with 5 idle accounts and 48 bins, the
same for 10^4 and 2 x 10^5 queued tasks.

``since`` is the world time from which the condition held without a break, as seen by this scheduler
process: it starts again when the account takes work, and when the scheduler restarts (it is stateless).

``idle`` -> ::

    {"now": float, "synced"?: false,          # false: rebuilding from the broker, nothing to say yet
     "accounts": [{"account": str, "since": float, "for": float,   # world seconds idle while work waits
                   "waiting": int,                                 # the tasks counted (groups' sum)
                   "groups": [{"reason": "bound"|"account"|"backends"|"no_mode"|"runnable"|"held",
                               "n": int, "account": str|null,     # bound: the holder; account/backends: the one
                                                                  # account allowed (backends: null if several)
                               "detail": str, "until": float|null}],   # until: when that account (backends:
                                                  # the first of the allowed ones, if all are) may take them
                   "own_quota": [{"mode", "module", "status": "blocked"|"cooling", "until", "n"}],
                   "delayed": int,                                  # in retry backoff (not counted)
                   "line": str}]}
         # line, e.g. "account claude-sim idle while 31 tasks wait (bound to chatgpt-sim: standard quota
         # for explorer blocked until 2026-12-03 21:00:00 UTC)"
"""
from __future__ import annotations

from services.scheduler import classes as C
from services.scheduler.queries import fmt_time as _fmt
from services.scheduler.view import SchedulerView


def headroom_accounts(view: SchedulerView, world: float) -> list[str]:
    """Accounts with an idle worker, not paused, with some offered mode not cooling down."""
    out: set[str] = set()
    for w in view.workers.idle():
        account = w.account
        if account is None or account in view.accounts.paused or account in out:
            continue
        for mode in w.modes:
            r = view.accounts.why_not(account, mode, "", world)   # module "": cool-downs only
            if r is None:
                out.add(account)
                break
    return sorted(out)


def _holder_state(view: SchedulerView, holder: str, cls: tuple, module: str, world: float) -> tuple[str, float | None]:
    """Why the account a task is bound to does not run it now: (text, until or None)."""
    if holder in view.accounts.paused:
        return f"paused ({view.accounts.paused[holder] or 'no reason given'})", None
    info = view.accounts.info.get(holder)
    modes = [m for m in C.candidate_modes(cls) if info is None or not info.modes or m in info.modes]
    if info is not None and info.modes and not modes:
        return f"offers no {'/'.join(C.candidate_modes(cls))} mode", None
    refusals = [(m, r) for m in modes if (r := view.accounts.why_not(holder, m, module, world)) is not None]
    if refusals and len(refusals) == len(modes):   # every mode refused
        mode, (what, until, _) = min(refusals, key=lambda x: x[1][1])
        text = (f"{mode} quota for {module} blocked" if what == "blocked" else f"{mode} cooling down")
        return f"{text} until {_fmt(until)}", until
    ws = view.workers.for_account(holder)
    if not ws:
        return "offline (no worker connected)", None
    if any(w.state == "idle" for w in ws):
        return "idle", None
    return "busy", None


def breakdown(view: SchedulerView, account: str, world: float) -> dict:
    """The waiting work as seen from ``account``: counted groups, own-quota waits, delayed."""
    info = view.accounts.info.get(account)
    backend = info.backend if info else None
    offered = tuple(info.modes) if info and info.modes else ()
    worker_modes: set[str] = set()
    for w in view.workers.for_account(account):
        worker_modes.update(w.modes)
    groups: dict[tuple, dict] = {}
    own: dict[tuple, dict] = {}

    def add(reason, n, other=None, detail="", until=None):
        g = groups.setdefault((reason, other, detail), {"reason": reason, "n": 0, "account": other,
                                                        "detail": detail, "until": until})
        g["n"] += n

    queue = view.table.queue
    for key in queue.bins():
        cls, module = key
        n = queue.bin_size(key)
        backends, req_account, bound = cls[0], cls[1], cls[2]
        if backends and account not in backends and backend not in backends:
            # allowed names that are accounts (not backend kinds): say what each is doing, as for "bound"
            known = [b for b in backends if b in view.accounts.info]
            states = [(b, *_holder_state(view, b, cls, module, world)) for b in known]
            if len(states) == 1:
                text = f": {states[0][1]}"
            else:
                text = "".join(f"{'; ' if i else ': '}{b} {state}" for i, (b, state, _) in enumerate(states))
            untils = [u for _, _, u in states if u is not None]
            add("backends", n, known[0] if len(backends) == 1 and known else None,
                f"only {', '.join(backends)} may run them{text}",
                min(untils) if untils and len(untils) == len(backends) else None)
            continue
        if req_account is not None and req_account != account:
            state, until = _holder_state(view, req_account, cls, module, world)
            add("account", n, req_account, f"only account {req_account} may run them: {state}", until)
            continue
        if bound is not None and bound != account:
            text, until = _holder_state(view, bound, cls, module, world)
            add("bound", n, bound, text, until)
            continue
        modes = [m for m in C.candidate_modes(cls) if (not offered or m in offered)
                 and (not worker_modes or m in worker_modes)]
        if not modes:
            add("no_mode", n, None, f"need {'/'.join(C.candidate_modes(cls))} mode")
            continue
        refusals = [(m, r) for m in modes if (r := view.accounts.why_not(account, m, module, world)) is not None]
        if len(refusals) == len(modes):   # every mode refused (modes is not empty)
            mode, (what, until, _) = min(refusals, key=lambda x: x[1][1])
            o = own.setdefault((mode, module, what), {"mode": mode, "module": module, "status": what,
                                                      "until": until, "n": 0})
            o["until"] = min(o["until"], until)
            o["n"] += n
            continue
        add("runnable", n, None, "it could take them now (left for a faster account, or about to be assigned)")
    held = view.table.held_count()
    if held:
        add("held", held, None, "wait for the turn of their conversation in flight")
    out = sorted(groups.values(), key=lambda g: (-g["n"], g["reason"], g["account"] or ""))
    return {"groups": out, "waiting": sum(g["n"] for g in out),
            "own_quota": sorted(own.values(), key=lambda o: (o["until"], o["mode"], o["module"])),
            "delayed": queue.delayed_count}


def _group_text(g: dict, alone: bool) -> str:
    n = "" if alone else f"{g['n']} "
    if g["reason"] == "bound":
        return f"{n}bound to {g['account']}: {g['detail']}"
    if g["reason"] == "runnable":
        return f"{n}it could take now (left for a faster account, or about to be assigned)"
    return f"{n}{g['detail']}"


def _own_text(o: dict) -> str:
    what = f"quota for {o['module']} blocked" if o["status"] == "blocked" else "cooling"
    return f"{o['mode']} {what} until {_fmt(o['until'])}"


def line(account: str, b: dict) -> str:
    groups = b["groups"]
    parts = [_group_text(g, len(groups) == 1) for g in groups]
    tail = []
    if b["own_quota"]:
        tail.append("its own quota keeps " + ", ".join(f"{o['n']} ({_own_text(o)})" for o in b["own_quota"]))
    if b["delayed"]:
        tail.append(f"{b['delayed']} more in retry backoff")
    n = b["waiting"]
    return (f"account {account} idle while {n} task{'s' if n != 1 else ''} wait{'' if n != 1 else 's'} "
            f"({'; '.join(parts)})" + (f"; {'; '.join(tail)}" if tail else ""))


CHECK_INTERVAL = 1.0   # real seconds between two checks on the loop (a check costs O(idle accounts x bins))


class IdleWatch:
    """Remembers since when each account has been idle while work waits (world time).

    The check runs after a dispatch at most every CHECK_INTERVAL (monotonic) seconds: under a high event
    rate the loop dispatches far more often than that, and the test is about spells of minutes. A spell
    ends exactly when the account takes work (:meth:`took_work`, from the dispatch), else at the next
    check that finds the condition gone."""

    def __init__(self):
        self.since: dict[str, float] = {}
        self._next_check = float("-inf")

    def took_work(self, account: str | None) -> None:
        if account:
            self.since.pop(account, None)

    def tick(self, view: SchedulerView, world: float, mono: float) -> None:
        if mono >= self._next_check:
            self._next_check = mono + CHECK_INTERVAL
            self.update(view, world)

    def flagged(self, view: SchedulerView, world: float) -> dict[str, dict]:
        """{account: breakdown} for the accounts idle while work waits now."""
        if not view.table.tasks:
            return {}
        out = {}
        for account in headroom_accounts(view, world):
            b = breakdown(view, account, world)
            if b["waiting"] > 0:
                out[account] = b
        return out

    def update(self, view: SchedulerView, world: float) -> dict[str, dict]:
        """After a dispatch: start or end each account's idle spell."""
        now = self.flagged(view, world) if view.workers.idle() else {}
        for account in [a for a in self.since if a not in now]:
            del self.since[account]
        for account in now:
            self.since.setdefault(account, world)
        return now

    def report(self, view: SchedulerView) -> dict:
        """The ``idle`` query's answer (shape in the module docstring)."""
        world = view.clock.world()
        if view.status.get("synced") is False:   # rebuilding: the queue is not the broker's yet
            return {"now": world, "synced": False, "accounts": []}
        now = self.update(view, world)
        rows = []
        for account, b in sorted(now.items()):
            since = self.since[account]
            rows.append({"account": account, "since": since, "for": round(world - since, 3), **b,
                         "line": line(account, b)})
        return {"now": world, "accounts": rows}
