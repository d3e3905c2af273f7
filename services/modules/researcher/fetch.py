"""Fetching sources over HTTP (standard library only): rate limit, disk cache, size and type checks.

Fetching is not an LLM call, so it happens in the researcher's own process — but never in its loop:
:class:`FetchPool` runs :class:`Fetcher` in one background thread and hands finished fetches back
through :meth:`FetchPool.results`; the module applies each outcome in one broker transaction like any
other effect. Nothing here is domain state: a fetch lost to a crash is simply done again (the source
is still queued in the broker), and the disk cache makes the repeat cheap.

* **Rate limit** and **cache**: what fetching keeps on disk, in :mod:`.fetch_disk` (one request per
  ``min_interval`` per domain, remembered across restarts; pages within ``cache_ttl`` served without a
  request, revalidated after it). The pool picks the next job whose domain is free instead of sleeping,
  so a slow domain does not hold up the others.
* **Checks**: ``timeout`` per socket operation and for the whole body; ``max_bytes`` (Content-Length,
  then while reading); the Content-Type must be one of ``content_types``. Failures raise
  :class:`FetchError` with a ``reason`` and whether retrying could help (``permanent``).
"""
from __future__ import annotations

import codecs
import http.client
import logging
import re
import socket
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from email.message import Message
from html.parser import HTMLParser
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit
from urllib.request import ProxyHandler, Request, build_opener

from services.modules.researcher.fetch_disk import RATE_FILE, DiskCache, RateLimiter
from services.modules.researcher.model import canonical_url, domain_of

DEFAULT_TYPES = ("text/html", "application/xhtml+xml", "text/plain")
PERMANENT_HTTP = {400, 401, 403, 404, 405, 406, 410, 414, 415, 451}


class FetchError(Exception):
    """reason: bad_url | timeout | network | http | oversize | content_type | internal."""

    def __init__(self, reason: str, message: str, permanent: bool = False, status: int | None = None):
        super().__init__(message)
        self.reason, self.message, self.permanent, self.status = reason, message, permanent, status

    def as_dict(self) -> dict:
        return {"reason": self.reason, "message": self.message, "permanent": self.permanent, "status": self.status}


@dataclass
class Page:
    url: str
    final_url: str
    status: int
    content_type: str
    charset: str | None
    body: bytes
    fetched_at: float
    cache: str                  # "hit" (no request), "revalidated" (304), "miss" (downloaded)
    etag: str | None = None
    last_modified: str | None = None

    def decoded(self) -> str:
        charset = self.charset
        if not charset:
            m = re.search(rb"""<meta[^>]+charset=["']?([\w-]+)""", self.body[:4096], re.I)
            charset = m.group(1).decode("ascii") if m else "utf-8"
        try:
            codecs.lookup(charset)
        except LookupError:
            charset = "utf-8"
        return self.body.decode(charset, errors="replace")

    def title_and_text(self) -> tuple[str, str]:
        if self.content_type == "text/plain":
            text = self.decoded()
            first = next((line.strip() for line in text.splitlines() if line.strip()), "")
            return first[:200], _squeeze(text)
        return html_to_text(self.decoded())


# --- HTML to text ---------------------------------------------------------------------------------------

_SKIP = {"script", "style", "noscript", "template", "svg", "head", "nav", "footer"}
_BLOCK = {"p", "div", "br", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "table", "section",
          "article", "pre", "blockquote", "dd", "dt", "hr", "main", "header"}


