"""Helpers for the web panel's tests: serve the real app on a real socket, and a small HTTP session.

:func:`serve` runs :func:`services.web.app.create_app` under uvicorn in a thread on a free port of
127.0.0.1 (the same server the program runs); :class:`Session` speaks HTTP/1.1 to it with
``http.client``, keeps cookies like a browser and never follows redirects (tests look at them).
"""
from __future__ import annotations

import http.client
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from urllib.parse import urlencode

from tests.support import free_port, wait_for


@contextmanager
def serve(app) -> Iterator[str]:
    """``app`` served on a free loopback port; yields its base URL (``http://127.0.0.1:PORT``)."""
    import uvicorn

    from services.web.service import listen
    sock = listen("127.0.0.1", free_port())
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                                           timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 10, what="uvicorn to start")
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    set_cookies: list[str]
    body: str

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


@dataclass
class Session:
    """A browser-like HTTP client: cookies kept, redirects returned as they are."""

    base: str
    cookies: dict[str, str] = field(default_factory=dict)

    def request(self, method: str, path: str, body: str | None = None, headers: dict[str, str] | None = None,
                timeout: float = 30) -> Reply:
        host, port = self.base.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
        hdrs = dict(headers or {})
        if self.cookies:
            hdrs["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        try:
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read().decode(errors="replace")
            set_cookies = resp.headers.get_all("set-cookie") or []
            reply = Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, set_cookies, data)
        finally:
            conn.close()
        for raw in set_cookies:
            jar = SimpleCookie()
            jar.load(raw)
            for name, morsel in jar.items():
                if morsel["max-age"] == "0" or "1970" in (morsel["expires"] or ""):
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return reply

    def get(self, path: str, headers: dict[str, str] | None = None) -> Reply:
        return self.request("GET", path, headers={"Accept": "text/html", **(headers or {})})

    def post(self, path: str, form: dict[str, str], headers: dict[str, str] | None = None) -> Reply:
        return self.request("POST", path, urlencode(form),
                            {"Content-Type": "application/x-www-form-urlencoded", "Accept": "text/html",
                             **(headers or {})})

    def csrf(self, path: str = "/login") -> str:
        """The CSRF token of a form on ``path`` (the page also sets the cookie it must match)."""
        page = self.get(path)
        m = re.search(r'name="csrf" value="([^"]+)"', page.body)
        assert m, f"no CSRF field on {path} ({page.status}): {page.body[:300]}"
        return m.group(1)
