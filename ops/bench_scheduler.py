"""Scheduler benchmark: latency and sustained throughput through the whole process tree.

    ops/bench-scheduler [--accounts 4] [--idle 200] [--depths 1000,100000] [--window 20] [--core 20000] [--keep]

Every phase runs a throw-away deployment under a real supervisord (:class:`ops.chaos.Tree`, the
repository's supervisord.conf via :func:`ops.supervisor_conf.standalone`) in a short temporary
directory: the broker (``map_size = "8GiB"``), the scheduler and K sim accounts with
``latency = "zero"``, no rate limits and no injected faults, so what is measured is the orchestration
itself (broker round trips, fsyncs, scheduler decisions, worker hand-offs), not a provider. The clock is
unscaled (``FANO_CLOCK_SCALE=1``): world time is wall time. Tasks are ``kind = "ask"``, module ``bench``.

**Idle latency** (``--idle N``, one fresh deployment): N tasks are submitted one at a time, each only
after the previous one is DONE (plus ``--idle-gap``), so every task meets an idle system with idle
workers. Per task, from the broker's durable event outbox (``events``; ``ts`` is the world time the
broker stamped on the transaction that made the transition, i.e. the start of its group commit):

* ``submit_to_start`` = ts(task.running) - ts(task.submitted): the submit committed and published, the
  scheduler saw the event, picked a worker, sent ``assign``, the worker leased the task (the lease
  transaction is the ``task.running`` event: the worker has started it).
* ``submit_to_done`` = ts(task.done) - ts(task.submitted): plus the intent (``turn_begin``), the sim
  provider (zero latency, one append to its request log) and the ``complete`` transaction.
* ``client_round_trip``: wall time from before the ``submit`` call until the driver receives the
  ``task.done`` event on the broker's PUB socket (what a module would observe).

p50/p99/mean in milliseconds.

**Sustained throughput at depth D** (``--depths``; one fresh deployment per D): the scheduler is
stopped, D pending tasks are pre-loaded through ``txn`` requests of 500 ``submit`` ops each (the time
is reported), then the scheduler is started and rebuilds its queue from the broker. Reported: the
scheduler's own rebuild time (from its log line), the time from ``startProcess`` to ``synced`` (its
``stats`` query) and to its first assignment. After ``--warmup`` seconds, completions are counted over
``--window`` seconds (ΔDONE in the broker's ``stats``), while a feeder tops the queue back up to D every
0.25 s with ``txn`` submits (so every depth is measured at the same depth and with the same submit load;
``depth_min``/``depth_max`` are what the feeder saw). Per depth: ``tasks_per_s``, the scheduler's CPU
(utime+stime from /proc/<pid>/stat: all of it during the window — events, heartbeats, picks — divided
by the assignments made, and as a fraction of one core), its RSS (``VmRSS``)
and peak RSS (``VmHWM``, which includes the rebuild), the broker's and the workers' CPU as fractions of a
core (to show where the time goes), and the mean gap between a task.done and the same worker's next
task.running (``worker_gap_ms``: the hand-off cost per task). The claim to check: ``tasks_per_s`` and
``sched_cpu_us_per_assign`` do not grow worse with D (the pick is O(log n)).

**The core alone** (``--core N``, no deployment): :func:`ops.bench_core.core_cost` drains N tasks
through the scheduler's core in process with the events and messages the tree feeds it per task, so
``core.cpu_us_per_task`` is the part of ``sched_cpu_us_per_assign`` that is the scheduler's own logic,
the rest being its sockets, msgpack and loop.

Full run: ``--depths 1000,100000,1000000``. On the 2-core reference machine pre-loading 10^6 tasks takes
≈26 s (≈40,000 submits/s in transactions of 500) and the 10^6 depth adds ≈1.5 min to the default run's
≈1.5 min; the scheduler's rebuild of 10^6 (read from the broker's PENDING rows) and its RSS are in the
README (Benchmarks).
Prints JSON on stdout (progress on stderr); every process is stopped at the end and checked by pid;
temporary directories are deleted unless ``--keep``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import xmlrpc.client
from pathlib import Path
from typing import Any

import zmq

from ops.bench_broker import machine
from ops.chaos import Tree
from shared import protocol, sockets, txn
from shared.client import BrokerClient
from shared.errors import BrokerUnavailable, FanoError
from shared.records import EventRecord
from shared.scheduler_client import query

MODULE, KIND = "bench", "ask"
TXN_OPS = 500

CONFIG_HEAD = """
[paths]
run_dir = "{root}/run"
data_dir = "{root}/data"
log_dir = "{root}/var/log"

