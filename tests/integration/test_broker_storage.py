"""A real broker process on a full disk: its data directory is a small tmpfs that a filler file fills.

The broker stays up, answers reads, takes completions, failures, cancels and acks from the blocks it
allocated ahead, refuses new work with DISK_FULL (the client sees the code, not "unavailable"), starts
again on the full disk, and takes new work again by itself once space is freed; nothing it acknowledged
is lost. Needs root (mount); the tmpfs is always unmounted at teardown.
"""
from __future__ import annotations

import errno
import os
import shutil
import subprocess

import pytest

from services.broker.capacity import RECHECK
from shared import txn
from shared.errors import ErrorCode, FanoError
from tests.support import BrokerProcess, run_fanoctl, short_tmpdir, wait_for, write_config

pytestmark = pytest.mark.integration

BROKER = {"map_size": "4MiB", "headroom": "256KiB", "map_ceiling": "64MiB", "disk_reserve": "256KiB"}


@pytest.fixture
def on_tmpfs():
    """``(root, data)``: a short temp dir whose ``data`` folder is an 8 MiB tmpfs."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    root = short_tmpdir("fs")
    data = root / "data"
    data.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(data)], capture_output=True)
    if made.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"cannot mount a tmpfs: {made.stderr.decode().strip()}")
    procs: list[BrokerProcess] = []
    try:
        yield root, data, procs
    finally:
        for proc in procs:
            proc.kill()
        subprocess.run(["umount", str(data)], check=False)
        if os.path.ismount(data):
            subprocess.run(["umount", "-l", str(data)], check=False)
        shutil.rmtree(root, ignore_errors=True)


def fill_disk(path) -> int:
    """Write a filler file until the filesystem is full; returns its size."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    written = 0
    chunk = b"\xff" * 65536
    try:
        while True:
            try:
                written += os.write(fd, chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 4096:
                    return written
                chunk = chunk[:4096]
    finally:
        os.close(fd)


def refusal(fn, *args, **kw) -> FanoError | None:
    try:
        fn(*args, **kw)
    except FanoError as exc:
        return exc
    return None


def test_a_full_disk_refuses_new_work_serves_running_work_and_resumes_by_itself(on_tmpfs):
    root, data, procs = on_tmpfs
    config = write_config(root, BROKER)
    broker = BrokerProcess(root, config)
    procs.append(broker)
    broker.start()
    client = broker.client(timeout=5.0)
    try:
        running = [client.submit(f"run-{i}", "explorer", "ask", {"n": i})["task"]["id"] for i in range(4)]
        leases = [client.lease("w", "acct", modes=["standard"]) for _ in running]
        assert sorted(lease["task"]["id"] for lease in leases) == sorted(running)
        fill_disk(data / "filler")
        assert os.statvfs(data).f_bavail < 16
        # new work goes on into the blocks allocated ahead, until they run short: then DISK_FULL
        accepted, refused = [], None
        for i in range(500):
            refused = refusal(client.submit, f"big-{i}", "explorer", "ask", {"blob": "x" * 20_000})
            if refused is not None:
                break
            accepted.append(f"big-{i}")
        assert refused is not None, "the broker never refused new work"
        assert refused.code == ErrorCode.DISK_FULL, refused
        assert "disk" in refused.message and "free space" in refused.message
        pid = broker.proc.pid
        # reads are answered; completions, failures, cancels, turn records and acks go on
        storage = client.stats()["broker"]["storage"]
        assert storage["refusing"] == "DISK_FULL" and storage["since"] is not None
        assert storage["disk_free"] < 65536
        by_id = {lease["task"]["id"]: lease for lease in leases}
        a, b, c, d = running
        client.turn_begin(a, by_id[a]["epoch"])
        assert client.complete(a, by_id[a]["epoch"], {"text": "answer " * 500})["state"] == "DONE"
        assert client.fail(b, by_id[b]["epoch"], "terminal", "no")["state"] == "PARKED"
        assert client.cancel(c)["state"] == "CANCELLED"
        assert client.complete(d, by_id[d]["epoch"], {"text": "short"})["state"] == "DONE"
        assert client.txn("explorer", [txn.put("thread/a", "y" * 3000), txn.ack(a)])["applied"]
        for tid in (b, c, d):
            assert client.txn("explorer", [txn.ack(tid)])["applied"]
        assert client.lease("w", "acct", modes=["standard"])["task"] is None   # no new work is started
        assert refusal(client.submit, "still-refused", "explorer", "ask", {}).code == ErrorCode.DISK_FULL
        # the operator sees it: fanoctl names the code, status says what to do
        res = run_fanoctl(config, "submit", "--key", "cli", "--module", "explorer", "--kind", "ask")
        assert res.returncode == 1 and res.stderr.startswith("fanoctl: DISK_FULL: "), res.stderr
        res = run_fanoctl(config, "status")
        assert "NEW WORK REFUSED (DISK_FULL)" in res.stdout and "free disk space" in res.stdout, res.stdout
        assert broker.proc.pid == pid and broker.alive()
        # a broker (re)started on the full disk comes up and keeps its promises
        broker.kill()
        broker.start()
        client.close()
        client = broker.client(timeout=5.0)
        assert client.get(a)["state"] == "DONE" and client.get(a)["consumed"]
        assert refusal(client.submit, "after-restart", "explorer", "ask", {"blob": "x" * 20_000}) is not None
        # space appears: the broker takes new work again by itself, within a re-check
        os.unlink(data / "filler")

        def accepts():
            return refusal(client.submit, "after-space", "explorer", "ask", {"blob": "x" * 20_000}) is None
        wait_for(accepts, 4 * RECHECK, interval=0.5, what="the broker to accept new work again")
        assert client.stats()["broker"]["storage"]["refusing"] is None
        assert "accepting new work again" in broker.log(50_000)
        # nothing acknowledged was lost
        keys = {t["key"] for t in client.list(limit=1000, state=None)["tasks"]}
        assert set(accepted) <= keys and {f"run-{i}" for i in range(4)} <= keys
    finally:
        client.close()


def test_a_program_starts_when_its_lock_file_cannot_be_written(on_tmpfs):
    from shared.service import InstanceLock, LockHeld
    root, data, _ = on_tmpfs
    fill_disk(data / "filler")
    (data / "run").mkdir()
    lock = InstanceLock(data / "run" / "broker.lock")
    lock.acquire()  # the pid note cannot be written (ENOSPC); the lock itself is what matters
    try:
        with pytest.raises(LockHeld):
            InstanceLock(data / "run" / "broker.lock").acquire()
    finally:
        lock.release()
