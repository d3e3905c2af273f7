"""Keys on disk (shared/keys.py), roles (shared/roles.py) and the role rules of the broker
(services/broker/roles.py, driven through a real BrokerCore on LMDB) and of the scheduler
(services/scheduler/roles.py). The same rules over tcp:// with CURVE: tests/integration/test_curve.py."""
from __future__ import annotations

import os
import stat

import pytest

from services.broker.core import ReadLater
from services.scheduler.roles import refusal
from shared import keys as K
from shared import protocol
from shared.config import load_config
from shared.errors import ErrorCode, ExitCode, FanoError
from shared.roles import NOBODY, OPERATOR_ROLE, Role, of_identity, of_program, program_role
from tests.unit.corehelp import CoreHarness, write_config

# --- roles ---------------------------------------------------------------------------------------------


def test_roles_parse_and_come_from_program_names():
    assert Role.parse("worker:claude") == Role("worker", "claude")
    assert str(Role.parse("module:explorer")) == "module:explorer"
    assert Role.parse("operator") == OPERATOR_ROLE
    for bad in ("worker", "worker:", "module:Bad Name", "root", "operator:x", "nobody"):
        with pytest.raises(ValueError):
            Role.parse(bad)
    assert program_role("backend-a1") == Role("worker", "a1")
    assert program_role("module-documenter") == Role("module", "documenter")
    assert program_role("scheduler") == Role("scheduler")
    assert program_role("fanoctl") == OPERATOR_ROLE
    assert program_role("bench-main") is None and of_program("bench-main") == OPERATOR_ROLE
    assert of_identity(b"backend-a1#123.abcd") == Role("worker", "a1")


# --- keys on disk ----------------------------------------------------------------------------------------


def test_init_makes_private_files_and_lists_every_program(tmp_path):
    kd = tmp_path / "keys"
    made = K.init(kd, {"scheduler": Role("scheduler"), "backend-a1": Role("worker", "a1")})
    assert made == ["server", "scheduler", "backend-a1"]
    assert stat.S_IMODE(kd.stat().st_mode) == 0o700
    for name in ("server", "scheduler", "backend-a1"):
        assert stat.S_IMODE((kd / f"{name}.key_secret").stat().st_mode) == 0o600
    assert stat.S_IMODE((kd / "authorized").stat().st_mode) == 0o600
    entries, problems = K.read_authorized(kd / "authorized")
    assert problems == [] and {(e.name, str(e.role)) for e in entries} == {("scheduler", "scheduler"),
                                                                            ("backend-a1", "worker:a1")}
    ck = K.client_keys(kd, "backend-a1")
    assert ck.server == K.load_public(kd, "server") and ck.public.decode() in {e.public for e in entries}
    assert K.init(kd, {"scheduler": Role("scheduler")}) == []   # what exists is kept


def test_a_secret_key_readable_by_others_is_refused(tmp_path):
    kd = tmp_path / "keys"
    K.init(kd, {"module-explorer": Role("module", "explorer")})
    path = kd / "module-explorer.key_secret"
    os.chmod(path, 0o640)
    with pytest.raises(K.KeysError, match=r"readable by others \(mode 0640\).*chmod 600"):
        K.client_keys(kd, "module-explorer")
    os.chmod(path, 0o604)
    with pytest.raises(K.KeysError, match="readable by others"):
        K.client_keys(kd, "module-explorer")
    os.chmod(path, 0o600)
    assert K.client_keys(kd, "module-explorer").name == "module-explorer"
    os.chmod(kd / "server.key_secret", 0o644)
    with pytest.raises(K.KeysError, match="server.key_secret is readable by others"):
        K.server_keys(kd)
    os.chmod(kd / "server.key_secret", 0o600)
    os.chmod(kd / "authorized", 0o622)
    with pytest.raises(K.KeysError, match="may be changed by other users"):
        K.server_keys(kd)
    entries, problems = K.read_authorized(kd / "authorized")   # a server rereading it fails closed
    assert entries == [] and "admits nobody" in problems[0]
    os.chmod(kd / "authorized", 0o600)
    os.chmod(kd, 0o755)
    with pytest.raises(K.KeysError, match=r"must be this user's alone \(mode 0755.*chmod 700"):
        K.client_keys(kd, "module-explorer")
    assert K.KeysError("x").exit_code == ExitCode.KEYS


