"""Utilization benchmark: does the scheduler keep heterogeneous accounts busy, and how close is the makespan
to what the capacity allows?

    ops/bench-utilization [--conversations 24] [--turns 6] [--oneshots 24] [--deep 4] [--scale 20]
                          [--oneshot-kinds research|ask] [--variants chains,independent] [--keep]

**Deployment** (one per variant, :class:`ops.bench_scheduler.Deployment` under a real supervisord): four
sim accounts whose mean world latencies differ 10x (each request uniform in mean x (1 -/+ ``--jitter``),
default 0.1; 0 makes them fixed), no injected faults, a shared scaled clock (``FANO_CLOCK_SCALE``,
default 20, and one ``FANO_CLOCK_ORIGIN``)::

    fast   standard 20 s                               (1 s real at scale 20)
    mid-a  standard 60 s, deep 300 s, deep budget 3/24h (quota in the broker and the provider's limit)
    mid-b  standard 60 s
    slow   standard 200 s, deep 1000 s

The latencies are 20x the "1 s / 3 s / 10 s" of the issue on purpose: a worker's hand-off between two
tasks costs real time (≈50 ms, see ``worker_gap_ms`` of ops/bench-scheduler), which the scaled clock
inflates to 50 ms x scale of world time; with a 1 s world task at scale 20 the benchmark would measure
the hand-off, not the scheduling. At 1 s real per fast task the hand-off is ≈5% of it, as it would be
for a 1 s provider at scale 1. ``idle_with_work_per_request_ms_real`` shows that cost per request.
The jitter matters too: with fixed latencies every request ends at the same phase of the worker's 50 ms
poll and the hand-off is always its worst case (≈47 ms); real providers are not that regular.

**Workload** (module ``bench``, deterministic order from ``--seed``): ``--conversations`` x ``--turns``
conversation turns (kinds ``explorer.explore``/``explorer.critique``, ``requires.conversation``), turn
k+1 submitted by the driver the moment it sees turn k DONE (as a module would); ``--oneshots`` one-shot
tasks of which ``--deep`` require mode deep (no fallback). ``--oneshot-kinds research`` (the default)
gives them the kinds the research modules submit besides conversation turns, at the base priorities of
docs/research.md § Default priorities (reviews and drafts above or level with exploration, extraction and
source work below; the deep ones are syntheses and second review rounds); ``ask`` makes them all operator
asks (priority 1000, above every turn), which forces the accounts to run every one-shot before any
conversation and so costs makespan (README, "Utilization"). Variant ``chains`` is that workload; variant
``independent`` submits the same tasks at once, all as one-shots (no conversation binding, no chain), to
show raw utilization.

**Makespan**: world seconds from the first ``task.submitted`` to the last ``task.done`` (broker outbox
timestamps). **Bound**, max of:

* ``work_s``: the least time in which the accounts could process all the work if it were perfectly
  divisible: the smallest T such that the deep tasks fit on the deep accounts (within the deep budget,
  each using L_deep of that account's time) and the standard tasks fit in what is left
  (sum over accounts of (T - deep time) / L_standard >= standard tasks). Deep tasks are placed first on
  the accounts where a deep task displaces the fewest standard tasks (L_deep / L_standard), which is
  optimal for this fractional problem; T is found by bisection. It uses the mean latencies: with jitter,
  the realised work of ~100 tasks per account is within a fraction of a percent of it (with
  ``--jitter 0`` it is exact). It ignores conversation affinity and chains, so it is a lower bound but
  not always a reachable one.
* ``critical_path_s``: the longest chain run serially on the fastest account allowed: turns x the
  fastest standard latency, or the fastest deep latency for a deep task, at the low end of the jitter.

``ratio`` = makespan / bound (1.0 is perfect; the issue's target is <= 1.05).

**Busy fraction while work was available** (per account and overall): busy = the provider's
received -> served intervals in its request log (``<data_dir>/sim/<account>/requests.jsonl``,
:func:`services.backends.sim_log.read_log`). Available = busy, or some task the account could take was
waiting: a PENDING interval (``task.submitted``/``task.pending`` -> ``task.running``) of a task whose
mode the account offers, within its deep budget (until its budget-th deep lease), and whose
conversation is unbound or bound to this account (bound at its first lease). busy / available is the
fraction; ``idle_with_work_s`` = available - busy, i.e. hand-offs plus any decision that left the
account idle while it could have worked. ``tail`` describes the end of the run: after the last task
started nothing waits, and ``idle_account_s`` is the capacity that sat idle until the last DONE;
``last_task`` says which account ran the task that ended the run and when the fastest other account able
to run it was free (``alternative``): a scheduler that held the task back for it would have finished at
``alternative.end_s``.

Prints JSON (world seconds relative to the first submit unless named ``_real``); stops every process
and checks by pid; deletes the temporary directories unless ``--keep``.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import zmq

from ops.bench_broker import machine
from ops.bench_scheduler import Deployment, all_events
from services.backends import sim_answers as K
from services.backends.sim_log import read_log
from shared import protocol, sockets

MODULE = "bench"
DEEP_BUDGET = 3
ACCOUNTS = {  # name: ({mode: world latency}, deep budget per 24 h or None)
    "fast": ({"standard": 20.0}, None),
    "mid-a": ({"standard": 60.0, "deep": 300.0}, DEEP_BUDGET),
    "mid-b": ({"standard": 60.0}, None),
    "slow": ({"standard": 200.0, "deep": 1000.0}, None),
}


# One-shot kinds (standard, deep), cycled. "research": what the modules submit besides conversation turns,
# at the base priorities of docs/research.md § Default priorities (review 55, dedup 50, draft 50,
# evaluate_source 45, extract 40, consolidate 40, review_section 40, extract_findings 40,
# generate_questions 35; deep: synthesis 60, review2 55). "ask": the operator's ad-hoc questions (base
# priority 1000, above every research task).
ONESHOT_KINDS = {
    "research": ((K.EXPLORER_REVIEW1, K.EXPLORER_EXTRACT, K.RESEARCHER_EVALUATE_SOURCE, K.EXPLORER_DEDUP,
                  K.DOCUMENTER_REVIEW_SECTION, K.RESEARCHER_EXTRACT_FINDINGS, K.DOCUMENTER_DRAFT,
                  K.EXPLORER_CONSOLIDATE, K.RESEARCHER_GENERATE_QUESTIONS),
                 (K.EXPLORER_SYNTHESIS, K.EXPLORER_REVIEW2)),
    "ask": ((K.ASK,), (K.ASK,)),
}


def log(msg: str) -> None:
    print(f"bench-utilization: {msg}", file=sys.stderr, flush=True)


def render(root: Path, seed: int, jitter: float) -> str:
    out = [f'[paths]\nrun_dir = "{root}/run"\ndata_dir = "{root}/data"\nlog_dir = "{root}/var/log"\n']
    for i, (name, (lat, budget)) in enumerate(ACCOUNTS.items()):
        latency = ", ".join(f'{m} = {{ dist = "uniform", low = {round(v * (1 - jitter), 3)}, '
                            f'high = {round(v * (1 + jitter), 3)} }}' if jitter else f"{m} = {v}"
                            for m, v in lat.items())
        out.append(f'[accounts.{name}]\nbackend = "sim"\nmodes = {json.dumps(list(lat))}\nseed = {seed + i}\n'
                   f'latency = {{ {latency} }}\nsloppy_rate = 0.0\n')
        if budget:
            out.append(f'rate_limits = {{ deep = ["{budget}/24h"] }}\n[quotas.{name}.deep]\n'
                       f'windows = ["{budget}/24h"]\n')
    return "\n".join(out)


# --- the workload ----------------------------------------------------------------------------------------

def build(args, chains: bool) -> tuple[list[dict], dict[str, list[dict]]]:
    """(tasks submitted at the start, later turns per conversation)."""
    rng = random.Random(args.seed)
    initial, later = [], {}
    for c in range(args.conversations):
        conv = f"conv-{c}"
        turns = [{"key": f"{conv}#{k}", "kind": K.EXPLORER_EXPLORE if k % 2 == 0 else K.EXPLORER_CRITIQUE,
                  "payload": {"prompt": f"{conv} turn {k}", "turn": k},
                  "requires": {"conversation": conv} if chains else {}} for k in range(args.turns)]
        if chains:
            initial.append(turns[0])
            later[conv] = turns[1:]
        else:
            initial.extend(turns)
    for i in range(args.oneshots):
        deep = i < args.deep
        kinds = ONESHOT_KINDS[args.oneshot_kinds][deep]
        initial.append({"key": f"one-{i}", "kind": kinds[i % len(kinds)], "payload": {"prompt": f"question {i}"},
                        "requires": {"mode": "deep"} if deep else {}})
    rng.shuffle(initial)
    return initial, later


def drive(dep: Deployment, initial: list[dict], later: dict[str, list[dict]], timeout: float) -> dict:
    """Submit, then advance each conversation turn by turn; returns {key: task id} and failures."""
    client = dep.client
    sub = zmq.Context.instance().socket(zmq.SUB)
    sockets.configure_socket(sub, "sub")
    for typ in ("task.done", "task.parked", "task.cancelled"):
        sub.setsockopt(zmq.SUBSCRIBE, protocol.EVENT_PREFIX + typ.encode())
    sockets.connect(sub, dep.tree.config.events_endpoint)   # ipc:// (a tcp:// one would need keys)
    time.sleep(0.5)   # the subscription reaches the broker before anything happens
    ids, conv_of, outstanding, failed = {}, {}, set(), []

    def submit(spec: dict) -> None:
        tid = client.submit(spec["key"], MODULE, spec["kind"], spec["payload"], requires=spec["requires"])["task"]["id"]
        ids[spec["key"]] = tid
        outstanding.add(tid)
        conv = spec["requires"].get("conversation")
        if conv:
            conv_of[tid] = conv

    def settle(tid: int, ok: bool) -> None:
        outstanding.discard(tid)
        if not ok:
            failed.append(tid)
        conv = conv_of.get(tid)
        if ok and conv and later.get(conv):
            submit(later[conv].pop(0))

    for spec in initial:
        submit(spec)
    deadline = time.monotonic() + timeout
    try:
        while outstanding:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(outstanding)} task(s) not settled within {timeout:g}s")
            if sub.poll(500):
                ev = protocol.decode_event(sub.recv_multipart())
                if ev.get("id") in outstanding:
                    settle(ev["id"], ev["type"] == "task.done")
                continue
            for tid in list(outstanding):   # quiet: a PUB message may have been dropped
                state = client.get(tid, history=False)["state"]
                if state in ("DONE", "PARKED", "CANCELLED"):
                    settle(tid, state == "DONE")
    finally:
        sub.close(linger=0)
    return {"ids": ids, "failed": failed}


# --- the analysis ----------------------------------------------------------------------------------------

def merge(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for a, b in sorted(i for i in intervals if i[1] > i[0]):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def measure(intervals: list[tuple[float, float]], lo: float = -math.inf, hi: float = math.inf) -> float:
    return sum(max(0.0, min(b, hi) - max(a, lo)) for a, b in merge(intervals))


def work_bound(n_std: int, n_deep: int) -> float:
    """The divisible-work bound (module docstring), by bisection on T."""
    def feasible(T: float) -> bool:
        left, used = float(n_deep), {}
        deep = sorted((lat["deep"] / lat.get("standard", math.inf), name) for name, (lat, _) in ACCOUNTS.items()
                      if "deep" in lat)
        for _, name in deep:
            lat, budget = ACCOUNTS[name]
            take = min(left, T / lat["deep"], budget if budget is not None else math.inf)
            used[name], left = take * lat["deep"], left - take
        if left > 1e-9:
            return False
        return sum((T - used.get(name, 0.0)) / lat["standard"] for name, (lat, _) in ACCOUNTS.items()
                   if "standard" in lat) >= n_std - 1e-9
    lo, hi = 0.0, (n_std + n_deep) * max(max(lat.values()) for lat, _ in ACCOUNTS.values())
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if feasible(mid) else (mid, hi)
    return hi


def analyse(dep: Deployment, events: Sequence[Mapping[str, Any]], args, variant: str, drove: dict) -> dict:
    key_of = {tid: key for key, tid in drove["ids"].items()}
    tasks: dict[int, dict] = {}
    for ev in events:
        tid = ev.get("id")
        if not isinstance(tid, int) or tid not in key_of:
            continue
        t = tasks.setdefault(tid, {"waits": [], "runs": [], "requires": {}, "done": None})
        if ev["type"] in ("task.submitted", "task.pending"):
            t["waits"].append([ev["ts"], None])
            t["requires"] = ev.get("requires") or t["requires"]
        elif ev["type"] == "task.running":
            if t["waits"] and t["waits"][-1][1] is None:
                t["waits"][-1][1] = ev["ts"]
            t["runs"].append((ev["ts"], ev.get("account"), ev.get("mode")))
        elif ev["type"] == "task.done":
            t["done"] = ev["ts"]
    start = min(w[0] for t in tasks.values() for w in t["waits"])
    end = max(t["done"] or 0.0 for t in tasks.values())
    for t in tasks.values():
        for w in t["waits"]:
            w[1] = end if w[1] is None else w[1]
    # conversation binding and deep budget exhaustion, from the leases
    bound: dict[str, tuple[str, float]] = {}
    deep_leases: dict[str, list[float]] = {}
    for t in sorted(tasks.values(), key=lambda t: t["runs"][0][0] if t["runs"] else math.inf):
        conv = t["requires"].get("conversation")
        for ts, acct, mode in t["runs"]:
            if conv and conv not in bound:
                bound[conv] = (acct, ts)
            if mode == "deep":
                deep_leases.setdefault(acct, []).append(ts)
    accounts = {}
    busy_all = avail_all = 0.0
    requests: dict[str, list[dict]] = {}
    for name, (lat, budget) in ACCOUNTS.items():
        recs = read_log(dep.tree.config.data_dir / "sim" / name / "requests.jsonl")
        ends = {r["recv_seq"]: r["ts"] for r in recs if r["event"] in ("served", "failed")}
        reqs = [{"start": r["ts"], "end": ends.get(r["seq"], end), "task_id": r["task_id"], "mode": r["mode"]}
                for r in recs if r["event"] == "received"]
        requests[name] = reqs
        busy = [(r["start"], r["end"]) for r in reqs]
        exhausted = (sorted(deep_leases.get(name, []))[budget - 1:] or [math.inf])[0] if budget else math.inf
        avail = list(busy)
        for t in tasks.values():
            req = t["requires"]
            if req.get("mode", "standard") not in lat:
                continue
            conv = req.get("conversation")
            for a, b in t["waits"]:
                if req.get("mode") == "deep":
                    b = min(b, exhausted)
                if conv in bound and bound[conv][1] <= a and bound[conv][0] != name:
                    continue
                avail.append((a, b))
        busy_s, avail_s = measure(busy, start, end), measure(avail, start, end)
        busy_all, avail_all = busy_all + busy_s, avail_all + avail_s
        idle_work = avail_s - busy_s
        accounts[name] = {
            "latency": lat, "requests": len(reqs),
            "deep_requests": sum(r["mode"] == "deep" for r in reqs),
            "conversations_bound": sum(1 for acct, _ in bound.values() if acct == name),
            "busy_s": round(busy_s, 1), "available_s": round(avail_s, 1),
            "busy_fraction": round(busy_s / avail_s, 4) if avail_s else None,
            "busy_fraction_of_makespan": round(busy_s / (end - start), 4),
            "idle_with_work_s": round(idle_work, 1),
            "idle_with_work_per_request_ms_real": round(idle_work / max(1, len(reqs)) / args.scale * 1000, 1),
            "last_served_s": round(max((r["end"] for r in reqs), default=start) - start, 1)}
    # the tail: after the last start nothing waits
    last_start = max(ts for t in tasks.values() for ts, _, _ in t["runs"])
    tail_idle = sum(end - last_start - measure([(r["start"], r["end"]) for r in reqs], last_start, end)
                    for reqs in requests.values())
    last_id = max(tasks, key=lambda i: tasks[i]["done"] or 0.0)
    convs = [(c, [t for t in tasks.values() if t["requires"].get("conversation") == c]) for c in bound]
    spans = sorted(((max(t["done"] or end for t in ts) - min(t["waits"][0][0] for t in ts), c) for c, ts in convs),
                   reverse=True)
    n_deep = sum(1 for t in tasks.values() if t["requires"].get("mode") == "deep")
    work = work_bound(len(tasks) - n_deep, n_deep)
    fastest_std = min(lat["standard"] for lat, _ in ACCOUNTS.values() if "standard" in lat)
    fastest_deep = min(lat["deep"] for lat, _ in ACCOUNTS.values() if "deep" in lat)
    crit = max(args.turns * fastest_std if variant == "chains" else fastest_std, fastest_deep if n_deep else 0.0)
    crit *= 1 - args.jitter   # few tasks: their latencies need not average out, so the shortest possible
    bound_s = max(work, crit)
    makespan = end - start
    return {
        "variant": variant, "tasks": len(tasks), "deep_tasks": n_deep, "failed": len(drove["failed"]),
        "makespan_s": round(makespan, 1), "makespan_real_s": round(makespan / args.scale, 1),
        "bound": {"work_s": round(work, 1), "critical_path_s": round(crit, 1), "bound_s": round(bound_s, 1)},
        "ratio": round(makespan / bound_s, 3),
        "busy_fraction_overall": round(busy_all / avail_all, 4) if avail_all else None,
        "accounts": accounts,
        "tail": {"last_start_s": round(last_start - start, 1), "tail_s": round(end - last_start, 1),
                 "idle_account_s": round(tail_idle, 1), "last_task": last_task(tasks[last_id], requests, start, bound)},
        "conversations": None if variant != "chains" else {
            "longest_span_s": round(spans[0][0], 1) if spans else None,
            "longest_on": bound[spans[0][1]][0] if spans else None,
            "turn_resubmit_ms_real": _resubmit_gap(tasks, args.scale)},
    }


def last_task(t: dict, requests: dict, start: float, bound: dict) -> dict:
    """Where the run's last task ran, and the faster account that could have finished it first (or None)."""
    ts, acct, mode = t["runs"][-1]
    own = [r for r in requests.get(acct, []) if r["start"] >= ts]
    run_start, run_end = (own[0]["start"], own[0]["end"]) if own else (ts, t["done"])
    out = {"account": acct, "mode": mode, "requested_mode": t["requires"].get("mode", "standard"),
           "started_s": round(run_start - start, 1), "ended_s": round(run_end - start, 1), "alternative": None}
    conv = t["requires"].get("conversation")
    if conv and conv in bound:
        out["bound_to"] = bound[conv][0]
        return out
    best = None
    for name, (lat, _) in ACCOUNTS.items():
        if name == acct or mode not in lat or lat[mode] >= ACCOUNTS[acct][0][mode]:
            continue   # only a faster account could have shortened the run
        free = max([run_start] + [r["end"] for r in requests[name] if r["start"] <= run_start])
        alt = free + lat[mode]
        if best is None or alt < best[1]:
            best = (name, alt, free)
    if best is not None:
        out["alternative"] = {"account": best[0], "free_s": round(best[2] - start, 1),
                              "end_s": round(best[1] - start, 1), "gain_s": round(run_end - best[1], 1)}
    return out


