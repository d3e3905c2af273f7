"""Capacity-following benchmark: do conversations move off an account whose quota runs out?

Two sim accounts under a real supervisord (``ops.chaos.Tree``): ``q1`` whose standard quota allows only
``--q1-limit`` requests an hour, and ``a2`` without a limit; both 2 world seconds per turn, clock x10.
``--conversations`` conversations of ``--turns`` turns each (turn k+1 submitted when turn k is done, as the
explorer does). The scheduler binds some conversations to q1; when its window is used up, their next turns
wait — for the hour, or, with ``[scheduler] conversation_handoff``, until they are handed off to a2.
Runs the workload once per ``--handoffs`` value (world seconds; 0 = never) and prints JSON: finished?,
real seconds, turns per account, hand-offs, and what is still pending at ``--timeout``.

    ops/bench-handoff                       # --handoffs 60,0
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from ops.chaos import Tree
from shared.client import BrokerClient
from shared.errors import BrokerUnavailable

SCALE = 10.0

CONFIG = """[paths]
run_dir = "{root}/run"
data_dir = "{root}/data"
log_dir = "{root}/var/log"
[scheduler]
conversation_handoff = {handoff}
[accounts.q1]
backend = "sim"
modes = ["standard"]
latency = {{ standard = 2.0 }}
[accounts.a2]
backend = "sim"
modes = ["standard"]
latency = {{ standard = 2.0 }}
[quotas.q1.standard]
windows = ["{limit}/1h"]
"""


def run(args, handoff: float) -> dict:
    root = Path(tempfile.mkdtemp(prefix="bh", dir="/tmp"))
    cfg = root / "fano.toml"
    cfg.write_text(CONFIG.format(root=root, handoff=handoff, limit=args.q1_limit))
    tree = Tree(root, cfg, scale=SCALE)
    tree.start()
    c = BrokerClient(tree.config.broker_endpoint, name="bench-handoff", timeout=2.0, retries=5)
    try:
        nxt = {f"c{i}": 0 for i in range(args.conversations)}
        cur: dict[str, int] = {}
        served: dict[str, int] = {}
        start = time.monotonic()
        while nxt and time.monotonic() - start < args.timeout:
            for conv, k in list(nxt.items()):
                tid = cur.get(conv)
                if tid is not None:
                    t = c.get(tid, history=False)
                    if t["state"] != "DONE":
                        continue
                    served[t["served"]["account"]] = served.get(t["served"]["account"], 0) + 1
                    if k >= args.turns:
                        del nxt[conv]
                        continue
                cur[conv] = c.submit(f"{conv}#{k}", "explorer", "explorer.explore", {"prompt": f"{conv} turn {k}"},
                                     requires={"conversation": conv})["task"]["id"]
                nxt[conv] = k + 1
            time.sleep(0.05)
        elapsed = time.monotonic() - start
        handoffs, seq = 0, 0
        while page := c.events(after=seq, limit=1000)["events"]:
            seq = page[-1]["seq"]
            handoffs += sum(1 for e in page if e["type"] == "conversation.handoff")
        return {"conversation_handoff": handoff, "finished": not nxt, "real_seconds": round(elapsed, 1),
                "turns_done": sum(served.values()), "turns_total": args.conversations * args.turns,
                "by_account": served, "handoffs": handoffs, "pending": c.call("stats")["tasks"]["PENDING"]}
    except BrokerUnavailable as exc:
        return {"conversation_handoff": handoff, "error": str(exc)}
    finally:
        c.close()
        orphans = tree.stop()
        if orphans:
            print(f"bench-handoff: orphaned processes: {orphans}", file=sys.stderr)
        shutil.rmtree(root, ignore_errors=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="ops/bench-handoff", description=__doc__.split("\n\n")[0])
    p.add_argument("--conversations", type=int, default=8)
    p.add_argument("--turns", type=int, default=6)
    p.add_argument("--q1-limit", type=int, default=8, help="q1's standard requests per hour")
    p.add_argument("--handoffs", default="60,0", help="conversation_handoff values to run (world seconds)")
    p.add_argument("--timeout", type=float, default=90.0, help="real seconds per run")
    args = p.parse_args(argv)
    runs = [run(args, float(h)) for h in args.handoffs.split(",") if h.strip()]
    print(json.dumps({"scale": SCALE, "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
