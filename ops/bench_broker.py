"""Broker benchmark: durable task cycles through a real broker process, with N concurrent client processes.

    python -m ops.bench_broker [--clients 1,2,4,8] [--cycles 1000 | --seconds 5] [--drain K]
                               [--no-quota] [--profile DIR] [--max-batch 256] [--curve]

Cycle mode (default): each client process repeats submit -> lease -> complete (three durable,
fsync'd round trips) ``--cycles`` times or for ``--seconds``. Drain mode (``--drain K``): K tasks are
submitted first (in module transactions of 500), then the N clients lease + complete until the queue
is empty. Each N gets a fresh broker in a fresh temporary directory (same database size for every N);
everything is stopped by pid and deleted at the end.

Prints JSON: per N the durable cycles (or drained tasks) per second, requests per second, p50/p99/mean
latency in ms per call, the broker's mean group-commit batch size during the run, the broker's CPU
use (seconds, fraction of one core, microseconds per request; from /proc), the client processes' CPU
(fraction of one core, microseconds per request), plus machine info. ``--curve`` puts the broker on
``tcp://127.0.0.1`` with CURVE (keys made in the temporary directory, every client with its own key as in
docs/security.md) instead of ``ipc://``: the cost of encryption and the per-message key lookup.
With ``--profile DIR`` the broker runs under cProfile (slower: compare profiles with each other, not
with the plain numbers) and the JSON lists the hottest functions; the .prof files stay in DIR.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from shared import txn  # noqa: E402
from shared.client import BrokerClient  # noqa: E402
from shared.errors import BrokerUnavailable  # noqa: E402

ACCOUNT = "bench"
CALLS = ("submit", "lease", "complete")


# --- the worker process -------------------------------------------------------------------------------------

def _keys(name: str, endpoint: str):
    """The client's CURVE keys from the one config loader ($FANO_CONFIG, $FANO_KEYS_DIR), None on ipc://."""
    from shared.config import load_config
    return load_config().client_keys(name, endpoint)


def worker(args) -> int:
    client = BrokerClient(args.endpoint, name=args.name, timeout=30.0, retries=2, keys=_keys(args.name, args.endpoint))
    client.ping()  # connected before the clock starts
    lat: dict[str, list[Any]] = {c: [] for c in CALLS}
    cycles = requests = empty = 0
    while time.time() < args.start_at:
        time.sleep(min(0.005, max(0.0, args.start_at - time.time())))
    t0, cpu0 = time.monotonic(), time.process_time()
    stop_at = t0 + args.seconds if args.seconds else None
    i = 0
    while True:
        if args.mode == "cycle":
            if (stop_at and time.monotonic() >= stop_at) or (not stop_at and cycles >= args.cycles):
                break
            t = time.perf_counter()
            client.submit(f"{args.name}-{i}", "bench", "bench", {"i": i})
            lat["submit"].append(time.perf_counter() - t)
            requests += 1
            i += 1
        t = time.perf_counter()
        out = client.lease(args.name, ACCOUNT, modes=["standard"], ttl=60.0)
        lat["lease"].append(time.perf_counter() - t)
        requests += 1
        if out["task"] is None:
            if args.mode == "drain":
                break
            empty += 1  # another client took the task we submitted; ours is still queued for someone
            continue
        t = time.perf_counter()
        client.complete(out["task"]["id"], out["epoch"], {"ok": True})
        lat["complete"].append(time.perf_counter() - t)
        requests += 1
        cycles += 1
    t1, cpu1 = time.monotonic(), time.process_time()
    client.close()
    Path(args.out).write_text(json.dumps({"name": args.name, "t0": t0, "t1": t1, "cycles": cycles,
                                          "requests": requests, "empty_leases": empty, "lat": lat,
                                          "cpu_s": cpu1 - cpu0}))
    return 0


# --- the driver ---------------------------------------------------------------------------------------------

