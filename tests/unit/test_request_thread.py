"""services/backends/request_thread.py: one thread runs the jobs handed to it in order, one at a time, and
says when each ended; ``busy`` holds until the last one has."""
from __future__ import annotations

import threading

from services.backends.request_thread import RequestThread
from services.backends.runner import Job


class SlowRunner:
    """Runs a job by waiting for the test's go-ahead; records the order and any overlap."""

    def __init__(self) -> None:
        self.order: list[int] = []
        self.running = 0
        self.overlap = False
        self.go = threading.Event()

    def run(self, job: Job) -> None:
        self.running += 1
        self.overlap |= self.running > 1
        self.go.wait(5)
        self.order.append(job.task_id)
        self.running -= 1
        job.finished.set()


def test_jobs_run_in_order_one_at_a_time_and_busy_lasts_until_the_last_ends():
    ended = []
    requests = RequestThread("t-requests", lambda: ended.append(1))
    runner = SlowRunner()
    assert not requests.busy
    jobs = [Job(i, 30.0) for i in (1, 2, 3)]
    for job in jobs:
        requests.start(job, runner)   # type: ignore[arg-type]
    assert requests.busy
    runner.go.set()
    assert all(job.finished.wait(5) for job in jobs)
    for _ in range(500):
        if not requests.busy:
            break
        threading.Event().wait(0.01)
    assert runner.order == [1, 2, 3] and not runner.overlap
    assert not requests.busy and len(ended) == 3
