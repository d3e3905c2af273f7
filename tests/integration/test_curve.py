"""CURVE on tcp:// endpoints, end to end: real broker, scheduler and sim worker processes on real TCP sockets
with keys made by ``fanoctl keys`` (docs/security.md). The role rules themselves are unit-tested in
tests/unit/test_keys_roles.py; here they are checked through the keys, where the role comes from."""
from __future__ import annotations

import json
import os
import shutil
import time

import pytest
import zmq

from shared import keys as K
from shared import protocol, sockets, txn
from shared.config import load_config
from shared.errors import BrokerUnavailable, ErrorCode, ExitCode, FanoError
from shared.keys import ClientKeys
from tests.curve_support import Net, answers, environment, free_port
from tests.support import run_fanoctl, short_tmpdir, wait_for, write_config

pytestmark = pytest.mark.integration


@pytest.fixture
def net():
    root = short_tmpdir("cv")
    n = Net(root)
    try:
        yield n
    finally:
        n.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def keyed(net):
    """``net`` with every program's keys made by ``fanoctl keys init`` and the broker running."""
    r = net.fanoctl("keys", "init")
    assert r.returncode == 0, r.stderr
    net.broker = net.start("broker", wait="broker started")
    wait_for(lambda: answers(net.client("fanoctl", timeout=0.5)), 10, what="the broker to answer over CURVE")
    return net


def test_a_program_on_tcp_without_keys_refuses_to_start(net):
    broker = net.start("broker")
    assert broker.proc.wait(timeout=30) == ExitCode.KEYS
    assert "keys directory" in broker.log() and "does not exist (fanoctl keys init makes it)" in broker.log()
    K.make_dir(net.keys_dir)   # a keys directory without this program's key
    broker = net.start("broker")
    assert broker.proc.wait(timeout=30) == ExitCode.KEYS
    assert "server.key_secret does not exist (fanoctl keys init" in broker.log()
    worker = net.start("backend", "--account", "a1")
    assert worker.proc.wait(timeout=30) == ExitCode.KEYS
    assert "backend-a1.key_secret does not exist" in worker.log()
    r = net.fanoctl("status")
    assert r.returncode == ExitCode.KEYS and "fanoctl.key_secret does not exist" in r.stderr


def test_a_key_file_readable_by_others_is_refused(net):
    assert net.fanoctl("keys", "init").returncode == 0
    os.chmod(net.keys_dir / "server.key_secret", 0o640)
    broker = net.start("broker")
    assert broker.proc.wait(timeout=30) == ExitCode.KEYS
    assert "is readable by others (mode 0640)" in broker.log()
    os.chmod(net.keys_dir / "server.key_secret", 0o600)
    os.chmod(net.keys_dir / "module-explorer.key_secret", 0o644)
    explorer = net.start("explorer")
    assert explorer.proc.wait(timeout=30) == ExitCode.KEYS
    assert "module-explorer.key_secret is readable by others" in explorer.log()


def test_an_unlisted_key_is_refused_at_the_handshake(keyed):
    public, secret = zmq.curve_keypair()
    stranger = ClientKeys("stranger", public, secret, K.load_public(keyed.keys_dir, "server"))
    c = keyed.client("fanoctl", keys=stranger, timeout=1.0)
    with pytest.raises(BrokerUnavailable):
        c.ping()
    c.close()
    # no keys at all: a plain socket to the CURVE port gets nothing either
    raw = zmq.Context.instance().socket(zmq.DEALER)
    sockets.configure_socket(raw, "dealer", identity="fanoctl")
    raw.connect(keyed.env["FANO_BROKER"])
    raw.send_multipart(protocol.encode_request(protocol.Request("ping", "c1", {})))
    assert raw.poll(1000) == 0
    raw.close(linger=0)
    wait_for(lambda: "refused a CURVE client whose key is not authorized" in keyed.broker.log(), 5,
             what="the refusal in the broker's log")


def _code(call, *args, **kw) -> str:
    try:
        call(*args, **kw)
    except FanoError as exc:
        return exc.name
    return "OK"


