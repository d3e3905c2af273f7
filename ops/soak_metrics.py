"""The figures of a soak run (ops/soak.py): what is counted, how, and the targets they are held to.

Pure bookkeeping, no processes: :class:`LogTail` reads the simulated providers' request logs as they grow,
:class:`Busy` integrates the samples the driver takes of every account, :func:`deep_budgets` and
:func:`targets` turn the totals into the report. Times are world seconds (the scaled clock).

Busy fraction, the measure the issue asks for ("each account's busy fraction while it had quota and work
existed"): the driver samples, every few hundred real milliseconds, the broker's PENDING and RUNNING
tasks and its quota ledger (``quota_show``). An account is *eligible* at a sample when it is not paused
and some PENDING task could run on it now: the task's explicit requirements (``account``, ``backends``,
mode, deep fallback) allow it, that mode is not cooling down on it (a 429, a provider's "limit reached")
and every window of that mode admits the task's module (the broker's admission rule). Conversation
affinity is ignored on purpose: a task bound to an account that has run out is work the research could
have moved (issue 11, Deliver 1), and an account idling beside it is the failure this measure exists to
show. It is *busy* when a RUNNING task is leased to it. The interval since the previous sample is
credited to the previous sample's state; the fraction is busy-and-eligible time over eligible time.
"""
from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from pathlib import Path

from services.modules.capacity import Capacity, task_modes
from shared.quota import next_reset, period_start