def _resubmit_gap(tasks: dict, scale: float) -> float | None:
    """Mean real ms between a turn's task.done and the next turn's task.submitted (the module's reaction)."""
    by_conv: dict[str, list[dict]] = {}
    for t in tasks.values():
        if t["requires"].get("conversation"):
            by_conv.setdefault(t["requires"]["conversation"], []).append(t)
    gaps = []
    for ts in by_conv.values():
        ts.sort(key=lambda t: t["waits"][0][0])
        gaps += [b["waits"][0][0] - a["done"] for a, b in pairwise(ts) if a["done"]]
    return round(sum(gaps) / len(gaps) / scale * 1000, 1) if gaps else None


# --- driver ------------------------------------------------------------------------------------------------

def run_variant(base: Path, args, variant: str) -> dict:
    initial, later = build(args, chains=variant == "chains")
    dep = Deployment(base, variant[0], lambda root: render(root, args.seed, args.jitter), scale=args.scale,
                     log_level=args.log_level)
    problems: list[str] = []
    t0 = time.monotonic()
    try:
        dep.start()
        seq0 = dep.client.stats()["broker"]["last_event_seq"]
        drove = drive(dep, initial, later, args.timeout)
        events = all_events(dep.client, seq0)
    finally:
        problems += dep.close()
    out = analyse(dep, events, args, variant, drove)
    out["elapsed_real_s"] = round(time.monotonic() - t0, 1)
    out["problems"] = problems
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="ops/bench-utilization", description=__doc__.split("\n\n")[0])
    p.add_argument("--conversations", type=int, default=24)
    p.add_argument("--turns", type=int, default=6)
    p.add_argument("--oneshots", type=int, default=24, help="one-shot tasks (the first --deep of them deep)")
    p.add_argument("--deep", type=int, default=4)
    p.add_argument("--oneshot-kinds", choices=sorted(ONESHOT_KINDS), default="research",
                   help="research: the modules' one-shot kinds at their base priorities; ask: all ad-hoc asks")
    p.add_argument("--scale", type=float, default=20.0, help="FANO_CLOCK_SCALE: world seconds per real second")
    p.add_argument("--jitter", type=float, default=0.1, help="latencies uniform in mean x (1 -/+ jitter); 0: fixed")
    p.add_argument("--variants", default="chains,independent")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--timeout", type=float, default=900.0, help="real seconds per variant")
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--keep", action="store_true", help="keep the temporary deployments (logs, databases)")
    args = p.parse_args(argv)
    if args.deep > args.oneshots:
        p.error("--deep cannot exceed --oneshots")
    base = Path(tempfile.mkdtemp(prefix="fu", dir="/tmp"))   # short: ipc:// paths must fit ~100 bytes
    report: dict[str, Any] = {"params": {k: v for k, v in vars(args).items() if k not in ("keep",)},
              "accounts": {n: {"latency": lat, "deep_budget_24h": b} for n, (lat, b) in ACCOUNTS.items()},
              "machine": machine(), "variants": []}
    try:
        for variant in [v.strip() for v in args.variants.split(",") if v.strip()]:
            if variant not in ("chains", "independent"):
                p.error(f"unknown variant {variant!r}")
            log(f"variant {variant}: running")
            report["variants"].append(run_variant(base, args, variant))
            log(f"variant {variant}: {json.dumps(report['variants'][-1])}")
    finally:
        if args.keep:
            report["kept"] = str(base)
        else:
            shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(report, indent=2))
    return 1 if any(v["problems"] for v in report["variants"]) else 0


if __name__ == "__main__":
    sys.exit(main())