[broker]
map_size = "8GiB"
"""

ACCOUNT = """
[accounts.z{i}]
backend = "sim"
modes = ["standard"]
seed = {seed}
latency = "zero"
sloppy_rate = 0.0
"""


def log(msg: str) -> None:
    print(f"bench-scheduler: {msg}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, max(0, int(round(q * (len(values) - 1)))))] * 1000, 3)


def summary_ms(values: list[float]) -> dict:
    return {"p50": pct(values, 0.5), "p99": pct(values, 0.99),
            "mean": round(statistics.fmean(values) * 1000, 3) if values else None, "n": len(values)}


def proc_cpu(pid: int) -> float | None:
    """utime + stime of a process in seconds (Linux /proc), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def proc_mem(pid: int) -> dict:
    """VmRSS and VmHWM in MiB."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return {"rss_mib": out.get("VmRSS"), "peak_rss_mib": out.get("VmHWM")}


def all_events(client: BrokerClient, after: int = 0) -> list[EventRecord]:
    """Every event in the broker's outbox after ``after``."""
    out: list[EventRecord] = []
    while True:
        page = client.events(after=after, limit=10_000)
        out.extend(page["events"])
        if len(page["events"]) < 10_000:
            return out
        after = page["events"][-1]["seq"]


class Deployment:
    """One throw-away tree: config, supervisord, a broker client; ``close()`` stops and checks by pid."""

    def __init__(self, base: Path, label: str, render, scale: float = 1.0, log_level: str = "INFO"):
        """``render(root)`` returns the fano.toml text for a deployment rooted at ``root``."""
        self.root = Path(tempfile.mkdtemp(prefix=label, dir=base))
        self.config_path = self.root / "fano.toml"
        self.config_path.write_text(render(self.root))
        self.tree = Tree(self.root, self.config_path)   # sets a shared FANO_CLOCK_ORIGIN (now)
        self.tree.env.update(FANO_CLOCK_SCALE=str(scale), FANO_LOG_LEVEL=log_level)
        self.pids: set[int] = set()
        self._client: BrokerClient | None = None
        self.problems: list[str] = []

    def start(self) -> Deployment:
        self.tree.start()
        if self.tree.pid is not None:   # supervisord's: checked at close like the programs'
            self.pids.add(self.tree.pid)
        self.note_pids()
        self._client = BrokerClient(self.tree.config.broker_endpoint, name="bench-driver", timeout=30.0, retries=2)
        return self

    @property
    def client(self) -> BrokerClient:
        """The driver's broker client (once started)."""
        assert self._client is not None, "the deployment is not started"
        return self._client

    def note_pids(self) -> None:
        self.pids.update(p["pid"] for p in self.tree.programs() if p["pid"])

    def pid(self, program: str) -> int:
        pid = self.tree.rpc().supervisor.getProcessInfo(program)["pid"]
        self.pids.add(pid)
        return pid

    def sched(self, what: str = "stats", timeout: float = 2.0):
        return query(self.tree.config.scheduler_endpoint, what, timeout=timeout, name="bench-query")

    def close(self) -> list[str]:
        if self._client is not None:
            self._client.close()
        try:
            self.note_pids()
        except (OSError, xmlrpc.client.Fault):
            pass   # supervisord is gone already: the /proc checks below still run
        if getattr(self.tree, "_proc", None) is None:
            return self.problems
        orphans = self.tree.stop()
        for pid in sorted(self.pids):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue   # gone, as it should be
            if b"supervisor" in cmd or b"services" in cmd:
                self.problems.append(f"process {pid} still alive after shutdown: {cmd[:120]!r}")
        return orphans + self.problems


