"""The life cycle every stand-in shares: a threaded HTTP server on a daemon thread, and the foreground run.

A stand-in subclasses :class:`StandinServer` and names its request handler class; each request's handler
sees the stand-in as ``self.owner``. ``port=0`` picks an ephemeral port, read back after binding, so
tests never collide.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from services.backends.sim_answers import DEFAULT_REVIEWS


class _QuietServer(ThreadingHTTPServer):
    """A client that goes away mid-answer (a browser closed while its page polled) is normal for a stand-in:
    not a traceback on stderr. Anything else is still reported."""

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


class StandinServer:
    """Start/stop/url for one stand-in; subclasses set ``host``/``port`` and implement :meth:`handler_class`."""

    host: str = "127.0.0.1"
    port: int = 0
    thread_name = "standin"
    _httpd: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self):
        handler = type("Handler", (self.handler_class(),), {"owner": self})
        self._httpd = _QuietServer((self.host, self.port), handler)
        self._httpd.daemon_threads = True      # a streaming request must not keep stop() waiting
        self._httpd.block_on_close = False
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def serve_in_foreground(standin: StandinServer) -> int:
    """``python -m ops.standins ...``: start, print the base URL, serve until SIGTERM or Ctrl-C."""
    standin.start()
    print(standin.url, flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    standin.stop()
    return 0


def reviews_option(parser) -> None:
    """``--reviews good=1,agree=1,favour=1``: how the stand-in's research answers review (the keys of
    services/backends/sim_answers.py DEFAULT_REVIEWS, each 0-1); parsed by :func:`parse_reviews`."""
    parser.add_argument("--reviews", type=parse_reviews, default=None, metavar="KEY=P,...",
                        help="research answers' review tuning, e.g. good=1,agree=1,favour=1 (every panel "
                             "blesses, every documenter vote approves)")


def parse_reviews(text: str) -> dict:
    """``good=1,agree=0.9`` -> {"good": 1.0, "agree": 0.9}; argparse shows the ValueError's message."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if key not in DEFAULT_REVIEWS or not 0.0 <= number <= 1.0:
            raise argparse.ArgumentTypeError(f"{part!r}: want KEY=P with KEY among {', '.join(DEFAULT_REVIEWS)} "
                                             "and P in [0, 1]")
        out[key] = number
    return out