def test_authorized_bad_lines_admit_nobody_and_revoke_removes(tmp_path):
    kd = tmp_path / "keys"
    pub = K.generate(kd, "backend-a1", Role("worker", "a1"))
    K.authorize(kd, "ops-laptop", OPERATOR_ROLE, K.write_pair(kd, "other", "operator").decode())
    with open(kd / "authorized", "a") as f:
        f.write("not-a-key worker:a1 x\n" + pub[:-1] + "! root y\n")
    entries, problems = K.read_authorized(kd / "authorized")
    assert [e.name for e in entries] == ["backend-a1", "ops-laptop"] and len(problems) == 2
    assert [e.name for e in K.revoke(kd, "backend-a1")] == ["backend-a1"]
    assert [e.name for e in K.read_authorized(kd / "authorized")[0]] == ["ops-laptop"]
    assert K.revoke(kd, "backend-a1") == []


def test_config_asks_for_keys_only_for_network_endpoints(tmp_path, monkeypatch):
    cfg = load_config(write_config(tmp_path))
    assert cfg.keys_dir == tmp_path / "var" / "keys"
    assert not cfg.networked and cfg.client_keys("backend-a1") is None and cfg.server_keys() is None
    with pytest.raises(K.KeysError, match="does not exist"):
        cfg.client_keys("fanoctl", "tcp://127.0.0.1:1")   # a command line's tcp:// endpoint counts too
    monkeypatch.setenv("FANO_BROKER", "tcp://127.0.0.1:1")
    cfg = load_config(write_config(tmp_path))
    assert cfg.networked
    with pytest.raises(K.KeysError, match=r"keys directory .*/var/keys does not exist \(fanoctl keys init"):
        cfg.client_keys("backend-a1")
    K.make_dir(cfg.keys_dir)
    with pytest.raises(K.KeysError, match=r"backend-a1.key_secret does not exist \(fanoctl keys init"):
        cfg.client_keys("backend-a1")
    with pytest.raises(K.KeysError, match="server.key_secret does not exist"):
        cfg.server_keys()
    K.init(cfg.keys_dir, {"backend-a1": Role("worker", "a1")})
    assert cfg.client_keys("backend-a1").name == "backend-a1" and cfg.server_keys() is not None


# --- the broker's rules (ipc://: the role of the identity's program name; tcp://: the key's) -------------


@pytest.fixture
def core(tmp_path):
    h = CoreHarness.make(tmp_path)
    yield h
    h.close()


def _as(h: CoreHarness, who: bytes | Role, cmd: str, **args):
    """Run one request as ``who``: a socket identity (ipc://) or a role proven by a CURVE key (tcp://)."""
    req = h.request(cmd, args)
    frames = protocol.encode_request(req)
    message = (b"client#1.x", frames, who) if isinstance(who, Role) else (who, frames)
    assert h.core is not None
    replies, events, _ = h.core.handle_batch([message])
    h.events.extend(events)
    frames_out = replies[0][1]
    assert not isinstance(frames_out, ReadLater)   # reads are deferred only when asked to
    return protocol.decode_reply(frames_out).raise_for_error()


def _forbidden(h, who, cmd, **args) -> FanoError:
    with pytest.raises(FanoError) as exc:
        _as(h, who, cmd, **args)
    assert exc.value.code == ErrorCode.FORBIDDEN, exc.value
    return exc.value


WORKER_A1, WORKER_A2 = b"backend-a1#1.a", Role("worker", "a2")
EXPLORER, DOCUMENTER = b"module-explorer#2.b", Role("module", "documenter")


def _task(key: str, module: str = "explorer") -> dict:
    return {"key": key, "module": module, "kind": f"{module}.explore", "payload": {}}


def test_a_worker_leases_and_reports_only_for_its_account(core):
    tid = _as(core, EXPLORER, "submit", task=_task("t1"))["task"]["id"]
    err = _forbidden(core, WORKER_A2, "lease", worker="backend-a2", account="a1")
    assert err.details == {"role": "worker:a2", "cmd": "lease"} and "serves account a2" in err.message
    lease = _as(core, WORKER_A1, "lease", worker="backend-a1", account="a1")
    assert lease["task"]["id"] == tid
    for cmd, extra in (("turn_begin", {}), ("complete", {"result": "forged"}),
                       ("fail", {"error_class": "terminal"}), ("renew", {})):
        err = _forbidden(core, WORKER_A2, cmd, id=tid, epoch=lease["epoch"], **extra)
        assert "leased to account 'a1'" in err.message
    for cmd in ("get", "list", "kv_scan", "quota_show", "events"):   # a worker reads nothing
        _forbidden(core, WORKER_A1, cmd, **({"id": tid} if cmd == "get" else {"module": "explorer"}
                                             if cmd == "kv_scan" else {}))
    assert _as(core, WORKER_A1, "complete", id=tid, epoch=lease["epoch"], result="ok")["state"] == "DONE"