# --- idle latency --------------------------------------------------------------------------------------

def idle_latency(dep: Deployment, n: int, gap: float) -> dict:
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sockets.configure_socket(sub, "sub")
    sub.setsockopt(zmq.SUBSCRIBE, protocol.EVENT_PREFIX + b"task.done")
    sockets.connect(sub, dep.tree.config.events_endpoint)   # ipc:// (a tcp:// one would need keys)
    client = dep.client
    time.sleep(0.5)   # the subscription reaches the broker (a PUB drops what nobody subscribed to yet)
    _warm(dep)
    seq0 = client.stats()["broker"]["last_event_seq"]
    ids, round_trips = [], []
    try:
        for i in range(n):
            t0 = time.perf_counter()
            tid = client.submit(f"idle-{i}", MODULE, KIND, {"prompt": f"idle {i}"})["task"]["id"]
            _wait_done(sub, client, tid)
            round_trips.append(time.perf_counter() - t0)
            ids.append(tid)
            if gap:
                time.sleep(gap)
    finally:
        sub.close(linger=0)
    ts: dict[int, dict] = {tid: {} for tid in ids}
    for ev in all_events(client, seq0):
        ev_id = ev.get("id")
        rec = ts.get(ev_id) if isinstance(ev_id, int) else None
        if rec is not None and ev["type"] in ("task.submitted", "task.running", "task.done"):
            rec.setdefault(ev["type"], ev["ts"])
    start = [r["task.running"] - r["task.submitted"] for r in ts.values() if len(r) == 3]
    done = [r["task.done"] - r["task.submitted"] for r in ts.values() if len(r) == 3]
    return {"tasks": n, "gap_s": gap, "submit_to_start_ms": summary_ms(start),
            "submit_to_done_ms": summary_ms(done), "client_round_trip_ms": summary_ms(round_trips)}


def _warm(dep: Deployment) -> None:
    """One task through every stage first (imports, sockets, the workers' ready): not measured."""
    tid = dep.client.submit("warm-0", MODULE, KIND, {"prompt": "warm"})["task"]["id"]
    deadline = time.monotonic() + 30
    while dep.client.get(tid, history=False)["state"] != "DONE":
        if time.monotonic() > deadline:
            raise RuntimeError("warm-up task did not finish within 30 s")
        time.sleep(0.05)


