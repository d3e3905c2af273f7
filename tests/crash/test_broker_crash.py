"""Crash tests: ``kill -9`` the real broker at random moments while client processes work through it, then
check that nothing acknowledged was lost, granted twice or applied twice (docs/architecture.md § Invariants).

The random seed is printed (and repeated in every failure message); replay a run with
``FANO_CRASH_SEED=<seed> pytest tests/crash``. ``FANO_CRASH_KEEP=1`` keeps the temporary directory
(database, journals, broker log) for inspection; its path is printed. ``FANO_CRASH_KILLS=N`` overrides
the number of kills (a longer soak).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import NoReturn

import pytest

from ops.invariants import check_client_log, inspect_snapshot, load_snapshot, read_journals
from shared import txn
from shared.client import BrokerClient
from tests.support import REPO, BrokerProcess, short_tmpdir, wait_for, write_config

pytestmark = pytest.mark.crash

ACCOUNT = "acct"
DEEP_LIMIT = 6


def crash_seed() -> int:
    env = os.environ.get("FANO_CRASH_SEED")
    seed = int(env) if env else random.SystemRandom().randrange(1 << 31)
    print(f"FANO_CRASH_SEED={seed}")
    return seed


class Harness:
    """A real broker plus client processes in one short temp dir; every process stopped by pid at teardown."""

    def __init__(self, seed: int, broker: dict | None = None, quotas: dict | None = None):
        self.seed = seed
        self.rng = random.Random(seed)
        self.root = short_tmpdir("fc")
        print(f"crash test dir: {self.root}")
        self.broker = BrokerProcess(self.root, write_config(self.root, broker, quotas))
        self.stop_file = self.root / "stop"
        self.clients: list[tuple[str, subprocess.Popen, Path]] = []
        self.kills = 0

    def fail(self, message: str) -> NoReturn:
        pytest.fail(f"[FANO_CRASH_SEED={self.seed}] {message}\n--- broker log tail ---\n{self.broker.log()}")

    def spawn(self, mode: str, name: str, *extra: str) -> Path:
        journal = self.root / f"{name}.jsonl"
        out = open(self.root / f"{name}.out", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.crash.crash_client", mode, "--endpoint", self.broker.endpoint,
             "--journal", str(journal), "--name", name, "--seed", str(self.rng.randrange(1 << 31)),
             "--stop", str(self.stop_file), *extra],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        out.close()
        self.clients.append((name, proc, journal))
        return journal

    def client_output(self, name: str) -> str:
        return (self.root / f"{name}.out").read_text(errors="replace")[-3000:]

    def check_clients(self, allow_exit: bool = False) -> None:
        for name, proc, _ in self.clients:
            rc = proc.poll()
            if rc is not None and (rc != 0 or not allow_exit):
                self.fail(f"client {name} exited with {rc}:\n{self.client_output(name)}")

    def clients_done(self) -> bool:
        return all(proc.poll() is not None for _, proc, _ in self.clients)

    def broker_proc(self) -> subprocess.Popen:
        """The broker's process (started by the harness before any chaos)."""
        assert self.broker.proc is not None, "the broker was never started"
        return self.broker.proc

    def kill_broker(self) -> None:
        rc = self.broker_proc().poll()
        if rc is not None:
            self.fail(f"broker exited by itself with {rc} (not one of our kills)")
        self.broker.kill()
        self.kills += 1

    def chaos(self, kills: int, gap=(0.05, 0.6), until_clients_done: bool = False) -> None:
        """kill -9 the broker ``kills`` times at random moments; sometimes kill it again while it starts."""
        rng = self.rng
        kills = int(os.environ.get("FANO_CRASH_KILLS") or kills)
        for _ in range(kills):
            time.sleep(rng.uniform(*gap))
            self.check_clients(allow_exit=until_clients_done)
            if until_clients_done and self.clients_done():
                break
            self.kill_broker()
            if rng.random() < 0.3:
                time.sleep(rng.uniform(0.0, 0.3))  # clients pile up retries against a dead socket
            self.broker.start(wait=rng.random() < 0.7)  # not waiting: the next kill may land in startup
        if self.broker_proc().poll() is not None:
            self.fail(f"broker exited by itself with {self.broker_proc().returncode}")
        self.broker.wait_ready()

    def stop_clients(self, timeout: float = 60.0) -> None:
        self.stop_file.touch()
        wait_for(self.clients_done, timeout, interval=0.05, what="clients to finish their last operation")
        self.check_clients(allow_exit=True)

    def client_summaries(self) -> dict:
        out = {}
        for name, _, _ in self.clients:
            lines = [ln for ln in self.client_output(name).splitlines() if ln.startswith("{")]
            out[name] = json.loads(lines[-1]) if lines else None
        return out

    def cleanup(self) -> None:
        for _, proc, _ in self.clients:
            if proc.poll() is None:
                proc.kill()  # by pid
                proc.wait(timeout=10)
        self.broker.kill()
        if os.environ.get("FANO_CRASH_KEEP"):
            print(f"kept {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def harness():
    made = []

    def factory(**kw) -> Harness:
        h = Harness(crash_seed(), **kw)
        made.append(h)
        return h

    yield factory
    for h in made:
        h.cleanup()


def _drain(h: Harness, journal: Path, timeout: float = 30.0) -> int:
    """Lease and complete every standard task that is left, journaling like the clients do."""
    done = 0
    with BrokerClient(h.broker.endpoint, name="drain", timeout=2.0, retries=5) as c, open(journal, "a") as j:
        deadline = time.monotonic() + timeout
        quiet_since = None
        while time.monotonic() < deadline:
            rid = "drain-" + os.urandom(8).hex()
            out = c.call("lease", rid=rid, worker="drain", account=ACCOUNT, modes=["standard"], ttl=30.0)
            if out["task"] is None:
                stats = c.stats()
                if stats["delayed"] == 0 and stats["tasks"]["RUNNING"] == 0:
                    # nothing for us, nothing backing off, nothing running: done once that has held for a
                    # second (a task whose backoff just ended, or a short cool-down, can make one lease come
                    # back empty; CI once saw the drain stop there with 100 standard tasks left)
                    quiet_since = quiet_since or time.monotonic()
                    if time.monotonic() - quiet_since >= 1.0:
                        return done
                else:
                    quiet_since = None
                time.sleep(0.03)
                continue
            quiet_since = None
            tid, epoch = out["task"]["id"], out["epoch"]
            j.write(json.dumps({"op": "lease", "client": "drain", "id": tid, "epoch": epoch, "account": ACCOUNT,
                                "mode": out["mode"], "rid": rid}) + "\n")
            result = {"by": "drain", "id": tid, "epoch": epoch}
            c.complete(tid, epoch, result)
            j.write(json.dumps({"op": "complete", "client": "drain", "id": tid, "epoch": epoch, "result": result})
                    + "\n")
            done += 1
    h.fail("drain did not finish")


@pytest.mark.timeout(150)
def test_kill9_during_lease_work(harness):
    """Several client processes submit, lease, complete, fail and refuse while the broker is kill -9ed."""
    h = harness(broker={"lease_ttl": 30.0, "backoff_base": 0.2},  # expired leases come back quickly
                quotas={(ACCOUNT, "standard"): ["100000/day@00:00 UTC", "100000/1h"],
                        (ACCOUNT, "deep"): [f"{DEEP_LIMIT}/day@00:00 UTC reserve alpha=3"]})
    h.broker.start()
    journals = [h.spawn("work", f"w{i}") for i in range(4)]
    time.sleep(0.5)
    h.chaos(kills=h.rng.randint(15, 25))
    time.sleep(1.5)  # a calm stretch: work after the last restart must go through too
    h.check_clients()
    h.stop_clients()
    drain_journal = h.root / "drain.jsonl"
    drained = _drain(h, drain_journal)

    live = inspect_snapshot(load_snapshot(h.broker.data_dir))  # read-only with the lock table, broker running
    assert live.violations == [], f"[seed {h.seed}] {live.violations}"
    assert h.broker.stop() == 0, h.broker.log()

    snap = load_snapshot(h.broker.data_dir)
    report = inspect_snapshot(snap)
    records = read_journals(journals + [drain_journal])
    journal_violations = check_client_log(records, snap, exact=True)
    summary = {"seed": h.seed, "kills": h.kills, "drained": drained, "stats": report.stats,
               "clients": h.client_summaries()}
    print(json.dumps(summary, default=str))
    assert report.violations == [], f"[seed {h.seed}] database: {report.violations}\n{h.broker.log()}"
    assert journal_violations == [], f"[seed {h.seed}] journals: {journal_violations}\n{h.broker.log()}"

    # nothing lost: every standard task is settled, deep ones settled or still waiting for quota
    for tid, t in snap.tasks.items():
        deep = (t.get("requires") or {}).get("mode") == "deep"
        allowed = {"DONE", "PARKED"} | ({"PENDING"} if deep else set())
        assert t["state"] in allowed, f"[seed {h.seed}] task {tid} ended {t['state']}: {t}"
    ops = [r["op"] for r in records]
    assert h.kills >= 15
    assert ops.count("complete") >= 100, f"[seed {h.seed}] too little work got through: {summary}"
    assert ops.count("refund") >= 5 and ops.count("stale") >= 1, summary
    assert any(r["op"] == "submit" and not r["created"] for r in records), "no duplicate submit happened"
    deep_used = [rec["total"] for (a, m, _, _), rec in snap.quota_usage.items() if (a, m) == (ACCOUNT, "deep")]
    assert max(deep_used, default=0) <= DEEP_LIMIT, f"[seed {h.seed}] deep quota overrun: {deep_used}"


@pytest.mark.timeout(120)
def test_kill9_during_module_transactions(harness):
    """Racing module transactions (conditional put + ack) under kill -9 apply every effect exactly once."""
    n_tasks = 300
    h = harness()
    h.broker.start()
    with h.broker.client(timeout=5.0) as c:
        ops = [txn.submit({"key": f"tx-{i}", "module": "txmod", "kind": "turn", "payload": {"i": i}})
               for i in range(n_tasks)]
        ids = [r["id"] for r in c.txn("txmod", ops)["results"]]
        for _ in ids:
            lease = c.lease("setup", ACCOUNT)
            c.complete(lease["task"]["id"], lease["epoch"], {"answer": lease["task"]["payload"]["i"]})
        c.txn("txmod", [txn.put("total", 0, if_version=0)])
    tasks_arg = ",".join(map(str, ids))
    # few retries per call: BrokerUnavailable reaches the client loop, which then sometimes starts over
    # with a fresh request id, like a restarted module would
    journals = [h.spawn("txn", f"t{i}", "--tasks", tasks_arg, "--timeout", "0.3", "--retries", "1",
                        "--pace", "0.02")
                for i in range(3)]
    h.chaos(kills=h.rng.randint(12, 20), gap=(0.05, 0.4), until_clients_done=True)
    wait_for(h.clients_done, 90, interval=0.05, what="txn clients to finish")
    h.check_clients(allow_exit=True)

    with h.broker.client() as c:
        total = c.kv_get("txmod", "total")
        applied = [c.kv_get("txmod", f"applied/{tid}") for tid in ids]
    assert h.broker.stop() == 0
    snap = load_snapshot(h.broker.data_dir)
    report = inspect_snapshot(snap)
    records = read_journals(journals)
    summary = {"seed": h.seed, "kills": h.kills, "clients": h.client_summaries(), "stats": report.stats}
    print(json.dumps(summary, default=str))
    assert report.violations == [], f"[seed {h.seed}] {report.violations}"
    assert check_client_log(records, snap, exact=False) == [], f"[seed {h.seed}]"
    # each effect exactly once: the counter moved once per task, each task acked once
    assert total == {"key": "total", "version": n_tasks + 1, "value": n_tasks}, f"[seed {h.seed}] {total}"
    assert all(a is not None and a["version"] == 1 for a in applied), f"[seed {h.seed}] {applied}"
    assert all(snap.tasks[tid]["consumed"] for tid in ids)
    consumed_events = [e["id"] for e in snap.events.values() if e["type"] == "task.consumed"]
    assert sorted(consumed_events) == sorted(ids), f"[seed {h.seed}] consumed events {len(consumed_events)}"
    seen_totals = [r["total"] for r in records if r["op"] == "txn_applied"]
    assert len(seen_totals) == len(set(seen_totals)), f"[seed {h.seed}] two applied txns saw the same counter"
    assert h.kills >= 3, f"[seed {h.seed}] clients finished before the broker was killed enough: {summary}"