def test_a_cut_off_workers_old_lease_is_stale_not_forbidden_once_another_account_holds_the_task(core):
    """A worker cut off from the tree (a partition; docs/tasks.md § Hung workers) reports with the epoch of a
    lease that was revoked and given to another account: fencing answers it (STALE_EPOCH, so it drops the job
    quietly), while the live lease's epoch stays FORBIDDEN to it."""
    tid = _as(core, EXPLORER, "submit", task=_task("t-cut"))["task"]["id"]
    old = _as(core, WORKER_A2, "lease", worker="backend-a2", account="a2")
    assert old["task"]["id"] == tid
    _as(core, b"scheduler#3.c", "revoke", id=tid, epoch=old["epoch"], worker="backend-a2")
    live = _as(core, WORKER_A1, "lease", worker="backend-a1", account="a1")
    assert live["task"]["id"] == tid and live["epoch"] > old["epoch"]
    with pytest.raises(FanoError) as exc:
        _as(core, WORKER_A2, "complete", id=tid, epoch=old["epoch"], result="late")
    assert exc.value.code == ErrorCode.STALE_EPOCH and "a1" not in exc.value.message, exc.value
    err = _forbidden(core, WORKER_A2, "complete", id=tid, epoch=live["epoch"], result="forged")
    assert "leased to account 'a1'" in err.message
    assert _as(core, WORKER_A1, "complete", id=tid, epoch=live["epoch"], result="ok")["state"] == "DONE"


def test_a_module_writes_only_its_own_namespace_and_tasks(core):
    _forbidden(core, DOCUMENTER, "submit", task=_task("t1", "explorer"))
    _forbidden(core, DOCUMENTER, "txn", module="explorer", ops=[{"op": "put", "key": "k", "value": 1}])
    err = _forbidden(core, EXPLORER, "txn", module="explorer",
                     ops=[{"op": "submit", "task": _task("t2", "documenter")}])
    assert "submits a task of module 'documenter'" in err.message
    tid = _as(core, EXPLORER, "submit", task=_task("t3"))["task"]["id"]
    _forbidden(core, DOCUMENTER, "cancel", id=tid)
    _forbidden(core, DOCUMENTER, "set_priority", id=tid, priority=5)
    _as(core, EXPLORER, "cancel", id=tid)
    err = _forbidden(core, DOCUMENTER, "txn", module="documenter", ops=[{"op": "ack", "task_id": tid}])
    assert "acks task" in err.message
    assert _as(core, DOCUMENTER, "txn", module="documenter", ops=[{"op": "put", "key": "k", "value": 1}])["applied"]
    assert _as(core, EXPLORER, "kv_get", module="documenter", key="k")["value"] == 1   # reading is open


def test_only_the_operator_changes_quotas_weights_map_and_retention(core):
    for who in (EXPLORER, WORKER_A1, b"scheduler#3.c", DOCUMENTER, NOBODY):
        _forbidden(core, who, "quota_set", account="a1", mode="standard", windows=["5/1h"])
        _forbidden(core, who, "cooldown", account="a1", until=1e9)
        _forbidden(core, who, "account_pause", account="a1")
        _forbidden(core, who, "compact")
        _forbidden(core, who, "grow_map", size=2**31)   # answered by the server after the batch: refused first
    _forbidden(core, b"scheduler#3.c", "txn", module="explorer", ops=[{"op": "put", "key": "w", "value": 1}])
    assert _as(core, b"scheduler#3.c", "txn", module="scheduler", ops=[{"op": "put", "key": "weights",
                                                                          "value": {}}])["applied"]
    assert _as(core, b"fanoctl#4.d", "quota_set", account="a1", mode="standard", windows=["5/1h"])
    assert _as(core, Role("operator"), "compact") is not None
    err = _forbidden(core, NOBODY, "ping")
    assert "revoked" in err.message
    assert core.core.errors["FORBIDDEN"] >= 20


# --- the scheduler's rules -------------------------------------------------------------------------------


class _W:
    account = "a1"