def _wait_done(sub, client: BrokerClient, tid: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sub.poll(200):
            ev = protocol.decode_event(sub.recv_multipart())
            if ev.get("id") == tid:
                return
        elif client.get(tid, history=False)["state"] == "DONE":   # a dropped PUB message
            return
    raise RuntimeError(f"task {tid} not DONE within {timeout:g}s")


# --- sustained throughput at depth ---------------------------------------------------------------------

def preload(client: BrokerClient, prefix: str, start: int, count: int) -> None:
    for lo in range(start, start + count, TXN_OPS):
        ops = [txn.submit({"key": f"{prefix}-{i}", "module": MODULE, "kind": KIND, "payload": {"prompt": f"q {i}"}})
               for i in range(lo, min(start + count, lo + TXN_OPS))]
        client.txn(MODULE, ops)


class Feeder(threading.Thread):
    """Keeps the broker's PENDING count near ``depth``: tops it up every 0.25 s (own client)."""

    def __init__(self, endpoint: str, depth: int, prefix: str, next_key: int):
        super().__init__(daemon=True, name="feeder")
        self.client = BrokerClient(endpoint, name="bench-feeder", timeout=30.0, retries=2)
        self.depth, self.prefix, self.next_key = depth, prefix, next_key
        self.stop_flag = threading.Event()
        self.submitted = 0
        self.seen: list[int] = []
        self.error: str | None = None

    def run(self) -> None:
        try:
            while not self.stop_flag.wait(0.25):
                pending = self.client.stats()["tasks"]["PENDING"]
                self.seen.append(pending)
                missing = self.depth - pending
                if missing > 0:
                    preload(self.client, self.prefix, self.next_key, missing)
                    self.next_key += missing
                    self.submitted += missing
        except (FanoError, BrokerUnavailable) as exc:
            self.error = str(exc)
        finally:
            self.client.close()


def depth_run(dep: Deployment, depth: int, warmup: float, window: float) -> dict:
    rpc = dep.tree.rpc().supervisor
    client = dep.client
    rpc.stopProcess("scheduler", True)
    t = time.monotonic()
    preload(client, f"d{depth}", 0, depth)
    preload_s = time.monotonic() - t
    log(f"depth {depth}: pre-loaded in {preload_s:.1f}s ({depth / preload_s:.0f} tasks/s); starting the scheduler")
    t = time.monotonic()
    rpc.startProcess("scheduler", False)
    synced_s = first_s = None
    while first_s is None:
        if time.monotonic() - t > 600:
            raise RuntimeError(f"depth {depth}: the scheduler did not assign anything within 600 s")
        try:
            st = dep.sched("stats", timeout=5.0)
        except (BrokerUnavailable, FanoError):
            time.sleep(0.05)
            continue
        if st.get("synced") and synced_s is None:
            synced_s = time.monotonic() - t
        if st.get("assigned_total", 0) > 0:
            first_s = time.monotonic() - t
        else:
            time.sleep(0.02)
    # the scheduler assigns only once synced, and the pass that saw the first assignment saw that too
    assert synced_s is not None and first_s is not None
    sched_pid = dep.pid("scheduler")
    log(f"depth {depth}: synced after {synced_s:.2f}s, first assignment after {first_s:.2f}s")
    feeder = Feeder(dep.tree.config.broker_endpoint, depth, f"d{depth}", depth)
    feeder.start()
    time.sleep(warmup)
    worker_pids = {p["name"]: p["pid"] for p in dep.tree.programs() if p["name"].startswith("backend-")}
    broker_pid = dep.pid("broker")

    def sample():
        return (time.monotonic(), client.stats(), dep.sched("stats", timeout=5.0), proc_cpu(sched_pid),
                proc_cpu(broker_pid), sum(proc_cpu(p) or 0.0 for p in worker_pids.values()))

    t0, b0, s0, c0, bc0, wc0 = sample()
    seen_from = len(feeder.seen)
    seq0 = b0["broker"]["last_event_seq"]
    time.sleep(window)
    t1, b1, s1, c1, bc1, wc1 = sample()
    feeder.stop_flag.set()
    feeder.join(timeout=60)
    elapsed = t1 - t0
    done = b1["tasks"]["DONE"] - b0["tasks"]["DONE"]
    assigned = s1["assigned_total"] - s0["assigned_total"]
    seen = feeder.seen[seen_from:] or [b0["tasks"]["PENDING"]]
    rebuild = _rebuild_seconds(dep.tree.config.log_dir / "scheduler.log")
    out = {"depth": depth, "preload_s": round(preload_s, 2), "preload_tasks_per_s": round(depth / preload_s, 1),
           "scheduler_rebuild_s": rebuild, "start_to_synced_s": round(synced_s, 3),
           "start_to_first_assign_s": round(first_s, 3), "window_s": round(elapsed, 2),
           "completed": done, "tasks_per_s": round(done / elapsed, 1), "assigned": assigned,
           "depth_min": min(seen), "depth_max": max(seen), "fed_during_run": feeder.submitted,
           "sched_cpu_us_per_assign": round((c1 - c0) / max(1, assigned) * 1e6, 1) if c0 is not None else None,
           "sched_cpu_busy": round((c1 - c0) / elapsed, 3) if c0 is not None else None,
           "broker_cpu_busy": round((bc1 - bc0) / elapsed, 3) if bc0 is not None else None,
           "workers_cpu_busy": round((wc1 - wc0) / elapsed, 3),
           "worker_gap_ms": _worker_gap(client, seq0),
           **{f"sched_{k}": v for k, v in proc_mem(sched_pid).items()},
           "map_used_mib": round(b1["broker"]["map_used"] / 2**20, 1)}
    if feeder.error:
        out["feeder_error"] = feeder.error
    return out


def _rebuild_seconds(path: Path) -> float | None:
    found = re.findall(r"rebuilt from the broker in ([0-9.]+)s", path.read_text(errors="replace")) \
        if path.exists() else []
    return float(found[-1]) if found else None


def _worker_gap(client: BrokerClient, after: int) -> dict:
    """Mean/p50 real time between a task.done and the same worker's next task.running (the hand-off)."""
    last_done: dict[str, float] = {}
    gaps = []
    worker_of: dict[int, str] = {}
    for ev in all_events(client, after):
        if ev["type"] == "task.running":
            w = ev["worker"]   # a task.running event always names its worker
            worker_of[ev["id"]] = w
            if w in last_done:
                gaps.append(ev["ts"] - last_done.pop(w))
        elif ev["type"] == "task.done" and ev["id"] in worker_of:
            last_done[worker_of.pop(ev["id"])] = ev["ts"]
    return summary_ms(gaps)


# --- driver --------------------------------------------------------------------------------------------

def render_config(accounts: int, seed: int):
    return lambda root: CONFIG_HEAD.format(root=root) + "".join(
        ACCOUNT.format(i=i, seed=seed + i) for i in range(accounts))


def run(args) -> dict:
    base = Path(tempfile.mkdtemp(prefix="fs", dir="/tmp"))   # short: ipc:// paths must fit ~100 bytes
    report: dict[str, Any] = {"params": {"accounts": args.accounts, "idle": args.idle, "idle_gap_s": args.idle_gap,
                         "depths": args.depths, "warmup_s": args.warmup, "window_s": args.window,
                         "seed": args.seed, "log_level": args.log_level, "core": args.core},
              "machine": machine(), "idle": None, "depths": [], "core": None, "problems": []}
    t_all = time.monotonic()
    try:
        if args.core:
            from ops.bench_core import core_cost
            report["core"] = core_cost(args.core, args.accounts)
            log(f"core: {json.dumps(report['core'])}")
        if args.idle:
            dep = Deployment(base, "i", render_config(args.accounts, args.seed), log_level=args.log_level)
            try:
                dep.start()
                log(f"idle latency: {args.idle} tasks one at a time")
                report["idle"] = idle_latency(dep, args.idle, args.idle_gap)
                log(f"idle: {json.dumps(report['idle'])}")
            finally:
                report["problems"] += dep.close()
        for depth in args.depths:
            dep = Deployment(base, f"d{len(report['depths'])}", render_config(args.accounts, args.seed),
                             log_level=args.log_level)
            try:
                dep.start()
                report["depths"].append(depth_run(dep, depth, args.warmup, args.window))
                log(f"depth {depth}: {json.dumps(report['depths'][-1])}")
            finally:
                report["problems"] += dep.close()
    finally:
        if args.keep:
            report["kept"] = str(base)
        else:
            shutil.rmtree(base, ignore_errors=True)
    report["elapsed_s"] = round(time.monotonic() - t_all, 1)
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="ops/bench-scheduler", description=__doc__.split("\n\n")[0])
    p.add_argument("--accounts", type=int, default=4, help="zero-latency sim accounts (one worker each)")
    p.add_argument("--idle", type=int, default=200, help="tasks for the idle-latency phase (0: skip)")
    p.add_argument("--idle-gap", type=float, default=0.05, help="seconds between one DONE and the next submit")
    p.add_argument("--depths", default="1000,100000",
                   help="comma-separated queue depths ('' to skip); the full run is 1000,100000,1000000")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds after the first assignment before measuring")
    p.add_argument("--window", type=float, default=20.0, help="measurement window per depth, seconds")
    p.add_argument("--core", type=int, default=20_000, help="tasks through the in-process core (0: skip)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--log-level", default="INFO", help="FANO_LOG_LEVEL of the programs (INFO as deployed)")
    p.add_argument("--keep", action="store_true", help="keep the temporary deployments (logs, databases)")
    args = p.parse_args(argv)
    args.depths = [int(x) for x in args.depths.split(",") if x.strip()]
    report = run(args)
    print(json.dumps(report, indent=2))
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
