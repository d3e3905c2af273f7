"""``fanoctl backends check|login``: run the account's provider locally, never print a secret."""
import json

import pytest

from tests.support import run_fanoctl

pytestmark = pytest.mark.integration

PLANTED = "sk-planted-DO-NOT-PRINT-7f3a9c"


@pytest.fixture
def config(tmp_path):
    root = tmp_path   # nothing here listens on ipc://: no need for a short path
    path = root / "fano.toml"
    path.write_text(f"""
[paths]
run_dir = "{root}/run"
data_dir = "{root}/data"
log_dir = "{root}/log"
[accounts.s1]
backend = "sim"
[accounts.api]
backend = "openai"
base_url = "http://127.0.0.1:9/v1"
model = "m"
api_key_env = "FANO_TEST_PLANTED_KEY"
""")
    yield path


def fanoctl(config, *args):
    return run_fanoctl(config, *args, env={"FANO_TEST_PLANTED_KEY": PLANTED})


def test_check_a_sim_account(config):
    res = fanoctl(config, "--json", "backends", "check", "s1")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"account": "s1", "backend": "sim", "ok": True,
                                      "detail": "sim: nothing to check"}


def test_check_an_unknown_account_is_a_config_error(config):
    res = fanoctl(config, "backends", "check", "nope")
    assert res.returncode == 5
    assert "no account named 'nope'" in res.stderr and "s1" in res.stderr


def test_check_an_unreachable_server_fails_without_printing_the_key(config):
    res = fanoctl(config, "--json", "backends", "check", "api")
    assert res.returncode == 1
    report = json.loads(res.stdout)
    assert report["ok"] is False and "not reachable" in report["detail"]
    assert PLANTED not in res.stdout + res.stderr


def test_login_on_accounts_without_a_browser_explains_itself(config):
    res = fanoctl(config, "backends", "login", "s1")
    assert res.returncode == 0 and "needs no sign-in" in res.stdout
    res = fanoctl(config, "backends", "login", "api")
    assert res.returncode == 0 and "no interactive login" in res.stdout and PLANTED not in res.stdout
