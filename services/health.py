"""The health report: one verdict on the whole tree, for ``fanoctl health`` (cli/health.py: cron or a
monitoring system) and the web panel's overview (services/web/pages/overview.py).

The verdict is ``OK`` (0), ``DEGRADED`` (1) or ``DOWN`` (2), the worst of the checks below (``fanoctl health``
exits with it; ``--json`` prints the report). A check that cannot be made (the broker is down) is left
out of the verdict except for the check that failed.

======== ========================================================================== ===================
check    looks at                                                                   worst verdict
======== ========================================================================== ===================
programs supervisord's process list over its XML-RPC unix socket (``[unix_http_server]
         file`` of the supervisord.conf beside the config file, else the repository's).
         ``broker`` or ``scheduler`` not RUNNING                                    down
         any other program not RUNNING (STARTING, BACKOFF, EXITED, FATAL, STOPPED)  degraded
         supervisord not running (nothing restarts a program that dies)             degraded
broker   the broker answers ``stats``                                               down
scheduler the scheduler answers its ``idle`` query (nothing is dispatched without it) down
storage  the broker's ``storage`` report (``refusing`` new work, ``days_until_full``
         below ``--min-days``), or with an older broker its ``map_full`` flag and
         map use above ``MAP_USE_DEGRADED``                                         degraded
idle     an account idle while work waits (services/scheduler/idle.py) for
         ``--idle-after`` world seconds or more                                     degraded
parked   PARKED tasks (dead letters: retry or cancel them)                          degraded
accounts a paused account (e.g. an auth failure: the operator must sign in)         degraded
         cooling accounts and exhausted quota windows with their reset times:
         they pass by themselves, so they are reported but stay ok                  ok
======== ========================================================================== ===================

``--json`` ::

    {"status": "ok"|"degraded"|"down", "exit": 0|1|2, "now": float|null,      # broker time
     "checks": [{"check": str, "status": "ok"|"degraded"|"down", "line": str}],
     "programs": {"supervisord": "running"|"not running"|"no config", "socket": str|null,
                  "detail": str, "total": int,
                  "not_running": [{"name": str, "state": str, "description": str}]},
     "storage": null | {"source": "storage"|"map", "map_size", "map_used", "map_ceiling", "disk_free",
                        "disk_total", "refusing": null|"MAP_FULL"|"DISK_FULL", "since",
                        "growth_per_day", "days_until_full"},      # source "map": an older broker's
                                                                   # fields, the others null
     "idle": null | [<rows of the scheduler's idle query>],        # null: the scheduler did not answer
     "parked": null | {"count": int, "sample": [{"id", "module", "kind", "error"}]},   # at most 5
     "paused": [{"account", "reason"}],
     "cooling": [{"account", "mode", "until", "reason"}],
     "exhausted": [{"account", "mode", "window", "used", "limit", "resets_at"}]}
"""
from __future__ import annotations

import configparser
import xmlrpc.client
from pathlib import Path
from typing import Any, cast

from shared import formatting as R  # fanoctl's wording of times and sizes
from shared.errors import BrokerUnavailable

OK, DEGRADED, DOWN = 0, 1, 2
NAMES = {OK: "ok", DEGRADED: "degraded", DOWN: "down"}
CORE_PROGRAMS = ("broker", "scheduler")     # without them nothing progresses: down
MAP_USE_DEGRADED = 0.9                      # an older broker (no storage report): map use above this
PARKED_SAMPLE = 5


# --- supervisord -------------------------------------------------------------------------------------------

def supervisor_conf(config_path) -> Path:
    """The supervisord.conf of the tree: beside the config file, else the repository's."""
    from shared.config import REPO_ROOT, ConfigError, load_config
    try:
        loaded = load_config(config_path).path
    except ConfigError:
        loaded = None
    if loaded is not None and (loaded.parent / "supervisord.conf").exists():
        return loaded.parent / "supervisord.conf"
    return REPO_ROOT / "supervisord.conf"


def supervisor_socket(conf: Path) -> Path | None:
    """``[unix_http_server] file`` of a supervisord.conf (``%(here)s`` = its folder), or None."""
    parser = configparser.RawConfigParser(strict=False)
    try:
        parser.read(conf)
        path = parser.get("unix_http_server", "file")
    except (configparser.Error, OSError):
        return None
    return Path(path.replace("%(here)s", str(conf.parent)))


