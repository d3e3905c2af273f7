"""Fano's whole path beside huey on SQLite, measured alternately in one run.

    ops/bench-huey [--rounds 2] [--tasks 5000] [--idle 200] [--accounts 4]

**huey** (installed by ``ops/bench-huey`` into its own virtualenv, ``.venv-huey``; not a dependency of
Fano) runs in a child process on that virtualenv's Python: a ``SqliteHuey`` with ``fsync=True``
(``pragma synchronous=FULL``: every enqueue and every dequeue is a durable commit, as every Fano
transaction is), one thread worker.

* drain: ``--tasks`` no-op tasks enqueued, then the consumer started; tasks/s from its start to the last
  task's completion (huey's ``complete`` signal).
* idle: ``--idle`` tasks enqueued one at a time, each after the previous completed; ``submit_to_start``
  is enqueue → the task body starting, ``submit_to_done`` enqueue → the ``complete`` signal. The worker
  polls the database every millisecond (``initial_delay = max_delay = 0.001``, no backoff; huey's
  default starts at 0.1 s and backs off to 10 s, which would put its idle latency at tens of
  milliseconds): the fastest huey can notice a task. The producer runs in the consumer's process, so
  huey pays no process hop between them.

**Fano** runs the deployment of ``ops/bench-scheduler`` (:mod:`ops.bench_scheduler`: broker, scheduler
and ``--accounts`` instant sim accounts under supervisord, one worker each):

* idle: :func:`ops.bench_scheduler.idle_latency` (the broker's event timestamps: submit →
  ``task.running`` is the worker starting the task, → ``task.done``).
* drain: the scheduler stopped, ``--tasks`` tasks submitted (transactions of 500), the scheduler started;
  tasks/s from its first assignment until all are DONE, and the scheduler's CPU (utime + stime) over that
  time divided by its assignments (``sched_cpu_us_per_assign``). ``cpu_us_per_task``: each program's CPU
  over the drain (supervisord's too: it carries the programs' log lines) divided by the tasks, and their
  sum; huey's ``cpu_us_per_task`` is its process's CPU over its drain, for the same comparison.

Each round runs huey, then Fano; the summary gives each figure's range over the rounds and the ratio of
Fano's drain to huey's (the target: ≥ 2). Prints JSON on stdout, progress on stderr.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HUEY_VENV = ROOT / ".venv-huey"


def log(msg: str) -> None:
    print(f"bench-huey: {msg}", file=sys.stderr, flush=True)


def _ms(values: list[float]) -> dict:
    values = sorted(values)
    if not values:
        return {"p50": None, "p99": None, "n": 0}
    at = lambda q: round(values[min(len(values) - 1, int(round(q * (len(values) - 1))))] * 1000, 3)  # noqa: E731
    return {"p50": at(0.5), "p99": at(0.99), "n": len(values)}


# --- the huey side (runs on .venv-huey's Python: standard library and huey only) ------------------------

def _own_cpu() -> float:
    """This process's CPU seconds (user + system, every thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def huey_side(tasks: int, idle: int) -> dict:
    import importlib
    import threading

    huey_mod = importlib.import_module("huey")
    signals = importlib.import_module("huey.signals")
    tmp = tempfile.mkdtemp(prefix="hb", dir="/tmp")
    try:
        huey = huey_mod.SqliteHuey("bench", filename=os.path.join(tmp, "huey.db"), fsync=True)
        done = threading.Event()
        state: dict[str, Any] = {"count": 0, "want": tasks, "last": 0.0, "started": 0.0}

        @huey.task()
        def noop():
            return None

        @huey.task()
        def stamp():
            state["started"] = time.perf_counter()

        @huey.signal(signals.SIGNAL_COMPLETE)
        def completed(signal, task, *args, **kwargs):
            state["count"] += 1
            state["last"] = time.perf_counter()
            if state["count"] >= state["want"]:
                done.set()

        for _ in range(tasks):
            noop()
        consumer = huey.create_consumer(workers=1, worker_type="thread", initial_delay=0.001, backoff=1.0,
                                        max_delay=0.001, check_worker_health=False, periodic=False)
        t0, cpu0 = time.perf_counter(), _own_cpu()
        consumer.start()   # its worker thread runs; this thread waits
        if not done.wait(600):
            raise RuntimeError(f"huey drained only {state['count']} of {tasks} tasks in 600 s")
        drain_s, cpu_s = state["last"] - t0, _own_cpu() - cpu0
        start, total = [], []
        for _ in range(idle):
            time.sleep(0.02)
            done.clear()
            state["count"], state["want"] = 0, 1
            t = time.perf_counter()
            stamp()
            if not done.wait(30):
                raise RuntimeError("an idle huey task did not complete within 30 s")
            start.append(state["started"] - t)
            total.append(state["last"] - t)
        consumer.stop(graceful=True)
        return {"drain_tasks": tasks, "drain_s": round(drain_s, 3), "tasks_per_s": round(tasks / drain_s, 1),
                "cpu_us_per_task": round(cpu_s / tasks * 1e6, 1),
                "idle_submit_to_start_ms": _ms(start), "idle_submit_to_done_ms": _ms(total)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_huey(tasks: int, idle: int) -> dict:
    python = HUEY_VENV / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"{python} is missing: run ops/bench-huey (it installs huey there)")
    out = subprocess.run([str(python), str(Path(__file__).resolve()), "--huey-side", "--tasks", str(tasks),
                          "--idle", str(idle)], capture_output=True, text=True, timeout=1200, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"the huey side failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


# --- the Fano side -----------------------------------------------------------------------------------

def run_fano(base: Path, accounts: int, tasks: int, idle: int, seed: int) -> tuple[dict, list[str]]:
    from ops import bench_scheduler as B

    dep = B.Deployment(base, "h", B.render_config(accounts, seed))
    try:
        dep.start()
        out: dict[str, Any] = {}
        lat = B.idle_latency(dep, idle, 0.02)
        out["idle_submit_to_start_ms"] = {k: lat["submit_to_start_ms"][k] for k in ("p50", "p99", "n")}
        out["idle_submit_to_done_ms"] = {k: lat["submit_to_done_ms"][k] for k in ("p50", "p99", "n")}
        out.update(_fano_drain(dep, tasks))
        return out, dep.close()
    except BaseException:
        dep.close()
        raise


def _fano_drain(dep, tasks: int) -> dict:
    from ops import bench_scheduler as B

    rpc = dep.tree.rpc().supervisor
    client = dep.client
    rpc.stopProcess("scheduler", True)
    done0 = client.stats()["tasks"]["DONE"]
    B.preload(client, "drain", 0, tasks)
    others = _tree_pids(dep)   # every program but the stopped scheduler, and supervisord
    cpu0 = {name: B.proc_cpu(pid) for name, pid in others.items()}
    rpc.startProcess("scheduler", False)
    pid = dep.pid("scheduler")
    while True:   # its first assignment: rebuilt and dispatching
        try:
            st = dep.sched("stats", timeout=5.0)
        except Exception:   # not listening yet
            time.sleep(0.005)
            continue
        if st.get("assigned_total", 0) > 0:
            break
        time.sleep(0.005)
    t0, c0, a0 = time.perf_counter(), B.proc_cpu(pid), st["assigned_total"]
    deadline = t0 + 600
    while client.stats()["tasks"]["DONE"] - done0 < tasks:
        if time.perf_counter() > deadline:
            raise RuntimeError("Fano did not drain the tasks within 600 s")
        time.sleep(0.05)   # the broker answers stats between batches: asking too often slows it
    t1, c1 = time.perf_counter(), B.proc_cpu(pid)
    cpu1 = {name: B.proc_cpu(p) for name, p in others.items()}
    assigned = dep.sched("stats", timeout=5.0)["assigned_total"] - a0
    per_task = {}
    for name, before in cpu0.items():
        after = cpu1.get(name)
        if before is not None and after is not None:
            per_task[name] = round((after - before) / tasks * 1e6)
    if c0 is not None and c1 is not None:   # from its first assignment (its start and rebuild aside)
        per_task["scheduler"] = round((c1 - c0) / tasks * 1e6)
    return {"drain_tasks": tasks, "drain_s": round(t1 - t0, 3), "tasks_per_s": round(tasks / (t1 - t0), 1),
            "sched_cpu_us_per_assign": round((c1 - c0) / max(1, assigned) * 1e6, 1)
            if c0 is not None and c1 is not None else None,
            "cpu_us_per_task": per_task, "cpu_us_per_task_total": sum(per_task.values())}


def _tree_pids(dep) -> dict[str, int]:
    """Program name -> pid of every running program of the deployment, and supervisord's."""
    pids = {p["name"]: p["pid"] for p in dep.tree.programs() if p["pid"]}
    if dep.tree.pid is not None:
        pids["supervisord"] = dep.tree.pid
    return pids


def _range(rounds: list[dict], path: tuple[str, ...]) -> list | None:
    vals = []
    for r in rounds:
        v: Any = r
        for k in path:
            v = v.get(k) if isinstance(v, dict) else None
        if v is not None:
            vals.append(v)
    return [min(vals), max(vals)] if vals else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="ops/bench-huey", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds (huey, then Fano, each round)")
    p.add_argument("--tasks", type=int, default=5000, help="tasks drained per round")
    p.add_argument("--idle", type=int, default=200, help="tasks of the idle-latency phase per round")
    p.add_argument("--accounts", type=int, default=4, help="instant sim accounts of the Fano deployment")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--huey-side", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.huey_side:
        print(json.dumps(huey_side(args.tasks, args.idle)))
        return 0
    from ops.bench_broker import machine

    base = Path(tempfile.mkdtemp(prefix="fh", dir="/tmp"))   # short: ipc:// paths must fit ~100 bytes
    report: dict[str, Any] = {"params": vars(args) | {"huey_side": None}, "machine": machine(),
                              "huey": [], "fano": [], "problems": []}
    report["params"].pop("huey_side")
    try:
        for i in range(args.rounds):
            log(f"round {i + 1}: huey")
            report["huey"].append(run_huey(args.tasks, args.idle))
            log(f"round {i + 1}: huey {json.dumps(report['huey'][-1])}")
            log(f"round {i + 1}: Fano")
            fano, problems = run_fano(base, args.accounts, args.tasks, args.idle, args.seed)
            report["fano"].append(fano)
            report["problems"] += problems
            log(f"round {i + 1}: Fano {json.dumps(fano)}")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    h, f = report["huey"], report["fano"]
    report["summary"] = {
        "huey_tasks_per_s": _range(h, ("tasks_per_s",)),
        "fano_tasks_per_s": _range(f, ("tasks_per_s",)),
        "fano_over_huey_drain": [round(b["tasks_per_s"] / a["tasks_per_s"], 2) for a, b in zip(h, f, strict=False)],
        "huey_idle_submit_to_start_p50_ms": _range(h, ("idle_submit_to_start_ms", "p50")),
        "fano_idle_submit_to_start_p50_ms": _range(f, ("idle_submit_to_start_ms", "p50")),
        "huey_idle_submit_to_done_p50_ms": _range(h, ("idle_submit_to_done_ms", "p50")),
        "fano_idle_submit_to_done_p50_ms": _range(f, ("idle_submit_to_done_ms", "p50")),
        "fano_sched_cpu_us_per_assign": _range(f, ("sched_cpu_us_per_assign",)),
        "huey_cpu_us_per_task": _range(h, ("cpu_us_per_task",)),
        "fano_cpu_us_per_task": _range(f, ("cpu_us_per_task_total",)),
    }
    print(json.dumps(report, indent=2))
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    if "--huey-side" not in sys.argv:
        sys.path.insert(0, str(ROOT))
    sys.exit(main())