class _Text(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: list[str] = []
        self.skip = 0
        self.in_title = False

    def handle_starttag(self, tag, attrs):
        if tag == "title":
            self.in_title = True
        elif tag in _SKIP:
            self.skip += 1
        if tag in _BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag == "title":
            self.in_title = False
        elif tag in _SKIP and self.skip:
            self.skip -= 1
        if tag in _BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        if self.in_title:
            self.title.append(data)
        elif not self.skip:
            self.parts.append(data)


def _squeeze(text: str) -> str:
    lines = [re.sub(r"[ \t\u00a0]+", " ", line).strip() for line in text.replace("\r", "\n").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


log = logging.getLogger("researcher.fetch")
# pages html.parser gave up on, by exception type (it is lenient, but e.g. an unknown ``<![xyz ...]]>``
# marked section raises AssertionError); their text read before the failure is kept
PARSE_FAILURES: Counter = Counter()


def html_to_text(html: str) -> tuple[str, str]:
    """(title, readable text) of an HTML page; scripts, styles, navigation are dropped. A page the parser
    gives up on keeps the text read up to there: logged and counted in :data:`PARSE_FAILURES`."""
    p = _Text()
    try:
        p.feed(html)
        p.close()
    except Exception as exc:  # any parser failure: a pathological page must not stop the fetch
        PARSE_FAILURES[type(exc).__name__] += 1
        log.warning("a page did not parse completely (%s: %s); keeping the %d characters read before it",
                    type(exc).__name__, str(exc)[:200], sum(map(len, p.parts)))
    return _squeeze(" ".join(p.title))[:200], _squeeze("".join(p.parts))


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


class Fetcher:
    """Synchronous fetch with cache and rate limit; one caller at a time (the pool's thread)."""

    def __init__(self, cache_dir, *, timeout: float = 20.0, max_bytes: int = 2 * 1024 * 1024,
                 min_interval: float = 2.0, cache_ttl: float = 7 * 86400.0, cache_max_bytes: int = 200 * 1024 * 1024,
                 user_agent: str = "FanoResearcher/1.0 (research tool)", content_types=DEFAULT_TYPES,
                 now=time.time, mono=time.monotonic, sleep=time.sleep):
        self.cache = DiskCache(cache_dir, cache_max_bytes)
        self.limiter = RateLimiter(min_interval, now, self.cache.dir / RATE_FILE)
        self.timeout, self.max_bytes, self.cache_ttl = float(timeout), int(max_bytes), float(cache_ttl)
        self.user_agent, self.content_types = user_agent, tuple(content_types)
        self.now, self.mono, self.sleep = now, mono, sleep
        self.requests = 0   # requests sent (tests and logs)
        # proxies from the environment, except for loopback hosts (local servers, tests)
        self._openers = {True: build_opener(ProxyHandler({})), False: build_opener()}

    def _fresh(self, meta: dict | None) -> bool:
        return meta is not None and self.now() - float(meta.get("fetched_at", 0)) < self.cache_ttl

    def ready_in(self, url: str) -> float:
        """Seconds until :meth:`fetch` of ``url`` could run without waiting (0 for a fresh cache hit)."""
        try:
            url = canonical_url(url)
        except ValueError:
            return 0.0
        if self._fresh(self.cache.meta(url)):
            return 0.0   # (a torn body behind fresh metadata makes fetch() wait for the domain: rare, harmless)
        return self.limiter.wait_time(domain_of(url))

    def fetch(self, url: str) -> Page:
        try:
            url = canonical_url(url)
        except ValueError as exc:
            raise FetchError("bad_url", str(exc), permanent=True) from None
        cached = self.cache.load(url)
        if cached is not None and self._fresh(cached[0]):
            return self._page(url, cached[0], cached[1], "hit")
        domain = domain_of(url)
        wait = self.limiter.wait_time(domain)
        if wait > 0:
            self.sleep(wait)
        self.limiter.take(domain)
        self.requests += 1
        return self._download(url, cached)

    def _page(self, url, meta, body, how) -> Page:
        return Page(url, meta.get("final_url") or url, int(meta.get("status") or 200), meta["content_type"],
                    meta.get("charset"), body, float(meta["fetched_at"]), how, meta.get("etag"),
                    meta.get("last_modified"))

    def _download(self, url: str, cached) -> Page:
        headers = {"User-Agent": self.user_agent,
                   "Accept": "text/html,application/xhtml+xml,text/plain;q=0.9,*/*;q=0.1"}
        if cached:
            if cached[0].get("etag"):
                headers["If-None-Match"] = cached[0]["etag"]
            if cached[0].get("last_modified"):
                headers["If-Modified-Since"] = cached[0]["last_modified"]
        opener = self._openers[_is_loopback(urlsplit(url).hostname or "")]
        start = self.mono()
        try:
            resp = opener.open(Request(url, headers=headers), timeout=self.timeout)
        except HTTPError as exc:
            exc.close()
            if exc.code == 304 and cached:
                meta = dict(cached[0], fetched_at=self.now())
                self.cache.touch(url, meta)
                return self._page(url, meta, cached[1], "revalidated")
            raise FetchError("http", f"HTTP {exc.code} {exc.reason}", exc.code in PERMANENT_HTTP, exc.code) from None
        except URLError as exc:
            if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                raise FetchError("timeout", f"no answer within {self.timeout:g}s") from None
            raise FetchError("network", f"cannot reach {url}: {exc.reason}") from None
        except TimeoutError:
            raise FetchError("timeout", f"no answer within {self.timeout:g}s") from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise FetchError("network", f"cannot fetch {url}: {exc!r}") from None
        with resp:
            msg: Message = resp.headers
            ctype = (msg.get_content_type() if msg.get("Content-Type") else "").lower()
            if ctype not in self.content_types:
                raise FetchError("content_type", f"content type {ctype or 'missing'} is not one of "
                                 f"{', '.join(self.content_types)}", permanent=True)
            length = msg.get("Content-Length")
            if length and length.isdigit() and int(length) > self.max_bytes:
                raise FetchError("oversize", f"{length} bytes exceed the limit of {self.max_bytes}", permanent=True)
            body = self._read(resp, start)
            meta = {"final_url": resp.geturl(), "status": resp.status, "content_type": ctype,
                    "charset": msg.get_content_charset(), "etag": msg.get("ETag"),
                    "last_modified": msg.get("Last-Modified"), "fetched_at": self.now()}
        self.cache.store(url, meta, body)
        return self._page(url, meta, body, "miss")

    def _read(self, resp, start: float) -> bytes:
        chunks: list[Any] = []
        size = 0
        try:
            while True:
                if self.mono() - start > self.timeout * 2:
                    raise FetchError("timeout", f"body not complete within {self.timeout * 2:g}s")
                chunk = resp.read1(65536)   # whatever has arrived: a trickling server hits the deadline
                if not chunk:
                    return b"".join(chunks)
                size += len(chunk)
                if size > self.max_bytes:
                    raise FetchError("oversize", f"body exceeds the limit of {self.max_bytes} bytes", permanent=True)
                chunks.append(chunk)
        except TimeoutError:
            raise FetchError("timeout", f"body stalled for {self.timeout:g}s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise FetchError("network", f"connection broke while reading: {exc!r}") from None


class FetchPool:
    """One background thread running a :class:`Fetcher` over queued jobs; results are collected by the
    module's loop (the only thread that talks to the broker)."""

    def __init__(self, fetcher: Fetcher):
        self.fetcher = fetcher
        self._cond = threading.Condition()
        self._queue: OrderedDict[str, str] = OrderedDict()
        self._inflight: str | None = None
        self._done: list[tuple[str, str, Page | FetchError]] = []
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="researcher-fetch", daemon=True)
        self._thread.start()

    def submit(self, job_id: str, url: str) -> bool:
        """Queue a fetch; False when the job is already queued, running or awaiting collection."""
        with self._cond:
            if job_id in self._queue or job_id == self._inflight or any(d[0] == job_id for d in self._done):
                return False
            self._queue[job_id] = url
            self._cond.notify()
            return True

    def busy(self) -> set[str]:
        with self._cond:
            return set(self._queue) | ({self._inflight} if self._inflight else set()) | {d[0] for d in self._done}

    def results(self) -> list[tuple[str, str, Page | FetchError]]:
        """Finished fetches ``(job_id, url, Page | FetchError)`` since the last call."""
        with self._cond:
            done, self._done = self._done, []
            return done

    def close(self, timeout: float = 1.0) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)   # a daemon: a fetch still in a socket read dies with the process

    def _next(self) -> tuple[str, str] | None:
        wait = 0.5
        for job_id, url in self._queue.items():
            ready = self.fetcher.ready_in(url)
            if ready <= 0:
                del self._queue[job_id]
                self._inflight = job_id
                return job_id, url
            wait = min(wait, ready)
        self._cond.wait(wait)
        return None

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                job = self._next()
            if job is None:
                continue
            result: Page | FetchError
            try:
                result = self.fetcher.fetch(job[1])
            except FetchError as exc:
                result = exc
            except Exception as exc:  # a bug must surface as a visible error, not kill the thread
                result = FetchError("internal", f"fetch failed: {exc!r}")
            with self._cond:
                self._inflight = None
                self._done.append((job[0], job[1], result))
