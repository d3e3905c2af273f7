"""Typed shapes of what the broker answers: task records, lease replies, pages, events.

These are ``TypedDict`` s, so they describe the plain dicts the wire carries (msgpack maps) without
changing them: the client (:mod:`shared.client`) annotates its helpers with them, and mypy checks the
fields a caller reads. The broker's handlers (``services/broker/ops_*.py``) are the reference for each
shape; their docstrings describe the fields, this module gives them types. Fields a record has only in
some states (``lease`` while RUNNING, ``error`` after a failure, ``compacted`` after task retention) are
``NotRequired``. Names that are Python keywords (``class``, ``from``) use the functional syntax.
"""
# no ``from __future__ import annotations`` here: TypedDict reads NotRequired from the evaluated annotations
# (``__required_keys__``), which tests/unit/test_records.py checks against real replies
from typing import Any, NotRequired, TypedDict

# --- tasks -------------------------------------------------------------------------------------------


class TaskLease(TypedDict):
    """``task["lease"]`` while RUNNING: who holds it and how long is left (``deadline_in`` seconds)."""

    worker: str
    account: str
    backend: str
    mode: str
    deadline_in: float
    granted_at: float


# ``task["error"]``: the last failure (``class``: the error class a worker reported, e.g. "transient"; a
# worker's failure also names the worker, the account and whether the request was sent)
TaskError = TypedDict("TaskError", {"class": str, "message": str, "at": float, "worker": NotRequired[str],
                                    "account": NotRequired[str], "sent": NotRequired[bool]})

# one entry of ``task["history"]``: a state transition (``from`` is null for the submission)
Transition = TypedDict("Transition", {"at": float, "from": str | None, "to": str, "why": str, "epoch": int,
                                      "attempts": int})


class TaskRecord(TypedDict):
    """A task as ``get``/``list``/``submit``/``lease`` return it (``services/broker/ops_tasks.py``).

    ``payload`` and ``result`` are null once compacted, and left out of ``list`` records unless
    ``payloads: true``; ``history`` is only in ``get`` (with ``history: true``)."""

    id: int
    key: str
    module: str
    kind: str
    state: str                      # PENDING | RUNNING | DONE | PARKED | CANCELLED | PAUSED
    priority: int
    attempts: int
    max_attempts: int
    epoch: int
    created: float
    updated: float
    not_before: float
    requires: dict[str, Any]        # {"backends", "mode", "deep_fallback", "account", "conversation"}
    attrs: dict[str, Any]
    consumed: bool
    pending_since: NotRequired[float]
    charged: NotRequired[int]       # quota units this task's leases hold
    payload: NotRequired[Any]
    result: NotRequired[Any]
    lease: NotRequired[TaskLease | None]
    error: NotRequired[TaskError | None]
    history: NotRequired[list[Transition]]
    parked_at: NotRequired[float | None]
    turn: NotRequired[dict[str, Any] | None]
    unknown_turn: NotRequired[dict[str, Any] | None]
    served: NotRequired[dict[str, str]]   # DONE: {"account", "mode", "worker"} that completed it
    compacted: NotRequired[bool]
    compacted_at: NotRequired[float]


class SubmitReply(TypedDict):
    """``submit``: the task, and whether this call created it (False: the key was known)."""

    task: TaskRecord
    created: bool
    requeued: bool


class TaskPage(TypedDict):
    """``list`` and ``unconsumed``: a page of tasks; ``next`` continues it (``after=next``), null at the end."""

    tasks: list[TaskRecord]
    next: int | None


#: one PENDING task as ``list(state="PENDING", rows=true)`` returns it: a msgpack array of these fields, in
#: this order (the fields a scheduler places a task by; ``requires``/``attrs`` null when empty,
#: ``pending_since`` null when it equals ``created``, ``unknown_*`` null without an unknown turn). The
#: broker keeps it as the value of the task's ``by_state`` entry (services/broker/schema.py).
PENDING_ROW = ("id", "module", "kind", "priority", "created", "not_before", "pending_since", "requires", "attrs",
               "unknown_account", "unknown_until")


class RowPage(TypedDict):
    """``list(state="PENDING", rows=true)``: ``count`` rows (:data:`PENDING_ROW`) packed back to back in
    ``rows`` (decode with ``shared.protocol.unpack_rows``); ``next`` continues it, null at the end."""

    rows: bytes
    count: int
    next: int | None

# --- leases ------------------------------------------------------------------------------------------


class LeaseReply(TypedDict):
    """``lease`` (``services/broker/ops_lease.py``): the leased task with its ``epoch``, ``mode`` and
    ``ttl``; or ``task: None`` with ``reason`` (and ``retry_at``, the earliest moment that may change, when
    quota or a cool-down blocks)."""

    task: TaskRecord | None
    reason: str
    epoch: NotRequired[int]
    mode: NotRequired[str]
    ttl: NotRequired[float]
    retry_at: NotRequired[float | None]


# --- module data -------------------------------------------------------------------------------------


class KvItem(TypedDict):
    """One record of a module's namespace: ``kv_get``'s answer, a ``kv_scan`` page's item."""

    key: str
    version: int
    value: Any


class KvPage(TypedDict):
    items: list[KvItem]
    next: str | None


# --- events ------------------------------------------------------------------------------------------


class EventRecord(TypedDict, total=False):
    """An event of the broker's outbox (``events``, and the PUB socket): ``seq``, ``ts`` and ``type``
    always; the rest by type — ``task.<state>`` carries ``id``, ``module``, ``kind``, ``state``, ``prev``,
    ``epoch``, ``why`` (``task.running`` also the lease's ``worker``, ``account`` and ``mode``);
    ``account.*`` and ``quota.*`` carry ``account`` and ``mode``."""

    seq: int
    ts: float
    type: str
    id: int
    module: str
    kind: str
    state: str
    prev: str
    epoch: int
    why: str
    worker: str
    account: str
    mode: str
    reason: str


class EventsReply(TypedDict):
    """``events``: up to ``limit`` events after ``after``; ``truncated``: some were pruned in between, so
    the subscriber missed events and must resync from the task records."""

    events: list[EventRecord]
    last_seq: int
    truncated: bool
