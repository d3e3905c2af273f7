"""Watch a running tree and report when the research reached each milestone, and any idle account.

``ops/demo-timeline [--minutes 20] [--interval 3]`` samples a running Fano (the one ``fano.toml`` or
``$FANO_CONFIG`` names: start it with ``ops/up``) through ``fanoctl top --once --json`` and
``fanoctl document show --json`` and prints one JSON object when the time is up (or on Ctrl-C):

* ``milestones``: seconds since the broker started (its ``uptime``) at which the first thread, the first
  extracted insight, the first blessed insight, the first document section and the first section written
  from a blessed insight (an incorporated insight) were seen — ``null`` if not yet;
* ``idle_while_work_waits``: per account, the sampled seconds during which the scheduler's idle query
  (the lines ``fanoctl status`` and ``top`` print; services/scheduler/idle.py) named it: idle, with quota,
  while work it may run waits;
* ``longest_stall``: the longest stretch without a single completed task while tasks were PENDING;
* ``done`` per module at the end and the sample count.

This is how the README's demo timings are measured: ``ops/down; rm -rf var/data; ops/up`` (the venv
already installed), then at once ``ops/demo-timeline --minutes 20``. The numbers are measurements on a
shared 2-core machine, not targets.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

FANOCTL = Path(sys.executable).with_name("fanoctl")
MILESTONES = ("thread", "insight", "blessed", "section", "section_from_insight")


def fanoctl_json(*args: str) -> dict | None:
    """One read-only fanoctl command's JSON, or None when the broker did not answer."""
    proc = subprocess.run([str(FANOCTL), "--json", *args], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        return None
    try:
        return json.loads(proc.stdout)
    except ValueError:
        return None


def reached(top: dict, doc: dict | None) -> set[str]:
    """The milestones visible in one sample."""
    research = top.get("research") or {}
    threads = research.get("threads") or {}
    insights = research.get("insights") or {}
    seen = set()
    if sum(threads.values()):
        seen.add("thread")
    if sum(insights.values()):
        seen.add("insight")
    if insights.get("blessed"):
        seen.add("blessed")
    if research.get("sections") or (doc and doc.get("sections")):
        seen.add("section")
    if doc and doc.get("incorporated"):
        seen.add("section_from_insight")
    return seen


def watch(minutes: float, interval: float) -> dict:
    first: dict[str, float | None] = dict.fromkeys(MILESTONES)
    idle: dict[str, float] = {}
    stall = longest = 0.0
    last_done = None
    samples = 0
    uptime = 0.0
    top: dict = {}
    end = time.monotonic() + minutes * 60
    try:
        while time.monotonic() < end:
            tick = time.monotonic()
            top = fanoctl_json("top", "--once") or {}
            stats = top.get("stats") or {}
            if not stats:
                time.sleep(interval)
                continue
            doc = fanoctl_json("document", "show")
            samples += 1
            uptime = float((stats.get("broker") or {}).get("uptime") or 0.0)
            for name in reached(top, doc):
                if first[name] is None:
                    first[name] = round(uptime, 1)
            for row in top.get("idle") or []:
                idle[row["account"]] = idle.get(row["account"], 0.0) + interval
            done = (stats.get("tasks") or {}).get("DONE", 0)
            pending = (stats.get("tasks") or {}).get("PENDING", 0)
            if last_done is not None and done == last_done and pending:
                stall += interval
                longest = max(longest, stall)
            else:
                stall = 0.0
            last_done = done
            time.sleep(max(0.0, interval - (time.monotonic() - tick)))
    except KeyboardInterrupt:
        pass
    modules = (top.get("stats") or {}).get("modules") or {}
    return {"milestones": first, "idle_while_work_waits": {k: round(v) for k, v in sorted(idle.items())},
            "longest_stall": round(longest), "uptime": round(uptime),
            "done": {m: c.get("DONE", 0) for m, c in sorted(modules.items())}, "samples": samples}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ops/demo-timeline", description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=20.0, help="how long to watch (default 20)")
    ap.add_argument("--interval", type=float, default=3.0, help="seconds between samples (default 3)")
    args = ap.parse_args(argv)
    print(json.dumps(watch(args.minutes, args.interval), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