def test_a_listed_key_gets_forbidden_outside_its_role(keyed):
    # a key that calls itself the scheduler on the wire is still the worker its key says it is
    worker = keyed.client("scheduler", keys=keyed.keys("backend-a2"))
    assert _code(worker.lease, "backend-a2", "a1") == "FORBIDDEN"        # a lease for another account
    explorer = keyed.client("module-explorer")
    tid = explorer.submit("k1", "explorer", "explorer.explore")["task"]["id"]
    assert _code(worker.call, "revoke", id=tid, epoch=0, worker="x") == "FORBIDDEN"
    lease = keyed.client("backend-a1").lease("backend-a1", "a1")
    assert lease["task"]["id"] == tid
    assert _code(worker.complete, tid, lease["epoch"], "forged") == "FORBIDDEN"
    documenter = keyed.client("module-documenter")
    assert _code(documenter.txn, "explorer", [txn.put("insights/x", 1)]) == "FORBIDDEN"
    assert _code(explorer.quota_set, "a1", "standard", ["5/1h"]) == "FORBIDDEN"   # quota from a module key
    assert _code(explorer.call, "grow_map", size=2**31) == "FORBIDDEN"
    assert _code(keyed.client("fanoctl").quota_set, "a1", "standard", ["5/1h"]) == "OK"
    r = keyed.fanoctl("--json", "quota", "show", "a1")
    assert r.returncode == 0, r.stderr


def test_revocation_takes_effect_without_a_restart(keyed):
    explorer = keyed.client("module-explorer")
    assert explorer.submit("r1", "explorer", "explorer.explore")["created"]
    # a subscriber with the explorer's key, as the module has
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sockets.configure_socket(sub, "sub")
    sub.setsockopt(zmq.SUBSCRIBE, protocol.EVENT_PREFIX)
    sockets.connect(sub, keyed.env["FANO_EVENTS"], keyed.keys("module-explorer"))
    op = keyed.client("fanoctl")

    def event_seen():
        op.submit(f"probe-{protocol.new_id()[:8]}", "adhoc", "ask")
        got = sub.poll(200)
        while sub.poll(0):
            sub.recv_multipart()
        return got
    wait_for(event_seen, 10, what="events on the CURVE event socket")
    r = keyed.fanoctl("keys", "revoke", "module-explorer")
    assert r.returncode == 0 and "revoked" in r.stdout, r.stderr
    # the open connection: every request now FORBIDDEN (within the broker's one-second look at the list)
    wait_for(lambda: _code(explorer.ping) == "FORBIDDEN", 5, what="the revoked key's requests to be refused")
    assert op.ping()["pid"] == keyed.broker.pid            # others carry on, no restart
    # a new connection with the revoked key fails its handshake
    assert not answers(keyed.client("module-explorer", timeout=0.5))
    # its event subscription is cut: nothing more arrives, while a listed subscriber still gets events
    wait_for(lambda: "re-binding" in keyed.broker.log(), 5, what="the broker to re-bind its event socket")
    while sub.poll(0):
        sub.recv_multipart()
    for n in range(5):
        op.submit(f"after-{n}", "adhoc", "ask")
    assert sub.poll(1000) == 0
    sub.close(linger=0)
    ctx.term()
    # put back: the same key is admitted again
    pub = K.load_public(keyed.keys_dir, "module-explorer").decode()
    assert keyed.fanoctl("keys", "add", "module-explorer", "--role", "module:explorer", "--", pub).returncode == 0
    wait_for(lambda: answers(keyed.client("module-explorer", timeout=0.5)), 10, what="the key to be admitted again")


