"""Research benchmark: does the research keep the accounts working on a configuration, or stall?

    ops/bench-research [--config fano.toml] [--minutes 40] [--scale 10] [--every 2.5] [--keep]

Starts a throw-away copy of the process tree (broker, scheduler, one worker per account, the research
modules; :class:`ops.chaos.Tree` under a real supervisord, in a short directory under /tmp) with the
accounts, quotas and module settings of ``--config`` (its ``[paths]`` replaced), on a clock scaled
``--scale`` times, imports the demo seeds (``seeds/demo.toml``) and samples the broker every ``--every``
world minutes for ``--minutes`` world minutes. Prints one JSON line per sample::

    {"world_min", "pending", "running", "done_by": {account: n}, "threads", "open_threads", "blessed"}

and a last line ``{"total": {...}, "busy": {...}, "stalled_from_world_min": m|null}`` (the first sample
after which no task was done any more while tasks were pending). ``busy`` is each account's busy share:
the world seconds its completed tasks ran (each DONE task's last RUNNING -> DONE stretch, by the account
that served it; failed attempts are not counted, so it is a slight underestimate) over the run's world
seconds, in total (``all``) and per ``--bucket`` world minutes (``by_bucket``: [start minute,
{account: share}]). The default configuration's measurement is in the README ("Following capacity"). Only sim accounts
make sense here (real ones would be asked for real).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ops.chaos import Tree
from shared.client import BrokerClient

ROOT = Path(__file__).resolve().parent.parent
PATHS = '[paths]\nrun_dir = "{root}/run"\ndata_dir = "{root}/data"\nlog_dir = "{root}/var/log"\n'


def done_by(client) -> dict:
    out: dict[Any, Any] = {}
    after = None
    while True:
        page = client.list(state="DONE", after=after, limit=1000)
        for t in page["tasks"]:
            acct = (t.get("served") or {}).get("account") or "?"
            out[acct] = out.get(acct, 0) + 1
        after = page["next"]
        if not after:
            return out


def busy_intervals(client) -> list[tuple[str, float, float]]:
    """(account, started, finished) in world seconds for every DONE task: its last RUNNING -> DONE stretch."""
    out, after = [], None
    while True:
        page = client.list(state="DONE", after=after, limit=1000)
        for t in page["tasks"]:
            acct = (t.get("served") or {}).get("account")
            hist = client.get(t["id"], history=True).get("history") or []
            start = next((h["at"] for h in reversed(hist) if h.get("to") == "RUNNING"), None)
            end = next((h["at"] for h in reversed(hist) if h.get("to") == "DONE"), None)
            if acct and start is not None and end is not None and end >= start:
                out.append((acct, float(start), float(end)))
        after = page["next"]
        if not after:
            return out


def busy_share(intervals, t0: float, t1: float, bucket: float) -> dict:
    """Each account's share of [t0, t1] spent running tasks, overall and per ``bucket`` world seconds."""
    def share(a, b):
        out = {}
        for acct, s, e in intervals:
            out[acct] = out.get(acct, 0.0) + max(0.0, min(e, b) - max(s, a))
        return {k: round(v / (b - a), 3) for k, v in sorted(out.items())} if b > a else {}
    buckets, a = [], t0
    while a < t1:
        buckets.append([round((a - t0) / 60, 1), share(a, min(t1, a + bucket))])
        a += bucket
    return {"all": share(t0, t1), "by_bucket": buckets}


def sample(client, world_min: float) -> dict:
    stats = client.stats()
    threads = [v for _, _, v in client.kv_items("explorer", "threads/") if isinstance(v, dict)]
    blessed = sum(1 for _, _, v in client.kv_items("explorer", "insights/") if isinstance(v, dict)
                  and v.get("status") == "blessed")
    return {"world_min": round(world_min, 1), "pending": stats["tasks"]["PENDING"],
            "running": stats["tasks"]["RUNNING"],
            "done_by": done_by(client), "threads": len(threads),
            "open_threads": sum(1 for t in threads if t.get("status") in ("active", "ready", "synthesised")),
            "blessed": blessed}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="ops/bench-research", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "fano.toml"))
    p.add_argument("--minutes", type=float, default=40.0, help="world minutes to run")
    p.add_argument("--scale", type=float, default=10.0, help="world seconds per real second")
    p.add_argument("--every", type=float, default=2.5, help="world minutes between samples")
    p.add_argument("--bucket", type=float, default=10.0, help="world minutes per busy-share bucket")
    p.add_argument("--keep", action="store_true", help="keep the tree's directory (logs, database)")
    a = p.parse_args(argv)
    text = re.sub(r"(?ms)^\[paths\].*?(?=^\[)", "", Path(a.config).read_text())
    root = Path(tempfile.mkdtemp(prefix="br", dir="/tmp"))
    cfg = root / "fano.toml"
    cfg.write_text(PATHS.format(root=root) + text)
    tree = Tree(root, cfg, scale=a.scale)
    rows, busy = [], {}
    try:
        tree.start()
        client = BrokerClient(tree.config.broker_endpoint, name="bench-research", timeout=10.0)
        subprocess.run([sys.executable, "-m", "cli.fanoctl", "--config", str(cfg), "seeds", "import",
                        str(ROOT / "seeds" / "demo.toml")], cwd=ROOT, check=True, capture_output=True)
        t0 = time.monotonic()
        while (time.monotonic() - t0) * a.scale / 60 < a.minutes:
            time.sleep(a.every * 60 / a.scale)
            rows.append(sample(client, (time.monotonic() - t0) * a.scale / 60))
            print(json.dumps(rows[-1]), flush=True)
        intervals = busy_intervals(client)
        if intervals:
            # the run's world span: from the first task started to the last sample
            t_end = max(client.stats().get("now") or 0.0, max(e for _, _, e in intervals))
            busy = busy_share(intervals, min(s for _, s, _ in intervals), t_end, a.bucket * 60)
        client.close()
    finally:
        orphans = tree.stop()
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    stalled = None
    for i in range(1, len(rows)):
        still = all(sum(r["done_by"].values()) == sum(rows[i - 1]["done_by"].values()) and r["pending"]
                    for r in rows[i:])
        if still:
            stalled = rows[i - 1]["world_min"]
            break
    last = rows[-1] if rows else {}
    print(json.dumps({"total": {"done": sum(last.get("done_by", {}).values()), "done_by": last.get("done_by"),
                                "threads": last.get("threads"), "blessed": last.get("blessed")}, "busy": busy,
                      "stalled_from_world_min": stalled, "orphans": orphans}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
