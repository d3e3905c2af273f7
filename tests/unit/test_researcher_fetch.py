"""The researcher's fetcher against a local http.server in a thread: rate limit, cache, revalidation,
timeout, size and content-type checks, and the background pool."""
from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from services.modules.researcher.fetch import Fetcher, FetchError, FetchPool, html_to_text
from services.modules.researcher.fetch_disk import RATE_FILE, DiskCache, RateLimiter
from tests.support import wait_for

PAGE = (b"<html><head><title>The Fano plane</title><style>p {color: red}</style></head><body>"
        b"<nav>menu</nav><h1>Fano</h1><p>It has 7 points &amp; 7 lines.</p><script>var x = 1;</script>"
        b"<p>Its automorphism group has order 168.</p></body></html>")


class Site:
    """A tiny web site; every request is logged as (path, monotonic time, headers)."""

    def __init__(self):
        self.log: list[tuple[str, float, dict]] = []
        self.etag = '"v1"'
        self.body = PAGE
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                site.log.append((self.path, time.monotonic(), dict(self.headers)))
                route = getattr(site, "route_" + self.path.strip("/").split(".")[0].replace("-", "_"), None)
                if route is None:
                    self.send_error(404)
                    return
                route(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/{path}"

    def requests(self, path: str) -> list:
        return [r for r in self.log if r[0] == "/" + path]

    def send(self, h, body: bytes, ctype: str = "text/html; charset=utf-8", status: int = 200, headers=None):
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)

    def route_page(self, h):
        if h.headers.get("If-None-Match") == self.etag:
            h.send_response(304)
            h.end_headers()
            return
        self.send(h, self.body, headers={"ETag": self.etag, "Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT"})

    def route_a(self, h):
        self.send(h, b"<p>a</p>")

    def route_b(self, h):
        self.send(h, b"<p>b</p>")

    def route_plain(self, h):
        self.send(h, b"Title line\n\nsome   text", "text/plain")

    def route_slow(self, h):
        time.sleep(1.0)
        self.send(h, b"<p>late</p>")

    def route_big(self, h):
        self.send(h, b"x" * 5000)

    def route_stream(self, h):   # no Content-Length: the size is only known while reading
        h.send_response(200)
        h.send_header("Content-Type", "text/html")
        h.end_headers()
        for _ in range(10):
            h.wfile.write(b"y" * 1000)

    def route_image(self, h):
        self.send(h, b"\x89PNG....", "image/png")

    def route_busy(self, h):
        self.send(h, b"busy", status=503)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def site():
    s = Site()
    yield s
    s.close()


def fetcher(tmp_path, **kw) -> Fetcher:
    kw = {"min_interval": 0.0, "timeout": 2.0, "cache_ttl": 3600.0, **kw}
    return Fetcher(tmp_path / "cache", **kw)


def test_page_text_title_and_first_fetch(tmp_path, site):
    page = fetcher(tmp_path).fetch(site.url("page.html"))
    assert page.cache == "miss" and page.status == 200 and page.content_type == "text/html"
    title, text = page.title_and_text()
    assert title == "The Fano plane"
    assert "7 points & 7 lines" in text and "168" in text
    assert "menu" not in text and "var x" not in text and "color" not in text
    assert fetcher(tmp_path, cache_ttl=0).fetch(site.url("plain.txt")).title_and_text() == ("Title line",
                                                                                            "Title line\n\nsome text")


def test_rate_limit_per_domain_is_honoured(tmp_path, site):
    f = fetcher(tmp_path, min_interval=0.4)
    f.fetch(site.url("a.html"))
    f.fetch(site.url("b.html"))
    f.fetch(site.url("page.html", host="localhost"))   # another domain: no wait
    times = {path: t for path, t, _ in site.log}
    assert times["/b.html"] - times["/a.html"] >= 0.38
    assert times["/page.html"] - times["/b.html"] < 0.3
    assert f.ready_in(site.url("a.html")) == 0.0   # a fresh cache hit needs no request: always ready
    f2 = fetcher(tmp_path / "other", min_interval=0.4)
    f2.fetch(site.url("a.html"))
    assert 0 < f2.ready_in(site.url("b.html")) <= 0.4


