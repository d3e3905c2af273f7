"""The account's persistent browser profile: one owner at a time, no leftovers, one Playwright thread.

* :class:`ProfileLock` — an ``flock`` on ``<account dir>/profile.lock``. The worker holds it for as long
  as it runs; ``fanoctl backends login`` refuses while it is held. The kernel drops it when the holder
  dies, however it dies (and Python opens files close-on-exec, so the browser never inherits it).
* :func:`kill_previous` — a worker killed with ``-9`` leaves its Chromium running (Playwright starts the
  browser in a process group of its own, out of supervisord's reach), and a live Chromium on the profile
  makes the next launch fail ("profile in use"). Whoever takes the lock therefore kills every process
  whose command line names this profile — the pid recorded at launch, and a scan of ``/proc`` for
  ``--user-data-dir=<profile>`` in case the record was never written — then removes Chromium's own
  ``Singleton*`` lock files. Only processes that name *this* profile are touched.
* :class:`BrowserHost` — Playwright's sync API is bound to the thread that started it, while the worker
  calls ``start()`` from its main thread and ``send()`` from a new request thread per job. One dedicated
  daemon thread owns Playwright and the browser; every browser action runs there (:meth:`BrowserHost.run`).
"""
from __future__ import annotations

import concurrent.futures
import fcntl
import json
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SINGLETON_FILES = ("SingletonLock", "SingletonSocket", "SingletonCookie")


# --- the profile lock ----------------------------------------------------------------------------------

