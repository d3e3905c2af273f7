"""The floor under Fano's cost per task on this machine: what one durable commit, one process hop and one
message end cost here, hot and after an idle gap, and the bounds they put on issue 15's targets.

    ops/bench-floor [--samples 300] [--gap 0.02] [--dir /tmp]

Every figure is a property of the machine and of the parts Fano is built from (LMDB with full
durability, ZeroMQ over ``ipc://``, msgpack, CPython), measured with none of Fano's own logic:

* ``commit``: one write transaction of one 300-byte record (a task row's size) on an LMDB environment
  opened with the broker's flags (``sync``, ``metasync``; :func:`services.broker.schema.open_env`), in a
  fresh directory under ``--dir`` (the disk the broker's data lives on). ``hot``: back to back;
  ``idle``: each after ``--gap`` seconds asleep (the gap ``ops/bench-huey`` leaves between idle tasks).
  ``cpu_us`` is this process's CPU per hot commit. ``fdatasync`` is a 4 KiB write and one ``fdatasync``
  of a plain file beside it, for reference: an LMDB commit flushes twice (the pages, then the meta page).
* ``hop``: a second process answers requests over ``ipc://`` with the project's own plumbing
  (:mod:`shared.sockets` and :mod:`shared.protocol`: a ROUTER that decodes each request and encodes a
  reply, a DEALER that encodes and decodes); ``round_trip`` hot and idle, ``one_way`` half of it.
* ``message_end_cpu_us``: the CPU (both processes, every thread: ZeroMQ's I/O threads included) of a
  burst of hot round trips divided by their message ends — each round trip is two messages, each sent
  by one process and received by the other, so four ends: what one message costs each process that
  sends or receives it. ``…_pipelined``: the same with ``WINDOW`` requests in flight, as under a drain,
  where one wake-up serves many messages; the floor takes the smaller.

``floor`` combines them with the counts of Fano's path per task, always on the side that makes the
bound lower (docs/architecture.md § The cost of a task):

* ``idle_submit_to_start_ms``: one idle commit (the submit's: the measured interval starts where that
  commit starts), two idle one-way hops (broker → scheduler ``task.submitted``, scheduler → worker
  ``assign``: both processes asleep since the last task) and one hot one (worker → broker ``lease``: the
  broker committed a moment before);
* ``cpu_us_per_task``: ``MESSAGES_PER_TASK`` messages × 2 ends at the pipelined cost, and
  ``COMMITS_PER_TASK`` commits shared by ``--accounts`` workers (the most one batch can merge: one
  request from each); ``drain_tasks_per_s``: every usable core busy at that CPU per task;
* ``scheduler_cpu_us_per_assign``: ``SCHEDULER_ENDS_PER_TASK`` message ends at the pipelined cost (a
  saturated scheduler, whose every wake-up finds many messages), and ``…_one_at_a_time`` at the cost of
  one message per wake-up (a scheduler with spare time: in a drain of ``ops/bench-huey`` it is busy a
  quarter of the time), before any placement work.

Each leaves out all of Fano's own work (the broker's handlers, the scheduler's placement, the worker's
provider call), so each is a bound nothing built of these parts on this machine beats. Prints JSON on
stdout.
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

import zmq

from ops.bench_scheduler import pct, proc_cpu
from shared import protocol, sockets

ROOT = Path(__file__).resolve().parent.parent

# the path of one task from its submit to its completion (docs/architecture.md § The cost of a task)
HOPS_TO_START = 3             # broker → scheduler (task.submitted), scheduler → worker (assign), worker → broker
MESSAGES_PER_TASK = 10        # lease, turn_begin, complete and their replies; task.running and task.done
#                               events to the scheduler; the worker's ready {finishing}; the assign
COMMITS_PER_TASK = 3          # lease, turn_begin, complete (submits commit in batches: a share only)
SCHEDULER_ENDS_PER_TASK = 4   # receives task.running, task.done and ready {finishing}; sends assign
RECORD = b"r" * 300
WINDOW = 64                   # requests in flight in the pipelined burst
ECHO_IDLE_MS = 10_000         # either side waits this long for the other before giving up


def _cpu() -> float:
    """This process's CPU seconds, every thread (getrusage: finer than /proc's clock ticks)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peer_cpu(pid: int) -> float:
    cpu = proc_cpu(pid)
    if cpu is None:
        raise RuntimeError(f"the answering process (pid {pid}) is gone")
    return cpu


