"""An account on another host (issue 14, docs/remote.md): a backend worker under a second supervisord in its own
network namespace, joined to the server's namespace by a veth pair (ops/netns.py), reaching the server's broker
and scheduler only over tcp:// with CURVE, as a worker on another machine does.

Both sides are the repository's supervisord.conf (ops/supervisor_conf.py ``standalone``): the server runs the
whole tree with every endpoint on the veth's server address and the worker host's accounts marked ``remote``
(so it runs no program for them); the worker host runs only its backend programs. Keys are made the way
docs/remote.md tells an operator: each worker's key on the worker host, its public half added on the server,
the server's public key installed on the worker host.

Needs root and iproute2 (CI has both); skipped with the reason otherwise. Teardown stops both supervisords by
pid and deletes the namespace and its veth pair, whatever happened.
"""
from __future__ import annotations

import json
import shutil
import time

import pytest
import zmq

from ops.netns import Netns, NetnsUnavailable, unavailable
from services.backends.sim_log import read_log
from shared import keys as K
from shared.client import BrokerClient
from tests.support import TREE_PATHS, free_port, run_fanoctl, short_tmpdir, wait_for

pytestmark = pytest.mark.integration

DEEP_LATENCY = 12.0   # world (= real) seconds a deep request of far-sim takes: long enough to cut the link mid-way
NEAR_LATENCY = 25.0   # the server host's own account: still running when the far side's stale result arrives
FAR_HOLD = 2.0        # far-sim's unknown_turn_hold (world seconds)
LEASE_TTL = 60.0      # nothing below comes from a lease running out: the scheduler's drop revokes it

SERVER_ACCOUNTS = """
[broker]
lease_ttl = {ttl}

[scheduler]
lease_ttl = {ttl}

[accounts.far-sim]
backend = "sim"
modes = ["standard", "deep"]
remote = true
# a turn it leaves unknown is its own to reconcile for {hold} s only: then another account may run it
unknown_turn_hold = {hold}

# an account of the server host itself, for the task to move to
[accounts.near-sim]
backend = "sim"
modes = ["standard", "deep"]
latency = {{ standard = {{ dist = "fixed", value = 0.3 }}, deep = {{ dist = "fixed", value = {near} }} }}

[accounts.stray-sim]
backend = "sim"
modes = ["standard"]
remote = true

[web]
port = {web_port}
"""

WORKER_ACCOUNTS = """
[accounts.far-sim]
backend = "sim"
modes = ["standard", "deep"]
latency = {{ standard = {{ dist = "fixed", value = 0.3 }}, deep = {{ dist = "fixed", value = {deep} }} }}

[accounts.stray-sim]
backend = "sim"
modes = ["standard"]
latency = {{ dist = "fixed", value = 0.3 }}
"""