def percentile(values, q: float) -> float | None:
    """The q-quantile (0..1) by linear interpolation; None for no values."""
    xs = sorted(values)
    if not xs:
        return None
    k = (len(xs) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


class LogTail:
    """The records appended to one JSON-lines file since the last :meth:`read` (a torn last line waits)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.offset = 0

    def read(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self.offset += end
        out = []
        for line in data[:end].splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue   # a record cut by a kill -9 and then overwritten: the sim's own reader skips it too
        return out


class ProviderDay:
    """One simulated day of one provider's log: tasks served per mode, requests received per mode, refusals
    and failures by reason, reply bytes, and the world times of deep requests (for the deep budgets)."""

    def __init__(self):
        self.served: Counter = Counter()
        self.received: Counter = Counter()
        self.refused: Counter = Counter()
        self.failed = 0
        self.reconciled = 0
        self.reply_bytes = 0

    def add(self, rec: dict) -> None:
        ev = rec.get("event")
        if ev == "served":
            self.served[rec["mode"]] += 1
            self.reply_bytes += len(rec.get("reply", "").encode())
            self.reconciled += bool(rec.get("reconciled"))
        elif ev == "received":
            self.received[rec["mode"]] += 1
        elif ev == "refused":
            self.refused[rec.get("reason", "?")] += 1
        elif ev == "failed":
            self.failed += 1

    def as_dict(self) -> dict:
        return {"done": dict(self.served), "received": dict(self.received), "refused": dict(self.refused),
                "failed": self.failed, "reconciled": self.reconciled, "reply_bytes": self.reply_bytes}


class Busy:
    """Eligible and busy world seconds per account, integrated from samples (see the module docstring)."""

    def __init__(self):
        self.eligible: defaultdict[str, float] = defaultdict(float)
        self.busy: defaultdict[str, float] = defaultdict(float)
        self.idle_spells: Counter = Counter()   # samples where an eligible account was idle
        # account -> what waited -> idle seconds
        self.idle_by: defaultdict[str, defaultdict[str, float]] = defaultdict(lambda: defaultdict(float))
        self._last: tuple[float, dict, dict] | None = None

    def sample(self, now: float, states: dict[str, tuple[bool, bool]], why: dict[str, str] | None = None) -> None:
        """``states``: account -> (eligible, busy) at world time ``now``; ``why``: for an eligible idle
        account, what it could have run (:func:`account_states`), so that idle time is told by its cause."""
        if self._last is not None:
            then, prev, prev_why = self._last
            dt = max(0.0, now - then)
            for account, (eligible, busy) in prev.items():
                if eligible:
                    self.eligible[account] += dt
                    if busy:
                        self.busy[account] += dt
                    else:
                        self.idle_by[account][prev_why.get(account, "?")] += dt
        for account, (eligible, busy) in states.items():
            if eligible and not busy:
                self.idle_spells[account] += 1
        self._last = (now, states, dict(why or {}))

    def fractions(self) -> dict[str, float | None]:
        return {a: (round(self.busy[a] / self.eligible[a], 4) if self.eligible[a] > 0 else None)
                for a in sorted(set(self.eligible) | set(self.busy))}

    def as_dict(self) -> dict:
        """Per account: the fraction, eligible and busy seconds, and ``idle_by``: the idle seconds by what
        was waiting (the five largest causes)."""
        return {a: {"busy_fraction": f, "eligible_s": round(self.eligible[a]), "busy_s": round(self.busy[a]),
                    "idle_by": {k: round(v) for k, v in sorted(self.idle_by[a].items(), key=lambda kv: -kv[1])[:5]}}
                for a, f in self.fractions().items()}


def account_states(pending: list[dict], running: list[dict], quota: dict, accounts: dict[str, tuple[str, list[str]]],
                   now: float, why: dict[str, dict] | None = None) -> dict[str, tuple[bool, bool]]:
    """account -> (eligible, busy) at one sample.

    ``pending``/``running``: the broker's PENDING and RUNNING tasks (``list``); ``quota``: its
    ``quota_show``; ``accounts``: name -> (backend, modes). Eligible: some PENDING task this account may
    run (its explicit ``requires.account``/``backends`` allow it; conversation affinity is ignored on
    purpose, see the module docstring) in a mode where the account has room for the task's module —
    not paused, not cooling down, every window admitting the module: the modules' own headroom view,
    :class:`services.modules.capacity.Capacity`. Work that no account may run now does not count, as in
    the scheduler's ``idle`` query: a task waiting out a backoff (``not_before`` ahead), a turn of a
    conversation with another turn RUNNING (one turn in flight), a task whose unknown turn only another
    account may reconcile. Busy: a RUNNING task is leased to it. ``why`` (filled when given): for each
    eligible account, the first task it could have run (label it with :func:`idle_label`).
    """
    modes = {name: list(offered) for name, (_, offered) in accounts.items()}
    views: dict[str, Capacity] = {}   # one view per module
    busy = {(t.get("lease") or {}).get("account") for t in running}
    in_flight = {(t.get("requires") or {}).get("conversation") for t in running} - {None, ""}
    runnable = [t for t in pending if (t.get("not_before") or 0.0) <= now
                and (t.get("requires") or {}).get("conversation") not in in_flight]
    out = {}
    for name, (backend, _) in accounts.items():
        eligible = False
        for t in runnable:
            req = t.get("requires") or {}
            if req.get("account") not in (None, name) or (req.get("backends") and name not in req["backends"]
                                                           and backend not in req["backends"]):
                continue
            if (t.get("unknown_turn") or {}).get("account") not in (None, name):
                continue
            view = views.get(t["module"])
            if view is None:
                view = views[t["module"]] = Capacity.from_quota(quota, t["module"], modes, now)
            if any(view.room(name, m) for m in task_modes(t)):
                eligible = True
                if why is not None:
                    why[name] = t
                break
        out[name] = (eligible, name in busy)
    return out


def idle_label(task: dict, account: str, bound: str | None) -> str:
    """What an idle account could have run: ``module kind``, ``(deep)`` for a deep turn, and
    ``(conversation on X)`` when the task's conversation is bound to another account ``bound``."""
    return (f"{task['module']} {task.get('kind', '')}"
            + (" (deep)" if (task.get("requires") or {}).get("mode") == "deep" else "")
            + (f" (conversation on {bound})" if bound not in (None, account) else ""))


def deep_budgets(deep_times: dict[str, list[float]], windows: dict[str, list[dict]], t0: float, t1: float) -> dict:
    """Per account: its daily deep window's complete periods inside [t0, t1], requests received in each
    (``used``) against the limit (``available``); a weekly window that ran out caps ``available``."""
    out = {}
    for account, wins in windows.items():
        daily = next((w for w in wins if w["kind"] == "daily"), None)
        if daily is None:
            continue
        weekly = next((w for w in wins if w["kind"] == "weekly"), None)
        times = sorted(deep_times.get(account, []))
        periods, start = [], next_reset(daily, t0)
        while True:
            end = next_reset(daily, start)
            if end > t1:
                break
            used = sum(1 for t in times if start <= t < end)
            available = daily["limit"]
            if weekly is not None:
                wstart = period_start(weekly, start)
                before = sum(1 for t in times if wstart <= t < start)
                available = max(0, min(available, weekly["limit"] - before))
            periods.append({"start": start, "used": used, "available": available})
            start = end
        used, avail = sum(p["used"] for p in periods), sum(p["available"] for p in periods)
        out[account] = {"periods": len(periods), "used": used, "available": avail,
                        "fraction": round(used / avail, 4) if avail else None}
    return out


def growth_ok(first: float | None, last: float | None, rel: float, slack: float = 0.0) -> bool | None:
    """``last`` at most ``first`` * (1 + rel) + slack; None when either is unknown."""
    if first is None or last is None:
        return None
    return last <= first * (1 + rel) + slack


def targets(total: dict, days: list[dict], comment_target_s: float) -> dict:
    """Each target of issue 11 with the measured value and pass (true/false; null: nothing to judge)."""
    out = {}
    fr = {a: v["busy_fraction"] for a, v in total["busy"].items()}
    out["accounts_busy_95pct"] = {"value": fr, "pass": all(f is None or f >= 0.95 for f in fr.values())}
    deep = {a: v["fraction"] for a, v in total["deep_budget"].items()}
    judged = [f for f in deep.values() if f is not None]
    out["deep_budget_used_99pct"] = {"value": deep, "deep_work_seen": total["deep_tasks"] > 0,
                                     "pass": (all(f >= 0.99 for f in judged) if judged and total["deep_tasks"]
                                              else None)}
    p95 = total["comments"]["latency_p95_s"]
    out["comment_latency_p95"] = {"value": p95, "limit_s": round(comment_target_s, 1),
                                  "pass": None if p95 is None else p95 <= comment_target_s}
    bpt = [d["storage"]["bytes_per_task"] for d in days]
    first = bpt[1] if len(bpt) > 1 else None
    out["bytes_per_task_flat_from_day2"] = {"value": bpt, "pass": growth_ok(first, bpt[-1] if bpt else None, 0.25)}
    out["storage_multiple_of_texts"] = {"value": total["storage"]["multiple_of_answers"],
                                        "pass": None if total["storage"]["multiple_of_answers"] is None
                                        else total["storage"]["multiple_of_answers"] <= 4.0}
    # anonymous memory: the resident total also counts the LMDB file pages the broker maps (see ops/soak.py)
    rss_flat = {}
    for name in total["rss_anon_max_mb"]:
        d1 = days[0]["rss_anon_max_mb"].get(name) if days else None
        dl = days[-1]["rss_anon_max_mb"].get(name) if len(days) > 1 else None
        rss_flat[name] = growth_ok(d1, dl, 0.2, 10.0)
    out["rss_flat_after_day1"] = {"value": {n: [d["rss_anon_max_mb"].get(n) for d in days]
                                            for n in total["rss_anon_max_mb"]},
                                  "pass": None if len(days) < 2 else all(v is not False for v in rss_flat.values())}
    for key in ("fatal", "lost", "duplicated", "over_quota"):
        out[f"zero_{key}"] = {"value": total[key], "pass": total[key] == 0}
    return out


def merge_counters(dicts) -> dict:
    """Sum nested {k: number | {k: number}} dicts (per-day provider figures into the run's total)."""
    acc: dict = defaultdict(Counter)
    flat: Counter = Counter()
    for d in dicts:
        for k, v in d.items():
            if isinstance(v, dict):
                acc[k].update(v)
            else:
                flat[k] += v
    return {**dict(flat), **{k: dict(v) for k, v in acc.items()}}


def comment_breakdown(comments: list[dict], tasks_by_key: dict[str, dict]) -> dict:
    """Where a resolved comment's time went (world seconds, p50 and p95 of each part): ``to_submit``
    from the comment to the submission of the task that resolved it (the documenter noticing it, and
    earlier attempts or another comment on the same section before it), ``queued`` until that task was
    leased (a free account with quota), ``turn`` the model's answer, ``to_apply`` until the documenter
    applied it. At a scaled clock every real millisecond of the modules' and the orchestrator's own
    work counts ``scale`` milliseconds here."""
    parts: dict[str, list[float]] = {"to_submit": [], "queued": [], "turn": [], "to_apply": []}
    for c in comments:
        task = tasks_by_key.get(c.get("task_key") or "")
        if c.get("status") != "resolved" or not c.get("resolved_at") or task is None:
            continue
        hist = task.get("history") or []
        submitted = next((h["at"] for h in hist if h.get("why") == "submitted"), None)
        leased = [h["at"] for h in hist if h.get("to") == "RUNNING"]
        done = [h["at"] for h in hist if h.get("to") == "DONE"]
        if submitted is None or not leased or not done:
            continue
        parts["to_submit"].append(submitted - c["created"])
        parts["queued"].append(leased[-1] - submitted)
        parts["turn"].append(done[-1] - leased[-1])
        parts["to_apply"].append(c["resolved_at"] - done[-1])
    return {k: {"p50": _round(percentile(v, 0.5)), "p95": _round(percentile(v, 0.95))} for k, v in parts.items()}


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)