def test_rate_limit_survives_a_restart(tmp_path, site):
    f = fetcher(tmp_path, min_interval=0.6)
    f.fetch(site.url("a.html"))
    restarted = fetcher(tmp_path, min_interval=0.6)      # a new process over the same cache directory
    assert 0.3 < restarted.ready_in(site.url("b.html")) <= 0.6
    assert restarted.ready_in(site.url("b.html", host="localhost")) == 0.0    # another domain
    restarted.fetch(site.url("b.html"))
    times = {path: t for path, t, _ in site.log}
    assert times["/b.html"] - times["/a.html"] >= 0.55
    stored = json.loads((tmp_path / "cache" / RATE_FILE).read_text())
    assert list(stored) == [f"127.0.0.1:{site.port}"]


def test_persisted_rate_limit_is_bounded_and_robust(tmp_path):
    clock = [1000.0]
    path = tmp_path / "rate.json"
    lim = RateLimiter(2.0, lambda: clock[0], path)
    lim.take("a.example")
    clock[0] += 1.0
    lim.take("b.example")
    assert RateLimiter(2.0, lambda: clock[0], path).wait_time("a.example") == 1.0
    clock[0] += 1.5
    lim.take("c.example")                                  # a.example no longer binds: dropped from the file
    assert set(json.loads(path.read_text())) == {"b.example", "c.example"}
    clock[0] -= 3600.0                                     # the clock went back: never more than the interval
    assert RateLimiter(2.0, lambda: clock[0], path).wait_time("c.example") == 2.0
    path.write_text("not json")
    assert RateLimiter(2.0, lambda: clock[0], path).wait_time("c.example") == 0.0
    blocked = RateLimiter(2.0, lambda: clock[0], tmp_path / "missing-dir" / "rate.json")
    with pytest.raises(OSError):                            # cannot record it: no request may be sent
        blocked.take("a.example")


def test_cache_hit_needs_no_request(tmp_path, site):
    f = fetcher(tmp_path)
    first = f.fetch(site.url("page.html"))
    again = fetcher(tmp_path).fetch(site.url("page.html"))   # a new process reads the same disk cache
    assert again.cache == "hit" and again.body == first.body
    assert len(site.requests("page.html")) == 1
    assert fetcher(tmp_path).ready_in(site.url("page.html")) == 0.0


def test_stale_pages_are_revalidated_with_etag(tmp_path, site):
    f = fetcher(tmp_path, cache_ttl=0.0)
    f.fetch(site.url("page.html"))
    second = f.fetch(site.url("page.html"))
    assert second.cache == "revalidated" and second.body == PAGE
    headers = site.requests("page.html")[-1][2]
    assert headers.get("If-None-Match") == '"v1"' and headers.get("If-Modified-Since")
    site.etag, site.body = '"v2"', PAGE.replace(b"168", b"336")
    third = f.fetch(site.url("page.html"))
    assert third.cache == "miss" and b"336" in third.body


def test_torn_cache_entry_is_a_miss(tmp_path, site):
    f = fetcher(tmp_path)
    f.fetch(site.url("page.html"))
    for body in (tmp_path / "cache").glob("*.body"):
        body.write_bytes(b"torn")
    assert f.fetch(site.url("page.html")).cache == "miss"


def test_timeout(tmp_path, site):
    start = time.monotonic()
    with pytest.raises(FetchError) as err:
        fetcher(tmp_path, timeout=0.3).fetch(site.url("slow.html"))
    assert err.value.reason == "timeout" and not err.value.permanent
    assert time.monotonic() - start < 0.9


@pytest.mark.parametrize("path", ["big.html", "stream.html"])
def test_oversize(tmp_path, site, path):
    with pytest.raises(FetchError) as err:
        fetcher(tmp_path, max_bytes=4000).fetch(site.url(path))
    assert err.value.reason == "oversize" and err.value.permanent


def test_non_html_content_type_is_refused(tmp_path, site):
    with pytest.raises(FetchError) as err:
        fetcher(tmp_path).fetch(site.url("image.png"))
    assert err.value.reason == "content_type" and err.value.permanent and "image/png" in err.value.message