class Hosts:
    """The server tree and the worker host's tree, each under its own supervisord; ``ns`` joins them."""

    def __init__(self, ns: Netns):
        from ops.chaos import Tree
        self.ns = ns
        self.server_root, self.worker_root = short_tmpdir("rs"), short_tmpdir("rw")
        addr = ns.server_addr
        self.server_env = {"FANO_BROKER": f"tcp://{addr}:{free_port()}", "FANO_EVENTS": f"tcp://{addr}:{free_port()}",
                           "FANO_SCHEDULER": f"tcp://{addr}:{free_port()}"}
        # what an operator sets on the worker host: the server's broker and scheduler (a worker reads no events)
        self.worker_env = {k: v for k, v in self.server_env.items() if k != "FANO_EVENTS"}
        self.server_cfg = self.server_root / "fano.toml"
        self.server_cfg.write_text(TREE_PATHS.format(root=self.server_root)
                                   + SERVER_ACCOUNTS.format(ttl=LEASE_TTL, web_port=free_port(), hold=FAR_HOLD,
                                                            near=NEAR_LATENCY))
        self.worker_cfg = self.worker_root / "fano.toml"
        self.worker_cfg.write_text(TREE_PATHS.format(root=self.worker_root) + WORKER_ACCOUNTS.format(deep=DEEP_LATENCY))
        self.keys()
        self.server = Tree(self.server_root, self.server_cfg, scale=1.0)
        self.server.env.update(self.server_env)
        self.worker = Tree(self.worker_root, self.worker_cfg, scale=1.0, workers=True, wrap=ns.exec_argv())
        self.worker.env.update(self.worker_env)
        self.client = BrokerClient(self.server_env["FANO_BROKER"], name="fanoctl", timeout=3.0, context=zmq.Context(),
                                   keys=K.client_keys(self.server_root / "var" / "keys", "fanoctl"))

    def keys(self) -> None:
        """docs/remote.md § Keys: the server's own keys; each worker's made on the worker host; only public
        halves cross. far-sim's key is listed on the server; stray-sim's is not."""
        assert self.server_fanoctl("keys", "init").returncode == 0
        server_key = self.server_fanoctl("keys", "server-key").stdout.strip()
        assert self.worker_fanoctl("keys", "server-key", server_key).returncode == 0
        for account in ("far-sim", "stray-sim"):
            made = self.worker_fanoctl("--json", "keys", "generate", f"backend-{account}")
            assert made.returncode == 0, made.stderr
        public = json.loads(self.worker_fanoctl("--json", "keys", "ls").stdout)["keys"]
        far = next(k["public"] for k in public if k["name"] == "backend-far-sim")
        added = self.server_fanoctl("keys", "add", "backend-far-sim", "--role", "worker:far-sim", "--", far)
        assert added.returncode == 0, added.stderr

    def server_fanoctl(self, *args, **kw):
        return run_fanoctl(self.server_cfg, *args, env=self.server_env, **kw)

    def worker_fanoctl(self, *args, **kw):
        return run_fanoctl(self.worker_cfg, *args, env=self.worker_env, **kw)

    def start(self) -> Hosts:
        self.server.start()
        self.worker.start()
        return self

    def backends(self) -> dict:
        rows = json.loads(self.server_fanoctl("--json", "backends", "ls").stdout)["backends"]
        return {r["account"]: r for r in rows}

    def sim_log(self, account: str, tid: int) -> list[dict]:
        root = self.server_root if account == "near-sim" else self.worker_root
        return [r for r in read_log(root / "data" / "sim" / account / "requests.jsonl") if r.get("task_id") == tid]

    def log(self, side: str, program: str) -> str:
        root = self.server_root if side == "server" else self.worker_root
        path = root / "var" / "log" / f"{program}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> str:
        parts = []
        for side, root in (("server", self.server_root), ("worker", self.worker_root)):
            for path in sorted((root / "var" / "log").glob("*.log")):
                if path.name.startswith(("backend", "broker", "scheduler")):
                    parts.append(f"--- {side} {path.name} ---\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)

    def until(self, predicate, timeout: float, what: str, interval: float = 0.1):
        try:
            return wait_for(predicate, timeout, interval, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None

    def close(self) -> list[str]:
        """Both supervisords stopped by pid, the namespace and veth deleted; what was left over."""
        problems = []
        self.client.close()
        for tree in (self.worker, self.server):
            if tree.pid is not None:
                problems += tree.stop()
        problems += self.ns.delete()
        for root in (self.server_root, self.worker_root):
            shutil.rmtree(root, ignore_errors=True)
        return problems


@pytest.fixture(scope="module")
def hosts():
    why = unavailable()
    if why:
        pytest.skip(f"accounts on another host are tested in a network namespace: {why}")
    try:
        ns = Netns.create()
    except NetnsUnavailable as exc:
        pytest.skip(f"cannot make a network namespace here: {exc}")
    h = None
    try:
        h = Hosts(ns)
        h.start()
        yield h
    finally:
        left = h.close() if h is not None else ns.delete()
        assert not ns.exists(), f"namespace {ns.name} or its veth is left"
        assert left == [], left


def _ask(h: Hosts, key: str, *accounts: str, **requires) -> int:
    """An ask for ``accounts`` (default: far-sim only)."""
    return h.client.submit(key, "adhoc", "ask", {"prompt": f"question {key}"},
                           requires={"backends": list(accounts or ["far-sim"]), **requires})["task"]["id"]


def test_a_worker_on_another_host_leases_and_completes_over_curve_and_an_unlisted_key_is_refused(hosts):
    h = hosts
    h.until(lambda: h.backends()["far-sim"]["state"] == "idle", 30, "far-sim's remote worker to join")
    tids = [_ask(h, f"remote-{n}") for n in range(3)]
    for tid in tids:
        rec = h.until(lambda t=tid: (r := h.client.get(t))["state"] == "DONE" and r, 30, f"task {tid} to be done")
        assert rec["served"]["account"] == "far-sim" and rec["result"]["text"], rec
        assert [e["event"] for e in h.sim_log("far-sim", tid)] == ["received", "served"]
    # the worker is in the other namespace: it has no route to the server's sockets but the veth
    assert h.ns.server_addr in h.log("worker", "backend-far-sim")
    # stray-sim's worker runs there too, with a key made there but never listed here: refused at the handshake
    h.until(lambda: "refused a CURVE client whose key is not authorized" in h.log("server", "scheduler"), 15,
            "the scheduler to refuse stray-sim's key")
    stray = _ask(h, "stray-1", "stray-sim")
    time.sleep(3)   # a window for a lease that must not come (one liveness period of the worker's re-asks)
    assert h.client.get(stray)["state"] == "PENDING" and h.sim_log("stray-sim", stray) == []
    assert h.backends()["stray-sim"]["state"] == "offline"
    # its program keeps running there (a condition the operator can fix must not end FATAL)
    states = {p["name"]: p["statename"] for p in h.worker.programs()}
    pids = {p["name"]: p["pid"] for p in h.worker.programs()}
    assert states == {"backend-far-sim": "RUNNING", "backend-stray-sim": "RUNNING"}, states
    # listed on the server (its public half only), it is let in without a restart and does its task
    public = json.loads(h.worker_fanoctl("--json", "keys", "ls").stdout)["keys"]
    key = next(k["public"] for k in public if k["name"] == "backend-stray-sim")
    assert h.server_fanoctl("keys", "add", "backend-stray-sim", "--role", "worker:stray-sim", "--", key).returncode == 0
    h.until(lambda: h.client.get(stray)["state"] == "DONE", 30, "stray-sim's task once its key is listed")
    assert [e["event"] for e in h.sim_log("stray-sim", stray)] == ["received", "served"]
    assert {p["name"]: p["pid"] for p in h.worker.programs()} == pids   # the same processes throughout


def _task_events(h: Hosts, tid: int) -> list[str]:
    out, after = [], 0
    while True:
        page = h.client.events(after=after)
        out += [e["type"] for e in page["events"] if e.get("id") == tid]
        if not page["events"]:
            return out
        after = page["events"][-1]["seq"]


def test_a_partition_mid_request_is_fenced_and_the_task_is_done_once(hosts):
    """The link is cut while far-sim's deep request runs. The scheduler hears nothing for its liveness and drops
    the worker; the broker revokes the lease, and since the intent was recorded the turn's outcome is unknown:
    the task waits for far-sim to reconcile it. The provider serves the request meanwhile and the worker cannot
    report it. After the heal its completion quotes the old epoch and is refused (STALE_EPOCH); the worker
    leases the task again under a new epoch, finds the answer in the provider's log and completes it without
    sending anything: one request at the provider, one accepted result at the broker."""
    h = hosts
    h.until(lambda: h.backends()["far-sim"]["state"] == "idle", 30, "far-sim's remote worker to be idle")
    tid = _ask(h, "partition-1", mode="deep")
    h.until(lambda: [e["event"] for e in h.sim_log("far-sim", tid)] == ["received"], 30,
            "the deep request to reach the provider")
    running = h.client.get(tid)
    assert running["state"] == "RUNNING" and running["turn"], running
    first_epoch = running["epoch"]
    h.ns.partition()
    cut = time.monotonic()
    try:
        revoked = h.until(lambda: (r := h.client.get(tid))["state"] != "RUNNING" and r, 15,
                          "the lease of the cut-off worker to be revoked")
        took = time.monotonic() - cut
        assert revoked["state"] == "PENDING" and revoked["error"]["class"] == "revoked", revoked
        assert revoked["unknown_turn"], revoked            # sent: bound to far-sim until it reconciles
        assert took < 10.0, took                           # the scheduler's liveness, not the 60 s lease
        h.until(lambda: "served" in [e["event"] for e in h.sim_log("far-sim", tid)], DEEP_LATENCY + 15,
                "the provider to serve the request on the far side")
        h.until(lambda: "complete not acknowledged" in h.log("worker", "backend-far-sim"), 10,
                "the far worker to retry its completion into the cut link")
        assert h.client.get(tid)["state"] == "PENDING"
    finally:
        h.ns.heal()
    done = h.until(lambda: (r := h.client.get(tid))["state"] == "DONE" and r, 60, "the task to be done after the heal")
    print(f"partition: lease revoked {took:.1f}s after the cut; done at epoch {done['epoch']} "
          f"(first {first_epoch})")
    assert done["epoch"] > first_epoch and done["served"]["account"] == "far-sim", done
    worker_log = h.log("worker", "backend-far-sim")
    assert f"task {tid}: complete rejected, lease void" in worker_log, worker_log[-3000:]
    # one request at the provider: the answer was recovered from it, nothing was sent again
    assert [e["event"] for e in h.sim_log("far-sim", tid)] == ["received", "served"]
    assert done["result"]["text"] == h.sim_log("far-sim", tid)[1]["reply"]
    # one accepted result at the broker
    assert _task_events(h, tid).count("task.done") == 1, _task_events(h, tid)
    whys = [e["why"] for e in done["history"]]
    assert any("revoked" in w for w in whys), whys


def test_a_partition_mid_request_moves_the_task_to_another_account_and_fences_the_stale_result(hosts):
    """The same cut, with another account allowed and far-sim's unknown-turn hold short (a duplicate is cheap
    there, docs/tasks.md § Unknown turns): once the hold lapses the server's own near-sim runs the task under a
    new epoch. far-sim's answer arrives after the heal, while near-sim's lease is live: its epoch is old, so it
    is refused, and near-sim's result is the one accepted."""
    h = hosts
    h.until(lambda: h.backends()["far-sim"]["state"] == "idle", 30, "far-sim's remote worker to be idle")
    assert h.server_fanoctl("backends", "pause", "near-sim").returncode == 0   # the first lease is far-sim's
    tid = _ask(h, "partition-2", "far-sim", "near-sim", mode="deep")
    h.until(lambda: [e["event"] for e in h.sim_log("far-sim", tid)] == ["received"], 30,
            "the deep request to reach the far provider")
    h.ns.partition()
    cut = time.monotonic()
    try:
        h.until(lambda: h.client.get(tid)["state"] == "PENDING", 15, "the cut-off worker's lease to be revoked")
        assert h.server_fanoctl("backends", "resume", "near-sim").returncode == 0
        moved = h.until(lambda: (r := h.client.get(tid))["state"] == "RUNNING" and r["lease"]["account"] == "near-sim"
                        and r, 30, "near-sim to lease the task once far-sim's hold lapsed")
        print(f"partition: the task moved to near-sim {time.monotonic() - cut:.1f}s after the cut "
              f"(liveness 3 s + far-sim's hold {FAR_HOLD:g} s)")
        h.until(lambda: "served" in [e["event"] for e in h.sim_log("far-sim", tid)], DEEP_LATENCY + 15,
                "the far provider to serve the request on the other side of the cut")
    finally:
        h.ns.heal()
    h.until(lambda: f"task {tid}: complete rejected, lease void" in h.log("worker", "backend-far-sim"), 20,
            "the far worker's stale completion to be refused")
    worker_log = h.log("worker", "backend-far-sim")
    # nothing in the far worker's reports is taken for a trespass: the broker fences (STALE_EPOCH, not
    # FORBIDDEN) and the scheduler does not mistake it for near-sim's worker once it is heard again
    assert "FORBIDDEN" not in worker_log and "refuses this worker" not in worker_log, worker_log[-3000:]
    live = h.client.get(tid)
    assert live["state"] == "RUNNING" and live["epoch"] == moved["epoch"], live   # near-sim's lease untouched
    done = h.until(lambda: (r := h.client.get(tid))["state"] == "DONE" and r, NEAR_LATENCY + 20, "near-sim's result")
    assert done["served"]["account"] == "near-sim" and done["epoch"] == moved["epoch"], done
    near = h.sim_log("near-sim", tid)
    assert [e["event"] for e in near] == ["received", "served"] and done["result"]["text"] == near[1]["reply"]
    assert _task_events(h, tid).count("task.done") == 1, _task_events(h, tid)


def test_the_second_host_is_reachable_only_over_its_link_and_leaves_nothing_behind():
    """ops/netns.py itself: a connection across the veth works, is lost (not refused) while partitioned,
    works again once healed; delete() removes the namespace and both veth ends."""
    why = unavailable()
    if why:
        pytest.skip(f"accounts on another host are tested in a network namespace: {why}")
    import socket
    import subprocess
    import sys
    ns = Netns.create()
    try:
        server = socket.create_server((ns.server_addr, 0))
        port = server.getsockname()[1]
        probe = (f"import socket; socket.create_connection(({ns.server_addr!r}, {port}), timeout=1.5); "
                 f"print('connected')")

        def across() -> str:
            res = subprocess.run(ns.exec_argv([sys.executable, "-c", probe]), capture_output=True, text=True)
            return res.stdout.strip() or res.stderr.strip().splitlines()[-1]
        assert across() == "connected"
        ns.partition()
        assert "timed out" in across()
        ns.heal()
        wait_for(lambda: across() == "connected", 10, what="the healed link to carry a connection")
        server.close()
    finally:
        assert ns.delete() == []
    assert not ns.exists()
    assert ns.name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def _connections_from(h: Hosts, addr: str) -> list[str]:
    """The server's established TCP connections (broker and scheduler ports) from ``addr``: each one a ZeroMQ
    connection the server holds for a peer there."""
    import subprocess
    ports = {h.server_env[k].rsplit(":", 1)[1] for k in ("FANO_BROKER", "FANO_SCHEDULER")}
    out = subprocess.run(["ss", "-Htn", "state", "established"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines()
            if any(f"{h.ns.server_addr}:{p} " in line for p in ports) and f" {addr}:" in line]


def test_a_server_lets_go_of_the_connections_of_a_host_that_vanished(hosts):
    """A worker host that goes away without closing its connections (cut off for good, powered off) must not
    leave them open on the server for ever: the broker and the scheduler ping every peer (ZMTP heartbeats)
    and drop a connection that stays silent, so a flaky link cannot pile up descriptors over weeks."""
    h = hosts
    if shutil.which("ss") is None:
        pytest.skip("iproute2's ss is not installed")
    h.until(lambda: h.backends()["far-sim"]["state"] == "idle", 30, "far-sim's remote worker to be idle")
    assert _connections_from(h, h.ns.worker_addr), "the worker host holds no connection to the server"
    h.ns.partition()
    cut = time.monotonic()
    try:
        h.until(lambda: not _connections_from(h, h.ns.worker_addr), 40,
                "the server to drop the silent host's connections", interval=0.5)
        print(f"vanished host: its connections dropped by the server {time.monotonic() - cut:.1f}s after the cut")
    finally:
        h.ns.heal()
    h.until(lambda: h.backends()["far-sim"]["state"] == "idle", 30, "far-sim's worker to be back after the heal")
