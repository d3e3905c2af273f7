"""Web panel benchmark: each page's server time with 10^4 tasks and 10^3 insights in the broker.

    ops/bench-web [--tasks 10000] [--insights 1000] [--requests 30] [--keep]

Starts a throw-away broker (``python -m services broker`` on a configuration in a short directory under
/tmp), fills it directly — ``--tasks`` tasks over four modules (a third of them leased and completed, so
the queue has DONE tasks with results), ``--insights`` explorer insights with reviews, 50 seeds and 100
threads of 6 exchanges — then serves the panel (:func:`services.web.app.create_app` under uvicorn, as the
``web`` program does) on a free loopback port and requests every page ``--requests`` times after two
warm-up requests. A request's time is measured by the client over loopback, from sending it to the last
byte of the page: the server's time plus a few hundred microseconds. Prints one JSON line per page::

    {"page": "/queue", "status": 200, "median_ms": 12.3, "p95_ms": 15.0, "bytes": 20480}

and a last line ``{"tasks", "insights", "pages", "worst_median_ms", "target_ms": 100, "ok": bool}``; before the
pages, ``{"research_scan_ms"}``: the median time of the overview's research counts (a scan made at most every
10 s by one overview request).
Pages another part of the panel has not installed yet answer 404 and are listed with that status. The
README's "Web panel" section records the figure.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from shared import txn
from shared.client import BrokerClient
from shared.config import REPO_ROOT, load_config
from shared.errors import BrokerUnavailable

TARGET_MS = 100.0
MODULES = {"explorer": ["explorer.explore", "explorer.critique", "explorer.review1"],
           "documenter": ["documenter.plan", "documenter.evaluate"], "researcher": ["researcher.extract_findings"],
           "adhoc": ["adhoc.ask"]}


def start_broker(root: Path) -> tuple[subprocess.Popen[bytes], Path]:
    cfg = root / "fano.toml"
    cfg.write_text(f'[paths]\nrun_dir = "{root}/run"\ndata_dir = "{root}/data"\nlog_dir = "{root}/log"\n'
                   '[broker]\nheadroom = "1MiB"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("FANO_")}
    log = open(root / "broker.log", "ab")   # noqa: SIM115 (the broker's stdout for its whole life)
    proc = subprocess.Popen([sys.executable, "-m", "services", "broker", "--config", str(cfg)], cwd=REPO_ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    probe = BrokerClient(load_config(cfg).broker_endpoint, name="bench-web", timeout=0.3, retries=1)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            probe.ping()
            probe.close()
            return proc, cfg
        except BrokerUnavailable:
            if proc.poll() is not None:
                raise SystemExit(f"the broker exited: see {root}/broker.log") from None
    raise SystemExit(f"the broker did not answer within 30 s: see {root}/broker.log")


def fill(cfg_path: Path, tasks: int, insights: int) -> dict[str, str]:
    """The data; returns a few ids for the detail pages."""
    endpoint = load_config(cfg_path).broker_endpoint
    names = [(m, k) for m, kinds in MODULES.items() for k in kinds]

    def submit(start: int) -> None:
        with BrokerClient(endpoint, name="bench-fill", timeout=10) as c:
            for i in range(start, tasks, 8):
                module, kind = names[i % len(names)]
                c.submit(f"bench-{i}", module, kind, {"prompt": f"question {i} " + "x" * 200}, priority=i % 90)
    with ThreadPoolExecutor(8) as pool:   # concurrent submits share the broker's group commits
        list(pool.map(submit, range(8)))

    def work(n: int) -> None:
        with BrokerClient(endpoint, name="bench-work", timeout=10) as c:
            for _ in range(n):
                lease = c.lease(f"bench-worker-{threading.get_ident()}", "bench-acct")
                task = lease["task"]
                if task is None:
                    return
                c.complete(task["id"], lease["epoch"], {"text": "an answer " + "y" * 500})
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(work, [tasks // 12] * 4))
    now = time.time()
    with BrokerClient(endpoint, name="bench-fill", timeout=10) as c:
        ops = [txn.put(f"seeds/seed-{s:03d}", {"id": f"seed-{s:03d}", "type": "question", "text": f"Seed {s}?",
                                              "priority": 1 + s % 10, "tags": ["bench"], "images": [],
                                              "source": "bench", "created_at": now, "updated_at": now})
               for s in range(50)]
        c.txn("explorer", ops)
        for t in range(100):
            tid = f"seed-{t % 50:03d}.t{t // 50 + 1}"
            ops = [txn.put(f"threads/{tid}", {"id": tid, "seed_id": f"seed-{t % 50:03d}", "seed_type": "question",
                                              "seed_text": "Seed?", "priority": 5, "status": "active",
                                              "exchanges": 6, "created_at": now, "updated_at": now + t})]
            ops += [txn.put(f"exchanges/{tid}/{k:03d}", {
                "thread_id": tid, "turn": k, "role": "explore" if k % 2 else "critique", "backend": "bench-acct",
                "mode": "standard", "response": f"Answer {k} with $x^{k}$ and **bold**. " * 40, "task_id": k,
                "at": now}) for k in range(1, 7)]
            c.txn("explorer", ops)
        statuses = ["pending", "blessed", "interesting", "rejected", "pending", "blessed"]
        for start in range(0, insights, 100):
            ops = []
            for i in range(start, min(insights, start + 100)):
                iid = f"seed-{i % 50:03d}.t1.i{i}"
                text = f"Insight {i}: the Fano plane has $7$ points and {i} consequences."
                ops.append(txn.put(f"insights/{iid}", {
                    "id": iid, "text": text, "version": 1, "versions": [{"version": 1, "text": text, "by": "bench",
                                                                         "round": 0, "at": now}],
                    "tags": ["bench"], "confidence": "medium", "thread_id": f"seed-{i % 50:03d}.t1",
                    "seed_id": f"seed-{i % 50:03d}", "proposed_by": ["bench-acct"], "depends_on": [],
                    "unresolved_depends": [], "status": statuses[i % len(statuses)], "disputed": i % 17 == 0,
                    "priority": 1 + i % 10, "duplicate_of": None, "outcome": None, "decided_by": None,
                    "overrides": [], "blessed_at": None, "last_error": None, "created_at": now, "updated_at": now}))
                ops.append(txn.put(f"reviews/{iid}", {
                    "insight_id": iid, "panel": [{"reviewer": "r1", "account": "bench-acct"}], "stage": "round1",
                    "rounds": {"1": {"version": 1, "responses": {"r1": {"rating": "interesting", "mode": "standard",
                                                                         "backend": "bench-acct", "at": now}},
                                     "retries": {}, "dropped": [], "outcome": None}},
                    "created_at": now, "updated_at": now}))
            c.txn("explorer", ops)
        fill_research(c, now)
        some = c.list(state="DONE", limit=1)["tasks"]
    return {"task": str(some[0]["id"] if some else 1), "thread": "seed-000.t1", "seed": "seed-000",
            "insight": "seed-000.t1.i0"}


def fill_research(c: BrokerClient, now: float, sections: int = 60, findings: int = 300) -> None:
    """The document (``sections`` sections, one version each, a comment on every third) and the
    researcher's records (``findings`` findings over 100 sources, 100 questions) for the research pages."""
    from services.modules.documenter import model as DM
    from services.modules.store import Store
    store = Store(c, "documenter")
    for k in range(1, sections + 1):
        doc = DM.read_doc(store)
        text = (f"Section {k} on the Fano plane: $\\binom{{7}}{{2}} = 21$ pairs, each on one line. " * 8 + "\n\n") * 3
        ops, _ = DM.commit(doc, {f"s{k:04d}": {"title": f"Section {k}", "text": text, "establishes": [f"c{k}"],
                                               "requires": [], "source": {"kind": "insight",
                                                                          "ref": f"seed-000.t1.i{k}"}}},
                           {"kind": "insight", "ref": f"seed-000.t1.i{k}", "task": None}, f"section {k}", now)
        if k % 3 == 0:
            ops.append(txn.put(f"comments/c{k:017d}", {"id": f"c{k:017d}", "section": f"s{k:04d}", "status": "open",
                                                       "text": "Say more.", "quote": "21 pairs", "created": now}))
        c.txn("documenter", ops)
    for start in range(0, findings, 100):
        ops = []
        for i in range(start, min(findings, start + 100)):
            sid = f"src{i % 100:04d}"
            ops.append(txn.put(f"findings/f{i:011d}", {"id": f"f{i:011d}", "source_id": sid, "type": "supporting",
                                                        "summary": f"Finding {i}: the group of order $168$.",
                                                        "quote": "168", "confidence": (i % 10) / 10,
                                                        "numbers": [168], "concepts": ["symmetry"],
                                                        "domain": "example.org", "status": "kept"}))
            if i < 100:
                ops.append(txn.put(f"sources/{sid}", {"id": sid, "url": f"http://example.org/{i}",
                                                      "status": "extracted", "domain": "example.org",
                                                      "trust_score": 40 + i % 60, "trust_reasons": ["bench"],
                                                      "added": now + i}))
                ops.append(txn.put(f"questions/q{i:011d}", {"id": f"q{i:011d}", "question": f"Why {i}?",
                                                            "type": "supporting", "priority": 1 + i % 10,
                                                            "created": now}))
        c.txn("researcher", ops)


