"""The whole tree under a real supervisord (the repository's supervisord.conf and generated backend
programs) through a full map and a full disk: nothing exits, nothing ends FATAL, and the research
resumes after ``fanoctl admin grow-map`` (map) or once space is freed (disk, no command at all), without
touching supervisord.

Before, on MAP_FULL the explorer exited in ~0.2 s again and again under ``startsecs=1``, supervisord
marked it FATAL, and it stayed down after the map was grown.
"""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time
from contextlib import contextmanager

import pytest

from ops.chaos import Tree
from shared import txn
from shared.client import BrokerClient
from shared.errors import ErrorCode, FanoError
from tests.support import REPO, TREE_PATHS, incompressible, run_fanoctl, running_tree, short_tmpdir, wait_for

pytestmark = pytest.mark.integration

QUICK_SIM = """
[accounts.quick-sim]
backend = "sim"
modes = ["standard"]
seed = 1
latency = { standard = { dist = "fixed", value = 0.2 } }
"""

TREE = """
[broker]
map_size = "4MiB"
headroom = "512KiB"
map_ceiling = "4MiB"
""" + QUICK_SIM

HOLD = 20.0  # seconds refusing: past supervisord's startsecs x startretries window (1+2+3+4+5 s of backoff)


DISK_TREE = """
[broker]
map_size = "4MiB"
headroom = "512KiB"
map_ceiling = "64MiB"
disk_reserve = "256KiB"
""" + QUICK_SIM


@contextmanager
def tree_on_tmpfs(prefix: str, rest_toml: str, size: str = "16m"):
    """Like tests.support.running_tree, with the data directory on a small tmpfs (unmounted at exit)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    root = short_tmpdir(prefix)
    data = root / "data"
    data.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(data)], capture_output=True)
    if made.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"cannot mount a tmpfs: {made.stderr.decode().strip()}")
    cfg = root / "fano.toml"
    cfg.write_text(TREE_PATHS.format(root=root) + rest_toml)
    tree = Tree(root, cfg, scale=1.0)
    orphans = []
    try:
        tree.start()
        yield tree, data
    finally:
        if getattr(tree, "_proc", None) is not None:
            orphans = tree.stop()
        subprocess.run(["umount", str(data)], check=False)
        if os.path.ismount(data):
            subprocess.run(["umount", "-l", str(data)], check=False)
        shutil.rmtree(root, ignore_errors=True)
    assert orphans == [], f"processes left after the stop: {orphans}"


def fill_disk(path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    chunk = b"\xff" * 65536
    try:
        while True:
            try:
                os.write(fd, chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 4096:
                    return
                chunk = chunk[:4096]
    finally:
        os.close(fd)


def hold_running(tree, pids: dict, seconds: float) -> None:
    """Every program stays RUNNING with the same pid for ``seconds`` (nobody exited)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        states = {p["name"]: (p["statename"], p["pid"]) for p in tree.programs()}
        assert states == {name: ("RUNNING", pid) for name, pid in pids.items()}, states
        time.sleep(1.0)


def done(client, module="explorer") -> int:
    return client.stats()["modules"].get(module, {}).get("DONE", 0)


def log_of(tree, program) -> str:
    return (tree.root / "var/log" / f"{program}.log").read_text(errors="replace")


def test_a_full_map_backs_modules_and_workers_off_and_they_resume_after_grow_map():
    with running_tree("fz", TREE) as tree:
        client = BrokerClient(tree.config.broker_endpoint, name="test", timeout=5.0)
        try:
            res = run_fanoctl(tree, "seeds", "import", str(REPO / "seeds/demo.toml"))
            assert res.returncode == 0, res.stderr
            wait_for(lambda: done(client) >= 1, 90, interval=0.5, what="the explorer's first task to finish")
            pids = {p["name"]: p["pid"] for p in tree.programs()}
            # fill the map to its ceiling with another module's data
            for i in range(200):
                try:
                    client.txn("filler", [txn.put(f"big/{i}", incompressible(200_000, seed=i))])
                except FanoError as exc:
                    assert exc.code == ErrorCode.MAP_FULL, exc
                    break
            else:
                raise AssertionError("the map never filled")
            res = run_fanoctl(tree, "submit", "--key", "refused", "--module", "explorer", "--kind", "ask")
            assert res.returncode == 1 and "MAP_FULL" in res.stderr, (res.returncode, res.stderr)
            wait_for(lambda: "broker refuses new work (MAP_FULL" in log_of(tree, "module-explorer"), 60,
                     interval=0.5, what="the explorer to meet the refusal")
            # nobody exits while the map is full: every program stays RUNNING with the same pid
            hold_running(tree, pids, HOLD)
            assert client.stats()["broker"]["storage"]["refusing"] == "MAP_FULL"
            finished = done(client)
            # the operator grows the map: the research resumes by itself
            res = run_fanoctl(tree, "admin", "grow-map", "64MiB")
            assert res.returncode == 0, res.stderr
            assert client.stats()["broker"]["storage"]["refusing"] is None
            wait_for(lambda: "accepts this module's work again" in log_of(tree, "module-explorer"), 60,
                     interval=0.5, what="the explorer to resume")
            wait_for(lambda: done(client) > finished, 90, interval=0.5, what="research to go on after the growth")
            states = {p["name"]: (p["statename"], p["pid"]) for p in tree.programs()}
            assert states == {name: ("RUNNING", pid) for name, pid in pids.items()}, states
        finally:
            client.close()