def test_http_errors_and_unreachable_hosts(tmp_path, site):
    f = fetcher(tmp_path)
    with pytest.raises(FetchError) as err:
        f.fetch(site.url("missing.html"))
    assert err.value.reason == "http" and err.value.status == 404 and err.value.permanent
    with pytest.raises(FetchError) as err:
        f.fetch(site.url("busy.html"))
    assert err.value.status == 503 and not err.value.permanent
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    with pytest.raises(FetchError) as err:
        f.fetch(f"http://127.0.0.1:{closed}/x")
    assert err.value.reason == "network" and not err.value.permanent
    with pytest.raises(FetchError) as err:
        f.fetch("ftp://example.com/x")
    assert err.value.reason == "bad_url" and err.value.permanent


def test_cache_prunes_oldest_above_its_size(tmp_path):
    cache = DiskCache(tmp_path, max_bytes=2500)
    for i in range(4):
        cache.store(f"http://x/{i}", {"content_type": "text/html", "fetched_at": i}, b"z" * 1000)
        time.sleep(0.01)
    assert cache.load("http://x/0") is None and cache.load("http://x/3") is not None


def test_pool_runs_in_the_background_and_does_not_let_one_domain_block_another(tmp_path, site):
    pool = FetchPool(fetcher(tmp_path, min_interval=0.6))
    try:
        assert pool.submit("a", site.url("a.html"))
        assert pool.submit("b", site.url("b.html"))
        assert not pool.submit("a", site.url("a.html"))        # already queued
        assert pool.submit("c", site.url("page.html", host="localhost"))
        assert pool.submit("x", site.url("image.png", host="localhost"))
        got = {}

        def collect():
            got.update({job: result for job, _, result in pool.results()})
            return len(got) == 4
        wait_for(collect, 5, what="four fetches")
        order = [path for path, _, _ in site.log]
        assert order.index("/page.html") < order.index("/b.html")   # c did not wait behind a's domain
        assert isinstance(got["x"], FetchError) and got["b"].body == b"<p>b</p>"
        assert pool.busy() == set()
    finally:
        pool.close()


def test_html_to_text_survives_broken_markup():
    title, text = html_to_text("<title>T</title><p>one<p>two &lt; three<div><b>four")
    assert title == "T" and "one" in text and "two < three" in text and "four" in text


def test_a_page_the_parser_gives_up_on_keeps_its_text_and_is_logged_and_counted(caplog):
    from services.modules.researcher.fetch import PARSE_FAILURES
    before = PARSE_FAILURES["AssertionError"]
    with caplog.at_level("WARNING", logger="researcher.fetch"):
        title, text = html_to_text("<title>T</title><p>kept before</p><![xyz x]]><p>after")
    assert title == "T" and "kept before" in text
    assert PARSE_FAILURES["AssertionError"] == before + 1
    assert any("did not parse completely (AssertionError" in r.getMessage() for r in caplog.records)


def test_a_page_the_cache_cannot_prune_is_logged_and_counted(tmp_path, monkeypatch, caplog):
    """The cache goes on above its size rather than fail a fetch, but never silently (issue 12); a file
    already gone is no failure."""
    from pathlib import Path
    cache = DiskCache(tmp_path, max_bytes=2500)
    real_unlink = Path.unlink

    def refuse(self, missing_ok=False):
        if self.suffix == ".body":
            raise PermissionError(13, "Permission denied", str(self))
        return real_unlink(self, missing_ok)   # x/0's metadata, gone at the second prune: no failure
    monkeypatch.setattr(Path, "unlink", refuse)
    with caplog.at_level("WARNING", logger="researcher.fetch"):
        for i in range(4):
            cache.store(f"http://x/{i}", {"content_type": "text/html", "fetched_at": i}, b"z" * 1000)
            time.sleep(0.01)
    # the bodies stay: x/0's at the third and fourth store, x/1's at the fourth
    assert cache.tolerance.counts == {"pruning the page cache": 3}
    assert [r for r in caplog.records if r.getMessage().startswith("pruning the page cache failed (PermissionError")]
