"""The explorer bounds its own reaction to unusable answers (issue 16, item 6): real broker, scheduler,
three sim workers that answer every request without the expected sections (``garbage_rate = 1``) and
``python -m services explorer``, with one question seed added by ``fanoctl seeds add``.

Before: each thread re-asked twice with the same prompt, paused, and a new thread of the same seed started
at once — 58 threads and 174 tasks in about 90 s. Now a retry asks differently, the seed is paused with a
visible reason after ``seed_pause_after`` threads in a row were paused by unusable answers, and no seed gets
more than ``max_threads_per_seed_hour`` threads or ``max_tasks_per_seed_hour`` tasks an hour.
"""
from __future__ import annotations

import json
import time

import pytest

from services.modules.explorer import model as M
from tests.integration.test_explorer import Stack
from tests.support import wait_for

pytestmark = pytest.mark.integration


class OneSeed(Stack):
    """The explorer stack with a single question seed instead of the demo set."""

    def __init__(self, garbage: float, explorer: str = ""):
        super().__init__(garbage=garbage)
        self.cfg.write_text(self.cfg.read_text().replace("[modules.explorer]\n", "[modules.explorer]\n" + explorer))

    def start(self) -> OneSeed:
        self.broker.start()
        self._client = self.broker.client(timeout=5.0)
        res = self.fanoctl("seeds", "add", "Why does the Fano plane have 168 symmetries?", "--type", "question")
        assert res.returncode == 0, res.stderr
        for p in (self.scheduler, *self.workers, self.explorer):
            p.spawn()
        return self


@pytest.fixture
def stack():
    made = []

    def factory(**kw):
        s = OneSeed(**kw)
        made.append(s)
        return s.start()
    yield factory
    for s in made:
        s.close()


def test_a_seed_whose_threads_keep_failing_is_paused_with_a_visible_reason(stack):
    s = stack(garbage=1.0)

    def seed_paused():
        res = s.fanoctl("--json", "seeds", "ls")
        rows = json.loads(res.stdout)["seeds"] if res.returncode == 0 else []
        return rows and rows[0].get("paused") and rows[0]
    try:
        seed = wait_for(seed_paused, 60, interval=0.3, what="the seed to be paused")
    except AssertionError:
        raise AssertionError(s.logs()) from None
    assert "unusable" in seed["pause_reason"] and "fanoctl seeds resume" in seed["pause_reason"]
    time.sleep(3)         # several planning and repair passes (repair_interval 2 s): nothing more starts
    threads = s.values("threads/")
    tasks = s.tasks()
    assert len(threads) == 2, [t["id"] for t in threads]       # seed_pause_after = 2 (the default)
    assert len(tasks) == 2 * 3, [t["key"] for t in tasks]      # a first ask and two re-asks per thread
    assert all(t["status"] == "paused" and "unusable" in t["pause_reason"] for t in threads)
    # every re-ask asks differently: no two prompts of a thread's turn are the same
    for thread in threads:
        prompts = [t["payload"]["prompt"] for t in tasks if t["payload"].get("thread_id") == thread["id"]]
        assert len(prompts) == 3 and len(set(prompts)) == 3
        assert "could not be used" in prompts[-1]
    shown = s.fanoctl("seeds", "ls")
    assert "paused" in shown.stdout and "unusable" in shown.stdout, shown.stdout
    listed = s.fanoctl("threads", "ls")
    assert listed.stdout.count("unusable") >= 2, listed.stdout
    # the operator resumes the seed: one more thread starts
    res = s.fanoctl("seeds", "resume", seed["id"])
    assert res.returncode == 0, res.stderr
    wait_for(lambda: len(s.values("threads/")) == 3, 20, interval=0.3, what="a new thread after the resume")
    assert s.explorer.alive(), s.explorer.log()


def test_no_seed_gets_more_tasks_an_hour_than_its_budget(stack):
    """The budget is the backstop: with the pause off, a failing seed creates at most
    ``max_tasks_per_seed_hour`` tasks an hour; the rest waits, and ``seeds ls`` says why."""
    s = stack(garbage=1.0, explorer="seed_pause_after = 0\nmax_tasks_per_seed_hour = 7\n")

    def held():
        res = s.fanoctl("--json", "seeds", "ls")
        rows = json.loads(res.stdout)["seeds"] if res.returncode == 0 else []
        return rows and rows[0].get("held") and rows[0]
    try:
        seed = wait_for(held, 60, interval=0.3, what="the seed's tasks to be held by its hourly budget")
    except AssertionError:
        raise AssertionError(s.logs()) from None
    time.sleep(3)
    tasks = s.tasks()
    assert len(tasks) == 7, [t["key"] for t in tasks]
    assert len(s.values("threads/")) <= 4        # max_threads_per_seed_hour (default) bounds threads too
    shown = s.fanoctl("seeds", "ls")
    assert "max_tasks_per_seed_hour" in shown.stdout, shown.stdout
    assert seed["held"] >= 1 and M.MODULE == "explorer"