def _ms(values: list[float]) -> dict:
    return {"p50": pct(values, 0.5), "p90": pct(values, 0.9), "n": len(values)}


def _timed(step, samples: int, gap: float) -> list[float]:
    out = []
    for _ in range(samples):
        if gap:
            time.sleep(gap)
        t = time.perf_counter()
        step()
        out.append(time.perf_counter() - t)
    return out


def measure_commit(where: Path, samples: int, gap: float) -> dict:
    from services.broker.schema import open_env
    tmp = Path(tempfile.mkdtemp(prefix="bf", dir=where))
    try:
        storage = open_env(tmp / "env", 64 * 2**20)
        env, counter = storage.env, iter(range(10**9))

        def commit() -> None:
            with env.begin(write=True) as txn:
                txn.put(b"k%d" % next(counter), RECORD)

        _timed(commit, 20, 0)   # warm: the first pages allocated
        cpu0 = _cpu()
        hot = _timed(commit, samples, 0)
        cpu = (_cpu() - cpu0) / samples
        idle = _timed(commit, samples, gap)
        storage.close()
        fd = os.open(tmp / "plain", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            def flush() -> None:
                os.pwrite(fd, RECORD * 13, 0)
                os.fdatasync(fd)
            plain_hot, plain_idle = _timed(flush, samples, 0), _timed(flush, samples, gap)
        finally:
            os.close(fd)
        return {"hot_ms": _ms(hot), "idle_ms": _ms(idle), "cpu_us": round(cpu * 1e6, 1),
                "fdatasync_hot_ms": _ms(plain_hot), "fdatasync_idle_ms": _ms(plain_idle)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def echo_side(endpoint: str) -> None:
    """The answering process: a ROUTER decoding each request and answering it, until a ``stop``."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sockets.configure_socket(sock, "router")
    sockets.bind(sock, endpoint)
    print("ready", flush=True)
    while True:
        if not sock.poll(ECHO_IDLE_MS):
            break   # its parent is gone (killed before it could say stop): never outlive it for long
        frames, _ = sockets.recv_bounded(sock)
        req = protocol.decode_request(frames[1:])
        sockets.send_nowait(sock, [frames[0], *protocol.encode_reply(protocol.Reply(req.cid, True, {"ok": 1}))])
        if req.cmd == "stats":
            break
    sock.close(linger=0)
    ctx.term()


def _end_cpu(peer: int, burst, ends: int) -> float:
    """CPU seconds of this process and ``peer`` per message end over ``burst()``."""
    own0, peer0 = _cpu(), _peer_cpu(peer)
    burst()
    return ((_cpu() - own0) + (_peer_cpu(peer) - peer0)) / ends


def measure_hop(where: Path, samples: int, gap: float, burst: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bf", dir=where))
    endpoint = f"ipc://{tmp}/echo.sock"
    child = subprocess.Popen([sys.executable, "-m", "ops.bench_floor", "--echo", endpoint], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    try:
        if child.stdout is None or child.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the answering process did not start (exit code {child.poll()})")
        sockets.configure_socket(sock, "dealer", identity="floor")
        sockets.connect(sock, endpoint)

        def request(cmd: str = "ping") -> list[bytes]:
            return protocol.encode_request(protocol.Request(cmd, protocol.new_id(), {}, None))

        def answer() -> None:
            if not sock.poll(ECHO_IDLE_MS):
                raise RuntimeError(f"the answering process (pid {child.pid}) did not answer within "
                                   f"{ECHO_IDLE_MS / 1000:g} s")
            frames, _ = sockets.recv_bounded(sock)
            protocol.decode_reply(frames)

        def round_trip(cmd: str = "ping") -> None:
            sockets.send_nowait(sock, request(cmd))
            answer()

        def pipelined() -> None:   # WINDOW requests in flight: each wake-up and poll serves many messages
            for _ in range(WINDOW):
                sockets.send_nowait(sock, request())
            for _ in range(WINDOW):
                answer()

        _timed(round_trip, 50, 0)
        end_cpu = _end_cpu(child.pid, lambda: _timed(round_trip, burst, 0), 4 * burst)
        end_cpu_pipelined = _end_cpu(child.pid, lambda: _timed(pipelined, max(1, burst // WINDOW), 0),
                                     4 * WINDOW * max(1, burst // WINDOW))
        hot = _timed(round_trip, samples, 0)
        idle = _timed(round_trip, samples, gap)
        round_trip("stats")
        child.wait(10)
        return {"round_trip_hot_ms": _ms(hot), "round_trip_idle_ms": _ms(idle),
                "one_way_hot_ms": round(_ms(hot)["p50"] / 2, 3), "one_way_idle_ms": round(_ms(idle)["p50"] / 2, 3),
                "message_end_cpu_us": round(end_cpu * 1e6, 1),
                "message_end_cpu_us_pipelined": round(end_cpu_pipelined * 1e6, 1), "burst": burst}
    finally:
        sock.close(linger=0)
        ctx.term()
        if child.poll() is None:
            child.kill()
            child.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def floor(commit: dict, hop: dict, accounts: int) -> dict:
    end = min(hop["message_end_cpu_us"], hop["message_end_cpu_us_pipelined"])
    cpu_task = MESSAGES_PER_TASK * 2 * end + COMMITS_PER_TASK * commit["cpu_us"] / accounts
    cores = len(os.sched_getaffinity(0))
    start = commit["idle_ms"]["p50"] + (HOPS_TO_START - 1) * hop["one_way_idle_ms"] + hop["one_way_hot_ms"]
    return {"idle_submit_to_start_ms": round(start, 3),
            "cpu_us_per_task": round(cpu_task, 1), "usable_cpus": cores,
            "drain_tasks_per_s": round(cores * 1e6 / cpu_task, 1),
            "scheduler_cpu_us_per_assign": round(SCHEDULER_ENDS_PER_TASK * end, 1),
            "scheduler_cpu_us_per_assign_one_at_a_time": round(SCHEDULER_ENDS_PER_TASK * hop["message_end_cpu_us"], 1),
            "counts": {"hops_to_start": HOPS_TO_START, "messages_per_task": MESSAGES_PER_TASK,
                       "commits_per_task": COMMITS_PER_TASK, "scheduler_ends_per_task": SCHEDULER_ENDS_PER_TASK,
                       "accounts": accounts}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ops.bench_floor", description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=300, help="timed samples per figure (hot and idle each)")
    p.add_argument("--gap", type=float, default=0.02, help="seconds asleep before each idle sample")
    p.add_argument("--burst", type=int, default=5000, help="hot round trips whose CPU is counted")
    p.add_argument("--accounts", type=int, default=4,
                   help="workers whose commits one batch may share (ops/bench-huey's --accounts)")
    p.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()),
                   help="where the commit's environment is made (the broker's disk)")
    p.add_argument("--echo", metavar="ENDPOINT", help=argparse.SUPPRESS)   # the answering process
    args = p.parse_args(argv)
    if args.echo:
        echo_side(args.echo)
        return 0
    if args.samples < 1 or args.burst < 1 or args.accounts < 1 or args.gap < 0:
        p.error("--samples, --burst and --accounts must be at least 1, --gap not negative")
    from ops.bench_broker import machine
    commit = measure_commit(args.dir, args.samples, args.gap)
    hop = measure_hop(args.dir, args.samples, args.gap, args.burst)
    out: dict[str, Any] = {"params": {"samples": args.samples, "gap_s": args.gap, "burst": args.burst,
                                      "accounts": args.accounts, "dir": str(args.dir)},
                           "machine": machine(), "commit": commit, "hop": hop,
                           "floor": floor(commit, hop, args.accounts)}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
