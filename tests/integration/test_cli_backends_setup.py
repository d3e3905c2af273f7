"""``fanoctl backends check|login``: run the account's provider locally, never print a secret."""
import json

import pytest

from ops.standins.chat_site import ChatSiteServer
from tests.browser_support import profile_alive
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


WEB_ACCOUNT = """
[accounts.web]
backend = "chatgpt"
url = "{url}"
chromium = "{chromium}"
login_timeout = 2
ready_timeout = 8
"""


@pytest.fixture
def login_wall(config, chromium_path):
    """The chat-site stand-in behind a login wall that nobody signs in to, and a web account on it."""
    site = ChatSiteServer(login_required=True).start()
    with open(config, "a") as f:
        f.write(WEB_ACCOUNT.format(url=site.url, chromium=chromium_path))
    yield site
    site.stop()


@pytest.mark.browser
def test_a_login_that_never_signs_in_fails_with_one_line_and_exit_1(config, login_wall):
    res = fanoctl(config, "backends", "login", "web", "--headless")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "signed in" not in res.stdout
    errors = [line for line in res.stderr.splitlines() if line.startswith("fanoctl: ")]
    assert errors == ["fanoctl: web: login failed: no signed-in page within 2s"], res.stderr
    res = fanoctl(config, "--json", "backends", "login", "web", "--headless")
    assert res.returncode == 1, res.stdout + res.stderr
    assert json.loads(res.stdout) == {"account": "web", "backend": "chatgpt", "ok": False,
                                      "detail": "no signed-in page within 2s"}
    assert login_wall.prompts() == []
    assert profile_alive(config.parent / "data" / "backends" / "web" / "profile") == []


@pytest.mark.browser
def test_a_login_that_signs_in_reports_it(config, login_wall):
    login_wall.control(auto_login=True)        # the wall signs itself in, like a person would
    res = fanoctl(config, "--json", "backends", "login", "web", "--headless")
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(res.stdout)
    assert report["ok"] is True and report["account"] == "web" and "signed in" in report["detail"]
