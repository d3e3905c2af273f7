"""What fetching keeps on disk, beside the researcher's HTTP cache directory: the pages and the rate limit.

Nothing here is domain state (that lives in the broker): losing it costs a repeated request at most.

* **Rate limit**: at most one request per ``min_interval`` seconds per domain (``host[:port]``); cache
  hits do not count. The pool picks the next job whose domain is free instead of sleeping, so a slow
  domain does not hold up the others. The time of the last request to each domain is kept on disk
  (``<cache_dir>/rate-limit.json``, wall clock), written atomically *before* the request is sent, so a
  restarted or crash-looping researcher still waits out the interval instead of hitting the site again
  at once. The file lives with the cache rather than in the broker because only the fetch thread knows
  when a request leaves, and that thread never talks to the broker (a record written by the loop after
  the fact could be lost to a crash in between); it is host-local politeness, not domain state, and
  only domains fetched within the last ``min_interval`` are kept, so it stays tiny. If it cannot be
  written, no request is sent (the fetch fails as ``internal`` and is retried). A clock that went back
  never makes a domain wait more than ``min_interval``.
* **Cache**: ``<cache_dir>/<sha256(url)>.body`` + ``.json`` (metadata with the body's hash, written
  last, both atomically with fsync + ``os.replace``; a torn pair fails the hash check and counts as a
  miss). Within ``cache_ttl`` a cached page is used without a request; after it, a page with an ETag or
  Last-Modified is revalidated (``If-None-Match`` / ``If-Modified-Since``; 304 keeps the body). The
  cache is pruned, oldest first, above ``cache_max_bytes``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path

from shared.service import Tolerance

RATE_FILE = "rate-limit.json"   # in the cache directory: the last request time per domain


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class DiskCache:
    def __init__(self, directory: Path, max_bytes: int = 200 * 1024 * 1024):
        self.dir = Path(directory)
        self.max_bytes = max_bytes
        self.dir.mkdir(parents=True, exist_ok=True)
        # a page prune cannot remove: the cache stays above its size, logged and counted
        self.tolerance = Tolerance(logging.getLogger("researcher.fetch"))

    def _paths(self, url: str) -> tuple[Path, Path]:
        h = hashlib.sha256(url.encode()).hexdigest()
        return self.dir / f"{h}.json", self.dir / f"{h}.body"

    def meta(self, url: str) -> dict | None:
        """The metadata alone (cheap: the pool asks about freshness often); not checked against the body."""
        try:
            meta = json.loads(self._paths(url)[0].read_text())
        except (OSError, ValueError):
            return None
        return meta if meta.get("url") == url else None

    def load(self, url: str) -> tuple[dict, bytes] | None:
        meta_p, body_p = self._paths(url)
        try:
            meta = json.loads(meta_p.read_text())
            body = body_p.read_bytes()
        except (OSError, ValueError):
            return None
        if meta.get("url") != url or hashlib.sha256(body).hexdigest() != meta.get("body_sha256"):
            return None  # a torn or foreign pair: a miss
        return meta, body

    def store(self, url: str, meta: dict, body: bytes) -> None:
        meta_p, body_p = self._paths(url)
        _atomic_write(body_p, body)  # body first: the metadata names the body's hash, so it goes last
        _atomic_write(meta_p, json.dumps({**meta, "url": url, "body_sha256": hashlib.sha256(body).hexdigest(),
                                          "size": len(body)}).encode())
        self.prune()

    def touch(self, url: str, meta: dict) -> None:
        _atomic_write(self._paths(url)[0], json.dumps(meta).encode())

    def prune(self) -> None:
        bodies = []
        for p in self.dir.glob("*.body"):
            try:
                st = p.stat()
            except OSError:
                continue
            bodies.append((st.st_mtime, st.st_size, p))
        total = sum(b[1] for b in bodies)
        for _, size, p in sorted(bodies):
            if total <= self.max_bytes:
                break
            for victim in (p.with_suffix(".json"), p):
                try:
                    victim.unlink()
                except FileNotFoundError:
                    pass   # already gone (a torn pair, or removed by hand)
                except OSError as exc:
                    self.tolerance("pruning the page cache", exc)
            total -= size


class RateLimiter:
    """One request per ``min_interval`` seconds per domain (wall clock), remembered in ``path`` (JSON,
    ``{domain: time of the last request}``) across restarts when a path is given."""

    def __init__(self, min_interval: float, now=time.time, path: Path | None = None):
        self.min_interval = float(min_interval)
        self.now = now
        self.path = Path(path) if path is not None else None
        self._last: dict[str, float] = self._load()

    def _load(self) -> dict[str, float]:
        if self.path is None:
            return {}
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}   # absent (first start) or unreadable: written atomically, so not torn
        if not isinstance(data, dict):
            return {}
        return {str(d): float(t) for d, t in data.items()
                if isinstance(t, (int, float)) and not isinstance(t, bool)}

    def wait_time(self, domain: str) -> float:
        last = self._last.get(domain)
        if last is None:
            return 0.0
        return min(self.min_interval, max(0.0, last + self.min_interval - self.now()))

    def take(self, domain: str) -> None:
        """Record a request to ``domain`` (on disk first when persisted: call it before sending)."""
        now = self.now()
        last = {d: t for d, t in self._last.items() if t + self.min_interval > now}   # still binding
        last[domain] = now
        if self.path is not None:
            _atomic_write(self.path, json.dumps(last, sort_keys=True).encode())
        self._last = last
