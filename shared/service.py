"""The base of every supervised program: lock file, signals, logging, the initialize/loop/shutdown cycle.

Crash-only: a program keeps no state it cannot rebuild, so the only shutdown that matters is the one
that does not happen (``kill -9``). SIGTERM and SIGINT merely set a flag that ends the loop at its next
tick; signal handlers do nothing else.

Private by default: every program starts with umask 077 and makes its run, data and log directories
0700 (:func:`make_private`), whatever umask it inherited, so what it creates — sockets, ``data.mdb``,
sim logs, transcripts — is its user's alone: the database and the transcripts hold every prompt and
answer, and a socket anyone could connect to would let any local user drive the broker.

Single instance: ``ipc://`` binds never fail with "address in use" — a second copy would silently steal
the socket — so each program holds an exclusive ``flock`` on ``<run_dir>/<name>.lock`` for its whole
life. The kernel drops the lock when the process dies, however it dies.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from shared.errors import ExitCode, StartupError

if TYPE_CHECKING:
    from shared.clock import Clock
    from shared.config import Config


class LockHeld(StartupError):
    """Another instance of the program holds its lock file."""

    exit_code = ExitCode.LOCKED


class InstanceLock:
    """An exclusive, non-blocking flock held for the life of the process."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise LockHeld(f"{self.path} is held by pid {holder}: another instance is running") from None
            raise
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            # the pid is only a note for the "held by" message: a full disk (ENOSPC) must not stop a
            # program from starting, least of all the broker that has to stay up to refuse new work
            pass
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


PRIVATE_UMASK = 0o077
PRIVATE_DIR = 0o700


def make_private(*directories: Path) -> None:
    """Set umask 077 for this process and make ``directories`` (created if missing) mode 0700.

    One it owns is tightened even if an older version, or another umask, created it wider, so that
    files made readable before are no longer reachable through it. A directory this user does not own,
    or a shared one with the sticky bit (``/tmp`` named as a run directory, say, which root would own),
    is left as it is: it is the operator's to set."""
    os.umask(PRIVATE_UMASK)
    for d in directories:
        d = Path(d)
        d.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        st = d.stat()
        if st.st_uid == os.geteuid() and not st.st_mode & 0o1000 and st.st_mode & 0o777 != PRIVATE_DIR:
            os.chmod(d, PRIVATE_DIR)


def die_with_parent() -> None:
    """Ask the kernel to SIGTERM us when our parent dies (Linux only).

    If supervisord itself is ``kill -9``ed its children are orphaned; a silent orphan would keep its
    lock and socket while the next supervisord starts a second copy that can only fail.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class HeapTrim:
    """Hand the C heap's free pages back to the system now and then (glibc's ``malloc_trim``).

    A program that runs for weeks allocates and frees a pass's worth of records over and over; CPython
    serves every object over 512 bytes (dict tables, lists, strings: most of a decoded record) from the C
    heap, and glibc returns only the heap's top to the system, so the free holes left between long-lived
    objects stay in the resident size. In the week soak the explorer grew by ~3 MB a day while its live
    Python objects grew by ~0.4 MB; one ``malloc_trim(0)`` took 10 MB back. A call costs about a
    millisecond, so it runs at most every :attr:`every` seconds (monotonic). Without glibc it does nothing."""

    every = 30.0

    def __init__(self, mono: Callable[[], float]) -> None:
        self.mono = mono
        self.next = mono() + self.every
        self.trims = 0
        self._trim: Callable[[int], int] | None
        try:
            import ctypes
            self._trim = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):   # not glibc (musl, macOS): nothing to trim this way
            self._trim = None

    def maybe(self) -> None:
        if self._trim is None or self.mono() < self.next:
            return
        self.next = self.mono() + self.every
        self._trim(0)
        self.trims += 1


def setup_logging(name: str, level: str | None = None) -> logging.Logger:
    level = level or os.environ.get("FANO_LOG_LEVEL", "INFO")
    logging.basicConfig(stream=sys.stderr, level=level.upper(),
                        format=f"%(asctime)s {name}[%(process)d] %(levelname)s %(name)s: %(message)s")
    return logging.getLogger(name)


class Tolerance:
    """How a program goes on without something optional that failed (``what``: e.g. "scheduler idle
    query"): never silently. Each failure is counted in :attr:`counts`, and logged (a warning) the first
    time and then at the 10th, 100th, ... of its kind, so a peer that is down for hours is seen in the log
    without one line per pass. Thread-safe (the web panel's pages run in worker threads)."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, what: str, exc: BaseException) -> None:
        with self._lock:
            self.counts[what] += 1
            n = self.counts[what]
        if n == 10 ** (len(str(n)) - 1):   # 1, 10, 100, ...
            self.log.warning("%s failed (%s: %s); going on without it (%d time(s) so far)",
                             what, type(exc).__name__, str(exc)[:200], n)


class Service:
    """Subclasses set ``name`` and implement initialize(), loop() and shutdown().

    ``loop()`` does one tick of work and must return within about half a second so that a stop request
    is noticed promptly; tests call it directly.
    """

    name = "service"

    def __init__(self, config: Config, clock: Clock):
        self.config = config
        self.clock = clock
        self.stopping = False
        self.log = logging.getLogger(self.name)
        self._lock = InstanceLock(config.lock_path(self.name))
        # errors the program went on without, by what failed (:meth:`tolerate`)
        self.tolerance = Tolerance(self.log)
        self.tolerated: Counter[str] = self.tolerance.counts

    def tolerate(self, what: str, exc: BaseException) -> None:
        """Go on without something optional that failed (:class:`Tolerance`)."""
        self.tolerance(what, exc)

    def request_stop(self, *_: object) -> None:
        self.stopping = True

    def initialize(self) -> None:
        raise NotImplementedError

    def loop(self) -> None:
        raise NotImplementedError

    def shutdown(self) -> None:
        pass

    def run(self) -> int:
        """Run until SIGTERM/SIGINT; returns an ExitCode."""
        make_private(self.config.run_dir, self.config.data_dir, self.config.log_dir)
        try:
            self._lock.acquire()
        except LockHeld as exc:   # before anything is set up: nothing to shut down
            self.log.error("%s", exc)
            return exc.exit_code
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        die_with_parent()
        try:
            self.initialize()
            self.log.info("%s started (pid %d)", self.name, os.getpid())
            heap = HeapTrim(self.clock.mono)
            while not self.stopping:
                self.loop()
                heap.maybe()
            self.log.info("%s stopping", self.name)
            return ExitCode.OK
        finally:
            self.shutdown()
            self._lock.release()
