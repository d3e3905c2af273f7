"""The README's quick start, as written, in a fresh copy of the repository (its own venv, var/, sockets).

`ops/up` installs and starts the tree, `fanoctl ask "hello" --wait` answers, a second `ops/up` is a
no-op, a changed fano.toml is applied by `ops/up` (a new account with its quota, a changed account
restarted and no other), and `ops/down` leaves no process behind. Slow (it creates a virtualenv and
installs the project from the package registries, as a new user would), so it is in the crash tier.
"""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.crash, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
EXTRA_ACCOUNT = """
[accounts.extra-sim]
backend = "sim"
modes = ["standard"]
seed = 9
latency = { standard = { dist = "fixed", value = 0.1 } }

[quotas.extra-sim.standard]
windows = ["5000/day@00:00 UTC"]
"""


def _copy_checkout(dest: Path) -> None:
    """The tracked files as they are in the working tree (uncommitted edits included), nothing else."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for rel in filter(None, listed.decode().split("\0")):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FANO_", "VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = ":".join(p for p in env.get("PATH", "").split(":") if ".venv" not in p)
    return env


def _pids_under(root: Path) -> list[int]:
    """Processes whose command line names the copy (its venv's python, supervisord, Chromium...)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if str(root).encode() in cmd:
                found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def checkout():
    top = Path(tempfile.mkdtemp(prefix="fq", dir="/tmp"))
    root = top / "f"
    _copy_checkout(root)
    try:
        yield root
    finally:
        subprocess.run(["bash", "ops/down"], cwd=root, env=_env(), capture_output=True, timeout=60)
        for pid in _pids_under(root):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(top, ignore_errors=True)


def run(root: Path, *cmd: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), cwd=root, env=_env(), capture_output=True, text=True, timeout=timeout)


def fanoctl(root: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return run(root, str(root / ".venv/bin/fanoctl"), *args, timeout=timeout)


def program_pids(root: Path) -> dict[str, int]:
    out = run(root, str(root / ".venv/bin/supervisorctl"), "-c", "supervisord.conf", "status").stdout
    pids = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[1] == "RUNNING" and parts[2] == "pid":
            pids[parts[0]] = int(parts[3].rstrip(","))
    return pids


def test_the_quick_start_works_as_written(checkout):
    up = run(checkout, "bash", "ops/up", timeout=600)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "Fano is up" in up.stdout
    # the README's quick start: the web panel's URL, as fano.toml sets it (the program itself is checked
    # RUNNING with the others; its pages are tested in tests/integration/test_web_panel.py)
    assert "Control panel: http://127.0.0.1:8080/" in up.stdout, up.stdout
    answer = fanoctl(checkout, "ask", "hello", "--wait", timeout=120)
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.startswith("sim answer to: hello")


def test_a_second_ops_up_changes_nothing(checkout):
    before = program_pids(checkout)
    again = run(checkout, "bash", "ops/up")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already running" in again.stdout and "restarting" not in again.stdout
    assert program_pids(checkout) == before


def test_ops_up_applies_a_new_account_its_quota_and_a_changed_account(checkout):
    before = program_pids(checkout)
    config = checkout / "fano.toml"
    text = config.read_text()
    # change one existing account's setting (its seed): only that account's program restarts
    assert "\n[accounts.claude-sim]\n" in text
    head, tail = text.split("\n[accounts.claude-sim]\n", 1)
    assert "\nseed = 3\n" in tail
    config.write_text(head + "\n[accounts.claude-sim]\n" + tail.replace("\nseed = 3\n", "\nseed = 4242\n", 1)
                      + EXTRA_ACCOUNT)
    up = run(checkout, "bash", "ops/up")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "restarting" in up.stdout            # the quota is read by the broker at start
    after = wait_for(lambda: (lambda p: p if "backend-extra-sim" in p else None)(program_pids(checkout)),
                     30, what="the new account's program running")
    assert after["backend-claude-sim"] != before["backend-claude-sim"]
    for name in ("backend-chatgpt-sim", "backend-gemini-sim"):
        assert after[name] == before[name], name

    def extra_quota():
        res = fanoctl(checkout, "--json", "quota", "show", "extra-sim")
        if res.returncode != 0:
            return None
        quotas = [q for q in json.loads(res.stdout)["quotas"] if q["account"] == "extra-sim"]
        return quotas or None
    quotas = wait_for(extra_quota, 30, what="the new account's quota in the broker")
    assert quotas[0]["windows"][0]["limit"] == 5000
    answer = fanoctl(checkout, "ask", "on the new one", "--backend", "extra-sim", "--wait", timeout=120)
    assert answer.returncode == 0, answer.stderr


def test_ops_up_refuses_a_bad_config_before_it_touches_the_tree(checkout):
    before = program_pids(checkout)
    config = checkout / "fano.toml"
    good = config.read_text()
    assert "\nevaluators = 3 " in good
    # a module setting (read by the documenter at start) and an account setting (read by its worker)
    for bad, reason in ((good.replace("\nevaluators = 3 ", "\nevaluators = 5 ", 1), "evaluators"),
                        (good.replace('"20/day@00:00 America/Los_Angeles"]', '"20/day@00:00 America/Los_Angles"]', 1),
                         "unknown time zone 'America/Los_Angles'")):
        assert bad != good
        config.write_text(bad)
        up = run(checkout, "bash", "ops/up")
        assert up.returncode == 5, up.stdout + up.stderr
        assert reason in up.stderr and "nothing was started, stopped or restarted" in up.stderr
        assert "restarting" not in up.stdout and "Fano is up" not in up.stdout
        assert program_pids(checkout) == before
        # the tree runs on, and fanoctl reaches it
        status = fanoctl(checkout, "--json", "status")
        assert status.returncode == 0, status.stderr
    config.write_text(good)


def test_ops_up_fails_with_the_log_when_a_program_does_not_run(checkout):
    config = checkout / "fano.toml"
    good = config.read_text()
    # a valid account whose worker cannot start: its key variable is not in supervisord's environment
    config.write_text(good + '\n[accounts.keyless]\nbackend = "claude"\napi_key_env = "FANO_QS_NO_SUCH_KEY"\n')
    up = run(checkout, "bash", "ops/up", timeout=180)
    assert up.returncode == 1, up.stdout + up.stderr
    assert "Fano is up" not in up.stdout
    assert "backend-keyless: FATAL" in up.stderr and "FANO_QS_NO_SUCH_KEY" in up.stderr   # its log tail
    listed = json.loads(fanoctl(checkout, "--json", "backends", "ls").stdout)["backends"]
    assert "keyless" in [b["account"] for b in listed]
    # removed again: its program stops and it leaves backends ls
    config.write_text(good)
    up = run(checkout, "bash", "ops/up", timeout=180)
    assert up.returncode == 0 and "Fano is up" in up.stdout, up.stdout + up.stderr
    listed = json.loads(fanoctl(checkout, "--json", "backends", "ls").stdout)["backends"]
    assert "keyless" not in [b["account"] for b in listed]


def test_ops_down_stops_everything(checkout):
    pid = int((checkout / "var/run/supervisord.pid").read_text())
    down = run(checkout, "bash", "ops/down")
    assert down.returncode == 0, down.stdout + down.stderr
    deadline = time.monotonic() + 30
    while _pids_under(checkout) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _pids_under(checkout)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
