"""The profile lock and the killing of a previous incarnation's browser (services/backends/web/browser.py).

Stand-in "browsers" are plain processes whose command line names ``--user-data-dir=<profile>`` (that is
all kill_previous looks at), started in a session of their own like Playwright starts Chromium."""
import json
import os
import subprocess
import sys

import pytest

from services.backends.web.browser import ProfileLock, kill_previous, profile_processes, record_browser
from tests.support import wait_for

SLEEPER = "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"


@pytest.fixture
def procs():
    started = []

    def spawn(profile, extra=()):
        p = subprocess.Popen([sys.executable, "-c", SLEEPER, f"--user-data-dir={profile}", *extra],
                             start_new_session=True)
        started.append(p)
        wait_for(lambda: p.pid in profile_processes(profile), 10, what="the fake browser to start")
        return p

    yield spawn
    for p in started:
        if p.poll() is None:
            try:
                os.killpg(p.pid, 9)
            except OSError:
                pass
            p.wait(5)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_lock_is_exclusive_and_released(tmp_path):
    a, b = ProfileLock(tmp_path / "profile.lock"), ProfileLock(tmp_path / "profile.lock")
    assert a.acquire() and a.acquire()          # re-entrant for its holder
    assert not b.acquire()
    assert b.holder() == os.getpid()
    a.release()
    assert b.acquire()
    b.release()


def test_kill_previous_kills_the_profile_group_and_spares_others(tmp_path, procs):
    profile = (tmp_path / "profile").resolve()
    other = (tmp_path / "profile-other").resolve()     # a prefix match must not count
    profile.mkdir()
    (profile / "SingletonLock").symlink_to("somehost-12345")
    victim = procs(profile)
    bystander = procs(other)
    pidfile = tmp_path / "browser.json"
    assert record_browser(pidfile, profile) == victim.pid
    assert json.loads(pidfile.read_text())["pgid"] == victim.pid

    killed = kill_previous(profile, pidfile)

    assert killed == [victim.pid]
    assert victim.wait(5) == -9
    # the group went too (the 'sleep' child stands for the renderers)
    wait_for(lambda: not group_alive(victim.pid), 5, what="the killed group to disappear")
    assert bystander.poll() is None
    assert not (profile / "SingletonLock").is_symlink() and not pidfile.exists()
    assert profile_processes(profile) == []


def test_a_stale_pidfile_naming_another_process_kills_nothing(tmp_path, procs):
    profile = (tmp_path / "profile").resolve()
    stranger = procs(tmp_path / "elsewhere")
    pidfile = tmp_path / "browser.json"
    pidfile.write_text(json.dumps({"pid": stranger.pid, "pgid": stranger.pid}))   # a reused pid
    assert kill_previous(profile, pidfile, wait=0.2) == []
    assert stranger.poll() is None
