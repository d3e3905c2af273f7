"""One request's view of the database: the LMDB write transaction plus the helpers every handler uses.

:class:`Tx` owns the state machine: :meth:`Tx.move` is the only place a task changes state, and it
keeps every index (``ready``, ``delayed``, ``leases``, ``by_state``, ``counts``), the task's history and
the event outbox consistent in the same transaction; :meth:`Tx.save` keeps a PENDING task's ``by_state``
row (the scheduler's view of it) equal to its record.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol, cast

import lmdb

from services.broker import schema as S
from services.broker import states as st
from shared.errors import ErrorCode, FanoError, not_found
from shared.protocol import Event, pack_value

if TYPE_CHECKING:   # they import this module
    from services.broker.ops_handoff import Activity
    from services.broker.ops_tasks import Names
    from shared.config import BrokerConfig

COUNTERS = ("task_id", "event_seq")


class Cursor(Protocol):
    """The part of an LMDB cursor the broker uses. With ``buffers=False`` (the default) LMDB hands out
    ``bytes``, never memoryviews, which is what this says (the lmdb stubs allow both)."""

    def key(self) -> bytes: ...
    def value(self) -> bytes: ...
    def first(self) -> bool: ...
    def last(self) -> bool: ...
    def prev(self) -> bool: ...
    def next(self) -> bool: ...
    def set_range(self, key: bytes) -> bool: ...
    def delete(self) -> bool: ...
    def iternext(self, keys: bool = True, values: bool = True) -> Iterator[Any]: ...
    def __iter__(self) -> Iterator[tuple[bytes, bytes]]: ...


class Ledger:
    """Hot counters the single writer keeps in memory and writes once per batch.

    ``task_id`` and ``event_seq`` (next ids) and the per-(state, module) task counts would otherwise
    cost a read and a write on every event. The broker checkpoints the ledger before each request and
    restores it when the request's nested transaction is rolled back, so ids and sequence numbers stay
    gapless; :meth:`flush` writes it inside the batch's transaction, before the commit.
    """

    def __init__(self, txn: lmdb.Transaction, dbs: dict[str, lmdb._Database]):
        self.dbs = dbs
        self.counters: dict[str, int] = {}
        for name in COUNTERS:
            raw = txn.get(name.encode(), db=dbs["meta"])
            self.counters[name] = 0 if raw is None else S.from_u64(raw)
        self.count_deltas: dict[tuple[str, str], int] = {}
        self.stored = dict(self.counters)  # what meta holds: a batch that changed nothing writes nothing

    def checkpoint(self) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
        return dict(self.counters), dict(self.count_deltas)

    def restore(self, checkpoint: tuple[dict[str, int], dict[tuple[str, str], int]]) -> None:
        self.counters, self.count_deltas = dict(checkpoint[0]), dict(checkpoint[1])

    def forget_flush(self, stored: dict[str, Any]) -> None:
        """The batch that flushed was rolled back: meta holds what it held before."""
        self.stored = dict(stored)

    def pending_count(self, state: str, module: str) -> int:
        return self.count_deltas.get((state, module), 0)

    def flush(self, txn: lmdb.Transaction) -> None:
        for name, value in self.counters.items():
            if self.stored.get(name) != value:
                txn.put(name.encode(), S.u64(value), db=self.dbs["meta"])
        self.stored = dict(self.counters)
        counts = self.dbs["counts"]
        for (state, module), delta in self.count_deltas.items():
            if not delta:
                continue
            key = S.count_key(state, module)
            raw = txn.get(key, db=counts)
            value = (0 if raw is None else S.from_u64(raw)) + delta
            if value <= 0:
                txn.delete(key, db=counts)
            else:
                txn.put(key, S.u64(value), db=counts)
        self.count_deltas.clear()


class Tx:
    def __init__(self, storage: S.Storage, txn: lmdb.Transaction, config: BrokerConfig, now: float, mono: float,
                 ledger: Ledger, activity: Activity | None = None, handoff_after: float = 0.0,
                 names: Names | None = None, holds: dict[str, float] | None = None):
        self.storage = storage
        self.txn = txn
        self.db = storage.dbs
        self.config = config  # BrokerConfig
        self.now = now        # world time, seconds
        self.mono = mono      # monotonic time, seconds
        self.ledger = ledger
        self.events: list[dict[str, Any]] = []
        # conversation hand-off (services/broker/ops_handoff.py): who was seen when, and after how long
        self.activity = activity            # ops_handoff.Activity, or None (never counts an account offline)
        self.handoff_after = handoff_after  # world seconds ([scheduler] conversation_handoff); 0 = never
        # the configured names commands are checked against (services/broker/ops_tasks.py Names); None: a
        # configuration without accounts, whose names are not checked (shared.config Config.names_checked)
        self.names = names
        # per-account [accounts.NAME] unknown_turn_hold overriding [broker] unknown_turn_hold (ops_lease)
        self.holds: dict[str, float] = holds or {}
        self._read_ahead: dict[str, Any] | None = None   # see read_ahead()

    # --- raw access ---------------------------------------------------------------------------------

    def get(self, db: str, key: bytes) -> Any:
        raw = self.txn.get(key, db=self.db[db])
        return None if raw is None else S.decode_value(raw)

    def put(self, db: str, key: bytes, value: Any) -> None:
        # large values (a task with its prompt and answer, a module record with a text) compressed
        self.txn.put(key, S.encode_value(value), db=self.db[db])

    def put_raw(self, db: str, key: bytes, value: bytes) -> None:
        self.txn.put(key, value, db=self.db[db])

    def get_raw(self, db: str, key: bytes) -> bytes | None:
        # buffers=False (the default): LMDB hands out bytes, never memoryviews
        return cast("bytes | None", self.txn.get(key, db=self.db[db]))

    def delete(self, db: str, key: bytes) -> bool:
        deleted: bool = self.txn.delete(key, db=self.db[db])
        return deleted

    def cursor(self, db: str) -> Cursor:
        return cast(Cursor, self.txn.cursor(db=self.db[db]))

    def counter(self, name: str) -> int:
        """Take the next value of a durable counter (task ids, event sequence numbers)."""
        value = self.ledger.counters[name] + 1
        self.ledger.counters[name] = value
        return value

    def peek_counter(self, name: str) -> int:
        return self.ledger.counters[name]

    def conversation(self, conv: str) -> dict[str, Any] | None:
        """The record of conversation ``conv``, or None: none yet, or an id that cannot be a key (longer
        than LMDB's :data:`~services.broker.schema.MAX_KEY` bytes: a task stored before submit checked
        it; the lease parks such a task, services/broker/ops_lease.py). Reads of such a task must work."""
        key = conv.encode()
        return None if len(key) > S.MAX_KEY else self.get("conversations", key)

    def put_conversation(self, conv: str, rec: dict[str, Any]) -> None:
        self.put("conversations", conv.encode(), rec)

    # --- tasks --------------------------------------------------------------------------------------

    def read_ahead(self, task_id: int) -> dict[str, Any] | None:
        """Read a task for the role check that runs before a single-task command (services/broker/roles.py):
        the command's first :meth:`task` then takes this record instead of decoding it again (a Tx serves one
        request, and nothing writes the task between the check and its handler)."""
        task: dict[str, Any] | None = self.get("tasks", S.u64(task_id))
        self._read_ahead = task
        return task

    def task(self, task_id: int) -> dict[str, Any]:
        if not 0 < task_id < 2**64:  # ids are u64 keys from 1; anything else cannot exist
            raise not_found("task", task_id)
        ahead, self._read_ahead = self._read_ahead, None
        if ahead is not None and ahead["id"] == task_id:
            return ahead
        task: dict[str, Any] | None = self.get("tasks", S.u64(task_id))
        if task is None:
            raise not_found("task", task_id)
        return task

    def save(self, task: dict[str, Any]) -> None:
        task["updated"] = self.now
        self.put("tasks", S.u64(task["id"]), task)
        if task["state"] == st.PENDING:
            # every write of a PENDING task refreshes its row: what the scheduler's rebuild reads instead of
            # the record (services/broker/schema.py, version 3)
            self.put_raw("by_state", S.state_key(st.PENDING, task["id"]), S.pending_row(task))

    def emit(self, type_: str, **fields: Any) -> None:
        seq = self.counter("event_seq")
        event = Event(seq=seq, ts=self.now, type=type_, **fields)
        event.packed = pack_value(event)  # one encoding for the outbox and the PUB socket
        self.put_raw("events", S.u64(seq), event.packed)
        self.events.append(event)

    def _adjust_count(self, state: str, module: str, delta: int) -> None:
        key = (state, module)
        self.ledger.count_deltas[key] = self.ledger.count_deltas.get(key, 0) + delta

    def unindex(self, task: dict[str, Any]) -> None:
        """Remove the task from the state-specific queue indices (before changing what they key on)."""
        tid = task["id"]
        if task["state"] == st.PENDING:
            if task.get("queue") == "delayed":
                self.delete("delayed", S.time_id_key(S.ms(task["not_before"]), tid))
            else:
                self.delete("ready", S.ready_key(task["priority"], tid))
        elif task["state"] == st.RUNNING and task.get("lease"):
            self.delete("leases", S.time_id_key(S.us(task["lease"]["deadline"]), tid))

    def index(self, task: dict[str, Any]) -> None:
        tid = task["id"]
        if task["state"] == st.PENDING:
            nb = task.get("not_before") or 0
            # compare at the delayed index's resolution (ms), or promote_due would see the task as due
            # while index() files it back under delayed, announcing task.due on every batch
            if S.ms(nb) > S.ms(self.now):
                task["queue"] = "delayed"
                self.put_raw("delayed", S.time_id_key(S.ms(nb), tid), b"")
            else:
                task["queue"] = "ready"
                self.put_raw("ready", S.ready_key(task["priority"], tid), b"")
        else:
            task.pop("queue", None)
            if task["state"] == st.RUNNING:
                lease = task["lease"]
                self.put_raw("leases", S.time_id_key(S.us(lease["deadline"]), tid), S.u64(task["epoch"]))

    def insert(self, task: dict[str, Any], why: str) -> None:
        """Store a brand-new task as PENDING (the ``— -> PENDING`` transition)."""
        task["state"] = st.PENDING
        task["pending_since"] = self.now   # waiting starts: a conversation hand-off counts from here
        self._history(task, None, st.PENDING, why)
        self.index(task)
        self._adjust_count(st.PENDING, task["module"], 1)
        self.save(task)   # files it in by_state with its row
        self.emit("task.submitted", id=task["id"], key=task["key"], module=task["module"],
                  kind=task["kind"], priority=task["priority"], state=st.PENDING, **self.sched_view(task))

    def move(self, task: dict[str, Any], dst: str, why: str, **event_fields: Any) -> None:
        """The one state transition: checks the table, updates indices, history, counts, outbox."""
        src = task["state"]
        if not st.allowed(src, dst):
            raise FanoError(ErrorCode.INVALID_STATE, f"task {task['id']} is {src}; cannot go to {dst}",
                            {"id": task["id"], "state": src})
        self.unindex(task)
        if src != dst:
            self.delete("by_state", S.state_key(src, task["id"]))
            if dst != st.PENDING:   # a PENDING entry carries the task's row: save() below writes it
                self.put_raw("by_state", S.state_key(dst, task["id"]), b"")
            self._adjust_count(src, task["module"], -1)
            self._adjust_count(dst, task["module"], 1)
        task["state"] = dst
        if dst != st.RUNNING:
            task["lease"] = None
        # the owning module finds settled results it has not applied yet through this index
        if dst in st.SETTLED and not task.get("consumed"):
            self.put_raw("unconsumed", S.unconsumed_key(task["module"], task["id"]), b"")
        elif src in st.SETTLED:
            self.delete("unconsumed", S.unconsumed_key(task["module"], task["id"]))
        if dst == st.PARKED:
            task["parked_at"] = self.now
        if dst == st.PENDING:
            task["pending_since"] = self.now
        self.index(task)
        self._history(task, src, dst, why)
        self.save(task)
        self.file_compactable(task)  # e.g. a dead letter its module already acked, now cancelled
        if dst == st.PENDING:  # what a scheduler needs to place it again without asking
            event_fields.update(self.sched_view(task), priority=task["priority"])
        self.emit(f"task.{dst.lower()}", id=task["id"], module=task["module"], kind=task["kind"],
                  state=dst, prev=src, epoch=task["epoch"], why=why, **event_fields)

    def file_compactable(self, task: dict[str, Any]) -> None:
        """Index a task that task retention may compact (DONE or CANCELLED and acked) by its last update.

        Call after :meth:`save`. Both states are final, so the entry only leaves the index when the task
        is compacted (services/broker/ops_retention.py)."""
        if task["state"] in st.COMPACTABLE and task.get("consumed") and not task.get("compacted"):
            self.put_raw("compactable", S.time_id_key(S.ms(task["updated"]), task["id"]), b"")

    def sched_view(self, task: dict[str, Any]) -> dict[str, Any]:
        """The fields a scheduler places a PENDING task by (carried on the events that make one)."""
        unknown = task.get("unknown_turn")
        view = {"requires": task.get("requires") or {}, "attrs": task.get("attrs") or {},
                "created": task["created"], "not_before": task.get("not_before") or 0.0,
                "pending_since": task.get("pending_since") or task["created"],
                "unknown_account": unknown["account"] if unknown else None,
                "unknown_until": unknown.get("until") if unknown else None}
        conv = (task.get("requires") or {}).get("conversation")
        if conv:  # the account holding the conversation: later turns must go there
            rec = self.conversation(conv)
            view["conversation_account"] = (rec or {}).get("account")
        return view

    def reindex(self, task: dict[str, Any], **changes: Any) -> None:
        """Change fields that the queue indices key on (priority, not_before, lease deadline)."""
        self.unindex(task)
        for name, value in changes.items():
            if name == "deadline":
                task["lease"]["deadline"] = value
            else:
                task[name] = value
        self.index(task)
        self.save(task)

    def _history(self, task: dict[str, Any], src: str | None, dst: str, why: str) -> None:
        hist = task.setdefault("history", [])
        hist.append({"at": self.now, "from": src, "to": dst, "why": why, "epoch": task.get("epoch", 0),
                     "attempts": task.get("attempts", 0)})
        limit = self.config.history_limit
        if len(hist) > limit:
            # keep the submission record and the most recent transitions
            del hist[1: len(hist) - limit + 1]
