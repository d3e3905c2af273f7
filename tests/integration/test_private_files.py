"""Private by default (issue 14): under umask 000, everything the tree creates is its user's alone.

A real supervisord runs the tree (started as ops/up starts it, with umask 077) from a test process whose
umask is 000; a question is answered so that the sim log, the database and the logs all hold a prompt.
Then no directory under the run, data and log directories may be reachable, and no file readable or
writable, by group or others: directories 0700, files (``data.mdb``, sim logs, program logs) 0600,
sockets 0600. A broker started directly (no supervisord) under umask 000 is held to the same, which
covers a program whose parent set no umask at all.
"""
from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from tests.support import BrokerProcess, run_fanoctl, running_tree, short_tmpdir, write_config

pytestmark = pytest.mark.integration

ACCOUNTS = """
[accounts.quick-sim]
backend = "sim"
modes = ["standard"]
seed = 1
latency = { standard = { dist = "fixed", value = 0.05 } }
"""


def loose(*roots: Path) -> list[str]:
    """Every path under ``roots`` (roots included) that group or others can use, with its mode."""
    found = []
    for root in roots:
        for path in [root, *root.rglob("*")]:
            try:
                mode = path.lstat().st_mode
            except FileNotFoundError:
                continue   # rotated or removed meanwhile
            if stat.S_ISLNK(mode):
                continue
            if mode & 0o077:
                found.append(f"{path} {stat.filemode(mode)}")
    return found


def modes(paths) -> dict[str, str]:
    return {p.name: oct(p.stat().st_mode & 0o777) for p in paths}


@pytest.fixture
def umask_000():
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_a_tree_started_under_umask_000_keeps_every_file_private(umask_000):
    with running_tree("fp", ACCOUNTS) as tree:
        res = run_fanoctl(tree, "ask", "a private question", "--wait")
        assert res.returncode == 0, res.stderr
        cfg = tree.config
        run, data, logs = cfg.run_dir, cfg.data_dir, cfg.log_dir
        socks = sorted([*run.glob("*.sock"), tree.sock])
        assert modes(socks) == {"broker.sock": "0o600", "events.sock": "0o600", "scheduler.sock": "0o600",
                                "supervisor.sock": "0o600"}
        assert oct(run.stat().st_mode & 0o777) == "0o700"
        assert oct((data / "broker" / "data.mdb").stat().st_mode & 0o777) == "0o600"
        sim_files = [p for p in (data / "sim").rglob("*") if p.is_file()]
        assert sim_files, "the sim account wrote no log"
        assert any(p.name == "broker.log" for p in logs.iterdir())
        assert any(p.name == "supervisord.log" for p in logs.iterdir())
        assert loose(run, data, logs, tree.sock.parent) == []


def test_a_broker_started_with_umask_000_and_a_world_readable_data_directory_tightens_it(umask_000):
    root = short_tmpdir("fq")
    try:
        (root / "data").mkdir(mode=0o777)
        (root / "data").chmod(0o755)   # as an older version left it
        broker = BrokerProcess(root, write_config(root)).start()
        try:
            broker.client().ping()
            assert modes([root / "run" / "broker.sock", root / "run" / "events.sock"]) == {
                "broker.sock": "0o600", "events.sock": "0o600"}
            assert loose(root / "run", root / "data") == []
        finally:
            broker.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_make_private_leaves_a_shared_sticky_directory_alone(umask_000, tmp_path):
    from shared.service import make_private
    shared, mine = tmp_path / "shared", tmp_path / "mine"
    shared.mkdir()
    shared.chmod(0o1777)   # like /tmp
    mine.mkdir()
    mine.chmod(0o755)
    make_private(shared, mine, tmp_path / "new")
    assert oct(os.umask(0)) == "0o77"
    assert oct(shared.stat().st_mode & 0o7777) == "0o1777"
    assert oct(mine.stat().st_mode & 0o777) == oct((tmp_path / "new").stat().st_mode & 0o777) == "0o700"
