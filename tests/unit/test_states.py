"""The task state machine: the transition table and Tx.move's enforcement of it."""
from __future__ import annotations

import itertools

import pytest

from services.broker import schema as S
from services.broker import states as st
from services.broker.tx import Ledger, Tx
from shared.clock import FakeClock
from shared.config import BrokerConfig
from shared.errors import ErrorCode, FanoError

# the transitions of the states.py docstring and of docs/tasks.md § Task states, written out independently
EXPECTED = {
    (None, "PENDING"),
    ("PENDING", "RUNNING"), ("PENDING", "PARKED"), ("PENDING", "PAUSED"), ("PENDING", "CANCELLED"),
    ("RUNNING", "DONE"), ("RUNNING", "PENDING"), ("RUNNING", "PARKED"), ("RUNNING", "PAUSED"),
    ("RUNNING", "CANCELLED"),
    ("PAUSED", "PENDING"), ("PAUSED", "CANCELLED"),
    ("PARKED", "PENDING"), ("PARKED", "CANCELLED"),
}


def test_transition_table_is_exactly_the_documented_one():
    actual = {(src, dst) for src, dsts in st.TRANSITIONS.items() for dst in dsts}
    assert actual == EXPECTED
    assert set(st.TRANSITIONS) == {None, *st.STATES}


@pytest.mark.parametrize("src,dst", list(itertools.product([None, *st.STATES], st.STATES)))
def test_allowed_matches_table(src, dst):
    assert st.allowed(src, dst) == ((src, dst) in EXPECTED)


def test_final_states_have_no_exit_and_settled_states():
    for s in st.FINAL:
        assert not st.TRANSITIONS[s]
    assert st.FINAL == {"DONE", "CANCELLED"}
    assert st.SETTLED == {"DONE", "PARKED", "CANCELLED"}
    assert st.LIVE == {"PENDING", "RUNNING"}
    assert not st.allowed("DONE", "PENDING") and not st.allowed("bogus", "PENDING")


@pytest.fixture
def tx(tmp_path):
    storage = S.open_env(tmp_path / "db", 16 * 2**20)
    clock = FakeClock()
    with storage.env.begin(write=True) as txn:
        yield Tx(storage, txn, BrokerConfig(), clock.world(), clock.mono(), Ledger(txn, storage.dbs))
    storage.close()


def new_task(tx: Tx, tid: int) -> dict:
    task = {"id": tid, "key": f"k{tid}", "module": "explorer", "kind": "ask", "payload": {}, "priority": 50,
            "max_attempts": 3, "not_before": 0.0, "requires": {}, "attrs": {}, "fp": "x", "attempts": 0,
            "epoch": 0, "created": tx.now, "updated": tx.now, "lease": None, "result": None, "error": None,
            "consumed": False, "parked_at": None}
    tx.insert(task, "submitted")
    return task


def put_in_state(tx: Tx, task: dict, state: str) -> None:
    path = {"PENDING": [], "RUNNING": ["RUNNING"], "DONE": ["RUNNING", "DONE"], "PARKED": ["PARKED"],
            "PAUSED": ["PAUSED"], "CANCELLED": ["CANCELLED"]}[state]
    for step in path:
        if step == "RUNNING":
            task["epoch"] += 1
            task["lease"] = {"worker": "w", "account": "a", "deadline": tx.mono + 60}
        tx.move(task, step, "setup")


def index_entries(tx: Tx, db: str) -> int:
    return tx.txn.stat(tx.db[db])["entries"]


@pytest.mark.parametrize("src,dst", [(s, d) for s in st.STATES for d in st.STATES])
def test_move_enforces_the_table(tx, src, dst):
    task = new_task(tx, 1)
    put_in_state(tx, task, src)
    assert task["state"] == src
    events_before = len(tx.events)
    if (src, dst) in EXPECTED:
        if dst == "RUNNING":
            task["epoch"] += 1
            task["lease"] = {"worker": "w", "account": "a", "deadline": tx.mono + 60}
        tx.move(task, dst, "test")
        assert task["state"] == dst
        assert tx.task(1)["state"] == dst
        assert tx.events[-1]["type"] == f"task.{dst.lower()}" and tx.events[-1]["prev"] == src
    else:
        with pytest.raises(FanoError) as info:
            tx.move(task, dst, "test")
        assert info.value.code == ErrorCode.INVALID_STATE
        assert info.value.details == {"id": 1, "state": src}
        assert len(tx.events) == events_before
        assert tx.task(1)["state"] == src  # nothing stored


def test_move_keeps_indices_consistent(tx):
    a, b = new_task(tx, 1), new_task(tx, 2)
    assert index_entries(tx, "ready") == 2 and index_entries(tx, "by_state") == 2
    a["epoch"] = 1
    a["lease"] = {"worker": "w", "account": "x", "deadline": tx.mono + 30}
    tx.move(a, "RUNNING", "lease")
    assert index_entries(tx, "ready") == 1 and index_entries(tx, "leases") == 1
    a["not_before"] = tx.now + 100
    tx.move(a, "PENDING", "retry later")
    assert index_entries(tx, "leases") == 0 and index_entries(tx, "delayed") == 1 and a["lease"] is None
    tx.move(a, "CANCELLED", "bye")
    assert index_entries(tx, "delayed") == 0
    tx.move(b, "PARKED", "dead")
    assert b["parked_at"] == tx.now and index_entries(tx, "ready") == 0
    assert index_entries(tx, "by_state") == 2
    tx.ledger.flush(tx.txn)  # counts are kept in the ledger and written once per batch
    counts = {S.split_count_key(bytes(k)): S.from_u64(bytes(v)) for k, v in tx.cursor("counts")}
    assert counts == {("CANCELLED", "explorer"): 1, ("PARKED", "explorer"): 1}
    assert [h["to"] for h in tx.task(1)["history"]] == ["PENDING", "RUNNING", "PENDING", "CANCELLED"]


def test_history_is_bounded_but_keeps_the_submission(tmp_path):
    storage = S.open_env(tmp_path / "db", 16 * 2**20)
    try:
        with storage.env.begin(write=True) as txn:
            tx = Tx(storage, txn, BrokerConfig(history_limit=5), 1.0, 1.0, Ledger(txn, storage.dbs))
            task = new_task(tx, 1)
            for i in range(10):
                tx.move(task, "PAUSED", f"p{i}")
                tx.move(task, "PENDING", f"r{i}")
            hist = tx.task(1)["history"]
            assert len(hist) == 5
            assert hist[0]["why"] == "submitted" and hist[-1]["why"] == "r9"
    finally:
        storage.close()


def test_a_task_read_ahead_for_the_role_check_is_the_handlers_first_read_only(tx):
    """roles.authorize reads the task a single-task command names; the handler's first ``tx.task`` of it
    takes that record instead of decoding it again, and any other read goes to the database."""
    new_task(tx, 1)
    new_task(tx, 2)
    ahead = tx.read_ahead(1)
    assert tx.task(1) is ahead                      # the same record: one decode for both
    again = tx.task(1)
    assert again is not ahead and again == ahead    # used once: later reads see what was written since
    second = tx.read_ahead(1)
    assert tx.task(2)["id"] == 2                    # another task: read from the database
    assert tx.task(1) is not second                 # and the read-ahead is gone
    assert tx.read_ahead(99) is None