def _config(root: Path, quota: bool, max_batch: int) -> Path:
    lines = ["[paths]", f'run_dir = "{root}/run"', f'data_dir = "{root}/data"', f'log_dir = "{root}/log"',
             "[broker]", f"max_batch = {max_batch}"]
    if quota:
        lines += [f'[quotas."{ACCOUNT}".standard]', 'windows = ["100000000/day@00:00 UTC"]']
    path = root / "fano.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    def __init__(self, root: Path, config: Path, profile: Path | None, curve: bool = False, clients: int = 0):
        self.endpoint = f"ipc://{root}/run/broker.sock"
        self.env = dict(os.environ, FANO_CONFIG=str(config))
        if curve:
            from shared import keys as K
            from shared.roles import OPERATOR_ROLE
            self.endpoint = f"tcp://127.0.0.1:{_free_port()}"
            self.env.update(FANO_BROKER=self.endpoint, FANO_EVENTS=f"tcp://127.0.0.1:{_free_port()}",
                            FANO_KEYS_DIR=str(root / "keys"))
            names = ["bench-main", "bench-probe", *(f"w{i}" for i in range(clients))]
            K.init(root / "keys", {name: OPERATOR_ROLE for name in names})
        self.log = root / "broker.log"
        cmd = [sys.executable]
        if profile:
            cmd += ["-m", "cProfile", "-o", str(profile)]
        cmd += ["-m", "services", "broker", "--config", str(config)]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                         env=dict(self.env, FANO_LOG_LEVEL="WARNING"))
        probe = self.client("bench-probe", timeout=0.3, retries=1)
        deadline = time.monotonic() + 20
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"broker exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
                try:
                    probe.ping()
                    break
                except BrokerUnavailable:
                    if time.monotonic() > deadline:
                        raise RuntimeError("broker did not answer within 20 s") from None
        finally:
            probe.close()

    def client(self, name: str, **kw: Any) -> BrokerClient:
        saved = dict(os.environ)
        os.environ.update(self.env)   # the config loader reads the endpoint and keys overrides from it
        try:
            return BrokerClient(self.endpoint, name=name, keys=_keys(name, self.endpoint), **kw)
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def cpu_seconds(self) -> float | None:
        """user + system CPU of the broker process so far (Linux /proc), or None."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # clean exit: cProfile writes its file
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    idx = min(len(values) - 1, max(0, int(round(q * (len(values) - 1)))))
    return round(values[idx] * 1000, 3)


def _presubmit(client: BrokerClient, k: int) -> None:
    for start in range(0, k, txn.MAX_OPS):
        ops = [txn.submit({"key": f"drain-{i}", "module": "bench", "kind": "bench", "payload": {"i": i}})
               for i in range(start, min(k, start + txn.MAX_OPS))]
        client.txn("bench", ops)


def _profile_top(path: Path, n: int = 20) -> list[dict]:
    stats = pstats.Stats(str(path))
    rows: list[dict[str, Any]] = []
    # Stats.stats is pstats' documented table, which typeshed leaves out
    table: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = vars(stats)["stats"]
    for (file, line, func), (_cc, nc, tt, ct, _) in table.items():
        rows.append({"function": f"{Path(file).name}:{line}({func})" if line else func, "ncalls": nc,
                     "tottime_s": round(tt, 4), "cumtime_s": round(ct, 4)})
    rows.sort(key=lambda r: -r["tottime_s"])
    return rows[:n]


def run_one(n: int, args, base: Path) -> dict:
    root = Path(tempfile.mkdtemp(prefix=f"n{n}", dir=base))
    profile = Path(args.profile) / f"broker-n{n}{'-drain' if args.drain else ''}.prof" if args.profile else None
    broker = Broker(root, _config(root, not args.no_quota, args.max_batch), profile, args.curve, n)
    procs = []
    try:
        with broker.client("bench-main", timeout=30.0, retries=2) as c:
            if args.drain:
                _presubmit(c, args.drain)
            before = c.stats()["broker"]
            cpu_before = broker.cpu_seconds()
            start_at = time.time() + 1.0 + 0.15 * n  # every worker connected and waiting
            for i in range(n):
                out_path = root / f"w{i}.json"
                cmd = [sys.executable, "-m", "ops.bench_broker", "--worker", "--endpoint", broker.endpoint,
                       "--name", f"w{i}", "--mode", "drain" if args.drain else "cycle", "--start-at", str(start_at),
                       "--cycles", str(args.cycles), "--seconds", str(args.seconds or 0), "--out", str(out_path)]
                procs.append((subprocess.Popen(cmd, cwd=REPO, env=broker.env), out_path))
            for proc, _ in procs:
                if proc.wait(timeout=args.timeout) != 0:
                    raise RuntimeError(f"bench worker exited with {proc.returncode}")
            after = c.stats()
            cpu_after = broker.cpu_seconds()
        results = [json.loads(out.read_text()) for _, out in procs]
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        broker.stop()
        shutil.rmtree(root, ignore_errors=True)
    elapsed = max(r["t1"] for r in results) - min(r["t0"] for r in results)
    cycles = sum(r["cycles"] for r in results)
    requests = sum(r["requests"] for r in results)
    b = after["broker"]
    d_req, d_batches = b["requests"] - before["requests"], b["batches"] - before["batches"]
    out = {"clients": n, "elapsed_s": round(elapsed, 3),
           ("tasks_drained" if args.drain else "cycles"): cycles,
           ("drain_per_s" if args.drain else "cycles_per_s"): round(cycles / elapsed, 1),
           "requests_per_s": round(requests / elapsed, 1),
           "latency_ms": {}, "broker_mean_batch": round(d_req / max(1, d_batches), 2),
           "broker_batches": d_batches, "empty_leases": sum(r["empty_leases"] for r in results),
           "tasks_done": after["tasks"]["DONE"]}
    if cpu_before is not None and cpu_after is not None:
        cpu = cpu_after - cpu_before
        out["broker_cpu_s"] = round(cpu, 3)
        out["broker_cpu_busy"] = round(cpu / elapsed, 3)  # 1.0 = one core saturated by the broker
        out["broker_cpu_us_per_request"] = round(cpu / max(1, d_req) * 1e6, 1)
    # the client processes' own CPU while measuring (each reads its process time): on a small machine
    # they compete with the broker for the same cores
    client_cpu = sum(r["cpu_s"] for r in results)
    out["clients_cpu_busy"] = round(client_cpu / elapsed, 3)
    out["clients_cpu_us_per_request"] = round(client_cpu / max(1, requests) * 1e6, 1)
    for call in CALLS:
        vals = [v for r in results for v in r["lat"][call]]
        if vals:
            out["latency_ms"][call] = {"p50": _pct(vals, 0.5), "p99": _pct(vals, 0.99),
                                       "mean": round(statistics.fmean(vals) * 1000, 3), "n": len(vals)}
    if profile and profile.exists():
        out["profile"] = str(profile)
        out["profile_top_tottime"] = _profile_top(profile)
    return out


def machine() -> dict:
    import lmdb
    import zmq
    return {"cpu_count": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)),
            "python": platform.python_version(), "implementation": platform.python_implementation(),
            "platform": platform.platform(), "lmdb": lmdb.version(), "py_lmdb": lmdb.__version__,
            "libzmq": zmq.zmq_version(), "pyzmq": zmq.__version__}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ops.bench_broker", description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", default="1,2,4,8", help="comma-separated client process counts")
    p.add_argument("--cycles", type=int, default=1000, help="cycles per client (cycle mode)")
    p.add_argument("--seconds", type=float, default=None, help="run each N for this long instead of --cycles")
    p.add_argument("--drain", type=int, default=0, metavar="K", help="pre-submit K tasks, measure the drain rate")
    p.add_argument("--no-quota", action="store_true", help="no quota on the bench account (no reservation cost)")
    p.add_argument("--max-batch", type=int, default=256, help="broker.max_batch")
    p.add_argument("--profile", metavar="DIR", help="run the broker under cProfile; .prof files go to DIR")
    p.add_argument("--timeout", type=float, default=600.0, help="per-N limit for the workers, seconds")
    p.add_argument("--curve", action="store_true", help="tcp://127.0.0.1 with CURVE keys instead of ipc://")
    # worker mode (internal)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--endpoint", help=argparse.SUPPRESS)
    p.add_argument("--name", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="cycle", help=argparse.SUPPRESS)
    p.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        args.seconds = args.seconds or None
        return worker(args)
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    counts = [int(x) for x in args.clients.split(",") if x.strip()]
    base = Path(tempfile.mkdtemp(prefix="fb", dir="/tmp"))  # short: ipc:// paths must fit ~100 bytes
    try:
        runs = []
        for n in counts:
            runs.append(run_one(n, args, base))
            print(f"N={n}: {json.dumps({k: v for k, v in runs[-1].items() if not k.startswith('profile_top')})}",
                  file=sys.stderr)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    report = {"mode": "drain" if args.drain else "cycle",
              "params": {"cycles": None if args.seconds else args.cycles, "seconds": args.seconds,
                         "drain": args.drain or None, "quota": not args.no_quota, "max_batch": args.max_batch,
                         "profiled": bool(args.profile)},
              "machine": machine(), "runs": runs}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
