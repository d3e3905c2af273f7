"""Formatting for ``fanoctl``: fixed-width tables and one readable view per command result
(``status_text``, ``ls_text``, ...); durations, local times, sizes and JSON are worded by
:mod:`shared.formatting`, as in the web panel.

Pure functions of their arguments (``now`` is passed in), no I/O, standard library only. The views read
result shapes documented in docs/cli.md and tolerate missing optional fields.
"""
from __future__ import annotations

import json

# the wording of times, sizes and JSON, shared with the web panel (imported here for the views below and
# for the command modules, which call them as R.duration, R.size, ...)
from shared.formatting import duration, json_default, local_time, relative, size, to_json, truncate, when


def table(headers: list[str], rows: list[list], max_width: dict | None = None) -> str:
    """A fixed-width table: left-aligned columns separated by two spaces, header line first."""
    max_width = max_width or {}
    cells = [[truncate(c, max_width.get(i, 10_000)) for i, c in enumerate(row)] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    lines = ["  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip()]
    for row in cells:
        lines.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip())
    return "\n".join(lines)


def mapping(items: dict | None, empty: str = "-") -> str:
    """``{"explorer": 3, "documenter": 1}`` -> ``documenter=1,explorer=3``."""
    if not items:
        return empty
    return ",".join(f"{k}={v}" for k, v in sorted(items.items()))


def fields(pairs: list[tuple[str, object]]) -> str:
    """Aligned ``name: value`` lines."""
    width = max((len(k) for k, _ in pairs), default=0)
    return "\n".join(f"{(k + ':').ljust(width + 1)} {v}" for k, v in pairs)


def compact(value, width: int = 200) -> str:
    """A short one-line JSON rendering of a value (strings as is)."""
    if isinstance(value, str):
        return truncate(value, width)
    return truncate(json.dumps(value, sort_keys=True, ensure_ascii=False, default=json_default), width)


def pretty(value) -> str:
    """A result or payload for reading: text as is, anything else as indented JSON."""
    if isinstance(value, str):
        return value
    return to_json(value)


# --- views: the readable form of each command's result ---------------------------------------------------

def storage_text(b: dict, now: float) -> str:
    """The ``map`` line of ``status``: the map, its ceiling, the disk, the growth, and any refusal."""
    st = b.get("storage")
    if not st:  # a broker from before broker.storage
        return (f"map      {size(b.get('map_used'))} used of {size(b.get('map_size'))}"
                + ("  ** FULL: new work refused **" if b.get("map_full") else ""))
    line = (f"map      {size(st['map_used'])} used of {size(st['map_size'])} (grows to {size(st['map_ceiling'])}), "
            f"disk {size(st['disk_free'])} free of {size(st['disk_total'])}")
    if st.get("growth_per_day") is not None:
        line += f", {size(max(0, st['growth_per_day']))}/day"
        if st.get("days_until_full") is not None:
            line += f", full in ~{st['days_until_full']:.0f} days"
    if st.get("refusing"):
        line += (f"\n         ** NEW WORK REFUSED ({st['refusing']}) since {relative(st.get('since'), now)}: "
                 + ("raise broker.map_ceiling or fanoctl admin grow-map SIZE"
                    if st["refusing"] == "MAP_FULL" else "free disk space; it resumes by itself") + " **")
    return line


def status_text(s: dict) -> str:
    b, t, now = s.get("broker") or {}, s["tasks"], s["now"]
    states = [k for k in t if k != "total"]
    lines = [
        f"broker   pid {b.get('pid')}, up {duration(b.get('uptime'))}, {b.get('requests', 0)} requests in "
        f"{b.get('batches', 0)} batches (mean {b.get('mean_batch', 0)}), last event {b.get('last_event_seq')}",
        storage_text(b, now),
        "tasks    " + "  ".join(f"{k} {t[k]}" for k in states) + f"  total {t['total']}",
        f"queue    ready {s['ready']}, delayed {s['delayed']}"
        + (f" (next due in {duration(s['next_due_in'])})" if s.get("next_due_in") is not None else "")
        + f", leases {s['leases']}, oldest pending {duration(s.get('oldest_pending_age'))}",
        f"errors   {mapping(b.get('errors'), 'none')}",
    ]
    if s["modules"]:
        rows = [[m] + [counts.get(k, 0) for k in states] for m, counts in sorted(s["modules"].items())]
        lines += ["", table(["MODULE"] + states, rows)]
    if s["quota"]:
        rows = [[q["account"], q["mode"], q["window"], f"{q['used']}/{q['limit']}", q["remaining"],
                 relative(q["cooldown_until"], now) if q.get("cooldown_until") else "-"] for q in s["quota"]]
        lines += ["", table(["ACCOUNT", "MODE", "WINDOW", "USED", "LEFT", "COOLDOWN"], rows)]
    lines += account_lines(s.get("accounts") or [], now)
    if "idle" in s:   # fanoctl status adds the scheduler's answer to the broker's stats
        lines += idle_lines(s["idle"])
    return "\n".join(lines)


def idle_lines(idle) -> list[str]:
    """One line per account idle while work waits (the scheduler's ``idle`` rows), with for how long
    (world time); None: the scheduler did not answer."""
    if idle is None:
        return ["", "scheduler not answering: cannot say whether an account is idle while work waits"]
    return [""] + [f"{r['line']} — for {duration(r['for'])}" for r in idle] if idle else []


def account_lines(accounts: list, now: float) -> list[str]:
    lines = []
    for a in accounts:
        notes = [f"paused ({a.get('pause_reason') or 'no reason'})"] if a.get("paused") else []
        notes += [f"{mode} cooling until {when(c['until'], now)}" + (f": {c['reason']}" if c.get("reason") else "")
                  for mode, c in sorted((a.get("cooldowns") or {}).items())]
        if notes:
            lines.append(f"account {a['account']}: " + "; ".join(notes))
    return [""] + lines if lines else []


def task_info(t: dict, now: float) -> str:
    if t["state"] == "RUNNING" and t.get("lease"):
        lease = t["lease"]
        text = (f"{lease.get('worker')} {lease.get('account')}/{lease.get('mode')} "
                f"lease {duration(lease.get('deadline_in'))}")
        return text + (" (pause requested)" if t.get("pause_requested") else "")
    if t["state"] == "PENDING" and (t.get("not_before") or 0) > now:
        return f"not before {relative(t['not_before'], now)}"
    if t.get("error") and t["state"] != "DONE":
        return f"{t['error'].get('class')}: {t['error'].get('message', '')}"
    return ""


def running_detail(task: dict) -> str:
    """Where a RUNNING task runs: account, mode and attempt (empty without a lease)."""
    lease = task.get("lease") or {}
    if not lease:
        return ""
    return f"on {lease.get('account')} ({lease.get('mode')}), attempt {task['attempts']}/{task['max_attempts']}"



def ls_text(d: dict, now: float) -> str:
    if not d["tasks"]:
        text = "no tasks"
    else:
        rows = [[t["id"], t["state"], t["module"], t["kind"], t["priority"], f"{t['attempts']}/{t['max_attempts']}",
                 duration(now - t["created"]), task_info(t, now), t["key"]] for t in d["tasks"]]
        text = table(["ID", "STATE", "MODULE", "KIND", "PRIO", "ATT", "AGE", "INFO", "KEY"], rows,
                     max_width={3: 24, 7: 40, 8: 32})
    if d["next"] is not None:
        text += f"\n(more: --after {d['next']}, or --all)"
    return text


SHOWN = {"id", "key", "state", "module", "kind", "priority", "attempts", "max_attempts", "epoch", "created",
         "updated", "not_before", "parked_at", "requires", "attrs", "lease", "error", "payload", "result",
         "history"}


COMPACTION = ("compacted", "compacted_at")


def show_text(t: dict, now: float) -> str:
    pairs = [("id", t["id"]), ("key", t["key"]), ("state", t["state"]), ("module", t["module"]),
             ("kind", t["kind"]), ("priority", t["priority"]), ("attempts", f"{t['attempts']}/{t['max_attempts']}"),
             ("epoch", t.get("epoch")), ("created", when(t.get("created"), now)),
             ("updated", when(t.get("updated"), now))]
    if t.get("not_before"):
        pairs.append(("not before", when(t["not_before"], now)))
    if t.get("parked_at"):
        pairs.append(("parked", when(t["parked_at"], now)))
    pairs += [("requires", compact(t.get("requires") or {})), ("attrs", compact(t.get("attrs") or {}))]
    if t.get("lease"):
        lease = t["lease"]
        pairs.append(("lease", f"{lease.get('worker')} on {lease.get('account')}/{lease.get('mode')}, granted "
                      f"{local_time(lease.get('granted_at'))}, ends in {duration(lease.get('deadline_in'))}"))
    if t.get("error"):
        e = t["error"]
        pairs.append(("error", f"{e.get('class')}: {e.get('message', '')} (at {local_time(e.get('at'))})"))
    if t.get("compacted"):
        pairs.append(("compacted", f"{local_time(t.get('compacted_at'))} by task retention (payload, result "
                                   "and history dropped)"))
    pairs += [(k, compact(v)) for k, v in sorted(t.items()) if k not in SHOWN and k not in COMPACTION]
    payload = "(dropped by task retention)" if t.get("compacted") else indent(pretty(t.get("payload")))
    parts = [fields(pairs), "", "payload:", payload]
    history = t.get("history") or []
    if history:
        rows = [[local_time(h.get("at")), h.get("from") or "-", h.get("to"), h.get("attempts"), h.get("epoch"),
                 h.get("why", "")] for h in history]
        parts += ["", "history:", indent(table(["AT", "FROM", "TO", "ATT", "EPOCH", "WHY"], rows))]
    moves = (t.get("conversation") or {}).get("handoffs") or []
    if moves:   # the conversation moved to another account (services/broker/ops_handoff.py)
        rows = [[local_time(m.get("at")), m.get("turn"), m.get("task"), m.get("from"), m.get("to"), m.get("why", "")]
                for m in moves]
        parts += ["", "conversation hand-offs:",
                  indent(table(["AT", "TURN", "TASK", "FROM", "TO", "WHY"], rows))]
    if t.get("result") is not None:
        parts += ["", "result:", indent(pretty(t["result"]))]
    return "\n".join(parts)


def indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def changed(t: dict) -> str:
    """One line after an operator command on a task."""
    note = ""
    if t["state"] == "RUNNING" and t.get("pause_requested"):
        note = " (pause requested: it pauses when its lease ends)"
    return (f"task {t['id']}: {t['state']}, priority {t['priority']}, "
            f"attempts {t['attempts']}/{t['max_attempts']}{note}")


def quota_text(d: dict) -> str:
    now, blocks = d["now"], []
    for q in d["quotas"]:
        head = f"{q['account']} {q['mode']}" + (f" (from {q['source']})" if q.get("source") else "")
        if q.get("cooldown"):
            head += (f"  COOLING DOWN until {when(q['cooldown']['until'], now)}"
                     + (f": {q['cooldown']['reason']}" if q['cooldown'].get("reason") else ""))
        rows = [[w["spec"], f"{w['used']}/{w['limit']}", w["remaining"], mapping(w.get("by_module")),
                 mapping(w.get("reserves")), when(w.get("resets_at"), now) if w.get("resets_at") else "-"]
                for w in q["windows"]]
        body = table(["WINDOW", "USED", "LEFT", "BY MODULE", "RESERVES", "RESETS"], rows) if rows else "(no windows)"
        blocks.append(head + "\n" + indent(body))
    text = "\n\n".join(blocks) if blocks else "no quotas set"
    return text + "\n".join(account_lines(d.get("accounts") or [], now))


def events_text(d: dict) -> str:
    rows = [[e["seq"], local_time(e.get("ts")), e.get("type"),
             " ".join(f"{k}={compact(v, 60)}" for k, v in sorted(e.items()) if k not in ("seq", "ts", "type"))]
            for e in d["events"]]
    text = table(["SEQ", "AT", "TYPE", "FIELDS"], rows) if rows else "no events"
    text += f"\n(last seq {d['last_seq']}" + ("; older events were pruned" if d.get("truncated") else "") + ")"
    return text


COOLING_REASON = 90   # characters of a cool-down's reason in backends ls (--json has all of it)


def _cooling(b: dict, now: float) -> str:
    parts = []
    for mode, cd in sorted((b.get("cooldowns") or {}).items()):
        if cd and cd.get("until", 0) > now:
            # "*": the whole account (e.g. an organisation's spend limit), every mode
            label = "every mode" if mode == "*" else mode
            # the reason is the only place that still says why once other work succeeded (a downgrade
            # whose standard fallback answered clears LAST), so it is shown with the time
            reason = " ".join(str(cd.get("reason") or "").split())
            why = f": {truncate(reason, COOLING_REASON)}" if reason else ""
            parts.append(f"{label} until {local_time(cd['until'], with_date=cd['until'] - now > 86400)} "
                         f"({relative(cd['until'], now)}){why}")
    for mode, until in sorted((b.get("blocked_until") or {}).items()):
        if until and until > now:
            parts.append(f"{mode} quota until {local_time(until, with_date=False)}")
    return "; ".join(parts) or "-"


def backends_text(d: dict) -> str:
    now = d["now"]
    rows = []
    for b in d["backends"]:
        state = "paused" if b.get("paused") else b.get("state", "?")
        task = b.get("task_id")
        last = b.get("last_error") or b.get("last_outcome") or "-"
        rows.append([b["account"], b.get("backend", "-"), state, task if task is not None else "-",
                     truncate(str(last), 50), _cooling(b, now)])
    text = table(["ACCOUNT", "BACKEND", "STATE", "TASK", "LAST", "COOLING / BLOCKED"], rows)
    if d.get("scheduler") != "up":
        text += "\n(scheduler not answering: live worker states unknown)"
    return text


def top_text(frame: dict) -> str:
    s = frame["stats"]
    now = s["now"]
    t = s["tasks"]
    lines = [f"fano top — {local_time(now)}   tasks: " + "  ".join(f"{k} {t.get(k, 0)}" for k in
             ("PENDING", "RUNNING", "DONE", "PARKED", "PAUSED", "CANCELLED")),
             f"queue: ready {s.get('ready', 0)}, delayed {s.get('delayed', 0)}, leases {s.get('leases', 0)}, "
             f"oldest pending {duration(s.get('oldest_pending_age'))}", ""]
    lines.append(backends_text(frame["backends"]))
    if "idle" in frame:   # as in fanoctl status: an account idle while work waits is what needs a look
        lines += idle_lines(frame["idle"])
    lines.append("")
    mods = s.get("modules") or {}
    if mods:
        lines.append(table(["MODULE", "PENDING", "RUNNING", "DONE", "PARKED"],
                           [[m, c.get("PENDING", 0), c.get("RUNNING", 0), c.get("DONE", 0), c.get("PARKED", 0)]
                            for m, c in sorted(mods.items())]))
        lines.append("")
    if frame.get("research") is not None:
        lines += research_lines(frame["research"], now)
        lines.append("")
    quota = s.get("quota") or []
    if quota:
        lines.append(table(["ACCOUNT", "MODE", "WINDOW", "USED", "LEFT"],
                           [[q["account"], q["mode"], truncate(q["window"], 40), f"{q['used']}/{q['limit']}",
                             q["remaining"]] for q in quota]))
        lines.append("")
    sched = frame.get("scheduler")
    recent = (sched or {}).get("recent", []) if isinstance(sched, dict) else []
    if recent:
        lines.append("recent completions:")
        for r in recent[:10]:
            lines.append(f"  {local_time(r.get('at'), with_date=False)}  task {r.get('id')}  {r.get('kind', '')}"
                         f"  {r.get('account', '') or ''}")
    elif sched is None:
        lines.append("(scheduler not answering)")
    return "\n".join(lines)


def research_lines(r: dict, now: float) -> list[str]:
    """The research panel of ``top`` (services/modules/operations/summary.py): a count cut short shows as ``N+``."""
    age = f" (counted {duration(now - r['at'])} ago)" if r.get("at") is not None and now - r["at"] >= 1 else ""
    if r.get("error"):
        return [f"research: not readable{age}: {r['error']}"]
    partial = set(r.get("partial") or [])

    def count(name: str, n) -> str:
        return f"{n}+" if name in partial else str(n)

    def statuses(name: str) -> list:
        counts = r.get(name) or {}
        total = sum(counts.values())
        detail = ", ".join(f"{k} {v}" for k, v in counts.items() if v)
        return [name, count(name, total), detail + (" (of those counted)" if detail and name in partial else "")]
    rows = [statuses("threads"), statuses("insights"),
            ["document", f"v{r.get('document_version', 0)}", f"{r.get('sections', 0)} sections"],
            ["research", count("questions", r.get("questions", 0)),
             f"questions, {count('findings', r.get('findings', 0))} findings"]]
    return [f"research{age}:"] + ["  " + line for line in table(["", "", ""], rows).splitlines()[1:]]


def check_text(d: dict) -> str:
    """``backends check``: one line, then any extra fields the provider reported."""
    head = f"{d['account']} ({d['backend']}): {'ok' if d.get('ok') else 'NOT OK'}"
    if d.get("detail"):
        head += f" — {d['detail']}"
    extra = [f"  {k}: {v}" for k, v in d.items() if k not in ("account", "backend", "ok", "detail")]
    return "\n".join([head, *extra])
