"""The rebuild's read of the PENDING tasks: the broker's rows, a page at a time, as :class:`QTask` s.

``list(state="PENDING", rows=true)`` returns the rows the broker keeps in its ``by_state`` index
(services/broker/schema.py, :data:`shared.records.PENDING_ROW`): no payload, no history, no record to
decode or re-encode, so one page carries tens of thousands of tasks and costs the broker a cursor walk
(docs/scheduling.md § Rebuild and events). The service hands each task to the core as it arrives, page by
page, so a deep queue never exists twice (rows and tasks) in memory.
"""
from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

from services.scheduler.priority import QTask
from shared.client import BrokerClient
from shared.protocol import unpack_rows
from shared.records import RowPage

ROWS_PAGE = 20_000   # rows per page (~60 bytes each; the broker also ends a page at 1 MiB)


def pending_pages(client: BrokerClient, page: int = ROWS_PAGE) -> Iterator[list[QTask]]:
    """The broker's PENDING tasks by id, one page of :class:`QTask` at a time."""
    after = None
    while True:
        reply = cast(RowPage, client.list(state="PENDING", rows=True, after=after, limit=page))
        yield [QTask.from_row(row) for row in unpack_rows(reply["rows"], reply["count"])]
        if reply["next"] is None:
            return
        after = reply["next"]


@contextmanager
def no_cycle_collection() -> Iterator[None]:
    """The cyclic garbage collector off while a rebuild files its tasks: every few hundred objects made it
    would walk the young ones, and now and then all of them (the queue's 10^6 tasks), to find cycles that
    tasks, rows and lane entries never form; refcounting frees them as before. About a third of the
    time of reading and filing a page (measured in-process on 2*10^5 rows). It is switched back on after,
    whatever happens, unless it was off already."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
