"""A client process for the broker crash tests: does real work through BrokerClient and journals every
operation the broker *acknowledged* (JSON lines, flushed after each record).

    python -m tests.crash.crash_client work --endpoint E --journal F --name N --seed S --stop STOPFILE
    python -m tests.crash.crash_client txn  --endpoint E --journal F --name N --seed S --tasks 1,2,3 ...

Every call is retried with the *same* request id until the broker answers (the broker is being
``kill -9``ed meanwhile), so each operation the client starts is applied exactly once and ends up in
the journal: the journals are a complete record of grants and refunds (see ops.invariants.check_client_log).
A call unanswered for ``--give-up`` seconds ends the process with exit code 3.

``work``: submit unique keys (some deep mode), submit shared duplicate keys, lease (standard + deep),
then complete / fail transient unsent (refund) / fail transient sent / refuse (refund); now and then
a zombie write with a void epoch (after completing, or after letting a 0.3 s lease lapse), which must
be rejected with STALE_EPOCH.

``txn``: for each given task (all DONE), apply its "effect" once: one module transaction that bumps a
shared counter under a version check, records ``applied/<id>`` and acks the task. Some retries use a
fresh request id (a restarted module), which must be answered "already consumed", never applied twice.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

from shared import protocol, txn
from shared.client import BrokerClient
from shared.errors import BrokerUnavailable, ErrorCode, FanoError

ACCOUNT = "acct"
DUP_KEYS = 25
TXN_MODULE = "txmod"


class GaveUp(Exception):
    pass


class Worker:
    def __init__(self, args):
        self.args = args
        self.name = args.name
        self.rng = random.Random(args.seed)
        self.client = BrokerClient(args.endpoint, name=args.name, timeout=args.timeout, retries=args.retries)
        self.journal = open(args.journal, "a", buffering=1)
        self.counts: dict[str, int] = {}

    def log(self, op: str, **fields) -> None:
        self.journal.write(json.dumps({"op": op, "client": self.name, **fields}) + "\n")
        self.journal.flush()
        self.counts[op] = self.counts.get(op, 0) + 1

    def durable(self, cmd: str, rid: str | None = None, fresh_rid_on_retry: float = 0.0, **args):
        """Call until answered; returns (rid, result) or raises FanoError for an error *reply*."""
        rid = rid or protocol.new_id()
        deadline = time.monotonic() + self.args.give_up
        while True:
            try:
                return rid, self.client.call(cmd, rid=rid, **args)
            except BrokerUnavailable:
                if time.monotonic() > deadline:
                    raise GaveUp(f"{cmd} unanswered for {self.args.give_up}s") from None
                self.counts["unavailable"] = self.counts.get("unavailable", 0) + 1
                if fresh_rid_on_retry and self.rng.random() < fresh_rid_on_retry:
                    raise  # the caller restarts the logical operation with a new rid

    def stopping(self) -> bool:
        return os.path.exists(self.args.stop)

    # --- work mode ------------------------------------------------------------------------------------

    def submit(self) -> None:
        rng = self.rng
        if rng.random() < 0.2:
            k = rng.randrange(DUP_KEYS)
            spec = {"key": f"dup-{k}", "module": "alpha" if k % 2 else "beta", "kind": "dup",
                    "payload": {"k": k}, "max_attempts": 20}
        else:
            n = self.counts.get("submit", 0)
            deep = rng.random() < 0.15
            spec = {"key": f"{self.name}-{n}-{rng.getrandbits(24):06x}", "module": rng.choice(["alpha", "beta"]),
                    "kind": "crash", "payload": {"n": n, "by": self.name}, "priority": rng.randrange(0, 100),
                    "max_attempts": 20, "requires": {"mode": "deep"} if deep else {}}
        rid, out = self.durable("submit", task=spec, force=False)
        self.log("submit", key=spec["key"], id=out["task"]["id"], created=out["created"], rid=rid)

    def zombie(self, cmd: str, tid: int, epoch: int, **args) -> None:
        """A write with a void epoch: must be answered STALE_EPOCH."""
        try:
            self.durable(cmd, id=tid, epoch=epoch, **args)
        except FanoError as exc:
            if exc.code == ErrorCode.STALE_EPOCH:
                self.log("stale", id=tid, epoch=epoch, cmd=cmd)
                return
            raise
        self.log("zombie_accepted", id=tid, epoch=epoch, cmd=cmd)

    def lease_cycle(self) -> bool:
        rng = self.rng
        lapse = rng.random() < 0.04  # play a worker that hangs past its lease, then wakes up as a zombie
        rid, out = self.durable("lease", worker=self.name, account=ACCOUNT, modes=["standard", "deep"],
                                ttl=0.3 if lapse else 30.0)
        task = out.get("task")
        if task is None:
            return False
        tid, epoch, mode = task["id"], out["epoch"], out["mode"]
        self.log("lease", id=tid, epoch=epoch, account=ACCOUNT, mode=mode, rid=rid, key=task["key"])
        x = rng.random()
        try:
            if lapse:
                time.sleep(0.5)  # the lease expires (its unit stays counted: the request may have been sent)
                self.zombie("complete", tid, epoch, result={"zombie": True})
            elif mode == "deep" and x < 0.25:
                until = time.time() + rng.uniform(0.2, 0.6)
                self.durable("refuse", id=tid, epoch=epoch, until=until, message="simulated quota refusal")
                self.log("refund", id=tid, epoch=epoch, account=ACCOUNT, mode=mode, how="refuse")
            elif x < 0.72:
                result = {"by": self.name, "id": tid, "epoch": epoch, "r": rng.getrandbits(32)}
                self.durable("complete", id=tid, epoch=epoch, result=result)
                self.log("complete", id=tid, epoch=epoch, result=result)
                if rng.random() < 0.15:
                    self.zombie("complete", tid, epoch, result={"zombie": True})
            elif x < 0.87:
                self.durable("fail", id=tid, epoch=epoch, error_class="transient", message="not sent",
                             sent=False, retry_after=0.02)
                self.log("refund", id=tid, epoch=epoch, account=ACCOUNT, mode=mode, how="fail-unsent")
                if rng.random() < 0.2:
                    self.zombie("fail", tid, epoch, error_class="transient", message="zombie", sent=False,
                                retry_after=0.02)
            else:
                self.durable("fail", id=tid, epoch=epoch, error_class="transient", message="sent, no answer",
                             sent=True, retry_after=0.02)
                self.log("fail_kept", id=tid, epoch=epoch, account=ACCOUNT, mode=mode)
        except FanoError as exc:
            if exc.code != ErrorCode.STALE_EPOCH:
                raise
            # our lease ended under us (expiry): the broker fenced us off, as it should
            self.log("stale", id=tid, epoch=epoch, cmd="own-lease")
        return True

    def run_work(self) -> None:
        idle = 0
        while not self.stopping():
            if self.rng.random() < 0.35:
                self.submit()
            elif not self.lease_cycle():
                idle += 1
                time.sleep(0.01)

    # --- txn mode --------------------------------------------------------------------------------------

    def consume(self, tid: int) -> None:
        """Apply task tid's effect exactly once, racing the other clients for it."""
        for _ in range(10_000):
            try:
                _, cur = self.durable("kv_get", module=TXN_MODULE, key="total")
                ops = [txn.put("total", cur["value"] + 1, if_version=cur["version"]),
                       txn.put(f"applied/{tid}", {"by": self.name}, if_version=0), txn.ack(tid)]
                rid, out = self.durable("txn", module=TXN_MODULE, ops=ops, fresh_rid_on_retry=0.5)
            except BrokerUnavailable:
                self.counts["fresh_rid"] = self.counts.get("fresh_rid", 0) + 1
                continue  # a "restarted module": read again, new rid
            except FanoError as exc:
                if exc.code == ErrorCode.CONDITION_FAILED:
                    self.counts["conflict"] = self.counts.get("conflict", 0) + 1
                    continue  # another client moved the counter: read again
                raise
            if out["applied"]:
                self.log("txn_applied", task_id=tid, rid=rid, total=cur["value"] + 1)
            else:
                self.log("txn_noop", task_id=tid, rid=rid, reason=out.get("reason"))
            return
        raise RuntimeError(f"task {tid}: no transaction went through after 10000 tries")

    def run_txn(self) -> None:
        tids = [int(x) for x in self.args.tasks.split(",") if x]
        self.rng.shuffle(tids)
        for tid in tids:
            self.consume(tid)
            time.sleep(self.rng.uniform(0, 2 * self.args.pace))  # spread the burst over the kills


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["work", "txn"])
    p.add_argument("--endpoint", required=True)
    p.add_argument("--journal", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stop", default="/nonexistent")
    p.add_argument("--tasks", default="")
    p.add_argument("--timeout", type=float, default=0.5)
    p.add_argument("--retries", type=int, default=30)
    p.add_argument("--give-up", type=float, default=60.0)
    p.add_argument("--pace", type=float, default=0.0, help="txn: mean pause between tasks, seconds")
    args = p.parse_args(argv)
    w = Worker(args)
    try:
        w.run_work() if args.mode == "work" else w.run_txn()
    except GaveUp as exc:
        print(json.dumps({"client": args.name, "error": str(exc), "counts": w.counts,
                          "resends": w.client.resends}), flush=True)
        return 3
    finally:
        w.client.close()
    print(json.dumps({"client": args.name, "counts": w.counts, "resends": w.client.resends}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