def test_a_full_disk_backs_everyone_off_and_the_research_resumes_when_space_is_freed():
    with tree_on_tmpfs("fd", DISK_TREE) as (tree, data):
        client = BrokerClient(tree.config.broker_endpoint, name="test", timeout=5.0)
        try:
            res = run_fanoctl(tree, "seeds", "import", str(REPO / "seeds/demo.toml"))
            assert res.returncode == 0, res.stderr
            wait_for(lambda: done(client) >= 1, 90, interval=0.5, what="the explorer's first task to finish")
            pids = {p["name"]: p["pid"] for p in tree.programs()}
            fill_disk(data / "filler")
            # new work eats the blocks allocated ahead; then the broker refuses it, and stays up
            for i in range(2000):
                try:
                    # due in years: no worker takes it (the broker refuses an account the tree does not have)
                    client.submit(f"big-{i}", "filler", "ask", {"blob": "x" * 50_000},
                                  not_before=time.time() + 1e8)
                except FanoError as exc:
                    assert exc.code == ErrorCode.DISK_FULL, exc
                    break
            else:
                raise AssertionError("the disk never filled")
            assert client.stats()["broker"]["storage"]["refusing"] == "DISK_FULL"
            wait_for(lambda: "broker refuses new work (DISK_FULL" in log_of(tree, "module-explorer"), 60,
                     interval=0.5, what="the explorer to meet the refusal")
            hold_running(tree, pids, HOLD)
            finished = done(client)
            # space is freed; nobody is told: the broker notices, the explorer resumes, research goes on
            os.unlink(data / "filler")
            wait_for(lambda: client.stats()["broker"]["storage"]["refusing"] is None, 30, interval=0.5,
                     what="the broker to take new work again")
            wait_for(lambda: "accepts this module's work again" in log_of(tree, "module-explorer"), 60,
                     interval=0.5, what="the explorer to resume")
            wait_for(lambda: done(client) > finished, 90, interval=0.5, what="research to go on after the space")
            states = {p["name"]: (p["statename"], p["pid"]) for p in tree.programs()}
            assert states == {name: ("RUNNING", pid) for name, pid in pids.items()}, states
            assert "accepting new work again" in log_of(tree, "broker")
        finally:
            client.close()


def test_a_program_that_can_never_start_still_ends_fatal_and_visible():
    # the other half of supervisord.conf's settings: a configuration error does not pass by itself, so
    # the program exits at once (ExitCode.CONFIG) every time and supervisord gives up on it, visibly,
    # while the rest of the tree runs
    root = short_tmpdir("fx")
    cfg = root / "fano.toml"
    cfg.write_text(TREE_PATHS.format(root=root) + TREE + "\n[modules.explorer]\nno_such_setting = 1\n")
    tree = Tree(root, cfg, scale=1.0)
    orphans = []
    try:
        try:
            tree.start()
        except RuntimeError:
            pass  # not everything came up: that is the point

        def states():
            return {p["name"]: p["statename"] for p in tree.programs()}
        wait_for(lambda: states()["module-explorer"] == "FATAL", 90, interval=0.5,
                 what="the misconfigured explorer to end FATAL")
        others = {name: state for name, state in states().items() if name != "module-explorer"}
        assert set(others.values()) == {"RUNNING"}, others
        assert "[modules.explorer]: unknown key(s) no_such_setting (known: " in log_of(tree, "module-explorer")
    finally:
        if getattr(tree, "_proc", None) is not None:
            orphans = tree.stop()
        shutil.rmtree(root, ignore_errors=True)
    assert orphans == [], f"processes left after the stop: {orphans}"
