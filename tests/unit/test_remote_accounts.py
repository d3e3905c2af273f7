"""An account whose worker runs on another host (docs/remote.md): ``remote = true`` on the server, the worker
host's supervisord with only the backend programs, and the keys each side checks before it starts."""
import sys

import zmq

from ops import config_check
from ops.supervisor_conf import render, workers_only
from shared import keys as K
from shared.config import REPO_ROOT, load_config
from shared.roles import Role

SERVER = """
[accounts.near]
backend = "sim"

[accounts.far]
backend = "claude"
modes = ["standard", "deep"]
remote = true
api_key_file = "/only/on/the/worker/host"

[quotas.far.deep]
windows = ["5/day@00:00 UTC"]
"""


def _config(tmp_path, text):
    path = tmp_path / "fano.toml"
    path.write_text(f'[paths]\nkeys_dir = "{tmp_path}/keys"\n' + text)
    return load_config(path)


def test_the_server_knows_a_remote_account_but_runs_no_program_and_makes_no_key_for_it(tmp_path):
    cfg = _config(tmp_path, SERVER)
    assert cfg.account_names == ("near", "far") and cfg.account("far").remote   # names, modes, quotas kept
    assert [a.name for a in cfg.local_accounts] == ["near"]
    assert "[program:backend-near]" in render(cfg, sys.executable)
    assert "backend-far" not in render(cfg, sys.executable)
    assert "backend-far" not in cfg.clients and "backend-near" in cfg.clients
    # its own settings live on the worker host: the server does not check them (an api_key_file there)
    assert config_check.problems(cfg) == []


def test_a_worker_hosts_supervisord_runs_only_the_backend_programs():
    text = (REPO_ROOT / "supervisord.conf").read_text()
    kept = workers_only(text)
    assert "[program:" in text and "[program:" not in kept
    for section in ("[unix_http_server]", "[supervisord]", "[supervisorctl]", "[rpcinterface:supervisor]",
                    "[include]"):
        assert section in kept
    assert "umask=077" in kept and "var/supervisor/*.conf" in kept


def test_a_worker_host_checks_only_its_workers_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("FANO_BROKER", "tcp://10.0.0.1:5555")
    monkeypatch.setenv("FANO_SCHEDULER", "tcp://10.0.0.1:5557")
    cfg = _config(tmp_path, '[accounts.far]\nbackend = "sim"\n')
    keys_dir = K.make_dir(tmp_path / "keys")
    assert config_check.problems(cfg, workers=True) != []          # no key of its worker yet
    K.generate(keys_dir, "backend-far", Role("worker", "far"))
    K.install_server_public(keys_dir, zmq.curve_keypair()[0].decode())
    assert config_check.problems(cfg, workers=True) == []          # its worker's key and the server's public one
    assert config_check.main(["--config", str(cfg.path), "--workers"]) == 0
    # the same host checked as a server would need the server key pair and every program's key
    assert any("server.key_secret" in p for p in config_check.problems(cfg))


def test_ops_up_workers_gets_a_supervisord_conf_with_absolute_paths_and_only_the_backends(tmp_path):
    """What ``ops/up --workers`` starts supervisord with (``ops.supervisor_conf --workers-conf``)."""
    from ops.supervisor_conf import main
    cfg = _config(tmp_path, '[accounts.far]\nbackend = "sim"\n')
    out, conf = tmp_path / "backends.conf", tmp_path / "workers.ini"
    assert main(["--config", str(cfg.path), "--out", str(out), "--workers-conf", str(conf)]) == 0
    text = conf.read_text()
    assert "%(here)s" not in text and "[program:" not in text
    assert f"files = {REPO_ROOT}/var/supervisor/*.conf" in text
    assert f"file={REPO_ROOT}/var/run/supervisor.sock" in text   # the socket ops/down and supervisorctl use
    assert "[program:backend-far]" in out.read_text()


def test_a_worker_host_without_the_servers_endpoints_is_refused_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.delenv("FANO_BROKER", raising=False)
    monkeypatch.setenv("FANO_SCHEDULER", "tcp://10.0.0.1:5557")
    cfg = _config(tmp_path, '[accounts.far]\nbackend = "sim"\n')
    found = [p for p in config_check.problems(cfg, workers=True) if p.startswith("endpoints:")]
    assert len(found) == 1 and "FANO_BROKER is ipc://" in found[0] and "docs/remote.md" in found[0]
    assert not [p for p in config_check.problems(cfg) if p.startswith("endpoints:")]   # a server: ipc is fine