def test_an_ask_completes_over_tcp_with_curve(keyed):
    """The tree's broker, scheduler and one sim worker, every endpoint tcp:// with CURVE: an ask is answered."""
    scheduler = keyed.start("scheduler", wait="scheduler started")
    keyed.start("backend", "--account", "a1", wait="serving account a1")
    wait_for(lambda: (st := keyed.query("fanoctl", "stats"))["synced"] and st["workers"] >= 1, 20,
             what="the scheduler to sync and see the worker")
    r = keyed.fanoctl("ask", "What is 2+2?", "--wait", "--max-wait", "60", timeout=90)
    assert r.returncode == 0, (r.stdout, r.stderr, scheduler.log())
    assert r.stdout.strip()
    st = keyed.query("fanoctl", "stats")
    assert st["assigned_total"] >= 1 and not st["errors"].get("FORBIDDEN")
    # the scheduler refuses a worker key speaking for another account, and weights from a module key
    with pytest.raises(FanoError) as exc:
        keyed.query("module-explorer", "weights", set={"explorer": 3})
    assert exc.value.code == ErrorCode.FORBIDDEN
    assert keyed.query("module-advisor", "weights", set={"explorer": 3})["weights"]["explorer"] == 3
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    sockets.configure_socket(dealer, "dealer", identity="backend-a1")
    sockets.connect(dealer, keyed.env["FANO_SCHEDULER"], keyed.keys("backend-a1"))
    dealer.send_multipart(protocol.encode_worker("ready", worker="backend-a2", account="a2", backend="sim",
                                                 modes=["standard"]))
    assert dealer.poll(3000)
    msg = protocol.decode_worker(dealer.recv_multipart())
    while msg["type"] == "heartbeat" and dealer.poll(3000):
        msg = protocol.decode_worker(dealer.recv_multipart())
    assert msg["type"] == "disconnect" and "speak for account 'a2'" in msg["reason"]
    dealer.close(linger=0)


def test_a_key_made_on_another_host_is_added(keyed, tmp_path):
    """The steps of docs/security.md § Keys, for a worker elsewhere: its key made there, its public half listed
    here, the server's public key installed there; only public keys cross."""
    other = tmp_path / "other"
    other.mkdir()
    other_cfg = write_config(other, accounts={"a2": ["standard"]})
    made = run_fanoctl(other_cfg, "--json", "keys", "generate", "backend-a2", env=keyed.env)
    assert made.returncode == 0, made.stderr
    server = keyed.fanoctl("keys", "server-key").stdout.strip()
    assert run_fanoctl(other_cfg, "keys", "server-key", "--", server, env=keyed.env).returncode == 0
    with environment(keyed.env):
        remote = load_config(other_cfg).client_keys("backend-a2")
    assert remote is not None and remote.server == server.encode()
    c = keyed.client("backend-a2", keys=remote, timeout=1.0)
    assert not answers(c)                                   # not listed here yet
    added = keyed.fanoctl("keys", "add", "backend-a2", str(other / "var" / "keys" / "backend-a2.key"),
                          "--role", "worker:a2")
    assert added.returncode == 0, added.stderr
    rows = {r["name"]: r for r in json.loads(keyed.fanoctl("--json", "keys", "ls").stdout)["keys"]}
    assert rows["backend-a2"]["public"] == remote.public.decode() and rows["backend-a2"]["role"] == "worker:a2"
    wait_for(lambda: answers(keyed.client("backend-a2", keys=remote, timeout=0.5)), 10,
             what="the added key to be admitted")
    c = keyed.client("backend-a2", keys=remote, retries=3)   # a loaded machine may be slow to handshake
    assert c.lease("backend-a2", "a2")["task"] is None     # its own account: allowed (nothing queued)
    assert _code(c.lease, "backend-a1", "a1") == "FORBIDDEN"
    c.close()


def _subscriber(net: Net, name: str):
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sockets.configure_socket(sub, "sub")
    sub.setsockopt(zmq.SUBSCRIBE, protocol.EVENT_PREFIX)
    sockets.connect(sub, net.env["FANO_EVENTS"], net.keys(name))
    return ctx, sub


def test_a_worker_key_reads_no_events(keyed):
    """A PUB socket cannot hold back one subscriber's messages: a worker's key is refused at the event
    socket's handshake, while a module's is let in."""
    op = keyed.client("fanoctl")
    worker_ctx, worker_sub = _subscriber(keyed, "backend-a1")
    module_ctx, module_sub = _subscriber(keyed, "module-explorer")

    def module_hears():
        op.submit(f"e-{protocol.new_id()[:8]}", "adhoc", "ask")
        return module_sub.poll(200)
    wait_for(module_hears, 10, what="events for the module's key")
    for n in range(5):
        op.submit(f"w-{n}", "adhoc", "ask")
    assert worker_sub.poll(1500) == 0
    wait_for(lambda: "a worker reads no events" in keyed.broker.log(), 5, what="the refusal in the broker's log")
    for ctx, sub in ((worker_ctx, worker_sub), (module_ctx, module_sub)):
        sub.close(linger=0)
        ctx.term()