class ProfileLock:
    """Exclusive, non-blocking ownership of one profile (``flock``; released by the kernel on death)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        """Take the lock if free; True when this object holds it (again or now)."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def holder(self) -> int | None:
        """The pid written by the current holder (diagnostics only)."""
        try:
            return int(self.path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def release(self) -> None:
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None


# --- processes of a profile ----------------------------------------------------------------------------

def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    # the browser keeps its argv; its children rewrite theirs into one space-joined string
    return raw.replace(b"\0", b" ").decode("utf-8", "replace") + " "


def _names_profile(cmd: str, profile: Path) -> bool:
    return f"--user-data-dir={profile} " in cmd


def profile_processes(profile: Path) -> list[int]:
    """Pids of live processes whose command line names ``--user-data-dir=<profile>``."""
    profile = Path(profile).resolve()
    me = os.getpid()
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != me and _names_profile(_cmdline(int(entry.name)), profile):
            out.append(int(entry.name))
    return out


def browser_pid(profile: Path) -> int | None:
    """The main browser process of ``profile`` (the one without ``--type=``), if running."""
    for pid in profile_processes(profile):
        if "--type=" not in _cmdline(pid):
            return pid
    return None


def record_browser(pidfile: Path, profile: Path) -> int | None:
    """Write the running browser's pid and process group to ``pidfile`` (for :func:`kill_previous`)."""
    pid = browser_pid(profile)
    if pid is None:
        return None
    try:
        pgid = os.getpgid(pid)
    except OSError:
        return None
    tmp = pidfile.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": pid, "pgid": pgid, "profile": str(profile), "at": time.time()}))
    os.replace(tmp, pidfile)
    return pid


def kill_previous(profile: Path, pidfile: Path, wait: float = 5.0) -> list[int]:
    """Kill every process still running on ``profile`` (call only while holding its :class:`ProfileLock`:
    then no live owner exists, so anything found was left by a dead one). Returns the pids killed."""
    profile = Path(profile).resolve()
    victims = set(profile_processes(profile))
    groups = set()
    try:
        record = json.loads(Path(pidfile).read_text())
        if _names_profile(_cmdline(int(record["pid"])), profile):   # the pid may have been reused
            victims.add(int(record["pid"]))
            groups.add(int(record["pgid"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    own_group = os.getpgid(0)
    for pid in victims:
        try:
            if os.getpgid(pid) == pid:     # a group leader: its renderers/zygotes go with it
                groups.add(pid)
        except OSError:
            pass
    for pgid in groups - {own_group}:
        # only a group whose leader still names the profile (a stale record must not kill strangers)
        if pgid in victims:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except OSError:
                pass
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and profile_processes(profile):
        time.sleep(0.05)
    for name in SINGLETON_FILES:
        try:
            os.unlink(profile / name)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot remove %s: %s", profile / name, exc)
    try:
        os.unlink(pidfile)
    except OSError:
        pass
    if victims:
        log.warning("killed %d leftover browser process(es) of profile %s: %s", len(victims), profile,
                    ", ".join(map(str, sorted(victims))))
    return sorted(victims)


# --- the Playwright thread -----------------------------------------------------------------------------

class BrowserHost:
    """Owns Playwright and one persistent context on a dedicated thread.

    ``launch(playwright) -> BrowserContext`` is called on that thread when a browser is first needed (and
    again after it closed or crashed). Work is submitted with :meth:`run`; functions receive this host
    and may call :meth:`context` / :meth:`page` (browser thread only)."""

    def __init__(self, name: str, launch: Callable[[Any], Any]):
        self.name = name
        self._launch = launch
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._pw_manager = None
        self._pw = None
        self._ctx = None
        self._page = None
        self._used = False       # the context's first blank page has been taken
        self._crashed = None     # a page that crashed, closed at the next page() call
        self._lock = threading.Lock()

    # -- submitting work (any thread) --

    def run(self, fn: Callable, *args) -> Any:
        """Run ``fn(host, *args)`` on the browser thread and return its result (or raise its error)."""
        if threading.current_thread() is self._thread:
            return fn(self, *args)
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, daemon=True, name=f"{self.name}-browser")
                self._thread.start()
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put((fn, args, future))
        return future.result()

    def shutdown(self, timeout: float = 15.0) -> None:
        """Close the browser and stop the thread (best effort: crash-only code never relies on it)."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return
        self._queue.put(None)
        thread.join(timeout)

    # -- on the browser thread --

    @property
    def launched(self) -> bool:
        return self._ctx is not None

    def context(self):
        if self._ctx is None:
            if self._pw is None:
                from playwright.sync_api import sync_playwright  # lazy: sim workers never import it
                self._pw_manager = sync_playwright()
                self._pw = self._pw_manager.start()
            ctx = self._launch(self._pw)
            ctx.on("close", lambda *_: self._forget(ctx))
            self._ctx = ctx
            self._used = False
        return self._ctx

    def page(self):
        """The one page this host drives (created on first use, recreated if closed or crashed)."""
        ctx = self.context()
        if self._crashed is not None:
            crashed, self._crashed = self._crashed, None
            try:
                crashed.close()
            except Exception as exc:
                log.debug("closing a crashed page: %s", exc)
        if self._page is None or self._page.is_closed():
            # a persistent context opens with one blank page: use it rather than leave it around
            pages = [] if self._used else [p for p in ctx.pages if not p.is_closed()]
            self._page = pages[0] if pages else ctx.new_page()
            self._used = True
            page = self._page
            page.on("crash", lambda *_: self._drop_page(page))
        return self._page

    def close_browser(self) -> None:
        ctx, self._ctx, self._page, self._crashed = self._ctx, None, None, None
        if ctx is not None:
            try:
                ctx.close()
            except Exception as exc:   # already gone: nothing to close
                log.debug("closing the browser: %s", exc)

    def _forget(self, ctx) -> None:
        if self._ctx is ctx:
            self._ctx = None
            self._page = None

    def _drop_page(self, page) -> None:
        if self._page is page:
            self._page = None
            self._crashed = page

    def _serve(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                break
            fn, args, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(self, *args))
            except BaseException as exc:  # handed to the caller's thread
                future.set_exception(exc)
        self.close_browser()
        if self._pw_manager is not None:
            try:
                self._pw_manager.__exit__(None, None, None)
            except Exception as exc:
                log.debug("stopping playwright: %s", exc)
            self._pw_manager = self._pw = None
