"""Chaos run: a mixed workload on sim accounts under a real supervisord while programs are kill -9ed.

``ops/chaos [--kills N] [--seed S] [--keep]`` builds a throw-away deployment in a short temporary
directory (its own fano.toml with three sim accounts, tight quotas, injected faults, a scaled clock;
the repository's supervisord.conf via :func:`ops.supervisor_conf.standalone`), runs ad-hoc and
multi-turn work, deep and standard, and meanwhile sends SIGKILL to random RUNNING programs (broker,
scheduler, backend workers; not the research modules, which have no seeds here) through supervisord's own interface
(what ``supervisorctl signal KILL`` does). Then it stops killing, drains, stops the tree and checks the invariants
(docs/architecture.md § Invariants) against the broker's database and the simulated providers' request logs:

* no task lost: every acknowledged submission exists, every key maps to one task, and every task
  ended DONE, PARKED or CANCELLED;
* no turn served twice for one attempt (provider logs), and no unknown turn left unreconciled;
* no quota window exceeded: the broker's ledger per window, and the providers' accepted requests;
* the broker's indices, counters and event outbox are consistent (:mod:`ops.invariants`);
* no orphaned process once supervisord is down.

It prints a JSON summary (kills, tasks, checks, violations) and exits 1 on any violation.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared.client import BrokerClient
from shared.config import ADHOC, REPO_ROOT, load_config
from shared.errors import FanoError

ACCOUNTS = ("fast-sim", "slow-sim", "deep-sim")
SCALE = 20.0  # world seconds per real second: provider latencies and backoffs pass quickly
STRICT_DEEP_ASKS = 8   # the first asks need deep mode with no fallback (well within a day's deep budgets)

CONFIG = """
[paths]
run_dir = "{root}/run"
data_dir = "{root}/data"
log_dir = "{root}/var/log"

[broker]
lease_ttl = 4.0
backoff_base = 2.0
backoff_max = 60.0
default_max_attempts = 8

[scheduler]
lease_ttl = 4.0
assign_timeout = 3.0

[accounts.fast-sim]
backend = "sim"
modes = ["standard"]
seed = {seed}
latency = {{ standard = {{ dist = "uniform", low = 0.5, high = 3.0 }} }}
transient_rate = 0.03

[accounts.slow-sim]
backend = "sim"
modes = ["standard", "deep"]
seed = {seed2}
latency.standard = {{ dist = "uniform", low = 3.0, high = 12.0 }}
latency.deep = {{ dist = "uniform", low = 10.0, high = 30.0 }}
rate_limits = {{ deep = ["{deep_slow}"] }}
overload_rate = 0.03
hang_rate = 0.01

[accounts.deep-sim]
backend = "sim"
modes = ["standard", "deep"]
seed = {seed3}
latency.standard = {{ dist = "uniform", low = 1.0, high = 6.0 }}
latency.deep = {{ dist = "uniform", low = 8.0, high = 20.0 }}
rate_limits = {{ deep = ["{deep_deep}"], standard = ["{std_deep}"] }}

[quotas.slow-sim.deep]
windows = ["{deep_slow}"]

[quotas.deep-sim.deep]
windows = ["{deep_deep}"]