def test_the_scheduler_forgets_a_worker_whose_key_was_revoked_and_voids_its_lease():
    from tests.unit.test_scheduler_logic import make_core, submitted
    core = make_core()
    a1 = Role("worker", "a1")
    core.on_message(b"w1", protocol.encode_worker("ready", worker="backend-a1", account="a1", backend="sim",
                                                  modes=["standard"]), a1)
    submitted(core, 7)
    core.tick()
    assert [(i, t) for i, t, f in core.take_output() if t == "assign"] == [(b"w1", "assign")]
    core.on_message(b"w1", protocol.encode_worker("heartbeat", worker="backend-a1", task_id=7), a1)
    assert core.workers.get(b"w1") is not None
    core.on_message(b"w1", protocol.encode_worker("heartbeat", worker="backend-a1", task_id=7), NOBODY)
    assert core.workers.get(b"w1") is None and core.errors["FORBIDDEN"] == 1
    out = core.take_output()
    assert any(t == "disconnect" and "revoked" in f["reason"] for _, t, f in out)
    # dropped as a silent worker is: every lease it holds, or is granted later, is revoked at the broker
    assert "backend-a1" in core.revocations.dropped


def test_the_scheduler_refuses_messages_outside_the_role():
    worker = Role("worker", "a1")
    assert refusal(worker, {"type": "ready", "account": "a1"}) is None
    assert "speak for account 'a2'" in refusal(worker, {"type": "ready", "account": "a2"}).message
    assert refusal(Role("worker", "a2"), {"type": "done", "task_id": 1}, _W()) is not None
    assert refusal(Role("module", "explorer"), {"type": "ready", "account": "a1"}) is not None
    weights = {"type": "query", "what": "weights", "cid": "c", "set": {"explorer": 3}}
    assert refusal(Role("module", "explorer"), weights).code == ErrorCode.FORBIDDEN
    assert refusal(Role("module", "advisor"), weights) is None and refusal(OPERATOR_ROLE, weights) is None
    assert refusal(Role("module", "explorer"), {"type": "query", "what": "weights", "cid": "c"}) is None
    assert refusal(NOBODY, {"type": "query", "what": "stats", "cid": "c"}) is not None


# --- fanoctl keys ----------------------------------------------------------------------------------------


def test_fanoctl_keys_commands(tmp_path):
    import json

    from click.testing import CliRunner

    from cli.fanoctl import main
    cfg = write_config(tmp_path, accounts={"a1": ["standard"]})

    def run(*args):
        return CliRunner().invoke(main, ["--config", str(cfg), *args], catch_exceptions=False)
    made = run("--json", "keys", "init")
    assert made.exit_code == 0 and "backend-a1" in json.loads(made.stdout)["made"]
    rows = {r["name"]: r["role"] for r in json.loads(run("--json", "keys", "ls").stdout)["keys"]}
    assert rows == {"scheduler": "scheduler", "fanoctl": "operator", "backend-a1": "worker:a1",
                    "module-explorer": "module:explorer", "module-documenter": "module:documenter",
                    "module-researcher": "module:researcher", "module-advisor": "module:advisor",
                    "web": "operator"}
    odd = run("keys", "generate", "laptop")
    assert odd.exit_code == 2 and "say its --role" in odd.output
    assert run("keys", "generate", "laptop", "--role", "root").exit_code == 2
    assert run("keys", "generate", "laptop", "--role", "operator").exit_code == 0
    again = run("keys", "generate", "laptop", "--role", "operator")
    assert again.exit_code == 1 and "--force replaces it" in again.output
    assert run("keys", "generate", "laptop", "--role", "operator", "--force").exit_code == 0
    assert run("keys", "revoke", "laptop").exit_code == 0
    gone = run("keys", "revoke", "laptop")
    assert gone.exit_code == 1 and "no authorized key named 'laptop'" in gone.output
    bad = run("keys", "add", "x", "not-a-key", "--role", "operator")
    assert bad.exit_code == ExitCode.KEYS and "not a CURVE public key" in bad.output
    dashed = "-" + K.load_public(tmp_path / "var" / "keys", "server").decode()[1:]   # Z85 keys may start with '-'
    unquoted = run("keys", "add", "y", dashed, "--role", "operator")
    assert unquoted.exit_code == 2 and "goes after '--'" in unquoted.output
    assert run("keys", "add", "y", "--role", "operator", "--", dashed).exit_code == 0
    assert dashed in run("keys", "ls").stdout
    server = run("keys", "server-key").stdout.strip()
    assert server == K.load_public(tmp_path / "var" / "keys", "server").decode()
    # a worker host installs the server's key, given as a key (after '--') or as the copied server.key file
    (tmp_path / "h2").mkdir()
    other = write_config(tmp_path / "h2", accounts={"a1": ["standard"]})

    def run2(*args):
        return CliRunner().invoke(main, ["--config", str(other), *args], catch_exceptions=False)
    assert run2("keys", "server-key", "--", server).exit_code == 0
    assert run2("keys", "server-key").stdout.strip() == server
    assert run2("keys", "server-key", "not-a-key").exit_code == ExitCode.KEYS
    assert run2("keys", "server-key", str(tmp_path / "var" / "keys" / "server.key")).exit_code == 0
    assert run2("keys", "server-key").stdout.strip() == server