def programs(conf: Path) -> dict:
    """supervisord's view of every program (the ``programs`` part of the report)."""
    sock = supervisor_socket(conf) if conf.exists() else None
    if sock is None:
        return {"supervisord": "no config", "socket": None, "total": 0, "not_running": [],
                "detail": f"no [unix_http_server] file in {conf}"}
    from supervisor.xmlrpc import SupervisorTransport
    proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=SupervisorTransport(None, None, f"unix://{sock}"))
    try:
        # supervisord's XML-RPC answer: a list of structs (the stubs allow any XML-RPC value)
        infos = cast(list[dict[str, Any]], proxy.supervisor.getAllProcessInfo())
    except Exception as exc:   # no socket, refused, a half-started supervisord: all mean "not answering"
        return {"supervisord": "not running", "socket": str(sock), "total": 0, "not_running": [],
                "detail": f"no answer on {sock} ({type(exc).__name__}: {str(exc)[:120]})"}
    bad = [{"name": p["name"] if p["group"] == p["name"] else f"{p['group']}:{p['name']}",
            "state": p["statename"], "description": p.get("spawnerr") or p.get("description") or ""}
           for p in infos if p["statename"] != "RUNNING"]
    return {"supervisord": "running", "socket": str(sock), "total": len(infos), "not_running": bad,
            "detail": f"{len(infos) - len(bad)}/{len(infos)} programs RUNNING"}


def programs_check(p: dict) -> tuple[int, str]:
    if p["supervisord"] != "running":
        return DEGRADED, (f"supervisord not running: {p['detail']}; nothing restarts a program that dies"
                          if p["supervisord"] == "not running" else f"supervisord unknown: {p['detail']}")
    if not p["not_running"]:
        return OK, f"all {p['total']} programs RUNNING under supervisord"
    worst = DOWN if any(b["name"] in CORE_PROGRAMS for b in p["not_running"]) else DEGRADED
    return worst, "not RUNNING: " + "; ".join(
        f"{b['name']} {b['state']}" + (f" ({b['description']})" if b["description"] else "") for b in p["not_running"])


# --- storage -----------------------------------------------------------------------------------------------

STORAGE_KEYS = ("map_size", "map_used", "map_ceiling", "disk_free", "disk_total", "refusing", "since",
                "growth_per_day", "days_until_full")


def storage_facts(broker: dict) -> dict:
    """The broker's ``storage`` report, or the same names filled from an older broker's map fields."""
    st = broker.get("storage")
    if isinstance(st, dict):
        return {"source": "storage", **{k: st.get(k) for k in STORAGE_KEYS}}
    facts: dict[str, Any] = dict.fromkeys(STORAGE_KEYS)
    facts.update(source="map", map_size=broker.get("map_size"), map_used=broker.get("map_used"),
                 refusing="MAP_FULL" if broker.get("map_full") else None)
    return facts


def storage_check(s: dict, min_days: float, now: float | None) -> tuple[int, str]:
    used, size, ceiling = s.get("map_used"), s.get("map_size"), s.get("map_ceiling")
    text = f"map {R.size(used)} used of {R.size(size)}"
    if ceiling:
        text += f" (grows up to {R.size(ceiling)})"
    if s.get("disk_free") is not None:
        text += f", disk {R.size(s['disk_free'])} free of {R.size(s.get('disk_total'))}"
    if s.get("growth_per_day") is not None:
        text += f", growing {R.size(s['growth_per_day'])}/day"
    days = s.get("days_until_full")
    text += f", full in {days:.1f} days" if isinstance(days, (int, float)) else ", days until full unknown"
    if s.get("refusing"):
        since = f" since {R.when(s['since'], now)}" if s.get("since") and now else ""
        return DEGRADED, f"refusing new work ({s['refusing']}{since}): {text}"
    if isinstance(days, (int, float)) and days < min_days:
        return DEGRADED, f"full in less than {min_days:g} days: {text}"
    if s["source"] == "map" and isinstance(used, int) and size and used / size > MAP_USE_DEGRADED:
        return DEGRADED, f"map {100 * used / size:.0f}% used: {text}"
    return OK, text