def timed(port: int, path: str) -> tuple[int, float, int]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    start = time.perf_counter()
    conn.request("GET", path, headers={"Accept": "text/html"})
    resp = conn.getresponse()
    body = resp.read()
    elapsed = time.perf_counter() - start
    conn.close()
    return resp.status, elapsed * 1000, len(body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--insights", type=int, default=1_000)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="fbw", dir="/tmp"))
    proc, cfg_path = start_broker(root)
    try:
        t0 = time.monotonic()
        ids = fill(cfg_path, args.tasks, args.insights)
        print(json.dumps({"filled_s": round(time.monotonic() - t0, 1), "tasks": args.tasks,
                          "insights": args.insights}), flush=True)
        # the overview's research counts: a scan of the modules' namespaces, made at most every 10 s by one
        # request (services/web/pages/overview.py), so the page medians below do not show it
        from services.modules.operations.summary import research_summary
        with BrokerClient(load_config(cfg_path).broker_endpoint, name="bench-web", timeout=10) as c:
            scans = []
            for _ in range(5):
                start = time.perf_counter()
                research_summary(c)
                scans.append((time.perf_counter() - start) * 1000)
        print(json.dumps({"research_scan_ms": round(statistics.median(scans), 1)}), flush=True)
        import uvicorn

        from services.web.app import create_app
        from services.web.service import listen
        sock = listen("127.0.0.1", 0)
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(create_app(load_config(cfg_path)), log_config=None,
                                               access_log=False, lifespan="off"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        pages = ["/", "/queue", "/queue?state=DONE", "/queue?module=explorer&state=PENDING",
                 f"/queue/{ids['task']}", "/seeds", f"/seeds/{ids['seed']}", "/threads",
                 f"/threads/{ids['thread']}", "/insights", "/insights?status=blessed", f"/insights/{ids['insight']}",
                 "/document", "/document/versions", "/document/diff?from=1&to=60", "/research",
                 "/research?tab=sources", "/research?tab=questions", "/modules"]
        worst = 0.0
        rows: list[dict[str, Any]] = []
        for path in pages:
            for _ in range(2):
                timed(port, path)
            samples = [timed(port, path) for _ in range(args.requests)]
            times = sorted(s[1] for s in samples)
            status = samples[-1][0]
            row: dict[str, Any] = {"page": path, "status": status, "median_ms": round(statistics.median(times), 1),
                   "p95_ms": round(times[min(len(times) - 1, int(0.95 * len(times)))], 1), "bytes": samples[-1][2]}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if status == 200:
                worst = max(worst, row["median_ms"])
        server.should_exit = True
        thread.join(10)
        print(json.dumps({"tasks": args.tasks, "insights": args.insights,
                          "pages": sum(1 for r in rows if r["status"] == 200), "worst_median_ms": worst,
                          "target_ms": TARGET_MS, "ok": worst < TARGET_MS}))
        return 0 if worst < TARGET_MS else 1
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"kept {root}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