def test_the_supervised_tree_runs_on_tcp_with_curve():
    """The repository's whole tree (broker, scheduler, every module, a sim worker) under supervisord with
    every endpoint tcp:// and the keys of ``fanoctl keys init``: every program starts, each works in its
    role (nothing FORBIDDEN), an ask is answered."""
    from ops.chaos import Tree
    from tests.support import TREE_PATHS
    root = short_tmpdir("ct")
    cfg = root / "fano.toml"
    cfg.write_text(TREE_PATHS.format(root=root) + '[accounts.quick-sim]\nbackend = "sim"\nmodes = ["standard"]\n'
                   'latency = { standard = { dist = "fixed", value = 0.2 } }\n')
    env = {"FANO_BROKER": f"tcp://127.0.0.1:{free_port()}", "FANO_EVENTS": f"tcp://127.0.0.1:{free_port()}",
           "FANO_SCHEDULER": f"tcp://127.0.0.1:{free_port()}"}
    assert run_fanoctl(cfg, "keys", "init", env=env).returncode == 0
    tree = Tree(root, cfg)
    tree.env.update(env)
    try:
        tree.start()   # every program RUNNING: none refused its keys
        r = run_fanoctl(cfg, "ask", "What is 2+2?", "--wait", "--max-wait", "60", env=env, timeout=90)
        assert r.returncode == 0 and r.stdout.strip(), (r.stdout, r.stderr)
        stats = json.loads(run_fanoctl(cfg, "--json", "status", env=env).stdout)
        assert "FORBIDDEN" not in stats["broker"]["errors"], stats["broker"]["errors"]
        assert {p["name"]: p["statename"] for p in tree.programs()} == {
            p["name"]: "RUNNING" for p in tree.programs()}
        # a module at work with its own key: the seed's notify reaches the explorer through its event
        # subscription, and it submits the seed's first turn into its namespace
        assert run_fanoctl(cfg, "seeds", "add", "Why does the Fano plane have 168 symmetries?", env=env).returncode == 0

        def explorer_tasks():
            res = run_fanoctl(cfg, "--json", "queue", "ls", "--module", "explorer", "--all", env=env)
            return res.returncode == 0 and json.loads(res.stdout)["tasks"]
        wait_for(explorer_tasks, 60, interval=0.5, what="the explorer to submit the seed's first turn")
        stats = json.loads(run_fanoctl(cfg, "--json", "status", env=env).stdout)
        assert "FORBIDDEN" not in stats["broker"]["errors"], stats["broker"]["errors"]
    finally:
        orphans = tree.stop()
        shutil.rmtree(root, ignore_errors=True)
    assert orphans == []


def test_a_worker_whose_key_has_another_role_waits_and_joins_once_it_is_fixed(keyed):
    """A key listed for the wrong account (an operator's typo) is refused by the scheduler; the worker says so
    once, asks again every few seconds rather than in a loop, and joins without a restart once the role is
    right (a condition that passes must not end FATAL)."""
    public = K.load_public(keyed.keys_dir, "backend-a1").decode()
    assert keyed.fanoctl("keys", "add", "backend-a1", "--role", "worker:a2", "--", public).returncode == 0
    keyed.start("scheduler", wait="scheduler started")
    worker = keyed.start("backend", "--account", "a1", wait="serving account a1")
    wait_for(lambda: "the scheduler refuses this worker: FORBIDDEN: worker:a2 may not speak for account 'a1'"
             in worker.log(), 15, what="the worker to report the refusal")
    time.sleep(4)   # a window to count the worker's asks in (nothing to poll for: it must stay quiet)
    forbidden = keyed.query("fanoctl", "stats")["errors"].get("FORBIDDEN", 0)
    assert 1 <= forbidden <= 4, forbidden                    # one ask per liveness period, not a spin
    assert worker.log().count("the scheduler refuses this worker") == 1, worker.log()
    assert keyed.fanoctl("keys", "add", "backend-a1", "--role", "worker:a1", "--", public).returncode == 0
    wait_for(lambda: keyed.query("fanoctl", "stats")["workers"] == 1, 15, what="the worker to join")
    assert worker.alive()
