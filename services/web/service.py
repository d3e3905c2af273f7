"""The supervised program ``web`` (``python -m services web``): uvicorn serving the panel, plus the event
follower that feeds the live overview.

Crash-only and stateless: it holds no data of its own, only a broker client, a subscription to the
broker's events and the listening socket; ``kill -9`` loses nothing, and supervisord restarts it (a
browser's event stream reconnects by itself). uvicorn runs in a thread of its own (so it installs no
signal handlers: the :class:`shared.service.Service` base owns SIGTERM, which ends the loop and then
asks uvicorn to stop); the main thread's loop is the :class:`services.web.live.Follower`.

Start-up: the ``[web]`` table was validated with the rest of the configuration (a non-loopback ``host``
without a ``token`` is :class:`shared.config.InsecureBind`, exit code 5). The port is bound here, before
uvicorn starts; when something else holds it the program keeps running and tries again every
:data:`BIND_RETRY` seconds, saying so in its log (a port held by a dying process frees itself, and
supervisord must not give up on the panel for a condition that passes).
"""
from __future__ import annotations

import errno
import socket
import threading
from typing import TYPE_CHECKING

import uvicorn
import zmq

from services.web.access import PROGRAM, client_for
from services.web.app import create_app
from services.web.live import Follower, Hub
from services.web.pages.overview import build_parts
from shared.service import Service

if TYPE_CHECKING:
    from shared.clock import Clock
    from shared.config import Config

BIND_RETRY = 2.0   # seconds between tries while the port is taken


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv6 when the host is an IPv6 address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # a restarted panel rebinds at once although the old connections linger in TIME_WAIT
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


class WebService(Service):
    name = PROGRAM

    def __init__(self, config: Config, clock: Clock) -> None:
        super().__init__(config, clock)
        self.hub = Hub()
        self.app = create_app(config, clock, self.hub, self.tolerance)
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None
        self.sock: socket.socket | None = None
        self.follower: Follower | None = None
        self.ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._next_bind = 0.0
        self._bind_warned = False

    def initialize(self) -> None:
        cfg = self.config
        keys = cfg.client_keys("web")   # CURVE on a tcp:// endpoint (docs/security.md): refused at start without
        self.ctx = zmq.Context()
        self.follower = Follower(self.ctx, cfg.events_endpoint, client_for(cfg), self.hub,
                                 lambda client: build_parts(cfg, client, self.clock), self.clock.world, keys)
        self._serve()

    def _serve(self) -> None:
        web = self.config.web
        try:
            self.sock = listen(web.host, web.port)
        except OSError as exc:
            if exc.errno not in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
                raise
            if not self._bind_warned:
                self.log.error("cannot listen on %s:%d (%s); trying again every %gs", web.host, web.port,
                               exc.strerror, BIND_RETRY)
                self._bind_warned = True
            self._next_bind = self.clock.mono() + BIND_RETRY
            return
        config = uvicorn.Config(self.app, log_config=None, access_log=False, lifespan="off",
                                timeout_graceful_shutdown=1, proxy_headers=False, server_header=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="uvicorn", daemon=True)
        self.thread.start()
        self.log.info("serving the control panel at %s", web.url)

    def loop(self) -> None:
        if self.server is None:
            if self.clock.mono() >= self._next_bind:
                self._serve()
            elif self.follower is not None:
                self.follower.tick()   # its poll is this tick's wait
            return
        if self.thread is not None and not self.thread.is_alive():
            # uvicorn ended without being asked: crash-only, let supervisord restart the whole program
            raise RuntimeError("the web server thread ended unexpectedly; see the log above")
        assert self.follower is not None
        self.follower.tick()

    def shutdown(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=5)
        if self.follower is not None:
            self.follower.close()
        if self.sock is not None:
            self.sock.close()
        if self.ctx is not None:
            self.ctx.term()
