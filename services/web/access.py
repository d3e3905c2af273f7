"""How a page reaches the orchestrator: this thread's broker client, the scheduler's answers, the clock.

Starlette runs a plain (sync) endpoint in a worker thread, and a :class:`shared.client.BrokerClient` is
not thread-safe, so each thread gets its own client (:func:`broker`), made on first use and kept for the
life of the thread. Its timeout is short: a page must say "the broker is unavailable" (the 503 page,
:mod:`services.web.app`) within a couple of seconds rather than hang the browser.

The client sets ``notify_writes``, as fanoctl's does: every write the panel makes is a human's change,
and the module it touches should act on it at once.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from shared.client import BrokerClient
from shared.clock import Clock
from shared.config import Config

PROGRAM = "web"
TIMEOUT = 1.0    # seconds per attempt; two attempts: a dead broker is a 503 page in about 2 s
RETRIES = 2
SCHEDULER_TIMEOUT = 1.0

_local = threading.local()
T = TypeVar("T")


def config(request: Request) -> Config:
    """The configuration the panel started with."""
    cfg: Config = request.app.state.config
    return cfg


def clock(request: Request) -> Clock:
    """The one clock (world time for the operations layer's ``now``)."""
    clk: Clock = request.app.state.clock
    return clk


def client_for(cfg: Config) -> BrokerClient:
    """This thread's broker client for ``cfg`` (one per thread and endpoint)."""
    clients: dict[str, BrokerClient] = getattr(_local, "clients", None) or {}
    _local.clients = clients
    c = clients.get(cfg.broker_endpoint)
    if c is None:
        c = BrokerClient(cfg.broker_endpoint, name=PROGRAM, timeout=TIMEOUT, retries=RETRIES,
                         keys=cfg.client_keys(PROGRAM))
        c.notify_writes = True
        clients[cfg.broker_endpoint] = c
    return c


def broker(request: Request) -> BrokerClient:
    """The broker client for this request's thread. Raises ``BrokerUnavailable`` (-> the 503 page) when the
    broker does not answer, ``FanoError`` when it refuses."""
    return client_for(config(request))


async def call(request: Request, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
    """``fn(client, *args, **kw)`` in a worker thread, with that thread's broker client: how an ``async``
    handler (a POST, which must await its form) makes blocking broker calls without stalling the event
    loop or sharing a client between threads."""
    cfg = config(request)
    return await run_in_threadpool(lambda: fn(client_for(cfg), *args, **kw))


def ask_scheduler(cfg: Config, what: str, **fields: Any) -> Any:
    """The scheduler's answer to a query (``why``, ``backends``, ``top``, ...; shapes in
    services/scheduler/queries.py), or None when it does not answer (:func:`shared.scheduler_client.ask`,
    as fanoctl asks): a page shows what it has without it."""
    from shared.scheduler_client import ask

    return ask(cfg.scheduler_endpoint, what, timeout=SCHEDULER_TIMEOUT, name=PROGRAM,
               keys=cfg.client_keys(PROGRAM), **fields)


def tolerate(request: Request, what: str, exc: BaseException) -> None:
    """A page goes on without something optional that failed: counted and logged by the web program
    (:class:`shared.service.Tolerance`), never dropped silently."""
    request.app.state.tolerance(what, exc)


def scheduler(request: Request, what: str, **fields: Any) -> Any:
    """:func:`ask_scheduler` with this request's configuration."""
    return ask_scheduler(config(request), what, **fields)
