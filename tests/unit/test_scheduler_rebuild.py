"""The rebuild's read of PENDING tasks (services/scheduler/rebuild.py) and its one-pass filing
(TaskTable.load, TaskQueue.extend): the same state as tracking each task on its own, in less time."""
from __future__ import annotations

import gc
import random

import pytest

from services.scheduler import rebuild
from services.scheduler.priority import QTask
from tests.unit.corehelp import CoreClient
from tests.unit.test_scheduler_logic import T0, W1, assigns, make_core, ready, running, submitted

HOUR = 3600.0


def random_rows(rng: random.Random, n: int, first: int = 1) -> list[list]:
    """Rows as the broker writes them (shared.records.PENDING_ROW), of every kind the core tells apart."""
    rows = []
    for tid in range(first, first + n):
        requires = rng.choice([None, None, None, {"mode": "deep", "deep_fallback": True}, {"backends": ["a1"]},
                               {"conversation": f"c{rng.randrange(6)}"}, {"conversation": ""}])
        attrs = rng.choice([None, None, {"seed_priority": rng.uniform(0, 5)}, {"comment_boost": 7}])
        created = T0 - rng.uniform(-60, 30 * HOUR)          # some in the future (skew), some past the cap
        not_before = rng.choice([0.0, 0.0, 0.0, T0 + rng.uniform(-60, 600)])
        unknown = rng.random() < 0.05
        rows.append([tid, rng.choice(["explorer", "researcher"]), rng.choice(["ask", "explorer.explore"]),
                     rng.choice([50, 50, 70, 10]), created, not_before, None if rng.random() < 0.8 else created + 5,
                     requires, attrs, "a2" if unknown else None, T0 + 300 if unknown else None])
    return rows


def state(core) -> dict:
    """What the table holds, and the order in which the queue gives its ready tasks away."""
    table = core.table
    per_task = {tid: (t.cls, t.static, t.not_before, t.created, t.qstate, t.handoff)
                for tid, t in sorted(table.tasks.items())}
    order = []
    q = table.queue
    while (found := q.best(core.clock.world() + 2 * HOUR, lambda key: 0.0)) is not None:
        order.append(found[0].id)
        q.remove(found[0].id)
    return {"tasks": per_task, "order": order, "held": table.held, "waiting": dict(table.waiting),
            "unknown": sorted(table.unknown_holds), "turns": core.convs.turns, "counts": table.counts()}


def test_a_page_filed_at_once_is_the_same_as_tracking_each_task():
    rng = random.Random(11)
    for _ in range(5):
        rows = random_rows(rng, 400)
        one, page = make_core(), make_core()
        for core in (one, page):
            # a task already tracked (a refresh), one assigned, one running: the page leaves them to the core
            submitted(core, 3, created=T0 - HOUR)
            ready(core, W1, "a1")
            assigns(core)
            running(core, 5)
        for row in rows:
            one.on_pending_task(QTask.from_row(row))
        for i in range(0, len(rows), 64):
            page.on_pending_page([QTask.from_row(row) for row in rows[i:i + 64]])
        assert state(page) == state(one)


def test_pending_pages_read_the_brokers_rows(make_core):
    h = make_core()
    ids = [h.submit(f"k{i}", priority=40 + i, attrs={"seed_priority": i} if i % 2 else {},
                    requires={"conversation": f"c{i}"} if i % 3 == 0 else {})["task"]["id"] for i in range(10)]
    h.call("pause", id=ids[4])
    pages = list(rebuild.pending_pages(CoreClient(h), page=3))
    assert [len(p) for p in pages] == [3, 3, 3]
    records = {t["id"]: t for t in h.call("list", state="PENDING", limit=100)["tasks"]}
    got = [t for p in pages for t in p]
    assert [t.id for t in got] == [i for i in ids if i != ids[4]]
    for t in got:
        want = QTask.from_fields(records[t.id])
        assert {k: getattr(t, k) for k in QTask.FIELDS} == {k: getattr(want, k) for k in QTask.FIELDS}


def test_the_cycle_collector_is_off_while_a_rebuild_files_and_back_after():
    assert gc.isenabled()
    with pytest.raises(RuntimeError):
        with rebuild.no_cycle_collection():
            assert not gc.isenabled()
            raise RuntimeError("the broker went away")
    assert gc.isenabled()
    gc.disable()
    try:
        with rebuild.no_cycle_collection():
            pass
        assert not gc.isenabled()   # off before: left off
    finally:
        gc.enable()
