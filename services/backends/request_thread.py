"""The backend worker's request thread, kept from one job to the next.

The worker's main loop must keep heartbeating and renewing while a provider request runs (seconds to
hours), so each job runs in a second thread. Starting a thread per job cost its creation and a join on
every task; this one thread takes the jobs the main loop hands it, in order, one at a time, each with the
runner (and the runner's broker client) it is given. ``busy`` is true from :meth:`RequestThread.start`
until that job's ``runner.run`` has returned; the thread then calls ``on_end`` (the worker's wake-up).
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from services.backends.runner import Job, TurnRunner


class RequestThread:
    """One daemon thread running jobs handed over by :meth:`start` (a job handed over while another runs
    waits for it: the runner is never used by two jobs at once)."""

    def __init__(self, name: str, on_end: Callable[[], None]) -> None:
        self._inbox: queue.SimpleQueue[tuple[Job, TurnRunner]] = queue.SimpleQueue()
        self._on_end = on_end
        self._pending = 0   # jobs handed over and not yet run to their end
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True, name=name)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """A job is running or waiting to run."""
        return self._pending > 0

    def start(self, job: Job, runner: TurnRunner) -> None:
        with self._lock:
            self._pending += 1
        self._inbox.put((job, runner))

    def _serve(self) -> None:
        while True:
            job, runner = self._inbox.get()
            try:
                runner.run(job)   # never raises: a bug is an outcome (TurnRunner.run)
            finally:
                with self._lock:
                    self._pending -= 1
                self._on_end()