[quotas.deep-sim.standard]
windows = ["{std_deep}"]
"""

# the workload is the operator's kind of work (module adhoc): a reserve must name a module the tree has
LIMITS = {"deep_slow": "12/day@00:00 UTC", "deep_deep": "20/day@00:00 UTC reserve adhoc=5",
          "std_deep": "40/1h"}


def write_config(root: Path, seed: int) -> Path:
    path = root / "fano.toml"
    limits = {k: v.replace(" reserve adhoc=5", "") for k, v in LIMITS.items()}
    text = CONFIG.format(root=root, seed=seed, seed2=seed + 1, seed3=seed + 2, **limits)
    # the broker's own quota may carry reserves; the provider's limit is the plain window
    text = text.replace(f'[quotas.deep-sim.deep]\nwindows = ["{limits["deep_deep"]}"]',
                        f'[quotas.deep-sim.deep]\nwindows = ["{LIMITS["deep_deep"]}"]')
    path.write_text(text)
    return path


class Tree:
    """supervisord running the standalone copy of the repository's process tree."""

    def __init__(self, root: Path, config_path: Path, scale: float = SCALE, workers: bool = False,
                 wrap: Sequence[str] = ()):
        """``workers``: only the backend programs (a worker host, docs/remote.md); ``wrap``: a command that
        runs supervisord, e.g. ``ip netns exec NS`` (it must exec it, so that the pid is supervisord's)."""
        from ops.supervisor_conf import standalone
        self.root = root
        self.config = load_config(config_path)
        self.conf = standalone(self.config, root, workers=workers)
        self.wrap = tuple(wrap)
        self.sock = root / "var/run/supervisor.sock"
        self.env = dict(os.environ, FANO_CONFIG=str(config_path), FANO_CLOCK_SCALE=str(scale),
                        FANO_CLOCK_ORIGIN=str(time.time()), PYTHONUNBUFFERED="1")
        self.pid: int | None = None

    def start(self) -> None:
        # umask 077 as ops/up sets it: supervisord (-n does not apply the umask of supervisord.conf)
        # creates the programs' log files, which carry prompts and answers
        argv = [*self.wrap, sys.executable, "-m", "supervisor.supervisord", "-n", "-c", str(self.conf)]
        proc = subprocess.Popen(argv, env=self.env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, umask=0o077,
                                stderr=open(self.root / "supervisord.out", "ab"), start_new_session=True)
        self.pid = proc.pid
        self._proc = proc
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if all(p["statename"] == "RUNNING" for p in self.rpc().supervisor.getAllProcessInfo()):
                    return
            except (OSError, xmlrpc.client.Fault):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the tree did not come up; see {self.root}/var/log")

    def rpc(self):
        from supervisor.xmlrpc import SupervisorTransport
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=SupervisorTransport(None, None, f"unix://{self.sock}"))

    def programs(self) -> list[dict]:
        return self.rpc().supervisor.getAllProcessInfo()

    def kill(self, name: str) -> None:
        self.rpc().supervisor.signalProcess(name, "KILL")

    def stop(self) -> list[str]:
        """Stop supervisord and everything under it; return descriptions of orphaned processes.

        The programs are stopped all at once first (``stopAllProcesses`` signals every one before waiting
        for any): supervisord's own shutdown stops one priority level after the other, each taking at
        least a second of its main loop, which made every test's teardown last 10 s or more. The order
        does not matter to a crash-only tree."""
        if self._proc.poll() is None:
            try:
                self.rpc().supervisor.stopAllProcesses(True)
            except (OSError, xmlrpc.client.Fault):
                pass   # supervisord is on its way out anyway: its own shutdown stops what is left
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        time.sleep(0.5)
        orphans = []
        marker = str(self.root)
        for pid_dir in Path("/proc").iterdir():
            if not pid_dir.name.isdigit() or int(pid_dir.name) == os.getpid():
                continue
            try:
                cmd = (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                env = (pid_dir / "environ").read_bytes()
            except OSError:
                continue
            if marker.encode() in env and "services" in cmd:
                orphans.append(f"pid {pid_dir.name}: {cmd.strip()}")
                try:
                    os.kill(int(pid_dir.name), signal.SIGKILL)
                except OSError:
                    pass
        return orphans


class Workload:
    """Submits ad-hoc asks and multi-turn conversations; advances each conversation turn by turn."""

    def __init__(self, client: BrokerClient, rng: random.Random, conversations: int, turns: int, asks: int):
        self.client = client
        self.rng = rng
        self.acked: dict[str, int] = {}          # key -> task id, every acknowledged submission
        self.conv_next: dict[str, int] = {}      # conversation -> next turn index to submit
        self.conv_waiting: dict[str, int] = {}   # conversation -> task id of its current turn
        self.turns = turns
        self.asks_left = self.asks_total = asks
        for n in range(conversations):
            self.conv_next[f"conv-{n}"] = 0

    def _submit(self, key: str, **fields) -> int:
        res = self.client.submit(key, ADHOC, fields.pop("kind"), **fields)
        self.acked[key] = res["task"]["id"]
        return res["task"]["id"]

    def step(self) -> None:
        """Submit a few asks and advance conversations whose current turn settled."""
        for _ in range(min(3, self.asks_left)):
            n = self.asks_left
            # deep asks: most may fall back to standard; the few that may not come first, so that they
            # get the deep budgets (32 a day here) before the others use them up: a strict one submitted
            # later would rightly wait for the next day's quota, which the drain cannot wait for
            roll = self.rng.random()
            strict = self.asks_total - self.asks_left < STRICT_DEEP_ASKS
            requires = ({"mode": "deep", "deep_fallback": False} if strict else
                        {"mode": "deep", "deep_fallback": True} if roll < 0.25 else {})
            self._submit(f"ask-{n}", kind="ask", payload={"prompt": f"question {n}"}, requires=requires)
            self.asks_left -= 1
        for conv, turn in list(self.conv_next.items()):
            waiting = self.conv_waiting.get(conv)
            if waiting is not None:
                state = self.client.get(waiting, history=False)["state"]
                if state not in ("DONE", "PARKED", "CANCELLED"):
                    continue
                del self.conv_waiting[conv]
                if state != "DONE":
                    del self.conv_next[conv]  # a failed turn ends the conversation
                    continue
            if turn >= self.turns:
                del self.conv_next[conv]
                continue
            deep = turn % 3 == 2
            self.conv_waiting[conv] = self._submit(
                f"{conv}#{turn}", kind="explorer.explore" if turn % 2 == 0 else "explorer.critique",
                payload={"prompt": f"{conv} turn {turn}", "turn": turn},
                requires={"conversation": conv, **({"mode": "deep", "deep_fallback": True} if deep else {})})
            self.conv_next[conv] = turn + 1

    def finished(self) -> bool:
        return not self.asks_left and not self.conv_next


def run(kills: int, seed: int, keep: bool, conversations: int, turns: int, asks: int,
        kill_gap: tuple[float, float], drain_timeout: float) -> dict:
    from ops.chaos_check import check_all
    rng = random.Random(seed)
    root = Path(tempfile.mkdtemp(prefix="fc", dir="/tmp"))
    config_path = write_config(root, seed)
    tree = Tree(root, config_path)
    summary: dict[str, Any] = {"seed": seed, "root": str(root), "kills": 0, "kills_by_program": {}}
    tree.start()
    t0 = time.monotonic()
    client = BrokerClient(tree.config.broker_endpoint, name="chaos", timeout=2.0, retries=30)
    work = Workload(client, rng, conversations, turns, asks)
    next_kill = time.monotonic() + rng.uniform(*kill_gap)
    try:
        while summary["kills"] < kills or not work.finished():
            try:
                work.step()
            except FanoError as exc:
                summary.setdefault("driver_errors", []).append(str(exc))
            if summary["kills"] < kills and time.monotonic() >= next_kill:
                # the module programs have no seeds here (the workload is the orchestrator's): killing
                # them would test nothing; their kill -9 tests are tests/integration/test_{explorer,...}
                running = [p for p in tree.programs()
                           if p["statename"] == "RUNNING" and not p["name"].startswith("module-")]
                if running:
                    victim = rng.choice(running)["name"]
                    try:
                        tree.kill(victim)
                        summary["kills"] += 1
                        summary["kills_by_program"][victim] = summary["kills_by_program"].get(victim, 0) + 1
                    except xmlrpc.client.Fault:
                        pass  # it died on its own in between
                next_kill = time.monotonic() + rng.uniform(*kill_gap)
            time.sleep(0.05)
        summary["kill_phase_s"] = round(time.monotonic() - t0, 1)
        summary["drained"] = _drain(client, drain_timeout)
        summary["fatal_programs"] = [p["name"] for p in tree.programs() if p["statename"] == "FATAL"]
    finally:
        client.close()
        summary["orphans"] = tree.stop()
    report = check_all(tree.config, work.acked, LIMITS)
    summary.update(report)
    summary["violations"] += [f"orphaned process {o}" for o in summary["orphans"]]
    summary["violations"] += [f"program {p} ended FATAL" for p in summary.get("fatal_programs", [])]
    summary["elapsed_s"] = round(time.monotonic() - t0, 1)
    if not keep and not summary["violations"]:
        import shutil
        shutil.rmtree(root, ignore_errors=True)
    return summary


def _drain(client: BrokerClient, timeout: float) -> bool:
    """Wait until nothing is PENDING, RUNNING or PAUSED (quota waits are bounded by the scaled clock)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tasks = client.stats()["tasks"]
        if tasks["PENDING"] + tasks["RUNNING"] + tasks["PAUSED"] == 0:
            return True
        time.sleep(0.5)
    return False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--seed", type=int, default=int(os.environ.get("FANO_CHAOS_SEED", "0")) or None)
    parser.add_argument("--conversations", type=int, default=12)
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--asks", type=int, default=150)
    parser.add_argument("--min-gap", type=float, default=0.3, help="seconds between kills, at least")
    parser.add_argument("--max-gap", type=float, default=1.5, help="seconds between kills, at most")
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    parser.add_argument("--keep", action="store_true", help="keep the temporary deployment (logs, db)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1, 10**6)
    summary = run(args.kills, seed, args.keep, args.conversations, args.turns, args.asks,
                  (args.min_gap, args.max_gap), args.drain_timeout)
    print(json.dumps(summary, indent=2, default=str))
    return 1 if summary["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