def health_report(c, ask, conf: Path, idle_after: float, min_days: float, broker_at: str, scheduler_at) -> dict:
    """The report (the ``--json`` shape above) read through the broker client ``c``, the scheduler asked with
    ``ask(what, **fields)`` (None: no answer) and supervisord from ``conf``; ``broker_at`` and
    ``scheduler_at()`` name the endpoints in the lines. ``fanoctl health`` prints it; the web panel's
    overview shows its checks."""
    checks: list[tuple[str, int, str]] = []
    report: dict = {"now": None, "storage": None, "idle": None, "parked": None, "paused": [], "cooling": [],
                    "exhausted": []}
    report["programs"] = programs(conf)
    checks.append(("programs", *programs_check(report["programs"])))

    try:
        stats = c.stats()
        shown = c.quota_show()
        parked = stats["tasks"].get("PARKED", 0)
        sample = c.list(state="PARKED", limit=PARKED_SAMPLE)["tasks"] if parked else []
    except BrokerUnavailable:
        checks.append(("broker", DOWN, f"broker not answering at {broker_at}"))
        stats = None
    if stats is not None:
        now = report["now"] = stats["now"]
        b = stats.get("broker") or {}
        checks.append(("broker", OK, f"pid {b.get('pid')}, up {R.duration(b.get('uptime'))}, "
                                     f"{stats['tasks'].get('PENDING', 0)} pending, {stats['leases']} running"))
        report["storage"] = storage_facts(b)
        checks.append(("storage", *storage_check(report["storage"], min_days, now)))
        report["parked"] = {"count": parked, "sample": [
            {"id": t["id"], "module": t["module"], "kind": t["kind"], "error": (t.get("error") or {}).get("message")}
            for t in sample]}
        checks.append(("parked", DEGRADED, f"{parked} parked task(s) (e.g. "
                       + ", ".join(str(t["id"]) for t in sample) + "): fanoctl queue ls --state PARKED; "
                       "queue retry ID or queue cancel ID") if parked else ("parked", OK, "no parked tasks"))
        _accounts(shown, now, report, checks)

    answer = ask("idle")
    if not isinstance(answer, dict):
        checks.append(("scheduler", DOWN, f"scheduler not answering at {scheduler_at()}"))
    elif answer.get("synced") is False:
        checks.append(("scheduler", OK, "rebuilding its view from the broker: idle accounts not known yet"))
    else:
        rows = report["idle"] = answer.get("accounts") or []
        checks.append(("scheduler", OK, "answering"))
        long = [r for r in rows if r["for"] >= idle_after]
        for r in rows:
            checks.append(("idle", DEGRADED if r in long else OK, f"{r['line']} — for {R.duration(r['for'])}"))
        if not rows:
            checks.append(("idle", OK, "no account idle while work waits"))

    worst = max(level for _, level, _ in checks)
    report.update(status=NAMES[worst], exit=worst,
                  checks=[{"check": name, "status": NAMES[level], "line": line} for name, level, line in checks])
    return report


def _accounts(shown: dict, now: float, report: dict, checks: list) -> None:
    """Paused (degraded), cooling and exhausted windows (reported, ok: they pass by themselves)."""
    for a in shown.get("accounts") or []:
        if a.get("paused"):
            report["paused"].append({"account": a["account"], "reason": a.get("pause_reason") or ""})
            why = a.get("pause_reason") or "no reason"
            checks.append(("accounts", DEGRADED, f"account {a['account']} paused ({why})"
                           f": fanoctl backends resume {a['account']} once fixed"))
        for mode, cd in sorted((a.get("cooldowns") or {}).items()):
            report["cooling"].append({"account": a["account"], "mode": mode, "until": cd["until"],
                                      "reason": cd.get("reason") or ""})
            checks.append(("accounts", OK, f"account {a['account']} {mode} cooling until {R.when(cd['until'], now)}"))
    for q in shown.get("quotas") or []:
        for w in q.get("windows") or []:
            if w["remaining"] <= 0:
                report["exhausted"].append({"account": q["account"], "mode": q["mode"], "window": w["spec"],
                                            "used": w["used"], "limit": w["limit"], "resets_at": w["resets_at"]})
                checks.append(("quota", OK, f"{q['account']} {q['mode']} {w['spec']}: {w['used']}/{w['limit']} used, "
                                            f"resets {R.when(w['resets_at'], now)}"))