def test_config_check_finds_missing_or_unsafe_keys_before_ops_up_touches_the_tree(tmp_path, monkeypatch):
    from ops import config_check
    path = write_config(tmp_path, accounts={"a1": ["standard"]})
    assert config_check.problems(load_config(path)) == []          # ipc://: no keys needed
    monkeypatch.setenv("FANO_SCHEDULER", "tcp://127.0.0.1:1")
    cfg = load_config(path)
    assert len(config_check.problems(cfg)) == 1 + len(cfg.clients)   # the server's keys and every client's
    K.init(cfg.keys_dir, {name: program_role(name) for name in cfg.clients})
    assert config_check.problems(cfg) == []
    os.chmod(cfg.keys_dir / "backend-a1.key_secret", 0o644)
    assert [p for p in config_check.problems(cfg) if "backend-a1.key_secret is readable by others" in p]


def test_a_module_refused_for_its_role_backs_off_instead_of_ending(tmp_path, caplog):
    """A module whose key is listed with another role is refused FORBIDDEN: that passes once the operator
    fixes the authorized list, so the module backs off and retries rather than crash into FATAL."""
    import logging

    import zmq

    from shared.clock import FakeClock
    from tests.unit.test_modules_base import Mod, RefusingClient

    class Forbidding(RefusingClient):
        def unconsumed(self, *a, **k):
            if self.refusals:
                self.refusals.pop(0)
                self.sweeps += 1
                raise FanoError(ErrorCode.FORBIDDEN, "module:documenter may not unconsumed")
            return super().unconsumed(*a, **k)
    caplog.set_level(logging.INFO)
    client = Forbidding([1])
    mod = Mod(client, tmp_path)
    mod.clock = FakeClock()
    mod.plan_interval = mod.sweep_interval = 1000.0
    mod._next_plan = mod._next_sweep = mod._backoff_until = 0.0
    mod._refused = None
    ctx = zmq.Context()
    mod.sub = ctx.socket(zmq.SUB)
    try:
        mod.loop()                                   # refused: no exception, the module waits
        assert client.sweeps == 1 and "broker refuses new work (FORBIDDEN" in caplog.text
        mod.clock.advance(mod.storage_backoff)
        mod.loop()                                   # the role was fixed: the work is done
        assert mod.applied == 1 and "accepts this module's work again" in caplog.text
    finally:
        mod.sub.close(linger=0)
        ctx.term()


def test_fanoctl_keys_refuse_a_role_for_an_account_or_module_the_configuration_does_not_have(tmp_path):
    """`keys add laptop --role worker:a11` (a typo) made a key the broker and the scheduler then refused at every
    message (FORBIDDEN); the role's account or module is checked against fano.toml, as every name is."""
    from click.testing import CliRunner

    from cli.fanoctl import main
    cfg = write_config(tmp_path, accounts={"a1": ["standard"]})

    def run(*args):
        return CliRunner().invoke(main, ["--config", str(cfg), *args], catch_exceptions=False)
    assert run("keys", "init").exit_code == 0
    public = K.load_public(tmp_path / "var" / "keys", "backend-a1").decode()
    for args, what in ((("keys", "add", "laptop", "--role", "worker:a11", "--", public), "account 'a11' (known: a1)"),
                       (("keys", "add", "laptop", "--role", "module:explorr", "--", public), "module 'explorr'"),
                       (("keys", "generate", "backend-a11"), "account 'a11' (known: a1)"),
                       (("keys", "generate", "helper", "--role", "module:explorr"), "module 'explorr'")):
        res = run(*args)
        assert res.exit_code == ExitCode.FAILURE and f"fanoctl: unknown {what}" in res.output, (args, res.output)
    assert "laptop" not in run("keys", "ls").stdout and not (tmp_path / "var" / "keys" / "helper.key").exists()
    assert run("keys", "add", "laptop", "--role", "worker:a1", "--", public).exit_code == 0
    assert run("keys", "generate", "helper", "--role", "module:documenter").exit_code == 0
    # a configuration that does not load does not lock the keys out: the names are not checked then
    cfg.write_text(cfg.read_text() + "[brokr]\n")
    assert run("keys", "generate", "backend-a11").exit_code == 0
